/* q35rt_misc: helpers of the generic ONNX ops of targets/c/onnx_misc.py, appended to model.c
 * only when a step uses them. */

/* numpy's legacy RandomState: MT19937 seeded by init_genrand (RandomState(seed) with an
 * integer seed), and random_sample's 53-bit doubles. */
typedef struct {
    uint32_t key[624];
    int pos;
} q35_mt19937;

Q35_FN void q35_mt_seed(q35_mt19937 *s, uint32_t seed)
{
    int i;
    for (i = 0; i < 624; i++) {
        s->key[i] = seed;
        seed = 1812433253u * (seed ^ (seed >> 30)) + (uint32_t)i + 1u;
    }
    s->pos = 624;
}

Q35_FN uint32_t q35_mt_next(q35_mt19937 *s)
{
    uint32_t y;
    if (s->pos == 624) {
        int i;
        for (i = 0; i < 624; i++) {
            y = (s->key[i] & 0x80000000u) | (s->key[(i + 1) % 624] & 0x7fffffffu);
            s->key[i] = s->key[(i + 397) % 624] ^ (y >> 1) ^ ((y & 1u) ? 0x9908b0dfu : 0u);
        }
        s->pos = 0;
    }
    y = s->key[s->pos++];
    y ^= y >> 11;
    y ^= (y << 7) & 0x9d2c5680u;
    y ^= (y << 15) & 0xefc60000u;
    y ^= y >> 18;
    return y;
}

Q35_FN double q35_mt_double(q35_mt19937 *s)
{
    const uint32_t a = q35_mt_next(s) >> 5, b = q35_mt_next(s) >> 6;
    return ((double)a * 67108864.0 + (double)b) / 9007199254740992.0;
}

/* NonMaxSuppression's overlap test of boxes `a` and `b` (4 floats each), the reference's
 * suppress_by_iou in float32: corners [y1, x1, y2, x2] (either order) or, with `center`,
 * [x, y, width, height]; Python's min / max order kept. */
Q35_FN int q35_nms_suppress(const float *a, const float *b, int center, float iou)
{
    float ax0, ax1, bx0, bx1, ay0, ay1, by0, by1, ix0, ix1, iy0, iy1, inter, area1, area2,
        uni;
    if (!center) {
        ax0 = a[1] >= a[3] ? a[3] : a[1];
        ax1 = a[1] >= a[3] ? a[1] : a[3];
        bx0 = b[1] >= b[3] ? b[3] : b[1];
        bx1 = b[1] >= b[3] ? b[1] : b[3];
        ay0 = a[0] >= a[2] ? a[2] : a[0];
        ay1 = a[0] >= a[2] ? a[0] : a[2];
        by0 = b[0] >= b[2] ? b[2] : b[0];
        by1 = b[0] >= b[2] ? b[0] : b[2];
    } else {
        ax0 = a[0] - a[2] / 2;
        ax1 = a[0] + a[2] / 2;
        bx0 = b[0] - b[2] / 2;
        bx1 = b[0] + b[2] / 2;
        ay0 = a[1] - a[3] / 2;
        ay1 = a[1] + a[3] / 2;
        by0 = b[1] - b[3] / 2;
        by1 = b[1] + b[3] / 2;
    }
    ix0 = bx0 > ax0 ? bx0 : ax0;
    ix1 = bx1 < ax1 ? bx1 : ax1;
    if (ix1 <= ix0)
        return 0;
    iy0 = by0 > ay0 ? by0 : ay0;
    iy1 = by1 < ay1 ? by1 : ay1;
    if (iy1 <= iy0)
        return 0;
    inter = (ix1 - ix0) * (iy1 - iy0);
    if (inter <= 0)
        return 0;
    area1 = (ax1 - ax0) * (ay1 - ay0);
    area2 = (bx1 - bx0) * (by1 - by0);
    uni = area1 + area2 - inter;
    if (area1 <= 0 || area2 <= 0 || uni <= 0)
        return 0;
    return inter / uni > iou;
}

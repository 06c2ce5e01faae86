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

/* ---- Unique (numpy.unique) ----------------------------------------------------------
 * Rows of `r` 8-byte sort keys: kind 0 double (NaN after every number, as numpy sorts
 * floats), 1 int64, 2 uint64. */
static int q35_uq_cmp(const void *keys, int kind, int64_t r, int64_t a, int64_t b)
{
    int64_t k;
    for (k = 0; k < r; k++) {
        if (kind == 0) {
            const double x = ((const double *)keys)[a * r + k];
            const double y = ((const double *)keys)[b * r + k];
            if (x < y)
                return -1;
            if (x > y)
                return 1;
            if (x != y && !(x != x && y != y))
                return x != x ? 1 : -1;
        } else if (kind == 1) {
            const int64_t x = ((const int64_t *)keys)[a * r + k];
            const int64_t y = ((const int64_t *)keys)[b * r + k];
            if (x != y)
                return x < y ? -1 : 1;
        } else {
            const uint64_t x = ((const uint64_t *)keys)[a * r + k];
            const uint64_t y = ((const uint64_t *)keys)[b * r + k];
            if (x != y)
                return x < y ? -1 : 1;
        }
    }
    return 0;
}

/* Whether rows a and b are one unique value: every key ==, two NaNs equal if nan_equal. */
static int q35_uq_same(const void *keys, int kind, int64_t r, int64_t a, int64_t b,
                       int nan_equal)
{
    int64_t k;
    if (kind != 0)
        return q35_uq_cmp(keys, kind, r, a, b) == 0;
    for (k = 0; k < r; k++) {
        const double x = ((const double *)keys)[a * r + k];
        const double y = ((const double *)keys)[b * r + k];
        if (!(x == y || (nan_equal && x != x && y != y)))
            return 0;
    }
    return 1;
}

/* numpy.unique(x, return_index, return_inverse, return_counts) of n rows of keys: a
 * stable sort of the row numbers (`perm`, `tmp` n each), then per run of equal rows its
 * first row (`first`), size (`counts`) and each row's run (`inverse`); with keep_sorted 0
 * the runs renumbered in first-occurrence order (what ONNX's sorted=0 gives). Returns the
 * number of runs. */
Q35_FN int64_t q35_unique(const void *keys, int kind, int64_t n, int64_t r, int nan_equal,
                          int keep_sorted, int64_t *perm, int64_t *tmp, int64_t *first,
                          int64_t *inverse, int64_t *counts)
{
    int64_t i, w, u = 0;
    for (i = 0; i < n; i++)
        perm[i] = i;
    for (w = 1; w < n; w *= 2) { /* bottom-up merge sort, stable */
        int64_t lo;
        for (lo = 0; lo < n; lo += 2 * w) {
            const int64_t mid = lo + w < n ? lo + w : n, hi = lo + 2 * w < n ? lo + 2 * w : n;
            int64_t a = lo, b = mid, o = lo;
            while (a < mid && b < hi)
                tmp[o++] = q35_uq_cmp(keys, kind, r, perm[b], perm[a]) < 0 ? perm[b++]
                                                                             : perm[a++];
            while (a < mid)
                tmp[o++] = perm[a++];
            while (b < hi)
                tmp[o++] = perm[b++];
        }
        memcpy(perm, tmp, (size_t)n * sizeof *perm);
    }
    for (i = 0; i < n; i++) {
        if (i == 0 || !q35_uq_same(keys, kind, r, perm[i - 1], perm[i], nan_equal)) {
            first[u] = perm[i];
            counts[u++] = 0;
        }
        counts[u - 1]++;
        inverse[perm[i]] = u - 1;
    }
    if (!keep_sorted) { /* tmp: the new number of each run; perm: reordering space */
        int64_t next = 0, g;
        for (g = 0; g < u; g++)
            tmp[g] = -1;
        for (i = 0; i < n; i++)
            if (tmp[inverse[i]] < 0)
                tmp[inverse[i]] = next++;
        for (i = 0; i < n; i++)
            inverse[i] = tmp[inverse[i]];
        for (g = 0; g < u; g++)
            perm[tmp[g]] = first[g];
        memcpy(first, perm, (size_t)u * sizeof *first);
        for (g = 0; g < u; g++)
            perm[tmp[g]] = counts[g];
        memcpy(counts, perm, (size_t)u * sizeof *counts);
    }
    return u;
}

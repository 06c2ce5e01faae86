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

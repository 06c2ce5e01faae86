/* ---- AVX2 int8 GEMV kernel (x86 without AVX-512 VBMI: Haswell and later, AMD Zen) -------
 *
 * Used when the AVX-512 kernels are not compiled in; any group count, group size 32.
 * Per two groups (28 bytes of pair codes, 32 codes, 64 weights):
 *   - decode: block b of the pair to 64-bit lane b (two 16-byte loads per 128-bit lane and
 *     a dword blend), then three shift/mask/or steps split each 56-bit block into 28-, 14-
 *     and 7-bit fields, leaving code i of the block in byte i (no shuffle-port uops);
 *   - lookup of the 128-entry codebook (even-k and odd-k levels) with vpshufb: with
 *     idx_h = code - 16 h (bytes, wrapping), vpshufb gives table h' at the low 4 bits for
 *     h <= code / 16 and 0 (bit 7 set) above, so the XOR over h = 0..7 of tables
 *     T'_h = T_h ^ T_{h-1} telescopes to T_{code / 16}[code % 16];
 *   - vpmaddubsw(|x|, sign(level, x)): the products are exact (|x| <= 127, |level| <= 99, a
 *     pair sum < 2^15), vpmaddwd by 1 widens to int32; activations are de-interleaved per
 *     call into even-k and odd-k rows so levels meet them without shuffles.
 * Each group's sum is the exact int32 dot product; the float32 rescale is then the
 * portable kernel's, group by group in order: bit-exact. */
#ifdef Q35_X86

typedef struct {
    __m256i even[8], odd[8]; /* T'_h of the even-k and odd-k levels, both 128-bit lanes */
    __m256i sixteen, ones;   /* bytes 16, words 1 */
} q35_avx2_tables;

/* Makes v opaque to the optimizer: gcc otherwise rewrites the chain code - 16, - 16, ...
 * as code + c_h with seven constants, each rebuilt by a shuffle-port broadcast. */
#if defined(__GNUC__)
#define Q35_AVX2_HIDE(v) __asm__("" : "+x"(v))
#define Q35_AVX2_HIDE_MEM(p) __asm__ volatile("" : : "r"(p) : "memory")
#else
#define Q35_AVX2_HIDE(v) (void)0
#define Q35_AVX2_HIDE_MEM(p) (void)(p)
#endif

static Q35_AVX2 void q35_avx2_tables_make(q35_avx2_tables *t)
{
    int8_t e[16], o[16];
    int h, l;
    for (h = 0; h < 8; h++) {
        for (l = 0; l < 16; l++) {
            e[l] = (int8_t)(q35_codebook[16 * h + l][0] ^ (h ? q35_codebook[16 * h - 16 + l][0] : 0));
            o[l] = (int8_t)(q35_codebook[16 * h + l][1] ^ (h ? q35_codebook[16 * h - 16 + l][1] : 0));
        }
        t->even[h] = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)(const void *)e));
        t->odd[h] = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)(const void *)o));
    }
    t->sixteen = _mm256_set1_epi8(16);
    t->ones = _mm256_set1_epi16(1);
}

/* The 32 codes of groups at p (lane 0) and p + 14 (lane 1), code i of a group in byte i of
 * its lane. Reads p - 1 .. p + 29 (the group codes precede the payload; the entry's CRC
 * follows it). With one_group, lane 1 repeats lane 0 and nothing past p + 15 is read. */
static inline Q35_AVX2 __m256i q35_avx2_codes(const uint8_t *p, int one_group)
{
    __m256i a, b, x;
    if (one_group) {
        a = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)(const void *)p));
        b = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)(const void *)(p - 1)));
    } else { /* inserts from memory: a load and a vector-ALU uop, no shuffle port */
        a = _mm256_inserti128_si256(
            _mm256_castsi128_si256(_mm_loadu_si128((const __m128i *)(const void *)p)),
            _mm_loadu_si128((const __m128i *)(const void *)(p + 14)), 1);
        b = _mm256_inserti128_si256(
            _mm256_castsi128_si256(_mm_loadu_si128((const __m128i *)(const void *)(p - 1))),
            _mm_loadu_si128((const __m128i *)(const void *)(p + 13)), 1);
    }
    /* qwords: bytes 0-7, 7-14 of each group (block 0, block 1; byte 7 of each is garbage).
     * Each step moves the upper half of every field up by a blend at dword, then word
     * granularity (what lands above a field is garbage that the next step leaves behind),
     * the last one by masks, which also clear bit 7 of every code byte */
    x = _mm256_blend_epi32(a, b, 0xCC);
    x = _mm256_blend_epi32(x, _mm256_slli_epi64(x, 4), 0xAA);
    x = _mm256_blend_epi16(x, _mm256_slli_epi32(x, 2), 0xAA);
    return _mm256_or_si256(_mm256_and_si256(x, _mm256_set1_epi16(0x007F)),
                           _mm256_and_si256(_mm256_slli_epi16(x, 1), _mm256_set1_epi16(0x7F00)));
}

/* int32 dot products of codes and activations (even-k at xe, odd-k at xo): lanes 0-3
 * sum to the first group, 4-7 to the second. */
static inline Q35_AVX2 __m256i q35_avx2_dot(const q35_avx2_tables *t, __m256i le, __m256i lo,
                                   const int8_t *xe, const int8_t *xo)
{
    const __m256i ve = _mm256_loadu_si256((const __m256i *)(const void *)xe);
    const __m256i vo = _mm256_loadu_si256((const __m256i *)(const void *)xo);
    const __m256i pe = _mm256_maddubs_epi16(_mm256_abs_epi8(ve), _mm256_sign_epi8(le, ve));
    const __m256i po = _mm256_maddubs_epi16(_mm256_abs_epi8(vo), _mm256_sign_epi8(lo, vo));
    return _mm256_add_epi32(_mm256_madd_epi16(pe, t->ones), _mm256_madd_epi16(po, t->ones));
}

/* The even-k and odd-k levels of two code vectors a and b, each table load serving both. */
static inline Q35_AVX2 void q35_avx2_levels2(const q35_avx2_tables *t, __m256i a, __m256i b,
                                    __m256i *ae, __m256i *ao, __m256i *be, __m256i *bo)
{
    const __m256i sixteen = t->sixteen;
    __m256i tab = t->even[0], e1 = _mm256_shuffle_epi8(tab, a), e2 = _mm256_shuffle_epi8(tab, b);
    __m256i o1, o2;
    int h;
    tab = t->odd[0];
    o1 = _mm256_shuffle_epi8(tab, a);
    o2 = _mm256_shuffle_epi8(tab, b);
    for (h = 1; h < 8; h++) {
        a = _mm256_sub_epi8(a, sixteen);
        b = _mm256_sub_epi8(b, sixteen);
        tab = t->even[h];
        e1 = _mm256_xor_si256(e1, _mm256_shuffle_epi8(tab, a));
        e2 = _mm256_xor_si256(e2, _mm256_shuffle_epi8(tab, b));
        tab = t->odd[h];
        o1 = _mm256_xor_si256(o1, _mm256_shuffle_epi8(tab, a));
        o2 = _mm256_xor_si256(o2, _mm256_shuffle_epi8(tab, b));
        /* one table at a time: else gcc computes all 32 lookups before the XORs and spills
         * them to the stack */
        Q35_AVX2_HIDE(e1);
        Q35_AVX2_HIDE(e2);
        Q35_AVX2_HIDE(o1);
        Q35_AVX2_HIDE(o2);
    }
    *ae = e1;
    *ao = o1;
    *be = e2;
    *bo = o2;
}

/* Dot products of the group pairs at g0 and g0 + 2 (group index; groups past G give 0). */
static inline Q35_AVX2 void q35_avx2_dot4(const q35_avx2_tables *t, const uint8_t *pay,
                                 const int8_t *xe, const int8_t *xo, int64_t g0, int64_t G,
                                 __m256i *v0, __m256i *v1)
{
    __m256i a, b, ae, ao, be, bo;
    if (g0 + 4 <= G) {
        a = q35_avx2_codes(pay + g0 * 14, 0);
        b = q35_avx2_codes(pay + g0 * 14 + 28, 0);
    } else if (g0 < G) {
        a = q35_avx2_codes(pay + g0 * 14, g0 + 1 >= G);
        b = g0 + 2 < G ? q35_avx2_codes(pay + g0 * 14 + 28, g0 + 3 >= G) : a;
    } else {
        *v0 = *v1 = _mm256_setzero_si256();
        return;
    }
    q35_avx2_levels2(t, a, b, &ae, &ao, &be, &bo);
    *v0 = q35_avx2_dot(t, ae, ao, xe + g0 * 16, xo + g0 * 16);
    /* past G the activations are zero: the sum is 0 whatever the codes */
    *v1 = q35_avx2_dot(t, be, bo, xe + g0 * 16 + 32, xo + g0 * 16 + 32);
}

/* Scratch per row: float(sum(q)) of every group, then the even-k and odd-k activations of
 * G8 = groups rounded up to 8 (16 bytes per group each, zero past K). Fits in
 * q35_qmatmul_work_bytes. */
/* The per-column tables of the AVX2 kernels: the 32 possible group scales (4 tables of 8)
 * and the 4 offsets (twice), each the float32 operation format.md section 3 defines. */
typedef struct {
    __m256 scale[4], offsets;
} q35_avx2_column;

static inline Q35_AVX2 q35_avx2_column q35_avx2_column_make(const q35_q3p5 *t, int64_t n)
{
    const __m256 super_scale = _mm256_set1_ps(t->super_scale[n]);
    q35_avx2_column col;
    int i;
    for (i = 0; i < 4; i++)
        col.scale[i] = _mm256_mul_ps(
            super_scale, _mm256_loadu_ps((const void *)(q35_scale_step_bits + 8 * i)));
    col.offsets = _mm256_add_ps(
        _mm256_set1_ps(t->offset_base[n]),
        _mm256_mul_ps(_mm256_set1_ps(t->offset_step[n]),
                      _mm256_setr_ps(-1.5f, -0.5f, 0.5f, 1.5f, -1.5f, -0.5f, 0.5f, 1.5f)));
    return col;
}

/* The scales and offsets of the 8 groups whose codes are the 7-byte block `block`:
 * code g = word >> 7 g; scale: code bits 0-2 pick within a table of 8, bits 3 and 4 the
 * table (blendv reads the sign bit); offset: bits 5-6. */
static inline Q35_AVX2 void q35_avx2_group_meta(const q35_avx2_column *col, const uint8_t *block,
                                       __m256 *scale, __m256 *offset)
{
    __m256i c = _mm256_broadcastq_epi64(_mm_loadl_epi64((const __m128i *)(const void *)block));
    __m256 b;
    c = _mm256_blend_epi32(
        _mm256_srlv_epi64(c, _mm256_setr_epi64x(0, 14, 28, 42)),
        _mm256_slli_epi64(_mm256_srlv_epi64(c, _mm256_setr_epi64x(7, 21, 35, 49)), 32), 0xAA);
    b = _mm256_castsi256_ps(_mm256_slli_epi32(c, 28));
    *scale = _mm256_blendv_ps(
        _mm256_blendv_ps(_mm256_permutevar8x32_ps(col->scale[0], c),
                         _mm256_permutevar8x32_ps(col->scale[1], c), b),
        _mm256_blendv_ps(_mm256_permutevar8x32_ps(col->scale[2], c),
                         _mm256_permutevar8x32_ps(col->scale[3], c), b),
        _mm256_castsi256_ps(_mm256_slli_epi32(c, 27)));
    *offset = _mm256_permutevar8x32_ps(col->offsets, _mm256_srli_epi32(c, 5));
}

static void q35_i8_avx2_prepare(const q35_qjob *job)
{
    const q35_q3p5 *t = &job->t;
    const int8_t *q = job->q;
    const int64_t rows = job->rows, G = t->groups, G8 = (G + 7) / 8 * 8;
    float *sxf = (float *)(void *)job->work;
    int8_t *xd = (int8_t *)(job->work + rows * G8 * 4);
    int64_t r, i;
    for (r = 0; r < rows; r++) {
        const int8_t *qr = q + r * t->k;
        int8_t *xe = xd + r * G8 * 32, *xo = xe + G8 * 16;
        for (i = 0; i < G8 * 16; i++) {
            xe[i] = 2 * i < t->k ? qr[2 * i] : 0;
            xo[i] = 2 * i + 1 < t->k ? qr[2 * i + 1] : 0;
        }
        for (i = 0; i < G8; i++) {
            int32_t sum = 0;
            int64_t k;
            for (k = i * 32; k < i * 32 + 32 && k < t->k; k++)
                sum += qr[k];
            sxf[r * G8 + i] = (float)sum;
        }
    }
}

/* Columns [n_begin, n_end) of the int8 job prepared above. */
static Q35_AVX2 void q35_i8_avx2_columns(const q35_qjob *job, int64_t n_begin, int64_t n_end)
{
    const q35_q3p5 *t = &job->t;
    const int64_t rows = job->rows, G = t->groups, G8 = (G + 7) / 8 * 8;
    const float *sxf = (const float *)(const void *)job->work;
    const int8_t *xd = (const int8_t *)(job->work + rows * G8 * 4);
    const float *row_scale = job->row_scale;
    float *y = job->y;
    q35_avx2_tables tables;
    int64_t n;
    q35_avx2_tables_make(&tables);
    for (n = n_begin; n < n_end; n++) {
        q35_avx2_tables tb = tables;
        const uint8_t *pay = t->payload + n * t->payload_row;
        const uint8_t *meta = t->meta + n * t->meta_row;
        const q35_avx2_column col = q35_avx2_column_make(t, n);
        int64_t row, gb;
        Q35_AVX2_HIDE(tb.sixteen);
        Q35_AVX2_HIDE(tb.ones);
        for (row = 0; row < rows; row++) {
            const int8_t *xe = xd + row * G8 * 32, *xo = xe + G8 * 16;
            const float *sx = sxf + row * G8;
            float acc_y = 0.0f;
            for (gb = 0; gb < G8; gb += 8) {
                const int64_t gend = G - gb < 8 ? G - gb : 8;
                __m256i v[4], h;
                __m256 scale, offset;
                float terms[8];
                int g;
                q35_avx2_dot4(&tb, pay, xe, xo, gb, G, &v[0], &v[1]);
                q35_avx2_dot4(&tb, pay, xe, xo, gb + 4, G, &v[2], &v[3]);
                /* lanes 0-3: groups 0, 2, 4, 6; lanes 4-7: groups 1, 3, 5, 7 */
                h = _mm256_hadd_epi32(_mm256_hadd_epi32(v[0], v[1]), _mm256_hadd_epi32(v[2], v[3]));
                h = _mm256_permutevar8x32_epi32(h, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
                /* the 8 group codes (one 7-byte block) to dwords: code g = word >> 7 g */
                q35_avx2_group_meta(&col, meta + gb / 8 * 7, &scale, &offset);
                /* s * acc + o * sx per group, then the in-order float32 sum */
                _mm256_storeu_ps(terms, _mm256_add_ps(
                    _mm256_mul_ps(scale, _mm256_cvtepi32_ps(h)),
                    _mm256_mul_ps(offset, _mm256_loadu_ps(sx + gb))));
                for (g = 0; g < gend; g++)
                    acc_y = acc_y + terms[g];
            }
            y[row * t->n + n] = acc_y * row_scale[row];
        }
    }
}

/* The levels of the group pairs at g0 and g0 + 2 (as q35_avx2_dot4 decodes them; zero
 * levels past G, where the activations are zero too). */
static inline Q35_AVX2 void q35_avx2_levels4(const q35_avx2_tables *t, const uint8_t *pay,
                                             int64_t g0, int64_t G, __m256i lev[4])
{
    __m256i a, b;
    if (g0 + 4 <= G) {
        a = q35_avx2_codes(pay + g0 * 14, 0);
        b = q35_avx2_codes(pay + g0 * 14 + 28, 0);
    } else if (g0 < G) {
        a = q35_avx2_codes(pay + g0 * 14, g0 + 1 >= G);
        b = g0 + 2 < G ? q35_avx2_codes(pay + g0 * 14 + 28, g0 + 3 >= G) : a;
    } else {
        lev[0] = lev[1] = lev[2] = lev[3] = _mm256_setzero_si256();
        return;
    }
    q35_avx2_levels2(t, a, b, &lev[0], &lev[1], &lev[2], &lev[3]);
}

/* Several rows (batched decode, prefill: AVX2 has no int8 GEMM): per column and block of
 * 8 groups the levels are decoded once, for up to Q35_AVX2_ROWS rows at a time; per row
 * the same dot products, group sums and in-order float32 rescale as q35_i8_avx2_columns,
 * so the bits are the same. */
enum { Q35_AVX2_ROWS = 8 };
static Q35_AVX2 void q35_i8_avx2_rows(const q35_qjob *job, int64_t n_begin, int64_t n_end)
{
    const q35_q3p5 *t = &job->t;
    const int64_t rows = job->rows, G = t->groups, G8 = (G + 7) / 8 * 8;
    const float *sxf = (const float *)(const void *)job->work;
    const int8_t *xd = (const int8_t *)(job->work + rows * G8 * 4);
    q35_avx2_tables tables;
    int64_t n, r0;
    q35_avx2_tables_make(&tables);
    for (n = n_begin; n < n_end; n++) {
        q35_avx2_tables tb = tables;
        const uint8_t *pay = t->payload + n * t->payload_row;
        const uint8_t *meta = t->meta + n * t->meta_row;
        const q35_avx2_column col = q35_avx2_column_make(t, n);
        Q35_AVX2_HIDE(tb.sixteen);
        Q35_AVX2_HIDE(tb.ones);
        for (r0 = 0; r0 < rows; r0 += Q35_AVX2_ROWS) {
            const int64_t rn = rows - r0 < Q35_AVX2_ROWS ? rows - r0 : Q35_AVX2_ROWS;
            float acc_y[Q35_AVX2_ROWS];
            int64_t row, gb;
            for (row = 0; row < rn; row++)
                acc_y[row] = 0.0f;
            for (gb = 0; gb < G8; gb += 8) {
                const int64_t gend = G - gb < 8 ? G - gb : 8;
                __m256i lev[8];
                __m256 scale, offset;
                q35_avx2_levels4(&tb, pay, gb, G, lev);
                q35_avx2_levels4(&tb, pay, gb + 4, G, lev + 4);
                q35_avx2_group_meta(&col, meta + gb / 8 * 7, &scale, &offset);
                for (row = 0; row < rn; row++) {
                    const int8_t *xe = xd + (r0 + row) * G8 * 32 + gb * 16, *xo = xe + G8 * 16;
                    const float *sx = sxf + (r0 + row) * G8;
                    __m256i v0 = q35_avx2_dot(&tb, lev[0], lev[1], xe, xo);
                    __m256i v1 = q35_avx2_dot(&tb, lev[2], lev[3], xe + 32, xo + 32);
                    __m256i v2 = q35_avx2_dot(&tb, lev[4], lev[5], xe + 64, xo + 64);
                    __m256i v3 = q35_avx2_dot(&tb, lev[6], lev[7], xe + 96, xo + 96);
                    __m256i h;
                    float terms[8], acc = acc_y[row];
                    int g;
                    /* lanes 0-3: groups 0, 2, 4, 6; lanes 4-7: groups 1, 3, 5, 7 */
                    h = _mm256_hadd_epi32(_mm256_hadd_epi32(v0, v1), _mm256_hadd_epi32(v2, v3));
                    h = _mm256_permutevar8x32_epi32(h, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
                    _mm256_storeu_ps(terms, _mm256_add_ps(
                        _mm256_mul_ps(scale, _mm256_cvtepi32_ps(h)),
                        _mm256_mul_ps(offset, _mm256_loadu_ps(sx + gb))));
                    for (g = 0; g < gend; g++)
                        acc = acc + terms[g];
                    acc_y[row] = acc;
                }
            }
            for (row = 0; row < rn; row++)
                job->y[(r0 + row) * t->n + n] = acc_y[row] * job->row_scale[r0 + row];
        }
    }
}

static void q35_qmatmul_i8_avx2(const q35_qjob *job)
{
    q35_i8_avx2_prepare(job);
    q35_parallel_columns(job->rows > 1 ? q35_i8_avx2_rows : q35_i8_avx2_columns, job, 16,
                         job->rows * job->t.n * job->t.k);
}

/* Float path for group size 32 (AVX2, with FMA where available): the codes are decoded and
 * looked up as on the int8 path, the levels go through a stack buffer and come back with
 * sign-extending loads, and each group is `scale * sum(x * level)` in float, plus
 * `offset * sum(x)`; 8 groups are summed in float, the blocks of 8 in double. The result
 * differs from the interpreter's float64 dot product by a few float32 roundings, like the
 * AVX-512 kernel's (tests allow 1e-5 of the output scale). */
#define Q35_AVX2_FMADD(a, b, c) _mm256_fmadd_ps(a, b, c)
#define Q35_AVX2_LEVELS(p) \
    _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(const void *)(p))))

static void q35_f32_avx2_prepare(const q35_qjob *job)
{
    /* per row: even-k and odd-k activations of G8 groups (16 each, zero past K), then the
     * float sum of each group's activations (double, rounded once) */
    const q35_q3p5 *t = &job->t;
    const float *x = job->x;
    const int64_t rows = job->rows, G = t->groups, G8 = (G + 7) / 8 * 8, stride = G8 * 33;
    float *xd = (float *)(void *)job->work;
    int64_t r, i;
    for (r = 0; r < rows; r++) {
        const float *xr = x + r * t->k;
        float *xe = xd + r * stride, *xo = xe + G8 * 16, *xs = xo + G8 * 16;
        for (i = 0; i < G8 * 16; i++) {
            xe[i] = 2 * i < t->k ? xr[2 * i] : 0.0f;
            xo[i] = 2 * i + 1 < t->k ? xr[2 * i + 1] : 0.0f;
        }
        for (i = 0; i < G8; i++) {
            double sum = 0.0;
            int64_t k;
            for (k = i * 32; k < i * 32 + 32 && k < t->k; k++)
                sum += xr[k];
            xs[i] = (float)sum;
        }
    }
}

/* The float work of one decoded 8-group block (lev: as q35_f32_avx2_columns decodes it;
 * sc, offset: the groups' scales and offsets) for rows 0 .. rn - 1 of xd: each row's
 * block sum goes into its double accumulators. One row converts the levels as it goes
 * (sign-extending loads and `vcvtdq2ps`); several rows convert them once into 32 vectors
 * of float levels and share them (the conversion is exact, so every row's bits are those
 * of the 1-row loop). */
static inline __attribute__((always_inline)) Q35_AVX2 __m256 q35_f32_avx2_row(
    const __m256 *wf, const __m256i *lev, const float *sc, __m256 offset, const float *xe,
    const float *xo, const float *xs, int64_t gb)
{
    __m256 sum = _mm256_setzero_ps();
    int g;
    for (g = 0; g < 8; g++) {
        /* group g: even levels at byte 16 (g % 2) of lev[2 (g / 2)], odd of the next */
        const int8_t *le = (const int8_t *)(const void *)&lev[2 * (g / 2)] + 16 * (g % 2);
        const int8_t *lo = (const int8_t *)(const void *)&lev[2 * (g / 2) + 1] + 16 * (g % 2);
        const float *xeg = xe + (gb + g) * 16, *xog = xo + (gb + g) * 16;
        __m256 d;
        if (wf) {
            d = _mm256_mul_ps(_mm256_loadu_ps(xog + 8), wf[4 * g]);
            d = Q35_AVX2_FMADD(_mm256_loadu_ps(xog), wf[4 * g + 1], d);
            d = Q35_AVX2_FMADD(_mm256_loadu_ps(xeg + 8), wf[4 * g + 2], d);
            d = Q35_AVX2_FMADD(_mm256_loadu_ps(xeg), wf[4 * g + 3], d);
        } else {
            d = _mm256_mul_ps(_mm256_loadu_ps(xog + 8), Q35_AVX2_LEVELS(lo + 8));
            d = Q35_AVX2_FMADD(_mm256_loadu_ps(xog), Q35_AVX2_LEVELS(lo), d);
            d = Q35_AVX2_FMADD(_mm256_loadu_ps(xeg + 8), Q35_AVX2_LEVELS(le + 8), d);
            d = Q35_AVX2_FMADD(_mm256_loadu_ps(xeg), Q35_AVX2_LEVELS(le), d);
        }
        sum = Q35_AVX2_FMADD(_mm256_broadcast_ss(sc + g), d, sum);
    }
    return _mm256_add_ps(sum, _mm256_mul_ps(offset, _mm256_loadu_ps(xs + gb)));
}

static inline __attribute__((always_inline)) Q35_AVX2 void q35_f32_avx2_rows(
    const __m256i *lev, const float *sc, __m256 offset, const float *xd, int64_t stride,
    int64_t G8, int64_t gb, int64_t rn, __m256d *acc_lo, __m256d *acc_hi)
{
    __m256 wf[32];
    int64_t row;
    int g;
    if (rn > 1)
        for (g = 0; g < 8; g++) {
            const int8_t *le = (const int8_t *)(const void *)&lev[2 * (g / 2)] + 16 * (g % 2);
            const int8_t *lo = (const int8_t *)(const void *)&lev[2 * (g / 2) + 1] + 16 * (g % 2);
            wf[4 * g] = Q35_AVX2_LEVELS(lo + 8);
            wf[4 * g + 1] = Q35_AVX2_LEVELS(lo);
            wf[4 * g + 2] = Q35_AVX2_LEVELS(le + 8);
            wf[4 * g + 3] = Q35_AVX2_LEVELS(le);
        }
    for (row = 0; row < rn; row++) {
        const float *xe = xd + row * stride, *xo = xe + G8 * 16, *xs = xo + G8 * 16;
        const __m256 sum = q35_f32_avx2_row(rn > 1 ? wf : NULL, lev, sc, offset, xe, xo, xs, gb);
        acc_lo[row] = _mm256_add_pd(acc_lo[row], _mm256_cvtps_pd(_mm256_castps256_ps128(sum)));
        acc_hi[row] = _mm256_add_pd(acc_hi[row], _mm256_cvtps_pd(_mm256_extractf128_ps(sum, 1)));
    }
}

/* The levels of the 8-group block gb of a column (codes at pay, group codes at meta): even
 * and odd levels of groups (0, 1), (2, 3), ... in lev, zero for blocks past G; the groups'
 * scales in sc and offsets in *offset. */
static inline __attribute__((always_inline)) Q35_AVX2 void q35_f32_avx2_decode(
    const q35_avx2_tables *tb, const q35_avx2_column *col, const uint8_t *pay,
    const uint8_t *meta, int64_t gb, int64_t G, __m256i *lev, float *sc, __m256 *offset)
{
    __m256 scale;
    int half;
    q35_avx2_group_meta(col, meta + gb / 8 * 7, &scale, offset);
    _mm256_storeu_ps(sc, scale);
    for (half = 0; half < 2; half++) {
        const int64_t g0 = gb + 4 * half;
        __m256i ca, cb;
        if (g0 >= G) { /* only padding groups: zero activations */
            lev[4 * half] = lev[4 * half + 1] = lev[4 * half + 2] = lev[4 * half + 3] =
                _mm256_setzero_si256();
            continue;
        }
        if (g0 + 4 <= G) {
            ca = q35_avx2_codes(pay + g0 * 14, 0);
            cb = q35_avx2_codes(pay + g0 * 14 + 28, 0);
        } else {
            ca = q35_avx2_codes(pay + g0 * 14, g0 + 1 >= G);
            cb = g0 + 2 < G ? q35_avx2_codes(pay + g0 * 14 + 28, g0 + 3 >= G) : ca;
        }
        q35_avx2_levels2(tb, ca, cb, &lev[4 * half], &lev[4 * half + 1], &lev[4 * half + 2],
                         &lev[4 * half + 3]);
    }
    Q35_AVX2_HIDE_MEM(lev); /* loads stay loads, not extracts */
}

/* Columns [n_begin, n_end) of the float job prepared above. Each 8-group block of a
 * column is decoded once for up to Q35_AVX2_ROWS rows (1 to 7 rows come here; 8 and more
 * take the float GEMM); every row's sums are formed in the same order whatever the row
 * count. One row has its own loop, whose accumulators stay in registers. */
static Q35_AVX2 void q35_f32_avx2_columns(const q35_qjob *job, int64_t n_begin, int64_t n_end)
{
    const q35_q3p5 *t = &job->t;
    const int64_t rows = job->rows, G = t->groups, G8 = (G + 7) / 8 * 8, stride = G8 * 33;
    const float *xd = (const float *)(const void *)job->work;
    q35_avx2_tables tables;
    int64_t n, r0;
    q35_avx2_tables_make(&tables);
    for (n = n_begin; n < n_end; n++) {
        q35_avx2_tables tb = tables;
        const uint8_t *pay = t->payload + n * t->payload_row;
        const uint8_t *meta = t->meta + n * t->meta_row;
        const q35_avx2_column col = q35_avx2_column_make(t, n);
        Q35_AVX2_HIDE(tb.sixteen);
        for (r0 = 0; r0 < rows; r0 += Q35_AVX2_ROWS) {
            const int64_t rn = rows - r0 < Q35_AVX2_ROWS ? rows - r0 : Q35_AVX2_ROWS;
            __m256d acc_lo[Q35_AVX2_ROWS], acc_hi[Q35_AVX2_ROWS];
            __m256i lev[8];
            __m256 offset;
            float sc[8];
            int64_t row, gb;
            if (rn == 1) {
                __m256d lo = _mm256_setzero_pd(), hi = _mm256_setzero_pd();
                const float *xe = xd + r0 * stride, *xo = xe + G8 * 16, *xs = xo + G8 * 16;
                for (gb = 0; gb < G8; gb += 8) {
                    __m256 sum;
                    q35_f32_avx2_decode(&tb, &col, pay, meta, gb, G, lev, sc, &offset);
                    sum = q35_f32_avx2_row(NULL, lev, sc, offset, xe, xo, xs, gb);
                    lo = _mm256_add_pd(lo, _mm256_cvtps_pd(_mm256_castps256_ps128(sum)));
                    hi = _mm256_add_pd(hi, _mm256_cvtps_pd(_mm256_extractf128_ps(sum, 1)));
                }
                acc_lo[0] = lo;
                acc_hi[0] = hi;
            } else {
                for (row = 0; row < rn; row++)
                    acc_lo[row] = acc_hi[row] = _mm256_setzero_pd();
                for (gb = 0; gb < G8; gb += 8) {
                    q35_f32_avx2_decode(&tb, &col, pay, meta, gb, G, lev, sc, &offset);
                    q35_f32_avx2_rows(lev, sc, offset, xd + r0 * stride, stride, G8, gb, rn,
                                      acc_lo, acc_hi);
                }
            }
            for (row = 0; row < rn; row++) {
                double lanes[4];
                _mm256_storeu_pd(lanes, _mm256_add_pd(acc_lo[row], acc_hi[row]));
                job->y[(r0 + row) * t->n + n] =
                    (float)((lanes[0] + lanes[1]) + (lanes[2] + lanes[3]));
            }
        }
    }
}

/* Transpose 8 x 8 floats held as 8 rows. */
static Q35_AVX2 void q35_avx2_transpose8(__m256 r[8])
{
    __m256 t[8], u[8];
    int i;
    for (i = 0; i < 4; i++) {
        t[2 * i] = _mm256_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm256_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    for (i = 0; i < 2; i++) {
        u[4 * i] = _mm256_shuffle_ps(t[4 * i], t[4 * i + 2], 0x44);
        u[4 * i + 1] = _mm256_shuffle_ps(t[4 * i], t[4 * i + 2], 0xEE);
        u[4 * i + 2] = _mm256_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0x44);
        u[4 * i + 3] = _mm256_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0xEE);
    }
    for (i = 0; i < 4; i++) {
        r[i] = _mm256_permute2f128_ps(u[i], u[4 + i], 0x20);
        r[4 + i] = _mm256_permute2f128_ps(u[i], u[4 + i], 0x31);
    }
}

static void q35_qmatmul_f32_avx2(const q35_qjob *job)
{
    q35_f32_avx2_prepare(job);
    q35_parallel_columns(q35_f32_avx2_columns, job, 16, job->rows * job->t.n * job->t.k);
}
#endif

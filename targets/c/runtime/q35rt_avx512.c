/* ---- AVX-512 (VBMI + VNNI) GEMV kernels for group size 32 --------------------------------
 *
 * 56 bytes of pair codes (8 blocks of 7 bytes: 64 codes, 128 weights, 4 groups) decode in
 * four instructions: a masked load, a byte permute that puts block b in 64-bit lane b, a
 * multishift that moves code i of the lane to byte i (shift 7i), and a mask with 0x7f. Two
 * 128-entry byte-table lookups (vpermi2b) give the even-k and odd-k levels of all 64 codes.
 * Activations are de-interleaved once per call into even-k and odd-k rows, so the levels
 * multiply them directly: vpdpbusd on the int8 path, float products on the float path.
 */
#ifdef Q35_X86
#if defined(__GNUC__)
#define Q35_OPAQUE(p) __asm__ volatile("" : : "r"(p) : "memory")
#else
#define Q35_OPAQUE(p) (void)(p)
#endif

typedef struct {
    __m512i block_index, shifts, low7, lane_shift;
    __m512i even_lo, even_hi, odd_lo, odd_hi; /* levels (+128 for the int8 path) */
    __m512i meta_index, meta_shifts;          /* group codes in q35_group_order, as dwords */
    int permute; /* place blocks by a byte permute (AMD), else by a concatenating shift */
} q35_decoder;

/* Complete unrolling of the small loops over chunks and columns, which keeps their
 * accumulators in registers also at -O2 (where gcc does not unroll them by itself). */
#define Q35_UNROLL _Pragma("GCC unroll 4")

/* The int8 kernel's order of the 16 groups of a 512-weight block in a vector: lane j holds
 * group q35_group_order(j) (a 4 x 4 transpose, its own inverse), the order in which
 * q35_group_sums16 leaves the four accumulators' group sums without cross-lane moves. */
#define q35_group_order(j) (4 * ((j) % 4) + (j) / 4)

static Q35_AVX512 q35_decoder q35_decoder_make(int biased)
{
    q35_decoder d;
    int8_t index[64], even[128], odd[128];
    int i;
    for (i = 0; i < 64; i++)
        index[i] = (int8_t)(7 * (i / 8) + (i % 8 < 7 ? i % 8 : 6));
    for (i = 0; i < 128; i++) {
        even[i] = (int8_t)(q35_codebook[i][0] + (biased ? 128 : 0));
        odd[i] = (int8_t)(q35_codebook[i][1] + (biased ? 128 : 0));
    }
    d.block_index = _mm512_loadu_si512((const void *)index);
    d.shifts = _mm512_set1_epi64(0x312a231c150e0700LL);
    d.lane_shift = _mm512_setr_epi64(0, 8, 16, 24, 32, 40, 48, 56);
    {
        /* Qword q gathers the two bytes holding group code g = q35_group_order(2q) (bytes
         * 0-1) and those of q35_group_order(2q + 1) (bytes 4-5); the multishift brings each
         * code to the low byte of its dword. */
        int8_t mindex[64], mshift[64];
        int q, h;
        memset(mindex, 0, sizeof mindex);
        memset(mshift, 0, sizeof mshift);
        for (q = 0; q < 8; q++)
            for (h = 0; h < 2; h++) {
                const int g = q35_group_order(2 * q + h), byte = 7 * g / 8;
                mindex[8 * q + 4 * h] = (int8_t)byte;
                mindex[8 * q + 4 * h + 1] = (int8_t)(byte + 1);
                mshift[8 * q + 4 * h] = (int8_t)(32 * h + 7 * g - 8 * byte);
            }
        d.meta_index = _mm512_loadu_si512((const void *)mindex);
        d.meta_shifts = _mm512_loadu_si512((const void *)mshift);
    }
    d.low7 = _mm512_set1_epi8(0x7f);
    d.permute = q35_cpu_is_amd();
    d.even_lo = _mm512_loadu_si512((const void *)even);
    d.even_hi = _mm512_loadu_si512((const void *)(even + 64));
    d.odd_lo = _mm512_loadu_si512((const void *)odd);
    d.odd_hi = _mm512_loadu_si512((const void *)(odd + 64));
    return d;
}

/* The 7-bit codes packed in the `bytes` (<= 56) bytes at p, one per byte, with garbage
 * in bit 7 (which vpermi2b ignores). */
static inline Q35_AVX512 __m512i q35_codes_raw(const q35_decoder *d, const uint8_t *p, int bytes)
{
    __mmask64 mask = bytes >= 56 ? (__mmask64)0x00ffffffffffffffULL
                                 : (((__mmask64)1 << bytes) - 1);
    __m512i v = _mm512_maskz_loadu_epi8(mask, (const void *)p);
    v = _mm512_permutexvar_epi8(d->block_index, v);
    return _mm512_multishift_epi64_epi8(d->shifts, v);
}

/* The same for a whole 56-byte chunk, with plain 64-byte loads: the blob leaves at least
 * 8 readable bytes after every entry (memory.plan_blob) and every payload follows its
 * entry's header, and a masked load would cost a mask-register move on the shuffle port,
 * the scarcest resource on Intel cores. There block b goes to qword b by a concatenating
 * shift (qword b of p : qword b of p - 8, left by 8b bits) on the vector-ALU port
 * instead of a byte permute on the shuffle port; on the AMD EPYC measured (family 26,
 * Zen 5) the byte permute is the faster (one load less; 4096 x 4096 int8 GEMV 0.27 ->
 * 0.25 ms), so d->permute picks it on AMD (loop-invariant, predicted). */
static inline Q35_AVX512 __m512i q35_codes_full(const q35_decoder *d, const uint8_t *p)
{
    __m512i v = _mm512_loadu_si512((const void *)p);
    if (d->permute)
        v = _mm512_permutexvar_epi8(d->block_index, v);
    else
        v = _mm512_shldv_epi64(v, _mm512_loadu_si512((const void *)(p - 8)), d->lane_shift);
    return _mm512_multishift_epi64_epi8(d->shifts, v);
}

/* The codes of chunk ch (56 bytes, 4 groups) of the 16-group block whose codes start at p,
 * `left` code bytes of the column from p on: plain loads when the whole block is there. */
static inline Q35_AVX512 __m512i q35_codes_chunk(const q35_decoder *d, const uint8_t *p,
                                                 int64_t left, int ch)
{
    const int64_t bytes = left - 56 * ch;
    return left >= 224 ? q35_codes_full(d, p + 56 * ch)
                       : q35_codes_raw(d, p + 56 * ch,
                                       bytes >= 56 ? 56 : bytes > 0 ? (int)bytes : 0);
}

/* How many of the 4 chunks of 16-group block gb hold real groups (the rest is padding, whose
 * activations are zero: the kernels skip those chunks). */
static inline int64_t q35_block_chunks(const q35_q3p5 *t, int64_t gb)
{
    return (t->groups - gb * 16 + 3) / 4;
}

/* The codes of column n's 16-group block gb, with the column's stream prefetched 3 KiB
 * ahead (the GEMVs read each column start to end). */
static inline Q35_AVX512 const uint8_t *q35_block_codes(const q35_q3p5 *t, int64_t n, int64_t gb)
{
    const uint8_t *p = t->payload + n * t->payload_row + gb * 224;
    _mm_prefetch((const char *)(p + 3072), _MM_HINT_T0);
    _mm_prefetch((const char *)(p + 3136), _MM_HINT_T0);
    _mm_prefetch((const char *)(p + 3200), _MM_HINT_T0);
    _mm_prefetch((const char *)(p + 3264), _MM_HINT_T0);
    return p;
}

/* v's 16 floats added to two vectors of 8 doubles (lanes 0-7 to lo, 8-15 to hi). */
static inline Q35_AVX512 void q35_add_pd16(__m512d *lo, __m512d *hi, __m512 v)
{
    *lo = _mm512_add_pd(*lo, _mm512_cvtps_pd(_mm512_castps512_ps256(v)));
    *hi = _mm512_add_pd(*hi, _mm512_cvtps_pd(_mm512_extractf32x8_ps(v, 1)));
}

/* Per column: the 32 possible group scales super_scale * 2^(-e/5) (two vectors) and the
 * 4 possible group offsets offset_base + offset_step * {-1.5, -0.5, 0.5, 1.5} (repeated 4
 * times), each the float32 operation format.md section 3 defines, so that a group's scale
 * and offset are table lookups by its code. */
typedef struct {
    __m512 scale_lo, scale_hi, offset;
} q35_column_meta;

static inline Q35_AVX512 q35_column_meta q35_column_meta_make(const q35_q3p5 *t, int64_t n)
{
    q35_column_meta m;
    const __m512 super_scale = _mm512_set1_ps(t->super_scale[n]);
    const __m512 grid = _mm512_setr_ps(-1.5f, -0.5f, 0.5f, 1.5f, -1.5f, -0.5f, 0.5f, 1.5f,
                                       -1.5f, -0.5f, 0.5f, 1.5f, -1.5f, -0.5f, 0.5f, 1.5f);
    m.scale_lo = _mm512_mul_ps(super_scale,
                               _mm512_loadu_ps((const void *)q35_scale_step_bits));
    m.scale_hi = _mm512_mul_ps(super_scale,
                               _mm512_loadu_ps((const void *)(q35_scale_step_bits + 16)));
    m.offset = _mm512_add_ps(_mm512_set1_ps(t->offset_base[n]),
                             _mm512_mul_ps(_mm512_set1_ps(t->offset_step[n]), grid));
    return m;
}

/* Scale and offset of the 16 groups whose 7-bit codes start at `codes`, in
 * q35_group_order: the codes go to the low bits of their dwords (a byte permute and a
 * multishift; the bits above are garbage, which the lookups ignore: vpermi2ps reads
 * index bits 0-4, vpermps bits 0-3 and the offset table repeats with period 4). */
static inline Q35_AVX512 void q35_group_meta16_ordered(const uint8_t *codes, const q35_decoder *d,
                                            const q35_column_meta *m, __m512 *scale,
                                            __m512 *offset)
{
    __m512i c = _mm512_permutexvar_epi8(d->meta_index, _mm512_loadu_si512((const void *)codes));
    c = _mm512_multishift_epi64_epi8(d->meta_shifts, c);
    *scale = _mm512_permutex2var_ps(m->scale_lo, c, m->scale_hi);
    *offset = _mm512_permutexvar_ps(_mm512_srli_epi32(c, 5), m->offset);
}

/* The 16 group sums of four accumulators whose 4-lane runs are groups (a: 0-3, b: 4-7,
 * c: 8-11, d: 12-15), in q35_group_order: pairs of lanes are added by 64-bit shifts and
 * blends (vector-ALU ports) and only the last step moves qwords (two unpacks). */
static inline Q35_AVX512 __m512i q35_group_sums16(__m512i a, __m512i b, __m512i c, __m512i d)
{
    const __mmask16 odd = 0xAAAA;
    __m512i ab = _mm512_mask_blend_epi32(odd, _mm512_add_epi32(a, _mm512_srli_epi64(a, 32)),
                                         _mm512_add_epi32(b, _mm512_slli_epi64(b, 32)));
    __m512i cd = _mm512_mask_blend_epi32(odd, _mm512_add_epi32(c, _mm512_srli_epi64(c, 32)),
                                         _mm512_add_epi32(d, _mm512_slli_epi64(d, 32)));
    return _mm512_add_epi32(_mm512_unpacklo_epi64(ab, cd), _mm512_unpackhi_epi64(ab, cd));
}

/* Scale and offset (float32, format.md section 3) of 16 groups, from their codes. */
static Q35_AVX512 void q35_group_meta16(const q35_q3p5 *t, int64_t n, int64_t g0, const q35_decoder *d,
                             __m512 *scale, __m512 *offset)
{
    const __m512 steps_lo = _mm512_loadu_ps((const void *)q35_scale_step_bits);
    const __m512 steps_hi = _mm512_loadu_ps((const void *)(q35_scale_step_bits + 16));
    const __m512 grid = _mm512_setr_ps(-1.5f, -0.5f, 0.5f, 1.5f, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                                       0, 0);
    /* Only the first 16 codes (14 bytes) are used; a plain load is safe since the
     * payload follows the group codes in the entry. */
    __m512i codes = _mm512_and_si512(
        q35_codes_full(d, t->meta + n * t->meta_row + (g0 / 8) * 7), d->low7);
    __m512i c = _mm512_cvtepu8_epi32(_mm512_castsi512_si128(codes));
    __m512 step = _mm512_permutex2var_ps(steps_lo, _mm512_and_si512(c, _mm512_set1_epi32(31)),
                                         steps_hi);
    __m512 j = _mm512_permutexvar_ps(_mm512_srli_epi32(c, 5), grid);
    *scale = _mm512_mul_ps(_mm512_set1_ps(t->super_scale[n]), step);
    *offset = _mm512_add_ps(_mm512_set1_ps(t->offset_base[n]),
                            _mm512_mul_ps(_mm512_set1_ps(t->offset_step[n]), j));
}

/* Transpose 16 x 16 floats held as 16 rows (r[j] lane i becomes r[i] lane j): 4 x 4
 * transposes inside 128-bit lanes (32-bit, then 64-bit unpacks), then two stages of
 * 128-bit lane shuffles. Every step is a plain permutation, so the bits are kept. The
 * unpacks run on more ports than the two-source `vpermt2ps` of the earlier four
 * block-swap stages (the same 64 shuffles): docs/benchmarks.md, "Small M". */
static Q35_AVX512 void q35_transpose16(__m512 r[16])
{
    __m512 t[16], u[16];
    int i, m;
    for (i = 0; i < 8; i++) {
        t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    /* u[4 i + m], 128-bit lane l: rows 4 i .. 4 i + 3 at column 4 l + m */
    for (i = 0; i < 4; i++) {
        const __m512d a = _mm512_castps_pd(t[4 * i]), b = _mm512_castps_pd(t[4 * i + 1]),
                      c = _mm512_castps_pd(t[4 * i + 2]), d = _mm512_castps_pd(t[4 * i + 3]);
        u[4 * i] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, c));
        u[4 * i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, c));
        u[4 * i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(b, d));
        u[4 * i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(b, d));
    }
    /* column 4 l + m: lane l of u[m], u[4 + m], u[8 + m], u[12 + m] */
    for (m = 0; m < 4; m++) {
        const __m512 x0 = _mm512_shuffle_f32x4(u[m], u[4 + m], 0x88),
                     x1 = _mm512_shuffle_f32x4(u[m], u[4 + m], 0xdd),
                     y0 = _mm512_shuffle_f32x4(u[8 + m], u[12 + m], 0x88),
                     y1 = _mm512_shuffle_f32x4(u[8 + m], u[12 + m], 0xdd);
        r[m] = _mm512_shuffle_f32x4(x0, y0, 0x88);
        r[4 + m] = _mm512_shuffle_f32x4(x1, y1, 0x88);
        r[8 + m] = _mm512_shuffle_f32x4(x0, y0, 0xdd);
        r[12 + m] = _mm512_shuffle_f32x4(x1, y1, 0xdd);
    }
}

/* int8 path for group size 32. Groups are padded to a multiple of 16 with zero
 * activations (so padded terms are exactly +0). `work` (q35_qmatmul_work_bytes), per row:
 * float(sum(q)) per group, in q35_group_order within each 16 groups (the offset term and,
 * times 128, the correction of the +128 bias of the levels), then the de-interleaved
 * activations (even-k, then odd-k halves). */
static Q35_AVX512 void q35_i8_avx512_prepare(const q35_qjob *job)
{
    const q35_q3p5 *t = &job->t;
    const int8_t *q = job->q;
    const int64_t rows = job->rows, G = (t->groups + 15) / 16 * 16, kp = G * 32;
    uint8_t *work = job->work;
    float *sxf = (float *)(void *)work;
    int8_t *qd = (int8_t *)(work + rows * G * 4);
    int64_t r, i;
    const int64_t kfull = t->k / 64 * 64;
    int8_t deinterleave[64];
    for (i = 0; i < 32; i++) {
        deinterleave[i] = (int8_t)(2 * i);
        deinterleave[32 + i] = (int8_t)(2 * i + 1);
    }
    for (r = 0; r < rows; r++) {
        const int8_t *qr = q + r * t->k;
        int8_t *qe = qd + r * kp, *qo = qe + kp / 2;
        for (i = 0; i < kfull; i += 64) { /* 64 activations: 32 even-k, then 32 odd-k */
            const __m512i v = _mm512_permutexvar_epi8(
                _mm512_loadu_si512((const void *)deinterleave),
                _mm512_loadu_si512((const void *)(qr + i)));
            _mm256_storeu_si256((__m256i *)(void *)(qe + i / 2), _mm512_castsi512_si256(v));
            _mm256_storeu_si256((__m256i *)(void *)(qo + i / 2),
                                _mm512_extracti64x4_epi64(v, 1));
        }
        for (i = kfull / 2; i < kp / 2; i++) {
            qe[i] = 2 * i < t->k ? qr[2 * i] : 0;
            qo[i] = 2 * i + 1 < t->k ? qr[2 * i + 1] : 0;
        }
        for (i = 0; i < G; i++) { /* stored in q35_group_order within each 16 groups */
            int32_t sum = 0;
            int64_t k;
            if (i * 32 + 32 <= t->k)
                for (k = 0; k < 32; k++)
                    sum += qr[i * 32 + k];
            else
                for (k = i * 32; k < t->k; k++)
                    sum += qr[k];
            sxf[r * G + i / 16 * 16 + q35_group_order(i % 16)] = (float)sum;
        }
    }
}

/* Columns [n0, n1) (n0 a multiple of 16) of the int8 job prepared above, 16 at a time. */
/* Columns decoded side by side, sharing activation loads: 2 measured best on an AMD Zen 5
 * (3 or more run out of the 32 vector registers: 4 accumulators a column). */
enum { Q35_GEMV_COLS = 2 };
static Q35_AVX512 void q35_i8_avx512_columns(const q35_qjob *job, int64_t n_begin, int64_t n_end)
{
    const q35_q3p5 *t = &job->t;
    const int64_t rows = job->rows, G = (t->groups + 15) / 16 * 16, kp = G * 32;
    const float *sxf = (const float *)(const void *)job->work;
    const int8_t *qd = (const int8_t *)(job->work + rows * G * 4);
    const float *row_scale = job->row_scale;
    float *y = job->y;
    const q35_decoder d = q35_decoder_make(1);
    int64_t tile;
    for (tile = n_begin / 16; tile * 16 < n_end; tile++) {
        const q35_decoder dc = d; /* a private copy the compiler keeps in registers */
        /* Q35_GEMV_COLS columns at a time (each column's codes are one contiguous stream;
         * they share the activation loads), the terms of up to Q35_SEGMENT groups are
         * computed; then the 16 columns' in-order float32 sums over those groups run side
         * by side. */
        enum { Q35_SEGMENT = 1024 };
        const int64_t n0 = tile * 16, cols = t->n - n0 < 16 ? t->n - n0 : 16;
        float terms[16][Q35_SEGMENT], out[16];
        int64_t row, seg, gb, c, g;
        for (c = cols; c < 16; c++) /* columns past N add zeros */
            for (g = 0; g < Q35_SEGMENT; g++)
                terms[c][g] = 0.0f;
        for (row = 0; row < rows; row++) {
            const int8_t *qe = qd + row * kp, *qo = qe + kp / 2;
            __m512 yv = _mm512_setzero_ps();
            for (seg = 0; seg < G; seg += Q35_SEGMENT) {
                const int64_t gend = G - seg < Q35_SEGMENT ? G : seg + Q35_SEGMENT;
                for (c = 0; c < cols; c += Q35_GEMV_COLS) {
                    /* past the last column, the last column again (computed, stored once) */
                    int64_t n[Q35_GEMV_COLS];
                    q35_column_meta meta[Q35_GEMV_COLS];
                    int j;
                    Q35_UNROLL
                    for (j = 0; j < Q35_GEMV_COLS; j++) {
                        n[j] = n0 + (c + j < cols ? c + j : cols - 1);
                        meta[j] = q35_column_meta_make(t, n[j]);
                    }
                    for (gb = seg / 16; gb < gend / 16; gb++) {
                        const uint8_t *p[Q35_GEMV_COLS];
                        const int64_t left = t->payload_row - gb * 224;
                        const int64_t chunks = q35_block_chunks(t, gb);
                        const __m512 sx = _mm512_loadu_ps(sxf + row * G + gb * 16);
                        /* 128 sum(q) per group: acc = sum(q * (level + 128)) - 128 sum(q) */
                        const __m512i bias = _mm512_slli_epi32(_mm512_cvtps_epi32(sx), 7);
                        __m512i acc[Q35_GEMV_COLS][4];
                        int ch;
                        Q35_UNROLL
                        for (j = 0; j < Q35_GEMV_COLS; j++)
                            p[j] = q35_block_codes(t, n[j], gb);
                        Q35_UNROLL
                        for (ch = 0; ch < 4; ch++) {
                            __m512i ve, vo;
                            if (ch >= chunks) { /* only padding groups: zero activations */
                                Q35_UNROLL
                                for (j = 0; j < Q35_GEMV_COLS; j++)
                                    acc[j][ch] = _mm512_setzero_si512();
                                continue;
                            }
                            ve = _mm512_loadu_si512((const void *)(qe + gb * 256 + 64 * ch));
                            vo = _mm512_loadu_si512((const void *)(qo + gb * 256 + 64 * ch));
                            Q35_UNROLL
                            for (j = 0; j < Q35_GEMV_COLS; j++) {
                                const __m512i codes =
                                    q35_codes_chunk(&dc, p[j], left, ch);
                                const __m512i le =
                                    _mm512_permutex2var_epi8(dc.even_lo, codes, dc.even_hi);
                                const __m512i lo =
                                    _mm512_permutex2var_epi8(dc.odd_lo, codes, dc.odd_hi);
                                acc[j][ch] = _mm512_dpbusd_epi32(
                                    _mm512_dpbusd_epi32(_mm512_setzero_si512(), le, ve), lo, vo);
                            }
                        }
                        Q35_UNROLL
                        for (j = 0; j < Q35_GEMV_COLS; j++) {
                            __m512 scale, offset, term;
                            q35_group_meta16_ordered(t->meta + n[j] * t->meta_row + gb * 14, &dc,
                                                     &meta[j], &scale, &offset);
                            term = _mm512_cvtepi32_ps(_mm512_sub_epi32(
                                q35_group_sums16(acc[j][0], acc[j][1], acc[j][2], acc[j][3]),
                                bias));
                            /* s * acc + o * sx */
                            term = _mm512_add_ps(_mm512_mul_ps(scale, term),
                                                 _mm512_mul_ps(offset, sx));
                            _mm512_storeu_ps(&terms[n[j] - n0][gb * 16 - seg], term);
                        }
                    }
                }
                for (g = 0; g < gend - seg; g += 16) {
                    __m512 r[16];
                    for (c = 0; c < 16; c++)
                        r[c] = _mm512_loadu_ps(&terms[c][g]);
                    q35_transpose16(r); /* r[j]: group g + q35_group_order(j) of 16 columns */
                    for (c = 0; c < 16; c++) /* groups in order: r[order(c)] is group c */
                        yv = _mm512_add_ps(yv, r[q35_group_order(c)]);
                }
            }
            _mm512_storeu_ps(out, _mm512_mul_ps(yv, _mm512_set1_ps(row_scale[row])));
            for (c = 0; c < cols; c++)
                y[row * t->n + n0 + c] = out[c];
        }
    }
}

/* ---- int8 GEMV of 2 to 8 rows, groups in lanes ----------------------------------------
 *
 * The decoded codes of a column's 16-group block (four vectors of 64 codes, 128-bit lane i
 * of vector m holding group 4m + i) are transposed by dwords (eight in-lane unpacks: dword
 * j of every 128-bit lane of the four vectors into vector j), so that dword lane L of
 * vector j holds codes 4j .. 4j + 3 of group q35_group_order(L). The activations are laid
 * out the same way once per call (q35_i8_lanes_prepare), so the 8 vpdpbusd of a row and a
 * 16-group block add up in one accumulator whose lane L is the exact int32 dot product of
 * group q35_group_order(L): no horizontal sums at all, and the levels (8 registers),
 * decoded once, serve every row. Then the float32 terms
 * `s * acc + o * sx` of up to Q35_LANES_SEGMENT groups per row and column wait in a buffer
 * and are summed in group order, 16 columns side by side (as q35_i8_avx512_columns does):
 * bit-exact with the interpreter for every row count. One row keeps q35_i8_avx512_columns
 * (two columns share the activation loads; the 8 unpacks cost more than the group sums they
 * save when nothing else shares the decode); 9 rows and more go to the GEMM below (rows
 * in lanes, 16 a block), which was about as fast at 10 rows and faster at 12
 * (docs/benchmarks.md, "Small M"). */
/* The float GEMM from 8 rows; the int8 GEMM from Q35_LANES_ROWS_MAX + 1 rows. */
enum { Q35_GEMM_MIN_ROWS = 8, Q35_LANES_ROWS_MAX = 8, Q35_LANES_SEGMENT = 64 };

/* `work` (q35_qmatmul_work_bytes), per row: float(sum(q)) per group in q35_group_order
 * within each 16 groups, then per 16-group block 512 bytes: vector (h, j) (h = 0 even k,
 * 1 odd k; bytes 256 h + 64 j) with dword lane L holding q[32 g + 8 j + 2 i + h], i = 0..3,
 * g = the block's group q35_group_order(L); zero past K. */
static Q35_AVX512 void q35_i8_lanes_prepare(const q35_qjob *job)
{
    const q35_q3p5 *t = &job->t;
    const int64_t rows = job->rows, G = (t->groups + 15) / 16 * 16, kp = G * 32;
    float *sxf = (float *)(void *)job->work;
    int8_t *qa = (int8_t *)(job->work + rows * G * 4);
    int64_t r, g;
    int j, i, h;
    for (r = 0; r < rows; r++) {
        const int8_t *qr = job->q + r * t->k;
        for (g = 0; g < G; g++) {
            const int lane = q35_group_order((int)(g % 16));
            int8_t *dst = qa + r * kp + g / 16 * 512 + 4 * lane;
            int32_t sum = 0;
            if (32 * g + 32 <= t->k) {
                /* the group's 32 activations: even k to bytes 0-15, odd k to 16-31 */
                const __m256i v = _mm256_loadu_si256((const __m256i *)(const void *)(qr + 32 * g));
                const __m256i split = _mm256_shuffle_epi8(
                    v, _mm256_setr_epi8(0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15, 0,
                                        2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15));
                int32_t words[8];
                _mm256_storeu_si256((__m256i *)(void *)words,
                                    _mm256_permute4x64_epi64(split, 0xd8));
                for (j = 0; j < 4; j++) {
                    memcpy(dst + 64 * j, &words[j], 4);
                    memcpy(dst + 256 + 64 * j, &words[4 + j], 4);
                }
                for (i = 0; i < 32; i++)
                    sum += qr[32 * g + i];
            } else {
                for (h = 0; h < 2; h++)
                    for (j = 0; j < 4; j++)
                        for (i = 0; i < 4; i++) {
                            const int64_t k = 32 * g + 8 * j + 2 * i + h;
                            const int8_t v = k < t->k ? qr[k] : 0;
                            dst[256 * h + 64 * j + i] = v;
                            sum += v;
                        }
            }
            sxf[r * G + g / 16 * 16 + lane] = (float)sum;
        }
    }
}

/* Columns [n_begin, n_end) (n_begin a multiple of 16) of the job prepared above. */
static Q35_AVX512 void q35_i8_lanes_columns(const q35_qjob *job, int64_t n_begin, int64_t n_end)
{
    const q35_q3p5 *t = &job->t;
    const int64_t rows = job->rows, G = (t->groups + 15) / 16 * 16, kp = G * 32;
    const float *sxf = (const float *)(const void *)job->work;
    const int8_t *qa = (const int8_t *)(job->work + rows * G * 4);
    const q35_decoder d = q35_decoder_make(1);
    float terms[Q35_LANES_ROWS_MAX][16][Q35_LANES_SEGMENT], out[16];
    int64_t tile;
    for (tile = n_begin / 16; tile * 16 < n_end; tile++) {
        const q35_decoder dc = d; /* a private copy the compiler keeps in registers */
        const int64_t n0 = tile * 16, cols = t->n - n0 < 16 ? t->n - n0 : 16;
        __m512 yv[Q35_LANES_ROWS_MAX];
        int64_t row, seg, gb, c, g;
        for (row = 0; row < rows; row++) {
            yv[row] = _mm512_setzero_ps();
            for (c = cols; c < 16; c++) /* columns past N add zeros */
                for (g = 0; g < Q35_LANES_SEGMENT; g++)
                    terms[row][c][g] = 0.0f;
        }
        for (seg = 0; seg < G; seg += Q35_LANES_SEGMENT) {
            const int64_t gend = G - seg < Q35_LANES_SEGMENT ? G : seg + Q35_LANES_SEGMENT;
            for (c = 0; c < cols; c++) {
                const int64_t n = n0 + c;
                const q35_column_meta meta = q35_column_meta_make(t, n);
                for (gb = seg / 16; gb < gend / 16; gb++) {
                    const uint8_t *p = t->payload + n * t->payload_row + gb * 224;
                    const int64_t left = t->payload_row - gb * 224;
                    const int64_t chunks = q35_block_chunks(t, gb);
                    __m512i code[4], v0, v1, v2, v3, w0, w1, w2, w3;
                    __m512i e0, e1, e2, e3, o0, o1, o2, o3;
                    __m512 scale, offset;
                    int ch;
                    _mm_prefetch((const char *)(p + 1792), _MM_HINT_T0);
                    _mm_prefetch((const char *)(p + 1856), _MM_HINT_T0);
                    _mm_prefetch((const char *)(p + 1920), _MM_HINT_T0);
                    _mm_prefetch((const char *)(p + 1984), _MM_HINT_T0);
                    Q35_UNROLL
                    for (ch = 0; ch < 4; ch++) {
                        code[ch] = ch >= chunks ? _mm512_setzero_si512()
                                                : q35_codes_chunk(&dc, p, left, ch);
                    }
                    /* dword j of every 128-bit lane to vector j */
                    v0 = _mm512_unpacklo_epi32(code[0], code[1]);
                    v1 = _mm512_unpackhi_epi32(code[0], code[1]);
                    v2 = _mm512_unpacklo_epi32(code[2], code[3]);
                    v3 = _mm512_unpackhi_epi32(code[2], code[3]);
                    w0 = _mm512_unpacklo_epi64(v0, v2);
                    w1 = _mm512_unpackhi_epi64(v0, v2);
                    w2 = _mm512_unpacklo_epi64(v1, v3);
                    w3 = _mm512_unpackhi_epi64(v1, v3);
                    e0 = _mm512_permutex2var_epi8(dc.even_lo, w0, dc.even_hi);
                    e1 = _mm512_permutex2var_epi8(dc.even_lo, w1, dc.even_hi);
                    e2 = _mm512_permutex2var_epi8(dc.even_lo, w2, dc.even_hi);
                    e3 = _mm512_permutex2var_epi8(dc.even_lo, w3, dc.even_hi);
                    o0 = _mm512_permutex2var_epi8(dc.odd_lo, w0, dc.odd_hi);
                    o1 = _mm512_permutex2var_epi8(dc.odd_lo, w1, dc.odd_hi);
                    o2 = _mm512_permutex2var_epi8(dc.odd_lo, w2, dc.odd_hi);
                    o3 = _mm512_permutex2var_epi8(dc.odd_lo, w3, dc.odd_hi);
                    q35_group_meta16_ordered(t->meta + n * t->meta_row + gb * 14, &dc, &meta,
                                             &scale, &offset);
                    for (row = 0; row < rows; row++) {
                        const __m512i *a =
                            (const __m512i *)(const void *)(qa + row * kp + gb * 512);
                        const __m512 sx = _mm512_loadu_ps(sxf + row * G + gb * 16);
                        /* sum(q * (level + 128)), group by group: at most 32 * 127 * 255 in
                         * magnitude, so exact in float32, as is 128 sum(q) and their
                         * difference, the exact int32 dot product (|.| < 2^20) */
                        __m512i acc = _mm512_dpbusd_epi32(_mm512_setzero_si512(), e0,
                                                          _mm512_loadu_si512(a + 0));
                        __m512 term;
                        acc = _mm512_dpbusd_epi32(acc, o0, _mm512_loadu_si512(a + 4));
                        acc = _mm512_dpbusd_epi32(acc, e1, _mm512_loadu_si512(a + 1));
                        acc = _mm512_dpbusd_epi32(acc, o1, _mm512_loadu_si512(a + 5));
                        acc = _mm512_dpbusd_epi32(acc, e2, _mm512_loadu_si512(a + 2));
                        acc = _mm512_dpbusd_epi32(acc, o2, _mm512_loadu_si512(a + 6));
                        acc = _mm512_dpbusd_epi32(acc, e3, _mm512_loadu_si512(a + 3));
                        acc = _mm512_dpbusd_epi32(acc, o3, _mm512_loadu_si512(a + 7));
                        term = _mm512_sub_ps(_mm512_cvtepi32_ps(acc),
                                             _mm512_mul_ps(sx, _mm512_set1_ps(128.0f)));
                        /* s * acc + o * sx */
                        term = _mm512_add_ps(_mm512_mul_ps(scale, term), _mm512_mul_ps(offset, sx));
                        _mm512_storeu_ps(&terms[row][c][gb * 16 - seg], term);
                    }
                }
            }
            for (row = 0; row < rows; row++) {
                __m512 yr = yv[row];
                for (g = 0; g < gend - seg; g += 16) {
                    __m512 r[16];
                    for (c = 0; c < 16; c++)
                        r[c] = _mm512_loadu_ps(&terms[row][c][g]);
                    q35_transpose16(r); /* r[j]: group g + q35_group_order(j) of 16 columns */
                    for (c = 0; c < 16; c++) /* groups in order: r[order(c)] is group c */
                        yr = _mm512_add_ps(yr, r[q35_group_order(c)]);
                }
                yv[row] = yr;
            }
        }
        for (row = 0; row < rows; row++) {
            _mm512_storeu_ps(out, _mm512_mul_ps(yv[row], _mm512_set1_ps(job->row_scale[row])));
            for (c = 0; c < cols; c++)
                job->y[row * t->n + n0 + c] = out[c];
        }
    }
}

/* ---- int8 GEMM (rows > Q35_LANES_ROWS_MAX: prefill, batches) ----------------------------
 *
 * Rows go in vector lanes, 16 per block, so that a group's exact int32 dot product for 16
 * rows builds up in one accumulator with no horizontal sums: per group, 8 vpdpbusd of the
 * block's activations (16 rows x 4 k per vector, stored as q + 128, unsigned) with 4 of
 * the column's levels broadcast from memory (signed), then acc - 128 * sum(levels). The
 * levels of a tile of 16 columns are decoded once per block of Q35_GEMM_KBLOCK groups into
 * an L1/L2 buffer and reused by every row block; the 16 columns' float32 sums over groups
 * stay in registers (rows in lanes), in group order as the interpreter adds them. Between
 * K blocks the unscaled sums wait in y; the last block multiplies by the row scale. */
enum { Q35_GEMM_KBLOCK = 64 };
/* Bytes per column of the level buffer: 64 more than the K block, so that the 16 columns'
 * levels of one k do not fall in one L1 set (4 KiB apart they would, and thrash it). */
enum { Q35_GEMM_STRIDE = Q35_GEMM_KBLOCK * 32 + 64 };

/* The 4 bytes at p in every dword (a broadcast load). */
static inline Q35_AVX512 __m512i q35_broadcast4(const int8_t *p)
{
    int32_t v;
    memcpy(&v, p, sizeof v);
    return _mm512_set1_epi32(v);
}

/* Packed activations: for row block b and group g, 8 vectors of 16 rows x 4 bytes q + 128:
 * vector j < 4 holds k = 32 g + 8 j + {0, 2, 4, 6}, vector j >= 4 k = 32 g + 8 (j - 4) +
 * {1, 3, 5, 7} (the order of the decoded even-k and odd-k levels); rows past `rows` and
 * k past K are q = 0. Then float(sum(q)) per block, group and row. */
static void q35_i8_gemm_prepare(const q35_qjob *job)
{
    const q35_q3p5 *t = &job->t;
    const int64_t G = (t->groups + 15) / 16 * 16, blocks = (job->rows + 15) / 16;
    uint8_t *a = job->work;
    float *sxf = (float *)(void *)(job->work + blocks * 16 * G * 32);
    int64_t b, g, r, j, i;
    for (b = 0; b < blocks; b++)
        for (g = 0; g < G; g++)
            for (r = 0; r < 16; r++) {
                const int64_t row = b * 16 + r;
                const int8_t *qr = job->q + row * t->k;
                uint8_t *dst = a + (b * G + g) * 512 + r * 4;
                int32_t sum = 0;
                for (j = 0; j < 8; j++)
                    for (i = 0; i < 4; i++) {
                        const int64_t k = 32 * g + 8 * (j % 4) + 2 * i + j / 4;
                        const int v = row < job->rows && k < t->k ? qr[k] : 0;
                        dst[j * 64 + i] = (uint8_t)(v + 128);
                        sum += v;
                    }
                sxf[(b * G + g) * 16 + r] = (float)sum;
            }
}

/* The levels, 128 * (-sum of levels), scales and offsets of 16 columns' groups [g0, g0 +
 * count) (count a multiple of 16), for q35_i8_gemm_columns: levels[c] holds per 16 groups
 * 4 chunks of (even-k levels, odd-k levels) as the decoder leaves them; the per-group
 * tables are in q35_group_order within each 16 groups. Columns past N decode as zeros. */
static Q35_AVX512 void q35_i8_gemm_decode(const q35_q3p5 *t, const q35_decoder *d, int64_t n0,
                                          int64_t g0, int64_t count,
                                          int8_t levels[16][Q35_GEMM_STRIDE],
                                          int32_t bias[16][Q35_GEMM_KBLOCK],
                                          float scale[16][Q35_GEMM_KBLOCK],
                                          float offset[16][Q35_GEMM_KBLOCK])
{
    const __m512i ones = _mm512_set1_epi8(1);
    int64_t c, gb;
    for (c = 0; c < 16; c++) {
        const int64_t n = n0 + c;
        q35_column_meta meta;
        if (n >= t->n) {
            memset(levels[c], 0, (size_t)count * 32);
            memset(bias[c], 0, (size_t)count * sizeof(int32_t));
            memset(scale[c], 0, (size_t)count * sizeof(float));
            memset(offset[c], 0, (size_t)count * sizeof(float));
            continue;
        }
        meta = q35_column_meta_make(t, n);
        for (gb = 0; gb < count / 16; gb++) {
            const int64_t gg = g0 / 16 + gb; /* 16-group block of the column */
            const uint8_t *p = t->payload + n * t->payload_row + gg * 224;
            const int64_t left = t->payload_row - gg * 224, chunks = (t->groups - gg * 16 + 3) / 4;
            int8_t *lv = levels[c] + gb * 512;
            __m512i sums[4], sc;
            __m512 s, o;
            int ch;
            for (ch = 0; ch < 4; ch++) {
                __m512i codes, le, lo;
                if (ch >= chunks) {
                    _mm512_storeu_si512((void *)(lv + 128 * ch), _mm512_setzero_si512());
                    _mm512_storeu_si512((void *)(lv + 128 * ch + 64), _mm512_setzero_si512());
                    sums[ch] = _mm512_setzero_si512();
                    continue;
                }
                codes = q35_codes_chunk(d, p, left, ch);
                le = _mm512_permutex2var_epi8(d->even_lo, codes, d->even_hi);
                lo = _mm512_permutex2var_epi8(d->odd_lo, codes, d->odd_hi);
                _mm512_storeu_si512((void *)(lv + 128 * ch), le);
                _mm512_storeu_si512((void *)(lv + 128 * ch + 64), lo);
                sums[ch] = _mm512_dpbusd_epi32(
                    _mm512_dpbusd_epi32(_mm512_setzero_si512(), ones, le), ones, lo);
            }
            sc = q35_group_sums16(sums[0], sums[1], sums[2], sums[3]);
            _mm512_storeu_si512((void *)(bias[c] + gb * 16),
                                _mm512_mullo_epi32(sc, _mm512_set1_epi32(-128)));
            q35_group_meta16_ordered(t->meta + n * t->meta_row + gg * 14, d, &meta, &s, &o);
            _mm512_storeu_ps(scale[c] + gb * 16, s);
            _mm512_storeu_ps(offset[c] + gb * 16, o);
        }
    }
}

/* Columns [n_begin, n_end) (n_begin a multiple of 16) of the prepared GEMM job. */
static Q35_AVX512 void q35_i8_gemm_columns(const q35_qjob *job, int64_t n_begin, int64_t n_end)
{
    const q35_q3p5 *t = &job->t;
    const int64_t G = (t->groups + 15) / 16 * 16, blocks = (job->rows + 15) / 16;
    const uint8_t *a = job->work;
    const float *sxf = (const float *)(const void *)(job->work + blocks * 16 * G * 32);
    const q35_decoder d = q35_decoder_make(0);
    int8_t levels[16][Q35_GEMM_STRIDE]; /* 32 KiB: L1 */
    int32_t bias[16][Q35_GEMM_KBLOCK];
    float scale[16][Q35_GEMM_KBLOCK], offset[16][Q35_GEMM_KBLOCK];
    int64_t n0, g0, b, g, c;
    for (n0 = n_begin; n0 < n_end; n0 += 16) {
        const int64_t cols = t->n - n0 < 16 ? t->n - n0 : 16;
        const __mmask16 colmask = (__mmask16)((1u << cols) - 1);
        for (g0 = 0; g0 < G; g0 += Q35_GEMM_KBLOCK) {
            const int64_t count = G - g0 < Q35_GEMM_KBLOCK ? G - g0 : Q35_GEMM_KBLOCK;
            const int last = g0 + count == G;
            q35_i8_gemm_decode(t, &d, n0, g0, count, levels, bias, scale, offset);
            for (b = 0; b < blocks; b++) {
                const int64_t rows = job->rows - b * 16 < 16 ? job->rows - b * 16 : 16;
                __m512 acc[16];
                if (g0 == 0) {
                    for (c = 0; c < 16; c++)
                        acc[c] = _mm512_setzero_ps();
                } else { /* the sums so far, kept in y: rows to lanes */
                    for (c = 0; c < 16; c++)
                        acc[c] = c < rows ? _mm512_maskz_loadu_ps(
                                                colmask, job->y + (b * 16 + c) * t->n + n0)
                                          : _mm512_setzero_ps();
                    q35_transpose16(acc);
                }
                for (g = 0; g < count; g++) {
                    const __m512i *av = (const __m512i *)(const void *)(a + (b * G + g0 + g) * 512);
                    const __m512i a0 = _mm512_loadu_si512((const void *)(av + 0)),
                                  a1 = _mm512_loadu_si512((const void *)(av + 1)),
                                  a2 = _mm512_loadu_si512((const void *)(av + 2)),
                                  a3 = _mm512_loadu_si512((const void *)(av + 3)),
                                  a4 = _mm512_loadu_si512((const void *)(av + 4)),
                                  a5 = _mm512_loadu_si512((const void *)(av + 5)),
                                  a6 = _mm512_loadu_si512((const void *)(av + 6)),
                                  a7 = _mm512_loadu_si512((const void *)(av + 7));
                    const __m512 sx = _mm512_loadu_ps(sxf + (b * G + g0 + g) * 16);
                    const int64_t idx = g / 16 * 16 + q35_group_order(g % 16);
                    const int64_t at = g / 16 * 512 + (g % 16) / 4 * 128 + (g % 4) * 16;
                    for (c = 0; c < 16; c++) {
                        const int8_t *lv = levels[c] + at;
                        __m512i e = _mm512_dpbusd_epi32(_mm512_set1_epi32(bias[c][idx]), a0,
                                                        q35_broadcast4(lv));
                        __m512i f = _mm512_dpbusd_epi32(_mm512_setzero_si512(), a4,
                                                        q35_broadcast4(lv + 64));
                        e = _mm512_dpbusd_epi32(e, a1, q35_broadcast4(lv + 4));
                        f = _mm512_dpbusd_epi32(f, a5, q35_broadcast4(lv + 68));
                        e = _mm512_dpbusd_epi32(e, a2, q35_broadcast4(lv + 8));
                        f = _mm512_dpbusd_epi32(f, a6, q35_broadcast4(lv + 72));
                        e = _mm512_dpbusd_epi32(e, a3, q35_broadcast4(lv + 12));
                        f = _mm512_dpbusd_epi32(f, a7, q35_broadcast4(lv + 76));
                        /* term = scale * acc + offset * sum(q); sum += term (float32) */
                        acc[c] = _mm512_add_ps(
                            acc[c],
                            _mm512_add_ps(_mm512_mul_ps(_mm512_set1_ps(scale[c][idx]),
                                                        _mm512_cvtepi32_ps(_mm512_add_epi32(e, f))),
                                          _mm512_mul_ps(_mm512_set1_ps(offset[c][idx]), sx)));
                    }
                }
                if (last) {
                    const __m512 rs = _mm512_maskz_loadu_ps((__mmask16)((1u << rows) - 1),
                                                            job->row_scale + b * 16);
                    for (c = 0; c < 16; c++)
                        acc[c] = _mm512_mul_ps(acc[c], rs);
                }
                q35_transpose16(acc); /* acc[r]: the 16 columns of row r */
                for (c = 0; c < rows; c++)
                    _mm512_mask_storeu_ps(job->y + (b * 16 + c) * t->n + n0, colmask, acc[c]);
            }
        }
    }
}

static void q35_qmatmul_i8_avx512(const q35_qjob *job)
{
    const int64_t G = (job->t.groups + 15) / 16 * 16;
    if (job->rows > Q35_LANES_ROWS_MAX) {
        q35_i8_gemm_prepare(job);
        q35_parallel_columns(q35_i8_gemm_columns, job, 16, job->rows * job->t.n * G * 32);
        return;
    }
    if (job->rows > 1) { /* 2 to Q35_LANES_ROWS_MAX rows: the levels decoded once */
        q35_i8_lanes_prepare(job);
        q35_parallel_columns(q35_i8_lanes_columns, job, 16, job->rows * job->t.n * G * 32);
        return;
    }
    q35_i8_avx512_prepare(job);
    q35_parallel_columns(q35_i8_avx512_columns, job, 16, job->rows * job->t.n * G * 32);
}

/* Float path for group size 32 (groups padded to a multiple of 16 with zero activations).
 * `work`: q35_qmatmul_work_bytes.
 * Per group, sum(x * level) is formed in float from the integer levels, times the group's
 * scale, plus the group's offset times sum(x): the decoded weight `scale * level + offset`
 * distributed over the group, so each weight costs one convert and one FMA. Partial sums
 * of 4 groups are accumulated in double. The result differs from the interpreter's
 * float64 dot product by a few float32 roundings (tests allow 1e-5 of the output scale). */
static void q35_f32_avx512_prepare(const q35_qjob *job)
{
    const q35_q3p5 *t = &job->t;
    const float *x = job->x;
    const int64_t rows = job->rows, G = (t->groups + 15) / 16 * 16, kp = G * 32;
    float *xd = (float *)(void *)job->work, *xsum = xd + rows * kp;
    int64_t r, i;
    for (r = 0; r < rows; r++) {
        for (i = 0; i < kp / 2; i++) {
            xd[r * kp + i] = 2 * i < t->k ? x[r * t->k + 2 * i] : 0.0f;
            xd[r * kp + kp / 2 + i] = 2 * i + 1 < t->k ? x[r * t->k + 2 * i + 1] : 0.0f;
        }
        for (i = 0; i < G; i++) {
            double sum = 0.0;
            int64_t k;
            for (k = i * 32; k < i * 32 + 32 && k < t->k; k++)
                sum += x[r * t->k + k];
            xsum[r * G + i] = (float)sum;
        }
    }
}

/* Columns [n_begin, n_end) of the float job prepared above. */
static Q35_AVX512 void q35_f32_avx512_columns(const q35_qjob *job, int64_t n_begin,
                                              int64_t n_end)
{
    const q35_q3p5 *t = &job->t;
    const int64_t rows = job->rows, G = (t->groups + 15) / 16 * 16, kp = G * 32;
    const float *xd = (const float *)(const void *)job->work, *xsum = xd + rows * kp;
    float *y = job->y;
    const q35_decoder d = q35_decoder_make(0);
    int64_t c;
    /* Q35_GEMV_COLS columns side by side share the activation loads, as in the int8 GEMV;
     * past the last column, the last column again (computed, stored once). */
    for (c = n_begin; c < n_end; c += Q35_GEMV_COLS) {
        int64_t n[Q35_GEMV_COLS], row, gb;
        int j;
        for (j = 0; j < Q35_GEMV_COLS; j++)
            n[j] = c + j < n_end ? c + j : n_end - 1;
        for (row = 0; row < rows; row++) {
            const float *xe = xd + row * kp, *xo = xe + kp / 2;
            __m512d acc_lo[Q35_GEMV_COLS], acc_hi[Q35_GEMV_COLS];
            Q35_UNROLL
            for (j = 0; j < Q35_GEMV_COLS; j++)
                acc_lo[j] = acc_hi[j] = _mm512_setzero_pd();
            for (gb = 0; gb < G / 16; gb++) {
                const int64_t left = t->payload_row - gb * 224;
                const int64_t chunks = q35_block_chunks(t, gb);
                const __m512 xs = _mm512_loadu_ps(xsum + row * G + gb * 16);
                const uint8_t *p[Q35_GEMV_COLS];
                float sc[Q35_GEMV_COLS][16];
                __m512 offset[Q35_GEMV_COLS], part[Q35_GEMV_COLS][4];
                int ch;
                Q35_UNROLL
                for (j = 0; j < Q35_GEMV_COLS; j++) {
                    __m512 scale;
                    p[j] = q35_block_codes(t, n[j], gb);
                    q35_group_meta16(t, n[j], gb * 16, &d, &scale, &offset[j]);
                    _mm512_storeu_ps(sc[j], scale);
                }
                Q35_UNROLL
                for (ch = 0; ch < 4; ch++) {
                    const float *xe4 = xe + gb * 256 + 64 * ch, *xo4 = xo + gb * 256 + 64 * ch;
                    /* The levels go through memory: a sign-extending load of 16 bytes costs
                     * one shuffle-port uop, an extract plus an extend in registers two. */
                    __m512i levels[Q35_GEMV_COLS][2];
                    __m512 sum[Q35_GEMV_COLS];
                    int g;
                    if (ch >= chunks) { /* only padding groups: zero activations */
                        Q35_UNROLL
                        for (j = 0; j < Q35_GEMV_COLS; j++)
                            part[j][ch] = _mm512_setzero_ps();
                        continue;
                    }
                    Q35_UNROLL
                    for (j = 0; j < Q35_GEMV_COLS; j++) {
                        const __m512i codes =
                            q35_codes_chunk(&d, p[j], left, ch);
                        _mm512_storeu_si512((void *)levels[j],
                                            _mm512_permutex2var_epi8(d.even_lo, codes, d.even_hi));
                        _mm512_storeu_si512((void *)(levels[j] + 1),
                                            _mm512_permutex2var_epi8(d.odd_lo, codes, d.odd_hi));
                        sum[j] = _mm512_setzero_ps();
                    }
                    Q35_OPAQUE(levels); /* or the compiler turns the loads back into extracts */
#define Q35_LEVELS(p) _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(const void *)(p))))
                    Q35_UNROLL
                    for (g = 0; g < 4; g++) {
                        const __m512 ve = _mm512_loadu_ps(xe4 + 16 * g),
                                     vo = _mm512_loadu_ps(xo4 + 16 * g);
                        Q35_UNROLL
                        for (j = 0; j < Q35_GEMV_COLS; j++) {
                            const int8_t *le = (const int8_t *)(const void *)levels[j],
                                         *lo = (const int8_t *)(const void *)(levels[j] + 1);
                            sum[j] = _mm512_fmadd_ps(
                                _mm512_set1_ps(sc[j][4 * ch + g]),
                                _mm512_fmadd_ps(ve, Q35_LEVELS(le + 16 * g),
                                                _mm512_mul_ps(vo, Q35_LEVELS(lo + 16 * g))),
                                sum[j]);
                        }
                    }
#undef Q35_LEVELS
                    Q35_UNROLL
                    for (j = 0; j < Q35_GEMV_COLS; j++)
                        part[j][ch] = sum[j];
                }
                /* the 4 chunks and the offsets' share in float, the blocks in double */
                Q35_UNROLL
                for (j = 0; j < Q35_GEMV_COLS; j++) {
                    const __m512 block = _mm512_add_ps(
                        _mm512_mul_ps(offset[j], xs),
                        _mm512_add_ps(_mm512_add_ps(part[j][0], part[j][1]),
                                      _mm512_add_ps(part[j][2], part[j][3])));
                    q35_add_pd16(&acc_lo[j], &acc_hi[j], block);
                }
            }
            for (j = 0; j < Q35_GEMV_COLS; j++)
                y[row * t->n + n[j]] =
                    (float)_mm512_reduce_add_pd(_mm512_add_pd(acc_lo[j], acc_hi[j]));
        }
    }
}

/* ---- Float path through int8 digits ----------------------------------------------------
 *
 * Each group's 32 activations are written in fixed point with 24-bit integers: x = u * X,
 * u = max|x| / (127 * 65536) per group and row, X = round(x / u) in [-127 * 65536, 127 *
 * 65536]; X in three balanced base-256 digits, X = 65536 a + 256 b + c (a in [-127, 127],
 * b and c in [-128, 127]). The integer dot products of the levels with the digits are then
 * exact (vpdpbusd, as on the int8 path, three times), sum(level * x) = u * (65536 A + 256 B
 * + C) with A and 256 B + C exact in int32 and converted to float32, and each weight costs
 * 1.5 vpdpbusd lanes where the float kernel above spends a convert, an extend and an FMA.
 * The only error is the rounding of x to a step of u / 2, about 2^-24 of the group's largest
 * activation (a float32 rounding of it), and the float32 roundings of the group terms,
 * which are summed in double as above. Rows with a non-finite activation take the float
 * kernel above (their infinities and NaNs propagate as the interpreter's do).
 *
 * `work` per row (q35_qmatmul_work_bytes; 3 kp + 16 G bytes of its 4 kp + 4 G): per group,
 * in q35_group_order within each 16 groups, u, sum(x) (float32), 128 sum(a) and 128 (256
 * sum(b) + sum(c)) (int32, the +128 bias of the levels); then the digits a, b, c, each
 * de-interleaved into even-k and odd-k halves as on the int8 path. */
enum { Q35_DIGIT_MAX = 127 * 65536 };

static int64_t q35_fd_row_bytes(int64_t G)
{
    return 3 * G * 32 + 16 * G;
}

/* The digits of a full group of 32 finite activations (x / u rounded to nearest in float32,
 * then clamped), de-interleaved: out[d] gets digit d of the even k, out[d] + kp / 2 that
 * of the odd k; sums[d] the sum of digit d. Returns u (0: the group adds +0). */
static Q35_AVX512 float q35_fd_group_avx512(const float *x, int8_t *out[3], int64_t half,
                                            int32_t sums[3], double *sum)
{
    const __m512 v0 = _mm512_loadu_ps(x), v1 = _mm512_loadu_ps(x + 16);
    const float maxabs = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(v0), _mm512_abs_ps(v1)));
    const float unit = maxabs / (float)Q35_DIGIT_MAX;
    int8_t idx[32];
    __m256i deinterleave;
    __m512i X[2];
    int i, dgt;
    *sum = _mm512_reduce_add_pd(_mm512_add_pd(
        _mm512_add_pd(_mm512_cvtps_pd(_mm512_castps512_ps256(v0)),
                      _mm512_cvtps_pd(_mm512_extractf32x8_ps(v0, 1))),
        _mm512_add_pd(_mm512_cvtps_pd(_mm512_castps512_ps256(v1)),
                      _mm512_cvtps_pd(_mm512_extractf32x8_ps(v1, 1)))));
    if (!(unit > 0.0f)) { /* all zero, or too small for a float32 step */
        for (dgt = 0; dgt < 3; dgt++) {
            memset(out[dgt], 0, 16);
            memset(out[dgt] + half, 0, 16);
            sums[dgt] = 0;
        }
        return 0.0f;
    }
    for (i = 0; i < 16; i++) {
        idx[i] = (int8_t)(2 * i);
        idx[16 + i] = (int8_t)(2 * i + 1);
    }
    deinterleave = _mm256_loadu_si256((const __m256i *)(const void *)idx);
    for (i = 0; i < 2; i++) {
        const __m512 q = _mm512_div_ps(i ? v1 : v0, _mm512_set1_ps(unit));
        X[i] = _mm512_cvtps_epi32(q); /* round to nearest even (MXCSR default) */
        X[i] = _mm512_max_epi32(_mm512_min_epi32(X[i], _mm512_set1_epi32(Q35_DIGIT_MAX)),
                                _mm512_set1_epi32(-Q35_DIGIT_MAX));
    }
    for (dgt = 2; dgt >= 0; dgt--) { /* c, then b, then a: X = 256 X' + digit */
        __m512i dv[2];
        __m256i bytes;
        for (i = 0; i < 2; i++) {
            const __m512i bias = _mm512_set1_epi32(128);
            dv[i] = dgt ? _mm512_sub_epi32(
                              _mm512_and_si512(_mm512_add_epi32(X[i], bias), _mm512_set1_epi32(255)),
                              bias)
                        : X[i];
            X[i] = _mm512_srai_epi32(_mm512_sub_epi32(X[i], dv[i]), 8);
        }
        sums[dgt] = _mm512_reduce_add_epi32(_mm512_add_epi32(dv[0], dv[1]));
        bytes = _mm256_permutexvar_epi8(
            deinterleave, _mm256_inserti128_si256(_mm256_castsi128_si256(_mm512_cvtepi32_epi8(dv[0])),
                                                  _mm512_cvtepi32_epi8(dv[1]), 1));
        _mm_storeu_si128((__m128i *)(void *)out[dgt], _mm256_castsi256_si128(bytes));
        _mm_storeu_si128((__m128i *)(void *)(out[dgt] + half), _mm256_extracti128_si256(bytes, 1));
    }
    return unit;
}

/* Writes the digits of the job's rows; returns 0 (nothing usable written) when an
 * activation is not finite. */
static int q35_fd_prepare(const q35_qjob *job)
{
    const q35_q3p5 *t = &job->t;
    const int64_t rows = job->rows, G = (t->groups + 15) / 16 * 16, kp = G * 32;
    int64_t r, g, k;
    for (r = 0; r < rows * t->k; r++)
        if (!isfinite(job->x[r]))
            return 0;
    for (r = 0; r < rows; r++) {
        const float *x = job->x + r * t->k;
        uint8_t *base = job->work + r * q35_fd_row_bytes(G);
        float *u = (float *)(void *)base, *xs = u + G;
        int32_t *bias_a = (int32_t *)(void *)(xs + G), *bias_bc = bias_a + G;
        int8_t *digits = (int8_t *)(void *)(bias_bc + G);
        for (g = 0; g < G; g++) {
            const int64_t k0 = g * 32, k1 = k0 + 32 < t->k ? k0 + 32 : t->k;
            const int64_t slot = g / 16 * 16 + q35_group_order(g % 16);
            double sum = 0.0, inv = 0.0;
            float maxabs = 0.0f, unit;
            int32_t sa = 0, sb = 0, sc = 0;
            if (k1 - k0 == 32) {
                int8_t *out[3];
                int32_t sums[3];
                out[0] = digits + k0 / 2;
                out[1] = out[0] + kp;
                out[2] = out[1] + kp;
                u[slot] = q35_fd_group_avx512(x + k0, out, kp / 2, sums, &sum);
                xs[slot] = (float)sum;
                bias_a[slot] = 128 * sums[0];
                bias_bc[slot] = 128 * (256 * sums[1] + sums[2]);
                continue;
            }
            for (k = k0; k < k1; k++) {
                sum += x[k];
                maxabs = fabsf(x[k]) > maxabs ? fabsf(x[k]) : maxabs;
            }
            unit = maxabs / (float)Q35_DIGIT_MAX;
            if (unit > 0.0f)
                inv = 1.0 / (double)unit;
            else /* all zero, or too small for a float32 step: the group adds +0 */
                unit = 0.0f;
            for (k = k0; k < k0 + 32; k++) {
                int64_t X = 0, X1;
                int a, b, c;
                if (k < k1 && unit > 0.0f) {
                    X = (int64_t)llrint((double)x[k] * inv);
                    X = X > Q35_DIGIT_MAX ? Q35_DIGIT_MAX : X < -Q35_DIGIT_MAX ? -Q35_DIGIT_MAX : X;
                }
                c = (int)(((X + 128) & 255) - 128);
                X1 = (X - c) / 256;
                b = (int)(((X1 + 128) & 255) - 128);
                a = (int)((X1 - b) / 256);
                sa += a;
                sb += b;
                sc += c;
                /* digit d, parity k % 2, position k / 2 */
                digits[(k % 2) * (kp / 2) + k / 2] = (int8_t)a;
                digits[kp + (k % 2) * (kp / 2) + k / 2] = (int8_t)b;
                digits[2 * kp + (k % 2) * (kp / 2) + k / 2] = (int8_t)c;
            }
            u[slot] = unit;
            xs[slot] = (float)sum;
            bias_a[slot] = 128 * sa;
            bias_bc[slot] = 128 * (256 * sb + sc);
        }
    }
    return 1;
}

/* Columns [n_begin, n_end) of the job prepared by q35_fd_prepare. */
static Q35_AVX512 void q35_fd_avx512_columns(const q35_qjob *job, int64_t n_begin, int64_t n_end)
{
    const q35_q3p5 *t = &job->t;
    const int64_t rows = job->rows, G = (t->groups + 15) / 16 * 16, kp = G * 32;
    float *y = job->y;
    const q35_decoder d = q35_decoder_make(1);
    int64_t c;
    for (c = n_begin; c < n_end; c += Q35_GEMV_COLS) {
        const q35_decoder dc = d; /* a private copy the compiler keeps in registers */
        int64_t n[Q35_GEMV_COLS], row, gb;
        q35_column_meta meta[Q35_GEMV_COLS];
        int j, ch;
        Q35_UNROLL
        for (j = 0; j < Q35_GEMV_COLS; j++) {
            n[j] = c + j < n_end ? c + j : n_end - 1;
            meta[j] = q35_column_meta_make(t, n[j]);
        }
        for (row = 0; row < rows; row++) {
            const uint8_t *base = job->work + row * q35_fd_row_bytes(G);
            const float *u = (const float *)(const void *)base, *xs = u + G;
            const int32_t *bias_a = (const int32_t *)(const void *)(xs + G),
                          *bias_bc = bias_a + G;
            const int8_t *da = (const int8_t *)(const void *)(bias_bc + G), *db = da + kp,
                         *dd = db + kp;
            __m512d acc_lo[Q35_GEMV_COLS], acc_hi[Q35_GEMV_COLS];
            Q35_UNROLL
            for (j = 0; j < Q35_GEMV_COLS; j++) { /* sums of the 16-group blocks' terms */
                acc_lo[j] = _mm512_setzero_pd();
                acc_hi[j] = acc_lo[j];
            }
            for (gb = 0; gb < G / 16; gb++) {
                const int64_t chunks = q35_block_chunks(t, gb), left = t->payload_row - gb * 224;
                const uint8_t *p[Q35_GEMV_COLS];
                __m512i hi[Q35_GEMV_COLS][4], lo[Q35_GEMV_COLS][4];
                Q35_UNROLL
                for (j = 0; j < Q35_GEMV_COLS; j++)
                    p[j] = q35_block_codes(t, n[j], gb);
                Q35_UNROLL
                for (ch = 0; ch < 4; ch++) {
                    const int64_t at = gb * 256 + 64 * ch;
                    __m512i ae, ao, be, bo, ce, co;
                    if (ch >= chunks) { /* only padding groups: zero activations */
                        Q35_UNROLL
                        for (j = 0; j < Q35_GEMV_COLS; j++)
                            hi[j][ch] = lo[j][ch] = _mm512_setzero_si512();
                        continue;
                    }
                    ae = _mm512_loadu_si512((const void *)(da + at));
                    ao = _mm512_loadu_si512((const void *)(da + kp / 2 + at));
                    be = _mm512_loadu_si512((const void *)(db + at));
                    bo = _mm512_loadu_si512((const void *)(db + kp / 2 + at));
                    ce = _mm512_loadu_si512((const void *)(dd + at));
                    co = _mm512_loadu_si512((const void *)(dd + kp / 2 + at));
                    Q35_UNROLL
                    for (j = 0; j < Q35_GEMV_COLS; j++) {
                        const __m512i codes =
                            q35_codes_chunk(&dc, p[j], left, ch);
                        const __m512i le = _mm512_permutex2var_epi8(dc.even_lo, codes, dc.even_hi);
                        const __m512i lo_ = _mm512_permutex2var_epi8(dc.odd_lo, codes, dc.odd_hi);
                        __m512i bc = _mm512_dpbusd_epi32(
                            _mm512_dpbusd_epi32(_mm512_setzero_si512(), le, be), lo_, bo);
                        bc = _mm512_slli_epi32(bc, 8);
                        lo[j][ch] = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(bc, le, ce), lo_, co);
                        hi[j][ch] = _mm512_dpbusd_epi32(
                            _mm512_dpbusd_epi32(_mm512_setzero_si512(), le, ae), lo_, ao);
                    }
                }
                {
                    const __m512 uv = _mm512_loadu_ps(u + gb * 16),
                                 xsv = _mm512_loadu_ps(xs + gb * 16);
                    const __m512i ba = _mm512_loadu_si512((const void *)(bias_a + gb * 16)),
                                  bbc = _mm512_loadu_si512((const void *)(bias_bc + gb * 16));
                    Q35_UNROLL
                    for (j = 0; j < Q35_GEMV_COLS; j++) {
                        __m512 scale, offset, dot, term;
                        const __m512 fa = _mm512_cvtepi32_ps(_mm512_sub_epi32(
                            q35_group_sums16(hi[j][0], hi[j][1], hi[j][2], hi[j][3]), ba));
                        const __m512 fbc = _mm512_cvtepi32_ps(_mm512_sub_epi32(
                            q35_group_sums16(lo[j][0], lo[j][1], lo[j][2], lo[j][3]), bbc));
                        q35_group_meta16_ordered(t->meta + n[j] * t->meta_row + gb * 14, &dc,
                                                 &meta[j], &scale, &offset);
                        /* sum(level * x) = u (65536 A + (256 B + C)) */
                        dot = _mm512_mul_ps(
                            _mm512_add_ps(_mm512_mul_ps(fa, _mm512_set1_ps(65536.0f)), fbc), uv);
                        term = _mm512_add_ps(_mm512_mul_ps(scale, dot), _mm512_mul_ps(offset, xsv));
                        q35_add_pd16(&acc_lo[j], &acc_hi[j], term);
                    }
                }
            }
            for (j = 0; j < Q35_GEMV_COLS; j++)
                y[row * t->n + n[j]] =
                    (float)_mm512_reduce_add_pd(_mm512_add_pd(acc_lo[j], acc_hi[j]));
        }
    }
}

static void q35_qmatmul_f32_avx512(const q35_qjob *job)
{
    const int64_t G = (job->t.groups + 15) / 16 * 16;
    if (q35_fd_prepare(job)) {
        q35_parallel_columns(q35_fd_avx512_columns, job, 16, job->rows * job->t.n * G * 32);
        return;
    }
    q35_f32_avx512_prepare(job);
    q35_parallel_columns(q35_f32_avx512_columns, job, 16, job->rows * job->t.n * G * 32);
}
/* The first k / 16 * 16 of q35_quantize_activations' int8 values of a row (the same
 * float32 division, round-half-even and clamp, 16 at a time); returns how many. */
static Q35_AVX512 int64_t q35_quantize_row_avx512(int8_t *q, const float *x, float s, int64_t k)
{
    const __m512 sv = _mm512_set1_ps(s), hi = _mm512_set1_ps(127.0f),
                 lo = _mm512_set1_ps(-127.0f);
    const int64_t kv = k / 16 * 16;
    int64_t i;
    for (i = 0; i < kv; i += 16) {
        __m512 v = _mm512_div_ps(_mm512_loadu_ps(x + i), sv);
        v = _mm512_roundscale_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        v = _mm512_max_ps(_mm512_min_ps(v, hi), lo);
        _mm_storeu_si128((__m128i *)(void *)(q + i), _mm512_cvtepi32_epi8(_mm512_cvtps_epi32(v)));
    }
    return kv;
}
#endif

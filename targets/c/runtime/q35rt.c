/* ---- q35c C runtime: the kernels every generated model.c contains ---------------------
 *
 * Plain C99 (plus optional OpenMP). Numerics follow q35c's reference interpreter
 * (targets/interp/interpreter.py): elementwise float ops round once in float32; matmuls
 * and the composite ops (softmax, norms, GELU, SiLU) accumulate in double and round once;
 * the int8 path is exact integer arithmetic followed by the float32 rescale in the
 * interpreter's order, so it matches bit for bit. Build with -ffp-contract=off: a fused
 * multiply-add would change the Q3P5 decode `scale * level + offset` and the rescale.
 *
 * Q3P5 weights are read in their stored form (docs/format.md): per column a row of
 * 7-bit pair codes, 8 codes in 7 bytes, and a row of 7-bit group codes. Codes are decoded
 * inside the dot product, group by group; no float weight matrix ever exists.
 */
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#if defined(__GNUC__)
#define Q35_FN static __attribute__((unused))
#else
#define Q35_FN static
#endif

/* Parallel loops only where the work (multiply-adds) pays for waking the threads. */
#define Q35_PRAGMA(x) _Pragma(#x)
#ifdef _OPENMP
/* The OpenMP API functions used here, declared rather than taken from <omp.h>, which
 * some compilers accept -fopenmp without shipping (clang without libomp headers). */
extern int omp_get_max_threads(void);
extern int omp_get_thread_num(void);
extern double omp_get_wtime(void);
#define Q35_PARALLEL_FOR(work) \
    Q35_PRAGMA(omp parallel for schedule(dynamic, 16) if ((work) >= (1 << 22)))

/* Straggler backoff for the quantized matmuls. An OpenMP parallel region ends only when
 * every thread of the team has arrived; on an oversubscribed machine a worker the OS has
 * not scheduled (it may have no work left to do) holds the caller for a scheduler tick,
 * several times the whole GEMV. After a call whose caller waited at the join longer than
 * 100 us plus half its own working time, the next Q35_BACKOFF_CALLS calls run on the
 * calling thread alone; then threads are tried again. Results do not depend on it (each
 * output is computed by one thread, the same way). */
enum { Q35_BACKOFF_CALLS = 128 };
static int q35_serial_calls;

Q35_FN int q35_go_parallel(int64_t work)
{
    int left;
    if (work < (1 << 22) || omp_get_max_threads() < 2)
        return 0;
#pragma omp atomic read
    left = q35_serial_calls;
    if (left > 0) {
#pragma omp atomic update
        q35_serial_calls--;
        return 0;
    }
    return 1;
}

Q35_FN void q35_note_join(double start, double caller_done, double end)
{
    if (end - caller_done > 1e-4 + 0.5 * (caller_done - start)) {
#pragma omp atomic write
        q35_serial_calls = Q35_BACKOFF_CALLS;
    }
}

/* Q35_PARALLEL_BEGIN(work) { Q35_FOR_DYNAMIC(chunk) for (...) ...; } Q35_PARALLEL_END */
#define Q35_PARALLEL_BEGIN(work)                                                           \
    {                                                                                      \
        const int q35_par = q35_go_parallel(work);                                         \
        const double q35_t0 = q35_par ? omp_get_wtime() : 0.0;                             \
        double q35_t1 = q35_t0;                                                            \
        Q35_PRAGMA(omp parallel if (q35_par))                                              \
        {
#define Q35_FOR_DYNAMIC(chunk) Q35_PRAGMA(omp for schedule(dynamic, chunk) nowait)
#define Q35_PARALLEL_END                                                                   \
            if (q35_par && omp_get_thread_num() == 0)                                      \
                q35_t1 = omp_get_wtime();                                                  \
        }                                                                                  \
        if (q35_par)                                                                       \
            q35_note_join(q35_t0, q35_t1, omp_get_wtime());                                \
    }
#else
#define Q35_PARALLEL_FOR(work)
#define Q35_PARALLEL_BEGIN(work) {
#define Q35_FOR_DYNAMIC(chunk)
#define Q35_PARALLEL_END }
#endif

/* CODEBOOK[code][0 or 1]: the integer levels of the even-k and odd-k weight of a pair. */
static const int8_t q35_codebook[128][2] = {
Q35_CODEBOOK_ROWS
};

/* SCALE_STEPS[e] = 2^(-e/5) rounded to float32, as bit patterns (exact). */
static const uint32_t q35_scale_step_bits[32] = {
Q35_SCALE_STEP_BITS
};

static const float q35_offset_grid[4] = {-1.5f, -0.5f, 0.5f, 1.5f};

/* The 8 bytes starting at p as a little-endian word (the caller checked the host is
 * little-endian). Reading 8 bytes for a 7-byte block is safe: every Q3P5 entry in the
 * blob ends with its 4-byte CRC. */
static uint64_t q35_load_word(const uint8_t *p)
{
    uint64_t w;
    memcpy(&w, p, sizeof w);
    return w;
}

static float q35_scale_step(unsigned e)
{
    float f;
    memcpy(&f, &q35_scale_step_bits[e], sizeof f);
    return f;
}

/* A view of one serialized Q3P5 tensor (format.md section 6) inside the weight blob. */
typedef struct {
    int64_t k, n, group;
    int64_t groups;        /* G = ceil(K / group) */
    int64_t payload_row;   /* bytes of pair codes per column */
    int64_t meta_row;      /* bytes of group codes per column */
    const float *super_scale, *offset_base, *offset_step;
    const uint8_t *meta, *payload;
} q35_q3p5;

Q35_FN q35_q3p5 q35_q3p5_view(const uint8_t *entry)
{
    q35_q3p5 t;
    uint16_t group;
    uint32_t k, n;
    memcpy(&group, entry + 6, 2);
    memcpy(&k, entry + 8, 4);
    memcpy(&n, entry + 12, 4);
    t.k = k;
    t.n = n;
    t.group = group;
    t.groups = (t.k + t.group - 1) / t.group;
    t.payload_row = t.groups * t.group / 16 * 7;
    t.meta_row = (t.groups + 7) / 8 * 7;
    t.super_scale = (const float *)(const void *)(entry + 16);
    t.offset_base = t.super_scale + t.n;
    t.offset_step = t.offset_base + t.n;
    t.meta = entry + 16 + 12 * t.n;
    t.payload = t.meta + t.n * t.meta_row;
    return t;
}

/* Scale and offset of group g of column n, exactly as format.md section 3 says. */
static void q35_group_meta(const q35_q3p5 *t, int64_t n, int64_t g, float *scale, float *offset)
{
    uint64_t word = q35_load_word(t->meta + n * t->meta_row + (g / 8) * 7);
    unsigned code = (unsigned)(word >> (7 * (g % 8))) & 127u;
    float step = t->offset_step[n] * q35_offset_grid[code >> 5];
    *scale = t->super_scale[n] * q35_scale_step(code & 31u);
    *offset = t->offset_base[n] + step;
}

/* The 2 * 8 levels (as floats) of the 8 pair codes in the 7-byte block at p. */
static void q35_block_levels(const uint8_t *p, float levels[16])
{
    uint64_t word = q35_load_word(p);
    int i;
    for (i = 0; i < 8; i++) {
        unsigned code = (unsigned)(word >> (7 * i)) & 127u;
        levels[2 * i] = (float)q35_codebook[code][0];
        levels[2 * i + 1] = (float)q35_codebook[code][1];
    }
}

/* Per row and group: the int32 sum of the group's int8 activations (the offset term). */
static void q35_group_sums(int32_t *sx, const int8_t *q, int64_t rows, int64_t k,
                           int64_t group, int64_t groups)
{
    int64_t r, g, i;
    for (r = 0; r < rows; r++)
        for (g = 0; g < groups; g++) {
            int64_t k0 = g * group, kend = k0 + group < k ? k0 + group : k;
            int32_t s = 0;
            for (i = k0; i < kend; i++)
                s += q[r * k + i];
            sx[r * groups + g] = s;
        }
}

/* ---- AVX-512 (VBMI + VNNI) GEMV kernels for group size 32 --------------------------------
 *
 * 56 bytes of pair codes (8 blocks of 7 bytes: 64 codes, 128 weights, 4 groups) decode in
 * four instructions: a masked load, a byte permute that puts block b in 64-bit lane b, a
 * multishift that moves code i of the lane to byte i (shift 7i), and a mask with 0x7f. Two
 * 128-entry byte-table lookups (vpermi2b) give the even-k and odd-k levels of all 64 codes.
 * Activations are de-interleaved once per call into even-k and odd-k rows, so the levels
 * multiply them directly: vpdpbusd on the int8 path, float products on the float path.
 */
#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512DQ__) && \
    defined(__AVX512VBMI__) && defined(__AVX512VNNI__)
#include <immintrin.h>
#define Q35_AVX512_GEMV 1
#if defined(__GNUC__)
#define Q35_OPAQUE(p) __asm__ volatile("" : : "r"(p) : "memory")
#else
#define Q35_OPAQUE(p) (void)(p)
#endif

typedef struct {
    __m512i block_index, shifts, low7, lane_shift;
    __m512i even_lo, even_hi, odd_lo, odd_hi; /* levels (+128 for the int8 path) */
    __m512i meta_index, meta_shifts;          /* group codes in q35_group_order, as dwords */
} q35_decoder;

/* The int8 kernel's order of the 16 groups of a 512-weight block in a vector: lane j holds
 * group q35_group_order(j) (a 4 x 4 transpose, its own inverse), the order in which
 * q35_group_sums16 leaves the four accumulators' group sums without cross-lane moves. */
#define q35_group_order(j) (4 * ((j) % 4) + (j) / 4)

static q35_decoder q35_decoder_make(int biased)
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
    d.even_lo = _mm512_loadu_si512((const void *)even);
    d.even_hi = _mm512_loadu_si512((const void *)(even + 64));
    d.odd_lo = _mm512_loadu_si512((const void *)odd);
    d.odd_hi = _mm512_loadu_si512((const void *)(odd + 64));
    return d;
}

/* The 7-bit codes packed in the `bytes` (<= 56) bytes at p, one per byte, with garbage
 * in bit 7 (which vpermi2b ignores). */
static inline __m512i q35_codes_raw(const q35_decoder *d, const uint8_t *p, int bytes)
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
 * the scarcest resource here. With VBMI2, block b goes to qword b by a concatenating
 * shift (qword b of p : qword b of p - 8, left by 8b bits) on the vector-ALU port
 * instead of a byte permute on the shuffle port. */
static inline __m512i q35_codes_full(const q35_decoder *d, const uint8_t *p)
{
    __m512i v = _mm512_loadu_si512((const void *)p);
#ifdef __AVX512VBMI2__
    v = _mm512_shldv_epi64(v, _mm512_loadu_si512((const void *)(p - 8)), d->lane_shift);
#else
    v = _mm512_permutexvar_epi8(d->block_index, v);
#endif
    return _mm512_multishift_epi64_epi8(d->shifts, v);
}

/* Per column: the 32 possible group scales super_scale * 2^(-e/5) (two vectors) and the
 * 4 possible group offsets offset_base + offset_step * {-1.5, -0.5, 0.5, 1.5} (repeated 4
 * times), each the float32 operation format.md section 3 defines, so that a group's scale
 * and offset are table lookups by its code. */
typedef struct {
    __m512 scale_lo, scale_hi, offset;
} q35_column_meta;

static inline q35_column_meta q35_column_meta_make(const q35_q3p5 *t, int64_t n)
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
static inline void q35_group_meta16_ordered(const uint8_t *codes, const q35_decoder *d,
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
static inline __m512i q35_group_sums16(__m512i a, __m512i b, __m512i c, __m512i d)
{
    const __mmask16 odd = 0xAAAA;
    __m512i ab = _mm512_mask_blend_epi32(odd, _mm512_add_epi32(a, _mm512_srli_epi64(a, 32)),
                                         _mm512_add_epi32(b, _mm512_slli_epi64(b, 32)));
    __m512i cd = _mm512_mask_blend_epi32(odd, _mm512_add_epi32(c, _mm512_srli_epi64(c, 32)),
                                         _mm512_add_epi32(d, _mm512_slli_epi64(d, 32)));
    return _mm512_add_epi32(_mm512_unpacklo_epi64(ab, cd), _mm512_unpackhi_epi64(ab, cd));
}

/* Scale and offset (float32, format.md section 3) of 16 groups, from their codes. */
static void q35_group_meta16(const q35_q3p5 *t, int64_t n, int64_t g0, const q35_decoder *d,
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

/* Transpose 16 x 16 floats held as 16 rows: four stages that swap off-diagonal blocks of
 * 8, 4, 2 and 1 lanes between rows i and i + b. */
static const int32_t q35_swap_index[4][2][16] = {
    {{0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23},
     {8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31}},
    {{0, 1, 2, 3, 16, 17, 18, 19, 8, 9, 10, 11, 24, 25, 26, 27},
     {4, 5, 6, 7, 20, 21, 22, 23, 12, 13, 14, 15, 28, 29, 30, 31}},
    {{0, 1, 16, 17, 4, 5, 20, 21, 8, 9, 24, 25, 12, 13, 28, 29},
     {2, 3, 18, 19, 6, 7, 22, 23, 10, 11, 26, 27, 14, 15, 30, 31}},
    {{0, 16, 2, 18, 4, 20, 6, 22, 8, 24, 10, 26, 12, 28, 14, 30},
     {1, 17, 3, 19, 5, 21, 7, 23, 9, 25, 11, 27, 13, 29, 15, 31}},
};

static void q35_transpose16(__m512 r[16])
{
    int stage, i;
    for (stage = 0; stage < 4; stage++) {
        const int b = 8 >> stage;
        const __m512i ilo = _mm512_loadu_si512((const void *)q35_swap_index[stage][0]);
        const __m512i ihi = _mm512_loadu_si512((const void *)q35_swap_index[stage][1]);
        for (i = 0; i < 16; i++) {
            if ((i & b) == 0) {
                __m512 a = r[i], c = r[i + b];
                r[i] = _mm512_permutex2var_ps(a, ilo, c);
                r[i + b] = _mm512_permutex2var_ps(a, ihi, c);
            }
        }
    }
}

/* int8 path for group size 32. Groups are padded to a multiple of 16 with zero
 * activations (so padded terms are exactly +0). `work`: q35_qmatmul_work_bytes. */
static void q35_qmatmul_i8_avx512(float *y, const int8_t *q, const float *row_scale,
                                  int64_t rows, const q35_q3p5 *t, uint8_t *work)
{
    const int64_t G = (t->groups + 15) / 16 * 16, kp = G * 32, tiles = (t->n + 15) / 16;
    /* Per row: the accumulators' start values (per 4 groups, 16 lanes: -128 * sum(q) of
     * group i in lane 4 i, zeros elsewhere, which removes the +128 bias of the levels),
     * float(sum(q)) per group in q35_group_order within each 16 groups (the offset term),
     * and the de-interleaved activations (even-k then odd-k halves). */
    int32_t *bias = (int32_t *)(void *)work;
    float *sxf = (float *)(void *)(work + rows * G * 16);
    int8_t *qd = (int8_t *)(work + rows * G * 20);
    q35_decoder d;
    int64_t r, i, tile;
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
            bias[r * G * 4 + i * 4] = -128 * sum;
            bias[r * G * 4 + i * 4 + 1] = bias[r * G * 4 + i * 4 + 2] =
                bias[r * G * 4 + i * 4 + 3] = 0;
            sxf[r * G + i / 16 * 16 + q35_group_order(i % 16)] = (float)sum;
        }
    }
    d = q35_decoder_make(1);
    Q35_PARALLEL_BEGIN(rows * t->n * kp)
    Q35_FOR_DYNAMIC(1)
    for (tile = 0; tile < tiles; tile++) {
        const q35_decoder dc = d; /* a private copy the compiler keeps in registers */
        /* Column by column (each column's codes are one contiguous stream), the terms of
         * up to Q35_SEGMENT groups are computed; then the 16 columns' in-order float32
         * sums over those groups run side by side. */
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
                for (c = 0; c < cols; c++) {
                    const int64_t n = n0 + c;
                    const q35_column_meta meta = q35_column_meta_make(t, n);
                    for (gb = seg / 16; gb < gend / 16; gb++) {
                        const uint8_t *p = t->payload + n * t->payload_row + gb * 224;
                        const int64_t left = t->payload_row - gb * 224;
                        /* chunks of 4 groups holding real groups (the rest is padding) */
                        const int64_t chunks = (t->groups - gb * 16 + 3) / 4;
                        __m512i acc[4];
                        __m512 scale, offset, term;
                        int ch;
                        _mm_prefetch((const char *)(p + 3072), _MM_HINT_T0);
                        _mm_prefetch((const char *)(p + 3136), _MM_HINT_T0);
                        _mm_prefetch((const char *)(p + 3200), _MM_HINT_T0);
                        _mm_prefetch((const char *)(p + 3264), _MM_HINT_T0);
                        for (ch = 0; ch < 4; ch++) {
                            const int64_t bytes = left - 56 * ch;
                            __m512i codes;
                            if (ch >= chunks) { /* only padding groups: zero activations */
                                acc[ch] = _mm512_loadu_si512((const void *)(
                                    bias + row * G * 4 + gb * 64 + 16 * ch));
                                continue;
                            }
                            codes =
                                left >= 224 ? q35_codes_full(&dc, p + 56 * ch)
                                            : q35_codes_raw(&dc, p + 56 * ch,
                                                            bytes >= 56 ? 56
                                                            : bytes > 0 ? (int)bytes : 0);
                            __m512i le =
                                _mm512_permutex2var_epi8(dc.even_lo, codes, dc.even_hi);
                            __m512i lo = _mm512_permutex2var_epi8(dc.odd_lo, codes, dc.odd_hi);
                            __m512i a = _mm512_dpbusd_epi32(
                                _mm512_loadu_si512(
                                    (const void *)(bias + row * G * 4 + gb * 64 + 16 * ch)),
                                le, _mm512_loadu_si512((const void *)(qe + gb * 256 + 64 * ch)));
                            acc[ch] = _mm512_dpbusd_epi32(
                                a, lo,
                                _mm512_loadu_si512((const void *)(qo + gb * 256 + 64 * ch)));
                        }
                        q35_group_meta16_ordered(t->meta + n * t->meta_row + gb * 14, &dc,
                                                 &meta, &scale, &offset);
                        /* s * acc + o * sx, acc = sum(q * (level + 128)) - 128 sum(q) */
                        term = _mm512_cvtepi32_ps(
                            q35_group_sums16(acc[0], acc[1], acc[2], acc[3]));
                        term = _mm512_add_ps(
                            _mm512_mul_ps(scale, term),
                            _mm512_mul_ps(offset, _mm512_loadu_ps(sxf + row * G + gb * 16)));
                        _mm512_storeu_ps(&terms[c][gb * 16 - seg], term);
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
    Q35_PARALLEL_END
}

/* Float path for group size 32 (groups padded to a multiple of 16 with zero activations).
 * `work`: q35_qmatmul_work_bytes.
 * Per group, sum(x * level) is formed in float from the integer levels, times the group's
 * scale, plus the group's offset times sum(x): the decoded weight `scale * level + offset`
 * distributed over the group, so each weight costs one convert and one FMA. Partial sums
 * of 4 groups are accumulated in double. The result differs from the interpreter's
 * float64 dot product by a few float32 roundings (tests allow 1e-5 of the output scale). */
static void q35_qmatmul_f32_avx512(float *y, const float *x, int64_t rows, const q35_q3p5 *t,
                                   uint8_t *work)
{
    const int64_t G = (t->groups + 15) / 16 * 16, kp = G * 32;
    float *xd = (float *)(void *)work, *xsum = xd + rows * kp;
    q35_decoder d;
    int64_t r, i, n;
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
    d = q35_decoder_make(0);
    Q35_PARALLEL_BEGIN(rows * t->n * kp)
    Q35_FOR_DYNAMIC(16)
    for (n = 0; n < t->n; n++) {
        int64_t row, gb;
        for (row = 0; row < rows; row++) {
            const float *xe = xd + row * kp, *xo = xe + kp / 2;
            __m512d acc_lo = _mm512_setzero_pd(), acc_hi = _mm512_setzero_pd();
            for (gb = 0; gb < G / 16; gb++) {
                const uint8_t *p = t->payload + n * t->payload_row + gb * 224;
                const int64_t left = t->payload_row - gb * 224;
                float sc[16];
                __m512 scale, offset, off, part[4], block;
                int ch;
                _mm_prefetch((const char *)(p + 3072), _MM_HINT_T0);
                _mm_prefetch((const char *)(p + 3136), _MM_HINT_T0);
                _mm_prefetch((const char *)(p + 3200), _MM_HINT_T0);
                _mm_prefetch((const char *)(p + 3264), _MM_HINT_T0);
                q35_group_meta16(t, n, gb * 16, &d, &scale, &offset);
                _mm512_storeu_ps(sc, scale);
                for (ch = 0; ch < 4; ch++) {
                    const int64_t bytes = left - 56 * ch;
                    const __m512i codes =
                        left >= 224 ? q35_codes_full(&d, p + 56 * ch)
                                    : q35_codes_raw(&d, p + 56 * ch,
                                                    bytes >= 56 ? 56 : bytes > 0 ? (int)bytes : 0);
                    const float *xe4 = xe + gb * 256 + 64 * ch, *xo4 = xo + gb * 256 + 64 * ch;
                    const float *s4 = sc + 4 * ch;
                    /* The levels go through memory: a sign-extending load of 16 bytes costs
                     * one shuffle-port uop, an extract plus an extend in registers two. */
                    __m512i levels[2];
                    const int8_t *le = (const int8_t *)(const void *)levels,
                                 *lo = (const int8_t *)(const void *)(levels + 1);
                    __m512 sum = _mm512_setzero_ps();
                    _mm512_storeu_si512((void *)levels,
                                        _mm512_permutex2var_epi8(d.even_lo, codes, d.even_hi));
                    _mm512_storeu_si512((void *)(levels + 1),
                                        _mm512_permutex2var_epi8(d.odd_lo, codes, d.odd_hi));
                    Q35_OPAQUE(levels); /* or the compiler turns the loads back into extracts */
#define Q35_LEVELS(p) _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(const void *)(p))))
#define Q35_GROUP(g)                                                                           \
    sum = _mm512_fmadd_ps(                                                                     \
        _mm512_set1_ps(s4[g]),                                                                 \
        _mm512_fmadd_ps(_mm512_loadu_ps(xe4 + 16 * (g)), Q35_LEVELS(le + 16 * (g)),            \
                        _mm512_mul_ps(_mm512_loadu_ps(xo4 + 16 * (g)), Q35_LEVELS(lo + 16 * (g)))), \
        sum)
                    Q35_GROUP(0);
                    Q35_GROUP(1);
                    Q35_GROUP(2);
                    Q35_GROUP(3);
#undef Q35_GROUP
#undef Q35_LEVELS
                    part[ch] = sum;
                }
                /* the 4 chunks and the offsets' share in float, the blocks in double */
                off = _mm512_mul_ps(offset, _mm512_loadu_ps(xsum + row * G + gb * 16));
                block = _mm512_add_ps(off, _mm512_add_ps(_mm512_add_ps(part[0], part[1]),
                                                         _mm512_add_ps(part[2], part[3])));
                acc_lo = _mm512_add_pd(acc_lo, _mm512_cvtps_pd(_mm512_castps512_ps256(block)));
                acc_hi = _mm512_add_pd(acc_hi,
                                       _mm512_cvtps_pd(_mm512_extractf32x8_ps(block, 1)));
            }
            y[row * t->n + n] = (float)_mm512_reduce_add_pd(_mm512_add_pd(acc_lo, acc_hi));
        }
    }
    Q35_PARALLEL_END
}
#endif

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
#if !defined(Q35_AVX512_GEMV) && defined(__AVX2__)
#include <immintrin.h>
#define Q35_AVX2_GEMV 1

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

static void q35_avx2_tables_make(q35_avx2_tables *t)
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
static inline __m256i q35_avx2_codes(const uint8_t *p, int one_group)
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
    /* qwords: bytes 0-7, 7-14 of each group (block 0, block 1; byte 7 of each is garbage) */
    x = _mm256_blend_epi32(a, b, 0xCC);
    x = _mm256_or_si256(_mm256_and_si256(x, _mm256_set1_epi64x(0x000000000FFFFFFFLL)),
                        _mm256_and_si256(_mm256_slli_epi64(x, 4),
                                         _mm256_set1_epi64x(0x0FFFFFFF00000000LL)));
    x = _mm256_or_si256(_mm256_and_si256(x, _mm256_set1_epi64x(0x00003FFF00003FFFLL)),
                        _mm256_and_si256(_mm256_slli_epi64(x, 2),
                                         _mm256_set1_epi64x(0x3FFF00003FFF0000LL)));
    return _mm256_or_si256(_mm256_and_si256(x, _mm256_set1_epi64x(0x007F007F007F007FLL)),
                           _mm256_and_si256(_mm256_slli_epi64(x, 1),
                                            _mm256_set1_epi64x(0x7F007F007F007F00LL)));
}

/* int32 dot products of codes and activations (even-k at xe, odd-k at xo): lanes 0-3
 * sum to the first group, 4-7 to the second. */
static inline __m256i q35_avx2_dot(const q35_avx2_tables *t, __m256i le, __m256i lo,
                                   const int8_t *xe, const int8_t *xo)
{
    const __m256i ve = _mm256_loadu_si256((const __m256i *)(const void *)xe);
    const __m256i vo = _mm256_loadu_si256((const __m256i *)(const void *)xo);
    const __m256i pe = _mm256_maddubs_epi16(_mm256_abs_epi8(ve), _mm256_sign_epi8(le, ve));
    const __m256i po = _mm256_maddubs_epi16(_mm256_abs_epi8(vo), _mm256_sign_epi8(lo, vo));
    return _mm256_add_epi32(_mm256_madd_epi16(pe, t->ones), _mm256_madd_epi16(po, t->ones));
}

/* The even-k and odd-k levels of two code vectors a and b, each table load serving both. */
static inline void q35_avx2_levels2(const q35_avx2_tables *t, __m256i a, __m256i b,
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
    }
    *ae = e1;
    *ao = o1;
    *be = e2;
    *bo = o2;
}

/* Dot products of the group pairs at g0 and g0 + 2 (group index; groups past G give 0). */
static inline void q35_avx2_dot4(const q35_avx2_tables *t, const uint8_t *pay,
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

static inline q35_avx2_column q35_avx2_column_make(const q35_q3p5 *t, int64_t n)
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
static inline void q35_avx2_group_meta(const q35_avx2_column *col, const uint8_t *block,
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

static void q35_qmatmul_i8_avx2(float *y, const int8_t *q, const float *row_scale,
                                int64_t rows, const q35_q3p5 *t, uint8_t *work)
{
    const int64_t G = t->groups, G8 = (G + 7) / 8 * 8;
    float *sxf = (float *)(void *)work;
    int8_t *xd = (int8_t *)(work + rows * G8 * 4);
    q35_avx2_tables tables;
    int64_t r, i, n;
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
    q35_avx2_tables_make(&tables);
    /* columns claimed dynamically, with the straggler backoff of the AVX-512 kernels */
    Q35_PARALLEL_BEGIN(rows * t->n * t->k)
    Q35_FOR_DYNAMIC(16)
    for (n = 0; n < t->n; n++) {
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
    Q35_PARALLEL_END
}

/* Float path for group size 32 (AVX2, with FMA where available): the codes are decoded and
 * looked up as on the int8 path, the levels go through a stack buffer and come back with
 * sign-extending loads, and each group is `scale * sum(x * level)` in float, plus
 * `offset * sum(x)`; 8 groups are summed in float, the blocks of 8 in double. The result
 * differs from the interpreter's float64 dot product by a few float32 roundings, like the
 * AVX-512 kernel's (tests allow 1e-5 of the output scale). */
#if defined(__FMA__)
#define Q35_AVX2_FMADD(a, b, c) _mm256_fmadd_ps(a, b, c)
#else
#define Q35_AVX2_FMADD(a, b, c) _mm256_add_ps(_mm256_mul_ps(a, b), c)
#endif
#define Q35_AVX2_LEVELS(p) \
    _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(const void *)(p))))

static void q35_qmatmul_f32_avx2(float *y, const float *x, int64_t rows, const q35_q3p5 *t,
                                 uint8_t *work)
{
    /* per row: even-k and odd-k activations of G8 groups (16 each, zero past K), then the
     * float sum of each group's activations (double, rounded once) */
    const int64_t G = t->groups, G8 = (G + 7) / 8 * 8, stride = G8 * 33;
    float *xd = (float *)(void *)work;
    q35_avx2_tables tables;
    int64_t r, i, n;
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
    q35_avx2_tables_make(&tables);
    /* columns claimed dynamically, with the straggler backoff of the AVX-512 kernels */
    Q35_PARALLEL_BEGIN(rows * t->n * t->k)
    Q35_FOR_DYNAMIC(16)
    for (n = 0; n < t->n; n++) {
        q35_avx2_tables tb = tables;
        const uint8_t *pay = t->payload + n * t->payload_row;
        const uint8_t *meta = t->meta + n * t->meta_row;
        const q35_avx2_column col = q35_avx2_column_make(t, n);
        int64_t row, gb;
        Q35_AVX2_HIDE(tb.sixteen);
        for (row = 0; row < rows; row++) {
            const float *xe = xd + row * stride, *xo = xe + G8 * 16, *xs = xo + G8 * 16;
            __m256d acc_lo = _mm256_setzero_pd(), acc_hi = _mm256_setzero_pd();
            double lanes[4];
            for (gb = 0; gb < G8; gb += 8) {
                __m256i lev[8]; /* even, odd levels of groups (0, 1), (2, 3), ... */
                __m256 scale, offset, sum = _mm256_setzero_ps();
                float sc[8];
                int half, g;
                q35_avx2_group_meta(&col, meta + gb / 8 * 7, &scale, &offset);
                _mm256_storeu_ps(sc, scale);
                for (half = 0; half < 2; half++) {
                    const int64_t g0 = gb + 4 * half;
                    __m256i ca, cb;
                    if (g0 >= G) { /* only padding groups: zero activations */
                        lev[4 * half] = lev[4 * half + 1] = lev[4 * half + 2] =
                            lev[4 * half + 3] = _mm256_setzero_si256();
                        continue;
                    }
                    if (g0 + 4 <= G) {
                        ca = q35_avx2_codes(pay + g0 * 14, 0);
                        cb = q35_avx2_codes(pay + g0 * 14 + 28, 0);
                    } else {
                        ca = q35_avx2_codes(pay + g0 * 14, g0 + 1 >= G);
                        cb = g0 + 2 < G ? q35_avx2_codes(pay + g0 * 14 + 28, g0 + 3 >= G) : ca;
                    }
                    q35_avx2_levels2(&tb, ca, cb, &lev[4 * half], &lev[4 * half + 1],
                                     &lev[4 * half + 2], &lev[4 * half + 3]);
                }
                Q35_AVX2_HIDE_MEM(lev); /* loads stay loads, not extracts */
                for (g = 0; g < 8; g++) {
                    /* group g: even levels at byte 16 (g % 2) of lev[2 (g / 2)], odd of the next */
                    const int8_t *le = (const int8_t *)(const void *)&lev[2 * (g / 2)] + 16 * (g % 2);
                    const int8_t *lo = (const int8_t *)(const void *)&lev[2 * (g / 2) + 1] + 16 * (g % 2);
                    const float *xeg = xe + (gb + g) * 16, *xog = xo + (gb + g) * 16;
                    __m256 d = _mm256_mul_ps(_mm256_loadu_ps(xog + 8), Q35_AVX2_LEVELS(lo + 8));
                    d = Q35_AVX2_FMADD(_mm256_loadu_ps(xog), Q35_AVX2_LEVELS(lo), d);
                    d = Q35_AVX2_FMADD(_mm256_loadu_ps(xeg + 8), Q35_AVX2_LEVELS(le + 8), d);
                    d = Q35_AVX2_FMADD(_mm256_loadu_ps(xeg), Q35_AVX2_LEVELS(le), d);
                    sum = Q35_AVX2_FMADD(_mm256_broadcast_ss(sc + g), d, sum);
                }
                sum = _mm256_add_ps(sum, _mm256_mul_ps(offset, _mm256_loadu_ps(xs + gb)));
                acc_lo = _mm256_add_pd(acc_lo, _mm256_cvtps_pd(_mm256_castps256_ps128(sum)));
                acc_hi = _mm256_add_pd(acc_hi, _mm256_cvtps_pd(_mm256_extractf128_ps(sum, 1)));
            }
            _mm256_storeu_pd(lanes, _mm256_add_pd(acc_lo, acc_hi));
            y[row * t->n + n] = (float)((lanes[0] + lanes[1]) + (lanes[2] + lanes[3]));
        }
    }
    Q35_PARALLEL_END
}
#endif

/* The quantized GEMV kernels compiled into this build (group size 32): "avx512-vbmi",
 * "avx2" or "portable". */
Q35_FN const char *q35_kernel_variant(void)
{
#if defined(Q35_AVX512_GEMV)
    return "avx512-vbmi";
#elif defined(Q35_AVX2_GEMV)
    return "avx2";
#else
    return "portable";
#endif
}

/* Bytes of scratch the quantized matmuls need: group sums and de-interleaved activations
 * with the groups padded to a multiple of 16 (lower.py's work_bytes says the same). */
Q35_FN int64_t q35_qmatmul_work_bytes(int64_t rows, int64_t k, int64_t group, int int8)
{
    int64_t groups = ((k + group - 1) / group + 15) / 16 * 16, kp = groups * group;
    return int8 ? rows * (groups * 20 + kp) : rows * (kp + groups) * 4;
}

/* y[m, n] = sum_k x[m, k] * w[k, n], float activations; w decoded group by group into 32
 * (or group-size) registers' worth of floats, products summed in double. */
#define Q35_MAX_ROWS_PER_PASS 8
Q35_FN void q35_qmatmul_f32(float *y, const float *x, int64_t rows, const uint8_t *entry,
                            uint8_t *work)
{
    const q35_q3p5 t = q35_q3p5_view(entry);
    int64_t n;
#ifdef Q35_AVX512_GEMV
    if (t.group == 32 && t.groups >= 8) { /* below that, padding to 16 groups costs more */
        q35_qmatmul_f32_avx512(y, x, rows, &t, work);
        return;
    }
#endif
#ifdef Q35_AVX2_GEMV
    if (t.group == 32) {
        q35_qmatmul_f32_avx2(y, x, rows, &t, work);
        return;
    }
#endif
    (void)work;
    Q35_PARALLEL_FOR(rows * t.n * t.k)
    for (n = 0; n < t.n; n++) {
        int64_t r0;
        for (r0 = 0; r0 < rows; r0 += Q35_MAX_ROWS_PER_PASS) {
            int64_t rn = rows - r0 < Q35_MAX_ROWS_PER_PASS ? rows - r0 : Q35_MAX_ROWS_PER_PASS;
            double acc[Q35_MAX_ROWS_PER_PASS][8];
            int64_t g, r;
            int l;
            for (r = 0; r < rn; r++)
                for (l = 0; l < 8; l++)
                    acc[r][l] = 0.0;
            for (g = 0; g < t.groups; g++) {
                const uint8_t *p = t.payload + n * t.payload_row + g * (t.group / 16) * 7;
                int64_t k0 = g * t.group, kend = k0 + t.group < t.k ? k0 + t.group : t.k;
                int64_t b;
                float scale, offset;
                q35_group_meta(&t, n, g, &scale, &offset);
                for (b = 0; k0 + 16 * b < kend; b++) {
                    float w[16];
                    int64_t kb = k0 + 16 * b;
                    int i;
                    q35_block_levels(p + 7 * b, w);
                    for (i = 0; i < 16; i++)
                        w[i] = scale * w[i] + offset;
                    if (kend - kb >= 16) {
                        for (r = 0; r < rn; r++) {
                            const float *xr = x + (r0 + r) * t.k + kb;
                            for (l = 0; l < 8; l++)
                                acc[r][l] += (double)xr[l] * (double)w[l];
                            for (l = 0; l < 8; l++)
                                acc[r][l] += (double)xr[8 + l] * (double)w[8 + l];
                        }
                    } else {
                        for (r = 0; r < rn; r++) {
                            const float *xr = x + (r0 + r) * t.k + kb;
                            for (i = 0; i < kend - kb; i++)
                                acc[r][i % 8] += (double)xr[i] * (double)w[i];
                        }
                    }
                }
            }
            for (r = 0; r < rn; r++) {
                double s = ((acc[r][0] + acc[r][1]) + (acc[r][2] + acc[r][3])) +
                           ((acc[r][4] + acc[r][5]) + (acc[r][6] + acc[r][7]));
                y[(r0 + r) * t.n + n] = (float)s;
            }
        }
    }
}

/* Symmetric per-row int8 quantization: scale = max|x| / 127 (1 for a zero row),
 * q = clamp(rint(x / scale), -127, 127), all in float32 (round half to even). */
Q35_FN void q35_quantize_activations(int8_t *q, float *scale, const float *x, int64_t rows,
                                     int64_t k)
{
#ifdef Q35_AVX512_GEMV
    const int64_t kv = k / 16 * 16; /* done 16 at a time */
#else
    const int64_t kv = 0;
#endif
    int64_t r, i;
    for (r = 0; r < rows; r++) {
        const float *xr = x + r * k;
        float m = 0.0f, s;
        for (i = 0; i < k; i++) {
            float a = fabsf(xr[i]);
            if (a > m || a != a)
                m = a;
        }
        s = m / 127.0f;
        if (s == 0.0f)
            s = 1.0f;
        scale[r] = s;
#ifdef Q35_AVX512_GEMV
        { /* the same float32 division, round-half-even and clamp, 16 at a time */
            const __m512 sv = _mm512_set1_ps(s), hi = _mm512_set1_ps(127.0f),
                         lo = _mm512_set1_ps(-127.0f);
            for (i = 0; i < kv; i += 16) {
                __m512 v = _mm512_div_ps(_mm512_loadu_ps(xr + i), sv);
                v = _mm512_roundscale_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
                v = _mm512_max_ps(_mm512_min_ps(v, hi), lo);
                _mm_storeu_si128((__m128i *)(void *)(q + r * k + i),
                                 _mm512_cvtepi32_epi8(_mm512_cvtps_epi32(v)));
            }
        }
#endif
        for (i = kv; i < k; i++) {
            float v = rintf(xr[i] / s);
            v = v > 127.0f ? 127.0f : v < -127.0f ? -127.0f : v;
            q[r * k + i] = (int8_t)v;
        }
    }
}

/* y[m, n] = scale[m] * sum_g (s[g, n] * acc[m, g, n] + o[g, n] * sx[m, g]): int8
 * activations times integer levels, int32 accumulation per group, then the float32
 * rescale in the interpreter's order. `work` is q35_qmatmul_work_bytes of scratch. */
Q35_FN void q35_qmatmul_i8(float *y, const int8_t *q, const float *row_scale, int64_t rows,
                           const uint8_t *entry, uint8_t *work)
{
    const q35_q3p5 t = q35_q3p5_view(entry);
    int32_t *sx = (int32_t *)(void *)work;
    int64_t n;
#ifdef Q35_AVX512_GEMV
    if (t.group == 32) {
        q35_qmatmul_i8_avx512(y, q, row_scale, rows, &t, work);
        return;
    }
#endif
#ifdef Q35_AVX2_GEMV
    if (t.group == 32) {
        q35_qmatmul_i8_avx2(y, q, row_scale, rows, &t, work);
        return;
    }
#endif
    q35_group_sums(sx, q, rows, t.k, t.group, t.groups);
    Q35_PARALLEL_FOR(rows * t.n * t.k)
    for (n = 0; n < t.n; n++) {
        int64_t r0;
        for (r0 = 0; r0 < rows; r0 += Q35_MAX_ROWS_PER_PASS) {
            int64_t rn = rows - r0 < Q35_MAX_ROWS_PER_PASS ? rows - r0 : Q35_MAX_ROWS_PER_PASS;
            float acc_y[Q35_MAX_ROWS_PER_PASS];
            int64_t g, r;
            for (r = 0; r < rn; r++)
                acc_y[r] = 0.0f;
            for (g = 0; g < t.groups; g++) {
                const uint8_t *p = t.payload + n * t.payload_row + g * (t.group / 16) * 7;
                int64_t k0 = g * t.group, kend = k0 + t.group < t.k ? k0 + t.group : t.k;
                int32_t acc[Q35_MAX_ROWS_PER_PASS];
                int64_t b;
                float scale, offset;
                q35_group_meta(&t, n, g, &scale, &offset);
                for (r = 0; r < rn; r++)
                    acc[r] = 0;
                for (b = 0; k0 + 16 * b < kend; b++) {
                    /* decoded in registers (see q35_qmatmul_f32), an exact int32 dot */
                    const uint64_t word = q35_load_word(p + 7 * b);
                    const int64_t kb = k0 + 16 * b;
                    const int nb = kend - kb >= 16 ? 16 : (int)(kend - kb);
                    int i;
                    for (r = 0; r < rn; r++) {
                        const int8_t *qr = q + (r0 + r) * t.k + kb;
                        int32_t dot = 0;
                        for (i = 0; i < nb; i++) {
                            const unsigned code = (unsigned)(word >> (7 * (i / 2))) & 127u;
                            dot += (int32_t)qr[i] * (int32_t)q35_codebook[code][i % 2];
                        }
                        acc[r] += dot;
                    }
                }
                for (r = 0; r < rn; r++) {
                    float term = scale * (float)acc[r] +
                                 offset * (float)sx[(r0 + r) * t.groups + g];
                    acc_y[r] = acc_y[r] + term;
                }
            }
            for (r = 0; r < rn; r++)
                y[(r0 + r) * t.n + n] = acc_y[r] * row_scale[r0 + r];
        }
    }
}

/* ---- the legacy pair43 layout (format.md): one group per column ----------------------
 * Blob entry (lower.pair43_bytes): scale[N], offset[N] (float32), then per column its
 * ceil(K/2) pair bytes; weight k of column n is scale * LEVELS[byte][k % 2] + offset. */
static const int8_t q35_legacy_levels[128][2] = {
Q35_LEGACY_LEVEL_ROWS
};

/* Float activations: every weight decoded in float32, products summed in double. */
Q35_FN void q35_pair_matmul_f32(float *y, const float *x, int64_t rows, int64_t k, int64_t n,
                                const uint8_t *entry)
{
    const float *scale = (const float *)(const void *)entry, *offset = scale + n;
    const uint8_t *codes = entry + 8 * n;
    const int64_t pairs = (k + 1) / 2;
    int64_t j;
    Q35_PARALLEL_FOR(rows * n * k)
    for (j = 0; j < n; j++) {
        const uint8_t *cj = codes + j * pairs;
        int64_t r, i;
        for (r = 0; r < rows; r++) {
            double acc = 0.0;
            for (i = 0; i < k; i++) {
                float w = scale[j] * (float)q35_legacy_levels[cj[i / 2] & 127u][i % 2] +
                          offset[j];
                acc += (double)x[r * k + i] * (double)w;
            }
            y[r * n + j] = (float)acc;
        }
    }
}

/* int8 activations: the interpreter's matmul_int8 with one group of K weights per column,
 * y = (0 + (scale * acc + offset * sum(q))) * row_scale in float32. */
Q35_FN void q35_pair_matmul_i8(float *y, const int8_t *q, const float *row_scale,
                               int64_t rows, int64_t k, int64_t n, const uint8_t *entry)
{
    const float *scale = (const float *)(const void *)entry, *offset = scale + n;
    const uint8_t *codes = entry + 8 * n;
    const int64_t pairs = (k + 1) / 2;
    int64_t j;
    Q35_PARALLEL_FOR(rows * n * k)
    for (j = 0; j < n; j++) {
        const uint8_t *cj = codes + j * pairs;
        int64_t r, i;
        for (r = 0; r < rows; r++) {
            int32_t acc = 0, sx = 0;
            float term;
            for (i = 0; i < k; i++) {
                acc += (int32_t)q[r * k + i] *
                       (int32_t)q35_legacy_levels[cj[i / 2] & 127u][i % 2];
                sx += q[r * k + i];
            }
            term = scale[j] * (float)acc + offset[j] * (float)sx;
            y[r * n + j] = (0.0f + term) * row_scale[r];
        }
    }
}

/* out[M, N] = acc + a[M, K] @ b[K, N], products summed in double. */
Q35_FN void q35_matmul_f32(float *out, const float *a, const float *b, const float *acc,
                           int64_t m, int64_t k, int64_t n)
{
    int64_t i;
    Q35_PARALLEL_FOR(m * n * k)
    for (i = 0; i < m; i++) {
        int64_t j, p;
        for (j = 0; j < n; j++) {
            double s = 0.0;
            for (p = 0; p < k; p++)
                s += (double)a[i * k + p] * (double)b[p * n + j];
            out[i * n + j] = (float)((double)acc[i * n + j] + s);
        }
    }
}

/* Batched matmul: for every batch index, c[M, N] = a[M, K] @ b[K, N] in double.
 * a_off / b_off give each batch's element offset (broadcast batches repeat offsets). */
Q35_FN void q35_batch_matmul_f32(float *c, const float *a, const float *b, int64_t batches,
                                 const int64_t *a_off, const int64_t *b_off, int64_t m,
                                 int64_t k, int64_t n)
{
    int64_t t;
    for (t = 0; t < batches; t++) {
        const float *ab = a + a_off[t], *bb = b + b_off[t];
        float *cb = c + t * m * n;
        int64_t i, j, p;
        for (i = 0; i < m; i++)
            for (j = 0; j < n; j++) {
                double s = 0.0;
                for (p = 0; p < k; p++)
                    s += (double)ab[i * k + p] * (double)bb[p * n + j];
                cb[i * n + j] = (float)s;
            }
    }
}

/* dst[dst_off + sum_d i_d * dst_stride_d] = src[src_off + sum_d i_d * src_stride_d] for
 * every index i of `dims`: transposes, broadcasts, slices and concatenation. */
Q35_FN void q35_copy_strided(void *dst, const void *src, size_t elem, int rank,
                             const int64_t *dims, int64_t dst_off, const int64_t *dst_stride,
                             int64_t src_off, const int64_t *src_stride)
{
    /* Outer indices step like an odometer; the innermost axis is a tight loop. */
    int64_t idx[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    const int64_t inner = dims[rank - 1], ds = dst_stride[rank - 1], ss = src_stride[rank - 1];
    int64_t outer = 1, e, j;
    int d;
    for (d = 0; d < rank - 1; d++)
        outer *= dims[d];
    for (e = 0; e < outer; e++) {
        int64_t so = src_off, doff = dst_off;
        for (d = 0; d < rank - 1; d++) {
            so += idx[d] * src_stride[d];
            doff += idx[d] * dst_stride[d];
        }
        if (elem == 4) {
            float *o = (float *)dst + doff;
            const float *i = (const float *)src + so;
            for (j = 0; j < inner; j++)
                o[j * ds] = i[j * ss];
        } else {
            for (j = 0; j < inner; j++)
                memcpy((char *)dst + (doff + j * ds) * (int64_t)elem,
                       (const char *)src + (so + j * ss) * (int64_t)elem, elem);
        }
        for (d = rank - 2; d >= 0; d--) {
            if (++idx[d] < dims[d])
                break;
            idx[d] = 0;
        }
    }
}

/* A reduction over the middle axis of [outer, red, inner]; sums and products in double. */
enum { Q35_RED_ADD, Q35_RED_MUL, Q35_RED_MAX, Q35_RED_MIN };

static double q35_combine(int op, double a, double b)
{
    switch (op) {
    case Q35_RED_ADD: return a + b;
    case Q35_RED_MUL: return a * b;
    case Q35_RED_MAX: return (a != a || b != b) ? (a != a ? a : b) : (a > b ? a : b);
    default: return (a != a || b != b) ? (a != a ? a : b) : (a < b ? a : b);
    }
}

static float q35_combinef(int op, float a, float b)
{
    switch (op) {
    case Q35_RED_ADD: return a + b;
    case Q35_RED_MUL: return a * b;
    case Q35_RED_MAX: return (a != a || b != b) ? (a != a ? a : b) : (a > b ? a : b);
    default: return (a != a || b != b) ? (a != a ? a : b) : (a < b ? a : b);
    }
}

Q35_FN void q35_reduce_f32(float *out, const float *in, const float *init, int op,
                           int64_t outer, int64_t red, int64_t inner)
{
    int64_t o, i, r;
    for (o = 0; o < outer; o++)
        for (i = 0; i < inner; i++) {
            double acc = in[o * red * inner + i];
            for (r = 1; r < red; r++)
                acc = q35_combine(op, acc, (double)in[(o * red + r) * inner + i]);
            if (red == 0)
                out[o * inner + i] = init[o * inner + i];
            else
                out[o * inner + i] = q35_combinef(op, init[o * inner + i], (float)acc);
        }
}

/* Softmax over the middle axis of [outer, len, inner], in double. */
Q35_FN void q35_softmax_f32(float *y, const float *x, int64_t outer, int64_t len, int64_t inner)
{
    int64_t o, i, l;
    for (o = 0; o < outer; o++)
        for (i = 0; i < inner; i++) {
            const float *xs = x + o * len * inner + i;
            float *ys = y + o * len * inner + i;
            double m = xs[0], s = 0.0;
            for (l = 1; l < len; l++)
                m = xs[l * inner] > m ? xs[l * inner] : m;
            for (l = 0; l < len; l++)
                s += exp((double)xs[l * inner] - m);
            for (l = 0; l < len; l++)
                ys[l * inner] = (float)(exp((double)xs[l * inner] - m) / s);
        }
}

/* Layer norm over the last axis (beta may be NULL: RMS norm without mean removal). */
Q35_FN void q35_layer_norm_f32(float *y, const float *x, const float *gamma, const float *beta,
                               int64_t rows, int64_t len, double eps)
{
    int64_t r, i;
    for (r = 0; r < rows; r++) {
        const float *xr = x + r * len;
        double mean = 0.0, var = 0.0;
        for (i = 0; i < len; i++)
            mean += xr[i];
        mean /= (double)len;
        for (i = 0; i < len; i++)
            var += ((double)xr[i] - mean) * ((double)xr[i] - mean);
        var /= (double)len;
        for (i = 0; i < len; i++)
            y[r * len + i] =
                (float)(((double)xr[i] - mean) / sqrt(var + eps) * gamma[i] + beta[i]);
    }
}

Q35_FN void q35_rms_norm_f32(float *y, const float *x, const float *gamma, int64_t rows,
                             int64_t len, double eps)
{
    int64_t r, i;
    for (r = 0; r < rows; r++) {
        const float *xr = x + r * len;
        double ms = 0.0;
        for (i = 0; i < len; i++)
            ms += (double)xr[i] * (double)xr[i];
        ms /= (double)len;
        for (i = 0; i < len; i++)
            y[r * len + i] = (float)((double)xr[i] / sqrt(ms + eps) * gamma[i]);
    }
}

Q35_FN void q35_silu_f32(float *y, const float *x, int64_t count)
{
    int64_t i;
    for (i = 0; i < count; i++)
        y[i] = (float)((double)x[i] / (1.0 + exp(-(double)x[i])));
}

/* GELU as the interpreter writes it: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) with
 * x^3 = (x x) x, or 0.5 x (1 + erf(x / sqrt(2))); libm tanh/erf, double, no contraction. */
Q35_FN void q35_gelu_f32(float *y, const float *x, int64_t count, int approximate_tanh)
{
    const double sqrt_2_over_pi = 0.7978845608028654, sqrt2 = 1.4142135623730951;
    int64_t i;
    for (i = 0; i < count; i++) {
        double v = x[i];
        if (approximate_tanh)
            y[i] = (float)(0.5 * v * (1.0 + tanh(sqrt_2_over_pi * (v + 0.044715 * (v * v * v)))));
        else
            y[i] = (float)(0.5 * v * (1.0 + erf(v / sqrt2)));
    }
}

/* take(data, indices, axis) on [outer, size, inner] data; returns -1 on a bad index. */
Q35_FN int q35_gather_f32(float *y, const float *data, const int64_t *indices, int64_t count,
                          int64_t outer, int64_t size, int64_t inner)
{
    int64_t o, c;
    for (c = 0; c < count; c++)
        if (indices[c] < -size || indices[c] >= size)
            return -1;
    for (o = 0; o < outer; o++)
        for (c = 0; c < count; c++) {
            int64_t j = indices[c] < 0 ? indices[c] + size : indices[c];
            memcpy(y + (o * count + c) * inner, data + (o * size + j) * inner,
                   (size_t)inner * sizeof(float));
        }
    return 0;
}

Q35_FN float q35_maxf(float a, float b) { return (a != a || b != b) ? a + b : (a > b ? a : b); }
Q35_FN float q35_minf(float a, float b) { return (a != a || b != b) ? a + b : (a < b ? a : b); }
/* ---- end of the q35c C runtime -------------------------------------------------------- */

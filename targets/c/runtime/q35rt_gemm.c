/* ---- float GEMM for Q3P5 weights (rows >= Q35_GEMM_MIN_ROWS: prefill, batches) ---------
 *
 * y[M, N] = x[M, K] @ W[K, N] with float activations and Q3P5 weights of group size 32, in
 * three versions chosen as the other kernels are (q35_isa): AVX-512, AVX2 and portable C.
 * They share one plan (BLIS-like blocking, with the decoded weights in the role of BLIS's
 * packed B panel):
 *   - the activations are packed once per call (serially, before the columns are split
 *     between threads) into row blocks with the rows in vector lanes: block b, k holds
 *     x[rows of b, k] side by side, zero past M;
 *   - a thread takes a unit of up to Q35_FG_UNIT_TILES column tiles (q35_parallel_columns);
 *     per row chunk, per K block and per tile of the unit, the tile's weights `scale *
 *     level + offset` (format.md section 3, float32: exactly the interpreter's decoded
 *     weights) are decoded once into a buffer (L1/L2) that every row block of the chunk
 *     reuses, and the chunk's packed activations of the K block are reused by every tile
 *     of the unit;
 *   - a register-blocked micro-kernel (AVX-512: 32 rows x 14 columns in 28 zmm
 *     accumulators; AVX2: 16 x 6 in 12 ymm): per k, the row block's activations (two
 *     vectors of rows) meet each column's weight (a broadcast from the buffer) in one FMA
 *     per vector; between K blocks the AVX-512 partial sums wait in a per-thread scratch
 *     in registers' layout, the AVX2 ones in y (transposed, rows <-> lanes); y is written
 *     after the last K block. The portable version runs one row against 16 columns.
 * Numerics: every output is one float32 fused-multiply-add chain over k = 0, 1, ..., K - 1
 * in order, from +0: acc = fma(x[m, k], w[k, n], acc), w the float32 decoded weight. The
 * blocking (row blocks, column tiles, K blocks, thread split) changes nothing of it, so the
 * AVX-512 and AVX2 versions give the same bits, and so does the portable one where the C
 * library's fmaf is the hardware's (FP_FAST_FMAF, e.g. -march=native on x86-64 or any
 * AArch64); without it the portable version rounds the product and the sum separately.
 * The interpreter sums the products in float64: the difference is the float32 rounding of
 * K partial sums (tests allow 1e-5 of the output scale). */

/* The blocking. Rows: chunks of at most Q35_FG_MCHUNK rows (the weights of a tile are
 * decoded once per chunk; 64 KiB of partial sums per thread on AVX-512). K: even blocks of
 * whole 128-k chunks (4 groups), at most Q35_FG_KBLOCK_CHUNKS of them (the decoded-weight
 * buffer: 115 KiB for the AVX-512 tile of 14 columns, in L2; each 64-byte line of it
 * serves 16 k of a row block). Measured on the AMD EPYC of docs/benchmarks.md (Zen 5,
 * 48 KiB L1d, 1 MiB L2, 32 MiB L3; one thread, CPU time under load): with the partial
 * sums kept in registers' layout between K blocks, blocks of 512 to 4096 k and row chunks
 * of 128 to 512 rows ran 128 x 4096 x 4096 in 19 to 21 ms and 512 x 4096 x 4096 in 76 to
 * 86 ms, within the noise; blocks of 256 k (whose activations of a 512-row chunk fit L2)
 * were slower (99 to 107 ms): a kernel call per 256 k costs more than L3 reads here. */
enum { Q35_FG_KBLOCK_CHUNKS = 16, Q35_FG_MCHUNK = 256, Q35_FG_MIN_ROWS = 8 };
enum { Q35_FG_UNIT_TILES = 4 }; /* column tiles per parallel unit, at most */
enum { Q35_FG_STRIDE = Q35_FG_KBLOCK_CHUNKS * 128 + 16 }; /* floats per buffered column */

/* The K blocking: blocks of `per` chunks of 128 k (the last one shorter). */
typedef struct {
    int64_t chunks, per;
} q35_fg_plan;

static q35_fg_plan q35_fg_plan_make(int64_t k)
{
    q35_fg_plan p;
    int64_t blocks;
    p.chunks = (k + 127) / 128;
    blocks = (p.chunks + Q35_FG_KBLOCK_CHUNKS - 1) / Q35_FG_KBLOCK_CHUNKS;
    p.per = blocks > 0 ? (p.chunks + blocks - 1) / blocks : 1;
    return p;
}

/* Columns per parallel unit: whole tiles, up to 4 of them, but at least 8 units a call
 * where N allows (two threads share the work with little imbalance). */
static int64_t q35_fg_unit(int64_t n, int64_t tile)
{
    int64_t tiles = (n / tile) / 8;
    return (tiles < 1 ? 1 : tiles > Q35_FG_UNIT_TILES ? Q35_FG_UNIT_TILES : tiles) * tile;
}

/* Portable: scalar decode of the 128-k chunks [j0, j1) of column n into dst[k - 128 j0]
 * (k past K decode like the rest: the codes there are the payload's padding). */
static void q35_fg_decode_portable(const q35_q3p5 *t, int64_t n, int64_t j0, int64_t j1,
                                   float *dst, int64_t step)
{
    int64_t g;
    for (g = 4 * j0; g < 4 * j1 && g < t->groups; g++) {
        const uint8_t *p = t->payload + n * t->payload_row + g * 14;
        float scale, offset, lv[16];
        int b, i;
        q35_group_meta(t, n, g, &scale, &offset);
        for (b = 0; b < 2; b++) {
            q35_block_levels(p + 7 * b, lv);
            for (i = 0; i < 16; i++)
                dst[((g - 4 * j0) * 32 + 16 * b + i) * step] = scale * lv[i] + offset;
        }
    }
}

#if defined(FP_FAST_FMAF)
#define Q35_FG_FMA(a, b, c) fmaf(a, b, c)
#else
#define Q35_FG_FMA(a, b, c) ((a) * (b) + (c))
#endif

/* Portable tile: 16 columns, weights buffered as w[k][16] (the inner loop over columns
 * vectorizes), one row at a time straight from x (no packing). */
enum { Q35_FG_PCOLS = 16 };
static void q35_fg_columns_portable(const q35_qjob *job, int64_t n_begin, int64_t n_end)
{
    const q35_q3p5 *t = &job->t;
    const q35_fg_plan plan = q35_fg_plan_make(t->k);
    float w[Q35_FG_KBLOCK_CHUNKS * 128][Q35_FG_PCOLS];
    int64_t n0, j0, r, c, k;
    for (n0 = n_begin; n0 < n_end; n0 += Q35_FG_PCOLS) {
        const int64_t cols = t->n - n0 < Q35_FG_PCOLS ? t->n - n0 : Q35_FG_PCOLS;
        if (cols < Q35_FG_PCOLS)
            memset(w, 0, sizeof w);
        for (j0 = 0; j0 < plan.chunks; j0 += plan.per) {
            const int64_t j1 = j0 + plan.per < plan.chunks ? j0 + plan.per : plan.chunks;
            const int64_t k0 = 128 * j0, k1 = 128 * j1 < t->k ? 128 * j1 : t->k;
            for (c = 0; c < cols; c++)
                q35_fg_decode_portable(t, n0 + c, j0, j1, &w[0][c], Q35_FG_PCOLS);
            for (r = 0; r < job->rows; r++) {
                const float *xr = job->x + r * t->k;
                float *yr = job->y + r * t->n + n0;
                float acc[Q35_FG_PCOLS];
                for (c = 0; c < Q35_FG_PCOLS; c++)
                    acc[c] = k0 == 0 || c >= cols ? 0.0f : yr[c];
                for (k = k0; k < k1; k++) {
                    const float xv = xr[k];
                    const float *wk = w[k - k0];
                    for (c = 0; c < Q35_FG_PCOLS; c++)
                        acc[c] = Q35_FG_FMA(xv, wk[c], acc[c]);
                }
                for (c = 0; c < cols; c++)
                    yr[c] = acc[c];
            }
        }
    }
}

#ifdef Q35_X86
/* ---- AVX-512: tiles of 14 columns, row blocks of 32 rows (two vectors) ---------------- */
enum { Q35_FG_COLS = 14, Q35_FG_ROWS = 32 };
#define Q35_FG_EACH14(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9) X(10) X(11) X(12) X(13)

/* Row block b of the packed activations: rows [32 b, 32 b + width) at xp + 32 b K, k-major
 * (width floats per k); width is 32, or 16 for a last block of at most 16 rows. */
static int64_t q35_fg_width(int64_t rows, int64_t b)
{
    return rows - Q35_FG_ROWS * b > 16 ? 32 : 16;
}

/* Packs the activations (16 rows x 16 k by a transpose); fits q35_qmatmul_work_bytes:
 * (rows rounded up to 16) x K floats. */
static Q35_AVX512 void q35_fg_prepare_avx512(const q35_qjob *job)
{
    const int64_t rows = job->rows, k = job->t.k, blocks = (rows + 31) / 32;
    float *xp = (float *)(void *)job->work;
    int64_t b, h, k0, i;
    for (b = 0; b < blocks; b++) {
        const int64_t width = q35_fg_width(rows, b);
        float *dst = xp + Q35_FG_ROWS * b * k;
        for (h = 0; h < width / 16; h++) {
            const int64_t r0 = Q35_FG_ROWS * b + 16 * h;
            for (k0 = 0; k0 < k; k0 += 16) {
                const int64_t kn = k - k0 < 16 ? k - k0 : 16;
                const __mmask16 km = (__mmask16)((1u << kn) - 1);
                __m512 v[16];
                for (i = 0; i < 16; i++)
                    v[i] = r0 + i < rows ? _mm512_maskz_loadu_ps(km, job->x + (r0 + i) * k + k0)
                                         : _mm512_setzero_ps();
                q35_transpose16(v);
                for (i = 0; i < kn; i++)
                    _mm512_storeu_ps(dst + (k0 + i) * width + 16 * h, v[i]);
            }
        }
    }
}

/* The float32 weights of the 128-k chunks [j0, j1) of column n into dst[k - 128 j0]. */
static Q35_AVX512 void q35_fg_decode_avx512(const q35_q3p5 *t, const q35_decoder *d, int64_t n,
                                            int64_t j0, int64_t j1, float *dst)
{
    int64_t j, unit = -1;
    float sc[16], of[16];
    for (j = j0; j < j1; j++) {
        const uint8_t *p = t->payload + n * t->payload_row + 56 * j;
        const int64_t bytes = t->payload_row - 56 * j;
        __m512i codes, part[2], lv[2];
        int i, h;
        if (j / 4 != unit) {
            __m512 scale, offset;
            unit = j / 4;
            q35_group_meta16(t, n, 16 * unit, d, &scale, &offset);
            _mm512_storeu_ps(sc, scale);
            _mm512_storeu_ps(of, offset);
        }
        codes = bytes >= 56 ? q35_codes_full(d, p) : q35_codes_raw(d, p, (int)bytes);
        part[0] = _mm512_permutex2var_epi8(d->even_lo, codes, d->even_hi);
        part[1] = _mm512_permutex2var_epi8(d->odd_lo, codes, d->odd_hi);
        /* 128-bit lane i of lv[h]: weights 16 h .. 16 h + 15 of group 4 (j % 4) + i; taken
         * out by extracts (through a stack buffer, as the GEMV does, the decode took 1.6x
         * as long here: 128 x 4096 x 4096, measured 2026-12-07) */
        lv[0] = _mm512_unpacklo_epi8(part[0], part[1]);
        lv[1] = _mm512_unpackhi_epi8(part[0], part[1]);
        {
            __m128i b[2][4];
            for (h = 0; h < 2; h++) { /* immediates: no loop over i */
                b[h][0] = _mm512_castsi512_si128(lv[h]);
                b[h][1] = _mm512_extracti32x4_epi32(lv[h], 1);
                b[h][2] = _mm512_extracti32x4_epi32(lv[h], 2);
                b[h][3] = _mm512_extracti32x4_epi32(lv[h], 3);
            }
            for (i = 0; i < 4; i++) {
                const __m512 s = _mm512_set1_ps(sc[4 * (j % 4) + i]),
                             o = _mm512_set1_ps(of[4 * (j % 4) + i]);
                for (h = 0; h < 2; h++)
                    _mm512_storeu_ps(dst + (j - j0) * 128 + 32 * i + 16 * h,
                                     _mm512_add_ps(_mm512_mul_ps(s, _mm512_cvtepi32_ps(
                                                                   _mm512_cvtepi8_epi32(b[h][i]))),
                                                   o));
            }
        }
    }
}

/* acc[c] (lanes: the 16 rows from y, c < 14) to y[., n0 + c] for the first nrows rows. */
static inline Q35_AVX512 void q35_fg_store16(float *y, int64_t ldy, int64_t nrows,
                                             __mmask16 colmask, __m512 acc[16])
{
    int64_t i;
    acc[14] = acc[15] = _mm512_setzero_ps();
    q35_transpose16(acc);
    for (i = 0; i < nrows && i < 16; i++)
        _mm512_mask_storeu_ps(y + i * ldy, colmask, acc[i]);
}

/* The micro-kernels: k in [0, kn) of a row block (a: width floats per k) and a tile's
 * buffered weights (w + c * Q35_FG_STRIDE + k), into acc[c] (rows 0-15) and acc[16 + c]
 * (rows 16-31). */
static Q35_AVX512 void q35_fg_kernel32(const float *a, const float *w, int64_t kn,
                                       __m512 acc[32])
{
    int64_t k;
#define Q35_FG_IN(c) __m512 p##c = acc[c], q##c = acc[16 + c];
#define Q35_FG_FMA2(c)                                                  \
    {                                                                  \
        const __m512 b = _mm512_set1_ps(w[(c) * Q35_FG_STRIDE + k]);   \
        p##c = _mm512_fmadd_ps(x0, b, p##c);                           \
        q##c = _mm512_fmadd_ps(x1, b, q##c);                           \
    }
#define Q35_FG_OUT(c) acc[c] = p##c, acc[16 + c] = q##c;
    Q35_FG_EACH14(Q35_FG_IN)
    for (k = 0; k < kn; k++) {
        const __m512 x0 = _mm512_loadu_ps(a + 32 * k), x1 = _mm512_loadu_ps(a + 32 * k + 16);
        Q35_FG_EACH14(Q35_FG_FMA2)
    }
    Q35_FG_EACH14(Q35_FG_OUT)
#undef Q35_FG_IN
#undef Q35_FG_FMA2
#undef Q35_FG_OUT
}

static Q35_AVX512 void q35_fg_kernel16(const float *a, const float *w, int64_t kn,
                                       __m512 acc[32])
{
    int64_t k;
#define Q35_FG_IN(c) __m512 p##c = acc[c];
#define Q35_FG_FMA1(c) p##c = _mm512_fmadd_ps(x0, _mm512_set1_ps(w[(c) * Q35_FG_STRIDE + k]), p##c);
#define Q35_FG_OUT(c) acc[c] = p##c;
    Q35_FG_EACH14(Q35_FG_IN)
    for (k = 0; k < kn; k++) {
        const __m512 x0 = _mm512_loadu_ps(a + 16 * k);
        Q35_FG_EACH14(Q35_FG_FMA1)
    }
    Q35_FG_EACH14(Q35_FG_OUT)
#undef Q35_FG_IN
#undef Q35_FG_FMA1
#undef Q35_FG_OUT
}

/* Columns [n_begin, n_end) (n_begin a multiple of 14) of the prepared job, in groups of up
 * to Q35_FG_UNIT_TILES tiles: per row chunk and K block, the chunk's packed activations of
 * the block are read by every tile of the group (from L2), and the partial sums of each
 * (row block, tile) wait between K blocks in `part`, in registers' layout (a plain reload,
 * no transposes); y is written once, after the last K block. */
static Q35_AVX512 void q35_fg_columns_avx512(const q35_qjob *job, int64_t n_begin,
                                             int64_t n_end)
{
    const q35_q3p5 *t = &job->t;
    const q35_fg_plan plan = q35_fg_plan_make(t->k);
    const int64_t rows = job->rows, ldy = t->n;
    const float *xp = (const float *)(const void *)job->work;
    const q35_decoder d = q35_decoder_make(0);
    float w[Q35_FG_COLS][Q35_FG_STRIDE];                                  /* 115 KiB */
    __m512 part[Q35_FG_MCHUNK / Q35_FG_ROWS][Q35_FG_UNIT_TILES][32];     /* 64 KiB */
    int64_t u0, m0, j0, n0, b, c;
    for (u0 = n_begin; u0 < n_end; u0 += Q35_FG_UNIT_TILES * Q35_FG_COLS) {
        const int64_t u1 = n_end - u0 < Q35_FG_UNIT_TILES * Q35_FG_COLS
                               ? n_end : u0 + Q35_FG_UNIT_TILES * Q35_FG_COLS;
        for (m0 = 0; m0 < rows; m0 += Q35_FG_MCHUNK) {
            const int64_t m1 = rows - m0 < Q35_FG_MCHUNK ? rows : m0 + Q35_FG_MCHUNK;
            for (j0 = 0; j0 < plan.chunks; j0 += plan.per) {
                const int64_t j1 = j0 + plan.per < plan.chunks ? j0 + plan.per : plan.chunks;
                const int64_t k0 = 128 * j0, kn = (128 * j1 < t->k ? 128 * j1 : t->k) - k0;
                for (n0 = u0; n0 < u1; n0 += Q35_FG_COLS) {
                    const int64_t cols = t->n - n0 < Q35_FG_COLS ? t->n - n0 : Q35_FG_COLS;
                    const __mmask16 colmask = (__mmask16)((1u << cols) - 1);
                    for (c = 0; c < Q35_FG_COLS; c++) {
                        if (c < cols)
                            q35_fg_decode_avx512(t, &d, n0 + c, j0, j1, w[c]);
                        else /* columns past N: zero weights, outputs not stored */
                            memset(w[c], 0, sizeof w[c]);
                    }
                    for (b = m0 / Q35_FG_ROWS; b * Q35_FG_ROWS < m1; b++) {
                        const int64_t r0 = Q35_FG_ROWS * b, width = q35_fg_width(rows, b);
                        const int64_t nr = rows - r0 < width ? rows - r0 : width;
                        const float *a = xp + r0 * t->k + k0 * width;
                        __m512 *acc = part[b - m0 / Q35_FG_ROWS][(n0 - u0) / Q35_FG_COLS];
                        int h;
                        if (j0 == 0)
                            for (c = 0; c < 32; c++)
                                acc[c] = _mm512_setzero_ps();
                        if (width == 32)
                            q35_fg_kernel32(a, w[0], kn, acc);
                        else
                            q35_fg_kernel16(a, w[0], kn, acc);
                        if (j1 == plan.chunks)
                            for (h = 0; h < width / 16; h++)
                                q35_fg_store16(job->y + (r0 + 16 * h) * ldy + n0, ldy,
                                               nr - 16 * h, colmask, acc + 16 * h);
                    }
                }
            }
        }
    }
}

/* ---- AVX2: micro-tiles of 16 rows (two vectors) x 6 columns -----------------------------
 * Rows in vector lanes, weights broadcast: per k, two loads of 16 rows' activations, six
 * broadcasts of decoded weights and 12 FMAs into 12 ymm accumulators (of the 16 registers;
 * BLIS's Haswell kernel, 6 x 16, with the roles of rows and columns exchanged, so that a
 * column's decoded weights are read in the order the decoder writes them, k after k, and
 * need no transpose). Blocking:
 *   - K blocks of Q35_FG2_KC = 2048 k; the activations are packed once per call, K block
 *     by K block, each block the rows (rounded up to 16) x its k, in row blocks of 16 rows
 *     (k-major, 16 floats per k: 128 KiB, one sequential stream per kernel call);
 *   - per row chunk of Q35_FG2_MC rows and K block, every tile of 6 columns of the range
 *     in turn: its weights are decoded once (48 KiB, column-major) and meet every row
 *     block of the chunk, so the tiles share the chunk's activations of the block (2 MiB
 *     at most) in L3;
 *   - between K blocks the partial sums wait in y (8 x 8 transposes: with K = 4096, once
 *     per 2048 k of 16 rows x 6 columns).
 * Measured on the AMD EPYC (Zen 3: 32 KiB L1d, 512 KiB L2, 32 MiB L3 shared with other
 * jobs) of docs/benchmarks.md under load 10 to 12, one thread, the best of 6 to 8 runs:
 * K blocks of 256 k (a tile's weights in L1, a row chunk's activations in L2, as BLIS
 * blocks for these caches) ran 512 x 4096 x 4096 in 227 to 284 ms against 211 to 232 for
 * blocks of 2048 k (at 128 rows: even, 51 to 53 ms); keeping the partial sums in a
 * per-thread scratch instead of y, which makes a thread's units of 4 tiles the outer loop
 * (each streaming all of the activations, 8 MiB at 512 rows, through L3), 243 against
 * 216 ms. */
enum { Q35_FG2_KC = 2048, Q35_FG2_MC = 256, Q35_FG2_COLS = 6, Q35_FG2_ROWS = 16 };

/* The packed activations of the K block [k0, k0 + kn) and row block b (rows 16 b ..): xp +
 * k0 rows16 + 16 b kn, k-major, `width` floats per k: 16, or 8 for a last block of at most
 * 8 rows (zero past M). Fits q35_qmatmul_work_bytes: rows rounded up to 16 x K floats. */
static int64_t q35_fg2_rows(int64_t rows)
{
    return (rows + Q35_FG2_ROWS - 1) / Q35_FG2_ROWS * Q35_FG2_ROWS;
}

static int64_t q35_fg2_width(int64_t rows, int64_t r0)
{
    return rows - r0 > 8 ? 16 : 8;
}

static Q35_AVX2 void q35_fg_prepare_avx2(const q35_qjob *job)
{
    const int64_t rows = job->rows, k = job->t.k, rows16 = q35_fg2_rows(rows);
    float *xp = (float *)(void *)job->work;
    int64_t k0, r0, kk, i;
    for (k0 = 0; k0 < k; k0 += Q35_FG2_KC) {
        const int64_t kn = k - k0 < Q35_FG2_KC ? k - k0 : Q35_FG2_KC;
        for (r0 = 0; r0 < rows; r0 += 8) { /* 8 rows (a half block) at a time */
            const int64_t b0 = r0 / Q35_FG2_ROWS * Q35_FG2_ROWS, width = q35_fg2_width(rows, b0);
            float *dst = xp + k0 * rows16 + b0 * kn + (r0 - b0);
            for (kk = 0; kk < kn; kk += 8) {
                const int64_t km = kn - kk < 8 ? kn - kk : 8;
                __m256 v[8];
                for (i = 0; i < 8; i++) {
                    if (r0 + i < rows && km == 8) {
                        v[i] = _mm256_loadu_ps(job->x + (r0 + i) * k + k0 + kk);
                    } else {
                        float tmp[8] = {0, 0, 0, 0, 0, 0, 0, 0};
                        if (r0 + i < rows)
                            memcpy(tmp, job->x + (r0 + i) * k + k0 + kk,
                                   (size_t)km * sizeof(float));
                        v[i] = _mm256_loadu_ps(tmp);
                    }
                }
                q35_avx2_transpose8(v);
                for (i = 0; i < km; i++)
                    _mm256_storeu_ps(dst + (kk + i) * width, v[i]);
            }
        }
    }
}

/* The float32 weights of the 128-k chunks [j0, j1) of column n into dst[k - 128 j0]. The
 * levels go from registers to the float conversion by extracts and byte shifts, the group's
 * scale and offset by vpermps (not through stack buffers). */
static Q35_AVX2 void q35_fg_decode_avx2(const q35_q3p5 *t, const q35_avx2_tables *tables,
                                        int64_t n, int64_t j0, int64_t j1, float *dst)
{
    const int64_t G = t->groups;
    const uint8_t *pay = t->payload + n * t->payload_row, *meta = t->meta + n * t->meta_row;
    const q35_avx2_column col = q35_avx2_column_make(t, n);
    q35_avx2_tables tb = *tables;
    int64_t j;
    Q35_AVX2_HIDE(tb.sixteen);
    for (j = j0; j < j1; j++) {
        const int64_t ga = 4 * j; /* groups ga .. ga + 3, ga < G */
        __m256i lev[4], ca, cb;
        __m256 scale, offset;
        int g, h, i;
        q35_avx2_group_meta(&col, meta + ga / 8 * 7, &scale, &offset);
        if (ga + 4 <= G) {
            ca = q35_avx2_codes(pay + ga * 14, 0);
            cb = q35_avx2_codes(pay + ga * 14 + 28, 0);
        } else {
            ca = q35_avx2_codes(pay + ga * 14, ga + 1 >= G);
            cb = ga + 2 < G ? q35_avx2_codes(pay + ga * 14 + 28, ga + 3 >= G) : ca;
        }
        q35_avx2_levels2(&tb, ca, cb, &lev[0], &lev[1], &lev[2], &lev[3]);
        for (h = 0; h < 2; h++) {
            /* lev[2 h] / lev[2 h + 1]: the even-k / odd-k levels of groups ga + 2 h (low
             * 128-bit lane) and ga + 2 h + 1 (high lane); interleaved: k 0-15 and 16-31 */
            const __m256i l0 = _mm256_unpacklo_epi8(lev[2 * h], lev[2 * h + 1]);
            const __m256i l1 = _mm256_unpackhi_epi8(lev[2 * h], lev[2 * h + 1]);
            const __m128i q[2][2] = {
                {_mm256_castsi256_si128(l0), _mm256_castsi256_si128(l1)},
                {_mm256_extracti128_si256(l0, 1), _mm256_extracti128_si256(l1, 1)}};
            for (g = 0; g < 2; g++) {
                const __m256i idx = _mm256_set1_epi32((int)(ga % 8) + 2 * h + g);
                const __m256 s = _mm256_permutevar8x32_ps(scale, idx),
                             off = _mm256_permutevar8x32_ps(offset, idx);
                float *out = dst + (j - j0) * 128 + 32 * (2 * h + g);
                for (i = 0; i < 4; i++) {
                    const __m128i bytes = i % 2 ? _mm_srli_si128(q[g][i / 2], 8) : q[g][i / 2];
                    const __m256 lv = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(bytes));
                    _mm256_storeu_ps(out + 8 * i, _mm256_add_ps(_mm256_mul_ps(s, lv), off));
                }
            }
        }
    }
}

#define Q35_FG_EACH6(X) X(0) X(1) X(2) X(3) X(4) X(5)
/* The micro-kernel: k in [0, kn) of a packed row block (a: `width` floats per k, 16 or 8)
 * and a tile's weights (w + c * Q35_FG2_STRIDE + k), into acc[c] (rows 0-7) and acc[8 + c]
 * (rows 8-15). */
enum { Q35_FG2_STRIDE = Q35_FG2_KC + 16 }; /* floats per buffered column */
static Q35_AVX2 void q35_fg2_kernel(const float *a, const float *w, int64_t kn, int64_t width,
                                    __m256 acc[16])
{
    int64_t k;
#define Q35_FG_IN(c) __m256 p##c = acc[c], q##c = acc[8 + c];
#define Q35_FG_FMA2(c)                                                      \
    {                                                                      \
        const __m256 b = _mm256_broadcast_ss(w + (c) * Q35_FG2_STRIDE + k); \
        p##c = _mm256_fmadd_ps(x0, b, p##c);                               \
        q##c = _mm256_fmadd_ps(x1, b, q##c);                               \
    }
#define Q35_FG_FMA1(c) \
    p##c = _mm256_fmadd_ps(x0, _mm256_broadcast_ss(w + (c) * Q35_FG2_STRIDE + k), p##c);
#define Q35_FG_OUT(c) acc[c] = p##c, acc[8 + c] = q##c;
    Q35_FG_EACH6(Q35_FG_IN)
    if (width == 16) {
        for (k = 0; k < kn; k++) {
            const __m256 x0 = _mm256_loadu_ps(a + 16 * k), x1 = _mm256_loadu_ps(a + 16 * k + 8);
            Q35_FG_EACH6(Q35_FG_FMA2)
        }
    } else {
        for (k = 0; k < kn; k++) {
            const __m256 x0 = _mm256_loadu_ps(a + 8 * k);
            Q35_FG_EACH6(Q35_FG_FMA1)
        }
    }
    Q35_FG_EACH6(Q35_FG_OUT)
#undef Q35_FG_IN
#undef Q35_FG_FMA2
#undef Q35_FG_FMA1
#undef Q35_FG_OUT
}

/* 8 rows' partial sums between y and lanes: acc[c] = y[row0 .. row0 + 8, n0 + c] for the
 * first nrows rows and cols columns (c < 6), by an 8 x 8 transpose. */
static inline Q35_AVX2 void q35_fg2_load8(const float *y, int64_t ldy, int64_t nrows,
                                          int64_t cols, __m256 acc[8])
{
    __m256 v[8];
    int64_t i;
    for (i = 0; i < 8; i++) {
        float tmp[8] = {0, 0, 0, 0, 0, 0, 0, 0};
        if (i < nrows && cols == Q35_FG2_COLS) /* a constant size: inlined */
            memcpy(tmp, y + i * ldy, Q35_FG2_COLS * sizeof(float));
        else if (i < nrows)
            memcpy(tmp, y + i * ldy, (size_t)cols * sizeof(float));
        v[i] = _mm256_loadu_ps(tmp);
    }
    q35_avx2_transpose8(v);
    for (i = 0; i < 6; i++)
        acc[i] = v[i];
}

static inline Q35_AVX2 void q35_fg2_store8(float *y, int64_t ldy, int64_t nrows, int64_t cols,
                                           const __m256 acc[8])
{
    __m256 v[8];
    int64_t i;
    for (i = 0; i < 6; i++)
        v[i] = acc[i];
    v[6] = v[7] = _mm256_setzero_ps();
    q35_avx2_transpose8(v);
    for (i = 0; i < nrows && i < 8; i++) {
        float tmp[8];
        _mm256_storeu_ps(tmp, v[i]);
        if (cols == Q35_FG2_COLS) /* a constant size: inlined */
            memcpy(y + i * ldy, tmp, Q35_FG2_COLS * sizeof(float));
        else
            memcpy(y + i * ldy, tmp, (size_t)cols * sizeof(float));
    }
}

/* Columns [n_begin, n_end) (n_begin a multiple of 6) of the prepared job: per row chunk and
 * K block, every tile of the range in turn (so the chunk's packed activations of the
 * block, 2 MiB at most, are what the tiles share in L3). */
static Q35_AVX2 void q35_fg_columns_avx2(const q35_qjob *job, int64_t n_begin, int64_t n_end)
{
    const q35_q3p5 *t = &job->t;
    const int64_t rows = job->rows, ldy = t->n, K = t->k, rows16 = q35_fg2_rows(rows);
    const int64_t chunks = (K + 127) / 128, per = Q35_FG2_KC / 128;
    const float *xp = (const float *)(const void *)job->work;
    float w[Q35_FG2_COLS][Q35_FG2_STRIDE];                                     /* 48 KiB */
    q35_avx2_tables tables;
    int64_t m0, j0, n0, r0, c;
    q35_avx2_tables_make(&tables);
    for (m0 = 0; m0 < rows; m0 += Q35_FG2_MC) {
        const int64_t m1 = rows - m0 < Q35_FG2_MC ? rows : m0 + Q35_FG2_MC;
        for (j0 = 0; j0 < chunks; j0 += per) {
            const int64_t j1 = j0 + per < chunks ? j0 + per : chunks;
            const int64_t k0 = 128 * j0, kn = (128 * j1 < K ? 128 * j1 : K) - k0;
            for (n0 = n_begin; n0 < n_end; n0 += Q35_FG2_COLS) {
                const int64_t cols = t->n - n0 < Q35_FG2_COLS ? t->n - n0 : Q35_FG2_COLS;
                for (c = 0; c < Q35_FG2_COLS; c++) {
                    if (c < cols)
                        q35_fg_decode_avx2(t, &tables, n0 + c, j0, j1, w[c]);
                    else /* columns past N: zero weights, outputs not stored */
                        memset(w[c], 0, sizeof w[c]);
                }
                for (r0 = m0; r0 < m1; r0 += Q35_FG2_ROWS) {
                    const int64_t width = q35_fg2_width(rows, r0);
                    float *yb = job->y + r0 * ldy + n0;
                    __m256 acc[16];
                    int h;
                    for (c = 8; c < 16; c++) /* rows 8-15: unused by an 8-row block */
                        acc[c] = _mm256_setzero_ps();
                    for (h = 0; h < width / 8; h++) {
                        if (j0 == 0)
                            for (c = 0; c < 8; c++)
                                acc[8 * h + c] = _mm256_setzero_ps();
                        else
                            q35_fg2_load8(yb + 8 * h * ldy, ldy, rows - r0 - 8 * h, cols,
                                          acc + 8 * h);
                    }
                    q35_fg2_kernel(xp + k0 * rows16 + r0 * kn, w[0], kn, width, acc);
                    for (h = 0; h < width / 8; h++)
                        q35_fg2_store8(yb + 8 * h * ldy, ldy, rows - r0 - 8 * h, cols,
                                       acc + 8 * h);
                }
            }
        }
    }
}
#endif

/* The float GEMM of a job with group size 32 (work: q35_qmatmul_work_bytes). */
static void q35_qmatmul_f32_gemm(const q35_qjob *job)
{
    const int64_t work = job->rows * job->t.n * job->t.k;
#ifdef Q35_X86
    if (q35_isa() == Q35_ISA_AVX512) {
        q35_fg_prepare_avx512(job);
        q35_parallel_columns(q35_fg_columns_avx512, job, q35_fg_unit(job->t.n, Q35_FG_COLS),
                             work);
        return;
    }
    if (q35_isa() == Q35_ISA_AVX2) {
        q35_fg_prepare_avx2(job);
        q35_parallel_columns(q35_fg_columns_avx2, job, q35_fg_unit(job->t.n, Q35_FG2_COLS),
                             work);
        return;
    }
#endif
    q35_parallel_columns(q35_fg_columns_portable, job, q35_fg_unit(job->t.n, Q35_FG_PCOLS),
                         work);
}

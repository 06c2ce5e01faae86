/* ---- q35rt_bmm.c: the batch matmul over operands read in place ------------------------
 *
 * The kernel of the step `batch_matmul_strided` (targets/native/fold.py makes it from a
 * `batch_matmul` whose operands were strided copies, such as the transposed, GQA-broadcast
 * and scaled keys of an attention over a KV cache; targets/c/fold.py renders the call).
 * Appended to model.c only when a step calls it.
 *
 * Element (t, i, p) of A is a[a_off[t] + i * a_row + p * a_col], element (t, p, j) of B is
 * b[b_off[t] + p * b_row + j * b_col]; where a scale is given (a_scale / b_scale not NULL)
 * the element is first multiplied by that one float in float32, exactly as the elementwise
 * multiply it replaces rounded it. c is [batches, m, n], contiguous. Every output is the
 * sum in double, from 0.0 in p order, of the exact products, rounded once to float: the
 * bits of q35_batch_matmul_f32 on the materialized operands.
 *
 * B is read in place where its columns are contiguous (b_col 1), else transposed once by
 * q35_copy_strided into `tile` (k x n floats) and reused by every batch that reads the same
 * B (consecutive batches with equal b_off: the heads of a GQA group share their key and
 * value heads), with B's scale applied once there. The rows of all the batches that share
 * B go through q35_bmm_block Q35_BMM_ROWS at a time (a GQA group's query heads, a
 * prefill's queries), each element of B widened once for all of them; B read in place
 * with a scale goes row by row (q35_bmm_row). The scales apply to each element, in float,
 * before the widening. */
Q35_FN void q35_bmm_row(float *ci, const float *ai, int64_t a_col, const float *a_scale,
                     const float *bt, int64_t bt_row, const float *b_scale, int64_t k,
                     int64_t n)
{
    const int64_t nfull = n / Q35_BMM_TILE * Q35_BMM_TILE;
    const float sa = a_scale != NULL ? *a_scale : 1.0f, sb = b_scale != NULL ? *b_scale : 1.0f;
    int64_t j, p;
    int l;
    for (j = 0; j < nfull; j += Q35_BMM_TILE) {
        double acc[Q35_BMM_TILE];
        for (l = 0; l < Q35_BMM_TILE; l++)
            acc[l] = 0.0;
        for (p = 0; p < k; p++) {
            const float x = ai[p * a_col];
            const double av = a_scale != NULL ? (double)(x * sa) : (double)x;
            const float *bp = bt + p * bt_row + j;
            if (b_scale != NULL)
                for (l = 0; l < Q35_BMM_TILE; l++)
                    acc[l] += av * (double)(bp[l] * sb);
            else
                for (l = 0; l < Q35_BMM_TILE; l++)
                    acc[l] += av * (double)bp[l];
        }
        for (l = 0; l < Q35_BMM_TILE; l++)
            ci[j + l] = (float)acc[l];
    }
    for (j = nfull; j < n; j++) {
        double s = 0.0;
        for (p = 0; p < k; p++) {
            const float x = ai[p * a_col], y = bt[p * bt_row + j];
            s += (double)(a_scale != NULL ? x * sa : x) * (double)(b_scale != NULL ? y * sb : y);
        }
        ci[j] = (float)s;
    }
}

/* Q35_BMM_ROWS rows of A (of any batches that share B) against Q35_BMM_COLS columns of B
 * (from bt) at once, into c[r][0 .. Q35_BMM_COLS): each element of B is widened once for
 * all the rows, and the rows x columns sums are independent chains held in registers (GCC
 * / clang vectors of 8 doubles: zmm registers with AVX-512, pairs of ymm with AVX2). A
 * float x float product is exact in double, so each sum is q35_bmm_row's, bit for bit.
 * bt holds B's elements scaled already (or unscaled); the rows' scale (sa, if use_sa)
 * applies to each element of A. */
#define Q35_BMM_ROWS 4
#define Q35_BMM_COLS 16
typedef double q35_v8d __attribute__((vector_size(64)));
typedef float q35_v8f __attribute__((vector_size(32)));
static inline __attribute__((always_inline)) void
q35_bmm_block(float *const *c, const float *const *a, int nr, int64_t a_col, float sa,
              int use_sa, const float *bt, int64_t bt_row, int64_t k)
{
    q35_v8d acc[Q35_BMM_ROWS][2];
    int64_t p;
    int r, h, l;
    for (r = 0; r < nr; r++)
        acc[r][0] = acc[r][1] = (q35_v8d){0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0};
    for (p = 0; p < k; p++) {
        q35_v8f lo, hi;
        q35_v8d b0, b1;
        memcpy(&lo, bt + p * bt_row, sizeof lo);
        memcpy(&hi, bt + p * bt_row + 8, sizeof hi);
        b0 = __builtin_convertvector(lo, q35_v8d);
        b1 = __builtin_convertvector(hi, q35_v8d);
        for (r = 0; r < nr; r++) {
            const float x = a[r][p * a_col];
            const double av = use_sa ? (double)(x * sa) : (double)x;
            acc[r][0] += av * b0;
            acc[r][1] += av * b1;
        }
    }
    for (r = 0; r < nr; r++)
        for (h = 0; h < 2; h++)
            for (l = 0; l < 8; l++)
                c[r][8 * h + l] = (float)acc[r][h][l];
}

#ifdef Q35_X86
/* tile[p * n + j] = src[p + j * ld] for p, j < 8 (times *scale, in float, if scale):
 * an 8 x 8 block transposed in registers. */
Q35_AVX2 static void q35_bmm_transpose8(float *tile, int64_t n, const float *src, int64_t ld,
                                        const float *scale)
{
    __m256 r[8], t[8], u[8];
    int i;
    for (i = 0; i < 8; i++)
        r[i] = _mm256_loadu_ps(src + i * ld);
    for (i = 0; i < 8; i += 2) {
        t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
    }
    for (i = 0; i < 8; i += 4) {
        u[i] = _mm256_shuffle_ps(t[i], t[i + 2], 0x44);
        u[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], 0xee);
        u[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0x44);
        u[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0xee);
    }
    for (i = 0; i < 4; i++) {
        r[i] = _mm256_permute2f128_ps(u[i], u[i + 4], 0x20);
        r[i + 4] = _mm256_permute2f128_ps(u[i], u[i + 4], 0x31);
    }
    if (scale != NULL)
        for (i = 0; i < 8; i++)
            r[i] = _mm256_mul_ps(r[i], _mm256_set1_ps(*scale));
    for (i = 0; i < 8; i++)
        _mm256_storeu_ps(tile + i * n, r[i]);
}
#endif

/* tile[p * n + j] = src[p * row + j * col] (times *scale, in float, if scale) for p < k,
 * j < n: B transposed (and scaled) once for the batches that share it. */
static void q35_bmm_transpose(float *tile, const float *src, int64_t row, int64_t col,
                              const float *scale, int64_t k, int64_t n)
{
    const float sb = scale != NULL ? *scale : 1.0f;
    int64_t j0 = 0, p0 = 0, j, p;
#ifdef Q35_X86
    if (row == 1 && q35_isa() >= Q35_ISA_AVX2) { /* rows of src contiguous: 8 x 8 blocks */
        for (j0 = 0; j0 + 8 <= n; j0 += 8)
            for (p0 = 0; p0 + 8 <= k; p0 += 8)
                q35_bmm_transpose8(tile + p0 * n + j0, n, src + p0 + j0 * col, col, scale);
        p0 = k / 8 * 8; /* left: the rows p >= p0 of every column, the columns j >= j0 */
        for (p = p0; p < k; p++)
            for (j = 0; j < j0; j++)
                tile[p * n + j] = scale != NULL ? src[p + j * col] * sb : src[p + j * col];
    }
#endif
    for (p = 0; p < k; p++)
        for (j = j0; j < n; j++)
            tile[p * n + j] = scale != NULL ? src[p * row + j * col] * sb : src[p * row + j * col];
}

Q35_FN void q35_batch_matmul_strided_f32(float *c, const float *a, const float *b,
                                         int64_t batches, const int64_t *a_off, int64_t a_row,
                                         int64_t a_col, const float *a_scale,
                                         const int64_t *b_off, int64_t b_row, int64_t b_col,
                                         const float *b_scale, int64_t m, int64_t k, int64_t n,
                                         float *tile)
{
    const int64_t nfull = n / Q35_BMM_COLS * Q35_BMM_COLS;
    const float sa = a_scale != NULL ? *a_scale : 1.0f;
    int64_t t0 = 0;
    while (t0 < batches) {
        int64_t t1 = t0 + 1, t, i, rows, r0, j;
        const float *bt = b + b_off[t0];
        const float *bscale = b_scale;
        int64_t bt_row = b_row;
        while (t1 < batches && b_off[t1] == b_off[t0])
            t1++;
        if (b_col != 1) {
            /* B transposed once for the batches that share it, its scale applied (in
             * float, as the multiply it replaces rounded it) */
            q35_bmm_transpose(tile, b + b_off[t0], b_row, b_col, b_scale, k, n);
            bt = tile;
            bt_row = n;
            bscale = NULL;
        }
        rows = (t1 - t0) * m;
        if (bscale != NULL) { /* B read in place and scaled on the fly: row by row */
            for (t = t0; t < t1; t++)
                for (i = 0; i < m; i++)
                    q35_bmm_row(c + (t * m + i) * n, a + a_off[t] + i * a_row, a_col, a_scale,
                                bt, bt_row, bscale, k, n);
            t0 = t1;
            continue;
        }
        /* columns in strips of Q35_BMM_COLS (a strip of B stays in L1 across the row
         * blocks), rows of all the batches that share B in blocks of up to Q35_BMM_ROWS
         * (the block's row count a constant of each instance) */
        for (j = 0; j < nfull; j += Q35_BMM_COLS)
            for (r0 = 0; r0 < rows; r0 += Q35_BMM_ROWS) {
                float *cr[Q35_BMM_ROWS];
                const float *ar[Q35_BMM_ROWS];
                const int nr = rows - r0 < Q35_BMM_ROWS ? (int)(rows - r0) : Q35_BMM_ROWS;
                int r;
                for (r = 0; r < nr; r++) {
                    t = t0 + (r0 + r) / m;
                    i = (r0 + r) % m;
                    ar[r] = a + a_off[t] + i * a_row;
                    cr[r] = c + (t * m + i) * n + j;
                }
                switch (nr) {
                case 1:
                    q35_bmm_block(cr, ar, 1, a_col, sa, a_scale != NULL, bt + j, bt_row, k);
                    break;
                case 2:
                    q35_bmm_block(cr, ar, 2, a_col, sa, a_scale != NULL, bt + j, bt_row, k);
                    break;
                case 3:
                    q35_bmm_block(cr, ar, 3, a_col, sa, a_scale != NULL, bt + j, bt_row, k);
                    break;
                default:
                    q35_bmm_block(cr, ar, 4, a_col, sa, a_scale != NULL, bt + j, bt_row, k);
                }
            }
        if (nfull < n) /* the last columns, one output at a time */
            for (t = t0; t < t1; t++)
                for (i = 0; i < m; i++) {
                    const float *ai = a + a_off[t] + i * a_row;
                    float *ci = c + (t * m + i) * n;
                    for (j = nfull; j < n; j++) {
                        double s = 0.0;
                        int64_t p;
                        for (p = 0; p < k; p++) {
                            const float x = ai[p * a_col];
                            s += (double)(a_scale != NULL ? x * sa : x) *
                                 (double)bt[p * bt_row + j];
                        }
                        ci[j] = (float)s;
                    }
                }
        t0 = t1;
    }
}


/* The quantized matmul kernels this build runs on this CPU (group size 32): "avx512-vbmi",
 * "avx2" or "portable" (q35_isa). */
Q35_FN const char *q35_kernel_variant(void)
{
    static const char *const names[] = {"portable", "avx2", "avx512-vbmi"};
    return names[q35_isa()];
}

/* Bytes of scratch the quantized matmuls need: group sums and de-interleaved activations
 * with the groups padded to a multiple of 16; at least the GEMMs' packed activations (and
 * on the int8 path group sums) of the rows padded to a multiple of 16 (lower.py's
 * work_bytes says the same). */
Q35_FN int64_t q35_qmatmul_work_bytes(int64_t rows, int64_t k, int64_t group, int int8)
{
    int64_t groups = ((k + group - 1) / group + 15) / 16 * 16, kp = groups * group;
    int64_t gemv = rows * (groups * 4 + kp), gemm = (rows + 15) / 16 * 16 * (kp + groups * 4);
    if (!int8) {
        gemv = rows * (kp + groups) * 4;
        gemm = (rows + 15) / 16 * 16 * kp * 4;
    }
    return gemv > gemm ? gemv : gemm;
}

/* y[m, n] = sum_k x[m, k] * w[k, n], float activations. Group size 32 and 8 rows or more:
 * the float GEMM (q35rt_gemm.c: one float32 FMA chain per output, k in order). Else the
 * SIMD GEMVs or, portably, w decoded group by group into 32 (or group-size) registers'
 * worth of floats, products summed in double. */
#define Q35_MAX_ROWS_PER_PASS 8
Q35_FN void q35_qmatmul_f32(float *y, const float *x, int64_t rows, const uint8_t *entry,
                            uint8_t *work)
{
    const q35_q3p5 t = q35_q3p5_view(entry);
    int64_t n;
    q35_qjob job;
    job.y = y;
    job.q = NULL;
    job.row_scale = NULL;
    job.x = x;
    job.rows = rows;
    job.t = t;
    job.work = work;
    if (t.group == 32 && rows >= Q35_FG_MIN_ROWS) { /* the GEMM (q35rt_gemm.c) */
        q35_qmatmul_f32_gemm(&job);
        return;
    }
#ifdef Q35_X86
    if (t.group == 32 && q35_isa() >= Q35_ISA_AVX2) {
        if (q35_isa() == Q35_ISA_AVX512 && t.groups >= 8) /* below, 16-group padding costs */
            q35_qmatmul_f32_avx512(&job);
        else
            q35_qmatmul_f32_avx2(&job);
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
        i = 0;
#ifdef Q35_X86
        if (q35_isa() == Q35_ISA_AVX512)
            i = q35_quantize_row_avx512(q + r * k, xr, s, k);
#endif
        for (; i < k; i++) {
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
#ifdef Q35_X86
    if (t.group == 32 && q35_isa() >= Q35_ISA_AVX2) {
        q35_qjob job;
        job.y = y;
        job.q = q;
        job.row_scale = row_scale;
        job.x = NULL;
        job.rows = rows;
        job.t = t;
        job.work = work;
        if (q35_isa() == Q35_ISA_AVX512)
            q35_qmatmul_i8_avx512(&job);
        else
            q35_qmatmul_i8_avx2(&job);
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
 * a_off / b_off give each batch's element offset (broadcast batches repeat offsets).
 * Every output is summed from 0.0 in k order, as the interpreter's matmul_f64; the loops
 * run over Q35_BMM_TILE outputs of a row at once (vectorized), and a float * float product
 * is exact in double, so any instruction mix gives the same bits. */
#define Q35_BMM_TILE 32
Q35_FN void q35_batch_matmul_f32(float *c, const float *a, const float *b, int64_t batches,
                                 const int64_t *a_off, const int64_t *b_off, int64_t m,
                                 int64_t k, int64_t n)
{
    const int64_t nfull = n / Q35_BMM_TILE * Q35_BMM_TILE;
    int64_t t;
    for (t = 0; t < batches; t++) {
        const float *ab = a + a_off[t], *bb = b + b_off[t];
        float *cb = c + t * m * n;
        int64_t i, j, p;
        int l;
        for (i = 0; i < m; i++) {
            const float *ai = ab + i * k;
            float *ci = cb + i * n;
            for (j = 0; j < nfull; j += Q35_BMM_TILE) {
                double acc[Q35_BMM_TILE];
                for (l = 0; l < Q35_BMM_TILE; l++)
                    acc[l] = 0.0;
                for (p = 0; p < k; p++) {
                    const double av = ai[p];
                    const float *bp = bb + p * n + j;
                    for (l = 0; l < Q35_BMM_TILE; l++)
                        acc[l] += av * (double)bp[l];
                }
                for (l = 0; l < Q35_BMM_TILE; l++)
                    ci[j + l] = (float)acc[l];
            }
            for (j = nfull; j < n; j++) {
                double s = 0.0;
                for (p = 0; p < k; p++)
                    s += (double)ai[p] * (double)bb[p * n + j];
                ci[j] = (float)s;
            }
        }
    }
}

/* dst[dst_off + sum_d i_d * dst_stride_d] = src[src_off + sum_d i_d * src_stride_d] for
 * every index i of `dims`: transposes, broadcasts, slices and concatenation.
 *
 * Unit dimensions are dropped and neighbours that step through memory as one are merged
 * (a slice of whole rows is one run), so the innermost loop is as long as it can be; it is
 * a memcpy where both sides are contiguous, a fill where the source does not move (a
 * broadcast), else an element loop. A 2-d transpose (source contiguous along the outer
 * of the last two axes, destination along the inner) goes by 16 x 16 tiles. */
#define Q35_COPY_TILE 16
Q35_FN void q35_copy_strided(void *dst, const void *src, size_t elem, int rank,
                             const int64_t *dims, int64_t dst_off, const int64_t *dst_stride,
                             int64_t src_off, const int64_t *src_stride)
{
    int64_t dm[8], ds[8], ss[8], idx[8], inner, outer = 1, e, j;
    int d, r = 0, tile;
    char *const db = (char *)dst;
    const char *const sb = (const char *)src;
    const int64_t es = (int64_t)elem;
    for (d = 0; d < rank; d++) {
        if (dims[d] == 0)
            return;
        if (dims[d] == 1)
            continue;
        if (r > 0 && ds[r - 1] == dims[d] * dst_stride[d] &&
            ss[r - 1] == dims[d] * src_stride[d]) {
            dm[r - 1] *= dims[d];
            ds[r - 1] = dst_stride[d];
            ss[r - 1] = src_stride[d];
        } else {
            dm[r] = dims[d];
            ds[r] = dst_stride[d];
            ss[r] = src_stride[d];
            r++;
        }
    }
    if (r == 0) {
        memcpy(db + dst_off * es, sb + src_off * es, elem);
        return;
    }
    /* the transposed pair: handled by tiles over the last two axes */
    tile = r >= 2 && ds[r - 1] == 1 && ss[r - 2] == 1 && ss[r - 1] != 1 && dm[r - 1] >= 8 &&
           dm[r - 2] >= 8;
    inner = dm[r - 1];
    for (d = 0; d < r - 1 - tile; d++)
        outer *= dm[d];
    for (d = 0; d < 8; d++)
        idx[d] = 0;
    for (e = 0; e < outer; e++) {
        int64_t so = src_off, doff = dst_off;
        for (d = 0; d < r - 1 - tile; d++) {
            so += idx[d] * ss[d];
            doff += idx[d] * ds[d];
        }
        if (tile) {
            /* dst[a * ds_a + b] = src[a + b * ss_b] for a < dm[r-2], b < dm[r-1] */
            const int64_t na = dm[r - 2], nb = dm[r - 1], dsa = ds[r - 2], ssb = ss[r - 1];
            int64_t a0, b0, a, b;
            for (a0 = 0; a0 < na; a0 += Q35_COPY_TILE)
                for (b0 = 0; b0 < nb; b0 += Q35_COPY_TILE) {
                    const int64_t ae = a0 + Q35_COPY_TILE < na ? a0 + Q35_COPY_TILE : na;
                    const int64_t be = b0 + Q35_COPY_TILE < nb ? b0 + Q35_COPY_TILE : nb;
                    if (elem == 4) {
                        float *o = (float *)dst + doff;
                        const float *i = (const float *)src + so;
                        for (a = a0; a < ae; a++)
                            for (b = b0; b < be; b++)
                                o[a * dsa + b] = i[a + b * ssb];
                    } else {
                        for (a = a0; a < ae; a++)
                            for (b = b0; b < be; b++)
                                memcpy(db + (doff + a * dsa + b) * es,
                                       sb + (so + a + b * ssb) * es, elem);
                    }
                }
        } else if (ds[r - 1] == 1 && ss[r - 1] == 1) {
            memmove(db + doff * es, sb + so * es, (size_t)(inner * es));
        } else if (elem == 4) {
            float *o = (float *)dst + doff;
            const float *i = (const float *)src + so;
            const int64_t dstep = ds[r - 1], sstep = ss[r - 1];
            if (sstep == 0 && dstep == 1) {
                const float v = i[0];
                for (j = 0; j < inner; j++)
                    o[j] = v;
            } else {
                for (j = 0; j < inner; j++)
                    o[j * dstep] = i[j * sstep];
            }
        } else {
            for (j = 0; j < inner; j++)
                memcpy(db + (doff + j * ds[r - 1]) * es, sb + (so + j * ss[r - 1]) * es, elem);
        }
        for (d = r - 2 - tile; d >= 0; d--) {
            if (++idx[d] < dm[d])
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

/* exp(d) of libm, but 0 without the call below -746, where exp(d) is +0 whatever the
 * libm (e^-745.14 is half the least subnormal double): the masked keys of an attention
 * (d about -3.4e38) took libm's slow underflow path, most of a prefill's softmax. */
static double q35_exp_or_zero(double d)
{
    return d < -746.0 ? 0.0 : exp(d);
}

/* Softmax over the middle axis of [outer, len, inner], in double. Each exp is computed
 * once, into a scratch row on the stack, for rows of up to Q35_SOFTMAX_ROW elements (an
 * attention row over that many keys); longer rows compute it twice (nothing is allocated
 * by a run). */
#define Q35_SOFTMAX_ROW 4096
Q35_FN void q35_softmax_f32(float *y, const float *x, int64_t outer, int64_t len, int64_t inner)
{
    double e[Q35_SOFTMAX_ROW];
    int64_t o, i, l;
    for (o = 0; o < outer; o++)
        for (i = 0; i < inner; i++) {
            const float *xs = x + o * len * inner + i;
            float *ys = y + o * len * inner + i;
            double m = xs[0], s = 0.0;
            for (l = 1; l < len; l++)
                m = xs[l * inner] > m ? xs[l * inner] : m;
            if (len <= Q35_SOFTMAX_ROW) {
                for (l = 0; l < len; l++) {
                    e[l] = q35_exp_or_zero((double)xs[l * inner] - m);
                    s += e[l];
                }
                for (l = 0; l < len; l++)
                    ys[l * inner] = (float)(e[l] / s);
                continue;
            }
            for (l = 0; l < len; l++)
                s += q35_exp_or_zero((double)xs[l * inner] - m);
            for (l = 0; l < len; l++)
                ys[l * inner] = (float)(q35_exp_or_zero((double)xs[l * inner] - m) / s);
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

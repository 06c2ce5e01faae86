/* ---- q35rt_cnn.c: convolution, pooling and normalization kernels of ONNX CNNs ----------
 *
 * Appended to model.c only when a step uses one of them (targets/c/onnx_cnn.py). Tensors
 * are dense NC(D)(H)W float32; 1-D and 2-D ops are given as 3-D ones with leading spatial
 * sizes of 1, so each kernel has one code path. Static parameters come in one int64 array
 * per call (the C printer writes it as a static table):
 *
 *     spatial[0..20] = id ih iw  od oh ow  kd kh kw  sd sh sw  pd ph pw  dd dh dw
 *
 * (input, output and kernel sizes, strides, leading pads, dilations). Numerics follow
 * onnx's reference implementation (q35c's interpreter) within float rounding: sums of
 * products accumulate in float32 in a fixed order (the reference uses numpy's float32
 * matmul, whose order differs), the normalizations compute their statistics in double.
 */

#ifdef _OPENMP
#define Q35_CNN_PARALLEL_FOR(work) \
    Q35_PRAGMA(omp parallel for schedule(dynamic, 1) if ((work) >= (1 << 20)))
#else
#define Q35_CNN_PARALLEL_FOR(work)
#endif

#define Q35_CONV_OCB 8 /* output channels computed together (one input read for all) */
#define Q35_CONV_TILE 4096 /* output elements per channel and job (rows of whole width) */

/* First and one-past-last output index o in [0, out) with 0 <= o*s - p + k*d < in. */
static void q35_valid_range(int64_t in, int64_t out, int64_t s, int64_t p, int64_t kd,
                            int64_t *lo, int64_t *hi)
{
    int64_t off = kd - p; /* input index of o = 0 */
    int64_t a = off >= 0 ? 0 : (-off + s - 1) / s;
    int64_t b = in - 1 - off < 0 ? 0 : (in - 1 - off) / s + 1;
    *lo = a;
    *hi = b < out ? b : out;
    if (*hi < *lo)
        *hi = *lo;
}

/* One job of q35_conv_f32: output channels m0 .. m0+mc-1 of batch bn, output rows
 * [r0, r1) (a row is one (od, oh) pair of whole width ow). */
static void q35_conv_job(float *y, const float *x, const float *w, const float *b,
                         const int64_t *q, int64_t bn, int64_t g, int64_t m0, int64_t mc,
                         int64_t r0, int64_t r1)
{
    const int64_t c = q[0], m = q[1], group = q[2], *sp = q + 3;
    const int64_t id = sp[0], ih = sp[1], iw = sp[2], oh = sp[4], ow = sp[5];
    const int64_t kd = sp[6], kh = sp[7], kw = sp[8], sd = sp[9], sh = sp[10], sw = sp[11];
    const int64_t pd = sp[12], ph = sp[13], pw = sp[14], dd = sp[15], dh = sp[16], dw = sp[17];
    const int64_t cg = c / group, plane = sp[3] * oh * ow, ksize = kd * kh * kw;
    const int64_t inplane = id * ih * iw;
    float *yb = y + (bn * m + m0) * plane;
    int64_t j, r, ic, a, e, f;
    for (j = 0; j < mc; j++)
        for (r = r0 * ow; r < r1 * ow; r++)
            yb[j * plane + r] = b ? b[m0 + j] : 0.0f;
    for (ic = 0; ic < cg; ic++) {
        const float *xc = x + (bn * c + g * cg + ic) * inplane;
        for (a = 0; a < kd; a++)
            for (e = 0; e < kh; e++)
                for (f = 0; f < kw; f++) {
                    float wv[Q35_CONV_OCB];
                    int64_t lo, hi;
                    for (j = 0; j < mc; j++)
                        wv[j] = w[((m0 + j) * cg + ic) * ksize + (a * kh + e) * kw + f];
                    q35_valid_range(iw, ow, sw, pw, f * dw, &lo, &hi);
                    for (r = r0; r < r1; r++) {
                        const int64_t zd = r / oh, zh = r % oh;
                        const int64_t xd = zd * sd - pd + a * dd, xh = zh * sh - ph + e * dh;
                        const float *xr;
                        float *yr;
                        int64_t o;
                        if (xd < 0 || xd >= id || xh < 0 || xh >= ih)
                            continue;
                        xr = xc + (xd * ih + xh) * iw + f * dw - pw;
                        yr = yb + r * ow;
                        if (mc == Q35_CONV_OCB) {
                            float *restrict y0 = yr, *restrict y1 = yr + plane,
                                  *restrict y2 = yr + 2 * plane, *restrict y3 = yr + 3 * plane,
                                  *restrict y4 = yr + 4 * plane, *restrict y5 = yr + 5 * plane,
                                  *restrict y6 = yr + 6 * plane, *restrict y7 = yr + 7 * plane;
                            if (sw == 1) {
                                for (o = lo; o < hi; o++) {
                                    const float v = xr[o];
                                    y0[o] += wv[0] * v; y1[o] += wv[1] * v;
                                    y2[o] += wv[2] * v; y3[o] += wv[3] * v;
                                    y4[o] += wv[4] * v; y5[o] += wv[5] * v;
                                    y6[o] += wv[6] * v; y7[o] += wv[7] * v;
                                }
                            } else {
                                for (o = lo; o < hi; o++) {
                                    const float v = xr[o * sw];
                                    y0[o] += wv[0] * v; y1[o] += wv[1] * v;
                                    y2[o] += wv[2] * v; y3[o] += wv[3] * v;
                                    y4[o] += wv[4] * v; y5[o] += wv[5] * v;
                                    y6[o] += wv[6] * v; y7[o] += wv[7] * v;
                                }
                            }
                        } else {
                            for (j = 0; j < mc; j++) {
                                float *restrict yj = yr + j * plane;
                                const float wj = wv[j];
                                for (o = lo; o < hi; o++)
                                    yj[o] += wj * xr[o * sw];
                            }
                        }
                    }
                }
    }
}

/* ONNX Conv: y[n, m, o...] = b[m] + sum over the group's input channels and the kernel of
 * w[m, ic, k...] * x[n, g*C/G + ic, o*s - p + k*d] (zero outside x). q = {n, c, m, group,
 * spatial[18]}. Jobs of up to Q35_CONV_OCB output channels and Q35_CONV_TILE outputs per
 * channel run in parallel; each reads its input rows once for all its channels. */
Q35_FN void q35_conv_f32(float *y, const float *x, const float *w, const float *b,
                         const int64_t *q)
{
    const int64_t n = q[0], m = q[2], group = q[3], *sp = q + 4;
    const int64_t rows = sp[3] * sp[4], ow = sp[5], mg = m / group;
    const int64_t blocks = (mg + Q35_CONV_OCB - 1) / Q35_CONV_OCB;
    const int64_t per = ow >= Q35_CONV_TILE ? 1 : Q35_CONV_TILE / ow;
    const int64_t tiles = (rows + per - 1) / per;
    const int64_t jobs = n * group * blocks * tiles;
    const int64_t work = m * rows * ow * (q[1] / group) * sp[6] * sp[7] * sp[8];
    int64_t job;
    (void)work;
    Q35_CNN_PARALLEL_FOR(work)
    for (job = 0; job < jobs; job++) {
        const int64_t t = job % tiles, blk = job / tiles % blocks, g = job / tiles / blocks % group;
        const int64_t bn = job / tiles / blocks / group;
        const int64_t m0 = g * mg + blk * Q35_CONV_OCB;
        const int64_t mc = mg - blk * Q35_CONV_OCB < Q35_CONV_OCB ? mg - blk * Q35_CONV_OCB
                                                                 : Q35_CONV_OCB;
        const int64_t r1 = (t + 1) * per < rows ? (t + 1) * per : rows;
        q35_conv_job(y, x, w, b, q + 1, bn, g, m0, mc, t * per, r1);
    }
}

/* ONNX ConvTranspose: y[n, m, i*s - p + k*d] += x[n, c, i] * w[c, m % (M/G), k] over the
 * group's input channels c, plus b[m]; output positions outside y are dropped. q = {n, c,
 * m, group, spatial[18]} with spatial's "input" the x sizes and "output" the y sizes.
 * Each output channel is one job (it scatters only into its own plane). */
Q35_FN void q35_conv_transpose_f32(float *y, const float *x, const float *w, const float *b,
                                   const int64_t *q)
{
    const int64_t n = q[0], c = q[1], m = q[2], group = q[3], *sp = q + 4;
    const int64_t id = sp[0], ih = sp[1], iw = sp[2], od = sp[3], oh = sp[4], ow = sp[5];
    const int64_t kd = sp[6], kh = sp[7], kw = sp[8], sd = sp[9], sh = sp[10], sw = sp[11];
    const int64_t pd = sp[12], ph = sp[13], pw = sp[14], dd = sp[15], dh = sp[16], dw = sp[17];
    const int64_t cg = c / group, mg = m / group, plane = od * oh * ow, ksize = kd * kh * kw;
    const int64_t inplane = id * ih * iw;
    int64_t job;
    Q35_CNN_PARALLEL_FOR(n * m * inplane * cg * ksize)
    for (job = 0; job < n * m; job++) {
        const int64_t bn = job / m, mm = job % m, g = mm / mg;
        float *yp = y + job * plane;
        int64_t i, ic, a, e, f, zd, zh, zw;
        for (i = 0; i < plane; i++)
            yp[i] = b ? b[mm] : 0.0f;
        for (ic = 0; ic < cg; ic++) {
            const float *xc = x + (bn * c + g * cg + ic) * inplane;
            const float *wc = w + ((g * cg + ic) * mg + mm % mg) * ksize;
            for (a = 0; a < kd; a++)
                for (e = 0; e < kh; e++)
                    for (f = 0; f < kw; f++) {
                        const float wv = wc[(a * kh + e) * kw + f];
                        for (zd = 0; zd < id; zd++) {
                            const int64_t yd = zd * sd - pd + a * dd;
                            if (yd < 0 || yd >= od)
                                continue;
                            for (zh = 0; zh < ih; zh++) {
                                const int64_t yh = zh * sh - ph + e * dh;
                                if (yh < 0 || yh >= oh)
                                    continue;
                                for (zw = 0; zw < iw; zw++) {
                                    const int64_t yw = zw * sw - pw + f * dw;
                                    if (yw >= 0 && yw < ow)
                                        yp[(yd * oh + yh) * ow + yw] +=
                                            wv * xc[(zd * ih + zh) * iw + zw];
                                }
                            }
                        }
                    }
        }
    }
}

enum { Q35_POOL_MAX = 0, Q35_POOL_AVG = 1, Q35_POOL_LP = 2 };

/* Pooling of `planes` (N*C) planes: the max, average or Lp norm of each window
 * x[o*s - p + k*d] over the kernel. Windows only ever read x itself; positions in the
 * padding count towards an average (and an Lp norm's zero terms) only when
 * count_include_pad is set, and then only up to the end padding `end[3]` (the ceil_mode
 * overhang never counts). An empty window gives 0 (average) or -inf (max). For max,
 * `indices` (if not NULL) gets the flat index in x of each window's first maximum, the
 * spatial dims row-major (storage_order 0) or column-major (1). */
Q35_FN void q35_pool_f32(float *y, int64_t *indices, const float *x, int64_t planes,
                         const int64_t *sp, const int64_t *end, int mode,
                         int count_include_pad, double p, int storage_order)
{
    const int64_t id = sp[0], ih = sp[1], iw = sp[2], od = sp[3], oh = sp[4], ow = sp[5];
    const int64_t kd = sp[6], kh = sp[7], kw = sp[8], sd = sp[9], sh = sp[10], sw = sp[11];
    const int64_t pd = sp[12], ph = sp[13], pw = sp[14], dd = sp[15], dh = sp[16], dw = sp[17];
    const int64_t inplane = id * ih * iw, plane = od * oh * ow;
    int64_t pl;
    Q35_CNN_PARALLEL_FOR(planes * plane * kd * kh * kw)
    for (pl = 0; pl < planes; pl++) {
        const float *xp = x + pl * inplane;
        float *yp = y + pl * plane;
        int64_t zd, zh, zw, a, e, f;
        for (zd = 0; zd < od; zd++)
            for (zh = 0; zh < oh; zh++)
                for (zw = 0; zw < ow; zw++) {
                    double acc = 0.0;
                    float best = -INFINITY;
                    int64_t count = 0, where = -1;
                    for (a = 0; a < kd; a++) {
                        const int64_t xd = zd * sd - pd + a * dd;
                        if (xd >= id + end[0] || xd < -pd)
                            continue;
                        for (e = 0; e < kh; e++) {
                            const int64_t xh = zh * sh - ph + e * dh;
                            if (xh >= ih + end[1] || xh < -ph)
                                continue;
                            for (f = 0; f < kw; f++) {
                                const int64_t xw = zw * sw - pw + f * dw;
                                const int inside = xd >= 0 && xd < id && xh >= 0 && xh < ih &&
                                                   xw >= 0 && xw < iw;
                                float v;
                                if (xw >= iw + end[2] || xw < -pw)
                                    continue;
                                if (!inside) {
                                    count += count_include_pad;
                                    continue;
                                }
                                v = xp[(xd * ih + xh) * iw + xw];
                                count++;
                                if (mode == Q35_POOL_MAX) {
                                    if (v > best || v != v || where < 0) {
                                        best = v;
                                        where = storage_order == 0
                                                    ? (xd * ih + xh) * iw + xw
                                                    : xd + xh * id + xw * id * ih;
                                    }
                                } else if (mode == Q35_POOL_AVG)
                                    acc += v;
                                else
                                    acc += pow(fabs((double)v), p);
                            }
                        }
                    }
                    if (indices)
                        indices[pl * plane + (zd * oh + zh) * ow + zw] =
                            where < 0 ? -1 : pl * inplane + where;
                    if (mode == Q35_POOL_MAX)
                        yp[(zd * oh + zh) * ow + zw] = best;
                    else if (mode == Q35_POOL_AVG)
                        yp[(zd * oh + zh) * ow + zw] = count ? (float)(acc / (double)count) : 0.0f;
                    else
                        yp[(zd * oh + zh) * ow + zw] = (float)pow(acc, 1.0 / p);
                }
    }
}

/* MaxPool of uint8 or int8 planes: q35_pool_f32's max windows and indices (the same
 * geometry), on integer values, which compare exactly; an empty window gives 0 (index -1). */
#define Q35_MAXPOOL_INT(NAME, T)                                                            \
    Q35_FN void NAME(T *y, int64_t *indices, const T *x, int64_t planes, const int64_t *sp,  \
                     const int64_t *end, int storage_order)                                 \
    {                                                                                       \
        const int64_t id = sp[0], ih = sp[1], iw = sp[2], od = sp[3], oh = sp[4];           \
        const int64_t ow = sp[5], kd = sp[6], kh = sp[7], kw = sp[8], sd = sp[9];           \
        const int64_t sh = sp[10], sw = sp[11], pd = sp[12], ph = sp[13], pw = sp[14];      \
        const int64_t dd = sp[15], dh = sp[16], dw = sp[17];                                \
        const int64_t inplane = id * ih * iw, plane = od * oh * ow;                         \
        int64_t pl;                                                                         \
        Q35_CNN_PARALLEL_FOR(planes * plane * kd * kh * kw)                                 \
        for (pl = 0; pl < planes; pl++) {                                                   \
            const T *xp = x + pl * inplane;                                                 \
            int64_t zd, zh, zw, a, e, f;                                                    \
            for (zd = 0; zd < od; zd++)                                                     \
                for (zh = 0; zh < oh; zh++)                                                 \
                    for (zw = 0; zw < ow; zw++) {                                           \
                        const int64_t at = pl * plane + (zd * oh + zh) * ow + zw;           \
                        T best = 0;                                                         \
                        int64_t where = -1;                                                 \
                        for (a = 0; a < kd; a++) {                                          \
                            const int64_t xd = zd * sd - pd + a * dd;                       \
                            if (xd < 0 || xd >= id || xd >= id + end[0])                    \
                                continue;                                                   \
                            for (e = 0; e < kh; e++) {                                      \
                                const int64_t xh = zh * sh - ph + e * dh;                   \
                                if (xh < 0 || xh >= ih || xh >= ih + end[1])                \
                                    continue;                                               \
                                for (f = 0; f < kw; f++) {                                  \
                                    const int64_t xw = zw * sw - pw + f * dw;               \
                                    T v;                                                    \
                                    if (xw < 0 || xw >= iw || xw >= iw + end[2])            \
                                        continue;                                           \
                                    v = xp[(xd * ih + xh) * iw + xw];                       \
                                    if (where < 0 || v > best) {                            \
                                        best = v;                                           \
                                        where = storage_order == 0                          \
                                                    ? (xd * ih + xh) * iw + xw              \
                                                    : xd + xh * id + xw * id * ih;          \
                                    }                                                       \
                                }                                                           \
                            }                                                               \
                        }                                                                   \
                        y[at] = best;                                                       \
                        if (indices)                                                        \
                            indices[at] = where < 0 ? -1 : pl * inplane + where;            \
                    }                                                                       \
        }                                                                                   \
    }

Q35_MAXPOOL_INT(q35_maxpool_u8, uint8_t)
Q35_MAXPOOL_INT(q35_maxpool_i8, int8_t)

/* BatchNormalization in inference mode, per channel c of x[n, c, inner]:
 * y = scale * (x - mean) / sqrt(var + eps) + bias, each step rounded in float32 in the
 * order of the reference's numpy expression. */
Q35_FN void q35_batch_norm_f32(float *y, const float *x, const float *scale, const float *bias,
                               const float *mean, const float *var, int64_t n, int64_t c,
                               int64_t inner, float eps)
{
    int64_t job;
    Q35_CNN_PARALLEL_FOR(n * c * inner * 4)
    for (job = 0; job < n * c; job++) {
        const int64_t ch = job % c;
        const float den = sqrtf(var[ch] + eps), s = scale[ch], t = bias[ch], mu = mean[ch];
        int64_t i;
        for (i = 0; i < inner; i++)
            y[job * inner + i] = s * (x[job * inner + i] - mu) / den + t;
    }
}

/* BatchNormalization in training mode: per channel the batch mean and (biased) variance
 * over n and inner (in double, rounded to float32) normalize x as in inference mode, and
 * the running statistics become mean * momentum + batch * (1 - momentum) (float32).
 * run_mean / run_var may be NULL when those outputs are not wanted. */
Q35_FN void q35_batch_norm_train_f32(float *y, float *run_mean, float *run_var,
                                     const float *x, const float *scale, const float *bias,
                                     const float *mean, const float *var, int64_t n,
                                     int64_t c, int64_t inner, float eps, float momentum)
{
    const float keep = (float)(1.0 - (double)momentum);
    int64_t ch;
    Q35_CNN_PARALLEL_FOR(n * c * inner * 4)
    for (ch = 0; ch < c; ch++) {
        double sum = 0.0, sq = 0.0;
        float m, v, den;
        int64_t b, i;
        for (b = 0; b < n; b++)
            for (i = 0; i < inner; i++)
                sum += x[(b * c + ch) * inner + i];
        sum /= (double)(n * inner);
        for (b = 0; b < n; b++)
            for (i = 0; i < inner; i++) {
                const double d = (double)x[(b * c + ch) * inner + i] - sum;
                sq += d * d;
            }
        m = (float)sum;
        v = (float)(sq / (double)(n * inner));
        den = sqrtf(v + eps);
        for (b = 0; b < n; b++)
            for (i = 0; i < inner; i++) {
                const int64_t at = (b * c + ch) * inner + i;
                y[at] = scale[ch] * (x[at] - m) / den + bias[ch];
            }
        if (run_mean)
            run_mean[ch] = mean[ch] * momentum + m * keep;
        if (run_var)
            run_var[ch] = var[ch] * momentum + v * keep;
    }
}

/* InstanceNormalization: per (n, c) plane of `inner` elements, the mean and (biased)
 * variance in double, then y = (x - mean) / sqrt(var + eps) * scale[c] + bias[c]. */
Q35_FN void q35_instance_norm_f32(float *y, const float *x, const float *scale,
                                  const float *bias, int64_t n, int64_t c, int64_t inner,
                                  float eps)
{
    int64_t job;
    Q35_CNN_PARALLEL_FOR(n * c * inner * 4)
    for (job = 0; job < n * c; job++) {
        const int64_t ch = job % c;
        const float *xp = x + job * inner;
        double mean = 0.0, var = 0.0;
        float fmean, den;
        int64_t i;
        for (i = 0; i < inner; i++)
            mean += xp[i];
        mean /= (double)inner;
        for (i = 0; i < inner; i++)
            var += ((double)xp[i] - mean) * ((double)xp[i] - mean);
        var /= (double)inner;
        fmean = (float)mean;
        den = sqrtf((float)var + eps);
        for (i = 0; i < inner; i++)
            y[job * inner + i] = (xp[i] - fmean) / den * scale[ch] + bias[ch];
    }
}

/* LRN across channels: y = x / (bias + alpha / size * sum of x^2 over channels
 * [c - floor((size-1)/2), c + ceil((size-1)/2)]) ^ beta, the sum in double. */
Q35_FN void q35_lrn_f32(float *y, const float *x, int64_t n, int64_t c, int64_t inner,
                        int64_t size, float alpha, float beta, float bias)
{
    const int64_t before = (size - 1) / 2, after = size - 1 - before;
    int64_t job;
    Q35_CNN_PARALLEL_FOR(n * c * inner * size)
    for (job = 0; job < n * c; job++) {
        const int64_t bn = job / c, ch = job % c;
        const int64_t c0 = ch - before < 0 ? 0 : ch - before;
        const int64_t c1 = ch + after + 1 > c ? c : ch + after + 1;
        int64_t i, k;
        for (i = 0; i < inner; i++) {
            double s = 0.0;
            for (k = c0; k < c1; k++) {
                const double v = x[(bn * c + k) * inner + i];
                s += v * v;
            }
            y[job * inner + i] = (float)((double)x[job * inner + i] /
                pow((double)bias + (double)alpha / (double)size * s, (double)beta));
        }
    }
}

enum { Q35_PAD_CONSTANT = 0, Q35_PAD_REFLECT = 1, Q35_PAD_EDGE = 2, Q35_PAD_WRAP = 3 };

/* The source index of position i (relative to the data's start) of a padded dimension of
 * n elements, or -1 where the padding value goes. */
static int64_t q35_pad_index(int64_t i, int64_t n, int mode)
{
    int64_t period;
    if (i >= 0 && i < n)
        return i;
    switch (mode) {
    case Q35_PAD_EDGE:
        return i < 0 ? 0 : n - 1;
    case Q35_PAD_WRAP:
        return (i % n + n) % n;
    case Q35_PAD_REFLECT:
        if (n == 1)
            return 0;
        period = 2 * (n - 1);
        i = (i % period + period) % period;
        return i < n ? i : period - i;
    default:
        return -1;
    }
}

/* ONNX Pad with run-time pads: pads[k] and pads[naxes + k] elements before and after axis
 * axes[k] (int64, or int32 if axes_i32; every axis in order if axes is NULL; negative
 * axes count from the end; negative pads crop). Returns -1 when they do not turn xdims
 * into ydims (the static result shape). `value` is one element of x's type. */
Q35_FN int q35_pad(void *y, const void *x, size_t elem, int rank, const int64_t *xdims,
                   const int64_t *ydims, const int64_t *pads, int naxes, const void *axes,
                   int axes_i32, int mode, const void *value)
{
    int64_t begin[8] = {0}, idx[8] = {0}, xst[8], total = 1, i;
    int seen[8] = {0}, d, k;
    if (rank > 8)
        return -1;
    for (k = 0; k < naxes; k++) {
        int64_t a = !axes ? k : axes_i32 ? ((const int32_t *)axes)[k] : ((const int64_t *)axes)[k];
        if (a < 0)
            a += rank;
        if (a < 0 || a >= rank || seen[a] || xdims[a] + pads[k] + pads[naxes + k] != ydims[a])
            return -1;
        if (mode != Q35_PAD_CONSTANT && xdims[a] == 0 && ydims[a] > 0)
            return -1;
        seen[a] = 1;
        begin[a] = pads[k];
    }
    for (d = rank - 1; d >= 0; d--) {
        if (!seen[d] && xdims[d] != ydims[d])
            return -1;
        xst[d] = d == rank - 1 ? 1 : xst[d + 1] * xdims[d + 1];
        total *= ydims[d];
    }
    for (i = 0; i < total; i++) {
        int64_t off = 0;
        int pad = 0;
        for (d = 0; d < rank; d++) {
            const int64_t s = q35_pad_index(idx[d] - begin[d], xdims[d], mode);
            pad |= s < 0;
            off += s * xst[d];
        }
        memcpy((char *)y + i * (int64_t)elem,
               pad ? value : (const void *)((const char *)x + off * (int64_t)elem), elem);
        for (d = rank - 1; d >= 0 && ++idx[d] == ydims[d]; d--)
            idx[d] = 0;
    }
    return 0;
}

/* One axis of a separable Resize: y[o, j, i] = sum_t wt[j*taps + t] * x[o, at[j*taps + t], i]
 * for x[outer, in_len, inner] and y[outer, out_len, inner], the sum in double; a first
 * index of -1 marks an output outside the input (the extrapolation value). */
Q35_FN void q35_resize_axis_f32(float *y, const float *x, int64_t outer, int64_t in_len,
                                int64_t out_len, int64_t inner, int64_t taps,
                                const int64_t *at, const double *wt, float extrapolation)
{
    int64_t o;
    Q35_CNN_PARALLEL_FOR(outer * out_len * inner * taps)
    for (o = 0; o < outer; o++) {
        int64_t j, i, t;
        for (j = 0; j < out_len; j++)
            for (i = 0; i < inner; i++) {
                double s = 0.0;
                if (at[j * taps] < 0) {
                    y[(o * out_len + j) * inner + i] = extrapolation;
                    continue;
                }
                for (t = 0; t < taps; t++)
                    s += wt[j * taps + t] * (double)x[(o * in_len + at[j * taps + t]) * inner + i];
                y[(o * out_len + j) * inner + i] = (float)s;
            }
    }
}

/* numpy's pairwise sum (add.reduce of a contiguous float32 / float64 vector): below 8
 * elements a sequential sum from 0, up to 128 eight accumulators combined as a tree, beyond
 * that the two halves (a multiple of 8 first) summed separately. */
#define Q35_PAIRWISE_SUM(NAME, T)                                                          \
    static T NAME(const T *a, int64_t n)                                                   \
    {                                                                                      \
        if (n < 8) {                                                                       \
            T res = 0;                                                                     \
            int64_t i;                                                                     \
            for (i = 0; i < n; i++)                                                        \
                res += a[i];                                                               \
            return res;                                                                    \
        }                                                                                  \
        if (n <= 128) {                                                                    \
            T r[8], res;                                                                   \
            int64_t i, j;                                                                  \
            for (j = 0; j < 8; j++)                                                        \
                r[j] = a[j];                                                               \
            for (i = 8; i < n - n % 8; i += 8)                                             \
                for (j = 0; j < 8; j++)                                                    \
                    r[j] += a[i + j];                                                      \
            res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));       \
            for (; i < n; i++)                                                             \
                res += a[i];                                                               \
            return res;                                                                    \
        } else {                                                                           \
            int64_t n2 = n / 2;                                                            \
            n2 -= n2 % 8;                                                                  \
            return NAME(a, n2) + NAME(a + n2, n - n2);                                     \
        }                                                                                  \
    }

Q35_PAIRWISE_SUM(q35_pairwise_f32, float)
Q35_PAIRWISE_SUM(q35_pairwise_f64, double)

/* Resize with scales or sizes known only at run time: the per-axis scale factors, then
 * each resized axis's taps, computed as onnx's reference (op_resize.py,
 * _interpolate_1d_along_axis) computes them, in double. */
enum { Q35_RS_HALF_PIXEL = 0, Q35_RS_HALF_PIXEL_SYMMETRIC = 1, Q35_RS_PYTORCH_HALF_PIXEL = 2,
       Q35_RS_ALIGN_CORNERS = 3, Q35_RS_ASYMMETRIC = 4, Q35_RS_TF_CROP_AND_RESIZE = 5 };
enum { Q35_RS_NEAREST = 0, Q35_RS_LINEAR = 1, Q35_RS_CUBIC = 2 };
enum { Q35_RS_ROUND_PREFER_FLOOR = 0, Q35_RS_ROUND_PREFER_CEIL = 1, Q35_RS_FLOOR = 2,
       Q35_RS_CEIL = 3 };

/* scale[d] for every dim (1 where not in axes) from src: scales (float32, one per axis)
 * or, if from_sizes, sizes (int64, one per axis; `policy` 0 stretch, 1 not_larger,
 * 2 not_smaller). Returns -1 unless the output sizes they give are ydims (the compiled
 * shape). */
Q35_FN int q35_resize_scales(double *scale, const void *src, int from_sizes, int rank,
                             const int64_t *axes, int naxes, const int64_t *xdims,
                             const int64_t *ydims, int policy)
{
    const float *scales = from_sizes ? NULL : (const float *)src;
    const int64_t *sizes = from_sizes ? (const int64_t *)src : NULL;
    double pick = 0.0;
    int d, k;
    for (d = 0; d < rank; d++)
        scale[d] = 1.0;
    for (k = 0; k < naxes; k++) {
        const int64_t a = axes[k];
        const double s = from_sizes ? (double)sizes[k] / (double)xdims[a] : (double)scales[k];
        if (k == 0 || (policy == 1 && s < pick) || (policy == 2 && s > pick))
            pick = s;
        scale[a] = s;
    }
    for (k = 0; k < naxes; k++) {
        const int64_t a = axes[k];
        int64_t want;
        if (from_sizes && policy != 0) {
            scale[a] = pick;
            want = (int64_t)(pick * (double)xdims[a] + 0.5);
        } else {
            want = from_sizes ? sizes[k] : (int64_t)(scale[a] * (double)xdims[a]);
        }
        if (want != ydims[a] || !(scale[a] > 0.0))
            return -1;
    }
    return 0;
}

static void q35_resize_coeffs(double *c, int kind, double r, int nearest, double a)
{
    if (kind == Q35_RS_NEAREST) {
        int right;
        if (r == 1.0)
            right = 1;
        else if (nearest == Q35_RS_ROUND_PREFER_FLOOR)
            right = r > 0.5;
        else if (nearest == Q35_RS_ROUND_PREFER_CEIL)
            right = r >= 0.5;
        else
            right = nearest == Q35_RS_CEIL;
        c[0] = right ? 0.0 : 1.0;
        c[1] = right ? 1.0 : 0.0;
    } else if (kind == Q35_RS_LINEAR) {
        c[0] = 1.0 - r;
        c[1] = r;
    } else {
        c[0] = ((a * (r + 1) - 5 * a) * (r + 1) + 8 * a) * (r + 1) - 4 * a;
        c[1] = ((a + 2) * r - (a + 3)) * r * r + 1;
        c[2] = ((a + 2) * (1 - r) - (a + 3)) * (1 - r) * (1 - r) + 1;
        c[3] = ((a * ((1 - r) + 1) - 5 * a) * ((1 - r) + 1) + 8 * a) * ((1 - r) + 1) - 4 * a;
    }
}

/* The number of taps of onnx's antialiased filter at `scale` (op_resize.py,
 * _linear_coeffs_antialias / _cubic_coeffs_antialias): the filter is widened by
 * 1 / min(scale, 1), so its support covers 2 (linear) or 4 (cubic) output pixels. */
static int64_t q35_resize_antialias_taps(int kind, double scale)
{
    const double s = scale < 1.0 ? scale : 1.0;
    const int64_t start = (int64_t)(floor((kind == Q35_RS_CUBIC ? -2.0 : -1.0) / s) + 1.0);
    return 2 - 2 * start;
}

/* The n antialiased coefficients at ratio r, as the reference computes them in double:
 * the triangle (linear) or Keys cubic kernel at (i - r) * min(scale, 1) for the n integer
 * offsets i around 0, each divided by their sum (taken from 0, in order). */
static void q35_resize_antialias_coeffs(double *c, int64_t n, int kind, double r,
                                        double scale, double a)
{
    const double s = scale < 1.0 ? scale : 1.0;
    const int64_t start = 1 - n / 2;
    double sum = 0.0;
    int64_t t;
    for (t = 0; t < n; t++) {
        double v;
        if (kind == Q35_RS_CUBIC) {
            const double x = fabs(s * ((double)(start + t) - r));
            const double x2 = x * x, x3 = x * x2;
            v = x <= 1.0 ? (a + 2) * x3 - (a + 3) * x2 + 1
                : x < 2.0 ? a * x3 - 5 * a * x2 + 8 * a * x - 4 * a : 0.0;
        } else {
            v = 1.0 - fabs(((double)(start + t) - r) * s);
            v = v < 0.0 ? 0.0 : v > 1.0 ? 1.0 : v;
        }
        c[t] = v;
        sum += v;
    }
    for (t = 0; t < n; t++)
        c[t] = c[t] / sum;
}

/* The taps (at[j*taps + t], wt[...]) of output index j of one axis of in -> out
 * elements: taps is 2 (nearest, linear) or 4 (cubic), or with antialias at least the
 * filter's run-time tap count (the rest get weight 0); at[j*taps] = -1 marks an
 * extrapolated output (tf_crop_and_resize outside the roi [*roi0, *roi1]; the roi
 * pointers are NULL for other modes). Returns nonzero if the antialiased filter at
 * `scale` needs more than `taps` taps. */
Q35_FN int q35_resize_taps(int64_t *at, double *wt, int64_t in, int64_t out, int64_t taps,
                           double scale, const float *roi0, const float *roi1, int coord,
                           int kind, int nearest, double cubic_a, int exclude_outside,
                           int antialias)
{
    const double width = scale * (double)in;
    const int64_t n = antialias ? q35_resize_antialias_taps(kind, scale) : taps;
    const int64_t pad = (n + 1) / 2;
    int64_t j, t;
    if (out > 0 && n > taps)
        return 1;
    for (j = 0; j < out; j++) {
        const double y = (double)j;
        double *c = wt + j * taps;
        double x, r, xp, frac, sum = 0.0;
        int64_t base, p, start;
        switch (coord) {
        case Q35_RS_ALIGN_CORNERS:
            x = width == 1 ? 0.0 : y * (double)(in - 1) / (width - 1);
            break;
        case Q35_RS_ASYMMETRIC:
            x = y / scale;
            break;
        case Q35_RS_TF_CROP_AND_RESIZE:
            x = width == 1 ? ((double)*roi1 - *roi0) * (double)(in - 1) / 2
                           : y * ((double)*roi1 - *roi0) * (double)(in - 1) / (width - 1);
            x = x + (double)*roi0 * (double)(in - 1);
            break;
        case Q35_RS_PYTORCH_HALF_PIXEL:
            x = width == 1 ? -0.5 : (y + 0.5) / scale - 0.5;
            break;
        case Q35_RS_HALF_PIXEL_SYMMETRIC:
            x = (double)in / 2 * (1 - (double)out / width) + (y + 0.5) / scale - 0.5;
            break;
        default:
            x = (y + 0.5) / scale - 0.5;
        }
        if (coord == Q35_RS_TF_CROP_AND_RESIZE && (x < 0 || x > (double)(in - 1))) {
            for (t = 0; t < taps; t++) {
                at[j * taps + t] = t == 0 ? -1 : 0;
                wt[j * taps + t] = 0.0;
            }
            continue;
        }
        r = x == floor(x) ? 1.0 : x - floor(x);
        if (antialias)
            q35_resize_antialias_coeffs(c, n, kind, r, scale, cubic_a);
        else
            q35_resize_coeffs(c, kind, r, nearest, cubic_a);
        xp = x + (double)pad;
        p = (int64_t)floor(xp);
        frac = xp - (double)p;
        base = n % 2 == 0 ? (frac == 0 ? -(n / 2) : -(n / 2) + 1)
                          : (frac <= 0.5 ? -((n - 1) / 2) : -((n - 1) / 2) + 1);
        start = p + base - pad;
        if (exclude_outside) {
            for (t = 0; t < n; t++)
                if (start + t < 0 || start + t >= in)
                    c[t] = 0.0;
            sum = q35_pairwise_f64(c, n);
            if (sum == 0.0)
                sum = 1.0;
        }
        for (t = 0; t < n; t++) {
            const int64_t i = start + t;
            at[j * taps + t] = i < 0 ? 0 : i >= in ? in - 1 : i;
            if (exclude_outside)
                c[t] /= sum;
        }
        for (; t < taps; t++) { /* unused taps of a smaller antialias filter */
            at[j * taps + t] = at[j * taps];
            c[t] = 0.0;
        }
    }
    return 0;
}

/* ONNX Col2Im of x[n, c*K, L] (K = prod(block), L the number of block positions) into
 * y[n, c, image...] (`rank` spatial dims, each at most 8): y[n, c, l*s - p + k*d] +=
 * x[n, c*K + k, l] for every block offset k and position l that lands inside the image,
 * summed in the reference's order (k, then l, row-major) in float32. The image and block
 * shapes are run-time inputs; returns nonzero if they do not give the compiled shapes. */
Q35_FN int q35_col2im_f32(float *y, const float *x, int64_t n, int64_t c, int64_t rank,
                          const int64_t *image, const int64_t *image_in,
                          const int64_t *block, const int64_t *dil, const int64_t *pads,
                          const int64_t *strides, int64_t ck, int64_t len)
{
    int64_t blocks[8], kk = 1, ll = 1, plane = 1, d, b;
    if (rank < 1 || rank > 8)
        return 1;
    for (d = 0; d < rank; d++) {
        if (image_in[d] != image[d] || block[d] < 1)
            return 1;
        blocks[d] = (image[d] + pads[d] + pads[rank + d] - dil[d] * (block[d] - 1) - 1) /
                        strides[d] + 1;
        if (blocks[d] < 1)
            return 1;
        kk *= block[d];
        ll *= blocks[d];
        plane *= image[d];
    }
    if (kk * c != ck || ll != len)
        return 1;
    for (b = 0; b < n * c; b++) {
        float *yp = y + b * plane;
        int64_t k, l, i;
        for (i = 0; i < plane; i++)
            yp[i] = 0.0f;
        for (k = 0; k < kk; k++) {
            const float *xr = x + (b * kk + k) * len;
            for (l = 0; l < len; l++) {
                int64_t at = 0, rk = k, rl = l, stride = 1, inside = 1;
                for (d = rank - 1; d >= 0; d--) {
                    const int64_t ko = rk % block[d], lo = rl % blocks[d];
                    const int64_t pos = lo * strides[d] - pads[d] + ko * dil[d];
                    rk /= block[d];
                    rl /= blocks[d];
                    if (pos < 0 || pos >= image[d])
                        inside = 0;
                    at += pos * stride;
                    stride *= image[d];
                }
                if (inside)
                    yp[at] += xr[l];
            }
        }
    }
    return 0;
}

/* ONNX MaxUnpool: y (dims `ydims`) all zeros, then x[i] stored at the flat index idx[i]
 * (negative ones counted from the end, as numpy does) of the unpooled shape `inferred`,
 * which sits at the start of each dim of y. Elements of `esize` bytes; returns nonzero
 * on an index out of range or a run-time output_shape (if not NULL) unlike ydims. */
Q35_FN int q35_max_unpool(void *y, const void *x, const int64_t *idx, size_t esize,
                          int64_t count, int64_t rank, const int64_t *inferred,
                          const int64_t *ydims, const int64_t *output_shape)
{
    int64_t total = 1, ytotal = 1, i, d;
    for (d = 0; d < rank; d++) {
        if (output_shape && output_shape[d] != ydims[d])
            return 1;
        total *= inferred[d];
        ytotal *= ydims[d];
    }
    memset(y, 0, (size_t)ytotal * esize);
    for (i = 0; i < count; i++) {
        int64_t k = idx[i] < 0 ? idx[i] + total : idx[i], at = 0, stride = 1;
        if (k < 0 || k >= total)
            return 1;
        for (d = rank - 1; d >= 0; d--) {
            at += k % inferred[d] * stride;
            k /= inferred[d];
            stride *= ydims[d];
        }
        memcpy((char *)y + at * esize, (const char *)x + i * esize, esize);
    }
    return 0;
}

/* One sampling coordinate of RoiAlign along an axis: start + p*bin + (i + 0.5)*bin/grid,
 * rounded as the reference's numpy scalars are: in float32, unless the roi was widened to
 * 1 (output_half_pixel), when the bin is a Python float and each term is a double
 * rounded to float32 as it is added. */
static float q35_roi_coord(float start, int64_t p, int64_t i, int64_t grid, float bin,
                           int widened, int64_t pooled)
{
    if (widened) {
        const double b = 1.0 / (double)pooled;
        return (start + (float)((double)p * b)) + (float)(((double)i + 0.5) * b / (double)grid);
    }
    return (start + (float)p * bin) + ((float)i + 0.5f) * bin / (float)grid;
}

/* The 4 bilinear taps (flat positions and float32 weights) of the sample (y, x) in an
 * h x w plane, as the reference's pre_calc_for_bilinear_interpolate: all 0 outside
 * [-1, h] x [-1, w]. */
static void q35_roi_taps(float y, float x, int64_t h, int64_t w, int64_t *pos, float *wt)
{
    int64_t yl, xl, yh, xh;
    float ly, lx, hy, hx;
    if (y < -1.0f || y > (float)h || x < -1.0f || x > (float)w) {
        pos[0] = pos[1] = pos[2] = pos[3] = 0;
        wt[0] = wt[1] = wt[2] = wt[3] = 0.0f;
        return;
    }
    y = y < 0.0f ? 0.0f : y;
    x = x < 0.0f ? 0.0f : x;
    yl = (int64_t)y;
    xl = (int64_t)x;
    if (yl >= h - 1) {
        yh = yl = h - 1;
        y = (float)yl;
    } else
        yh = yl + 1;
    if (xl >= w - 1) {
        xh = xl = w - 1;
        x = (float)xl;
    } else
        xh = xl + 1;
    ly = y - (float)yl;
    lx = x - (float)xl;
    hy = 1.0f - ly;
    hx = 1.0f - lx;
    pos[0] = yl * w + xl;
    pos[1] = yl * w + xh;
    pos[2] = yh * w + xl;
    pos[3] = yh * w + xh;
    wt[0] = hy * hx;
    wt[1] = hy * lx;
    wt[2] = ly * hx;
    wt[3] = ly * lx;
}

/* ONNX RoiAlign of x[n, c, h, w] over `nrois` rois (x1, y1, x2, y2 rows of float32 rois,
 * image batch_idx[r]) into y[r, c, oh, ow]: per output bin the average (or the max of the
 * weighted taps, as the reference computes "max") of grid_h x grid_w bilinear samples,
 * each step in the reference's float32 order. Returns nonzero on a batch index out of
 * range. */
Q35_FN int q35_roi_align_f32(float *y, const float *x, const float *rois,
                             const int64_t *batch_idx, int64_t nrois, int64_t n, int64_t c,
                             int64_t h, int64_t w, int64_t oh, int64_t ow, int64_t sampling,
                             float scale, int half_pixel, int max_mode)
{
    int64_t r;
    for (r = 0; r < nrois; r++)
        if (batch_idx[r] < 0 || batch_idx[r] >= n)
            return 1;
    for (r = 0; r < nrois; r++) {
        const float off = half_pixel ? 0.5f : 0.0f;
        const float sw = rois[r * 4] * scale - off, sh = rois[r * 4 + 1] * scale - off;
        const float ew = rois[r * 4 + 2] * scale - off, eh = rois[r * 4 + 3] * scale - off;
        float rw = ew - sw, rh = eh - sh, bw, bh;
        int wide_w = 0, wide_h = 0;
        int64_t gh, gw, count, ch, ph, pw, iy, ix;
        if (!half_pixel) {
            wide_w = !(rw >= 1.0f);
            wide_h = !(rh >= 1.0f);
            rw = wide_w ? 1.0f : rw;
            rh = wide_h ? 1.0f : rh;
        }
        bh = rh / (float)oh;
        bw = rw / (float)ow;
        gh = sampling > 0 ? sampling : (int64_t)ceil(wide_h ? 1.0 / (double)oh : (double)bh);
        gw = sampling > 0 ? sampling : (int64_t)ceil(wide_w ? 1.0 / (double)ow : (double)bw);
        count = gh * gw > 1 ? gh * gw : 1;
        for (ch = 0; ch < c; ch++) {
            const float *xp = x + (batch_idx[r] * c + ch) * h * w;
            for (ph = 0; ph < oh; ph++)
                for (pw = 0; pw < ow; pw++) {
                    float acc = 0.0f;
                    int seen = 0;
                    for (iy = 0; iy < gh; iy++) {
                        const float yy = q35_roi_coord(sh, ph, iy, gh, bh, wide_h, oh);
                        for (ix = 0; ix < gw; ix++) {
                            const float xx = q35_roi_coord(sw, pw, ix, gw, bw, wide_w, ow);
                            int64_t pos[4];
                            float wt[4];
                            q35_roi_taps(yy, xx, h, w, pos, wt);
                            if (!max_mode)
                                acc += wt[0] * xp[pos[0]] + wt[1] * xp[pos[1]] +
                                       wt[2] * xp[pos[2]] + wt[3] * xp[pos[3]];
                            else {
                                float v = wt[0] * xp[pos[0]];
                                int k;
                                for (k = 1; k < 4; k++)
                                    if (wt[k] * xp[pos[k]] > v)
                                        v = wt[k] * xp[pos[k]];
                                if (!seen || v > acc)
                                    acc = v;
                                seen = 1;
                            }
                        }
                    }
                    y[((r * c + ch) * oh + ph) * ow + pw] = max_mode ? acc : acc / (float)count;
                }
        }
    }
    return 0;
}

/* The sampling position of DeformConv along one axis as the reference computes it: the
 * kernel tap `k` (dilated) plus the float32 sum of the window start and the offset, in
 * double, normalized for GridSample (align_corners) and denormalized again, then rounded
 * to float32. */
static float q35_deform_pos(int64_t k, int64_t start, float off, int64_t len)
{
    const float t = (float)start + off;
    const double p = (double)k + (double)t;
    const double n = p / (double)(len - 1) * 2.0 - 1.0;
    return (float)((n + 1.0) / 2.0 * (double)(len - 1));
}

/* GridSample's float32 linear interpolation of the plane x[h, w] at (ph, pw), zero
 * padding: each of the two rows around ph interpolated along w, then the rows along h,
 * each a float32 dot product (0 + c0*v0) + c1*v1 as the reference's. */
static float q35_deform_sample(const float *x, int64_t h, int64_t w, float ph, float pw)
{
    const float fh = floorf(ph), fw = floorf(pw);
    const float th = fabsf(ph - fh), tw = fabsf(pw - fw);
    const float ch[2] = {1.0f - th, th}, cw[2] = {1.0f - tw, tw};
    float acc = 0.0f;
    int r, s;
    for (r = 0; r < 2; r++) {
        const float row = fh + (float)r;
        float v = 0.0f;
        if (row >= 0.0f && row < (float)h) {
            const float *xr = x + (int64_t)row * w;
            for (s = 0; s < 2; s++) {
                const float col = fw + (float)s;
                const float p = col >= 0.0f && col < (float)w ? xr[(int64_t)col] : 0.0f;
                v = s == 0 ? 0.0f + cw[0] * p : v + cw[1] * p;
            }
        }
        acc = r == 0 ? 0.0f + ch[0] * v : acc + ch[1] * v;
    }
    return acc;
}

/* ONNX DeformConv (2-D) as onnx's reference computes it: each input channel sampled
 * bilinearly (GridSample, align_corners, zero padding) at the kernel taps moved by
 * `offset` (n, offset_group*kh*kw*2, oh, ow; (dy, dx) pairs), the samples times the
 * weights (times `mask` if given) summed over the kernel as numpy sums (float32 with a
 * mask, float64 without: the reference's mask of ones is float64), added to y in float32
 * channel after channel, starting from the bias. `col` holds c*kh*kw*oh*ow samples of one
 * batch, `prod` kh*kw products (float32 with a mask, else float64). q[] = n c m group
 * offset_group ih iw oh ow kh kw sh sw ph pw dh dw. Returns nonzero if a sampling position
 * is not finite (the reference fails). */
Q35_FN int q35_deform_conv_f32(float *y, const float *x, const float *w, const float *offset,
                               const float *b, const float *mask, float *col, void *prod,
                               const int64_t *q)
{
    const int64_t n = q[0], c = q[1], m = q[2], group = q[3], og = q[4], ih = q[5],
                  iw = q[6], oh = q[7], ow = q[8], kh = q[9], kw = q[10], sh = q[11],
                  sw = q[12], ph = q[13], pw = q[14], dh = q[15], dw = q[16];
    const int64_t k = kh * kw, plane = oh * ow, cg = c / group, mg = m / group,
                  cog = c / og;
    float *prodf = (float *)prod;
    double *prodd = (double *)prod;
    int64_t bn, ci, mi, a, i, j;
    for (bn = 0; bn < n; bn++) {
        for (ci = 0; ci < c; ci++) {
            const int64_t g = ci / cog;
            const float *xp = x + (bn * c + ci) * ih * iw;
            for (a = 0; a < k; a++) {
                const float *offh = offset + ((bn * og + g) * k * 2 + a * 2) * plane;
                const float *offw = offh + plane;
                for (i = 0; i < oh; i++)
                    for (j = 0; j < ow; j++) {
                        const float py = q35_deform_pos((a / kw) * dh, i * sh - ph,
                                                        offh[i * ow + j], ih);
                        const float px = q35_deform_pos((a % kw) * dw, j * sw - pw,
                                                        offw[i * ow + j], iw);
                        if (!isfinite(py) || !isfinite(px))
                            return 1;
                        col[(ci * k + a) * plane + i * ow + j] =
                            q35_deform_sample(xp, ih, iw, py, px);
                    }
            }
        }
        for (mi = 0; mi < m; mi++) {
            const int64_t g = mi / mg;
            float *yp = y + (bn * m + mi) * plane;
            for (i = 0; i < plane; i++)
                yp[i] = b ? b[mi] : 0.0f;
            for (ci = g * cg; ci < (g + 1) * cg; ci++) {
                const float *wp = w + (mi * cg + ci - g * cg) * k;
                const float *mp = mask ? mask + (bn * og + ci / cog) * k * plane : NULL;
                for (i = 0; i < plane; i++) {
                    for (a = 0; a < k; a++) {
                        const float v = col[(ci * k + a) * plane + i] * wp[a];
                        if (mp)
                            prodf[a] = v * mp[a * plane + i];
                        else
                            prodd[a] = (double)v;
                    }
                    yp[i] = mp ? yp[i] + q35_pairwise_f32(prodf, k)
                               : (float)((double)yp[i] + q35_pairwise_f64(prodd, k));
                }
            }
        }
    }
    return 0;
}

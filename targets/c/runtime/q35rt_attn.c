/* ---- q35rt_attn.c: the attention family of the generic ONNX ops ------------------------
 *
 * Attention, RotaryEmbedding, LinearAttention and CausalConvWithState
 * (targets/native/onnx_attention.py makes the steps, targets/c/onnx_attention.py renders
 * the calls). Appended to model.c after q35rt_onnx.c, whose float16 / bfloat16 conversions
 * it uses, only when a step calls one of these kernels.
 *
 * Each tensor is read and written in its own element type, named by a code (Q35_T_*);
 * values are computed in double and rounded to an element type (q35_rnd) wherever onnx's
 * reference implementation (numpy, ml_dtypes) rounds: after every elementwise operation,
 * after each sum of products (float16 sums of products accumulate in float term by term,
 * as numpy's float16 matmul does; bfloat16 ones are float32 matmuls rounded once; the
 * others accumulate in double), after each sum (bfloat16 sums round term by term, as
 * ml_dtypes' add.reduce does). So float16 and bfloat16 results are the interpreter's bit
 * for bit but for ties of long sums, float32 ones within float32 rounding of the order of
 * summation. Static parameters come in one int64 table per call.
 */

enum { Q35_T_F64, Q35_T_F32, Q35_T_F16, Q35_T_BF16, Q35_T_BOOL };

/* `x` rounded to element type `t` (to nearest, ties to even). */
Q35_FN double q35_rnd(double x, int t)
{
    switch (t) {
    case Q35_T_F32:
        return (double)(float)x;
    case Q35_T_F16:
        return (double)q35_f16_to_f32(q35_f64_to_f16(x));
    case Q35_T_BF16:
        return (double)q35_bf16_to_f32(q35_f64_to_bf16(x));
    default:
        return x;
    }
}

/* A libm result rounded to `t` as numpy computes the function for it: float16 and
 * bfloat16 through float32. */
Q35_FN double q35_rnd_fn(double x, int t)
{
    return t == Q35_T_F64 ? x : q35_rnd((double)(float)x, t);
}

Q35_FN double q35_ld(const void *p, int t, int64_t i)
{
    switch (t) {
    case Q35_T_F64:
        return ((const double *)p)[i];
    case Q35_T_F32:
        return ((const float *)p)[i];
    case Q35_T_F16:
        return q35_f16_to_f32(((const uint16_t *)p)[i]);
    case Q35_T_BF16:
        return q35_bf16_to_f32(((const uint16_t *)p)[i]);
    default:
        return ((const uint8_t *)p)[i] != 0;
    }
}

/* Stores `v` converted to `t` (rounded: numpy's astype). */
Q35_FN void q35_st(void *p, int t, int64_t i, double v)
{
    switch (t) {
    case Q35_T_F64:
        ((double *)p)[i] = v;
        break;
    case Q35_T_F32:
        ((float *)p)[i] = (float)v;
        break;
    case Q35_T_F16:
        ((uint16_t *)p)[i] = q35_f64_to_f16(v);
        break;
    default:
        ((uint16_t *)p)[i] = q35_f64_to_bf16(v);
        break;
    }
}

/* Copies element `si` of `src` to element `di` of `dst`, both of type `t`, bit for bit. */
Q35_FN void q35_cp(void *dst, int64_t di, const void *src, int64_t si, int t)
{
    const size_t n = t == Q35_T_F64 ? 8 : (t == Q35_T_F32 ? 4 : 2);
    memcpy((uint8_t *)dst + di * (int64_t)n, (const uint8_t *)src + si * (int64_t)n, n);
}

/* One product `term` added to a sum of products of type `t` (q35_dot_end rounds it). */
Q35_FN double q35_dot_add(double acc, double term, int t)
{
    return t == Q35_T_F16 ? (double)(float)(acc + term) : acc + term;
}

Q35_FN double q35_dot_end(double acc, int t)
{
    return t == Q35_T_BF16 ? q35_rnd((double)(float)acc, t) : q35_rnd(acc, t);
}

/* One term added to a plain sum of type `t` (q35_rnd rounds the total). */
Q35_FN double q35_sum_add(double acc, double x, int t)
{
    return t == Q35_T_BF16 ? q35_rnd(acc + x, t) : acc + x;
}

/* ONNX Attention. p[]:
 *   0 t (Q, K, V, past, outputs)  1 softmax type  2 B  3 Hq  4 Hkv  5 Sq  6 Skv  7 P (past)
 *   8 Dk  9 Dv  10..12 Q strides (batch, head, position)  13..15 K's  16..18 V's  19..21 Y's
 *   22 mask type (-1: none)  23..26 mask strides over (B, Hq, Sq, its length)  27 mask
 *   length  28 causal  29 left window  30 right window  31 qk_matmul_output_mode
 *   32 the scores' type from the softcap on (float32 for float16 / bfloat16 operands: the
 *   reference's softcap is a float32 scalar, which numpy does not cast down)  33 whether
 *   each query has its own causal frontier (0: all have the first query's, as the
 *   reference's causal mask over a one-row attn_mask gives)
 * present_k / present_v / qk / mask / past_k / past_v / nonpad may be NULL. work: Dk + Kv
 * doubles. Per (batch, query head, query): scores against the past and new keys of its key
 * head (query heads grouped onto key/value heads), the bias of the mask and of the causal,
 * window and padding frontiers, softmax (all-masked rows give 0), times the values. */
Q35_FN void q35_attention(void *y, void *present_k, void *present_v, void *qk, double *work,
                          const void *q, const void *k, const void *v, const void *mask,
                          const void *past_k, const void *past_v, const int64_t *nonpad,
                          const int64_t *p, double scale, double softcap)
{
    const int t = (int)p[0], ts = (int)p[1];
    const int64_t B = p[2], Hq = p[3], Hkv = p[4], Sq = p[5], Skv = p[6], P = p[7];
    const int64_t Dk = p[8], Dv = p[9], Kv = P + Skv, group = Hq / Hkv;
    const int64_t *qs = p + 10, *ks = p + 13, *vs = p + 16, *ys = p + 19, *ms = p + 23;
    const int mt = (int)p[22];
    const int64_t mlen = p[27], causal = p[28], left = p[29], right = p[30], mode = p[31];
    const int tc = (int)p[32];
    const int64_t per_query = p[33];
    double *qrow = work, *row = work + Dk;
    int64_t b, h, i, j, d, kh;
    for (b = 0; b < B; b++)
        for (kh = 0; kh < Hkv; kh++)
            for (j = 0; j < Kv; j++) {
                const int64_t at = ((b * Hkv + kh) * Kv + j);
                const int64_t old = (b * Hkv + kh) * P + j;
                const int64_t knew = b * ks[0] + kh * ks[1] + (j - P) * ks[2];
                const int64_t vnew = b * vs[0] + kh * vs[1] + (j - P) * vs[2];
                for (d = 0; present_k && d < Dk; d++) {
                    if (j < P)
                        q35_cp(present_k, at * Dk + d, past_k, old * Dk + d, t);
                    else
                        q35_cp(present_k, at * Dk + d, k, knew + d, t);
                }
                for (d = 0; present_v && d < Dv; d++) {
                    if (j < P)
                        q35_cp(present_v, at * Dv + d, past_v, old * Dv + d, t);
                    else
                        q35_cp(present_v, at * Dv + d, v, vnew + d, t);
                }
            }
    for (b = 0; b < B; b++)
        for (h = 0; h < Hq; h++)
            for (i = 0; i < Sq; i++) {
                const int64_t off = nonpad ? nonpad[b] - Sq : P; /* the causal frontier */
                const int64_t qat = ((b * Hq + h) * Sq + i) * Kv;
                double mx = 0, safe, sum = 0;
                int masked = 1;
                kh = h / group;
                for (d = 0; d < Dk; d++)
                    qrow[d] = q35_rnd(q35_ld(q, t, b * qs[0] + h * qs[1] + i * qs[2] + d) *
                                      scale, t);
                for (j = 0; j < Kv; j++) {
                    double acc = 0, s, bias = 0, x;
                    for (d = 0; d < Dk; d++) {
                        const double kv = j < P
                            ? q35_ld(past_k, t, ((b * Hkv + kh) * P + j) * Dk + d)
                            : q35_ld(k, t, b * ks[0] + kh * ks[1] + (j - P) * ks[2] + d);
                        acc = q35_dot_add(acc, qrow[d] * q35_rnd(kv * scale, t), t);
                    }
                    s = q35_dot_end(acc, t);
                    if (softcap > 0)
                        s = q35_rnd(q35_rnd_fn(tanh(q35_rnd(s / softcap, tc)), tc) * softcap,
                                    tc);
                    if (mask) {
                        double m = -INFINITY; /* past the mask's length: padded */
                        if (j < mlen) {
                            m = q35_ld(mask, mt, b * ms[0] + h * ms[1] + i * ms[2] + j * ms[3]);
                            if (mt == Q35_T_BOOL)
                                m = m != 0 ? 0.0 : -INFINITY;
                        }
                        bias = causal ? m : 0.0 + m;
                    }
                    if (causal)
                        bias += j <= (per_query ? i : 0) + off ? 0.0 : -INFINITY;
                    if (left >= 0 || right >= 0) {
                        const int64_t diff = i + off - j;
                        const int allowed = (left < 0 || diff <= left) &&
                                            (right < 0 || -diff <= right);
                        bias = (0.0 + bias) + (allowed ? 0.0 : -INFINITY);
                    }
                    if (nonpad)
                        bias += j < nonpad[b] ? 0.0 : -INFINITY;
                    if (bias != -INFINITY)
                        masked = 0;
                    x = q35_rnd(s + bias, tc);
                    if (qk && mode < 3)
                        q35_st(qk, t, qat + j, mode == 2 ? x : s);
                    row[j] = q35_rnd(x, ts);
                    if (j == 0 || (mx == mx && (row[j] != row[j] || row[j] > mx)))
                        mx = row[j]; /* numpy's max: NaN wins */
                }
                safe = mx == -INFINITY ? 0.0 : mx;
                for (j = 0; j < Kv; j++) {
                    row[j] = q35_rnd_fn(exp(q35_rnd(row[j] - safe, ts)), ts);
                    sum = q35_sum_add(sum, row[j], ts);
                }
                sum = q35_rnd(sum, ts);
                if (sum == 0)
                    sum = 1;
                for (j = 0; j < Kv; j++) {
                    row[j] = masked ? 0.0 : q35_rnd(row[j] / sum, ts);
                    if (qk && mode == 3)
                        q35_st(qk, t, qat + j, row[j]);
                    row[j] = q35_rnd(row[j], t);
                }
                for (d = 0; d < Dv; d++) {
                    double acc = 0;
                    for (j = 0; j < Kv; j++) {
                        const double vv = j < P
                            ? q35_ld(past_v, t, ((b * Hkv + kh) * P + j) * Dv + d)
                            : q35_ld(v, t, b * vs[0] + kh * vs[1] + (j - P) * vs[2] + d);
                        acc = q35_dot_add(acc, row[j] * vv, t);
                    }
                    q35_st(y, t, b * ys[0] + h * ys[1] + i * ys[2] + d, q35_dot_end(acc, t));
                }
            }
}

/* ONNX RotaryEmbedding. p[]: 0 B  1 H  2 S  3 D (head size)  4 rotary dim  5 cache rows
 * (0: no position ids)  6..8 strides of batch, head, position in x and y  9..10 strides
 * of batch and position in the position ids (or in the caches' rows)  11 interleaved.
 * Returns nonzero on a position id out of range. */
Q35_FN int q35_rotary(void *y, const void *x, const void *cosc, const void *sinc,
                      const int64_t *pos, const int64_t *p, int t)
{
    const int64_t B = p[0], H = p[1], S = p[2], D = p[3], rot = p[4], rows = p[5];
    const int64_t half = rot / 2, interleaved = p[11];
    int64_t b, s, h, m, d;
    for (b = 0; b < B; b++)
        for (s = 0; s < S; s++) {
            int64_t r = b * p[9] + s * p[10];
            if (pos) {
                r = pos[r];
                if (r < 0)
                    r += rows;
                if (r < 0 || r >= rows)
                    return 1;
            }
            for (h = 0; h < H; h++) {
                const int64_t base = b * p[6] + h * p[7] + s * p[8];
                for (m = 0; m < half; m++) {
                    const double c = q35_ld(cosc, t, r * half + m);
                    const double sn = q35_ld(sinc, t, r * half + m);
                    const int64_t i1 = base + (interleaved ? 2 * m : m);
                    const int64_t i2 = base + (interleaved ? 2 * m + 1 : m + half);
                    const double x1 = q35_ld(x, t, i1), x2 = q35_ld(x, t, i2);
                    q35_st(y, t, i1, q35_rnd(q35_rnd(c * x1, t) - q35_rnd(sn * x2, t), t));
                    q35_st(y, t, i2, q35_rnd(q35_rnd(sn * x1, t) + q35_rnd(c * x2, t), t));
                }
                for (d = rot; d < D; d++)
                    q35_cp(y, base + d, x, base + d, t);
            }
        }
    return 0;
}

/* ONNX LinearAttention, in float32 as the reference computes it. p[]: 0 B  1 T  2 Hq
 * 3 Hkv  4 dk  5 dv  6 gated  7 delta  8 decay per key (else per head)  9 beta per head
 * (else one per step)  10..15 element types of query, key, value, past_state, decay, beta
 * (-1: absent)  16 output type  17 present_state type. y / present / past / decay / beta
 * may be NULL. work: B * Hkv * dk * dv + dv doubles (the states, one row). */
Q35_FN void q35_linear_attention(void *y, void *present, double *work, const void *q,
                                 const void *k, const void *v, const void *past,
                                 const void *decay, const void *beta, const int64_t *p,
                                 double scale)
{
    const int64_t B = p[0], T = p[1], Hq = p[2], Hkv = p[3], dk = p[4], dv = p[5];
    const int64_t gated = p[6], delta = p[7], per_key = p[8], beta_per_head = p[9];
    const int tq = (int)p[10], tk = (int)p[11], tv = (int)p[12], tp = (int)p[13];
    const int tg = (int)p[14], tb = (int)p[15], ty = (int)p[16], tpr = (int)p[17];
    const int F = Q35_T_F32;
    const int64_t group = Hq / Hkv;
    double *row = work + B * Hkv * dk * dv;
    int64_t b, kh, s, d, m, h;
    for (b = 0; b < B; b++)
        for (kh = 0; kh < Hkv; kh++) {
            double *S = work + (b * Hkv + kh) * dk * dv;
            for (d = 0; d < dk * dv; d++)
                S[d] = past ? q35_rnd(q35_ld(past, tp, (b * Hkv + kh) * dk * dv + d), F) : 0;
            for (s = 0; s < T; s++) {
                const int64_t step = b * T + s;
                if (gated)
                    for (d = 0; d < dk; d++) {
                        const int64_t at = per_key ? (step * Hkv + kh) * dk + d : step * Hkv + kh;
                        const double e = q35_rnd(exp(q35_rnd(q35_ld(decay, tg, at), F)), F);
                        for (m = 0; m < dv; m++)
                            S[d * dv + m] = q35_rnd(S[d * dv + m] * e, F);
                    }
                for (m = 0; m < dv; m++)
                    row[m] = q35_rnd(q35_ld(v, tv, (step * Hkv + kh) * dv + m), F);
                if (delta) {
                    const double bt = q35_rnd(
                        q35_ld(beta, tb, beta_per_head ? step * Hkv + kh : step), F);
                    for (m = 0; m < dv; m++) {
                        double acc = 0;
                        for (d = 0; d < dk; d++)
                            acc += S[d * dv + m] *
                                   q35_rnd(q35_ld(k, tk, (step * Hkv + kh) * dk + d), F);
                        row[m] = q35_rnd(bt * q35_rnd(row[m] - q35_rnd(acc, F), F), F);
                    }
                }
                for (d = 0; d < dk; d++) {
                    const double kd = q35_rnd(q35_ld(k, tk, (step * Hkv + kh) * dk + d), F);
                    for (m = 0; m < dv; m++)
                        S[d * dv + m] = q35_rnd(S[d * dv + m] + q35_rnd(kd * row[m], F), F);
                }
                for (h = kh * group; y && h < (kh + 1) * group; h++)
                    for (m = 0; m < dv; m++) {
                        double acc = 0;
                        for (d = 0; d < dk; d++)
                            acc += q35_rnd(q35_ld(q, tq, (step * Hq + h) * dk + d), F) *
                                   S[d * dv + m];
                        q35_st(y, ty, (step * Hq + h) * dv + m,
                               q35_rnd(scale * q35_rnd(acc, F), F));
                    }
            }
            for (d = 0; present && d < dk * dv; d++)
                q35_st(present, tpr, (b * Hkv + kh) * dk * dv + d, S[d]);
        }
}

/* ONNX CausalConvWithState. p[]: 0 B  1 C  2 L  3 k (taps)  4 bias elements (0: none)
 * 5 SiLU. y / present / bias / past may be NULL. The depthwise sum of products is the
 * reference's matmul (for bfloat16 a float32 one, the bias added in float32 too). */
Q35_FN void q35_causal_conv(void *y, void *present, const void *x, const void *w,
                            const void *bias, const void *past, const int64_t *p, int t)
{
    const int64_t B = p[0], C = p[1], L = p[2], K = p[3], nbias = p[4], silu = p[5];
    const int mt = t == Q35_T_BF16 ? Q35_T_F32 : t; /* the matmul's result type */
    const int F = Q35_T_F32;
    int64_t b, c, s, j;
    for (b = 0; b < B; b++)
        for (c = 0; c < C; c++) {
            const int64_t xrow = (b * C + c) * L, prow = (b * C + c) * (K - 1);
            for (s = 0; y && s < L; s++) {
                double acc = 0, out;
                for (j = 0; j < K; j++) {
                    const int64_t at = s + j - (K - 1); /* in the input; < 0: the state */
                    const double xv = at >= 0 ? q35_ld(x, t, xrow + at)
                                              : (past ? q35_ld(past, t, prow + K - 1 + at) : 0);
                    acc = q35_dot_add(acc, q35_ld(w, t, c * K + j) * xv, t);
                }
                out = t == Q35_T_BF16 ? q35_rnd(acc, F) : q35_dot_end(acc, t);
                if (nbias)
                    out = q35_rnd(out + q35_ld(bias, t, nbias == 1 ? 0 : c), mt);
                out = q35_rnd(out, t);
                if (silu) {
                    const double xf = q35_rnd(out, F);
                    const double e = q35_rnd(exp(-xf), F);
                    const double sig = q35_rnd(1.0 / q35_rnd(1.0 + e, F), F);
                    out = q35_rnd(xf * sig, F);
                }
                q35_st(y, t, xrow + s, out);
            }
            for (s = 0; present && s < K - 1; s++) {
                const int64_t at = L + s - (K - 1); /* the padded input's last k - 1 */
                if (at >= 0)
                    q35_cp(present, prow + s, x, xrow + at, t);
                else if (past)
                    q35_cp(present, prow + s, past, prow + K - 1 + at, t);
                else
                    q35_st(present, t, prow + s, 0.0);
            }
        }
}

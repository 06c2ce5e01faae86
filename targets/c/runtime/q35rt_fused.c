/* ---- q35c C runtime: kernels of the fused ops (passes/fuse_*.py) ----------------------
 *
 * Included in model.c after q35rt.c when the program has a fused step. Each kernel does
 * the work of a chain of unfused steps without the intermediate tensors between them, and
 * rounds exactly where the reference semantics (q35c.semantics: quant3p5.fused_matmul,
 * q35nn.swiglu, q35nn.attention) round, so it gives what the unfused steps give:
 * - fused matmul: the float-path quantized matmul (q35_qmatmul_f32 / q35_pair_matmul_f32),
 *   then bias, activation and residual in one pass over its output, each rounded to float32;
 * - SwiGLU: silu(gate) in double rounded to float32, times up in float32;
 * - attention: per query row, the scores in a scratch row (products summed in double in k
 *   order, rounded, times the scale, plus the mask, in float32), softmax in double, and
 *   the row's V product summed in double in key order.
 */

/* The activations of quant3p5.fused_matmul (lower.py's "activation" parameter). */
enum { Q35_ACT_NONE, Q35_ACT_RELU, Q35_ACT_GELU, Q35_ACT_GELU_TANH, Q35_ACT_SILU };

/* One activation, as the standalone ops compute it: relu as arith.maximumf with 0, the
 * others in double (libm) rounded once (q35_gelu_f32, q35_silu_f32). */
static float q35_activate(int act, float x)
{
    const double v = x;
    switch (act) {
    case Q35_ACT_RELU: return q35_maxf(x, 0.0f);
    case Q35_ACT_GELU: return (float)(0.5 * v * (1.0 + erf(v / 1.4142135623730951)));
    case Q35_ACT_GELU_TANH:
        return (float)(0.5 * v * (1.0 + tanh(0.7978845608028654 * (v + 0.044715 * (v * v * v)))));
    case Q35_ACT_SILU: return (float)(v / (1.0 + exp(-v)));
    default: return x;
    }
}

/* y = act(y + bias) + residual over y[rows, n] in place: one pass, float32 roundings in
 * the order of quant3p5.fused_matmul. bias ([n]) and residual ([rows, n]) may be NULL. */
Q35_FN void q35_matmul_epilogue_f32(float *y, int64_t rows, int64_t n, const float *bias,
                                    int act, const float *residual)
{
    int64_t r;
    Q35_PARALLEL_FOR(rows * n * 16)
    for (r = 0; r < rows; r++) {
        float *yr = y + r * n;
        const float *rr = residual ? residual + r * n : NULL;
        int64_t j;
        for (j = 0; j < n; j++) {
            float v = yr[j];
            if (bias)
                v = v + bias[j];
            v = q35_activate(act, v);
            if (rr)
                v = v + rr[j];
            yr[j] = v;
        }
    }
}

/* quant3p5.fused_matmul on Q3P5 weights: q35_qmatmul_f32, then the epilogue. */
Q35_FN void q35_fused_qmatmul_f32(float *y, const float *x, int64_t rows, const uint8_t *entry,
                                  uint8_t *work, const float *bias, int act,
                                  const float *residual)
{
    const q35_q3p5 t = q35_q3p5_view(entry);
    q35_qmatmul_f32(y, x, rows, entry, work);
    q35_matmul_epilogue_f32(y, rows, t.n, bias, act, residual);
}

/* quant3p5.fused_matmul on legacy pair43 weights. */
Q35_FN void q35_fused_pair_matmul_f32(float *y, const float *x, int64_t rows, int64_t k,
                                      int64_t n, const uint8_t *entry, const float *bias,
                                      int act, const float *residual)
{
    q35_pair_matmul_f32(y, x, rows, k, n, entry);
    q35_matmul_epilogue_f32(y, rows, n, bias, act, residual);
}

/* q35nn.swiglu: silu(gate) * up, elementwise. */
Q35_FN void q35_swiglu_f32(float *y, const float *gate, const float *up, int64_t count)
{
    int64_t i;
    for (i = 0; i < count; i++) {
        const float s = (float)((double)gate[i] / (1.0 + exp(-(double)gate[i])));
        y[i] = s * up[i];
    }
}

/* q35nn.attention: y[b, i, :] = softmax(q[b, i] k[b]^T * scale + mask[b, i]) v[b] for every
 * batch b < batches and query row i < sq; q [.., sq, d], k [.., sk, d], v [.., sk, dv].
 * The mask (may be NULL) of batch b, row i, key j is mask[mask_off[b] + i * mask_row +
 * j * mask_col] (broadcasting by zero strides). `work` holds sk floats and dv doubles:
 * the scores of one row, then the row's accumulators. */
Q35_FN void q35_attention_f32(float *y, const float *q, const float *k, const float *v,
                              int64_t batches, int64_t sq, int64_t sk, int64_t d, int64_t dv,
                              float scale, const float *mask, const int64_t *mask_off,
                              int64_t mask_row, int64_t mask_col, uint8_t *work)
{
    float *row = (float *)(void *)work;
    double *acc = (double *)(void *)(work + ((sk * 4 + 7) / 8) * 8);
    int64_t b, i, j, e, t;
    for (b = 0; b < batches; b++) {
        const float *kb = k + b * sk * d, *vb = v + b * sk * dv;
        for (i = 0; i < sq; i++) {
            const float *qi = q + (b * sq + i) * d;
            float *yi = y + (b * sq + i) * dv;
            double m, s = 0.0;
            for (j = 0; j < sk; j++) {
                double dot = 0.0;
                float f;
                for (t = 0; t < d; t++)
                    dot += (double)qi[t] * (double)kb[j * d + t];
                f = (float)dot;
                f = f * scale;
                if (mask)
                    f = f + mask[mask_off[b] + i * mask_row + j * mask_col];
                row[j] = f;
            }
            m = sk > 0 ? row[0] : 0.0;
            for (j = 1; j < sk; j++)
                m = row[j] > m ? row[j] : m;
            for (j = 0; j < sk; j++)
                s += exp((double)row[j] - m);
            for (j = 0; j < sk; j++)
                row[j] = (float)(exp((double)row[j] - m) / s);
            for (e = 0; e < dv; e++)
                acc[e] = 0.0;
            for (j = 0; j < sk; j++) {
                const double p = row[j];
                const float *vj = vb + j * dv;
                for (e = 0; e < dv; e++)
                    acc[e] += p * (double)vj[e];
            }
            for (e = 0; e < dv; e++)
                yi[e] = (float)acc[e];
        }
    }
}
/* ---- end of the fused-op kernels ------------------------------------------------------ */

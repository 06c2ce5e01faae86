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
 * value heads). Q35_BMM_TILE outputs of a row run side by side (vectorized); the scales
 * apply to each element as it is used, in float, before the widening. */
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

Q35_FN void q35_batch_matmul_strided_f32(float *c, const float *a, const float *b,
                                         int64_t batches, const int64_t *a_off, int64_t a_row,
                                         int64_t a_col, const float *a_scale,
                                         const int64_t *b_off, int64_t b_row, int64_t b_col,
                                         const float *b_scale, int64_t m, int64_t k, int64_t n,
                                         float *tile)
{
    int64_t t0 = 0;
    while (t0 < batches) {
        int64_t t1 = t0 + 1, t, i;
        const float *bt = b + b_off[t0];
        int64_t bt_row = b_row;
        while (t1 < batches && b_off[t1] == b_off[t0])
            t1++;
        if (b_col != 1) {
            const int64_t dims[2] = {k, n}, dst_st[2] = {n, 1}, src_st[2] = {b_row, b_col};
            q35_copy_strided(tile, b, sizeof(float), 2, dims, 0, dst_st, b_off[t0], src_st);
            bt = tile;
            bt_row = n;
        }
        for (t = t0; t < t1; t++)
            for (i = 0; i < m; i++)
                q35_bmm_row(c + (t * m + i) * n, a + a_off[t] + i * a_row, a_col, a_scale, bt,
                            bt_row, b_scale, k, n);
        t0 = t1;
    }
}

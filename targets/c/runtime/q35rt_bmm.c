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
 * B is read as tiles of Q35_BMM_TILE columns: in place where its columns are contiguous
 * and it is not scaled, else packed once into `tile` (k x Q35_BMM_TILE floats; the last
 * partial tile is padded with zeros, whose lanes are computed and dropped) and reused by
 * every batch that reads the same B (consecutive batches with equal b_off: the heads of a
 * GQA group share their key and value heads). */
Q35_FN void q35_batch_matmul_strided_f32(float *c, const float *a, const float *b,
                                         int64_t batches, const int64_t *a_off, int64_t a_row,
                                         int64_t a_col, const float *a_scale,
                                         const int64_t *b_off, int64_t b_row, int64_t b_col,
                                         const float *b_scale, int64_t m, int64_t k, int64_t n,
                                         float *tile)
{
    const int64_t nfull = n / Q35_BMM_TILE * Q35_BMM_TILE;
    const int direct = b_col == 1 && b_scale == NULL;
    int64_t t0 = 0;
    while (t0 < batches) {
        int64_t t1 = t0 + 1, j, t, i, p;
        int l;
        while (t1 < batches && b_off[t1] == b_off[t0])
            t1++;
        for (j = 0; j < n; j += Q35_BMM_TILE) {
            const int width = (int)(n - j < Q35_BMM_TILE ? n - j : Q35_BMM_TILE);
            const float *bt;
            int64_t bt_row;
            if (direct && j < nfull) {
                bt = b + b_off[t0] + j;
                bt_row = b_row;
            } else {
                const float *bb = b + b_off[t0] + j * b_col;
                for (p = 0; p < k; p++) {
                    float *row = tile + p * Q35_BMM_TILE;
                    for (l = 0; l < width; l++) {
                        float v = bb[p * b_row + l * b_col];
                        if (b_scale != NULL)
                            v = v * *b_scale;
                        row[l] = v;
                    }
                    for (; l < Q35_BMM_TILE; l++)
                        row[l] = 0.0f;
                }
                bt = tile;
                bt_row = Q35_BMM_TILE;
            }
            for (t = t0; t < t1; t++) {
                const float *ab = a + a_off[t];
                float *cb = c + t * m * n;
                for (i = 0; i < m; i++) {
                    const float *ai = ab + i * a_row;
                    double acc[Q35_BMM_TILE];
                    for (l = 0; l < Q35_BMM_TILE; l++)
                        acc[l] = 0.0;
                    for (p = 0; p < k; p++) {
                        float x = ai[p * a_col];
                        double av;
                        const float *bp = bt + p * bt_row;
                        if (a_scale != NULL)
                            x = x * *a_scale;
                        av = x;
                        for (l = 0; l < Q35_BMM_TILE; l++)
                            acc[l] += av * (double)bp[l];
                    }
                    for (l = 0; l < width; l++)
                        cb[i * n + j + l] = (float)acc[l];
                }
            }
        }
        t0 = t1;
    }
}

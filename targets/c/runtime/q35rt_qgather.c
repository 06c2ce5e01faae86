/* q35rt_qgather: rows of an embedding table stored as Q3P5 weights (quant3p5.gather),
 * appended to model.c only when a step uses it.
 *
 * The table E[V, D] is stored transposed, as the packed matrix W[K = D, N = V] (the layout
 * of a tied LM head's weight): table row t is column t of W. Q3P5 stores every column by
 * itself (docs/format.md section 5): its pair codes in one contiguous payload row of
 * G * group / 16 * 7 bytes, its group codes in one meta row, and its three float32 words
 * at index t of three arrays. A gathered row therefore reads one payload row, one meta row
 * and three words, and decodes them with the rule every Q3P5 kernel uses,
 * w = scale * level + offset in float32 (q35_group_meta, q35_block_levels). */

/* y[c, k] = deq(W)[k, indices[c]] for c < count, k < K; negative indices count from N.
 * Returns -1, writing nothing, when an index lies outside [-N, N). */
Q35_FN int q35_qgather_f32(float *y, const uint8_t *entry, const int64_t *indices,
                           int64_t count)
{
    const q35_q3p5 t = q35_q3p5_view(entry);
    int64_t c;
    for (c = 0; c < count; c++)
        if (indices[c] < -t.n || indices[c] >= t.n)
            return -1;
    for (c = 0; c < count; c++) {
        const int64_t n = indices[c] < 0 ? indices[c] + t.n : indices[c];
        const uint8_t *p = t.payload + n * t.payload_row;
        float *row = y + c * t.k;
        int64_t g;
        for (g = 0; g < t.groups; g++) {
            const int64_t k0 = g * t.group, kend = k0 + t.group < t.k ? k0 + t.group : t.k;
            float scale, offset;
            int64_t b;
            q35_group_meta(&t, n, g, &scale, &offset);
            for (b = 0; k0 + 16 * b < kend; b++) {
                const int64_t kb = k0 + 16 * b;
                const int nb = kend - kb >= 16 ? 16 : (int)(kend - kb);
                float w[16];
                int i;
                q35_block_levels(p + g * (t.group / 16) * 7 + 7 * b, w);
                for (i = 0; i < nb; i++)
                    row[kb + i] = scale * w[i] + offset;
            }
        }
    }
    return 0;
}

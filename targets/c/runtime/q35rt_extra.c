/* q35rt_extra: GridSample for targets/c/onnx_extra.py, appended to model.c only when a step
 * uses it. It follows onnx's reference (op_grid_sample.py): coordinates denormalized and
 * interpolation weights computed in float32, borders and reflection in double, each
 * interpolated value along an axis a float32 dot product of 2 (linear) or 4 (cubic)
 * weights with the values of the remaining axes, nearest by truncation after rint. */

typedef struct {
    const float *x;       /* one (batch, channel) plane */
    const int64_t *dims;  /* its spatial sizes */
    const int64_t *step;  /* their strides */
    const double *lo;     /* the border per axis */
    const double *hi;
    int nd;
    int pad;              /* 0 zeros, 1 border, 2 reflection */
    int cubic;
} q35_gs;

Q35_FN double q35_gs_reflect(double fx, double lo, double hi)
{
    const double rng = hi - lo;
    if (fx < lo) {
        const double dx = lo - fx;
        const int64_t n = (int64_t)(dx / rng);
        const double r = dx - (double)n * rng;
        fx = n % 2 == 0 ? lo + r : hi - r;
    } else if (fx > hi) {
        const double dx = fx - hi;
        const int64_t n = (int64_t)(dx / rng);
        const double r = dx - (double)n * rng;
        fx = n % 2 == 0 ? hi - r : lo + r;
    }
    return fx;
}

/* The index `i` of axis `k` after padding; -1 where zero padding reads a zero. */
Q35_FN int64_t q35_gs_index(const q35_gs *g, int k, int64_t i)
{
    const int64_t d = g->dims[k];
    if (g->pad == 0)
        return i >= 0 && i < d ? i : -1;
    if (g->pad == 1)
        return i < 0 ? 0 : i > d - 1 ? d - 1 : i;
    return (int64_t)q35_gs_reflect((double)i, g->lo[k], g->hi[k]);
}

Q35_FN float q35_gs_nearest(const q35_gs *g, const float *pos)
{
    int64_t at = 0;
    int k;
    for (k = 0; k < g->nd; k++) {
        const int64_t i = q35_gs_index(g, k, (int64_t)(int32_t)pos[k]);
        if (i < 0)
            return 0.0f;
        at += i * g->step[k];
    }
    return g->x[at];
}

Q35_FN void q35_gs_coeffs(const q35_gs *g, float t, float *c)
{
    const float a = -0.75f;
    t = fabsf(t);
    if (!g->cubic) {
        c[0] = 1.0f - t;
        c[1] = t;
        return;
    }
    c[0] = ((a * (t + 1.0f) - 5.0f * a) * (t + 1.0f) + 8.0f * a) * (t + 1.0f) - 4.0f * a;
    c[1] = ((a + 2.0f) * t - (a + 3.0f)) * t * t + 1.0f;
    c[2] = ((a + 2.0f) * (1.0f - t) - (a + 3.0f)) * (1.0f - t) * (1.0f - t) + 1.0f;
    c[3] = ((a * (2.0f - t) - 5.0f * a) * (2.0f - t) + 8.0f * a) * (2.0f - t) - 4.0f * a;
}

/* The value interpolated over axes k.. of the plane at offset `base`. */
Q35_FN float q35_gs_interp(const q35_gs *g, int k, int64_t base, const float *pos)
{
    const int taps = g->cubic ? 4 : 2;
    const int64_t x0 = (int64_t)floorf(pos[k]);
    float c[4], acc = 0.0f;
    int t;
    q35_gs_coeffs(g, pos[k] - (float)x0, c);
    for (t = 0; t < taps; t++) {
        const int64_t i = q35_gs_index(g, k, x0 + t - (g->cubic ? 1 : 0));
        float v = 0.0f;
        if (i >= 0)
            v = k + 1 == g->nd ? g->x[base + i * g->step[k]]
                               : q35_gs_interp(g, k + 1, base + i * g->step[k], pos);
        acc += c[t] * v;
    }
    return acc;
}

/* One output point: `grid` holds its nd normalized coordinates (x first). */
Q35_FN float q35_grid_sample_point(const q35_gs *g, const float *grid, int align, int nearest)
{
    float pos[3];
    int k;
    for (k = 0; k < g->nd; k++) {
        const float n = grid[g->nd - 1 - k];
        const float len = (float)g->dims[k];
        float v = align ? (n + 1.0f) / 2.0f * (len - 1.0f) : ((n + 1.0f) * len - 1.0f) / 2.0f;
        if (nearest)
            v = rintf(v);
        if ((double)v < g->lo[k] || (double)v > g->hi[k]) {
            if (g->pad == 1)
                v = v < 0.0f ? 0.0f : v > len - 1.0f ? len - 1.0f : v;
            else if (g->pad == 2)
                v = (float)q35_gs_reflect((double)v, g->lo[k], g->hi[k]);
        }
        pos[k] = v;
    }
    return nearest ? q35_gs_nearest(g, pos) : q35_gs_interp(g, 0, 0, pos);
}

/* numpy's floor_divide of two doubles (npy_divmod). */
Q35_FN double q35_floor_divide(double a, double b)
{
    double mod, div, floordiv;
    if (b == 0.0)
        return a / b;
    mod = fmod(a, b);
    div = (a - mod) / b;
    if (mod != 0.0 && ((b < 0) != (mod < 0)))
        div -= 1.0;
    if (div != 0.0) {
        floordiv = floor(div);
        if (div - floordiv > 0.5)
            floordiv += 1.0;
    } else {
        floordiv = copysign(0.0, a / b);
    }
    return floordiv;
}

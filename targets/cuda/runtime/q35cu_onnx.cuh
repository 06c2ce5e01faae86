/* q35cu_onnx: device helpers of the generic ONNX ops' kernels (targets/cuda/onnx.py),
 * appended to model.cu only when a step uses them. The same functions, with the same
 * names and results, as the C target's q35rt_onnx.c, so that the expressions of
 * targets/c/onnx_tensor.py render unchanged in a kernel: exact on integers and bools
 * (numpy's wrap-around, division by zero and INT_MIN / -1 results, x86's "indefinite"
 * value for float to integer conversions out of range), float16/bfloat16 kept as bits and
 * computed in float, libm's double-precision functions rounded once to float. */

#define Q35_DFN [[maybe_unused]] static __device__

/* The offset in a broadcast operand of element `i` of the output: `dims` are the output's
 * sizes, `st` the operand's strides (0 along broadcast axes). */
Q35_DFN int64_t q35_bcast(int64_t i, int rank, const int64_t *dims, const int64_t *st)
{
    int64_t off = 0;
    for (int d = rank - 1; d >= 0; d--) {
        off += (i % dims[d]) * st[d];
        i /= dims[d];
    }
    return off;
}

Q35_DFN float q35_f16_to_f32(uint16_t h)
{
    const uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    const uint32_t exp = (h >> 10) & 0x1fu, man = h & 0x3ffu;
    if (exp == 0x1fu)
        return __uint_as_float(sign | 0x7f800000u | (man << 13));
    if (exp != 0)
        return __uint_as_float(sign | ((exp + 112u) << 23) | (man << 13));
    const float f = (float)man * 5.9604644775390625e-08f; /* man * 2^-24, exact */
    return sign ? -f : f;
}

/* float16 nearest to `x` (ties to even), rounded once from double as numpy does. */
Q35_DFN uint16_t q35_f64_to_f16(double x)
{
    const uint16_t sign = signbit(x) ? 0x8000u : 0;
    const double a = fabs(x);
    if (a != a)
        return (uint16_t)(sign | 0x7e00u);
    if (a >= 65520.0)
        return (uint16_t)(sign | 0x7c00u);
    if (a < 6.103515625e-05)
        return (uint16_t)(sign | (uint16_t)nearbyint(a * 16777216.0));
    int e;
    frexp(a, &e);
    double r = nearbyint(ldexp(a, 11 - e));
    if (r >= 2048.0) {
        r /= 2;
        e += 1;
    }
    if (e + 14 >= 31)
        return (uint16_t)(sign | 0x7c00u);
    return (uint16_t)(sign | (uint16_t)((e + 14) << 10) | (uint16_t)((uint32_t)r - 1024u));
}

Q35_DFN float q35_bf16_to_f32(uint16_t h) { return __uint_as_float((uint32_t)h << 16); }

/* bfloat16 nearest to `x` (through float32, ties to even; NaN stays a quiet NaN). */
Q35_DFN uint16_t q35_f64_to_bf16(double x)
{
    const float f = (float)x;
    uint32_t bits = __float_as_uint(f);
    if (f != f)
        return (uint16_t)((bits >> 16) | 0x40u);
    bits += 0x7fffu + ((bits >> 16) & 1u);
    return (uint16_t)(bits >> 16);
}

/* Truncation toward zero where the value fits int64; NaN and values out of range give
 * INT64_MIN (x86's cvttsd2si, and so numpy). */
Q35_DFN int64_t q35_f2i64(double x)
{
    if (!(x > -9223372036854775808.0 - 1.0 && x < 9223372036854775808.0))
        return INT64_MIN;
    return (int64_t)x;
}

Q35_DFN uint64_t q35_f2u64(double x)
{
    if (x >= 9223372036854775808.0 && x < 18446744073709551616.0)
        return (uint64_t)x;
    return (uint64_t)q35_f2i64(x);
}

Q35_DFN int64_t q35_div_i64(int64_t a, int64_t b)
{
    if (b == 0)
        return 0;
    if (b == -1)
        return (int64_t)(0u - (uint64_t)a);
    return a / b;
}

Q35_DFN uint64_t q35_div_u64(uint64_t a, uint64_t b) { return b == 0 ? 0 : a / b; }

Q35_DFN int64_t q35_mod_i64(int64_t a, int64_t b)
{
    if (b == 0 || b == -1)
        return 0;
    const int64_t r = a % b;
    return (r != 0 && ((r < 0) != (b < 0))) ? r + b : r;
}

Q35_DFN int64_t q35_fmod_i64(int64_t a, int64_t b) { return (b == 0 || b == -1) ? 0 : a % b; }

Q35_DFN uint64_t q35_mod_u64(uint64_t a, uint64_t b) { return b == 0 ? 0 : a % b; }

Q35_DFN double q35_mod_f64(double a, double b)
{
    double m = fmod(a, b);
    if (b == 0)
        return m;
    if (m != 0) {
        if ((b < 0) != (m < 0))
            m += b;
    } else
        m = copysign(0.0, b);
    return m;
}

Q35_DFN uint64_t q35_ipow(uint64_t a, int64_t b)
{
    uint64_t r = 1;
    while (b > 0) {
        if (b & 1)
            r *= a;
        a *= a;
        b >>= 1;
    }
    return r;
}

Q35_DFN uint64_t q35_shl(uint64_t a, uint64_t b, int bits) { return b >= (uint64_t)bits ? 0 : a << b; }
Q35_DFN uint64_t q35_shr(uint64_t a, uint64_t b, int bits) { return b >= (uint64_t)bits ? 0 : a >> b; }

Q35_DFN double q35_fmaxn(double a, double b) { return (a != a || b != b) ? a + b : (a > b ? a : b); }
Q35_DFN double q35_fminn(double a, double b) { return (a != a || b != b) ? a + b : (a < b ? a : b); }

Q35_DFN double q35_signf(double x) { return x > 0 ? 1.0 : (x < 0 ? -1.0 : x); }

Q35_DFN int64_t q35_sar(int64_t a, int64_t b, int bits)
{
    if (b < 0 || b >= bits)
        return a < 0 ? -1 : 0;
    return a < 0 ? ~(int64_t)((~(uint64_t)a) >> b) : (int64_t)((uint64_t)a >> b);
}

Q35_DFN int64_t q35_imax(int64_t a, int64_t b) { return a > b ? a : b; }
Q35_DFN int64_t q35_imin(int64_t a, int64_t b) { return a < b ? a : b; }
Q35_DFN uint64_t q35_umax(uint64_t a, uint64_t b) { return a > b ? a : b; }
Q35_DFN uint64_t q35_umin(uint64_t a, uint64_t b) { return a < b ? a : b; }

/* The double-precision functions rounded once to float (q35_<fn>_f). */
#define Q35_LIBM_F1(fn) Q35_DFN float q35_##fn##_f(float x) { return (float)fn((double)x); }
Q35_LIBM_F1(exp)
Q35_LIBM_F1(log)
Q35_LIBM_F1(tanh)
Q35_LIBM_F1(sin)
Q35_LIBM_F1(cos)
Q35_LIBM_F1(tan)
Q35_LIBM_F1(asin)
Q35_LIBM_F1(acos)
Q35_LIBM_F1(atan)
Q35_LIBM_F1(sinh)
Q35_LIBM_F1(cosh)
Q35_LIBM_F1(asinh)
Q35_LIBM_F1(acosh)
Q35_LIBM_F1(atanh)
Q35_LIBM_F1(erf)
Q35_LIBM_F1(sqrt)
Q35_LIBM_F1(fabs)
Q35_LIBM_F1(ceil)
Q35_LIBM_F1(floor)
Q35_LIBM_F1(nearbyint)
#undef Q35_LIBM_F1
Q35_DFN float q35_pow_f(float a, float b) { return (float)pow((double)a, (double)b); }

/* ONNX GatherElements: y[e] = data at index e of `indices` with axis `axis` replaced by
 * the index's value (negative counts from the end; out of range sets *bad). `idims` are the
 * index tensor's sizes, `dst` the data's strides. */
template <typename T>
__global__ void q35_gather_elements(T *y, const T *data, const int64_t *indices, int64_t count,
                                    int rank, int axis, int64_t size, const int64_t *idims,
                                    const int64_t *dst, int *bad)
{
    for (int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; e < count;
         e += (int64_t)gridDim.x * blockDim.x) {
        int64_t off = 0, r = e;
        for (int a = rank - 1; a >= 0; a--) {
            if (a != axis)
                off += (r % idims[a]) * dst[a];
            r /= idims[a];
        }
        int64_t k = indices[e];
        if (k < -size || k >= size) {
            *bad = 1;
            y[e] = (T)0;
            continue;
        }
        y[e] = data[off + (k < 0 ? k + size : k) * dst[axis]];
    }
}

/* ONNX GatherND: `count` index tuples of `m` entries, each selecting a slice of `slice`
 * elements; `per_batch` tuples share one of the `batch_dims` leading batches, which are
 * `batch_stride` data elements apart. `dsizes` / `dst`: sizes and strides of the indexed
 * data axes. */
template <typename T>
__global__ void q35_gather_nd(T *y, const T *data, const int64_t *indices, int64_t count,
                              int m, int64_t slice, int64_t per_batch, int64_t batch_stride,
                              const int64_t *dsizes, const int64_t *dst, int *bad)
{
    for (int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; e < count * slice;
         e += (int64_t)gridDim.x * blockDim.x) {
        const int64_t p = e / slice;
        int64_t off = (p / per_batch) * batch_stride;
        int ok = 1;
        for (int t = 0; t < m; t++) {
            int64_t k = indices[p * m + t];
            if (k < -dsizes[t] || k >= dsizes[t]) {
                ok = 0;
                break;
            }
            off += (k < 0 ? k + dsizes[t] : k) * dst[t];
        }
        if (!ok) {
            *bad = 1;
            y[e] = (T)0;
            continue;
        }
        y[e] = data[off + e % slice];
    }
}

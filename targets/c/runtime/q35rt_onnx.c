/* q35rt_onnx: helpers of the generic ONNX ops (targets/c/onnx_tensor.py), appended to
 * model.c only when a step uses them. Each matches the onnx reference implementation
 * (numpy) exactly on integers and bools; float16 and bfloat16 are stored as their bits
 * (uint16_t) and computed in float, rounded to nearest-even on store, as numpy and
 * ml_dtypes do. No undefined behaviour: integer arithmetic that numpy wraps is done in
 * unsigned types, division by zero and INT_MIN / -1 have numpy's results, and float to
 * integer conversions of values out of range give x86's (and so numpy's) "indefinite"
 * value instead of being undefined. */

/* The offset in a broadcast operand of element `i` of the output: `dims` are the output's
 * sizes, `st` the operand's strides (0 along broadcast axes). */
Q35_FN int64_t q35_bcast(int64_t i, int rank, const int64_t *dims, const int64_t *st)
{
    int64_t off = 0;
    int d;
    for (d = rank - 1; d >= 0; d--) {
        off += (i % dims[d]) * st[d];
        i /= dims[d];
    }
    return off;
}

/* -- float16 / bfloat16 ---------------------------------------------------------------- */

Q35_FN float q35_f16_to_f32(uint16_t h)
{
    const uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    const uint32_t exp = (h >> 10) & 0x1fu, man = h & 0x3ffu;
    uint32_t bits;
    float f;
    if (exp == 0x1fu)
        bits = sign | 0x7f800000u | (man << 13);
    else if (exp != 0)
        bits = sign | ((exp + 112u) << 23) | (man << 13);
    else {
        f = (float)man * 5.9604644775390625e-08f; /* man * 2^-24, exact */
        return sign ? -f : f;
    }
    memcpy(&f, &bits, 4);
    return f;
}

/* float16 nearest to `x` (ties to even), from double so that float64 -> float16 rounds
 * once, as numpy's does; float32 values convert to double exactly. */
Q35_FN uint16_t q35_f64_to_f16(double x)
{
    uint16_t sign = signbit(x) ? 0x8000u : 0;
    double a = fabs(x), scaled, r;
    int e;
    if (a != a)
        return (uint16_t)(sign | 0x7e00u);
    if (a >= 65520.0) /* rounds past the largest float16, 65504 */
        return (uint16_t)(sign | 0x7c00u);
    if (a < 6.103515625e-05) { /* subnormal: multiples of 2^-24 */
        r = nearbyint(a * 16777216.0);
        return (uint16_t)(sign | (uint16_t)r);
    }
    frexp(a, &e); /* a = m * 2^e, 0.5 <= m < 1 */
    scaled = ldexp(a, 11 - e); /* in [1024, 2048) */
    r = nearbyint(scaled);
    if (r >= 2048.0) {
        r /= 2;
        e += 1;
    }
    if (e + 14 >= 31)
        return (uint16_t)(sign | 0x7c00u);
    return (uint16_t)(sign | (uint16_t)((e + 14) << 10) | (uint16_t)((uint32_t)r - 1024u));
}

Q35_FN float q35_bf16_to_f32(uint16_t h)
{
    uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

/* bfloat16 nearest to `x` (through float32, ties to even; NaN stays a quiet NaN), as
 * ml_dtypes converts. */
Q35_FN uint16_t q35_f64_to_bf16(double x)
{
    float f = (float)x;
    uint32_t bits;
    memcpy(&bits, &f, 4);
    if (f != f)
        return (uint16_t)((bits >> 16) | 0x40u);
    bits += 0x7fffu + ((bits >> 16) & 1u);
    return (uint16_t)(bits >> 16);
}

/* -- float to integer ------------------------------------------------------------------ */

/* Truncation toward zero where the value fits int64; NaN and values out of range give
 * INT64_MIN, what x86's cvttsd2si (and so numpy) gives. Narrower integer types take the
 * low bits of this, as numpy's casts through int64 do. */
Q35_FN int64_t q35_f2i64(double x)
{
    if (!(x > -9223372036854775808.0 - 1.0 && x < 9223372036854775808.0))
        return INT64_MIN;
    return (int64_t)x;
}

/* float to uint64: values in [2^63, 2^64) convert exactly; the rest as q35_f2i64. */
Q35_FN uint64_t q35_f2u64(double x)
{
    if (x >= 9223372036854775808.0 && x < 18446744073709551616.0)
        return (uint64_t)x;
    return (uint64_t)q35_f2i64(x);
}

/* -- integer arithmetic ---------------------------------------------------------------- */

/* C-style quotient (toward zero) of ONNX Div on integers; b == 0 gives 0 (numpy's
 * floor_divide), INT64_MIN / -1 wraps. */
Q35_FN int64_t q35_div_i64(int64_t a, int64_t b)
{
    if (b == 0)
        return 0;
    if (b == -1)
        return (int64_t)(0u - (uint64_t)a);
    return a / b;
}

Q35_FN uint64_t q35_div_u64(uint64_t a, uint64_t b) { return b == 0 ? 0 : a / b; }

/* numpy's remainder (sign of the divisor) and fmod (sign of the dividend); b == 0 gives 0. */
Q35_FN int64_t q35_mod_i64(int64_t a, int64_t b)
{
    int64_t r;
    if (b == 0 || b == -1)
        return 0;
    r = a % b;
    return (r != 0 && ((r < 0) != (b < 0))) ? r + b : r;
}

Q35_FN int64_t q35_fmod_i64(int64_t a, int64_t b)
{
    return (b == 0 || b == -1) ? 0 : a % b;
}

Q35_FN uint64_t q35_mod_u64(uint64_t a, uint64_t b) { return b == 0 ? 0 : a % b; }

/* numpy's float remainder (npy_divmod): fmod, moved to the divisor's sign. */
Q35_FN double q35_mod_f64(double a, double b)
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

/* a ** b on integers with wrap-around (numpy's power; b >= 0). */
Q35_FN uint64_t q35_ipow(uint64_t a, int64_t b)
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

/* ONNX BitShift on an unsigned value of `bits` bits: shifts of `bits` or more give 0. */
Q35_FN uint64_t q35_shl(uint64_t a, uint64_t b, int bits)
{
    return b >= (uint64_t)bits ? 0 : a << b;
}

Q35_FN uint64_t q35_shr(uint64_t a, uint64_t b, int bits)
{
    return b >= (uint64_t)bits ? 0 : a >> b;
}

/* numpy's maximum / minimum on floats: NaN if either is NaN. */
Q35_FN double q35_fmaxn(double a, double b) { return (a != a || b != b) ? a + b : (a > b ? a : b); }
Q35_FN double q35_fminn(double a, double b) { return (a != a || b != b) ? a + b : (a < b ? a : b); }

/* numpy's sign: -1, 0, 1 (NaN stays NaN). */
Q35_FN double q35_signf(double x) { return x > 0 ? 1.0 : (x < 0 ? -1.0 : x); }

/* ONNX BitShift RIGHT on a signed value: arithmetic, shifts of `bits` or more (or
 * negative) give the sign (numpy's right_shift after the reference's range check). */
Q35_FN int64_t q35_sar(int64_t a, int64_t b, int bits)
{
    if (b < 0 || b >= bits)
        return a < 0 ? -1 : 0;
    return a < 0 ? ~(int64_t)((~(uint64_t)a) >> b) : (int64_t)((uint64_t)a >> b);
}

Q35_FN int64_t q35_imax(int64_t a, int64_t b) { return a > b ? a : b; }
Q35_FN int64_t q35_imin(int64_t a, int64_t b) { return a < b ? a : b; }
Q35_FN uint64_t q35_umax(uint64_t a, uint64_t b) { return a > b ? a : b; }
Q35_FN uint64_t q35_umin(uint64_t a, uint64_t b) { return a < b ? a : b; }

/* The C library's double-precision functions rounded once to float (q35_<fn>_f). */
#define Q35_LIBM_F1(fn) Q35_FN float q35_##fn##_f(float x) { return (float)fn((double)x); }
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
Q35_FN float q35_pow_f(float a, float b) { return (float)pow((double)a, (double)b); }

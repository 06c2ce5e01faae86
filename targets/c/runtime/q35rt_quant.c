/* q35rt_quant: the narrow element types of ONNX (float8 e4m3fn / e4m3fnuz / e5m2 / e5m2fnuz,
 * float8 e8m0, float4 e2m1, int4 / uint4, int2 / uint2) and the quantization ops
 * (targets/c/onnx_quant.py), appended to model.c only when a step uses them.
 *
 * Every narrow value is stored in one byte (its bits in the low ones, as ml_dtypes keeps
 * them) and computed in float (the floats) or int (the integers). The conversions are
 * those of the interpreter, which converts with numpy and ml_dtypes: to a narrow float,
 * round to nearest-even at the format's precision and overflow to its infinity or NaN (or
 * its largest value when it has neither); to a narrow integer, integers wrap and floats
 * truncate toward zero, a value out of range (or NaN) giving 0. */

/* A narrow float format: exponent and mantissa bits, bias, and how it spells the special
 * values (Q35_F8_IEEE: infinities and NaNs at the top exponent; Q35_F8_FN: no
 * infinity, NaN is all ones; Q35_F8_FNUZ: no infinity, no -0, NaN is the sign bit alone;
 * Q35_F8_NONE: no infinity, no NaN). */
#define Q35_F8_IEEE 0
#define Q35_F8_FN 1
#define Q35_F8_FNUZ 2
#define Q35_F8_NONE 3

/* The largest finite value of a format. */
Q35_FN double q35_f8_max(int ebits, int mbits, int bias, int kind)
{
    int emax = (1 << ebits) - 1 - (kind == Q35_F8_IEEE);
    int mmax = (1 << mbits) - 1 - (kind == Q35_F8_FN);
    return ldexp((double)((1 << mbits) + mmax), emax - bias - mbits);
}

/* The value of the bits `b` of a format (exact in float). */
Q35_FN float q35_f8_to_f32(uint8_t b, int ebits, int mbits, int bias, int kind)
{
    const int sign = (b >> (ebits + mbits)) & 1;
    const int e = (b >> mbits) & ((1 << ebits) - 1), m = b & ((1 << mbits) - 1);
    double v;
    if (kind == Q35_F8_FNUZ && b == (1u << (ebits + mbits)))
        return -NAN; /* the sign bit's NaN reads as a negative one, as in ml_dtypes */
    if (kind == Q35_F8_FN && e == (1 << ebits) - 1 && m == (1 << mbits) - 1)
        return sign ? -NAN : NAN;
    if (kind == Q35_F8_IEEE && e == (1 << ebits) - 1)
        return m ? (sign ? -NAN : NAN) : (sign ? -INFINITY : INFINITY);
    v = e == 0 ? ldexp((double)m, 1 - bias - mbits)
               : ldexp((double)((1 << mbits) + m), e - bias - mbits);
    return (float)(sign ? -v : v);
}

/* The bits of the format nearest to `x` (ties to even), as ml_dtypes converts: NaN keeps
 * its sign where the format has one (quiet NaN), infinities and values that round past the
 * largest become infinity (IEEE), NaN (FN, FNUZ) or the largest value (NONE, which turns
 * NaN into -0 / +0 the way ml_dtypes does); FNUZ has no -0. */
Q35_FN uint8_t q35_f64_to_f8(double x, int ebits, int mbits, int bias, int kind)
{
    const int width = ebits + mbits;
    const uint8_t sign = signbit(x) ? (uint8_t)(1u << width) : 0;
    const uint8_t top = (uint8_t)((1u << width) - 1); /* every exponent and mantissa bit */
    const double max = q35_f8_max(ebits, mbits, bias, kind);
    double a = fabs(x), r;
    int e, emin = 1 - bias;
    if (x != x) {
        if (kind == Q35_F8_FNUZ)
            return (uint8_t)(1u << width);
        if (kind == Q35_F8_NONE)
            return (uint8_t)(sign ^ (1u << width));
        if (kind == Q35_F8_FN)
            return (uint8_t)(sign | top);
        return (uint8_t)(sign | (((1u << ebits) - 1u) << mbits) | (1u << (mbits - 1)));
    }
    if (a != 0) {
        frexp(a, &e); /* a = f * 2^e, 0.5 <= f < 1 */
        e -= 1;
        if (e < emin)
            e = emin;
        r = nearbyint(ldexp(a, mbits - e)); /* ties to even */
        a = ldexp(r, e - mbits);
    }
    if (a > max) {
        if (kind == Q35_F8_IEEE)
            return (uint8_t)(sign | (((1u << ebits) - 1u) << mbits));
        if (kind == Q35_F8_FNUZ)
            return (uint8_t)(1u << width);
        if (kind == Q35_F8_FN)
            return (uint8_t)(sign | top);
        a = max;
    }
    if (a == 0)
        return kind == Q35_F8_FNUZ ? 0 : sign;
    frexp(a, &e);
    e -= 1;
    if (e < emin) /* subnormal: exponent field 0 */
        return (uint8_t)(sign | (uint8_t)ldexp(a, bias - 1 + mbits));
    return (uint8_t)(sign | (uint8_t)((e + bias) << mbits)
                     | (uint8_t)(ldexp(a, mbits - e) - (double)(1 << mbits)));
}

/* ONNX Cast to a float8 with saturate=1 (onnx.numpy_helper.saturate_cast): clipped to the
 * largest finite value, then converted; NaN stays NaN. */
Q35_FN uint8_t q35_f64_to_f8_sat(double x, int ebits, int mbits, int bias, int kind)
{
    const double max = q35_f8_max(ebits, mbits, bias, kind);
    if (x > max)
        x = max;
    else if (x < -max)
        x = -max;
    return q35_f64_to_f8(x, ebits, mbits, bias, kind);
}

/* float8 e8m0 (a power of two 2^(b - 127); 0xff is NaN). */
Q35_FN float q35_e8m0_to_f32(uint8_t b)
{
    return b == 0xffu ? NAN : (float)ldexp(1.0, (int)b - 127);
}

/* ONNX Cast to float8 e8m0 (onnx.numpy_helper.to_float8e8m0): the float32 exponent of
 * `x`, rounded up (mode 1) when any mantissa bit is set, to nearest (mode 2: guard bit and
 * any lower bit, or a normal number) or down (mode 0); NaN and infinities give 0xff, and
 * with `saturate` rounding never reaches it. */
Q35_FN uint8_t q35_f32_to_e8m0(float x, int saturate, int mode)
{
    uint32_t bits, exponent, up = 0;
    memcpy(&bits, &x, 4);
    exponent = (bits >> 23) & 0xffu;
    if (exponent == 0xffu)
        return 0xffu;
    if (mode == 1)
        up = (bits & 0x7fffffu) != 0;
    else if (mode == 2)
        up = (bits & 0x400000u) && ((bits & 0x200000u) || (bits & 0x1fffffu) || exponent > 0);
    if (saturate && exponent == 0xfeu)
        up = 0;
    return (uint8_t)(exponent + up);
}

/* -- narrow integers ------------------------------------------------------------------- */

/* A signed `bits`-bit integer stored in the low bits of `b`. */
Q35_FN int8_t q35_intn_value(uint8_t b, int bits)
{
    const int half = 1 << (bits - 1);
    return (int8_t)(((b & ((1 << bits) - 1)) ^ half) - half);
}

/* A float truncated toward zero into [lo, hi], 0 when out of range or NaN, as the low
 * `bits` bits (ml_dtypes' float to int4 / int2 conversion). */
Q35_FN uint8_t q35_f64_to_intn(double x, int bits, int is_signed)
{
    const double lo = is_signed ? -(double)(1 << (bits - 1)) : 0.0;
    const double hi = is_signed ? (double)((1 << (bits - 1)) - 1) : (double)((1 << bits) - 1);
    double t = trunc(x);
    if (!(t >= lo && t <= hi))
        return 0;
    return (uint8_t)((int)t & ((1 << bits) - 1));
}

/* A narrow float (or any float) to an integer type of range [lo, hi] as ml_dtypes
 * converts: truncated toward zero, 0 when out of range or NaN. */
Q35_FN int64_t q35_f64_to_int_or0(double x, double lo, double hi)
{
    double t = trunc(x);
    return (t >= lo && t <= hi) ? (int64_t)t : 0;
}

Q35_FN int64_t q35_f64_to_i64_or0(double x)
{
    double t = trunc(x);
    return (t >= -9223372036854775808.0 && t < 9223372036854775808.0) ? (int64_t)t : 0;
}

Q35_FN uint64_t q35_f64_to_u64_or0(double x)
{
    double t = trunc(x);
    return (t >= 0 && t < 18446744073709551616.0) ? (uint64_t)t : 0;
}

/* numpy's float to int32 (x86's cvttsd2si): truncation, INT32_MIN when out of range or
 * NaN. */
Q35_FN int32_t q35_f2i32(double x)
{
    if (!(x > -2147483649.0 && x < 2147483648.0))
        return INT32_MIN;
    return (int32_t)x;
}

/* ---- q35c CUDA runtime: the kernels every generated model.cu contains ------------------
 *
 * CUDA C++ for sm_90 (and any sm_70+ through the PTX fallback). Numerics follow q35c's
 * reference semantics (q35c.semantics) as the C runtime (targets/c/runtime/q35rt.c) does:
 * elementwise float ops round once in float32; the composite ops (softmax, norms, GELU,
 * SiLU, attention) and the plain float matmuls work in double, in the C runtime's order,
 * and round once. Build with -fmad=false: a contracted multiply-add would change the Q3P5
 * decode `scale * level + offset`, the int8 rescale and the elementwise steps; the kernels
 * that want fused multiply-adds (the fp32 accumulation of the float-path GEMV) ask for them
 * with fmaf().
 *
 * Q3P5 weights stay packed in GPU memory: 7-bit pair codes (8 in 7 bytes), 7-bit group
 * codes and three float32 words per column, as docs/format.md stores them; the tensors the
 * GEMV takes (group 32, K % 16 == 0) have their codes rearranged into tiles of 32 columns
 * by 256 weights (the blob layout of targets/cuda/blob.py) so that a warp reads whole
 * 512-byte lines, one column per lane. They are decoded in registers inside the dot
 * products; no float weight matrix ever exists.
 *
 * Two matmul families:
 * - the GEMV kernels (q35_gemv_f32, q35_gemv_i8): group size 32, K a multiple of 16, up
 *   to 8 activation rows per launch. A lane computes one column; the KS warps of a block
 *   share 32 columns and split K in chunks of 256 weights. Pair codes are looked up in
 *   shared tables with one copy per lane (no bank conflicts). Float path: each weight
 *   fmaf(scale, level, offset), products accumulated in float32 with fmaf. int8 path: dp4a
 *   on four int8 levels at a time, an exact int32 sum per group and row, then the float32
 *   rescale term of each group and its running sum in group order, as
 *   q35c.semantics.rescale_group does: bit-exact.
 * - the tensor-core GEMM (q35_gemm_f16, opt-in with Q35_TENSOR_CORES=1): float path,
 *   more than 8 rows; fp16 tiles of the activations and of the decoded weights into
 *   mma.sync m16n8k16 with fp32 accumulation (its own tolerance, docs/cuda.md).
 * - portable kernels (q35_qmatmul_f32_simple, q35_qmatmul_i8_simple): any group size and
 *   K; one thread per column, the C runtime's order (float path summed in double).
 */
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <stdint.h>

#define Q35_GEMV_MAX_ROWS 8
#define Q35_RECORD_CODES 3584 /* a tiled record: 7 x 32 uint4 of pair codes, */
#define Q35_RECORD 3840       /* then 32 x 8 bytes of group codes (blob.py RECORD) */
#define Q35_THREADS 256

/* CODEBOOK[code][0 or 1]: the integer levels of the even-k and odd-k weight of a pair. */
__device__ const int8_t q35_codebook[128][2] = {
Q35_CODEBOOK_ROWS
};

/* SCALE_STEPS[e] = 2^(-e/5) rounded to float32, as bit patterns (exact). */
__device__ const uint32_t q35_scale_step_bits[32] = {
Q35_SCALE_STEP_BITS
};

/* The legacy pair43 levels (format.md, legacy layout). */
__device__ const int8_t q35_legacy_levels[128][2] = {
Q35_LEGACY_LEVEL_ROWS
};

/* A Q3P5 tensor in the GPU blob: per column super_scale, offset_base, offset_step
 * (float32 [N] each), then either (tiled: group 32, K % 16 == 0) the records of
 * ceil(N / 32) x chunks at payload (== meta), or the group codes (N rows of meta_row bytes,
 * as serialized) and the pair codes (N rows of prow bytes: the serialized row, zero-padded
 * to 16 bytes). */
struct q35_q3p5 {
    int k, n, group, groups;
    int meta_row, prow;
    int tiled;
    const float *super_scale, *offset_base, *offset_step;
    const uint8_t *meta, *payload;
};

/* Chunks of 256 weights per column (tiled layout). */
__host__ __device__ __forceinline__ int q35_chunks(const q35_q3p5 &t)
{
    return (t.groups + 7) / 8;
}

/* The tiled record of column n's chunk c. */
__device__ __forceinline__ const uint8_t *q35_record(const q35_q3p5 &t, int n, int c)
{
    return t.payload + ((int64_t)(n / 32) * q35_chunks(t) + c) * Q35_RECORD;
}

/* The activation of a fused matmul (targets/native/lower.py's "activation"). */
enum { Q35_ACT_NONE, Q35_ACT_RELU, Q35_ACT_GELU, Q35_ACT_GELU_TANH, Q35_ACT_SILU };

/* What a matmul does to its outputs: + bias[n], activation, + residual[r, n]. */
struct q35_epilogue {
    const float *bias;
    const float *residual;
    int act;
};

__device__ __forceinline__ float q35_maxf(float a, float b)
{
    return (a != a || b != b) ? a + b : (a > b ? a : b);
}

__device__ __forceinline__ float q35_minf(float a, float b)
{
    return (a != a || b != b) ? a + b : (a < b ? a : b);
}

/* One activation, as the standalone ops compute it (double, rounded once). */
__device__ __forceinline__ float q35_activate(int act, float x)
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

/* y[r, n] after the epilogue: each step rounds to float32 in the op's order. */
__device__ __forceinline__ float q35_epilogue_apply(const q35_epilogue &e, float v, int64_t r,
                                                    int64_t n, int64_t ncols)
{
    if (e.bias)
        v = v + e.bias[n];
    v = q35_activate(e.act, v);
    if (e.residual)
        v = v + e.residual[r * ncols + n];
    return v;
}

/* Scale and offset of group g of column n (format.md section 3; q35_group_meta in C).
 * The offset grid {-1.5, -0.5, 0.5, 1.5} is (j - 1.5), exact in float32. */
__device__ __forceinline__ void q35_group_meta(const q35_q3p5 &t, int n, int g,
                                               const float *steps, float *scale,
                                               float *offset)
{
    const uint8_t *m = t.tiled ? q35_record(t, n, g / 8) + Q35_RECORD_CODES + (n % 32) * 8
                               : t.meta + (int64_t)n * t.meta_row + (g / 8) * 7;
    const int bit = 7 * (g % 8);
    const unsigned lo = m[bit / 8];
    const unsigned hi = bit % 8 > 1 ? m[bit / 8 + 1] : 0u;
    const unsigned code = ((lo | hi << 8) >> (bit % 8)) & 127u;
    *scale = __fmul_rn(t.super_scale[n], steps[code & 31u]);
    *offset = __fadd_rn(t.offset_base[n], __fmul_rn(t.offset_step[n], (float)(code >> 5) - 1.5f));
}

/* The shared tables of a GEMV block: float levels, packed int8 levels, scale steps. */
struct q35_tables {
    float2 levels[128];
    uint32_t packed[128]; /* level0 | level1 << 8 in the low 16 bits, as bytes */
    float steps[32];
};

__device__ __forceinline__ void q35_load_tables(q35_tables *tab)
{
    for (int i = threadIdx.x; i < 128; i += blockDim.x) {
        const int a = q35_codebook[i][0], b = q35_codebook[i][1];
        tab->levels[i] = make_float2((float)a, (float)b);
        tab->packed[i] = (uint32_t)(uint8_t)(int8_t)a | (uint32_t)(uint8_t)(int8_t)b << 8;
    }
    for (int i = threadIdx.x; i < 32; i += blockDim.x)
        tab->steps[i] = __uint_as_float(q35_scale_step_bits[i]);
    __syncthreads();
}

/* The 7 words of unit u of column n (28 bytes, 4-byte aligned): in the tiled layout,
 * bytes 28 (u % 4) .. + 27 of the column's 112 bytes of chunk u / 4. */
__device__ __forceinline__ void q35_load_unit(const q35_q3p5 &t, int n, int u, uint32_t w[7])
{
    if (t.tiled) {
        const uint8_t *rec = q35_record(t, n, u / 4) + (n % 32) * 16;
#pragma unroll
        for (int j = 0; j < 7; j++) {
            const int b = 28 * (u % 4) + 4 * j;
            w[j] = __ldg((const uint32_t *)(const void *)(rec + (b / 16) * 512 + b % 16));
        }
        return;
    }
    const uint32_t *p = (const uint32_t *)(const void *)(t.payload + (int64_t)n * t.prow) + u * 7;
#pragma unroll
    for (int j = 0; j < 7; j++)
        w[j] = __ldg(p + j);
}

/* ---- the GEMV kernels: one column per lane over the tiled layout ----------------------
 *
 * A block of KS warps computes the 32 columns of one record tile (lane l: column
 * 32 blockIdx.x + l); warp p takes the chunks p, p + KS, ... (256 weights of K each). Per
 * chunk a lane loads its column's 112 bytes of codes as 7 uint4 and its 8 group codes as
 * one uint2; lane l's 16 bytes are the l-th of each 512-byte line, so every load of the
 * warp is one whole line. The next chunk's loads are issued before the current chunk's
 * arithmetic. Pair codes are looked up in shared tables with one copy per lane
 * (table[code][lane]: lane l always reads bank l, never a conflict). */

/* One chunk of one column: codes (7 uint4 = 28 words, code i at bits 7i..7i+6) and group
 * codes (8 x 7 bits, little-endian). */
struct q35_chunk {
    uint4 w[7];
    uint2 meta;
};

__device__ __forceinline__ void q35_load_chunk(const uint8_t *record, int lane, q35_chunk &c)
{
    const uint4 *p = (const uint4 *)(const void *)record + lane;
#pragma unroll
    for (int j = 0; j < 7; j++)
        c.w[j] = __ldg(p + 32 * j);
    c.meta = __ldg((const uint2 *)(const void *)(record + Q35_RECORD_CODES) + lane);
}

__device__ __forceinline__ uint32_t q35_chunk_word(const q35_chunk &c, int i)
{
    const uint4 v = c.w[i / 4];
    return i % 4 == 0 ? v.x : i % 4 == 1 ? v.y : i % 4 == 2 ? v.z : v.w;
}

/* Byte offset of code i's entry for this lane in a [128][32] per-lane table of 4-byte
 * entries: code * 128 + lane4 (lane4 = 4 * lane). i is a compile-time constant, so this is
 * one funnel shift (the code's 7 bits moved to bits 7..13) and one LOP3 (mask, or lane4). */
__device__ __forceinline__ uint32_t q35_chunk_code(const q35_chunk &c, int i, uint32_t lane4)
{
    const int bit = 7 * i, lo = bit / 32, sh = bit % 32;
    uint32_t v;
    if (sh >= 7)
        v = __funnelshift_r(q35_chunk_word(c, lo), lo + 1 < 28 ? q35_chunk_word(c, lo + 1) : 0u,
                            sh - 7);
    else if (lo > 0)
        v = __funnelshift_r(q35_chunk_word(c, lo - 1), q35_chunk_word(c, lo), sh + 25);
    else
        v = q35_chunk_word(c, 0) << 7;
    return (v & (127u << 7)) | lane4;
}

/* Scale and offset of group h (0..7) of a chunk: as q35_group_meta. */
__device__ __forceinline__ void q35_chunk_meta(const q35_chunk &c, int h, float super_scale,
                                               float offset_base, float offset_step,
                                               const float *steps, float *scale, float *offset)
{
    const uint64_t m = (uint64_t)c.meta.x | (uint64_t)c.meta.y << 32;
    const unsigned code = (unsigned)(m >> (7 * h)) & 127u;
    *scale = __fmul_rn(super_scale, steps[code & 31u]);
    *offset = __fadd_rn(offset_base, __fmul_rn(offset_step, (float)(code >> 5) - 1.5f));
}

/* The per-lane tables: half2 levels (float path) or packed int8 levels (int8 path). */
template <bool INT8, int THREADS>
__device__ __forceinline__ void q35_load_lane_tables(uint32_t *table, float *steps)
{
#pragma unroll
    for (int i = threadIdx.x; i < 128 * 32; i += THREADS) {
        const int a = q35_codebook[i / 32][0], b = q35_codebook[i / 32][1];
        if (INT8) {
            table[i] = (uint32_t)(uint8_t)(int8_t)a | (uint32_t)(uint8_t)(int8_t)b << 8;
        } else {
            const __half2 v = __floats2half2_rn((float)a, (float)b); /* exact: |level| < 100 */
            table[i] = *(const uint32_t *)(const void *)&v;
        }
    }
    if (threadIdx.x < 32)
        steps[threadIdx.x] = __uint_as_float(q35_scale_step_bits[threadIdx.x]);
    __syncthreads();
}

/* The entry at byte offset off (q35_chunk_code) of a per-lane table. */
__device__ __forceinline__ uint32_t q35_lane_entry(const uint32_t *table, uint32_t off)
{
    return *(const uint32_t *)(const void *)((const char *)(const void *)table + off);
}

/* How a GEMV warp keeps its next chunk coming: 1 (the default), in the L2 cache (a
 * prefetch of each 128-byte line of its next record, then plain loads of it at the top of
 * the next iteration: no registers held, so more warps fit an SM); 0, in registers (the
 * next record's loads issued before the current chunk's arithmetic, 30 registers). */
#ifndef Q35_GEMV_PIPE
#define Q35_GEMV_PIPE 1
#endif

/* Registers a thread of a GEMV kernel may use (kind 0: q35_gemv_f32, 1: q35_gemv_i8, 2:
 * q35_gemv_i8_mma; 255: no limit) under Q35_GEMV_PIPE 1: about as few as compile without
 * spills (ptxas -warn-spills), so that more warps fit an SM. */
__host__ __device__ constexpr int q35_gemv_regs(int kind, int m, int ks)
{
    return Q35_GEMV_PIPE == 0 ? 255
        : kind == 2 ? (ks == 4 ? 80 : 96)
        : m == 1 ? 64 : m == 2 ? 80
        : kind == 1 ? (m == 3 ? 80 : m == 4 ? 96 : 255)
        : m == 3 ? 96 : m == 4 ? 128 : 255;
}

/* __launch_bounds__'s minimum of resident blocks that holds a thread to those registers
 * (one-warp blocks: at most 12, as their 16 KiB tables allow). */
__host__ __device__ constexpr int q35_gemv_min_blocks(int kind, int m, int ks)
{
    return q35_gemv_regs(kind, m, ks) >= 255 || 65536 / (q35_gemv_regs(kind, m, ks) * 32 * ks) < 1
        ? 1 : ks == 1 && 65536 / (q35_gemv_regs(kind, m, ks) * 32) > 12 ? 12
        : 65536 / (q35_gemv_regs(kind, m, ks) * 32 * ks);
}

/* The next chunk of a warp (Q35_GEMV_PIPE 1): an L2 prefetch of the record's 30 lines. */
__device__ __forceinline__ void q35_prefetch_record(const uint8_t *record, int lane)
{
    if (lane < Q35_RECORD / 128)
        asm volatile("prefetch.global.L2 [%0];" ::"l"(record + 128 * lane));
}

/* One chunk (c) of the float GEMV into acc[r][block parity]. FULL: all 256 weights are
 * inside K (no bounds checks: the compiler may issue the activation loads early). */
template <int M, bool FULL>
__device__ __forceinline__ void q35_gemv_f32_chunk(float (&acc)[M][2], const q35_chunk &cur,
                                                   int c, const q35_q3p5 &t, const float *x,
                                                   const uint32_t *table, uint32_t lane4,
                                                   const float *steps, float ss, float ob,
                                                   float os)
{
    /* 5 to 8 rows: groups one after another (unrolled, the activation loads hoisted over
     * all 8 groups need more than 255 registers); the same fmaf order either way */
#pragma unroll(M <= 4 ? 8 : 1)
    for (int h = 0; h < 8; h++) {
        if (!FULL && c * 8 + h >= t.groups)
            break;
        float scale, offset;
        q35_chunk_meta(cur, h, ss, ob, os, steps, &scale, &offset);
#pragma unroll
        for (int b = 0; b < 2; b++) { /* 16 weights: codes 16h + 8b .. + 7 */
            const int kb = c * 256 + h * 32 + b * 16;
            if (!FULL && kb >= t.k) /* K % 16 == 0: a block is all in or all out */
                break;
            float w[16];
#pragma unroll
            for (int i = 0; i < 8; i++) {
                const uint32_t v = q35_lane_entry(table,
                                                  q35_chunk_code(cur, 16 * h + 8 * b + i, lane4));
                const float2 l = __half22float2(*(const __half2 *)(const void *)&v);
                w[2 * i] = fmaf(scale, l.x, offset);
                w[2 * i + 1] = fmaf(scale, l.y, offset);
            }
#pragma unroll
            for (int r = 0; r < M; r++) {
                const float4 *xr = (const float4 *)(const void *)(x + (int64_t)r * t.k + kb);
#pragma unroll
                for (int j = 0; j < 4; j++) {
                    const float4 v = __ldg(xr + j);
                    acc[r][b] = fmaf(v.x, w[4 * j], acc[r][b]);
                    acc[r][b] = fmaf(v.y, w[4 * j + 1], acc[r][b]);
                    acc[r][b] = fmaf(v.z, w[4 * j + 2], acc[r][b]);
                    acc[r][b] = fmaf(v.w, w[4 * j + 3], acc[r][b]);
                }
            }
        }
    }
}

/* ---- float-path GEMV: y[M, N] = epilogue(x[M, K] @ W), group 32 -----------------------
 * Each weight is fmaf(scale, level, offset) (the interpreter rounds scale * level first:
 * a difference of one rounding of the weight), products accumulated in float32 with fmaf
 * in k order per lane; the KS warps' sums are added in warp order. The first chunk's loads
 * are issued before the shared tables are built, so the two overlap. */
template <int M, int KS>
__global__ void __launch_bounds__(KS * 32, q35_gemv_min_blocks(0, M, KS))
q35_gemv_f32(float *y, const float *x, q35_q3p5 t, q35_epilogue e)
{
    static_assert(KS == 1 || KS == 2 || KS == 4 || KS == 8 || KS == 16,
                  "1, 2, 4, 8 or 16 warps split K");
    __shared__ uint32_t table[128 * 32];
    __shared__ float steps[32];
    __shared__ float partial[KS][M][32];
    const int lane = threadIdx.x & 31, part = threadIdx.x >> 5;
    const uint32_t lane4 = 4u * (uint32_t)lane;
    const int n = blockIdx.x * 32 + lane, nc = n < t.n ? n : t.n - 1;
    const int chunks = q35_chunks(t);
    const uint8_t *records = t.payload + (int64_t)blockIdx.x * chunks * Q35_RECORD;
    q35_chunk cur;
    if (part < chunks)
        q35_load_chunk(records + (int64_t)part * Q35_RECORD, lane, cur);
    const float ss = t.super_scale[nc], ob = t.offset_base[nc], os = t.offset_step[nc];
    q35_load_lane_tables<false, KS * 32>(table, steps);
    float acc[M][2]; /* even and odd 16-weight blocks: two chains of fmaf */
#pragma unroll
    for (int r = 0; r < M; r++)
        acc[r][0] = acc[r][1] = 0.0f;
    for (int c = part; c < chunks; c += KS) {
        q35_chunk nxt; /* in flight while this chunk's products run */
        const int cn = c + KS < chunks ? c + KS : c;
        if (Q35_GEMV_PIPE == 0) {
            q35_load_chunk(records + (int64_t)cn * Q35_RECORD, lane, nxt);
        } else {
            if (c != part)
                q35_load_chunk(records + (int64_t)c * Q35_RECORD, lane, cur);
            q35_prefetch_record(records + (int64_t)cn * Q35_RECORD, lane);
        }
        if ((c + 1) * 256 <= t.k) /* a whole chunk: no bounds in the way of the scheduler */
            q35_gemv_f32_chunk<M, true>(acc, cur, c, t, x, table, lane4, steps, ss, ob, os);
        else
            q35_gemv_f32_chunk<M, false>(acc, cur, c, t, x, table, lane4, steps, ss, ob, os);
        if (Q35_GEMV_PIPE == 0)
            cur = nxt;
    }
    float sum[M];
#pragma unroll
    for (int r = 0; r < M; r++)
        sum[r] = acc[r][0] + acc[r][1];
    if (KS > 1) { /* the K parts' sums, in part order */
#pragma unroll
        for (int r = 0; r < M; r++)
            partial[part][r][lane] = sum[r];
        __syncthreads();
        if (part != 0)
            return;
#pragma unroll
        for (int r = 0; r < M; r++)
            for (int p = 1; p < KS; p++)
                sum[r] += partial[p][r][lane];
    }
    if (n < t.n)
#pragma unroll
        for (int r = 0; r < M; r++)
            y[(int64_t)r * t.n + n] = q35_epilogue_apply(e, sum[r], r, n, t.n);
}

/* One group (h) of a chunk on the int8 path: lane's column's 32 levels as 8 words of four
 * int8 levels (word j: k = 4j .. 4j + 3 of the group). */
__device__ __forceinline__ void q35_i8_group_levels(const q35_chunk &cur, int h,
                                                    const uint32_t *table, uint32_t lane4,
                                                    int (&wv)[8])
{
#pragma unroll
    for (int j = 0; j < 8; j++) {
        const uint32_t a = q35_lane_entry(table, q35_chunk_code(cur, 16 * h + 2 * j, lane4));
        const uint32_t b = q35_lane_entry(table, q35_chunk_code(cur, 16 * h + 2 * j + 1, lane4));
        wv[j] = (int)__byte_perm(a, b, 0x5410);
    }
}

/* One chunk (c) of the int8 GEMV: each group's rescale term added to total[r] (KS = 1) or
 * left in tp[h][r][lane] (KS > 1). FULL: all 256 weights inside K (no bounds checks). */
template <int M, int KS, bool FULL>
__device__ __forceinline__ void q35_gemv_i8_chunk(float (&total)[M], float (*tp)[M][32],
                                                  const q35_chunk &cur, int c,
                                                  const q35_q3p5 &t, const int8_t *q,
                                                  const uint32_t *table, uint32_t lane4,
                                                  const float *steps, float ss, float ob,
                                                  float os)
{
    const int lane = threadIdx.x & 31;
#pragma unroll
    for (int h = 0; h < 8; h++) {
        const int g = c * 8 + h;
        if (!FULL && g >= t.groups)
            break;
        int qv[M][8], sx[M], acc[M];
#pragma unroll
        for (int r = 0; r < M; r++) {
            sx[r] = 0;
            acc[r] = 0;
#pragma unroll
            for (int b = 0; b < 2; b++) {
                /* K % 16 == 0, so a 16-weight block is all in or all out */
                const int kb = g * 32 + 16 * b;
                const int4 v = FULL || kb < t.k
                    ? __ldg((const int4 *)(const void *)(q + (int64_t)r * t.k + kb))
                    : make_int4(0, 0, 0, 0);
                qv[r][4 * b] = v.x;
                qv[r][4 * b + 1] = v.y;
                qv[r][4 * b + 2] = v.z;
                qv[r][4 * b + 3] = v.w;
            }
#pragma unroll
            for (int j = 0; j < 8; j++)
                sx[r] = __dp4a(qv[r][j], 0x01010101, sx[r]);
        }
        int wv[8];
        q35_i8_group_levels(cur, h, table, lane4, wv);
#pragma unroll
        for (int j = 0; j < 8; j++)
#pragma unroll
            for (int r = 0; r < M; r++)
                acc[r] = __dp4a(qv[r][j], wv[j], acc[r]);
        float scale, offset;
        q35_chunk_meta(cur, h, ss, ob, os, steps, &scale, &offset);
#pragma unroll
        for (int r = 0; r < M; r++) {
            const float term = __fadd_rn(__fmul_rn(scale, __int2float_rn(acc[r])),
                                         __fmul_rn(offset, __int2float_rn(sx[r])));
            if (KS == 1)
                total[r] = __fadd_rn(total[r], term);
            else
                tp[h][r][lane] = term;
        }
    }
}

/* ---- int8-path GEMV: y[M, N] = row_scale * sum_g (s_g * acc_g + o_g * sx_g), group 32 --
 * dp4a on four int8 levels and four int8 activations: exact int32 per group and row; each
 * group's term scale * f32(acc) + offset * f32(sx) and the running sum in group order, then
 * * row_scale, each rounded as q35c.semantics.rescale_group/rescale_rows round (bit-exact).
 * KS = 1: a lane adds its own terms in order. KS > 1: a round's KS chunks leave their terms
 * in shared memory and warp r % KS adds row r's in group order. */
template <int M, int KS>
__global__ void __launch_bounds__(KS * 32, q35_gemv_min_blocks(1, M, KS))
q35_gemv_i8(float *y, const int8_t *q, const float *row_scale, q35_q3p5 t)
{
    static_assert(KS == 1 || KS == 2 || KS == 4 || KS == 8 || KS == 16,
                  "1, 2, 4, 8 or 16 warps split K");
    static_assert(KS * M <= 16, "the terms of a round fit 16 KiB");
    __shared__ uint32_t table[128 * 32];
    __shared__ float steps[32];
    __shared__ float terms[KS > 1 ? KS : 1][8][M][32];
    const int lane = threadIdx.x & 31, part = threadIdx.x >> 5;
    const uint32_t lane4 = 4u * (uint32_t)lane;
    const int n = blockIdx.x * 32 + lane, nc = n < t.n ? n : t.n - 1;
    const int chunks = q35_chunks(t);
    const uint8_t *records = t.payload + (int64_t)blockIdx.x * chunks * Q35_RECORD;
    q35_chunk cur;
    if (part < chunks)
        q35_load_chunk(records + (int64_t)part * Q35_RECORD, lane, cur);
    const float ss = t.super_scale[nc], ob = t.offset_base[nc], os = t.offset_step[nc];
    q35_load_lane_tables<true, KS * 32>(table, steps);
    float total[M];
#pragma unroll
    for (int r = 0; r < M; r++)
        total[r] = 0.0f;
    for (int base = 0; base < chunks; base += KS) {
        const int c = base + part;
        q35_chunk nxt; /* in flight while this chunk's products run */
        const int cn = c + KS < chunks ? c + KS : c < chunks ? c : chunks - 1;
        if (Q35_GEMV_PIPE == 0) {
            q35_load_chunk(records + (int64_t)cn * Q35_RECORD, lane, nxt);
        } else {
            if (base != 0 && c < chunks)
                q35_load_chunk(records + (int64_t)c * Q35_RECORD, lane, cur);
            q35_prefetch_record(records + (int64_t)cn * Q35_RECORD, lane);
        }
        if (c < chunks && (c + 1) * 256 <= t.k) /* a whole chunk: no bounds checks */
            q35_gemv_i8_chunk<M, KS, true>(total, terms[KS > 1 ? part : 0], cur, c, t, q, table,
                                           lane4, steps, ss, ob, os);
        else if (c < chunks)
            q35_gemv_i8_chunk<M, KS, false>(total, terms[KS > 1 ? part : 0], cur, c, t, q,
                                            table, lane4, steps, ss, ob, os);
        if (Q35_GEMV_PIPE == 0)
            cur = nxt;
        if (KS > 1) {
            __syncthreads();
            const int groups = min(8 * KS, t.groups - 8 * base); /* this round's groups */
#pragma unroll
            for (int r = 0; r < M; r++)
                if (r % KS == part) {
                    if (groups == 8 * KS) { /* unrolled: the loads ahead of the adds */
#pragma unroll
                        for (int i = 0; i < 8 * KS; i++)
                            total[r] = __fadd_rn(total[r], terms[i / 8][i % 8][r][lane]);
                    } else {
                        for (int i = 0; i < groups; i++)
                            total[r] = __fadd_rn(total[r], terms[i / 8][i % 8][r][lane]);
                    }
                }
            __syncthreads();
        }
    }
    if (n < t.n)
#pragma unroll
        for (int r = 0; r < M; r++)
            if (KS == 1 || r % KS == part)
                y[(int64_t)r * t.n + n] = __fmul_rn(total[r], row_scale[r]);
}

/* ---- int8-path GEMV on tensor cores: up to 16 rows, the same packed layout ------------
 *
 * The same numbers as q35_gemv_i8 (bit-exact), for 5..16 activation rows in one launch: a
 * group's int32 dot products come from one mma.sync m16n8k32 (s8 x s8 -> s32, exact) per 8
 * columns instead of rows x 8 dp4a per lane. A block of KS warps takes one record tile (32
 * columns) and walks all its chunks; warp p decodes the groups h = p, p + KS, ... of every
 * chunk: lane l decodes column l's 32 levels of the group (q35_i8_group_levels, as the dp4a
 * kernel) and leaves them with the group's scale and offset in a warp-private shared
 * buffer, from which each lane reads its B fragments (column 8j + l / 4, k = 4 (l % 4) ..
 * + 3 and 16 + 4 (l % 4) .. + 3). A fragments: the activation rows as int8 words from
 * global memory (rows past `rows` and k past K are zero). One more mma with B = all ones
 * gives the rows' activation sums. Each (row, column)'s rescale term is then rounded as in
 * q35_gemv_i8; KS = 1 keeps the running sums in registers (the mma's C layout); KS > 1:
 * the KS groups of a step (consecutive in k) leave their terms in shared memory, and after
 * a barrier warp w adds rows w, w + KS, ...'s in group order. */
#define Q35_MMA_ROWS 16
#define Q35_MMA_TERMS_PAD 40 /* floats per row of a term tile: conflict-free float2 stores */

__device__ __forceinline__ void q35_mma_s8(int d[4], const uint32_t a[4], uint32_t b0,
                                           uint32_t b1)
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm("mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 "
                 "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%10, %10, %10, %10};\n"
                 : "=r"(d[0]), "=r"(d[1]), "=r"(d[2]), "=r"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1), "r"(0));
#else
    (void)a; (void)b0; (void)b1;
    d[0] = d[1] = d[2] = d[3] = 0;
    __trap(); /* the tensor-core GEMV needs sm_80 or newer */
#endif
}

/* A warp's staging of one decoded group: 32 columns x 8 words of levels (column l's words
 * in the order 0 4 1 5 | 2 6 3 7, the two 16-byte halves swapped where bit 2 of l is set:
 * conflict-free 16-byte stores and 8-byte fragment loads), and (scale, offset) per column. */
struct q35_mma_stage {
    uint32_t w[32 * 8];
    float2 so[32];
};

template <int KS, bool H16>
struct q35_mma_shared {
    uint32_t table[128 * 32];
    float steps[32];
    q35_mma_stage stage[KS][2];
    float terms[KS > 1 ? 2 : 1][KS > 1 ? KS : 1][H16 ? 16 : 8][Q35_MMA_TERMS_PAD];
};

/* Group g (h of chunk c) of warp `part`: the int32 dot products of the block's rows with
 * its 32 columns, then the rescale terms: into tot (KS = 1) or terms[p] (KS > 1). */
template <int KS, bool H16, bool FULL>
__device__ __forceinline__ void q35_mma_group(float (&tot)[4][4], float (*tp)[Q35_MMA_TERMS_PAD],
                                              q35_mma_stage &st, const q35_chunk &cur, int h,
                                              int g, const q35_q3p5 &t, const int8_t *q,
                                              int rows, const uint32_t *table, uint32_t lane4,
                                              const float *steps, float ss, float ob, float os)
{
    const int lane = threadIdx.x & 31, gid = lane >> 2, tid = lane & 3;
    /* this lane's column: levels and group metadata into the warp's stage */
    int wv[8];
    q35_i8_group_levels(cur, h, table, lane4, wv);
    float scale, offset;
    q35_chunk_meta(cur, h, ss, ob, os, steps, &scale, &offset);
    const int sw = (lane >> 2) & 1;
    uint4 *dst = (uint4 *)(void *)(st.w + 8 * lane);
    dst[sw] = make_uint4(wv[0], wv[4], wv[1], wv[5]);
    dst[sw ^ 1] = make_uint4(wv[2], wv[6], wv[3], wv[7]);
    st.so[lane] = make_float2(scale, offset);
    /* A fragments: rows gid (+ 8), k = 4 tid and 16 + 4 tid of the group */
    uint32_t a[4];
    const int k0 = g * 32 + 4 * tid;
#pragma unroll
    for (int i = 0; i < 4; i++) {
        const int r = gid + 8 * (i & 1), k = k0 + 16 * (i >> 1);
        a[i] = (H16 || r < 8) && r < rows && (FULL || k < t.k)
            ? __ldg((const uint32_t *)(const void *)(q + (int64_t)r * t.k + k)) : 0u;
    }
    __syncwarp();
    int sx[4];
    q35_mma_s8(sx, a, 0x01010101u, 0x01010101u); /* the rows' sums, in every column */
    const float sx0 = __int2float_rn(sx[0]), sx8 = __int2float_rn(sx[2]);
#pragma unroll
    for (int j = 0; j < 4; j++) {
        const int col = 8 * j + gid;
        const uint2 b = *(const uint2 *)(const void *)(st.w + 8 * col +
                                                       4 * ((tid >> 1) ^ ((col >> 2) & 1)) +
                                                       2 * (tid & 1));
        int d[4];
        q35_mma_s8(d, a, b.x, b.y);
        const float4 so = *(const float4 *)(const void *)&st.so[8 * j + 2 * tid];
        float term[4];
#pragma unroll
        for (int v = 0; v < (H16 ? 4 : 2); v++)
            term[v] = __fadd_rn(__fmul_rn(v & 1 ? so.z : so.x, __int2float_rn(d[v])),
                                __fmul_rn(v & 1 ? so.w : so.y, v < 2 ? sx0 : sx8));
#pragma unroll
        for (int v = 0; v < (H16 ? 4 : 2); v += 2) {
            if (KS == 1) {
                tot[j][v] = __fadd_rn(tot[j][v], term[v]);
                tot[j][v + 1] = __fadd_rn(tot[j][v + 1], term[v + 1]);
            } else {
                *(float2 *)(void *)&tp[gid + 4 * v][8 * j + 2 * tid] =
                    make_float2(term[v], term[v + 1]);
            }
        }
    }
}

template <int KS, bool H16>
__global__ void __launch_bounds__(KS * 32, q35_gemv_min_blocks(2, H16 ? 16 : 8, KS))
q35_gemv_i8_mma(float *y, const int8_t *q, const float *row_scale, int rows, q35_q3p5 t)
{
    static_assert(KS == 1 || KS == 2 || KS == 4, "1, 2 or 4 warps split K");
    static_assert(sizeof(q35_mma_shared<KS, H16>) <= 48 * 1024, "static shared memory");
    constexpr int R = H16 ? 16 : 8; /* rows of the mma tile that can be live */
    __shared__ __align__(16) q35_mma_shared<KS, H16> sh;
    const int lane = threadIdx.x & 31, part = threadIdx.x >> 5;
    const int gid = lane >> 2, tid = lane & 3;
    const uint32_t lane4 = 4u * (uint32_t)lane;
    const int n = blockIdx.x * 32 + lane, nc = n < t.n ? n : t.n - 1;
    const int chunks = q35_chunks(t);
    const uint8_t *records = t.payload + (int64_t)blockIdx.x * chunks * Q35_RECORD;
    q35_chunk cur;
    q35_load_chunk(records, lane, cur);
    const float ss = t.super_scale[nc], ob = t.offset_base[nc], os = t.offset_step[nc];
    q35_load_lane_tables<true, KS * 32>(sh.table, sh.steps);
    float tot[4][4]; /* KS = 1: rows gid (v < 2), gid + 8; columns 8j + 2 tid + v % 2 */
    float total[(R + KS - 1) / KS]; /* KS > 1: rows part + KS i, column lane */
#pragma unroll
    for (int j = 0; j < 4; j++)
#pragma unroll
        for (int v = 0; v < 4; v++)
            tot[j][v] = 0.0f;
#pragma unroll
    for (int i = 0; i < (R + KS - 1) / KS; i++)
        total[i] = 0.0f;
    int step = 0; /* parity: which stage and terms buffer */
    for (int c = 0; c < chunks; c++) {
        q35_chunk nxt; /* in flight while this chunk's products run */
        const uint8_t *rn = records + (int64_t)(c + 1 < chunks ? c + 1 : c) * Q35_RECORD;
        if (Q35_GEMV_PIPE == 0) {
            q35_load_chunk(rn, lane, nxt);
        } else {
            if (c != 0)
                q35_load_chunk(records + (int64_t)c * Q35_RECORD, lane, cur);
            q35_prefetch_record(rn, lane);
        }
        const bool full = (c + 1) * 256 <= t.k;
#pragma unroll
        for (int s = 0; s < 8 / KS; s++) {
            float (*tp)[Q35_MMA_TERMS_PAD] = sh.terms[KS > 1 ? step & 1 : 0][KS > 1 ? part : 0];
#pragma unroll
            for (int p = 0; p < KS; p++) /* warp-uniform: h is a constant in each branch */
                if (p == part) {
                    const int h = s * KS + p, g = c * 8 + h;
                    q35_mma_stage &st = sh.stage[part][step & 1];
                    if (full)
                        q35_mma_group<KS, H16, true>(tot, tp, st, cur, h, g, t, q, rows,
                                                     sh.table, lane4, sh.steps, ss, ob, os);
                    else if (g < t.groups)
                        q35_mma_group<KS, H16, false>(tot, tp, st, cur, h, g, t, q, rows,
                                                      sh.table, lane4, sh.steps, ss, ob, os);
                }
            if (KS > 1) {
                __syncthreads();
                const int g0 = c * 8 + s * KS; /* this step's groups: g0 .. g0 + KS - 1 */
#pragma unroll
                for (int i = 0; i < (R + KS - 1) / KS; i++) {
                    const int r = part + KS * i;
                    if (r < R)
#pragma unroll
                        for (int p = 0; p < KS; p++)
                            if (g0 + p < t.groups)
                                total[i] = __fadd_rn(
                                    total[i], sh.terms[step & 1][p][r][lane]);
                }
            }
            step++;
        }
        if (Q35_GEMV_PIPE == 0)
            cur = nxt;
    }
    if (KS == 1) {
#pragma unroll
        for (int j = 0; j < 4; j++)
#pragma unroll
            for (int v = 0; v < (H16 ? 4 : 2); v++) {
                const int r = gid + 8 * (v >> 1), col = blockIdx.x * 32 + 8 * j + 2 * tid + v % 2;
                if (r < rows && col < t.n)
                    y[(int64_t)r * t.n + col] = __fmul_rn(tot[j][v], row_scale[r]);
            }
    } else if (n < t.n) {
#pragma unroll
        for (int i = 0; i < (R + KS - 1) / KS; i++) {
            const int r = part + KS * i;
            if (r < R && r < rows)
                y[(int64_t)r * t.n + n] = __fmul_rn(total[i], row_scale[r]);
        }
    }
}

/* ---- float-path tensor-core GEMM (prefill, opt-in): y[M, N] = epilogue(x[M, K] @ W) ---
 *
 * Built only with Q35_TENSOR_CORES=1 (`make TC=1`); the default float path is the fp32
 * GEMV. A block of 8 warps computes a (32 MT) x 128 output tile (MT = 4: 128 x 128), its
 * warps 2 by 4, each (16 MT) x 32 with mma.sync m16n8k16 (fp16 operands, fp32
 * accumulators) on fragments read by ldmatrix.x4. K goes by units of 64 weights (two
 * groups) through two shared stages of fp16 tiles, [row][k] activations and [column][k]
 * weights, rows padded to 72 halves (ldmatrix and the 16-byte stores conflict-free): the
 * activations rounded to fp16, the weights decoded from their packed codes exactly as the
 * interpreter decodes them (float32 `scale * level + offset`) and then rounded to fp16, so
 * each weight is decoded once per block and no fp16 weight matrix exists in memory.
 * Software pipeline, one barrier per unit: in the same straight-line body a thread issues
 * the tensor-core products of unit u (shared stage u % 2), converts and decodes unit u + 1
 * from its registers into the other stage, and issues the global loads of unit u + 2 into
 * those registers (in flight for a whole unit). Decoding thread: column tid / 2, group
 * tid % 2 of the unit; pair codes looked up in a per-lane half2 table (table[code][lane],
 * conflict-free; levels are exact in fp16). Rows, columns and groups past M, N, K give
 * zeros (activations past K are zero, so the codes of half a group past K add nothing) and
 * are never stored. Needs sm_80+ (mma.sync m16n8k16, ldmatrix); 90 KiB of dynamic shared
 * memory at MT = 4 (q35_gemm_setup raises the limit once). */
#ifndef Q35_TENSOR_CORES
#define Q35_TENSOR_CORES 0
#endif
#define Q35_GEMM_BN 128
#define Q35_GEMM_BK 64
#define Q35_GEMM_PAD 72 /* halves per tile row: 144 bytes */
#define Q35_GEMM_THREADS 256

template <int MT>
struct __align__(16) q35_gemm_smem {
    __half a[2][32 * MT][Q35_GEMM_PAD];
    __half b[2][Q35_GEMM_BN][Q35_GEMM_PAD];
    uint32_t table[128 * 32]; /* q35_load_lane_tables: half2 levels, one copy per lane */
    float steps[32];
};

/* What a thread loads from global memory for one unit: 2 MT float4 of activations
 * ((32 MT) rows x 64 floats over 256 threads), the 4 code words holding its group's 16
 * pair codes and the 8 group-code bytes of its column's chunk. */
template <int MT>
struct q35_gemm_regs {
    float4 x[2 * MT];
    uint32_t w[4];
    uint2 meta;
    bool live; /* the group exists (column < N, group < groups) */
};

template <int MT>
__device__ __forceinline__ void q35_gemm_fetch(const q35_q3p5 &t, const float *x, int rows,
                                               int m0, int n, int h, int u,
                                               q35_gemm_regs<MT> &st)
{
#pragma unroll
    for (int i = 0; i < 2 * MT; i++) {
        const int idx = threadIdx.x + Q35_GEMM_THREADS * i; /* float4 of the 32 MT x 16 tile */
        const int r = m0 + idx / 16, k = u * Q35_GEMM_BK + 4 * (idx % 16);
        st.x[i] = r < rows && k < t.k
            ? __ldg((const float4 *)(const void *)(x + (int64_t)r * t.k + k))
            : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    }
    st.live = n < t.n && 2 * u + h < t.groups;
    if (st.live) {
        /* unit u = bytes 28 (u % 4) .. + 27 of the column's 112 bytes of chunk u / 4
         * (q35_load_unit); group h's codes are its bits 112 h .. 112 h + 111: words
         * 3 h .. 3 h + 3 of the unit */
        const uint8_t *rec = q35_record(t, n, u / 4);
        const uint8_t *col = rec + (n % 32) * 16;
#pragma unroll
        for (int j = 0; j < 4; j++) {
            const int b = 28 * (u % 4) + 4 * (3 * h + j);
            st.w[j] = __ldg((const uint32_t *)(const void *)(col + (b / 16) * 512 + b % 16));
        }
        st.meta = __ldg((const uint2 *)(const void *)(rec + Q35_RECORD_CODES + (n % 32) * 8));
    } else {
#pragma unroll
        for (int j = 0; j < 4; j++)
            st.w[j] = 0u;
        st.meta = make_uint2(0u, 0u);
    }
}

/* A fetched unit into shared stage `s`: activations to fp16; the thread's 32 weights
 * decoded (float32, the interpreter's order) then rounded to fp16. */
template <int MT>
__device__ __forceinline__ void q35_gemm_store(q35_gemm_smem<MT> &sm, int s, int u, int h,
                                               const q35_gemm_regs<MT> &st, float ss, float ob,
                                               float os, uint32_t lane4)
{
#pragma unroll
    for (int i = 0; i < 2 * MT; i++) {
        const int idx = threadIdx.x + Q35_GEMM_THREADS * i;
        const __half2 lo = __floats2half2_rn(st.x[i].x, st.x[i].y);
        const __half2 hi = __floats2half2_rn(st.x[i].z, st.x[i].w);
        *(uint2 *)(void *)&sm.a[s][idx / 16][4 * (idx % 16)] =
            make_uint2(*(const uint32_t *)(const void *)&lo, *(const uint32_t *)(const void *)&hi);
    }
    const uint64_t m = (uint64_t)st.meta.x | (uint64_t)st.meta.y << 32;
    const unsigned code = (unsigned)(m >> (7 * ((2 * u + h) % 8))) & 127u;
    float scale = __fmul_rn(ss, sm.steps[code & 31u]);
    float offset = __fadd_rn(ob, __fmul_rn(os, (float)(code >> 5) - 1.5f));
    if (!st.live) {
        scale = 0.0f;
        offset = 0.0f;
    }
    /* the group's 16 codes from bit 0 of a 4-word window (+ a zero word) */
    uint32_t win[5];
#pragma unroll
    for (int j = 0; j < 4; j++)
        win[j] = h ? __funnelshift_r(st.w[j], j < 3 ? st.w[j + 1] : 0u, 16) : st.w[j];
    win[4] = 0u;
    uint32_t packed[16];
#pragma unroll
    for (int i = 0; i < 16; i++) {
        const int bit = 7 * i, lo = bit / 32, sh = bit % 32;
        /* the code's 7 bits moved to bits 7..13: its byte offset in the per-lane table */
        const uint32_t v = sh >= 7 ? __funnelshift_r(win[lo], win[lo + 1], sh - 7)
                                   : lo > 0 ? __funnelshift_r(win[lo - 1], win[lo], sh + 25)
                                            : win[0] << 7;
        const uint32_t e = q35_lane_entry(sm.table, (v & (127u << 7)) | lane4);
        const float2 l = __half22float2(*(const __half2 *)(const void *)&e);
        const __half2 w = __floats2half2_rn(__fadd_rn(__fmul_rn(scale, l.x), offset),
                                            __fadd_rn(__fmul_rn(scale, l.y), offset));
        packed[i] = *(const uint32_t *)(const void *)&w;
    }
    uint4 *dst = (uint4 *)(void *)&sm.b[s][threadIdx.x / 2][32 * h];
#pragma unroll
    for (int j = 0; j < 4; j++)
        dst[j] = make_uint4(packed[4 * j], packed[4 * j + 1], packed[4 * j + 2], packed[4 * j + 3]);
}

/* d += a (16 x 16, row-major fragments) * b (16 x 8, column fragments), fp32 accumulators. */
__device__ __forceinline__ void q35_mma_16816(float d[4], const uint32_t a[4], const uint32_t b[2])
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 "
                 "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#else
    (void)d; (void)a; (void)b;
    __trap(); /* the tensor-core GEMM needs sm_80 or newer */
#endif
}

/* Four 8x8 fp16 matrices from shared memory, lane l giving the address of row l % 8 of
 * matrix l / 8. */
__device__ __forceinline__ void q35_ldmatrix_x4(uint32_t r[4], const __half *p)
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    const unsigned addr = (unsigned)__cvta_generic_to_shared(p);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr));
#else
    (void)p;
    r[0] = r[1] = r[2] = r[3] = 0u;
    __trap();
#endif
}

/* The products of one unit (shared stage s) into the warp's accumulators. */
template <int MT>
__device__ __forceinline__ void q35_gemm_unit(const q35_gemm_smem<MT> &sm, int s, int wm,
                                              int wn, int lane, float (&acc)[MT][4][4])
{
#pragma unroll
    for (int kk = 0; kk < Q35_GEMM_BK; kk += 16) {
        uint32_t b[2][4]; /* n8 tiles 2p, 2p + 1: {b0, b1} each */
#pragma unroll
        for (int p = 0; p < 2; p++)
            q35_ldmatrix_x4(b[p], &sm.b[s][32 * wn + 16 * p + 8 * (lane / 16) + lane % 8]
                                      [kk + 8 * ((lane / 8) % 2)]);
#pragma unroll
        for (int i = 0; i < MT; i++) {
            uint32_t a[4];
            q35_ldmatrix_x4(a, &sm.a[s][16 * MT * wm + 16 * i + lane % 16][kk + 8 * (lane / 16)]);
#pragma unroll
            for (int j = 0; j < 4; j++)
                q35_mma_16816(acc[i][j], a, &b[j / 2][2 * (j % 2)]);
        }
    }
}

template <int MT>
__global__ void __launch_bounds__(Q35_GEMM_THREADS, 1)
q35_gemm_f16(float *y, const float *x, int rows, q35_q3p5 t, q35_epilogue e)
{
    static_assert(MT == 1 || MT == 2 || MT == 4, "32, 64 or 128 rows per block");
    extern __shared__ __align__(16) unsigned char q35_gemm_shared[];
    q35_gemm_smem<MT> &sm = *(q35_gemm_smem<MT> *)(void *)q35_gemm_shared;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int wm = warp >> 2, wn = warp & 3;
    const int m0 = blockIdx.x * 32 * MT, n0 = blockIdx.y * Q35_GEMM_BN;
    const int units = (t.k + Q35_GEMM_BK - 1) / Q35_GEMM_BK;
    const int h = threadIdx.x & 1, n = n0 + (threadIdx.x >> 1);
    const uint32_t lane4 = 4u * lane;
    q35_gemm_regs<MT> st;
    q35_gemm_fetch<MT>(t, x, rows, m0, n, h, 0, st); /* in flight while the tables fill */
    const bool col = n < t.n;
    const float ss = col ? t.super_scale[n] : 0.0f, ob = col ? t.offset_base[n] : 0.0f,
                os = col ? t.offset_step[n] : 0.0f;
    q35_load_lane_tables<false, Q35_GEMM_THREADS>(sm.table, sm.steps);
    float acc[MT][4][4];
#pragma unroll
    for (int i = 0; i < MT; i++)
#pragma unroll
        for (int j = 0; j < 4; j++)
#pragma unroll
            for (int v = 0; v < 4; v++)
                acc[i][j][v] = 0.0f;
    q35_gemm_store<MT>(sm, 0, 0, h, st, ss, ob, os, lane4);
    q35_gemm_fetch<MT>(t, x, rows, m0, n, h, 1, st);
    for (int u = 0; u < units; u++) {
        __syncthreads(); /* stage u % 2 complete; stage (u + 1) % 2 no longer read */
        q35_gemm_unit<MT>(sm, u & 1, wm, wn, lane, acc);
        /* past the last unit these store zeros nobody reads and load nothing */
        q35_gemm_store<MT>(sm, (u + 1) & 1, u + 1, h, st, ss, ob, os, lane4);
        q35_gemm_fetch<MT>(t, x, rows, m0, n, h, u + 2, st);
    }
    const int gid = lane >> 2, tid = lane & 3;
#pragma unroll
    for (int i = 0; i < MT; i++)
#pragma unroll
        for (int j = 0; j < 4; j++)
#pragma unroll
            for (int v = 0; v < 4; v++) {
                const int r = m0 + 16 * MT * wm + 16 * i + gid + 8 * (v / 2);
                const int c = n0 + 32 * wn + 8 * j + 2 * tid + v % 2;
                if (r < rows && c < t.n)
                    y[(int64_t)r * t.n + c] = q35_epilogue_apply(e, acc[i][j][v], r, c, t.n);
            }
}

/* Raises q35_gemm_f16<MT>'s dynamic shared-memory limit to its sizeof(q35_gemm_smem<MT>)
 * (once, before any launch or graph capture). */
template <int MT>
inline cudaError_t q35_gemm_setup()
{
    return cudaFuncSetAttribute(q35_gemm_f16<MT>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                (int)sizeof(q35_gemm_smem<MT>));
}

/* ---- portable quantized matmuls: any group size and K, one thread per column --------- */

/* Float path: weights decoded as the interpreter decodes them, products summed in double
 * in k order (the interpreter sums in float64 and rounds once). */
__global__ void q35_qmatmul_f32_simple(float *y, const float *x, int rows, q35_q3p5 t,
                                       q35_epilogue e)
{
    const int n = blockIdx.x * blockDim.x + threadIdx.x;
    float steps[32];
    for (int i = 0; i < 32; i++)
        steps[i] = __uint_as_float(q35_scale_step_bits[i]);
    if (n >= t.n)
        return;
    for (int r = 0; r < rows; r++) {
        double acc = 0.0;
        for (int g = 0; g < t.groups; g++) {
            float scale, offset;
            q35_group_meta(t, n, g, steps, &scale, &offset);
            const uint8_t *p = t.payload + (int64_t)n * t.prow + (int64_t)g * (t.group / 16) * 7;
            const int k0 = g * t.group, kend = min(k0 + t.group, t.k);
            for (int k = k0; k < kend; k++) {
                const int i = (k - k0) / 2, bit = 7 * (i % 8);
                const uint8_t *blk = p + (i / 8) * 7;
                const unsigned lo = blk[bit / 8], hi = bit % 8 > 1 ? blk[bit / 8 + 1] : 0u;
                const unsigned code = ((lo | hi << 8) >> (bit % 8)) & 127u;
                const float w = __fadd_rn(__fmul_rn(scale, (float)q35_codebook[code][k % 2]),
                                          offset);
                acc += (double)x[(int64_t)r * t.k + k] * (double)w;
            }
        }
        y[(int64_t)r * t.n + n] = q35_epilogue_apply(e, (float)acc, r, n, t.n);
    }
}

/* int8 path: exact int32 per group, the rescale in group order (bit-exact). */
__global__ void q35_qmatmul_i8_simple(float *y, const int8_t *q, const float *row_scale,
                                      int rows, q35_q3p5 t)
{
    const int n = blockIdx.x * blockDim.x + threadIdx.x;
    float steps[32];
    for (int i = 0; i < 32; i++)
        steps[i] = __uint_as_float(q35_scale_step_bits[i]);
    if (n >= t.n)
        return;
    for (int r = 0; r < rows; r++) {
        float total = 0.0f;
        for (int g = 0; g < t.groups; g++) {
            float scale, offset;
            q35_group_meta(t, n, g, steps, &scale, &offset);
            const uint8_t *p = t.payload + (int64_t)n * t.prow + (int64_t)g * (t.group / 16) * 7;
            const int k0 = g * t.group, kend = min(k0 + t.group, t.k);
            int acc = 0, sx = 0;
            for (int k = k0; k < kend; k++) {
                const int i = (k - k0) / 2, bit = 7 * (i % 8);
                const uint8_t *blk = p + (i / 8) * 7;
                const unsigned lo = blk[bit / 8], hi = bit % 8 > 1 ? blk[bit / 8 + 1] : 0u;
                const unsigned code = ((lo | hi << 8) >> (bit % 8)) & 127u;
                const int qk = q[(int64_t)r * t.k + k];
                acc += qk * (int)q35_codebook[code][k % 2];
                sx += qk;
            }
            total = __fadd_rn(total, __fadd_rn(__fmul_rn(scale, __int2float_rn(acc)),
                                               __fmul_rn(offset, __int2float_rn(sx))));
        }
        y[(int64_t)r * t.n + n] = __fmul_rn(total, row_scale[r]);
    }
}

/* ---- the legacy pair43 layout: one group per column ----------------------------------
 * Blob entry (lower.pair43_bytes): scale[N], offset[N] (float32), then per column its
 * ceil(K/2) pair bytes; weight k of column n is scale * LEVELS[byte][k % 2] + offset. */
__global__ void q35_pair_matmul_f32(float *y, const float *x, int rows, int k, int n,
                                    const uint8_t *entry, q35_epilogue e)
{
    const int j = blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= n)
        return;
    const float *scale = (const float *)(const void *)entry, *offset = scale + n;
    const uint8_t *cj = entry + 8 * (int64_t)n + (int64_t)j * ((k + 1) / 2);
    for (int r = 0; r < rows; r++) {
        double acc = 0.0;
        for (int i = 0; i < k; i++) {
            const float w = __fadd_rn(
                __fmul_rn(scale[j], (float)q35_legacy_levels[cj[i / 2] & 127u][i % 2]), offset[j]);
            acc += (double)x[(int64_t)r * k + i] * (double)w;
        }
        y[(int64_t)r * n + j] = q35_epilogue_apply(e, (float)acc, r, j, n);
    }
}

__global__ void q35_pair_matmul_i8(float *y, const int8_t *q, const float *row_scale, int rows,
                                   int k, int n, const uint8_t *entry)
{
    const int j = blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= n)
        return;
    const float *scale = (const float *)(const void *)entry, *offset = scale + n;
    const uint8_t *cj = entry + 8 * (int64_t)n + (int64_t)j * ((k + 1) / 2);
    for (int r = 0; r < rows; r++) {
        int acc = 0, sx = 0;
        for (int i = 0; i < k; i++) {
            acc += (int)q[(int64_t)r * k + i] * (int)q35_legacy_levels[cj[i / 2] & 127u][i % 2];
            sx += q[(int64_t)r * k + i];
        }
        const float term = __fadd_rn(__fmul_rn(scale[j], __int2float_rn(acc)),
                                     __fmul_rn(offset[j], __int2float_rn(sx)));
        y[(int64_t)r * n + j] = __fmul_rn(__fadd_rn(0.0f, term), row_scale[r]);
    }
}

/* ---- activations to int8 -------------------------------------------------------------
 * Symmetric per-row quantization: scale = max|x| / 127 (1 for a zero row), q =
 * clamp(rint(x / scale), -127, 127), in float32 (IEEE division). One block per row. */
__global__ void q35_quantize_activations(int8_t *q, float *scale, const float *x, int k)
{
    __shared__ float part[Q35_THREADS];
    const int r = blockIdx.x;
    const float *xr = x + (int64_t)r * k;
    float m = 0.0f;
    for (int i = threadIdx.x; i < k; i += blockDim.x) {
        const float a = fabsf(xr[i]);
        if (a > m || a != a)
            m = a;
    }
    part[threadIdx.x] = m;
    __syncthreads();
    for (int s = blockDim.x / 2; s > 0; s /= 2) {
        if (threadIdx.x < s) {
            const float a = part[threadIdx.x + s], b = part[threadIdx.x];
            part[threadIdx.x] = (a > b || a != a) ? a : b;
        }
        __syncthreads();
    }
    float s = __fdiv_rn(part[0], 127.0f);
    if (s == 0.0f)
        s = 1.0f;
    if (threadIdx.x == 0)
        scale[r] = s;
    for (int i = threadIdx.x; i < k; i += blockDim.x) {
        float v = rintf(__fdiv_rn(xr[i], s));
        v = v > 127.0f ? 127.0f : v < -127.0f ? -127.0f : v;
        q[(int64_t)r * k + i] = (int8_t)v;
    }
}

/* ---- other ops: simple kernels in the C runtime's order -------------------------------- */

/* out[M, N] = acc + a[M, K] @ b[K, N], products summed in double (one thread each). */
__global__ void q35_matmul_f32(float *out, const float *a, const float *b, const float *acc,
                               int64_t m, int64_t k, int64_t n)
{
    for (int64_t o = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; o < m * n;
         o += (int64_t)gridDim.x * blockDim.x) {
        const int64_t i = o / n, j = o % n;
        double s = 0.0;
        for (int64_t p = 0; p < k; p++)
            s += (double)a[i * k + p] * (double)b[p * n + j];
        out[o] = (float)((double)acc[o] + s);
    }
}

/* Batched matmul; a_off / b_off (device arrays) give each batch's element offsets. */
__global__ void q35_batch_matmul_f32(float *c, const float *a, const float *b, int64_t batches,
                                     const int64_t *a_off, const int64_t *b_off, int64_t m,
                                     int64_t k, int64_t n)
{
    for (int64_t o = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; o < batches * m * n;
         o += (int64_t)gridDim.x * blockDim.x) {
        const int64_t t = o / (m * n), i = (o / n) % m, j = o % n;
        const float *ab = a + a_off[t], *bb = b + b_off[t];
        double s = 0.0;
        for (int64_t p = 0; p < k; p++)
            s += (double)ab[i * k + p] * (double)bb[p * n + j];
        c[o] = (float)s;
    }
}

/* Strided copy of up to 8 dimensions (transposes, broadcasts, slices, concatenation). */
struct q35_strides {
    int rank;
    int64_t dims[8], dst[8], src[8];
};

template <typename T>
__global__ void q35_copy_strided(T *dst, const T *src, int64_t count, int64_t dst_off,
                                 int64_t src_off, q35_strides s)
{
    for (int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; e < count;
         e += (int64_t)gridDim.x * blockDim.x) {
        int64_t rest = e, so = src_off, doff = dst_off;
        for (int d = s.rank - 1; d >= 0; d--) {
            const int64_t i = rest % s.dims[d];
            rest /= s.dims[d];
            so += i * s.src[d];
            doff += i * s.dst[d];
        }
        dst[doff] = src[so];
    }
}

enum { Q35_RED_ADD, Q35_RED_MUL, Q35_RED_MAX, Q35_RED_MIN };

__device__ __forceinline__ double q35_combine(int op, double a, double b)
{
    switch (op) {
    case Q35_RED_ADD: return a + b;
    case Q35_RED_MUL: return a * b;
    case Q35_RED_MAX: return (a != a || b != b) ? (a != a ? a : b) : (a > b ? a : b);
    default: return (a != a || b != b) ? (a != a ? a : b) : (a < b ? a : b);
    }
}

__device__ __forceinline__ float q35_combinef(int op, float a, float b)
{
    switch (op) {
    case Q35_RED_ADD: return a + b;
    case Q35_RED_MUL: return a * b;
    case Q35_RED_MAX: return (a != a || b != b) ? (a != a ? a : b) : (a > b ? a : b);
    default: return (a != a || b != b) ? (a != a ? a : b) : (a < b ? a : b);
    }
}

/* A reduction over the middle axis of [outer, red, inner] (one thread per output). */
__global__ void q35_reduce_f32(float *out, const float *in, const float *init, int op,
                               int64_t outer, int64_t red, int64_t inner)
{
    for (int64_t o = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; o < outer * inner;
         o += (int64_t)gridDim.x * blockDim.x) {
        const int64_t a = o / inner, i = o % inner;
        if (red == 0) {
            out[o] = init[o];
            continue;
        }
        double acc = in[a * red * inner + i];
        for (int64_t r = 1; r < red; r++)
            acc = q35_combine(op, acc, (double)in[(a * red + r) * inner + i]);
        out[o] = q35_combinef(op, init[o], (float)acc);
    }
}

/* Softmax over the middle axis of [outer, len, inner], in double (one thread per row). */
__global__ void q35_softmax_f32(float *y, const float *x, int64_t outer, int64_t len,
                                int64_t inner)
{
    for (int64_t o = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; o < outer * inner;
         o += (int64_t)gridDim.x * blockDim.x) {
        const int64_t a = o / inner, i = o % inner;
        const float *xs = x + a * len * inner + i;
        float *ys = y + a * len * inner + i;
        double m = xs[0], s = 0.0;
        for (int64_t l = 1; l < len; l++)
            m = xs[l * inner] > m ? xs[l * inner] : m;
        for (int64_t l = 0; l < len; l++)
            s += exp((double)xs[l * inner] - m);
        for (int64_t l = 0; l < len; l++)
            ys[l * inner] = (float)(exp((double)xs[l * inner] - m) / s);
    }
}

/* A block sum in double over the block's threads, in a fixed tree order. */
__device__ double q35_block_sum(double v, double *part)
{
    part[threadIdx.x] = v;
    __syncthreads();
    for (int s = blockDim.x / 2; s > 0; s /= 2) {
        if (threadIdx.x < s)
            part[threadIdx.x] += part[threadIdx.x + s];
        __syncthreads();
    }
    const double total = part[0];
    __syncthreads();
    return total;
}

/* Layer norm over the last axis, one block per row, statistics in double. */
__global__ void q35_layer_norm_f32(float *y, const float *x, const float *gamma,
                                   const float *beta, int64_t len, double eps)
{
    __shared__ double part[Q35_THREADS];
    const float *xr = x + blockIdx.x * len;
    double s = 0.0;
    for (int64_t i = threadIdx.x; i < len; i += blockDim.x)
        s += xr[i];
    const double mean = q35_block_sum(s, part) / (double)len;
    double v = 0.0;
    for (int64_t i = threadIdx.x; i < len; i += blockDim.x)
        v += ((double)xr[i] - mean) * ((double)xr[i] - mean);
    const double var = q35_block_sum(v, part) / (double)len;
    for (int64_t i = threadIdx.x; i < len; i += blockDim.x)
        y[blockIdx.x * len + i] =
            (float)(((double)xr[i] - mean) / sqrt(var + eps) * gamma[i] + beta[i]);
}

/* RMS norm over the last axis, one block per row, the mean square in double. */
__global__ void q35_rms_norm_f32(float *y, const float *x, const float *gamma, int64_t len,
                                 double eps)
{
    __shared__ double part[Q35_THREADS];
    const float *xr = x + blockIdx.x * len;
    double s = 0.0;
    for (int64_t i = threadIdx.x; i < len; i += blockDim.x)
        s += (double)xr[i] * (double)xr[i];
    const double ms = q35_block_sum(s, part) / (double)len;
    for (int64_t i = threadIdx.x; i < len; i += blockDim.x)
        y[blockIdx.x * len + i] = (float)((double)xr[i] / sqrt(ms + eps) * gamma[i]);
}

__global__ void q35_silu_f32(float *y, const float *x, int64_t count)
{
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < count;
         i += (int64_t)gridDim.x * blockDim.x)
        y[i] = (float)((double)x[i] / (1.0 + exp(-(double)x[i])));
}

__global__ void q35_gelu_f32(float *y, const float *x, int64_t count, int approximate_tanh)
{
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < count;
         i += (int64_t)gridDim.x * blockDim.x)
        y[i] = q35_activate(approximate_tanh ? Q35_ACT_GELU_TANH : Q35_ACT_GELU, x[i]);
}

/* q35nn.swiglu: silu(gate) in double rounded to float32, times up in float32. */
__global__ void q35_swiglu_f32(float *y, const float *gate, const float *up, int64_t count)
{
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < count;
         i += (int64_t)gridDim.x * blockDim.x) {
        const float s = (float)((double)gate[i] / (1.0 + exp(-(double)gate[i])));
        y[i] = s * up[i];
    }
}

/* take(data, indices, axis) on [outer, size, inner]; a bad index sets *bad (checked by the
 * host after the run) and writes zeros. */
template <typename T>
__global__ void q35_gather(T *y, const T *data, const int64_t *indices, int64_t count,
                           int64_t outer, int64_t size, int64_t inner, int *bad)
{
    for (int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; e < outer * count * inner;
         e += (int64_t)gridDim.x * blockDim.x) {
        const int64_t o = e / (count * inner), c = (e / inner) % count, i = e % inner;
        int64_t j = indices[c];
        if (j < -size || j >= size) {
            *bad = 1;
            y[e] = (T)0;
            continue;
        }
        j = j < 0 ? j + size : j;
        y[e] = data[(o * size + j) * inner + i];
    }
}

/* q35nn.attention over a KV cache: one block per (batch, query row). The scores of the
 * row go to shared memory (products summed in double in d order, rounded, times the
 * scale, plus the mask, in float32); thread 0 takes the max and the sum of exponentials
 * in key order, in double, as the C runtime does; each thread then sums its output
 * elements over the keys in key order, in double. Dynamic shared memory: sk floats. */
__global__ void q35_attention_f32(float *y, const float *q, const float *k, const float *v,
                                  int64_t sq, int64_t sk, int64_t d, int64_t dv, float scale,
                                  const float *mask, const int64_t *mask_off, int64_t mask_row,
                                  int64_t mask_col)
{
    extern __shared__ float row[];
    __shared__ double stats[2];
    const int64_t b = blockIdx.x / sq, i = blockIdx.x % sq;
    const float *kb = k + b * sk * d, *vb = v + b * sk * dv, *qi = q + (b * sq + i) * d;
    for (int64_t j = threadIdx.x; j < sk; j += blockDim.x) {
        double dot = 0.0;
        for (int64_t t = 0; t < d; t++)
            dot += (double)qi[t] * (double)kb[j * d + t];
        float f = (float)dot;
        f = f * scale;
        if (mask)
            f = f + mask[mask_off[b] + i * mask_row + j * mask_col];
        row[j] = f;
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        double m = sk > 0 ? row[0] : 0.0, s = 0.0;
        for (int64_t j = 1; j < sk; j++)
            m = row[j] > m ? row[j] : m;
        for (int64_t j = 0; j < sk; j++)
            s += exp((double)row[j] - m);
        stats[0] = m;
        stats[1] = s;
    }
    __syncthreads();
    for (int64_t j = threadIdx.x; j < sk; j += blockDim.x)
        row[j] = (float)(exp((double)row[j] - stats[0]) / stats[1]);
    __syncthreads();
    for (int64_t e = threadIdx.x; e < dv; e += blockDim.x) {
        double acc = 0.0;
        for (int64_t j = 0; j < sk; j++)
            acc += (double)row[j] * (double)vb[j * dv + e];
        y[(b * sq + i) * dv + e] = (float)acc;
    }
}

/* Fill with one value. */
template <typename T>
__global__ void q35_fill(T *y, T value, int64_t count)
{
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < count;
         i += (int64_t)gridDim.x * blockDim.x)
        y[i] = value;
}

/* Grid size of a grid-stride kernel over `count` elements. */
[[maybe_unused]] static unsigned q35_grid(int64_t count)
{
    const int64_t blocks = (count + Q35_THREADS - 1) / Q35_THREADS;
    return (unsigned)(blocks < 1 ? 1 : blocks > 8192 ? 8192 : blocks);
}
/* ---- end of the q35c CUDA runtime ----------------------------------------------------- */

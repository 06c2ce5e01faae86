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
 * codes and three float32 words per column, as docs/format.md stores them, except that
 * every column's row of pair codes is padded to a multiple of 16 bytes (the blob layout of
 * targets/cuda/blob.py) so that a warp reads it with aligned loads. They are decoded in
 * registers inside the dot products; no float weight matrix ever exists.
 *
 * Two matmul families:
 * - the GEMV kernels (q35_gemv_f32, q35_gemv_i8): group size 32, K a multiple of 16, up
 *   to 8 activation rows per launch. A warp computes Q35_COLS adjacent columns; each lane
 *   takes 64-weight units (28 bytes of codes per column, two groups) strided by 32 units.
 *   Float path: every weight decoded exactly as the interpreter decodes it (float32
 *   scale * level, then + offset), products accumulated in float32 with fmaf, lanes summed
 *   by a shuffle tree. int8 path: dp4a on four int8 levels at a time, an exact int32 sum
 *   per group and row, then the float32 rescale term of each group and its running sum in
 *   group order (through shared memory), as q35c.semantics.rescale_group does: bit-exact.
 * - the tensor-core GEMM (q35_gemm_f16, opt-in with Q35_TENSOR_CORES=1): float path,
 *   more than 8 rows; fp16 tiles of the activations and of the decoded weights into
 *   mma.sync m16n8k16 with fp32 accumulation (its own tolerance, docs/cuda.md).
 * - portable kernels (q35_qmatmul_f32_simple, q35_qmatmul_i8_simple): any group size and
 *   K; one thread per column, the C runtime's order (float path summed in double).
 */
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <stdint.h>

#ifndef Q35_GEMV_WARPS
#define Q35_GEMV_WARPS 4
#endif
#ifndef Q35_COLS
#define Q35_COLS 4
#endif
#define Q35_GEMV_MAX_ROWS 8
#ifndef Q35_GEMV_PREFETCH
#define Q35_GEMV_PREFETCH 1 /* float GEMV, up to 4 rows: the next unit's codes are loaded
                               * before this unit's products (0: after them) */
#endif
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
 * (float32 [N] each), the group codes (N rows of meta_row bytes, as serialized) and the
 * pair codes (N rows of prow bytes: the serialized row, zero-padded to 16 bytes). */
struct q35_q3p5 {
    int k, n, group, groups;
    int meta_row, prow;
    const float *super_scale, *offset_base, *offset_step;
    const uint8_t *meta, *payload;
};

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
    const uint8_t *m = t.meta + (int64_t)n * t.meta_row + (g / 8) * 7;
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

/* Code i (0..31) of a 64-weight unit: bits 7i..7i+6 of its 7 little-endian words. */
__device__ __forceinline__ unsigned q35_code(const uint32_t w[7], int i)
{
    const int bit = 7 * i, lo = bit / 32, sh = bit % 32;
    const uint32_t next = lo + 1 < 7 ? w[lo + 1] : 0u;
    return __funnelshift_r(w[lo], next, sh) & 127u;
}

/* The 7 words of unit u of column n (28 bytes, 4-byte aligned since prow % 16 == 0). */
__device__ __forceinline__ void q35_load_unit(const q35_q3p5 &t, int n, int u, uint32_t w[7])
{
    const uint32_t *p = (const uint32_t *)(const void *)(t.payload + (int64_t)n * t.prow) + u * 7;
#pragma unroll
    for (int j = 0; j < 7; j++)
        w[j] = __ldg(p + j);
}

/* ---- float-path GEMV: y[M, N] = epilogue(x[M, K] @ W), group 32 ----------------------- */
template <int M, int KSPLIT>
__global__ void __launch_bounds__(Q35_GEMV_WARPS * 32)
q35_gemv_f32(float *y, const float *x, q35_q3p5 t, q35_epilogue e)
{
    static_assert(KSPLIT == 1 || KSPLIT == Q35_GEMV_WARPS, "a block is 1 or all K parts");
    /* up to 4 rows the registers hold a second unit's codes without spilling */
    constexpr bool PREFETCH = Q35_GEMV_PREFETCH && M <= 4;
    __shared__ q35_tables tab;
    __shared__ float partial[KSPLIT][M * Q35_COLS];
    q35_load_tables(&tab);
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, part = warp % KSPLIT;
    const int n0 = (blockIdx.x * (Q35_GEMV_WARPS / KSPLIT) + warp / KSPLIT) * Q35_COLS;
    if (n0 >= t.n) /* the same for all warps of a column group (KSPLIT > 1: the block) */
        return;
    const int units = (t.groups + 1) / 2;
    float acc[M][Q35_COLS];
#pragma unroll
    for (int r = 0; r < M; r++)
#pragma unroll
        for (int c = 0; c < Q35_COLS; c++)
            acc[r][c] = 0.0f;
    uint32_t words[Q35_COLS][7]; /* the codes of unit u */
    if (PREFETCH && part * 32 + lane < units)
#pragma unroll
        for (int c = 0; c < Q35_COLS; c++)
            q35_load_unit(t, n0 + c < t.n ? n0 + c : t.n - 1, part * 32 + lane, words[c]);
    for (int u = part * 32 + lane; u < units; u += 32 * KSPLIT) {
        /* PREFETCH: the next unit's codes are in flight while this unit's products run */
        uint32_t next[Q35_COLS][7];
#pragma unroll
        for (int c = 0; c < Q35_COLS; c++) {
            const int n = n0 + c < t.n ? n0 + c : t.n - 1;
            if (!PREFETCH)
                q35_load_unit(t, n, u, words[c]);
            else if (u + 32 * KSPLIT < units)
                q35_load_unit(t, n, u + 32 * KSPLIT, next[c]);
        }
        float scale[Q35_COLS][2], offset[Q35_COLS][2];
#pragma unroll
        for (int c = 0; c < Q35_COLS; c++) {
            const int n = n0 + c < t.n ? n0 + c : t.n - 1;
#pragma unroll
            for (int h = 0; h < 2; h++) {
                if (2 * u + h < t.groups) {
                    q35_group_meta(t, n, 2 * u + h, tab.steps, &scale[c][h], &offset[c][h]);
                } else {
                    scale[c][h] = 0.0f;
                    offset[c][h] = 0.0f;
                }
            }
        }
#pragma unroll
        for (int b = 0; b < 4; b++) { /* 16 weights: codes 8b..8b+7 */
            const int kb = u * 64 + b * 16;
            if (kb >= t.k)
                break;
            float w[Q35_COLS][16];
#pragma unroll
            for (int c = 0; c < Q35_COLS; c++)
#pragma unroll
                for (int i = 0; i < 8; i++) {
                    const float2 l = tab.levels[q35_code(words[c], 8 * b + i)];
                    w[c][2 * i] = __fadd_rn(__fmul_rn(scale[c][b / 2], l.x), offset[c][b / 2]);
                    w[c][2 * i + 1] = __fadd_rn(__fmul_rn(scale[c][b / 2], l.y), offset[c][b / 2]);
                }
#pragma unroll
            for (int r = 0; r < M; r++) {
                const float4 *xr = (const float4 *)(const void *)(x + (int64_t)r * t.k + kb);
                float xv[16];
#pragma unroll
                for (int j = 0; j < 4; j++) {
                    const float4 v = __ldg(xr + j);
                    xv[4 * j] = v.x;
                    xv[4 * j + 1] = v.y;
                    xv[4 * j + 2] = v.z;
                    xv[4 * j + 3] = v.w;
                }
#pragma unroll
                for (int c = 0; c < Q35_COLS; c++)
#pragma unroll
                    for (int i = 0; i < 16; i++)
                        acc[r][c] = fmaf(xv[i], w[c][i], acc[r][c]);
            }
        }
        if (PREFETCH)
#pragma unroll
            for (int c = 0; c < Q35_COLS; c++)
#pragma unroll
                for (int j = 0; j < 7; j++)
                    words[c][j] = next[c][j];
    }
#pragma unroll
    for (int r = 0; r < M; r++)
#pragma unroll
        for (int c = 0; c < Q35_COLS; c++) {
            float v = acc[r][c];
#pragma unroll
            for (int s = 16; s > 0; s /= 2)
                v += __shfl_xor_sync(0xffffffffu, v, s);
            acc[r][c] = v;
        }
    if (lane < M * Q35_COLS) {
        const int r = lane / Q35_COLS, c = lane % Q35_COLS;
        float v = 0.0f;
#pragma unroll
        for (int rr = 0; rr < M; rr++)
#pragma unroll
            for (int cc = 0; cc < Q35_COLS; cc++)
                if (rr == r && cc == c)
                    v = acc[rr][cc];
        if (KSPLIT > 1)
            partial[part][lane] = v;
        else if (n0 + c < t.n)
            y[(int64_t)r * t.n + n0 + c] = q35_epilogue_apply(e, v, r, n0 + c, t.n);
    }
    if (KSPLIT > 1) { /* the K parts' sums, in part order */
        __syncthreads();
        if (part != 0 || lane >= M * Q35_COLS)
            return;
        float v = 0.0f;
        for (int p = 0; p < KSPLIT; p++)
            v += partial[p][lane];
        const int r = lane / Q35_COLS, c = lane % Q35_COLS;
        if (n0 + c < t.n)
            y[(int64_t)r * t.n + n0 + c] = q35_epilogue_apply(e, v, r, n0 + c, t.n);
    }
}

/* ---- int8-path GEMV: y[M, N] = row_scale * sum_g (s_g * acc_g + o_g * sx_g), group 32 -- */
template <int M, int KSPLIT>
__global__ void __launch_bounds__(Q35_GEMV_WARPS * 32)
q35_gemv_i8(float *y, const int8_t *q, const float *row_scale, q35_q3p5 t)
{
    static_assert(KSPLIT == 1 || KSPLIT == Q35_GEMV_WARPS, "a block is 1 or all K parts");
    constexpr int SETS = Q35_GEMV_WARPS / KSPLIT; /* column groups per block */
    constexpr int SPAN = 64 * KSPLIT;             /* groups per round */
    __shared__ q35_tables tab;
    /* The rescale terms of a round's groups for every (row, column) of each column group
     * (+1: no bank conflicts when lane j reads row j). */
    __shared__ float terms[SETS][M * Q35_COLS][SPAN + 1];
    q35_load_tables(&tab);
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, part = warp % KSPLIT;
    const int set = warp / KSPLIT;
    const int n0 = (blockIdx.x * SETS + set) * Q35_COLS;
    if (n0 >= t.n) /* the same for all warps of a column group (KSPLIT > 1: the block) */
        return;
    const int units = (t.groups + 1) / 2;
    float total = 0.0f; /* lane j < M * COLS of part 0: the running sum of (row j / COLS,
                         * column j % COLS) */
    for (int base = 0; base < units; base += 32 * KSPLIT) {
        const int slot = part * 32 + lane; /* this lane's unit in the round */
        const int u = base + slot;
        if (u < units) {
            uint32_t words[Q35_COLS][7];
#pragma unroll
            for (int c = 0; c < Q35_COLS; c++)
                q35_load_unit(t, n0 + c < t.n ? n0 + c : t.n - 1, u, words[c]);
#pragma unroll
            for (int h = 0; h < 2; h++) {
                const int g = 2 * u + h;
                const int k0 = g * 32;
                int qv[M][8], sx[M];
#pragma unroll
                for (int r = 0; r < M; r++) {
                    sx[r] = 0;
#pragma unroll
                    for (int j = 0; j < 8; j++) {
                        /* K % 16 == 0, so a 16-weight block is all in or all out */
                        const int k = k0 + 4 * j;
                        qv[r][j] = k < t.k && g < t.groups
                            ? __ldg((const int *)(const void *)(q + (int64_t)r * t.k + k)) : 0;
                        sx[r] = __dp4a(qv[r][j], 0x01010101, sx[r]);
                    }
                }
#pragma unroll
                for (int c = 0; c < Q35_COLS; c++) {
                    int acc[M];
#pragma unroll
                    for (int r = 0; r < M; r++)
                        acc[r] = 0;
#pragma unroll
                    for (int j = 0; j < 8; j++) {
                        const int wv = (int)(tab.packed[q35_code(words[c], 16 * h + 2 * j)] |
                                             tab.packed[q35_code(words[c], 16 * h + 2 * j + 1)] << 16);
#pragma unroll
                        for (int r = 0; r < M; r++)
                            acc[r] = __dp4a(qv[r][j], wv, acc[r]);
                    }
                    float scale = 0.0f, offset = 0.0f;
                    if (g < t.groups && n0 + c < t.n)
                        q35_group_meta(t, n0 + c, g, tab.steps, &scale, &offset);
#pragma unroll
                    for (int r = 0; r < M; r++)
                        terms[set][r * Q35_COLS + c][2 * slot + h] =
                            __fadd_rn(__fmul_rn(scale, __int2float_rn(acc[r])),
                                      __fmul_rn(offset, __int2float_rn(sx[r])));
                }
            }
        }
        if (KSPLIT > 1)
            __syncthreads();
        else
            __syncwarp();
        if (part == 0 && lane < M * Q35_COLS) {
            const int count = min(SPAN, t.groups - 2 * base);
            for (int i = 0; i < count; i++)
                total = __fadd_rn(total, terms[set][lane][i]);
        }
        if (KSPLIT > 1)
            __syncthreads();
        else
            __syncwarp();
    }
    if (part == 0 && lane < M * Q35_COLS) {
        const int r = lane / Q35_COLS, c = lane % Q35_COLS;
        if (n0 + c < t.n)
            y[(int64_t)r * t.n + n0 + c] = __fmul_rn(total, row_scale[r]);
    }
}

/* ---- float-path tensor-core GEMM (prefill, opt-in): y[M, N] = epilogue(x[M, K] @ W) ---
 *
 * Built only with Q35_TENSOR_CORES=1 (`make TC=1`); the default float path is the fp32
 * GEMV. A block of 4 warps computes a (16 * MT) x 64 output tile. Per 64-weight unit of K
 * (two groups), the block stages the activations, rounded to fp16, and the weights, each
 * decoded exactly as the interpreter decodes it (float32 `scale * level + offset`) and then
 * rounded to fp16, as [row][k] and [column][k] tiles in shared memory; warp w multiplies
 * all rows by columns 16w..16w+15 with mma.sync m16n8k16 (fp16 inputs, fp32 accumulation).
 * The next unit's codes and activations are loaded into registers while the current unit's
 * products run (one stage of register prefetch). Rows, columns and weights past M, N, K are
 * zero in the tiles and never stored. Needs sm_80+ (mma.sync m16n8k16). */
#ifndef Q35_TENSOR_CORES
#define Q35_TENSOR_CORES 0
#endif
#define Q35_GEMM_BN 64
#define Q35_GEMM_BK 64
#define Q35_GEMM_PAD 72 /* halves per tile row: 144 bytes, conflict-free fragment loads */

template <int MT>
struct __align__(16) q35_gemm_tiles {
    __half a[16 * MT][Q35_GEMM_PAD];
    __half b[Q35_GEMM_BN][Q35_GEMM_PAD];
};

/* What one thread fetches from global memory for one unit: 2 * MT float4 of activations
 * (16 * MT rows x 64 floats over 128 threads), and the unit's codes of one column with the
 * scale and offset of one of its two groups. */
template <int MT>
struct q35_gemm_stage {
    float4 x[2 * MT];
    uint32_t w[7];
    float scale, offset;
};

template <int MT>
__device__ __forceinline__ void q35_gemm_fetch(const q35_q3p5 &t, const float *x, int rows,
                                               int m0, int n0, int u, const float *steps,
                                               q35_gemm_stage<MT> &st)
{
#pragma unroll
    for (int i = 0; i < 2 * MT; i++) {
        const int idx = threadIdx.x + 128 * i; /* float4 index in the 16 MT x 16 tile */
        const int r = m0 + idx / 16, k = u * Q35_GEMM_BK + 4 * (idx % 16);
        st.x[i] = r < rows && k < t.k
            ? __ldg((const float4 *)(const void *)(x + (int64_t)r * t.k + k))
            : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    }
    const int n = n0 + threadIdx.x / 2, g = 2 * u + threadIdx.x % 2;
    if (n < t.n && g < t.groups) {
        q35_load_unit(t, n, u, st.w);
        q35_group_meta(t, n, g, steps, &st.scale, &st.offset);
    } else {
#pragma unroll
        for (int j = 0; j < 7; j++)
            st.w[j] = 0u;
        st.scale = 0.0f;
        st.offset = 0.0f;
    }
}

/* The fetched unit into the shared tiles: activations to fp16, weights decoded (float32,
 * the interpreter's order) then rounded to fp16; weights past K are zero. */
template <int MT>
__device__ __forceinline__ void q35_gemm_stage_store(const q35_q3p5 &t, int u,
                                                     const q35_gemm_stage<MT> &st,
                                                     const q35_tables &tab,
                                                     q35_gemm_tiles<MT> &tile)
{
#pragma unroll
    for (int i = 0; i < 2 * MT; i++) {
        const int idx = threadIdx.x + 128 * i;
        __half2 *dst = (__half2 *)(void *)&tile.a[idx / 16][4 * (idx % 16)];
        dst[0] = __floats2half2_rn(st.x[i].x, st.x[i].y);
        dst[1] = __floats2half2_rn(st.x[i].z, st.x[i].w);
    }
    const int c = threadIdx.x / 2, h = threadIdx.x % 2;
    /* group h's 16 codes are bits 112h..112h+111 of the unit: a 4-word window starting
     * at that bit, so that every index below is a compile-time constant */
    uint32_t win[5];
#pragma unroll
    for (int j = 0; j < 4; j++)
        win[j] = h ? __funnelshift_r(st.w[3 + j], j + 4 < 7 ? st.w[4 + j] : 0u, 16) : st.w[j];
    win[4] = 0u;
    uint32_t packed[16];
#pragma unroll
    for (int i = 0; i < 16; i++) {
        const int k = u * Q35_GEMM_BK + 32 * h + 2 * i;
        const int bit = 7 * i;
        const float2 l = tab.levels[__funnelshift_r(win[bit / 32], win[bit / 32 + 1], bit % 32)
                                    & 127u];
        const float w0 = __fadd_rn(__fmul_rn(st.scale, l.x), st.offset);
        const float w1 = __fadd_rn(__fmul_rn(st.scale, l.y), st.offset);
        const __half2 v = k < t.k ? __floats2half2_rn(w0, w1) : __floats2half2_rn(0.0f, 0.0f);
        packed[i] = *(const uint32_t *)(const void *)&v;
    }
    uint4 *dst = (uint4 *)(void *)&tile.b[c][32 * h];
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

__device__ __forceinline__ uint32_t q35_half2_at(const __half *p)
{
    return *(const uint32_t *)(const void *)p;
}

template <int MT>
__global__ void __launch_bounds__(128)
q35_gemm_f16(float *y, const float *x, int rows, q35_q3p5 t, q35_epilogue e)
{
    static_assert(MT == 1 || MT == 2 || MT == 4, "16, 32 or 64 rows per block");
    static_assert(alignof(q35_gemm_tiles<MT>) == 16 && sizeof(__half) * 16 * MT * Q35_GEMM_PAD % 16 == 0,
                  "the weight tile's rows take 16-byte stores");
    __shared__ q35_tables tab;
    __shared__ q35_gemm_tiles<MT> tile;
    q35_load_tables(&tab);
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int gid = lane >> 2, tid = lane & 3;
    const int n0 = blockIdx.x * Q35_GEMM_BN, m0 = blockIdx.y * 16 * MT;
    const int units = (t.k + Q35_GEMM_BK - 1) / Q35_GEMM_BK;
    float acc[MT][2][4];
#pragma unroll
    for (int i = 0; i < MT; i++)
#pragma unroll
        for (int j = 0; j < 2; j++)
#pragma unroll
            for (int v = 0; v < 4; v++)
                acc[i][j][v] = 0.0f;
    q35_gemm_stage<MT> st;
    q35_gemm_fetch<MT>(t, x, rows, m0, n0, 0, tab.steps, st);
    for (int u = 0; u < units; u++) {
        q35_gemm_stage_store<MT>(t, u, st, tab, tile);
        __syncthreads();
        if (u + 1 < units) /* in flight while the products below run */
            q35_gemm_fetch<MT>(t, x, rows, m0, n0, u + 1, tab.steps, st);
#pragma unroll
        for (int kk = 0; kk < Q35_GEMM_BK; kk += 16) {
            uint32_t b[2][2];
#pragma unroll
            for (int j = 0; j < 2; j++) {
                const __half *col = tile.b[16 * warp + 8 * j + gid];
                b[j][0] = q35_half2_at(col + kk + 2 * tid);
                b[j][1] = q35_half2_at(col + kk + 8 + 2 * tid);
            }
#pragma unroll
            for (int i = 0; i < MT; i++) {
                const __half *r0 = tile.a[16 * i + gid], *r8 = tile.a[16 * i + gid + 8];
                const uint32_t a[4] = {q35_half2_at(r0 + kk + 2 * tid),
                                       q35_half2_at(r8 + kk + 2 * tid),
                                       q35_half2_at(r0 + kk + 8 + 2 * tid),
                                       q35_half2_at(r8 + kk + 8 + 2 * tid)};
#pragma unroll
                for (int j = 0; j < 2; j++)
                    q35_mma_16816(acc[i][j], a, b[j]);
            }
        }
        __syncthreads();
    }
#pragma unroll
    for (int i = 0; i < MT; i++)
#pragma unroll
        for (int j = 0; j < 2; j++)
#pragma unroll
            for (int v = 0; v < 4; v++) {
                const int r = m0 + 16 * i + gid + 8 * (v / 2);
                const int n = n0 + 16 * warp + 8 * j + 2 * tid + v % 2;
                if (r < rows && n < t.n)
                    y[(int64_t)r * t.n + n] = q35_epilogue_apply(e, acc[i][j][v], r, n, t.n);
            }
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

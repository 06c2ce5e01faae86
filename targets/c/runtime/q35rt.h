/* ---- q35c C runtime: the kernels every generated model.c contains ---------------------
 *
 * Plain C99 (plus optional OpenMP). Numerics follow q35c's reference interpreter
 * (targets/interp/interpreter.py): elementwise float ops round once in float32; matmuls
 * and the composite ops (softmax, norms, GELU, SiLU) accumulate in double and round once;
 * the int8 path is exact integer arithmetic followed by the float32 rescale in the
 * interpreter's order, so it matches bit for bit. Build with -ffp-contract=off: a fused
 * multiply-add would change the Q3P5 decode `scale * level + offset` and the rescale.
 *
 * Q3P5 weights are read in their stored form (docs/format.md): per column a row of
 * 7-bit pair codes, 8 codes in 7 bytes, and a row of 7-bit group codes. Codes are decoded
 * inside the dot product, group by group; no float weight matrix ever exists.
 *
 * The runtime is five fragments that the C printer concatenates into model.c in this
 * order: q35rt.h (common definitions, CPU feature dispatch), q35rt_avx512.c and
 * q35rt_avx2.c (the x86 SIMD kernels, each function compiled for its instruction set by a
 * target attribute), q35rt_gemm.c (the float GEMM: AVX-512, AVX2 and portable versions),
 * q35rt.c (portable kernels, the dispatching entry points, other ops).
 * The SIMD kernels are chosen at run time by the CPU's features, not by -march, so one
 * build uses AVX-512 on a machine that has it and AVX2 or portable C elsewhere; the
 * environment variable Q35_KERNELS=avx2 or =portable caps the choice (for testing and
 * comparison).
 */
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if defined(__GNUC__)
#define Q35_FN static __attribute__((unused))
#else
#define Q35_FN static
#endif

/* Parallel loops only where the work (multiply-adds) pays for waking the threads. */
#define Q35_PRAGMA(x) _Pragma(#x)
#ifdef _OPENMP
/* The OpenMP API functions used here, declared rather than taken from <omp.h>, which
 * some compilers accept -fopenmp without shipping (clang without libomp headers). */
extern int omp_get_max_threads(void);
#define Q35_PARALLEL_FOR(work) \
    Q35_PRAGMA(omp parallel for schedule(dynamic, 16) if ((work) >= (1 << 22)))

#else
#define Q35_PARALLEL_FOR(work)
#endif

/* CODEBOOK[code][0 or 1]: the integer levels of the even-k and odd-k weight of a pair. */
static const int8_t q35_codebook[128][2] = {
Q35_CODEBOOK_ROWS
};

/* SCALE_STEPS[e] = 2^(-e/5) rounded to float32, as bit patterns (exact). */
static const uint32_t q35_scale_step_bits[32] = {
Q35_SCALE_STEP_BITS
};

static const float q35_offset_grid[4] = {-1.5f, -0.5f, 0.5f, 1.5f};

/* The 8 bytes starting at p as a little-endian word (the caller checked the host is
 * little-endian). Reading 8 bytes for a 7-byte block is safe: every Q3P5 entry in the
 * blob ends with its 4-byte CRC. */
static uint64_t q35_load_word(const uint8_t *p)
{
    uint64_t w;
    memcpy(&w, p, sizeof w);
    return w;
}

static float q35_scale_step(unsigned e)
{
    float f;
    memcpy(&f, &q35_scale_step_bits[e], sizeof f);
    return f;
}

/* A view of one serialized Q3P5 tensor (format.md section 6) inside the weight blob. */
typedef struct {
    int64_t k, n, group;
    int64_t groups;        /* G = ceil(K / group) */
    int64_t payload_row;   /* bytes of pair codes per column */
    int64_t meta_row;      /* bytes of group codes per column */
    const float *super_scale, *offset_base, *offset_step;
    const uint8_t *meta, *payload;
} q35_q3p5;

Q35_FN q35_q3p5 q35_q3p5_view(const uint8_t *entry)
{
    q35_q3p5 t;
    uint16_t group;
    uint32_t k, n;
    memcpy(&group, entry + 6, 2);
    memcpy(&k, entry + 8, 4);
    memcpy(&n, entry + 12, 4);
    t.k = k;
    t.n = n;
    t.group = group;
    t.groups = (t.k + t.group - 1) / t.group;
    t.payload_row = t.groups * t.group / 16 * 7;
    t.meta_row = (t.groups + 7) / 8 * 7;
    t.super_scale = (const float *)(const void *)(entry + 16);
    t.offset_base = t.super_scale + t.n;
    t.offset_step = t.offset_base + t.n;
    t.meta = entry + 16 + 12 * t.n;
    t.payload = t.meta + t.n * t.meta_row;
    return t;
}

/* One quantized matmul as the column kernels see it: y[rows, N] = x @ W with W the Q3P5
 * tensor t; q and row_scale on the int8 path, x on the float path; work: scratch that the
 * kernel's serial preparation filled (de-interleaved activations, group sums). */
typedef struct {
    float *y;
    const int8_t *q;
    const float *row_scale, *x;
    int64_t rows;
    q35_q3p5 t;
    uint8_t *work;
} q35_qjob;

/* Computes the outputs of columns [n0, n1) of a job, independently of other columns. */
typedef void (*q35_columns_fn)(const q35_qjob *job, int64_t n0, int64_t n1);

/* ---- the thread pool of the quantized matmuls ------------------------------------------
 *
 * With OpenMP (whose builds link pthreads) the column kernels run on a persistent pool of
 * POSIX threads plus the calling thread. The thread count is read at every matmul
 * (q35_threads): the count set by q35_set_threads (the model's <prefix>_set_threads, the
 * runner's --threads), else omp_get_max_threads() of the calling thread (OMP_NUM_THREADS,
 * omp_set_num_threads), at most Q35_THREADS_MAX. The pool grows to the count when a job
 * asks for more workers than it has and never shrinks: worker i (1, 2, ...) works on a job
 * only if i < the job's count, so a later, smaller count leaves the others asleep. (Until
 * 2026-12-07 the pool was sized once, at its first job: a process that ran a model at 1
 * thread and then at 2 - benchmarks/bench_llm.py alternates them - kept 1.)
 *
 * A job is published by bumping a 64-bit ticket (generation << 32 | next unit) after its
 * fields and its limit (generation << 32 | units); every thread, the caller too, claims
 * units of `unit` columns by compare-and-swap on the ticket, so the split adapts to
 * threads that start late or run slow. The caller returns when the units are *done* (a
 * counter), not when every worker has arrived: a worker the OS has not scheduled yet
 * claims nothing and holds nobody up, where an OpenMP join would wait a scheduler tick for
 * it on a busy machine. Idle workers spin for 20000 `pause`s (tens to hundreds of
 * microseconds by CPU: back-to-back matmuls of a decode step find them awake), then sleep
 * on a condition variable. One job at a time: a caller that finds the pool busy (another
 * thread's job) runs its job alone. Each output is computed by one call the same way
 * whatever the split, so results do not depend on it. */

/* The most threads one quantized matmul uses (the calling thread included). */
#ifndef Q35_THREADS_MAX
#define Q35_THREADS_MAX 256
#endif

/* The thread count q35_set_threads set (0: OpenMP's). */
static int q35_threads_set = 0;

#ifdef _OPENMP
extern void omp_set_num_threads(int n);
#endif

/* Threads for the quantized matmuls and the OpenMP loops of later runs from this thread:
 * n >= 1, at most Q35_THREADS_MAX; 0 goes back to OpenMP's count. Returns the count now in
 * force (1 in a build without OpenMP). */
Q35_FN int q35_set_threads(int n)
{
    n = n < 0 ? 0 : n > Q35_THREADS_MAX ? Q35_THREADS_MAX : n;
    __atomic_store_n(&q35_threads_set, n, __ATOMIC_RELAXED);
#ifdef _OPENMP
    if (n > 0)
        omp_set_num_threads(n);
    n = n > 0 ? n : omp_get_max_threads();
    return n > Q35_THREADS_MAX ? Q35_THREADS_MAX : n < 1 ? 1 : n;
#else
    return 1;
#endif
}

#ifdef _OPENMP
#include <pthread.h>

/* The thread count of the next job, the caller included. */
static int q35_threads(void)
{
    int n = __atomic_load_n(&q35_threads_set, __ATOMIC_RELAXED);
    if (n <= 0)
        n = omp_get_max_threads();
    return n > Q35_THREADS_MAX ? Q35_THREADS_MAX : n < 1 ? 1 : n;
}

typedef struct {
    pthread_mutex_t lock; /* the sleepers' mutex */
    pthread_cond_t wake;
    pthread_mutex_t busy; /* held by the caller of the running job */
    int threads;          /* the caller and the workers started so far */
    int active;           /* threads of the current job: workers 1 .. active - 1 join it */
    int sleepers;
    uint64_t ticket;      /* generation << 32 | next unit */
    uint64_t limit;       /* generation << 32 | units of that generation */
    int64_t done;         /* units finished in this generation */
    /* the job of the current generation (written before the ticket is published) */
    q35_columns_fn fn;
    const q35_qjob *job;
    int64_t unit;
} q35_pool_state;

static q35_pool_state q35_pool = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER,
                                  PTHREAD_MUTEX_INITIALIZER, 1, 1, 0, 0, 0, 0, 0, 0, 0};

static void q35_pause(void)
{
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    __builtin_ia32_pause();
#endif
}

/* Claims and runs units of generation gen until none is left. A claim is valid only if
 * the limit read after the ticket is gen's (the next job's limit is written before its
 * ticket, and only once every unit of this one is done): then the unit exists, its job is
 * unfinished, and the fields read between loading the ticket and claiming it are gen's. */
static void q35_pool_drain(uint32_t gen)
{
    for (;;) {
        uint64_t cur = __atomic_load_n(&q35_pool.ticket, __ATOMIC_ACQUIRE);
        const uint64_t limit = __atomic_load_n(&q35_pool.limit, __ATOMIC_ACQUIRE);
        const q35_columns_fn fn = __atomic_load_n(&q35_pool.fn, __ATOMIC_RELAXED);
        const q35_qjob *job = __atomic_load_n(&q35_pool.job, __ATOMIC_RELAXED);
        const int64_t unit = __atomic_load_n(&q35_pool.unit, __ATOMIC_RELAXED);
        const int64_t u = (int64_t)(cur & 0xffffffffu), units = (int64_t)(limit & 0xffffffffu);
        if ((uint32_t)(cur >> 32) != gen || (uint32_t)(limit >> 32) != gen || u >= units)
            return;
        if (__atomic_compare_exchange_n(&q35_pool.ticket, &cur, cur + 1, 0, __ATOMIC_ACQ_REL,
                                        __ATOMIC_ACQUIRE)) {
            const int64_t n = job->t.n;
            fn(job, u * unit, (u + 1) * unit < n ? (u + 1) * unit : n);
            __atomic_add_fetch(&q35_pool.done, 1, __ATOMIC_RELEASE);
        }
    }
}

/* Worker `arg` (1, 2, ...): joins the jobs whose thread count exceeds its number. */
static void *q35_pool_worker(void *arg)
{
    const int id = (int)(intptr_t)arg;
    /* "seen" the generation before the current one: a worker started for a job that is
     * published by the time it runs joins it at once (stale generations drain nothing) */
    uint32_t seen =
        (uint32_t)(__atomic_load_n(&q35_pool.ticket, __ATOMIC_ACQUIRE) >> 32) - 1u;
    for (;;) {
        uint32_t gen = (uint32_t)(__atomic_load_n(&q35_pool.ticket, __ATOMIC_ACQUIRE) >> 32);
        int spin;
        for (spin = 0; gen == seen && spin < 20000; spin++) {
            q35_pause();
            gen = (uint32_t)(__atomic_load_n(&q35_pool.ticket, __ATOMIC_ACQUIRE) >> 32);
        }
        if (gen == seen) { /* sleep until a new generation is published */
            pthread_mutex_lock(&q35_pool.lock);
            __atomic_add_fetch(&q35_pool.sleepers, 1, __ATOMIC_SEQ_CST);
            while ((gen = (uint32_t)(__atomic_load_n(&q35_pool.ticket, __ATOMIC_SEQ_CST) >>
                                     32)) == seen)
                pthread_cond_wait(&q35_pool.wake, &q35_pool.lock);
            __atomic_sub_fetch(&q35_pool.sleepers, 1, __ATOMIC_SEQ_CST);
            pthread_mutex_unlock(&q35_pool.lock);
        }
        if (id < __atomic_load_n(&q35_pool.active, __ATOMIC_ACQUIRE))
            q35_pool_drain(gen);
        seen = gen;
    }
    return NULL;
}

/* Starts workers until the pool has `want` threads (under the busy mutex); returns the
 * pool's thread count (fewer if the system refuses threads). */
static int q35_pool_grow(int want)
{
    while (q35_pool.threads < want) {
        pthread_t thread;
        pthread_attr_t attr;
        int ok;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        pthread_attr_setstacksize(&attr, (size_t)1 << 22); /* the kernels' buffers */
        ok = pthread_create(&thread, &attr, q35_pool_worker,
                            (void *)(intptr_t)q35_pool.threads) == 0;
        pthread_attr_destroy(&attr);
        if (!ok)
            break;
        q35_pool.threads++;
    }
    return q35_pool.threads < want ? q35_pool.threads : want;
}
#endif

/* The least work (multiply-adds) a matmul hands to the pool: 2^18, about 120 KB of Q3P5
 * weights, some 10 microseconds of one core, against a microsecond or two to publish a
 * job to spinning workers. Below it the caller runs the job alone. (At 2^22, the bound
 * before, no matrix of SmolLM2-135M but its LM head reached the pool: a decode step did
 * not gain from a second thread.) */
#define Q35_POOL_MIN_WORK ((int64_t)1 << 18)

/* Runs fn over the job's columns in units of `unit` columns (a kernel's tile width), on the
 * pool when there is one and the work (multiply-adds) pays for waking it. */
static void q35_parallel_columns(q35_columns_fn fn, const q35_qjob *job, int64_t unit,
                                 int64_t work)
{
    const int64_t n = job->t.n, units = (n + unit - 1) / unit;
#ifdef _OPENMP
    int want;
    if (work >= Q35_POOL_MIN_WORK && units > 1 && (want = q35_threads()) > 1 &&
        pthread_mutex_trylock(&q35_pool.busy) == 0) {
        const int active = q35_pool_grow(want);
        if (active > 1) {
            const uint32_t gen =
                (uint32_t)(__atomic_load_n(&q35_pool.ticket, __ATOMIC_RELAXED) >> 32) + 1;
            __atomic_store_n(&q35_pool.fn, fn, __ATOMIC_RELAXED);
            __atomic_store_n(&q35_pool.job, job, __ATOMIC_RELAXED);
            __atomic_store_n(&q35_pool.unit, unit, __ATOMIC_RELAXED);
            __atomic_store_n(&q35_pool.active, active, __ATOMIC_RELAXED);
            __atomic_store_n(&q35_pool.done, 0, __ATOMIC_RELAXED);
            __atomic_store_n(&q35_pool.limit, (uint64_t)gen << 32 | (uint64_t)units,
                             __ATOMIC_SEQ_CST);
            __atomic_store_n(&q35_pool.ticket, (uint64_t)gen << 32, __ATOMIC_SEQ_CST);
            if (__atomic_load_n(&q35_pool.sleepers, __ATOMIC_SEQ_CST) > 0) {
                pthread_mutex_lock(&q35_pool.lock);
                pthread_cond_broadcast(&q35_pool.wake);
                pthread_mutex_unlock(&q35_pool.lock);
            }
            q35_pool_drain(gen);
            while (__atomic_load_n(&q35_pool.done, __ATOMIC_ACQUIRE) < units)
                q35_pause();
            pthread_mutex_unlock(&q35_pool.busy);
            return;
        }
        pthread_mutex_unlock(&q35_pool.busy);
    }
#endif
    (void)work;
    (void)units;
    fn(job, 0, n);
}

/* Scale and offset of group g of column n, exactly as format.md section 3 says. */
static void q35_group_meta(const q35_q3p5 *t, int64_t n, int64_t g, float *scale, float *offset)
{
    uint64_t word = q35_load_word(t->meta + n * t->meta_row + (g / 8) * 7);
    unsigned code = (unsigned)(word >> (7 * (g % 8))) & 127u;
    float step = t->offset_step[n] * q35_offset_grid[code >> 5];
    *scale = t->super_scale[n] * q35_scale_step(code & 31u);
    *offset = t->offset_base[n] + step;
}

/* The 2 * 8 levels (as floats) of the 8 pair codes in the 7-byte block at p. */
static void q35_block_levels(const uint8_t *p, float levels[16])
{
    uint64_t word = q35_load_word(p);
    int i;
    for (i = 0; i < 8; i++) {
        unsigned code = (unsigned)(word >> (7 * i)) & 127u;
        levels[2 * i] = (float)q35_codebook[code][0];
        levels[2 * i + 1] = (float)q35_codebook[code][1];
    }
}

/* Per row and group: the int32 sum of the group's int8 activations (the offset term). */
static void q35_group_sums(int32_t *sx, const int8_t *q, int64_t rows, int64_t k,
                           int64_t group, int64_t groups)
{
    int64_t r, g, i;
    for (r = 0; r < rows; r++)
        for (g = 0; g < groups; g++) {
            int64_t k0 = g * group, kend = k0 + group < k ? k0 + group : k;
            int32_t s = 0;
            for (i = k0; i < kend; i++)
                s += q[r * k + i];
            sx[r * groups + g] = s;
        }
}


/* ---- instruction sets ----------------------------------------------------------------
 * On x86-64 with GCC or clang the AVX-512 and AVX2 kernels are always compiled (with
 * per-function target attributes, whatever -march says) and q35_isa() picks one by the
 * CPU's features (__builtin_cpu_supports, which also checks that the OS saves the AVX-512
 * registers). The AVX-512 kernels need F, BW, DQ, VL, VBMI, VBMI2 and VNNI (Ice Lake,
 * Sapphire Rapids, AMD Zen 4 and later); the AVX2 kernels AVX2 and FMA (Haswell, Zen). */
enum { Q35_ISA_PORTABLE, Q35_ISA_AVX2, Q35_ISA_AVX512 };

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define Q35_X86 1
#define Q35_AVX512 \
    __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx512vbmi,avx512vbmi2,avx512vnni")))
#define Q35_AVX2 __attribute__((target("avx2,fma")))
#endif

/* Whether the CPU is AMD's (a kernel detail differs: q35_codes_full). */
static int q35_cpu_is_amd(void)
{
#ifdef Q35_X86
    __builtin_cpu_init();
    return __builtin_cpu_is("amd");
#else
    return 0;
#endif
}

/* The best kernel level this CPU runs, capped by Q35_KERNELS (avx2 or portable). Found
 * once; a race between threads writes the same value. */
static int q35_isa(void)
{
    static int level = -1;
    if (level < 0) {
        const char *cap = getenv("Q35_KERNELS");
        int best = Q35_ISA_PORTABLE;
#ifdef Q35_X86
        __builtin_cpu_init();
        if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
            best = Q35_ISA_AVX2;
        if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
            __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl") &&
            __builtin_cpu_supports("avx512vbmi") && __builtin_cpu_supports("avx512vbmi2") &&
            __builtin_cpu_supports("avx512vnni"))
            best = Q35_ISA_AVX512;
#endif
        if (cap && strcmp(cap, "portable") == 0)
            best = Q35_ISA_PORTABLE;
        else if (cap && strcmp(cap, "avx2") == 0 && best > Q35_ISA_AVX2)
            best = Q35_ISA_AVX2;
        level = best;
    }
    return level;
}

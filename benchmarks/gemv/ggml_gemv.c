/* Times ggml's CPU matmul (what llama.cpp runs) for y[M, N] = x[M, K] @ W[K, N] with W
 * in a ggml quantized type: one ggml_mul_mat node on a persistent ggml threadpool.
 *
 *   ggml_gemv TYPE K N M THREADS RUNS      (TYPE: q4_K, q3_K, q4_0)
 *
 * prints "median MS min MS bytes B avx512 A vnni V". W holds random N(0,1) weights quantized
 * by ggml itself (ggml_quantize_chunk); x is N(0,1). Build against ggml's headers and
 * libraries (bench_gemv.py --ggml-lib DIR does it):
 *   cc -O2 ggml_gemv.c -I DIR/include -L DIR/lib64 -lggml-cpu -lggml-base -lm
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ggml-cpu.h"
#include "ggml.h"

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static float gaussian(unsigned *state)
{
    double u, v;
    *state = *state * 1664525u + 1013904223u;
    u = ((*state >> 8) + 1.0) / 16777217.0;
    *state = *state * 1664525u + 1013904223u;
    v = (*state >> 8) / 16777216.0;
    return (float)(sqrt(-2.0 * log(u)) * cos(6.283185307179586 * v));
}

static int compare(const void *a, const void *b)
{
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
    enum ggml_type type;
    long k, n, m, i;
    int threads, runs, r;
    unsigned seed = 4096;
    float *w;
    double *times;
    struct ggml_init_params params;
    struct ggml_context *ctx;
    struct ggml_tensor *wt, *xt, *yt;
    struct ggml_cgraph *graph;
    struct ggml_threadpool_params tp_params;
    struct ggml_threadpool *pool;
    struct ggml_cplan plan;
    size_t wbytes;
    if (argc != 7) {
        fprintf(stderr, "usage: ggml_gemv TYPE K N M THREADS RUNS\n");
        return 2;
    }
    if (strcmp(argv[1], "q4_K") == 0)
        type = GGML_TYPE_Q4_K;
    else if (strcmp(argv[1], "q3_K") == 0)
        type = GGML_TYPE_Q3_K;
    else if (strcmp(argv[1], "q4_0") == 0)
        type = GGML_TYPE_Q4_0;
    else {
        fprintf(stderr, "ggml_gemv: unknown type %s\n", argv[1]);
        return 2;
    }
    k = atol(argv[2]);
    n = atol(argv[3]);
    m = atol(argv[4]);
    threads = atoi(argv[5]);
    runs = atoi(argv[6]);
    ggml_cpu_init();
    wbytes = ggml_row_size(type, k) * (size_t)n;
    params.mem_size = wbytes + (size_t)(m * k + m * n) * sizeof(float) + (64u << 20);
    params.mem_buffer = NULL;
    params.no_alloc = 0;
    ctx = ggml_init(params);
    wt = ggml_new_tensor_2d(ctx, type, k, n); /* ne0 = K: one row per output column */
    xt = ggml_new_tensor_2d(ctx, GGML_TYPE_F32, k, m);
    w = malloc((size_t)(k * n) * sizeof(float));
    for (i = 0; i < k * n; i++)
        w[i] = gaussian(&seed);
    ggml_quantize_chunk(type, w, wt->data, 0, n, k, NULL);
    free(w);
    for (i = 0; i < k * m; i++)
        ((float *)xt->data)[i] = gaussian(&seed);
    yt = ggml_mul_mat(ctx, wt, xt);
    graph = ggml_new_graph(ctx);
    ggml_build_forward_expand(graph, yt);
    tp_params = ggml_threadpool_params_default(threads);
    pool = ggml_threadpool_new(&tp_params);
    plan = ggml_graph_plan(graph, threads, pool);
    plan.work_data = malloc(plan.work_size ? plan.work_size : 1);
    times = malloc((size_t)runs * sizeof(double));
    for (r = 0; r < 5; r++)
        ggml_graph_compute(graph, &plan);
    for (r = 0; r < runs; r++) {
        const double t0 = now();
        ggml_graph_compute(graph, &plan);
        times[r] = now() - t0;
    }
    qsort(times, (size_t)runs, sizeof(double), compare);
    printf("median %.4f min %.4f bytes %zu avx512 %d vnni %d\n", 1e3 * times[runs / 2],
           1e3 * times[0], wbytes, ggml_cpu_has_avx512(), ggml_cpu_has_avx512_vnni());
    ggml_threadpool_free(pool);
    free(plan.work_data);
    free(times);
    ggml_free(ctx);
    return 0;
}

/* Memory read bandwidth: sum a buffer of uint64 words much larger than the last-level
 * cache, with OpenMP threads. Prints the best of REPEAT passes in GB/s (1e9 bytes/s).
 *
 *     cc -std=c99 -O3 -march=native -fopenmp membw.c -o membw && ./membw MIB REPEAT
 */
#define _POSIX_C_SOURCE 200809L
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

int main(int argc, char **argv)
{
    long mib = argc > 1 ? strtol(argv[1], NULL, 10) : 2048, repeat = argc > 2 ? strtol(argv[2], NULL, 10) : 5;
    int64_t words = (int64_t)mib * 1024 * 1024 / 8, i;
    uint64_t *buf = (uint64_t *)malloc((size_t)words * 8), total = 0;
    double best = 1e30;
    long r;
    if (!buf)
        return 1;
#pragma omp parallel for schedule(static)
    for (i = 0; i < words; i++)
        buf[i] = (uint64_t)i * 2654435761u;
    for (r = 0; r < repeat; r++) {
        uint64_t sum = 0;
        double t0 = now_s(), t;
#pragma omp parallel for schedule(static) reduction(+ : sum)
        for (i = 0; i < words; i++)
            sum += buf[i];
        t = now_s() - t0;
        total += sum;
        best = t < best ? t : best;
    }
    printf("%.3f GB/s (checksum %llu)\n", (double)words * 8 / best / 1e9, (unsigned long long)(total & 0xff));
    free(buf);
    return 0;
}

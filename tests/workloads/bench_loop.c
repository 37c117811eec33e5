/* Benchmark workload. Prints the measured phase's own elapsed nanoseconds (process start-up and
 * tracer attach/detach excluded).
 *   bench_loop N [THREADS]   N x (malloc(64); free) per thread; prints the loop's time
 *   bench_loop N free-phase  mallocs N blocks, then frees them; prints the free phase's time */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static long n;
static void *volatile sink;

static long long now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (long long)t.tv_sec * 1000000000LL + t.tv_nsec;
}

static void *loop(void *arg) {
    (void)arg;
    for (long i = 0; i < n; i++) { void *p = malloc(64); sink = p; free(p); }
    return NULL;
}

int main(int argc, char **argv) {
    n = argc > 1 ? atol(argv[1]) : 200000;
    if (argc > 2 && !strcmp(argv[2], "free-phase")) {
        void **blocks = calloc((size_t)n, sizeof *blocks);
        for (long i = 0; i < n; i++) blocks[i] = malloc(64);
        long long a = now_ns();
        for (long i = 0; i < n; i++) free(blocks[i]);
        printf("%lld\n", now_ns() - a);
        return 0;
    }
    int threads = argc > 2 ? atoi(argv[2]) : 1;
    long long a = now_ns();
    pthread_t t[64];
    for (int i = 0; i < threads && i < 64; i++) pthread_create(&t[i], NULL, loop, NULL);
    for (int i = 0; i < threads && i < 64; i++) pthread_join(t[i], NULL);
    printf("%lld\n", now_ns() - a);
    return 0;
}

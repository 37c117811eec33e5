/* Benchmark workload for stack walks: `bench_stack N DEPTH` calls DEPTH nested functions, then
 * runs N x (malloc(64); free) at the bottom and prints the loop's own nanoseconds. Built with
 * and without frame pointers by `cargo xtask bench stacks`. */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static void *volatile sink;

static long long now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (long long)t.tv_sec * 1000000000LL + t.tv_nsec;
}

/* Not a tail call: the frame stays on the stack while the loop runs. */
__attribute__((noinline)) static long long nest(int depth, long n) {
    if (depth > 0) {
        long long t = nest(depth - 1, n);
        __asm__ volatile("" : : "r"(t) : "memory");
        return t;
    }
    long long a = now_ns();
    for (long i = 0; i < n; i++) { void *p = malloc(64); sink = p; free(p); }
    return now_ns() - a;
}

int main(int argc, char **argv) {
    long n = argc > 1 ? atol(argv[1]) : 100000;
    int depth = argc > 2 ? atoi(argv[2]) : 40;
    printf("%lld\n", nest(depth, n));
    return 0;
}

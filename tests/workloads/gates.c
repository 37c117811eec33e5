/* Growth in seconds and what a process holds besides heap (issue 19).
 *
 *   gates short     for 2 s, every 10 ms: steady_leak keeps 16 KiB, and cache_put keeps a
 *                   cache that fills to 100 x 32 KiB in its first second, then replaces its
 *                   oldest entry at each put (bounded). Prints "leaked B in S s" at the end.
 *   gates vitals    for 3 s: 3 new threads a second (parked), 10 new descriptors a second.
 *   gates stacks    20 threads that wait; 1.5 s later the process exits with them alive.
 *   gates churn S   S seconds of malloc/free churn over a bounded live set (the soak):
 *                   prints "live B" at the end, the bytes it still holds.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define NOINLINE __attribute__((noinline))

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* External, so the compiler keeps the stores (and the mallocs). */
void *kept[1024];
int nkept;

NOINLINE void steady_leak(void) {
    char *p = malloc(16384);
    memset(p, 1, 16384);
    if (nkept < 1024)
        kept[nkept++] = p;
}

#define CACHE 100
void *cache[CACHE];
int cache_next;

NOINLINE void cache_put(void) {
    int slot = cache_next++ % CACHE;
    free(cache[slot]);
    cache[slot] = malloc(32768);
    memset(cache[slot], 2, 32768);
}

static void short_run(void) {
    double start = now();
    long leaked = 0;
    while (now() - start < 2.0) {
        steady_leak();
        leaked += 16384;
        /* 100 puts: the cache fills in its first second, then stays full. */
        cache_put();
        usleep(10000);
    }
    printf("leaked %ld in %.3f s\n", leaked, now() - start);
}

static void *park(void *arg) {
    (void)arg;
    pause();
    return NULL;
}

static void vitals(void) {
    double start = now();
    int threads = 0, fds = 0;
    while (now() - start < 3.0) {
        double t = now() - start;
        while (threads < (int)(t * 3) + 1) {
            pthread_t th;
            pthread_create(&th, NULL, park, NULL);
            threads++;
        }
        while (fds < (int)(t * 10) + 1) {
            if (open("/dev/null", O_RDONLY) >= 0)
                fds++;
        }
        usleep(5000);
    }
    printf("threads %d fds %d\n", threads, fds);
}

static void stacks(void) {
    for (int i = 0; i < 20; i++) {
        pthread_t t;
        pthread_create(&t, NULL, park, NULL);
    }
    usleep(1500000);
    printf("threads 20\n");
}

/* Churn: a live set of up to 4096 blocks of 16..4111 bytes, one replaced per step. */
void *live[4096];
size_t live_size[4096];

NOINLINE void churn_alloc(int i, size_t n) {
    live[i] = malloc(n);
    memset(live[i], 3, n < 64 ? n : 64);
    live_size[i] = n;
}

static void churn(double secs) {
    double start = now();
    uint64_t x = 88172645463325252ull;
    long steps = 0;
    while (now() - start < secs) {
        for (int k = 0; k < 1000; k++) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            int i = x % 4096;
            free(live[i]);
            churn_alloc(i, 16 + (x >> 20) % 4096);
            steps++;
        }
        usleep(1000);
    }
    size_t held = 0;
    for (int i = 0; i < 4096; i++)
        if (live[i])
            held += live_size[i];
    printf("live %zu steps %ld\n", held, steps);
}

int main(int argc, char **argv) {
    const char *what = argc > 1 ? argv[1] : "short";
    setvbuf(stdout, NULL, _IONBF, 0);
    if (!strcmp(what, "short"))
        short_run();
    else if (!strcmp(what, "vitals"))
        vitals();
    else if (!strcmp(what, "stacks"))
        stacks();
    else if (!strcmp(what, "churn"))
        churn(argc > 2 ? atof(argv[2]) : 30.0);
    return 0;
}

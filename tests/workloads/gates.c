/* Growth in seconds and what a process holds besides heap (issue 19).
 *
 *   gates short     for 2 s, every 10 ms: steady_leak keeps 16 KiB, and cache_put keeps a
 *                   cache that fills to 100 x 32 KiB in its first second, then replaces its
 *                   oldest entry at each put (bounded). Prints "leaked B in S s" at the end.
 *   gates vitals    for 3 s: 3 new threads a second (parked), 10 new descriptors a second.
 *   gates stacks    20 threads that wait; 1.5 s later the process exits with them alive.
 *   gates churn S   S seconds of malloc/free churn over a bounded live set (the soak):
 *                   prints "live B" at the end, the bytes it still holds.
 *   gates heap M    M MiB in 1 KiB blocks, each pointing to the one before, the last held by
 *                   a global: a heap the leak scan must read all of (its cost).
 *   gates forks N   N children one after another, each mallocs 4096 bytes in fork_child and
 *                   exits without freeing them (the fork storm). Prints "forks N in S s".
 *   gates threads N N threads at once, each 1000 x (thread_alloc 256 bytes, free) and one
 *                   256-byte block kept (the thread storm). Prints "threads N in S s".
 *   gates mmaps N   N x (mmap_one: 64 KiB anonymous, touched, munmap) (the mmap storm).
 *                   Prints "mmaps N in S s".
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <sys/mman.h>
#include <sys/wait.h>
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

void *heap_head;

NOINLINE void heap_fill(long mib) {
    void *prev = NULL;
    for (long i = 0; i < mib * 1024; i++) {
        void **b = malloc(1024);
        memset(b, 0x5a, 1024);
        b[0] = prev;
        prev = b;
    }
    heap_head = prev;
}

NOINLINE void fork_child(void) {
    char *p = malloc(4096);
    memset(p, 1, 4096);
    _exit(p ? 0 : 1);
}

static void forks(long n) {
    double start = now();
    for (long i = 0; i < n; i++) {
        pid_t pid = fork();
        if (pid == 0)
            fork_child();
        if (pid > 0)
            waitpid(pid, NULL, 0);
    }
    printf("forks %ld in %.3f s\n", n, now() - start);
}

void *thread_kept[4096];

NOINLINE void *thread_alloc(size_t n) {
    void *p = malloc(n);
    memset(p, 2, n);
    return p;
}

static void *thread_work(void *arg) {
    long i = (long)arg;
    for (int k = 0; k < 1000; k++)
        free(thread_alloc(256));
    thread_kept[i % 4096] = thread_alloc(256);
    return NULL;
}

static void threads(long n) {
    double start = now();
    pthread_t *t = calloc(n, sizeof *t);
    for (long i = 0; i < n; i++)
        pthread_create(&t[i], NULL, thread_work, (void *)i);
    for (long i = 0; i < n; i++)
        pthread_join(t[i], NULL);
    printf("threads %ld in %.3f s\n", n, now() - start);
}

NOINLINE void mmap_one(void) {
    char *p = mmap(NULL, 65536, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return;
    p[0] = 1;
    munmap(p, 65536);
}

static void mmaps(long n) {
    double start = now();
    for (long i = 0; i < n; i++)
        mmap_one();
    printf("mmaps %ld in %.3f s\n", n, now() - start);
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
    else if (!strcmp(what, "heap"))
        heap_fill(argc > 2 ? atol(argv[2]) : 1024);
    else if (!strcmp(what, "forks"))
        forks(argc > 2 ? atol(argv[2]) : 1000);
    else if (!strcmp(what, "threads"))
        threads(argc > 2 ? atol(argv[2]) : 200);
    else if (!strcmp(what, "mmaps"))
        mmaps(argc > 2 ? atol(argv[2]) : 100000);
    return 0;
}

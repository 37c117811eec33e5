/* Growth-shape workload for oomtrace's classifier: ~15 s, each shape in its own function.
 * Every step is 50 ms. Pseudo-random noise comes from a fixed LCG, so every run is alike.
 *   steady_leak:       4 KiB per step, never freed              -> growing at 80 KiB/s
 *   churn_leak:        a pool resized at random each step between 0.5 and 1.5 MiB, plus
 *                      16 KiB per step leaked, all from one call site -> growing
 *   lru_cache:         4 KiB entries up to a 2 MiB cap, then evict oldest + insert -> bounded
 *   batch_buffer:      64 KiB per step for 1 s, then all freed, repeatedly -> bounded
 *   stop_halfway:      8 KiB per step for the first 6 s, then nothing -> not growing at the end
 * Children: thread_leaker starts a thread per second (threads growing); fd_leaker opens 10
 * descriptors per second (fds growing). Usage: shapes [SECONDS] */
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define NOINLINE __attribute__((noinline))
#define STEP_NS 50000000L
static unsigned long long rng = 88172645463325252ULL;
static unsigned rnd(unsigned n) { rng = rng * 6364136223846793005ULL + 1442695040888963407ULL; return (unsigned)(rng >> 33) % n; }
static void *volatile sink;
static void touch(void *p, size_t n) { memset(p, 1, n); sink = p; }

NOINLINE void steady_leak(void) { void *p = malloc(4096); touch(p, 4096); }

#define POOL_MAX 512
static void *pool[POOL_MAX];
static int pool_n;
NOINLINE void *churn_alloc(size_t n) { void *p = malloc(n); touch(p, n); return p; }
static void churn_leak(void) {
    int target = 64 + (int)rnd(129); /* 0.5 .. 1.5 MiB of 8 KiB blocks */
    while (pool_n < target) pool[pool_n++] = churn_alloc(8192);
    while (pool_n > target) free(pool[--pool_n]);
    sink = churn_alloc(16384); /* leaked, same call site */
}

#define LRU_CAP 512
static void *lru[LRU_CAP];
static int lru_head, lru_n;
NOINLINE void lru_insert(void) {
    for (int k = 0; k < 4; k++) {
        if (lru_n == LRU_CAP) { free(lru[lru_head]); lru_head = (lru_head + 1) % LRU_CAP; lru_n--; }
        void *p = malloc(4096);
        touch(p, 4096);
        lru[(lru_head + lru_n) % LRU_CAP] = p;
        lru_n++;
    }
}

static void *batch[32];
static int batch_n;
NOINLINE void batch_buffer(void) {
    if (batch_n == 20) { while (batch_n) free(batch[--batch_n]); }
    void *p = malloc(65536);
    touch(p, 65536);
    batch[batch_n++] = p;
}

NOINLINE void stop_halfway(int step) { if (step < 120) { void *p = malloc(8192); touch(p, 8192); } }

static void *idle(void *arg) { (void)arg; for (;;) pause(); return NULL; }
NOINLINE void thread_leaker(int secs) {
    for (int i = 0; i < secs; i++) { pthread_t t; pthread_create(&t, NULL, idle, NULL); sleep(1); }
}
NOINLINE void fd_leaker(int secs) {
    for (int i = 0; i < secs; i++) { for (int k = 0; k < 10; k++) open("/dev/null", O_RDONLY); sleep(1); }
}

int main(int argc, char **argv) {
    int secs = argc > 1 ? atoi(argv[1]) : 15;
    pid_t a = fork();
    if (a == 0) { thread_leaker(secs); _exit(0); }
    pid_t b = fork();
    if (b == 0) { fd_leaker(secs); _exit(0); }
    struct timespec step = {0, STEP_NS};
    for (int s = 0; s < secs * 20; s++) {
        steady_leak();
        churn_leak();
        lru_insert();
        batch_buffer();
        stop_halfway(s);
        nanosleep(&step, NULL);
    }
    waitpid(a, NULL, 0);
    waitpid(b, NULL, 0);
    return 0;
}

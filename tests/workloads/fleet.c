// Workloads for `oomtrace agent` (tests/tests/it/fleet.rs, `cargo xtask bench agent`).
//
//   fleet leak RATE_KIB SECONDS   leak RATE_KIB KiB/s from fleet_leak() in 4 blocks a second,
//                                 while fleet_cache() churns a bounded cache of 8 × 128 KiB
//   fleet hog                     allocate and touch 1 MiB blocks from hog_grow() until killed
//   fleet churn SECONDS           a churning machine: 1 MiB blocks mapped, touched and freed at
//                                 20 Hz, a child touching 4 MiB every 100 ms, and an exec of
//                                 /bin/true every 500 ms
//
// Every block is at least the mmap threshold set below, so malloc maps it and free unmaps it:
// in growth mode each block's pages are faulted in by the function that writes them
// (memset's caller), and a freed block's pages leave its stack at once. Each block's first
// page is written first by malloc (its chunk header); memset writes the 32 pages after it:
// a block of B KiB puts exactly B KiB on its site.
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define CACHE_SLOTS 8
#define CACHE_BLOCK (128 * 1024)

static void *cache[CACHE_SLOTS];

// The compiler must neither drop a block nobody reads nor turn memset into a tail call (which
// would take the function off the stack while the pages fault): `used` after each memset.
#define used(p) __asm__ volatile("" : : "r"(p) : "memory")

__attribute__((noinline, noipa)) static void fleet_leak(size_t bytes) {
    char *p = malloc(bytes);
    memset(p, 0x5a, bytes);
    used(p);
}

__attribute__((noinline, noipa)) static void fleet_cache(int slot) {
    free(cache[slot]);
    cache[slot] = malloc(CACHE_BLOCK);
    memset(cache[slot], 0x3c, CACHE_BLOCK);
    used(cache[slot]);
}

__attribute__((noinline, noipa)) static void hog_grow(void) {
    for (;;) {
        char *p = malloc(1 << 20);
        if (!p) continue;
        memset(p, 1, 1 << 20);
        used(p);
    }
}

__attribute__((noinline, noipa)) static void churn_block(void) {
    char *p = malloc(1 << 20);
    memset(p, 2, 1 << 20);
    used(p);
    free(p);
}

__attribute__((noinline, noipa)) static void churn_child(void) {
    char *p = malloc(4 << 20);
    memset(p, 3, 4 << 20);
    used(p);
    _exit(0);
}

static void tick(struct timespec *next, long ns) {
    next->tv_nsec += ns;
    while (next->tv_nsec >= 1000000000L) {
        next->tv_nsec -= 1000000000L;
        next->tv_sec++;
    }
    clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, next, NULL);
}

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
    // A fixed threshold (setting it turns glibc's dynamic one off): every block here is mapped.
    mallopt(M_MMAP_THRESHOLD, 64 * 1024);
    if (argc < 2) {
        fprintf(stderr, "usage: fleet leak RATE_KIB SECONDS | hog | churn SECONDS\n");
        return 2;
    }
    struct timespec next;
    clock_gettime(CLOCK_MONOTONIC, &next);
    if (!strcmp(argv[1], "leak") && argc == 4) {
        size_t block = (size_t)atol(argv[2]) * 1024 / 4;
        double end = now_s() + atof(argv[3]);
        printf("ready %d\n", getpid());
        fflush(stdout);
        for (int i = 0; i < CACHE_SLOTS; i++) fleet_cache(i);
        for (int i = 0; now_s() < end; i++) {
            fleet_leak(block);
            fleet_cache(i % CACHE_SLOTS);
            tick(&next, 250000000L);
        }
        return 0;
    }
    if (!strcmp(argv[1], "hog")) {
        hog_grow();
        return 0;
    }
    if (!strcmp(argv[1], "churn") && argc == 3) {
        double end = now_s() + atof(argv[2]);
        for (int i = 0; now_s() < end; i++) {
            churn_block();
            if (i % 2 == 0 && fork() == 0) churn_child();
            if (i % 10 == 0 && fork() == 0) {
                execl("/bin/true", "true", (char *)NULL);
                _exit(127);
            }
            while (waitpid(-1, NULL, WNOHANG) > 0) {
            }
            tick(&next, 50000000L);
        }
        while (wait(NULL) > 0) {
        }
        return 0;
    }
    fprintf(stderr, "fleet: bad arguments\n");
    return 2;
}

/* Ground truth for --mode sample and --mode growth. Usage: modes <scenario>:
 *   sample   leaks known bytes from known functions in small, page-sized and huge blocks, and
 *            churns (allocates and frees) a known amount, for the sampling estimator's tests.
 *   growth   a leaking function that touches its pages in its own loop, one that fills them
 *            with libc's memset, a bounded one and a churning one, for RSS-growth attribution.
 *   leafmaps malloc maps 300 KiB blocks itself (above its mmap threshold) and frees them, and
 *            between those calls the program maps 3 x 64 KiB of its own from a deeper frame.
 * The figures the tests assert are written next to each function. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#define NOINLINE __attribute__((noinline))
#define MIB (1024L * 1024L)
static void *volatile sink;

/* 64 MiB in 1,048,576 blocks of 64 B, never freed */
NOINLINE void leak_small(void) {
    for (long i = 0; i < 64 * MIB / 64; i++) sink = malloc(64);
}
/* 64 MiB in 16,384 blocks of 4 KiB, never freed */
NOINLINE void leak_pages(void) {
    for (long i = 0; i < 64 * MIB / 4096; i++) sink = malloc(4096);
}
/* 32 MiB in 4 blocks of 8 MiB, never freed */
NOINLINE void leak_huge(void) {
    for (int i = 0; i < 4; i++) sink = malloc(8 * MIB);
}
/* 64 MiB allocated in 1,048,576 blocks of 64 B, every one freed at once: 0 outstanding */
NOINLINE void churn_small(void) {
    for (long i = 0; i < 64 * MIB / 64; i++) { void *volatile p = malloc(64); free(p); }
}
/* 64 MiB allocated in 1024 blocks of 64 KiB, every one freed: 0 outstanding */
NOINLINE void churn_sampled(void) {
    for (int i = 0; i < 1024; i++) { void *volatile p = malloc(64 * 1024); free(p); }
}
/* 200 rounds of realloc 64 B -> 256 KiB -> 300 KiB -> 64 B -> 80 B, then free: every
 * combination of old/new block sampled or not; 0 outstanding, 200 x 556 KiB (+ 200 x 144 B
 * + 200 x 64 B) allocated */
NOINLINE void realloc_walk(void) {
    static const size_t sizes[] = {256 * 1024, 300 * 1024, 64, 80};
    for (int r = 0; r < 200; r++) {
        void *p = malloc(64);
        for (int k = 0; k < 4; k++) p = realloc(p, sizes[k]);
        free(p);
    }
}

/* 64 MiB in 64 blocks of 1 MiB (mmapped by malloc), each page written by this loop */
NOINLINE void leak_touch(void) {
    for (int b = 0; b < 64; b++) {
        char *p = malloc(MIB);
        for (long i = 0; i < MIB; i += 4096) p[i] = 1;
        sink = p;
    }
}
/* 32 MiB in 128 blocks of 256 KiB (mmapped by malloc), filled by libc's memset */
NOINLINE void leak_memset(void) {
    for (int b = 0; b < 128; b++) {
        char *p = malloc(256 * 1024);
        memset(p, 1, 256 * 1024);
        sink = p;
    }
}
/* 4 MiB written once and kept: bounded */
NOINLINE void bounded(void) {
    char *p = malloc(4 * MIB);
    memset(p, 2, 4 * MIB);
    sink = p;
}
/* 200 x (1 MiB written, freed): at most ~1 MiB resident at a time */
NOINLINE void churn_pages(void) {
    for (int r = 0; r < 200; r++) {
        char *p = malloc(MIB);
        for (long i = 0; i < MIB; i += 4096) p[i] = 3;
        free(p);
    }
}

/* 3 mappings of 64 KiB, the program's own, made one frame below the malloc calls */
NOINLINE void map_own(void) {
    sink = mmap(NULL, 64 * 1024, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
}
NOINLINE void leaf_maps(void) {
    for (int i = 0; i < 3; i++) {
        void *volatile p = malloc(300 * 1024);
        free(p);
        map_own();
    }
}

int main(int argc, char **argv) {
    const char *s = argc > 1 ? argv[1] : "sample";
    if (!strcmp(s, "sample")) {
        leak_small();
        leak_pages();
        leak_huge();
        churn_sampled();
        churn_small();
        realloc_walk();
    } else if (!strcmp(s, "growth")) {
        leak_touch();
        leak_memset();
        bounded();
        churn_pages();
    } else if (!strcmp(s, "leafmaps")) {
        leaf_maps();
    } else {
        fprintf(stderr, "unknown scenario %s\n", s);
        return 2;
    }
    return 0;
}

/* Ground-truth workload: allocates known bytes from known noinline functions.
 * Usage: groundtruth <scenario>, scenario one of: kinds threads fork attach scaled N grow.
 * Every pointer is stored in a volatile sink so the compiler cannot elide malloc/free pairs.
 * The figures the tests assert are written next to each function. */
#define _GNU_SOURCE
#include <malloc.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#define NOINLINE __attribute__((noinline))
static void *volatile sink[4096];
static int nsink;
static void keep(void *p) { sink[nsink++ % 4096] = p; }

/* 10 x 1000 = 10000 bytes, 10 blocks */
NOINLINE void leak_malloc(void) { for (int i = 0; i < 10; i++) keep(malloc(1000)); }
/* 5 x calloc(10, 100) = 5000 bytes, 5 blocks */
NOINLINE void leak_calloc(void) { for (int i = 0; i < 5; i++) keep(calloc(10, 100)); }
/* realloc growth chain 1000 -> 2000 -> 3000 -> 4000: 4000 bytes, 1 block, 4 allocs */
NOINLINE void leak_realloc(void) {
    void *p = NULL;
    for (int i = 1; i <= 4; i++) p = realloc(p, (size_t)i * 1000);
    keep(p);
}
/* reallocarray(NULL, 10, 30) = 300 bytes, 1 block */
NOINLINE void leak_reallocarray(void) { keep(reallocarray(NULL, 10, 30)); }
/* 3 x posix_memalign(64, 512) = 1536 bytes, 3 blocks */
NOINLINE void leak_posix_memalign(void) {
    for (int i = 0; i < 3; i++) { void *p; if (posix_memalign(&p, 64, 512) == 0) keep(p); }
}
/* 2 x aligned_alloc(64, 256) = 512 bytes */
NOINLINE void leak_aligned_alloc(void) { for (int i = 0; i < 2; i++) keep(aligned_alloc(64, 256)); }
/* 2 x memalign(32, 300) = 600 bytes */
NOINLINE void leak_memalign(void) { for (int i = 0; i < 2; i++) keep(memalign(32, 300)); }
/* valloc(100) + pvalloc(200): 100 and 200 requested bytes */
NOINLINE void leak_valloc(void) { keep(valloc(100)); }
NOINLINE void leak_pvalloc(void) { keep(pvalloc(200)); }
/* 1000 x (malloc 64, free): 0 outstanding, 1000 allocs, 1000 frees */
NOINLINE void churn(void) {
    for (int i = 0; i < 1000; i++) { void *volatile p = malloc(64); free(p); }
}
/* 100 x 128, every other freed: 6400 bytes, 50 blocks */
NOINLINE void free_half(void) {
    void *blocks[100];
    for (int i = 0; i < 100; i++) blocks[i] = malloc(128);
    for (int i = 0; i < 100; i += 2) free(blocks[i]);
    for (int i = 1; i < 100; i += 2) keep(blocks[i]);
}
/* 3 x malloc(1<<60) and 1 overflowing calloc: 4 failed, 0 outstanding */
NOINLINE void fail_alloc(void) {
    for (int i = 0; i < 3; i++) keep(malloc((size_t)1 << 60));
    keep(calloc((size_t)1 << 40, (size_t)1 << 40));
}
/* 2 x 1 MiB, served by mmap inside malloc: 2097152 bytes, 2 blocks (not counted twice) */
NOINLINE void leak_large(void) { for (int i = 0; i < 2; i++) keep(malloc(1 << 20)); }
/* direct mmap of 4 pages, middle page unmapped: 12288 bytes, 1 allocation */
NOINLINE void map_pages(void) {
    char *p = mmap(NULL, 4 * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) abort();
    munmap(p + 4096, 4096);
    keep(p);
}

static void kinds(void) {
    leak_malloc(); leak_calloc(); leak_realloc(); leak_reallocarray(); leak_posix_memalign();
    leak_aligned_alloc(); leak_memalign(); leak_valloc(); leak_pvalloc(); churn(); free_half();
    fail_alloc(); leak_large(); map_pages();
}

/* threads: 4 threads x 10 x 2000 = 80000 bytes, 40 blocks in thread_leak;
 * cross-thread frees: 20 x 500 allocated in xthread_alloc, all freed by another thread. */
NOINLINE void thread_leak(void) { for (int i = 0; i < 10; i++) keep(malloc(2000)); }
static void *thread_main(void *arg) { (void)arg; thread_leak(); return NULL; }
static void *xblocks[20];
NOINLINE void xthread_alloc(void) { for (int i = 0; i < 20; i++) xblocks[i] = malloc(500); }
static void *xthread_free(void *arg) { (void)arg; for (int i = 0; i < 20; i++) free(xblocks[i]); return NULL; }
static void threads(void) {
    pthread_t t[4];
    for (int i = 0; i < 4; i++) pthread_create(&t[i], NULL, thread_main, NULL);
    for (int i = 0; i < 4; i++) pthread_join(t[i], NULL);
    xthread_alloc();
    pthread_t f;
    pthread_create(&f, NULL, xthread_free, NULL);
    pthread_join(f, NULL);
}

/* fork: parent leaks 1000 in parent_leak; child k (k = 1, 2) leaks k x 3000 in child_leak. */
NOINLINE void parent_leak(void) { keep(malloc(1000)); }
NOINLINE void child_leak(int k) { for (int i = 0; i < k; i++) keep(malloc(3000)); }
static void forks(void) {
    parent_leak();
    for (int k = 1; k <= 2; k++) {
        pid_t pid = fork();
        if (pid == 0) { child_leak(k); _exit(0); }
        waitpid(pid, NULL, 0);
    }
}

/* attach: 100 x 64 in before_attach, "ready", wait for a line on stdin, free all of them
 * (100 unknown frees), leak 5 x 4000 in after_attach, exit 0. */
static void *early[100];
NOINLINE void before_attach(void) { for (int i = 0; i < 100; i++) early[i] = malloc(64); }
NOINLINE void after_attach(void) { for (int i = 0; i < 5; i++) keep(malloc(4000)); }
static void attach(void) {
    before_attach();
    printf("ready %d\n", getpid());
    fflush(stdout);
    char line[16];
    if (!fgets(line, sizeof line, stdin)) return;
    for (int i = 0; i < 100; i++) free(early[i]);
    after_attach();
}

/* scaled N: N x 1000 bytes in scaled_leak (diff tests run it with N and 2N). */
NOINLINE void scaled_leak(int n) { for (int i = 0; i < n; i++) keep(malloc(1000)); }

/* grow: 1 MiB per 10 ms, touched, never freed, until the OOM killer ends it (or 4 GiB). */
NOINLINE void grow_forever(void) {
    for (int i = 0; i < 4096; i++) {
        char *p = malloc(1 << 20);
        if (!p) break;
        memset(p, i, 1 << 20);
        keep(p);
        usleep(10000);
    }
}

int main(int argc, char **argv) {
    const char *s = argc > 1 ? argv[1] : "kinds";
    if (!strcmp(s, "kinds")) kinds();
    else if (!strcmp(s, "threads")) threads();
    else if (!strcmp(s, "fork")) forks();
    else if (!strcmp(s, "attach")) attach();
    else if (!strcmp(s, "scaled")) scaled_leak(argc > 2 ? atoi(argv[2]) : 10);
    else if (!strcmp(s, "grow")) grow_forever();
    else { fprintf(stderr, "unknown scenario %s\n", s); return 2; }
    /* Linger 200 ms: oomtrace reads a process's memory map (for symbols) while it lives, and a
     * process that exits within a millisecond of its first allocation can beat it on a loaded
     * machine (a documented limitation). The figures are exact either way. */
    usleep(200000);
    return 0;
}

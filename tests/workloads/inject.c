// Failure-injection ground truth: nine allocator calls from named sites, in a fixed order, each
// printed with its result (ok, or NULL and errno) so a test can compare what `--fail-*` named
// with what the program saw. Output goes through write(2): stdio would allocate a buffer.
//
// call 1-3: site_one    malloc(100)
// call 4-5: site_two    calloc(10, 20)
// call 6:   site_three  malloc(5000), reached through outer_path
// call 7:   site_align  posix_memalign(64, 256)
// call 8:   site_base   malloc(64), filled with 0xab
// call 9:   site_grow   realloc(block of call 8, 4096): on failure the old block must be intact
// Blocks are held to the end (so --fail-after sees them outstanding), then freed.
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int calls;

static void say(const char *site, const char *fn, size_t size, const void *p, int err) {
    char line[160];
    int n;
    calls++;
    if (p)
        n = snprintf(line, sizeof line, "call %d %s %s %zu ok\n", calls, site, fn, size);
    else
        n = snprintf(line, sizeof line, "call %d %s %s %zu NULL errno=%d\n", calls, site, fn,
                     size, err);
    write(1, line, (size_t)n);
}

__attribute__((noinline)) void *site_one(void) {
    errno = 0;
    void *p = malloc(100);
    say("site_one", "malloc", 100, p, errno);
    return p;
}

__attribute__((noinline)) void *site_two(void) {
    errno = 0;
    void *p = calloc(10, 20);
    say("site_two", "calloc", 200, p, errno);
    return p;
}

__attribute__((noinline)) void *site_three(void) {
    errno = 0;
    void *p = malloc(5000);
    say("site_three", "malloc", 5000, p, errno);
    return p;
}

__attribute__((noinline)) void *outer_path(void) {
    void *p = site_three();
    asm volatile("" ::: "memory");
    return p;
}

__attribute__((noinline)) void *site_align(void) {
    void *p = (void *)0x1;
    int ret = posix_memalign(&p, 64, 256);
    char line[96];
    calls++;
    int n = snprintf(line, sizeof line, "call %d site_align posix_memalign 256 ret=%d %s\n", calls,
                     ret, ret == 0 ? "ok" : (p == (void *)0x1 ? "untouched" : "written"));
    write(1, line, (size_t)n);
    return ret == 0 ? p : NULL;
}

__attribute__((noinline)) unsigned char *site_base(void) {
    errno = 0;
    unsigned char *p = malloc(64);
    say("site_base", "malloc", 64, p, errno);
    if (p)
        memset(p, 0xab, 64);
    return p;
}

__attribute__((noinline)) unsigned char *site_grow(unsigned char *old) {
    errno = 0;
    unsigned char *p = realloc(old, 4096);
    say("site_grow", "realloc", 4096, p, errno);
    if (!p && old) {
        int intact = 1;
        for (int i = 0; i < 64; i++)
            intact &= old[i] == 0xab;
        const char *w = intact ? "old block intact\n" : "old block damaged\n";
        write(1, w, strlen(w));
        return old;
    }
    return p;
}

int main(void) {
    void *held[8];
    for (int i = 0; i < 3; i++)
        held[i] = site_one();
    held[3] = site_two();
    held[4] = site_two();
    held[5] = outer_path();
    held[6] = site_align();
    unsigned char *b = site_base();
    b = site_grow(b);
    for (int i = 0; i < 7; i++)
        free(held[i]);
    free(b);
    return 0;
}

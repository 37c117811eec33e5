/* A program whose malloc is not libc's: built twice from this file.
 *   -DOWN_MALLOC_LIB -shared -fPIC  -> libownmalloc.so, a bump allocator exporting malloc, free,
 *                                      calloc and realloc (free never reuses memory)
 *   default                         -> the program, linked against libownmalloc.so before libc,
 *                                      so the dynamic linker binds malloc to the library (as
 *                                      Debian's redis-server gets jemalloc's)
 * Ground truth: leak_own() leaks 10 x 1000 bytes; churn_own() allocates and frees 5 x 300. */
#include <stddef.h>
#include <string.h>

#ifdef OWN_MALLOC_LIB
static char arena[64 << 20] __attribute__((aligned(16)));
static size_t used;

/* Each block: its requested size in the 16 bytes before it. */
void *malloc(size_t n) {
    size_t sz = ((n + 15) & ~(size_t)15) + 16;
    size_t off = __atomic_fetch_add(&used, sz, __ATOMIC_RELAXED);
    if (n > sizeof arena || off + sz > sizeof arena) return NULL;
    *(size_t *)(arena + off) = n;
    return arena + off + 16;
}

void free(void *p) { (void)p; }

void *calloc(size_t a, size_t b) {
    if (b && a > (size_t)-1 / b) return NULL;
    return malloc(a * b); /* the arena starts zeroed and is never reused */
}

void *realloc(void *p, size_t n) {
    void *q = malloc(n);
    if (q && p) {
        size_t old = *(size_t *)((char *)p - 16);
        memcpy(q, p, old < n ? old : n);
    }
    return q;
}
#else
#include <stdlib.h>

static void *volatile sink;

__attribute__((noinline)) void leak_own(void) {
    for (int i = 0; i < 10; i++) sink = malloc(1000);
}

__attribute__((noinline)) void churn_own(void) {
    for (int i = 0; i < 5; i++) {
        void *p = malloc(300);
        sink = p;
        free(p);
    }
}

int main(void) {
    leak_own();
    churn_own();
    return 0;
}
#endif

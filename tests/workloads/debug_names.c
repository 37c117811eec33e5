/* Allocations from known functions, for naming a stripped build by its debug file
 * (tests/tests/it/offline.rs): main -> make_table: 3 x 4096 B, main -> fill_cache: 2 x 1000 B,
 * all held at exit. Each allocation's line is marked for the test to find. */
#include <stdlib.h>

static void *volatile held[8];

#define KEEP(p) __asm__ volatile("" : : "r"(p) : "memory")
#define NOINLINE __attribute__((noinline))

NOINLINE void *make_table(size_t n) {
    void *p = malloc(n); /* site: make_table */
    KEEP(p);
    return p;
}

NOINLINE void *fill_cache(size_t n) {
    void *p = malloc(n); /* site: fill_cache */
    KEEP(p);
    return p;
}

int main(void) {
    for (int i = 0; i < 3; i++) held[i] = make_table(4096);
    for (int i = 0; i < 2; i++) held[3 + i] = fill_cache(1000);
    return 0;
}

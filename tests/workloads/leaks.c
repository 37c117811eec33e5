/* Leak kinds with known figures (issue 19), as valgrind's memcheck classifies them at exit.
 *
 *   leaks kinds    all four kinds, through the malloc family:
 *                  definitely lost  lose_blocks: 3 x 100 (malloc, calloc, realloc'd)   300 B, 3
 *                                   lose_list's head: 48                               48 B, 1
 *                  indirectly lost  lose_list's 4 nodes x 48 (head lost)              192 B, 4
 *                  possibly lost    hold_interior: 64 (a pointer to its middle only),
 *                                   and the 24 it points to                            88 B, 2
 *                  still reachable  table: 8 pointers (64 B) to 8 x 32 (posix_memalign) 320 B, 9
 *   leaks list     lose_list only
 *   leaks none     everything freed
 *   leaks cache    cache_fill: 4 x 1000 lost in a "static cache" (for suppressions), and
 *                  lose_blocks
 *
 * No stdio: its buffers would be freed by valgrind's __libc_freeres and held by the program
 * here. The stack is scrubbed before main returns, so no stale pointer survives in it. */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define NOINLINE __attribute__((noinline))

struct node {
    struct node *next;
    char payload[40];
};

static void *volatile table_ref;
static char *volatile interior_ref;
static volatile uintptr_t sink;

NOINLINE void lose_blocks(void) {
    char *a = malloc(100);
    char *b = calloc(10, 10);
    char *c = realloc(malloc(50), 100);
    memset(a, 1, 100);
    sink = (uintptr_t)a ^ (uintptr_t)b ^ (uintptr_t)c;
}

NOINLINE void lose_list(void) {
    struct node *head = NULL;
    for (int i = 0; i < 5; i++) {
        struct node *n = malloc(sizeof *n);
        memset(n->payload, 0x11, sizeof n->payload);
        n->next = head;
        head = n;
    }
    sink = (uintptr_t)head ^ 0x5a5a;
}

NOINLINE void hold_interior(void) {
    char *p = malloc(64);
    memset(p, 0x55, 64);
    void *child = malloc(24);
    memset(child, 0x66, 24);
    memcpy(p, &child, sizeof child);
    interior_ref = p + 32;
}

NOINLINE void fill_table(void) {
    void **t = malloc(8 * sizeof(void *));
    for (int i = 0; i < 8; i++) {
        if (posix_memalign(&t[i], 64, 32) != 0)
            abort();
        memset(t[i], 0x22, 32);
    }
    table_ref = t;
}

NOINLINE void cache_fill(void) {
    for (int i = 0; i < 4; i++) {
        char *p = malloc(1000);
        memset(p, 0x33, 1000);
        sink ^= (uintptr_t)p;
    }
}

NOINLINE void free_all(void) {
    for (int i = 0; i < 10; i++)
        free(malloc(100 + i));
}

/* Overwrites the dead stack below main's frame, where the pointers above once lived. */
NOINLINE void scrub(void) {
    char buf[16384];
    explicit_bzero(buf, sizeof buf);
    __asm__ volatile("" : : "r"(buf) : "memory");
}

int main(int argc, char **argv) {
    const char *what = argc > 1 ? argv[1] : "kinds";
    if (!strcmp(what, "kinds")) {
        lose_blocks();
        lose_list();
        hold_interior();
        fill_table();
    } else if (!strcmp(what, "list")) {
        lose_list();
    } else if (!strcmp(what, "cache")) {
        cache_fill();
        lose_blocks();
    } else {
        free_all();
    }
    sink = 0;
    scrub();
    return 0;
}

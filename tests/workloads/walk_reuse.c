/* Walks reused: the kernel side keeps a thread's last walk and reuses its stack when every
 * stack word that walk read is unchanged. Here the same place allocates under callers that
 * differ only deep in the stack, alternating, so a reuse that checked too little would put
 * bytes on the wrong chain. Built -O2 -fomit-frame-pointer; each chain's bytes are known:
 *   main -> via_x -> mid -> leaf: 500 x 48 bytes, held
 *   main -> via_y -> mid -> leaf: 500 x 80 bytes, held
 *   main -> churn -> leaf: 20000 x 32 bytes, each freed at once (nothing held)
 *   main -> pair: 10000 x (24 bytes, then 40 bytes from the next line), each freed at once
 * via_x and via_y keep the same frame, so leaf's stack pointer and return address are the
 * same both ways: only mid's return address tells them apart. pair's two calls share their
 * stack pointer and frame: only their call sites tell them apart, and both are reused. */
#include <stdlib.h>

#define ROUNDS 500
#define CHURN 20000
#define PAIRS 10000

static void *volatile held[2 * ROUNDS];
static volatile long xs, ys;

/* Each level does work after its call, so the call is never a tail jump. */
#define KEEP(p) __asm__ volatile("" : : "r"(p) : "memory")

__attribute__((noinline)) void *leaf(size_t n) { void *p = malloc(n); KEEP(p); return p; }
__attribute__((noinline)) void *mid(size_t n) { void *p = leaf(n); KEEP(p); return p; }
/* Different bodies (a different counter each), so the compiler cannot fold them into one. */
__attribute__((noinline)) void *via_x(size_t n) { void *p = mid(n); KEEP(p); xs++; return p; }
__attribute__((noinline)) void *via_y(size_t n) { void *p = mid(n); KEEP(p); ys++; return p; }

__attribute__((noinline)) void churn(void) {
    for (int i = 0; i < CHURN; i++) {
        void *p = leaf(32);
        free(p);
    }
}

static void *volatile pair_a, *volatile pair_b;

__attribute__((noinline)) void pair(void) {
    for (int i = 0; i < PAIRS; i++) {
        pair_a = malloc(24);
        pair_b = malloc(40);
        free(pair_a);
        free(pair_b);
    }
}

int main(void) {
    for (int i = 0; i < ROUNDS; i++) {
        held[2 * i] = via_x(48);
        held[2 * i + 1] = via_y(80);
    }
    churn();
    pair();
    return 0;
}

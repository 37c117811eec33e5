// `oomtrace sweep` ground truth: a checked site (exits 1 with a message when its allocation
// fails), an unchecked one (writes through NULL: SIGSEGV), and a two-step transaction that leaks
// step one's 256 bytes when step two fails. Without a failure everything is freed. Messages go
// to stderr (unbuffered: no stdio allocation).
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

__attribute__((noinline)) char *checked_site(void) {
    char *p = malloc(32);
    if (!p) {
        fprintf(stderr, "checked: out of memory\n");
        exit(1);
    }
    return p;
}

__attribute__((noinline)) char *unchecked_site(void) {
    char *p = malloc(48);
    *(volatile char *)p = 1;
    return p;
}

__attribute__((noinline)) char *txn_step_one(void) { return malloc(256); }

__attribute__((noinline)) char *txn_step_two(void) { return malloc(512); }

struct txn {
    char *one, *two;
};

// The bug under test: when step two fails, step one's block is dropped, not freed.
__attribute__((noinline)) int transaction(struct txn *t) {
    char *one = txn_step_one();
    if (!one) {
        fprintf(stderr, "txn: step one failed\n");
        return -1;
    }
    memset(one, 1, 256);
    char *two = txn_step_two();
    if (!two) {
        fprintf(stderr, "txn: step two failed\n");
        return -1;
    }
    t->one = one;
    t->two = two;
    return 0;
}

// Overwrites the dead stack below main so no stale pointer keeps a lost block reachable.
__attribute__((noinline)) void scrub(void) {
    volatile char buf[8192];
    memset((char *)buf, 0, sizeof buf);
}

int main(void) {
    char *a = checked_site();
    struct txn t = {0, 0};
    int ok = transaction(&t) == 0;
    scrub();
    char *b = unchecked_site();
    free(a);
    free(b);
    if (ok) {
        free(t.one);
        free(t.two);
    }
    return 0;
}

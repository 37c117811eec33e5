/* A program that loads an allocator library after it started: dlopen("libmimalloc.so.2"),
 * then (after DELAY_MS) keeps 4 x 3000 bytes from leak_mi() through mi_malloc and frees
 * 2 x 500 from churn_mi() through mi_malloc/mi_free. Its own malloc is glibc's throughout. */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#define DELAY_MS 400

static void *(*mi_malloc)(size_t);
static void (*mi_free)(void *);
static void *volatile sink[16];

__attribute__((noinline)) static void leak_mi(void) {
    for (int i = 0; i < 4; i++) sink[i] = mi_malloc(3000);
}

__attribute__((noinline)) static void churn_mi(void) {
    for (int i = 0; i < 2; i++) {
        void *p = mi_malloc(500);
        sink[8] = p;
        mi_free(p);
    }
}

int main(void) {
    void *h = dlopen("libmimalloc.so.2", RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        fprintf(stderr, "dlopen: %s\n", dlerror());
        return 2;
    }
    mi_malloc = (void *(*)(size_t))dlsym(h, "mi_malloc");
    mi_free = (void (*)(void *))dlsym(h, "mi_free");
    if (!mi_malloc || !mi_free) return 3;
    usleep(DELAY_MS * 1000);
    leak_mi();
    churn_mi();
    return 0;
}

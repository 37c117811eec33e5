/* Stacks without frame pointers (built -O2 -fomit-frame-pointer): every allocation's chain is
 * known, and each is still held at exit.
 *   main -> chain1 -> chain2 -> chain3 -> chain4 -> chain5 -> chain6: 7 x 1111 bytes (malloc)
 *   main -> dup_name: strdup of a 37-character string, 38 bytes (malloc inside glibc)
 *   main -> open_status: fopen, glibc's FILE (malloc inside glibc)
 *   main -> use_plugin -> plugin_make -> plugin_inner (in argv[1], dlopen'd): 3 x 2222 bytes
 * With an argument, the plugin is loaded first and used after a pause (the tracer sees its
 * mapping); "-" skips it. */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void *volatile held[16];

/* Each level does work after its call, so the call is never a tail jump. */
#define KEEP(p) __asm__ volatile("" : : "r"(p) : "memory")

__attribute__((noinline)) void *chain6(size_t n) { void *p = malloc(n); KEEP(p); return p; }
__attribute__((noinline)) void *chain5(size_t n) { void *p = chain6(n); KEEP(p); return p; }
__attribute__((noinline)) void *chain4(size_t n) { void *p = chain5(n); KEEP(p); return p; }
__attribute__((noinline)) void *chain3(size_t n) { void *p = chain4(n); KEEP(p); return p; }
__attribute__((noinline)) void *chain2(size_t n) { void *p = chain3(n); KEEP(p); return p; }
__attribute__((noinline)) void *chain1(size_t n) { void *p = chain2(n); KEEP(p); return p; }

__attribute__((noinline)) char *dup_name(void) {
    char *p = strdup("a name of thirty-seven characters....");
    KEEP(p);
    return p;
}

__attribute__((noinline)) FILE *open_status(void) {
    FILE *f = fopen("/proc/self/status", "r");
    KEEP(f);
    return f;
}

__attribute__((noinline)) void *use_plugin(void *(*make)(size_t), size_t n) {
    void *p = make(n);
    KEEP(p);
    return p;
}

int main(int argc, char **argv) {
    void *(*make)(size_t) = 0;
    if (argc > 1 && strcmp(argv[1], "-") != 0) {
        void *h = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
        if (!h) {
            fprintf(stderr, "dlopen: %s\n", dlerror());
            return 2;
        }
        make = (void *(*)(size_t))dlsym(h, "plugin_make");
        if (!make) return 3;
        usleep(300 * 1000);
    }
    for (int i = 0; i < 7; i++) held[i] = chain1(1111);
    held[7] = dup_name();
    held[8] = open_status();
    if (make)
        for (int i = 0; i < 3; i++) held[9 + i] = use_plugin(make, 2222);
    return 0;
}

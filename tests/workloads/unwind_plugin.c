/* The library unwind_chain.c loads with dlopen (built -O2 -fomit-frame-pointer -shared). */
#include <stdlib.h>

#define KEEP(p) __asm__ volatile("" : : "r"(p) : "memory")

__attribute__((noinline)) void *plugin_inner(size_t n) { void *p = malloc(n); KEEP(p); return p; }
__attribute__((noinline)) void *plugin_make(size_t n) { void *p = plugin_inner(n); KEEP(p); return p; }

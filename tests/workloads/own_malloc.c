/* A program with its own malloc family (a bump allocator in the executable, which the dynamic
 * linker prefers to libc's): oomtrace probes this file, and nothing else on the machine does.
 * Usage: own_malloc OUT — writes the first 32 code bytes of its malloc and free to OUT as hex,
 * so a test can tell whether uprobes (int3 breakpoints) were written into them. */
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>

static char *arena, *next, *end;

void *malloc(size_t n) {
    if (!arena) {
        arena = mmap(NULL, 64 << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (arena == MAP_FAILED) return NULL;
        next = arena;
        end = arena + (64 << 20);
    }
    n = (n + 15) & ~(size_t)15;
    if ((size_t)(end - next) < n) return NULL;
    void *p = next;
    next += n;
    return p;
}
void free(void *p) { (void)p; }
void *calloc(size_t a, size_t b) {
    if (b && a > SIZE_MAX / b) return NULL;
    void *p = malloc(a * b);
    if (p) memset(p, 0, a * b);
    return p;
}
void *realloc(void *p, size_t n) {
    void *q = malloc(n);
    if (q && p) memcpy(q, p, n);
    return q;
}

static void dump(FILE *f, const char *name, const void *fn) {
    const unsigned char *b = fn;
    fprintf(f, "%s", name);
    for (int i = 0; i < 32; i++) fprintf(f, " %02x", b[i]);
    fprintf(f, "\n");
}

int main(int argc, char **argv) {
    void *volatile p = malloc(100);
    free(p);
    FILE *f = fopen(argc > 1 ? argv[1] : "/dev/stdout", "w");
    if (!f) return 1;
    dump(f, "malloc", (const void *)malloc);
    dump(f, "free", (const void *)free);
    return fclose(f) != 0;
}

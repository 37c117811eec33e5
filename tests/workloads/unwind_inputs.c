/* Inputs the unwinder must survive (tests/tests/it/unwind_inputs.rs), built -O2
 * -fomit-frame-pointer; each allocation is still held at exit.
 *   unwind_inputs lib PATH      dlopen PATH (a build of unwind_plugin.c), then
 *                               main -> use_lib -> plugin_make -> plugin_inner: 3 x 2222 B
 *   unwind_inputs deleted PATH  the same from a copy of PATH deleted once it is mapped (and
 *                               the process alive 300 ms after)
 *   unwind_inputs signal        a timer's SIGALRM interrupts spin_here (main -> wait_signal ->
 *                               spin_here); its handler on_signal allocates 333 B
 *   unwind_inputs jit           code written into anonymous executable memory calls back:
 *                               main -> run_jit -> [framed stub] -> jit_framed_alloc: 4444 B,
 *                               the stub keeping a frame pointer as JITs that want profilers
 *                               do; main -> run_jit -> [bare stub] -> jit_bare_alloc: 5555 B,
 *                               the stub using rbp for itself (zeroed), as others do.
 *   unwind_inputs jit-late      a first allocation (64 B from main), 300 ms, then the framed
 *                               stub mapped and called at once (4444 B) and the process gone:
 *                               its code is mapped after the tracer last read the maps.
 * Each library is given 300 ms to be seen by the tracer before it is used. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/time.h>
#include <unistd.h>

static void *volatile held[16];

#define KEEP(p) __asm__ volatile("" : : "r"(p) : "memory")
#define NOINLINE __attribute__((noinline))

NOINLINE void *use_lib(void *(*make)(size_t), size_t n) {
    void *p = make(n);
    KEEP(p);
    return p;
}

/* Loads `path` (deleting it from disk first when `unlink_after`), waits for the tracer to see
 * the mapping, and allocates through it. */
static int use_plugin_at(const char *path, int unlink_after) {
    void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (unlink_after) unlink(path);
    if (!h) {
        fprintf(stderr, "dlopen: %s\n", dlerror());
        return 2;
    }
    void *(*make)(size_t) = (void *(*)(size_t))dlsym(h, "plugin_make");
    if (!make) return 3;
    usleep(300 * 1000);
    for (int i = 0; i < 3; i++) held[i] = use_lib(make, 2222);
    return 0;
}

static int run_lib(const char *path) { return use_plugin_at(path, 0); }

/* Copies `path` to a file of its own, maps it, and deletes it before using it. */
static int run_deleted(const char *path) {
    char copy[64];
    snprintf(copy, sizeof copy, "/tmp/oomtrace-deleted-%d.so", (int)getpid());
    int in = open(path, O_RDONLY), out = open(copy, O_WRONLY | O_CREAT | O_TRUNC, 0755);
    if (in < 0 || out < 0) return 4;
    char buf[65536];
    ssize_t n;
    while ((n = read(in, buf, sizeof buf)) > 0)
        if (write(out, buf, n) != n) return 4;
    close(in);
    close(out);
    int rc = use_plugin_at(copy, 1);
    if (rc != 0) return rc;
    /* Alive a moment longer, as a program holding a deleted library would be: its frames are
     * named from the mapping while it exists (the file is gone from disk). */
    usleep(300 * 1000);
    return 0;
}

static volatile sig_atomic_t fired;

NOINLINE void on_signal(int sig) {
    held[0] = malloc(333);
    KEEP(held[0]);
    fired = 1;
}

/* Interrupted by the timer: the signal frame's pc lies here. */
NOINLINE void spin_here(void) {
    while (!fired)
        __asm__ volatile("" ::: "memory");
}

NOINLINE void wait_signal(void) {
    spin_here();
    __asm__ volatile("" ::: "memory");
}

static int run_signal(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGALRM, &sa, NULL);
    struct itimerval t = {.it_value = {.tv_usec = 20000}};
    setitimer(ITIMER_REAL, &t, NULL);
    wait_signal();
    return 0;
}

NOINLINE void *jit_framed_alloc(size_t n) {
    void *p = malloc(n);
    KEEP(p);
    return p;
}

NOINLINE void *jit_bare_alloc(size_t n) {
    void *p = malloc(n);
    KEEP(p);
    return p;
}

/* push rbp; (mov rbp, rsp | xor ebp, ebp; nop); movabs rax, target; call rax; pop rbp; ret */
static void *jit_stub(unsigned char *at, int framed, void *(*target)(size_t)) {
    unsigned char *c = at;
    *c++ = 0x55;
    if (framed) {
        *c++ = 0x48, *c++ = 0x89, *c++ = 0xe5;
    } else {
        *c++ = 0x31, *c++ = 0xed, *c++ = 0x90;
    }
    *c++ = 0x48, *c++ = 0xb8;
    memcpy(c, &target, 8);
    c += 8;
    *c++ = 0xff, *c++ = 0xd0;
    *c++ = 0x5d;
    *c++ = 0xc3;
    return at;
}

NOINLINE void *run_jit(void *stub, size_t n) {
    void *p = ((void *(*)(size_t))stub)(n);
    KEEP(p);
    return p;
}

static int run_jit_code(void) {
    unsigned char *code = mmap(NULL, 4096, PROT_READ | PROT_WRITE | PROT_EXEC,
                               MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (code == MAP_FAILED) return 5;
    void *framed = jit_stub(code, 1, jit_framed_alloc);
    void *bare = jit_stub(code + 64, 0, jit_bare_alloc);
    usleep(300 * 1000);
    held[0] = run_jit(framed, 4444);
    held[1] = run_jit(bare, 5555);
    return 0;
}

static int run_jit_late(void) {
    held[2] = malloc(64);
    KEEP(held[2]);
    usleep(300 * 1000);
    unsigned char *code = mmap(NULL, 4096, PROT_READ | PROT_WRITE | PROT_EXEC,
                               MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (code == MAP_FAILED) return 5;
    held[0] = run_jit(jit_stub(code, 1, jit_framed_alloc), 4444);
    return 0;
}

int main(int argc, char **argv) {
    const char *what = argc > 1 ? argv[1] : "";
    if (!strcmp(what, "lib") && argc > 2) return run_lib(argv[2]);
    if (!strcmp(what, "deleted") && argc > 2) return run_deleted(argv[2]);
    if (!strcmp(what, "signal")) return run_signal();
    if (!strcmp(what, "jit")) return run_jit_code();
    if (!strcmp(what, "jit-late")) return run_jit_late();
    fputs("usage: unwind_inputs lib|deleted PATH | signal | jit | jit-late\n", stderr);
    return 1;
}

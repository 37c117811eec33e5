/* Ground truth for the hazards oomtrace reports (issue 20): each mode does one wrong thing from a
 * named function and says what it did on stderr (stdout is the tracer's report).
 *
 *   hazards handler   an allocation in a SIGALRM handler (77 B, in on_alarm), one in a SIGUSR1
 *                     handler that siglongjmps out (88 B, in on_usr1), then one after the jump
 *                     (99 B, in after_jump): two hazards, not three.
 *   hazards double    a block (55 B, from make_block) freed twice (in free_once, then free_again).
 *   hazards cross     a block from mimalloc (48 B, from from_mimalloc, the library dlopen'd and
 *                     given time to be probed) freed with glibc's free (in free_with_libc).
 *   hazards crash     a NULL dereference in crash_here after a 64 B allocation.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define NOINLINE __attribute__((noinline))

static sigjmp_buf jump_back;
static void *volatile keep;

NOINLINE void on_alarm(int sig) { keep = malloc(77); }
NOINLINE void on_usr1(int sig) {
    keep = malloc(88);
    siglongjmp(jump_back, 1);
}
NOINLINE void after_jump(void) {
    void *p = malloc(99);
    free(p);
}

static void handler(void) {
    signal(SIGALRM, on_alarm);
    signal(SIGUSR1, on_usr1);
    raise(SIGALRM);
    if (sigsetjmp(jump_back, 1) == 0)
        raise(SIGUSR1);
    after_jump();
    fputs("handler done\n", stderr);
}

NOINLINE void *make_block(void) { return malloc(55); }
NOINLINE void free_once(void *p) { free(p); }
NOINLINE void free_again(void *p) { free(p); }

static void twice(void) {
    void *p = make_block();
    free_once(p);
    fputs("freeing again\n", stderr);
    free_again(p);
}

NOINLINE void *from_mimalloc(void *(*mi)(size_t)) { return mi(48); }
NOINLINE void free_with_libc(void *p) { free(p); }

static int cross(void) {
    void *h = dlopen("libmimalloc.so.2", RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        fputs("no mimalloc\n", stderr);
        return 2;
    }
    void *(*mi)(size_t) = (void *(*)(size_t))dlsym(h, "mi_malloc");
    /* A library loaded at run time is probed once oomtrace has seen its mapping. */
    usleep(500000);
    void *p = from_mimalloc(mi);
    fputs("freeing with libc\n", stderr);
    free_with_libc(p);
    return 0;
}

NOINLINE void crash_here(void) {
    keep = malloc(64);
    volatile int *nowhere = NULL;
    *nowhere = 1;
}

int main(int argc, char **argv) {
    const char *what = argc > 1 ? argv[1] : "handler";
    if (!strcmp(what, "handler"))
        handler();
    else if (!strcmp(what, "double"))
        twice();
    else if (!strcmp(what, "cross"))
        return cross();
    else if (!strcmp(what, "crash"))
        crash_here();
    return 0;
}

/* A target that maps what once made oomtrace eat the machine (issue 22), then allocates known
 * bytes. Built twice from this file:
 *   -DMAPLIB -shared -fPIC -> libmaplib.so: maplib_alloc() leaks 3 x 7000 bytes
 *   default                -> the program, one of:
 *     mapped maps DIR [LIB]     maps /dev/zero shared (1 GiB, as PostgreSQL's shared memory), a
 *                               4 GiB sparse file DIR/sparse (readable and executable), a memfd of
 *                               data (executable), and a deleted file DIR/deleted (created, mapped,
 *                               unlinked); with LIB, loads that library and deletes it
 *     mapped swap LIB MARKER    loads LIB, then replaces LIB by a symlink to MARKER
 *   then mapped_alloc(), and maplib_alloc() when a library is loaded. With "wait" last, it
 *   first prints "ready PID" and waits for a line on stdin, and afterwards prints "done" and waits
 *   for a line (or EOF) before exiting.
 * Ground truth: mapped_alloc() leaks 5 x 100000 bytes; maplib_alloc() leaks 3 x 7000 bytes. */
#define _GNU_SOURCE
#include <stdlib.h>

#ifdef MAPLIB
static void *volatile lib_sink[3];

__attribute__((noinline)) void maplib_alloc(void) {
    for (int i = 0; i < 3; i++) lib_sink[i] = malloc(7000);
}
#else
#include <dlfcn.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static void *volatile sink[5];

__attribute__((noinline)) void mapped_alloc(void) {
    for (int i = 0; i < 5; i++) sink[i] = malloc(100000);
}

static void die(const char *what) {
    perror(what);
    exit(2);
}

static void *map_file(const char *path, size_t len, int prot, int flags, int open_flags) {
    int fd = open(path, open_flags, 0600);
    if (fd < 0) die(path);
    void *p = mmap(NULL, len, prot, flags, fd, 0);
    if (p == MAP_FAILED) die(path);
    close(fd);
    return p;
}

static void map_everything(const char *dir) {
    char path[4096];
    /* PostgreSQL's shared memory: /dev/zero (deleted) in the maps. One page touched. */
    char *shm = map_file("/dev/zero", 1UL << 30, PROT_READ | PROT_WRITE, MAP_SHARED, O_RDWR);
    shm[0] = 1;
    /* A 4 GiB sparse file, executable so that every reader of code mappings meets it. */
    snprintf(path, sizeof path, "%s/sparse", dir);
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
    if (fd < 0 || ftruncate(fd, 4UL << 30) != 0) die(path);
    if (mmap(NULL, 4UL << 30, PROT_READ | PROT_EXEC, MAP_SHARED, fd, 0) == MAP_FAILED) die("sparse");
    close(fd);
    /* A memfd of data, executable. */
    fd = memfd_create("oomtrace-data", 0);
    if (fd < 0 || write(fd, "not code, just data\n", 20) != 20) die("memfd");
    if (mmap(NULL, 4096, PROT_READ | PROT_EXEC, MAP_PRIVATE, fd, 0) == MAP_FAILED) die("memfd");
    close(fd);
    /* A deleted data file. */
    snprintf(path, sizeof path, "%s/deleted", dir);
    fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
    static char block[1 << 16];
    memset(block, 'x', sizeof block);
    for (int i = 0; i < 16; i++)
        if (fd < 0 || write(fd, block, sizeof block) != sizeof block) die(path);
    if (mmap(NULL, 1 << 20, PROT_READ, MAP_PRIVATE, fd, 0) == MAP_FAILED) die("deleted");
    close(fd);
    if (unlink(path) != 0) die(path);
}

static void (*load(const char *lib))(void) {
    void *h = dlopen(lib, RTLD_NOW);
    if (!h) {
        fprintf(stderr, "%s\n", dlerror());
        exit(2);
    }
    void (*f)(void) = (void (*)(void))dlsym(h, "maplib_alloc");
    if (!f) die("dlsym");
    return f;
}

static void wait_line(void) {
    char line[64];
    if (!fgets(line, sizeof line, stdin)) return;
}

int main(int argc, char **argv) {
    int wait = argc > 1 && strcmp(argv[argc - 1], "wait") == 0;
    if (wait) argc--;
    void (*lib_alloc)(void) = NULL;
    if (argc >= 3 && strcmp(argv[1], "maps") == 0) {
        map_everything(argv[2]);
        if (argc >= 4) {
            lib_alloc = load(argv[3]);
            if (unlink(argv[3]) != 0) die(argv[3]);
        }
    } else if (argc == 4 && strcmp(argv[1], "swap") == 0) {
        lib_alloc = load(argv[2]);
        if (unlink(argv[2]) != 0 || symlink(argv[3], argv[2]) != 0) die("swap");
    } else {
        fprintf(stderr, "usage: mapped maps DIR [LIB] [wait] | mapped swap LIB MARKER [wait]\n");
        return 2;
    }
    if (wait) {
        printf("ready %d\n", getpid());
        fflush(stdout);
        wait_line();
    }
    mapped_alloc();
    if (lib_alloc) lib_alloc();
    if (wait) {
        printf("done\n");
        fflush(stdout);
        wait_line();
    }
    return 0;
}
#endif

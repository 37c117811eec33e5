/* Holds a known amount of NVIDIA GPU memory, for checking oomtrace's NVML source.
 *
 * libcuda is opened at run time, so this builds anywhere (no CUDA headers or toolkit needed);
 * without libcuda it exits with status 77.
 *
 *   cuda_alloc MIB            create a context, print "ready", then for each line on stdin
 *                             ("alloc") allocate MIB MiB more and print "allocated"; EOF exits
 *   cuda_alloc MIB auto MS    create a context, wait MS ms, allocate MIB MiB, wait MS ms, exit
 */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef int (*cu_init_t)(unsigned);
typedef int (*cu_device_get_t)(int *, int);
typedef int (*cu_ctx_create_t)(void **, unsigned, int);
typedef int (*cu_mem_alloc_t)(unsigned long long *, size_t);

static cu_mem_alloc_t mem_alloc;

static void sleep_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static void gpu_alloc(size_t bytes) {
    unsigned long long ptr = 0;
    int rc = mem_alloc(&ptr, bytes);
    if (rc != 0) {
        fprintf(stderr, "cuMemAlloc(%zu) failed: %d\n", bytes, rc);
        exit(1);
    }
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: cuda_alloc MIB [auto MS]\n");
        return 2;
    }
    size_t bytes = strtoull(argv[1], NULL, 10) << 20;
    void *cuda = dlopen("libcuda.so.1", RTLD_NOW);
    if (!cuda) {
        fprintf(stderr, "no libcuda.so.1: %s\n", dlerror());
        return 77;
    }
    cu_init_t init = (cu_init_t)dlsym(cuda, "cuInit");
    cu_device_get_t device_get = (cu_device_get_t)dlsym(cuda, "cuDeviceGet");
    cu_ctx_create_t ctx_create = (cu_ctx_create_t)dlsym(cuda, "cuCtxCreate_v2");
    mem_alloc = (cu_mem_alloc_t)dlsym(cuda, "cuMemAlloc_v2");
    if (!init || !device_get || !ctx_create || !mem_alloc) {
        fprintf(stderr, "libcuda.so.1 lacks a symbol\n");
        return 1;
    }
    int dev = 0;
    void *ctx = NULL;
    int rc = init(0);
    if (rc == 0) rc = device_get(&dev, 0);
    if (rc == 0) rc = ctx_create(&ctx, 0, dev);
    if (rc != 0) {
        fprintf(stderr, "no CUDA context: error %d\n", rc);
        return 77;
    }
    if (argc >= 4 && strcmp(argv[2], "auto") == 0) {
        long ms = atol(argv[3]);
        sleep_ms(ms);
        gpu_alloc(bytes);
        sleep_ms(ms);
        return 0;
    }
    printf("ready\n");
    fflush(stdout);
    char line[64];
    while (fgets(line, sizeof line, stdin)) {
        gpu_alloc(bytes);
        printf("allocated\n");
        fflush(stdout);
    }
    return 0;
}

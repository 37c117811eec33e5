/* oomtrace's demo workload: a toy request handler with one leak among honest allocations.
 *  - handle_request: a 16 KiB scratch buffer per request, freed at once (churn, no leak);
 *  - warm_cache:     a 256-entry cache of 1 KiB entries, filled once and kept (bounded);
 *  - remember_session: 4 KiB per request that nobody ever frees (the leak).
 * 2000 requests, 1 ms apart (about 2 s: long enough for the leak to be told growing and the
 * cache bounded): remember_session ends up holding 8000 KiB in 2000 blocks. */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define NOINLINE __attribute__((noinline))
static void *volatile sink;
static void *cache[256];
static void **sessions;

NOINLINE void warm_cache(int slot) {
    if (!cache[slot]) { cache[slot] = malloc(1024); memset(cache[slot], 0, 1024); }
}

NOINLINE void remember_session(int i) {
    sessions[i] = malloc(4096);
    memset(sessions[i], i, 4096);
}

NOINLINE void handle_request(int i) {
    char *scratch = malloc(16384);
    memset(scratch, i, 16384);
    sink = scratch;
    warm_cache(i % 256);
    remember_session(i);
    free(scratch);
}

int main(void) {
    sessions = calloc(2000, sizeof *sessions);
    struct timespec pause = {0, 1000000};
    for (int i = 0; i < 2000; i++) {
        handle_request(i);
        nanosleep(&pause, NULL);
    }
    return 0;
}

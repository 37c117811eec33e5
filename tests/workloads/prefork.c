/* A pre-forked server, like PostgreSQL or nginx: the parent forks its workers first, and only
 * then does anyone attach. Ground truth for `--pid`'s process tree.
 *
 *   prefork WORKERS GO_FILE
 *
 * Prints "ready PID" once every worker runs. The parent and the workers wait for GO_FILE to
 * exist. Then:
 *   - each worker keeps WORKER_BLOCKS blocks of WORKER_BYTES from worker_leak(), then runs
 *     CHURN malloc/free pairs (timed: its elapsed ns go to GO_FILE.<pid>.ns) and exits;
 *   - the parent forks one more child, which waits LATE_DELAY_MS, keeps LATE_BLOCKS blocks of
 *     LATE_BYTES from late_leak(), runs CHURN timed pairs (into GO_FILE.late.ns) and exits;
 *   - the parent keeps PARENT_BLOCKS blocks of PARENT_BYTES from parent_leak(), reaps everyone
 *     and exits. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define WORKER_BLOCKS 50
#define WORKER_BYTES 3000
#define LATE_BLOCKS 20
#define LATE_BYTES 7000
#define LATE_DELAY_MS 300
#define PARENT_BLOCKS 10
#define PARENT_BYTES 5000
#define CHURN 1000000

static void *volatile sink;

static long long now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (long long)t.tv_sec * 1000000000LL + t.tv_nsec;
}

static void wait_for(const char *path) {
    struct stat st;
    while (stat(path, &st) != 0) usleep(1000);
}

__attribute__((noinline)) static void worker_leak(void) {
    for (int i = 0; i < WORKER_BLOCKS; i++) sink = malloc(WORKER_BYTES);
}

__attribute__((noinline)) static void late_leak(void) {
    for (int i = 0; i < LATE_BLOCKS; i++) sink = malloc(LATE_BYTES);
}

__attribute__((noinline)) static void parent_leak(void) {
    for (int i = 0; i < PARENT_BLOCKS; i++) sink = malloc(PARENT_BYTES);
}

__attribute__((noinline)) static void churn(void) {
    for (long i = 0; i < CHURN; i++) {
        void *p = malloc(64);
        sink = p;
        free(p);
    }
}

/* Runs the churn and writes its elapsed ns to GO_FILE.<what>.ns. */
static void timed_churn(const char *go, const char *what) {
    long long t0 = now_ns();
    churn();
    long long t1 = now_ns();
    char path[4096];
    snprintf(path, sizeof path, "%s.%s.ns", go, what);
    FILE *f = fopen(path, "w");
    if (f) {
        fprintf(f, "%lld\n", t1 - t0);
        fclose(f);
    }
}

static void worker(const char *go) {
    wait_for(go);
    worker_leak();
    char what[32];
    snprintf(what, sizeof what, "%d", (int)getpid());
    timed_churn(go, what);
    /* Outlive the parent's snapshot of the tree by a little. */
    usleep(200 * 1000);
    _exit(0);
}

int main(int argc, char **argv) {
    int workers = argc > 1 ? atoi(argv[1]) : 3;
    const char *go = argc > 2 ? argv[2] : "/tmp/prefork.go";
    for (int i = 0; i < workers; i++) {
        pid_t p = fork();
        if (p == 0) worker(go);
    }
    printf("ready %d\n", (int)getpid());
    fflush(stdout);
    wait_for(go);
    pid_t late = fork();
    if (late == 0) {
        usleep(LATE_DELAY_MS * 1000);
        late_leak();
        timed_churn(go, "late");
        usleep(100 * 1000);
        _exit(0);
    }
    parent_leak();
    while (wait(NULL) > 0) {
    }
    /* Stay a moment, so a tracer sees every child's exit before the parent's. */
    usleep(300 * 1000);
    return 0;
}

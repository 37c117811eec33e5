// `oomtrace sweep --timeout` ground truth: when its one allocation fails, it waits forever.
#include <stdlib.h>
#include <unistd.h>

__attribute__((noinline)) void *hang_site(void) { return malloc(77); }

int main(void) {
    void *p = hang_site();
    while (!p)
        pause();
    free(p);
    return 0;
}

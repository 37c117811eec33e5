/* A process gone in a millisecond whose very first allocation is the one that counts: ground
 * truth for following short children of `run` from their first instruction.
 *
 *   firstalloc     keeps 3 blocks of 4242 bytes from first_leak(), then exits at once. */
#include <stdlib.h>
#include <unistd.h>

static void *volatile sink;

__attribute__((noinline)) static void first_leak(void) {
    for (int i = 0; i < 3; i++) sink = malloc(4242);
}

int main(void) {
    first_leak();
    _exit(0);
}

/* A statically linked program: no dynamic libc malloc for oomtrace to probe. */
#include <stdlib.h>
int main(void) { return malloc(10) == NULL; }

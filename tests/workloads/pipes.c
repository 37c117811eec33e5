/* Ground truth for `--kernel`: kernel memory that no malloc sees.
 *
 * pipes N K [HOLD_MS]: opens N pipes, writes exactly K whole pages (4096-byte writes) into each
 * and never reads them, so the kernel holds N*K pages allocated under anon_pipe_write; holds
 * them HOLD_MS ms (default 300), then closes every pipe (the pages are freed) and exits 0.
 *
 * It prints nothing: a write to a captured stdout would be one more pipe page. The write buffer
 * is touched before the first write, so no user page fault happens under anon_pipe_write. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define PAGE 4096
#define MAX_PIPES 256

static char page[PAGE];

int main(int argc, char **argv)
{
	if (argc < 3)
		return 2;
	int n = atoi(argv[1]);
	int k = atoi(argv[2]);
	int hold_ms = argc > 3 ? atoi(argv[3]) : 300;
	if (n <= 0 || n > MAX_PIPES || k <= 0)
		return 2;
	memset(page, 'x', sizeof page);
	static int fds[MAX_PIPES][2];
	for (int i = 0; i < n; i++) {
		if (pipe(fds[i]) != 0)
			return 3;
		/* Room for K pages (the default pipe holds 16). */
		if (k > 16 && fcntl(fds[i][1], F_SETPIPE_SZ, k * PAGE) < k * PAGE)
			return 4;
	}
	for (int i = 0; i < n; i++)
		for (int j = 0; j < k; j++)
			if (write(fds[i][1], page, PAGE) != PAGE)
				return 5;
	struct timespec ts = { hold_ms / 1000, (long)(hold_ms % 1000) * 1000000L };
	while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
	}
	for (int i = 0; i < n; i++) {
		close(fds[i][0]);
		close(fds[i][1]);
	}
	return 0;
}

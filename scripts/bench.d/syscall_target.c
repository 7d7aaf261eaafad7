/* scripts/bench syscall: ns per getppid() (or getuid() with argv[2] =
 * "getuid") over N calls (argv[1]), the best of 11 rounds (the machine is
 * shared: the best round is the one least disturbed). "getuid-sud": getuid
 * with Syscall User Dispatch turned on by the program itself, its selector
 * at ALLOW, so that nothing traps: what the kernel alone charges every
 * syscall of a thread with dispatch on (its entry's slow path). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/prctl.h>

static double now(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec * 1e9 + t.tv_nsec;
}

static int cmp(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
	long n = argc > 1 ? atol(argv[1]) : 100000;
	int sud = argc > 2 && !strcmp(argv[2], "getuid-sud");
	int uid = sud || (argc > 2 && !strcmp(argv[2], "getuid"));
	double r[11];
	static volatile char selector;   /* 0: SYSCALL_DISPATCH_FILTER_ALLOW */

	/* PR_SET_SYSCALL_USER_DISPATCH, PR_SYS_DISPATCH_ON; the allowed region is
	 * one byte of this program's code (any will do: the selector lets all
	 * syscalls through) */
	if (sud && prctl(59, 1, (unsigned long)main, 1, &selector)) {
		perror("prctl(PR_SET_SYSCALL_USER_DISPATCH)");
		return 1;
	}

	for (int k = 0; k < 11; k++) {
		double t0 = now();
		for (long i = 0; i < n; i++)
			if (uid)
				getuid();
			else
				getppid();
		r[k] = (now() - t0) / n;
	}
	qsort(r, 11, sizeof(r[0]), cmp);
	printf("ns_per_syscall %.1f\n", r[0]);
	return 0;
}

/* uprobe_target FUNC N: calls FUNC (f_push, f_endbr) N times and its
 * unprobed twin (r_push, r_endbr) N times, best of 3 each; prints
 * "base_ns B probed_ns P" per call. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

long f_push(long, long), r_push(long, long), f_endbr(long, long), r_endbr(long, long);

static double now(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec * 1e9 + (double)t.tv_nsec;
}

static double loop(long (*volatile f)(long, long), long n)
{
	double best = 1e18;
	for (int rep = 0; rep < 3; rep++) {
		long acc = 0;
		double t0 = now();
		for (long i = 0; i < n; i++)
			acc += f(i, 1);
		double t = (now() - t0) / (double)n;
		if (acc == 42)
			puts("");
		if (t < best)
			best = t;
	}
	return best;
}

int main(int argc, char **argv)
{
	if (argc != 3)
		return 2;
	long n = atol(argv[2]);
	int push = !strcmp(argv[1], "f_push");
	double base = loop(push ? r_push : r_endbr, n);
	double probed = loop(push ? f_push : f_endbr, n);
	printf("base_ns %.2f probed_ns %.2f calls %ld\n", base, probed, 3 * n);
	return 0;
}

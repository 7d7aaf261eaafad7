/* ns per call of a hooked function (agent/hook) against the same function
 * unhooked, for a push-rbp prologue and an endbr64 prologue.
 * Built by agent/hook/tests/Makefile (needs its asm_targets.S).
 * Output lines: "<prologue> <variant> <ns/call>". */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include "hook.h"
#include "start.h"

long a_push(long, long), a_endbr(long, long), a_xorcmp(long, long);

static void empty(struct hook_pt_regs *regs, void *d) { }

static double now(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static double run(long (*volatile f)(long, long), long n)
{
	double best = 1e9;
	for (int rep = 0; rep < 5; rep++) {
		long acc = 0;
		double t0 = now();
		for (long i = 0; i < n; i++)
			acc += f(i, 1);
		double t = (now() - t0) / (double)n * 1e9;
		if (acc == 42)
			puts("");
		if (t < best)
			best = t;
	}
	return best;
}

int main(int argc, char **argv)
{
	long n = argc > 1 ? atol(argv[1]) : 5000000;
	struct { const char *name; long (*f)(long, long); } fns[] = { { "push_rbp", a_push }, { "endbr64", a_endbr } };

	/* what the library's start-up sequence (agent/start/start.h) runs first */
	tasks_init();
	hook_keys();
	for (unsigned k = 0; k < 2; k++) {
		struct hook *h, *h2;
		double base = run(fns[k].f, n);
		hook_attach((void *)fns[k].f, empty, NULL, NULL, &h);
		double entry = run(fns[k].f, n);
		hook_attach((void *)fns[k].f, NULL, empty, NULL, &h2);
		double both = run(fns[k].f, n);
		hook_detach(h);
		hook_detach(h2);
		printf("%s unhooked %.2f\n", fns[k].name, base);
		printf("%s entry %.2f\n", fns[k].name, entry);
		printf("%s entry+return %.2f\n", fns[k].name, both);
		printf("%s entry_overhead %.2f\n", fns[k].name, entry - base);
	}
	/* the int3 fallback (SIGTRAP round trip), forced on an xor prologue */
	struct hook *h;
	double base = run(a_xorcmp, n / 20);
	setenv("BPFSHIM_HOOK_INT3", "1", 1);
	hook_attach((void *)a_xorcmp, empty, NULL, NULL, &h);
	unsetenv("BPFSHIM_HOOK_INT3");
	double entry = run(a_xorcmp, n / 20);
	hook_detach(h);
	printf("int3 unhooked %.2f\n", base);
	printf("int3 entry %.2f\n", entry);
	/* attach + detach latency, no other thread */
	double t0 = now();
	for (int i = 0; i < 100; i++) {
		hook_attach((void *)a_push, empty, NULL, NULL, &h);
		hook_detach(h);
	}
	printf("attach+detach_us %.1f\n", (now() - t0) / 100 * 1e6);
	return 0;
}

/* Target of the uprobe tests (test_libbpf_uprobe.py, test_uprobe_robustness.py).
 *
 *   uprobe_target seq N            probed_fn(0..N-1) on the main thread
 *   uprobe_target threads T MS     T threads call probed_fn for MS milliseconds
 *                                  (MS = 0: until SIGTERM/SIGINT)
 *
 * At start it prints the address of probed_fn (so a test can read its entry
 * bytes in /proc/PID/mem); at exit the number of calls it made itself, which
 * a probe's count must equal. */
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

volatile long sink;

__attribute__((noinline)) long probed_fn(long x)
{
	sink += x;
	return x * 3 - 7;
}

/* An entry with no symbol size, as hand-written assembly often has. */
__asm__(".text\n.globl nosize_fn\n.type nosize_fn, @function\nnosize_fn:\n"
	"push %rbp\nmov %rsp, %rbp\npop %rbp\nret\n");
void nosize_fn(void);

static atomic_int stop;
static atomic_ulong total;

static void on_signal(int sig)
{
	(void)sig;
	atomic_store(&stop, 1);
}

static void *worker(void *arg)
{
	unsigned long n = 0;
	long t = (long)arg;

	while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
		sink += probed_fn(t + (long)(n & 7));
		n++;
	}
	atomic_fetch_add(&total, n);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc >= 3 && !strcmp(argv[1], "seq")) {
		long n = atol(argv[2]), sum = 0;
		for (long i = 0; i < n; i++) {
			sum += probed_fn(i);
			nosize_fn();
		}
		printf("target: calls %ld sum %ld\n", n, sum);
		return 0;
	}
	if (argc >= 4 && !strcmp(argv[1], "threads")) {
		int nt = atoi(argv[2]);
		long ms = atol(argv[3]);
		pthread_t th[64];
		struct sigaction sa;

		if (nt < 1 || nt > 64)
			return 2;
		memset(&sa, 0, sizeof(sa));
		sa.sa_handler = on_signal;
		sigaction(SIGTERM, &sa, 0);
		sigaction(SIGINT, &sa, 0);
		printf("target: pid %d fn %p\n", (int)getpid(), (void *)probed_fn);
		fflush(stdout);
		for (long t = 0; t < nt; t++)
			if (pthread_create(&th[t], 0, worker, (void *)(t * 100)))
				return 3;
		if (ms > 0) {
			struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
			while (nanosleep(&ts, &ts) && !atomic_load(&stop))
				;
			atomic_store(&stop, 1);
		}
		for (int t = 0; t < nt; t++)
			pthread_join(th[t], 0);
		printf("target: calls %lu\n", atomic_load(&total));
		return 0;
	}
	fprintf(stderr, "usage: %s seq N | threads T MS\n", argv[0]);
	return 2;
}

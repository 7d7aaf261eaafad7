/* A process started without bpfshim, for `bpfshim attach PID`
 * (compat_tests/test_attach_pid.py, scripts/bench.d/uprobe). A thread
 * timestamps a tight loop and keeps the largest gap: how long the process
 * was stopped. Commands on stdin, one reply line each:
 *   go N   call work(0..N-1)            -> "done"
 *   gap    the largest gap since the last "gap", us -> "gap_us G"
 *   quit   exit 0 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

volatile long sink;
static volatile long max_gap_ns;
static volatile int stop;

__attribute__((noinline)) int work(int x) { sink += x; return x * 2 + 1; }

static long now_ns(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec * 1000000000L + t.tv_nsec;
}

static void *watch(void *arg)
{
	long prev = now_ns();
	(void)arg;
	while (!stop) {
		long t = now_ns();
		if (t - prev > max_gap_ns)
			max_gap_ns = t - prev;
		prev = t;
	}
	return NULL;
}

int main(void)
{
	char line[64];
	pthread_t th;

	setvbuf(stdout, NULL, _IOLBF, 0);
	pthread_create(&th, NULL, watch, NULL);
	printf("ready\n");
	while (fgets(line, sizeof(line), stdin)) {
		if (!strncmp(line, "go ", 3)) {
			int n = atoi(line + 3);
			for (int i = 0; i < n; i++)
				sink += work(i);
			printf("done\n");
		} else if (!strncmp(line, "gap", 3)) {
			printf("gap_us %ld\n", max_gap_ns / 1000);
			max_gap_ns = 0;
		} else if (!strncmp(line, "quit", 4)) {
			break;
		}
	}
	stop = 1;
	pthread_join(th, NULL);
	return 0;
}

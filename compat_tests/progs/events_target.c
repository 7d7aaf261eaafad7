/* Target of the event-loss tests (test_events.py) and `scripts/bench events`.
 *
 *   events_target THREADS TOTAL BASE [flush]
 *
 * THREADS threads, started together, call ev(BASE + thread, i) TOTAL times
 * in all, as fast as they can. With "flush", once they are done and the consumer has
 * had time to drain, one more call on each CPU this process may run on: on
 * the kernel, drops are reported (PERF_RECORD_LOST) only in front of the
 * next record that fits, so without a later record on that CPU's ring the
 * last drops are never counted. With EVENTS_PAUSE_US set, each thread
 * sleeps that long after each call (the consumer sleeps between records).
 * With EVENTS_SYNC_FDS=GO,READY it writes a byte to READY and waits for one
 * on GO before the calls (the loader's -first modes).
 * Prints "produced N": the calls made. */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

volatile long sink;

__attribute__((noinline)) void ev(long t, long i)
{
	sink += t + i;
}

static long per, extra, base, pause_us;
static pthread_barrier_t go;

static void *run(void *arg)
{
	long t = (long)arg, n = per + (t == 0 ? extra : 0);

	pthread_barrier_wait(&go);
	for (long i = 0; i < n; i++) {
		ev(base + t, i);
		if (pause_us)
			usleep((useconds_t)pause_us);
	}
	return NULL;
}

int main(int argc, char **argv)
{
	if (argc < 4) {
		fprintf(stderr, "usage: events_target THREADS TOTAL BASE [flush]\n");
		return 2;
	}
	int nt = atoi(argv[1]);
	long total = atol(argv[2]), produced = total;
	pthread_t th[256];

	if (nt < 1 || nt > 256)
		return 2;
	base = atol(argv[3]);
	pause_us = getenv("EVENTS_PAUSE_US") ? atol(getenv("EVENTS_PAUSE_US")) : 0;
	per = total / nt;
	extra = total % nt;
	if (getenv("EVENTS_SYNC_FDS")) {   /* the loader's -first modes */
		int go_fd, ready_fd;
		char b = 0;
		if (sscanf(getenv("EVENTS_SYNC_FDS"), "%d,%d", &go_fd, &ready_fd) != 2 ||
		    write(ready_fd, &b, 1) != 1 || read(go_fd, &b, 1) != 1)
			return 2;
	}
	pthread_barrier_init(&go, NULL, (unsigned)nt);
	for (long t = 0; t < nt; t++)
		pthread_create(&th[t], NULL, run, (void *)t);
	for (int t = 0; t < nt; t++)
		pthread_join(th[t], NULL);
	if (argc > 4 && !strcmp(argv[4], "flush")) {
		cpu_set_t all, one;
		usleep(500000);
		sched_getaffinity(0, sizeof(all), &all);
		for (int c = 0; c < CPU_SETSIZE; c++) {
			if (!CPU_ISSET(c, &all))
				continue;
			CPU_ZERO(&one);
			CPU_SET(c, &one);
			if (sched_setaffinity(0, sizeof(one), &one) == 0 && sched_getcpu() == c) {
				ev(-1, base * CPU_SETSIZE + c);   /* unique over all targets */
				produced++;
			}
		}
		usleep(100000);
	}
	printf("produced %ld\n", produced);
	return 0;
}

/* SPDX-License-Identifier: MIT */
/*
 * bpf_rt_once (agent/rawsys.h) across fork: a child forked while another
 * thread of its parent is inside the once function runs it itself instead
 * of waiting for a thread it does not have (a traced program's first run in
 * a fork child hung so, every thread of the child stuck). Also: the
 * parent's runner still finishes, and later callers do not run it again.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <sys/wait.h>
#include "rawsys.h"

static int state, runs;
static volatile int inside, release;

static void slow_fn(void)
{
	__atomic_add_fetch(&runs, 1, __ATOMIC_SEQ_CST);
	inside = 1;
	while (!release)
		usleep(1000);
}

static void *runner(void *unused)
{
	(void)unused;
	bpf_rt_once(&state, slow_fn);
	return NULL;
}

int main(void)
{
	pthread_t t;

	pthread_create(&t, NULL, runner, NULL);
	while (!inside)
		usleep(1000);
	pid_t c = fork();
	if (c == 0) {
		release = 1;          /* the child's own run of slow_fn returns at once */
		alarm(10);
		bpf_rt_once(&state, slow_fn);
		bpf_rt_once(&state, slow_fn);
		_exit(runs == 2 && state == -1 ? 0 : 3);   /* the parent's start, its own */
	}
	int st;
	if (waitpid(c, &st, 0) != c || !WIFEXITED(st) || WEXITSTATUS(st)) {
		printf("FAIL child: status %#x (stuck: killed by the alarm)\n", st);
		return 1;
	}
	release = 1;
	pthread_join(t, NULL);
	bpf_rt_once(&state, slow_fn);
	if (runs != 1 || state != -1) {
		printf("FAIL parent: %d runs, state %d\n", runs, state);
		return 1;
	}
	printf("ok once across fork\n");
	return 0;
}

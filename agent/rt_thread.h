/* SPDX-License-Identifier: MIT */
/*
 * Every thread the library creates (rt_thread.c): the attach-table follower,
 * perf timers, trace-pipe pumps. They are started and stopped here so that a
 * credential change can stop all of them first (rt_threads_pause()).
 */
#ifndef BPFSHIM_RT_THREAD_H
#define BPFSHIM_RT_THREAD_H

#include <pthread.h>
#include <stdint.h>
#include <time.h>

enum {
	RT_THREAD_DONE,      /* fn ended by itself: not started again */
	RT_THREAD_STOPPED,   /* fn returned because rt_thread_stopping(): resume starts it again */
};

struct rt_thread {
	/* Filled by the owner. fn returns RT_THREAD_STOPPED soon after
	 * rt_thread_stopping() becomes true, and must be able to run again from
	 * its saved state; its waits are rt_thread_wait()/rt_thread_sleep_until(),
	 * or wake() interrupts them. */
	int (*fn)(struct rt_thread *);
	void (*wake)(struct rt_thread *);
	size_t stack_size;       /* 0: the default */
	int free_when_done;      /* the registry free()s the struct (its first member) after DONE */
	/* private */
	uint32_t stop;
	int state;
	int done;
	pthread_t tid;
	struct rt_thread *next;
};

/* Start t (at once, or when the running pause ends); 0 or an errno. */
int rt_thread_start(struct rt_thread *t);
/* Stop t for good and wait until it has ended. */
void rt_thread_stop(struct rt_thread *t);
static inline int rt_thread_stopping(struct rt_thread *t)
{
	return __atomic_load_n(&t->stop, __ATOMIC_ACQUIRE) != 0;
}
/* Sleep at most ms, or until asked to stop. */
void rt_thread_wait(struct rt_thread *t, int ms);
/* Sleep until CLOCK_MONOTONIC reaches *abs, or until asked to stop. */
void rt_thread_sleep_until(struct rt_thread *t, const struct timespec *abs);

/* 1 on a thread of the registry (the runtime's own, not the application's). */
int rt_thread_self(void);

/* Around a credential change: every library thread has been joined when
 * pause returns, and none starts before resume. Nested pairs are allowed. */
void rt_threads_pause(void);
void rt_threads_resume(void);

#endif

/* SPDX-License-Identifier: MIT */
/*
 * The registry of the library's threads (rt_thread.h).
 *
 * glibc applies set*id()/setgroups() to every thread of the process (the
 * SIGSETXID broadcast) and aborts when the threads' results differ. A thread
 * of ours can fail where the caller succeeds: capabilities, keep-caps and
 * securebits are per thread (setpriv sets PR_SET_KEEPCAPS and raises its
 * capabilities again on its own thread only, so a thread of ours that went
 * through its setresuid has none left for the setresgid that follows). A
 * thread that is still between its function's return and its exit answers
 * the broadcast as well. So the interposed set*id calls stop every library
 * thread and join it (the kernel has cleared its tid, glibc has taken it off
 * its list of threads), make the change with none of ours alive, and start
 * them again; a new thread copies the caller's credentials.
 */
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <unistd.h>
#include <sys/syscall.h>
#include <linux/futex.h>
#include "rt_thread.h"
#include "rt.h"
#include "start.h"

enum { IDLE, RUNNING, WANTED };

/* Recursive: a set*id wrapper may call another (pause nests). */
static pthread_mutex_t lock = PTHREAD_RECURSIVE_MUTEX_INITIALIZER_NP;
static struct rt_thread *threads;
static int paused;
/* The process the registry describes: the child of a vfork (or posix_spawn)
 * shares its memory and runs no fork handlers; it has no thread of ours,
 * and must not stop or start its parent's. */
static pid_t owner;

static int in_vfork_child(void)
{
	return syscall(SYS_getpid) != owner;
}

static __thread int on_rt_thread;

int rt_thread_self(void)
{
	return on_rt_thread;
}

static void *trampoline(void *arg)
{
	struct rt_thread *t = arg;
	int r;

	on_rt_thread = 1;
	r = t->fn(t);

	__atomic_store_n(&t->done, r == RT_THREAD_DONE ? 1 : 2, __ATOMIC_RELEASE);
	return NULL;
}

static int create(struct rt_thread *t)
{
	pthread_attr_t a;
	sigset_t all, old;
	int was = in_probe;

	t->stop = 0;
	t->done = 0;
	in_probe = 2;     /* the clone is the runtime's, not the application's */
	pthread_attr_init(&a);
	if (t->stack_size)
		pthread_attr_setstacksize(&a, t->stack_size);
	/* the thread takes no signals meant for the application */
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, &old);
	int err = pthread_create(&t->tid, &a, trampoline, t);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	pthread_attr_destroy(&a);
	in_probe = was;
	t->state = err ? IDLE : RUNNING;
	return err;
}

static void unlink_thread(struct rt_thread *t)
{
	for (struct rt_thread **p = &threads; *p; p = &(*p)->next)
		if (*p == t) {
			*p = t->next;
			break;
		}
	t->next = NULL;
}

static void ask_stop(struct rt_thread *t)
{
	__atomic_store_n(&t->stop, 1, __ATOMIC_RELEASE);
	syscall(SYS_futex, &t->stop, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0);
	if (t->wake)
		t->wake(t);
}

/* Join t, which was asked to stop or ended by itself; 1 if it ended for good.
 * A wake-up that came just before the thread went to sleep on a word of its
 * own (the follower on the table's generation) is lost: ask again every 5 ms. */
static int join(struct rt_thread *t)
{
	struct timespec until;

	clock_gettime(CLOCK_MONOTONIC, &until);
	for (;;) {
		until.tv_nsec += 5 * 1000 * 1000;
		if (until.tv_nsec >= 1000000000L) {
			until.tv_sec++;
			until.tv_nsec -= 1000000000L;
		}
		if (pthread_clockjoin_np(t->tid, NULL, CLOCK_MONOTONIC, &until) != ETIMEDOUT)
			break;
		if (rt_thread_stopping(t))
			ask_stop(t);
	}
	t->state = IDLE;
	return __atomic_load_n(&t->done, __ATOMIC_ACQUIRE) == 1;
}

static void drop(struct rt_thread *t)
{
	unlink_thread(t);
	if (t->free_when_done)
		free(t);
}

/* Threads whose function ended by itself are joined (and freed) here. */
static void reap(void)
{
	struct rt_thread *t = threads, *next;

	for (; t; t = next) {
		next = t->next;
		if (t->state == RUNNING && __atomic_load_n(&t->done, __ATOMIC_ACQUIRE) == 1 && join(t))
			drop(t);
	}
}

int rt_thread_start(struct rt_thread *t)
{
	int err = 0;

	pthread_mutex_lock(&lock);
	reap();
	if (t->state == IDLE) {
		/* listed exactly while not IDLE */
		t->next = threads;
		threads = t;
		if (paused)
			t->state = WANTED;
		else if ((err = create(t)))
			unlink_thread(t);
	}
	pthread_mutex_unlock(&lock);
	return err;
}

void rt_thread_stop(struct rt_thread *t)
{
	pthread_mutex_lock(&lock);
	if (t->state == RUNNING) {
		ask_stop(t);
		join(t);
	}
	t->state = IDLE;
	unlink_thread(t);
	pthread_mutex_unlock(&lock);
}

void rt_thread_wait(struct rt_thread *t, int ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };

	syscall(SYS_futex, &t->stop, FUTEX_WAIT_PRIVATE, 0, &ts, NULL, 0);
}

void rt_thread_sleep_until(struct rt_thread *t, const struct timespec *abs)
{
	/* FUTEX_WAIT_BITSET takes an absolute CLOCK_MONOTONIC time */
	while (!rt_thread_stopping(t) &&
	       syscall(SYS_futex, &t->stop, FUTEX_WAIT_BITSET | FUTEX_PRIVATE_FLAG, 0, abs, NULL,
		       FUTEX_BITSET_MATCH_ANY) < 0 && errno == EINTR)
		;
}

/* The lock is held from pause to resume: no thread of ours starts meanwhile. */
void rt_threads_pause(void)
{
	if (in_vfork_child())
		return;
	pthread_mutex_lock(&lock);
	if (paused++)
		return;
	struct rt_thread *t, *next;
	for (t = threads; t; t = t->next)
		if (t->state == RUNNING)
			ask_stop(t);
	for (t = threads; t; t = next) {
		next = t->next;
		if (t->state != RUNNING)
			continue;
		if (join(t))
			drop(t);
		else
			t->state = WANTED;
	}
}

void rt_threads_resume(void)
{
	if (in_vfork_child())
		return;
	if (!--paused)
		for (struct rt_thread *t = threads, *next; t; t = next) {
			next = t->next;
			if (t->state == WANTED && create(t))
				unlink_thread(t);
		}
	pthread_mutex_unlock(&lock);
}

/* A fork child has none of the parent's threads; their owners start again
 * what the child needs (their fork handlers run after this one). */
static void prepare(void)
{
	pthread_mutex_lock(&lock);
}

static void parent(void)
{
	pthread_mutex_unlock(&lock);
}

static void child(void)
{
	pthread_mutex_t fresh = PTHREAD_RECURSIVE_MUTEX_INITIALIZER_NP;

	lock = fresh;
	paused = 0;
	owner = (pid_t)syscall(SYS_getpid);
	for (struct rt_thread *t = threads, *next; t; t = next) {
		next = t->next;
		t->state = IDLE;
		t->next = NULL;
		if (t->free_when_done)
			free(t);
	}
	threads = NULL;
}

void rt_thread_init(void)
{
	owner = (pid_t)syscall(SYS_getpid);
	pthread_atfork(prepare, parent, child);
}

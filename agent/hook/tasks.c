/* SPDX-License-Identifier: MIT */
/*
 * The threads of this process, for the code that must reach each of them
 * (the hook engine before it rewrites a site, syscall dispatch arming new
 * threads). Their list is /proc/self/task; the directory is opened once, at
 * start and in a fork child (before either lets the application run), kept
 * above the application's fd numbers and read again from its start for each
 * walk. Opening it for each walk, from the runtime's thread while the
 * application runs, took the lowest free fd for a moment: an open() of the
 * application's then returned a number one higher than without bpfshim.
 */
#include <errno.h>
#include <pthread.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/stat.h>
#include "rawsys.h"
#include "tasks.h"
#include "start.h"

static struct bpf_rt_kept task = BPF_RT_KEPT_INIT;
static long task_pid;             /* whose task directory it is */
static int walk_lock;

static void take(void)
{
	while (__atomic_exchange_n(&walk_lock, 1, __ATOMIC_ACQUIRE))
		BPF_RT_SYS(SYS_sched_yield, 0);
}

static void drop(void)
{
	__atomic_store_n(&walk_lock, 0, __ATOMIC_RELEASE);
}

static void reopen_locked(void)
{
	if (!bpf_rt_kept_open(&task, "/proc/self/task", O_RDONLY | O_DIRECTORY))
		task_pid = BPF_RT_SYS(SYS_getpid, 0);
}

void rt_tasks_reopen(void)
{
	take();
	reopen_locked();
	drop();
}

int rt_tasks_walk(void (*fn)(int tid, void *arg), void *arg)
{
	static char dbuf[8192];
	long n;

	int fd;

	take();
	/* not ours any more (closed, or this is a child the fork handler missed) */
	if ((fd = bpf_rt_kept_fd(&task)) < 0 || task_pid != BPF_RT_SYS(SYS_getpid, 0)) {
		reopen_locked();
		if ((fd = bpf_rt_kept_fd(&task)) < 0) {
			drop();
			return -ENOENT;
		}
	}
	BPF_RT_SYS(SYS_lseek, fd, 0, SEEK_SET);
	while ((n = BPF_RT_SYS(SYS_getdents64, fd, dbuf, sizeof(dbuf))) > 0) {
		for (long off = 0; off < n;) {
			struct { uint64_t ino; int64_t off; unsigned short reclen; unsigned char type; char name[]; } *e =
				(void *)(dbuf + off);
			off += e->reclen;
			int tid = atoi(e->name);
			if (tid > 0)
				fn(tid, arg);
		}
	}
	drop();
	return n < 0 ? (int)n : 0;
}

/* A fork child opens its own before fork() returns to it. A walk another
 * thread was making is not the child's: the lock is free (only this thread
 * lives on), and taking it would wait forever. */
static void tasks_fork_child(void)
{
	__atomic_store_n(&walk_lock, 0, __ATOMIC_RELAXED);
	reopen_locked();
}

/* At start (start/preload.c), before any step that may attach (hook.c,
 * uprobe.c) or start a thread. */
void tasks_init(void)
{
	rt_tasks_reopen();
	pthread_atfork(NULL, NULL, tasks_fork_child);
}

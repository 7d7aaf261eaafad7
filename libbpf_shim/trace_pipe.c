/* SPDX-License-Identifier: MIT */
/*
 * tracefs trace_pipe, as loaders read it (BCC's trace_print(), bpftool prog
 * tracelog, cat): the programs of a process under the shim are bpfshim's, so
 * their bpf_trace_printk output is bpfshim's trace pipe (agent/trace_ring.h).
 * Opening the file gives the read end of a pipe that a thread of ours fills
 * from the ring; reads block as on the kernel's trace_pipe and consume.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include "shim.h"
#include "trace_ring.h"
#include "rt_thread.h"

static const char *const trace_pipe_paths[] = {
	"/sys/kernel/tracing/trace_pipe",
	"/sys/kernel/debug/tracing/trace_pipe",
};

int shim_is_trace_pipe(const char *path)
{
	if (shim_hybrid)
		return 0;    /* the kernel's, where its programs print */
	for (size_t i = 0; path && i < sizeof(trace_pipe_paths) / sizeof(trace_pipe_paths[0]); i++)
		if (!strcmp(path, trace_pipe_paths[i]))
			return 1;
	return 0;
}

/* A pump stops and starts again around credential changes (rt_thread.c):
 * what it took from the ring and has not written yet is kept here. */
struct pump {
	struct rt_thread thr;     /* first: the registry frees the struct */
	int wfd;                  /* non-blocking: a full pipe does not hold a stop up */
	size_t off, n;
	char buf[16384];
};

static int pump(struct rt_thread *thr)
{
	struct pump *p = (struct pump *)thr;

	while (!rt_thread_stopping(thr)) {
		if (p->off == p->n) {
			p->off = 0;
			p->n = trace_ring_read(p->buf, sizeof(p->buf));
		}
		if (!p->n) {
			/* the reader went away: the write end polls POLLERR */
			struct pollfd pfd = { .fd = p->wfd, .events = 0 };
			if (real.poll(&pfd, 1, 0) > 0 && (pfd.revents & POLLERR))
				break;
			rt_thread_wait(thr, 50);
			continue;
		}
		ssize_t w = write(p->wfd, p->buf + p->off, p->n - p->off);
		if (w < 0 && errno == EAGAIN) {
			struct pollfd pfd = { .fd = p->wfd, .events = POLLOUT };
			real.poll(&pfd, 1, 50);
			continue;
		}
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			break;     /* EPIPE: the read end is closed */
		p->off += (size_t)w;
	}
	if (rt_thread_stopping(thr))
		return RT_THREAD_STOPPED;
	real.close(p->wfd);
	return RT_THREAD_DONE;
}

int shim_trace_pipe_open(int flags)
{
	int p[2];
	struct pump *pu;

	if ((flags & O_ACCMODE) != O_RDONLY) {
		errno = EACCES;
		return -1;
	}
	pu = calloc(1, sizeof(*pu));
	if (!pu)
		return -1;
	if (pipe2(p, O_CLOEXEC) < 0) {
		free(pu);
		return -1;
	}
	if (flags & O_NONBLOCK)
		fcntl(p[0], F_SETFL, O_NONBLOCK);
	if (!(flags & O_CLOEXEC))
		fcntl(p[0], F_SETFD, 0);
	fcntl(p[1], F_SETFL, O_NONBLOCK);
	pu->wfd = p[1];
	pu->thr.fn = pump;
	pu->thr.free_when_done = 1;
	/* the pump takes no signals: a closed reader gives it EPIPE, not SIGPIPE */
	int err = rt_thread_start(&pu->thr);
	if (err) {
		real.close(p[0]);
		real.close(p[1]);
		free(pu);
		errno = err;
		return -1;
	}
	return p[0];
}

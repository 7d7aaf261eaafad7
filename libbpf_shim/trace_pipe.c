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
#include <signal.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include "shim.h"
#include "trace_ring.h"

static const char *const trace_pipe_paths[] = {
	"/sys/kernel/tracing/trace_pipe",
	"/sys/kernel/debug/tracing/trace_pipe",
};

int shim_is_trace_pipe(const char *path)
{
	for (size_t i = 0; path && i < sizeof(trace_pipe_paths) / sizeof(trace_pipe_paths[0]); i++)
		if (!strcmp(path, trace_pipe_paths[i]))
			return 1;
	return 0;
}

static void *pump(void *arg)
{
	int wfd = (int)(intptr_t)arg;
	char buf[16384];
	struct timespec nap = { 0, 50 * 1000 * 1000 };

	for (;;) {
		size_t n = trace_ring_read(buf, sizeof(buf));
		if (!n) {
			/* the reader went away: the write end polls POLLERR */
			struct pollfd pfd = { .fd = wfd, .events = 0 };
			if (real.poll(&pfd, 1, 0) > 0 && (pfd.revents & POLLERR))
				break;
			nanosleep(&nap, NULL);
			continue;
		}
		for (size_t off = 0; off < n;) {
			ssize_t w = write(wfd, buf + off, n - off);
			if (w < 0 && errno == EINTR)
				continue;
			if (w <= 0)
				goto out;     /* EPIPE: the read end is closed */
			off += (size_t)w;
		}
	}
out:
	real.close(wfd);
	return NULL;
}

int shim_trace_pipe_open(int flags)
{
	int p[2];
	pthread_t t;
	pthread_attr_t a;
	sigset_t all, old;

	if ((flags & O_ACCMODE) != O_RDONLY) {
		errno = EACCES;
		return -1;
	}
	if (pipe2(p, O_CLOEXEC) < 0)
		return -1;
	if (flags & O_NONBLOCK)
		fcntl(p[0], F_SETFL, O_NONBLOCK);
	if (!(flags & O_CLOEXEC))
		fcntl(p[0], F_SETFD, 0);
	pthread_attr_init(&a);
	pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
	/* the pump takes no signals: a closed reader gives it EPIPE, not SIGPIPE */
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, &old);
	int err = pthread_create(&t, &a, pump, (void *)(intptr_t)p[1]);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	pthread_attr_destroy(&a);
	if (err) {
		real.close(p[0]);
		real.close(p[1]);
		errno = err;
		return -1;
	}
	return p[0];
}

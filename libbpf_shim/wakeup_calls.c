/* SPDX-License-Identifier: MIT */
/*
 * The calls on perf event and ringbuf fds, interposed: ioctl (perf_event.c,
 * hybrid.c), epoll and poll, which sleep on the objects' eventfds
 * (wakeup.c).
 */
#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <sys/epoll.h>
#include "interpose.h"

BPFSHIM_API int ioctl(int fd, unsigned long req, ...)
{
	va_list ap;
	unsigned long arg;
	struct shim_fd *e;

	va_start(ap, req);
	arg = va_arg(ap, unsigned long);
	va_end(ap);
	ENSURE();
	e = shim_fd_peek(fd);
	if (e && e->kind == SHIM_OBJ_PERF_EVENT)
		KEEP_ERRNO(int, shim_perf_ioctl(e, req, arg), r_ >= 0);
	if (shim_hybrid) {
		int r;
		if (shim_hybrid_ioctl(fd, req, arg, &r))
			return r;
	}
	return real.ioctl(fd, req, arg);
}

static int epoll_ctl_(int epfd, int op, int fd, struct epoll_event *ev);
BPFSHIM_API int epoll_ctl(int epfd, int op, int fd, struct epoll_event *ev)
{
	KEEP_ERRNO(int, epoll_ctl_(epfd, op, fd, ev), r_ >= 0);
}

static int epoll_ctl_(int epfd, int op, int fd, struct epoll_event *ev)
{
	ENSURE();
	return shim_wake_epoll_ctl(epfd, op, fd, ev);
}

static int epoll_wait_(int epfd, struct epoll_event *evs, int max, int timeout);
BPFSHIM_API int epoll_wait(int epfd, struct epoll_event *evs, int max, int timeout)
{
	KEEP_ERRNO(int, epoll_wait_(epfd, evs, max, timeout), r_ >= 0);
}

static int epoll_wait_(int epfd, struct epoll_event *evs, int max, int timeout)
{
	ENSURE();
	if (shim_hybrid)
		shim_events_flush();   /* twins' events are in the kernel's buffers first */
	shim_wake_epoll_before(epfd);
	int r = real.epoll_wait(epfd, evs, max, timeout);
	shim_wake_epoll_after(epfd, evs, r);
	return r;
}

static int epoll_pwait_(int epfd, struct epoll_event *evs, int max, int timeout, const sigset_t *ss);
BPFSHIM_API int epoll_pwait(int epfd, struct epoll_event *evs, int max, int timeout, const sigset_t *ss)
{
	KEEP_ERRNO(int, epoll_pwait_(epfd, evs, max, timeout, ss), r_ >= 0);
}

static int epoll_pwait_(int epfd, struct epoll_event *evs, int max, int timeout, const sigset_t *ss)
{
	ENSURE();
	if (shim_hybrid)
		shim_events_flush();   /* twins' events are in the kernel's buffers first */
	shim_wake_epoll_before(epfd);
	int r = real.epoll_pwait(epfd, evs, max, timeout, ss);
	shim_wake_epoll_after(epfd, evs, r);
	return r;
}

static int poll_(struct pollfd *fds, nfds_t n, int timeout);
BPFSHIM_API int poll(struct pollfd *fds, nfds_t n, int timeout)
{
	KEEP_ERRNO(int, poll_(fds, n, timeout), r_ >= 0);
}

static int poll_(struct pollfd *fds, nfds_t n, int timeout)
{
	ENSURE();
	if (shim_hybrid)
		shim_events_flush();   /* twins' events are in the kernel's buffers first */
	struct pollfd *orig = shim_wake_poll_before(fds, n);
	int r = real.poll(fds, n, timeout);
	int er = errno;
	shim_wake_poll_after(fds, n, orig);
	errno = er;
	return r;
}

static int ppoll_(struct pollfd *fds, nfds_t n, const struct timespec *ts, const sigset_t *ss);
BPFSHIM_API int ppoll(struct pollfd *fds, nfds_t n, const struct timespec *ts, const sigset_t *ss)
{
	KEEP_ERRNO(int, ppoll_(fds, n, ts, ss), r_ >= 0);
}

static int ppoll_(struct pollfd *fds, nfds_t n, const struct timespec *ts, const sigset_t *ss)
{
	ENSURE();
	if (shim_hybrid)
		shim_events_flush();   /* twins' events are in the kernel's buffers first */
	struct pollfd *orig = shim_wake_poll_before(fds, n);
	int r = real.ppoll(fds, n, ts, ss);
	int er = errno;
	shim_wake_poll_after(fds, n, orig);
	errno = er;
	return r;
}

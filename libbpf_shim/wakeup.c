/* SPDX-License-Identifier: MIT */
/*
 * Consumer wake-ups for perf buffers and ringbufs: one eventfd per object,
 * created by the server, that producers in any process signal and that
 * consumers' poll/epoll sleep on. No timer, no busy loop.
 *
 * Perf events: the fd the loader holds is the eventfd itself. perf_poll()
 * consumes the wake-up it reports (atomic_xchg(&rb->poll, 0)), so the
 * eventfd of each reported event is drained when epoll_wait/poll return it.
 *
 * Ringbufs: the fd is the map's memfd, which epoll refuses, so the map's
 * eventfd (SHIM_CTL_RINGBUF_WAKEFD; a dup per registration, so one map may
 * sit in several epolls and under several fds) is registered in its place
 * with the caller's epoll_event. ringbuf_map_poll_kern() is level-triggered
 * on the data (EPOLLIN while producer_pos != consumer_pos) and woken by
 * producers (irq_work, by the BPF_RB_* rules in agent/maps/ringbuf.c):
 *   - epoll: before each wait, a ring that has no data loses its pending
 *     wake-up, a ring with data keeps it (so a reported ring is reported
 *     again until it is drained, and records committed with
 *     BPF_RB_NO_WAKEUP wake nobody); EPOLL_CTL_ADD of a ring with data makes
 *     it ready, as ep_insert()'s first poll does;
 *   - poll: a ring with data is ready at once, else the call sleeps on its
 *     eventfd.
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <fcntl.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include "shim.h"
#include "bpf_rt.h"
#include "start.h"

#define RB_PAGE 4096

/* ---- eventfds of ringbuf maps, by map id (append only: lock-free reads) ---- */

#define MAX_RB_WAKE 256
static struct { uint32_t id; int fd; } rb_wake[MAX_RB_WAKE];
static unsigned n_rb_wake;
static pthread_mutex_t rb_wake_lock = PTHREAD_MUTEX_INITIALIZER;

/* Without a lock or a request: what a producer (a probe) may do. */
static int rb_wake_find(uint32_t id)
{
	unsigned n = __atomic_load_n(&n_rb_wake, __ATOMIC_ACQUIRE);

	for (unsigned i = 0; i < n; i++)
		if (rb_wake[i].id == id)
			return rb_wake[i].fd;
	return -1;
}

int shim_ringbuf_wake_fd(uint32_t id)
{
	unsigned n = __atomic_load_n(&n_rb_wake, __ATOMIC_ACQUIRE);
	struct shim_reply rep;
	int fd = rb_wake_find(id);

	if (fd >= 0)
		return fd;
	pthread_mutex_lock(&rb_wake_lock);
	for (unsigned i = n; i < n_rb_wake; i++)
		if (rb_wake[i].id == id)
			fd = rb_wake[i].fd;
	if (fd < 0 && n_rb_wake < MAX_RB_WAKE &&
	    !shim_request(SHIM_OP_CTL, SHIM_CTL_RINGBUF_WAKEFD, id, NULL, 0, -1, &rep, NULL, 0) && !rep.err) {
		fd = real.fcntl((int)rep.ret, F_DUPFD_CLOEXEC, SHIM_FD_MIN);
		real.close((int)rep.ret);
		if (fd >= 0) {
			rb_wake[n_rb_wake].id = id;
			rb_wake[n_rb_wake].fd = fd;
			__atomic_store_n(&n_rb_wake, n_rb_wake + 1, __ATOMIC_RELEASE);
		}
	}
	pthread_mutex_unlock(&rb_wake_lock);
	return fd;
}

static void signal_fd(int fd)
{
	uint64_t one = 1;

	(void)!write(fd, &one, sizeof(one));
}

/* bpf_rt_ringbuf_wake: the producers' irq_work. The eventfd was asked for
 * when the program's maps were opened here (prog.c shim_map_by_id), before
 * it could run. */
static void ringbuf_wake(uint32_t id)
{
	int fd = rb_wake_find(id);

	if (fd >= 0)
		signal_fd(fd);
}

/* Drain an eventfd (nonblocking): the count it had. */
static uint64_t drain(int fd)
{
	uint64_t v, sum = 0;

	while (read(fd, &v, sizeof(v)) == sizeof(v))
		sum += v;
	return sum;
}

/* ---- registrations: (epfd, fd) -> what epoll really waits on ---- */

struct wake_reg {
	int epfd;
	int fd;                    /* the caller's fd */
	int wfd;                   /* registered in epfd: fd (perf) or a dup of the ring's eventfd */
	uint64_t data;             /* the caller's epoll_event.data */
	const volatile uint64_t *pos;  /* ringbuf: consumer page; producer page at +RB_PAGE/8 */
	void *pages;               /* ringbuf: our mapping of the consumer and producer pages */
};

#define MAX_REGS 1024
static struct wake_reg regs[MAX_REGS];
static int n_regs;
static pthread_mutex_t regs_lock = PTHREAD_MUTEX_INITIALIZER;

static uint64_t rb_avail(const struct wake_reg *r)
{
	return __atomic_load_n(&r->pos[RB_PAGE / 8], __ATOMIC_ACQUIRE) - __atomic_load_n(&r->pos[0], __ATOMIC_ACQUIRE);
}

static struct wake_reg *reg_find(int epfd, int fd)
{
	for (int i = 0; i < n_regs; i++)
		if (regs[i].epfd == epfd && regs[i].fd == fd)
			return &regs[i];
	return NULL;
}

static void reg_drop(struct wake_reg *r)
{
	if (r->pages) {
		real.close(r->wfd);
		munmap(r->pages, 2 * RB_PAGE);
	}
	*r = regs[--n_regs];
}

static int is_ringbuf(const struct shim_fd *e)
{
	return e && e->kind == SHIM_OBJ_MAP && e->map.hdr && e->map.hdr->attr.map_type == BPF_MAP_TYPE_RINGBUF;
}

/* A ringbuf is never writable (ringbuf_map_poll_kern); its eventfd always is. */
static struct epoll_event *rb_event(const struct epoll_event *ev, struct epoll_event *out)
{
	*out = *ev;
	out->events &= ~(uint32_t)(EPOLLOUT | EPOLLWRNORM);
	return out;
}

/* epoll_ctl() with perf and ringbuf fds; the return value and errno of epoll_ctl. */
int shim_wake_epoll_ctl(int epfd, int op, int fd, struct epoll_event *ev)
{
	struct shim_fd *e = shim_fd_peek(fd);
	struct epoll_event e2;
	struct wake_reg *r;
	int ret;

	if (!e || (e->kind != SHIM_OBJ_PERF_EVENT && !is_ringbuf(e))) {
		ret = real.epoll_ctl(epfd, op, fd, ev);
		/* epoll refuses a memfd: a ringbuf this process got without the
		 * shim seeing it (over exec, SCM_RIGHTS) is identified only then */
		int er = errno;
		if (ret == 0 || er != EPERM || e)
			return ret;
		if (!is_ringbuf(e = shim_fd_get(fd))) {
			errno = er;
			return ret;
		}
	}
	pthread_mutex_lock(&regs_lock);
	r = reg_find(epfd, fd);
	if (e->kind == SHIM_OBJ_PERF_EVENT) {
		ret = real.epoll_ctl(epfd, op, fd, ev);
		if (ret == 0 && op == EPOLL_CTL_DEL && r)
			reg_drop(r);
		else if (ret == 0 && r && ev)
			r->data = ev->data.u64;
		else if (ret == 0 && op == EPOLL_CTL_ADD && n_regs < MAX_REGS)
			regs[n_regs++] = (struct wake_reg){ .epfd = epfd, .fd = fd, .wfd = fd, .data = ev ? ev->data.u64 : 0 };
		goto out;
	}
	/* a ringbuf map: its eventfd stands in for it */
	if (op != EPOLL_CTL_ADD) {
		if (!r) {
			errno = fcntl(epfd, F_GETFD) < 0 ? EBADF : ENOENT;
			ret = -1;
			goto out;
		}
		ret = real.epoll_ctl(epfd, op, r->wfd, ev ? rb_event(ev, &e2) : NULL);
		if (ret == 0 && op == EPOLL_CTL_DEL)
			reg_drop(r);
		else if (ret == 0 && ev)
			r->data = ev->data.u64;
		goto out;
	}
	if (r) {
		errno = EEXIST;
		ret = -1;
		goto out;
	}
	if (n_regs == MAX_REGS) {
		errno = ENOSPC;
		ret = -1;
		goto out;
	}
	int efd = shim_ringbuf_wake_fd(e->id);
	if (efd < 0) {
		errno = ENOMEM;
		ret = -1;
		goto out;
	}
	struct wake_reg n = { .epfd = epfd, .fd = fd, .data = ev ? ev->data.u64 : 0 };
	n.wfd = real.fcntl(efd, F_DUPFD_CLOEXEC, SHIM_FD_MIN);
	shim_internal++;
	n.pages = real.mmap(NULL, 2 * RB_PAGE, PROT_READ, MAP_SHARED, fd, (off_t)e->map.hdr->data_off);
	shim_internal--;
	if (n.wfd < 0 || n.pages == MAP_FAILED) {
		int er = errno;
		if (n.wfd >= 0)
			real.close(n.wfd);
		if (n.pages != MAP_FAILED)
			munmap(n.pages, 2 * RB_PAGE);
		errno = er;
		ret = -1;
		goto out;
	}
	ret = real.epoll_ctl(epfd, op, n.wfd, ev ? rb_event(ev, &e2) : NULL);
	if (ret < 0) {
		int er = errno;
		real.close(n.wfd);
		munmap(n.pages, 2 * RB_PAGE);
		errno = er;
		goto out;
	}
	n.pos = n.pages;
	regs[n_regs++] = n;
	if (rb_avail(&n))
		signal_fd(n.wfd);
out:
	pthread_mutex_unlock(&regs_lock);
	return ret;
}

/* A perf event about to be waited on: drops not reported yet get their
 * PERF_RECORD_LOST now if it fits (the consumer made room), and wake it. */
static void perf_before_wait(int fd)
{
	struct shim_fd *e = shim_fd_peek(fd);

	if (e && e->kind == SHIM_OBJ_PERF_EVENT && shim_perf_flush_lost(fd, e))
		signal_fd(fd);
}

/* A perf event's wake-up was reported: take it (perf_poll). */
static void perf_take_wakeup(int fd)
{
	struct shim_fd *e = shim_fd_peek(fd);

	drain(fd);
	if (e && e->kind == SHIM_OBJ_PERF_EVENT)
		shim_perf_woken(e);
}

/* Before epoll_wait on epfd: a ring without data keeps no wake-up. */
void shim_wake_epoll_before(int epfd)
{
	if (!__atomic_load_n(&n_regs, __ATOMIC_RELAXED))
		return;   /* no perf event or ringbuf in any epoll: the common case */
	pthread_mutex_lock(&regs_lock);
	for (int i = 0; i < n_regs; i++) {
		struct wake_reg *r = &regs[i];
		if (r->epfd != epfd)
			continue;
		if (!r->pages) {
			perf_before_wait(r->fd);
			continue;
		}
		/* drain first: a wake-up after this sees its record below */
		if (drain(r->wfd) && rb_avail(r))
			signal_fd(r->wfd);
	}
	pthread_mutex_unlock(&regs_lock);
}

/* After epoll_wait on epfd returned n events: perf events reported give up
 * their wake-up. */
void shim_wake_epoll_after(int epfd, const struct epoll_event *evs, int n)
{
	if (n <= 0 || !__atomic_load_n(&n_regs, __ATOMIC_RELAXED))
		return;
	pthread_mutex_lock(&regs_lock);
	for (int i = 0; i < n_regs; i++) {
		struct wake_reg *r = &regs[i];
		if (r->epfd != epfd || r->pages)
			continue;
		for (int k = 0; k < n; k++)
			if (evs[k].data.u64 == r->data) {
				perf_take_wakeup(r->wfd);
				break;
			}
	}
	pthread_mutex_unlock(&regs_lock);
}

/* close(fd): an epoll instance going away takes our registrations with it. */
void shim_wake_closed(int fd)
{
	if (!__atomic_load_n(&n_regs, __ATOMIC_RELAXED))
		return;
	pthread_mutex_lock(&regs_lock);
	for (int i = 0; i < n_regs;)
		if (regs[i].epfd == fd)
			reg_drop(&regs[i]);
		else
			i++;
	pthread_mutex_unlock(&regs_lock);
}

/* ---- poll/ppoll ---- */

/* Ringbuf fds in fds[] are replaced by their eventfds, asked for POLLIN only
 * (a malloc'd copy of fds[] is returned for shim_wake_poll_after to restore
 * them; NULL when there are none). A ring with data has its eventfd
 * signalled, so the call does not sleep. */
struct pollfd *shim_wake_poll_before(struct pollfd *fds, unsigned long n)
{
	struct pollfd *orig = NULL;

	for (unsigned long i = 0; i < n; i++) {
		struct shim_fd *e = fds[i].fd >= 0 ? shim_fd_peek(fds[i].fd) : NULL;
		if (e && e->kind == SHIM_OBJ_PERF_EVENT)
			perf_before_wait(fds[i].fd);
		if (!is_ringbuf(e))
			continue;
		int efd = shim_ringbuf_wake_fd(e->id);
		if (efd < 0)
			continue;
		if (!orig) {
			if (!(orig = malloc(n * sizeof(*fds))))
				return NULL;
			memcpy(orig, fds, n * sizeof(*fds));
		}
		const struct shm_map_hdr *h = e->map.hdr;
		const volatile uint64_t *pos = (const volatile uint64_t *)((const char *)h + h->data_off);
		drain(efd);
		if (__atomic_load_n(&pos[RB_PAGE / 8], __ATOMIC_ACQUIRE) != __atomic_load_n(&pos[0], __ATOMIC_ACQUIRE))
			signal_fd(efd);
		fds[i].fd = efd;
		fds[i].events &= POLLIN | POLLRDNORM;
	}
	return orig;
}

/* Restores fds[] from orig (ringbuf revents as ringbuf_map_poll_kern gives
 * them) and drains the wake-ups of perf events reported. */
void shim_wake_poll_after(struct pollfd *fds, unsigned long n, struct pollfd *orig)
{
	for (unsigned long i = 0; i < n; i++) {
		if (orig && orig[i].fd != fds[i].fd) {
			short rev = fds[i].revents;
			fds[i].fd = orig[i].fd;
			fds[i].events = orig[i].events;
			fds[i].revents = (rev & POLLIN) ? (short)(orig[i].events & (POLLIN | POLLRDNORM)) : (short)(rev & ~POLLOUT);
			continue;
		}
		if (fds[i].fd >= 0 && (fds[i].revents & POLLIN)) {
			struct shim_fd *e = shim_fd_peek(fds[i].fd);
			if (e && e->kind == SHIM_OBJ_PERF_EVENT)
				perf_take_wakeup(fds[i].fd);
		}
	}
	free(orig);
}

/* At start, before uprobe_init, which may run programs (start/preload.c) */
void wakeup_init(void)
{
	bpf_rt_ringbuf_wake = ringbuf_wake;
}

/* SPDX-License-Identifier: MIT */
/*
 * perf events as loaders use them with BPF: perf_event_open of a
 * PERF_COUNT_SW_BPF_OUTPUT event per CPU, mmap of its ring, ioctl
 * ENABLE/DISABLE, and poll/epoll on the fd — plus the producer side,
 * bpf_perf_event_output(), which any process runs on the shared ring.
 *
 * The fd is an eventfd the producers signal; consumers sleep on it in
 * poll/epoll (wakeup.c).
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <fcntl.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <linux/perf_event.h>
#include <linux/bpf_perf_event.h>
#include <sys/syscall.h>
#include <signal.h>
#include <time.h>
#include "shim.h"
#include "bpf_rt.h"
#include "perf_ring.h"
#include "rt_thread.h"
#include "rawsys.h"
#include "start.h"

#define PERF_TYPE_UPROBE_DEFAULT 8

static __thread int pending_ring_fd = -1;

/* conn.c hands us the ring fd of a perf event it just received. */
void shim_perf_ring_received(int fd)
{
	int hi = real.fcntl(fd, F_DUPFD_CLOEXEC, SHIM_FD_MIN);

	if (hi >= 0) {
		real.close(fd);
		fd = hi;
	}
	pending_ring_fd = fd;
}

static int attach_ring(int evfd)
{
	struct shim_fd *e = shim_fd_peek(evfd);
	int rfd = pending_ring_fd;

	pending_ring_fd = -1;
	if (!e || rfd < 0)
		return -EPROTO;
	void *meta = real.mmap(NULL, PERF_RING_META_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, rfd, 0);
	if (meta == MAP_FAILED) {
		real.close(rfd);
		return -errno;
	}
	e->ring_fd = rfd;
	e->ring_meta = meta;
	return 0;
}

/* Which perf events bpfshim serves; everything else goes to the kernel. */
static int is_ours(const struct perf_event_attr *a)
{
	if (a->type == PERF_TYPE_SOFTWARE)
		return a->config == PERF_COUNT_SW_BPF_OUTPUT || a->config == PERF_COUNT_SW_CPU_CLOCK;
	return a->type == PERF_TYPE_TRACEPOINT || a->type == PERF_TYPE_UPROBE_DEFAULT;
}

/* The PMU type sysfs gives a dynamic PMU (kprobe, uprobe), or -1. */
int shim_pmu_type(const char *pmu)
{
	char path[96], buf[16];
	int fd, n;

	snprintf(path, sizeof(path), "/sys/bus/event_source/devices/%s/type", pmu);
	fd = real.open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	n = (int)read(fd, buf, sizeof(buf) - 1);
	real.close(fd);
	if (n <= 0)
		return -1;
	buf[n] = 0;
	return atoi(buf);
}

/* A perf event bpfshim does not serve and the kernel refused: one line
 * naming it (the loader's own message may say only "Permission denied"). */
static void say_not_served(const struct perf_event_attr *a)
{
	static const char *const hw[] = { "cpu-cycles", "instructions", "cache-references", "cache-misses",
		"branch-instructions", "branch-misses", "bus-cycles", "stalled-cycles-frontend",
		"stalled-cycles-backend", "ref-cycles" };
	static const char *const sw[] = { "cpu-clock", "task-clock", "page-faults", "context-switches",
		"cpu-migrations", "minor-faults", "major-faults", "alignment-faults", "emulation-faults",
		"dummy", "bpf-output", "cgroup-switches" };
	char what[200], sym[128], m[600];

	if (a->type == PERF_TYPE_HARDWARE && a->config < BPFSHIM_ARRAY_SIZE(hw))
		snprintf(what, sizeof(what), "hardware event %s", hw[a->config]);
	else if (a->type == PERF_TYPE_SOFTWARE && a->config < BPFSHIM_ARRAY_SIZE(sw))
		snprintf(what, sizeof(what), "software event %s", sw[a->config]);
	else if (a->type == PERF_TYPE_HW_CACHE)
		snprintf(what, sizeof(what), "hardware cache event 0x%llx", (unsigned long long)a->config);
	else if (a->type == PERF_TYPE_RAW)
		snprintf(what, sizeof(what), "raw PMU event 0x%llx", (unsigned long long)a->config);
	else if (a->type == PERF_TYPE_BREAKPOINT)
		snprintf(what, sizeof(what), "hardware breakpoint");
	else if ((int)a->type == shim_pmu_type("kprobe")) {
		if (!a->config1 || shim_strncpy_from_user(sym, a->config1, sizeof(sym) - 1) < 0)
			snprintf(sym, sizeof(sym), "0x%llx", (unsigned long long)a->config2);
		snprintf(what, sizeof(what), "%s %s", a->config & 1 ? "kretprobe" : "kprobe", sym);
	} else
		snprintf(what, sizeof(what), "perf event type %u config 0x%llx", a->type,
			 (unsigned long long)a->config);
	snprintf(m, sizeof(m), "%s is not served in user space (bpfshim serves uprobes, uretprobes, USDT, "
		 "syscall tracepoints, bpf-output and cpu-clock events); it " SHIM_NO_KERNEL, what);
	shim_say_once(m);
}

/* ---- CPU_CLOCK events with a program: a timer in this process ---- */

struct timer_ev {
	struct rt_thread thr;     /* first: timer_main gets it */
	uint32_t id;
	uint64_t period_ns;
	const struct bpf_prog_rt *prog;
	int running;
};
static struct timer_ev timers[64];
static pthread_mutex_t timers_lock = PTHREAD_MUTEX_INITIALIZER;

static struct timer_ev *timer_of(uint32_t id)
{
	for (int i = 0; i < 64; i++)
		if (timers[i].id == id)
			return &timers[i];
	return NULL;
}

static int timer_main(struct rt_thread *thr)
{
	struct timer_ev *t = (struct timer_ev *)thr;
	struct bpf_perf_event_data ctx;
	struct timespec next;

	clock_gettime(CLOCK_MONOTONIC, &next);
	for (;;) {
		next.tv_nsec += (long)(t->period_ns % 1000000000ull);
		next.tv_sec += (time_t)(t->period_ns / 1000000000ull) + next.tv_nsec / 1000000000L;
		next.tv_nsec %= 1000000000L;
		rt_thread_sleep_until(thr, &next);
		if (rt_thread_stopping(thr))
			return RT_THREAD_STOPPED;
		uint64_t r0;
		memset(&ctx, 0, sizeof(ctx));
		ctx.sample_period = t->period_ns;
		shim_prog_prepare(t->prog);   /* the shim's thread, not a probe: it may ask */
		bpf_prog_run(t->prog, &ctx, &r0);
	}
}

static void timer_enable(struct shim_fd *e, int on)
{
	pthread_mutex_lock(&timers_lock);
	struct timer_ev *t = timer_of(e->id);
	if (t && t->prog) {
		if (on && !t->running) {
			t->thr.fn = timer_main;
			t->running = !rt_thread_start(&t->thr);
		} else if (!on && t->running) {
			rt_thread_stop(&t->thr);
			t->running = 0;
		}
	}
	pthread_mutex_unlock(&timers_lock);
}

static void timer_opened(uint32_t id, const struct perf_event_attr *a)
{
	pthread_mutex_lock(&timers_lock);
	for (int i = 0; i < 64; i++)
		if (!timers[i].id) {
			timers[i].id = id;
			/* attr.freq: samples per second; else the period in ns */
			timers[i].period_ns = a->freq ? (a->sample_freq ? 1000000000ull / a->sample_freq : 1000000ull)
						      : (a->sample_period ? a->sample_period : 1000000ull);
			break;
		}
	pthread_mutex_unlock(&timers_lock);
}

long shim_perf_event_open(uint64_t uattr, long pid, long cpu, long group_fd, unsigned long flags)
{
	if (shim_hybrid)
		return shim_hybrid_perf_event_open(uattr, pid, cpu, group_fd, flags);
	return shim_user_perf_event_open(uattr, pid, cpu, group_fd, flags);
}

/* bpfshim's answer, in either mode (hybrid.c: a uprobe's twin) */
long shim_user_perf_event_open(uint64_t uattr, long pid, long cpu, long group_fd, unsigned long flags)
{
	struct perf_event_attr head;
	struct shim_reply rep;
	uint64_t req[2] = { uattr, flags };
	struct shim_uwin w;
	int err;

	memset(&head, 0, sizeof(head));
	if (shim_copy_from_user(&head, uattr, PERF_ATTR_SIZE_VER0))
		return shim_err(EFAULT);
	if (!is_ours(&head)) {
		long r = real.syscall(SYS_perf_event_open, uattr, pid, cpu, group_fd, flags);
		if (r < 0) {
			int e = errno;
			say_not_served(&head);
			errno = e;
		}
		return r;
	}
	shim_uwin_perf(&w, uattr, &head);
	shim_cur_uwin = &w;
	err = shim_request(SHIM_OP_PERF_EVENT_OPEN, pid,
			   (int64_t)(((uint64_t)(uint32_t)group_fd << 32) | (uint32_t)cpu),
			   req, sizeof(req), -1, &rep, NULL, 0);
	shim_cur_uwin = NULL;
	if (err)
		return shim_err(-err);
	if (rep.err)
		return shim_err(rep.err);
	if (pending_ring_fd < 0) {
		/* an event that runs programs: no ring */
		struct shim_fd *e = shim_fd_peek((int)rep.ret);
		if (e && head.type == PERF_TYPE_SOFTWARE && head.config == PERF_COUNT_SW_CPU_CLOCK) {
			timer_opened(e->id, &head);
			/* one event a CPU, or another process's: a sampler (profile),
			 * not a timer (interval, on one CPU) */
			if (cpu > 0 || (pid > 0 && pid != getpid()))
				shim_say_once("cpu-clock sampling (profile) runs on a timer in the loader: the traced "
					      "processes are not sampled, their stacks are not seen");
		}
		return rep.ret;
	}
	err = attach_ring((int)rep.ret);
	if (err) {
		close((int)rep.ret);
		return shim_err(-err);
	}
	return rep.ret;
}

static struct perf_ring_meta *meta_of(struct shim_fd *e)
{
	return (struct perf_ring_meta *)e->ring_meta;
}

/* perf_mmap(): 1 + 2^n pages at offset 0, shared. */
void *shim_perf_mmap(struct shim_fd *e, void *addr, size_t len, int prot, int flags, long off)
{
	struct perf_ring_meta *meta = meta_of(e);
	size_t pg = 4096, nr;

	if (!meta || off != 0 || len < pg || len % pg || !(flags & MAP_SHARED)) {
		errno = EINVAL;
		return MAP_FAILED;
	}
	nr = len / pg - 1;
	if (nr & (nr - 1)) {
		errno = EINVAL;
		return MAP_FAILED;
	}
	shm_lock(&meta->lock);
	if (meta->data_size && meta->data_size != nr * pg) {
		shm_unlock(&meta->lock);
		errno = EINVAL;
		return MAP_FAILED;
	}
	if (!meta->data_size) {
		if (ftruncate(e->ring_fd, (off_t)(PERF_RING_META_SIZE + len))) {
			shm_unlock(&meta->lock);
			return MAP_FAILED;
		}
		struct perf_event_mmap_page *up = real.mmap(NULL, pg, PROT_READ | PROT_WRITE, MAP_SHARED,
							    e->ring_fd, PERF_RING_META_SIZE);
		if (up != MAP_FAILED) {
			up->version = 0;
			up->compat_version = 0;
			up->data_offset = pg;
			up->data_size = nr * pg;
			munmap(up, pg);
		}
		if (!meta->wakeup_events && !meta->watermark)
			meta->watermark = (uint32_t)(nr * pg / 2);
		__atomic_store_n(&meta->data_size, nr * pg, __ATOMIC_RELEASE);
	}
	shm_unlock(&meta->lock);
	return real.mmap(addr, len, prot, flags, e->ring_fd, PERF_RING_META_SIZE);
}

/* ioctl on events that run programs (uprobes, ...): the server owns them. */
static int forward_ioctl(struct shim_fd *e, unsigned long req, unsigned long arg)
{
	struct { uint32_t id, req; uint64_t arg; } p = { e->id, (uint32_t)req, arg };
	struct shim_reply rep;
	int err;

	if (req == PERF_EVENT_IOC_SET_BPF) {
		struct shim_fd *pe = shim_fd_get((int)arg);
		if (!pe)
			return (int)shim_err(EBADF);
		if (pe->kind != SHIM_OBJ_PROG)
			return (int)shim_err(EINVAL);
		p.arg = pe->id;
	}
	err = shim_request(SHIM_OP_CTL, SHIM_CTL_PERF_IOCTL, 0, &p, sizeof(p), -1, &rep, NULL, 0);
	if (err)
		return (int)shim_err(-err);
	if (rep.err)
		return (int)shim_err(rep.err);
	/* timers run here, in the process that opened them */
	pthread_mutex_lock(&timers_lock);
	struct timer_ev *t = timer_of(e->id);
	if (t && req == PERF_EVENT_IOC_SET_BPF) {
		int perr;
		t->prog = shim_prog_get((int)arg, &perr);
	}
	pthread_mutex_unlock(&timers_lock);
	if (req == PERF_EVENT_IOC_ENABLE || req == PERF_EVENT_IOC_DISABLE)
		timer_enable(e, req == PERF_EVENT_IOC_ENABLE);
	return (int)rep.ret;
}

/* ioctl on our perf fds. */
int shim_perf_ioctl(struct shim_fd *e, unsigned long req, unsigned long arg)
{
	struct perf_ring_meta *meta = meta_of(e);

	if (!meta && (req == PERF_EVENT_IOC_ENABLE || req == PERF_EVENT_IOC_DISABLE ||
		      req == PERF_EVENT_IOC_SET_BPF))
		return forward_ioctl(e, req, arg);

	switch (req) {
	case PERF_EVENT_IOC_ENABLE:
		if (meta)
			__atomic_store_n(&meta->enabled, 1, __ATOMIC_RELEASE);
		return 0;
	case PERF_EVENT_IOC_DISABLE:
		if (meta)
			__atomic_store_n(&meta->enabled, 0, __ATOMIC_RELEASE);
		return 0;
	case PERF_EVENT_IOC_RESET:
	case PERF_EVENT_IOC_REFRESH:
		return 0;
	case PERF_EVENT_IOC_ID: {
		uint64_t id = meta ? meta->event_id : e->id;
		return shim_copy_to_user(arg, &id, sizeof(id)) ? (int)shim_err(EFAULT) : 0;
	}
	case PERF_EVENT_IOC_SET_BPF:
		/* A BPF_OUTPUT event runs no program (perf_event_set_bpf_prog). */
		return (int)shim_err(EINVAL);
	}
	return (int)shim_err(ENOTTY);
}

/* ---- producer: bpf_perf_event_output() ---- */

/* The rings this process writes to (or polls), by perf event id. Append
 * only, in chunks that are never freed: a probe reads it without a lock and
 * never allocates, maps with raw syscalls, and never asks the server: the
 * follower thread adds the rings of a program's PERF_EVENT_ARRAY before the
 * program runs here and when the loader fills a slot (shim_prog_prepare).
 * Searched newest first: the live rings are the recent ones. */
struct ring_ent {
	uint32_t id;
	int evfd;
	int ringfd;
	struct perf_ring_meta *meta;   /* mapped alone, for data_size */
	struct perf_ring_meta *full;   /* the whole ring, once the loader sized it; else NULL */
};

#define RING_CHUNK 256
#define MAX_RING_CHUNKS 64
static struct ring_ent *ring_chunks[MAX_RING_CHUNKS];
static unsigned n_rings;

static struct ring_ent *ring_at(unsigned i)
{
	return &ring_chunks[i / RING_CHUNK][i % RING_CHUNK];
}

static pthread_mutex_t rings_lock = PTHREAD_MUTEX_INITIALIZER;

static struct ring_ent *ring_find(uint32_t id)
{
	unsigned n = __atomic_load_n(&n_rings, __ATOMIC_ACQUIRE);

	for (unsigned i = n; i-- > 0;)
		if (ring_at(i)->id == id)
			return ring_at(i);
	return NULL;
}

/* The whole ring, mapped once the loader has sized it (shim_perf_mmap: the
 * size never changes after); NULL before. Raw syscalls, no lock: a probe may
 * be the first to need it; of two racing mappers one unmaps its own. */
static struct perf_ring_meta *ring_full(struct ring_ent *r)
{
	struct perf_ring_meta *f = __atomic_load_n(&r->full, __ATOMIC_ACQUIRE), *none = NULL;
	uint64_t dsize;

	if (f || !(dsize = __atomic_load_n(&r->meta->data_size, __ATOMIC_ACQUIRE)))
		return f;
	f = bpf_rt_mmap(PERF_RING_META_SIZE + 4096 + dsize, PROT_READ | PROT_WRITE, MAP_SHARED, r->ringfd, 0);
	if (!f)
		return NULL;
	if (!__atomic_compare_exchange_n(&r->full, &none, f, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
		BPF_RT_SYS(SYS_munmap, f, PERF_RING_META_SIZE + 4096 + dsize);
		f = none;
	}
	return f;
}

/* Add a ring (under rings_lock): evfd and ringfd are ours (taken over).
 * NULL when full. */
static struct ring_ent *ring_add(uint32_t id, int evfd, int ringfd)
{
	unsigned c = n_rings / RING_CHUNK;
	struct ring_ent *r = NULL;
	void *meta = MAP_FAILED;

	if (c < MAX_RING_CHUNKS && !ring_chunks[c]) {
		void *p = real.mmap(NULL, RING_CHUNK * sizeof(struct ring_ent), PROT_READ | PROT_WRITE,
				    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (p != MAP_FAILED)
			ring_chunks[c] = p;
	}
	if (c < MAX_RING_CHUNKS && ring_chunks[c])
		meta = real.mmap(NULL, PERF_RING_META_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, ringfd, 0);
	if (meta != MAP_FAILED) {
		r = ring_at(n_rings);
		*r = (struct ring_ent){ .id = id, .evfd = evfd, .ringfd = ringfd, .meta = meta };
		__atomic_store_n(&n_rings, n_rings + 1, __ATOMIC_RELEASE);
	} else {
		real.close(evfd);
		real.close(ringfd);
	}
	return r;
}

/* Records probes dropped because this process had no ring for the event
 * yet, by event id: given to the ring's `lost` count (PERF_RECORD_LOST)
 * when the follower adds it. Slots are claimed with a CAS, never freed. */
#define MISSED_MAX 64
static struct { uint32_t id; uint64_t n; } missed[MISSED_MAX];

static void ring_missed(uint32_t id)
{
	for (unsigned i = 0; i < MISSED_MAX; i++) {
		uint32_t cur = __atomic_load_n(&missed[i].id, __ATOMIC_ACQUIRE), zero = 0;
		if (cur == id || (!cur && (__atomic_compare_exchange_n(&missed[i].id, &zero, id, 0, __ATOMIC_ACQ_REL,
								       __ATOMIC_ACQUIRE) || zero == id))) {
			__atomic_add_fetch(&missed[i].n, 1, __ATOMIC_RELEASE);
			break;
		}
	}
	rt_followers_kick();
}

static void missed_to_ring(struct ring_ent *r)
{
	for (unsigned i = 0; i < MISSED_MAX; i++) {
		if (__atomic_load_n(&missed[i].id, __ATOMIC_ACQUIRE) != r->id)
			continue;
		uint64_t n = __atomic_exchange_n(&missed[i].n, 0, __ATOMIC_ACQ_REL);
		if (n) {
			shm_lock(&r->meta->lock);
			r->meta->lost += n;
			shm_unlock(&r->meta->lock);
		}
	}
}

void shim_perf_ring_prepare(uint32_t id)
{
	struct ring_ent *r = ring_find(id);
	struct shim_reply rep;

	if (!r) {
		pthread_mutex_lock(&rings_lock);
		if (!(r = ring_find(id)) &&
		    !shim_request(SHIM_OP_CTL, SHIM_CTL_PERF_GET, id, NULL, 0, -1, &rep, NULL, 0) && !rep.err) {
			int evfd = real.fcntl((int)rep.ret, F_DUPFD_CLOEXEC, SHIM_FD_MIN);
			shim_fd_forget((int)rep.ret);
			real.close((int)rep.ret);
			if (pending_ring_fd >= 0)
				r = ring_add(id, evfd, pending_ring_fd);
			else if (evfd >= 0)
				real.close(evfd);
		}
		pending_ring_fd = -1;
		pthread_mutex_unlock(&rings_lock);
	}
	if (r)
		missed_to_ring(r);
}

static struct perf_event_mmap_page *ring_page(struct perf_ring_meta *full)
{
	return (struct perf_event_mmap_page *)((char *)full + PERF_RING_META_SIZE);
}

static void *ring_data(struct perf_ring_meta *full)
{
	return (char *)full + PERF_RING_META_SIZE + 4096;
}

static int copy_from_prog(void *dst, const void *src, uint64_t n)
{
	return shim_copy_from_user(dst, (uint64_t)(uintptr_t)src, n);
}

/* The consumer's poll (wakeup.c), for the perf event behind fd entry e:
 * report drops made since the last record that fitted, once there is room.
 * 1 when a PERF_RECORD_LOST was written. */
int shim_perf_flush_lost(int fd, struct shim_fd *e)
{
	struct perf_ring_meta *meta = meta_of(e), *full;
	struct ring_ent *r;

	if (!meta || !__atomic_load_n(&meta->lost, __ATOMIC_RELAXED) || !meta->data_size)
		return 0;
	if (!(r = ring_find(e->id))) {
		int evfd = real.fcntl(fd, F_DUPFD_CLOEXEC, SHIM_FD_MIN);
		int rfd = real.fcntl(e->ring_fd, F_DUPFD_CLOEXEC, SHIM_FD_MIN);
		if (evfd < 0 || rfd < 0) {
			if (evfd >= 0)
				real.close(evfd);
			if (rfd >= 0)
				real.close(rfd);
			return 0;
		}
		pthread_mutex_lock(&rings_lock);
		if (!(r = ring_find(e->id)))
			r = ring_add(e->id, evfd, rfd);
		else {
			real.close(evfd);
			real.close(rfd);
		}
		pthread_mutex_unlock(&rings_lock);
		if (!r)
			return 0;
	}
	if (!(full = ring_full(r)))
		return 0;
	return perf_ring_flush_lost(full, ring_page(full), ring_data(full));
}

/* The consumer took the wake-up of the perf event behind e. */
void shim_perf_woken(struct shim_fd *e)
{
	struct perf_ring_meta *meta = meta_of(e);

	if (meta)
		perf_ring_woken(meta);
}

static uint64_t bpf_perf_event_output(uint64_t ctx, uint64_t map, uint64_t flags, uint64_t data, uint64_t size)
{
	struct shm_map *m = (struct shm_map *)(uintptr_t)map;
	uint64_t index = flags & BPF_F_INDEX_MASK;
	struct perf_ring_meta *full;
	uint32_t key, id;
	struct ring_ent *r;
	int wake = 0, err;

	if (flags & ~BPF_F_INDEX_MASK)
		return (uint64_t)-EINVAL;
	if (!m || m->hdr->attr.map_type != BPF_MAP_TYPE_PERF_EVENT_ARRAY)
		return (uint64_t)-EINVAL;
	if (index == BPF_F_CURRENT_CPU)
		index = (uint64_t)shm_cur_cpu(m);
	if (index >= m->hdr->attr.max_entries)
		return (uint64_t)-E2BIG;
	key = (uint32_t)index;
	id = shm_fd_array_get(m, key);
	if (!id)
		return (uint64_t)-ENOENT;
	if (size > 0xffff - 16)
		return (uint64_t)-E2BIG;
	r = ring_find(id);
	if (!r) {
		/* filled after the follower last looked: counted, the follower asked */
		ring_missed(id);
		return (uint64_t)-ENOSPC;
	}
	if (!(full = ring_full(r)))
		return (uint64_t)-ENOSPC;   /* no buffer mapped yet: perf_output_begin() */
	/* the record is copied from program memory fault-safely, under the lock */
	err = perf_ring_output(full, ring_page(full), ring_data(full), (const void *)(uintptr_t)data, size,
			       copy_from_prog, &wake);
	if (wake && perf_ring_claim_signal(full)) {
		uint64_t one = 1;
		(void)!write(r->evfd, &one, sizeof(one));
	}
	return (uint64_t)(int64_t)err;
}

/* At start, before uprobe_init, which may run programs (start/preload.c) */
void perf_helpers_init(void)
{
	bpf_helpers[BPF_FUNC_perf_event_output] = bpf_perf_event_output;
}

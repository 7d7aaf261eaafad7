/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <unistd.h>
#include <sys/syscall.h>
#include "shm_lock.h"
#include "rawsys.h"

static __thread uint32_t self_tid;

uint32_t shm_self_tid(void)
{
	if (!self_tid)
		self_tid = (uint32_t)syscall(SYS_gettid);
	return self_tid;
}

/* After fork the child's tid differs from the cached one. */
static void reset_tid(void) { self_tid = 0; }
__attribute__((constructor)) static void shm_lock_init(void)
{
	pthread_atfork(0, 0, reset_tid);
}

/* A word no live thread of this user can have written counts as dead, so
 * that a corrupted lock word (a loader writing into the segment) cannot make
 * takers wait forever: tid 0 (kill(0) would ask about our own group) and a
 * tid of another user's process (EPERM: the segment is this user's). */
int shm_lock_owner_dead(uint32_t word)
{
	pid_t tid = (pid_t)(word & SHM_LOCK_TID_MASK);
	if (!tid)
		return 1;
	int saved = errno, dead = kill(tid, 0) < 0 && (errno == ESRCH || errno == EPERM);

	errno = saved;
	return dead;
}

struct vma_find {
	uintptr_t addr;            /* the mapping holding addr, or */
	uint64_t dev, ino;         /* one of this file */
};

static int vma_match(const struct bpf_rt_vma *v, void *arg)
{
	struct vma_find *f = arg;

	if (!f->addr)
		return v->ino == f->ino && v->dev == f->dev;
	if (f->addr < v->lo || f->addr >= v->hi)
		return 0;
	f->dev = v->dev;
	f->ino = v->ino;
	return 1;
}

/* Whether /proc/<pid>/maps (pid 0: self) has f's mapping: 1, 0, or -errno
 * (raw reads into a stack buffer: this runs inside probes too). */
static int maps_find(int32_t pid, struct vma_find *f)
{
	char path[32] = "/proc/self/maps", buf[4096];

	if (pid) {
		size_t k = 6;
		k += bpf_rt_utoa(path + k, (uint64_t)pid);
		memcpy(path + k, "/maps", 6);
	}
	long fd = BPF_RT_SYS(SYS_openat, AT_FDCWD, path, O_RDONLY | O_CLOEXEC, 0);
	if (fd < 0)
		return (int)fd;
	int r = bpf_rt_maps_each(fd, buf, sizeof(buf), vma_match, f);
	BPF_RT_SYS(SYS_close, fd);
	return r;
}

/* A live owner that does not map the segment the lock is in cannot hold it:
 * the word is garbage (a loader wrote into the segment). Asked only after a
 * long wait (it reads /proc). */
static int owner_foreign(uint32_t word, shm_lock_t *l)
{
	struct vma_find f = { .addr = (uintptr_t)l };

	if (maps_find(0, &f) != 1 || !f.ino)
		return 0;
	f.addr = 0;
	/* unreadable: not a process of this user (or one that made itself
	 * undumpable, which a map user does not) */
	return maps_find((int32_t)(word & SHM_LOCK_TID_MASK), &f) != 1;
}

uint32_t shm_lock_takeover(shm_lock_t *l)
{
	uint32_t me = shm_self_tid();
	unsigned spins = 0, waits = 0;

	for (;;) {
		uint32_t cur = 0;
		if (__atomic_compare_exchange_n(l, &cur, me, 0, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED))
			return 0;
		if (++spins < 128) {
			__builtin_ia32_pause();
			continue;
		}
		/* Long wait: either a busy owner or a dead one. */
		if (cur && (shm_lock_owner_dead(cur) || (++waits % 256 == 0 && owner_foreign(cur, l)))) {
			/* the dead owner's upper bits stay until the taker has
			 * dealt with what they say */
			uint32_t dead = cur;
			if (__atomic_compare_exchange_n(l, &cur, me | (dead & ~SHM_LOCK_TID_MASK), 0,
							__ATOMIC_ACQUIRE, __ATOMIC_RELAXED))
				return dead;
		}
		spins = 64;
		sched_yield();
	}
}

void shm_lock(shm_lock_t *l)
{
	(void)shm_lock_takeover(l);
}

void shm_unlock(shm_lock_t *l)
{
	__atomic_store_n(l, 0, __ATOMIC_RELEASE);
}

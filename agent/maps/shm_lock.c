/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <unistd.h>
#include <sys/syscall.h>
#include "shm_lock.h"

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

/* Parse "start-end perms offset dev inode" of each line of /proc/<pid>/maps
 * (raw reads into a stack buffer: this runs inside probes too). Self: the
 * dev and inode of the mapping holding addr; another pid: whether it maps
 * that dev and inode. */
static int maps_scan(const char *path, uintptr_t addr, char dev[16], unsigned long *ino)
{
	char buf[4096], line[256];
	size_t ll = 0;
	int fd = open(path, O_RDONLY | O_CLOEXEC), found = 0;
	ssize_t n;

	if (fd < 0)
		return -1;
	while (!found && (n = read(fd, buf, sizeof(buf))) > 0) {
		for (ssize_t i = 0; i < n && !found; i++) {
			if (buf[i] != '\n') {
				if (ll < sizeof(line) - 1)
					line[ll++] = buf[i];
				continue;
			}
			line[ll] = 0;
			ll = 0;
			char *p = line, *d;
			uintptr_t lo = strtoul(p, &p, 16), hi = strtoul(p + 1, &p, 16);
			for (int f = 0; f < 2 && *p; f++) {      /* perms, offset */
				while (*p == ' ')
					p++;
				while (*p && *p != ' ')
					p++;
			}
			while (*p == ' ')
				p++;
			d = p;
			while (*p && *p != ' ')
				p++;
			if (!*p)
				continue;
			*p++ = 0;
			unsigned long in = strtoul(p, NULL, 10);
			if (addr) {
				if (addr >= lo && addr < hi) {
					snprintf(dev, 16, "%s", d);
					*ino = in;
					found = 1;
				}
			} else if (in == *ino && !strcmp(d, dev)) {
				found = 1;
			}
		}
	}
	close(fd);
	return found;
}

/* A live owner that does not map the segment the lock is in cannot hold it:
 * the word is garbage (a loader wrote into the segment). Asked only after a
 * long wait (it reads /proc). */
static int owner_foreign(uint32_t word, shm_lock_t *l)
{
	char path[40], dev[16];
	unsigned long ino = 0;

	if (maps_scan("/proc/self/maps", (uintptr_t)l, dev, &ino) != 1 || !ino)
		return 0;
	snprintf(path, sizeof(path), "/proc/%u/maps", word & SHM_LOCK_TID_MASK);
	/* unreadable: not a process of this user (or one that made itself
	 * undumpable, which a map user does not) */
	return maps_scan(path, 0, dev, &ino) != 1;
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

/* SPDX-License-Identifier: MIT */
/*
 * Writing the code: a site's patch and unpatch in text_poke_bp's steps,
 * the quiesce of threads that may be stopped inside the bytes being
 * replaced, a site's turn from jump mode to int3 mode, and the same steps
 * for other rewriters (hook_text_replace).
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <linux/membarrier.h>
#include <sys/mman.h>
#include "internal.h"
#include "tasks.h"

int have_sync_core;

void sync_cores(void)
{
	if (have_sync_core &&
	    rsys(SYS_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED_SYNC_CORE, 0, 0, 0, 0, 0) == 0)
		return;
	pause_short(1000000);           /* let every core retire what it fetched */
}

/*
 * Threads stopped between the instructions the jmp overwrites (say, right
 * after a 1-byte `push %rbp`) would resume in the middle of the jmp. Once
 * byte 0 is int3 no thread can newly get there, so each thread that may be
 * there (running, or blocked in a syscall whose return is there) gets a
 * SIGTRAP queued with this request: its handler moves it to the same point
 * of the relocated copy.
 */
struct quiesce_req qreq;

/* May thread `tid` be stopped at user ip in (addr, addr+5)? */
static int may_be_inside(int tid, uint64_t addr)
{
	char path[64], buf[256];
	snprintf(path, sizeof(path), "/proc/self/task/%d/syscall", tid);
	int fd = (int)rsys(SYS_open, (long)path, O_RDONLY | O_CLOEXEC, 0, 0, 0, 0);
	if (fd < 0)
		return 1;
	long n = rsys(SYS_read, fd, (long)buf, sizeof(buf) - 1, 0, 0, 0);
	rsys(SYS_close, fd, 0, 0, 0, 0, 0);
	if (n <= 0)
		return 1;
	buf[n] = 0;
	if (!strncmp(buf, "running", 7))
		return 1;
	/* "nr args... sp pc": blocked; pc is the user ip it returns to */
	char *last = strrchr(buf, ' ');
	if (!last)
		return 1;
	uint64_t pc = strtoull(last + 1, NULL, 16);
	return pc > addr && pc < addr + 5;
}

struct quiesce_walk {
	struct hook_site *s;
	int self;
};

static void quiesce_pick(int tid, void *arg)
{
	struct quiesce_walk *w = arg;

	if (tid == w->self || qreq.n >= QUIESCE_MAX || !may_be_inside(tid, w->s->addr))
		return;
	qreq.tids[qreq.n] = tid;
	qreq.acked[qreq.n] = 0;
	qreq.n++;
}

static void quiesce(struct hook_site *s)
{
	struct quiesce_walk w = { .s = s, .self = (int)rsys(SYS_gettid, 0, 0, 0, 0, 0, 0) };
	int pid = (int)rsys(SYS_getpid, 0, 0, 0, 0, 0, 0);

	qreq.n = 0;
	if (rt_tasks_walk(quiesce_pick, &w))
		return;
	if (!qreq.n)
		return;
	__atomic_store_n(&qreq.active, 1, __ATOMIC_RELEASE);
	/* a queued SIGTRAP merges with one already pending (a trap): resend
	 * until each thread answered, for at most ~200 ms */
	for (int round = 0; round < 200; round++) {
		int left = 0;
		for (int i = 0; i < qreq.n; i++) {
			if (__atomic_load_n(&qreq.acked[i], __ATOMIC_ACQUIRE))
				continue;
			if (round % 20 == 0) {
				siginfo_t si;
				memset(&si, 0, sizeof(si));
				si.si_signo = SIGTRAP;
				si.si_code = SI_QUEUE;
				si.si_pid = pid;
				si.si_uid = getuid();
				si.si_value.sival_ptr = &qreq;
				if (rsys(SYS_rt_tgsigqueueinfo, pid, qreq.tids[i], SIGTRAP, (long)&si, 0, 0) == -ESRCH) {
					qreq.acked[i] = 1;
					continue;
				}
			}
			left++;
		}
		if (!left)
			break;
		pause_short(round < 10 ? 100000 : 1000000);
	}
	__atomic_store_n(&qreq.active, 0, __ATOMIC_RELEASE);
}

static void poke_byte(uint8_t *p, uint8_t v)
{
	__atomic_store_n(p, v, __ATOMIC_RELEASE);
}

/* text_poke_bp: int3 at byte 0, the tail, then byte 0. `patch` selects the
 * new bytes (jmp or int3) or the original ones. */
int site_write(struct hook_site *s, int patch)
{
	uint8_t *p = (uint8_t *)s->addr, want[5];
	uint64_t lo = s->addr & ~4095ull, hi = (s->addr + s->patch_len + 4095) & ~4095ull;
	int direct = rsys(SYS_mprotect, (long)lo, (long)(hi - lo), s->prot | PROT_WRITE | PROT_EXEC, 0, 0, 0) == 0;

	if (!direct && memfd < 0)
		return -EPERM;
	if (patch && s->mode == HOOK_MODE_JMP) {
		want[0] = 0xe9;
		put32(want + 1, (int64_t)((uint64_t)s->tramp - (s->addr + 5)));
	} else if (patch) {
		want[0] = 0xcc;
	} else {
		memcpy(want, s->orig, 5);
	}
#define PUT(off, src, len)                                                                              \
	do {                                                                                            \
		if (direct) {                                                                           \
			if ((len) == 1)                                                                 \
				poke_byte(p + (off), *(src));                                           \
			else                                                                            \
				memcpy(p + (off), (src), (len));                                        \
		} else {                                                                                \
			rsys(SYS_pwrite64, memfd, (long)(src), (len), (long)(s->addr + (off)), 0, 0);   \
		}                                                                                       \
	} while (0)
	if (s->patch_len == 1) {
		PUT(0, want, 1);
		sync_cores();
	} else {
		static const uint8_t int3 = 0xcc;
		PUT(0, &int3, 1);
		sync_cores();
		if (patch)
			quiesce(s);
		PUT(1, want + 1, 4);
		sync_cores();
		PUT(0, want, 1);
		sync_cores();
	}
#undef PUT
	if (direct)
		rsys(SYS_mprotect, (long)lo, (long)(hi - lo), s->prot, 0, 0, 0);
	return 0;
}

/* A jump-mode site turns into an int3 one because a probe was asked for
 * inside the bytes it displaces (threads through its trampoline would never
 * run that address). No hit is lost: byte 0 goes int3 (threads still
 * reaching it go to the trampoline), the mode flips, then the jmp's tail
 * is put back. */
int site_to_int3(struct hook_site *s)
{
	uint8_t *slot, len;
	int err = build_ool_slot(s, s->avail, &slot, &len);

	if (err)
		return err;
	uint64_t lo = s->addr & ~4095ull, hi = (s->addr + 5 + 4095) & ~4095ull;
	int direct = 0;
	if (s->patched) {
		direct = rsys(SYS_mprotect, (long)lo, (long)(hi - lo), s->prot | PROT_WRITE | PROT_EXEC, 0, 0, 0) == 0;
		if (!direct && memfd < 0)
			return -EPERM;
		static const uint8_t int3 = 0xcc;
		if (direct)
			__atomic_store_n((uint8_t *)s->addr, int3, __ATOMIC_RELEASE);
		else
			rsys(SYS_pwrite64, memfd, (long)&int3, 1, (long)s->addr, 0, 0);
		sync_cores();
	}
	s->reloc = slot;
	s->disp_len = len;
	s->patch_len = 1;
	__atomic_store_n(&s->mode, HOOK_MODE_INT3, __ATOMIC_RELEASE);
	if (s->patched) {
		if (direct)
			memcpy((uint8_t *)s->addr + 1, s->orig + 1, 4);
		else
			rsys(SYS_pwrite64, memfd, (long)(s->orig + 1), 4, (long)s->addr + 1, 0, 0);
		sync_cores();
		if (direct)
			rsys(SYS_mprotect, (long)lo, (long)(hi - lo), s->prot, 0, 0, 0);
	}
	return 0;
}

/* A 2-byte `jmp .` parks threads reaching addr while the rest is written
 * (text_poke_bp's steps with a spin for the int3: no trap handler needs to
 * know the site); one aligned 8-byte compare-and-swap when the bytes fit
 * in one. */
int hook_text_replace(uint64_t addr, const uint8_t *old, const uint8_t *new, size_t n, int prot)
{
	uint64_t lo = addr & ~4095ull, hi = (addr + n + 4095) & ~4095ull;
	size_t avail = n;
	int err = 0;

	if (n < 2 || n > 8 || (addr & 63) == 63)
		return -EINVAL;
	pthread_mutex_lock(&lock);
	if ((err = init_locked()) || (prot < 0 && (err = mapping_of(addr, &prot, &avail))) ||
	    (err = avail < n ? -EFAULT : 0))
		goto out;
	if (memcmp((void *)addr, old, n)) {
		err = -EAGAIN;
		goto out;
	}
	if (rsys(SYS_mprotect, (long)lo, (long)(hi - lo), prot | PROT_WRITE | PROT_EXEC, 0, 0, 0)) {
		err = -EPERM;
		goto out;
	}
	if ((addr & 7) + n <= 8) {
		uint64_t *w = (uint64_t *)(addr & ~7ull), cur = __atomic_load_n(w, __ATOMIC_ACQUIRE), next = cur;
		memcpy((uint8_t *)&next + (addr & 7), new, n);
		if (!__atomic_compare_exchange_n(w, &cur, next, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
			err = -EAGAIN;
	} else {
		uint16_t spin = 0xfeeb, head;
		memcpy(&head, new, 2);
		__atomic_store_n((uint16_t *)addr, spin, __ATOMIC_RELEASE);
		sync_cores();
		memcpy((uint8_t *)addr + 2, new + 2, n - 2);
		sync_cores();
		__atomic_store_n((uint16_t *)addr, head, __ATOMIC_RELEASE);
	}
	rsys(SYS_mprotect, (long)lo, (long)(hi - lo), prot, 0, 0, 0);
out:
	pthread_mutex_unlock(&lock);
	return err;
}

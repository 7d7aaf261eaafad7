/* SPDX-License-Identifier: MIT */
/*
 * The CPU a program run owns. The kernel runs programs with migration
 * disabled, so a program's read-modify-write of its CPU's slot of a per-CPU
 * map (bpftrace's count(): lookup, add, store) cannot interleave with another
 * run on that CPU. In user space a thread can be preempted or migrated in the
 * middle of it; so a run that touches per-CPU values claims one CPU slot, in
 * a table shared by all the user's processes, for the whole run: the slot of
 * the CPU it is on if free, another free one otherwise. A claim left by a
 * thread that died is taken over, as shm_lock does.
 */
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <unistd.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include "common.h"
#include "maps/map.h"
#include "run_cpu.h"
#include "rawsys.h"
#include "rt.h"

#define RUN_CPU_SLOTS 1024

struct run_cpu_slot {
	uint32_t owner;                 /* tid of the claiming thread, 0 = free */
	char pad[60];                   /* one cache line a slot */
};


static struct run_cpu_slot *slots;
static struct run_cpu_slot local_slots[RUN_CPU_SLOTS];   /* no runtime dir */
static uint32_t nr_slots;

/* Raw syscalls: the follower prepares this before a program is applied
 * (bpf_rt_cpu_prepare), but a run elsewhere may be the first. */
static void open_slots(void)
{
	char dir[512], path[600];
	struct run_cpu_slot *s = local_slots;
	uint32_t n = shm_nr_possible_cpus();
	size_t len = sizeof(struct run_cpu_slot) * RUN_CPU_SLOTS;

	/* no runtime directory (the server): a process-local table */
	if (!rt_runtime_dir(dir, sizeof(dir)) &&
	    !bpf_rt_path_join(path, sizeof(path), dir, "cpus")) {
		int fd = (int)BPF_RT_SYS(SYS_openat, AT_FDCWD, path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
		if (fd >= 0) {
			struct stat st;
			if (!BPF_RT_SYS(SYS_fstat, fd, &st) &&
			    ((size_t)st.st_size >= len || !BPF_RT_SYS(SYS_ftruncate, fd, len))) {
				void *m = bpf_rt_mmap(len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
				if (m)
					s = m;
			}
			BPF_RT_SYS(SYS_close, fd);
		}
	}
	struct run_cpu_slot *none = NULL;
	if (!__atomic_compare_exchange_n(&slots, &none, s, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE) &&
	    s != local_slots)
		BPF_RT_SYS(SYS_munmap, s, len);
	__atomic_store_n(&nr_slots, n < RUN_CPU_SLOTS ? n : RUN_CPU_SLOTS, __ATOMIC_RELEASE);
}

void bpf_rt_cpu_prepare(void)
{
	if (!__atomic_load_n(&nr_slots, __ATOMIC_ACQUIRE))
		open_slots();
}

static int owner_dead(uint32_t tid)
{
	int saved = errno, dead = kill((pid_t)tid, 0) < 0 && errno == ESRCH;

	errno = saved;
	return dead;
}

void bpf_rt_cpu_claim(void)
{
	uint32_t me = shm_self_tid(), n;
	int c = sched_getcpu();

	bpf_rt_cpu_prepare();
	n = nr_slots;
	c = c < 0 ? 0 : c % (int)n;
	for (unsigned round = 0;; round++) {
		for (uint32_t k = 0; k < n; k++) {
			uint32_t s = ((uint32_t)c + k) % n, cur = 0;
			if (__atomic_compare_exchange_n(&slots[s].owner, &cur, me, 0, __ATOMIC_ACQUIRE,
							__ATOMIC_RELAXED) ||
			    (round && owner_dead(cur) &&
			     __atomic_compare_exchange_n(&slots[s].owner, &cur, me, 0, __ATOMIC_ACQUIRE,
							 __ATOMIC_RELAXED))) {
				shm_run_cpu = (int)s;
				return;
			}
		}
		/* every slot is held by a run that is not on a CPU now */
		sched_yield();
	}
}

void bpf_rt_cpu_release(void)
{
	int s = shm_run_cpu;

	shm_run_cpu = -1;
	__atomic_store_n(&slots[s].owner, 0, __ATOMIC_RELEASE);
}

/* SPDX-License-Identifier: MIT */
/*
 * Helpers about time, the current task and the running program: what the
 * kernel takes from `current` comes from the calling thread.
 */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include "maps/map.h"
#include "helpers.h"
#include "start.h"

#define PTR(r) ((void *)(uintptr_t)(r))

/* ---- time ---- */

static inline u64 clock_ns(clockid_t c)
{
	struct timespec ts;

	clock_gettime(c, &ts);
	return (u64)ts.tv_sec * 1000000000ull + (u64)ts.tv_nsec;
}

u64 bpf_ktime_get_ns(u64 r1, u64 r2, u64 r3, u64 r4, u64 r5)
{
	return clock_ns(CLOCK_MONOTONIC);
}

u64 bpf_ktime_get_boot_ns(u64 r1, u64 r2, u64 r3, u64 r4, u64 r5)
{
	return clock_ns(CLOCK_BOOTTIME);
}

u64 bpf_ktime_get_coarse_ns(u64 r1, u64 r2, u64 r3, u64 r4, u64 r5)
{
	return clock_ns(CLOCK_MONOTONIC_COARSE);
}

u64 bpf_ktime_get_tai_ns(u64 r1, u64 r2, u64 r3, u64 r4, u64 r5)
{
	return clock_ns(CLOCK_TAI);
}

/* get_jiffies_64(): jiffies at CONFIG_HZ=250 (Debian's) since boot, plus
 * INITIAL_JIFFIES (-300 s worth, as a u32: the kernel starts jiffies 5
 * minutes before the 32-bit wrap to catch wrap bugs early). */
u64 bpf_jiffies64(u64 r1, u64 r2, u64 r3, u64 r4, u64 r5)
{
	const uint64_t hz = 250, initial = (uint64_t)(uint32_t)(-300 * 250);

	return clock_ns(CLOCK_BOOTTIME) / (1000000000ull / hz) + initial;
}

/* ---- this task; caches reset in a forked child ---- */

static unsigned fork_gen = 1;
static __thread unsigned tid_gen;
static __thread uint32_t my_tid, my_tgid;
static __thread unsigned comm_gen, comm_epoch;
static __thread char my_comm[16];
unsigned bpf_rt_comm_epoch;

/* In a forked child: by glibc's atfork handlers, and first thing by the
 * syscall tracepoints' handler, which fires the child's sys_exit of the
 * fork before glibc's handlers run. */
void bpf_rt_forked(void)
{
	__atomic_add_fetch(&fork_gen, 1, __ATOMIC_RELAXED);
	bpf_rt_current_task_forked();
}

unsigned bpf_rt_fork_gen(void)
{
	return __atomic_load_n(&fork_gen, __ATOMIC_RELAXED);
}

/* At start, before uprobe_init, which may run programs (start/preload.c) */
void task_helpers_init(void)
{
	pthread_atfork(NULL, NULL, bpf_rt_forked);
}

static inline void ids(void)
{
	unsigned g = __atomic_load_n(&fork_gen, __ATOMIC_RELAXED);

	if (__builtin_expect(tid_gen != g, 0)) {
		my_tid = (uint32_t)syscall(SYS_gettid);
		my_tgid = (uint32_t)getpid();
		tid_gen = g;
	}
}

/* The thread's comm, read (prctl) once per thread and again after a fork or
 * a rename (bpf_rt_comm_epoch), as a probe hit must stay cheap. */
const char *bpf_rt_comm(void)
{
	unsigned g = __atomic_load_n(&fork_gen, __ATOMIC_RELAXED);
	unsigned e = __atomic_load_n(&bpf_rt_comm_epoch, __ATOMIC_RELAXED);

	if (__builtin_expect(comm_gen != g || comm_epoch != e || !my_comm[0], 0)) {
		memset(my_comm, 0, sizeof(my_comm));
		prctl(PR_GET_NAME, my_comm, 0, 0, 0);
		comm_gen = g;
		comm_epoch = e;
	}
	return my_comm;
}

u64 bpf_get_current_pid_tgid(u64 r1, u64 r2, u64 r3, u64 r4, u64 r5)
{
	ids();
	return (u64)my_tgid << 32 | my_tid;
}

/* real uid and gid, as current_uid_gid() */
u64 bpf_get_current_uid_gid(u64 r1, u64 r2, u64 r3, u64 r4, u64 r5)
{
	return (u64)(uint32_t)getgid() << 32 | (uint32_t)getuid();
}

/* bpf_get_current_comm(buf, size): strscpy_pad of the thread's comm. */
u64 bpf_get_current_comm(u64 buf, u64 size, u64 r3, u64 r4, u64 r5)
{
	const char *comm = bpf_rt_comm();
	char *d = PTR(buf);
	uint32_t sz = (uint32_t)size;
	size_t n;

	if (!sz)
		return 0;
	n = strnlen(comm, 15);
	if (n > sz - 1)
		n = sz - 1;
	memcpy(d, comm, n);
	memset(d + n, 0, sz - n);
	return 0;
}

u64 bpf_get_smp_processor_id(u64 r1, u64 r2, u64 r3, u64 r4, u64 r5)
{
	/* the slot a run on per-CPU maps holds (agent/run_cpu.c) */
	int c = shm_run_cpu >= 0 ? shm_run_cpu : sched_getcpu();

	return c < 0 ? 0 : (u64)c;
}

u64 bpf_get_numa_node_id(u64 r1, u64 r2, u64 r3, u64 r4, u64 r5)
{
	return 0;
}

/* A per-thread xorshift128+ seeded from getrandom (bpf_user_rnd_u32 is a
 * per-CPU prandom state). */
static __thread uint64_t rnd[2];

u64 bpf_get_prandom_u32(u64 r1, u64 r2, u64 r3, u64 r4, u64 r5)
{
	uint64_t s1 = rnd[0], s0 = rnd[1];

	if (__builtin_expect(!(s0 | s1), 0)) {
		if (getrandom(rnd, sizeof(rnd), GRND_NONBLOCK) != sizeof(rnd) || !(rnd[0] | rnd[1])) {
			rnd[0] = clock_ns(CLOCK_MONOTONIC) ^ 0x9e3779b97f4a7c15ull;
			rnd[1] = (uint64_t)(uintptr_t)&rnd ^ 0xbf58476d1ce4e5b9ull;
		}
		s1 = rnd[0];
		s0 = rnd[1];
	}
	rnd[0] = s0;
	s1 ^= s1 << 23;
	rnd[1] = s1 ^ s0 ^ (s1 >> 17) ^ (s0 >> 26);
	return (uint32_t)((rnd[1] + s0) >> 32);
}

/* ---- signals ---- */

/* bpf_send_signal(sig): to the current process (thread group). */
u64 bpf_send_signal(u64 sig, u64 r2, u64 r3, u64 r4, u64 r5)
{
	if ((uint32_t)sig > 64)   /* !valid_signal() */
		return bpf_rt_err(EINVAL);
	ids();
	return syscall(SYS_kill, (pid_t)my_tgid, (int)sig) ? bpf_rt_err(errno) : 0;
}

/* bpf_send_signal_thread(sig): to the current thread. */
u64 bpf_send_signal_thread(u64 sig, u64 r2, u64 r3, u64 r4, u64 r5)
{
	if ((uint32_t)sig > 64)
		return bpf_rt_err(EINVAL);
	ids();
	return syscall(SYS_tgkill, (pid_t)my_tgid, (pid_t)my_tid, (int)sig) ? bpf_rt_err(errno) : 0;
}

/* bpf_get_ns_current_pid_tgid(dev, ino, nsdata, size): pid and tgid as seen
 * from the pid namespace (dev, ino) if it is the current one; another
 * namespace is -EINVAL, as a bad size (the kernel's ns_match failing). */
struct bpf_pidns_info_ { uint32_t pid, tgid; };

u64 bpf_get_ns_current_pid_tgid(u64 dev, u64 ino, u64 nsdata, u64 size, u64 r5)
{
	static unsigned ns_gen;
	static uint64_t ns_dev, ns_ino;
	struct bpf_pidns_info_ *out = PTR(nsdata);
	int err = -EINVAL;

	if ((uint32_t)size != sizeof(*out))
		goto clear;
	if ((u64)(uint32_t)dev != dev)
		goto clear;
	unsigned g = __atomic_load_n(&fork_gen, __ATOMIC_RELAXED);
	if (__atomic_load_n(&ns_gen, __ATOMIC_ACQUIRE) != g) {
		struct stat st;
		if (stat("/proc/self/ns/pid", &st)) {
			err = -ENOENT;
			goto clear;
		}
		ns_dev = st.st_dev;
		ns_ino = st.st_ino;
		__atomic_store_n(&ns_gen, g, __ATOMIC_RELEASE);
	}
	if (ns_dev != dev || ns_ino != ino)
		goto clear;
	ids();
	out->pid = my_tid;
	out->tgid = my_tgid;
	return 0;
clear:
	memset(out, 0, (uint32_t)size);
	return (u64)(int64_t)err;
}

/* ---- the running program ---- */

u64 bpf_get_func_ip(u64 r1, u64 r2, u64 r3, u64 r4, u64 r5)
{
	const struct bpf_run_ctx *rc = bpf_cur_run_ctx;

	return rc ? rc->func_ip : 0;
}

u64 bpf_get_attach_cookie(u64 r1, u64 r2, u64 r3, u64 r4, u64 r5)
{
	const struct bpf_run_ctx *rc = bpf_cur_run_ctx;

	return rc ? rc->bpf_cookie : 0;
}

__thread struct bpf_rt_override bpf_rt_override;

/* bpf_override_return(ctx, rc): recorded for whoever ran the program (a
 * uprobe's entry skips the function, a syscall's dispatch skips the
 * syscall); the kernel's helper writes the registers at once, so a later
 * fault of the same run does not take it back. Always 0, as there. */
u64 bpf_override_return(u64 ctx, u64 rc, u64 r3, u64 r4, u64 r5)
{
	bpf_rt_override.rc = rc;
	bpf_rt_override.set = 1;
	return 0;
}

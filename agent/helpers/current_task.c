/* SPDX-License-Identifier: MIT */
/*
 * bpf_get_current_task() / bpf_get_current_task_btf(): the address of a
 * `struct task_struct` in this process's memory, laid out as the running
 * kernel's (agent/task_layout.h: the offsets the server took from
 * /sys/kernel/btf/vmlinux, read once from $RUNTIME_DIR/task_layout), so the
 * offsets a loader resolved by CO-RE or from BTF (bpftrace's curtask) find
 * what the kernel's task would hold for the calling thread:
 *
 *   task_struct   pid (tid), tgid, comm, flags, start_time, start_boottime;
 *                 group_leader -> the thread-group leader's task (the
 *                 leader thread's own), real_parent/parent -> the parent
 *                 process's task (pid = tgid = getppid(), comm, flags and
 *                 start time from /proc/PPID/stat, group_leader itself, its
 *                 other pointers NULL), real_cred/cred -> a struct cred,
 *                 nsproxy -> namespaces with their inums, mm/active_mm ->
 *                 an mm_struct with the code/data/brk/stack/arg/env bounds
 *   cred          uid, gid, suid, sgid, euid, egid, fsuid, fsgid
 *
 * Everything else is 0, so a program following another pointer reads NULL
 * (-EFAULT from a probe read, as the kernel gives for a bad address).
 * flags and the start times are /proc/.../stat's (flags is the kernel's own
 * task->flags; the start times have its clock-tick resolution).
 *
 * What lives where: the thread-group leader's task, the parent's, the cred,
 * nsproxy, namespaces and mm are per process (one mapping, made again in a
 * forked child); each other thread has its own task, freed at its exit.
 * What can change: the comm after prctl(PR_SET_NAME)/pthread_setname_np()
 * (interposed by libbpf_shim/creds.c, which bumps bpf_rt_comm_epoch)
 * (interposed here; a write to /proc/self/task/N/comm is not seen), read
 * again at the next bpf_get_current_task(); the credentials and the parent
 * (reparenting), read again when a probe read touches the cred or the
 * parent's task (bpf_rt_task_watch in the probe reads), and all of it at
 * each bpf_get_current_task_btf(), whose task programs read directly.
 * Namespaces (setns, unshare) and the parent's own comm are read once.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include "helpers.h"
#include "rt.h"
#include "task_layout.h"
#include "rawsys.h"
#include "start.h"


static struct task_layout L;
static int layout_state;            /* 0 not read yet, 1 usable, -1 absent */
static uint64_t layout_retry_ns;

uintptr_t bpf_rt_task_watch_lo, bpf_rt_task_watch_hi;

static uint64_t now_ns(clockid_t c)
{
	struct timespec ts;

	clock_gettime(c, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static int layout_ok(void)
{
	return L.magic == TASK_LAYOUT_MAGIC && L.version == TASK_LAYOUT_VERSION && L.nstructs == TLS_NR &&
	       L.nfields == TLF_NR && L.struct_size[TLS_task_struct];
}

/* The server writes the file within a fraction of a second of starting:
 * the first call that needs it waits up to 2 s (`wait`), later tries (one a
 * second) do not. Also read, without waiting, when the process starts:
 * a process that changes its euid later can no longer open the runtime
 * directory (mode 0700). */
static void layout_load(int wait)
{
	char dir[4096], path[4200];
	uint64_t now = now_ns(CLOCK_MONOTONIC);
	int tries = wait && !layout_state ? 200 : 1;

	if (layout_state == 1 || (layout_state < 0 && now < layout_retry_ns))
		return;
	if (rt_runtime_dir(dir, sizeof(dir)) ||
	    bpf_rt_path_join(path, sizeof(path), dir, "task_layout"))
		goto fail;
	for (int i = 0; i < tries; i++) {
		/* raw syscalls: a probe's first call may be the one that reads it */
		long fd = BPF_RT_SYS(SYS_openat, AT_FDCWD, path, O_RDONLY | O_CLOEXEC);
		if (fd >= 0) {
			long n = BPF_RT_SYS(SYS_read, fd, &L, sizeof(L));
			BPF_RT_SYS(SYS_close, fd);
			if (n == (long)sizeof(L) && layout_ok()) {
				layout_state = 1;
				return;
			}
			break;
		}
		if (fd != -ENOENT)
			break;
		if (i + 1 < tries)
			nanosleep(&(struct timespec){ .tv_nsec = 10000000 }, NULL);
	}
fail:
	if (wait) {
		layout_state = -1;
		layout_retry_ns = now + 1000000000ull;
	}
}

#ifndef BPFSHIM_CORE_ONLY
/* after uprobe_init (agent/uprobe.c), which may start the server */
void layout_early(void)
{
	if (rt_interposing()) {
		SUD_INTERNAL_BEGIN();   /* the runtime's syscalls, not the application's */
		layout_load(0);
		SUD_INTERNAL_END();
	}
}
#endif

/* obj->field = value, when the kernel has the field with this size */
static void put(char *obj, int f, const void *v, uint32_t n)
{
	if (obj && L.field[f].off >= 0 && L.field[f].size == n)
		memcpy(obj + L.field[f].off, v, n);
}
#define PUT(obj, s, m, v)                                          \
	do {                                                       \
		__typeof__(v) v_ = (v);                            \
		put(obj, TLF_##s##_##m, &v_, sizeof(v_));          \
	} while (0)

/* ---- /proc/PID[/task/TID]/stat ---- */

enum { ST_PPID = 4, ST_FLAGS = 9, ST_START = 22, ST_STARTCODE = 26, ST_ENDCODE = 27, ST_STARTSTACK = 28,
       ST_START_DATA = 45, ST_END_DATA, ST_START_BRK, ST_ARG_START, ST_ARG_END, ST_ENV_START, ST_ENV_END,
       ST_NR };

struct pstat {
	char comm[16];
	uint64_t f[ST_NR];     /* by field number (proc(5)) */
};

static int read_file(const char *path, char *buf, size_t n)
{
	long r = bpf_rt_read_file(path, buf, n);

	return r < 0 ? -1 : (int)r;
}

static int read_stat(const char *path, struct pstat *st)
{
	char buf[1024], *p, *open_, *close_;

	memset(st, 0, sizeof(*st));
	if (read_file(path, buf, sizeof(buf)) < 0 || !(open_ = strchr(buf, '(')) || !(close_ = strrchr(buf, ')')))
		return -1;
	size_t n = (size_t)(close_ - open_ - 1);
	memcpy(st->comm, open_ + 1, n < 15 ? n : 15);
	p = close_ + 1;
	for (int k = 3; k < ST_NR && *p; k++) {   /* field 3, the state, is a letter: 0 */
		while (*p == ' ')
			p++;
		st->f[k] = strtoull(p, NULL, 10);
		while (*p && *p != ' ')
			p++;
	}
	return 0;
}

/* ---- the process's objects ---- */

static pthread_mutex_t proc_mu = PTHREAD_MUTEX_INITIALIZER;
static unsigned proc_gen, proc_epoch;
static char *proc_mem;
static size_t proc_len, task_len;
static char *leader, *parent, *cred, *nsproxy, *mm;
static uint32_t my_tgid_, ppid_;

static const struct {
	int tls, nsproxy_field, ns_field;
	const char *name;       /* /proc/self/ns/NAME */
} NS[] = {
	{ TLS_uts_namespace, TLF_nsproxy_uts_ns, TLF_uts_namespace_ns, "uts" },
	{ TLS_ipc_namespace, TLF_nsproxy_ipc_ns, TLF_ipc_namespace_ns, "ipc" },
	{ TLS_mnt_namespace, TLF_nsproxy_mnt_ns, TLF_mnt_namespace_ns, "mnt" },
	{ TLS_pid_namespace, TLF_nsproxy_pid_ns_for_children, TLF_pid_namespace_ns, "pid_for_children" },
	{ TLS_net, TLF_nsproxy_net_ns, TLF_net_ns, "net" },
	{ TLS_cgroup_namespace, TLF_nsproxy_cgroup_ns, TLF_cgroup_namespace_ns, "cgroup" },
	{ TLS_time_namespace, TLF_nsproxy_time_ns, TLF_time_namespace_ns, "time" },
	{ TLS_time_namespace, TLF_nsproxy_time_ns_for_children, TLF_time_namespace_ns, "time_for_children" },
};

static size_t round16(size_t n)
{
	return (n + 15) & ~(size_t)15;
}

/* A task's own fields from its stat file; the pointers of a task of this
 * process (not of the parent's). */
static void fill_task(char *t, uint32_t pid, uint32_t tgid, const char *stat_path, int ours)
{
	struct pstat st;
	uint64_t tick_ns = 1000000000ull / (uint64_t)sysconf(_SC_CLK_TCK);

	read_stat(stat_path, &st);
	PUT(t, task_struct, pid, pid);
	PUT(t, task_struct, tgid, tgid);
	put(t, TLF_task_struct_comm, st.comm, 16);
	PUT(t, task_struct, flags, (uint32_t)st.f[ST_FLAGS]);
	uint64_t boot = st.f[ST_START] * tick_ns;
	/* start_time is CLOCK_MONOTONIC's, start_boottime CLOCK_BOOTTIME's */
	int64_t asleep = (int64_t)(now_ns(CLOCK_BOOTTIME) - now_ns(CLOCK_MONOTONIC));   /* may read < 0 */
	if (asleep < 0)
		asleep = 0;
	PUT(t, task_struct, start_boottime, boot);
	PUT(t, task_struct, start_time, boot > (uint64_t)asleep ? boot - (uint64_t)asleep : 0);
	if (!ours) {
		PUT(t, task_struct, group_leader, (uint64_t)(uintptr_t)t);
		return;
	}
	PUT(t, task_struct, real_parent, (uint64_t)(uintptr_t)parent);
	PUT(t, task_struct, parent, (uint64_t)(uintptr_t)parent);
	PUT(t, task_struct, group_leader, (uint64_t)(uintptr_t)leader);
	PUT(t, task_struct, real_cred, (uint64_t)(uintptr_t)cred);
	PUT(t, task_struct, cred, (uint64_t)(uintptr_t)cred);
	PUT(t, task_struct, nsproxy, (uint64_t)(uintptr_t)nsproxy);
	PUT(t, task_struct, mm, (uint64_t)(uintptr_t)mm);
	PUT(t, task_struct, active_mm, (uint64_t)(uintptr_t)mm);
}

static void fill_parent(uint32_t ppid)
{
	char path[64];

	memset(parent, 0, task_len);
	snprintf(path, sizeof(path), "/proc/%u/stat", ppid);
	fill_task(parent, ppid, ppid, path, 0);
	__atomic_store_n(&ppid_, ppid, __ATOMIC_RELEASE);
}

static void fill_cred(void)
{
	unsigned r, e, s, rg, eg, sg;

	if (syscall(SYS_getresuid, &r, &e, &s) || syscall(SYS_getresgid, &rg, &eg, &sg))
		return;
	/* an invalid id changes nothing and returns the current one */
	uint32_t fsu = (uint32_t)syscall(SYS_setfsuid, -1), fsg = (uint32_t)syscall(SYS_setfsgid, -1);
	PUT(cred, cred, uid, r);
	PUT(cred, cred, euid, e);
	PUT(cred, cred, suid, s);
	PUT(cred, cred, fsuid, fsu);
	PUT(cred, cred, gid, rg);
	PUT(cred, cred, egid, eg);
	PUT(cred, cred, sgid, sg);
	PUT(cred, cred, fsgid, fsg);
}

static void fill_mm(void)
{
	static const struct { int field, st; } M[] = {
		{ TLF_mm_struct_start_code, ST_STARTCODE }, { TLF_mm_struct_end_code, ST_ENDCODE },
		{ TLF_mm_struct_start_data, ST_START_DATA }, { TLF_mm_struct_end_data, ST_END_DATA },
		{ TLF_mm_struct_start_brk, ST_START_BRK }, { TLF_mm_struct_start_stack, ST_STARTSTACK },
		{ TLF_mm_struct_arg_start, ST_ARG_START }, { TLF_mm_struct_arg_end, ST_ARG_END },
		{ TLF_mm_struct_env_start, ST_ENV_START }, { TLF_mm_struct_env_end, ST_ENV_END },
	};
	struct pstat st;

	if (read_stat("/proc/self/stat", &st))
		return;
	for (size_t i = 0; i < sizeof(M) / sizeof(M[0]); i++)
		put(mm, M[i].field, &st.f[M[i].st], 8);
}

/* Under proc_mu: the process's objects for fork generation g. The old ones
 * (a forked child's copy of its parent's) are unmapped: the child has one
 * thread, the caller. */
static void proc_setup(unsigned g)
{
	size_t len;
	char *p;

	if (proc_mem)
		munmap(proc_mem, proc_len);
	proc_mem = NULL;
	bpf_rt_task_watch_lo = bpf_rt_task_watch_hi = 0;
	task_len = round16(L.struct_size[TLS_task_struct]);
	len = 2 * task_len + round16(L.struct_size[TLS_cred]) + round16(L.struct_size[TLS_nsproxy]) +
	      round16(L.struct_size[TLS_mm_struct]);
	for (size_t i = 0; i < sizeof(NS) / sizeof(NS[0]); i++)
		len += round16(L.struct_size[NS[i].tls]);
	p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		return;
	proc_mem = p;
	proc_len = len;
	leader = p;
	p += task_len;
	nsproxy = p;
	p += round16(L.struct_size[TLS_nsproxy]);
	mm = L.struct_size[TLS_mm_struct] ? p : NULL;
	p += round16(L.struct_size[TLS_mm_struct]);
	for (size_t i = 0; i < sizeof(NS) / sizeof(NS[0]); i++) {
		struct stat sb;
		char path[64];
		uint32_t ino;

		if (!L.struct_size[NS[i].tls] || L.field[NS[i].ns_field].off < 0 || L.field[TLF_ns_common_inum].off < 0)
			continue;
		snprintf(path, sizeof(path), "/proc/self/ns/%s", NS[i].name);
		if (stat(path, &sb))
			continue;
		ino = (uint32_t)sb.st_ino;
		put(nsproxy, NS[i].nsproxy_field, &(uint64_t){ (uint64_t)(uintptr_t)p }, 8);
		put(p + L.field[NS[i].ns_field].off, TLF_ns_common_inum, &ino, 4);
		p += round16(L.struct_size[NS[i].tls]);
	}
	/* the parts probe reads refresh, together: bpf_rt_task_watch */
	cred = p;
	p += round16(L.struct_size[TLS_cred]);
	parent = p;
	my_tgid_ = (uint32_t)getpid();
	fill_cred();
	fill_mm();
	fill_parent((uint32_t)getppid());
	fill_task(leader, my_tgid_, my_tgid_, "/proc/self/stat", 1);
	bpf_rt_task_watch_lo = (uintptr_t)cred;
	bpf_rt_task_watch_hi = (uintptr_t)parent + task_len;
	proc_epoch = __atomic_load_n(&bpf_rt_comm_epoch, __ATOMIC_RELAXED);
	__atomic_store_n(&proc_gen, g, __ATOMIC_RELEASE);
}

void bpf_rt_current_task_forked(void)
{
	/* the child has only the thread that forked: nothing holds it */
	pthread_mutex_t init = PTHREAD_MUTEX_INITIALIZER;

	proc_mu = init;
}

/* The follower, before it applies a program: the first current_task()
 * of a probe then finds the layout read (a probe never waits for it). */
void bpf_rt_task_prepare(void)
{
	if (__atomic_load_n(&layout_state, __ATOMIC_ACQUIRE) == 1)
		return;
	pthread_mutex_lock(&proc_mu);
	layout_load(1);
	pthread_mutex_unlock(&proc_mu);
}

/* ---- the calling thread ---- */

static __thread char *my_task, *my_block;   /* my_block: a task of our own (not the leader) */
static __thread unsigned my_gen, my_epoch;
static pthread_key_t block_key;

static void block_free(void *b)
{
	if (b && b == my_block) {
		SUD_INTERNAL_BEGIN();   /* at thread exit, the runtime's, not the thread's */
		my_task = my_block = NULL;
		my_gen = 0;
		munmap(b, task_len);
		SUD_INTERNAL_END();
	}
}

/* At load: a first call may be inside fork() or malloc (rawsys.h bpf_rt_setspecific). */
void block_key_init(void)
{
	pthread_key_create(&block_key, block_free);
}

static void thread_setup(unsigned g)
{
	uint32_t tid = (uint32_t)syscall(SYS_gettid);

	if (my_block) {
		/* a forked child's copy of the parent thread's task */
		munmap(my_block, task_len);
		my_block = NULL;
	}
	my_task = NULL;
	my_gen = g;
	pthread_mutex_lock(&proc_mu);
	layout_load(0);   /* a probe does not wait: bpf_rt_task_prepare() did */
	if (layout_state == 1 && __atomic_load_n(&proc_gen, __ATOMIC_ACQUIRE) != g)
		proc_setup(g);
	pthread_mutex_unlock(&proc_mu);
	if (layout_state != 1 || !proc_mem) {
		my_gen = 0;     /* again at the next call (the layout may come) */
		return;
	}
	if (tid == my_tgid_) {
		my_task = leader;
		return;
	}
	char *b = mmap(NULL, task_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (b == MAP_FAILED)
		return;
	char path[64];
	snprintf(path, sizeof(path), "/proc/self/task/%u/stat", tid);
	fill_task(b, tid, my_tgid_, path, 1);
	my_task = my_block = b;
	bpf_rt_setspecific(block_key, b);
}

/* After a rename: the thread's comm, and the leader's (/proc/self/comm). */
static void comm_refresh(unsigned e)
{
	char buf[32];

	my_epoch = e;
	put(my_task, TLF_task_struct_comm, bpf_rt_comm(), 16);
	if (my_task == leader || __atomic_load_n(&proc_epoch, __ATOMIC_RELAXED) == e)
		return;
	int n = read_file("/proc/self/comm", buf, sizeof(buf));
	if (n > 0) {
		char comm[16] = { 0 };
		n -= buf[n - 1] == '\n';
		memcpy(comm, buf, n < 15 ? n : 15);
		put(leader, TLF_task_struct_comm, comm, 16);
	}
	__atomic_store_n(&proc_epoch, e, __ATOMIC_RELAXED);
}

static char *current_task(void)
{
	unsigned g = bpf_rt_fork_gen();
	unsigned e = __atomic_load_n(&bpf_rt_comm_epoch, __ATOMIC_RELAXED);

	if (__builtin_expect(my_gen != g, 0)) {
		thread_setup(g);
		my_epoch = e - 1;
	}
	if (__builtin_expect(my_epoch != e && my_task, 0))
		comm_refresh(e);
	return my_task;
}

/* A probe read touches [addr, addr + n) of the watched part (the cred and
 * the parent's task): read them again. */
void bpf_rt_task_touch(uintptr_t addr, size_t n)
{
	uintptr_t c = (uintptr_t)cred, p = (uintptr_t)parent;

	if (addr < p && addr + n > c)
		fill_cred();
	if (addr + n > p && addr < p + task_len) {
		uint32_t ppid = (uint32_t)syscall(SYS_getppid);
		if (ppid != __atomic_load_n(&ppid_, __ATOMIC_ACQUIRE))
			fill_parent(ppid);
	}
}

/* The thread is exiting (sched:sched_process_exit, agent/syscall/events.c):
 * task->exit_code as do_exit() sets it. */
void bpf_rt_task_exiting(int exit_code)
{
	char *t = current_task();

	if (t)
		PUT(t, task_struct, exit_code, (int32_t)exit_code);
}

/* The task's address, or 0 when the server published no layout (no kernel
 * BTF): what the kernel never returns, and programs check. */
u64 bpf_get_current_task(u64 r1, u64 r2, u64 r3, u64 r4, u64 r5)
{
	return (u64)(uintptr_t)current_task();
}

/* The same task, which the program reads directly (no probe read to watch):
 * what can change is read again here. */
u64 bpf_get_current_task_btf(u64 r1, u64 r2, u64 r3, u64 r4, u64 r5)
{
	char *t = current_task();

	if (t)
		bpf_rt_task_touch(bpf_rt_task_watch_lo, bpf_rt_task_watch_hi - bpf_rt_task_watch_lo);
	return (u64)(uintptr_t)t;
}

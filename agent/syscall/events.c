/* SPDX-License-Identifier: MIT */
/*
 * The records of the events found on a syscall's path (internal.h), as the
 * kernel fills them for sched:sched_process_exit/_fork/_exec and
 * signal:signal_generate; trace.c decides when they fire.
 */
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/auxv.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include "bpf_rt.h"
#include "common.h"
#include "internal.h"
#include "helpers/helpers.h"
#include "rawsys.h"

/* A tracepoint record with __data_loc strings: the fixed part, then each
 * string where its u32 at `loc` says (offset | length << 16, with the NUL). */
static size_t put_data_loc(char *rec, size_t end, size_t loc, const char *str, size_t cap)
{
	size_t n = strnlen(str, cap - end - 1) + 1;
	uint32_t v = (uint32_t)end | (uint32_t)n << 16;

	memcpy(rec + loc, &v, 4);
	memcpy(rec + end, str, n - 1);
	rec[end + n - 1] = 0;
	return end + n;
}

int group_dies(long nr)
{
	char buf[1024];
	int threads = 1;

	if (nr == SYS_exit_group)
		return 1;
	long n = bpf_rt_read_file("/proc/self/status", buf, sizeof(buf));
	const char *t = n > 0 ? strstr(buf, "\nThreads:") : NULL;
	if (t)
		threads = atoi(t + 9);
	return threads <= 1;
}

/* sched:sched_process_exit as do_exit() fires it for the calling thread:
 * comm, pid (the thread's), prio, whether the thread group dies with it;
 * task->exit_code set first, as exit_group()/exit() set it. The kernel also
 * fires it for threads an exit_group() ends and tasks a signal kills:
 * bpfshim does not. */
void sched_process_exit(const struct tp_set *set, long nr, int status, int group_dead,
			       struct hook_pt_regs *regs)
{
	struct {
		uint64_t regs;
		char comm[16];
		int32_t pid, prio;
		uint8_t group_dead, pad[7];
	} rec = { .regs = (uint64_t)(uintptr_t)regs };
	memcpy(rec.comm, bpf_rt_comm(), 16);
	rec.pid = (int32_t)BPF_RT_SYS(SYS_gettid, 0);
	errno = 0;
	int nice = getpriority(PRIO_PROCESS, 0);
	rec.prio = 120 + (errno ? 0 : nice);
	rec.group_dead = (uint8_t)group_dead;
	bpf_rt_task_exiting((status & 0xff) << 8);
	tp_run(set, ATTACH_KIND_SCHED_PROCESS_EXIT, nr, &rec);
}

/* signal:signal_generate, as __send_signal_locked() fires it for a signal
 * a syscall sends: the record is made before the syscall (the target's
 * state then says the result) and fired if the syscall succeeds. Signals
 * the kernel generates itself (SIGCHLD, SIGPIPE, timers, faults) are not
 * seen; nor those kill() sends to a process group or to every process. */
enum { TRACE_SIGNAL_DELIVERED, TRACE_SIGNAL_IGNORED, TRACE_SIGNAL_ALREADY_PENDING };
#define SI_TKILL_ (-6)

/* A hex mask line of /proc/TID/status ("SigBlk:\t..."), 0 if absent. */
static uint64_t status_mask(const char *st, const char *name)
{
	const char *p = strstr(st, name);
	return p ? strtoull(p + strlen(name), NULL, 16) : 0;
}

int signal_prepare(long nr, const long *a, struct sig_gen *sg)
{
	long tid, sig;
	int group = nr == SYS_kill || nr == SYS_rt_sigqueueinfo;
	char path[64], st[2048];

	memset(sg, 0, sizeof(*sg));
	if (nr == SYS_kill || nr == SYS_rt_sigqueueinfo || nr == SYS_tkill) {
		tid = a[0];
		sig = a[1];
	} else if (nr == SYS_tgkill || nr == SYS_rt_tgsigqueueinfo) {
		tid = a[1];
		sig = a[2];
	} else {
		return 0;
	}
	if (tid <= 0 || sig <= 0 || sig > 64)
		return 0;
	sg->rec.sig = (int32_t)sig;
	sg->rec.pid = (int32_t)tid;
	sg->rec.group = group;
	sg->rec.code = nr == SYS_kill ? 0 /* SI_USER */ : nr == SYS_tkill || nr == SYS_tgkill ? SI_TKILL_ : 0;
	if (nr == SYS_rt_sigqueueinfo || nr == SYS_rt_tgsigqueueinfo) {
		siginfo_t si;
		if (bpf_rt_copy_nofault(&si, (void *)a[nr == SYS_rt_sigqueueinfo ? 2 : 3], sizeof(si)))
			return 0;
		sg->rec.code = si.si_code;
		sg->rec.errno_ = si.si_errno;
	}
	/* "/proc/TID/" without snprintf (not async-signal-safe) */
	size_t k = sizeof("/proc/") - 1;
	memcpy(path, "/proc/", k);
	k += bpf_rt_utoa(path + k, (uint64_t)tid);
	memcpy(path + k, "/comm", sizeof("/comm"));
	long n = bpf_rt_read_file(path, sg->rec.comm, sizeof(sg->rec.comm));
	if (n > 0 && sg->rec.comm[n - 1] == '\n')
		sg->rec.comm[n - 1] = 0;
	/* prepare_signal(): ignored unless blocked; legacy_queue(): a standard
	 * signal already pending is not queued again */
	memcpy(path + k, "/status", sizeof("/status"));
	n = bpf_rt_read_file(path, st, sizeof(st));
	if (n > 0) {
		uint64_t bit = 1ull << (sig - 1), dfl_ignore = 1ull << (SIGCONT - 1) | 1ull << (SIGCHLD - 1) |
								1ull << (SIGWINCH - 1) | 1ull << (SIGURG - 1);
		uint64_t blk = status_mask(st, "\nSigBlk:"), ign = status_mask(st, "\nSigIgn:"),
			 cgt = status_mask(st, "\nSigCgt:"), pnd = status_mask(st, group ? "\nShdPnd:" : "\nSigPnd:");
		sg->ign = !!(ign & bit);
		if (!(blk & bit) && ((ign & bit) || (!(cgt & bit) && (dfl_ignore & bit))))
			sg->rec.result = TRACE_SIGNAL_IGNORED;
		else if (sig < 32 && (pnd & bit))
			sg->rec.result = TRACE_SIGNAL_ALREADY_PENDING;
	}
	return 1;
}

/* do_notify_parent() at the death of the thread group: SIGCHLD to the
 * parent, CLD_EXITED; none when the parent ignores SIGCHLD (it reaps
 * automatically). */
void sigchld_at_exit(const struct tp_set *set, struct hook_pt_regs *regs)
{
	long a[6] = { BPF_RT_SYS(SYS_getppid, 0), SIGCHLD };
	struct sig_gen sg;

	if (!signal_prepare(SYS_kill, a, &sg) || sg.ign)
		return;
	sg.rec.regs = (uint64_t)(uintptr_t)regs;
	sg.rec.code = 1;    /* CLD_EXITED */
	tp_run(set, ATTACH_KIND_SIGNAL_GENERATE, SYS_exit_group, &sg.rec);
}

/* sched:sched_process_fork as kernel_clone() fires it, in the parent after
 * the child exists: the parent's comm and tid, the child's (the same comm)
 * and its pid. */
void sched_process_fork(const struct tp_set *set, long child, struct hook_pt_regs *regs)
{
	_Alignas(8) char rec[64] = { 0 };
	const char *comm = bpf_rt_comm();
	int32_t tid = (int32_t)BPF_RT_SYS(SYS_gettid, 0), cpid = (int32_t)child;
	size_t end = 24;

	memcpy(rec, &(uint64_t){ (uint64_t)(uintptr_t)regs }, 8);
	end = put_data_loc(rec, end, 8, comm, sizeof(rec));
	memcpy(rec + 12, &tid, 4);
	end = put_data_loc(rec, end, 16, comm, sizeof(rec));
	memcpy(rec + 20, &cpid, 4);
	tp_run(set, ATTACH_KIND_SCHED_PROCESS_FORK, 0, rec);
}

/* sched:sched_process_exec as exec_binprm() fires it, in the new image:
 * the file as execve was given it (the kernel leaves it at AT_EXECFN), the
 * pid and the old pid (the same: bpfshim sees no de_thread). */
void sched_process_exec(const struct tp_set *set, long nr)
{
	_Alignas(8) char rec[24 + 4096] = { 0 };
	struct hook_pt_regs regs = { .orig_ax = nr, .cs = 0x33, .ss = 0x2b };
	const char *file = (const char *)getauxval(AT_EXECFN);
	int32_t pid = (int32_t)getpid();

	memcpy(rec, &(uint64_t){ (uint64_t)(uintptr_t)&regs }, 8);
	put_data_loc(rec, 20, 8, file ? file : "", sizeof(rec));
	memcpy(rec + 12, &pid, 4);
	memcpy(rec + 16, &pid, 4);
	tp_run(set, ATTACH_KIND_SCHED_PROCESS_EXEC, nr, rec);
}

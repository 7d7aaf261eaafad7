/* SPDX-License-Identifier: MIT */
/*
 * Between the three parts of syscall tracing in user space:
 *   dispatch.c  how a syscall is caught (Syscall User Dispatch, a rewritten
 *               site) and made for the application, threads armed;
 *   trace.c     what is attached and what runs around a caught syscall
 *               (the kernel's trace_sys_enter/exit);
 *   events.c    the records of the other events found on that path
 *               (sched_process_exit/fork/exec, signal_generate).
 * dispatch.c calls trace.c's hooks around each syscall, as the kernel's
 * entry code calls its tracepoints; trace.c tells dispatch.c whether
 * syscalls are to be caught at all.
 */
#ifndef BPFSHIM_SYSCALL_INTERNAL_H
#define BPFSHIM_SYSCALL_INTERNAL_H

#include <stdint.h>
#include <ucontext.h>
#include "attach_table.h"   /* enum attach_kind */
#include "hook/hook.h"     /* struct hook_pt_regs */

#define NR_MAX 1024                  /* syscall numbers the bitmaps cover */

/* ---- trace.c ---- */

struct tp_set;

/* The programs of `kind` in `set` (for ATTACH_KIND_SYS_ENTER/ATTACH_KIND_SYS_EXIT: of syscall nr). */
void tp_run(const struct tp_set *set, enum attach_kind kind, long nr, void *rec);

/* The record a BPF program gets (struct syscall_tp_t of the kernel's
 * perf_call_bpf_enter/exit, the raw_syscalls entries alike): the pt_regs
 * pointer over the common fields, the number (an int there, a long in
 * raw_syscalls: the same bytes for any real number), then the arguments or
 * the return value. */
struct tp_record {
	uint64_t regs;
	int64_t nr;
	uint64_t args[6];
};

/* signal:signal_generate's record, made before the syscall that sends the
 * signal (events.c signal_prepare) and fired if it succeeds. */
struct sig_gen {
	struct {
		uint64_t regs;
		int32_t sig, errno_, code;
		char comm[16];
		int32_t pid, group, result;
	} rec;
	int ign;                   /* the target has SIG_IGN for it */
};

/* One syscall's tracing, from sys_trace_enter to sys_trace_exit. */
struct sys_trace {
	const struct tp_set *set;
	int fire;                  /* the application's syscall, with programs attached */
	int overridden;            /* an enter program called bpf_override_return */
	int gen;                   /* a signal_generate record is ready */
	struct tp_record rec;
	struct sig_gen sg;
};

/* Before syscall regs->orig_ax with arguments a is made: its enter
 * programs and the events of its entry. 1 when a program overrode it: the
 * syscall is not made and *ret is its result. */
int sys_trace_enter(struct sys_trace *t, struct hook_pt_regs *regs, const long *a, long *ret);
/* After it returned ret (or was overridden): its events and exit programs;
 * the result the application gets. */
long sys_trace_exit(struct sys_trace *t, struct hook_pt_regs *regs, long ret);
/* The sys_exit of a clone in a thread sud_clone_thread started. */
void sys_trace_child(long nr, uint64_t ip);
/* Whether syscall nr has exit programs attached. */
int sys_trace_wants_exit(long nr);

/* ---- dispatch.c ---- */

/* Syscalls are caught in this process (set published: some syscall
 * tracepoint is attached) or not: every thread is armed or disarmed. */
void dispatch_want(int want, const uint8_t *enter, const uint8_t *exit);

/* ---- events.c ---- */

/* The thread group dies with this exit/exit_group (the last thread). */
int group_dies(long nr);
void sched_process_exit(const struct tp_set *set, long nr, int status, int group_dead, struct hook_pt_regs *regs);
void sched_process_fork(const struct tp_set *set, long child, struct hook_pt_regs *regs);
void sched_process_exec(const struct tp_set *set, long nr);
/* The signal syscall nr with arguments a sends: 1 and sg filled, or 0. */
int signal_prepare(long nr, const long *a, struct sig_gen *sg);
void sigchld_at_exit(const struct tp_set *set, struct hook_pt_regs *regs);

#endif

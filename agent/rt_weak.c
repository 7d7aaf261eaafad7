/* SPDX-License-Identifier: MIT */
/*
 * Weak fallbacks for the runtime's entry points, so that each native library
 * links and loads whatever subset of the runtime it is built with; the real
 * definitions (prog_run.c, helpers/, jit.c) win at link time.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <string.h>
#include "bpf_rt.h"

BPFSHIM_API __attribute__((weak)) __thread struct bpf_run_ctx *bpf_cur_run_ctx;
BPFSHIM_API __attribute__((weak)) bpf_helper_fn bpf_helpers[BPF_RT_HELPER_MAX];

/* The program runner: AOT code when the program has it, else the
 * interpreter; tail calls; faults (SIGSEGV/SIGBUS, and SIGILL/SIGFPE from the
 * engines' traps) stop the run, are counted, and the host goes on. */
static __thread sigjmp_buf *volatile weak_fault_jmp;
static struct sigaction weak_prev_segv, weak_prev_bus, weak_prev_ill, weak_prev_fpe;

static void weak_on_fault(int sig, siginfo_t *si, void *uc)
{
	sigjmp_buf *j = weak_fault_jmp;
	struct sigaction *p = sig == SIGBUS ? &weak_prev_bus : sig == SIGILL ? &weak_prev_ill :
			      sig == SIGFPE ? &weak_prev_fpe : &weak_prev_segv;

	if (j) {
		weak_fault_jmp = NULL;
		siglongjmp(*j, 1);
	}
	if ((p->sa_flags & SA_SIGINFO) && p->sa_sigaction)
		p->sa_sigaction(sig, si, uc);
	else if (!(p->sa_flags & SA_SIGINFO) && p->sa_handler != SIG_DFL && p->sa_handler != SIG_IGN)
		p->sa_handler(sig);
	else
		signal(sig, SIG_DFL);
}

static void weak_install(void)
{
	struct sigaction sa;

	memset(&sa, 0, sizeof(sa));
	sa.sa_sigaction = weak_on_fault;
	sa.sa_flags = SA_SIGINFO | SA_NODEFER | SA_ONSTACK;
	sigaction(SIGSEGV, &sa, &weak_prev_segv);
	sigaction(SIGBUS, &sa, &weak_prev_bus);
	/* the engines trap (ud2) on what the loader should have refused */
	sigaction(SIGILL, &sa, &weak_prev_ill);
	sigaction(SIGFPE, &sa, &weak_prev_fpe);
}

static int weak_run(const struct bpf_prog_rt *prog, void *ctx, uint64_t cookie, uint64_t func_ip, uint64_t *ret)
{
	static pthread_once_t once = PTHREAD_ONCE_INIT;
	struct bpf_run_ctx rc;
	sigjmp_buf jb;
	uint64_t r0 = 0;

	pthread_once(&once, weak_install);
	memset(&rc, 0, sizeof(rc));
	rc.ctx = ctx;
	rc.bpf_cookie = cookie;
	rc.func_ip = func_ip;
	rc.prev = bpf_cur_run_ctx;
	bpf_cur_run_ctx = &rc;
	if (sigsetjmp(jb, 0)) {
		bpf_cur_run_ctx = rc.prev;
		__atomic_add_fetch((uint64_t *)&prog->faults, 1, __ATOMIC_RELAXED);
		return -EFAULT;
	}
	sigjmp_buf *saved = weak_fault_jmp;
	weak_fault_jmp = &jb;
	__asm__ __volatile__("" ::: "memory");
	for (;;) {
		rc.prog = prog;
		rc.tail_call_next = NULL;
		r0 = prog->jited ? prog->jited((uint64_t)(uintptr_t)ctx, &prog->env)
				 : bpf_interp_run(prog, (uint64_t)(uintptr_t)ctx);
		if (!rc.tail_call_next || rc.tail_call_cnt >= BPF_RT_MAX_TAIL_CALL_CNT)
			break;
		prog = rc.tail_call_next;
		rc.tail_call_cnt++;
	}
	weak_fault_jmp = saved;
	bpf_cur_run_ctx = rc.prev;
	*ret = r0;
	return 0;
}

BPFSHIM_API __attribute__((weak)) int bpf_prog_run(const struct bpf_prog_rt *prog, void *ctx, uint64_t *ret)
{
	return weak_run(prog, ctx, 0, 0, ret);
}

BPFSHIM_API __attribute__((weak)) void *bpf_jit_load(const void *blob, size_t len)
{
	return NULL;
}

BPFSHIM_API __attribute__((weak)) int bpf_prog_run_probe(const struct bpf_prog_rt *prog, void *ctx, uint64_t cookie,
					     uint64_t func_ip, uint64_t *ret)
{
	return weak_run(prog, ctx, cookie, func_ip, ret);
}

struct hook;
BPFSHIM_API __attribute__((weak)) int hook_attach(void *addr, void *entry, void *ret, void *data, struct hook **out)
{
	return -ENOSYS;
}

BPFSHIM_API __attribute__((weak)) int hook_attach_in(void *addr, const void *func, size_t func_size, void *entry,
						 void *ret, void *data, struct hook **out)
{
	return -ENOSYS;
}

BPFSHIM_API __attribute__((weak)) int hook_detach(struct hook *h)
{
	return -ENOSYS;
}

/* Is a helper implemented in this build (the server asks before PROG_LOAD)? */
BPFSHIM_API __attribute__((weak)) int bpf_helper_supported(int func_id)
{
	return func_id > 0 && func_id < BPF_RT_HELPER_MAX && bpf_helpers[func_id] != NULL;
}

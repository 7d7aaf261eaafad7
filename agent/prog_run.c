/* SPDX-License-Identifier: MIT */
/*
 * Running a program as the kernel's bpf_prog_run(): the engine (AOT code if
 * the program has it, else the interpreter), tail calls, statistics, and
 * fault containment.
 *
 * Faults: a SIGSEGV/SIGBUS (and the SIGILL/SIGFPE of an engine's trap)
 * raised by the kernel while this thread is inside a program jumps back to
 * the run's bpf_rt_setjmp; the run ends with -EFAULT, the fault is counted in
 * prog->faults and the host goes on. Every other fault, and signals sent by
 * kill()/tgkill(), go to the handler that was installed before ours.
 * No signal mask is saved (that would be a syscall per run); the fault
 * path unblocks the fault signals itself. Each thread that runs programs
 * gets an alternate signal stack unless it has one, so a stack overflow
 * inside a program is contained too.
 *
 * Budget: a run past bpf_rt_run_budget_ns, or whose program was detached
 * while it ran, stops at its next back-edge check (bpf_rt_backedge) the same
 * way, counted in overruns. Faults and overruns are counted where every
 * process running the program counts (the image's stats page).
 */
#include <errno.h>
#include <stddef.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/mman.h>
#include "bpf_rt.h"
#include "rt.h"
#include "helpers/helpers.h"
#include "maps/map.h"
#include "run_cpu.h"
#include "rawsys.h"
#include "start.h"

BPFSHIM_API __thread struct bpf_run_ctx *bpf_cur_run_ctx;
__thread int bpf_rt_call_depth;

/* A fault-safe copy in progress on this thread (bpf_rt_copy_nofault). */
__thread bpf_rt_jmp_buf *volatile bpf_rt_copy_jmp;
static __thread uint64_t exit_r0;

#define barrier() __asm__ __volatile__("" ::: "memory")
#define RUN_EXIT 0x7fff   /* bpf_rt_setjmp value of bpf_rt_exit_run */
#define RUN_OVER 0x7ffe   /* bpf_rt_setjmp value of a run stopped by bpf_rt_backedge */

static void run_budget_env(void);

/* setjmp/longjmp of the callee-saved registers only (x86-64 SysV; bpf_rt.h). */
__asm__(".text\n"
	".globl bpf_rt_setjmp\n.hidden bpf_rt_setjmp\n.type bpf_rt_setjmp,@function\n"
	"bpf_rt_setjmp:\n"
	"	mov %rbx, 0(%rdi)\n	mov %rbp, 8(%rdi)\n	mov %r12, 16(%rdi)\n"
	"	mov %r13, 24(%rdi)\n	mov %r14, 32(%rdi)\n	mov %r15, 40(%rdi)\n"
	"	lea 8(%rsp), %rdx\n	mov %rdx, 48(%rdi)\n	mov (%rsp), %rdx\n	mov %rdx, 56(%rdi)\n"
	"	xor %eax, %eax\n	ret\n"
	".size bpf_rt_setjmp, .-bpf_rt_setjmp\n"
	".globl bpf_rt_longjmp\n.hidden bpf_rt_longjmp\n.type bpf_rt_longjmp,@function\n"
	"bpf_rt_longjmp:\n"
	"	mov %esi, %eax\n	test %eax, %eax\n	jnz 1f\n	inc %eax\n1:\n"
	"	mov 0(%rdi), %rbx\n	mov 8(%rdi), %rbp\n	mov 16(%rdi), %r12\n"
	"	mov 24(%rdi), %r13\n	mov 32(%rdi), %r14\n	mov 40(%rdi), %r15\n"
	"	mov 48(%rdi), %rsp\n	jmp *56(%rdi)\n"
	".size bpf_rt_longjmp, .-bpf_rt_longjmp\n");

static const int fault_sigs[] = { SIGSEGV, SIGBUS, SIGILL, SIGFPE };
static struct sigaction prev_act[BPFSHIM_ARRAY_SIZE(fault_sigs)];

static struct sigaction *prev_of(int sig)
{
	for (size_t i = 0; i < BPFSHIM_ARRAY_SIZE(fault_sigs); i++)
		if (fault_sigs[i] == sig)
			return &prev_act[i];
	return NULL;
}

static void chain(int sig, siginfo_t *si, void *uc)
{
	struct sigaction *p = prev_of(sig);

	if (p && (p->sa_flags & SA_SIGINFO) && p->sa_sigaction) {
		p->sa_sigaction(sig, si, uc);
		return;
	}
	if (p && !(p->sa_flags & SA_SIGINFO) && p->sa_handler != SIG_DFL && p->sa_handler != SIG_IGN) {
		p->sa_handler(sig);
		return;
	}
	if (p && !(p->sa_flags & SA_SIGINFO) && p->sa_handler == SIG_IGN && si->si_code <= 0)
		return;   /* an ignored signal someone sent */
	/* The default action: restore it; the faulting instruction runs again
	 * and the process dies of it as it would have without us. A sent
	 * signal is raised again. */
	signal(sig, SIG_DFL);
	if (si->si_code <= 0)
		raise(sig);
}

static void on_fault(int sig, siginfo_t *si, void *uc)
{
	/* si_code > 0: raised by the kernel for this thread's own instruction */
	if (si->si_code > 0) {
		bpf_rt_jmp_buf *j = bpf_rt_copy_jmp;
		if (j && (sig == SIGSEGV || sig == SIGBUS)) {
			bpf_rt_copy_jmp = NULL;
			bpf_rt_longjmp(*j, 1);
		}
		struct bpf_run_ctx *rc = bpf_cur_run_ctx;
		if (rc && rc->in_prog) {
			rc->in_prog = 0;
			bpf_rt_longjmp(rc->fault_jmp, sig);
		}
	}
	chain(sig, si, uc);
}

static void install(void)
{
	struct sigaction sa;

	memset(&sa, 0, sizeof(sa));
	sa.sa_sigaction = on_fault;
	/* NODEFER: the mask is unchanged when we jump out of the handler */
	sa.sa_flags = SA_SIGINFO | SA_NODEFER | SA_ONSTACK;
	sigemptyset(&sa.sa_mask);
	/* again in a fork child whose parent was in the middle of it
	 * (bpf_rt_once): a handler already ours is not what we chain to */
	for (size_t i = 0; i < BPFSHIM_ARRAY_SIZE(fault_sigs); i++) {
		struct sigaction old;
		if (!sigaction(fault_sigs[i], &sa, &old) && old.sa_sigaction != on_fault)
			prev_act[i] = old;
	}
}

/* ---- per-thread alternate signal stack ---- */

#define ALTSTACK_SIZE (64 * 1024)
static pthread_key_t altstack_key;
static __thread int thread_ready;

static void altstack_free(void *p)
{
	stack_t ss = { .ss_flags = SS_DISABLE };
	stack_t cur;
	SUD_INTERNAL_BEGIN();   /* at thread exit, the runtime's, not the thread's */

	/* only if it is still ours */
	if (!sigaltstack(NULL, &cur) && cur.ss_sp == p)
		sigaltstack(&ss, NULL);
	munmap((char *)p - 4096, ALTSTACK_SIZE + 4096);
	SUD_INTERNAL_END();
}

/* The key at load (a first run may be inside fork() or malloc); the fault
 * handlers at the first run of the process (bpf_rt_once), after the
 * application has set its own (chained to). */
void altstack_key_init(void)
{
	pthread_key_create(&altstack_key, altstack_free);
	run_budget_env();
}

int bpf_rt_handlers_installed;   /* bpf_rt_once state of install(); helpers.h reads it */

/* A thread's first run: raw syscalls only, it may be in a signal handler. */
static void thread_init(void)
{
	stack_t cur;

	bpf_rt_once(&bpf_rt_handlers_installed, install);
	thread_ready = 1;
	if (BPF_RT_SYS(SYS_sigaltstack, 0, &cur) || !(cur.ss_flags & SS_DISABLE))
		return;
	/* a guard page below, so an overflow of the handler itself is a plain crash */
	char *m = bpf_rt_mmap(ALTSTACK_SIZE + 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (!m)
		return;
	BPF_RT_SYS(SYS_mprotect, m, 4096, PROT_NONE);
	stack_t ss = { .ss_sp = m + 4096, .ss_size = ALTSTACK_SIZE, .ss_flags = 0 };
	if (BPF_RT_SYS(SYS_sigaltstack, &ss, 0)) {
		BPF_RT_SYS(SYS_munmap, m, ALTSTACK_SIZE + 4096);
		return;
	}
	bpf_rt_setspecific(altstack_key, m + 4096);
}

static inline void ensure_thread(void)
{
	if (__builtin_expect(!thread_ready, 0))
		thread_init();
}

static void unblock_fault_sigs(void)
{
	sigset_t s;

	sigemptyset(&s);
	for (size_t i = 0; i < BPFSHIM_ARRAY_SIZE(fault_sigs); i++)
		sigaddset(&s, fault_sigs[i]);
	pthread_sigmask(SIG_UNBLOCK, &s, NULL);
}

__attribute__((noreturn)) void bpf_rt_fault(int sig)
{
	struct bpf_run_ctx *rc = bpf_cur_run_ctx;

	if (rc && rc->in_prog) {
		rc->in_prog = 0;
		bpf_rt_longjmp(rc->fault_jmp, sig);
	}
	__builtin_trap();
}

__attribute__((noreturn)) void bpf_rt_exit_run(uint64_t r0)
{
	struct bpf_run_ctx *rc = bpf_cur_run_ctx;

	if (rc && rc->in_prog) {
		rc->in_prog = 0;
		exit_r0 = r0;
		bpf_rt_longjmp(rc->fault_jmp, RUN_EXIT);
	}
	__builtin_trap();
}

/* ---- the run budget (bpf_rt.h) ---- */

__thread int32_t bpf_rt_backedges_left;
/* The kernel's verifier bounds every run it accepts at load (1M processed
 * insns, bpf_loop's BPF_MAX_LOOPS); nothing bounds it while it runs except
 * the soft-lockup watchdog, which reports a CPU stuck for 2 * watchdog_thresh
 * = 20 s. Half of that, 10 s, is far past any run of an accepted program and
 * short of a lockup report; BPFSHIM_RUN_BUDGET_MS sets it, read at load. */
uint64_t bpf_rt_run_budget_ns = 10000000000ull;

static void run_budget_env(void)
{
	const char *v = getenv("BPFSHIM_RUN_BUDGET_MS");
	char *end;
	unsigned long long ms;

	if (!v || !*v)
		return;
	ms = strtoull(v, &end, 10);
	if (!*end && ms)
		bpf_rt_run_budget_ns = ms * 1000000ull;
}

static uint64_t mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);   /* the vDSO: no lock, no syscall */
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

void bpf_rt_backedge(void)
{
	struct bpf_run_ctx *rc = bpf_cur_run_ctx;
	uint64_t now;

	bpf_rt_backedges_left = BPF_RT_BACKEDGE_CHUNK;
	if (!rc || !rc->in_prog)
		return;
	if (rc->entry && __atomic_load_n(&rc->entry->detach_gen, __ATOMIC_RELAXED) != rc->detach_gen)
		goto stop;
	now = mono_ns();
	if (!rc->budget_t0)
		rc->budget_t0 = now;
	else if (now - rc->budget_t0 > bpf_rt_run_budget_ns)
		goto stop;
	return;
stop:
	rc->in_prog = 0;
	bpf_rt_longjmp(rc->fault_jmp, RUN_OVER);
}

void bpf_rt_prog_detached(const struct bpf_prog_rt *prog)
{
	__atomic_add_fetch((uint32_t *)&prog->detach_gen, 1, __ATOMIC_RELAXED);
}

static void count(const struct bpf_prog_rt *prog, size_t field)
{
	struct bpf_prog_counts *c = prog->shared_counts ? prog->shared_counts
							: (struct bpf_prog_counts *)&prog->counts;

	__atomic_add_fetch((uint64_t *)((char *)c + field), 1, __ATOMIC_RELAXED);
}

/* ---- fault-safe copies for the helpers, and the loader's guard ---- */

/* One handler for every fault bpfshim contains: a guard armed here covers
 * a whole bpf() command of the loader (libbpf_shim/uaccess.c), copies
 * inside it included (each saves and restores the guard it finds). */
void bpf_rt_guard_install(void)
{
	bpf_rt_once(&bpf_rt_handlers_installed, install);
}

/* Copies n bytes (n > 0) of src to dst under the copy guard, or if `str`
 * up to n - 1 of them and the NUL that ends them: how many it copied
 * (n when `str` found no NUL in n - 1), -EFAULT on a fault. Byte loops the
 * compiler may not turn into libc calls: memcpy in libc is fine too, but
 * this keeps the faulting code ours. */
static long copy_guarded(void *dst, const void *src, size_t n, int str)
{
	bpf_rt_jmp_buf jb;
	bpf_rt_jmp_buf *volatile saved;
	size_t len = n;

	ensure_thread();
	saved = bpf_rt_copy_jmp;
	if (bpf_rt_setjmp(jb)) {
		bpf_rt_copy_jmp = saved;
		unblock_fault_sigs();
		return -EFAULT;
	}
	bpf_rt_copy_jmp = &jb;
	barrier();
	if (!str) {
		for (size_t i = 0; i < n; i++)
			((volatile char *)dst)[i] = ((const volatile char *)src)[i];
	} else {
		for (size_t k = 0; k < n - 1; k++) {
			char c = ((const volatile char *)src)[k];
			((volatile char *)dst)[k] = c;
			if (!c) {
				len = k + 1;
				break;
			}
		}
	}
	barrier();
	bpf_rt_copy_jmp = saved;
	return (long)len;
}

int bpf_rt_copy_nofault(void *dst, const void *src, size_t n)
{
	if (!n)
		return 0;
	if ((uintptr_t)src + n < (uintptr_t)src || (uintptr_t)dst + n < (uintptr_t)dst)
		return -EFAULT;
	return copy_guarded(dst, src, n, 0) < 0 ? -EFAULT : 0;
}

long bpf_rt_strncpy_nofault(char *dst, const char *src, size_t n)
{
	if (!n)
		return 0;
	long len = copy_guarded(dst, src, n, 1);

	if (len == (long)n)
		dst[n - 1] = 0;   /* cut at n - 1 */
	return len;
}

/* ---- the runner ---- */

/* r2 goes to the interpreter only (the bpf_conformance convention; AOT code
 * gets it from its own preamble). The program runs `repeat` times (>= 1)
 * inside one guarded section, as the kernel's bpf_test_run() loops inside
 * one section: a run costs what its engine costs. A fault ends all runs. */
static int run_guarded(const struct bpf_prog_rt *prog, void *ctx, uint64_t r2_in, uint64_t cookie,
		       uint64_t func_ip, uint32_t repeat, uint64_t *ret)
{
	struct bpf_run_ctx rc;
	int saved_depth = bpf_rt_call_depth;
	volatile int cpu_claimed = 0;
	uint32_t rb_mark = bpf_rt_ringbuf_mark();
	uint64_t r0 = 0;
	int sig;

	ensure_thread();
	memset(&rc, 0, offsetof(struct bpf_run_ctx, fault_jmp));
	rc.in_prog = 0;
	rc.ctx = ctx;
	rc.bpf_cookie = cookie;
	rc.func_ip = func_ip;
	rc.prev = bpf_cur_run_ctx;
	rc.entry = prog;
	rc.detach_gen = __atomic_load_n(&prog->detach_gen, __ATOMIC_RELAXED);
	bpf_cur_run_ctx = &rc;
	bpf_rt_call_depth = 0;
	sig = bpf_rt_setjmp(rc.fault_jmp);
	if (sig) {
		/* the handler (or bpf_rt_fault) left in_prog = 0 */
		bpf_cur_run_ctx = rc.prev;
		bpf_rt_call_depth = saved_depth;
		if (cpu_claimed)
			bpf_rt_cpu_release();
		bpf_rt_ringbuf_release(rb_mark);
		if (rc.spin_lock)
			shm_unlock(rc.spin_lock);
		if (sig == RUN_EXIT) {
			*ret = exit_r0;
			return 0;
		}
		if (sig == RUN_OVER) {
			count(prog, offsetof(struct bpf_prog_counts, overruns));
			return -EFAULT;
		}
		unblock_fault_sigs();
		count(prog, offsetof(struct bpf_prog_counts, faults));
		return -EFAULT;
	}
	/* in_prog stays set between the repetitions: the loop itself does not fault */
	barrier();
	rc.in_prog = 1;
	barrier();
	for (uint32_t i = 0; i < repeat; i++) {
		const struct bpf_prog_rt *p = prog;
		uint64_t a2 = r2_in;

		rc.tail_call_cnt = 0;
		rc.budget_t0 = 0;   /* each repetition has the budget (PROG_TEST_RUN's repeat) */
		for (;;) {
			if (p->percpu && shm_run_cpu < 0) {
				bpf_rt_cpu_claim();
				cpu_claimed = 1;
			}
			rc.prog = p;
			rc.tail_call_next = NULL;
			barrier();
			r0 = p->jited ? p->jited((uint64_t)(uintptr_t)ctx, &p->env)
				      : bpf_interp_run2(p, (uint64_t)(uintptr_t)ctx, a2);
			barrier();
			if (__builtin_expect(!rc.tail_call_next, 1))
				break;
			/* the helper counted it and refused past BPF_RT_MAX_TAIL_CALL_CNT */
			p = rc.tail_call_next;
			a2 = 0;
		}
	}
	barrier();
	rc.in_prog = 0;
	barrier();
	bpf_cur_run_ctx = rc.prev;
	bpf_rt_call_depth = saved_depth;
	if (cpu_claimed)
		bpf_rt_cpu_release();
	bpf_rt_ringbuf_release(rb_mark);
	*ret = r0;
	return 0;
}

int bpf_rt_run_guarded(const struct bpf_prog_rt *prog, void *ctx, uint64_t r2, uint64_t cookie,
		       uint64_t func_ip, uint64_t *ret)
{
	return run_guarded(prog, ctx, r2, cookie, func_ip, 1, ret);
}

BPFSHIM_API int bpf_prog_test_run_repeat(const struct bpf_prog_rt *prog, void *ctx, uint32_t repeat,
					 uint64_t *ret)
{
	return run_guarded(prog, ctx, 0, 0, 0, repeat ? repeat : 1, ret);
}

BPFSHIM_API int bpf_prog_run(const struct bpf_prog_rt *prog, void *ctx, uint64_t *ret)
{
	return bpf_rt_run_guarded(prog, ctx, 0, 0, 0, ret);
}

BPFSHIM_API int bpf_prog_run_probe(const struct bpf_prog_rt *prog, void *ctx, uint64_t cookie, uint64_t func_ip,
				   uint64_t *ret)
{
	return bpf_rt_run_guarded(prog, ctx, 0, cookie, func_ip, ret);
}

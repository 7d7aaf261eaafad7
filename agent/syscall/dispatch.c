/* SPDX-License-Identifier: MIT */
/*
 * How a syscall is caught and made for the application (internal.h): while
 * a syscall tracepoint is attached (trace.c says so, dispatch_want), each
 * thread of the process has Syscall User Dispatch on (prctl
 * PR_SET_SYSCALL_USER_DISPATCH, no privilege needed): every syscall made
 * outside bpfshim's own code region traps with SIGSYS before it runs, and
 * a site that trapped is rewritten into a jump to a stub of its own
 * (site.c) that comes here without the signal. Either way the syscall is
 * made from the region, between trace.c's enter and exit hooks.
 *
 * The kernel does not carry the setting over clone/fork/exec, so: threads
 * that exist when a tracepoint is attached are asked (a queued SIGRTMAX) to
 * arm themselves; a thread an armed thread creates arms itself first thing
 * (sud_clone_thread); a forked child arms itself on its way out of the
 * handler; a new image arms in the constructor (uprobe.c).
 *
 * A syscall made from the handler runs on the handler's stack, which does
 * not work for the few that depend on the caller's frame; those are
 * emulated:
 *   - rt_sigreturn: the frame it would restore is copied into the handler's
 *     own frame, which the handler's return restores;
 *   - rt_sigprocmask: applied to the mask the handler's return restores;
 *   - clone/clone3 with a new stack (threads, posix_spawn): made from
 *     sud_clone_thread with the caller's registers, so the child starts at
 *     the caller's next instruction on its own stack; vfork, and clone with
 *     CLONE_VM but no stack, run as fork (the child of a vfork would run on,
 *     and overwrite, the frame its parent sleeps in).
 * SIGSYS must never be blocked while dispatch is on (the kernel kills a
 * thread whose dispatch SIGSYS is blocked): it is kept out of the masks of
 * rt_sigprocmask, signal handlers, and the temporary masks of rt_sigsuspend,
 * ppoll, pselect6 and epoll_pwait; an application's own SIGSYS (and
 * SIGRTMAX) handler is kept aside and called for the signals bpfshim did not
 * send. execve/execveat: the new image fires their sys_exit
 * (syscall_tp_exec_exit).
 *
 * Not caught: what the dynamic loader does before the agent's constructor,
 * and the child of posix_spawn/vfork before it execs (it shares its
 * parent's TLS, so it has no selector of its own).
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <ucontext.h>
#include <unistd.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include "bpf_rt.h"
#include "common.h"
#include "internal.h"
#include "syscall_tp.h"
#include "syscall_site.h"
#include "helpers/helpers.h"
#include "hook/tasks.h"
#include "rawsys.h"
#include "start.h"

#ifndef PR_SET_SYSCALL_USER_DISPATCH
#define PR_SET_SYSCALL_USER_DISPATCH 59
#define PR_SYS_DISPATCH_OFF 0
#define PR_SYS_DISPATCH_ON 1
#endif
#ifndef SYS_USER_DISPATCH
#define SYS_USER_DISPATCH 2          /* si_code of a dispatch SIGSYS */
#endif
#define SYSCALL_DISPATCH_FILTER_ALLOW 0
#define SYSCALL_DISPATCH_FILTER_BLOCK 1
#define CLONE_VM_ 0x100
#define CLONE_VFORK_ 0x4000
#define CLONE_SETTLS_ 0x80000
#define SIGSYS_BIT (1ull << (SIGSYS - 1))

static __thread char sud_armed;
/* the application's own view of SIGSYS in its mask (kept out of the real one) */
static __thread char app_blocks_sigsys;
static int sud_want;                 /* dispatch on in this process */

/* ---- bpfshim's code region: the syscalls it makes itself ---- */

long sud_syscall6(long nr, long a0, long a1, long a2, long a3, long a4, long a5);
long sud_clone_thread(const greg_t *g);
void sud_restorer(void);
extern const char __start_bpfshim_sud[], __stop_bpfshim_sud[];

_Static_assert(REG_R8 == 0 && REG_R9 == 1 && REG_R10 == 2 && REG_R12 == 4 && REG_R13 == 5 && REG_R14 == 6 &&
	       REG_R15 == 7 && REG_RDI == 8 && REG_RSI == 9 && REG_RBP == 10 && REG_RBX == 11 &&
	       REG_RDX == 12 && REG_RAX == 13, "gregs layout");

__asm__(
	".pushsection bpfshim_sud,\"ax\",@progbits\n"
	/* long sud_syscall6(nr, a0..a5) */
	".globl sud_syscall6\n.hidden sud_syscall6\n.type sud_syscall6,@function\n"
	"sud_syscall6:\n"
	"	mov %rdi, %rax\n	mov %rsi, %rdi\n	mov %rdx, %rsi\n	mov %rcx, %rdx\n"
	"	mov %r8, %r10\n	mov %r9, %r8\n	mov 8(%rsp), %r9\n	syscall\n	ret\n"
	/* the SIGSYS handler returns through here */
	".globl sud_restorer\n.hidden sud_restorer\n.type sud_restorer,@function\n"
	"sud_restorer:\n"
	"	mov $15, %eax\n	syscall\n	hlt\n"
	/* long sud_clone_thread(const greg_t *g): clone/clone3 with all of the
	 * caller's registers but rsp. The child, on its new stack, finds below
	 * the stack's top the address to resume at (the caller's next
	 * instruction) and below that whether to turn dispatch on for itself (a
	 * thread with a TLS of its own, where its selector is: then the syscall
	 * number, for its sys_exit); the parent returns the result */
	".globl sud_clone_thread\n.hidden sud_clone_thread\n.type sud_clone_thread,@function\n"
	"sud_clone_thread:\n"
	"	push %rbx\n	push %rbp\n	push %r12\n	push %r13\n	push %r14\n	push %r15\n"
	"	mov %rdi, %r11\n"
	"	mov 0(%r11), %r8\n	mov 8(%r11), %r9\n	mov 16(%r11), %r10\n"
	"	mov 32(%r11), %r12\n	mov 40(%r11), %r13\n	mov 48(%r11), %r14\n	mov 56(%r11), %r15\n"
	"	mov 72(%r11), %rsi\n	mov 80(%r11), %rbp\n	mov 88(%r11), %rbx\n	mov 96(%r11), %rdx\n"
	"	mov 104(%r11), %rax\n	mov 64(%r11), %rdi\n"
	"	syscall\n"
	"	test %rax, %rax\n	jnz 3f\n"
	"	cmpq $0, -16(%rsp)\n	je 4f\n"  /* the child: arm? (the syscall number, or 0) */
	"	lea -16(%rsp), %rsp\n"        /* rsp at the number, the resume address above it */
	"	push %rdi\n	push %rsi\n	push %rdx\n	push %r10\n	push %r8\n	push %r9\n	push %rbx\n"
	"	mov %fs:0, %r8\n"
	"	mov sud_selector@gottpoff(%rip), %rax\n"
	"	add %rax, %r8\n"              /* &sud_selector of the new thread */
	"	mov $157, %eax\n	mov $59, %edi\n	mov $1, %esi\n"   /* prctl(PR_SET_SYSCALL_USER_DISPATCH, ON, */
	"	lea __start_bpfshim_sud(%rip), %rdx\n"
	"	lea __stop_bpfshim_sud(%rip), %r10\n	sub %rdx, %r10\n" /* region, length, selector) */
	"	syscall\n"
	"	test %rax, %rax\n	jnz 2f\n"
	"	mov sud_armed@gottpoff(%rip), %rax\n	movb $1, %fs:(%rax)\n"
	"	mov 56(%rsp), %rdi\n	mov 64(%rsp), %rsi\n"   /* the number, the resume address */
	"	mov %rsp, %rbx\n	and $-16, %rsp\n"
	"	call sud_child_started\n"    /* sys_exit of the clone in the child; closes the selector */
	"	mov %rbx, %rsp\n"
	"2:	pop %rbx\n	pop %r9\n	pop %r8\n	pop %r10\n	pop %rdx\n	pop %rsi\n	pop %rdi\n"
	"	lea 8(%rsp), %rsp\n	xor %eax, %eax\n	ret\n"
	"4:	xor %eax, %eax\n	jmp *-8(%rsp)\n"
	"3:	pop %r15\n	pop %r14\n	pop %r13\n	pop %r12\n	pop %rbp\n	pop %rbx\n	ret\n"
	".popsection\n");

#define SYSCALL(nr, a, b, c, d, e, f) \
	sud_syscall6((nr), (long)(a), (long)(b), (long)(c), (long)(d), (long)(e), (long)(f))

/* The application's syscall, made for it by the handler. The selector is
 * closed meanwhile (the region's own syscall passes anyway): a signal
 * handler of the application that runs when the syscall returns (raise(),
 * a signal that ends a sleep) is traced as the application. */
static long app_syscall(long nr, long a0, long a1, long a2, long a3, long a4, long a5)
{
	sud_selector = SYSCALL_DISPATCH_FILTER_BLOCK;
	long r = sud_syscall6(nr, a0, a1, a2, a3, a4, a5);
	sud_selector = SYSCALL_DISPATCH_FILTER_ALLOW;
	return r;
}

/* ---- the signals bpfshim takes: SIGSYS (dispatch) and ASK_SIG ---- */

/* A thread is asked to arm with a queued real-time signal, not SIGSYS: a
 * standard signal already pending is not queued again, so a queued SIGSYS
 * pending when the thread traps would swallow the dispatch SIGSYS, and the
 * syscall (rolled back by the kernel) would never run. */
#define ASK_SIG 64                   /* SIGRTMAX */

struct k_sigaction {
	void *handler;
	unsigned long flags;
	void *restorer;
	uint64_t mask;
};
#define SA_RESTORER_ 0x04000000

/* the application's own actions for our two signals (SIG_DFL until it sets one) */
static struct k_sigaction app_act[2];
static int handler_installed;

static struct k_sigaction *app_action(long sig)
{
	return sig == SIGSYS ? &app_act[0] : sig == ASK_SIG ? &app_act[1] : NULL;
}

static void on_sigsys(int sig, siginfo_t *si, void *ucv);

/* Our handler in place for both signals (again, if the application replaced
 * it while dispatch was off), and SIGSYS out of every handler's mask. */
static void install_handler(void)
{
	struct k_sigaction k, old;

	for (int sig = SIGSYS; sig; sig = sig == SIGSYS ? ASK_SIG : 0) {
		if (SYSCALL(SYS_rt_sigaction, sig, NULL, &old, 8, 0, 0) || old.handler == (void *)on_sigsys)
			continue;
		if (handler_installed || old.handler != SIG_DFL)
			*app_action(sig) = old;
		memset(&k, 0, sizeof(k));
		k.handler = (void *)on_sigsys;
		/* NODEFER, empty mask: a handler the application's signal runs
		 * meanwhile may make syscalls that trap in turn */
		k.flags = SA_SIGINFO | SA_NODEFER | SA_RESTART | SA_RESTORER_;
		k.restorer = (void *)sud_restorer;
		SYSCALL(SYS_rt_sigaction, sig, &k, NULL, 8, 0, 0);
	}
	handler_installed = 1;
	for (int s = 1; s <= 64; s++) {
		if (s == SIGKILL || s == SIGSTOP || s == SIGSYS)
			continue;
		if (SYSCALL(SYS_rt_sigaction, s, NULL, &k, 8, 0, 0) || !(k.mask & SIGSYS_BIT))
			continue;
		k.mask &= ~SIGSYS_BIT;
		SYSCALL(SYS_rt_sigaction, s, &k, NULL, 8, 0, 0);
	}
}

/* ---- arming threads ---- */

/* This thread's dispatch in line with sud_want; `sel` is the selector value
 * the caller restores when it is done. Called on the thread itself. */
static void sync_thread(char *sel)
{
	int want = __atomic_load_n(&sud_want, __ATOMIC_ACQUIRE);

	if (want && !sud_armed) {
		if (SYSCALL(SYS_prctl, PR_SET_SYSCALL_USER_DISPATCH, PR_SYS_DISPATCH_ON, __start_bpfshim_sud,
			    __stop_bpfshim_sud - __start_bpfshim_sud, &sud_selector, 0))
			return;
		sud_armed = 1;
		*sel = SYSCALL_DISPATCH_FILTER_BLOCK;
	} else if (!want && sud_armed) {
		SYSCALL(SYS_prctl, PR_SET_SYSCALL_USER_DISPATCH, PR_SYS_DISPATCH_OFF, 0, 0, 0, 0);
		sud_armed = 0;
		*sel = SYSCALL_DISPATCH_FILTER_ALLOW;
	}
}

/* A thread whose signals are all blocked (bpfshim's own threads, a thread
 * waiting in sigwait) gets the request when it unblocks them, if ever. */
static void sync_self_sel(char *sel)
{
	uint64_t mask;

	if (SYSCALL(SYS_rt_sigprocmask, SIG_BLOCK, NULL, &mask, 8, 0, 0) || (mask & SIGSYS_BIT))
		return;
	sync_thread(sel);
}

static void sync_self(void)
{
	sync_self_sel(&sud_selector);
}

/* The threads asked to arm since dispatch went on (a queued ASK_SIG whose
 * value is &sud_want: the handler arms the thread it runs on). As any
 * signal, the request ends a sleep or poll the thread is in (EINTR) and
 * restarts other syscalls (SA_RESTART). The threads are listed again a few
 * times after: a thread made by one not armed yet is asked then. */
#define ASKED_MAX 4096
static int asked[ASKED_MAX], n_asked, n_rescans;

static int was_asked(int tid)
{
	int n = __atomic_load_n(&n_asked, __ATOMIC_ACQUIRE);

	for (int i = 0; i < n && i < ASKED_MAX; i++)
		if (__atomic_load_n(&asked[i], __ATOMIC_RELAXED) == tid)
			return 1;
	return 0;
}

/* The follower and a thread that exempts itself (ask_not_me) both add. */
static void note_asked(int tid)
{
	int i = __atomic_fetch_add(&n_asked, 1, __ATOMIC_ACQ_REL);

	if (i < ASKED_MAX)
		__atomic_store_n(&asked[i], tid, __ATOMIC_RELEASE);
}

/* A thread about to exec, and a fork child that armed itself, take no
 * ASK_SIG: one queued to it and still pending when a new image starts kills
 * that image (its handlers are SIG_DFL, and SIGRTMAX's default action is to
 * terminate; a fork child's follower asked its main thread while it was in
 * execve). The thread is listed as asked, and a request already queued is
 * taken out (rt_sigtimedwait dequeues it, blocked or not; the
 * application's own SIGRTMAX is queued again, to this thread). Left: a request
 * the follower decided on before the listing and sends after the drain. */
static void ask_not_me(void)
{
	int self = (int)SYSCALL(SYS_gettid, 0, 0, 0, 0, 0, 0), pid = (int)SYSCALL(SYS_getpid, 0, 0, 0, 0, 0, 0);
	uint64_t m = 1ull << (ASK_SIG - 1);
	struct timespec zero = { 0, 0 };

	siginfo_t si, theirs[8];
	int n = 0;

	if (!was_asked(self))
		note_asked(self);
	/* the application's own SIGRTMAX (a timer, a sigqueue) goes back */
	while (SYSCALL(SYS_rt_sigtimedwait, &m, &si, &zero, 8, 0, 0) == ASK_SIG)
		if (!(si.si_code == SI_QUEUE && si.si_value.sival_ptr == &sud_want && si.si_pid == pid) && n < 8)
			theirs[n++] = si;
	for (int i = 0; i < n; i++)
		SYSCALL(SYS_rt_tgsigqueueinfo, pid, self, ASK_SIG, &theirs[i], 0, 0);
}

/* Ask the threads not asked yet. Threads an armed thread makes arm
 * themselves. */
struct ask_walk {
	long pid, self;
};

static void ask_one(int tid, void *arg)
{
	const struct ask_walk *w = arg;

	if (was_asked(tid))
		return;
	if (tid == w->self) {
		sync_self();
	} else {
		siginfo_t si;
		memset(&si, 0, sizeof(si));
		si.si_signo = ASK_SIG;
		si.si_code = SI_QUEUE;
		si.si_pid = (pid_t)w->pid;
		si.si_uid = getuid();
		si.si_value.sival_ptr = &sud_want;
		SYSCALL(SYS_rt_tgsigqueueinfo, w->pid, tid, ASK_SIG, &si, 0, 0);
	}
	note_asked(tid);
}

static void ask_threads(void)
{
	struct ask_walk w = { SYSCALL(SYS_getpid, 0, 0, 0, 0, 0, 0), SYSCALL(SYS_gettid, 0, 0, 0, 0, 0, 0) };

	rt_tasks_walk(ask_one, &w);
}

int syscall_tp_poll(void)
{
	syscall_site_work();
	if (n_rescans && __atomic_load_n(&sud_want, __ATOMIC_ACQUIRE)) {
		n_rescans--;
		ask_threads();
	} else {
		n_rescans = 0;
	}
	return n_rescans;
}

/* BPFSHIM_NO_SYSCALL_DISPATCH: this process (and what it starts) is not
 * traced by syscall tracepoints, for an application dispatch disturbs. Read
 * at load: the follower must not getenv while the application may be
 * clearing its environment (nginx's workers). */
static int dispatch_off;
/* A fork child arms its thread itself before fork() returns to it (the
 * child of a trapped fork has, do_clone): its follower would ask it with an
 * ASK_SIG, which kills the image it is about to exec (ask_not_me). */
static void dispatch_fork_child(void)
{
	char sel;   /* dispatch_fork_end sets the selector */

	__atomic_store_n(&n_asked, 0, __ATOMIC_RELEASE);   /* the parent's threads are not here */
	if (__atomic_load_n(&sud_want, __ATOMIC_ACQUIRE))
		sync_self_sel(&sel);
	ask_not_me();
}

/* A fork child runs the library's fork handlers before fork() returns to
 * the application: their syscalls and calls are the runtime's (reopening
 * its fds, starting the follower), not the application's, so no
 * tracepoint fires and no probe runs for them (dispatch_fork_begin is the
 * first handler registered, dispatch_fork_end the last). */
static __thread int fork_was_in_probe;

static void dispatch_fork_begin(void)
{
	fork_was_in_probe = in_probe;
	in_probe = 2;
	sud_selector = SYSCALL_DISPATCH_FILTER_ALLOW;
}

static void dispatch_fork_end(void)
{
	sud_selector = sud_armed ? SYSCALL_DISPATCH_FILTER_BLOCK : SYSCALL_DISPATCH_FILTER_ALLOW;
	in_probe = fork_was_in_probe;
}

void dispatch_fork_begin_init(void)
{
	pthread_atfork(NULL, NULL, dispatch_fork_begin);
}

void dispatch_fork_end_init(void)
{
	pthread_atfork(NULL, NULL, dispatch_fork_end);
}

/* Before uprobe_init, whose fork handler starts the child's follower. */
void dispatch_init(void)
{
	dispatch_off = getenv("BPFSHIM_NO_SYSCALL_DISPATCH") != NULL;
	pthread_atfork(NULL, NULL, dispatch_fork_child);
}

/* The mechanism's half of a commit (trace.c syscall_tp_commit): the
 * bitmaps to the rewritten sites' stubs, every thread armed or disarmed. */
void dispatch_want(int attached, const uint8_t *enter, const uint8_t *exit)
{
	int want = attached && !dispatch_off;

	syscall_site_publish(enter, exit, NR_MAX, want);
	if (want == __atomic_load_n(&sud_want, __ATOMIC_RELAXED))
		return;
	if (want)
		install_handler();
	__atomic_store_n(&sud_want, want, __ATOMIC_RELEASE);
	__atomic_store_n(&n_asked, 0, __ATOMIC_RELEASE);
	n_rescans = want ? 4 : 0;
	if (want)
		ask_threads();
}

/* ---- the syscalls made for the application ---- */

/* A thread made by sud_clone_thread, armed, before it runs its first
 * instruction: the sys_exit of its clone (0), as the kernel fires it in the
 * child. */
void sud_child_started(long nr, uint64_t ip);
__attribute__((visibility("hidden"))) void sud_child_started(long nr, uint64_t ip)
{
	sys_trace_child(nr, ip);
	sud_selector = SYSCALL_DISPATCH_FILTER_BLOCK;
}

/* The kernel's struct ucontext up to the mask: what rt_sigreturn restores. */
struct k_ucontext {
	unsigned long uc_flags;
	void *uc_link;
	stack_t uc_stack;
	mcontext_t uc_mcontext;
	uint64_t uc_sigmask;
};

static long emulate_sigreturn(ucontext_t *uc)
{
	struct k_ucontext app;

	if (bpf_rt_copy_nofault(&app, (void *)uc->uc_mcontext.gregs[REG_RSP], sizeof(app)))
		return -EFAULT;
	app_blocks_sigsys = !!(app.uc_sigmask & SIGSYS_BIT);
	app.uc_sigmask &= ~SIGSYS_BIT;
	memcpy(uc, &app, offsetof(struct k_ucontext, uc_sigmask));
	memcpy(&uc->uc_sigmask, &app.uc_sigmask, 8);
	return uc->uc_mcontext.gregs[REG_RAX];
}

static long emulate_sigprocmask(ucontext_t *uc, const long *a)
{
	uint64_t cur, set, app_view;

	if (a[3] != 8)
		return -EINVAL;
	memcpy(&cur, &uc->uc_sigmask, 8);
	app_view = cur | (app_blocks_sigsys ? SIGSYS_BIT : 0);
	if (a[1]) {
		if (bpf_rt_copy_nofault(&set, (void *)a[1], 8))
			return -EFAULT;
		set &= ~((1ull << (SIGKILL - 1)) | (1ull << (SIGSTOP - 1)));
		uint64_t next;
		switch (a[0]) {
		case SIG_BLOCK: next = app_view | set; break;
		case SIG_UNBLOCK: next = app_view & ~set; break;
		case SIG_SETMASK: next = set; break;
		default: return -EINVAL;
		}
		app_blocks_sigsys = !!(next & SIGSYS_BIT);
		next &= ~SIGSYS_BIT;
		memcpy(&uc->uc_sigmask, &next, 8);
	}
	if (a[2] && bpf_rt_copy_nofault((void *)a[2], &app_view, 8))
		return -EFAULT;
	return 0;
}

static long emulate_sigaction(long *a)
{
	struct k_sigaction k;

	if (a[3] != 8)
		return -EINVAL;
	struct k_sigaction *app = app_action(a[0]);
	if (app) {
		struct k_sigaction old = *app;
		if (a[1] && bpf_rt_copy_nofault(&k, (void *)a[1], sizeof(k)))
			return -EFAULT;
		if (a[2] && bpf_rt_copy_nofault((void *)a[2], &old, sizeof(old)))
			return -EFAULT;
		if (a[1])
			*app = k;
		return 0;
	}
	if (a[1]) {
		if (bpf_rt_copy_nofault(&k, (void *)a[1], sizeof(k)))
			return -EFAULT;
		k.mask &= ~SIGSYS_BIT;
		return app_syscall(SYS_rt_sigaction, a[0], (long)&k, a[2], a[3], 0, 0);
	}
	return app_syscall(SYS_rt_sigaction, a[0], a[1], a[2], a[3], 0, 0);
}

/* A temporary mask argument (rt_sigsuspend, ppoll, pselect6, epoll_pwait):
 * a copy without SIGSYS in *copy; the pointer to pass instead. */
static long strip_mask(long ptr, uint64_t *copy)
{
	if (!ptr || bpf_rt_copy_nofault(copy, (void *)ptr, 8))
		return ptr;      /* the kernel gives its own EFAULT */
	*copy &= ~SIGSYS_BIT;
	return (long)copy;
}

static long do_clone(ucontext_t *uc, long nr, long *a)
{
	greg_t *g = uc->uc_mcontext.gregs;
	uint64_t sp = 0, flags = 0;
	long ret;

	if (nr == SYS_clone) {
		flags = a[0];
		sp = a[1];
	} else if (nr == SYS_clone3) {
		uint64_t ca[7];     /* flags, pidfd, child_tid, parent_tid, exit_signal, stack, stack_size */
		if (a[1] < 64 || bpf_rt_copy_nofault(ca, (void *)a[0], sizeof(ca)))
			return SYSCALL(nr, a[0], a[1], 0, 0, 0, 0);
		flags = ca[0];
		sp = ca[5] ? ca[5] + ca[6] : 0;
	}
	if (sp) {
		/* what the child finds below its stack's top: whether it arms
		 * (a new TLS), where it resumes */
		uint64_t below[2] = { flags & CLONE_SETTLS_ ? (uint64_t)nr : 0, g[REG_RIP] };
		if (bpf_rt_copy_nofault((void *)(sp - 16), below, sizeof(below)))
			return -EFAULT;
		return sud_clone_thread(g);
	}
	if (nr == SYS_vfork)
		ret = app_syscall(SYS_fork, 0, 0, 0, 0, 0, 0);
	else if (nr == SYS_clone && (flags & CLONE_VM_))
		ret = app_syscall(SYS_clone, flags & ~(CLONE_VM_ | CLONE_VFORK_), 0, a[2], a[3], a[4], 0);
	else
		ret = app_syscall(nr, a[0], a[1], a[2], a[3], a[4], a[5]);
	if (ret == 0) {
		/* the child of a fork: dispatch is off in it until it arms */
		bpf_rt_forked();
		sud_armed = 0;
		char sel = SYSCALL_DISPATCH_FILTER_ALLOW;
		sync_thread(&sel);
		__atomic_store_n(&n_asked, 0, __ATOMIC_RELEASE);   /* the parent's threads are not here */
		ask_not_me();
	}
	return ret;
}

/* execve: the kernel fires its sys_exit in the new image, before that
 * image's first instruction. Every image the agent starts in (preloaded)
 * was started by a successful execve, so the new image fires it from its
 * constructor (syscall_tp_exec_exit); an old image that had dispatch on
 * leaves a variable in the new environment that says which syscall it was
 * (execve or execveat), taken out before main(). */
#define EXEC_MARK "BPFSHIM_SYS_EXIT_EXECVE="
#define ENV_MAX 4096

static long do_execve(long nr, long *a)
{
	int envp = nr == SYS_execve ? 2 : 3;
	const char **old = (const char **)a[envp];
	static __thread char mark[sizeof(EXEC_MARK) + 8];
	const char **env;
	size_t n = 0;

	if (!old)
		return app_syscall(nr, a[0], a[1], a[2], a[3], a[4], a[5]);
	for (const char *e; n < ENV_MAX; n++) {
		if (bpf_rt_copy_nofault(&e, &old[n], sizeof(e)))
			return -EFAULT;
		if (!e)
			break;
	}
	/* mmap, not malloc: a signal handler may exec while its thread holds malloc's lock */
	size_t len = (n + 2) * sizeof(*env);
	if (n == ENV_MAX || !(env = bpf_rt_mmap(len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)))
		return app_syscall(nr, a[0], a[1], a[2], a[3], a[4], a[5]);
	memcpy(env, old, n * sizeof(*env));
	memcpy(mark, EXEC_MARK, sizeof(EXEC_MARK) - 1);
	mark[sizeof(EXEC_MARK) - 1 + bpf_rt_utoa(mark + sizeof(EXEC_MARK) - 1, (uint64_t)nr)] = 0;
	env[n] = mark;
	env[n + 1] = NULL;
	long b[6] = { a[0], a[1], a[2], a[3], a[4], a[5] };
	b[envp] = (long)env;
	long r = app_syscall(nr, b[0], b[1], b[2], b[3], b[4], b[5]);
	SYSCALL(SYS_munmap, env, len, 0, 0, 0, 0);   /* it failed: the application's syscall goes on as it asked */
	return r;
}

static long do_syscall(ucontext_t *uc, long nr, long *a)
{
	uint64_t m;

	switch (nr) {
	case SYS_rt_sigreturn: return emulate_sigreturn(uc);
	case SYS_rt_sigprocmask: return emulate_sigprocmask(uc, a);
	case SYS_rt_sigaction: return emulate_sigaction(a);
	case SYS_clone: case SYS_clone3: case SYS_vfork: case SYS_fork: return do_clone(uc, nr, a);
	case SYS_execve:
		ask_not_me();
		break;
	case SYS_execveat: {
		ask_not_me();
		if (sys_trace_wants_exit(nr))
			return do_execve(nr, a);
		break;
	}
	case SYS_rt_sigsuspend: a[0] = strip_mask(a[0], &m); break;
	case SYS_ppoll: a[3] = strip_mask(a[3], &m); break;
	case SYS_epoll_pwait: a[4] = strip_mask(a[4], &m); break;
#ifdef SYS_epoll_pwait2
	case SYS_epoll_pwait2: a[4] = strip_mask(a[4], &m); break;
#endif
	case SYS_pselect6: {
		struct { long mask; long size; } d;
		if (a[5] && !bpf_rt_copy_nofault(&d, (void *)a[5], sizeof(d)) && d.mask) {
			static __thread struct { long mask; long size; } dd;
			dd.mask = strip_mask(d.mask, &m);
			dd.size = d.size;
			a[5] = (long)&dd;
		}
		break;
	}
	}
	return app_syscall(nr, a[0], a[1], a[2], a[3], a[4], a[5]);
}

/* A caught syscall between its tracing hooks, from the user registers at
 * the syscall (as task_pt_regs() has them; ax -ENOSYS) and its arguments:
 * the dispatch handler's (uc, its signal frame) and a rewritten site's (uc
 * NULL: never for the syscalls that need the frame, syscall_tp_site).
 * Returns the result, also left in regs->ax. */
static long caught_syscall(struct hook_pt_regs *regs, long *a, ucontext_t *uc)
{
	struct sys_trace t;
	long ret;

	if (!__atomic_load_n(&sud_want, __ATOMIC_ACQUIRE) && sud_armed) {
		/* detached meanwhile: this thread's dispatch ends here (on the
		 * way out of the handler, by the selector it restores) */
		char sel = sud_selector;
		sync_thread(&sel);
	}
	if (!sys_trace_enter(&t, regs, a, &ret))
		ret = do_syscall(uc, (long)regs->orig_ax, a);
	return sys_trace_exit(&t, regs, ret);
}

static void dispatch(ucontext_t *uc)
{
	greg_t *g = uc->uc_mcontext.gregs;
	long a[6] = { g[REG_RDI], g[REG_RSI], g[REG_RDX], g[REG_R10], g[REG_R8], g[REG_R9] };
	struct hook_pt_regs regs = {
		.r15 = g[REG_R15], .r14 = g[REG_R14], .r13 = g[REG_R13], .r12 = g[REG_R12],
		.bp = g[REG_RBP], .bx = g[REG_RBX], .r11 = g[REG_EFL], .r10 = g[REG_R10], .r9 = g[REG_R9],
		.r8 = g[REG_R8], .ax = (uint64_t)-ENOSYS, .cx = g[REG_RIP], .dx = g[REG_RDX],
		.si = g[REG_RSI], .di = g[REG_RDI], .orig_ax = g[REG_RAX], .ip = g[REG_RIP], .cs = 0x33,
		.flags = g[REG_EFL], .sp = g[REG_RSP], .ss = 0x2b,
	};

	g[REG_RAX] = caught_syscall(&regs, a, uc);
}

/* A signal of ours that bpfshim did not send: the application's, as it asked. */
static void forward(int sig, siginfo_t *si, void *uc)
{
	const struct k_sigaction *app = app_action(sig);
	void *h = app ? app->handler : SIG_DFL;

	if (h == SIG_IGN)
		return;
	if (h == SIG_DFL) {
		struct k_sigaction dfl = { SIG_DFL, 0, NULL, 0 };
		SYSCALL(SYS_rt_sigaction, sig, &dfl, NULL, 8, 0, 0);
		SYSCALL(SYS_tgkill, SYSCALL(SYS_getpid, 0, 0, 0, 0, 0, 0), SYSCALL(SYS_gettid, 0, 0, 0, 0, 0, 0),
			sig, 0, 0, 0);
		return;
	}
	if (app->flags & SA_SIGINFO)
		((void (*)(int, siginfo_t *, void *))h)(sig, si, uc);
	else
		((void (*)(int))h)(sig);
}

static void on_sigsys(int sig, siginfo_t *si, void *ucv)
{
	char saved = sud_selector;
	int saved_errno = errno;

	sud_selector = SYSCALL_DISPATCH_FILTER_ALLOW;
	if (sig == SIGSYS && si->si_code == SYS_USER_DISPATCH) {
		syscall_site_trapped((uint64_t)((ucontext_t *)ucv)->uc_mcontext.gregs[REG_RIP]);
		dispatch(ucv);
	}
	else if (sig == ASK_SIG && si->si_code == SI_QUEUE && si->si_value.sival_ptr == &sud_want &&
		 si->si_pid == getpid())
		sync_thread(&saved);
	else
		forward(sig, si, ucv);
	errno = saved_errno;
	sud_selector = saved;
}

/* The traced path of a rewritten site (site.c): its registers are
 * the frame the site's stub saved. The syscalls that need a signal frame go
 * back to trap; the selector says, as it does to dispatch, whether the
 * syscall is the application's. */
int syscall_tp_site(struct hook_pt_regs *r)
{
	long a[6] = { (long)r->di, (long)r->si, (long)r->dx, (long)r->r10, (long)r->r8, (long)r->r9 };

	switch ((long)r->orig_ax) {
	case SYS_rt_sigreturn: case SYS_rt_sigprocmask: case SYS_clone: case SYS_clone3: case SYS_fork: case SYS_vfork:
		return -1;
	}
	char saved = sud_selector;
	if (saved != SYSCALL_DISPATCH_FILTER_BLOCK) {
		/* bpfshim's own work (SUD_INTERNAL_BEGIN), a thread not armed:
		 * what dispatch would let through untraced */
		r->ax = (uint64_t)sud_syscall6((long)r->orig_ax, a[0], a[1], a[2], a[3], a[4], a[5]);
		return 0;
	}
	int saved_errno = errno;
	sud_selector = SYSCALL_DISPATCH_FILTER_ALLOW;
	caught_syscall(r, a, NULL);
	errno = saved_errno;
	sud_selector = saved;
	return 0;
}

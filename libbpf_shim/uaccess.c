/* SPDX-License-Identifier: MIT */
/*
 * Fault-safe access to the caller's memory, as the kernel's copy_from_user:
 * a bad pointer gives -EFAULT, never a crash. The copy runs with a per-thread
 * jump buffer armed; our SIGSEGV/SIGBUS handler jumps back to it when the
 * fault happens inside such a copy and passes every other fault on to the
 * handler that was installed before us.
 *
 * sigsetjmp(.., 0) does not save the signal mask (that would be a syscall per
 * copy); the handler is installed with SA_NODEFER so the mask is unchanged
 * when we jump out of it.
 */
#include <errno.h>
#include <signal.h>
#include <string.h>
#include <pthread.h>
#include "shim.h"

/* volatile, and set before a compiler barrier: the store must not be moved
 * past the copy it guards (the copy cannot see this static otherwise). */
static __thread sigjmp_buf *volatile uaccess_jmp;
#define barrier() __asm__ __volatile__("" ::: "memory")
static struct sigaction prev_segv, prev_bus;
static pthread_once_t once = PTHREAD_ONCE_INIT;

static void chain(int sig, siginfo_t *si, void *uc)
{
	struct sigaction *p = sig == SIGBUS ? &prev_bus : &prev_segv;

	if (p->sa_flags & SA_SIGINFO) {
		if (p->sa_sigaction) {
			p->sa_sigaction(sig, si, uc);
			return;
		}
	} else if (p->sa_handler != SIG_DFL && p->sa_handler != SIG_IGN) {
		p->sa_handler(sig);
		return;
	}
	/* Default action: restore it and let the fault happen again. */
	signal(sig, SIG_DFL);
}

static void on_fault(int sig, siginfo_t *si, void *uc)
{
	sigjmp_buf *j = uaccess_jmp;

	if (j) {
		uaccess_jmp = NULL;
		siglongjmp(*j, 1);
	}
	chain(sig, si, uc);
}

static void install(void)
{
	struct sigaction sa;

	memset(&sa, 0, sizeof(sa));
	sa.sa_sigaction = on_fault;
	sa.sa_flags = SA_SIGINFO | SA_NODEFER | SA_ONSTACK;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGSEGV, &sa, &prev_segv);
	sigaction(SIGBUS, &sa, &prev_bus);
}

static inline void ensure_handler(void)
{
	pthread_once(&once, install);
}

/* A whole command under one guard (one sigsetjmp instead of one per copy):
 * the copies inside it are plain memcpys, and a fault anywhere in it jumps
 * back to the caller's sigsetjmp. Only for code that touches the caller's
 * memory outside any lock. */
void shim_uaccess_enter(sigjmp_buf *jb)
{
	ensure_handler();
	uaccess_jmp = jb;
	barrier();
}

void shim_uaccess_exit(void)
{
	barrier();
	uaccess_jmp = NULL;
}

int shim_copy_from_user(void *dst, uint64_t src, size_t n)
{
	sigjmp_buf jb;

	if (!n)
		return 0;
	if (!src || src + n < src)
		return -EFAULT;
	if (uaccess_jmp) {
		memcpy(dst, (const void *)(uintptr_t)src, n);
		return 0;
	}
	ensure_handler();
	if (sigsetjmp(jb, 0))
		return -EFAULT;
	uaccess_jmp = &jb;
	barrier();
	memcpy(dst, (const void *)(uintptr_t)src, n);
	barrier();
	uaccess_jmp = NULL;
	return 0;
}

int shim_copy_to_user(uint64_t dst, const void *src, size_t n)
{
	sigjmp_buf jb;

	if (!n)
		return 0;
	if (!dst || dst + n < dst)
		return -EFAULT;
	if (uaccess_jmp) {
		memcpy((void *)(uintptr_t)dst, src, n);
		return 0;
	}
	ensure_handler();
	if (sigsetjmp(jb, 0))
		return -EFAULT;
	uaccess_jmp = &jb;
	barrier();
	memcpy((void *)(uintptr_t)dst, src, n);
	barrier();
	uaccess_jmp = NULL;
	return 0;
}

long shim_strncpy_from_user(char *dst, uint64_t src, size_t max)
{
	sigjmp_buf jb;
	volatile size_t i = 0;
	const volatile char *s = (const volatile char *)(uintptr_t)src;

	if (!src)
		return -EFAULT;
	ensure_handler();
	if (sigsetjmp(jb, 0))
		return -EFAULT;
	uaccess_jmp = &jb;
	barrier();
	for (; i < max; i++) {
		dst[i] = s[i];
		if (!dst[i]) {
			uaccess_jmp = NULL;
			return (long)i;
		}
	}
	uaccess_jmp = NULL;
	return -E2BIG;
}

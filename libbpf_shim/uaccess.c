/* SPDX-License-Identifier: MIT */
/*
 * Fault-safe access to the caller's memory, as the kernel's copy_from_user:
 * a bad pointer gives -EFAULT, never a crash. The runtime's fault handler
 * (agent/prog_run.c, the one bpfshim installs) jumps back to a guard armed
 * on the thread: one per copy here, or one over a whole command
 * (bpf_rt_guard_enter, for the single-element map commands' hot path),
 * inside which copies are plain memcpys and a fault ends the command.
 */
#include <errno.h>
#include <string.h>
#include "shim.h"
#include "helpers/helpers.h"

/* memcpy under a guard of its own: libc's copy at libc's speed (attrs,
 * instructions, batches), the fault caught wherever in it it happens. */
static int copy(void *dst, const void *src, size_t n)
{
	bpf_rt_jmp_buf jb;
	bpf_rt_jmp_buf *volatile prev = NULL;

	/* inside a command's guard (map_elem_cmd) a fault ends the command
	 * with EFAULT: its code holds nothing across a copy but buffers it
	 * frees then (shim_map_cmd_abort), so a plain memcpy: ~7 ns a call */
	if (bpf_rt_copy_jmp) {
		memcpy(dst, src, n);
		return 0;
	}
	if (bpf_rt_setjmp(jb)) {
		bpf_rt_guard_exit(prev);
		return -EFAULT;
	}
	prev = bpf_rt_guard_enter(&jb);
	memcpy(dst, src, n);
	bpf_rt_guard_exit(prev);
	return 0;
}

int shim_copy_from_user(void *dst, uint64_t src, size_t n)
{
	if (!n)
		return 0;
	if (!src || src + n < src)
		return -EFAULT;
	return copy(dst, (const void *)(uintptr_t)src, n);
}

int shim_copy_to_user(uint64_t dst, const void *src, size_t n)
{
	if (!n)
		return 0;
	if (!dst || dst + n < dst)
		return -EFAULT;
	return copy((void *)(uintptr_t)dst, src, n);
}

long shim_strncpy_from_user(char *dst, uint64_t src, size_t max)
{
	bpf_rt_jmp_buf jb;
	bpf_rt_jmp_buf *volatile prev = NULL;
	volatile size_t i = 0;
	const volatile char *s = (const volatile char *)(uintptr_t)src;

	if (!src)
		return -EFAULT;
	if (bpf_rt_setjmp(jb)) {
		bpf_rt_guard_exit(prev);
		return -EFAULT;
	}
	prev = bpf_rt_guard_enter(&jb);
	for (; i < max; i++) {
		dst[i] = s[i];
		if (!dst[i]) {
			bpf_rt_guard_exit(prev);
			return (long)i;
		}
	}
	bpf_rt_guard_exit(prev);
	return -E2BIG;
}

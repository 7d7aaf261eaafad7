/* SPDX-License-Identifier: MIT */
/*
 * Hybrid mode (`bpfshim run --kernel`, or BPFSHIM_KERNEL=1 with the library
 * preloaded): the loader's objects are the kernel's. Every bpf() command and
 * every perf_event_open() goes to the kernel as the loader made it, so its
 * fds are kernel fds (the kernel verifier checks its programs, bpftool run
 * without the library sees its maps, pins are in the real bpffs), and the
 * shim's own paths (fd table, pin namespace, pseudo-files) stand aside.
 * ARCHITECTURE.md "Hybrid mode" says what runs where and what comes next
 * (uprobes served in user space beside the kernel's).
 *
 * The mode needs kernel eBPF for the caller: the first process of the
 * command checks it before main() and fails at once, with one line naming
 * what is missing, rather than at each call. Its descendants inherit the
 * mode without checking again (BPFSHIM_KERNEL_CHECKED): a worker that drops
 * its privileges later gets the kernel's EPERM, as without bpfshim.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/syscall.h>
#include <linux/capability.h>
#include "shim.h"
#include "start.h"

int shim_hybrid;

long shim_hybrid_bpf(int cmd, uint64_t uattr, unsigned int size)
{
	return real.syscall(SYS_bpf, cmd, uattr, size);
}

long shim_hybrid_perf_event_open(uint64_t uattr, long pid, long cpu, long group_fd, unsigned long flags)
{
	return real.syscall(SYS_perf_event_open, uattr, pid, cpu, group_fd, flags);
}

#ifndef CAP_PERFMON
#define CAP_PERFMON 38
#endif
#ifndef CAP_BPF
#define CAP_BPF 39
#endif

static int has_cap(const struct __user_cap_data_struct d[2], int cap)
{
	return (d[cap / 32].effective >> (cap % 32)) & 1;
}

/* What the caller lacks for tracing programs (bpf_capable() and
 * perfmon_capable(): CAP_SYS_ADMIN stands in for either). */
static void missing_caps(char *out, size_t n)
{
	struct __user_cap_header_struct h = { .version = _LINUX_CAPABILITY_VERSION_3 };
	struct __user_cap_data_struct d[2];
	int bpf, perfmon;

	memset(d, 0, sizeof(d));
	if (real.syscall(SYS_capget, &h, d)) {
		snprintf(out, n, "CAP_BPF and CAP_PERFMON (or root)");
		return;
	}
	bpf = has_cap(d, CAP_BPF) || has_cap(d, CAP_SYS_ADMIN);
	perfmon = has_cap(d, CAP_PERFMON) || has_cap(d, CAP_SYS_ADMIN);
	if (!bpf && !perfmon)
		snprintf(out, n, "CAP_BPF and CAP_PERFMON are missing (uid %d; run as root)", (int)getuid());
	else if (!bpf || !perfmon)
		snprintf(out, n, "%s is missing (uid %d)", bpf ? "CAP_PERFMON" : "CAP_BPF", (int)getuid());
	else
		snprintf(out, n, "refused with CAP_BPF and CAP_PERFMON (kernel.unprivileged_bpf_disabled, an LSM?)");
}

/* 0 when the caller can load a tracing program in the kernel (what every
 * loader of the mode needs: CAP_BPF + CAP_PERFMON, or root), else why not. */
static int kernel_ebpf_check(char *why, size_t n)
{
	struct bpf_insn insns[2] = {
		{ .code = BPF_ALU64 | BPF_MOV | BPF_K, .dst_reg = BPF_REG_0, .imm = 0 },
		{ .code = BPF_JMP | BPF_EXIT },
	};
	union bpf_attr a;
	char detail[160];

	memset(&a, 0, sizeof(a));
	a.prog_type = BPF_PROG_TYPE_KPROBE;
	a.insns = (uint64_t)(uintptr_t)insns;
	a.insn_cnt = 2;
	a.license = (uint64_t)(uintptr_t)"GPL";
	long fd = real.syscall(SYS_bpf, BPF_PROG_LOAD, &a, sizeof(a));
	if (fd >= 0) {
		real.close((int)fd);
		return 0;
	}
	int e = errno;
	if (e == EPERM || e == EACCES)
		missing_caps(detail, sizeof(detail));
	else if (e == ENOSYS)
		snprintf(detail, sizeof(detail), "this kernel has no bpf() (CONFIG_BPF_SYSCALL)");
	else
		snprintf(detail, sizeof(detail), "%s", strerror(e));
	snprintf(why, n, "bpfshim: hybrid mode (--kernel, BPFSHIM_KERNEL=1) needs kernel eBPF: "
		 "a kprobe-type BPF_PROG_LOAD fails with %s: %s\n", strerrorname_np(e) ? strerrorname_np(e) : "?", detail);
	return -1;
}

/* At start, after the real functions are resolved (interpose.c) and before
 * the agent starts (uprobe.c): start/preload.c. */
void hybrid_init(void)
{
	const char *v = getenv("BPFSHIM_KERNEL");
	char why[400];

	if (!v || strcmp(v, "1") || !shim_interposing())
		return;
	shim_resolve_real();
	if (!getenv("BPFSHIM_KERNEL_CHECKED")) {
		if (kernel_ebpf_check(why, sizeof(why))) {
			if (write(2, why, strlen(why)) < 0) { /* nothing more to say */ }
			_exit(1);
		}
		setenv("BPFSHIM_KERNEL_CHECKED", "1", 1);
	}
	shim_hybrid = 1;
}

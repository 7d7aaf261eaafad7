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
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/syscall.h>
#include <linux/capability.h>
#include "shim.h"
#include "start.h"

int shim_hybrid;

/*
 * Arrays are created BPF_F_MMAPABLE, so that user-space programs can use
 * the kernel's memory itself (ARCHITECTURE.md "Hybrid mode", maps). The
 * flag the loader did not ask for is hidden from what it reads back
 * (GET_INFO_BY_FD) and its mmap of such an array is refused as the kernel
 * refuses it; the kernel ids of those maps, appended lock-free (ids are
 * allocated cyclically: not reused while the table lives). Per process and
 * its forks: another process that opens the map sees the flag.
 */
#define ADDED_MMAP_MAX 4096
static uint32_t added_mmap[ADDED_MMAP_MAX];
static unsigned n_added_mmap;

static int added_mmap_has(uint32_t id)
{
	unsigned n = __atomic_load_n(&n_added_mmap, __ATOMIC_ACQUIRE);

	for (unsigned i = 0; i < n && i < ADDED_MMAP_MAX; i++)
		if (__atomic_load_n(&added_mmap[i], __ATOMIC_RELAXED) == id)
			return 1;
	return 0;
}

static long sys_bpf(int cmd, void *attr, unsigned int size)
{
	return real.syscall(SYS_bpf, cmd, attr, size);
}

/* The kernel's info on a map fd, 0 when fd is one; else -1. */
static int map_info(int fd, struct bpf_map_info *info)
{
	union bpf_attr a;
	char path[40], link[32];
	ssize_t n;

	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	n = real.readlink(path, link, sizeof(link) - 1);
	if (n <= 0)
		return -1;
	link[n] = 0;
	if (strcmp(link, "anon_inode:bpf-map"))
		return -1;
	memset(&a, 0, sizeof(a));
	memset(info, 0, sizeof(*info));
	a.info.bpf_fd = (uint32_t)fd;
	a.info.info_len = sizeof(*info);
	a.info.info = (uint64_t)(uintptr_t)info;
	return sys_bpf(BPF_OBJ_GET_INFO_BY_FD, &a, sizeof(a)) ? -1 : 0;
}

/* A map's id when the shim added BPF_F_MMAPABLE to it, else 0. */
static uint32_t added_mmap_fd(int fd)
{
	struct bpf_map_info info;

	if (!__atomic_load_n(&n_added_mmap, __ATOMIC_ACQUIRE) || map_info(fd, &info))
		return 0;
	return (info.map_flags & BPF_F_MMAPABLE) && added_mmap_has(info.id) ? info.id : 0;
}

static long map_create(uint64_t uattr, unsigned int size)
{
	union bpf_attr a;
	struct bpf_map_info info;
	long fd;
	int e;

	if (size < offsetof(union bpf_attr, map_flags) + sizeof(a.map_flags) || size > sizeof(a) ||
	    shim_copy_from_user(&a, uattr, size))
		return real.syscall(SYS_bpf, BPF_MAP_CREATE, uattr, size);
	if (a.map_type != BPF_MAP_TYPE_ARRAY || (a.map_flags & BPF_F_MMAPABLE))
		return real.syscall(SYS_bpf, BPF_MAP_CREATE, uattr, size);
	a.map_flags |= BPF_F_MMAPABLE;
	fd = sys_bpf(BPF_MAP_CREATE, &a, size);
	if (fd < 0)    /* refused with the flag: the loader gets the kernel's answer to its own attr */
		return real.syscall(SYS_bpf, BPF_MAP_CREATE, uattr, size);
	e = errno;
	if (!map_info((int)fd, &info)) {
		unsigned i = __atomic_fetch_add(&n_added_mmap, 1, __ATOMIC_ACQ_REL);
		if (i < ADDED_MMAP_MAX)
			__atomic_store_n(&added_mmap[i], info.id, __ATOMIC_RELEASE);
		else    /* cannot hide it: make the map the loader asked for */
			__atomic_store_n(&n_added_mmap, ADDED_MMAP_MAX, __ATOMIC_RELEASE);
		if (i < ADDED_MMAP_MAX) {
			errno = e;
			return fd;
		}
	}
	real.close((int)fd);
	return real.syscall(SYS_bpf, BPF_MAP_CREATE, uattr, size);
}

/* bpf_map_info.map_flags as the loader made the map */
static long obj_get_info(uint64_t uattr, unsigned int size)
{
	long r = real.syscall(SYS_bpf, BPF_OBJ_GET_INFO_BY_FD, uattr, size);
	union bpf_attr a;
	uint32_t flags;
	int e = errno;

	if (r || size < offsetof(union bpf_attr, info.info) + sizeof(a.info.info) ||
	    shim_copy_from_user(&a, uattr, offsetof(union bpf_attr, info.info) + sizeof(a.info.info)) ||
	    a.info.info_len < offsetof(struct bpf_map_info, map_flags) + sizeof(flags) ||
	    !added_mmap_fd((int)a.info.bpf_fd))
		goto out;
	if (!shim_copy_from_user(&flags, a.info.info + offsetof(struct bpf_map_info, map_flags), sizeof(flags))) {
		flags &= ~(uint32_t)BPF_F_MMAPABLE;
		shim_copy_to_user(a.info.info + offsetof(struct bpf_map_info, map_flags), &flags, sizeof(flags));
	}
out:
	errno = e;
	return r;
}

long shim_hybrid_bpf(int cmd, uint64_t uattr, unsigned int size)
{
	switch (cmd) {
	case BPF_MAP_CREATE:
		return map_create(uattr, size);
	case BPF_OBJ_GET_INFO_BY_FD:
		return obj_get_info(uattr, size);
	}
	return real.syscall(SYS_bpf, cmd, uattr, size);
}

/* bpf_map_mmap() of an array the loader did not make mmapable: EINVAL
 * (array_map_mmap); -1 with errno set then, else 0 (the kernel's mmap). */
int shim_hybrid_mmap_refused(int fd)
{
	int e = errno;

	if (fd < 0 || !added_mmap_fd(fd)) {
		errno = e;
		return 0;
	}
	errno = EINVAL;
	return -1;
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

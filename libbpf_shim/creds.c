/* SPDX-License-Identifier: MIT */
/*
 * Privilege and identity, interposed: RLIMIT_MEMLOCK raises that need no
 * privilege under bpfshim, "are we root?" (geteuid), credential changes
 * (no thread of ours lives through one: agent/rt_thread.c), and renames
 * (the runtime's comm caches are read again).
 */
#include <dlfcn.h>
#include <errno.h>
#include <grp.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include "interpose.h"
#include "rt_thread.h"
#include "helpers/helpers.h"   /* bpf_rt_comm_epoch */

/* ---------------- RLIMIT_MEMLOCK ---------------- */

/* bpfshim charges nothing to RLIMIT_MEMLOCK; a loader raising it (bpftrace,
 * libbpf without memcg accounting) must not fail for lack of
 * CAP_SYS_RESOURCE. */
static int setrlimit_(__rlimit_resource_t res, const struct rlimit *rl);
BPFSHIM_API int setrlimit(__rlimit_resource_t res, const struct rlimit *rl)
{
	KEEP_ERRNO(int, setrlimit_(res, rl), r_ >= 0);
}

static int setrlimit_(__rlimit_resource_t res, const struct rlimit *rl)
{
	ENSURE();
	int r = real.setrlimit(res, rl);
	if (r < 0 && errno == EPERM && res == RLIMIT_MEMLOCK && !shim_hybrid)
		return 0;
	return r;
}
BPFSHIM_API int setrlimit64(__rlimit_resource_t res, const struct rlimit64 *rl)
{
	return setrlimit(res, (const struct rlimit *)rl);
}

static int prlimit64_(pid_t pid, __rlimit_resource_t res, const struct rlimit64 *n, struct rlimit64 *o);
BPFSHIM_API int prlimit64(pid_t pid, __rlimit_resource_t res, const struct rlimit64 *n, struct rlimit64 *o)
{
	KEEP_ERRNO(int, prlimit64_(pid, res, n, o), r_ >= 0);
}

static int prlimit64_(pid_t pid, __rlimit_resource_t res, const struct rlimit64 *n, struct rlimit64 *o)
{
	ENSURE();
	int r = real.prlimit64(pid, res, n, o);
	if (r < 0 && errno == EPERM && res == RLIMIT_MEMLOCK && n && !shim_hybrid)
		return real.prlimit64(pid, res, NULL, o) == 0 ? 0 : r;
	return r;
}
BPFSHIM_API int prlimit(pid_t pid, __rlimit_resource_t res, const struct rlimit *n, struct rlimit *o)
{
	return prlimit64(pid, res, (const struct rlimit64 *)n, (struct rlimit64 *)o);
}

/* ---------------- "are we root?" ---------------- */

/* bpftrace refuses to start unless geteuid() == 0, though under bpfshim it
 * needs no privilege. Report euid 0 to bpftrace (or to any program when
 * BPFSHIM_FAKE_ROOT=1); everyone else sees the truth. */
static int fake_root(void)
{
	static int v = -1;
	char exe[256];
	ssize_t n;

	if (v >= 0)
		return v;
	if (shim_hybrid)
		return v = 0;   /* the kernel's rules: the tool checks what it would */
	const char *e = getenv("BPFSHIM_FAKE_ROOT");
	if (e)
		return v = (*e == '1');
	n = real.readlink("/proc/self/exe", exe, sizeof(exe) - 1);
	v = 0;
	if (n > 0) {
		exe[n] = 0;
		const char *b = strrchr(exe, '/');
		b = b ? b + 1 : exe;
		v = !strcmp(b, "bpftrace");
	}
	return v;
}

static uid_t geteuid_(void);
BPFSHIM_API uid_t geteuid(void)
{
	KEEP_ERRNO(uid_t, geteuid_(), 1);
}

static uid_t geteuid_(void)
{
	ENSURE();
	if (fake_root())
		return 0;
	return (uid_t)real.syscall(SYS_geteuid);
}

/* ---------------- credentials: no thread of ours lives through a change (agent/rt_thread.c) ---------------- */

#define SETXID(name, proto, args)                                      \
	BPFSHIM_API int name proto                                     \
	{                                                              \
		static int (*fn) proto;                                \
		if (!fn)                                               \
			fn = dlsym(RTLD_NEXT, #name);                  \
		int err_ = errno;                                      \
		rt_threads_pause();                                    \
		int ret_ = fn args;                                    \
		if (ret_ != 0)                                         \
			err_ = errno;                                  \
		rt_threads_resume();                                   \
		errno = err_;                                          \
		return ret_;                                           \
	}

SETXID(setuid, (uid_t u), (u))
SETXID(setgid, (gid_t g), (g))
SETXID(seteuid, (uid_t u), (u))
SETXID(setegid, (gid_t g), (g))
SETXID(setreuid, (uid_t r, uid_t e), (r, e))
SETXID(setregid, (gid_t r, gid_t e), (r, e))
SETXID(setresuid, (uid_t r, uid_t e, uid_t s), (r, e, s))
SETXID(setresgid, (gid_t r, gid_t e, gid_t s), (r, e, s))
SETXID(setgroups, (size_t n, const gid_t *l), (n, l))
/* glibc's initgroups() calls its setgroups() inside libc, not through us */
SETXID(initgroups, (const char *u, gid_t g), (u, g))

/* ---------------- renames: the runtime's comm caches are read again ---------------- */

BPFSHIM_API int prctl(int option, ...)
{
	va_list ap;
	unsigned long a[4];

	ENSURE();
	va_start(ap, option);
	for (int i = 0; i < 4; i++)
		a[i] = va_arg(ap, unsigned long);
	va_end(ap);
	int r = real.prctl(option, a[0], a[1], a[2], a[3]);
	if (option == PR_SET_NAME && r == 0)
		__atomic_add_fetch(&bpf_rt_comm_epoch, 1, __ATOMIC_RELAXED);
	return r;
}

BPFSHIM_API int pthread_setname_np(pthread_t th, const char *name)
{
	ENSURE();
	int r = real.pthread_setname_np ? real.pthread_setname_np(th, name) : ENOSYS;
	if (r == 0)
		__atomic_add_fetch(&bpf_rt_comm_epoch, 1, __ATOMIC_RELAXED);
	return r;
}

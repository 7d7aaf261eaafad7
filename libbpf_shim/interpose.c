/* SPDX-License-Identifier: MIT */
/*
 * The libc entry points loaders reach the kernel through, interposed by
 * LD_PRELOAD. Each wrapper handles what concerns bpfshim objects or paths
 * and passes everything else to the real function unchanged.
 *
 * This file: the real functions (resolved once with RTLD_NEXT), syscall()
 * and bpf(), and the descriptor calls that keep the fd table in step
 * (close, dup*, fcntl). The others, one concern a file: mmap.c (map and
 * perf event fds), fs_views.c (procfs/tracefs as loaders read them),
 * bpffs.c (the pin namespace), wakeup_calls.c (ioctl, epoll, poll),
 * creds.c (RLIMIT_MEMLOCK, "are we root?", credentials, renames).
 */
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <sys/syscall.h>
#include "interpose.h"
#include "start.h"

struct shim_real real;
int real_resolved;

/* Whether this library is in the process's global scope (preloaded), so
 * that its definitions are what the application's calls reach; not when
 * `bpfshim attach` loaded it (RTLD_LOCAL). RTLD_DEFAULT would also search
 * the caller's own scope: the main program's handle does not. */
int shim_interposing(void)
{
	void *main_scope = dlopen(NULL, RTLD_NOW);
	int in = main_scope && dlsym(main_scope, "bpfshim_agent_main") != NULL;

	if (main_scope)
		dlclose(main_scope);
	return in;
}

void shim_resolve_real(void)
{
	if (__atomic_load_n(&real_resolved, __ATOMIC_ACQUIRE))
		return;
#define R(name) real.name = dlsym(RTLD_NEXT, #name)
	R(syscall); R(close); R(dup); R(dup2); R(dup3); R(fcntl); R(mmap);
	R(readlink); R(readlinkat); R(fopen); R(fopen64); R(open); R(open64); R(openat);
	R(statfs); R(statfs64); R(unlink); R(unlinkat); R(rmdir); R(mkdir);
	R(setrlimit); R(prlimit64); R(ioctl); R(epoll_ctl); R(epoll_wait); R(epoll_pwait);
	R(poll); R(ppoll); R(nftw); R(setmntent); R(glob); R(prctl); R(pthread_setname_np);
#undef R
	__atomic_store_n(&real_resolved, 1, __ATOMIC_RELEASE);
}

void interpose_init(void)
{
	shim_resolve_real();
}

/* ---------------- syscall() and bpf() ---------------- */

BPFSHIM_API long syscall(long nr, ...)
{
	va_list ap;
	long a1, a2, a3, a4, a5, a6;

	va_start(ap, nr);
	a1 = va_arg(ap, long); a2 = va_arg(ap, long); a3 = va_arg(ap, long);
	a4 = va_arg(ap, long); a5 = va_arg(ap, long); a6 = va_arg(ap, long);
	va_end(ap);
	ENSURE();
	if (nr == SYS_bpf || nr == SYS_perf_event_open) {
		/* answered here: its own syscalls are bpfshim's, not the caller's */
		int e = errno;
		SUD_INTERNAL_BEGIN();
		long r = nr == SYS_bpf ? shim_sys_bpf((int)a1, (uint64_t)a2, (unsigned int)a3)
			/* pid, cpu, group_fd are ints: only the low 32 bits of the slots are set */
			: shim_perf_event_open((uint64_t)a1, (int)a2, (int)a3, (int)a4, (unsigned long)a5);
		SUD_INTERNAL_END();
		if (r != -1)
			errno = e;   /* see KEEP_ERRNO */
		return r;
	}
	return real.syscall(nr, a1, a2, a3, a4, a5, a6);
}

static int bpf_(int cmd, union bpf_attr *attr, unsigned int size);
BPFSHIM_API int bpf(int cmd, union bpf_attr *attr, unsigned int size)
{
	KEEP_ERRNO(int, bpf_(cmd, attr, size), r_ >= 0);
}

static int bpf_(int cmd, union bpf_attr *attr, unsigned int size)
{
	ENSURE();
	SUD_INTERNAL_BEGIN();
	int r = (int)shim_sys_bpf(cmd, (uint64_t)(uintptr_t)attr, size);
	SUD_INTERNAL_END();
	return r;
}

/* ---------------- descriptors ---------------- */

static void released(int fd, const struct shim_fd *was)
{
	uint32_t kind = was->kind, id = was->id;

	shim_fd_forget(fd);
	if (!shim_fd_other_ref(kind, id, fd))
		shim_release(kind, id);
}

static int close_(int fd);
BPFSHIM_API int close(int fd)
{
	KEEP_ERRNO(int, close_(fd), r_ >= 0);
}

static int close_(int fd)
{
	struct shim_fd *e;
	struct shim_fd copy;
	int r;

	ENSURE();
	if (shim_is_conn_fd(fd))
		return 0;  /* our socket: the app closing "all fds" must not cut us off */
	e = shim_fd_peek(fd);
	if (e && e->internal)
		return 0;  /* the shim's own handle (prog.c) */
	if (e)
		copy = *e;
	else if (shim_hybrid)
		shim_hybrid_closing(fd);   /* a kernel object's twins go first */
	r = real.close(fd);
	if (r == 0 || errno == EINTR)
		shim_wake_closed(fd);
	if (e && (r == 0 || errno == EINTR))
		released(fd, &copy);
	return r;
}

static int dup_(int fd);
BPFSHIM_API int dup(int fd)
{
	KEEP_ERRNO(int, dup_(fd), r_ >= 0);
}

static int dup_(int fd)
{
	ENSURE();
	int n = real.dup(fd);
	if (n >= 0 && shim_fd_peek(fd))
		shim_fd_dup(fd, n);
	return n;
}

static int dup_common(int oldfd, int newfd, int r)
{
	if (r >= 0 && oldfd != newfd) {
		struct shim_fd *o = shim_fd_peek(newfd);
		if (o) {
			struct shim_fd copy = *o;
			released(newfd, &copy);
		}
		if (shim_fd_peek(oldfd))
			shim_fd_dup(oldfd, newfd);
	}
	return r;
}

static int dup2_(int oldfd, int newfd);
BPFSHIM_API int dup2(int oldfd, int newfd)
{
	KEEP_ERRNO(int, dup2_(oldfd, newfd), r_ >= 0);
}

static int dup2_(int oldfd, int newfd)
{
	ENSURE();
	return dup_common(oldfd, newfd, real.dup2(oldfd, newfd));
}

static int dup3_(int oldfd, int newfd, int flags);
BPFSHIM_API int dup3(int oldfd, int newfd, int flags)
{
	KEEP_ERRNO(int, dup3_(oldfd, newfd, flags), r_ >= 0);
}

static int dup3_(int oldfd, int newfd, int flags)
{
	ENSURE();
	return dup_common(oldfd, newfd, real.dup3(oldfd, newfd, flags));
}

BPFSHIM_API int fcntl(int fd, int cmd, ...)
{
	va_list ap;
	long arg;
	int r;

	va_start(ap, cmd);
	arg = va_arg(ap, long);
	va_end(ap);
	ENSURE();
	int e = errno;
	r = real.fcntl(fd, cmd, arg);
	if (r >= 0 && (cmd == F_DUPFD || cmd == F_DUPFD_CLOEXEC) && shim_fd_peek(fd))
		shim_fd_dup(fd, r);
	if (r != -1)
		errno = e;   /* see KEEP_ERRNO */
	return r;
}
BPFSHIM_API int fcntl64(int fd, int cmd, ...) __attribute__((alias("fcntl")));

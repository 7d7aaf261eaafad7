/* SPDX-License-Identifier: MIT */
/*
 * The runtime directory: where the user's server listens and the user's
 * shared files live (attach table, CPU slots, trace pipe, task layout).
 *
 * $BPFSHIM_RUNTIME_DIR, else $XDG_RUNTIME_DIR/bpfshim, else
 * ${TMPDIR:-/tmp}/bpfshim-$UID, chosen once, from the environment the
 * process started with: a process that later clears or replaces its
 * environment (nginx workers, daemons, setuid helpers) keeps it.
 *
 * It is used only if it is a directory of the process's real uid, not a
 * symlink, with no group or other permission bits, checked on the opened
 * directory (O_NOFOLLOW + fstat, no window between check and use: the
 * socket is reached through that fd). Anything else is refused at once with
 * one line naming the path and the fix: another user who created the
 * directory first gets no request, and the caller does not wait.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include "shim.h"
#include "start.h"

static char dir[PATH_MAX];
static uid_t dir_uid;
static int resolved, told;

static void resolve(void)
{
	const char *e = getenv("BPFSHIM_RUNTIME_DIR");
	const char *x = getenv("XDG_RUNTIME_DIR");
	const char *t = getenv("TMPDIR");

	dir_uid = getuid();
	char cwd[PATH_MAX];

	if (e && *e && *e != '/' && getcwd(cwd, sizeof(cwd)) && strlen(cwd) + 1 + strlen(e) < sizeof(dir)) {
		/* the server works from /: made absolute here */
		size_t n = strlen(cwd);
		memcpy(dir, cwd, n);
		dir[n] = '/';
		memcpy(dir + n + 1, e, strlen(e) + 1);
	} else if (e && *e)
		snprintf(dir, sizeof(dir), "%s", e);
	else if (x && *x && !access(x, W_OK))
		snprintf(dir, sizeof(dir), "%s/bpfshim", x);
	else
		snprintf(dir, sizeof(dir), "%s/bpfshim-%u", t && *t ? t : "/tmp", (unsigned)dir_uid);
	resolved = 1;
}

/* First at start, before any other step can ask (start/preload.c). */
void rundir_init(void)
{
	if (!resolved)
		resolve();
}

int shim_rundir_set(const char *path)
{
	size_t n = strlen(path);

	if (!n || n >= sizeof(dir))
		return -ENAMETOOLONG;
	if (!resolved)
		resolve();
	memcpy(dir, path, n + 1);
	told = 0;
	return 0;
}

uid_t shim_rundir_uid(void)
{
	if (!resolved)
		resolve();
	return dir_uid;
}

static void refuse(const char *why, const struct stat *st)
{
	char m[PATH_MAX + 400];
	int k;

	if (__atomic_exchange_n(&told, 1, __ATOMIC_RELAXED))
		return;
	if (st)
		k = snprintf(m, sizeof(m), "bpfshim: refusing runtime directory %s: %s (owner uid %u, mode %04o; "
			     "it must be owned by uid %u, mode 0700, not a symlink): remove it, or set "
			     "BPFSHIM_RUNTIME_DIR to a directory of your own\n", dir, why,
			     (unsigned)st->st_uid, (unsigned)(st->st_mode & 07777), (unsigned)dir_uid);
	else
		k = snprintf(m, sizeof(m), "bpfshim: refusing runtime directory %s: %s: remove it, or set "
			     "BPFSHIM_RUNTIME_DIR to a directory of your own\n", dir, why);
	if (k > 0)
		(void)!write(2, m, (size_t)k);
}

int shim_rundir_open(void)
{
	struct stat st;
	int fd;

	if (!resolved)
		resolve();
	if (!real.syscall)
		shim_resolve_real();
	if (real.mkdir(dir, 0700) && errno != EEXIST)
		return -errno;
	fd = (int)real.syscall(SYS_openat, AT_FDCWD, dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0) {
		int e = errno;
		if (e == ELOOP || e == ENOTDIR) {
			refuse(e == ELOOP ? "it is a symlink" : "not a directory", NULL);
			return -EACCES;
		}
		if ((e == EACCES || e == EPERM) && !lstat(dir, &st)) {
			refuse("not yours", &st);
			return -EACCES;
		}
		return -e;
	}
	if (fstat(fd, &st) || !S_ISDIR(st.st_mode) || st.st_uid != dir_uid || (st.st_mode & 077)) {
		refuse(st.st_uid != dir_uid ? "not yours" : "others have access to it", &st);
		real.close(fd);
		return -EACCES;
	}
	return fd;
}

const char *shim_rundir_path(void)
{
	if (!resolved)
		resolve();
	return dir;
}

int shim_runtime_dir(char *out, size_t n)
{
	int fd = shim_rundir_open();

	if (fd < 0)
		return fd;
	real.close(fd);
	if ((size_t)snprintf(out, n, "%s", dir) >= n)
		return -ENAMETOOLONG;
	return 0;
}

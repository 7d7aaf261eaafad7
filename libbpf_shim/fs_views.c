/* SPDX-License-Identifier: MIT */
/*
 * What loaders check about fds and read from procfs/tracefs, interposed:
 * readlink of /proc/self/fd/N, /proc/self/fdinfo/N, the tracefs files of the
 * tracepoints bpfshim serves (open, fopen, glob), the pseudo-files read
 * around perf/uprobe attachment, trace_pipe (trace_pipe.c).
 */
#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <glob.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/mman.h>
#include "interpose.h"

static const char *kind_link_name(uint32_t kind)
{
	switch (kind) {
	case SHIM_OBJ_MAP: return "anon_inode:bpf-map";
	case SHIM_OBJ_PROG: return "anon_inode:bpf-prog";
	case SHIM_OBJ_LINK: return "anon_inode:bpf_link";
	case SHIM_OBJ_BTF: return "anon_inode:btf";
	case SHIM_OBJ_PERF_EVENT: return "anon_inode:[perf_event]";
	}
	return NULL;
}

/* "/proc/self/<sub>/N" or "/proc/<our pid>/<sub>/N" -> N, else -1. */
static int proc_fd_path(const char *path, const char *sub)
{
	char pfx[64];
	size_t n;
	const char *p;
	char *end;

	if (!path || strncmp(path, "/proc/", 6))
		return -1;
	p = path + 6;
	if (!strncmp(p, "self/", 5)) {
		p += 5;
	} else if (!strncmp(p, "thread-self/", 12)) {
		p += 12;
	} else {
		snprintf(pfx, sizeof(pfx), "%d/", (int)getpid());
		n = strlen(pfx);
		if (strncmp(p, pfx, n))
			return -1;
		p += n;
	}
	n = strlen(sub);
	if (strncmp(p, sub, n) || p[n] != '/')
		return -1;
	p += n + 1;
	long fd = strtol(p, &end, 10);
	if (end == p || *end || fd < 0)
		return -1;
	return (int)fd;
}

static ssize_t fake_readlink(const char *path, char *buf, size_t sz, int *handled)
{
	int fd = proc_fd_path(path, "fd");
	struct shim_fd *e;
	const char *name;
	size_t n;

	*handled = 0;
	if (fd < 0 || !(e = shim_fd_get(fd)) || !(name = kind_link_name(e->kind)))
		return 0;
	*handled = 1;
	n = strlen(name);
	if (n > sz)
		n = sz;
	memcpy(buf, name, n);
	return (ssize_t)n;
}

static ssize_t readlink_(const char *path, char *buf, size_t sz);
BPFSHIM_API ssize_t readlink(const char *path, char *buf, size_t sz)
{
	KEEP_ERRNO(ssize_t, readlink_(path, buf, sz), r_ >= 0);
}

static ssize_t readlink_(const char *path, char *buf, size_t sz)
{
	int handled;
	ssize_t n;

	ENSURE();
	n = fake_readlink(path, buf, sz, &handled);
	return handled ? n : real.readlink(path, buf, sz);
}

static ssize_t readlinkat_(int dirfd, const char *path, char *buf, size_t sz);
BPFSHIM_API ssize_t readlinkat(int dirfd, const char *path, char *buf, size_t sz)
{
	KEEP_ERRNO(ssize_t, readlinkat_(dirfd, path, buf, sz), r_ >= 0);
}

static ssize_t readlinkat_(int dirfd, const char *path, char *buf, size_t sz)
{
	int handled = 0;
	ssize_t n = 0;

	ENSURE();
	if (path && path[0] == '/')
		n = fake_readlink(path, buf, sz, &handled);
	return handled ? n : real.readlinkat(dirfd, path, buf, sz);
}

/* /proc/self/fdinfo/N of our objects: the kernel's fields, composed by the
 * server, served from a memfd. Returns an fd, or -1 if not ours. */
static int fdinfo_fd(const char *path)
{
	int fd = proc_fd_path(path, "fdinfo");
	struct shim_fd *e;
	struct shim_reply rep;
	char text[4096];
	uint32_t args[2];

	if (fd < 0 || !(e = shim_fd_get(fd)))
		return -1;
	args[0] = e->kind;
	args[1] = e->id;
	if (shim_request(SHIM_OP_CTL, SHIM_CTL_FDINFO, real.fcntl(fd, F_GETFL), args, sizeof(args), -1,
			 &rep, text, sizeof(text)) || rep.ret < 0)
		return -1;
	int mfd = memfd_create("fdinfo", MFD_CLOEXEC);
	if (mfd < 0)
		return -1;
	size_t n = strlen(text);
	if (write(mfd, text, n) != (ssize_t)n || lseek(mfd, 0, SEEK_SET)) {
		real.close(mfd);
		return -1;
	}
	return mfd;
}

static int pseudo_fd(const char *path, int flags);

static FILE *fopen_(const char *path, const char *mode);
BPFSHIM_API FILE *fopen(const char *path, const char *mode)
{
	KEEP_ERRNO(FILE *, fopen_(path, mode), r_ != NULL);
}

static FILE *fopen_(const char *path, const char *mode)
{
	ENSURE();
	int fd = fdinfo_fd(path);
	if (fd >= 0)
		return fdopen(fd, "r");
	if (shim_is_trace_pipe(path) && mode && mode[0] == 'r' && !strchr(mode, '+')) {
		fd = shim_trace_pipe_open(O_RDONLY | (strchr(mode, 'e') ? O_CLOEXEC : 0));
		return fd < 0 ? NULL : fdopen(fd, "r");
	}
	FILE *f = mode && mode[0] == 'r' && !strchr(mode, '+') ? mounts_with_bpffs(path) : NULL;
	if (f)
		return f;
	f = real.fopen(path, mode);
	if (!f && (errno == EACCES || errno == EPERM || errno == ENOENT) && mode && mode[0] == 'r' && !strchr(mode, '+')) {
		int saved = errno;
		fd = pseudo_fd(path, O_RDONLY);
		if (fd >= 0)
			return fdopen(fd, "r");
		errno = saved;
	}
	return f;
}
BPFSHIM_API FILE *fopen64(const char *path, const char *mode) __attribute__((alias("fopen")));

/* Pseudo-files loaders read around perf/uprobe attachment, served when the
 * kernel does not let this process read them (unprivileged, containers):
 * what they say is what bpfshim serves. */
static const struct { const char *suffix; const char *text; } pseudo_files[] = {
	{ "/tracing/uprobe_events", "" },
	{ "/tracing/kprobe_events", "" },
	{ "/tracing/available_filter_functions", "" },
	{ "/sys/bus/event_source/devices/uprobe/type", "8\n" },
	{ "/sys/bus/event_source/devices/uprobe/format/retprobe", "config:0\n" },
	{ "/sys/bus/event_source/devices/uprobe/format/ref_ctr_offset", "config:32-63\n" },
};

static int memfd_with(const char *text)
{
	int fd = memfd_create("bpfshim-pseudo", MFD_CLOEXEC);
	size_t n = strlen(text);

	if (fd < 0)
		return -1;
	if ((n && write(fd, text, n) != (ssize_t)n) || lseek(fd, 0, SEEK_SET)) {
		real.close(fd);
		return -1;
	}
	return fd;
}

/* tracefs files of the tracepoints bpfshim serves (syscall_server/
 * tracepoints.py): the server's text, so loader and server agree on ids.
 * `path` under a tracefs root; 0 and the text in `out`, or -1. */
static const char *const tracefs_roots[] = { "/sys/kernel/tracing/", "/sys/kernel/debug/tracing/" };

static int tracefs_text(const char *path, char *out, size_t n)
{
	struct shim_reply rep;

	for (size_t i = 0; i < BPFSHIM_ARRAY_SIZE(tracefs_roots); i++) {
		size_t k = strlen(tracefs_roots[i]);
		const char *rel = path + k;
		/* the server answers for the events it serves, ENOENT otherwise */
		if (strncmp(path, tracefs_roots[i], k) || (strcmp(rel, "available_events") && strncmp(rel, "events/", 7)))
			continue;
		out[0] = 0;
		if (shim_request(SHIM_OP_CTL, SHIM_CTL_TRACEFS_READ, 0, rel, strlen(rel) + 1, -1, &rep, out, n))
			return -1;
		if (rep.err) {
			shim_say_once(out);   /* a tracepoint bpfshim does not serve: why */
			return -1;
		}
		return 0;
	}
	return -1;
}

static char tracefs_buf[SHIM_MSG_MAX];

static int tracefs_fd(const char *path)
{
	return tracefs_text(path, tracefs_buf, sizeof(tracefs_buf)) ? -1 : memfd_with(tracefs_buf);
}

static int by_name(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* glob() of served tracefs event files that cannot be listed (bpftrace
 * expands tracepoint wildcards so): the served events that match. */
static int glob_(const char *pattern, int flags, int (*errfunc)(const char *, int), glob_t *pglob);
BPFSHIM_API int glob(const char *pattern, int flags, int (*errfunc)(const char *, int), glob_t *pglob)
{
	KEEP_ERRNO(int, glob_(pattern, flags, errfunc, pglob), r_ == 0);
}

static int glob_(const char *pattern, int flags, int (*errfunc)(const char *, int), glob_t *pglob)
{
	ENSURE();
	int r = real.glob(pattern, flags, errfunc, pglob);
	size_t n = 0, cap = 0;
	char **v = NULL;

	if (shim_hybrid || (r != GLOB_NOMATCH && r != GLOB_ABORTED) || (flags & (GLOB_APPEND | GLOB_DOOFFS)))
		return r;
	for (size_t i = 0; i < BPFSHIM_ARRAY_SIZE(tracefs_roots); i++) {
		size_t k = strlen(tracefs_roots[i]);
		char avail[64], *save = NULL;
		if (strncmp(pattern, tracefs_roots[i], k) || strncmp(pattern + k, "events/", 7))
			continue;
		snprintf(avail, sizeof(avail), "%savailable_events", tracefs_roots[i]);
		if (tracefs_text(avail, tracefs_buf, sizeof(tracefs_buf)))
			break;
		const char *rest = strchr(pattern + k + 7, '/');     /* after CAT */
		rest = rest ? strchr(rest + 1, '/') : NULL;          /* after NAME: the file, if any */
		for (char *ev = strtok_r(tracefs_buf, "\n", &save); ev; ev = strtok_r(NULL, "\n", &save)) {
			char *colon = strchr(ev, ':'), cand[512];
			if (!colon)
				continue;
			*colon = '/';
			snprintf(cand, sizeof(cand), "%sevents/%s%s", tracefs_roots[i], ev, rest ? rest : "");
			if (fnmatch(pattern, cand, FNM_PATHNAME | FNM_PERIOD))
				continue;
			if (n + 2 > cap) {
				char **nv = realloc(v, (cap = cap ? 2 * cap : 64) * sizeof(*v));
				if (!nv)
					break;
				v = nv;
			}
			if (!(v[n] = strdup(cand)))
				break;
			n++;
		}
		break;
	}
	if (!n) {
		free(v);
		return r;
	}
	if (!(flags & GLOB_NOSORT))
		qsort(v, n, sizeof(*v), by_name);
	v[n] = NULL;
	/* globfree() of the application's libc frees what it holds */
	pglob->gl_pathc = n;
	pglob->gl_pathv = v;
	pglob->gl_offs = 0;
	return 0;
}

static int pseudo_fd(const char *path, int flags)
{
	size_t n = path ? strlen(path) : 0;

	if (shim_hybrid)
		return -1;   /* the kernel's files, as it serves them */
	if ((flags & O_ACCMODE) != O_RDONLY)
		return -1;
	int fd = tracefs_fd(path);
	if (fd >= 0)
		return fd;
	for (size_t i = 0; i < BPFSHIM_ARRAY_SIZE(pseudo_files); i++) {
		size_t k = strlen(pseudo_files[i].suffix);
		if (n >= k && !strcmp(path + n - k, pseudo_files[i].suffix))
			return memfd_with(pseudo_files[i].text);
	}
	return -1;
}

static int open_common(int dirfd, const char *path, int flags, mode_t mode, int at)
{
	int fd = fdinfo_fd(path);
	if (fd >= 0)
		return fd;
	if (shim_is_trace_pipe(path))
		return shim_trace_pipe_open(flags);
	fd = at ? real.openat(dirfd, path, flags, mode) : real.open(path, flags, mode);
	if (fd < 0 && (errno == EACCES || errno == EPERM || errno == ENOENT)) {
		int saved = errno, p = pseudo_fd(path, flags);
		if (p >= 0)
			return p;
		if (!shim_hybrid && path && strstr(path, "tracing/kprobe_events"))   /* BCC's kprobes */
			shim_say_once(SHIM_NO_KPROBES);
		errno = saved;
	}
	return fd;
}

/* The mode argument of open(2) and openat(2), which comes only with
 * O_CREAT or O_TMPFILE (a macro: va_start belongs to the variadic function) */
#define OPEN_MODE(flags)                                          \
	({                                                        \
		mode_t mode_ = 0;                                 \
		if ((flags) & (O_CREAT | O_TMPFILE)) {            \
			va_list ap_;                              \
			va_start(ap_, flags);                     \
			mode_ = va_arg(ap_, mode_t);              \
			va_end(ap_);                              \
		}                                                 \
		mode_;                                            \
	})

BPFSHIM_API int open(const char *path, int flags, ...)
{
	ENSURE();
	mode_t mode = OPEN_MODE(flags);
	KEEP_ERRNO(int, open_common(AT_FDCWD, path, flags, mode, 0), r_ >= 0);
}
BPFSHIM_API int open64(const char *path, int flags, ...) __attribute__((alias("open")));

BPFSHIM_API int openat(int dirfd, const char *path, int flags, ...)
{
	ENSURE();
	mode_t mode = OPEN_MODE(flags);
	KEEP_ERRNO(int, open_common(dirfd, path, flags, mode, 1), r_ >= 0);
}
BPFSHIM_API int openat64(int dirfd, const char *path, int flags, ...) __attribute__((alias("openat")));

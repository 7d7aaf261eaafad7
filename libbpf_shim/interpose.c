/* SPDX-License-Identifier: MIT */
/*
 * The libc entry points loaders reach the kernel through, interposed by
 * LD_PRELOAD. Each wrapper handles what concerns bpfshim objects or paths
 * and passes everything else to the real function unchanged.
 */
#include <dlfcn.h>
#include <grp.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <fnmatch.h>
#include <ftw.h>
#include <glob.h>
#include <mntent.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include "shim.h"
#include "rt_thread.h"
#include "helpers/helpers.h"   /* bpf_rt_comm_epoch */
#include "start.h"

struct shim_real real;
static int resolved;

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
	if (__atomic_load_n(&resolved, __ATOMIC_ACQUIRE))
		return;
#define R(name) real.name = dlsym(RTLD_NEXT, #name)
	R(syscall); R(close); R(dup); R(dup2); R(dup3); R(fcntl); R(mmap);
	R(readlink); R(readlinkat); R(fopen); R(fopen64); R(open); R(open64); R(openat);
	R(statfs); R(statfs64); R(unlink); R(unlinkat); R(rmdir); R(mkdir);
	R(setrlimit); R(prlimit64); R(ioctl); R(epoll_ctl); R(epoll_wait); R(epoll_pwait);
	R(poll); R(ppoll); R(nftw); R(setmntent); R(glob); R(prctl); R(pthread_setname_np);
#undef R
	__atomic_store_n(&resolved, 1, __ATOMIC_RELEASE);
}

void interpose_init(void)
{
	shim_resolve_real();
}

#define ENSURE() do { if (__builtin_expect(!resolved, 0)) shim_resolve_real(); } while (0)

/* Every entry point leaves errno as it found it when it succeeds, as the
 * kernel's syscalls and libc's wrappers do: the shim's own work (connecting,
 * spawning the server, notifying it) must not show (bpftool batch checks
 * errno after reading each line). */
#define KEEP_ERRNO(type, call, ok)                      \
	do {                                            \
		int e_ = errno;                         \
		type r_ = (call);                       \
		if (ok)                                 \
			errno = e_;                     \
		return r_;                              \
	} while (0)

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

/* ---------------- mmap of map fds ---------------- */

/* ringbuf_map_mmap_kern(): the consumer page may be mapped writable (one
 * page at offset 0); the producer page and the data, which the kernel maps
 * twice back to back, read-only from offset 4096. */
static void *ringbuf_mmap(struct shim_fd *e, void *addr, size_t len, int prot, int flags, off_t off)
{
	const struct shm_map_hdr *h = e->map.hdr;
	uint64_t data = h->attr.max_entries, pg = 4096, meta = SHM_RINGBUF_META_PAGES * pg;
	uint64_t total = meta + 2 * data;       /* what the kernel's vma may cover */
	char *base;

	if (!(flags & MAP_SHARED) || off % pg) {
		errno = EINVAL;
		return MAP_FAILED;
	}
	if ((prot & PROT_WRITE) && (off != 0 || len != pg)) {
		errno = EPERM;
		return MAP_FAILED;
	}
	if ((uint64_t)off + len > total) {
		errno = EINVAL;
		return MAP_FAILED;
	}
	/* file layout: consumer page, producer page, data once */
	uint64_t file_end = meta + data;
	if ((uint64_t)off + len <= file_end)
		return real.mmap(addr, len, prot, flags, e->map.fd, off + (off_t)h->data_off);
	base = real.mmap(addr, len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | (flags & MAP_FIXED), -1, 0);
	if (base == MAP_FAILED)
		return MAP_FAILED;
	uint64_t first = file_end - (uint64_t)off;
	if (real.mmap(base, first, prot, MAP_SHARED | MAP_FIXED, e->map.fd, off + (off_t)h->data_off) == MAP_FAILED ||
	    real.mmap(base + first, len - first, prot, MAP_SHARED | MAP_FIXED, e->map.fd,
		      (off_t)(h->data_off + meta)) == MAP_FAILED) {
		int er = errno;
		munmap(base, len);
		errno = er;
		return MAP_FAILED;
	}
	return base;
}

/* bpf_map_mmap(): only BPF_F_MMAPABLE arrays (ringbufs: see ringbuf
 * support); the file offset the loader passes is relative to the values. */
static void *mmap_(void *addr, size_t len, int prot, int flags, int fd, off_t off);
BPFSHIM_API void *mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
	KEEP_ERRNO(void *, mmap_(addr, len, prot, flags, fd, off), r_ != MAP_FAILED);
}

static void *mmap_(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
	struct shim_fd *e;

	ENSURE();
	if (shim_hybrid && fd >= 0 && !(flags & MAP_ANONYMOUS) && shim_hybrid_mmap_refused(fd))
		return MAP_FAILED;
	/* an fd the table does not know (inherited over exec) may be a map */
	if (fd < 0 || (flags & MAP_ANONYMOUS) || shim_internal || !(e = shim_fd_get(fd)))
		return real.mmap(addr, len, prot, flags, fd, off);
	if (e->kind == SHIM_OBJ_PERF_EVENT)
		return shim_perf_mmap(e, addr, len, prot, flags, off);
	if (e->kind != SHIM_OBJ_MAP) {
		errno = ENODEV;
		return MAP_FAILED;
	}
	const struct shm_map_hdr *h = e->map.hdr;
	if (h->attr.spin_lock_off >= 0) {
		errno = SHM_ENOTSUPP;
		return MAP_FAILED;
	}
	if (e->map.ops->facts.mmap == SHM_MMAP_RINGBUF)
		return ringbuf_mmap(e, addr, len, prot, flags, off);
	if (e->map.ops->facts.mmap != SHM_MMAP_VALUES) {
		errno = SHM_ENOTSUPP;   /* no map_mmap for this type */
		return MAP_FAILED;
	}
	if (!(h->attr.map_flags & BPF_F_MMAPABLE) || !(flags & MAP_SHARED)) {
		errno = EINVAL;
		return MAP_FAILED;
	}
	if (e->f_flags & BPF_F_RDONLY) {
		/* an fd opened read-only: the mmap core refuses a writable shared
		 * mapping, and bpf_map_mmap() any other (measured on 6.18) */
		errno = (prot & PROT_WRITE) ? EACCES : EINVAL;
		return MAP_FAILED;
	}
	if (prot & PROT_WRITE) {
		if (h->frozen) {
			errno = EPERM;
			return MAP_FAILED;
		}
		if (h->attr.map_flags & BPF_F_RDONLY_PROG) {
			errno = EACCES;
			return MAP_FAILED;
		}
	}
	uint64_t area = BPFSHIM_ROUND_UP((uint64_t)e->map.value_stride * h->attr.max_entries, 4096);
	if ((uint64_t)off + len > area) {
		errno = EINVAL;
		return MAP_FAILED;
	}
	return real.mmap(addr, len, prot, flags, fd, off + (off_t)h->data_off);
}
BPFSHIM_API void *mmap64(void *, size_t, int, int, int, off_t) __attribute__((alias("mmap")));

/* ---------------- what loaders check about fds ---------------- */

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
static FILE *mounts_with_bpffs(const char *path);

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

BPFSHIM_API int open(const char *path, int flags, ...)
{
	mode_t mode = 0;
	ENSURE();
	if (flags & (O_CREAT | O_TMPFILE)) {
		va_list ap;
		va_start(ap, flags);
		mode = va_arg(ap, mode_t);
		va_end(ap);
	}
	KEEP_ERRNO(int, open_common(AT_FDCWD, path, flags, mode, 0), r_ >= 0);
}
BPFSHIM_API int open64(const char *path, int flags, ...) __attribute__((alias("open")));

BPFSHIM_API int openat(int dirfd, const char *path, int flags, ...)
{
	mode_t mode = 0;
	ENSURE();
	if (flags & (O_CREAT | O_TMPFILE)) {
		va_list ap;
		va_start(ap, flags);
		mode = va_arg(ap, mode_t);
		va_end(ap);
	}
	KEEP_ERRNO(int, open_common(dirfd, path, flags, mode, 1), r_ >= 0);
}
BPFSHIM_API int openat64(int dirfd, const char *path, int flags, ...) __attribute__((alias("openat")));

/* ---------------- bpffs ---------------- */

int shim_is_bpffs_path(const char *path)
{
	/* hybrid: pins are the kernel's, in the real bpffs */
	return !shim_hybrid && path && !strncmp(path, "/sys/fs/bpf", 11) && (path[11] == 0 || path[11] == '/');
}

#define BPF_FS_MAGIC 0xcafe4a11

static int pin_ctl(int ctl, const char *path);

static int statfs_(const char *path, struct statfs *buf);
BPFSHIM_API int statfs(const char *path, struct statfs *buf)
{
	KEEP_ERRNO(int, statfs_(path, buf), r_ >= 0);
}

static int statfs_(const char *path, struct statfs *buf)
{
	ENSURE();
	if (shim_is_bpffs_path(path)) {
		if (pin_ctl(SHIM_CTL_PIN_STAT, path) < 0)
			return -1;   /* errno from the pin namespace: ENOENT */
		memset(buf, 0, sizeof(*buf));
		buf->f_type = BPF_FS_MAGIC;
		buf->f_bsize = 4096;
		buf->f_namelen = 255;
		buf->f_frsize = 4096;
		return 0;
	}
	return real.statfs(path, buf);
}
BPFSHIM_API int statfs64(const char *path, struct statfs64 *buf)
{
	/* Same layout as struct statfs on 64-bit targets. */
	return statfs(path, (struct statfs *)buf);
}

static int pin_ctl(int ctl, const char *path)
{
	struct shim_reply rep;
	int err = shim_request(SHIM_OP_CTL, ctl, 0, path, strlen(path) + 1, -1, &rep, NULL, 0);

	if (err)
		return (int)shim_err(-err);
	if (rep.err)
		return (int)shim_err(rep.err);
	return (int)rep.ret;
}

static int unlink_(const char *path);
BPFSHIM_API int unlink(const char *path)
{
	KEEP_ERRNO(int, unlink_(path), r_ >= 0);
}

static int unlink_(const char *path)
{
	ENSURE();
	if (shim_is_bpffs_path(path))
		return pin_ctl(SHIM_CTL_PIN_UNLINK, path);
	return real.unlink(path);
}

static int unlinkat_(int dirfd, const char *path, int flags);
BPFSHIM_API int unlinkat(int dirfd, const char *path, int flags)
{
	KEEP_ERRNO(int, unlinkat_(dirfd, path, flags), r_ >= 0);
}

static int unlinkat_(int dirfd, const char *path, int flags)
{
	ENSURE();
	if (shim_is_bpffs_path(path))
		return pin_ctl(SHIM_CTL_PIN_UNLINK, path);
	return real.unlinkat(dirfd, path, flags);
}

static int rmdir_(const char *path);
BPFSHIM_API int rmdir(const char *path)
{
	KEEP_ERRNO(int, rmdir_(path), r_ >= 0);
}

static int rmdir_(const char *path)
{
	ENSURE();
	if (shim_is_bpffs_path(path))
		return pin_ctl(SHIM_CTL_PIN_UNLINK, path);
	return real.rmdir(path);
}

static int mkdir_(const char *path, mode_t mode);
BPFSHIM_API int mkdir(const char *path, mode_t mode)
{
	KEEP_ERRNO(int, mkdir_(path, mode), r_ >= 0);
}

static int mkdir_(const char *path, mode_t mode)
{
	ENSURE();
	if (shim_is_bpffs_path(path))
		return pin_ctl(SHIM_CTL_PIN_MKDIR, path);
	return real.mkdir(path, mode);
}

/* Walking the pin namespace (bpftool -f: nftw() over every bpf mount of
 * /proc/mounts, bpf_obj_get() of each file). The server lists the tree in
 * pre-order, "d PATH" or "f PATH" a line. */
static char pin_tree[SHIM_MSG_MAX];

typedef int (*nftw_fn)(const char *, const struct stat *, int, struct FTW *);

static int pin_visit(nftw_fn fn, const char *path, int is_dir, int flag, int level)
{
	struct stat st = { .st_mode = is_dir ? S_IFDIR | 0700 : S_IFREG | 0600, .st_nlink = is_dir ? 2 : 1,
			   .st_uid = geteuid(), .st_gid = getegid(), .st_blksize = 4096 };
	struct FTW f = { .base = (int)(strrchr(path, '/') - path) + 1, .level = level };

	return fn(path, &st, flag, &f);
}

static int is_under(const char *path, const char *dir)
{
	size_t n = strlen(dir);
	return !strncmp(path, dir, n) && path[n] == '/';
}

static int nftw_(const char *dir, nftw_fn fn, int nopenfd, int flags);
BPFSHIM_API int nftw(const char *dir, nftw_fn fn, int nopenfd, int flags)
{
	KEEP_ERRNO(int, nftw_(dir, fn, nopenfd, flags), r_ != -1);
}

static int nftw_(const char *dir, nftw_fn fn, int nopenfd, int flags)
{
	struct shim_reply rep;
	const char *stack[64];       /* the directories the walk is in */
	int depth = 0, ret = 0, skip = -1, act = flags & FTW_ACTIONRETVAL;

	ENSURE();
	if (!shim_is_bpffs_path(dir))
		return real.nftw(dir, (void *)fn, nopenfd, flags);
	int err = shim_request(SHIM_OP_CTL, SHIM_CTL_PIN_LIST, 0, dir, strlen(dir) + 1, -1, &rep,
			       pin_tree, sizeof(pin_tree));
	if (err || rep.err)
		return (int)shim_err(err ? -err : rep.err);
	char *tree = strdup(pin_tree);   /* fn calls into the shim (bpf_obj_get) */
	if (!tree)
		return (int)shim_err(ENOMEM);
	for (char *ln = strtok(tree, "\n"); ln && !ret; ln = strtok(NULL, "\n")) {
		const char *path = ln + 2;
		int is_dir = ln[0] == 'd';
		while (depth && !is_under(path, stack[depth - 1]) && !ret) {
			depth--;
			if ((flags & FTW_DEPTH) && skip < 0)
				ret = pin_visit(fn, stack[depth], 1, FTW_DP, depth);
			if (skip == depth)
				skip = -1;
		}
		if (ret || (skip >= 0 && depth > skip) || depth == 64)
			continue;
		if (!is_dir || !(flags & FTW_DEPTH))
			ret = pin_visit(fn, path, is_dir, is_dir ? FTW_D : FTW_F, depth);
		if (act && ret != FTW_STOP) {
			if (is_dir && ret == FTW_SKIP_SUBTREE)
				skip = depth;
			ret = 0;
		}
		if (is_dir)
			stack[depth++] = path;
	}
	while (!ret && depth--)
		if ((flags & FTW_DEPTH) && skip < 0)
			ret = pin_visit(fn, stack[depth], 1, FTW_DP, depth);
	free(tree);
	return ret;
}
/* struct stat64 is struct stat on 64-bit targets */
BPFSHIM_API int nftw64(const char *dir, int (*fn)(const char *, const struct stat64 *, int, struct FTW *),
		       int nopenfd, int flags)
{
	return nftw(dir, (nftw_fn)fn, nopenfd, flags);
}

/* The mount table lists a bpffs at /sys/fs/bpf (as statfs() says), also
 * where none is mounted, so tools that look for bpf mounts find the pins. */
static FILE *mounts_with_bpffs(const char *path)
{
	if (shim_hybrid || !path || (strcmp(path, "/proc/mounts") && strcmp(path, "/proc/self/mounts")))
		return NULL;
	FILE *in = real.fopen(path, "r");
	int fd = memfd_create("bpfshim-mounts", MFD_CLOEXEC), found = 0;
	char line[4096];
	if (!in || fd < 0) {
		if (in)
			fclose(in);
		if (fd >= 0)
			real.close(fd);
		return NULL;
	}
	while (fgets(line, sizeof(line), in)) {
		char dev[256], dir[1024], type[64];
		if (sscanf(line, "%255s %1023s %63s", dev, dir, type) == 3 && !strcmp(dir, "/sys/fs/bpf") &&
		    !strcmp(type, "bpf"))
			found = 1;
		if (write(fd, line, strlen(line)) < 0)
			break;
	}
	fclose(in);
	static const char bpffs[] = "bpf /sys/fs/bpf bpf rw,nosuid,nodev,noexec,relatime,mode=700 0 0\n";
	if ((!found && write(fd, bpffs, sizeof(bpffs) - 1) < 0) || lseek(fd, 0, SEEK_SET)) {
		real.close(fd);
		return NULL;
	}
	return fdopen(fd, "r");
}

static FILE *setmntent_(const char *path, const char *mode);
BPFSHIM_API FILE *setmntent(const char *path, const char *mode)
{
	KEEP_ERRNO(FILE *, setmntent_(path, mode), r_ != NULL);
}

static FILE *setmntent_(const char *path, const char *mode)
{
	ENSURE();
	FILE *f = mode && mode[0] == 'r' ? mounts_with_bpffs(path) : NULL;
	return f ? f : real.setmntent(path, mode);
}

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

/* ---------------- perf event and ringbuf fds: ioctl, epoll, poll (wakeup.c) ---------------- */

BPFSHIM_API int ioctl(int fd, unsigned long req, ...)
{
	va_list ap;
	unsigned long arg;
	struct shim_fd *e;

	va_start(ap, req);
	arg = va_arg(ap, unsigned long);
	va_end(ap);
	ENSURE();
	e = shim_fd_peek(fd);
	if (e && e->kind == SHIM_OBJ_PERF_EVENT)
		KEEP_ERRNO(int, shim_perf_ioctl(e, req, arg), r_ >= 0);
	if (shim_hybrid) {
		int r;
		if (shim_hybrid_ioctl(fd, req, arg, &r))
			return r;
	}
	return real.ioctl(fd, req, arg);
}

static int epoll_ctl_(int epfd, int op, int fd, struct epoll_event *ev);
BPFSHIM_API int epoll_ctl(int epfd, int op, int fd, struct epoll_event *ev)
{
	KEEP_ERRNO(int, epoll_ctl_(epfd, op, fd, ev), r_ >= 0);
}

static int epoll_ctl_(int epfd, int op, int fd, struct epoll_event *ev)
{
	ENSURE();
	return shim_wake_epoll_ctl(epfd, op, fd, ev);
}

static int epoll_wait_(int epfd, struct epoll_event *evs, int max, int timeout);
BPFSHIM_API int epoll_wait(int epfd, struct epoll_event *evs, int max, int timeout)
{
	KEEP_ERRNO(int, epoll_wait_(epfd, evs, max, timeout), r_ >= 0);
}

static int epoll_wait_(int epfd, struct epoll_event *evs, int max, int timeout)
{
	ENSURE();
	shim_wake_epoll_before(epfd);
	int r = real.epoll_wait(epfd, evs, max, timeout);
	shim_wake_epoll_after(epfd, evs, r);
	return r;
}

static int epoll_pwait_(int epfd, struct epoll_event *evs, int max, int timeout, const sigset_t *ss);
BPFSHIM_API int epoll_pwait(int epfd, struct epoll_event *evs, int max, int timeout, const sigset_t *ss)
{
	KEEP_ERRNO(int, epoll_pwait_(epfd, evs, max, timeout, ss), r_ >= 0);
}

static int epoll_pwait_(int epfd, struct epoll_event *evs, int max, int timeout, const sigset_t *ss)
{
	ENSURE();
	shim_wake_epoll_before(epfd);
	int r = real.epoll_pwait(epfd, evs, max, timeout, ss);
	shim_wake_epoll_after(epfd, evs, r);
	return r;
}

static int poll_(struct pollfd *fds, nfds_t n, int timeout);
BPFSHIM_API int poll(struct pollfd *fds, nfds_t n, int timeout)
{
	KEEP_ERRNO(int, poll_(fds, n, timeout), r_ >= 0);
}

static int poll_(struct pollfd *fds, nfds_t n, int timeout)
{
	ENSURE();
	struct pollfd *orig = shim_wake_poll_before(fds, n);
	int r = real.poll(fds, n, timeout);
	int er = errno;
	shim_wake_poll_after(fds, n, orig);
	errno = er;
	return r;
}

static int ppoll_(struct pollfd *fds, nfds_t n, const struct timespec *ts, const sigset_t *ss);
BPFSHIM_API int ppoll(struct pollfd *fds, nfds_t n, const struct timespec *ts, const sigset_t *ss)
{
	KEEP_ERRNO(int, ppoll_(fds, n, ts, ss), r_ >= 0);
}

static int ppoll_(struct pollfd *fds, nfds_t n, const struct timespec *ts, const sigset_t *ss)
{
	ENSURE();
	struct pollfd *orig = shim_wake_poll_before(fds, n);
	int r = real.ppoll(fds, n, ts, ss);
	int er = errno;
	shim_wake_poll_after(fds, n, orig);
	errno = er;
	return r;
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

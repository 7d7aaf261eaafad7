/* SPDX-License-Identifier: MIT */
/*
 * What code that runs inside a probe uses instead of libc. Raw system calls: libc's wrappers of
 * open/close/mmap are interposed by the shim (fd table look-ups that may
 * ask the server, wake-up registrations under a lock), and a probe may
 * interrupt any of them. These go straight to the kernel. They return
 * -errno, as the kernel does, and leave errno alone.
 */
#ifndef BPFSHIM_RAWSYS_H
#define BPFSHIM_RAWSYS_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <pthread.h>
#include <errno.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <unistd.h>

static inline long bpf_rt_sys(long n, long a, long b, long c, long d, long e, long f)
{
	register long r10 __asm__("r10") = d;
	register long r8 __asm__("r8") = e;
	register long r9 __asm__("r9") = f;
	long ret;

	__asm__ volatile("syscall"
			 : "=a"(ret)
			 : "0"(n), "D"(a), "S"(b), "d"(c), "r"(r10), "r"(r8), "r"(r9)
			 : "rcx", "r11", "memory");
	return ret;
}

#define BPF_RT_SYS(n, ...) bpf_rt_sys_n((n), __VA_ARGS__, 0, 0, 0, 0, 0, 0)
#define bpf_rt_sys_n(n, a, b, c, d, e, f, ...) \
	bpf_rt_sys((n), (long)(a), (long)(b), (long)(c), (long)(d), (long)(e), (long)(f))

/* A mapping's result as a pointer, or NULL. */
static inline void *bpf_rt_mmap(size_t len, int prot, int flags, int fd, long off)
{
	long r = BPF_RT_SYS(SYS_mmap, 0, len, prot, flags, fd, off);

	return (unsigned long)r > -4096ul ? NULL : (void *)r;
}

/* The start of a file (a /proc or /sys file) into buf, NUL-terminated:
 * its length, or -errno. */
static inline long bpf_rt_read_file(const char *path, char *buf, size_t n)
{
	long fd = BPF_RT_SYS(SYS_openat, -100 /* AT_FDCWD */, path, 02000000 /* O_RDONLY | O_CLOEXEC */, 0);
	long r;

	if (fd < 0)
		return fd;
	r = BPF_RT_SYS(SYS_read, fd, buf, n - 1);
	BPF_RT_SYS(SYS_close, fd);
	buf[r > 0 ? r : 0] = 0;
	return r;
}

/* Fds the runtime keeps for itself live from here up. The kernel gives an
 * open the lowest free number, and programs count on that (a daemon that
 * closes 0-2 and reopens /dev/null as stdin, a test of its own fd numbers):
 * a number the runtime holds must not be one the application would get.
 * (The shim's own fds: libbpf_shim/conn.c CONN_FD_MIN, shim.h SHIM_FD_MIN.) */
#define BPF_RT_FD_MIN 900

/* `fd` moved to BPF_RT_FD_MIN or above (close-on-exec), or kept where it is
 * when the fd limit is lower than that. Only a thread that runs while the
 * application cannot open files (a constructor, a fork child's handler)
 * leaves no trace: between the open and the move the low number is taken. */
static inline long bpf_rt_keep_fd(long fd)
{
	long hi;

	if (fd < 0 || fd >= BPF_RT_FD_MIN)
		return fd;
	hi = BPF_RT_SYS(SYS_fcntl, fd, 1030 /* F_DUPFD_CLOEXEC */, BPF_RT_FD_MIN);
	if (hi < 0)
		return fd;
	BPF_RT_SYS(SYS_close, fd);
	return hi;
}

/* An fd the runtime keeps, with what it names (st_dev, st_ino): one the
 * application closed (closefrom) and whose number it reuses for a file of
 * its own is never taken for ours, written to or replaced. */
struct bpf_rt_kept {
	int fd;
	uint64_t dev, ino;
};
#define BPF_RT_KEPT_INIT { -1, 0, 0 }

/* k's fd while it is still ours, else -1 (and k forgets it). */
static inline int bpf_rt_kept_fd(struct bpf_rt_kept *k)
{
	struct stat st;

	if (k->fd < 0)
		return -1;
	if (BPF_RT_SYS(SYS_fstat, k->fd, &st) || (uint64_t)st.st_dev != k->dev || (uint64_t)st.st_ino != k->ino) {
		k->fd = -1;
		return -1;
	}
	return k->fd;
}

/* Open `path` for k: at the number k holds while it is ours (a fork child:
 * the kept fd names its parent's /proc/self), else at a new kept number.
 * 0 or -errno (k unchanged). */
static inline long bpf_rt_kept_open(struct bpf_rt_kept *k, const char *path, long flags)
{
	long fd = BPF_RT_SYS(SYS_openat, -100 /* AT_FDCWD */, path, flags | 02000000 /* O_CLOEXEC */, 0);
	struct stat st;

	if (fd < 0)
		return fd;
	if (BPF_RT_SYS(SYS_fstat, fd, &st)) {
		BPF_RT_SYS(SYS_close, fd);
		return -EBADF;
	}
	if (bpf_rt_kept_fd(k) >= 0) {
		BPF_RT_SYS(SYS_dup3, fd, k->fd, 02000000);
		BPF_RT_SYS(SYS_close, fd);
	} else {
		k->fd = (int)bpf_rt_keep_fd(fd);
	}
	k->dev = (uint64_t)st.st_dev;
	k->ino = (uint64_t)st.st_ino;
	return 0;
}

/* The decimal digits of v at out (no NUL): how many. */
static inline size_t bpf_rt_utoa(char *out, uint64_t v)
{
	char t[20];
	size_t n = 0, k = 0;

	do
		t[n++] = (char)('0' + v % 10);
	while (v /= 10);
	while (n)
		out[k++] = t[--n];
	return k;
}

/* State and start time of `pid` from /proc/PID/stat: 0, or -ESRCH when
 * there is no such process, or another -errno when it cannot be read. */
static inline int bpf_rt_proc_stat(int32_t pid, char *state, uint64_t *start)
{
	char path[32] = "/proc/", buf[1024];
	size_t k = 6;
	long n;

	k += bpf_rt_utoa(path + k, (uint64_t)pid);
	memcpy(path + k, "/stat", 6);
	n = bpf_rt_read_file(path, buf, sizeof(buf));
	if (n < 0)
		return n == -ENOENT ? -ESRCH : (int)n;
	char *p = strrchr(buf, ')');          /* the comm may hold anything but that last ')' */
	if (!p || p[1] != ' ')
		return -EINVAL;
	p += 2;
	*state = *p;
	/* field 3 is the state, 22 the start time */
	for (int f = 3; f < 22; f++) {
		while (*p && *p != ' ')
			p++;
		if (!*p++)
			return -EINVAL;
	}
	uint64_t v = 0;
	while (*p >= '0' && *p <= '9')
		v = v * 10 + (uint64_t)(*p++ - '0');
	*start = v;
	return 0;
}

/* One line of /proc/PID/maps: "lo-hi perms offset maj:min inode path". */
struct bpf_rt_vma {
	uint64_t lo, hi, off, ino;
	uint64_t dev;              /* makedev(maj, min) */
	char perms[5];             /* "r-xp" */
	const char *path;          /* "" when none; valid during the callback */
};

static inline uint64_t bpf_rt_hex(const char **p)
{
	uint64_t v = 0;

	for (;; (*p)++) {
		char c = **p;
		int d = c >= '0' && c <= '9' ? c - '0' : (c | 32) >= 'a' && (c | 32) <= 'f' ? (c | 32) - 'a' + 10 : -1;
		if (d < 0)
			return v;
		v = v << 4 | (uint64_t)d;
	}
}

/* Each mapping listed by the maps file open at fd, read from its start with
 * raw syscalls into buf (size bytes; a longer line is skipped): fn's first
 * non-zero return, 0 at the end, -errno when it cannot be read. The one
 * parser of the file. */
static inline int bpf_rt_maps_each(long fd, char *buf, size_t size,
				   int (*fn)(const struct bpf_rt_vma *v, void *arg), void *arg)
{
	size_t have = 0;
	int skip = 0;
	long n;

	if ((n = BPF_RT_SYS(SYS_lseek, fd, 0, SEEK_SET)) < 0)
		return (int)n;
	while ((n = BPF_RT_SYS(SYS_read, fd, buf + have, size - 1 - have)) > 0) {
		char *line = buf, *nl;
		have += (size_t)n;
		while ((nl = memchr(line, '\n', (size_t)(buf + have - line)))) {
			struct bpf_rt_vma v;
			const char *p = line;
			*nl = 0;
			v.lo = bpf_rt_hex(&p);
			p += *p == '-';
			v.hi = bpf_rt_hex(&p);
			p += *p == ' ';
			memcpy(v.perms, p, 4);
			v.perms[4] = 0;
			p += strnlen(p, 4);
			p += *p == ' ';
			v.off = bpf_rt_hex(&p);
			p += *p == ' ';
			uint64_t maj = bpf_rt_hex(&p);
			p += *p == ':';
			uint64_t min = bpf_rt_hex(&p);
			v.dev = makedev(maj, min);
			p += *p == ' ';
			for (v.ino = 0; *p >= '0' && *p <= '9'; p++)
				v.ino = v.ino * 10 + (uint64_t)(*p - '0');
			while (*p == ' ')
				p++;
			v.path = p;
			int r = skip ? 0 : fn(&v, arg);
			if (r)
				return r;
			skip = 0;
			line = nl + 1;
		}
		have -= (size_t)(line - buf);
		memmove(buf, line, have);
		if (have == size - 1) {
			have = 0;      /* a line longer than buf: its end is skipped too */
			skip = 1;
		}
	}
	return n < 0 ? (int)n : 0;
}

/* The PROT_* of a mapping's perms ("r-xp"). */
static inline int bpf_rt_vma_prot(const char *perms)
{
	return (perms[0] == 'r' ? PROT_READ : 0) | (perms[1] == 'w' ? PROT_WRITE : 0) | (perms[2] == 'x' ? PROT_EXEC : 0);
}

/* What bpf_rt_file_of finds: the caller gives path and path_size. */
struct bpf_rt_file_at {
	uint64_t off, dev, ino;    /* offset in the file (dev, ino) */
	int prot;                  /* the mapping's PROT_* */
	char *path;                /* the path the maps file shows (" (deleted)" after it, if so) */
	size_t path_size;
};

struct bpf_rt_file_find {
	uint64_t addr;
	struct bpf_rt_file_at *f;
};

static inline int bpf_rt_file_vma(const struct bpf_rt_vma *v, void *arg)
{
	struct bpf_rt_file_find *q = arg;
	struct bpf_rt_file_at *f = q->f;
	size_t n;

	if (q->addr < v->lo || q->addr >= v->hi)
		return 0;
	n = strlen(v->path);
	if (!v->ino || v->path[0] != '/' || n >= f->path_size)
		return 2;          /* mapped, but from no file (or a path that does not fit) */
	f->off = q->addr - v->lo + v->off;
	f->dev = v->dev;
	f->ino = v->ino;
	f->prot = bpf_rt_vma_prot(v->perms);
	memcpy(f->path, v->path, n + 1);
	return 1;
}

/* The file and offset addr is mapped from, by the maps file open at fd
 * (bpf_rt_maps_each: raw syscalls into buf, async-signal-safe): 1 with *f
 * filled; 0 when addr is not mapped, or not from a file (anonymous,
 * [vdso], a path longer than f->path_size); -errno when the file cannot
 * be read. */
static inline int bpf_rt_file_of(long fd, char *buf, size_t size, uint64_t addr, struct bpf_rt_file_at *f)
{
	struct bpf_rt_file_find q = { addr, f };
	int r = bpf_rt_maps_each(fd, buf, size, bpf_rt_file_vma, &q);

	return r == 2 ? 0 : r;
}

/* dir + "/" + name into out (n bytes): 0, or -1 when it does not fit
 * (snprintf is not async-signal-safe). */
static inline int bpf_rt_path_join(char *out, size_t n, const char *dir, const char *name)
{
	size_t k = 0;

	for (const char *p = dir; *p; p++)
		if (k + 1 < n)
			out[k++] = *p;
		else
			return -1;
	if (k + 1 >= n)
		return -1;
	out[k++] = '/';
	for (const char *p = name; *p; p++)
		if (k + 1 < n)
			out[k++] = *p;
		else
			return -1;
	out[k] = 0;
	return 0;
}

/* pthread_once() for code a probe runs: no lock a signal handler could
 * find held by the code it interrupted (a probe never nests on its own
 * thread: in_probe); a racing thread waits for the first one's few syscalls.
 * *state: 0 not run, -1 done, else the tid of the thread running fn. A
 * runner that is no thread of this process (a fork child inherits the
 * state another thread of its parent was in the middle of; a thread that
 * died in fn) is taken over, and fn runs again: fn must be idempotent. */
static inline void bpf_rt_once(int *state, void (*fn)(void))
{
	int seen = __atomic_load_n(state, __ATOMIC_ACQUIRE), me = 0;
	unsigned spins = 0;

	while (seen != -1) {
		if (!me)
			me = (int)BPF_RT_SYS(SYS_gettid, 0);
		if (seen == 0 || (++spins % 64 == 1 && BPF_RT_SYS(SYS_tgkill, BPF_RT_SYS(SYS_getpid, 0), seen, 0) == -ESRCH)) {
			if (__atomic_compare_exchange_n(state, &seen, me, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
				fn();
				__atomic_store_n(state, -1, __ATOMIC_RELEASE);
				return;
			}
			continue;     /* seen is the new state */
		}
		__builtin_ia32_pause();
		seen = __atomic_load_n(state, __ATOMIC_ACQUIRE);
	}
}

/* pthread_setspecific() callocs a thread's second level of keys for a key
 * past glibc's first 32 (PTHREAD_KEY_2NDLEVEL_SIZE): a probe sets only keys
 * below (the library creates its keys in constructors, before the
 * application's); past them the value's destructor is not run at thread exit. */
static inline void bpf_rt_setspecific(pthread_key_t k, const void *p)
{
	if (k < 32)
		pthread_setspecific(k, p);
}

#endif

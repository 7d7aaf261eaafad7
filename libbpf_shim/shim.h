/* SPDX-License-Identifier: MIT */
/* Internal interfaces of the loader side of libbpfshim.so. */
#ifndef BPFSHIM_SHIM_H
#define BPFSHIM_SHIM_H

#include <stddef.h>
#include <sys/types.h>
#include <glob.h>
#include <stdint.h>
#include <setjmp.h>
#include <linux/bpf.h>
#include "common.h"
#include "proto.h"
#include "map.h"
#include "bpf_cmd_table.h"
#include "rt.h"
#include "bpf_rt.h"     /* bpf_rt_jmp_buf: the runtime's fault guard (uaccess.c) */

/* Fds the shim opens for itself (program and event handles, wake-up
 * eventfds) are moved here or above, out of the numbers the loader would
 * get; the server socket sits lower (conn.c CONN_FD_MIN), the runtime's
 * kept fds higher (rawsys.h BPF_RT_FD_MIN). */
#define SHIM_FD_MIN 800

/* The kernel's union bpf_attr (BPF_ATTR_SIZE, bpf_cmd_table.h); the uapi
 * copy we compile with may be older and smaller. */
union shim_attr {
	union bpf_attr a;
	unsigned char raw[BPF_ATTR_SIZE > sizeof(union bpf_attr) ? BPF_ATTR_SIZE : sizeof(union bpf_attr)];
};

/* ---- real libc entry points (resolved once with RTLD_NEXT) ---- */
struct shim_real {
	long (*syscall)(long, ...);
	int (*close)(int);
	int (*dup)(int);
	int (*dup2)(int, int);
	int (*dup3)(int, int, int);
	int (*fcntl)(int, int, ...);
	void *(*mmap)(void *, size_t, int, int, int, off_t);
	ssize_t (*readlink)(const char *, char *, size_t);
	ssize_t (*readlinkat)(int, const char *, char *, size_t);
	void *(*fopen)(const char *, const char *);
	void *(*fopen64)(const char *, const char *);
	int (*open)(const char *, int, ...);
	int (*open64)(const char *, int, ...);
	int (*openat)(int, const char *, int, ...);
	int (*statfs)(const char *, void *);
	int (*statfs64)(const char *, void *);
	int (*unlink)(const char *);
	int (*unlinkat)(int, const char *, int);
	int (*rmdir)(const char *);
	int (*mkdir)(const char *, unsigned);
	int (*setrlimit)(int, const void *);
	int (*ioctl)(int, unsigned long, ...);
	int (*epoll_ctl)(int, int, int, void *);
	int (*epoll_wait)(int, void *, int, int);
	int (*epoll_pwait)(int, void *, int, int, const void *);
	int (*poll)(void *, unsigned long, int);
	int (*ppoll)(void *, unsigned long, const void *, const void *);
	int (*prlimit64)(int, int, const void *, void *);
	int (*nftw)(const char *, void *, int, int);
	void *(*setmntent)(const char *, const char *);
	int (*glob)(const char *, int, int (*)(const char *, int), glob_t *);
	int (*prctl)(int, ...);
	int (*pthread_setname_np)(unsigned long, const char *);
};
extern struct shim_real real;
void shim_resolve_real(void);
int shim_interposing(void);

/* ---- fault-safe access to the caller's memory ---- */
/* Copy n bytes; 0 or -EFAULT. Never crashes on a bad pointer. */
int shim_copy_from_user(void *dst, uint64_t src, size_t n);
int shim_copy_to_user(uint64_t dst, const void *src, size_t n);
/* Copy a NUL-terminated string of at most max bytes (excluding NUL):
 * length, -EFAULT, or -E2BIG when no NUL within max. */
long shim_strncpy_from_user(char *dst, uint64_t src, size_t max);

/* ---- the runtime directory (rundir.c) ---- */
/* Its path, checked (ours, 0700, no symlink); 0 or -errno (-EACCES: refused,
 * with a line on stderr). */
int shim_runtime_dir(char *out, size_t n);
/* The checked directory opened (O_DIRECTORY), or -errno. */
int shim_rundir_open(void);
/* Its path as chosen (checked only by shim_rundir_open): for messages and
 * the server's command line once the directory is open. */
const char *shim_rundir_path(void);
/* The uid it and its server must belong to: the real uid at start. */
uid_t shim_rundir_uid(void);
int shim_rundir_set(const char *path);

/* ---- what the server may touch of the caller's memory (uwin.c) ---- */
enum { SHIM_UWIN_R = 1, SHIM_UWIN_W = 2, SHIM_UWIN_STR = 4, SHIM_UWIN_MAX = 16 };
struct shim_uwin_range {
	uint64_t addr, len;
	uint32_t access;
};
struct shim_uwin {
	unsigned n;
	struct shim_uwin_range r[SHIM_UWIN_MAX];
};
/* The window of the request this thread is making; NULL: none at all. */
extern __thread const struct shim_uwin *shim_cur_uwin;
struct perf_event_attr;
void shim_uwin_bpf(struct shim_uwin *w, int cmd, uint64_t uattr, const union bpf_attr *a,
		   unsigned int size);
void shim_uwin_perf(struct shim_uwin *w, uint64_t uattr, const struct perf_event_attr *head);
int shim_uwin_allows(uint64_t addr, uint64_t len, uint32_t access, uint64_t *max);

/* ---- fd table: fd number -> bpfshim object ---- */
struct shim_fd {
	uint32_t kind;             /* enum shim_obj_kind; 0 = not ours */
	uint32_t id;
	uint32_t f_flags;          /* BPF_F_RDONLY / BPF_F_WRONLY */
	uint32_t internal;         /* opened by the shim for itself: close() leaves it */
	struct shm_map map;        /* kind == SHIM_OBJ_MAP: mapped segment */
	int ring_fd;               /* kind == SHIM_OBJ_PERF_EVENT: ring segment (perf_ring.h) */
	void *ring_meta;           /* its struct perf_ring_meta, mapped */
};
/* The entry for fd, or NULL if fd is not a bpfshim object (identifies fds
 * this process got without the shim seeing it: exec, SCM_RIGHTS). */
struct shim_fd *shim_fd_get(int fd);
/* Fast path only: the entry if known, no identification attempt. */
struct shim_fd *shim_fd_peek(int fd);
/* Record a new fd handed out by the server. 0 or -errno. */
int shim_fd_install(int fd, const struct shim_fd_meta *meta);
/* The fd was closed (or is about to be reused): forget it. */
void shim_fd_forget(int fd);
/* newfd now refers to the same object as oldfd. */
void shim_fd_dup(int oldfd, int newfd);
/* Does any fd other than `except` refer to (kind, id)? */
int shim_fd_other_ref(uint32_t kind, uint32_t id, int except);
/* For SHIM_OP_HOLD after fork: the (kind, id) pairs held. */
size_t shim_fd_held(uint32_t *pairs, size_t max_pairs);

/* ---- server connection ---- */
struct shim_reply {
	int64_t ret;
	int err;
};
/* Send one request and serve the server's memory requests until DONE.
 * New fds are installed in the fd table; the message, if any, is printed on
 * stderr. fd_in >= 0 is passed along with SCM_RIGHTS. Returns 0, or -errno
 * if the server could not be reached (the caller returns that errno). */
/* Non-zero while this thread is inside the shim's own work (a server
 * request, installing an fd): the calls the shim makes meanwhile (the mmap of
 * a map segment) are its own and never identify unknown fds. */
extern __thread int shim_internal;

/* tracefs trace_pipe served from bpfshim's trace pipe (trace_pipe.c) */
int shim_is_trace_pipe(const char *path);
int shim_trace_pipe_open(int flags);
int shim_request(uint32_t op, int64_t a, int64_t b, const void *payload, size_t len,
		 int fd_in, struct shim_reply *rep, char *msg_out, size_t msg_out_size);
/* Fire-and-forget (SHIM_OP_RELEASE): 0 when sent. */
int shim_notify(uint32_t op, int64_t a, int64_t b);
/* attach_sync.c: around a request, the attach table's generation (or -1),
 * then the wait for the agents if the request changed it; the release of
 * an object's last fd in this process. */
int64_t shim_attach_before(uint32_t op, int64_t a);
void shim_attach_after(int64_t before);
void shim_release(uint32_t kind, uint32_t id);
void shim_table_touch(void);      /* attach_sync.c */
/* "bpfshim: m" on stderr, once per process for each text: what bpfshim does
 * not serve, said where a loader first meets it. */
void shim_say_once(const char *m);
#define SHIM_NO_KERNEL "needs kernel eBPF (run the tool without bpfshim, as root)"
#define SHIM_NO_KPROBES "kprobes are not served in user space (bpfshim serves uprobes, uretprobes, USDT " \
	"and syscall tracepoints); a kprobe " SHIM_NO_KERNEL
/* Is fd the connection's own socket (never let the app close it under us)? */
int shim_is_conn_fd(int fd);
/* Connect now if the server runs (never spawning it): a traced process
 * reaches the server with the credentials it started with, and its forked
 * children with theirs at fork (conn.c after_fork_child), whatever user
 * they change to later. The agent calls it when it finds the table. */
void shim_connect_early(void);
/* Follow the server in `dir` from now on (`bpfshim attach`); 0 or -errno. */
int shim_set_runtime_dir(const char *dir);

/* ---- bpf() ---- */
long shim_sys_bpf(int cmd, uint64_t uattr, unsigned int size);
long shim_user_bpf(int cmd, uint64_t uattr, unsigned int size);
/* Hybrid mode (hybrid.c): set before main() when BPFSHIM_KERNEL=1 and the
 * caller has kernel eBPF; bpf() and perf_event_open() then go to the kernel
 * and the shim's fd table, pin namespace and pseudo-files stand aside. */
extern int shim_hybrid;
long shim_hybrid_bpf(int cmd, uint64_t uattr, unsigned int size);
long shim_hybrid_perf_event_open(uint64_t uattr, long pid, long cpu, long group_fd, unsigned long flags);
int shim_hybrid_mmap_refused(int fd);
void shim_hybrid_closing(int fd);
int shim_hybrid_ioctl(int fd, unsigned long req, unsigned long arg, int *ret);
int shim_hybrid_map_bind(struct shm_map *m);
struct bpf_map_info;
int shim_hybrid_map_like(const struct bpf_map_info *ki, uint32_t flags, struct shim_fd **e);
/* hybrid_fold.c: twins' hash maps, folded into the kernel's */
/* The shim's own kernel program (a raw tracepoint program run under
 * BPF_PROG_TEST_RUN), its fd above the loader's numbers; -1 if refused. */
struct bpf_insn;
int shim_kernel_rawtp_load(const struct bpf_insn *p, int n, const char *name);
struct bpf_map_info;
int shim_fold_type(uint32_t type);
int shim_fold_adds_only(const struct bpf_insn *insns, uint32_t n, int fd, const struct bpf_map_info *ki,
			const char **why);
int shim_fold_map(int kfd, const struct bpf_map_info *ki, const char **why);
int shim_fold_maps(void);
void shim_fold_before_read(const struct bpf_map_info *info);
/* hybrid_events.c: twins' perf event arrays and ringbufs, forwarded into the kernel's */
int shim_events_map(int kfd, const struct bpf_map_info *ki, const char **why);
void shim_events_flush(void);
/* Map element commands, in this process on the shared segment. */
long shim_map_cmd(int cmd, union bpf_attr *attr, uint64_t uattr);
/* A fault in a copy ended a single-element command at its guard: free the
 * scratch buffers it had from the heap. */
void shim_map_cmd_abort(void);

/* ---- programs (prog.c) and PROG_TEST_RUN (test_run.c) ---- */
struct bpf_prog_rt;
const struct bpf_prog_rt *shim_prog_get(int fd, int *err);
const struct bpf_prog_rt *shim_prog_by_id(uint32_t id);
void shim_prog_release(uint32_t id);
/* The follower, before a program can run here: what it needs (prog.c). */
void shim_prog_prepare(const struct bpf_prog_rt *rt);
struct shm_map *shim_map_by_id(uint32_t id);
/* prog.c: an fd the shim opened for itself, moved above the application's
 * range (the new number); the close of one, telling the server as close() does */
int shim_fd_internal(int fd);
void shim_fd_close_internal(int fd);
long shim_prog_test_run(union bpf_attr *attr, uint64_t uattr);
/* agent/jit.c */
void *bpf_jit_load(const void *blob, size_t len);

/* ---- perf events (perf_event.c) ---- */
struct pollfd;
long shim_perf_event_open(uint64_t uattr, long pid, long cpu, long group_fd, unsigned long flags);
long shim_user_perf_event_open(uint64_t uattr, long pid, long cpu, long group_fd, unsigned long flags);
int shim_pmu_type(const char *pmu);   /* a dynamic PMU's type (sysfs), or -1 */
void shim_perf_ring_received(int fd);
void *shim_perf_mmap(struct shim_fd *e, void *addr, size_t len, int prot, int flags, long off);
int shim_perf_ioctl(struct shim_fd *e, unsigned long req, unsigned long arg);
/* Consumer side of a perf ring (wakeup.c): report pending drops once there is
 * room (1: a PERF_RECORD_LOST was written); the eventfd's wake-up was taken. */
int shim_perf_flush_lost(int fd, struct shim_fd *e);
/* The follower: the ring of perf event `id` in this process's table, asked
 * of the server if new, with the drops of probes that found it missing. */
void shim_perf_ring_prepare(uint32_t id);
void shim_perf_woken(struct shim_fd *e);

/* ---- consumer wake-ups of perf events and ringbufs (wakeup.c) ---- */
struct epoll_event;
int shim_wake_epoll_ctl(int epfd, int op, int fd, struct epoll_event *ev);
void shim_wake_epoll_before(int epfd);
void shim_wake_epoll_after(int epfd, const struct epoll_event *evs, int n);
void shim_wake_closed(int fd);
struct pollfd *shim_wake_poll_before(struct pollfd *fds, unsigned long n);
void shim_wake_poll_after(struct pollfd *fds, unsigned long n, struct pollfd *orig);
/* The eventfd of ringbuf map `id` in this process (asked once), or -1. */
int shim_ringbuf_wake_fd(uint32_t id);

/* ---- pseudo-files and paths ---- */
int shim_is_bpffs_path(const char *path);

/* Set errno and return -1, as a syscall does. */
static inline long shim_err(long e)
{
	extern int *__errno_location(void);
	*__errno_location() = (int)e;
	return -1;
}

#endif

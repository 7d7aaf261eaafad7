/* SPDX-License-Identifier: MIT */
/*
 * The connection to the per-user server: found under the runtime directory,
 * started on first use when absent, one request at a time per process.
 * See proto.h for the exchange.
 */
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <poll.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include "shim.h"
#include "bpfshim_config.h"
#include "start.h"

#ifndef BPFSHIM_DEFAULT_PYTHON
#define BPFSHIM_DEFAULT_PYTHON "python3"
#endif

#define CONN_FD_MIN 700       /* keep our socket out of the low fd numbers loaders see */

static pthread_mutex_t conn_lock = PTHREAD_MUTEX_INITIALIZER;
static int conn_fd = -1;
static int need_hold;         /* forked child: tell the server what we inherited */
static char msgbuf[SHIM_MSG_MAX];

static int try_connect(int dfd, const char *dir);
static int send_msg(uint32_t op, int64_t a, int64_t b, const void *payload, size_t len, int fd_in);
static void send_hold(void);
static void send_mode(void);

/* A child has a connection of its own, made here, before it returns from
 * fork(): with the credentials the server accepted in its parent, so it
 * keeps reaching the server after it changes its user or environment
 * (nginx's workers: setuid to nobody, no way into the runtime directory),
 * as a kernel bpf fd stays usable. Never spawns: the parent's server runs. */
static void connect_nospawn(void)
{
	int dfd, fd;

	if (conn_fd >= 0 || (dfd = shim_rundir_open()) < 0)
		return;
	fd = try_connect(dfd, shim_rundir_path());
	if (fd >= 0) {
		conn_fd = fd;
		send_hold();
		send_mode();
	}
	real.close(dfd);
}

static void after_fork_child(void)
{
	int had = conn_fd >= 0;

	pthread_mutex_init(&conn_lock, NULL);
	if (conn_fd >= 0)
		real.close(conn_fd);
	conn_fd = -1;
	need_hold = 1;
	if (had)
		connect_nospawn();
}

/* See shim.h. */
void shim_connect_early(void)
{
	pthread_mutex_lock(&conn_lock);
	connect_nospawn();
	pthread_mutex_unlock(&conn_lock);
}

/* At start: its fork handler runs before uprobe.c's, whose thread may ask (start/preload.c) */
void conn_init(void)
{
	pthread_atfork(NULL, NULL, after_fork_child);
}

static void shim_block_signals(sigset_t *s)
{
	sigfillset(s);
	sigdelset(s, SIGSEGV);
	sigdelset(s, SIGBUS);
	sigdelset(s, SIGILL);
	sigdelset(s, SIGFPE);
	sigdelset(s, SIGTRAP);
}

int shim_is_conn_fd(int fd)
{
	return fd >= 0 && fd == conn_fd;
}

/* Follow the server in `dir` from now on (`bpfshim attach`: the caller's
 * server, ahead of the environment); 0 or -errno. */
int shim_set_runtime_dir(const char *dir)
{
	int err;

	pthread_mutex_lock(&conn_lock);
	err = shim_rundir_set(dir);
	if (!err && conn_fd >= 0) {
		real.close(conn_fd);
		conn_fd = -1;
	}
	pthread_mutex_unlock(&conn_lock);
	return err;
}

/* Connect to the server of the checked directory `dfd` (reached through the
 * fd, so the directory checked is the one used) and check it runs as our
 * uid (SO_PEERCRED). -ECONNREFUSED/-ENOENT: nobody listens. */
static int try_connect(int dfd, const char *dir)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct ucred cr;
	socklen_t cl = sizeof(cr);
	int fd, hi, e;

	snprintf(sa.sun_path, sizeof(sa.sun_path), "/proc/self/fd/%d/server.sock", dfd);
	if (access("/proc/self/fd", X_OK) &&
	    (size_t)snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/server.sock", dir) >= sizeof(sa.sun_path))
		return -ENAMETOOLONG;   /* no /proc: the path itself, if it fits */
	fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa))) {
		e = errno;
		real.close(fd);
		return -e;
	}
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &cl) || cr.uid != shim_rundir_uid()) {
		char m[PATH_MAX + 160];
		int k = snprintf(m, sizeof(m), "bpfshim: refusing the server in %s: it runs as uid %d, not %u\n",
				 dir, (int)cr.uid, (unsigned)shim_rundir_uid());
		if (k > 0)
			(void)!write(2, m, (size_t)k);
		real.close(fd);
		return -EACCES;
	}
	hi = real.fcntl(fd, F_DUPFD_CLOEXEC, CONN_FD_MIN);
	if (hi >= 0) {
		real.close(fd);
		fd = hi;
	}
	return fd;
}

/* The project root: this library lives in <root>/syscall_server/_native/. */
static void project_root(char *out, size_t n)
{
	Dl_info info;
	char *p;

	out[0] = 0;
	if (!dladdr((void *)project_root, &info) || !info.dli_fname)
		return;
	if (!realpath(info.dli_fname, out))
		snprintf(out, n, "%s", info.dli_fname);
	for (int i = 0; i < 3 && (p = strrchr(out, '/')); i++)
		*p = 0;
}

/* Start `python -m syscall_server.server` detached from the loader: its own
 * session, no inherited descriptors, no LD_PRELOAD. */
static void spawn_server(const char *dir)
{
	char root[PATH_MAX], log[PATH_MAX + 32], pypath[PATH_MAX + 16];
	const char *py = getenv("BPFSHIM_PYTHON");
	pid_t pid;

	project_root(root, sizeof(root));
	snprintf(log, sizeof(log), "%s/server.log", dir);
	if (!py || !*py)
		py = BPFSHIM_DEFAULT_PYTHON;
	pid = fork();
	if (pid < 0)
		return;
	if (pid > 0) {
		waitpid(pid, NULL, 0);
		return;
	}
	setsid();
	if (fork() != 0)
		_exit(0);
	/* The request path blocks signals; the server must start with none
	 * blocked and default dispositions, or it could not be stopped. */
	sigset_t none;
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	for (int s = 1; s < NSIG; s++)
		if (s != SIGKILL && s != SIGSTOP)
			signal(s, SIG_DFL);
	int null = open("/dev/null", O_RDWR);
	int lf = open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
	dup2(null, 0);
	dup2(lf >= 0 ? lf : null, 1);
	dup2(lf >= 0 ? lf : null, 2);
	for (int fd = 3; fd < 65536; fd++)
		if (fd != lf)
			real.close(fd);
	unsetenv("LD_PRELOAD");
	/* `python -m` puts the working directory first on sys.path: a
	 * syscall_server/ there (another checkout, or planted by another user
	 * in a directory root runs a tool from) would be the server. A daemon
	 * works from /, and PYTHONSAFEPATH (3.11+) leaves the entry out. */
	if (chdir("/"))
		_exit(127);
	setenv("PYTHONSAFEPATH", "1", 1);
	const char *old = getenv("PYTHONPATH");
	if (old && *old)
		snprintf(pypath, sizeof(pypath), "%s:%s", root, old);
	else
		snprintf(pypath, sizeof(pypath), "%s", root);
	setenv("PYTHONPATH", pypath, 1);
	execlp(py, py, "-m", "syscall_server.server", "--runtime-dir", dir, (char *)NULL);
	_exit(127);
}

static int nobody_listens(int err)
{
	return err == -ECONNREFUSED || err == -ENOENT;
}

static int connect_or_spawn(void)
{
	const char *dir = shim_rundir_path();
	int dfd, fd, lk;

	dfd = shim_rundir_open();
	if (dfd < 0)
		return dfd;
	fd = try_connect(dfd, dir);
	if (fd >= 0 || !nobody_listens(fd))
		goto out;
	/* One spawner at a time; the others wait for the socket. */
	lk = openat(dfd, "spawn.lock", O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (lk >= 0)
		flock(lk, LOCK_EX);
	fd = try_connect(dfd, dir);
	if (nobody_listens(fd)) {
		spawn_server(dir);
		for (int i = 0; i < 200 && nobody_listens(fd); i++) {  /* up to 10 s */
			struct timespec ts = { 0, 50 * 1000 * 1000 };
			nanosleep(&ts, NULL);
			fd = try_connect(dfd, dir);
		}
	}
	if (lk >= 0)
		real.close(lk);  /* releases the flock */
	if (nobody_listens(fd)) {
		char m[PATH_MAX + 128];
		int k = snprintf(m, sizeof(m), "bpfshim: cannot reach the server in %s (see %s/server.log)\n", dir, dir);
		if (k > 0)
			(void)!write(2, m, (size_t)k);
	}
out:
	real.close(dfd);
	return fd;
}

static int send_msg(uint32_t op, int64_t a, int64_t b, const void *payload, size_t len, int fd_in)
{
	struct shim_msg h = { .op = op, .len = (uint32_t)len, .a = a, .b = b };
	struct iovec iov[2] = { { &h, sizeof(h) }, { (void *)payload, len } };
	union { char buf[CMSG_SPACE(sizeof(int))]; struct cmsghdr align; } c;
	struct msghdr mh = { .msg_iov = iov, .msg_iovlen = len ? 2 : 1 };

	if (fd_in >= 0) {
		struct cmsghdr *cm;
		mh.msg_control = c.buf;
		mh.msg_controllen = sizeof(c.buf);
		cm = CMSG_FIRSTHDR(&mh);
		cm->cmsg_level = SOL_SOCKET;
		cm->cmsg_type = SCM_RIGHTS;
		cm->cmsg_len = CMSG_LEN(sizeof(int));
		memcpy(CMSG_DATA(cm), &fd_in, sizeof(int));
	}
	for (;;) {
		ssize_t n = sendmsg(conn_fd, &mh, MSG_NOSIGNAL);
		if (n >= 0)
			return 0;
		if (errno != EINTR)
			return -errno;
	}
}

#define MAX_FDS_IN 64

/* Receive one message into msgbuf; fds (if any) into fds[]. */
static ssize_t recv_msg(struct shim_msg *h, int *fds, int *nfds)
{
	struct iovec iov[2] = { { h, sizeof(*h) }, { msgbuf, sizeof(msgbuf) } };
	union { char buf[CMSG_SPACE(sizeof(int) * MAX_FDS_IN)]; struct cmsghdr align; } c;
	struct msghdr mh = { .msg_iov = iov, .msg_iovlen = 2, .msg_control = c.buf,
			     .msg_controllen = sizeof(c.buf) };
	ssize_t n;

	do {
		n = recvmsg(conn_fd, &mh, MSG_CMSG_CLOEXEC);
	} while (n < 0 && errno == EINTR);
	if (n <= 0)
		return n < 0 ? -errno : -ECONNRESET;
	if ((size_t)n < sizeof(*h))
		return -EPROTO;
	*nfds = 0;
	for (struct cmsghdr *cm = CMSG_FIRSTHDR(&mh); cm; cm = CMSG_NXTHDR(&mh, cm)) {
		if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_RIGHTS) {
			int k = (int)((cm->cmsg_len - CMSG_LEN(0)) / sizeof(int));
			memcpy(fds + *nfds, CMSG_DATA(cm), sizeof(int) * (size_t)k);
			*nfds += k;
		}
	}
	return n - (ssize_t)sizeof(*h);
}

/* What names an fd the table does not know, for the server to look up
 * (objects.py fd_identity): its inode and, for an eventfd, whose inode all
 * eventfds share, the eventfd-id. The fd itself is never sent on a memory
 * request: the server learns nothing it could use. */
static int fd_ident(int fd, struct shim_fd_ident *id)
{
	char path[64], link[64], buf[1024];
	struct stat st;
	ssize_t n;
	int f;

	memset(id, 0, sizeof(*id));
	if (fstat(fd, &st))
		return -errno;
	id->dev = st.st_dev;
	id->ino = st.st_ino;
	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	n = real.readlink(path, link, sizeof(link) - 1);
	if (n <= 0 || (link[n] = 0, strcmp(link, "anon_inode:[eventfd]")))
		return 0;
	snprintf(path, sizeof(path), "/proc/self/fdinfo/%d", fd);
	f = real.open(path, O_RDONLY | O_CLOEXEC);
	if (f < 0)
		return 0;
	n = read(f, buf, sizeof(buf) - 1);
	real.close(f);
	if (n > 0) {
		char *p;
		buf[n] = 0;
		if ((p = strstr(buf, "eventfd-id:")))
			id->eventfd_id = strtoull(p + 11, NULL, 10);
	}
	return 0;
}

/* Serve one memory request of the server, inside the window of the request
 * being made (uwin.c); anything else is EFAULT. */
static int serve_mem(const struct shim_msg *h, size_t plen)
{
	static char buf[SHIM_MSG_MAX];
	uint64_t max;
	int err;
	long n;

	switch (h->op) {
	case SHIM_OP_READ:
		if ((uint64_t)h->b > sizeof(buf))
			return send_msg(SHIM_OP_MEM_ERR, EINVAL, 0, NULL, 0, -1);
		if (!shim_uwin_allows((uint64_t)h->a, (uint64_t)h->b, SHIM_UWIN_R, NULL))
			return send_msg(SHIM_OP_MEM_ERR, EFAULT, 0, NULL, 0, -1);
		err = shim_copy_from_user(buf, (uint64_t)h->a, (size_t)h->b);
		if (err)
			return send_msg(SHIM_OP_MEM_ERR, -err, 0, NULL, 0, -1);
		return send_msg(SHIM_OP_MEM, 0, 0, buf, (size_t)h->b, -1);
	case SHIM_OP_READSTR:
		max = (uint64_t)h->b < sizeof(buf) ? (uint64_t)h->b : sizeof(buf);
		if (!shim_uwin_allows((uint64_t)h->a, 0, SHIM_UWIN_STR, &max))
			return send_msg(SHIM_OP_MEM_ERR, EFAULT, 0, NULL, 0, -1);
		n = shim_strncpy_from_user(buf, (uint64_t)h->a, (size_t)max);
		if (n < 0)
			return send_msg(SHIM_OP_MEM_ERR, -n, 0, NULL, 0, -1);
		return send_msg(SHIM_OP_MEM, 0, 0, buf, (size_t)n, -1);
	case SHIM_OP_FDGET: {
		struct { struct shim_fd_meta meta; struct shim_fd_ident id; } r;
		/* No nested request here: an fd the table does not know is named
		 * by its inode, which the server looks up. */
		struct shim_fd *e = shim_fd_peek((int)h->a);
		memset(&r, 0, sizeof(r));
		if (!e && real.fcntl((int)h->a, F_GETFD) < 0)
			return send_msg(SHIM_OP_MEM_ERR, EBADF, 0, NULL, 0, -1);
		if (e) {
			r.meta.kind = e->kind;
			r.meta.id = e->id;
			r.meta.f_flags = e->f_flags;
			r.meta.seg_size = e->map.size;
			return send_msg(SHIM_OP_MEM, 0, 0, &r.meta, sizeof(r.meta), -1);
		}
		if (fd_ident((int)h->a, &r.id))
			return send_msg(SHIM_OP_MEM_ERR, EBADF, 0, NULL, 0, -1);
		return send_msg(SHIM_OP_MEM, 0, 0, &r, sizeof(r), -1);
	}
	case SHIM_OP_WRITE:
		if (!shim_uwin_allows((uint64_t)h->a, plen, SHIM_UWIN_W, NULL))
			return send_msg(SHIM_OP_MEM_ERR, EFAULT, 0, NULL, 0, -1);
		err = shim_copy_to_user((uint64_t)h->a, msgbuf, plen);
		if (err)
			return send_msg(SHIM_OP_MEM_ERR, -err, 0, NULL, 0, -1);
		return send_msg(SHIM_OP_MEM, 0, 0, NULL, 0, -1);
	}
	return -EPROTO;
}

static void say(const char *m, size_t n)
{
	char line[1200];
	int k = snprintf(line, sizeof(line), "bpfshim: %.*s\n", (int)(n < 1100 ? n : 1100), m);
	if (k > 0)
		(void)!write(2, line, (size_t)k);
}

void shim_say_once(const char *m)
{
	static uint32_t seen[32];
	static unsigned nseen;
	uint32_t h = 2166136261u;

	if (!m || !*m)
		return;
	for (const char *p = m; *p; p++)
		h = (h ^ (unsigned char)*p) * 16777619u;   /* FNV-1a */
	for (unsigned i = 0; i < nseen && i < 32; i++)
		if (seen[i] == h)
			return;
	seen[nseen++ % 32] = h;
	say(m, strlen(m));
}

static int ensure_conn(void)
{
	if (conn_fd >= 0)
		return 0;
	conn_fd = connect_or_spawn();
	if (conn_fd < 0) {
		int e = conn_fd;
		conn_fd = -1;
		return e;
	}
	send_hold();
	send_mode();
	return 0;
}

/* bpfshim status shows each process's mode; user space is the default. */
static void send_mode(void)
{
	if (shim_hybrid)
		send_msg(SHIM_OP_MODE, SHIM_MODE_KERNEL, 0, NULL, 0, -1);
}

/* A forked child tells the server which objects it holds by inheritance. */
static void send_hold(void)
{
	static uint32_t pairs[2 * 4096];

	if (!need_hold)
		return;
	size_t n = shim_fd_held(pairs, 4096);
	need_hold = 0;
	if (n)
		send_msg(SHIM_OP_HOLD, 0, 0, pairs, n * 8, -1);
}

static int request_sent;      /* the server got the current request */

static int conn_lost(int err)
{
	return err == -EPIPE || err == -ECONNRESET || err == -EBADF || err == -ENOTCONN;
}

static void drop_conn(void)
{
	if (conn_fd >= 0)
		real.close(conn_fd);
	conn_fd = -1;
	need_hold = 1;
}

/* A server that died since the last request leaves a hang-up on the socket:
 * reconnect before sending rather than after losing the request. */
static void drop_dead_conn(void)
{
	struct pollfd p = { .fd = conn_fd, .events = POLLIN | POLLRDHUP };

	if (conn_fd >= 0 && real.poll(&p, 1, 0) > 0 && (p.revents & (POLLHUP | POLLRDHUP | POLLERR)))
		drop_conn();
}

static int do_request(uint32_t op, int64_t a, int64_t b, const void *payload, size_t len,
		      int fd_in, struct shim_reply *rep, char *msg_out, size_t msg_out_size)
{
	int err = ensure_conn();
	int fds[MAX_FDS_IN], nfds = 0;
	struct shim_msg h;
	ssize_t n;

	if (err)
		return err;
	err = send_msg(op, a, b, payload, len, fd_in);
	if (err)
		return err;
	request_sent = 1;
	for (;;) {
		n = recv_msg(&h, fds, &nfds);
		if (n < 0)
			return (int)n;
		if (h.op != SHIM_OP_DONE) {
			for (int i = 0; i < nfds; i++)
				real.close(fds[i]);
			err = serve_mem(&h, (size_t)n);
			if (err)
				return err;
			continue;
		}
		break;
	}
	rep->ret = h.a;
	rep->err = (int)h.b;
	if ((size_t)n >= sizeof(struct shim_done)) {
		struct shim_done d;
		memcpy(&d, msgbuf, sizeof(d));
		const struct shim_fd_meta *meta = (const void *)(msgbuf + sizeof(d));
		const char *m = (const char *)(meta + d.nfds);
		for (uint32_t i = 0; i < d.nfds && (int)i < nfds; i++) {
			if (meta[i].f_flags & SHIM_FD_RING) {
				shim_perf_ring_received(fds[i]);
				continue;
			}
			if (meta[i].f_flags & (SHIM_FD_WAKE | SHIM_FD_KERNEL))
				continue;   /* returned as ret_fd, not an object fd */
			int e = shim_fd_install(fds[i], &meta[i]);
			if (e && rep->err == 0) {
				rep->ret = -1;
				rep->err = -e;
			}
		}
		if (d.ret_fd >= 0 && d.ret_fd < nfds && rep->err == 0)
			rep->ret = fds[d.ret_fd];
		if (d.msg_len) {
			if (msg_out) {
				size_t k = d.msg_len < msg_out_size - 1 ? d.msg_len : msg_out_size - 1;
				memcpy(msg_out, m, k);
				msg_out[k] = 0;
			} else {
				/* one line a process, however often a loader retries */
				char line[1101];
				size_t k = d.msg_len < sizeof(line) - 1 ? d.msg_len : sizeof(line) - 1;
				memcpy(line, m, k);
				line[k] = 0;
				shim_say_once(line);
			}
		}
	}
	return 0;
}

int shim_request(uint32_t op, int64_t a, int64_t b, const void *payload, size_t len,
		 int fd_in, struct shim_reply *rep, char *msg_out, size_t msg_out_size)
{
	int err;
	sigset_t all, old;
	SUD_INTERNAL_BEGIN();
	int64_t table_gen = shim_attach_before(op, a);

	/* A signal handler that re-enters bpf() would deadlock on the lock.
	 * Synchronous faults stay deliverable: uaccess.c depends on them. */
	shim_block_signals(&all);
	pthread_sigmask(SIG_BLOCK, &all, &old);
	pthread_mutex_lock(&conn_lock);
	shim_internal++;
	drop_dead_conn();
	for (int tries = 0;; tries++) {
		request_sent = 0;
		err = do_request(op, a, b, payload, len, fd_in, rep, msg_out, msg_out_size);
		if (!conn_lost(err))
			break;
		/* The server went away (or the app closed our socket). Its
		 * objects outlive it (syscall_server/durable.py): a request it
		 * never got goes to the next server, which hears first what
		 * this process holds. One it got may or may not have happened. */
		drop_conn();
		if (request_sent || tries) {
			say("lost the connection to the server during a request; the next call reconnects", 78);
			break;
		}
	}
	shim_internal--;
	pthread_mutex_unlock(&conn_lock);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (!err)
		shim_attach_after(table_gen);   /* attach_sync.c */
	SUD_INTERNAL_END();
	return err;
}

int shim_notify(uint32_t op, int64_t a, int64_t b)
{
	sigset_t all, old;
	int err = -ENOTCONN;
	SUD_INTERNAL_BEGIN();

	shim_block_signals(&all);
	pthread_sigmask(SIG_BLOCK, &all, &old);
	pthread_mutex_lock(&conn_lock);
	if (conn_fd >= 0)
		err = send_msg(op, a, b, NULL, 0, -1);
	pthread_mutex_unlock(&conn_lock);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	SUD_INTERNAL_END();
	return err;
}

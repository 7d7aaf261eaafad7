/* A libbpf loader for the ringbuf tests (test_ringbuf.py), with
 * ringbuf_loader.bpf.c. Prints a trace without ids, pids or addresses, so
 * the kernel's run and bpfshim's compare line for line.
 *
 *   ringbuf_loader OBJ uprobe TARGET N
 *       uprobe on TARGET's probed_fn, runs `TARGET seq N` (N % 6 == 5: the
 *       last event forces a wake-up) and consumes with ring_buffer__poll(-1)
 *       until every event came: a lost wake-up hangs (the alarm fails it).
 *   ringbuf_loader OBJ testrun
 *       a script of ringbuf operations through PROG_TEST_RUN of rb_op, with
 *       epoll readiness of the ring after each wake-up rule, the consumer
 *       and producer positions, and the records as mapped (headers with
 *       their busy/discard bits and page offsets, data through the second
 *       mapping of the data area).
 *   ringbuf_loader OBJ inherit
 *       a child execs with the ring's fd (not seen by its libbpf: inherited),
 *       sleeps in epoll_wait on it, and is woken by an output the parent's
 *       program makes.
 *   ringbuf_loader OBJ stress N
 *       4 producer processes send N records each through PROG_TEST_RUN of
 *       rb_stress (reserve/submit, output, discard) while this process
 *       consumes with ring_buffer__poll(-1): every record once, in order per
 *       producer; a lost wake-up hangs (the alarm fails it).
 *   ringbuf_loader OBJ leak
 *       programs the kernel's verifier refuses (a reservation never
 *       submitted; a fault while one is held), loaded and run where they
 *       load ("verifier" lines), then the ring must still work: an output
 *       after them is consumed.
 */
#define _GNU_SOURCE
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

struct event {
	uint32_t how, pad;
	int64_t x;
	uint64_t ring_size;
};

struct op {
	uint32_t op, size;
	uint64_t flags;
	int64_t ret;
	uint64_t q[4];
};

static void on_alarm(int sig)
{
	static const char msg[] = "timeout\n";
	(void)sig;
	(void)!write(1, msg, sizeof(msg) - 1);
	_exit(3);
}

static int silent(enum libbpf_print_level lvl, const char *fmt, va_list ap)
{
	return lvl == LIBBPF_DEBUG ? 0 : vfprintf(stderr, fmt, ap);
}

/* ---- uprobe mode ---- */

static uint64_t n_how[6], sum_how[6], got, bad;

static int on_event(void *ctx, void *data, size_t size)
{
	const struct event *e = data;
	(void)ctx;
	if (size != sizeof(*e) || e->how >= 6 || e->x % 6 != e->how || e->ring_size != 256 * 1024) {
		bad++;
		return 0;
	}
	n_how[e->how]++;
	sum_how[e->how] += (uint64_t)e->x;
	got++;
	return 0;
}

static int uprobe_mode(struct bpf_object *obj, char *target, long n)
{
	int go[2];
	pid_t child;
	char c = 'g', nbuf[32];
	uint64_t expect = 0;

	for (long x = 0; x < n; x++)
		expect += x % 6 == 0 || x % 6 == 1 || x % 6 == 3 || x % 6 == 4;
	struct ring_buffer *rb = ring_buffer__new(bpf_map__fd(bpf_object__find_map_by_name(obj, "events")),
						  on_event, NULL, NULL);
	if (!rb) {
		printf("ring_buffer__new: %s\n", strerror(errno));
		return 1;
	}
	if (pipe(go))
		return 1;
	snprintf(nbuf, sizeof(nbuf), "%ld", n);
	child = fork();
	if (child == 0) {
		char *argv[] = { target, "seq", nbuf, NULL };
		close(go[1]);
		if (read(go[0], &c, 1) != 1)
			_exit(4);
		execv(target, argv);
		_exit(5);
	}
	close(go[0]);
	LIBBPF_OPTS(bpf_uprobe_opts, o, .func_name = "probed_fn");
	struct bpf_link *l = bpf_program__attach_uprobe_opts(bpf_object__find_program_by_name(obj, "on_entry"),
							     child, target, 0, &o);
	if (!l) {
		printf("attach uprobe: %s\n", strerror(errno));
		kill(child, SIGKILL);
		return 1;
	}
	if (write(go[1], &c, 1) != 1)
		return 1;
	close(go[1]);
	while (got + bad < expect) {
		int r = ring_buffer__poll(rb, -1);
		if (r < 0 && r != -EINTR) {
			printf("ring_buffer__poll: %s\n", strerror(-r));
			break;
		}
	}
	int st;
	waitpid(child, &st, 0);
	ring_buffer__consume(rb);
	printf("target exit %d\n", WIFEXITED(st) ? WEXITSTATUS(st) : -1);
	for (int h = 0; h < 6; h++)
		printf("how %d: events %llu sum %llu\n", h, (unsigned long long)n_how[h], (unsigned long long)sum_how[h]);
	printf("bad %llu\n", (unsigned long long)bad);
	int sfd = bpf_map__fd(bpf_object__find_map_by_name(obj, "stats"));
	for (uint32_t k = 0; k < 5; k++) {
		uint64_t v = 0;
		bpf_map_lookup_elem(sfd, &k, &v);
		printf("stats[%u] = %llu\n", k, (unsigned long long)v);
	}
	bpf_link__destroy(l);
	ring_buffer__free(rb);
	return 0;
}

/* ---- testrun mode ---- */

static int prog_fd, epfd, map_fd;
static volatile uint64_t *cons;
static const volatile uint64_t *prod;
static const uint8_t *data;   /* data area, mapped twice */
#define RING 4096u

static int on_small(void *ctx, void *d, size_t size)
{
	const uint8_t *p = d;
	(void)ctx;
	printf("  record %zu bytes: %02x .. %02x\n", size, p[0], size ? p[size - 1] : 0);
	return 0;
}

static struct op run(uint32_t opn, uint32_t size, uint64_t flags)
{
	struct op o = { .op = opn, .size = size, .flags = flags };
	LIBBPF_OPTS(bpf_test_run_opts, t, .ctx_in = &o, .ctx_size_in = sizeof(o));
	int err = bpf_prog_test_run_opts(prog_fd, &t);
	if (err)
		printf("test_run: %s\n", strerror(errno));
	return o;
}

static void op(uint32_t opn, uint32_t size, uint64_t flags)
{
	struct op o = run(opn, size, flags);
	printf("op %u size %u flags %llu: ret %lld\n", opn, size, (unsigned long long)flags, (long long)o.ret);
}

static void query(void)
{
	struct op o = run(4, 0, 0);
	printf("query: avail %llu size %llu cons %llu prod %llu\n", (unsigned long long)o.q[0],
	       (unsigned long long)o.q[1], (unsigned long long)o.q[2], (unsigned long long)o.q[3]);
}

static void wait_ready(const char *what)
{
	struct epoll_event ev[4];
	int n = epoll_wait(epfd, ev, 4, 100);
	printf("epoll after %s: %d\n", what, n);
}

/* poll(2) on the map fd: ready whenever the ring has data (ringbuf_map_poll_kern) */
static void poll_ready(const char *what)
{
	struct pollfd p = { .fd = map_fd, .events = POLLIN | POLLRDNORM | POLLOUT };
	int n = poll(&p, 1, 50);
	printf("poll after %s: %d revents %#x\n", what, n, (unsigned)p.revents);
}

static void dump(void)
{
	uint64_t c = *cons, p = *prod;
	printf("dump: cons %llu prod %llu\n", (unsigned long long)c, (unsigned long long)p);
	while (c < p) {
		uint32_t len, pg;
		memcpy(&len, data + (c & (RING - 1)), 4);
		memcpy(&pg, data + (c & (RING - 1)) + 4, 4);
		uint32_t l = len & ~(3u << 30);
		const uint8_t *d = data + (c & (RING - 1)) + 8;
		uint32_t sum = 0;
		for (uint32_t i = 0; i < l; i++)
			sum = sum * 31 + d[i];
		printf("  @%llu len %u busy %u discard %u pg_off %u sum %08x\n", (unsigned long long)c, l,
		       len >> 31, (len >> 30) & 1, pg, sum);
		c += (l + 8 + 7) & ~7ull;
	}
}

static int testrun_mode(struct bpf_object *obj)
{
	map_fd = bpf_map__fd(bpf_object__find_map_by_name(obj, "small"));
	prog_fd = bpf_program__fd(bpf_object__find_program_by_name(obj, "rb_op"));
	struct ring_buffer *rb = ring_buffer__new(map_fd, on_small, NULL, NULL);
	if (!rb) {
		printf("ring_buffer__new: %s\n", strerror(errno));
		return 1;
	}
	epfd = ring_buffer__epoll_fd(rb);
	cons = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, map_fd, 0);
	void *pp = mmap(NULL, 4096 + 2 * RING, PROT_READ, MAP_SHARED, map_fd, 4096);
	if (cons == MAP_FAILED || pp == MAP_FAILED) {
		printf("mmap: %s\n", strerror(errno));
		return 1;
	}
	prod = pp;
	data = (const uint8_t *)pp + 4096;
#define CONSUME() printf("consume: %d\n", ring_buffer__consume(rb))
	query();
	wait_ready("nothing");
	op(0, 24, BPF_RB_NO_WAKEUP);
	wait_ready("output no_wakeup");
	op(0, 24, 0);
	wait_ready("output behind the consumer");
	poll_ready("output behind the consumer");
	op(0, 24, BPF_RB_FORCE_WAKEUP);
	wait_ready("output force_wakeup");
	wait_ready("nothing consumed");
	dump();
	query();
	CONSUME();
	wait_ready("consumed");
	poll_ready("consumed");
	op(1, 8, 0);
	wait_ready("submit at the consumer");
	CONSUME();
	wait_ready("consumed");
	op(2, 24, 0);
	wait_ready("discard at the consumer");
	dump();
	CONSUME();
	wait_ready("consumed");
	op(1, 24, BPF_RB_NO_WAKEUP);
	wait_ready("submit no_wakeup");
	op(2, 8, BPF_RB_FORCE_WAKEUP);
	wait_ready("discard force_wakeup");
	CONSUME();
	op(3, 8, 1);
	op(3, 8, 0);
	op(0, 8, 4);
	op(0, 8, 3);
	op(0, 0, 0);
	wait_ready("flags both");
	CONSUME();
	query();
	/* fill the ring: until -EAGAIN */
	int n = 0;
	for (;;) {
		struct op o = run(0, 200, BPF_RB_NO_WAKEUP);
		if (o.ret) {
			printf("full after %d records: ret %lld\n", n, (long long)o.ret);
			break;
		}
		n++;
	}
	op(1, 200, 0);
	op(1, 8, 0);
	query();
	dump();
	wait_ready("filled without wake-up");
	CONSUME();
	query();
	/* records that wrap around the end of the data area */
	for (int i = 0; i < 40; i++) {
		op(0, 256 - (i % 3) * 50, 0);
		if (i % 7 == 6) {
			dump();
			CONSUME();
		}
	}
	dump();
	CONSUME();
	query();
	for (uint64_t f = 0; f < 6; f++) {
		struct op o = run(4, 0, f ? f : 99);
		printf("query(%llu) = %llu\n", (unsigned long long)(f ? f : 99), (unsigned long long)o.q[0]);
	}
	ring_buffer__free(rb);
	return 0;
}

/* ---- stress mode ---- */

struct stress {
	uint32_t p, n;
	uint64_t seq;
	int64_t ret;
};

static uint64_t st_next[4], st_bad, st_got;

static int on_stress(void *ctx, void *d, size_t size)
{
	uint64_t v[3];
	(void)ctx;
	memcpy(v, d, sizeof(v));
	if (size < 24 || v[0] >= 4 || v[1] != st_next[v[0]] || v[2] != ~v[1] ||
	    (v[1] % 3 == 1 ? size != 24 + v[1] % 57 : size != 24))
		st_bad++;
	else
		st_next[v[0]]++;
	st_got++;
	return 0;
}

static void on_chld(int sig)
{
	(void)sig;
}

static int stress_mode(struct bpf_object *obj, long n)
{
	int fd = bpf_program__fd(bpf_object__find_program_by_name(obj, "rb_stress"));
	struct ring_buffer *rb = ring_buffer__new(bpf_map__fd(bpf_object__find_map_by_name(obj, "events")),
						  on_stress, NULL, NULL);
	pid_t kids[4];
	uint64_t full = 0;

	if (!rb)
		return 1;
	for (uint32_t p = 0; p < 4; p++) {
		if ((kids[p] = fork()))
			continue;
		for (uint64_t seq = 0; seq < (uint64_t)n;) {
			struct stress c = { .p = p, .n = (uint32_t)((uint64_t)n - seq < 128 ? (uint64_t)n - seq : 128),
					    .seq = seq };
			/* a syscall program's context is copied back to ctx_in */
			LIBBPF_OPTS(bpf_test_run_opts, t, .ctx_in = &c, .ctx_size_in = sizeof(c));
			if (bpf_prog_test_run_opts(fd, &t))
				_exit(2);
			seq += (uint64_t)c.ret;
			if (!c.ret) {
				full++;
				usleep(100);
			}
		}
		_exit(0);
	}
	int st[4], failed = 0;
	signal(SIGCHLD, on_chld);   /* a producer that fails interrupts the wait */
	while (st_got < 4 * (uint64_t)n && !failed) {
		int r = ring_buffer__poll(rb, -1);
		if (r < 0 && r != -EINTR) {
			printf("ring_buffer__poll: %s\n", strerror(-r));
			break;
		}
		for (int p = 0; p < 4; p++)
			if (kids[p] > 0 && waitpid(kids[p], &st[p], WNOHANG) == kids[p]) {
				kids[p] = -kids[p];
				failed |= !WIFEXITED(st[p]) || WEXITSTATUS(st[p]);
			}
	}
	for (int p = 0; p < 4; p++) {
		if (kids[p] > 0)
			waitpid(kids[p], &st[p], 0);
		printf("producer %d: exit %d, %llu records in order\n", p, WIFEXITED(st[p]) ? WEXITSTATUS(st[p]) : -1,
		       (unsigned long long)st_next[p]);
	}
	printf("bad %llu, left %d\n", (unsigned long long)st_bad, ring_buffer__consume(rb));
	(void)full;
	ring_buffer__free(rb);
	return 0;
}

/* ---- leak mode ---- */

static int load_raw(const char *what, struct bpf_insn *insns, size_t n)
{
	LIBBPF_OPTS(bpf_prog_load_opts, o, .prog_flags = BPF_F_SLEEPABLE);
	int fd = bpf_prog_load(BPF_PROG_TYPE_SYSCALL, what, "GPL", insns, n, &o);
	printf("verifier %s: %s\n", what, fd < 0 ? strerror(errno) : "loaded");
	if (fd >= 0) {
		struct op ctx = { 0 };
		LIBBPF_OPTS(bpf_test_run_opts, t, .ctx_in = &ctx, .ctx_size_in = sizeof(ctx));
		int err = bpf_prog_test_run_opts(fd, &t);
		printf("verifier %s: run %s\n", what, err ? strerror(errno) : "ok");
		close(fd);
	}
	return fd;
}

static int leak_mode(struct bpf_object *obj)
{
	map_fd = bpf_map__fd(bpf_object__find_map_by_name(obj, "small"));
	prog_fd = bpf_program__fd(bpf_object__find_program_by_name(obj, "rb_op"));
	struct ring_buffer *rb = ring_buffer__new(map_fd, on_small, NULL, NULL);
	if (!rb)
		return 1;
#define LD_MAP(fd) { .code = BPF_LD | BPF_DW | BPF_IMM, .dst_reg = 1, .src_reg = BPF_PSEUDO_MAP_FD, .imm = (fd) }, { 0 }
#define MOV_IMM(d, v) { .code = BPF_ALU64 | BPF_MOV | BPF_K, .dst_reg = (d), .imm = (v) }
#define CALL(f) { .code = BPF_JMP | BPF_CALL, .imm = (f) }
#define EXIT { .code = BPF_JMP | BPF_EXIT }
	struct bpf_insn unreleased[] = {
		LD_MAP(map_fd), MOV_IMM(2, 8), MOV_IMM(3, 0), CALL(BPF_FUNC_ringbuf_reserve),
		MOV_IMM(0, 0), EXIT,
	};
	struct bpf_insn fault[] = {
		LD_MAP(map_fd), MOV_IMM(2, 8), MOV_IMM(3, 0), CALL(BPF_FUNC_ringbuf_reserve),
		MOV_IMM(1, 0), { .code = BPF_LDX | BPF_MEM | BPF_DW, .dst_reg = 1, .src_reg = 1 },
		MOV_IMM(0, 0), EXIT,
	};
	load_raw("unreleased", unreleased, sizeof(unreleased) / sizeof(unreleased[0]));
	load_raw("fault", fault, sizeof(fault) / sizeof(fault[0]));
	op(0, 24, 0);
	printf("consume: %d\n", ring_buffer__consume(rb));
	query();
	ring_buffer__free(rb);
	return 0;
}

/* ---- inherit mode ---- */

static int inherit_child(int fd, int sync)
{
	struct epoll_event ev = { .events = EPOLLIN }, out;
	int ep = epoll_create1(EPOLL_CLOEXEC);
	int r = epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
	printf("child: epoll_ctl %s\n", r ? strerror(errno) : "ok");
	if (write(sync, "r", 1) != 1)
		return 1;
	r = epoll_wait(ep, &out, 1, 5000);
	printf("child: woken %d\n", r);
	return 0;
}

static int inherit_mode(struct bpf_object *obj, char *self)
{
	char fdnum[16], syncnum[16], c;
	int st, sync[2];

	map_fd = bpf_map__fd(bpf_object__find_map_by_name(obj, "small"));
	prog_fd = bpf_program__fd(bpf_object__find_program_by_name(obj, "rb_op"));
	if (pipe(sync))
		return 1;
	fcntl(map_fd, F_SETFD, 0);
	snprintf(fdnum, sizeof(fdnum), "%d", map_fd);
	snprintf(syncnum, sizeof(syncnum), "%d", sync[1]);
	pid_t child = fork();
	if (child == 0) {
		close(sync[0]);
		execl("/proc/self/exe", self, "-", "child", fdnum, syncnum, (char *)NULL);
		_exit(1);
	}
	close(sync[1]);
	/* the child sleeps in epoll_wait (or is about to) when the output comes */
	if (read(sync[0], &c, 1) != 1)
		return 1;
	usleep(50000);
	struct op o = run(0, 24, 0);
	waitpid(child, &st, 0);
	printf("parent: output %lld\nchild exit %d\n", (long long)o.ret, WIFEXITED(st) ? WEXITSTATUS(st) : -1);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc == 5 && !strcmp(argv[2], "child")) {
		setvbuf(stdout, NULL, _IOLBF, 0);
		return inherit_child(atoi(argv[3]), atoi(argv[4]));
	}
	if (argc < 3) {
		fprintf(stderr, "usage: see the comment at the top of ringbuf_loader.c\n");
		return 2;
	}
	setvbuf(stdout, NULL, _IOLBF, 0);
	signal(SIGALRM, on_alarm);
	alarm(30);
	libbpf_set_print(silent);
	struct bpf_object *obj = bpf_object__open_file(argv[1], NULL);
	if (!obj) {
		printf("open: %s\n", strerror(errno));
		return 1;
	}
	int err = bpf_object__load(obj);
	if (err) {
		printf("load: %s\n", strerror(-err));
		return 1;
	}
	int r = 2;
	if (!strcmp(argv[2], "uprobe") && argc == 5)
		r = uprobe_mode(obj, argv[3], atol(argv[4]));
	else if (!strcmp(argv[2], "testrun"))
		r = testrun_mode(obj);
	else if (!strcmp(argv[2], "leak"))
		r = leak_mode(obj);
	else if (!strcmp(argv[2], "stress") && argc == 4)
		r = stress_mode(obj, atol(argv[3]));
	else if (!strcmp(argv[2], "inherit"))
		r = inherit_mode(obj, argv[0]);
	if (!r)
		printf("done\n");
	bpf_object__close(obj);
	return r;
}

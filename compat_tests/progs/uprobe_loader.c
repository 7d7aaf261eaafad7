/* A libbpf loader for the uprobe tests (test_libbpf_uprobe.py,
 * test_uprobe_robustness.py): bpf_object__open_file/load, uprobe and
 * uretprobe through bpf_program__attach_uprobe_opts, a perf buffer
 * consumer, then a trace without ids, pids or addresses, so the kernel's
 * run and bpfshim's compare line for line.
 *
 *   uprobe_loader -o OBJ -f FUNC [opts] [-- TARGET ARGS...]
 *     -f FUNC    attach by symbol name      -a OFF   attach by file offset
 *     -b BIN     binary to probe (default: TARGET)
 *     -r         also a uretprobe            -e       send events (perf buffer)
 *     -P         pid filter = the child (attached before its exec)
 *     -p PID     pid filter = PID            -w PID   run until PID exits
 *     -G         global data: set .rodata before load, print .bss/.data after
 *     -F N       attach/detach N times while the target runs, then SIGTERM it
 *     -H         hold: print "attached", then run until killed or the
 *                target exits
 *     -T SEC     give up after SEC seconds (exit 3)
 *     -q         counts only: print "total entry N ret N"
 */
#define _GNU_SOURCE
#include <bpf/bpf.h>
#include <bpf/btf.h>
#include <bpf/libbpf.h>
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

struct key {
	uint32_t kind, bucket;
};

struct event {
	uint32_t kind, pad;
	int64_t arg, ret;
};

static struct event *evs;
static size_t nevs, cap_evs;
static unsigned long long lost;

static void on_sample(void *ctx, int cpu, void *data, uint32_t size)
{
	(void)ctx; (void)cpu;
	if (size < sizeof(struct event)) {
		printf("short sample %u\n", size);
		return;
	}
	if (nevs == cap_evs) {
		cap_evs = cap_evs ? cap_evs * 2 : 256;
		evs = realloc(evs, cap_evs * sizeof(*evs));
		if (!evs)
			abort();
	}
	memcpy(&evs[nevs++], data, sizeof(struct event));
}

static void on_lost(void *ctx, int cpu, unsigned long long n)
{
	(void)ctx; (void)cpu;
	lost += n;
}

static int cmp_ev(const void *a, const void *b)
{
	const struct event *x = a, *y = b;
	if (x->kind != y->kind)
		return x->kind < y->kind ? -1 : 1;
	if (x->arg != y->arg)
		return x->arg < y->arg ? -1 : 1;
	if (x->ret != y->ret)
		return x->ret < y->ret ? -1 : 1;
	return 0;
}

static int cmp_key(const void *a, const void *b)
{
	const struct key *x = a, *y = b;
	if (x->kind != y->kind)
		return x->kind < y->kind ? -1 : 1;
	return x->bucket < y->bucket ? -1 : x->bucket > y->bucket;
}

static void on_alarm(int sig)
{
	static const char msg[] = "timeout\n";
	(void)sig;
	write(1, msg, sizeof(msg) - 1);
	_exit(3);
}

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static struct bpf_map *internal_map(struct bpf_object *obj, const char *suffix)
{
	struct bpf_map *m;
	bpf_object__for_each_map(m, obj) {
		const char *n = bpf_map__name(m);
		size_t ln = strlen(n), ls = strlen(suffix);
		if (ln >= ls && !strcmp(n + ln - ls, suffix))
			return m;
	}
	return NULL;
}

/* Offset of a variable in a DATASEC, from the object's BTF (what a
 * skeleton's generated struct encodes). */
static long var_off(struct bpf_object *obj, const char *sec, const char *var)
{
	struct btf *btf = bpf_object__btf(obj);
	int id = btf ? btf__find_by_name_kind(btf, sec, BTF_KIND_DATASEC) : -1;
	const struct btf_type *t;
	const struct btf_var_secinfo *vs;

	if (id < 0)
		return -1;
	t = btf__type_by_id(btf, id);
	vs = btf_var_secinfos(t);
	for (int i = 0; i < btf_vlen(t); i++, vs++)
		if (!strcmp(btf__name_by_offset(btf, btf__type_by_id(btf, vs->type)->name_off), var))
			return vs->offset;
	return -1;
}

static int64_t get64(const void *base, long off)
{
	int64_t v;
	memcpy(&v, (const char *)base + off, 8);
	return v;
}

struct attach_args {
	struct bpf_program *entry, *ret;
	const char *binary, *func;
	long offset;
	pid_t pid;
	int retprobe;
	struct bpf_link *l_entry, *l_ret;
};

static int do_attach(struct attach_args *a, int verbose)
{
	LIBBPF_OPTS(bpf_uprobe_opts, o);
	int err;

	o.func_name = a->func;
	o.retprobe = false;
	a->l_entry = bpf_program__attach_uprobe_opts(a->entry, a->pid, a->binary, a->func ? 0 : a->offset, &o);
	if (!a->l_entry) {
		err = -errno;
		printf("attach uprobe: %s\n", strerror(-err));
		return err;
	}
	if (verbose)
		printf("attach uprobe: ok\n");
	if (!a->retprobe)
		return 0;
	o.retprobe = true;
	a->l_ret = bpf_program__attach_uprobe_opts(a->ret, a->pid, a->binary, a->func ? 0 : a->offset, &o);
	if (!a->l_ret) {
		err = -errno;
		printf("attach uretprobe: %s\n", strerror(-err));
		bpf_link__destroy(a->l_entry);
		a->l_entry = NULL;
		return err;
	}
	if (verbose)
		printf("attach uretprobe: ok\n");
	return 0;
}

static void do_detach(struct attach_args *a)
{
	bpf_link__destroy(a->l_ret);
	bpf_link__destroy(a->l_entry);
	a->l_ret = a->l_entry = NULL;
}

static int silent(enum libbpf_print_level lvl, const char *fmt, va_list ap)
{
	/* warnings go to stderr (which the tests show on failure), not stdout */
	if (lvl == LIBBPF_DEBUG)
		return 0;
	return vfprintf(stderr, fmt, ap);
}

int main(int argc, char **argv)
{
	const char *objpath = NULL;
	struct attach_args a = { .pid = -1, .offset = -1 };
	int events = 0, globals = 0, hold = 0, child_pid_filter = 0, quiet = 0, flaps = 0;
	int timeout = 30, opt, err, status = 0;
	pid_t waitfor = 0, child = -1;
	char **targv = NULL;
	int go[2] = { -1, -1 };

	while ((opt = getopt(argc, argv, "o:f:a:b:rePp:w:GF:HT:q")) != -1) {
		switch (opt) {
		case 'o': objpath = optarg; break;
		case 'f': a.func = optarg; break;
		case 'a': a.offset = strtol(optarg, NULL, 0); break;
		case 'b': a.binary = optarg; break;
		case 'r': a.retprobe = 1; break;
		case 'e': events = 1; break;
		case 'P': child_pid_filter = 1; break;
		case 'p': a.pid = atoi(optarg); break;
		case 'w': waitfor = atoi(optarg); break;
		case 'G': globals = 1; break;
		case 'F': flaps = atoi(optarg); break;
		case 'H': hold = 1; break;
		case 'T': timeout = atoi(optarg); break;
		case 'q': quiet = 1; break;
		default: return 2;
		}
	}
	if (optind < argc)
		targv = argv + optind;
	if (!a.binary && targv)
		a.binary = targv[0];
	if (!objpath || !a.binary || (!a.func && a.offset < 0)) {
		fprintf(stderr, "usage: see the comment at the top of uprobe_loader.c\n");
		return 2;
	}
	setvbuf(stdout, NULL, _IOLBF, 0);
	signal(SIGALRM, on_alarm);
	alarm(timeout);
	libbpf_set_print(silent);

	struct bpf_object *obj = bpf_object__open_file(objpath, NULL);
	if (!obj) {
		printf("open: %s\n", strerror(errno));
		return 1;
	}
	struct bpf_map *rodata = internal_map(obj, ".rodata");
	if (globals) {
		long o_mod = var_off(obj, ".rodata", "cfg_mod"), o_bias = var_off(obj, ".rodata", "cfg_bias");
		size_t sz;
		const void *init = rodata ? bpf_map__initial_value(rodata, &sz) : NULL;
		if (!init || o_mod < 0 || o_bias < 0) {
			printf("no .rodata config\n");
			return 1;
		}
		char *buf = malloc(sz);
		memcpy(buf, init, sz);
		printf(".rodata before load: cfg_mod %lld cfg_bias %lld\n",
		       (long long)get64(buf, o_mod), (long long)get64(buf, o_bias));
		int64_t mod = 5, bias = 1000;
		memcpy(buf + o_mod, &mod, 8);
		memcpy(buf + o_bias, &bias, 8);
		err = bpf_map__set_initial_value(rodata, buf, sz);
		printf("set .rodata: %d\n", err);
		free(buf);
	}
	err = bpf_object__load(obj);
	if (err) {
		printf("load: %s\n", strerror(-err));
		return 1;
	}
	a.entry = bpf_object__find_program_by_name(obj, "on_entry");
	a.ret = bpf_object__find_program_by_name(obj, "on_return");
	int counts_fd = bpf_object__find_map_fd_by_name(obj, "counts");
	int totals_fd = bpf_object__find_map_fd_by_name(obj, "totals");
	int cfg_fd = bpf_object__find_map_fd_by_name(obj, "cfg");
	int events_fd = bpf_object__find_map_fd_by_name(obj, "events");
	if (!a.entry || !a.ret || counts_fd < 0 || totals_fd < 0 || cfg_fd < 0 || events_fd < 0) {
		printf("object lacks a program or map\n");
		return 1;
	}
	uint32_t zero = 0, flags = events;
	err = bpf_map_update_elem(cfg_fd, &zero, &flags, BPF_ANY);
	if (err) {
		printf("cfg update: %s\n", strerror(errno));
		return 1;
	}
	if (globals && rodata) {
		/* .rodata is frozen by libbpf: the kernel refuses writes from user space */
		char buf[4096] = { 0 };
		err = bpf_map_update_elem(bpf_map__fd(rodata), &zero, buf, BPF_ANY);
		printf("update frozen .rodata: %s\n", err ? strerror(errno) : "ok");
	}

	struct perf_buffer *pb = NULL;
	if (events) {
		pb = perf_buffer__new(events_fd, 64, on_sample, on_lost, NULL, NULL);
		if (!pb) {
			printf("perf_buffer__new: %s\n", strerror(errno));
			return 1;
		}
	}

	if (targv) {
		if (pipe(go))
			return 1;
		fflush(stdout);
		child = fork();
		if (child < 0)
			return 1;
		if (child == 0) {
			char c;
			close(go[1]);
			if (read(go[0], &c, 1) != 1)
				_exit(126); /* the loader failed before it let us run */
			close(go[0]);
			execv(targv[0], targv);
			_exit(127);
		}
		close(go[0]);
		if (child_pid_filter)
			a.pid = child;
	}

	if (flaps) {
		/* The target runs first; probes come and go under its threads. */
		if (child > 0 && write(go[1], "g", 1) != 1)
			return 1;
		usleep(100000);
		int ok = 0;
		for (int i = 0; i < flaps; i++) {
			if (do_attach(&a, 0) == 0)
				ok++;
			usleep(20000 + (i % 5) * 10000);
			do_detach(&a);
			usleep(10000);
		}
		printf("flaps: %d/%d attached\n", ok, flaps);
		if (child > 0)
			kill(child, SIGTERM); /* the target stops its threads and exits 0 */
	} else {
		if (do_attach(&a, 1)) {
			if (child > 0) {
				kill(child, SIGKILL);
				waitpid(child, NULL, 0);
			}
			return 1;
		}
		if (hold)
			printf("attached\n");
		if (child > 0 && write(go[1], "g", 1) != 1)
			return 1;
	}

	/* Run until the target exits (child or -w PID); hold with neither runs
	 * until killed. */
	int pidfd = waitfor ? (int)syscall(SYS_pidfd_open, waitfor, 0) : -1;
	if (waitfor && pidfd < 0) {
		printf("pidfd_open: %s\n", strerror(errno));
		do_detach(&a);
		return 1;
	}
	double t0 = now();
	for (;;) {
		if (pb)
			perf_buffer__poll(pb, 20);
		else
			usleep(20000);
		if (child > 0) {
			pid_t r = waitpid(child, &status, WNOHANG);
			if (r == child)
				break;
		} else if (pidfd >= 0) {
			struct pollfd p = { .fd = pidfd, .events = POLLIN };
			if (poll(&p, 1, 0) == 1)
				break;
		} else if (!hold) {
			break;
		}
	}
	if (pb)
		perf_buffer__consume(pb);
	if (child > 0) {
		if (WIFEXITED(status))
			printf("target exit %d\n", WEXITSTATUS(status));
		else
			printf("target signal %d\n", WTERMSIG(status));
	} else if (waitfor) {
		printf("target gone after %s\n", now() - t0 < timeout ? "less than the timeout" : "the timeout");
	}
	do_detach(&a);

	uint64_t te = 0, tr = 0;
	uint32_t k0 = 0, k1 = 1;
	bpf_map_lookup_elem(totals_fd, &k0, &te);
	bpf_map_lookup_elem(totals_fd, &k1, &tr);
	if (quiet || flaps) {
		printf("total entry %llu ret %llu\n", (unsigned long long)te, (unsigned long long)tr);
		return 0;
	}

	struct key keys[64], *prev = NULL, next;
	int nk = 0;
	while (nk < 64 && bpf_map_get_next_key(counts_fd, prev, &next) == 0) {
		keys[nk] = next;
		prev = &keys[nk++];
	}
	qsort(keys, nk, sizeof(keys[0]), cmp_key);
	printf("counts: %d keys\n", nk);
	for (int i = 0; i < nk; i++) {
		uint64_t v = 0;
		if (bpf_map_lookup_elem(counts_fd, &keys[i], &v))
			printf("  lookup: %s\n", strerror(errno));
		printf("  %s bucket %u: %llu\n", keys[i].kind ? "ret" : "entry", keys[i].bucket,
		       (unsigned long long)v);
	}
	printf("totals: entry %llu ret %llu\n", (unsigned long long)te, (unsigned long long)tr);

	if (globals) {
		struct bpf_map *bss = internal_map(obj, ".bss"), *data = internal_map(obj, ".data");
		long o_calls = var_off(obj, ".bss", "bss_calls"), o_sum = var_off(obj, ".bss", "bss_argsum");
		long o_last = var_off(obj, ".data", "data_last");
		char buf[4096];
		if (!bss || !data || o_calls < 0 || o_sum < 0 || o_last < 0) {
			printf("no .bss/.data\n");
			return 1;
		}
		if (bpf_map_lookup_elem(bpf_map__fd(bss), &zero, buf))
			printf(".bss lookup: %s\n", strerror(errno));
		else
			printf(".bss (lookup): calls %lld argsum %lld\n", (long long)get64(buf, o_calls),
			       (long long)get64(buf, o_sum));
		/* what bpf_object__load_skeleton does for a mmapable .bss: map the fd */
		size_t sz = bpf_map__value_size(bss);
		void *mm = (bpf_map__map_flags(bss) & BPF_F_MMAPABLE)
				   ? mmap(NULL, sz, PROT_READ, MAP_SHARED, bpf_map__fd(bss), 0)
				   : MAP_FAILED;
		if (mm != MAP_FAILED) {
			printf(".bss (mmap): calls %lld argsum %lld\n", (long long)get64(mm, o_calls),
			       (long long)get64(mm, o_sum));
			munmap(mm, sz);
		} else {
			printf(".bss (mmap): %s\n", strerror(errno));
		}
		if (bpf_map_lookup_elem(bpf_map__fd(data), &zero, buf))
			printf(".data lookup: %s\n", strerror(errno));
		else
			printf(".data: last %lld\n", (long long)get64(buf, o_last));
		if (bpf_map_lookup_elem(bpf_map__fd(rodata), &zero, buf))
			printf(".rodata lookup: %s\n", strerror(errno));
		else
			printf(".rodata after load: cfg_mod %lld cfg_bias %lld\n",
			       (long long)get64(buf, var_off(obj, ".rodata", "cfg_mod")),
			       (long long)get64(buf, var_off(obj, ".rodata", "cfg_bias")));
	}

	if (events) {
		qsort(evs, nevs, sizeof(*evs), cmp_ev);
		printf("events: %zu lost %llu\n", nevs, lost);
		for (size_t i = 0; i < nevs; i++)
			printf("  %s arg %lld ret %lld\n", evs[i].kind ? "ret" : "entry", (long long)evs[i].arg,
			       (long long)evs[i].ret);
		perf_buffer__free(pb);
	}
	bpf_object__close(obj);
	printf("done\n");
	return 0;
}

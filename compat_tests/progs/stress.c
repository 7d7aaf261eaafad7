/* Concurrent writers on shared maps, through libbpf.
 *
 *   stress PIN_DIR NPROC ITERS [KILL_ROUNDS]
 *
 * Worker processes are fork + exec of this program, so each is a fresh
 * loader. Scenarios:
 *   lock       a hash map and an array map whose value is
 *              struct { struct bpf_spin_lock l; u32 pad; u64 w[]; }
 *              (BTF built with btf__add_*). NPROC workers, ITERS times on
 *              both maps: lookup(BPF_F_LOCK), check that every w[] holds
 *              the same number (a torn value would not), update(BPF_F_LOCK)
 *              with all w[] = id << 32 | i. Maps opened by bpf_obj_get().
 *   mmap       a BPF_F_MMAPABLE array opened by bpf_obj_get(); NPROC
 *              workers mmap it and do ITERS __atomic_fetch_add on one u64:
 *              the total must be exactly NPROC * ITERS.
 *   kill-*     worker 0 killed by SIGKILL part-way; the others must finish
 *              within a deadline, read no torn value, and leave the maps
 *              consistent. kill-lock: as lock, KILL_ROUNDS rounds, the
 *              victim dies between 10% and 90%; kill-lock-4k: 4 KiB values,
 *              ITERS/20; kill-in-copy: 2 workers, 64 KiB values, ITERS/100,
 *              20 * KILL_ROUNDS rounds, so the victim is often stopped
 *              while it writes a value under the lock; kill-mmap: as mmap,
 *              the victim stops a quarter through.
 *   inherit    one worker gets an mmapable array as a plain fd inherited
 *              over exec, and updates it and adds through an mmap of it
 *              (in both orders).
 * stdout carries only results that do not depend on timing (compared
 * with the kernel's); timings go to stderr.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <linux/bpf.h>
#include <bpf/bpf.h>
#include <bpf/btf.h>

#define MAXW 16
#define DEADLINE_S 30

/* The value: struct bpf_spin_lock at 0, a u32 pad, then u64 words that all
 * hold the same number; VSZ bytes in all (24, or 4096 / 65536 for the
 * scenarios where much of a writer's time is spent copying under the lock). */
#define MAXV 65536
#define V_LOCK(p) ((__u32)((__u64 *)(p))[0])   /* little-endian: the low half */
#define V_A(p) (*(__u64 *)((char *)(p) + 8))

/* Shared between the parent and the workers (a memfd inherited over exec). */
struct shared {
	volatile __u64 progress[MAXW];
	volatile __u64 torn[MAXW];
	volatile __u64 errs[MAXW];
	volatile __u64 done[MAXW];
	volatile int first_err[MAXW];
};

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static struct shared *map_shared(int fd)
{
	void *p = mmap(NULL, sizeof(struct shared), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (p == MAP_FAILED) {
		perror("mmap shared");
		exit(3);
	}
	return p;
}

/* ---------------- workers ---------------- */

static void note_err(struct shared *sh, int id, int e)
{
	if (!sh->errs[id]++)
		sh->first_err[id] = e;
}

/* Every u64 after the lock word carries the same number: a value read
 * while half-written shows two (memcpy may write its ends last, so a and
 * b alone would not show it). */
static void fill(__u64 *v, int vsz, __u64 x)
{
	for (int j = 1; j < vsz / 8; j++)
		v[j] = x;
}

static int all_equal(const __u64 *v, int vsz)
{
	for (int j = 2; j < vsz / 8; j++)
		if (v[j] != v[1])
			return 0;
	return 1;
}

static int worker_lock(int id, long iters, const char *dir, struct shared *sh, int vsz)
{
	char p[512];
	int fds[2];
	__u64 v[MAXV / 8] = { 0 };
	__u32 k = 0;

	for (int m = 0; m < 2; m++) {
		snprintf(p, sizeof(p), "%s/%s", dir, m ? "array" : "hash");
		fds[m] = bpf_obj_get(p);
		if (fds[m] < 0) {
			note_err(sh, id, errno);
			return 1;
		}
	}
	for (long i = 0; i < iters; i++) {
		for (int m = 0; m < 2; m++) {
			if (bpf_map_lookup_elem_flags(fds[m], &k, v, BPF_F_LOCK))
				note_err(sh, id, errno);
			else if (!all_equal(v, vsz))
				sh->torn[id]++;
			v[0] = 0;
			fill(v, vsz, ((__u64)id << 32) | (__u64)i);
			if (bpf_map_update_elem(fds[m], &k, v, BPF_F_LOCK | BPF_EXIST))
				note_err(sh, id, errno);
		}
		sh->progress[id] = i + 1;
	}
	return 0;
}

/* `stop`: worker 0 stops a quarter through and waits to be killed (an
 * atomic add cannot be interrupted half-way, so where it dies is moot). */
static int worker_mmap(int id, long iters, const char *dir, struct shared *sh, int stop)
{
	char p[512];
	int fd;
	volatile __u64 *c;

	snprintf(p, sizeof(p), "%s/counter", dir);
	fd = bpf_obj_get(p);
	if (fd < 0) {
		note_err(sh, id, errno);
		return 1;
	}
	c = mmap(NULL, sysconf(_SC_PAGESIZE), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (c == MAP_FAILED) {
		note_err(sh, id, errno);
		return 1;
	}
	for (long i = 0; i < iters; i++) {
		if (stop && id == 0 && i == iters / 4)
			for (;;)
				pause();
		__atomic_fetch_add(&c[0], 1, __ATOMIC_RELAXED);
		sh->progress[id] = i + 1;
	}
	return 0;
}

/* A map fd inherited over exec, never seen by this process's libbpf:
 * element commands and mmap must work on it as on any other. */
static int worker_inherit(int fd, struct shared *sh, int mmap_first)
{
	__u32 k = 1;
	__u64 v = 77;
	volatile __u64 *c;

	if (!mmap_first && bpf_map_update_elem(fd, &k, &v, BPF_ANY))
		note_err(sh, 0, errno);
	c = mmap(NULL, sysconf(_SC_PAGESIZE), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (c == MAP_FAILED) {
		note_err(sh, 0, errno);
		return 1;
	}
	__atomic_fetch_add(&c[0], 5, __ATOMIC_RELAXED);
	if (mmap_first && bpf_map_update_elem(fd, &k, &v, BPF_ANY))
		note_err(sh, 0, errno);
	return 0;
}

/* ---------------- parent ---------------- */

static int make_btf(int *val_id, int *key_id, int vsz)
{
	struct btf *btf = btf__new_empty();
	int u32, u64, sl, vt;

	u32 = btf__add_int(btf, "unsigned int", 4, 0);
	u64 = btf__add_int(btf, "unsigned long long", 8, 0);
	sl = btf__add_struct(btf, "bpf_spin_lock", 4);
	btf__add_field(btf, "val", u32, 0, 0);
	vt = btf__add_struct(btf, "val", vsz);
	btf__add_field(btf, "l", sl, 0, 0);
	btf__add_field(btf, "pad", u32, 32, 0);
	btf__add_field(btf, "a", u64, 64, 0);
	btf__add_field(btf, "b", u64, (vsz - 8) * 8, 0);
	if (btf__load_into_kernel(btf)) {
		printf("btf load: %s\n", strerrorname_np(errno));
		return -1;
	}
	*val_id = vt;
	*key_id = u32;
	return dup(btf__fd(btf));   /* the btf object is leaked: its fd must live */
}

/* Start the workers; kill worker 0 when it is a quarter through if `kill0`.
 * Returns how many workers were still running at the deadline. */
static int run_workers(const char *self, const char *mode, int nproc, long iters, const char *arg,
		       int shfd, struct shared *sh, int kill0, double *secs)
{
	pid_t pids[MAXW];
	char id_s[16], it_s[32], sh_s[16];
	int left = nproc, killed = 0;
	double t0 = now();
	/* the lock victim dies anywhere between 10% and 90% of its run, the
	 * better to hit it inside a critical section in one of the rounds */
	__u64 kill_at = strncmp(mode, "lock", 4) ? (__u64)iters / 4
					     : (__u64)(iters * (0.1 + 0.8 * (rand() / (double)RAND_MAX)));

	memset((void *)sh, 0, sizeof(*sh));
	snprintf(sh_s, sizeof(sh_s), "%d", shfd);
	for (int i = 0; i < nproc; i++) {
		/* a lock victim runs until it is killed, so it always dies
		 * part-way however the CPUs were shared */
		snprintf(it_s, sizeof(it_s), "%ld", kill0 && i == 0 && !strncmp(mode, "lock", 4) ? 0x7fffffffL : iters);
		snprintf(id_s, sizeof(id_s), "%d", i);
		pids[i] = fork();
		if (pids[i] == 0) {
			execl(self, self, "worker", mode, id_s, it_s, arg, sh_s, (char *)NULL);
			_exit(127);
		}
	}
	while (left > 0 && now() - t0 < DEADLINE_S) {
		int st;
		pid_t p = waitpid(-1, &st, WNOHANG);
		if (p > 0) {
			for (int i = 0; i < nproc; i++)
				if (pids[i] == p) {
					pids[i] = 0;
					if (!(WIFEXITED(st) && WEXITSTATUS(st) == 0) && !(i == 0 && kill0))
						fprintf(stderr, "worker %d: status %#x\n", i, st);
				}
			left--;
			continue;
		}
		if (kill0 && !killed && sh->progress[0] >= kill_at) {
			kill(pids[0], SIGKILL);
			killed = 1;
		}
		usleep(kill0 && !killed ? 200 : 2000);
	}
	*secs = now() - t0;
	for (int i = 0; i < nproc; i++)
		if (pids[i] > 0) {
			kill(pids[i], SIGKILL);
			waitpid(pids[i], NULL, 0);
		}
	return left;
}

static int lock_scenario(const char *self, const char *name, const char *dir, int nproc, long iters, int shfd,
			 struct shared *sh, int kill0, int vsz)
{
	char p[2][512], mode[32];
	int bfd, vid, kid, fds[2], stuck, first = -1;
	__u64 torn = 0, errs = 0;
	double secs;
	__u32 k = 0;
	__u64 v[MAXV / 8] = { 0 };

	snprintf(mode, sizeof(mode), "lock:%d", vsz);
	bfd = make_btf(&vid, &kid, vsz);
	if (bfd < 0)
		return 1;
	for (int m = 0; m < 2; m++) {
		LIBBPF_OPTS(bpf_map_create_opts, o, .btf_fd = bfd, .btf_key_type_id = kid, .btf_value_type_id = vid);
		fds[m] = bpf_map_create(m ? BPF_MAP_TYPE_ARRAY : BPF_MAP_TYPE_HASH, m ? "lk_array" : "lk_hash",
					4, vsz, 4, &o);
		if (fds[m] < 0) {
			printf("%s: create: %s\n", name, strerrorname_np(errno));
			return 1;
		}
		if (bpf_map_update_elem(fds[m], &k, v, BPF_ANY)) {
			printf("%s: init: %s\n", name, strerrorname_np(errno));
			return 1;
		}
		snprintf(p[m], sizeof(p[m]), "%s/%s", dir, m ? "array" : "hash");
		if (bpf_obj_pin(fds[m], p[m])) {
			printf("%s: pin: %s\n", name, strerrorname_np(errno));
			return 1;
		}
	}
	stuck = run_workers(self, mode, nproc, iters, dir, shfd, sh, kill0, &secs);
	for (int i = 0; i < nproc; i++) {
		torn += sh->torn[i];
		errs += sh->errs[i];
		if (sh->errs[i] && first < 0)
			first = sh->first_err[i];
	}
	printf("%s: %d workers x %ld iterations: stuck %d torn %llu errors %llu%s%s\n", name, nproc, iters, stuck,
	       (unsigned long long)torn, (unsigned long long)errs, first >= 0 ? " first " : "",
	       first >= 0 ? strerrorname_np(first) : "");
	for (int m = 0; m < 2; m++) {
		int finished = 0;
		memset(v, 0xff, sizeof(v));
		if (bpf_map_lookup_elem_flags(fds[m], &k, v, BPF_F_LOCK)) {
			printf("%s: final lookup: %s\n", name, strerrorname_np(errno));
			continue;
		}
		/* the last write was some worker's last iteration; the victim's
		 * is its progress, or one more if it died after the update */
		for (int i = 0; i < nproc; i++) {
			__u64 last = (kill0 && i == 0) ? sh->progress[0] : (__u64)iters;
			if (V_A(v) == (((__u64)i << 32) | (last - 1)) || (kill0 && i == 0 && V_A(v) == (last | (__u64)i << 32)))
				finished = 1;
		}
		printf("%s: %s final value: words equal %d, a worker's last write %d, lock word %u\n", name,
		       m ? "array" : "hash", all_equal(v, vsz), finished, V_LOCK(v));
		unlink(p[m]);
		close(fds[m]);
	}
	if (kill0)
		printf("%s: victim killed while running: %d\n", name, sh->progress[0] > 0 && sh->progress[0] < 0x7fffffffUL);
	fprintf(stderr, "%s: %.2f s\n", name, secs);
	close(bfd);
	return 0;
}

static int mmap_scenario(const char *self, const char *dir, int nproc, long iters, int shfd, struct shared *sh,
			 int kill0)
{
	const char *name = kill0 ? "kill-mmap" : "mmap";
	LIBBPF_OPTS(bpf_map_create_opts, o, .map_flags = BPF_F_MMAPABLE);
	char p[512];
	int fd, stuck;
	double secs;
	__u32 k = 0;
	__u64 v = 0;

	fd = bpf_map_create(BPF_MAP_TYPE_ARRAY, "counter", 4, 8, 2, &o);
	snprintf(p, sizeof(p), "%s/counter", dir);
	if (fd < 0 || bpf_obj_pin(fd, p)) {
		printf("%s: create/pin: %s\n", name, strerrorname_np(errno));
		return 1;
	}
	stuck = run_workers(self, kill0 ? "mmap-kill" : "mmap", nproc, iters, dir, shfd, sh, kill0, &secs);
	unlink(p);
	if (bpf_map_lookup_elem(fd, &k, &v))
		printf("%s: lookup: %s\n", name, strerrorname_np(errno));
	if (!kill0) {
		printf("%s: %d workers x %ld increments: stuck %d count %llu\n", name, nproc, iters, stuck,
		       (unsigned long long)v);
	} else {
		/* the victim's increments are its progress, or one more when it
		 * died between the add and the progress store */
		__u64 rest = v - (__u64)(nproc - 1) * iters;
		printf("%s: %d workers x %ld increments, worker 0 killed: stuck %d survivors' count complete %d\n",
		       name, nproc, iters, stuck, rest == sh->progress[0] || rest == sh->progress[0] + 1);
	}
	for (int i = 0; i < nproc; i++)
		if (sh->errs[i])
			printf("%s: worker %d: %s\n", name, i, strerrorname_np(sh->first_err[i]));
	fprintf(stderr, "%s: %.2f s\n", name, secs);
	close(fd);
	return 0;
}

static int inherit_scenario(const char *self, int shfd, struct shared *sh)
{
	LIBBPF_OPTS(bpf_map_create_opts, o, .map_flags = BPF_F_MMAPABLE);
	char fd_s[16], sh_s[16];
	int fd, ifd, st = 0;
	__u32 k;
	__u64 v;
	pid_t pid;

	for (int mmap_first = 0; mmap_first < 2; mmap_first++) {
		const char *name = mmap_first ? "inherit, mmap first" : "inherit, update first";
		memset((void *)sh, 0, sizeof(*sh));
		fd = bpf_map_create(BPF_MAP_TYPE_ARRAY, "inherit", 4, 8, 2, &o);
		if (fd < 0) {
			printf("%s: create: %s\n", name, strerrorname_np(errno));
			return 1;
		}
		ifd = fcntl(fd, F_DUPFD, 100);    /* without FD_CLOEXEC */
		snprintf(fd_s, sizeof(fd_s), "%d", ifd);
		snprintf(sh_s, sizeof(sh_s), "%d", shfd);
		pid = fork();
		if (pid == 0) {
			execl(self, self, "worker", "inherit", mmap_first ? "1" : "0", "1", fd_s, sh_s, (char *)NULL);
			_exit(127);
		}
		waitpid(pid, &st, 0);
		close(ifd);
		printf("%s: worker status %d errors %llu%s%s\n", name, WEXITSTATUS(st),
		       (unsigned long long)sh->errs[0], sh->errs[0] ? " first " : "",
		       sh->errs[0] ? strerrorname_np(sh->first_err[0]) : "");
		for (k = 0; k < 2; k++) {
			v = 0;
			int r = bpf_map_lookup_elem(fd, &k, &v);
			printf("%s: [%u] lookup %d value %llu\n", name, k, r, (unsigned long long)v);
		}
		close(fd);
	}
	return 0;
}

int main(int argc, char **argv)
{
	if (argc >= 2 && !strcmp(argv[1], "worker")) {
		/* worker MODE ID ITERS ARG SHFD */
		if (argc < 7)
			return 2;
		int id = atoi(argv[3]);
		long iters = atol(argv[4]);
		struct shared *sh = map_shared(atoi(argv[6]));
		if (!strncmp(argv[2], "lock:", 5))
			return worker_lock(id, iters, argv[5], sh, atoi(argv[2] + 5));
		if (!strcmp(argv[2], "inherit"))
			return worker_inherit(atoi(argv[5]), sh, id);
		return worker_mmap(id, iters, argv[5], sh, !strcmp(argv[2], "mmap-kill"));
	}
	if (argc < 4) {
		fprintf(stderr, "usage: %s PIN_DIR NPROC ITERS [KILL_ROUNDS]\n", argv[0]);
		return 2;
	}
	int kill_rounds = argc > 4 ? atoi(argv[4]) : 1;
	const char *dir = argv[1];
	int nproc = atoi(argv[2]);
	long iters = atol(argv[3]);
	char self[4096];
	ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
	if (n <= 0 || nproc < 2 || nproc > MAXW)
		return 2;
	self[n] = 0;
	setvbuf(stdout, NULL, _IOLBF, 0);

	int shfd = memfd_create("stress-shared", 0);   /* no CLOEXEC: workers inherit it */
	if (shfd < 0 || ftruncate(shfd, sizeof(struct shared)))
		return 3;
	struct shared *sh = map_shared(shfd);

	if (mkdir(dir, 0700)) {
		printf("mkdir %s: %s\n", dir, strerrorname_np(errno));
		return 1;
	}
	lock_scenario(self, "lock", dir, nproc, iters, shfd, sh, 0, 24);
	mmap_scenario(self, dir, nproc, iters, shfd, sh, 0);
	srand((unsigned)getpid() ^ (unsigned)(now() * 1e6));
	for (int r = 0; r < kill_rounds; r++)
		lock_scenario(self, "kill-lock", dir, nproc, iters, shfd, sh, 1, 24);
	for (int r = 0; r < kill_rounds; r++)
		lock_scenario(self, "kill-lock-4k", dir, nproc, iters / 20, shfd, sh, 1, 4096);
	/* two writers, 64 KiB values: the victim spends about half its time
	 * copying into the map under the lock, where SIGKILL may stop it */
	for (int r = 0; r < 20 * kill_rounds; r++)
		lock_scenario(self, "kill-in-copy", dir, 2, iters / 100, shfd, sh, 1, MAXV);
	mmap_scenario(self, dir, nproc, iters, shfd, sh, 1);
	inherit_scenario(self, shfd, sh);
	if (rmdir(dir))
		printf("rmdir: %s\n", strerrorname_np(errno));
	printf("done\n");
	return 0;
}

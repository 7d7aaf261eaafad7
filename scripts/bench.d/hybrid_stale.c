/* hybrid_stale OBJ ROUNDS N: how late the kernel's map shows what a uprobe
 * counted, as a kernel program or bpftool without the library sees it.
 * Attaches OBJ's on_entry (scripts/bench.d/uprobe_count.bpf.c, a hash map
 * `counts`) to f_stale in this binary, starts a poller (this binary again,
 * exec'd without LD_PRELOAD: its reads are the kernel's, never a fold),
 * then makes ROUNDS rounds of N calls of f_stale here, noting when each
 * round ended; the poller notes when the map's sum reached it. Prints the
 * median and the largest delay, in microseconds (scripts/bench.d/hybrid). */
#define _GNU_SOURCE
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

volatile long stale_sink;

/* endbr64 (built with -fcf-protection=branch) and 9 bytes or more: served
 * in user space in hybrid mode */
__attribute__((noinline)) int f_stale(int x)
{
	stale_sink += x;
	return x * 2 + 1;
}

static uint64_t now_ns(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (uint64_t)t.tv_sec * 1000000000ull + (uint64_t)t.tv_nsec;
}

static int cmp(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

/* poll MAP_ID SHM_FD ROUNDS N */
static int poller(char **argv)
{
	int fd = bpf_map_get_fd_by_id((uint32_t)atoi(argv[2])), rounds = atoi(argv[4]);
	uint64_t n = strtoull(argv[5], NULL, 0), *t = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED,
							     atoi(argv[3]), 0);
	uint64_t deadline = now_ns() + 20000000000ull;

	if (fd < 0 || t == MAP_FAILED)
		return 1;
	__atomic_store_n(&t[0], 1, __ATOMIC_RELEASE);      /* polling */
	for (int r = 1; r <= rounds && now_ns() < deadline;) {
		uint64_t sum = 0, v;
		uint32_t k, *prev = NULL;
		while (!bpf_map_get_next_key(fd, prev, &k)) {
			if (!bpf_map_lookup_elem(fd, &k, &v))
				sum += v;
			prev = &k;
		}
		for (; r <= rounds && sum >= (uint64_t)r * n; r++)
			t[256 + r] = now_ns();
	}
	return 0;
}

int main(int argc, char **argv)
{
	if (argc > 5 && !strcmp(argv[1], "poll"))
		return poller(argv);
	if (argc < 4)
		return 2;
	int rounds = atoi(argv[2]), n = atoi(argv[3]);
	struct bpf_object *obj = bpf_object__open_file(argv[1], NULL);
	if (!obj || bpf_object__load(obj) || rounds < 1 || rounds > 250)
		return 1;
	LIBBPF_OPTS(bpf_uprobe_opts, o, .func_name = "f_stale");
	struct bpf_link *l = bpf_program__attach_uprobe_opts(bpf_object__find_program_by_name(obj, "on_entry"), -1,
							      "/proc/self/exe", 0, &o);
	struct bpf_map_info info = { 0 };
	uint32_t len = sizeof(info);
	int mfd = memfd_create("stale", 0);
	if (!l || mfd < 0 || ftruncate(mfd, 4096) ||
	    bpf_obj_get_info_by_fd(bpf_object__find_map_fd_by_name(obj, "counts"), &info, &len))
		return 1;
	uint64_t *t = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, mfd, 0);
	char id[16], fds[16], rs[16];
	snprintf(id, sizeof(id), "%u", info.id);
	snprintf(fds, sizeof(fds), "%d", mfd);
	snprintf(rs, sizeof(rs), "%d", rounds);
	pid_t c = fork();
	if (c == 0) {
		unsetenv("LD_PRELOAD");
		char *av[] = { argv[0], "poll", id, fds, rs, argv[3], NULL };
		execv("/proc/self/exe", av);
		_exit(127);
	}
	while (!__atomic_load_n(&t[0], __ATOMIC_ACQUIRE))
		usleep(1000);
	volatile int sink = 0;
	for (int r = 1; r <= rounds; r++) {
		for (int i = 0; i < n; i++)
			sink += f_stale(i);
		t[r] = now_ns();
		usleep(30000);
	}
	int st;
	waitpid(c, &st, 0);
	uint64_t d[256];
	int got = 0;
	for (int r = 1; r <= rounds; r++)
		if (t[256 + r])
			d[got++] = t[256 + r] > t[r] ? t[256 + r] - t[r] : 0;
	qsort(d, (size_t)got, sizeof(d[0]), cmp);
	if (got < rounds) {
		printf("seen %d of %d rounds\n", got, rounds);
		return 1;
	}
	printf("median_us %.1f max_us %.1f\n", d[got / 2] / 1000.0, d[got - 1] / 1000.0);
	bpf_link__destroy(l);
	return 0;
}

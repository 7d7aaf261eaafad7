/* Loader of the event-loss tests (test_events.py) and `scripts/bench events`:
 *
 *   events_loader OBJ perf|ringbuf|perf-wait|ringbuf-wait PAGES TARGET PROCS THREADS TOTAL [flush]
 *
 * Attaches events_loader.bpf.c's on_perf or on_ringbuf to TARGET's ev(),
 * runs PROCS processes `TARGET THREADS TOTAL BASE [flush]` at once (their
 * producers race on the same rings) and consumes with libbpf
 * (perf_buffer__poll with a lost callback, PAGES pages per CPU; or
 * ring_buffer__poll on a ring of PAGES pages) until the targets have exited
 * and a poll finds nothing more. Prints
 *   delivered D lost L failed F bad B ns N
 * D records received, L drops the perf buffer reported (PERF_RECORD_LOST),
 * F sends the program saw fail, B records that were not one ev() call's
 * (bad contents, or the same call twice), N ns from the first record of
 * the run to its last (the flush calls left out). The -wait modes poll with
 * no timeout until every call is delivered or counted: a wake-up that never
 * comes hangs them (they give up after 30 s). */
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/wait.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#define REC_MAGIC 0x6576656e74736f6bull
#define MAX_T 256
#define FLUSH_MAX (MAX_T * 1024)   /* a flush call sends i = BASE * CPU_SETSIZE + cpu */

struct rec {
	uint64_t magic;
	int64_t t;
	int64_t i;
	uint64_t pad;
};

static uint64_t delivered, lost, bad, first_ns, last_ns;
static long nthreads, total;   /* threads in all processes; calls per thread at most */
static uint8_t *seen[MAX_T + 1];   /* per thread, and [MAX_T] for the flush calls */

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void record(const void *data, size_t size)
{
	const struct rec *r = data;
	long slot;

	if (size < sizeof(*r) || r->magic != REC_MAGIC || r->t < -1 || r->t >= nthreads || r->i < 0 ||
	    r->i >= (r->t < 0 ? FLUSH_MAX : total)) {
		bad++;
		return;
	}
	slot = r->t < 0 ? MAX_T : r->t;
	if (seen[slot][r->i / 8] & (1u << (r->i % 8))) {
		bad++;
		return;
	}
	seen[slot][r->i / 8] |= (uint8_t)(1u << (r->i % 8));
	delivered++;
	if (r->t >= 0) {
		last_ns = now_ns();
		if (!first_ns)
			first_ns = last_ns;
	}
}

static void on_sample(void *ctx, int cpu, void *data, __u32 size)
{
	record(data, size);
}

static void on_lost(void *ctx, int cpu, __u64 n)
{
	lost += n;
}

static int on_rb(void *ctx, void *data, size_t size)
{
	record(data, size);
	return 0;
}

/* PROCS targets; with go_fd/ready_fd (the -first modes) each says it is
 * up on ready_fd and waits for a byte on go_fd before it calls. */
static void spawn(char **argv, long procs, long threads, int go_fd, int ready_fd)
{
	for (long p = 0; p < procs; p++) {
		char base[32], sync[32];
		snprintf(base, sizeof(base), "%ld", p * threads);
		snprintf(sync, sizeof(sync), "%d,%d", go_fd, ready_fd);
		if (fork() == 0) {
			char *args[] = { argv[4], argv[6], argv[7], base, argv[8], NULL };
			if (go_fd >= 0)
				setenv("EVENTS_SYNC_FDS", sync, 1);
			execv(argv[4], args);
			_exit(127);
		}
	}
}

int main(int argc, char **argv)
{
	if (argc < 8) {
		fprintf(stderr, "usage: events_loader OBJ perf|ringbuf|perf-wait|ringbuf-wait|perf-first|ringbuf-first "
			"PAGES TARGET PROCS THREADS TOTAL [flush]\n");
		return 2;
	}
	int perf = !strncmp(argv[2], "perf", 4), wait_all = strstr(argv[2], "-wait") != NULL;
	int first = strstr(argv[2], "-first") != NULL;
	long pages = atol(argv[3]), procs = atol(argv[5]), threads = atol(argv[6]);
	nthreads = procs * threads;
	total = atol(argv[7]);
	if (procs < 1 || threads < 1 || nthreads > MAX_T || total < 0 || pages < 1)
		return 2;
	for (int t = 0; t <= MAX_T; t++)
		if (!(seen[t] = calloc((size_t)(t == MAX_T ? FLUSH_MAX : total) / 8 + 1, 1)))
			return 1;

	/* -first: the targets run (agents and all) before anything is loaded,
	 * and call once the consumer is set up, as a tool's first event comes
	 * from a process that was there before it: that event is delivered. */
	int go[2] = { -1, -1 };
	if (first) {
		int ready[2];
		char b;
		if (pipe(go) || pipe(ready))
			return 1;
		spawn(argv, procs, threads, go[0], ready[1]);
		close(ready[1]);
		for (long p = 0; p < procs; p++)
			if (read(ready[0], &b, 1) != 1) {
				printf("target did not start\n");
				return 1;
			}
		close(ready[0]);
		wait_all = 1;
	}

	struct bpf_object *obj = bpf_object__open_file(argv[1], NULL);
	if (!obj) {
		printf("open: %s\n", strerror(errno));
		return 1;
	}
	struct bpf_map *rbm = bpf_object__find_map_by_name(obj, "rb");
	if (!perf && bpf_map__set_max_entries(rbm, (uint32_t)(pages * 4096))) {
		printf("ringbuf size: %s\n", strerror(errno));
		return 1;
	}
	if (bpf_object__load(obj)) {
		printf("load: %s\n", strerror(errno));
		return 1;
	}
	struct bpf_program *prog = bpf_object__find_program_by_name(obj, perf ? "on_perf" : "on_ringbuf");
	LIBBPF_OPTS(bpf_uprobe_opts, uo, .func_name = "ev");
	struct bpf_link *link = bpf_program__attach_uprobe_opts(prog, -1, argv[4], 0, &uo);
	if (!link) {
		printf("attach: %s\n", strerror(errno));
		return 1;
	}
	struct perf_buffer *pb = NULL;
	struct ring_buffer *rb = NULL;
	if (perf)
		pb = perf_buffer__new(bpf_map__fd(bpf_object__find_map_by_name(obj, "pb")), (size_t)pages,
				      on_sample, on_lost, NULL, NULL);
	else
		rb = ring_buffer__new(bpf_map__fd(rbm), on_rb, NULL, NULL);
	if (!pb && !rb) {
		printf("consumer: %s\n", strerror(errno));
		return 1;
	}

	if (first) {
		char b[64] = { 0 };
		if (write(go[1], b, (size_t)procs) != procs)
			return 1;
	} else {
		spawn(argv, procs, threads, -1, -1);
	}
	long running = procs;
	int timeout = wait_all ? -1 : 100;
	uint32_t fk = 0;
	int failed_fd = bpf_map__fd(bpf_object__find_map_by_name(obj, "failed"));
	if (wait_all)
		alarm(30);
	for (;;) {
		int n = perf ? perf_buffer__poll(pb, timeout) : ring_buffer__poll(rb, timeout);
		if (n < 0 && n != -EINTR) {
			printf("poll: %s\n", strerror(-n));
			return 1;
		}
		int status;
		pid_t c;
		if (wait_all) {
			uint64_t f = 0;
			bpf_map_lookup_elem(failed_fd, &fk, &f);
			if (delivered + (perf ? lost : f) == (uint64_t)(procs * total))
				break;
		} else if (!running && n == 0) {
			break;   /* the targets are gone and nothing came for 100 ms */
		}
		while (running && (c = waitpid(-1, &status, WNOHANG)) > 0) {
			running--;
			if (!WIFEXITED(status) || WEXITSTATUS(status)) {
				printf("target failed: status %#x\n", status);
				return 1;
			}
		}
	}
	while (running && waitpid(-1, NULL, 0) > 0)
		running--;
	uint64_t failed = 0;
	bpf_map_lookup_elem(failed_fd, &fk, &failed);
	printf("delivered %llu lost %llu failed %llu bad %llu ns %llu\n", (unsigned long long)delivered,
	       (unsigned long long)lost, (unsigned long long)failed, (unsigned long long)bad,
	       (unsigned long long)(last_ns - first_ns));
	perf_buffer__free(pb);
	ring_buffer__free(rb);
	bpf_link__destroy(link);
	bpf_object__close(obj);
	return 0;
}

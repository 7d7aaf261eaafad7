/* uprobe_loader OBJ FUNC entry|return|override TARGET ARGS...: attaches
 * OBJ's program (on_entry, on_return, on_override) to FUNC in TARGET with bpf_program__attach_uprobe_opts, runs
 * TARGET (its output passes through), prints "hits N" (the sum of the
 * counts map) and, when OBJ has a ringbuf `events`, "events N" (what a
 * consumer thread read of it while TARGET ran and after) and how late it
 * read them on average and at most. The same binary
 * runs on the kernel and under bpfshim. */
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static unsigned long long n_events, late_sum, late_max;
static volatile int target_done;

/* An event whose second u64 is the program's bpf_ktime_get_ns(): how late
 * the consumer reads it (CLOCK_MONOTONIC is that clock). */
static int on_event(void *ctx, void *data, size_t n)
{
	struct timespec t;
	uint64_t sent, late;

	n_events++;
	if (n >= 16) {
		memcpy(&sent, (char *)data + 8, 8);
		clock_gettime(CLOCK_MONOTONIC, &t);
		late = (uint64_t)t.tv_sec * 1000000000ull + (uint64_t)t.tv_nsec - sent;
		late_sum += late;
		if (late > late_max)
			late_max = late;
	}
	return 0;
}

static void *consume(void *rb)
{
	while (!target_done)
		ring_buffer__poll(rb, 100);
	return NULL;
}

int main(int argc, char **argv)
{
	if (argc < 5)
		return 2;
	int ret = !strcmp(argv[3], "return");
	struct bpf_object *obj = bpf_object__open_file(argv[1], NULL);
	if (!obj || bpf_object__load(obj)) {
		fprintf(stderr, "load: %s\n", strerror(errno));
		return 1;
	}
	struct bpf_program *prog = bpf_object__find_program_by_name(obj, ret ? "on_return"
								  : !strcmp(argv[3], "override") ? "on_override"
								  : "on_entry");
	LIBBPF_OPTS(bpf_uprobe_opts, o, .func_name = argv[2], .retprobe = ret);
	struct bpf_link *l = bpf_program__attach_uprobe_opts(prog, -1, argv[4], 0, &o);
	if (!l) {
		fprintf(stderr, "attach: %s\n", strerror(errno));
		return 1;
	}
	int efd = bpf_object__find_map_fd_by_name(obj, "events");
	struct ring_buffer *rb = efd >= 0 ? ring_buffer__new(efd, on_event, NULL, NULL) : NULL;
	pthread_t consumer;
	if (rb && pthread_create(&consumer, NULL, consume, rb))
		return 1;
	fflush(stdout);
	pid_t c = fork();
	if (c == 0) {
		execv(argv[4], argv + 4);
		_exit(127);
	}
	int st;
	waitpid(c, &st, 0);
	if (rb) {
		target_done = 1;
		pthread_join(consumer, NULL);
		while (ring_buffer__poll(rb, 0) > 0)
			;
		printf("events %llu late_us_mean %.1f late_us_max %.1f\n", n_events,
		       n_events ? late_sum / 1e3 / n_events : 0.0, late_max / 1e3);
	}
	int fd = bpf_object__find_map_fd_by_name(obj, "counts");
	unsigned long long sum = 0, v;
	__u32 k, *prev = NULL;
	while (!bpf_map_get_next_key(fd, prev, &k)) {
		if (!bpf_map_lookup_elem(fd, &k, &v))
			sum += v;
		prev = &k;
	}
	printf("hits %llu\n", sum);
	bpf_link__destroy(l);
	return WIFEXITED(st) ? WEXITSTATUS(st) : 1;
}

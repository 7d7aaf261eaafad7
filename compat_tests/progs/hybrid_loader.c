/* hybrid_loader OBJ TARGET ARGS...: loads hybrid_loader.bpf.c, attaches its
 * tracepoint program and its uprobe (work() in TARGET), starts TARGET stopped
 * (so the tracepoint's filter knows its pid), consumes the ringbuf until
 * TARGET exits, then prints the events by kind and the counts map, sorted:
 * no pids, ids or times, so the kernel's run and a hybrid run compare. */
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include "hybrid_attach.h"

struct event {
	uint32_t kind, seen_start;
	int64_t x;
};

static uint64_t events[2], seen, xsum;

static int on_event(void *ctx, void *data, size_t n)
{
	const struct event *e = data;

	if (n < sizeof(*e) || e->kind > 1)
		return -EINVAL;
	events[e->kind]++;
	seen += e->seen_start;
	xsum += (uint64_t)e->x;
	return 0;
}

int main(int argc, char **argv)
{
	if (argc < 3)
		return 2;
	pid_t c = start_stopped(argv + 2, 0);
	uint32_t tgid = (uint32_t)c;
	struct bpf_link *tp, *up;
	struct bpf_object *obj = load_and_attach(argv[1], &tgid, sizeof(tgid), argv[2], &tp, &up, NULL);
	if (!obj)
		return 1;
	struct ring_buffer *rb = ring_buffer__new(bpf_object__find_map_fd_by_name(obj, "events"), on_event, NULL, NULL);
	if (!rb)
		return 1;
	kill(c, SIGCONT);
	int st;
	while (waitpid(c, &st, WNOHANG) == 0)
		ring_buffer__poll(rb, 50);
	ring_buffer__consume(rb);
	printf("events tracepoint %llu uprobe %llu seen_start %llu x_sum %llu\n", (unsigned long long)events[0],
	       (unsigned long long)events[1], (unsigned long long)seen, (unsigned long long)xsum);
	int fd = bpf_object__find_map_fd_by_name(obj, "counts");
	for (uint32_t k = 0; k < 4; k++) {
		uint64_t v = 0;
		if (!bpf_map_lookup_elem(fd, &k, &v))
			printf("count %u %llu\n", k, (unsigned long long)v);
	}
	ring_buffer__free(rb);
	bpf_link__destroy(up);
	bpf_link__destroy(tp);
	bpf_object__close(obj);
	return WIFEXITED(st) ? WEXITSTATUS(st) : 1;
}

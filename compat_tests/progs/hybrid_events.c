/* hybrid_events OBJ TARGET N_LIB N_PLAIN [drop]: loads hybrid_events.bpf.c,
 * starts TARGET twice, stopped (the programs' filters know their pids): with
 * the environment it was given (the library, in a hybrid run) making N_LIB
 * calls (as uid 65534 with `drop`: TARGET's own 5th argument), and without
 * LD_PRELOAD making N_PLAIN; attaches the tracepoint and
 * the uprobe (work() in TARGET), consumes the ringbuf until both exited
 * and a last poll found nothing more, then prints the events by kind and
 * process, whether each process's uprobe events came in the order of its
 * calls, and the counts map: no pids, ids or times, so the kernel's run
 * and a hybrid run compare. */
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include "hybrid_attach.h"

struct event {
	uint32_t kind, who;
	int64_t x;
};

static uint64_t events[2][2], inorder[2] = { 1, 1 }, next_x[2], xsum;

static int on_event(void *ctx, void *data, size_t n)
{
	const struct event *e = data;

	if (n != sizeof(*e) || e->kind > 1 || e->who > 1)
		return -EINVAL;
	events[e->kind][e->who]++;
	if (e->kind == 1) {
		if ((uint64_t)e->x != next_x[e->who])
			inorder[e->who] = 0;
		next_x[e->who] = (uint64_t)e->x + 1;
		xsum += (uint64_t)e->x;
	}
	return 0;
}

static pid_t start(char *target, char *n, int plain, char *drop)
{
	char *argv[] = { target, n, "0", "0", drop, NULL };

	return start_stopped(argv, plain);
}

int main(int argc, char **argv)
{
	if (argc < 5)
		return 2;
	pid_t pid[2] = { start(argv[2], argv[3], 0, argc > 5 ? argv[5] : NULL), start(argv[2], argv[4], 1, NULL) };
	uint32_t pids[2] = { (uint32_t)pid[0], (uint32_t)pid[1] };
	struct bpf_link *tp, *up;
	struct bpf_object *obj = load_and_attach(argv[1], pids, sizeof(pids), argv[2], &tp, &up, NULL);
	if (!obj)
		return 1;
	struct ring_buffer *rb = ring_buffer__new(bpf_object__find_map_fd_by_name(obj, "hyev_events"), on_event,
						  NULL, NULL);
	if (!rb)
		return 1;
	kill(pid[0], SIGCONT);
	kill(pid[1], SIGCONT);
	int st, ok = 1, left = 2;
	while (left) {
		ring_buffer__poll(rb, 50);
		pid_t w = waitpid(-1, &st, WNOHANG);
		if (w > 0) {
			left--;
			ok &= WIFEXITED(st) && !WEXITSTATUS(st);
		}
	}
	while (ring_buffer__poll(rb, 0) > 0)
		;
	printf("tracepoint lib %llu plain %llu uprobe lib %llu plain %llu in_order %llu %llu x_sum %llu\n",
	       (unsigned long long)events[0][0], (unsigned long long)events[0][1], (unsigned long long)events[1][0],
	       (unsigned long long)events[1][1], (unsigned long long)inorder[0], (unsigned long long)inorder[1],
	       (unsigned long long)xsum);
	int fd = bpf_object__find_map_fd_by_name(obj, "hyev_counts");
	printf("count");
	for (uint32_t k = 0; k < 4; k++) {
		uint64_t v = 0;
		if (bpf_map_lookup_elem(fd, &k, &v) && errno != ENOENT)
			return 1;
		printf(" %llu", (unsigned long long)v);
	}
	printf("\n");
	ring_buffer__free(rb);
	bpf_link__destroy(up);
	bpf_link__destroy(tp);
	bpf_object__close(obj);
	return ok ? 0 : 1;
}

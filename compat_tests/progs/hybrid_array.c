/* hybrid_array OBJ TARGET N_LIB N_PLAIN SLEEP_MS [drop|wait]: loads
 * hybrid_array.bpf.c, starts TARGET twice, stopped (the programs' filters
 * know their pids): with the environment it was given (the library, in a
 * hybrid run) making N_LIB calls (as uid 65534 with `drop`: TARGET's own
 * 4th argument), and without LD_PRELOAD making N_PLAIN; each sleeps
 * SLEEP_MS after its calls; with `wait`, the uprobe is attached (and they
 * start) only after a line on stdin. Prints "map_id ID" (for bpftool
 * during the run), attaches the tracepoint and the uprobe (work() in
 * TARGET), lets both run, and after they exit prints the counts. */
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

static int wait_line;

/* Prints "map_id ID" (for bpftool during the run); with `wait`, then waits
 * for a line on stdin (the test's go) before the uprobe is attached. The
 * hash map's keys are made first, so that two processes' first counts do
 * not race to insert one (one of them would be lost, as the kernel has it). */
static int map_id_then_wait(struct bpf_object *obj)
{
	struct bpf_map_info info = { 0 };
	uint32_t len = sizeof(info);
	uint64_t zero = 0;
	char line[8];

	for (uint32_t k = 0; k < 4; k++)
		if (bpf_map_update_elem(bpf_object__find_map_fd_by_name(obj, "hyhash_counts"), &k, &zero, BPF_ANY))
			return 1;

	if (bpf_obj_get_info_by_fd(bpf_object__find_map_fd_by_name(obj, "hyarr_counts"), &info, &len))
		return 1;
	printf("map_id %u\n", info.id);
	fflush(stdout);
	return wait_line && !fgets(line, sizeof(line), stdin);
}

static pid_t start(char *target, char *n, char *sleep_ms, int plain, char *drop)
{
	char *argv[] = { target, n, sleep_ms, "0", drop, NULL };

	return start_stopped(argv, plain);
}

int main(int argc, char **argv)
{
	if (argc < 6)
		return 2;
	wait_line = argc > 6 && !strcmp(argv[6], "wait");
	pid_t lib = start(argv[2], argv[3], argv[5], 0, argc > 6 && !wait_line ? argv[6] : NULL);
	pid_t plain = start(argv[2], argv[4], argv[5], 1, NULL);
	uint32_t pids[2] = { (uint32_t)lib, (uint32_t)plain };
	struct bpf_link *tp, *up;
	struct bpf_object *obj = load_and_attach(argv[1], pids, sizeof(pids), argv[2], &tp, &up, map_id_then_wait);
	if (!obj)
		return 1;
	int fd = bpf_object__find_map_fd_by_name(obj, "hyarr_counts");
	int st, ok = 1;
	kill(lib, SIGCONT);
	kill(plain, SIGCONT);
	for (int i = 0; i < 2; i++)
		if (wait(&st) < 0 || !WIFEXITED(st) || WEXITSTATUS(st))
			ok = 0;
	uint64_t v[4];
	for (uint32_t k = 0; k < 4; k++)
		if (bpf_map_lookup_elem(fd, &k, &v[k]))
			return 1;
	printf("lib %llu plain %llu tracepoint %llu other %llu\n", (unsigned long long)v[0], (unsigned long long)v[1],
	       (unsigned long long)v[2], (unsigned long long)v[3]);
	int hfd = bpf_object__find_map_fd_by_name(obj, "hyhash_counts");
	printf("hash");
	for (uint32_t k = 0; k < 4; k++) {
		uint64_t h = 0;
		if (bpf_map_lookup_elem(hfd, &k, &h) && errno != ENOENT)
			return 1;
		printf(" %llu", (unsigned long long)h);
	}
	printf("\n");
	bpf_link__destroy(up);
	bpf_link__destroy(tp);
	bpf_object__close(obj);
	return ok ? 0 : 1;
}

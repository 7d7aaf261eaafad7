/* A libbpf USDT loader: bpf_program__attach_usdt() of progs/usdt_loader.bpf.c
 * on the app:tick probe of the USDT victim (compat_tests/victims.py), in the
 * child it starts (pid filter) or in every process (-a); prints the counts
 * its program gathered from the probe's arguments. */
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <sys/wait.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>

int main(int argc, char **argv)
{
	int all = argc > 3 && !strcmp(argv[3], "-a"), fds[2], st;
	struct bpf_object *obj;
	struct bpf_program *prog;
	struct bpf_link *link;
	pid_t pid;
	char c;

	if (argc < 3) {
		fprintf(stderr, "usage: %s OBJ VICTIM [-a]\n", argv[0]);
		return 2;
	}
	obj = bpf_object__open_file(argv[1], NULL);
	if (!obj || bpf_object__load(obj)) {
		printf("load failed\n");
		return 1;
	}
	prog = bpf_object__find_program_by_name(obj, "on_tick");
	if (pipe(fds))
		return 1;
	pid = fork();
	if (!pid) {       /* runs the victim once the probe is attached */
		close(fds[1]);
		if (read(fds[0], &c, 1) < 0)
			_exit(126);
		execl(argv[2], argv[2], (char *)NULL);
		_exit(127);
	}
	link = bpf_program__attach_usdt(prog, all ? -1 : pid, argv[2], "app", "tick", NULL);
	if (!link) {
		printf("attach_usdt failed\n");
		kill(pid, SIGKILL);
		return 1;
	}
	close(fds[1]);
	waitpid(pid, &st, 0);
	int map = bpf_map__fd(bpf_object__find_map_by_name(obj, "out"));
	for (__u32 k = 0; k < 3; k++) {
		__u64 v = 0;
		bpf_map_lookup_elem(map, &k, &v);
		printf("%u: %llu\n", k, (unsigned long long)v);
	}
	bpf_link__destroy(link);
	bpf_object__close(obj);
	printf("done\n");
	return 0;
}

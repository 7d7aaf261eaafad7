// SPDX-License-Identifier: GPL-2.0
/* Loader for current_task.bpf.c (compat_tests/test_current_task.py):
 *   current_task OBJ VICTIM
 * attaches on_ids to VICTIM's ids(), runs VICTIM, prints each record. */
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <sys/wait.h>
#include <bpf/libbpf.h>
#include <bpf/bpf.h>

#include "current_task.h"

int main(int argc, char **argv)
{
	struct bpf_object *obj;
	struct bpf_program *prog;
	struct bpf_link *link;
	int status, err;

	if (argc != 3)
		return 2;
	libbpf_set_strict_mode(LIBBPF_STRICT_ALL);
	obj = bpf_object__open_file(argv[1], NULL);
	if (!obj || (err = bpf_object__load(obj))) {
		printf("load failed\n");
		return 1;
	}
	prog = bpf_object__find_program_by_name(obj, "on_ids");
	LIBBPF_OPTS(bpf_uprobe_opts, uo, .func_name = "ids");
	link = bpf_program__attach_uprobe_opts(prog, -1, argv[2], 0, &uo);
	if (!link) {
		printf("attach failed\n");
		return 1;
	}
	pid_t c = fork();
	if (c == 0) {
		execl(argv[2], argv[2], (char *)NULL);
		_exit(127);
	}
	waitpid(c, &status, 0);
	printf("victim exit %d\n", WEXITSTATUS(status));
	int fd = bpf_object__find_map_fd_by_name(obj, "recs");
	for (unsigned i = 0; i < 16; i++) {
		struct rec r;
		if (bpf_map_lookup_elem(fd, &i, &r) || !r.comm[0])
			continue;
		printf("%s leader:%s parent:%s flags:%x btf tgid=%u pid=%u ppid=%u self_leader:%u "
		       "core tgid=%u pid=%u ppid=%u uid=%u gid=%u start=%u leader=%u same_task=%u\n",
		       r.comm, r.leader_comm, r.parent_comm, r.flags, r.btf_tgid, r.btf_pid, r.btf_ppid,
		       r.btf_same_leader, r.core_tgid, r.core_pid, r.core_ppid, r.core_uid, r.core_gid,
		       r.core_start, r.core_leader_pid, r.same_task);
	}
	bpf_link__destroy(link);
	bpf_object__close(obj);
	return 0;
}

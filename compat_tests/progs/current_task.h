/* SPDX-License-Identifier: GPL-2.0 */
/* One record of current_task.bpf.c, read back by current_task.c: the
 * comparisons are 1 when the task's field equals what the victim passed. */
struct rec {
	char comm[16];
	char leader_comm[16];
	char parent_comm[16];
	unsigned int btf_tgid, btf_pid, btf_ppid, btf_same_leader;
	unsigned int core_tgid, core_pid, core_ppid, core_uid, core_gid, core_start, core_leader_pid;
	unsigned int same_task, flags;
};

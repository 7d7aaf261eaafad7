/* SPDX-License-Identifier: MIT */
/*
 * The running kernel's layout of the structures bpf_get_current_task()
 * points to (agent/helpers/current_task.c builds them in user memory).
 *
 * Loaders resolve a program's field offsets (CO-RE relocations, bpftrace's
 * `curtask->x`) from the kernel's BTF, so the synthetic structures must put
 * each field where the kernel has it. The lists below are the one place that
 * names them, by the kernel's struct and member names. The server parses this
 * header (syscall_server/cmd_btf.py), looks each name up in
 * /sys/kernel/btf/vmlinux (members of anonymous structs and unions
 * included) and writes $RUNTIME_DIR/task_layout: a `struct task_layout`,
 * arrays in the order of the lists. An agent reads the file once.
 *
 * A namespace's inum is its `ns` member (a struct ns_common) plus
 * ns_common's `inum`. A field the kernel lacks has off -1, a struct it
 * lacks size 0: the agent leaves those out.
 */
#ifndef BPFSHIM_TASK_LAYOUT_H
#define BPFSHIM_TASK_LAYOUT_H

#include <stdint.h>

#define TASK_LAYOUT_STRUCTS(S)                                                        \
	S(task_struct) S(cred) S(nsproxy) S(mm_struct) S(ns_common)                 \
	S(uts_namespace) S(ipc_namespace) S(mnt_namespace) S(pid_namespace) S(net)  \
	S(cgroup_namespace) S(time_namespace)

#define TASK_LAYOUT_FIELDS(F)                                                         \
	F(task_struct, pid) F(task_struct, tgid) F(task_struct, comm)               \
	F(task_struct, flags) F(task_struct, real_parent) F(task_struct, parent)    \
	F(task_struct, group_leader) F(task_struct, start_time)                     \
	F(task_struct, start_boottime) F(task_struct, real_cred)                    \
	F(task_struct, cred) F(task_struct, nsproxy) F(task_struct, mm)             \
	F(task_struct, active_mm) F(task_struct, exit_code)                         \
	F(cred, uid) F(cred, gid) F(cred, suid) F(cred, sgid) F(cred, euid)         \
	F(cred, egid) F(cred, fsuid) F(cred, fsgid)                                 \
	F(nsproxy, uts_ns) F(nsproxy, ipc_ns) F(nsproxy, mnt_ns)                    \
	F(nsproxy, pid_ns_for_children) F(nsproxy, net_ns) F(nsproxy, cgroup_ns)    \
	F(nsproxy, time_ns) F(nsproxy, time_ns_for_children)                        \
	F(mm_struct, start_code) F(mm_struct, end_code) F(mm_struct, start_data)    \
	F(mm_struct, end_data) F(mm_struct, start_brk) F(mm_struct, start_stack)    \
	F(mm_struct, arg_start) F(mm_struct, arg_end) F(mm_struct, env_start)       \
	F(mm_struct, env_end)                                                       \
	F(ns_common, inum)                                                          \
	F(uts_namespace, ns) F(ipc_namespace, ns) F(mnt_namespace, ns)              \
	F(pid_namespace, ns) F(net, ns) F(cgroup_namespace, ns)                     \
	F(time_namespace, ns)

#define TASK_LAYOUT_S_ENUM(s) TLS_##s,
#define TASK_LAYOUT_F_ENUM(s, m) TLF_##s##_##m,
enum { TASK_LAYOUT_STRUCTS(TASK_LAYOUT_S_ENUM) TLS_NR };
enum { TASK_LAYOUT_FIELDS(TASK_LAYOUT_F_ENUM) TLF_NR };
#undef TASK_LAYOUT_S_ENUM
#undef TASK_LAYOUT_F_ENUM

enum {
	TASK_LAYOUT_MAGIC = 0x4b534154,   /* "TASK" */
	TASK_LAYOUT_VERSION = 1,
};

struct task_layout_field {
	int32_t off;     /* byte offset in its struct, -1: not in this kernel */
	uint32_t size;   /* the member's size in bytes */
};

/* $RUNTIME_DIR/task_layout, little endian, written once by the server */
struct task_layout {
	uint32_t magic;
	uint32_t version;
	uint32_t nstructs;   /* TLS_NR */
	uint32_t nfields;    /* TLF_NR */
	uint32_t struct_size[TLS_NR];
	struct task_layout_field field[TLF_NR];
};

#endif

// SPDX-License-Identifier: GPL-2.0
/* compat_tests/test_current_task.py: the current task read the ways libbpf
 * programs read it, on a uprobe of the victim's ids(ppid, tgid, tid, uid,
 * gid, start_ticks): bpf_get_current_task_btf() with direct loads, and
 * bpf_get_current_task() with CO-RE reads (BPF_CORE_READ*, relocated by
 * libbpf against the kernel's BTF). Built against vmlinux.h of this kernel. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>

#include "current_task.h"

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 16);
	__type(key, __u32);
	__type(value, struct rec);
} recs SEC(".maps");

__u32 nrecs;

SEC("uprobe")
int on_ids(struct pt_regs *ctx)
{
	long ppid = PT_REGS_PARM1(ctx), tgid = PT_REGS_PARM2(ctx), tid = PT_REGS_PARM3(ctx);
	long uid = PT_REGS_PARM4(ctx), gid = PT_REGS_PARM5(ctx), start = ctx->r9;
	struct task_struct *t = bpf_get_current_task_btf();
	struct task_struct *c = (struct task_struct *)bpf_get_current_task();
	__u32 i = __sync_fetch_and_add(&nrecs, 1);
	struct rec *r = bpf_map_lookup_elem(&recs, &i);

	if (!r)
		return 0;
	/* direct loads through the BTF pointer */
	r->btf_tgid = t->tgid == tgid;
	r->btf_pid = t->pid == tid;
	r->btf_ppid = t->real_parent->tgid == ppid;
	r->btf_same_leader = t->group_leader == t;
	/* CO-RE reads through the untyped one */
	r->core_tgid = BPF_CORE_READ(c, tgid) == tgid;
	r->core_pid = BPF_CORE_READ(c, pid) == tid;
	r->core_ppid = BPF_CORE_READ(c, real_parent, tgid) == ppid;
	r->core_uid = BPF_CORE_READ(c, real_cred, uid.val) == uid;
	r->core_gid = BPF_CORE_READ(c, cred, gid.val) == gid;
	r->core_start = BPF_CORE_READ(c, start_boottime) / 10000000 == start;
	r->core_leader_pid = BPF_CORE_READ(c, group_leader, pid) == tgid;
	r->same_task = (void *)t == (void *)c;
	r->flags = BPF_CORE_READ(c, flags);
	bpf_probe_read_kernel_str(r->comm, sizeof(r->comm), t->comm);
	BPF_CORE_READ_STR_INTO(&r->leader_comm, c, group_leader, comm);
	BPF_CORE_READ_STR_INTO(&r->parent_comm, c, real_parent, comm);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";

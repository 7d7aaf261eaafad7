/* SPDX-License-Identifier: MIT */
/*
 * Syscall tracepoints in user space: syscalls:sys_enter_* / sys_exit_* and
 * raw_syscalls:sys_enter / sys_exit, run in every process of the user that
 * has the agent, as the kernel runs them in every task; and the events
 * found on the same path (events.c: sched_process_exit at exit/exit_group,
 * sched_process_fork when a clone returns a child, sched_process_exec in a
 * new image, signal_generate for the signals syscalls send).
 *
 * The follower applies the attach table's syscall slots here and publishes
 * what is attached as one set (syscall_tp_commit); dispatch.c catches the
 * syscalls the set names and calls the hooks below around each, which build
 * the record the kernel gives a BPF program (perf_call_bpf_enter/exit: the
 * pt_regs pointer in the first 8 bytes, the syscall number, the six
 * arguments or the return value) and run the enter and exit programs. No
 * tracepoint attached: nothing is caught, no cost.
 */
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include "bpf_rt.h"
#include "common.h"
#include "internal.h"
#include "syscall_tp.h"
#include "helpers/helpers.h"

/* ---- what is attached here ---- */

struct tp_probe {
	const struct bpf_prog_rt *prog;
	uint64_t seq, cookie;
	uint32_t nr;               /* syscalls:*: the syscall */
	uint8_t kind, raw;         /* enum attach_kind */
};

/* What the handler reads: published whole, never changed after (a thread
 * may still be reading an old one, so old ones are not freed). */
struct tp_set {
	uint32_t n;
	uint8_t enter[NR_MAX / 8], exit[NR_MAX / 8];   /* some probe wants this nr */
	uint8_t sched_exit, sched_fork, sched_exec;    /* a probe of that kind */
	uint8_t signal_generate;
	struct tp_probe *p[];
};

static struct tp_probe *tp_applied[ATTACH_TABLE_SLOTS];   /* the follower's */
static int tp_changed;
static struct tp_set *cur_set;

void syscall_tp_slot(unsigned i, const struct attach_slot *s, int want)
{
	struct tp_probe *p = tp_applied[i];

	if (p && (!want || p->seq != s->seq)) {
		tp_applied[i] = NULL;
		tp_changed = 1;
		int used = 0;
		for (unsigned k = 0; k < ATTACH_TABLE_SLOTS; k++)
			used |= tp_applied[k] && tp_applied[k]->prog == p->prog;
		if (!used) {
			bpf_rt_prog_detached(p->prog);   /* a run in progress stops */
			rt_prog_release(p->prog->id);
		}
		/* p stays allocated: a thread may still be running it */
	}
	if (want && !tp_applied[i]) {
		const struct bpf_prog_rt *prog = rt_prog_by_id(s->prog_id);
		if (!prog || !(p = calloc(1, sizeof(*p))))
			return;
		p->prog = prog;
		p->seq = s->seq;
		p->cookie = s->cookie;
		p->nr = (uint32_t)s->syscall_nr;
		p->kind = (enum attach_kind)s->kind;
		p->raw = !!(s->flags & ATTACH_F_RAW_SYSCALLS);
		tp_applied[i] = p;
		tp_changed = 1;
	}
}

/* Syscalls `nr[0..n)` trap for this set. */
static void want_nrs(uint8_t *bits, const int *nr, unsigned n)
{
	for (unsigned k = 0; k < n; k++)
		if (nr[k] >= 0 && nr[k] < NR_MAX)
			bits[nr[k] / 8] |= 1 << (nr[k] % 8);
}

void syscall_tp_commit(void)
{
	unsigned n = 0;
	struct tp_set *set = NULL;

	if (!tp_changed)
		return;
	tp_changed = 0;
	for (unsigned i = 0; i < ATTACH_TABLE_SLOTS; i++)
		n += !!tp_applied[i];
	if (n && (set = calloc(1, sizeof(*set) + n * sizeof(set->p[0])))) {
		for (unsigned i = 0; i < ATTACH_TABLE_SLOTS; i++) {
			struct tp_probe *p = tp_applied[i];
			if (!p)
				continue;
			set->p[set->n++] = p;
			uint8_t *bits = p->kind == ATTACH_KIND_SYS_EXIT ? set->exit : set->enter;
			static const int exits[] = { SYS_exit, SYS_exit_group };
			static const int forks[] = { SYS_clone, SYS_clone3, SYS_fork, SYS_vfork };
			static const int sends[] = { SYS_kill, SYS_tkill, SYS_tgkill, SYS_rt_sigqueueinfo,
						     SYS_rt_tgsigqueueinfo };
			int nr = (int)p->nr;
			if (p->kind == ATTACH_KIND_SCHED_PROCESS_EXIT) {
				set->sched_exit = 1;
				want_nrs(set->enter, exits, BPFSHIM_ARRAY_SIZE(exits));
			} else if (p->kind == ATTACH_KIND_SCHED_PROCESS_FORK) {
				set->sched_fork = 1;
				want_nrs(set->exit, forks, BPFSHIM_ARRAY_SIZE(forks));
			} else if (p->kind == ATTACH_KIND_SCHED_PROCESS_EXEC) {
				set->sched_exec = 1;
			} else if (p->kind == ATTACH_KIND_SIGNAL_GENERATE) {
				set->signal_generate = 1;
				want_nrs(set->enter, sends, BPFSHIM_ARRAY_SIZE(sends));
				want_nrs(set->enter, exits, BPFSHIM_ARRAY_SIZE(exits));   /* the SIGCHLD a dying process sends its parent */
			} else if (p->raw) {
				memset(bits, 0xff, NR_MAX / 8);
			} else {
				want_nrs(bits, &nr, 1);
			}
		}
	}
	__atomic_store_n(&cur_set, set, __ATOMIC_RELEASE);
	dispatch_want(set != NULL, set ? set->enter : NULL, set ? set->exit : NULL);
}

/* ---- around a syscall ---- */

/* With `ovr`, what the programs asked of bpf_override_return, read while
 * in_probe still keeps a signal handler's probes from running (they would
 * clear or set it in between). */
static void run_probes_ovr(const struct tp_set *set, enum attach_kind kind, long nr, void *rec,
			   struct bpf_rt_override *ovr)
{
	uint64_t r0;
	int was = in_probe;

	in_probe = 1;
	bpf_rt_override.set = 0;
	for (uint32_t i = 0; i < set->n; i++) {
		const struct tp_probe *p = set->p[i];
		int per_nr = kind == ATTACH_KIND_SYS_ENTER || kind == ATTACH_KIND_SYS_EXIT;

		if (p->kind != kind || (per_nr && !p->raw && p->nr != (uint64_t)nr))
			continue;
		bpf_prog_run_probe(p->prog, rec, p->cookie, 0, &r0);
	}
	if (ovr)
		*ovr = bpf_rt_override;
	in_probe = was;
}

void tp_run(const struct tp_set *set, enum attach_kind kind, long nr, void *rec)
{
	run_probes_ovr(set, kind, nr, rec, NULL);
}

/* The enter or exit programs of syscall nr; 1 when one of them called
 * bpf_override_return, *ret = the last override's rc. From an enter
 * program the syscall is not made and returns rc, and its exit programs
 * see that, as the kernel's sys_exit after an error injection into the
 * syscall function; from an exit program rc replaces the result (as a
 * uretprobe's override). */
static int programs_override(const struct tp_set *set, enum attach_kind kind, long nr, void *rec, long *ret)
{
	struct bpf_rt_override o;

	run_probes_ovr(set, kind, nr, rec, &o);
	if (o.set)
		*ret = (long)o.rc;
	return o.set;
}

static int wants(const uint8_t *bits, long nr)
{
	return nr >= 0 && nr < NR_MAX && (bits[nr / 8] >> (nr % 8) & 1);
}

int sys_trace_wants_exit(long nr)
{
	const struct tp_set *set = __atomic_load_n(&cur_set, __ATOMIC_ACQUIRE);

	return set && wants(set->exit, nr);
}

void sys_trace_child(long nr, uint64_t ip)
{
	const struct tp_set *set = __atomic_load_n(&cur_set, __ATOMIC_ACQUIRE);

	if (set && wants(set->exit, nr)) {
		struct hook_pt_regs regs = { .ip = ip, .cx = ip, .orig_ax = nr, .cs = 0x33, .ss = 0x2b };
		struct tp_record rec = { (uint64_t)(uintptr_t)&regs, nr, { 0 } };
		tp_run(set, ATTACH_KIND_SYS_EXIT, nr, &rec);
	}
}

void syscall_tp_exec_exit(void)
{
	const char *v = getenv("BPFSHIM_SYS_EXIT_EXECVE");
	long nr = v ? atol(v) : SYS_execve;
	const struct tp_set *set = __atomic_load_n(&cur_set, __ATOMIC_ACQUIRE);

	if (v)
		unsetenv("BPFSHIM_SYS_EXIT_EXECVE");
	if (set && set->sched_exec) {
		SUD_INTERNAL_BEGIN();
		sched_process_exec(set, nr);
		SUD_INTERNAL_END();
	}
	if (set && wants(set->exit, nr)) {
		struct hook_pt_regs regs = { .orig_ax = nr, .cs = 0x33, .ss = 0x2b };
		struct tp_record rec = { (uint64_t)(uintptr_t)&regs, nr, { 0 } };
		SUD_INTERNAL_BEGIN();
		tp_run(set, ATTACH_KIND_SYS_EXIT, nr, &rec);
		SUD_INTERNAL_END();
	}
}

int sys_trace_enter(struct sys_trace *t, struct hook_pt_regs *regs, const long *a, long *ret)
{
	long nr = (long)regs->orig_ax;
	const struct tp_set *set = __atomic_load_n(&cur_set, __ATOMIC_ACQUIRE);

	t->set = set;
	/* a syscall of bpfshim's own work (a program's helper, the runtime) is
	 * not one the kernel would trace */
	t->fire = set && !in_probe;
	t->overridden = t->gen = 0;
	if (!t->fire)
		return 0;
	if (wants(set->enter, nr) || wants(set->exit, nr)) {
		t->rec.regs = (uint64_t)(uintptr_t)regs;
		t->rec.nr = nr;
		if (wants(set->enter, nr)) {
			memcpy(t->rec.args, a, sizeof(t->rec.args));
			t->overridden = programs_override(set, ATTACH_KIND_SYS_ENTER, nr, &t->rec, ret);
		}
		if (!t->overridden && (set->sched_exit || set->signal_generate) && (nr == SYS_exit || nr == SYS_exit_group)) {
			int group_dead = group_dies(nr);
			if (set->sched_exit)
				sched_process_exit(set, nr, (int)a[0], group_dead, regs);
			if (set->signal_generate && group_dead)
				sigchld_at_exit(set, regs);
		}
	}
	t->gen = !t->overridden && set->signal_generate && signal_prepare(nr, a, &t->sg);
	t->sg.rec.regs = (uint64_t)(uintptr_t)regs;
	return t->overridden;
}

long sys_trace_exit(struct sys_trace *t, struct hook_pt_regs *regs, long ret)
{
	long nr = (long)regs->orig_ax;
	const struct tp_set *set = t->set;

	if (t->gen && ret == 0)
		tp_run(set, ATTACH_KIND_SIGNAL_GENERATE, nr, &t->sg.rec);
	if (t->fire && !t->overridden && set->sched_fork && ret > 0 &&
	    (nr == SYS_clone || nr == SYS_clone3 || nr == SYS_fork || nr == SYS_vfork))
		sched_process_fork(set, ret, regs);
	regs->ax = (uint64_t)ret;
	if (t->fire && wants(set->exit, nr)) {
		t->rec.regs = (uint64_t)(uintptr_t)regs;
		t->rec.nr = nr;
		memset(t->rec.args, 0, sizeof(t->rec.args));
		t->rec.args[0] = ret;
		if (programs_override(set, ATTACH_KIND_SYS_EXIT, nr, &t->rec, &ret))
			regs->ax = (uint64_t)ret;      /* what a rewritten site returns */
	}
	return ret;
}

/* SPDX-License-Identifier: MIT */
/*
 * Uprobes in this process: a thread follows the attach table
 * (attach_table.h) and keeps the hooks of this process in step with it —
 * a probe attached after the process started is applied as soon as the
 * server bumps the table, a detach removes the patch. Each hook runs its
 * program with the registers as the kernel's struct pt_regs.
 *
 * Only in the preload library (a server has no probes).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include "bpf_rt.h"
#include "attach_table.h"
#include "elf_probe.h"
#include "attach_ack.h"
#include "hook/hook.h"
#include "syscall/syscall_tp.h"
#include "syscall/syscall_site.h"
#include "rt_thread.h"
#include "run_cpu.h"
#include "rawsys.h"
#include "helpers/helpers.h"
#include "start.h"
#include <limits.h>
#include <linux/futex.h>

void shm_futex_wait(uint32_t *addr, uint32_t val, int timeout_ms);
void shm_futex_wake(uint32_t *addr);

struct probe {
	const struct bpf_prog_rt *prog;
	uint64_t cookie;
	uint64_t func_ip;
	uint64_t seq;
	struct hook *hook;
	uint64_t misses;          /* hits while a program ran on this thread */
	uint64_t dev, ino, offset;  /* the probed site */
	/* The USDT semaphore (ref_ctr_offset) this site's count is held by,
	 * or NULL: as the kernel, each probed site adds 1 once per process,
	 * however many probes share it (agent/attach_table.h). */
	uint16_t *ref_ctr;
	/* what bpf_override_return does here: skip the function (an entry),
	 * replace its return value (a uretprobe), nothing (a site inside a
	 * function, where no `ret` would go back to the caller) */
	enum { OVERRIDE_NONE, OVERRIDE_SKIP, OVERRIDE_RETVAL } override;
	/* A hybrid loader's twin (ATTACH_F_KERNEL_TWIN): the first byte of the
	 * entry, where the kernel's breakpoint is while the kernel serves the
	 * hit (its program ran, this one must not), else NULL. */
	const volatile uint8_t *kernel_bp;
};

static struct probe *applied[ATTACH_TABLE_SLOTS];
static const struct attach_table *table;
/* in_probe (rt.h) is 1 while a program runs on this thread: a probe hit
 * then is a miss. 2 on the runtime's own work (the follower thread, starting
 * it): probes do not fire, as kernel uprobes never see bpfshim's calls into
 * probed functions (funccount on pthread_create, malloc, ...). */

static void run(struct probe *p, struct hook_pt_regs *regs)
{
	uint64_t r0;

	if (in_probe) {
		if (in_probe == 1)
			__atomic_add_fetch(&p->misses, 1, __ATOMIC_RELAXED);
		return;
	}
	if (p->kernel_bp && *p->kernel_bp == 0xcc)
		return;     /* the kernel's uprobe took this hit */
	SUD_INTERNAL_BEGIN();
	in_probe = 1;
	bpf_rt_override.set = 0;
	bpf_prog_run_probe(p->prog, regs, p->cookie, p->func_ip, &r0);
	if (__builtin_expect(bpf_rt_override.set, 0)) {
		/* as the kernel's helper: rax = rc, and at an entry the caller
		 * continues from its return address (the other probes of the
		 * site still run, any override wins) */
		if (p->override == OVERRIDE_SKIP)
			hook_override(regs, bpf_rt_override.rc);
		else if (p->override == OVERRIDE_RETVAL)
			regs->ax = bpf_rt_override.rc;
	}
	in_probe = 0;
	SUD_INTERNAL_END();
}

static void probe_entry(struct hook_pt_regs *regs, void *data)
{
	run(data, regs);
}

struct resolve_find {
	const struct attach_slot *s;
	uint64_t offset;
	char perm;
	uintptr_t addr;
};

static int resolve_vma(const struct bpf_rt_vma *v, void *arg)
{
	struct resolve_find *f = arg;

	if (v->ino != f->s->ino || v->dev != f->s->dev)
		return 0;
	if (f->perm == 'x' ? v->perms[2] != 'x' : v->perms[1] != 'w' || v->perms[3] != 'p')
		return 0;
	if (f->offset < v->off || f->offset >= v->off + (v->hi - v->lo))
		return 0;
	f->addr = v->lo + (f->offset - v->off);
	return 1;
}

/* Where file offset `offset` of (dev, ino) is mapped here, in a mapping
 * with permission `perm` ('x': the code; 'w': private writable data, where
 * a USDT semaphore lives, as the kernel's valid_ref_ctr_vma()), or 0. */
static uintptr_t resolve_in(const struct attach_slot *s, uint64_t offset, char perm)
{
	static char buf[1 << 16];     /* the follower's */
	struct resolve_find f = { s, offset, perm, 0 };
	long fd = BPF_RT_SYS(SYS_openat, AT_FDCWD, "/proc/self/maps", O_RDONLY | O_CLOEXEC, 0);

	if (fd < 0)
		return 0;
	bpf_rt_maps_each(fd, buf, sizeof(buf), resolve_vma, &f);
	BPF_RT_SYS(SYS_close, fd);
	return f.addr;
}

static uintptr_t resolve(const struct attach_slot *s)
{
	return resolve_in(s, s->offset, 'x');
}

static struct probe *same_site(const struct probe *p)
{
	for (unsigned k = 0; k < ATTACH_TABLE_SLOTS; k++) {
		struct probe *q = applied[k];
		if (q && q != p && q->hook && q->dev == p->dev && q->ino == p->ino && q->offset == p->offset)
			return q;
	}
	return NULL;
}

/* The semaphore of a newly hooked site: +1 unless the site is probed here
 * already (the kernel updates it when it writes the breakpoint, once). */
static void ref_ctr_get(struct probe *p, const struct attach_slot *s)
{
	struct probe *q = same_site(p);
	uintptr_t a;

	if (!s->ref_ctr_offset || (q && q->ref_ctr))
		return;
	a = resolve_in(s, s->ref_ctr_offset, 'w');
	if (!a)
		return;         /* not mapped writable: as the kernel, nothing to count */
	p->ref_ctr = (uint16_t *)a;
	__atomic_add_fetch(p->ref_ctr, 1, __ATOMIC_RELAXED);
}

/* The last probe of a site gives the count back; otherwise another
 * probe of the site holds it from now on. */
static void ref_ctr_put(struct probe *p)
{
	struct probe *q;

	if (!p->ref_ctr)
		return;
	q = same_site(p);
	if (q)
		q->ref_ctr = p->ref_ctr;
	else
		__atomic_sub_fetch(p->ref_ctr, 1, __ATOMIC_RELAXED);
	p->ref_ctr = NULL;
}

static void detach_slot(unsigned i)
{
	struct probe *p = applied[i];

	if (!p)
		return;
	int used = 0;

	ref_ctr_put(p);
	for (unsigned k = 0; k < ATTACH_TABLE_SLOTS; k++)
		used |= k != i && applied[k] && applied[k]->prog == p->prog;
	/* before hook_detach waits for the runs in progress: a stuck one stops */
	if (!used)
		bpf_rt_prog_detached(p->prog);
	if (p->hook)
		hook_detach(p->hook);
	applied[i] = NULL;
	/* p stays allocated: a thread may still be returning through it */
	if (!used)
		rt_prog_release(p->prog->id);
}

/* The program calls bpf_override_return (its own code; a tail-called
 * program is not looked at). */
static int calls_override(const struct bpf_prog_rt *prog)
{
	for (uint32_t i = 0; i < prog->insn_cnt; i++)
		if (prog->insns[i].code == (BPF_JMP | BPF_CALL) && prog->insns[i].src_reg == 0 &&
		    prog->insns[i].imm == BPF_FUNC_override_return)
			return 1;
	return 0;
}

/* BPFSHIM_DEBUG_HOOKS, read at load (uprobe_init): the follower never
 * reads the environment, which the application may be changing. */
static int debug_hooks;

/*
 * A twin's site (ATTACH_F_KERNEL_TWIN), before the hook: whether this
 * process may serve it, the kernel's breakpoint staying in byte 0 until
 * the jump is in: where the site keeps its first instruction as the file
 * has it, the jump after it (hook_kept_insn: an entry's endbr64 or push of
 * a register, a USDT nop inside a function; with the kernel's int3 over
 * byte 0 or not: what it stands for is read from the file); a uretprobe's
 * return hook too (a call the kernel's breakpoint saw returns through the
 * kernel's uretprobe and is skipped here as an entry is). Other sites stay
 * with the kernel's breakpoint: 0, the hit counted there once. *op: the
 * kept instruction's byte 0.
 */
static int twin_site_ok(uintptr_t addr, size_t fsize, uint64_t before, uint8_t *op)
{
	uint64_t sp_adj;

	return fsize >= 9 && hook_kept_insn(addr, !before, op, &sp_adj) > 0;
}

/* The jump is in: the kernel's breakpoint goes from this process (its
 * unregister later finds no int3 and writes nothing), so bpfshim serves
 * the hits here from now on. op: the file's byte 0. The kernel updates a
 * USDT semaphore only where it writes its int3 or finds it to remove
 * (uprobe_write_opcode), so the +1 it made here is the twin's to hold and
 * give back (ref_ctr_put), or given back now when another probe of the
 * site holds the site's. */
static void twin_take_site(struct probe *p, const struct attach_slot *s, uintptr_t addr, uint8_t op)
{
	const uint8_t *c = (const uint8_t *)addr;
	uint8_t old[2] = { 0xcc, c[1] }, file[2] = { op, c[1] };
	struct probe *q;
	uintptr_t a;

	p->kernel_bp = (const volatile uint8_t *)addr;
	if (c[0] != 0xcc || hook_text_replace(addr, old, file, 2, -1) ||
	    !s->ref_ctr_offset || !(a = resolve_in(s, s->ref_ctr_offset, 'w')))
		return;
	q = same_site(p);
	if (q && q->ref_ctr)
		__atomic_sub_fetch((uint16_t *)a, 1, __ATOMIC_RELAXED);
	else
		p->ref_ctr = (uint16_t *)a;
}

/* A twin's site this process leaves to the kernel's breakpoint: applied
 * without a hook (the hit is counted there once); said with
 * BPFSHIM_DEBUG_HOOKS. */
static void twin_to_kernel(unsigned i, struct probe *p, const struct attach_slot *s)
{
	if (debug_hooks) {
		char m[ATTACH_PATH_MAX + 96];
		int k = snprintf(m, sizeof(m), "bpfshim: probe %s+0x%" PRIx64 ": kernel\n", s->path, s->offset);
		if (k > 0)
			(void)!write(2, m, (size_t)k);
	}
	p->hook = NULL;
	applied[i] = p;
}

static void attach_slot(unsigned i, const struct attach_slot *s)
{
	uintptr_t addr = resolve(s);
	const struct bpf_prog_rt *prog;
	struct probe *p;

	if (!addr)
		return;         /* not mapped here (yet): retried on the next sync */
	prog = rt_prog_by_id(s->prog_id);
	if (!prog)
		return;
	p = calloc(1, sizeof(*p));
	if (!p)
		return;
	p->prog = prog;
	p->cookie = s->cookie;
	p->func_ip = addr;
	p->seq = s->seq;
	p->dev = s->dev;
	p->ino = s->ino;
	p->offset = s->offset;
	int retprobe = s->flags & ATTACH_F_RETPROBE;
	/* the engine proves a site inside a function safe for its jump from
	 * the function's code; a USDT site with no symbol around it gets int3;
	 * other sites no symbol covers (assembly without .size, stripped
	 * files) are taken as the entries the loader resolved them to be */
	uint64_t before = 0;
	int usdt;
	size_t fsize = site_info(s, s->offset, &before, &usdt);
	hook_fn entry = retprobe ? NULL : probe_entry, ret = retprobe ? probe_entry : NULL;
	int twin = s->flags & ATTACH_F_KERNEL_TWIN;
	uint8_t op = 0;
	if (twin && !twin_site_ok(addr, fsize, before, &op)) {
		twin_to_kernel(i, p, s);
		return;
	}
	int err = fsize || usdt ? hook_attach_in((void *)addr, fsize ? (void *)(addr - before) : NULL, fsize, entry, ret,
						 p, &p->hook)
				: hook_attach((void *)addr, entry, ret, p, &p->hook);
	p->override = retprobe ? OVERRIDE_RETVAL : before || usdt ? OVERRIDE_NONE : OVERRIDE_SKIP;
	if (!err && p->override == OVERRIDE_NONE && calls_override(prog)) {
		char m[ATTACH_PATH_MAX + 160];
		int k = snprintf(m, sizeof(m), "bpfshim: bpf_override_return has no effect at %s+0x%" PRIx64
				 ": not a function entry\n", s->path, s->offset);
		if (k > 0)
			(void)!write(2, m, (size_t)k);
	}
	if (twin && (err || !hook_kept(p->hook))) {
		if (!err)
			hook_detach(p->hook);  /* at byte 0 after all (a branch lands after the instruction) */
		twin_to_kernel(i, p, s);
		return;
	}
	if (err) {
		char m[ATTACH_PATH_MAX + 128];
		int k = snprintf(m, sizeof(m), "bpfshim: cannot probe %s+0x%" PRIx64 " in pid %d: %s\n",
				 s->path, s->offset, (int)getpid(), strerror(-err));
		if (k > 0)
			(void)!write(2, m, (size_t)k);
		/* applied without a hook: not retried until the slot changes */
		p->hook = NULL;
	} else {
		/* a twin's semaphore is held by the kernel's uprobe, in every
		 * process that maps the file */
		if (!twin)
			ref_ctr_get(p, s);
		else
			twin_take_site(p, s, addr, op);
		if (debug_hooks) {   /* which patch a site got (compat_tests) */
			char m[ATTACH_PATH_MAX + 96];
			int k = snprintf(m, sizeof(m), "bpfshim: probe %s+0x%" PRIx64 ": %s\n", s->path, s->offset,
					 hook_mode(p->hook) == HOOK_MODE_JMP ? "jmp" : "int3");
			if (k > 0)
				(void)!write(2, m, (size_t)k);
		}
	}
	applied[i] = p;
}

/*
 * What a program needs before it can run in this process, got here and not
 * in a probe (which may interrupt fork(), malloc, a signal handler, and must
 * not allocate, lock, wait or ask the server): the shared CPU slots, the
 * task layout, the program with its maps, the perf rings and tail call
 * targets its maps name (rt_prog_prepare). Done for every live slot at
 * each pass, so rings and targets the loader adds later (bpftrace and BCC
 * fill their perf event arrays after attaching; rt_followers_poke wakes us) are
 * picked up without a probe asking.
 */
static void prepare_slot(const struct attach_slot *s)
{
	const struct bpf_prog_rt *prog = rt_prog_by_id(s->prog_id);

	bpf_rt_cpu_prepare();
	bpf_rt_task_prepare();
	if (prog)
		rt_prog_prepare(prog);
}

/* The server has filled the table's header; a table of another version
 * (another build's server) is not read: its slots may not mean what ours
 * do. Said once. */
static int table_ready(void)
{
	static int said;

	if (__atomic_load_n(&table->magic, __ATOMIC_ACQUIRE) != ATTACH_TABLE_MAGIC)
		return 0;
	if (table->version == ATTACH_TABLE_VERSION)
		return 1;
	if (!said++) {
		static const char m[] = "bpfshim: the server's attach table is of another version than this "
					"library's: no probe is applied in this process\n";
		(void)!write(2, m, sizeof(m) - 1);
	}
	return 0;
}

/* Bring this process in line with the table; 1 if something is pending. */
static int sync_table(void)
{
	int pending = 0;
	pid_t me = getpid();

	for (unsigned i = 0; i < ATTACH_TABLE_SLOTS; i++) {
		const struct attach_slot *s = &table->slots[i];
		uint32_t st = __atomic_load_n(&s->state, __ATOMIC_ACQUIRE);
		int want = st == ATTACH_ENABLED && (s->pid == -1 || s->pid == me);

		if (want)
			prepare_slot(s);

		/* each kind in its place: uprobes here, the tracepoint kinds in
		 * agent/syscall/trace.c */
		syscall_tp_slot(i, s, want && s->kind != ATTACH_KIND_UPROBE);
		if (s->kind != ATTACH_KIND_UPROBE)
			continue;
		if (applied[i] && (!want || applied[i]->seq != s->seq))
			detach_slot(i);
		if (want && !applied[i]) {
			attach_slot(i, s);
			pending |= !applied[i];
		}
	}
	syscall_tp_commit();
	return pending;
}

/* Map the table if the server has made it, and connect to the server while
 * this process may (it may change its user later); 0 on success. */
static int open_table(void)
{
	char dir[512], path[600];
	struct stat st;
	int fd;

	if (table)
		return 0;
	if (rt_runtime_dir(dir, sizeof(dir)))
		return -1;
	attach_ack_join(dir);
	snprintf(path, sizeof(path), "%s/attach.tbl", dir);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	if (fstat(fd, &st) || (size_t)st.st_size < sizeof(struct attach_table)) {
		close(fd);
		return -1;
	}
	void *m = mmap(NULL, sizeof(struct attach_table), PROT_READ, MAP_SHARED, fd, 0);
	close(fd);
	if (m == MAP_FAILED)
		return -1;
	table = m;
	rt_follow_word_set(&table->gen);
	rt_connect_early();
	return 0;
}

static int agent_on;              /* preloaded, or attached by bpfshim_agent_main() */

/* Set once the constructor has applied the probes that existed at start. */
static uint32_t init_done;

/* A credential change stops the follower and starts it again (rt_thread.c). */
static int follower(struct rt_thread *t)
{
	int delay = 100, tp_delay = 1;

	in_probe = 2;
	while (!__atomic_load_n(&init_done, __ATOMIC_ACQUIRE)) {
		if (rt_thread_stopping(t))
			return RT_THREAD_STOPPED;
		shm_futex_wait(&init_done, 0, 100);
	}

	/* The server creates the table; until then look now and then. */
	while (open_table()) {
		if (attach_ack_sleep(delay))
			rt_thread_wait(t, delay);
		if (rt_thread_stopping(t))
			return RT_THREAD_STOPPED;
		if (delay < 2000)
			delay *= 2;
	}
	while (!table_ready()) {
		rt_thread_wait(t, 100);
		if (rt_thread_stopping(t))
			return RT_THREAD_STOPPED;
	}
	while (!rt_thread_stopping(t)) {
		uint32_t gen = __atomic_load_n(&table->gen, __ATOMIC_ACQUIRE);
		int pending = sync_table();
		int armed = !syscall_tp_poll();
		/* a pending slot (library not loaded yet) is retried every second;
		 * threads still to arm for syscall tracepoints, soon */
		int timeout = pending ? 1000 : 60000;
		if (!armed) {
			timeout = tp_delay < 200 ? (tp_delay *= 2) : 200;
		} else {
			tp_delay = 1;
			/* complete, threads asked to arm for tracepoints included:
			 * loaders waiting for this generation may return */
			attach_ack_applied(gen, &table->gen);
		}
		if (!rt_thread_stopping(t))
			shm_futex_wait((uint32_t *)&table->gen, gen, timeout);
	}
	return RT_THREAD_STOPPED;
}

static void follower_wake(struct rt_thread *t)
{
	if (table)
		shm_futex_wake((uint32_t *)&table->gen);
	attach_ack_kick();
}

/* A probe found something missing (a perf ring): the follower's next pass
 * gets it. A raw FUTEX_WAKE on the table's generation (also wakes other
 * processes' followers: they share the word, and find nothing to do). */
void agent_follower_kick(void)
{
	const struct attach_table *t = __atomic_load_n(&table, __ATOMIC_ACQUIRE);

	if (t)
		BPF_RT_SYS(SYS_futex, &t->gen, FUTEX_WAKE, INT_MAX, 0, 0, 0);
}

static struct rt_thread follower_thread = {
	.fn = follower, .wake = follower_wake, .stack_size = 256 * 1024,
};

static void start_follower(void)
{
	if (!getenv("BPFSHIM_NO_AGENT"))
		rt_thread_start(&follower_thread);
}

/* The child of a fork keeps the parent's patches (its copy of the code) and
 * its mapping of the table (it may not reach the runtime directory again:
 * nginx's workers change to another user), but not the thread. */
static void after_fork_child(void)
{
	if (!agent_on)
		return;
	attach_ack_forked();
	start_follower();
}

/*
 * Entry point for `bpfshim attach PID` (frida loads this library into a
 * running process and calls it from a thread of its own): `data` is the
 * runtime directory of the caller's server. The constructors have run
 * already and started nothing (the library is not preloaded there); from
 * now on the process follows that server's table.
 */
BPFSHIM_API void bpfshim_agent_main(const char *data, int *stay_resident)
{
	if (stay_resident)
		*stay_resident = 1;
	if (!data || !*data)
		return;
	rt_thread_stop(&follower_thread);
	if (table) {
		rt_follow_word_set(NULL);
		munmap((void *)table, sizeof(*table));
		table = NULL;
	}
	attach_ack_leave();
	attach_ack_init();
	if (rt_set_runtime_dir(data) == 0) {
		agent_on = 1;
		start_follower();
	}
}

void uprobe_init(void)
{
	pthread_atfork(NULL, NULL, after_fork_child);
	debug_hooks = getenv("BPFSHIM_DEBUG_HOOKS") != NULL;
	/* loaded by `bpfshim attach`: bpfshim_agent_main() says which server */
	if (!rt_interposing()) {
		__atomic_store_n(&init_done, 1, __ATOMIC_RELEASE);
		return;
	}
	agent_on = 1;
	in_probe = 2;     /* the runtime's own syscalls here are not the application's */
	attach_ack_init();
	/* Probes that exist when the process starts are in place before main()
	 * runs (e.g. the command bpftrace -c starts), as with kernel uprobes.
	 * The follower thread is created first: a probe on pthread_create (or
	 * on what it calls) must not count the runtime's own thread. */
	start_follower();
	if (!getenv("BPFSHIM_NO_AGENT") && !open_table() && table_ready()) {
		for (unsigned i = 0; i < ATTACH_TABLE_SLOTS; i++)
			if (table->slots[i].state == ATTACH_ENABLED) {
				sync_table();
				break;
			}
	}
	syscall_tp_exec_exit();
	syscall_site_premap();
	__atomic_store_n(&init_done, 1, __ATOMIC_RELEASE);
	shm_futex_wake(&init_done);
	in_probe = 0;
}

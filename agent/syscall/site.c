/* SPDX-License-Identifier: MIT */
/*
 * Syscall sites rewritten, lazily, so that a syscall tracepoint costs no
 * signal (trace.c has the tracepoints, dispatch.c the dispatch handler).
 *
 * While a syscall tracepoint is attached, a syscall made outside bpfshim's
 * region traps (Syscall User Dispatch); the handler notes the site
 * (syscall_site_trapped) and the follower thread rewrites it soon after,
 * where the code allows, into a jump to a per-site stub near it:
 *
 *   site:  mov $nr,%eax ; syscall     ->  jmp stub ; syscall (kept)
 *   stub:  mov $nr,%eax ; lea site+7(%rip),%r11 ; jmp sud_site_entry
 *
 * The instruction before the syscall must be 5 bytes, relocatable as it is
 * (a mov or lea, not rip-relative, not writing rsp), an instruction
 * boundary of its function's linear decode, and no branch of the function
 * may land inside it (the hook engine's scan); the syscall instruction stays
 * where it was, so a branch to it, a thread stopped on it, and one returning
 * from it all run the original code. Otherwise (glibc's read: `xor
 * %eax,%eax`; numbers from a register) the syscall itself becomes a 2-byte
 * `jmp` to 5 bytes of alignment padding within 127 bytes (after a ret or
 * jmp, no branch into them), which become a jmp to the stub: a thread
 * returning from the syscall lands after it, one stopped on it or restarted
 * there takes the jmp. Other sites stay on dispatch and are counted. Code
 * is written as the hook engine writes code other threads run
 * (hook_text_replace), and a function is decoded with this process's
 * rewrites undone.
 *
 * sud_site_entry, in the region dispatch lets through, looks up the syscall
 * number in sud_nr_tab with instructions that leave the flags alone: 0
 * (nothing attached for it) makes the syscall at once and returns to the
 * site with rcx and r11 as the kernel leaves them; SITE_TRACED saves the
 * registers as the kernel's pt_regs and runs the syscall through the
 * dispatch handler's code with its programs (syscall_tp_site); SITE_TRAP
 * goes back to the original instruction, which traps when dispatch is on:
 * the syscalls that need the handler's signal frame (rt_sigreturn,
 * rt_sigprocmask, the clone family, whose child does not return through
 * the caller's stack the way the parent does). The stub writes 8 bytes
 * below the red zone, as a signal would; xmm0-15 are saved around the
 * programs, the upper halves of ymm/zmm are not (as with hooks).
 */
#include <errno.h>
#include <fcntl.h>
#include <gnu/libc-version.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include "bpf_rt.h"
#include "common.h"
#include "syscall_site.h"
#include "syscall_tp.h"
#include "helpers/helpers.h"
#include "hook/hook.h"
#include "rawsys.h"
#include "start.h"

#define HIDDEN __attribute__((visibility("hidden")))

uint8_t sud_nr_tab[SITE_NR_TAB] HIDDEN __attribute__((aligned(64)));

void sud_site_entry(void) HIDDEN;
void sud_site_traced(struct hook_pt_regs *r) HIDDEN __attribute__((used));

__asm__(
	".pushsection bpfshim_sud,\"ax\",@progbits\n"
	/* rax = nr, r11 = the address after the original syscall */
	".globl sud_site_entry\n.hidden sud_site_entry\n.type sud_site_entry,@function\n"
	"sud_site_entry:\n"
	"	lea -128(%rsp), %rsp\n"
	"	push %r11\n"
	"	lea sud_nr_tab(%rip), %rcx\n"
	"	movzwl %ax, %r11d\n"
	"	movzbl (%rcx,%r11), %ecx\n"
	"	jrcxz 1f\n"
	"	jmp 2f\n"
	"1:	syscall\n"
	"	pop %rcx\n"
	"	lea 128(%rsp), %rsp\n"
	"	jmp *%rcx\n"
	/* struct hook_pt_regs below the return address, as the kernel's */
	"2:	pushfq\n"
	"	cld\n"                        /* C code runs with DF clear (popfq restores it) */
	"	push $0x2b\n"                 /* ss */
	"	lea 152(%rsp), %rcx\n	push %rcx\n"   /* sp */
	"	push 16(%rsp)\n"              /* flags */
	"	push $0x33\n"                 /* cs */
	"	push 40(%rsp)\n"              /* ip */
	"	push %rax\n"                  /* orig_ax */
	"	push %rdi\n	push %rsi\n	push %rdx\n"
	"	push 80(%rsp)\n"              /* cx: the ip, as the syscall leaves it */
	"	push $-38\n"                  /* ax: -ENOSYS */
	"	push %r8\n	push %r9\n	push %r10\n"
	"	push 112(%rsp)\n"             /* r11: the flags */
	"	push %rbx\n	push %rbp\n	push %r12\n	push %r13\n	push %r14\n	push %r15\n"
	"	mov %rsp, %rbx\n"
	"	and $-16, %rsp\n	sub $256, %rsp\n"
	"	movaps %xmm0, 0(%rsp)\n	movaps %xmm1, 16(%rsp)\n	movaps %xmm2, 32(%rsp)\n	movaps %xmm3, 48(%rsp)\n"
	"	movaps %xmm4, 64(%rsp)\n	movaps %xmm5, 80(%rsp)\n	movaps %xmm6, 96(%rsp)\n	movaps %xmm7, 112(%rsp)\n"
	"	movaps %xmm8, 128(%rsp)\n	movaps %xmm9, 144(%rsp)\n	movaps %xmm10, 160(%rsp)\n	movaps %xmm11, 176(%rsp)\n"
	"	movaps %xmm12, 192(%rsp)\n	movaps %xmm13, 208(%rsp)\n	movaps %xmm14, 224(%rsp)\n	movaps %xmm15, 240(%rsp)\n"
	"	mov %rbx, %rdi\n"
	"	call sud_site_traced\n"
	"	movaps 0(%rsp), %xmm0\n	movaps 16(%rsp), %xmm1\n	movaps 32(%rsp), %xmm2\n	movaps 48(%rsp), %xmm3\n"
	"	movaps 64(%rsp), %xmm4\n	movaps 80(%rsp), %xmm5\n	movaps 96(%rsp), %xmm6\n	movaps 112(%rsp), %xmm7\n"
	"	movaps 128(%rsp), %xmm8\n	movaps 144(%rsp), %xmm9\n	movaps 160(%rsp), %xmm10\n	movaps 176(%rsp), %xmm11\n"
	"	movaps 192(%rsp), %xmm12\n	movaps 208(%rsp), %xmm13\n	movaps 224(%rsp), %xmm14\n	movaps 240(%rsp), %xmm15\n"
	"	mov %rbx, %rsp\n"
	"	pop %r15\n	pop %r14\n	pop %r13\n	pop %r12\n	pop %rbp\n	pop %rbx\n"
	"	pop %r11\n	pop %r10\n	pop %r9\n	pop %r8\n"
	"	pop %rax\n	pop %rcx\n	pop %rdx\n	pop %rsi\n	pop %rdi\n"
	"	lea 48(%rsp), %rsp\n"         /* orig_ax, ip, cs, flags, sp, ss */
	"	popfq\n"
	"	lea 136(%rsp), %rsp\n"        /* the return address, the red zone */
	"	jmp *%rcx\n"
	".popsection\n");

/* ---- what each process says about its sites (bpfshim status) ---- */

static struct syscall_site_stats local_stats, *stats = &local_stats;

static void count(uint64_t *field)
{
	__atomic_fetch_add(field, 1, __ATOMIC_RELAXED);
}

/* The traced path of a rewritten site: the registers at the syscall. */
void sud_site_traced(struct hook_pt_regs *r)
{
	if (sud_nr_tab[r->orig_ax & (SITE_NR_TAB - 1)] == SITE_TRAP || syscall_tp_site(r)) {
		r->cx -= 2;          /* to the original syscall instruction */
		r->ax = r->orig_ax;
		return;
	}
	/* added in batches: threads on several CPUs would fight over the line */
	static __thread uint32_t batch;
	if (++batch == 64) {
		__atomic_fetch_add(&stats->events, batch, __ATOMIC_RELAXED);
		batch = 0;
	}
}

/* $RUNTIME_DIR/syscall_sites.PID: the counters, shared with `bpfshim
 * status`. Made at start and in a fork child's handler, while the
 * application opens no file: the fds it takes meanwhile are never numbers
 * the application would see taken (rawsys.h BPF_RT_FD_MIN). A process
 * that started before its runtime directory existed has none. */
static void stats_publish(void)
{
	char dir[512], path[600], name[64];
	pid_t me = (pid_t)BPF_RT_SYS(SYS_getpid, 0);

	if (rt_runtime_dir(dir, sizeof(dir)))
		return;
	memcpy(name, "syscall_sites.", 14);
	name[14 + bpf_rt_utoa(name + 14, (uint64_t)me)] = 0;
	if (bpf_rt_path_join(path, sizeof(path), dir, name))
		return;
	long fd = BPF_RT_SYS(SYS_openat, AT_FDCWD, path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0)
		return;
	struct syscall_site_stats *m = NULL;
	if (!BPF_RT_SYS(SYS_ftruncate, fd, sizeof(*m)))
		m = bpf_rt_mmap(sizeof(*m), PROT_READ | PROT_WRITE, MAP_SHARED, (int)fd, 0);
	BPF_RT_SYS(SYS_close, fd);
	if (!m)
		return;
	struct syscall_site_stats *old = stats;
	*m = *old;
	m->magic = SITE_STATS_MAGIC;
	m->pid = (uint32_t)me;
	char state = 0;
	uint64_t start = 0;
	if (!bpf_rt_proc_stat((int32_t)me, &state, &start))
		m->start_time = start;
	__atomic_store_n(&stats, m, __ATOMIC_RELEASE);
}

/* ---- the sites seen trapping ---- */

#define SEEN_MAX 4096
enum { SEEN_NEW, SEEN_REWRITTEN, SEEN_TRAPPING };
static uint64_t seen[SEEN_MAX];      /* the address after the syscall instruction */
static uint8_t seen_state[SEEN_MAX];
static int seen_pending;

void syscall_site_trapped(uint64_t ip)
{
	count(&stats->traps);
	for (unsigned k = 0, i = (unsigned)((ip * 0x9e3779b97f4a7c15ull) >> 52); k < 32; k++, i = (i + 1) % SEEN_MAX) {
		uint64_t v = __atomic_load_n(&seen[i], __ATOMIC_ACQUIRE), none = 0;
		if (v == ip)
			return;
		if (!v && __atomic_compare_exchange_n(&seen[i], &none, ip, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
			__atomic_store_n(&seen_pending, 1, __ATOMIC_RELEASE);
			agent_follower_kick();
			return;
		}
		if (none == ip)
			return;
	}
}

/* /proc/self/maps, opened at start and again in a fork child (as the
 * stats file: no transient fd while the application runs), read by the
 * follower into its buffer. */
static struct bpf_rt_kept maps = BPF_RT_KEPT_INIT;   /* /proc/self/maps */
static char maps_buf[1 << 20];

/* Where addr is mapped from: the file's path, dev, ino and the offset;
 * the mapping's protection. Only code. */
static int file_of(uint64_t addr, struct attach_slot *s, int *prot)
{
	struct bpf_rt_file_at f = { .path = s->path, .path_size = sizeof(s->path) };
	int maps_fd = bpf_rt_kept_fd(&maps);

	if (maps_fd < 0 && (bpf_rt_kept_open(&maps, "/proc/self/maps", O_RDONLY) || (maps_fd = bpf_rt_kept_fd(&maps)) < 0))
		return 0;
	if (bpf_rt_file_of(maps_fd, maps_buf, sizeof(maps_buf), addr, &f) != 1 || !(f.prot & PROT_EXEC))
		return 0;
	s->dev = f.dev;
	s->ino = f.ino;
	s->offset = f.off;
	*prot = f.prot;
	return 1;
}

/* An instruction the stub runs as it is: a mov or lea of 5 bytes (longer:
 * the bytes after the jmp would be a tail the function's decode trips on),
 * not rip-relative, not writing rsp. */
static int relocatable(const struct x86_insn *d, const uint8_t *p)
{
	uint8_t op = d->op, reg = (uint8_t)(((d->modrm >> 3) & 7) | (d->rex & 4 ? 8 : 0)),
		rm = (uint8_t)((d->modrm & 7) | (d->rex & 1 ? 8 : 0));

	if (d->len != 5 || d->map != 0 || d->vex || d->rip_rel || d->legacy_prefixes)
		return 0;
	if (op >= 0xb8 && op <= 0xbf)                       /* mov $imm, r */
		return (uint8_t)((op & 7) | (d->rex & 1 ? 8 : 0)) != 4;
	if (op == 0x8b || op == 0x8d)                       /* mov m, r; lea */
		return reg != 4;
	if (op == 0x89)                                     /* mov r, m/r */
		return !(d->modrm >> 6 == 3 && rm == 4);
	if (op == 0xc7)                                     /* mov $imm, m/r */
		return ((d->modrm >> 3) & 7) == 0 && !(d->modrm >> 6 == 3 && rm == 4);
	(void)p;
	return 0;
}

static int debug;

/* The code this process rewrote, with the bytes it had: a function's decode
 * and branch scan read the original code. */
static struct { uint64_t addr; uint8_t len, orig[5]; } mine[2 * SEEN_MAX];
static unsigned n_mine;

static void undo_mine(uint8_t *buf, uint64_t at, size_t len)
{
	for (unsigned k = 0; k < n_mine; k++)
		for (unsigned i = 0; i < mine[k].len; i++)
			if (mine[k].addr + i >= at && mine[k].addr + i < at + len)
				buf[mine[k].addr + i - at] = mine[k].orig[i];
}

static int text_prot;        /* of the mapping being rewritten (file_of) */

static int text_replace(uint64_t at, const uint8_t *old, const uint8_t *new, size_t n)
{
	if (n_mine == BPFSHIM_ARRAY_SIZE(mine) || hook_text_replace(at, old, new, n, text_prot))
		return -1;
	mine[n_mine].addr = at;
	mine[n_mine].len = (uint8_t)n;
	memcpy(mine[n_mine++].orig, old, n);
	return 0;
}

/* A stub near `near`: the moved instruction (if any), the address after the
 * syscall in r11, a jmp to sud_site_entry. */
static uint8_t *make_stub(uint64_t near, const uint8_t *insn, size_t len, uint64_t ip)
{
	uint8_t stub[64];
	uint8_t *where = hook_code_near(near, sizeof(stub));
	size_t n = len;

	if (!where)
		return NULL;
	memcpy(stub, insn, len);
	stub[n++] = 0x4c;                /* lea rel32(%rip), %r11 */
	stub[n++] = 0x8d;
	stub[n++] = 0x1d;
	int64_t rel = (int64_t)(ip - ((uint64_t)where + n + 4));
	if (rel != (int32_t)rel)
		return NULL;
	int32_t r32 = (int32_t)rel;
	memcpy(stub + n, &r32, 4);
	n += 4;
	n += (size_t)hook_emit_jmp(stub + n, (uint64_t)where + n, (uint64_t)sud_site_entry);
	return hook_code_put(where, stub, n) ? NULL : where;
}

/* Code at `at` becomes a jmp rel32 to `to` (its first 5 bytes, `old`). */
static int put_jmp(uint64_t at, const uint8_t *old, const uint8_t *to)
{
	uint8_t jmp[5];
	int64_t rel = (int64_t)((uint64_t)to - (at + 5));
	int32_t r32 = (int32_t)rel;

	if (!to || rel != r32 || (at & 63) == 63)
		return -1;
	jmp[0] = 0xe9;
	memcpy(jmp + 1, &r32, 4);
	return text_replace(at, old, jmp, 5);
}

static int is_padding(const struct x86_insn *d, const uint8_t *p)
{
	return !d->vex && ((d->map == 0 && (d->op == 0xcc || (d->op == 0x90 && !(d->rex & 1)))) ||
			   (d->map == 1 && d->op == 0x1f));
}

static int ends_flow(const struct x86_insn *d)
{
	return !d->vex && ((d->map == 0 && (d->op == 0xc3 || d->op == 0xc2 || d->op == 0xe9 || d->op == 0xeb)) ||
			   (d->map == 1 && d->op == 0x0b));
}

static void report(const struct attach_slot *s, uint64_t off, const char *how)
{
	char m[ATTACH_PATH_MAX + 96];
	int k = snprintf(m, sizeof(m), "bpfshim: syscall site %s+0x%llx rewritten%s\n", s->path,
			 (unsigned long long)off, how);
	if (debug && k > 0)
		(void)!write(2, m, (size_t)k);
}

/* Rewrite the site whose syscall instruction ends at ip; 1 if done. Two
 * ways: the instruction before the syscall (5 bytes or more) becomes a jmp
 * to a stub that runs it; else the syscall itself becomes a 2-byte jmp to 5
 * bytes of padding within reach (after a ret or jmp, nothing branching into
 * them: alignment the code never runs), which become a jmp to the stub. */
static int rewrite(uint64_t ip)
{
	uint64_t sc = ip - 2, before = 0;
	struct attach_slot s;
	uint8_t two[2];

	memset(&s, 0, sizeof(s));
	if (bpf_rt_copy_nofault(two, (void *)sc, 2) || two[0] != 0x0f || two[1] != 0x05 || !file_of(sc, &s, &text_prot))
		return 0;
	size_t fsize = agent_func_at(&s, &before);
	uint64_t func = sc - before;
	/* the function's code as mapped (the follower's buffer), and the
	 * alignment after it */
	static uint8_t code[(1 << 16) + 16];
	size_t tail = 16;
	if (!fsize || fsize > (1 << 16) || before >= fsize || bpf_rt_copy_nofault(code, (void *)func, fsize))
		return 0;
	if (bpf_rt_copy_nofault(code + fsize, (void *)(func + fsize), tail))
		tail = 0;
	undo_mine(code, func, fsize + tail);
	/* the function's decode: the instruction that ends at the syscall, and
	 * padding runs */
	uint64_t at = UINT64_MAX, pad = 0;
	struct x86_insn d = { 0 }, prev = { 0 };
	int flow_ended = 0;
	uint64_t run = 0, run_len = 0;
	for (uint64_t pc = 0; pc < fsize + tail;) {
		int n = hook_x86_decode(code + pc, fsize + tail - pc, &d);
		if (n <= 0 || (pc < fsize && pc + (unsigned)n > fsize))
			break;
		if (pc + (unsigned)n == before) {
			at = pc;
			prev = d;
		}
		if (pc < before && pc + (unsigned)n > before)
			return 0;           /* the syscall is not an instruction of this decode */
		if (is_padding(&d, code + pc) && (run_len || flow_ended)) {
			if (!run_len)
				run = pc;
			run_len += (unsigned)n;
			int64_t rel = (int64_t)(func + run) - (int64_t)ip;
			/* not taken already (by this process: its bytes are not the original) */
			if (!pad && run_len >= 5 && rel >= -128 && rel <= 127 && !memcmp((void *)(func + run), code + run, 5) &&
			    (run >= fsize || !hook_branch_into(func + run - 1, (unsigned)(run + 5 > fsize ? fsize - run + 1 : 6),
							      func, fsize, code)))
				pad = run;
		} else {
			run_len = 0;
			if (pc >= fsize)
				break;
		}
		flow_ended = ends_flow(&d);
		pc += (unsigned)n;
	}
	uint64_t site = func + at;
	if (at != UINT64_MAX && prev.len == 5 && relocatable(&prev, code + at) &&
	    !memcmp((void *)site, code + at, 5) && !hook_branch_into(site, 5, func, fsize, code) &&
	    !put_jmp(site, code + at, make_stub(site, code + at, prev.len, ip))) {
		report(&s, s.offset - prev.len, "");
		return 1;
	}
	/* Through padding the syscall instruction itself is replaced, so a
	 * number that must trap (sud_nr_tab SITE_TRAP) has no instruction to go
	 * back to: only a site whose number is known, and never traps, is taken
	 * (read's xor %eax,%eax: 0). A number from a register (syscall()'s
	 * kind) stays on dispatch. */
	int nr_zero = at != UINT64_MAX && prev.len == 2 && (code[at] == 0x31 || code[at] == 0x33) && code[at + 1] == 0xc0;
	if (!pad || !nr_zero || hook_branch_into(sc, 2, func, fsize, code) || (sc & 63) == 63 ||
	    put_jmp(func + pad, code + pad, make_stub(func + pad, NULL, 0, ip)))
		return 0;
	uint8_t jmp8[2] = { 0xeb, (uint8_t)(int8_t)((int64_t)(func + pad) - (int64_t)ip) };
	if (text_replace(sc, two, jmp8, 2))
		return 0;
	report(&s, s.offset, " (through padding)");
	return 1;
}

/* While dispatch is on at start (the constructor, the application not yet
 * running), the file of libc's syscall wrappers is mapped for the rewriter:
 * its open from the follower would come while main() runs, and an open the
 * application made at that moment would get the next fd number up. */
void syscall_site_premap(void)
{
	struct attach_slot s;
	uint64_t before;
	int prot;

	/* execve traps only while dispatch is on (syscall_site_publish) */
	if (__atomic_load_n(&sud_nr_tab[SYS_execve], __ATOMIC_RELAXED) != SITE_TRAP)
		return;
	memset(&s, 0, sizeof(s));
	/* a function of libc's own, which the shim does not interpose; and
	 * this library, whose raw syscalls outside its allowed region trap */
	if (file_of((uint64_t)(uintptr_t)&gnu_get_libc_version, &s, &prot))
		(void)agent_func_at(&s, &before);
	memset(&s, 0, sizeof(s));
	if (file_of((uint64_t)(uintptr_t)&syscall_site_premap, &s, &prot))
		(void)agent_func_at(&s, &before);
	hook_premap();     /* what the rewrites' patches read */
}

int syscall_site_work(void)
{
	if (!__atomic_exchange_n(&seen_pending, 0, __ATOMIC_ACQ_REL))
		return 0;
	for (unsigned i = 0; i < SEEN_MAX; i++) {
		uint64_t ip = __atomic_load_n(&seen[i], __ATOMIC_ACQUIRE);
		if (!ip || seen_state[i] != SEEN_NEW)
			continue;
		int ok = rewrite(ip);
		seen_state[i] = ok ? SEEN_REWRITTEN : SEEN_TRAPPING;
		count(ok ? &stats->rewritten : &stats->trapping);
	}
	return 0;
}

/* Every one of the nr_max bits: raw_syscalls, which also covers the numbers above. */
static int all_set(const uint8_t *bits, unsigned nr_max)
{
	for (unsigned i = 0; bits && i < nr_max / 8; i++)
		if (bits[i] != 0xff)
			return 0;
	return bits != NULL;
}

void syscall_site_publish(const uint8_t *enter, const uint8_t *exit, unsigned nr_max, int on)
{
	int raw = all_set(enter, nr_max) || all_set(exit, nr_max);

	for (unsigned nr = 0; nr < SITE_NR_TAB; nr++) {
		uint8_t v = 0;
		switch (nr) {
		case SYS_rt_sigreturn: case SYS_clone: case SYS_fork: case SYS_vfork: case SYS_clone3:
			v = SITE_TRAP;
			break;
		case SYS_rt_sigprocmask:      /* the mask the dispatch handler keeps SIGSYS out of */
		case SYS_execve: case SYS_execveat:   /* no arming request may be pending at exec (ask_not_me) */
			v = on ? SITE_TRAP : 0;
			break;
		/* while dispatch is on, SIGSYS stays out of handlers' and
		 * temporary masks and its handler stays bpfshim's (do_syscall) */
		case SYS_rt_sigaction: case SYS_rt_sigsuspend: case SYS_ppoll: case SYS_pselect6:
		case SYS_epoll_pwait: case SYS_epoll_pwait2:
			v = on ? SITE_TRACED : 0;
			break;
		default:
			if (on && (raw || (nr < nr_max && ((enter[nr / 8] | exit[nr / 8]) >> (nr % 8) & 1))))
				v = SITE_TRACED;
		}
		if (__atomic_load_n(&sud_nr_tab[nr], __ATOMIC_RELAXED) != v)
			__atomic_store_n(&sud_nr_tab[nr], v, __ATOMIC_RELAXED);
	}
}

/* After a fork the child counts for itself. */
static void site_child(void)
{
	struct syscall_site_stats *parent = stats;

	local_stats = *parent;
	local_stats.pid = 0;
	stats = &local_stats;
	if (parent != &local_stats)
		BPF_RT_SYS(SYS_munmap, parent, sizeof(*parent));
	stats_publish();
	if (bpf_rt_kept_fd(&maps) >= 0)
		bpf_rt_kept_open(&maps, "/proc/self/maps", O_RDONLY);
}

void site_init(void)
{
	debug = getenv("BPFSHIM_DEBUG_HOOKS") != NULL;
	syscall_site_publish(NULL, NULL, 0, 0);
	pthread_atfork(NULL, NULL, site_child);
	stats_publish();
	bpf_rt_kept_open(&maps, "/proc/self/maps", O_RDONLY);
}

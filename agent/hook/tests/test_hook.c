/* Tests of the hook engine (agent/hook). Usage: test_hook [stress_seconds] */
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <ucontext.h>
#include <unistd.h>
#include <sys/wait.h>
#include "hook.h"
#include "start.h"

static int failures;
#define CHECK(c, ...)                                                                \
	do {                                                                         \
		if (!(c)) {                                                          \
			failures++;                                                  \
			fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #c); \
			fprintf(stderr, __VA_ARGS__);                                \
			fprintf(stderr, "\n");                                       \
		}                                                                    \
	} while (0)

long a_push(long, long), a_endbr(long, long), a_riplea(long), a_ripmov(long), a_jcc(long), a_jmp32(long),
	a_jmp8(long), a_ret1(long), a_short(long), a_call(long), a_sub(long, long), a_xorcmp(long, long),
	a_pushpair(long), a_pushpair_call(long);
extern const size_t a_pushpair_size;

#define DECL(SFX)                                              \
	extern volatile long body_calls##SFX;                  \
	long sum6##SFX(long, long, long, long, long, long);    \
	long fib##SFX(long);                                   \
	double fmadd##SFX(double, double, double);             \
	long twice##SFX(long);                                 \
	long twice2##SFX(long);                                \
	long lj_target##SFX(long, void (*)(void));
DECL(_O0)
DECL(_O2cf)

static const char *mode_name(int m)
{
	return m == HOOK_MODE_JMP ? "jmp" : m == HOOK_MODE_INT3 ? "int3" : "?";
}

/* ---- handlers ---- */
struct rec {
	long entries, returns;
	struct hook_pt_regs e, r;
	uint64_t ret_addr;      /* [sp] at entry */
	long tag;
};
static long order_log[16];
static int order_n;

static void on_entry(struct hook_pt_regs *regs, void *d)
{
	struct rec *r = d;
	__atomic_add_fetch(&r->entries, 1, __ATOMIC_RELAXED);
	r->e = *regs;
	r->ret_addr = *(uint64_t *)regs->sp;
	if (r->tag && order_n < 16)
		order_log[order_n++] = r->tag;
}

static void on_ret(struct hook_pt_regs *regs, void *d)
{
	struct rec *r = d;
	__atomic_add_fetch(&r->returns, 1, __ATOMIC_RELAXED);
	r->r = *regs;
	if (r->tag && order_n < 16)
		order_log[order_n++] = -r->tag;
}

/* ---- prologues: value, entry regs, return regs, before/after ---- */
static long call1(void *fn, long a) { return ((long (*)(long, long))fn)(a, 5); }

static void t_prologue(const char *name, void *fn, int want_mode)
{
	struct rec r = { 0 };
	struct hook *h;
	long native = call1(fn, 7);
	int err = hook_attach(fn, on_entry, on_ret, &r, &h);

	CHECK(err == 0, "%s: attach %d", name, err);
	if (err)
		return;
	CHECK(hook_mode(h) == want_mode, "%s: mode %s want %s", name, mode_name(hook_mode(h)), mode_name(want_mode));
	long v = call1(fn, 7);
	long v0 = call1(fn, 0);
	CHECK(v == native || fn == (void *)a_ret1, "%s: hooked %ld native %ld", name, v, native);
	CHECK(r.entries == 2 && r.returns == 2, "%s: entries %ld returns %ld", name, r.entries, r.returns);
	CHECK(r.e.ip == (uint64_t)fn, "%s: entry ip %#lx", name, (unsigned long)r.e.ip);
	CHECK(r.e.di == 0 && r.e.si == 5, "%s: di %lu si %lu", name, (unsigned long)r.e.di, (unsigned long)r.e.si);
	CHECK(r.r.ax == (uint64_t)v0, "%s: ret ax %ld want %ld", name, (long)r.r.ax, v0);
	CHECK(r.r.ip == r.ret_addr, "%s: ret ip %#lx want %#lx", name, (unsigned long)r.r.ip, (unsigned long)r.ret_addr);
	CHECK(r.r.sp == r.e.sp + 8, "%s: ret sp %#lx entry sp %#lx", name, (unsigned long)r.r.sp,
	      (unsigned long)r.e.sp);
	CHECK(hook_detach(h) == 0, "%s: detach", name);
	v = call1(fn, 7);
	CHECK((v == native || fn == (void *)a_ret1) && r.entries == 2, "%s: after detach %ld entries %ld", name, v, r.entries);
	/* and again: the site's trampoline is reused */
	CHECK(hook_attach(fn, on_entry, NULL, &r, &h) == 0, "%s: reattach", name);
	CHECK((call1(fn, 7) == native || fn == (void *)a_ret1) && r.entries == 3, "%s: reattached", name);
	hook_detach(h);
	printf("ok   prologue %-12s %s\n", name, mode_name(want_mode));
}

/* ---- six arguments, O0 and O2 -fcf-protection ---- */
static void t_args(const char *name, long (*f)(long, long, long, long, long, long))
{
	struct rec r = { 0 };
	struct hook *h;
	long native = f(11, 22, 33, 44, 55, 66);

	CHECK(hook_attach((void *)f, on_entry, on_ret, &r, &h) == 0, "%s attach", name);
	long v = f(11, 22, 33, 44, 55, 66);
	CHECK(v == native, "%s: %ld vs %ld", name, v, native);
	CHECK(r.e.di == 11 && r.e.si == 22 && r.e.dx == 33 && r.e.cx == 44 && r.e.r8 == 55 && r.e.r9 == 66,
	      "%s: args %lu %lu %lu %lu %lu %lu", name, (unsigned long)r.e.di, (unsigned long)r.e.si,
	      (unsigned long)r.e.dx, (unsigned long)r.e.cx, (unsigned long)r.e.r8, (unsigned long)r.e.r9);
	CHECK(r.r.ax == (uint64_t)native, "%s: ret ax %ld", name, (long)r.r.ax);
	printf("ok   args %-16s %s\n", name, mode_name(hook_mode(h)));
	hook_detach(h);
}

/* ---- floating point survives a handler that uses the FPU/SSE ---- */
static volatile double sink;
static void clobber_fp(struct hook_pt_regs *regs, void *d)
{
	double x = (double)regs->di + 1.5;
	for (int i = 0; i < 4; i++)
		x = x * 1.000001 + (double)i;
	sink = x;
}

static void t_float(const char *name, double (*f)(double, double, double))
{
	struct hook *h;
	double native = f(1.25, 3.5, -0.75);

	CHECK(hook_attach((void *)f, clobber_fp, clobber_fp, NULL, &h) == 0, "%s attach", name);
	double v = f(1.25, 3.5, -0.75);
	CHECK(v == native, "%s: %g vs %g", name, v, native);
	hook_detach(h);
	printf("ok   float %-15s\n", name);
}

/* ---- recursion: every return sees its own frame ---- */
static __thread long fib_stack[64];
static __thread int fib_depth;
static long fib_bad, fib_entries, fib_returns;
static long fib_ref(long n) { return n < 2 ? n : fib_ref(n - 1) + fib_ref(n - 2); }
static long fib_calls_ref(long n) { return n < 2 ? 1 : 1 + fib_calls_ref(n - 1) + fib_calls_ref(n - 2); }
static void fib_entry(struct hook_pt_regs *regs, void *d)
{
	fib_entries++;
	fib_stack[fib_depth++] = (long)regs->di;
}
static void fib_ret(struct hook_pt_regs *regs, void *d)
{
	fib_returns++;
	long n = fib_stack[--fib_depth];
	if ((long)regs->ax != fib_ref(n))
		fib_bad++;
}

static void t_fib(const char *name, long (*f)(long))
{
	struct hook *h;

	fib_bad = fib_entries = fib_returns = 0;
	CHECK(hook_attach((void *)f, fib_entry, fib_ret, NULL, &h) == 0, "%s attach", name);
	long v = f(18);
	CHECK(v == fib_ref(18), "%s: %ld", name, v);
	CHECK((fib_entries == fib_calls_ref(18) || f != fib_O0) && fib_entries >= 18 && fib_returns == fib_entries && !fib_bad && fib_depth == 0,
	      "%s: entries %ld returns %ld (want %ld) bad %ld", name, fib_entries, fib_returns, fib_calls_ref(18),
	      fib_bad);
	hook_detach(h);
	printf("ok   recursion %-11s %ld calls\n", name, fib_entries);
}

/* ---- longjmp over hooked frames ---- */
static jmp_buf jb;
static int lj_depth;
static void lj_leaf(void)
{
	if (lj_depth)
		longjmp(jb, 1);
}
static long lj_target(long n)
{
	return lj_target_O0(n, lj_leaf);
}

static void t_longjmp(void)
{
	struct rec r = { 0 };
	struct hook *h;

	CHECK(hook_attach((void *)lj_target_O0, on_entry, on_ret, &r, &h) == 0, "lj attach");
	for (int i = 0; i < 1000; i++) {
		lj_depth = 1;
		if (!setjmp(jb))
			lj_target(5);
	}
	lj_depth = 0;
	long before = r.returns;
	long v = lj_target(3);
	CHECK(v == 3 && r.returns - before == 4 && r.r.ax == 3, "longjmp: v %ld returns %ld ax %ld", v,
	      r.returns - before, (long)r.r.ax);
	hook_detach(h);
	printf("ok   longjmp over 6000 hooked frames\n");
}

/* ---- chained hooks run in attach order ---- */
static void t_chain(void)
{
	struct rec a = { .tag = 1 }, b = { .tag = 2 }, c = { .tag = 3 };
	struct hook *ha, *hb, *hc;

	order_n = 0;
	CHECK(!hook_attach((void *)a_sub, on_entry, on_ret, &a, &ha), "chain a");
	CHECK(!hook_attach((void *)a_sub, on_entry, NULL, &b, &hb), "chain b");
	CHECK(!hook_attach((void *)a_sub, on_entry, on_ret, &c, &hc), "chain c");
	CHECK(a_sub(1, 2) == 3, "chain value");
	CHECK(order_n == 5 && order_log[0] == 1 && order_log[1] == 2 && order_log[2] == 3 && order_log[3] == -1 &&
	      order_log[4] == -3, "order: n %d", order_n);
	hook_detach(hb);
	order_n = 0;
	CHECK(a_sub(1, 2) == 3 && order_n == 4, "after middle detach: %d", order_n);
	hook_detach(ha);
	hook_detach(hc);
	CHECK(a_sub(1, 2) == 3, "after all detached");
	printf("ok   chained hooks in attach order\n");
}

/* ---- probes at fn and fn+4 (inside the bytes fn's jmp displaces) ---- */
static void t_overlap(int inner_first)
{
	struct rec a = { 0 }, b = { 0 };
	struct hook *ha, *hb;
	void *fa = (void *)a_xorcmp, *fb = (char *)a_xorcmp + 2;      /* xor eax,eax (2) | cmp rdi,rsi */
	long native = a_xorcmp(1, 2);

	if (inner_first) {
		CHECK(!hook_attach(fb, on_entry, NULL, &b, &hb), "inner");
		CHECK(!hook_attach(fa, on_entry, on_ret, &a, &ha), "outer");
	} else {
		CHECK(!hook_attach(fa, on_entry, on_ret, &a, &ha), "outer");
		CHECK(!hook_attach(fb, on_entry, NULL, &b, &hb), "inner");
	}
	CHECK(a_xorcmp(1, 2) == native && a_xorcmp(3, 2) == 0, "overlap values");
	CHECK(a.entries == 2 && b.entries == 2 && a.returns == 2, "overlap hits %ld %ld %ld", a.entries, b.entries,
	      a.returns);
	CHECK(b.e.ip == (uint64_t)fb && b.e.sp == a.e.sp && b.e.ax == 0, "inner regs ip %#lx ax %lu",
	      (unsigned long)b.e.ip, (unsigned long)b.e.ax);
	int ma = hook_mode(ha), mb = hook_mode(hb);
	hook_detach(ha);
	CHECK(a_xorcmp(1, 2) == native && b.entries == 3 && a.entries == 2, "outer detached");
	hook_detach(hb);
	CHECK(a_xorcmp(1, 2) == native && b.entries == 3, "both detached");
	CHECK(!memcmp(fa, "\x31\xc0\x48\x39\xf7", 5), "original bytes back");
	printf("ok   probes at fn and fn+2 (%s first): %s + %s\n", inner_first ? "fn+2" : "fn", mode_name(ma),
	       mode_name(mb));
}

/* ---- fork while another thread is inside a handler ---- */
static volatile int fork_hold, fork_inside;
static long fork_hits;
static void fork_entry(struct hook_pt_regs *regs, void *d)
{
	fork_hits++;
	if (regs->di == 99) {
		fork_inside = 1;
		while (fork_hold)
			;
	}
}
static void *fork_thread(void *f)
{
	((long (*)(long))f)(99);
	return NULL;
}

static void t_fork(void)
{
	struct hook *h;
	pthread_t t;
	int status = -1;

	CHECK(!hook_attach((void *)twice2_O2cf, fork_entry, NULL, NULL, &h), "fork attach");
	fork_hold = 1;
	pthread_create(&t, NULL, fork_thread, (void *)twice2_O2cf);
	while (!fork_inside)
		;
	pid_t pid = fork();
	if (pid == 0) {
		alarm(10);
		long before = fork_hits;
		int ok = twice2_O2cf(3) == 6 && fork_hits == before + 1;
		ok &= hook_detach(h) == 0;              /* must not wait for the thread left behind */
		ok &= twice2_O2cf(3) == 6 && fork_hits == before + 1;
		_exit(ok ? 0 : 1);
	}
	waitpid(pid, &status, 0);
	fork_hold = 0;
	pthread_join(t, NULL);
	hook_detach(h);
	CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child status %#x", status);
	printf("ok   fork with a thread inside a handler\n");
}

/* ---- override_return, in both modes ---- */
static void ov_entry(struct hook_pt_regs *regs, void *d)
{
	if (regs->di == 5)
		hook_override(regs, 4242);
}

static void t_override(const char *name, long (*f)(long), volatile long *body)
{
	struct rec r = { 0 };
	struct hook *h, *h2;

	CHECK(hook_override(NULL, 1) == -EINVAL, "override outside handler");
	CHECK(!hook_attach((void *)f, ov_entry, NULL, NULL, &h), "%s attach", name);
	CHECK(!hook_attach((void *)f, NULL, on_ret, &r, &h2), "%s attach ret", name);
	long b0 = *body;
	long v = f(5);
	CHECK(v == 4242 && *body == b0, "%s: override %ld, body ran %ld", name, v, *body - b0);
	CHECK(r.returns == 1 && r.r.ax == 4242, "%s: ret sees %ld (%ld)", name, (long)r.r.ax, r.returns);
	v = f(6);
	CHECK(v == 12 && *body == b0 + 1, "%s: not overridden %ld", name, v);
	int mode = hook_mode(h);
	hook_detach(h);
	hook_detach(h2);
	printf("ok   override %-12s %s\n", name, mode_name(mode));
}

/* ---- libc ---- */
static const char *strlen_needle = "bpfshim-needle";
static long strlen_hits, strlen_rets;
static void strlen_entry(struct hook_pt_regs *regs, void *d)
{
	if ((const char *)regs->di == strlen_needle)
		__atomic_add_fetch(&strlen_hits, 1, __ATOMIC_RELAXED);
}
static void strlen_ret(struct hook_pt_regs *regs, void *d)
{
	if (regs->ax == 14)
		__atomic_add_fetch(&strlen_rets, 1, __ATOMIC_RELAXED);
}
static void *malloc_last_ret;
static long malloc_sizes;
static __thread int in_malloc_probe;
static void malloc_entry(struct hook_pt_regs *regs, void *d)
{
	if (regs->di == 12345)
		malloc_sizes++;
}
static void malloc_ret(struct hook_pt_regs *regs, void *d)
{
	malloc_last_ret = (void *)regs->ax;
}

static void t_libc(void)
{
	size_t (*volatile my_strlen)(const char *) = (size_t (*)(const char *))dlsym(RTLD_DEFAULT, "strlen");
	void *(*volatile my_malloc)(size_t) = (void *(*)(size_t))dlsym(RTLD_DEFAULT, "malloc");
	struct hook *h, *hm;

	CHECK(!hook_attach((void *)my_strlen, strlen_entry, strlen_ret, NULL, &h), "strlen attach");
	for (int i = 0; i < 100; i++)
		CHECK(my_strlen(strlen_needle) == 14, "strlen value");
	CHECK(strlen_hits == 100 && strlen_rets >= 100, "strlen hits %ld rets %ld", strlen_hits, strlen_rets);
	printf("ok   libc strlen (%s, %ld hits)\n", mode_name(hook_mode(h)), strlen_hits);
	hook_detach(h);

	/* fails while a kernel uprobe sits on libc's malloc (its int3 is there) */
	int err = hook_attach((void *)my_malloc, malloc_entry, malloc_ret, NULL, &hm);
	CHECK(!err, "malloc attach %d", err);
	if (err)
		return;
	(void)in_malloc_probe;
	void *p = my_malloc(12345);
	CHECK(p && malloc_sizes == 1 && malloc_last_ret == p, "malloc: %p %p %ld", p, malloc_last_ret, malloc_sizes);
	free(p);
	/* printf and friends run through the hooked malloc */
	char *s = strdup("through the hook");
	CHECK(s && malloc_last_ret == s, "strdup via malloc");
	free(s);
	int mode = hook_mode(hm);
	hook_detach(hm);
	printf("ok   libc malloc (%s)\n", mode_name(mode));
}

/* ---- decoder on known encodings ---- */
static void t_decode(void)
{
	static const struct { const char *hex; int len; int rip; } cases[] = {
		{ "f30f1efa", 4, 0 },                   /* endbr64 */
		{ "55", 1, 0 },                         /* push rbp */
		{ "4889e5", 3, 0 },                     /* mov rbp,rsp */
		{ "4883ec18", 4, 0 },                   /* sub rsp,24 */
		{ "4881ec00010000", 7, 0 },             /* sub rsp,256 */
		{ "488d0500000000", 7, 1 },             /* lea rax,[rip] */
		{ "488b0500000000", 7, 1 },             /* mov rax,[rip] */
		{ "c7050000000001000000", 10, 1 },      /* mov dword [rip],1 */
		{ "66c705000000000100", 9, 1 },         /* mov word [rip],1 */
		{ "48b80102030405060708", 10, 0 },      /* movabs */
		{ "66b80100", 4, 0 },                   /* mov ax,1 */
		{ "e800000000", 5, 0 },
		{ "eb00", 2, 0 },
		{ "0f8400000000", 6, 0 },
		{ "f6c101", 3, 0 },                     /* test cl,1 */
		{ "f7c101000000", 6, 0 },               /* test ecx,1 */
		{ "f7d8", 2, 0 },                       /* neg eax */
		{ "64488b042528000000", 9, 0 },         /* mov rax,fs:0x28 */
		{ "c5f877", 3, 0 },                     /* vzeroupper */
		{ "c5fd6f0500000000", 8, 1 },           /* vmovdqa ymm0,[rip] */
		{ "c4e27d1805000000ff", 9, 1 },         /* vbroadcastss ymm0,[rip] */
		{ "c4e3794a0000", 6, 0 },               /* vblendvps (0F3A, imm8) */
		{ "62f17c48100500000000", 10, 1 },      /* vmovups zmm0,[rip] */
		{ "660f3a0fc108", 6, 0 },               /* palignr xmm0,xmm1,8 */
		{ "660f3800c1", 5, 0 },                 /* pshufb */
		{ "0f1f440000", 5, 0 },                 /* nop dword [rax+rax] */
		{ "662e0f1f840000000000", 10, 0 },      /* nop word cs:[rax+rax] */
		{ "f3c3", 2, 0 },                       /* repz ret */
		{ "c20800", 3, 0 },
		{ "c8100000", 4, 0 },                   /* enter */
		{ "a10807060504030201", 9, 0 },         /* mov eax, moffs64 */
		{ "ff2500000000", 6, 1 },               /* jmp [rip] */
		{ "ff15f2ffffff", 6, 1 },               /* call [rip-14] */
		{ "418b44240c", 5, 0 },                 /* mov eax,[r12+12] */
		{ "8b04250000c0ff", 7, 0 },             /* mov eax,[abs] (SIB, no base) */
		{ "c7f800000000", 6, 0 },               /* xbegin */
		{ "0f05", 2, 0 },                       /* syscall */
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		uint8_t b[16];
		size_t n = strlen(cases[i].hex) / 2;
		for (size_t k = 0; k < n; k++)
			sscanf(cases[i].hex + 2 * k, "%2hhx", &b[k]);
		struct x86_insn d;
		int len = hook_x86_decode(b, n, &d);
		CHECK(len == cases[i].len && d.rip_rel == cases[i].rip, "decode %s: %d rip %d", cases[i].hex, len,
		      d.rip_rel);
	}
	uint8_t bad[] = { 0x06 };
	CHECK(hook_x86_decode(bad, 1, NULL) == -EINVAL, "invalid opcode");
	uint8_t cut[] = { 0x48, 0x8b };
	CHECK(hook_x86_decode(cut, 2, NULL) == -EINVAL, "truncated");
	printf("ok   decoder known encodings\n");
}

/* Decoder against objdump: stdin has lines "hexbytes" of one instruction. */
static int decode_check_stdin(void)
{
	char line[128];
	long n = 0, bad = 0;
	while (fgets(line, sizeof(line), stdin)) {
		uint8_t b[16];
		size_t len = strcspn(line, "\n") / 2;
		if (!len || len > 15)
			continue;
		for (size_t k = 0; k < len; k++)
			sscanf(line + 2 * k, "%2hhx", &b[k]);
		/* pad with bytes a longer misdecode would eat */
		uint8_t buf[16];
		memcpy(buf, b, len);
		memset(buf + len, 0x90, sizeof(buf) - len);
		int got = hook_x86_decode(buf, sizeof(buf), NULL);
		n++;
		if (got != (int)len) {
			if (bad++ < 20)
				fprintf(stderr, "decode mismatch: %.*s objdump %zu ours %d\n", (int)(2 * len), line, len,
					got);
		}
	}
	printf("decoded %ld instructions, %ld mismatches\n", n, bad);
	return bad ? 1 : 0;
}

/* ---- 8 threads call a function while another attaches and detaches ---- */
static volatile int stress_stop;
static long stress_hits;
static long stress_in;
static void stress_entry(struct hook_pt_regs *regs, void *d)
{
	__atomic_add_fetch(&stress_in, 1, __ATOMIC_SEQ_CST);
	__atomic_add_fetch(&stress_hits, 1, __ATOMIC_RELAXED);
	__atomic_sub_fetch(&stress_in, 1, __ATOMIC_SEQ_CST);
}
static void stress_ret(struct hook_pt_regs *regs, void *d)
{
	__atomic_add_fetch(&stress_in, 1, __ATOMIC_SEQ_CST);
	__atomic_sub_fetch(&stress_in, 1, __ATOMIC_SEQ_CST);
}

struct worker {
	long (*f)(long);
	volatile long *body;
	long calls, bad;
} __attribute__((aligned(64)));

static void *stress_worker(void *arg)
{
	struct worker *w = arg;
	while (!stress_stop) {
		for (int i = 0; i < 1000; i++) {
			long v = w->f(i);
			if (v != 2 * i)
				w->bad++;
			__atomic_store_n(&w->calls, w->calls + 1, __ATOMIC_RELEASE);
		}
	}
	return NULL;
}

/*
 * Traps whose handler runs only after the patcher moved on. One SIGTRAP is
 * pending at a time: a trap on the int3 of a site being patched that comes
 * while the patcher's quiesce signal is pending is delivered as that
 * signal (the kernel drops the trap's own), and on a loaded machine the
 * thread may then not run before quiesce() stops waiting for it and the
 * jump (or, on a detach, the original code) is in place. In front of the
 * engine's handler, this one makes that happen at every trap at the site's
 * entry it can: it waits until byte 0 is no int3 any more, then hands the
 * trap on as the merged quiesce signal (the one that got there first).
 * Quiesce signals that find a thread inside the displaced bytes wait the
 * same way. The engine must resume each where its instructions left it.
 */
static struct sigaction engine_trap;
static const uint8_t *late_fn;
static union sigval late_qval;
static int late_have_qval, late_busy;
static long late_traps, late_parked;

static void late_trap(int sig, siginfo_t *si, void *ucv)
{
	ucontext_t *uc = ucv;
	uint64_t off = (uint64_t)uc->uc_mcontext.gregs[REG_RIP] - (uint64_t)late_fn;
	int quiesce = si->si_code == SI_QUEUE && si->si_pid == getpid();
	siginfo_t merged;

	if (quiesce && !__atomic_load_n(&late_have_qval, __ATOMIC_ACQUIRE)) {
		late_qval = si->si_value;
		__atomic_store_n(&late_have_qval, 1, __ATOMIC_RELEASE);
	}
	if (off >= 1 && off < 5 && (quiesce || (si->si_code == SI_KERNEL && off == 1)) &&
	    __atomic_load_n(&late_have_qval, __ATOMIC_ACQUIRE) && __atomic_load_n(late_fn, __ATOMIC_ACQUIRE) == 0xcc &&
	    !__atomic_exchange_n(&late_busy, 1, __ATOMIC_ACQUIRE)) {
		/* the patcher's steps end without this thread: its quiesce
		 * signal comes nested here (this handler is SA_NODEFER), and it
		 * stops waiting after a while */
		while (__atomic_load_n(late_fn, __ATOMIC_ACQUIRE) == 0xcc)
			sched_yield();
		if (quiesce) {
			__atomic_add_fetch(&late_parked, 1, __ATOMIC_RELAXED);
		} else {
			merged = *si;
			merged.si_code = SI_QUEUE;
			merged.si_pid = getpid();
			merged.si_uid = getuid();
			merged.si_value = late_qval;
			si = &merged;
			__atomic_add_fetch(&late_traps, 1, __ATOMIC_RELAXED);
		}
		__atomic_store_n(&late_busy, 0, __ATOMIC_RELEASE);
	}
	engine_trap.sa_sigaction(sig, si, ucv);
}

/* The function a stress run hooks when not f itself (f calls it), of that
 * size, the site's jump `stress_site_off` bytes in: hooked as a function
 * entry whose first instruction the site keeps (hook_attach_in). */
static void *stress_target;
static size_t stress_target_size;
static unsigned stress_site_off;

/* `late`: with late_trap() in front of the engine's handler, and until it
 * handed on at least that many merged traps */
static void t_stress(const char *name, long (*f)(long), volatile long *body, double seconds, int force_int3,
		     int late)
{
	enum { NW = 8 };
	struct worker w[NW];
	pthread_t t[NW];
	long cycles = 0, lost = 0, after = 0, busy = 0;
	struct timespec t0, now;
	double elapsed = 0;

	if (force_int3)
		setenv("BPFSHIM_HOOK_INT3", "1", 1);
	if (late) {
		struct sigaction sa;
		memset(&sa, 0, sizeof(sa));
		sa.sa_sigaction = late_trap;
		sa.sa_flags = SA_SIGINFO | SA_NODEFER | SA_RESTART | SA_ONSTACK;
		late_fn = (const uint8_t *)(stress_target ? stress_target : (void *)f) + stress_site_off;
		late_traps = late_parked = 0;
		sigaction(SIGTRAP, &sa, &engine_trap);     /* the engine's: installed by an earlier attach */
		CHECK(engine_trap.sa_flags & SA_SIGINFO, "%s: the engine's SIGTRAP handler", name);
	}
	stress_stop = 0;
	memset(w, 0, sizeof(w));
	for (int i = 0; i < NW; i++) {
		w[i].f = f;
		w[i].body = body;
		pthread_create(&t[i], NULL, stress_worker, &w[i]);
	}
	clock_gettime(CLOCK_MONOTONIC, &t0);
	int mode = 0;
	do {
		struct hook *h;
		long c0 = 0, c1 = 0;
		int err = stress_target ? hook_attach_in(stress_target, stress_target, stress_target_size, stress_entry,
							 (cycles & 1) ? stress_ret : NULL, NULL, &h)
					: hook_attach((void *)f, stress_entry, (cycles & 1) ? stress_ret : NULL, NULL, &h);
		if (err || (stress_target && !hook_kept(h))) {
			CHECK(0, "stress attach %d%s", err, err ? "" : ": not after the first instruction");
			break;
		}
		mode = hook_mode(h);
		long h0 = __atomic_load_n(&stress_hits, __ATOMIC_SEQ_CST);
		for (int i = 0; i < NW; i++)
			c0 += __atomic_load_n(&w[i].calls, __ATOMIC_ACQUIRE);
		usleep(2000);
		for (int i = 0; i < NW; i++)
			c1 += __atomic_load_n(&w[i].calls, __ATOMIC_ACQUIRE);
		long h1 = __atomic_load_n(&stress_hits, __ATOMIC_SEQ_CST);
		/* every call that completed while attached was counted (a call
		 * in flight at either end may be counted or not) */
		if (h1 - h0 < c1 - c0 - NW)
			lost += (c1 - c0 - NW) - (h1 - h0);
		hook_detach(h);
		if (__atomic_load_n(&stress_in, __ATOMIC_SEQ_CST))
			busy++;
		long h2 = __atomic_load_n(&stress_hits, __ATOMIC_SEQ_CST);
		usleep(200);
		if (__atomic_load_n(&stress_hits, __ATOMIC_SEQ_CST) != h2)
			after++;
		cycles++;
		clock_gettime(CLOCK_MONOTONIC, &now);
		elapsed = (double)(now.tv_sec - t0.tv_sec) + (double)(now.tv_nsec - t0.tv_nsec) * 1e-9;
	} while (elapsed < seconds || (__atomic_load_n(&late_traps, __ATOMIC_RELAXED) < late && elapsed < 30));
	stress_stop = 1;
	long calls = 0, bad = 0;
	for (int i = 0; i < NW; i++) {
		pthread_join(t[i], NULL);
		calls += w[i].calls;
		bad += w[i].bad;
	}
	if (force_int3)
		unsetenv("BPFSHIM_HOOK_INT3");
	if (late) {
		sigaction(SIGTRAP, &engine_trap, NULL);
		CHECK(late_traps >= late, "%s: %ld merged traps handed on late (want %d)", name, late_traps, late);
		printf("     %s: %ld traps handed on late as merged, %ld quiesce signals inside the bytes late\n", name,
		       late_traps, late_parked);
	}
	CHECK(!lost && !after && !busy && !bad, "%s: lost %ld, hits after detach %ld, handler running after detach %ld, "
	      "wrong values %ld", name, lost, after, busy, bad);
	printf("ok   stress %-14s %s: %d threads, %.1f s, %ld attach/detach cycles, %ld calls, %ld hits\n", name,
	       mode_name(mode), NW, elapsed, cycles, calls, stress_hits);
	stress_hits = 0;
}

int main(int argc, char **argv)
{
	double stress_s = argc > 1 ? atof(argv[1]) : 2.0;

	if (argc > 1 && !strcmp(argv[1], "--decode-stdin"))
		return decode_check_stdin();
	/* what the library's start-up sequence (agent/start/start.h) runs first */
	tasks_init();
	hook_keys();
	setvbuf(stdout, NULL, _IOLBF, 0);
	t_decode();
	t_prologue("push_rbp", (void *)a_push, HOOK_MODE_JMP);
	t_prologue("endbr64", (void *)a_endbr, HOOK_MODE_JMP);
	t_prologue("rip_lea", (void *)a_riplea, HOOK_MODE_JMP);
	t_prologue("rip_mov", (void *)a_ripmov, HOOK_MODE_JMP);
	t_prologue("jcc_rel8", (void *)a_jcc, HOOK_MODE_JMP);
	t_prologue("jmp_rel32", (void *)a_jmp32, HOOK_MODE_JMP);
	t_prologue("jmp_rel8", (void *)a_jmp8, HOOK_MODE_INT3);
	t_prologue("ret_1byte", (void *)a_ret1, HOOK_MODE_INT3);
	t_prologue("short_3b", (void *)a_short, HOOK_MODE_INT3);
	t_prologue("call_first", (void *)a_call, HOOK_MODE_JMP);
	t_prologue("sub_rsp", (void *)a_sub, HOOK_MODE_JMP);
	t_prologue("xor_cmp", (void *)a_xorcmp, HOOK_MODE_JMP);
	t_args("sum6_O0", sum6_O0);
	t_args("sum6_O2cf", sum6_O2cf);
	t_float("fmadd_O0", fmadd_O0);
	t_float("fmadd_O2cf", fmadd_O2cf);
	t_fib("fib_O0", fib_O0);
	t_fib("fib_O2cf", fib_O2cf);
	t_longjmp();
	t_chain();
	t_overlap(0);
	t_overlap(1);
	t_fork();
	t_override("twice_O2cf", twice_O2cf, &body_calls_O2cf);
	setenv("BPFSHIM_HOOK_INT3", "1", 1);
	t_override("twice_O0", twice_O0, &body_calls_O0);
	unsetenv("BPFSHIM_HOOK_INT3");
	t_libc();
	if (stress_s > 0) {
		t_stress("twice_O2cf", twice_O2cf, &body_calls_O2cf, stress_s, 0, 0);
		t_stress("twice2_O0", twice2_O0, &body_calls_O0, stress_s, 0, 0);
		t_stress("twice2_O0 late", twice2_O0, &body_calls_O0, stress_s / 5, 0, 20);
		t_stress("twice_O0", twice_O0, &body_calls_O0, stress_s / 2, 1, 0);
		/* after an entry's push r12, with rbp == r12: a trap and a thread
		 * stopped after the push rbp look alike at [sp] */
		stress_target = (void *)a_pushpair;
		stress_target_size = a_pushpair_size;
		stress_site_off = 2;
		t_stress("pushpair late", a_pushpair_call, &body_calls_O0, stress_s / 5, 0, 20);
		stress_target = NULL;
		stress_site_off = 0;
	}
	struct hook_stats st;
	hook_get_stats(&st);
	printf("stats: int3 round trips %lu, parked threads moved %lu, traps merged into a patching signal %lu, "
	       "uretprobe frames dropped %lu\n", (unsigned long)st.int3_hits, (unsigned long)st.parked_moved,
	       (unsigned long)st.merged_traps, (unsigned long)st.ret_dropped);
	if (failures) {
		printf("%d failures\n", failures);
		return 1;
	}
	printf("all passed\n");
	return 0;
}

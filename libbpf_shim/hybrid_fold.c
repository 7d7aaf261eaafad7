/* SPDX-License-Identifier: MIT */
/*
 * Hybrid mode: hash maps of user-space twins (ARCHITECTURE.md "Hybrid
 * mode", maps). A twin that only adds to the values of a kernel hash,
 * per-CPU hash or per-CPU array map (bpftrace's count/sum/hist, BCC's counters: checked here
 * per instruction) counts into a bpfshim map of the same shape, in shared
 * memory, with no syscall; this loader, which has bpf(), folds that map
 * into the kernel's every FOLD_MS and before each of its own reads of it:
 * per key, what the bpfshim map holds (its CPU slots summed) less what was
 * folded before is added to the kernel's value by a kernel program, so
 * the kernel programs' own counts are never overwritten.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/syscall.h>
#include "shim.h"
#include "rt_thread.h"

#define FOLD_MS 10
#define FOLD_MAPS 64
/* bytes of key (rounded up to 8) and value a fold program takes: its
 * context, a raw tracepoint's u64 arguments (MAX_BPF_FUNC_ARGS of them) */
#define CTX_MAX 96
#define KEY_MAX 88

/* ---- the check: every use of the map adds ---- */

struct regs {
	uint16_t map;            /* registers holding the map (ld_imm64 of its fd) */
	uint16_t fp_ok, imm_ok;  /* fp[r] = r10 + off known; imm[r] known */
	int32_t fp[11];
	int64_t imm[11];
	uint64_t kslot;          /* bit i: the stack's u64 at r10 - 8(i + 1) holds a constant */
};

static const int8_t size_bytes[4] = { 4, 2, 1, 8 };   /* BPF_W, _H, _B, _DW */

/* A store of `bytes` at r10 + off: whether it is a known constant now. */
static void slot_store(struct regs *r, int32_t off, int bytes, int known)
{
	for (int32_t o = off & ~7; o < off + bytes; o += 8)
		if (o < 0 && o >= -512)
			r->kslot = known && bytes == 8 && !(off & 7) ? r->kslot | (1ull << (-o / 8 - 1))
								       : r->kslot & ~(1ull << (-o / 8 - 1));
}

/* The value at r10 + off (size bytes) is all constants stored before. */
static int slot_const(const struct regs *r, int32_t off, uint32_t size)
{
	if (off & 7 || off >= 0 || off + (int32_t)size > 0 || off < -512)
		return 0;
	for (int32_t o = off; o < off + (int32_t)size; o += 8)
		if (!(r->kslot & (1ull << (-o / 8 - 1))))
			return 0;
	return 1;
}

/* An insert of constants: update(map, key, constant value, BPF_NOEXIST)
 * (BCC's and libbpf-tools' "count 1 when the lookup missed"). */
static int const_insert(const struct regs *r, uint32_t value_size)
{
	return (r->fp_ok & 4) && (r->fp_ok & 8) && (r->imm_ok & 16) && r->imm[4] == BPF_NOEXIST &&
	       slot_const(r, r->fp[3], value_size);
}

static void reg_clear(struct regs *r, int d)
{
	r->map &= ~(1u << d);
	r->fp_ok &= ~(1u << d);
	r->imm_ok &= ~(1u << d);
}

/* What an instruction does to the tracked registers (a straight-line view:
 * the twin's program is one the kernel verified, this only recognises its
 * shapes and refuses the rest). */
static void reg_step(struct regs *r, const struct bpf_insn *in, int fd)
{
	uint8_t cls = BPF_CLASS(in->code), d = in->dst_reg;

	if (in->code == (BPF_LD | BPF_IMM | BPF_DW)) {
		reg_clear(r, d);
		if (in->src_reg == BPF_PSEUDO_MAP_FD && in->imm == fd)
			r->map |= 1u << d;
		return;
	}
	if ((cls == BPF_JMP || cls == BPF_JMP32) && BPF_OP(in->code) == BPF_CALL) {
		for (int k = 0; k <= 5; k++)
			reg_clear(r, k);
		return;
	}
	if (cls == BPF_LDX) {
		reg_clear(r, d);
		return;
	}
	if ((cls == BPF_STX && BPF_MODE(in->code) == BPF_MEM) || cls == BPF_ST) {
		if (d == BPF_REG_10)
			slot_store(r, in->off, size_bytes[BPF_SIZE(in->code) >> 3],
				   cls == BPF_ST || (in->src_reg < 11 && (r->imm_ok & (1u << in->src_reg))));
		return;
	}
	if (cls != BPF_ALU64 && cls != BPF_ALU)
		return;
	if (BPF_OP(in->code) == BPF_MOV && cls == BPF_ALU64 && BPF_SRC(in->code) == BPF_X) {
		uint8_t s = in->src_reg;
		reg_clear(r, d);
		r->map |= ((r->map >> s) & 1u) << d;
		if (s == BPF_REG_10) {
			r->fp_ok |= 1u << d;
			r->fp[d] = 0;
		} else if (s < 11) {
			r->fp_ok |= ((r->fp_ok >> s) & 1u) << d;
			r->imm_ok |= ((r->imm_ok >> s) & 1u) << d;
			r->fp[d] = r->fp[s];
			r->imm[d] = r->imm[s];
		}
		return;
	}
	if (BPF_OP(in->code) == BPF_MOV && cls == BPF_ALU64 && BPF_SRC(in->code) == BPF_K) {
		reg_clear(r, d);
		r->imm_ok |= 1u << d;
		r->imm[d] = in->imm;
		return;
	}
	if (BPF_OP(in->code) == BPF_ADD && cls == BPF_ALU64 && BPF_SRC(in->code) == BPF_K &&
	    (r->fp_ok & (1u << d))) {
		r->fp[d] += in->imm;
		r->imm_ok &= ~(1u << d);
		return;
	}
	reg_clear(r, d);
}

#define IN(set, reg) ((set) & (1u << (reg)))

/*
 * From a lookup of the map at insns[j] (key at r10 + key_off, key_size
 * bytes) on: its value pointer (r0) is only tested against NULL, loaded
 * from (u64 words) or added to atomically; what is loaded is only added
 * to and stored to the stack, and that slot written back by an update of
 * the same key with BPF_ANY (marked in `upd`). 0, or -1 with why.
 */
static int lookup_adds(const struct bpf_insn *insns, uint32_t n, uint32_t j, int fd, struct regs r,
		       int32_t key_off, uint32_t key_size, uint32_t value_size, uint8_t *upd, const char **why)
{
	uint16_t P = 1u << BPF_REG_0, O = 0;
	int32_t V = 0;
	int have_v = 0;

	reg_step(&r, &insns[j], fd);
	for (uint32_t k = j + 1; k < n; k++) {
		const struct bpf_insn *in = &insns[k];
		uint8_t cls = BPF_CLASS(in->code), mode = BPF_MODE(in->code), op = BPF_OP(in->code);
		uint8_t d = in->dst_reg, s = in->src_reg;
		int x = BPF_SRC(in->code) == BPF_X;

		if (in->code == (BPF_LD | BPF_IMM | BPF_DW)) {
			P &= ~(1u << d);
			O &= ~(1u << d);
			reg_step(&r, in, fd);
			k++;
			continue;
		}
		switch (cls) {
		case BPF_LDX:
			if (IN(P, s)) {
				if (mode != BPF_MEM || BPF_SIZE(in->code) != BPF_DW)
					return *why = "a part of its value is read", -1;
				O |= 1u << d;
				P &= ~(1u << d);
				reg_step(&r, in, fd);
				continue;
			}
			if (IN(O, s) || (s == BPF_REG_10 && have_v && in->off + 8 > V && in->off < V + 8))
				return *why = "a value it read is used otherwise", -1;
			P &= ~(1u << d);
			O &= ~(1u << d);
			reg_step(&r, in, fd);
			continue;
		case BPF_STX:
			if (mode == BPF_ATOMIC) {
				if (!IN(P, d) || in->imm != BPF_ADD || BPF_SIZE(in->code) != BPF_DW || IN(P | O, s))
					return *why = "it changes its value by other atomics", -1;
				continue;
			}
			if (IN(P, d) || IN(P, s))
				return *why = "it stores into its value", -1;
			if (IN(O, s)) {
				if (d != BPF_REG_10 || BPF_SIZE(in->code) != BPF_DW)
					return *why = "a value it read is stored elsewhere", -1;
				V = in->off;
				have_v = 1;
				reg_step(&r, in, fd);
				continue;
			}
			/* a store of something else */
			__attribute__((fallthrough));
		case BPF_ST:
			if (IN(P, d))
				return *why = "it stores into its value", -1;
			if (d == BPF_REG_10) {
				int32_t lo = in->off, hi = in->off + size_bytes[BPF_SIZE(in->code) >> 3];
				if (hi > key_off && lo < key_off + (int32_t)key_size)
					return *why = "its key changes between the lookup and the update", -1;
				if (have_v && hi > V && lo < V + 8)
					have_v = 0;
			}
			reg_step(&r, in, fd);
			continue;
		case BPF_ALU:
		case BPF_ALU64:
			if (op == BPF_MOV && x && cls == BPF_ALU64) {
				uint16_t p = IN(P, s) ? 1u << d : 0, o = IN(O, s) ? 1u << d : 0;
				P = (P & ~(1u << d)) | p;
				O = (O & ~(1u << d)) | o;
			} else if (op == BPF_MOV && !x) {
				P &= ~(1u << d);
				O &= ~(1u << d);
			} else if (op == BPF_ADD && cls == BPF_ALU64 && !IN(P, d) && !(x && IN(P, s))) {
				if (x && IN(O, s))
					O |= 1u << d;
			} else if (IN(P | O, d) || (x && IN(P | O, s))) {
				return *why = "a value it read is used otherwise", -1;
			}
			reg_step(&r, in, fd);
			continue;
		case BPF_JMP:
		case BPF_JMP32:
			if (op == BPF_EXIT)
				return 0;
			if (op == BPF_CALL) {
				if (s == BPF_PSEUDO_CALL)
					return *why = "it calls a subprogram", -1;
				if (IN(r.map, BPF_REG_1) && in->imm == BPF_FUNC_map_update_elem && IN(r.fp_ok, 2) &&
				    r.fp[2] == key_off && const_insert(&r, value_size) && !((P | O) & 0x3e)) {
					upd[k] = 1;      /* the insert when the lookup missed */
					P &= ~0x3fu;
					O &= ~0x3fu;
					reg_step(&r, in, fd);
					continue;
				}
				if (IN(r.map, BPF_REG_1)) {
					if (in->imm != BPF_FUNC_map_update_elem || !have_v || !IN(r.fp_ok, 2) ||
					    r.fp[2] != key_off || !IN(r.fp_ok, 3) || r.fp[3] != V || !IN(r.imm_ok, 4) ||
					    r.imm[4] != BPF_ANY)
						return *why = "it writes other than the value it read plus something", -1;
					upd[k] = 1;
					return 0;
				}
				if ((P | O) & 0x3e)
					return *why = "its value goes to a helper", -1;
				P &= ~0x3fu;
				O &= ~0x3fu;
				reg_step(&r, in, fd);
				continue;
			}
			if (in->off < 0)
				return *why = "a loop follows its lookup", -1;
			if (op == BPF_JA)
				continue;
			if (IN(P, d)) {
				if ((op != BPF_JEQ && op != BPF_JNE) || x || in->imm)
					return *why = "its value pointer is compared", -1;
			} else if (IN(O, d) || (x && IN(P | O, s))) {
				return *why = "a decision depends on its value", -1;
			}
			continue;
		default:
			return *why = "an instruction uses its value", -1;
		}
	}
	return 0;
}

/* Whether every use of map fd `fd` in the program adds to its values. */
static int adds_only(const struct bpf_insn *insns, uint32_t n, int fd, uint32_t key_size, uint32_t value_size,
		     const char **why)
{
	uint8_t *upd = calloc(n, 1);
	struct regs r = { 0 };
	int ok = upd ? 0 : -1;

	*why = "out of memory";
	for (uint32_t k = 0; upd && k < n; k++) {
		const struct bpf_insn *in = &insns[k];
		uint8_t cls = BPF_CLASS(in->code);

		if (in->code == (BPF_LD | BPF_IMM | BPF_DW)) {
			if (in->imm == fd && in->src_reg != BPF_PSEUDO_MAP_FD) {
				ok = -1;
				*why = "it reads its values directly";
				break;
			}
			if (in->imm == fd && in->dst_reg != BPF_REG_1) {
				ok = -1;
				*why = "it keeps the map in a register";
				break;
			}
			reg_step(&r, in, fd);
			k++;
			continue;
		}
		if ((cls == BPF_JMP || cls == BPF_JMP32) && BPF_OP(in->code) == BPF_CALL && IN(r.map, BPF_REG_1)) {
			if (in->imm == BPF_FUNC_map_lookup_elem && IN(r.fp_ok, 2)) {
				if ((ok = lookup_adds(insns, n, k, fd, r, r.fp[2], key_size, value_size, upd, why)))
					break;
			} else if (!(in->imm == BPF_FUNC_map_update_elem && (upd[k] || const_insert(&r, value_size)))) {
				ok = -1;
				*why = "it updates or deletes other than by adding";
				break;
			}
		} else if (r.map && (cls == BPF_ALU64 || cls == BPF_ALU || cls == BPF_STX) &&
			   (IN(r.map, in->src_reg) && BPF_SRC(in->code) == BPF_X)) {
			ok = -1;
			*why = "it passes the map on";
			break;
		}
		reg_step(&r, in, fd);
	}
	free(upd);
	return ok;
}

/* ---- the fold ---- */

static struct fold_map {
	uint32_t kid;
	int kfd, prog_fd;        /* the kernel map and its fold program (internal fds) */
	struct shm_map *sm;      /* the twins' bpfshim map */
	uint32_t ks8, vwords, ncpu;
	uint32_t cap;            /* folded so far, by key: open addressing */
	uint8_t *keys, *used;
	uint64_t *done;
	pthread_mutex_t lock;
} fmaps[FOLD_MAPS];
static unsigned n_fmaps;
static pthread_mutex_t fmaps_lock = PTHREAD_MUTEX_INITIALIZER;
/* The process that folds: a fork child has a copy of what was folded, and
 * folding from it too would add the same counts twice. */
static pid_t fold_pid;

#define INSN(c, d, s, o, i) ((struct bpf_insn){ .code = (c), .dst_reg = (d), .src_reg = (s), .off = (o), .imm = (i) })

/* A raw tracepoint program, run by BPF_PROG_TEST_RUN: ctx = key (ks8
 * bytes) then vwords u64 deltas; adds them to the kernel's value of that
 * key (this CPU's, for a per-CPU map), atomically, inserting the key when
 * it is new (BPF_NOEXIST, and a second lookup when a kernel program
 * inserted it first). r0 = 1 when it could not. Not a syscall program: a
 * sleepable one is freed only after an RCU tasks-trace grace period, and
 * the kernel map it holds would outlive the tool, visibly (bpftool). */
/* shim.h */
int shim_kernel_rawtp_load(const struct bpf_insn *p, int n, const char *name)
{
	union bpf_attr a;

	memset(&a, 0, sizeof(a));
	a.prog_type = BPF_PROG_TYPE_RAW_TRACEPOINT;
	a.insns = (uint64_t)(uintptr_t)p;
	a.insn_cnt = (uint32_t)n;
	a.license = (uint64_t)(uintptr_t)"GPL";
	strncpy(a.prog_name, name, sizeof(a.prog_name) - 1);
	long fd = real.syscall(SYS_bpf, BPF_PROG_LOAD, &a, sizeof(a));
	if (fd < 0)
		return -1;
	int hi = real.fcntl((int)fd, F_DUPFD_CLOEXEC, SHIM_FD_MIN);
	real.close((int)fd);
	return hi;
}

static int fold_prog(int kfd, uint32_t ks8, uint32_t vwords)
{
	struct bpf_insn p[4 * (CTX_MAX / 8) + 40];
	int n = 0, j_add, j_ins, j_re;
	int16_t key = -(int16_t)ks8, val = (int16_t)(key - (int16_t)(8 * vwords));

	/* r1 = the map, r2 = the key on the stack (then a lookup or an update) */
#define LD_MAP_KEY() do { p[n++] = INSN(BPF_LD | BPF_IMM | BPF_DW, BPF_REG_1, BPF_PSEUDO_MAP_FD, 0, kfd); \
			  p[n++] = INSN(0, 0, 0, 0, 0); \
			  p[n++] = INSN(BPF_ALU64 | BPF_MOV | BPF_X, BPF_REG_2, BPF_REG_10, 0, 0); \
			  p[n++] = INSN(BPF_ALU64 | BPF_ADD | BPF_K, BPF_REG_2, 0, 0, key); } while (0)
	p[n++] = INSN(BPF_ALU64 | BPF_MOV | BPF_X, BPF_REG_6, BPF_REG_1, 0, 0);
	for (uint32_t w = 0; w < ks8 / 8; w++) {
		p[n++] = INSN(BPF_LDX | BPF_MEM | BPF_DW, BPF_REG_1, BPF_REG_6, (int16_t)(8 * w), 0);
		p[n++] = INSN(BPF_STX | BPF_MEM | BPF_DW, BPF_REG_10, BPF_REG_1, (int16_t)(key + 8 * w), 0);
	}
	LD_MAP_KEY();
	p[n++] = INSN(BPF_JMP | BPF_CALL, 0, 0, 0, BPF_FUNC_map_lookup_elem);
	j_add = n;
	p[n++] = INSN(BPF_JMP | BPF_JNE | BPF_K, BPF_REG_0, 0, 0, 0);           /* -> add */
	for (uint32_t w = 0; w < vwords; w++) {
		p[n++] = INSN(BPF_LDX | BPF_MEM | BPF_DW, BPF_REG_1, BPF_REG_6, (int16_t)(ks8 + 8 * w), 0);
		p[n++] = INSN(BPF_STX | BPF_MEM | BPF_DW, BPF_REG_10, BPF_REG_1, (int16_t)(val + 8 * w), 0);
	}
	LD_MAP_KEY();
	p[n++] = INSN(BPF_ALU64 | BPF_MOV | BPF_X, BPF_REG_3, BPF_REG_10, 0, 0);
	p[n++] = INSN(BPF_ALU64 | BPF_ADD | BPF_K, BPF_REG_3, 0, 0, val);
	p[n++] = INSN(BPF_ALU64 | BPF_MOV | BPF_K, BPF_REG_4, 0, 0, BPF_NOEXIST);
	p[n++] = INSN(BPF_JMP | BPF_CALL, 0, 0, 0, BPF_FUNC_map_update_elem);
	j_ins = n;
	p[n++] = INSN(BPF_JMP | BPF_JEQ | BPF_K, BPF_REG_0, 0, 0, 0);           /* -> done */
	LD_MAP_KEY();
	p[n++] = INSN(BPF_JMP | BPF_CALL, 0, 0, 0, BPF_FUNC_map_lookup_elem);
	j_re = n;
	p[n++] = INSN(BPF_JMP | BPF_JEQ | BPF_K, BPF_REG_0, 0, 0, 0);           /* -> failed */
	p[j_add].off = (int16_t)(n - j_add - 1);
	for (uint32_t w = 0; w < vwords; w++) {
		p[n++] = INSN(BPF_LDX | BPF_MEM | BPF_DW, BPF_REG_1, BPF_REG_6, (int16_t)(ks8 + 8 * w), 0);
		p[n++] = INSN(BPF_STX | BPF_ATOMIC | BPF_DW, BPF_REG_0, BPF_REG_1, (int16_t)(8 * w), BPF_ADD);
	}
	p[j_ins].off = (int16_t)(n - j_ins - 1);
	p[n++] = INSN(BPF_ALU64 | BPF_MOV | BPF_K, BPF_REG_0, 0, 0, 0);
	p[n++] = INSN(BPF_JMP | BPF_EXIT, 0, 0, 0, 0);
	p[j_re].off = (int16_t)(n - j_re - 1);
	p[n++] = INSN(BPF_ALU64 | BPF_MOV | BPF_K, BPF_REG_0, 0, 0, 1);
	p[n++] = INSN(BPF_JMP | BPF_EXIT, 0, 0, 0, 0);
#undef LD_MAP_KEY
	return shim_kernel_rawtp_load(p, n, "bpfshim_fold");
}

/* The folded-so-far words of key k (inserted as zeros), or NULL when full. */
static uint64_t *done_of(struct fold_map *f, const uint8_t *k)
{
	uint64_t h = 1469598103934665603ull;

	for (uint32_t i = 0; i < f->ks8; i++)
		h = (h ^ k[i]) * 1099511628211ull;
	for (uint32_t n = 0, i = (uint32_t)(h % f->cap); n < f->cap; n++, i = (i + 1) % f->cap) {
		if (!f->used[i]) {
			f->used[i] = 1;
			memcpy(f->keys + (size_t)i * f->ks8, k, f->ks8);
			return memset(f->done + (size_t)i * f->vwords, 0, 8 * f->vwords);
		}
		if (!memcmp(f->keys + (size_t)i * f->ks8, k, f->ks8))
			return f->done + (size_t)i * f->vwords;
	}
	return NULL;
}

static void fold_one(struct fold_map *f)
{
	uint8_t key[KEY_MAX] = { 0 }, next[KEY_MAX] = { 0 };
	uint64_t ctx[CTX_MAX / 8], *vals;
	size_t stride = 8 * f->vwords;
	int have = 0;

	if (getpid() != fold_pid)
		return;
	vals = malloc(stride * f->ncpu);
	if (!vals)
		return;
	pthread_mutex_lock(&f->lock);
	for (uint32_t it = 0; it <= f->sm->attr.max_entries; it++) {
		if (f->sm->ops->get_next_key(f->sm, have ? key : NULL, next))
			break;
		have = 1;
		memcpy(key, next, f->ks8);
		if (f->sm->ops->sys_lookup(f->sm, next, vals, 0))
			continue;
		uint64_t *d = done_of(f, next), any = 0;
		if (!d)
			break;
		memset(ctx, 0, sizeof(ctx));
		memcpy(ctx, next, f->sm->attr.key_size);
		for (uint32_t w = 0; w < f->vwords; w++) {
			uint64_t sum = 0;
			for (uint32_t c = 0; c < f->ncpu; c++)
				sum += vals[(size_t)c * f->vwords + w];
			ctx[f->ks8 / 8 + w] = sum - d[w];
			any |= sum - d[w];
		}
		if (!any)
			continue;
		union bpf_attr a;
		memset(&a, 0, sizeof(a));
		a.test.prog_fd = (uint32_t)f->prog_fd;
		a.test.ctx_in = (uint64_t)(uintptr_t)ctx;
		a.test.ctx_size_in = f->ks8 + (uint32_t)stride;
		if (!real.syscall(SYS_bpf, BPF_PROG_TEST_RUN, &a, sizeof(a)) && !a.test.retval)
			for (uint32_t w = 0; w < f->vwords; w++)
				d[w] += ctx[f->ks8 / 8 + w];
	}
	pthread_mutex_unlock(&f->lock);
	free(vals);
}

static struct rt_thread folder;
static int folder_started;

static int folder_main(struct rt_thread *t)
{
	while (!rt_thread_stopping(t)) {
		unsigned n = __atomic_load_n(&n_fmaps, __ATOMIC_ACQUIRE);
		for (unsigned i = 0; i < n; i++)
			fold_one(&fmaps[i]);
		rt_thread_wait(t, FOLD_MS);
	}
	return RT_THREAD_STOPPED;
}

/* The map types folded (plain arrays are the kernel's memory: hybrid.c) */
int shim_fold_type(uint32_t type)
{
	return type == BPF_MAP_TYPE_HASH || type == BPF_MAP_TYPE_PERCPU_HASH || type == BPF_MAP_TYPE_PERCPU_ARRAY;
}

/* Whether every use of kernel hash map fd `fd` in a twin's instructions
 * adds to its values: 0, else -1 with why. */
int shim_fold_adds_only(const struct bpf_insn *insns, uint32_t n, int fd, const struct bpf_map_info *ki,
			const char **why)
{
	*why = "its map type is not shared with user space yet";
	if (!shim_fold_type(ki->type) || ki->value_size % 8 ||
	    ((ki->key_size + 7) & ~7u) + ki->value_size > CTX_MAX)
		return -1;
	return adds_only(insns, n, fd, ki->key_size, ki->value_size, why);
}

/* The bpfshim map twins count into in place of kernel hash map kfd (info
 * ki), folded into it from now on: its fd (an internal one), else -1 with
 * why. Once per kernel map (hybrid.c keeps them by id). */
int shim_fold_map(int kfd, const struct bpf_map_info *ki, const char **why)
{
	struct fold_map *f;
	long sfd = -1;
	int pfd = -1, kdup = -1;
	uint32_t ks8 = (ki->key_size + 7) & ~7u;

	pthread_mutex_lock(&fmaps_lock);
	*why = "bpfshim cannot make a map for it";
	if (n_fmaps == FOLD_MAPS || (n_fmaps && fold_pid != getpid()))
		goto fail;           /* (a fork child: its parent folds the maps it has) */
	struct shim_fd *e;
	if ((sfd = shim_hybrid_map_like(ki, ki->map_flags & BPF_F_NO_PREALLOC, &e)) < 0)
		goto fail;
	kdup = real.fcntl(kfd, F_DUPFD_CLOEXEC, SHIM_FD_MIN);
	*why = "the kernel refuses its fold program";
	if (kdup < 0 || (pfd = fold_prog(kdup, ks8, ki->value_size / 8)) < 0)
		goto fail;
	f = &fmaps[n_fmaps];
	memset(f, 0, sizeof(*f));
	f->kid = ki->id;
	f->kfd = kdup;
	f->prog_fd = pfd;
	pfd = -1;
	f->sm = &e->map;
	f->ks8 = ks8;
	f->vwords = ki->value_size / 8;
	f->ncpu = ki->type != BPF_MAP_TYPE_HASH ? e->map.attr.nr_cpus : 1;
	f->cap = 2 * ki->max_entries + 1;
	f->keys = calloc(f->cap, f->ks8);
	f->used = calloc(f->cap, 1);
	f->done = calloc(f->cap, 8 * f->vwords);
	pthread_mutex_init(&f->lock, NULL);
	*why = "out of memory";
	if (f->prog_fd < 0 || !f->keys || !f->used || !f->done)
		goto fail;
	if (!n_fmaps)
		fold_pid = getpid();
	__atomic_store_n(&n_fmaps, n_fmaps + 1, __ATOMIC_RELEASE);
	if (!folder_started) {
		folder.fn = folder_main;
		folder_started = !rt_thread_start(&folder);
	}
	pthread_mutex_unlock(&fmaps_lock);
	return (int)sfd;
fail:
	if (sfd >= 0)
		shim_fd_close_internal((int)sfd);
	if (kdup >= 0)
		real.close(kdup);
	pthread_mutex_unlock(&fmaps_lock);
	return -1;
}

/* Whether any kernel map has twins that fold into it (shim_fold_map). */
int shim_fold_maps(void)
{
	return __atomic_load_n(&n_fmaps, __ATOMIC_ACQUIRE) != 0;
}

/* Before this loader reads the kernel map `info` describes (lookup, next
 * key, batch): what the twins counted is in it. */
void shim_fold_before_read(const struct bpf_map_info *info)
{
	unsigned n = __atomic_load_n(&n_fmaps, __ATOMIC_ACQUIRE);

	for (unsigned i = 0; i < n; i++)
		if (fmaps[i].kid == info->id)
			fold_one(&fmaps[i]);
}

/* SPDX-License-Identifier: MIT */
/*
 * The eBPF interpreter: the whole ISA with the semantics of the kernel's
 * ___bpf_prog_run() after the verifier's rewrites (division by zero gives 0,
 * modulo by zero leaves dst, signed division of INT_MIN by -1 gives INT_MIN
 * and the modulo 0, shifts are masked, 32-bit results are zero-extended).
 * Always available; the reference for the AOT engine.
 *
 * A program is decoded once (bpf_interp_prepare) into one 16-byte op per
 * instruction: the handler's address, dst and src as byte offsets into the
 * register file, a lddw's 64-bit value resolved. Dispatch is a computed goto
 * through the op's handler: decoding the fields and indexing a table by
 * opcode at every instruction was most of the cost of one. Jump offsets and
 * instruction indexes (bpf-to-bpf calls, callbacks) are the program's own.
 * A few frequent sequences run as one op (superinstructions, fuse()).
 * bpf-to-bpf calls and callbacks recurse with a fresh 512-byte stack frame,
 * at most BPF_RT_MAX_CALL_FRAMES deep. Memory accesses are
 * plain loads and stores: a program that touches what it must not faults,
 * and bpf_prog_run() contains the fault. An instruction the loader should
 * have refused (unknown opcodes, kfunc calls, a missing helper) ends the
 * run as a fault too. Jumps with a negative offset decode
 * to handlers of their own that count the run budget when taken (bpf_rt.h).
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <signal.h>
#include <string.h>
#include "bpf_rt.h"
#include "helpers/helpers.h"

/* Newer than the 6.1 uapi copy. */
#ifndef BPF_MEMSX
#define BPF_MEMSX 0x80
#endif
#ifndef BPF_JCOND
#define BPF_JCOND 0xe0
#endif
#ifndef BPF_LOAD_ACQ
#define BPF_LOAD_ACQ 0x100
#define BPF_STORE_REL 0x110
#endif
#define BPF_MAX_LOOPS (8 * 1024 * 1024) /* may_goto budget per frame */

/* Unaligned, aliasing-safe views for the memory instructions. */
typedef uint16_t u16_ua __attribute__((aligned(1), may_alias));
typedef uint32_t u32_ua __attribute__((aligned(1), may_alias));
typedef uint64_t u64_ua __attribute__((aligned(1), may_alias));
typedef int16_t s16_ua __attribute__((aligned(1), may_alias));
typedef int32_t s32_ua __attribute__((aligned(1), may_alias));

/* One decoded instruction. The second slot of a lddw holds the value and
 * faults if jumped to, as the kernel would refuse that jump. */
struct bpf_interp_op {
	const void *handler;
	union {
		struct {
			uint8_t dst, src;   /* dst_reg, src_reg times 8 */
			int16_t off;
			int32_t imm;
		};
		uint64_t imm64;
	};
};

/* Handlers the opcode alone does not pick, after the 256 opcodes in run()'s
 * table: variants, and the superinstructions of fuse(). */
enum {
	H_MOVSX64 = 256,   /* ALU64 MOV X with off != 0 */
	H_MOVSX32,
	H_PSEUDO_CALL,     /* a bpf-to-bpf call (JMP CALL is a helper call) */
	H_BAD,
	H_ZEXT,            /* r <<= 32; r >>= 32 */
	H_MOV_ZEXT,        /* r = s; r <<= 32; r >>= 32 */
	H_LDDW_ADD,        /* r = lddw; r' += s' */
	/* by BPF_OP(code) >> 4 of a JMP K condition: */
	H_ADD_JMP,         /* r += k; if r' op k' goto */
	H_SEL = H_ADD_JMP + 16,   /* if r op k goto L; r' = k'; L: (or r' = k'; ja L) */
	H_ADD_JMP_B = H_SEL + 16, /* H_ADD_JMP whose jump is a back edge */
	/* by opcode: a jump with a negative offset, which counts the run's
	 * budget when taken (bpf_rt_backedge_tick); forward jumps cost nothing */
	H_BACK = H_ADD_JMP_B + 16,
	H_MAX = H_BACK + 256
};

static inline int tail_call_pending(void)
{
	const struct bpf_run_ctx *rc = bpf_cur_run_ctx;

	return rc && rc->tail_call_next;
}

/* The budget's check (bpf_rt.h), with the frame's count handed over. */
__attribute__((noinline, cold)) static int32_t backedge_slow(int32_t left)
{
	bpf_rt_backedges_left = left;
	bpf_rt_backedge();
	return bpf_rt_backedges_left;
}

static inline const bpf_helper_fn *helper_table(const struct bpf_prog_rt *prog)
{
	return prog->env.helpers ? prog->env.helpers : bpf_helpers;
}

/* One frame: runs from `op` until BPF_EXIT (or a pending tail call) with
 * r1..r5 given. They come by value: copying them from an array its caller
 * has just stored stalls on store forwarding (wide loads of narrow stores),
 * which was most of the cost of a short program. With prog NULL it returns
 * its handler table instead, for bpf_interp_prepare. */
static uint64_t run(const struct bpf_prog_rt *prog, const struct bpf_interp_op *op, uint64_t r1, uint64_t r2,
		    uint64_t r3, uint64_t r4, uint64_t r5)
{
	uint64_t regs[11];
	uint64_t stack[BPF_RT_STACK_SIZE / 8];
	uint64_t may_goto_cnt = BPF_MAX_LOOPS;
	int32_t left;

#define ALU_OPS(OP) \
	[BPF_ALU64 | OP | BPF_X] = &&ALU64_##OP##_X, [BPF_ALU64 | OP | BPF_K] = &&ALU64_##OP##_K, \
	[BPF_ALU | OP | BPF_X] = &&ALU_##OP##_X, [BPF_ALU | OP | BPF_K] = &&ALU_##OP##_K
#define JMP_OPS(OP) \
	[BPF_JMP | OP | BPF_X] = &&JMP_##OP##_X, [BPF_JMP | OP | BPF_K] = &&JMP_##OP##_K, \
	[BPF_JMP32 | OP | BPF_X] = &&JMP32_##OP##_X, [BPF_JMP32 | OP | BPF_K] = &&JMP32_##OP##_K
#define FUSED_JMP_OPS(OP) [H_ADD_JMP + (OP >> 4)] = &&ADD_##OP, [H_SEL + (OP >> 4)] = &&SEL_##OP, \
	[H_ADD_JMP_B + (OP >> 4)] = &&ADD_B_##OP
#define BACK_OPS(OP) \
	[H_BACK + (BPF_JMP | OP | BPF_X)] = &&JMP_##OP##_X_B, [H_BACK + (BPF_JMP | OP | BPF_K)] = &&JMP_##OP##_K_B, \
	[H_BACK + (BPF_JMP32 | OP | BPF_X)] = &&JMP32_##OP##_X_B, [H_BACK + (BPF_JMP32 | OP | BPF_K)] = &&JMP32_##OP##_K_B
#define MEM_OPS(SZ) \
	[BPF_LDX | BPF_MEM | SZ] = &&LDX_##SZ, [BPF_ST | BPF_MEM | SZ] = &&ST_##SZ, \
	[BPF_STX | BPF_MEM | SZ] = &&STX_##SZ, [BPF_STX | BPF_ATOMIC | SZ] = &&ATOMIC_##SZ
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Woverride-init"
	static const void *const handlers[H_MAX] = {
		[0 ... H_MAX - 1] = &&bad_insn,
		ALU_OPS(BPF_ADD), ALU_OPS(BPF_SUB), ALU_OPS(BPF_MUL), ALU_OPS(BPF_DIV),
		ALU_OPS(BPF_OR), ALU_OPS(BPF_AND), ALU_OPS(BPF_LSH), ALU_OPS(BPF_RSH),
		ALU_OPS(BPF_MOD), ALU_OPS(BPF_XOR), ALU_OPS(BPF_MOV), ALU_OPS(BPF_ARSH),
		[BPF_ALU64 | BPF_NEG] = &&ALU64_NEG, [BPF_ALU | BPF_NEG] = &&ALU_NEG,
		[BPF_ALU | BPF_END | BPF_TO_LE] = &&ALU_END_LE, [BPF_ALU | BPF_END | BPF_TO_BE] = &&ALU_END_BE,
		[BPF_ALU64 | BPF_END | BPF_TO_LE] = &&ALU64_BSWAP,
		JMP_OPS(BPF_JEQ), JMP_OPS(BPF_JNE), JMP_OPS(BPF_JGT), JMP_OPS(BPF_JGE),
		JMP_OPS(BPF_JLT), JMP_OPS(BPF_JLE), JMP_OPS(BPF_JSET), JMP_OPS(BPF_JSGT),
		JMP_OPS(BPF_JSGE), JMP_OPS(BPF_JSLT), JMP_OPS(BPF_JSLE),
		[BPF_JMP | BPF_JA] = &&JMP_JA, [BPF_JMP32 | BPF_JA] = &&JMP32_JA,
		[BPF_JMP | BPF_JCOND] = &&JMP_JCOND,
		[BPF_JMP | BPF_CALL] = &&JMP_CALL, [BPF_JMP | BPF_CALL | BPF_X] = &&JMP_CALLX,
		[BPF_JMP | BPF_EXIT] = &&JMP_EXIT,
		MEM_OPS(BPF_B), MEM_OPS(BPF_H), MEM_OPS(BPF_W), MEM_OPS(BPF_DW),
		[BPF_LDX | BPF_MEMSX | BPF_B] = &&LDSX_B, [BPF_LDX | BPF_MEMSX | BPF_H] = &&LDSX_H,
		[BPF_LDX | BPF_MEMSX | BPF_W] = &&LDSX_W,
		[BPF_LD | BPF_IMM | BPF_DW] = &&LD_IMM_DW,
		[BPF_LD | BPF_ABS | BPF_B] = &&LD_ABS_B, [BPF_LD | BPF_ABS | BPF_H] = &&LD_ABS_H,
		[BPF_LD | BPF_ABS | BPF_W] = &&LD_ABS_W, [BPF_LD | BPF_IND | BPF_B] = &&LD_IND_B,
		[BPF_LD | BPF_IND | BPF_H] = &&LD_IND_H, [BPF_LD | BPF_IND | BPF_W] = &&LD_IND_W,
		[H_MOVSX64] = &&MOVSX64, [H_MOVSX32] = &&MOVSX32, [H_PSEUDO_CALL] = &&PSEUDO_CALL,
		[H_ZEXT] = &&ZEXT, [H_MOV_ZEXT] = &&MOV_ZEXT, [H_LDDW_ADD] = &&LDDW_ADD,
		FUSED_JMP_OPS(BPF_JEQ), FUSED_JMP_OPS(BPF_JNE), FUSED_JMP_OPS(BPF_JGT), FUSED_JMP_OPS(BPF_JGE),
		FUSED_JMP_OPS(BPF_JLT), FUSED_JMP_OPS(BPF_JLE), FUSED_JMP_OPS(BPF_JSGT), FUSED_JMP_OPS(BPF_JSGE),
		FUSED_JMP_OPS(BPF_JSLT), FUSED_JMP_OPS(BPF_JSLE),
		BACK_OPS(BPF_JEQ), BACK_OPS(BPF_JNE), BACK_OPS(BPF_JGT), BACK_OPS(BPF_JGE),
		BACK_OPS(BPF_JLT), BACK_OPS(BPF_JLE), BACK_OPS(BPF_JSET), BACK_OPS(BPF_JSGT),
		BACK_OPS(BPF_JSGE), BACK_OPS(BPF_JSLT), BACK_OPS(BPF_JSLE),
		[H_BACK + (BPF_JMP | BPF_JA)] = &&JMP_JA_B, [H_BACK + (BPF_JMP32 | BPF_JA)] = &&JMP32_JA_B,
	};
#pragma GCC diagnostic pop
#undef ALU_OPS
#undef JMP_OPS
#undef FUSED_JMP_OPS
#undef BACK_OPS
#undef MEM_OPS

#define REG(off) (*(uint64_t *)((char *)regs + (off)))
#define DST REG(op->dst)
#define SRC REG(op->src)
#define IMM op->imm
#define OFF op->off
#define CONT ({ op++; goto *op->handler; })
/* The budget counter lives in `left` while this frame runs (a register: the
 * thread's variable costs a load and a store per back edge), and in
 * bpf_rt_backedges_left across calls and returns. */
#define TICK() do { if (__builtin_expect(--left <= 0, 0)) left = backedge_slow(left); } while (0)
#define BACK(c) do { if (c) { op += OFF; TICK(); } } while (0)
#define LEFT_OUT() (bpf_rt_backedges_left = left)
#define LEFT_IN() (left = bpf_rt_backedges_left)

	if (__builtin_expect(!prog, 0))
		return (uint64_t)(uintptr_t)handlers;
	regs[0] = 0;
	regs[1] = r1;
	regs[2] = r2;
	regs[3] = r3;
	regs[4] = r4;
	regs[5] = r5;
	regs[10] = (uint64_t)(uintptr_t)(stack + BPF_RT_STACK_SIZE / 8);
	LEFT_IN();
	goto *op->handler;

	/* ---- ALU ---- */
#define ALU(OP, EXPR)                                                                       \
	ALU64_##OP##_X: DST = DST EXPR SRC; CONT;                                           \
	ALU64_##OP##_K: DST = DST EXPR (uint64_t)(int64_t)IMM; CONT;                        \
	ALU_##OP##_X: DST = (uint32_t)((uint32_t)DST EXPR (uint32_t)SRC); CONT;             \
	ALU_##OP##_K: DST = (uint32_t)((uint32_t)DST EXPR (uint32_t)IMM); CONT;
	ALU(BPF_ADD, +)
	ALU(BPF_SUB, -)
	ALU(BPF_AND, &)
	ALU(BPF_OR, |)
	ALU(BPF_XOR, ^)
	ALU(BPF_MUL, *)
#undef ALU
#define SHIFT(OP, EXPR64, EXPR32)                                                          \
	ALU64_##OP##_X: DST = EXPR64(DST, SRC & 63); CONT;                                  \
	ALU64_##OP##_K: DST = EXPR64(DST, IMM & 63); CONT;                                  \
	ALU_##OP##_X: DST = (uint32_t)EXPR32((uint32_t)DST, SRC & 31); CONT;                \
	ALU_##OP##_K: DST = (uint32_t)EXPR32((uint32_t)DST, IMM & 31); CONT;
#define LSH(a, n) ((a) << (n))
#define RSH(a, n) ((a) >> (n))
#define ARSH64(a, n) ((uint64_t)((int64_t)(a) >> (n)))
#define ARSH32(a, n) ((uint32_t)((int32_t)(a) >> (n)))
	SHIFT(BPF_LSH, LSH, LSH)
	SHIFT(BPF_RSH, RSH, RSH)
	SHIFT(BPF_ARSH, ARSH64, ARSH32)
#undef SHIFT
	ALU64_NEG: DST = 0 - DST; CONT;
	ALU_NEG: DST = (uint32_t)(0 - (uint32_t)DST); CONT;
	ALU64_BPF_MOV_X: DST = SRC; CONT;
	ALU64_BPF_MOV_K: DST = (uint64_t)(int64_t)IMM; CONT;
	ALU_BPF_MOV_X: DST = (uint32_t)SRC; CONT;
	ALU_BPF_MOV_K: DST = (uint32_t)IMM; CONT;
	MOVSX64:
		switch (OFF) {
		case 8: DST = (uint64_t)(int64_t)(int8_t)SRC; break;
		case 16: DST = (uint64_t)(int64_t)(int16_t)SRC; break;
		case 32: DST = (uint64_t)(int64_t)(int32_t)SRC; break;
		default: DST = SRC; break;
		}
		CONT;
	MOVSX32:
		switch (OFF) {
		case 8: DST = (uint32_t)(int32_t)(int8_t)SRC; break;
		case 16: DST = (uint32_t)(int32_t)(int16_t)SRC; break;
		default: DST = (uint32_t)SRC; break;
		}
		CONT;
	/* Division: off = 1 is signed (sdiv/smod). The kernel's interpreter
	 * divides by 0 as 0 and leaves dst for a modulo by 0 (the verifier's
	 * rewrite); INT_MIN / -1 is INT_MIN and INT_MIN % -1 is 0 (div64_s64
	 * on x86 would trap; the kernel's JIT special-cases -1 the same way). */
#define DIV64(v) do {                                                                       \
		uint64_t s_ = (v);                                                          \
		if (!s_) DST = 0;                                                           \
		else if (OFF != 1) DST = DST / s_;                                          \
		else if ((int64_t)s_ == -1) DST = 0 - DST;                                  \
		else DST = (uint64_t)((int64_t)DST / (int64_t)s_);                          \
	} while (0)
#define MOD64(v) do {                                                                       \
		uint64_t s_ = (v);                                                          \
		if (!s_) break;                                                             \
		else if (OFF != 1) DST = DST % s_;                                          \
		else if ((int64_t)s_ == -1) DST = 0;                                        \
		else DST = (uint64_t)((int64_t)DST % (int64_t)s_);                          \
	} while (0)
#define DIV32(v) do {                                                                       \
		uint32_t s_ = (v), d_ = (uint32_t)DST;                                      \
		if (!s_) DST = 0;                                                           \
		else if (OFF != 1) DST = d_ / s_;                                           \
		else if ((int32_t)s_ == -1) DST = (uint32_t)(0 - d_);                       \
		else DST = (uint32_t)((int32_t)d_ / (int32_t)s_);                           \
	} while (0)
#define MOD32(v) do {                                                                       \
		uint32_t s_ = (v), d_ = (uint32_t)DST;                                      \
		if (!s_) DST = d_;                                                          \
		else if (OFF != 1) DST = d_ % s_;                                           \
		else if ((int32_t)s_ == -1) DST = 0;                                        \
		else DST = (uint32_t)((int32_t)d_ % (int32_t)s_);                           \
	} while (0)
	ALU64_BPF_DIV_X: DIV64(SRC); CONT;
	ALU64_BPF_DIV_K: DIV64((uint64_t)(int64_t)IMM); CONT;
	ALU64_BPF_MOD_X: MOD64(SRC); CONT;
	ALU64_BPF_MOD_K: MOD64((uint64_t)(int64_t)IMM); CONT;
	ALU_BPF_DIV_X: DIV32((uint32_t)SRC); CONT;
	ALU_BPF_DIV_K: DIV32((uint32_t)IMM); CONT;
	ALU_BPF_MOD_X: MOD32((uint32_t)SRC); CONT;
	ALU_BPF_MOD_K: MOD32((uint32_t)IMM); CONT;

	/* Byte order: class ALU converts from/to little (truncation on x86) or
	 * big endian; class ALU64 TO_LE is the unconditional bswap. */
	ALU_END_LE:
		switch (IMM) {
		case 16: DST = (uint16_t)DST; break;
		case 32: DST = (uint32_t)DST; break;
		case 64: break;
		default: goto bad_insn;
		}
		CONT;
	ALU_END_BE:
	ALU64_BSWAP:
		switch (IMM) {
		case 16: DST = __builtin_bswap16((uint16_t)DST); break;
		case 32: DST = __builtin_bswap32((uint32_t)DST); break;
		case 64: DST = __builtin_bswap64(DST); break;
		default: goto bad_insn;
		}
		CONT;

	/* ---- jumps ---- */
	JMP_JA: op += OFF; CONT;
	JMP32_JA: op += IMM; CONT;   /* gotol */
	JMP_JA_B: op += OFF; TICK(); CONT;
	JMP32_JA_B: op += IMM; TICK(); CONT;
/* Superinstructions: ADD_ is a loop counter and its test; SEL_ a conditional
 * move of a constant, without the data-dependent branch whose mispredictions
 * were most of what it cost. */
#define COND(OP, UT64, UT32, CMP)                                                           \
	JMP_##OP##_X: if ((UT64)DST CMP (UT64)SRC) op += OFF; CONT;                         \
	JMP_##OP##_K: if ((UT64)DST CMP (UT64)(int64_t)IMM) op += OFF; CONT;                \
	JMP32_##OP##_X: if ((UT32)DST CMP (UT32)SRC) op += OFF; CONT;                       \
	JMP32_##OP##_K: if ((UT32)DST CMP (UT32)IMM) op += OFF; CONT;                       \
	JMP_##OP##_X_B: BACK((UT64)DST CMP (UT64)SRC); CONT;                                \
	JMP_##OP##_K_B: BACK((UT64)DST CMP (UT64)(int64_t)IMM); CONT;                       \
	JMP32_##OP##_X_B: BACK((UT32)DST CMP (UT32)SRC); CONT;                              \
	JMP32_##OP##_K_B: BACK((UT32)DST CMP (UT32)IMM); CONT;                              \
	ADD_##OP:                                                                           \
		DST += (uint64_t)(int64_t)IMM;                                              \
		op++;                                                                       \
		if ((UT64)DST CMP (UT64)(int64_t)IMM) op += OFF;                            \
		CONT;                                                                       \
	ADD_B_##OP:                                                                         \
		DST += (uint64_t)(int64_t)IMM;                                              \
		op++;                                                                       \
		BACK((UT64)DST CMP (UT64)(int64_t)IMM);                                     \
		CONT;                                                                       \
	SEL_##OP: {   /* a mask: gcc would branch on a ?: */                               \
		uint64_t keep_ = -(uint64_t)((UT64)DST CMP (UT64)(int64_t)IMM);             \
		REG(op[1].dst) = (REG(op[1].dst) & keep_) | ((uint64_t)(int64_t)op[1].imm & ~keep_); \
		op += OFF;                                                                  \
		CONT;                                                                       \
	}
	COND(BPF_JEQ, uint64_t, uint32_t, ==)
	COND(BPF_JNE, uint64_t, uint32_t, !=)
	COND(BPF_JGT, uint64_t, uint32_t, >)
	COND(BPF_JGE, uint64_t, uint32_t, >=)
	COND(BPF_JLT, uint64_t, uint32_t, <)
	COND(BPF_JLE, uint64_t, uint32_t, <=)
	COND(BPF_JSGT, int64_t, int32_t, >)
	COND(BPF_JSGE, int64_t, int32_t, >=)
	COND(BPF_JSLT, int64_t, int32_t, <)
	COND(BPF_JSLE, int64_t, int32_t, <=)
#undef COND
	JMP_BPF_JSET_X: if (DST & SRC) op += OFF; CONT;
	JMP_BPF_JSET_K: if (DST & (uint64_t)(int64_t)IMM) op += OFF; CONT;
	JMP32_BPF_JSET_X: if ((uint32_t)DST & (uint32_t)SRC) op += OFF; CONT;
	JMP32_BPF_JSET_K: if ((uint32_t)DST & (uint32_t)IMM) op += OFF; CONT;
	JMP_BPF_JSET_X_B: BACK(DST & SRC); CONT;
	JMP_BPF_JSET_K_B: BACK(DST & (uint64_t)(int64_t)IMM); CONT;
	JMP32_BPF_JSET_X_B: BACK((uint32_t)DST & (uint32_t)SRC); CONT;
	JMP32_BPF_JSET_K_B: BACK((uint32_t)DST & (uint32_t)IMM); CONT;
	JMP_JCOND:   /* may_goto, as the verifier rewrites it: a loop budget */
		if (!may_goto_cnt) {
			op += OFF;
			if (OFF < 0)
				TICK();
		} else {
			may_goto_cnt--;
		}
		CONT;

	/* ---- calls ---- */
	PSEUDO_CALL:   /* a subprogram: new frame, r1-r5 passed, r6-r9 kept here */
		if (bpf_rt_call_depth + 1 >= BPF_RT_MAX_CALL_FRAMES)
			bpf_rt_fault(SIGSEGV);   /* the kernel refuses it at load */
		bpf_rt_call_depth++;
		LEFT_OUT();
		regs[0] = run(prog, op + IMM + 1, regs[1], regs[2], regs[3], regs[4], regs[5]);
		LEFT_IN();
		bpf_rt_call_depth--;
		if (tail_call_pending())
			return regs[0];
		CONT;
	JMP_CALL: {
		bpf_helper_fn fn = (uint32_t)IMM < BPF_RT_HELPER_MAX ? helper_table(prog)[IMM] : NULL;
		if (!fn)
			goto bad_insn;
		LEFT_OUT();   /* bpf_loop's callbacks count */
		regs[0] = fn(regs[1], regs[2], regs[3], regs[4], regs[5]);
		LEFT_IN();
		/* bpf_tail_call: the run loop continues with the target */
		if (IMM == BPF_FUNC_tail_call && tail_call_pending())
			return regs[0];
		CONT;
	}
	JMP_CALLX: {   /* callx: the helper id in dst */
		bpf_helper_fn fn = DST < BPF_RT_HELPER_MAX ? helper_table(prog)[DST] : NULL;
		uint64_t id = DST;
		if (!fn)
			goto bad_insn;
		LEFT_OUT();
		regs[0] = fn(regs[1], regs[2], regs[3], regs[4], regs[5]);
		LEFT_IN();
		if (id == BPF_FUNC_tail_call && tail_call_pending())
			return regs[0];
		CONT;
	}
	JMP_EXIT:
		LEFT_OUT();
		return regs[0];

	/* ---- memory ---- */
	LDX_BPF_B: DST = *(const uint8_t *)(uintptr_t)(SRC + OFF); CONT;
	LDX_BPF_H: DST = *(const u16_ua *)(uintptr_t)(SRC + OFF); CONT;
	LDX_BPF_W: DST = *(const u32_ua *)(uintptr_t)(SRC + OFF); CONT;
	LDX_BPF_DW: DST = *(const u64_ua *)(uintptr_t)(SRC + OFF); CONT;
	LDSX_B: DST = (uint64_t)(int64_t)*(const int8_t *)(uintptr_t)(SRC + OFF); CONT;
	LDSX_H: DST = (uint64_t)(int64_t)*(const s16_ua *)(uintptr_t)(SRC + OFF); CONT;
	LDSX_W: DST = (uint64_t)(int64_t)*(const s32_ua *)(uintptr_t)(SRC + OFF); CONT;
	ST_BPF_B: *(uint8_t *)(uintptr_t)(DST + OFF) = (uint8_t)IMM; CONT;
	ST_BPF_H: *(u16_ua *)(uintptr_t)(DST + OFF) = (uint16_t)IMM; CONT;
	ST_BPF_W: *(u32_ua *)(uintptr_t)(DST + OFF) = (uint32_t)IMM; CONT;
	ST_BPF_DW: *(u64_ua *)(uintptr_t)(DST + OFF) = (uint64_t)(int64_t)IMM; CONT;
	STX_BPF_B: *(uint8_t *)(uintptr_t)(DST + OFF) = (uint8_t)SRC; CONT;
	STX_BPF_H: *(u16_ua *)(uintptr_t)(DST + OFF) = (uint16_t)SRC; CONT;
	STX_BPF_W: *(u32_ua *)(uintptr_t)(DST + OFF) = (uint32_t)SRC; CONT;
	STX_BPF_DW: *(u64_ua *)(uintptr_t)(DST + OFF) = SRC; CONT;

	/* Atomics (BPF_STX | BPF_XADD is the same opcode with imm = BPF_ADD).
	 * 32-bit results are zero-extended, as the kernel's (u32) casts. */
#define ATOMIC(SZ, T)                                                                       \
	ATOMIC_##SZ: {                                                                      \
		T *p_ = (T *)(uintptr_t)(DST + OFF);                                        \
		T v_ = (T)SRC;                                                              \
		switch (IMM) {                                                              \
		case BPF_ADD: __atomic_fetch_add(p_, v_, __ATOMIC_SEQ_CST); break;         \
		case BPF_AND: __atomic_fetch_and(p_, v_, __ATOMIC_SEQ_CST); break;         \
		case BPF_OR: __atomic_fetch_or(p_, v_, __ATOMIC_SEQ_CST); break;           \
		case BPF_XOR: __atomic_fetch_xor(p_, v_, __ATOMIC_SEQ_CST); break;         \
		case BPF_ADD | BPF_FETCH: SRC = __atomic_fetch_add(p_, v_, __ATOMIC_SEQ_CST); break; \
		case BPF_AND | BPF_FETCH: SRC = __atomic_fetch_and(p_, v_, __ATOMIC_SEQ_CST); break; \
		case BPF_OR | BPF_FETCH: SRC = __atomic_fetch_or(p_, v_, __ATOMIC_SEQ_CST); break;   \
		case BPF_XOR | BPF_FETCH: SRC = __atomic_fetch_xor(p_, v_, __ATOMIC_SEQ_CST); break; \
		case BPF_XCHG: SRC = __atomic_exchange_n(p_, v_, __ATOMIC_SEQ_CST); break; \
		case BPF_CMPXCHG: {                                                         \
			T old_ = (T)regs[0];                                                \
			__atomic_compare_exchange_n(p_, &old_, v_, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST); \
			regs[0] = old_;                                                     \
			break;                                                              \
		}                                                                           \
		case BPF_LOAD_ACQ: DST = __atomic_load_n((T *)(uintptr_t)(SRC + OFF), __ATOMIC_ACQUIRE); break; \
		case BPF_STORE_REL: __atomic_store_n(p_, v_, __ATOMIC_RELEASE); break;     \
		default: goto bad_insn;                                                     \
		}                                                                           \
		CONT;                                                                       \
	}
	ATOMIC(BPF_W, uint32_t)
	ATOMIC(BPF_DW, uint64_t)
#undef ATOMIC
	/* 8- and 16-bit: only load-acquire / store-release exist */
	ATOMIC_BPF_B:
		if (IMM == BPF_LOAD_ACQ)
			DST = __atomic_load_n((uint8_t *)(uintptr_t)(SRC + OFF), __ATOMIC_ACQUIRE);
		else if (IMM == BPF_STORE_REL)
			__atomic_store_n((uint8_t *)(uintptr_t)(DST + OFF), (uint8_t)SRC, __ATOMIC_RELEASE);
		else
			goto bad_insn;
		CONT;
	ATOMIC_BPF_H:
		if (IMM == BPF_LOAD_ACQ)
			DST = __atomic_load_n((uint16_t *)(uintptr_t)(SRC + OFF), __ATOMIC_ACQUIRE);
		else if (IMM == BPF_STORE_REL)
			__atomic_store_n((uint16_t *)(uintptr_t)(DST + OFF), (uint16_t)SRC, __ATOMIC_RELEASE);
		else
			goto bad_insn;
		CONT;

	LD_IMM_DW: DST = op[1].imm64; op++; CONT;

	/* LD_ABS/LD_IND as the kernel's rewrite (bpf_gen_ld_abs): the skb in
	 * r6, the offset imm or src + imm as an int; out of the packet the
	 * frame exits with r0 = 0. */
#define LD_PKT(NAME, SZ, OFFSET) NAME: {                                                    \
		int64_t v_ = bpf_rt_ld_abs((const void *)(uintptr_t)regs[6], (int32_t)(OFFSET), SZ); \
		if (v_ < 0) {                                                               \
			regs[0] = 0;                                                        \
			goto JMP_EXIT;                                                      \
		}                                                                           \
		regs[0] = (uint64_t)v_;                                                     \
		CONT;                                                                       \
	}
	LD_PKT(LD_ABS_B, 1, IMM)
	LD_PKT(LD_ABS_H, 2, IMM)
	LD_PKT(LD_ABS_W, 4, IMM)
	LD_PKT(LD_IND_B, 1, SRC + (uint64_t)(int64_t)IMM)
	LD_PKT(LD_IND_H, 2, SRC + (uint64_t)(int64_t)IMM)
	LD_PKT(LD_IND_W, 4, SRC + (uint64_t)(int64_t)IMM)
#undef LD_PKT

	/* ---- superinstructions (fuse) ---- */
	ZEXT: DST = (uint32_t)DST; op++; CONT;
	MOV_ZEXT: DST = (uint32_t)SRC; op += 2; CONT;
	LDDW_ADD: DST = op[1].imm64; op += 2; DST += SRC; CONT;

	bad_insn:
		bpf_rt_fault(SIGILL);
#undef REG
#undef DST
#undef SRC
#undef IMM
#undef OFF
#undef CONT
#undef BACK
#undef TICK
#undef LEFT_OUT
#undef LEFT_IN
}

/* The value of the lddw at insn; -EINVAL for one that faults when run: a map
 * the program does not have, a value it cannot take the address of, an
 * unknown src_reg, no second half. */
static int lddw_value(const struct bpf_prog_rt *prog, const struct bpf_insn *insn, uint64_t *v)
{
	uint32_t i = (uint32_t)insn->imm;

	if (insn + 1 >= prog->insns + prog->insn_cnt)
		return -EINVAL;
	switch (insn->src_reg) {
	case 0:
		*v = (uint64_t)i | (uint64_t)(uint32_t)insn[1].imm << 32;
		return 0;
	case BPF_PSEUDO_MAP_IDX:
		if (i >= prog->nr_maps)
			return -EINVAL;
		*v = (uint64_t)(uintptr_t)prog->maps[i];
		return 0;
	case BPF_PSEUDO_MAP_IDX_VALUE:
		if (i >= prog->nr_maps || !prog->map_values || !prog->map_values[i])
			return -EINVAL;
		*v = (uint64_t)(uintptr_t)prog->map_values[i] + (uint32_t)insn[1].imm;
		return 0;
	case BPF_PSEUDO_FUNC:   /* a callback: its insn index, tagged */
		*v = BPF_RT_CB_INSN_TAG | (uint64_t)(insn + 1 + insn->imm - prog->insns);
		return 0;
	}
	return -EINVAL;
}

/* The handler index of insn (lddw's value aside). */
static unsigned handler_of(const struct bpf_insn *insn)
{
	if (insn->dst_reg > BPF_REG_10 || insn->src_reg > BPF_REG_10)
		return H_BAD;
	switch (insn->code) {
	case BPF_ALU64 | BPF_MOV | BPF_X:
		return insn->off ? H_MOVSX64 : insn->code;
	case BPF_ALU | BPF_MOV | BPF_X:
		return insn->off ? H_MOVSX32 : insn->code;
	case BPF_JMP | BPF_CALL:
		return insn->src_reg == BPF_PSEUDO_CALL ? H_PSEUDO_CALL : insn->src_reg ? H_BAD : insn->code;
	case BPF_JMP | BPF_JCOND:
		return insn->src_reg ? H_BAD : insn->code;
	case BPF_JMP32 | BPF_JA:   /* gotol: the offset is imm */
		return insn->imm < 0 ? H_BACK + insn->code : insn->code;
	}
	if ((BPF_CLASS(insn->code) == BPF_JMP || BPF_CLASS(insn->code) == BPF_JMP32) && insn->off < 0 &&
	    BPF_OP(insn->code) != BPF_CALL && BPF_OP(insn->code) != BPF_EXIT)
		return H_BACK + insn->code;   /* bad_insn for an opcode without a back variant */
	return insn->code;
}

/* Superinstructions, for what compilers emit in loops: the op at i does the
 * work of the ops after it too and skips them. Those stay as decoded, so a
 * jump to one of them runs it alone. */
static void fuse(const struct bpf_prog_rt *prog, const void *const *handlers, struct bpf_interp_op *ops)
{
	const struct bpf_insn *in = prog->insns;
	uint32_t n = prog->insn_cnt;

/* insn i + k is CODE and decoded to its plain handler */
#define IS(k, CODE) (i + (k) < n && in[i + (k)].code == (CODE) && ops[i + (k)].handler == handlers[CODE])
#define IS_BACK(k, CODE) (i + (k) < n && in[i + (k)].code == (CODE) && ops[i + (k)].handler == handlers[H_BACK + (CODE)])
#define ZEXT_AT(k) (IS(k, BPF_ALU64 | BPF_LSH | BPF_K) && in[i + (k)].imm == 32 &&                       \
		    IS((k) + 1, BPF_ALU64 | BPF_RSH | BPF_K) && in[i + (k) + 1].imm == 32 &&               \
		    in[i + (k) + 1].dst_reg == in[i + (k)].dst_reg)
/* insn i + k is a JMP K condition with superinstructions */
#define COND_K(k) (i + (k) < n && BPF_CLASS(in[i + (k)].code) == BPF_JMP && BPF_SRC(in[i + (k)].code) == BPF_K && \
		   handlers[H_SEL + (BPF_OP(in[i + (k)].code) >> 4)] != handlers[H_BAD] && IS(k, in[i + (k)].code))
#define COND_K_BACK(k) (i + (k) < n && BPF_CLASS(in[i + (k)].code) == BPF_JMP && BPF_SRC(in[i + (k)].code) == BPF_K && \
			handlers[H_ADD_JMP_B + (BPF_OP(in[i + (k)].code) >> 4)] != handlers[H_BAD] && \
			IS_BACK(k, in[i + (k)].code))
	for (uint32_t i = 0; i < n; i++) {
		unsigned h = 0;

		if (ZEXT_AT(0))
			h = H_ZEXT;
		else if (IS(0, BPF_ALU64 | BPF_MOV | BPF_X) && ZEXT_AT(1) && in[i + 1].dst_reg == in[i].dst_reg)
			h = H_MOV_ZEXT;
		else if (IS(0, BPF_LD | BPF_IMM | BPF_DW) && IS(2, BPF_ALU64 | BPF_ADD | BPF_X))
			h = H_LDDW_ADD;
		else if (IS(0, BPF_ALU64 | BPF_ADD | BPF_K) && COND_K(1))
			h = H_ADD_JMP + (BPF_OP(in[i + 1].code) >> 4);
		else if (IS(0, BPF_ALU64 | BPF_ADD | BPF_K) && COND_K_BACK(1))
			h = H_ADD_JMP_B + (BPF_OP(in[i + 1].code) >> 4);
		else if (COND_K(0) && IS(1, BPF_ALU64 | BPF_MOV | BPF_K) &&
			 (in[i].off == 1 || (IS(2, BPF_JMP | BPF_JA) && in[i + 2].off == in[i].off - 2)))
			h = H_SEL + (BPF_OP(in[i].code) >> 4);
		if (h)
			ops[i].handler = handlers[h];
	}
#undef IS
#undef IS_BACK
#undef ZEXT_AT
#undef COND_K
#undef COND_K_BACK
}

int bpf_interp_prepare(struct bpf_prog_rt *prog)
{
	const void *const *handlers = (const void *const *)(uintptr_t)run(NULL, NULL, 0, 0, 0, 0, 0);
	/* one op more: falling off the end faults */
	struct bpf_interp_op *ops = calloc(prog->insn_cnt + 1, sizeof(*ops));

	if (!ops)
		return -ENOMEM;
	for (uint32_t i = 0; i < prog->insn_cnt; i++) {
		const struct bpf_insn *insn = &prog->insns[i];

		ops[i] = (struct bpf_interp_op){ .handler = handlers[handler_of(insn)], .dst = insn->dst_reg * 8,
						 .src = insn->src_reg * 8, .off = insn->off, .imm = insn->imm };
		if (insn->code == (BPF_LD | BPF_IMM | BPF_DW)) {
			uint64_t v = 0;
			if (lddw_value(prog, insn, &v))
				ops[i].handler = handlers[H_BAD];
			if (++i < prog->insn_cnt)
				ops[i] = (struct bpf_interp_op){ .handler = handlers[H_BAD], .imm64 = v };
		}
	}
	ops[prog->insn_cnt].handler = handlers[H_BAD];
	fuse(prog, handlers, ops);
	prog->interp_ops = ops;
	return 0;
}

void bpf_interp_release(struct bpf_prog_rt *prog)
{
	free((void *)prog->interp_ops);
	prog->interp_ops = NULL;
}

uint64_t bpf_interp_call(const struct bpf_prog_rt *prog, uint64_t insn_idx, uint64_t r1, uint64_t r2,
			 uint64_t r3, uint64_t r4, uint64_t r5)
{
	uint64_t r0;

	insn_idx &= ~BPF_RT_CB_INSN_TAG;
	/* no ops: a tagged value an AOT program made up */
	if (!prog->interp_ops || insn_idx >= prog->insn_cnt || bpf_rt_call_depth + 1 >= BPF_RT_MAX_CALL_FRAMES)
		bpf_rt_fault(SIGSEGV);
	bpf_rt_call_depth++;
	r0 = run(prog, prog->interp_ops + insn_idx, r1, r2, r3, r4, r5);
	bpf_rt_call_depth--;
	return r0;
}

BPFSHIM_API uint64_t bpf_interp_run(const struct bpf_prog_rt *prog, uint64_t r1)
{
	return run(prog, prog->interp_ops, r1, 0, 0, 0, 0);
}

uint64_t bpf_interp_run2(const struct bpf_prog_rt *prog, uint64_t r1, uint64_t r2)
{
	return run(prog, prog->interp_ops, r1, r2, 0, 0, 0);
}

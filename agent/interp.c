/* SPDX-License-Identifier: MIT */
/*
 * The eBPF interpreter: the whole ISA with the semantics of the kernel's
 * ___bpf_prog_run() after the verifier's rewrites (division by zero gives
 * 0, modulo by zero leaves dst, signed division by -1 negates, shifts are
 * masked, 32-bit results are zero-extended). Always available; the
 * reference for the AOT engine.
 *
 * Dispatch is a computed goto over the opcode byte. bpf-to-bpf calls recurse
 * with a fresh 512-byte frame, at most BPF_RT_MAX_CALL_FRAMES deep. A
 * program that reads or writes where it must not faults, and the fault is
 * contained by bpf_prog_run().
 */
#include <stdint.h>
#include <string.h>
#include "bpf_rt.h"

#ifndef BPF_MEMSX
#define BPF_MEMSX 0x80
#endif
#define BPF_LOAD_ACQ 0x100
#define BPF_STORE_REL 0x110

struct frame_ctx {
	const struct bpf_prog_rt *prog;
	int depth;
};

static uint64_t run(const struct frame_ctx *fc, uint32_t pc, const uint64_t args[5]);

static inline uint64_t bswap_n(uint64_t v, int32_t bits)
{
	switch (bits) {
	case 16: return __builtin_bswap16((uint16_t)v);
	case 32: return __builtin_bswap32((uint32_t)v);
	default: return __builtin_bswap64(v);
	}
}

static inline uint64_t trunc_n(uint64_t v, int32_t bits)
{
	switch (bits) {
	case 16: return (uint16_t)v;
	case 32: return (uint32_t)v;
	default: return v;
	}
}

static inline int64_t sdiv64(int64_t a, int64_t b) { return b == -1 ? (int64_t)(0 - (uint64_t)a) : a / b; }
static inline int64_t smod64(int64_t a, int64_t b) { return b == -1 ? 0 : a % b; }
static inline int32_t sdiv32(int32_t a, int32_t b) { return b == -1 ? (int32_t)(0 - (uint32_t)a) : a / b; }
static inline int32_t smod32(int32_t a, int32_t b) { return b == -1 ? 0 : a % b; }

static inline int tail_call_pending(void)
{
	const struct bpf_run_ctx *rc = bpf_cur_run_ctx;
	return rc && rc->tail_call_next;
}

static uint64_t run(const struct frame_ctx *fc, uint32_t pc, const uint64_t args[5])
{
	const struct bpf_insn *insn = fc->prog->insns, *ip;
	uint64_t r[11];
	uint64_t stack[BPF_RT_STACK_SIZE / 8];
	uint64_t s, d;

	memset(r, 0, sizeof(r));
	for (int i = 0; i < 5; i++)
		r[i + 1] = args[i];
	r[10] = (uint64_t)(uintptr_t)(stack + BPF_RT_STACK_SIZE / 8);

	for (;;) {
		ip = &insn[pc++];
		uint8_t code = ip->code;
		uint8_t dst = ip->dst_reg, src = ip->src_reg;
		int16_t off = ip->off;
		int32_t imm = ip->imm;

		switch (code) {
		/* ---- ALU64 ---- */
#define ALU64(OP, EXPR)                                                   \
		case BPF_ALU64 | OP | BPF_K: s = (uint64_t)(int64_t)imm; d = r[dst]; r[dst] = (EXPR); break; \
		case BPF_ALU64 | OP | BPF_X: s = r[src]; d = r[dst]; r[dst] = (EXPR); break;
		ALU64(BPF_ADD, d + s)
		ALU64(BPF_SUB, d - s)
		ALU64(BPF_MUL, d * s)
		ALU64(BPF_OR, d | s)
		ALU64(BPF_AND, d & s)
		ALU64(BPF_XOR, d ^ s)
		ALU64(BPF_LSH, d << (s & 63))
		ALU64(BPF_RSH, d >> (s & 63))
		ALU64(BPF_ARSH, (uint64_t)((int64_t)d >> (s & 63)))
		ALU64(BPF_DIV, off ? (s ? (uint64_t)sdiv64((int64_t)d, (int64_t)s) : 0) : (s ? d / s : 0))
		ALU64(BPF_MOD, off ? (s ? (uint64_t)smod64((int64_t)d, (int64_t)s) : d) : (s ? d % s : d))
#undef ALU64
		case BPF_ALU64 | BPF_MOV | BPF_K:
			r[dst] = (uint64_t)(int64_t)imm;
			break;
		case BPF_ALU64 | BPF_MOV | BPF_X:
			switch (off) {
			case 8: r[dst] = (uint64_t)(int64_t)(int8_t)r[src]; break;
			case 16: r[dst] = (uint64_t)(int64_t)(int16_t)r[src]; break;
			case 32: r[dst] = (uint64_t)(int64_t)(int32_t)r[src]; break;
			default: r[dst] = r[src]; break;
			}
			break;
		case BPF_ALU64 | BPF_NEG:
			r[dst] = 0 - r[dst];
			break;
		case BPF_ALU64 | BPF_END | BPF_TO_LE:   /* bswap, unconditional */
			r[dst] = bswap_n(r[dst], imm);
			break;

		/* ---- ALU (32-bit, zero-extended) ---- */
#define ALU32(OP, EXPR)                                                   \
		case BPF_ALU | OP | BPF_K: { uint32_t s32 = (uint32_t)imm, d32 = (uint32_t)r[dst]; r[dst] = (uint32_t)(EXPR); break; } \
		case BPF_ALU | OP | BPF_X: { uint32_t s32 = (uint32_t)r[src], d32 = (uint32_t)r[dst]; r[dst] = (uint32_t)(EXPR); break; }
		ALU32(BPF_ADD, d32 + s32)
		ALU32(BPF_SUB, d32 - s32)
		ALU32(BPF_MUL, d32 * s32)
		ALU32(BPF_OR, d32 | s32)
		ALU32(BPF_AND, d32 & s32)
		ALU32(BPF_XOR, d32 ^ s32)
		ALU32(BPF_LSH, d32 << (s32 & 31))
		ALU32(BPF_RSH, d32 >> (s32 & 31))
		ALU32(BPF_ARSH, (uint32_t)((int32_t)d32 >> (s32 & 31)))
		ALU32(BPF_DIV, off ? (s32 ? (uint32_t)sdiv32((int32_t)d32, (int32_t)s32) : 0) : (s32 ? d32 / s32 : 0))
		ALU32(BPF_MOD, off ? (s32 ? (uint32_t)smod32((int32_t)d32, (int32_t)s32) : d32) : (s32 ? d32 % s32 : d32))
#undef ALU32
		case BPF_ALU | BPF_MOV | BPF_K:
			r[dst] = (uint32_t)imm;
			break;
		case BPF_ALU | BPF_MOV | BPF_X:
			switch (off) {
			case 8: r[dst] = (uint32_t)(int32_t)(int8_t)r[src]; break;
			case 16: r[dst] = (uint32_t)(int32_t)(int16_t)r[src]; break;
			default: r[dst] = (uint32_t)r[src]; break;
			}
			break;
		case BPF_ALU | BPF_NEG:
			r[dst] = (uint32_t)(0 - (uint32_t)r[dst]);
			break;
		case BPF_ALU | BPF_END | BPF_TO_LE:
			r[dst] = trunc_n(r[dst], imm);
			break;
		case BPF_ALU | BPF_END | BPF_TO_BE:
			r[dst] = bswap_n(r[dst], imm);
			break;

		/* ---- jumps ---- */
		case BPF_JMP | BPF_JA:
			pc += off;
			break;
		case BPF_JMP32 | BPF_JA:   /* gotol */
			pc += imm;
			break;
#define JMP(OP, CMP64, CMP32)                                                        \
		case BPF_JMP | OP | BPF_K: s = (uint64_t)(int64_t)imm; d = r[dst]; if (CMP64) pc += off; break; \
		case BPF_JMP | OP | BPF_X: s = r[src]; d = r[dst]; if (CMP64) pc += off; break;             \
		case BPF_JMP32 | OP | BPF_K: s = (uint32_t)imm; d = (uint32_t)r[dst]; if (CMP32) pc += off; break; \
		case BPF_JMP32 | OP | BPF_X: s = (uint32_t)r[src]; d = (uint32_t)r[dst]; if (CMP32) pc += off; break;
		JMP(BPF_JEQ, d == s, d == s)
		JMP(BPF_JNE, d != s, d != s)
		JMP(BPF_JGT, d > s, d > s)
		JMP(BPF_JGE, d >= s, d >= s)
		JMP(BPF_JLT, d < s, d < s)
		JMP(BPF_JLE, d <= s, d <= s)
		JMP(BPF_JSET, d & s, d & s)
		JMP(BPF_JSGT, (int64_t)d > (int64_t)s, (int32_t)d > (int32_t)s)
		JMP(BPF_JSGE, (int64_t)d >= (int64_t)s, (int32_t)d >= (int32_t)s)
		JMP(BPF_JSLT, (int64_t)d < (int64_t)s, (int32_t)d < (int32_t)s)
		JMP(BPF_JSLE, (int64_t)d <= (int64_t)s, (int32_t)d <= (int32_t)s)
#undef JMP
		case BPF_JMP | BPF_CALL:
			if (src == 1) {   /* BPF_PSEUDO_CALL: a subprogram, in a new frame */
				struct frame_ctx sub = { fc->prog, fc->depth + 1 };
				if (sub.depth >= BPF_RT_MAX_CALL_FRAMES)
					__builtin_trap();   /* the kernel refuses such programs at load */
				r[0] = run(&sub, (uint32_t)((int32_t)pc + imm), &r[1]);
			} else {
				bpf_helper_fn fn = (uint32_t)imm < BPF_RT_HELPER_MAX ? fc->prog->env.helpers[imm] : NULL;
				if (!fn)
					__builtin_trap();
				r[0] = fn(r[1], r[2], r[3], r[4], r[5]);
			}
			if (imm == BPF_FUNC_tail_call && !src && tail_call_pending())
				return r[0];
			if (src == 1 && tail_call_pending())
				return r[0];
			break;
		case BPF_JMP | BPF_CALL | BPF_X: {   /* callx: the helper id in dst */
			uint64_t id = r[dst];
			bpf_helper_fn fn = id < BPF_RT_HELPER_MAX ? fc->prog->env.helpers[id] : NULL;
			if (!fn)
				__builtin_trap();
			r[0] = fn(r[1], r[2], r[3], r[4], r[5]);
			break;
		}
		case BPF_JMP | BPF_EXIT:
			return r[0];

		/* ---- memory ---- */
#define LDX(SZ, T) case BPF_LDX | BPF_MEM | SZ: { T v; memcpy(&v, (const void *)(uintptr_t)(r[src] + off), sizeof(v)); r[dst] = v; break; }
		LDX(BPF_B, uint8_t)
		LDX(BPF_H, uint16_t)
		LDX(BPF_W, uint32_t)
		LDX(BPF_DW, uint64_t)
#undef LDX
#define LDSX(SZ, T) case BPF_LDX | BPF_MEMSX | SZ: { T v; memcpy(&v, (const void *)(uintptr_t)(r[src] + off), sizeof(v)); r[dst] = (uint64_t)(int64_t)v; break; }
		LDSX(BPF_B, int8_t)
		LDSX(BPF_H, int16_t)
		LDSX(BPF_W, int32_t)
#undef LDSX
#define ST(SZ, T) case BPF_ST | BPF_MEM | SZ: { T v = (T)(int64_t)imm; memcpy((void *)(uintptr_t)(r[dst] + off), &v, sizeof(v)); break; }
		ST(BPF_B, uint8_t)
		ST(BPF_H, uint16_t)
		ST(BPF_W, uint32_t)
		ST(BPF_DW, uint64_t)
#undef ST
#define STX(SZ, T) case BPF_STX | BPF_MEM | SZ: { T v = (T)r[src]; memcpy((void *)(uintptr_t)(r[dst] + off), &v, sizeof(v)); break; }
		STX(BPF_B, uint8_t)
		STX(BPF_H, uint16_t)
		STX(BPF_W, uint32_t)
		STX(BPF_DW, uint64_t)
#undef STX
		case BPF_STX | BPF_ATOMIC | BPF_W: {
			uint32_t *p = (uint32_t *)(uintptr_t)(r[dst] + off), old, v = (uint32_t)r[src];
			switch (imm) {
			case BPF_ADD: __atomic_fetch_add(p, v, __ATOMIC_SEQ_CST); break;
			case BPF_OR: __atomic_fetch_or(p, v, __ATOMIC_SEQ_CST); break;
			case BPF_AND: __atomic_fetch_and(p, v, __ATOMIC_SEQ_CST); break;
			case BPF_XOR: __atomic_fetch_xor(p, v, __ATOMIC_SEQ_CST); break;
			case BPF_ADD | BPF_FETCH: r[src] = __atomic_fetch_add(p, v, __ATOMIC_SEQ_CST); break;
			case BPF_OR | BPF_FETCH: r[src] = __atomic_fetch_or(p, v, __ATOMIC_SEQ_CST); break;
			case BPF_AND | BPF_FETCH: r[src] = __atomic_fetch_and(p, v, __ATOMIC_SEQ_CST); break;
			case BPF_XOR | BPF_FETCH: r[src] = __atomic_fetch_xor(p, v, __ATOMIC_SEQ_CST); break;
			case BPF_XCHG: r[src] = __atomic_exchange_n(p, v, __ATOMIC_SEQ_CST); break;
			case BPF_CMPXCHG:
				old = (uint32_t)r[0];
				__atomic_compare_exchange_n(p, &old, v, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
				r[0] = old;
				break;
			case BPF_LOAD_ACQ: r[dst] = __atomic_load_n((uint32_t *)(uintptr_t)(r[src] + off), __ATOMIC_ACQUIRE); break;
			case BPF_STORE_REL: __atomic_store_n(p, v, __ATOMIC_RELEASE); break;
			default: __builtin_trap();
			}
			break;
		}
		case BPF_STX | BPF_ATOMIC | BPF_DW: {
			uint64_t *p = (uint64_t *)(uintptr_t)(r[dst] + off), old, v = r[src];
			switch (imm) {
			case BPF_ADD: __atomic_fetch_add(p, v, __ATOMIC_SEQ_CST); break;
			case BPF_OR: __atomic_fetch_or(p, v, __ATOMIC_SEQ_CST); break;
			case BPF_AND: __atomic_fetch_and(p, v, __ATOMIC_SEQ_CST); break;
			case BPF_XOR: __atomic_fetch_xor(p, v, __ATOMIC_SEQ_CST); break;
			case BPF_ADD | BPF_FETCH: r[src] = __atomic_fetch_add(p, v, __ATOMIC_SEQ_CST); break;
			case BPF_OR | BPF_FETCH: r[src] = __atomic_fetch_or(p, v, __ATOMIC_SEQ_CST); break;
			case BPF_AND | BPF_FETCH: r[src] = __atomic_fetch_and(p, v, __ATOMIC_SEQ_CST); break;
			case BPF_XOR | BPF_FETCH: r[src] = __atomic_fetch_xor(p, v, __ATOMIC_SEQ_CST); break;
			case BPF_XCHG: r[src] = __atomic_exchange_n(p, v, __ATOMIC_SEQ_CST); break;
			case BPF_CMPXCHG:
				old = r[0];
				__atomic_compare_exchange_n(p, &old, v, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
				r[0] = old;
				break;
			case BPF_LOAD_ACQ: r[dst] = __atomic_load_n((uint64_t *)(uintptr_t)(r[src] + off), __ATOMIC_ACQUIRE); break;
			case BPF_STORE_REL: __atomic_store_n(p, v, __ATOMIC_RELEASE); break;
			default: __builtin_trap();
			}
			break;
		}
		case BPF_LD | BPF_IMM | BPF_DW: {
			uint64_t lo = (uint32_t)imm, hi = (uint32_t)insn[pc].imm;
			switch (src) {
			case 0: r[dst] = lo | hi << 32; break;
			case BPF_PSEUDO_MAP_IDX: r[dst] = (uint64_t)(uintptr_t)fc->prog->maps[imm]; break;
			case BPF_PSEUDO_MAP_IDX_VALUE:
				r[dst] = (uint64_t)(uintptr_t)fc->prog->map_values[imm] + (uint32_t)insn[pc].imm;
				break;
			case 4: /* BPF_PSEUDO_FUNC: the callback's instruction index (bpf_loop) */
				r[dst] = (uint64_t)((int64_t)pc + imm);
				break;
			default: __builtin_trap();   /* BTF_ID: not here */
			}
			pc++;
			break;
		}
		default:
			__builtin_trap();   /* LD_ABS/IND and anything the loader should have refused */
		}
	}
}

/* Call a subprogram of the running program (callbacks of bpf_loop). */
uint64_t bpf_interp_call(const struct bpf_prog_rt *prog, uint64_t insn_idx, uint64_t r1, uint64_t r2,
			 uint64_t r3, uint64_t r4, uint64_t r5)
{
	struct frame_ctx fc = { prog, 1 };
	uint64_t args[5] = { r1, r2, r3, r4, r5 };

	return run(&fc, (uint32_t)insn_idx, args);
}

BPFSHIM_API uint64_t bpf_interp_run(const struct bpf_prog_rt *prog, uint64_t r1)
{
	struct frame_ctx fc = { prog, 0 };
	uint64_t args[5] = { r1, 0, 0, 0, 0 };

	return run(&fc, 0, args);
}

/* The interpreter with explicit r1, r2 (the bpf_conformance convention). */
BPFSHIM_API uint64_t bpf_interp_run2(const struct bpf_prog_rt *prog, uint64_t r1, uint64_t r2)
{
	struct frame_ctx fc = { prog, 0 };
	uint64_t args[5] = { r1, r2, 0, 0, 0 };

	return run(&fc, 0, args);
}

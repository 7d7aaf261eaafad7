/* Integer log2 (branch-free shifts) of n 64-bit numbers, xor-folded. */
#include "../bench.h"

#define LOG2_N 512

struct log2_int_mem { u64 n, seed; u64 nums[LOG2_N]; };

static inline u64 log2_u32(u32 v)
{
	u32 shift, r;

	r = (v > 0xFFFF) << 4;
	v >>= r;
	shift = (v > 0xFF) << 3;
	v >>= shift;
	r |= shift;
	shift = (v > 0xF) << 2;
	v >>= shift;
	r |= shift;
	shift = (v > 0x3) << 1;
	v >>= shift;
	r |= shift;
	r |= (v >> 1);
	return r;
}

static inline u64 log2_u64(u64 v)
{
	u32 hi = v >> 32;

	return hi ? log2_u32(hi) + 32 : log2_u32(v);
}

BENCH(log2_int, struct log2_int_mem)
{
	u64 hash = mem->seed;   /* unknown to the verifier: its states then prune */

	for (u32 i = 0; i < LOG2_N && i < mem->n; i++)
		hash = hash * 31 + log2_u64(mem->nums[i]);
	return (u32)(hash ^ (hash >> 32));
}

#ifndef __bpf__
BENCH_INIT(log2_int, struct log2_int_mem)
{
	u64 s = 1;

	mem->n = LOG2_N;
	mem->seed = 17;
	for (u32 i = 0; i < LOG2_N; i++)
		mem->nums[i] = (bench_rand(&s) << 31 | bench_rand(&s)) >> (bench_rand(&s) % 64);
}
#endif

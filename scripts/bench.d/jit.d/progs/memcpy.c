/* A byte copy loop of n bytes, then a checksum of a few words of the copy. */
#include "../bench.h"

#define MEMCPY_N 4096

struct memcpy_mem { u64 n; u8 src[MEMCPY_N]; u8 dst[MEMCPY_N]; };

BENCH(memcpy, struct memcpy_mem)
{
	u32 i;

	for (i = 0; i < MEMCPY_N && i < mem->n; i++)
		mem->dst[i] = mem->src[i];
	return mem->dst[0] + mem->dst[MEMCPY_N / 2] + mem->dst[MEMCPY_N - 1] + i;
}

#ifndef __bpf__
BENCH_INIT(memcpy, struct memcpy_mem)
{
	u64 s = 2;

	mem->n = MEMCPY_N;
	for (u32 i = 0; i < MEMCPY_N; i++)
		mem->src[i] = (u8)bench_rand(&s);
}
#endif

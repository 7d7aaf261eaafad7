/* Two loads from memory and an add. */
#include "../bench.h"

struct memory_a_plus_b_mem { u32 a, b; };

BENCH(memory_a_plus_b, struct memory_a_plus_b_mem)
{
	return mem->a + mem->b;
}

#ifndef __bpf__
BENCH_INIT(memory_a_plus_b, struct memory_a_plus_b_mem)
{
	mem->a = 123456;
	mem->b = 654321;
}
#endif

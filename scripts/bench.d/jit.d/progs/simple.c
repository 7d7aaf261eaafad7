/* The call itself: returns 0. */
#include "../bench.h"

struct simple_mem { u32 unused; };

BENCH(simple, struct simple_mem)
{
	return 0;
}

#ifndef __bpf__
BENCH_INIT(simple, struct simple_mem) { mem->unused = 0; }
#endif

/* Primes below a limit, by trial division. */
#include "../bench.h"

#define PRIME_MAX 500

struct prime_mem { u32 limit; };

BENCH(prime, struct prime_mem)
{
	u32 cnt = 0;

	for (u32 i = 2; i < PRIME_MAX && i < mem->limit; i++) {
		u32 ok = 1;

		for (u32 j = 2; j * j <= i && ok; j++)
			if (i % j == 0)
				ok = 0;
		cnt += ok;
	}
	return cnt;
}

#ifndef __bpf__
BENCH_INIT(prime, struct prime_mem) { mem->limit = PRIME_MAX; }
#endif

/* strcmp of two strings that differ in their last character. */
#include "../bench.h"

#define STRCMP_N 4096

struct strcmp_mem { u8 a[STRCMP_N]; u8 b[STRCMP_N]; };

BENCH(strcmp, struct strcmp_mem)
{
	u32 i;

	for (i = 0; i < STRCMP_N - 1; i++)
		if (mem->a[i] != mem->b[i] || !mem->a[i])
			break;
	return (u32)(mem->a[i] - mem->b[i]) + i;
}

#ifndef __bpf__
BENCH_INIT(strcmp, struct strcmp_mem)
{
	u64 s = 3;

	for (u32 i = 0; i < STRCMP_N - 2; i++)
		mem->a[i] = mem->b[i] = 'a' + bench_rand(&s) % 26;
	mem->a[STRCMP_N - 2] = 'x';
	mem->b[STRCMP_N - 2] = 'y';
	mem->a[STRCMP_N - 1] = mem->b[STRCMP_N - 1] = 0;
}
#endif

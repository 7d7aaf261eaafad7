/* A 64-way switch on n values from memory (what a jump table or lookup
 * table serves natively; eBPF has no indirect jump). */
#include "../bench.h"

#define SWITCH_N 256

struct switch_mem { u32 n, seed; u32 vals[SWITCH_N]; };

BENCH(switch, struct switch_mem)
{
	u32 hash = mem->seed;   /* unknown to the verifier: its states then prune */

	for (u32 i = 0; i < SWITCH_N && i < mem->n; i++) {
		u32 val;

		switch (mem->vals[i]) {
		case 0: val = 10; break;
		case 1: val = 20; break;
		case 2: val = 12; break;
		case 3: val = 31; break;
		case 4: val = 50; break;
		case 5: val = 55; break;
		case 6: val = 19; break;
		case 7: val = 56; break;
		case 8: val = 43; break;
		case 9: val = 45; break;
		case 10: val = 0; break;
		case 11: val = 21; break;
		case 12: val = 1; break;
		case 13: val = 16; break;
		case 14: val = 8; break;
		case 15: val = 22; break;
		case 16: val = 11; break;
		case 17: val = 54; break;
		case 18: val = 53; break;
		case 19: val = 42; break;
		case 20: val = 24; break;
		case 21: val = 29; break;
		case 22: val = 18; break;
		case 23: val = 33; break;
		case 24: val = 30; break;
		case 25: val = 28; break;
		case 26: val = 49; break;
		case 27: val = 61; break;
		case 28: val = 44; break;
		case 29: val = 40; break;
		case 30: val = 17; break;
		case 31: val = 48; break;
		case 32: val = 38; break;
		case 33: val = 59; break;
		case 34: val = 62; break;
		case 35: val = 39; break;
		case 36: val = 14; break;
		case 37: val = 7; break;
		case 38: val = 36; break;
		case 39: val = 51; break;
		case 40: val = 46; break;
		case 41: val = 35; break;
		case 42: val = 47; break;
		case 43: val = 15; break;
		case 44: val = 57; break;
		case 45: val = 26; break;
		case 46: val = 27; break;
		case 47: val = 5; break;
		case 48: val = 2; break;
		case 49: val = 13; break;
		case 50: val = 32; break;
		case 51: val = 58; break;
		case 52: val = 37; break;
		case 53: val = 23; break;
		case 54: val = 6; break;
		case 55: val = 34; break;
		case 56: val = 52; break;
		case 57: val = 4; break;
		case 58: val = 3; break;
		case 59: val = 63; break;
		case 60: val = 25; break;
		case 61: val = 9; break;
		case 62: val = 60; break;
		case 63: val = 41; break;
		default: val = 114514; break;
		}
		hash = hash * 33 + val;
	}
	return hash;
}

#ifndef __bpf__
BENCH_INIT(switch, struct switch_mem)
{
	u64 s = 4;

	mem->n = SWITCH_N;
	mem->seed = 5381;
	for (u32 i = 0; i < SWITCH_N; i++)
		mem->vals[i] = bench_rand(&s) % 66;
}
#endif

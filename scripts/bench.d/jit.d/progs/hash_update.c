/* A loop of hash map lookups over 128 keys, incrementing found values and
 * inserting the missing keys (map helpers; natively a plain C hash table). */
#include "../bench.h"

#define HASH_KEYS 256
#define HASH_ENTRIES 1024

struct hash_update_mem { u32 n; u32 mult; };

BENCH_HASH(hash_update_map, u32, u64, HASH_ENTRIES);

BENCH(hash_update, struct hash_update_mem)
{
	u32 found = 0;

	for (u32 i = 0; i < HASH_KEYS && i < mem->n; i++) {
		u32 key = (i * mem->mult) % (HASH_ENTRIES / 8);
		u64 one = 1, *v;

		v = bpf_map_lookup_elem(&hash_update_map, &key);
		if (v) {
			__sync_fetch_and_add(v, 1);
			found++;
		} else {
			bpf_map_update_elem(&hash_update_map, &key, &one, BPF_ANY);
		}
	}
	return found;
}

#ifndef __bpf__
BENCH_INIT(hash_update, struct hash_update_mem)
{
	mem->n = HASH_KEYS;
	mem->mult = 2654435761u;
}
#endif

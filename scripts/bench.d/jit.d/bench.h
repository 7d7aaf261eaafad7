/* SPDX-License-Identifier: MIT */
/*
 * One source per benchmark program, built twice:
 *   clang -target bpf -O2  -> a tc (sched_cls) program whose input is its .data
 *                             section (one global, the program's memory);
 *   clang -O2 (native)     -> bench_<name>() on the same global, plus
 *                             bench_init_<name>() that fills it.
 * The harness fills the native memory, copies those bytes into the BPF
 * object's .data map before loading, and times both on the same input.
 *
 * BENCH(name, memtype) { body using `mem` }   the program, returns a u32
 * BENCH_INIT(name, memtype) { ... }            native only: fills *mem
 * BENCH_HASH(name, key, value, entries)        a hash map (native: a plain C table)
 *
 * Loops are bounded by constants so the kernel's verifier accepts them too.
 */
#ifndef BENCH_H
#define BENCH_H

typedef unsigned char u8;
typedef unsigned short u16;
typedef unsigned int u32;
typedef unsigned long long u64;

#ifdef __bpf__
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#define BENCH(name, memtype)                                                  \
	memtype name##_mem SEC(".data");                                      \
	char _license[] SEC("license") = "GPL";                               \
	static __always_inline u32 name##_body(memtype *mem);                 \
	SEC("tc") int bench(void *ctx) { return name##_body(&name##_mem); }   \
	static __always_inline u32 name##_body(memtype *mem)

#define BENCH_HASH(name, ktype, vtype, entries)                               \
	struct {                                                              \
		__uint(type, BPF_MAP_TYPE_HASH);                              \
		__uint(max_entries, entries);                                 \
		__type(key, ktype);                                           \
		__type(value, vtype);                                         \
	} name SEC(".maps")

#else /* native */
#include <stddef.h>

/* The native map behind BENCH_HASH (harness.c): a plain C hash table. */
struct native_map {
	u32 key_size, value_size, max_entries;
	void *impl;
};
void *native_map_lookup_elem(void *map, const void *key);
long native_map_update_elem(void *map, const void *key, const void *value, u64 flags);
#define bpf_map_lookup_elem native_map_lookup_elem
#define bpf_map_update_elem native_map_update_elem
#define BPF_ANY 0

#define BENCH(name, memtype)                                                  \
	memtype name##_mem;                                                   \
	void *const bench_mem_##name = &name##_mem;                           \
	const size_t bench_mem_size_##name = sizeof(memtype);                 \
	static inline u32 name##_body(memtype *mem);                          \
	__attribute__((noinline)) u32 bench_##name(void)                      \
	{ return name##_body(&name##_mem); }                                  \
	static inline u32 name##_body(memtype *mem)

#define BENCH_INIT(name, memtype) void bench_init_##name(memtype *mem)

#define BENCH_HASH(name, ktype, vtype, entries)                               \
	struct native_map name = { sizeof(ktype), sizeof(vtype), entries, 0 }

/* Deterministic input: the same bytes on every machine. */
static inline u64 bench_rand(u64 *s)
{
	*s = *s * 6364136223846793005ull + 1442695040888963407ull;
	return *s >> 33;
}
#endif

#endif

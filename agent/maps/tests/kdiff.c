/* SPDX-License-Identifier: MIT */
/*
 * Differential test of agent/maps against the running kernel: the same
 * map_create attrs and the same random element operations on a kernel map
 * (syscall(SYS_bpf)) and on a shm map, comparing errno and bytes. Needs
 * root (kernel maps). Build and run: agent/maps/tests/run.sh
 *
 * The element commands go through a copy of the dispatch the shim does
 * (libbpf_shim/map_cmds.c) so the ops are exercised as the shim uses them.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include "map.h"

static int failures, checks;
#define FAIL(...) do { failures++; fprintf(stderr, "FAIL: " __VA_ARGS__); fputc('\n', stderr); } while (0)

static long sys_bpf(int cmd, union bpf_attr *a)
{
	long r = syscall(SYS_bpf, cmd, a, sizeof(*a));
	return r < 0 ? -errno : r;
}

struct tmap {
	int kfd;
	struct shm_map m;
	void *seg;
	uint64_t seg_size;
	struct shm_map_attr a;
};

static int is_percpu(uint32_t t)
{
	return shm_map_facts(t)->percpu;
}

static size_t sys_vs(const struct shm_map_attr *a)
{
	if (is_percpu(a->map_type))
		return BPFSHIM_ROUND_UP((size_t)a->value_size, 8) * a->nr_cpus;
	return a->value_size;
}

/* What the server checks before shm_map_check_attr (cmd_map.py). */
static int server_checks(const struct shm_map_attr *a)
{
	if (a->map_type != BPF_MAP_TYPE_BLOOM_FILTER && a->map_extra)
		return -EINVAL;
	if ((a->map_flags & BPF_F_RDONLY) && (a->map_flags & BPF_F_WRONLY))
		return -EINVAL;
	return 0;
}

static int k_create(const struct shm_map_attr *a)
{
	union bpf_attr at;
	memset(&at, 0, sizeof(at));
	at.map_type = a->map_type;
	at.key_size = a->key_size;
	at.value_size = a->value_size;
	at.max_entries = a->max_entries;
	at.map_flags = a->map_flags;
	at.map_extra = a->map_extra;
	return (int)sys_bpf(BPF_MAP_CREATE, &at);
}

static int s_create(struct tmap *t, const struct shm_map_attr *a)
{
	int err = server_checks(a);
	if (!err)
		err = shm_map_check_attr(a);
	if (err)
		return err;
	t->seg_size = shm_map_seg_size(a);
	if (!t->seg_size)
		return -ENOMEM;
	t->seg = mmap(NULL, t->seg_size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (t->seg == MAP_FAILED)
		return -ENOMEM;
	err = shm_map_format(t->seg, t->seg_size, a, 1, "t");
	if (!err)
		err = shm_map_open(&t->m, t->seg, t->seg_size, -1);
	return err;
}

static void t_close(struct tmap *t)
{
	if (t->kfd >= 0)
		close(t->kfd);
	if (t->seg && t->seg != MAP_FAILED)
		munmap(t->seg, t->seg_size);
	memset(t, 0, sizeof(*t));
	t->kfd = -1;
}

static int t_create(struct tmap *t, struct shm_map_attr a)
{
	memset(t, 0, sizeof(*t));
	a.nr_cpus = shm_nr_possible_cpus();
	a.spin_lock_off = -1;
	t->a = a;
	t->kfd = k_create(&a);
	int s = s_create(t, &a);
	int k = t->kfd < 0 ? t->kfd : 0;
	checks++;
	if (k != s) {
		FAIL("create type=%u ks=%u vs=%u max=%u flags=%#x extra=%#llx: kernel %d shm %d", a.map_type,
		     a.key_size, a.value_size, a.max_entries, a.map_flags, (unsigned long long)a.map_extra, k, s);
		if (!s)
			munmap(t->seg, t->seg_size);
		if (!k)
			close(t->kfd);
		return -1;
	}
	return k;
}

/* ---- element ops: kernel ---- */
static int k_lookup(struct tmap *t, const void *key, void *val, uint64_t flags)
{
	union bpf_attr a = { .map_fd = t->kfd, .key = (uintptr_t)key, .value = (uintptr_t)val, .flags = flags };
	return (int)sys_bpf(BPF_MAP_LOOKUP_ELEM, &a);
}
static int k_update(struct tmap *t, const void *key, const void *val, uint64_t flags)
{
	union bpf_attr a = { .map_fd = t->kfd, .key = (uintptr_t)key, .value = (uintptr_t)val, .flags = flags };
	return (int)sys_bpf(BPF_MAP_UPDATE_ELEM, &a);
}
static int k_delete(struct tmap *t, const void *key)
{
	union bpf_attr a = { .map_fd = t->kfd, .key = (uintptr_t)key };
	return (int)sys_bpf(BPF_MAP_DELETE_ELEM, &a);
}
static int k_next(struct tmap *t, const void *key, void *next)
{
	union bpf_attr a = { .map_fd = t->kfd, .key = (uintptr_t)key, .next_key = (uintptr_t)next };
	return (int)sys_bpf(BPF_MAP_GET_NEXT_KEY, &a);
}
static int k_lad(struct tmap *t, const void *key, void *val, uint64_t flags)
{
	union bpf_attr a = { .map_fd = t->kfd, .key = (uintptr_t)key, .value = (uintptr_t)val, .flags = flags };
	return (int)sys_bpf(BPF_MAP_LOOKUP_AND_DELETE_ELEM, &a);
}

/* ---- element ops: shm, dispatched as libbpf_shim/map_cmds.c ---- */
static int qsb(uint32_t t)
{
	return t == BPF_MAP_TYPE_QUEUE || t == BPF_MAP_TYPE_STACK;
}
static int s_lookup(struct tmap *t, const void *key, void *val, uint64_t flags)
{
	struct shm_map *m = &t->m;
	uint32_t ty = t->a.map_type;
	if (flags & ~BPF_F_LOCK)
		return -EINVAL;
	if ((flags & BPF_F_LOCK) && t->a.spin_lock_off < 0)
		return -EINVAL;
	if (ty == BPF_MAP_TYPE_BLOOM_FILTER)
		return m->ops->peek(m, val);
	memset(val, 0, sys_vs(&t->a));
	if (qsb(ty))
		return m->ops->peek(m, val);
	return m->ops->sys_lookup ? m->ops->sys_lookup(m, key, val, flags) : -EOPNOTSUPP;
}
static int s_update(struct tmap *t, const void *key, const void *val, uint64_t flags)
{
	struct shm_map *m = &t->m;
	uint32_t ty = t->a.map_type;
	if ((flags & BPF_F_LOCK) && t->a.spin_lock_off < 0)
		return -EINVAL;
	if (qsb(ty) || ty == BPF_MAP_TYPE_BLOOM_FILTER)
		return m->ops->push(m, val, flags);
	return m->ops->sys_update ? m->ops->sys_update(m, key, val, flags) : -EOPNOTSUPP;
}
static int s_delete(struct tmap *t, const void *key)
{
	return t->m.ops->sys_delete ? t->m.ops->sys_delete(&t->m, key) : -EINVAL;
}
static int s_next(struct tmap *t, const void *key, void *next)
{
	return t->m.ops->get_next_key ? t->m.ops->get_next_key(&t->m, key, next) : -EINVAL;
}
static int s_lad(struct tmap *t, const void *key, void *val, uint64_t flags)
{
	uint32_t ty = t->a.map_type;
	if (flags & ~BPF_F_LOCK)
		return -EINVAL;
	if (flags && qsb(ty))
		return -EINVAL;
	if ((flags & BPF_F_LOCK) && t->a.spin_lock_off < 0)
		return -EINVAL;
	memset(val, 0, sys_vs(&t->a));
	if (qsb(ty))
		return t->m.ops->pop(&t->m, val);
	if (ty == BPF_MAP_TYPE_HASH || ty == BPF_MAP_TYPE_PERCPU_HASH || ty == BPF_MAP_TYPE_LRU_HASH ||
	    ty == BPF_MAP_TYPE_LRU_PERCPU_HASH || ty == BPF_MAP_TYPE_STACK_TRACE)
		return t->m.ops->sys_lookup_and_delete ? t->m.ops->sys_lookup_and_delete(&t->m, key, val, flags) : -SHM_ENOTSUPP;
	return -SHM_ENOTSUPP;
}

/* ---- attr fuzz ---- */
static void test_create(void)
{
	static const uint32_t types[] = {
		BPF_MAP_TYPE_HASH, BPF_MAP_TYPE_ARRAY, BPF_MAP_TYPE_PERCPU_HASH, BPF_MAP_TYPE_PERCPU_ARRAY,
		BPF_MAP_TYPE_LRU_HASH, BPF_MAP_TYPE_LRU_PERCPU_HASH, BPF_MAP_TYPE_QUEUE, BPF_MAP_TYPE_STACK,
		BPF_MAP_TYPE_BLOOM_FILTER, BPF_MAP_TYPE_LPM_TRIE, BPF_MAP_TYPE_STACK_TRACE, BPF_MAP_TYPE_RINGBUF,
		BPF_MAP_TYPE_PROG_ARRAY, BPF_MAP_TYPE_PERF_EVENT_ARRAY, BPF_MAP_TYPE_CGROUP_ARRAY,
	};
	static const uint32_t ks[] = { 0, 1, 4, 8, 5, 260, 261, 512, 513 };
	static const uint32_t vs[] = { 0, 1, 4, 8, 16, 24, 1016, 1024, 32768, 32769, 4194304, 4194305 };
	static const uint32_t me[] = { 0, 1, 3, 4096, 8192, 12288, 1u << 20 };
	static const uint64_t extra[] = { 0, 3, 16 };

	for (unsigned ti = 0; ti < BPFSHIM_ARRAY_SIZE(types); ti++)
		for (unsigned ki = 0; ki < BPFSHIM_ARRAY_SIZE(ks); ki++)
			for (unsigned vi = 0; vi < BPFSHIM_ARRAY_SIZE(vs); vi++)
				for (unsigned mi = 0; mi < BPFSHIM_ARRAY_SIZE(me); mi++)
					for (int fb = -1; fb < 19; fb++)
						for (unsigned ei = 0; ei < BPFSHIM_ARRAY_SIZE(extra); ei++) {
							struct tmap t;
							struct shm_map_attr a = { 0 };
							if (fb == 16) /* BPF_F_TOKEN_FD */
								continue;
							if (ei && (fb >= 0 || mi != 1))
								continue;
							/* big allocations only for a few combos */
							if ((uint64_t)(vs[vi] + ks[ki] + 64) * me[mi] > (1ull << 23))
								continue;
							a.map_type = types[ti];
							a.key_size = ks[ki];
							a.value_size = vs[vi];
							a.max_entries = me[mi];
							a.map_flags = fb < 0 ? 0 : 1u << fb;
							a.map_extra = extra[ei];
							if (a.map_type == BPF_MAP_TYPE_LPM_TRIE && fb != 0)
								a.map_flags |= BPF_F_NO_PREALLOC;
							if (t_create(&t, a) == 0)
								t_close(&t);
						}
}

/* ---- element fuzz ---- */
static uint32_t rnd(void)
{
	static uint64_t s = 88172645463325252ull;
	s ^= s << 13;
	s ^= s >> 7;
	s ^= s << 17;
	return (uint32_t)s;
}

static void fill(void *p, size_t n, uint32_t seed)
{
	for (size_t i = 0; i < n; i++)
		((uint8_t *)p)[i] = (uint8_t)(seed * 31 + i * 7 + (seed >> 8));
}

static void make_key(const struct tmap *t, void *key, uint32_t dom)
{
	uint32_t ksz = t->a.key_size;
	memset(key, 0, ksz);
	if (t->a.map_type == BPF_MAP_TYPE_LPM_TRIE) {
		uint32_t maxp = (ksz - 4) * 8;
		uint32_t pl = rnd() % (maxp + 2);
		memcpy(key, &pl, 4);
		uint32_t v = rnd() % dom;
		/* a few distinct leading bytes so prefixes nest and split */
		uint8_t *d = (uint8_t *)key + 4;
		d[0] = (uint8_t)(0xc0 | (v & 0x3));
		if (ksz - 4 > 1)
			d[1] = (uint8_t)((v >> 2) * 37);
		if (ksz - 4 > 2)
			d[2] = (uint8_t)(rnd() & 0x80);
		return;
	}
	uint32_t v = rnd() % dom;
	if (ksz >= 4)
		memcpy(key, &v, 4);
	else if (ksz)
		memcpy(key, &v, ksz);
}

static int bytes_eq(const void *a, const void *b, size_t n)
{
	return !memcmp(a, b, n);
}

static void dump_cmp(const char *what, int op, int k, int s)
{
	FAIL("%s op %d: kernel %d shm %d", what, op, k, s);
}

/* Keys in the map as get_next_key walks it, sorted (hash order differs). */
static int walk(struct tmap *t, int kernel, uint8_t *keys, int max)
{
	uint32_t ks = t->a.key_size;
	uint8_t cur[512], nxt[512];
	int n = 0, r;
	const void *pk = NULL;
	while (n < max) {
		r = kernel ? k_next(t, pk, nxt) : s_next(t, pk, nxt);
		if (r)
			break;
		memcpy(keys + (size_t)n * ks, nxt, ks);
		memcpy(cur, nxt, ks);
		pk = cur;
		n++;
	}
	return n;
}

static int cmpks;
static int cmpk(const void *a, const void *b) { return memcmp(a, b, cmpks); }

static void fuzz_elems(const char *name, struct shm_map_attr a, int nops, uint32_t dom, int ordered_walk)
{
	struct tmap t;
	if (t_create(&t, a)) {
		FAIL("%s: create failed", name);
		return;
	}
	size_t vs = sys_vs(&t.a) ? sys_vs(&t.a) : 8, ks = t.a.key_size ? t.a.key_size : 4;
	uint8_t *key = calloc(1, ks), *kv = calloc(1, vs), *sv = calloc(1, vs), *in = calloc(1, vs);
	uint8_t *kn = calloc(1, ks), *sn = calloc(1, ks);
	int lru = t.a.map_type == BPF_MAP_TYPE_LRU_HASH || t.a.map_type == BPF_MAP_TYPE_LRU_PERCPU_HASH;
	for (int i = 0; i < nops; i++) {
		int op = rnd() % 6, k, s;
		uint64_t flags = rnd() % 8 == 0 ? rnd() % 6 : rnd() % 3;
		if (flags == 3)
			flags = BPF_F_LOCK;
		make_key(&t, key, dom);
		void *kp = t.a.key_size ? key : NULL;
		switch (op) {
		case 0: case 1:
			fill(in, vs, rnd());
			if (t.a.map_type == BPF_MAP_TYPE_BLOOM_FILTER)
				memcpy(in, key, 4 < vs ? 4 : vs), memset(in + 4, 0, vs > 4 ? vs - 4 : 0);
			k = k_update(&t, kp, in, flags);
			s = s_update(&t, kp, in, flags);
			checks++;
			if (k != s && !(lru && k == 0 && s == 0))
				dump_cmp(name, op, k, s);
			break;
		case 2:
			memset(kv, 0x5a, vs);
			memset(sv, 0x5a, vs);
			if (t.a.map_type == BPF_MAP_TYPE_BLOOM_FILTER) {
				memset(kv, 0, vs);
				memcpy(kv, key, 4 < vs ? 4 : vs);
				memcpy(sv, kv, vs);
			}
			flags &= BPF_F_LOCK;
			k = k_lookup(&t, kp, kv, flags);
			s = s_lookup(&t, kp, sv, flags);
			checks++;
			if (k != s)
				dump_cmp(name, op, k, s);
			else if (!k && !bytes_eq(kv, sv, vs))
				FAIL("%s lookup: value differs", name);
			break;
		case 3:
			k = k_delete(&t, kp);
			s = s_delete(&t, kp);
			checks++;
			if (k != s)
				dump_cmp(name, op, k, s);
			break;
		case 4:
			memset(kn, 0, ks);
			memset(sn, 0, ks);
			k = k_next(&t, rnd() % 4 ? kp : NULL, kn);
			s = s_next(&t, rnd() % 4 ? kp : NULL, sn);
			/* the NULL choice is random per side: redo with same */
			{
				int usenull = rnd() % 4 == 0;
				k = k_next(&t, usenull ? NULL : kp, kn);
				s = s_next(&t, usenull ? NULL : kp, sn);
			}
			checks++;
			if (k != s && ordered_walk)
				dump_cmp(name, op, k, s);
			else if (!k && ordered_walk && !bytes_eq(kn, sn, t.a.key_size))
				FAIL("%s next_key differs", name);
			break;
		case 5:
			flags &= BPF_F_LOCK;
			k = k_lad(&t, kp, kv, flags);
			s = s_lad(&t, kp, sv, flags);
			checks++;
			if (k != s)
				dump_cmp(name, op, k, s);
			else if (!k && !bytes_eq(kv, sv, vs))
				FAIL("%s lookup_and_delete: value differs", name);
			break;
		}
		if (failures > 30)
			break;
	}
	/* contents: the same key set (and values) */
	if (t.a.key_size && t.a.map_type != BPF_MAP_TYPE_STACK_TRACE) {
		int max = 70000;
		uint8_t *kk = calloc(max, ks), *sk = calloc(max, ks);
		int nk = walk(&t, 1, kk, max), ns = walk(&t, 0, sk, max);
		cmpks = (int)t.a.key_size;
		checks++;
		if (!lru) {
			if (nk != ns)
				FAIL("%s: kernel walks %d keys, shm %d", name, nk, ns);
			else {
				if (!ordered_walk) {
					qsort(kk, nk, ks, cmpk);
					qsort(sk, ns, ks, cmpk);
				}
				if (memcmp(kk, sk, (size_t)nk * ks))
					FAIL("%s: key sets differ", name);
				for (int i = 0; i < nk; i++) {
					int k = k_lookup(&t, kk + (size_t)i * ks, kv, 0), s = s_lookup(&t, kk + (size_t)i * ks, sv, 0);
					if (k != s || (!k && memcmp(kv, sv, vs))) {
						FAIL("%s: final value differs", name);
						break;
					}
				}
			}
		}
		free(kk);
		free(sk);
	}
	free(key); free(kv); free(sv); free(in); free(kn); free(sn);
	t_close(&t);
}

static struct shm_map_attr A(uint32_t type, uint32_t ks, uint32_t vs, uint32_t max, uint32_t flags)
{
	struct shm_map_attr a = { .map_type = type, .key_size = ks, .value_size = vs, .max_entries = max, .map_flags = flags };
	return a;
}

int main(int argc, char **argv)
{
	if (argc < 2 || !strcmp(argv[1], "create"))
		test_create();
	printf("create: %d checks, %d failures\n", checks, failures);
	fuzz_elems("array", A(BPF_MAP_TYPE_ARRAY, 4, 12, 16, 0), 3000, 20, 1);
	fuzz_elems("array_mmap", A(BPF_MAP_TYPE_ARRAY, 4, 8, 5, BPF_F_MMAPABLE), 1000, 8, 1);
	fuzz_elems("percpu_array", A(BPF_MAP_TYPE_PERCPU_ARRAY, 4, 12, 16, 0), 3000, 20, 1);
	fuzz_elems("hash", A(BPF_MAP_TYPE_HASH, 4, 12, 16, 0), 5000, 24, 0);
	fuzz_elems("hash_k7", A(BPF_MAP_TYPE_HASH, 7, 5, 64, BPF_F_NO_PREALLOC), 5000, 80, 0);
	fuzz_elems("percpu_hash", A(BPF_MAP_TYPE_PERCPU_HASH, 4, 12, 16, 0), 5000, 24, 0);
	fuzz_elems("lru_hash", A(BPF_MAP_TYPE_LRU_HASH, 4, 8, 1024, 0), 3000, 24, 0);
	fuzz_elems("lru_percpu_hash", A(BPF_MAP_TYPE_LRU_PERCPU_HASH, 4, 8, 1024, 0), 3000, 24, 0);
	fuzz_elems("queue", A(BPF_MAP_TYPE_QUEUE, 0, 12, 8, 0), 3000, 24, 1);
	fuzz_elems("stack", A(BPF_MAP_TYPE_STACK, 0, 12, 8, 0), 3000, 24, 1);
	struct shm_map_attr bl = A(BPF_MAP_TYPE_BLOOM_FILTER, 0, 4, 16, BPF_F_ZERO_SEED);
	fuzz_elems("bloom", bl, 3000, 400, 1);
	bl.value_size = 6;
	bl.map_extra = 2;
	fuzz_elems("bloom_v6", bl, 3000, 400, 1);
	fuzz_elems("lpm_v4", A(BPF_MAP_TYPE_LPM_TRIE, 8, 8, 16, BPF_F_NO_PREALLOC), 6000, 16, 1);
	fuzz_elems("lpm_1", A(BPF_MAP_TYPE_LPM_TRIE, 5, 4, 8, BPF_F_NO_PREALLOC), 6000, 16, 1);
	fuzz_elems("stack_trace", A(BPF_MAP_TYPE_STACK_TRACE, 4, 16, 8, 0), 500, 16, 1);
	fuzz_elems("ringbuf", A(BPF_MAP_TYPE_RINGBUF, 0, 0, 4096, 0), 200, 16, 1);
	printf("total: %d checks, %d failures\n", checks, failures);
	return failures != 0;
}

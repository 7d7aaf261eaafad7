/* Map commands through Debian's libbpf (bpf.h / btf.h), printing a trace
 * that is the same on any kernel-compatible bpf(): return values, errno
 * names and bytes, never ids, fds or pointers. Where the kernel's order is
 * its hash's (hash-map iteration, batches), keys are sorted first.
 *
 *   libbpf_maps PIN_DIR NON_BPFFS_DIR
 *
 * PIN_DIR (under /sys/fs/bpf) is created and removed by the program.
 * Build: cc -O1 -o libbpf_maps libbpf_maps.c -lbpf
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <linux/bpf.h>
#include <bpf/bpf.h>
#include <bpf/btf.h>
#include <bpf/libbpf.h>

/* kernel-internal (include/linux/errno.h), but bpf() returns it */
#define ENOTSUPP 524

static int ncpus;
static char pin_dir[512], other_dir[512];

static const char *ename(int e)
{
	static char buf[16];
	const char *n;

	if (e == ENOTSUPP)
		return "ENOTSUPP";
	n = strerrorname_np(e);
	if (n)
		return n;
	snprintf(buf, sizeof(buf), "E%d", e);
	return buf;
}

/* libbpf 1.x returns -errno and sets errno; print both so a mismatch of
 * either shows. */
static long res(const char *what, long r)
{
	int e = errno;

	if (r < 0)
		printf("%s: %ld %s%s\n", what, r, ename(e), -r == e ? "" : " (errno differs)");
	else
		printf("%s: %ld\n", what, r);
	return r;
}

/* An fd: only whether it is one. */
static int fdres(const char *what, int fd)
{
	int e = errno;

	if (fd < 0)
		printf("%s: %d %s\n", what, fd, ename(e));
	else
		printf("%s: fd\n", what);
	return fd;
}

#define CALL(expr) (errno = 0, res(#expr, (long)(expr)))
#define FD(expr) (errno = 0, fdres(#expr, (expr)))

static void hex(const char *what, const void *p, size_t n)
{
	const unsigned char *b = p;

	printf("  %s:", what);
	for (size_t i = 0; i < n; i++)
		printf(" %02x", b[i]);
	printf("\n");
}

static void info(const char *what, int fd)
{
	struct bpf_map_info mi;
	__u32 len = sizeof(mi);
	int r;

	memset(&mi, 0, sizeof(mi));
	errno = 0;
	r = bpf_obj_get_info_by_fd(fd, &mi, &len);
	if (r) {
		printf("info %s: %d %s\n", what, r, ename(errno));
		return;
	}
	printf("info %s: len %u type %u key %u value %u max %u flags %#x name '%s' btf %s key_type %u value_type %u extra %llu\n",
	       what, len, mi.type, mi.key_size, mi.value_size, mi.max_entries, mi.map_flags, mi.name,
	       mi.btf_id ? "yes" : "no", mi.btf_key_type_id, mi.btf_value_type_id, (unsigned long long)mi.map_extra);
}

static __u32 map_id(int fd)
{
	struct bpf_map_info mi;
	__u32 len = sizeof(mi);

	memset(&mi, 0, sizeof(mi));
	if (bpf_obj_get_info_by_fd(fd, &mi, &len))
		return 0;
	return mi.id;
}

static int cmp_u32(const void *a, const void *b)
{
	__u32 x = *(const __u32 *)a, y = *(const __u32 *)b;
	return x < y ? -1 : x > y;
}

/* Walk a map with 4-byte keys by get_next_key; print the keys sorted. */
static void walk_keys(const char *what, int fd)
{
	__u32 keys[256], k, nk;
	int n = 0, r;
	const void *prev = NULL;

	for (;;) {
		errno = 0;
		r = bpf_map_get_next_key(fd, prev, &nk);
		if (r)
			break;
		if (n == 256)
			break;
		keys[n++] = nk;
		k = nk;
		prev = &k;
	}
	qsort(keys, n, sizeof(keys[0]), cmp_u32);
	printf("walk %s: %d keys, end %s:", what, n, r ? ename(errno) : "-");
	for (int i = 0; i < n; i++)
		printf(" %u", keys[i]);
	printf("\n");
}

static int create(const char *what, enum bpf_map_type t, const char *name, __u32 ks, __u32 vs, __u32 n,
		  __u32 flags)
{
	LIBBPF_OPTS(bpf_map_create_opts, o, .map_flags = flags);
	int fd;

	errno = 0;
	fd = bpf_map_create(t, name, ks, vs, n, &o);
	fdres(what, fd);
	if (fd >= 0)
		info(what, fd);
	return fd;
}

static void section(const char *s)
{
	printf("== %s\n", s);
}

static void test_create_errors(void)
{
	int fd;

	section("create errors");
	LIBBPF_OPTS(bpf_map_create_opts, o);
	fd = FD(bpf_map_create(999, "bad", 4, 8, 4, NULL));
	fd = FD(bpf_map_create(BPF_MAP_TYPE_HASH, "bad", 0, 8, 4, NULL));
	fd = FD(bpf_map_create(BPF_MAP_TYPE_HASH, "bad", 4, 0, 4, NULL));
	fd = FD(bpf_map_create(BPF_MAP_TYPE_HASH, "bad", 4, 8, 0, NULL));
	fd = FD(bpf_map_create(BPF_MAP_TYPE_ARRAY, "bad", 8, 8, 4, NULL));
	fd = FD(bpf_map_create(BPF_MAP_TYPE_QUEUE, "bad", 4, 8, 4, NULL));
	fd = FD(bpf_map_create(BPF_MAP_TYPE_LPM_TRIE, "bad", 8, 8, 4, NULL));
	fd = FD(bpf_map_create(BPF_MAP_TYPE_RINGBUF, "bad", 0, 0, 1000, NULL));
	fd = FD(bpf_map_create(BPF_MAP_TYPE_HASH, "bad-name", 4, 8, 4, NULL));
	fd = FD(bpf_map_create(BPF_MAP_TYPE_HASH, "bad", 4, 8, 4, &o));   /* opts ok: succeeds */
	if (fd >= 0)
		close(fd);
	o.map_flags = 1u << 31;
	fd = FD(bpf_map_create(BPF_MAP_TYPE_HASH, "bad", 4, 8, 4, &o));
	o.map_flags = BPF_F_MMAPABLE;
	fd = FD(bpf_map_create(BPF_MAP_TYPE_HASH, "bad", 4, 8, 4, &o));
	o.map_flags = BPF_F_RDONLY | BPF_F_WRONLY;
	fd = FD(bpf_map_create(BPF_MAP_TYPE_ARRAY, "bad", 4, 8, 4, &o));
	o.map_flags = 0;
	o.btf_fd = 12345;   /* btf ids without a BTF fd */
	o.btf_value_type_id = 1;
	fd = FD(bpf_map_create(BPF_MAP_TYPE_ARRAY, "bad", 4, 8, 4, &o));
	o.btf_fd = 0;
	o.btf_value_type_id = 0;
	o.inner_map_fd = 0;
	o.map_extra = 3;   /* only bloom filters take map_extra */
	fd = FD(bpf_map_create(BPF_MAP_TYPE_HASH, "bad", 4, 8, 4, &o));
	(void)fd;
}

static void test_hash(void)
{
	__u32 k;
	__u64 v;
	int fd;

	section("hash");
	fd = create("hash", BPF_MAP_TYPE_HASH, "h", 4, 8, 8, 0);
	if (fd < 0)
		return;
	k = 1; v = 0x1122334455667788ULL;
	CALL(bpf_map_update_elem(fd, &k, &v, BPF_ANY));
	CALL(bpf_map_update_elem(fd, &k, &v, BPF_NOEXIST));
	k = 2;
	CALL(bpf_map_update_elem(fd, &k, &v, BPF_EXIST));
	CALL(bpf_map_update_elem(fd, &k, &v, 4));
	CALL(bpf_map_update_elem(fd, &k, &v, BPF_F_LOCK));
	CALL(bpf_map_update_elem(fd, &k, &v, BPF_NOEXIST));
	v = 0;
	k = 1;
	CALL(bpf_map_lookup_elem(fd, &k, &v));
	hex("value", &v, 8);
	k = 7;
	CALL(bpf_map_lookup_elem(fd, &k, &v));
	CALL(bpf_map_lookup_elem_flags(fd, &k, &v, BPF_F_LOCK));
	CALL(bpf_map_lookup_elem_flags(fd, &k, &v, 1));
	CALL(bpf_map_lookup_elem(fd, NULL, &v));
	CALL(bpf_map_lookup_elem(fd, (void *)8, &v));
	k = 1;
	CALL(bpf_map_lookup_elem(fd, &k, (void *)8));
	CALL(bpf_map_update_elem(fd, &k, NULL, BPF_ANY));
	for (k = 10; k < 17; k++) {
		v = k * 3;
		if (bpf_map_update_elem(fd, &k, &v, BPF_ANY))
			printf("  update %u: %s\n", k, ename(errno));
	}
	walk_keys("hash full", fd);
	k = 2;
	v = 2;
	CALL(bpf_map_update_elem(fd, &k, &v, BPF_ANY));    /* 9th key: E2BIG */
	k = 1;
	CALL(bpf_map_update_elem(fd, &k, &v, BPF_ANY));    /* replace when full: ok */
	{
		__u32 absent = 12345, first = 0;
		/* from an absent key: the first key, which the hash seed picks */
		CALL(bpf_map_get_next_key(fd, &absent, &first));
		CALL(bpf_map_lookup_elem(fd, &first, &v));
	}
	k = 10;
	CALL(bpf_map_delete_elem(fd, &k));
	k = 11;
	CALL(bpf_map_delete_elem(fd, &k));
	CALL(bpf_map_delete_elem(fd, &k));
	CALL(bpf_map_delete_elem(fd, NULL));
	k = 12;
	CALL(bpf_map_lookup_and_delete_elem(fd, &k, &v));
	hex("value", &v, 8);
	CALL(bpf_map_lookup_and_delete_elem(fd, &k, &v));
	k = 13;
	CALL(bpf_map_lookup_and_delete_elem_flags(fd, &k, &v, BPF_F_LOCK));
	walk_keys("hash after delete", fd);
	CALL(bpf_map_freeze(fd));
	CALL(bpf_map_update_elem(fd, &k, &v, BPF_ANY));
	CALL(bpf_map_delete_elem(fd, &k));
	CALL(bpf_map_lookup_elem(fd, &k, &v));
	CALL(bpf_map_freeze(fd));
	close(fd);
}

static void test_array(void)
{
	__u32 k, nk;
	__u64 v;
	int fd;

	section("array");
	fd = create("array", BPF_MAP_TYPE_ARRAY, "a", 4, 8, 4, 0);
	if (fd < 0)
		return;
	k = 2; v = 42;
	CALL(bpf_map_update_elem(fd, &k, &v, BPF_ANY));
	CALL(bpf_map_update_elem(fd, &k, &v, BPF_NOEXIST));
	CALL(bpf_map_update_elem(fd, &k, &v, BPF_EXIST));
	k = 4;
	CALL(bpf_map_update_elem(fd, &k, &v, BPF_ANY));
	CALL(bpf_map_lookup_elem(fd, &k, &v));
	k = 2;
	CALL(bpf_map_delete_elem(fd, &k));
	k = 0;
	CALL(bpf_map_lookup_elem(fd, &k, &v));
	hex("value", &v, 8);
	CALL(bpf_map_get_next_key(fd, NULL, &nk));
	printf("  next %u\n", nk);
	k = 2;
	CALL(bpf_map_get_next_key(fd, &k, &nk));
	printf("  next %u\n", nk);
	k = 3;
	CALL(bpf_map_get_next_key(fd, &k, &nk));
	k = 99;
	CALL(bpf_map_get_next_key(fd, &k, &nk));
	printf("  next %u\n", nk);
	CALL(bpf_map_lookup_and_delete_elem(fd, &k, &v));
	CALL(bpf_map_update_elem(fd, &k, &v, BPF_F_LOCK));
	CALL(bpf_map_freeze(fd));
	k = 1;
	CALL(bpf_map_update_elem(fd, &k, &v, BPF_ANY));
	CALL(bpf_map_lookup_elem(fd, &k, &v));
	close(fd);
}

static void test_percpu(void)
{
	size_t vsz = 8 * ncpus;
	__u64 *vals = calloc(ncpus, 8);
	__u32 k;
	int fd;

	section("percpu");
	fd = create("percpu_array", BPF_MAP_TYPE_PERCPU_ARRAY, "pa", 4, 8, 4, 0);
	if (fd >= 0) {
		for (int i = 0; i < ncpus; i++)
			vals[i] = 100 + i;
		k = 1;
		CALL(bpf_map_update_elem(fd, &k, vals, BPF_ANY));
		memset(vals, 0, vsz);
		CALL(bpf_map_lookup_elem(fd, &k, vals));
		hex("values", vals, vsz);
		k = 3;
		CALL(bpf_map_lookup_elem(fd, &k, vals));
		hex("values", vals, vsz);
		close(fd);
	}
	/* value size not a multiple of 8: each CPU's slot is rounded up */
	fd = create("percpu_hash", BPF_MAP_TYPE_PERCPU_HASH, "ph", 4, 4, 4, 0);
	if (fd >= 0) {
		unsigned char buf[8 * 64];
		memset(buf, 0, sizeof(buf));
		for (int i = 0; i < ncpus; i++)
			buf[8 * i] = 0x10 + i, buf[8 * i + 4] = 0xee;
		k = 5;
		CALL(bpf_map_update_elem(fd, &k, buf, BPF_NOEXIST));
		memset(buf, 0xaa, sizeof(buf));
		CALL(bpf_map_lookup_elem(fd, &k, buf));
		hex("values", buf, 8 * ncpus + 8);
		walk_keys("percpu_hash", fd);
		close(fd);
	}
	free(vals);
}

static void test_lru(void)
{
	__u32 k;
	__u64 v;
	int fd;

	section("lru_hash");
	/* large enough that no CPU's local free list runs dry: the kernel
	 * would evict early */
	fd = create("lru_hash", BPF_MAP_TYPE_LRU_HASH, "lru", 4, 8, 1024, 0);
	if (fd < 0)
		return;
	for (k = 0; k < 20; k++) {
		v = k;
		if (bpf_map_update_elem(fd, &k, &v, BPF_NOEXIST))
			printf("  update %u: %s\n", k, ename(errno));
	}
	walk_keys("lru", fd);
	k = 3;
	CALL(bpf_map_lookup_elem(fd, &k, &v));
	hex("value", &v, 8);
	CALL(bpf_map_update_elem(fd, &k, &v, BPF_NOEXIST));
	CALL(bpf_map_delete_elem(fd, &k));
	CALL(bpf_map_update_elem(fd, &k, &v, BPF_EXIST));
	close(fd);
	fd = create("lru_hash no common lru", BPF_MAP_TYPE_LRU_HASH, "lru2", 4, 8, 64, BPF_F_NO_COMMON_LRU);
	if (fd >= 0)
		close(fd);
	fd = create("lru_hash no prealloc", BPF_MAP_TYPE_LRU_HASH, "lru3", 4, 8, 64, BPF_F_NO_PREALLOC);
	if (fd >= 0)
		close(fd);
}

static void test_queue_stack(void)
{
	__u32 v, i;
	int fd;

	for (int s = 0; s < 2; s++) {
		section(s ? "stack" : "queue");
		fd = create(s ? "stack" : "queue", s ? BPF_MAP_TYPE_STACK : BPF_MAP_TYPE_QUEUE, "qs", 0, 4, 3, 0);
		if (fd < 0)
			continue;
		for (i = 1; i <= 4; i++) {
			v = i;
			CALL(bpf_map_update_elem(fd, NULL, &v, BPF_ANY));
		}
		v = 5;
		CALL(bpf_map_update_elem(fd, NULL, &v, BPF_EXIST));   /* full: replaces the oldest */
		CALL(bpf_map_update_elem(fd, NULL, &v, BPF_NOEXIST));
		CALL(bpf_map_lookup_elem(fd, NULL, &v));
		printf("  peek %u\n", v);
		CALL(bpf_map_get_next_key(fd, NULL, &v));
		CALL(bpf_map_delete_elem(fd, NULL));
		for (i = 0; i < 4; i++) {
			v = 0;
			CALL(bpf_map_lookup_and_delete_elem(fd, NULL, &v));
			printf("  pop %u\n", v);
		}
		CALL(bpf_map_lookup_elem(fd, NULL, &v));
		v = 9;
		CALL(bpf_map_update_elem(fd, NULL, &v, BPF_F_LOCK));
		CALL(bpf_map_freeze(fd));
		CALL(bpf_map_update_elem(fd, NULL, &v, BPF_ANY));
		CALL(bpf_map_lookup_and_delete_elem(fd, NULL, &v));
		close(fd);
	}
}

static void test_batch_hash(void)
{
	enum { N = 12 };
	__u32 keys[N + 4], outk[64], all[64];
	__u64 vals[N + 4], outv[64];
	__u32 count, in_batch, out_batch;
	int fd, r, n, calls;
	LIBBPF_OPTS(bpf_map_batch_opts, bo);

	section("hash batch");
	fd = create("hash batch", BPF_MAP_TYPE_HASH, "hb", 4, 8, 16, 0);
	if (fd < 0)
		return;
	for (int i = 0; i < N + 4; i++)
		keys[i] = 100 + i, vals[i] = 1000 + i;
	count = N;
	CALL(bpf_map_update_batch(fd, keys, vals, &count, &bo));
	printf("  count %u\n", count);
	count = 0;
	CALL(bpf_map_update_batch(fd, keys, vals, &count, &bo));
	printf("  count %u\n", count);
	/* 12 present + 4 new fits 16; then one more is E2BIG at element 0 */
	count = N + 4;
	CALL(bpf_map_update_batch(fd, keys, vals, &count, &bo));
	printf("  count %u\n", count);
	{
		__u32 k2 = 999;
		__u64 v2 = 1;
		count = 1;
		CALL(bpf_map_update_batch(fd, &k2, &v2, &count, &bo));
		printf("  count %u\n", count);
	}
	bo.elem_flags = BPF_NOEXIST;
	count = 2;
	CALL(bpf_map_update_batch(fd, keys, vals, &count, &bo));
	printf("  count %u\n", count);
	bo.elem_flags = 0;
	bo.flags = 1;
	count = 2;
	CALL(bpf_map_update_batch(fd, keys, vals, &count, &bo));
	bo.flags = 0;
	bo.elem_flags = BPF_F_LOCK;
	count = 2;
	CALL(bpf_map_update_batch(fd, keys, vals, &count, &bo));
	CALL(bpf_map_lookup_batch(fd, NULL, &out_batch, outk, outv, &count, &bo));
	bo.elem_flags = 0;

	/* Walk by lookup_batch, 5 at a time: the union is every key; how many
	 * each call returns depends on bucket layout, so only totals print. */
	n = 0;
	calls = 0;
	for (void *in = NULL;; in = &in_batch) {
		count = 5;
		errno = 0;
		r = bpf_map_lookup_batch(fd, in, &out_batch, outk + n, outv + n, &count, &bo);
		calls++;
		if (r && errno == ENOSPC) {
			/* a bucket holds more than 5: retry with room for it (as
			 * libbpf users do); the kernel's hash seed decides */
			count = 16;
			errno = 0;
			r = bpf_map_lookup_batch(fd, in, &out_batch, outk + n, outv + n, &count, &bo);
		}
		if (r && errno != ENOENT) {
			printf("  lookup_batch: %d %s\n", r, ename(errno));
			break;
		}
		for (__u32 i = 0; i < count; i++)
			if (outv[n + i] != 1000 + outk[n + i] - 100)
				printf("  bad value for key %u\n", outk[n + i]);
		n += count;
		in_batch = out_batch;
		if (r) {
			printf("  lookup_batch end: %s\n", ename(errno));
			break;
		}
		if (calls > 40)
			break;
	}
	memcpy(all, outk, n * sizeof(__u32));
	qsort(all, n, sizeof(all[0]), cmp_u32);
	printf("  lookup_batch keys (%d):", n);
	for (int i = 0; i < n; i++)
		printf(" %u", all[i]);
	printf("\n");
	count = 0;
	CALL(bpf_map_lookup_batch(fd, NULL, &out_batch, outk, outv, &count, &bo));
	printf("  count %u\n", count);
	count = 64;
	CALL(bpf_map_lookup_batch(fd, NULL, &out_batch, outk, outv, &count, &bo));
	printf("  count %u\n", count);
	count = 4;
	bo.flags = 1;
	CALL(bpf_map_lookup_batch(fd, NULL, &out_batch, outk, outv, &count, &bo));
	bo.flags = 0;
	count = 16;
	CALL(bpf_map_lookup_batch(fd, NULL, &out_batch, (void *)8, outv, &count, &bo));

	/* delete_batch: 3 present keys, then one absent (stops with ENOENT) */
	count = 3;
	CALL(bpf_map_delete_batch(fd, keys, &count, &bo));
	printf("  count %u\n", count);
	count = 3;
	CALL(bpf_map_delete_batch(fd, keys + 2, &count, &bo));
	printf("  count %u\n", count);
	walk_keys("after delete_batch", fd);

	/* lookup_and_delete_batch until the map is empty */
	n = 0;
	calls = 0;
	for (void *in = NULL;; in = &in_batch) {
		count = 4;
		errno = 0;
		r = bpf_map_lookup_and_delete_batch(fd, in, &out_batch, outk + n, outv + n, &count, &bo);
		calls++;
		if (r && errno == ENOSPC) {
			count = 16;
			errno = 0;
			r = bpf_map_lookup_and_delete_batch(fd, in, &out_batch, outk + n, outv + n, &count, &bo);
		}
		if (r && errno != ENOENT) {
			printf("  lookup_and_delete_batch: %d %s\n", r, ename(errno));
			break;
		}
		n += count;
		in_batch = out_batch;
		if (r) {
			printf("  lookup_and_delete_batch end: %s\n", ename(errno));
			break;
		}
		if (calls > 40)
			break;
	}
	memcpy(all, outk, n * sizeof(__u32));
	qsort(all, n, sizeof(all[0]), cmp_u32);
	printf("  lookup_and_delete_batch keys (%d):", n);
	for (int i = 0; i < n; i++)
		printf(" %u", all[i]);
	printf("\n");
	walk_keys("after lookup_and_delete_batch", fd);
	count = 16;
	CALL(bpf_map_lookup_and_delete_batch(fd, NULL, &out_batch, outk, outv, &count, &bo));
	printf("  count %u\n", count);
	close(fd);
}

static void test_batch_array(void)
{
	__u32 keys[8], outk[16], count, out_batch, in_batch;
	__u64 vals[8], outv[16];
	int fd;
	LIBBPF_OPTS(bpf_map_batch_opts, bo);

	section("array batch");
	fd = create("array batch", BPF_MAP_TYPE_ARRAY, "ab", 4, 8, 6, 0);
	if (fd < 0)
		return;
	for (int i = 0; i < 8; i++)
		keys[i] = i, vals[i] = 0x100 + i;
	count = 4;
	CALL(bpf_map_update_batch(fd, keys, vals, &count, &bo));
	printf("  count %u\n", count);
	count = 8;
	CALL(bpf_map_update_batch(fd, keys, vals, &count, &bo));
	printf("  count %u\n", count);
	count = 4;
	CALL(bpf_map_lookup_batch(fd, NULL, &out_batch, outk, outv, &count, &bo));
	printf("  count %u out_batch %u\n", count, out_batch);
	for (__u32 i = 0; i < count; i++)
		printf("  %u -> %#llx\n", outk[i], (unsigned long long)outv[i]);
	in_batch = out_batch;
	count = 4;
	CALL(bpf_map_lookup_batch(fd, &in_batch, &out_batch, outk, outv, &count, &bo));
	printf("  count %u out_batch %u\n", count, out_batch);
	for (__u32 i = 0; i < count; i++)
		printf("  %u -> %#llx\n", outk[i], (unsigned long long)outv[i]);
	in_batch = out_batch;
	count = 4;
	CALL(bpf_map_lookup_batch(fd, &in_batch, &out_batch, outk, outv, &count, &bo));
	printf("  count %u\n", count);
	in_batch = 77;
	count = 4;
	CALL(bpf_map_lookup_batch(fd, &in_batch, &out_batch, outk, outv, &count, &bo));
	printf("  count %u\n", count);
	count = 2;
	CALL(bpf_map_delete_batch(fd, keys, &count, &bo));
	printf("  count %u\n", count);
	count = 2;
	CALL(bpf_map_lookup_and_delete_batch(fd, NULL, &out_batch, outk, outv, &count, &bo));
	CALL(bpf_map_freeze(fd));
	count = 2;
	CALL(bpf_map_update_batch(fd, keys, vals, &count, &bo));
	printf("  count %u\n", count);
	count = 2;
	CALL(bpf_map_lookup_batch(fd, NULL, &out_batch, outk, outv, &count, &bo));
	printf("  count %u\n", count);
	close(fd);

	section("queue batch");
	fd = create("queue batch", BPF_MAP_TYPE_QUEUE, "qb", 0, 4, 4, 0);
	if (fd >= 0) {
		count = 2;
		CALL(bpf_map_lookup_batch(fd, NULL, &out_batch, outk, outv, &count, &bo));
		CALL(bpf_map_update_batch(fd, keys, vals, &count, &bo));
		close(fd);
	}
}

static void pin_path(char *out, size_t n, const char *name)
{
	snprintf(out, n, "%s/%s", pin_dir, name);
}

static void test_pin(void)
{
	char p[600], p2[600], q[600];
	__u32 k = 1;
	__u64 v = 7;
	int fd, g, ro, wo;
	LIBBPF_OPTS(bpf_obj_get_opts, go);

	section("pin / get");
	CALL(mkdir(pin_dir, 0700));
	fd = create("pin hash", BPF_MAP_TYPE_HASH, "pinme", 4, 8, 4, 0);
	if (fd < 0)
		return;
	CALL(bpf_map_update_elem(fd, &k, &v, BPF_ANY));
	pin_path(p, sizeof(p), "m");
	pin_path(p2, sizeof(p2), "sub/m");
	CALL(bpf_obj_pin(fd, p));
	CALL(bpf_obj_pin(fd, p));
	CALL(bpf_obj_pin(fd, p2));
	CALL(bpf_obj_pin(-1, p2));
	CALL(bpf_obj_pin(0, p2));
	snprintf(q, sizeof(q), "%s/m", other_dir);
	CALL(bpf_obj_pin(fd, q));
	CALL(bpf_obj_pin(fd, "relative"));
	CALL(bpf_obj_pin(fd, NULL));
	pin_path(q, sizeof(q), "sub");
	CALL(mkdir(q, 0700));
	CALL(bpf_obj_pin(fd, p2));
	g = FD(bpf_obj_get(p));
	if (g >= 0) {
		printf("  same map: %d\n", map_id(g) == map_id(fd));
		info("got", g);
		v = 0;
		CALL(bpf_map_lookup_elem(g, &k, &v));
		hex("value", &v, 8);
		close(g);
	}
	g = FD(bpf_obj_get(p2));
	if (g >= 0)
		close(g);
	FD(bpf_obj_get(q));     /* a directory */
	pin_path(q, sizeof(q), "nosuch");
	FD(bpf_obj_get(q));
	FD(bpf_obj_get("relative"));
	go.file_flags = BPF_F_RDONLY;
	ro = FD(bpf_obj_get_opts(p, &go));
	if (ro >= 0) {
		CALL(bpf_map_lookup_elem(ro, &k, &v));
		CALL(bpf_map_update_elem(ro, &k, &v, BPF_ANY));
		CALL(bpf_map_delete_elem(ro, &k));
		CALL(bpf_map_get_next_key(ro, NULL, &k));
		CALL(bpf_map_freeze(ro));
		close(ro);
	}
	go.file_flags = BPF_F_WRONLY;
	wo = FD(bpf_obj_get_opts(p, &go));
	if (wo >= 0) {
		k = 1;
		CALL(bpf_map_lookup_elem(wo, &k, &v));
		CALL(bpf_map_get_next_key(wo, NULL, &k));
		k = 2;
		CALL(bpf_map_update_elem(wo, &k, &v, BPF_ANY));
		close(wo);
	}
	go.file_flags = BPF_F_RDONLY | BPF_F_WRONLY;
	FD(bpf_obj_get_opts(p, &go));
	go.file_flags = 1u << 20;
	FD(bpf_obj_get_opts(p, &go));
	close(fd);
	/* the pin keeps the map alive after its last fd closed */
	g = FD(bpf_obj_get(p));
	if (g >= 0) {
		k = 2;
		CALL(bpf_map_lookup_elem(g, &k, &v));
		hex("value", &v, 8);
		close(g);
	}
	pin_path(q, sizeof(q), "sub");
	CALL(rmdir(q));
	CALL(unlink(p2));
	CALL(unlink(p2));
	CALL(rmdir(q));
	CALL(unlink(p));
	FD(bpf_obj_get(p));
	CALL(rmdir(pin_dir));
}

static void test_info(void)
{
	unsigned char buf[sizeof(struct bpf_map_info) + 16];
	__u32 len;
	int fd, nfd;

	section("get_info_by_fd");
	fd = create("info", BPF_MAP_TYPE_HASH, "info_map.x_1", 8, 16, 32, BPF_F_NO_PREALLOC);
	if (fd < 0)
		return;
	memset(buf, 0, sizeof(buf));
	len = 16;
	CALL(bpf_obj_get_info_by_fd(fd, buf, &len));
	printf("  len %u\n", len);
	hex("type", buf, 4);
	hex("sizes", buf + 8, 8);   /* after the id */
	len = sizeof(buf);
	CALL(bpf_obj_get_info_by_fd(fd, buf, &len));
	printf("  len %u\n", len);
	buf[sizeof(struct bpf_map_info) + 3] = 1;
	len = sizeof(buf);
	CALL(bpf_obj_get_info_by_fd(fd, buf, &len));
	len = 0;
	CALL(bpf_obj_get_info_by_fd(fd, buf, &len));
	printf("  len %u\n", len);
	len = 16;
	CALL(bpf_obj_get_info_by_fd(fd, (void *)8, &len));
	len = 16;
	CALL(bpf_obj_get_info_by_fd(-1, buf, &len));
	nfd = open("/dev/null", O_RDONLY);
	len = 16;
	CALL(bpf_obj_get_info_by_fd(nfd, buf, &len));
	CALL(bpf_map_update_elem(nfd, buf, buf, 0));
	CALL(bpf_map_lookup_elem(nfd, buf, buf));
	CALL(bpf_map_freeze(nfd));
	CALL(bpf_map_freeze(-1));
	CALL(bpf_map_lookup_elem(-1, buf, buf));
	CALL(bpf_map_get_next_key(1000, NULL, buf));
	close(nfd);
	close(fd);
	/* name: libbpf copies at most 15 characters */
	fd = create("long name", BPF_MAP_TYPE_ARRAY, "a_very_long_map_name_here", 4, 4, 1, 0);
	if (fd >= 0)
		close(fd);
}

static void test_mmap(void)
{
	__u32 k;
	__u64 v;
	int fd;
	volatile __u64 *m;
	long ps = sysconf(_SC_PAGESIZE);

	section("mmapable array");
	fd = create("mmap array", BPF_MAP_TYPE_ARRAY, "mm", 4, 8, 16, BPF_F_MMAPABLE);
	if (fd < 0)
		return;
	m = mmap(NULL, ps, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	printf("mmap rw: %s\n", m == MAP_FAILED ? ename(errno) : "ok");
	if (m == MAP_FAILED)
		return;
	m[3] = 0xabcdef;
	k = 3;
	CALL(bpf_map_lookup_elem(fd, &k, &v));
	hex("value", &v, 8);
	k = 5; v = 55;
	CALL(bpf_map_update_elem(fd, &k, &v, BPF_ANY));
	printf("  m[5] = %llu\n", (unsigned long long)m[5]);
	CALL(bpf_map_freeze(fd));        /* writable mapping: EBUSY */
	munmap((void *)m, ps);
	errno = 0;
	m = mmap(NULL, 2 * ps, PROT_READ, MAP_SHARED, fd, 0);   /* past the value area */
	printf("mmap 2 pages: %s\n", m == MAP_FAILED ? ename(errno) : "ok");
	if (m != MAP_FAILED)
		munmap((void *)m, 2 * ps);
	CALL(bpf_map_freeze(fd));
	errno = 0;
	m = mmap(NULL, ps, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	printf("mmap rw after freeze: %s\n", m == MAP_FAILED ? ename(errno) : "ok");
	errno = 0;
	m = mmap(NULL, ps, PROT_READ, MAP_SHARED, fd, 0);
	printf("mmap ro after freeze: %s\n", m == MAP_FAILED ? ename(errno) : "ok");
	if (m != MAP_FAILED) {
		printf("  m[3] = %#llx\n", (unsigned long long)m[3]);
		munmap((void *)m, ps);
	}
	close(fd);
	fd = create("plain array", BPF_MAP_TYPE_ARRAY, "nomm", 4, 8, 16, 0);
	if (fd >= 0) {
		errno = 0;
		m = mmap(NULL, ps, PROT_READ, MAP_SHARED, fd, 0);
		printf("mmap non-mmapable: %s\n", m == MAP_FAILED ? ename(errno) : "ok");
		close(fd);
	}
}

/* struct { struct bpf_spin_lock l; __u32 pad; __u64 cnt; } in BTF */
static void test_spin_lock(void)
{
	struct { __u32 l, pad; __u64 cnt; } val;
	struct btf *btf = btf__new_empty();
	int u32, u64, sl, vt, bfd, fd, r;
	__u32 k = 1;

	section("bpf_spin_lock value (BTF)");
	u32 = btf__add_int(btf, "unsigned int", 4, 0);
	u64 = btf__add_int(btf, "unsigned long long", 8, 0);
	sl = btf__add_struct(btf, "bpf_spin_lock", 4);
	btf__add_field(btf, "val", u32, 0, 0);
	vt = btf__add_struct(btf, "val", 16);
	btf__add_field(btf, "l", sl, 0, 0);
	btf__add_field(btf, "pad", u32, 32, 0);
	btf__add_field(btf, "cnt", u64, 64, 0);
	errno = 0;
	r = btf__load_into_kernel(btf);
	res("btf__load_into_kernel", r);
	bfd = btf__fd(btf);
	if (r || bfd < 0)
		goto out;
	{
		struct bpf_btf_info bi = {};
		__u32 len = sizeof(bi);
		CALL(bpf_obj_get_info_by_fd(bfd, &bi, &len));
		printf("  btf size %u\n", bi.btf_size);
	}
	for (int t = 0; t < 2; t++) {
		LIBBPF_OPTS(bpf_map_create_opts, o, .btf_fd = bfd, .btf_key_type_id = u32, .btf_value_type_id = vt);
		enum bpf_map_type mt = t ? BPF_MAP_TYPE_ARRAY : BPF_MAP_TYPE_HASH;
		fd = create(t ? "locked array" : "locked hash", mt, "locked", 4, 16, 4, 0);
		if (fd >= 0)
			close(fd);       /* created without BTF: F_LOCK refused below */
		errno = 0;
		fd = bpf_map_create(mt, "locked", 4, 16, 4, &o);
		fdres("create with btf", fd);
		if (fd < 0)
			continue;
		info("locked", fd);
		val.l = 0x5555; val.pad = 7; val.cnt = 41;
		CALL(bpf_map_update_elem(fd, &k, &val, BPF_ANY));
		memset(&val, 0xff, sizeof(val));
		CALL(bpf_map_lookup_elem(fd, &k, &val));
		hex("value", &val, sizeof(val));
		val.l = 0x5555; val.cnt = 42;
		CALL(bpf_map_update_elem(fd, &k, &val, BPF_F_LOCK));
		CALL(bpf_map_update_elem(fd, &k, &val, BPF_F_LOCK | BPF_NOEXIST));
		CALL(bpf_map_update_elem(fd, &k, &val, BPF_F_LOCK | BPF_EXIST));
		memset(&val, 0xff, sizeof(val));
		CALL(bpf_map_lookup_elem_flags(fd, &k, &val, BPF_F_LOCK));
		hex("value", &val, sizeof(val));
		CALL(bpf_map_lookup_elem_flags(fd, &k, &val, BPF_F_LOCK | 1));
		k = 2;
		CALL(bpf_map_update_elem(fd, &k, &val, BPF_F_LOCK));
		CALL(bpf_map_lookup_and_delete_elem_flags(fd, &k, &val, BPF_F_LOCK));
		k = 1;
		{
			__u32 keys[2] = { 1, 3 }, outk[4], count = 2, ob;
			__u8 vals[64], outv[64];
			LIBBPF_OPTS(bpf_map_batch_opts, bo, .elem_flags = BPF_F_LOCK);
			memset(vals, 0x11, sizeof(vals));
			CALL(bpf_map_update_batch(fd, keys, vals, &count, &bo));
			printf("  count %u\n", count);
			count = 4;
			memset(outv, 0xff, sizeof(outv));
			r = CALL(bpf_map_lookup_batch(fd, NULL, &ob, outk, outv, &count, &bo));
			printf("  count %u\n", count);
			if (t == 1 || count == 2) {
				/* hash order: print the value of key 1 only */
				for (__u32 i = 0; i < count; i++)
					if (outk[i] == 1)
						hex("key 1 value", outv + 16 * i, 16);
			}
		}
		CALL(bpf_map_freeze(fd));
		close(fd);
	}
out:
	btf__free(btf);
}

int main(int argc, char **argv)
{
	if (argc < 3) {
		fprintf(stderr, "usage: %s PIN_DIR OTHER_DIR\n", argv[0]);
		return 2;
	}
	setvbuf(stdout, NULL, _IOLBF, 0);
	snprintf(pin_dir, sizeof(pin_dir), "%s", argv[1]);
	snprintf(other_dir, sizeof(other_dir), "%s", argv[2]);
	ncpus = libbpf_num_possible_cpus();
	printf("possible cpus: %d\n", ncpus);
	test_create_errors();
	test_hash();
	test_array();
	test_percpu();
	test_lru();
	test_queue_stack();
	test_batch_hash();
	test_batch_array();
	test_pin();
	test_info();
	test_mmap();
	test_spin_lock();
	printf("done\n");
	return 0;
}

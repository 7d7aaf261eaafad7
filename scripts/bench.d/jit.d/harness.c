/* SPDX-License-Identifier: MIT */
/*
 * Times the benchmark programs (progs/<name>.c) per call, in this process:
 *
 *   harness native NAME...            the native build, called in a loop
 *   harness bpf OBJDIR NAME...        OBJDIR/<name>.bpf.o loaded through bpf()
 *                                     and run by BPF_PROG_TEST_RUN with repeat=N
 *                                     (the kernel, or bpfshim's in-process
 *                                     runner when libbpfshim.so is preloaded)
 *
 * Options (before the mode): -t MS  time per measurement (default 300),
 *   -1  one call per program (retval only: the differential test),
 *   -x DIR  (bpf) write DIR/<name>.xlated and DIR/<name>.maps (the loaded
 *           program's instructions and map ids, for timing the AOT compiler).
 * Prints one line per program: name ns_per_call retval load_ms native_ns,
 * the last the native build timed in the same rounds (batches alternate).
 * Both builds get the same input: bench_init_<name>() fills the native
 * memory and those bytes become the BPF object's .data before it loads.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include "bench.h"
#undef bpf_map_lookup_elem
#undef bpf_map_update_elem

static double target_ms = 300;
static int once;
static const char *xdir;

static uint64_t clock_ns(clockid_t c)
{
	struct timespec ts;

	clock_gettime(c, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* Batches are timed in this thread's CPU time: the machine may be shared,
 * and time spent descheduled is no engine's. */
static uint64_t now_ns(void)
{
	return clock_ns(CLOCK_THREAD_CPUTIME_ID);
}

/* ---- the native map behind BENCH_HASH: open addressing, linear probing ---- */

struct native_table {
	u32 slots, used;
	u8 *keys, *vals, *full;
};

static u32 mix(const u8 *k, u32 n)
{
	u64 h = 0x9e3779b97f4a7c15ull;

	for (u32 i = 0; i < n; i++)
		h = (h ^ k[i]) * 0xff51afd7ed558ccdull;
	return (u32)(h ^ h >> 32);
}

static struct native_table *table_of(struct native_map *m)
{
	struct native_table *t = m->impl;

	if (t)
		return t;
	t = calloc(1, sizeof(*t));
	t->slots = 1;
	while (t->slots < 2 * m->max_entries)
		t->slots <<= 1;
	t->keys = calloc(t->slots, m->key_size);
	t->vals = calloc(t->slots, m->value_size);
	t->full = calloc(t->slots, 1);
	m->impl = t;
	return t;
}

static long find(struct native_map *m, const void *key)
{
	struct native_table *t = table_of(m);

	for (u32 i = mix(key, m->key_size) & (t->slots - 1);; i = (i + 1) & (t->slots - 1)) {
		if (!t->full[i])
			return -(long)i - 1;
		if (!memcmp(t->keys + (size_t)i * m->key_size, key, m->key_size))
			return i;
	}
}

__attribute__((noinline)) void *native_map_lookup_elem(void *map, const void *key)
{
	struct native_map *m = map;
	long i = find(m, key);

	return i < 0 ? NULL : table_of(m)->vals + (size_t)i * m->value_size;
}

__attribute__((noinline)) long native_map_update_elem(void *map, const void *key, const void *value, u64 flags)
{
	struct native_map *m = map;
	struct native_table *t = table_of(m);
	long i = find(m, key);

	if (i < 0) {
		if (t->used >= m->max_entries)
			return -E2BIG;
		i = -i - 1;
		t->used++;
		t->full[i] = 1;
		memcpy(t->keys + (size_t)i * m->key_size, key, m->key_size);
	}
	memcpy(t->vals + (size_t)i * m->value_size, value, m->value_size);
	return 0;
}

/* ---- timing ---- */

typedef int (*batch_fn)(void *arg, u32 n, u32 *ret);

/* Calls per batch: doubled until a batch takes a tenth of the target time. */
static u32 calibrate(batch_fn batch, void *arg)
{
	u32 n = 1, ret;

	for (;;) {
		uint64_t t0 = now_ns();
		if (batch(arg, n, &ret))
			return 0;
		double dt = (double)(now_ns() - t0);
		if (dt * 10 >= target_ms * 1e6 || n >= (1u << 30))
			return n;
		n = dt < 1000 ? n * 16 : n * 2;
	}
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

/* ns per call of each of k engines (k <= 2), median of five rounds in which
 * their batches alternate, so that both see the same machine (other work on
 * it changes from second to second). */
#define ROUNDS 5
static int time_calls(int k, batch_fn *batch, void **arg, double *ns)
{
	double per[2][ROUNDS];
	u32 n[2], ret;

	for (int e = 0; e < k; e++)
		if (!(n[e] = calibrate(batch[e], arg[e])))
			return -1;
	for (int r = 0; r < ROUNDS; r++)
		for (int e = 0; e < k; e++) {
			uint64_t t0 = now_ns();
			if (batch[e](arg[e], n[e], &ret))
				return -1;
			per[e][r] = (double)(now_ns() - t0) / n[e];
		}
	for (int e = 0; e < k; e++) {
		qsort(per[e], ROUNDS, sizeof(double), cmp_double);
		ns[e] = per[e][ROUNDS / 2];
	}
	return 0;
}

static void *sym(const char *prefix, const char *name)
{
	char buf[128];
	void *p;

	snprintf(buf, sizeof(buf), "%s%s", prefix, name);
	p = dlsym(RTLD_DEFAULT, buf);
	if (!p) {
		fprintf(stderr, "harness: no %s (program not linked in)\n", buf);
		exit(2);
	}
	return p;
}

static void init_mem(const char *name)
{
	((void (*)(void *))sym("bench_init_", name))(*(void **)sym("bench_mem_", name));
}

static int native_batch(void *fn, u32 n, u32 *ret)
{
	u32 (*f)(void) = (u32 (*)(void))fn;
	u32 r = 0;

	for (u32 i = 0; i < n; i++)
		r = f();
	*ret = r;
	return 0;
}

static int run_native(const char *name)
{
	void *fn = sym("bench_", name);
	u32 ret;

	double ns = 0;

	init_mem(name);
	native_batch(fn, 1, &ret);
	if (!once && time_calls(1, (batch_fn[]){ native_batch }, (void *[]){ fn }, &ns))
		return -1;
	printf("%s %.3f %u 0 %.3f\n", name, ns, ret, ns);
	return 0;
}

struct bpf_arg {
	int fd;
};

static int bpf_batch(void *p, u32 n, u32 *ret)
{
	struct bpf_arg *a = p;
	unsigned char pkt[64] = { 0 };
	LIBBPF_OPTS(bpf_test_run_opts, o, .data_in = pkt, .data_size_in = sizeof(pkt), .repeat = n);
	int err = bpf_prog_test_run_opts(a->fd, &o);

	if (err) {
		fprintf(stderr, "harness: BPF_PROG_TEST_RUN: %s\n", strerror(errno));
		return -1;
	}
	*ret = o.retval;
	return 0;
}

static int dump_xlated(const char *name, int fd)
{
	struct bpf_prog_info info = { 0 };
	__u32 len = sizeof(info), nmaps;
	char path[512];
	FILE *f;

	if (bpf_obj_get_info_by_fd(fd, &info, &len))
		return -1;
	nmaps = info.nr_map_ids;
	void *insns = calloc(1, info.xlated_prog_len);
	__u32 *ids = calloc(nmaps + 1, 4);
	__u32 xlen = info.xlated_prog_len;
	memset(&info, 0, sizeof(info));
	info.xlated_prog_len = xlen;
	info.xlated_prog_insns = (uintptr_t)insns;
	info.nr_map_ids = nmaps;
	info.map_ids = (uintptr_t)ids;
	len = sizeof(info);
	if (bpf_obj_get_info_by_fd(fd, &info, &len))
		return -1;
	snprintf(path, sizeof(path), "%s/%s.xlated", xdir, name);
	f = fopen(path, "wb");
	fwrite(insns, 1, xlen, f);
	fclose(f);
	snprintf(path, sizeof(path), "%s/%s.maps", xdir, name);
	f = fopen(path, "wb");
	fwrite(ids, 4, nmaps, f);
	fclose(f);
	free(insns);
	free(ids);
	return 0;
}

static int run_bpf(const char *dir, const char *name)
{
	char path[512];
	struct bpf_object *obj;
	struct bpf_map *m, *data = NULL;
	size_t size = *(const size_t *)sym("bench_mem_size_", name);
	void *mem = *(void **)sym("bench_mem_", name);
	struct bpf_arg a;
	u32 ret = 0;

	snprintf(path, sizeof(path), "%s/%s.bpf.o", dir, name);
	obj = bpf_object__open_file(path, NULL);
	if (!obj) {
		fprintf(stderr, "harness: open %s: %s\n", path, strerror(errno));
		return -1;
	}
	bpf_object__for_each_map(m, obj) {
		const char *mn = bpf_map__name(m);
		if (strlen(mn) >= 5 && !strcmp(mn + strlen(mn) - 5, ".data"))
			data = m;
	}
	if (!data || bpf_map__value_size(data) != size) {
		fprintf(stderr, "harness: %s: no .data of %zu bytes\n", path, size);
		return -1;
	}
	init_mem(name);
	if (bpf_map__set_initial_value(data, mem, size))
		return -1;
	uint64_t t0 = clock_ns(CLOCK_MONOTONIC);
	if (bpf_object__load(obj)) {
		fprintf(stderr, "harness: load %s: %s\n", path, strerror(errno));
		printf("%s - - - -\n", name);
		bpf_object__close(obj);
		return 0;
	}
	double load_ms = (double)(clock_ns(CLOCK_MONOTONIC) - t0) / 1e6;
	a.fd = bpf_program__fd(bpf_object__next_program(obj, NULL));
	if (xdir && dump_xlated(name, a.fd))
		return -1;
	if (bpf_batch(&a, 1, &ret))
		return -1;
	double ns[2] = { 0, 0 };
	if (!once && time_calls(2, (batch_fn[]){ bpf_batch, native_batch },
				(void *[]){ &a, sym("bench_", name) }, ns))
		return -1;
	printf("%s %.3f %u %.3f %.3f\n", name, ns[0], ret, load_ms, ns[1]);
	fflush(stdout);
	bpf_object__close(obj);
	return 0;
}

/* libbpf's own messages include whole verifier logs: only the failure is reported. */
static int quiet(enum libbpf_print_level level, const char *fmt, va_list ap)
{
	return getenv("HARNESS_VERBOSE") && level == LIBBPF_WARN ? vfprintf(stderr, fmt, ap) : 0;
}

int main(int argc, char **argv)
{
	int i = 1, rc = 0;

	for (; i < argc && argv[i][0] == '-'; i++) {
		if (!strcmp(argv[i], "-t") && i + 1 < argc)
			target_ms = atof(argv[++i]);
		else if (!strcmp(argv[i], "-1"))
			once = 1;
		else if (!strcmp(argv[i], "-x") && i + 1 < argc)
			xdir = argv[++i];
		else
			break;
	}
	if (i < argc && !strcmp(argv[i], "native")) {
		for (i++; i < argc; i++)
			rc |= run_native(argv[i]);
		return rc ? 1 : 0;
	}
	if (i + 1 < argc && !strcmp(argv[i], "bpf")) {
		const char *dir = argv[i + 1];
		libbpf_set_print(quiet);
		for (i += 2; i < argc; i++)
			rc |= run_bpf(dir, argv[i]) ? 1 : 0;
		return rc;
	}
	fprintf(stderr, "usage: harness [-t MS] [-1] [-x DIR] native NAME... | bpf OBJDIR NAME...\n");
	return 2;
}

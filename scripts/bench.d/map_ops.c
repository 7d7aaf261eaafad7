/* ns per bpf(MAP_LOOKUP_ELEM) / bpf(MAP_UPDATE_ELEM) from a C loader, through
 * libc's syscall() as real loaders do. Prints one line per case:
 *   <map> <op> <ns per call>
 * Run plain for the kernel, with libbpfshim.so preloaded for bpfshim. */
#include <linux/bpf.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/syscall.h>

static long sys_bpf(int cmd, union bpf_attr *a)
{
	return syscall(SYS_bpf, cmd, a, sizeof(*a));
}

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e9 + ts.tv_nsec;
}

static int create(int type)
{
	union bpf_attr a;
	memset(&a, 0, sizeof(a));
	a.map_type = type;
	a.key_size = 4;
	a.value_size = 8;
	a.max_entries = 1024;
	return (int)sys_bpf(BPF_MAP_CREATE, &a);
}

static void bench(const char *name, int fd, int iters)
{
	union bpf_attr a;
	uint32_t key;
	uint64_t val = 1;
	double t0, best_l = 1e18, best_u = 1e18;

	for (key = 0; key < 1024; key++) {
		memset(&a, 0, sizeof(a));
		a.map_fd = fd; a.key = (uintptr_t)&key; a.value = (uintptr_t)&val;
		if (sys_bpf(BPF_MAP_UPDATE_ELEM, &a)) { perror("update"); return; }
	}
	for (int round = 0; round < 5; round++) {
		t0 = now();
		for (int i = 0; i < iters; i++) {
			key = i & 1023;
			memset(&a, 0, sizeof(a));
			a.map_fd = fd; a.key = (uintptr_t)&key; a.value = (uintptr_t)&val;
			sys_bpf(BPF_MAP_LOOKUP_ELEM, &a);
		}
		double l = (now() - t0) / iters;
		t0 = now();
		for (int i = 0; i < iters; i++) {
			key = i & 1023; val = i;
			memset(&a, 0, sizeof(a));
			a.map_fd = fd; a.key = (uintptr_t)&key; a.value = (uintptr_t)&val;
			sys_bpf(BPF_MAP_UPDATE_ELEM, &a);
		}
		double u = (now() - t0) / iters;
		if (l < best_l) best_l = l;
		if (u < best_u) best_u = u;
	}
	printf("%s lookup %.1f\n%s update %.1f\n", name, best_l, name, best_u);
}

int main(int argc, char **argv)
{
	int iters = argc > 1 ? atoi(argv[1]) : 200000;
	int h = create(BPF_MAP_TYPE_HASH), a = create(BPF_MAP_TYPE_ARRAY);
	if (h < 0 || a < 0) { perror("map create"); return 1; }
	bench("hash", h, iters);
	bench("array", a, iters);
	return 0;
}

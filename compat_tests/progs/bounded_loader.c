/* SPDX-License-Identifier: MIT */
/*
 * Programs whose runs the kernel bounds at load and bpfshim at run time
 * (compat_tests/test_bounded_runs.py), as raw instructions through bpf():
 *
 *   bounded_loader deadline SECS [EXE OFFSET HOLD_S]
 *       the deadline loop: r6 = ktime + SECS; do r8++ while ktime < r6.
 *       It starts with a call of a subprogram that returns 0, so that no
 *       verifier model of bpfshim's decides the loop (the kernel refuses
 *       it; bpfshim loads it: the run budget, not the verifier, must end it).
 *       Prints "load <fd or -errno>"; with EXE, attaches it to a uprobe at
 *       EXE+OFFSET (uprobe PMU, PERF_EVENT_IOC_SET_BPF), prints "attached"
 *       and exits after HOLD_S seconds (0: when stdin closes).
 *   bounded_loader loop NR
 *       a raw_tracepoint program returning bpf_loop(NR, callback, 0, 0)
 *       (the callback returns 0), run once by BPF_PROG_TEST_RUN: prints
 *       "load <fd or -errno>" and "run <rc> <retval>".
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <linux/bpf.h>
#include <linux/perf_event.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>

#define I(c, d, s, o, i) ((struct bpf_insn){ .code = (c), .dst_reg = (d), .src_reg = (s), .off = (o), .imm = (i) })
#define LDDW(d, s, v) I(BPF_LD | BPF_DW | BPF_IMM, d, s, 0, (int32_t)(uint32_t)(v)), I(0, 0, 0, 0, (int32_t)((uint64_t)(v) >> 32))
#define CALL(f) I(BPF_JMP | BPF_CALL, 0, 0, 0, f)
#define EXIT I(BPF_JMP | BPF_EXIT, 0, 0, 0, 0)

static char log_buf[65536];

static long sys_bpf(int cmd, union bpf_attr *a)
{
	return syscall(SYS_bpf, cmd, a, sizeof(*a));
}

/* BTF of two static functions `int f(void)` (main at 0, callback at cb):
 * the kernel wants func_info for a program with a callback. */
static int btf_fd = -1;
static struct bpf_func_info func_info[2];

static int load_btf(void)
{
	static const char strs[] = "\0int\0main\0cb";
	uint32_t types[] = {
		1, 1u << 24, 4, (1u << 24) | 32,   /* [1] int: INT, signed, 32 bits */
		0, 13u << 24, 1,                   /* [2] FUNC_PROTO int (void) */
		5, 12u << 24, 2,                   /* [3] FUNC main, static */
		10, 12u << 24, 2,                  /* [4] FUNC cb, static */
	};
	static char blob[256];
	struct { uint16_t magic; uint8_t version, flags; uint32_t hdr_len, type_off, type_len, str_off, str_len; } h = {
		0xeB9F, 1, 0, 24, 0, sizeof(types), sizeof(types), sizeof(strs)
	};
	union bpf_attr a;

	memcpy(blob, &h, sizeof(h));
	memcpy(blob + 24, types, sizeof(types));
	memcpy(blob + 24 + sizeof(types), strs, sizeof(strs));
	memset(&a, 0, sizeof(a));
	a.btf = (uintptr_t)blob;
	a.btf_size = 24 + sizeof(types) + sizeof(strs);
	return (int)sys_bpf(BPF_BTF_LOAD, &a);
}

static int load(int type, const struct bpf_insn *insns, unsigned n)
{
	union bpf_attr a;

	memset(&a, 0, sizeof(a));
	if (btf_fd >= 0) {
		a.prog_btf_fd = btf_fd;
		a.func_info = (uintptr_t)func_info;
		a.func_info_cnt = 2;
		a.func_info_rec_size = sizeof(func_info[0]);
	}
	a.prog_type = type;
	a.insns = (uintptr_t)insns;
	a.insn_cnt = n;
	a.license = (uintptr_t)"GPL";
	a.log_buf = (uintptr_t)log_buf;
	a.log_size = sizeof(log_buf);
	a.log_level = 1;
	int fd = (int)sys_bpf(BPF_PROG_LOAD, &a);
	if (fd < 0) {
		fd = -errno;
		/* the verdict: the log's last line */
		size_t len = strlen(log_buf);
		while (len && log_buf[len - 1] == '\n')
			log_buf[--len] = 0;
		char *last = strrchr(log_buf, '\n');
		fprintf(stderr, "verifier: %s\n", getenv("BL_FULL_LOG") ? log_buf : last ? last + 1 : log_buf);
	}
	printf("load %d\n", fd < 0 ? fd : 0);
	fflush(stdout);
	return fd;
}

static int uprobe_type(void)
{
	FILE *f = fopen("/sys/bus/event_source/devices/uprobe/type", "r");
	int t = -1;

	if (f) {
		if (fscanf(f, "%d", &t) != 1)
			t = -1;
		fclose(f);
	}
	return t;
}

static int deadline(int argc, char **argv)
{
	uint64_t ns = strtoull(argv[2], NULL, 10) * 1000000000ull;
	struct bpf_insn p[] = {
		I(BPF_JMP | BPF_CALL, 0, BPF_PSEUDO_CALL, 0, 11),   /* sub() at 12 */
		CALL(BPF_FUNC_ktime_get_ns),
		I(BPF_ALU64 | BPF_MOV | BPF_X, 6, 0, 0, 0),
		LDDW(7, 0, ns),
		I(BPF_ALU64 | BPF_ADD | BPF_X, 6, 7, 0, 0),
		I(BPF_ALU64 | BPF_MOV | BPF_K, 8, 0, 0, 0),
		I(BPF_ALU64 | BPF_ADD | BPF_K, 8, 0, 0, 1),           /* 7: loop */
		CALL(BPF_FUNC_ktime_get_ns),
		I(BPF_JMP | BPF_JGT | BPF_X, 6, 0, -3, 0),            /* deadline > now: again */
		I(BPF_ALU64 | BPF_MOV | BPF_K, 0, 0, 0, 0),
		EXIT,
		I(BPF_ALU64 | BPF_MOV | BPF_K, 0, 0, 0, 0),           /* 11 (+1 for lddw): sub */
		EXIT,
	};
	int fd = load(BPF_PROG_TYPE_KPROBE, p, sizeof(p) / sizeof(p[0]));

	if (fd < 0 || argc < 6)
		return fd < 0;
	struct perf_event_attr pa;
	memset(&pa, 0, sizeof(pa));
	pa.size = sizeof(pa);
	pa.type = uprobe_type();
	pa.config1 = (uintptr_t)argv[3];
	pa.config2 = strtoull(argv[4], NULL, 0);
	int pfd = (int)syscall(SYS_perf_event_open, &pa, -1, 0, -1, PERF_FLAG_FD_CLOEXEC);
	if (pfd < 0 || ioctl(pfd, PERF_EVENT_IOC_SET_BPF, fd) || ioctl(pfd, PERF_EVENT_IOC_ENABLE, 0)) {
		printf("attach %d\n", -errno);
		return 1;
	}
	printf("attached\n");
	fflush(stdout);
	int hold = atoi(argv[5]);
	if (hold > 0) {
		sleep((unsigned)hold);
	} else {
		char c;
		while (read(0, &c, 1) > 0)
			;
	}
	return 0;
}

static int loop(char **argv)
{
	uint32_t nr = (uint32_t)strtoul(argv[2], NULL, 0);
	struct bpf_insn p[] = {
		I(BPF_ALU | BPF_MOV | BPF_K, 1, 0, 0, (int32_t)nr),
		I(BPF_LD | BPF_DW | BPF_IMM, 2, BPF_PSEUDO_FUNC, 0, 5), I(0, 0, 0, 0, 0),   /* cb at 7 */
		I(BPF_ALU64 | BPF_MOV | BPF_K, 3, 0, 0, 0),
		I(BPF_ALU64 | BPF_MOV | BPF_K, 4, 0, 0, 0),
		CALL(BPF_FUNC_loop),
		EXIT,
		I(BPF_ALU64 | BPF_MOV | BPF_K, 0, 0, 0, 0),   /* 7: cb(i, ctx) */
		EXIT,
	};
	btf_fd = load_btf();
	if (btf_fd < 0) {
		printf("btf %d\n", -errno);
		return 1;
	}
	func_info[0] = (struct bpf_func_info){ 0, 3 };
	func_info[1] = (struct bpf_func_info){ 7, 4 };
	int fd = load(BPF_PROG_TYPE_RAW_TRACEPOINT, p, sizeof(p) / sizeof(p[0]));
	if (fd < 0)
		return 1;
	uint64_t args[1] = { 0 };
	union bpf_attr a;
	memset(&a, 0, sizeof(a));
	a.test.prog_fd = fd;
	a.test.ctx_in = (uintptr_t)args;
	a.test.ctx_size_in = sizeof(args);
	long rc = sys_bpf(BPF_PROG_TEST_RUN, &a);
	printf("run %ld %u\n", rc < 0 ? -errno : rc, a.test.retval);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc >= 3 && !strcmp(argv[1], "deadline"))
		return deadline(argc, argv);
	if (argc >= 3 && !strcmp(argv[1], "loop"))
		return loop(argv);
	fprintf(stderr, "usage: bounded_loader deadline SECS [EXE OFFSET HOLD_S] | loop NR\n");
	return 2;
}

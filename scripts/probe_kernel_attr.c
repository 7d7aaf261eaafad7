/* probe_kernel_attr: measure, on the running kernel, the attr-checking facts of
 * bpf(2) that bpfshim must reproduce (run as root; kernel eBPF needed).
 *
 *   cc -O2 -Iagent/include/uapi -o probe_kernel_attr scripts/probe_kernel_attr.c
 *   ./probe_kernel_attr            prints "key value" lines (see below)
 *
 * attr_size N      bpf_check_uarg_tail_zero: with size = 4096, a non-zero byte at
 *                  offset >= N gives E2BIG; N is the kernel's sizeof(union bpf_attr)
 * page_e2big 0|1   size = PAGE_SIZE + 1 (all zero) gives E2BIG
 * max_cmd N        first command number >= __MAX_BPF_CMD answered EINVAL for an
 *                  all-zero attr of every size (unknown command)
 * info TYPE N      BPF_OBJ_GET_INFO_BY_FD with a 4096-byte zeroed buffer: the
 *                  info_len the kernel writes back (its sizeof(struct bpf_TYPE_info))
 * tail CMD N OK    CHECK_ATTR of command CMD: N - 1 is the highest byte of the
 *                  attr (of attr_size bytes) that can be non-zero without EINVAL
 *                  (a result other than EINVAL proves CHECK_ATTR passed), OK is 1
 *                  when 0xff at every byte >= N gives EINVAL. N is the kernel's
 *                  offsetofend(LAST_FIELD) up to the end of the field holding byte
 *                  N - 1, or lower when the last field rejects every non-zero value
 *                  (e.g. iter_create.flags)
 *
 *   ./probe_kernel_attr tail 0 5 ...   only the tail lines of those commands
 *   ./probe_kernel_attr summary        every line but the tail lines
 *
 * The baseline attr is all zero with fd 0 closed, so an fd field of 0 is EBADF
 * rather than "not a bpf object" (EINVAL). fds a probe creates are closed.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <linux/bpf.h>

static long sys_bpf(int cmd, void *attr, unsigned int size)
{
	long r = syscall(SYS_bpf, cmd, attr, size);
	return r < 0 ? -errno : r;
}

/* Close what a probe created: any fd the call returned. */
static long probe(int cmd, void *attr, unsigned int size)
{
	long r = sys_bpf(cmd, attr, size);
	if (r >= 0 && cmd != BPF_PROG_STREAM_READ_BY_FD && r < 65536)
		close((int)r);
	return r;
}

static int attr_size(void)
{
	static unsigned char buf[4096];
	for (int k = 0; k < (int)sizeof(buf); k++) {
		memset(buf, 0, sizeof(buf));
		buf[k] = 1;
		if (probe(BPF_MAP_GET_NEXT_ID, buf, sizeof(buf)) == -E2BIG)
			return k;
	}
	return -1;
}

static int max_cmd(void)
{
	union bpf_attr a;
	for (int cmd = 0; cmd < 1024; cmd++) {
		memset(&a, 0, sizeof(a));
		/* every known command with a zero attr fails for another reason or
		 * succeeds; EINVAL for all of sizes 0, 8 and the full union means the
		 * command is unknown (also EINVAL) - take the first run of such */
		int unknown = 1;
		for (unsigned int sz = 0; sz <= sizeof(a); sz += sizeof(a) / 2)
			if (probe(cmd, &a, sz) != -EINVAL)
				unknown = 0;
		if (unknown && cmd >= __MAX_BPF_CMD)
			return cmd;
	}
	return -1;
}

/* Per-command baseline: all zero except what lets a command get past its own
 * argument checks, so that a set byte inside the last field is not EINVAL. */
static int base_map_fd = -1;

static void baseline(int cmd, union bpf_attr *a)
{
	memset(a, 0, sizeof(*a));
	switch (cmd) {
	case BPF_MAP_CREATE:
		a->map_type = BPF_MAP_TYPE_ARRAY;
		a->key_size = 4;
		a->value_size = 8;
		a->max_entries = 1;
		break;
	case BPF_OBJ_PIN:		/* a bpf object, pathname NULL: EFAULT */
		a->bpf_fd = base_map_fd;
		break;
	case BPF_MAP_LOOKUP_ELEM: case BPF_MAP_UPDATE_ELEM: case BPF_MAP_DELETE_ELEM:
	case BPF_MAP_GET_NEXT_KEY: case BPF_MAP_LOOKUP_AND_DELETE_ELEM: case BPF_MAP_FREEZE:
		a->map_fd = base_map_fd;
		break;
	}
}

/* Is byte k inside the fields the command reads (CHECK_ATTR passed)? Any
 * result other than EINVAL proves it; try each single bit at k, then each
 * single bit at k together with each single bit at an earlier byte j (a flag
 * that enables the field, e.g. BPF_F_PATH_FD for path_fd). */
static int byte_used(int cmd, int k, int size)
{
	union bpf_attr base;
	unsigned char buf[4096];

	baseline(cmd, &base);
	for (int bit = 0; bit < 8; bit++) {
		memset(buf, 0, sizeof(buf));
		memcpy(buf, &base, sizeof(base));
		buf[k] ^= (unsigned char)(1u << bit);
		if (probe(cmd, buf, size) != -EINVAL)
			return 1;
	}
	for (int j = 0; j < k; j++)
		for (int bj = 0; bj < 8; bj++)
			for (int bit = 0; bit < 8; bit++) {
				memset(buf, 0, sizeof(buf));
				memcpy(buf, &base, sizeof(base));
				buf[j] ^= (unsigned char)(1u << bj);
				buf[k] ^= (unsigned char)(1u << bit);
				if (probe(cmd, buf, size) != -EINVAL)
					return 1;
			}
	return 0;
}

static void tails(int size, int cmd)
{
	union bpf_attr a;
	memset(&a, 0, sizeof(a));
	a.map_type = BPF_MAP_TYPE_HASH;
	a.key_size = 4;
	a.value_size = 8;
	a.max_entries = 4;
	base_map_fd = (int)sys_bpf(BPF_MAP_CREATE, &a, sizeof(a));

	{
		/* the highest byte the command reads; every byte past it is EINVAL */
		int k = size - 1;
		while (k >= 0 && !byte_used(cmd, k, size))
			k--;
		/* and the tail past it is rejected whatever the baseline byte */
		int tail_ok = 1;
		union bpf_attr base;
		unsigned char buf[4096];
		baseline(cmd, &base);
		for (int t = k + 1; t < size && tail_ok; t++) {
			memset(buf, 0, sizeof(buf));
			memcpy(buf, &base, sizeof(base));
			buf[t] ^= 0xff;
			if (probe(cmd, buf, size) != -EINVAL)
				tail_ok = 0;
		}
		printf("tail %d %d %d\n", cmd, k + 1, tail_ok);
		fflush(stdout);
	}
	close(base_map_fd);
}

static void info_len(const char *type, int fd)
{
	static unsigned char info[4096];
	union bpf_attr a;
	memset(&a, 0, sizeof(a));
	memset(info, 0, sizeof(info));
	a.info.bpf_fd = fd;
	a.info.info_len = sizeof(info);
	a.info.info = (uintptr_t)info;
	long r = sys_bpf(BPF_OBJ_GET_INFO_BY_FD, &a, sizeof(a));
	printf("info %s %d\n", type, r == 0 ? (int)a.info.info_len : (int)r);
}

static void infos(void)
{
	union bpf_attr a;

	memset(&a, 0, sizeof(a));
	a.map_type = BPF_MAP_TYPE_ARRAY;
	a.key_size = 4;
	a.value_size = 8;
	a.max_entries = 1;
	int map_fd = (int)sys_bpf(BPF_MAP_CREATE, &a, sizeof(a));
	info_len("map", map_fd);

	/* r0 = 0; exit */
	struct bpf_insn insns[] = {
		{ .code = BPF_ALU64 | BPF_MOV | BPF_K, .dst_reg = 0, .imm = 0 },
		{ .code = BPF_JMP | BPF_EXIT },
	};
	memset(&a, 0, sizeof(a));
	a.prog_type = BPF_PROG_TYPE_SOCKET_FILTER;
	a.insns = (uintptr_t)insns;
	a.insn_cnt = 2;
	a.license = (uintptr_t)"GPL";
	int prog_fd = (int)sys_bpf(BPF_PROG_LOAD, &a, sizeof(a));
	info_len("prog", prog_fd);

	/* the smallest BTF: header + one int type "int" */
	struct {
		struct { uint16_t magic; uint8_t version, flags; uint32_t hdr_len, type_off, type_len, str_off, str_len; } hdr;
		uint32_t type[4];
		char str[5];
	} __attribute__((packed)) btf = {
		.hdr = { 0xeB9F, 1, 0, 24, 0, 16, 16, 5 },
		.type = { 1, 1u << 24, 4, 32 },	/* name_off 1, BTF_KIND_INT, size 4, bits 32 */
		.str = "\0int",
	};
	memset(&a, 0, sizeof(a));
	a.btf = (uintptr_t)&btf;
	a.btf_size = sizeof(btf);
	int btf_fd = (int)sys_bpf(BPF_BTF_LOAD, &a, sizeof(a));
	info_len("btf", btf_fd);

	/* a link: a RAW_TRACEPOINT program opened on sys_enter */
	struct bpf_insn tp_insns[] = {
		{ .code = BPF_ALU64 | BPF_MOV | BPF_K, .dst_reg = 0, .imm = 0 },
		{ .code = BPF_JMP | BPF_EXIT },
	};
	memset(&a, 0, sizeof(a));
	a.prog_type = BPF_PROG_TYPE_RAW_TRACEPOINT;
	a.insns = (uintptr_t)tp_insns;
	a.insn_cnt = 2;
	a.license = (uintptr_t)"GPL";
	int tp_fd = (int)sys_bpf(BPF_PROG_LOAD, &a, sizeof(a));
	memset(&a, 0, sizeof(a));
	a.raw_tracepoint.name = (uintptr_t)"sys_enter";
	a.raw_tracepoint.prog_fd = tp_fd;
	int link_fd = (int)sys_bpf(BPF_RAW_TRACEPOINT_OPEN, &a, sizeof(a));
	info_len("link", link_fd);

	close(map_fd);
	close(prog_fd);
	close(btf_fd);
	close(link_fd);
	close(tp_fd);
}

int main(int argc, char **argv)
{
	static unsigned char big[4097 + 4096];
	int size;

	/* fd 0 closed: a zero fd field is EBADF, not a non-bpf file (EINVAL) */
	close(0);

	size = attr_size();
	if (argc > 1 && !strcmp(argv[1], "tail")) {
		for (int i = 2; i < argc; i++)
			tails(size, atoi(argv[i]));
		return 0;
	}
	printf("attr_size %d\n", size);
	printf("page_e2big %d\n", probe(BPF_MAP_GET_NEXT_ID, big, sysconf(_SC_PAGESIZE) + 1) == -E2BIG);
	printf("max_cmd %d\n", max_cmd());
	infos();
	if (size > 0 && !(argc > 1 && !strcmp(argv[1], "summary")))
		for (int cmd = 0; cmd < __MAX_BPF_CMD; cmd++)
			tails(size, cmd);
	return 0;
}

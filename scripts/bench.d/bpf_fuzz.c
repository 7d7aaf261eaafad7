/* SPDX-License-Identifier: MIT */
/*
 * A bpf() fuzzer: `bpf_fuzz SEED COUNT` makes COUNT random bpf() calls from a
 * fixed seed and prints one line "calls N ok N fds N" when it is done.
 *
 * Calls are random commands (valid and invalid ones), attr sizes 0..256 and
 * huge, and attrs built from valid MAP_CREATE, element and batch, PROG_LOAD,
 * BTF_LOAD, LINK_CREATE, OBJ_PIN/GET, info, id and test-run templates, then
 * mutated: random bytes, fields pointed at NULL, an unmapped page, a
 * read-only page, a buffer running into the unmapped page, addresses at or
 * above 2^63. Every pointer the fuzzer passes points into its own arena (or
 * nowhere), so nothing the callee writes can hurt the fuzzer itself; a crash
 * or hang is the callee's. It closes every fd it got and unlinks the pins it
 * made (a pin at a path a mutation made up stays: the runner counts pins).
 *
 * Run by scripts/fuzz_bpf.py (compat_tests/test_fuzz.py, scripts/bench fuzz).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#define PAGE 4096ul
#define ARENA_PAGES 32ul
#define MAX_FDS 96

static uint64_t rs;
static uint64_t rnd(void)
{
	/* xorshift64*: the same calls for the same seed on every run */
	rs ^= rs >> 12;
	rs ^= rs << 25;
	rs ^= rs >> 27;
	return rs * 0x2545F4914F6CDD1Dull;
}
static uint64_t below(uint64_t n) { return n ? rnd() % n : 0; }
static int chance(unsigned pct) { return below(100) < pct; }

static unsigned char *arena;   /* ARENA_PAGES rw, then one PROT_NONE, then one read-only */
static unsigned char *guard, *rdonly;
static int fds[MAX_FDS], nfds;
static int maps[MAX_FDS], nmaps, progs[MAX_FDS], nprogs;
static char pins[64][64];
static int npins;

static void *abuf(size_t n)
{
	/* n bytes in the arena, past what attrs use (the first page) */
	if (n > (ARENA_PAGES - 1) * PAGE)
		n = (ARENA_PAGES - 1) * PAGE;
	return arena + PAGE + below((ARENA_PAGES - 1) * PAGE - n + 1);
}

static uint64_t bad_ptr(void)
{
	switch (below(7)) {
	case 0: return 0;
	case 1: return (uint64_t)(uintptr_t)guard + below(PAGE);
	case 2: return (uint64_t)(uintptr_t)rdonly + below(PAGE);
	case 3: return (uint64_t)(uintptr_t)guard - 1 - below(64);     /* runs into the unmapped page */
	case 4: return (1ull << 63) + below(1ull << 20) * 8;
	case 5: return ~0ull - below(64);
	default: return below(1ull << 16);                              /* low, unmapped */
	}
}

static uint64_t ptr(size_t n)
{
	return chance(85) ? (uint64_t)(uintptr_t)abuf(n) : bad_ptr();
}

static int pick(const int *v, int n)
{
	return n ? v[below(n)] : (int)below(8);
}

static void forget(int fd)
{
	for (int *v[] = {fds, maps, progs}, *c[] = {&nfds, &nmaps, &nprogs}, k = 0; k < 3; k++)
		for (int i = 0; i < *c[k]; i++)
			if (v[k][i] == fd)
				v[k][i--] = v[k][--*c[k]];
}

static void drop_fd(void)
{
	if (!nfds)
		return;
	int fd = fds[below(nfds)];
	forget(fd);
	close(fd);
}

static void keep_fd(int fd, int kind)
{
	if (nfds == MAX_FDS)
		drop_fd();
	fds[nfds++] = fd;
	if (kind == 1)
		maps[nmaps++] = fd;
	else if (kind == 2)
		progs[nprogs++] = fd;
}

static const uint32_t map_types[] = {1, 2, 3, 4, 5, 6, 7, 9, 10, 11, 12, 13, 22, 23, 27, 30};

/* union bpf_attr offsets used by the templates (uapi linux/bpf.h) */
static size_t tmpl_map_create(unsigned char *a)
{
	uint32_t t = map_types[below(sizeof(map_types) / 4)];
	uint32_t ks = chance(80) ? 4 : (uint32_t)below(300), vs = chance(80) ? 8 : (uint32_t)below(300);
	uint32_t n = chance(95) ? 1 + (uint32_t)below(256) : 1 + (uint32_t)below(1u << 14), fl = 0;

	if (t == 11) { ks = 8; fl = 1; }                 /* lpm: NO_PREALLOC */
	if (t == 22 || t == 23 || t == 30) ks = 0;
	if (t == 27) { ks = vs = 0; n = PAGE << below(3); }
	if (t == 3 || t == 4 || t == 12 || t == 13) vs = 4;
	if (chance(10)) fl = (uint32_t)rnd() & 0x1ffff;
	memcpy(a + 0, &t, 4); memcpy(a + 4, &ks, 4); memcpy(a + 8, &vs, 4); memcpy(a + 12, &n, 4);
	memcpy(a + 16, &fl, 4);
	if (t == 12 || t == 13) {
		int inner = pick(maps, nmaps);
		memcpy(a + 20, &inner, 4);                       /* inner_map_fd */
	}
	if (chance(20))
		memcpy(a + 28, "fuzz_map", 8);                   /* map_name */
	return chance(90) ? 72 : below(169);
}

static size_t tmpl_elem(unsigned char *a)
{
	int fd = pick(maps, nmaps);
	uint64_t k = ptr(64), v = ptr(chance(90) ? 64 : 4096), fl = chance(80) ? below(3) : rnd();
	memcpy(a + 0, &fd, 4); memcpy(a + 8, &k, 8); memcpy(a + 16, &v, 8); memcpy(a + 24, &fl, 8);
	return 32;
}

static size_t tmpl_batch(unsigned char *a)
{
	int fd = pick(maps, nmaps);
	uint64_t in = chance(50) ? 0 : ptr(8), out = ptr(8), k = ptr(4096), v = ptr(8192);
	uint32_t count = chance(80) ? (uint32_t)below(64) : (uint32_t)rnd();
	uint64_t ef = chance(90) ? 0 : rnd(), fl = chance(90) ? 0 : rnd();
	memcpy(a + 0, &in, 8); memcpy(a + 8, &out, 8); memcpy(a + 16, &k, 8); memcpy(a + 24, &v, 8);
	memcpy(a + 32, &count, 4); memcpy(a + 36, &fd, 4); memcpy(a + 40, &ef, 8); memcpy(a + 48, &fl, 8);
	return 56;
}

static uint64_t insn(uint8_t code, uint8_t dst, uint8_t src, int16_t off, int32_t imm)
{
	return code | (uint64_t)(dst | src << 4) << 8 | (uint64_t)(uint16_t)off << 16 | (uint64_t)(uint32_t)imm << 32;
}

static const uint64_t insns_ok[] = {0x00000000000000b7ull, 0x0000000000000095ull};  /* r0 = 0; exit */

static size_t tmpl_prog_load(unsigned char *a)
{
	static const uint32_t types[] = {1, 2, 5, 6, 17, 26, 0, 33};
	uint32_t t = types[below(8)], cnt = 2, level = chance(70) ? 0 : (uint32_t)below(3);
	uint32_t lsize = level ? (uint32_t)below(8192) : 0;
	unsigned char *ins = abuf(16 * 64);
	memcpy(ins, insns_ok, sizeof(insns_ok));
	if (nmaps && chance(40)) {
		/* a lookup in a held map: r1 = map; r2 = fp - 8; *(u64 *)(fp - 8) = 0; call 1; r0 = 0; exit */
		int32_t mfd = maps[below(nmaps)];
		uint64_t p[8] = {insn(0x18, 1, 1, 0, mfd), 0, insn(0xbf, 2, 10, 0, 0), insn(0x07, 2, 0, 0, -8),
				 insn(0x7a, 10, 0, -8, 0), insn(0x85, 0, 0, 0, 1), insn(0xb7, 0, 0, 0, 0),
				 insn(0x95, 0, 0, 0, 0)};
		memcpy(ins, p, 8 * 8);
		cnt = 8;
		if (chance(30))
			ins[8 * below(8) + below(8)] ^= (unsigned char)(1u << below(8));
	} else if (chance(30)) {                                  /* a few random instructions before exit */
		cnt = 1 + (uint32_t)below(16);
		for (uint32_t i = 0; i < cnt * 8; i++)
			ins[i] = (unsigned char)rnd();
		memcpy(ins + cnt * 8, &insns_ok[1], 8);
		cnt++;
	}
	char *lic = (char *)abuf(8);
	memcpy(lic, "GPL", 4);
	uint64_t ip = chance(90) ? (uint64_t)(uintptr_t)ins : bad_ptr(), lp = chance(95) ? (uint64_t)(uintptr_t)lic : bad_ptr();
	uint64_t log = level ? ptr(lsize) : 0;
	memcpy(a + 0, &t, 4); memcpy(a + 4, &cnt, 4); memcpy(a + 8, &ip, 8); memcpy(a + 16, &lp, 8);
	memcpy(a + 24, &level, 4); memcpy(a + 28, &lsize, 4); memcpy(a + 32, &log, 8);
	if (chance(25)) {
		/* BTF-side records, fd_array and CO-RE relocations over random bytes */
		int bfd = pick(fds, nfds);
		uint32_t rs8 = chance(70) ? 8 : (uint32_t)below(300), rs16 = chance(70) ? 16 : (uint32_t)below(300);
		uint32_t fc = (uint32_t)below(4), lc = (uint32_t)below(8), cc = (uint32_t)below(4), fac = (uint32_t)below(8);
		uint64_t fi = ptr(1024), li = ptr(1024), fa = ptr(64), cr = ptr(1024);
		unsigned char *r = abuf(1024);
		for (int k = 0; k < 1024; k++)
			r[k] = chance(60) ? 0 : (unsigned char)rnd();
		fi = chance(50) ? (uint64_t)(uintptr_t)r : fi;
		memcpy(a + 72, &bfd, 4); memcpy(a + 76, &rs8, 4); memcpy(a + 80, &fi, 8); memcpy(a + 88, &fc, 4);
		memcpy(a + 92, &rs16, 4); memcpy(a + 96, &li, 8); memcpy(a + 104, &lc, 4);
		if (chance(30)) { memcpy(a + 120, &fa, 8); memcpy(a + 148, &fac, 4); }
		if (chance(30)) { memcpy(a + 128, &cr, 8); memcpy(a + 136, &rs16, 4); memcpy(a + 116, &cc, 4); }
		if (chance(20)) { uint32_t v = (uint32_t)rnd(); memcpy(a + 108 + 4 * below(2), &v, 4); }
		if (chance(20)) { uint32_t v = (uint32_t)below(64); memcpy(a + 68, &v, 4); }
		return 168;
	}
	return chance(90) ? 128 : below(169);
}

static size_t tmpl_btf_load(unsigned char *a)
{
	/* header, one INT "int", the strings */
	static const unsigned char btf[] = {
		0x9f, 0xeb, 1, 0, 24, 0, 0, 0, 0, 0, 0, 0, 16, 0, 0, 0, 16, 0, 0, 0, 5, 0, 0, 0,
		1, 0, 0, 0, 0, 0, 0, 1, 4, 0, 0, 0, 32, 0, 0, 0,
		0, 'i', 'n', 't', 0};
	unsigned char *b = abuf(sizeof(btf));
	memcpy(b, btf, sizeof(btf));
	if (chance(40))
		for (int k = 1 + (int)below(6); k--;)
			b[below(sizeof(btf))] = (unsigned char)rnd();
	uint64_t bp = chance(90) ? (uint64_t)(uintptr_t)b : bad_ptr();
	uint32_t size = chance(90) ? sizeof(btf) : (uint32_t)below(1 << 16), lsz = chance(70) ? 0 : (uint32_t)below(4096);
	uint32_t lvl = lsz ? 1 : 0;
	uint64_t lb = lsz ? ptr(lsz) : 0;
	memcpy(a + 0, &bp, 8); memcpy(a + 8, &lb, 8); memcpy(a + 16, &size, 4); memcpy(a + 20, &lsz, 4);
	memcpy(a + 24, &lvl, 4);
	return 32;
}

static size_t tmpl_link_create(unsigned char *a)
{
	int pf = pick(progs, nprogs), tf = chance(50) ? pick(fds, nfds) : (int)below(64);
	uint32_t at = (uint32_t)below(60), fl = chance(90) ? 0 : (uint32_t)rnd();
	memcpy(a + 0, &pf, 4); memcpy(a + 4, &tf, 4); memcpy(a + 8, &at, 4); memcpy(a + 12, &fl, 4);
	if (chance(50)) {
		uint64_t p = ptr(64);
		memcpy(a + 16 + 8 * below(4), &p, 8);
	}
	return 64;
}

static size_t tmpl_obj(unsigned char *a, int pin)
{
	char *p = (char *)abuf(64);
	snprintf(p, 64, "/sys/fs/bpf/fuzz_%d_%u", (int)getpid(), (unsigned)below(8));
	if (chance(10))
		p[below(strlen(p))] = (char)(chance(50) ? rnd() : '/');
	uint64_t pp = chance(90) ? (uint64_t)(uintptr_t)p : bad_ptr();
	int fd = pin ? pick(fds, nfds) : 0;
	uint32_t ff = chance(85) ? 0 : (uint32_t)rnd();
	memcpy(a + 0, &pp, 8); memcpy(a + 8, &fd, 4); memcpy(a + 12, &ff, 4);
	if (pin && npins < 64 && pp == (uint64_t)(uintptr_t)p)
		snprintf(pins[npins++], 64, "%s", p);
	return 16;
}

static size_t tmpl_info(unsigned char *a)
{
	int fd = pick(fds, nfds);
	uint32_t len = chance(70) ? 8u * (uint32_t)below(40) : (uint32_t)rnd();
	uint64_t ip = ptr(len < 4096 ? len : 4096);
	memcpy(a + 0, &fd, 4); memcpy(a + 4, &len, 4); memcpy(a + 8, &ip, 8);
	return 16;
}

static size_t tmpl_id(unsigned char *a)
{
	uint32_t id = chance(80) ? (uint32_t)below(64) : (uint32_t)rnd(), x = chance(90) ? 0 : (uint32_t)rnd();
	memcpy(a + 0, &id, 4); memcpy(a + 4, &x, 4);
	return chance(80) ? 12 : below(20);
}

static size_t tmpl_test_run(unsigned char *a)
{
	int pf = pick(progs, nprogs);
	uint32_t in = (uint32_t)below(256), out = (uint32_t)below(256), rep = chance(90) ? 1 : (uint32_t)below(64);
	uint64_t di = ptr(in), dout = ptr(out);
	memcpy(a + 0, &pf, 4); memcpy(a + 8, &in, 4); memcpy(a + 12, &out, 4); memcpy(a + 16, &di, 8);
	memcpy(a + 24, &dout, 8); memcpy(a + 32, &rep, 4);
	return 80;
}

static void mutate(unsigned char *a, size_t n)
{
	if (chance(30)) {
		for (int k = 1 + (int)below(4); k--;)
			a[below(n ? n : 1)] ^= (unsigned char)(1u << below(8));
	}
	if (chance(20)) {
		uint64_t p = bad_ptr();
		memcpy(a + 8 * below(n > 8 ? n / 8 : 1), &p, 8);
	}
	if (chance(5))
		a[below(168)] = (unsigned char)rnd();
}

static long call(long cmd, void *attr, unsigned long size)
{
	return syscall(SYS_bpf, cmd, attr, size);
}

int main(int argc, char **argv)
{
	uint64_t seed = argc > 1 ? strtoull(argv[1], 0, 0) : 1;
	long count = argc > 2 ? strtol(argv[2], 0, 0) : 1000, ok = 0;

	rs = seed * 0x9E3779B97F4A7C15ull + 1;
	arena = mmap(NULL, (ARENA_PAGES + 2) * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (arena == MAP_FAILED)
		return 2;
	guard = arena + ARENA_PAGES * PAGE;
	rdonly = guard + PAGE;
	mprotect(guard, PAGE, PROT_NONE);
	mprotect(rdonly, PAGE, PROT_READ);

	for (long i = 0; i < count; i++) {
		unsigned char *a = arena;                   /* the attr: page 0 of the arena */
		long cmd;
		size_t n = 0;

		memset(a, 0, PAGE);
		switch (below(20)) {
		case 0: case 1: case 2: cmd = 0; n = tmpl_map_create(a); break;
		case 3: case 4: case 5: cmd = 1 + (long)below(4); n = tmpl_elem(a); break;     /* lookup..next_key */
		case 6: cmd = 21; n = tmpl_elem(a); break;                                   /* lookup_and_delete */
		case 7: cmd = 24 + (long)below(4); n = tmpl_batch(a); break;
		case 8: case 9: cmd = 5; n = tmpl_prog_load(a); break;
		case 10: cmd = 18; n = tmpl_btf_load(a); break;
		case 11: cmd = 28; n = tmpl_link_create(a); break;
		case 12: cmd = chance(50) ? 6 : 7; n = tmpl_obj(a, cmd == 6); break;
		case 13: cmd = 15; n = tmpl_info(a); break;
		case 14: cmd = 11 + (long)below(4); n = tmpl_id(a); break;
		case 15: cmd = 10; n = tmpl_test_run(a); break;
		case 16: cmd = 22; n = tmpl_elem(a); break;                                  /* freeze */
		case 17: drop_fd(); continue;
		default:
			cmd = chance(95) ? (long)below(48) : (long)(uint32_t)rnd();
			for (size_t k = 0; k < 168; k++)
				a[k] = chance(70) ? 0 : (unsigned char)rnd();
			n = below(257);
		}
		mutate(a, n);
		if (chance(8))
			n = below(257);
		else if (chance(2))
			n = chance(50) ? PAGE + below(2) : (size_t)rnd();
		void *attr = a;
		if (chance(3))
			attr = (void *)(uintptr_t)bad_ptr();
		else if (chance(3) && n <= PAGE)
			attr = guard - (n ? below(n) + 1 : 0);   /* the attr runs into the unmapped page */
		if (attr != a && (unsigned char *)attr >= arena && (unsigned char *)attr < guard)
			memmove(attr, a, (size_t)(guard - (unsigned char *)attr));
		long r = call(cmd, attr, (unsigned long)n);
		if (r >= 0) {
			ok++;
			/* MAP_CREATE, PROG_LOAD, OBJ_GET, *_GET_FD_BY_ID, BTF_LOAD, LINK_CREATE,
			 * RAW_TRACEPOINT_OPEN, ITER_CREATE and TOKEN_CREATE return an fd */
			int fd_cmd = cmd == 0 || cmd == 5 || cmd == 7 || cmd == 13 || cmd == 14 || cmd == 17 ||
				     cmd == 18 || cmd == 19 || cmd == 28 || cmd == 30 || cmd == 33 || cmd == 36;
			if (fd_cmd && r > 2)
				keep_fd((int)r, cmd == 0 ? 1 : cmd == 5 ? 2 : 0);
		}
	}
	int kept = nfds;
	while (nfds)
		drop_fd();
	for (int i = 0; i < npins; i++)
		unlink(pins[i]);
	printf("calls %ld ok %ld fds %d\n", count, ok, kept);
	return 0;
}

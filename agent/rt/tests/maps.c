/* SPDX-License-Identifier: MIT */
/*
 * bpf_rt_maps_each (agent/rawsys.h), the one parser of /proc/PID/maps,
 * against stdio's reading of the same file: every field of every line, with
 * buffers big and small (a line longer than the buffer is skipped, the rest
 * still read), and a path with spaces (a mapped file named so). Then
 * bpf_rt_file_of, the file and offset of an address, at both ends of every
 * mapping against the same reading, the test file's and the program's
 * dev/ino against stat, a path that does not fit, an address no mapping
 * holds, and a call from a signal handler.
 */
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/sysmacros.h>
#include <unistd.h>
#include "rawsys.h"

#define MAX 4096
static struct bpf_rt_vma want[MAX];
static char paths[MAX][600];
static int n_want, n_got, bad;

static int check(const struct bpf_rt_vma *v, void *arg)
{
	size_t min_line = *(size_t *)arg;
	/* lines the buffer cannot hold are not seen: find this one among all */
	while (n_got < n_want && (want[n_got].lo != v->lo)) {
		if (strlen(paths[n_got]) + 80 < min_line) {
			printf("FAIL line %d (%lx) skipped with a buffer of %zu\n", n_got, (unsigned long)want[n_got].lo, min_line);
			bad++;
		}
		n_got++;
	}
	if (n_got == n_want) {
		printf("FAIL unexpected line %lx\n", (unsigned long)v->lo);
		bad++;
		return 1;
	}
	const struct bpf_rt_vma *w = &want[n_got];
	if (v->hi != w->hi || v->off != w->off || v->dev != w->dev || v->ino != w->ino || strcmp(v->perms, w->perms) ||
	    strcmp(v->path, paths[n_got])) {
		printf("FAIL line %d: %lx-%lx %s %lx %lx %lu '%s'\n", n_got, (unsigned long)v->lo, (unsigned long)v->hi,
		       v->perms, (unsigned long)v->off, (unsigned long)v->dev, (unsigned long)v->ino, v->path);
		bad++;
	}
	n_got++;
	return 0;
}

static int prot_want(const char *perms)
{
	return (strchr(perms, 'r') ? PROT_READ : 0) | (strchr(perms, 'w') ? PROT_WRITE : 0) |
	       (strchr(perms, 'x') ? PROT_EXEC : 0);
}

/* addr lies in want[i]: bpf_rt_file_of says what that line says */
static void check_file_of(int fd, char *buf, size_t size, uint64_t addr, int i)
{
	char path[600];
	struct bpf_rt_file_at f = { .path = path, .path_size = sizeof(path) };
	const struct bpf_rt_vma *w = &want[i];
	int file = w->ino && paths[i][0] == '/', r = bpf_rt_file_of(fd, buf, size, addr, &f);

	if (r != file || (file && (f.off != w->off + (addr - w->lo) || f.dev != w->dev || f.ino != w->ino ||
				   f.prot != prot_want(w->perms) || strcmp(path, paths[i])))) {
		printf("FAIL file_of %lx (line %d '%s'): %d off %lx dev %lx ino %lu prot %d '%s'\n", (unsigned long)addr, i,
		       paths[i], r, (unsigned long)f.off, (unsigned long)f.dev, (unsigned long)f.ino, f.prot,
		       r == 1 ? path : "");
		bad++;
	}
}

static int sig_fd;           /* the program's code, from a signal handler */
static volatile int sig_r;
static volatile uint64_t sig_off;

static void on_usr1(int sig)
{
	(void)sig;
	static char buf[4096], path[600];
	struct bpf_rt_file_at f = { .path = path, .path_size = sizeof(path) };

	sig_r = bpf_rt_file_of(sig_fd, buf, sizeof(buf), (uint64_t)(uintptr_t)&check_file_of, &f);
	sig_off = f.off;
}

int main(void)
{
	char name[] = "/tmp/bpfshim maps test XXXXXX";
	int tfd = mkstemp(name);
	char *tmap;
	/* at offset 4096: the offset in the file is not the one in the mapping */
	if (tfd < 0 || ftruncate(tfd, 8192) ||
	    (tmap = mmap(NULL, 4096, PROT_READ, MAP_SHARED, tfd, 4096)) == MAP_FAILED)
		return 2;
	unlink(name);           /* and " (deleted)" after the path */
	FILE *f = fopen("/proc/self/maps", "r");
	char line[1024];
	while (f && n_want < MAX && fgets(line, sizeof(line), f)) {
		unsigned long lo, hi, off, ino;
		unsigned maj, min;
		int pos = 0;
		struct bpf_rt_vma *w = &want[n_want];
		line[strcspn(line, "\n")] = 0;
		if (sscanf(line, "%lx-%lx %4s %lx %x:%x %lu %n", &lo, &hi, w->perms, &off, &maj, &min, &ino, &pos) < 7)
			return 2;
		w->lo = lo, w->hi = hi, w->off = off, w->ino = ino, w->dev = makedev(maj, min);
		snprintf(paths[n_want], sizeof(paths[0]), "%s", pos ? line + pos : "");
		n_want++;
	}
	fclose(f);
	/* the test file's line and every other: the same fd, read again each time */
	int fd = open("/proc/self/maps", O_RDONLY);
	size_t sizes[] = { 1 << 16, 4096, 200, 90 };
	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		char *buf = malloc(sizes[i]);
		n_got = 0;
		if (bpf_rt_maps_each(fd, buf, sizes[i], check, &sizes[i]) < 0) {
			printf("FAIL read\n");
			bad++;
		}
		free(buf);
	}
	/* bpf_rt_file_of: each mapping's first and last byte, with buffers
	 * every line fits in */
	size_t fit[] = { 1 << 16, 4096 };
	int checked = 0;
	for (size_t k = 0; k < sizeof(fit) / sizeof(fit[0]); k++) {
		char *buf = malloc(fit[k]);
		for (int i = 0; i < n_want; i++) {
			check_file_of(fd, buf, fit[k], want[i].lo, i);
			check_file_of(fd, buf, fit[k], want[i].hi - 1, i);
			checked += 2;
		}
		free(buf);
	}
	char buf[4096], path[600];
	struct bpf_rt_file_at fa = { .path = path, .path_size = sizeof(path) };
	struct stat st, exe;
	/* the test file: dev/ino as fstat says, the offset in the file */
	if (fstat(tfd, &st) || bpf_rt_file_of(fd, buf, sizeof(buf), (uint64_t)(uintptr_t)tmap + 100, &fa) != 1 ||
	    fa.dev != st.st_dev || fa.ino != st.st_ino || fa.off != 4196 || fa.prot != PROT_READ ||
	    strncmp(path, name, strlen(name))) {
		printf("FAIL file_of the test file: off %lx '%s'\n", (unsigned long)fa.off, path);
		bad++;
	}
	/* the program's code: the executable's dev/ino */
	if (stat("/proc/self/exe", &exe) || bpf_rt_file_of(fd, buf, sizeof(buf), (uint64_t)(uintptr_t)&check_file_of, &fa) != 1 ||
	    fa.dev != exe.st_dev || fa.ino != exe.st_ino || !(fa.prot & PROT_EXEC)) {
		printf("FAIL file_of the program's code\n");
		bad++;
	}
	/* a path one byte too long for the caller's buffer: no file */
	size_t plen = strlen(path);
	fa.path_size = plen;
	int r_short = bpf_rt_file_of(fd, buf, sizeof(buf), (uint64_t)(uintptr_t)&check_file_of, &fa);
	fa.path_size = plen + 1;
	int r_fits = bpf_rt_file_of(fd, buf, sizeof(buf), (uint64_t)(uintptr_t)&check_file_of, &fa);
	fa.path_size = sizeof(path);
	/* below mmap_min_addr: no mapping */
	int r_none = bpf_rt_file_of(fd, buf, sizeof(buf), 0x1000, &fa);
	if (r_short != 0 || r_fits != 1 || r_none != 0) {
		printf("FAIL file_of: path of %zu bytes in %zu: %d, in %zu: %d; unmapped: %d\n", plen + 1, plen, r_short,
		       plen + 1, r_fits, r_none);
		bad++;
	}
	/* from a signal handler, on the same fd */
	uint64_t main_off = fa.off;
	sig_fd = fd;
	signal(SIGUSR1, on_usr1);
	raise(SIGUSR1);
	if (sig_r != 1 || sig_off != main_off) {
		printf("FAIL file_of in a signal handler: %d off %lx\n", sig_r, (unsigned long)sig_off);
		bad++;
	}
	if (bad)
		return 1;
	printf("ok %d lines, buffers of 64 KiB down to 90 bytes; file_of at %d addresses\n", n_want, checked);
	return 0;
}

/* SPDX-License-Identifier: MIT */
/*
 * bpf_rt_maps_each (agent/rawsys.h), the one parser of /proc/PID/maps,
 * against stdio's reading of the same file: every field of every line, with
 * buffers big and small (a line longer than the buffer is skipped, the rest
 * still read), and a path with spaces (a mapped file named so).
 */
#include <fcntl.h>
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

int main(void)
{
	char name[] = "/tmp/bpfshim maps test XXXXXX";
	int tfd = mkstemp(name);
	if (tfd < 0 || ftruncate(tfd, 4096) || mmap(NULL, 4096, PROT_READ, MAP_SHARED, tfd, 0) == MAP_FAILED)
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
	if (bad)
		return 1;
	printf("ok %d lines, buffers of 64 KiB down to 90 bytes\n", n_want);
	return 0;
}

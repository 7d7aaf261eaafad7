/* SPDX-License-Identifier: MIT */
/*
 * The bpffs at /sys/fs/bpf, served from the server's pin namespace: statfs,
 * unlink, rmdir, mkdir and nftw of its paths, and the mount table that
 * lists it (fopen of /proc/mounts, setmntent).
 */
#include <errno.h>
#include <ftw.h>
#include <mntent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include "interpose.h"

int shim_is_bpffs_path(const char *path)
{
	/* hybrid: pins are the kernel's, in the real bpffs */
	return !shim_hybrid && path && !strncmp(path, "/sys/fs/bpf", 11) && (path[11] == 0 || path[11] == '/');
}

#define BPF_FS_MAGIC 0xcafe4a11

static int pin_ctl(int ctl, const char *path);

static int statfs_(const char *path, struct statfs *buf);
BPFSHIM_API int statfs(const char *path, struct statfs *buf)
{
	KEEP_ERRNO(int, statfs_(path, buf), r_ >= 0);
}

static int statfs_(const char *path, struct statfs *buf)
{
	ENSURE();
	if (shim_is_bpffs_path(path)) {
		if (pin_ctl(SHIM_CTL_PIN_STAT, path) < 0)
			return -1;   /* errno from the pin namespace: ENOENT */
		memset(buf, 0, sizeof(*buf));
		buf->f_type = BPF_FS_MAGIC;
		buf->f_bsize = 4096;
		buf->f_namelen = 255;
		buf->f_frsize = 4096;
		return 0;
	}
	return real.statfs(path, buf);
}
BPFSHIM_API int statfs64(const char *path, struct statfs64 *buf)
{
	/* Same layout as struct statfs on 64-bit targets. */
	return statfs(path, (struct statfs *)buf);
}

static int pin_ctl(int ctl, const char *path)
{
	struct shim_reply rep;
	int err = shim_request(SHIM_OP_CTL, ctl, 0, path, strlen(path) + 1, -1, &rep, NULL, 0);

	if (err)
		return (int)shim_err(-err);
	if (rep.err)
		return (int)shim_err(rep.err);
	return (int)rep.ret;
}

static int unlink_(const char *path);
BPFSHIM_API int unlink(const char *path)
{
	KEEP_ERRNO(int, unlink_(path), r_ >= 0);
}

static int unlink_(const char *path)
{
	ENSURE();
	if (shim_is_bpffs_path(path))
		return pin_ctl(SHIM_CTL_PIN_UNLINK, path);
	return real.unlink(path);
}

static int unlinkat_(int dirfd, const char *path, int flags);
BPFSHIM_API int unlinkat(int dirfd, const char *path, int flags)
{
	KEEP_ERRNO(int, unlinkat_(dirfd, path, flags), r_ >= 0);
}

static int unlinkat_(int dirfd, const char *path, int flags)
{
	ENSURE();
	if (shim_is_bpffs_path(path))
		return pin_ctl(SHIM_CTL_PIN_UNLINK, path);
	return real.unlinkat(dirfd, path, flags);
}

static int rmdir_(const char *path);
BPFSHIM_API int rmdir(const char *path)
{
	KEEP_ERRNO(int, rmdir_(path), r_ >= 0);
}

static int rmdir_(const char *path)
{
	ENSURE();
	if (shim_is_bpffs_path(path))
		return pin_ctl(SHIM_CTL_PIN_UNLINK, path);
	return real.rmdir(path);
}

static int mkdir_(const char *path, mode_t mode);
BPFSHIM_API int mkdir(const char *path, mode_t mode)
{
	KEEP_ERRNO(int, mkdir_(path, mode), r_ >= 0);
}

static int mkdir_(const char *path, mode_t mode)
{
	ENSURE();
	if (shim_is_bpffs_path(path))
		return pin_ctl(SHIM_CTL_PIN_MKDIR, path);
	return real.mkdir(path, mode);
}

/* Walking the pin namespace (bpftool -f: nftw() over every bpf mount of
 * /proc/mounts, bpf_obj_get() of each file). The server lists the tree in
 * pre-order, "d PATH" or "f PATH" a line. */
static char pin_tree[SHIM_MSG_MAX];

typedef int (*nftw_fn)(const char *, const struct stat *, int, struct FTW *);

static int pin_visit(nftw_fn fn, const char *path, int is_dir, int flag, int level)
{
	struct stat st = { .st_mode = is_dir ? S_IFDIR | 0700 : S_IFREG | 0600, .st_nlink = is_dir ? 2 : 1,
			   .st_uid = geteuid(), .st_gid = getegid(), .st_blksize = 4096 };
	struct FTW f = { .base = (int)(strrchr(path, '/') - path) + 1, .level = level };

	return fn(path, &st, flag, &f);
}

static int is_under(const char *path, const char *dir)
{
	size_t n = strlen(dir);
	return !strncmp(path, dir, n) && path[n] == '/';
}

static int nftw_(const char *dir, nftw_fn fn, int nopenfd, int flags);
BPFSHIM_API int nftw(const char *dir, nftw_fn fn, int nopenfd, int flags)
{
	KEEP_ERRNO(int, nftw_(dir, fn, nopenfd, flags), r_ != -1);
}

static int nftw_(const char *dir, nftw_fn fn, int nopenfd, int flags)
{
	struct shim_reply rep;
	const char *stack[64];       /* the directories the walk is in */
	int depth = 0, ret = 0, skip = -1, act = flags & FTW_ACTIONRETVAL;

	ENSURE();
	if (!shim_is_bpffs_path(dir))
		return real.nftw(dir, (void *)fn, nopenfd, flags);
	int err = shim_request(SHIM_OP_CTL, SHIM_CTL_PIN_LIST, 0, dir, strlen(dir) + 1, -1, &rep,
			       pin_tree, sizeof(pin_tree));
	if (err || rep.err)
		return (int)shim_err(err ? -err : rep.err);
	char *tree = strdup(pin_tree);   /* fn calls into the shim (bpf_obj_get) */
	if (!tree)
		return (int)shim_err(ENOMEM);
	for (char *ln = strtok(tree, "\n"); ln && !ret; ln = strtok(NULL, "\n")) {
		const char *path = ln + 2;
		int is_dir = ln[0] == 'd';
		while (depth && !is_under(path, stack[depth - 1]) && !ret) {
			depth--;
			if ((flags & FTW_DEPTH) && skip < 0)
				ret = pin_visit(fn, stack[depth], 1, FTW_DP, depth);
			if (skip == depth)
				skip = -1;
		}
		if (ret || (skip >= 0 && depth > skip) || depth == 64)
			continue;
		if (!is_dir || !(flags & FTW_DEPTH))
			ret = pin_visit(fn, path, is_dir, is_dir ? FTW_D : FTW_F, depth);
		if (act && ret != FTW_STOP) {
			if (is_dir && ret == FTW_SKIP_SUBTREE)
				skip = depth;
			ret = 0;
		}
		if (is_dir)
			stack[depth++] = path;
	}
	while (!ret && depth--)
		if ((flags & FTW_DEPTH) && skip < 0)
			ret = pin_visit(fn, stack[depth], 1, FTW_DP, depth);
	free(tree);
	return ret;
}
/* struct stat64 is struct stat on 64-bit targets */
BPFSHIM_API int nftw64(const char *dir, int (*fn)(const char *, const struct stat64 *, int, struct FTW *),
		       int nopenfd, int flags)
{
	return nftw(dir, (nftw_fn)fn, nopenfd, flags);
}

/* The mount table lists a bpffs at /sys/fs/bpf (as statfs() says), also
 * where none is mounted, so tools that look for bpf mounts find the pins. */
FILE *mounts_with_bpffs(const char *path)
{
	if (shim_hybrid || !path || (strcmp(path, "/proc/mounts") && strcmp(path, "/proc/self/mounts")))
		return NULL;
	FILE *in = real.fopen(path, "r");
	int fd = memfd_create("bpfshim-mounts", MFD_CLOEXEC), found = 0;
	char line[4096];
	if (!in || fd < 0) {
		if (in)
			fclose(in);
		if (fd >= 0)
			real.close(fd);
		return NULL;
	}
	while (fgets(line, sizeof(line), in)) {
		char dev[256], dir[1024], type[64];
		if (sscanf(line, "%255s %1023s %63s", dev, dir, type) == 3 && !strcmp(dir, "/sys/fs/bpf") &&
		    !strcmp(type, "bpf"))
			found = 1;
		if (write(fd, line, strlen(line)) < 0)
			break;
	}
	fclose(in);
	static const char bpffs[] = "bpf /sys/fs/bpf bpf rw,nosuid,nodev,noexec,relatime,mode=700 0 0\n";
	if ((!found && write(fd, bpffs, sizeof(bpffs) - 1) < 0) || lseek(fd, 0, SEEK_SET)) {
		real.close(fd);
		return NULL;
	}
	return fdopen(fd, "r");
}

static FILE *setmntent_(const char *path, const char *mode);
BPFSHIM_API FILE *setmntent(const char *path, const char *mode)
{
	KEEP_ERRNO(FILE *, setmntent_(path, mode), r_ != NULL);
}

static FILE *setmntent_(const char *path, const char *mode)
{
	ENSURE();
	FILE *f = mode && mode[0] == 'r' ? mounts_with_bpffs(path) : NULL;
	return f ? f : real.setmntent(path, mode);
}

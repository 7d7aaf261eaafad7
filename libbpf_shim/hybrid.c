/* SPDX-License-Identifier: MIT */
/*
 * Hybrid mode (`bpfshim run --kernel`, or BPFSHIM_KERNEL=1 with the library
 * preloaded): the loader's objects are the kernel's. Every bpf() command and
 * every perf_event_open() goes to the kernel as the loader made it, so its
 * fds are kernel fds (the kernel verifier checks its programs, bpftool run
 * without the library sees its maps, pins are in the real bpffs), and the
 * shim's own paths (fd table, pin namespace, pseudo-files) stand aside.
 * ARCHITECTURE.md "Hybrid mode" says what runs where and what comes next
 * (uprobes served in user space beside the kernel's).
 *
 * The mode needs kernel eBPF for the caller: the first process of the
 * command checks it before main() and fails at once, with one line naming
 * what is missing, rather than at each call. Its descendants inherit the
 * mode without checking again (BPFSHIM_KERNEL_CHECKED): a worker that drops
 * its privileges later gets the kernel's EPERM, as without bpfshim.
 */
#include <errno.h>
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <linux/perf_event.h>
#include <linux/capability.h>
#include "shim.h"
#include "start.h"

int shim_hybrid;

/*
 * Arrays are created BPF_F_MMAPABLE, so that user-space programs can use
 * the kernel's memory itself (ARCHITECTURE.md "Hybrid mode", maps). The
 * flag the loader did not ask for is hidden from what it reads back
 * (GET_INFO_BY_FD) and its mmap of such an array is refused as the kernel
 * refuses it; the kernel ids of those maps, appended lock-free (ids are
 * allocated cyclically: not reused while the table lives). Per process and
 * its forks: another process that opens the map sees the flag.
 */
#define ADDED_MMAP_MAX 4096
static uint32_t added_mmap[ADDED_MMAP_MAX];
static unsigned n_added_mmap;

static int added_mmap_has(uint32_t id)
{
	unsigned n = __atomic_load_n(&n_added_mmap, __ATOMIC_ACQUIRE);

	for (unsigned i = 0; i < n && i < ADDED_MMAP_MAX; i++)
		if (__atomic_load_n(&added_mmap[i], __ATOMIC_RELAXED) == id)
			return 1;
	return 0;
}

static long sys_bpf(int cmd, void *attr, unsigned int size)
{
	return real.syscall(SYS_bpf, cmd, attr, size);
}

/* The kernel's info on a map fd, 0 when fd is one; else -1. */
static int map_info(int fd, struct bpf_map_info *info)
{
	union bpf_attr a;
	char path[40], link[32];
	ssize_t n;

	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	n = real.readlink(path, link, sizeof(link) - 1);
	if (n <= 0)
		return -1;
	link[n] = 0;
	if (strcmp(link, "anon_inode:bpf-map"))
		return -1;
	memset(&a, 0, sizeof(a));
	memset(info, 0, sizeof(*info));
	a.info.bpf_fd = (uint32_t)fd;
	a.info.info_len = sizeof(*info);
	a.info.info = (uint64_t)(uintptr_t)info;
	return sys_bpf(BPF_OBJ_GET_INFO_BY_FD, &a, sizeof(a)) ? -1 : 0;
}

/* A map's id when the shim added BPF_F_MMAPABLE to it, else 0. */
static uint32_t added_mmap_fd(int fd)
{
	struct bpf_map_info info;

	if (!__atomic_load_n(&n_added_mmap, __ATOMIC_ACQUIRE) || map_info(fd, &info))
		return 0;
	return (info.map_flags & BPF_F_MMAPABLE) && added_mmap_has(info.id) ? info.id : 0;
}

static long map_create(uint64_t uattr, unsigned int size)
{
	union bpf_attr a;
	struct bpf_map_info info;
	long fd;
	int e;

	if (size < offsetof(union bpf_attr, map_flags) + sizeof(a.map_flags) || size > sizeof(a) ||
	    shim_copy_from_user(&a, uattr, size))
		return real.syscall(SYS_bpf, BPF_MAP_CREATE, uattr, size);
	if (a.map_type != BPF_MAP_TYPE_ARRAY || (a.map_flags & BPF_F_MMAPABLE))
		return real.syscall(SYS_bpf, BPF_MAP_CREATE, uattr, size);
	a.map_flags |= BPF_F_MMAPABLE;
	fd = sys_bpf(BPF_MAP_CREATE, &a, size);
	if (fd < 0)    /* refused with the flag: the loader gets the kernel's answer to its own attr */
		return real.syscall(SYS_bpf, BPF_MAP_CREATE, uattr, size);
	e = errno;
	if (!map_info((int)fd, &info)) {
		unsigned i = __atomic_fetch_add(&n_added_mmap, 1, __ATOMIC_ACQ_REL);
		if (i < ADDED_MMAP_MAX)
			__atomic_store_n(&added_mmap[i], info.id, __ATOMIC_RELEASE);
		else    /* cannot hide it: make the map the loader asked for */
			__atomic_store_n(&n_added_mmap, ADDED_MMAP_MAX, __ATOMIC_RELEASE);
		if (i < ADDED_MMAP_MAX) {
			errno = e;
			return fd;
		}
	}
	real.close((int)fd);
	return real.syscall(SYS_bpf, BPF_MAP_CREATE, uattr, size);
}

/* bpf_map_info.map_flags as the loader made the map */
static long obj_get_info(uint64_t uattr, unsigned int size)
{
	long r = real.syscall(SYS_bpf, BPF_OBJ_GET_INFO_BY_FD, uattr, size);
	union bpf_attr a;
	uint32_t flags;
	int e = errno;

	if (r || size < offsetof(union bpf_attr, info.info) + sizeof(a.info.info) ||
	    shim_copy_from_user(&a, uattr, offsetof(union bpf_attr, info.info) + sizeof(a.info.info)) ||
	    a.info.info_len < offsetof(struct bpf_map_info, map_flags) + sizeof(flags) ||
	    !added_mmap_fd((int)a.info.bpf_fd))
		goto out;
	if (!shim_copy_from_user(&flags, a.info.info + offsetof(struct bpf_map_info, map_flags), sizeof(flags))) {
		flags &= ~(uint32_t)BPF_F_MMAPABLE;
		shim_copy_to_user(a.info.info + offsetof(struct bpf_map_info, map_flags), &flags, sizeof(flags));
	}
out:
	errno = e;
	return r;
}

static void twin_prog(uint64_t uattr, unsigned int size, int kfd);
static long link_create(uint64_t uattr, unsigned int size);
static int stack_cmd(int cmd, uint64_t uattr, unsigned int size, const struct bpf_map_info *ki, long *ret);
static unsigned n_stack_twins;    /* kernel stack maps with a twin (stack_twin) */

long shim_hybrid_bpf(int cmd, uint64_t uattr, unsigned int size)
{
	switch (cmd) {
	case BPF_MAP_CREATE:
		return map_create(uattr, size);
	case BPF_OBJ_GET_INFO_BY_FD:
		return obj_get_info(uattr, size);
	case BPF_PROG_LOAD: {
		long r = real.syscall(SYS_bpf, cmd, uattr, size);
		int e = errno;
		if (r >= 0)
			twin_prog(uattr, size, (int)r);
		errno = e;
		return r;
	}
	case BPF_LINK_CREATE:
		return link_create(uattr, size);
	case BPF_MAP_DELETE_ELEM:
	case BPF_MAP_LOOKUP_ELEM:
	case BPF_MAP_GET_NEXT_KEY:
	case BPF_MAP_LOOKUP_AND_DELETE_ELEM:
	case BPF_MAP_LOOKUP_BATCH:
	case BPF_MAP_LOOKUP_AND_DELETE_BATCH: {
		/* one look at which kernel map it is, for the fold and the stack twins */
		int batch = cmd == BPF_MAP_LOOKUP_BATCH || cmd == BPF_MAP_LOOKUP_AND_DELETE_BATCH;
		size_t at = batch ? offsetof(union bpf_attr, batch.map_fd) : offsetof(union bpf_attr, map_fd);
		int fold = cmd != BPF_MAP_DELETE_ELEM && shim_fold_maps();
		int stack = !batch && __atomic_load_n(&n_stack_twins, __ATOMIC_ACQUIRE);
		struct bpf_map_info ki;
		uint32_t fd;
		long r;

		if ((!fold && !stack) || size < at + 4 || shim_copy_from_user(&fd, uattr + at, 4) ||
		    map_info((int)fd, &ki))
			break;
		if (fold)     /* the twins' counts are in the kernel map before the loader reads it */
			shim_fold_before_read(&ki);
		if (stack && ki.type == BPF_MAP_TYPE_STACK_TRACE && stack_cmd(cmd, uattr, size, &ki, &r))
			return r;
		break;
	}
	}
	return real.syscall(SYS_bpf, cmd, uattr, size);
}

/* bpf_map_mmap() of an array the loader did not make mmapable: EINVAL
 * (array_map_mmap); -1 with errno set then, else 0 (the kernel's mmap). */
int shim_hybrid_mmap_refused(int fd)
{
	int e = errno;

	if (fd < 0 || !added_mmap_fd(fd)) {
		errno = e;
		return 0;
	}
	errno = EINVAL;
	return -1;
}

/*
 * User-space twins (ARCHITECTURE.md "Hybrid mode"). A kprobe-type program
 * the kernel accepted is loaded again into bpfshim, its maps bound to the
 * kernel's; a uprobe the kernel opened gets a bpfshim uprobe event on the
 * same site (the server marks its slot ATTACH_F_KERNEL_TWIN: the loader is
 * hybrid), given the twin program when the kernel's gets the loader's, and
 * enabled, disabled and closed with it: in processes with the agent it
 * takes the site over from the kernel's breakpoint (agent/uprobe.c).
 * A twin's maps: arrays made mmapable (its memory is the kernel's, every
 * process maps it), hash-type maps it only adds to (hybrid_fold.c), perf
 * event arrays and ringbufs (its events forwarded: hybrid_events.c); a
 * program using another map keeps its uprobes on the kernel's breakpoint,
 * with one line saying so at attach (BPFSHIM_DEBUG_HOOKS).
 */
#define TWIN_MAX 1024
enum twin_kind { TWIN_PROG = 1, TWIN_PERF = 2, TWIN_LINK = 3 };
static struct twin {
	int kfd;               /* the loader's kernel fd; -1 free */
	int tfd;               /* bpfshim's twin (an internal fd), or -1: none, see why */
	int kind;
	char why[112];         /* TWIN_PROG without a twin */
} twins[TWIN_MAX];
static unsigned n_twins;
static struct { uint32_t kid, sid; int sfd; uint32_t stack_base; } tmaps[TWIN_MAX];   /* kernel map id -> its bpfshim map */
static unsigned n_tmaps;
static pthread_mutex_t twin_lock = PTHREAD_MUTEX_INITIALIZER;

static struct twin *twin_find(int kfd, int kind)
{
	for (unsigned i = 0; i < n_twins; i++)
		if (twins[i].kfd == kfd && twins[i].kind == kind)
			return &twins[i];
	return NULL;
}

static struct twin *twin_add(int kfd, int kind, int tfd)
{
	struct twin *t = twin_find(kfd, kind);

	if (!t)
		for (unsigned i = 0; i < n_twins; i++)
			if (twins[i].kfd < 0) {
				t = &twins[i];
				break;
			}
	if (!t && n_twins < TWIN_MAX)
		t = &twins[n_twins++];
	if (t) {
		t->kfd = kfd;
		t->kind = kind;
		t->tfd = tfd;
		t->why[0] = 0;
	} else if (tfd >= 0) {
		shim_fd_close_internal(tfd);
	}
	return t;
}

/* A bpfshim map of kernel map ki's shape with map_flags `flags`: its fd
 * (an internal one, marked so), its entry in *e; -1 with errno. */
int shim_hybrid_map_like(const struct bpf_map_info *ki, uint32_t flags, struct shim_fd **e)
{
	union bpf_attr a;
	long fd;

	memset(&a, 0, sizeof(a));
	a.map_type = ki->type;
	a.key_size = ki->key_size;
	a.value_size = ki->value_size;
	a.max_entries = ki->max_entries;
	a.map_flags = flags;
	memcpy(a.map_name, ki->name, sizeof(a.map_name));
	fd = shim_user_bpf(BPF_MAP_CREATE, (uint64_t)(uintptr_t)&a, sizeof(a));
	if (fd < 0)
		return -1;
	fd = shim_fd_internal((int)fd);
	if (!(*e = shim_fd_peek((int)fd))) {
		shim_fd_close_internal((int)fd);
		errno = EBADF;
		return -1;
	}
	(*e)->internal = 1;
	return (int)fd;
}

/* shim_hybrid_map_like() with the kernel map's flags, saying why not */
static int map_like(const struct bpf_map_info *ki, struct shim_fd **e, char *why, size_t n)
{
	int fd = shim_hybrid_map_like(ki, ki->map_flags, e);

	if (fd < 0)
		snprintf(why, n, "bpfshim cannot make its map %.16s (%s)", ki->name, strerror(errno));
	return fd;
}

/*
 * A kernel stack trace map's twin: the kernel's stack maps take no ids
 * from user space, so the twins' stacks go to a bpfshim stack map of the
 * same shape whose ids follow the kernel map's (those end below its
 * n_buckets), and the loader's lookups, deletes and walks of the kernel
 * map by those ids are answered from it (stack_cmd): one id space, the
 * kernel's ids the kernel's stacks. bpftool without the library sees only
 * the kernel's. Under twin_lock.
 */
static int stack_twin(const struct bpf_map_info *ki, char *why, size_t n)
{
	struct shim_fd *e;
	int64_t base;
	int fd;

	if (n_tmaps == TWIN_MAX) {
		snprintf(why, n, "too many maps shared with user space");
		return -1;
	}
	if ((fd = map_like(ki, &e, why, n)) < 0)
		return -1;
	if ((base = shm_stack_map_ids_above(&e->map)) < 0) {
		snprintf(why, n, "its stack map %.16s has too many buckets for ids above the kernel's", ki->name);
		shim_fd_close_internal((int)fd);
		return -1;
	}
	tmaps[n_tmaps].kid = ki->id;
	tmaps[n_tmaps].sid = e->id;
	tmaps[n_tmaps].stack_base = (uint32_t)base;
	tmaps[n_tmaps++].sfd = fd;
	__atomic_add_fetch(&n_stack_twins, 1, __ATOMIC_RELEASE);
	return fd;
}

/*
 * The loader's LOOKUP_ELEM, LOOKUP_AND_DELETE_ELEM, DELETE_ELEM and
 * GET_NEXT_KEY of a kernel stack map with a twin (stack_twin): an id from
 * the twins is the twin map's, a walk goes on into the twin map's ids
 * after the kernel's. 1 when handled (*ret, errno), 0: the kernel's.
 */
static int stack_cmd(int cmd, uint64_t uattr, unsigned int size, const struct bpf_map_info *ki, long *ret)
{
	union bpf_attr a;
	uint32_t id = 0, base = 0;
	int sfd = -1, has_key;

	if (size < offsetof(union bpf_attr, next_key) + sizeof(a.next_key) || size > sizeof(a))
		return 0;
	memset(&a, 0, sizeof(a));
	if (shim_copy_from_user(&a, uattr, size))
		return 0;
	pthread_mutex_lock(&twin_lock);
	for (unsigned i = 0; i < n_tmaps; i++)
		if (tmaps[i].kid == ki->id && tmaps[i].stack_base) {
			sfd = tmaps[i].sfd;
			base = tmaps[i].stack_base;
		}
	pthread_mutex_unlock(&twin_lock);
	has_key = a.key && !shim_copy_from_user(&id, a.key, sizeof(id));
	if (sfd < 0 || (a.key && !has_key))
		return 0;
	if (cmd == BPF_MAP_GET_NEXT_KEY && (!has_key || id < base)) {
		/* the kernel's ids first; its walk ends with ENOENT */
		*ret = real.syscall(SYS_bpf, cmd, uattr, size);
		if (*ret == 0 || errno != ENOENT)
			return 1;
		a.key = 0;
	} else if (!has_key || id < base) {
		return 0;
	}
	a.map_fd = (uint32_t)sfd;
	*ret = shim_user_bpf(cmd, (uint64_t)(uintptr_t)&a, size);
	return 1;
}

/* bpfshim's map for kernel map fd `kfd` (an mmapable array: the kernel's
 * memory is its values, shim_hybrid_map_bind), made on first use: its fd,
 * or -1 with why. Under twin_lock. */
static int twin_map(int kfd, const struct bpf_map_info *ki, const struct bpf_insn *insns, uint32_t insn_cnt,
		    char *why, size_t n)
{
	int hash = shim_fold_type(ki->type), events;
	struct shim_reply rep;
	struct shim_fd *e;
	const char *w;
	long fd;

	/* a hash map: each program's uses of it add (hybrid_fold.c) */
	if (hash && shim_fold_adds_only(insns, insn_cnt, kfd, ki, &w)) {
		snprintf(why, n, "its map %.16s: %s", ki->name, w);
		return -1;
	}
	for (unsigned i = 0; i < n_tmaps; i++)
		if (tmaps[i].kid == ki->id)
			return tmaps[i].sfd;
	if (ki->type == BPF_MAP_TYPE_STACK_TRACE)
		return stack_twin(ki, why, n);
	events = ki->type == BPF_MAP_TYPE_PERF_EVENT_ARRAY || ki->type == BPF_MAP_TYPE_RINGBUF;
	if (n_tmaps == TWIN_MAX || (!hash && !events && (ki->type != BPF_MAP_TYPE_ARRAY || !(ki->map_flags & BPF_F_MMAPABLE)))) {
		snprintf(why, n, "its map %.16s (type %u) is not shared with user space yet", ki->name, ki->type);
		return -1;
	}
	if (hash || events) {
		/* counts folded into the kernel's (hybrid_fold.c), events forwarded (hybrid_events.c) */
		if ((fd = hash ? shim_fold_map(kfd, ki, &w) : shim_events_map(kfd, ki, &w)) < 0) {
			snprintf(why, n, "its map %.16s: %s", ki->name, w);
			return -1;
		}
		tmaps[n_tmaps].kid = ki->id;
		tmaps[n_tmaps].sid = shim_fd_peek((int)fd) ? shim_fd_peek((int)fd)->id : 0;
		tmaps[n_tmaps++].sfd = (int)fd;
		return (int)fd;
	}
	if ((fd = map_like(ki, &e, why, n)) < 0)
		return -1;
	if (shim_request(SHIM_OP_CTL, SHIM_CTL_KMAP_SET, e->id, NULL, 0, kfd, &rep, NULL, 0) || rep.err) {
		snprintf(why, n, "bpfshim cannot bind its map %.16s to the kernel's", ki->name);
		shim_fd_close_internal((int)fd);
		return -1;
	}
	if (shim_hybrid_map_bind(&e->map)) {
		snprintf(why, n, "its map %.16s cannot be mapped", ki->name);
		shim_fd_close_internal((int)fd);
		return -1;
	}
	tmaps[n_tmaps].kid = ki->id;
	tmaps[n_tmaps].sid = e->id;
	tmaps[n_tmaps++].sfd = (int)fd;
	return (int)fd;
}

/* After the kernel accepted a kprobe-type PROG_LOAD (program fd kfd): the
 * same instructions, their map fds the twins' maps, loaded into bpfshim. */
static void twin_prog(uint64_t uattr, unsigned int size, int kfd)
{
	union bpf_attr a, b;
	struct bpf_insn *insns = NULL, *orig = NULL;   /* rewritten; as the loader gave them */
	struct bpf_map_info ki;
	char why[112] = "";
	long tfd = -1;

	memset(&a, 0, sizeof(a));
	if (size > sizeof(a) || shim_copy_from_user(&a, uattr, size) || a.prog_type != BPF_PROG_TYPE_KPROBE)
		return;
	pthread_mutex_lock(&twin_lock);
	if (!a.insn_cnt || a.insn_cnt > 1000000 || !(insns = malloc(a.insn_cnt * sizeof(*insns))) ||
	    !(orig = malloc(a.insn_cnt * sizeof(*insns))) ||
	    shim_copy_from_user(insns, a.insns, a.insn_cnt * sizeof(*insns))) {
		snprintf(why, sizeof(why), "its instructions could not be read");
		goto out;
	}
	memcpy(orig, insns, a.insn_cnt * sizeof(*insns));
	for (uint32_t i = 0; i < a.insn_cnt; i++) {
		if (insns[i].code != (BPF_LD | BPF_IMM | BPF_DW))
			continue;
		if (insns[i].src_reg == BPF_PSEUDO_MAP_FD || insns[i].src_reg == BPF_PSEUDO_MAP_VALUE) {
			int sfd;
			if (map_info(insns[i].imm, &ki)) {
				snprintf(why, sizeof(why), "a map fd in it is not a map");
				goto out;
			}
			if ((sfd = twin_map(insns[i].imm, &ki, orig, a.insn_cnt, why, sizeof(why))) < 0)
				goto out;
			insns[i].imm = sfd;
		} else if (insns[i].src_reg) {
			snprintf(why, sizeof(why), "it refers to objects by fd_array or BTF (ld_imm64 src %u)",
				 insns[i].src_reg);
			goto out;
		}
		i++;
	}
	/* the program as the loader gave it, without its kernel BTF (the
	 * kernel verified it with that) */
	memset(&b, 0, sizeof(b));
	b.prog_type = a.prog_type;
	b.insn_cnt = a.insn_cnt;
	b.insns = (uint64_t)(uintptr_t)insns;
	b.license = a.license;
	b.kern_version = a.kern_version;
	b.expected_attach_type = a.expected_attach_type;
	memcpy(b.prog_name, a.prog_name, sizeof(b.prog_name));
	tfd = shim_user_bpf(BPF_PROG_LOAD, (uint64_t)(uintptr_t)&b, sizeof(b));
	if (tfd < 0)
		snprintf(why, sizeof(why), "bpfshim does not load it (%s)", strerror(errno));
	else
		tfd = shim_fd_internal((int)tfd);
	if (tfd >= 0 && shim_fd_peek((int)tfd))
		shim_fd_peek((int)tfd)->internal = 1;
out:
	{
		struct twin *t = twin_add(kfd, TWIN_PROG, (int)tfd);
		if (t && tfd < 0)
			snprintf(t->why, sizeof(t->why), "%s", why);
	}
	pthread_mutex_unlock(&twin_lock);
	free(insns);
	free(orig);
}

static int uprobe_type = -2;

long shim_hybrid_perf_event_open(uint64_t uattr, long pid, long cpu, long group_fd, unsigned long flags)
{
	long r = real.syscall(SYS_perf_event_open, uattr, pid, cpu, group_fd, flags);
	struct perf_event_attr head;
	int e = errno;

	if (r < 0)
		return r;
	if (uprobe_type == -2)
		uprobe_type = shim_pmu_type("uprobe");
	memset(&head, 0, sizeof(head));
	if (group_fd == -1 && !shim_copy_from_user(&head, uattr, PERF_ATTR_SIZE_VER0) &&
	    (int)head.type == uprobe_type) {
		/* the same uprobe in bpfshim, while the loader's attr (its path) is valid */
		long t = shim_user_perf_event_open(uattr, pid, cpu, -1, flags);
		if (t >= 0) {
			t = shim_fd_internal((int)t);
			if (shim_fd_peek((int)t))
				shim_fd_peek((int)t)->internal = 1;
			pthread_mutex_lock(&twin_lock);
			twin_add((int)r, TWIN_PERF, (int)t);
			pthread_mutex_unlock(&twin_lock);
		}
	}
	errno = e;
	return r;
}

/* BPFSHIM_DEBUG_HOOKS (read at start): say which uprobes have no twin.
 * Not said otherwise: the kernel serves them correctly, at its cost. */
static int debug_twins;

/* The twin of kernel program fd kfd, or -1 (saying why there is none). */
static int twin_prog_fd(int kfd)
{
	struct twin *t = twin_find(kfd, TWIN_PROG);
	char m[200];

	if (t && t->tfd >= 0)
		return t->tfd;
	snprintf(m, sizeof(m), "hybrid mode: a uprobe's program is served by the kernel's breakpoint in every "
		 "process: %s", t ? t->why : "it is not a kprobe-type program bpfshim saw loaded");
	if (debug_twins)
		shim_say_once(m);
	return -1;
}

/* ioctl of a kernel uprobe event with a twin: the kernel's first, then the
 * twin's (a detach: the twin's first). 1 when handled (*ret, errno). */
int shim_hybrid_ioctl(int fd, unsigned long req, unsigned long arg, int *ret)
{
	struct twin *t;
	struct shim_fd *te;
	int tfd, tprog = -1, r, e;

	if (req != PERF_EVENT_IOC_SET_BPF && req != PERF_EVENT_IOC_ENABLE && req != PERF_EVENT_IOC_DISABLE)
		return 0;
	pthread_mutex_lock(&twin_lock);
	t = twin_find(fd, TWIN_PERF);
	tfd = t ? t->tfd : -1;
	if (tfd >= 0 && req == PERF_EVENT_IOC_SET_BPF)
		tprog = twin_prog_fd((int)arg);
	pthread_mutex_unlock(&twin_lock);
	if (tfd < 0)
		return 0;
	te = shim_fd_peek(tfd);
	if (req == PERF_EVENT_IOC_DISABLE && te)
		shim_perf_ioctl(te, req, 0);
	r = real.ioctl(fd, req, arg);
	e = errno;
	if (!r && te && req == PERF_EVENT_IOC_ENABLE)
		shim_perf_ioctl(te, req, 0);
	if (!r && te && tprog >= 0)
		shim_perf_ioctl(te, req, (unsigned long)tprog);
	errno = e;
	*ret = r;
	return 1;
}

/* BPF_LINK_CREATE of a kernel program on a kernel uprobe event with a
 * twin: the kernel's link, then the twin's (closed with it). */
static long link_create(uint64_t uattr, unsigned int size)
{
	long r = real.syscall(SYS_bpf, BPF_LINK_CREATE, uattr, size);
	union bpf_attr a, b;
	struct twin *t;
	int e = errno, tfd, tprog;

	memset(&a, 0, sizeof(a));
	if (r < 0 || size > sizeof(a) || shim_copy_from_user(&a, uattr, size) ||
	    a.link_create.attach_type != BPF_PERF_EVENT)
		goto out;
	pthread_mutex_lock(&twin_lock);
	t = twin_find((int)a.link_create.target_fd, TWIN_PERF);
	tfd = t ? t->tfd : -1;
	tprog = tfd >= 0 ? twin_prog_fd((int)a.link_create.prog_fd) : -1;
	if (tprog >= 0) {
		memset(&b, 0, sizeof(b));
		b.link_create.prog_fd = (uint32_t)tprog;
		b.link_create.target_fd = (uint32_t)tfd;
		b.link_create.attach_type = BPF_PERF_EVENT;
		b.link_create.perf_event.bpf_cookie = a.link_create.perf_event.bpf_cookie;
		long l = shim_user_bpf(BPF_LINK_CREATE, (uint64_t)(uintptr_t)&b, sizeof(b));
		if (l >= 0) {
			l = shim_fd_internal((int)l);
			if (shim_fd_peek((int)l))
				shim_fd_peek((int)l)->internal = 1;
			twin_add((int)r, TWIN_LINK, (int)l);
		}
	}
	pthread_mutex_unlock(&twin_lock);
out:
	errno = e;
	return r;
}

/* Before the loader's close of fd: its twins go first (a detach: the
 * agents unpatch before the kernel's breakpoint goes). */
void shim_hybrid_closing(int fd)
{
	int tfd[3], n = 0;

	if (!__atomic_load_n(&n_twins, __ATOMIC_RELAXED))
		return;
	pthread_mutex_lock(&twin_lock);
	for (unsigned i = 0; i < n_twins; i++)
		if (twins[i].kfd == fd) {
			if (twins[i].tfd >= 0 && n < 3)
				tfd[n++] = twins[i].tfd;
			twins[i].kfd = -1;
		}
	pthread_mutex_unlock(&twin_lock);
	while (n)
		shim_fd_close_internal(tfd[--n]);
}

/* A twin's array in this process (prog.c, when a program opens it): the
 * kernel map's memory instead of the segment's, when the server has the
 * kernel map behind it. Runs in the follower, before the program can.
 * -1 when the map was bound to a kernel map this process cannot map (a
 * restarted server lost its fd): the program must not run here (its hits
 * stay with the kernel's breakpoint) rather than count beside the kernel. */
int shim_hybrid_map_bind(struct shm_map *m)
{
	struct shim_reply rep;
	size_t len = ((size_t)m->value_stride * m->attr.max_entries + 4095) & ~(size_t)4095;
	void *p;

	if (shim_request(SHIM_OP_CTL, SHIM_CTL_KMAP_FD, m->hdr->id, NULL, 0, -1, &rep, NULL, 0))
		return 0;
	if (rep.err)
		return rep.err == ESTALE ? -1 : 0;
	p = real.mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, (int)rep.ret, 0);
	if (p == MAP_FAILED)      /* frozen (.rodata): programs only read it */
		p = real.mmap(NULL, len, PROT_READ, MAP_SHARED, (int)rep.ret, 0);
	real.close((int)rep.ret);
	if (p == MAP_FAILED)
		return -1;
	__atomic_store_n(&m->data, p, __ATOMIC_RELEASE);
	return 0;
}

#ifndef CAP_PERFMON
#define CAP_PERFMON 38
#endif
#ifndef CAP_BPF
#define CAP_BPF 39
#endif

static int has_cap(const struct __user_cap_data_struct d[2], int cap)
{
	return (d[cap / 32].effective >> (cap % 32)) & 1;
}

/* What the caller lacks for tracing programs (bpf_capable() and
 * perfmon_capable(): CAP_SYS_ADMIN stands in for either). */
static void missing_caps(char *out, size_t n)
{
	struct __user_cap_header_struct h = { .version = _LINUX_CAPABILITY_VERSION_3 };
	struct __user_cap_data_struct d[2];
	int bpf, perfmon;

	memset(d, 0, sizeof(d));
	if (real.syscall(SYS_capget, &h, d)) {
		snprintf(out, n, "CAP_BPF and CAP_PERFMON (or root)");
		return;
	}
	bpf = has_cap(d, CAP_BPF) || has_cap(d, CAP_SYS_ADMIN);
	perfmon = has_cap(d, CAP_PERFMON) || has_cap(d, CAP_SYS_ADMIN);
	if (!bpf && !perfmon)
		snprintf(out, n, "CAP_BPF and CAP_PERFMON are missing (uid %d; run as root)", (int)getuid());
	else if (!bpf || !perfmon)
		snprintf(out, n, "%s is missing (uid %d)", bpf ? "CAP_PERFMON" : "CAP_BPF", (int)getuid());
	else
		snprintf(out, n, "refused with CAP_BPF and CAP_PERFMON (kernel.unprivileged_bpf_disabled, an LSM?)");
}

/* 0 when the caller can load a tracing program in the kernel (what every
 * loader of the mode needs: CAP_BPF + CAP_PERFMON, or root), else why not. */
static int kernel_ebpf_check(char *why, size_t n)
{
	struct bpf_insn insns[2] = {
		{ .code = BPF_ALU64 | BPF_MOV | BPF_K, .dst_reg = BPF_REG_0, .imm = 0 },
		{ .code = BPF_JMP | BPF_EXIT },
	};
	union bpf_attr a;
	char detail[160];

	memset(&a, 0, sizeof(a));
	a.prog_type = BPF_PROG_TYPE_KPROBE;
	a.insns = (uint64_t)(uintptr_t)insns;
	a.insn_cnt = 2;
	a.license = (uint64_t)(uintptr_t)"GPL";
	long fd = real.syscall(SYS_bpf, BPF_PROG_LOAD, &a, sizeof(a));
	if (fd >= 0) {
		real.close((int)fd);
		return 0;
	}
	int e = errno;
	if (e == EPERM || e == EACCES)
		missing_caps(detail, sizeof(detail));
	else if (e == ENOSYS)
		snprintf(detail, sizeof(detail), "this kernel has no bpf() (CONFIG_BPF_SYSCALL)");
	else
		snprintf(detail, sizeof(detail), "%s", strerror(e));
	snprintf(why, n, "bpfshim: hybrid mode (--kernel, BPFSHIM_KERNEL=1) needs kernel eBPF: "
		 "a kprobe-type BPF_PROG_LOAD fails with %s: %s\n", strerrorname_np(e) ? strerrorname_np(e) : "?", detail);
	return -1;
}

/* At start, after the real functions are resolved (interpose.c) and before
 * the agent starts (uprobe.c): start/preload.c. */
void hybrid_init(void)
{
	const char *v = getenv("BPFSHIM_KERNEL");
	char why[400];

	if (!v || strcmp(v, "1") || !shim_interposing())
		return;
	shim_resolve_real();
	if (!getenv("BPFSHIM_KERNEL_CHECKED")) {
		if (kernel_ebpf_check(why, sizeof(why))) {
			if (write(2, why, strlen(why)) < 0) { /* nothing more to say */ }
			_exit(1);
		}
		setenv("BPFSHIM_KERNEL_CHECKED", "1", 1);
	}
	debug_twins = getenv("BPFSHIM_DEBUG_HOOKS") != NULL;
	shim_hybrid = 1;
}

/* SPDX-License-Identifier: MIT */
/* The agents' registry and the loader's wait: see attach_ack.h. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <string.h>
#include <time.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <linux/futex.h>
#include "attach_ack.h"
#include "rawsys.h"
#include "rt.h"

static struct attach_ack_reg *reg;      /* this process's mapping, when it has one */
static uint64_t reg_dev, reg_ino;       /* the file: a process maps it while it is an agent */
static struct attach_ack_ent *me;       /* this process's entry */
static int32_t my_pid;
static uint64_t my_start;

void attach_ack_init(void)
{
	char st;

	my_pid = (int32_t)BPF_RT_SYS(SYS_getpid, 0);
	if (bpf_rt_proc_stat(my_pid, &st, &my_start))
		my_start = 0;
}

/* The registry in `dir`, created by the first agent (zeros are an empty
 * registry); NULL when it cannot be had. */
static struct attach_ack_reg *map_reg(const char *dir, int create)
{
	char path[600];
	struct stat sb;
	long fd;

	if (bpf_rt_path_join(path, sizeof(path), dir, "agents"))
		return NULL;
	fd = BPF_RT_SYS(SYS_openat, AT_FDCWD, path, O_RDWR | O_CLOEXEC | O_NOFOLLOW | (create ? O_CREAT : 0), 0600);
	if (fd < 0)
		return NULL;
	struct attach_ack_reg *r = NULL;
	if (!BPF_RT_SYS(SYS_fstat, fd, &sb) && S_ISREG(sb.st_mode) &&
	    ((size_t)sb.st_size >= sizeof(*r) || (create && !BPF_RT_SYS(SYS_ftruncate, fd, sizeof(*r)))))
		r = bpf_rt_mmap(sizeof(*r), PROT_READ | PROT_WRITE, MAP_SHARED, (int)fd, 0);
	BPF_RT_SYS(SYS_close, fd);
	if (!r)
		return NULL;
	uint32_t zero = 0;
	__atomic_compare_exchange_n(&r->magic, &zero, ATTACH_ACK_MAGIC, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE);
	if (!zero) {      /* the first: the rest of the header */
		r->version = ATTACH_ACK_VERSION;
		r->nents = ATTACH_ACK_ENTS;
	}
	if (__atomic_load_n(&r->magic, __ATOMIC_ACQUIRE) != ATTACH_ACK_MAGIC ||
	    (zero && r->version != ATTACH_ACK_VERSION)) {
		BPF_RT_SYS(SYS_munmap, r, sizeof(*r));
		return NULL;
	}
	reg_dev = sb.st_dev;
	reg_ino = sb.st_ino;
	return r;
}

/* Frees e if its owner `pid` (started at `start`) is gone. */
static void reclaim(struct attach_ack_ent *e, int32_t pid, uint64_t start)
{
	if (!__atomic_compare_exchange_n(&e->pid, &pid, -1, 0, __ATOMIC_ACQ_REL, __ATOMIC_RELAXED))
		return;
	if (__atomic_load_n(&e->start, __ATOMIC_ACQUIRE) != start) {
		__atomic_store_n(&e->pid, pid, __ATOMIC_RELEASE);    /* claimed again meanwhile */
		return;
	}
	e->start = 0;
	e->late = 0;
	__atomic_store_n(&e->pid, 0, __ATOMIC_RELEASE);
}

static int dead(const struct attach_ack_ent *e, int32_t pid)
{
	char st;
	uint64_t start;
	int err = bpf_rt_proc_stat(pid, &st, &start);

	return err == -ESRCH || (!err && (start != e->start || st == 'Z' || st == 'X'));
}

/* An entry for this process, applied = `applied`: its own again after an
 * exec (same pid and start time), else a free one, else a dead process's. */
static struct attach_ack_ent *claim(uint32_t applied)
{
	struct attach_ack_ent *e;

	if (!reg || !my_start)
		return NULL;
	for (unsigned i = 0; i < ATTACH_ACK_ENTS; i++) {
		e = &reg->ents[i];
		if (__atomic_load_n(&e->pid, __ATOMIC_ACQUIRE) == my_pid && e->start == my_start)
			goto mine;
	}
	for (int pass = 0; pass < 2; pass++)
		for (unsigned i = 0; i < ATTACH_ACK_ENTS; i++) {
			e = &reg->ents[i];
			int32_t pid = __atomic_load_n(&e->pid, __ATOMIC_ACQUIRE), zero = 0;
			if (pass && pid > 0 && dead(e, pid))
				reclaim(e, pid, e->start);
			if (__atomic_compare_exchange_n(&e->pid, &zero, -1, 0, __ATOMIC_ACQ_REL, __ATOMIC_RELAXED)) {
				__atomic_store_n(&e->start, my_start, __ATOMIC_RELEASE);
				goto mine;
			}
		}
	return NULL;
mine:
	__atomic_store_n(&e->applied, applied, __ATOMIC_RELEASE);
	e->late = 0;
	__atomic_store_n(&e->pid, my_pid, __ATOMIC_RELEASE);
	return e;
}

void attach_ack_join(const char *dir)
{
	if (!reg)
		reg = map_reg(dir, 1);
	if (!me)
		me = claim(0);
}

int attach_ack_sleep(int ms)
{
	struct attach_ack_ent *e = me;
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };

	if (!e)
		return -1;
	BPF_RT_SYS(SYS_futex, &e->applied, FUTEX_WAIT, __atomic_load_n(&e->applied, __ATOMIC_ACQUIRE), &ts, 0, 0);
	return 0;
}

void attach_ack_kick(void)
{
	if (me)
		BPF_RT_SYS(SYS_futex, &me->applied, FUTEX_WAKE, INT_MAX, 0, 0, 0);
}

void attach_ack_forked(void)
{
	uint32_t applied = me ? __atomic_load_n(&me->applied, __ATOMIC_ACQUIRE) : 0;
	int had = me != NULL;

	me = NULL;
	attach_ack_init();
	if (had)
		me = claim(applied);
}

void attach_ack_leave(void)
{
	if (me)
		reclaim(me, my_pid, my_start);
	me = NULL;
	if (reg)
		BPF_RT_SYS(SYS_munmap, reg, sizeof(*reg));
	reg = NULL;
}

void attach_ack_applied(uint32_t gen, const uint32_t *now)
{
	struct attach_ack_ent *e = me;

	if (!e)
		return;
	/* reclaimed by mistake (another pid namespace sees another pid): anew */
	if (__atomic_load_n(&e->pid, __ATOMIC_ACQUIRE) != my_pid || e->start != my_start)
		if (!(e = me = claim(gen)))
			return;
	__atomic_store_n(&e->applied, gen, __ATOMIC_RELEASE);
	if (__atomic_load_n(now, __ATOMIC_ACQUIRE) == gen)
		__atomic_store_n(&e->late, 0, __ATOMIC_RELEASE);
	BPF_RT_SYS(SYS_futex, &e->applied, FUTEX_WAKE, INT_MAX, 0, 0, 0);
}

/* ---- the loader ---- */

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int is_registry(const struct bpf_rt_vma *v, void *unused)
{
	(void)unused;
	return v->ino == reg_ino && v->dev == reg_dev;
}

/* Whether `pid` still maps the registry, i.e. still runs the agent (an exec
 * into a program without it keeps the pid and the start time). 1 when its
 * maps cannot be read. */
static int maps_registry(int32_t pid)
{
	char path[32] = "/proc/", buf[8192];
	size_t k = 6;

	k += bpf_rt_utoa(path + k, (uint64_t)pid);
	memcpy(path + k, "/maps", 6);
	long fd = BPF_RT_SYS(SYS_openat, AT_FDCWD, path, O_RDONLY | O_CLOEXEC, 0);
	if (fd < 0)
		return 1;
	int found = bpf_rt_maps_each(fd, buf, sizeof(buf), is_registry, NULL);
	BPF_RT_SYS(SYS_close, fd);
	return found != 0;
}

static int behind(uint32_t applied, uint32_t gen)
{
	return (int32_t)(applied - gen) < 0;
}

/* After this long behind, a process is asked whether it still runs the agent. */
#define STILL_AGENT_MS 20

void attach_ack_wait(uint32_t gen)
{
	char dir[512];

	if (!reg && !rt_runtime_dir(dir, sizeof(dir)))
		reg = map_reg(dir, 0);
	struct attach_ack_reg *r = reg;
	if (!r)
		return;       /* no agent ever ran */
	int64_t t0 = now_ms(), deadline = t0 + ATTACH_ACK_WAIT_MS;
	for (unsigned i = 0; i < ATTACH_ACK_ENTS; i++) {
		struct attach_ack_ent *e = &r->ents[i];
		int asked = 0, kicked = 0;
		for (;;) {
			int32_t pid = __atomic_load_n(&e->pid, __ATOMIC_ACQUIRE);
			uint32_t applied = __atomic_load_n(&e->applied, __ATOMIC_ACQUIRE);
			uint64_t start = __atomic_load_n(&e->start, __ATOMIC_ACQUIRE);
			char st;
			uint64_t st_start;
			if (pid <= 0 || !behind(applied, gen) || __atomic_load_n(&e->late, __ATOMIC_ACQUIRE))
				break;
			int err = bpf_rt_proc_stat(pid, &st, &st_start);
			if (err == -ESRCH || (!err && (st_start != start || st == 'Z' || st == 'X'))) {
				reclaim(e, pid, start);
				break;
			}
			if (!err && (st == 'T' || st == 't'))
				break;        /* stopped: its threads cannot run until it is continued */
			/* a follower still looking for the table sleeps on its entry */
			if (!kicked++)
				BPF_RT_SYS(SYS_futex, &e->applied, FUTEX_WAKE, INT_MAX, 0, 0, 0);
			int64_t t = now_ms();
			if (!asked && t - t0 >= STILL_AGENT_MS) {
				asked = 1;
				if (!maps_registry(pid)) {
					reclaim(e, pid, start);
					break;
				}
			}
			if (t >= deadline) {
				__atomic_store_n(&e->late, 1, __ATOMIC_RELEASE);
				break;
			}
			/* woken by its ack; a look at its state every 10 ms */
			int64_t ms = deadline - t < 10 ? deadline - t : 10;
			struct timespec ts = { 0, (long)ms * 1000000L };
			BPF_RT_SYS(SYS_futex, &e->applied, FUTEX_WAIT, applied, &ts, 0, 0);
		}
	}
}

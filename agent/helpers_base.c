/* SPDX-License-Identifier: MIT */
/*
 * The base helpers (map access, time, current task, memory reads), by
 * enum bpf_func_id. Each is registered into bpf_helpers[] at load unless the
 * table already has an implementation for that id.
 *
 * Memory reads of arbitrary addresses (probe_read*) go through
 * process_vm_readv on this process: a bad address gives -EFAULT, as the
 * kernel's copy_from_user_nofault, and never a fault.
 */
#include <errno.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include "bpf_rt.h"
#include "map.h"

typedef uint64_t u64;

static u64 err(int e)
{
	return (u64)(int64_t)-e;
}

/* ---- maps ---- */

static u64 map_lookup_elem(u64 map, u64 key, u64 a3, u64 a4, u64 a5)
{
	struct shm_map *m = (struct shm_map *)(uintptr_t)map;

	if (!m->ops->lookup_ptr)
		return 0;
	return (u64)(uintptr_t)m->ops->lookup_ptr(m, (const void *)(uintptr_t)key);
}

static u64 map_update_elem(u64 map, u64 key, u64 value, u64 flags, u64 a5)
{
	struct shm_map *m = (struct shm_map *)(uintptr_t)map;

	if (!m->ops->prog_update)
		return err(EOPNOTSUPP);
	return (u64)(int64_t)m->ops->prog_update(m, (const void *)(uintptr_t)key, (const void *)(uintptr_t)value, flags);
}

static u64 map_delete_elem(u64 map, u64 key, u64 a3, u64 a4, u64 a5)
{
	struct shm_map *m = (struct shm_map *)(uintptr_t)map;

	if (!m->ops->prog_delete)
		return err(EOPNOTSUPP);
	return (u64)(int64_t)m->ops->prog_delete(m, (const void *)(uintptr_t)key);
}

static u64 map_push_elem(u64 map, u64 value, u64 flags, u64 a4, u64 a5)
{
	struct shm_map *m = (struct shm_map *)(uintptr_t)map;

	if (!m->ops->push)
		return err(EOPNOTSUPP);
	return (u64)(int64_t)m->ops->push(m, (const void *)(uintptr_t)value, flags);
}

static u64 map_pop_elem(u64 map, u64 value, u64 a3, u64 a4, u64 a5)
{
	struct shm_map *m = (struct shm_map *)(uintptr_t)map;

	if (!m->ops->pop)
		return err(EOPNOTSUPP);
	return (u64)(int64_t)m->ops->pop(m, (void *)(uintptr_t)value);
}

static u64 map_peek_elem(u64 map, u64 value, u64 a3, u64 a4, u64 a5)
{
	struct shm_map *m = (struct shm_map *)(uintptr_t)map;

	if (!m->ops->peek)
		return err(EOPNOTSUPP);
	return (u64)(int64_t)m->ops->peek(m, (void *)(uintptr_t)value);
}

/* ---- time ---- */

static u64 clock_ns(clockid_t c)
{
	struct timespec ts;
	clock_gettime(c, &ts);
	return (u64)ts.tv_sec * 1000000000ull + (u64)ts.tv_nsec;
}

static u64 ktime_get_ns(u64 a1, u64 a2, u64 a3, u64 a4, u64 a5) { return clock_ns(CLOCK_MONOTONIC); }
static u64 ktime_get_boot_ns(u64 a1, u64 a2, u64 a3, u64 a4, u64 a5) { return clock_ns(CLOCK_BOOTTIME); }
static u64 ktime_get_coarse_ns(u64 a1, u64 a2, u64 a3, u64 a4, u64 a5) { return clock_ns(CLOCK_MONOTONIC_COARSE); }
static u64 ktime_get_tai_ns(u64 a1, u64 a2, u64 a3, u64 a4, u64 a5) { return clock_ns(CLOCK_TAI); }

static u64 jiffies64(u64 a1, u64 a2, u64 a3, u64 a4, u64 a5)
{
	/* INITIAL_JIFFIES-free count at CONFIG_HZ=250, from the monotonic clock */
	return clock_ns(CLOCK_MONOTONIC) / 4000000ull;
}

/* ---- this task ---- */

static __thread uint32_t rnd_state;

static u64 get_prandom_u32(u64 a1, u64 a2, u64 a3, u64 a4, u64 a5)
{
	uint32_t x = rnd_state;
	if (!x)
		x = (uint32_t)clock_ns(CLOCK_MONOTONIC) ^ (uint32_t)(uintptr_t)&x ^ 0x9e3779b9u;
	x ^= x << 13;
	x ^= x >> 17;
	x ^= x << 5;
	rnd_state = x;
	return x;
}

static u64 get_smp_processor_id(u64 a1, u64 a2, u64 a3, u64 a4, u64 a5)
{
	int c = shm_run_cpu >= 0 ? shm_run_cpu : sched_getcpu();
	return c < 0 ? 0 : (u64)c;
}

static u64 get_numa_node_id(u64 a1, u64 a2, u64 a3, u64 a4, u64 a5) { return 0; }

static __thread uint32_t my_tid;

static u64 get_current_pid_tgid(u64 a1, u64 a2, u64 a3, u64 a4, u64 a5)
{
	if (!my_tid)
		my_tid = (uint32_t)syscall(SYS_gettid);
	return (u64)(uint32_t)getpid() << 32 | my_tid;
}

static u64 get_current_uid_gid(u64 a1, u64 a2, u64 a3, u64 a4, u64 a5)
{
	return (u64)(uint32_t)getgid() << 32 | (uint32_t)syscall(SYS_getuid);
}

/* bpf_get_current_comm(buf, size): the thread's comm, NUL-padded to size. */
static u64 get_current_comm(u64 buf, u64 size, u64 a3, u64 a4, u64 a5)
{
	char comm[16] = { 0 };

	if (!size)
		return err(EINVAL);
	prctl(PR_GET_NAME, comm, 0, 0, 0);
	memset((void *)(uintptr_t)buf, 0, size);
	memcpy((void *)(uintptr_t)buf, comm, size - 1 < 15 ? size - 1 : 15);
	return 0;
}

static u64 get_current_task(u64 a1, u64 a2, u64 a3, u64 a4, u64 a5) { return 0; }

static u64 get_func_ip(u64 a1, u64 a2, u64 a3, u64 a4, u64 a5)
{
	return bpf_cur_run_ctx ? bpf_cur_run_ctx->func_ip : 0;
}

static u64 get_attach_cookie(u64 a1, u64 a2, u64 a3, u64 a4, u64 a5)
{
	return bpf_cur_run_ctx ? bpf_cur_run_ctx->bpf_cookie : 0;
}

/* ---- memory ---- */

static int read_mem(void *dst, const void *src, size_t n)
{
	struct iovec l = { dst, n }, r = { (void *)src, n };

	if (!n)
		return 0;
	return process_vm_readv(getpid(), &l, 1, &r, 1, 0) == (ssize_t)n ? 0 : -EFAULT;
}

/* bpf_probe_read_user(): dst zeroed on failure */
static u64 probe_read_user(u64 dst, u64 size, u64 src, u64 a4, u64 a5)
{
	int e = read_mem((void *)(uintptr_t)dst, (const void *)(uintptr_t)src, size);
	if (e)
		memset((void *)(uintptr_t)dst, 0, size);
	return (u64)(int64_t)e;
}

/* What a program calls kernel memory (its stack, map values) is memory of
 * this process: read it as the user variant does; a bad address is -EFAULT. */
#define probe_read_kernel probe_read_user

/* bpf_probe_read_user_str(): bytes copied including the NUL, the rest of
 * dst untouched; a string cut at size-1 still ends in NUL. */
static u64 probe_read_user_str(u64 dst, u64 size, u64 src, u64 a4, u64 a5)
{
	char *d = (char *)(uintptr_t)dst;
	const char *s = (const char *)(uintptr_t)src;
	size_t i = 0;

	if (!size)
		return 0;
	while (i < size - 1) {
		/* page by page, so an unmapped tail past the NUL does not fail the
		 * read; through a bounce buffer, since dst past the NUL must stay
		 * as it was (strncpy_from_*_nofault) */
		char tmp[256];
		size_t chunk = 4096 - ((uintptr_t)(s + i) & 4095);
		if (chunk > size - 1 - i)
			chunk = size - 1 - i;
		if (chunk > sizeof(tmp))
			chunk = sizeof(tmp);
		if (read_mem(tmp, s + i, chunk)) {
			if (!i) {
				memset(d, 0, size);
				return err(EFAULT);
			}
			break;
		}
		char *z = memchr(tmp, 0, chunk);
		if (z) {
			memcpy(d + i, tmp, (size_t)(z - tmp) + 1);
			return (u64)(i + (size_t)(z - tmp) + 1);
		}
		memcpy(d + i, tmp, chunk);
		i += chunk;
	}
	d[i] = 0;
	return i + 1;
}

#define probe_read_kernel_str probe_read_user_str

static u64 probe_write_user(u64 dst, u64 src, u64 size, u64 a4, u64 a5)
{
	struct iovec l = { (void *)(uintptr_t)src, size }, r = { (void *)(uintptr_t)dst, size };

	return process_vm_writev(getpid(), &l, 1, &r, 1, 0) == (ssize_t)size ? 0 : err(EFAULT);
}

static u64 strncmp_(u64 s1, u64 n, u64 s2, u64 a4, u64 a5)
{
	return (u64)(int64_t)strncmp((const char *)(uintptr_t)s1, (const char *)(uintptr_t)s2, n);
}

/* ---- strings: bpf_strtol / bpf_strtoul (kernel/bpf/helpers.c) ---- */

#define BPF_STRTOX_BASE_MASK 0x1F

static int parse_strtoull(const char *buf, size_t buf_len, u64 flags, unsigned long long *res, int *neg)
{
	unsigned base = flags & BPF_STRTOX_BASE_MASK;
	const char *cur = buf;
	size_t len = buf_len, consumed;
	char str[64];

	if (!buf || !buf_len)
		return -EINVAL;
	if (base != 0 && base != 8 && base != 10 && base != 16)
		return -EINVAL;
	if (flags & ~(u64)BPF_STRTOX_BASE_MASK)
		return -EINVAL;
	while (cur < buf + buf_len && (*cur == ' ' || (*cur >= 9 && *cur <= 13)))
		cur++;
	*neg = cur < buf + buf_len && *cur == '-';
	if (*neg)
		cur++;
	consumed = (size_t)(cur - buf);
	len -= consumed;
	if (!len)
		return -EINVAL;
	if (len > sizeof(str) - 1)
		len = sizeof(str) - 1;
	memcpy(str, cur, len);
	str[len] = 0;
	const char *s = str;
	/* _parse_integer_fixup_radix() */
	if (base == 0) {
		if (s[0] == '0') {
			if ((s[1] | 0x20) == 'x' && ((s[2] >= '0' && s[2] <= '9') || ((s[2] | 0x20) >= 'a' && (s[2] | 0x20) <= 'f')))
				base = 16;
			else
				base = 8;
		} else {
			base = 10;
		}
	}
	if (base == 16 && s[0] == '0' && (s[1] | 0x20) == 'x')
		s += 2;
	/* _parse_integer() */
	unsigned long long v = 0;
	int overflow = 0;
	size_t n = 0;
	for (;; n++) {
		unsigned c = (unsigned char)s[n], d;
		if (c >= '0' && c <= '9')
			d = c - '0';
		else if ((c | 0x20) >= 'a' && (c | 0x20) <= 'f')
			d = (c | 0x20) - 'a' + 10;
		else
			break;
		if (d >= base)
			break;
		if (v & (~0ull << 60)) {
			if (v > (~0ull - d) / base)
				overflow = 1;
		}
		v = v * base + d;
	}
	if (overflow)
		return -ERANGE;
	if (!n)
		return -EINVAL;
	*res = v;
	return (int)(consumed + (size_t)(s + n - str));
}

static u64 strtol_(u64 buf, u64 buf_len, u64 flags, u64 res, u64 a5)
{
	unsigned long long v;
	int neg, e;
	long long out;

	*(long *)(uintptr_t)res = 0;
	e = parse_strtoull((const char *)(uintptr_t)buf, buf_len, flags, &v, &neg);
	if (e < 0)
		return (u64)(int64_t)e;
	if (neg) {
		if ((long long)(0 - v) > 0)
			return err(ERANGE);
		out = (long long)(0 - v);
	} else {
		if ((long long)v < 0)
			return err(ERANGE);
		out = (long long)v;
	}
	*(long *)(uintptr_t)res = out;
	return (u64)e;
}

static u64 strtoul_(u64 buf, u64 buf_len, u64 flags, u64 res, u64 a5)
{
	unsigned long long v;
	int neg, e;

	*(unsigned long *)(uintptr_t)res = 0;
	e = parse_strtoull((const char *)(uintptr_t)buf, buf_len, flags, &v, &neg);
	if (e < 0)
		return (u64)(int64_t)e;
	if (neg)
		return err(EINVAL);
	*(unsigned long *)(uintptr_t)res = v;
	return (u64)e;
}

/* ---- bpf_loop: callbacks run in the interpreter ---- */

uint64_t bpf_interp_call(const struct bpf_prog_rt *prog, uint64_t insn_idx, uint64_t r1, uint64_t r2,
			 uint64_t r3, uint64_t r4, uint64_t r5);

static u64 loop_(u64 nr_loops, u64 callback, u64 callback_ctx, u64 flags, u64 a5)
{
	const struct bpf_run_ctx *rc = bpf_cur_run_ctx;
	u64 i;

	if (flags)
		return err(EINVAL);
	if (nr_loops > (1u << 23))
		return err(E2BIG);
	if (!rc || !rc->prog)
		return err(EINVAL);
	for (i = 0; i < nr_loops; i++) {
		u64 ret = bpf_interp_call(rc->prog, callback, i, callback_ctx, 0, 0, 0);
		if (ret)   /* 1: stop; the verifier allows only 0 and 1 */
			return i + 1;
	}
	return i;
}

/* ---- packets: the skb test_run context (libbpf_shim/test_run.c) ---- */

struct shim_skb_ctx {
	struct __sk_buff skb;      /* what the program reads through its ctx */
	const unsigned char *data; /* from the network header (non-L2 types) */
	uint32_t len;
};

static u64 skb_load_bytes(u64 ctx, u64 offset, u64 to, u64 len, u64 a5)
{
	const struct shim_skb_ctx *c = (const struct shim_skb_ctx *)(uintptr_t)ctx;

	if (offset > 0xffff || !len || offset + len > c->len) {
		memset((void *)(uintptr_t)to, 0, len);
		return err(EFAULT);
	}
	memcpy((void *)(uintptr_t)to, c->data + offset, len);
	return 0;
}

/* ---- registration ---- */

static const struct { int id; bpf_helper_fn fn; } base[] = {
	{ BPF_FUNC_map_lookup_elem, map_lookup_elem },
	{ BPF_FUNC_map_update_elem, map_update_elem },
	{ BPF_FUNC_map_delete_elem, map_delete_elem },
	{ BPF_FUNC_map_push_elem, map_push_elem },
	{ BPF_FUNC_map_pop_elem, map_pop_elem },
	{ BPF_FUNC_map_peek_elem, map_peek_elem },
	{ BPF_FUNC_probe_read, probe_read_user },
	{ BPF_FUNC_probe_read_str, probe_read_user_str },
	{ BPF_FUNC_probe_read_user, probe_read_user },
	{ BPF_FUNC_probe_read_user_str, probe_read_user_str },
	{ BPF_FUNC_probe_read_kernel, probe_read_kernel },
	{ BPF_FUNC_probe_read_kernel_str, probe_read_kernel_str },
	{ BPF_FUNC_probe_write_user, probe_write_user },
	{ BPF_FUNC_ktime_get_ns, ktime_get_ns },
	{ BPF_FUNC_ktime_get_boot_ns, ktime_get_boot_ns },
	{ BPF_FUNC_ktime_get_coarse_ns, ktime_get_coarse_ns },
	{ BPF_FUNC_ktime_get_tai_ns, ktime_get_tai_ns },
	{ BPF_FUNC_jiffies64, jiffies64 },
	{ BPF_FUNC_get_prandom_u32, get_prandom_u32 },
	{ BPF_FUNC_get_smp_processor_id, get_smp_processor_id },
	{ BPF_FUNC_get_numa_node_id, get_numa_node_id },
	{ BPF_FUNC_get_current_pid_tgid, get_current_pid_tgid },
	{ BPF_FUNC_get_current_uid_gid, get_current_uid_gid },
	{ BPF_FUNC_get_current_comm, get_current_comm },
	{ BPF_FUNC_get_current_task, get_current_task },
	{ BPF_FUNC_get_func_ip, get_func_ip },
	{ BPF_FUNC_get_attach_cookie, get_attach_cookie },
	{ BPF_FUNC_strncmp, strncmp_ },
	{ BPF_FUNC_strtol, strtol_ },
	{ BPF_FUNC_strtoul, strtoul_ },
	{ BPF_FUNC_loop, loop_ },
	{ BPF_FUNC_skb_load_bytes, skb_load_bytes },
};

__attribute__((constructor(150))) static void helpers_base_init(void)
{
	for (size_t i = 0; i < BPFSHIM_ARRAY_SIZE(base); i++)
		if (!bpf_helpers[base[i].id])
			bpf_helpers[base[i].id] = base[i].fn;
}

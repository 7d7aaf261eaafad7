/* SPDX-License-Identifier: MIT */
/*
 * Memory helpers: probe_read*, probe_write_user, strncmp, strtol, strtoul.
 *
 * Every address a program hands in is read or written fault-safely
 * (bpf_rt_copy_nofault: a bad address is -EFAULT, never a crash), as the
 * kernel's copy_{from,to}_user_nofault. There is no kernel memory here: what
 * a program calls kernel memory (its stack, map values, its context) is
 * memory of this process, so the _kernel variants read this process's memory
 * as the _user ones do (a program reading its own stack through
 * bpf_probe_read_kernel gets what it gets on the kernel). So do the task
 * structures bpf_get_current_task() points to (current_task.c): memory of
 * this process laid out as the kernel's; reads of the parts that can change
 * refresh them first (bpf_rt_task_watch). Kernel addresses are not mapped
 * here: -EFAULT, as for a bad address on the kernel.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "helpers.h"

#define PTR(r) ((void *)(uintptr_t)(r))

/* bpf_probe_read_user{,_str}(dst, size, unsafe_ptr): the task structures
 * refreshed first (see above), dst zeroed on error. */
static u64 probe_read(u64 dst, u64 size, u64 src, int str)
{
	void *d = PTR(dst);
	const void *s = PTR(src);
	uint32_t n = (uint32_t)size;

	bpf_rt_task_watch(s, n);
	long r = str ? bpf_rt_strncpy_nofault(d, s, n) : bpf_rt_copy_nofault(d, s, n);

	if (r < 0)
		memset(d, 0, n);
	return (u64)(int64_t)r;
}

/* The _kernel variant reads the same memory here (see above), and so does
 * the compat bpf_probe_read (user memory below TASK_SIZE, kernel above on
 * x86): one function under the three names. */
u64 bpf_probe_read_user(u64 dst, u64 size, u64 src, u64 r4, u64 r5)
{
	return probe_read(dst, size, src, 0);
}
u64 bpf_probe_read_kernel(u64, u64, u64, u64, u64) __attribute__((alias("bpf_probe_read_user")));
u64 bpf_probe_read(u64, u64, u64, u64, u64) __attribute__((alias("bpf_probe_read_user")));

/* The _str ones: the length copied including the NUL; a longer string is
 * cut at size - 1 and NUL-terminated; the rest of dst is left as it was.
 * size 0 gives 0. The _kernel and compat variants too, as above. */
u64 bpf_probe_read_user_str(u64 dst, u64 size, u64 src, u64 r4, u64 r5)
{
	return probe_read(dst, size, src, 1);
}
u64 bpf_probe_read_kernel_str(u64, u64, u64, u64, u64) __attribute__((alias("bpf_probe_read_user_str")));
u64 bpf_probe_read_str(u64, u64, u64, u64, u64) __attribute__((alias("bpf_probe_read_user_str")));

/* bpf_probe_write_user(dst, src, len): copy_to_user_nofault */
u64 bpf_probe_write_user(u64 dst, u64 src, u64 size, u64 r4, u64 r5)
{
	return (u64)(int64_t)bpf_rt_copy_nofault(PTR(dst), PTR(src), (uint32_t)size);
}

/* bpf_strncmp(s1, s1_sz, s2): the kernel's strncmp, which gives -1/0/1. */
u64 bpf_strncmp(u64 s1, u64 s1_sz, u64 s2, u64 r4, u64 r5)
{
	const unsigned char *a = PTR(s1), *b = PTR(s2);

	for (uint32_t i = 0; i < (uint32_t)s1_sz; i++) {
		if (a[i] != b[i])
			return a[i] < b[i] ? (u64)-1 : 1;
		if (!a[i])
			break;
	}
	return 0;
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

u64 bpf_strtol(u64 buf, u64 buf_len, u64 flags, u64 res, u64 a5)
{
	unsigned long long v;
	int neg, e;
	long long out;

	*(long *)PTR(res) = 0;
	e = parse_strtoull((const char *)PTR(buf), buf_len, flags, &v, &neg);
	if (e < 0)
		return (u64)(int64_t)e;
	if (neg) {
		if ((long long)(0 - v) > 0)
			return bpf_rt_err(ERANGE);
		out = (long long)(0 - v);
	} else {
		if ((long long)v < 0)
			return bpf_rt_err(ERANGE);
		out = (long long)v;
	}
	*(long *)PTR(res) = out;
	return (u64)e;
}

u64 bpf_strtoul(u64 buf, u64 buf_len, u64 flags, u64 res, u64 a5)
{
	unsigned long long v;
	int neg, e;

	*(unsigned long *)PTR(res) = 0;
	e = parse_strtoull((const char *)PTR(buf), buf_len, flags, &v, &neg);
	if (e < 0)
		return (u64)(int64_t)e;
	if (neg)
		return bpf_rt_err(EINVAL);
	*(unsigned long *)PTR(res) = v;
	return (u64)e;
}

/* SPDX-License-Identifier: MIT */
/*
 * The printf helpers: bpf_snprintf, bpf_trace_printk, bpf_trace_vprintk.
 *
 * One formatter with the kernel's rules (kernel/bpf/helpers.c
 * bpf_bprintf_prepare: the conversions it allows, at most
 * MAX_BPRINTF_VARARGS arguments, strings and IP addresses copied
 * fault-safely into a MAX_BPRINTF_BUF scratch; lib/vsprintf.c bstr_printf
 * for the output).
 *
 * The trace helpers write the line the kernel's trace_pipe shows into a
 * per-user ring in shared memory, $RUNTIME_DIR/trace_pipe (agent/trace_ring.h);
 * `bpfshim trace-pipe` reads it.
 */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include "helpers.h"
#include "trace_ring.h"

#define PTR(r) ((void *)(uintptr_t)(r))

#define MAX_BPRINTF_VARARGS 12
#define MAX_BPRINTF_BUF 512
#define FMT_MAX 65536

struct out {
	char *buf;
	size_t size;
	size_t len;   /* what would have been written */
};

static void put(struct out *o, char c)
{
	if (o->len + 1 < o->size)
		o->buf[o->len] = c;
	o->len++;
}

static void pad(struct out *o, char c, long n)
{
	while (n-- > 0)
		put(o, c);
}

enum { F_LEFT = 1, F_PLUS = 2, F_SPACE = 4, F_ZERO = 8 };

/* The kernel's string(): width, '-' */
static void put_str(struct out *o, const char *s, size_t n, int flags, long width)
{
	if (!(flags & F_LEFT))
		pad(o, ' ', width - (long)n);
	for (size_t i = 0; i < n; i++)
		put(o, s[i]);
	if (flags & F_LEFT)
		pad(o, ' ', width - (long)n);
}

/* The kernel's number() for d/i/u/x/X without precision. */
static void put_num(struct out *o, uint64_t v, int is_signed, int base, int upper, int flags, long width)
{
	char digits[24], sign = 0;
	int n = 0;
	const char *dig = upper ? "0123456789ABCDEF" : "0123456789abcdef";

	if (is_signed) {
		if ((int64_t)v < 0) {
			sign = '-';
			v = 0 - v;
		} else if (flags & F_PLUS) {
			sign = '+';
		} else if (flags & F_SPACE) {
			sign = ' ';
		}
	}
	do {
		digits[n++] = dig[v % (unsigned)base];
		v /= (unsigned)base;
	} while (v);
	width -= n + (sign != 0);
	if (!(flags & (F_LEFT | F_ZERO)))
		pad(o, ' ', width);
	if (sign)
		put(o, sign);
	if ((flags & F_ZERO) && !(flags & F_LEFT))
		pad(o, '0', width);
	while (n)
		put(o, digits[--n]);
	if (flags & F_LEFT)
		pad(o, ' ', width);
}

/* A stable per-process id for %p, as the kernel's hashed pointers. */
static uint64_t ptr_key;

static uint64_t ptr_hash(uint64_t p)
{
	if (!ptr_key) {
		uint64_t k = 0;
		if (getrandom(&k, sizeof(k), GRND_NONBLOCK) != sizeof(k))
			k = (uint64_t)(uintptr_t)&k ^ 0x9e3779b97f4a7c15ull;
		__atomic_store_n(&ptr_key, k | 1, __ATOMIC_RELAXED);
	}
	p ^= ptr_key;
	p *= 0xff51afd7ed558ccdull;
	p ^= p >> 33;
	p *= 0xc4ceb9fe1a85ec53ull;
	p ^= p >> 33;
	return p & 0xffffffffu;
}

struct spec {
	int flags;
	long width;
	char conv;        /* d i u x X c s p */
	char pext[3];     /* after %p: "", "x", "K", "s", "S", "B", "I4", "i4", "I6", "i6" */
	int size;         /* 4 or 8 for integers */
	const char *str;  /* %s / %pks / %pus: the copy in tmp */
	size_t str_len;
	unsigned char ip[16];
	uint64_t arg;
};

static int is_punct_or_end(char c)
{
	return c == 0 || isspace((unsigned char)c) || ispunct((unsigned char)c);
}

/* Parses and checks fmt as bpf_bprintf_prepare(); fills specs, copying
 * strings and addresses into tmp. The number of specs, or -errno. */
static int prepare(const char *fmt, size_t fmt_len, const uint64_t *args, int nargs, struct spec *sp,
		   char *tmp)
{
	size_t tmp_left = MAX_BPRINTF_BUF;
	int n = 0;

	for (size_t i = 0; i < fmt_len; i++) {
		unsigned char c = (unsigned char)fmt[i];
		if ((!isprint(c) && !isspace(c)) || !isascii(c))
			return -EINVAL;
		if (c != '%')
			continue;
		if (fmt[i + 1] == '%') {
			i++;
			continue;
		}
		if (n >= nargs)
			return -EINVAL;
		struct spec *s = &sp[n];
		memset(s, 0, sizeof(*s));
		s->width = -1;
		s->arg = args[n];
		i++;
		for (;; i++) {
			if (fmt[i] == '0') s->flags |= F_ZERO;
			else if (fmt[i] == '+') s->flags |= F_PLUS;
			else if (fmt[i] == '-') s->flags |= F_LEFT;
			else if (fmt[i] == ' ') s->flags |= F_SPACE;
			else break;
		}
		if (fmt[i] >= '1' && fmt[i] <= '9') {
			s->width = 0;
			while (fmt[i] >= '0' && fmt[i] <= '9') {
				if (s->width < (1 << 23))
					s->width = s->width * 10 + (fmt[i] - '0');
				i++;
			}
		}
		char ptype = 0;
		if (fmt[i] == 'p') {
			s->conv = 'p';
			if ((fmt[i + 1] == 'k' || fmt[i + 1] == 'u') && fmt[i + 2] == 's') {
				ptype = fmt[i + 1];
				i += 2;
				goto fmt_str;
			}
			if (is_punct_or_end(fmt[i + 1]) || fmt[i + 1] == 'K' || fmt[i + 1] == 'x' ||
			    fmt[i + 1] == 's' || fmt[i + 1] == 'S') {
				if (!is_punct_or_end(fmt[i + 1])) {
					s->pext[0] = fmt[i + 1];
					i++;
				}
				n++;
				continue;
			}
			if (fmt[i + 1] == 'B') {
				s->pext[0] = 'B';
				i++;
				n++;
				continue;
			}
			if ((fmt[i + 1] != 'i' && fmt[i + 1] != 'I') || (fmt[i + 2] != '4' && fmt[i + 2] != '6'))
				return -EINVAL;
			s->pext[0] = fmt[i + 1];
			s->pext[1] = fmt[i + 2];
			i += 2;
			size_t iplen = fmt[i] == '4' ? 4 : 16;
			if (tmp_left < iplen)
				return -ENOSPC;
			if (bpf_rt_copy_nofault(s->ip, PTR(s->arg), iplen))
				memset(s->ip, 0, iplen);
			tmp_left -= iplen;
			n++;
			continue;
		} else if (fmt[i] == 's') {
			s->conv = 's';
			ptype = 's';
fmt_str:
			s->conv = 's';
			if (!is_punct_or_end(fmt[i + 1]))
				return -EINVAL;
			if (!tmp_left)
				return -ENOSPC;
			{
				char *dst = tmp + (MAX_BPRINTF_BUF - tmp_left);
				long k = bpf_rt_strncpy_nofault(dst, PTR(s->arg), tmp_left);
				if (k < 0) {   /* the string is taken as empty */
					dst[0] = 0;
					k = 1;
				}
				s->str = dst;
				s->str_len = strlen(dst);
				tmp_left -= (size_t)k;
			}
			(void)ptype;
			n++;
			continue;
		} else if (fmt[i] == 'c') {
			s->conv = 'c';
			if (!tmp_left)
				return -ENOSPC;
			tmp_left--;
			n++;
			continue;
		}
		s->size = 4;
		if (fmt[i] == 'l') {
			s->size = 8;
			i++;
		}
		if (fmt[i] == 'l')
			i++;
		if (fmt[i] != 'i' && fmt[i] != 'd' && fmt[i] != 'u' && fmt[i] != 'x' && fmt[i] != 'X')
			return -EINVAL;
		s->conv = fmt[i];
		n++;
	}
	return n;
}

/* bpf_bprintf_prepare formats an IP address into its scratch and
 * bstr_printf copies that text only while the output has room, width
 * ignored: past the end it adds nothing, not even to the length. (It then
 * also fails to step over the text, so later arguments are read from it;
 * that is not reproduced.) */
static void put_ip(struct out *o, const struct spec *s)
{
	char b[48];
	int n = 0;
	const unsigned char *ip = s->ip;

	if (o->len >= o->size)
		return;
	if (s->pext[1] == '4') {
		for (int k = 0; k < 4; k++)
			n += sprintf(b + n, s->pext[0] == 'i' ? "%s%03u" : "%s%u", k ? "." : "", ip[k]);
	} else {
		for (int k = 0; k < 16; k++)
			n += sprintf(b + n, "%s%02x", s->pext[0] == 'I' && k && !(k & 1) ? ":" : "", ip[k]);
	}
	for (int k = 0; k < n; k++)
		put(o, b[k]);
}

static void put_ptr(struct out *o, const struct spec *s)
{
	char b[24];
	int n;
	char e = s->pext[0];
	long width = s->width;

	if (e == 'I' || e == 'i') {
		put_ip(o, s);
		return;
	}
	if (!s->arg && e != 'K' && e != 'x') {
		put_str(o, "(null)", 6, s->flags, width < 0 ? 16 : width);
		return;
	}
	if (e == 's' || e == 'S' || e == 'B') {   /* no symbols here: the address */
		n = sprintf(b, "0x%llx", (unsigned long long)s->arg);
		put_str(o, b, (size_t)n, s->flags, width);
		return;
	}
	/* %px raw, %p / %pK hashed; zero-padded to the pointer's width */
	put_num(o, e == 'x' ? s->arg : ptr_hash(s->arg), 0, 16, 0,
		width < 0 ? (s->flags | F_ZERO) : s->flags, width < 0 ? 16 : width);
}

/* bstr_printf() of fmt (fmt_len bytes, checked by prepare) into buf: the
 * length it would have had (without the NUL); buf NUL-terminated when size. */
static size_t format(char *buf, size_t size, const char *fmt, size_t fmt_len, const struct spec *sp)
{
	struct out o = { buf, size, 0 };
	int k = 0;

	for (size_t i = 0; i < fmt_len; i++) {
		if (fmt[i] != '%') {
			put(&o, fmt[i]);
			continue;
		}
		if (fmt[i + 1] == '%') {
			put(&o, '%');
			i++;
			continue;
		}
		const struct spec *s = &sp[k++];
		/* skip the spec's text again */
		i++;
		while (fmt[i] == '0' || fmt[i] == '+' || fmt[i] == '-' || fmt[i] == ' ')
			i++;
		while (fmt[i] >= '0' && fmt[i] <= '9')
			i++;
		switch (s->conv) {
		case 'p':
			i += (fmt[i + 1] == 'k' || fmt[i + 1] == 'u') && fmt[i + 2] == 's' ? 2 : strlen(s->pext);
			put_ptr(&o, s);
			break;
		case 's':
			if (fmt[i] == 'p')
				i += 2;
			put_str(&o, s->str, s->str_len, s->flags, s->width);
			break;
		case 'c': {
			char ch = (char)s->arg;
			put_str(&o, &ch, 1, s->flags, s->width);
			break;
		}
		default: {
			int is_signed = s->conv == 'd' || s->conv == 'i';
			uint64_t v = s->arg;
			while (fmt[i] == 'l')
				i++;
			if (s->size == 4)
				v = is_signed ? (uint64_t)(int64_t)(int32_t)v : (uint32_t)v;
			put_num(&o, v, is_signed, s->conv == 'x' || s->conv == 'X' ? 16 : 10, s->conv == 'X',
				s->flags, s->width);
			break;
		}
		}
	}
	if (o.size)
		o.buf[o.len < o.size ? o.len : o.size - 1] = 0;
	return o.len;
}

/* bpf_bprintf_prepare + bstr_printf: fmt must end in a NUL within fmt_size.
 * The formatted length (without the NUL), or -errno. */
static long bprintf(char *buf, size_t size, const char *fmt, size_t fmt_size, const uint64_t *args, int nargs)
{
	struct spec sp[MAX_BPRINTF_VARARGS];
	char tmp[MAX_BPRINTF_BUF];
	size_t fmt_len;
	int n;

	if (!fmt)
		return -EINVAL;
	fmt_len = strnlen(fmt, fmt_size);
	if (fmt_len == fmt_size)
		return -EINVAL;
	n = prepare(fmt, fmt_len, args, nargs, sp, tmp);
	if (n < 0)
		return n;
	return (long)format(buf, size, fmt, fmt_len, sp);
}

/* long bpf_snprintf(char *str, u32 str_size, const char *fmt, u64 *data, u32 data_len):
 * the length of the whole output including the NUL. */
u64 bpf_snprintf(u64 str, u64 str_size, u64 fmt, u64 data, u64 data_len)
{
	long n;

	data_len = (uint32_t)data_len;
	if ((data_len & 7) || data_len > MAX_BPRINTF_VARARGS * 8 || (data_len && !data))
		return bpf_rt_err(EINVAL);
	n = bprintf(PTR(str), (uint32_t)str_size, PTR(fmt), FMT_MAX, PTR(data), (int)(data_len / 8));
	return n < 0 ? (u64)n : (u64)n + 1;
}

/* The message goes out as the bpf_trace_printk event: cut at
 * MAX_BPRINTF_BUF - 1, the return value is the uncut length. */
static u64 trace_out(const char *fmt, uint32_t fmt_size, const uint64_t *args, int nargs)
{
	char msg[MAX_BPRINTF_BUF];
	long n = bprintf(msg, sizeof(msg), fmt, fmt_size, args, nargs);

	if (n < 0)
		return (u64)n;
	trace_ring_emit(msg);
	return (u64)n;
}

/* long bpf_trace_printk(const char *fmt, u32 fmt_size, ...): at most 3 args. */
u64 bpf_trace_printk(u64 fmt, u64 fmt_size, u64 a1, u64 a2, u64 a3)
{
	const uint64_t args[3] = { a1, a2, a3 };

	return trace_out(PTR(fmt), (uint32_t)fmt_size, args, 3);
}

/* long bpf_trace_vprintk(const char *fmt, u32 fmt_size, const void *data, u32 data_len) */
u64 bpf_trace_vprintk(u64 fmt, u64 fmt_size, u64 data, u64 data_len, u64 r5)
{
	data_len = (uint32_t)data_len;
	if ((data_len & 7) || data_len > MAX_BPRINTF_VARARGS * 8 || (data_len && !data))
		return bpf_rt_err(EINVAL);
	return trace_out(PTR(fmt), (uint32_t)fmt_size, PTR(data), (int)(data_len / 8));
}

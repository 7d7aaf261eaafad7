/* SPDX-License-Identifier: MIT */
/* The kernel's jhash (include/linux/jhash.h), so hashes that user space can
 * observe (bloom filter false positives, stack ids) come out the same. */
#ifndef BPFSHIM_JHASH_H
#define BPFSHIM_JHASH_H

#include <stdint.h>
#include <string.h>

#define JHASH_INITVAL 0xdeadbeefu

static inline uint32_t jh_rol32(uint32_t w, unsigned s) { return (w << s) | (w >> ((-s) & 31)); }

#define __jhash_mix(a, b, c)                                      \
	do {                                                      \
		a -= c; a ^= jh_rol32(c, 4); c += b;              \
		b -= a; b ^= jh_rol32(a, 6); a += c;              \
		c -= b; c ^= jh_rol32(b, 8); b += a;              \
		a -= c; a ^= jh_rol32(c, 16); c += b;             \
		b -= a; b ^= jh_rol32(a, 19); a += c;             \
		c -= b; c ^= jh_rol32(b, 4); b += a;              \
	} while (0)

#define __jhash_final(a, b, c)                                    \
	do {                                                      \
		c ^= b; c -= jh_rol32(b, 14);                     \
		a ^= c; a -= jh_rol32(c, 11);                     \
		b ^= a; b -= jh_rol32(a, 25);                     \
		c ^= b; c -= jh_rol32(b, 16);                     \
		a ^= c; a -= jh_rol32(c, 4);                      \
		b ^= a; b -= jh_rol32(a, 14);                     \
		c ^= b; c -= jh_rol32(b, 24);                     \
	} while (0)

static inline uint32_t jh_get32(const uint8_t *p)
{
	uint32_t v;
	memcpy(&v, p, 4);
	return v;
}

static inline uint32_t jhash(const void *key, uint32_t length, uint32_t initval)
{
	const uint8_t *k = key;
	uint32_t a, b, c;

	a = b = c = JHASH_INITVAL + length + initval;
	while (length > 12) {
		a += jh_get32(k);
		b += jh_get32(k + 4);
		c += jh_get32(k + 8);
		__jhash_mix(a, b, c);
		length -= 12;
		k += 12;
	}
	switch (length) {
	case 12: c += (uint32_t)k[11] << 24; /* fallthrough */
	case 11: c += (uint32_t)k[10] << 16; /* fallthrough */
	case 10: c += (uint32_t)k[9] << 8; /* fallthrough */
	case 9: c += k[8]; /* fallthrough */
	case 8: b += (uint32_t)k[7] << 24; /* fallthrough */
	case 7: b += (uint32_t)k[6] << 16; /* fallthrough */
	case 6: b += (uint32_t)k[5] << 8; /* fallthrough */
	case 5: b += k[4]; /* fallthrough */
	case 4: a += (uint32_t)k[3] << 24; /* fallthrough */
	case 3: a += (uint32_t)k[2] << 16; /* fallthrough */
	case 2: a += (uint32_t)k[1] << 8; /* fallthrough */
	case 1: a += k[0];
		__jhash_final(a, b, c);
		break;
	case 0:
		break;
	}
	return c;
}

/* length in u32 words */
static inline uint32_t jhash2(const uint32_t *k, uint32_t length, uint32_t initval)
{
	uint32_t a, b, c;

	a = b = c = JHASH_INITVAL + (length << 2) + initval;
	while (length > 3) {
		a += k[0];
		b += k[1];
		c += k[2];
		__jhash_mix(a, b, c);
		length -= 3;
		k += 3;
	}
	switch (length) {
	case 3: c += k[2]; /* fallthrough */
	case 2: b += k[1]; /* fallthrough */
	case 1: a += k[0];
		__jhash_final(a, b, c);
		break;
	case 0:
		break;
	}
	return c;
}

#endif

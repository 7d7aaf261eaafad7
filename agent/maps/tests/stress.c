/* SPDX-License-Identifier: MIT */
/*
 * Many processes on one shared map segment (a memfd each maps itself):
 *  - 8 processes x 200k atomic increments through lookup_ptr on a hash
 *    while others insert/delete other keys: nothing lost;
 *  - increments under the value's bpf_spin_lock (what bpf_spin_lock() does)
 *    plus BPF_F_LOCK updates/lookups: no lost increment, no torn value;
 *  - a writer killed with SIGKILL mid-run (and one that dies holding a
 *    bucket lock and a value lock) does not block the others;
 *  - a ringbuf with 4 producer processes (reserve/submit/discard) and one
 *    consumer, with the data area mapped twice and once: nothing lost;
 *  - single-process ns/op for a 1024-entry hash, 4-byte key, 8-byte value.
 * Unprivileged is fine (no kernel maps). Run: agent/maps/tests/run.sh stress
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <sched.h>
#include "map.h"

#define NPROC 8
#define ITERS 200000
#define HOT 64

static int failures;
#define CHECK(c, ...) do { if (!(c)) { failures++; fprintf(stderr, "FAIL: " __VA_ARGS__); fputc('\n', stderr); } } while (0)

struct lval { uint32_t lock; uint32_t pad; uint64_t a, b, cnt; };

static int make_map(struct shm_map_attr a, int *fdp)
{
	uint64_t size;
	int fd;
	void *base;

	a.nr_cpus = shm_nr_possible_cpus();
	if (shm_map_check_attr(&a))
		return -1;
	size = shm_map_seg_size(&a);
	fd = memfd_create("bpf-map", 0);
	if (fd < 0 || ftruncate(fd, (off_t)size))
		return -1;
	base = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (base == MAP_FAILED || shm_map_format(base, size, &a, 1, "stress"))
		return -1;
	munmap(base, size);
	*fdp = fd;
	return 0;
}

/* What every process does: its own mapping, shm_map_open. */
static void open_map(int fd, struct shm_map *m)
{
	uint64_t mapped;
	struct stat;
	off_t size = lseek(fd, 0, SEEK_END);
	void *base = shm_map_mmap(fd, (uint64_t)size, &mapped);
	if (!base || shm_map_open(m, base, mapped, fd)) {
		perror("open_map");
		exit(2);
	}
}

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void worker(int hfd, int lfd, int id)
{
	struct shm_map h, l;
	open_map(hfd, &h);
	open_map(lfd, &l);
	uint32_t seed = 12345 + id;
	for (int i = 0; i < ITERS; i++) {
		uint32_t k = (uint32_t)(i + id) % HOT;
		uint64_t *v = h.ops->lookup_ptr(&h, &k);
		if (!v)
			_exit(3);
		__sync_fetch_and_add(v, 1);
		/* churn other keys so chains change under the lock-free readers */
		seed = seed * 1103515245 + 12345;
		uint32_t ck = HOT + (seed >> 8) % 900;
		uint64_t one = 1;
		if (seed & 0x10000)
			h.ops->sys_update(&h, &ck, &one, BPF_ANY);
		else
			h.ops->sys_delete(&h, &ck);
		/* spin-locked value: increment under its lock, and F_LOCK copies */
		uint32_t lk = k % 4;
		struct lval *lv = l.ops->lookup_ptr(&l, &lk);
		shm_lock(&lv->lock);
		lv->cnt++;
		shm_unlock(&lv->lock);
		if (i % 16 == 0) {
			struct lval nv, out;
			shm_lock(&lv->lock); /* keep cnt: read it under the lock first */
			nv = *lv;
			shm_unlock(&lv->lock);
			(void)nv;
			memset(&out, 0, sizeof(out));
			l.ops->sys_lookup(&l, &lk, &out, BPF_F_LOCK);
			if (out.a != out.b)
				_exit(4); /* torn read */
		}
	}
	_exit(0);
}

/* Updates a/b with BPF_F_LOCK forever; the test kills it. cnt is carried
 * over under the lock by reading it inside the same critical section the
 * kernel would not give us, so this writer only touches keys >= 4. */
static void flock_writer(int lfd)
{
	struct shm_map l;
	open_map(lfd, &l);
	for (uint64_t x = 1;; x++) {
		uint32_t k = 4 + (uint32_t)(x % 4);
		struct lval v = { .a = x, .b = x, .cnt = 0 };
		l.ops->sys_update(&l, &k, &v, BPF_F_LOCK);
		struct lval out;
		l.ops->sys_lookup(&l, &k, &out, BPF_F_LOCK);
		if (out.a != out.b)
			_exit(4);
	}
}

/* Dies holding a hash bucket lock and a value lock. */
static void die_holding_locks(int hfd, int lfd)
{
	struct shm_map h, l;
	open_map(hfd, &h);
	open_map(lfd, &l);
	/* the bucket lock is the first word of the bucket of key 0 */
	for (uint32_t b = 0; b < h.hdr->type_state[3]; b++)
		shm_lock((shm_lock_t *)((char *)shm_map_data(&h) + 8ull * b));
	uint32_t k = 0;
	struct lval *lv = l.ops->lookup_ptr(&l, &k);
	shm_lock(&lv->lock);
	kill(getpid(), SIGKILL);
}

static void bench(void)
{
	struct shm_map_attr a = { .map_type = BPF_MAP_TYPE_HASH, .key_size = 4, .value_size = 8, .max_entries = 1024, .spin_lock_off = -1 };
	struct shm_map m;
	int fd;
	if (make_map(a, &fd))
		exit(2);
	open_map(fd, &m);
	for (uint32_t k = 0; k < 1024; k++) {
		uint64_t v = k;
		m.ops->sys_update(&m, &k, &v, BPF_ANY);
	}
	const int N = 4000000;
	volatile uint64_t sink = 0;
	double t0 = now();
	for (int i = 0; i < N; i++) {
		uint32_t k = (uint32_t)(i * 7) & 1023;
		uint64_t *v = m.ops->lookup_ptr(&m, &k);
		sink += *v;
	}
	double t1 = now();
	for (int i = 0; i < N; i++) {
		uint32_t k = (uint32_t)(i * 7) & 1023;
		uint64_t v = (uint64_t)i;
		m.ops->prog_update(&m, &k, &v, BPF_ANY);
	}
	double t2 = now();
	for (int i = 0; i < N; i++) {
		uint32_t k = (uint32_t)(i * 7) & 1023;
		uint32_t k2 = k + 2048;
		uint64_t v = 1;
		m.ops->prog_update(&m, &k2, &v, BPF_NOEXIST);
		m.ops->prog_delete(&m, &k2);
		(void)k;
	}
	double t3 = now();
	printf("hash 1024 x (4B key, 8B value): lookup %.1f ns, update(existing) %.1f ns, insert+delete %.1f ns\n",
	       (t1 - t0) * 1e9 / N, (t2 - t1) * 1e9 / N, (t3 - t2) * 1e9 / N);
	close(fd);
}

/* ---- ringbuf: 4 producer processes, one consumer, doubled mapping ---- */
struct rbctx { uint64_t seen[4]; uint64_t bytes; int bad; };

static int rb_cb(void *ctx, void *data, uint32_t len)
{
	struct rbctx *c = ctx;
	uint32_t p;
	uint64_t seq;
	memcpy(&p, data, 4);
	memcpy(&seq, (char *)data + 8, 8);
	if (p >= 4 || seq != c->seen[p] || len != 16 + seq % 200)
		c->bad++;
	else
		for (uint32_t i = 16; i < len; i++)
			if (((uint8_t *)data)[i] != (uint8_t)(seq + i))
				c->bad++;
	if (p < 4)
		c->seen[p] = seq + 1;
	c->bytes += len;
	return 0;
}

static void ringbuf_test(int doubled)
{
	struct shm_map_attr a = { .map_type = BPF_MAP_TYPE_RINGBUF, .max_entries = 16384, .spin_lock_off = -1 };
	int fd, st;
	struct shm_map m;
	const uint64_t N = 20000;
	if (make_map(a, &fd)) {
		CHECK(0, "ringbuf create");
		return;
	}
	if (doubled) {
		open_map(fd, &m);
	} else {
		off_t size = lseek(fd, 0, SEEK_END);
		void *base = mmap(NULL, (size_t)size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
		shm_map_open(&m, base, (uint64_t)size, fd);
	}
	pid_t pids[4];
	for (uint32_t p = 0; p < 4; p++) {
		if ((pids[p] = fork()))
			continue;
		struct shm_map pm;
		if (doubled) {
			open_map(fd, &pm);
		} else {
			off_t size = lseek(fd, 0, SEEK_END);
			shm_map_open(&pm, mmap(NULL, (size_t)size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0), (uint64_t)size, fd);
		}
		int discarded = 0;
		for (uint64_t seq = 0; seq < N;) {
			uint32_t len = 16 + (uint32_t)(seq % 200);
			uint8_t *r = shm_ringbuf_reserve(&pm, len, 0);
			if (!r) {
				sched_yield();
				continue;
			}
			if (shm_ringbuf_of(r) != pm.hdr)
				_exit(5);
			memcpy(r, &p, 4);
			memcpy(r + 8, &seq, 8);
			for (uint32_t i = 16; i < len; i++)
				r[i] = (uint8_t)(seq + i);
			if (seq % 7 == 3 && !discarded) {
				/* a discarded record, then the same seq again */
				shm_ringbuf_discard(r, 0);
				discarded = 1;
				continue;
			}
			shm_ringbuf_submit(r, 0);
			seq++;
			discarded = 0;
		}
		_exit(0);
	}
	struct rbctx c = { 0 };
	int alive = 4;
	while (alive) {
		shm_ringbuf_consume(&m, rb_cb, &c);
		for (int p = 0; p < 4; p++)
			if (pids[p] && waitpid(pids[p], &st, WNOHANG) == pids[p]) {
				CHECK(WIFEXITED(st) && !WEXITSTATUS(st), "producer %d status %#x", p, st);
				pids[p] = 0;
				alive--;
			}
	}
	shm_ringbuf_consume(&m, rb_cb, &c);
	for (int p = 0; p < 4; p++)
		CHECK(c.seen[p] == N, "ringbuf producer %d: %lu of %lu records", p, (unsigned long)c.seen[p], (unsigned long)N);
	CHECK(!c.bad, "ringbuf: %d bad records", c.bad);
	CHECK(shm_ringbuf_query(&m, BPF_RB_AVAIL_DATA) == 0, "ringbuf not drained");
	printf("ringbuf (%s mapping): 4 producers x %lu records, %lu bytes, cons_pos %lu: %s\n",
	       doubled ? "double" : "single", (unsigned long)N, (unsigned long)c.bytes,
	       (unsigned long)shm_ringbuf_query(&m, BPF_RB_CONS_POS), c.bad ? "FAIL" : "ok");
	close(fd);
}

int main(void)
{
	ringbuf_test(1);
	ringbuf_test(0);
	struct shm_map_attr ha = { .map_type = BPF_MAP_TYPE_HASH, .key_size = 4, .value_size = 8, .max_entries = 1024, .spin_lock_off = -1 };
	struct shm_map_attr la = { .map_type = BPF_MAP_TYPE_ARRAY, .key_size = 4, .value_size = sizeof(struct lval), .max_entries = 8, .spin_lock_off = 0 };
	int hfd, lfd, st;
	struct shm_map h, l;

	bench();
	if (make_map(ha, &hfd) || make_map(la, &lfd)) {
		fprintf(stderr, "setup failed\n");
		return 2;
	}
	open_map(hfd, &h);
	open_map(lfd, &l);
	for (uint32_t k = 0; k < HOT; k++) {
		uint64_t z = 0;
		h.ops->sys_update(&h, &k, &z, BPF_NOEXIST);
	}

	/* a process that dies holding every bucket lock and a value lock */
	pid_t dead = fork();
	if (!dead)
		die_holding_locks(hfd, lfd);
	waitpid(dead, &st, 0);

	pid_t pids[NPROC], fw;
	double t0 = now();
	for (int i = 0; i < NPROC; i++)
		if (!(pids[i] = fork()))
			worker(hfd, lfd, i);
	if (!(fw = fork()))
		flock_writer(lfd);
	/* SIGKILL F_LOCK writers at random points, restart them */
	for (int r = 0; r < 20; r++) {
		usleep(20000 + (unsigned)(rand() % 20000));
		kill(fw, SIGKILL);
		waitpid(fw, &st, 0);
		CHECK(WIFSIGNALED(st), "flock writer exited early (%d): torn F_LOCK value", WEXITSTATUS(st));
		if (!(fw = fork()))
			flock_writer(lfd);
	}
	for (int i = 0; i < NPROC; i++) {
		waitpid(pids[i], &st, 0);
		CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "worker %d status %#x", i, st);
	}
	double t1 = now();
	kill(fw, SIGKILL);
	waitpid(fw, &st, 0);

	uint64_t sum = 0, lsum = 0;
	for (uint32_t k = 0; k < HOT; k++) {
		uint64_t v = 0;
		CHECK(!h.ops->sys_lookup(&h, &k, &v, 0), "hot key %u missing", k);
		sum += v;
	}
	for (uint32_t k = 0; k < 4; k++) {
		struct lval v;
		CHECK(!l.ops->sys_lookup(&l, &k, &v, BPF_F_LOCK), "lookup");
		lsum += v.cnt;
	}
	/* the free list and chains are consistent: count matches a walk */
	uint64_t n = 0;
	uint32_t key, next;
	int err = h.ops->get_next_key(&h, NULL, &next);
	while (!err) {
		n++;
		key = next;
		err = h.ops->get_next_key(&h, &key, &next);
	}
	CHECK(n == shm_htab_count(&h), "walk %lu != count %lu", (unsigned long)n, (unsigned long)shm_htab_count(&h));
	CHECK(sum == (uint64_t)NPROC * ITERS, "atomic increments: %lu of %lu", (unsigned long)sum, (unsigned long)NPROC * ITERS);
	CHECK(lsum == (uint64_t)NPROC * ITERS, "spin-locked increments: %lu of %lu", (unsigned long)lsum, (unsigned long)NPROC * ITERS);
	printf("stress: %d procs x %d iterations in %.2f s (with a dead lock holder and 20 SIGKILLed F_LOCK writers): "
	       "atomic sum %lu, locked sum %lu, %lu elements: %s\n",
	       NPROC, ITERS, t1 - t0, (unsigned long)sum, (unsigned long)lsum, (unsigned long)n, failures ? "FAIL" : "ok");
	return failures != 0;
}

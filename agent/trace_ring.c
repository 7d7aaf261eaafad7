/* SPDX-License-Identifier: MIT */
/*
 * Writer side of the trace pipe (trace_ring.h): the line the kernel's
 * trace_pipe shows for a bpf_trace_printk event,
 *     "<comm>-<tid> [<cpu>] <flags> <secs>.<usecs>: bpf_trace_printk: <msg>"
 * in print_trace_fmt()'s widths. The ring is mapped on first use and stays
 * mapped (also in forked children, which share it).
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include "common.h"
#include "trace_ring.h"
#include "rawsys.h"
#include "rt.h"

#define DATA_OFF 64


static struct trace_ring_hdr *ring;

static void ring_map(void)
{
	char dir[4096], path[4200];
	const char *env;
	size_t len = DATA_OFF + TRACE_RING_SIZE;
	struct stat st;
	int fd;

	int err = rt_runtime_dir(dir, sizeof(dir));
	if (err == -ENOSYS && (env = getenv("BPFSHIM_RUNTIME_DIR")) && *env && strlen(env) < sizeof(dir))
		strcpy(dir, env);   /* the server: no loader, the directory it was started in */
	else if (err)
		return;
	/* raw syscalls: the first writer is a program run, maybe in a signal handler */
	if (bpf_rt_path_join(path, sizeof(path), dir, TRACE_RING_NAME))
		return;
	fd = (int)BPF_RT_SYS(SYS_openat, AT_FDCWD, path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0)
		return;
	/* a fresh file is sized once; ftruncate of an existing one to the same
	 * size changes nothing, so racing creators agree */
	if (BPF_RT_SYS(SYS_fstat, fd, &st) || (st.st_size != (off_t)len && BPF_RT_SYS(SYS_ftruncate, fd, len))) {
		BPF_RT_SYS(SYS_close, fd);
		return;
	}
	void *p = bpf_rt_mmap(len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	BPF_RT_SYS(SYS_close, fd);
	if (!p)
		return;
	struct trace_ring_hdr *h = p;
	uint32_t zero = 0;
	/* the first mapper formats it: size last, the reader waits for magic */
	if (__atomic_compare_exchange_n(&h->version, &zero, TRACE_RING_VERSION, 0, __ATOMIC_ACQ_REL,
					__ATOMIC_ACQUIRE)) {
		h->size = TRACE_RING_SIZE;
		__atomic_store_n(&h->magic, TRACE_RING_MAGIC, __ATOMIC_RELEASE);
	} else {
		for (int i = 0; i < 1000 && __atomic_load_n(&h->magic, __ATOMIC_ACQUIRE) != TRACE_RING_MAGIC; i++)
			sched_yield();
	}
	if (h->magic != TRACE_RING_MAGIC || h->version != TRACE_RING_VERSION || h->size != TRACE_RING_SIZE) {
		BPF_RT_SYS(SYS_munmap, p, len);
		return;
	}
	ring = h;
}

static int ring_state;

static void ring_once(void)
{
	bpf_rt_once(&ring_state, ring_map);
}

void trace_ring_emit(const char *msg)
{
	char line[700], comm[17] = { 0 };
	struct timespec ts;
	int cpu = sched_getcpu();
	int n;

	ring_once();
	if (!ring)
		return;
	prctl(PR_GET_NAME, comm, 0, 0, 0);
	clock_gettime(CLOCK_MONOTONIC, &ts);
	n = snprintf(line, sizeof(line), "%16s-%-7d [%03d] ..... %5llu.%06llu: bpf_trace_printk: %s", comm,
		     (int)syscall(SYS_gettid), cpu < 0 ? 0 : cpu, (unsigned long long)ts.tv_sec,
		     (unsigned long long)ts.tv_nsec / 1000, msg);
	if (n < 0)
		return;
	if ((size_t)n >= sizeof(line) - 1)
		n = sizeof(line) - 2;
	/* the event's output always ends in a newline of its own, also after a
	 * message that has one (trace_pipe then shows an empty line) */
	line[n++] = '\n';

	char *data = (char *)ring + DATA_OFF;
	uint32_t mask = ring->size - 1;
	shm_lock(&ring->lock);
	uint64_t head = ring->head;
	for (int i = 0; i < n; i++)
		data[(head + (uint64_t)i) & mask] = line[i];
	__atomic_store_n(&ring->head, head + (uint64_t)n, __ATOMIC_RELEASE);
	shm_unlock(&ring->lock);
}

size_t trace_ring_read(char *buf, size_t n)
{
	ring_once();
	if (!ring || !n)
		return 0;
	const char *data = (const char *)ring + DATA_OFF;
	uint64_t size = ring->size, mask = size - 1;
	uint64_t head = __atomic_load_n(&ring->head, __ATOMIC_ACQUIRE);
	uint64_t tail = __atomic_load_n(&ring->tail, __ATOMIC_RELAXED);
	int resync = 0;

	if (head - tail > size) {
		tail = head - size;
		resync = 1;
	}
	if (head - tail > n)
		head = tail + n;
	for (uint64_t p = tail; p < head; p++)
		buf[p - tail] = data[p & mask];
	/* writers may have gone round while we copied: drop what they overwrote */
	uint64_t now = __atomic_load_n(&ring->head, __ATOMIC_ACQUIRE);
	uint64_t skip = now > size && now - size > tail ? now - size - tail : 0;
	if (skip > head - tail)
		skip = head - tail;
	size_t len = (size_t)(head - tail - skip);
	memmove(buf, buf + skip, len);
	if (resync || skip) {
		/* from the next line on */
		char *nl = memchr(buf, '\n', len);
		size_t drop = nl ? (size_t)(nl - buf) + 1 : len;
		memmove(buf, buf + drop, len - drop);
		len -= drop;
	}
	__atomic_store_n(&ring->tail, head, __ATOMIC_RELEASE);
	return len;
}

// SPDX-License-Identifier: MIT
/*
 * The victim of compat_tests/test_override.py. Three functions whose
 * results say whether they ran (x * 2 + 1, x + 1) or were overridden (any
 * other value, OVERRIDE_RC in the tests), each with a different prologue:
 * ov_endbr (-O1 -fcf-protection: endbr64, then a mov), ov_push (built
 * with -DOV_PUSH at -O0: push %rbp; mov %rsp,%rbp) and ov_tiny (4 bytes of
 * assembly: too short for the 5-byte jump, an int3 site).
 *
 *   override_victim calls N M    N calls of each function, M openat() of
 *                                /dev/null with OPEN_FLAGS, M getppid()
 *   override_victim threads T S  T threads calling them for S seconds
 *   override_victim detach T 0   T threads calling them until SIGUSR1 (the
 *                                probes were detached), 0.3 s more, then
 *                                1 s counted apart ("after")
 *
 * Then it prints what it saw: per function its calls, the results that were the function's own ("real"),
 * the others ("overridden"), and how often its body ran.
 */
#ifdef OV_PUSH
long ov_push_body;
long ov_push(long x)
{
	__atomic_add_fetch(&ov_push_body, 1, __ATOMIC_RELAXED);
	return x * 2 + 1;
}
#else
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/syscall.h>

/* what the BPF programs look for: only these openat() calls are counted */
#define OPEN_FLAGS (O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK)
/* what a raw_syscalls:sys_enter program makes every 2nd getppid() return
 * (not made), and a sys_exit_getppid program the others */
#define GETPPID_RC 4242
#define GETPPID_EXIT_RC 4343

long ov_endbr_body;
extern long ov_push_body;
long ov_push(long x);
long ov_tiny(long x);

__attribute__((noinline)) long ov_endbr(long x)
{
	__atomic_add_fetch(&ov_endbr_body, 1, __ATOMIC_RELAXED);
	return x * 2 + 1;
}

__asm__(".text\n.globl ov_tiny\n.type ov_tiny, @function\n"
	"ov_tiny:\n lea 1(%rdi), %eax\n ret\n"
	".size ov_tiny, .-ov_tiny\n");

struct fn {
	const char *name;
	long (*f)(long);
	long (*real)(long);
};

static long real2(long x) { return x * 2 + 1; }
static long real1(long x) { return (int)(x + 1); }
static const struct fn fns[3] = {
	{ "ov_endbr", ov_endbr, real2 }, { "ov_push", ov_push, real2 }, { "ov_tiny", ov_tiny, real1 },
};

/* [phase][function][calls, real, overridden] */
struct counts { long c[2][3][3]; };
static volatile int phase, stop;

static void call(struct counts *k, int f, long x)
{
	long r = fns[f].f(x);
	long *c = k->c[phase][f];

	c[0]++;
	if (r == fns[f].real(x))
		c[1]++;
	else
		c[2]++;
}

static struct counts total;
static pthread_mutex_t total_lock = PTHREAD_MUTEX_INITIALIZER;

static void *thread_main(void *arg)
{
	struct counts k;
	long i = (long)arg * 1000003;

	memset(&k, 0, sizeof(k));
	while (!stop) {
		call(&k, (int)(i % 3), i);
		i++;
	}
	pthread_mutex_lock(&total_lock);
	for (size_t j = 0; j < sizeof(k.c) / sizeof(long); j++)
		((long *)total.c)[j] += ((long *)k.c)[j];
	pthread_mutex_unlock(&total_lock);
	return NULL;
}

static void print_phase(const char *title, int p, long *body)
{
	for (int f = 0; f < 3; f++) {
		long *c = total.c[p][f];
		printf("%s%s: calls %ld real %ld overridden %ld", title, fns[f].name, c[0], c[1], c[2]);
		if (body)
			printf(" body %ld", body[f]);
		printf("\n");
	}
}

static volatile sig_atomic_t detached;
static void on_usr1(int sig) { detached = 1; }

static void run_threads(int n, int secs, int until_detach)
{
	pthread_t th[64];

	if (n > 64)
		n = 64;
	for (long t = 0; t < n; t++)
		pthread_create(&th[t], NULL, thread_main, (void *)t);
	if (until_detach) {
		while (!detached)
			usleep(1000);
		usleep(300000);
		phase = 1;
		sleep(1);
	} else {
		sleep(secs);
	}
	stop = 1;
	for (int t = 0; t < n; t++)
		pthread_join(th[t], NULL);
}

int main(int argc, char **argv)
{
	if (argc < 4)
		return 2;
	signal(SIGUSR1, on_usr1);
	if (!strcmp(argv[1], "calls")) {
		long n = atol(argv[2]), m = atol(argv[3]), ok = 0, enoent = 0, other = 0;
		for (long i = 0; i < n; i++)
			for (int f = 0; f < 3; f++)
				call(&total, f, i);
		for (long i = 0; i < m; i++) {
			int fd = openat(AT_FDCWD, "/dev/null", OPEN_FLAGS);
			if (fd >= 0) {
				ok++;
				close(fd);
			} else if (errno == ENOENT) {
				enoent++;
			} else {
				other++;
			}
		}
		long faked = 0, replaced = 0;
		for (long i = 0; i < m; i++) {
			long r = syscall(SYS_getppid);
			faked += r == GETPPID_RC;
			replaced += r == GETPPID_EXIT_RC;
		}
		long body[3] = { ov_endbr_body, ov_push_body, -1 };
		print_phase("", 0, body);
		printf("openat: calls %ld opened %ld ENOENT %ld other %ld\n", m, ok, enoent, other);
		printf("getppid: calls %ld faked %ld replaced %ld\n", m, faked, replaced);
	} else if (!strcmp(argv[1], "threads")) {
		run_threads(atoi(argv[2]), atoi(argv[3]), 0);
		long body[3] = { ov_endbr_body, ov_push_body, -1 };
		print_phase("", 0, body);
	} else if (!strcmp(argv[1], "detach")) {
		run_threads(atoi(argv[2]), 0, 1);
		print_phase("before ", 0, NULL);
		print_phase("after ", 1, NULL);
	} else {
		return 2;
	}
	return 0;
}
#endif

/*
 * Credential changes from a non-main thread while other threads come and go
 * (under the preload library: its trace-pipe pumps start at each open and
 * end after each close, its follower restarts after each change). Run as
 * root. The process keeps its capabilities across setresuid
 * (SECBIT_NO_SETUID_FIXUP, inherited by every thread it creates), so glibc's
 * set*id broadcast succeeds on all of them, then drops to 65534 for good.
 * Now and then every thread of the program lowers CAP_SETGID on itself
 * (capabilities are per thread) and a setresgid must fail with EPERM
 * everywhere: a thread of the library that kept it would succeed and glibc
 * would abort on the mismatch.
 * Prints the final ids and whether every thread of the process (the
 * library's included) has them; exits 0 when everything succeeded.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <linux/capability.h>
#include <linux/securebits.h>

#define NOBODY 65534
#define ROUNDS 10

static volatile int done, lowering;
static pthread_barrier_t bar;

#define CHECK(call) do { if (call) { fprintf(stderr, "%s: %s\n", #call, strerror(errno)); exit(2); } } while (0)

/* CAP_SETGID in this thread's effective set, on or off */
static void setgid_cap(int on)
{
	struct __user_cap_header_struct h = { _LINUX_CAPABILITY_VERSION_3, 0 };
	struct __user_cap_data_struct d[2];

	CHECK(syscall(SYS_capget, &h, d));
	if (on)
		d[0].effective |= 1u << CAP_SETGID;
	else
		d[0].effective &= ~(1u << CAP_SETGID);
	CHECK(syscall(SYS_capset, &h, d));
}

/* every thread of the program, in step: lower, (the setresgid), raise */
static void lower_round(void)
{
	pthread_barrier_wait(&bar);
	setgid_cap(0);
	pthread_barrier_wait(&bar);
	pthread_barrier_wait(&bar);
	setgid_cap(1);
	pthread_barrier_wait(&bar);
}

static void *nothing(void *a)
{
	return a;
}

static void *churn(void *a)
{
	while (!done) {
		if (lowering)
			lower_round();
		int fd = open("/sys/kernel/tracing/trace_pipe", O_RDONLY | O_NONBLOCK);
		if (fd >= 0)
			close(fd);
		pthread_t t;
		if (!pthread_create(&t, NULL, nothing, NULL))
			pthread_join(t, NULL);
	}
	return a;
}

#define CHECK(call) do { if (call) { fprintf(stderr, "%s: %s\n", #call, strerror(errno)); exit(2); } } while (0)

/* Without the setuid fixup a thread keeps its capabilities as uid 65534 and
 * can go back to 0: the first drop (as setpriv's: uid, then gid) comes while
 * the library's first threads are still those it made before main(). */
static void *drop(void *a)
{
	gid_t g = NOBODY;

	for (int i = 0; i < 2 * ROUNDS; i++) {
		if (i % 2 == 0) {
			lowering = 1;
			pthread_barrier_wait(&bar);
			setgid_cap(0);
			pthread_barrier_wait(&bar);
			lowering = 0;
			if (setresgid(-1, 1, -1) == 0 || errno != EPERM) {   /* gid 1: none of its three */
				fprintf(stderr, "setresgid without CAP_SETGID: %s\n", strerror(errno));
				exit(2);
			}
			pthread_barrier_wait(&bar);
			setgid_cap(1);
			pthread_barrier_wait(&bar);
		}
		CHECK(setresuid(NOBODY, NOBODY, NOBODY));
		CHECK(setresgid(NOBODY, NOBODY, NOBODY));
		CHECK(setgroups(0, NULL));
		CHECK(setresuid(0, 0, 0));
		CHECK(setresgid(-1, 0, -1));
		CHECK(setgroups(1, &g));
		CHECK(seteuid(NOBODY));
		CHECK(setegid(0));
		CHECK(seteuid(0));
	}
	CHECK(setresuid(NOBODY, NOBODY, NOBODY));
	CHECK(setresgid(NOBODY, NOBODY, NOBODY));
	CHECK(setgroups(0, NULL));
	return a;
}

/* 1 if every thread's Uid: and Gid: lines say NOBODY four times */
static int all_threads_dropped(void)
{
	char want_uid[64], want_gid[64], path[300], line[256];
	DIR *d = opendir("/proc/self/task");
	struct dirent *e;
	int ok = 1, n = 0;

	snprintf(want_uid, sizeof(want_uid), "Uid:\t%d\t%d\t%d\t%d\n", NOBODY, NOBODY, NOBODY, NOBODY);
	snprintf(want_gid, sizeof(want_gid), "Gid:\t%d\t%d\t%d\t%d\n", NOBODY, NOBODY, NOBODY, NOBODY);
	while (d && (e = readdir(d))) {
		if (e->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "/proc/self/task/%s/status", e->d_name);
		FILE *f = fopen(path, "r");
		if (!f)
			continue;     /* a thread that ended meanwhile */
		while (fgets(line, sizeof(line), f))
			if ((!strncmp(line, "Uid:", 4) && strcmp(line, want_uid)) ||
			    (!strncmp(line, "Gid:", 4) && strcmp(line, want_gid)))
				ok = 0;
		fclose(f);
		n++;
	}
	if (d)
		closedir(d);
	return ok && n > 0;
}

int main(void)
{
	pthread_t c, t;
	uid_t r, e, s;
	gid_t rg, eg, sg;

	CHECK(prctl(PR_SET_SECUREBITS, SECBIT_NO_SETUID_FIXUP));
	CHECK(pthread_create(&c, NULL, churn, NULL));
	CHECK(pthread_barrier_init(&bar, NULL, 3));
	CHECK(pthread_create(&t, NULL, drop, NULL));
	for (int i = 0; i < ROUNDS; i++)
		lower_round();
	pthread_join(t, NULL);
	/* the child of a vfork shares this memory (the library's too) and
	 * changes only its own groups */
	pid_t child = vfork();
	if (child == 0)
		_exit(setgroups(0, NULL) ? 3 : 0);
	int status = -1;
	if (child < 0 || waitpid(child, &status, 0) != child || status != 0) {
		fprintf(stderr, "vfork child: status %#x\n", status);
		exit(2);
	}
	CHECK(setgroups(0, NULL));     /* the library's threads are still the parent's own */
	done = 1;
	pthread_join(c, NULL);
	getresuid(&r, &e, &s);
	getresgid(&rg, &eg, &sg);
	printf("uid %u %u %u gid %u %u %u groups %d all-threads %d\n", r, e, s, rg, eg, sg,
	       getgroups(0, NULL), all_threads_dropped());
	return 0;
}

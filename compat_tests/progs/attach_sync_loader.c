/* Attach returns once the probe is in place, detach once it is out
 * (test_attach_sync.py): a raw bpf()/perf_event_open() loader, the kernel's
 * way. It starts the victim (progs/attach_sync_victim.c), lets it run, then
 * attaches a program counting the victim's calls and reads the victim's own
 * count right after the attach returns; it detaches, reads the count again,
 * and lets the victim run on. Every call that began after the attach
 * returned must be counted, and none that began after the detach returned:
 *
 *   hits >= cd - (c0+1), and no hit after the count read when the detach
 *   returned but one in progress
 *
 *   (c0: the victim's count when the attach returned, cd before the detach
 *   began; the call that made it c0+1 may have begun before).
 *
 *   attach_sync_loader VICTIM OFFSET MODE
 *     MODE ioctl: a uprobe event (disabled), SET_BPF, ENABLE ... close() of it
 *          early: the same, the victim started before the loader's first bpf()
 *                 (under bpfshim: before the server runs)
 *          link:  a uprobe event, BPF_LINK_CREATE ... close() of the link
 *          syscall: syscalls:sys_enter_getppid (OFFSET: its tracefs id),
 *                 SET_BPF, ENABLE ... close(); the program counts the
 *                 victim's calls only
 *   (Not PERF_EVENT_IOC_DISABLE: the kernel (6.18, measured) goes on running
 *   the program of a disabled uprobe event, and of a disabled tracepoint
 *   event while another keeps the syscall tracepoints on.)
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/bpf.h>
#include <linux/perf_event.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>

static long sys_bpf(int cmd, union bpf_attr *a)
{
	return syscall(SYS_bpf, cmd, a, sizeof(*a));
}

static void die(const char *what)
{
	printf("%s: %s\n", what, strerror(errno));
	exit(1);
}

static void sleep_ms(long ms)
{
	struct timespec ts = { ms / 1000, ms % 1000 * 1000000L };
	while (nanosleep(&ts, &ts) && errno == EINTR)
		;
}

static int map_create(void)
{
	union bpf_attr a;

	memset(&a, 0, sizeof(a));
	a.map_type = BPF_MAP_TYPE_ARRAY;
	a.key_size = 4;
	a.value_size = 8;
	a.max_entries = 1;
	int map = (int)sys_bpf(BPF_MAP_CREATE, &a);
	if (map < 0)
		die("map");
	return map;
}

static double now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static uint64_t hits_now(int map)
{
	union bpf_attr a;
	uint64_t v = 0;
	uint32_t key = 0;

	memset(&a, 0, sizeof(a));
	a.map_fd = map;
	a.key = (uint64_t)(uintptr_t)&key;
	a.value = (uint64_t)(uintptr_t)&v;
	if (sys_bpf(BPF_MAP_LOOKUP_ELEM, &a))
		die("lookup");
	return v;
}

#define INSN(c, d, s, o, i) ((struct bpf_insn){ .code = (c), .dst_reg = (d), .src_reg = (s), .off = (o), .imm = (i) })

int main(int argc, char **argv)
{
	if (argc != 4)
		return 2;
	const char *victim = argv[1], *mode = argv[3];
	uint64_t offset = strtoull(argv[2], NULL, 0);
	int sys = !strcmp(mode, "syscall");

	/* the map first: under bpfshim its request starts the server, which the
	 * victim's agent finds when it starts; "early": the victim first, its
	 * agent finds no table (it is waited for and woken all the same) */
	int early = !strcmp(mode, "early");
	int map = early ? -1 : map_create();
	/* then the victim: its pid goes into the program */
	int mfd = memfd_create("calls", MFD_CLOEXEC);
	if (mfd < 0 || ftruncate(mfd, 4096))
		die("memfd");
	volatile uint64_t *calls = mmap(0, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, mfd, 0);
	pid_t pid = fork();
	if (pid == 0) {
		if (mfd == 3)
			fcntl(3, F_SETFD, 0);
		else
			dup2(mfd, 3);
		execl(victim, victim, sys ? "syscall" : "call", (char *)NULL);
		_exit(127);
	}
	/* running, its start-up long over */
	for (int i = 0; i < 5000 && *calls < 100000; i++)
		sleep_ms(1);
	if (*calls < 100000)
		die("the victim does not run");
	if (early)
		map = map_create();

	union bpf_attr a;
	/* hits += 1 (the tracepoint fires in every task: the victim's only) */
	struct bpf_insn prog[] = {
		INSN(BPF_JMP | BPF_CALL, 0, 0, 0, BPF_FUNC_get_current_pid_tgid),
		INSN(BPF_ALU64 | BPF_RSH | BPF_K, 0, 0, 0, 32),
		INSN(BPF_JMP | BPF_JNE | BPF_K, 0, 0, 9, pid),
		INSN(BPF_ST | BPF_MEM | BPF_W, BPF_REG_10, 0, -4, 0),
		INSN(BPF_ALU64 | BPF_MOV | BPF_X, BPF_REG_2, BPF_REG_10, 0, 0),
		INSN(BPF_ALU64 | BPF_ADD | BPF_K, BPF_REG_2, 0, 0, -4),
		INSN(BPF_LD | BPF_DW | BPF_IMM, BPF_REG_1, BPF_PSEUDO_MAP_FD, 0, map),
		INSN(0, 0, 0, 0, 0),
		INSN(BPF_JMP | BPF_CALL, 0, 0, 0, BPF_FUNC_map_lookup_elem),
		INSN(BPF_JMP | BPF_JEQ | BPF_K, BPF_REG_0, 0, 2, 0),
		INSN(BPF_ALU64 | BPF_MOV | BPF_K, BPF_REG_1, 0, 0, 1),
		INSN(BPF_STX | BPF_ATOMIC | BPF_DW, BPF_REG_0, BPF_REG_1, 0, BPF_ADD),
		INSN(BPF_ALU64 | BPF_MOV | BPF_K, BPF_REG_0, 0, 0, 0),
		INSN(BPF_JMP | BPF_EXIT, 0, 0, 0, 0),
	};
	memset(&a, 0, sizeof(a));
	a.prog_type = sys ? BPF_PROG_TYPE_TRACEPOINT : BPF_PROG_TYPE_KPROBE;
	a.insns = (uint64_t)(uintptr_t)prog;
	a.insn_cnt = sizeof(prog) / sizeof(prog[0]);
	a.license = (uint64_t)(uintptr_t)"GPL";
	int pfd = (int)sys_bpf(BPF_PROG_LOAD, &a);
	if (pfd < 0)
		die("prog");

	struct perf_event_attr pa;
	memset(&pa, 0, sizeof(pa));
	pa.size = sizeof(pa);
	if (sys) {
		pa.type = PERF_TYPE_TRACEPOINT;
		pa.config = offset;
	} else {
		FILE *f = fopen("/sys/bus/event_source/devices/uprobe/type", "r");
		if (!f || fscanf(f, "%u", &pa.type) != 1)
			die("uprobe type");
		fclose(f);
		pa.config1 = (uint64_t)(uintptr_t)victim;
		pa.config2 = offset;
	}
	int link = !strcmp(mode, "link");
	pa.disabled = !link;

	uint64_t c_pre = *calls;
	double t0 = now_ms();
	int efd = (int)syscall(SYS_perf_event_open, &pa, sys ? -1 : pid, sys ? 0 : -1, -1, PERF_FLAG_FD_CLOEXEC);
	if (efd < 0)
		die("perf_event_open");
	int lfd = -1;
	if (link) {
		memset(&a, 0, sizeof(a));
		a.link_create.prog_fd = pfd;
		a.link_create.target_fd = efd;
		a.link_create.attach_type = BPF_PERF_EVENT;
		if ((lfd = (int)sys_bpf(BPF_LINK_CREATE, &a)) < 0)
			die("link");
	} else if (ioctl(efd, PERF_EVENT_IOC_SET_BPF, pfd) || ioctl(efd, PERF_EVENT_IOC_ENABLE, 0)) {
		die("ioctl");
	}
	uint64_t c0 = *calls;
	double t_attach = now_ms() - t0;
	sleep_ms(50);
	uint64_t cd = *calls;
	close(link ? lfd : efd);
	uint64_t c1 = *calls, h1 = hits_now(map);
	sleep_ms(50);
	uint64_t c2 = *calls, hits = hits_now(map);
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);

	/* a run in progress when the detach returned may still count */
	uint64_t must = cd - c0 > 1 ? cd - c0 - 1 : 0, late = hits - h1 > 1 ? hits - h1 - 1 : 0;
	printf("missed after attach: %llu\n", (unsigned long long)(hits < must ? must - hits : 0));
	printf("hits after detach: %llu\n", (unsigned long long)late);
	printf("victim ran: %s\n", cd - c0 > 10 && c2 - c1 > 10 ? "yes" : "no");
	fprintf(stderr, "attach took %.1f ms\n", t_attach);
	fprintf(stderr, "c_pre %llu c0 %llu cd %llu c1 %llu c2 %llu hits %llu then %llu\n", (unsigned long long)c_pre,
		(unsigned long long)c0, (unsigned long long)cd, (unsigned long long)c1, (unsigned long long)c2,
		(unsigned long long)h1, (unsigned long long)hits);
	return 0;
}

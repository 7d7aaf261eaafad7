/* The libbpf loader of compat_tests/test_override.py: loads
 * override_loader.bpf.o, forks the victim (it execs when the programs are
 * attached: probes that exist when it starts are in place before its
 * main(), on the kernel and in bpfshim), attaches `every_2nd` to
 * ov_endbr, ov_push and ov_tiny of it (uprobes with the function's index
 * as the cookie, pid filter = the child), `returns` as a uretprobe on
 * ov_endbr, `every_call` (a second program on ov_endbr's entry) and
 * `every_3rd_openat` to syscalls:sys_enter_openat and `every_2nd_getppid`
 * to raw_syscalls:sys_enter, `replace_getppid` to sys_exit_getppid (for
 * the child's tgid),
 * and prints what the programs counted after the victim's
 * own lines.
 *
 *   override_loader OBJ VICTIM ARGS...
 *     with ARGS "detach T 0": the uprobes are detached 1 s after the start,
 *     while the victim's threads call the functions, then it gets SIGUSR1.
 *     OV_INSIDE=OFF: `every_2nd` of ov_endbr at file offset OFF instead.
 *     OV_FORCE_RC=1: `force_rc` as a uretprobe on ov_tiny too.
 *
 * A failure prints "load: ERR" or "attach NAME: ERR" and the verifier's
 * line about bpf_override_return, if any (the kernel refuses it).
 */
#define _GNU_SOURCE
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static char verdict[1024];

static int on_print(enum libbpf_print_level level, const char *fmt, va_list ap)
{
	static char msg[1 << 16];
	const char *v, *end;

	vsnprintf(msg, sizeof(msg), fmt, ap);
	/* the verifier's verdict on the helper, not the source line quoting it */
	v = strstr(msg, "helper bpf_override_return");
	if (!v)
		v = strstr(msg, "func bpf_override_return");
	if (v && !verdict[0]) {
		while (v > msg && v[-1] != '\n')
			v--;
		end = strchr(v, '\n');
		snprintf(verdict, sizeof(verdict), "%.*s\n", (int)(end ? end - v : (long)strlen(v)), v);
	}
	return 0;
}

static pid_t child;

static void fail(const char *what, int err)
{
	if (child > 0)
		kill(child, SIGKILL);
	printf("%s: %s\n", what, strerror(err < 0 ? -err : err));
	if (verdict[0])
		printf("verifier: %s", verdict);
	exit(1);
}

static const char *const funcs[] = { "ov_endbr", "ov_push", "ov_tiny" };

int main(int argc, char **argv)
{
	struct bpf_link *links[6] = { 0 }, *tp;
	int go[2], status, err;

	if (argc < 4) {
		fprintf(stderr, "usage: override_loader OBJ VICTIM ARGS...\n");
		return 2;
	}
	libbpf_set_print(on_print);
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (pipe(go))
		return 2;
	child = fork();
	if (child == 0) {
		char c;
		close(go[1]);
		if (read(go[0], &c, 1) != 1)
			_exit(126);
		execv(argv[2], argv + 2);
		_exit(127);
	}
	close(go[0]);
	struct bpf_object *obj = bpf_object__open_file(argv[1], NULL);
	if (!obj)
		fail("open", errno);
	err = bpf_object__load(obj);
	if (err)
		fail("load", err);
	struct bpf_program *every_2nd = bpf_object__find_program_by_name(obj, "every_2nd");
	struct bpf_program *returns = bpf_object__find_program_by_name(obj, "returns");
	struct bpf_program *every_call = bpf_object__find_program_by_name(obj, "every_call");
	struct bpf_program *openat = bpf_object__find_program_by_name(obj, "every_3rd_openat");
	const char *inside = getenv("OV_INSIDE");
	for (int f = 0; f < 3; f++) {
		LIBBPF_OPTS(bpf_uprobe_opts, o, .func_name = funcs[f], .bpf_cookie = (uint64_t)f);
		size_t off = 0;
		if (f == 0 && inside) {
			o.func_name = NULL;
			off = strtoul(inside, NULL, 0);
		}
		links[f] = bpf_program__attach_uprobe_opts(every_2nd, child, argv[2], off, &o);
		if (!links[f])
			fail(funcs[f], errno);
	}
	LIBBPF_OPTS(bpf_uprobe_opts, ro, .func_name = "ov_endbr", .retprobe = true);
	links[3] = bpf_program__attach_uprobe_opts(returns, child, argv[2], 0, &ro);
	LIBBPF_OPTS(bpf_uprobe_opts, so, .func_name = "ov_endbr");
	links[4] = bpf_program__attach_uprobe_opts(every_call, child, argv[2], 0, &so);
	if (getenv("OV_FORCE_RC")) {
		LIBBPF_OPTS(bpf_uprobe_opts, fo, .func_name = "ov_tiny", .retprobe = true);
		links[5] = bpf_program__attach_uprobe_opts(bpf_object__find_program_by_name(obj, "force_rc"), child,
							   argv[2], 0, &fo);
		if (!links[5])
			fail("force_rc", errno);
	}
	tp = bpf_program__attach(openat);
	struct bpf_link *raw = bpf_program__attach(bpf_object__find_program_by_name(obj, "every_2nd_getppid"));
	struct bpf_link *exit = bpf_program__attach(bpf_object__find_program_by_name(obj, "replace_getppid"));
	if (!links[3] || !links[4] || !tp || !raw || !exit)
		fail("attach", errno);
	uint32_t zero = 0;
	uint64_t tgid = (uint64_t)child;
	bpf_map_update_elem(bpf_object__find_map_fd_by_name(obj, "cfg"), &zero, &tgid, BPF_ANY);
	/* bpfshim arms the waiting child for syscall tracepoints with a
	 * signal: let it arrive before the exec (pending at an exec, it would
	 * kill the new image) */
	usleep(300000);
	if (write(go[1], "g", 1) != 1)
		return 2;
	if (!strcmp(argv[3], "detach")) {
		sleep(1);
		for (int i = 0; i < 5; i++)
			bpf_link__destroy(links[i]);
		kill(child, SIGUSR1);
	}
	waitpid(child, &status, 0);
	printf("victim: %s %d\n", WIFEXITED(status) ? "exit" : "signal",
	       WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
	int fd = bpf_object__find_map_fd_by_name(obj, "counts");
	uint64_t c[13];
	for (uint32_t k = 0; k < 13; k++)
		bpf_map_lookup_elem(fd, &k, &c[k]);
	for (int f = 0; f < 3; f++)
		printf("program %s: hits %llu overridden %llu\n", funcs[f], (unsigned long long)c[f],
		       (unsigned long long)c[3 + f]);
	printf("program openat: hits %llu overridden %llu\n", (unsigned long long)c[6], (unsigned long long)c[7]);
	printf("program getppid: hits %llu overridden %llu\n", (unsigned long long)c[11], (unsigned long long)c[12]);
	printf("program second ov_endbr: hits %llu\n", (unsigned long long)c[10]);
	printf("program uretprobe ov_endbr: returns %llu overridden %llu\n", (unsigned long long)c[8],
	       (unsigned long long)c[9]);
	return 0;
}

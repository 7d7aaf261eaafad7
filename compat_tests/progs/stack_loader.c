/* A libbpf loader for compat_tests/test_stack.py (with stack_loader.bpf.c):
 * attaches on_entry to TARGET's probed_fn, runs `TARGET seq 27` (built
 * without PIE and with frame pointers), then prints each case's helper
 * result, the frames it wrote and the stack map entries by id. Addresses in
 * shared libraries print as "lib" (where they land differs with ASLR and
 * with a preloaded library), and so do ids of stacks that hold one: ids in
 * `stacks` print as letters in order of appearance; `one` keeps one frame
 * (the probed address), so its ids are the kernel's jhash of it.
 *
 *   stack_loader OBJ TARGET
 */
#define _GNU_SOURCE
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define NCASES 27

struct res {
	int64_t ret;
	uint64_t ips[8];
};

static int silent(enum libbpf_print_level lvl, const char *fmt, va_list ap)
{
	return lvl == LIBBPF_DEBUG ? 0 : vfprintf(stderr, fmt, ap);
}

static void addr(uint64_t a)
{
	if (a >= 0x100000000ull)   /* above a non-PIE executable */
		printf(" lib");
	else
		printf(" %#llx", (unsigned long long)a);
}

static int64_t seen_ids[NCASES];
static int n_seen;

static char id_letter(int64_t id)
{
	for (int i = 0; i < n_seen; i++)
		if (seen_ids[i] == id)
			return (char)('A' + i);
	seen_ids[n_seen] = id;
	return (char)('A' + n_seen++);
}

static void print_stack(struct bpf_object *obj, const char *map, int64_t id, unsigned depth)
{
	uint64_t ips[127];
	uint32_t k = (uint32_t)id;

	if (id < 0)
		return;
	memset(ips, 0, sizeof(ips));
	int err = bpf_map_lookup_elem(bpf_map__fd(bpf_object__find_map_by_name(obj, map)), &k, ips);
	if (!strcmp(map, "stacks"))
		printf("  %s[%c]:", map, id_letter(id));
	else
		printf("  %s[%lld]:", map, (long long)id);
	if (err) {
		printf(" lookup %s\n", strerror(errno));
		return;
	}
	for (unsigned i = 0; i < depth && ips[i]; i++)
		addr(ips[i]);
	printf("\n");
}

int main(int argc, char **argv)
{
	if (argc != 3) {
		fprintf(stderr, "usage: stack_loader OBJ TARGET\n");
		return 2;
	}
	setvbuf(stdout, NULL, _IOLBF, 0);
	alarm(30);
	libbpf_set_print(silent);
	struct bpf_object *obj = bpf_object__open_file(argv[1], NULL);
	if (!obj || bpf_object__load(obj)) {
		printf("load: %s\n", strerror(errno));
		return 1;
	}
	int go[2];
	char c = 'g';
	if (pipe(go))
		return 1;
	pid_t child = fork();
	if (child == 0) {
		char *targv[] = { argv[2], "seq", "27", NULL };
		close(go[1]);
		if (read(go[0], &c, 1) != 1)
			_exit(4);
		execv(argv[2], targv);
		_exit(5);
	}
	close(go[0]);
	LIBBPF_OPTS(bpf_uprobe_opts, o, .func_name = "probed_fn");
	struct bpf_link *l = bpf_program__attach_uprobe_opts(bpf_object__find_program_by_name(obj, "on_entry"),
							     child, argv[2], 0, &o);
	if (!l) {
		printf("attach: %s\n", strerror(errno));
		kill(child, SIGKILL);
		return 1;
	}
	if (write(go[1], &c, 1) != 1)
		return 1;
	int st;
	waitpid(child, &st, 0);
	int rfd = bpf_map__fd(bpf_object__find_map_by_name(obj, "res"));
	for (uint32_t k = 0; k < NCASES; k++) {
		struct res r;
		if (bpf_map_lookup_elem(rfd, &k, &r)) {
			printf("case %u: lookup %s\n", k, strerror(errno));
			continue;
		}
		if (k >= 10 && k < 17 && r.ret >= 0)
			printf("case %u: ret id", k);
		else
			printf("case %u: ret %lld", k, (long long)r.ret);
		for (int i = 0; i < 8; i++)
			addr(r.ips[i]);
		printf("\n");
		if (k >= 10 && k < 17)
			print_stack(obj, "stacks", r.ret, 127);
		else if (k >= 17 && k < 24)
			print_stack(obj, "tiny", r.ret, 2);
		else
			print_stack(obj, "one", r.ret, 1);
	}
	bpf_link__destroy(l);
	bpf_object__close(obj);
	printf("done\n");
	return 0;
}

/* The hybrid test loaders' common steps (hybrid_loader.c, hybrid_array.c,
 * hybrid_events.c): a target started stopped; open OBJ, set its .rodata, load it, attach its tracepoint program
 * on_getppid and its uprobe on_work to work() in TARGET (*tp, *up), after
 * before_attach() when it is given (0 to go on). The object, or NULL after
 * a line on stderr. */
#include <bpf/libbpf.h>
#include <errno.h>
#include <stdio.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* argv[0] with argv, forked and stopped before its exec (the programs'
 * filters learn its pid first); without LD_PRELOAD when plain. */
static pid_t start_stopped(char **argv, int plain)
{
	pid_t c = fork();

	if (c == 0) {
		if (plain)
			unsetenv("LD_PRELOAD");
		raise(SIGSTOP);
		execv(argv[0], argv);
		_exit(127);
	}
	waitpid(c, NULL, WUNTRACED);
	return c;
}

static struct bpf_object *load_and_attach(const char *path, const void *rodata, size_t size, const char *target,
					  struct bpf_link **tp, struct bpf_link **up, int (*before_attach)(struct bpf_object *))
{
	struct bpf_object *obj = bpf_object__open_file(path, NULL);
	struct bpf_map *ro = obj ? bpf_object__find_map_by_name(obj, ".rodata") : NULL;

	if (!ro || bpf_map__set_initial_value(ro, rodata, size) || bpf_object__load(obj)) {
		fprintf(stderr, "load: %s\n", strerror(errno));
		return NULL;
	}
	if (before_attach && before_attach(obj))
		return NULL;
	*tp = bpf_program__attach(bpf_object__find_program_by_name(obj, "on_getppid"));
	LIBBPF_OPTS(bpf_uprobe_opts, o, .func_name = "work");
	*up = bpf_program__attach_uprobe_opts(bpf_object__find_program_by_name(obj, "on_work"), -1, target, 0, &o);
	if (!*tp || !*up) {
		fprintf(stderr, "attach: %s\n", strerror(errno));
		return NULL;
	}
	return obj;
}

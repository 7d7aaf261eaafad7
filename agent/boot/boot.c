/* SPDX-License-Identifier: MIT */
/*
 * What `bpfshim attach PID` has frida load into a running process.
 *
 * frida maps an injected library with a loader of its own: the object is
 * not in glibc's link map, so its initial-exec TLS resolves to offset 0
 * (the thread control block, overwritten by the first TLS store), dladdr()
 * on it crashes and RTLD_NEXT finds nothing. So this library, which has
 * none of those, only asks glibc to load libbpfshim.so properly (static TLS
 * from the surplus every thread has, constructors, link map) and hands it
 * the caller's runtime directory.
 *
 * data: "<path of libbpfshim.so>\n<runtime directory>"
 */
#include <dlfcn.h>
#include <limits.h>
#include <string.h>
#include <unistd.h>

static void say(const char *a, const char *b)
{
	(void)!write(2, "bpfshim attach: ", 16);
	(void)!write(2, a, strlen(a));
	(void)!write(2, b, strlen(b));
	(void)!write(2, "\n", 1);
}

__attribute__((visibility("default")))
void bpfshim_boot(const char *data, int *unload_policy, void *injector_state)
{
	char lib[PATH_MAX];
	const char *nl = data ? strchr(data, '\n') : NULL;
	void *h;
	void (*agent_main)(const char *, int *);

	(void)unload_policy;     /* this library is unloaded when this returns */
	(void)injector_state;
	if (!nl || (size_t)(nl - data) >= sizeof(lib)) {
		say("bad argument", "");
		return;
	}
	memcpy(lib, data, (size_t)(nl - data));
	lib[nl - data] = 0;
	h = dlopen(lib, RTLD_NOW | RTLD_LOCAL);
	if (!h) {
		say("", dlerror());
		return;
	}
	agent_main = (void (*)(const char *, int *))dlsym(h, "bpfshim_agent_main");
	if (!agent_main) {
		say("", dlerror());
		return;
	}
	agent_main(nl + 1, NULL);
}

/* SPDX-License-Identifier: MIT */
/*
 * A loader's attach and detach return once the agents have applied them, as
 * the kernel's return once the breakpoint is in every mapping (or out of
 * it): a request that may change the attach table notes its generation
 * before, and if the table changed meanwhile waits (agent/rt/attach_ack.h)
 * after, outside the connection's lock, with signals as the caller had them.
 * Only in loader context: the runtime's own requests (the follower's
 * program fetches, a first run's set-up) never wait, or a follower would
 * wait for itself.
 */
#include <linux/bpf.h>
#include "shim.h"
#include "attach_ack.h"
#include "rt.h"
#include "rt_thread.h"

static int loader_context(void)
{
	return !in_probe && !rt_thread_self();
}

/* The requests that may fill, enable, disable or free a slot: perf event
 * ioctls (SET_BPF, ENABLE, DISABLE) and links; and a touch of the table. */
static int may_change_table(uint32_t op, int64_t a)
{
	if (op == SHIM_OP_CTL)
		return a == SHIM_CTL_PERF_IOCTL || a == SHIM_CTL_TABLE_TOUCH;
	if (op != SHIM_OP_BPF)
		return 0;
	switch (a) {
	case BPF_LINK_CREATE:
	case BPF_LINK_UPDATE:
	case BPF_LINK_DETACH:
	case BPF_PROG_ATTACH:
	case BPF_PROG_DETACH:
	case BPF_RAW_TRACEPOINT_OPEN:
		return 1;
	}
	return 0;
}

static int64_t gen_now(void)
{
	const uint32_t *w = rt_attach_gen();

	return w ? (int64_t)__atomic_load_n(w, __ATOMIC_ACQUIRE) : -1;
}

int64_t shim_attach_before(uint32_t op, int64_t a)
{
	return may_change_table(op, a) && loader_context() ? gen_now() : -1;
}

void shim_attach_after(int64_t before)
{
	int64_t g;

	if (before >= 0 && (g = gen_now()) >= 0 && g != before)
		attach_ack_wait((uint32_t)g);
}

/* The last fd of an object closed: a perf event's or link's release detaches
 * its probe, and close returns after the agents have unpatched, as the
 * kernel's perf_release() / bpf_link_release() do. The release has no
 * reply; a SHIM_CTL_SYNC behind it says the server has handled it. */
void shim_release(uint32_t kind, uint32_t id)
{
	int64_t before = (kind == SHIM_OBJ_PERF_EVENT || kind == SHIM_OBJ_LINK) && loader_context() ? gen_now() : -1;
	struct shim_reply rep;

	if (!shim_notify(SHIM_OP_RELEASE, kind, id) && before >= 0 &&
	    !shim_request(SHIM_OP_CTL, SHIM_CTL_SYNC, 0, NULL, 0, -1, &rep, NULL, 0))
		shim_attach_after(before);
}

/* A loader's map update that the next run of a probe needs in every agent
 * (a perf event array's slot: its ring; a prog array's: the target): the
 * table touched, so the request returns once the agents have made a pass
 * (shim_attach_after, loader context). A server without the request: the
 * followers are only woken. */
void shim_table_touch(void)
{
	struct shim_reply rep;

	if (shim_request(SHIM_OP_CTL, SHIM_CTL_TABLE_TOUCH, 0, NULL, 0, -1, &rep, NULL, 0) || rep.err)
		rt_followers_poke();
}

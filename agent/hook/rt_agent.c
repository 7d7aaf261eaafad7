/* SPDX-License-Identifier: MIT */
/* What the hook engine gives the runtime layer (agent/rt/rt.h), for the
 * helpers to use without referencing the agent. */
#include "hook.h"
#include "start.h"

static const struct rt_agent agent = {
	.at_func_entry = hook_at_func_entry,
	.ret_addrs = hook_ret_addrs,
};

/* At start, before anything attaches or runs a program (start/preload.c). */
void rt_agent_init(void)
{
	rt_register_agent(&agent);
}

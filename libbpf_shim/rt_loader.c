/* SPDX-License-Identifier: MIT */
/* What the loader side gives the runtime layer (agent/rt/rt.h), for the
 * agent to use without referencing libbpf_shim/. */
#include "shim.h"
#include "start.h"

static const struct rt_loader loader = {
	.runtime_dir = shim_runtime_dir,
	.set_runtime_dir = shim_set_runtime_dir,
	.interposing = shim_interposing,
	.connect_early = shim_connect_early,
	.prog_by_id = shim_prog_by_id,
	.prog_release = shim_prog_release,
	.prog_prepare = shim_prog_prepare,
};

/* At start, before any step of the agent can ask (start/preload.c). */
void rt_loader_init(void)
{
	rt_register_loader(&loader);
}

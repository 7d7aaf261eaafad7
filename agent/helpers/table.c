/* SPDX-License-Identifier: MIT */
/*
 * The helper table, by enum bpf_func_id: what the engines call and what the
 * server asks about before PROG_LOAD (bpf_helper_supported). Slots left NULL
 * here may be filled at load by other parts of the runtime (perf buffers).
 */
#include "helpers.h"

#define BPF_RT_HELPER_SLOT(name) [BPF_FUNC_##name] = bpf_##name,
BPFSHIM_API bpf_helper_fn bpf_helpers[BPF_RT_HELPER_MAX] = {
	BPF_RT_HELPERS(BPF_RT_HELPER_SLOT)
};
#undef BPF_RT_HELPER_SLOT

/* Filled by the loader side (prog_array slot -> program). */
const struct bpf_prog_rt *(*bpf_rt_prog_array_get)(void *map, uint32_t index);

BPFSHIM_API int bpf_helper_supported(int func_id)
{
	return func_id > 0 && func_id < BPF_RT_HELPER_MAX && bpf_helpers[func_id] != NULL;
}

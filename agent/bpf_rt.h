/* SPDX-License-Identifier: MIT */
/*
 * bpf_rt.h — the runtime ABI shared by the interpreter, the AOT blobs, the
 * helpers and the loader side (PROG_TEST_RUN).
 *
 * A loaded program, as the server hands it to a process, is:
 *   - its instructions after relocation: every map reference is rewritten to
 *     the uapi "index" forms, so code never holds an fd:
 *       lddw dst, src=BPF_PSEUDO_MAP_IDX,       imm=i        -> (u64)maps[i]
 *       lddw dst, src=BPF_PSEUDO_MAP_IDX_VALUE, imm=i, imm2=off
 *                                                           -> map_values[i] + off
 *     (maps[i] is the process-local `struct shm_map *`, map_values[i] the
 *     address of element 0 of an array map in this process);
 *   - the used-maps table, resolved per process;
 *   - optionally an AOT blob: position independent x86-64 code entered as
 *     `u64 fn(u64 r1, const struct bpf_jit_env *env)`.
 *
 * Helpers are plain `u64 f(u64 r1..r5)` functions, numbered by enum
 * bpf_func_id. What a helper needs beyond its arguments (the program being
 * run, its ctx, the attach cookie, pending tail call) is in the thread's
 * current `struct bpf_run_ctx`, as the kernel keeps it in `current`.
 */
#ifndef BPFSHIM_BPF_RT_H
#define BPFSHIM_BPF_RT_H

#include <stdint.h>
#include <setjmp.h>
#include <linux/bpf.h>
#include "common.h"

#ifndef BPF_PSEUDO_MAP_IDX
#define BPF_PSEUDO_MAP_IDX 5
#define BPF_PSEUDO_MAP_IDX_VALUE 6
/* bpf_prog_run() for a probe hit: the attach cookie and the probed address
 * are what bpf_get_attach_cookie() / bpf_get_func_ip() return. */
int bpf_prog_run_probe(const struct bpf_prog_rt *prog, void *ctx, uint64_t cookie, uint64_t func_ip,
		       uint64_t *ret);

#endif

#define BPF_RT_STACK_SIZE 512          /* MAX_BPF_STACK: per program, all frames */
#define BPF_RT_MAX_CALL_FRAMES 8       /* MAX_CALL_FRAMES */
#define BPF_RT_MAX_TAIL_CALL_CNT 33    /* MAX_TAIL_CALL_CNT */
#define BPF_RT_HELPER_MAX 256          /* > __BPF_FUNC_MAX_ID */

typedef uint64_t (*bpf_helper_fn)(uint64_t r1, uint64_t r2, uint64_t r3,
                                  uint64_t r4, uint64_t r5);

struct bpf_prog_rt;

/* What AOT code receives in its second argument. Layout is ABI for the
 * blobs the server compiles: append only. */
struct bpf_jit_env {
	const bpf_helper_fn *helpers;   /* [BPF_RT_HELPER_MAX], by BPF_FUNC_* */
	void *const *maps;              /* used_maps[i] -> struct shm_map * */
	void *const *map_values;        /* used_maps[i] -> element 0, or NULL */
	const struct bpf_prog_rt *prog; /* the program (for bpf-to-bpf entry points) */
};

typedef uint64_t (*bpf_jit_fn)(uint64_t r1, const struct bpf_jit_env *env);

struct bpf_interp_op;

/* What stops runs early, per program (the kernel has no such counters: a
 * fault cannot happen there and its verifier bounds every run). Layout is
 * the image's stats page (libbpf_shim/proto.h): append only. */
struct bpf_prog_counts {
	uint64_t faults;     /* a fault inside the program or a helper */
	uint64_t overruns;   /* over the run budget, or detached while running */
};

/* A program as one process holds it. */
struct bpf_prog_rt {
	uint32_t id;                    /* server-wide prog id */
	uint32_t prog_type;             /* enum bpf_prog_type */
	uint32_t insn_cnt;
	const struct bpf_insn *insns;   /* relocated, see above */
	uint32_t nr_maps;
	void **maps;                    /* struct shm_map *[nr_maps] */
	void **map_values;
	bpf_jit_fn jited;               /* NULL: interpreter */
	struct bpf_jit_env env;
	/* runs stopped early, in `counts` or where shared_counts points (the
	 * image's page all processes count in, read by `bpfshim status`). No
	 * run_cnt/run_time_ns: the kernel keeps them only with BPF_ENABLE_STATS,
	 * and two clock reads would double the cost of a probe hit */
	struct bpf_prog_counts counts;
	struct bpf_prog_counts *shared_counts;
	/* bumped when the program's last probe in this process goes away: a
	 * run that began before stops at its next back-edge check */
	uint32_t detach_gen;
	/* uses per-CPU map values: a run holds a CPU slot (agent/run_cpu.c) */
	uint32_t percpu;
	/* the interpreter's decoded form of insns (bpf_interp_prepare) */
	const struct bpf_interp_op *interp_ops;
};

/* Where a fault ends a run: rbx, rbp, r12-r15, the stack pointer and the
 * return address, saved by bpf_rt_setjmp (agent/prog_run.c). Cheaper than
 * sigsetjmp, which costs more than a whole probe hit otherwise does; the
 * fault path restores the signal mask itself. */
typedef uint64_t bpf_rt_jmp_buf[8];
__attribute__((returns_twice)) int bpf_rt_setjmp(bpf_rt_jmp_buf jb);
__attribute__((noreturn)) void bpf_rt_longjmp(bpf_rt_jmp_buf jb, int val);

/* Per-thread state of the program run in progress (kernel: current->bpf_ctx). */
struct bpf_run_ctx {
	const struct bpf_prog_rt *prog;
	void *ctx;                       /* r1 at entry */
	uint64_t bpf_cookie;             /* bpf_get_attach_cookie */
	uint64_t func_ip;                /* bpf_get_func_ip */
	/* bpf_tail_call: the helper records the target; engines then return at
	 * once and bpf_prog_run continues with it (no return to the caller). */
	const struct bpf_prog_rt *tail_call_next;
	uint32_t tail_call_cnt;
	/* The bpf_spin_lock this run holds (the kernel allows one at a time):
	 * a run stopped by a fault or its budget releases it, so the value's
	 * other users do not spin for ever on a live owner. */
	void *spin_lock;
	/* A fault (SIGSEGV/SIGBUS) inside program code or a helper lands here. */
	bpf_rt_jmp_buf fault_jmp;
	int in_prog;
	struct bpf_run_ctx *prev;        /* nesting: a probe hit inside a helper */
	/* the run budget (bpf_rt_backedge): the program the run began with, its
	 * detach_gen then, the time of the run's first back-edge check */
	const struct bpf_prog_rt *entry;
	uint32_t detach_gen;
	uint64_t budget_t0;
};

extern __thread struct bpf_run_ctx *bpf_cur_run_ctx;

/*
 * Bounded runs. Every taken back edge (a jump with a negative offset, in
 * both engines; a bpf_loop or bpf_for_each_map_elem iteration) decrements
 * the thread's bpf_rt_backedges_left; at 0, bpf_rt_backedge() refills it
 * with BPF_RT_BACKEDGE_CHUNK and checks the run: detached since it began,
 * or longer than bpf_rt_run_budget_ns since its first check, it stops as a
 * fault stops it (counted in overruns; bpf_prog_run returns -EFAULT). A
 * loop-free program never reaches the check. AOT code reaches the counter
 * at %fs:bpf_rt_backedges_tpoff (an import, agent/jit.c), and pays a loop
 * that a constant bounds (at most BPF_RT_BACKEDGE_CHUNK times round) its
 * bound when it enters it instead of on each back edge
 * (syscall_server/aot/loops.py, MAX_CHARGE).
 */
#define BPF_RT_BACKEDGE_CHUNK 65536
extern __thread int32_t bpf_rt_backedges_left;   /* a new thread's 0 checks at once */
extern uint64_t bpf_rt_run_budget_ns;
void bpf_rt_backedge(void);
static inline void bpf_rt_backedge_tick(void)
{
	if (__builtin_expect(--bpf_rt_backedges_left <= 0, 0))
		bpf_rt_backedge();
}
/* The program's last probe in this process is going away (before the
 * detach waits for runs in progress). */
void bpf_rt_prog_detached(const struct bpf_prog_rt *prog);

/* Helper table, by BPF_FUNC_*. NULL = not supported (PROG_LOAD rejects). */
extern bpf_helper_fn bpf_helpers[BPF_RT_HELPER_MAX];

/* Engines. Both return r0; on a tail call they return with
 * bpf_cur_run_ctx->tail_call_next set. The interpreter runs a program
 * bpf_interp_prepare() has decoded (0, or -ENOMEM); bpf_interp_release()
 * frees that. */
uint64_t bpf_interp_run(const struct bpf_prog_rt *prog, uint64_t r1);
int bpf_interp_prepare(struct bpf_prog_rt *prog);
void bpf_interp_release(struct bpf_prog_rt *prog);

/* Run a program the way the kernel's bpf_prog_run does: engine choice, tail
 * calls, fault containment, stats. Returns 0 and r0 in *ret, or -EFAULT if
 * the program faulted (counted in prog->faults; the host goes on). */
int bpf_prog_run(const struct bpf_prog_rt *prog, void *ctx, uint64_t *ret);

/* bpf_prog_run() for a probe hit: the attach cookie and the probed address
 * are what bpf_get_attach_cookie() / bpf_get_func_ip() return. */
int bpf_prog_run_probe(const struct bpf_prog_rt *prog, void *ctx, uint64_t cookie, uint64_t func_ip,
		       uint64_t *ret);

/* BPF_PROG_TEST_RUN's repeat: `repeat` runs (0 means 1) in one guarded
 * section, r0 of the last in *ret. */
int bpf_prog_test_run_repeat(const struct bpf_prog_rt *prog, void *ctx, uint32_t repeat, uint64_t *ret);


/* The ctx of an skb program under PROG_TEST_RUN (libbpf_shim/test_run.c):
 * what the program reads, then the packet as the skb helpers see it
 * (agent/helpers/skb_helpers.c). The buffer has headroom before the MAC
 * header for the helpers that grow the packet at its head (vlan push). */
struct shim_skb_ctx {
	struct __sk_buff skb;      /* what the program reads through its ctx */
	unsigned char *data;       /* skb->data: the network header (non-L2 types) or the MAC header */
	uint32_t len;              /* bytes from data */
	unsigned char *head;       /* the buffer's start: data - head is the headroom */
	unsigned char *mac;        /* the MAC header (LD_ABS at SKF_LL_OFF) */
	unsigned char *net;        /* the network header (LD_ABS at SKF_NET_OFF) */
};

/* LD_ABS/LD_IND of size bytes (1, 2, 4) at off, as the kernel's
 * bpf_skb_load_helper_{8,16,32}: the big-endian value, or -EFAULT outside
 * the packet (the program then exits with 0). Both engines call it. */
int64_t bpf_rt_ld_abs(const void *skb, int32_t off, uint32_t size);

/*
 * Callbacks (bpf_loop, bpf_for_each_map_elem: agent/helpers/callbacks.c). The
 * value a program holds for a callback (lddw src=BPF_PSEUDO_FUNC) is either
 *   - BPF_RT_CB_INSN_TAG | insn index of the subprogram (the interpreter's
 *     form: the helper runs it with bpf_interp_call on the current program), or
 *   - the address of code (the AOT form, bit 63 clear: a C-ABI entry the
 *     compiler adds per callback), called as bpf_rt_callback_fn with the env
 *     of the running program.
 * Tail calls: the loader side fills bpf_rt_prog_array_get (a prog_array map
 * slot -> program, NULL if empty; libbpf_shim/prog.c); while it is NULL every
 * tail call fails.
 */
#define BPF_RT_CB_INSN_TAG (1ull << 63)
typedef uint64_t (*bpf_rt_callback_fn)(uint64_t r1, uint64_t r2, uint64_t r3, uint64_t r4, uint64_t r5,
				       const struct bpf_jit_env *env);
extern const struct bpf_prog_rt *(*bpf_rt_prog_array_get)(void *map, uint32_t index);

/* Ringbuf producers wake the consumers of map_id through this (the kernel's
 * rb->work); the loader side fills it, NULL wakes nobody. */
extern void (*bpf_rt_ringbuf_wake)(uint32_t map_id);

#endif

/* SPDX-License-Identifier: MIT */
/* The CPU slot a program run holds (see run_cpu.c). */
#ifndef BPFSHIM_RUN_CPU_H
#define BPFSHIM_RUN_CPU_H

/* Claim a CPU slot for this thread's run: sets shm_run_cpu (maps/map.h). */
void bpf_rt_cpu_claim(void);
void bpf_rt_cpu_release(void);
/* Map the shared slots now (the follower, before a program can run). */
void bpf_rt_cpu_prepare(void);

#endif

/* SPDX-License-Identifier: MIT */
/* A simulated CUDA runtime (cuda_sim.c): install it in spardl_cuda_rt to
 * run the host side of CUDA plans without a device. */
#ifndef SPARDL_TESTS_CUDA_SIM_H
#define SPARDL_TESTS_CUDA_SIM_H

#include "cuda.h"

extern const struct spardl_cuda_rt spardl_cuda_sim;
/* When set to N > 0, the N-th enqueueing call from now (stream wait, async
 * copy, host function, event record) fails once. */
extern int spardl_cuda_sim_fail_in;

#endif

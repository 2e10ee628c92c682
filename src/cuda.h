/* SPDX-License-Identifier: MIT */
/* CUDA devices: whether this process can use one, and why not. */
#ifndef SPARDL_CUDA_H
#define SPARDL_CUDA_H

#include <stddef.h>
#include <stdio.h>

/* 0 with the device in use named in why, or -ENODEV with the reason (no
 * CUDA in this build, no driver, no device) in why. */
int spardl_cuda_probe(char *why, size_t len);

/* The CUDA devices this process sees (spardl-verbs devices), or why none. */
int spardl_cuda_describe(FILE *out);

#endif

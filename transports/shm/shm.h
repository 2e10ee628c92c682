/* SPDX-License-Identifier: MIT */
/* The shm transport's check of a peer's segment, shared with the tests. */
#ifndef SPARDL_SHM_H
#define SPARDL_SHM_H

#include <stddef.h>

/* 0 when fd (opened from path, /proc/PID/fd/N) is a sealed spardl memfd of
 * exactly len bytes; else -EACCES with the reason in why. */
int spardl_shm_check_segment(int fd, const char *path, size_t len, char *why, size_t why_len);

/* Tests only (not exported): when >= 0, ep_create announces this
 * descriptor instead of its segments, as a hostile rank would. */
extern int spardl_shm_fake_announce_fd;

#endif

/* SPDX-License-Identifier: MIT */
/* The shm transport's check of a peer's segment, shared with the tests. */
#ifndef SPARDL_SHM_H
#define SPARDL_SHM_H

#include <stddef.h>
#include <stdint.h>

/* 0 when fd (opened from path, /proc/PID/fd/N) is a sealed spardl memfd of
 * exactly len bytes; else -EACCES with the reason in why. */
int spardl_shm_check_segment(int fd, const char *path, size_t len, char *why, size_t why_len);

/* Tests only (not exported): when >= 0, ep_create announces this
 * descriptor instead of its segments, as a hostile rank would. */
extern int spardl_shm_fake_announce_fd;

/* Tests only (not exported): when set, called with what ep_create is about
 * to announce (its pid, ring descriptor and capacity, receive-region
 * descriptor and length), which it may change, as a hostile or broken rank
 * would. */
extern void (*spardl_shm_announce_hook)(int32_t *pid, int32_t *ring_fd, uint32_t *ring_cap, int32_t *recv_fd,
					uint64_t *recv_len);

#endif

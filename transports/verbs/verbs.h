/* SPDX-License-Identifier: MIT */
/* The verbs transport's device choice, shared with the spardl-verbs tool. */
#ifndef SPARDL_VERBS_H
#define SPARDL_VERBS_H

#include <stdint.h>
#include <stdio.h>
#include <sys/socket.h>

#include <infiniband/verbs.h>

/* One usable (device, port, GID) and why it was picked. */
struct spardl_verbs_choice {
	struct ibv_context *ctx; /* librdmacm's context for the device */
	char dev[64];
	int port;
	int gid_index;
	int link_layer;    /* IBV_LINK_LAYER_* */
	int gid_type;      /* IBV_GID_TYPE_* */
	union ibv_gid gid;
	struct sockaddr_storage addr; /* the IP address rdma_cm uses for this GID */
	int mtu;           /* active MTU in bytes */
	int numa;          /* device NUMA node, -1 when unknown */
	char why[256];
};

/* Pick per SPARDL_VERBS_DEVICE / SPARDL_VERBS_GID_INDEX and the preferred
 * address family (AF_INET, AF_INET6 or AF_UNSPEC). */
int spardl_verbs_choose(int family, struct spardl_verbs_choice *out);

/* The device table spardl-verbs prints: devices, ports, GIDs, the choice. */
int spardl_verbs_describe(FILE *f, int family);

/* 1 when an ACTIVE port exists on any RDMA device. */
int spardl_verbs_available(void);

/* Tests only (not exported): told each endpoint's listening address, the
 * connection magic and the endpoint's sequence number once it listens, so
 * that a test can connect to it as a stranger would. */
extern void (*spardl_verbs_listen_hook)(const struct sockaddr *addr, uint32_t magic, uint64_t seq);

#endif

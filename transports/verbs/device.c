/* SPDX-License-Identifier: MIT */
/* Device, port and GID choice for the verbs transport (SPARDL_VERBS_DEVICE, SPARDL_VERBS_GID_INDEX). */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <rdma/rdma_cma.h>

#include <spardl/spardl.h>

#include "config.h"
#include "env.h"
#include "log.h"
#include "pci.h"
#include "verbs.h"

#if SPARDL_HAVE_HWLOC
#include <hwloc.h>
#endif

#define MAX_SPEC 16

/* SPARDL_VERBS_DEVICE: "dev[:port],dev..." to use only those, "^dev,..." to
 * exclude those (NCCL_IB_HCA style). */
struct dev_spec {
	int exclude;
	int n;
	char name[MAX_SPEC][64];
	int port[MAX_SPEC]; /* 0: any */
};

static int parse_spec(const char *v, struct dev_spec *s)
{
	char buf[1024], *tok, *save = NULL;

	memset(s, 0, sizeof(*s));
	if (!v)
		return 0;
	if (*v == '^') {
		s->exclude = 1;
		v++;
	}
	snprintf(buf, sizeof(buf), "%s", v);
	for (tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		char *colon = strchr(tok, ':'), *end;

		if (s->n == MAX_SPEC)
			return spardl_error(-SPARDL_ERR_ENV, "SPARDL_VERBS_DEVICE lists more than %d devices", MAX_SPEC);
		if (colon) {
			*colon = '\0';
			s->port[s->n] = (int)strtol(colon + 1, &end, 10);
			if (*end || s->port[s->n] < 1 || s->port[s->n] > 255)
				return spardl_error(-SPARDL_ERR_ENV,
						    "SPARDL_VERBS_DEVICE=%s: '%s' has a bad port; use dev or dev:port (port from 1)",
						    v, colon + 1);
		}
		if (!*tok || strlen(tok) >= sizeof(s->name[0]))
			return spardl_error(-SPARDL_ERR_ENV, "SPARDL_VERBS_DEVICE=%s: empty or overlong device name", v);
		snprintf(s->name[s->n], sizeof(s->name[0]), "%s", tok);
		s->n++;
	}
	return 0;
}

/* Whether spec admits (dev, port). */
static int spec_admits(const struct dev_spec *s, const char *dev, int port)
{
	int i, hit = 0;

	if (!s->n)
		return 1;
	for (i = 0; i < s->n; i++)
		if (!strcmp(s->name[i], dev) && (!s->port[i] || s->port[i] == port))
			hit = 1;
	return s->exclude ? !hit : hit;
}

static int spec_names(const struct dev_spec *s, const char *dev)
{
	int i;

	for (i = 0; i < s->n; i++)
		if (!strcmp(s->name[i], dev))
			return 1;
	return 0;
}

static int mtu_bytes(enum ibv_mtu m)
{
	return m >= IBV_MTU_256 && m <= IBV_MTU_4096 ? 128 << m : 0;
}

static int gid_is_zero(const union ibv_gid *g)
{
	static const union ibv_gid zero;

	return !memcmp(g, &zero, sizeof(*g));
}

static int gid_is_v4mapped(const union ibv_gid *g)
{
	static const uint8_t pre[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };

	return !memcmp(g->raw, pre, sizeof(pre));
}

static int gid_is_linklocal(const union ibv_gid *g)
{
	return g->raw[0] == 0xfe && (g->raw[1] & 0xc0) == 0x80;
}

/* The IP address of a RoCE GID (the GID is the address). */
static void gid_to_addr(const union ibv_gid *g, uint32_t ifindex, struct sockaddr_storage *ss)
{
	memset(ss, 0, sizeof(*ss));
	if (gid_is_v4mapped(g)) {
		struct sockaddr_in *in = (struct sockaddr_in *)ss;

		in->sin_family = AF_INET;
		memcpy(&in->sin_addr, g->raw + 12, 4);
	} else {
		struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;

		in6->sin6_family = AF_INET6;
		memcpy(&in6->sin6_addr, g->raw, 16);
		if (gid_is_linklocal(g))
			in6->sin6_scope_id = ifindex;
	}
}

/* InfiniBand: the address of the IPoIB interface on this device's port. */
static int ipoib_addr(const char *dev, int port, int family, struct sockaddr_storage *ss)
{
	struct ifaddrs *ifa, *i;
	int found = 0;

	if (getifaddrs(&ifa))
		return -errno;
	for (i = ifa; i && !found; i = i->ifa_next) {
		char path[512];
		FILE *f;
		int devport = 0;

		if (!i->ifa_addr || (i->ifa_addr->sa_family != AF_INET && i->ifa_addr->sa_family != AF_INET6))
			continue;
		if (family != AF_UNSPEC && i->ifa_addr->sa_family != family)
			continue;
		snprintf(path, sizeof(path), "/sys/class/net/%s/device/infiniband/%s", i->ifa_name, dev);
		f = fopen(path, "r");
		if (!f && errno != EISDIR)
			continue;
		if (f)
			fclose(f);
		snprintf(path, sizeof(path), "/sys/class/net/%s/dev_port", i->ifa_name);
		f = fopen(path, "r");
		if (f) {
			if (fscanf(f, "%d", &devport) != 1)
				devport = 0;
			fclose(f);
		}
		if (devport + 1 != port)
			continue;
		memcpy(ss, i->ifa_addr,
		       i->ifa_addr->sa_family == AF_INET ? sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6));
		found = 1;
	}
	freeifaddrs(ifa);
	return found ? 0 : -ENOENT;
}

static int device_numa(const char *dev)
{
	char path[256];

	snprintf(path, sizeof(path), "/sys/class/infiniband/%s/device", dev);
	return spardl_pci_numa(path);
}

/* NUMA node this process runs on, -1 when unknown (or without hwloc). */
static int my_numa(void)
{
#if SPARDL_HAVE_HWLOC
	hwloc_topology_t topo;
	hwloc_bitmap_t set, nodes;
	int node = -1;

	if (hwloc_topology_init(&topo))
		return -1;
	if (hwloc_topology_load(topo)) {
		hwloc_topology_destroy(topo);
		return -1;
	}
	set = hwloc_bitmap_alloc();
	nodes = hwloc_bitmap_alloc();
	if (set && nodes && !hwloc_get_cpubind(topo, set, HWLOC_CPUBIND_PROCESS)) {
		hwloc_cpuset_to_nodeset(topo, set, nodes);
		/* Bound to exactly one node: that is where we run. */
		if (hwloc_bitmap_weight(nodes) == 1)
			node = hwloc_bitmap_first(nodes);
	}
	hwloc_bitmap_free(set);
	hwloc_bitmap_free(nodes);
	hwloc_topology_destroy(topo);
	return node;
#else
	return -1;
#endif
}

static int family_rank(int fam, int want)
{
	return want == AF_UNSPEC ? (fam == AF_INET ? 0 : 1) : (fam == want ? 0 : 1);
}

/* Choose a GID on a RoCE port: RoCE v2, the wanted family, not link-local
 * unless nothing else exists; or the one SPARDL_VERBS_GID_INDEX names. */
static int pick_gid(struct ibv_context *ctx, int port, int tbl_len, int family, long forced,
		    struct spardl_verbs_choice *c)
{
	int best = -1, best_score = 1 << 30, i;
	struct ibv_gid_entry e, be;

	for (i = 0; i < tbl_len; i++) {
		int score;

		if (ibv_query_gid_ex(ctx, (uint32_t)port, (uint32_t)i, &e, 0))
			continue;
		if (gid_is_zero(&e.gid))
			continue;
		if (forced >= 0) {
			if (i != forced)
				continue;
			score = 0;
		} else {
			struct sockaddr_storage ss;

			gid_to_addr(&e.gid, e.ndev_ifindex, &ss);
			score = (e.gid_type == IBV_GID_TYPE_ROCE_V2 ? 0 : 100) +
				(gid_is_linklocal(&e.gid) ? 10 : 0) + family_rank(ss.ss_family, family);
		}
		if (score < best_score) {
			best_score = score;
			best = i;
			be = e;
		}
	}
	if (best < 0)
		return forced >= 0 ?
			       spardl_error(-EINVAL, "SPARDL_VERBS_GID_INDEX=%ld: %s port %d has no such GID (table of %d)",
					    forced, c->dev, port, tbl_len) :
			       -ENOENT;
	c->gid_index = best;
	c->gid_type = (int)be.gid_type;
	c->gid = be.gid;
	gid_to_addr(&be.gid, be.ndev_ifindex, &c->addr);
	if (forced >= 0)
		snprintf(c->why, sizeof(c->why), "GID %d forced by SPARDL_VERBS_GID_INDEX", best);
	else
		snprintf(c->why, sizeof(c->why), "GID %d: %s%s, %s", best,
			 be.gid_type == IBV_GID_TYPE_ROCE_V2 ? "RoCE v2" : "RoCE v1 (no v2 GID)",
			 gid_is_linklocal(&be.gid) ? ", link-local (nothing else)" : "",
			 c->addr.ss_family == AF_INET ? "IPv4" : "IPv6");
	return 0;
}

int spardl_verbs_choose(int family, struct spardl_verbs_choice *out)
{
	struct spardl_verbs_choice best = { 0 };
	struct ibv_context **ctxs;
	struct dev_spec spec;
	int n = 0, i, ret, found = 0, here = -2;
	long forced;
	char seen[512] = "";

	ret = parse_spec(spardl_env_str("SPARDL_VERBS_DEVICE"), &spec);
	if (!ret)
		ret = spardl_env_long("SPARDL_VERBS_GID_INDEX", &forced);
	if (ret)
		return ret;
	ctxs = rdma_get_devices(&n);
	if (!ctxs || n == 0) {
		if (ctxs)
			rdma_free_devices(ctxs);
		return spardl_error(-ENODEV, "verbs: no RDMA device found (is rdma-core installed and a driver loaded? `ibv_devices` lists them)");
	}
	if (!spec.exclude)
		for (i = 0; i < spec.n; i++) {
			int j, known = 0;

			for (j = 0; j < n; j++)
				known |= !strcmp(ibv_get_device_name(ctxs[j]->device), spec.name[i]);
			if (!known) {
				for (j = 0; j < n; j++) {
					strncat(seen, " ", sizeof(seen) - strlen(seen) - 1);
					strncat(seen, ibv_get_device_name(ctxs[j]->device), sizeof(seen) - strlen(seen) - 1);
				}
				rdma_free_devices(ctxs);
				return spardl_error(-ENODEV, "SPARDL_VERBS_DEVICE names '%s', which does not exist; devices here:%s",
						    spec.name[i], seen);
			}
		}
	for (i = 0; i < n; i++) {
		struct ibv_context *ctx = ctxs[i];
		const char *name = ibv_get_device_name(ctx->device);
		struct ibv_device_attr da;
		int port;

		strncat(seen, " ", sizeof(seen) - strlen(seen) - 1);
		strncat(seen, name, sizeof(seen) - strlen(seen) - 1);
		if (ibv_query_device(ctx, &da)) {
			SPARDL_DEBUG("verbs: %s: ibv_query_device failed: %s", name, strerror(errno));
			continue;
		}
		for (port = 1; port <= da.phys_port_cnt; port++) {
			struct spardl_verbs_choice c = { 0 };
			struct ibv_port_attr pa;
			int numa;

			if (!spec_admits(&spec, name, port))
				continue;
			if (ibv_query_port(ctx, (uint8_t)port, &pa)) {
				SPARDL_DEBUG("verbs: %s port %d: ibv_query_port failed: %s", name, port, strerror(errno));
				continue;
			}
			if (pa.state != IBV_PORT_ACTIVE) {
				SPARDL_DEBUG("verbs: %s port %d skipped: state %s", name, port,
					     ibv_port_state_str(pa.state));
				continue;
			}
			c.ctx = ctx;
			snprintf(c.dev, sizeof(c.dev), "%s", name);
			c.port = port;
			c.link_layer = pa.link_layer;
			c.mtu = mtu_bytes(pa.active_mtu);
			c.numa = numa = device_numa(name);
			if (pa.link_layer == IBV_LINK_LAYER_ETHERNET) {
				ret = pick_gid(ctx, port, pa.gid_tbl_len, family, forced, &c);
				if (ret == -ENOENT) {
					SPARDL_DEBUG("verbs: %s port %d skipped: no usable GID", name, port);
					continue;
				}
				if (ret) {
					rdma_free_devices(ctxs);
					return ret;
				}
			} else {
				struct ibv_gid_entry e;

				c.gid_index = forced >= 0 ? (int)forced : 0;
				if (ibv_query_gid_ex(ctx, (uint32_t)port, (uint32_t)c.gid_index, &e, 0) == 0)
					c.gid = e.gid;
				c.gid_type = IBV_GID_TYPE_IB;
				if (ipoib_addr(name, port, family, &c.addr) &&
				    ipoib_addr(name, port, AF_UNSPEC, &c.addr)) {
					SPARDL_DEBUG("verbs: %s port %d skipped: no IPoIB address for rdma_cm", name, port);
					continue;
				}
				snprintf(c.why, sizeof(c.why), "InfiniBand, GID %d, IPoIB address", c.gid_index);
			}
			if (!found) {
				best = c;
				found = 1;
				continue;
			}
			/* Prefer the device on our NUMA node (with hwloc), else keep
			 * the first in the order the driver lists them. */
			if (here == -2)
				here = my_numa();
			if (here >= 0 && numa == here && best.numa != here) {
				best = c;
				snprintf(best.why + strlen(best.why), sizeof(best.why) - strlen(best.why),
					 "; on this process's NUMA node %d", here);
			}
		}
	}
	if (!found) {
		rdma_free_devices(ctxs);
		if (spec.n && !spec.exclude && spec_names(&spec, spec.name[0]))
			return spardl_error(-ENODEV, "verbs: SPARDL_VERBS_DEVICE=%s: no ACTIVE port with a usable address on it (devices here:%s); check `ibv_devinfo` and the port's IP address",
					    spardl_env_str("SPARDL_VERBS_DEVICE"), seen);
		return spardl_error(-ENODEV, "verbs: no ACTIVE port with a usable address (devices here:%s); check `ibv_devinfo`, or use SPARDL_TRANSPORT=shm",
				    seen);
	}
	/* Only the array goes: the contexts are librdmacm's, shared with its
	 * ids, and the transport allocates its protection domain on one. */
	rdma_free_devices(ctxs);
	*out = best;
	return 0;
}

int spardl_verbs_available(void)
{
	struct ibv_device **list;
	int n = 0, i, yes = 0;

	list = ibv_get_device_list(&n);
	if (!list)
		return 0;
	for (i = 0; i < n && !yes; i++) {
		struct ibv_context *ctx = ibv_open_device(list[i]);
		struct ibv_device_attr da;
		int port;

		if (!ctx)
			continue;
		if (!ibv_query_device(ctx, &da))
			for (port = 1; port <= da.phys_port_cnt; port++) {
				struct ibv_port_attr pa;

				if (!ibv_query_port(ctx, (uint8_t)port, &pa) && pa.state == IBV_PORT_ACTIVE)
					yes = 1;
			}
		ibv_close_device(ctx);
	}
	ibv_free_device_list(list);
	return yes;
}

static const char *gid_type_str(int t)
{
	switch (t) {
	case IBV_GID_TYPE_IB:
		return "IB";
	case IBV_GID_TYPE_ROCE_V1:
		return "RoCEv1";
	case IBV_GID_TYPE_ROCE_V2:
		return "RoCEv2";
	}
	return "?";
}

int spardl_verbs_describe(FILE *f, int family)
{
	struct ibv_device **list;
	struct spardl_verbs_choice c;
	int n = 0, i, ret;

	list = ibv_get_device_list(&n);
	if (!list)
		return spardl_error(-errno, "verbs: ibv_get_device_list failed: %s%s", strerror(errno),
				    errno == ENOSYS ? " (this kernel has no RDMA support: no ib_uverbs)" : "");
	if (n == 0)
		fprintf(f, "no RDMA devices\n");
	for (i = 0; i < n; i++) {
		struct ibv_context *ctx = ibv_open_device(list[i]);
		const char *name = ibv_get_device_name(list[i]);
		struct ibv_device_attr da;
		int port;

		if (!ctx) {
			fprintf(f, "%s: cannot open: %s\n", name, strerror(errno));
			continue;
		}
		if (ibv_query_device(ctx, &da)) {
			fprintf(f, "%s: ibv_query_device failed: %s\n", name, strerror(errno));
			ibv_close_device(ctx);
			continue;
		}
		fprintf(f, "%s: %d port(s), fw %s, NUMA node %d, max_qp_wr %d, max_cqe %d\n", name,
			da.phys_port_cnt, da.fw_ver, device_numa(name), da.max_qp_wr, da.max_cqe);
		for (port = 1; port <= da.phys_port_cnt; port++) {
			struct ibv_port_attr pa;
			int g;

			if (ibv_query_port(ctx, (uint8_t)port, &pa)) {
				fprintf(f, "  port %d: ibv_query_port failed: %s\n", port, strerror(errno));
				continue;
			}
			fprintf(f, "  port %d: %s, link layer %s, active MTU %d (max %d), %d GIDs\n", port,
				ibv_port_state_str(pa.state),
				pa.link_layer == IBV_LINK_LAYER_ETHERNET ? "Ethernet (RoCE)" : "InfiniBand",
				mtu_bytes(pa.active_mtu), mtu_bytes(pa.max_mtu), pa.gid_tbl_len);
			for (g = 0; g < pa.gid_tbl_len; g++) {
				struct ibv_gid_entry e;
				char txt[INET6_ADDRSTRLEN] = "", ifn[IF_NAMESIZE] = "";

				if (ibv_query_gid_ex(ctx, (uint32_t)port, (uint32_t)g, &e, 0) || gid_is_zero(&e.gid))
					continue;
				inet_ntop(AF_INET6, e.gid.raw, txt, sizeof(txt));
				if (e.ndev_ifindex)
					if_indextoname(e.ndev_ifindex, ifn);
				fprintf(f, "    GID %3d  %-40s %-7s %s\n", g, txt, gid_type_str((int)e.gid_type), ifn);
			}
		}
		ibv_close_device(ctx);
	}
	ibv_free_device_list(list);
	ret = spardl_verbs_choose(family, &c);
	if (ret) {
		fprintf(f, "spardl would pick: nothing: %s\n", spardl_last_error());
	} else {
		char txt[INET6_ADDRSTRLEN] = "";

		if (c.addr.ss_family == AF_INET)
			inet_ntop(AF_INET, &((struct sockaddr_in *)&c.addr)->sin_addr, txt, sizeof(txt));
		else
			inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&c.addr)->sin6_addr, txt, sizeof(txt));
		fprintf(f, "spardl would pick: %s port %d, GID %d (%s), address %s, MTU %d, NUMA node %d\n  because: %s\n",
			c.dev, c.port, c.gid_index, gid_type_str(c.gid_type), txt, c.mtu, c.numa, c.why);
	}
	return 0;
}

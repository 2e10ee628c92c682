/* SPDX-License-Identifier: MIT */
/* How far apart two PCI devices are (a GPU and an RDMA NIC), from sysfs. */
#ifndef SPARDL_PCI_H
#define SPARDL_PCI_H

#include <stddef.h>

/* The path a transfer between the two takes, nearest first; the names are
 * the ones nvidia-smi topo and NCCL use. */
enum spardl_pci_dist {
	SPARDL_PCI_PIX = 0, /* one PCIe switch (or one bridge) */
	SPARDL_PCI_PXB = 1, /* several PCIe bridges, no host bridge */
	SPARDL_PCI_PHB = 2, /* through a PCIe host bridge (the CPU's root complex) */
	SPARDL_PCI_SYS = 3, /* across the link between NUMA nodes */
	SPARDL_PCI_UNKNOWN = 4,
};

const char *spardl_pci_dist_name(enum spardl_pci_dist d);
const char *spardl_pci_dist_what(enum spardl_pci_dist d);

/* a and b: sysfs device paths with symlinks resolved
 * ("/sys/devices/pci0000:00/0000:00:01.0/0000:01:00.0"); numa_a and numa_b
 * their NUMA nodes (-1: unknown). */
enum spardl_pci_dist spardl_pci_distance(const char *a, int numa_a, const char *b, int numa_b);

/* The resolved sysfs path of sysfs_link (a PCI device or a link to one) in
 * out; -ENOENT where it is not a PCI device. Its NUMA node, or -1. */
int spardl_pci_resolve(const char *sysfs_link, char *out, size_t len);
int spardl_pci_numa(const char *path);

#endif

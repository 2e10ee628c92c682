/* SPDX-License-Identifier: MIT */
/* How far apart two PCI devices are (a GPU and an RDMA NIC), from sysfs. */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pci.h"

const char *spardl_pci_dist_name(enum spardl_pci_dist d)
{
	static const char *const names[] = { "PIX", "PXB", "PHB", "SYS", "?" };

	return names[d <= SPARDL_PCI_UNKNOWN ? d : SPARDL_PCI_UNKNOWN];
}

const char *spardl_pci_dist_what(enum spardl_pci_dist d)
{
	static const char *const what[] = {
		"one PCIe switch",
		"several PCIe bridges",
		"through the CPU's PCIe host bridge",
		"across NUMA nodes",
		"unknown",
	};

	return what[d <= SPARDL_PCI_UNKNOWN ? d : SPARDL_PCI_UNKNOWN];
}

/* "dddd:bb:dd.f" */
static int is_pci_addr(const char *s, size_t len)
{
	return len == 12 && s[4] == ':' && s[7] == ':' && s[10] == '.';
}

#define MAX_DEPTH 32

/* The root ("pci0000:00") and the PCI addresses below it, in order. */
static int split(const char *path, const char **root, size_t *root_len, const char *comp[MAX_DEPTH])
{
	const char *p = strstr(path, "/pci");
	int n = 0;

	if (!p)
		return -1;
	p++;
	*root = p;
	*root_len = strcspn(p, "/");
	p += *root_len;
	while (*p == '/') {
		size_t len;

		p++;
		len = strcspn(p, "/");
		if (!is_pci_addr(p, len))
			break;
		if (n == MAX_DEPTH)
			return -1;
		comp[n++] = p;
		p += len;
	}
	return n;
}

enum spardl_pci_dist spardl_pci_distance(const char *a, int numa_a, const char *b, int numa_b)
{
	const char *ca[MAX_DEPTH], *cb[MAX_DEPTH], *ra, *rb;
	size_t la, lb;
	int na = split(a, &ra, &la, ca), nb = split(b, &rb, &lb, cb), c = 0;

	if (na < 1 || nb < 1)
		return SPARDL_PCI_UNKNOWN;
	if (la != lb || memcmp(ra, rb, la))
		return numa_a == numa_b ? SPARDL_PCI_PHB : SPARDL_PCI_SYS;
	while (c < na - 1 && c < nb - 1 && !memcmp(ca[c], cb[c], 12))
		c++;
	if (c == 0)
		return SPARDL_PCI_PHB;
	/* Below the nearest common bridge: a switch's downstream port and the
	 * device on each side is one switch. */
	return na - c <= 2 && nb - c <= 2 ? SPARDL_PCI_PIX : SPARDL_PCI_PXB;
}

int spardl_pci_resolve(const char *sysfs_link, char *out, size_t len)
{
	char buf[PATH_MAX];
	const char *r, *comp[MAX_DEPTH];
	size_t rl;

	if (!realpath(sysfs_link, buf) || split(buf, &r, &rl, comp) < 1)
		return -ENOENT;
	if (strlen(buf) >= len)
		return -ENAMETOOLONG;
	strcpy(out, buf);
	return 0;
}

int spardl_pci_numa(const char *path)
{
	char file[PATH_MAX + 16];
	FILE *f;
	int node = -1;

	snprintf(file, sizeof(file), "%s/numa_node", path);
	f = fopen(file, "r");
	if (!f)
		return -1;
	if (fscanf(f, "%d", &node) != 1)
		node = -1;
	fclose(f);
	return node;
}

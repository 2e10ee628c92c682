/* SPDX-License-Identifier: MIT */
/* The static registry of transports compiled in, and the runtime choice among them. */
#include <errno.h>
#include <string.h>

#include "config.h"
#include "log.h"
#include "transport.h"

extern const struct spardl_tp_ops spardl_tp_shm_ops;
#if SPARDL_HAVE_VERBS_TRANSPORT
extern const struct spardl_tp_ops spardl_tp_verbs_ops;
#endif

static const struct spardl_tp_ops *const registry[] = {
#if SPARDL_HAVE_VERBS_TRANSPORT
	&spardl_tp_verbs_ops,
#endif
	&spardl_tp_shm_ops,
	NULL,
};

const struct spardl_tp_ops *const *spardl_tp_registry(void)
{
	return registry;
}

static int check_ops(const struct spardl_tp_ops *ops)
{
	if (ops->version != SPARDL_TP_OPS_VERSION || ops->size != sizeof(*ops))
		return spardl_error(-EPROTO, "transport %s was built against interface version %u (size %u), the core expects %u (size %zu)",
				    ops->name, ops->version, ops->size, SPARDL_TP_OPS_VERSION, sizeof(*ops));
	return 0;
}

int spardl_tp_find(const char *name, const struct spardl_tp_ops **ops_out)
{
	const struct spardl_tp_ops *const *p;
	char known[128] = "";

	for (p = registry; *p; p++) {
		if (!strcmp(name, "auto") ? (*p)->available() : !strcmp(name, (*p)->name)) {
			int ret = check_ops(*p);

			if (ret)
				return ret;
			*ops_out = *p;
			return 0;
		}
		strncat(known, " ", sizeof(known) - strlen(known) - 1);
		strncat(known, (*p)->name, sizeof(known) - strlen(known) - 1);
	}
	if (!strcmp(name, "auto"))
		return spardl_error(-ENODEV, "SPARDL_TRANSPORT=auto: no transport can run here (compiled in:%s)", known);
	if (!strcmp(name, "verbs"))
		return spardl_error(-ENODEV, "SPARDL_TRANSPORT=verbs: this build has no verbs transport (compiled in:%s); rebuild with -Dverbs=enabled and libibverbs-dev, librdmacm-dev",
				    known);
	return spardl_error(-EINVAL, "unknown transport '%s' (compiled in:%s); use shm, verbs or auto", name, known);
}

int spardl_tp_no_mem_alloc(struct spardl_tp *tp, size_t len, enum spardl_mem_type type, unsigned access,
			   struct spardl_tp_mr **mr_out)
{
	return spardl_error(-EOPNOTSUPP, "the %s transport cannot allocate this memory type (%d)", tp->ops->name,
			    (int)type);
}

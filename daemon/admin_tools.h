/*
 * admin_tools: the control socket commands behind the data tools when the
 * server runs (import, export, backup, fixuidmeta, fixmsgsize, reassignuids,
 * bumpuidvalidity, recalculatemailboxcounts). The work runs on the account's
 * storage thread through index/tools.h; replies go out from the loop thread.
 * An import runs in batches, one storage job each, so other work of the
 * account (deliveries, IMAP) interleaves with it.
 */
#ifndef MOX_ADMIN_TOOLS_H
#define MOX_ADMIN_TOOLS_H

#include "daemon/server.h"

/* Register the commands (called by admin_init). */
void admin_tools_init(struct server *srv);

#endif

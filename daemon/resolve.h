/*
 * resolve: which account an address or login name belongs to, from the
 * config: destinations, catch-all ("@domain"), localpart catch-all
 * separators ("+"), case-insensitive localparts unless configured, and
 * postmaster@ for every domain. Domains match in their canonical form
 * (idn.h), whichever spelling the config and the caller use. Pure functions
 * over the config.
 */
#ifndef MOX_RESOLVE_H
#define MOX_RESOLVE_H

#include <stddef.h>

#include "daemon/config.h"

struct resolved {
	const struct config_account *account;
	const struct config_destination *dest; /* NULL for postmaster without a destination */
	const char *mailbox;                   /* destination's mailbox or "INBOX" */
};

/*
 * Resolve recipient localpart@domain; domain in any spelling (any case,
 * U-label or A-label), canonicalized here (idn.h). Returns 1 with *r
 * filled, 0 when the domain is ours but no account takes the address, -1
 * when the domain is not ours or not a valid domain name (callers that
 * must tell a client why check it with idn_domain_canon first).
 */
int resolve_recipient(const struct config *cfg, const char *localpart, const char *domain, struct resolved *r);

/*
 * Resolve a login name: an address of a (non-catch-all) destination, with
 * the domain in any spelling (as for resolve_recipient), or an account
 * name. Returns 1 with the account, 0 unknown.
 */
int resolve_login(const struct config *cfg, const char *username, const struct config_account **acc_r);

#endif

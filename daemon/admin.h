/*
 * admin: account administration inside the running daemon: loading every
 * account's authentication secrets into the auth cache at start (and, for
 * localserve, giving the account mox its well-known password), and the
 * control socket commands that change accounts (setaccountpassword, ...).
 * All index work goes through the store's storage threads.
 */
#ifndef MOX_ADMIN_H
#define MOX_ADMIN_H

#include "daemon/server.h"

struct idx_account;

/* The password localserve gives its account "mox" on first start. */
#define ADMIN_LOCALSERVE_ACCOUNT "mox"
#define ADMIN_LOCALSERVE_PASSWORD "moxmoxmox"

/* Register the control commands and load the secrets of all accounts; when
 * they are in, the server starts accepting connections (server_accept_start). */
void admin_init(struct server *srv);

/*
 * Derive and store new secrets for password in an open account (storage
 * thread or offline tools). Fills *blob_r and *len_r with the serialized secrets
 * for the auth cache when non-NULL (caller frees). Returns 1 or -1 with err.
 */
int admin_set_password(struct idx_account *a, const char *password, void **blob_r, size_t *len_r, char *err,
    size_t errlen);

#endif

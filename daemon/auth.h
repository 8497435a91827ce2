/*
 * auth: authentication shared by IMAP and SMTP. Owns the in-memory cache of
 * every account's SASL secrets (loaded from the index by the store at start
 * and on password changes, so a login never waits for the disk), login-name
 * resolution, SASL exchanges with channel binding taken from the TLS
 * connection, and the per-IP failed-login accounting with one
 * fail2ban-friendly log line per failure. Loop thread only.
 * Does not: talk to clients or delay replies (the protocol handler applies
 * the delay auth_failed returns).
 */
#ifndef MOX_AUTH_H
#define MOX_AUTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <openssl/ssl.h>

#include "daemon/config.h"
#include "daemon/sasl.h"
#include "daemon/server.h"

struct auth;
struct auth_session;

struct auth *auth_new(const struct config *cfg);
void auth_free(struct auth **ap);
/* The config after a reload (borrowed; must outlive its use). */
void auth_set_config(struct auth *a, const struct config *cfg);

/* Cache the serialized secrets of account (copied); len 0 forgets them. */
void auth_set_secrets(struct auth *a, const char *account, const void *blob, size_t len);

/*
 * Append the mechanisms to announce, separated by spaces, each preceded by
 * prefix (e.g. "AUTH=" for IMAP, "" for SMTP): SCRAM-SHA-256-PLUS,
 * SCRAM-SHA-256, SCRAM-SHA-1-PLUS, SCRAM-SHA-1, CRAM-MD5, then PLAIN and
 * LOGIN when allow_plaintext (LOGIN only when with_login). -PLUS only when
 * ssl is non-NULL (channel binding available).
 */
void auth_mechs(SSL *ssl, bool allow_plaintext, bool with_login, const char *prefix, struct mbuf *out);

/*
 * Start an exchange for mechanism name on a connection (ssl NULL without
 * TLS). Returns NULL when the mechanism is unknown or not allowed here
 * (plaintext without allow_plaintext, -PLUS without TLS).
 */
struct auth_session *auth_session_new(struct auth *a, const char *mechname, SSL *ssl, bool allow_plaintext);
void auth_session_free(struct auth_session **sp);

/* One step on the base64 wire form (b64 NULL: no initial response). See sasl_step_base64. */
enum sasl_result auth_step(struct auth_session *s, const char *b64, size_t len, struct mbuf *out_b64);
/* After SASL_SUCCESS: the account name. Valid until the session is freed. */
const char *auth_session_account(const struct auth_session *s);
/* For logging a failure: username as sent (may be NULL), mechanism name, reason, kind. */
const char *auth_session_username(const struct auth_session *s);
const char *auth_session_mech(const struct auth_session *s);
const char *auth_session_reason(const struct auth_session *s);
enum sasl_fail_kind auth_session_fail_kind(const struct auth_session *s);

/*
 * Check a plaintext login (IMAP LOGIN). Returns 1 with *account_r (points
 * into the config; valid until a reload), 0 failed (*kind_r says why), -1
 * server error.
 */
int auth_password(struct auth *a, const char *username, const char *password, const char **account_r,
    enum sasl_fail_kind *kind_r);

/* True when the peer had too many failed logins this minute: refuse at once. */
bool auth_blocked(struct auth *a, const struct conn_info *ci);

/*
 * Record a failed login: counts it for the peer's IP and logs one line
 *   l=info m="authentication failed" pkg=<proto> cid=.. remote=<ip> username=.. mech=.. reason=..
 * Returns the delay (ms) to apply before the failure reply: the configured
 * AuthFailureDelay, 0 for SASL_FAIL_NO_SECRET.
 */
int64_t auth_failed(struct auth *a, const struct conn_info *ci, const char *proto, const char *mech,
    const char *username, enum sasl_fail_kind kind, const char *reason);
void auth_succeeded(struct auth *a, const struct conn_info *ci, const char *proto, const char *mech,
    const char *account);

#endif

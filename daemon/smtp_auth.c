/*
 * smtp_auth: STARTTLS (RFC 3207) and AUTH (RFC 4954) for the SMTP server.
 * The SASL exchanges are daemon/auth.h's, shared with IMAP; this file only
 * frames them in SMTP: 334 challenges, 235 on success, and the failed-auth
 * delay from auth_failed applied with a timer before the 535. SCRAM's
 * server-final message goes out as one more 334 challenge and the client's
 * empty response completes the exchange. Client bytes of an exchange are
 * never logged.
 */
#define _GNU_SOURCE 1
#include "daemon/smtp_private.h"

#include <string.h>

#include <event2/buffer.h>
#include <event2/bufferevent_ssl.h>
#include <openssl/err.h>

#include "daemon/log.h"
#include "daemon/tls.h"

/* Room for any challenge in base64 (SASL messages are at most SASL_MAX_MESSAGE). */
#define SMTP_AUTH_OUT_MAX (2 * SASL_MAX_MESSAGE)

bool
smtp_starttls_offered(const struct smtp_conn *c)
{
	const struct conn_info *ci = c->ci;

	if ((c->flags & SMTP_F_TLS) || ci->tls == NULL)
		return false;
	return !(ci->svc == SVC_SMTP && ci->listener != NULL && ci->listener->svc[SVC_SMTP].no_starttls);
}

/* Plaintext mechanisms and AUTH itself need TLS unless the listener says otherwise. */
static bool
auth_allowed(const struct smtp_conn *c)
{
	const struct conn_info *ci = c->ci;

	return (c->flags & SMTP_F_TLS) || (ci->listener != NULL && ci->listener->svc[ci->svc].no_require_starttls);
}

bool
smtp_auth_offered(const struct smtp_conn *c)
{
	return (c->flags & SMTP_F_SUBMIT) && !(c->flags & SMTP_F_AUTHED) && auth_allowed(c);
}

/* ---- STARTTLS ---- */

void
smtp_cmd_starttls(struct smtp_conn *c, struct smtp_cmd *cmd)
{
	if (c->flags & SMTP_F_TLS) {
		smtp_reply(c, 503, "5.5.1", "already using TLS");
		smtp_error(c);
		return;
	}
	if (!smtp_starttls_offered(c)) {
		smtp_reply(c, 454, "4.7.0", "TLS not available");
		smtp_error(c);
		return;
	}
	/* Anything pipelined after STARTTLS was sent in plaintext: never let it
	 * count as sent under TLS (CVE-2011-0411). */
	struct evbuffer *in = bufferevent_get_input(c->bev);
	evbuffer_drain(in, evbuffer_get_length(in));
	smtp_reply(c, 220, "2.0.0", "ready to start TLS");
	c->flags |= SMTP_F_STARTTLS;
	smtp_set_state(c, SMTP_ST_BUSY);
	bufferevent_disable(c->bev, EV_READ);
}

static void
tls_event(struct bufferevent *bev, short what, void *arg)
{
	struct smtp_conn *c = arg;

	if (what & BEV_EVENT_CONNECTED) {
		c->ci->ssl = bufferevent_openssl_get_ssl(bev);
		c->flags |= SMTP_F_TLS;
		/* RFC 3207 4.2: forget everything learned before TLS, a plaintext
		 * AUTH (a listener with NoRequireSTARTTLS allows one) included. */
		c->flags &= ~(SMTP_F_ESMTP | SMTP_F_AUTHED);
		free(c->account);
		c->account = NULL;
		smtp_txn_free(&c->txn);
		free(c->helo);
		c->helo = NULL;
		log_debug(SMTP_PKG, c->ci->cid, "starttls done", "version", SSL_get_version(c->ci->ssl));
		smtp_session_setcb(c);
		smtp_resume(c, SMTP_ST_INIT);
		return;
	}
	char e[256] = "";
	unsigned long oe = bufferevent_get_openssl_error(bev);
	if (oe != 0)
		ERR_error_string_n(oe, e, sizeof(e));
	else
		snprintf(e, sizeof(e), "%s", (what & BEV_EVENT_TIMEOUT) ? "timeout" : (what & BEV_EVENT_EOF) ? "eof" : "error");
	log_info(SMTP_PKG, c->ci->cid, "starttls handshake failed", "reason", e, "remote", c->ci->remote_ip);
	smtp_conn_release(c);
}

void
smtp_starttls_go(struct smtp_conn *c)
{
	struct evbuffer *in = bufferevent_get_input(c->bev);
	struct bufferevent *tb;
	SSL *ssl;

	c->flags &= ~SMTP_F_STARTTLS;
	ssl = tls_ssl_new(c->ci->tls, TLS_ALPN_NONE);
	if (ssl == NULL) {
		log_error(SMTP_PKG, c->ci->cid, "cannot create TLS session");
		smtp_conn_release(c);
		return;
	}
	evbuffer_drain(in, evbuffer_get_length(in));
	bufferevent_setcb(c->bev, NULL, NULL, NULL, NULL);
	tb = bufferevent_openssl_filter_new(server_base(c->srv), c->bev, ssl, BUFFEREVENT_SSL_ACCEPTING,
	    BEV_OPT_CLOSE_ON_FREE);
	if (tb == NULL) {
		SSL_free(ssl);
		log_error(SMTP_PKG, c->ci->cid, "cannot start TLS");
		smtp_session_setcb(c);
		smtp_conn_release(c);
		return;
	}
	bufferevent_openssl_set_allow_dirty_shutdown(tb, 1);
	/* The filter moves everything it encrypts into the socket bufferevent
	 * unless that has a high mark: with one, the filter's own output (which
	 * process() watches) stays full while the client does not read. */
	bufferevent_setwatermark(c->bev, EV_WRITE, 0, 64 * 1024);
	c->bev = tb;
	smtp_session_setcb(c);
	bufferevent_setcb(tb, NULL, NULL, tls_event, c);
	bufferevent_enable(tb, EV_READ | EV_WRITE);
}

/* ---- AUTH ---- */

static void
auth_done(struct smtp_conn *c)
{
	auth_session_free(&c->auth);
	c->auth_final = false;
}

static void
auth_fail_reply(struct smtp_conn *c)
{
	if (c->auth_fail_code == 501)
		smtp_reply(c, 501, "5.5.2", "invalid base64 or protocol error, authentication failed");
	else
		smtp_reply(c, 535, "5.7.8", "authentication failed");
	if (smtp_error(c))
		return;
	smtp_resume(c, SMTP_ST_READY);
}

/* Count and log a failure, then answer after the configured delay. */
static void
auth_fail(struct smtp_conn *c, enum sasl_fail_kind kind, const char *reason)
{
	struct auth *au = server_auth(c->srv);
	int64_t delay = auth_failed(au, c->ci, SMTP_PKG, auth_session_mech(c->auth), auth_session_username(c->auth),
	    kind, reason);

	c->auth_fail_code = kind == SASL_FAIL_PROTOCOL ? 501 : 535;
	auth_done(c);
	smtp_set_state(c, SMTP_ST_BUSY);
	bufferevent_disable(c->bev, EV_READ);
	smtp_defer(c, delay, auth_fail_reply);
}

static void
auth_success(struct smtp_conn *c)
{
	const char *account = auth_session_account(c->auth);

	free(c->account);
	c->account = xstrdup(account);
	c->flags |= SMTP_F_AUTHED;
	auth_succeeded(server_auth(c->srv), c->ci, SMTP_PKG, auth_session_mech(c->auth), account);
	auth_done(c);
	smtp_set_state(c, SMTP_ST_READY);
	smtp_reply(c, 235, "2.7.0", "authentication successful");
}

static void
auth_step_reply(struct smtp_conn *c, const char *b64, size_t len)
{
	struct mbuf out;
	enum sasl_result r;

	mbuf_init(&out, SMTP_AUTH_OUT_MAX);
	r = auth_step(c->auth, b64, len, &out);
	switch (r) {
	case SASL_CONTINUE:
		evbuffer_add_printf(bufferevent_get_output(c->bev), "334 %s\r\n", out.len ? out.data : "");
		smtp_set_state(c, SMTP_ST_AUTH);
		break;
	case SASL_SUCCESS:
		if (out.len > 0) {
			/* SCRAM server-final: one more challenge, an empty answer completes. */
			evbuffer_add_printf(bufferevent_get_output(c->bev), "334 %s\r\n", out.data);
			c->auth_final = true;
			smtp_set_state(c, SMTP_ST_AUTH);
		} else {
			auth_success(c);
		}
		break;
	case SASL_FAIL:
		auth_fail(c, auth_session_fail_kind(c->auth), auth_session_reason(c->auth));
		break;
	case SASL_ERROR:
	default:
		log_error(SMTP_PKG, c->ci->cid, "authentication error", "mech", auth_session_mech(c->auth), "err",
		    auth_session_reason(c->auth));
		auth_done(c);
		smtp_set_state(c, SMTP_ST_READY);
		smtp_reply(c, 454, "4.7.0", "temporary authentication failure");
		break;
	}
	mbuf_clear(&out);
}

void
smtp_cmd_auth(struct smtp_conn *c, struct smtp_cmd *cmd)
{
	struct auth *au = server_auth(c->srv);
	char mech[64];

	if (!(c->flags & SMTP_F_SUBMIT)) {
		smtp_reply(c, 502, "5.5.1", "AUTH not offered on this port");
		smtp_error(c);
		return;
	}
	if (c->flags & SMTP_F_AUTHED) {
		smtp_reply(c, 503, "5.5.1", "already authenticated");
		smtp_error(c);
		return;
	}
	if (!auth_allowed(c)) {
		smtp_reply(c, 530, "5.7.0", "must issue a STARTTLS command first");
		smtp_error(c);
		return;
	}
	if (au == NULL) {
		smtp_reply(c, 454, "4.7.0", "authentication not available");
		return;
	}
	if (auth_blocked(au, c->ci)) {
		log_info(SMTP_PKG, c->ci->cid, "too many failed logins, refusing", "remote", c->ci->remote_ip);
		smtp_close_after(c, 421, "4.7.0", "too many failed authentication attempts, try again later");
		return;
	}
	if (cmd->auth.mech.len < sizeof(mech)) {
		snprintf(mech, sizeof(mech), "%.*s", (int)cmd->auth.mech.len, cmd->auth.mech.p);
		c->auth = auth_session_new(au, mech, (c->flags & SMTP_F_TLS) ? c->ci->ssl : NULL, auth_allowed(c));
	}
	if (c->auth == NULL) {
		smtp_reply(c, 504, "5.5.4", "mechanism not supported");
		smtp_error(c);
		return;
	}
	if (!cmd->auth.has_initial)
		auth_step_reply(c, NULL, 0);
	else if (cmd->auth.initial_empty)
		auth_step_reply(c, "", 0);
	else
		auth_step_reply(c, cmd->auth.initial.p, cmd->auth.initial.len);
}

void
smtp_auth_line(struct smtp_conn *c, const char *line, size_t len)
{
	int r = smtp_auth_response_check(line, len);

	if (r == 0) {
		auth_done(c);
		smtp_set_state(c, SMTP_ST_READY);
		smtp_reply(c, 501, "5.0.0", "authentication cancelled");
		return;
	}
	if (r < 0) {
		auth_fail(c, SASL_FAIL_PROTOCOL, "invalid base64 in response");
		return;
	}
	if (c->auth_final) {
		if (len != 0) {
			auth_fail(c, SASL_FAIL_PROTOCOL, "non-empty response after server-final");
			return;
		}
		auth_success(c);
		return;
	}
	auth_step_reply(c, line, len);
}

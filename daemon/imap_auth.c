/*
 * imap_auth: CAPABILITY, STARTTLS, LOGIN and AUTHENTICATE (SASL-IR), on the
 * shared SASL code of auth.h. A failure reply is delayed by what auth_failed
 * says (an evtimer; the connection stays busy meanwhile); a mechanism the
 * account has no secret for fails without the delay.
 */
#define _GNU_SOURCE 1
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/bufferevent_ssl.h>

#include "daemon/auth.h"
#include "daemon/imap_private.h"
#include "daemon/log.h"
#include "daemon/tls.h"

#define PKG "imap"

static bool
allow_plaintext(struct imap_conn *c)
{
	return c->ssl != NULL || c->ci->listener->svc[SVC_IMAP].no_require_starttls;
}

const char *
imap_capabilities(struct imap_conn *c, struct mbuf *b)
{
	mbuf_reset(b);
	mbuf_adds(b, "IMAP4rev2 IMAP4rev1 ENABLE LITERAL+ IDLE SASL-IR BINARY UNSELECT UIDPLUS ESEARCH SEARCHRES "
	    "MOVE UTF8=ACCEPT LIST-EXTENDED SPECIAL-USE LIST-STATUS ");
	if (c->state == IMAP_ST_NOTAUTH) {
		if (c->ssl == NULL && c->ci->tls != NULL)
			mbuf_adds(b, "STARTTLS ");
		if (!allow_plaintext(c))
			mbuf_adds(b, "LOGINDISABLED ");
		size_t before = b->len;
		auth_mechs(c->ssl, allow_plaintext(c), false, "AUTH=", b);
		if (b->len > before)
			mbuf_adds(b, " ");
		mbuf_printf(b, "ID APPENDLIMIT=%llu CONDSTORE QRESYNC STATUS=SIZE QUOTA QUOTA=RES-STORAGE NAMESPACE",
		    (unsigned long long)c->append_limit);
		return b->data;
	}
	mbuf_printf(b, "AUTH=SCRAM-SHA-256-PLUS AUTH=SCRAM-SHA-256 AUTH=SCRAM-SHA-1-PLUS AUTH=SCRAM-SHA-1 "
	    "AUTH=CRAM-MD5 ID APPENDLIMIT=%llu CONDSTORE QRESYNC STATUS=SIZE QUOTA QUOTA=RES-STORAGE AUTH=PLAIN "
	    "NAMESPACE", (unsigned long long)c->append_limit);
	return b->data;
}

int
imap_cmd_capability(struct imap_conn *c, struct imap_args *args)
{
	struct mbuf b;

	if (imap_args_end(args) < 0) {
		imap_bad(c, "%s", args->err);
		return IMAP_CMD_DONE;
	}
	mbuf_init(&b, 4096);
	imap_printf(c, "* CAPABILITY %s\r\n", imap_capabilities(c, &b));
	mbuf_clear(&b);
	imap_ok(c, "CAPABILITY completed");
	return IMAP_CMD_DONE;
}

int
imap_cmd_starttls(struct imap_conn *c, struct imap_args *args)
{
	if (imap_args_end(args) < 0) {
		imap_bad(c, "%s", args->err);
		return IMAP_CMD_DONE;
	}
	if (c->ssl != NULL) {
		imap_bad(c, "tls already active");
		return IMAP_CMD_DONE;
	}
	if (c->ci->tls == NULL) {
		imap_no(c, "STARTTLS not available: no TLS certificate configured");
		return IMAP_CMD_DONE;
	}
	SSL *ssl = tls_ssl_new(c->ci->tls, TLS_ALPN_NONE);
	if (ssl == NULL) {
		imap_serverbug(c, "cannot create tls session", "");
		return IMAP_CMD_DONE;
	}
	imap_ok(c, "begin TLS now");
	/* Whatever the client pipelined after STARTTLS was sent in the clear: drop it. */
	struct evbuffer *in = bufferevent_get_input(c->bev);
	evbuffer_drain(in, evbuffer_get_length(in));
	/* Our callbacks move to the filter; take them before it replaces them. */
	bufferevent_data_cb rcb, wcb;
	bufferevent_event_cb ecb;
	void *cbarg;
	bufferevent_getcb(c->bev, &rcb, &wcb, &ecb, &cbarg);
	struct bufferevent *tb = bufferevent_openssl_filter_new(server_base(c->srv), c->bev, ssl,
	    BUFFEREVENT_SSL_ACCEPTING, BEV_OPT_CLOSE_ON_FREE);
	if (tb == NULL) {
		SSL_free(ssl);
		log_error(PKG, c->ci->cid, "cannot create tls bufferevent");
		imap_close(c);
		return IMAP_CMD_DONE;
	}
	bufferevent_openssl_set_allow_dirty_shutdown(tb, 1);
	c->bev = tb;
	c->ssl = ssl;
	bufferevent_setcb(tb, rcb, wcb, ecb, cbarg);
	bufferevent_enable(tb, EV_READ | EV_WRITE);
	log_debug(PKG, c->ci->cid, "starttls");
	return IMAP_CMD_DONE;
}

/* Logged in as account: set up the session. */
static void
logged_in(struct imap_conn *c, const char *account, const char *mech)
{
	const struct config *cfg = server_config(c->srv);
	const struct config_account *acc = config_account_find(cfg, account);
	struct mbuf b;

	auth_succeeded(server_auth(c->srv), c->ci, PKG, mech, account);
	c->account = xstrdup(account);
	c->sa = store_account_get(server_store(c->srv), account);
	if (acc != NULL && acc->max_message_size > 0)
		c->append_limit = (uint64_t)acc->max_message_size;
	c->tmpdir = xasprintf("%s/tmp", cfg->data_dir);
	imap_set_state(c, IMAP_ST_AUTH);
	mbuf_init(&b, 4096);
	imap_ok(c, "[CAPABILITY %s] authenticated", imap_capabilities(c, &b));
	mbuf_clear(&b);
}

/* Reply with failure after the delay auth_failed chose; the command ends then. */
static int
failed(struct imap_conn *c, const char *mech, const char *username, enum sasl_fail_kind kind, const char *reason)
{
	int64_t ms = auth_failed(server_auth(c->srv), c->ci, PKG, mech, username, kind, reason);
	char *line = xasprintf("%s NO [AUTHENTICATIONFAILED] authentication failed (cid %llx)\r\n", c->tag,
	    (unsigned long long)c->ci->cid);

	c->mode = IMAP_MODE_COMMAND;
	if (ms <= 0) {
		imap_write(c, line, strlen(line));
		free(line);
		return IMAP_CMD_DONE;
	}
	free(c->delayed_reply);
	c->delayed_reply = line;
	c->auth_delay = true;
	struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
	evtimer_add(c->ev_timer, &tv);
	return IMAP_CMD_ASYNC;
}

static bool
auth_ready(struct imap_conn *c)
{
	if (server_auth(c->srv) == NULL || server_store(c->srv) == NULL) {
		imap_no(c, "[UNAVAILABLE] authentication not available");
		return false;
	}
	if (auth_blocked(server_auth(c->srv), c->ci)) {
		imap_no(c, "[UNAVAILABLE] too many failed logins, try again later");
		return false;
	}
	return true;
}

int
imap_cmd_login(struct imap_conn *c, struct imap_args *args)
{
	const char *user, *pass, *account = NULL;
	size_t ulen, plen;
	enum sasl_fail_kind kind = SASL_FAIL_NONE;

	if (imap_args_astring(args, &user, &ulen) < 0 || imap_args_astring(args, &pass, &plen) < 0 ||
	    imap_args_end(args) < 0) {
		imap_bad(c, "%s", args->err);
		return IMAP_CMD_DONE;
	}
	if (!allow_plaintext(c)) {
		imap_no(c, "[PRIVACYREQUIRED] LOGIN is disabled without TLS, use STARTTLS first");
		return IMAP_CMD_DONE;
	}
	if (!auth_ready(c))
		return IMAP_CMD_DONE;
	if (strlen(user) != ulen || strlen(pass) != plen)
		return failed(c, "LOGIN", NULL, SASL_FAIL_PROTOCOL, "nul in credentials");
	int r = auth_password(server_auth(c->srv), user, pass, &account, &kind);
	if (r < 0) {
		imap_serverbug(c, "checking password", "auth_password failed");
		return IMAP_CMD_DONE;
	}
	if (r == 0)
		return failed(c, "LOGIN", user, kind, "bad credentials");
	logged_in(c, account, "LOGIN");
	return IMAP_CMD_DONE;
}

/* Handle one auth_step result. */
static int
auth_result(struct imap_conn *c, enum sasl_result r, struct mbuf *out)
{
	switch (r) {
	case SASL_CONTINUE:
		imap_printf(c, "+ %s\r\n", out->data != NULL ? out->data : "");
		c->mode = IMAP_MODE_AUTH_LINE;
		return IMAP_CMD_ASYNC;
	case SASL_SUCCESS:
		if (out->len > 0) {
			/* Server-final data (SCRAM): send it, the client answers with an empty line. */
			imap_printf(c, "+ %s\r\n", out->data);
			c->mode = IMAP_MODE_AUTH_LINE;
			c->auth_final = true;
			return IMAP_CMD_ASYNC;
		}
		{
			char *acct = xstrdup(auth_session_account(c->as));
			char *mech = xstrdup(auth_session_mech(c->as));
			auth_session_free(&c->as);
			c->mode = IMAP_MODE_COMMAND;
			logged_in(c, acct, mech);
			free(acct);
			free(mech);
		}
		return IMAP_CMD_DONE;
	case SASL_FAIL: {
		const char *u = auth_session_username(c->as);
		char *user = u != NULL ? xstrdup(u) : NULL;
		char *mech = xstrdup(auth_session_mech(c->as));
		int rr = failed(c, mech, user, auth_session_fail_kind(c->as), auth_session_reason(c->as));
		free(user);
		free(mech);
		auth_session_free(&c->as);
		return rr;
	}
	case SASL_ERROR:
	default:
		log_error(PKG, c->ci->cid, "authentication error", "mech", auth_session_mech(c->as), "reason",
		    auth_session_reason(c->as));
		auth_session_free(&c->as);
		c->mode = IMAP_MODE_COMMAND;
		imap_no(c, "[SERVERBUG] internal error");
		return IMAP_CMD_DONE;
	}
}

int
imap_cmd_authenticate(struct imap_conn *c, struct imap_args *args)
{
	const char *mech, *ir = NULL;
	size_t mlen, irlen = 0;

	if (imap_args_atom(args, &mech, &mlen) < 0) {
		imap_bad(c, "%s", args->err);
		return IMAP_CMD_DONE;
	}
	if (imap_args_peek(args) != NULL && imap_args_atom(args, &ir, &irlen) < 0) {
		imap_bad(c, "%s", args->err);
		return IMAP_CMD_DONE;
	}
	if (imap_args_end(args) < 0) {
		imap_bad(c, "%s", args->err);
		return IMAP_CMD_DONE;
	}
	if (!auth_ready(c))
		return IMAP_CMD_DONE;
	char up[32];
	size_t i;
	for (i = 0; i < mlen && i < sizeof(up) - 1; i++)
		up[i] = (mech[i] >= 'a' && mech[i] <= 'z') ? mech[i] - 32 : mech[i];
	up[i] = 0;
	c->as = auth_session_new(server_auth(c->srv), up, c->ssl, allow_plaintext(c));
	if (c->as == NULL) {
		bool plain = strcmp(up, "PLAIN") == 0 || strcmp(up, "LOGIN") == 0;
		if (plain && !allow_plaintext(c))
			imap_no(c, "[PRIVACYREQUIRED] plaintext authentication requires TLS");
		else
			imap_no(c, "[CANNOT] unsupported authentication mechanism");
		return IMAP_CMD_DONE;
	}
	if (ir != NULL && irlen == 1 && ir[0] == '=') {
		ir = "";
		irlen = 0;
	}
	struct mbuf out;
	mbuf_init(&out, 64 * 1024);
	enum sasl_result r = auth_step(c->as, ir, irlen, &out);
	int rr = auth_result(c, r, &out);
	mbuf_clear(&out);
	return rr;
}

void
imap_auth_line(struct imap_conn *c, const char *line, size_t len)
{
	if (len == 1 && line[0] == '*') {
		auth_session_free(&c->as);
		c->auth_final = false;
		c->mode = IMAP_MODE_COMMAND;
		imap_bad(c, "authentication cancelled");
		imap_cmd_finish(c);
		return;
	}
	if (c->auth_final) {
		c->auth_final = false;
		if (len != 0) {
			enum sasl_fail_kind k = SASL_FAIL_PROTOCOL;
			char *mech = xstrdup(auth_session_mech(c->as));
			auth_session_free(&c->as);
			if (failed(c, mech, NULL, k, "data after server-final") == IMAP_CMD_DONE)
				imap_cmd_finish(c);
			free(mech);
			return;
		}
		char *acct = xstrdup(auth_session_account(c->as));
		char *mech = xstrdup(auth_session_mech(c->as));
		auth_session_free(&c->as);
		c->mode = IMAP_MODE_COMMAND;
		logged_in(c, acct, mech);
		free(acct);
		free(mech);
		imap_cmd_finish(c);
		return;
	}
	struct mbuf out;
	mbuf_init(&out, 64 * 1024);
	enum sasl_result r = auth_step(c->as, line, len, &out);
	int rr = auth_result(c, r, &out);
	mbuf_clear(&out);
	if (rr == IMAP_CMD_DONE)
		imap_cmd_finish(c);
}

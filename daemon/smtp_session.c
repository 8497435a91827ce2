/*
 * smtp_session: SMTP connections, the command loop and the simple commands.
 *
 * Design note. Input is processed strictly in order: a command whose answer
 * needs work elsewhere (delivery on a storage thread, the failed-auth delay,
 * a quota look-up, the TLS handshake) puts the session in SMTP_ST_BUSY and
 * disables reading; pipelined commands wait in the input buffer until
 * smtp_resume. A storage job holds a pointer to the conn (SMTP_F_JOB): when
 * the client goes away meanwhile the conn is only marked (SMTP_F_DEAD) and
 * freed by the job's completion. The conn itself is always freed from a
 * deferred event, never inside a bufferevent callback that may still use it.
 * Idle memory is the conn struct and libevent's buffers: the command parse
 * struct and reply buffers live only while a command is handled.
 *
 * Timeouts, per phase (RFC 5321 4.5.3.2). Waiting for a command is a
 * deadline from the moment the input holds no complete line, not an
 * inactivity timer, so a line dribbled in a byte at a time still ends on
 * time. Message data may pause up to SMTPDataTimeout between bytes (a
 * bufferevent read timeout) and takes at most SMTPMessageTimeout in all.
 * Until the first MAIL or a successful AUTH the whole session is capped by
 * SMTPSetupTimeout. A reply the client does not take times out as a
 * bufferevent write timeout; no 421 can reach such a client, so it is just
 * closed. While work is pending (SMTP_ST_BUSY) the deadlines wait: a storage
 * job is never raced, and the time after the final "." (delivery) is the
 * server's, which clients allow 10 minutes (4.5.3.2.6). Whatever ends a
 * session in a timeout drops the transaction, so its spool file is removed
 * and nothing half-received is delivered.
 *
 * Junk commands. Each command must come within SMTPTimeout, so NOOP, RSET,
 * VRFY, EXPN, HELP and a repeated EHLO/HELO could hold a connection slot
 * forever once the setup cap is lifted. They are counted (c->njunk), and
 * the one past SMTPMaxJunkCommands gets a 421 instead of its answer. The
 * count starts over when the data of a message with accepted recipients
 * begins, so a sender that reuses its connection is never cut: whatever
 * comes of the message, the client has sent one (a full MAIL, RCPT, DATA
 * or BDAT round), which a loop of junk does not. The EHLO required after
 * STARTTLS is no repeat: the TLS handshake forgets the first one.
 */
#define _GNU_SOURCE 1
#include "daemon/smtp_private.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <event2/buffer.h>

#include "daemon/idn.h"
#include "daemon/log.h"
#include "daemon/resolve.h"
#include "maildir/maildir.h"

/* The reply of any command fits; an EHLO is the longest. */
#define SMTP_REPLY_MAX 8192
/* Replies waiting for a client that does not read: above this, stop reading
 * commands until the output has drained (write_cb resumes). */
#define SMTP_OUT_HIGH (64 * 1024)

static struct smtp_conn *conns; /* every live connection (loop thread) */
static size_t nconns;

static const char *const state_names[] = {
	"init", "ready", "mail", "rcpt", "data", "bdat", "auth", "busy", "closing",
};

/* By enum smtp_phase: the log's name and the 421 text. */
static const char *const phase_names[] = {"none", "setup", "command", "auth", "data", "message", "write"};
static const char *const phase_texts[] = {
	"timeout, closing connection",
	"timeout, no mail transaction started in time, closing connection",
	"timeout waiting for a command, closing connection",
	"timeout waiting for the authentication response, closing connection",
	"timeout waiting for message data, closing connection",
	"timeout, message data took too long, closing connection",
	"timeout, closing connection",
};
_Static_assert(ARRAY_LEN(phase_names) == SMTP_PH_WRITE + 1 && ARRAY_LEN(phase_texts) == SMTP_PH_WRITE + 1,
    "a name and a text for each enum smtp_phase");

static void set_bev_timeouts(struct smtp_conn *c);

static bool
state_reads_lines(enum smtp_state st)
{
	return st <= SMTP_ST_RCPT || st == SMTP_ST_AUTH;
}

static bool
state_is_data(enum smtp_state st)
{
	return st == SMTP_ST_DATA || st == SMTP_ST_BDAT;
}

const struct config *
smtp_cfg(const struct smtp_conn *c)
{
	return server_config(c->srv);
}

void
smtp_set_state(struct smtp_conn *c, enum smtp_state st)
{
	if (c->state != st)
		log_trace(SMTP_PKG, c->ci->cid, "state", "from", state_names[c->state], "to", state_names[st]);
	bool data_changed = state_is_data(c->state) != state_is_data(st);
	c->state = st;
	/* Message data has its own inactivity timeout. */
	if (data_changed)
		set_bev_timeouts(c);
}

int
smtp_reply(struct smtp_conn *c, int code, const char *ecode, const char *fmt, ...)
{
	char text[2048], suffix[48] = "";
	struct mbuf out;
	va_list ap;
	int r;

	va_start(ap, fmt);
	r = vsnprintf(text, sizeof(text), fmt, ap);
	va_end(ap);
	if (r < 0)
		text[0] = '\0';
	if (code >= 400)
		snprintf(suffix, sizeof(suffix), "(cid %llx)", (unsigned long long)c->ci->cid);
	mbuf_init(&out, SMTP_REPLY_MAX);
	r = smtp_replyf(&out, code, ecode, suffix, "%s", text);
	if (r > 0)
		evbuffer_add(bufferevent_get_output(c->bev), out.data, out.len);
	mbuf_clear(&out);
	return r;
}

void
smtp_close_after(struct smtp_conn *c, int code, const char *ecode, const char *text)
{
	if (!(c->flags & SMTP_F_FREEING)) {
		/* A pending auth-failure reply must not follow the goodbye. */
		evtimer_del(c->ev);
		c->ev_fn = NULL;
	}
	evtimer_del(c->tmo_ev); /* the write timeout bounds the flush */
	smtp_reply(c, code, ecode, "%s", text);
	smtp_set_state(c, SMTP_ST_CLOSING);
	bufferevent_disable(c->bev, EV_READ);
	bufferevent_enable(c->bev, EV_WRITE);
}

bool
smtp_error(struct smtp_conn *c)
{
	if (++c->nerrors < (unsigned)smtp_cfg(c)->st.limits.smtp_max_errors)
		return false;
	log_info(SMTP_PKG, c->ci->cid, "too many errors, closing", "remote", c->ci->remote_ip);
	smtp_close_after(c, 421, "4.7.0", "too many errors, closing connection");
	return true;
}

void
smtp_txn_free(struct smtp_txn **tp)
{
	struct smtp_txn *t = *tp;

	if (t == NULL)
		return;
	for (size_t i = 0; i < t->nrcpts; i++) {
		free(t->rcpts[i].addr);
		free(t->rcpts[i].localpart);
		free(t->rcpts[i].domain);
		free(t->rcpts[i].account);
	}
	free(t->rcpts);
	free(t->mail_from);
	smtp_verify_free(&t->verify); /* before the spool file: its DKIM check reads it */
	maildir_writer_free(&t->w);
	mbuf_clear(&t->header);
	free(t);
	*tp = NULL;
}

static void
ev_cb(evutil_socket_t fd, short what, void *arg)
{
	struct smtp_conn *c = arg;
	void (*fn)(struct smtp_conn *) = c->ev_fn;

	c->ev_fn = NULL;
	if (fn != NULL)
		fn(c);
}

void
smtp_defer(struct smtp_conn *c, int64_t ms, void (*fn)(struct smtp_conn *c))
{
	struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000};

	if (c->flags & SMTP_F_FREEING)
		return;
	c->ev_fn = fn;
	evtimer_add(c->ev, &tv);
}

static void
conn_free_now(struct smtp_conn *c)
{
	/* After STARTTLS c->bev is a filter: its last bytes may still sit in
	 * the socket bufferevent below it, which the free would drop. */
	struct bufferevent *under = bufferevent_get_underlying(c->bev);
	if (under != NULL && evbuffer_get_length(bufferevent_get_output(under)) > 0 && c->linger++ < 40) {
		struct timeval tv = {0, 50000};
		c->ev_fn = conn_free_now;
		evtimer_add(c->ev, &tv);
		return;
	}
	if (c->prev)
		c->prev->next = c->next;
	else
		conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	nconns--;
	log_debug(SMTP_PKG, c->ci->cid, "connection closed", "remote", c->ci->remote_ip);
	smtp_deliv_free(&c->deliv);
	smtp_txn_free(&c->txn);
	auth_session_free(&c->auth);
	free(c->helo);
	free(c->account);
	bufferevent_free(c->bev);
	event_free(c->ev);
	event_free(c->tmo_ev);
	server_conn_done(c->srv, c->ci);
	free(c);
}

void
smtp_conn_release(struct smtp_conn *c)
{
	evtimer_del(c->tmo_ev);
	if (c->flags & SMTP_F_JOB) {
		c->flags |= SMTP_F_DEAD;
		bufferevent_disable(c->bev, EV_READ | EV_WRITE);
		return;
	}
	if (c->flags & SMTP_F_FREEING)
		return;
	/* Writing stays enabled: a TLS filter still flushes what is pending. */
	bufferevent_disable(c->bev, EV_READ);
	bufferevent_setcb(c->bev, NULL, NULL, NULL, NULL);
	smtp_defer(c, 0, conn_free_now);
	c->flags |= SMTP_F_FREEING;
}

/* ---- simple commands ---- */

static unsigned
parse_ext(const struct smtp_conn *c)
{
	unsigned ext = SMTP_EXT_SIZE | SMTP_EXT_8BITMIME | SMTP_EXT_SMTPUTF8 | SMTP_EXT_DSN | SMTP_EXT_CHUNKING;

	if (!(c->flags & SMTP_F_ESMTP))
		return 0;
	if (c->flags & SMTP_F_SUBMIT)
		ext |= SMTP_EXT_AUTH;
	if (c->flags & SMTP_F_TLS)
		ext |= SMTP_EXT_REQUIRETLS;
	return ext;
}

static void
cmd_helo(struct smtp_conn *c, struct smtp_cmd *cmd)
{
	struct mbuf lines;
	bool ehlo = cmd->verb == SMTP_VERB_EHLO;
	char canon[IDN_BUFSIZE], ierr[160];

	/*
	 * An EHLO name must be a valid domain in either spelling (RFC 6531
	 * 3.7.1 allows U-labels); HELO clients send all sorts and are let be,
	 * as the parser does. The name is kept as sent for the Received header.
	 */
	if (ehlo && !(cmd->helo.flags & (SMTP_HELO_LITERAL | SMTP_HELO_BARE_IP | SMTP_HELO_INVALID)) &&
	    idn_domain_canon(cmd->helo.domain.p, cmd->helo.domain.len, canon, sizeof(canon), ierr, sizeof(ierr)) < 0) {
		smtp_reply(c, 501, "5.5.4", "EHLO name is not a valid domain name: %s", ierr);
		smtp_error(c);
		return;
	}
	smtp_txn_free(&c->txn);
	free(c->helo);
	c->helo = xstrndup(cmd->helo.domain.p, cmd->helo.domain.len);
	c->flags = ehlo ? (c->flags | SMTP_F_ESMTP) : (c->flags & ~SMTP_F_ESMTP);
	smtp_set_state(c, SMTP_ST_READY);
	if (!ehlo) {
		smtp_reply(c, 250, NULL, "%s", c->hostname);
		return;
	}
	/* RFC 8689: REQUIRETLS only on a TLS connection. AUTH only on submission. */
	mbuf_init(&lines, SMTP_REPLY_MAX);
	mbuf_printf(&lines, "%s\nPIPELINING\nSIZE %lld\n8BITMIME\nSMTPUTF8\nENHANCEDSTATUSCODES\n", c->hostname,
	    smtp_cfg(c)->st.limits.max_message_size);
	if (smtp_starttls_offered(c))
		mbuf_adds(&lines, "STARTTLS\n");
	mbuf_adds(&lines, "CHUNKING\n");
	if (smtp_auth_offered(c)) {
		mbuf_adds(&lines, "AUTH ");
		auth_mechs((c->flags & SMTP_F_TLS) ? c->ci->ssl : NULL,
		    (c->flags & SMTP_F_TLS) || c->ci->listener->svc[c->ci->svc].no_require_starttls, true, "", &lines);
		mbuf_adds(&lines, "\n");
	}
	if (c->flags & SMTP_F_TLS)
		mbuf_adds(&lines, "REQUIRETLS\n");
	mbuf_adds(&lines, "DSN");
	smtp_reply(c, 250, NULL, "%s", lines.data);
	mbuf_clear(&lines);
}

static void
cmd_mail(struct smtp_conn *c, struct smtp_cmd *cmd)
{
	const struct config *cfg = smtp_cfg(c);
	struct smtp_txn *t;
	char canon[IDN_BUFSIZE] = "", ierr[160];

	if ((c->flags & SMTP_F_SUBMIT) && !(c->flags & SMTP_F_AUTHED)) {
		smtp_reply(c, 530, "5.7.0", "authentication required");
		smtp_error(c);
		return;
	}
	if ((cmd->mail.seen & SMTP_PARAM_SIZE) && cmd->mail.size > (uint64_t)cfg->st.limits.max_message_size) {
		smtp_reply(c, 552, "5.3.4", "message too large, limit is %lld bytes", cfg->st.limits.max_message_size);
		return;
	}
	if (cmd->mail.requiretls && !(c->flags & SMTP_F_TLS)) {
		smtp_reply(c, 530, "5.7.10", "REQUIRETLS needs a TLS connection");
		return;
	}
	/*
	 * The sender's domain in its canonical form (idn.h); one libidn2
	 * refuses is a syntax error (5.1.7, as the parser's for MAIL).
	 */
	if (!(cmd->path.flags & (SMTP_ADDR_NULL | SMTP_ADDR_LITERAL)) &&
	    idn_domain_canon(cmd->path.domain.p, cmd->path.domain.len, canon, sizeof(canon), ierr, sizeof(ierr)) < 0) {
		smtp_reply(c, 501, "5.1.7", "invalid sender domain: %s", ierr);
		smtp_error(c);
		return;
	}
	/*
	 * Submission sender check: an authenticated account sends only as one
	 * of its own addresses (any localpart of a catch-all domain it owns;
	 * "<>" for bounces; the domain in either IDN spelling). localserve lets
	 * any address through, as the Go mox does.
	 */
	if ((c->flags & SMTP_F_SUBMIT) && !cfg->st.local_serve && !(cmd->path.flags & SMTP_ADDR_NULL)) {
		char *lp = xstrndup(cmd->path.localpart_canon.p, cmd->path.localpart_canon.len);
		struct resolved r;
		bool own = !(cmd->path.flags & SMTP_ADDR_LITERAL) && resolve_recipient(cfg, lp, canon, &r) > 0 &&
		    c->account != NULL && strcmp(r.account->name, c->account) == 0;
		free(lp);
		if (!own) {
			log_info(SMTP_PKG, c->ci->cid, "refused sender address not of the account", "account",
			    c->account ? c->account : "", "remote", c->ci->remote_ip);
			smtp_reply(c, 550, "5.7.1", "you may only send as addresses of your account");
			smtp_error(c);
			return;
		}
	}
	t = xcalloc(1, sizeof(*t));
	if (cmd->path.flags & SMTP_ADDR_NULL)
		t->mail_from = xstrdup("");
	else
		t->mail_from = xasprintf("%.*s@%.*s", (int)cmd->path.localpart_canon.len, cmd->path.localpart_canon.p,
		    (int)cmd->path.domain.len, cmd->path.domain.p);
	t->smtputf8 = cmd->mail.smtputf8;
	t->requiretls = cmd->mail.requiretls;
	t->declared_size = (cmd->mail.seen & SMTP_PARAM_SIZE) ? cmd->mail.size : 0;
	mbuf_init(&t->header, 0);
	c->txn = t;
	/* RFC 7208 2.4: the MAIL FROM identity, or HELO's for "<>"; the SMTP port only. */
	if (!(c->flags & SMTP_F_SUBMIT))
		smtp_verify_start(c, (cmd->path.flags & (SMTP_ADDR_NULL | SMTP_ADDR_LITERAL)) ? "" : canon);
	smtp_set_state(c, SMTP_ST_MAIL);
	log_debug(SMTP_PKG, c->ci->cid, "mail from", "from", t->mail_from);
	smtp_reply(c, 250, "2.1.0", "OK");
}

static void
cmd_rset(struct smtp_conn *c, struct smtp_cmd *cmd)
{
	smtp_txn_free(&c->txn);
	if (c->state != SMTP_ST_INIT)
		smtp_set_state(c, SMTP_ST_READY);
	smtp_reply(c, 250, "2.0.0", "OK");
}

static void
cmd_noop(struct smtp_conn *c, struct smtp_cmd *cmd)
{
	smtp_reply(c, 250, "2.0.0", "OK");
}

static void
cmd_quit(struct smtp_conn *c, struct smtp_cmd *cmd)
{
	char text[300];

	snprintf(text, sizeof(text), "%s closing connection", c->hostname);
	smtp_close_after(c, 221, "2.0.0", text);
}

static void
cmd_vrfy(struct smtp_conn *c, struct smtp_cmd *cmd)
{
	/* RFC 5321 3.5.3: do not reveal which addresses exist. */
	smtp_reply(c, 252, "2.5.0", "cannot verify user, but will accept message and attempt delivery");
}

static void
cmd_expn(struct smtp_conn *c, struct smtp_cmd *cmd)
{
	smtp_reply(c, 502, "5.5.1", "EXPN not implemented");
}

static void
cmd_help(struct smtp_conn *c, struct smtp_cmd *cmd)
{
	smtp_reply(c, 214, "2.0.0", "see RFC 5321; commands: EHLO HELO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY "
	    "HELP STARTTLS AUTH");
}

typedef void smtp_cmd_fn(struct smtp_conn *c, struct smtp_cmd *cmd);

/* struct cmd_entry.flags */
#define CMD_F_JUNK  0x1u /* moves no mail: counts against SMTPMaxJunkCommands */
#define CMD_F_GREET 0x2u /* EHLO/HELO: junk when the session was greeted already */

struct cmd_entry {
	enum smtp_verb verb;
	unsigned states; /* SMTP_STB bits where the verb is allowed */
	unsigned flags;  /* CMD_F_* */
	smtp_cmd_fn *fn;
	const char *bad_state; /* the 503 text otherwise */
};

#define ST_ANY (SMTP_STB(SMTP_ST_INIT) | SMTP_STB(SMTP_ST_READY) | SMTP_STB(SMTP_ST_MAIL) | SMTP_STB(SMTP_ST_RCPT))

static const struct cmd_entry cmd_table[] = {
	{SMTP_VERB_HELO, ST_ANY, CMD_F_GREET, cmd_helo, NULL},
	{SMTP_VERB_EHLO, ST_ANY, CMD_F_GREET, cmd_helo, NULL},
	{SMTP_VERB_MAIL, SMTP_STB(SMTP_ST_READY), 0, cmd_mail, "send EHLO first, or RSET to end the transaction"},
	{SMTP_VERB_RCPT, SMTP_STB(SMTP_ST_MAIL) | SMTP_STB(SMTP_ST_RCPT), 0, smtp_cmd_rcpt, "send MAIL first"},
	{SMTP_VERB_DATA, SMTP_STB(SMTP_ST_MAIL) | SMTP_STB(SMTP_ST_RCPT), 0, smtp_cmd_data, "send MAIL and RCPT first"},
	{SMTP_VERB_BDAT, ST_ANY, 0, smtp_cmd_bdat, NULL},
	{SMTP_VERB_RSET, ST_ANY, CMD_F_JUNK, cmd_rset, NULL},
	{SMTP_VERB_NOOP, ST_ANY, CMD_F_JUNK, cmd_noop, NULL},
	{SMTP_VERB_QUIT, ST_ANY, 0, cmd_quit, NULL},
	{SMTP_VERB_VRFY, ST_ANY, CMD_F_JUNK, cmd_vrfy, NULL},
	{SMTP_VERB_EXPN, ST_ANY, CMD_F_JUNK, cmd_expn, NULL},
	{SMTP_VERB_HELP, ST_ANY, CMD_F_JUNK, cmd_help, NULL},
	{SMTP_VERB_STARTTLS, SMTP_STB(SMTP_ST_INIT) | SMTP_STB(SMTP_ST_READY), 0, smtp_cmd_starttls,
	    "STARTTLS not allowed during a transaction"},
	{SMTP_VERB_AUTH, SMTP_STB(SMTP_ST_READY), 0, smtp_cmd_auth, "send EHLO first, AUTH not allowed in a transaction"},
};

/* Count a command that moves no mail; true when it is one too many and the
 * session is closing (reply sent). See "Junk commands" at the top. */
static bool
junk_command(struct smtp_conn *c, const struct cmd_entry *e)
{
	if (!(e->flags & CMD_F_JUNK) && !((e->flags & CMD_F_GREET) && c->helo != NULL))
		return false;
	if (++c->njunk <= (unsigned)smtp_cfg(c)->st.limits.smtp_max_junk_commands)
		return false;
	log_info(SMTP_PKG, c->ci->cid, "too many commands without mail, closing", "verb", smtp_verb_name(e->verb),
	    "remote", c->ci->remote_ip);
	smtp_close_after(c, 421, "4.7.0", "too many commands without mail, closing");
	return true;
}

static void
dispatch(struct smtp_conn *c, const char *line, size_t len)
{
	struct smtp_cmd *cmd = xmalloc(sizeof(*cmd));
	struct smtp_parse_opts opts = {parse_ext(c), c->txn != NULL && c->txn->smtputf8};
	const struct cmd_entry *e = NULL;

	if (smtp_cmd_parse(line, len, &opts, cmd) < 0) {
		if (cmd->verb == SMTP_VERB_UNKNOWN && !(c->flags & SMTP_F_GOODCMD)) {
			/* Not an SMTP client (an HTTP request, a port scanner): one answer, no log spam. */
			log_debug(SMTP_PKG, c->ci->cid, "first command not smtp, closing", "remote", c->ci->remote_ip);
			smtp_close_after(c, 500, "5.5.1", "unrecognized command, closing connection");
		} else {
			struct mbuf out;
			char suffix[48];
			snprintf(suffix, sizeof(suffix), "(cid %llx)", (unsigned long long)c->ci->cid);
			mbuf_init(&out, SMTP_REPLY_MAX);
			if (smtp_reply_cmd_error(&out, cmd, suffix) > 0)
				evbuffer_add(bufferevent_get_output(c->bev), out.data, out.len);
			mbuf_clear(&out);
			log_debug(SMTP_PKG, c->ci->cid, "bad command", "verb", smtp_verb_name(cmd->verb), "err", cmd->msg);
			smtp_error(c);
		}
		free(cmd);
		return;
	}
	c->flags |= SMTP_F_GOODCMD;
	for (size_t i = 0; i < ARRAY_LEN(cmd_table); i++)
		if (cmd_table[i].verb == cmd->verb)
			e = &cmd_table[i];
	if (e == NULL) {
		smtp_reply(c, 502, "5.5.1", "command not implemented");
		smtp_error(c);
	} else if (!(e->states & SMTP_STB(c->state))) {
		smtp_reply(c, 503, "5.5.1", "bad sequence of commands: %s", e->bad_state ? e->bad_state : "");
		smtp_error(c);
	} else if (!junk_command(c, e)) {
		log_trace(SMTP_PKG, c->ci->cid, "command", "verb", smtp_verb_name(cmd->verb));
		e->fn(c, cmd);
	}
	free(cmd);
}

/* ---- input ---- */

/* ---- timeouts ---- */

static struct timeval
ms_tv(int64_t ms)
{
	struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000};
	return tv;
}

static void
set_bev_timeouts(struct smtp_conn *c)
{
	const struct config_limits *lim = &smtp_cfg(c)->st.limits;
	/* Outside message data the command deadline (tmo_update) comes first;
	 * the read timeout there only bounds the TLS handshake. */
	struct timeval rd = ms_tv(state_is_data(c->state) ? lim->smtp_data_timeout_ms : lim->smtp_timeout_ms);
	struct timeval wr = ms_tv(lim->smtp_timeout_ms);

	bufferevent_set_timeouts(c->bev, &rd, &wr);
}

/* End the session for a timeout in phase ph: one log line, a 421 where the
 * client can still read it, and never a delivery of a partial message. */
static void
smtp_timeout(struct smtp_conn *c, enum smtp_phase ph)
{
	log_info(SMTP_PKG, c->ci->cid, "timeout, closing", "phase", phase_names[ph], "state", state_names[c->state],
	    "remote", c->ci->remote_ip);
	c->msg_deadline = 0;
	c->setup_deadline = 0;
	if (!(c->flags & SMTP_F_JOB))
		smtp_txn_free(&c->txn); /* removes the spool file */
	/* A client that does not read gets no reply; nor does one in the middle
	 * of the TLS handshake (the only busy wait without a deferred reply). */
	if (ph == SMTP_PH_WRITE || (c->state == SMTP_ST_BUSY && c->ev_fn == NULL)) {
		smtp_conn_release(c);
		return;
	}
	smtp_close_after(c, 421, "4.4.2", phase_texts[ph]);
}

static void
tmo_cb(evutil_socket_t fd, short what, void *arg)
{
	struct smtp_conn *c = arg;

	if ((c->flags & (SMTP_F_FREEING | SMTP_F_DEAD | SMTP_F_JOB)) || c->state == SMTP_ST_CLOSING)
		return; /* a job's completion resumes and re-arms */
	smtp_timeout(c, c->tmo_phase);
}

/* Set tmo_ev to the earliest deadline that applies in the current state. */
static void
tmo_update(struct smtp_conn *c)
{
	const struct config_limits *lim = &smtp_cfg(c)->st.limits;
	enum smtp_phase ph = SMTP_PH_NONE;
	int64_t now = mono_ms(), at = 0;

	if (c->setup_deadline != 0 && ((c->flags & SMTP_F_AUTHED) || c->txn != NULL))
		c->setup_deadline = 0; /* a MAIL (only MAIL makes a txn) or AUTH was accepted */
	if (c->msg_deadline != 0 && !state_is_data(c->state) && c->state != SMTP_ST_BUSY &&
	    !(c->txn != NULL && c->txn->bdat))
		c->msg_deadline = 0; /* the message was abandoned (RSET, EHLO, a dropped chunk) */
	if ((c->flags & (SMTP_F_FREEING | SMTP_F_DEAD | SMTP_F_JOB)) || c->state == SMTP_ST_CLOSING) {
		evtimer_del(c->tmo_ev);
		return;
	}
	if (state_reads_lines(c->state)) {
		if (bufferevent_get_enabled(c->bev) & EV_READ) {
			if (c->cmd_wait_since == 0)
				c->cmd_wait_since = now;
			at = c->cmd_wait_since + lim->smtp_timeout_ms;
			ph = c->state == SMTP_ST_AUTH ? SMTP_PH_AUTH : SMTP_PH_COMMAND;
		} else {
			/* Paused for a client that does not read: the write timeout's turn. */
			c->cmd_wait_since = 0;
		}
	}
	if (c->setup_deadline != 0 && (at == 0 || c->setup_deadline < at)) {
		at = c->setup_deadline;
		ph = SMTP_PH_SETUP;
	}
	if (c->msg_deadline != 0 && c->state != SMTP_ST_BUSY && (at == 0 || c->msg_deadline < at)) {
		at = c->msg_deadline;
		ph = SMTP_PH_MESSAGE;
	}
	if (at == 0) {
		evtimer_del(c->tmo_ev);
		return;
	}
	struct timeval tv = ms_tv(at > now ? at - now : 0);
	c->tmo_phase = ph;
	evtimer_add(c->tmo_ev, &tv);
}

void
smtp_message_timer(struct smtp_conn *c, bool start)
{
	if (!start)
		c->msg_deadline = 0;
	else if (c->msg_deadline == 0)
		c->msg_deadline = mono_ms() + smtp_cfg(c)->st.limits.smtp_message_timeout_ms;
	/* A message is on its way: junk commands count afresh (the top's note). */
	if (start && c->txn != NULL && c->txn->nrcpts > 0)
		c->njunk = 0;
}

/* Handle every complete line (and message data) in the input buffer, in order. */
static void
process(struct smtp_conn *c)
{
	struct evbuffer *in = bufferevent_get_input(c->bev);

	if (c->flags & SMTP_F_INPROC)
		return;
	c->flags |= SMTP_F_INPROC;
	while (!(c->flags & (SMTP_F_FREEING | SMTP_F_DEAD))) {
		if (c->state == SMTP_ST_DATA || c->state == SMTP_ST_BDAT) {
			if (!smtp_data_input(c))
				break;
			continue;
		}
		if (!state_reads_lines(c->state))
			break;
		/* Pipelined commands from a client that does not read its replies
		 * would grow the output without bound: pause reading instead. */
		if (evbuffer_get_length(bufferevent_get_output(c->bev)) >= SMTP_OUT_HIGH) {
			bufferevent_disable(c->bev, EV_READ);
			break;
		}
		size_t len = evbuffer_get_length(in);
		if (len == 0)
			break;
		if (c->flags & SMTP_F_SKIPLINE) {
			struct evbuffer_ptr p = evbuffer_search(in, "\n", 1, NULL);
			if (p.pos < 0) {
				evbuffer_drain(in, len);
				break;
			}
			evbuffer_drain(in, (size_t)p.pos + 1);
			c->flags &= ~SMTP_F_SKIPLINE;
			continue;
		}
		size_t n = len < c->lim.max_auth_line + 2 ? len : c->lim.max_auth_line + 2;
		const char *buf = (const char *)evbuffer_pullup(in, (ev_ssize_t)n);
		struct smtp_line line;
		int r = smtp_line_find(buf, n, &c->lim, c->state == SMTP_ST_AUTH, &line);
		if (r == SMTP_LINE_NEED_MORE)
			break;
		if (r == SMTP_LINE_TOO_LONG) {
			evbuffer_drain(in, line.skip);
			if (!line.complete)
				c->flags |= SMTP_F_SKIPLINE;
			if (c->state == SMTP_ST_AUTH) {
				auth_session_free(&c->auth);
				smtp_set_state(c, SMTP_ST_READY);
			}
			if (!(c->flags & SMTP_F_GOODCMD)) {
				/* Binary junk or a TLS hello on a plain port: one answer, then close. */
				smtp_close_after(c, 500, "5.5.2", "line too long, closing connection");
				break;
			}
			smtp_reply(c, 500, "5.5.2", "line too long");
			smtp_error(c);
			continue;
		}
		/* Copy the line out: a handler may drain the input (STARTTLS). */
		char *copy = xstrndup(line.text.p, line.text.len);
		size_t clen = line.text.len;
		evbuffer_drain(in, (size_t)r);
		c->cmd_wait_since = 0; /* the wait for the next line begins after this one's reply */
		if (c->state == SMTP_ST_AUTH)
			smtp_auth_line(c, copy, clen);
		else
			dispatch(c, copy, clen);
		free(copy);
	}
	c->flags &= ~SMTP_F_INPROC;
	/* While waiting for work do not read on (libevent would buffer without bound). */
	if (!(c->flags & (SMTP_F_FREEING | SMTP_F_DEAD)) && (c->state == SMTP_ST_BUSY || c->state == SMTP_ST_CLOSING))
		bufferevent_disable(c->bev, EV_READ);
	tmo_update(c);
}

void
smtp_resume(struct smtp_conn *c, enum smtp_state st)
{
	if ((c->flags & (SMTP_F_FREEING | SMTP_F_DEAD)) || c->state == SMTP_ST_CLOSING)
		return;
	smtp_set_state(c, st);
	if (c->state == SMTP_ST_CLOSING)
		return;
	if (server_stopping(c->srv)) {
		smtp_close_after(c, 421, "4.3.2", "shutting down");
		return;
	}
	bufferevent_enable(c->bev, EV_READ | EV_WRITE);
	process(c); /* returns at once when called from inside process(): its loop goes on */
}

static void
read_cb(struct bufferevent *bev, void *arg)
{
	process(arg);
}

static void
write_cb(struct bufferevent *bev, void *arg)
{
	struct smtp_conn *c = arg;

	if (evbuffer_get_length(bufferevent_get_output(bev)) > 0)
		return;
	if (c->state == SMTP_ST_CLOSING)
		smtp_conn_release(c);
	else if (c->flags & SMTP_F_STARTTLS)
		smtp_starttls_go(c);
	else if (!(c->flags & (SMTP_F_FREEING | SMTP_F_DEAD)) && !(bufferevent_get_enabled(bev) & EV_READ) &&
	    (state_reads_lines(c->state) || c->state == SMTP_ST_DATA || c->state == SMTP_ST_BDAT)) {
		/* Reading was paused for a full output (process): go on. */
		bufferevent_enable(bev, EV_READ);
		process(c);
	}
}

static void
event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct smtp_conn *c = arg;

	if (what & BEV_EVENT_TIMEOUT) {
		if (what & BEV_EVENT_WRITING)
			smtp_timeout(c, SMTP_PH_WRITE);
		else if (c->state != SMTP_ST_CLOSING)
			smtp_timeout(c, state_is_data(c->state) ? SMTP_PH_DATA :
			    c->state == SMTP_ST_AUTH ? SMTP_PH_AUTH : SMTP_PH_COMMAND);
		else
			smtp_conn_release(c);
		return;
	}
	if (what & BEV_EVENT_ERROR)
		log_debug(SMTP_PKG, c->ci->cid, "connection error", "remote", c->ci->remote_ip);
	smtp_conn_release(c);
}

void
smtp_session_setcb(struct smtp_conn *c)
{
	bufferevent_setcb(c->bev, read_cb, write_cb, event_cb, c);
	set_bev_timeouts(c);
}

static void
smtp_accept(struct server *srv, struct bufferevent *bev, struct conn_info *ci)
{
	struct smtp_conn *c = xcalloc(1, sizeof(*c));
	const struct config *cfg = server_config(srv);

	c->srv = srv;
	c->ci = ci;
	c->bev = bev;
	c->ev = evtimer_new(server_base(srv), ev_cb, c);
	c->tmo_ev = evtimer_new(server_base(srv), tmo_cb, c);
	if (c->ev == NULL || c->tmo_ev == NULL)
		abort();
	c->setup_deadline = mono_ms() + cfg->st.limits.smtp_setup_timeout_ms;
	smtp_limits_default(&c->lim);
	c->hostname = ci->listener != NULL && ci->listener->hostname != NULL && ci->listener->hostname[0] ?
	    ci->listener->hostname : cfg->st.hostname;
	if (ci->ssl != NULL)
		c->flags |= SMTP_F_TLS;
	if (ci->svc != SVC_SMTP)
		c->flags |= SMTP_F_SUBMIT;
	c->next = conns;
	if (conns)
		conns->prev = c;
	conns = c;
	nconns++;
	smtp_session_setcb(c);
	bufferevent_enable(bev, EV_READ | EV_WRITE);
	log_debug(SMTP_PKG, ci->cid, "new connection", "remote", ci->remote_ip, "service", config_svc_names[ci->svc],
	    "tls", ci->ssl ? "yes" : "no");
	if (server_stopping(srv)) {
		smtp_close_after(c, 421, "4.3.2", "shutting down");
		return;
	}
	smtp_reply(c, 220, NULL, "%s ESMTP mox", c->hostname);
	tmo_update(c);
}

static void
smtp_shutdown(struct server *srv)
{
	for (struct smtp_conn *c = conns; c != NULL; c = c->next) {
		if (c->flags & (SMTP_F_FREEING | SMTP_F_DEAD) || c->state == SMTP_ST_CLOSING)
			continue;
		if (c->flags & SMTP_F_JOB)
			continue; /* a delivery is being stored: its answer comes first */
		smtp_close_after(c, 421, "4.3.2", "shutting down");
	}
	smtp_rulesets_free();
}

static size_t
smtp_count(struct server *srv)
{
	return nconns;
}

const struct proto_handler smtp_handler = {"smtp", smtp_accept, smtp_shutdown, smtp_count};

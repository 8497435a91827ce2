/*
 * imap_session: IMAP connections. Reads input into the resumable parser,
 * dispatches complete commands from the table, writes responses, enforces
 * the limits and timeouts, and says BYE on shutdown.
 *
 * Invariants: one command at a time (busy); while busy, input stays in the
 * bufferevent (reading is disabled so a pipelining client cannot make us
 * buffer without bound). A connection is freed only from ev_defer, and only
 * once no storage job refers to it (jobs == 0).
 */
#define _GNU_SOURCE 1
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/bufferevent_ssl.h>

#include "daemon/auth.h"
#include "daemon/imap_private.h"
#include "daemon/log.h"
#include "maildir/maildir.h"

#define PKG "imap"

static struct imap_conn *conns;
static size_t nconns;

static const struct imap_cmd_def commands[] = {
	{"CAPABILITY", IMAP_ST_ANY, 0, imap_cmd_capability},
	{"NOOP", IMAP_ST_ANY, 0, imap_cmd_noop},
	{"LOGOUT", IMAP_ST_ANY, 0, imap_cmd_logout},
	{"ID", IMAP_ST_ANY, 0, imap_cmd_id},
	{"STARTTLS", IMAP_ST_NOTAUTH, 0, imap_cmd_starttls},
	{"LOGIN", IMAP_ST_NOTAUTH, 0, imap_cmd_login},
	{"AUTHENTICATE", IMAP_ST_NOTAUTH, 0, imap_cmd_authenticate},
	{"ENABLE", IMAP_ST_LOGGEDIN, 0, imap_cmd_enable},
	{"SELECT", IMAP_ST_LOGGEDIN, 0, imap_cmd_select},
	{"EXAMINE", IMAP_ST_LOGGEDIN, 0, imap_cmd_examine},
	{"CREATE", IMAP_ST_LOGGEDIN, 0, imap_cmd_create},
	{"DELETE", IMAP_ST_LOGGEDIN, 0, imap_cmd_delete},
	{"RENAME", IMAP_ST_LOGGEDIN, 0, imap_cmd_rename},
	{"SUBSCRIBE", IMAP_ST_LOGGEDIN, 0, imap_cmd_subscribe},
	{"UNSUBSCRIBE", IMAP_ST_LOGGEDIN, 0, imap_cmd_unsubscribe},
	{"LIST", IMAP_ST_LOGGEDIN, 0, imap_cmd_list},
	{"LSUB", IMAP_ST_LOGGEDIN, 0, imap_cmd_lsub},
	{"NAMESPACE", IMAP_ST_LOGGEDIN, 0, imap_cmd_namespace},
	{"STATUS", IMAP_ST_LOGGEDIN, 0, imap_cmd_status},
	{"APPEND", IMAP_ST_LOGGEDIN, 0, imap_cmd_append},
	{"IDLE", IMAP_ST_LOGGEDIN, 0, imap_cmd_idle},
	{"GETQUOTA", IMAP_ST_LOGGEDIN, 0, imap_cmd_getquota},
	{"GETQUOTAROOT", IMAP_ST_LOGGEDIN, 0, imap_cmd_getquotaroot},
	{"SETQUOTA", IMAP_ST_LOGGEDIN, 0, imap_cmd_setquota},
	{"CHECK", IMAP_ST_SELECTED, 0, imap_cmd_check},
	{"CLOSE", IMAP_ST_SELECTED, 0, imap_cmd_close},
	{"UNSELECT", IMAP_ST_SELECTED, 0, imap_cmd_unselect},
	{"EXPUNGE", IMAP_ST_SELECTED, IMAP_CMDF_UID, imap_cmd_expunge},
	{"SEARCH", IMAP_ST_SELECTED, IMAP_CMDF_UID | IMAP_CMDF_NOEXPUNGE, imap_cmd_search},
	{"FETCH", IMAP_ST_SELECTED, IMAP_CMDF_UID | IMAP_CMDF_NOEXPUNGE, imap_cmd_fetch},
	{"STORE", IMAP_ST_SELECTED, IMAP_CMDF_UID | IMAP_CMDF_NOEXPUNGE, imap_cmd_store},
	{"COPY", IMAP_ST_SELECTED, IMAP_CMDF_UID | IMAP_CMDF_NOEXPUNGE, imap_cmd_copy},
	{"MOVE", IMAP_ST_SELECTED, IMAP_CMDF_UID | IMAP_CMDF_NOEXPUNGE, imap_cmd_move},
};

static void process_input(struct imap_conn *c);
static void conn_free(struct imap_conn *c);

static const char *
state_name(enum imap_state st)
{
	switch (st) {
	case IMAP_ST_NOTAUTH: return "notauthenticated";
	case IMAP_ST_AUTH: return "authenticated";
	case IMAP_ST_SELECTED: return "selected";
	case IMAP_ST_LOGOUT: return "logout";
	}
	return "?";
}

void
imap_set_state(struct imap_conn *c, enum imap_state st)
{
	if (c->state == st)
		return;
	log_debug(PKG, c->ci->cid, "state change", "from", state_name(c->state), "to", state_name(st));
	c->state = st;
	imap_touch(c);
}

bool
imap_utf8(const struct imap_conn *c)
{
	return (c->enabled & (IMAP_EN_REV2 | IMAP_EN_UTF8)) != 0;
}

bool
imap_gone(const struct imap_conn *c)
{
	return c->closing;
}

struct evbuffer *
imap_out(struct imap_conn *c)
{
	return bufferevent_get_output(c->bev);
}

void
imap_write(struct imap_conn *c, const void *data, size_t len)
{
	if (!c->closing)
		evbuffer_add(imap_out(c), data, len);
}

void
imap_printf(struct imap_conn *c, const char *fmt, ...)
{
	va_list ap;

	if (c->closing)
		return;
	va_start(ap, fmt);
	evbuffer_add_vprintf(imap_out(c), fmt, ap);
	va_end(ap);
}

/*
 * The tagged reply of a command in the selected state is held back until
 * the changes other sessions made are announced (RFC 9051 5.2: after every
 * command, not only NOOP and IDLE); imap_cmd_finish writes it.
 */
static bool
hold_reply(const struct imap_conn *c)
{
	/* LOGOUT: nothing after its BYE. */
	return c->busy && c->cmd != NULL && c->sel != NULL && c->state == IMAP_ST_SELECTED && c->held == NULL &&
	    c->cmd->fn != imap_cmd_logout;
}

static void
tagged(struct imap_conn *c, const char *status, bool cid, const char *fmt, va_list ap)
{
	if (c->closing)
		return;
	if (hold_reply(c)) {
		struct mbuf b;
		mbuf_init(&b, 1 << 20);
		mbuf_printf(&b, "%s %s ", c->tag != NULL ? c->tag : "*", status);
		mbuf_vprintf(&b, fmt, ap);
		if (cid)
			mbuf_printf(&b, " (cid %llx)", (unsigned long long)c->ci->cid);
		mbuf_adds(&b, "\r\n");
		c->held = xstrdup(b.data);
		mbuf_clear(&b);
		return;
	}
	struct evbuffer *out = imap_out(c);
	evbuffer_add_printf(out, "%s %s ", c->tag != NULL ? c->tag : "*", status);
	evbuffer_add_vprintf(out, fmt, ap);
	if (cid)
		evbuffer_add_printf(out, " (cid %llx)", (unsigned long long)c->ci->cid);
	evbuffer_add(out, "\r\n", 2);
}

void
imap_ok(struct imap_conn *c, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	tagged(c, "OK", false, fmt, ap);
	va_end(ap);
}

void
imap_no(struct imap_conn *c, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	tagged(c, "NO", true, fmt, ap);
	va_end(ap);
}

void
imap_bad(struct imap_conn *c, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	tagged(c, "BAD", true, fmt, ap);
	va_end(ap);
}

void
imap_serverbug(struct imap_conn *c, const char *what, const char *err)
{
	log_error(PKG, c->ci->cid, what, "err", err, "command", c->cmd != NULL ? c->cmd->name : "");
	imap_no(c, "[SERVERBUG] internal error");
}

void
imap_touch(struct imap_conn *c)
{
	const struct config_limits *lim = &server_config(c->srv)->st.limits;
	long long ms = c->state == IMAP_ST_NOTAUTH ? lim->imap_timeout_preauth_ms : lim->imap_timeout_idle_ms;
	struct timeval tv = {ms / 1000, (ms % 1000) * 1000};

	if (c->closing || c->auth_delay)
		return;
	evtimer_add(c->ev_timer, &tv);
}

/* ---- jobs ---- */

static void
job_work(struct store_account *sa, struct idx_account *a, void *arg)
{
	struct imap_job *j = arg;

	if (a == NULL) {
		j->rc = -1;
		j->error = IDX_E_INTERNAL;
		snprintf(j->err, sizeof(j->err), "account unavailable: %s", store_account_error(sa));
		return;
	}
	j->work(j, a);
}

static void
job_done(void *arg)
{
	struct imap_job *j = arg;
	struct imap_conn *c = j->c;

	j->done(j);
	c->jobs--;
	if (c->closing && c->jobs == 0)
		event_active(c->ev_defer, 0, 0);
}

void
imap_submit(struct imap_conn *c, struct imap_job *j)
{
	j->c = c;
	c->jobs++;
	store_submit(c->sa, job_work, job_done, j);
}

/* ---- closing ---- */

static void
defer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct imap_conn *c = arg;

	if (c->closing) {
		if (c->jobs > 0)
			return;
		if (c->freeing || evbuffer_get_length(imap_out(c)) == 0) {
			/* After STARTTLS the encrypted bytes wait in the plain bufferevent below. */
			struct bufferevent *under = bufferevent_get_underlying(c->bev);
			if (!c->freeing && under != NULL && evbuffer_get_length(bufferevent_get_output(under)) > 0) {
				struct timeval tv = {0, 20000};
				event_add(c->ev_defer, &tv);
				return;
			}
			conn_free(c);
		}
		return;
	}
	process_input(c);
}

static void
write_cb(struct bufferevent *bev, void *arg)
{
	struct imap_conn *c = arg;

	if (c->closing) {
		if (evbuffer_get_length(imap_out(c)) == 0)
			event_active(c->ev_defer, 0, 0);
	}
}

void
imap_close(struct imap_conn *c)
{
	if (c->closing)
		return;
	c->closing = true;
	bufferevent_disable(c->bev, EV_READ);
	/* Give the peer 5 s to take our last words, then drop it. */
	struct timeval tv = {5, 0};
	evtimer_add(c->ev_timer, &tv);
	event_active(c->ev_defer, 0, 0);
}

static void
close_now(struct imap_conn *c)
{
	if (!c->closing)
		imap_close(c);
	c->freeing = true;
	event_active(c->ev_defer, 0, 0);
}

static void
conn_free(struct imap_conn *c)
{
	if (c->next != NULL)
		c->next->prev = c->prev;
	if (c->prev != NULL)
		c->prev->next = c->next;
	else
		conns = c->next;
	nconns--;
	log_debug(PKG, c->ci->cid, "connection closed");
	imap_view_free(c);
	imap_append_clear(c);
	auth_session_free(&c->as);
	free(c->delayed_reply);
	free(c->held);
	for (size_t i = 0; i < 2 * c->nrenames; i++)
		free(c->renames[i]);
	free(c->renames);
	imap_parse_free(&c->p);
	event_free(c->ev_timer);
	event_free(c->ev_defer);
	if (c->ev_notify != NULL)
		event_free(c->ev_notify);
	bufferevent_free(c->bev);
	store_account_put(&c->sa);
	free(c->account);
	free(c->tag);
	free(c->tmpdir);
	server_conn_done(c->srv, c->ci);
	free(c);
}

static void
timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct imap_conn *c = arg;

	if (c->closing) {
		close_now(c);
		return;
	}
	if (c->auth_delay) {
		c->auth_delay = false;
		if (c->delayed_reply != NULL) {
			imap_write(c, c->delayed_reply, strlen(c->delayed_reply));
			free(c->delayed_reply);
			c->delayed_reply = NULL;
		}
		imap_cmd_finish(c);
		return;
	}
	if (c->busy && c->mode != IMAP_MODE_IDLE && c->mode != IMAP_MODE_AUTH_LINE) {
		imap_touch(c);
		return;
	}
	log_info(PKG, c->ci->cid, "closing inactive connection", "state", state_name(c->state));
	imap_printf(c, "* BYE inactive\r\n");
	imap_close(c);
}

static void
event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct imap_conn *c = arg;

	if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)) {
		log_debug(PKG, c->ci->cid, (what & BEV_EVENT_EOF) ? "client closed connection" : "connection error");
		close_now(c);
	}
}

static void
read_cb(struct bufferevent *bev, void *arg)
{
	struct imap_conn *c = arg;

	imap_touch(c);
	process_input(c);
}

/* ---- input ---- */

static void cmd_finish_real(struct imap_conn *c);

/* Whether EXPUNGE/VANISHED may be sent at the end of the current command (RFC 9051 7.5.1). */
static bool
expunge_allowed(const struct imap_conn *c)
{
	if (c->cmd == NULL)
		return false;
	return !(c->cmd->flags & IMAP_CMDF_NOEXPUNGE) || c->uid;
}

static void
write_held(struct imap_conn *c)
{
	if (c->held != NULL) {
		imap_write(c, c->held, strlen(c->held));
		free(c->held);
		c->held = NULL;
	}
	cmd_finish_real(c);
}

void
imap_cmd_finish(struct imap_conn *c)
{
	if (c->held != NULL && !c->closing && c->sel != NULL) {
		imap_view_flush(c, expunge_allowed(c), write_held);
		return;
	}
	/* A reply that was not held (refused before dispatch) announced nothing: end a stale view now. */
	if (c->state == IMAP_ST_SELECTED)
		(void)imap_view_check_uidvalidity(c);
	write_held(c);
}

static void
cmd_finish_real(struct imap_conn *c)
{
	c->busy = false;
	c->mode = IMAP_MODE_COMMAND;
	c->cmd = NULL;
	c->uid = false;
	c->append_failed = false;
	free(c->tag);
	c->tag = NULL;
	if (c->p == NULL) {
		c->p = imap_parse_new(NULL);
		imap_parse_set_utf8(c->p, imap_utf8(c));
	}
	imap_parse_reset(c->p);
	c->lit_begun = false;
	c->lit_external = false;
	c->ncommands_nonzero = true;
	if (c->state == IMAP_ST_LOGOUT) {
		imap_close(c);
		return;
	}
	if (c->closing)
		return;
	if (server_stopping(c->srv)) {
		/* Kept open by imap_shutdown until this command's answer was out. */
		imap_printf(c, "* BYE server shutting down\r\n");
		imap_close(c);
		return;
	}
	imap_touch(c);
	bufferevent_enable(c->bev, EV_READ);
	/* Pipelined input may already be buffered: continue from the loop. */
	event_active(c->ev_defer, 0, 0);
}

static const struct imap_cmd_def *
find_command(const char *name)
{
	for (size_t i = 0; i < ARRAY_LEN(commands); i++)
		if (strcmp(commands[i].name, name) == 0)
			return &commands[i];
	return NULL;
}

/* A command failed parsing or was refused before dispatch. */
static void
command_failed(struct imap_conn *c)
{
	if (!c->ncommands_nonzero && c->state == IMAP_ST_NOTAUTH) {
		/* The first command was garbage: probably not an IMAP client at all. */
		imap_close(c);
		return;
	}
}

/* UID FETCH after its VANISHED (EARLIER) response: run the FETCH itself. */
static void
fetch_after_vanished(struct imap_conn *c)
{
	struct imap_args args;
	const struct imap_arg *a;

	imap_args_init(&args, imap_parse_command(c->p)->args);
	imap_args_any(&args, &a); /* "FETCH" after "UID" */
	if (c->cmd->fn(c, &args) == IMAP_CMD_DONE)
		imap_cmd_finish(c);
}

/*
 * UID FETCH seqset items (CHANGEDSINCE n VANISHED) (RFC 7162 3.2.6): the
 * UIDs of the set expunged since n are reported as VANISHED (EARLIER) before
 * the FETCH responses. 1 when this took over the command (a job or a BAD
 * reply), 0 when the FETCH runs as usual.
 */
static int
fetch_vanished(struct imap_conn *c, const struct imap_args *args)
{
	const struct imap_arg *set = imap_args_peek(args);
	const struct imap_arg *items = set != NULL ? set->next : NULL;
	const struct imap_arg *mods = items != NULL ? items->next : NULL;
	bool vanished = false, changed = false;
	uint64_t since = 0;

	if (mods == NULL || mods->type != IMAP_ARG_LIST || set->type != IMAP_ARG_ATOM)
		return 0;
	for (const struct imap_arg *m = mods->list; m != NULL; m = m->next) {
		if (m->type != IMAP_ARG_ATOM)
			continue;
		if (str_ieq(m->str, "VANISHED")) {
			vanished = true;
		} else if (str_ieq(m->str, "CHANGEDSINCE") && m->next != NULL && m->next->type == IMAP_ARG_ATOM) {
			long long v;
			if (parse_ll(m->next->str, 0, INT64_MAX, &v) < 0)
				return 0; /* FETCH says BAD */
			since = (uint64_t)v;
			changed = true;
		}
	}
	if (!vanished)
		return 0;
	if (!(c->enabled & IMAP_EN_QRESYNC)) {
		imap_bad(c, "VANISHED needs ENABLE QRESYNC");
		imap_cmd_finish(c);
		return 1;
	}
	if (!changed) {
		imap_bad(c, "VANISHED needs CHANGEDSINCE");
		imap_cmd_finish(c);
		return 1;
	}
	struct imap_seqset ss = {0};
	const char *err = NULL;
	if (imap_seqset_parse(set->str, set->len, IMAP_SEQSET_MAX_RANGES, &ss, &err) < 0 || ss.searchres) {
		imap_seqset_clear(&ss);
		return 0; /* FETCH answers a bad set (or resolves "$" without VANISHED) */
	}
	imap_vanished_earlier(c, &ss, since, fetch_after_vanished);
	imap_seqset_clear(&ss);
	return 1;
}

static void
dispatch(struct imap_conn *c)
{
	const struct imap_command *cmd = imap_parse_command(c->p);
	const struct imap_cmd_def *def;
	struct imap_args args;
	const char *name = cmd->name;

	c->tag = xstrdup(cmd->tag);
	/* UIDs of the command would mean other messages under a new UIDVALIDITY: run nothing. */
	if (imap_view_check_uidvalidity(c) > 0) {
		imap_cmd_finish(c);
		return;
	}
	imap_args_init(&args, cmd->args);
	c->uid = false;
	if (strcmp(name, "UID") == 0) {
		const char *sub;
		size_t sublen;
		if (imap_args_atom(&args, &sub, &sublen) < 0) {
			imap_bad(c, "missing command after UID");
			imap_cmd_finish(c);
			return;
		}
		char up[16];
		size_t i;
		for (i = 0; i < sublen && i < sizeof(up) - 1; i++)
			up[i] = (sub[i] >= 'a' && sub[i] <= 'z') ? sub[i] - 32 : sub[i];
		up[i] = 0;
		def = sublen < sizeof(up) ? find_command(up) : NULL;
		if (def == NULL || !(def->flags & IMAP_CMDF_UID)) {
			imap_bad(c, "unknown UID command");
			imap_cmd_finish(c);
			return;
		}
		c->uid = true;
	} else {
		def = find_command(name);
	}
	if (def == NULL) {
		log_debug(PKG, c->ci->cid, "unknown command", "command", name);
		imap_bad(c, "unknown command");
		bool first = !c->ncommands_nonzero && c->state == IMAP_ST_NOTAUTH;
		imap_cmd_finish(c);
		if (first)
			imap_close(c);
		return;
	}
	if (!(def->states & c->state)) {
		if (c->state == IMAP_ST_NOTAUTH)
			imap_no(c, "not authenticated");
		else if (def->states == IMAP_ST_SELECTED)
			imap_no(c, "no mailbox selected");
		else
			imap_no(c, "command not allowed in this state");
		imap_cmd_finish(c);
		return;
	}
	if (c->append_failed) {
		imap_cmd_finish(c);
		return;
	}
	log_debug(PKG, c->ci->cid, "command", "command", def->name, "uid", c->uid ? "yes" : "");
	c->cmd = def;
	c->busy = true;
	if (c->uid && def->fn == imap_cmd_fetch && fetch_vanished(c, &args))
		return;
	int r = def->fn(c, &args);
	if (r == IMAP_CMD_DONE)
		imap_cmd_finish(c);
}

static const char *
parse_error_code(int r)
{
	switch (r) {
	case IMAP_PARSE_ERR_TOO_MANY_LITERALS:
	case IMAP_PARSE_ERR_LITERAL_TOO_BIG:
	case IMAP_PARSE_ERR_LITERALS_TOO_BIG:
	case IMAP_PARSE_ERR_COMMAND_TOO_LONG:
		return "[TOOBIG] ";
	default:
		return "";
	}
}

static void
parse_error(struct imap_conn *c, int r)
{
	const char *tag = imap_parse_tag(c->p);

	log_debug(PKG, c->ci->cid, "bad command", "err", imap_parse_error(c->p));
	free(c->tag);
	c->tag = xstrdup(tag != NULL ? tag : "*");
	imap_bad(c, "%s%s", parse_error_code(r), imap_parse_error(c->p));
	free(c->tag);
	c->tag = NULL;
	if (r == IMAP_PARSE_ERR_LINE_TOO_LONG)
		imap_close(c);
	else
		command_failed(c);
}

/* Handle a line outside commands (AUTHENTICATE, IDLE). 1 handled, 0 need more. */
static int
mode_line(struct imap_conn *c, struct evbuffer *in)
{
	size_t avail = evbuffer_get_length(in);
	size_t max = 64 * 1024;
	size_t want = avail < max + 2 ? avail : max + 2;
	size_t clen;
	char *buf = (char *)evbuffer_pullup(in, want);
	int64_t n = imap_line_end(buf, want, max + 2, &clen);

	if (n == 0)
		return 0;
	if (n < 0) {
		imap_printf(c, "* BYE line too long (cid %llx)\r\n", (unsigned long long)c->ci->cid);
		imap_close(c);
		return 1;
	}
	char *line = xstrndup(buf, clen);
	evbuffer_drain(in, (size_t)n);
	if (c->mode == IMAP_MODE_AUTH_LINE)
		imap_auth_line(c, line, clen);
	else
		imap_idle_line(c, line, clen);
	free(line);
	return 1;
}

/* Place and consume the current literal. 1 progress, 0 need more. */
static int
literal_input(struct imap_conn *c, struct evbuffer *in)
{
	struct imap_literal_info li;
	size_t avail = evbuffer_get_length(in);

	imap_parse_literal_info(c->p, &li);
	if (!c->lit_begun) {
		c->lit_begun = true;
		const char *name = imap_parse_name(c->p);
		const struct imap_command *sofar = imap_parse_command(c->p);
		bool append = name != NULL && strcmp(name, "APPEND") == 0 && sofar != NULL && sofar->nargs >= 1 &&
		    !imap_parse_failed(c->p);
		if (append) {
			int r = imap_parse_literal_begin(c->p, true);
			if (r < 0) {
				parse_error(c, r);
				return 1;
			}
			c->lit_external = true;
			c->app_left = li.size;
			char err[256];
			if ((c->state & IMAP_ST_LOGGEDIN) == 0) {
				snprintf(err, sizeof(err), "not authenticated");
				r = -1;
			} else {
				r = imap_append_begin(c, li.size, err, sizeof(err));
			}
			if (r < 0) {
				const char *tag = imap_parse_tag(c->p);
				c->tag = xstrdup(tag != NULL ? tag : "*");
				imap_no(c, "%s", err);
				free(c->tag);
				c->tag = NULL;
				imap_append_clear(c);
				if (li.sync) {
					/* The client waits for "+": nothing more of this command comes. */
					imap_parse_reset(c->p);
					c->lit_begun = false;
					c->lit_external = false;
					return 1;
				}
				c->append_failed = true;
			} else {
				if (li.sync)
					imap_printf(c, "+ Ready for literal data\r\n");
			}
		} else {
			int r = imap_parse_literal_begin(c->p, false);
			if (r < 0) {
				parse_error(c, r);
				if (imap_parse_state(c->p) == IMAP_PARSE_ST_FAILED || li.sync)
					return 1;
			} else if (li.sync && !imap_parse_failed(c->p)) {
				imap_printf(c, "+ Ready for literal data\r\n");
			}
		}
		if (imap_parse_state(c->p) != IMAP_PARSE_ST_LITERAL)
			return 1;
	}
	if (c->lit_external) {
		/* External literal: stream to the message file (or discard). */
		if (c->app_left == 0) {
			imap_parse_literal_external(c->p, 0);
			c->app_cur = NULL;
			return 1;
		}
		if (avail == 0)
			return 0;
		struct evbuffer_iovec v;
		if (evbuffer_peek(in, -1, NULL, &v, 1) < 1)
			return 0;
		size_t n = v.iov_len;
		if (n > c->app_left)
			n = c->app_left;
		if (c->app_cur != NULL && !c->append_failed && imap_append_data(c, v.iov_base, n) < 0) {
			c->append_failed = true;
			const char *tag = imap_parse_tag(c->p);
			c->tag = xstrdup(tag != NULL ? tag : "*");
			imap_serverbug(c, "writing append message", "write failed");
			free(c->tag);
			c->tag = NULL;
		}
		imap_parse_literal_external(c->p, n);
		c->app_left -= n;
		evbuffer_drain(in, n);
		if (c->app_left == 0)
			c->app_cur = NULL;
		return 1;
	}
	if (avail == 0 && li.size > 0)
		return 0;
	size_t want = avail;
	if (want > 65536)
		want = 65536;
	char *buf = (char *)evbuffer_pullup(in, want);
	int r = imap_parse_literal(c->p, buf, want);
	if (r < 0) {
		parse_error(c, r);
		return 1;
	}
	evbuffer_drain(in, (size_t)r);
	return 1;
}

static void
process_input(struct imap_conn *c)
{
	while (!c->closing) {
		struct evbuffer *in = bufferevent_get_input(c->bev); /* STARTTLS replaces bev */
		if (c->mode != IMAP_MODE_COMMAND) {
			if (mode_line(c, in) == 0)
				break;
			continue;
		}
		if (c->busy)
			break;
		enum imap_parse_state st = imap_parse_state(c->p);
		if (st == IMAP_PARSE_ST_DONE) {
			dispatch(c);
			continue;
		}
		if (st == IMAP_PARSE_ST_FAILED) {
			imap_append_clear(c);
			c->append_failed = false;
			imap_parse_reset(c->p);
			c->lit_begun = false;
			c->lit_external = false;
			command_failed(c);
			continue;
		}
		if (st == IMAP_PARSE_ST_FATAL) {
			imap_close(c);
			break;
		}
		if (st == IMAP_PARSE_ST_LITERAL) {
			if (literal_input(c, in) == 0)
				break;
			if (imap_parse_state(c->p) != IMAP_PARSE_ST_LITERAL) {
				c->lit_begun = false;
				c->lit_external = false;
			}
			continue;
		}
		size_t avail = evbuffer_get_length(in);
		if (avail == 0)
			break;
		size_t max = 65536 + 1;
		size_t want = avail < max ? avail : max;
		char *buf = (char *)evbuffer_pullup(in, want);
		int r = imap_parse_fragment(c->p, buf, want);
		if (r == IMAP_PARSE_NEED_MORE)
			break;
		if (r < 0) {
			if (r == IMAP_PARSE_ERR_LINE_TOO_LONG) {
				parse_error(c, r);
				break;
			}
			parse_error(c, r);
			continue;
		}
		evbuffer_drain(in, (size_t)r);
	}
	if (c->closing)
		return;
	struct evbuffer *in = bufferevent_get_input(c->bev);
	/* Stop reading while busy with buffered input, to bound memory. */
	if (c->busy && c->mode == IMAP_MODE_COMMAND && evbuffer_get_length(in) > 0)
		bufferevent_disable(c->bev, EV_READ);
	else
		bufferevent_enable(c->bev, EV_READ);
}

/* ---- output backpressure ---- */

static void
drain_cb(struct bufferevent *bev, void *arg)
{
	struct imap_conn *c = arg;
	void (*resume)(struct imap_conn *) = NULL;

	if (c->closing) {
		write_cb(bev, arg);
		return;
	}
	/* Restore the normal write callback, then continue the producer. */
	bufferevent_setwatermark(bev, EV_WRITE, 0, 0);
	bufferevent_setcb(bev, read_cb, write_cb, event_cb, c);
	if (c->resume_fn != NULL) {
		resume = c->resume_fn;
		c->resume_fn = NULL;
		resume(c);
	}
}

void
imap_wait_output(struct imap_conn *c, void (*resume)(struct imap_conn *c))
{
	if (evbuffer_get_length(imap_out(c)) < IMAP_OUT_HIGH / 2) {
		resume(c);
		return;
	}
	c->resume_fn = resume;
	bufferevent_setwatermark(c->bev, EV_WRITE, IMAP_OUT_HIGH / 4, 0);
	bufferevent_setcb(c->bev, read_cb, drain_cb, event_cb, c);
}

/* ---- names ---- */

/* Renames are few per session; the list only grows to a small bound. */
#define RENAMES_MAX 64

void
imap_renamed(struct imap_conn *c, const char *newname, const char *oldname)
{
	/* A chain a -> b -> c keeps the oldest name. */
	for (size_t i = 0; i < c->nrenames; i++) {
		if (strcmp(c->renames[2 * i], oldname) == 0) {
			free(c->renames[2 * i]);
			c->renames[2 * i] = xstrdup(newname);
			return;
		}
	}
	if (c->nrenames == RENAMES_MAX) {
		free(c->renames[0]);
		free(c->renames[1]);
		memmove(&c->renames[0], &c->renames[2], 2 * (c->nrenames - 1) * sizeof(*c->renames));
		c->nrenames--;
	}
	c->renames = xrealloc(c->renames, 2 * (c->nrenames + 1) * sizeof(*c->renames));
	c->renames[2 * c->nrenames] = xstrdup(newname);
	c->renames[2 * c->nrenames + 1] = xstrdup(oldname);
	c->nrenames++;
}

const char *
imap_oldname(const struct imap_conn *c, const char *name)
{
	for (size_t i = 0; i < c->nrenames; i++)
		if (strcmp(c->renames[2 * i], name) == 0)
			return c->renames[2 * i + 1];
	return NULL;
}

int
imap_arg_mailbox(struct imap_conn *c, struct imap_args *args, struct mbuf *out)
{
	return imap_args_mailbox(args, imap_utf8(c), out);
}

void
imap_mailbox_out(struct imap_conn *c, struct mbuf *b, const char *name)
{
	if (imap_utf8(c)) {
		imap_quote(b, name, strlen(name), IMAP_QUOTE_UTF8);
		return;
	}
	struct mbuf enc;
	mbuf_init(&enc, 16384);
	if (imap_utf7_encode(name, strlen(name), &enc) < 0)
		imap_quote(b, name, strlen(name), IMAP_QUOTE_UTF8);
	else
		imap_quote(b, enc.data, enc.len, 0);
	mbuf_clear(&enc);
}

/* ---- accept and shutdown ---- */

static void
imap_accept(struct server *srv, struct bufferevent *bev, struct conn_info *ci)
{
	struct imap_conn *c = xcalloc(1, sizeof(*c));
	struct event_base *base = server_base(srv);
	const struct config *cfg = server_config(srv);

	c->srv = srv;
	c->ci = ci;
	c->bev = bev;
	c->ssl = ci->ssl;
	c->state = IMAP_ST_NOTAUTH;
	c->p = imap_parse_new(NULL);
	c->ev_timer = evtimer_new(base, timer_cb, c);
	c->ev_defer = event_new(base, -1, 0, defer_cb, c);
	c->append_limit = (uint64_t)cfg->st.limits.max_message_size;
	c->next = conns;
	if (conns != NULL)
		conns->prev = c;
	conns = c;
	nconns++;
	bufferevent_setcb(bev, read_cb, write_cb, event_cb, c);
	bufferevent_enable(bev, EV_READ | EV_WRITE);
	log_debug(PKG, ci->cid, "new connection", "remote", ci->remote_ip, "tls", c->ssl != NULL ? "yes" : "no");
	if (server_stopping(srv)) {
		imap_printf(c, "* BYE server shutting down\r\n");
		imap_close(c);
		return;
	}
	if (server_auth(srv) != NULL && auth_blocked(server_auth(srv), ci)) {
		log_info(PKG, ci->cid, "connection refused: too many failed logins", "remote", ci->remote_ip);
		imap_printf(c, "* BYE [UNAVAILABLE] too many failed logins, try again later\r\n");
		imap_close(c);
		return;
	}
	struct mbuf b;
	mbuf_init(&b, 4096);
	imap_printf(c, "* OK [CAPABILITY %s] mox IMAP4rev2 ready\r\n", imap_capabilities(c, &b));
	mbuf_clear(&b);
	imap_touch(c);
}

static void
imap_shutdown(struct server *srv)
{
	for (struct imap_conn *c = conns; c != NULL; c = c->next) {
		if (c->closing)
			continue;
		/*
		 * A command waiting for storage (an APPEND, a COPY) gets its answer
		 * first, then the BYE (cmd_finish_real): closed now, a stored message
		 * would go unanswered and the client would append it again.
		 */
		if (c->busy && c->jobs > 0)
			continue;
		imap_printf(c, "* BYE server shutting down\r\n");
		imap_close(c);
	}
}

static size_t
imap_count(struct server *srv)
{
	return nconns;
}

const struct proto_handler imap_handler = {
	.name = "imap",
	.accept = imap_accept,
	.shutdown = imap_shutdown,
	.count = imap_count,
};

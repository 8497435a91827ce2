/*
 * imap_store: commands that change messages or the session: STORE, COPY,
 * MOVE, EXPUNGE, CLOSE/UNSELECT, APPEND (the literal streams into a maildir
 * writer; the add is group-committed by the store), ENABLE, ID, LOGOUT.
 */
#define _GNU_SOURCE 1
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/imap_private.h"
#include "daemon/log.h"
#include "daemon/spool.h"
#include "maildir/maildir.h"

#include <time.h>

/* ---- ENABLE, ID, LOGOUT ---- */

int
imap_cmd_enable(struct imap_conn *c, struct imap_args *args)
{
	const char *cap;
	size_t len;
	struct mbuf b;

	if (imap_args_peek(args) == NULL) {
		imap_bad(c, "missing capability");
		return IMAP_CMD_DONE;
	}
	mbuf_init(&b, 4096);
	while (imap_args_peek(args) != NULL) {
		if (imap_args_atom(args, &cap, &len) < 0) {
			mbuf_clear(&b);
			imap_bad(c, "%s", args->err);
			return IMAP_CMD_DONE;
		}
		unsigned bit = 0;
		const char *name = NULL;
		if (str_ieq(cap, "IMAP4rev2"))
			bit = IMAP_EN_REV2, name = "IMAP4rev2";
		else if (str_ieq(cap, "UTF8=ACCEPT"))
			bit = IMAP_EN_UTF8, name = "UTF8=ACCEPT";
		else if (str_ieq(cap, "CONDSTORE"))
			bit = IMAP_EN_CONDSTORE, name = "CONDSTORE";
		else if (str_ieq(cap, "QRESYNC"))
			bit = IMAP_EN_QRESYNC | IMAP_EN_CONDSTORE, name = "QRESYNC";
		if (bit == 0 || (c->enabled & bit) == bit)
			continue;
		c->enabled |= bit;
		mbuf_printf(&b, " %s", name);
	}
	if (imap_utf8(c))
		imap_parse_set_utf8(c->p, true);
	imap_printf(c, "* ENABLED%s\r\n", b.len > 0 ? b.data : "");
	mbuf_clear(&b);
	imap_ok(c, "ENABLE completed");
	return IMAP_CMD_DONE;
}

int
imap_cmd_id(struct imap_conn *c, struct imap_args *args)
{
	const struct imap_arg *a = imap_args_peek(args);
	struct imap_args sub;

	if (a != NULL && a->type == IMAP_ARG_LIST) {
		imap_args_list(args, &sub);
		/* Field/value pairs: RFC 2971 limits them to 30; we only log them. */
		int n = 0;
		while (imap_args_peek(&sub) != NULL && n < 60) {
			const char *k, *v;
			size_t kl, vl;
			if (imap_args_string(&sub, &k, &kl) < 0 || imap_args_nstring(&sub, &v, &vl) < 0) {
				imap_bad(c, "bad ID field list");
				return IMAP_CMD_DONE;
			}
			log_debug("imap", c->ci->cid, "client id", "field", k, "value", v);
			n += 2;
		}
	} else if (a == NULL || a->type != IMAP_ARG_NIL) {
		imap_bad(c, "ID expects a list or NIL");
		return IMAP_CMD_DONE;
	} else {
		imap_args_any(args, &a);
	}
	if (imap_args_end(args) < 0) {
		imap_bad(c, "%s", args->err);
		return IMAP_CMD_DONE;
	}
	imap_printf(c, "* ID (\"name\" \"mox\")\r\n");
	imap_ok(c, "ID completed");
	return IMAP_CMD_DONE;
}

int
imap_cmd_logout(struct imap_conn *c, struct imap_args *args)
{
	if (imap_args_end(args) < 0) {
		imap_bad(c, "%s", args->err);
		return IMAP_CMD_DONE;
	}
	imap_printf(c, "* BYE thanks\r\n");
	imap_ok(c, "LOGOUT completed");
	imap_set_state(c, IMAP_ST_LOGOUT);
	return IMAP_CMD_DONE;
}
/* ---- APPEND ---- */

int
imap_append_begin(struct imap_conn *c, uint64_t size, char *err, size_t errlen)
{
	struct maildir_writer *w = NULL;
	char e[256];

	if (size > c->append_limit) {
		snprintf(err, errlen, "[TOOBIG] message larger than APPENDLIMIT");
		return -1;
	}
	if (c->napp >= 100) {
		snprintf(err, errlen, "[LIMIT] too many messages in one APPEND");
		return -1;
	}
	/* A spool file made ahead of time (spool.h), else one created here. */
	if (spool_take(server_spool(c->srv), server_config(c->srv)->st.hostname, &w) == 0) {
		int r = mkdir_p(c->tmpdir, 0770);
		if (r < 0)
			snprintf(e, sizeof(e), "create %s: %s", c->tmpdir, strerror(errno));
		else
			r = maildir_writer_open(&w, c->tmpdir, server_config(c->srv)->st.hostname, e, sizeof(e));
		if (r < 0) {
			log_error("imap", c->ci->cid, "cannot create spool file", "err", e);
			snprintf(err, errlen, "[SERVERBUG] internal error (cid %llx)", (unsigned long long)c->ci->cid);
			return -1;
		}
	}
	c->app = xrealloc(c->app, (c->napp + 1) * sizeof(*c->app));
	c->app[c->napp].w = w;
	c->app[c->napp].size = size;
	c->napp++;
	c->app_cur = w;
	return 1;
}

int
imap_append_data(struct imap_conn *c, const void *data, size_t len)
{
	char e[256];
	if (maildir_writer_write(c->app_cur, data, len, e, sizeof(e)) < 0) {
		log_error("imap", c->ci->cid, "writing spool file", "err", e);
		return -1;
	}
	return 1;
}

void
imap_append_clear(struct imap_conn *c)
{
	for (size_t i = 0; i < c->napp; i++)
		maildir_writer_free(&c->app[i].w);
	free(c->app);
	c->app = NULL;
	c->napp = 0;
	c->app_cur = NULL;
}

/* "dd-Mon-yyyy hh:mm:ss +zzzz" (day may be space-padded). */
static int
parse_date_time(const char *s, int64_t *t_r, int32_t *tz_r)
{
	static const char *mon[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
	int d, y, hh, mm, ss, z;
	char m[4], sign;
	struct tm tm = {0};

	if (sscanf(s, "%2d-%3s-%4d %2d:%2d:%2d %c%4d", &d, m, &y, &hh, &mm, &ss, &sign, &z) != 8)
		return -1;
	if (sign != '+' && sign != '-')
		return -1;
	int mi;
	for (mi = 0; mi < 12; mi++)
		if (strcasecmp(m, mon[mi]) == 0)
			break;
	if (mi == 12 || d < 1 || d > 31 || hh > 23 || mm > 59 || ss > 60 || y < 1900)
		return -1;
	tm.tm_year = y - 1900;
	tm.tm_mon = mi;
	tm.tm_mday = d;
	tm.tm_hour = hh;
	tm.tm_min = mm;
	tm.tm_sec = ss;
	int32_t tz = (z / 100) * 60 + z % 100;
	if (sign == '-')
		tz = -tz;
	*t_r = (int64_t)timegm(&tm) - (int64_t)tz * 60;
	*tz_r = tz;
	return 1;
}

struct append_job {
	struct imap_job j;
	char *name;
	int lookup;                 /* the mailbox: 1 found, 0 missing, -1 error (j.err) */
	struct idx_mailbox mb;
	struct idx_add *items;
	size_t n;
	struct imap_append_msg *app;
	size_t napp;
	const char ***kws;
};

static void
append_job_free(struct append_job *aj)
{
	for (size_t i = 0; i < aj->napp; i++) {
		if (aj->app[i].w != NULL) {
			maildir_writer_remove(aj->app[i].w, NULL, 0);
			maildir_writer_free(&aj->app[i].w);
		}
	}
	free(aj->app);
	for (size_t i = 0; i < aj->n; i++)
		free(aj->kws[i]);
	free(aj->kws);
	free(aj->items);
	free(aj->name);
	idx_mailbox_clear(&aj->mb);
	free(aj);
}

static void
append_added(void *arg)
{
	struct append_job *aj = arg;
	struct imap_conn *c = aj->j.c;

	c->jobs--;
	if (imap_gone(c)) {
		append_job_free(aj);
		if (c->jobs == 0)
			event_active(c->ev_defer, 0, 0);
		return;
	}
	if (aj->lookup <= 0) {
		if (aj->lookup == 0)
			imap_no(c, "[TRYCREATE] no such mailbox");
		else
			imap_serverbug(c, "append", aj->j.err);
		append_job_free(aj);
		imap_cmd_finish(c);
		return;
	}
	int overquota = 0, failed = 0;
	for (size_t i = 0; i < aj->n; i++) {
		if (aj->items[i].result < 0) {
			if (aj->items[i].error == IDX_E_OVERQUOTA)
				overquota++;
			else
				failed++;
			log_info("imap", c->ci->cid, "append failed", "err", aj->items[i].err_r);
		}
	}
	if (overquota)
		imap_no(c, "[OVERQUOTA] account over quota");
	else if (failed && server_stopping(c->srv))
		imap_no(c, "[UNAVAILABLE] server shutting down, message not stored"); /* store_refuse_adds */
	else if (failed)
		imap_no(c, "[SERVERBUG] internal error");
	else {
		struct mbuf b;
		mbuf_init(&b, 1 << 20);
		for (size_t i = 0; i < aj->n; i++)
			mbuf_printf(&b, "%s%u", i ? "," : "", aj->items[i].uid_r);
		imap_ok(c, "[APPENDUID %u %s] APPEND completed", aj->mb.uidvalidity, b.data);
		mbuf_clear(&b);
	}
	append_job_free(aj);
	if (c->sel != NULL) {
		imap_view_flush(c, false, imap_cmd_finish);
		return;
	}
	imap_cmd_finish(c);
}

/*
 * On the storage thread, as the add's first step (one job, so a shutdown
 * refuses an APPEND still queued like a delivery): the target mailbox, then
 * the items' mailbox id. a == NULL (refused, or the account cannot be
 * opened): every item fails and append_added says why.
 */
static size_t
append_prepare(struct store_account *sa, struct idx_account *a, void *arg)
{
	struct append_job *aj = arg;

	aj->lookup = 1;
	if (a == NULL)
		return aj->n;
	aj->lookup = idx_mailbox_get(a, aj->name, &aj->mb, aj->j.err, sizeof(aj->j.err));
	if (aj->lookup <= 0)
		return 0;
	for (size_t i = 0; i < aj->n; i++)
		aj->items[i].mailbox_id = aj->mb.id;
	return aj->n;
}

int
imap_cmd_append(struct imap_conn *c, struct imap_args *args)
{
	struct append_job *aj = xcalloc(1, sizeof(*aj));
	struct mbuf b;

	mbuf_init(&b, 4 * IDX_MAILBOX_NAME_MAX);
	aj->app = c->app;
	aj->napp = c->napp;
	c->app = NULL;
	c->napp = 0;
	c->app_cur = NULL;
	if (imap_arg_mailbox(c, args, &b) < 0) {
		imap_bad(c, "%s", args->err);
		goto fail;
	}
	aj->name = xstrdup(b.data);
	aj->items = xcalloc(aj->napp ? aj->napp : 1, sizeof(*aj->items));
	aj->kws = xcalloc(aj->napp ? aj->napp : 1, sizeof(*aj->kws));
	while (imap_args_peek(args) != NULL) {
		const struct imap_arg *a = imap_args_peek(args);
		uint32_t flags = 0;
		const char **kw = NULL;
		size_t nkw = 0;
		int64_t t = 0;
		int32_t tz = 0;
		if (a->type == IMAP_ARG_LIST) {
			struct imap_args sub;
			imap_args_list(args, &sub);
			if (imap_flags_parse(c, &sub, &flags, &kw, &nkw) < 0)
				goto fail;
			a = imap_args_peek(args);
		}
		if (a != NULL && a->type == IMAP_ARG_QUOTED) {
			if (parse_date_time(a->str, &t, &tz) < 0) {
				free(kw);
				imap_bad(c, "bad date-time");
				goto fail;
			}
			imap_args_any(args, &a);
			a = imap_args_peek(args);
		}
		if (a == NULL || a->type != IMAP_ARG_LITERAL_EXT || a->literal_index >= 1000 || aj->n >= aj->napp) {
			free(kw);
			imap_bad(c, "APPEND expects a message literal");
			goto fail;
		}
		imap_args_any(args, &a);
		struct idx_add *it = &aj->items[aj->n];
		char e[256];
		if (maildir_writer_finish(aj->app[aj->n].w, MAILDIR_FINISH_NOSYNC, e, sizeof(e)) < 0) {
			free(kw);
			imap_serverbug(c, "finishing spool file", e);
			goto fail;
		}
		it->w = aj->app[aj->n].w;
		it->flags = flags;
		it->keywords = kw;
		it->nkeywords = nkw;
		it->received = t;
		it->received_tz = tz;
		aj->kws[aj->n] = kw;
		aj->n++;
	}
	if (aj->n == 0 || aj->n != aj->napp) {
		imap_bad(c, "APPEND expects a message literal");
		goto fail;
	}
	mbuf_clear(&b);
	aj->j.c = c;
	c->jobs++; /* append_added ends it */
	/* One message too large for the delivery log: synced on a sync thread while the account's is busy. */
	store_add_prepared(c->sa, aj->items, aj->n, aj->n == 1 ? aj->items[0].w : NULL, append_prepare, append_added,
	    aj);
	return IMAP_CMD_ASYNC;
fail:
	mbuf_clear(&b);
	append_job_free(aj);
	return IMAP_CMD_DONE;
}

/* ---- STORE ---- */

struct store_job {
	struct imap_job j;
	uint32_t mailbox_id;
	uint32_t uidvalidity;     /* of the view: uids are its UIDs */
	bool stale;               /* the mailbox has another one now: nothing was stored */
	uint32_t *uids;
	size_t n;
	enum idx_store_mode mode;
	uint32_t flags;
	const char **kw;
	size_t nkw;
	uint64_t unchangedsince;
	uint32_t *failed;
	size_t nfailed;
	uint64_t modseq;
	bool silent;
	struct idx_message *msgs;
	size_t nmsgs;
	uint64_t *before;         /* .SILENT: each msgs[i]'s modseq before this STORE */
};

static void
store_work(struct imap_job *j, struct idx_account *a)
{
	struct store_job *sj = (struct store_job *)j;

	sj->failed = xcalloc(sj->n ? sj->n : 1, sizeof(*sj->failed));
	if ((j->rc = imap_view_uids_valid(a, sj->mailbox_id, sj->uidvalidity, j->err, sizeof(j->err))) <= 0) {
		sj->stale = j->rc == 0;
		return;
	}
	/*
	 * .SILENT answers nothing for the flags it sets, but a change another
	 * session made before it and not yet announced here must still be: its
	 * modseq is below the one this STORE gives, so once the view takes the new
	 * one the pending notification would be skipped. The modseqs before the
	 * STORE tell store_done which messages had such a change.
	 */
	uint64_t *was = NULL;
	if (sj->silent) {
		was = xcalloc(sj->n ? sj->n : 1, sizeof(*was));
		for (size_t i = 0; i < sj->n; i++) {
			struct idx_message m = {0};
			char e[256];
			int r = idx_message_get(a, sj->mailbox_id, sj->uids[i], &m, e, sizeof(e));
			was[i] = r > 0 ? m.modseq : r < 0 ? UINT64_MAX : 0; /* unreadable: announce it */
			idx_message_clear(&m);
		}
	}
	j->rc = idx_store(a, sj->mailbox_id, sj->uids, sj->n, sj->mode, sj->flags, sj->kw, sj->nkw,
	    sj->unchangedsince, sj->unchangedsince ? sj->failed : NULL, &sj->nfailed, &sj->modseq, j->err,
	    sizeof(j->err));
	if (j->rc < 0) {
		free(was);
		return;
	}
	sj->msgs = xcalloc(sj->n ? sj->n : 1, sizeof(*sj->msgs));
	if (was != NULL)
		sj->before = xcalloc(sj->n ? sj->n : 1, sizeof(*sj->before));
	for (size_t i = 0; i < sj->n; i++) {
		if (idx_message_get(a, sj->mailbox_id, sj->uids[i], &sj->msgs[sj->nmsgs], j->err, sizeof(j->err)) <= 0)
			continue;
		if (was != NULL)
			sj->before[sj->nmsgs] = was[i];
		sj->nmsgs++;
	}
	free(was);
}

static void
store_done(struct imap_job *j)
{
	struct store_job *sj = (struct store_job *)j;
	struct imap_conn *c = j->c;

	if (imap_gone(c) || c->sel == NULL)
		goto out;
	if (sj->stale) {
		imap_view_stale(c, sj->mailbox_id);
		goto finish;
	}
	if (j->rc < 0) {
		if (j->rc == IDX_REFUSED)
			imap_no(c, "%s", j->err);
		else
			imap_serverbug(c, "store", j->err);
		goto finish;
	}
	struct imap_view *v = c->sel;
	struct mbuf b;
	bool condstore = (c->enabled & IMAP_EN_CONDSTORE) != 0;
	mbuf_init(&b, (size_t)1 << 30);
	for (size_t i = 0; i < sj->nmsgs; i++) {
		const struct idx_message *m = &sj->msgs[i];
		uint32_t seq = imap_view_seq(v, m->uid);
		if (seq == 0)
			continue;
		bool changed = m->modseq > imap_view_modseq(v, seq - 1);
		/* Another session's change this view has not announced yet (see store_work). */
		bool unannounced = sj->before != NULL && sj->before[i] > imap_view_modseq(v, seq - 1);
		imap_view_set(v, seq - 1, m->flags, m->modseq);
		if (sj->silent && !(changed && sj->unchangedsince) && !unannounced)
			continue;
		mbuf_printf(&b, "* %u FETCH (FLAGS ", seq);
		imap_flags_out(&b, m->flags, m->keywords, m->nkeywords, false);
		if (c->uid)
			mbuf_printf(&b, " UID %u", m->uid);
		if (condstore)
			mbuf_printf(&b, " MODSEQ (%llu)", (unsigned long long)m->modseq);
		mbuf_adds(&b, ")\r\n");
	}
	imap_write(c, b.data, b.len);
	mbuf_reset(&b);
	if (sj->nfailed > 0) {
		for (size_t i = 0; i < sj->nfailed; i++)
			mbuf_printf(&b, "%s%u", i ? "," : "",
			    c->uid ? sj->failed[i] : imap_view_seq(v, sj->failed[i]));
		imap_ok(c, "[MODIFIED %s] conditional STORE failed for some messages", b.data);
	} else {
		imap_ok(c, "STORE completed");
	}
	mbuf_clear(&b);
finish:
	imap_cmd_finish(c);
out:
	free(sj->uids);
	free(sj->kw);
	free(sj->failed);
	for (size_t i = 0; i < sj->nmsgs; i++)
		idx_message_clear(&sj->msgs[i]);
	free(sj->msgs);
	free(sj->before);
	free(sj);
}

int
imap_cmd_store(struct imap_conn *c, struct imap_args *args)
{
	struct imap_seqset set = {0};
	struct store_job *sj = xcalloc(1, sizeof(*sj));
	const char *item;
	size_t len;

	if (imap_args_seqset(args, &set) < 0) {
		imap_bad(c, "%s", args->err);
		goto fail;
	}
	const struct imap_arg *a = imap_args_peek(args);
	if (a != NULL && a->type == IMAP_ARG_LIST) {
		struct imap_args sub;
		imap_args_list(args, &sub);
		if (imap_args_keyword(&sub, "UNCHANGEDSINCE") != 1 || imap_args_number64(&sub, &sj->unchangedsince) < 0 ||
		    imap_args_end(&sub) < 0) {
			imap_bad(c, "bad STORE modifier");
			goto fail;
		}
		c->enabled |= IMAP_EN_CONDSTORE;
		if (sj->unchangedsince == 0)
			sj->unchangedsince = 1; /* nothing has modseq 0: every message fails */
	}
	if (imap_args_atom(args, &item, &len) < 0) {
		imap_bad(c, "%s", args->err);
		goto fail;
	}
	char up[32];
	size_t i;
	for (i = 0; i < len && i < sizeof(up) - 1; i++)
		up[i] = (item[i] >= 'a' && item[i] <= 'z') ? item[i] - 32 : item[i];
	up[i] = 0;
	const char *p = up;
	sj->mode = IDX_STORE_SET;
	if (*p == '+')
		sj->mode = IDX_STORE_ADD, p++;
	else if (*p == '-')
		sj->mode = IDX_STORE_REMOVE, p++;
	if (strcmp(p, "FLAGS.SILENT") == 0)
		sj->silent = true;
	else if (strcmp(p, "FLAGS") != 0) {
		imap_bad(c, "bad STORE item");
		goto fail;
	}
	a = imap_args_peek(args);
	struct imap_args fl;
	if (a != NULL && a->type == IMAP_ARG_LIST) {
		imap_args_list(args, &fl);
	} else {
		/* A single flag or flags without parentheses. */
		fl = *args;
		args->next = NULL;
	}
	if (imap_flags_parse(c, &fl, &sj->flags, &sj->kw, &sj->nkw) < 0)
		goto fail;
	if (imap_args_end(args) < 0) {
		imap_bad(c, "%s", args->err);
		goto fail;
	}
	if (c->sel->readonly) {
		imap_no(c, "[READ-ONLY] mailbox selected read-only");
		goto fail;
	}
	if (imap_view_resolve(c, &set, c->uid, &sj->uids, &sj->n) < 0) {
		imap_bad(c, "invalid message sequence number");
		goto fail;
	}
	imap_seqset_clear(&set);
	sj->mailbox_id = c->sel->mailbox_id;
	sj->uidvalidity = c->sel->uidvalidity;
	sj->j.work = store_work;
	sj->j.done = store_done;
	imap_submit(c, &sj->j);
	return IMAP_CMD_ASYNC;
fail:
	imap_seqset_clear(&set);
	free(sj->uids);
	free(sj->kw);
	free(sj);
	return IMAP_CMD_DONE;
}

/* ---- EXPUNGE, CLOSE, UNSELECT, COPY, MOVE ---- */

struct msgs_job {
	struct imap_job j;
	uint32_t mailbox_id;
	uint32_t *uids;           /* NULL: every \Deleted message (EXPUNGE/CLOSE) */
	size_t n;
	uint32_t *out;            /* expunged or new UIDs */
	size_t nout;
	char *dest;
	struct idx_mailbox destmb;
	bool move, copy, close, silent;
	uint32_t total;
	uint32_t uidvalidity;     /* of the view: uids are its UIDs */
	bool stale;               /* the mailbox has another one now: nothing was done */
};

static void
msgs_work(struct imap_job *j, struct idx_account *a)
{
	struct msgs_job *mj = (struct msgs_job *)j;

	/*
	 * CLOSE expunges the \Deleted messages, the same ones under any UIDs, and
	 * announces nothing. EXPUNGE without UIDs does too, but announces the
	 * UIDs it removed: they must be the view's.
	 */
	if (!mj->close &&
	    (j->rc = imap_view_uids_valid(a, mj->mailbox_id, mj->uidvalidity, j->err, sizeof(j->err))) <= 0) {
		mj->stale = j->rc == 0;
		return;
	}
	if (mj->copy) {
		j->rc = idx_mailbox_get(a, mj->dest, &mj->destmb, j->err, sizeof(j->err));
		if (j->rc <= 0)
			return;
		mj->out = xcalloc(mj->n ? mj->n : 1, sizeof(*mj->out));
		if (mj->move)
			j->rc = idx_move(a, mj->mailbox_id, mj->uids, mj->n, mj->destmb.id, mj->out, j->err, sizeof(j->err));
		else
			j->rc = idx_copy(a, mj->mailbox_id, mj->uids, mj->n, mj->destmb.id, mj->out, &j->error, j->err,
			    sizeof(j->err));
		if (j->rc >= 0) {
			mj->nout = (size_t)j->rc;
			j->rc = 1;
		}
		return;
	}
	mj->out = xcalloc(mj->uids ? (mj->n ? mj->n : 1) : (mj->total ? mj->total : 1) + 1, sizeof(*mj->out));
	j->rc = idx_expunge(a, mj->mailbox_id, mj->uids, mj->n, mj->out, j->err, sizeof(j->err));
	if (j->rc >= 0) {
		mj->nout = (size_t)j->rc;
		j->rc = 1;
	}
}

static int
cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
	return x < y ? -1 : x > y;
}

static void
uidset_out(struct mbuf *b, const uint32_t *u, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		size_t k = i;
		while (k + 1 < n && u[k + 1] == u[k] + 1)
			k++;
		if (k > i)
			mbuf_printf(b, "%s%u:%u", i ? "," : "", u[i], u[k]);
		else
			mbuf_printf(b, "%s%u", i ? "," : "", u[i]);
		i = k;
	}
}

static void
msgs_done(struct imap_job *j)
{
	struct msgs_job *mj = (struct msgs_job *)j;
	struct imap_conn *c = j->c;

	if (imap_gone(c))
		goto out;
	if (mj->stale) {
		imap_view_stale(c, mj->mailbox_id);
		goto finish;
	}
	if (j->rc <= 0) {
		if (j->rc == 0)
			imap_no(c, "[TRYCREATE] no such mailbox");
		else if (j->error == IDX_E_OVERQUOTA)
			imap_no(c, "[OVERQUOTA] account over quota");
		else if (j->rc == IDX_REFUSED)
			imap_no(c, "%s", j->err);
		else
			imap_serverbug(c, c->cmd->name, j->err);
		goto finish;
	}
	if (mj->copy) {
		struct mbuf b;
		mbuf_init(&b, (size_t)1 << 30);
		if (mj->nout > 0) {
			mbuf_printf(&b, "[COPYUID %u ", mj->destmb.uidvalidity);
			uidset_out(&b, mj->uids, mj->nout);
			mbuf_adds(&b, " ");
			uidset_out(&b, mj->out, mj->nout);
			mbuf_adds(&b, "] ");
		}
		if (mj->move) {
			if (b.len > 0)
				imap_printf(c, "* OK %s\r\n", b.data);
			if (c->sel != NULL)
				imap_view_expunged(c, mj->uids, mj->nout);
			imap_ok(c, "MOVE completed");
		} else {
			imap_ok(c, "%sCOPY completed", b.data != NULL ? b.data : "");
		}
		mbuf_clear(&b);
		goto finish;
	}
	qsort(mj->out, mj->nout, sizeof(*mj->out), cmp_u32);
	if (mj->close) {
		imap_view_free(c);
		imap_set_state(c, IMAP_ST_AUTH);
		imap_ok(c, "CLOSE completed");
		goto finish;
	}
	if (c->sel != NULL)
		imap_view_expunged(c, mj->out, mj->nout);
	imap_ok(c, "EXPUNGE completed");
finish:
	imap_cmd_finish(c);
out:
	free(mj->uids);
	free(mj->out);
	free(mj->dest);
	idx_mailbox_clear(&mj->destmb);
	free(mj);
}

static int
msgs_cmd(struct imap_conn *c, struct imap_args *args, bool copy, bool move)
{
	struct msgs_job *mj = xcalloc(1, sizeof(*mj));
	struct imap_seqset set = {0};
	struct mbuf b;

	mbuf_init(&b, 4 * IDX_MAILBOX_NAME_MAX);
	mj->mailbox_id = c->sel->mailbox_id;
	mj->uidvalidity = c->sel->uidvalidity;
	mj->total = (uint32_t)c->sel->n;
	mj->copy = copy;
	mj->move = move;
	if (copy || c->uid) {
		if (imap_args_seqset(args, &set) < 0) {
			imap_bad(c, "%s", args->err);
			goto fail;
		}
	}
	if (copy) {
		if (imap_arg_mailbox(c, args, &b) < 0) {
			imap_bad(c, "%s", args->err);
			goto fail;
		}
		mj->dest = xstrdup(b.data);
	}
	if (imap_args_end(args) < 0) {
		imap_bad(c, "%s", args->err);
		goto fail;
	}
	if ((move || !copy) && c->sel->readonly) {
		imap_no(c, "[READ-ONLY] mailbox selected read-only");
		goto fail;
	}
	if (copy || c->uid) {
		if (imap_view_resolve(c, &set, c->uid, &mj->uids, &mj->n) < 0) {
			imap_bad(c, "invalid message sequence number");
			goto fail;
		}
		if (mj->uids == NULL && copy) {
			imap_ok(c, "nothing to %s", move ? "move" : "copy");
			goto fail;
		}
		if (mj->uids == NULL) {
			imap_ok(c, "EXPUNGE completed");
			goto fail;
		}
	}
	imap_seqset_clear(&set);
	mbuf_clear(&b);
	mj->j.work = msgs_work;
	mj->j.done = msgs_done;
	imap_submit(c, &mj->j);
	return IMAP_CMD_ASYNC;
fail:
	imap_seqset_clear(&set);
	mbuf_clear(&b);
	free(mj->uids);
	free(mj->dest);
	free(mj);
	return IMAP_CMD_DONE;
}

int imap_cmd_copy(struct imap_conn *c, struct imap_args *args) { return msgs_cmd(c, args, true, false); }
int imap_cmd_move(struct imap_conn *c, struct imap_args *args) { return msgs_cmd(c, args, true, true); }
int imap_cmd_expunge(struct imap_conn *c, struct imap_args *args) { return msgs_cmd(c, args, false, false); }

int
imap_cmd_close(struct imap_conn *c, struct imap_args *args)
{
	if (imap_args_end(args) < 0) {
		imap_bad(c, "%s", args->err);
		return IMAP_CMD_DONE;
	}
	if (c->sel->readonly) {
		imap_view_free(c);
		imap_set_state(c, IMAP_ST_AUTH);
		imap_ok(c, "CLOSE completed");
		return IMAP_CMD_DONE;
	}
	struct msgs_job *mj = xcalloc(1, sizeof(*mj));
	mj->mailbox_id = c->sel->mailbox_id;
	mj->total = (uint32_t)c->sel->n;
	mj->close = true;
	mj->j.work = msgs_work;
	mj->j.done = msgs_done;
	imap_submit(c, &mj->j);
	return IMAP_CMD_ASYNC;
}

int
imap_cmd_unselect(struct imap_conn *c, struct imap_args *args)
{
	if (imap_args_end(args) < 0) {
		imap_bad(c, "%s", args->err);
		return IMAP_CMD_DONE;
	}
	imap_view_free(c);
	imap_set_state(c, IMAP_ST_AUTH);
	imap_ok(c, "UNSELECT completed");
	return IMAP_CMD_DONE;
}

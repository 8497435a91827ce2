/*
 * smtp_deliver: recipients and local delivery for the SMTP server.
 *
 * RCPT resolves the address against the config (daemon/resolve.h) and
 * refuses what it can refuse right away, because SMTP has one reply for the
 * whole message after DATA: unknown users (550 5.1.1), foreign domains on
 * port 25 (550 5.7.1), a declared SIZE over the account's MaxMessageSize
 * (552 5.3.4), an account over its quota (552 5.2.2 when the message can
 * never fit, 452 4.2.2 while the account is full), an account known to fail
 * every add (451 4.3.0: it could not be opened, or its index needs a restart
 * after a failed fdatasync; refused here, the other recipients' copy is not
 * repeated by the client's retries). Submission to a foreign
 * domain needs the outbound queue, which does not exist yet: 451 4.3.0,
 * except in localserve, where every message goes to the one account as the
 * Go mox does. localserve also fails recipients on request: localpart
 * "temperror" (451), "permerror" (550), or a code like "452"/"554".
 * The recipient's domain is kept in its canonical form (idn.h), so both
 * spellings of an internationalized domain reach the same account; a domain
 * libidn2 refuses (bad punycode, disallowed code points, too long) gets
 * 501 5.1.3. The address in logs and the Received header stays as sent.
 *
 * After the message is in the spool file, each recipient's mailbox is chosen
 * by its destination's rulesets (first match wins; else the destination's
 * mailbox, else INBOX). A ruleset matches when all its conditions do:
 * SMTPMailFromRegexp on the MAIL FROM address, every HeadersRegexp pair
 * (header name pattern on the lower-cased name, value pattern on the
 * unfolded, trimmed, lower-cased value; one header instance suffices), and
 * VerifiedDomain: that domain or a subdomain of it was verified for the
 * message by SPF (pass) or DKIM (a pass with a non-testing key), checked
 * only on the SMTP port with a resolver (smtp_data.c); submitted mail has
 * no verified domains. Patterns are PCRE2,
 * compiled once per config with JIT (falling back to the interpreter when
 * the JIT is not available) and run with a match limit (daemon/smtp_rules.h).
 *
 * Delivery: accounts one after another (a writer is never used by two
 * storage threads at once): one store_add_prepared per account, which on the
 * account's thread looks up (or creates) the target mailboxes, makes one
 * item per distinct mailbox, then syncs and commits with the batch. Only
 * then is the spool file removed and the client answered.
 *
 * Failures found only now cannot be reported per recipient: SMTP has one
 * reply for the whole message. The rule is that no mail is ever lost:
 *  - a temporary failure (storage error, account not available or removed
 *    by a reload, refused at shutdown) for any recipient gets 451 4.3.0
 *    (4.3.2 and its own text at shutdown), also when other recipients got
 *    the message, and one info line names the recipients that failed. The
 *    client sends the message again; the recipients that have it get it
 *    twice: a duplicate is better than a loss.
 *  - a permanent failure (quota reached meanwhile, MaxMessageSize without a
 *    declared SIZE) with at least one recipient stored gets 250 and a log
 *    line: a 5xx would bounce the message for the recipients that have it,
 *    and there is no queue for bounce messages yet.
 *  - with no recipient stored, the answer is the permanent error when every
 *    failure was permanent, else 451 (4.3.0, or 4.3.2 at shutdown).
 */
#define _GNU_SOURCE 1
#include "daemon/smtp_private.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <tcutil.h>

#include "daemon/idn.h"
#include "daemon/log.h"
#include "daemon/resolve.h"
#include "daemon/smtp_rules.h"
#include "daemon/store.h"
#include "maildir/maildir.h"

#define ITEM(arr, type, i) (&((const type *)(arr).v)[i])

/* ---- rulesets: compiled once per config (loop thread) ---- */

static struct smtp_rules *rules;

static void
rules_report(void *arg, const char *key, const char *pattern, const char *msg)
{
	log_error(SMTP_PKG, 0, "ruleset pattern does not compile, ruleset ignored", "key", key, "pattern", pattern,
	    "err", msg);
}

void
smtp_rulesets_free(void)
{
	smtp_rules_free(&rules);
}

static struct smtp_rules *
rules_for(const struct config *cfg)
{
	if (rules != NULL && smtp_rules_config(rules) != cfg)
		smtp_rules_free(&rules);
	if (rules == NULL)
		rules = smtp_rules_new(cfg, rules_report, NULL);
	return rules;
}

/* ---- recipients ---- */

/* localserve: the one account that takes every message. */
static const char *
localserve_account(const struct config *cfg)
{
	if (cfg->st.postmaster.account != NULL && config_account_find(cfg, cfg->st.postmaster.account) != NULL)
		return cfg->st.postmaster.account;
	if (cfg->dom.accounts.n > 0)
		return ITEM(cfg->dom.accounts, struct config_account, 0)->name;
	return NULL;
}

/* localserve error injection by localpart; returns the code or 0. */
static int
localserve_inject(const char *lp)
{
	if (strcasecmp(lp, "temperror") == 0)
		return 451;
	if (strcasecmp(lp, "permerror") == 0)
		return 550;
	if ((lp[0] == '4' || lp[0] == '5') && isdigit((unsigned char)lp[1]) && isdigit((unsigned char)lp[2]) && lp[3] == '\0')
		return atoi(lp);
	return 0;
}

struct rcpt_check {
	struct smtp_conn *c;
	struct smtp_rcpt r;
	struct store_account *sa;
	uint64_t quota, used;
	bool ok;
};

static void
rcpt_free(struct smtp_rcpt *r)
{
	free(r->addr);
	free(r->localpart);
	free(r->domain);
	free(r->account);
}

static void
rcpt_accept(struct smtp_conn *c, struct smtp_rcpt *r)
{
	struct smtp_txn *t = c->txn;

	if (t->nrcpts == t->rcpt_cap) {
		t->rcpt_cap = t->rcpt_cap ? 2 * t->rcpt_cap : 4;
		t->rcpts = xrealloc(t->rcpts, t->rcpt_cap * sizeof(*t->rcpts));
	}
	t->rcpts[t->nrcpts++] = *r;
	memset(r, 0, sizeof(*r));
	smtp_set_state(c, SMTP_ST_RCPT);
	smtp_reply(c, 250, "2.1.5", "OK");
}

static void
quota_work(struct store_account *sa, struct idx_account *a, void *arg)
{
	struct rcpt_check *rc = arg;
	struct idx_account_info info;
	char err[256];

	rc->ok = a != NULL && idx_account_info(a, &info, err, sizeof(err)) > 0;
	if (rc->ok) {
		rc->quota = info.quota;
		rc->used = info.quota_used;
	}
}

static void
quota_done(void *arg)
{
	struct rcpt_check *rc = arg;
	struct smtp_conn *c = rc->c;
	struct smtp_txn *t = c->txn;
	const struct config_account *acc = config_account_find(smtp_cfg(c), rc->r.account);
	uint64_t quota = acc != NULL && acc->quota_message_size > 0 ? (uint64_t)acc->quota_message_size : 0;

	c->flags &= ~SMTP_F_JOB;
	store_account_put(&rc->sa);
	if (c->flags & SMTP_F_DEAD) {
		rcpt_free(&rc->r);
		free(rc);
		smtp_conn_release(c);
		return;
	}
	if (rc->ok && rc->quota > 0)
		quota = rc->quota;
	if (!rc->ok) {
		log_error(SMTP_PKG, c->ci->cid, "cannot read account quota", "account", rc->r.account);
		smtp_reply(c, 451, "4.3.0", "temporary error, try again later");
	} else if (quota > 0 && t->declared_size > quota) {
		smtp_reply(c, 552, "5.2.2", "message larger than the mailbox quota");
	} else if (quota > 0 && (rc->used >= quota || rc->used + t->declared_size > quota)) {
		log_info(SMTP_PKG, c->ci->cid, "recipient over quota", "rcpt", rc->r.addr);
		smtp_reply(c, 452, "4.2.2", "mailbox full, try again later");
	} else {
		rcpt_accept(c, &rc->r);
	}
	rcpt_free(&rc->r);
	free(rc);
	smtp_resume(c, t->nrcpts > 0 ? SMTP_ST_RCPT : SMTP_ST_MAIL);
}

void
smtp_cmd_rcpt(struct smtp_conn *c, struct smtp_cmd *cmd)
{
	const struct config *cfg = smtp_cfg(c);
	struct smtp_txn *t = c->txn;
	struct smtp_rcpt r = {0};
	struct resolved res;
	const char *account = NULL;
	int code;

	if (t->bdat) {
		smtp_reply(c, 503, "5.5.1", "RCPT not allowed after BDAT");
		smtp_error(c);
		return;
	}
	if (t->nrcpts >= (size_t)cfg->st.limits.smtp_max_recipients) {
		smtp_reply(c, 452, "4.5.3", "too many recipients");
		return;
	}
	r.localpart = xstrndup(cmd->path.localpart.p, cmd->path.localpart.len);
	r.domain = xstrndup(cmd->path.domain.p, cmd->path.domain.len);
	for (char *q = r.domain; *q; q++)
		*q = (char)tolower((unsigned char)*q);
	if (cmd->path.flags & SMTP_ADDR_POSTMASTER)
		r.addr = xstrdup("postmaster");
	else
		r.addr = xasprintf("%.*s@%s", (int)cmd->path.localpart_canon.len, cmd->path.localpart_canon.p, r.domain);
	log_debug(SMTP_PKG, c->ci->cid, "rcpt to", "rcpt", r.addr);
	if (!(cmd->path.flags & (SMTP_ADDR_POSTMASTER | SMTP_ADDR_LITERAL))) {
		char canon[IDN_BUFSIZE], ierr[160];
		if (idn_domain_canon(r.domain, strlen(r.domain), canon, sizeof(canon), ierr, sizeof(ierr)) < 0) {
			log_debug(SMTP_PKG, c->ci->cid, "invalid recipient domain", "rcpt", r.addr, "err", ierr);
			smtp_reply(c, 501, "5.1.3", "invalid recipient domain: %s", ierr);
			smtp_error(c);
			goto out;
		}
		free(r.domain);
		r.domain = xstrdup(canon);
	}

	if (cfg->st.local_serve && (code = localserve_inject(r.localpart)) != 0) {
		smtp_reply(c, code, code >= 500 ? "5.0.0" : "4.0.0", "error injected by localserve for this localpart");
		goto out;
	}
	if (cmd->path.flags & SMTP_ADDR_POSTMASTER) {
		account = cfg->st.postmaster.account;
	} else if (cmd->path.flags & SMTP_ADDR_LITERAL) {
		smtp_reply(c, 550, "5.7.1", "relaying not permitted");
		goto out;
	} else {
		int rr = resolve_recipient(cfg, r.localpart, r.domain, &res);
		if (rr > 0) {
			account = res.account->name;
		} else if (rr == 0) {
			smtp_reply(c, 550, "5.1.1", "no such user");
			smtp_error(c);
			goto out;
		} else if (!(c->flags & SMTP_F_SUBMIT)) {
			smtp_reply(c, 550, "5.7.1", "relaying not permitted");
			smtp_error(c);
			goto out;
		} else if (cfg->st.local_serve) {
			account = localserve_account(cfg);
			r.local_any = true;
		} else {
			/* The outbound queue does not exist yet. */
			smtp_reply(c, 451, "4.3.0", "queue for remote delivery not yet available");
			goto out;
		}
	}
	const struct config_account *acc = account ? config_account_find(cfg, account) : NULL;
	if (acc == NULL) {
		smtp_reply(c, 550, "5.1.1", "no such user");
		goto out;
	}
	r.account = xstrdup(acc->name);
	if (acc->max_message_size > 0 && t->declared_size > (uint64_t)acc->max_message_size) {
		smtp_reply(c, 552, "5.3.4", "message too large for this recipient");
		goto out;
	}
	struct store *st = server_store(c->srv);
	if (st != NULL) {
		/*
		 * An account known to fail every add gets 451 now, for this recipient
		 * only: after DATA its failure would fail the whole message (451, so no
		 * copy is lost), and each retry would give the other recipients one
		 * more copy for as long as it stays broken.
		 */
		struct store_account *sa = store_account_get(st, acc->name);
		bool usable = sa == NULL || store_account_usable(sa);
		store_account_put(&sa);
		if (!usable) {
			log_info(SMTP_PKG, c->ci->cid, "recipient's account unavailable", "rcpt", r.addr, "account", acc->name);
			smtp_reply(c, 451, "4.3.0", "mailbox temporarily unavailable, try again later");
			goto out;
		}
	}
	if (acc->quota_message_size > 0 && st != NULL) {
		struct rcpt_check *rc = xcalloc(1, sizeof(*rc));
		rc->c = c;
		rc->r = r;
		rc->sa = store_account_get(st, acc->name);
		if (rc->sa == NULL) {
			free(rc);
			smtp_reply(c, 451, "4.3.0", "temporary error, try again later");
			goto out;
		}
		c->flags |= SMTP_F_JOB;
		smtp_set_state(c, SMTP_ST_BUSY);
		store_submit(rc->sa, quota_work, quota_done, rc);
		return;
	}
	rcpt_accept(c, &r);
out:
	rcpt_free(&r);
}

/* ---- mailbox choice ---- */

bool
smtp_deliver_want_header(struct smtp_conn *c)
{
	const struct config *cfg = smtp_cfg(c);
	struct smtp_txn *t = c->txn;
	struct resolved res;

	for (size_t i = 0; i < t->nrcpts; i++) {
		if (t->rcpts[i].local_any || resolve_recipient(cfg, t->rcpts[i].localpart, t->rcpts[i].domain, &res) <= 0 ||
		    res.dest == NULL)
			continue;
		for (size_t k = 0; k < res.dest->rulesets.n; k++)
			if (ITEM(res.dest->rulesets, struct config_ruleset, k)->headers_regexp.n > 0)
				return true;
	}
	return false;
}

/* The mailbox for one recipient (static or config string). */
static const char *
choose_mailbox(struct smtp_conn *c, const struct smtp_rcpt *r, const struct smtp_hfield *h, size_t nh)
{
	const struct config *cfg = smtp_cfg(c);
	struct resolved res;
	const char *mb;
	bool limit = false;

	if (r->local_any)
		return "INBOX";
	if (strcmp(r->addr, "postmaster") == 0)
		return cfg->st.postmaster.mailbox ? cfg->st.postmaster.mailbox : "INBOX";
	if (resolve_recipient(cfg, r->localpart, r->domain, &res) <= 0)
		return "INBOX";
	if (res.dest == NULL)
		return res.mailbox;
	const char *const *verified;
	size_t nverified = smtp_verify_domains(c->txn, &verified);
	mb = smtp_rules_mailbox(rules_for(cfg), res.dest, c->txn->mail_from, verified, nverified, h, nh, &limit);
	if (limit)
		log_info(SMTP_PKG, c->ci->cid, "ruleset pattern hit the match limit, taken as no match", "rcpt", r->addr);
	return mb != NULL ? mb : res.mailbox;
}

/* ---- delivery ---- */

enum rcpt_result { RR_PENDING, RR_OK, RR_TEMP, RR_PERM_SIZE, RR_PERM_QUOTA };

struct dacct {
	char *account;
	struct store_account *sa;
	const char **mailboxes; /* distinct, config strings or static */
	uint32_t *mbids;
	size_t nmb;
	struct idx_add *items;
	size_t nitems;
	char err[256]; /* storage thread's error, logged on the loop thread */
};

struct smtp_deliv {
	struct smtp_conn *c;
	struct dacct *accts;
	size_t nacct, cur;
	/* per recipient: account index, mailbox index, result */
	size_t *racct, *rmb;
	enum rcpt_result *rres;
	bool file_synced; /* the spool file is durable (an earlier account's add succeeded) */
};

void
smtp_deliv_free(struct smtp_deliv **dp)
{
	struct smtp_deliv *d = *dp;

	if (d == NULL)
		return;
	for (size_t i = 0; i < d->nacct; i++) {
		struct dacct *a = &d->accts[i];
		store_account_put(&a->sa);
		free(a->account);
		free(a->mailboxes);
		free(a->mbids);
		free(a->items);
	}
	free(d->accts);
	free(d->racct);
	free(d->rmb);
	free(d->rres);
	free(d);
	*dp = NULL;
}

static void deliver_next(struct smtp_deliv *d);

/* All accounts done: remove the spool file and answer. */
static void
deliver_finish(struct smtp_deliv *d)
{
	struct smtp_conn *c = d->c;
	struct smtp_txn *t = c->txn;
	size_t ok = 0, temp = 0, quota = 0, size = 0;
	TCXSTR *failed = tcxstrnew(); /* recipients with a temporary failure, for the log */
	char err[256];

	for (size_t i = 0; i < t->nrcpts; i++) {
		switch (d->rres[i]) {
		case RR_OK:
			ok++;
			break;
		case RR_PERM_QUOTA:
			quota++;
			log_info(SMTP_PKG, c->ci->cid, "delivery failed", "rcpt", t->rcpts[i].addr, "reason", "over quota");
			break;
		case RR_PERM_SIZE:
			size++;
			log_info(SMTP_PKG, c->ci->cid, "delivery failed", "rcpt", t->rcpts[i].addr, "reason",
			    "message too large for account");
			break;
		default:
			temp++;
			log_info(SMTP_PKG, c->ci->cid, "delivery failed", "rcpt", t->rcpts[i].addr, "reason", "temporary error");
			if (tcxstrsize(failed) > 0)
				tcxstrcat2(failed, " ");
			tcxstrcat2(failed, t->rcpts[i].addr);
			break;
		}
	}
	if (t->w != NULL && maildir_writer_remove(t->w, err, sizeof(err)) < 0)
		log_error(SMTP_PKG, c->ci->cid, "removing spool file", "err", err);
	smtp_deliv_free(&c->deliv);
	if (ok > 0 && temp > 0) {
		/*
		 * Some recipients have the message, others failed for now (a storage
		 * error, or refused at the end of ShutdownTimeout): a 250 would lose
		 * their copy. The client sends it again later; the recipients that
		 * have it get it twice.
		 */
		char n[32];
		snprintf(n, sizeof(n), "%zu", ok);
		log_info(SMTP_PKG, c->ci->cid, "message stored for some recipients only: 451", "from", t->mail_from,
		    "stored", n, "failed", tcxstrptr(failed), "stopping", server_stopping(c->srv) ? "true" : "false");
		if (server_stopping(c->srv))
			smtp_reply(c, 451, "4.3.2",
			    "server shutting down, message not accepted for every recipient, try again later");
		else
			smtp_reply(c, 451, "4.3.0", "message not stored for every recipient, try again later");
	} else if (ok > 0) {
		char n[32];
		snprintf(n, sizeof(n), "%zu", ok);
		log_info(SMTP_PKG, c->ci->cid, "message delivered", "from", t->mail_from, "recipients", n, "remote",
		    c->ci->remote_ip);
		smtp_reply(c, 250, "2.0.0", "message delivered");
	} else if (temp == 0 && quota > 0) {
		smtp_reply(c, 552, "5.2.2", "mailbox full");
	} else if (temp == 0 && size > 0) {
		smtp_reply(c, 552, "5.3.4", "message too large for recipient");
	} else if (server_stopping(c->srv)) {
		/* Not stored: the store refused it at the end of ShutdownTimeout. */
		smtp_reply(c, 451, "4.3.2", "server shutting down, message not accepted, try again later");
	} else {
		smtp_reply(c, 451, "4.3.0", "error delivering message, try again later");
	}
	tcxstrdel(failed);
	smtp_txn_free(&c->txn);
	smtp_resume(c, SMTP_ST_READY);
}

/* The job of a dead connection finished: drop everything. */
static bool
deliver_dead(struct smtp_deliv *d)
{
	struct smtp_conn *c = d->c;

	c->flags &= ~SMTP_F_JOB;
	if (!(c->flags & SMTP_F_DEAD))
		return false;
	smtp_deliv_free(&c->deliv);
	smtp_conn_release(c);
	return true;
}

static void
add_done(void *arg)
{
	struct smtp_deliv *d = arg;
	struct dacct *a = &d->accts[d->cur];
	struct smtp_txn *t;

	if (deliver_dead(d))
		return;
	t = d->c->txn;
	if (a->nitems == 0 && server_stopping(d->c->srv))
		/* Refused at the end of ShutdownTimeout: expected, the client gets 451 4.3.2. */
		log_info(SMTP_PKG, d->c->ci->cid, "message not stored", "account", a->account, "err", a->err);
	else if (a->nitems == 0)
		log_error(SMTP_PKG, d->c->ci->cid, "message not stored", "account", a->account, "err", a->err);
	for (size_t i = 0; i < t->nrcpts; i++) {
		if (d->racct[i] != d->cur || d->rres[i] != RR_PENDING)
			continue;
		const struct idx_add *it = NULL;
		for (size_t k = 0; k < a->nitems; k++)
			if (a->items[k].mailbox_id == a->mbids[d->rmb[i]])
				it = &a->items[k];
		if (it != NULL && it->result > 0) {
			d->rres[i] = RR_OK;
			d->file_synced = true;
		}
		else if (it != NULL && it->error == IDX_E_OVERQUOTA)
			d->rres[i] = RR_PERM_QUOTA;
		else
			d->rres[i] = RR_TEMP;
		if (it != NULL && it->result <= 0 && it->error != IDX_E_OVERQUOTA)
			log_error(SMTP_PKG, d->c->ci->cid, "adding message failed", "account", a->account, "err", it->err_r);
	}
	d->cur++;
	deliver_next(d);
}

/*
 * Storage thread, before the add: the ids of the target mailboxes (created
 * when missing), one item per distinct mailbox. The loop thread does not
 * touch d or the transaction until add_done.
 */
static size_t
add_prepare(struct store_account *sa, struct idx_account *ia, void *arg)
{
	struct smtp_deliv *d = arg;
	struct dacct *a = &d->accts[d->cur];
	const struct smtp_txn *t = d->c->txn;

	a->nitems = 0;
	if (ia == NULL) {
		snprintf(a->err, sizeof(a->err), "%s", store_account_error(sa));
		return 0;
	}
	for (size_t i = 0; i < a->nmb; i++) {
		struct idx_mailbox mb = {0};
		int r = idx_mailbox_get(ia, a->mailboxes[i], &mb, a->err, sizeof(a->err));
		if (r > 0)
			a->mbids[i] = mb.id;
		else if (r == 0 && idx_mailbox_create(ia, a->mailboxes[i], 0, true, &a->mbids[i], a->err,
			     sizeof(a->err)) >= 0)
			r = 1;
		idx_mailbox_clear(&mb);
		if (r <= 0)
			a->mbids[i] = 0;
	}
	for (size_t i = 0; i < a->nmb; i++) {
		bool dup = false;
		for (size_t k = 0; k < a->nitems; k++)
			dup |= a->items[k].mailbox_id == a->mbids[i];
		if (a->mbids[i] == 0 || dup)
			continue; /* "Inbox" and "INBOX" are one mailbox: one item */
		struct idx_add *it = &a->items[a->nitems++];
		memset(it, 0, sizeof(*it));
		it->w = t->w;
		it->mailbox_id = a->mbids[i];
		it->prefix_len = t->prefix_len;
		it->synced = d->file_synced;
	}
	return a->nitems;
}

static void
deliver_next(struct smtp_deliv *d)
{
	struct smtp_conn *c = d->c;
	struct store *st = server_store(c->srv);

	while (d->cur < d->nacct) {
		struct dacct *a = &d->accts[d->cur];
		bool pending = false;
		for (size_t i = 0; i < c->txn->nrcpts; i++)
			pending |= d->racct[i] == d->cur && d->rres[i] == RR_PENDING;
		if (pending && st != NULL && (a->sa = store_account_get(st, a->account)) != NULL) {
			c->flags |= SMTP_F_JOB;
			a->items = xcalloc(a->nmb, sizeof(*a->items));
			/* The first account's job syncs the spool file; the others find it synced. */
			store_add_prepared(a->sa, a->items, a->nmb, d->file_synced ? NULL : c->txn->w, add_prepare, add_done, d);
			return;
		}
		for (size_t i = 0; i < c->txn->nrcpts; i++)
			if (d->racct[i] == d->cur && d->rres[i] == RR_PENDING)
				d->rres[i] = RR_TEMP;
		if (pending)
			log_error(SMTP_PKG, c->ci->cid, "account store not available", "account", a->account);
		d->cur++;
	}
	deliver_finish(d);
}

void
smtp_deliver(struct smtp_conn *c)
{
	const struct config *cfg = smtp_cfg(c);
	struct smtp_txn *t = c->txn;
	struct smtp_deliv *d = xcalloc(1, sizeof(*d));
	struct smtp_hfield *h = NULL;
	size_t nh = 0;

	if (t->want_header)
		nh = smtp_hfields_parse(t->header.data ? t->header.data : "", t->header.len, &h);
	d->c = c;
	d->accts = xcalloc(t->nrcpts, sizeof(*d->accts));
	d->racct = xcalloc(t->nrcpts, sizeof(*d->racct));
	d->rmb = xcalloc(t->nrcpts, sizeof(*d->rmb));
	d->rres = xcalloc(t->nrcpts, sizeof(*d->rres));
	for (size_t i = 0; i < t->nrcpts; i++) {
		const struct smtp_rcpt *r = &t->rcpts[i];
		const struct config_account *acc = config_account_find(cfg, r->account);
		const char *mbox = choose_mailbox(c, r, h, nh);
		size_t ai, mi;

		if (acc == NULL) {
			d->rres[i] = RR_TEMP; /* removed by a config reload meanwhile */
			continue;
		}
		if (acc->max_message_size > 0 && t->size > (uint64_t)acc->max_message_size) {
			d->rres[i] = RR_PERM_SIZE;
			continue;
		}
		for (ai = 0; ai < d->nacct && strcmp(d->accts[ai].account, acc->name) != 0; ai++)
			;
		if (ai == d->nacct) {
			d->accts[ai].account = xstrdup(acc->name);
			d->accts[ai].mailboxes = xcalloc(t->nrcpts, sizeof(char *));
			d->accts[ai].mbids = xcalloc(t->nrcpts, sizeof(uint32_t));
			d->nacct++;
		}
		struct dacct *a = &d->accts[ai];
		for (mi = 0; mi < a->nmb && strcmp(a->mailboxes[mi], mbox) != 0; mi++)
			;
		if (mi == a->nmb)
			a->mailboxes[a->nmb++] = mbox;
		d->racct[i] = ai;
		d->rmb[i] = mi;
		log_debug(SMTP_PKG, c->ci->cid, "delivering", "rcpt", r->addr, "account", acc->name, "mailbox", mbox);
	}
	smtp_hfields_free(&h, nh);
	c->deliv = d;
	smtp_set_state(c, SMTP_ST_BUSY);
	bufferevent_disable(c->bev, EV_READ);
	deliver_next(d);
}

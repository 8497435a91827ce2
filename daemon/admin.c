/* admin: secrets loading and account commands on the control socket. */
#define _GNU_SOURCE 1
#include "daemon/admin.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/admin_tools.h"
#include "daemon/auth.h"
#include "daemon/log.h"
#include "daemon/sasl.h"
#include "daemon/store.h"
#include "index/index.h"

int
admin_set_password(struct idx_account *a, const char *password, void **blob_r, size_t *len_r, char *err,
    size_t errlen)
{
	struct sasl_secrets sec;
	struct mbuf b;
	const char *e = NULL;
	int r = -1;

	if (sasl_secrets_derive(password, 0, &sec, &e) < 0) {
		snprintf(err, errlen, "%s", e ? e : "cannot derive secrets");
		return -1;
	}
	mbuf_init(&b, 4096);
	if (sasl_secrets_serialize(&sec, &b) < 0) {
		snprintf(err, errlen, "cannot serialize secrets");
		goto out;
	}
	if (idx_secrets_set(a, b.data, b.len, err, errlen) < 0)
		goto out;
	if (blob_r != NULL) {
		*blob_r = xmalloc(b.len);
		memcpy(*blob_r, b.data, b.len);
		*len_r = b.len;
	}
	r = 1;
out:
	sasl_secrets_clear(&sec);
	if (b.data != NULL)
		memset(b.data, 0, b.len);
	mbuf_clear(&b);
	return r;
}

/* Loading one account's secrets: work on its storage thread, result on the loop. */
struct load {
	struct server *srv;
	struct store_account *sa;
	bool local_default;
	void *blob;
	size_t len;
	char err[256];
	int ok;
	bool reload; /* after a failed open: not one of the loads the listeners wait for */
};

static void
load_work(struct store_account *sa, struct idx_account *a, void *arg)
{
	struct load *l = arg;

	if (a == NULL) {
		snprintf(l->err, sizeof(l->err), "%s", store_account_error(sa));
		return;
	}
	l->ok = idx_secrets_get(a, &l->blob, &l->len, l->err, sizeof(l->err));
	if (l->ok == 0 && l->local_default)
		l->ok = admin_set_password(a, ADMIN_LOCALSERVE_PASSWORD, &l->blob, &l->len, l->err, sizeof(l->err));
}

static int loads_pending;

static void
load_done(void *arg)
{
	struct load *l = arg;
	const char *name = store_account_name(l->sa);

	if (l->ok > 0)
		auth_set_secrets(server_auth(l->srv), name, l->blob, l->len);
	else if (l->ok < 0 || l->err[0])
		log_error("admin", 0, "cannot load account secrets", "account", name, "err", l->err);
	else
		log_debug("admin", 0, "account has no password", "account", name);
	if (l->blob != NULL)
		memset(l->blob, 0, l->len);
	free(l->blob);
	store_account_put(&l->sa);
	/* Logins work from the first connection on: accept once every account's secrets are in. */
	if (!l->reload && --loads_pending == 0)
		server_accept_start(l->srv);
	free(l);
}

/* An account whose first open failed was reopened (reopenaccount): its logins need its secrets. */
static void
reopened(struct store_account *sa, void *arg)
{
	struct server *srv = arg;
	const struct config *cfg = server_config(srv);
	struct load *l = xcalloc(1, sizeof(*l));

	l->srv = srv;
	l->sa = store_account_get(server_store(srv), store_account_name(sa));
	if (l->sa == NULL) {
		free(l);
		return;
	}
	l->reload = true;
	l->local_default = cfg->st.local_serve && strcmp(store_account_name(sa), ADMIN_LOCALSERVE_ACCOUNT) == 0;
	store_submit(l->sa, load_work, load_done, l);
}

static void
load_all(struct server *srv)
{
	const struct config *cfg = server_config(srv);

	for (size_t i = 0; i < cfg->dom.accounts.n; i++) {
		const struct config_account *acc = &((const struct config_account *)cfg->dom.accounts.v)[i];
		struct load *l = xcalloc(1, sizeof(*l));
		l->srv = srv;
		l->sa = store_account_get(server_store(srv), acc->name);
		if (l->sa == NULL) {
			free(l);
			continue;
		}
		l->local_default = cfg->st.local_serve && strcmp(acc->name, ADMIN_LOCALSERVE_ACCOUNT) == 0;
		loads_pending++;
		store_submit(l->sa, load_work, load_done, l);
	}
	if (loads_pending == 0)
		server_accept_start(srv);
}

/* setaccountpassword <account> <password> */
struct setpw {
	struct server *srv;
	struct control_conn *cc;
	struct store_account *sa;
	char *password;
	void *blob;
	size_t len;
	int ok;
	char err[256];
};

static void
setpw_work(struct store_account *sa, struct idx_account *a, void *arg)
{
	struct setpw *p = arg;

	if (a == NULL) {
		p->ok = -1;
		snprintf(p->err, sizeof(p->err), "account cannot be opened: %s", store_account_error(sa));
		return;
	}
	p->ok = admin_set_password(a, p->password, &p->blob, &p->len, p->err, sizeof(p->err));
}

static void
setpw_done(void *arg)
{
	struct setpw *p = arg;
	const char *name = store_account_name(p->sa);

	if (p->ok > 0) {
		auth_set_secrets(server_auth(p->srv), name, p->blob, p->len);
		log_info("admin", control_cid(p->cc), "account password changed", "account", name);
		control_finish(p->cc, NULL);
	} else {
		log_error("admin", control_cid(p->cc), "setting password failed", "account", name, "err", p->err);
		control_finish(p->cc, p->err);
	}
	if (p->blob != NULL)
		memset(p->blob, 0, p->len);
	free(p->blob);
	memset(p->password, 0, strlen(p->password));
	free(p->password);
	store_account_put(&p->sa);
	free(p);
}

/*
 * A command's account argument (argv[1], with argc as want): a reference, or
 * NULL with the client answered (usage, or no such account).
 */
static struct store_account *
account_arg(struct server *srv, struct control_conn *cc, int argc, char **argv, int want, const char *usage)
{
	struct store_account *sa;

	if (argc != want) {
		control_finish(cc, usage);
		return NULL;
	}
	sa = store_account_get(server_store(srv), argv[1]);
	if (sa == NULL)
		control_finish(cc, "no such account");
	return sa;
}

static int
cmd_setaccountpassword(struct server *srv, struct control_conn *cc, int argc, char **argv)
{
	struct setpw *p;
	struct store_account *sa = account_arg(srv, cc, argc, argv, 3, "usage: setaccountpassword account password");

	if (sa == NULL)
		return 0;
	p = xcalloc(1, sizeof(*p));
	p->srv = srv;
	p->cc = cc;
	p->sa = sa;
	p->password = xstrdup(argv[2]);
	memset(argv[2], 0, strlen(argv[2]));
	store_submit(sa, setpw_work, setpw_done, p);
	return 0;
}

/* reopenaccount <account>: open again an account that could not be opened (repaired since). */
struct reopen_req {
	struct server *srv;
	struct control_conn *cc;
	struct store_account *sa; /* for the answer's job */
};

static void
noop_work(struct store_account *sa, struct idx_account *a, void *arg)
{
}

/*
 * Behind the reopen hooks' work on the same account (its jobs run and complete
 * in order): the secrets are loaded and the watch set up when the client hears ok.
 */
static void
reopen_answer(void *arg)
{
	struct reopen_req *rq = arg;

	log_info("admin", control_cid(rq->cc), "account reopened", "account", store_account_name(rq->sa));
	control_finish(rq->cc, NULL);
	store_account_put(&rq->sa);
	free(rq);
}

static void
reopen_done(struct store_account *sa, int r, const char *err, void *arg)
{
	struct reopen_req *rq = arg;
	struct control_conn *cc = rq->cc;
	const char *name = store_account_name(sa);

	if (r > 0 && !server_loop_ended(rq->srv)) {
		rq->sa = store_account_get(server_store(rq->srv), name);
		store_submit(rq->sa, noop_work, reopen_answer, rq);
		return;
	}
	free(rq);
	if (r > 0) {
		/* Drained after the loop: the hooks' work will not run, the answer is still true. */
		log_info("admin", control_cid(cc), "account reopened", "account", name);
		control_finish(cc, NULL);
	} else if (r == 0) {
		if (err == NULL)
			control_reply_line(cc, "account %s is open already", name);
		control_finish(cc, err);
	} else {
		/* The store logged the failed open; this is the administrator's answer. */
		log_info("admin", control_cid(cc), "reopening account failed", "account", name, "err", err ? err : "");
		control_finish(cc, err ? err : "cannot open the account");
	}
}

static int
cmd_reopenaccount(struct server *srv, struct control_conn *cc, int argc, char **argv)
{
	struct store_account *sa = account_arg(srv, cc, argc, argv, 2, "usage: reopenaccount account");

	if (sa == NULL)
		return 0;
	struct reopen_req *rq = xcalloc(1, sizeof(*rq));
	rq->srv = srv;
	rq->cc = cc;
	store_account_reopen(sa, reopen_done, rq);
	store_account_put(&sa); /* the reopen job holds its own reference */
	return 0;
}

void
admin_init(struct server *srv)
{
	server_control_register(srv, "setaccountpassword", "account password", cmd_setaccountpassword);
	server_control_register(srv, "reopenaccount", "account", cmd_reopenaccount);
	admin_tools_init(srv);
	if (server_store(srv) != NULL)
		store_add_reopen_hook(server_store(srv), reopened, srv);
	load_all(srv);
}

/* serve: run the configured server (mox serve), shared with localserve. */
#define _GNU_SOURCE 1
#include <errno.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cmd/cmd.h"
#include "daemon/log.h"
#include "daemon/admin.h"
#include "daemon/auth.h"
#include "daemon/dns.h"
#include "daemon/imap.h"
#include "daemon/privdrop.h"
#include "daemon/server.h"
#include "daemon/smtp.h"
#include "daemon/spool.h"
#include "daemon/store.h"
#include "daemon/stub.h"
#include "daemon/watch.h"

static void
register_handlers(struct server *srv)
{
	server_register(srv, SVC_SMTP, &smtp_handler);
	server_register(srv, SVC_SUBMISSION, &smtp_handler);
	server_register(srv, SVC_SUBMISSIONS, &smtp_handler);
	server_register(srv, SVC_IMAP, &imap_handler);
	server_register(srv, SVC_IMAPS, &imap_handler);
	server_register(srv, SVC_HTTP, &stub_http_handler);
	server_register(srv, SVC_HTTPS, &stub_http_handler);
	server_register(srv, SVC_METRICS, &stub_http_handler);
}

/*
 * Spool files left in DataDir/tmp by a previous run belong to messages that were
 * never acknowledged (a delivered message is linked into its Maildir before its
 * 250/OK, and only then is the spool file removed), so they can go.
 */
static void
clean_spool(const struct config *cfg)
{
	char *dir = xasprintf("%s/tmp", cfg->data_dir);
	int n = spool_remove_files(dir);

	if (n > 0) {
		char count[32];
		snprintf(count, sizeof(count), "%d", n);
		log_info("serve", 0, "removed spool files of unacknowledged messages from a previous run", "count", count,
		    "dir", dir);
	}
	free(dir);
}

/* An account reopened after its open failed: watch its folders (the setup at start found none). */
static void
reopened_watch(struct store_account *sa, void *arg)
{
	watch_account(arg, sa);
}

/*
 * The pool of spool files made ahead of time, for the host names the SMTP
 * listeners and IMAP APPEND put into spool file names. It keeps them in its
 * own dot-directory of the spool, DataDir/tmp/.pool, so DataDir/tmp lists
 * only the files of messages (those the pool had none ready for); a message
 * from the pool stays in .pool until it is delivered. Without the pool (it
 * could not start) each message creates its own spool file, as before.
 */
static struct spool *
start_spool(const struct config *cfg)
{
	const char *hosts[SPOOL_MAX_HOSTS];
	size_t n = 0;
	char *dir = xasprintf("%s/tmp/.pool", cfg->data_dir);
	char err[512];
	struct spool *sp;

	hosts[n++] = cfg->st.hostname;
	for (size_t i = 0; i < cfg->st.listeners.n && n < SPOOL_MAX_HOSTS; i++) {
		const struct config_listener *l = &((const struct config_listener *)cfg->st.listeners.v)[i];
		if (l->hostname != NULL && l->hostname[0] != '\0')
			hosts[n++] = l->hostname;
	}
	sp = spool_new(dir, hosts, n, SPOOL_DEFAULT_CAP, err, sizeof(err));
	if (sp == NULL)
		log_error("serve", 0, "cannot create spool files ahead of time, creating them per message", "err", err);
	free(dir);
	return sp;
}

int
serve_run(struct config *cfg, bool drop)
{
	struct server *srv;
	struct store *st = NULL;
	struct auth *au = NULL;
	struct watch *w = NULL;
	struct dns *dns = NULL;
	struct spool *sp = NULL;
	char err[1024];
	int rc = 1;

	cmd_apply_log_levels(cfg);
	if (mkdir_p(cfg->data_dir, 0770) < 0) {
		log_error("serve", 0, "cannot create data directory", "dir", cfg->data_dir, "err", strerror(errno));
		return 1;
	}
	clean_spool(cfg);
	srv = server_new(cfg);
	if (srv == NULL) {
		log_error("serve", 0, "cannot create event loop");
		return 1;
	}
	register_handlers(srv);
	if (server_bind(srv, err, sizeof(err)) < 0) {
		log_error("serve", 0, "cannot start", "err", err);
		fprintf(stderr, "mox: %s\n", err);
		goto out;
	}
	if (drop && geteuid() == 0) {
		uid_t uid;
		gid_t gid;
		if (privdrop_lookup(cfg->st.user, &uid, &gid, err, sizeof(err)) < 0)
			goto fail;
		if (!cfg->st.no_fix_permissions && privdrop_fix_ownership(cfg->data_dir, uid, gid, err, sizeof(err)) < 0)
			goto fail;
		if (privdrop_switch(uid, gid, err, sizeof(err)) < 0)
			goto fail;
		log_info("serve", 0, "running as unprivileged user", "user", cfg->st.user);
	}
	if (drop && geteuid() == 0) {
		snprintf(err, sizeof(err), "refusing to run as root after start-up");
		goto fail;
	}
	if (server_control_open(srv, err, sizeof(err)) < 0)
		goto fail;
	/* Storage threads start after the switch to the unprivileged user. */
	st = store_new(server_base(srv), cfg, 0);
	au = auth_new(cfg);
	if (st == NULL) {
		snprintf(err, sizeof(err), "cannot start storage threads");
		goto fail;
	}
	server_set_store(srv, st, au);
	/* Like the storage threads, after the switch: the files are the unprivileged user's. */
	sp = start_spool(cfg);
	server_set_spool(srv, sp);
	/*
	 * The resolver for the SPF and DKIM checks of inbound mail. localserve
	 * has no internet: it checks nothing unless DNSResolver names a server.
	 */
	if (!cfg->st.local_serve || (cfg->st.dns_resolver != NULL && cfg->st.dns_resolver[0] != '\0')) {
		char derr[512];
		dns = dns_new(server_base(srv), cfg->st.dns_resolver, derr, sizeof(derr));
		if (dns == NULL) {
			snprintf(err, sizeof(err), "cannot create DNS resolver: %s", derr);
			goto fail;
		}
		server_set_dns(srv, dns);
	}
	admin_init(srv);
	/* Changes other programs make in the Maildirs reach IDLE clients. */
	w = watch_new(srv);
	if (w != NULL)
		store_add_reopen_hook(st, reopened_watch, w); /* its first setup found no folders */
	for (size_t i = 0; i < cfg->dom.accounts.n; i++) {
		struct store_account *sa = store_account_get(st, ((struct config_account *)cfg->dom.accounts.v)[i].name);
		watch_account(w, sa);
		store_account_put(&sa);
	}
	if (server_early_stop_requested()) {
		log_info("serve", 0, "stop requested during start-up");
		rc = 0;
		goto out;
	}
	char pid[32];
	snprintf(pid, sizeof(pid), "%d", (int)getpid());
	log_info("serve", 0, "mox started", "version", MOX_VERSION, "pid", pid);
	rc = server_run(srv);
	goto out;
fail:
	log_error("serve", 0, "cannot start", "err", err);
	fprintf(stderr, "mox: %s\n", err);
out:
	/* Storage threads finish their queued work before the loop's objects go. */
	watch_stop(w);
	store_free(&st);
	watch_free(&w);
	auth_free(&au);
	/* After the connections (their checks hold queries), before the event base. */
	server_set_dns(srv, NULL);
	dns_free(&dns);
	/* Unlinks the spool files nobody took. */
	server_set_spool(srv, NULL);
	spool_free(&sp);
	server_free(&srv);
	return rc;
}

int
cmd_serve(int argc, char **argv)
{
	struct config *cfg;
	int rc;

	if (argc != 0)
		return cmd_usage("serve");
	server_early_signals();
	if (cmd_load_config(&cfg) < 0)
		return 1;
	rc = serve_run(cfg, true);
	config_free(&cfg);
	return rc;
}

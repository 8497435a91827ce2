/* admin_tools: data tool commands on the control socket, run on storage threads. */
#define _GNU_SOURCE 1
#include "daemon/admin_tools.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/log.h"
#include "daemon/store.h"
#include "index/tools.h"

enum tkind { T_IMPORT, T_EXPORT, T_BACKUP, T_FIXUIDMETA, T_FIXMSGSIZE, T_REASSIGN, T_BUMP, T_RECOUNT };

struct backup_all;

struct tjob {
	struct server *srv;
	struct control_conn *cc;
	struct store_account *sa;
	enum tkind kind;
	enum idx_tool_format fmt;
	char *mailbox; /* NULL: all */
	char *path;
	char *tmpdir;
	struct idx_import *imp;
	char **lines; /* produced on the storage thread, replied on the loop thread */
	size_t nlines;
	int r;
	char err[512];
	struct backup_all *ball;
};

/* One backup of all accounts: finished when the last account's job is done. */
struct backup_all {
	struct control_conn *cc;
	size_t pending;
	bool failed;
	char err[512];
};

static void
add_line(void *arg, const char *text)
{
	struct tjob *j = arg;

	j->lines = xrealloc(j->lines, (j->nlines + 1) * sizeof(char *));
	j->lines[j->nlines++] = xstrdup(text);
}

static void
flush_lines(struct tjob *j, struct control_conn *cc)
{
	for (size_t i = 0; i < j->nlines; i++) {
		if (cc != NULL)
			control_reply_line(cc, "%s", j->lines[i]);
		free(j->lines[i]);
	}
	free(j->lines);
	j->lines = NULL;
	j->nlines = 0;
}

static void
tjob_free(struct tjob *j)
{
	flush_lines(j, NULL);
	idx_import_free(&j->imp);
	free(j->mailbox);
	free(j->path);
	free(j->tmpdir);
	store_account_put(&j->sa);
	free(j);
}

static void tjob_work(struct store_account *sa, struct idx_account *a, void *arg);
static void tjob_done(void *arg);

static void
tjob_work(struct store_account *sa, struct idx_account *a, void *arg)
{
	struct tjob *j = arg;
	char *e = j->err;
	size_t el = sizeof(j->err);

	if (a == NULL) {
		snprintf(j->err, sizeof(j->err), "account cannot be opened: %s", store_account_error(sa));
		j->r = -1;
		return;
	}
	switch (j->kind) {
	case T_IMPORT:
		if (j->imp == NULL) {
			if (mkdir_p(j->tmpdir, 0700) < 0) {
				snprintf(j->err, sizeof(j->err), "creating %s: %m", j->tmpdir);
				j->r = -1;
				return;
			}
			if (idx_import_new(&j->imp, j->fmt, j->path, j->mailbox, j->tmpdir, e, el) < 0) {
				j->r = -1;
				return;
			}
		}
		j->r = idx_import_step(j->imp, a, 0, e, el);
		break;
	case T_EXPORT: {
		bool missing = false;
		j->r = idx_export(a, j->fmt, j->mailbox, j->path, NULL, NULL, &missing, e, el);
		if (j->r >= 0 && missing) {
			snprintf(j->err, sizeof(j->err), "no such mailbox");
			j->r = -1;
		} else if (j->r >= 0) {
			char line[128];
			snprintf(line, sizeof(line), "exported %d messages", j->r);
			add_line(j, line);
		}
		break;
	}
	case T_BACKUP: {
		struct idx_backup_stats st;
		char line[256];
		j->r = idx_backup(a, j->path, &st, e, el);
		if (j->r > 0) {
			snprintf(line, sizeof(line), "account %s: %llu files linked, %llu copied", store_account_name(sa),
			    (unsigned long long)st.linked, (unsigned long long)st.copied);
			add_line(j, line);
		}
		break;
	}
	case T_FIXUIDMETA:
		j->r = idx_fix_uidmeta(a, add_line, j, e, el);
		break;
	case T_FIXMSGSIZE:
		j->r = idx_fix_msgsize(a, add_line, j, e, el);
		break;
	case T_RECOUNT:
		j->r = idx_recalculate_counts(a, add_line, j, e, el);
		break;
	case T_REASSIGN:
	case T_BUMP:
		j->r = j->kind == T_REASSIGN ? idx_reassign_uids(a, j->mailbox, add_line, j, e, el)
					     : idx_bump_uidvalidity(a, j->mailbox, add_line, j, e, el);
		if (j->r == 0) {
			snprintf(j->err, sizeof(j->err), "no such mailbox");
			j->r = -1;
		}
		break;
	}
}

static void
tjob_done(void *arg)
{
	struct tjob *j = arg;
	const char *name = store_account_name(j->sa);

	if (j->kind == T_BACKUP) {
		struct backup_all *b = j->ball;
		flush_lines(j, b->cc);
		if (j->r < 0 && !b->failed) {
			b->failed = true;
			snprintf(b->err, sizeof(b->err), "account %.100s: %.400s", name, j->err);
			log_error("admin", control_cid(b->cc), "backup failed", "account", name, "err", j->err);
		}
		if (--b->pending == 0) {
			control_finish(b->cc, b->failed ? b->err : NULL);
			free(b);
		}
		tjob_free(j);
		return;
	}
	flush_lines(j, j->cc);
	if (j->kind == T_IMPORT && j->r > 0) {
		control_reply_line(j->cc, "progress %llu", (unsigned long long)idx_import_count(j->imp));
		store_submit(j->sa, tjob_work, tjob_done, j); /* the next batch */
		return;
	}
	if (j->r < 0) {
		log_error("admin", control_cid(j->cc), "data tool command failed", "account", name, "err", j->err);
		control_finish(j->cc, j->err);
	} else {
		if (j->kind == T_IMPORT) {
			char n[32];
			snprintf(n, sizeof(n), "%llu", (unsigned long long)idx_import_count(j->imp));
			control_reply_line(j->cc, "imported %s messages", n);
			log_info("admin", control_cid(j->cc), "import done", "account", name, "messages", n);
		}
		control_finish(j->cc, NULL);
	}
	tjob_free(j);
}

static struct tjob *
tjob_new(struct server *srv, struct control_conn *cc, const char *account, enum tkind kind)
{
	struct store_account *sa = store_account_get(server_store(srv), account);
	struct tjob *j;

	if (sa == NULL) {
		control_finish(cc, "no such account");
		return NULL;
	}
	j = xcalloc(1, sizeof(*j));
	j->srv = srv;
	j->cc = cc;
	j->sa = sa;
	j->kind = kind;
	return j;
}

static int
parse_fmt(struct control_conn *cc, const char *s, enum idx_tool_format *fmt_r)
{
	if (strcmp(s, "maildir") == 0)
		*fmt_r = IDX_FMT_MAILDIR;
	else if (strcmp(s, "mbox") == 0)
		*fmt_r = IDX_FMT_MBOX;
	else {
		control_finish(cc, "format must be maildir or mbox");
		return -1;
	}
	return 1;
}

/* import maildir|mbox account mailbox path */
static int
cmd_import(struct server *srv, struct control_conn *cc, int argc, char **argv)
{
	enum idx_tool_format fmt;
	struct tjob *j;

	if (argc != 5) {
		control_finish(cc, "usage: import maildir|mbox account mailbox path");
		return 0;
	}
	if (parse_fmt(cc, argv[1], &fmt) < 0 || (j = tjob_new(srv, cc, argv[2], T_IMPORT)) == NULL)
		return 0;
	j->fmt = fmt;
	j->mailbox = xstrdup(argv[3]);
	j->path = xstrdup(argv[4]);
	j->tmpdir = xasprintf("%s/tmp", server_config(srv)->data_dir);
	log_info("admin", control_cid(cc), "import", "account", argv[2], "mailbox", argv[3], "path", argv[4]);
	store_submit(j->sa, tjob_work, tjob_done, j);
	return 0;
}

/* export maildir|mbox account mailbox|-all dest */
static int
cmd_export(struct server *srv, struct control_conn *cc, int argc, char **argv)
{
	enum idx_tool_format fmt;
	struct tjob *j;

	if (argc != 5) {
		control_finish(cc, "usage: export maildir|mbox account mailbox|-all dest");
		return 0;
	}
	if (parse_fmt(cc, argv[1], &fmt) < 0 || (j = tjob_new(srv, cc, argv[2], T_EXPORT)) == NULL)
		return 0;
	j->fmt = fmt;
	j->mailbox = strcmp(argv[3], "-all") == 0 ? NULL : xstrdup(argv[3]);
	j->path = xstrdup(argv[4]);
	store_submit(j->sa, tjob_work, tjob_done, j);
	return 0;
}

/* backup dest: every configured account into dest/accounts/<name> */
static int
cmd_backup(struct server *srv, struct control_conn *cc, int argc, char **argv)
{
	const struct config *cfg = server_config(srv);
	struct backup_all *b;

	if (argc != 2) {
		control_finish(cc, "usage: backup dest");
		return 0;
	}
	b = xcalloc(1, sizeof(*b));
	b->cc = cc;
	b->pending = 1; /* held until every job is queued */
	for (size_t i = 0; i < cfg->dom.accounts.n; i++) {
		const struct config_account *acc = &((const struct config_account *)cfg->dom.accounts.v)[i];
		struct store_account *sa = store_account_get(server_store(srv), acc->name);
		struct tjob *j;

		if (sa == NULL)
			continue;
		j = xcalloc(1, sizeof(*j));
		j->srv = srv;
		j->cc = cc;
		j->sa = sa;
		j->kind = T_BACKUP;
		j->ball = b;
		j->path = xasprintf("%s/accounts/%s", argv[1], acc->name);
		b->pending++;
		store_submit(sa, tjob_work, tjob_done, j);
	}
	char *accdir = xasprintf("%s/accounts", argv[1]);
	if (mkdir_p(accdir, 0700) < 0 && !b->failed) {
		b->failed = true;
		snprintf(b->err, sizeof(b->err), "creating %s: %m", accdir);
	}
	free(accdir);
	if (--b->pending == 0) {
		control_finish(cc, b->failed ? b->err : NULL);
		free(b);
	}
	return 0;
}

/* fixuidmeta|fixmsgsize|recalculatemailboxcounts account; reassignuids|bumpuidvalidity account [mailbox] */
static int
cmd_fix(struct server *srv, struct control_conn *cc, int argc, char **argv)
{
	static const struct {
		const char *name;
		enum tkind kind;
		bool mailbox;
	} cmds[] = {
		{"fixuidmeta", T_FIXUIDMETA, false},
		{"fixmsgsize", T_FIXMSGSIZE, false},
		{"recalculatemailboxcounts", T_RECOUNT, false},
		{"reassignuids", T_REASSIGN, true},
		{"bumpuidvalidity", T_BUMP, true},
	};
	struct tjob *j;

	for (size_t i = 0; i < ARRAY_LEN(cmds); i++) {
		if (strcmp(cmds[i].name, argv[0]) != 0)
			continue;
		if (argc < 2 || argc > (cmds[i].mailbox ? 3 : 2)) {
			control_finish(cc, cmds[i].mailbox ? "usage: account [mailbox]" : "usage: account");
			return 0;
		}
		if ((j = tjob_new(srv, cc, argv[1], cmds[i].kind)) == NULL)
			return 0;
		j->mailbox = argc == 3 ? xstrdup(argv[2]) : NULL;
		log_info("admin", control_cid(cc), "repair command", "command", argv[0], "account", argv[1]);
		store_submit(j->sa, tjob_work, tjob_done, j);
		return 0;
	}
	return -1;
}

void
admin_tools_init(struct server *srv)
{
	server_control_register(srv, "import", "maildir|mbox account mailbox path", cmd_import);
	server_control_register(srv, "export", "maildir|mbox account mailbox|-all dest", cmd_export);
	server_control_register(srv, "backup", "dest", cmd_backup);
	server_control_register(srv, "fixuidmeta", "account", cmd_fix);
	server_control_register(srv, "fixmsgsize", "account", cmd_fix);
	server_control_register(srv, "recalculatemailboxcounts", "account", cmd_fix);
	server_control_register(srv, "reassignuids", "account [mailbox]", cmd_fix);
	server_control_register(srv, "bumpuidvalidity", "account [mailbox]", cmd_fix);
}

/*
 * The repair commands named as in the Go mox (fixuidmeta, fixmsgsize,
 * reassignuids, bumpuidvalidity, recalculatemailboxcounts) and
 * setaccountpassword: through the running server's control socket, or on
 * the account opened directly when no server runs. reopenaccount only talks
 * to a running server (a start opens every account anyway).
 */
#define _GNU_SOURCE 1
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>

#include "cmd/cmd.h"
#include "daemon/admin.h"
#include "index/tools.h"

enum fixkind { FIX_UIDMETA, FIX_MSGSIZE, FIX_REASSIGN, FIX_BUMP, FIX_RECOUNT };

static int
fix_offline(const struct config *cfg, enum fixkind kind, const char *account, const char *mailbox)
{
	struct idx_account *a = NULL;
	char err[1024];
	int r = -1;

	if (cmd_open_account(cfg, account, false, &a) < 0)
		return 1;
	switch (kind) {
	case FIX_UIDMETA:
		r = idx_fix_uidmeta(a, cmd_print_line, NULL, err, sizeof(err));
		break;
	case FIX_MSGSIZE:
		r = idx_fix_msgsize(a, cmd_print_line, NULL, err, sizeof(err));
		break;
	case FIX_RECOUNT:
		r = idx_recalculate_counts(a, cmd_print_line, NULL, err, sizeof(err));
		break;
	case FIX_REASSIGN:
	case FIX_BUMP:
		r = kind == FIX_REASSIGN ? idx_reassign_uids(a, mailbox, cmd_print_line, NULL, err, sizeof(err))
					 : idx_bump_uidvalidity(a, mailbox, cmd_print_line, NULL, err, sizeof(err));
		if (r == 0) {
			snprintf(err, sizeof(err), "no mailbox %s", mailbox);
			r = -1;
		}
		break;
	}
	idx_account_close(&a);
	if (r < 0) {
		fprintf(stderr, "mox: account %s: %s\n", account, err);
		return 1;
	}
	return 0;
}

static int
fix(const char *name, enum fixkind kind, int argc, char **argv, int minargs, int maxargs)
{
	struct config *cfg;
	int rc = 0;

	if (argc < minargs || argc > maxargs)
		return cmd_usage(name);
	if (cmd_load_config(&cfg) < 0)
		return 1;
	bool running = cmd_server_running(cfg);
	/* fixmsgsize without an account: every configured account. */
	size_t n = argc > 0 ? 1 : cfg->dom.accounts.n;
	for (size_t i = 0; i < n; i++) {
		const char *account = argc > 0 ? argv[0] : ((const struct config_account *)cfg->dom.accounts.v)[i].name;
		const char *mailbox = argc > 1 ? argv[1] : NULL;

		if (running) {
			const char *args[] = {name, account, mailbox};
			rc |= cmd_control(cfg, mailbox ? 3 : 2, args);
		} else {
			rc |= fix_offline(cfg, kind, account, mailbox);
		}
	}
	config_free(&cfg);
	return rc;
}

int
cmd_fixuidmeta(int argc, char **argv)
{
	return fix("fixuidmeta", FIX_UIDMETA, argc, argv, 1, 1);
}

int
cmd_fixmsgsize(int argc, char **argv)
{
	return fix("fixmsgsize", FIX_MSGSIZE, argc, argv, 0, 1);
}

int
cmd_reassignuids(int argc, char **argv)
{
	return fix("reassignuids", FIX_REASSIGN, argc, argv, 1, 2);
}

int
cmd_bumpuidvalidity(int argc, char **argv)
{
	return fix("bumpuidvalidity", FIX_BUMP, argc, argv, 1, 2);
}

int
cmd_recalculatemailboxcounts(int argc, char **argv)
{
	return fix("recalculatemailboxcounts", FIX_RECOUNT, argc, argv, 1, 1);
}

/* One line from stdin without its line end; with echo off on a terminal. */
static int
read_password(const char *prompt, char *buf, size_t size)
{
	struct termios old, noecho;
	bool tty = isatty(0);
	size_t n;

	if (tty) {
		fprintf(stderr, "%s", prompt);
		if (tcgetattr(0, &old) == 0) {
			noecho = old;
			noecho.c_lflag &= ~(tcflag_t)ECHO;
			tcsetattr(0, TCSAFLUSH, &noecho);
		} else {
			tty = false;
		}
	}
	char *r = fgets(buf, (int)size, stdin);
	if (tty) {
		tcsetattr(0, TCSAFLUSH, &old);
		fprintf(stderr, "\n");
	}
	if (r == NULL)
		return -1;
	n = strlen(buf);
	while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
		buf[--n] = '\0';
	return (int)n;
}

int
cmd_setaccountpassword(int argc, char **argv)
{
	struct config *cfg;
	char pw[1024], pw2[1024], err[1024];
	int rc = 1;

	if (argc != 1)
		return cmd_usage("setaccountpassword");
	if (cmd_load_config(&cfg) < 0)
		return 1;
	if (read_password("password: ", pw, sizeof(pw)) <= 0) {
		fprintf(stderr, "mox setaccountpassword: no password given\n");
		goto out;
	}
	if (isatty(0)) {
		if (read_password("password (again): ", pw2, sizeof(pw2)) < 0 || strcmp(pw, pw2) != 0) {
			fprintf(stderr, "mox setaccountpassword: passwords do not match\n");
			goto out;
		}
	}
	if (cmd_server_running(cfg)) {
		const char *args[] = {"setaccountpassword", argv[0], pw};
		rc = cmd_control(cfg, 3, args);
	} else {
		struct idx_account *a = NULL;

		if (cmd_open_account(cfg, argv[0], false, &a) > 0) {
			if (admin_set_password(a, pw, NULL, NULL, err, sizeof(err)) < 0)
				fprintf(stderr, "mox setaccountpassword: %s\n", err);
			else
				rc = 0;
			idx_account_close(&a);
		}
	}
out:
	explicit_bzero(pw, sizeof(pw));
	explicit_bzero(pw2, sizeof(pw2));
	config_free(&cfg);
	return rc;
}

int
cmd_reopenaccount(int argc, char **argv)
{
	struct config *cfg;
	int rc = 1;

	if (argc != 1)
		return cmd_usage("reopenaccount");
	if (cmd_load_config(&cfg) < 0)
		return 1;
	if (cmd_server_running(cfg)) {
		const char *args[] = {"reopenaccount", argv[0]};
		rc = cmd_control(cfg, 2, args);
	} else if (config_account_find(cfg, argv[0]) == NULL) {
		fprintf(stderr, "mox reopenaccount: no account %s in the configuration\n", argv[0]);
	} else {
		fprintf(stderr, "mox reopenaccount: no server is running; the next start opens the account\n");
	}
	config_free(&cfg);
	return rc;
}

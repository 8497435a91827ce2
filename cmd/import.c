/*
 * import, export: messages between an account and a Maildir or mbox. With a
 * running server the work is done by the server (control socket) on the
 * account's storage thread; otherwise the account is opened directly.
 */
#define _GNU_SOURCE 1
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cmd/cmd.h"
#include "index/tools.h"

static int
parse_fmt(const char *s, enum idx_tool_format *fmt_r)
{
	if (strcmp(s, "maildir") == 0)
		*fmt_r = IDX_FMT_MAILDIR;
	else if (strcmp(s, "mbox") == 0)
		*fmt_r = IDX_FMT_MBOX;
	else
		return -1;
	return 1;
}

static int
import_offline(const struct config *cfg, enum idx_tool_format fmt, const char *account, const char *mailbox,
    const char *path)
{
	struct idx_account *a = NULL;
	struct idx_import *imp = NULL;
	char err[1024], *tmpdir = xasprintf("%s/tmp", cfg->data_dir);
	uint64_t shown = 0;
	int r, rc = 1;

	if (mkdir_p(tmpdir, 0700) < 0) {
		fprintf(stderr, "mox: creating %s: %s\n", tmpdir, strerror(errno));
		goto out;
	}
	if (idx_import_new(&imp, fmt, path, mailbox, tmpdir, err, sizeof(err)) < 0) {
		fprintf(stderr, "mox import: %s\n", err);
		goto out;
	}
	/* No server runs: one process writes; a kill loses nothing committed (see index/import.c). */
	if (cmd_open_account(cfg, account, true, &a) < 0)
		goto out;
	while ((r = idx_import_step(imp, a, 0, err, sizeof(err))) > 0) {
		uint64_t n = idx_import_count(imp);

		if (n / CMD_PROGRESS_EVERY > shown / CMD_PROGRESS_EVERY)
			fprintf(stderr, "%llu messages so far\n", (unsigned long long)n);
		shown = n;
	}
	if (r < 0) {
		fprintf(stderr, "mox import: %s (%llu messages imported before)\n", err,
		    (unsigned long long)idx_import_count(imp));
		goto out;
	}
	printf("imported %llu messages\n", (unsigned long long)idx_import_count(imp));
	rc = 0;
	/*
	 * Confirm the folder against the index once its ctimes are older than
	 * the stamp margin (index/sync.c: 100 ms with nanosecond ctimes),
	 * streaming the directories (flat memory), and keep the stamp: the
	 * server's first SELECT of a large imported mailbox then skips its scan.
	 */
	struct idx_mailbox mb;
	if (idx_mailbox_get(a, mailbox, &mb, err, sizeof(err)) > 0) {
		usleep(150 * 1000);
		if (idx_sync_confirm(a, mb.id, err, sizeof(err)) < 0)
			fprintf(stderr, "mox import: checking the folder: %s\n", err);
		idx_mailbox_clear(&mb);
	}
out:
	idx_import_free(&imp);
	idx_account_close(&a);
	free(tmpdir);
	return rc;
}

int
cmd_import(int argc, char **argv)
{
	enum idx_tool_format fmt;
	struct config *cfg;
	int rc;

	if (argc != 4 || parse_fmt(argv[0], &fmt) < 0)
		return cmd_usage("import");
	if (cmd_load_config(&cfg) < 0)
		return 1;
	char *path = cmd_abspath(argv[3]);
	if (cmd_server_running(cfg)) {
		const char *args[] = {"import", argv[0], argv[1], argv[2], path};
		rc = cmd_control_progress(cfg, 5, args);
	} else {
		rc = import_offline(cfg, fmt, argv[1], argv[2], path);
	}
	free(path);
	config_free(&cfg);
	return rc;
}

static void
progress(void *arg, uint64_t n)
{
	fprintf(stderr, "%llu messages so far\n", (unsigned long long)n);
}

int
cmd_export(int argc, char **argv)
{
	enum idx_tool_format fmt;
	struct config *cfg;
	int rc = 1;

	if (argc != 4 || parse_fmt(argv[0], &fmt) < 0)
		return cmd_usage("export");
	if (cmd_load_config(&cfg) < 0)
		return 1;
	char *dest = cmd_abspath(argv[3]);
	if (cmd_server_running(cfg)) {
		const char *args[] = {"export", argv[0], argv[1], argv[2], dest};
		rc = cmd_control_progress(cfg, 5, args);
	} else {
		struct idx_account *a = NULL;
		char err[1024];
		bool missing = false;

		if (cmd_open_account(cfg, argv[1], false, &a) > 0) {
			int n = idx_export(a, fmt, strcmp(argv[2], "-all") == 0 ? NULL : argv[2], dest, progress, NULL,
			    &missing, err, sizeof(err));
			if (n < 0)
				fprintf(stderr, "mox export: %s\n", err);
			else if (missing)
				fprintf(stderr, "mox export: no mailbox %s in account %s\n", argv[2], argv[1]);
			else {
				printf("exported %d messages\n", n);
				rc = 0;
			}
			idx_account_close(&a);
		}
	}
	free(dest);
	config_free(&cfg);
	return rc;
}

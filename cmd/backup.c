/*
 * backup and verifydata. A backup is a data directory of its own: every
 * account's index copied consistently (by the running server when there is
 * one) and its Maildir hard-linked, plus the config files in config/.
 * verifydata checks a data directory that no server uses (a stopped one or
 * a backup) and with -fix repairs it from the Maildir.
 */
#define _GNU_SOURCE 1
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cmd/cmd.h"
#include "index/tools.h"

static int
copy_plain(const char *from, const char *to)
{
	char buf[65536];
	int in = open(from, O_RDONLY | O_CLOEXEC), out, rc = -1;
	ssize_t k;

	if (in < 0)
		return -1;
	out = open(to, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (out >= 0) {
		while ((k = read(in, buf, sizeof(buf))) > 0)
			if (write_all(out, buf, (size_t)k) < 0)
				break;
		rc = k == 0 && fsync(out) == 0 ? 1 : -1;
		if (close(out) < 0)
			rc = -1;
	}
	close(in);
	return rc;
}

/* Account directories under datadir/accounts: names into *names_r (count returned). */
static int
list_accounts(const char *datadir, char ***names_r)
{
	char *dir = xasprintf("%s/accounts", datadir);
	DIR *d = opendir(dir);
	struct dirent *de;
	int n = 0;

	*names_r = NULL;
	free(dir);
	if (d == NULL)
		return errno == ENOENT ? 0 : -1;
	while ((de = readdir(d)) != NULL) {
		if (de->d_name[0] == '.')
			continue;
		*names_r = xrealloc(*names_r, (size_t)(n + 1) * sizeof(char *));
		(*names_r)[n++] = xstrdup(de->d_name);
	}
	closedir(d);
	return n;
}

static void
free_names(char **names, int n)
{
	for (int i = 0; i < n; i++)
		free(names[i]);
	free(names);
}

static int
backup_one(const char *accdir, const char *dest, const char *name)
{
	struct idx_account *a = NULL;
	struct idx_backup_stats st;
	char err[1024], *to = xasprintf("%s/accounts/%s", dest, name);
	int rc = -1;

	if (idx_account_open(accdir, NULL, &a, err, sizeof(err)) < 0) {
		fprintf(stderr, "mox backup: account %s: %s\n", name, err);
	} else if (idx_backup(a, to, &st, err, sizeof(err)) < 0) {
		fprintf(stderr, "mox backup: account %s: %s\n", name, err);
	} else {
		printf("account %s: %llu files linked, %llu copied\n", name, (unsigned long long)st.linked,
		    (unsigned long long)st.copied);
		rc = 1;
	}
	idx_account_close(&a);
	free(to);
	return rc;
}

int
cmd_backup(int argc, char **argv)
{
	struct config *cfg;
	char **names = NULL;
	int n = 0, rc = 1;
	struct stat sb;

	if (argc != 1)
		return cmd_usage("backup");
	if (cmd_load_config(&cfg) < 0)
		return 1;
	char *dest = cmd_abspath(argv[0]);
	char *cfgdir = xasprintf("%s/config", dest);
	char *accdir = xasprintf("%s/accounts", dest);
	bool running = cmd_server_running(cfg);

	if (stat(dest, &sb) == 0 && rmdir(dest) < 0 && errno != ENOENT) {
		fprintf(stderr, "mox backup: %s exists and is not empty\n", dest);
		goto out;
	}
	if (mkdir_p(accdir, 0700) < 0 || mkdir_p(cfgdir, 0700) < 0) {
		fprintf(stderr, "mox backup: creating %s: %s\n", dest, strerror(errno));
		goto out;
	}
	if (running) {
		const char *args[] = {"backup", dest};
		if (cmd_control_progress(cfg, 2, args) != 0)
			goto out;
	}
	n = list_accounts(cfg->data_dir, &names);
	for (int i = 0; i < n; i++) {
		char *src = xasprintf("%s/accounts/%s/index.tcb", cfg->data_dir, names[i]);
		bool have = access(src, F_OK) == 0;

		free(src);
		/* The server backed up the configured accounts; others are not in use. */
		if (!have || (running && config_account_find(cfg, names[i]) != NULL))
			continue;
		src = xasprintf("%s/accounts/%s", cfg->data_dir, names[i]);
		int r = backup_one(src, dest, names[i]);
		free(src);
		if (r < 0)
			goto out;
	}
	char *to = xasprintf("%s/mox.yaml", cfgdir);
	int r1 = copy_plain(cfg->static_path, to);
	free(to);
	to = xasprintf("%s/domains.yaml", cfgdir);
	int r2 = copy_plain(cfg->domains_path, to);
	free(to);
	if (r1 < 0 || r2 < 0) {
		fprintf(stderr, "mox backup: copying the config files: %s\n", strerror(errno));
		goto out;
	}
	printf("backup written to %s\n", dest);
	rc = 0;
out:
	free_names(names, n > 0 ? n : 0);
	free(dest);
	free(cfgdir);
	free(accdir);
	config_free(&cfg);
	return rc;
}

/* ---- verifydata ---- */

struct verify {
	const char *account;
	int problems;
};

static void
problem(void *arg, const char *text)
{
	struct verify *v = arg;

	printf("account %s: %s\n", v->account, text);
	v->problems++;
}

static void
fixed(void *arg, const char *text)
{
	printf("account %s: fixed: %s\n", (const char *)arg, text);
}

/* Spool files left in datadir/tmp by an interrupted delivery or import. */
static int
check_spool(const char *datadir, bool fix)
{
	char *dir = xasprintf("%s/tmp", datadir);
	DIR *d = opendir(dir);
	struct dirent *de;
	int n = 0;

	if (d != NULL) {
		while ((de = readdir(d)) != NULL) {
			if (de->d_name[0] == '.')
				continue;
			if (fix) {
				char *p = xasprintf("%s/%s", dir, de->d_name);
				if (unlink(p) == 0)
					printf("removed spool file left behind: tmp/%s\n", de->d_name);
				free(p);
			} else {
				printf("spool file left behind: tmp/%s\n", de->d_name);
				n++;
			}
		}
		closedir(d);
	}
	free(dir);
	return n;
}

static int
verify_account(const char *datadir, const char *name, bool fix, bool *locked_r)
{
	struct verify v = {.account = name};
	struct idx_account *a = NULL;
	char err[1024], *dir = xasprintf("%s/accounts/%s", datadir, name);
	char *db = xasprintf("%s/index.tcb", dir);
	int r;

	if (access(db, F_OK) != 0) {
		if (!fix) {
			printf("account %s: no index.tcb in %s\n", name, dir);
			free(dir);
			free(db);
			return 1;
		}
		/* Moved aside (unreadable): the open creates one, the sync below adopts the Maildir. */
		printf("account %s: no index.tcb: building a new one from the Maildir (new UIDs and UIDVALIDITY)\n",
		    name);
	}
	/* Without -fix nothing may change, not even a schema upgrade: report it instead. */
	struct idx_options opts = {.no_upgrade = !fix};
	if (idx_account_open(dir, &opts, &a, err, sizeof(err)) < 0) {
		if (strstr(err, "in use") != NULL)
			*locked_r = true;
		else
			printf("account %s: cannot open: %s\n", name, err);
		free(dir);
		free(db);
		return 1;
	}
	struct idx_account_info info;
	if (idx_account_info(a, &info, err, sizeof(err)) > 0 && info.tc_wal_cut > 0)
		printf("account %s: index rollback log ended in a torn entry (a crash while writing it): cut %llu bytes\n",
		    name, (unsigned long long)info.tc_wal_cut);
	if (fix) {
		struct idx_sync_stats st = {0};

		if (idx_sync_all(a, &st, err, sizeof(err)) < 0 ||
		    idx_fix_uidmeta(a, fixed, (void *)name, err, sizeof(err)) < 0 ||
		    idx_recalculate_counts(a, fixed, (void *)name, err, sizeof(err)) < 0) {
			printf("account %s: repair failed: %s\n", name, err);
			v.problems++;
		} else if (st.added || st.flagged || st.removed || st.mailboxes_added) {
			printf("account %s: fixed: %llu files adopted, %llu flag changes, %llu missing files removed, "
			       "%llu folders adopted\n",
			    name, (unsigned long long)st.added, (unsigned long long)st.flagged,
			    (unsigned long long)st.removed, (unsigned long long)st.mailboxes_added);
		}
	}
	r = idx_check(a, problem, &v, err, sizeof(err));
	if (r < 0) {
		printf("account %s: check failed: %s\n", name, err);
		v.problems++;
	}
	idx_account_close(&a);
	free(dir);
	free(db);
	return v.problems;
}

int
cmd_verifydata(int argc, char **argv)
{
	bool fix = false, locked = false;
	const struct cmd_flag flags[] = {
		{"fix", FLAG_BOOL, &fix, "repair from the Maildir, then check again"},
	};
	char **names = NULL;
	int i = cmd_flags("verifydata", argc, argv, flags, ARRAY_LEN(flags)), n, problems = 0;
	struct stat sb;

	if (i < 0 || argc - i != 1)
		return cmd_usage("verifydata");
	const char *datadir = argv[i];
	if (stat(datadir, &sb) < 0 || !S_ISDIR(sb.st_mode)) {
		fprintf(stderr, "mox verifydata: %s is not a directory\n", datadir);
		return 1;
	}
	n = list_accounts(datadir, &names);
	if (n < 0) {
		fprintf(stderr, "mox verifydata: reading %s/accounts: %s\n", datadir, strerror(errno));
		return 1;
	}
	problems += check_spool(datadir, fix);
	for (int k = 0; k < n && !locked; k++)
		problems += verify_account(datadir, names[k], fix, &locked);
	free_names(names, n);
	if (locked) {
		fprintf(stderr, "mox verifydata: %s is in use by a running server; stop it, or verify a backup "
				"(mox backup)\n", datadir);
		return 1;
	}
	if (problems > 0) {
		printf("%d problem%s found\n", problems, problems == 1 ? "" : "s");
		return 1;
	}
	printf("no problems found\n");
	return 0;
}

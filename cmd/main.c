/* main: the `mox` command line: global flags and the subcommand table. */
#define _GNU_SOURCE 1
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/thread.h>

#include "cmd/cmd.h"
#include "daemon/log.h"

const char *cmd_config_path = "config/mox.yaml";

static int cmd_version(int argc, char **argv);
static int cmd_help(int argc, char **argv);

struct subcmd {
	const char *name;
	const char *args;
	const char *help;
	int (*fn)(int argc, char **argv);
};

static const struct subcmd subcmds[] = {
	{"serve", "", "Start the mail server with the configuration of -config (as root: binds ports, then\n"
	    "switches to the configured User).", cmd_serve},
	{"localserve", "[-dir D] [-initonly]", "Run a local mail server for testing, with no configuration needed: on\n"
	    "first start it writes D/mox.yaml, D/domains.yaml, D/data and a self-signed certificate\n"
	    "(D defaults to $XDG_CONFIG_HOME/mox-localserve). Account mox@localhost, password\n"
	    "moxmoxmox; ports: SMTP 1025, submissions 1465, submission 1587, IMAP 1143, IMAPS 1993,\n"
	    "HTTP 1080, HTTPS 1443, metrics 1081 on 127.0.0.1 and ::1. -initonly writes the files and exits.",
	    cmd_localserve},
	{"stop", "", "Stop the running server through its control socket.", cmd_stop},
	{"status", "", "Show the running server's status through its control socket.", cmd_status},
	{"config test", "", "Check the configuration files; print the first problem with file:line:column.",
	    cmd_config_test},
	{"config describe-static", "", "Print an annotated example of every key of mox.yaml.", cmd_config_describe_static},
	{"config describe-domains", "", "Print an annotated example of every key of domains.yaml.",
	    cmd_config_describe_domains},
	{"config printservice", "", "Print a systemd service unit for mox serve with this configuration.",
	    cmd_config_printservice},
	{"import", "maildir|mbox account mailbox path", "Import messages from a Maildir (cur/ and new/, flags and\n"
	    "dovecot-keywords) or an mbox file (mboxrd unquoting; Status/X-Status give flags) into mailbox,\n"
	    "created when missing. Through the running server, else directly. Progress on stderr.", cmd_import},
	{"export", "maildir|mbox account mailbox|-all dest", "Export a mailbox (or all: Maildir++ folders, or\n"
	    "dest/NAME.mbox files) to a Maildir with flags and dovecot-keywords or to mboxrd files.", cmd_export},
	{"backup", "dest", "Write a consistent copy of the data directory to dest (indexes copied safely while the\n"
	    "server runs, message files hard-linked) with the config files in dest/config.", cmd_backup},
	{"verifydata", "[-fix] datadir", "Check a data directory no server uses (a stopped one or a backup):\n"
	    "print every inconsistency between the Maildir and the indexes, exit 1 if any. -fix repairs\n"
	    "from the Maildir (files adopted or tombstoned, counts recalculated) and checks again.", cmd_verifydata},
	{"fixuidmeta", "account", "Fix UIDNEXT of mailboxes below a message UID and the account's next\n"
	    "UIDVALIDITY below a mailbox's.", cmd_fixuidmeta},
	{"fixmsgsize", "[account]", "Make message sizes in the index equal the file sizes (and parse those\n"
	    "messages again); all accounts without an argument. Consider bumpuidvalidity afterwards.", cmd_fixmsgsize},
	{"reassignuids", "account [mailbox]", "Number the messages of a mailbox (or all) 1..n again and give it a\n"
	    "new UIDVALIDITY: IMAP clients fetch everything again.", cmd_reassignuids},
	{"bumpuidvalidity", "account [mailbox]", "Give a mailbox (or all) a new UIDVALIDITY so IMAP clients fetch\n"
	    "its messages again, e.g. after a manual repair.", cmd_bumpuidvalidity},
	{"recalculatemailboxcounts", "account", "Recount total, unread, unseen, deleted and size of every mailbox\n"
	    "and the account's quota use from the messages; print what changed.", cmd_recalculatemailboxcounts},
	{"setaccountpassword", "account", "Set the account's password, read from stdin (twice with a prompt on a\n"
	    "terminal); stores SCRAM-SHA-1/256 and CRAM-MD5 secrets.", cmd_setaccountpassword},
	{"reopenaccount", "account", "Open again an account the running server could not open (its index\n"
	    "damaged or unreadable) once it is repaired; until then its mail and logins are refused.",
	    cmd_reopenaccount},
	{"version", "", "Print the version.", cmd_version},
	{"help", "[command]", "Show the usage of all commands or of one.", cmd_help},
};

static void
print_one(FILE *f, const struct subcmd *c, bool full)
{
	fprintf(f, "  mox [-config FILE] %s%s%s\n", c->name, c->args[0] ? " " : "", c->args);
	if (full)
		fprintf(f, "\n%s\n", c->help);
}

static void
usage_all(FILE *f)
{
	fprintf(f, "usage:\n");
	for (size_t i = 0; i < ARRAY_LEN(subcmds); i++)
		print_one(f, &subcmds[i], false);
	fprintf(f, "\nGlobal flags: -config FILE (default config/mox.yaml; for localserve D/mox.yaml)\n"
	    "See 'mox help COMMAND' for one command.\n");
}

int
cmd_usage(const char *name)
{
	for (size_t i = 0; i < ARRAY_LEN(subcmds); i++) {
		if (strcmp(subcmds[i].name, name) == 0) {
			fprintf(stderr, "usage:\n");
			print_one(stderr, &subcmds[i], true);
			return 2;
		}
	}
	usage_all(stderr);
	return 2;
}

static int
cmd_version(int argc, char **argv)
{
	if (argc != 0)
		return cmd_usage("version");
	printf("mox %s\n", MOX_VERSION);
	return 0;
}

static int
cmd_help(int argc, char **argv)
{
	char name[128] = "";

	if (argc == 0) {
		usage_all(stdout);
		return 0;
	}
	for (int i = 0; i < argc && i < 2; i++)
		snprintf(name + strlen(name), sizeof(name) - strlen(name), "%s%s", i ? " " : "", argv[i]);
	for (size_t i = 0; i < ARRAY_LEN(subcmds); i++) {
		if (strcmp(subcmds[i].name, name) == 0 || strcmp(subcmds[i].name, argv[0]) == 0) {
			printf("usage:\n");
			print_one(stdout, &subcmds[i], true);
			/* "help config": list the config subcommands too. */
			continue;
		}
		if (argc == 1 && str_has_prefix(subcmds[i].name, argv[0]) && subcmds[i].name[strlen(argv[0])] == ' ')
			print_one(stdout, &subcmds[i], true);
	}
	for (size_t i = 0; i < ARRAY_LEN(subcmds); i++)
		if (strcmp(subcmds[i].name, name) == 0 || strcmp(subcmds[i].name, argv[0]) == 0 ||
		    (str_has_prefix(subcmds[i].name, argv[0]) && subcmds[i].name[strlen(argv[0])] == ' '))
			return 0;
	fprintf(stderr, "mox: unknown command \"%s\"\n", name);
	usage_all(stderr);
	return 2;
}

int
cmd_flags(const char *cmdname, int argc, char **argv, const struct cmd_flag *flags, int nflags)
{
	int i;

	for (i = 0; i < argc; i++) {
		const char *a = argv[i], *val = NULL;
		char name[64];
		int k;

		if (a[0] != '-' || a[1] == '\0')
			break;
		if (strcmp(a, "--") == 0)
			return i + 1;
		a += a[1] == '-' ? 2 : 1;
		const char *eq = strchr(a, '=');
		snprintf(name, sizeof(name), "%.*s", eq ? (int)(eq - a) : (int)strlen(a), a);
		if (eq)
			val = eq + 1;
		for (k = 0; k < nflags; k++)
			if (strcmp(flags[k].name, name) == 0)
				break;
		if (k == nflags) {
			fprintf(stderr, "mox %s: unknown flag -%s\n", cmdname, name);
			return -1;
		}
		if (flags[k].type == FLAG_BOOL) {
			if (val == NULL || strcmp(val, "true") == 0)
				*(bool *)flags[k].value = true;
			else if (strcmp(val, "false") == 0)
				*(bool *)flags[k].value = false;
			else {
				fprintf(stderr, "mox %s: flag -%s takes true or false\n", cmdname, name);
				return -1;
			}
		} else {
			if (val == NULL) {
				if (i + 1 >= argc) {
					fprintf(stderr, "mox %s: flag -%s needs a value\n", cmdname, name);
					return -1;
				}
				val = argv[++i];
			}
			*(const char **)flags[k].value = val;
		}
	}
	return i;
}

int
cmd_load_config(struct config **cfg_r)
{
	char err[1024];

	if (config_load(cmd_config_path, cfg_r, err, sizeof(err)) < 0) {
		fprintf(stderr, "mox: config: %s\n", err);
		return -1;
	}
	return 1;
}

void
cmd_apply_log_levels(const struct config *cfg)
{
	enum log_level lvl;

	if (log_level_parse(cfg->st.log_level, &lvl) > 0)
		log_set_level(lvl);
	log_reset_package_levels();
	for (size_t i = 0; i < cfg->st.package_log_levels.n; i++)
		if (log_level_parse(cfg->st.package_log_levels.vals[i], &lvl) > 0)
			log_set_package_level(cfg->st.package_log_levels.keys[i], lvl);
}

int
main(int argc, char **argv)
{
	bool version = false;
	const struct cmd_flag global[] = {
		{"config", FLAG_STRING, &cmd_config_path, "configuration file"},
		{"version", FLAG_BOOL, &version, "print the version"},
	};
	int i;

	/* Storage threads hand results to the loop: libevent must be thread-aware. */
	evthread_use_pthreads();
	i = cmd_flags("", argc - 1, argv + 1, global, ARRAY_LEN(global));

	if (i < 0) {
		usage_all(stderr);
		return 2;
	}
	i += 1;
	if (version)
		return cmd_version(0, NULL);
	if (i >= argc) {
		usage_all(stderr);
		return 2;
	}
	/* Two-word commands first ("config test"), then one-word ones. */
	if (i + 1 < argc) {
		char two[128];
		snprintf(two, sizeof(two), "%s %s", argv[i], argv[i + 1]);
		for (size_t k = 0; k < ARRAY_LEN(subcmds); k++)
			if (strcmp(subcmds[k].name, two) == 0)
				return subcmds[k].fn(argc - i - 2, argv + i + 2);
	}
	for (size_t k = 0; k < ARRAY_LEN(subcmds); k++)
		if (strcmp(subcmds[k].name, argv[i]) == 0)
			return subcmds[k].fn(argc - i - 1, argv + i + 1);
	fprintf(stderr, "mox: unknown command \"%s\"\n", argv[i]);
	usage_all(stderr);
	return 2;
}

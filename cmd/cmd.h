/*
 * cmd: the `mox` command: global flags, the subcommand table, and helpers the
 * subcommands share (flag parsing, config loading, control socket client).
 * Every subcommand is a function taking the arguments after its name and
 * returning the process exit code (0 ok, 1 failure, 2 usage).
 */
#ifndef MOX_CMD_H
#define MOX_CMD_H

#include <stdbool.h>

#include "daemon/config.h"

#define MOX_VERSION "0.1.0-dev"

/* The global -config flag (default config/mox.yaml). */
extern const char *cmd_config_path;

/* Flag definitions for cmd_flags: Go-style single-dash flags (-name value, -name=value, -bool). */
struct cmd_flag {
	const char *name;
	enum { FLAG_BOOL, FLAG_STRING } type;
	void *value; /* bool * or const char ** */
	const char *help;
};

/*
 * Parse leading flags of argv; returns the index of the first non-flag
 * argument, or -1 after printing an error (usage error, exit 2).
 */
int cmd_flags(const char *cmdname, int argc, char **argv, const struct cmd_flag *flags, int nflags);

/* Print a subcommand's usage to stderr and return 2. */
int cmd_usage(const char *name);

/* Load the config at cmd_config_path; prints the error and returns -1 on failure. */
int cmd_load_config(struct config **cfg_r);

/* Apply the config's log levels. */
void cmd_apply_log_levels(const struct config *cfg);

/*
 * Send one command (words joined by tabs) to the running server's control
 * socket, printing "- " lines to stdout without the prefix. Returns 0 on "ok",
 * 1 on an error reply or when no server answers (message on stderr).
 */
int cmd_control(const struct config *cfg, int argc, const char *const *argv);

/* Run the configured server until it stops. drop: switch to the configured user (serve as root). */
int serve_run(struct config *cfg, bool drop);

/* ---- data tools (cmd/data.c) ---- */
struct idx_account;
/* Progress lines are printed to stderr every this many messages. */
#define CMD_PROGRESS_EVERY 1000
/* True when the server's control socket answers. */
bool cmd_server_running(const struct config *cfg);
/* cmd_control, but "- progress N" lines go to stderr every CMD_PROGRESS_EVERY messages. */
int cmd_control_progress(const struct config *cfg, int argc, const char *const *argv);
/* p made absolute against the working directory (caller frees). */
char *cmd_abspath(const char *p);
/* Open (creating) a configured account directly; prints the error. 1, -1. */
int cmd_open_account(const struct config *cfg, const char *name, bool no_fsync, struct idx_account **a_r);
/* A report callback printing text and a newline to stdout. */
void cmd_print_line(void *arg, const char *text);

int cmd_serve(int argc, char **argv);
int cmd_localserve(int argc, char **argv);
int cmd_config_test(int argc, char **argv);
int cmd_config_describe_static(int argc, char **argv);
int cmd_config_describe_domains(int argc, char **argv);
int cmd_config_printservice(int argc, char **argv);
int cmd_stop(int argc, char **argv);
int cmd_status(int argc, char **argv);
int cmd_import(int argc, char **argv);
int cmd_export(int argc, char **argv);
int cmd_backup(int argc, char **argv);
int cmd_verifydata(int argc, char **argv);
int cmd_fixuidmeta(int argc, char **argv);
int cmd_fixmsgsize(int argc, char **argv);
int cmd_reassignuids(int argc, char **argv);
int cmd_bumpuidvalidity(int argc, char **argv);
int cmd_recalculatemailboxcounts(int argc, char **argv);
int cmd_setaccountpassword(int argc, char **argv);
int cmd_reopenaccount(int argc, char **argv);

#endif

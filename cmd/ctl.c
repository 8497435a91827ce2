/* ctl: commands that talk to the running server over its control socket. */
#define _GNU_SOURCE 1
#include <stdio.h>
#include <unistd.h>

#include "cmd/cmd.h"

int
cmd_control(const struct config *cfg, int argc, const char *const *argv)
{
	/* The same client as the data tools use; other commands send no progress lines. */
	return cmd_control_progress(cfg, argc, argv);
}

static int
simple(const char *name, int argc)
{
	struct config *cfg;
	const char *args[] = {name};
	int rc;

	if (argc != 0)
		return cmd_usage(name);
	if (cmd_load_config(&cfg) < 0)
		return 1;
	rc = cmd_control(cfg, 1, args);
	config_free(&cfg);
	return rc;
}

int
cmd_stop(int argc, char **argv)
{
	struct config *cfg;
	const char *args[] = {"stop"};
	int rc;

	if (argc != 0)
		return cmd_usage("stop");
	if (cmd_load_config(&cfg) < 0)
		return 1;
	rc = cmd_control(cfg, 1, args);
	/* Return once the server is gone: its control socket stops answering. */
	for (int i = 0; rc == 0 && i < 300 && cmd_server_running(cfg); i++)
		usleep(100000);
	config_free(&cfg);
	return rc;
}

int
cmd_status(int argc, char **argv)
{
	return simple("status", argc);
}

/* ctl: commands that talk to the running server over its control socket. */
#define _GNU_SOURCE 1
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "cmd/cmd.h"

int
cmd_control(const struct config *cfg, int argc, const char *const *argv)
{
	struct sockaddr_un sun = {0};
	struct mbuf req;
	FILE *f;
	char line[65536];
	int fd, rc = 1;

	sun.sun_family = AF_UNIX;
	snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", cfg->control_socket);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0) {
		fprintf(stderr, "mox: no server answers at control socket %s: %s\n", cfg->control_socket, strerror(errno));
		if (fd >= 0)
			close(fd);
		return 1;
	}
	mbuf_init(&req, 65536);
	for (int i = 0; i < argc; i++) {
		if (strchr(argv[i], '\t') != NULL || strchr(argv[i], '\n') != NULL) {
			fprintf(stderr, "mox: arguments may not contain tabs or newlines\n");
			goto out;
		}
		if (mbuf_printf(&req, "%s%s", i ? "\t" : "", argv[i]) < 0) {
			fprintf(stderr, "mox: command too long\n");
			goto out;
		}
	}
	if (mbuf_add(&req, "\n", 1) < 0 || write_all(fd, req.data, req.len) < 0) {
		fprintf(stderr, "mox: writing to control socket: %s\n", strerror(errno));
		goto out;
	}
	f = fdopen(fd, "r");
	if (f == NULL)
		goto out;
	fd = -1;
	while (fgets(line, sizeof(line), f) != NULL) {
		if (strncmp(line, "- ", 2) == 0) {
			fputs(line + 2, stdout);
		} else if (strcmp(line, "ok\n") == 0) {
			rc = 0;
			break;
		} else {
			fprintf(stderr, "mox: %s", line);
			break;
		}
	}
	if (rc != 0 && feof(f))
		fprintf(stderr, "mox: control connection closed without an answer\n");
	fclose(f);
out:
	if (fd >= 0)
		close(fd);
	mbuf_clear(&req);
	return rc;
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
	for (int i = 0; rc == 0 && i < 300; i++) {
		struct sockaddr_un sun = {0};
		int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		sun.sun_family = AF_UNIX;
		snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", cfg->control_socket);
		int up = fd >= 0 && connect(fd, (struct sockaddr *)&sun, sizeof(sun)) == 0;
		if (fd >= 0)
			close(fd);
		if (!up)
			break;
		usleep(100000);
	}
	config_free(&cfg);
	return rc;
}

int
cmd_status(int argc, char **argv)
{
	return simple("status", argc);
}

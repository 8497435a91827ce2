/*
 * data: helpers shared by the data tools (import, export, backup, verifydata,
 * the fix commands, setaccountpassword): is a server running, a control
 * client that sends progress to stderr, opening an account directly.
 */
#define _GNU_SOURCE 1
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "cmd/cmd.h"
#include "daemon/store.h"

static int
control_connect(const struct config *cfg)
{
	struct sockaddr_un sun = {0};
	int fd;

	sun.sun_family = AF_UNIX;
	snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", cfg->control_socket);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	if (connect(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0) {
		close(fd);
		return -1;
	}
	return fd;
}

bool
cmd_server_running(const struct config *cfg)
{
	int fd = control_connect(cfg);

	if (fd < 0)
		return false;
	close(fd);
	return true;
}

int
cmd_control_progress(const struct config *cfg, int argc, const char *const *argv)
{
	struct mbuf req;
	FILE *f;
	char line[65536];
	unsigned long long shown = 0;
	int fd, rc = 1;

	fd = control_connect(cfg);
	if (fd < 0) {
		fprintf(stderr, "mox: no server answers at control socket %s: %s\n", cfg->control_socket, strerror(errno));
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
		unsigned long long n;

		if (sscanf(line, "- progress %llu", &n) == 1) {
			if (n / CMD_PROGRESS_EVERY > shown / CMD_PROGRESS_EVERY)
				fprintf(stderr, "%llu messages so far\n", n);
			shown = n;
		} else if (strncmp(line, "- ", 2) == 0) {
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

char *
cmd_abspath(const char *p)
{
	char cwd[PATH_MAX];

	if (p[0] == '/' || getcwd(cwd, sizeof(cwd)) == NULL)
		return xstrdup(p);
	return xasprintf("%s/%s", cwd, p);
}

int
cmd_open_account(const struct config *cfg, const char *name, bool no_fsync, struct idx_account **a_r)
{
	struct idx_options opts;
	char err[1024], *dir;
	int r;

	if (config_account_find(cfg, name) == NULL) {
		fprintf(stderr, "mox: no account %s in the configuration\n", name);
		return -1;
	}
	dir = store_account_dir(cfg, name);
	store_account_options(cfg, name, &opts);
	opts.no_fsync = no_fsync;
	if (mkdir_p(dir, 0700) < 0) {
		fprintf(stderr, "mox: creating %s: %s\n", dir, strerror(errno));
		free(dir);
		return -1;
	}
	r = idx_account_open(dir, &opts, a_r, err, sizeof(err));
	if (r < 0)
		fprintf(stderr, "mox: opening account %s: %s\n", name, err);
	free(dir);
	return r < 0 ? -1 : 1;
}

void
cmd_print_line(void *arg, const char *text)
{
	printf("%s\n", text);
}

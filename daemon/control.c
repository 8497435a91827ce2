/*
 * control: the unix socket that `mox stop`, `mox status` and the account
 * commands talk to. Protocol: the client sends one line of words separated by
 * tabs; the server answers with zero or more lines starting with "- ",
 * followed by "ok" or "error: <message>". Access is limited by the socket's
 * file mode (0600, owned by the server's user).
 */
#define _GNU_SOURCE 1
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <event2/buffer.h>

#include "daemon/log.h"
#include "daemon/server_private.h"

#define CONTROL_LINE_MAX 65536
#define CONTROL_ARGS_MAX 64

struct control_conn {
	struct server *srv;
	struct bufferevent *bev;
	uint64_t cid;
	bool done;
	bool pending; /* an asynchronous command is running: wait for control_finish */
	bool gone;    /* the client went away while pending */
};

void
control_reply_line(struct control_conn *cc, const char *fmt, ...)
{
	struct evbuffer *out = bufferevent_get_output(cc->bev);
	va_list ap;

	evbuffer_add(out, "- ", 2);
	va_start(ap, fmt);
	evbuffer_add_vprintf(out, fmt, ap);
	va_end(ap);
	evbuffer_add(out, "\n", 1);
}

static int
cmd_status(struct server *srv, struct control_conn *cc, int argc, char **argv)
{
	control_reply_line(cc, "pid %d", (int)getpid());
	control_reply_line(cc, "uptime %lld", (long long)((mono_ms() - srv->started_ms) / 1000));
	control_reply_line(cc, "connections %zu", srv->nconns);
	for (size_t i = 0; i < srv->nsocks; i++)
		control_reply_line(cc, "listening %s %s", config_svc_names[srv->socks[i]->svc], srv->socks[i]->addr);
	return 1;
}

static int
cmd_stop(struct server *srv, struct control_conn *cc, int argc, char **argv)
{
	log_info("control", cc->cid, "stop requested over control socket");
	server_stop(srv);
	return 1;
}

static int
cmd_help(struct server *srv, struct control_conn *cc, int argc, char **argv)
{
	for (size_t i = 0; i < srv->ncmds; i++)
		control_reply_line(cc, "%s %s", srv->cmds[i].name, srv->cmds[i].usage);
	return 1;
}

void
server_control_register(struct server *srv, const char *name, const char *usage, control_fn fn)
{
	srv->cmds = xrealloc(srv->cmds, (srv->ncmds + 1) * sizeof(*srv->cmds));
	srv->cmds[srv->ncmds].name = name;
	srv->cmds[srv->ncmds].usage = usage;
	srv->cmds[srv->ncmds].fn = fn;
	srv->ncmds++;
}

static void
cc_free(struct control_conn *cc)
{
	bufferevent_free(cc->bev);
	free(cc);
}

static void
cc_write(struct bufferevent *bev, void *arg)
{
	struct control_conn *cc = arg;

	if (cc->done)
		cc_free(cc);
}

static void
cc_event(struct bufferevent *bev, short what, void *arg)
{
	struct control_conn *cc = arg;

	if (cc->pending) {
		cc->gone = true; /* freed by control_finish */
		bufferevent_disable(bev, EV_READ | EV_WRITE);
		return;
	}
	cc_free(cc);
}

void
control_finish(struct control_conn *cc, const char *err)
{
	struct evbuffer *out = bufferevent_get_output(cc->bev);

	cc->pending = false;
	if (cc->gone) {
		cc_free(cc);
		return;
	}
	if (err == NULL)
		evbuffer_add_printf(out, "ok\n");
	else
		evbuffer_add_printf(out, "error: %s\n", err);
	if (cc->srv->loop_ended) {
		/*
		 * Its work ran in the store's last drain, after the loop (a command
		 * queued behind a long job at shutdown): answer now, as far as the
		 * socket takes it, and free the connection the loop no longer serves.
		 * (The bufferevent keeps its output's start frozen: send a copy.)
		 */
		evutil_socket_t fd = bufferevent_getfd(cc->bev);
		size_t len = evbuffer_get_length(out), off = 0;
		const char *p = (const char *)evbuffer_pullup(out, -1);
		while (p != NULL && off < len) {
			ssize_t n = send(fd, p + off, len - off, MSG_NOSIGNAL | MSG_DONTWAIT);
			if (n <= 0)
				break;
			off += (size_t)n;
		}
		cc_free(cc);
		return;
	}
	cc->done = true;
	bufferevent_setcb(cc->bev, NULL, cc_write, cc_event, cc);
	bufferevent_enable(cc->bev, EV_WRITE);
}

uint64_t
control_cid(const struct control_conn *cc)
{
	return cc->cid;
}

static void
cc_read(struct bufferevent *bev, void *arg)
{
	struct control_conn *cc = arg;
	struct server *srv = cc->srv;
	struct evbuffer *in = bufferevent_get_input(bev);
	struct evbuffer *out = bufferevent_get_output(bev);
	char *line, *argv[CONTROL_ARGS_MAX + 1];
	size_t len;
	int argc = 0, r = -1;

	if (cc->done)
		return;
	line = evbuffer_readln(in, &len, EVBUFFER_EOL_LF);
	if (line == NULL) {
		if (evbuffer_get_length(in) > CONTROL_LINE_MAX) {
			evbuffer_add_printf(out, "error: line too long\n");
			goto done;
		}
		return;
	}
	/* strsep, not strtok: an empty argument (e.g. an empty password) stays an argument. */
	for (char *rest = line, *tok; rest != NULL && argc < CONTROL_ARGS_MAX;) {
		tok = strsep(&rest, "\t");
		argv[argc++] = tok;
	}
	argv[argc] = NULL;
	if (argc == 0 || argv[0][0] == '\0') {
		evbuffer_add_printf(out, "error: empty command\n");
		free(line);
		goto done;
	}
	for (size_t i = 0; i < srv->ncmds; i++) {
		if (strcmp(srv->cmds[i].name, argv[0]) == 0) {
			bufferevent_disable(bev, EV_READ);
			/* Pending before the call: fn may answer at once with control_finish (which clears it). */
			cc->pending = true;
			r = srv->cmds[i].fn(srv, cc, argc, argv);
			if (r != 0)
				cc->pending = false;
			if (r > 0)
				evbuffer_add_printf(out, "ok\n");
			else if (r < 0)
				evbuffer_add_printf(out, "error: %s failed, see the server log (cid %llx)\n", argv[0],
				    (unsigned long long)cc->cid);
			free(line);
			if (r == 0)
				return;
			goto done;
		}
	}
	evbuffer_add_printf(out, "error: unknown command \"%.64s\"\n", argv[0]);
	free(line);
done:
	cc->done = true;
	bufferevent_disable(bev, EV_READ);
	bufferevent_setcb(bev, NULL, cc_write, cc_event, cc);
	if (evbuffer_get_length(out) == 0)
		cc_free(cc);
}

static void
ctl_accept(struct evconnlistener *evl, evutil_socket_t fd, struct sockaddr *sa, int salen, void *arg)
{
	struct server *srv = arg;
	struct control_conn *cc = xcalloc(1, sizeof(*cc));

	cc->srv = srv;
	cc->cid = server_new_cid(srv);
	cc->bev = bufferevent_socket_new(srv->base, fd, BEV_OPT_CLOSE_ON_FREE);
	if (cc->bev == NULL) {
		close(fd);
		free(cc);
		return;
	}
	struct timeval tv = {30, 0};
	bufferevent_set_timeouts(cc->bev, &tv, &tv);
	bufferevent_setcb(cc->bev, cc_read, NULL, cc_event, cc);
	bufferevent_enable(cc->bev, EV_READ | EV_WRITE);
}

int
server_control_open(struct server *srv, char *err, size_t errlen)
{
	const char *path = srv->cfg->control_socket;
	struct sockaddr_un sun = {0};
	int fd;

	sun.sun_family = AF_UNIX;
	if (snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", path) >= (int)sizeof(sun.sun_path)) {
		snprintf(err, errlen, "control socket path too long: %s", path);
		return -1;
	}
	/* A socket file that answers belongs to a running server; one that does not is stale. */
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd >= 0 && connect(fd, (struct sockaddr *)&sun, sizeof(sun)) == 0) {
		close(fd);
		snprintf(err, errlen, "another mox is running: control socket %s answers", path);
		return -1;
	}
	if (fd >= 0)
		close(fd);
	if (unlink(path) < 0 && errno != ENOENT) {
		snprintf(err, errlen, "removing stale control socket %s: %s", path, strerror(errno));
		return -1;
	}
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0) {
		snprintf(err, errlen, "control socket: %s", strerror(errno));
		return -1;
	}
	mode_t old = umask(0077);
	int br = bind(fd, (struct sockaddr *)&sun, sizeof(sun));
	umask(old);
	if (br < 0 || listen(fd, 16) < 0) {
		snprintf(err, errlen, "control socket %s: %s", path, strerror(errno));
		close(fd);
		return -1;
	}
	srv->ctl = evconnlistener_new(srv->base, ctl_accept, srv, LEV_OPT_CLOSE_ON_FREE, -1, fd);
	if (srv->ctl == NULL) {
		close(fd);
		snprintf(err, errlen, "control socket %s: cannot listen", path);
		return -1;
	}
	srv->ctl_path = xstrdup(path);
	server_control_register(srv, "status", "", cmd_status);
	server_control_register(srv, "stop", "", cmd_stop);
	server_control_register(srv, "help", "", cmd_help);
	return 1;
}

void
control_close(struct server *srv)
{
	if (srv->ctl != NULL) {
		evconnlistener_free(srv->ctl);
		srv->ctl = NULL;
	}
	if (srv->ctl_path != NULL) {
		unlink(srv->ctl_path);
		free(srv->ctl_path);
		srv->ctl_path = NULL;
	}
}

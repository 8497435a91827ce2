/* server internals shared by server.c, listener.c and control.c. */
#ifndef MOX_SERVER_PRIVATE_H
#define MOX_SERVER_PRIVATE_H

#include <event2/listener.h>
#include <tcutil.h>

#include "daemon/server.h"
#include "daemon/tls.h"

struct listen_sock {
	struct server *srv;
	struct evconnlistener *evl;
	const struct config_listener *listener;
	enum config_svc svc;
	struct tls_ctx *tls;
	struct event *resume; /* re-enables accepting after an accept error */
	char addr[80];
};

struct control_cmd {
	const char *name;
	const char *usage;
	control_fn fn;
};

struct server {
	struct event_base *base;
	struct config *cfg;
	const struct proto_handler *handlers[SVC_COUNT];
	struct tls_ctx **tls; /* per listener, NULL where no TLS */
	size_t ntls;
	struct listen_sock **socks;
	size_t nsocks;
	struct handshake *handshakes; /* TLS handshakes in progress (listener.c) */
	struct event *sigterm, *sigint, *sigpipe;
	struct event *stop_ev;
	bool stopping;
	bool loop_ended; /* server_run returned: nothing is written by the loop any more */
	bool accepting;
	struct store *store;
	struct auth *auth;
	struct dns *dns; /* NULL: no SPF/DKIM checks */
	struct spool *spool; /* spool files made ahead of time; NULL: none */
	uint64_t next_cid;
	int64_t started_ms;
	/* limits */
	TCMAP *ipstate;   /* ipkey -> struct ip_state */
	size_t nconns;
	/* control socket */
	struct evconnlistener *ctl;
	char *ctl_path;
	struct control_cmd *cmds;
	size_t ncmds;
};

struct handshake;

struct ip_state {
	uint32_t conns;       /* open now */
	uint32_t new_count;   /* new in the current minute */
	int64_t window_start; /* ms */
};

void control_close(struct server *srv);
void listeners_close(struct server *srv);

#endif

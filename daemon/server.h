/*
 * server: the daemon core. One libevent loop owns every socket: listeners
 * built from the config (plain, implicit TLS, and one TLS port that dispatches
 * by ALPN), connection limits per IP, the control socket, signals and clean
 * shutdown. Protocols (IMAP, SMTP, HTTP) plug in as proto_handler; the core
 * hands each a connected bufferevent (TLS handshake already done on TLS ports).
 * Does not speak any mail protocol itself.
 */
#ifndef MOX_SERVER_H
#define MOX_SERVER_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include <event2/bufferevent.h>
#include <event2/event.h>
#include <openssl/ssl.h>

#include "daemon/config.h"

struct server;
struct tls_ctx;
struct store;
struct auth;
struct dns;
struct spool;

/* What a protocol handler learns about a new connection. Owned by the handler
 * until it calls server_conn_done(). */
struct conn_info {
	uint64_t cid;
	char remote_ip[64];
	int remote_port;
	char local_ip[64];
	int local_port;
	enum config_svc svc;          /* the service of the port; for ALPN the chosen one */
	const struct config_listener *listener;
	struct tls_ctx *tls;          /* the listener's TLS contexts (STARTTLS), NULL without TLS */
	SSL *ssl;                     /* non-NULL when the connection is TLS already */
	char alpn[16];                /* negotiated ALPN protocol id, "" if none */
	unsigned char ipkey[17];      /* key for per-IP limits (internal) */
	size_t ipkeylen;
};

struct proto_handler {
	const char *name; /* "imap", "smtp", "http": also the log package */
	/*
	 * Take over a connection: bev is connected (TLS handshake done on TLS ports),
	 * with no callbacks set and reading disabled. The handler owns bev and ci
	 * and must eventually call server_conn_done(srv, ci) once, after freeing bev.
	 */
	void (*accept)(struct server *srv, struct bufferevent *bev, struct conn_info *ci);
	/* Optional: the server is stopping; say goodbye to clients (may be NULL). */
	void (*shutdown)(struct server *srv);
	/* Optional: number of open connections, for status (may be NULL). */
	size_t (*count)(struct server *srv);
};

/* A control socket command: writes response lines with control_reply_line. */
struct control_conn;
typedef int (*control_fn)(struct server *srv, struct control_conn *cc, int argc, char **argv);

/* Create a server for cfg (borrowed; must outlive the server). */
struct server *server_new(struct config *cfg);
void server_free(struct server **srvp);

struct event_base *server_base(struct server *srv);
struct config *server_config(struct server *srv);

/* The account store and authentication shared by all protocol handlers (set by serve). */
void server_set_store(struct server *srv, struct store *st, struct auth *au);
struct store *server_store(struct server *srv);
struct auth *server_auth(struct server *srv);

/*
 * The resolver for the SPF and DKIM checks of inbound SMTP (set by serve;
 * borrowed, freed by serve after the connections are gone). NULL: check
 * nothing (localserve without DNSResolver).
 */
void server_set_dns(struct server *srv, struct dns *d);
struct dns *server_dns(struct server *srv);

/*
 * The pool of spool files created ahead of time in DataDir/tmp (set by serve
 * after the privilege drop; borrowed, freed by serve after the loop ends).
 * NULL: none, every message opens its own spool file.
 */
void server_set_spool(struct server *srv, struct spool *sp);
struct spool *server_spool(struct server *srv);

/* Register the handler for a service (all ports of that service, and its ALPN id). */
void server_register(struct server *srv, enum config_svc svc, const struct proto_handler *h);

/*
 * Load TLS and bind every enabled service of every listener. Returns 1, or -1
 * with err naming the address, port and config key (e.g. a port in use).
 */
int server_bind(struct server *srv, char *err, size_t errlen);

/*
 * Start accepting connections on the bound ports. Until then connections wait
 * in the kernel's backlog (the server is still loading, e.g. account secrets).
 */
void server_accept_start(struct server *srv);

/*
 * Open the control socket at the configured path (refusing when another
 * server answers there). Returns 1 or -1 with err.
 */
int server_control_open(struct server *srv, char *err, size_t errlen);

/* Add a control command (name is borrowed). */
void server_control_register(struct server *srv, const char *name, const char *usage, control_fn fn);
/* Write one response line ("- " prefixed) to a control client. */
void control_reply_line(struct control_conn *cc, const char *fmt, ...) MOX_PRINTF(2, 3);
/*
 * A control command returns > 0 (ok), < 0 (failed, see the log) or 0: the
 * answer follows later with control_finish (err NULL for ok, else a message
 * for the client) — e.g. after work on a storage thread.
 */
void control_finish(struct control_conn *cc, const char *err);
uint64_t control_cid(const struct control_conn *cc);

/* Run the event loop until server_stop or a SIGTERM/SIGINT. Returns 0. */
int server_run(struct server *srv);
/* Begin a clean shutdown (safe from any callback on the loop thread). */
void server_stop(struct server *srv);
bool server_stopping(struct server *srv);
/* The event loop has ended (server_run returned): work queued now never runs. */
bool server_loop_ended(const struct server *srv);

/* A handler releases a connection's slot in the limits. Frees ci. */
void server_conn_done(struct server *srv, struct conn_info *ci);

/* A fresh connection id. */
uint64_t server_new_cid(struct server *srv);

/*
 * Install async-signal-safe SIGTERM/SIGINT handlers before the loop exists,
 * so a signal during start-up ends the process cleanly. Returns true if a
 * stop signal arrived already.
 */
void server_early_signals(void);
bool server_early_stop_requested(void);

#endif

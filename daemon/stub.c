/*
 * stub: placeholder handlers for services whose protocol is not built yet.
 * They answer with the protocol's "unavailable" reply and close, so clients
 * get a clear answer instead of a silent socket. Each protocol's own handler
 * replaces its stub as it lands.
 */
#include <string.h>

#include <event2/buffer.h>

#include "daemon/log.h"
#include "daemon/stub.h"

struct stub_conn {
	struct server *srv;
	struct conn_info *ci;
	struct bufferevent *bev;
};

static void
stub_free(struct stub_conn *sc)
{
	bufferevent_free(sc->bev);
	server_conn_done(sc->srv, sc->ci);
	free(sc);
}

static void
stub_write(struct bufferevent *bev, void *arg)
{
	stub_free(arg);
}

static void
stub_event(struct bufferevent *bev, short what, void *arg)
{
	stub_free(arg);
}

static void
stub_accept(struct server *srv, struct bufferevent *bev, struct conn_info *ci, const char *msg)
{
	struct stub_conn *sc = xcalloc(1, sizeof(*sc));

	sc->srv = srv;
	sc->ci = ci;
	sc->bev = bev;
	bufferevent_setcb(bev, NULL, stub_write, stub_event, sc);
	bufferevent_enable(bev, EV_WRITE);
	evbuffer_add_printf(bufferevent_get_output(bev), msg, (unsigned long long)ci->cid);
}

static void
imap_accept(struct server *srv, struct bufferevent *bev, struct conn_info *ci)
{
	stub_accept(srv, bev, ci, "* BYE [UNAVAILABLE] IMAP service not available (cid %llx)\r\n");
}

static void
smtp_accept(struct server *srv, struct bufferevent *bev, struct conn_info *ci)
{
	stub_accept(srv, bev, ci, "421 4.3.2 SMTP service not available (cid %llx)\r\n");
}

static void
http_accept(struct server *srv, struct bufferevent *bev, struct conn_info *ci)
{
	stub_accept(srv, bev, ci, "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\n"
	    "Connection: close\r\n\r\nservice not available (cid %llx)\n");
}

const struct proto_handler stub_imap_handler = {"imap", imap_accept, NULL, NULL};
const struct proto_handler stub_smtp_handler = {"smtp", smtp_accept, NULL, NULL};
const struct proto_handler stub_http_handler = {"http", http_accept, NULL, NULL};

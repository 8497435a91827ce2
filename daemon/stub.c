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

/* HTTP clients speak first: answer once the request head is in, so closing
 * does not reset the connection under an unread request. */
static void
http_read(struct bufferevent *bev, void *arg)
{
	struct stub_conn *sc = arg;
	struct evbuffer *in = bufferevent_get_input(bev);
	struct evbuffer_ptr end = evbuffer_search(in, "\r\n\r\n", 4, NULL);

	if (end.pos < 0 && evbuffer_get_length(in) < 16384)
		return;
	evbuffer_drain(in, evbuffer_get_length(in));
	bufferevent_disable(bev, EV_READ);
	bufferevent_setcb(bev, NULL, stub_write, stub_event, sc);
	evbuffer_add_printf(bufferevent_get_output(bev), "HTTP/1.1 503 Service Unavailable\r\n"
	    "Content-Type: text/plain\r\nConnection: close\r\n\r\nservice not available (cid %llx)\n",
	    (unsigned long long)sc->ci->cid);
}

static void
http_accept(struct server *srv, struct bufferevent *bev, struct conn_info *ci)
{
	struct stub_conn *sc = xcalloc(1, sizeof(*sc));
	struct timeval tv = {30, 0};

	sc->srv = srv;
	sc->ci = ci;
	sc->bev = bev;
	bufferevent_set_timeouts(bev, &tv, &tv);
	bufferevent_setcb(bev, http_read, NULL, stub_event, sc);
	bufferevent_enable(bev, EV_READ | EV_WRITE);
}

const struct proto_handler stub_imap_handler = {"imap", imap_accept, NULL, NULL};
const struct proto_handler stub_smtp_handler = {"smtp", smtp_accept, NULL, NULL};
const struct proto_handler stub_http_handler = {"http", http_accept, NULL, NULL};

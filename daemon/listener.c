/*
 * listener: sockets for every enabled service, per-IP connection limits, the
 * TLS handshake on implicit-TLS ports, and ALPN dispatch. A handler receives a
 * connection only after the handshake, so a slow or broken TLS client never
 * reaches protocol code.
 */
#define _GNU_SOURCE 1
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/bufferevent_ssl.h>
#include <openssl/err.h>

#include "daemon/log.h"
#include "daemon/server_private.h"

#define TLS_HANDSHAKE_TIMEOUT_SEC 30

static enum tls_alpn_mode
alpn_mode(enum config_svc svc)
{
	switch (svc) {
	case SVC_IMAPS: return TLS_ALPN_IMAP;
	case SVC_SUBMISSIONS: return TLS_ALPN_SMTP;
	case SVC_HTTPS: return TLS_ALPN_HTTP;
	case SVC_ALPN: return TLS_ALPN_ANY;
	default: return TLS_ALPN_NONE;
	}
}

/* The per-IP key: the IPv4 address, or the /64 prefix of an IPv6 address. */
static void
ip_key(const struct sockaddr *sa, struct conn_info *ci)
{
	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *s4 = (const struct sockaddr_in *)sa;
		ci->ipkey[0] = 4;
		memcpy(ci->ipkey + 1, &s4->sin_addr, 4);
		ci->ipkeylen = 5;
	} else {
		const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)sa;
		ci->ipkey[0] = 6;
		memcpy(ci->ipkey + 1, &s6->sin6_addr, 8);
		ci->ipkeylen = 9;
	}
}

static void
addr_text(const struct sockaddr *sa, char *ip, size_t iplen, int *port)
{
	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *s4 = (const struct sockaddr_in *)sa;
		inet_ntop(AF_INET, &s4->sin_addr, ip, (socklen_t)iplen);
		*port = ntohs(s4->sin_port);
	} else if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)sa;
		inet_ntop(AF_INET6, &s6->sin6_addr, ip, (socklen_t)iplen);
		*port = ntohs(s6->sin6_port);
	} else {
		snprintf(ip, iplen, "?");
		*port = 0;
	}
}

/* Count a new connection against the limits. Returns NULL when allowed, else the reason. */
static const char *
limits_admit(struct server *srv, struct conn_info *ci)
{
	const struct config_limits *lim = &srv->cfg->st.limits;
	struct ip_state st = {0};
	const void *v;
	int vlen;
	int64_t now = mono_ms();

	if ((long long)srv->nconns >= lim->max_connections)
		return "too many connections";
	v = tcmapget(srv->ipstate, ci->ipkey, (int)ci->ipkeylen, &vlen);
	if (v != NULL && vlen == sizeof(st))
		memcpy(&st, v, sizeof(st));
	if (now - st.window_start >= 60000) {
		st.window_start = now;
		st.new_count = 0;
	}
	if ((long long)st.conns >= lim->max_connections_per_ip)
		return "too many connections from this address";
	if ((long long)st.new_count >= lim->max_new_connections_per_ip_per_minute)
		return "too many new connections from this address";
	st.conns++;
	st.new_count++;
	tcmapput(srv->ipstate, ci->ipkey, (int)ci->ipkeylen, &st, sizeof(st));
	srv->nconns++;
	return NULL;
}

void
server_conn_done(struct server *srv, struct conn_info *ci)
{
	struct ip_state st;
	const void *v;
	int vlen;

	if (ci == NULL)
		return;
	v = tcmapget(srv->ipstate, ci->ipkey, (int)ci->ipkeylen, &vlen);
	if (v != NULL && vlen == sizeof(st)) {
		memcpy(&st, v, sizeof(st));
		if (st.conns > 0)
			st.conns--;
		/* Forget idle addresses once their minute is over, so the table stays small. */
		if (st.conns == 0 && mono_ms() - st.window_start >= 60000)
			tcmapout(srv->ipstate, ci->ipkey, (int)ci->ipkeylen);
		else
			tcmapput(srv->ipstate, ci->ipkey, (int)ci->ipkeylen, &st, sizeof(st));
	}
	if (srv->nconns > 0)
		srv->nconns--;
	free(ci);
}

static void
dispatch(struct server *srv, struct bufferevent *bev, struct conn_info *ci)
{
	const struct proto_handler *h;

	if (ci->svc == SVC_ALPN) {
		if (strcmp(ci->alpn, "imap") == 0)
			ci->svc = SVC_IMAPS;
		else if (strcmp(ci->alpn, "smtp") == 0)
			ci->svc = SVC_SUBMISSIONS;
		else
			ci->svc = SVC_HTTPS; /* http/1.1, or no ALPN at all (browsers always send one) */
	}
	h = srv->handlers[ci->svc];
	if (h == NULL) {
		log_error("server", ci->cid, "no handler for service", "service", config_svc_names[ci->svc]);
		bufferevent_free(bev);
		server_conn_done(srv, ci);
		return;
	}
	bufferevent_setcb(bev, NULL, NULL, NULL, NULL);
	bufferevent_disable(bev, EV_READ | EV_WRITE);
	bufferevent_set_timeouts(bev, NULL, NULL);
	h->accept(srv, bev, ci);
}

/* A TLS handshake in progress; listed in the server so a stop can free it. */
struct handshake {
	struct server *srv;
	struct conn_info *ci;
	struct bufferevent *bev;
	struct handshake *prev, *next;
};

static void
handshake_unlink(struct handshake *hs)
{
	struct server *srv = hs->srv;

	if (hs->prev)
		hs->prev->next = hs->next;
	else
		srv->handshakes = hs->next;
	if (hs->next)
		hs->next->prev = hs->prev;
}

static void
handshake_event(struct bufferevent *bev, short what, void *arg)
{
	struct handshake *hs = arg;
	struct server *srv = hs->srv;
	struct conn_info *ci = hs->ci;
	char e[256];

	handshake_unlink(hs);
	free(hs);
	if (what & BEV_EVENT_CONNECTED) {
		ci->ssl = bufferevent_openssl_get_ssl(bev);
		tls_alpn_selected(ci->ssl, ci->alpn, sizeof(ci->alpn));
		log_debug("tls", ci->cid, "tls handshake done", "version", SSL_get_version(ci->ssl),
		    "alpn", ci->alpn, "remote", ci->remote_ip);
		dispatch(srv, bev, ci);
		return;
	}
	unsigned long oe = bufferevent_get_openssl_error(bev);
	if (oe != 0)
		ERR_error_string_n(oe, e, sizeof(e));
	else
		snprintf(e, sizeof(e), "%s", (what & BEV_EVENT_TIMEOUT) ? "timeout" : (what & BEV_EVENT_EOF) ? "eof" : "error");
	log_info("tls", ci->cid, "tls handshake failed", "reason", e, "remote", ci->remote_ip,
	    "service", config_svc_names[ci->svc]);
	bufferevent_free(bev);
	server_conn_done(srv, ci);
}

static void
accept_cb(struct evconnlistener *evl, evutil_socket_t fd, struct sockaddr *sa, int salen, void *arg)
{
	struct listen_sock *ls = arg;
	struct server *srv = ls->srv;
	struct conn_info *ci;
	struct sockaddr_storage local;
	socklen_t llen = sizeof(local);
	const char *why;
	struct bufferevent *bev;

	if (srv->stopping) {
		close(fd);
		return;
	}
	ci = xcalloc(1, sizeof(*ci));
	ci->cid = server_new_cid(srv);
	ci->svc = ls->svc;
	ci->listener = ls->listener;
	ci->tls = ls->tls;
	addr_text(sa, ci->remote_ip, sizeof(ci->remote_ip), &ci->remote_port);
	if (getsockname(fd, (struct sockaddr *)&local, &llen) == 0)
		addr_text((struct sockaddr *)&local, ci->local_ip, sizeof(ci->local_ip), &ci->local_port);
	ip_key(sa, ci);
	if ((why = limits_admit(srv, ci)) != NULL) {
		log_info("server", ci->cid, "connection refused", "reason", why, "remote", ci->remote_ip,
		    "service", config_svc_names[ls->svc]);
		close(fd);
		free(ci);
		return;
	}
	evutil_make_socket_nonblocking(fd);
	/* Replies often go out in pieces (untagged lines, then the tagged one): without
	 * TCP_NODELAY, Nagle plus the peer's delayed ACK adds ~40 ms to each command. */
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	log_debug("server", ci->cid, "new connection", "remote", ci->remote_ip, "listener", ls->addr,
	    "service", config_svc_names[ls->svc]);
	if (!config_svc_implicit_tls(ls->svc)) {
		bev = bufferevent_socket_new(srv->base, fd, BEV_OPT_CLOSE_ON_FREE);
		if (bev == NULL) {
			close(fd);
			server_conn_done(srv, ci);
			return;
		}
		dispatch(srv, bev, ci);
		return;
	}
	SSL *ssl = tls_ssl_new(ls->tls, alpn_mode(ls->svc));
	if (ssl == NULL) {
		log_error("tls", ci->cid, "cannot create TLS session");
		close(fd);
		server_conn_done(srv, ci);
		return;
	}
	bev = bufferevent_openssl_socket_new(srv->base, fd, ssl, BUFFEREVENT_SSL_ACCEPTING, BEV_OPT_CLOSE_ON_FREE);
	if (bev == NULL) {
		SSL_free(ssl);
		close(fd);
		server_conn_done(srv, ci);
		return;
	}
	bufferevent_openssl_set_allow_dirty_shutdown(bev, 1);
	struct handshake *hs = xcalloc(1, sizeof(*hs));
	hs->srv = srv;
	hs->ci = ci;
	hs->bev = bev;
	hs->next = srv->handshakes;
	if (hs->next)
		hs->next->prev = hs;
	srv->handshakes = hs;
	struct timeval tv = {TLS_HANDSHAKE_TIMEOUT_SEC, 0};
	bufferevent_set_timeouts(bev, &tv, &tv);
	bufferevent_setcb(bev, NULL, NULL, handshake_event, hs);
	bufferevent_enable(bev, EV_READ | EV_WRITE);
}

static void
accept_resume(evutil_socket_t fd, short what, void *arg)
{
	struct listen_sock *ls = arg;

	evconnlistener_enable(ls->evl);
}

static void
accept_error_cb(struct evconnlistener *evl, void *arg)
{
	struct listen_sock *ls = arg;
	int e = EVUTIL_SOCKET_ERROR();

	/* EMFILE and friends: stop accepting briefly instead of spinning. */
	log_error("server", 0, "accept failed", "listener", ls->addr, "err", evutil_socket_error_to_string(e));
	evconnlistener_disable(evl);
	struct timeval tv = {1, 0};
	if (ls->resume == NULL)
		ls->resume = evtimer_new(ls->srv->base, accept_resume, ls);
	evtimer_add(ls->resume, &tv);
}

static int
bind_one(struct server *srv, const struct config_listener *l, enum config_svc svc, const char *ip,
    struct tls_ctx *tls, char *err, size_t errlen)
{
	struct sockaddr_storage ss = {0};
	socklen_t sslen;
	int fd, one = 1;
	const struct config_service *cs = &l->svc[svc];
	struct listen_sock *ls;

	if (strchr(ip, ':') != NULL) {
		struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
		s6->sin6_family = AF_INET6;
		s6->sin6_port = htons((uint16_t)cs->port);
		inet_pton(AF_INET6, ip, &s6->sin6_addr);
		sslen = sizeof(*s6);
	} else {
		struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
		s4->sin_family = AF_INET;
		s4->sin_port = htons((uint16_t)cs->port);
		inet_pton(AF_INET, ip, &s4->sin_addr);
		sslen = sizeof(*s4);
	}
	fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		snprintf(err, errlen, "listen %s port %lld (Listeners.%s.%s): socket: %s", ip, cs->port, l->name,
		    config_svc_names[svc], strerror(errno));
		return -1;
	}
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (ss.ss_family == AF_INET6)
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
	if (bind(fd, (struct sockaddr *)&ss, sslen) < 0 || listen(fd, 511) < 0) {
		snprintf(err, errlen, "listen %s port %lld (Listeners.%s.%s): %s", ip, cs->port, l->name,
		    config_svc_names[svc], strerror(errno));
		close(fd);
		return -1;
	}
	ls = xcalloc(1, sizeof(*ls));
	ls->srv = srv;
	ls->listener = l;
	ls->svc = svc;
	ls->tls = tls;
	snprintf(ls->addr, sizeof(ls->addr), strchr(ip, ':') ? "[%s]:%lld" : "%s:%lld", ip, cs->port);
	ls->evl = evconnlistener_new(srv->base, accept_cb, ls, LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC | LEV_OPT_DISABLED, -1, fd);
	if (ls->evl == NULL) {
		snprintf(err, errlen, "listen %s: cannot create listener", ls->addr);
		close(fd);
		free(ls);
		return -1;
	}
	evconnlistener_set_error_cb(ls->evl, accept_error_cb);
	srv->socks = xrealloc(srv->socks, (srv->nsocks + 1) * sizeof(*srv->socks));
	srv->socks[srv->nsocks++] = ls;
	log_info("server", 0, "listening", "address", ls->addr, "service", config_svc_names[svc], "listener", l->name);
	return 1;
}

int
server_bind(struct server *srv, char *err, size_t errlen)
{
	const struct cfg_array *la = &srv->cfg->st.listeners;

	srv->tls = xcalloc(la->n ? la->n : 1, sizeof(*srv->tls));
	srv->ntls = la->n;
	for (size_t i = 0; i < la->n; i++) {
		const struct config_listener *l = &((const struct config_listener *)la->v)[i];
		if (l->tls.keycerts.n > 0) {
			char e[512];
			if (tls_ctx_new(&l->tls, &srv->tls[i], e, sizeof(e)) < 0) {
				snprintf(err, errlen, "Listeners.%s.TLS: %s", l->name, e);
				return -1;
			}
		}
		for (int s = 0; s < SVC_COUNT; s++) {
			if (!l->svc[s].enabled)
				continue;
			for (size_t j = 0; j < l->ips.n; j++)
				if (bind_one(srv, l, (enum config_svc)s, l->ips.v[j], srv->tls[i], err, errlen) < 0)
					return -1;
		}
	}
	return 1;
}

void
server_accept_start(struct server *srv)
{
	if (srv->accepting)
		return;
	srv->accepting = true;
	for (size_t i = 0; i < srv->nsocks; i++)
		evconnlistener_enable(srv->socks[i]->evl);
	log_info("server", 0, "accepting connections");
}

void
listeners_close(struct server *srv)
{
	/* Handshakes still running never reach a protocol handler: drop them. */
	while (srv->handshakes != NULL) {
		struct handshake *hs = srv->handshakes;
		handshake_unlink(hs);
		bufferevent_free(hs->bev);
		server_conn_done(srv, hs->ci);
		free(hs);
	}
	for (size_t i = 0; i < srv->nsocks; i++) {
		evconnlistener_free(srv->socks[i]->evl);
		if (srv->socks[i]->resume != NULL)
			event_free(srv->socks[i]->resume);
		free(srv->socks[i]);
	}
	free(srv->socks);
	srv->socks = NULL;
	srv->nsocks = 0;
}

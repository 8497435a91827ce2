/* server: the event loop, handlers, signals and shutdown. */
#define _GNU_SOURCE 1
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "daemon/log.h"
#include "daemon/server_private.h"
#include "daemon/store.h"

static volatile sig_atomic_t early_stop;

static void
early_handler(int sig)
{
	early_stop = 1;
}

void
server_early_signals(void)
{
	struct sigaction sa;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = early_handler;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
}

bool
server_early_stop_requested(void)
{
	return early_stop != 0;
}

struct server *
server_new(struct config *cfg)
{
	struct server *srv = xcalloc(1, sizeof(*srv));
	struct timespec ts;

	srv->cfg = cfg;
	/*
	 * The epoll changelist: a bufferevent's enables and disables within one
	 * loop turn become one epoll_ctl (measured: 18 epoll_ctl calls per SMTP
	 * message before; +7-17% messages/s at one connection). libevent warns it
	 * breaks with dup()ed descriptors registered in the loop: none are (the
	 * one dup, in dkim.c, is of a file that is read, never polled).
	 */
	struct event_config *ec = event_config_new();
	if (ec != NULL)
		event_config_set_flag(ec, EVENT_BASE_FLAG_EPOLL_USE_CHANGELIST);
	srv->base = ec != NULL ? event_base_new_with_config(ec) : NULL;
	if (ec != NULL)
		event_config_free(ec);
	if (srv->base == NULL) {
		free(srv);
		return NULL;
	}
	srv->ipstate = tcmapnew();
	/* Connection ids differ between runs, so log lines of two runs never share one. */
	clock_gettime(CLOCK_REALTIME, &ts);
	srv->next_cid = ((uint64_t)ts.tv_sec << 20) ^ ((uint64_t)ts.tv_nsec >> 10) ^ ((uint64_t)getpid() << 8);
	srv->next_cid &= 0xffffffffffULL;
	srv->started_ms = mono_ms();
	return srv;
}

void
server_free(struct server **srvp)
{
	struct server *srv = *srvp;

	if (srv == NULL)
		return;
	control_close(srv);
	listeners_close(srv);
	for (size_t i = 0; i < srv->ntls; i++)
		tls_ctx_free(&srv->tls[i]);
	free(srv->tls);
	if (srv->sigterm)
		event_free(srv->sigterm);
	if (srv->sigint)
		event_free(srv->sigint);
	if (srv->stop_ev)
		event_free(srv->stop_ev);
	free(srv->cmds);
	tcmapdel(srv->ipstate);
	event_base_free(srv->base);
	free(srv);
	*srvp = NULL;
}

struct event_base *
server_base(struct server *srv)
{
	return srv->base;
}

struct config *
server_config(struct server *srv)
{
	return srv->cfg;
}

void
server_set_store(struct server *srv, struct store *st, struct auth *au)
{
	srv->store = st;
	srv->auth = au;
}

struct store *
server_store(struct server *srv)
{
	return srv->store;
}

struct auth *
server_auth(struct server *srv)
{
	return srv->auth;
}

void
server_set_dns(struct server *srv, struct dns *d)
{
	srv->dns = d;
}

struct dns *
server_dns(struct server *srv)
{
	return srv->dns;
}

void
server_set_spool(struct server *srv, struct spool *sp)
{
	srv->spool = sp;
}

struct spool *
server_spool(struct server *srv)
{
	return srv->spool;
}

void
server_register(struct server *srv, enum config_svc svc, const struct proto_handler *h)
{
	srv->handlers[svc] = h;
}

uint64_t
server_new_cid(struct server *srv)
{
	return ++srv->next_cid;
}

bool
server_loop_ended(const struct server *srv)
{
	return srv->loop_ended;
}

bool
server_stopping(struct server *srv)
{
	return srv->stopping;
}

/* After the grace (limit ShutdownTimeout): how long the adds refused then have to get their answers out. */
#define SERVER_STOP_ANSWER_MS 2000
/* ... and how long adds already committing may still take (a slow disk): stored but
 * unanswered, a message would be sent again. */
#define SERVER_STOP_ADDS_MAX_MS 60000
#define SERVER_STOP_POLL_MS 20

static int64_t stop_deadline_ms; /* one server per process */
static bool stop_refused;        /* the store refuses adds (after the grace) */
static int64_t stop_adds_until;  /* then: wait for adds already committing until */
static bool stop_waited_adds;    /* the wait for committing adds ran past the answer window */
static bool stop_final;          /* ... and their answers got a window of their own */

static void
stop_wait_cb(evutil_socket_t fd, short what, void *arg)
{
	struct server *srv = arg;
	const struct proto_handler *seen[SVC_COUNT] = {0};
	size_t n = 0;
	int nseen = 0;

	for (int i = 0; i < SVC_COUNT; i++) {
		const struct proto_handler *h = srv->handlers[i];
		bool dup = false;
		for (int j = 0; j < nseen; j++)
			dup |= seen[j] == h;
		if (h == NULL || h->count == NULL || dup)
			continue;
		seen[nseen++] = h;
		n += h->count(srv);
	}
	if (n > 0 && mono_ms() >= stop_deadline_ms && !stop_refused && srv->store != NULL) {
		/*
		 * Deliveries still waiting for their storage thread (behind a long
		 * job such as the sync of a large folder) would be stored after the
		 * loop stopped, unanswered: the client sends them again. Refuse
		 * them now, while their 451 can still reach the client.
		 */
		stop_refused = true;
		log_info("server", 0, "connections still busy after the grace period: refusing deliveries not yet stored");
		store_refuse_adds(srv->store);
		stop_deadline_ms = mono_ms() + SERVER_STOP_ANSWER_MS;
		stop_adds_until = mono_ms() + SERVER_STOP_ADDS_MAX_MS;
	}
	if (n > 0 && stop_refused && mono_ms() >= stop_deadline_ms && mono_ms() < stop_adds_until &&
	    store_adds_running(srv->store)) {
		stop_waited_adds = true;
		struct timeval tv = {0, SERVER_STOP_POLL_MS * 1000};
		evtimer_add(srv->stop_ev, &tv);
		return;
	}
	if (n > 0 && stop_waited_adds && !stop_final) {
		/*
		 * The adds waited for have just finished: their answers sit in the
		 * connections' output, written by a later loop turn. Leaving now
		 * would drop them (the message is stored; the client would send it
		 * again). Another window, left as soon as every connection closed.
		 */
		stop_final = true;
		stop_deadline_ms = mono_ms() + SERVER_STOP_ANSWER_MS;
	}
	if (n == 0 || mono_ms() >= stop_deadline_ms) {
		/* One more turn: answers queued in this one (a done callback run just
		 * before this timer) still get written. */
		struct timeval last = {0, SERVER_STOP_POLL_MS * 1000};
		event_base_loopexit(srv->base, &last);
		return;
	}
	struct timeval tv = {0, SERVER_STOP_POLL_MS * 1000};
	evtimer_add(srv->stop_ev, &tv);
}

/* Deferred: the stop happens outside whatever callback asked for it. */
static void
stop_cb(evutil_socket_t fd, short what, void *arg)
{
	struct server *srv = arg;
	const struct proto_handler *seen[SVC_COUNT] = {0};
	int nseen = 0;

	log_info("server", 0, "shutting down");
	listeners_close(srv);
	control_close(srv);
	for (int i = 0; i < SVC_COUNT; i++) {
		const struct proto_handler *h = srv->handlers[i];
		bool dup = false;
		if (h == NULL || h->shutdown == NULL)
			continue;
		for (int j = 0; j < nseen; j++)
			dup |= seen[j] == h;
		if (dup)
			continue;
		seen[nseen++] = h;
		h->shutdown(srv);
	}
	/* Leave the loop once the handlers' connections are gone: a connection
	 * waiting for a storage job (a delivery) gets its answer first. */
	stop_deadline_ms = mono_ms() + server_config(srv)->st.limits.shutdown_timeout_ms;
	event_assign(srv->stop_ev, srv->base, -1, 0, stop_wait_cb, srv);
	stop_wait_cb(-1, 0, srv);
}

void
server_stop(struct server *srv)
{
	if (srv->stopping)
		return;
	srv->stopping = true;
	if (srv->stop_ev == NULL)
		srv->stop_ev = evtimer_new(srv->base, stop_cb, srv);
	struct timeval tv = {0, 0};
	evtimer_add(srv->stop_ev, &tv);
}

static void
signal_cb(evutil_socket_t sig, short what, void *arg)
{
	struct server *srv = arg;

	log_info("server", 0, "signal received, stopping", "signal", sig == SIGTERM ? "TERM" : "INT");
	server_stop(srv);
}

int
server_run(struct server *srv)
{
	srv->sigterm = evsignal_new(srv->base, SIGTERM, signal_cb, srv);
	srv->sigint = evsignal_new(srv->base, SIGINT, signal_cb, srv);
	evsignal_add(srv->sigterm, NULL);
	evsignal_add(srv->sigint, NULL);
	/* A signal that came during start-up, before libevent took over. */
	if (server_early_stop_requested())
		server_stop(srv);
	event_base_dispatch(srv->base);
	srv->loop_ended = true;
	log_info("server", 0, "stopped");
	return 0;
}

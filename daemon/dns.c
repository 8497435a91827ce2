/*
 * dns: libunbound on the daemon's event base.
 *
 * Design note. A query lives until two parties are done with it: the user
 * (until its callback has run or it was cancelled) and unbound (until its
 * callback has arrived: ub_resolve_event keeps our pointer as mydata).
 * ub_cancel cannot be used with an event-based context (it frees its query
 * record and writes to a background-worker pipe that does not exist while
 * the mesh keeps the query), so a cancelled or timed-out query is only
 * detached from its user and freed when unbound answers it, or by dns_free
 * after ub_ctx_delete. Callbacks to the user always run from the query's
 * own event: unbound may answer inside ub_resolve_event (hosts entries),
 * and a user cancelling other queries must not run inside unbound's stack.
 */
#define _GNU_SOURCE 1
#include "daemon/dns.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include <event2/event.h>
#include <unbound.h>
#include <unbound-event.h>

#include "daemon/util.h"

/* A fake instance's table row. */
struct dns_fake_rr {
	char *name; /* lower-case, no trailing dot */
	int rrtype;
	char *value;         /* NULL for a status row */
	enum dns_status st;  /* status rows */
	struct dns_fake_rr *next;
};

struct dns {
	struct event_base *base;
	struct ub_ctx *ub;  /* NULL for a fake instance */
	bool fake;
	bool started;       /* a lookup was made: unbound's config is final */
	struct dns_limits lim;
	struct dns_query *queries; /* every query not yet freed */
	size_t inflight;           /* queries unbound still holds */
	unsigned count;
	struct dns_fake_rr *rrs, **rrs_tail;
};

struct dns_query {
	struct dns *d;
	struct dns_query *prev, *next;
	struct event *ev;   /* timeout, then delivery */
	dns_done_fn *cb;
	void *arg;
	bool user;          /* the user still waits for cb */
	bool ub_pending;    /* unbound still holds us as mydata */
	bool ready;         /* res is filled: deliver on the next event */
	bool in_cb;
	char *name;
	struct dns_result res; /* its answers are owned: dns_result_clear */
};

const char *
dns_status_name(enum dns_status st)
{
	switch (st) {
	case DNS_OK: return "ok";
	case DNS_NXDOMAIN: return "nxdomain";
	case DNS_NODATA: return "nodata";
	case DNS_TEMPERROR: return "temperror";
	case DNS_PERMERROR: return "permerror";
	}
	return "unknown";
}

void
dns_limits_default(struct dns_limits *lim)
{
	lim->timeout_ms = 10000;
	lim->max_answers = 100;
	lim->max_txt = 16384;
	lim->max_inflight = 10000;
}

/* ------------------------------------------------------------------ */
/* Results                                                             */

/*
 * A result under construction, for the wire parser and the fake instance:
 * the arrays grow up to lim->max_answers entries, then build_finish moves
 * them into a dns_result (or build_clear frees them).
 */
struct res_build {
	const struct dns_limits *lim;
	int rrtype;
	bool truncated;
	size_t n, cap;
	struct dns_txt *txt;
	struct dns_addr *addr;
	struct dns_mx *mx;
	char **ptr;
};

static void
build_init(struct res_build *b, int rrtype, const struct dns_limits *lim)
{
	memset(b, 0, sizeof(*b));
	b->rrtype = rrtype;
	b->lim = lim;
}

/* Hand the answers to r (which must not hold any). */
static void
build_finish(struct res_build *b, struct dns_result *r)
{
	r->rrtype = b->rrtype;
	r->truncated = b->truncated;
	r->txt = b->txt;
	r->ntxt = b->txt != NULL ? b->n : 0;
	r->addr = b->addr;
	r->naddr = b->addr != NULL ? b->n : 0;
	r->mx = b->mx;
	r->nmx = b->mx != NULL ? b->n : 0;
	r->ptr = (const char *const *)b->ptr;
	r->nptr = b->ptr != NULL ? b->n : 0;
	memset(b, 0, sizeof(*b));
}

static void
build_clear(struct res_build *b)
{
	struct dns_result r;

	memset(&r, 0, sizeof(r));
	build_finish(b, &r);
	dns_result_clear(&r);
}

void
dns_result_clear(struct dns_result *r)
{
	size_t i;

	if (r == NULL)
		return;
	for (i = 0; i < r->ntxt; i++)
		free((char *)r->txt[i].data);
	for (i = 0; i < r->nmx; i++)
		free((char *)r->mx[i].host);
	for (i = 0; i < r->nptr; i++)
		free((char *)r->ptr[i]);
	free((void *)r->txt);
	free((void *)r->addr);
	free((void *)r->mx);
	free((void *)r->ptr);
	memset(r, 0, sizeof(*r));
}

/* Room for one more answer; false (and truncated) at the limit. */
static bool
res_room(struct res_build *b)
{
	size_t ncap;

	if (b->n >= b->lim->max_answers) {
		b->truncated = true;
		return false;
	}
	if (b->n < b->cap)
		return true;
	ncap = b->cap ? b->cap * 2 : 4;
	if (ncap > b->lim->max_answers)
		ncap = b->lim->max_answers;
	switch (b->rrtype) {
	case DNS_T_TXT:
		b->txt = xrealloc(b->txt, ncap * sizeof(*b->txt));
		break;
	case DNS_T_A:
	case DNS_T_AAAA:
		b->addr = xrealloc(b->addr, ncap * sizeof(*b->addr));
		break;
	case DNS_T_MX:
		b->mx = xrealloc(b->mx, ncap * sizeof(*b->mx));
		break;
	case DNS_T_PTR:
		b->ptr = xrealloc(b->ptr, ncap * sizeof(*b->ptr));
		break;
	default:
		return false;
	}
	b->cap = ncap;
	return true;
}

static void
res_add_txt(struct res_build *b, const char *p, size_t len)
{
	if (len > b->lim->max_txt) {
		b->truncated = true;
		return;
	}
	if (!res_room(b))
		return;
	b->txt[b->n].data = xstrndup(p, len);
	b->txt[b->n].len = len;
	b->n++;
}

static void
res_add_addr(struct res_build *b, int family, const void *a)
{
	if (!res_room(b))
		return;
	memset(&b->addr[b->n], 0, sizeof(b->addr[b->n]));
	b->addr[b->n].family = family;
	if (family == AF_INET)
		memcpy(&b->addr[b->n].u.v4, a, 4);
	else
		memcpy(&b->addr[b->n].u.v6, a, 16);
	b->n++;
}

static void
res_add_mx(struct res_build *b, uint16_t pref, const char *host)
{
	if (!res_room(b))
		return;
	b->mx[b->n].pref = pref;
	b->mx[b->n].host = xstrdup(host);
	b->n++;
}

static void
res_add_ptr(struct res_build *b, const char *host)
{
	if (!res_room(b))
		return;
	b->ptr[b->n] = xstrdup(host);
	b->n++;
}

/* Replace q's result by an error (or a status without answers). */
static void
res_error(struct dns_query *q, enum dns_status st, const char *why)
{
	int rrtype = q->res.rrtype;

	dns_result_clear(&q->res);
	q->res.rrtype = rrtype;
	q->res.status = st;
	q->res.why = why;
	q->res.name = q->name;
}

/* ------------------------------------------------------------------ */
/* Wire format                                                          */

/*
 * The bytes arrive from the network: every offset is checked against the
 * end before it is read, and every loop is bounded by the packet's length
 * or by a count (compression hops), so no input makes the parser read out
 * of bounds or run long.
 */

/* Longest presentation name: 255 wire bytes, each byte at most "\DDD". */
#define WIRE_NAME_MAX 1024

static uint16_t
get16(const unsigned char *p)
{
	return (uint16_t)(p[0] << 8 | p[1]);
}

static uint32_t
get32(const unsigned char *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* Kept as is in a name; anything else becomes \DDD (ASCII, whatever the locale). */
static bool
name_plain(unsigned char b)
{
	return (b >= 'a' && b <= 'z') || (b >= 'A' && b <= 'Z') || (b >= '0' && b <= '9') ||
	       b == '-' || b == '_';
}

/*
 * Read the (possibly compressed) name at *off of pkt into out (presentation
 * form without the trailing dot; bytes other than letters, digits, '-' and
 * '_' as \DDD; "" for the root). Advances *off past the name in place.
 * Returns 1, or -1 on a malformed name.
 */
static int
wire_name(const unsigned char *pkt, size_t len, size_t *off, char *out, size_t outsz)
{
	size_t o = *off, ol = 0, wire = 0;
	bool jumped = false;
	unsigned hops = 0;

	out[0] = '\0';
	for (;;) {
		unsigned c;

		if (o >= len)
			return -1;
		c = pkt[o];
		if ((c & 0xc0) == 0xc0) {
			/* Bounded hops: a pointer loop ends here, not in a hang. */
			if (o + 1 >= len || ++hops > 64)
				return -1;
			if (!jumped)
				*off = o + 2;
			jumped = true;
			o = (size_t)((c & 0x3f) << 8 | pkt[o + 1]);
			continue;
		}
		if (c & 0xc0)
			return -1;
		if (c == 0) {
			if (!jumped)
				*off = o + 1;
			break;
		}
		if (o + 1 + c > len)
			return -1;
		wire += 1 + c;
		if (wire > 255)
			return -1;
		if (ol > 0)
			out[ol++] = '.';
		for (unsigned i = 0; i < c; i++) {
			unsigned char b = pkt[o + 1 + i];

			if (ol + 5 >= outsz)
				return -1;
			if (name_plain(b))
				out[ol++] = (char)b;
			else
				ol += (size_t)snprintf(out + ol, outsz - ol, "\\%03u", b);
		}
		out[ol] = '\0';
		o += 1 + c;
	}
	return 1;
}

/*
 * Parse the rdata of one answer RR of the asked type (rd..rd+rdlen is
 * inside pkt) into b. Returns 1, or -1 with a message in *why_r.
 */
static int
wire_rdata(struct res_build *b, const unsigned char *pkt, size_t rd, size_t rdlen, const char **why_r)
{
	char name[WIRE_NAME_MAX];

	switch (b->rrtype) {
	case DNS_T_A:
		if (rdlen != 4) {
			*why_r = "A rdata not 4 bytes";
			return -1;
		}
		res_add_addr(b, AF_INET, pkt + rd);
		break;
	case DNS_T_AAAA:
		if (rdlen != 16) {
			*why_r = "AAAA rdata not 16 bytes";
			return -1;
		}
		res_add_addr(b, AF_INET6, pkt + rd);
		break;
	case DNS_T_MX: {
		size_t o = rd + 2;

		/* The name may point back into the packet, not past its own RR. */
		if (rdlen < 3 || wire_name(pkt, rd + rdlen, &o, name, sizeof(name)) < 0 ||
		    o != rd + rdlen) {
			*why_r = "bad MX rdata";
			return -1;
		}
		res_add_mx(b, get16(pkt + rd), name);
		break;
	}
	case DNS_T_PTR: {
		size_t o = rd;

		if (wire_name(pkt, rd + rdlen, &o, name, sizeof(name)) < 0 || o != rd + rdlen) {
			*why_r = "bad PTR rdata";
			return -1;
		}
		res_add_ptr(b, name);
		break;
	}
	case DNS_T_TXT: {
		/* Concatenate the character-strings (RFC 7208 3.3, RFC 6376 3.6.2.2). */
		char *buf = xmalloc(rdlen + 1u);
		size_t o = rd, bl = 0;

		while (o < rd + rdlen) {
			size_t sl = pkt[o];

			if (o + 1 + sl > rd + rdlen) {
				free(buf);
				*why_r = "TXT string past its rdata";
				return -1;
			}
			memcpy(buf + bl, pkt + o + 1, sl);
			bl += sl;
			o += 1 + sl;
		}
		res_add_txt(b, buf, bl);
		free(buf);
		break;
	}
	default:
		break;
	}
	return 1;
}

int
dns_answer_rcode(const unsigned char *pkt, size_t len)
{
	if (len < 12)
		return -1;
	return pkt[3] & 0x0f;
}

int
dns_parse_answer(const unsigned char *pkt, size_t len, int rrtype, const struct dns_limits *lim,
		 struct dns_result *res_r, char *err, size_t errlen)
{
	char name[WIRE_NAME_MAX];
	struct res_build b;
	const char *why = NULL;
	size_t off = 12;
	unsigned qd, an, i;
	bool first = true;
	uint32_t ttl = 0;

	memset(res_r, 0, sizeof(*res_r));
	res_r->rrtype = rrtype;
	if (len < 12) {
		if (err != NULL && errlen > 0)
			snprintf(err, errlen, "packet of %zu bytes, under a header", len);
		return -1;
	}
	build_init(&b, rrtype, lim);
	qd = get16(pkt + 4);
	an = get16(pkt + 6);
	for (i = 0; i < qd && why == NULL; i++) {
		if (wire_name(pkt, len, &off, name, sizeof(name)) < 0)
			why = "bad question name";
		else if (off + 4 > len)
			why = "question past the end";
		else
			off += 4;
	}
	for (i = 0; i < an && why == NULL; i++) {
		uint16_t type, rdlen;
		uint32_t rttl;
		size_t rd;

		if (wire_name(pkt, len, &off, name, sizeof(name)) < 0) {
			why = "bad answer name";
			break;
		}
		if (off + 10 > len) {
			why = "answer header past the end";
			break;
		}
		type = get16(pkt + off);
		rttl = get32(pkt + off + 4);
		rdlen = get16(pkt + off + 8);
		off += 10;
		if (off + rdlen > len) {
			why = "answer rdata past the end";
			break;
		}
		rd = off;
		off += rdlen;
		if (type != rrtype)
			continue;
		if (first || rttl < ttl)
			ttl = rttl;
		first = false;
		(void)wire_rdata(&b, pkt, rd, rdlen, &why);
	}
	if (why != NULL) {
		build_clear(&b);
		if (err != NULL && errlen > 0)
			snprintf(err, errlen, "%s (near offset %zu)", why, off);
		return -1;
	}
	build_finish(&b, res_r);
	res_r->ttl = ttl;
	res_r->status = first ? DNS_NODATA : DNS_OK;
	return 1;
}

/* ------------------------------------------------------------------ */
/* Queries                                                             */

static void
query_free(struct dns_query *q)
{
	struct dns *d = q->d;

	if (q->prev != NULL)
		q->prev->next = q->next;
	else
		d->queries = q->next;
	if (q->next != NULL)
		q->next->prev = q->prev;
	dns_result_clear(&q->res);
	if (q->ev != NULL)
		event_free(q->ev);
	free(q->name);
	free(q);
}

/* Free q when neither its user nor unbound needs it any more. */
static void
query_maybe_free(struct dns_query *q)
{
	if (!q->user && !q->ub_pending && !q->in_cb)
		query_free(q);
}

static void
query_deliver_soon(struct dns_query *q)
{
	q->ready = true;
	event_active(q->ev, EV_TIMEOUT, 0);
}

/* The query's event: a result to deliver, or the timeout. */
static void
query_event(evutil_socket_t fd, short what, void *arg)
{
	struct dns_query *q = arg;

	event_del(q->ev);
	if (!q->user)
		return;
	if (!q->ready)
		res_error(q, DNS_TEMPERROR, "timeout");
	q->user = false;
	q->in_cb = true;
	q->cb(&q->res, q->arg);
	q->in_cb = false;
	dns_result_clear(&q->res);
	query_maybe_free(q);
}

/* unbound's callback: may run inside ub_resolve_event and during ub_ctx_delete. */
static void
query_ub_done(void *mydata, int rcode, void *packet, int packet_len, int sec,
	      char *why_bogus, int was_ratelimited)
{
	struct dns_query *q = mydata;
	int prc;

	q->ub_pending = false;
	q->d->inflight--;
	if (!q->user || q->ready) {
		query_maybe_free(q);
		return;
	}
	/* unbound passes SERVFAIL-like failures in rcode; NXDOMAIN is in the packet. */
	if (rcode == 0 && packet != NULL && packet_len >= 0 &&
	    (prc = dns_answer_rcode(packet, (size_t)packet_len)) > 0)
		rcode = prc;
	if (rcode == 3) {
		res_error(q, DNS_NXDOMAIN, NULL);
	} else if (sec == 1) {
		res_error(q, DNS_TEMPERROR, "dnssec bogus");
	} else if (rcode != 0) {
		res_error(q, DNS_TEMPERROR, rcode == 2 ? "servfail" : rcode == 5 ? "refused" : "error rcode");
	} else if (packet == NULL || packet_len < 0 ||
		   dns_parse_answer(packet, (size_t)packet_len, q->res.rrtype, &q->d->lim, &q->res,
				    NULL, 0) < 0) {
		res_error(q, DNS_TEMPERROR, "malformed answer");
	} else {
		q->res.secure = sec == 2;
		q->res.name = q->name;
	}
	query_deliver_soon(q);
}

/*
 * Whether name can be asked: labels of 1..63 bytes, at most 253 bytes
 * without the trailing dot, no spaces, controls or backslashes (unbound
 * would read a backslash as an escape).
 */
static bool
name_valid(const char *name)
{
	size_t len = strlen(name), lab = 0, i;

	if (len > 0 && name[len - 1] == '.')
		len--;
	if (len == 0 || len > 253)
		return false;
	for (i = 0; i < len; i++) {
		unsigned char c = (unsigned char)name[i];

		if (c <= ' ' || c == 0x7f || c == '\\')
			return false;
		if (c == '.') {
			if (lab == 0)
				return false;
			lab = 0;
		} else if (++lab > 63) {
			return false;
		}
	}
	return true;
}

static void fake_answer(struct dns_query *q);

struct dns_query *
dns_lookup(struct dns *d, const char *name, int rrtype, dns_done_fn *cb, void *arg)
{
	struct dns_query *q = xcalloc(1, sizeof(*q));
	struct timeval tv;
	int id = 0, rc;

	q->d = d;
	q->cb = cb;
	q->arg = arg;
	q->user = true;
	q->name = xstrdup(name);
	q->res.rrtype = rrtype;
	q->ev = evtimer_new(d->base, query_event, q);
	if (q->ev == NULL) {
		fprintf(stderr, "mox: evtimer_new failed\n");
		abort();
	}
	q->next = d->queries;
	if (d->queries != NULL)
		d->queries->prev = q;
	d->queries = q;
	d->count++;
	d->started = true;

	if (!name_valid(name)) {
		res_error(q, DNS_PERMERROR, "invalid name");
		query_deliver_soon(q);
		return q;
	}
	if (d->fake) {
		fake_answer(q);
		query_deliver_soon(q);
		return q;
	}
	if (d->inflight >= d->lim.max_inflight) {
		res_error(q, DNS_TEMPERROR, "too many queries in flight");
		query_deliver_soon(q);
		return q;
	}
	tv.tv_sec = d->lim.timeout_ms / 1000;
	tv.tv_usec = (d->lim.timeout_ms % 1000) * 1000;
	evtimer_add(q->ev, &tv);
	q->ub_pending = true;
	d->inflight++;
	rc = ub_resolve_event(d->ub, name, rrtype, 1, q, query_ub_done, &id);
	if (rc != 0) {
		/* No callback will come: unbound does not hold q. */
		if (q->ub_pending) {
			q->ub_pending = false;
			d->inflight--;
		}
		if (!q->ready) {
			res_error(q, DNS_TEMPERROR, ub_strerror(rc));
			query_deliver_soon(q);
		}
	}
	return q;
}

void
dns_cancel(struct dns_query *q)
{
	if (q == NULL || q->in_cb)
		return;
	q->user = false;
	event_del(q->ev);
	dns_result_clear(&q->res);
	query_maybe_free(q);
}

struct event_base *
dns_base(const struct dns *d)
{
	return d->base;
}

unsigned
dns_lookup_count(const struct dns *d)
{
	return d->count;
}

/* ------------------------------------------------------------------ */
/* Instances                                                           */

static struct dns *
dns_alloc(struct event_base *base)
{
	struct dns *d = xcalloc(1, sizeof(*d));

	d->base = base;
	dns_limits_default(&d->lim);
	d->rrs_tail = &d->rrs;
	return d;
}

/* Check "ip" or "ip@port". */
static bool
resolver_valid(const char *s)
{
	char ip[INET6_ADDRSTRLEN + 1];
	const char *at = strchr(s, '@');
	size_t iplen = at ? (size_t)(at - s) : strlen(s);
	unsigned char a[16];
	long long port;

	if (iplen == 0 || iplen >= sizeof(ip))
		return false;
	memcpy(ip, s, iplen);
	ip[iplen] = '\0';
	if (inet_pton(AF_INET, ip, a) != 1 && inet_pton(AF_INET6, ip, a) != 1)
		return false;
	return at == NULL || parse_ll(at + 1, 1, 65535, &port) == 1;
}

/* unbound's default local zones that would answer instead of the resolver. */
static const char *const local_zones[] = {
	"localhost. transparent", "127.in-addr.arpa. transparent",
	"1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.ip6.arpa. transparent",
	"test. transparent", "invalid. transparent", "onion. transparent", "home.arpa. transparent",
	"2.0.192.in-addr.arpa. transparent", "100.51.198.in-addr.arpa. transparent",
	"113.0.203.in-addr.arpa. transparent", "8.b.d.0.1.0.0.2.ip6.arpa. transparent",
};

struct dns *
dns_new(struct event_base *base, const char *resolver, char *err, size_t errlen)
{
	struct dns *d;
	int rc;

	if (resolver != NULL && resolver[0] != '\0' && !resolver_valid(resolver)) {
		snprintf(err, errlen, "resolver %s: want an IP address, optionally @port", resolver);
		return NULL;
	}
	d = dns_alloc(base);
	d->ub = ub_ctx_create_event(base);
	if (d->ub == NULL) {
		snprintf(err, errlen, "creating the unbound context failed");
		free(d);
		return NULL;
	}
	/* A local stub or forwarder (127.0.0.53, a test server) must be usable. */
	rc = ub_ctx_set_option(d->ub, "do-not-query-localhost:", "no");
	/*
	 * The resolver we forward to answers every name, as a stub resolver's
	 * upstream would: unbound's built-in local zones (test., localhost.,
	 * 127.in-addr.arpa., private and documentation reverse zones) must not
	 * shadow it, or a PTR of 127.0.0.1 in tests would be unbound's own.
	 */
	if (rc == 0)
		rc = ub_ctx_set_option(d->ub, "unblock-lan-zones:", "yes");
	/* Answers in the order the server gave them (tests, logs). */
	if (rc == 0)
		rc = ub_ctx_set_option(d->ub, "rrset-roundrobin:", "no");
	for (size_t i = 0; rc == 0 && i < ARRAY_LEN(local_zones); i++)
		rc = ub_ctx_set_option(d->ub, "local-zone:", local_zones[i]);
	if (rc == 0) {
		if (resolver == NULL || resolver[0] == '\0') {
			rc = ub_ctx_resolvconf(d->ub, NULL);
			if (rc == 0)
				rc = ub_ctx_hosts(d->ub, NULL);
		} else {
			rc = ub_ctx_set_fwd(d->ub, resolver);
		}
	}
	if (rc != 0) {
		snprintf(err, errlen, "configuring unbound%s%s: %s",
			 resolver && *resolver ? " with resolver " : "",
			 resolver && *resolver ? resolver : "", ub_strerror(rc));
		ub_ctx_delete(d->ub);
		free(d);
		return NULL;
	}
	return d;
}

int
dns_set_trust_anchor_file(struct dns *d, const char *file, char *err, size_t errlen)
{
	int rc;

	if (d->fake)
		return 1;
	if (d->started) {
		snprintf(err, errlen, "trust anchor must be set before the first lookup");
		return -1;
	}
	rc = ub_ctx_add_ta_file(d->ub, file);
	if (rc != 0) {
		snprintf(err, errlen, "trust anchor %s: %s", file, ub_strerror(rc));
		return -1;
	}
	return 1;
}

void
dns_set_limits(struct dns *d, const struct dns_limits *lim)
{
	d->lim = *lim;
	if (d->lim.max_answers == 0)
		d->lim.max_answers = 1;
}

void
dns_free(struct dns **dp)
{
	struct dns *d = dp ? *dp : NULL;
	struct dns_fake_rr *rr, *nrr;

	if (d == NULL)
		return;
	*dp = NULL;
	/* No user callback may run from here on, also none unbound triggers. */
	for (struct dns_query *q = d->queries; q != NULL; q = q->next)
		q->user = false;
	if (d->ub != NULL)
		ub_ctx_delete(d->ub);
	while (d->queries != NULL)
		query_free(d->queries);
	for (rr = d->rrs; rr != NULL; rr = nrr) {
		nrr = rr->next;
		free(rr->name);
		free(rr->value);
		free(rr);
	}
	free(d);
}

/* ------------------------------------------------------------------ */
/* Fake instance                                                       */

struct dns *
dns_new_fake(struct event_base *base)
{
	struct dns *d = dns_alloc(base);

	d->fake = true;
	return d;
}

/* Lower-case copy without the trailing dot. */
static char *
fake_key(const char *name)
{
	size_t len = strlen(name);
	char *k;

	if (len > 0 && name[len - 1] == '.')
		len--;
	k = xstrndup(name, len);
	for (char *p = k; *p; p++)
		*p = (char)tolower((unsigned char)*p);
	return k;
}

/* Parse a fake value into b's answers (b NULL: only check it). Returns 1 or -1. */
static int
fake_parse(struct res_build *b, int rrtype, const char *value)
{
	unsigned char a[16];
	long long pref;
	const char *sp;
	char num[8];

	switch (rrtype) {
	case DNS_T_A:
		if (inet_pton(AF_INET, value, a) != 1)
			return -1;
		if (b != NULL)
			res_add_addr(b, AF_INET, a);
		return 1;
	case DNS_T_AAAA:
		if (inet_pton(AF_INET6, value, a) != 1)
			return -1;
		if (b != NULL)
			res_add_addr(b, AF_INET6, a);
		return 1;
	case DNS_T_MX:
		sp = strchr(value, ' ');
		if (sp == NULL || (size_t)(sp - value) >= sizeof(num))
			return -1;
		memcpy(num, value, (size_t)(sp - value));
		num[sp - value] = '\0';
		if (parse_ll(num, 0, 65535, &pref) != 1)
			return -1;
		if (b != NULL) {
			char *h = fake_key(sp + 1);

			res_add_mx(b, (uint16_t)pref, strcmp(h, ".") == 0 ? "" : h);
			free(h);
		}
		return 1;
	case DNS_T_PTR:
		if (b != NULL) {
			char *h = fake_key(value);

			res_add_ptr(b, h);
			free(h);
		}
		return 1;
	case DNS_T_TXT:
		if (b != NULL)
			res_add_txt(b, value, strlen(value));
		return 1;
	default:
		return -1;
	}
}

int
dns_fake_add(struct dns *d, const char *name, int rrtype, const char *value)
{
	struct dns_fake_rr *rr;

	if (!d->fake || fake_parse(NULL, rrtype, value) < 0)
		return -1;
	rr = xcalloc(1, sizeof(*rr));
	rr->name = fake_key(name);
	rr->rrtype = rrtype;
	rr->value = xstrdup(value);
	*d->rrs_tail = rr;
	d->rrs_tail = &rr->next;
	return 1;
}

void
dns_fake_status(struct dns *d, const char *name, int rrtype, enum dns_status st)
{
	struct dns_fake_rr *rr;

	if (!d->fake)
		return;
	rr = xcalloc(1, sizeof(*rr));
	rr->name = fake_key(name);
	rr->rrtype = rrtype;
	rr->st = st;
	*d->rrs_tail = rr;
	d->rrs_tail = &rr->next;
}

static void
fake_answer(struct dns_query *q)
{
	char *key = fake_key(q->name);
	bool known = false;
	struct dns_fake_rr *rr;
	struct res_build b;
	size_t n;

	for (rr = q->d->rrs; rr != NULL; rr = rr->next) {
		if (strcmp(rr->name, key) != 0)
			continue;
		known = true;
		if (rr->rrtype == q->res.rrtype && rr->value == NULL) {
			res_error(q, rr->st, rr->st == DNS_TEMPERROR ? "fake temperror" :
				  rr->st == DNS_PERMERROR ? "fake permerror" : NULL);
			free(key);
			return;
		}
	}
	build_init(&b, q->res.rrtype, &q->d->lim);
	for (rr = q->d->rrs; rr != NULL; rr = rr->next) {
		if (rr->value != NULL && rr->rrtype == q->res.rrtype && strcmp(rr->name, key) == 0)
			(void)fake_parse(&b, rr->rrtype, rr->value);
	}
	free(key);
	n = b.n;
	build_finish(&b, &q->res);
	q->res.name = q->name;
	q->res.ttl = n > 0 ? 300 : 0;
	q->res.status = n > 0 ? DNS_OK : known ? DNS_NODATA : DNS_NXDOMAIN;
}

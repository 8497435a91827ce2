/*
 * Tests for daemon/dns: the fake instance, and unbound against a small UDP
 * responder on loopback in this process (same event base): answers parsed
 * from the wire, NXDOMAIN, SERVFAIL, malformed answers, timeouts, limits,
 * cancelling, and freeing with queries in flight; and the answer-packet
 * parser on its own (valid answers, every truncation, compression loops,
 * pointers out of bounds, limits).
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/event.h>

#include "daemon/dns.h"
#include "daemon/util.h"

/* ------------------------------------------------------------------ */
/* Collecting results                                                  */

struct got {
	int calls;
	enum dns_status st;
	bool truncated;
	char text[2048]; /* answers as text, ";"-separated */
};

static struct event_base *base;
static int pending;

static void
got_cb(const struct dns_result *r, void *arg)
{
	struct got *g = arg;
	char buf[INET6_ADDRSTRLEN];
	size_t i;
	size_t l = 0;

	g->calls++;
	g->st = r->status;
	g->truncated = r->truncated;
	g->text[0] = '\0';
	for (i = 0; i < r->ntxt; i++)
		l += (size_t)snprintf(g->text + l, sizeof(g->text) - l, "%s%s", i ? ";" : "", r->txt[i].data);
	for (i = 0; i < r->naddr; i++) {
		inet_ntop(r->addr[i].family, &r->addr[i].u, buf, sizeof(buf));
		l += (size_t)snprintf(g->text + l, sizeof(g->text) - l, "%s%s", i ? ";" : "", buf);
	}
	for (i = 0; i < r->nmx; i++)
		l += (size_t)snprintf(g->text + l, sizeof(g->text) - l, "%s%u %s", i ? ";" : "",
				      r->mx[i].pref, r->mx[i].host);
	for (i = 0; i < r->nptr; i++)
		l += (size_t)snprintf(g->text + l, sizeof(g->text) - l, "%s%s", i ? ";" : "", r->ptr[i]);
	if (--pending == 0)
		event_base_loopexit(base, NULL);
}

static void
safety_cb(evutil_socket_t fd, short what, void *arg)
{
	event_base_loopexit(base, NULL);
}

/* Run the loop until pending callbacks have come (at most 5 s). */
static void
run(void)
{
	struct timeval tv = {5, 0};
	struct event *ev = evtimer_new(base, safety_cb, NULL);

	evtimer_add(ev, &tv);
	if (pending > 0)
		event_base_dispatch(base);
	event_free(ev);
}

/* Run the loop for ms milliseconds. */
static void
run_for(int ms)
{
	struct timeval tv = {ms / 1000, (ms % 1000) * 1000};

	event_base_loopexit(base, &tv);
	event_base_dispatch(base);
}

/* ------------------------------------------------------------------ */
/* Fake instance                                                       */

static int
setup(void **state)
{
	base = event_base_new();
	pending = 0;
	return base == NULL ? -1 : 0;
}

static int
teardown(void **state)
{
	event_base_free(base);
	base = NULL;
	return 0;
}

static void
test_fake(void **state)
{
	struct dns *d = dns_new_fake(base);
	struct got g[7];
	bool early;

	memset(g, 0, sizeof(g));
	assert_int_equal(dns_fake_add(d, "Example.ORG.", DNS_T_TXT, "v=spf1 -all"), 1);
	assert_int_equal(dns_fake_add(d, "example.org", DNS_T_TXT, "other"), 1);
	assert_int_equal(dns_fake_add(d, "example.org", DNS_T_MX, "10 mx.example.org."), 1);
	assert_int_equal(dns_fake_add(d, "example.org", DNS_T_MX, "20 ."), 1);
	assert_int_equal(dns_fake_add(d, "mx.example.org", DNS_T_A, "192.0.2.1"), 1);
	assert_int_equal(dns_fake_add(d, "mx.example.org", DNS_T_AAAA, "2001:db8::1"), 1);
	assert_int_equal(dns_fake_add(d, "mx.example.org", DNS_T_A, "bogus"), -1);
	assert_int_equal(dns_fake_add(d, "x", DNS_T_MX, "10"), -1);
	dns_fake_status(d, "tmp.example.org", DNS_T_TXT, DNS_TEMPERROR);

	pending = 7;
	dns_lookup(d, "example.org", DNS_T_TXT, got_cb, &g[0]);
	early = g[0].calls > 0;
	dns_lookup(d, "EXAMPLE.org.", DNS_T_MX, got_cb, &g[1]);
	dns_lookup(d, "mx.example.org", DNS_T_A, got_cb, &g[2]);
	dns_lookup(d, "mx.example.org", DNS_T_TXT, got_cb, &g[3]);
	dns_lookup(d, "nope.example.org", DNS_T_A, got_cb, &g[4]);
	dns_lookup(d, "tmp.example.org", DNS_T_TXT, got_cb, &g[5]);
	dns_lookup(d, "bad..example.org", DNS_T_A, got_cb, &g[6]);
	assert_false(early);
	run();
	assert_int_equal(pending, 0);
	assert_int_equal(g[0].st, DNS_OK);
	assert_string_equal(g[0].text, "v=spf1 -all;other");
	assert_string_equal(g[1].text, "10 mx.example.org;20 ");
	assert_string_equal(g[2].text, "192.0.2.1");
	assert_int_equal(g[3].st, DNS_NODATA);
	assert_int_equal(g[4].st, DNS_NXDOMAIN);
	assert_int_equal(g[5].st, DNS_TEMPERROR);
	assert_int_equal(g[6].st, DNS_PERMERROR);
	for (int i = 0; i < 7; i++)
		assert_int_equal(g[i].calls, 1);
	assert_int_equal(dns_lookup_count(d), 7);
	dns_free(&d);
	assert_null(d);
	dns_free(&d);
}

static void
test_invalid_names(void **state)
{
	struct dns *d = dns_new_fake(base);
	char longlabel[80], longname[300];
	const char *bad[] = {"", ".", "a..b", "a b", "a\\.b", ".a", longlabel, longname};
	struct got g;

	memset(longlabel, 'a', 64);
	strcpy(longlabel + 64, ".org");
	for (int i = 0; i < 255; i++)
		longname[i] = i % 2 ? '.' : 'a';
	longname[255] = '\0';
	for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
		memset(&g, 0, sizeof(g));
		pending = 1;
		dns_lookup(d, bad[i], DNS_T_A, got_cb, &g);
		run();
		if (g.st != DNS_PERMERROR)
			fail_msg("'%s': got %s", bad[i], dns_status_name(g.st));
	}
	memset(&g, 0, sizeof(g));
	longlabel[63] = '\0'; /* exactly 63: valid */
	pending = 1;
	dns_lookup(d, longlabel, DNS_T_A, got_cb, &g);
	run();
	assert_int_equal(g.st, DNS_NXDOMAIN);
	dns_free(&d);
}

/* Cancelling another query from a callback: it never runs. */
static struct dns_query *victim;

static void
cancel_cb(const struct dns_result *r, void *arg)
{
	dns_cancel(victim);
	victim = NULL;
	got_cb(r, arg);
}

static void
test_cancel_from_callback(void **state)
{
	struct dns *d = dns_new_fake(base);
	struct got g1, g2, g3;

	memset(&g1, 0, sizeof(g1));
	memset(&g2, 0, sizeof(g2));
	memset(&g3, 0, sizeof(g3));
	dns_fake_add(d, "a.example", DNS_T_A, "192.0.2.1");
	pending = 2;
	dns_lookup(d, "a.example", DNS_T_A, cancel_cb, &g1);
	victim = dns_lookup(d, "a.example", DNS_T_A, got_cb, &g2);
	dns_lookup(d, "a.example", DNS_T_A, got_cb, &g3);
	run();
	run_for(20);
	assert_int_equal(g1.calls, 1);
	assert_int_equal(g2.calls, 0);
	assert_int_equal(g3.calls, 1);
	/* Cancel right away, and free with a query not yet delivered. */
	dns_cancel(dns_lookup(d, "a.example", DNS_T_A, got_cb, &g2));
	dns_lookup(d, "a.example", DNS_T_A, got_cb, &g2);
	run_for(0);
	dns_free(&d);
	assert_true(g2.calls <= 1);
}

/* ------------------------------------------------------------------ */
/* unbound against a responder in this process                         */

static int srv_fd = -1;
static struct event *srv_ev;
static int srv_queries;

static size_t
put16(unsigned char *p, unsigned v)
{
	p[0] = (unsigned char)(v >> 8);
	p[1] = (unsigned char)v;
	return 2;
}

/* Append an RR whose owner is the question name (pointer to offset 12). */
static size_t
put_rr(unsigned char *p, unsigned type, const void *rd, size_t rdlen)
{
	size_t o = 0;

	o += put16(p + o, 0xc00c);
	o += put16(p + o, type);
	o += put16(p + o, 1);
	o += put16(p + o, 0);
	o += put16(p + o, 60);
	o += put16(p + o, (unsigned)rdlen);
	memcpy(p + o, rd, rdlen);
	return o + rdlen;
}

static void
srv_read(evutil_socket_t fd, short what, void *arg)
{
	unsigned char q[1500], r[1500];
	struct sockaddr_storage peer;
	socklen_t plen = sizeof(peer);
	ssize_t n = recvfrom(fd, q, sizeof(q), 0, (struct sockaddr *)&peer, &plen);
	char name[300];
	size_t o = 12, nl = 0, qend, rl;
	unsigned type, an = 0, rcode = 0;

	if (n < 17)
		return;
	srv_queries++;
	while (o < (size_t)n && q[o] != 0 && nl < 250) {
		unsigned c = q[o];

		if (nl > 0)
			name[nl++] = '.';
		for (unsigned i = 0; i < c && o + 1 + i < (size_t)n; i++)
			name[nl++] = (char)tolower(q[o + 1 + i]);
		o += 1 + c;
	}
	name[nl] = '\0';
	qend = o + 5;
	if (qend > (size_t)n)
		return;
	type = (unsigned)(q[o + 1] << 8 | q[o + 2]);
	memcpy(r, q, qend);
	rl = qend;

	if (strcmp(name, "drop.test") == 0)
		return;
	if (strcmp(name, "nx.test") == 0) {
		rcode = 3;
	} else if (strcmp(name, "fail.test") == 0) {
		rcode = 2;
	} else if (strcmp(name, "txt.test") == 0 && type == DNS_T_TXT) {
		static const unsigned char rd1[] = "\x07v=spf1 \x04-all";
		static const unsigned char rd2[] = "\x05hello";
		static const unsigned char rd3[] = "";

		rl += put_rr(r + rl, DNS_T_TXT, rd1, sizeof(rd1) - 1);
		rl += put_rr(r + rl, DNS_T_TXT, rd2, sizeof(rd2) - 1);
		rl += put_rr(r + rl, DNS_T_TXT, rd3, 0); /* no strings at all: "" */
		an = 3;
	} else if (strcmp(name, "a.test") == 0 && type == DNS_T_A) {
		rl += put_rr(r + rl, DNS_T_A, "\xc0\x00\x02\x01", 4);
		rl += put_rr(r + rl, DNS_T_A, "\xc0\x00\x02\x02", 4);
		an = 2;
	} else if (strcmp(name, "a.test") == 0 && type == DNS_T_AAAA) {
		rl += put_rr(r + rl, DNS_T_AAAA, "\x20\x01\x0d\xb8\0\0\0\0\0\0\0\0\0\0\0\x01", 16);
		an = 1;
	} else if (strcmp(name, "mx.test") == 0 && type == DNS_T_MX) {
		/* "mail" + pointer to "mx.test" in the question; then the null MX. */
		static const unsigned char rd1[] = "\x00\x0a\x04mail\xc0\x0c";
		static const unsigned char rd2[] = "\x00\x00\x00";

		rl += put_rr(r + rl, DNS_T_MX, rd1, sizeof(rd1) - 1);
		rl += put_rr(r + rl, DNS_T_MX, rd2, 3);
		an = 2;
	} else if (strcmp(name, "1.2.0.192.in-addr.arpa") == 0 && type == DNS_T_PTR) {
		static const unsigned char rd[] = "\x04host\x07" "example\x00";

		rl += put_rr(r + rl, DNS_T_PTR, rd, sizeof(rd) - 1);
		an = 1;
	} else if (strcmp(name, "many.test") == 0 && type == DNS_T_A) {
		for (unsigned i = 0; i < 10; i++) {
			unsigned char a[4] = {192, 0, 2, (unsigned char)(10 + i)};

			rl += put_rr(r + rl, DNS_T_A, a, 4);
		}
		an = 10;
	} else if (strcmp(name, "bigtxt.test") == 0 && type == DNS_T_TXT) {
		unsigned char rd[400];

		rd[0] = 200;
		memset(rd + 1, 'x', 200);
		rd[201] = 100;
		memset(rd + 202, 'y', 100);
		rl += put_rr(r + rl, DNS_T_TXT, rd, 302);
		rl += put_rr(r + rl, DNS_T_TXT, "\x02ok", 3);
		an = 2;
	} else if (strcmp(name, "a.test") != 0 && strcmp(name, "txt.test") != 0 &&
		   strcmp(name, "mx.test") != 0) {
		rcode = 3;
	}
	r[2] = 0x84 | (q[2] & 0x01); /* QR AA RD */
	r[3] = (unsigned char)(0x80 | rcode);
	put16(r + 6, an);
	put16(r + 8, 0);
	put16(r + 10, 0); /* no EDNS in the answer */
	sendto(fd, r, rl, 0, (struct sockaddr *)&peer, plen);
}

static char resolver[64];

static int
setup_srv(void **state)
{
	struct sockaddr_in sin;
	socklen_t sl = sizeof(sin);

	if (setup(state) < 0)
		return -1;
	srv_fd = socket(AF_INET, SOCK_DGRAM, 0);
	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (srv_fd < 0 || bind(srv_fd, (struct sockaddr *)&sin, sizeof(sin)) < 0 ||
	    getsockname(srv_fd, (struct sockaddr *)&sin, &sl) < 0)
		return -1;
	evutil_make_socket_nonblocking(srv_fd);
	srv_ev = event_new(base, srv_fd, EV_READ | EV_PERSIST, srv_read, NULL);
	event_add(srv_ev, NULL);
	snprintf(resolver, sizeof(resolver), "127.0.0.1@%u", ntohs(sin.sin_port));
	srv_queries = 0;
	return 0;
}

static int
teardown_srv(void **state)
{
	event_free(srv_ev);
	close(srv_fd);
	return teardown(state);
}

static struct dns *
new_real(void)
{
	char err[256];
	struct dns *d = dns_new(base, resolver, err, sizeof(err));

	if (d == NULL)
		fail_msg("dns_new: %s", err);
	return d;
}

static void
test_unbound_answers(void **state)
{
	struct dns *d = new_real();
	struct got g[8];

	memset(g, 0, sizeof(g));
	pending = 8;
	dns_lookup(d, "txt.test", DNS_T_TXT, got_cb, &g[0]);
	dns_lookup(d, "a.test.", DNS_T_A, got_cb, &g[1]);
	dns_lookup(d, "A.Test", DNS_T_AAAA, got_cb, &g[2]);
	dns_lookup(d, "mx.test", DNS_T_MX, got_cb, &g[3]);
	dns_lookup(d, "1.2.0.192.in-addr.arpa", DNS_T_PTR, got_cb, &g[4]);
	dns_lookup(d, "nx.test", DNS_T_A, got_cb, &g[5]);
	dns_lookup(d, "mx.test", DNS_T_A, got_cb, &g[6]);
	dns_lookup(d, "fail.test", DNS_T_TXT, got_cb, &g[7]);
	run();
	assert_int_equal(pending, 0);
	assert_int_equal(g[0].st, DNS_OK);
	assert_string_equal(g[0].text, "v=spf1 -all;hello;");
	assert_string_equal(g[1].text, "192.0.2.1;192.0.2.2");
	assert_string_equal(g[2].text, "2001:db8::1");
	assert_string_equal(g[3].text, "10 mail.mx.test;0 ");
	assert_string_equal(g[4].text, "host.example");
	assert_int_equal(g[5].st, DNS_NXDOMAIN);
	assert_int_equal(g[6].st, DNS_NODATA);
	assert_int_equal(g[7].st, DNS_TEMPERROR);
	dns_free(&d);
}

static void
test_unbound_limits(void **state)
{
	struct dns *d = new_real();
	struct dns_limits lim;
	struct got g[2];

	dns_limits_default(&lim);
	lim.max_answers = 3;
	lim.max_txt = 299;
	dns_set_limits(d, &lim);
	memset(g, 0, sizeof(g));
	pending = 2;
	dns_lookup(d, "many.test", DNS_T_A, got_cb, &g[0]);
	dns_lookup(d, "bigtxt.test", DNS_T_TXT, got_cb, &g[1]);
	run();
	assert_int_equal(g[0].st, DNS_OK);
	assert_true(g[0].truncated);
	assert_string_equal(g[0].text, "192.0.2.10;192.0.2.11;192.0.2.12");
	assert_int_equal(g[1].st, DNS_OK);
	assert_true(g[1].truncated);
	assert_string_equal(g[1].text, "ok");
	dns_free(&d);
}

static void
test_unbound_timeout_cancel_free(void **state)
{
	struct dns *d = new_real();
	struct dns_limits lim;
	struct got g[3];
	int64_t t0;

	dns_limits_default(&lim);
	lim.timeout_ms = 300;
	dns_set_limits(d, &lim);
	memset(g, 0, sizeof(g));
	pending = 1;
	t0 = mono_ms();
	dns_lookup(d, "drop.test", DNS_T_TXT, got_cb, &g[0]);
	dns_cancel(dns_lookup(d, "a.test", DNS_T_A, got_cb, &g[1]));
	run();
	assert_int_equal(g[0].st, DNS_TEMPERROR);
	assert_true(mono_ms() - t0 >= 290);
	run_for(100); /* the cancelled query's answer arrives and is dropped */
	assert_int_equal(g[1].calls, 0);
	/* Free with a query unbound still works on and one not yet sent. */
	dns_lookup(d, "drop.test", DNS_T_A, got_cb, &g[2]);
	dns_lookup(d, "a.test", DNS_T_AAAA, got_cb, &g[2]);
	dns_free(&d);
	run_for(50);
	assert_int_equal(g[2].calls, 0);
}

static void
test_new_errors(void **state)
{
	char err[256];
	const char *bad[] = {"nonsense", "1.2.3.4@", "1.2.3.4@0", "1.2.3.4@70000", "@53", "::1@x"};

	for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
		err[0] = '\0';
		assert_null(dns_new(base, bad[i], err, sizeof(err)));
		assert_true(err[0] != '\0');
	}
	struct dns *d = dns_new(base, "::1@5353", err, sizeof(err));
	assert_non_null(d);
	dns_free(&d);
	d = dns_new(base, NULL, err, sizeof(err));
	if (d == NULL)
		fail_msg("system resolver: %s", err);
	dns_free(&d);
}

/* ------------------------------------------------------------------ */
/* Parsing answer packets (dns_parse_answer, no resolver)              */

/* Header (id 0x1234, QR RD RA, rcode) and one question for qname/qtype. */
static size_t
pkt_start(unsigned char *p, const char *qname, unsigned qtype, unsigned an, unsigned rcode)
{
	size_t o = 0;
	const char *s = qname;

	o += put16(p + o, 0x1234);
	p[o++] = 0x81;
	p[o++] = (unsigned char)(0x80 | rcode);
	o += put16(p + o, 1);
	o += put16(p + o, an);
	o += put16(p + o, 0);
	o += put16(p + o, 0);
	while (*s != '\0') {
		const char *dot = strchr(s, '.');
		size_t l = dot ? (size_t)(dot - s) : strlen(s);

		p[o++] = (unsigned char)l;
		memcpy(p + o, s, l);
		o += l;
		s += l + (dot ? 1 : 0);
	}
	p[o++] = 0;
	o += put16(p + o, qtype);
	o += put16(p + o, 1);
	return o;
}

static struct dns_limits plim;

/* Parse pkt for rrtype with plim; expect rc; then check every shorter prefix fails. */
static void
parse_ok(const unsigned char *p, size_t len, int rrtype, struct dns_result *r)
{
	struct dns_result t;
	char err[128];

	err[0] = '\0';
	if (dns_parse_answer(p, len, rrtype, &plim, r, err, sizeof(err)) != 1)
		fail_msg("parse failed: %s", err);
	/* A datagram is whole or nothing: every cut is rejected cleanly. */
	for (size_t cut = 0; cut < len; cut++) {
		unsigned char *c = malloc(cut ? cut : 1);

		memcpy(c, p, cut);
		err[0] = '\0';
		if (dns_parse_answer(c, cut, rrtype, &plim, &t, err, sizeof(err)) != -1)
			fail_msg("prefix of %zu/%zu bytes parsed", cut, len);
		assert_true(err[0] != '\0');
		assert_int_equal(t.rrtype, rrtype);
		assert_int_equal(t.ntxt + t.naddr + t.nmx + t.nptr, 0);
		assert_null(t.txt);
		assert_null(t.addr);
		assert_null(t.mx);
		assert_null(t.ptr);
		free(c);
	}
}

static void
parse_bad(const unsigned char *p, size_t len, int rrtype)
{
	struct dns_result r;
	char err[128];

	err[0] = '\0';
	assert_int_equal(dns_parse_answer(p, len, rrtype, &plim, &r, err, sizeof(err)), -1);
	assert_true(err[0] != '\0');
	assert_int_equal(r.ntxt + r.naddr + r.nmx + r.nptr, 0);
	assert_null(r.txt);
	assert_null(r.addr);
	assert_null(r.mx);
	assert_null(r.ptr);
	dns_result_clear(&r);
	/* Without an error buffer as well. */
	assert_int_equal(dns_parse_answer(p, len, rrtype, &plim, &r, NULL, 0), -1);
}

static void
test_parse_valid(void **state)
{
	unsigned char p[1500];
	struct dns_result r;
	char buf[INET6_ADDRSTRLEN];
	size_t l;

	dns_limits_default(&plim);

	/* A: a CNAME first (another owner, another type), two addresses, TTLs 60 and 30. */
	l = pkt_start(p, "a.test", DNS_T_A, 3, 0);
	l += put_rr(p + l, 5, "\x01" "b\xc0\x0c", 4);
	l += put_rr(p + l, DNS_T_A, "\xc0\x00\x02\x01", 4);
	l += put_rr(p + l, DNS_T_A, "\xc0\x00\x02\x02", 4);
	p[l - 16 + 9] = 30; /* the last RR's TTL low byte: 60 -> 30 */
	parse_ok(p, l, DNS_T_A, &r);
	assert_int_equal(r.status, DNS_OK);
	assert_int_equal(r.rrtype, DNS_T_A);
	assert_int_equal(r.naddr, 2);
	assert_int_equal(r.ntxt + r.nmx + r.nptr, 0);
	assert_int_equal(r.ttl, 30);
	assert_false(r.truncated);
	assert_int_equal(r.addr[1].family, AF_INET);
	inet_ntop(AF_INET, &r.addr[1].u.v4, buf, sizeof(buf));
	assert_string_equal(buf, "192.0.2.2");
	dns_result_clear(&r);
	assert_int_equal(r.naddr, 0);
	assert_null(r.addr);
	dns_result_clear(&r);
	dns_result_clear(NULL);
	assert_int_equal(dns_answer_rcode(p, l), 0);

	/* AAAA. */
	l = pkt_start(p, "a.test", DNS_T_AAAA, 1, 0);
	l += put_rr(p + l, DNS_T_AAAA, "\x20\x01\x0d\xb8\0\0\0\0\0\0\0\0\0\0\0\x01", 16);
	parse_ok(p, l, DNS_T_AAAA, &r);
	assert_int_equal(r.status, DNS_OK);
	assert_int_equal(r.naddr, 1);
	assert_int_equal(r.addr[0].family, AF_INET6);
	inet_ntop(AF_INET6, &r.addr[0].u.v6, buf, sizeof(buf));
	assert_string_equal(buf, "2001:db8::1");
	dns_result_clear(&r);

	/* MX: a name ending in a pointer to the question, the null MX, an escaped byte. */
	l = pkt_start(p, "mx.test", DNS_T_MX, 3, 0);
	l += put_rr(p + l, DNS_T_MX, "\x00\x0a\x04mail\xc0\x0c", 9);
	l += put_rr(p + l, DNS_T_MX, "\x00\x00\x00", 3);
	l += put_rr(p + l, DNS_T_MX, "\x00\x14\x03" "a.b\x00", 7);
	parse_ok(p, l, DNS_T_MX, &r);
	assert_int_equal(r.status, DNS_OK);
	assert_int_equal(r.nmx, 3);
	assert_int_equal(r.mx[0].pref, 10);
	assert_string_equal(r.mx[0].host, "mail.mx.test");
	assert_int_equal(r.mx[1].pref, 0);
	assert_string_equal(r.mx[1].host, "");
	assert_int_equal(r.mx[2].pref, 20);
	assert_string_equal(r.mx[2].host, "a\\046b");
	dns_result_clear(&r);

	/* TXT: strings joined, an empty RR, a NUL byte counted in len. */
	l = pkt_start(p, "txt.test", DNS_T_TXT, 3, 0);
	l += put_rr(p + l, DNS_T_TXT, "\x07v=spf1 \x04-all", 13);
	l += put_rr(p + l, DNS_T_TXT, "", 0);
	l += put_rr(p + l, DNS_T_TXT, "\x03" "a\0b", 4);
	parse_ok(p, l, DNS_T_TXT, &r);
	assert_int_equal(r.status, DNS_OK);
	assert_int_equal(r.ntxt, 3);
	assert_string_equal(r.txt[0].data, "v=spf1 -all");
	assert_int_equal(r.txt[0].len, 11);
	assert_int_equal(r.txt[1].len, 0);
	assert_string_equal(r.txt[1].data, "");
	assert_int_equal(r.txt[2].len, 3);
	assert_memory_equal(r.txt[2].data, "a\0b", 4);
	dns_result_clear(&r);

	/* PTR. */
	l = pkt_start(p, "1.2.0.192.in-addr.arpa", DNS_T_PTR, 1, 0);
	l += put_rr(p + l, DNS_T_PTR, "\x04host\x07" "example\x00", 14);
	parse_ok(p, l, DNS_T_PTR, &r);
	assert_int_equal(r.status, DNS_OK);
	assert_int_equal(r.nptr, 1);
	assert_string_equal(r.ptr[0], "host.example");
	dns_result_clear(&r);

	/* No answer of the type: NODATA; the rcode is only read, not judged. */
	l = pkt_start(p, "a.test", DNS_T_MX, 1, 3);
	l += put_rr(p + l, DNS_T_A, "\xc0\x00\x02\x01", 4);
	parse_ok(p, l, DNS_T_MX, &r);
	assert_int_equal(r.status, DNS_NODATA);
	assert_int_equal(r.nmx, 0);
	assert_int_equal(r.ttl, 0);
	dns_result_clear(&r);
	assert_int_equal(dns_answer_rcode(p, l), 3);
	assert_int_equal(dns_answer_rcode(p, 11), -1);
	/* A type not parsed: OK, no data. */
	l = pkt_start(p, "a.test", 99, 1, 0);
	l += put_rr(p + l, 99, "abc", 3);
	parse_ok(p, l, 99, &r);
	assert_int_equal(r.status, DNS_OK);
	assert_int_equal(r.ntxt + r.naddr + r.nmx + r.nptr, 0);
	dns_result_clear(&r);
}

static void
test_parse_compression_loop(void **state)
{
	unsigned char p[512];
	size_t l, rr;

	dns_limits_default(&plim);
	/* The answer's owner points at itself. */
	l = pkt_start(p, "a.test", DNS_T_A, 1, 0);
	rr = l;
	l += put_rr(p + l, DNS_T_A, "\xc0\x00\x02\x01", 4);
	p[rr] = (unsigned char)(0xc0 | rr >> 8);
	p[rr + 1] = (unsigned char)rr;
	parse_bad(p, l, DNS_T_A);
	/* Two pointers at each other, behind a label: in the question. */
	l = 12;
	memcpy(p + l, "\x01" "a\xc0\x10\xc0\x0e", 7);
	l += 7;
	l += put16(p + l, DNS_T_A);
	l += put16(p + l, 1);
	put16(p + 6, 0);
	parse_bad(p, l, DNS_T_A);
	/* Inside an MX's rdata. */
	l = pkt_start(p, "mx.test", DNS_T_MX, 1, 0);
	rr = l + 12 + 2; /* the name in the rdata */
	l += put_rr(p + l, DNS_T_MX, "\x00\x0a\x01x\xc0\x00", 6);
	p[rr + 2] = (unsigned char)(0xc0 | rr >> 8);
	p[rr + 3] = (unsigned char)rr;
	parse_bad(p, l, DNS_T_MX);
}

static void
test_parse_pointer_past_end(void **state)
{
	unsigned char p[512];
	size_t l;

	dns_limits_default(&plim);
	/* The owner points past the packet. */
	l = pkt_start(p, "a.test", DNS_T_A, 1, 0);
	l += put_rr(p + l, DNS_T_A, "\xc0\x00\x02\x01", 4);
	p[l - 16] = 0xc1; /* the owner: pointer to 0x10c */
	parse_bad(p, l, DNS_T_A);
	/* A pointer cut after its first byte. */
	l = pkt_start(p, "a.test", DNS_T_A, 1, 0);
	p[l++] = 0xc0;
	parse_bad(p, l, DNS_T_A);
	/* An MX name pointing beyond its own rdata, into the next RR. */
	l = pkt_start(p, "mx.test", DNS_T_MX, 2, 0);
	l += put_rr(p + l, DNS_T_MX, "\x00\x0a\xc0\x00", 4);
	p[l - 1] = (unsigned char)(l + 12 + 2);
	l += put_rr(p + l, DNS_T_MX, "\x00\x0a\x02mx\x00", 6);
	parse_bad(p, l, DNS_T_MX);
	/* A PTR name running past its rdlen. */
	l = pkt_start(p, "x.arpa", DNS_T_PTR, 1, 0);
	l += put_rr(p + l, DNS_T_PTR, "\x04host\x00", 6);
	p[l - 7] = 3; /* rdlen 6 -> 3: the label's 4 bytes do not fit */
	l -= 3;
	parse_bad(p, l, DNS_T_PTR);
}

static void
test_parse_truncated_rr(void **state)
{
	unsigned char p[512];
	size_t l;

	dns_limits_default(&plim);
	/* rdlen larger than what is left. */
	l = pkt_start(p, "a.test", DNS_T_A, 1, 0);
	l += put_rr(p + l, DNS_T_A, "\xc0\x00\x02\x01", 4);
	p[l - 5] = 5;
	parse_bad(p, l, DNS_T_A);
	/* More answers announced than present. */
	l = pkt_start(p, "a.test", DNS_T_A, 2, 0);
	l += put_rr(p + l, DNS_T_A, "\xc0\x00\x02\x01", 4);
	parse_bad(p, l, DNS_T_A);
	/* A TXT string longer than its rdata, and wrong address sizes. */
	l = pkt_start(p, "t.test", DNS_T_TXT, 1, 0);
	l += put_rr(p + l, DNS_T_TXT, "\x05" "abc", 4);
	parse_bad(p, l, DNS_T_TXT);
	l = pkt_start(p, "a.test", DNS_T_A, 1, 0);
	l += put_rr(p + l, DNS_T_A, "\xc0\x00\x02", 3);
	parse_bad(p, l, DNS_T_A);
	l = pkt_start(p, "a.test", DNS_T_AAAA, 1, 0);
	l += put_rr(p + l, DNS_T_AAAA, "\xc0\x00\x02\x01", 4);
	parse_bad(p, l, DNS_T_AAAA);
	/* A name over 255 wire bytes (five 63-byte labels). */
	l = 12;
	for (int i = 0; i < 5; i++) {
		p[l++] = 63;
		memset(p + l, 'a', 63);
		l += 63;
	}
	p[l++] = 0;
	l += put16(p + l, DNS_T_A);
	l += put16(p + l, 1);
	put16(p + 4, 1);
	put16(p + 6, 0);
	parse_bad(p, l, DNS_T_A);
	/* Under a header. */
	parse_bad(p, 11, DNS_T_A);
	parse_bad(p, 0, DNS_T_A);
}

static void
test_parse_limits(void **state)
{
	unsigned char p[1500], rd[400];
	struct dns_result r;
	size_t l;

	/* Too many answers: the first max_answers are kept. */
	dns_limits_default(&plim);
	plim.max_answers = 3;
	l = pkt_start(p, "many.test", DNS_T_A, 10, 0);
	for (unsigned i = 0; i < 10; i++) {
		unsigned char a[4] = {192, 0, 2, (unsigned char)(10 + i)};

		l += put_rr(p + l, DNS_T_A, a, 4);
	}
	parse_ok(p, l, DNS_T_A, &r);
	assert_int_equal(r.status, DNS_OK);
	assert_true(r.truncated);
	assert_int_equal(r.naddr, 3);
	assert_int_equal(r.addr[2].u.v4.s_addr, htonl(0xc000020c));
	dns_result_clear(&r);
	/* No answer allowed at all: still OK, nothing kept. */
	plim.max_answers = 0;
	parse_ok(p, l, DNS_T_A, &r);
	assert_int_equal(r.status, DNS_OK);
	assert_true(r.truncated);
	assert_int_equal(r.naddr, 0);
	assert_null(r.addr);
	dns_result_clear(&r);

	/* An oversized TXT is dropped, the next one kept. */
	dns_limits_default(&plim);
	plim.max_txt = 299;
	l = pkt_start(p, "bigtxt.test", DNS_T_TXT, 2, 0);
	rd[0] = 200;
	memset(rd + 1, 'x', 200);
	rd[201] = 100;
	memset(rd + 202, 'y', 100);
	l += put_rr(p + l, DNS_T_TXT, rd, 302);
	l += put_rr(p + l, DNS_T_TXT, "\x02ok", 3);
	parse_ok(p, l, DNS_T_TXT, &r);
	assert_int_equal(r.status, DNS_OK);
	assert_true(r.truncated);
	assert_int_equal(r.ntxt, 1);
	assert_string_equal(r.txt[0].data, "ok");
	dns_result_clear(&r);
	/* Exactly at the limit: kept. */
	plim.max_txt = 300;
	parse_ok(p, l, DNS_T_TXT, &r);
	assert_false(r.truncated);
	assert_int_equal(r.ntxt, 2);
	assert_int_equal(r.txt[0].len, 300);
	assert_int_equal(strlen(r.txt[0].data), 300);
	dns_result_clear(&r);
	/* Only an oversized TXT: OK (there is a record), but none kept. */
	l = pkt_start(p, "bigtxt.test", DNS_T_TXT, 1, 0);
	l += put_rr(p + l, DNS_T_TXT, rd, 302);
	plim.max_txt = 10;
	parse_ok(p, l, DNS_T_TXT, &r);
	assert_int_equal(r.status, DNS_OK);
	assert_true(r.truncated);
	assert_int_equal(r.ntxt, 0);
	dns_result_clear(&r);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_fake, setup, teardown),
		cmocka_unit_test_setup_teardown(test_invalid_names, setup, teardown),
		cmocka_unit_test_setup_teardown(test_cancel_from_callback, setup, teardown),
		cmocka_unit_test_setup_teardown(test_new_errors, setup, teardown),
		cmocka_unit_test(test_parse_valid),
		cmocka_unit_test(test_parse_compression_loop),
		cmocka_unit_test(test_parse_pointer_past_end),
		cmocka_unit_test(test_parse_truncated_rr),
		cmocka_unit_test(test_parse_limits),
		cmocka_unit_test_setup_teardown(test_unbound_answers, setup_srv, teardown_srv),
		cmocka_unit_test_setup_teardown(test_unbound_limits, setup_srv, teardown_srv),
		cmocka_unit_test_setup_teardown(test_unbound_timeout_cancel_free, setup_srv, teardown_srv),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}

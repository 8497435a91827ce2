/*
 * Tests for daemon/spf: the record parser, macro expansion (RFC 7208 7.4
 * examples), and check_host() over a fake dns instance.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <event2/event.h>

#include "daemon/dns.h"
#include "daemon/spf.h"

/* ------------------------------------------------------------------ */
/* Parser                                                              */

static int
parse(const char *rec, struct spf_record *r, char *err, size_t errlen)
{
	struct spf_limits lim;

	spf_limits_default(&lim);
	err[0] = '\0';
	return spf_parse(rec, strlen(rec), &lim, r, err, errlen);
}

static void
test_parse_ok(void **state)
{
	static struct spf_record r;
	char err[256];
	const char *rec = "v=spf1 +all -a ~a:mail.example.com/24 ?mx//64 mx:%{d}.example.org/24//48 "
		"ptr ptr:example.org ip4:192.0.2.0/24 ip6:2001:db8::/32 ip4:192.0.2.1 "
		"include:_spf.example.com exists:%{ir}.%{l1r+-}._spf.%{d} EXP=explain._spf.%{d} "
		"redirect=_spf.example.net foo=bar%{s} ";

	if (parse(rec, &r, err, sizeof(err)) != 1)
		fail_msg("%s", err);
	assert_int_equal(r.nmech, 12);
	assert_int_equal(r.mech[0].type, SPF_MECH_ALL);
	assert_int_equal(r.mech[0].qual, SPF_PASS);
	assert_int_equal(r.mech[1].type, SPF_MECH_A);
	assert_int_equal(r.mech[1].qual, SPF_FAIL);
	assert_null(r.mech[1].domain.p);
	assert_int_equal(r.mech[2].qual, SPF_SOFTFAIL);
	assert_int_equal(r.mech[2].domain.len, strlen("mail.example.com"));
	assert_int_equal(r.mech[2].cidr4, 24);
	assert_int_equal(r.mech[2].cidr6, 128);
	assert_int_equal(r.mech[3].type, SPF_MECH_MX);
	assert_int_equal(r.mech[3].qual, SPF_NEUTRAL);
	assert_int_equal(r.mech[3].cidr4, 32);
	assert_int_equal(r.mech[3].cidr6, 64);
	assert_int_equal(r.mech[4].cidr4, 24);
	assert_int_equal(r.mech[4].cidr6, 48);
	assert_int_equal(r.mech[5].type, SPF_MECH_PTR);
	assert_int_equal(r.mech[7].type, SPF_MECH_IP4);
	assert_int_equal(r.mech[7].cidr4, 24);
	assert_memory_equal(r.mech[7].ip, "\xc0\x00\x02\x00", 4);
	assert_int_equal(r.mech[8].type, SPF_MECH_IP6);
	assert_int_equal(r.mech[8].cidr6, 32);
	assert_int_equal(r.mech[9].cidr4, 32);
	assert_int_equal(r.mech[10].type, SPF_MECH_INCLUDE);
	assert_int_equal(r.mech[11].type, SPF_MECH_EXISTS);
	assert_int_equal(r.exp.len, strlen("explain._spf.%{d}"));
	assert_int_equal(r.redirect.len, strlen("_spf.example.net"));
	assert_int_equal(r.mech[2].term.len, strlen("~a:mail.example.com/24"));

	assert_int_equal(parse("v=spf1", &r, err, sizeof(err)), 1);
	assert_int_equal(r.nmech, 0);
	assert_int_equal(parse("V=SPF1 IP4:10.0.0.1 -ALL", &r, err, sizeof(err)), 1);
	assert_int_equal(r.nmech, 2);
}

static void
test_parse_errors(void **state)
{
	static struct spf_record r;
	char err[256];
	const char *bad[] = {
		"v=spf10", "v=spf1  all:x", "v=spf1 foo", "v=spf1 ip4:1.2.3.4/33", "v=spf1 ip6:::1/129",
		"v=spf1 ip4:1.2.3", "v=spf1 ip4", "v=spf1 ip4:1.2.3.4/024", "v=spf1 include",
		"v=spf1 include:", "v=spf1 include:localhost", "v=spf1 a:example.123",
		"v=spf1 redirect=a.example.org redirect=b.example.org", "v=spf1 exp=a.org exp=b.org",
		"v=spf1 a:%{x}.example.org", "v=spf1 a:%{d0}.example.org", "v=spf1 a:%{d",
		"v=spf1 a:%{c}.example.org", "v=spf1 a:%.example.org", "v=spf1 -redirect=x.example.org",
		"v=spf1 mx/", "v=spf1 a//", "v=spf1 a/24/", "v=spf1\tall", "v=spf1 foo=%{q}",
		"v=spf1 exists:%", "v=spf1 ip4:1.2.3.4/", "v=spf1 +",
	};

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		if (parse(bad[i], &r, err, sizeof(err)) != -1)
			fail_msg("accepted: %s", bad[i]);
		assert_true(err[0] != '\0');
	}
	assert_true(spf_is_record("v=spf1", 6));
	assert_true(spf_is_record("v=spf1 -all", 11));
	assert_false(spf_is_record("v=spf10", 7));
	assert_false(spf_is_record("v=spf", 5));
	assert_false(spf_is_record("spf2.0/pra", 10));
}

/* The parser on input arriving one byte longer each time: never reads past len. */
static void
test_parse_prefixes(void **state)
{
	static struct spf_record r;
	const char *rec = "v=spf1 a:%{d}.example.org/24//64 ip6:2001:db8::1 exp=%{d} -all";
	struct spf_limits lim;
	char err[256];

	spf_limits_default(&lim);
	for (size_t n = 0; n <= strlen(rec); n++) {
		char *copy = malloc(n ? n : 1);

		memcpy(copy, rec, n);
		(void)spf_parse(copy, n, &lim, &r, err, sizeof(err));
		free(copy);
	}
	assert_int_equal(spf_parse(rec, strlen(rec), &lim, &r, err, sizeof(err)), 1);
}

/* ------------------------------------------------------------------ */
/* Macros                                                              */

static void
expand_is(const struct spf_macro_vars *v, bool exp, const char *in, const char *want)
{
	struct mbuf b;
	char err[256];

	mbuf_init(&b, 2048);
	if (spf_macro_expand(in, strlen(in), v, exp, &b, err, sizeof(err)) != 1)
		fail_msg("%s: %s", in, err);
	if (strcmp(b.data, want) != 0)
		fail_msg("%s: got '%s', want '%s'", in, b.data, want);
	mbuf_clear(&b);
}

static void
test_macro_rfc(void **state)
{
	struct spf_macro_vars v;
	char i6[72];
	static const uint8_t ip6[16] = {0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xcb, 0x01};

	memset(&v, 0, sizeof(v));
	v.s = "strong-bad@email.example.com";
	v.l = "strong-bad";
	v.o = "email.example.com";
	v.d = "email.example.com";
	v.i = "192.0.2.3";
	v.v = "in-addr";
	v.h = "mx.example.org";
	expand_is(&v, false, "%{s}", "strong-bad@email.example.com");
	expand_is(&v, false, "%{o}", "email.example.com");
	expand_is(&v, false, "%{d}", "email.example.com");
	expand_is(&v, false, "%{d4}", "email.example.com");
	expand_is(&v, false, "%{d3}", "email.example.com");
	expand_is(&v, false, "%{d2}", "example.com");
	expand_is(&v, false, "%{d1}", "com");
	expand_is(&v, false, "%{dr}", "com.example.email");
	expand_is(&v, false, "%{d2r}", "example.email");
	expand_is(&v, false, "%{l}", "strong-bad");
	expand_is(&v, false, "%{l-}", "strong.bad");
	expand_is(&v, false, "%{lr}", "strong-bad");
	expand_is(&v, false, "%{lr-}", "bad.strong");
	expand_is(&v, false, "%{l1r-}", "strong");
	expand_is(&v, false, "%{ir}.%{v}._spf.%{d2}", "3.2.0.192.in-addr._spf.example.com");
	expand_is(&v, false, "%{lr-}.lp._spf.%{d2}", "bad.strong.lp._spf.example.com");
	expand_is(&v, false, "%{lr-}.lp.%{ir}.%{v}._spf.%{d2}",
		  "bad.strong.lp.3.2.0.192.in-addr._spf.example.com");
	expand_is(&v, false, "%{ir}.%{v}.%{l1r-}.lp._spf.%{d2}",
		  "3.2.0.192.in-addr.strong.lp._spf.example.com");
	expand_is(&v, false, "%{d2}.trusted-domains.example.net",
		  "example.com.trusted-domains.example.net");
	expand_is(&v, false, "%%%_%-", "% %20");
	expand_is(&v, false, "%{p}", "unknown");
	expand_is(&v, false, "%{h}", "mx.example.org");
	expand_is(&v, false, "%{S}", "strong-bad%40email.example.com");
	expand_is(&v, false, "%{d200}", "email.example.com");

	assert_int_equal(spf_ip_macro(AF_INET6, ip6, i6, sizeof(i6)), 1);
	v.i = i6;
	v.v = "ip6";
	expand_is(&v, false, "%{ir}.%{v}._spf.%{d2}",
		  "1.0.b.c.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6._spf.example.com");

	v.c = "192.0.2.3";
	v.r = "mx.example.net";
	v.t = 1234;
	expand_is(&v, true, "%{c} is not one of %{d}'s designated mail servers.",
		  "192.0.2.3 is not one of email.example.com's designated mail servers.");
	expand_is(&v, true, "%{r} %{t}", "mx.example.net 1234");
}

static void
test_macro_errors(void **state)
{
	struct spf_macro_vars v;
	struct mbuf b;
	char err[256];
	const char *bad[] = {"%", "%x", "%{", "%{d", "%{d0}", "%{dx}", "%{q}", "%{c}", "a b", "%{d1r"};

	memset(&v, 0, sizeof(v));
	v.d = "example.com";
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		mbuf_init(&b, 100);
		if (spf_macro_expand(bad[i], strlen(bad[i]), &v, false, &b, err, sizeof(err)) != -1)
			fail_msg("accepted: %s", bad[i]);
		mbuf_clear(&b);
	}
	/* Output beyond the buffer's max is an error, not a truncation. */
	mbuf_init(&b, 10);
	assert_int_equal(spf_macro_expand("%{d}%{d}", 8, &v, false, &b, err, sizeof(err)), -1);
	mbuf_clear(&b);
}

static void
test_truncate(void **state)
{
	char name[400];

	memset(name, 0, sizeof(name));
	for (int i = 0; i < 60; i++)
		strcat(name, "abcd.");
	strcat(name, "example.org");
	assert_true(strlen(name) > 253);
	assert_true(spf_domain_truncate(name) <= 253);
	assert_true(strcmp(name + strlen(name) - 11, "example.org") == 0);
	assert_true(strncmp(name, "abcd.", 5) == 0);
}

/* ------------------------------------------------------------------ */
/* check_host                                                          */

static struct event_base *base;
static struct dns *dns;

struct outcome {
	int calls;
	enum spf_result result;
	char mech[256], exp[512], problem[512];
	unsigned lookups;
};

static void
done_cb(const struct spf_outcome *o, void *arg)
{
	struct outcome *out = arg;

	out->calls++;
	out->result = o->result;
	snprintf(out->mech, sizeof(out->mech), "%s", o->mechanism ? o->mechanism : "");
	snprintf(out->exp, sizeof(out->exp), "%s", o->explanation ? o->explanation : "");
	snprintf(out->problem, sizeof(out->problem), "%s", o->problem ? o->problem : "");
	out->lookups = o->lookups;
}

static int
setup(void **state)
{
	base = event_base_new();
	dns = dns_new_fake(base);
	return 0;
}

static int
teardown(void **state)
{
	dns_free(&dns);
	event_base_free(base);
	return 0;
}

static void
add(const char *name, int type, const char *value)
{
	assert_int_equal(dns_fake_add(dns, name, type, value), 1);
}

static struct outcome
check(const char *ip, const char *domain, const char *sender)
{
	struct spf_request req;
	struct outcome out;

	memset(&req, 0, sizeof(req));
	memset(&out, 0, sizeof(out));
	req.family = strchr(ip, ':') ? AF_INET6 : AF_INET;
	assert_int_equal(inet_pton(req.family, ip, req.ip), 1);
	req.domain = domain;
	req.sender = sender;
	req.helo = "helo.example.net";
	req.receiver = "mx.example.net";
	spf_check_start(dns, &req, done_cb, &out);
	assert_int_equal(out.calls, 0);
	event_base_dispatch(base);
	assert_int_equal(out.calls, 1);
	return out;
}

static void
test_check_basic(void **state)
{
	struct outcome o;

	add("example.org", DNS_T_TXT, "v=spf1 ip4:192.0.2.0/24 ip6:2001:db8::/32 a mx:mx.example.org/30 -all");
	add("example.org", DNS_T_TXT, "some other text");
	add("example.org", DNS_T_A, "198.51.100.7");
	add("mx.example.org", DNS_T_MX, "10 mail.example.org");
	add("mail.example.org", DNS_T_A, "203.0.113.4");

	o = check("192.0.2.77", "example.org", "u@example.org");
	assert_int_equal(o.result, SPF_PASS);
	assert_string_equal(o.mech, "ip4:192.0.2.0/24");
	assert_int_equal(check("::ffff:192.0.2.1", "example.org", "u@example.org").result, SPF_PASS);
	assert_int_equal(check("2001:db8:1::5", "example.org", "u@example.org").result, SPF_PASS);
	o = check("198.51.100.7", "example.org", "u@example.org");
	assert_int_equal(o.result, SPF_PASS);
	assert_string_equal(o.mech, "a");
	o = check("203.0.113.6", "example.org", "u@example.org");
	assert_int_equal(o.result, SPF_PASS);
	assert_string_equal(o.mech, "mx:mx.example.org/30");
	o = check("203.0.113.8", "EXAMPLE.org.", "u@example.org");
	assert_int_equal(o.result, SPF_FAIL);
	assert_string_equal(o.mech, "-all");
	assert_int_equal(o.lookups, 2);

	assert_int_equal(check("192.0.2.1", "nospf.example.org", "").result, SPF_NONE);
	assert_int_equal(check("192.0.2.1", "localhost", "").result, SPF_NONE);
	assert_int_equal(check("192.0.2.1", "bad..example", "").result, SPF_NONE);
}

static void
test_check_include_redirect_exp(void **state)
{
	struct outcome o;

	add("example.org", DNS_T_TXT, "v=spf1 include:_spf.example.com ~all");
	add("_spf.example.com", DNS_T_TXT, "v=spf1 ip4:192.0.2.1 -all");
	add("dot.example.org", DNS_T_TXT, "v=spf1 a:host.example.org. -all");
	add("host.example.org", DNS_T_A, "192.0.2.5");
	add("red.example.org", DNS_T_TXT, "v=spf1 redirect=example.org");
	add("exp.example.org", DNS_T_TXT, "v=spf1 -ip4:192.0.2.9 ?all exp=why.%{d}");
	add("why.exp.example.org", DNS_T_TXT, "%{i} may not send for %{d} (%{l} at %{o}, %{r})");
	add("noinc.example.org", DNS_T_TXT, "v=spf1 include:none.example.org -all");
	add("none.example.org", DNS_T_A, "192.0.2.1");
	add("redir-none.example.org", DNS_T_TXT, "v=spf1 redirect=none.example.org");
	add("tmp.example.org", DNS_T_TXT, "v=spf1 include:tmpinc.example.org -all");
	dns_fake_status(dns, "tmpinc.example.org", DNS_T_TXT, DNS_TEMPERROR);
	add("two.example.org", DNS_T_TXT, "v=spf1 -all");
	add("two.example.org", DNS_T_TXT, "v=spf1 +all");
	add("syntax.example.org", DNS_T_TXT, "v=spf1 ip4:300.1.1.1 -all");

	o = check("192.0.2.1", "example.org", "u@example.org");
	assert_int_equal(o.result, SPF_PASS);
	assert_string_equal(o.mech, "include:_spf.example.com");
	assert_int_equal(check("192.0.2.5", "dot.example.org", "").result, SPF_PASS);
	o = check("192.0.2.2", "example.org", "u@example.org");
	assert_int_equal(o.result, SPF_SOFTFAIL);
	assert_int_equal(check("192.0.2.1", "red.example.org", "").result, SPF_PASS);
	assert_int_equal(check("192.0.2.2", "red.example.org", "").result, SPF_SOFTFAIL);
	o = check("192.0.2.9", "exp.example.org", "joe@exp.example.org");
	assert_int_equal(o.result, SPF_FAIL);
	assert_string_equal(o.exp, "192.0.2.9 may not send for exp.example.org (joe at exp.example.org, mx.example.net)");
	o = check("192.0.2.8", "exp.example.org", "joe@exp.example.org");
	assert_int_equal(o.result, SPF_NEUTRAL);
	assert_string_equal(o.exp, "");
	o = check("192.0.2.1", "noinc.example.org", "");
	assert_int_equal(o.result, SPF_PERMERROR);
	assert_true(o.problem[0] != '\0');
	assert_int_equal(check("192.0.2.1", "redir-none.example.org", "").result, SPF_PERMERROR);
	assert_int_equal(check("192.0.2.1", "tmp.example.org", "").result, SPF_TEMPERROR);
	assert_int_equal(check("192.0.2.1", "two.example.org", "").result, SPF_PERMERROR);
	o = check("192.0.2.1", "syntax.example.org", "");
	assert_int_equal(o.result, SPF_PERMERROR);
	assert_non_null(strstr(o.problem, "ip4:300.1.1.1"));
}

static void
test_check_limits(void **state)
{
	struct outcome o;
	char name[64], rec[128];

	/* A chain of 11 includes: the 11th DNS-querying term is a permerror. */
	for (int i = 0; i < 12; i++) {
		snprintf(name, sizeof(name), "l%d.example.org", i);
		snprintf(rec, sizeof(rec), "v=spf1 include:l%d.example.org -all", i + 1);
		add(name, DNS_T_TXT, rec);
	}
	o = check("192.0.2.1", "l0.example.org", "");
	assert_int_equal(o.result, SPF_PERMERROR);
	assert_non_null(strstr(o.problem, "10"));
	/* Exactly 10 is fine. */
	add("ten.example.org", DNS_T_TXT,
	    "v=spf1 a:a1.example.org a:a2.example.org exists:e.example.org exists:e.example.org "
	    "exists:e.example.org exists:e.example.org exists:e.example.org exists:e.example.org "
	    "exists:e.example.org ip4:192.0.2.1 exists:e.example.org -all");
	add("a1.example.org", DNS_T_A, "198.51.100.1");
	add("a2.example.org", DNS_T_A, "198.51.100.1");
	add("e.example.org", DNS_T_TXT, "x");
	/* e.example.org has no A: each exists is a void lookup: the third is a permerror. */
	o = check("192.0.2.1", "ten.example.org", "");
	assert_int_equal(o.result, SPF_PERMERROR);
	assert_non_null(strstr(o.problem, "void"));
	add("e.example.org", DNS_T_A, "127.0.0.2");
	add("ten2.example.org", DNS_T_TXT,
	    "v=spf1 a:a1.example.org a:a2.example.org -exists:x%{i}.example.org ip4:192.0.2.1 "
	    "exists:e.example.org -all");
	o = check("192.0.2.1", "ten2.example.org", "");
	assert_int_equal(o.result, SPF_PASS);
	/* More than 10 MX names. */
	add("mxs.example.org", DNS_T_TXT, "v=spf1 mx -all");
	for (int i = 0; i < 11; i++) {
		snprintf(rec, sizeof(rec), "%d mx%d.example.org", i, i);
		add("mxs.example.org", DNS_T_MX, rec);
	}
	assert_int_equal(check("192.0.2.1", "mxs.example.org", "").result, SPF_PERMERROR);
	/* Temporary DNS errors in a mechanism. */
	add("tmpa.example.org", DNS_T_TXT, "v=spf1 a:broken.example.org -all");
	dns_fake_status(dns, "broken.example.org", DNS_T_A, DNS_TEMPERROR);
	assert_int_equal(check("192.0.2.1", "tmpa.example.org", "").result, SPF_TEMPERROR);
}

static void
test_check_ptr_macros(void **state)
{
	struct outcome o;

	add("ptr.example.org", DNS_T_TXT, "v=spf1 ptr -all");
	add("1.2.0.192.in-addr.arpa", DNS_T_PTR, "evil.example.com");
	add("1.2.0.192.in-addr.arpa", DNS_T_PTR, "host.ptr.example.org");
	add("host.ptr.example.org", DNS_T_A, "192.0.2.1");
	add("2.2.0.192.in-addr.arpa", DNS_T_PTR, "forged.ptr.example.org");
	add("forged.ptr.example.org", DNS_T_A, "192.0.2.99");
	o = check("192.0.2.1", "ptr.example.org", "");
	assert_int_equal(o.result, SPF_PASS);
	assert_int_equal(check("192.0.2.2", "ptr.example.org", "").result, SPF_FAIL);
	assert_int_equal(check("192.0.2.3", "ptr.example.org", "").result, SPF_FAIL);

	add("mac.example.org", DNS_T_TXT, "v=spf1 exists:%{ir}.%{l1r+-}._spf.%{d} -all");
	add("1.2.0.192.joe._spf.mac.example.org", DNS_T_A, "127.0.0.2");
	assert_int_equal(check("192.0.2.1", "mac.example.org", "joe-x@mac.example.org").result, SPF_PASS);
	assert_int_equal(check("192.0.2.1", "mac.example.org", "ann@mac.example.org").result, SPF_FAIL);
	/* Empty MAIL FROM: postmaster@helo. */
	add("helo.example.net", DNS_T_TXT, "v=spf1 exists:%{l}.%{o} -all");
	add("postmaster.helo.example.net", DNS_T_A, "127.0.0.2");
	assert_int_equal(check("192.0.2.1", "helo.example.net", "").result, SPF_PASS);
}

/* Cancelling a running check (also from another check's callback): its callback never runs. */
static struct spf_check *victim;

static void
cancel_other_cb(const struct spf_outcome *o, void *arg)
{
	spf_cancel(victim);
	victim = NULL;
	done_cb(o, arg);
}

static void
test_check_cancel(void **state)
{
	struct spf_request req;
	struct outcome out, out2;
	char name[64], rec[128];

	add("example.org", DNS_T_TXT, "v=spf1 -all");
	for (int i = 0; i < 5; i++) {
		snprintf(name, sizeof(name), "l%d.example.org", i);
		snprintf(rec, sizeof(rec), "v=spf1 include:l%d.example.org -all", i + 1);
		add(name, DNS_T_TXT, rec);
	}
	memset(&req, 0, sizeof(req));
	memset(&out, 0, sizeof(out));
	memset(&out2, 0, sizeof(out2));
	req.family = AF_INET;
	req.domain = "example.org";
	spf_cancel(spf_check_start(dns, &req, done_cb, &out));
	event_base_dispatch(base);
	assert_int_equal(out.calls, 0);

	spf_check_start(dns, &req, cancel_other_cb, &out);
	req.domain = "l0.example.org";
	victim = spf_check_start(dns, &req, done_cb, &out2);
	event_base_dispatch(base);
	assert_int_equal(out.calls, 1);
	assert_int_equal(out2.calls, 0);
	assert_null(victim);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse_ok),
		cmocka_unit_test(test_parse_errors),
		cmocka_unit_test(test_parse_prefixes),
		cmocka_unit_test(test_macro_rfc),
		cmocka_unit_test(test_macro_errors),
		cmocka_unit_test(test_truncate),
		cmocka_unit_test_setup_teardown(test_check_basic, setup, teardown),
		cmocka_unit_test_setup_teardown(test_check_include_redirect_exp, setup, teardown),
		cmocka_unit_test_setup_teardown(test_check_limits, setup, teardown),
		cmocka_unit_test_setup_teardown(test_check_ptr_macros, setup, teardown),
		cmocka_unit_test_setup_teardown(test_check_cancel, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}

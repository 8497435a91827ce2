/*
 * spf: record parser, macro expander and check_host() (RFC 7208).
 *
 * The evaluator keeps a stack of frames, one per record being evaluated
 * (the checked domain, then one per include; redirect= replaces the top
 * frame). At most one DNS query is in flight per check, so cancelling means
 * cancelling that one query. The DNS-querying terms (include, a, mx, ptr,
 * exists, redirect) are counted over the whole check, which also bounds the
 * stack depth. The callback is always delivered from the check's own event.
 */
#define _GNU_SOURCE 1
#include "daemon/spf.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include <event2/event.h>

#include "daemon/dns.h"

const char *
spf_result_name(enum spf_result r)
{
	switch (r) {
	case SPF_NONE: return "none";
	case SPF_NEUTRAL: return "neutral";
	case SPF_PASS: return "pass";
	case SPF_FAIL: return "fail";
	case SPF_SOFTFAIL: return "softfail";
	case SPF_TEMPERROR: return "temperror";
	case SPF_PERMERROR: return "permerror";
	}
	return "unknown";
}

void
spf_limits_default(struct spf_limits *lim)
{
	lim->max_len = 4096;
	lim->max_terms = SPF_MAX_TERMS;
}

bool
spf_is_record(const char *txt, size_t len)
{
	return len >= 6 && strncasecmp(txt, "v=spf1", 6) == 0 && (len == 6 || txt[6] == ' ');
}

/* ------------------------------------------------------------------ */
/* Macros                                                              */

static bool
is_delim(char c)
{
	return c != '\0' && strchr(".-+,/_=", c) != NULL;
}

static bool
url_unreserved(unsigned char c)
{
	return isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~';
}

static const char *
macro_value(const struct spf_macro_vars *v, char letter, char *tbuf, size_t tsize)
{
	const char *s = NULL;

	switch (letter) {
	case 's': s = v->s; break;
	case 'l': s = v->l; break;
	case 'o': s = v->o; break;
	case 'd': s = v->d; break;
	case 'i': s = v->i; break;
	case 'p': s = v->p ? v->p : "unknown"; break;
	case 'v': s = v->v; break;
	case 'h': s = v->h; break;
	case 'c': s = v->c; break;
	case 'r': s = v->r ? v->r : "unknown"; break;
	case 't':
		snprintf(tbuf, tsize, "%lld", v->t);
		s = tbuf;
		break;
	default: break;
	}
	return s ? s : "";
}

/* Most parts a value may split into (an SMTP path is at most 256 bytes). */
#define SPF_MACRO_MAX_PARTS 512

/*
 * Expand one %{...} with its letter, digits, reversal and delimiters onto
 * out; value is the letter's value. Returns 0 or -1 (out full, too many parts).
 */
static int
macro_transform(const char *value, long digits, bool reverse, const char *delims, size_t ndelims,
		bool urlesc, struct mbuf *out)
{
	struct spf_str parts[SPF_MACRO_MAX_PARTS];
	size_t np = 0, start = 0, i, first;
	size_t vlen = strlen(value);

	for (i = 0; i <= vlen; i++) {
		bool d = i == vlen;

		if (!d) {
			d = ndelims == 0 ? value[i] == '.' : memchr(delims, value[i], ndelims) != NULL;
		}
		if (!d)
			continue;
		if (np == SPF_MACRO_MAX_PARTS)
			return -1;
		parts[np].p = value + start;
		parts[np].len = i - start;
		np++;
		start = i + 1;
	}
	if (reverse) {
		for (i = 0; i < np / 2; i++) {
			struct spf_str t = parts[i];

			parts[i] = parts[np - 1 - i];
			parts[np - 1 - i] = t;
		}
	}
	first = digits > 0 && (size_t)digits < np ? np - (size_t)digits : 0;
	for (i = first; i < np; i++) {
		if (i > first && mbuf_add(out, ".", 1) < 0)
			return -1;
		if (!urlesc) {
			if (mbuf_add(out, parts[i].p, parts[i].len) < 0)
				return -1;
			continue;
		}
		for (size_t j = 0; j < parts[i].len; j++) {
			unsigned char c = (unsigned char)parts[i].p[j];

			if (url_unreserved(c) ? mbuf_add(out, &c, 1) < 0 : mbuf_printf(out, "%%%02X", c) < 0)
				return -1;
		}
	}
	return 0;
}

/* Expansion, or only the syntax check when v and out are NULL. */
static int
macro_run(const char *in, size_t len, const struct spf_macro_vars *v, bool exp,
	  struct mbuf *out, char *err, size_t errlen)
{
	size_t i = 0;

	while (i < len) {
		unsigned char c = (unsigned char)in[i];

		if (c != '%') {
			if (c < 0x21 || c > 0x7e) {
				if (!(exp && c == ' ')) {
					snprintf(err, errlen, "invalid character 0x%02x in macro-string", c);
					return -1;
				}
			}
			if (out != NULL && mbuf_add(out, &in[i], 1) < 0)
				goto full;
			i++;
			continue;
		}
		if (i + 1 >= len) {
			snprintf(err, errlen, "'%%' at the end of a macro-string");
			return -1;
		}
		c = (unsigned char)in[i + 1];
		if (c == '%' || c == '_' || c == '-') {
			const char *lit = c == '%' ? "%" : c == '_' ? " " : "%20";

			if (out != NULL && mbuf_adds(out, lit) < 0)
				goto full;
			i += 2;
			continue;
		}
		if (c != '{') {
			snprintf(err, errlen, "invalid macro '%%%c'", isprint(c) ? c : '?');
			return -1;
		}
		i += 2;
		if (i >= len) {
			snprintf(err, errlen, "unterminated macro");
			return -1;
		}
		{
			char letter = (char)tolower((unsigned char)in[i]);
			bool upper = isupper((unsigned char)in[i]);
			bool reverse = false, have_digits = false;
			long digits = 0;
			const char *delims;
			size_t ndelims;
			char tbuf[32];

			if (strchr("slodiphcrtv", letter) == NULL || letter == '\0') {
				snprintf(err, errlen, "unknown macro letter '%c'", isprint((unsigned char)in[i]) ? in[i] : '?');
				return -1;
			}
			if (!exp && (letter == 'c' || letter == 'r' || letter == 't')) {
				snprintf(err, errlen, "macro letter '%c' only allowed in exp text", letter);
				return -1;
			}
			i++;
			while (i < len && isdigit((unsigned char)in[i])) {
				have_digits = true;
				if (digits < 100000)
					digits = digits * 10 + (in[i] - '0');
				i++;
			}
			if (have_digits && digits == 0) {
				snprintf(err, errlen, "macro transformer digit 0");
				return -1;
			}
			if (i < len && (in[i] == 'r' || in[i] == 'R')) {
				reverse = true;
				i++;
			}
			delims = in + i;
			while (i < len && is_delim(in[i]))
				i++;
			ndelims = (size_t)(in + i - delims);
			if (i >= len || in[i] != '}') {
				snprintf(err, errlen, "unterminated or malformed macro");
				return -1;
			}
			i++;
			if (out != NULL &&
			    macro_transform(macro_value(v, letter, tbuf, sizeof(tbuf)), digits, reverse,
					    delims, ndelims, upper, out) < 0)
				goto full;
		}
	}
	return 1;
full:
	snprintf(err, errlen, "macro expansion too long");
	return -1;
}

int
spf_macro_expand(const char *in, size_t len, const struct spf_macro_vars *v, bool exp,
		 struct mbuf *out, char *err, size_t errlen)
{
	return macro_run(in, len, v, exp, out, err, errlen);
}

int
spf_ip_macro(int family, const uint8_t *ip, char *buf, size_t size)
{
	static const char hex[] = "0123456789abcdef";
	size_t o = 0;

	if (family == AF_INET)
		return inet_ntop(AF_INET, ip, buf, (socklen_t)size) ? 1 : -1;
	if (size < 64)
		return -1;
	for (int i = 0; i < 16; i++) {
		buf[o++] = hex[ip[i] >> 4];
		buf[o++] = '.';
		buf[o++] = hex[ip[i] & 15];
		buf[o++] = i == 15 ? '\0' : '.';
	}
	return 1;
}

size_t
spf_domain_truncate(char *name)
{
	size_t len = strlen(name);
	char *p = name;

	while (len - (size_t)(p - name) > 253) {
		char *dot = strchr(p, '.');

		if (dot == NULL)
			break;
		p = dot + 1;
	}
	if (p != name)
		memmove(name, p, strlen(p) + 1);
	return strlen(name);
}

/* ------------------------------------------------------------------ */
/* Parser                                                              */

static bool
slice_ieq(const char *p, size_t len, const char *word)
{
	return strlen(word) == len && strncasecmp(p, word, len) == 0;
}

/* toplabel = ( *alphanum ALPHA *alphanum ) / ( 1*alphanum "-" *( alphanum / "-" ) alphanum ) */
static bool
toplabel_ok(const char *p, size_t len)
{
	bool alpha = false, hyphen = false;

	if (len == 0 || !isalnum((unsigned char)p[0]) || !isalnum((unsigned char)p[len - 1]))
		return false;
	for (size_t i = 0; i < len; i++) {
		if (isalpha((unsigned char)p[i]))
			alpha = true;
		else if (p[i] == '-')
			hyphen = true;
		else if (!isdigit((unsigned char)p[i]))
			return false;
	}
	return alpha || hyphen;
}

/* domain-spec = macro-string domain-end; domain-end = ( "." toplabel [ "." ] ) / macro-expand */
static int
domain_spec_check(const char *p, size_t len, char *err, size_t errlen)
{
	size_t end = len, dot;

	if (len == 0) {
		snprintf(err, errlen, "empty domain-spec");
		return -1;
	}
	if (macro_run(p, len, NULL, false, NULL, err, errlen) < 0)
		return -1;
	if (p[len - 1] == '}' || (len >= 2 && p[len - 2] == '%'))
		return 1;
	if (p[end - 1] == '.')
		end--;
	for (dot = end; dot > 0 && p[dot - 1] != '.'; dot--)
		;
	if (dot == 0 || !toplabel_ok(p + dot, end - dot)) {
		snprintf(err, errlen, "domain-spec \"%.*s\" does not end in a valid top label",
			 (int)(len > 100 ? 100 : len), p);
		return -1;
	}
	return 1;
}

/* "/" ( "0" / %x31-39 0*nDIGIT ), value <= max. */
static int
cidr_parse(const char *p, size_t len, int max, int *v_r)
{
	int v = 0;

	if (len == 0 || len > 3 || (p[0] == '0' && len > 1))
		return -1;
	for (size_t i = 0; i < len; i++) {
		if (!isdigit((unsigned char)p[i]))
			return -1;
		v = v * 10 + (p[i] - '0');
	}
	if (v > max)
		return -1;
	*v_r = v;
	return 1;
}

/* dual-cidr-length = [ ip4-cidr-length ] [ "/" ip6-cidr-length ], starting at a '/'. */
static int
dual_cidr_parse(const char *p, size_t len, struct spf_mech *m)
{
	const char *dd = NULL;

	for (size_t i = 0; i + 1 < len; i++) {
		if (p[i] == '/' && p[i + 1] == '/') {
			dd = p + i;
			break;
		}
	}
	if (dd != p) {
		size_t l4 = (dd ? (size_t)(dd - p) : len);

		if (l4 < 2 || p[0] != '/' || cidr_parse(p + 1, l4 - 1, 32, &m->cidr4) < 0)
			return -1;
	}
	if (dd != NULL && cidr_parse(dd + 2, (size_t)(p + len - dd - 2), 128, &m->cidr6) < 0)
		return -1;
	return 1;
}

static int
mech_parse(const char *t, size_t len, struct spf_mech *m, char *err, size_t errlen)
{
	size_t i = 0, nlen;
	const char *rest;
	size_t rlen;

	memset(m, 0, sizeof(*m));
	m->term.p = t;
	m->term.len = len;
	m->qual = SPF_PASS;
	m->cidr4 = 32;
	m->cidr6 = 128;
	switch (t[0]) {
	case '+': m->qual = SPF_PASS; i = 1; break;
	case '-': m->qual = SPF_FAIL; i = 1; break;
	case '~': m->qual = SPF_SOFTFAIL; i = 1; break;
	case '?': m->qual = SPF_NEUTRAL; i = 1; break;
	default: break;
	}
	for (nlen = 0; i + nlen < len && isalnum((unsigned char)t[i + nlen]); nlen++)
		;
	rest = t + i + nlen;
	rlen = len - i - nlen;
	if (slice_ieq(t + i, nlen, "all")) {
		m->type = SPF_MECH_ALL;
		if (rlen != 0)
			goto bad;
		return 1;
	}
	if (slice_ieq(t + i, nlen, "include") || slice_ieq(t + i, nlen, "exists")) {
		m->type = (t[i] == 'i' || t[i] == 'I') ? SPF_MECH_INCLUDE : SPF_MECH_EXISTS;
		if (rlen < 2 || rest[0] != ':')
			goto bad;
		m->domain.p = rest + 1;
		m->domain.len = rlen - 1;
		return domain_spec_check(m->domain.p, m->domain.len, err, errlen);
	}
	if (slice_ieq(t + i, nlen, "a") || slice_ieq(t + i, nlen, "mx") || slice_ieq(t + i, nlen, "ptr")) {
		const char *slash;

		m->type = nlen == 1 ? SPF_MECH_A : nlen == 2 ? SPF_MECH_MX : SPF_MECH_PTR;
		slash = m->type == SPF_MECH_PTR ? NULL : memchr(rest, '/', rlen);
		if (rlen > 0 && rest[0] == ':') {
			m->domain.p = rest + 1;
			m->domain.len = (slash ? (size_t)(slash - rest) : rlen) - 1;
			if (domain_spec_check(m->domain.p, m->domain.len, err, errlen) < 0)
				return -1;
		} else if (rlen > 0 && rest[0] != '/') {
			goto bad;
		}
		if (slash != NULL && dual_cidr_parse(slash, (size_t)(rest + rlen - slash), m) < 0)
			goto bad;
		return 1;
	}
	if (slice_ieq(t + i, nlen, "ip4") || slice_ieq(t + i, nlen, "ip6")) {
		bool v6 = t[i + 2] == '6';
		char addr[INET6_ADDRSTRLEN + 1];
		const char *slash;
		size_t alen;

		m->type = v6 ? SPF_MECH_IP6 : SPF_MECH_IP4;
		if (rlen < 2 || rest[0] != ':')
			goto bad;
		slash = memchr(rest, '/', rlen);
		alen = (slash ? (size_t)(slash - rest) : rlen) - 1;
		if (alen == 0 || alen >= sizeof(addr))
			goto bad;
		memcpy(addr, rest + 1, alen);
		addr[alen] = '\0';
		if (inet_pton(v6 ? AF_INET6 : AF_INET, addr, m->ip) != 1)
			goto bad;
		if (slash != NULL &&
		    cidr_parse(slash + 1, (size_t)(rest + rlen - slash - 1), v6 ? 128 : 32,
			       v6 ? &m->cidr6 : &m->cidr4) < 0)
			goto bad;
		return 1;
	}
	snprintf(err, errlen, "unknown mechanism \"%.*s\"", (int)(len > 100 ? 100 : len), t);
	return -1;
bad:
	snprintf(err, errlen, "malformed mechanism \"%.*s\"", (int)(len > 100 ? 100 : len), t);
	return -1;
}

int
spf_parse(const char *txt, size_t len, const struct spf_limits *lim, struct spf_record *r,
	  char *err, size_t errlen)
{
	size_t i = 6, nterms = 0, max_terms = lim->max_terms;

	memset(r, 0, sizeof(*r));
	if (max_terms > SPF_MAX_TERMS)
		max_terms = SPF_MAX_TERMS;
	if (len > lim->max_len) {
		snprintf(err, errlen, "record longer than %zu bytes", lim->max_len);
		return -1;
	}
	if (!spf_is_record(txt, len)) {
		snprintf(err, errlen, "not an SPF record");
		return -1;
	}
	for (;;) {
		size_t start, tlen, nlen;
		const char *t;

		while (i < len && txt[i] == ' ')
			i++;
		if (i >= len)
			break;
		start = i;
		while (i < len && txt[i] != ' ')
			i++;
		t = txt + start;
		tlen = i - start;
		if (++nterms > max_terms) {
			snprintf(err, errlen, "more than %zu terms", max_terms);
			return -1;
		}
		/* modifier: name "=" ..., name = ALPHA *( ALPHA / DIGIT / "-" / "_" / "." ) */
		nlen = 0;
		if (isalpha((unsigned char)t[0])) {
			for (nlen = 1; nlen < tlen && (isalnum((unsigned char)t[nlen]) || t[nlen] == '-' ||
						      t[nlen] == '_' || t[nlen] == '.'); nlen++)
				;
		}
		if (nlen > 0 && nlen < tlen && t[nlen] == '=') {
			struct spf_str *which = NULL;
			const char *val = t + nlen + 1;
			size_t vlen = tlen - nlen - 1;

			if (slice_ieq(t, nlen, "redirect"))
				which = &r->redirect;
			else if (slice_ieq(t, nlen, "exp"))
				which = &r->exp;
			if (which == NULL) {
				if (macro_run(val, vlen, NULL, true, NULL, err, errlen) < 0)
					return -1;
				continue;
			}
			if (which->p != NULL) {
				snprintf(err, errlen, "%.*s= appears twice", (int)nlen, t);
				return -1;
			}
			if (domain_spec_check(val, vlen, err, errlen) < 0)
				return -1;
			which->p = val;
			which->len = vlen;
			continue;
		}
		if (mech_parse(t, tlen, &r->mech[r->nmech], err, errlen) < 0)
			return -1;
		r->nmech++;
	}
	return 1;
}

/* ------------------------------------------------------------------ */
/* check_host()                                                        */

#define SPF_MAX_LOOKUPS 10  /* RFC 7208 4.6.4 */
#define SPF_MAX_VOIDS 2
#define SPF_MAX_NAMES 10    /* MX names (more: permerror), PTR names (more: ignored) */
#define SPF_MAX_DEPTH (SPF_MAX_LOOKUPS + 2)
#define SPF_MAX_EXPLANATION 1024

struct spf_frame {
	char *domain;
	char *txt;                 /* the record; rec's slices point into it */
	struct spf_record rec;
	size_t next;               /* next mechanism to evaluate */
	char *target;              /* a/mx/ptr: expanded target domain */
	char *names[SPF_MAX_NAMES]; /* mx/ptr: names whose addresses are checked */
	size_t nnames, name_i;
	bool redirected;           /* reached by redirect=: a none is a permerror */
};

enum spf_wait {
	SPF_WAIT_RECORD = 1, /* TXT of the top frame's domain */
	SPF_WAIT_ADDR,       /* a: A/AAAA of target */
	SPF_WAIT_MX,         /* mx: MX of target */
	SPF_WAIT_MX_ADDR,    /* mx: A/AAAA of names[name_i] */
	SPF_WAIT_PTR,        /* ptr: PTR of the client IP */
	SPF_WAIT_PTR_ADDR,   /* ptr: A/AAAA of names[name_i] */
	SPF_WAIT_EXISTS,     /* exists: A of target */
	SPF_WAIT_EXP,        /* TXT of the explanation domain */
};

struct spf_check {
	struct dns *d;
	spf_done_fn *cb;
	void *arg;
	struct event *ev;
	struct dns_query *q;
	enum spf_wait wait;

	int family;
	uint8_t ip[16];
	char *domain, *sender, *local, *sdomain, *helo, *receiver;
	char ipm[72], ipc[INET6_ADDRSTRLEN];

	struct spf_frame frames[SPF_MAX_DEPTH];
	size_t depth;
	unsigned lookups, voids;

	bool in_cb, cancelled;
	struct spf_outcome out;
	char *mechanism, *explanation, *problem;
};

static void check_step(struct spf_check *c);
static void frame_result(struct spf_check *c, enum spf_result r, const struct spf_mech *m);
static void check_dns_cb(const struct dns_result *r, void *arg);

static void
frame_clear(struct spf_frame *f)
{
	free(f->domain);
	free(f->txt);
	free(f->target);
	for (size_t i = 0; i < f->nnames; i++)
		free(f->names[i]);
	memset(f, 0, sizeof(*f));
}

static void
frame_names_clear(struct spf_frame *f)
{
	for (size_t i = 0; i < f->nnames; i++)
		free(f->names[i]);
	f->nnames = f->name_i = 0;
}

static struct spf_frame *
top(struct spf_check *c)
{
	return &c->frames[c->depth - 1];
}

/* Deliver result r (mechanism: the matched term, if any) from the check's event. */
static void
set_problem(struct spf_check *c, char *p)
{
	free(c->problem);
	c->problem = p;
}

static void
check_finish(struct spf_check *c, enum spf_result r, const char *mech, size_t mechlen, const char *problem)
{
	c->out.result = r;
	if (mech != NULL) {
		free(c->mechanism);
		c->mechanism = xstrndup(mech, mechlen);
	}
	if (problem != NULL && problem != c->problem)
		set_problem(c, xstrdup(problem));
	event_active(c->ev, EV_TIMEOUT, 0);
}

static void
check_event(evutil_socket_t fd, short what, void *arg)
{
	struct spf_check *c = arg;
	spf_done_fn *cb = c->cb;
	void *cbarg = c->arg;

	c->out.domain = c->domain;
	c->out.mechanism = c->mechanism;
	c->out.explanation = c->explanation;
	c->out.problem = c->problem;
	c->out.lookups = c->lookups;
	c->in_cb = true;
	cb(&c->out, cbarg);
	c->in_cb = false;
	c->cancelled = false;
	spf_cancel(c);
}

static void
lookup(struct spf_check *c, enum spf_wait w, const char *name, int rrtype)
{
	c->wait = w;
	c->q = dns_lookup(c->d, name, rrtype, check_dns_cb, c);
}

static int
addr_type(const struct spf_check *c)
{
	return c->family == AF_INET ? DNS_T_A : DNS_T_AAAA;
}

/* Expand a domain-spec (or use the frame's domain when absent) into a name to query. */
static char *
expand_domain(struct spf_check *c, const struct spf_str *spec)
{
	struct spf_macro_vars v;
	struct mbuf b;
	char err[128], *s;

	if (spec->p == NULL)
		return xstrdup(top(c)->domain);
	memset(&v, 0, sizeof(v));
	v.s = c->sender;
	v.l = c->local;
	v.o = c->sdomain;
	v.d = top(c)->domain;
	v.i = c->ipm;
	v.v = c->family == AF_INET ? "in-addr" : "ip6";
	v.h = c->helo;
	mbuf_init(&b, 1024);
	if (spf_macro_expand(spec->p, spec->len, &v, false, &b, err, sizeof(err)) < 0) {
		/* Syntax was checked by the parser; only an over-long result gets here. */
		mbuf_clear(&b);
		return xstrdup("");
	}
	s = xstrndup(b.len ? b.data : "", b.len);
	mbuf_clear(&b);
	if (s[0] != '\0' && s[strlen(s) - 1] == '.')
		s[strlen(s) - 1] = '\0';
	spf_domain_truncate(s);
	return s;
}

static bool
prefix_match(const uint8_t *a, const uint8_t *b, int bits)
{
	int full = bits / 8, rest = bits % 8;

	if (memcmp(a, b, (size_t)full) != 0)
		return false;
	if (rest == 0)
		return true;
	return ((a[full] ^ b[full]) & (0xff << (8 - rest)) & 0xff) == 0;
}

static bool
addrs_match(const struct spf_check *c, const struct dns_result *r, int cidr4, int cidr6)
{
	for (size_t i = 0; i < r->naddr; i++) {
		const struct dns_addr *a = &r->addr[i];

		if (a->family != c->family)
			continue;
		if (a->family == AF_INET && prefix_match(c->ip, (const uint8_t *)&a->u.v4, cidr4))
			return true;
		if (a->family == AF_INET6 && prefix_match(c->ip, a->u.v6.s6_addr, cidr6))
			return true;
	}
	return false;
}

/* Whether name equals domain or is a subdomain of it (case-insensitive). */
static bool
name_within(const char *name, const char *domain)
{
	size_t nl = strlen(name), dl = strlen(domain);

	if (nl == dl)
		return strcasecmp(name, domain) == 0;
	return nl > dl && name[nl - dl - 1] == '.' && strcasecmp(name + nl - dl, domain) == 0;
}

/* The current mechanism of the top frame matched or not; continue. */
static void
mech_done(struct spf_check *c, bool match)
{
	struct spf_frame *f = top(c);
	const struct spf_mech *m = &f->rec.mech[f->next];

	free(f->target);
	f->target = NULL;
	frame_names_clear(f);
	if (match) {
		f->next = f->rec.nmech + 1; /* no redirect after a match */
		frame_result(c, m->qual, m);
		return;
	}
	f->next++;
	check_step(c);
}

/* A void lookup (NXDOMAIN or NODATA): counted, and an error past the limit. */
static bool
void_lookup(struct spf_check *c)
{
	if (++c->voids > SPF_MAX_VOIDS) {
		check_finish(c, SPF_PERMERROR, NULL, 0, "more than 2 void lookups");
		return false;
	}
	return true;
}

/* Start the explanation lookup for a fail, or finish. */
static void
top_done(struct spf_check *c, enum spf_result r, const struct spf_mech *m)
{
	struct spf_frame *f = top(c);

	c->out.result = r;
	if (m != NULL)
		c->mechanism = xstrndup(m->term.p, m->term.len);
	else
		c->mechanism = xstrdup("default");
	if (r == SPF_FAIL && f->rec.exp.p != NULL) {
		char *name = expand_domain(c, &f->rec.exp);

		lookup(c, SPF_WAIT_EXP, name, DNS_T_TXT);
		free(name);
		return;
	}
	check_finish(c, r, NULL, 0, NULL);
}

/* The top frame's record evaluated to r: pop it and apply include's mapping. */
static void
frame_result(struct spf_check *c, enum spf_result r, const struct spf_mech *m)
{
	if (c->depth == 1) {
		if (r == SPF_TEMPERROR || r == SPF_PERMERROR || r == SPF_NONE)
			check_finish(c, r, NULL, 0, r == SPF_NONE ? NULL : c->problem);
		else
			top_done(c, r, m);
		return;
	}
	frame_clear(top(c));
	c->depth--;
	/* RFC 7208 5.2: the include's result. */
	switch (r) {
	case SPF_PASS:
		mech_done(c, true);
		break;
	case SPF_FAIL:
	case SPF_SOFTFAIL:
	case SPF_NEUTRAL:
		mech_done(c, false);
		break;
	case SPF_TEMPERROR:
		check_finish(c, SPF_TEMPERROR, NULL, 0, c->problem ? c->problem : "temporary DNS error in include");
		break;
	default:
		check_finish(c, SPF_PERMERROR, NULL, 0,
			     r == SPF_NONE ? "include of a domain without SPF record" : c->problem);
		break;
	}
}

static bool
count_lookup(struct spf_check *c)
{
	if (++c->lookups > SPF_MAX_LOOKUPS) {
		check_finish(c, SPF_PERMERROR, NULL, 0, "more than 10 DNS-querying terms");
		return false;
	}
	return true;
}

/* Evaluate mechanisms of the top frame from f->next until one waits for DNS. */
static void
check_step(struct spf_check *c)
{
	struct spf_frame *f = top(c);

	while (f->next < f->rec.nmech) {
		const struct spf_mech *m = &f->rec.mech[f->next];

		switch (m->type) {
		case SPF_MECH_ALL:
			mech_done(c, true);
			return;
		case SPF_MECH_IP4:
		case SPF_MECH_IP6:
			if ((m->type == SPF_MECH_IP4) == (c->family == AF_INET) &&
			    prefix_match(c->ip, m->ip, m->type == SPF_MECH_IP4 ? m->cidr4 : m->cidr6)) {
				mech_done(c, true);
				return;
			}
			f->next++;
			continue;
		case SPF_MECH_INCLUDE: {
			struct spf_frame *nf;

			if (!count_lookup(c))
				return;
			if (c->depth == SPF_MAX_DEPTH) {
				check_finish(c, SPF_PERMERROR, NULL, 0, "includes nested too deeply");
				return;
			}
			nf = &c->frames[c->depth];
			memset(nf, 0, sizeof(*nf));
			nf->domain = expand_domain(c, &m->domain);
			c->depth++;
			lookup(c, SPF_WAIT_RECORD, nf->domain, DNS_T_TXT);
			return;
		}
		case SPF_MECH_A:
		case SPF_MECH_MX:
		case SPF_MECH_PTR:
		case SPF_MECH_EXISTS:
			if (!count_lookup(c))
				return;
			f->target = expand_domain(c, &m->domain);
			if (m->type == SPF_MECH_A) {
				lookup(c, SPF_WAIT_ADDR, f->target, addr_type(c));
			} else if (m->type == SPF_MECH_MX) {
				lookup(c, SPF_WAIT_MX, f->target, DNS_T_MX);
			} else if (m->type == SPF_MECH_EXISTS) {
				lookup(c, SPF_WAIT_EXISTS, f->target, DNS_T_A);
			} else {
				char name[128];

				if (c->family == AF_INET)
					snprintf(name, sizeof(name), "%u.%u.%u.%u.in-addr.arpa",
						 c->ip[3], c->ip[2], c->ip[1], c->ip[0]);
				else {
					char nib[72];
					char rev[72];
					size_t n;

					spf_ip_macro(AF_INET6, c->ip, nib, sizeof(nib));
					n = strlen(nib);
					for (size_t k = 0; k < n; k++)
						rev[k] = nib[n - 1 - k];
					rev[n] = '\0';
					snprintf(name, sizeof(name), "%s.ip6.arpa", rev);
				}
				lookup(c, SPF_WAIT_PTR, name, DNS_T_PTR);
			}
			return;
		}
	}
	if (f->next == f->rec.nmech && f->rec.redirect.p != NULL) {
		char *name;

		/* RFC 7208 6.1: evaluate the target's record instead of this one. */
		if (!count_lookup(c))
			return;
		name = expand_domain(c, &f->rec.redirect);
		free(f->txt);
		f->txt = NULL;
		memset(&f->rec, 0, sizeof(f->rec));
		f->next = 0;
		free(f->domain);
		f->domain = name;
		f->redirected = true;
		lookup(c, SPF_WAIT_RECORD, f->domain, DNS_T_TXT);
		return;
	}
	frame_result(c, SPF_NEUTRAL, NULL);
}

/* TXT of a frame's domain arrived. */
static void
got_record(struct spf_check *c, const struct dns_result *r)
{
	struct spf_frame *f = top(c);
	const struct dns_txt *rec = NULL;
	struct spf_limits lim;
	char err[256];
	size_t n = 0;

	if (r->status == DNS_TEMPERROR) {
		set_problem(c, xasprintf("temporary DNS error looking up SPF record of %s", f->domain));
		frame_result(c, SPF_TEMPERROR, NULL);
		return;
	}
	if (r->status == DNS_OK) {
		for (size_t i = 0; i < r->ntxt; i++) {
			if (spf_is_record(r->txt[i].data, r->txt[i].len)) {
				rec = &r->txt[i];
				n++;
			}
		}
	}
	if (n > 1) {
		set_problem(c, xasprintf("multiple SPF records for %s", f->domain));
		frame_result(c, SPF_PERMERROR, NULL);
		return;
	}
	if (n == 0) {
		if (f->redirected) {
			set_problem(c, xasprintf("redirect to %s without SPF record", f->domain));
			frame_result(c, SPF_PERMERROR, NULL);
		} else {
			frame_result(c, SPF_NONE, NULL);
		}
		return;
	}
	f->txt = xstrndup(rec->data, rec->len);
	spf_limits_default(&lim);
	if (spf_parse(f->txt, rec->len, &lim, &f->rec, err, sizeof(err)) < 0) {
		set_problem(c, xasprintf("SPF record of %s: %s", f->domain, err));
		frame_result(c, SPF_PERMERROR, NULL);
		return;
	}
	check_step(c);
}

/* Look up the address of the next mx/ptr name, or end the mechanism without a match. */
static void
next_name(struct spf_check *c, enum spf_wait w)
{
	struct spf_frame *f = top(c);

	if (f->name_i >= f->nnames) {
		mech_done(c, false);
		return;
	}
	lookup(c, w, f->names[f->name_i], addr_type(c));
}

static void
got_explanation(struct spf_check *c, const struct dns_result *r)
{
	struct spf_macro_vars v;
	struct mbuf b;
	char err[128];

	if (r->status == DNS_OK && r->ntxt == 1) {
		memset(&v, 0, sizeof(v));
		v.s = c->sender;
		v.l = c->local;
		v.o = c->sdomain;
		v.d = top(c)->domain;
		v.i = c->ipm;
		v.v = c->family == AF_INET ? "in-addr" : "ip6";
		v.h = c->helo;
		v.c = c->ipc;
		v.r = c->receiver;
		v.t = (long long)time(NULL);
		mbuf_init(&b, SPF_MAX_EXPLANATION);
		if (spf_macro_expand(r->txt[0].data, r->txt[0].len, &v, true, &b, err, sizeof(err)) > 0) {
			/* Only printable ASCII goes into an SMTP reply. */
			for (size_t i = 0; i < b.len; i++)
				if ((unsigned char)b.data[i] < 0x20 || (unsigned char)b.data[i] > 0x7e)
					b.data[i] = '?';
			c->explanation = xstrndup(b.len ? b.data : "", b.len);
		}
		mbuf_clear(&b);
	}
	check_finish(c, c->out.result, NULL, 0, NULL);
}

static void
check_dns_cb(const struct dns_result *r, void *arg)
{
	struct spf_check *c = arg;
	struct spf_frame *f = top(c);
	const struct spf_mech *m = f->next < f->rec.nmech ? &f->rec.mech[f->next] : NULL;

	c->q = NULL;
	switch (c->wait) {
	case SPF_WAIT_RECORD:
		got_record(c, r);
		return;
	case SPF_WAIT_EXP:
		got_explanation(c, r);
		return;
	case SPF_WAIT_PTR_ADDR:
	case SPF_WAIT_MX_ADDR:
		if (r->status == DNS_OK && addrs_match(c, r, m->cidr4, m->cidr6)) {
			mech_done(c, true);
			return;
		}
		if (r->status == DNS_TEMPERROR && c->wait == SPF_WAIT_MX_ADDR) {
			check_finish(c, SPF_TEMPERROR, NULL, 0, "temporary DNS error looking up an MX host");
			return;
		}
		f->name_i++;
		next_name(c, c->wait);
		return;
	default:
		break;
	}
	if (r->status == DNS_TEMPERROR && c->wait != SPF_WAIT_PTR) {
		char *p = xasprintf("temporary DNS error looking up %s", f->target);

		check_finish(c, SPF_TEMPERROR, NULL, 0, p);
		free(p);
		return;
	}
	if (r->status != DNS_OK) {
		/* NXDOMAIN, NODATA (void lookups), an invalid name, or a failed PTR lookup: no match. */
		if ((r->status == DNS_NXDOMAIN || r->status == DNS_NODATA) && !void_lookup(c))
			return;
		mech_done(c, false);
		return;
	}
	switch (c->wait) {
	case SPF_WAIT_ADDR:
		mech_done(c, addrs_match(c, r, m->cidr4, m->cidr6));
		return;
	case SPF_WAIT_EXISTS:
		mech_done(c, r->naddr > 0);
		return;
	case SPF_WAIT_MX:
		if (r->nmx > SPF_MAX_NAMES || r->truncated) {
			check_finish(c, SPF_PERMERROR, NULL, 0, "more than 10 MX names");
			return;
		}
		for (size_t i = 0; i < r->nmx; i++)
			if (r->mx[i].host[0] != '\0')
				f->names[f->nnames++] = xstrdup(r->mx[i].host);
		next_name(c, SPF_WAIT_MX_ADDR);
		return;
	case SPF_WAIT_PTR:
		for (size_t i = 0; i < r->nptr && i < SPF_MAX_NAMES; i++)
			if (name_within(r->ptr[i], f->target))
				f->names[f->nnames++] = xstrdup(r->ptr[i]);
		next_name(c, SPF_WAIT_PTR_ADDR);
		return;
	default:
		mech_done(c, false);
		return;
	}
}

/* RFC 7208 4.3: a domain check_host() can look up: multi-label, valid labels. */
static bool
domain_checkable(const char *d)
{
	size_t len = strlen(d), lab = 0;
	bool dot = false;

	if (len > 0 && d[len - 1] == '.')
		len--;
	if (len == 0 || len > 253)
		return false;
	for (size_t i = 0; i < len; i++) {
		unsigned char ch = (unsigned char)d[i];

		if (ch == '.') {
			if (lab == 0)
				return false;
			dot = true;
			lab = 0;
		} else if (ch <= ' ' || ch == 0x7f || ch == '\\' || ++lab > 63) {
			return false;
		}
	}
	return dot;
}

struct spf_check *
spf_check_start(struct dns *d, const struct spf_request *req, spf_done_fn *cb, void *arg)
{
	struct spf_check *c = xcalloc(1, sizeof(*c));
	static const uint8_t v4mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
	const char *at;

	c->d = d;
	c->cb = cb;
	c->arg = arg;
	c->ev = event_new(dns_base(d), -1, 0, check_event, c);
	if (c->ev == NULL) {
		fprintf(stderr, "mox: event_new failed\n");
		abort();
	}
	c->family = req->family;
	if (req->family == AF_INET6 && memcmp(req->ip, v4mapped, 12) == 0) {
		c->family = AF_INET;
		memcpy(c->ip, req->ip + 12, 4);
	} else {
		memcpy(c->ip, req->ip, req->family == AF_INET ? 4 : 16);
	}
	spf_ip_macro(c->family, c->ip, c->ipm, sizeof(c->ipm));
	inet_ntop(c->family, c->ip, c->ipc, sizeof(c->ipc));
	c->domain = xstrdup(req->domain ? req->domain : "");
	c->helo = xstrdup(req->helo ? req->helo : "");
	c->receiver = xstrdup(req->receiver ? req->receiver : "unknown");
	/* RFC 7208 4.3: an empty reverse-path is postmaster@ the HELO domain. */
	if (req->sender != NULL && req->sender[0] != '\0')
		c->sender = xstrdup(req->sender);
	else
		c->sender = xasprintf("postmaster@%s", c->helo);
	at = strrchr(c->sender, '@');
	if (at != NULL && at != c->sender) {
		c->local = xstrndup(c->sender, (size_t)(at - c->sender));
		c->sdomain = xstrdup(at + 1);
	} else {
		c->local = xstrdup("postmaster");
		c->sdomain = xstrdup(at ? at + 1 : c->sender);
	}
	if (c->family != AF_INET && c->family != AF_INET6) {
		check_finish(c, SPF_PERMERROR, NULL, 0, "no client address");
		return c;
	}
	if (!domain_checkable(c->domain)) {
		check_finish(c, SPF_NONE, NULL, 0, NULL);
		return c;
	}
	c->frames[0].domain = xstrdup(c->domain);
	c->depth = 1;
	lookup(c, SPF_WAIT_RECORD, c->domain, DNS_T_TXT);
	return c;
}

void
spf_cancel(struct spf_check *c)
{
	if (c == NULL || c->cancelled)
		return;
	if (c->in_cb) {
		/* From inside its own callback: check_event frees it afterwards. */
		c->cancelled = true;
		return;
	}
	dns_cancel(c->q);
	event_free(c->ev);
	for (size_t i = 0; i < c->depth; i++)
		frame_clear(&c->frames[i]);
	free(c->domain);
	free(c->sender);
	free(c->local);
	free(c->sdomain);
	free(c->helo);
	free(c->receiver);
	free(c->mechanism);
	free(c->explanation);
	free(c->problem);
	free(c);
}

/*
 * dkim: DKIM verification (RFC 6376, RFC 8463, RFC 8301).
 *
 * Design note. The pure half (tag lists, signature and key records, header
 * and body canonicalization, the signed data, the EVP check) works on
 * bytes it is given. The verifier reads the spooled message from an offset
 * (after the prefix we added) in slices, one slice per loop turn, so a big
 * message never holds the loop long and never sits whole in memory: only
 * the header section is kept (capped). As soon as the header section is in,
 * every signature's key lookup starts, in parallel with hashing the body.
 * Signatures with the same body canonicalization and l= share one hasher.
 * The result callback always runs from the verifier's own event, so a
 * caller may free the verifier inside it; lookups are cancelled on free.
 */
#define _GNU_SOURCE 1
#include "daemon/dkim.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/x509.h>

#include "daemon/dns.h"

const char *
dkim_status_name(enum dkim_status st)
{
	static const char *const names[] = {"none", "pass", "fail", "policy", "neutral", "temperror", "permerror"};

	if ((unsigned)st >= ARRAY_LEN(names))
		return "none";
	return names[st];
}

/* ------------------------------------------------------------------ */
/* Tag lists and values                                                */

static bool
is_ws(char c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

static bool
is_wsp(char c)
{
	return c == ' ' || c == '\t';
}

static bool
str_is(struct dkim_str s, const char *want)
{
	size_t n = strlen(want);

	return s.len == n && strncasecmp(s.p, want, n) == 0;
}

static struct dkim_str
trim(struct dkim_str s)
{
	while (s.len > 0 && is_ws(s.p[0])) {
		s.p++;
		s.len--;
	}
	while (s.len > 0 && is_ws(s.p[s.len - 1]))
		s.len--;
	return s;
}

int
dkim_tag_next(const char *s, size_t len, size_t *pos, struct dkim_str *name_r, struct dkim_str *value_r,
	      const char **err_r)
{
	size_t i = *pos, start;

	while (i < len && is_ws(s[i]))
		i++;
	if (i == len) {
		*pos = i;
		return 0;
	}
	start = i;
	if (!isalpha((unsigned char)s[i])) {
		*err_r = "expected a tag name";
		return DKIM_E_SYNTAX;
	}
	while (i < len && (isalnum((unsigned char)s[i]) || s[i] == '_'))
		i++;
	name_r->p = s + start;
	name_r->len = i - start;
	while (i < len && is_ws(s[i]))
		i++;
	if (i == len || s[i] != '=') {
		*err_r = "expected '=' after a tag name";
		return DKIM_E_SYNTAX;
	}
	i++;
	start = i;
	for (; i < len && s[i] != ';'; i++) {
		unsigned char c = (unsigned char)s[i];
		/* VALCHAR is %x21-3A / %x3C-7E; bytes >= 0x80 are tolerated (UTF-8 in z=). */
		if (c < 0x21 && !is_ws((char)c)) {
			*err_r = "control character in a tag value";
			return DKIM_E_SYNTAX;
		}
		if (c == 0x7f) {
			*err_r = "control character in a tag value";
			return DKIM_E_SYNTAX;
		}
	}
	*value_r = trim((struct dkim_str){s + start, i - start});
	if (i < len)
		i++; /* the ';' */
	*pos = i;
	return 1;
}

int
dkim_base64_decode(const char *s, size_t len, uint8_t *out, size_t cap)
{
	uint32_t acc = 0;
	size_t n = 0, nch = 0, pad = 0;

	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];
		int v;

		if (is_ws((char)c))
			continue;
		if (c == '=') {
			pad++;
			continue;
		}
		if (pad > 0)
			return DKIM_E_SYNTAX; /* data after padding */
		v = b64_value(c);
		if (v < 0)
			return DKIM_E_SYNTAX;
		acc = (acc << 6) | (uint32_t)v;
		nch++;
		if (nch % 4 == 0) {
			if (n + 3 > cap)
				return DKIM_E_LIMIT;
			out[n++] = (uint8_t)(acc >> 16);
			out[n++] = (uint8_t)(acc >> 8);
			out[n++] = (uint8_t)acc;
			acc = 0;
		}
	}
	switch (nch % 4) {
	case 0:
		if (pad != 0)
			return DKIM_E_SYNTAX;
		break;
	case 1:
		return DKIM_E_SYNTAX;
	case 2:
		if (pad != 0 && pad != 2)
			return DKIM_E_SYNTAX;
		if (n + 1 > cap)
			return DKIM_E_LIMIT;
		out[n++] = (uint8_t)(acc >> 4);
		break;
	case 3:
		if (pad > 1)
			return DKIM_E_SYNTAX;
		if (n + 2 > cap)
			return DKIM_E_LIMIT;
		out[n++] = (uint8_t)(acc >> 10);
		out[n++] = (uint8_t)(acc >> 2);
		break;
	}
	return (int)n;
}

/* A domain name or selector: LDH labels (underscore tolerated), dots between. */
static bool
valid_domain(struct dkim_str s)
{
	size_t label = 0;

	if (s.len == 0 || s.len > 253)
		return false;
	for (size_t i = 0; i < s.len; i++) {
		unsigned char c = (unsigned char)s.p[i];
		if (c == '.') {
			if (label == 0)
				return false;
			label = 0;
			continue;
		}
		if (!isalnum(c) && c != '-' && c != '_')
			return false;
		if (++label > 63)
			return false;
	}
	return label > 0;
}

/* Decimal of at most maxdigits digits. 1, or -1. */
static int
parse_num(struct dkim_str s, size_t maxdigits, uint64_t *v_r)
{
	uint64_t v = 0;

	if (s.len == 0 || s.len > maxdigits)
		return -1;
	for (size_t i = 0; i < s.len; i++) {
		if (s.p[i] < '0' || s.p[i] > '9')
			return -1;
		v = v * 10 + (uint64_t)(s.p[i] - '0');
	}
	*v_r = v;
	return 1;
}

/* Next element of a colon-separated list (h=, q=, s=, t=, key h=). 1, or 0 at the end. */
static int
list_next(struct dkim_str list, size_t *pos, struct dkim_str *elem_r)
{
	size_t i = *pos, start = i;

	if (i > list.len)
		return 0;
	while (i < list.len && list.p[i] != ':')
		i++;
	*elem_r = trim((struct dkim_str){list.p + start, i - start});
	*pos = i + 1;
	return 1;
}

static bool
list_has(struct dkim_str list, const char *want)
{
	struct dkim_str e;
	size_t pos = 0;

	while (list_next(list, &pos, &e) > 0)
		if (str_is(e, want))
			return true;
	return false;
}

/* Tags seen so far in one tag-list, to refuse duplicates (RFC 6376 3.2). */
struct tag_seen {
	struct dkim_str names[32];
	size_t n;
};

static int
tag_seen_add(struct tag_seen *ts, struct dkim_str name, const char **err_r)
{
	for (size_t i = 0; i < ts->n; i++) {
		/* tag names are case-sensitive */
		if (ts->names[i].len == name.len && memcmp(ts->names[i].p, name.p, name.len) == 0) {
			*err_r = "duplicate tag";
			return DKIM_E_DUP;
		}
	}
	if (ts->n == ARRAY_LEN(ts->names)) {
		*err_r = "too many tags";
		return DKIM_E_LIMIT;
	}
	ts->names[ts->n++] = name;
	return 1;
}

static bool
tag_is(struct dkim_str name, const char *want)
{
	return name.len == strlen(want) && memcmp(name.p, want, name.len) == 0;
}

/* ------------------------------------------------------------------ */
/* DKIM-Signature                                                      */

static int
sig_canon(struct dkim_sig *sig, struct dkim_str v)
{
	const char *slash = memchr(v.p, '/', v.len);
	struct dkim_str hc = v, bc = {"simple", 6};

	if (slash != NULL) {
		hc.len = (size_t)(slash - v.p);
		bc.p = slash + 1;
		bc.len = v.len - hc.len - 1;
	}
	if (str_is(hc, "simple"))
		sig->hcanon = DKIM_CANON_SIMPLE;
	else if (str_is(hc, "relaxed"))
		sig->hcanon = DKIM_CANON_RELAXED;
	else
		return -1;
	if (str_is(bc, "simple"))
		sig->bcanon = DKIM_CANON_SIMPLE;
	else if (str_is(bc, "relaxed"))
		sig->bcanon = DKIM_CANON_RELAXED;
	else
		return -1;
	return 1;
}

static int
sig_h(struct dkim_sig *sig, struct dkim_str v, const char **err_r)
{
	struct dkim_str e;
	size_t pos = 0;
	bool from = false;

	while (list_next(v, &pos, &e) > 0) {
		if (e.len == 0) {
			*err_r = "empty header name in h=";
			return DKIM_E_SYNTAX;
		}
		for (size_t i = 0; i < e.len; i++) {
			unsigned char c = (unsigned char)e.p[i];
			if (c <= 0x20 || c >= 0x7f) {
				*err_r = "bad header name in h=";
				return DKIM_E_SYNTAX;
			}
		}
		if (sig->nh == DKIM_MAX_H) {
			*err_r = "too many header names in h=";
			return DKIM_E_LIMIT;
		}
		if (str_is(e, "from"))
			from = true;
		sig->h[sig->nh++] = e;
	}
	if (!from) {
		*err_r = "h= does not include From";
		return DKIM_E_VALUE;
	}
	return 1;
}

/* i= is [local-part] "@" domain, where domain is d= or a subdomain of it. */
static bool
i_within_d(struct dkim_str i, struct dkim_str d)
{
	const char *at = NULL;
	struct dkim_str dom;

	for (size_t k = 0; k < i.len; k++)
		if (i.p[k] == '@')
			at = i.p + k;
	if (at == NULL)
		return false;
	dom.p = at + 1;
	dom.len = i.len - (size_t)(dom.p - i.p);
	if (dom.len == d.len)
		return strncasecmp(dom.p, d.p, d.len) == 0;
	return dom.len > d.len && dom.p[dom.len - d.len - 1] == '.' &&
	       strncasecmp(dom.p + dom.len - d.len, d.p, d.len) == 0;
}

static int
sig_tag(struct dkim_sig *sig, struct dkim_str name, struct dkim_str v, unsigned *seen, const char **err_r)
{
	uint64_t n;
	int r;

#define SEEN_V 0x01u
#define SEEN_A 0x02u
#define SEEN_B 0x04u
#define SEEN_BH 0x08u
#define SEEN_D 0x10u
#define SEEN_H 0x20u
#define SEEN_S 0x40u
	if (tag_is(name, "v")) {
		*seen |= SEEN_V;
		if (!(v.len == 1 && v.p[0] == '1')) {
			*err_r = "unsupported version (v= must be 1)";
			return DKIM_E_VALUE;
		}
	} else if (tag_is(name, "a")) {
		*seen |= SEEN_A;
		sig->algo_text = v;
		if (str_is(v, "rsa-sha256"))
			sig->algo = DKIM_ALGO_RSA_SHA256;
		else if (str_is(v, "ed25519-sha256"))
			sig->algo = DKIM_ALGO_ED25519_SHA256;
		else if (str_is(v, "rsa-sha1"))
			sig->algo = DKIM_ALGO_RSA_SHA1;
		else
			sig->algo = DKIM_ALGO_UNKNOWN;
	} else if (tag_is(name, "b")) {
		*seen |= SEEN_B;
		sig->b_value = v;
		r = dkim_base64_decode(v.p, v.len, sig->b, sizeof(sig->b));
		if (r == DKIM_E_LIMIT) {
			*err_r = "b= too long";
			return r;
		}
		if (r <= 0) {
			*err_r = "bad base64 in b=";
			return DKIM_E_SYNTAX;
		}
		sig->b_len = (size_t)r;
	} else if (tag_is(name, "bh")) {
		*seen |= SEEN_BH;
		r = dkim_base64_decode(v.p, v.len, sig->bh, sizeof(sig->bh));
		if (r <= 0) {
			*err_r = r == DKIM_E_LIMIT ? "bh= is not a SHA-256 hash" : "bad base64 in bh=";
			return r == DKIM_E_LIMIT ? DKIM_E_VALUE : DKIM_E_SYNTAX;
		}
		sig->bh_len = (size_t)r;
	} else if (tag_is(name, "c")) {
		if (sig_canon(sig, v) < 0) {
			*err_r = "unknown canonicalization in c=";
			return DKIM_E_VALUE;
		}
	} else if (tag_is(name, "d")) {
		*seen |= SEEN_D;
		sig->d = v;
		if (!valid_domain(v)) {
			*err_r = "bad domain in d=";
			return DKIM_E_SYNTAX;
		}
	} else if (tag_is(name, "h")) {
		*seen |= SEEN_H;
		return sig_h(sig, v, err_r);
	} else if (tag_is(name, "i")) {
		sig->i = v;
		if (v.len == 0 || memchr(v.p, '@', v.len) == NULL) {
			*err_r = "bad identity in i=";
			return DKIM_E_SYNTAX;
		}
	} else if (tag_is(name, "l")) {
		/* RFC 6376 allows 76 digits; anything over 2^63 is as good as unlimited. */
		if (parse_num(v, 18, &n) < 0) {
			*err_r = "bad body length in l=";
			return DKIM_E_SYNTAX;
		}
		sig->has_l = true;
		sig->l = n;
	} else if (tag_is(name, "q")) {
		if (!list_has(v, "dns/txt")) {
			*err_r = "q= does not include dns/txt";
			return DKIM_E_VALUE;
		}
	} else if (tag_is(name, "s")) {
		*seen |= SEEN_S;
		sig->s = v;
		if (!valid_domain(v)) {
			*err_r = "bad selector in s=";
			return DKIM_E_SYNTAX;
		}
	} else if (tag_is(name, "t") || tag_is(name, "x")) {
		if (parse_num(v, 12, &n) < 0) {
			*err_r = "bad timestamp in t= or x=";
			return DKIM_E_SYNTAX;
		}
		if (name.p[0] == 't') {
			sig->has_t = true;
			sig->t = (int64_t)n;
		} else {
			sig->has_x = true;
			sig->x = (int64_t)n;
		}
	} else if (tag_is(name, "z")) {
		sig->z = v;
	}
	/* Unknown tags are ignored (RFC 6376 3.2). */
	return 1;
}

int
dkim_sig_parse(const char *value, size_t len, struct dkim_sig *sig_r, const char **err_r)
{
	static const struct {
		unsigned bit;
		const char *msg;
	} required[] = {
		{SEEN_V, "missing v="}, {SEEN_A, "missing a="}, {SEEN_B, "missing b="}, {SEEN_BH, "missing bh="},
		{SEEN_D, "missing d="}, {SEEN_H, "missing h="}, {SEEN_S, "missing s="},
	};
	struct tag_seen ts = {.n = 0};
	struct dkim_str name, v;
	unsigned seen = 0;
	size_t pos = 0;
	int r;

	memset(sig_r, 0, sizeof(*sig_r));
	*err_r = "";
	while ((r = dkim_tag_next(value, len, &pos, &name, &v, err_r)) > 0) {
		if ((r = tag_seen_add(&ts, name, err_r)) < 0)
			return r;
		if ((r = sig_tag(sig_r, name, v, &seen, err_r)) < 0)
			return r;
	}
	if (r < 0)
		return r;
	for (size_t k = 0; k < ARRAY_LEN(required); k++) {
		if (!(seen & required[k].bit)) {
			*err_r = required[k].msg;
			return DKIM_E_MISSING;
		}
	}
	if (sig_r->i.len > 0 && !i_within_d(sig_r->i, sig_r->d)) {
		*err_r = "i= is not within d=";
		return DKIM_E_VALUE;
	}
	if (sig_r->has_t && sig_r->has_x && sig_r->x < sig_r->t) {
		*err_r = "x= is before t=";
		return DKIM_E_VALUE;
	}
	return 1;
}

/* ------------------------------------------------------------------ */
/* Key record                                                          */

int
dkim_key_parse(const char *txt, size_t len, struct dkim_key *key_r, const char **err_r)
{
	struct tag_seen ts = {.n = 0};
	struct dkim_str name, v;
	bool have_p = false, first = true;
	size_t pos = 0;
	int r;

	memset(key_r, 0, sizeof(*key_r));
	key_r->type = DKIM_KEY_RSA;
	key_r->hash_sha256 = true;
	key_r->for_email = true;
	*err_r = "";
	while ((r = dkim_tag_next(txt, len, &pos, &name, &v, err_r)) > 0) {
		if ((r = tag_seen_add(&ts, name, err_r)) < 0)
			return r;
		if (tag_is(name, "v")) {
			if (!first || !str_is(v, "DKIM1")) {
				*err_r = "v= is not DKIM1 or not the first tag";
				return DKIM_E_VALUE;
			}
		} else if (tag_is(name, "h")) {
			key_r->hash_sha256 = list_has(v, "sha256");
		} else if (tag_is(name, "k")) {
			key_r->type = str_is(v, "rsa") ? DKIM_KEY_RSA : str_is(v, "ed25519") ? DKIM_KEY_ED25519
											 : DKIM_KEY_UNKNOWN;
		} else if (tag_is(name, "p")) {
			have_p = true;
			r = dkim_base64_decode(v.p, v.len, key_r->p, sizeof(key_r->p));
			if (r < 0) {
				*err_r = r == DKIM_E_LIMIT ? "p= too long" : "bad base64 in p=";
				return r;
			}
			key_r->p_len = (size_t)r;
			key_r->revoked = r == 0;
		} else if (tag_is(name, "s")) {
			key_r->for_email = list_has(v, "*") || list_has(v, "email");
		} else if (tag_is(name, "t")) {
			key_r->testing = list_has(v, "y");
			key_r->strict_i = list_has(v, "s");
		}
		first = false;
	}
	if (r < 0)
		return r;
	if (!have_p) {
		*err_r = "missing p=";
		return DKIM_E_MISSING;
	}
	return 1;
}

/* ------------------------------------------------------------------ */
/* Header section                                                      */

void
dkim_hdrs_init(struct dkim_hdrs *h, size_t max_bytes, size_t max_fields)
{
	memset(h, 0, sizeof(*h));
	mbuf_init(&h->raw, max_bytes);
	h->max_fields = max_fields;
}

void
dkim_hdrs_clear(struct dkim_hdrs *h)
{
	mbuf_clear(&h->raw);
	free(h->fields);
	memset(h, 0, sizeof(*h));
}

/* A line ends at raw[end) (its line end excluded). 0, or DKIM_E_LIMIT. */
static int
hdrs_line(struct dkim_hdrs *h, size_t end)
{
	const char *line = h->raw.data + h->line_start;
	size_t len = end - h->line_start;
	struct dkim_field *f;
	size_t colon;

	if (len == 0) {
		h->done = true;
		return 0;
	}
	if (is_wsp(line[0])) {
		/* Folding: the field above grows; a continuation before any field is dropped. */
		if (h->nfields > 0) {
			f = &h->fields[h->nfields - 1];
			f->len = end - f->off;
		}
		return 0;
	}
	if (h->nfields == h->max_fields)
		return DKIM_E_LIMIT;
	if (h->nfields == h->cap) {
		h->cap = h->cap ? h->cap * 2 : 32;
		if (h->cap > h->max_fields)
			h->cap = h->max_fields;
		h->fields = xrealloc(h->fields, h->cap * sizeof(*h->fields));
	}
	f = &h->fields[h->nfields++];
	f->off = h->line_start;
	f->len = len;
	for (colon = 0; colon < len && line[colon] != ':'; colon++)
		;
	f->name_len = 0;
	if (colon < len) {
		f->name_len = colon;
		while (f->name_len > 0 && is_wsp(line[f->name_len - 1]))
			f->name_len--;
	}
	return 0;
}

ssize_t
dkim_hdrs_feed(struct dkim_hdrs *h, const char *p, size_t n)
{
	size_t i = 0;

	while (i < n && !h->done) {
		const char *nl = memchr(p + i, '\n', n - i);
		size_t seg = nl != NULL ? (size_t)(nl - (p + i)) + 1 : n - i;
		size_t end;

		if (mbuf_add(&h->raw, p + i, seg) < 0)
			return DKIM_E_LIMIT;
		i += seg;
		if (nl == NULL)
			break;
		end = h->raw.len - 1;
		if (end > h->line_start && h->raw.data[end - 1] == '\r')
			end--;
		if (hdrs_line(h, end) < 0)
			return DKIM_E_LIMIT;
		h->line_start = h->raw.len;
	}
	return h->done ? (ssize_t)i : 0;
}

void
dkim_hdrs_finish(struct dkim_hdrs *h)
{
	size_t end = h->raw.len;

	if (h->done)
		return;
	if (end > h->line_start) {
		if (h->raw.data[end - 1] == '\r')
			end--;
		(void)hdrs_line(h, end); /* over max_fields: the last line is left out */
	}
	h->done = true;
}

const char *
dkim_hdrs_field(const struct dkim_hdrs *h, size_t i)
{
	return h->raw.data + h->fields[i].off;
}

bool
dkim_hdrs_is(const struct dkim_hdrs *h, size_t i, const char *name, size_t name_len)
{
	const struct dkim_field *f = &h->fields[i];

	return f->name_len == name_len && name_len > 0 &&
	       strncasecmp(h->raw.data + f->off, name, name_len) == 0;
}

/* ------------------------------------------------------------------ */
/* Canonicalization                                                    */

int
dkim_canon_header(enum dkim_canon c, const char *f, size_t len, struct mbuf *out)
{
	size_t colon, name_end, i;
	bool wsp = false, any = false;
	char tmp[256];
	size_t tn = 0;

	if (c == DKIM_CANON_SIMPLE)
		return mbuf_add(out, f, len);
	for (colon = 0; colon < len && f[colon] != ':'; colon++)
		;
	name_end = colon;
	while (name_end > 0 && is_ws(f[name_end - 1]))
		name_end--;
	for (i = 0; i < name_end; i++) {
		tmp[tn++] = (char)tolower((unsigned char)f[i]);
		if (tn == sizeof(tmp)) {
			if (mbuf_add(out, tmp, tn) < 0)
				return -1;
			tn = 0;
		}
	}
	if (colon == len)
		return tn > 0 ? mbuf_add(out, tmp, tn) : 0;
	tmp[tn++] = ':';
	for (i = colon + 1; i < len; i++) {
		char ch = f[i];
		if (ch == '\r' || ch == '\n')
			continue; /* unfold */
		if (is_wsp(ch)) {
			wsp = true;
			continue;
		}
		if (tn + 2 > sizeof(tmp)) {
			if (mbuf_add(out, tmp, tn) < 0)
				return -1;
			tn = 0;
		}
		if (wsp && any)
			tmp[tn++] = ' ';
		wsp = false;
		any = true;
		tmp[tn++] = ch;
	}
	return mbuf_add(out, tmp, tn);
}

static void
body_flush(struct dkim_body *b)
{
	if (b->buflen > 0)
		EVP_DigestUpdate(b->md, b->buf, b->buflen);
	b->buflen = 0;
}

static void
body_out(struct dkim_body *b, const char *p, size_t n)
{
	b->canon_len += n;
	if (b->copy != NULL)
		(void)mbuf_add(b->copy, p, n);
	if (b->has_limit) {
		if (b->hashed >= b->limit)
			return;
		if (n > b->limit - b->hashed)
			n = (size_t)(b->limit - b->hashed);
	}
	b->hashed += n;
	while (n > 0) {
		size_t k = sizeof(b->buf) - b->buflen;
		if (k > n)
			k = n;
		memcpy(b->buf + b->buflen, p, k);
		b->buflen += k;
		p += k;
		n -= k;
		if (b->buflen == sizeof(b->buf))
			body_flush(b);
	}
}

/* A byte that is line content (not a line end, not relaxed whitespace). */
static void
body_char(struct dkim_body *b, char c)
{
	if (!b->in_line) {
		/* Held-back empty lines were not trailing after all. */
		for (; b->empty_lines > 0; b->empty_lines--)
			body_out(b, "\r\n", 2);
		b->in_line = true;
	}
	if (b->wsp) {
		body_out(b, " ", 1);
		b->wsp = false;
	}
	body_out(b, &c, 1);
}

static void
body_eol(struct dkim_body *b)
{
	if (b->in_line)
		body_out(b, "\r\n", 2);
	else
		b->empty_lines++;
	b->in_line = false;
	b->wsp = false; /* relaxed: trailing whitespace goes */
}

int
dkim_body_init(struct dkim_body *b, enum dkim_canon c, int64_t limit)
{
	memset(b, 0, sizeof(*b));
	b->canon = c;
	b->has_limit = limit >= 0;
	b->limit = limit >= 0 ? (uint64_t)limit : 0;
	b->md = EVP_MD_CTX_new();
	if (b->md == NULL || EVP_DigestInit_ex(b->md, EVP_sha256(), NULL) != 1) {
		EVP_MD_CTX_free(b->md);
		b->md = NULL;
		return -1;
	}
	return 0;
}

void
dkim_body_update(struct dkim_body *b, const char *p, size_t n)
{
	bool relaxed = b->canon == DKIM_CANON_RELAXED;

	for (size_t i = 0; i < n; i++) {
		char c = p[i];

		if (b->in_line && !b->cr && !b->wsp) {
			/* Fast path: a run of plain line content goes out as it is. */
			size_t j = i;
			while (j < n && p[j] != '\r' && p[j] != '\n' && !(relaxed && is_wsp(p[j])))
				j++;
			if (j > i) {
				body_out(b, p + i, j - i);
				i = j - 1;
				continue;
			}
		}
		if (b->cr) {
			b->cr = false;
			if (c == '\n') {
				body_eol(b);
				continue;
			}
			body_char(b, '\r'); /* a bare CR is data */
		}
		if (c == '\r')
			b->cr = true;
		else if (c == '\n')
			body_eol(b);
		else if (relaxed && is_wsp(c))
			b->wsp = true;
		else
			body_char(b, c);
	}
}

int
dkim_body_final(struct dkim_body *b, uint8_t out[DKIM_HASH_LEN], uint64_t *canon_len_r)
{
	unsigned int n = 0;

	if (b->cr) {
		b->cr = false;
		body_char(b, '\r');
	}
	if (b->in_line) {
		/* A body not ending in CRLF gets one (both canonicalizations). */
		b->wsp = false;
		body_out(b, "\r\n", 2);
		b->in_line = false;
	}
	/* simple: an empty body is one CRLF; relaxed: nothing (RFC 6376 errata 1384). */
	if (b->canon == DKIM_CANON_SIMPLE && b->canon_len == 0)
		body_out(b, "\r\n", 2);
	body_flush(b);
	if (canon_len_r != NULL)
		*canon_len_r = b->canon_len;
	if (b->md == NULL || EVP_DigestFinal_ex(b->md, out, &n) != 1 || n != DKIM_HASH_LEN)
		return -1;
	return 0;
}

void
dkim_body_clear(struct dkim_body *b)
{
	EVP_MD_CTX_free(b->md);
	b->md = NULL;
}

int
dkim_header_data(const struct dkim_hdrs *h, size_t sig_field, const struct dkim_sig *sig, struct mbuf *out)
{
	const char *sf = dkim_hdrs_field(h, sig_field);
	size_t sflen = h->fields[sig_field].len, boff, blen;
	bool *used = xcalloc(h->nfields ? h->nfields : 1, sizeof(bool));
	struct mbuf tmp;
	int r = -1;

	for (size_t k = 0; k < sig->nh; k++) {
		for (size_t j = h->nfields; j-- > 0;) {
			if (used[j] || !dkim_hdrs_is(h, j, sig->h[k].p, sig->h[k].len))
				continue;
			used[j] = true;
			if (dkim_canon_header(sig->hcanon, dkim_hdrs_field(h, j), h->fields[j].len, out) < 0 ||
			    mbuf_add(out, "\r\n", 2) < 0)
				goto out;
			break;
		}
	}
	/* The signature field itself, with the b= value removed. */
	if (sig->b_value.p < sf || sig->b_value.p + sig->b_value.len > sf + sflen)
		goto out;
	boff = (size_t)(sig->b_value.p - sf);
	blen = sig->b_value.len;
	mbuf_init(&tmp, sflen + 1);
	mbuf_add(&tmp, sf, boff);
	mbuf_add(&tmp, sf + boff + blen, sflen - boff - blen);
	r = dkim_canon_header(sig->hcanon, tmp.data, tmp.len, out);
	mbuf_clear(&tmp);
out:
	free(used);
	return r;
}

/* ------------------------------------------------------------------ */
/* The check                                                           */

static EVP_PKEY *
load_key(const struct dkim_key *key)
{
	const unsigned char *p = key->p;
	EVP_PKEY *pk;

	if (key->type == DKIM_KEY_ED25519) {
		if (key->p_len != 32)
			return NULL;
		return EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, NULL, key->p, key->p_len);
	}
	/* RFC 6376 says SubjectPublicKeyInfo; some publish a bare PKCS#1 RSAPublicKey. */
	pk = d2i_PUBKEY(NULL, &p, (long)key->p_len);
	if (pk == NULL) {
		p = key->p;
		pk = d2i_PublicKey(EVP_PKEY_RSA, NULL, &p, (long)key->p_len);
	}
	if (pk != NULL && EVP_PKEY_get_base_id(pk) != EVP_PKEY_RSA) {
		EVP_PKEY_free(pk);
		pk = NULL;
	}
	return pk;
}

/* The key and flags, before any hashing is looked at. DKIM_PASS when usable. */
static enum dkim_status
check_params(const struct dkim_sig *sig, const struct dkim_key *key, int64_t now, const char **reason_r)
{
	if (sig->algo == DKIM_ALGO_RSA_SHA1) {
		*reason_r = "rsa-sha1 is not accepted (RFC 8301)";
		return DKIM_POLICY;
	}
	if (sig->algo == DKIM_ALGO_UNKNOWN) {
		*reason_r = "unknown signature algorithm";
		return DKIM_PERMERROR;
	}
	if (sig->bh_len != DKIM_HASH_LEN) {
		*reason_r = "bh= is not a SHA-256 hash";
		return DKIM_PERMERROR;
	}
	if (sig->has_x && now > sig->x) {
		*reason_r = "signature expired";
		return DKIM_FAIL;
	}
	if (key->revoked) {
		*reason_r = "key revoked";
		return DKIM_PERMERROR;
	}
	if (!key->for_email) {
		*reason_r = "key not for email (s=)";
		return DKIM_PERMERROR;
	}
	if (!key->hash_sha256) {
		*reason_r = "key does not allow sha256 (h=)";
		return DKIM_PERMERROR;
	}
	if ((key->type == DKIM_KEY_RSA) != (sig->algo == DKIM_ALGO_RSA_SHA256) || key->type == DKIM_KEY_UNKNOWN) {
		*reason_r = "key type does not match the algorithm";
		return DKIM_PERMERROR;
	}
	if (key->strict_i && sig->i.len > 0) {
		const char *at = memrchr(sig->i.p, '@', sig->i.len);
		size_t dl = sig->i.len - (size_t)(at - sig->i.p) - 1;
		if (dl != sig->d.len || strncasecmp(at + 1, sig->d.p, dl) != 0) {
			*reason_r = "key requires i= in d= exactly (t=s)";
			return DKIM_PERMERROR;
		}
	}
	return DKIM_PASS;
}

enum dkim_status
dkim_check(const struct dkim_sig *sig, const struct dkim_key *key, const char *hdata, size_t hlen,
	   const uint8_t bh[DKIM_HASH_LEN], uint64_t canon_len, int64_t now, const char **reason_r, int *bits_r)
{
	enum dkim_status st;
	EVP_PKEY *pk = NULL;
	EVP_MD_CTX *ctx = NULL;
	uint8_t digest[DKIM_HASH_LEN];
	int bits = 0, ok = 0;

	if (bits_r != NULL)
		*bits_r = 0;
	st = check_params(sig, key, now, reason_r);
	if (st != DKIM_PASS)
		return st;
	pk = load_key(key);
	if (pk == NULL) {
		ERR_clear_error();
		*reason_r = "key does not parse";
		return DKIM_PERMERROR;
	}
	bits = EVP_PKEY_get_bits(pk);
	if (bits_r != NULL)
		*bits_r = bits;
	if (key->type == DKIM_KEY_RSA && bits < 1024) {
		*reason_r = "RSA key under 1024 bits (RFC 8301)";
		st = DKIM_PERMERROR;
		goto out;
	}
	if (key->type == DKIM_KEY_RSA && bits > 8192) {
		*reason_r = "RSA key over 8192 bits";
		st = DKIM_PERMERROR;
		goto out;
	}
	if (sig->has_l && sig->l > canon_len) {
		*reason_r = "l= is beyond the end of the body";
		st = DKIM_FAIL;
		goto out;
	}
	if (CRYPTO_memcmp(bh, sig->bh, DKIM_HASH_LEN) != 0) {
		*reason_r = "body hash does not match";
		st = DKIM_FAIL;
		goto out;
	}
	ctx = EVP_MD_CTX_new();
	if (ctx == NULL) {
		*reason_r = "out of memory";
		st = DKIM_TEMPERROR;
		goto out;
	}
	if (key->type == DKIM_KEY_RSA) {
		ok = EVP_DigestVerifyInit(ctx, NULL, EVP_sha256(), NULL, pk) == 1 &&
		     EVP_DigestVerify(ctx, sig->b, sig->b_len, (const unsigned char *)hdata, hlen) == 1;
	} else {
		/* RFC 8463 3: Ed25519 signs the SHA-256 of the header data. */
		ok = EVP_Digest(hdata, hlen, digest, NULL, EVP_sha256(), NULL) == 1 &&
		     EVP_DigestVerifyInit(ctx, NULL, NULL, NULL, pk) == 1 &&
		     EVP_DigestVerify(ctx, sig->b, sig->b_len, digest, sizeof(digest)) == 1;
	}
	if (ok) {
		*reason_r = "";
		st = DKIM_PASS;
	} else {
		*reason_r = "signature does not verify";
		st = DKIM_FAIL;
	}
out:
	ERR_clear_error();
	EVP_MD_CTX_free(ctx);
	EVP_PKEY_free(pk);
	return st;
}

/* ------------------------------------------------------------------ */
/* Asynchronous verifier                                               */

void
dkim_limits_default(struct dkim_limits *lim)
{
	lim->max_signatures = 5;
	lim->max_hash_bytes = 32u << 20;
	lim->max_header_bytes = 256u << 10;
	lim->max_header_fields = 1000;
	lim->read_chunk = 256u << 10;
}

struct dkim_vsig {
	struct dkim_verify *v;
	size_t field;
	struct dkim_sig sig;
	int body;              /* index into dkim_verify.bodies, -1 none */
	struct dns_query *q;
	bool have_key;
	struct dkim_key key;
	enum dkim_status st;   /* DKIM_NONE until decided */
	const char *reason;
	char *domain, *selector, *identity, *algo, *b_prefix;
};

struct dkim_vbody {
	struct dkim_body b;
	uint8_t hash[DKIM_HASH_LEN];
	uint64_t canon_len;
	bool ok; /* hashed to the end, or to its l= */
};

struct dkim_verify {
	struct event_base *base;
	struct dns *dns;
	int fd;
	uint64_t off;
	struct dkim_limits lim;
	int64_t now;
	dkim_verify_fn *cb;
	void *arg;
	struct event *ev;
	char *buf;
	struct dkim_hdrs hdrs;
	struct dkim_vsig *sigs;
	size_t nsigs;
	struct dkim_vbody *bodies;
	size_t nbodies;
	uint64_t nread;
	size_t pending; /* lookups in flight */
	bool eof, too_big, hashed, reported, in_cb, free_in_cb;
	char *err;
	struct dkim_result *res;
};

static void verify_event(evutil_socket_t fd, short what, void *arg);

static char *
str_dup(struct dkim_str s)
{
	return s.len > 0 ? xstrndup(s.p, s.len) : xstrdup("");
}

static char *
str_dup_lower(struct dkim_str s)
{
	char *r = str_dup(s);

	for (char *c = r; *c; c++)
		*c = (char)tolower((unsigned char)*c);
	return r;
}

/* The first 8 base64 characters of b= (RFC 6008). */
static char *
b_prefix(struct dkim_str b)
{
	char out[9];
	size_t n = 0;

	for (size_t i = 0; i < b.len && n < 8; i++)
		if (!is_ws(b.p[i]))
			out[n++] = b.p[i];
	out[n] = '\0';
	return xstrdup(out);
}

/* A hasher for (canonicalization, l=), shared between signatures. */
static int
vbody_for(struct dkim_verify *v, const struct dkim_sig *sig)
{
	int64_t limit = sig->has_l && sig->l <= INT64_MAX ? (int64_t)sig->l : -1;

	for (size_t k = 0; k < v->nbodies; k++) {
		struct dkim_body *b = &v->bodies[k].b;
		if (b->canon == sig->bcanon && b->has_limit == (limit >= 0) && (limit < 0 || b->limit == (uint64_t)limit))
			return (int)k;
	}
	if (dkim_body_init(&v->bodies[v->nbodies].b, sig->bcanon, limit) < 0)
		return -1;
	return (int)v->nbodies++;
}

static void
key_done(const struct dns_result *r, void *arg)
{
	struct dkim_vsig *s = arg;
	struct dkim_verify *v = s->v;
	const char *err = "no key record";

	s->q = NULL;
	v->pending--;
	switch (r->status) {
	case DNS_OK:
		for (size_t k = 0; k < r->ntxt; k++) {
			/* Several records: the first that parses as a key (RFC 6376 3.6.2.2). */
			if (dkim_key_parse(r->txt[k].data, r->txt[k].len, &s->key, &err) > 0) {
				s->have_key = true;
				break;
			}
		}
		if (!s->have_key) {
			s->st = DKIM_PERMERROR;
			s->reason = err;
		}
		break;
	case DNS_NXDOMAIN:
	case DNS_NODATA:
		s->st = DKIM_PERMERROR;
		s->reason = "no key record";
		break;
	case DNS_PERMERROR:
		s->st = DKIM_PERMERROR;
		s->reason = "key name is not a valid DNS name";
		break;
	default:
		s->st = DKIM_TEMPERROR;
		s->reason = "key lookup failed";
		break;
	}
	if (v->pending == 0 && v->hashed)
		event_active(v->ev, EV_TIMEOUT, 0);
}

/* The header section is in: parse the signatures and start their lookups. */
static void
setup_sigs(struct dkim_verify *v)
{
	const struct dkim_hdrs *h = &v->hdrs;
	size_t n = 0;

	for (size_t k = 0; k < h->nfields; k++)
		if (dkim_hdrs_is(h, k, "DKIM-Signature", 14))
			n++;
	if (n == 0)
		return;
	v->sigs = xcalloc(n, sizeof(*v->sigs));
	v->bodies = xcalloc(v->lim.max_signatures ? v->lim.max_signatures : 1, sizeof(*v->bodies));
	for (size_t k = 0; k < h->nfields; k++) {
		struct dkim_vsig *s;
		const char *f = dkim_hdrs_field(h, k), *err = "";
		size_t vo = h->fields[k].name_len;

		if (!dkim_hdrs_is(h, k, "DKIM-Signature", 14))
			continue;
		s = &v->sigs[v->nsigs++];
		s->v = v;
		s->field = k;
		s->body = -1;
		while (f[vo] != ':')
			vo++;
		vo++;
		if (dkim_sig_parse(f + vo, h->fields[k].len - vo, &s->sig, &err) < 0) {
			s->st = DKIM_PERMERROR;
			s->reason = err;
		}
		s->domain = str_dup_lower(s->sig.d);
		s->selector = str_dup(s->sig.s);
		s->identity = s->sig.i.len > 0 ? str_dup(s->sig.i) : xasprintf("@%s", s->domain);
		s->algo = str_dup(s->sig.algo_text);
		s->b_prefix = b_prefix(s->sig.b_value);
		if (s->st != DKIM_NONE)
			continue;
		if (v->nsigs > v->lim.max_signatures) {
			s->st = DKIM_NEUTRAL;
			s->reason = "over the limit of signatures checked";
			continue;
		}
		s->body = vbody_for(v, &s->sig);
		if (s->body < 0) {
			s->st = DKIM_TEMPERROR;
			s->reason = "cannot hash";
			continue;
		}
		char *name = xasprintf("%s._domainkey.%s", s->selector, s->domain);
		v->pending++;
		s->q = dns_lookup(v->dns, name, DNS_T_TXT, key_done, s);
		free(name);
	}
}

static void
feed_bodies(struct dkim_verify *v, const char *p, size_t n)
{
	for (size_t k = 0; k < v->nbodies; k++)
		dkim_body_update(&v->bodies[k].b, p, n);
}

/* Every signature's status, once the body is hashed and the keys are in. */
static void
decide(struct dkim_verify *v)
{
	struct mbuf hd;

	mbuf_init(&hd, v->lim.max_header_bytes + 4096);
	for (size_t k = 0; k < v->nsigs; k++) {
		struct dkim_vsig *s = &v->sigs[k];
		struct dkim_vbody *b;
		int bits = 0;

		if (s->st != DKIM_NONE)
			continue;
		b = &v->bodies[s->body];
		if (!b->ok) {
			s->st = DKIM_POLICY;
			s->reason = "message too large to verify";
			continue;
		}
		mbuf_reset(&hd);
		if (dkim_header_data(&v->hdrs, s->field, &s->sig, &hd) < 0) {
			s->st = DKIM_PERMERROR;
			s->reason = "signed header data too large";
			continue;
		}
		s->st = dkim_check(&s->sig, &s->key, hd.data, hd.len, b->hash, b->canon_len, v->now, &s->reason, &bits);
		v->res[k].key_bits = bits;
	}
	mbuf_clear(&hd);
}

static void
report(struct dkim_verify *v)
{
	v->reported = true;
	v->res = xcalloc(v->nsigs ? v->nsigs : 1, sizeof(*v->res));
	if (v->err == NULL)
		decide(v);
	for (size_t k = 0; k < v->nsigs; k++) {
		struct dkim_vsig *s = &v->sigs[k];
		struct dkim_result *r = &v->res[k];

		r->status = s->st;
		r->domain = s->domain;
		r->selector = s->selector;
		r->identity = s->identity;
		r->algo = s->algo;
		r->b_prefix = s->b_prefix;
		r->reason = s->reason != NULL ? s->reason : "";
		r->testing = s->have_key && s->key.testing;
		if (r->key_bits == 0 && s->have_key && s->key.type == DKIM_KEY_ED25519)
			r->key_bits = 256;
	}
	v->in_cb = true;
	v->cb(v->arg, v->res, v->err != NULL ? 0 : v->nsigs, v->err);
	v->in_cb = false;
}

/* Read one slice of the message and hash it. */
static void
read_step(struct dkim_verify *v)
{
	ssize_t r, k;

	do
		r = pread(v->fd, v->buf, v->lim.read_chunk, (off_t)v->off);
	while (r < 0 && errno == EINTR);
	if (r < 0) {
		v->err = xasprintf("reading message: %s", strerror(errno));
		v->eof = true;
		return;
	}
	if (r == 0) {
		v->eof = true;
		return;
	}
	v->off += (uint64_t)r;
	if (v->nread + (uint64_t)r > v->lim.max_hash_bytes) {
		r = (ssize_t)(v->lim.max_hash_bytes - v->nread);
		v->too_big = true;
		v->eof = true;
	}
	v->nread += (uint64_t)r;
	k = 0;
	if (!v->hdrs.done) {
		k = dkim_hdrs_feed(&v->hdrs, v->buf, (size_t)r);
		if (k < 0) {
			v->err = xstrdup("header section over the limit");
			v->eof = true;
			return;
		}
		if (!v->hdrs.done)
			return;
		setup_sigs(v);
		if (v->nsigs == 0) {
			v->eof = true; /* nothing to verify: no need to read the body */
			return;
		}
	}
	feed_bodies(v, v->buf + k, (size_t)r - (size_t)k);
}

static void
finish_bodies(struct dkim_verify *v)
{
	for (size_t k = 0; k < v->nbodies; k++) {
		struct dkim_vbody *b = &v->bodies[k];
		bool complete = !v->too_big || (b->b.has_limit && b->b.hashed >= b->b.limit);

		b->ok = complete && dkim_body_final(&b->b, b->hash, &b->canon_len) == 0;
	}
	v->hashed = true;
}

static void
verify_event(evutil_socket_t fd, short what, void *arg)
{
	struct dkim_verify *v = arg;

	if (!v->eof) {
		read_step(v);
		if (!v->eof) {
			event_active(v->ev, EV_TIMEOUT, 0);
			return;
		}
		if (!v->hdrs.done && v->err == NULL) {
			dkim_hdrs_finish(&v->hdrs);
			setup_sigs(v);
		}
		finish_bodies(v);
	}
	if (v->reported || (v->pending > 0 && v->err == NULL))
		return;
	report(v);
	if (v->free_in_cb) {
		v->free_in_cb = false;
		dkim_verify_free(&v);
	}
}

struct dkim_verify *
dkim_verify_start(struct event_base *base, struct dns *d, int fd, uint64_t skip, const struct dkim_limits *lim,
		  int64_t now, dkim_verify_fn *cb, void *arg)
{
	struct dkim_verify *v;
	int fd2 = dup(fd);

	if (fd2 < 0)
		return NULL;
	v = xcalloc(1, sizeof(*v));
	v->base = base;
	v->dns = d;
	v->fd = fd2;
	v->off = skip;
	if (lim != NULL)
		v->lim = *lim;
	else
		dkim_limits_default(&v->lim);
	if (v->lim.read_chunk == 0)
		v->lim.read_chunk = 256u << 10;
	v->now = now != 0 ? now : (int64_t)time(NULL);
	v->cb = cb;
	v->arg = arg;
	v->buf = xmalloc(v->lim.read_chunk);
	dkim_hdrs_init(&v->hdrs, v->lim.max_header_bytes, v->lim.max_header_fields);
	v->ev = event_new(base, -1, 0, verify_event, v);
	if (v->ev == NULL) {
		fprintf(stderr, "mox: dkim: event_new failed\n");
		abort();
	}
	event_active(v->ev, EV_TIMEOUT, 0);
	return v;
}

void
dkim_verify_free(struct dkim_verify **vp)
{
	struct dkim_verify *v = vp != NULL ? *vp : NULL;

	if (v == NULL)
		return;
	*vp = NULL;
	if (v->in_cb) {
		v->free_in_cb = true;
		return;
	}
	for (size_t k = 0; k < v->nsigs; k++) {
		struct dkim_vsig *s = &v->sigs[k];
		dns_cancel(s->q);
		free(s->domain);
		free(s->selector);
		free(s->identity);
		free(s->algo);
		free(s->b_prefix);
	}
	for (size_t k = 0; k < v->nbodies; k++)
		dkim_body_clear(&v->bodies[k].b);
	if (v->ev != NULL)
		event_free(v->ev);
	close(v->fd);
	dkim_hdrs_clear(&v->hdrs);
	free(v->sigs);
	free(v->bodies);
	free(v->res);
	free(v->err);
	free(v->buf);
	free(v);
}

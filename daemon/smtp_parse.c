/*
 * smtp_parse: SMTP command framing and parsing, the DATA reader, replies.
 *
 * Design note. Every parser here works on bytes it is handed and keeps no
 * state outside the structs it is given. Command parsing is a recursive
 * descent over one line; what a line decodes to (unquoted localparts, xtext)
 * is written to the bounded scratch in struct smtp_cmd, everything else is
 * a slice of the line. Syntax the RFCs allow but nobody should rely on is
 * accepted and flagged rather than refused where real clients send it; the
 * header lists each leniency.
 *
 * UTF-8: a MAIL line may carry SMTPUTF8 after the path, so non-ASCII is
 * checked for validity while parsing and checked against SMTPUTF8 only
 * once the whole line is parsed.
 */
#include "daemon/smtp_parse.h"

#include <arpa/inet.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

/* ------------------------------------------------------------------ */
/* Character classes                                                   */

static bool
is_alpha(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static bool
is_digit(unsigned char c)
{
	return c >= '0' && c <= '9';
}

static bool
is_alnum(unsigned char c)
{
	return is_alpha(c) || is_digit(c);
}

static int
hexval(unsigned char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

/* RFC 5322 atext, ASCII part. */
static bool
is_atext(unsigned char c)
{
	return is_alnum(c) || (c != 0 && strchr("!#$%&'*+-/=?^_`{|}~", c) != NULL);
}

static unsigned char
to_lower(unsigned char c)
{
	return (c >= 'A' && c <= 'Z') ? (unsigned char)(c + 32) : c;
}

static bool
mem_ieq(const char *a, size_t alen, const char *b)
{
	size_t blen = strlen(b);

	if (alen != blen)
		return false;
	for (size_t i = 0; i < alen; i++)
		if (to_lower((unsigned char)a[i]) != to_lower((unsigned char)b[i]))
			return false;
	return true;
}

/*
 * Length of the valid UTF-8 sequence for a non-ASCII character at p (2-4),
 * or 0 when it is not one (overlong forms, surrogates and values above
 * U+10FFFF are invalid).
 */
static size_t
utf8_seq(const unsigned char *p, size_t len)
{
	unsigned char c = p[0];
	size_t n;
	unsigned cp;

	if (c >= 0xc2 && c <= 0xdf) {
		n = 2;
		cp = c & 0x1f;
	} else if (c >= 0xe0 && c <= 0xef) {
		n = 3;
		cp = c & 0x0f;
	} else if (c >= 0xf0 && c <= 0xf4) {
		n = 4;
		cp = c & 0x07;
	} else {
		return 0;
	}
	if (len < n)
		return 0;
	for (size_t i = 1; i < n; i++) {
		if ((p[i] & 0xc0) != 0x80)
			return 0;
		cp = (cp << 6) | (p[i] & 0x3f);
	}
	if ((n == 3 && cp < 0x800) || (n == 4 && cp < 0x10000) ||
	    (cp >= 0xd800 && cp <= 0xdfff) || cp > 0x10ffff)
		return 0;
	return n;
}

static bool
utf8_valid(const char *s, size_t len)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t i = 0;

	while (i < len) {
		size_t n;

		if (p[i] < 0x80) {
			i++;
			continue;
		}
		n = utf8_seq(p + i, len - i);
		if (n == 0)
			return false;
		i += n;
	}
	return true;
}

/* ------------------------------------------------------------------ */
/* Limits and line framing                                             */

void
smtp_limits_default(struct smtp_limits *lim)
{
	lim->max_line = 512;
	lim->max_auth_line = 12288;
}

static bool
starts_auth(const char *buf, size_t len)
{
	return len >= 5 && mem_ieq(buf, 4, "AUTH") && buf[4] == ' ';
}

int
smtp_line_find(const char *buf, size_t len, const struct smtp_limits *lim,
	       bool auth_cont, struct smtp_line *line_r)
{
	const char *lf;
	size_t max, linelen;

	memset(line_r, 0, sizeof(*line_r));
	max = lim->max_line;
	if (max > SMTP_CMD_MAX_LINE)
		max = SMTP_CMD_MAX_LINE;
	if (auth_cont || starts_auth(buf, len))
		max = lim->max_auth_line;
	if (max > INT_MAX)
		max = INT_MAX; /* the length is returned as an int */

	lf = memchr(buf, '\n', len);
	if (lf == NULL) {
		/* The line end still to come makes the line at least len+1. */
		if (len >= max) {
			line_r->skip = len;
			return SMTP_LINE_TOO_LONG;
		}
		return SMTP_LINE_NEED_MORE;
	}
	linelen = (size_t)(lf - buf) + 1;
	if (linelen > max) {
		line_r->complete = true;
		line_r->skip = linelen;
		return SMTP_LINE_TOO_LONG;
	}
	line_r->text.p = buf;
	line_r->text.len = linelen - 1;
	if (linelen >= 2 && buf[linelen - 2] == '\r')
		line_r->text.len--;
	else
		line_r->bare_lf = true;
	return (int)linelen;
}

/* ------------------------------------------------------------------ */
/* Command parsing: state and errors                                   */

struct pstate {
	const char *s;
	size_t len;
	size_t pos;
	struct smtp_cmd *c;
	bool saw_utf8; /* non-ASCII seen in an address or parameter value */
};

static int fail(struct smtp_cmd *c, int code, const char *ecode,
		const char *fmt, ...) MOX_PRINTF(4, 5);

/* Record an error; the message must hold only printable ASCII. */
static int
fail(struct smtp_cmd *c, int code, const char *ecode, const char *fmt, ...)
{
	va_list ap;

	c->code = code;
	c->ecode = ecode;
	va_start(ap, fmt);
	if (vsnprintf(c->msg, sizeof(c->msg), fmt, ap) < 0)
		c->msg[0] = '\0';
	va_end(ap);
	return -1;
}

/* Copy a keyword (already restricted to ALPHA/DIGIT/'-') for a message. */
static void
kw_copy(char *dst, size_t dstsize, const char *p, size_t len)
{
	size_t n = len < dstsize - 1 ? len : dstsize - 1;

	memcpy(dst, p, n);
	dst[n] = '\0';
}

/* Reserve n bytes plus a NUL in the scratch; NULL when full. */
static char *
scratch_alloc(struct smtp_cmd *c, size_t n)
{
	char *p;

	if (n >= sizeof(c->scratch) - c->scratch_used)
		return NULL;
	p = c->scratch + c->scratch_used;
	c->scratch_used += n + 1;
	p[n] = '\0';
	return p;
}

static int
fail_scratch(struct smtp_cmd *c)
{
	return fail(c, 500, "5.5.2", "line too long");
}

static bool
at_end(const struct pstate *ps)
{
	return ps->pos >= ps->len;
}

static unsigned char
peek(const struct pstate *ps)
{
	return ps->pos < ps->len ? (unsigned char)ps->s[ps->pos] : 0;
}

/* ------------------------------------------------------------------ */
/* Domains and address literals                                        */

#define DOM_ALLOW_UNDERSCORE 0x1u
#define DOM_ALLOW_UTF8       0x2u

/* Domain check results */
#define DOM_OK          1
#define DOM_ERR_SYNTAX  (-1)
#define DOM_ERR_LENGTH  (-2)
#define DOM_ERR_UTF8    (-3)

/*
 * Check that s[0..len) is a domain: labels of letters, digits and '-' (not
 * first or last), 1-63 octets, 255 in all. '_' anywhere and UTF-8 (U-labels,
 * only checked for UTF-8 validity) when allowed; *flags_r gets
 * DOM_ALLOW_UNDERSCORE / DOM_ALLOW_UTF8 for what was used.
 */
static int
domain_check(const char *s, size_t len, unsigned allow, unsigned *flags_r)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t i = 0, label_start = 0;

	*flags_r = 0;
	if (len == 0)
		return DOM_ERR_SYNTAX;
	if (len > 255)
		return DOM_ERR_LENGTH;
	while (i <= len) {
		if (i == len || p[i] == '.') {
			size_t ll = i - label_start;

			if (ll == 0)
				return DOM_ERR_SYNTAX;
			if (ll > 63)
				return DOM_ERR_LENGTH;
			if (p[label_start] == '-' || p[i - 1] == '-')
				return DOM_ERR_SYNTAX;
			i++;
			label_start = i;
			continue;
		}
		if (p[i] >= 0x80) {
			size_t n = utf8_seq(p + i, len - i);

			if (!(allow & DOM_ALLOW_UTF8))
				return DOM_ERR_SYNTAX;
			if (n == 0)
				return DOM_ERR_UTF8;
			*flags_r |= DOM_ALLOW_UTF8;
			i += n;
			continue;
		}
		if (p[i] == '_') {
			if (!(allow & DOM_ALLOW_UNDERSCORE))
				return DOM_ERR_SYNTAX;
			*flags_r |= DOM_ALLOW_UNDERSCORE;
		} else if (!is_alnum(p[i]) && p[i] != '-') {
			return DOM_ERR_SYNTAX;
		}
		i++;
	}
	return DOM_OK;
}

/* Dotted-quad IPv4 per RFC 5321 (Snum: 1-3 digits, value 0-255). */
static bool
ipv4_check(const char *s, size_t len)
{
	size_t i = 0;

	for (int part = 0; part < 4; part++) {
		unsigned v = 0;
		size_t nd = 0;

		if (part > 0) {
			if (i >= len || s[i] != '.')
				return false;
			i++;
		}
		while (i < len && is_digit((unsigned char)s[i]) && nd < 3) {
			v = v * 10 + (unsigned)(s[i] - '0');
			i++;
			nd++;
		}
		if (nd == 0 || v > 255)
			return false;
	}
	return i == len;
}

static bool
ipv6_check(const char *s, size_t len)
{
	char tmp[INET6_ADDRSTRLEN + 1];
	unsigned char addr[16];

	if (len == 0 || len >= sizeof(tmp))
		return false;
	memcpy(tmp, s, len);
	tmp[len] = '\0';
	return inet_pton(AF_INET6, tmp, addr) == 1;
}

/*
 * Check an address literal "[...]" at s[0..len) (brackets included).
 * Returns 1 and sets *ip_r and *af_r; -1 on bad syntax, -2 for a
 * general-address-literal (tag:content) we do not support.
 */
static int
literal_check(const char *s, size_t len, struct smtp_str *ip_r, int *af_r)
{
	const char *in;
	size_t inlen;

	if (len < 2 || s[0] != '[' || s[len - 1] != ']')
		return -1;
	in = s + 1;
	inlen = len - 2;
	if (inlen >= 5 && mem_ieq(in, 5, "IPv6:")) {
		if (!ipv6_check(in + 5, inlen - 5))
			return -1;
		ip_r->p = in + 5;
		ip_r->len = inlen - 5;
		*af_r = AF_INET6;
		return 1;
	}
	if (ipv4_check(in, inlen)) {
		ip_r->p = in;
		ip_r->len = inlen;
		*af_r = AF_INET;
		return 1;
	}
	/* General-address-literal: Standardized-tag ":" 1*dcontent */
	for (size_t i = 0; i < inlen; i++) {
		unsigned char ch = (unsigned char)in[i];

		if (ch == ':' && i > 0)
			return -2;
		if (!is_alnum(ch) && ch != '-')
			break;
	}
	return -1;
}

/* ------------------------------------------------------------------ */
/* HELO / EHLO                                                         */

static int
parse_helo(struct smtp_cmd *c, bool ehlo)
{
	const char *a = c->arg.p;
	size_t len = c->arg.len;
	struct smtp_helo *h = &c->helo;
	unsigned dflags;
	int r;

	h->domain = c->arg;
	if (len == 0)
		return fail(c, 501, "5.5.4", "%s requires a domain or address literal",
			    ehlo ? "EHLO" : "HELO");
	if (!utf8_valid(a, len)) {
		return fail(c, 501, "5.5.4", "invalid UTF-8 in %s argument",
			    ehlo ? "EHLO" : "HELO");
	}
	if (memchr(a, ' ', len) != NULL || memchr(a, '\t', len) != NULL)
		goto invalid;
	if (a[0] == '[') {
		r = literal_check(a, len, &h->ip, &h->af);
		if (r < 0)
			goto invalid;
		h->flags |= SMTP_HELO_LITERAL;
		return 1;
	}
	if (ipv4_check(a, len)) {
		h->ip = c->arg;
		h->af = AF_INET;
		h->flags |= SMTP_HELO_BARE_IP;
		return 1;
	}
	if (memchr(a, ':', len) != NULL && ipv6_check(a, len)) {
		h->ip = c->arg;
		h->af = AF_INET6;
		h->flags |= SMTP_HELO_BARE_IP;
		return 1;
	}
	r = domain_check(a, len, DOM_ALLOW_UNDERSCORE | DOM_ALLOW_UTF8, &dflags);
	if (r != DOM_OK)
		goto invalid;
	if (dflags & DOM_ALLOW_UNDERSCORE)
		h->flags |= SMTP_HELO_UNDERSCORE;
	if (dflags & DOM_ALLOW_UTF8)
		h->flags |= SMTP_HELO_UTF8;
	return 1;

invalid:
	if (!ehlo) {
		/* RFC 821 clients send all sorts here; the caller decides. */
		h->flags = SMTP_HELO_INVALID;
		h->ip.p = NULL;
		h->ip.len = 0;
		h->af = 0;
		return 1;
	}
	return fail(c, 501, "5.5.4",
		    "EHLO requires one domain name or address literal");
}

/* ------------------------------------------------------------------ */
/* Paths                                                               */

/* Append byte ch to the string being built at dst[*n]. */
#define PUT(dst, n, ch) ((dst)[(*(n))++] = (char)(ch))

/*
 * Is s[0..len) a dot-atom (atoms of atext, UTF-8 allowed, joined by single
 * dots)? Used to choose the canonical form of a localpart.
 */
static bool
is_dot_atom(const char *s, size_t len)
{
	const unsigned char *p = (const unsigned char *)s;
	bool prev_dot = true;

	if (len == 0)
		return false;
	for (size_t i = 0; i < len;) {
		if (p[i] == '.') {
			if (prev_dot)
				return false;
			prev_dot = true;
			i++;
			continue;
		}
		prev_dot = false;
		if (p[i] >= 0x80) {
			size_t n = utf8_seq(p + i, len - i);

			if (n == 0)
				return false;
			i += n;
			continue;
		}
		if (!is_atext(p[i]))
			return false;
		i++;
	}
	return !prev_dot;
}

/* Reads the domain token at ps->pos up to the next '>' ',' ':' or end. */
static size_t
domain_token_end(const struct pstate *ps)
{
	size_t i = ps->pos;

	if (i < ps->len && ps->s[i] == '[') {
		while (i < ps->len && ps->s[i] != ']')
			i++;
		return i < ps->len ? i + 1 : i;
	}
	while (i < ps->len && ps->s[i] != '>' && ps->s[i] != ',' &&
	       ps->s[i] != ':' && ps->s[i] != ' ')
		i++;
	return i;
}

/*
 * Parse a domain or address literal at ps->pos for a path. On success
 * advances ps->pos and fills the domain/ip/af fields of path.
 */
static int
parse_path_domain(struct pstate *ps, struct smtp_path *path, bool store,
		  const char *ecode)
{
	struct smtp_cmd *c = ps->c;
	size_t end = domain_token_end(ps);
	const char *d = ps->s + ps->pos;
	size_t dlen = end - ps->pos;
	unsigned dflags;
	int r;

	if (dlen == 0)
		return fail(c, 501, ecode, "missing domain in address");
	if (d[0] == '[') {
		struct smtp_str ip = {NULL, 0};
		int af = 0;

		r = literal_check(d, dlen, &ip, &af);
		if (r == -2)
			return fail(c, 501, ecode,
				    "address literal type not supported");
		if (r < 0)
			return fail(c, 501, ecode, "invalid address literal");
		if (store) {
			path->ip = ip;
			path->af = af;
			path->flags |= SMTP_ADDR_LITERAL;
		}
	} else {
		r = domain_check(d, dlen, DOM_ALLOW_UTF8, &dflags);
		if (r == DOM_ERR_LENGTH)
			return fail(c, 501, ecode, "domain name too long");
		if (r == DOM_ERR_UTF8)
			return fail(c, 501, ecode, "invalid UTF-8 in domain");
		if (r != DOM_OK)
			return fail(c, 501, ecode, "invalid domain name");
		if (dflags & DOM_ALLOW_UTF8) {
			ps->saw_utf8 = true;
			if (store)
				path->flags |= SMTP_ADDR_UTF8;
		}
	}
	if (store) {
		char *p = scratch_alloc(c, dlen);

		if (p == NULL)
			return fail_scratch(c);
		memcpy(p, d, dlen);
		path->domain.p = p;
		path->domain.len = dlen;
	}
	ps->pos = end;
	return 1;
}

/* Source route "@a,@b:" (RFC 5321 4.1.1.3: parsed, then ignored). */
static int
parse_source_route(struct pstate *ps, struct smtp_path *path, const char *ecode)
{
	for (;;) {
		if (peek(ps) != '@')
			return fail(ps->c, 501, ecode, "invalid source route");
		ps->pos++;
		if (parse_path_domain(ps, path, false, ecode) < 0)
			return -1;
		if (peek(ps) == ',') {
			ps->pos++;
			continue;
		}
		if (peek(ps) == ':') {
			ps->pos++;
			path->flags |= SMTP_ADDR_SOURCE_ROUTE;
			return 1;
		}
		return fail(ps->c, 501, ecode, "invalid source route");
	}
}

/*
 * Localpart at ps->pos: dot-atom or quoted-string. Writes the unquoted form
 * to dst (capacity at least the remaining line length) and its length to
 * *n_r.
 */
static int
parse_localpart(struct pstate *ps, struct smtp_path *path, char *dst,
		size_t *n_r, const char *ecode)
{
	const unsigned char *s = (const unsigned char *)ps->s;
	struct smtp_cmd *c = ps->c;
	size_t n = 0;

	if (peek(ps) == '"') {
		path->flags |= SMTP_ADDR_QUOTED;
		ps->pos++;
		for (;;) {
			unsigned char ch;

			if (at_end(ps))
				return fail(c, 501, ecode,
					    "unterminated quoted localpart");
			ch = s[ps->pos];
			if (ch == '"') {
				ps->pos++;
				break;
			}
			if (ch == '\\') {
				if (ps->pos + 1 >= ps->len ||
				    s[ps->pos + 1] < 32 || s[ps->pos + 1] > 126)
					return fail(c, 501, ecode,
						    "invalid quoted-pair in localpart");
				PUT(dst, &n, s[ps->pos + 1]);
				ps->pos += 2;
				continue;
			}
			if (ch >= 0x80) {
				size_t sl = utf8_seq(s + ps->pos, ps->len - ps->pos);

				if (sl == 0)
					return fail(c, 501, ecode,
						    "invalid UTF-8 in localpart");
				ps->saw_utf8 = true;
				path->flags |= SMTP_ADDR_UTF8;
				memcpy(dst + n, s + ps->pos, sl);
				n += sl;
				ps->pos += sl;
				continue;
			}
			if (ch < 32 || ch > 126)
				return fail(c, 501, ecode,
					    "invalid character in quoted localpart");
			PUT(dst, &n, ch);
			ps->pos++;
		}
		*n_r = n;
		return 1;
	}

	/* dot-atom */
	for (;;) {
		size_t start = ps->pos;

		while (!at_end(ps)) {
			unsigned char ch = s[ps->pos];

			if (ch >= 0x80) {
				size_t sl = utf8_seq(s + ps->pos, ps->len - ps->pos);

				if (sl == 0)
					return fail(c, 501, ecode,
						    "invalid UTF-8 in localpart");
				ps->saw_utf8 = true;
				path->flags |= SMTP_ADDR_UTF8;
				memcpy(dst + n, s + ps->pos, sl);
				n += sl;
				ps->pos += sl;
				continue;
			}
			if (!is_atext(ch))
				break;
			PUT(dst, &n, ch);
			ps->pos++;
		}
		if (ps->pos == start)
			return fail(c, 501, ecode, "invalid localpart");
		if (peek(ps) != '.')
			break;
		PUT(dst, &n, '.');
		ps->pos++;
	}
	*n_r = n;
	return 1;
}

/* Write the canonical form of the localpart already in path->localpart. */
static int
localpart_canon(struct smtp_cmd *c, struct smtp_path *path)
{
	const char *lp = path->localpart.p;
	size_t len = path->localpart.len, extra = 2, n = 0;
	char *dst;

	if (is_dot_atom(lp, len)) {
		path->localpart_canon = path->localpart;
		return 1;
	}
	for (size_t i = 0; i < len; i++)
		if (lp[i] == '"' || lp[i] == '\\')
			extra++;
	dst = scratch_alloc(c, len + extra);
	if (dst == NULL)
		return fail_scratch(c);
	PUT(dst, &n, '"');
	for (size_t i = 0; i < len; i++) {
		if (lp[i] == '"' || lp[i] == '\\')
			PUT(dst, &n, '\\');
		PUT(dst, &n, lp[i]);
	}
	PUT(dst, &n, '"');
	path->localpart_canon.p = dst;
	path->localpart_canon.len = n;
	return 1;
}

/*
 * Path "<...>" at ps->pos (after "FROM:"/"TO:" and optional spaces).
 * is_mail: reverse-path (allows <>); else forward-path (allows
 * <postmaster>).
 */
static int
parse_path(struct pstate *ps, bool is_mail)
{
	struct smtp_cmd *c = ps->c;
	struct smtp_path *path = &c->path;
	const char *ecode = is_mail ? "5.1.7" : "5.1.3";
	char *lp;
	size_t lplen = 0;

	if (peek(ps) != '<')
		return fail(c, 501, ecode, "%s address must be in <>",
			    is_mail ? "sender" : "recipient");
	ps->pos++;
	if (peek(ps) == '>') {
		ps->pos++;
		if (!is_mail)
			return fail(c, 501, ecode, "empty recipient address");
		path->flags |= SMTP_ADDR_NULL;
		path->localpart.p = path->localpart_canon.p = path->domain.p = "";
		return 1;
	}
	if (peek(ps) == '@' && parse_source_route(ps, path, ecode) < 0)
		return -1;

	/* The unquoted localpart is never longer than what remains. */
	lp = scratch_alloc(c, ps->len - ps->pos);
	if (lp == NULL)
		return fail_scratch(c);
	if (parse_localpart(ps, path, lp, &lplen, ecode) < 0)
		return -1;
	/* give back the unused part of the reservation */
	c->scratch_used = (size_t)(lp - c->scratch) + lplen + 1;
	lp[lplen] = '\0';
	path->localpart.p = lp;
	path->localpart.len = lplen;
	if (lplen > 64)
		path->flags |= SMTP_ADDR_LONG_LOCAL;

	if (peek(ps) == '>' && !is_mail && !(path->flags & SMTP_ADDR_QUOTED) &&
	    !(path->flags & SMTP_ADDR_SOURCE_ROUTE) &&
	    mem_ieq(lp, lplen, "postmaster")) {
		ps->pos++;
		path->flags |= SMTP_ADDR_POSTMASTER;
		path->localpart_canon = path->localpart;
		path->domain.p = "";
		return 1;
	}
	if (peek(ps) != '@')
		return fail(c, 501, ecode, "missing @domain in address");
	ps->pos++;
	if (parse_path_domain(ps, path, true, ecode) < 0)
		return -1;
	if (peek(ps) != '>')
		return fail(c, 501, ecode, "invalid address, expected >");
	ps->pos++;
	if (lplen == 0 && !(path->flags & SMTP_ADDR_QUOTED))
		return fail(c, 501, ecode, "empty localpart");
	return localpart_canon(c, path);
}

/* ------------------------------------------------------------------ */
/* ESMTP parameters                                                    */

struct param {
	const char *kw;
	size_t kwlen;
	const char *val; /* NULL when there is no "=" */
	size_t vallen;
};

/*
 * Next parameter at ps->pos: one or more SP, then keyword ["=" value].
 * Returns 1 with *p_r filled, 0 at the end of the line, -1 on bad syntax.
 */
static int
next_param(struct pstate *ps, struct param *p_r)
{
	const unsigned char *s = (const unsigned char *)ps->s;
	struct smtp_cmd *c = ps->c;

	if (at_end(ps))
		return 0;
	if (peek(ps) != ' ')
		return fail(c, 501, "5.5.4", "expected space before parameter");
	while (peek(ps) == ' ')
		ps->pos++;
	if (at_end(ps))
		return 0;
	memset(p_r, 0, sizeof(*p_r));
	p_r->kw = ps->s + ps->pos;
	if (!is_alnum(s[ps->pos]))
		return fail(c, 501, "5.5.4", "invalid parameter keyword");
	while (!at_end(ps) && (is_alnum(s[ps->pos]) || s[ps->pos] == '-'))
		ps->pos++;
	p_r->kwlen = (size_t)(ps->s + ps->pos - p_r->kw);
	if (at_end(ps) || peek(ps) == ' ')
		return 1;
	if (peek(ps) != '=')
		return fail(c, 501, "5.5.4", "invalid parameter keyword");
	ps->pos++;
	p_r->val = ps->s + ps->pos;
	while (!at_end(ps) && s[ps->pos] != ' ') {
		unsigned char ch = s[ps->pos];

		if (ch >= 0x80) {
			size_t sl = utf8_seq(s + ps->pos, ps->len - ps->pos);

			if (sl == 0)
				return fail(c, 501, "5.5.4",
					    "invalid UTF-8 in parameter value");
			ps->saw_utf8 = true;
			ps->pos += sl;
			continue;
		}
		if (ch < 33 || ch > 126 || ch == '=')
			return fail(c, 501, "5.5.4", "invalid parameter value");
		ps->pos++;
	}
	p_r->vallen = (size_t)(ps->s + ps->pos - p_r->val);
	if (p_r->vallen == 0)
		return fail(c, 501, "5.5.4", "empty parameter value");
	return 1;
}

/*
 * Decode xtext (RFC 3461 4): "+HH" is a byte, other printable ASCII stands
 * for itself. With unicode (RFC 6533 utf-8-addr-xtext) also "\x{H..}".
 * Decoded control characters are refused. Result goes to the scratch.
 */
static int
xtext_decode(struct smtp_cmd *c, const char *v, size_t len, bool unicode,
	     const char *what, struct smtp_str *out_r)
{
	/* Decoding never grows: "+HH" is 1 byte, "\x{HH}" at most 2, and
	 * 4-byte UTF-8 needs 5 hex digits. */
	char *dst = scratch_alloc(c, len);
	size_t n = 0, i = 0;

	if (dst == NULL)
		return fail_scratch(c);
	while (i < len) {
		unsigned char ch = (unsigned char)v[i];

		if (ch == '+') {
			int hi, lo;

			if (i + 2 >= len)
				return fail(c, 501, "5.5.4", "invalid xtext in %s", what);
			hi = hexval((unsigned char)v[i + 1]);
			lo = hexval((unsigned char)v[i + 2]);
			if (hi < 0 || lo < 0)
				return fail(c, 501, "5.5.4", "invalid xtext in %s", what);
			ch = (unsigned char)(hi * 16 + lo);
			if (ch < 32 || ch == 127)
				return fail(c, 501, "5.5.4",
					    "control character in %s", what);
			PUT(dst, &n, ch);
			i += 3;
			continue;
		}
		if (unicode && ch == '\\' && i + 1 < len && v[i + 1] == 'x') {
			unsigned long cp = 0;
			size_t j = i + 2, nd = 0;

			if (j >= len || v[j] != '{')
				return fail(c, 501, "5.5.4", "invalid \\x{} in %s", what);
			for (j++; j < len && hexval((unsigned char)v[j]) >= 0 && nd < 6;
			     j++, nd++)
				cp = cp * 16 + (unsigned long)hexval((unsigned char)v[j]);
			if (nd < 2 || j >= len || v[j] != '}' || cp < 32 ||
			    cp == 127 || (cp >= 0xd800 && cp <= 0xdfff) ||
			    cp > 0x10ffff)
				return fail(c, 501, "5.5.4", "invalid \\x{} in %s", what);
			if (cp < 0x80) {
				PUT(dst, &n, cp);
			} else if (cp < 0x800) {
				PUT(dst, &n, 0xc0 | (cp >> 6));
				PUT(dst, &n, 0x80 | (cp & 0x3f));
			} else if (cp < 0x10000) {
				PUT(dst, &n, 0xe0 | (cp >> 12));
				PUT(dst, &n, 0x80 | ((cp >> 6) & 0x3f));
				PUT(dst, &n, 0x80 | (cp & 0x3f));
			} else {
				PUT(dst, &n, 0xf0 | (cp >> 18));
				PUT(dst, &n, 0x80 | ((cp >> 12) & 0x3f));
				PUT(dst, &n, 0x80 | ((cp >> 6) & 0x3f));
				PUT(dst, &n, 0x80 | (cp & 0x3f));
			}
			i = j + 1;
			continue;
		}
		/* next_param already refused controls, SP and '='. */
		PUT(dst, &n, ch);
		i++;
	}
	if (!utf8_valid(dst, n))
		return fail(c, 501, "5.5.4", "invalid UTF-8 in %s", what);
	dst[n] = '\0';
	c->scratch_used = (size_t)(dst - c->scratch) + n + 1;
	out_r->p = dst;
	out_r->len = n;
	return 1;
}

static int
param_unsupported(struct smtp_cmd *c, const struct param *p)
{
	char kw[32];

	kw_copy(kw, sizeof(kw), p->kw, p->kwlen);
	return fail(c, 555, "5.5.4", "unsupported parameter %s", kw);
}

static int
param_dup(struct smtp_cmd *c, const struct param *p)
{
	char kw[32];

	kw_copy(kw, sizeof(kw), p->kw, p->kwlen);
	return fail(c, 501, "5.5.4", "duplicate parameter %s", kw);
}

static int
param_need_value(struct smtp_cmd *c, const struct param *p, bool want)
{
	char kw[32];

	if ((p->val != NULL) == want)
		return 1;
	kw_copy(kw, sizeof(kw), p->kw, p->kwlen);
	return fail(c, 501, "5.5.4", want ? "parameter %s requires a value" :
		    "parameter %s takes no value", kw);
}

static bool
kw_is(const struct param *p, const char *name)
{
	return mem_ieq(p->kw, p->kwlen, name);
}

static bool
val_is(const struct param *p, const char *name)
{
	return mem_ieq(p->val, p->vallen, name);
}

/* Decimal uint64 with overflow check; 1 or -1. */
static int
parse_u64(const char *s, size_t len, uint64_t *v_r)
{
	uint64_t v = 0;

	if (len == 0 || len > 20)
		return -1;
	for (size_t i = 0; i < len; i++) {
		unsigned d;

		if (!is_digit((unsigned char)s[i]))
			return -1;
		d = (unsigned)(s[i] - '0');
		if (v > (UINT64_MAX - d) / 10)
			return -1;
		v = v * 10 + d;
	}
	*v_r = v;
	return 1;
}

static int
mail_param(struct pstate *ps, const struct param *p, unsigned ext)
{
	struct smtp_cmd *c = ps->c;
	struct smtp_mail_params *m = &c->mail;
	unsigned bit;

	if (kw_is(p, "SIZE") && (ext & SMTP_EXT_SIZE))
		bit = SMTP_PARAM_SIZE;
	else if (kw_is(p, "BODY") && (ext & (SMTP_EXT_8BITMIME | SMTP_EXT_BINARYMIME)))
		bit = SMTP_PARAM_BODY;
	else if (kw_is(p, "SMTPUTF8") && (ext & SMTP_EXT_SMTPUTF8))
		bit = SMTP_PARAM_SMTPUTF8;
	else if (kw_is(p, "RET") && (ext & SMTP_EXT_DSN))
		bit = SMTP_PARAM_RET;
	else if (kw_is(p, "ENVID") && (ext & SMTP_EXT_DSN))
		bit = SMTP_PARAM_ENVID;
	else if (kw_is(p, "AUTH") && (ext & SMTP_EXT_AUTH))
		bit = SMTP_PARAM_AUTH;
	else if (kw_is(p, "REQUIRETLS") && (ext & SMTP_EXT_REQUIRETLS))
		bit = SMTP_PARAM_REQUIRETLS;
	else
		return param_unsupported(c, p);
	if (m->seen & bit)
		return param_dup(c, p);
	m->seen |= bit;

	switch (bit) {
	case SMTP_PARAM_SIZE:
		if (param_need_value(c, p, true) < 0)
			return -1;
		if (parse_u64(p->val, p->vallen, &m->size) < 0)
			return fail(c, 501, "5.5.4", "invalid SIZE value");
		return 1;
	case SMTP_PARAM_BODY:
		if (param_need_value(c, p, true) < 0)
			return -1;
		if (val_is(p, "7BIT"))
			m->body = SMTP_BODY_7BIT;
		else if (val_is(p, "8BITMIME"))
			m->body = SMTP_BODY_8BITMIME;
		else if (val_is(p, "BINARYMIME") && (ext & SMTP_EXT_BINARYMIME))
			m->body = SMTP_BODY_BINARYMIME;
		else
			return fail(c, 501, "5.5.4", "unsupported BODY value");
		return 1;
	case SMTP_PARAM_SMTPUTF8:
		if (param_need_value(c, p, false) < 0)
			return -1;
		m->smtputf8 = true;
		return 1;
	case SMTP_PARAM_REQUIRETLS:
		if (param_need_value(c, p, false) < 0)
			return -1;
		m->requiretls = true;
		return 1;
	case SMTP_PARAM_RET:
		if (param_need_value(c, p, true) < 0)
			return -1;
		if (val_is(p, "FULL"))
			m->ret = SMTP_RET_FULL;
		else if (val_is(p, "HDRS"))
			m->ret = SMTP_RET_HDRS;
		else
			return fail(c, 501, "5.5.4", "invalid RET value");
		return 1;
	case SMTP_PARAM_ENVID:
		if (param_need_value(c, p, true) < 0)
			return -1;
		/* RFC 3461 4.4: at most 100 characters */
		if (p->vallen > 100)
			return fail(c, 501, "5.5.4", "ENVID too long");
		return xtext_decode(c, p->val, p->vallen, false, "ENVID", &m->envid);
	case SMTP_PARAM_AUTH:
		if (param_need_value(c, p, true) < 0)
			return -1;
		if (p->vallen == 2 && memcmp(p->val, "<>", 2) == 0) {
			m->auth.p = "<>";
			m->auth.len = 2;
			return 1;
		}
		return xtext_decode(c, p->val, p->vallen, false, "AUTH", &m->auth);
	}
	return param_unsupported(c, p);
}

static int
parse_notify(struct smtp_cmd *c, const struct param *p)
{
	const char *v = p->val;
	size_t len = p->vallen, i = 0;
	unsigned notify = 0;

	while (i <= len) {
		size_t j = i;
		unsigned bit;

		while (j < len && v[j] != ',')
			j++;
		if (mem_ieq(v + i, j - i, "NEVER"))
			bit = SMTP_NOTIFY_NEVER;
		else if (mem_ieq(v + i, j - i, "SUCCESS"))
			bit = SMTP_NOTIFY_SUCCESS;
		else if (mem_ieq(v + i, j - i, "FAILURE"))
			bit = SMTP_NOTIFY_FAILURE;
		else if (mem_ieq(v + i, j - i, "DELAY"))
			bit = SMTP_NOTIFY_DELAY;
		else
			return fail(c, 501, "5.5.4", "invalid NOTIFY value");
		if (notify & bit)
			return fail(c, 501, "5.5.4", "duplicate NOTIFY value");
		notify |= bit;
		i = j + 1;
	}
	if ((notify & SMTP_NOTIFY_NEVER) && notify != SMTP_NOTIFY_NEVER)
		return fail(c, 501, "5.5.4", "NOTIFY=NEVER cannot be combined");
	c->rcpt.notify = notify;
	return 1;
}

static int
parse_orcpt(struct smtp_cmd *c, const struct param *p)
{
	const char *v = p->val, *semi;
	size_t len = p->vallen, tlen;
	bool unicode;

	/* RFC 3461 4.2: the parameter is at most 500 characters. */
	if (len > 500)
		return fail(c, 501, "5.5.4", "ORCPT too long");
	semi = memchr(v, ';', len);
	if (semi == NULL || semi == v || (size_t)(semi - v) + 1 >= len)
		return fail(c, 501, "5.5.4", "ORCPT must be addr-type;address");
	tlen = (size_t)(semi - v);
	for (size_t i = 0; i < tlen; i++)
		if (!is_atext((unsigned char)v[i]))
			return fail(c, 501, "5.5.4", "invalid ORCPT address type");
	c->rcpt.orcpt_type.p = v;
	c->rcpt.orcpt_type.len = tlen;
	unicode = mem_ieq(v, tlen, "utf-8");
	return xtext_decode(c, semi + 1, len - tlen - 1, unicode, "ORCPT",
			    &c->rcpt.orcpt);
}

static int
rcpt_param(struct pstate *ps, const struct param *p, unsigned ext)
{
	struct smtp_cmd *c = ps->c;
	unsigned bit;

	if (kw_is(p, "NOTIFY") && (ext & SMTP_EXT_DSN))
		bit = SMTP_PARAM_NOTIFY;
	else if (kw_is(p, "ORCPT") && (ext & SMTP_EXT_DSN))
		bit = SMTP_PARAM_ORCPT;
	else
		return param_unsupported(c, p);
	if (c->rcpt.seen & bit)
		return param_dup(c, p);
	c->rcpt.seen |= bit;
	if (param_need_value(c, p, true) < 0)
		return -1;
	if (bit == SMTP_PARAM_NOTIFY)
		return parse_notify(c, p);
	return parse_orcpt(c, p);
}

/* MAIL FROM:<path> params / RCPT TO:<path> params */
static int
parse_mail_rcpt(struct smtp_cmd *c, const struct smtp_parse_opts *opts,
		bool is_mail)
{
	struct pstate ps = {c->arg.p, c->arg.len, 0, c, false};
	const char *kw = is_mail ? "FROM:" : "TO:";
	size_t kwlen = strlen(kw);
	struct param p;
	bool utf8_ok;
	int r;

	if (ps.len < kwlen || !mem_ieq(ps.s, kwlen, kw))
		return fail(c, 501, "5.5.4", "syntax: %s", is_mail ?
			    "MAIL FROM:<address> [parameters]" :
			    "RCPT TO:<address> [parameters]");
	ps.pos = kwlen;
	/* Tolerated: "MAIL FROM: <a@b>" */
	while (peek(&ps) == ' ')
		ps.pos++;
	if (parse_path(&ps, is_mail) < 0)
		return -1;
	while ((r = next_param(&ps, &p)) > 0) {
		r = is_mail ? mail_param(&ps, &p, opts->ext) :
			      rcpt_param(&ps, &p, opts->ext);
		if (r < 0)
			return -1;
	}
	if (r < 0)
		return -1;
	utf8_ok = (opts->ext & SMTP_EXT_SMTPUTF8) &&
		  (is_mail ? c->mail.smtputf8 : opts->smtputf8);
	if (ps.saw_utf8 && !utf8_ok)
		return fail(c, 553, "5.6.7",
			    "non-ASCII address or parameter requires SMTPUTF8");
	return 1;
}

/* ------------------------------------------------------------------ */
/* Other verbs                                                         */

static bool
is_base64(const char *s, size_t len)
{
	size_t pad = 0;

	if (len % 4 != 0)
		return false;
	for (size_t i = 0; i < len; i++) {
		unsigned char ch = (unsigned char)s[i];

		if (ch == '=') {
			pad++;
			continue;
		}
		if (pad > 0)
			return false;
		if (!is_alnum(ch) && ch != '+' && ch != '/')
			return false;
	}
	return pad <= 2;
}

int
smtp_auth_response_check(const char *line, size_t len)
{
	if (len == 1 && line[0] == '*')
		return 0;
	return is_base64(line, len) ? 1 : -1;
}

static int
parse_auth(struct smtp_cmd *c)
{
	const char *a = c->arg.p;
	size_t len = c->arg.len, i = 0;
	struct smtp_auth *au = &c->auth;

	/* RFC 4954: sasl-mech = 1*20(UPALPHA / DIGIT / "-" / "_") */
	while (i < len && a[i] != ' ') {
		unsigned char ch = (unsigned char)a[i];

		if (!is_alnum(ch) && ch != '-' && ch != '_')
			return fail(c, 501, "5.5.4", "invalid mechanism name");
		i++;
	}
	if (i == 0)
		return fail(c, 501, "5.5.4", "AUTH requires a mechanism");
	if (i > 20)
		return fail(c, 501, "5.5.4", "invalid mechanism name");
	au->mech.p = a;
	au->mech.len = i;
	if (i == len)
		return 1;
	i++; /* the SP */
	if (memchr(a + i, ' ', len - i) != NULL || i == len)
		return fail(c, 501, "5.5.4", "syntax: AUTH mechanism [initial-response]");
	au->has_initial = true;
	au->initial.p = a + i;
	au->initial.len = len - i;
	if (len - i == 1 && a[i] == '=') {
		au->initial_empty = true;
		au->initial.len = 0;
		return 1;
	}
	if (!is_base64(a + i, len - i))
		return fail(c, 501, "5.5.2", "invalid base64 in initial response");
	return 1;
}

static int
parse_bdat(struct smtp_cmd *c)
{
	const char *a = c->arg.p;
	size_t len = c->arg.len, i = 0;

	while (i < len && a[i] != ' ')
		i++;
	if (i == 0 || parse_u64(a, i, &c->bdat.size) < 0)
		return fail(c, 501, "5.5.4", "syntax: BDAT size [LAST]");
	if (i == len)
		return 1;
	if (mem_ieq(a + i + 1, len - i - 1, "LAST")) {
		c->bdat.last = true;
		return 1;
	}
	return fail(c, 501, "5.5.4", "syntax: BDAT size [LAST]");
}

/* ------------------------------------------------------------------ */
/* Dispatch                                                            */

static const struct {
	enum smtp_verb verb;
	const char *name;
} verbs[] = {
	{SMTP_VERB_HELO, "HELO"}, {SMTP_VERB_EHLO, "EHLO"},
	{SMTP_VERB_MAIL, "MAIL"}, {SMTP_VERB_RCPT, "RCPT"},
	{SMTP_VERB_DATA, "DATA"}, {SMTP_VERB_BDAT, "BDAT"},
	{SMTP_VERB_RSET, "RSET"}, {SMTP_VERB_NOOP, "NOOP"},
	{SMTP_VERB_QUIT, "QUIT"}, {SMTP_VERB_VRFY, "VRFY"},
	{SMTP_VERB_EXPN, "EXPN"}, {SMTP_VERB_HELP, "HELP"},
	{SMTP_VERB_STARTTLS, "STARTTLS"}, {SMTP_VERB_AUTH, "AUTH"},
};

const char *
smtp_verb_name(enum smtp_verb v)
{
	for (size_t i = 0; i < ARRAY_LEN(verbs); i++)
		if (verbs[i].verb == v)
			return verbs[i].name;
	return "UNKNOWN";
}

void
smtp_cmd_set_too_long(struct smtp_cmd *cmd_r)
{
	memset(cmd_r, 0, offsetof(struct smtp_cmd, scratch));
	fail(cmd_r, 500, "5.5.2", "line too long");
}

int
smtp_cmd_parse(const char *line, size_t len, const struct smtp_parse_opts *opts,
	       struct smtp_cmd *c)
{
	static const struct smtp_parse_opts no_opts = {0, false};
	size_t vlen = 0;

	if (opts == NULL)
		opts = &no_opts;
	/* The scratch need not be cleared: every use writes before reading. */
	memset(c, 0, offsetof(struct smtp_cmd, scratch));
	c->scratch[0] = '\0';

	while (len > 0 && (line[len - 1] == ' ' || line[len - 1] == '\t'))
		len--;
	while (vlen < len && line[vlen] != ' ')
		vlen++;
	c->verb_text.p = line;
	c->verb_text.len = vlen;
	for (size_t i = 0; i < ARRAY_LEN(verbs); i++) {
		if (mem_ieq(line, vlen, verbs[i].name)) {
			c->verb = verbs[i].verb;
			break;
		}
	}
	for (size_t i = 0; i < len; i++) {
		unsigned char ch = (unsigned char)line[i];

		if (ch < 32 || ch == 127)
			return fail(c, 500, "5.5.2", "invalid control character in command");
	}
	if (vlen == 0)
		return fail(c, 500, "5.5.2", "empty command");
	if (c->verb == SMTP_VERB_UNKNOWN)
		return fail(c, 500, "5.5.1", "command not recognized");
	if (c->verb != SMTP_VERB_AUTH && len + 2 > SMTP_CMD_MAX_LINE)
		return fail(c, 500, "5.5.2", "line too long");
	c->arg.p = line + vlen + (vlen < len ? 1 : 0);
	c->arg.len = vlen < len ? len - vlen - 1 : 0;

	switch (c->verb) {
	case SMTP_VERB_HELO:
		return parse_helo(c, false);
	case SMTP_VERB_EHLO:
		return parse_helo(c, true);
	case SMTP_VERB_MAIL:
		return parse_mail_rcpt(c, opts, true);
	case SMTP_VERB_RCPT:
		return parse_mail_rcpt(c, opts, false);
	case SMTP_VERB_DATA:
	case SMTP_VERB_RSET:
	case SMTP_VERB_QUIT:
	case SMTP_VERB_STARTTLS:
		if (c->arg.len > 0)
			return fail(c, 501, "5.5.4", "%s takes no parameters",
				    smtp_verb_name(c->verb));
		return 1;
	case SMTP_VERB_VRFY:
	case SMTP_VERB_EXPN:
		if (c->arg.len == 0)
			return fail(c, 501, "5.5.4", "%s requires an argument",
				    smtp_verb_name(c->verb));
		return 1;
	case SMTP_VERB_NOOP:
	case SMTP_VERB_HELP:
		return 1;
	case SMTP_VERB_BDAT:
		return parse_bdat(c);
	case SMTP_VERB_AUTH:
		return parse_auth(c);
	case SMTP_VERB_UNKNOWN:
		break;
	}
	return fail(c, 500, "5.5.1", "command not recognized");
}

/* ------------------------------------------------------------------ */
/* DATA                                                                */

enum {
	DS_BOL = 0, /* at the start of a line */
	DS_TEXT,    /* inside a line */
	DS_CR,      /* after a CR */
	DS_DOT,     /* after "." at the start of a line (held back) */
	DS_DOT_CR,  /* after "." CR at the start of a line (both held back) */
};

void
smtp_data_init(struct smtp_data *d, enum smtp_data_mode mode, uint64_t max_size)
{
	memset(d, 0, sizeof(*d));
	d->mode = mode;
	d->max_size = max_size;
	d->state = DS_BOL;
}

/* Account for an outgoing chunk; cut it at the limit and suppress what
 * follows, so the output does not depend on how the input was split. */
static void
data_emit(struct smtp_data *d, const char *p, size_t n, const char **chunk_r,
	  size_t *chunk_len_r)
{
	uint64_t before = d->size;

	d->size += n;
	*chunk_r = p;
	*chunk_len_r = n;
	if (d->max_size > 0 && d->size > d->max_size) {
		d->over_limit = true;
		*chunk_len_r = before < d->max_size ?
			       (size_t)(d->max_size - before) : 0;
	}
}

size_t
smtp_data_parse(struct smtp_data *d, const char *buf, size_t len,
		const char **chunk_r, size_t *chunk_len_r)
{
	size_t i = 0, cs = 0; /* the pending chunk is buf[cs..i) */

	*chunk_r = buf;
	*chunk_len_r = 0;
	while (i < len && !d->done) {
		unsigned char ch = (unsigned char)buf[i];

		switch (d->state) {
		case DS_BOL:
			if (ch == '.') {
				if (i > cs)
					goto out;
				i++;
				cs = i;
				d->state = DS_DOT;
				continue;
			}
			d->state = DS_TEXT;
			break;
		case DS_DOT:
			if (ch == '\r') {
				i++;
				cs = i;
				d->state = DS_DOT_CR;
				continue;
			}
			if (ch == '\n' && d->mode != SMTP_DATA_STRICT) {
				d->flags |= SMTP_DATA_BARE_LF;
				d->done = true;
				i++;
				cs = i;
				continue;
			}
			/* "." then more: a stuffed dot, dropped (4.5.2) */
			d->state = DS_TEXT;
			break;
		case DS_DOT_CR:
			if (ch == '\n') {
				d->done = true;
				i++;
				cs = i;
				continue;
			}
			/* The held CR was bare; it is data. c stays unread. */
			d->flags |= SMTP_DATA_BARE_CR;
			d->state = DS_TEXT;
			d->line_len++;
			data_emit(d, "\r", 1, chunk_r, chunk_len_r);
			if (*chunk_len_r > 0)
				return i;
			break; /* over the limit: nothing to hand out */
		case DS_CR:
			if (ch == '\n') {
				i++;
				d->state = DS_BOL;
				d->line_len = 0;
				continue;
			}
			d->flags |= SMTP_DATA_BARE_CR;
			d->line_len++;
			d->state = DS_TEXT;
			break;
		default:
			break;
		}

		/* DS_TEXT */
		if (ch == '\r') {
			i++;
			d->state = DS_CR;
			continue;
		}
		if (ch == '\n') {
			d->flags |= SMTP_DATA_BARE_LF;
			if (d->mode == SMTP_DATA_STRICT) {
				i++;
				d->line_len++;
				continue;
			}
			d->line_len = 0;
			d->state = DS_BOL;
			if (d->mode == SMTP_DATA_FIX_LF) {
				if (i > cs)
					goto out;
				data_emit(d, "\r\n", 2, chunk_r, chunk_len_r);
				return i + 1;
			}
			i++;
			continue;
		}
		if (ch >= 0x80)
			d->flags |= SMTP_DATA_8BIT;
		else if (ch == 0)
			d->flags |= SMTP_DATA_NUL;
		if (++d->line_len > 998)
			d->flags |= SMTP_DATA_LONG_LINE;
		i++;
	}
out:
	if (i > cs)
		data_emit(d, buf + cs, i - cs, chunk_r, chunk_len_r);
	return i;
}

/* ------------------------------------------------------------------ */
/* Replies                                                             */

/* Append s[0..len) with control characters replaced by '?'. */
static int
add_sanitized(struct mbuf *out, const char *s, size_t len)
{
	size_t i = 0;

	while (i < len) {
		size_t j = i;

		while (j < len && (unsigned char)s[j] >= 32 && s[j] != 127)
			j++;
		if (j > i && mbuf_add(out, s + i, j - i) < 0)
			return -1;
		if (j < len && mbuf_add(out, "?", 1) < 0)
			return -1;
		i = j + 1;
	}
	return 0;
}

static int
reply_add(struct mbuf *out, int code, const char *ecode, const char *suffix,
	  const struct smtp_str *lines, size_t nlines)
{
	size_t start = out->len;
	size_t n = nlines > 0 ? nlines : 1;

	if (code < 200 || code > 599)
		return -1;
	for (size_t i = 0; i < n; i++) {
		bool last = i == n - 1;
		const char *t = nlines > 0 ? lines[i].p : "";
		size_t tlen = nlines > 0 ? lines[i].len : 0;
		bool sp = false;

		if (mbuf_printf(out, "%03d%c", code, last ? ' ' : '-') < 0)
			goto fail;
		if (ecode != NULL && ecode[0] != '\0') {
			if (add_sanitized(out, ecode, strlen(ecode)) < 0)
				goto fail;
			sp = true;
		}
		if (tlen > 0) {
			if ((sp && mbuf_add(out, " ", 1) < 0) ||
			    add_sanitized(out, t, tlen) < 0)
				goto fail;
			sp = true;
		}
		if (last && suffix != NULL && suffix[0] != '\0') {
			if ((sp && mbuf_add(out, " ", 1) < 0) ||
			    add_sanitized(out, suffix, strlen(suffix)) < 0)
				goto fail;
		}
		if (mbuf_add(out, "\r\n", 2) < 0)
			goto fail;
	}
	return (int)(out->len - start);
fail:
	out->len = start;
	if (out->data != NULL)
		out->data[start] = '\0';
	return -1;
}

int
smtp_reply_lines(struct mbuf *out, int code, const char *ecode,
		 const char *suffix, const char *const *lines, size_t nlines)
{
	struct smtp_str ls[64];

	if (nlines > ARRAY_LEN(ls))
		return -1;
	for (size_t i = 0; i < nlines; i++) {
		ls[i].p = lines[i];
		ls[i].len = strlen(lines[i]);
	}
	return reply_add(out, code, ecode, suffix, ls, nlines);
}

int
smtp_replyf(struct mbuf *out, int code, const char *ecode, const char *suffix,
	    const char *fmt, ...)
{
	char buf[4096];
	struct smtp_str ls[64];
	size_t n = 0, start = 0, len;
	va_list ap;
	int r;

	va_start(ap, fmt);
	r = vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	if (r < 0 || (size_t)r >= sizeof(buf))
		return -1;
	len = (size_t)r;
	for (size_t i = 0; i <= len; i++) {
		if (i < len && buf[i] != '\n')
			continue;
		if (n == ARRAY_LEN(ls))
			return -1;
		ls[n].p = buf + start;
		ls[n].len = i - start;
		n++;
		start = i + 1;
	}
	return reply_add(out, code, ecode, suffix, ls, n);
}

int
smtp_reply_cmd_error(struct mbuf *out, const struct smtp_cmd *cmd,
		     const char *suffix)
{
	struct smtp_str l = {cmd->msg, strlen(cmd->msg)};
	int code = cmd->code ? cmd->code : 500;

	return reply_add(out, code, cmd->ecode ? cmd->ecode : "5.5.2", suffix,
			 &l, 1);
}

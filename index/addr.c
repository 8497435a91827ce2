/*
 * mime addresses: RFC 5322 address-list parsing into IMAP envelope form.
 * Lenient by design: obsolete syntax (routes, CFWS around dots, missing
 * parts) and plain garbage yield the best-effort addresses IMAP clients
 * expect (the conventions of common servers: "MISSING_DOMAIN" for a missing
 * host, a comment as display name when there is none), never an error.
 * Groups become a start marker (mailbox = group name, host NIL) and an end
 * marker (all NIL).
 */
#include "index/mime.h"

#include <string.h>

#define MAX_ADDRS 10000

struct addr_buf {
	TCMPOOL *pool;
	struct mime_addr *v;
	uint32_t n, cap;
};

struct lex {
	const char *p, *e;
	const char *comment; /* last top-level comment text, for the name fallback */
	size_t clen;
};

static char *
adup(TCMPOOL *pool, const char *s, size_t n)
{
	char *d = tcmpoolmalloc(pool, n + 1);
	memcpy(d, s, n);
	d[n] = '\0';
	return d;
}

static void
push(struct addr_buf *b, const char *name, const char *adl, const char *mailbox, const char *host)
{
	if (b->n >= MAX_ADDRS)
		return;
	if (b->n == b->cap) {
		b->cap = b->cap ? b->cap * 2 : 4;
		b->v = tcrealloc(b->v, sizeof(*b->v) * b->cap);
	}
	b->v[b->n].name = name;
	b->v[b->n].adl = adl;
	b->v[b->n].mailbox = mailbox;
	b->v[b->n].host = host;
	b->n++;
}

static bool
is_atext(unsigned char c)
{
	if (c >= 0x80)
		return true; /* RFC 6532 UTF-8 */
	if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
		return true;
	return c != 0 && strchr("!#$%&'*+-/=?^_`{|}~", c) != NULL;
}

static void
skip_cfws(struct lex *l)
{
	while (l->p < l->e) {
		char c = *l->p;
		if (c == ' ' || c == '\t' || c == '\r' || c == '\n') {
			l->p++;
			continue;
		}
		if (c != '(')
			break;
		int depth = 0;
		const char *b = l->p + 1;
		while (l->p < l->e) {
			if (*l->p == '\\' && l->p + 1 < l->e)
				l->p++;
			else if (*l->p == '(')
				depth++;
			else if (*l->p == ')' && --depth == 0)
				break;
			l->p++;
		}
		const char *ce = l->p < l->e ? l->p : l->e;
		if (l->p < l->e)
			l->p++;
		while (b < ce && (*b == ' ' || *b == '\t'))
			b++;
		size_t n = (size_t)(ce - b);
		while (n > 0 && (b[n - 1] == ' ' || b[n - 1] == '\t'))
			n--;
		if (n > 0) {
			l->comment = b;
			l->clen = n;
		}
	}
}

/* Read a quoted string (at '"') and append its unescaped content. */
static void
read_quoted(struct lex *l, TCXSTR *out)
{
	l->p++;
	while (l->p < l->e && *l->p != '"') {
		if (*l->p == '\\' && l->p + 1 < l->e)
			l->p++;
		if (*l->p != '\r' && *l->p != '\n')
			tcxstrcat(out, l->p, 1);
		l->p++;
	}
	if (l->p < l->e)
		l->p++;
}

/*
 * Read words (atoms with dots, quoted strings) until a special that ends
 * them. phrase gets them space-separated, local concatenated.
 */
static void
read_words(struct lex *l, TCXSTR *phrase, TCXSTR *local, const char *stop)
{
	for (;;) {
		skip_cfws(l);
		if (l->p >= l->e || strchr(stop, *l->p) != NULL)
			return;
		if (TCXSTRSIZE(phrase) > 0)
			tcxstrcat(phrase, " ", 1);
		if (*l->p == '"') {
			size_t before = (size_t)TCXSTRSIZE(phrase);
			read_quoted(l, phrase);
			tcxstrcat(local, TCXSTRPTR(phrase) + before, (int)(TCXSTRSIZE(phrase) - before));
		} else if (is_atext((unsigned char)*l->p) || *l->p == '.') {
			const char *b = l->p;
			while (l->p < l->e && (is_atext((unsigned char)*l->p) || *l->p == '.'))
				l->p++;
			tcxstrcat(phrase, b, (int)(l->p - b));
			tcxstrcat(local, b, (int)(l->p - b));
		} else {
			l->p++; /* junk such as a stray '>' or ')' */
		}
	}
}

/* Read a domain (dot-atoms or a literal) with CFWS dropped. */
static void
read_domain(struct lex *l, TCXSTR *out)
{
	for (;;) {
		skip_cfws(l);
		if (l->p >= l->e)
			return;
		if (*l->p == '[') {
			const char *b = l->p;
			while (l->p < l->e && *l->p != ']')
				l->p++;
			if (l->p < l->e)
				l->p++;
			tcxstrcat(out, b, (int)(l->p - b));
		} else if (is_atext((unsigned char)*l->p) || *l->p == '.') {
			const char *b = l->p;
			while (l->p < l->e && (is_atext((unsigned char)*l->p) || *l->p == '.'))
				l->p++;
			tcxstrcat(out, b, (int)(l->p - b));
		} else {
			return;
		}
	}
}

static const char *
xdup(TCMPOOL *pool, TCXSTR *x)
{
	return adup(pool, TCXSTRPTR(x), (size_t)TCXSTRSIZE(x));
}

static void parse_list(struct lex *l, struct addr_buf *b, bool in_group);

static void
parse_angle(struct lex *l, struct addr_buf *b, const char *name)
{
	TCXSTR *adl = tcxstrnew(), *phrase = tcxstrnew(), *local = tcxstrnew(),
	       *dom = tcxstrnew();
	l->p++;
	skip_cfws(l);
	if (l->p < l->e && *l->p == '@') {
		/* obsolete route: @a,@b: */
		while (l->p < l->e && *l->p != ':' && *l->p != '>') {
			if (*l->p != ' ' && *l->p != '\t' && *l->p != '\r' && *l->p != '\n')
				tcxstrcat(adl, l->p, 1);
			l->p++;
		}
		if (l->p < l->e && *l->p == ':')
			l->p++;
	}
	read_words(l, phrase, local, "@>,;<:");
	if (l->p < l->e && *l->p == '@') {
		l->p++;
		read_domain(l, dom);
	}
	while (l->p < l->e && *l->p != '>' && *l->p != ',')
		l->p++;
	if (l->p < l->e && *l->p == '>')
		l->p++;
	if (TCXSTRSIZE(local) > 0 || TCXSTRSIZE(dom) > 0) {
		push(b, name, TCXSTRSIZE(adl) > 0 ? xdup(b->pool, adl) : NULL,
		     TCXSTRSIZE(local) > 0 ? xdup(b->pool, local) : "MISSING_MAILBOX",
		     TCXSTRSIZE(dom) > 0 ? xdup(b->pool, dom) : "MISSING_DOMAIN");
	}
	tcxstrdel(adl);
	tcxstrdel(phrase);
	tcxstrdel(local);
	tcxstrdel(dom);
}

static void
parse_address(struct lex *l, struct addr_buf *b, bool in_group)
{
	TCXSTR *phrase = tcxstrnew(), *local = tcxstrnew();
	l->comment = NULL;
	read_words(l, phrase, local, ":<@,;");
	const char *name = TCXSTRSIZE(phrase) > 0 ? xdup(b->pool, phrase) : NULL;
	char c = l->p < l->e ? *l->p : '\0';
	if (c == ':' && !in_group) {
		l->p++;
		push(b, NULL, NULL, name ? name : "", NULL);
		parse_list(l, b, true);
		if (l->p < l->e && *l->p == ';')
			l->p++;
		push(b, NULL, NULL, NULL, NULL);
	} else if (c == ':') {
		l->p++; /* a group inside a group is not allowed: skip the colon */
	} else if (c == '<') {
		const char *cm = l->comment;
		size_t cml = l->clen;
		l->comment = NULL;
		parse_angle(l, b, name);
		skip_cfws(l);
		if (name == NULL && b->n > 0 && (l->comment || cm)) {
			b->v[b->n - 1].name = l->comment ? adup(b->pool, l->comment, l->clen)
							 : adup(b->pool, cm, cml);
		}
	} else if (c == '@') {
		TCXSTR *dom = tcxstrnew();
		l->p++;
		read_domain(l, dom);
		skip_cfws(l);
		push(b, l->comment ? adup(b->pool, l->comment, l->clen) : NULL, NULL,
		     TCXSTRSIZE(local) > 0 ? xdup(b->pool, local) : "MISSING_MAILBOX",
		     TCXSTRSIZE(dom) > 0 ? xdup(b->pool, dom) : "MISSING_DOMAIN");
		tcxstrdel(dom);
	} else if (TCXSTRSIZE(local) > 0) {
		/* a bare word: a local part without a domain */
		push(b, l->comment ? adup(b->pool, l->comment, l->clen) : NULL, NULL,
		     xdup(b->pool, local), "MISSING_DOMAIN");
	}
	/* skip what is left of this address */
	while (l->p < l->e && *l->p != ',' && !(*l->p == ';' && in_group)) {
		if (*l->p == '"') {
			TCXSTR *junk = tcxstrnew();
			read_quoted(l, junk);
			tcxstrdel(junk);
		} else {
			l->p++;
		}
	}
	tcxstrdel(phrase);
	tcxstrdel(local);
}

static void
parse_list(struct lex *l, struct addr_buf *b, bool in_group)
{
	for (;;) {
		skip_cfws(l);
		if (l->p >= l->e)
			return;
		if (*l->p == ',') {
			l->p++;
			continue;
		}
		if (*l->p == ';') {
			if (in_group)
				return;
			l->p++;
			continue;
		}
		const char *before = l->p;
		parse_address(l, b, in_group);
		if (l->p == before)
			l->p++; /* guarantee progress */
	}
}

int
mime_addr_parse(const char *s, size_t len, TCMPOOL *pool, struct mime_addrlist *out)
{
	struct addr_buf b = { pool, NULL, 0, 0 };
	struct lex l = { s, s + len, NULL, 0 };
	parse_list(&l, &b, false);
	out->n = b.n;
	out->v = NULL;
	if (b.n > 0) {
		out->v = tcmpoolmalloc(pool, sizeof(*out->v) * b.n);
		memcpy(out->v, b.v, sizeof(*out->v) * b.n);
	}
	tcfree(b.v);
	return (int)b.n;
}

/*
 * mime: message parser (header fields, MIME part tree, envelope, threading
 * inputs) plus the RFC 2047 decoder, RFC 5256 base subject and date parser.
 *
 * Design note. The whole message is in memory (the caller mmaps it), so the
 * parser is a recursive descent over byte ranges rather than a streaming
 * state machine: every part is a [start, end) range of the buffer, and a
 * multipart only looks for its own boundary inside the range its parent gave
 * it, which already stops at the parent's next delimiter line. Invariants:
 * recursion depth <= lim.max_depth + 1, parts created <= lim.max_parts, only
 * the first lim.max_header bytes of a header are interpreted. Anything that
 * hits a limit or does not parse stays an opaque body; the parser has no
 * failure path for content.
 */
#include "index/mime.h"

#include <string.h>
#include <strings.h>

#define DEF_MAX_DEPTH 50
#define DEF_MAX_PARTS 10000
#define DEF_MAX_HEADER (256 * 1024)
#define MAX_BOUNDARY 200
#define MAX_RAW_PARAMS 256
#define MAX_2231_SECTION 999
#define MAX_REFS 1000
#define MAX_LANGS 64

struct mime_ctx {
	const char *buf;
	size_t len;
	struct mime_limits lim;
	TCMPOOL *pool;
	unsigned nparts;
};

/* Header fields of one part that the part tree and envelope need. */
struct part_hdr {
	const char *f[20];
	size_t flen[20];
};

enum {
	H_CTYPE, H_CTE, H_CID, H_CDESC, H_CDISP, H_CLANG, H_CLOC, H_CMD5,
	H_DATE, H_SUBJECT, H_FROM, H_SENDER, H_REPLY_TO, H_TO, H_CC, H_BCC,
	H_IN_REPLY_TO, H_MESSAGE_ID, H_REFERENCES, H_COUNT
};

static const char *const hdr_names[H_COUNT] = {
	"content-type", "content-transfer-encoding", "content-id", "content-description",
	"content-disposition", "content-language", "content-location", "content-md5",
	"date", "subject", "from", "sender", "reply-to", "to", "cc", "bcc",
	"in-reply-to", "message-id", "references",
};

void
mime_limits_init(struct mime_limits *l)
{
	l->max_depth = DEF_MAX_DEPTH;
	l->max_parts = DEF_MAX_PARTS;
	l->max_header = DEF_MAX_HEADER;
}

static char *
pdup(TCMPOOL *pool, const char *s, size_t n)
{
	char *d = tcmpoolmalloc(pool, n + 1);
	memcpy(d, s, n);
	d[n] = '\0';
	return d;
}

static bool
is_wsp(int c)
{
	return c == ' ' || c == '\t';
}

static int
lower(int c)
{
	return c >= 'A' && c <= 'Z' ? c + 32 : c;
}

static bool
ieq_n(const char *a, size_t alen, const char *b)
{
	size_t blen = strlen(b);
	if (alen != blen)
		return false;
	for (size_t i = 0; i < alen; i++)
		if (lower((unsigned char)a[i]) != lower((unsigned char)b[i]))
			return false;
	return true;
}

static bool
istarts(const char *s, size_t len, const char *prefix)
{
	size_t n = strlen(prefix);
	return len >= n && ieq_n(s, n, prefix);
}

/* Unfold a raw header value: drop line breaks, trim surrounding whitespace. */
static char *
unfold(TCMPOOL *pool, const char *s, size_t n)
{
	char *d = tcmpoolmalloc(pool, n + 1);
	size_t j = 0;
	for (size_t i = 0; i < n; i++) {
		if (s[i] == '\n' || (s[i] == '\r' && i + 1 < n && s[i + 1] == '\n'))
			continue;
		d[j++] = s[i];
	}
	size_t b = 0;
	while (b < j && (is_wsp(d[b]) || d[b] == '\r'))
		b++;
	while (j > b && (is_wsp(d[j - 1]) || d[j - 1] == '\r'))
		j--;
	memmove(d, d + b, j - b);
	d[j - b] = '\0';
	return d;
}

static void
count_lines(const char *s, size_t n, uint64_t *lines_r, uint64_t *bare_r)
{
	uint64_t lines = 0, bare = 0;
	const char *p = s, *e = s + n;
	while (p < e && (p = memchr(p, '\n', (size_t)(e - p))) != NULL) {
		lines++;
		if (p == s || p[-1] != '\r')
			bare++;
		p++;
	}
	*lines_r = lines;
	*bare_r = bare;
}

/* ---- UTF-8 and charsets ---- */

/* Append s as valid UTF-8, replacing invalid sequences by U+FFFD. */
static void
utf8_sanitize(const unsigned char *s, size_t n, TCXSTR *out)
{
	size_t i = 0, run = 0;
	while (i < n) {
		unsigned char c = s[i];
		size_t len = 0;
		uint32_t min = 0, cp = 0;
		if (c < 0x80) {
			i++;
			continue;
		} else if (c >= 0xc2 && c <= 0xdf) {
			len = 2, min = 0x80, cp = c & 0x1f;
		} else if (c >= 0xe0 && c <= 0xef) {
			len = 3, min = 0x800, cp = c & 0x0f;
		} else if (c >= 0xf0 && c <= 0xf4) {
			len = 4, min = 0x10000, cp = c & 0x07;
		}
		bool ok = len > 0 && i + len <= n;
		for (size_t k = 1; ok && k < len; k++) {
			if ((s[i + k] & 0xc0) != 0x80)
				ok = false;
			else
				cp = (cp << 6) | (s[i + k] & 0x3f);
		}
		if (ok && (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)))
			ok = false;
		if (ok) {
			i += len;
			continue;
		}
		tcxstrcat(out, s + run, (int)(i - run));
		tcxstrcat(out, "\xef\xbf\xbd", 3);
		i++;
		run = i;
	}
	tcxstrcat(out, s + run, (int)(n - run));
}

static void
latin1_to_utf8(const unsigned char *s, size_t n, TCXSTR *out)
{
	for (size_t i = 0; i < n; i++) {
		unsigned char c = s[i];
		if (c < 0x80) {
			tcxstrcat(out, &s[i], 1);
		} else {
			char u[2] = { (char)(0xc0 | (c >> 6)), (char)(0x80 | (c & 0x3f)) };
			tcxstrcat(out, u, 2);
		}
	}
}

/* Convert to UTF-8 into out. Returns 1, or 0 when the charset is unknown. */
static int
charset_to_utf8(const char *cs, size_t cslen, const unsigned char *s, size_t n, TCXSTR *out)
{
	if (cslen == 0 || ieq_n(cs, cslen, "utf-8") || ieq_n(cs, cslen, "utf8") ||
	    ieq_n(cs, cslen, "us-ascii") || ieq_n(cs, cslen, "ascii")) {
		utf8_sanitize(s, n, out);
		return 1;
	}
	if (ieq_n(cs, cslen, "iso-8859-1") || ieq_n(cs, cslen, "iso8859-1") ||
	    ieq_n(cs, cslen, "latin1") || ieq_n(cs, cslen, "iso_8859-1") ||
	    ieq_n(cs, cslen, "latin-1")) {
		latin1_to_utf8(s, n, out);
		return 1;
	}
	return 0;
}

static int
hexval(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	c = lower(c);
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

static int
b64val(int c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '+')
		return 62;
	if (c == '/')
		return 63;
	return -1;
}

/* ---- RFC 2047 ---- */

/* Recognize an encoded-word at s; on success set its parts and return its length. */
static size_t
ew_match(const char *s, size_t n, const char **cs, size_t *cslen, char *enc, const char **text,
	 size_t *tlen)
{
	if (n < 8 || s[0] != '=' || s[1] != '?')
		return 0;
	size_t i = 2;
	while (i < n && s[i] != '?' && s[i] > ' ' && s[i] < 0x7f)
		i++;
	if (i >= n || s[i] != '?' || i == 2)
		return 0;
	*cs = s + 2;
	*cslen = i - 2;
	const char *star = memchr(*cs, '*', *cslen); /* RFC 2231 language suffix */
	if (star != NULL)
		*cslen = (size_t)(star - *cs);
	i++;
	if (i + 2 >= n || s[i + 1] != '?')
		return 0;
	*enc = (char)lower((unsigned char)s[i]);
	if (*enc != 'b' && *enc != 'q')
		return 0;
	i += 2;
	size_t t = i;
	while (i + 1 < n && !(s[i] == '?' && s[i + 1] == '=')) {
		if ((unsigned char)s[i] <= ' ')
			return 0;
		i++;
	}
	if (i + 1 >= n)
		return 0;
	*text = s + t;
	*tlen = i - t;
	return i + 2;
}

static void
ew_decode_bytes(char enc, const char *t, size_t n, TCXSTR *out)
{
	if (enc == 'q') {
		for (size_t i = 0; i < n; i++) {
			if (t[i] == '_') {
				tcxstrcat(out, " ", 1);
			} else if (t[i] == '=' && i + 2 < n && hexval((unsigned char)t[i + 1]) >= 0 &&
				   hexval((unsigned char)t[i + 2]) >= 0) {
				char c = (char)(hexval((unsigned char)t[i + 1]) * 16 +
						hexval((unsigned char)t[i + 2]));
				tcxstrcat(out, &c, 1);
				i += 2;
			} else {
				tcxstrcat(out, &t[i], 1);
			}
		}
		return;
	}
	uint32_t acc = 0;
	int bits = 0;
	for (size_t i = 0; i < n; i++) {
		int v = b64val((unsigned char)t[i]);
		if (v < 0) {
			if (t[i] == '=')
				break;
			continue;
		}
		acc = (acc << 6) | (uint32_t)v;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			char c = (char)((acc >> bits) & 0xff);
			tcxstrcat(out, &c, 1);
		}
	}
}

int
mime_decode_2047(const char *s, size_t len, TCXSTR *out)
{
	size_t i = 0, run = 0;
	bool prev_ew = false;
	TCXSTR *tmp = tcxstrnew();
	while (i < len) {
		const char *cs, *text;
		size_t cslen, tlen, n;
		char enc;
		if (s[i] == '=' && (n = ew_match(s + i, len - i, &cs, &cslen, &enc, &text, &tlen)) > 0) {
			/* whitespace only between two encoded-words is dropped */
			bool ws_only = true;
			for (size_t k = run; k < i; k++)
				if (!is_wsp(s[k]) && s[k] != '\r' && s[k] != '\n')
					ws_only = false;
			if (!(prev_ew && ws_only))
				utf8_sanitize((const unsigned char *)s + run, i - run, out);
			tcxstrclear(tmp);
			ew_decode_bytes(enc, text, tlen, tmp);
			if (!charset_to_utf8(cs, cslen, (const unsigned char *)TCXSTRPTR(tmp),
					     (size_t)TCXSTRSIZE(tmp), out))
				utf8_sanitize((const unsigned char *)s + i, n, out);
			i += n;
			run = i;
			prev_ew = true;
			continue;
		}
		if (!is_wsp(s[i]) && s[i] != '\r' && s[i] != '\n')
			prev_ew = false;
		i++;
	}
	utf8_sanitize((const unsigned char *)s + run, len - run, out);
	tcxstrdel(tmp);
	return 1;
}

/* ---- RFC 5256 base subject ---- */

/* Length of a subj-blob ("[" *BLOBCHAR "]" *WSP) at s[b..e), or 0. */
static size_t
blob_len(const char *s, size_t b, size_t e)
{
	if (b >= e || s[b] != '[')
		return 0;
	size_t i = b + 1;
	while (i < e && s[i] != '[' && s[i] != ']')
		i++;
	if (i >= e || s[i] != ']')
		return 0;
	i++;
	while (i < e && s[i] == ' ')
		i++;
	return i - b;
}

/* Length of a subj-leader at s[b..e), or 0. */
static size_t
leader_len(const char *s, size_t b, size_t e)
{
	static const char *const words[] = { "re", "fwd", "fw", "aw", "sv", "antw", "vs",
					     "ref", "tr" };
	if (b < e && s[b] == ' ')
		return 1;
	size_t q = b, n;
	while ((n = blob_len(s, q, e)) > 0)
		q += n;
	for (size_t w = 0; w < sizeof(words) / sizeof(words[0]); w++) {
		size_t wl = strlen(words[w]);
		if (!istarts(s + q, e - q, words[w]))
			continue;
		size_t i = q + wl;
		while (i < e && s[i] == ' ')
			i++;
		i += blob_len(s, i, e);
		if (i < e && s[i] == ':')
			return i + 1 - b;
	}
	return 0;
}

static void
fold_case(char *s, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c >= 'A' && c <= 'Z') {
			s[i] = (char)(c + 32);
		} else if (c == 0xc3 && i + 1 < n) {
			/* Latin-1 supplement capitals U+00C0..U+00DE except U+00D7 */
			unsigned char d = (unsigned char)s[i + 1];
			if (d >= 0x80 && d <= 0x9e && d != 0x97)
				s[i + 1] = (char)(d + 0x20);
			i++;
		}
	}
}

int
mime_base_subject(const char *subj, size_t len, TCXSTR *out)
{
	TCXSTR *dec = tcxstrnew();
	mime_decode_2047(subj, len, dec);
	const char *d = TCXSTRPTR(dec);
	size_t dn = (size_t)TCXSTRSIZE(dec);
	char *s = tcmalloc(dn + 1);
	size_t e = 0;
	/* step 1: whitespace normalization */
	for (size_t i = 0; i < dn; i++) {
		char c = d[i];
		if (c == '\t' || c == '\r' || c == '\n')
			c = ' ';
		if (c == ' ' && (e == 0 || s[e - 1] == ' '))
			continue;
		s[e++] = c;
	}
	size_t b = 0;
	for (;;) {
		/* step 2: trailers */
		for (;;) {
			if (e > b && s[e - 1] == ' ')
				e--;
			else if (e - b >= 5 && ieq_n(s + e - 5, 5, "(fwd)"))
				e -= 5;
			else
				break;
		}
		/* steps 3 and 4: leaders and blobs */
		for (;;) {
			size_t n = leader_len(s, b, e);
			if (n > 0) {
				b += n;
				continue;
			}
			n = blob_len(s, b, e);
			if (n > 0 && b + n < e) {
				b += n;
				continue;
			}
			break;
		}
		/* step 5: [fwd: ...] wrapper */
		if (e - b >= 6 && istarts(s + b, e - b, "[fwd:") && s[e - 1] == ']') {
			b += 5;
			e--;
			continue;
		}
		break;
	}
	fold_case(s + b, e - b);
	tcxstrcat(out, s + b, (int)(e - b));
	tcfree(s);
	tcxstrdel(dec);
	return 1;
}

/* ---- dates ---- */

static int64_t
days_from_civil(int64_t y, unsigned m, unsigned d)
{
	y -= m <= 2;
	int64_t era = (y >= 0 ? y : y - 399) / 400;
	unsigned yoe = (unsigned)(y - era * 400);
	unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
	unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	return era * 146097 + (int64_t)doe - 719468;
}

struct dtok {
	const char *p;
	size_t n;
	bool num;
};

/* Split a date into words (alnum runs, signs kept on numbers, ':' joins time). */
static size_t
date_tokens(const char *s, size_t len, struct dtok *t, size_t max)
{
	size_t nt = 0, i = 0;
	int depth = 0;
	while (i < len && nt < max) {
		char c = s[i];
		if (c == '(') {
			depth++;
			i++;
			continue;
		}
		if (c == ')') {
			if (depth > 0)
				depth--;
			i++;
			continue;
		}
		if (depth > 0 || !((c >= '0' && c <= '9') || (lower(c) >= 'a' && lower(c) <= 'z') ||
				   c == '+' || c == '-')) {
			i++;
			continue;
		}
		size_t b = i;
		bool num = c >= '0' && c <= '9';
		if (c == '+' || c == '-') {
			if (i + 1 < len && s[i + 1] >= '0' && s[i + 1] <= '9') {
				num = true;
				i++;
			} else {
				i++;
				continue;
			}
		}
		while (i < len && ((num && ((s[i] >= '0' && s[i] <= '9') || s[i] == ':')) ||
				   (!num && lower(s[i]) >= 'a' && lower(s[i]) <= 'z')))
			i++;
		t[nt].p = s + b;
		t[nt].n = i - b;
		t[nt].num = num;
		nt++;
	}
	return nt;
}

static int
month_of(const struct dtok *t)
{
	static const char *const m = "janfebmaraprmayjunjulaugsepoctnovdec";
	if (t->num || t->n < 3)
		return 0;
	for (int i = 0; i < 12; i++)
		if (lower(t->p[0]) == m[i * 3] && lower(t->p[1]) == m[i * 3 + 1] &&
		    lower(t->p[2]) == m[i * 3 + 2])
			return i + 1;
	return 0;
}

static long
tok_num(const struct dtok *t)
{
	long v = 0;
	for (size_t i = 0; i < t->n && i < 9; i++) {
		if (t->p[i] < '0' || t->p[i] > '9')
			return -1;
		v = v * 10 + (t->p[i] - '0');
	}
	return t->n > 0 && t->n <= 9 ? v : -1;
}

/* Zone offset in seconds; returns 0 and *ok false when unknown. */
static long
zone_of(const struct dtok *t, bool *ok)
{
	static const struct {
		const char *n;
		int h;
	} z[] = { { "ut", 0 }, { "utc", 0 }, { "gmt", 0 }, { "z", 0 }, { "est", -5 },
		  { "edt", -4 }, { "cst", -6 }, { "cdt", -5 }, { "mst", -7 }, { "mdt", -6 },
		  { "pst", -8 }, { "pdt", -7 }, { "cet", 1 }, { "cest", 2 } };
	*ok = true;
	if (t->num && (t->p[0] == '+' || t->p[0] == '-') && t->n == 5) {
		struct dtok d = { t->p + 1, 4, true };
		long v = tok_num(&d);
		if (v < 0 || v % 100 > 59)
			return 0;
		long sec = (v / 100) * 3600 + (v % 100) * 60;
		return t->p[0] == '-' ? -sec : sec;
	}
	if (!t->num) {
		for (size_t i = 0; i < sizeof(z) / sizeof(z[0]); i++)
			if (ieq_n(t->p, t->n, z[i].n))
				return z[i].h * 3600L;
		if (t->n == 1) /* military zones: unreliable, treat as UTC (RFC 5322 4.3) */
			return 0;
	}
	*ok = false;
	return 0;
}

int64_t
mime_parse_date(const char *s, size_t len)
{
	struct dtok t[12];
	size_t nt = date_tokens(s, len, t, 12), i = 0;
	long day = -1, year = -1, hh = -1, mm = -1, ss = 0;
	int mon = 0;
	if (i < nt && !t[i].num && month_of(&t[i]) == 0)
		i++; /* day of week */
	if (i < nt && !t[i].num && month_of(&t[i]) == 0)
		i++;
	if (i + 1 < nt && t[i].num && month_of(&t[i + 1]) > 0) {
		day = tok_num(&t[i]);
		mon = month_of(&t[i + 1]);
		i += 2;
		if (i < nt && t[i].num && memchr(t[i].p, ':', t[i].n) == NULL) {
			year = tok_num(&t[i]);
			if (t[i].p[0] == '-' && t[i].n > 1) {
				struct dtok y = { t[i].p + 1, t[i].n - 1, true };
				year = tok_num(&y);
			}
			i++;
		}
	} else if (i + 1 < nt && month_of(&t[i]) > 0 && t[i + 1].num) {
		/* asctime: Mon Jan  2 15:04:05 2006 */
		mon = month_of(&t[i]);
		day = tok_num(&t[i + 1]);
		i += 2;
	} else {
		return -1;
	}
	if (i < nt && t[i].num && memchr(t[i].p, ':', t[i].n) != NULL) {
		const char *p = t[i].p, *e = t[i].p + t[i].n;
		long f[3] = { -1, -1, 0 };
		int k = 0;
		while (p < e && k < 3) {
			const char *c = memchr(p, ':', (size_t)(e - p));
			struct dtok d = { p, c ? (size_t)(c - p) : (size_t)(e - p), true };
			f[k++] = tok_num(&d);
			p = c ? c + 1 : e;
		}
		hh = f[0], mm = f[1], ss = f[2];
		i++;
	} else {
		return -1;
	}
	if (year < 0 && i < nt && t[i].num && t[i].p[0] != '+' && t[i].p[0] != '-') {
		year = tok_num(&t[i]);
		i++;
	}
	long zone = 0;
	if (i < nt) {
		bool ok;
		zone = zone_of(&t[i], &ok);
		if (!ok)
			zone = 0;
	}
	if (year < 0 || day < 1 || day > 31 || hh < 0 || hh > 23 || mm < 0 || mm > 59 || ss < 0 ||
	    ss > 60)
		return -1;
	if (year < 50)
		year += 2000;
	else if (year < 1000)
		year += 1900;
	if (year > 9999)
		return -1;
	int64_t days = days_from_civil(year, (unsigned)mon, (unsigned)day);
	return days * 86400 + hh * 3600 + mm * 60 + ss - zone;
}

/* ---- RFC 2045 lexing ---- */

static const char *
skip_cfws(const char *p, const char *e)
{
	while (p < e) {
		if (is_wsp(*p) || *p == '\r' || *p == '\n') {
			p++;
		} else if (*p == '(') {
			int depth = 0;
			while (p < e) {
				if (*p == '\\' && p + 1 < e)
					p++;
				else if (*p == '(')
					depth++;
				else if (*p == ')' && --depth == 0) {
					p++;
					break;
				}
				p++;
			}
		} else {
			break;
		}
	}
	return p;
}

static bool
is_token_char(unsigned char c)
{
	return c > ' ' && c != 0x7f && strchr("()<>@,;:\\\"/[]?=", c) == NULL;
}

static const char *
token_end(const char *p, const char *e)
{
	while (p < e && is_token_char((unsigned char)*p))
		p++;
	return p;
}

static char *
lower_dup(TCMPOOL *pool, const char *s, size_t n)
{
	char *d = pdup(pool, s, n);
	for (size_t i = 0; i < n; i++)
		d[i] = (char)lower((unsigned char)d[i]);
	return d;
}

struct raw_param {
	const char *name;
	size_t nlen;
	char *value; /* unquoted, pool */
	size_t vlen;
	int used;
};

/* Parse ";name=value" pairs from p; returns the count placed into rp. */
static size_t
params_raw(TCMPOOL *pool, const char *p, const char *e, struct raw_param *rp, size_t max)
{
	size_t n = 0;
	while (p < e && n < max) {
		while (p < e && *p != ';') {
			if (*p == '"') { /* skip a stray quoted string whole */
				p++;
				while (p < e && *p != '"')
					p += (*p == '\\' && p + 1 < e) ? 2 : 1;
			}
			if (p < e)
				p++;
		}
		if (p >= e)
			break;
		p = skip_cfws(p + 1, e);
		const char *nb = p;
		p = token_end(p, e);
		size_t nlen = (size_t)(p - nb);
		p = skip_cfws(p, e);
		if (nlen == 0 || p >= e || *p != '=')
			continue;
		p = skip_cfws(p + 1, e);
		char *v;
		size_t vlen = 0;
		if (p < e && *p == '"') {
			p++;
			v = tcmpoolmalloc(pool, (size_t)(e - p) + 1);
			while (p < e && *p != '"') {
				if (*p == '\\' && p + 1 < e)
					p++;
				v[vlen++] = *p++;
			}
			if (p < e)
				p++;
			v[vlen] = '\0';
		} else {
			const char *vb = p;
			while (p < e && *p != ';' && *p != '(' && *p != '"' && !is_wsp(*p))
				p++;
			vlen = (size_t)(p - vb);
			v = pdup(pool, vb, vlen);
		}
		rp[n].name = nb;
		rp[n].nlen = nlen;
		rp[n].value = v;
		rp[n].vlen = vlen;
		rp[n].used = 0;
		n++;
	}
	return n;
}

/* Merge one RFC 2231 parameter group (all raw params sharing base name). */
static void
merge_2231(TCMPOOL *pool, struct raw_param *rp, size_t n, size_t first, size_t blen,
	   struct mime_param *out)
{
	TCXSTR *raw = tcxstrnew(), *val = tcxstrnew();
	const char *cs = "", *lang_end;
	size_t cslen = 0;
	bool found_any = false;
	for (long sec = 0; sec <= MAX_2231_SECTION; sec++) {
		size_t k;
		bool ext = false, found = false;
		for (k = first; k < n; k++) {
			const char *nm = rp[k].name;
			size_t nl = rp[k].nlen;
			if (rp[k].used || nl <= blen || nm[blen] != '*' ||
			    strncasecmp(nm, rp[first].name, blen) != 0)
				continue;
			const char *q = nm + blen + 1, *qe = nm + nl;
			long num = -1;
			if (q == qe) {
				num = 0; /* name* */
				ext = true;
			} else {
				num = 0;
				const char *d = q;
				while (q < qe && *q >= '0' && *q <= '9' && num <= MAX_2231_SECTION)
					num = num * 10 + (*q++ - '0');
				if (q == d)
					continue;
				if (q < qe && *q == '*' && q + 1 == qe)
					ext = true;
				else if (q != qe)
					continue;
			}
			if (num != sec)
				continue;
			found = true;
			rp[k].used = 1;
			break;
		}
		if (!found)
			break;
		found_any = true;
		const char *v = rp[k].value;
		size_t vl = rp[k].vlen;
		if (sec == 0 && ext) {
			const char *q1 = memchr(v, '\'', vl);
			const char *q2 = q1 ? memchr(q1 + 1, '\'', vl - (size_t)(q1 + 1 - v)) : NULL;
			if (q2 != NULL) {
				cs = v;
				cslen = (size_t)(q1 - v);
				lang_end = q2 + 1;
				tcxstrcat(raw, v, (int)(lang_end - v));
				vl -= (size_t)(lang_end - v);
				v = lang_end;
			}
		}
		tcxstrcat(raw, v, (int)vl);
		for (size_t i = 0; i < vl; i++) {
			if (ext && v[i] == '%' && i + 2 < vl && hexval((unsigned char)v[i + 1]) >= 0 &&
			    hexval((unsigned char)v[i + 2]) >= 0) {
				char c = (char)(hexval((unsigned char)v[i + 1]) * 16 +
						hexval((unsigned char)v[i + 2]));
				tcxstrcat(val, &c, 1);
				i += 2;
			} else {
				tcxstrcat(val, &v[i], 1);
			}
		}
	}
	TCXSTR *u = tcxstrnew();
	if (!found_any) {
		out->name = NULL;
	} else if (charset_to_utf8(cs, cslen, (const unsigned char *)TCXSTRPTR(val),
			    (size_t)TCXSTRSIZE(val), u)) {
		out->name = pdup(pool, rp[first].name, blen);
		out->value = pdup(pool, TCXSTRPTR(u), (size_t)TCXSTRSIZE(u));
	} else {
		char *nm = tcmpoolmalloc(pool, blen + 2);
		memcpy(nm, rp[first].name, blen);
		nm[blen] = '*';
		nm[blen + 1] = '\0';
		out->name = nm;
		out->value = pdup(pool, TCXSTRPTR(raw), (size_t)TCXSTRSIZE(raw));
	}
	tcxstrdel(u);
	tcxstrdel(raw);
	tcxstrdel(val);
}

/* Parse parameters after p into a pool array; returns the count. */
static uint32_t
params_parse(TCMPOOL *pool, const char *p, const char *e, struct mime_param **out)
{
	struct raw_param *rp = tcmalloc(sizeof(*rp) * MAX_RAW_PARAMS);
	size_t n = params_raw(pool, p, e, rp, MAX_RAW_PARAMS);
	struct mime_param *v = n ? tcmpoolmalloc(pool, sizeof(*v) * n) : NULL;
	uint32_t nv = 0;
	for (size_t i = 0; i < n; i++) {
		if (rp[i].used)
			continue;
		const char *star = memchr(rp[i].name, '*', rp[i].nlen);
		if (star == NULL) {
			/* a plain name loses to an RFC 2231 form of the same name */
			bool shadowed = false;
			for (size_t k = 0; k < n; k++)
				if (rp[k].nlen > rp[i].nlen && rp[k].name[rp[i].nlen] == '*' &&
				    strncasecmp(rp[k].name, rp[i].name, rp[i].nlen) == 0)
					shadowed = true;
			bool dup = false;
			for (uint32_t k = 0; k < nv; k++)
				if (ieq_n(rp[i].name, rp[i].nlen, v[k].name))
					dup = true;
			rp[i].used = 1;
			if (shadowed || dup)
				continue;
			v[nv].name = pdup(pool, rp[i].name, rp[i].nlen);
			v[nv].value = rp[i].value;
			nv++;
			continue;
		}
		size_t blen = (size_t)(star - rp[i].name);
		if (blen == 0) {
			rp[i].used = 1;
			continue;
		}
		merge_2231(pool, rp, n, i, blen, &v[nv]);
		rp[i].used = 1; /* a lone section without section 0 */
		bool dup = v[nv].name == NULL;
		for (uint32_t k = 0; k < nv && !dup; k++)
			if (strcasecmp(v[k].name, v[nv].name) == 0)
				dup = true;
		if (!dup)
			nv++;
	}
	tcfree(rp);
	*out = v;
	return nv;
}

/* ---- header ---- */

/* Is the line at p (content length n, no line break) a "name:" field line? */
static bool
is_field_line(const char *p, size_t n)
{
	size_t i = 0;
	while (i < n && p[i] != ':' && (unsigned char)p[i] > ' ' && p[i] != 0x7f)
		i++;
	/* tolerate "Name :" (obsolete whitespace before the colon) */
	size_t j = i;
	while (j < n && is_wsp(p[j]))
		j++;
	return i > 0 && j < n && p[j] == ':';
}

/*
 * Scan the header starting at start within [start, end): sets the header
 * end (after the blank line if any) and records the interesting fields
 * (first occurrence wins) found in the first max_header bytes.
 */
static size_t
header_scan(const struct mime_ctx *c, size_t start, size_t end, struct part_hdr *h)
{
	const char *b = c->buf;
	size_t pos = start, fstart = SIZE_MAX;
	memset(h, 0, sizeof(*h));
	for (;;) {
		size_t le, cl;
		if (pos < end) {
			const char *nl = memchr(b + pos, '\n', end - pos);
			le = nl ? (size_t)(nl - b) + 1 : end;
			cl = le - pos;
			if (cl > 0 && b[pos + cl - 1] == '\n')
				cl--;
			if (cl > 0 && b[pos + cl - 1] == '\r')
				cl--;
		} else {
			le = end;
			cl = 0;
		}
		bool cont = pos < end && cl > 0 && is_wsp(b[pos]);
		if (cont && pos > start)
			goto next; /* continuation of the current field (or of junk) */
		if (fstart != SIZE_MAX && fstart - start < c->lim.max_header) {
			const char *f = b + fstart;
			size_t flen = pos - fstart, nl = 0;
			while (nl < flen && f[nl] != ':' && !is_wsp(f[nl]))
				nl++;
			const char *colon = memchr(f, ':', flen);
			for (int i = 0; colon != NULL && i < H_COUNT; i++) {
				if (h->f[i] == NULL && ieq_n(f, nl, hdr_names[i])) {
					h->f[i] = colon + 1;
					h->flen[i] = (size_t)(f + flen - (colon + 1));
					/* a giant folded field is cut, not copied whole */
					if (h->flen[i] > c->lim.max_header)
						h->flen[i] = c->lim.max_header;
					break;
				}
			}
		}
		fstart = SIZE_MAX;
		if (pos >= end)
			return end;
		if (cl == 0)
			return le; /* blank line ends the header */
		if (is_field_line(b + pos, cl))
			fstart = pos;
		else if (!cont)
			return pos; /* body without a blank line */
next:
		pos = le;
	}
}

static const char *
hval(TCMPOOL *pool, const struct part_hdr *h, int i)
{
	return h->f[i] ? unfold(pool, h->f[i], h->flen[i]) : NULL;
}

static bool
type_is(const struct mime_part *p, const char *t, const char *st)
{
	return strcmp(p->type, t) == 0 && (st == NULL || strcmp(p->subtype, st) == 0);
}

static void
content_type(struct mime_ctx *c, struct mime_part *p, const char *v, bool digest_child)
{
	if (v != NULL) {
		const char *e = v + strlen(v), *q = skip_cfws(v, e), *t = q;
		q = token_end(q, e);
		size_t tl = (size_t)(q - t);
		q = skip_cfws(q, e);
		if (tl > 0 && q < e && *q == '/') {
			q = skip_cfws(q + 1, e);
			const char *st = q;
			q = token_end(q, e);
			if (q > st) {
				p->type = lower_dup(c->pool, t, tl);
				p->subtype = lower_dup(c->pool, st, (size_t)(q - st));
				p->nparams = params_parse(c->pool, q, e, &p->params);
				return;
			}
		}
	}
	/* absent or invalid: RFC 2045 section 5.2 / RFC 2046 section 5.1.5 defaults */
	if (digest_child) {
		p->type = "message";
		p->subtype = "rfc822";
	} else {
		p->type = "text";
		p->subtype = "plain";
		p->params = tcmpoolmalloc(c->pool, sizeof(*p->params));
		p->params[0].name = "charset";
		p->params[0].value = "us-ascii";
		p->nparams = 1;
	}
}

static void
content_fields(struct mime_ctx *c, struct mime_part *p, const struct part_hdr *h)
{
	const char *v = hval(c->pool, h, H_CTE);
	if (v != NULL) {
		const char *e = v + strlen(v), *q = skip_cfws(v, e), *t = q;
		q = token_end(q, e);
		p->encoding = q > t ? pdup(c->pool, t, (size_t)(q - t)) : NULL;
	}
	p->id = hval(c->pool, h, H_CID);
	p->description = hval(c->pool, h, H_CDESC);
	p->location = hval(c->pool, h, H_CLOC);
	p->md5 = hval(c->pool, h, H_CMD5);
	v = hval(c->pool, h, H_CDISP);
	if (v != NULL) {
		const char *e = v + strlen(v), *q = skip_cfws(v, e), *t = q;
		q = token_end(q, e);
		if (q > t) {
			p->disposition = lower_dup(c->pool, t, (size_t)(q - t));
			p->ndisp_params = params_parse(c->pool, q, e, &p->disp_params);
		}
	}
	v = hval(c->pool, h, H_CLANG);
	if (v != NULL) {
		const char *e = v + strlen(v), *q = v;
		const char *tmp[MAX_LANGS];
		uint32_t n = 0;
		while (q < e && n < MAX_LANGS) {
			q = skip_cfws(q, e);
			const char *t = q;
			q = token_end(q, e);
			if (q > t)
				tmp[n++] = pdup(c->pool, t, (size_t)(q - t));
			else if (q < e)
				q++;
		}
		if (n > 0) {
			p->languages = tcmpoolmalloc(c->pool, sizeof(*p->languages) * n);
			memcpy(p->languages, tmp, sizeof(*tmp) * n);
			p->nlanguages = n;
		}
	}
}

/* First "<id>" in s with the brackets stripped, or the trimmed value. */
static const char *
msgid_norm(TCMPOOL *pool, const char *s, const char **next_r)
{
	const char *lt = strchr(s, '<');
	if (lt != NULL) {
		const char *gt = strchr(lt + 1, '>');
		if (gt == NULL) {
			*next_r = lt + strlen(lt);
			return NULL;
		}
		*next_r = gt + 1;
		return gt > lt + 1 ? pdup(pool, lt + 1, (size_t)(gt - lt - 1)) : NULL;
	}
	*next_r = s + strlen(s);
	size_t n = strlen(s);
	if (n == 0 || strpbrk(s, " \t") != NULL)
		return NULL;
	return pdup(pool, s, n);
}

static void
envelope_fields(struct mime_ctx *c, struct mime_envelope *env, const struct part_hdr *h)
{
	static const int addr_hdr[MIME_ENV_NADDR] = { H_FROM, H_SENDER, H_REPLY_TO,
						      H_TO, H_CC, H_BCC };
	env->date = hval(c->pool, h, H_DATE);
	env->subject = hval(c->pool, h, H_SUBJECT);
	env->in_reply_to = hval(c->pool, h, H_IN_REPLY_TO);
	env->message_id = hval(c->pool, h, H_MESSAGE_ID);
	for (int i = 0; i < MIME_ENV_NADDR; i++) {
		int k = addr_hdr[i];
		if (h->f[k] != NULL)
			mime_addr_parse(h->f[k], h->flen[k], c->pool, &env->addr[i]);
	}
}

static void parse_part(struct mime_ctx *c, struct mime_part *p, size_t start, size_t end,
		       unsigned depth, bool digest_child, struct mime_envelope *env,
		       struct part_hdr *h);

/* Is there a delimiter line "--boundary" at line start d? Sets close and line end. */
static bool
delim_at(const struct mime_ctx *c, size_t d, size_t end, const char *bd, size_t bl,
	 bool *close_r, size_t *le_r)
{
	const char *b = c->buf;
	if (end - d < bl + 2 || b[d] != '-' || b[d + 1] != '-' || memcmp(b + d + 2, bd, bl) != 0)
		return false;
	size_t q = d + 2 + bl;
	*close_r = q + 2 <= end && b[q] == '-' && b[q + 1] == '-';
	if (*close_r)
		q += 2;
	while (q < end && (is_wsp(b[q]) || b[q] == '\r'))
		q++;
	if (q < end && b[q] != '\n' && !*close_r)
		return false;
	const char *nl = memchr(b + q, '\n', end - q);
	*le_r = nl ? (size_t)(nl - b) + 1 : end;
	return true;
}

/* Next delimiter line at or after from; returns its start or SIZE_MAX. */
static size_t
delim_next(const struct mime_ctx *c, size_t from, size_t end, const char *bd, size_t bl,
	   bool *close_r, size_t *le_r)
{
	const char *b = c->buf;
	size_t d = from;
	if (d < end && (d == 0 || b[d - 1] == '\n') && delim_at(c, d, end, bd, bl, close_r, le_r))
		return d;
	while (d < end) {
		const char *nl = memchr(b + d, '\n', end - d);
		if (nl == NULL)
			return SIZE_MAX;
		d = (size_t)(nl - b) + 1;
		if (d + 1 < end && b[d] == '-' && b[d + 1] == '-' &&
		    delim_at(c, d, end, bd, bl, close_r, le_r))
			return d;
	}
	return SIZE_MAX;
}

struct range {
	size_t s, e;
};

static void
parse_multipart(struct mime_ctx *c, struct mime_part *p, unsigned depth)
{
	const char *bd = NULL;
	for (uint32_t i = 0; i < p->nparams; i++)
		if (strcasecmp(p->params[i].name, "boundary") == 0)
			bd = p->params[i].value;
	size_t bl = bd ? strlen(bd) : 0;
	size_t start = p->body_off, end = p->body_off + p->body_len;
	if (bl == 0 || bl > MAX_BOUNDARY) {
		p->flags |= MIME_PART_OPAQUE;
		return;
	}
	size_t cap = 8, n = 0;
	struct range *r = tcmalloc(sizeof(*r) * cap);
	bool close = false;
	size_t le = 0;
	size_t d = delim_next(c, start, end, bd, bl, &close, &le);
	while (d != SIZE_MAX && !close) {
		if (c->nparts + n >= c->lim.max_parts) {
			p->flags |= MIME_PART_OPAQUE;
			break;
		}
		size_t ps = le;
		size_t nd = delim_next(c, ps, end, bd, bl, &close, &le);
		size_t pe = end;
		if (nd != SIZE_MAX) {
			pe = nd;
			if (pe > ps && c->buf[pe - 1] == '\n')
				pe--;
			if (pe > ps && c->buf[pe - 1] == '\r')
				pe--;
		}
		if (n == cap) {
			cap *= 2;
			r = tcrealloc(r, sizeof(*r) * cap);
		}
		r[n].s = ps;
		r[n].e = pe;
		n++;
		d = nd;
	}
	if (n == 0) {
		p->flags |= MIME_PART_OPAQUE;
		tcfree(r);
		return;
	}
	c->nparts += (unsigned)n;
	p->children = tcmpoolmalloc(c->pool, sizeof(*p->children) * n);
	memset(p->children, 0, sizeof(*p->children) * n);
	p->nchildren = (uint32_t)n;
	bool digest = strcmp(p->subtype, "digest") == 0;
	struct part_hdr *h = tcmalloc(sizeof(*h));
	for (size_t i = 0; i < n; i++)
		parse_part(c, &p->children[i], r[i].s, r[i].e, depth + 1, digest, NULL, h);
	tcfree(h);
	tcfree(r);
}

static void
threading_fields(struct mime_ctx *c, struct mime_msg *m, const struct part_hdr *h)
{
	const char *v, *next;
	if ((v = hval(c->pool, h, H_MESSAGE_ID)) != NULL)
		m->msgid = msgid_norm(c->pool, v, &next);
	if ((v = hval(c->pool, h, H_IN_REPLY_TO)) != NULL)
		m->in_reply_to_id = msgid_norm(c->pool, v, &next);
	if ((v = hval(c->pool, h, H_REFERENCES)) != NULL) {
		size_t cap = 0;
		const char **refs = NULL;
		uint32_t n = 0;
		while (*v != '\0' && n < MAX_REFS) {
			if (strchr(v, '<') == NULL)
				break;
			const char *id = msgid_norm(c->pool, v, &next);
			v = next;
			if (id == NULL)
				continue;
			if (n == cap) {
				cap = cap ? cap * 2 : 8;
				refs = tcrealloc(refs, sizeof(*refs) * cap);
			}
			refs[n++] = id;
		}
		if (n > 0) {
			m->refs = tcmpoolmalloc(c->pool, sizeof(*refs) * n);
			memcpy(m->refs, refs, sizeof(*refs) * n);
			m->nrefs = n;
		}
		tcfree(refs);
	}
	TCXSTR *bs = tcxstrnew();
	if (h->f[H_SUBJECT] != NULL) {
		const char *s = unfold(c->pool, h->f[H_SUBJECT], h->flen[H_SUBJECT]);
		mime_base_subject(s, strlen(s), bs);
	}
	m->base_subject = pdup(c->pool, TCXSTRPTR(bs), (size_t)TCXSTRSIZE(bs));
	tcxstrdel(bs);
	m->date = -1;
	if ((v = hval(c->pool, h, H_DATE)) != NULL)
		m->date = mime_parse_date(v, strlen(v));
}

/*
 * Parse the part in [start, end): header, content fields, and (within the
 * limits) its children. env is non-NULL when the part is a message (root or
 * encapsulated), whose header also carries the envelope. h is scratch.
 */
static void
parse_part(struct mime_ctx *c, struct mime_part *p, size_t start, size_t end, unsigned depth,
	   bool digest_child, struct mime_envelope *env, struct part_hdr *h)
{
	uint64_t lines, bare;
	size_t he = header_scan(c, start, end, h);
	p->hdr_off = start;
	p->hdr_len = he - start;
	count_lines(c->buf + start, he - start, &lines, &bare);
	p->hdr_vsize = p->hdr_len + bare;
	p->body_off = he;
	p->body_len = end - he;
	count_lines(c->buf + he, end - he, &lines, &bare);
	p->body_lines = lines;
	p->body_vsize = p->body_len + bare;
	content_type(c, p, hval(c->pool, h, H_CTYPE), digest_child);
	content_fields(c, p, h);
	if (env != NULL)
		envelope_fields(c, env, h);
	if (strcmp(p->type, "multipart") == 0) {
		if (depth >= c->lim.max_depth)
			p->flags |= MIME_PART_OPAQUE;
		else
			parse_multipart(c, p, depth);
	} else if (type_is(p, "message", "rfc822") || type_is(p, "message", "global")) {
		/* an encoded message cannot be parsed in place */
		bool identity = p->encoding == NULL || strcasecmp(p->encoding, "7bit") == 0 ||
				strcasecmp(p->encoding, "8bit") == 0 ||
				strcasecmp(p->encoding, "binary") == 0;
		if (depth >= c->lim.max_depth || c->nparts >= c->lim.max_parts || !identity) {
			p->flags |= MIME_PART_OPAQUE;
			return;
		}
		c->nparts++;
		p->children = tcmpoolmalloc(c->pool, sizeof(*p->children));
		memset(p->children, 0, sizeof(*p->children));
		p->nchildren = 1;
		p->env = tcmpoolmalloc(c->pool, sizeof(*p->env));
		memset(p->env, 0, sizeof(*p->env));
		struct part_hdr *ch = tcmalloc(sizeof(*ch));
		parse_part(c, &p->children[0], p->body_off, end, depth + 1, false, p->env, ch);
		tcfree(ch);
	}
}

int
mime_parse(const char *buf, size_t len, const struct mime_limits *lim, struct mime_msg **msg_r)
{
	struct mime_ctx c;
	memset(&c, 0, sizeof(c));
	c.buf = buf;
	c.len = len;
	if (lim != NULL)
		c.lim = *lim;
	else
		mime_limits_init(&c.lim);
	c.pool = tcmpoolnew();
	c.nparts = 1;
	struct mime_msg *m = tcmpoolmalloc(c.pool, sizeof(*m));
	memset(m, 0, sizeof(*m));
	m->pool = c.pool;
	struct part_hdr h;
	parse_part(&c, &m->root, 0, len, 0, false, &m->env, &h);
	/* children got their own scratch headers, so h still holds the root's */
	threading_fields(&c, m, &h);
	*msg_r = m;
	return 1;
}

void
mime_msg_free(struct mime_msg **msg)
{
	if (msg == NULL || *msg == NULL)
		return;
	tcmpooldel((*msg)->pool);
	*msg = NULL;
}

const struct mime_part *
mime_part_find(const struct mime_msg *m, const uint32_t *nums, size_t n, bool *is_msg_r)
{
	const struct mime_part *p = &m->root;
	bool message = true; /* p is a message: a non-multipart one is its own part 1 */
	for (size_t i = 0; i < n; i++) {
		if (i > 0 && p->env != NULL && p->nchildren == 1) {
			p = &p->children[0];
			message = true;
		}
		if (strcmp(p->type, "multipart") == 0 && p->nchildren > 0) {
			if (nums[i] < 1 || nums[i] > p->nchildren)
				return NULL;
			p = &p->children[nums[i] - 1];
		} else if (!message || nums[i] != 1) {
			return NULL;
		}
		message = false;
	}
	if (is_msg_r != NULL)
		*is_msg_r = n == 0 || (p->env != NULL && p->nchildren == 1);
	return p;
}

/*
 * imap_text: case folding, dates, transfer decoding, the streaming matcher
 * and header unfolding for SEARCH and FETCH BINARY. See imap_text.h for the contract.
 *
 * The matcher keeps the last (longest needle - 1) folded bytes of a segment
 * when it makes room, so a match that straddles two feeds is still seen; it
 * folds only complete UTF-8 sequences, so the folded prefix never changes
 * once searched and the outcome is the same however the input is split.
 */
#define _GNU_SOURCE 1
#include <limits.h>
#include <string.h>
#include <strings.h>

#include <tcutil.h>

#include "daemon/imap_text.h"
#include "daemon/util.h"

/* ---- case folding ---- */

/* Simple lowercase mapping for code points whose UTF-8 form has 2 bytes. */
static uint32_t
fold_cp(uint32_t cp)
{
	if (cp >= 0xC0 && cp <= 0xDE && cp != 0xD7)
		return cp + 0x20;
	if (cp >= 0x100 && cp <= 0x17F) {
		if (cp == 0x130 || cp == 0x131 || cp == 0x138 || cp == 0x149 || cp == 0x17F)
			return cp;
		if (cp == 0x178)
			return 0xFF;
		if (cp <= 0x137 || (cp >= 0x14A && cp <= 0x177))
			return cp | 1;
		return (cp & 1) ? cp + 1 : cp;
	}
	if (cp >= 0x391 && cp <= 0x3AB && cp != 0x3A2)
		return cp + 0x20;
	if (cp == 0x3C2)
		return 0x3C3;
	if (cp >= 0x410 && cp <= 0x42F)
		return cp + 0x20;
	if (cp >= 0x400 && cp <= 0x40F)
		return cp + 0x50;
	return cp;
}

size_t
imap_text_fold(char *s, size_t len, bool final)
{
	size_t i = 0;
	while (i < len) {
		unsigned char b = (unsigned char)s[i];
		if (b < 0x80) {
			if (b >= 'A' && b <= 'Z')
				s[i] = (char)(b + 32);
			i++;
			continue;
		}
		size_t need = (b & 0xE0) == 0xC0 ? 2 : (b & 0xF0) == 0xE0 ? 3 : (b & 0xF8) == 0xF0 ? 4 : 1;
		size_t k = 1;
		while (k < need && i + k < len && ((unsigned char)s[i + k] & 0xC0) == 0x80)
			k++;
		if (k < need && i + k == len && !final)
			return i; /* may complete with the next bytes */
		if (k < need) {
			/* Malformed: step over the lead byte alone so what follows is folded. */
			i++;
			continue;
		}
		if (need == 2) {
			uint32_t cp = ((uint32_t)(b & 0x1F) << 6) | ((unsigned char)s[i + 1] & 0x3F);
			cp = fold_cp(cp);
			s[i] = (char)(0xC0 | (cp >> 6));
			s[i + 1] = (char)(0x80 | (cp & 0x3F));
		}
		i += need;
	}
	return len;
}

/* ---- dates ---- */

int64_t
imap_text_days_from_civil(int64_t y, unsigned m, unsigned d)
{
	y -= m <= 2;
	int64_t era = (y >= 0 ? y : y - 399) / 400;
	unsigned yoe = (unsigned)(y - era * 400);
	unsigned doy = (153 * (m + (m > 2 ? (unsigned)-3 : 9)) + 2) / 5 + d - 1;
	unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	return era * 146097 + (int64_t)doe - 719468;
}

int64_t
imap_text_day_of(int64_t t)
{
	if (t >= 0)
		return t / 86400;
	/* -(t / 86400) rounded away from zero, without overflowing at INT64_MIN. */
	return t / 86400 - (t % 86400 != 0);
}

/* 1..12 for the month abbreviation at s (3 bytes readable), else 0. */
static int
month_num(const char *s)
{
	static const char *mon[] = {"jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"};
	for (int i = 0; i < 12; i++)
		if (strncasecmp(s, mon[i], 3) == 0)
			return i + 1;
	return 0;
}

int
imap_text_parse_date(const char *s, size_t len, int64_t *day_r)
{
	size_t i = 0;
	unsigned d = 0, y = 0;
	while (i < len && i < 2 && s[i] >= '0' && s[i] <= '9')
		d = d * 10 + (unsigned)(s[i++] - '0');
	if (i == 0 || d < 1 || d > 31 || i + 9 != len || s[i] != '-' || s[i + 4] != '-')
		return -1;
	int m = month_num(s + i + 1);
	if (m == 0)
		return -1;
	for (size_t k = i + 5; k < len; k++) {
		if (s[k] < '0' || s[k] > '9')
			return -1;
		y = y * 10 + (unsigned)(s[k] - '0');
	}
	*day_r = imap_text_days_from_civil(y, (unsigned)m, d);
	return 1;
}

static bool
is_alpha(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

int
imap_text_sent_day(const char *s, int64_t parsed, int64_t *day_r)
{
	if (s != NULL) {
		const char *p = s;
		while (*p == ' ' || *p == '\t')
			p++;
		if (is_alpha(*p)) {
			while (is_alpha(*p))
				p++;
			while (*p == ' ' || *p == '\t' || *p == ',')
				p++;
		}
		unsigned d = 0, y = 0, nd = 0, ny = 0;
		while (*p >= '0' && *p <= '9' && nd < 2)
			d = d * 10 + (unsigned)(*p++ - '0'), nd++;
		while (*p == ' ' || *p == '\t' || *p == '-')
			p++;
		int m = strnlen(p, 3) >= 3 ? month_num(p) : 0;
		if (m > 0) {
			p += 3;
			while (is_alpha(*p))
				p++;
			while (*p == ' ' || *p == '\t' || *p == '-')
				p++;
			while (*p >= '0' && *p <= '9' && ny < 4)
				y = y * 10 + (unsigned)(*p++ - '0'), ny++;
			if (ny == 2)
				y += y < 50 ? 2000 : 1900;
			else if (ny == 3)
				y += 1900;
			if (nd > 0 && d >= 1 && d <= 31 && ny >= 2) {
				*day_r = imap_text_days_from_civil(y, (unsigned)m, d);
				return 1;
			}
		}
	}
	if (parsed >= 0) {
		*day_r = imap_text_day_of(parsed);
		return 1;
	}
	return 0;
}

/* ---- transfer decoding ---- */

enum imap_text_enc
imap_text_enc_of(const char *name)
{
	if (name == NULL || strcasecmp(name, "7bit") == 0 || strcasecmp(name, "8bit") == 0 ||
	    strcasecmp(name, "binary") == 0)
		return IMAP_TEXT_ENC_NONE;
	if (strcasecmp(name, "base64") == 0)
		return IMAP_TEXT_ENC_B64;
	if (strcasecmp(name, "quoted-printable") == 0)
		return IMAP_TEXT_ENC_QP;
	return IMAP_TEXT_ENC_UNKNOWN;
}

bool
imap_text_charset_latin1(const char *cs)
{
	/* windows-1252 differs only in 0x80-0x9F, which are rare in text. */
	return cs != NULL && (strcasecmp(cs, "iso-8859-1") == 0 || strcasecmp(cs, "latin1") == 0 ||
	    strcasecmp(cs, "windows-1252") == 0);
}

void
imap_text_decoder_init(struct imap_text_decoder *d, enum imap_text_enc enc, bool latin1)
{
	memset(d, 0, sizeof(*d));
	d->enc = enc;
	d->latin1 = latin1;
}

static int
hexval(char ch)
{
	if (ch >= '0' && ch <= '9')
		return ch - '0';
	if (ch >= 'A' && ch <= 'F')
		return ch - 'A' + 10;
	if (ch >= 'a' && ch <= 'f')
		return ch - 'a' + 10;
	return -1;
}

/* Quoted-printable states. */
enum {
	QP_TEXT,    /* in text; blanks may be held in ws */
	QP_EQ,      /* after '=' */
	QP_HEX,     /* after '=' and one hex digit (qh) */
	QP_CR,      /* after a CR in text (ws still held) */
	QP_EQ_CR,   /* after "=" CR: a soft line break if LF follows */
	QP_EQ_WS,   /* after '=' and blanks: transport padding before a soft break */
};

static size_t
qp_blanks(struct imap_text_decoder *d, char *out)
{
	size_t n = d->nws;
	if (n > 0)
		memcpy(out, d->ws, n);
	d->nws = 0;
	return n;
}

/*
 * One input byte of quoted-printable. A byte that ends an attempted escape
 * is looked at again in the text state. Output never exceeds two bytes per
 * input byte (a bare LF becomes CRLF) plus what was held back before.
 */
static size_t
qp_step(struct imap_text_decoder *d, char ch, char *out)
{
	size_t o = 0;
	for (;;) {
		switch (d->qst) {
		case QP_TEXT:
			if (ch == '=') {
				o += qp_blanks(d, out + o);
				d->qst = QP_EQ;
			} else if (ch == ' ' || ch == '\t') {
				if (d->nws == sizeof(d->ws))
					o += qp_blanks(d, out + o);
				d->ws[d->nws++] = ch;
			} else if (ch == '\r') {
				d->qst = QP_CR;
			} else if (ch == '\n') {
				d->nws = 0;
				out[o++] = '\r';
				out[o++] = '\n';
			} else {
				o += qp_blanks(d, out + o);
				out[o++] = ch;
			}
			return o;
		case QP_EQ:
			if (hexval(ch) >= 0) {
				d->qh = ch;
				d->qst = QP_HEX;
			} else if (ch == '\r') {
				d->qst = QP_EQ_CR;
			} else if (ch == '\n') {
				d->qst = QP_TEXT;
			} else if (ch == ' ' || ch == '\t') {
				d->qst = QP_EQ_WS;
			} else {
				out[o++] = '=';
				d->qst = QP_TEXT;
				continue;
			}
			return o;
		case QP_HEX:
			d->qst = QP_TEXT;
			if (hexval(ch) >= 0) {
				out[o++] = (char)(hexval(d->qh) * 16 + hexval(ch));
				return o;
			}
			out[o++] = '=';
			out[o++] = d->qh;
			continue;
		case QP_CR:
			d->qst = QP_TEXT;
			if (ch == '\n') {
				d->nws = 0;
				out[o++] = '\r';
				out[o++] = '\n';
				return o;
			}
			o += qp_blanks(d, out + o);
			out[o++] = '\r';
			continue;
		case QP_EQ_CR:
			d->qst = QP_TEXT;
			if (ch == '\n')
				return o;
			continue;
		default: /* QP_EQ_WS */
			if (ch == ' ' || ch == '\t')
				return o;
			if (ch == '\r') {
				d->qst = QP_EQ_CR;
				return o;
			}
			d->qst = QP_TEXT;
			if (ch == '\n')
				return o;
			/* Blanks after '=' that no line end follows are dropped. */
			out[o++] = '=';
			continue;
		}
	}
}

/* Widen out[0..o) from ISO-8859-1 to UTF-8 in place (room for 2 * o). Returns the new length. */
static size_t
latin1_widen(char *out, size_t o)
{
	size_t hi = 0;
	for (size_t i = 0; i < o; i++)
		hi += (unsigned char)out[i] >= 0x80;
	size_t w = o + hi;
	for (size_t i = o; i-- > 0;) {
		unsigned char ch = (unsigned char)out[i];
		if (ch < 0x80) {
			out[--w] = (char)ch;
		} else {
			out[--w] = (char)(0x80 | (ch & 0x3F));
			out[--w] = (char)(0xC0 | (ch >> 6));
		}
	}
	return o + hi;
}

size_t
imap_text_decode(struct imap_text_decoder *d, const char *in, size_t len, char *out)
{
	static const signed char b64[256] = {
		['A'] = 1, ['B'] = 2, ['C'] = 3, ['D'] = 4, ['E'] = 5, ['F'] = 6, ['G'] = 7, ['H'] = 8, ['I'] = 9,
		['J'] = 10, ['K'] = 11, ['L'] = 12, ['M'] = 13, ['N'] = 14, ['O'] = 15, ['P'] = 16, ['Q'] = 17,
		['R'] = 18, ['S'] = 19, ['T'] = 20, ['U'] = 21, ['V'] = 22, ['W'] = 23, ['X'] = 24, ['Y'] = 25,
		['Z'] = 26, ['a'] = 27, ['b'] = 28, ['c'] = 29, ['d'] = 30, ['e'] = 31, ['f'] = 32, ['g'] = 33,
		['h'] = 34, ['i'] = 35, ['j'] = 36, ['k'] = 37, ['l'] = 38, ['m'] = 39, ['n'] = 40, ['o'] = 41,
		['p'] = 42, ['q'] = 43, ['r'] = 44, ['s'] = 45, ['t'] = 46, ['u'] = 47, ['v'] = 48, ['w'] = 49,
		['x'] = 50, ['y'] = 51, ['z'] = 52, ['0'] = 53, ['1'] = 54, ['2'] = 55, ['3'] = 56, ['4'] = 57,
		['5'] = 58, ['6'] = 59, ['7'] = 60, ['8'] = 61, ['9'] = 62, ['+'] = 63, ['/'] = 64,
	}; /* value + 1; 0: not in the alphabet */
	size_t o = 0;

	if (d->enc == IMAP_TEXT_ENC_B64) {
		/* Whole bytes go out as soon as their bits are in, so nothing waits for the end. */
		for (size_t i = 0; i < len && !d->b64end; i++) {
			int v = b64[(unsigned char)in[i]];
			if (v == 0) {
				d->b64end = in[i] == '=';
				continue;
			}
			d->acc = (d->acc << 6) | (uint32_t)(v - 1);
			d->nbits += 6;
			if (d->nbits >= 8) {
				d->nbits -= 8;
				out[o++] = (char)((d->acc >> d->nbits) & 0xff);
				d->acc &= (1u << d->nbits) - 1;
			}
		}
	} else if (d->enc == IMAP_TEXT_ENC_QP) {
		for (size_t i = 0; i < len; i++)
			o += qp_step(d, in[i], out + o);
	} else {
		if (len > 0)
			memcpy(out, in, len);
		o = len;
	}
	return d->latin1 ? latin1_widen(out, o) : o;
}

size_t
imap_text_decode_end(struct imap_text_decoder *d, char *out)
{
	size_t o = 0;
	if (d->enc == IMAP_TEXT_ENC_QP) {
		switch (d->qst) {
		case QP_EQ:
		case QP_EQ_WS:
			out[o++] = '=';
			break;
		case QP_HEX:
			out[o++] = '=';
			out[o++] = d->qh;
			break;
		case QP_CR:
			o += qp_blanks(d, out);
			out[o++] = '\r';
			break;
		default:
			break;
		}
	}
	bool latin1 = d->latin1;
	imap_text_decoder_init(d, d->enc, latin1);
	return latin1 ? latin1_widen(out, o) : o;
}

void
imap_text_window_init(struct imap_text_window *w, uint64_t off, uint64_t count)
{
	w->skip = off;
	w->left = count;
}

size_t
imap_text_window_take(struct imap_text_window *w, size_t n, size_t *start_r)
{
	size_t k = w->skip < n ? (size_t)w->skip : n;
	w->skip -= k;
	n -= k;
	if (n > w->left)
		n = (size_t)w->left;
	w->left -= n;
	*start_r = n > 0 ? k : 0;
	return n;
}

bool
imap_text_window_done(const struct imap_text_window *w)
{
	return w->left == 0;
}

/* ---- streaming matcher ---- */

struct needle {
	char *s;
	size_t len;
	bool found;
};

struct imap_text_matcher {
	struct needle *nd;
	size_t nn, capnd, left, maxlen;
	size_t window;
	char *buf;          /* allocated at the first feed: window + maxlen bytes */
	size_t len, folded, cap;
};

struct imap_text_matcher *
imap_text_matcher_new(size_t window)
{
	struct imap_text_matcher *m = xcalloc(1, sizeof(*m));
	/* Room beyond the kept tail for a partial UTF-8 sequence and progress. */
	m->window = window < 16 ? 16 : window;
	return m;
}

void
imap_text_matcher_free(struct imap_text_matcher **mp)
{
	if (mp == NULL || *mp == NULL)
		return;
	struct imap_text_matcher *m = *mp;
	for (size_t i = 0; i < m->nn; i++)
		free(m->nd[i].s);
	free(m->nd);
	free(m->buf);
	free(m);
	*mp = NULL;
}

size_t
imap_text_matcher_add(struct imap_text_matcher *m, const char *s, size_t len)
{
	if (m->nn == m->capnd) {
		m->capnd = m->capnd ? m->capnd * 2 : 8;
		m->nd = xrealloc(m->nd, m->capnd * sizeof(*m->nd));
	}
	struct needle *n = &m->nd[m->nn];
	n->s = xmalloc(len + 1);
	if (len > 0)
		memcpy(n->s, s, len);
	n->s[len] = '\0';
	imap_text_fold(n->s, len, true);
	n->len = len;
	n->found = len == 0;
	if (!n->found)
		m->left++;
	if (len > m->maxlen) {
		m->maxlen = len;
		/* Added after a feed: the kept tail must still leave room in the buffer. */
		if (m->buf != NULL) {
			m->cap = m->window + m->maxlen;
			m->buf = xrealloc(m->buf, m->cap);
		}
	}
	return m->nn++;
}

static void
search(struct imap_text_matcher *m, size_t end)
{
	for (size_t i = 0; i < m->nn; i++) {
		struct needle *n = &m->nd[i];
		if (n->found || n->len > end)
			continue;
		if (memmem(m->buf, end, n->s, n->len) != NULL) {
			n->found = true;
			m->left--;
		}
	}
}

/* Search what has arrived; keep a tail so matches across feeds are found. */
static void
flush(struct imap_text_matcher *m, bool final)
{
	m->folded += imap_text_fold(m->buf + m->folded, m->len - m->folded, final);
	search(m, m->folded);
	if (final) {
		m->len = m->folded = 0;
		return;
	}
	size_t keep = m->maxlen > 0 ? m->maxlen - 1 : 0;
	size_t from = m->folded > keep ? m->folded - keep : 0;
	memmove(m->buf, m->buf + from, m->len - from);
	m->len -= from;
	m->folded -= from;
}

void
imap_text_matcher_feed(struct imap_text_matcher *m, const char *p, size_t len)
{
	if (m->left > 0 && m->buf == NULL) {
		m->cap = m->window + m->maxlen;
		m->buf = xmalloc(m->cap);
	}
	while (len > 0 && m->left > 0) {
		size_t room = m->cap - m->len;
		size_t n = len < room ? len : room;
		memcpy(m->buf + m->len, p, n);
		m->len += n;
		p += n;
		len -= n;
		if (m->len == m->cap)
			flush(m, false);
	}
}

void
imap_text_matcher_end(struct imap_text_matcher *m)
{
	if (m->left > 0 && m->len > 0)
		flush(m, true);
	m->len = m->folded = 0;
}

bool
imap_text_matcher_found(const struct imap_text_matcher *m, size_t i)
{
	return i < m->nn && m->nd[i].found;
}

size_t
imap_text_matcher_left(const struct imap_text_matcher *m)
{
	return m->left;
}

/* ---- header fields ---- */

static void
field_emit(TCXSTR *f, imap_text_field_fn *fn, void *arg)
{
	const char *s = tcxstrptr(f);
	size_t len = (size_t)tcxstrsize(f);
	const char *colon = len > 0 ? memchr(s, ':', len) : NULL;
	if (colon == NULL)
		return;
	struct imap_text_field fld = {.line = s, .len = len, .name = s};
	fld.nlen = (size_t)(colon - s);
	while (fld.nlen > 0 && (s[fld.nlen - 1] == ' ' || s[fld.nlen - 1] == '\t'))
		fld.nlen--;
	const char *v = colon + 1;
	while (v < s + len && (*v == ' ' || *v == '\t'))
		v++;
	fld.value = v;
	fld.vlen = len - (size_t)(v - s);
	fn(arg, &fld);
}

size_t
imap_text_header_fields(const char *buf, size_t len, imap_text_field_fn *fn, void *arg)
{
	TCXSTR *f = tcxstrnew();
	size_t pos = 0, hlen;

	if (len > INT_MAX)
		len = INT_MAX; /* TCXSTR lengths are int */
	hlen = len;

	while (pos < len) {
		const char *nl = memchr(buf + pos, '\n', len - pos);
		size_t end = nl != NULL ? (size_t)(nl - buf) : len;
		size_t next = nl != NULL ? end + 1 : len;
		size_t l = end - pos;
		if (l > 0 && buf[pos + l - 1] == '\r')
			l--;
		if (l == 0) {
			hlen = next;
			break;
		}
		if (buf[pos] != ' ' && buf[pos] != '\t') {
			field_emit(f, fn, arg);
			tcxstrclear(f);
		}
		tcxstrcat(f, buf + pos, (int)l);
		pos = next;
	}
	field_emit(f, fn, arg);
	tcxstrdel(f);
	return hlen;
}

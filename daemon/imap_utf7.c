/*
 * imap_utf7: modified UTF-7 mailbox names (RFC 3501 5.1.3) and UTF-8
 * validation. Decoding is strict: a name has exactly one valid encoding, so
 * two spellings can never name the same mailbox.
 */
#include "daemon/imap_parse.h"

static const char b64chars[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+,";

/* Modified base64 (RFC 3501 5.1.3): ',' where base64 has '/'. */
static int
b64val(unsigned char c)
{
	if (c == '/')
		return -1;
	return b64_value(c == ',' ? '/' : c);
}

/*
 * Decode one UTF-8 sequence at s[*i]; advance *i. Returns the code point, or
 * -1 for overlongs, surrogates, values above U+10FFFF and truncation.
 */
static int32_t
utf8_next(const unsigned char *s, size_t len, size_t *i)
{
	unsigned char c = s[*i], lo = 0x80, hi = 0xbf;
	int32_t cp;
	int n;

	if (c < 0x80) {
		(*i)++;
		return c;
	}
	if (c >= 0xc2 && c <= 0xdf) {
		n = 1;
		cp = c & 0x1f;
	} else if (c >= 0xe0 && c <= 0xef) {
		n = 2;
		cp = c & 0x0f;
		if (c == 0xe0)
			lo = 0xa0;
		else if (c == 0xed)
			hi = 0x9f;
	} else if (c >= 0xf0 && c <= 0xf4) {
		n = 3;
		cp = c & 0x07;
		if (c == 0xf0)
			lo = 0x90;
		else if (c == 0xf4)
			hi = 0x8f;
	} else {
		return -1;
	}
	if (len - *i <= (size_t)n)
		return -1;
	for (int k = 1; k <= n; k++) {
		unsigned char d = s[*i + (size_t)k];

		if (d < lo || d > hi)
			return -1;
		lo = 0x80;
		hi = 0xbf;
		cp = (cp << 6) | (d & 0x3f);
	}
	*i += (size_t)n + 1;
	return cp;
}

bool
imap_utf8_valid(const char *s, size_t len)
{
	const unsigned char *u = (const unsigned char *)s;
	size_t i = 0;

	while (i < len)
		if (utf8_next(u, len, &i) < 0)
			return false;
	return true;
}

static int
utf8_put(struct mbuf *out, uint32_t cp)
{
	char b[4];
	size_t n;

	if (cp < 0x80) {
		b[0] = (char)cp;
		n = 1;
	} else if (cp < 0x800) {
		b[0] = (char)(0xc0 | (cp >> 6));
		b[1] = (char)(0x80 | (cp & 0x3f));
		n = 2;
	} else if (cp < 0x10000) {
		b[0] = (char)(0xe0 | (cp >> 12));
		b[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
		b[2] = (char)(0x80 | (cp & 0x3f));
		n = 3;
	} else {
		b[0] = (char)(0xf0 | (cp >> 18));
		b[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
		b[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
		b[3] = (char)(0x80 | (cp & 0x3f));
		n = 4;
	}
	return mbuf_add(out, b, n);
}

static int
bad(const char **err_r, const char *msg)
{
	if (err_r != NULL)
		*err_r = msg;
	return -1;
}

/* Decode the base64 run s[*i..] up to '-' (exclusive); *i ends on the '-'. */
static int
decode_run(const unsigned char *s, size_t len, size_t *i, struct mbuf *out,
    const char **err_r)
{
	uint32_t bits = 0, high = 0;
	unsigned nbits = 0;
	size_t units = 0;

	for (; *i < len && s[*i] != '-'; (*i)++) {
		int v = b64val(s[*i]);
		uint32_t u;

		if (v < 0)
			return bad(err_r, "invalid character in modified UTF-7 run");
		bits = (bits << 6) | (uint32_t)v;
		nbits += 6;
		if (nbits < 16)
			continue;
		nbits -= 16;
		u = (bits >> nbits) & 0xffff;
		bits &= (1u << nbits) - 1;
		units++;
		if (high != 0) {
			if (u < 0xdc00 || u > 0xdfff)
				return bad(err_r, "unpaired UTF-16 surrogate in mailbox name");
			if (utf8_put(out, 0x10000 + ((high - 0xd800) << 10) + (u - 0xdc00)) < 0)
				return bad(err_r, "mailbox name too long");
			high = 0;
		} else if (u >= 0xd800 && u <= 0xdbff) {
			high = u;
		} else if (u >= 0xdc00 && u <= 0xdfff) {
			return bad(err_r, "unpaired UTF-16 surrogate in mailbox name");
		} else if (u >= 0x20 && u <= 0x7e) {
			return bad(err_r, "printable ASCII encoded in modified UTF-7");
		} else if (u == 0) {
			return bad(err_r, "NUL in mailbox name");
		} else if (utf8_put(out, u) < 0) {
			return bad(err_r, "mailbox name too long");
		}
	}
	if (*i >= len)
		return bad(err_r, "unterminated '&' in mailbox name");
	if (high != 0)
		return bad(err_r, "unpaired UTF-16 surrogate in mailbox name");
	if (units == 0)
		return bad(err_r, "empty modified UTF-7 run");
	if (nbits >= 6 || bits != 0)
		return bad(err_r, "bad padding in modified UTF-7 run");
	return 0;
}

int
imap_utf7_decode(const char *str, size_t len, struct mbuf *out, const char **err_r)
{
	const unsigned char *s = (const unsigned char *)str;
	bool prev_run = false;
	size_t i = 0;

	while (i < len) {
		unsigned char c = s[i];

		if (c >= 0x80)
			return bad(err_r, "8-bit character in modified UTF-7 mailbox name");
		if (c < 0x20 || c == 0x7f)
			return bad(err_r, "control character in mailbox name");
		if (c != '&') {
			if (mbuf_add(out, &s[i], 1) < 0)
				return bad(err_r, "mailbox name too long");
			i++;
			prev_run = false;
			continue;
		}
		i++;
		if (i < len && s[i] == '-') {
			if (mbuf_add(out, "&", 1) < 0)
				return bad(err_r, "mailbox name too long");
			i++;
			prev_run = false;
			continue;
		}
		/* The canonical encoding puts adjacent characters in one run. */
		if (prev_run)
			return bad(err_r, "adjacent modified UTF-7 runs");
		if (decode_run(s, len, &i, out, err_r) < 0)
			return -1;
		i++; /* '-' */
		prev_run = true;
	}
	return 1;
}

static int
b64_flush(struct mbuf *out, uint32_t *bits, unsigned *nbits, bool final)
{
	char b[8];
	size_t n = 0;

	while (*nbits >= 6) {
		*nbits -= 6;
		b[n++] = b64chars[(*bits >> *nbits) & 0x3f];
	}
	if (final && *nbits > 0) {
		b[n++] = b64chars[(*bits << (6 - *nbits)) & 0x3f];
		*nbits = 0;
	}
	*bits &= (1u << *nbits) - 1;
	return mbuf_add(out, b, n);
}

int
imap_utf7_encode(const char *str, size_t len, struct mbuf *out)
{
	const unsigned char *s = (const unsigned char *)str;
	size_t i = 0;

	if (!imap_utf8_valid(str, len))
		return -1;
	while (i < len) {
		uint32_t bits = 0;
		unsigned nbits = 0;

		if (s[i] == 0)
			return -1;
		if (s[i] >= 0x20 && s[i] <= 0x7e) {
			if (mbuf_add(out, &s[i], 1) < 0 ||
			    (s[i] == '&' && mbuf_add(out, "-", 1) < 0))
				return -1;
			i++;
			continue;
		}
		if (mbuf_add(out, "&", 1) < 0)
			return -1;
		while (i < len && !(s[i] >= 0x20 && s[i] <= 0x7e)) {
			int32_t cp = utf8_next(s, len, &i);

			if (cp <= 0)
				return -1;
			if (cp >= 0x10000) {
				uint32_t v = (uint32_t)cp - 0x10000;

				bits = (bits << 16) | (0xd800 | (v >> 10));
				nbits += 16;
				if (b64_flush(out, &bits, &nbits, false) < 0)
					return -1;
				cp = (int32_t)(0xdc00 | (v & 0x3ff));
			}
			bits = (bits << 16) | (uint32_t)cp;
			nbits += 16;
			if (b64_flush(out, &bits, &nbits, false) < 0)
				return -1;
		}
		if (b64_flush(out, &bits, &nbits, true) < 0 || mbuf_add(out, "-", 1) < 0)
			return -1;
	}
	return 1;
}

/*
 * idn: canonical domain names. Labels are converted one at a time so that a
 * plain ASCII label keeps its old meaning exactly (libidn2 would refuse
 * "ab--cd" or "-x", which hosts use); only labels with non-ASCII bytes or an
 * "xn--" prefix are IDNA's business. UTS#46 may map a dot-like code point
 * (U+3002) to '.', so the joined result is checked once more as a whole.
 */
#include "daemon/idn.h"

#include <idn2.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#define IDN_FLAGS (IDN2_NFC_INPUT | IDN2_NONTRANSITIONAL)

static int fail(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static int
fail(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (errlen > 0) {
		va_start(ap, fmt);
		vsnprintf(err, errlen, fmt, ap);
		va_end(ap);
	}
	return -1;
}

static bool
canon_char(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_';
}

static int
idn2_fail(int r, bool alabel, char *err, size_t errlen)
{
	switch (r) {
	case IDN2_ENCODING_ERROR:
		return fail(err, errlen, "invalid UTF-8 in domain name");
	case IDN2_TOO_BIG_LABEL:
	case IDN2_PUNYCODE_BIG_OUTPUT:
		return fail(err, errlen, "domain label longer than %d octets", IDN_LABEL_MAX);
	case IDN2_TOO_BIG_DOMAIN:
		return fail(err, errlen, "domain name longer than %d octets", IDN_NAME_MAX);
	case IDN2_MALLOC:
		return fail(err, errlen, "out of memory converting domain name");
	default:
		break;
	}
	if (alabel)
		return fail(err, errlen, "invalid A-label (xn--): %s", idn2_strerror(r));
	return fail(err, errlen, "invalid international domain name: %s", idn2_strerror(r));
}

/* Append p[0..n) to out at *olen; the name limit first, then the buffer. */
static int
append(char *out, size_t outsize, size_t *olen, const char *p, size_t n, char *err, size_t errlen)
{
	if (*olen + n > IDN_NAME_MAX)
		return fail(err, errlen, "domain name longer than %d octets", IDN_NAME_MAX);
	if (*olen + n >= outsize)
		return fail(err, errlen, "domain name does not fit the output buffer");
	memcpy(out + *olen, p, n);
	*olen += n;
	out[*olen] = '\0';
	return 1;
}

/* One label through libidn2 (non-ASCII or "xn--"), appended to out. */
static int
label_idna(const char *p, size_t n, bool alabel, char *out, size_t outsize, size_t *olen, char *err, size_t errlen)
{
	char tmp[IDN_INPUT_MAX + 1];
	char *a = NULL;
	int r;

	memcpy(tmp, p, n);
	tmp[n] = '\0';
	r = idn2_to_ascii_8z(tmp, &a, IDN_FLAGS);
	if (r != IDN2_OK) {
		idn2_free(a);
		return idn2_fail(r, alabel, err, errlen);
	}
	r = append(out, outsize, olen, a, strlen(a), err, errlen);
	idn2_free(a);
	return r;
}

/* The joined result: labels of 1..63 canonical characters. */
static int
check_canon(const char *s, size_t len, char *err, size_t errlen)
{
	size_t label = 0;

	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c == '.') {
			if (label == 0)
				return fail(err, errlen, "empty label in domain name");
			label = 0;
			continue;
		}
		if (!canon_char(c))
			return fail(err, errlen, "invalid character in domain name");
		if (++label > IDN_LABEL_MAX)
			return fail(err, errlen, "domain label longer than %d octets", IDN_LABEL_MAX);
	}
	if (label == 0)
		return fail(err, errlen, "empty label in domain name");
	return 1;
}

int
idn_domain_canon(const char *in, size_t len, char *out, size_t outsize, char *err, size_t errlen)
{
	size_t olen = 0, i = 0;
	bool first = true;

	if (outsize > 0)
		out[0] = '\0';
	if (len == 0)
		return fail(err, errlen, "empty domain name");
	if (len > IDN_INPUT_MAX)
		return fail(err, errlen, "domain name longer than %d octets", IDN_NAME_MAX);
	if (memchr(in, '\0', len) != NULL)
		return fail(err, errlen, "NUL byte in domain name");
	if (in[len - 1] == '.') /* the root: "example.org." is "example.org" */
		len--;
	if (len == 0)
		return fail(err, errlen, "empty domain name");
	while (i <= len) {
		const char *p = in + i, *dot = memchr(p, '.', len - i);
		size_t n = dot != NULL ? (size_t)(dot - p) : len - i;
		bool ascii = true, alabel;

		if (n == 0)
			return fail(err, errlen, "empty label in domain name");
		for (size_t k = 0; k < n; k++)
			if ((unsigned char)p[k] >= 0x80)
				ascii = false;
		alabel = ascii && n >= 4 && strncasecmp(p, "xn--", 4) == 0;
		/* A label UTS#46 maps to nothing still takes its place: no silent "" label. */
		if (!first && append(out, outsize, &olen, ".", 1, err, errlen) < 0)
			return -1;
		first = false;
		if (ascii && !alabel) {
			if (n > IDN_LABEL_MAX)
				return fail(err, errlen, "domain label longer than %d octets", IDN_LABEL_MAX);
			if (append(out, outsize, &olen, p, n, err, errlen) < 0)
				return -1;
			for (size_t k = olen - n; k < olen; k++)
				if (out[k] >= 'A' && out[k] <= 'Z')
					out[k] = (char)(out[k] - 'A' + 'a');
		} else if (label_idna(p, n, alabel, out, outsize, &olen, err, errlen) < 0) {
			return -1;
		}
		i += n + 1;
	}
	if (check_canon(out, olen, err, errlen) < 0) {
		out[0] = '\0';
		return -1;
	}
	return (int)olen;
}

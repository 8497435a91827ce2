/*
 * Maildir file names: parsing and formatting. Pure functions, no I/O.
 * A name is <base>[,<field>...][:2,<flags>]. The base identifies the
 * message for its whole life; fields and flags are what other tools and we
 * change. Formatting keeps every field and every unknown flag character so
 * that a flag change by us never loses what another tool recorded.
 */
#include "maildir/maildir.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static void seterr(char *err, size_t errlen, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void seterr(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (err == NULL || errlen == 0)
		return;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

static const char std_flag_chars[] = "DFPRST";

/* Bit of a standard flag character, 0 when c is not one. */
static unsigned std_flag_bit(unsigned char c)
{
	const char *p;

	if (c == 0)
		return 0;
	p = strchr(std_flag_chars, c);
	return p ? 1u << (p - std_flag_chars) : 0;
}

/* Parse 1..20 decimal digits into a value < 2^63. 1 ok, -1 bad. */
static int parse_size(const char *p, size_t len, uint64_t *v_r)
{
	uint64_t v = 0;
	size_t i;

	if (len == 0 || len > 20)
		return -1;
	for (i = 0; i < len; i++) {
		if (p[i] < '0' || p[i] > '9')
			return -1;
		if (v > (UINT64_C(0x7fffffffffffffff) - (uint64_t)(p[i] - '0')) / 10)
			return -1;
		v = v * 10 + (uint64_t)(p[i] - '0');
	}
	*v_r = v;
	return 1;
}

/* Parse the fields name[start..end) (each starting with ','): S= and W=. */
static int parse_fields(const char *name, size_t start, size_t end, struct maildir_name *n_r,
			char *err, size_t errlen)
{
	size_t i, fend;

	for (i = start; i < end; i = fend) {
		size_t fs = i + 1; /* name[i] == ',' */
		uint64_t v;

		for (fend = fs; fend < end && name[fend] != ','; fend++)
			;
		if (fend - fs < 2 || name[fs + 1] != '=' || (name[fs] != 'S' && name[fs] != 'W'))
			continue;
		if (parse_size(name + fs + 2, fend - fs - 2, &v) < 0) {
			seterr(err, errlen, "bad %c= size in file name", name[fs]);
			return -1;
		}
		if (name[fs] == 'S' && !n_r->has_size) {
			n_r->has_size = true;
			n_r->size = v;
		} else if (name[fs] == 'W' && !n_r->has_vsize) {
			n_r->has_vsize = true;
			n_r->vsize = v;
		}
	}
	return 0;
}

/* Parse the info (the text after ':'). */
static void parse_info(const char *info, size_t info_len, struct maildir_name *n_r)
{
	size_t i;

	if (info_len < 2 || info[0] != '2' || info[1] != ',') {
		n_r->other_info = info;
		n_r->other_info_len = info_len;
		return;
	}
	n_r->has_info = true;
	n_r->flagstr = info + 2;
	n_r->flagstr_len = info_len - 2;
	for (i = 0; i < n_r->flagstr_len; i++) {
		unsigned char c = (unsigned char)n_r->flagstr[i];
		unsigned bit = std_flag_bit(c);

		if (bit != 0)
			n_r->flags |= bit;
		else if (c >= 'a' && c <= 'z')
			n_r->keywords |= UINT32_C(1) << (c - 'a');
		else
			n_r->has_unknown = true;
	}
}

int maildir_name_parse(const char *name, size_t len, struct maildir_name *n_r,
		       char *err, size_t errlen)
{
	size_t i, colon;

	memset(n_r, 0, sizeof(*n_r));
	if (len == 0) {
		seterr(err, errlen, "empty file name");
		return -1;
	}
	if (len > MAILDIR_NAME_MAX) {
		seterr(err, errlen, "file name too long (%zu bytes)", len);
		return -1;
	}
	if (name[0] == '.') {
		seterr(err, errlen, "file name starts with '.'");
		return -1;
	}
	if (memchr(name, '/', len) != NULL || memchr(name, '\0', len) != NULL) {
		seterr(err, errlen, "file name contains '/' or NUL");
		return -1;
	}
	for (i = 0; i < len && name[i] != ',' && name[i] != ':'; i++)
		;
	if (i == 0) {
		seterr(err, errlen, "file name has an empty base");
		return -1;
	}
	n_r->base = name;
	n_r->base_len = i;
	/* Fields run from the base up to the first ':'. */
	for (colon = i; colon < len && name[colon] != ':'; colon++)
		;
	n_r->fields = name + i;
	n_r->fields_len = colon - i;
	if (parse_fields(name, i, colon, n_r, err, errlen) < 0)
		return -1;
	if (colon < len)
		parse_info(name + colon + 1, len - colon - 1, n_r);
	return 1;
}

int maildir_name_unknown_flags(const struct maildir_name *n, char *buf, size_t size)
{
	bool seen[256] = { false };
	size_t i, o = 0;
	int c;

	for (i = 0; i < n->flagstr_len; i++) {
		unsigned char ch = (unsigned char)n->flagstr[i];

		if (std_flag_bit(ch) == 0 && !(ch >= 'a' && ch <= 'z'))
			seen[ch] = true;
	}
	for (c = 1; c < 256; c++) {
		if (!seen[c])
			continue;
		if (o + 1 >= size)
			return -1;
		buf[o++] = (char)c;
	}
	if (size == 0)
		return -1;
	buf[o] = '\0';
	return (int)o;
}

int maildir_flags_format(char *buf, size_t size, unsigned flags, uint32_t keywords,
			 const char *unknown)
{
	bool on[256] = { false };
	size_t i, o = 0;
	int c;

	for (i = 0; std_flag_chars[i] != '\0'; i++)
		if (flags & (1u << i))
			on[(unsigned char)std_flag_chars[i]] = true;
	for (i = 0; i < 26; i++)
		if (keywords & (UINT32_C(1) << i))
			on['a' + i] = true;
	for (i = 0; unknown != NULL && unknown[i] != '\0'; i++)
		on[(unsigned char)unknown[i]] = true;
	/* '/' can never be part of a file name. */
	on['/'] = false;
	for (c = 1; c < 256; c++) {
		if (!on[c])
			continue;
		if (o + 1 >= size)
			return -1;
		buf[o++] = (char)c;
	}
	if (size == 0)
		return -1;
	buf[o] = '\0';
	return (int)o;
}

int maildir_name_new_base(char *buf, size_t size, int64_t secs, long usec, long pid,
			  uint64_t counter, const char *host, char *err, size_t errlen)
{
	char ehost[MAILDIR_NAME_BUFSIZE];
	size_t o = 0, i;
	int n;

	if (host == NULL || host[0] == '\0') {
		seterr(err, errlen, "empty host name for message file name");
		return -1;
	}
	if (secs < 0 || usec < 0 || pid < 0) {
		seterr(err, errlen, "negative time or pid for message file name");
		return -1;
	}
	for (i = 0; host[i] != '\0'; i++) {
		const char *esc = NULL;

		if (host[i] == '/')
			esc = "\\057";
		else if (host[i] == ':')
			esc = "\\072";
		else if (host[i] == ',')
			esc = "\\054";
		if (o + 5 > sizeof(ehost)) {
			seterr(err, errlen, "host name too long for message file name");
			return -1;
		}
		if (esc != NULL) {
			memcpy(ehost + o, esc, 4);
			o += 4;
		} else {
			ehost[o++] = host[i];
		}
	}
	ehost[o] = '\0';
	n = snprintf(buf, size, "%" PRId64 ".M%ldP%ldQ%" PRIu64 ".%s", secs, usec, pid, counter,
		     ehost);
	if (n < 0 || (size_t)n >= size || n > 200) {
		seterr(err, errlen, "message base name too long");
		return -1;
	}
	return n;
}

/* Append s[0..len) at buf+*o; -1 if it would not fit with the NUL. */
static int put(char *buf, size_t size, size_t *o, const char *s, size_t len)
{
	if (*o + len >= size)
		return -1;
	memcpy(buf + *o, s, len);
	*o += len;
	buf[*o] = '\0';
	return 0;
}

int maildir_name_with_flags(char *buf, size_t size, const struct maildir_name *n,
			    unsigned flags, uint32_t keywords, char *err, size_t errlen)
{
	char unknown[MAILDIR_NAME_BUFSIZE], fl[MAILDIR_NAME_BUFSIZE + 64];
	size_t o = 0;
	int ul, fln;

	ul = maildir_name_unknown_flags(n, unknown, sizeof(unknown));
	fln = ul < 0 ? -1 : maildir_flags_format(fl, sizeof(fl), flags & MAILDIR_FLAGS_ALL,
						  keywords & MAILDIR_KEYWORDS_ALL, unknown);
	if (fln < 0 || put(buf, size, &o, n->base, n->base_len) < 0 ||
	    put(buf, size, &o, n->fields, n->fields_len) < 0 || put(buf, size, &o, ":2,", 3) < 0 ||
	    put(buf, size, &o, fl, (size_t)fln) < 0 || o > MAILDIR_NAME_MAX) {
		seterr(err, errlen, "message file name too long");
		return -1;
	}
	return (int)o;
}

int maildir_name_build(char *buf, size_t size, const char *base, uint64_t msgsize,
		       uint64_t vsize, bool with_info, unsigned flags, uint32_t keywords,
		       char *err, size_t errlen)
{
	char fl[64];
	int n;

	if (maildir_flags_format(fl, sizeof(fl), flags & MAILDIR_FLAGS_ALL,
				 keywords & MAILDIR_KEYWORDS_ALL, NULL) < 0)
		fl[0] = '\0'; /* cannot happen: at most 32 characters */
	n = snprintf(buf, size, "%s,S=%" PRIu64 ",W=%" PRIu64 "%s%s", base, msgsize, vsize,
		     with_info ? ":2," : "", with_info ? fl : "");
	if (n < 0 || (size_t)n >= size || n > MAILDIR_NAME_MAX) {
		seterr(err, errlen, "message file name too long");
		return -1;
	}
	return n;
}

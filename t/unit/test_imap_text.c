/* Unit tests for daemon/imap_text: case folding, dates, transfer decoding
 * (whole vs in steps vs split at every offset), the output window, the
 * streaming matcher (whole vs byte by byte, matches across feeds) and header
 * unfolding. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <tcutil.h>

#include "daemon/imap_text.h"
#include "daemon/util.h"

#define SZ(s) s, sizeof(s) - 1

/* ---- folding ---- */

static void
fold_str(const char *in, const char *want)
{
	char *s = xstrdup(in);
	assert_int_equal(imap_text_fold(s, strlen(s), true), strlen(in));
	assert_string_equal(s, want);
	free(s);
}

static void
test_fold(void **state)
{
	fold_str("Hello WORLD 123", "hello world 123");
	fold_str("\xC3\x84pfel \xC3\x96l \xC3\x9C", "\xC3\xA4pfel \xC3\xB6l \xC3\xBC"); /* ÄÖÜ */
	fold_str("\xC3\x97", "\xC3\x97");             /* multiplication sign stays */
	fold_str("\xC5\x81\xC3\xB3" "d\xC5\xBA", "\xC5\x82\xC3\xB3" "d\xC5\xBA"); /* Łódź */
	fold_str("\xC5\xB8", "\xC3\xBF");             /* Ÿ -> ÿ */
	fold_str("\xCE\xA3\xCF\x82", "\xCF\x83\xCF\x83"); /* Σς -> σσ */
	fold_str("\xD0\x96\xD0\x81", "\xD0\xB6\xD1\x91"); /* ЖЁ -> жё */
	fold_str("\xE2\x82\xAC EUR", "\xE2\x82\xAC eur"); /* 3-byte untouched */
}

static void
test_fold_malformed(void **state)
{
	/* A lead byte without continuation: the following ASCII is still folded. */
	fold_str("\xC3" "ABC", "\xC3" "abc");
	fold_str("\xE2\x82" "X", "\xE2\x82" "x");
	fold_str("\x80\xBF" "Q", "\x80\xBF" "q");
	fold_str("\xFF" "Z", "\xFF" "z");
	/* Truncated at the end: not final stops before it, final passes it. */
	char s[] = "AB\xC3";
	assert_int_equal(imap_text_fold(s, 3, false), 2);
	assert_memory_equal(s, "ab\xC3", 3);
	assert_int_equal(imap_text_fold(s, 3, true), 3);
	char t[] = "A\xF0\x9F\x98";
	assert_int_equal(imap_text_fold(t, 4, false), 1);
	assert_int_equal(imap_text_fold(t, 0, false), 0);
}

static void
test_fold_idempotent(void **state)
{
	char a[512], b[512];
	for (size_t i = 0; i < sizeof(a); i++)
		a[i] = (char)(i * 7 + 3);
	memcpy(b, a, sizeof(a));
	imap_text_fold(a, sizeof(a), true);
	memcpy(b, a, sizeof(a));
	imap_text_fold(b, sizeof(b), true);
	assert_memory_equal(a, b, sizeof(a));
}

/* ---- dates ---- */

static void
test_dates(void **state)
{
	int64_t d = 0;
	assert_int_equal(imap_text_days_from_civil(1970, 1, 1), 0);
	assert_int_equal(imap_text_days_from_civil(2000, 3, 1), 11017);
	assert_int_equal(imap_text_days_from_civil(1969, 12, 31), -1);
	assert_int_equal(imap_text_day_of(0), 0);
	assert_int_equal(imap_text_day_of(86399), 0);
	assert_int_equal(imap_text_day_of(86400), 1);
	assert_int_equal(imap_text_day_of(-1), -1);
	assert_int_equal(imap_text_day_of(-86400), -1);
	assert_int_equal(imap_text_day_of(-86401), -2);
	assert_true(imap_text_day_of(INT64_MIN) < 0);

	assert_int_equal(imap_text_parse_date(SZ("1-Feb-1994"), &d), 1);
	assert_int_equal(d, imap_text_days_from_civil(1994, 2, 1));
	assert_int_equal(imap_text_parse_date(SZ("31-dec-2024"), &d), 1);
	assert_int_equal(d, imap_text_days_from_civil(2024, 12, 31));
}

static void
test_dates_malformed(void **state)
{
	int64_t d = 42;
	assert_int_equal(imap_text_parse_date(SZ(""), &d), -1);
	assert_int_equal(imap_text_parse_date(SZ("0-Feb-1994"), &d), -1);
	assert_int_equal(imap_text_parse_date(SZ("32-Feb-1994"), &d), -1);
	assert_int_equal(imap_text_parse_date(SZ("1-Fob-1994"), &d), -1);
	assert_int_equal(imap_text_parse_date(SZ("1-Feb-94"), &d), -1);
	assert_int_equal(imap_text_parse_date(SZ("1-Feb-19x4"), &d), -1);
	assert_int_equal(imap_text_parse_date(SZ("1 Feb 1994"), &d), -1);
	assert_int_equal(imap_text_parse_date(SZ("123-Feb-1994"), &d), -1);
	assert_int_equal(imap_text_parse_date("1-Feb-1994", 9, &d), -1); /* not NUL-terminated use */
	assert_int_equal(d, 42);
}

static void
test_sent_day(void **state)
{
	int64_t d = 0;
	assert_int_equal(imap_text_sent_day("Tue, 1 Feb 1994 23:00:00 -0800", -1, &d), 1);
	assert_int_equal(d, imap_text_days_from_civil(1994, 2, 1));
	assert_int_equal(imap_text_sent_day("  3 March 2021 10:00 +0000", -1, &d), 1);
	assert_int_equal(d, imap_text_days_from_civil(2021, 3, 3));
	assert_int_equal(imap_text_sent_day("7-Jan-99", -1, &d), 1);
	assert_int_equal(d, imap_text_days_from_civil(1999, 1, 7));
	assert_int_equal(imap_text_sent_day("7 Jan 05", -1, &d), 1);
	assert_int_equal(d, imap_text_days_from_civil(2005, 1, 7));
	assert_int_equal(imap_text_sent_day("7 Jan 105", -1, &d), 1);
	assert_int_equal(d, imap_text_days_from_civil(2005, 1, 7));
	/* Unparseable: falls back to the parsed time, or none. */
	assert_int_equal(imap_text_sent_day("garbage", 86400 * 3 + 5, &d), 1);
	assert_int_equal(d, 3);
	assert_int_equal(imap_text_sent_day(NULL, 0, &d), 1);
	assert_int_equal(d, 0);
	d = 42;
	assert_int_equal(imap_text_sent_day("Mon, 99 Feb", -1, &d), 0);
	assert_int_equal(imap_text_sent_day("Ja", -1, &d), 0);
	assert_int_equal(imap_text_sent_day("", -1, &d), 0);
	assert_int_equal(imap_text_sent_day(NULL, -1, &d), 0);
	assert_int_equal(d, 42);
}

/* ---- decoding ---- */

/* Decode in[0..len) given in pieces of the sizes in cuts (0-terminated, the rest last) and end it. */
static size_t
decode_pieces(enum imap_text_enc enc, bool latin1, const char *in, size_t len, const size_t *cuts, char *out)
{
	struct imap_text_decoder d;
	size_t o = 0, i = 0;
	imap_text_decoder_init(&d, enc, latin1);
	for (size_t c = 0; i < len; c++) {
		size_t n = cuts[c] != 0 && cuts[c] < len - i ? cuts[c] : len - i;
		/* Each call gets exactly the room the contract promises. */
		char *tmp = xmalloc(IMAP_TEXT_DECODE_MAX(n));
		size_t k = imap_text_decode(&d, in + i, n, tmp);
		assert_true(k <= IMAP_TEXT_DECODE_MAX(n));
		memcpy(out + o, tmp, k);
		o += k;
		free(tmp);
		i += n;
		if (cuts[c] == 0)
			break;
	}
	char *tmp = xmalloc(IMAP_TEXT_DECODE_MAX(0));
	size_t k = imap_text_decode_end(&d, tmp);
	assert_true(k <= IMAP_TEXT_DECODE_MAX(0));
	memcpy(out + o, tmp, k);
	free(tmp);
	return o + k;
}

/*
 * Decode in whole, in steps of step bytes, and split in two at every offset;
 * each must give want.
 */
static void
decode_check(enum imap_text_enc enc, bool latin1, const char *in, size_t len, const char *want, size_t wlen)
{
	char *out = xmalloc(IMAP_TEXT_DECODE_MAX(len) + IMAP_TEXT_DECODE_MAX(0));
	for (size_t step = 1; step <= len + 1; step = step < 8 ? step + 1 : step * 2) {
		size_t cuts[4096];
		size_t nc = 0;
		for (size_t i = 0; i < len && nc + 1 < sizeof(cuts) / sizeof(cuts[0]); i += step)
			cuts[nc++] = step;
		cuts[nc] = 0;
		size_t o = decode_pieces(enc, latin1, in, len, cuts, out);
		assert_int_equal(o, wlen);
		assert_memory_equal(out, want, wlen);
	}
	for (size_t at = 0; at <= len; at++) {
		size_t cuts[] = {at, 0};
		size_t o = decode_pieces(enc, latin1, in, len, cuts, out);
		assert_int_equal(o, wlen);
		assert_memory_equal(out, want, wlen);
	}
	free(out);
}

static void
test_decode(void **state)
{
	decode_check(IMAP_TEXT_ENC_NONE, false, SZ("plain\r\ntext"), SZ("plain\r\ntext"));
	decode_check(IMAP_TEXT_ENC_B64, false, SZ("aGVsbG8gd29y\r\nbGQ="), SZ("hello world"));
	decode_check(IMAP_TEXT_ENC_B64, false, SZ("AAEC/w=="), SZ("\x00\x01\x02\xff"));
	decode_check(IMAP_TEXT_ENC_QP, false, SZ("caf=C3=A9 =3D ok"), SZ("caf\xC3\xA9 = ok"));
	decode_check(IMAP_TEXT_ENC_QP, false, SZ("soft=\r\nbreak=\nhere= \t\r\nend"), SZ("softbreakhereend"));
	decode_check(IMAP_TEXT_ENC_QP, false, SZ("lower=e9"), SZ("lower\xe9"));
	decode_check(IMAP_TEXT_ENC_QP, false, SZ("caf=c3=a9 =3d=3D"), SZ("caf\xC3\xA9 =="));
	decode_check(IMAP_TEXT_ENC_NONE, true, SZ("caf\xe9 \xff"), SZ("caf\xC3\xA9 \xC3\xBF"));
	decode_check(IMAP_TEXT_ENC_QP, true, SZ("caf=E9"), SZ("caf\xC3\xA9"));
	decode_check(IMAP_TEXT_ENC_B64, true, SZ("6enp"), SZ("\xC3\xA9\xC3\xA9\xC3\xA9"));
	decode_check(IMAP_TEXT_ENC_NONE, false, SZ(""), SZ(""));
	decode_check(IMAP_TEXT_ENC_B64, false, SZ(""), SZ(""));
	decode_check(IMAP_TEXT_ENC_QP, false, SZ(""), SZ(""));
	/* Names not known decode as they are; no latin-1 step for raw bytes. */
	decode_check(IMAP_TEXT_ENC_UNKNOWN, false, SZ("begin =3D\xe9\n"), SZ("begin =3D\xe9\n"));
	decode_check(IMAP_TEXT_ENC_QP, false, SZ("=E9\xe9"), SZ("\xe9\xe9"));
}

/* base64 of 1000 bytes, with CRLF every 76 characters or on one line, and back. */
static void
test_decode_b64_lines(void **state)
{
	char raw[1000];
	for (size_t i = 0; i < sizeof(raw); i++)
		raw[i] = (char)(i * 7 + i / 256);
	char *b = tcbaseencode(raw, (int)sizeof(raw));
	size_t blen = strlen(b);
	char *lines = xmalloc(blen + blen / 76 * 2 + 3);
	size_t n = 0;
	for (size_t i = 0; i < blen; i += 76) {
		size_t k = blen - i < 76 ? blen - i : 76;
		memcpy(lines + n, b + i, k);
		n += k;
		lines[n++] = '\r';
		lines[n++] = '\n';
	}
	decode_check(IMAP_TEXT_ENC_B64, false, lines, n, raw, sizeof(raw));
	decode_check(IMAP_TEXT_ENC_B64, false, b, blen, raw, sizeof(raw));
	/* Without its padding, and with LF line ends only. */
	assert_true(blen > 2 && b[blen - 1] == '=');
	decode_check(IMAP_TEXT_ENC_B64, false, b, blen - 1, raw, sizeof(raw));
	for (size_t i = 0; i < n; i++)
		if (lines[i] == '\r')
			lines[i] = '\n';
	decode_check(IMAP_TEXT_ENC_B64, false, lines, n, raw, sizeof(raw));
	free(lines);
	free(b);
}

static void
test_decode_malformed(void **state)
{
	/* base64: characters outside the alphabet are skipped, a partial group gives its whole bytes. */
	decode_check(IMAP_TEXT_ENC_B64, false, SZ("aG!!V*s b G8"), SZ("hello"));
	decode_check(IMAP_TEXT_ENC_B64, false, SZ("aG\tVs\x00" "bG8g\xff d29y\r\nbA"), SZ("hello worl"));
	decode_check(IMAP_TEXT_ENC_B64, false, SZ("aGVsbG8gd29yb"), SZ("hello wor"));
	decode_check(IMAP_TEXT_ENC_B64, false, SZ("a"), SZ(""));
	decode_check(IMAP_TEXT_ENC_B64, false, SZ("===="), SZ(""));
	/* base64: the first '=' ends the data; what follows is ignored. */
	decode_check(IMAP_TEXT_ENC_B64, false, SZ("QUJD=QUJD"), SZ("ABC"));
	decode_check(IMAP_TEXT_ENC_B64, false, SZ("aGVsbG8=IHdvcmxk"), SZ("hello"));
	decode_check(IMAP_TEXT_ENC_B64, false, SZ("aGVsbG8gd29ybGQ=\r\nQQ==\r\n"), SZ("hello world"));
	/* quoted-printable: a '=' that starts no escape is kept with what follows (RFC 2045 6.7). */
	decode_check(IMAP_TEXT_ENC_QP, false, SZ("a=ZZb"), SZ("a=ZZb"));
	decode_check(IMAP_TEXT_ENC_QP, false, SZ("a=4Zb"), SZ("a=4Zb"));
	decode_check(IMAP_TEXT_ENC_QP, false, SZ("a=aZb =Az =G1"), SZ("a=aZb =Az =G1"));
	decode_check(IMAP_TEXT_ENC_QP, false, SZ("=4=41"), SZ("=4A"));
	decode_check(IMAP_TEXT_ENC_QP, true, SZ("=4=\xff"), SZ("=4=\xC3\xBF"));
	/* ... but blanks after a '=' that no line end follows are dropped. */
	decode_check(IMAP_TEXT_ENC_QP, false, SZ("a= b=\tc"), SZ("a=b=c"));
	/* "=" CR without LF: dropped. */
	decode_check(IMAP_TEXT_ENC_QP, false, SZ("a=\rb"), SZ("ab"));
	/* At the end of the part: an unfinished escape is kept as written. */
	decode_check(IMAP_TEXT_ENC_QP, false, SZ("x=4"), SZ("x=4"));
	decode_check(IMAP_TEXT_ENC_QP, false, SZ("x=a"), SZ("x=a"));
	decode_check(IMAP_TEXT_ENC_QP, false, SZ("x="), SZ("x="));
	decode_check(IMAP_TEXT_ENC_QP, false, SZ("x= \t"), SZ("x="));
	decode_check(IMAP_TEXT_ENC_QP, false, SZ("x=\r"), SZ("x"));
	decode_check(IMAP_TEXT_ENC_QP, false, SZ("x  \r"), SZ("x  \r"));
	/* The output bound holds for the worst case of one byte. */
	decode_check(IMAP_TEXT_ENC_QP, true, SZ("=\xff\xff"), SZ("=\xC3\xBF\xC3\xBF"));
	decode_check(IMAP_TEXT_ENC_QP, true, SZ("\xff\n\xff\n"), SZ("\xC3\xBF\r\n\xC3\xBF\r\n"));
}

/* quoted-printable line ends: blanks before them dropped, all written CRLF. */
static void
test_decode_qp_lines(void **state)
{
	decode_check(IMAP_TEXT_ENC_QP, false, SZ("ws  \t \r\nend  "), SZ("ws\r\nend"));
	decode_check(IMAP_TEXT_ENC_QP, false, SZ("bare\nlf\rcr \rx\r\r\n"), SZ("bare\r\nlf\rcr \rx\r\r\n"));
	decode_check(IMAP_TEXT_ENC_QP, false, SZ("a  =\r\nb \t=20\r\n"), SZ("a  b \t \r\n"));
	decode_check(IMAP_TEXT_ENC_QP, false, SZ("soft = \t \r\nbreak=  \nlf soft=\nend= \r"), SZ("soft breaklf softend"));
	/* A run of blanks longer than the decoder holds keeps its first part. */
	char in[400], want[400];
	size_t n = 0, w = 0;
	for (int i = 0; i < 200; i++)
		in[n++] = ' ';
	memcpy(in + n, "\r\nx\t\t\r\n", 7);
	n += 7;
	for (int i = 0; i < IMAP_TEXT_QP_BLANKS; i++)
		want[w++] = ' ';
	memcpy(want + w, "\r\nx\r\n", 5);
	w += 5;
	decode_check(IMAP_TEXT_ENC_QP, false, in, n, want, w);
	/* Blanks inside a line are kept however many. */
	in[200] = 'y';
	want[0] = 'y';
	memcpy(in + 200, "y\r\n", 3);
	memset(want, ' ', 200);
	memcpy(want + 200, "y\r\n", 3);
	decode_check(IMAP_TEXT_ENC_QP, false, in, 203, want, 203);
}

/* Soft line breaks and escapes of a long text at every chunk boundary. */
static void
test_decode_qp_long(void **state)
{
	char *in = xmalloc(20000), *want = xmalloc(20000);
	size_t n = 0, w = 0;
	for (int i = 0; n < 9900; i++) {
		int k = snprintf(in + n, 100, "line %d =C3=a9 x=3d y  =\r\n%s", i, i % 5 == 0 ? "end \t\r\n" : "");
		n += (size_t)k;
		k = snprintf(want + w, 100, "line %d \xC3\xA9 x= y  %s", i, i % 5 == 0 ? "end\r\n" : "");
		w += (size_t)k;
	}
	decode_check(IMAP_TEXT_ENC_QP, false, in, n, want, w);
	free(in);
	free(want);
}

/* A decoder is ready for a new stream after _end. */
static void
test_decode_end_resets(void **state)
{
	struct imap_text_decoder d;
	char out[IMAP_TEXT_DECODE_MAX(16)];
	imap_text_decoder_init(&d, IMAP_TEXT_ENC_QP, true);
	assert_int_equal(imap_text_decode(&d, SZ("a=E"), out), 1);
	assert_int_equal(imap_text_decode_end(&d, out), 2);
	assert_memory_equal(out, "=E", 2);
	assert_int_equal(imap_text_decode(&d, SZ("=E9"), out), 2);
	assert_memory_equal(out, "\xC3\xA9", 2);
	assert_int_equal(imap_text_decode_end(&d, out), 0);
	imap_text_decoder_init(&d, IMAP_TEXT_ENC_B64, false);
	assert_int_equal(imap_text_decode(&d, SZ("QQ==QUJD"), out), 1);
	assert_int_equal(imap_text_decode_end(&d, out), 0);
	assert_int_equal(imap_text_decode(&d, SZ("QUJD"), out), 3);
	assert_memory_equal(out, "ABC", 3);
}

static void
test_decode_names(void **state)
{
	assert_int_equal(imap_text_enc_of("BASE64"), IMAP_TEXT_ENC_B64);
	assert_int_equal(imap_text_enc_of("Quoted-Printable"), IMAP_TEXT_ENC_QP);
	assert_int_equal(imap_text_enc_of("8bit"), IMAP_TEXT_ENC_NONE);
	assert_int_equal(imap_text_enc_of("7BIT"), IMAP_TEXT_ENC_NONE);
	assert_int_equal(imap_text_enc_of("binary"), IMAP_TEXT_ENC_NONE);
	assert_int_equal(imap_text_enc_of(NULL), IMAP_TEXT_ENC_NONE);
	assert_int_equal(imap_text_enc_of("x-uuencode"), IMAP_TEXT_ENC_UNKNOWN);
	assert_int_equal(imap_text_enc_of(""), IMAP_TEXT_ENC_UNKNOWN);
	assert_int_equal(imap_text_enc_of("base64 "), IMAP_TEXT_ENC_UNKNOWN);
	assert_true(imap_text_charset_latin1("ISO-8859-1"));
	assert_true(imap_text_charset_latin1("windows-1252"));
	assert_false(imap_text_charset_latin1("utf-8"));
	assert_false(imap_text_charset_latin1(NULL));
}

/* ---- output window ---- */

static void
test_window(void **state)
{
	struct imap_text_window w;
	size_t start;
	imap_text_window_init(&w, 5, 4);
	assert_false(imap_text_window_done(&w));
	assert_int_equal(imap_text_window_take(&w, 3, &start), 0);
	assert_int_equal(start, 0);
	assert_int_equal(imap_text_window_take(&w, 0, &start), 0);
	assert_int_equal(imap_text_window_take(&w, 3, &start), 1);
	assert_int_equal(start, 2);
	assert_int_equal(imap_text_window_take(&w, 10, &start), 3);
	assert_int_equal(start, 0);
	assert_true(imap_text_window_done(&w));
	assert_int_equal(imap_text_window_take(&w, 10, &start), 0);
	imap_text_window_init(&w, UINT64_MAX, 1);
	assert_int_equal(imap_text_window_take(&w, SIZE_MAX, &start), 0);
	assert_int_equal(w.skip, UINT64_MAX - SIZE_MAX);
}

/* Every window of a decoded stream given in pieces equals the slice of the whole. */
static void
test_window_decoded(void **state)
{
	static const char in[] = "a=C3=A9b=\r\nc=3d  \r\nd=ZZ e=\r\n=41=";
	static const char want[] = "a\xC3\xA9" "bc=\r\nd=ZZ eA=";
	size_t len = sizeof(in) - 1, wlen = sizeof(want) - 1;
	for (size_t step = 1; step <= 5; step++)
		for (size_t off = 0; off <= wlen + 1; off++)
			for (size_t count = 1; count <= wlen + 1; count++) {
				struct imap_text_decoder d;
				struct imap_text_window w;
				char out[IMAP_TEXT_DECODE_MAX(8)], got[64];
				size_t g = 0, start, k;
				imap_text_decoder_init(&d, IMAP_TEXT_ENC_QP, false);
				imap_text_window_init(&w, off, count);
				for (size_t i = 0; i <= len; i += step) {
					size_t n = len - i < step ? len - i : step;
					size_t o = n > 0 ? imap_text_decode(&d, in + i, n, out) : 0;
					if (i + step > len)
						o += imap_text_decode_end(&d, out + o);
					k = imap_text_window_take(&w, o, &start);
					memcpy(got + g, out + start, k);
					g += k;
				}
				size_t exp = off >= wlen ? 0 : wlen - off < count ? wlen - off : count;
				assert_int_equal(g, exp);
				assert_memory_equal(got, want + off, exp);
				assert_int_equal(imap_text_window_done(&w), off + count <= wlen);
			}
}

/* ---- matcher ---- */

/* Run needles over text fed in steps (0: whole); segments split at '|' when seg. Bit i: needle i found. */
static unsigned
match(const char *const *needles, size_t nn, const char *text, size_t len, size_t step, size_t window, bool seg)
{
	struct imap_text_matcher *m = imap_text_matcher_new(window);
	for (size_t i = 0; i < nn; i++)
		assert_int_equal(imap_text_matcher_add(m, needles[i], strlen(needles[i])), i);
	size_t start = 0;
	for (size_t i = 0; i <= len; i++) {
		if (i < len && !(seg && text[i] == '|'))
			continue;
		size_t slen = i - start;
		if (step == 0) {
			imap_text_matcher_feed(m, text + start, slen);
		} else {
			for (size_t k = 0; k < slen; k += step)
				imap_text_matcher_feed(m, text + start + k, slen - k < step ? slen - k : step);
		}
		imap_text_matcher_end(m);
		start = i + 1;
	}
	unsigned r = 0;
	size_t left = 0;
	for (size_t i = 0; i < nn; i++) {
		if (imap_text_matcher_found(m, i))
			r |= 1u << i;
		else
			left++;
	}
	assert_int_equal(imap_text_matcher_left(m), left);
	assert_false(imap_text_matcher_found(m, nn));
	imap_text_matcher_free(&m);
	assert_null(m);
	return r;
}

static void
test_matcher(void **state)
{
	static const char *nd[] = {"hello", "WORLD", "\xC3\x84pfel", "", "absent", "lo wo", "o|t"};
	const char text[] = "Say HELLO|to the World of \xC3\xA4PFEL";
	size_t len = sizeof(text) - 1;
	unsigned want = match(nd, ARRAY_LEN(nd), text, len, 0, 1 << 16, true);
	assert_int_equal(want, 0x1 | 0x2 | 0x4 | 0x8);
	/* No match spans two segments: "o|t" is found only when '|' is text. */
	assert_int_equal(match(nd, ARRAY_LEN(nd), text, len, 0, 1 << 16, false), want | 0x40);
	/* One byte at a time, small windows: same result, matches across feed boundaries. */
	for (size_t step = 1; step <= len; step++)
		for (size_t w = 0; w <= 40; w += 8)
			assert_int_equal(match(nd, ARRAY_LEN(nd), text, len, step, w, true), want);
}

static void
test_matcher_across_chunks(void **state)
{
	/* A long text whose needles straddle every possible window boundary. */
	char text[3000];
	for (size_t i = 0; i < sizeof(text); i++)
		text[i] = (char)('a' + i % 7);
	memcpy(text + 1000, "Needle\xC3\x9C", 8);
	memcpy(text + 2990, "TAIL", 4);
	static const char *nd[] = {"needle\xC3\xBC", "tail", "needlex", "gabcdefgabcdefgabcdefga"};
	for (size_t w = 16; w <= 64; w++) {
		assert_int_equal(match(nd, ARRAY_LEN(nd), text, sizeof(text), 0, w, false), 0xB);
		assert_int_equal(match(nd, ARRAY_LEN(nd), text, sizeof(text), 1, w, false), 0xB);
		assert_int_equal(match(nd, ARRAY_LEN(nd), text, sizeof(text), 7, w, false), 0xB);
	}
	/* A UTF-8 character split between feeds is folded once complete. */
	static const char *u[] = {"\xC3\xBC"};
	assert_int_equal(match(u, 1, "xxxxxxxxxxxxxxx\xC3\x9C", 17, 1, 16, false), 1);
}

static void
test_matcher_malformed(void **state)
{
	/* Malformed UTF-8 and NUL bytes in text and needles. */
	static const char *nd[] = {"\xC3" "abc", "\xFF\xFE", "b\xC3"};
	const char text[] = "zz\xC3" "ABC\x00\xFF\xFE" "B\xC3";
	size_t len = sizeof(text) - 1;
	for (size_t step = 0; step <= len; step++)
		assert_int_equal(match(nd, ARRAY_LEN(nd), text, len, step, 16, false), 0x7);
	/* Nothing fed: only the empty needle is found. */
	static const char *e[] = {"", "x"};
	assert_int_equal(match(e, 2, "", 0, 0, 16, false), 1);
	/* Feeding after everything is found is a no-op. */
	struct imap_text_matcher *m = imap_text_matcher_new(0);
	imap_text_matcher_add(m, SZ("a"));
	imap_text_matcher_feed(m, SZ("A"));
	imap_text_matcher_end(m);
	assert_int_equal(imap_text_matcher_left(m), 0);
	imap_text_matcher_feed(m, SZ("more"));
	imap_text_matcher_end(m);
	assert_true(imap_text_matcher_found(m, 0));
	imap_text_matcher_free(&m);
	imap_text_matcher_free(&m);
	imap_text_matcher_free(NULL);
	/* A longer needle added after a feed is found in what follows. */
	m = imap_text_matcher_new(16);
	imap_text_matcher_add(m, SZ("zz"));
	imap_text_matcher_feed(m, SZ("0123456789abcdefghij"));
	assert_int_equal(imap_text_matcher_add(m, SZ("a long needle of forty bytes, more or so")), 1);
	for (int i = 0; i < 3; i++)
		imap_text_matcher_feed(m, SZ("... a LONG needle of forty bytes, more or so ..."));
	imap_text_matcher_end(m);
	assert_false(imap_text_matcher_found(m, 0));
	assert_true(imap_text_matcher_found(m, 1));
	imap_text_matcher_free(&m);
}

/* ---- header fields ---- */

struct fields {
	struct mbuf b;
};

static void
field_cb(void *arg, const struct imap_text_field *f)
{
	struct fields *fs = arg;
	assert_ptr_equal(f->name, f->line);
	assert_true(f->value >= f->line && f->value + f->vlen == f->line + f->len);
	mbuf_printf(&fs->b, "[%.*s|%.*s|%.*s]", (int)f->nlen, f->name, (int)f->vlen, f->value, (int)f->len, f->line);
}

static size_t
fields(const char *h, size_t len, const char *want)
{
	struct fields fs;
	mbuf_init(&fs.b, 1 << 20);
	size_t r = imap_text_header_fields(h, len, field_cb, &fs);
	assert_string_equal(fs.b.data != NULL ? fs.b.data : "", want);
	mbuf_clear(&fs.b);
	return r;
}

static void
test_header_fields(void **state)
{
	const char h[] = "From: a@b\r\nSubject: one\r\n two\r\n\tthree\r\nTo : x\r\n\r\nbody: no\r\n";
	assert_int_equal(fields(SZ(h), "[From|a@b|From: a@b][Subject|one two\tthree|Subject: one two\tthree]"
	    "[To|x|To : x]"), sizeof(h) - 1 - strlen("body: no\r\n"));
	/* LF only, no blank line: the whole buffer. */
	assert_int_equal(fields(SZ("A: 1\nB:2"), "[A|1|A: 1][B|2|B:2]"), 8);
	assert_int_equal(fields(SZ("\nA: 1\n"), ""), 1);
	assert_int_equal(fields(SZ(""), ""), 0);
}

static void
test_header_fields_malformed(void **state)
{
	/* No colon, leading continuation, empty name and value, NUL bytes. */
	assert_int_equal(fields(SZ(" lead: x\nnocolon\n:\nX:   \n"), "[ lead|x| lead: x][||:][X||X:   ]"), 25);
	assert_int_equal(fields(SZ("A\0: 1\n"), "[A|1|A]"), 6);
	assert_int_equal(fields(SZ("\r\n"), ""), 2);
	assert_int_equal(fields(SZ("\r"), ""), 1);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_fold),
		cmocka_unit_test(test_fold_malformed),
		cmocka_unit_test(test_fold_idempotent),
		cmocka_unit_test(test_dates),
		cmocka_unit_test(test_dates_malformed),
		cmocka_unit_test(test_sent_day),
		cmocka_unit_test(test_decode),
		cmocka_unit_test(test_decode_b64_lines),
		cmocka_unit_test(test_decode_malformed),
		cmocka_unit_test(test_decode_qp_lines),
		cmocka_unit_test(test_decode_qp_long),
		cmocka_unit_test(test_decode_end_resets),
		cmocka_unit_test(test_decode_names),
		cmocka_unit_test(test_window),
		cmocka_unit_test(test_window_decoded),
		cmocka_unit_test(test_matcher),
		cmocka_unit_test(test_matcher_across_chunks),
		cmocka_unit_test(test_matcher_malformed),
		cmocka_unit_test(test_header_fields),
		cmocka_unit_test(test_header_fields_malformed),
	};
	return cmocka_run_group_tests(tests, 0, 0);
}

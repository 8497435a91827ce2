/* Unit tests for daemon/imap_text: case folding, dates, transfer decoding,
 * the streaming matcher (whole vs byte by byte, matches across feeds) and
 * header unfolding. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

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

/* Decode in whole and in steps of step bytes; both must give want. */
static void
decode_check(enum imap_text_enc enc, bool latin1, const char *in, size_t len, const char *want, size_t wlen)
{
	for (size_t step = 1; step <= len + 1; step = step < 8 ? step + 1 : step * 2) {
		struct imap_text_decoder d;
		char *out = xmalloc(IMAP_TEXT_DECODE_MAX(len) + 1);
		size_t o = 0;
		imap_text_decoder_init(&d, enc, latin1);
		for (size_t i = 0; i < len; i += step) {
			size_t n = len - i < step ? len - i : step;
			char *tmp = xmalloc(IMAP_TEXT_DECODE_MAX(n));
			size_t k = imap_text_decode(&d, in + i, n, tmp);
			assert_true(k <= IMAP_TEXT_DECODE_MAX(n));
			memcpy(out + o, tmp, k);
			o += k;
			free(tmp);
		}
		assert_int_equal(o, wlen);
		assert_memory_equal(out, want, wlen);
		free(out);
	}
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
	decode_check(IMAP_TEXT_ENC_NONE, true, SZ("caf\xe9 \xff"), SZ("caf\xC3\xA9 \xC3\xBF"));
	decode_check(IMAP_TEXT_ENC_QP, true, SZ("caf=E9"), SZ("caf\xC3\xA9"));
	decode_check(IMAP_TEXT_ENC_B64, true, SZ("6enp"), SZ("\xC3\xA9\xC3\xA9\xC3\xA9"));
	decode_check(IMAP_TEXT_ENC_NONE, false, SZ(""), SZ(""));
}

static void
test_decode_malformed(void **state)
{
	/* base64: characters outside the alphabet are skipped, a partial group dropped. */
	decode_check(IMAP_TEXT_ENC_B64, false, SZ("aG!!V*s b G8"), SZ("hello"));
	decode_check(IMAP_TEXT_ENC_B64, false, SZ("a"), SZ(""));
	decode_check(IMAP_TEXT_ENC_B64, false, SZ("===="), SZ(""));
	/* quoted-printable: bad escapes pass through, an unfinished one is dropped. */
	decode_check(IMAP_TEXT_ENC_QP, false, SZ("a=ZZb"), SZ("a=ZZb"));
	decode_check(IMAP_TEXT_ENC_QP, false, SZ("a=4Zb"), SZ("a=4Zb"));
	decode_check(IMAP_TEXT_ENC_QP, false, SZ("a=\rb"), SZ("ab"));
	decode_check(IMAP_TEXT_ENC_QP, false, SZ("x=4"), SZ("x"));
	decode_check(IMAP_TEXT_ENC_QP, false, SZ("x="), SZ("x"));
	decode_check(IMAP_TEXT_ENC_QP, false, SZ("=4=41"), SZ("=4A"));
	decode_check(IMAP_TEXT_ENC_QP, true, SZ("=4=\xff"), SZ("=4=\xC3\xBF"));
	/* The output bound holds for the worst case of one byte. */
	decode_check(IMAP_TEXT_ENC_QP, true, SZ("=\xff\xff"), SZ("=\xC3\xBF\xC3\xBF"));
}

static void
test_decode_names(void **state)
{
	assert_int_equal(imap_text_enc_of("BASE64"), IMAP_TEXT_ENC_B64);
	assert_int_equal(imap_text_enc_of("Quoted-Printable"), IMAP_TEXT_ENC_QP);
	assert_int_equal(imap_text_enc_of("8bit"), IMAP_TEXT_ENC_NONE);
	assert_int_equal(imap_text_enc_of(NULL), IMAP_TEXT_ENC_NONE);
	assert_true(imap_text_charset_latin1("ISO-8859-1"));
	assert_true(imap_text_charset_latin1("windows-1252"));
	assert_false(imap_text_charset_latin1("utf-8"));
	assert_false(imap_text_charset_latin1(NULL));
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
		cmocka_unit_test(test_decode_malformed),
		cmocka_unit_test(test_decode_names),
		cmocka_unit_test(test_matcher),
		cmocka_unit_test(test_matcher_across_chunks),
		cmocka_unit_test(test_matcher_malformed),
		cmocka_unit_test(test_header_fields),
		cmocka_unit_test(test_header_fields_malformed),
	};
	return cmocka_run_group_tests(tests, 0, 0);
}

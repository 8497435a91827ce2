/* Unit tests for index/mbox.c: the mbox reader (whole and byte at a time) and mboxrd quoting. */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "index/tools.h"

/* What the sink saw: messages separated by "\x01<fromline>\x02", ended by "\x03". */
struct out {
	char buf[8192];
	size_t n;
};

static void put(struct out *o, const char *p, size_t n)
{
	assert_true(o->n + n < sizeof(o->buf));
	memcpy(o->buf + o->n, p, n);
	o->n += n;
	o->buf[o->n] = '\0';
}

static void s_start(void *arg, const char *line, size_t len)
{
	put(arg, "\x01", 1);
	put(arg, line, len);
	put(arg, "\x02", 1);
}

static void s_data(void *arg, const char *p, size_t n)
{
	put(arg, p, n);
}

static void s_end(void *arg)
{
	put(arg, "\x03", 1);
}

static const struct mbox_sink sink = { s_start, s_data, s_end };

/* Parse in whole and byte by byte; both must give want. */
static void check(const char *in, const char *want, uint64_t nmsgs)
{
	struct mbox_parser p;
	struct out whole = { .n = 0 }, bytes = { .n = 0 };

	mbox_parser_init(&p);
	mbox_parse(&p, in, strlen(in), &sink, &whole);
	mbox_parse_finish(&p, &sink, &whole);
	assert_int_equal(p.messages, nmsgs);
	assert_string_equal(whole.buf, want);

	mbox_parser_init(&p);
	for (size_t i = 0; in[i]; i++)
		mbox_parse(&p, in + i, 1, &sink, &bytes);
	mbox_parse_finish(&p, &sink, &bytes);
	assert_string_equal(bytes.buf, want);
}

static void test_basic(void **state)
{
	check("From a Thu Jan  1 00:00:00 1970\nSubject: x\n\nbody\n\nFrom b\nS: y\n\nz\n\n",
	    "\x01" "From a Thu Jan  1 00:00:00 1970\x02Subject: x\n\nbody\n\x03\x01" "From b\x02S: y\n\nz\n\x03", 2);
	/* No blank line before the separator, no final newline. */
	check("From a\nA\nFrom b\nB", "\x01" "From a\x02" "A\n\x03\x01" "From b\x02" "B\x03", 2);
	/* CRLF files. */
	check("From a\r\nA\r\n\r\nFrom b\r\nB\r\n\r\n", "\x01" "From a\x02" "A\r\n\x03\x01" "From b\x02" "B\r\n\x03", 2);
	/* Two blank lines: one is content. */
	check("From a\nA\n\n\nFrom b\n", "\x01" "From a\x02" "A\n\n\x03\x01" "From b\x02\x03", 2);
	/* Junk before the first message. */
	check("junk\n>From x\n\nFrom a\nA\n", "\x01" "From a\x02" "A\n\x03", 1);
	check("no mbox at all\n", "", 0);
	check("", "", 0);
}

static void test_unquote(void **state)
{
	check("From a\n>From x\n>>From y\n>Fro\nFro\n>\n>>\nFromage\n",
	    "\x01" "From a\x02" "From x\n>From y\n>Fro\nFro\n>\n>>\nFromage\n\x03", 1);
	/* A blank line before a quoted From stays. */
	check("From a\n\n>From x\n", "\x01" "From a\x02\nFrom x\n\x03", 1);
	/* Partial prefix at the end of input. */
	check("From a\n>>Fr", "\x01" "From a\x02>>Fr\x03", 1);
	check("From a\nx\n\r", "\x01" "From a\x02x\n\r\x03", 1);
}

static void test_fromline_time(void **state)
{
	const char *l = "From MAILER-DAEMON Thu Jan  1 00:01:40 1970";

	assert_int_equal(mbox_fromline_time(l, strlen(l)), 100);
	l = "From x@y Sat Feb 29 12:00:00 2020";
	assert_int_equal(mbox_fromline_time(l, strlen(l)), 1582977600);
	l = "From x@y";
	assert_int_equal(mbox_fromline_time(l, strlen(l)), 0);
	l = "From x Foo Bar 99 12:00:00 2020";
	assert_int_equal(mbox_fromline_time(l, strlen(l)), 0);
}

static void q_emit(void *arg, const char *p, size_t n)
{
	put(arg, p, n);
}

static void quote(const char *in, const char *want, bool bytewise)
{
	struct mbox_quoter q;
	struct out o = { .n = 0 };

	mbox_quoter_init(&q);
	if (bytewise)
		for (size_t i = 0; in[i]; i++)
			mbox_quote(&q, in + i, 1, q_emit, &o);
	else
		mbox_quote(&q, in, strlen(in), q_emit, &o);
	mbox_quote_finish(&q, q_emit, &o);
	assert_string_equal(o.buf, want);
}

static void test_quote(void **state)
{
	for (int b = 0; b < 2; b++) {
		quote("A: b\r\n\r\nFrom x\r\n>From y\r\n>>From z\r\nFro\r\n>F\r\n", "A: b\n\n>From x\n>>From y\n>>>From z\nFro\n>F\n",
		    b);
		quote("From x", ">From x\n", b);
		quote("abc", "abc\n", b);
		quote("", "", b);
		quote("a\rb\r\n", "a\rb\n", b);
		quote("x\r\n>>Fr", "x\n>>Fr\n", b);
	}
}

/* Quoting then reading gives the message back (with LF line ends). */
static void test_roundtrip(void **state)
{
	const char *msgs[] = { "S: 1\r\n\r\nFrom me\r\n>From you\r\n\r\n", "S: 2\r\n\r\n\r\n", "S: 3\r\n\r\nx\r\n" };
	struct out file = { .n = 0 }, got = { .n = 0 };
	struct mbox_parser p;
	char want[1024] = "";

	for (size_t i = 0; i < 3; i++) {
		struct mbox_quoter q;
		char lf[256];
		size_t k = 0;

		put(&file, "From MAILER-DAEMON Thu Jan  1 00:00:00 1970\n", 44);
		mbox_quoter_init(&q);
		mbox_quote(&q, msgs[i], strlen(msgs[i]), q_emit, &file);
		mbox_quote_finish(&q, q_emit, &file);
		put(&file, "\n", 1);
		for (const char *c = msgs[i]; *c; c++)
			if (*c != '\r')
				lf[k++] = *c;
		lf[k] = '\0';
		snprintf(want + strlen(want), sizeof(want) - strlen(want),
		    "\x01" "From MAILER-DAEMON Thu Jan  1 00:00:00 1970\x02%s\x03", lf);
	}
	mbox_parser_init(&p);
	mbox_parse(&p, file.buf, file.n, &sink, &got);
	mbox_parse_finish(&p, &sink, &got);
	assert_string_equal(got.buf, want);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_basic),
		cmocka_unit_test(test_unquote),
		cmocka_unit_test(test_fromline_time),
		cmocka_unit_test(test_quote),
		cmocka_unit_test(test_roundtrip),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}

/* Unit tests for daemon/imap_parse: commands, literals, limits, errors,
 * sequence sets, modified UTF-7, UTF-8 and output quoting. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "daemon/imap_parse.h"

/* A string literal and its length (it may hold NUL). */
#define SZ(s) s, sizeof(s) - 1

/* Canonical text of an argument tree, to compare parses. */
static void
dump_args(struct mbuf *b, const struct imap_arg *a)
{
	for (; a != NULL; a = a->next) {
		switch (a->type) {
		case IMAP_ARG_ATOM:
			if (a->section != NULL) {
				mbuf_printf(b, "S:%.*s[", (int)a->name_len, a->str);
				dump_args(b, a->section->list);
				mbuf_adds(b, "]");
				if (a->has_partial)
					mbuf_printf(b, "<%llu.%llu>",
					    (unsigned long long)a->partial_offset,
					    (unsigned long long)a->partial_count);
			} else {
				mbuf_printf(b, "A:%s", a->str);
			}
			break;
		case IMAP_ARG_NIL:
			mbuf_adds(b, "NIL");
			break;
		case IMAP_ARG_QUOTED:
			mbuf_printf(b, "Q:%s", a->str);
			break;
		case IMAP_ARG_LITERAL:
			mbuf_printf(b, "L%s:%zu:", a->binary ? "8" : "", a->len);
			for (size_t i = 0; i < a->len; i++)
				mbuf_printf(b, a->str[i] >= 0x20 ? "%c" : "\\x%02x",
				    (unsigned char)a->str[i]);
			break;
		case IMAP_ARG_LITERAL_EXT:
			mbuf_printf(b, "X%s:%zu#%u", a->binary ? "8" : "", a->len, a->literal_index);
			break;
		case IMAP_ARG_LIST:
			mbuf_adds(b, "(");
			dump_args(b, a->list);
			mbuf_adds(b, ")");
			break;
		}
		if (a->next != NULL)
			mbuf_adds(b, " ");
	}
}

struct run {
	enum imap_parse_state state;
	int first_err;      /* first error returned, 0 if none */
	int nerrs;
	char errmsg[128];
	size_t consumed;
	int conts;          /* "+ " continuations the server would send */
	char dump[16384];
};

/*
 * Drive the parser like the server does: input arrives step bytes at a time.
 * APPEND literals go "external" when ext is set.
 */
static void
drive(struct imap_parser *p, const char *in, size_t len, size_t step, bool ext,
    struct run *res)
{
	size_t off = 0, avail = step < len ? step : len;
	struct mbuf b;

	memset(res, 0, sizeof(*res));
	for (int guard = 0; guard < 10000000; guard++) {
		enum imap_parse_state st = imap_parse_state(p);
		int r;

		if (st == IMAP_PARSE_ST_DONE || st == IMAP_PARSE_ST_FAILED ||
		    st == IMAP_PARSE_ST_FATAL)
			break;
		if (st == IMAP_PARSE_ST_LINE) {
			r = imap_parse_fragment(p, in + off, avail - off);
			if (r < 0) {
				if (res->nerrs++ == 0) {
					res->first_err = r;
					snprintf(res->errmsg, sizeof(res->errmsg), "%s",
					    imap_parse_error(p));
				}
				assert_int_not_equal(r, IMAP_PARSE_ERR_STATE);
				continue;
			}
			if (r == 0) {
				if (avail == len)
					break;
				avail = avail + step < len ? avail + step : len;
				continue;
			}
			off += (size_t)r;
			if (imap_parse_state(p) == IMAP_PARSE_ST_LITERAL) {
				struct imap_literal_info li;
				const char *name = imap_parse_name(p);
				bool failed_before = imap_parse_failed(p);

				assert_int_equal(imap_parse_literal_info(p, &li), 1);
				if (failed_before)
					continue; /* discarding, begun already */
				r = imap_parse_literal_begin(p, ext && name != NULL &&
				    strcmp(name, "APPEND") == 0);
				if (r < 0) {
					if (res->nerrs++ == 0) {
						res->first_err = r;
						snprintf(res->errmsg, sizeof(res->errmsg), "%s",
						    imap_parse_error(p));
					}
					continue;
				}
				if (li.sync)
					res->conts++;
			}
			continue;
		}
		/* ST_LITERAL */
		{
			struct imap_literal_info li;
			const struct imap_command *c = imap_parse_command(p);
			bool external = false;
			int64_t k;

			assert_int_equal(imap_parse_literal_info(p, &li), 1);
			if (c != NULL && ext && strcmp(c->name, "APPEND") == 0)
				external = true;
			if (external) {
				k = imap_parse_literal_external(p, avail - off);
			} else {
				k = imap_parse_literal(p, in + off, avail - off);
				if (k < 0) {
					if (res->nerrs++ == 0) {
						res->first_err = (int)k;
						snprintf(res->errmsg, sizeof(res->errmsg), "%s",
						    imap_parse_error(p));
					}
					continue;
				}
			}
			assert_true(k >= 0);
			off += (size_t)k;
			if (imap_parse_state(p) == IMAP_PARSE_ST_LITERAL && off == avail) {
				if (avail == len)
					break;
				avail = avail + step < len ? avail + step : len;
			}
		}
	}
	res->state = imap_parse_state(p);
	res->consumed = off;
	if (res->state == IMAP_PARSE_ST_DONE) {
		const struct imap_command *c = imap_parse_command(p);

		assert_non_null(c);
		mbuf_init(&b, 1 << 20);
		mbuf_printf(&b, "%s %s", c->tag, c->name);
		if (c->args != NULL) {
			mbuf_adds(&b, " ");
			dump_args(&b, c->args);
		}
		snprintf(res->dump, sizeof(res->dump), "%s", b.data);
		mbuf_clear(&b);
	}
}

/* Parse whole and byte by byte; both must agree; return the whole run. */
static void
parse_both(const struct imap_parse_limits *lim, bool utf8, bool ext, const char *in,
    size_t len, struct run *whole)
{
	struct imap_parser *p = imap_parse_new(lim);
	struct run *bytes = malloc(sizeof(*bytes));
	static const size_t steps[] = { 1, 3, 7 };

	imap_parse_set_utf8(p, utf8);
	drive(p, in, len, len == 0 ? 1 : len, ext, whole);
	for (size_t i = 0; i < ARRAY_LEN(steps); i++) {
		imap_parse_reset(p);
		drive(p, in, len, steps[i], ext, bytes);
		assert_int_equal(bytes->state, whole->state);
		assert_int_equal(bytes->first_err, whole->first_err);
		assert_int_equal(bytes->consumed, whole->consumed);
		assert_int_equal(bytes->conts, whole->conts);
		assert_string_equal(bytes->dump, whole->dump);
	}
	free(bytes);
	imap_parse_free(&p);
	assert_null(p);
}

static void
expect_cmd(const char *in, size_t len, bool utf8, bool ext, const char *dump)
{
	struct run r;

	parse_both(NULL, utf8, ext, in, len, &r);
	if (r.state != IMAP_PARSE_ST_DONE)
		fail_msg("not parsed: %s (%d %s)", in, r.first_err, r.errmsg);
	assert_string_equal(r.dump, dump);
	assert_int_equal(r.consumed, len);
}

#define CMD(in, dump) expect_cmd(in, sizeof(in) - 1, false, false, dump)

static void
test_rfc_commands(void **state)
{
	CMD("a001 LOGIN SMITH SESAME\r\n", "a001 LOGIN A:SMITH A:SESAME");
	CMD("a002 login \"fred\" \"s\\\"e\\\\c\"\r\n", "a002 LOGIN Q:fred Q:s\"e\\c");
	CMD("A142 SELECT INBOX\r\n", "A142 SELECT A:INBOX");
	CMD("a NOOP\r\n", "a NOOP");
	CMD("a NOOP\n", "a NOOP");
	CMD("A341 CLOSE\r\n", "A341 CLOSE");
	CMD("A654 FETCH 2:4 (FLAGS BODY[HEADER.FIELDS (DATE FROM)])\r\n",
	    "A654 FETCH A:2:4 (A:FLAGS S:BODY[A:HEADER.FIELDS (A:DATE A:FROM)])");
	CMD("A003 UID FETCH 1:* (UID FLAGS BODY.PEEK[1.2.MIME] BINARY.PEEK[1]<0.100> "
	    "RFC822.SIZE body[] BINARY.SIZE[2])\r\n",
	    "A003 UID A:FETCH A:1:* (A:UID A:FLAGS S:BODY.PEEK[A:1.2.MIME] "
	    "S:BINARY.PEEK[A:1]<0.100> A:RFC822.SIZE S:body[] S:BINARY.SIZE[A:2])");
	CMD("a FETCH 1 BODY[HEADER.FIELDS.NOT (\"X-a\" B)]<10.20>\r\n",
	    "a FETCH A:1 S:BODY[A:HEADER.FIELDS.NOT (Q:X-a A:B)]<10.20>");
	CMD("A282 SEARCH FLAGGED SINCE 1-Feb-1994 NOT FROM \"Smith\"\r\n",
	    "A282 SEARCH A:FLAGGED A:SINCE A:1-Feb-1994 A:NOT A:FROM Q:Smith");
	CMD("A283 SEARCH CHARSET UTF-8 OR (TO \"x\" NOT SEEN) (OR SUBJECT {5}\r\n"
	    "hello LARGER 100)\r\n",
	    "A283 SEARCH A:CHARSET A:UTF-8 A:OR (A:TO Q:x A:NOT A:SEEN) "
	    "(A:OR A:SUBJECT L:5:hello A:LARGER A:100)");
	CMD("A003 STORE 2:4 +FLAGS.SILENT (\\Deleted \\Seen $Junk)\r\n",
	    "A003 STORE A:2:4 A:+FLAGS.SILENT (A:\\Deleted A:\\Seen A:$Junk)");
	CMD("a X (() (a (b)) NIL nil)\r\n", "a X (() (A:a (A:b)) NIL NIL)");
	CMD("a SELECT [Gmail]/Sent\r\n", "a SELECT A:[Gmail]/Sent");
	CMD("a LIST \"\" %/*\r\n", "a LIST Q: A:%/*");
	CMD("a LIST (SUBSCRIBED) \"\" (\"INBOX\" \"a\") RETURN (CHILDREN)\r\n",
	    "a LIST (A:SUBSCRIBED) Q: (Q:INBOX Q:a) A:RETURN (A:CHILDREN)");
	CMD("a SELECT a]b\r\n", "a SELECT A:a]b");
	CMD("a SEARCH RETURN (SAVE) UID $\r\n", "a SEARCH A:RETURN (A:SAVE) A:UID A:$");
	CMD("a ENABLE UTF8=ACCEPT\r\n", "a ENABLE A:UTF8=ACCEPT");
	CMD("a ID (\"name\" \"x\" \"version\" NIL)\r\n",
	    "a ID (Q:name Q:x Q:version NIL)");
}

static void
test_literals(void **state)
{
	struct run r;

	CMD("A001 LOGIN {11}\r\nFRED FOOBAR {7}\r\nfat man\r\n",
	    "A001 LOGIN L:11:FRED FOOBAR L:7:fat man");
	CMD("A001 LOGIN {11+}\r\nFRED FOOBAR {7+}\r\nfat man\r\n",
	    "A001 LOGIN L:11:FRED FOOBAR L:7:fat man");
	CMD("a LOGIN {0}\r\n {0+}\r\n\r\n", "a LOGIN L:0: L:0:");
	CMD("a X ({3}\r\nabc)\r\n", "a X (L:3:abc)");
	CMD("a X ({3}\r\nabc {1}\r\n()\r\n", "a X (L:3:abc L:1:()");
	CMD("a X {2}\r\n\r\n\r\n", "a X L:2:\\x0d\\x0a");
	expect_cmd(SZ("A1 APPEND INBOX ~{5+}\r\na\0b\0c\r\n"), false, false,
	    "A1 APPEND A:INBOX L8:5:a\\x00b\\x00c");
	expect_cmd(SZ("A1 APPEND INBOX ~{5}\r\na\0b\0c\r\n"), false, false,
	    "A1 APPEND A:INBOX L8:5:a\\x00b\\x00c");

	/* Synchronizing literals each need one continuation. */
	parse_both(NULL, false, false, "A001 LOGIN {11}\r\nFRED FOOBAR {7}\r\nfat man\r\n",
	    43, &r);
	assert_int_equal(r.conts, 2);
	parse_both(NULL, false, false, "A001 LOGIN {11+}\r\nFRED FOOBAR {7}\r\nfat man\r\n",
	    44, &r);
	assert_int_equal(r.conts, 1);

	/* APPEND: message literals go elsewhere; flags, date kept. */
	{
		static const char in[] = "A003 APPEND saved-messages (\\Seen) "
		    "\"05-Jan-2024 10:00:00 +0100\" {24}\r\nFrom: a\r\n\r\nhello world\r\n"
		    " ~{3+}\r\nx\0y\r\n";

		expect_cmd(in, sizeof(in) - 1, false, true,
		    "A003 APPEND A:saved-messages (A:\\Seen) Q:05-Jan-2024 10:00:00 +0100 "
		    "X:24#0 X8:3#1");
		expect_cmd(in, sizeof(in) - 1, false, false,
		    "A003 APPEND A:saved-messages (A:\\Seen) Q:05-Jan-2024 10:00:00 +0100 "
		    "L:24:From: a\\x0d\\x0a\\x0d\\x0ahello world\\x0d\\x0a L8:3:x\\x00y");
	}
}

/* The next command after a failed one must parse. */
static void
expect_recovers(const struct imap_parse_limits *lim, bool utf8, const char *bad,
    size_t badlen, int err, const char *msgpart)
{
	static const char next[] = "b NOOP\r\n";
	char *in = malloc(badlen + sizeof(next));
	struct imap_parser *p;
	struct run r;

	parse_both(lim, utf8, false, bad, badlen, &r);
	if (r.first_err != err)
		fail_msg("%.*s: got %d (%s) want %d", (int)badlen, bad, r.first_err,
		    r.errmsg, err);
	if (msgpart != NULL && strstr(r.errmsg, msgpart) == NULL)
		fail_msg("message '%s' lacks '%s'", r.errmsg, msgpart);
	assert_int_equal(r.state, IMAP_PARSE_ST_FAILED);

	memcpy(in, bad, badlen);
	memcpy(in + badlen, next, sizeof(next) - 1);
	p = imap_parse_new(lim);
	imap_parse_set_utf8(p, utf8);
	drive(p, in, badlen + sizeof(next) - 1, 1, false, &r);
	assert_int_equal(r.state, IMAP_PARSE_ST_FAILED);
	assert_int_equal(r.consumed, badlen);
	imap_parse_reset(p);
	drive(p, in + badlen, sizeof(next) - 1, 1, false, &r);
	assert_int_equal(r.state, IMAP_PARSE_ST_DONE);
	assert_string_equal(r.dump, "b NOOP");
	imap_parse_free(&p);
	free(in);
}

#define BAD(in, err, msg) expect_recovers(NULL, false, in, sizeof(in) - 1, err, msg)

static void
test_syntax_errors(void **state)
{
	BAD("a LOGIN \"fred\r\n", IMAP_PARSE_ERR_SYNTAX, "unterminated");
	BAD("a LOGIN \"fr\\ed\"\r\n", IMAP_PARSE_ERR_SYNTAX, "escape");
	BAD("a LOGIN \"fr\xc3\xa9\"\r\n", IMAP_PARSE_ERR_SYNTAX, "8-bit");
	BAD("a LOGIN fr\xc3\xa9\r\n", IMAP_PARSE_ERR_SYNTAX, "8-bit");
	BAD("a LOGIN  x\r\n", IMAP_PARSE_ERR_SYNTAX, NULL);
	BAD("a LOGIN x \r\n", IMAP_PARSE_ERR_SYNTAX, "space");
	BAD("a X (a\r\n", IMAP_PARSE_ERR_SYNTAX, "missing ')'");
	BAD("a X a)\r\n", IMAP_PARSE_ERR_SYNTAX, NULL);
	BAD("a X ( a)\r\n", IMAP_PARSE_ERR_SYNTAX, NULL);
	BAD("a X (a )\r\n", IMAP_PARSE_ERR_SYNTAX, NULL);
	BAD("a X (a)(b)\r\n", IMAP_PARSE_ERR_SYNTAX, "expected space");
	BAD("a\r\n", IMAP_PARSE_ERR_SYNTAX, "missing command");
	BAD("\r\n", IMAP_PARSE_ERR_SYNTAX, "empty");
	BAD("+a NOOP\r\n", IMAP_PARSE_ERR_SYNTAX, "tag");
	BAD("a NO(OP\r\n", IMAP_PARSE_ERR_SYNTAX, "command name");
	BAD("a X {3} a\r\n", IMAP_PARSE_ERR_SYNTAX, "end the line");
	BAD("a X {x}\r\n", IMAP_PARSE_ERR_SYNTAX, "literal size");
	BAD("a X {99999999999999999999}\r\n", IMAP_PARSE_ERR_SYNTAX, "literal size");
	BAD("a X \r\r\n", IMAP_PARSE_ERR_SYNTAX, NULL);
	BAD("a X a\0b\r\n", IMAP_PARSE_ERR_SYNTAX, NULL);
	BAD("a FETCH 1 BODY[HEADER\r\n", IMAP_PARSE_ERR_SYNTAX, "missing ']'");
	BAD("a FETCH 1 BODY[]<0>\r\n", IMAP_PARSE_ERR_SYNTAX, "partial");
	BAD("a FETCH 1 BODY[]<0.0>\r\n", IMAP_PARSE_ERR_SYNTAX, "partial");
	BAD("a FETCH 1 BODY[]x\r\n", IMAP_PARSE_ERR_SYNTAX, "expected space");
	BAD("a FETCH 1 BODY[HEADER.FIELDS ({3}\r\n", IMAP_PARSE_ERR_SYNTAX, "section");
	BAD("a FETCH 1 BODY[HEADER.FIELDS (A])]\r\n", IMAP_PARSE_ERR_SYNTAX, NULL);
	/* The error is in the second fragment, after a literal. */
	BAD("a LOGIN {3}\r\nabc \"x\r\n", IMAP_PARSE_ERR_SYNTAX, "unterminated");
	/* NUL only in literal8; the rest of the command is discarded. */
	expect_recovers(NULL, false, SZ("a X {3+}\r\na\0b c\r\n"), IMAP_PARSE_ERR_SYNTAX, "NUL");
	/* A failed line announcing a non-synchronizing literal: it is skipped. */
	BAD("a X \"\\q\" {4+}\r\nabcd (x {2+}\r\nyz\r\n", IMAP_PARSE_ERR_SYNTAX, "escape");
	/* ... a synchronizing one ends the command (no "+ " will be sent). */
	BAD("a X \"\\q\" {4}\r\n", IMAP_PARSE_ERR_SYNTAX, "escape");
}

static void
test_utf8_quoted(void **state)
{
	struct run r;

	expect_cmd(SZ("a SELECT \"f\xc3\xa9\"\r\n"), true, false, "a SELECT Q:f\xc3\xa9");
	expect_recovers(NULL, true, SZ("a SELECT \"f\xc3\"\r\n"), IMAP_PARSE_ERR_SYNTAX,
	    "UTF-8");
	expect_recovers(NULL, true, SZ("a SELECT \"\xc0\x80\"\r\n"), IMAP_PARSE_ERR_SYNTAX,
	    "UTF-8");
	parse_both(NULL, false, false, SZ("a SELECT \"f\xc3\xa9\"\r\n"), &r);
	assert_int_equal(r.first_err, IMAP_PARSE_ERR_SYNTAX);
}

static void
test_limits(void **state)
{
	struct imap_parse_limits lim;
	char *big;
	struct run r;

	/* Line too long without a line end: fatal. */
	imap_parse_limits_default(&lim);
	lim.max_line = 64;
	big = malloc(200);
	memset(big, 'a', 200);
	memcpy(big, "a X ", 4);
	parse_both(&lim, false, false, big, 200, &r);
	assert_int_equal(r.first_err, IMAP_PARSE_ERR_LINE_TOO_LONG);
	assert_int_equal(r.state, IMAP_PARSE_ST_FATAL);
	/* Exactly max_line including CRLF is fine; one more is not. */
	memcpy(big + 62, "\r\n", 2);
	parse_both(&lim, false, false, big, 64, &r);
	assert_int_equal(r.state, IMAP_PARSE_ST_DONE);
	memset(big + 62, 'a', 2);
	memcpy(big + 63, "\r\n", 2);
	parse_both(&lim, false, false, big, 65, &r);
	assert_int_equal(r.first_err, IMAP_PARSE_ERR_LINE_TOO_LONG);
	free(big);

	/* Too many literals. */
	imap_parse_limits_default(&lim);
	lim.max_literals = 2;
	expect_recovers(&lim, false, SZ("a X {1+}\r\na {1+}\r\nb {1+}\r\nc\r\n"),
	    IMAP_PARSE_ERR_TOO_MANY_LITERALS, "literals");
	expect_recovers(&lim, false, SZ("a X {1+}\r\na {1+}\r\nb {1}\r\n"),
	    IMAP_PARSE_ERR_TOO_MANY_LITERALS, NULL);

	/* One literal too big: synchronizing ends the command at once. */
	imap_parse_limits_default(&lim);
	lim.max_literal = 10;
	expect_recovers(&lim, false, SZ("a LOGIN {11}\r\n"), IMAP_PARSE_ERR_LITERAL_TOO_BIG,
	    "too big");
	expect_recovers(&lim, false, SZ("a LOGIN {11+}\r\nhello world x\r\n"),
	    IMAP_PARSE_ERR_LITERAL_TOO_BIG, NULL);
	expect_cmd(SZ("a LOGIN {10+}\r\nhelloworld x\r\n"), false, false,
	    "a LOGIN L:10:helloworld A:x");

	/* Total of literals. */
	imap_parse_limits_default(&lim);
	lim.max_literal_total = 10;
	expect_recovers(&lim, false, SZ("a LOGIN {6+}\r\nhello! {6+}\r\nworld!\r\n"),
	    IMAP_PARSE_ERR_LITERALS_TOO_BIG, NULL);
	/* ... but external literals do not count. */
	{
		static const char in[] = "a APPEND x {60+}\r\n"
		    "012345678901234567890123456789012345678901234567890123456789 {6+}\r\n"
		    "world!\r\n";
		struct imap_parser *p = imap_parse_new(&lim);

		drive(p, in, sizeof(in) - 1, 5, true, &r);
		assert_int_equal(r.state, IMAP_PARSE_ST_DONE);
		assert_string_equal(r.dump, "a APPEND A:x X:60#0 X:6#1");
		imap_parse_free(&p);
	}

}

static void
test_limits2(void **state)
{
	struct imap_parse_limits lim;
	struct run r;

	imap_parse_limits_default(&lim);
	lim.max_depth = 3;
	parse_both(&lim, false, false, SZ("a X (((a)))\r\n"), &r);
	assert_int_equal(r.state, IMAP_PARSE_ST_DONE);
	expect_recovers(&lim, false, SZ("a X ((((a))))\r\n"), IMAP_PARSE_ERR_TOO_DEEP, "deep");
	expect_recovers(&lim, false, SZ("a X (((BODY[1])))\r\n"), IMAP_PARSE_ERR_TOO_DEEP,
	    NULL);

	imap_parse_limits_default(&lim);
	lim.max_args = 3;
	parse_both(&lim, false, false, SZ("a X (a b)\r\n"), &r);
	assert_int_equal(r.state, IMAP_PARSE_ST_DONE);
	expect_recovers(&lim, false, SZ("a X (a b c)\r\n"), IMAP_PARSE_ERR_TOO_MANY_ARGS,
	    NULL);

	imap_parse_limits_default(&lim);
	lim.max_command = 20;
	expect_recovers(&lim, false, SZ("a X {1+}\r\na 0123456789\r\n"),
	    IMAP_PARSE_ERR_COMMAND_TOO_LONG, NULL);
}

static void
test_api_state(void **state)
{
	struct imap_parser *p = imap_parse_new(NULL);
	struct imap_literal_info li;

	assert_int_equal(imap_parse_literal(p, "x", 1), IMAP_PARSE_ERR_STATE);
	assert_int_equal(imap_parse_literal_info(p, &li), IMAP_PARSE_ERR_STATE);
	assert_int_equal(imap_parse_fragment(p, "a X", 3), IMAP_PARSE_NEED_MORE);
	assert_null(imap_parse_tag(p));
	assert_int_equal(imap_parse_fragment(p, "a X {2}\r\n", 9), 9);
	assert_string_equal(imap_parse_tag(p), "a");
	assert_string_equal(imap_parse_name(p), "X");
	assert_int_equal(imap_parse_literal_info(p, &li), 1);
	assert_true(li.sync);
	assert_false(li.binary);
	assert_int_equal(li.size, 2);
	assert_int_equal(imap_parse_fragment(p, "\r\n", 2), IMAP_PARSE_ERR_STATE);
	assert_int_equal(imap_parse_literal_begin(p, false), 0);
	assert_int_equal(imap_parse_literal_begin(p, false), IMAP_PARSE_ERR_STATE);
	assert_int_equal(imap_parse_literal_external(p, 1), IMAP_PARSE_ERR_STATE);
	assert_int_equal(imap_parse_literal(p, "hi!", 3), 2);
	assert_int_equal(imap_parse_state(p), IMAP_PARSE_ST_LINE);
	assert_int_equal(imap_parse_fragment(p, "\r\nc NOOP\r\n", 10), 2);
	assert_int_equal(imap_parse_state(p), IMAP_PARSE_ST_DONE);
	assert_int_equal(imap_parse_fragment(p, "c NOOP\r\n", 8), IMAP_PARSE_ERR_STATE);
	assert_string_equal(imap_parse_command(p)->args->str, "hi");
	imap_parse_reset(p);
	assert_int_equal(imap_parse_fragment(p, "c NOOP\r\n", 8), 8);
	assert_string_equal(imap_parse_command(p)->name, "NOOP");
	assert_null(imap_parse_command(p)->args);
	imap_parse_free(&p);
	imap_parse_free(&p);
	imap_parse_free(NULL);

	/* The tag of a failed command, for "tag BAD". */
	p = imap_parse_new(NULL);
	assert_int_equal(imap_parse_fragment(p, SZ("t1 X (\r\n")), IMAP_PARSE_ERR_SYNTAX);
	assert_string_equal(imap_parse_tag(p), "t1");
	assert_true(imap_parse_failed(p));
	assert_null(imap_parse_command(p));
	assert_int_equal(imap_parse_fragment(p, SZ("t1 X (\r\n")), 8);
	assert_int_equal(imap_parse_state(p), IMAP_PARSE_ST_FAILED);
	imap_parse_reset(p);
	assert_int_equal(imap_parse_fragment(p, SZ("t\"1 X\r\n")), IMAP_PARSE_ERR_SYNTAX);
	assert_null(imap_parse_tag(p));
	imap_parse_reset(p);
	/* A failed command announcing a huge non-synchronizing literal. */
	assert_int_equal(imap_parse_fragment(p, SZ("t X \"\\x\" {99999999999+}\r\n")),
	    IMAP_PARSE_ERR_SYNTAX);
	assert_int_equal(imap_parse_fragment(p, SZ("t X \"\\x\" {99999999999+}\r\n")), 25);
	assert_int_equal(imap_parse_state(p), IMAP_PARSE_ST_LITERAL);
	assert_int_equal(imap_parse_literal_info(p, &li), 1);
	assert_int_equal(li.size, 99999999999ULL);
	assert_int_equal(imap_parse_literal_external(p, 99999999998ULL), 99999999998LL);
	assert_int_equal(imap_parse_literal(p, "xy", 2), 1);
	assert_int_equal(imap_parse_state(p), IMAP_PARSE_ST_LINE);
	imap_parse_free(&p);

	/* Line ends lines outside commands. */
	{
		size_t n;

		assert_int_equal(imap_line_end(SZ("DONE\r\nx"), 100, &n), 6);
		assert_int_equal(n, 4);
		assert_int_equal(imap_line_end(SZ("DONE\nx"), 100, &n), 5);
		assert_int_equal(n, 4);
		assert_int_equal(imap_line_end(SZ("DONE"), 100, &n), 0);
		assert_int_equal(imap_line_end(SZ("DONE"), 4, &n), -1);
	}
}

static struct imap_parser *
parse_ok(const char *in)
{
	struct imap_parser *p = imap_parse_new(NULL);
	struct run r;

	drive(p, in, strlen(in), strlen(in), false, &r);
	assert_int_equal(r.state, IMAP_PARSE_ST_DONE);
	return p;
}

static void
test_accessors(void **state)
{
	struct imap_parser *p = parse_ok("t X atom \"q\" {3+}\r\nlit NIL nil 42 0 4294967296 "
	    "(a b) 1:3,5 ~{1+}\r\nz BODY[1] 9223372036854775807\r\n");
	const struct imap_command *c = imap_parse_command(p);
	struct imap_args a, sub;
	const char *s;
	size_t len;
	uint32_t n;
	uint64_t n64;
	struct imap_seqset set;
	const struct imap_arg *g;

	imap_args_init(&a, c->args);
	assert_int_equal(imap_args_string(&a, &s, &len), IMAP_PARSE_ERR_SYNTAX);
	assert_string_equal(a.err, "expected string");
	assert_int_equal(imap_args_keyword(&a, "ATOMX"), 0);
	assert_int_equal(imap_args_keyword(&a, "ATOM"), 1);
	assert_int_equal(imap_args_atom(&a, &s, &len), IMAP_PARSE_ERR_SYNTAX);
	assert_int_equal(imap_args_astring(&a, &s, &len), 1);
	assert_string_equal(s, "q");
	assert_int_equal(imap_args_string(&a, &s, &len), 1);
	assert_string_equal(s, "lit");
	assert_int_equal(imap_args_nstring(&a, &s, &len), 1);
	assert_null(s);
	assert_int_equal(imap_args_astring(&a, &s, &len), 1);
	assert_string_equal(s, "nil");
	assert_int_equal(imap_args_nz_number(&a, &n), 1);
	assert_int_equal(n, 42);
	assert_int_equal(imap_args_nz_number(&a, &n), IMAP_PARSE_ERR_SYNTAX);
	assert_string_equal(a.err, "expected non-zero number");
	assert_int_equal(imap_args_number(&a, &n), 1);
	assert_int_equal(n, 0);
	assert_int_equal(imap_args_number(&a, &n), IMAP_PARSE_ERR_SYNTAX);
	assert_int_equal(imap_args_number64(&a, &n64), 1);
	assert_int_equal(n64, 4294967296ULL);
	assert_int_equal(imap_args_astring(&a, &s, &len), IMAP_PARSE_ERR_SYNTAX);
	assert_int_equal(imap_args_list(&a, &sub), 1);
	assert_int_equal(imap_args_atom(&sub, &s, &len), 1);
	assert_int_equal(imap_args_end(&sub), IMAP_PARSE_ERR_SYNTAX);
	assert_int_equal(imap_args_atom(&sub, &s, &len), 1);
	assert_int_equal(imap_args_end(&sub), 1);
	assert_int_equal(imap_args_seqset(&a, &set), 1);
	assert_int_equal(set.n, 2);
	imap_seqset_clear(&set);
	/* literal8 is not an astring. */
	assert_int_equal(imap_args_astring(&a, &s, &len), IMAP_PARSE_ERR_SYNTAX);
	assert_int_equal(imap_args_any(&a, &g), 1);
	assert_int_equal(g->type, IMAP_ARG_LITERAL);
	assert_true(g->binary);
	assert_int_equal(g->literal_index, 1);
	assert_int_equal(imap_args_astring(&a, &s, &len), IMAP_PARSE_ERR_SYNTAX);
	assert_int_equal(imap_args_seqset(&a, &set), IMAP_PARSE_ERR_SYNTAX);
	imap_seqset_clear(&set);
	assert_int_equal(imap_args_astring(&a, &s, &len), IMAP_PARSE_ERR_SYNTAX);
	assert_int_equal(imap_args_atom(&a, &s, &len), 1);
	assert_string_equal(s, "BODY[1]");
	assert_int_equal(imap_args_number64(&a, &n64), 1);
	assert_int_equal(n64, 9223372036854775807ULL);
	assert_int_equal(imap_args_end(&a), 1);
	assert_int_equal(imap_args_atom(&a, &s, &len), IMAP_PARSE_ERR_SYNTAX);
	assert_string_equal(a.err, "missing argument");
	imap_parse_free(&p);

	p = parse_ok("t X 9223372036854775808\r\n");
	imap_args_init(&a, imap_parse_command(p)->args);
	assert_int_equal(imap_args_number64(&a, &n64), IMAP_PARSE_ERR_SYNTAX);
	imap_parse_free(&p);
}

static void
test_mailbox(void **state)
{
	struct imap_parser *p = parse_ok("t X inbox ~peter/mail/&U,BTFw-/&ZeVnLIqe- "
	    "{3}\r\nf\xc3\xa9 &AGE- INBOX.x {3}\r\n\xc3\xa9x \"&-\"\r\n");
	struct imap_args a;
	struct mbuf out;

	/* 8-bit in a literal: the parser keeps it; the accessor judges. */
	mbuf_init(&out, 1000);
	imap_args_init(&a, imap_parse_command(p)->args);
	assert_int_equal(imap_args_mailbox(&a, false, &out), 1);
	assert_string_equal(out.data, "INBOX");
	assert_int_equal(imap_args_mailbox(&a, false, &out), 1);
	assert_string_equal(out.data, "~peter/mail/\xe5\x8f\xb0\xe5\x8c\x97/"
	    "\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e");
	assert_int_equal(imap_args_mailbox(&a, false, &out), IMAP_PARSE_ERR_SYNTAX);
	assert_non_null(a.err);
	assert_int_equal(imap_args_mailbox(&a, true, &out), 1);
	assert_string_equal(out.data, "f\xc3\xa9");
	assert_int_equal(imap_args_mailbox(&a, false, &out), IMAP_PARSE_ERR_SYNTAX);
	assert_int_equal(imap_args_mailbox(&a, true, &out), 1);
	assert_string_equal(out.data, "&AGE-");
	assert_int_equal(imap_args_mailbox(&a, false, &out), 1);
	assert_string_equal(out.data, "INBOX.x");
	assert_int_equal(imap_args_mailbox(&a, false, &out), IMAP_PARSE_ERR_SYNTAX);
	assert_int_equal(imap_args_mailbox(&a, true, &out), 1);
	assert_string_equal(out.data, "\xc3\xa9x");
	assert_int_equal(imap_args_mailbox(&a, false, &out), 1);
	assert_string_equal(out.data, "&");
	assert_int_equal(imap_args_end(&a), 1);
	mbuf_clear(&out);
	imap_parse_free(&p);
}

static void
test_seqset(void **state)
{
	struct imap_seqset s;
	const char *err;
	static const char *const bad[] = {
		"", "0", "1:", ":1", ",", "1,,2", "1,", "4294967296", "1:0", "a", "1:2:3",
		"$,1", "**", "1 2", "-1",
	};

	assert_int_equal(imap_seqset_parse(SZ("1:5,7,9:*"), 100, &s, &err), 1);
	assert_int_equal(s.n, 3);
	assert_true(imap_seqset_contains(&s, 1, 20));
	assert_true(imap_seqset_contains(&s, 5, 20));
	assert_false(imap_seqset_contains(&s, 6, 20));
	assert_true(imap_seqset_contains(&s, 7, 20));
	assert_false(imap_seqset_contains(&s, 8, 20));
	assert_true(imap_seqset_contains(&s, 20, 20));
	assert_false(imap_seqset_contains(&s, 21, 20));
	assert_false(imap_seqset_contains(&s, 0, 20));
	/* 9:* with * = 3 is 3:9. */
	assert_true(imap_seqset_contains(&s, 8, 3));
	imap_seqset_normalize(&s, 20);
	assert_true(s.normalized);
	assert_int_equal(s.n, 3);
	assert_int_equal(imap_seqset_count(&s), 5 + 1 + 12);
	assert_true(imap_seqset_contains(&s, 9, 0));
	assert_false(imap_seqset_contains(&s, 21, 100));
	imap_seqset_clear(&s);

	assert_int_equal(imap_seqset_parse(SZ("5:1,3,2:4,6,10,*,8:9,4294967295"), 100, &s,
	    &err), 1);
	assert_int_equal(s.ranges[0].first, 1);
	assert_int_equal(s.ranges[0].last, 5);
	imap_seqset_normalize(&s, 12);
	assert_int_equal(s.n, 4);
	assert_int_equal(s.ranges[0].first, 1);
	assert_int_equal(s.ranges[0].last, 6);
	assert_int_equal(s.ranges[1].first, 8);
	assert_int_equal(s.ranges[1].last, 10);
	assert_int_equal(s.ranges[2].first, 12);
	assert_int_equal(s.ranges[2].last, 12);
	assert_int_equal(s.ranges[3].first, 4294967295u);
	assert_true(imap_seqset_contains(&s, 4294967295u, 0));
	assert_false(imap_seqset_contains(&s, 7, 0));
	assert_false(imap_seqset_contains(&s, 11, 0));
	imap_seqset_clear(&s);

	/* Empty mailbox: a lone '*' drops out. */
	assert_int_equal(imap_seqset_parse(SZ("*"), 100, &s, &err), 1);
	imap_seqset_normalize(&s, 0);
	assert_int_equal(s.n, 0);
	assert_int_equal(imap_seqset_count(&s), 0);
	imap_seqset_clear(&s);

	assert_int_equal(imap_seqset_parse(SZ("$"), 100, &s, &err), 1);
	assert_true(s.searchres);
	assert_false(imap_seqset_contains(&s, 1, 1));
	imap_seqset_clear(&s);

	for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
		if (imap_seqset_parse(bad[i], strlen(bad[i]), 100, &s, &err) != -1)
			fail_msg("accepted '%s'", bad[i]);
		imap_seqset_clear(&s);
	}
	assert_int_equal(imap_seqset_parse(SZ("1,2,3"), 2, &s, &err), -1);
	assert_string_equal(err, "too many ranges in sequence set");
	imap_seqset_clear(&s);
	assert_int_equal(imap_seqset_parse(SZ("1,2,3"), 3, &s, &err), 1);
	imap_seqset_clear(&s);
}

/* A UID FETCH with a sequence set filling a 64 KiB line. */
static void
test_huge_seqset(void **state)
{
	struct mbuf in;
	struct imap_parser *p;
	struct imap_args a;
	struct imap_seqset s;
	const char *name;
	struct run *r = malloc(sizeof(*r));
	uint32_t uid = 1;
	size_t n = 0;

	mbuf_init(&in, 1 << 20);
	mbuf_adds(&in, "A1 UID FETCH ");
	while (in.len < 65536 - 40) {
		mbuf_printf(&in, "%s%u", n > 0 ? "," : "", uid);
		uid += 2;
		n++;
	}
	mbuf_adds(&in, " (FLAGS)\r\n");
	p = imap_parse_new(NULL);
	drive(p, in.data, in.len, in.len, false, r);
	assert_int_equal(r->state, IMAP_PARSE_ST_DONE);
	imap_args_init(&a, imap_parse_command(p)->args);
	assert_int_equal(imap_args_atom(&a, &name, NULL), 1);
	assert_string_equal(name, "FETCH");
	assert_int_equal(imap_args_seqset(&a, &s), 1);
	assert_int_equal(s.n, n);
	assert_true(imap_seqset_contains(&s, uid - 2, 0));
	imap_seqset_normalize(&s, 100);
	assert_int_equal(imap_seqset_count(&s), n);
	assert_true(imap_seqset_contains(&s, 3, 0));
	assert_false(imap_seqset_contains(&s, 4, 0));
	assert_true(imap_seqset_contains(&s, uid - 2, 0));
	imap_seqset_clear(&s);
	imap_parse_free(&p);

	/* Byte by byte too: the line end search must not go quadratic. */
	p = imap_parse_new(NULL);
	drive(p, in.data, in.len, 1, false, r);
	assert_int_equal(r->state, IMAP_PARSE_ST_DONE);
	imap_parse_free(&p);
	mbuf_clear(&in);
	free(r);
}

static void
utf7_roundtrip(const char *utf7, const char *utf8)
{
	struct mbuf out;
	const char *err = NULL;

	mbuf_init(&out, 4096);
	if (imap_utf7_decode(utf7, strlen(utf7), &out, &err) != 1)
		fail_msg("decode '%s': %s", utf7, err);
	assert_string_equal(out.data != NULL ? out.data : "", utf8);
	mbuf_reset(&out);
	assert_int_equal(imap_utf7_encode(utf8, strlen(utf8), &out), 1);
	assert_string_equal(out.data != NULL ? out.data : "", utf7);
	mbuf_clear(&out);
}

static void
test_utf7(void **state)
{
	static const char *const bad[] = {
		"&", "&U,BTFw", "&AGE-", "&U,BTFw-&ZeVnLIqe-", "&AOR-", "&AOQA-", "&A-",
		"&2D0-", "&3gA-", "&2D0AZQ-", "&AAA-", "a\xc3\xa9", "a\tb", "&U/BTFw-",
		"&U,BTF.-", "&-&", "&AOQ",
	};
	struct mbuf out;
	const char *err;

	utf7_roundtrip("~peter/mail/&U,BTFw-/&ZeVnLIqe-",
	    "~peter/mail/\xe5\x8f\xb0\xe5\x8c\x97/\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e");
	utf7_roundtrip("&-", "&");
	utf7_roundtrip("a&-b&-&-", "a&b&&");
	utf7_roundtrip("Entw&APw-rfe", "Entw\xc3\xbc" "rfe");
	utf7_roundtrip("&AOQA5A-", "\xc3\xa4\xc3\xa4");
	utf7_roundtrip("&2D3eAA-", "\xf0\x9f\x98\x80");
	utf7_roundtrip("&AOQ-&-", "\xc3\xa4&");
	utf7_roundtrip("&AAE-", "\x01");
	utf7_roundtrip("", "");

	mbuf_init(&out, 4096);
	for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
		mbuf_reset(&out);
		err = NULL;
		if (imap_utf7_decode(bad[i], strlen(bad[i]), &out, &err) != -1)
			fail_msg("accepted '%s'", bad[i]);
		assert_non_null(err);
	}
	/* Encoding rejects invalid UTF-8 and NUL. */
	assert_int_equal(imap_utf7_encode(SZ("\xc3"), &out), -1);
	assert_int_equal(imap_utf7_encode(SZ("a\0b"), &out), -1);
	/* Output limit. */
	mbuf_clear(&out);
	mbuf_init(&out, 4);
	assert_int_equal(imap_utf7_decode(SZ("abcde"), &out, &err), -1);
	mbuf_reset(&out);
	assert_int_equal(imap_utf7_encode(SZ("\xc3\xa4\xc3\xa4"), &out), -1);
	mbuf_clear(&out);
}

static void
test_utf8(void **state)
{
	static const struct {
		const char *s;
		bool ok;
	} cases[] = {
		{ "", true }, { "abc", true }, { "\xc3\xa9", true },
		{ "\xe2\x82\xac", true }, { "\xf0\x9f\x98\x80", true },
		{ "\xf4\x8f\xbf\xbf", true }, { "\xed\x9f\xbf", true },
		{ "\xc0\x80", false }, { "\xc1\xbf", false }, { "\xe0\x80\x80", false },
		{ "\xe0\x9f\xbf", false }, { "\xed\xa0\x80", false }, { "\xed\xbf\xbf", false },
		{ "\xf0\x80\x80\x80", false }, { "\xf4\x90\x80\x80", false },
		{ "\xf5\x80\x80\x80", false }, { "\xc3", false }, { "\xe2\x82", false },
		{ "\x80", false }, { "\xc3\x28", false }, { "\xff", false },
	};

	for (size_t i = 0; i < ARRAY_LEN(cases); i++)
		if (imap_utf8_valid(cases[i].s, strlen(cases[i].s)) != cases[i].ok)
			fail_msg("case %zu", i);
}

static void
quote_is(const char *s, size_t len, unsigned flags, const char *want, size_t wantlen)
{
	struct mbuf b;

	mbuf_init(&b, 4096);
	assert_int_equal(imap_quote(&b, s, len, flags), 0);
	if (b.len != wantlen)
		fail_msg("quote '%.*s' gave '%s'", (int)len, s ? s : "", b.data);
	assert_memory_equal(b.data, want, wantlen);
	mbuf_clear(&b);
}

#define QUOTE(s, flags, want) quote_is(s, sizeof(s) - 1, flags, want, sizeof(want) - 1)

static void
test_quote(void **state)
{
	struct mbuf b;

	QUOTE("INBOX", IMAP_QUOTE_ATOM, "INBOX");
	QUOTE("INBOX", 0, "\"INBOX\"");
	QUOTE("a]b", IMAP_QUOTE_ATOM, "a]b");
	QUOTE("BODY[", IMAP_QUOTE_ATOM, "\"BODY[\"");
	QUOTE("nil", IMAP_QUOTE_ATOM, "\"nil\"");
	QUOTE("", IMAP_QUOTE_ATOM, "\"\"");
	QUOTE("a b", IMAP_QUOTE_ATOM, "\"a b\"");
	QUOTE("a*", IMAP_QUOTE_ATOM, "\"a*\"");
	QUOTE("a\"b\\c", IMAP_QUOTE_ATOM, "\"a\\\"b\\\\c\"");
	QUOTE("a\r\nb", 0, "{4}\r\na\r\nb");
	QUOTE("a\0b", 0, "~{3}\r\na\0b");
	QUOTE("f\xc3\xa9", IMAP_QUOTE_UTF8 | IMAP_QUOTE_ATOM, "\"f\xc3\xa9\"");
	QUOTE("f\xc3\xa9", 0, "{3}\r\nf\xc3\xa9");
	QUOTE("f\xc3", IMAP_QUOTE_UTF8, "{2}\r\nf\xc3");
	quote_is(NULL, 0, 0, "NIL", 3);
	mbuf_init(&b, 4);
	assert_int_equal(imap_quote(&b, SZ("abcdef"), 0), -1);
	mbuf_clear(&b);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_rfc_commands),
		cmocka_unit_test(test_literals),
		cmocka_unit_test(test_syntax_errors),
		cmocka_unit_test(test_utf8_quoted),
		cmocka_unit_test(test_limits),
		cmocka_unit_test(test_limits2),
		cmocka_unit_test(test_api_state),
		cmocka_unit_test(test_accessors),
		cmocka_unit_test(test_mailbox),
		cmocka_unit_test(test_seqset),
		cmocka_unit_test(test_huge_seqset),
		cmocka_unit_test(test_utf7),
		cmocka_unit_test(test_utf8),
		cmocka_unit_test(test_quote),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}

/* Tests for daemon/smtp_parse: framing, commands, DATA reader, replies. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "daemon/smtp_parse.h"

static struct smtp_cmd cmd;

static int
parse_o(const char *line, unsigned ext, bool smtputf8)
{
	struct smtp_parse_opts o = {ext, smtputf8};

	return smtp_cmd_parse(line, strlen(line), &o, &cmd);
}

static int
parse(const char *line)
{
	return parse_o(line, SMTP_EXT_ALL, false);
}

static bool
str_is(struct smtp_str s, const char *want)
{
	return s.p != NULL && s.len == strlen(want) && memcmp(s.p, want, s.len) == 0;
}

#define assert_str(s, want) do { \
	if (!str_is((s), (want))) \
		fail_msg("got '%.*s', want '%s'", (int)(s).len, \
			 (s).p ? (s).p : "", (want)); \
} while (0)

#define assert_ok(line) do { \
	if (parse(line) != 1) \
		fail_msg("'%s' failed: %d %s %s", (line), cmd.code, \
			 cmd.ecode ? cmd.ecode : "-", cmd.msg); \
} while (0)

#define assert_err(line, wcode, wecode) do { \
	if (parse(line) != -1) \
		fail_msg("'%s' was accepted", (line)); \
	if (cmd.code != (wcode) || strcmp(cmd.ecode, (wecode)) != 0) \
		fail_msg("'%s': got %d %s (%s), want %d %s", (line), cmd.code, \
			 cmd.ecode, cmd.msg, (wcode), (wecode)); \
} while (0)

/* ------------------------------------------------------------------ */

static void
test_line_find(void **state)
{
	struct smtp_limits lim;
	struct smtp_line l;
	char big[20000];

	smtp_limits_default(&lim);
	assert_int_equal(lim.max_line, 512);

	assert_int_equal(smtp_line_find("NOOP\r\nQUIT\r\n", 12, &lim, false, &l), 6);
	assert_str(l.text, "NOOP");
	assert_false(l.bare_lf);

	assert_int_equal(smtp_line_find("NOOP\nQUIT", 9, &lim, false, &l), 5);
	assert_str(l.text, "NOOP");
	assert_true(l.bare_lf);

	assert_int_equal(smtp_line_find("NOOP\r", 5, &lim, false, &l), SMTP_LINE_NEED_MORE);
	assert_int_equal(smtp_line_find("", 0, &lim, false, &l), SMTP_LINE_NEED_MORE);
	/* empty line */
	assert_int_equal(smtp_line_find("\r\n", 2, &lim, false, &l), 2);
	assert_int_equal(l.text.len, 0);
	/* bare CR inside stays in the line */
	assert_int_equal(smtp_line_find("A\rB\r\n", 5, &lim, false, &l), 5);
	assert_str(l.text, "A\rB");

	/* 510 bytes + CRLF = 512: fits; 511 + CRLF: too long */
	memset(big, 'a', sizeof(big));
	memcpy(big + 510, "\r\n", 2);
	assert_int_equal(smtp_line_find(big, 512, &lim, false, &l), 512);
	memset(big, 'a', sizeof(big));
	memcpy(big + 511, "\r\nNOOP", 6);
	assert_int_equal(smtp_line_find(big, 517, &lim, false, &l), SMTP_LINE_TOO_LONG);
	assert_true(l.complete);
	assert_int_equal(l.skip, 513);
	/* 511 bytes, no line end yet: the line end must make it 512, still ok */
	memset(big, 'a', sizeof(big));
	assert_int_equal(smtp_line_find(big, 511, &lim, false, &l), SMTP_LINE_NEED_MORE);
	/* 512 bytes and no line end: cannot fit any more */
	assert_int_equal(smtp_line_find(big, 512, &lim, false, &l), SMTP_LINE_TOO_LONG);
	assert_false(l.complete);
	assert_int_equal(l.skip, 512);
	assert_int_equal(smtp_line_find(big, 5000, &lim, false, &l), SMTP_LINE_TOO_LONG);

	/* AUTH lines get the longer limit, by prefix or as continuation */
	memcpy(big, "auth PLAIN ", 11);
	memset(big + 11, 'A', 5000);
	memcpy(big + 5011, "\r\n", 2);
	assert_int_equal(smtp_line_find(big, 5013, &lim, false, &l), 5013);
	assert_int_equal(smtp_line_find(big, 5000, &lim, false, &l), SMTP_LINE_NEED_MORE);
	memset(big, 'A', 13000);
	assert_int_equal(smtp_line_find(big, 13000, &lim, false, &l), SMTP_LINE_TOO_LONG);
	assert_int_equal(smtp_line_find(big, 13000, &lim, true, &l), SMTP_LINE_TOO_LONG);
	memcpy(big + 12000, "\r\n", 2);
	assert_int_equal(smtp_line_find(big, 12002, &lim, true, &l), 12002);
	assert_int_equal(smtp_line_find(big, 12002, &lim, false, &l), SMTP_LINE_TOO_LONG);
	/* "AUTHX" is not AUTH */
	memcpy(big, "AUTHX", 5);
	assert_int_equal(smtp_line_find(big, 1000, &lim, false, &l), SMTP_LINE_TOO_LONG);

	/* configurable */
	lim.max_line = 2048;
	memset(big, 'a', 1000);
	memcpy(big + 1000, "\r\n", 2);
	assert_int_equal(smtp_line_find(big, 1002, &lim, false, &l), 1002);
}

static void
test_verbs(void **state)
{
	static const struct {
		const char *line;
		enum smtp_verb verb;
	} ok[] = {
		{"DATA", SMTP_VERB_DATA}, {"data", SMTP_VERB_DATA},
		{"RSET", SMTP_VERB_RSET}, {"rSeT", SMTP_VERB_RSET},
		{"QUIT", SMTP_VERB_QUIT}, {"QUIT ", SMTP_VERB_QUIT},
		{"STARTTLS", SMTP_VERB_STARTTLS}, {"starttls", SMTP_VERB_STARTTLS},
		{"NOOP", SMTP_VERB_NOOP}, {"NOOP hello there", SMTP_VERB_NOOP},
		{"HELP", SMTP_VERB_HELP}, {"HELP MAIL", SMTP_VERB_HELP},
		{"VRFY postmaster", SMTP_VERB_VRFY}, {"EXPN staff", SMTP_VERB_EXPN},
		{"VRFY <user@example.org>", SMTP_VERB_VRFY},
	};

	for (size_t i = 0; i < ARRAY_LEN(ok); i++) {
		assert_ok(ok[i].line);
		assert_int_equal(cmd.verb, ok[i].verb);
	}
	assert_ok("VRFY John Smith");
	assert_str(cmd.arg, "John Smith");
	assert_ok("HELP  MAIL\t ");
	assert_str(cmd.arg, " MAIL");
	assert_string_equal(smtp_verb_name(SMTP_VERB_STARTTLS), "STARTTLS");
	assert_string_equal(smtp_verb_name(SMTP_VERB_UNKNOWN), "UNKNOWN");

	assert_err("DATA now", 501, "5.5.4");
	assert_int_equal(cmd.verb, SMTP_VERB_DATA);
	assert_err("RSET x", 501, "5.5.4");
	assert_err("QUIT bye", 501, "5.5.4");
	assert_err("STARTTLS x", 501, "5.5.4");
	assert_err("VRFY", 501, "5.5.4");
	assert_err("EXPN ", 501, "5.5.4");

	assert_err("XYZZY", 500, "5.5.1");
	assert_int_equal(cmd.verb, SMTP_VERB_UNKNOWN);
	assert_str(cmd.verb_text, "XYZZY");
	assert_err("MAILFROM:<a@b>", 500, "5.5.1");
	assert_err("DATAX", 500, "5.5.1");
	assert_err("GET / HTTP/1.1", 500, "5.5.1");
	assert_err("", 500, "5.5.2");
	assert_err(" NOOP", 500, "5.5.2");
	assert_err("NOOP\rQUIT", 500, "5.5.2");
	assert_int_equal(cmd.verb, SMTP_VERB_UNKNOWN);
	assert_err("RCPT TO:<a@b.example>\r", 500, "5.5.2");
	assert_int_equal(cmd.verb, SMTP_VERB_RCPT);
	assert_err("NOOP a\tb", 500, "5.5.2");
	{
		struct smtp_parse_opts o = {SMTP_EXT_ALL, false};

		assert_int_equal(smtp_cmd_parse("NOOP\0x", 6, &o, &cmd), -1);
		assert_int_equal(cmd.code, 500);
	}

	assert_int_equal(smtp_cmd_parse("MAIL FROM:<a@b.example>", 23, NULL, &cmd), 1);
	assert_int_equal(smtp_cmd_parse("MAIL FROM:<a@b.example> SIZE=1", 30, NULL, &cmd), -1);
	assert_int_equal(cmd.code, 555);

	smtp_cmd_set_too_long(&cmd);
	assert_int_equal(cmd.code, 500);
	assert_string_equal(cmd.ecode, "5.5.2");
	assert_int_equal(cmd.verb, SMTP_VERB_UNKNOWN);
}

static void
test_helo(void **state)
{
	char buf[400];

	/* Postfix, Thunderbird, Outlook, swaks */
	assert_ok("EHLO mail.example.org");
	assert_int_equal(cmd.verb, SMTP_VERB_EHLO);
	assert_str(cmd.helo.domain, "mail.example.org");
	assert_int_equal(cmd.helo.flags, 0);
	assert_ok("EHLO [192.168.1.10]");
	assert_int_equal(cmd.helo.flags, SMTP_HELO_LITERAL);
	assert_str(cmd.helo.ip, "192.168.1.10");
	assert_int_equal(cmd.helo.af, AF_INET);
	assert_ok("EHLO DESKTOP-4F2K9LM");
	assert_ok("ehlo localhost");
	assert_ok("EHLO swaks.example.net ");
	assert_str(cmd.helo.domain, "swaks.example.net");
	assert_ok("EHLO [IPv6:2001:db8::1]");
	assert_int_equal(cmd.helo.af, AF_INET6);
	assert_str(cmd.helo.ip, "2001:db8::1");
	assert_ok("EHLO [ipv6:::1]");
	/* tolerated and flagged */
	assert_ok("EHLO my_pc.local");
	assert_int_equal(cmd.helo.flags, SMTP_HELO_UNDERSCORE);
	assert_ok("EHLO 192.168.0.1");
	assert_int_equal(cmd.helo.flags, SMTP_HELO_BARE_IP);
	assert_int_equal(cmd.helo.af, AF_INET);
	assert_ok("EHLO ::1");
	assert_int_equal(cmd.helo.flags, SMTP_HELO_BARE_IP);
	assert_int_equal(cmd.helo.af, AF_INET6);
	assert_ok("EHLO b\xc3\xbc" "cher.example");
	assert_int_equal(cmd.helo.flags, SMTP_HELO_UTF8);
	assert_ok("EHLO 1.2.3");  /* numeric labels are a domain */
	assert_int_equal(cmd.helo.flags, 0);

	assert_err("EHLO", 501, "5.5.4");
	assert_err("EHLO ", 501, "5.5.4");
	assert_err("EHLO a b", 501, "5.5.4");
	assert_err("EHLO -bad.example", 501, "5.5.4");
	assert_err("EHLO bad-.example", 501, "5.5.4");
	assert_err("EHLO a..b", 501, "5.5.4");
	assert_err("EHLO example.com.", 501, "5.5.4");
	assert_err("EHLO [1.2.3.256]", 501, "5.5.4");
	assert_err("EHLO [1.2.3]", 501, "5.5.4");
	assert_err("EHLO [IPv6:2001:db8::g]", 501, "5.5.4");
	assert_err("EHLO [x-tag:content]", 501, "5.5.4");
	assert_err("EHLO [192.168.1.1", 501, "5.5.4");
	assert_err("EHLO ex!ample.com", 501, "5.5.4");
	assert_err("EHLO b\xc3", 501, "5.5.4");
	/* label of 64 octets */
	memset(buf, 0, sizeof(buf));
	memcpy(buf, "EHLO ", 5);
	memset(buf + 5, 'a', 63);
	assert_ok(buf);
	buf[5 + 63] = 'a';
	assert_err(buf, 501, "5.5.4");

	/* HELO is lenient: any argument, flagged */
	assert_ok("HELO mail.example.org");
	assert_int_equal(cmd.verb, SMTP_VERB_HELO);
	assert_int_equal(cmd.helo.flags, 0);
	assert_ok("HELO my host name");
	assert_int_equal(cmd.helo.flags, SMTP_HELO_INVALID);
	assert_str(cmd.helo.domain, "my host name");
	assert_ok("HELO [1.2.3.999]");
	assert_int_equal(cmd.helo.flags, SMTP_HELO_INVALID);
	assert_err("HELO", 501, "5.5.4");
	assert_err("HELO \xff", 501, "5.5.4");
}

static void
test_mail(void **state)
{
	assert_ok("MAIL FROM:<user@example.org>");
	assert_int_equal(cmd.verb, SMTP_VERB_MAIL);
	assert_str(cmd.path.localpart, "user");
	assert_str(cmd.path.localpart_canon, "user");
	assert_str(cmd.path.domain, "example.org");
	assert_int_equal(cmd.path.localpart.p[cmd.path.localpart.len], '\0');
	assert_int_equal(cmd.path.domain.p[cmd.path.domain.len], '\0');
	assert_int_equal(cmd.path.flags, 0);
	assert_int_equal(cmd.mail.seen, 0);

	/* Thunderbird */
	assert_ok("MAIL FROM:<alice@example.com> BODY=8BITMIME SIZE=1234");
	assert_int_equal(cmd.mail.body, SMTP_BODY_8BITMIME);
	assert_int_equal(cmd.mail.size, 1234);
	assert_int_equal(cmd.mail.seen, SMTP_PARAM_SIZE | SMTP_PARAM_BODY);
	/* Postfix relaying with DSN */
	assert_ok("MAIL FROM:<bounce+abc=example.com@lists.example.net> SIZE=98765 "
		  "BODY=8BITMIME RET=HDRS ENVID=QQ314159");
	assert_str(cmd.path.localpart, "bounce+abc=example.com");
	assert_int_equal(cmd.mail.ret, SMTP_RET_HDRS);
	assert_str(cmd.mail.envid, "QQ314159");
	/* Outlook-style space after the colon, lower case */
	assert_ok("mail from: <Bob.Smith@Example.COM>");
	assert_str(cmd.path.localpart, "Bob.Smith");
	assert_str(cmd.path.domain, "Example.COM");
	assert_ok("MAIL FROM:<a@b.example>  SIZE=1   BODY=7BIT ");
	assert_int_equal(cmd.mail.body, SMTP_BODY_7BIT);

	/* null path, source route */
	assert_ok("MAIL FROM:<>");
	assert_int_equal(cmd.path.flags, SMTP_ADDR_NULL);
	assert_int_equal(cmd.path.localpart.len, 0);
	assert_int_equal(cmd.path.domain.len, 0);
	assert_ok("MAIL FROM:<> SIZE=100");
	assert_ok("MAIL FROM:<@relay1.example,@relay2.example:joe@example.org>");
	assert_int_equal(cmd.path.flags, SMTP_ADDR_SOURCE_ROUTE);
	assert_str(cmd.path.localpart, "joe");
	assert_str(cmd.path.domain, "example.org");
	assert_ok("MAIL FROM:<@[10.0.0.1]:joe@example.org>");

	/* every parameter */
	assert_ok("MAIL FROM:<a@example.org> SIZE=18446744073709551615");
	assert_true(cmd.mail.size == UINT64_MAX);
	assert_ok("MAIL FROM:<a@example.org> SIZE=0");
	assert_ok("MAIL FROM:<a@example.org> body=binarymime");
	assert_int_equal(cmd.mail.body, SMTP_BODY_BINARYMIME);
	assert_ok("MAIL FROM:<a@example.org> SMTPUTF8");
	assert_true(cmd.mail.smtputf8);
	assert_ok("MAIL FROM:<a@example.org> REQUIRETLS");
	assert_true(cmd.mail.requiretls);
	assert_ok("MAIL FROM:<a@example.org> RET=full");
	assert_int_equal(cmd.mail.ret, SMTP_RET_FULL);
	assert_ok("MAIL FROM:<a@example.org> ENVID=abc+2Bdef+3Dx");
	assert_str(cmd.mail.envid, "abc+def=x");
	assert_ok("MAIL FROM:<a@example.org> AUTH=<>");
	assert_str(cmd.mail.auth, "<>");
	assert_ok("MAIL FROM:<a@example.org> AUTH=e+2Bx@example.org");
	assert_str(cmd.mail.auth, "e+x@example.org");
	assert_int_equal(cmd.mail.seen, SMTP_PARAM_AUTH);

	/* bad parameters */
	assert_err("MAIL FROM:<a@example.org> SIZE=18446744073709551616", 501, "5.5.4");
	assert_err("MAIL FROM:<a@example.org> SIZE=-1", 501, "5.5.4");
	assert_err("MAIL FROM:<a@example.org> SIZE=1k", 501, "5.5.4");
	assert_err("MAIL FROM:<a@example.org> SIZE", 501, "5.5.4");
	assert_err("MAIL FROM:<a@example.org> SIZE=", 501, "5.5.4");
	assert_err("MAIL FROM:<a@example.org> SIZE=1 SIZE=2", 501, "5.5.4");
	assert_err("MAIL FROM:<a@example.org> BODY=9BIT", 501, "5.5.4");
	assert_err("MAIL FROM:<a@example.org> SMTPUTF8=yes", 501, "5.5.4");
	assert_err("MAIL FROM:<a@example.org> REQUIRETLS=1", 501, "5.5.4");
	assert_err("MAIL FROM:<a@example.org> RET=ALL", 501, "5.5.4");
	assert_err("MAIL FROM:<a@example.org> ENVID=a+2", 501, "5.5.4");
	assert_err("MAIL FROM:<a@example.org> ENVID=a+ZZb", 501, "5.5.4");
	assert_err("MAIL FROM:<a@example.org> ENVID=a+0Ab", 501, "5.5.4");
	assert_err("MAIL FROM:<a@example.org> ENVID=a=b", 501, "5.5.4");
	{
		char line[300];

		snprintf(line, sizeof(line), "MAIL FROM:<a@example.org> ENVID=%0101d", 0);
		assert_err(line, 501, "5.5.4");
	}
	assert_err("MAIL FROM:<a@example.org> X-FOO=bar", 555, "5.5.4");
	assert_string_equal(cmd.msg, "unsupported parameter X-FOO");
	assert_err("MAIL FROM:<a@example.org> NOTIFY=NEVER", 555, "5.5.4");
	assert_err("MAIL FROM:<a@example.org> -X", 501, "5.5.4");
	assert_err("MAIL FROM:<a@example.org>SIZE=1", 501, "5.5.4");
	/* extensions not advertised */
	assert_int_equal(parse_o("MAIL FROM:<a@b.example> SIZE=1", 0, false), -1);
	assert_int_equal(cmd.code, 555);
	assert_int_equal(parse_o("MAIL FROM:<a@b.example> BODY=BINARYMIME",
				 SMTP_EXT_8BITMIME, false), -1);
	assert_int_equal(parse_o("MAIL FROM:<a@b.example> BODY=8BITMIME",
				 SMTP_EXT_8BITMIME, false), 1);
	assert_int_equal(parse_o("MAIL FROM:<a@b.example> SMTPUTF8",
				 SMTP_EXT_ALL & ~SMTP_EXT_SMTPUTF8, false), -1);
	assert_int_equal(cmd.code, 555);
	assert_int_equal(parse_o("MAIL FROM:<a@b.example> AUTH=<>",
				 SMTP_EXT_ALL & ~SMTP_EXT_AUTH, false), -1);
	assert_int_equal(parse_o("MAIL FROM:<a@b.example> REQUIRETLS",
				 SMTP_EXT_ALL & ~SMTP_EXT_REQUIRETLS, false), -1);
	assert_int_equal(parse_o("MAIL FROM:<a@b.example> RET=FULL",
				 SMTP_EXT_ALL & ~SMTP_EXT_DSN, false), -1);

	/* bad syntax */
	assert_err("MAIL", 501, "5.5.4");
	assert_err("MAIL TO:<a@b.example>", 501, "5.5.4");
	assert_err("MAIL FROM<a@b.example>", 501, "5.5.4");
	assert_err("MAIL FROM:a@b.example", 501, "5.1.7");
	assert_err("MAIL FROM:<a@b.example", 501, "5.1.7");
	assert_err("MAIL FROM:<a>", 501, "5.1.7");
	assert_err("MAIL FROM:<@b.example>", 501, "5.1.7");
	assert_err("MAIL FROM:<a@>", 501, "5.1.7");
	assert_err("MAIL FROM:<a@b..example>", 501, "5.1.7");
	assert_err("MAIL FROM:<a b@example.org>", 501, "5.1.7");
	assert_err("MAIL FROM:<a@b_c.example>", 501, "5.1.7");
	assert_err("MAIL FROM:<@relay:>", 501, "5.1.7");
	assert_err("MAIL FROM:<@relay,joe@example.org>", 501, "5.1.7");
	assert_err("MAIL FROM:<<a@b.example>>", 501, "5.1.7");
}

static void
test_rcpt(void **state)
{
	assert_ok("RCPT TO:<bob@example.com>");
	assert_int_equal(cmd.verb, SMTP_VERB_RCPT);
	assert_str(cmd.path.localpart, "bob");
	assert_str(cmd.path.domain, "example.com");
	assert_int_equal(cmd.rcpt.seen, 0);
	assert_ok("rcpt to: <bob@example.com>");

	assert_ok("RCPT TO:<postmaster>");
	assert_int_equal(cmd.path.flags, SMTP_ADDR_POSTMASTER);
	assert_int_equal(cmd.path.domain.len, 0);
	assert_ok("RCPT TO:<PostMaster>");
	assert_int_equal(cmd.path.flags, SMTP_ADDR_POSTMASTER);
	assert_ok("RCPT TO:<postmaster@example.org>");
	assert_int_equal(cmd.path.flags, 0);
	assert_err("RCPT TO:<bob>", 501, "5.1.3");
	assert_err("RCPT TO:<\"postmaster\">", 501, "5.1.3");
	assert_err("MAIL FROM:<postmaster>", 501, "5.1.7");
	assert_err("RCPT TO:<>", 501, "5.1.3");
	assert_err("RCPT TO:bob@example.com", 501, "5.1.3");
	assert_err("RCPT FROM:<bob@example.com>", 501, "5.5.4");
	assert_err("RCPT TO:<bob@example.com> SIZE=1", 555, "5.5.4");

	/* DSN, as Postfix sends it */
	assert_ok("RCPT TO:<bob@example.com> NOTIFY=SUCCESS,FAILURE,DELAY "
		  "ORCPT=rfc822;bob@example.com");
	assert_int_equal(cmd.rcpt.notify,
			 SMTP_NOTIFY_SUCCESS | SMTP_NOTIFY_FAILURE | SMTP_NOTIFY_DELAY);
	assert_str(cmd.rcpt.orcpt_type, "rfc822");
	assert_str(cmd.rcpt.orcpt, "bob@example.com");
	assert_int_equal(cmd.rcpt.seen, SMTP_PARAM_NOTIFY | SMTP_PARAM_ORCPT);
	assert_ok("RCPT TO:<b@example.com> NOTIFY=never");
	assert_int_equal(cmd.rcpt.notify, SMTP_NOTIFY_NEVER);
	assert_ok("RCPT TO:<b@example.com> NOTIFY=FAILURE");
	assert_int_equal(cmd.rcpt.notify, SMTP_NOTIFY_FAILURE);
	assert_ok("RCPT TO:<b@example.com> ORCPT=rfc822;user+2Bext@example.org");
	assert_str(cmd.rcpt.orcpt, "user+ext@example.org");
	assert_ok("RCPT TO:<b@example.com> ORCPT=utf-8;j\\x{00F6}rg@example.org");
	assert_str(cmd.rcpt.orcpt, "j\xc3\xb6rg@example.org");
	assert_ok("RCPT TO:<b@example.com> ORCPT=utf-8;\\x{1F600}@example.org");
	assert_str(cmd.rcpt.orcpt, "\xf0\x9f\x98\x80@example.org");
	/* \x{} is only special for the utf-8 type */
	assert_ok("RCPT TO:<b@example.com> ORCPT=rfc822;a\\x{41}@example.org");
	assert_str(cmd.rcpt.orcpt, "a\\x{41}@example.org");

	assert_err("RCPT TO:<b@example.com> NOTIFY=NEVER,SUCCESS", 501, "5.5.4");
	assert_err("RCPT TO:<b@example.com> NOTIFY=SUCCESS,SUCCESS", 501, "5.5.4");
	assert_err("RCPT TO:<b@example.com> NOTIFY=SUCCESS,", 501, "5.5.4");
	assert_err("RCPT TO:<b@example.com> NOTIFY=ALWAYS", 501, "5.5.4");
	assert_err("RCPT TO:<b@example.com> NOTIFY", 501, "5.5.4");
	assert_err("RCPT TO:<b@example.com> NOTIFY=FAILURE NOTIFY=DELAY", 501, "5.5.4");
	assert_err("RCPT TO:<b@example.com> ORCPT=bob@example.com", 501, "5.5.4");
	assert_err("RCPT TO:<b@example.com> ORCPT=rfc822;", 501, "5.5.4");
	assert_err("RCPT TO:<b@example.com> ORCPT=;b@example.com", 501, "5.5.4");
	assert_err("RCPT TO:<b@example.com> ORCPT=rfc822;b+4", 501, "5.5.4");
	assert_err("RCPT TO:<b@example.com> ORCPT=utf-8;\\x{D800}", 501, "5.5.4");
	assert_err("RCPT TO:<b@example.com> ORCPT=utf-8;\\x{41", 501, "5.5.4");
	assert_err("RCPT TO:<b@example.com> ORCPT=utf-8;+C3", 501, "5.5.4");
	assert_int_equal(parse_o("RCPT TO:<b@example.com> NOTIFY=NEVER",
				 SMTP_EXT_ALL & ~SMTP_EXT_DSN, false), -1);
	assert_int_equal(cmd.code, 555);
}

static void
test_localparts(void **state)
{
	char line[600];

	assert_ok("RCPT TO:<\"john doe\"@example.com>");
	assert_str(cmd.path.localpart, "john doe");
	assert_str(cmd.path.localpart_canon, "\"john doe\"");
	assert_int_equal(cmd.path.flags, SMTP_ADDR_QUOTED);
	assert_ok("RCPT TO:<\"john\"@example.com>");
	assert_str(cmd.path.localpart, "john");
	assert_str(cmd.path.localpart_canon, "john");
	assert_ok("RCPT TO:<\"a\\\"b\"@example.com>");
	assert_str(cmd.path.localpart, "a\"b");
	assert_str(cmd.path.localpart_canon, "\"a\\\"b\"");
	assert_ok("RCPT TO:<\"\\a\\\\b\"@example.com>");
	assert_str(cmd.path.localpart, "a\\b");
	assert_str(cmd.path.localpart_canon, "\"a\\\\b\"");
	assert_ok("RCPT TO:<\"\"@example.com>");
	assert_int_equal(cmd.path.localpart.len, 0);
	assert_str(cmd.path.localpart_canon, "\"\"");
	assert_ok("RCPT TO:<\"a..b\"@example.com>");
	assert_str(cmd.path.localpart_canon, "\"a..b\"");
	assert_ok("RCPT TO:<\"<a@b>\"@example.com>");
	assert_str(cmd.path.localpart, "<a@b>");
	assert_ok("RCPT TO:<!#$%&'*+-/=?^_`{|}~@example.com>");
	assert_str(cmd.path.localpart_canon, "!#$%&'*+-/=?^_`{|}~");
	assert_ok("RCPT TO:<first.last@example.com>");

	assert_err("RCPT TO:<\"abc@example.com>", 501, "5.1.3");
	assert_err("RCPT TO:<\"a\\", 501, "5.1.3");
	assert_err("RCPT TO:<a..b@example.com>", 501, "5.1.3");
	assert_err("RCPT TO:<.a@example.com>", 501, "5.1.3");
	assert_err("RCPT TO:<a.@example.com>", 501, "5.1.3");
	assert_err("RCPT TO:<a(b)@example.com>", 501, "5.1.3");
	assert_err("RCPT TO:<a\"b\"@example.com>", 501, "5.1.3");

	/* a localpart over 64 octets is accepted and flagged */
	snprintf(line, sizeof(line), "RCPT TO:<%065d@example.com>", 0);
	assert_ok(line);
	assert_int_equal(cmd.path.flags, SMTP_ADDR_LONG_LOCAL);
	snprintf(line, sizeof(line), "RCPT TO:<%064d@example.com>", 0);
	assert_ok(line);
	assert_int_equal(cmd.path.flags, 0);
}

static void
test_domains(void **state)
{
	char line[700], dom[300];
	size_t n = 0;

	/* 4 labels of 63 + 3 dots = 255 */
	for (int i = 0; i < 4; i++) {
		if (i > 0)
			dom[n++] = '.';
		memset(dom + n, 'a' + i, 63);
		n += 63;
	}
	dom[n] = '\0';
	assert_int_equal(strlen(dom), 255);
	snprintf(line, sizeof(line), "RCPT TO:<u@%s>", dom);
	assert_ok(line);
	snprintf(line, sizeof(line), "RCPT TO:<u@x%s>", dom);
	assert_err(line, 501, "5.1.3");
	snprintf(line, sizeof(line), "RCPT TO:<u@%.64s.example>", dom);
	assert_err(line, 501, "5.1.3");

	assert_ok("RCPT TO:<u@[127.0.0.1]>");
	assert_int_equal(cmd.path.flags, SMTP_ADDR_LITERAL);
	assert_int_equal(cmd.path.af, AF_INET);
	assert_str(cmd.path.ip, "127.0.0.1");
	assert_str(cmd.path.domain, "[127.0.0.1]");
	assert_ok("RCPT TO:<u@[IPv6:2001:db8:0:0:0:0:0:1]>");
	assert_int_equal(cmd.path.af, AF_INET6);
	assert_str(cmd.path.ip, "2001:db8:0:0:0:0:0:1");
	assert_ok("RCPT TO:<u@[IPv6:::ffff:192.0.2.1]>");
	assert_ok("MAIL FROM:<u@[IPv6:fe80::1]> SIZE=10");
	assert_int_equal(cmd.mail.size, 10);
	assert_err("RCPT TO:<u@[IPv6:2001:db8::g]>", 501, "5.1.3");
	assert_err("RCPT TO:<u@[IPv6:1:2:3:4:5:6:7:8:9]>", 501, "5.1.3");
	assert_err("RCPT TO:<u@[2001:db8::1]>", 501, "5.1.3");
	assert_err("RCPT TO:<u@[300.1.1.1]>", 501, "5.1.3");
	assert_err("RCPT TO:<u@[1.2.3.4>", 501, "5.1.3");
	assert_err("RCPT TO:<u@[tag:x]>", 501, "5.1.3");
	assert_err("RCPT TO:<u@-x.example>", 501, "5.1.3");
	assert_ok("RCPT TO:<u@xn--bcher-kva.example>");
	assert_ok("RCPT TO:<u@123.example>");
}

static void
test_smtputf8(void **state)
{
	/* jörg@bücher.example */
	assert_ok("MAIL FROM:<j\xc3\xb6rg@b\xc3\xbc" "cher.example> SMTPUTF8");
	assert_int_equal(cmd.path.flags, SMTP_ADDR_UTF8);
	assert_str(cmd.path.localpart, "j\xc3\xb6rg");
	assert_str(cmd.path.localpart_canon, "j\xc3\xb6rg");
	assert_str(cmd.path.domain, "b\xc3\xbc" "cher.example");
	assert_ok("MAIL FROM:<\"j\xc3\xb6rg m\"@example.org> SMTPUTF8 BODY=8BITMIME");
	assert_str(cmd.path.localpart, "j\xc3\xb6rg m");
	assert_int_equal(cmd.path.flags, SMTP_ADDR_UTF8 | SMTP_ADDR_QUOTED);
	/* ascii address with SMTPUTF8: fine, no flag */
	assert_ok("MAIL FROM:<a@example.org> SMTPUTF8");
	assert_int_equal(cmd.path.flags, 0);

	assert_err("MAIL FROM:<j\xc3\xb6rg@example.org>", 553, "5.6.7");
	assert_err("MAIL FROM:<jorg@b\xc3\xbc" "cher.example>", 553, "5.6.7");
	assert_err("MAIL FROM:<a@example.org> ENVID=\xc3\xb6", 553, "5.6.7");
	assert_ok("MAIL FROM:<a@example.org> SMTPUTF8 ENVID=\xc3\xb6");
	assert_err("MAIL FROM:<j\xc3rg@example.org> SMTPUTF8", 501, "5.1.7");
	assert_err("MAIL FROM:<j\xc0\xafrg@example.org> SMTPUTF8", 501, "5.1.7");
	assert_err("MAIL FROM:<j\xed\xa0\x80rg@example.org> SMTPUTF8", 501, "5.1.7");

	/* RCPT takes SMTPUTF8 from the transaction */
	assert_int_equal(parse_o("RCPT TO:<\xe7\x94\xa8\xe6\x88\xb7@example.org>",
				 SMTP_EXT_ALL, true), 1);
	assert_int_equal(cmd.path.flags, SMTP_ADDR_UTF8);
	assert_int_equal(parse_o("RCPT TO:<\xe7\x94\xa8\xe6\x88\xb7@example.org>",
				 SMTP_EXT_ALL, false), -1);
	assert_int_equal(cmd.code, 553);
	assert_string_equal(cmd.ecode, "5.6.7");
	assert_int_equal(parse_o("RCPT TO:<\xe7\x94\xa8\xe6\x88\xb7@example.org>",
				 SMTP_EXT_ALL & ~SMTP_EXT_SMTPUTF8, true), -1);
}

static void
test_bdat(void **state)
{
	assert_ok("BDAT 1000");
	assert_int_equal(cmd.verb, SMTP_VERB_BDAT);
	assert_true(cmd.bdat.size == 1000);
	assert_false(cmd.bdat.last);
	assert_ok("BDAT 0 LAST");
	assert_true(cmd.bdat.size == 0);
	assert_true(cmd.bdat.last);
	assert_ok("bdat 12 last");
	assert_true(cmd.bdat.last);
	assert_ok("BDAT 18446744073709551615");
	assert_true(cmd.bdat.size == UINT64_MAX);
	assert_err("BDAT 18446744073709551616", 501, "5.5.4");
	assert_err("BDAT 99999999999999999999999", 501, "5.5.4");
	assert_err("BDAT", 501, "5.5.4");
	assert_err("BDAT x", 501, "5.5.4");
	assert_err("BDAT -1", 501, "5.5.4");
	assert_err("BDAT 12 LAST x", 501, "5.5.4");
	assert_err("BDAT 12 FIRST", 501, "5.5.4");
	assert_err("BDAT 12  LAST", 501, "5.5.4");
}

static void
test_auth(void **state)
{
	assert_ok("AUTH PLAIN");
	assert_int_equal(cmd.verb, SMTP_VERB_AUTH);
	assert_str(cmd.auth.mech, "PLAIN");
	assert_false(cmd.auth.has_initial);
	/* Thunderbird: PLAIN with initial response */
	assert_ok("AUTH PLAIN AGFsaWNlAHNlY3JldA==");
	assert_true(cmd.auth.has_initial);
	assert_str(cmd.auth.initial, "AGFsaWNlAHNlY3JldA==");
	assert_ok("auth login");
	assert_str(cmd.auth.mech, "login");
	assert_ok("AUTH PLAIN =");
	assert_true(cmd.auth.has_initial);
	assert_true(cmd.auth.initial_empty);
	assert_int_equal(cmd.auth.initial.len, 0);
	assert_ok("AUTH SCRAM-SHA-256 biwsbj11c2VyLHI9ck9wck5HZndFYmVSV2diTkVrcU8=");
	assert_str(cmd.auth.mech, "SCRAM-SHA-256");
	assert_ok("AUTH CRAM-MD5");
	assert_ok("AUTH X_OAUTH2");

	assert_err("AUTH", 501, "5.5.4");
	assert_err("AUTH PLAIN abc", 501, "5.5.2");
	assert_err("AUTH PLAIN ab=c", 501, "5.5.2");
	assert_err("AUTH PLAIN a===", 501, "5.5.2");
	assert_err("AUTH PLAIN YQ== YQ==", 501, "5.5.4");
	assert_err("AUTH PL@IN", 501, "5.5.4");
	assert_err("AUTH ABCDEFGHIJKLMNOPQRSTU", 501, "5.5.4");
	assert_ok("AUTH ABCDEFGHIJKLMNOPQRST");

	assert_int_equal(smtp_auth_response_check("*", 1), 0);
	assert_int_equal(smtp_auth_response_check("", 0), 1);
	assert_int_equal(smtp_auth_response_check("dXNlcg==", 8), 1);
	assert_int_equal(smtp_auth_response_check("dXNlcg=", 7), -1);
	assert_int_equal(smtp_auth_response_check("**", 2), -1);
}

static void
test_long_lines(void **state)
{
	struct smtp_parse_opts o = {SMTP_EXT_ALL, false};
	char *line = malloc(SMTP_CMD_MAX_LINE + 5000);
	size_t n;

	/* the longest line accepted, with a quoted localpart of quoted pairs
	 * and an ORCPT: everything decodes into the scratch */
	n = (size_t)snprintf(line, 40, "RCPT TO:<\"");
	while (n < SMTP_CMD_MAX_LINE - 60) {
		memcpy(line + n, "\\\"", 2);
		n += 2;
	}
	memcpy(line + n, "\"@a.example> ORCPT=rfc822;", 26);
	n += 26;
	while (n < SMTP_CMD_MAX_LINE - 2)
		line[n++] = 'x';
	assert_int_equal(smtp_cmd_parse(line, n, &o, &cmd), 1);
	assert_true(cmd.path.flags & SMTP_ADDR_QUOTED);
	assert_true(cmd.path.flags & SMTP_ADDR_LONG_LOCAL);
	assert_true(cmd.scratch_used <= sizeof(cmd.scratch));
	assert_true(cmd.path.localpart_canon.len > 2000);
	/* one more byte is over the command limit */
	line[n++] = 'x';
	assert_int_equal(smtp_cmd_parse(line, n, &o, &cmd), -1);
	assert_int_equal(cmd.code, 500);
	assert_string_equal(cmd.ecode, "5.5.2");

	/* AUTH is exempt: its line limit is applied by smtp_line_find */
	memcpy(line, "AUTH PLAIN ", 11);
	memset(line + 11, 'A', SMTP_CMD_MAX_LINE + 100);
	assert_int_equal(smtp_cmd_parse(line, 11 + SMTP_CMD_MAX_LINE + 100, &o, &cmd), 1);
	assert_int_equal(cmd.auth.initial.len, SMTP_CMD_MAX_LINE + 100);
	free(line);
}

/* ------------------------------------------------------------------ */
/* DATA                                                                */

struct data_result {
	struct mbuf out;
	struct smtp_data d;
	size_t consumed;
};

/* Feed in pieces of step bytes (0: all at once). */
static void
data_run(struct data_result *r, enum smtp_data_mode mode, uint64_t max,
	 const char *in, size_t len, size_t step)
{
	size_t off = 0;

	mbuf_init(&r->out, 1 << 20);
	smtp_data_init(&r->d, mode, max);
	while (off < len && !r->d.done) {
		size_t avail = len - off, pos = 0;

		if (step > 0 && avail > step)
			avail = step;
		while (pos < avail && !r->d.done) {
			const char *chunk;
			size_t clen, n;

			n = smtp_data_parse(&r->d, in + off + pos, avail - pos,
					    &chunk, &clen);
			assert_true(n > 0 || clen > 0);
			assert_true(n <= avail - pos);
			if (clen > 0)
				assert_int_equal(mbuf_add(&r->out, chunk, clen), 0);
			pos += n;
		}
		off += pos;
	}
	r->consumed = off;
}

static void
data_check(enum smtp_data_mode mode, uint64_t max, const char *in,
	   const char *want, bool done, size_t want_consumed, unsigned flags)
{
	size_t len = strlen(in);
	struct data_result ref;

	data_run(&ref, mode, max, in, len, 0);
	if (want != NULL && (ref.out.len != strlen(want) ||
			     memcmp(ref.out.data ? ref.out.data : "", want, ref.out.len) != 0))
		fail_msg("output '%.*s' want '%s'", (int)ref.out.len,
			 ref.out.data ? ref.out.data : "", want);
	assert_int_equal(ref.d.done, done);
	assert_int_equal(ref.consumed, want_consumed);
	assert_int_equal(ref.d.flags, flags);
	/* every split gives the same result */
	for (size_t step = 1; step <= len + 1; step++) {
		struct data_result r;

		data_run(&r, mode, max, in, len, step);
		assert_int_equal(r.out.len, ref.out.len);
		if (r.out.len > 0)
			assert_memory_equal(r.out.data, ref.out.data, r.out.len);
		assert_int_equal(r.d.done, ref.d.done);
		assert_int_equal(r.consumed, ref.consumed);
		assert_int_equal(r.d.flags, ref.d.flags);
		assert_true(r.d.size == ref.d.size);
		assert_int_equal(r.d.over_limit, ref.d.over_limit);
		mbuf_clear(&r.out);
	}
	mbuf_clear(&ref.out);
}

static void
test_data_basic(void **state)
{
	const char *msg = "Subject: hi\r\n\r\nbody\r\n.\r\nQUIT\r\n";

	data_check(SMTP_DATA_STRICT, 0, msg, "Subject: hi\r\n\r\nbody\r\n", true,
		   strlen(msg) - 6, 0);
	/* empty message */
	data_check(SMTP_DATA_STRICT, 0, ".\r\n", "", true, 3, 0);
	/* unterminated */
	data_check(SMTP_DATA_STRICT, 0, "abc\r\n.\r", "abc\r\n", false, 7, 0);
	data_check(SMTP_DATA_STRICT, 0, "abc\r\n", "abc\r\n", false, 5, 0);
	/* dot-unstuffing: a leading dot is removed from every line */
	data_check(SMTP_DATA_STRICT, 0, "..\r\n...x\r\na.b\r\n.x\r\n.\r\n",
		   ".\r\n..x\r\na.b\r\nx\r\n", true, 22, 0);
	data_check(SMTP_DATA_STRICT, 0, "..\r\n.\r\n", ".\r\n", true, 7, 0);
	/* "." + bare CR: the dot is stuffing, the CR is data */
	data_check(SMTP_DATA_STRICT, 0, "a\r\n.\rb\r\n.\r\n", "a\r\n\rb\r\n", true,
		   11, SMTP_DATA_BARE_CR);
	data_check(SMTP_DATA_STRICT, 0, ".\r\r\n.\r\n", "\r\r\n", true, 7,
		   SMTP_DATA_BARE_CR);
	/* bare CR in text */
	data_check(SMTP_DATA_STRICT, 0, "a\rb\r\n.\r\n", "a\rb\r\n", true, 8,
		   SMTP_DATA_BARE_CR);
	/* 8bit, NUL */
	data_check(SMTP_DATA_STRICT, 0, "\xc3\xa9\r\n.\r\n", "\xc3\xa9\r\n", true, 7,
		   SMTP_DATA_8BIT);
	{
		struct data_result r;

		data_run(&r, SMTP_DATA_STRICT, 0, "a\0b\r\n.\r\n", 8, 0);
		assert_int_equal(r.out.len, 5);
		assert_true(r.d.flags & SMTP_DATA_NUL);
		assert_true(r.d.done);
		mbuf_clear(&r.out);
	}
}

static void
test_data_bare_lf(void **state)
{
	/* strict: only CRLF.CRLF ends; LF.LF is data (smuggling) */
	data_check(SMTP_DATA_STRICT, 0, "a\n.\nMAIL FROM:<x@y>\r\n.\r\n",
		   "a\n.\nMAIL FROM:<x@y>\r\n", true, 24, SMTP_DATA_BARE_LF);
	data_check(SMTP_DATA_STRICT, 0, "a\r\n.\nb\r\n.\r\n", "a\r\n\nb\r\n", true, 11,
		   SMTP_DATA_BARE_LF);
	data_check(SMTP_DATA_STRICT, 0, "a\n.\r\nb\r\n.\r\n", "a\n.\r\nb\r\n", true, 11,
		   SMTP_DATA_BARE_LF);
	/* accept: LF ends lines too */
	data_check(SMTP_DATA_ACCEPT_LF, 0, "a\n.\nNOOP\n", "a\n", true, 4,
		   SMTP_DATA_BARE_LF);
	data_check(SMTP_DATA_ACCEPT_LF, 0, "a\r\n.\nNOOP\n", "a\r\n", true, 5,
		   SMTP_DATA_BARE_LF);
	data_check(SMTP_DATA_ACCEPT_LF, 0, "a\n.\r\n", "a\n", true, 5,
		   SMTP_DATA_BARE_LF);
	data_check(SMTP_DATA_ACCEPT_LF, 0, "a\n..b\n.\n", "a\n.b\n", true, 8,
		   SMTP_DATA_BARE_LF);
	data_check(SMTP_DATA_ACCEPT_LF, 0, "a\r\nb\r\n.\r\n", "a\r\nb\r\n", true, 9, 0);
	/* fix: bare LF written as CRLF */
	data_check(SMTP_DATA_FIX_LF, 0, "a\nb\n..c\n.\n", "a\r\nb\r\n.c\r\n", true, 10,
		   SMTP_DATA_BARE_LF);
	data_check(SMTP_DATA_FIX_LF, 0, "\n\n.\n", "\r\n\r\n", true, 4,
		   SMTP_DATA_BARE_LF);
	data_check(SMTP_DATA_FIX_LF, 0, "a\r\nb\r\n.\r\n", "a\r\nb\r\n", true, 9, 0);
}

static void
test_data_split_end(void **state)
{
	const char *parts[] = {"hello\r", "\n", ".", "\r", "\n", "NOOP\r\n"};
	struct smtp_data d;
	struct mbuf out;
	size_t i;

	mbuf_init(&out, 1000);
	smtp_data_init(&d, SMTP_DATA_STRICT, 0);
	for (i = 0; i < ARRAY_LEN(parts) && !d.done; i++) {
		const char *p = parts[i], *chunk;
		size_t len = strlen(p), n, clen;

		while (len > 0 && !d.done) {
			n = smtp_data_parse(&d, p, len, &chunk, &clen);
			mbuf_add(&out, chunk, clen);
			p += n;
			len -= n;
		}
		assert_int_equal(len, 0);
	}
	assert_true(d.done);
	assert_int_equal(i, 5);
	assert_string_equal(out.data, "hello\r\n");
	assert_true(d.size == 7);
	/* nothing more after done */
	{
		const char *chunk;
		size_t clen;

		assert_int_equal(smtp_data_parse(&d, "x", 1, &chunk, &clen), 0);
		assert_int_equal(clen, 0);
	}
	mbuf_clear(&out);
}

static void
test_data_size(void **state)
{
	struct data_result r;
	const char *msg = "0123456789\r\n.\r\nNOOP\r\n";

	/* exactly at the limit: fine */
	data_run(&r, SMTP_DATA_STRICT, 12, msg, strlen(msg), 0);
	assert_false(r.d.over_limit);
	assert_true(r.d.done);
	assert_int_equal(r.out.len, 12);
	mbuf_clear(&r.out);
	/* one over: consumed to the end, flagged, output stops at the limit */
	data_check(SMTP_DATA_STRICT, 11, msg, "0123456789\r", true, 15, 0);
	data_run(&r, SMTP_DATA_STRICT, 11, msg, strlen(msg), 1);
	assert_true(r.d.over_limit);
	assert_true(r.d.done);
	assert_true(r.d.size == 12);
	assert_int_equal(r.consumed, 15);
	mbuf_clear(&r.out);
	data_check(SMTP_DATA_FIX_LF, 3, "a\nb\n.\n", "a\r\n", true, 6,
		   SMTP_DATA_BARE_LF);
	data_check(SMTP_DATA_FIX_LF, 2, "a\nb\n.\n", "a\r", true, 6,
		   SMTP_DATA_BARE_LF);
	/* a large message in small pieces */
	{
		size_t len = 300000;
		char *big = malloc(len + 10);

		for (size_t i = 0; i < len; i++)
			big[i] = (i % 80 == 78) ? '\r' : (i % 80 == 79) ? '\n' :
				 (i % 80 == 0) ? '.' : 'x';
		memcpy(big + len, ".\r\n", 3);
		data_run(&r, SMTP_DATA_STRICT, 100000, big, len + 3, 4096);
		assert_true(r.d.over_limit);
		assert_true(r.d.done);
		assert_int_equal(r.consumed, len + 3);
		assert_true(r.d.size == len - len / 80);
		assert_int_equal(r.out.len, 100000);
		mbuf_clear(&r.out);
		free(big);
	}
}

static void
test_data_long_line(void **state)
{
	char *m = malloc(2100);
	struct data_result r;

	memset(m, 'x', 998);
	memcpy(m + 998, "\r\n.\r\n", 5);
	data_run(&r, SMTP_DATA_STRICT, 0, m, 1003, 1);
	assert_int_equal(r.d.flags, 0);
	mbuf_clear(&r.out);
	memset(m, 'x', 999);
	memcpy(m + 999, "\r\n.\r\n", 5);
	data_run(&r, SMTP_DATA_STRICT, 0, m, 1004, 7);
	assert_int_equal(r.d.flags, SMTP_DATA_LONG_LINE);
	mbuf_clear(&r.out);
	free(m);
}

/* ------------------------------------------------------------------ */
/* Replies                                                             */

static void
test_reply(void **state)
{
	struct mbuf b;
	const char *ehlo[] = {"mox.example Hello", "PIPELINING", "SIZE 10485760",
			      "SMTPUTF8"};
	const char *one[] = {"ok"};

	mbuf_init(&b, 4096);
	assert_true(smtp_reply_lines(&b, 250, NULL, NULL, ehlo, 4) > 0);
	assert_string_equal(b.data, "250-mox.example Hello\r\n250-PIPELINING\r\n"
			    "250-SIZE 10485760\r\n250 SMTPUTF8\r\n");
	mbuf_reset(&b);
	assert_int_equal(smtp_reply_lines(&b, 250, "2.0.0", NULL, one, 1), 14);
	assert_string_equal(b.data, "250 2.0.0 ok\r\n");
	mbuf_reset(&b);
	assert_true(smtp_reply_lines(&b, 451, "4.3.0", "(cid 3f2a)", one, 1) > 0);
	assert_string_equal(b.data, "451 4.3.0 ok (cid 3f2a)\r\n");
	mbuf_reset(&b);
	assert_true(smtp_reply_lines(&b, 221, "2.0.0", NULL, NULL, 0) > 0);
	assert_string_equal(b.data, "221 2.0.0\r\n");
	mbuf_reset(&b);
	assert_true(smtp_replyf(&b, 550, "5.1.1", "(cid 1)", "no such user %s\nsee %s",
				"bob\r\nRSET", "http://x") > 0);
	/* a client's CR LF can only make a harmless continuation line */
	assert_string_equal(b.data, "550-5.1.1 no such user bob?\r\n"
			    "550-5.1.1 RSET\r\n"
			    "550 5.1.1 see http://x (cid 1)\r\n");
	mbuf_reset(&b);
	{
		const char *bad[] = {"a\r\n250 ok", "b"};

		assert_true(smtp_reply_lines(&b, 550, "5.0.0", "x\ny", bad, 2) > 0);
		assert_string_equal(b.data, "550-5.0.0 a??250 ok\r\n"
				    "550 5.0.0 b x?y\r\n");
	}
	mbuf_reset(&b);
	assert_true(smtp_replyf(&b, 220, NULL, NULL, "mox.example ESMTP") > 0);
	assert_string_equal(b.data, "220 mox.example ESMTP\r\n");

	/* over the mbuf's maximum: nothing is appended */
	{
		struct mbuf small;

		mbuf_init(&small, 20);
		assert_true(smtp_reply_lines(&small, 250, "2.0.0", NULL, one, 1) > 0);
		assert_int_equal(smtp_reply_lines(&small, 250, "2.0.0", NULL, one, 1), -1);
		assert_int_equal(small.len, 14);
		assert_string_equal(small.data, "250 2.0.0 ok\r\n");
		mbuf_clear(&small);
	}
	assert_int_equal(smtp_reply_lines(&b, 99, NULL, NULL, one, 1), -1);

	/* error of a failed command */
	mbuf_reset(&b);
	assert_int_equal(parse("MAIL FROM:<a@b.example> FOO=1"), -1);
	assert_true(smtp_reply_cmd_error(&b, &cmd, "(cid 9)") > 0);
	assert_string_equal(b.data, "555 5.5.4 unsupported parameter FOO (cid 9)\r\n");
	mbuf_clear(&b);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_line_find),
		cmocka_unit_test(test_verbs),
		cmocka_unit_test(test_helo),
		cmocka_unit_test(test_mail),
		cmocka_unit_test(test_rcpt),
		cmocka_unit_test(test_localparts),
		cmocka_unit_test(test_domains),
		cmocka_unit_test(test_smtputf8),
		cmocka_unit_test(test_bdat),
		cmocka_unit_test(test_auth),
		cmocka_unit_test(test_long_lines),
		cmocka_unit_test(test_data_basic),
		cmocka_unit_test(test_data_bare_lf),
		cmocka_unit_test(test_data_split_end),
		cmocka_unit_test(test_data_size),
		cmocka_unit_test(test_data_long_line),
		cmocka_unit_test(test_reply),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}

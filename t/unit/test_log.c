/* Tests for daemon/log: logfmt format, escaping of client bytes, levels. */
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "daemon/log.h"

static int fds[2];

static int
setup(void **state)
{
	if (pipe(fds) < 0)
		return -1;
	/* Reads must not block when a test expects no output. */
	if (fcntl(fds[0], F_SETFL, O_NONBLOCK) < 0)
		return -1;
	log_set_fd(fds[1]);
	log_set_level(LOG_LVL_INFO);
	log_reset_package_levels();
	return 0;
}

static int
teardown(void **state)
{
	log_set_fd(2);
	log_set_level(LOG_LVL_INFO);
	log_reset_package_levels();
	close(fds[0]);
	close(fds[1]);
	return 0;
}

/* Everything written so far; caller frees. "" when nothing was written. */
static char *
drain(void)
{
	static char buf[65536];
	ssize_t n = read(fds[0], buf, sizeof(buf) - 1);

	if (n < 0)
		n = 0;
	buf[n] = '\0';
	return xstrdup(buf);
}

/* The output after the timestamp: "l=... m=...\n". Checks the t= field's shape. */
static const char *
after_time(const char *line)
{
	/* t=2024-01-02T03:04:05.678Z */
	const char *shape = "t=dddd-dd-ddTdd:dd:dd.dddZ ";

	for (size_t i = 0; shape[i]; i++) {
		if (shape[i] == 'd')
			assert_true(line[i] >= '0' && line[i] <= '9');
		else
			assert_int_equal(line[i], shape[i]);
	}
	return line + strlen(shape);
}

static size_t
count_char(const char *s, char c)
{
	size_t n = 0;

	for (; *s; s++)
		n += *s == c;
	return n;
}

static void
test_format(void **state)
{
	char *out;

	log_info("imap", 0x1f, "login", "user", "mjl", "remote", "10.0.0.1", NULL);
	out = drain();
	assert_string_equal(after_time(out), "l=info m=login pkg=imap cid=1f user=mjl remote=10.0.0.1\n");
	free(out);

	/* No pkg, no cid (0). A NULL value prints as "". */
	log_line(LOG_LVL_ERROR, NULL, 0, "disk full", "path", NULL, NULL);
	out = drain();
	assert_string_equal(after_time(out), "l=error m=\"disk full\" path=\"\"\n");
	free(out);

	log_error("smtp", 1, "x");
	out = drain();
	assert_string_equal(after_time(out), "l=error m=x pkg=smtp cid=1\n");
	free(out);

	/* Empty message. */
	log_info("http", 0, "");
	out = drain();
	assert_string_equal(after_time(out), "l=info m=\"\" pkg=http\n");
	free(out);
}

static void
test_quoting(void **state)
{
	char *out;

	log_info("imap", 2, "m", "a", "two words", "b", "k=v", "c", "say \"hi\"", "d", "back\\slash", "e", "plain-value",
	    NULL);
	out = drain();
	assert_string_equal(after_time(out),
	    "l=info m=m pkg=imap cid=2 a=\"two words\" b=\"k=v\" c=\"say \\\"hi\\\"\" d=\"back\\\\slash\" e=plain-value\n");
	free(out);
}

static void
test_escaping(void **state)
{
	char *out;
	char ctl[] = {'a', 1, 0x1b, 0x7f, 'b', '\0'};

	/* A client cannot start a second line, with LF, CR or anything else. */
	log_info("smtp", 3, "cmd", "line", "RCPT\r\nt=2020 l=error m=forged\n", NULL);
	out = drain();
	assert_int_equal(count_char(out, '\n'), 1);
	assert_int_equal(count_char(out, '\r'), 0);
	assert_string_equal(after_time(out),
	    "l=info m=cmd pkg=smtp cid=3 line=\"RCPT\\r\\nt=2020 l=error m=forged\\n\"\n");
	free(out);

	log_info("smtp", 3, "c", "v", ctl, "tab", "a\tb", NULL);
	out = drain();
	assert_string_equal(after_time(out), "l=info m=c pkg=smtp cid=3 v=\"a\\x01\\x1b\\x7fb\" tab=\"a\\tb\"\n");
	free(out);

	/* The message is escaped like a value. */
	log_info(NULL, 0, "bad\nline");
	out = drain();
	assert_string_equal(after_time(out), "l=info m=\"bad\\nline\"\n");
	free(out);

	/* UTF-8 passes through (quoted), still one line. */
	log_info(NULL, 0, "m", "name", "J\xc3\xb6rg");
	out = drain();
	assert_string_equal(after_time(out), "l=info m=m name=\"J\xc3\xb6rg\"\n");
	free(out);
}

static void
test_fmt_value(void **state)
{
	struct mbuf b;

	mbuf_init(&b, 1000);
	log_fmt_value(&b, "a\0b", 3);
	assert_string_equal(b.data, "\"a\\x00b\"");
	mbuf_reset(&b);
	log_fmt_value(&b, "", 0);
	assert_string_equal(b.data, "\"\"");
	mbuf_reset(&b);
	log_fmt_value(&b, "simple", 6);
	assert_string_equal(b.data, "simple");
	mbuf_reset(&b);
	/* Only len bytes are used. */
	log_fmt_value(&b, "abc def", 3);
	assert_string_equal(b.data, "abc");
	mbuf_clear(&b);
}

static void
test_long_line(void **state)
{
	char *big = xmalloc(20000);
	char *out;

	/* Newlines everywhere: the line is cut at the maximum and still one line. */
	for (size_t i = 0; i < 19999; i++)
		big[i] = i % 2 ? '\n' : 'x';
	big[19999] = '\0';
	log_info("imap", 1, "big", "data", big);
	out = drain();
	assert_true(strlen(out) > 1000);
	assert_true(strlen(out) <= 8192);
	assert_int_equal(count_char(out, '\n'), 1);
	assert_int_equal(out[strlen(out) - 1], '\n');
	free(out);
	free(big);
}

static void
test_levels(void **state)
{
	enum log_level lvl;
	char *out;

	assert_int_equal(log_level_parse("error", &lvl), 1);
	assert_int_equal(lvl, LOG_LVL_ERROR);
	assert_int_equal(log_level_parse("trace", &lvl), 1);
	assert_int_equal(lvl, LOG_LVL_TRACE);
	assert_int_equal(log_level_parse("debug", &lvl), 1);
	assert_int_equal(lvl, LOG_LVL_DEBUG);
	assert_int_equal(log_level_parse("info", &lvl), 1);
	assert_int_equal(lvl, LOG_LVL_INFO);
	assert_int_equal(log_level_parse("INFO", &lvl), -1);
	assert_int_equal(log_level_parse("warn", &lvl), -1);
	assert_int_equal(log_level_parse("", &lvl), -1);
	assert_string_equal(log_level_name(LOG_LVL_DEBUG), "debug");
	assert_string_equal(log_level_name((enum log_level)42), "?");

	/* Default info: debug suppressed, info and error written. */
	log_debug("imap", 0, "hidden");
	out = drain();
	assert_string_equal(out, "");
	free(out);
	assert_true(log_enabled("imap", LOG_LVL_INFO));
	assert_false(log_enabled("imap", LOG_LVL_DEBUG));

	/* A package's level overrides the default, in both directions. */
	log_set_package_level("imap", LOG_LVL_TRACE);
	log_set_package_level("smtp", LOG_LVL_ERROR);
	log_trace("imap", 0, "shown");
	out = drain();
	assert_string_equal(after_time(out), "l=trace m=shown pkg=imap\n");
	free(out);
	log_info("smtp", 0, "hidden");
	log_debug("http", 0, "hidden");
	out = drain();
	assert_string_equal(out, "");
	free(out);
	log_error("smtp", 0, "shown");
	log_info("http", 0, "shown");
	out = drain();
	assert_non_null(strstr(out, "l=error m=shown pkg=smtp\n"));
	assert_non_null(strstr(out, "l=info m=shown pkg=http\n"));
	free(out);

	/* Setting a package again replaces its level. */
	log_set_package_level("imap", LOG_LVL_ERROR);
	assert_false(log_enabled("imap", LOG_LVL_INFO));

	/* The default level applies to other packages and to no package. */
	log_set_level(LOG_LVL_DEBUG);
	assert_true(log_enabled("http", LOG_LVL_DEBUG));
	assert_true(log_enabled(NULL, LOG_LVL_DEBUG));
	assert_false(log_enabled(NULL, LOG_LVL_TRACE));
	assert_false(log_enabled("imap", LOG_LVL_INFO));

	/* Reset drops the overrides. */
	log_reset_package_levels();
	assert_true(log_enabled("imap", LOG_LVL_DEBUG));
	assert_true(log_enabled("smtp", LOG_LVL_INFO));
	log_set_level(LOG_LVL_INFO);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_format, setup, teardown),
		cmocka_unit_test_setup_teardown(test_quoting, setup, teardown),
		cmocka_unit_test_setup_teardown(test_escaping, setup, teardown),
		cmocka_unit_test(test_fmt_value),
		cmocka_unit_test_setup_teardown(test_long_line, setup, teardown),
		cmocka_unit_test_setup_teardown(test_levels, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

/* Tests for daemon/util: bounded buffers, integer parsing, mkdir_p, read_file. */
#include <errno.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "daemon/util.h"

/* A scratch directory per test run, removed by the group teardown. */
static char tmpdir[64];

static int
setup_tmp(void **state)
{
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/mox-test-util-XXXXXX");
	return mkdtemp(tmpdir) == NULL ? -1 : 0;
}

static int
teardown_tmp(void **state)
{
	char *cmd = xasprintf("rm -rf '%s'", tmpdir);
	int r = system(cmd);
	free(cmd);
	return r == 0 ? 0 : -1;
}

static void
write_file(const char *path, const char *data, size_t len)
{
	FILE *f = fopen(path, "wb");
	assert_non_null(f);
	assert_int_equal(fwrite(data, 1, len, f), len);
	assert_int_equal(fclose(f), 0);
}

static void
test_mbuf_max(void **state)
{
	struct mbuf b;

	mbuf_init(&b, 10);
	assert_int_equal(mbuf_adds(&b, "hello"), 0);
	assert_int_equal(b.len, 5);
	assert_string_equal(b.data, "hello");
	/* 6 more bytes would make 11 > 10: refused, buffer unchanged. */
	assert_int_equal(mbuf_adds(&b, "world!"), -1);
	assert_int_equal(b.len, 5);
	assert_string_equal(b.data, "hello");
	/* Exactly up to the maximum is fine. */
	assert_int_equal(mbuf_adds(&b, "world"), 0);
	assert_int_equal(b.len, 10);
	assert_string_equal(b.data, "helloworld");
	assert_int_equal(mbuf_add(&b, "x", 1), -1);
	assert_int_equal(mbuf_add(&b, "", 0), 0);
	assert_int_equal(b.len, 10);
	assert_string_equal(b.data, "helloworld");
	/* A huge n must not overflow the check. */
	assert_int_equal(mbuf_add(&b, "x", SIZE_MAX), -1);
	assert_int_equal(b.len, 10);
	/* printf past the maximum fails and leaves the buffer unchanged too. */
	assert_int_equal(mbuf_printf(&b, "%d", 1), -1);
	assert_string_equal(b.data, "helloworld");

	mbuf_reset(&b);
	assert_int_equal(b.len, 0);
	assert_string_equal(b.data, "");
	assert_int_equal(mbuf_adds(&b, "0123456789"), 0);
	mbuf_clear(&b);
	assert_null(b.data);
	assert_int_equal(b.len, 0);
	mbuf_clear(&b); /* twice is harmless */

	/* Binary data with NUL bytes; data stays NUL-terminated after len. */
	mbuf_init(&b, 100);
	assert_int_equal(mbuf_add(&b, "a\0b", 3), 0);
	assert_int_equal(b.len, 3);
	assert_memory_equal(b.data, "a\0b", 4);
	mbuf_clear(&b);

	/* Zero maximum: nothing fits but an empty append. */
	mbuf_init(&b, 0);
	assert_int_equal(mbuf_add(&b, "a", 1), -1);
	assert_int_equal(b.len, 0);
	mbuf_clear(&b);
}

static void
test_mbuf_printf_growth(void **state)
{
	struct mbuf b;
	char *expect;
	size_t n = 0;

	mbuf_init(&b, 1 << 20);
	/* Many appends through several reallocations. */
	for (int i = 0; i < 2000; i++) {
		assert_int_equal(mbuf_printf(&b, "%d,", i), 0);
		n += (size_t)snprintf(NULL, 0, "%d,", i);
	}
	assert_int_equal(b.len, n);
	assert_true(b.cap > b.len);
	assert_int_equal(strlen(b.data), b.len);
	assert_memory_equal(b.data, "0,1,2,3,", 8);
	assert_memory_equal(b.data + b.len - 5, "1999,", 5);
	mbuf_clear(&b);

	/* One large formatted string at once. */
	mbuf_init(&b, 5000);
	assert_int_equal(mbuf_printf(&b, "%s=%04d", "x", 7), 0);
	assert_int_equal(mbuf_printf(&b, "%3000s", "y"), 0);
	assert_int_equal(b.len, 6 + 3000);
	assert_string_equal(b.data + b.len - 1, "y");
	assert_memory_equal(b.data, "x=0007  ", 8);
	/* Over the max: refused, nothing changes. */
	expect = xstrdup(b.data);
	assert_int_equal(mbuf_printf(&b, "%2000s", "z"), -1);
	assert_int_equal(b.len, 3006);
	assert_string_equal(b.data, expect);
	free(expect);
	mbuf_clear(&b);
}

static void
test_xsnprintf(void **state)
{
	char buf[8];

	assert_int_equal(xsnprintf(buf, sizeof(buf), "%s", "1234567"), 7);
	assert_string_equal(buf, "1234567");
	assert_int_equal(xsnprintf(buf, sizeof(buf), "%s", "12345678"), -1);
	char *s = xasprintf("%s-%d", "a", 42);
	assert_string_equal(s, "a-42");
	free(s);
	s = xstrndup("abcdef", 3);
	assert_string_equal(s, "abc");
	free(s);
}

static void
test_str_helpers(void **state)
{
	assert_true(str_ieq("Hello", "hELLO"));
	assert_false(str_ieq("Hello", "Hell"));
	assert_false(str_ieq("Hell", "Hello"));
	assert_true(str_ieq("", ""));
	assert_true(str_has_prefix("mailbox", "mail"));
	assert_true(str_has_prefix("mail", ""));
	assert_false(str_has_prefix("mai", "mail"));
}

static void
test_parse_ll(void **state)
{
	long long v = 77;

	assert_int_equal(parse_ll("0", 0, 10, &v), 1);
	assert_int_equal(v, 0);
	assert_int_equal(parse_ll("10", 0, 10, &v), 1);
	assert_int_equal(v, 10);
	assert_int_equal(parse_ll("-5", -10, 10, &v), 1);
	assert_int_equal(v, -5);
	assert_int_equal(parse_ll("9223372036854775807", LLONG_MIN, LLONG_MAX, &v), 1);
	assert_true(v == LLONG_MAX);
	assert_int_equal(parse_ll("-9223372036854775808", LLONG_MIN, LLONG_MAX, &v), 1);
	assert_true(v == LLONG_MIN);

	v = 77;
	/* Range. */
	assert_int_equal(parse_ll("11", 0, 10, &v), -1);
	assert_int_equal(parse_ll("-1", 0, 10, &v), -1);
	/* Overflow. */
	assert_int_equal(parse_ll("9223372036854775808", LLONG_MIN, LLONG_MAX, &v), -1);
	assert_int_equal(parse_ll("-9223372036854775809", LLONG_MIN, LLONG_MAX, &v), -1);
	assert_int_equal(parse_ll("99999999999999999999999", LLONG_MIN, LLONG_MAX, &v), -1);
	/* Junk. */
	assert_int_equal(parse_ll("", 0, 10, &v), -1);
	assert_int_equal(parse_ll(" 5", 0, 10, &v), -1);
	assert_int_equal(parse_ll("5 ", 0, 10, &v), -1);
	assert_int_equal(parse_ll("5x", 0, 10, &v), -1);
	assert_int_equal(parse_ll("x5", 0, 10, &v), -1);
	assert_int_equal(parse_ll("-", -10, 10, &v), -1);
	assert_int_equal(parse_ll("0x5", 0, 10, &v), -1);
	assert_int_equal(parse_ll("1.0", 0, 10, &v), -1);
	assert_int_equal(parse_ll("\t1", 0, 10, &v), -1);
	/* Failures leave the output alone. */
	assert_int_equal(v, 77);
}

static void
test_mkdir_p(void **state)
{
	struct stat st;
	char *p = xasprintf("%s/a/b/c", tmpdir);
	char *f = xasprintf("%s/file", tmpdir);
	char *under = xasprintf("%s/file/sub", tmpdir);
	char *slash = xasprintf("%s/x//y/", tmpdir);

	assert_int_equal(mkdir_p(p, 0750), 0);
	assert_int_equal(stat(p, &st), 0);
	assert_true(S_ISDIR(st.st_mode));
	/* Existing directories are fine. */
	assert_int_equal(mkdir_p(p, 0750), 0);
	assert_int_equal(mkdir_p(tmpdir, 0750), 0);
	/* Doubled and trailing slashes. */
	assert_int_equal(mkdir_p(slash, 0750), 0);
	free(slash);
	slash = xasprintf("%s/x/y", tmpdir);
	assert_int_equal(stat(slash, &st), 0);
	assert_true(S_ISDIR(st.st_mode));

	/* A file in the way: the path is not a directory, so it fails. */
	write_file(f, "x", 1);
	errno = 0;
	assert_int_equal(mkdir_p(f, 0750), -1);
	assert_int_equal(errno, ENOTDIR);
	errno = 0;
	assert_int_equal(mkdir_p(under, 0750), -1);
	assert_int_equal(errno, ENOTDIR);

	/* Empty and too long paths. */
	assert_int_equal(mkdir_p("", 0750), -1);
	char *longp = xmalloc(PATH_MAX + 10);
	memset(longp, 'a', PATH_MAX + 9);
	longp[PATH_MAX + 9] = '\0';
	errno = 0;
	assert_int_equal(mkdir_p(longp, 0750), -1);
	assert_int_equal(errno, ENAMETOOLONG);
	free(longp);

	free(p);
	free(f);
	free(under);
	free(slash);
}

static void
test_read_file(void **state)
{
	char *path = xasprintf("%s/data", tmpdir);
	char *empty = xasprintf("%s/empty", tmpdir);
	char *missing = xasprintf("%s/missing", tmpdir);
	char *buf = NULL;
	size_t len = 99;

	write_file(path, "0123456789", 10);
	assert_int_equal(read_file(path, 10, &buf, &len), 1);
	assert_int_equal(len, 10);
	assert_string_equal(buf, "0123456789");
	free(buf);
	buf = NULL;

	/* One byte over the maximum: EFBIG, outputs untouched. */
	len = 99;
	errno = 0;
	assert_int_equal(read_file(path, 9, &buf, &len), -1);
	assert_int_equal(errno, EFBIG);
	assert_null(buf);
	assert_int_equal(len, 99);

	errno = 0;
	assert_int_equal(read_file(missing, 100, &buf, &len), -1);
	assert_int_equal(errno, ENOENT);

	write_file(empty, "", 0);
	assert_int_equal(read_file(empty, 0, &buf, &len), 1);
	assert_int_equal(len, 0);
	assert_string_equal(buf, "");
	free(buf);

	/* Binary content with NUL bytes comes back whole. */
	write_file(path, "a\0b\0", 4);
	assert_int_equal(read_file(path, 4, &buf, &len), 1);
	assert_int_equal(len, 4);
	assert_memory_equal(buf, "a\0b\0", 5);
	free(buf);

	/* A directory cannot be read as a file. */
	assert_int_equal(read_file(tmpdir, 1 << 20, &buf, &len), -1);

	free(path);
	free(empty);
	free(missing);
}

static void
test_write_all(void **state)
{
	int fds[2];
	char buf[16] = {0};

	assert_int_equal(pipe(fds), 0);
	assert_int_equal(write_all(fds[1], "abc", 3), 0);
	assert_int_equal(read(fds[0], buf, sizeof(buf)), 3);
	assert_string_equal(buf, "abc");
	close(fds[0]);
	close(fds[1]);
	assert_int_equal(write_all(-1, "abc", 3), -1);
}

static void
test_alloc(void **state)
{
	char *p = xmalloc(0);
	free(p);
	p = xcalloc(0, 0);
	free(p);
	p = xcalloc(4, 4);
	for (int i = 0; i < 16; i++)
		assert_int_equal(p[i], 0);
	p = xrealloc(p, 100);
	free(p);
	int64_t a = mono_ms(), b = mono_ms();
	assert_true(b >= a);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_mbuf_max),
		cmocka_unit_test(test_mbuf_printf_growth),
		cmocka_unit_test(test_xsnprintf),
		cmocka_unit_test(test_str_helpers),
		cmocka_unit_test(test_parse_ll),
		cmocka_unit_test(test_mkdir_p),
		cmocka_unit_test(test_read_file),
		cmocka_unit_test(test_write_all),
		cmocka_unit_test(test_alloc),
	};
	return cmocka_run_group_tests(tests, setup_tmp, teardown_tmp);
}

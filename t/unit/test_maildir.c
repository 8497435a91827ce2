/* Unit tests for maildir/: names, keywords, folders, delivery, scanning. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
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

#include "maildir/maildir.h"

/* ---- helpers ---- */

static int rm_cb(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	return remove(path);
}

static void rm_rf(const char *path)
{
	nftw(path, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
}

struct fixture {
	char root[64];
};

static int setup_dir(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));

	strcpy(f->root, "/tmp/test_maildir.XXXXXX");
	if (mkdtemp(f->root) == NULL)
		return -1;
	*state = f;
	return 0;
}

static int teardown_dir(void **state)
{
	struct fixture *f = *state;

	rm_rf(f->root);
	free(f);
	return 0;
}

static char *pathf(char *buf, size_t size, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static char *pathf(char *buf, size_t size, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(buf, size, fmt, ap);
	va_end(ap);
	return buf;
}

static void write_file(const char *path, const char *data)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);

	assert_true(fd >= 0);
	assert_int_equal(write(fd, data, strlen(data)), (ssize_t)strlen(data));
	close(fd);
}

static size_t read_all(const char *path, char *buf, size_t size)
{
	int fd = open(path, O_RDONLY);
	ssize_t n;

	assert_true(fd >= 0);
	n = read(fd, buf, size - 1);
	assert_true(n >= 0);
	buf[n] = '\0';
	close(fd);
	return (size_t)n;
}

static bool exists(const char *path)
{
	struct stat st;

	return lstat(path, &st) == 0;
}

static int count_files(const char *dir)
{
	char cmd[512];
	FILE *p;
	int n = -1;

	snprintf(cmd, sizeof(cmd), "ls -A '%s' | wc -l", dir);
	p = popen(cmd, "r");
	assert_non_null(p);
	assert_int_equal(fscanf(p, "%d", &n), 1);
	pclose(p);
	return n;
}

static int parse(const char *s, struct maildir_name *n)
{
	char err[256];

	return maildir_name_parse(s, strlen(s), n, err, sizeof(err));
}

static bool slice_eq(const char *p, size_t len, const char *s)
{
	return len == strlen(s) && memcmp(p, s, len) == 0;
}

/* ---- name.c ---- */

static void test_name_parse_full(void **state)
{
	struct maildir_name n;
	char unk[64];

	assert_int_equal(parse("1700000000.M123P456Q7.host,S=1234,W=1260:2,FRSa", &n), 1);
	assert_true(slice_eq(n.base, n.base_len, "1700000000.M123P456Q7.host"));
	assert_true(slice_eq(n.fields, n.fields_len, ",S=1234,W=1260"));
	assert_true(n.has_size);
	assert_int_equal(n.size, 1234);
	assert_true(n.has_vsize);
	assert_int_equal(n.vsize, 1260);
	assert_true(n.has_info);
	assert_int_equal(n.flags, MAILDIR_FLAG_FLAGGED | MAILDIR_FLAG_REPLIED | MAILDIR_FLAG_SEEN);
	assert_int_equal(n.keywords, 1);
	assert_false(n.has_unknown);
	assert_int_equal(maildir_name_unknown_flags(&n, unk, sizeof(unk)), 0);
	assert_string_equal(unk, "");
}

static void test_name_parse_variants(void **state)
{
	struct maildir_name n;
	char unk[64];

	/* mbsync adds ,U= */
	assert_int_equal(parse("123.abc.h,U=17:2,S", &n), 1);
	assert_true(slice_eq(n.base, n.base_len, "123.abc.h"));
	assert_true(slice_eq(n.fields, n.fields_len, ",U=17"));
	assert_false(n.has_size);
	assert_false(n.has_vsize);
	assert_int_equal(n.flags, MAILDIR_FLAG_SEEN);

	/* plain name, no fields, no info (new/) */
	assert_int_equal(parse("123.abc.h", &n), 1);
	assert_int_equal(n.base_len, 9);
	assert_int_equal(n.fields_len, 0);
	assert_false(n.has_info);
	assert_int_equal(n.flags, 0);

	/* all standard flags, all keywords, unknown flags */
	assert_int_equal(parse("b:2,TSRPFDzyxwvutsrqponmlkjihgfedcbaZ9E", &n), 1);
	assert_int_equal(n.flags, MAILDIR_FLAGS_ALL);
	assert_int_equal(n.keywords, MAILDIR_KEYWORDS_ALL);
	assert_true(n.has_unknown);
	assert_int_equal(maildir_name_unknown_flags(&n, unk, sizeof(unk)), 3);
	assert_string_equal(unk, "9EZ");
	assert_int_equal(maildir_name_unknown_flags(&n, unk, 3), -1);

	/* empty flag list */
	assert_int_equal(parse("b,S=0:2,", &n), 1);
	assert_true(n.has_info);
	assert_true(n.has_size);
	assert_int_equal(n.size, 0);
	assert_int_equal(n.flagstr_len, 0);

	/* other info kept as a slice */
	assert_int_equal(parse("b,S=5:1,experimental", &n), 1);
	assert_false(n.has_info);
	assert_true(slice_eq(n.other_info, n.other_info_len, "1,experimental"));
	assert_int_equal(parse("b:", &n), 1);
	assert_false(n.has_info);
	assert_int_equal(n.other_info_len, 0);

	/* unknown fields, odd fields and repeated S=: first counts */
	assert_int_equal(parse("b,X=y,,Z,S=3,S=4,W=9,Sx=1:2,S", &n), 1);
	assert_true(slice_eq(n.fields, n.fields_len, ",X=y,,Z,S=3,S=4,W=9,Sx=1"));
	assert_int_equal(n.size, 3);
	assert_int_equal(n.vsize, 9);

	/* largest size */
	assert_int_equal(parse("b,S=9223372036854775807", &n), 1);
	assert_int_equal(n.size, UINT64_C(9223372036854775807));

	/* ':' and ',' after ":2," are flag characters */
	assert_int_equal(parse("b:2,S:,", &n), 1);
	assert_int_equal(n.flags, MAILDIR_FLAG_SEEN);
	assert_true(n.has_unknown);
	assert_int_equal(maildir_name_unknown_flags(&n, unk, sizeof(unk)), 2);
	assert_string_equal(unk, ",:");
}

static void test_name_parse_malformed(void **state)
{
	struct maildir_name n;
	char err[256], longname[300];

	assert_int_equal(maildir_name_parse("", 0, &n, err, sizeof(err)), -1);
	assert_string_equal(err, "empty file name");
	assert_int_equal(parse(".hidden", &n), -1);
	assert_int_equal(parse(".", &n), -1);
	assert_int_equal(parse("..", &n), -1);
	assert_int_equal(parse(",S=1", &n), -1);
	assert_int_equal(parse(":2,S", &n), -1);
	assert_int_equal(parse("a/b", &n), -1);
	assert_int_equal(maildir_name_parse("a\0b", 3, &n, err, sizeof(err)), -1);
	assert_int_equal(maildir_name_parse("b,S=abc", 7, &n, err, sizeof(err)), -1);
	assert_string_equal(err, "bad S= size in file name");
	assert_int_equal(parse("b,S=", &n), -1);
	assert_int_equal(parse("b,S=-1", &n), -1);
	assert_int_equal(parse("b,S=+1", &n), -1);
	assert_int_equal(parse("b,S=1x:2,S", &n), -1);
	assert_int_equal(parse("b,S= 1", &n), -1);
	assert_int_equal(parse("b,S=9223372036854775808", &n), -1);
	assert_int_equal(parse("b,S=99999999999999999999999", &n), -1);
	assert_int_equal(maildir_name_parse("b,W=x", 5, &n, err, sizeof(err)), -1);
	assert_string_equal(err, "bad W= size in file name");

	memset(longname, 'a', sizeof(longname));
	assert_int_equal(maildir_name_parse(longname, 255, &n, err, sizeof(err)), 1);
	assert_int_equal(maildir_name_parse(longname, 256, &n, err, sizeof(err)), -1);
	/* err may be NULL */
	assert_int_equal(maildir_name_parse("", 0, &n, NULL, 0), -1);
}

static void test_name_with_flags(void **state)
{
	struct maildir_name n;
	char buf[MAILDIR_NAME_BUFSIZE], err[256];

	assert_int_equal(parse("base,S=1,U=7,X=y:2,SZa9", &n), 1);
	assert_true(maildir_name_with_flags(buf, sizeof(buf), &n,
					    MAILDIR_FLAG_FLAGGED | MAILDIR_FLAG_SEEN, 1u << 1, err,
					    sizeof(err)) > 0);
	assert_string_equal(buf, "base,S=1,U=7,X=y:2,9FSZb");

	/* no info yet: gets ":2," */
	assert_int_equal(parse("base,S=1", &n), 1);
	assert_true(maildir_name_with_flags(buf, sizeof(buf), &n, MAILDIR_FLAGS_ALL,
					    (1u << 25) | 1u, err, sizeof(err)) > 0);
	assert_string_equal(buf, "base,S=1:2,DFPRSTaz");

	/* other info replaced */
	assert_int_equal(parse("base:1,foo", &n), 1);
	assert_true(maildir_name_with_flags(buf, sizeof(buf), &n, 0, 0, err, sizeof(err)) > 0);
	assert_string_equal(buf, "base:2,");

	/* clearing flags keeps unknown ones */
	assert_int_equal(parse("base:2,DSx!", &n), 1);
	assert_true(maildir_name_with_flags(buf, sizeof(buf), &n, 0, 0, err, sizeof(err)) > 0);
	assert_string_equal(buf, "base:2,!");

	/* too small buffer */
	assert_int_equal(maildir_name_with_flags(buf, 6, &n, 0, 0, err, sizeof(err)), -1);

	/* at the limit: 252 + ":2," = 255 ok, one flag more is too long */
	{
		char name[300];

		memset(name, 'b', 252);
		name[252] = '\0';
		assert_int_equal(parse(name, &n), 1);
		assert_int_equal(maildir_name_with_flags(buf, sizeof(buf), &n, 0, 0, err, sizeof(err)),
				 255);
		assert_int_equal(maildir_name_with_flags(buf, sizeof(buf), &n, MAILDIR_FLAG_SEEN, 0,
							 err, sizeof(err)),
				 -1);
	}
}

static void test_name_new_base_build(void **state)
{
	char buf[MAILDIR_NAME_BUFSIZE], err[256], host[300];
	struct maildir_name n;

	assert_true(maildir_name_new_base(buf, sizeof(buf), 1700000000, 123456, 4242, 7,
					  "mail.example.org", err, sizeof(err)) > 0);
	assert_string_equal(buf, "1700000000.M123456P4242Q7.mail.example.org");
	assert_true(maildir_name_new_base(buf, sizeof(buf), 1, 2, 3, 4, "a/b:c,d", err,
					  sizeof(err)) > 0);
	assert_string_equal(buf, "1.M2P3Q4.a\\057b\\072c\\054d");
	assert_int_equal(parse(buf, &n), 1);
	assert_int_equal(n.base_len, strlen(buf));

	assert_int_equal(maildir_name_new_base(buf, sizeof(buf), 1, 2, 3, 4, "", err, sizeof(err)),
			 -1);
	assert_int_equal(maildir_name_new_base(buf, sizeof(buf), -1, 2, 3, 4, "h", err, sizeof(err)),
			 -1);
	memset(host, 'h', 250);
	host[250] = '\0';
	assert_int_equal(maildir_name_new_base(buf, sizeof(buf), 1, 2, 3, 4, host, err, sizeof(err)),
			 -1);
	assert_int_equal(maildir_name_new_base(buf, 10, 1, 2, 3, 4, "host", err, sizeof(err)), -1);

	assert_true(maildir_name_build(buf, sizeof(buf), "B", 10, 12, false, MAILDIR_FLAG_SEEN, 0,
				       err, sizeof(err)) > 0);
	assert_string_equal(buf, "B,S=10,W=12");
	assert_true(maildir_name_build(buf, sizeof(buf), "B", 10, 10, true,
				       MAILDIR_FLAG_SEEN | MAILDIR_FLAG_DRAFT, 1u << 2, err,
				       sizeof(err)) > 0);
	assert_string_equal(buf, "B,S=10,W=10:2,DSc");

	assert_int_equal(maildir_flags_format(buf, sizeof(buf), MAILDIR_FLAG_TRASHED, 1, "Zz!a"), 5);
	assert_string_equal(buf, "!TZaz");
	assert_int_equal(maildir_flags_format(buf, 2, MAILDIR_FLAG_TRASHED, 1, NULL), -1);
}

static void test_name_roundtrip(void **state)
{
	static const char *const names[] = {
		"1.M2P3Q4.h,S=10,W=12:2,S",
		"1.M2P3Q4.h",
		"a,U=1:2,zyxSDx",
		"a,X=,S=0:2,Z:,",
		"a:1,x",
		"a:2,",
		"a,,,",
	};
	size_t i;

	for (i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		struct maildir_name a, b;
		char f1[MAILDIR_NAME_BUFSIZE], f2[MAILDIR_NAME_BUFSIZE], u1[300], u2[300];

		assert_int_equal(parse(names[i], &a), 1);
		assert_true(maildir_name_with_flags(f1, sizeof(f1), &a, a.flags, a.keywords, NULL,
						    0) > 0);
		assert_int_equal(parse(f1, &b), 1);
		assert_int_equal(a.base_len, b.base_len);
		assert_memory_equal(a.base, b.base, a.base_len);
		assert_int_equal(a.fields_len, b.fields_len);
		assert_memory_equal(a.fields, b.fields, a.fields_len);
		assert_int_equal(a.flags, b.flags);
		assert_int_equal(a.keywords, b.keywords);
		assert_true(maildir_name_unknown_flags(&a, u1, sizeof(u1)) >= 0);
		assert_true(maildir_name_unknown_flags(&b, u2, sizeof(u2)) >= 0);
		assert_string_equal(u1, u2);
		assert_true(maildir_name_with_flags(f2, sizeof(f2), &b, b.flags, b.keywords, NULL,
						    0) > 0);
		assert_string_equal(f1, f2);
	}
}

/* ---- keywords.c ---- */

static void test_keywords_roundtrip(void **state)
{
	struct fixture *f = *state;
	struct maildir_keywords kw, kw2;
	char err[256];
	bool added;

	maildir_keywords_init(&kw);
	maildir_keywords_init(&kw2);
	assert_int_equal(maildir_keywords_read(&kw, f->root, err, sizeof(err)), 0);
	assert_int_equal(maildir_keywords_assign(&kw, "$Forwarded", &added, err, sizeof(err)), 'a');
	assert_true(added);
	assert_int_equal(maildir_keywords_assign(&kw, "Work", &added, err, sizeof(err)), 'b');
	assert_int_equal(maildir_keywords_assign(&kw, "$forwarded", &added, err, sizeof(err)), 'a');
	assert_false(added);
	assert_int_equal(maildir_keywords_lookup(&kw, "WORK"), 'b');
	assert_int_equal(maildir_keywords_lookup(&kw, "nope"), 0);
	assert_string_equal(maildir_keywords_name(&kw, 'b'), "Work");
	assert_null(maildir_keywords_name(&kw, 'c'));
	assert_null(maildir_keywords_name(&kw, 'A'));
	assert_int_equal(maildir_keywords_assign(&kw, "bad keyword", &added, err, sizeof(err)), -1);
	assert_int_equal(maildir_keywords_assign(&kw, "", NULL, err, sizeof(err)), -1);
	assert_int_equal(maildir_keywords_assign(&kw, "a(b", NULL, err, sizeof(err)), -1);
	assert_int_equal(maildir_keywords_assign(&kw, "\\Seen", NULL, err, sizeof(err)), -1);

	assert_int_equal(maildir_keywords_write(&kw, f->root, err, sizeof(err)), 1);
	assert_int_equal(maildir_keywords_read(&kw2, f->root, err, sizeof(err)), 2);
	assert_string_equal(maildir_keywords_name(&kw2, 'a'), "$Forwarded");
	assert_string_equal(maildir_keywords_name(&kw2, 'b'), "Work");
	{
		char path[256], buf[256];

		read_all(pathf(path, sizeof(path), "%s/dovecot-keywords", f->root), buf, sizeof(buf));
		assert_string_equal(buf, "0 $Forwarded\n1 Work\n");
		assert_false(exists(pathf(path, sizeof(path), "%s/dovecot-keywords.tmp", f->root)));
	}
	maildir_keywords_clear(&kw);
	maildir_keywords_clear(&kw2);
}

static void test_keywords_junk(void **state)
{
	struct fixture *f = *state;
	struct maildir_keywords kw;
	char path[256], err[256];
	bool added;

	write_file(pathf(path, sizeof(path), "%s/dovecot-keywords", f->root),
		   "junk line\n"
		   "\n"
		   "x foo\n"
		   "26 toolarge\n"
		   "999999999999999999999 overflow\n"
		   "3\n"
		   "3 \n"
		   "2 ok\n"
		   "2 dupindex\n"
		   "4 OK\n"
		   "5 bad keyword\n"
		   "6 crlf\r\n"
		   " 7 lead\n"
		   "7  twospaces\n"
		   "25 last");
	maildir_keywords_init(&kw);
	assert_int_equal(maildir_keywords_read(&kw, f->root, err, sizeof(err)), 4);
	assert_string_equal(maildir_keywords_name(&kw, 'c'), "ok");
	/* duplicate name keeps its slot, lookups return the first */
	assert_string_equal(maildir_keywords_name(&kw, 'e'), "OK");
	assert_int_equal(maildir_keywords_lookup(&kw, "Ok"), 'c');
	assert_string_equal(maildir_keywords_name(&kw, 'g'), "crlf");
	assert_string_equal(maildir_keywords_name(&kw, 'z'), "last");
	assert_null(maildir_keywords_name(&kw, 'd'));
	assert_null(maildir_keywords_name(&kw, 'f'));
	assert_null(maildir_keywords_name(&kw, 'h'));
	/* first free slot */
	assert_int_equal(maildir_keywords_assign(&kw, "new1", &added, err, sizeof(err)), 'a');
	assert_int_equal(maildir_keywords_assign(&kw, "new2", &added, err, sizeof(err)), 'b');
	assert_int_equal(maildir_keywords_assign(&kw, "new3", &added, err, sizeof(err)), 'd');
	maildir_keywords_clear(&kw);
}

static void test_keywords_full(void **state)
{
	struct fixture *f = *state;
	struct maildir_keywords kw;
	char err[256], name[32];
	bool added = true;
	int i;

	maildir_keywords_init(&kw);
	for (i = 0; i < 26; i++) {
		snprintf(name, sizeof(name), "kw%d", i);
		assert_int_equal(maildir_keywords_assign(&kw, name, &added, err, sizeof(err)), 'a' + i);
	}
	assert_int_equal(maildir_keywords_assign(&kw, "one-more", &added, err, sizeof(err)),
			 MAILDIR_KEYWORDS_FULL);
	assert_false(added);
	assert_string_equal(err, "keyword table full (26 keywords)");
	/* an existing one still resolves */
	assert_int_equal(maildir_keywords_assign(&kw, "KW25", &added, err, sizeof(err)), 'z');
	assert_int_equal(maildir_keywords_write(&kw, f->root, err, sizeof(err)), 1);
	maildir_keywords_clear(&kw);
	assert_int_equal(maildir_keywords_read(&kw, f->root, err, sizeof(err)), 26);
	assert_string_equal(maildir_keywords_name(&kw, 'z'), "kw25");
	maildir_keywords_clear(&kw);
	/* unreadable directory reports an error */
	assert_int_equal(maildir_keywords_write(&kw, "/nonexistent/dir", err, sizeof(err)), -1);
}

/* ---- folder.c ---- */

static void test_folder_names(void **state)
{
	static const struct {
		const char *name, *dir;
	} cases[] = {
		{ "Sent", ".Sent" },
		{ "Lists/mox", ".Lists.mox" },
		{ "a.b", ".a~2eb" },
		{ "a~b", ".a~7eb" },
		{ "~", ".~7e" },
		{ "~2e", ".~7e2e" },
		{ ".hidden", ".~2ehidden" },
		{ "...", ".~2e~2e~2e" },
		{ "a./.b", ".a~2e.~2eb" },
		{ "&AOQ-", ".&AOQ-" },
		{ "Tr&AOQ-ume", ".Tr&AOQ-ume" },
		{ "*", ".*" },
		{ "%", ".%" },
		{ "a*b%c", ".a*b%c" },
		{ "#news/comp", ".#news.comp" },
		{ "with space", ".with space" },
		{ " lead and trail ", ". lead and trail " },
		{ "Grüße/日本語", ".Grüße.日本語" },
		{ "emoji 📬", ".emoji 📬" },
		{ "tab\there", ".tab~09here" },
		{ "nl\nx", ".nl~0ax" },
		{ "del\x7f", ".del~7f" },
		{ "\x01", ".~01" },
		{ "INBOX/sub", ".INBOX.sub" },
		{ "inbox/Sub", ".inbox.Sub" },
		{ "INBOXES", ".INBOXES" },
		{ "back\\slash\"quote", ".back\\slash\"quote" },
		{ "a/b/c/d", ".a.b.c.d" },
	};
	char dir[MAILDIR_NAME_BUFSIZE], name[MAILDIR_NAME_BUFSIZE], err[256];
	size_t i;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		assert_int_equal(maildir_folder_encode(cases[i].name, dir, sizeof(dir), err,
						       sizeof(err)),
				 1);
		assert_string_equal(dir, cases[i].dir);
		assert_int_equal(maildir_folder_decode(dir, name, sizeof(name), err, sizeof(err)), 1);
		assert_string_equal(name, cases[i].name);
	}
	assert_int_equal(maildir_folder_encode("INBOX", dir, sizeof(dir), err, sizeof(err)), 1);
	assert_string_equal(dir, "");
	assert_int_equal(maildir_folder_encode("iNbOx", dir, sizeof(dir), err, sizeof(err)), 1);
	assert_string_equal(dir, "");
	assert_int_equal(maildir_folder_decode("", name, sizeof(name), err, sizeof(err)), 1);
	assert_string_equal(name, "INBOX");
}

static void test_folder_names_rejected(void **state)
{
	static const char *const bad_names[] = {
		"", "/", "a//b", "/a", "a/", "//", "\xff", "a\xc3", "\xc0\xaf", "\xed\xa0\x80",
	};
	static const char *const bad_dirs[] = {
		".", "..", "x", "Sent", ".a..b", ".a.", "..a", ".~2E", ".~41", ".~00", ".~2",
		".a~", ".~zz", ".INBOX", ".inbox", ".\xff", ".a\x01", ".~2f", ".a~7E",
	};
	char dir[MAILDIR_NAME_BUFSIZE], name[MAILDIR_NAME_BUFSIZE], err[256], longname[400];
	size_t i;

	for (i = 0; i < sizeof(bad_names) / sizeof(bad_names[0]); i++)
		assert_int_equal(maildir_folder_encode(bad_names[i], dir, sizeof(dir), err,
						       sizeof(err)),
				 -1);
	assert_int_equal(maildir_folder_encode("a//b", dir, sizeof(dir), err, sizeof(err)), -1);
	assert_string_equal(err, "mailbox name has an empty level");
	for (i = 0; i < sizeof(bad_dirs) / sizeof(bad_dirs[0]); i++)
		assert_int_equal(maildir_folder_decode(bad_dirs[i], name, sizeof(name), err,
						       sizeof(err)),
				 -1);

	/* length: 254 characters fit (".": 255), 255 do not; escapes count 3 */
	memset(longname, 'x', sizeof(longname));
	longname[254] = '\0';
	assert_int_equal(maildir_folder_encode(longname, dir, sizeof(dir), err, sizeof(err)), 1);
	longname[254] = 'x';
	longname[255] = '\0';
	assert_int_equal(maildir_folder_encode(longname, dir, sizeof(dir), err, sizeof(err)), -1);
	memset(longname, '.', 90);
	longname[90] = '\0';
	assert_int_equal(maildir_folder_encode(longname, dir, sizeof(dir), err, sizeof(err)), -1);
	/* small output buffers */
	assert_int_equal(maildir_folder_encode("Sent", dir, 4, err, sizeof(err)), -1);
	assert_int_equal(maildir_folder_decode(".Sent", name, 4, err, sizeof(err)), -1);
	assert_int_equal(maildir_folder_decode("", name, 5, err, sizeof(err)), -1);
}

static void test_folder_ops(void **state)
{
	struct fixture *f = *state;
	struct maildir_folder_list list;
	char p[512], err[256];

	assert_int_equal(maildir_folder_create(f->root, "", err, sizeof(err)), 1);
	assert_int_equal(maildir_folder_create(f->root, "", err, sizeof(err)), 0);
	assert_false(exists(pathf(p, sizeof(p), "%s/maildirfolder", f->root)));
	assert_int_equal(maildir_folder_create(f->root, ".Sent", err, sizeof(err)), 1);
	assert_int_equal(maildir_folder_create(f->root, ".Sent", err, sizeof(err)), 0);
	assert_true(exists(pathf(p, sizeof(p), "%s/.Sent/maildirfolder", f->root)));
	assert_true(exists(pathf(p, sizeof(p), "%s/.Sent/tmp", f->root)));
	assert_int_equal(maildir_folder_create(f->root, ".Lists.mox", err, sizeof(err)), 1);
	assert_int_equal(maildir_folder_create(f->root, ".~bad", err, sizeof(err)), 1);
	assert_int_equal(maildir_folder_create(f->root, "..x", err, sizeof(err)), -1);
	assert_int_equal(maildir_folder_create(f->root, "a/b", err, sizeof(err)), -1);
	assert_int_equal(maildir_folder_create(f->root, "Sent", err, sizeof(err)), -1);
	/* partial folder gets completed */
	assert_int_equal(mkdir(pathf(p, sizeof(p), "%s/.Partial", f->root), 0700), 0);
	assert_int_equal(maildir_folder_create(f->root, ".Partial", err, sizeof(err)), 1);

	/* things the listing must ignore */
	write_file(pathf(p, sizeof(p), "%s/.dotfile", f->root), "x");
	assert_int_equal(mkdir(pathf(p, sizeof(p), "%s/.notfolder", f->root), 0700), 0);
	assert_int_equal(mkdir(pathf(p, sizeof(p), "%s/plain", f->root), 0700), 0);
	assert_int_equal(maildir_folder_create(f->root, ".Trash", err, sizeof(err)), 1);
	assert_int_equal(rename(pathf(p, sizeof(p), "%s/.Trash", f->root),
				pathf(p + 256, 256, "%s/..deleted.1", f->root)),
			 0);

	assert_int_equal(maildir_folder_list(f->root, &list, err, sizeof(err)), 4);
	assert_string_equal(list.entries[0].dirname, ".Lists.mox");
	assert_string_equal(list.entries[0].name, "Lists/mox");
	assert_string_equal(list.entries[1].dirname, ".Partial");
	assert_string_equal(list.entries[2].dirname, ".Sent");
	assert_string_equal(list.entries[2].name, "Sent");
	assert_string_equal(list.entries[3].dirname, ".~bad");
	assert_null(list.entries[3].name);
	maildir_folder_list_clear(&list);

	/* rename */
	assert_int_equal(maildir_folder_rename(f->root, ".Sent", ".Sent2", err, sizeof(err)), 1);
	assert_true(exists(pathf(p, sizeof(p), "%s/.Sent2/cur", f->root)));
	assert_int_equal(maildir_folder_rename(f->root, ".Sent", ".Sent3", err, sizeof(err)), 0);
	assert_int_equal(maildir_folder_rename(f->root, ".Sent2", ".Partial", err, sizeof(err)), -1);
	assert_true(exists(pathf(p, sizeof(p), "%s/.Sent2/cur", f->root)));
	assert_int_equal(maildir_folder_rename(f->root, ".Sent2", "..x", err, sizeof(err)), -1);

	/* delete with content */
	write_file(pathf(p, sizeof(p), "%s/.Sent2/cur/1.M1P1Q1.h,S=1:2,S", f->root), "x");
	write_file(pathf(p, sizeof(p), "%s/.Sent2/new/2.M1P1Q1.h,S=1", f->root), "x");
	assert_int_equal(mkdir(pathf(p, sizeof(p), "%s/.Sent2/tmp/sub", f->root), 0700), 0);
	write_file(pathf(p, sizeof(p), "%s/.Sent2/tmp/sub/f", f->root), "x");
	assert_int_equal(maildir_folder_delete(f->root, ".Sent2", err, sizeof(err)), 1);
	assert_false(exists(pathf(p, sizeof(p), "%s/.Sent2", f->root)));
	assert_int_equal(maildir_folder_delete(f->root, ".Sent2", err, sizeof(err)), 0);
	assert_int_equal(maildir_folder_delete(f->root, "", err, sizeof(err)), -1);
	assert_int_equal(maildir_folder_delete(f->root, "..deleted.1", err, sizeof(err)), -1);

	assert_int_equal(maildir_folder_list(f->root, &list, err, sizeof(err)), 3);
	maildir_folder_list_clear(&list);
	assert_int_equal(maildir_folder_list("/nonexistent/x", &list, err, sizeof(err)), -1);
}

/* ---- deliver.c ---- */

static const char sample_msg[] = "Subject: hi\nX: a\r\n\r\nline1\rline2\r\r\nend\r\n\n\r";
static const char sample_norm[] = "Subject: hi\r\nX: a\r\n\r\nline1\r\nline2\r\n\r\nend\r\n\r\n\r\n";

/* Write msg in chunks of chunk bytes (0: all at once) into root/tmp. */
static struct maildir_writer *deliver_chunks(const char *root, const char *msg, size_t len,
					     size_t chunk, bool raw)
{
	struct maildir_writer *w = NULL;
	char tmp[512], err[256];
	size_t off;

	pathf(tmp, sizeof(tmp), "%s/tmp", root);
	assert_int_equal(maildir_writer_open(&w, tmp, "host.example", err, sizeof(err)), 1);
	maildir_writer_set_raw(w, raw);
	if (chunk == 0)
		chunk = len ? len : 1;
	for (off = 0; off < len; off += chunk) {
		size_t n = len - off < chunk ? len - off : chunk;

		assert_int_equal(maildir_writer_write(w, msg + off, n, err, sizeof(err)), 1);
	}
	assert_int_equal(maildir_writer_finish(w, MAILDIR_FINISH_NOSYNC, err, sizeof(err)), 1);
	return w;
}

static void test_deliver_normalize(void **state)
{
	struct fixture *f = *state;
	char err[256], buf[4096];
	size_t chunk;

	assert_int_equal(maildir_folder_create(f->root, "", err, sizeof(err)), 1);
	for (chunk = 0; chunk <= 7; chunk++) {
		struct maildir_writer *w = deliver_chunks(f->root, sample_msg, strlen(sample_msg),
							  chunk, false);

		assert_int_equal(read_all(maildir_writer_path(w), buf, sizeof(buf)),
				 strlen(sample_norm));
		assert_string_equal(buf, sample_norm);
		assert_int_equal(maildir_writer_size(w), strlen(sample_norm));
		assert_int_equal(maildir_writer_vsize(w), strlen(sample_norm));
		maildir_writer_free(&w);
		assert_null(w);
	}
	/* CR at the end of one chunk, LF at the start of the next: one CRLF */
	{
		struct maildir_writer *w;
		char tmp[512];

		pathf(tmp, sizeof(tmp), "%s/tmp", f->root);
		assert_int_equal(maildir_writer_open(&w, tmp, "h", err, sizeof(err)), 1);
		assert_int_equal(maildir_writer_write(w, "a\r", 2, err, sizeof(err)), 1);
		assert_int_equal(maildir_writer_write(w, "", 0, err, sizeof(err)), 1);
		assert_int_equal(maildir_writer_write(w, "\nb\r", 3, err, sizeof(err)), 1);
		assert_int_equal(maildir_writer_write(w, "c", 1, err, sizeof(err)), 1);
		assert_int_equal(maildir_writer_finish(w, 0, err, sizeof(err)), 1);
		read_all(maildir_writer_path(w), buf, sizeof(buf));
		assert_string_equal(buf, "a\r\nb\r\nc");
		assert_int_equal(maildir_writer_size(w), 7);
		/* no writes after finish */
		assert_int_equal(maildir_writer_write(w, "x", 1, err, sizeof(err)), -1);
		assert_int_equal(maildir_writer_finish(w, 0, err, sizeof(err)), -1);
		maildir_writer_free(&w);
	}
	/* raw: unchanged bytes, W= counts bare LFs */
	{
		struct maildir_writer *w = deliver_chunks(f->root, "a\nb\r\nc\r", 7, 1, true);

		read_all(maildir_writer_path(w), buf, sizeof(buf));
		assert_string_equal(buf, "a\nb\r\nc\r");
		assert_int_equal(maildir_writer_size(w), 7);
		assert_int_equal(maildir_writer_vsize(w), 8);
		maildir_writer_free(&w);
	}
	/* big message crossing the write buffer */
	{
		size_t len = 300000, i;
		char *big = malloc(len);
		struct maildir_writer *w;
		struct stat st;

		for (i = 0; i < len; i++)
			big[i] = i % 50 == 49 ? '\n' : 'x';
		w = deliver_chunks(f->root, big, len, 4093, false);
		assert_int_equal(stat(maildir_writer_path(w), &st), 0);
		assert_int_equal((uint64_t)st.st_size, maildir_writer_size(w));
		assert_int_equal(maildir_writer_size(w), len + len / 50);
		maildir_writer_free(&w);
		free(big);
	}
	pathf(buf, sizeof(buf), "%s/tmp", f->root);
	assert_int_equal(count_files(buf), 0);
}

static void check_size(const char *folder, const char *sub, const char *name)
{
	char p[1024];
	struct stat st;
	struct maildir_name n;

	assert_int_equal(stat(pathf(p, sizeof(p), "%s/%s/%s", folder, sub, name), &st), 0);
	assert_int_equal(parse(name, &n), 1);
	assert_true(n.has_size);
	assert_int_equal(n.size, (uint64_t)st.st_size);
	assert_true(n.has_vsize);
	assert_int_equal(n.vsize, n.size);
}

static void test_deliver_link(void **state)
{
	struct fixture *f = *state;
	struct maildir_writer *w;
	char err[256], p[1024], name1[MAILDIR_NAME_BUFSIZE], name2[MAILDIR_NAME_BUFSIZE];
	char name3[MAILDIR_NAME_BUFSIZE], sent[512], buf[4096];
	struct stat st1, st2;

	assert_int_equal(maildir_folder_create(f->root, "", err, sizeof(err)), 1);
	assert_int_equal(maildir_folder_create(f->root, ".Sent", err, sizeof(err)), 1);
	pathf(sent, sizeof(sent), "%s/.Sent", f->root);
	w = deliver_chunks(f->root, sample_msg, strlen(sample_msg), 0, false);
	assert_int_equal(maildir_syncfs(f->root, err, sizeof(err)), 1);

	/* not into the same folder twice */
	assert_int_equal(maildir_writer_link(w, f->root, MAILDIR_NEW, 0, 0, 0, name1, sizeof(name1),
					     err, sizeof(err)),
			 1);
	assert_int_equal(maildir_writer_link(w, f->root, MAILDIR_NEW, 0, 0, 0, name2, sizeof(name2),
					     err, sizeof(err)),
			 -1);
	assert_int_equal(maildir_writer_link(w, sent, MAILDIR_CUR,
					     MAILDIR_FLAG_SEEN, 1u << 3, 0, name2, sizeof(name2),
					     err, sizeof(err)),
			 1);
	assert_int_equal(maildir_fsync_dir(pathf(p, sizeof(p), "%s/new", f->root), err, sizeof(err)),
			 1);
	assert_int_equal(maildir_fsync_dir(pathf(p, sizeof(p), "%s/cur", sent), err, sizeof(err)), 1);

	assert_true(strncmp(name1, maildir_writer_base(w), strlen(maildir_writer_base(w))) == 0);
	assert_null(strchr(name1, ':'));
	assert_non_null(strstr(name2, ":2,Sd"));
	check_size(f->root, "new", name1);
	check_size(sent, "cur", name2);
	stat(pathf(p, sizeof(p), "%s/new/%s", f->root, name1), &st1);
	stat(pathf(p, sizeof(p), "%s/cur/%s", sent, name2), &st2);
	assert_int_equal(st1.st_ino, st2.st_ino);
	assert_int_equal(st1.st_mode & 0777, 0600);

	/* forced copy */
	assert_int_equal(maildir_folder_create(f->root, ".Copy", err, sizeof(err)), 1);
	assert_int_equal(maildir_writer_link(w, pathf(p, sizeof(p), "%s/.Copy", f->root),
					     MAILDIR_CUR, 0, 0, MAILDIR_LINK_FORCE_COPY, name3,
					     sizeof(name3), err, sizeof(err)),
			 2);
	assert_true(strstr(name3, ":2,") != NULL);
	check_size(p, "cur", name3);
	stat(pathf(buf, sizeof(buf), "%s/cur/%s", p, name3), &st2);
	assert_int_not_equal(st1.st_ino, st2.st_ino);
	read_all(buf, buf, sizeof(buf));
	assert_string_equal(buf, sample_norm);

	/* copy error: target name exists */
	assert_int_equal(maildir_writer_link(w, p, MAILDIR_CUR, 0, 0, MAILDIR_LINK_FORCE_COPY, NULL,
					     0, err, sizeof(err)),
			 -1);
	/* name buffer too small */
	assert_int_equal(maildir_writer_link(w, p, MAILDIR_NEW, 0, 0, 0, name3, 10, err,
					     sizeof(err)),
			 -1);

	/* remove after commit: tmp gone, links stay */
	assert_int_equal(maildir_writer_remove(w, err, sizeof(err)), 1);
	assert_int_equal(maildir_writer_remove(w, err, sizeof(err)), 0);
	assert_int_equal(maildir_writer_link(w, p, MAILDIR_NEW, 0, 0, 0, NULL, 0, err, sizeof(err)),
			 -1);
	maildir_writer_free(&w);
	assert_int_equal(count_files(pathf(p, sizeof(p), "%s/tmp", f->root)), 0);
	assert_true(exists(pathf(p, sizeof(p), "%s/new/%s", f->root, name1)));
	assert_true(exists(pathf(p, sizeof(p), "%s/cur/%s", sent, name2)));

	/* not finished: link refused */
	assert_int_equal(maildir_writer_open(&w, pathf(p, sizeof(p), "%s/tmp", f->root), "h", err,
					     sizeof(err)),
			 1);
	assert_int_equal(maildir_writer_link(w, f->root, MAILDIR_NEW, 0, 0, 0, NULL, 0, err,
					     sizeof(err)),
			 -1);
	maildir_writer_free(&w);
	maildir_writer_free(&w);
	maildir_writer_free(NULL);

	/* errors */
	assert_int_equal(maildir_writer_open(&w, "/nonexistent/tmp", "h", err, sizeof(err)), -1);
	assert_null(w);
	assert_int_equal(maildir_fsync_dir("/nonexistent", err, sizeof(err)), -1);
	assert_int_equal(maildir_syncfs("/nonexistent", err, sizeof(err)), -1);
}

static void test_deliver_abort(void **state)
{
	struct fixture *f = *state;
	struct maildir_writer *w;
	char err[256], tmp[512];

	assert_int_equal(maildir_folder_create(f->root, "", err, sizeof(err)), 1);
	pathf(tmp, sizeof(tmp), "%s/tmp", f->root);
	assert_int_equal(maildir_writer_open(&w, tmp, "h", err, sizeof(err)), 1);
	assert_int_equal(maildir_writer_write(w, "partial", 7, err, sizeof(err)), 1);
	assert_int_equal(count_files(tmp), 1);
	maildir_writer_free(&w);
	assert_int_equal(count_files(tmp), 0);

	/* finished but never linked */
	w = deliver_chunks(f->root, "x\n", 2, 0, false);
	assert_int_equal(count_files(tmp), 1);
	maildir_writer_free(&w);
	assert_int_equal(count_files(tmp), 0);

	/* unique names in a tight loop */
	{
		struct maildir_writer *ws[50];
		int i;

		for (i = 0; i < 50; i++)
			assert_int_equal(maildir_writer_open(&ws[i], tmp, "h", err, sizeof(err)), 1);
		assert_int_equal(count_files(tmp), 50);
		for (i = 0; i < 50; i++)
			maildir_writer_free(&ws[i]);
		assert_int_equal(count_files(tmp), 0);
	}
}

static void test_flags_rename(void **state)
{
	struct fixture *f = *state;
	struct maildir_writer *w;
	char err[256], p[1024], p2[1024], name[MAILDIR_NAME_BUFSIZE], now[MAILDIR_NAME_BUFSIZE];
	char ext[MAILDIR_NAME_BUFSIZE], buf[256];
	enum maildir_subdir sub;
	int fd;

	assert_int_equal(maildir_folder_create(f->root, "", err, sizeof(err)), 1);
	w = deliver_chunks(f->root, "hello\n", 6, 0, false);
	assert_int_equal(maildir_writer_link(w, f->root, MAILDIR_NEW, 0, 0, 0, name, sizeof(name),
					     err, sizeof(err)),
			 1);
	maildir_writer_free(&w);

	assert_int_equal(maildir_msg_find(f->root, name, &sub, now, sizeof(now), err, sizeof(err)),
			 1);
	assert_int_equal(sub, MAILDIR_NEW);
	assert_string_equal(now, name);

	/* first flag change moves new/ -> cur/ */
	assert_int_equal(maildir_msg_set_flags(f->root, name, MAILDIR_FLAG_SEEN, 0, now, sizeof(now),
					       err, sizeof(err)),
			 1);
	assert_non_null(strstr(now, ":2,S"));
	assert_true(exists(pathf(p, sizeof(p), "%s/cur/%s", f->root, now)));
	assert_false(exists(pathf(p, sizeof(p), "%s/new/%s", f->root, name)));
	/* same flags: no-op */
	assert_int_equal(maildir_msg_set_flags(f->root, now, MAILDIR_FLAG_SEEN, 0, now, sizeof(now),
					       err, sizeof(err)),
			 1);

	/* another tool renames it, adding ,U= and an unknown flag */
	{
		struct maildir_name n;

		assert_int_equal(parse(now, &n), 1);
		snprintf(ext, sizeof(ext), "%.*s%.*s,U=9:2,SZ", (int)n.base_len, n.base,
			 (int)n.fields_len, n.fields);
	}
	assert_int_equal(rename(pathf(p, sizeof(p), "%s/cur/%s", f->root, now),
				pathf(p2, sizeof(p2), "%s/cur/%s", f->root, ext)),
			 0);
	/* open by the old (new/) name still works */
	assert_int_equal(maildir_msg_open(f->root, name, &fd, &sub, buf, sizeof(buf), err,
					  sizeof(err)),
			 1);
	assert_int_equal(sub, MAILDIR_CUR);
	assert_string_equal(buf, ext);
	{
		char data[64];
		ssize_t n = read(fd, data, sizeof(data));

		assert_int_equal(n, 7);
		assert_memory_equal(data, "hello\r\n", 7);
		close(fd);
	}
	/* set flags by the stale name: keeps U= and Z */
	assert_int_equal(maildir_msg_set_flags(f->root, now, MAILDIR_FLAG_FLAGGED | MAILDIR_FLAG_SEEN,
					       1u, now, sizeof(now), err, sizeof(err)),
			 1);
	assert_non_null(strstr(now, ",U=9:2,FSZa"));
	check_size(f->root, "cur", now);
	assert_int_equal(count_files(pathf(p, sizeof(p), "%s/cur", f->root)), 1);

	/* a file moved back to new/ by some tool is found there too */
	assert_int_equal(rename(pathf(p, sizeof(p), "%s/cur/%s", f->root, now),
				pathf(p2, sizeof(p2), "%s/new/%s", f->root, now)),
			 0);
	assert_int_equal(maildir_msg_find(f->root, name, &sub, buf, sizeof(buf), err, sizeof(err)),
			 1);
	assert_int_equal(sub, MAILDIR_NEW);
	assert_int_equal(maildir_msg_set_flags(f->root, name, 0, 0, now, sizeof(now), err,
					       sizeof(err)),
			 1);
	assert_non_null(strstr(now, ",U=9:2,Z"));
	assert_int_equal(count_files(pathf(p, sizeof(p), "%s/new", f->root)), 0);

	/* gone */
	unlink(pathf(p, sizeof(p), "%s/cur/%s", f->root, now));
	assert_int_equal(maildir_msg_find(f->root, name, &sub, buf, sizeof(buf), err, sizeof(err)),
			 0);
	assert_int_equal(maildir_msg_set_flags(f->root, name, 0, 0, now, sizeof(now), err,
					       sizeof(err)),
			 0);
	assert_int_equal(maildir_msg_open(f->root, name, &fd, NULL, NULL, 0, err, sizeof(err)), 0);
	assert_int_equal(fd, -1);
	/* a base that is a prefix of another base does not match */
	write_file(pathf(p, sizeof(p), "%s/cur/abc1,S=0:2,", f->root), "");
	assert_int_equal(maildir_msg_find(f->root, "abc", &sub, buf, sizeof(buf), err, sizeof(err)),
			 0);
	assert_int_equal(maildir_msg_find(f->root, "abc1:2,S", &sub, buf, sizeof(buf), err,
					  sizeof(err)),
			 1);
	assert_string_equal(buf, "abc1,S=0:2,");
	assert_int_equal(maildir_msg_find(f->root, ".bad", &sub, buf, sizeof(buf), err, sizeof(err)),
			 -1);
}

/* ---- scan.c ---- */

static int find_entry(const struct maildir_scan *s, const char *prefix)
{
	size_t i;

	for (i = 0; i < s->count; i++)
		if (strncmp(s->entries[i].filename, prefix, strlen(prefix)) == 0)
			return (int)i;
	return -1;
}

static void test_scan(void **state)
{
	struct fixture *f = *state;
	struct maildir_scan s;
	char err[256], p[1024];
	int i;

	assert_int_equal(maildir_folder_create(f->root, "", err, sizeof(err)), 1);
	write_file(pathf(p, sizeof(p), "%s/new/1.a.h,S=5,W=5", f->root), "12345");
	write_file(pathf(p, sizeof(p), "%s/new/2.nosize.h", f->root), "1234567");
	write_file(pathf(p, sizeof(p), "%s/new/.hidden", f->root), "x");
	write_file(pathf(p, sizeof(p), "%s/cur/3.b.h,S=99:2,S", f->root), "x");
	write_file(pathf(p, sizeof(p), "%s/cur/4.badsize,S=x:2,S", f->root), "xyz");
	write_file(pathf(p, sizeof(p), "%s/cur/.5.dot:2,S", f->root), "x");
	write_file(pathf(p, sizeof(p), "%s/tmp/6.tmp.h", f->root), "x");
	assert_int_equal(mkdir(pathf(p, sizeof(p), "%s/cur/subdir", f->root), 0700), 0);
	assert_int_equal(symlink("/nonexistent", pathf(p, sizeof(p), "%s/cur/7.link", f->root)), 0);

	assert_int_equal(maildir_scan(f->root, &s, err, sizeof(err)), 4);
	i = find_entry(&s, "1.a.h");
	assert_true(i >= 0);
	assert_int_equal(s.entries[i].subdir, MAILDIR_NEW);
	assert_true(s.entries[i].valid);
	assert_int_equal(s.entries[i].size, 5);
	assert_true(slice_eq(s.entries[i].name.base, s.entries[i].name.base_len, "1.a.h"));
	i = find_entry(&s, "2.nosize.h");
	assert_true(i >= 0);
	assert_int_equal(s.entries[i].size, 7);
	i = find_entry(&s, "3.b.h");
	assert_true(i >= 0);
	assert_int_equal(s.entries[i].subdir, MAILDIR_CUR);
	assert_int_equal(s.entries[i].size, 99); /* from the name: no stat */
	assert_int_equal(s.entries[i].name.flags, MAILDIR_FLAG_SEEN);
	i = find_entry(&s, "4.badsize");
	assert_true(i >= 0);
	assert_false(s.entries[i].valid);
	assert_int_equal(s.entries[i].size, 3);
	maildir_scan_clear(&s);
	assert_int_equal(s.count, 0);

	assert_int_equal(maildir_scan("/nonexistent", &s, err, sizeof(err)), -1);
	maildir_scan_clear(&s);
}

struct churn {
	const char *root;
	volatile int stop;
};

static void *churn_thread(void *arg)
{
	struct churn *c = arg;
	char p[1024];
	unsigned i = 0;

	while (!c->stop) {
		snprintf(p, sizeof(p), "%s/cur/%u.churn.h:2,S", c->root, i++ % 64);
		if (unlink(p) < 0)
			write_file(p, "x");
	}
	return NULL;
}

static void test_scan_vanishing(void **state)
{
	struct fixture *f = *state;
	struct churn c = { .root = f->root, .stop = 0 };
	struct maildir_scan s;
	char err[256], p[1024];
	pthread_t th;
	int i;

	assert_int_equal(maildir_folder_create(f->root, "", err, sizeof(err)), 1);
	for (i = 0; i < 2000; i++)
		write_file(pathf(p, sizeof(p), "%s/new/%d.stable.h,S=1", f->root, i), "x");
	assert_int_equal(pthread_create(&th, NULL, churn_thread, &c), 0);
	for (i = 0; i < 100; i++) {
		int n = maildir_scan(f->root, &s, err, sizeof(err));

		assert_true(n >= 2000);
		assert_true(n <= 2064);
		maildir_scan_clear(&s);
	}
	c.stop = 1;
	pthread_join(th, NULL);
}

/* Sync sets: the pool's, and a deferred one whose syncs run in maildir_syncset_wait. */
static void test_syncset(void **state)
{
	struct fixture *f = *state;
	struct maildir_syncset *s;
	char path[300], err[256];
	int fd;

	snprintf(path, sizeof(path), "%s/later", f->root);
	/* Deferred: nothing runs before the wait, so the file may appear after the add. */
	s = maildir_syncset_new_deferred();
	maildir_syncset_file(s, path);
	maildir_syncset_dir(s, f->root);
	fd = open(path, O_WRONLY | O_CREAT, 0600);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, "x", 1), 1);
	close(fd);
	assert_int_equal(maildir_syncset_wait(&s, err, sizeof(err)), 1);
	assert_null(s);
	/* A failure is reported by the wait, deferred or not. */
	snprintf(path, sizeof(path), "%s/missing", f->root);
	s = maildir_syncset_new_deferred();
	maildir_syncset_file(s, path);
	assert_int_equal(maildir_syncset_wait(&s, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "missing"));
	s = maildir_syncset_new();
	maildir_syncset_file(s, path);
	maildir_syncset_fs(s, f->root);
	assert_int_equal(maildir_syncset_wait(&s, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "missing"));
	/* An empty set of either kind waits for nothing. */
	s = maildir_syncset_new_deferred();
	assert_int_equal(maildir_syncset_wait(&s, err, sizeof(err)), 1);
	s = maildir_syncset_new();
	assert_int_equal(maildir_syncset_wait(&s, err, sizeof(err)), 1);
}

/* maildir_copy_fd: an existing destination is left alone; a failed read leaves nothing behind. */
static void test_copy_fd(void **state)
{
	struct fixture *f = *state;
	char src[256], dst[256], err[256], buf[64];
	int in, fd;

	pathf(src, sizeof(src), "%s/src", f->root);
	pathf(dst, sizeof(dst), "%s/dst", f->root);
	fd = open(src, O_WRONLY | O_CREAT | O_EXCL, 0600);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, "hello\r\n", 7), 7);
	close(fd);
	in = open(src, O_RDONLY);
	assert_int_equal(maildir_copy_fd(in, dst, true, err, sizeof(err)), 1);
	close(in);
	fd = open(dst, O_RDONLY);
	assert_int_equal(read(fd, buf, sizeof(buf)), 7);
	close(fd);
	assert_memory_equal(buf, "hello\r\n", 7);
	/* O_EXCL: the existing copy stays as it is. */
	in = open(src, O_RDONLY);
	assert_int_equal(maildir_copy_fd(in, dst, false, err, sizeof(err)), -1);
	close(in);
	assert_non_null(strstr(err, "create"));
	fd = open(dst, O_RDONLY);
	assert_int_equal(read(fd, buf, sizeof(buf)), 7);
	close(fd);
	/* A source that cannot be read (a directory): the new file is removed. */
	assert_int_equal(unlink(dst), 0);
	in = open(f->root, O_RDONLY | O_DIRECTORY);
	assert_int_equal(maildir_copy_fd(in, dst, false, err, sizeof(err)), -1);
	close(in);
	assert_non_null(strstr(err, "read"));
	assert_int_equal(access(dst, F_OK), -1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_name_parse_full),
		cmocka_unit_test(test_name_parse_variants),
		cmocka_unit_test(test_name_parse_malformed),
		cmocka_unit_test(test_name_with_flags),
		cmocka_unit_test(test_name_new_base_build),
		cmocka_unit_test(test_name_roundtrip),
		cmocka_unit_test_setup_teardown(test_keywords_roundtrip, setup_dir, teardown_dir),
		cmocka_unit_test_setup_teardown(test_keywords_junk, setup_dir, teardown_dir),
		cmocka_unit_test_setup_teardown(test_keywords_full, setup_dir, teardown_dir),
		cmocka_unit_test(test_folder_names),
		cmocka_unit_test(test_folder_names_rejected),
		cmocka_unit_test_setup_teardown(test_folder_ops, setup_dir, teardown_dir),
		cmocka_unit_test_setup_teardown(test_deliver_normalize, setup_dir, teardown_dir),
		cmocka_unit_test_setup_teardown(test_deliver_link, setup_dir, teardown_dir),
		cmocka_unit_test_setup_teardown(test_deliver_abort, setup_dir, teardown_dir),
		cmocka_unit_test_setup_teardown(test_flags_rename, setup_dir, teardown_dir),
		cmocka_unit_test_setup_teardown(test_scan, setup_dir, teardown_dir),
		cmocka_unit_test_setup_teardown(test_scan_vanishing, setup_dir, teardown_dir),
		cmocka_unit_test_setup_teardown(test_copy_fd, setup_dir, teardown_dir),
		cmocka_unit_test_setup_teardown(test_syncset, setup_dir, teardown_dir),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}

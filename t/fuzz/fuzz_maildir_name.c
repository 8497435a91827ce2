/*
 * Fuzz the pure name functions of maildir/: the file name parser (and the
 * stability of parse -> format -> parse), and the mailbox name <->
 * directory name mapping (each direction must invert the other exactly).
 * The first input byte selects the check, the rest is the name.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "maildir/maildir.h"

static void check_file_name(const char *s, size_t len)
{
	struct maildir_name a, b, c;
	char f1[MAILDIR_NAME_BUFSIZE], f2[MAILDIR_NAME_BUFSIZE];
	char u1[MAILDIR_NAME_BUFSIZE], u2[MAILDIR_NAME_BUFSIZE];
	char err[128];
	int n1, n2;

	if (maildir_name_parse(s, len, &a, err, sizeof(err)) < 0)
		return;
	if (a.base_len == 0 || a.base_len > len || a.fields_len > len ||
	    (a.has_info && a.flagstr + a.flagstr_len != s + len))
		abort();
	if (maildir_name_unknown_flags(&a, u1, sizeof(u1)) < 0)
		abort();
	n1 = maildir_name_with_flags(f1, sizeof(f1), &a, a.flags, a.keywords, err, sizeof(err));
	if (n1 < 0)
		return; /* no room for ":2," and the sorted flags: fine */
	if (maildir_name_parse(f1, (size_t)n1, &b, err, sizeof(err)) < 0)
		abort();
	if (b.base_len != a.base_len || memcmp(b.base, a.base, a.base_len) != 0 ||
	    b.fields_len != a.fields_len || memcmp(b.fields, a.fields, a.fields_len) != 0 ||
	    b.flags != a.flags || b.keywords != a.keywords || !b.has_info ||
	    b.has_size != a.has_size || b.size != a.size || b.has_vsize != a.has_vsize ||
	    b.vsize != a.vsize)
		abort();
	if (maildir_name_unknown_flags(&b, u2, sizeof(u2)) < 0 || strcmp(u1, u2) != 0)
		abort();
	n2 = maildir_name_with_flags(f2, sizeof(f2), &b, b.flags, b.keywords, err, sizeof(err));
	if (n2 != n1 || memcmp(f1, f2, (size_t)n1) != 0)
		abort();
	/* Changing flags keeps the base and fields. */
	n2 = maildir_name_with_flags(f2, sizeof(f2), &b, b.flags ^ MAILDIR_FLAG_SEEN,
				     b.keywords ^ 1u, err, sizeof(err));
	if (n2 >= 0) {
		if (maildir_name_parse(f2, (size_t)n2, &c, err, sizeof(err)) < 0 ||
		    c.base_len != a.base_len || c.fields_len != a.fields_len ||
		    c.flags != (a.flags ^ MAILDIR_FLAG_SEEN) || c.keywords != (a.keywords ^ 1u))
			abort();
	}
}

static void check_folder_name(const char *s)
{
	char dir[MAILDIR_NAME_BUFSIZE], name[MAILDIR_NAME_BUFSIZE], dir2[MAILDIR_NAME_BUFSIZE];
	char err[128];

	/* mailbox name -> dir -> mailbox name */
	if (maildir_folder_encode(s, dir, sizeof(dir), err, sizeof(err)) > 0) {
		if (maildir_folder_decode(dir, name, sizeof(name), err, sizeof(err)) < 0)
			abort();
		if (dir[0] == '\0' ? strcmp(name, "INBOX") != 0 : strcmp(name, s) != 0)
			abort();
	}
	/* dir -> mailbox name -> dir */
	if (maildir_folder_decode(s, name, sizeof(name), err, sizeof(err)) > 0) {
		if (maildir_folder_encode(name, dir2, sizeof(dir2), err, sizeof(err)) < 0)
			abort();
		if (strcmp(dir2, s) != 0)
			abort();
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *s;

	if (size < 1 || size > 1024)
		return 0;
	s = malloc(size);
	if (s == NULL)
		return 0;
	memcpy(s, data + 1, size - 1);
	s[size - 1] = '\0';
	if (data[0] & 1)
		check_folder_name(s); /* C string: stops at the first NUL */
	else
		check_file_name(s, size - 1);
	free(s);
	return 0;
}

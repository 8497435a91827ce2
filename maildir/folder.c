/*
 * Maildir++ folders: the mailbox name <-> directory name mapping and the
 * directory operations. The mapping is a bijection between valid IMAP
 * mailbox names and the directory names we produce: encoding escapes with
 * '~' exactly the bytes that cannot stand for themselves, and decoding
 * rejects everything encoding would not produce (lowercase hex only, only
 * for escaped bytes), so no two names share a directory.
 * Deletion renames first (to a ".." name that listings skip), so a folder
 * disappears atomically even when removing its files takes long or fails.
 */
#define _GNU_SOURCE
#include "maildir/maildir.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#define PATH_BUF 4096
#define REMOVE_DEPTH_MAX 8

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

/* Length of the valid UTF-8 sequence at s (up to n bytes), 0 if invalid. */
static size_t utf8_seq(const unsigned char *s, size_t n)
{
	uint32_t cp;
	size_t len, i;

	if (s[0] < 0x80)
		return 1;
	if (s[0] >= 0xc2 && s[0] <= 0xdf)
		len = 2, cp = s[0] & 0x1f;
	else if (s[0] >= 0xe0 && s[0] <= 0xef)
		len = 3, cp = s[0] & 0x0f;
	else if (s[0] >= 0xf0 && s[0] <= 0xf4)
		len = 4, cp = s[0] & 0x07;
	else
		return 0;
	if (n < len)
		return 0;
	for (i = 1; i < len; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		cp = (cp << 6) | (s[i] & 0x3f);
	}
	if ((len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) || cp > 0x10ffff ||
	    (cp >= 0xd800 && cp <= 0xdfff))
		return 0;
	return len;
}

static bool utf8_valid(const char *s, size_t n)
{
	size_t i = 0, l;

	while (i < n) {
		l = utf8_seq((const unsigned char *)s + i, n - i);
		if (l == 0)
			return false;
		i += l;
	}
	return true;
}

/* Bytes written as "~xx" inside a level. */
static bool must_escape(unsigned char c)
{
	return c == '.' || c == '~' || c < 0x20 || c == 0x7f;
}

int maildir_folder_encode(const char *name, char *buf, size_t size, char *err, size_t errlen)
{
	static const char hex[] = "0123456789abcdef";
	size_t len, i, o = 0, need;
	bool level_empty = true;

	if (size == 0) {
		seterr(err, errlen, "no room for folder name");
		return -1;
	}
	if (name == NULL || name[0] == '\0') {
		seterr(err, errlen, "empty mailbox name");
		return -1;
	}
	if (strcasecmp(name, "INBOX") == 0) {
		buf[0] = '\0';
		return 1;
	}
	len = strlen(name);
	if (!utf8_valid(name, len)) {
		seterr(err, errlen, "mailbox name is not valid UTF-8");
		return -1;
	}
	buf[o++] = '.';
	for (i = 0; i <= len; i++) {
		unsigned char c = (unsigned char)name[i];

		if (i == len || c == '/') {
			if (level_empty) {
				seterr(err, errlen, "mailbox name has an empty level");
				return -1;
			}
			if (i == len)
				break;
			c = '.';
			need = 1;
			level_empty = true;
		} else {
			need = must_escape(c) ? 3 : 1;
			level_empty = false;
		}
		if (o + need > MAILDIR_NAME_MAX || o + need >= size) {
			seterr(err, errlen, "mailbox name too long for a directory name");
			return -1;
		}
		if (need == 3) {
			buf[o++] = '~';
			buf[o++] = hex[c >> 4];
			buf[o++] = hex[c & 0xf];
		} else {
			buf[o++] = (char)c;
		}
	}
	buf[o] = '\0';
	return 1;
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

int maildir_folder_decode(const char *dirname, char *buf, size_t size, char *err,
			  size_t errlen)
{
	size_t len, i, o = 0;
	bool level_empty = true;

	if (dirname[0] == '\0') {
		if (size < 6) {
			seterr(err, errlen, "no room for mailbox name");
			return -1;
		}
		memcpy(buf, "INBOX", 6);
		return 1;
	}
	len = strlen(dirname);
	if (dirname[0] != '.' || len > MAILDIR_NAME_MAX) {
		seterr(err, errlen, "not a folder directory name");
		return -1;
	}
	if (size < len) {
		seterr(err, errlen, "no room for mailbox name");
		return -1;
	}
	for (i = 1; i <= len; i++) {
		unsigned char c = (unsigned char)dirname[i];

		if (i == len || c == '.') {
			if (level_empty) {
				seterr(err, errlen, "folder directory name has an empty level");
				return -1;
			}
			if (i == len)
				break;
			buf[o++] = '/';
			level_empty = true;
			continue;
		}
		level_empty = false;
		if (c == '~') {
			int h, l;

			h = i + 2 < len ? hexval(dirname[i + 1]) : -1;
			l = h >= 0 ? hexval(dirname[i + 2]) : -1;
			if (l < 0 || (c = (unsigned char)(h << 4 | l)) == 0 || !must_escape(c)) {
				seterr(err, errlen, "folder directory name has a bad ~ escape");
				return -1;
			}
			i += 2;
		} else if (must_escape(c) || c == '/') {
			seterr(err, errlen, "folder directory name has an unescaped control byte");
			return -1;
		}
		buf[o++] = (char)c;
	}
	buf[o] = '\0';
	if (!utf8_valid(buf, o)) {
		seterr(err, errlen, "folder directory name is not valid UTF-8");
		return -1;
	}
	if (strcasecmp(buf, "INBOX") == 0) {
		seterr(err, errlen, "folder directory name collides with INBOX");
		return -1;
	}
	return 1;
}

/* A subfolder directory name we may operate on: ".x", one component. */
static bool subfolder_ok(const char *dirname)
{
	size_t len = strlen(dirname);

	return len >= 2 && len <= MAILDIR_NAME_MAX && dirname[0] == '.' && dirname[1] != '.' &&
	       strchr(dirname, '/') == NULL;
}

static int join(char *buf, const char *a, const char *b, const char *c, char *err,
		size_t errlen)
{
	int n = snprintf(buf, PATH_BUF, "%s%s%s%s%s", a, b[0] ? "/" : "", b, c[0] ? "/" : "", c);

	if (n < 0 || n >= PATH_BUF) {
		seterr(err, errlen, "path too long: %s/%s", a, b);
		return -1;
	}
	return 0;
}

/* mkdir that counts creations; EEXIST is fine. 1 created, 0 existed, -1. */
static int mkdir_one(const char *path, char *err, size_t errlen)
{
	if (mkdir(path, 0700) == 0)
		return 1;
	if (errno == EEXIST) {
		struct stat st;

		if (stat(path, &st) == 0 && S_ISDIR(st.st_mode))
			return 0;
		seterr(err, errlen, "%s exists and is not a directory", path);
		return -1;
	}
	seterr(err, errlen, "mkdir %s: %s", path, strerror(errno));
	return -1;
}

int maildir_folder_create(const char *root, const char *dirname, char *err, size_t errlen)
{
	static const char *const subs[] = { "cur", "new", "tmp" };
	char dir[PATH_BUF], path[PATH_BUF];
	int created = 0, r, dir_created;
	size_t i;

	if (dirname[0] != '\0' && !subfolder_ok(dirname)) {
		seterr(err, errlen, "bad folder directory name");
		return -1;
	}
	if (join(dir, root, dirname, "", err, errlen) < 0)
		return -1;
	dir_created = mkdir_one(dir, err, errlen);
	if (dir_created < 0)
		return -1;
	created += dir_created;
	for (i = 0; i < 3; i++) {
		if (join(path, root, dirname, subs[i], err, errlen) < 0)
			return -1;
		r = mkdir_one(path, err, errlen);
		if (r < 0)
			return -1;
		created += r;
	}
	if (dirname[0] != '\0') {
		int fd;

		if (join(path, root, dirname, "maildirfolder", err, errlen) < 0)
			return -1;
		fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
		if (fd >= 0) {
			close(fd);
			created++;
		} else if (errno != EEXIST) {
			seterr(err, errlen, "create %s: %s", path, strerror(errno));
			return -1;
		}
	}
	if (created == 0)
		return 0;
	if (maildir_fsync_dir(dir, err, errlen) < 0)
		return -1;
	if (dirname[0] != '\0' && dir_created && maildir_fsync_dir(root, err, errlen) < 0)
		return -1;
	return 1;
}

static bool is_dir_at(int dfd, const char *a, const char *b)
{
	char p[PATH_BUF];
	struct stat st;
	int n = snprintf(p, sizeof(p), "%s/%s", a, b);

	return n > 0 && n < (int)sizeof(p) && fstatat(dfd, p, &st, 0) == 0 && S_ISDIR(st.st_mode);
}

static int entry_cmp(const void *a, const void *b)
{
	const struct maildir_folder_entry *x = a, *y = b;

	return strcmp(x->dirname, y->dirname);
}

static char *xstrdup_(const char *s)
{
	char *p = strdup(s);

	if (p == NULL)
		abort();
	return p;
}

int maildir_folder_list(const char *root, struct maildir_folder_list *list_r, char *err,
			size_t errlen)
{
	struct dirent *de;
	size_t cap = 0;
	DIR *d;

	list_r->entries = NULL;
	list_r->count = 0;
	d = opendir(root);
	if (d == NULL) {
		seterr(err, errlen, "opendir %s: %s", root, strerror(errno));
		return -1;
	}
	for (;;) {
		char name[MAILDIR_NAME_BUFSIZE];
		struct maildir_folder_entry *e;

		errno = 0;
		de = readdir(d);
		if (de == NULL) {
			if (errno != 0) {
				seterr(err, errlen, "readdir %s: %s", root, strerror(errno));
				closedir(d);
				maildir_folder_list_clear(list_r);
				return -1;
			}
			break;
		}
		if (de->d_name[0] != '.' || de->d_name[1] == '.' || de->d_name[1] == '\0')
			continue;
		if (de->d_type != DT_DIR && de->d_type != DT_UNKNOWN && de->d_type != DT_LNK)
			continue;
		if (!is_dir_at(dirfd(d), de->d_name, "cur") || !is_dir_at(dirfd(d), de->d_name, "new") ||
		    !is_dir_at(dirfd(d), de->d_name, "tmp"))
			continue;
		if (list_r->count == cap) {
			cap = cap ? cap * 2 : 16;
			list_r->entries = realloc(list_r->entries, cap * sizeof(*list_r->entries));
			if (list_r->entries == NULL)
				abort();
		}
		e = &list_r->entries[list_r->count++];
		e->dirname = xstrdup_(de->d_name);
		e->name = maildir_folder_decode(de->d_name, name, sizeof(name), NULL, 0) > 0 ?
				  xstrdup_(name) :
				  NULL;
	}
	closedir(d);
	if (list_r->count > 1)
		qsort(list_r->entries, list_r->count, sizeof(*list_r->entries), entry_cmp);
	return (int)list_r->count;
}

void maildir_folder_list_clear(struct maildir_folder_list *list)
{
	size_t i;

	for (i = 0; i < list->count; i++) {
		free(list->entries[i].dirname);
		free(list->entries[i].name);
	}
	free(list->entries);
	list->entries = NULL;
	list->count = 0;
}

/* Remove everything below directory fd dfd (path for messages), then the
 * entry name in parent pfd. Files vanishing meanwhile are fine. */
static int remove_tree(int pfd, const char *name, const char *path, int depth, char *err,
		       size_t errlen)
{
	struct dirent *de;
	DIR *d;
	int fd, rc = 0;

	if (depth > REMOVE_DEPTH_MAX) {
		seterr(err, errlen, "%s: directories nested too deep to remove", path);
		return -1;
	}
	fd = openat(pfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0) {
		if (errno == ENOENT)
			return 0;
		seterr(err, errlen, "open %s/%s: %s", path, name, strerror(errno));
		return -1;
	}
	d = fdopendir(fd);
	if (d == NULL) {
		seterr(err, errlen, "fdopendir %s/%s: %s", path, name, strerror(errno));
		close(fd);
		return -1;
	}
	while (rc == 0 && (de = readdir(d)) != NULL) {
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		if (unlinkat(fd, de->d_name, 0) == 0 || errno == ENOENT)
			continue;
		if (errno == EISDIR || errno == EPERM) {
			rc = remove_tree(fd, de->d_name, path, depth + 1, err, errlen);
			continue;
		}
		seterr(err, errlen, "unlink %s/%s/%s: %s", path, name, de->d_name, strerror(errno));
		rc = -1;
	}
	closedir(d);
	if (rc < 0)
		return -1;
	if (unlinkat(pfd, name, AT_REMOVEDIR) < 0 && errno != ENOENT) {
		seterr(err, errlen, "rmdir %s/%s: %s", path, name, strerror(errno));
		return -1;
	}
	return 0;
}

int maildir_folder_delete(const char *root, const char *dirname, char *err, size_t errlen)
{
	static atomic_ulong counter;
	char from[PATH_BUF], to[PATH_BUF], trash[64];
	int rfd, rc;

	if (!subfolder_ok(dirname)) {
		seterr(err, errlen, "bad folder directory name");
		return -1;
	}
	snprintf(trash, sizeof(trash), "..deleted.%ld.%lu", (long)getpid(),
		 atomic_fetch_add(&counter, 1));
	if (join(from, root, dirname, "", err, errlen) < 0 ||
	    join(to, root, trash, "", err, errlen) < 0)
		return -1;
	if (rename(from, to) < 0) {
		if (errno == ENOENT)
			return 0;
		seterr(err, errlen, "rename %s to %s: %s", from, to, strerror(errno));
		return -1;
	}
	rfd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (rfd < 0) {
		seterr(err, errlen, "open %s: %s", root, strerror(errno));
		return -1;
	}
	rc = remove_tree(rfd, trash, root, 0, err, errlen);
	close(rfd);
	if (rc < 0)
		return -1;
	if (maildir_fsync_dir(root, err, errlen) < 0)
		return -1;
	return 1;
}

int maildir_folder_rename(const char *root, const char *from, const char *to, char *err,
			  size_t errlen)
{
	char pfrom[PATH_BUF], pto[PATH_BUF];

	if (!subfolder_ok(from) || !subfolder_ok(to)) {
		seterr(err, errlen, "bad folder directory name");
		return -1;
	}
	if (join(pfrom, root, from, "", err, errlen) < 0 || join(pto, root, to, "", err, errlen) < 0)
		return -1;
	if (renameat2(AT_FDCWD, pfrom, AT_FDCWD, pto, RENAME_NOREPLACE) < 0) {
		if (errno == EINVAL || errno == ENOSYS) {
			/* Filesystem without RENAME_NOREPLACE: check, then rename
			 * (the account's writer serializes folder operations). */
			struct stat st;

			if (lstat(pto, &st) == 0) {
				errno = EEXIST;
			} else if (rename(pfrom, pto) == 0) {
				goto renamed;
			}
		}
		if (errno == ENOENT) {
			struct stat st;

			if (lstat(pfrom, &st) < 0 && errno == ENOENT)
				return 0;
			errno = ENOENT;
		}
		seterr(err, errlen, "rename %s to %s: %s", pfrom, pto, strerror(errno));
		return -1;
	}
renamed:
	if (maildir_fsync_dir(root, err, errlen) < 0)
		return -1;
	return 1;
}

/*
 * dovecot-keywords: the table of keyword letters other Maildir tools read.
 * Invariant: a letter that may appear in a file name is never given to
 * another keyword, so reading keeps every slot a line names (duplicates
 * included) and assignment only takes free slots. The file is replaced
 * atomically (tmp + fsync + rename + directory fsync); a reader sees the
 * old or the new table, never half of one.
 */
#include "maildir/maildir.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

/* Largest dovecot-keywords file we read: 26 lines of at most ~210 bytes,
 * plus generous room for junk lines other tools may have left. */
#define KEYWORDS_FILE_MAX (1024 * 1024)

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

void maildir_keywords_init(struct maildir_keywords *kw)
{
	memset(kw, 0, sizeof(*kw));
}

void maildir_keywords_clear(struct maildir_keywords *kw)
{
	size_t i;

	for (i = 0; i < 26; i++) {
		free(kw->names[i]);
		kw->names[i] = NULL;
	}
}

static bool keyword_char_ok(unsigned char c)
{
	if (c <= 0x20 || c >= 0x7f)
		return false;
	return strchr("(){%*\"\\]", c) == NULL;
}

static bool keyword_valid_n(const char *s, size_t len)
{
	size_t i;

	if (len == 0 || len > MAILDIR_KEYWORD_MAX)
		return false;
	for (i = 0; i < len; i++)
		if (!keyword_char_ok((unsigned char)s[i]))
			return false;
	return true;
}

bool maildir_keyword_valid(const char *s)
{
	return s != NULL && keyword_valid_n(s, strlen(s));
}

/* Parse one line "<index> <keyword>" (no newline). Junk is ignored. */
static void parse_line(struct maildir_keywords *kw, const char *line, size_t len)
{
	size_t i = 0;
	unsigned idx = 0;
	char *name;

	if (len == 0 || line[0] < '0' || line[0] > '9')
		return;
	while (i < len && line[i] >= '0' && line[i] <= '9') {
		idx = idx * 10 + (unsigned)(line[i] - '0');
		if (idx > 25)
			return;
		i++;
	}
	if (i >= len || line[i] != ' ')
		return;
	i++;
	/* Tolerate a CR from a file edited elsewhere. */
	if (len > i && line[len - 1] == '\r')
		len--;
	if (!keyword_valid_n(line + i, len - i) || kw->names[idx] != NULL)
		return;
	name = malloc(len - i + 1);
	if (name == NULL)
		abort();
	memcpy(name, line + i, len - i);
	name[len - i] = '\0';
	kw->names[idx] = name;
}

int maildir_keywords_read(struct maildir_keywords *kw, const char *maildir,
			  char *err, size_t errlen)
{
	char path[4096];
	char *buf = NULL;
	size_t len = 0, cap = 0, start, i;
	int fd, n, count = 0;

	maildir_keywords_clear(kw);
	n = snprintf(path, sizeof(path), "%s/%s", maildir, MAILDIR_KEYWORDS_FILE);
	if (n < 0 || (size_t)n >= sizeof(path)) {
		seterr(err, errlen, "path too long: %s", maildir);
		return -1;
	}
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		if (errno == ENOENT)
			return 0;
		seterr(err, errlen, "open %s: %s", path, strerror(errno));
		return -1;
	}
	for (;;) {
		ssize_t r;

		if (cap - len < 4096) {
			if (cap >= KEYWORDS_FILE_MAX) {
				seterr(err, errlen, "%s: larger than %d bytes", path,
				       KEYWORDS_FILE_MAX);
				goto fail;
			}
			cap = cap ? cap * 2 : 8192;
			buf = realloc(buf, cap);
			if (buf == NULL)
				abort();
		}
		r = read(fd, buf + len, cap - len);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			seterr(err, errlen, "read %s: %s", path, strerror(errno));
			goto fail;
		}
		if (r == 0)
			break;
		len += (size_t)r;
	}
	close(fd);
	fd = -1;

	for (start = 0, i = 0; i <= len; i++) {
		if (i == len || buf[i] == '\n') {
			parse_line(kw, buf + start, i - start);
			start = i + 1;
		}
	}
	free(buf);
	for (i = 0; i < 26; i++)
		if (kw->names[i] != NULL)
			count++;
	return count;

fail:
	if (fd >= 0)
		close(fd);
	free(buf);
	return -1;
}

int maildir_keywords_lookup(const struct maildir_keywords *kw, const char *keyword)
{
	size_t i;

	for (i = 0; i < 26; i++)
		if (kw->names[i] != NULL && strcasecmp(kw->names[i], keyword) == 0)
			return 'a' + (int)i;
	return 0;
}

const char *maildir_keywords_name(const struct maildir_keywords *kw, int letter)
{
	if (letter < 'a' || letter > 'z')
		return NULL;
	return kw->names[letter - 'a'];
}

int maildir_keywords_assign(struct maildir_keywords *kw, const char *keyword, bool *added_r,
			    char *err, size_t errlen)
{
	size_t i;
	int letter;

	if (added_r != NULL)
		*added_r = false;
	if (!maildir_keyword_valid(keyword)) {
		seterr(err, errlen, "invalid keyword");
		return -1;
	}
	letter = maildir_keywords_lookup(kw, keyword);
	if (letter > 0)
		return letter;
	for (i = 0; i < 26; i++) {
		if (kw->names[i] == NULL) {
			kw->names[i] = strdup(keyword);
			if (kw->names[i] == NULL)
				abort();
			if (added_r != NULL)
				*added_r = true;
			return 'a' + (int)i;
		}
	}
	seterr(err, errlen, "keyword table full (26 keywords)");
	return MAILDIR_KEYWORDS_FULL;
}

static int write_full(int fd, const char *p, size_t len)
{
	while (len > 0) {
		ssize_t r = write(fd, p, len);

		if (r < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		p += r;
		len -= (size_t)r;
	}
	return 0;
}

int maildir_keywords_write(const struct maildir_keywords *kw, const char *maildir,
			   char *err, size_t errlen)
{
	char path[4096], tmp[4096];
	char buf[26 * (MAILDIR_KEYWORD_MAX + 8)];
	size_t len = 0, i;
	int fd, n, saved;

	n = snprintf(path, sizeof(path), "%s/%s", maildir, MAILDIR_KEYWORDS_FILE);
	if (n < 0 || (size_t)n >= sizeof(path)) {
		seterr(err, errlen, "path too long: %s", maildir);
		return -1;
	}
	/* One writer per account (the index serializes), so a fixed temporary
	 * name suffices; a leftover from a crash is simply truncated. */
	n = snprintf(tmp, sizeof(tmp), "%s/%s.tmp", maildir, MAILDIR_KEYWORDS_FILE);
	if (n < 0 || (size_t)n >= sizeof(tmp)) {
		seterr(err, errlen, "path too long: %s", maildir);
		return -1;
	}
	for (i = 0; i < 26; i++) {
		if (kw->names[i] == NULL)
			continue;
		n = snprintf(buf + len, sizeof(buf) - len, "%zu %s\n", i, kw->names[i]);
		if (n < 0 || (size_t)n >= sizeof(buf) - len) {
			seterr(err, errlen, "keyword too long");
			return -1;
		}
		len += (size_t)n;
	}

	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0) {
		seterr(err, errlen, "open %s: %s", tmp, strerror(errno));
		return -1;
	}
	if (write_full(fd, buf, len) < 0) {
		seterr(err, errlen, "write %s: %s", tmp, strerror(errno));
		goto fail;
	}
	if (fsync(fd) < 0) {
		seterr(err, errlen, "fsync %s: %s", tmp, strerror(errno));
		goto fail;
	}
	if (close(fd) < 0) {
		fd = -1;
		seterr(err, errlen, "close %s: %s", tmp, strerror(errno));
		goto fail;
	}
	fd = -1;
	if (rename(tmp, path) < 0) {
		seterr(err, errlen, "rename %s to %s: %s", tmp, path, strerror(errno));
		goto fail;
	}
	return maildir_fsync_dir(maildir, err, errlen);

fail:
	saved = errno;
	if (fd >= 0)
		close(fd);
	unlink(tmp);
	errno = saved;
	return -1;
}

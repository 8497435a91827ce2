/*
 * Listing the messages of a folder. Built for large folders: all names go
 * into one arena (entries refer to it by offset until the end, since the
 * arena moves while it grows), and stat() is only called for names without
 * a valid ,S= size. Files that vanish between readdir and stat (another
 * tool moved or expunged them) are skipped: the next scan sees their new
 * state.
 */
#define _GNU_SOURCE
#include "maildir/maildir.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

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

static void *xrealloc_(void *p, size_t n)
{
	p = realloc(p, n);
	if (p == NULL)
		abort();
	return p;
}

/* Add one entry; its filename holds the arena offset until the fix-up. */
static void add_entry(struct maildir_scan *s, size_t *cap, enum maildir_subdir sub,
		      const char *name, size_t len, uint64_t size)
{
	struct maildir_entry *e;

	if (s->count == *cap) {
		*cap = *cap ? *cap * 2 : 256;
		s->entries = xrealloc_(s->entries, *cap * sizeof(*s->entries));
	}
	if (s->names_cap - s->names_len < len + 1) {
		while (s->names_cap - s->names_len < len + 1)
			s->names_cap = s->names_cap ? s->names_cap * 2 : 16384;
		s->names = xrealloc_(s->names, s->names_cap);
	}
	e = &s->entries[s->count++];
	memset(e, 0, sizeof(*e));
	e->subdir = sub;
	e->filename = (const char *)(uintptr_t)s->names_len;
	e->size = size;
	memcpy(s->names + s->names_len, name, len + 1);
	s->names_len += len + 1;
}

static int scan_dir(const char *folderdir, enum maildir_subdir sub, struct maildir_scan *s,
		    size_t *cap, char *err, size_t errlen)
{
	const char *subname = sub == MAILDIR_CUR ? "cur" : "new";
	char dir[4096];
	struct dirent *de;
	DIR *d;
	int n;

	n = snprintf(dir, sizeof(dir), "%s/%s", folderdir, subname);
	if (n < 0 || n >= (int)sizeof(dir)) {
		seterr(err, errlen, "path too long: %s", folderdir);
		return -1;
	}
	d = opendir(dir);
	if (d == NULL) {
		seterr(err, errlen, "opendir %s: %s", dir, strerror(errno));
		return -1;
	}
	for (;;) {
		struct maildir_name mn;
		uint64_t size = 0;
		size_t len;

		errno = 0;
		de = readdir(d);
		if (de == NULL) {
			if (errno != 0) {
				seterr(err, errlen, "readdir %s: %s", dir, strerror(errno));
				closedir(d);
				return -1;
			}
			break;
		}
		if (de->d_name[0] == '.')
			continue;
		if (de->d_type != DT_REG && de->d_type != DT_UNKNOWN)
			continue;
		len = strlen(de->d_name);
		if (maildir_name_parse(de->d_name, len, &mn, NULL, 0) > 0 && mn.has_size) {
			size = mn.size;
		} else {
			struct stat st;

			if (fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
				if (errno == ENOENT)
					continue; /* vanished meanwhile */
				seterr(err, errlen, "stat %s/%s: %s", dir, de->d_name,
				       strerror(errno));
				closedir(d);
				return -1;
			}
			if (!S_ISREG(st.st_mode))
				continue;
			size = (uint64_t)st.st_size;
		}
		add_entry(s, cap, sub, de->d_name, len, size);
	}
	closedir(d);
	return 0;
}

int maildir_scan(const char *folderdir, struct maildir_scan *scan_r, char *err, size_t errlen)
{
	size_t cap = 0, i;

	memset(scan_r, 0, sizeof(*scan_r));
	if (scan_dir(folderdir, MAILDIR_NEW, scan_r, &cap, err, errlen) < 0 ||
	    scan_dir(folderdir, MAILDIR_CUR, scan_r, &cap, err, errlen) < 0) {
		maildir_scan_clear(scan_r);
		return -1;
	}
	/* The arena no longer moves: turn offsets into pointers and parse. */
	for (i = 0; i < scan_r->count; i++) {
		struct maildir_entry *e = &scan_r->entries[i];
		uint64_t size = e->size;

		e->filename = scan_r->names + (uintptr_t)e->filename;
		e->valid = maildir_name_parse(e->filename, strlen(e->filename), &e->name, NULL,
					      0) > 0;
		if (!e->valid)
			memset(&e->name, 0, sizeof(e->name));
		e->size = size;
	}
	return (int)scan_r->count;
}

void maildir_scan_clear(struct maildir_scan *scan)
{
	free(scan->entries);
	free(scan->names);
	memset(scan, 0, sizeof(*scan));
}

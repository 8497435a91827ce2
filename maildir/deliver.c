/*
 * Durable delivery, flag renames and opening messages.
 *
 * Invariants:
 * - The size in a name we create (,S=) is the number of bytes in the file:
 *   the writer counts what it writes and _finish compares with fstat.
 * - A file enters new/ or cur/ only complete and (once the caller has
 *   fsynced or syncfs'd) durable: it is written in a tmp directory and
 *   hard-linked (or, across filesystems, copied and fsynced) into place.
 * - Other tools rename files (flags, ,U= fields) at any time. We find a
 *   message by its base (the part before the first ',' or ':'), and every
 *   operation on a named file retries after ENOENT by searching again.
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
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define PATH_BUF 4096
#define WBUF_SIZE 65536
/* How often we chase a file that another tool keeps renaming. */
#define RENAME_RETRIES 5

struct maildir_writer {
	int fd;
	bool raw;
	bool pending_cr; /* last input byte was CR (normalized: CR already emitted) */
	bool finished;
	bool removed;
	bool failed;
	uint64_t size;  /* bytes written to the file (incl. buffered) */
	uint64_t vsize; /* size with CRLF line ends */
	size_t buflen;
	char base[MAILDIR_NAME_BUFSIZE];
	char path[PATH_BUF];
	char buf[WBUF_SIZE];
};

static atomic_uint_fast64_t name_counter;

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

static int path3(char *buf, const char *a, const char *b, const char *c, char *err,
		 size_t errlen)
{
	int n = snprintf(buf, PATH_BUF, "%s/%s/%s", a, b, c);

	if (n < 0 || n >= PATH_BUF) {
		seterr(err, errlen, "path too long: %s/%s/%s", a, b, c);
		return -1;
	}
	return 0;
}

static const char *subdir_name(enum maildir_subdir sub)
{
	return sub == MAILDIR_CUR ? "cur" : "new";
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

int maildir_writer_open(struct maildir_writer **w_r, const char *tmpdir, const char *host,
			char *err, size_t errlen)
{
	struct maildir_writer *w;
	int attempt;

	*w_r = NULL;
	w = calloc(1, sizeof(*w));
	if (w == NULL)
		abort();
	w->fd = -1;
	for (attempt = 0; attempt < 10; attempt++) {
		struct timespec ts;
		int n;

		clock_gettime(CLOCK_REALTIME, &ts);
		if (maildir_name_new_base(w->base, sizeof(w->base), (int64_t)ts.tv_sec,
					  ts.tv_nsec / 1000, (long)getpid(),
					  atomic_fetch_add(&name_counter, 1), host, err, errlen) < 0)
			goto fail;
		n = snprintf(w->path, sizeof(w->path), "%s/%s", tmpdir, w->base);
		if (n < 0 || n >= (int)sizeof(w->path)) {
			seterr(err, errlen, "path too long: %s", tmpdir);
			goto fail;
		}
		w->fd = open(w->path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
		if (w->fd >= 0)
			break;
		if (errno != EEXIST) {
			seterr(err, errlen, "create %s: %s", w->path, strerror(errno));
			goto fail;
		}
	}
	if (w->fd < 0) {
		seterr(err, errlen, "create %s: %s", w->path, strerror(EEXIST));
		goto fail;
	}
	*w_r = w;
	return 1;

fail:
	w->removed = true; /* nothing of ours to unlink */
	maildir_writer_free(&w);
	return -1;
}

void maildir_writer_set_raw(struct maildir_writer *w, bool raw)
{
	w->raw = raw;
}

static int wflush(struct maildir_writer *w, char *err, size_t errlen)
{
	if (w->buflen == 0)
		return 0;
	if (write_full(w->fd, w->buf, w->buflen) < 0) {
		seterr(err, errlen, "write %s: %s", w->path, strerror(errno));
		w->failed = true;
		return -1;
	}
	w->buflen = 0;
	return 0;
}

/* Append to the output buffer; flushes when full. */
static inline int wput(struct maildir_writer *w, const char *p, size_t n, char *err,
		       size_t errlen)
{
	while (n > 0) {
		size_t k = WBUF_SIZE - w->buflen;

		if (k == 0) {
			if (wflush(w, err, errlen) < 0)
				return -1;
			k = WBUF_SIZE;
		}
		if (k > n)
			k = n;
		memcpy(w->buf + w->buflen, p, k);
		w->buflen += k;
		w->size += k;
		p += k;
		n -= k;
	}
	return 0;
}

int maildir_writer_write(struct maildir_writer *w, const void *data, size_t len, char *err,
			 size_t errlen)
{
	const char *p = data, *end = p + len;

	if (w->failed || w->finished || w->fd < 0) {
		seterr(err, errlen, "write %s: writer not writable", w->path);
		return -1;
	}
	if (w->raw) {
		const char *q;

		/* Only count bare LFs for the W= size. */
		for (q = p; q < end; q++) {
			if (*q == '\n' && !w->pending_cr)
				w->vsize++;
			w->pending_cr = *q == '\r';
		}
		w->vsize += len;
		if (wput(w, p, len, err, errlen) < 0)
			return -1;
		return 1;
	}
	while (p < end) {
		const char *run = p;

		if (w->pending_cr) {
			/* CR was emitted; complete the line end either way. */
			w->pending_cr = false;
			if (wput(w, "\n", 1, err, errlen) < 0)
				return -1;
			if (*p == '\n') {
				p++;
				continue;
			}
		}
		while (p < end && *p != '\r' && *p != '\n')
			p++;
		if (p > run && wput(w, run, (size_t)(p - run), err, errlen) < 0)
			return -1;
		if (p == end)
			break;
		if (*p == '\r') {
			if (wput(w, "\r", 1, err, errlen) < 0)
				return -1;
			w->pending_cr = true;
		} else if (wput(w, "\r\n", 2, err, errlen) < 0) {
			return -1;
		}
		p++;
	}
	w->vsize = w->size;
	return 1;
}

int maildir_writer_finish(struct maildir_writer *w, unsigned flags, char *err, size_t errlen)
{
	struct stat st;

	if (w->failed || w->finished || w->fd < 0) {
		seterr(err, errlen, "finish %s: writer not writable", w->path);
		return -1;
	}
	if (!w->raw && w->pending_cr) {
		w->pending_cr = false;
		if (wput(w, "\n", 1, err, errlen) < 0)
			return -1;
		w->vsize = w->size;
	}
	if (wflush(w, err, errlen) < 0)
		return -1;
	if (!(flags & MAILDIR_FINISH_NOSYNC) && fsync(w->fd) < 0) {
		seterr(err, errlen, "fsync %s: %s", w->path, strerror(errno));
		goto fail;
	}
	if (fstat(w->fd, &st) < 0) {
		seterr(err, errlen, "fstat %s: %s", w->path, strerror(errno));
		goto fail;
	}
	if ((uint64_t)st.st_size != w->size) {
		seterr(err, errlen, "%s: file size %lld differs from written size %llu", w->path,
		       (long long)st.st_size, (unsigned long long)w->size);
		goto fail;
	}
	if (close(w->fd) < 0) {
		w->fd = -1;
		seterr(err, errlen, "close %s: %s", w->path, strerror(errno));
		goto fail;
	}
	w->fd = -1;
	w->finished = true;
	return 1;

fail:
	w->failed = true;
	return -1;
}

uint64_t maildir_writer_size(const struct maildir_writer *w)
{
	return w->size;
}

uint64_t maildir_writer_vsize(const struct maildir_writer *w)
{
	return w->vsize;
}

const char *maildir_writer_base(const struct maildir_writer *w)
{
	return w->base;
}

const char *maildir_writer_path(const struct maildir_writer *w)
{
	return w->path;
}

int maildir_copy_fd(int in, const char *dst, bool sync, char *err, size_t errlen)
{
	char buf[65536];
	int out, saved;

	out = open(dst, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (out < 0) {
		seterr(err, errlen, "create %s: %s", dst, strerror(errno));
		return -1;
	}
	for (;;) {
		ssize_t r = read(in, buf, sizeof(buf));

		if (r < 0) {
			if (errno == EINTR)
				continue;
			seterr(err, errlen, "read for %s: %s", dst, strerror(errno));
			goto fail;
		}
		if (r == 0)
			break;
		if (write_full(out, buf, (size_t)r) < 0) {
			seterr(err, errlen, "write %s: %s", dst, strerror(errno));
			goto fail;
		}
	}
	if (sync && fsync(out) < 0) {
		seterr(err, errlen, "fsync %s: %s", dst, strerror(errno));
		goto fail;
	}
	if (close(out) < 0) {
		seterr(err, errlen, "close %s: %s", dst, strerror(errno));
		unlink(dst);
		return -1;
	}
	return 1;

fail:
	saved = errno;
	close(out);
	unlink(dst);
	errno = saved;
	return -1;
}

/* Copy src to a new file dst (O_EXCL) and fsync it. 0 or -1 (dst removed). */
static int copy_file(const char *src, const char *dst, char *err, size_t errlen)
{
	int in = open(src, O_RDONLY | O_CLOEXEC), r;

	if (in < 0) {
		seterr(err, errlen, "open %s: %s", src, strerror(errno));
		return -1;
	}
	r = maildir_copy_fd(in, dst, true, err, errlen);
	close(in);
	return r < 0 ? -1 : 0;
}

int maildir_writer_name(const struct maildir_writer *w, enum maildir_subdir sub, unsigned flags, uint32_t keywords,
			char *name_r, size_t name_size, char *err, size_t errlen)
{
	return maildir_name_build(name_r, name_size, w->base, w->size, w->vsize, sub == MAILDIR_CUR, flags,
				  keywords, err, errlen) < 0 ? -1 : 1;
}

int maildir_writer_link(struct maildir_writer *w, const char *folderdir, enum maildir_subdir sub,
			unsigned flags, uint32_t keywords, unsigned lflags, char *name_r,
			size_t name_size, char *err, size_t errlen)
{
	char name[MAILDIR_NAME_BUFSIZE], dst[PATH_BUF];

	if (!w->finished || w->removed) {
		seterr(err, errlen, "link %s: file not finished", w->path);
		return -1;
	}
	if (maildir_name_build(name, sizeof(name), w->base, w->size, w->vsize, sub == MAILDIR_CUR,
			       flags, keywords, err, errlen) < 0)
		return -1;
	if (name_r != NULL && strlen(name) >= name_size) {
		seterr(err, errlen, "no room for message file name");
		return -1;
	}
	if (path3(dst, folderdir, subdir_name(sub), name, err, errlen) < 0)
		return -1;
	if (!(lflags & MAILDIR_LINK_FORCE_COPY)) {
		if (link(w->path, dst) == 0)
			goto linked;
		if (errno != EXDEV && errno != EPERM && errno != EMLINK && errno != ENOTSUP &&
		    errno != EOPNOTSUPP) {
			seterr(err, errlen, "link %s to %s: %s", w->path, dst, strerror(errno));
			return -1;
		}
	}
	if (copy_file(w->path, dst, err, errlen) < 0)
		return -1;
	if (name_r != NULL)
		memcpy(name_r, name, strlen(name) + 1);
	return 2;

linked:
	if (name_r != NULL)
		memcpy(name_r, name, strlen(name) + 1);
	return 1;
}

int maildir_writer_remove(struct maildir_writer *w, char *err, size_t errlen)
{
	if (w->fd >= 0) {
		close(w->fd);
		w->fd = -1;
	}
	if (w->removed)
		return 0;
	w->removed = true;
	if (unlink(w->path) < 0) {
		if (errno == ENOENT)
			return 0;
		seterr(err, errlen, "unlink %s: %s", w->path, strerror(errno));
		return -1;
	}
	return 1;
}

void maildir_writer_free(struct maildir_writer **wp)
{
	struct maildir_writer *w;

	if (wp == NULL || *wp == NULL)
		return;
	w = *wp;
	(void)maildir_writer_remove(w, NULL, 0);
	free(w);
	*wp = NULL;
}

int maildir_fsync_dir(const char *path, char *err, size_t errlen)
{
	int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

	if (fd < 0) {
		seterr(err, errlen, "open %s: %s", path, strerror(errno));
		return -1;
	}
	if (fsync(fd) < 0) {
		seterr(err, errlen, "fsync %s: %s", path, strerror(errno));
		close(fd);
		return -1;
	}
	close(fd);
	return 1;
}

int maildir_syncfs_fd(int fd, char *err, size_t errlen)
{
	if (syncfs(fd) < 0) {
		seterr(err, errlen, "syncfs: %s", strerror(errno));
		return -1;
	}
	return 1;
}

int maildir_syncfs(const char *path, char *err, size_t errlen)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0) {
		seterr(err, errlen, "open %s: %s", path, strerror(errno));
		return -1;
	}
	if (syncfs(fd) < 0) {
		seterr(err, errlen, "syncfs %s: %s", path, strerror(errno));
		close(fd);
		return -1;
	}
	close(fd);
	return 1;
}

/* True when file name d starts with base followed by ',', ':' or its end. */
static bool same_base(const char *d, const char *base, size_t base_len)
{
	return strncmp(d, base, base_len) == 0 &&
	       (d[base_len] == '\0' || d[base_len] == ',' || d[base_len] == ':');
}

/* Search folderdir/<sub>/ for base. 1 found (name_r set), 0 not, -1. */
static int search_dir(const char *folderdir, enum maildir_subdir sub, const char *base,
		      size_t base_len, char *name_r, size_t name_size, char *err, size_t errlen)
{
	char dir[PATH_BUF];
	struct dirent *de;
	DIR *d;
	int n;

	n = snprintf(dir, sizeof(dir), "%s/%s", folderdir, subdir_name(sub));
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
		if (de->d_name[0] == '.' || !same_base(de->d_name, base, base_len))
			continue;
		if (strlen(de->d_name) >= name_size) {
			seterr(err, errlen, "no room for message file name");
			closedir(d);
			return -1;
		}
		memcpy(name_r, de->d_name, strlen(de->d_name) + 1);
		closedir(d);
		return 1;
	}
	closedir(d);
	return 0;
}

int maildir_msg_find(const char *folderdir, const char *name, enum maildir_subdir *sub_r,
		     char *name_r, size_t name_size, char *err, size_t errlen)
{
	struct maildir_name n;
	enum maildir_subdir order[2];
	char path[PATH_BUF];
	int i, r;

	if (maildir_name_parse(name, strlen(name), &n, err, errlen) < 0)
		return -1;
	/* A name with flags most likely lives in cur/. */
	order[0] = n.has_info ? MAILDIR_CUR : MAILDIR_NEW;
	order[1] = n.has_info ? MAILDIR_NEW : MAILDIR_CUR;
	for (i = 0; i < 2; i++) {
		struct stat st;

		if (path3(path, folderdir, subdir_name(order[i]), name, err, errlen) < 0)
			return -1;
		if (lstat(path, &st) == 0) {
			if (strlen(name) >= name_size) {
				seterr(err, errlen, "no room for message file name");
				return -1;
			}
			memmove(name_r, name, strlen(name) + 1);
			if (sub_r != NULL)
				*sub_r = order[i];
			return 1;
		}
		if (errno != ENOENT) {
			seterr(err, errlen, "stat %s: %s", path, strerror(errno));
			return -1;
		}
	}
	/* Renamed by another tool: search by base. Copy the base, since name
	 * and name_r may be the same buffer. */
	{
		char base[MAILDIR_NAME_BUFSIZE];

		memcpy(base, n.base, n.base_len);
		base[n.base_len] = '\0';
		for (i = 0; i < 2; i++) {
			enum maildir_subdir s = i == 0 ? MAILDIR_CUR : MAILDIR_NEW;

			r = search_dir(folderdir, s, base, n.base_len, name_r, name_size, err,
				       errlen);
			if (r != 0) {
				if (r > 0 && sub_r != NULL)
					*sub_r = s;
				return r;
			}
		}
	}
	return 0;
}

int maildir_msg_set_flags(const char *folderdir, const char *name, unsigned flags,
			  uint32_t keywords, char *name_r, size_t name_size, char *err,
			  size_t errlen)
{
	char cur[MAILDIR_NAME_BUFSIZE], next[MAILDIR_NAME_BUFSIZE];
	char from[PATH_BUF], to[PATH_BUF];
	int attempt, r;

	if (strlen(name) >= sizeof(cur)) {
		seterr(err, errlen, "message file name too long");
		return -1;
	}
	memcpy(cur, name, strlen(name) + 1);
	for (attempt = 0; attempt < RENAME_RETRIES; attempt++) {
		enum maildir_subdir sub;
		struct maildir_name n;

		r = maildir_msg_find(folderdir, cur, &sub, cur, sizeof(cur), err, errlen);
		if (r <= 0)
			return r;
		if (maildir_name_parse(cur, strlen(cur), &n, err, errlen) < 0)
			return -1;
		if (maildir_name_with_flags(next, sizeof(next), &n, flags, keywords, err, errlen) < 0)
			return -1;
		if (strlen(next) >= name_size) {
			seterr(err, errlen, "no room for message file name");
			return -1;
		}
		if (sub == MAILDIR_CUR && strcmp(cur, next) == 0) {
			memcpy(name_r, next, strlen(next) + 1);
			return 1;
		}
		if (path3(from, folderdir, subdir_name(sub), cur, err, errlen) < 0 ||
		    path3(to, folderdir, "cur", next, err, errlen) < 0)
			return -1;
		if (rename(from, to) == 0) {
			memcpy(name_r, next, strlen(next) + 1);
			return 1;
		}
		if (errno != ENOENT) {
			seterr(err, errlen, "rename %s to %s: %s", from, to, strerror(errno));
			return -1;
		}
		/* Renamed under us: look it up again. */
	}
	seterr(err, errlen, "%s/%s: keeps being renamed", folderdir, name);
	return -1;
}

int maildir_msg_open(const char *folderdir, const char *name, int *fd_r,
		     enum maildir_subdir *sub_r, char *name_r, size_t name_size, char *err,
		     size_t errlen)
{
	char cur[MAILDIR_NAME_BUFSIZE], path[PATH_BUF];
	int attempt, r;

	*fd_r = -1;
	if (strlen(name) >= sizeof(cur)) {
		seterr(err, errlen, "message file name too long");
		return -1;
	}
	memcpy(cur, name, strlen(name) + 1);
	for (attempt = 0; attempt < RENAME_RETRIES; attempt++) {
		enum maildir_subdir sub;
		int fd;

		r = maildir_msg_find(folderdir, cur, &sub, cur, sizeof(cur), err, errlen);
		if (r <= 0)
			return r;
		if (path3(path, folderdir, subdir_name(sub), cur, err, errlen) < 0)
			return -1;
		fd = open(path, O_RDONLY | O_CLOEXEC);
		if (fd >= 0) {
			if (name_r != NULL) {
				if (strlen(cur) >= name_size) {
					close(fd);
					seterr(err, errlen, "no room for message file name");
					return -1;
				}
				memcpy(name_r, cur, strlen(cur) + 1);
			}
			if (sub_r != NULL)
				*sub_r = sub;
			*fd_r = fd;
			return 1;
		}
		if (errno != ENOENT) {
			seterr(err, errlen, "open %s: %s", path, strerror(errno));
			return -1;
		}
	}
	seterr(err, errlen, "%s/%s: keeps being renamed", folderdir, name);
	return -1;
}

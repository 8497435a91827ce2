/*
 * Exporting mailboxes to a Maildir (Maildir++ for several) or to mbox files.
 * Messages are read through idx_message_open (which follows renames by other
 * tools) one at a time, so memory holds one mailbox's UID list at most.
 */
#define _GNU_SOURCE
#include "index/index_private.h"
#include "index/tools.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "maildir/maildir.h"

struct exp {
	struct idx_account *a;
	enum idx_tool_format fmt;
	void (*progress)(void *arg, uint64_t n);
	void *parg;
	uint64_t count;
	char *err;
	size_t errlen;
	/* mbox */
	FILE *f;
	const char *fpath;
	bool werr;
};

/* mkdir -p for the export destination. */
static int mkdirs(const char *path, char *err, size_t errlen)
{
	char buf[4096];
	size_t n = strlen(path);

	if (n >= sizeof(buf)) {
		snprintf(err, errlen, "path too long: %s", path);
		return -1;
	}
	memcpy(buf, path, n + 1);
	for (size_t i = 1; i <= n; i++) {
		if (buf[i] != '/' && buf[i] != '\0')
			continue;
		char c = buf[i];
		buf[i] = '\0';
		if (mkdir(buf, 0700) < 0 && errno != EEXIST) {
			snprintf(err, errlen, "mkdir %s: %s", buf, strerror(errno));
			return -1;
		}
		buf[i] = c;
	}
	return 1;
}

static void tick(struct exp *x)
{
	x->count++;
	if (x->progress != NULL && x->count % 1000 == 0)
		x->progress(x->parg, x->count);
}


static int maildir_one(struct exp *x, const char *folderdir, struct maildir_keywords *kw, const struct idx_message *m,
    int fd)
{
	const char *slash = strchr(m->filename, '/');
	const char *fname = slash ? slash + 1 : m->filename;
	struct maildir_name n;
	char name[MAILDIR_NAME_BUFSIZE], path[4096];
	uint32_t letters = 0;
	unsigned mflags = msg_name_letters(kw, m->flags, m->keywords, m->nkeywords, true, &letters, NULL);

	if (maildir_name_parse(fname, strlen(fname), &n, x->err, x->errlen) < 0)
		return -1;
	if (strncmp(m->filename, "new/", 4) == 0 && mflags == 0 && letters == 0) {
		snprintf(name, sizeof(name), "%s", fname);
		if (snprintf(path, sizeof(path), "%s/new/%s", folderdir, name) >= (int)sizeof(path))
			goto toolong;
	} else {
		if (maildir_name_with_flags(name, sizeof(name), &n, mflags, letters, x->err, x->errlen) < 0)
			return -1;
		if (snprintf(path, sizeof(path), "%s/cur/%s", folderdir, name) >= (int)sizeof(path))
			goto toolong;
	}
	return maildir_copy_fd(fd, path, false, x->err, x->errlen);
toolong:
	snprintf(x->err, x->errlen, "path too long in %s", folderdir);
	return -1;
}

static void f_emit(void *arg, const char *p, size_t n)
{
	struct exp *x = arg;

	if (fwrite(p, 1, n, x->f) != n)
		x->werr = true;
}

static int mbox_one(struct exp *x, const struct idx_message *m, int fd)
{
	struct mbox_quoter q;
	char buf[65536], date[64];
	time_t t = (time_t)m->received;
	struct tm tm;

	if (gmtime_r(&t, &tm) == NULL || strftime(date, sizeof(date), "%a %b %e %H:%M:%S %Y", &tm) == 0)
		snprintf(date, sizeof(date), "Thu Jan  1 00:00:00 1970");
	fprintf(x->f, "From MAILER-DAEMON %s\n", date);
	mbox_quoter_init(&q);
	for (;;) {
		ssize_t k = read(fd, buf, sizeof(buf));

		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0) {
			snprintf(x->err, x->errlen, "reading message %u: %s", m->uid, strerror(errno));
			return -1;
		}
		if (k == 0)
			break;
		mbox_quote(&q, buf, (size_t)k, f_emit, x);
	}
	mbox_quote_finish(&q, f_emit, x);
	f_emit(x, "\n", 1);
	if (x->werr || ferror(x->f)) {
		snprintf(x->err, x->errlen, "write %s: %s", x->fpath, strerror(errno));
		return -1;
	}
	return 1;
}

static int export_mailbox(struct exp *x, const struct idx_mailbox *mb, const char *target)
{
	struct idx_uidstate *uids = NULL;
	struct maildir_keywords kw;
	size_t n = 0;
	int r = -1;

	maildir_keywords_init(&kw);
	if (x->fmt == IDX_FMT_MAILDIR) {
		if (mkdirs(target, x->err, x->errlen) < 0 || maildir_folder_create(target, "", x->err, x->errlen) < 0)
			goto out;
	} else {
		char dir[4096];
		const char *sl = strrchr(target, '/');

		if (sl != NULL && sl != target) {
			snprintf(dir, sizeof(dir), "%.*s", (int)(sl - target), target);
			if (mkdirs(dir, x->err, x->errlen) < 0)
				goto out;
		}
		x->f = fopen(target, "we");
		if (x->f == NULL) {
			snprintf(x->err, x->errlen, "create %s: %s", target, strerror(errno));
			goto out;
		}
		x->fpath = target;
		x->werr = false;
	}
	if (idx_mailbox_uids(x->a, mb->id, &uids, &n, x->err, x->errlen) < 0)
		goto out;
	for (size_t i = 0; i < n; i++) {
		struct idx_message m = { 0 };
		int fd = -1, k;

		k = idx_message_get(x->a, mb->id, uids[i].uid, &m, x->err, x->errlen);
		if (k < 0)
			goto out;
		if (k == 0)
			continue; /* expunged meanwhile */
		k = idx_message_open(x->a, &m, &fd, x->err, x->errlen);
		if (k == 0) {
			/* Gone: the sync in idx_message_open made it a tombstone
			 * unless the index cannot account for it. */
			struct idx_message again = { 0 };

			k = idx_message_get(x->a, mb->id, m.uid, &again, x->err, x->errlen);
			idx_message_clear(&again);
			idx_message_clear(&m);
			if (k == 0)
				continue;
			if (k > 0)
				snprintf(x->err, x->errlen, "mailbox %s: file of message %u is missing (run verifydata)",
				    mb->name, uids[i].uid);
			goto out;
		}
		if (k < 0) {
			idx_message_clear(&m);
			goto out;
		}
		if (k == 2) {
			/* Renamed by another tool: export the flags its name has now. */
			struct idx_message now = { 0 };

			if (idx_message_get(x->a, mb->id, m.uid, &now, x->err, x->errlen) > 0) {
				idx_message_clear(&m);
				m = now;
			}
		}
		k = x->fmt == IDX_FMT_MAILDIR ? maildir_one(x, target, &kw, &m, fd) : mbox_one(x, &m, fd);
		close(fd);
		idx_message_clear(&m);
		if (k < 0)
			goto out;
		tick(x);
	}
	if (x->fmt == IDX_FMT_MAILDIR && maildir_keywords_write(&kw, target, x->err, x->errlen) < 0)
		goto out;
	r = 1;
out:
	if (x->f != NULL) {
		if (fclose(x->f) != 0 && r > 0) {
			snprintf(x->err, x->errlen, "close %s: %s", target, strerror(errno));
			r = -1;
		}
		x->f = NULL;
	}
	maildir_keywords_clear(&kw);
	free(uids);
	return r;
}

int idx_export(struct idx_account *a, enum idx_tool_format fmt, const char *mailbox, const char *dest,
    void (*progress)(void *arg, uint64_t n), void *arg, bool *missing_r, char *err, size_t errlen)
{
	struct exp x = { .a = a, .fmt = fmt, .progress = progress, .parg = arg, .err = err, .errlen = errlen };
	struct idx_mailbox *list = NULL;
	size_t n = 0;
	int r;

	if (missing_r != NULL)
		*missing_r = false;
	if (mailbox != NULL) {
		struct idx_mailbox mb = { 0 };

		r = idx_mailbox_get(a, mailbox, &mb, err, errlen);
		if (r <= 0) {
			if (r == 0 && missing_r != NULL)
				*missing_r = true;
			return r;
		}
		r = export_mailbox(&x, &mb, dest);
		idx_mailbox_clear(&mb);
		return r < 0 ? -1 : (int)x.count;
	}
	if (idx_mailbox_list(a, &list, &n, err, errlen) < 0)
		return -1;
	r = 1;
	for (size_t i = 0; i < n && r > 0; i++) {
		char target[4096], dirname[MAILDIR_NAME_BUFSIZE];
		int k;

		if (fmt == IDX_FMT_MAILDIR) {
			if (strcmp(list[i].name, "INBOX") == 0)
				dirname[0] = '\0';
			else if (maildir_folder_encode(list[i].name, dirname, sizeof(dirname), err, errlen) < 0) {
				r = -1;
				break;
			}
			k = snprintf(target, sizeof(target), "%s%s%s", dest, dirname[0] ? "/" : "", dirname);
		} else {
			k = snprintf(target, sizeof(target), "%s/%s.mbox", dest, list[i].name);
		}
		if (k < 0 || (size_t)k >= sizeof(target)) {
			snprintf(err, errlen, "path too long: %s", dest);
			r = -1;
			break;
		}
		r = export_mailbox(&x, &list[i], target);
	}
	idx_mailbox_list_free(&list, n);
	return r < 0 ? -1 : (int)x.count;
}

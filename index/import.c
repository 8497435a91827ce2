/*
 * Importing a Maildir folder or an mbox file into one mailbox, in batches.
 *
 * Each step writes up to a batch of spool files (the maildir writer turns
 * bare LF into CRLF), finished without fsync, then hands them to one
 * idx_add, which syncs the filesystem once, links and commits. A crash
 * leaves at most linked files of the last batch that the index does not
 * know (the Maildir sync adopts them) and spool files (verifydata -fix
 * removes them): nothing is committed twice. An mbox is read in small
 * chunks through the pure parser, so memory does not grow with its size.
 */
#define _GNU_SOURCE
#include "index/index_private.h"
#include "index/tools.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "maildir/maildir.h"

#define READ_CHUNK 16384

struct imp_item {
	struct maildir_writer *w;
	uint32_t flags;
	char **keywords;
	size_t nkeywords;
	int64_t received;
};

struct idx_import {
	enum idx_tool_format fmt;
	char *path, *mailbox, *tmpdir;
	char host[256];
	uint32_t mbid;
	uint64_t count;
	struct imp_item *items;
	size_t n, cap;
	bool failed;
	char ferr[256];
	/* mbox */
	FILE *f;
	bool eof;
	struct mbox_parser parser;
	struct maildir_writer *cur;
	int64_t cur_received;
	uint32_t cur_flags;
	char **cur_kw;
	size_t cur_nkw;
	bool in_headers;
	bool bol;      /* at the start of a header line */
	bool hl_over;  /* the header did not fit in hl: its end is cut */
	size_t hlen;
	char hl[8192]; /* one unfolded header field */
	/* Maildir */
	bool scanned;
	struct maildir_scan scan;
	size_t *order;
	size_t next;
	struct maildir_keywords kw;
};

static char *xstrdup_(const char *s)
{
	char *p = strdup(s);

	if (p == NULL)
		abort();
	return p;
}

static void *xrealloc_(void *p, size_t n)
{
	p = realloc(p, n ? n : 1);
	if (p == NULL)
		abort();
	return p;
}

static void cur_kw_clear(struct idx_import *imp)
{
	for (size_t i = 0; i < imp->cur_nkw; i++)
		free(imp->cur_kw[i]);
	free(imp->cur_kw);
	imp->cur_kw = NULL;
	imp->cur_nkw = 0;
}

int idx_import_new(struct idx_import **imp_r, enum idx_tool_format fmt, const char *path, const char *mailbox,
    const char *tmpdir, char *err, size_t errlen)
{
	struct idx_import *imp;
	struct stat st;

	*imp_r = NULL;
	if (stat(path, &st) < 0) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		return -1;
	}
	if (fmt == IDX_FMT_MBOX && S_ISDIR(st.st_mode)) {
		snprintf(err, errlen, "%s: is a directory, not an mbox file", path);
		return -1;
	}
	if (fmt == IDX_FMT_MAILDIR && !S_ISDIR(st.st_mode)) {
		snprintf(err, errlen, "%s: not a Maildir directory", path);
		return -1;
	}
	imp = calloc(1, sizeof(*imp));
	if (imp == NULL)
		abort();
	imp->fmt = fmt;
	imp->path = xstrdup_(path);
	imp->mailbox = xstrdup_(mailbox);
	imp->tmpdir = xstrdup_(tmpdir);
	if (gethostname(imp->host, sizeof(imp->host) - 1) < 0 || imp->host[0] == '\0')
		snprintf(imp->host, sizeof(imp->host), "localhost");
	maildir_keywords_init(&imp->kw);
	mbox_parser_init(&imp->parser);
	if (fmt == IDX_FMT_MBOX) {
		imp->f = fopen(path, "re");
		if (imp->f == NULL) {
			snprintf(err, errlen, "%s: %s", path, strerror(errno));
			idx_import_free(&imp);
			return -1;
		}
	}
	*imp_r = imp;
	return 1;
}

void idx_import_free(struct idx_import **impp)
{
	struct idx_import *imp = *impp;

	if (imp == NULL)
		return;
	*impp = NULL;
	for (size_t i = 0; i < imp->n; i++)
		maildir_writer_free(&imp->items[i].w);
	free(imp->items);
	maildir_writer_free(&imp->cur);
	cur_kw_clear(imp);
	if (imp->f != NULL)
		fclose(imp->f);
	if (imp->scanned)
		maildir_scan_clear(&imp->scan);
	free(imp->order);
	maildir_keywords_clear(&imp->kw);
	free(imp->path);
	free(imp->mailbox);
	free(imp->tmpdir);
	free(imp);
}

uint64_t idx_import_count(const struct idx_import *imp)
{
	return imp->count;
}

static void item_push(struct idx_import *imp, struct maildir_writer *w, uint32_t flags, int64_t received)
{
	if (imp->n == imp->cap) {
		imp->cap = imp->cap ? imp->cap * 2 : 64;
		imp->items = xrealloc_(imp->items, imp->cap * sizeof(*imp->items));
	}
	imp->items[imp->n++] = (struct imp_item){ .w = w, .flags = flags, .received = received };
}

static void fail(struct idx_import *imp, const char *msg)
{
	if (!imp->failed)
		snprintf(imp->ferr, sizeof(imp->ferr), "%s", msg);
	imp->failed = true;
}

/* ---- mbox ---- */

/* One keyword of an X-Keywords field: kept when valid and new (case-insensitive). */
static void keyword_add(struct idx_import *imp, const char *p, size_t len)
{
	char kw[IDX_KEYWORD_MAX + 1];

	if (len == 0 || len > IDX_KEYWORD_MAX || imp->cur_nkw >= IDX_KEYWORDS_PER_MESSAGE)
		return;
	memcpy(kw, p, len);
	kw[len] = '\0';
	if (!maildir_keyword_valid(kw))
		return; /* junk from another program: skipped, the message is still imported */
	for (size_t i = 0; i < imp->cur_nkw; i++)
		if (strcasecmp(imp->cur_kw[i], kw) == 0)
			return;
	imp->cur_kw = xrealloc_(imp->cur_kw, (imp->cur_nkw + 1) * sizeof(char *));
	imp->cur_kw[imp->cur_nkw++] = xstrdup_(kw);
}

/*
 * Status: R is \Seen; X-Status: A answered, F flagged, T draft, D deleted
 * (mutt, Thunderbird). X-Keywords: keywords separated by spaces (Dovecot)
 * or commas (mutt); "$Forwarded" among them becomes the flag in idx_add.
 */
static void header_line(struct idx_import *imp)
{
	const char *v, *end = imp->hl + imp->hlen;
	uint32_t f = 0;

	if (imp->hlen > 7 && strncasecmp(imp->hl, "Status:", 7) == 0) {
		for (v = imp->hl + 7; v < end; v++)
			if (*v == 'R')
				f |= IDX_SEEN;
	} else if (imp->hlen > 9 && strncasecmp(imp->hl, "X-Status:", 9) == 0) {
		for (v = imp->hl + 9; v < end; v++) {
			if (*v == 'A')
				f |= IDX_ANSWERED;
			else if (*v == 'F')
				f |= IDX_FLAGGED;
			else if (*v == 'T')
				f |= IDX_DRAFT;
			else if (*v == 'D')
				f |= IDX_DELETED;
		}
	} else if (imp->hlen > 11 && strncasecmp(imp->hl, "X-Keywords:", 11) == 0) {
		for (v = imp->hl + 11; v < end;) {
			const char *t;

			while (v < end && (*v == ' ' || *v == '\t' || *v == ','))
				v++;
			for (t = v; v < end && *v != ' ' && *v != '\t' && *v != ','; v++)
				;
			if (v == end && imp->hl_over)
				break; /* cut off: not a whole keyword */
			keyword_add(imp, t, (size_t)(v - t));
		}
	}
	imp->cur_flags |= f;
}

static void header_flush(struct idx_import *imp)
{
	if (imp->hlen > 0)
		header_line(imp);
	imp->hlen = 0;
	imp->hl_over = false;
}

static void header_add(struct idx_import *imp, char c)
{
	if (imp->hlen < sizeof(imp->hl))
		imp->hl[imp->hlen++] = c;
	else
		imp->hl_over = true;
}

/* Unfold the header fields (continuation lines start with a space or tab)
 * and read each; the header ends at the first empty line. */
static void scan_headers(struct idx_import *imp, const char *p, size_t n)
{
	for (size_t i = 0; i < n && imp->in_headers; i++) {
		char c = p[i];

		if (c == '\r')
			continue;
		if (imp->bol) {
			imp->bol = false;
			if (c == '\n') {
				header_flush(imp);
				imp->in_headers = false;
				break;
			}
			if (c == ' ' || c == '\t') {
				header_add(imp, ' ');
				continue;
			}
			header_flush(imp);
		}
		if (c == '\n')
			imp->bol = true;
		else
			header_add(imp, c);
	}
}

static void sink_start(void *arg, const char *line, size_t len)
{
	struct idx_import *imp = arg;
	char err[256];

	if (imp->failed)
		return;
	if (maildir_writer_open(&imp->cur, imp->tmpdir, imp->host, err, sizeof(err)) < 0) {
		imp->cur = NULL;
		fail(imp, err);
		return;
	}
	imp->cur_received = mbox_fromline_time(line, len);
	imp->cur_flags = 0;
	cur_kw_clear(imp);
	imp->in_headers = true;
	imp->bol = true;
	imp->hl_over = false;
	imp->hlen = 0;
}

static void sink_data(void *arg, const char *p, size_t n)
{
	struct idx_import *imp = arg;
	char err[256];

	if (imp->failed || imp->cur == NULL)
		return;
	scan_headers(imp, p, n);
	if (maildir_writer_write(imp->cur, p, n, err, sizeof(err)) < 0)
		fail(imp, err);
}

static void sink_end(void *arg)
{
	struct idx_import *imp = arg;
	char err[256];

	if (imp->failed || imp->cur == NULL)
		return;
	if (imp->in_headers) { /* a message that is all header */
		header_flush(imp);
		imp->in_headers = false;
	}
	if (maildir_writer_finish(imp->cur, MAILDIR_FINISH_NOSYNC, err, sizeof(err)) < 0) {
		fail(imp, err);
		return;
	}
	if (maildir_writer_size(imp->cur) == 0) {
		maildir_writer_free(&imp->cur); /* an empty message: nothing to import */
		return;
	}
	item_push(imp, imp->cur, imp->cur_flags, imp->cur_received);
	imp->items[imp->n - 1].keywords = imp->cur_kw;
	imp->items[imp->n - 1].nkeywords = imp->cur_nkw;
	imp->cur_kw = NULL;
	imp->cur_nkw = 0;
	imp->cur = NULL;
}

static const struct mbox_sink sink = { sink_start, sink_data, sink_end };

static int fill_mbox(struct idx_import *imp, size_t max, char *err, size_t errlen)
{
	char buf[READ_CHUNK];

	while (!imp->eof && imp->n < max && !imp->failed) {
		size_t k = fread(buf, 1, sizeof(buf), imp->f);

		if (k > 0)
			mbox_parse(&imp->parser, buf, k, &sink, imp);
		if (k < sizeof(buf)) {
			if (ferror(imp->f)) {
				snprintf(err, errlen, "reading %s: %s", imp->path, strerror(errno));
				return -1;
			}
			mbox_parse_finish(&imp->parser, &sink, imp);
			imp->eof = true;
			if (imp->parser.messages == 0 && imp->parser.junk > 0 && !imp->failed) {
				snprintf(err, errlen, "%s: not an mbox file (no \"From \" line)", imp->path);
				return -1;
			}
		}
	}
	if (imp->failed) {
		snprintf(err, errlen, "%s", imp->ferr);
		return -1;
	}
	return 1;
}

/* ---- Maildir ---- */

static struct maildir_scan *sort_scan;

static int entry_cmp(const void *x, const void *y)
{
	const struct maildir_entry *a = &sort_scan->entries[*(const size_t *)x];
	const struct maildir_entry *b = &sort_scan->entries[*(const size_t *)y];

	return strcmp(a->filename, b->filename);
}

static int copy_file(struct idx_import *imp, int fd, struct maildir_writer *w, char *err, size_t errlen)
{
	char buf[65536];

	for (;;) {
		ssize_t k = read(fd, buf, sizeof(buf));

		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0) {
			snprintf(err, errlen, "reading message in %s: %s", imp->path, strerror(errno));
			return -1;
		}
		if (k == 0)
			return 1;
		if (maildir_writer_write(w, buf, (size_t)k, err, errlen) < 0)
			return -1;
	}
}

static int fill_maildir(struct idx_import *imp, size_t max, char *err, size_t errlen)
{
	if (!imp->scanned) {
		if (maildir_scan(imp->path, &imp->scan, err, errlen) < 0)
			return -1;
		imp->scanned = true;
		if (maildir_keywords_read(&imp->kw, imp->path, err, errlen) < 0)
			return -1;
		imp->order = xrealloc_(NULL, imp->scan.count * sizeof(size_t));
		for (size_t i = 0; i < imp->scan.count; i++)
			imp->order[i] = i;
		/* Base names start with the delivery time: keep the arrival order. */
		sort_scan = &imp->scan;
		qsort(imp->order, imp->scan.count, sizeof(size_t), entry_cmp);
		sort_scan = NULL;
	}
	while (imp->n < max && imp->next < imp->scan.count) {
		const struct maildir_entry *e = &imp->scan.entries[imp->order[imp->next++]];
		char path[4096];
		struct maildir_writer *w = NULL;
		struct stat st;
		int fd;

		if (snprintf(path, sizeof(path), "%s/%s/%s", imp->path, e->subdir == MAILDIR_NEW ? "new" : "cur",
			e->filename) >= (int)sizeof(path)) {
			snprintf(err, errlen, "path too long in %s", imp->path);
			return -1;
		}
		fd = open(path, O_RDONLY | O_CLOEXEC);
		if (fd < 0 && errno == ENOENT)
			continue; /* vanished (moved by its owner) */
		if (fd < 0 || fstat(fd, &st) < 0) {
			snprintf(err, errlen, "%s: %s", path, strerror(errno));
			if (fd >= 0)
				close(fd);
			return -1;
		}
		if (maildir_writer_open(&w, imp->tmpdir, imp->host, err, errlen) < 0 || copy_file(imp, fd, w, err, errlen) < 0 ||
		    maildir_writer_finish(w, MAILDIR_FINISH_NOSYNC, err, errlen) < 0) {
			close(fd);
			maildir_writer_free(&w);
			return -1;
		}
		close(fd);
		if (maildir_writer_size(w) == 0) {
			maildir_writer_free(&w);
			continue;
		}
		uint32_t flags = e->valid ? msg_name_flags(&imp->kw, e->name.flags, e->name.keywords) : 0;
		item_push(imp, w, flags, (int64_t)st.st_mtime);
		struct imp_item *it = &imp->items[imp->n - 1];
		for (int l = 0; e->valid && l < 26; l++) {
			const char *name = msg_name_keyword(&imp->kw, e->name.keywords, l);

			if (name == NULL || it->nkeywords >= IDX_KEYWORDS_PER_MESSAGE)
				continue;
			it->keywords = xrealloc_(it->keywords, (it->nkeywords + 1) * sizeof(char *));
			it->keywords[it->nkeywords++] = xstrdup_(name);
		}
	}
	return 1;
}

/* ---- the step ---- */

static void batch_clear(struct idx_import *imp)
{
	for (size_t i = 0; i < imp->n; i++) {
		struct imp_item *it = &imp->items[i];

		if (it->w != NULL)
			(void)maildir_writer_remove(it->w, NULL, 0);
		maildir_writer_free(&it->w);
		for (size_t k = 0; k < it->nkeywords; k++)
			free(it->keywords[k]);
		free(it->keywords);
	}
	imp->n = 0;
}

static int mailbox_ready(struct idx_import *imp, struct idx_account *a, char *err, size_t errlen)
{
	char canon[IDX_MAILBOX_NAME_MAX + 1];
	struct idx_mailbox mb = { 0 };
	int r;

	if (imp->mbid != 0)
		return 1;
	if (idx_mailbox_name_check(imp->mailbox, canon, sizeof(canon), err, errlen) < 0)
		return -1;
	r = idx_mailbox_get(a, canon, &mb, err, errlen);
	if (r < 0)
		return -1;
	if (r > 0) {
		imp->mbid = mb.id;
		idx_mailbox_clear(&mb);
		return 1;
	}
	r = idx_mailbox_create(a, canon, 0, true, &imp->mbid, err, errlen);
	if (r < 0)
		return -1;
	if (r == 0) { /* created meanwhile */
		if (idx_mailbox_get(a, canon, &mb, err, errlen) <= 0)
			return -1;
		imp->mbid = mb.id;
		idx_mailbox_clear(&mb);
	}
	return 1;
}

int idx_import_step(struct idx_import *imp, struct idx_account *a, size_t max, char *err, size_t errlen)
{
	struct idx_add *adds;
	int r;

	if (max == 0)
		max = IDX_IMPORT_BATCH;
	if (mailbox_ready(imp, a, err, errlen) < 0)
		return -1;
	r = imp->fmt == IDX_FMT_MBOX ? fill_mbox(imp, max, err, errlen) : fill_maildir(imp, max, err, errlen);
	if (r < 0 || imp->n == 0) {
		batch_clear(imp);
		return r < 0 ? -1 : 0;
	}
	adds = calloc(imp->n, sizeof(*adds));
	if (adds == NULL)
		abort();
	for (size_t i = 0; i < imp->n; i++) {
		adds[i].w = imp->items[i].w;
		adds[i].mailbox_id = imp->mbid;
		adds[i].flags = imp->items[i].flags;
		adds[i].keywords = (const char *const *)imp->items[i].keywords;
		adds[i].nkeywords = imp->items[i].nkeywords;
		adds[i].received = imp->items[i].received;
	}
	r = idx_add(a, adds, imp->n, err, errlen);
	if (r >= 0) {
		for (size_t i = 0; i < imp->n; i++) {
			if (adds[i].result > 0) {
				imp->count++;
				continue;
			}
			if (r >= 0)
				snprintf(err, errlen, "message %llu: %s", (unsigned long long)(imp->count + 1),
				    adds[i].err_r);
			r = -1;
		}
	}
	free(adds);
	batch_clear(imp);
	return r;
}

/*
 * Unit tests for the delivery log (index/wal.c): adds that go through it,
 * checkpoints, the entry parser, and the replay at open after a crash at
 * each point of an add. A crash is a child process (this binary started
 * again with "--wal-child MODE DIR OUT") that adds messages and _exit()s
 * without closing the account; what it added (UIDs, file paths) it writes
 * to OUT before and after each add, and the test reopens the account and
 * compares what a user would see: messages, UIDs, flags, keywords, bytes.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "index/index.h"
#include "index/index_private.h"
#include "maildir/maildir.h"
#include "t/unit/index_fixture.h"
#include "t/unit/index_check.h"

/* ---- messages the tests add ---- */

struct tgt {
	const char *mb;
	uint32_t flags;
	const char *kw;
};

struct spec {
	struct tgt t[2];
	size_t nt;
	size_t size;
};

/*
 * 0-5: the basic set (flags, keywords, a second mailbox, one message file
 * to two mailboxes); 6: the add that crashes in "testexit" and "again".
 * Numbers from 100 on: 4 KB messages to INBOX ("full").
 */
static const struct spec specs[] = {
	{{{"INBOX", 0, NULL}}, 1, 300},
	{{{"INBOX", IDX_SEEN | IDX_FLAGGED, "$Label1"}}, 1, 2000},
	{{{"Lists", 0, NULL}}, 1, 500},
	{{{"Lists", IDX_SEEN, "work"}}, 1, 5000},
	{{{"INBOX", IDX_ANSWERED, NULL}, {"Lists", 0, "$Label2"}}, 2, 1200},
	{{{"INBOX", 0, NULL}}, 1, 800},
	{{{"INBOX", IDX_SEEN, "$Label1"}, {"Lists", IDX_FLAGGED, NULL}}, 2, 3000},
};
#define NBASIC 6
/* The received time the child gives message i: RECEIVED + i, at +01:00. */
#define RECEIVED 1700000000
#define FULL_FIRST 100
#define FULL_N 400
#define MAXMSG (FULL_FIRST + FULL_N)

static struct spec spec_of(int i)
{
	if (i < (int)(sizeof(specs) / sizeof(specs[0])))
		return specs[i];
	return (struct spec){{{"INBOX", 0, NULL}}, 1, 4096};
}

/* The exact bytes of message i (CRLF lines, so the writer changes nothing); *len_r. */
static char *msg_text(int i, size_t size, size_t *len_r)
{
	char *b = malloc(size + 256);
	size_t n;
	int line = 0;

	if (b == NULL)
		abort();
	n = (size_t)snprintf(b, 256,
	    "From: <a@example.org>\r\nTo: <b@example.org>\r\nSubject: message %d\r\n"
	    "Message-ID: <m%d.wal@example.org>\r\n\r\n", i, i);
	while (n < size) {
		n += (size_t)snprintf(b + n, 80, "%06d-%04d abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJ\r\n", i,
		    line++);
	}
	*len_r = n;
	return b;
}

static struct maildir_writer *writer_sized(struct idx_account *a, int i, size_t size, char *err, size_t errlen)
{
	struct maildir_writer *w = NULL;
	char tmp[512];
	size_t len;
	char *text = msg_text(i, size, &len);

	snprintf(tmp, sizeof(tmp), "%s/tmp", idx_account_maildir(a));
	if (maildir_writer_open(&w, tmp, "test.example", err, errlen) < 0 ||
	    maildir_writer_write(w, text, len, err, errlen) < 0 ||
	    maildir_writer_finish(w, MAILDIR_FINISH_NOSYNC, err, errlen) < 0)
		maildir_writer_free(&w);
	free(text);
	return w;
}

static struct maildir_writer *writer_for(struct idx_account *a, int i, char *err, size_t errlen)
{
	return writer_sized(a, i, spec_of(i).size, err, errlen);
}

static uint32_t mb_id(struct idx_account *a, const char *name, uint32_t *uidnext_r)
{
	struct idx_mailbox mb;
	char err[256];
	uint32_t id = 0;

	if (idx_mailbox_get(a, name, &mb, err, sizeof(err)) > 0) {
		id = mb.id;
		if (uidnext_r != NULL)
			*uidnext_r = mb.uidnext;
		idx_mailbox_clear(&mb);
	}
	return id;
}

static int folder_of_mb(struct idx_account *a, const char *name, char *buf, size_t size)
{
	struct idx_mailbox mb;
	char err[256];
	int r;

	if (idx_mailbox_get(a, name, &mb, err, sizeof(err)) <= 0)
		return -1;
	r = idx_folder_path(a, mb.folder, buf, size, err, sizeof(err));
	idx_mailbox_clear(&mb);
	return r;
}

/* The path of message uid in mailbox name: 1, -1. */
static int msg_path(struct idx_account *a, const char *name, uint32_t uid, char *buf, size_t size)
{
	struct idx_message m;
	char folder[IDX_PATH_MAX], err[256];

	if (folder_of_mb(a, name, folder, sizeof(folder)) < 0 ||
	    idx_message_get(a, mb_id(a, name, NULL), uid, &m, err, sizeof(err)) <= 0)
		return -1;
	snprintf(buf, size, "%s/%s", folder, m.filename);
	idx_message_clear(&m);
	return 1;
}

static void *read_all(const char *path, size_t *len_r)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	struct stat st;
	uint8_t *b;
	size_t got = 0;

	if (fd < 0 || fstat(fd, &st) < 0) {
		if (fd >= 0)
			close(fd);
		return NULL;
	}
	b = malloc((size_t)st.st_size + 1);
	if (b == NULL)
		abort();
	while (got < (size_t)st.st_size) {
		ssize_t r = read(fd, b + got, (size_t)st.st_size - got);
		if (r <= 0)
			break;
		got += (size_t)r;
	}
	close(fd);
	*len_r = got;
	return b;
}

/* ---- the crashing side (a child process) ---- */

#define CK(cond)                                                                         \
	do {                                                                             \
		if (!(cond)) {                                                           \
			fprintf(stderr, "child %s:%d: %s (%s)\n", __FILE__, __LINE__, #cond, err); \
			_exit(2);                                                        \
		}                                                                        \
	} while (0)

static struct idx_options child_opts = {.host = "test.example"};

/* Offset in index.wal of the next entry, from what wal_room answers; 0 without a usable log. */
static uint64_t log_head(struct idx_account *a)
{
	uint64_t lo = 0, hi = WAL_SIZE;

	if (!wal_room(a, 0))
		return 0;
	while (lo < hi) {
		uint64_t mid = (lo + hi + 1) / 2;
		if (wal_room(a, (size_t)mid))
			lo = mid;
		else
			hi = mid - 1;
	}
	return WAL_SIZE - lo;
}

/* Add message i (one idx_add, one item per target, one writer); the UIDs it
 * will get go to out first, the paths after. */
static void child_add(struct idx_account *a, FILE *out, int i, bool crash)
{
	struct spec s = spec_of(i);
	struct idx_add it[2];
	const char *kws[2][1];
	uint32_t want[2];
	char err[256] = "";
	int r;

	memset(it, 0, sizeof(it));
	it[0].w = writer_for(a, i, err, sizeof(err));
	CK(it[0].w != NULL);
	for (size_t k = 0; k < s.nt; k++) {
		it[k].w = it[0].w;
		it[k].mailbox_id = mb_id(a, s.t[k].mb, &want[k]);
		CK(it[k].mailbox_id != 0);
		it[k].flags = s.t[k].flags;
		kws[k][0] = s.t[k].kw;
		it[k].keywords = s.t[k].kw != NULL ? kws[k] : NULL;
		it[k].nkeywords = s.t[k].kw != NULL ? 1 : 0;
		it[k].received = RECEIVED + i;
		it[k].received_tz = 60;
		fprintf(out, "uid %d %zu %u\n", i, k, want[k]);
	}
	fflush(out);
	a->wal_test_exit = crash;
	r = idx_add(a, it, s.nt, err, sizeof(err));
	CK(!crash); /* the add should have ended the process */
	CK(r == (int)s.nt);
	for (size_t k = 0; k < s.nt; k++) {
		char path[IDX_PATH_MAX + 300];

		CK(it[k].result == 1 && it[k].uid_r == want[k]);
		CK(msg_path(a, s.t[k].mb, want[k], path, sizeof(path)) > 0);
		fprintf(out, "path %d %zu %s\n", i, k, path);
	}
	fflush(out);
	maildir_writer_remove(it[0].w, NULL, 0);
	maildir_writer_free(&it[0].w);
}

static struct idx_account *child_open(const char *dir)
{
	struct idx_account *a = NULL;
	char err[256] = "";

	CK(idx_account_open(dir, &child_opts, &a, err, sizeof(err)) > 0);
	CK(idx_mailbox_create(a, "Lists", 0, true, NULL, err, sizeof(err)) >= 0);
	CK(a->wal != NULL);
	return a;
}

static int child_main(const char *mode, const char *dir, const char *outpath)
{
	FILE *out = fopen(outpath, "w");
	struct idx_account *a;
	char err[256] = "";

	CK(out != NULL);
	a = child_open(dir);
	if (strcmp(mode, "basic") == 0) {
		for (int i = 0; i < NBASIC; i++)
			child_add(a, out, i, false);
	} else if (strcmp(mode, "testexit") == 0) {
		for (int i = 0; i < NBASIC; i++)
			child_add(a, out, i, false);
		child_add(a, out, 6, true);
	} else if (strcmp(mode, "linkexit") == 0) {
		/* Killed between the link and the commit: message 5's file is in
		 * INBOX/new under the name its record was to have. */
		struct idx_add it;
		char folder[IDX_PATH_MAX], name[MAILDIR_NAME_BUFSIZE];
		uint32_t want;

		for (int i = 0; i < NBASIC - 1; i++)
			child_add(a, out, i, false);
		memset(&it, 0, sizeof(it));
		it.w = writer_for(a, 5, err, sizeof(err));
		CK(it.w != NULL);
		it.mailbox_id = mb_id(a, "INBOX", &want);
		CK(folder_of_mb(a, "INBOX", folder, sizeof(folder)) > 0);
		CK(maildir_writer_link(it.w, folder, MAILDIR_NEW, 0, 0, 0, name, sizeof(name), err, sizeof(err)) > 0);
		fprintf(out, "uid 5 0 %u\npath 5 0 %s/new/%s\n", want, folder, name);
		fflush(out);
		a->wal_test_exit = true;
		idx_add(a, &it, 1, err, sizeof(err));
		CK(false);
	} else if (strcmp(mode, "again") == 0) {
		child_add(a, out, 6, true);
	} else if (strcmp(mode, "batchexit") == 0) {
		/* One idx_add of three message files: three entries, one fdatasync. */
		struct idx_add it[3];
		const char *kw[1] = {"work"};
		static const int ids[3] = {0, 2, 3};

		memset(it, 0, sizeof(it));
		for (int k = 0; k < 3; k++) {
			struct spec s = spec_of(ids[k]);
			uint32_t want;

			it[k].w = writer_for(a, ids[k], err, sizeof(err));
			CK(it[k].w != NULL);
			it[k].mailbox_id = mb_id(a, s.t[0].mb, &want);
			it[k].flags = s.t[0].flags;
			it[k].keywords = s.t[0].kw != NULL ? kw : NULL;
			it[k].nkeywords = s.t[0].kw != NULL ? 1 : 0;
			fprintf(out, "uid %d 0 %u\n", ids[k], want + (k == 2 ? 1 : 0));
		}
		fflush(out);
		a->wal_test_exit = true;
		idx_add(a, it, 3, err, sizeof(err));
		CK(false);
	} else if (strcmp(mode, "full") == 0) {
		int ckpt = 0;

		for (int i = FULL_FIRST; i < FULL_FIRST + FULL_N; i++) {
			uint64_t before = log_head(a), after;

			child_add(a, out, i, false);
			after = log_head(a);
			CK(after != before);
			if (after < before)
				ckpt++;
		}
		fprintf(out, "ckpt %d\n", ckpt);
		fflush(out);
	} else if (strcmp(mode, "expunge") == 0) {
		/* Message 0 (INBOX UID 1) expunged after its logged add, before any checkpoint. */
		uint32_t uid = 1, n = 0;

		for (int i = 0; i < NBASIC; i++)
			child_add(a, out, i, false);
		CK(idx_expunge(a, mb_id(a, "INBOX", NULL), &uid, 1, &n, err, sizeof(err)) == 1 && n == 1);
	} else if (strcmp(mode, "store") == 0) {
		uint32_t uid = 1;
		char path[IDX_PATH_MAX + 300];

		for (int i = 0; i < NBASIC; i++)
			child_add(a, out, i, false);
		/* \Seen renames message 0 from new/ to cur/ before any checkpoint. */
		CK(idx_store(a, mb_id(a, "INBOX", NULL), &uid, 1, IDX_STORE_ADD, IDX_SEEN, NULL, 0, 0, NULL, NULL,
		    NULL, err, sizeof(err)) == 1);
		CK(msg_path(a, "INBOX", 1, path, sizeof(path)) > 0);
		fprintf(out, "path 0 0 %s\n", path);
		fflush(out);
	} else if (strcmp(mode, "cancel") == 0) {
		char folder[IDX_PATH_MAX], sub[IDX_PATH_MAX + 8];
		struct idx_add it;
		int fd;

		child_add(a, out, 0, false);
		/* Lists' new/ becomes a file: the link fails after the log's fdatasync. */
		CK(folder_of_mb(a, "Lists", folder, sizeof(folder)) > 0);
		snprintf(sub, sizeof(sub), "%s/new", folder);
		CK(rmdir(sub) == 0);
		fd = open(sub, O_WRONLY | O_CREAT | O_EXCL, 0600);
		CK(fd >= 0);
		close(fd);
		fprintf(out, "folder %s\n", folder);
		fflush(out);
		memset(&it, 0, sizeof(it));
		it.w = writer_for(a, 2, err, sizeof(err));
		CK(it.w != NULL);
		it.mailbox_id = mb_id(a, "Lists", NULL);
		CK(idx_add(a, &it, 1, err, sizeof(err)) < 0);
		CK(it.result < 0);
	} else if (strcmp(mode, "newlog") == 0) {
		char path[IDX_PATH_MAX];

		child_add(a, out, 0, false);
		child_add(a, out, 1, false);
		/* Closed cleanly (checkpointed); the log is moved away, as the open's
		 * error for a log with both headers damaged tells the admin to. */
		idx_account_close(&a);
		snprintf(path, sizeof(path), "%s/index.wal", dir);
		CK(unlink(path) == 0);
		a = child_open(dir);
		child_add(a, out, 5, true);
	} else {
		fprintf(stderr, "child: unknown mode %s\n", mode);
		_exit(2);
	}
	fclose(out);
	_exit(0); /* a crash: nothing closed, nothing checkpointed */
}

/* ---- the test side ---- */


/* What a child said it added. */
struct results {
	uint32_t uid[MAXMSG][2];
	char path[MAXMSG][2][IDX_PATH_MAX + 300];
	char folder[IDX_PATH_MAX];
	int ckpt;
};

static int setup(void **state)
{
	return fx_open_log(state, "test_index_wal", false, false);
}

/* An account directory only: the child creates the account. */
static int setup_dir(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));

	if (f == NULL)
		return -1;
	snprintf(f->root, sizeof(f->root), "/tmp/test_index_wal.XXXXXX");
	if (mkdtemp(f->root) == NULL)
		return -1;
	snprintf(f->dir, sizeof(f->dir), "%s/acct", f->root);
	f->opts.host = "test.example";
	*state = f;
	return 0;
}

/* Results of this test's children: freed by teardown (a failed or skipped test leaves early). */
static struct results *child_res[4];

static int teardown(void **state)
{
	for (size_t i = 0; i < sizeof(child_res) / sizeof(child_res[0]); i++) {
		free(child_res[i]);
		child_res[i] = NULL;
	}
	return fx_teardown(state);
}

static void reopen(struct fx *f)
{
	char err[256] = "";

	idx_account_close(&f->a);
	if (idx_account_open(f->dir, &f->opts, &f->a, err, sizeof(err)) < 0)
		fprintf(stderr, "reopen: %s\n", err);
	assert_non_null(f->a);
}

static struct results *run_child(struct fx *f, const char *mode)
{
	char out[128];
	struct results *res = calloc(1, sizeof(*res));
	char line[IDX_PATH_MAX + 400];
	FILE *fp;
	pid_t pid;
	int st = 0;

	assert_non_null(res);
	for (size_t i = 0; i < sizeof(child_res) / sizeof(child_res[0]); i++)
		if (child_res[i] == NULL) {
			child_res[i] = res;
			break;
		}
	assert_null(f->a); /* Tokyo Cabinet's lock: one opener at a time */
	snprintf(out, sizeof(out), "%s/child.out", f->root);
	char *argv[] = {"/proc/self/exe", "--wal-child", (char *)mode, f->dir, out, NULL};
	fflush(NULL);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		execv(argv[0], argv);
		_exit(127);
	}
	assert_int_equal(waitpid(pid, &st, 0), pid);
	assert_true(WIFEXITED(st));
	assert_int_equal(WEXITSTATUS(st), 0);
	fp = fopen(out, "r");
	assert_non_null(fp);
	while (fgets(line, sizeof(line), fp) != NULL) {
		int i;
		size_t k;
		unsigned u;
		char p[IDX_PATH_MAX + 300];

		line[strcspn(line, "\n")] = '\0';
		if (sscanf(line, "uid %d %zu %u", &i, &k, &u) == 3 && i >= 0 && i < MAXMSG && k < 2)
			res->uid[i][k] = u;
		else if (sscanf(line, "path %d %zu %s", &i, &k, p) == 3 && i >= 0 && i < MAXMSG && k < 2)
			snprintf(res->path[i][k], sizeof(res->path[i][k]), "%s", p);
		else if (strncmp(line, "folder ", 7) == 0 && strlen(line + 7) < sizeof(res->folder))
			memcpy(res->folder, line + 7, strlen(line + 7) + 1);
		else
			(void)sscanf(line, "ckpt %d", &res->ckpt);
	}
	fclose(fp);
	return res;
}

/* The file of message uid in mailbox mbid holds exactly text (read as a client would). */
static void expect_bytes(struct idx_account *a, uint32_t mbid, uint32_t uid, const char *text, size_t len)
{
	struct idx_message m;
	char err[256] = "", *buf = malloc(len + 1);
	size_t got = 0;
	int fd = -1, r;

	assert_non_null(buf);
	assert_int_equal(idx_message_get(a, mbid, uid, &m, err, sizeof(err)), 1);
	assert_int_equal(m.size, len);
	r = idx_message_open(a, &m, &fd, err, sizeof(err));
	if (r <= 0)
		fprintf(stderr, "mailbox %u uid %u: open: %d %s\n", mbid, uid, r, err);
	assert_true(r > 0);
	for (;;) {
		ssize_t n = read(fd, buf + got, len + 1 - got);
		if (n <= 0)
			break;
		got += (size_t)n;
	}
	close(fd);
	assert_int_equal(got, len);
	assert_memory_equal(buf, text, len);
	idx_message_clear(&m);
	free(buf);
}

/* Message i's target k is in its mailbox with the UID, flags, keywords and bytes it was added with. */
static void expect_msg(struct idx_account *a, int i, size_t k, uint32_t uid)
{
	struct spec s = spec_of(i);
	struct idx_message m;
	char err[256] = "";
	size_t len;
	char *text = msg_text(i, s.size, &len);
	uint32_t mbid = mb_id(a, s.t[k].mb, NULL);
	int r;

	assert_true(uid > 0);
	r = idx_message_get(a, mbid, uid, &m, err, sizeof(err));
	if (r != 1)
		fprintf(stderr, "message %d/%zu: %s uid %u: %d %s\n", i, k, s.t[k].mb, uid, r, err);
	assert_int_equal(r, 1);
	assert_int_equal(m.flags, s.t[k].flags);
	if (s.t[k].kw != NULL) {
		assert_int_equal(m.nkeywords, 1);
		assert_string_equal(m.keywords[0], s.t[k].kw);
	} else {
		assert_int_equal(m.nkeywords, 0);
	}
	if (i == 6) { /* added by a child, then again by the replay */
		assert_int_equal(m.received, RECEIVED + i);
		assert_int_equal(m.received_tz, 60);
	}
	idx_message_clear(&m);
	expect_bytes(a, mbid, uid, text, len);
	free(text);
}

static void expect_total(struct idx_account *a, const char *name, uint64_t total)
{
	struct idx_mailbox mb;
	char err[256];

	assert_int_equal(idx_mailbox_get(a, name, &mb, err, sizeof(err)), 1);
	assert_int_equal(mb.counts.total, total);
	idx_mailbox_clear(&mb);
}

/* Files in the mailbox's new/ and cur/: exactly one per message. */
static void expect_files(struct idx_account *a, const char *name, size_t n)
{
	char folder[IDX_PATH_MAX], sub[IDX_PATH_MAX + 8];
	size_t count = 0;

	assert_int_equal(folder_of_mb(a, name, folder, sizeof(folder)), 1);
	for (int c = 0; c < 2; c++) {
		DIR *d;
		struct dirent *de;

		snprintf(sub, sizeof(sub), "%s/%s", folder, c ? "cur" : "new");
		d = opendir(sub);
		assert_non_null(d);
		while ((de = readdir(d)) != NULL)
			if (de->d_name[0] != '.')
				count++;
		closedir(d);
	}
	assert_int_equal(count, n);
}

static struct idx_account_info info(struct idx_account *a)
{
	struct idx_account_info ai;
	char err[256];

	assert_true(idx_account_info(a, &ai, err, sizeof(err)) > 0);
	return ai;
}

/* The basic set, as the child reported it. */
static void expect_basic(struct idx_account *a, const struct results *res)
{
	for (int i = 0; i < NBASIC; i++)
		for (size_t k = 0; k < spec_of(i).nt; k++)
			expect_msg(a, i, k, res->uid[i][k]);
	/* INBOX 0 1 4 5, Lists 2 3 4: UIDs in the order of the adds */
	assert_int_equal(res->uid[0][0], 1);
	assert_int_equal(res->uid[5][0], 4);
	assert_int_equal(res->uid[4][1], 3);
	expect_total(a, "INBOX", 4);
	expect_total(a, "Lists", 3);
	expect_files(a, "INBOX", 4);
	expect_files(a, "Lists", 3);
}

/* ---- the log on disk ---- */

struct logscan {
	uint64_t salt, seq; /* of the newest header copy */
	size_t n;
	size_t off[1024];
	struct wal_entry e[1024];
	uint8_t *buf;
	size_t size;
};

/* Read index.wal and parse its entries as the replay does. */
static void log_scan(const char *dir, struct logscan *s)
{
	char path[256];
	uint64_t gen = 0;
	bool found = false;
	size_t off = WAL_DATA;

	memset(s, 0, sizeof(*s));
	snprintf(path, sizeof(path), "%s/index.wal", dir);
	s->buf = read_all(path, &s->size);
	assert_non_null(s->buf);
	assert_int_equal(s->size, WAL_SIZE);
	for (int c = 0; c < 2; c++) {
		const uint8_t *h = s->buf + c * 512;

		if (memcmp(h, "MOXWAL01", 8) != 0 || be32_get(h + 60) != wal_crc32c(h, 60))
			continue;
		if (!found || be64_get(h + 8) > gen) {
			gen = be64_get(h + 8);
			s->salt = be64_get(h + 16);
			s->seq = be64_get(h + 24);
			found = true;
		}
	}
	assert_true(found);
	while (s->n < 1024 && wal_entry_parse(s->buf + off, s->size - off, s->salt, s->seq + s->n, &s->e[s->n]) > 0) {
		s->off[s->n] = off;
		off += s->e[s->n].total;
		s->n++;
	}
}

static void truncate_file(const char *path)
{
	assert_int_equal(truncate(path, 0), 0);
}

/* ---- tests: adds through the log ---- */

static void add_one(struct idx_account *a, int i)
{
	struct spec s = spec_of(i);
	struct idx_add it[2];
	const char *kws[2][1];
	char err[256] = "";

	memset(it, 0, sizeof(it));
	it[0].w = writer_for(a, i, err, sizeof(err));
	assert_non_null(it[0].w);
	for (size_t k = 0; k < s.nt; k++) {
		it[k].w = it[0].w;
		it[k].mailbox_id = mb_id(a, s.t[k].mb, NULL);
		assert_true(it[k].mailbox_id != 0);
		it[k].flags = s.t[k].flags;
		kws[k][0] = s.t[k].kw;
		it[k].keywords = s.t[k].kw != NULL ? kws[k] : NULL;
		it[k].nkeywords = s.t[k].kw != NULL ? 1 : 0;
	}
	assert_int_equal(idx_add(a, it, s.nt, err, sizeof(err)), (int)s.nt);
	maildir_writer_remove(it[0].w, NULL, 0);
	maildir_writer_free(&it[0].w);
}

static void make_lists(struct idx_account *a)
{
	char err[256];

	assert_true(idx_mailbox_create(a, "Lists", 0, true, NULL, err, sizeof(err)) >= 0);
}

static void test_logged_adds(void **state)
{
	struct fx *f = *state;
	struct stat st;
	char path[256];
	uint64_t head;
	struct idx_account_info ai;

	make_lists(f->a);
	snprintf(path, sizeof(path), "%s/index.wal", f->dir);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_size, WAL_SIZE);
	assert_true(wal_empty(f->a));
	head = log_head(f->a);
	assert_int_equal(head, WAL_DATA);
	for (int i = 0; i < 4; i++) {
		add_one(f->a, i);
		assert_true(log_head(f->a) > head);
		head = log_head(f->a);
		assert_false(wal_empty(f->a));
	}
	/* The file never changes size. */
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_size, WAL_SIZE);
	expect_msg(f->a, 0, 0, 1);
	expect_msg(f->a, 1, 0, 2);
	expect_msg(f->a, 2, 0, 1);
	expect_msg(f->a, 3, 0, 2);
	CHECK(f->a);
	assert_int_equal(idx_checkpoint(f->a, NULL, 0), 1);
	assert_true(wal_empty(f->a));
	assert_int_equal(log_head(f->a), WAL_DATA);
	/* On disk too: no entry follows the newest header. */
	struct logscan *ls = malloc(sizeof(*ls));
	log_scan(f->dir, ls);
	assert_int_equal(ls->n, 0);
	assert_int_equal(ls->seq, 5);
	free(ls->buf);
	free(ls);
	/* Nothing to do for a second checkpoint. */
	assert_int_equal(idx_checkpoint(f->a, NULL, 0), 1);
	reopen(f);
	ai = info(f->a);
	assert_int_equal(ai.wal_applied, 0);
	assert_int_equal(ai.wal_restored, 0);
	expect_msg(f->a, 0, 0, 1);
	expect_msg(f->a, 3, 0, 2);
	/* New entries go on after the checkpointed ones. */
	add_one(f->a, 4);
	expect_msg(f->a, 4, 0, 3);
	expect_msg(f->a, 4, 1, 3);
	CHECK(f->a);
}

/* The entry on disk says what the message is: mailbox, UID, flags, keywords, name, bytes. */
static void test_entry_matches_message(void **state)
{
	struct fx *f = *state;
	struct logscan *ls = malloc(sizeof(*ls));
	struct wal_target_dec t;
	struct idx_message m;
	char err[256];
	size_t off = 0, len;
	char *text;

	make_lists(f->a);
	add_one(f->a, 0);
	add_one(f->a, 4);
	log_scan(f->dir, ls);
	assert_int_equal(ls->n, 2);
	assert_int_equal(ls->e[1].type, 1);
	assert_int_equal(ls->e[1].ntargets, 2);
	for (size_t k = 0; k < 2; k++) {
		struct spec s = spec_of(4);
		char folder[IDX_PATH_MAX];

		assert_int_equal(wal_target_next(&ls->e[1], &off, &t), 1);
		assert_int_equal(t.mbid, mb_id(f->a, s.t[k].mb, NULL));
		assert_int_equal(t.uid, k == 0 ? 2 : 1);
		assert_int_equal(t.flags, s.t[k].flags);
		assert_int_equal(t.nkeywords, s.t[k].kw != NULL ? 1 : 0);
		if (s.t[k].kw != NULL)
			assert_string_equal(t.keywords[0], s.t[k].kw);
		assert_int_equal(idx_message_get(f->a, t.mbid, t.uid, &m, err, sizeof(err)), 1);
		assert_int_equal(strcspn(t.name, ",:"), strlen(t.name));
		assert_int_equal(strncmp(msg_basename(m.filename), t.name, strlen(t.name)), 0);
		assert_true(folder_of_mb(f->a, s.t[k].mb, folder, sizeof(folder)) > 0);
		idx_message_clear(&m);
		wal_target_clear(&t);
	}
	text = msg_text(4, spec_of(4).size, &len);
	assert_int_equal(ls->e[1].content_len, len);
	assert_memory_equal(ls->e[1].body + off, text, len);
	free(text);
	free(ls->buf);
	free(ls);
}

/* A message larger than IDX_LOGGED_MAX takes the three flushes: the log does not move. */
/* The log cannot be created: the account opens and works without one, and says why. */
static void test_log_not_created(void **state)
{
	struct fx *f = *state;
	char path[600], err[256];
	struct stat st;

	assert_int_equal(mkdir(f->dir, 0700), 0);
	snprintf(path, sizeof(path), "%s/index.wal.new", f->dir);
	assert_int_equal(mkdir(path, 0700), 0); /* where the new log is written first */
	assert_int_equal(idx_account_open(f->dir, &f->opts, &f->a, err, sizeof(err)), 1);
	struct idx_account_info ai = info(f->a);
	assert_true(ai.wal_error[0] != '\0');
	assert_null(f->a->wal);
	add_one(f->a, 0);
	snprintf(path, sizeof(path), "%s/index.wal", f->dir);
	assert_int_equal(stat(path, &st), -1);
	CHECK(f->a);
}

static void test_large_not_logged(void **state)
{
	struct fx *f = *state;
	struct idx_add it;
	char err[256] = "", tmp[512];
	size_t len = IDX_LOGGED_MAX + 4096, got;
	char *big = malloc(len), *back;
	uint64_t head;
	struct idx_message m;
	char folder[IDX_PATH_MAX], path[IDX_PATH_MAX + 300];

	assert_non_null(big);
	add_one(f->a, 0); /* a logged one first: the log is not empty */
	head = log_head(f->a);
	assert_true(head > WAL_DATA);
	memcpy(big, "Subject: big\r\n\r\n", 16);
	for (size_t i = 16; i < len; i += 64) {
		size_t n = len - i < 64 ? len - i : 64;
		memset(big + i, 'a' + (int)(i / 64 % 26), n);
		if (n >= 2)
			memcpy(big + i + n - 2, "\r\n", 2);
	}
	memset(&it, 0, sizeof(it));
	snprintf(tmp, sizeof(tmp), "%s/tmp", idx_account_maildir(f->a));
	assert_int_equal(maildir_writer_open(&it.w, tmp, "test.example", err, sizeof(err)), 1);
	assert_int_equal(maildir_writer_write(it.w, big, len, err, sizeof(err)), 1);
	assert_int_equal(maildir_writer_finish(it.w, MAILDIR_FINISH_NOSYNC, err, sizeof(err)), 1);
	assert_true(maildir_writer_size(it.w) > IDX_LOGGED_MAX);
	it.mailbox_id = fx_inbox(f->a);
	assert_int_equal(idx_add(f->a, &it, 1, err, sizeof(err)), 1);
	assert_int_equal(it.uid_r, 2);
	maildir_writer_remove(it.w, NULL, 0);
	maildir_writer_free(&it.w);
	assert_int_equal(log_head(f->a), head);
	assert_int_equal(idx_message_get(f->a, fx_inbox(f->a), 2, &m, err, sizeof(err)), 1);
	assert_int_equal(folder_of_mb(f->a, "INBOX", folder, sizeof(folder)), 1);
	snprintf(path, sizeof(path), "%s/%s", folder, m.filename);
	back = read_all(path, &got);
	assert_non_null(back);
	assert_int_equal(got, len);
	assert_memory_equal(back, big, len);
	free(back);
	idx_message_clear(&m);
	free(big);
	expect_msg(f->a, 0, 0, 1);
	CHECK(f->a);
	reopen(f);
	assert_int_equal(info(f->a).wal_applied, 0);
	expect_total(f->a, "INBOX", 2);
}

/* Copy and move give messages another identity: the log is checkpointed first. */
static void test_copy_move_checkpoint(void **state)
{
	struct fx *f = *state;
	uint32_t uid = 1, nu = 0, lists;
	char err[256] = "";

	make_lists(f->a);
	lists = mb_id(f->a, "Lists", NULL);
	add_one(f->a, 0);
	add_one(f->a, 1);
	assert_false(wal_empty(f->a));
	assert_int_equal(idx_copy(f->a, fx_inbox(f->a), &uid, 1, lists, &nu, NULL, err, sizeof(err)), 1);
	assert_true(wal_empty(f->a));
	assert_int_equal(nu, 1);
	add_one(f->a, 5);
	assert_false(wal_empty(f->a));
	uid = 2;
	assert_int_equal(idx_move(f->a, fx_inbox(f->a), &uid, 1, lists, &nu, err, sizeof(err)), 1);
	assert_true(wal_empty(f->a));
	assert_int_equal(nu, 2);
	expect_total(f->a, "INBOX", 2);
	expect_total(f->a, "Lists", 2);
	expect_msg(f->a, 0, 0, 1);
	expect_msg(f->a, 5, 0, 3);
	CHECK(f->a);
}

static void test_checkpoint_idle(void **state)
{
	struct fx *f = *state;

	assert_int_equal(idx_checkpoint_idle(f->a, 0, NULL, 0), 0); /* empty */
	add_one(f->a, 0);
	assert_int_equal(idx_checkpoint_idle(f->a, 3600 * 1000, NULL, 0), 0); /* not idle long enough */
	assert_false(wal_empty(f->a));
	assert_int_equal(idx_checkpoint_idle(f->a, 0, NULL, 0), 1);
	assert_true(wal_empty(f->a));
	assert_int_equal(idx_checkpoint_idle(f->a, 0, NULL, 0), 0);
}

/* Without fsync (tests, imports) or with no_log there is no log. */
static void test_no_log(void **state)
{
	struct fx *f = *state;
	char path[256];
	struct stat st;

	snprintf(path, sizeof(path), "%s/index.wal", f->dir);
	assert_int_equal(stat(path, &st), -1);
	assert_null(f->a->wal);
	add_one(f->a, 0);
	assert_int_equal(stat(path, &st), -1);
	expect_msg(f->a, 0, 0, 1);
}

static int setup_nofsync(void **state)
{
	return fx_open_log(state, "test_index_wal", true, false);
}

static int setup_nolog(void **state)
{
	return fx_open_log(state, "test_index_wal", false, true);
}

/* ---- tests: crashes ---- */

/* Killed after the commit, before a checkpoint: everything is there, nothing to redo. */
static void test_crash_after_commit(void **state)
{
	struct fx *f = *state;
	struct results *res = run_child(f, "basic");
	struct idx_account_info ai;

	reopen(f);
	ai = info(f->a);
	assert_int_equal(ai.wal_applied, 0);
	assert_int_equal(ai.wal_restored, 0);
	expect_basic(f->a, res);
	assert_true(wal_empty(f->a)); /* the replay checkpoints */
	CHECK(f->a);
}

/* Give the log's header another boot id: its entries outlived a reboot. */
static void log_set_other_boot(const char *dir)
{
	char path[256];
	size_t size;
	uint8_t *buf;
	FILE *fp;

	snprintf(path, sizeof(path), "%s/index.wal", dir);
	buf = read_all(path, &size);
	assert_non_null(buf);
	for (int c = 0; c < 2; c++) {
		uint8_t *h = buf + c * 512;
		if (memcmp(h, "MOXWAL01", 8) != 0 || be32_get(h + 60) != wal_crc32c(h, 60))
			continue;
		memset(h + 36, 0xa5, 16);
		be32_put(h + 60, wal_crc32c(h, 60));
	}
	fp = fopen(path, "r+");
	assert_non_null(fp);
	assert_int_equal(fwrite(buf, 1, 1024, fp), 1024);
	fclose(fp);
	free(buf);
}

static uint32_t inbox_total(struct idx_account *a)
{
	struct idx_mailbox mb;
	char err[256];
	uint32_t n;

	assert_int_equal(idx_mailbox_get(a, "INBOX", &mb, err, sizeof(err)), 1);
	n = mb.counts.total;
	idx_mailbox_clear(&mb);
	return n;
}

/* A crash (same boot): the index is trusted, an expunge since the add stays. */
static void test_same_boot_keeps_expunge(void **state)
{
	struct fx *f = *state;

	run_child(f, "expunge");
	reopen(f);
	struct idx_account_info ai = info(f->a);
	assert_int_equal(ai.wal_applied, 0);
	assert_int_equal(inbox_total(f->a), 3); /* basic puts 4 in INBOX */
	CHECK(f->a);
}

/*
 * After a reboot (a power loss may have kept any subset of the index's
 * unsynced pages) the index is not trusted: a logged message without a
 * record is added again, even one expunged in that window; none twice.
 */
static void test_rebooted_distrusts_index(void **state)
{
	struct fx *f = *state;

	run_child(f, "expunge");
	log_set_other_boot(f->dir);
	reopen(f);
	struct idx_account_info ai = info(f->a);
	assert_int_equal(ai.wal_applied, 1);
	assert_int_equal(inbox_total(f->a), 4);
	CHECK(f->a);
	/* The header now names this boot: the next open trusts the index again. */
	reopen(f);
	ai = info(f->a);
	assert_int_equal(ai.wal_applied + ai.wal_restored, 0);
	assert_int_equal(inbox_total(f->a), 4);
}

/*
 * A power loss after a commit whose log entry was still being synced (the
 * commit does not wait for it): the index kept the record, the entry and the
 * file's data were lost. The message was never acknowledged; after the
 * reboot its record goes, and nothing else does.
 */
static void test_rebooted_drops_unlogged(void **state)
{
	struct fx *f = *state;
	struct results *res = run_child(f, "basic");
	struct logscan *ls = malloc(sizeof(*ls));
	char path[256];
	int fd;

	log_scan(f->dir, ls);
	assert_int_equal(ls->n, NBASIC);
	snprintf(path, sizeof(path), "%s/index.wal", f->dir);
	fd = open(path, O_WRONLY);
	assert_true(fd >= 0);
	assert_int_equal(pwrite(fd, "\0", 1, (off_t)ls->off[NBASIC - 1]), 1); /* the last entry never arrived */
	close(fd);
	free(ls->buf);
	free(ls);
	for (size_t k = 0; k < spec_of(NBASIC - 1).nt; k++)
		truncate_file(res->path[NBASIC - 1][k]);
	log_set_other_boot(f->dir);
	reopen(f);
	struct idx_account_info ai = info(f->a);
	assert_int_equal(ai.wal_dropped, spec_of(NBASIC - 1).nt);
	assert_int_equal(ai.wal_applied, 0);
	for (int i = 0; i < NBASIC - 1; i++)
		for (size_t k = 0; k < spec_of(i).nt; k++)
			expect_msg(f->a, i, k, res->uid[i][k]);
	CHECK(f->a);
}

/* Power loss after the commit: one file's data and another's directory entry
 * never reached the disk. The replay writes both again from the log. */
static void test_power_loss_files(void **state)
{
	struct fx *f = *state;
	struct results *res = run_child(f, "basic");
	struct idx_account_info ai;

	assert_true(res->path[1][0][0] != '\0' && res->path[2][0][0] != '\0');
	assert_non_null(strstr(res->path[1][0], "/cur/"));
	assert_non_null(strstr(res->path[2][0], "/new/"));
	truncate_file(res->path[1][0]);
	assert_int_equal(unlink(res->path[2][0]), 0);
	reopen(f);
	ai = info(f->a);
	assert_int_equal(ai.wal_restored, 2);
	assert_int_equal(ai.wal_applied, 0);
	expect_basic(f->a, res);
	CHECK(f->a);
	/* Durable now: a second open finds nothing to do. */
	reopen(f);
	ai = info(f->a);
	assert_int_equal(ai.wal_restored + ai.wal_applied, 0);
}

/* Killed after the log's fdatasync, before the commit: the transaction is
 * gone; the replay adds the message again with the UIDs it had. */
static void test_crash_before_commit(void **state)
{
	struct fx *f = *state;
	struct results *res = run_child(f, "testexit");
	struct idx_account_info ai;

	reopen(f);
	ai = info(f->a);
	assert_int_equal(ai.wal_applied, 1);
	assert_int_equal(ai.wal_restored, 0);
	assert_int_equal(res->uid[6][0], 5);
	assert_int_equal(res->uid[6][1], 4);
	for (int i = 0; i < NBASIC; i++)
		for (size_t k = 0; k < spec_of(i).nt; k++)
			expect_msg(f->a, i, k, res->uid[i][k]);
	expect_msg(f->a, 6, 0, 5);
	expect_msg(f->a, 6, 1, 4);
	expect_total(f->a, "INBOX", 5);
	expect_total(f->a, "Lists", 4);
	expect_files(f->a, "INBOX", 5);
	expect_files(f->a, "Lists", 4);
	CHECK(f->a);
	/* A UID is not given twice: the next add follows. */
	add_one(f->a, 5);
	expect_msg(f->a, 5, 0, 6);
	reopen(f);
	assert_int_equal(info(f->a).wal_applied, 0);
	expect_total(f->a, "INBOX", 6);
	CHECK(f->a);
}

/* One idx_add of three messages, killed before the commit: three entries replayed. */
static void test_batch_crash_before_commit(void **state)
{
	struct fx *f = *state;
	run_child(f, "batchexit");

	reopen(f);
	assert_int_equal(info(f->a).wal_applied, 3);
	expect_msg(f->a, 0, 0, 1);
	expect_msg(f->a, 2, 0, 1);
	expect_msg(f->a, 3, 0, 2);
	expect_total(f->a, "INBOX", 1);
	expect_total(f->a, "Lists", 2);
	expect_files(f->a, "INBOX", 1);
	expect_files(f->a, "Lists", 2);
	CHECK(f->a);
}

/* A flag change renamed a logged message's file before the crash: the replay
 * finds it under its new name (and restores it there). */
static void test_crash_after_store(void **state)
{
	struct fx *f = *state;
	struct results *res = run_child(f, "store");
	struct idx_message m;
	char err[256];

	assert_non_null(strstr(res->path[0][0], "/cur/"));
	truncate_file(res->path[0][0]);
	reopen(f);
	assert_int_equal(info(f->a).wal_restored, 1);
	assert_int_equal(idx_message_get(f->a, fx_inbox(f->a), 1, &m, err, sizeof(err)), 1);
	assert_int_equal(m.flags, IDX_SEEN);
	idx_message_clear(&m);
	size_t len, got;
	char *text = msg_text(0, spec_of(0).size, &len), *back = read_all(res->path[0][0], &got);
	assert_non_null(back);
	assert_int_equal(got, len);
	assert_memory_equal(back, text, len);
	free(back);
	free(text);
	expect_files(f->a, "INBOX", 4);
	CHECK(f->a);
}

/* A torn last entry (its CRC fails): the entries before it are still checked;
 * the open does not fail. */
static void test_torn_last_entry(void **state)
{
	struct fx *f = *state;
	struct results *res = run_child(f, "basic");
	struct logscan *ls = malloc(sizeof(*ls));
	struct idx_message m;
	struct idx_account_info ai;
	char path[256], err[256];
	size_t mid;
	int fd;

	log_scan(f->dir, ls);
	assert_int_equal(ls->n, NBASIC);
	mid = ls->off[NBASIC - 1] + ls->e[NBASIC - 1].total / 2;
	ls->buf[mid] ^= 0x5a;
	snprintf(path, sizeof(path), "%s/index.wal", f->dir);
	fd = open(path, O_WRONLY);
	assert_true(fd >= 0);
	assert_int_equal(pwrite(fd, ls->buf + mid, 1, (off_t)mid), 1);
	close(fd);
	free(ls->buf);
	free(ls);
	truncate_file(res->path[NBASIC - 1][0]); /* the torn entry's message */
	truncate_file(res->path[0][0]);          /* an intact entry's message */
	reopen(f);
	ai = info(f->a);
	assert_int_equal(ai.wal_restored, 1);
	assert_int_equal(ai.wal_applied, 0);
	for (int i = 0; i < NBASIC - 1; i++)
		for (size_t k = 0; k < spec_of(i).nt; k++)
			expect_msg(f->a, i, k, res->uid[i][k]);
	/* The last one keeps its record; its bytes were only in the torn entry. */
	assert_int_equal(idx_message_get(f->a, fx_inbox(f->a), res->uid[NBASIC - 1][0], &m, err, sizeof(err)), 1);
	idx_message_clear(&m);
	expect_total(f->a, "INBOX", 4);
}

/* A torn entry the index had not committed (the crash came while the log was
 * being written): the message was never acknowledged and is not added; the
 * log goes on with that sequence number, and a later crash is replayed. */
static void test_torn_uncommitted_entry(void **state)
{
	struct fx *f = *state;
	struct logscan *ls = malloc(sizeof(*ls));
	struct results *res2;
	char path[256];
	size_t mid;
	int fd;

	run_child(f, "testexit");
	log_scan(f->dir, ls);
	assert_int_equal(ls->n, NBASIC + 1);
	mid = ls->off[NBASIC] + ls->e[NBASIC].total / 2;
	ls->buf[mid] ^= 0x5a;
	snprintf(path, sizeof(path), "%s/index.wal", f->dir);
	fd = open(path, O_WRONLY);
	assert_true(fd >= 0);
	assert_int_equal(pwrite(fd, ls->buf + mid, 1, (off_t)mid), 1);
	close(fd);
	free(ls->buf);
	free(ls);
	reopen(f);
	assert_int_equal(info(f->a).wal_applied, 0);
	expect_total(f->a, "INBOX", 4);
	expect_total(f->a, "Lists", 3);
	expect_files(f->a, "INBOX", 4);
	CHECK(f->a);
	idx_account_close(&f->a);
	res2 = run_child(f, "again");
	reopen(f);
	assert_int_equal(info(f->a).wal_applied, 1);
	assert_int_equal(res2->uid[6][0], 5);
	expect_msg(f->a, 6, 0, 5);
	expect_msg(f->a, 6, 1, 4);
	CHECK(f->a);
}

/*
 * After a replay that stopped at a damaged entry the index had committed,
 * a later add killed before its commit must still be added again at the
 * next open: new entries take sequence numbers after the index's `W`, not
 * after the entries the replay could read (else the next replay would take
 * the entry for committed and skip it: the message would be lost).
 */
static void test_torn_then_crash_before_commit(void **state)
{
	struct fx *f = *state;
	struct results *res2;
	struct logscan *ls = malloc(sizeof(*ls));
	char path[256];
	size_t mid;
	int fd;

	run_child(f, "basic");
	log_scan(f->dir, ls);
	assert_int_equal(ls->n, NBASIC);
	mid = ls->off[NBASIC - 1] + ls->e[NBASIC - 1].total / 2;
	snprintf(path, sizeof(path), "%s/index.wal", f->dir);
	fd = open(path, O_WRONLY);
	assert_true(fd >= 0);
	ls->buf[mid] ^= 0x5a;
	assert_int_equal(pwrite(fd, ls->buf + mid, 1, (off_t)mid), 1);
	close(fd);
	free(ls->buf);
	free(ls);
	reopen(f);
	idx_account_close(&f->a);
	res2 = run_child(f, "again");
	reopen(f);
	assert_int_equal(info(f->a).wal_applied, 1);
	expect_msg(f->a, 6, 0, res2->uid[6][0]);
	expect_msg(f->a, 6, 1, res2->uid[6][1]);
	CHECK(f->a);
}

/*
 * A new log (the old one moved away, as the open's error for a log with both
 * headers damaged says to do): an add killed before its commit must still be
 * added again at the next open: the new log's sequence numbers start after
 * the index's `W` (from 1, the entry would read as committed and be lost).
 */
static void test_new_log_crash_before_commit(void **state)
{
	struct fx *f = *state;
	struct results *res = run_child(f, "newlog");

	assert_int_equal(res->uid[5][0], 3);
	reopen(f);
	assert_int_equal(info(f->a).wal_applied, 1);
	expect_msg(f->a, 0, 0, 1);
	expect_msg(f->a, 1, 0, 2);
	expect_msg(f->a, 5, 0, 3);
	expect_total(f->a, "INBOX", 3);
	CHECK(f->a);
}

/* More than the log holds, one message per add: it checkpoints by itself;
 * after a crash at the end everything is there. */
static void test_full_log(void **state)
{
	struct fx *f = *state;
	struct results *res = run_child(f, "full");
	struct idx_account_info ai;

	assert_true(res->ckpt >= 1);
	reopen(f);
	ai = info(f->a);
	assert_int_equal(ai.wal_applied, 0);
	assert_int_equal(ai.wal_restored, 0);
	for (int i = FULL_FIRST; i < FULL_FIRST + FULL_N; i++) {
		assert_int_equal(res->uid[i][0], (uint32_t)(i - FULL_FIRST + 1));
		expect_msg(f->a, i, 0, res->uid[i][0]);
	}
	expect_total(f->a, "INBOX", FULL_N);
	expect_files(f->a, "INBOX", FULL_N);
	CHECK(f->a);
}

/* The link fails after the log's fdatasync: the entry is cancelled, so a
 * crash right after does not bring back the message the client was told
 * failed (its retry would make a duplicate). */
static void test_cancel(void **state)
{
	struct fx *f = *state;
	struct results *res = run_child(f, "cancel");
	struct logscan *ls = malloc(sizeof(*ls));
	char sub[IDX_PATH_MAX + 8];

	log_scan(f->dir, ls);
	assert_int_equal(ls->n, 3);
	assert_int_equal(ls->e[1].type, 1);
	assert_int_equal(ls->e[2].type, 2);
	assert_int_equal(ls->e[2].arg, ls->e[1].seq);
	assert_int_equal(ls->e[2].count, 1);
	free(ls->buf);
	free(ls);
	/* The obstacle goes, so a replayed add could link. */
	assert_true(res->folder[0] != '\0');
	snprintf(sub, sizeof(sub), "%s/new", res->folder);
	assert_int_equal(unlink(sub), 0);
	assert_int_equal(mkdir(sub, 0700), 0);
	reopen(f);
	assert_int_equal(info(f->a).wal_applied, 0);
	expect_msg(f->a, 0, 0, 1);
	expect_total(f->a, "INBOX", 1);
	expect_total(f->a, "Lists", 0);
	expect_files(f->a, "Lists", 0);
	CHECK(f->a);
}

/* Killed between the link and the commit: the replay adds the message again
 * and the link made before the crash does not stay beside it. */
static void test_crash_after_link(void **state)
{
	struct fx *f = *state;
	struct results *res = run_child(f, "linkexit");
	struct stat st;

	assert_int_equal(stat(res->path[5][0], &st), 0); /* the link of the crashed add */
	reopen(f);
	assert_int_equal(info(f->a).wal_applied, 1);
	assert_int_equal(res->uid[5][0], 4);
	for (int i = 0; i < NBASIC; i++)
		for (size_t k = 0; k < spec_of(i).nt; k++)
			expect_msg(f->a, i, k, res->uid[i][k]);
	expect_total(f->a, "INBOX", 4);
	expect_files(f->a, "INBOX", 4);
	expect_files(f->a, "Lists", 3);
	CHECK(f->a);
}

/*
 * The replay's own adds are durable before its checkpoint empties the log:
 * killed in between (or the checkpoint failing, which fails the open), the
 * next open replays the same entries; the message must not come twice.
 * Simulated by putting back the log as it was before the first replay. The
 * replay's add sets `W` in its transaction (else the second replay, finding
 * no record by the logged file name, would add the message again).
 */
static void test_crash_during_replay(void **state)
{
	struct fx *f = *state;
	run_child(f, "testexit");
	char path[256];
	size_t len;
	uint8_t *saved;
	int fd;

	snprintf(path, sizeof(path), "%s/index.wal", f->dir);
	saved = read_all(path, &len);
	assert_non_null(saved);
	reopen(f);
	assert_int_equal(info(f->a).wal_applied, 1);
	expect_total(f->a, "INBOX", 5);
	idx_account_close(&f->a);
	fd = open(path, O_WRONLY);
	assert_true(fd >= 0);
	assert_int_equal(pwrite(fd, saved, len, 0), (ssize_t)len);
	close(fd);
	free(saved);
	reopen(f);
	expect_msg(f->a, 6, 0, 5);
	expect_msg(f->a, 6, 1, 4);
	/* Once: no second copy under another UID. */
	expect_total(f->a, "INBOX", 5);
	expect_total(f->a, "Lists", 4);
	expect_files(f->a, "INBOX", 5);
	expect_files(f->a, "Lists", 4);
	CHECK(f->a);
}

/* An opener without fsync (an import) or without the log replays too, then goes on without it. */
static void replay_by(struct fx *f, bool no_fsync, bool no_log)
{
	run_child(f, "testexit");

	f->opts.no_fsync = no_fsync;
	f->opts.no_log = no_log;
	reopen(f);
	assert_null(f->a->wal);
	assert_int_equal(info(f->a).wal_applied, 1);
	expect_msg(f->a, 6, 0, 5);
	expect_msg(f->a, 6, 1, 4);
	CHECK(f->a);
	add_one(f->a, 5); /* not logged */
	expect_msg(f->a, 5, 0, 6);
	f->opts.no_fsync = f->opts.no_log = false;
	reopen(f);
	assert_non_null(f->a->wal);
	assert_int_equal(info(f->a).wal_applied, 0);
	expect_total(f->a, "INBOX", 6);
	expect_total(f->a, "Lists", 4);
	expect_files(f->a, "INBOX", 6);
	CHECK(f->a);
}

static void test_replay_by_nofsync_opener(void **state)
{
	replay_by(*state, true, false);
}

static void test_replay_by_nolog_opener(void **state)
{
	replay_by(*state, false, true);
}

/* idx_add_nosync through the log leaves nothing to wait for. */
static void test_nosync_logged(void **state)
{
	struct fx *f = *state;
	struct idx_add it;
	struct idx_durable d;
	char err[256] = "";

	memset(&it, 0, sizeof(it));
	it.w = writer_for(f->a, 0, err, sizeof(err));
	assert_non_null(it.w);
	it.mailbox_id = fx_inbox(f->a);
	assert_int_equal(idx_add_nosync(f->a, &it, 1, &d, err, sizeof(err)), 1);
	maildir_writer_remove(it.w, NULL, 0);
	maildir_writer_free(&it.w);
	assert_false(wal_empty(f->a));
	assert_int_equal(d.commit, 0);
	assert_int_equal(d.ndirs, 0);
	assert_int_equal(idx_durable_wait(f->a, &d, err, sizeof(err)), 1);
	expect_msg(f->a, 0, 0, 1);
}

/* A batch larger than the empty log takes the three flushes; one that fits after a checkpoint is logged. */
static void test_batch_sizes(void **state)
{
	struct fx *f = *state;
	enum { N = 9, SIZE = 120 * 1024 };
	struct idx_add it[N];
	char err[256] = "";
	char *text;
	size_t len;
	uint64_t head;

	/* N * SIZE > the log: not logged, the log stays as it was. */
	add_one(f->a, 0);
	head = log_head(f->a);
	memset(it, 0, sizeof(it));
	for (int i = 0; i < N; i++) {
		it[i].w = writer_sized(f->a, 10 + i, SIZE, err, sizeof(err));
		assert_non_null(it[i].w);
		it[i].mailbox_id = fx_inbox(f->a);
	}
	assert_int_equal(idx_add(f->a, it, N, err, sizeof(err)), N);
	assert_int_equal(log_head(f->a), head);
	for (int i = 0; i < N; i++) {
		assert_int_equal(it[i].uid_r, (uint32_t)(2 + i));
		maildir_writer_free(&it[i].w);
	}
	/* Two logged one by one, then a batch of seven that fits in an empty log
	 * but not behind them: a checkpoint, then the batch is logged. */
	for (int i = 0; i < 2; i++) {
		memset(it, 0, sizeof(it));
		it[0].w = writer_sized(f->a, 30 + i, SIZE, err, sizeof(err));
		assert_non_null(it[0].w);
		it[0].mailbox_id = fx_inbox(f->a);
		assert_int_equal(idx_add(f->a, it, 1, err, sizeof(err)), 1);
		maildir_writer_free(&it[0].w);
		assert_true(log_head(f->a) > head + SIZE);
		head = log_head(f->a);
	}
	memset(it, 0, sizeof(it));
	for (int i = 0; i < 7; i++) {
		it[i].w = writer_sized(f->a, 40 + i, SIZE, err, sizeof(err));
		assert_non_null(it[i].w);
		it[i].mailbox_id = fx_inbox(f->a);
	}
	assert_int_equal(idx_add(f->a, it, 7, err, sizeof(err)), 7);
	assert_true(log_head(f->a) > WAL_DATA + 7 * SIZE);
	assert_true(log_head(f->a) < head + 7 * SIZE);
	for (int i = 0; i < 7; i++)
		maildir_writer_free(&it[i].w);
	for (int i = 0; i < N; i++) {
		text = msg_text(10 + i, SIZE, &len);
		expect_bytes(f->a, fx_inbox(f->a), (uint32_t)(2 + i), text, len);
		free(text);
	}
	expect_total(f->a, "INBOX", 1 + N + 2 + 7);
	text = msg_text(46, SIZE, &len);
	expect_bytes(f->a, fx_inbox(f->a), 1 + N + 2 + 7, text, len);
	free(text);
	CHECK(f->a);
}

/* Both header copies damaged: the open fails saying so; with the log moved away it works. */
static void test_headers_damaged(void **state)
{
	struct fx *f = *state;
	char path[256], err[256] = "";
	int fd;

	add_one(f->a, 0);
	idx_account_close(&f->a);
	snprintf(path, sizeof(path), "%s/index.wal", f->dir);
	fd = open(path, O_WRONLY);
	assert_true(fd >= 0);
	assert_int_equal(pwrite(fd, "XX", 2, 0), 2);
	assert_int_equal(pwrite(fd, "XX", 2, 512), 2);
	close(fd);
	assert_int_equal(idx_account_open(f->dir, &f->opts, &f->a, err, sizeof(err)), -1);
	assert_null(f->a);
	assert_non_null(strstr(err, "both headers are damaged"));
	assert_int_equal(unlink(path), 0);
	reopen(f);
	expect_msg(f->a, 0, 0, 1);
	add_one(f->a, 5);
	expect_msg(f->a, 5, 0, 2);
}

/* ---- tests: the entry parser ---- */

struct ebuf {
	uint8_t b[16384];
	size_t n;
};

static void eb_put(struct ebuf *x, const void *p, size_t n)
{
	assert_true(x->n + n <= sizeof(x->b));
	memcpy(x->b + x->n, p, n);
	x->n += n;
}

static void eb_u8(struct ebuf *x, uint8_t v)
{
	eb_put(x, &v, 1);
}

static void eb_u16(struct ebuf *x, uint16_t v)
{
	uint8_t b[2] = {(uint8_t)(v >> 8), (uint8_t)v};
	eb_put(x, b, 2);
}

static void eb_u32(struct ebuf *x, uint32_t v)
{
	uint8_t b[4];
	be32_put(b, v);
	eb_put(x, b, 4);
}

static void eb_u64(struct ebuf *x, uint64_t v)
{
	uint8_t b[8];
	be64_put(b, v);
	eb_put(x, b, 8);
}

static void eb_target(struct ebuf *x, uint32_t mbid, uint32_t uid, const char *name, const char *const *kw, size_t nkw)
{
	eb_u32(x, mbid);
	eb_u32(x, uid);
	eb_u32(x, IDX_SEEN);
	eb_u32(x, (uint32_t)-120);
	eb_u64(x, 1700000000);
	eb_u32(x, 7);
	eb_u32(x, 12);
	eb_u8(x, 1);
	eb_u8(x, (uint8_t)nkw);
	eb_u16(x, (uint16_t)strlen(name));
	eb_put(x, name, strlen(name));
	for (size_t k = 0; k < nkw; k++) {
		eb_u16(x, (uint16_t)strlen(kw[k]));
		eb_put(x, kw[k], strlen(kw[k]));
	}
}

/* Total and CRC of the entry at x->b of total bytes. */
static void seal(uint8_t *p, uint32_t total)
{
	be32_put(p + 24, total);
	be32_put(p + 4, wal_crc32c(p + 8, total - 8));
}

#define SALT 0x1122334455667788ull
#define SEQ 42
static const char content[] = "Subject: hi\r\n\r\nbody\r\n";

/* An add entry with two targets (the second with two keywords); *targets_end_r: end of each target in the body. */
static uint32_t build_add(struct ebuf *x, size_t targets_end_r[2])
{
	static const char *const kw[] = {"$Label1", "work"};

	x->n = 0;
	eb_u32(x, 0x4d58574cu);
	eb_u32(x, 0);
	eb_u64(x, SALT);
	eb_u64(x, SEQ);
	eb_u32(x, 0);
	eb_u16(x, 1);
	eb_u16(x, 2);
	eb_u32(x, sizeof(content) - 1);
	eb_u32(x, 0);
	eb_u64(x, 0);
	assert_int_equal(x->n, 48);
	eb_target(x, 3, 17, "1700000000.M1P2Q3.test.example", NULL, 0);
	targets_end_r[0] = x->n - 48;
	eb_target(x, 4, 9, "1700000001.M1P2Q4.test.example", kw, 2);
	targets_end_r[1] = x->n - 48;
	eb_put(x, content, sizeof(content) - 1);
	while (x->n % 8 != 0)
		eb_u8(x, 0);
	seal(x->b, (uint32_t)x->n);
	return (uint32_t)x->n;
}

static void test_parse_add(void **state)
{
	struct ebuf *x = malloc(sizeof(*x));
	size_t ends[2], off = 0;
	struct wal_entry e;
	struct wal_target_dec t;
	uint32_t total = build_add(x, ends);

	assert_int_equal(wal_entry_parse(x->b, x->n, SALT, SEQ, &e), 1);
	assert_int_equal(e.total, total);
	assert_int_equal(e.seq, SEQ);
	assert_int_equal(e.type, 1);
	assert_int_equal(e.ntargets, 2);
	assert_int_equal(e.content_len, sizeof(content) - 1);
	assert_ptr_equal(e.body, x->b + 48);
	assert_int_equal(e.body_len, total - 48);
	/* More bytes after the entry change nothing. */
	assert_int_equal(wal_entry_parse(x->b, sizeof(x->b), SALT, SEQ, &e), 1);
	assert_int_equal(e.total, total);

	assert_int_equal(wal_target_next(&e, &off, &t), 1);
	assert_int_equal(off, ends[0]);
	assert_int_equal(t.mbid, 3);
	assert_int_equal(t.uid, 17);
	assert_int_equal(t.flags, IDX_SEEN);
	assert_int_equal(t.received_tz, -120);
	assert_int_equal(t.received, 1700000000);
	assert_int_equal(t.destined, 7);
	assert_int_equal(t.prefix_len, 12);
	assert_true(t.is_reject);
	assert_string_equal(t.name, "1700000000.M1P2Q3.test.example");
	assert_int_equal(t.nkeywords, 0);
	wal_target_clear(&t);
	assert_null(t.name);
	assert_int_equal(wal_target_next(&e, &off, &t), 1);
	assert_int_equal(off, ends[1]);
	assert_int_equal(t.mbid, 4);
	assert_int_equal(t.nkeywords, 2);
	assert_string_equal(t.keywords[0], "$Label1");
	assert_string_equal(t.keywords[1], "work");
	wal_target_clear(&t);
	assert_memory_equal(e.body + off, content, sizeof(content) - 1);
	free(x);
}

static void test_parse_cancel(void **state)
{
	struct ebuf *x = malloc(sizeof(*x));
	struct wal_entry e;

	x->n = 0;
	eb_u32(x, 0x4d58574cu);
	eb_u32(x, 0);
	eb_u64(x, SALT);
	eb_u64(x, SEQ);
	eb_u32(x, 0);
	eb_u16(x, 2);
	eb_u16(x, 0);
	eb_u32(x, 0);
	eb_u32(x, 3);
	eb_u64(x, 39);
	seal(x->b, 48);
	assert_int_equal(wal_entry_parse(x->b, 48, SALT, SEQ, &e), 1);
	assert_int_equal(e.type, 2);
	assert_int_equal(e.count, 3);
	assert_int_equal(e.arg, 39);
	assert_int_equal(e.body_len, 0);
	free(x);
}

static void test_parse_rejects(void **state)
{
	struct ebuf *x = malloc(sizeof(*x)), *y = malloc(sizeof(*y));
	size_t ends[2];
	struct wal_entry e;
	uint32_t total = build_add(x, ends);

	/* Salt and sequence number: another round's entry, or not the next one. */
	assert_int_equal(wal_entry_parse(x->b, x->n, SALT ^ 1, SEQ, &e), 0);
	assert_int_equal(wal_entry_parse(x->b, x->n, SALT, SEQ + 1, &e), 0);
	assert_int_equal(wal_entry_parse(x->b, x->n, SALT, SEQ - 1, &e), 0);
	/* Any byte changed (each of them): magic, CRC, salt, seq, or covered by the CRC. */
	for (size_t i = 0; i < total; i++) {
		*y = *x;
		y->b[i] ^= 0x01;
		if (wal_entry_parse(y->b, y->n, SALT, SEQ, &e) != 0)
			fail_msg("byte %zu changed, entry still parses", i);
	}
	/* Every cut short of the total. */
	for (size_t avail = 0; avail < total; avail++)
		if (wal_entry_parse(x->b, avail, SALT, SEQ, &e) != 0)
			fail_msg("parsed with %zu of %u bytes", avail, total);
	/* A total that is not a multiple of 8, or below the header, CRC matching. */
	*y = *x;
	seal(y->b, total - 4);
	assert_int_equal(wal_entry_parse(y->b, y->n, SALT, SEQ, &e), 0);
	*y = *x;
	seal(y->b, 40);
	assert_int_equal(wal_entry_parse(y->b, y->n, SALT, SEQ, &e), 0);
	/* A total beyond what is there (CRC matching the bytes that are). */
	*y = *x;
	memset(y->b + total, 0, 8);
	seal(y->b, total + 8);
	assert_int_equal(wal_entry_parse(y->b, total, SALT, SEQ, &e), 0);
	assert_int_equal(wal_entry_parse(y->b, total + 8, SALT, SEQ, &e), 1);
	/* Content longer than the body. */
	*y = *x;
	be32_put(y->b + 32, total - 48 + 1);
	seal(y->b, total);
	assert_int_equal(wal_entry_parse(y->b, y->n, SALT, SEQ, &e), 0);
	/* An add without targets. */
	*y = *x;
	y->b[30] = y->b[31] = 0;
	seal(y->b, total);
	assert_int_equal(wal_entry_parse(y->b, y->n, SALT, SEQ, &e), 0);
	free(x);
	free(y);
}

/* Targets cut anywhere: -1, never a read past the body (ASan), nothing leaked. */
static void test_target_truncated(void **state)
{
	struct ebuf *x = malloc(sizeof(*x));
	size_t ends[2];
	struct wal_entry e, cut;

	build_add(x, ends);
	assert_int_equal(wal_entry_parse(x->b, x->n, SALT, SEQ, &e), 1);
	for (size_t len = 0; len < ends[1]; len++) {
		/* An exact-size copy so that a read past it is caught. */
		uint8_t *body = malloc(len ? len : 1);
		struct wal_target_dec t;
		size_t off = 0;
		int good = 0, r;

		memcpy(body, e.body, len);
		cut = e;
		cut.body = body;
		cut.body_len = len;
		while ((r = wal_target_next(&cut, &off, &t)) > 0) {
			good++;
			wal_target_clear(&t);
		}
		assert_int_equal(r, -1);
		assert_int_equal(good, len >= ends[0] ? 1 : 0);
		assert_null(t.name);
		free(body);
	}
	free(x);
}

/* A target whose strings are malformed: -1. */
static void test_target_malformed(void **state)
{
	struct ebuf *x = malloc(sizeof(*x));
	struct wal_entry e;
	struct wal_target_dec t;
	size_t off;
	static const char *const kw_nul[] = {"a"};
	static const char *const kw_ok[] = {"ok"};

	memset(&e, 0, sizeof(e));
	e.type = 1;
	e.ntargets = 1;

	/* An empty name. */
	x->n = 0;
	eb_target(x, 1, 1, "", NULL, 0);
	e.body = x->b;
	e.body_len = x->n;
	off = 0;
	assert_int_equal(wal_target_next(&e, &off, &t), -1);

	/* A NUL in the name. */
	x->n = 0;
	eb_target(x, 1, 1, "abc", NULL, 0);
	x->b[36 + 1] = '\0';
	e.body_len = x->n;
	off = 0;
	assert_int_equal(wal_target_next(&e, &off, &t), -1);

	/* A NUL in a keyword, after a good one (the good one is freed). */
	x->n = 0;
	eb_target(x, 1, 1, "abc", (const char *const[]){"ok", "ab"}, 2);
	x->b[x->n - 1] = '\0';
	e.body_len = x->n;
	off = 0;
	assert_int_equal(wal_target_next(&e, &off, &t), -1);

	/* An empty keyword. */
	x->n = 0;
	eb_target(x, 1, 1, "abc", kw_ok, 1);
	eb_u16(x, 0);
	x->b[33] = 2; /* two keywords: "ok" and "" */
	e.body_len = x->n;
	off = 0;
	assert_int_equal(wal_target_next(&e, &off, &t), -1);
	(void)kw_nul;

	/* A name of IDX_PATH_MAX bytes. */
	x->n = 0;
	{
		char *name = malloc(IDX_PATH_MAX + 1);
		memset(name, 'n', IDX_PATH_MAX);
		name[IDX_PATH_MAX] = '\0';
		eb_target(x, 1, 1, name, NULL, 0);
		e.body_len = x->n;
		off = 0;
		assert_int_equal(wal_target_next(&e, &off, &t), -1);
		/* One shorter is fine. */
		x->n = 0;
		name[IDX_PATH_MAX - 1] = '\0';
		eb_target(x, 1, 1, name, NULL, 0);
		e.body_len = x->n;
		off = 0;
		assert_int_equal(wal_target_next(&e, &off, &t), 1);
		assert_int_equal(strlen(t.name), IDX_PATH_MAX - 1);
		wal_target_clear(&t);
		free(name);
	}

	/* Not a base name: the replay looks the name up in new/ and cur/ of a folder. */
	static const char *const bad[] = {"new/abc", "../x", "a/b", ".hidden", "..", "abc,S=3", "abc:2,S"};
	for (size_t b = 0; b < sizeof(bad) / sizeof(bad[0]); b++) {
		x->n = 0;
		eb_target(x, 1, 1, bad[b], NULL, 0);
		e.body_len = x->n;
		off = 0;
		assert_int_equal(wal_target_next(&e, &off, &t), -1);
	}
	free(x);
}

static void test_crc32c(void **state)
{
	/* The check value of CRC-32C (RFC 3720 B.4 uses the same polynomial). */
	assert_int_equal(wal_crc32c("123456789", 9), 0xe3069283u);
	assert_int_equal(wal_crc32c("", 0), 0);
	uint8_t zeros[32] = {0};
	assert_int_equal(wal_crc32c(zeros, 32), 0x8a9136aau);
}

int main(int argc, char **argv)
{
	if (argc == 5 && strcmp(argv[1], "--wal-child") == 0)
		return child_main(argv[2], argv[3], argv[4]);

	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_crc32c),
		cmocka_unit_test(test_parse_add),
		cmocka_unit_test(test_parse_cancel),
		cmocka_unit_test(test_parse_rejects),
		cmocka_unit_test(test_target_truncated),
		cmocka_unit_test(test_target_malformed),
		cmocka_unit_test_setup_teardown(test_logged_adds, setup, teardown),
		cmocka_unit_test_setup_teardown(test_entry_matches_message, setup, teardown),
		cmocka_unit_test_setup_teardown(test_large_not_logged, setup, teardown),
		cmocka_unit_test_setup_teardown(test_copy_move_checkpoint, setup, teardown),
		cmocka_unit_test_setup_teardown(test_checkpoint_idle, setup, teardown),
		cmocka_unit_test_setup_teardown(test_no_log, setup_nofsync, teardown),
		cmocka_unit_test_setup_teardown(test_no_log, setup_nolog, teardown),
		cmocka_unit_test_setup_teardown(test_same_boot_keeps_expunge, setup_dir, teardown),
		cmocka_unit_test_setup_teardown(test_rebooted_distrusts_index, setup_dir, teardown),
		cmocka_unit_test_setup_teardown(test_rebooted_drops_unlogged, setup_dir, teardown),
		cmocka_unit_test_setup_teardown(test_log_not_created, setup_dir, teardown),
		cmocka_unit_test_setup_teardown(test_crash_after_commit, setup_dir, teardown),
		cmocka_unit_test_setup_teardown(test_power_loss_files, setup_dir, teardown),
		cmocka_unit_test_setup_teardown(test_crash_before_commit, setup_dir, teardown),
		cmocka_unit_test_setup_teardown(test_batch_crash_before_commit, setup_dir, teardown),
		cmocka_unit_test_setup_teardown(test_crash_after_store, setup_dir, teardown),
		cmocka_unit_test_setup_teardown(test_torn_last_entry, setup_dir, teardown),
		cmocka_unit_test_setup_teardown(test_full_log, setup_dir, teardown),
		cmocka_unit_test_setup_teardown(test_cancel, setup_dir, teardown),
		cmocka_unit_test_setup_teardown(test_crash_after_link, setup_dir, teardown),
		cmocka_unit_test_setup_teardown(test_torn_uncommitted_entry, setup_dir, teardown),
		cmocka_unit_test_setup_teardown(test_replay_by_nofsync_opener, setup_dir, teardown),
		cmocka_unit_test_setup_teardown(test_replay_by_nolog_opener, setup_dir, teardown),
		cmocka_unit_test_setup_teardown(test_nosync_logged, setup, teardown),
		cmocka_unit_test_setup_teardown(test_batch_sizes, setup, teardown),
		cmocka_unit_test_setup_teardown(test_headers_damaged, setup, teardown),
		cmocka_unit_test_setup_teardown(test_crash_during_replay, setup_dir, teardown),
		cmocka_unit_test_setup_teardown(test_torn_then_crash_before_commit, setup_dir, teardown),
		cmocka_unit_test_setup_teardown(test_new_log_crash_before_commit, setup_dir, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}

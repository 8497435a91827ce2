/* Unit tests for index/: the account store, checked for consistency after every operation. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <sched.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "index/index.h"
#include "index/index_private.h"
#include "index/tools.h"
#include "maildir/maildir.h"
#include "t/unit/index_check.h"

/* ---- helpers ---- */

static int rm_cb(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	return remove(path);
}

struct fx {
	char root[64];
	char dir[128];
	struct idx_options opts;
	struct idx_account *a;
};


static int setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));
	char err[256];
	static const char *const regular[] = { "Lists" };

	strcpy(f->root, "/tmp/test_index.XXXXXX");
	if (mkdtemp(f->root) == NULL)
		return -1;
	snprintf(f->dir, sizeof(f->dir), "%s/acct", f->root);
	f->opts.host = "test.example";
	f->opts.sent = "Sent";
	f->opts.trash = "Trash";
	f->opts.archive = "Archive";
	f->opts.drafts = "Drafts";
	f->opts.junk = "Junk";
	f->opts.regular = regular;
	f->opts.nregular = 1;
	f->opts.no_fsync = true;
	if (idx_account_open(f->dir, &f->opts, &f->a, err, sizeof(err)) < 0) {
		fprintf(stderr, "open: %s\n", err);
		return -1;
	}
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;

	idx_account_close(&f->a);
	nftw(f->root, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
	free(f);
	return 0;
}

/* A finished writer holding text. */
static struct maildir_writer *writer(struct idx_account *a, const char *text)
{
	struct maildir_writer *w;
	char tmp[512], err[256];

	snprintf(tmp, sizeof(tmp), "%s/tmp", idx_account_maildir(a));
	assert_int_equal(maildir_writer_open(&w, tmp, "test.example", err, sizeof(err)), 1);
	assert_int_equal(maildir_writer_write(w, text, strlen(text), err, sizeof(err)), 1);
	assert_int_equal(maildir_writer_finish(w, MAILDIR_FINISH_NOSYNC, err, sizeof(err)), 1);
	return w;
}

static uint32_t mbid(struct idx_account *a, const char *name)
{
	struct idx_mailbox mb;
	char err[256];
	uint32_t id;

	assert_int_equal(idx_mailbox_get(a, name, &mb, err, sizeof(err)), 1);
	id = mb.id;
	idx_mailbox_clear(&mb);
	return id;
}

static struct idx_mailbox getmb(struct idx_account *a, const char *name)
{
	struct idx_mailbox mb;
	char err[256];

	assert_int_equal(idx_mailbox_get(a, name, &mb, err, sizeof(err)), 1);
	return mb;
}

/* Deliver one message; returns its uid. */
static uint32_t deliver(struct idx_account *a, uint32_t mb, const char *text, uint32_t flags, const char *kw)
{
	struct idx_add it;
	char err[256];
	const char *kws[1] = { kw };

	memset(&it, 0, sizeof(it));
	it.w = writer(a, text);
	it.mailbox_id = mb;
	it.flags = flags;
	it.keywords = kw ? kws : NULL;
	it.nkeywords = kw ? 1 : 0;
	if (idx_add(a, &it, 1, err, sizeof(err)) != 1)
		fprintf(stderr, "idx_add: %s / %s\n", err, it.err_r);
	assert_int_equal(it.result, 1);
	maildir_writer_free(&it.w);
	CHECK(a);
	return it.uid_r;
}

static const char msg1[] = "From: a@example.org\r\nSubject: hello\r\nMessage-ID: <m1@example.org>\r\n\r\nbody\r\n";

static int count_files(const char *dir)
{
	struct maildir_scan s;
	char err[256];
	int n = maildir_scan(dir, &s, err, sizeof(err));

	maildir_scan_clear(&s);
	return n;
}

/* ---- account ---- */

static void test_open_create_reopen(void **state)
{
	struct fx *f = *state;
	struct idx_mailbox *list;
	size_t n, i;
	char err[256];
	struct idx_mailbox mb;
	struct idx_account_info info;
	void *blob;
	size_t len;

	CHECK(f->a);
	assert_int_equal(idx_mailbox_list(f->a, &list, &n, err, sizeof(err)), 7);
	for (i = 0; i < n; i++)
		if (strcmp(list[i].name, "Sent") == 0)
			assert_int_equal(list[i].special_use, IDX_SU_SENT);
	assert_string_equal(list[0].name, "Archive");
	idx_mailbox_list_free(&list, n);
	mb = getmb(f->a, "inbox");
	assert_string_equal(mb.name, "INBOX");
	assert_string_equal(mb.folder, "");
	assert_true(mb.uidvalidity >= 1);
	assert_int_equal(mb.uidnext, 1);
	idx_mailbox_clear(&mb);
	mb = getmb(f->a, "Junk");
	assert_int_equal(mb.special_use, IDX_SU_JUNK);
	idx_mailbox_clear(&mb);
	deliver(f->a, mbid(f->a, "INBOX"), msg1, 0, NULL);
	assert_int_equal(idx_secrets_get(f->a, &blob, &len, err, sizeof(err)), 0);
	assert_int_equal(idx_secrets_set(f->a, "secret", 6, err, sizeof(err)), 1);

	idx_account_close(&f->a);
	assert_int_equal(idx_account_open(f->dir, &f->opts, &f->a, err, sizeof(err)), 1);
	CHECK(f->a);
	mb = getmb(f->a, "INBOX");
	assert_int_equal(mb.counts.total, 1);
	assert_int_equal(mb.uidnext, 2);
	idx_mailbox_clear(&mb);
	assert_int_equal(idx_secrets_get(f->a, &blob, &len, err, sizeof(err)), 1);
	assert_int_equal(len, 6);
	assert_memory_equal(blob, "secret", 6);
	free(blob);
	assert_int_equal(idx_account_info(f->a, &info, err, sizeof(err)), 1);
	assert_int_equal(info.nmailboxes, 7);
	assert_true(info.quota_used > 0);
	assert_true(info.highest_modseq > 0);
}

static void test_second_opener(void **state)
{
	struct fx *f = *state;
	pid_t pid = fork();
	int status;

	assert_true(pid >= 0);
	if (pid == 0) {
		struct idx_account *b = NULL;
		char err[256] = "";
		int r = idx_account_open(f->dir, &f->opts, &b, err, sizeof(err));

		_exit(r < 0 && strstr(err, "in use") != NULL ? 0 : 1);
	}
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
	CHECK(f->a);
}

/* ---- mailboxes ---- */

static void test_mailbox_names(void **state)
{
	struct fx *f = *state;
	char buf[IDX_MAILBOX_NAME_MAX + 1], err[256];
	static const char *const good[] = { "a.b", "x/y.z", "t~ilde", "caf\xc3\xa9", "A&B", "star*", "per%cent",
		"has#hash", "Lists/mox", "deep/er/still" };
	static const char *const bad[] = { "", "/a", "a/", "a//b", "\x01x", "bad\xff", "#ns", "a\x7f" };
	size_t i;

	assert_int_equal(idx_mailbox_name_check("inbox", buf, sizeof(buf), err, sizeof(err)), 1);
	assert_string_equal(buf, "INBOX");
	assert_int_equal(idx_mailbox_name_check("InBox/Sub", buf, sizeof(buf), err, sizeof(err)), 1);
	assert_string_equal(buf, "INBOX/Sub");
	assert_int_equal(idx_mailbox_name_check("inboxes", buf, sizeof(buf), err, sizeof(err)), 1);
	assert_string_equal(buf, "inboxes");
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_int_equal(idx_mailbox_name_check(bad[i], buf, sizeof(buf), err, sizeof(err)), -1);
	for (i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		uint32_t id = 0;
		struct idx_mailbox mb;

		assert_int_equal(idx_mailbox_create(f->a, good[i], 0, true, &id, err, sizeof(err)), 1);
		CHECK(f->a);
		assert_int_equal(idx_mailbox_create(f->a, good[i], 0, true, NULL, err, sizeof(err)), 0);
		mb = getmb(f->a, good[i]);
		assert_int_equal(mb.id, id);
		assert_string_equal(mb.name, good[i]);
		idx_mailbox_clear(&mb);
	}
	/* Parents were created. */
	idx_mailbox_clear((struct idx_mailbox[]){ getmb(f->a, "deep/er") });
	idx_mailbox_clear((struct idx_mailbox[]){ getmb(f->a, "x") });
	assert_int_equal(idx_mailbox_create(f->a, "#bad", 0, true, NULL, err, sizeof(err)), IDX_REFUSED);
	CHECK(f->a);
}

static void test_mailbox_delete_rename(void **state)
{
	struct fx *f = *state;
	char err[256];
	struct idx_mailbox mb, mb2;
	uint32_t id, uv1, u;
	struct idx_account_info info;

	assert_int_equal(idx_mailbox_create(f->a, "Work/Proj.x", 0, true, &id, err, sizeof(err)), 1);
	deliver(f->a, id, msg1, IDX_SEEN, "$label1");
	mb = getmb(f->a, "Work/Proj.x");
	uv1 = mb.uidvalidity;
	idx_mailbox_clear(&mb);
	/* A mailbox with children is refused; INBOX too. */
	assert_int_equal(idx_mailbox_delete(f->a, "Work", err, sizeof(err)), IDX_REFUSED);
	assert_int_equal(idx_mailbox_delete(f->a, "INBOX", err, sizeof(err)), IDX_REFUSED);
	assert_int_equal(idx_mailbox_delete(f->a, "nope", err, sizeof(err)), 0);
	/* Rename with children. */
	assert_int_equal(idx_mailbox_rename(f->a, "Work", "Job/Old", err, sizeof(err)), 1);
	CHECK(f->a);
	mb = getmb(f->a, "Job/Old/Proj.x");
	assert_int_equal(mb.counts.total, 1);
	assert_int_equal(mb.uidvalidity, uv1);
	idx_mailbox_clear(&mb);
	assert_int_equal(idx_mailbox_get(f->a, "Work/Proj.x", &mb, err, sizeof(err)), 0);
	assert_int_equal(idx_mailbox_rename(f->a, "Job/Old", "Sent", err, sizeof(err)), IDX_REFUSED);
	assert_int_equal(idx_mailbox_rename(f->a, "Job", "Job/Sub", err, sizeof(err)), IDX_REFUSED);
	assert_int_equal(idx_mailbox_rename(f->a, "nope", "x", err, sizeof(err)), 0);
	CHECK(f->a);
	/* Delete, recreate: a new UIDVALIDITY; quota follows. */
	assert_int_equal(idx_mailbox_delete(f->a, "Job/Old/Proj.x", err, sizeof(err)), 1);
	CHECK(f->a);
	assert_int_equal(idx_account_info(f->a, &info, err, sizeof(err)), 1);
	assert_int_equal(info.quota_used, 0);
	assert_int_equal(idx_mailbox_create(f->a, "Job/Old/Proj.x", 0, false, &id, err, sizeof(err)), 1);
	mb = getmb(f->a, "Job/Old/Proj.x");
	assert_true(mb.uidvalidity > uv1);
	assert_false(mb.subscribed);
	idx_mailbox_clear(&mb);
	assert_int_equal(idx_mailbox_subscribe(f->a, "Job/Old/Proj.x", true, err, sizeof(err)), 1);
	assert_int_equal(idx_mailbox_set_special_use(f->a, "Job/Old/Proj.x", IDX_SU_ARCHIVE, err, sizeof(err)), 1);
	mb = getmb(f->a, "Job/Old/Proj.x");
	assert_true(mb.subscribed);
	assert_int_equal(mb.special_use, IDX_SU_ARCHIVE);
	idx_mailbox_clear(&mb);
	CHECK(f->a);

	/* RENAME INBOX: messages move with new UIDs from 1; INBOX stays, empty. */
	u = deliver(f->a, mbid(f->a, "INBOX"), msg1, 0, NULL);
	u = deliver(f->a, mbid(f->a, "INBOX"), msg1, IDX_FLAGGED, NULL);
	assert_int_equal(u, 2);
	assert_int_equal(idx_mailbox_rename(f->a, "INBOX", "Old Inbox", err, sizeof(err)), 1);
	CHECK(f->a);
	mb = getmb(f->a, "INBOX");
	mb2 = getmb(f->a, "Old Inbox");
	assert_int_equal(mb.counts.total, 0);
	assert_int_equal(mb.uidnext, 3);
	assert_int_equal(mb2.counts.total, 2);
	assert_int_equal(mb2.uidnext, 3);
	assert_true(mb2.uidvalidity > mb.uidvalidity);
	{
		struct idx_message m;

		assert_int_equal(idx_message_get(f->a, mb2.id, 1, &m, err, sizeof(err)), 1);
		idx_message_clear(&m);
		assert_int_equal(idx_message_get(f->a, mb2.id, 2, &m, err, sizeof(err)), 1);
		assert_int_equal(m.flags, IDX_FLAGGED);
		idx_message_clear(&m);
	}
	assert_int_equal(idx_tombstones(f->a, mb.id, 0, NULL, NULL, err, sizeof(err)), 2);
	idx_mailbox_clear(&mb);
	idx_mailbox_clear(&mb2);
}

/* ---- adding ---- */

static void test_add_batch(void **state)
{
	struct fx *f = *state;
	struct idx_add it[4];
	char err[256], path[512];
	struct maildir_writer *w1, *w2;
	uint32_t inbox = mbid(f->a, "INBOX"), lists = mbid(f->a, "Lists");
	struct idx_mailbox mb;
	struct idx_message m;
	const char *kws[] = { "$Important", "work" };

	w1 = writer(f->a, msg1);
	w2 = writer(f->a, "Subject: two\r\n\r\nsecond\r\n");
	memset(it, 0, sizeof(it));
	it[0].w = w1;
	it[0].mailbox_id = inbox;
	it[1].w = w1; /* same file, second recipient mailbox */
	it[1].mailbox_id = lists;
	it[1].flags = IDX_SEEN;
	it[1].keywords = kws;
	it[1].nkeywords = 2;
	it[2].w = w2;
	it[2].mailbox_id = inbox;
	it[3].w = w2;
	it[3].mailbox_id = 999; /* no such mailbox */
	assert_int_equal(idx_add(f->a, it, 4, err, sizeof(err)), 3);
	assert_int_equal(it[0].result, 1);
	assert_int_equal(it[1].result, 1);
	assert_int_equal(it[2].result, 1);
	assert_int_equal(it[3].result, -1);
	assert_int_equal(it[3].error, IDX_E_NOMAILBOX);
	assert_int_equal(it[0].uid_r, 1);
	assert_int_equal(it[2].uid_r, 2);
	assert_int_equal(it[1].uid_r, 1);
	maildir_writer_free(&w1);
	maildir_writer_free(&w2);
	CHECK(f->a);
	mb = getmb(f->a, "INBOX");
	assert_int_equal(mb.counts.total, 2);
	assert_int_equal(mb.counts.unseen, 2);
	idx_mailbox_clear(&mb);
	mb = getmb(f->a, "Lists");
	assert_int_equal(mb.counts.total, 1);
	assert_int_equal(mb.counts.unseen, 0);
	assert_int_equal(mb.nkeywords, 2);
	idx_mailbox_clear(&mb);
	assert_int_equal(idx_message_get(f->a, lists, 1, &m, err, sizeof(err)), 1);
	assert_int_equal(m.nkeywords, 2);
	assert_string_equal(m.message_id, "m1@example.org");
	assert_true(strncmp(m.filename, "cur/", 4) == 0);
	assert_non_null(strstr(m.filename, ":2,Sab"));
	{
		int fd;
		void *blob;
		size_t len;
		struct mime_msg *mm;

		assert_int_equal(idx_message_open(f->a, &m, &fd, err, sizeof(err)), 1);
		close(fd);
		assert_int_equal(idx_message_mime(f->a, m.id, &blob, &len, err, sizeof(err)), 1);
		assert_int_equal(mime_cache_decode(blob, len, NULL, &mm, NULL), 1);
		assert_string_equal(mm->env.subject, "hello");
		mime_msg_free(&mm);
		free(blob);
	}
	idx_message_clear(&m);
	snprintf(path, sizeof(path), "%s/new", idx_account_maildir(f->a));
	assert_int_equal(count_files(idx_account_maildir(f->a)), 2);
}

static void test_add_over_quota(void **state)
{
	struct fx *f = *state;
	struct idx_add it[3];
	char err[256], big[2048];
	uint32_t inbox = mbid(f->a, "INBOX");

	memset(big, 'x', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	memcpy(big, "Subject: big\r\n\r\n", 16);
	idx_account_set_quota(f->a, 1000);
	memset(it, 0, sizeof(it));
	it[0].w = writer(f->a, msg1);
	it[0].mailbox_id = inbox;
	it[1].w = writer(f->a, big);
	it[1].mailbox_id = inbox;
	it[2].w = writer(f->a, msg1);
	it[2].mailbox_id = inbox;
	assert_int_equal(idx_add(f->a, it, 3, err, sizeof(err)), 2);
	assert_int_equal(it[1].result, -1);
	assert_int_equal(it[1].error, IDX_E_OVERQUOTA);
	assert_int_equal(it[2].result, 1);
	assert_int_equal(it[2].uid_r, 2);
	for (int i = 0; i < 3; i++)
		maildir_writer_free(&it[i].w);
	CHECK(f->a);
	{
		uint32_t uids[2] = { 1, 2 }, nu[2];
		int e = 0;

		idx_account_set_quota(f->a, 200);
		assert_int_equal(idx_copy(f->a, inbox, uids, 2, mbid(f->a, "Lists"), nu, &e, err, sizeof(err)),
		    IDX_REFUSED);
		assert_int_equal(e, IDX_E_OVERQUOTA);
		CHECK(f->a);
	}
}

/* ---- flags ---- */

static void test_store(void **state)
{
	struct fx *f = *state;
	uint32_t inbox = mbid(f->a, "INBOX"), uids[3], failed[3];
	char err[256], kwname[32];
	struct idx_message m;
	struct idx_mailbox mb;
	uint64_t modseq, ms2;
	size_t nfailed;
	int i;
	const char *kw1[] = { "Project", "$Forwarded" };

	for (i = 0; i < 3; i++)
		uids[i] = deliver(f->a, inbox, msg1, 0, NULL);
	assert_int_equal(idx_store(f->a, inbox, uids, 3, IDX_STORE_ADD, IDX_SEEN | IDX_DELETED, NULL, 0, 0, NULL,
			     &nfailed, &modseq, err, sizeof(err)),
	    3);
	CHECK(f->a);
	mb = getmb(f->a, "INBOX");
	assert_int_equal(mb.counts.deleted, 3);
	assert_int_equal(mb.counts.unseen, 0);
	assert_int_equal(mb.highest_modseq, modseq);
	idx_mailbox_clear(&mb);
	/* No change: nothing counted, no modseq. */
	assert_int_equal(idx_store(f->a, inbox, uids, 3, IDX_STORE_ADD, IDX_SEEN, NULL, 0, 0, NULL, &nfailed, &ms2,
			     err, sizeof(err)),
	    0);
	assert_int_equal(idx_store(f->a, inbox, uids, 1, IDX_STORE_REMOVE, IDX_DELETED | IDX_SEEN, kw1, 2, 0, NULL,
			     &nfailed, &ms2, err, sizeof(err)),
	    1);
	CHECK(f->a);
	assert_true(ms2 > modseq);
	/* Keywords and $Forwarded. */
	assert_int_equal(idx_store(f->a, inbox, uids, 2, IDX_STORE_ADD, 0, kw1, 2, 0, NULL, &nfailed, &modseq, err,
			     sizeof(err)),
	    2);
	CHECK(f->a);
	assert_int_equal(idx_message_get(f->a, inbox, uids[0], &m, err, sizeof(err)), 1);
	assert_int_equal(m.flags, IDX_FORWARDED);
	assert_int_equal(m.nkeywords, 1);
	assert_string_equal(m.keywords[0], "Project");
	assert_non_null(strstr(m.filename, ":2,Pa"));
	idx_message_clear(&m);
	/* SET replaces. */
	assert_int_equal(idx_store(f->a, inbox, uids, 1, IDX_STORE_SET, IDX_FLAGGED, NULL, 0, 0, NULL, &nfailed,
			     &modseq, err, sizeof(err)),
	    1);
	CHECK(f->a);
	assert_int_equal(idx_message_get(f->a, inbox, uids[0], &m, err, sizeof(err)), 1);
	assert_int_equal(m.flags, IDX_FLAGGED);
	assert_int_equal(m.nkeywords, 0);
	assert_int_equal(m.modseq, modseq);
	idx_message_clear(&m);
	/* UNCHANGEDSINCE: uid 2 changed after modseq-1. */
	assert_int_equal(idx_store(f->a, inbox, uids, 3, IDX_STORE_ADD, IDX_ANSWERED, NULL, 0, modseq - 1, failed,
			     &nfailed, &ms2, err, sizeof(err)),
	    2);
	assert_int_equal(nfailed, 1);
	assert_int_equal(failed[0], uids[0]);
	CHECK(f->a);
	/* 27 keywords in one folder: the 27th has no letter but works. */
	for (i = 0; i < 27; i++) {
		const char *k[1] = { kwname };

		snprintf(kwname, sizeof(kwname), "kw%02d", i);
		assert_int_equal(idx_store(f->a, inbox, &uids[2], 1, IDX_STORE_ADD, 0, k, 1, 0, NULL, &nfailed,
				     &modseq, err, sizeof(err)),
		    1);
	}
	CHECK(f->a);
	assert_int_equal(idx_message_get(f->a, inbox, uids[2], &m, err, sizeof(err)), 1);
	assert_int_equal(m.nkeywords, 27);
	idx_message_clear(&m);
	mb = getmb(f->a, "INBOX");
	assert_int_equal(mb.nkeywords, 28);
	idx_mailbox_clear(&mb);
	{
		const char *bad[1] = { "no space" };

		assert_int_equal(idx_store(f->a, inbox, uids, 1, IDX_STORE_ADD, 0, bad, 1, 0, NULL, &nfailed,
				     &modseq, err, sizeof(err)),
		    IDX_REFUSED);
	}
	/* A sync after all this finds nothing to change. */
	{
		struct idx_sync_stats st;

		assert_int_equal(idx_sync_mailbox(f->a, inbox, &st, err, sizeof(err)), 1);
		assert_int_equal(st.added + st.flagged + st.removed, 0);
		CHECK(f->a);
	}
}

/* ---- expunge, copy, move ---- */

static int tomb_cb(void *arg, uint32_t uid, uint64_t modseq)
{
	uint32_t *v = arg;

	v[v[0] + 1] = uid;
	v[0]++;
	return 1;
}

static void test_expunge_copy_move(void **state)
{
	struct fx *f = *state;
	uint32_t inbox = mbid(f->a, "INBOX"), lists = mbid(f->a, "Lists"), uids[4], nu[4], ex[4], tombs[8];
	char err[256];
	struct idx_mailbox mb;
	struct idx_account_info info;
	uint64_t modseq;
	size_t nfailed;
	int i;

	for (i = 0; i < 4; i++)
		uids[i] = deliver(f->a, inbox, msg1, i == 3 ? IDX_SEEN : 0, i == 2 ? "tag" : NULL);
	mb = getmb(f->a, "INBOX");
	modseq = mb.highest_modseq;
	idx_mailbox_clear(&mb);
	/* Expunge \Deleted ones. */
	assert_int_equal(idx_store(f->a, inbox, uids, 1, IDX_STORE_ADD, IDX_DELETED, NULL, 0, 0, NULL, &nfailed, NULL,
			     err, sizeof(err)),
	    1);
	assert_int_equal(idx_expunge(f->a, inbox, NULL, 0, NULL, err, sizeof(err)), 1);
	CHECK(f->a);
	assert_int_equal(idx_expunge(f->a, inbox, &uids[1], 1, ex, err, sizeof(err)), 1);
	assert_int_equal(ex[0], uids[1]);
	CHECK(f->a);
	memset(tombs, 0, sizeof(tombs));
	assert_int_equal(idx_tombstones(f->a, inbox, modseq, tomb_cb, tombs, err, sizeof(err)), 2);
	assert_int_equal(tombs[1], uids[0]);
	assert_int_equal(tombs[2], uids[1]);
	mb = getmb(f->a, "INBOX");
	assert_int_equal(idx_tombstones(f->a, inbox, mb.highest_modseq, NULL, NULL, err, sizeof(err)), 0);
	assert_int_equal(mb.counts.total, 2);
	idx_mailbox_clear(&mb);
	/* Copy: new UIDs, files linked, counts and quota. */
	assert_int_equal(idx_copy(f->a, inbox, &uids[2], 2, lists, nu, NULL, err, sizeof(err)), 2);
	CHECK(f->a);
	assert_int_equal(nu[0], 1);
	assert_int_equal(nu[1], 2);
	/* Copy again into the same target (names clash: new bases). */
	assert_int_equal(idx_copy(f->a, inbox, &uids[2], 2, lists, nu, NULL, err, sizeof(err)), 2);
	CHECK(f->a);
	assert_int_equal(nu[0], 3);
	mb = getmb(f->a, "Lists");
	assert_int_equal(mb.counts.total, 4);
	assert_int_equal(mb.counts.unseen, 2);
	assert_int_equal(mb.nkeywords, 1);
	idx_mailbox_clear(&mb);
	assert_int_equal(idx_account_info(f->a, &info, err, sizeof(err)), 1);
	assert_int_equal(info.quota_used, 6 * (sizeof(msg1) - 1));
	/* Move: source tombstones, same message ids. */
	{
		struct idx_message before, after;
		uint32_t trash = mbid(f->a, "Trash");

		assert_int_equal(idx_message_get(f->a, inbox, uids[2], &before, err, sizeof(err)), 1);
		assert_int_equal(idx_move(f->a, inbox, &uids[2], 2, trash, nu, err, sizeof(err)), 2);
		CHECK(f->a);
		assert_int_equal(idx_message_get(f->a, trash, nu[0], &after, err, sizeof(err)), 1);
		assert_int_equal(before.id, after.id);
		assert_int_equal(after.nkeywords, 1);
		idx_message_clear(&before);
		idx_message_clear(&after);
		mb = getmb(f->a, "INBOX");
		assert_int_equal(mb.counts.total, 0);
		assert_int_equal(mb.counts.size, 0);
		idx_mailbox_clear(&mb);
		assert_int_equal(idx_tombstones(f->a, inbox, 0, NULL, NULL, err, sizeof(err)), 4);
		assert_int_equal(count_files(idx_account_maildir(f->a)), 0);
		/* Move within the same mailbox. */
		assert_int_equal(idx_move(f->a, trash, nu, 1, trash, ex, err, sizeof(err)), 1);
		assert_int_equal(ex[0], 3);
		CHECK(f->a);
	}
	assert_int_equal(idx_account_info(f->a, &info, err, sizeof(err)), 1);
	assert_int_equal(info.quota_used, 6 * (sizeof(msg1) - 1));
}

/* ---- threading ---- */

static void test_threading(void **state)
{
	struct fx *f = *state;
	uint32_t inbox = mbid(f->a, "INBOX"), up, ur, ur2, ug;
	char err[256];
	struct idx_message p, r, g;
	static const char parent[] = "Message-ID: <p@x>\r\nSubject: topic\r\n\r\nhi\r\n";
	static const char reply[] = "Message-ID: <r@x>\r\nIn-Reply-To: <p@x>\r\nReferences: <p@x>\r\n"
				    "Subject: Re: topic\r\n\r\nre\r\n";
	static const char grand[] = "Message-ID: <g@x>\r\nReferences: <p@x> <r@x>\r\nSubject: Re: Re: topic\r\n\r\n";
	static const char orphan[] = "Message-ID: <o@x>\r\nReferences: <q@x>\r\nSubject: Re: other\r\n\r\n";
	static const char q[] = "Message-ID: <q@x>\r\nSubject: other\r\n\r\n";
	static const char muted[] = "Message-ID: <m@x>\r\nReferences: <p@x>\r\nSubject: Re: topic\r\n\r\n";

	/* Reply after its parent. */
	up = deliver(f->a, inbox, parent, 0, NULL);
	ur = deliver(f->a, inbox, reply, 0, NULL);
	assert_int_equal(idx_message_get(f->a, inbox, up, &p, err, sizeof(err)), 1);
	assert_int_equal(idx_message_get(f->a, inbox, ur, &r, err, sizeof(err)), 1);
	assert_int_equal(p.thread_id, p.id);
	assert_int_equal(r.thread_id, p.id);
	assert_int_equal(r.nparents, 1);
	assert_int_equal(r.parents[0], p.id);
	assert_int_equal(r.tflags & IDX_T_MISSING_LINK, 0);
	assert_string_equal(p.subject_base, "topic");
	idx_message_clear(&r);

	/* Parent after its reply: the reply (and its thread) is re-parented. */
	ug = deliver(f->a, inbox, orphan, 0, NULL);
	assert_int_equal(idx_message_get(f->a, inbox, ug, &g, err, sizeof(err)), 1);
	assert_int_equal(g.thread_id, g.id);
	assert_true(g.tflags & IDX_T_MISSING_LINK);
	idx_message_clear(&g);
	ur2 = deliver(f->a, inbox, q, 0, NULL);
	assert_int_equal(idx_message_get(f->a, inbox, ug, &g, err, sizeof(err)), 1);
	assert_int_equal(idx_message_get(f->a, inbox, ur2, &r, err, sizeof(err)), 1);
	assert_int_equal(g.thread_id, r.id);
	assert_int_equal(g.nparents, 1);
	assert_int_equal(g.parents[0], r.id);
	assert_int_equal(g.tflags & IDX_T_MISSING_LINK, 0);
	idx_message_clear(&g);
	idx_message_clear(&r);

	/* Grandchild with a known chain. */
	ug = deliver(f->a, inbox, grand, 0, NULL);
	assert_int_equal(idx_message_get(f->a, inbox, ug, &g, err, sizeof(err)), 1);
	assert_int_equal(g.thread_id, p.id);
	assert_int_equal(g.nparents, 2);
	idx_message_clear(&g);

	/* A muted thread marks new messages \Seen. */
	{
		struct idx_message pm;
		TCXSTR *x = tcxstrnew();
		uint8_t k[9];

		/* No API mutes a thread yet: set the flag in the record directly. */
		assert_int_equal(idx_message_get(f->a, inbox, up, &pm, err, sizeof(err)), 1);
		pm.tflags |= IDX_T_MUTED;
		rec_message_encode(&pm, x);
		key_mbuid(k, K_MSG, inbox, up);
		assert_true(tcbdbtranbegin(f->a->db));
		assert_true(tcbdbput(f->a->db, k, 9, tcxstrptr(x), tcxstrsize(x)));
		assert_true(tcbdbtrancommit(f->a->db));
		tcxstrdel(x);
		idx_message_clear(&pm);
		ug = deliver(f->a, inbox, muted, 0, NULL);
		assert_int_equal(idx_message_get(f->a, inbox, ug, &g, err, sizeof(err)), 1);
		assert_true(g.flags & IDX_SEEN);
		assert_true(g.tflags & IDX_T_MUTED);
		assert_non_null(strstr(g.filename, ":2,S"));
		idx_message_clear(&g);
	}
	/* Expunging the root keeps its thread ids valid. */
	assert_int_equal(idx_expunge(f->a, inbox, &up, 1, NULL, err, sizeof(err)), 1);
	CHECK(f->a);
	idx_message_clear(&p);
}

/* ---- threading by base subject ---- */

static void schema_set(struct idx_account *a, uint64_t schema);

/* Deliver one message received at the given time; returns its uid. */
static uint32_t deliver_at(struct idx_account *a, uint32_t mb, const char *text, int64_t received)
{
	struct idx_add it;
	char err[256];

	memset(&it, 0, sizeof(it));
	it.w = writer(a, text);
	it.mailbox_id = mb;
	it.received = received;
	if (idx_add(a, &it, 1, err, sizeof(err)) != 1)
		fprintf(stderr, "idx_add: %s / %s\n", err, it.err_r);
	assert_int_equal(it.result, 1);
	maildir_writer_free(&it.w);
	CHECK(a);
	return it.uid_r;
}

static struct idx_message getmsg(struct idx_account *a, uint32_t mb, uint32_t uid)
{
	struct idx_message m;
	char err[256];

	assert_int_equal(idx_message_get(a, mb, uid, &m, err, sizeof(err)), 1);
	return m;
}

/* m is a child of p in p's thread, with a missing link (a subject match). */
static void assert_subject_child_(struct idx_account *a, uint32_t mb, uint32_t uid, uint32_t pmb, uint32_t puid,
    int line)
{
	struct idx_message m = getmsg(a, mb, uid), p = getmsg(a, pmb, puid);

	if (m.thread_id != p.thread_id || m.nparents == 0 || m.parents[m.nparents - 1] != p.id)
		fprintf(stderr, "line %d: message %llu (thread %llu) is no child of %llu (thread %llu)\n", line,
		    (unsigned long long)m.id, (unsigned long long)m.thread_id, (unsigned long long)p.id,
		    (unsigned long long)p.thread_id);

	assert_int_equal(m.thread_id, p.thread_id);
	assert_true(m.nparents >= 1);
	assert_int_equal(m.parents[m.nparents - 1], p.id);
	assert_true(m.tflags & IDX_T_MISSING_LINK);
	idx_message_clear(&m);
	idx_message_clear(&p);
}

#define assert_subject_child(a, mb, uid, pmb, puid) assert_subject_child_(a, mb, uid, pmb, puid, __LINE__)

/* m starts its own thread. */
static void assert_thread_root(struct idx_account *a, uint32_t mb, uint32_t uid)
{
	struct idx_message m = getmsg(a, mb, uid);

	assert_int_equal(m.thread_id, m.id);
	assert_int_equal(m.nparents, 0);
	idx_message_clear(&m);
}

/* Set tflags bits on a stored message (no API mutes a thread yet). */
static void tflags_set(struct idx_account *a, uint32_t mb, uint32_t uid, uint32_t bits)
{
	struct idx_message m = getmsg(a, mb, uid);
	TCXSTR *x = tcxstrnew();
	uint8_t k[9];

	m.tflags |= bits;
	rec_message_encode(&m, x);
	key_mbuid(k, K_MSG, mb, uid);
	assert_true(tcbdbtranbegin(a->db));
	assert_true(tcbdbput(a->db, k, 9, tcxstrptr(x), tcxstrsize(x)));
	assert_true(tcbdbtrancommit(a->db));
	tcxstrdel(x);
	idx_message_clear(&m);
}

/* Replies without known references join the latest message of their base subject. */
static void test_thread_subject(void **state)
{
	struct fx *f = *state;
	uint32_t inbox = mbid(f->a, "INBOX"), arch = mbid(f->a, "Archive"), up, ur, un, uf, ub, uc, ux, uy, ul, nu;
	int64_t now = (int64_t)time(NULL);
	struct idx_message m;

	/* A reply without references joins by subject, as a child with a missing link. */
	up = deliver_at(f->a, inbox, "Message-ID: <s1@x>\r\nSubject: budget\r\n\r\n", now - 3600);
	ur = deliver_at(f->a, inbox, "Message-ID: <s2@x>\r\nSubject: Re: budget\r\n\r\n", now - 3000);
	assert_subject_child(f->a, inbox, ur, inbox, up);
	/* A new conversation with an equal subject is its own thread. */
	un = deliver_at(f->a, inbox, "Message-ID: <s3@x>\r\nSubject: Budget\r\n\r\n", now - 2000);
	assert_thread_root(f->a, inbox, un);
	m = getmsg(f->a, inbox, un);
	assert_int_equal(m.tflags & IDX_T_MISSING_LINK, 0);
	idx_message_clear(&m);
	/* The most recent one is the parent; list tags and other leaders count. */
	uf = deliver_at(f->a, inbox, "Subject: AW: [team] Budget\r\n\r\n", now - 1000);
	assert_subject_child(f->a, inbox, uf, inbox, un);
	uf = deliver_at(f->a, inbox, "Subject: [team] budget (fwd)\r\n\r\n", now - 900);
	assert_subject_child(f->a, inbox, uf, inbox, uf - 1);
	uf = deliver_at(f->a, inbox, "Subject: =?utf-8?q?Fwd=3A_budget?=\r\n\r\n", now - 800);
	assert_subject_child(f->a, inbox, uf, inbox, uf - 1);
	m = getmsg(f->a, inbox, uf);
	assert_int_equal(m.nparents, 3);
	idx_message_clear(&m);
	/* A list tag alone is no response. */
	ul = deliver_at(f->a, inbox, "Subject: [team] budget\r\n\r\n", now - 700);
	assert_thread_root(f->a, inbox, ul);
	/* Messages received after the reply are no parents (an import of older mail). */
	ub = deliver_at(f->a, inbox, "Subject: Re: budget\r\n\r\n", now - 3300);
	assert_subject_child(f->a, inbox, ub, inbox, up);
	ub = deliver_at(f->a, inbox, "Subject: Re: budget\r\n\r\n", now - 5000);
	assert_thread_root(f->a, inbox, ub);

	/* Older than the window: no match. */
	uc = deliver_at(f->a, inbox, "Subject: old topic\r\n\r\n", now - 40 * 86400);
	ux = deliver_at(f->a, inbox, "Subject: Re: old topic\r\n\r\n", now);
	assert_thread_root(f->a, inbox, ux);
	m = getmsg(f->a, inbox, ux);
	assert_int_equal(m.tflags & IDX_T_MISSING_LINK, 0);
	idx_message_clear(&m);
	/* Within it (a day short of four weeks): a match. */
	uy = deliver_at(f->a, inbox, "Subject: RE: old topic\r\n\r\n", now - 40 * 86400 + 27 * 86400);
	assert_subject_child(f->a, inbox, uy, inbox, uc);

	/* References take precedence over the subject. */
	ux = deliver_at(f->a, inbox, "Message-ID: <a1@x>\r\nSubject: alpha\r\n\r\n", now - 100);
	uy = deliver_at(f->a, inbox, "Message-ID: <b1@x>\r\nSubject: beta\r\n\r\n", now - 90);
	uc = deliver_at(f->a, inbox, "Message-ID: <b2@x>\r\nReferences: <a1@x>\r\nSubject: Re: beta\r\n\r\n", now - 80);
	{
		struct idx_message c = getmsg(f->a, inbox, uc), a = getmsg(f->a, inbox, ux);

		assert_int_equal(c.thread_id, a.id);
		assert_int_equal(c.nparents, 1);
		assert_int_equal(c.parents[0], a.id);
		assert_int_equal(c.tflags & IDX_T_MISSING_LINK, 0);
		idx_message_clear(&c);
		idx_message_clear(&a);
	}
	/* References none of which is known: the subject decides. */
	uc = deliver_at(f->a, inbox, "Message-ID: <b3@x>\r\nReferences: <zz@x>\r\nSubject: Re: beta\r\n\r\n", now - 70);
	assert_subject_child(f->a, inbox, uc, inbox, uc - 1);

	/* The newest message of a subject is a copy of a thread root: its
	 * children's chain starts at the root (parents[0] is the thread id). */
	ux = deliver_at(f->a, inbox, "Message-ID: <g1@x>\r\nSubject: gamma\r\n\r\n", now - 60);
	{
		char err[256];

		assert_int_equal(idx_copy(f->a, inbox, &ux, 1, arch, &nu, NULL, err, sizeof(err)), 1);
		CHECK(f->a);
	}
	uy = deliver_at(f->a, inbox, "Subject: Re: gamma\r\n\r\n", now - 50);
	assert_subject_child(f->a, inbox, uy, arch, nu);
	m = getmsg(f->a, inbox, uy);
	assert_int_equal(m.nparents, 2);
	assert_int_equal(m.thread_id, m.parents[0]);
	idx_message_clear(&m);

	/* A muted thread, found by subject, marks the reply \Seen. */
	ux = deliver_at(f->a, inbox, "Message-ID: <d1@x>\r\nSubject: delta\r\n\r\n", now - 40);
	tflags_set(f->a, inbox, ux, IDX_T_MUTED | IDX_T_COLLAPSED);
	uy = deliver_at(f->a, inbox, "Subject: Re: delta\r\n\r\n", now - 30);
	assert_subject_child(f->a, inbox, uy, inbox, ux);
	m = getmsg(f->a, inbox, uy);
	assert_true(m.flags & IDX_SEEN);
	assert_true(m.tflags & IDX_T_MUTED);
	assert_true(m.tflags & IDX_T_COLLAPSED);
	assert_non_null(strstr(m.filename, ":2,S"));
	idx_message_clear(&m);
	/* A reply without base subject ("Re:" only) joins nothing. */
	uy = deliver_at(f->a, inbox, "Subject: Re:\r\n\r\n", now - 20);
	assert_thread_root(f->a, inbox, uy);
}

/* Number of 'J' keys, all or of one base subject (prefix). */
static size_t jkeys(struct idx_account *a, const char *base)
{
	TCXSTR *k = tcxstrnew();
	BDBCUR *cur = tcbdbcurnew(a->db);
	size_t n = 0;

	if (base == NULL)
		tcxstrcat(k, "J", 1);
	else
		assert_true(key_subject(k, base, 0, false));
	if (tcbdbcurjump(cur, tcxstrptr(k), tcxstrsize(k))) {
		int ks;
		const void *kp;

		while ((kp = tcbdbcurkey3(cur, &ks)) != NULL && ks >= tcxstrsize(k) &&
		    memcmp(kp, tcxstrptr(k), (size_t)tcxstrsize(k)) == 0) {
			n++;
			if (!tcbdbcurnext(cur))
				break;
		}
	}
	tcbdbcurdel(cur);
	tcxstrdel(k);
	return n;
}

static bool jkey_of(struct idx_account *a, uint32_t mb, uint32_t uid)
{
	struct idx_message m = getmsg(a, mb, uid);
	TCXSTR *k = tcxstrnew();
	bool r = key_subject(k, m.subject_base, m.id, true) && tcbdbvsiz(a->db, tcxstrptr(k), tcxstrsize(k)) >= 0;

	tcxstrdel(k);
	idx_message_clear(&m);
	return r;
}

/* The 'J' keys follow copy, move, expunge and mailbox delete; long subjects are cut. */
static void test_subject_keys(void **state)
{
	struct fx *f = *state;
	uint32_t inbox = mbid(f->a, "INBOX"), arch = mbid(f->a, "Archive"), u, u2, cu, mu, x;
	char err[256], text[1200], longa[400], longb[400];
	int64_t now = (int64_t)time(NULL);
	struct idx_message m;

	u = deliver(f->a, inbox, "Subject: keys\r\n\r\n", 0, NULL);
	deliver(f->a, inbox, "From: a@x\r\n\r\nno subject\r\n", 0, NULL);
	assert_int_equal(jkeys(f->a, NULL), 1);
	assert_int_equal(jkeys(f->a, "keys"), 1);
	assert_true(jkey_of(f->a, inbox, u));
	/* Copy: a new id, a second key. */
	assert_int_equal(idx_copy(f->a, inbox, &u, 1, arch, &cu, NULL, err, sizeof(err)), 1);
	CHECK(f->a);
	assert_int_equal(jkeys(f->a, "keys"), 2);
	assert_true(jkey_of(f->a, arch, cu));
	/* Move: the same id, the same key. */
	assert_int_equal(idx_mailbox_create(f->a, "Keys", 0, true, NULL, err, sizeof(err)), 1);
	x = mbid(f->a, "Keys");
	assert_int_equal(idx_move(f->a, arch, &cu, 1, x, &mu, err, sizeof(err)), 1);
	CHECK(f->a);
	assert_int_equal(jkeys(f->a, "keys"), 2);
	assert_true(jkey_of(f->a, x, mu));
	/* Expunge and mailbox delete remove theirs. */
	assert_int_equal(idx_expunge(f->a, inbox, &u, 1, NULL, err, sizeof(err)), 1);
	CHECK(f->a);
	assert_int_equal(jkeys(f->a, "keys"), 1);
	assert_int_equal(idx_mailbox_delete(f->a, "Keys", err, sizeof(err)), 1);
	CHECK(f->a);
	assert_int_equal(jkeys(f->a, NULL), 0);

	/* Long base subjects: the key holds IDX_SUBJECT_KEY_MAX bytes, a match compares all. */
	memset(longa, 'w', 300);
	memcpy(longa + 300, "-a", 3);
	memcpy(longb, longa, 300);
	memcpy(longb + 300, "-b", 3);
	snprintf(text, sizeof(text), "Subject: %s\r\n\r\n", longb);
	u = deliver_at(f->a, inbox, text, now - 100);
	snprintf(text, sizeof(text), "Subject: Re: %s\r\n\r\n", longa);
	u2 = deliver_at(f->a, inbox, text, now - 90);
	assert_thread_root(f->a, inbox, u2);
	assert_int_equal(jkeys(f->a, longa), 2);
	m = getmsg(f->a, inbox, u);
	assert_int_equal(strlen(m.subject_base), strlen(longb));
	idx_message_clear(&m);
	{
		TCXSTR *k = tcxstrnew();

		assert_true(key_subject(k, longa, 1, true));
		assert_int_equal(tcxstrsize(k), 1 + IDX_SUBJECT_KEY_MAX + 1 + 8);
		/* A multibyte character at the cut is left out whole. */
		memset(longb, 'w', sizeof(longb));
		memcpy(longb + IDX_SUBJECT_KEY_MAX - 1, "\xc3\xa9", 2);
		longb[300] = '\0';
		assert_true(key_subject(k, longb, 1, true));
		assert_int_equal(tcxstrsize(k), 1 + IDX_SUBJECT_KEY_MAX - 1 + 1 + 8);
		assert_false(key_subject(k, "", 1, true));
		tcxstrdel(k);
	}
	snprintf(text, sizeof(text), "Subject: %s\r\n\r\n", longa);
	u = deliver_at(f->a, inbox, text, now - 80);
	snprintf(text, sizeof(text), "Subject: Re: %s\r\n\r\n", longa);
	u2 = deliver_at(f->a, inbox, text, now - 70);
	assert_subject_child(f->a, inbox, u2, inbox, u);
}

/* Drop every 'J' key of a (inside a transaction). */
static void jkeys_drop(struct idx_account *a)
{
	char err[256];
	BDBCUR *cur;
	TCLIST *keys = tclistnew();
	int i;

	assert_int_equal(op_begin(a, err, sizeof(err)), 1);
	cur = tcbdbcurnew(a->db);
	if (tcbdbcurjump(cur, "J", 1)) {
		int ks;
		const char *kp;

		while ((kp = tcbdbcurkey3(cur, &ks)) != NULL && kp[0] == 'J') {
			tclistpush(keys, kp, ks);
			if (!tcbdbcurnext(cur))
				break;
		}
	}
	tcbdbcurdel(cur);
	for (i = 0; i < tclistnum(keys); i++) {
		int ks;
		const void *kp = tclistval(keys, i, &ks);

		assert_int_equal(db_out(a, kp, (size_t)ks, err, sizeof(err)), 1);
	}
	assert_true(op_end(a, 1, err, sizeof(err)) >= 0);
	op_unlock(a);
	tclistdel(keys);
}

static void count_report(void *arg, const char *line)
{
	(*(int *)arg)++;
}

/* Deliver n messages in one batch, subjects "bulk <i % 7>" and one empty. */
static void deliver_bulk(struct idx_account *a, uint32_t mb, size_t n)
{
	struct idx_add *it = calloc(n, sizeof(*it));
	char err[256], text[128];
	size_t i;

	for (i = 0; i < n; i++) {
		if (i == 0)
			snprintf(text, sizeof(text), "From: a@x\r\n\r\n");
		else
			snprintf(text, sizeof(text), "Subject: Re: bulk %zu\r\n\r\n", i % 7);
		it[i].w = writer(a, text);
		it[i].mailbox_id = mb;
	}
	assert_int_equal(idx_add(a, it, n, err, sizeof(err)), (int)n);
	for (i = 0; i < n; i++)
		maildir_writer_free(&it[i].w);
	free(it);
}

/* Schema 1 -> 2 builds the 'J' keys (over more than one cursor batch); verifydata -fix repairs them. */
static void test_upgrade_subject_keys(void **state)
{
	struct fx *f = *state;
	uint32_t inbox = mbid(f->a, "INBOX"), arch = mbid(f->a, "Archive");
	char err[512] = "";
	int n = 0;
	size_t total;

	deliver_bulk(f->a, inbox, 700);
	deliver_bulk(f->a, arch, 700);
	CHECK(f->a);
	total = jkeys(f->a, NULL);
	assert_int_equal(total, 1398);
	/* What a schema-1 program left: no 'J' keys. */
	jkeys_drop(f->a);
	schema_set(f->a, 1);
	assert_int_equal(jkeys(f->a, NULL), 0);
	assert_int_equal(idx_check(f->a, count_report, &n, err, sizeof(err)), 1398);
	idx_account_close(&f->a);

	assert_int_equal(idx_account_open(f->dir, &f->opts, &f->a, err, sizeof(err)), 1);
	assert_int_equal(f->a->rec.schema, 2);
	assert_int_equal(jkeys(f->a, NULL), total);
	CHECK(f->a);
	idx_account_close(&f->a);
	assert_int_equal(idx_account_open(f->dir, &f->opts, &f->a, err, sizeof(err)), 1);
	assert_int_equal(jkeys(f->a, NULL), total);
	CHECK(f->a);

	/* verifydata: a missing key and a stale one are reported, -fix repairs both. */
	{
		TCXSTR *k = tcxstrnew();
		struct idx_message m = getmsg(f->a, inbox, 5);

		assert_true(key_subject(k, m.subject_base, m.id, true));
		assert_int_equal(op_begin(f->a, err, sizeof(err)), 1);
		assert_int_equal(db_out(f->a, tcxstrptr(k), (size_t)tcxstrsize(k), err, sizeof(err)), 1);
		assert_true(key_subject(k, "gone", m.id, true));
		assert_int_equal(db_put(f->a, tcxstrptr(k), (size_t)tcxstrsize(k), "", 0, err, sizeof(err)), 1);
		assert_true(op_end(f->a, 1, err, sizeof(err)) >= 0);
		op_unlock(f->a);
		n = 0;
		assert_int_equal(idx_check(f->a, count_report, &n, err, sizeof(err)), 2);
		n = 0;
		assert_int_equal(idx_recalculate_counts(f->a, count_report, &n, err, sizeof(err)), 2);
		assert_int_equal(n, 2);
		CHECK(f->a);
		tcxstrdel(k);
		idx_message_clear(&m);
	}
}

/* ---- notifications ---- */

static int notified;
static void on_notify(void *arg)
{
	notified++;
}

static void test_notify(void **state)
{
	struct fx *f = *state;
	struct idx_listener *l = idx_listen(f->a, on_notify, NULL);
	uint32_t inbox = mbid(f->a, "INBOX"), u, nu;
	struct idx_change *ch;
	size_t n, i, nfailed;
	bool overflow;
	char err[256];
	size_t kinds[16] = { 0 };

	notified = 0;
	u = deliver(f->a, inbox, msg1, 0, NULL);
	assert_int_equal(idx_store(f->a, inbox, &u, 1, IDX_STORE_ADD, IDX_SEEN, NULL, 0, 0, NULL, &nfailed, NULL,
			     err, sizeof(err)),
	    1);
	assert_int_equal(idx_mailbox_create(f->a, "New", 0, true, NULL, err, sizeof(err)), 1);
	assert_int_equal(idx_move(f->a, inbox, &u, 1, mbid(f->a, "New"), &nu, err, sizeof(err)), 1);
	assert_int_equal(idx_mailbox_rename(f->a, "New", "Newer", err, sizeof(err)), 1);
	assert_int_equal(idx_mailbox_delete(f->a, "Newer", err, sizeof(err)), 1);
	assert_int_equal(notified, 6);
	assert_true(idx_listener_drain(l, &ch, &n, &overflow) > 0);
	assert_false(overflow);
	for (i = 0; i < n; i++)
		kinds[ch[i].kind]++;
	assert_int_equal(ch[0].kind, IDX_CH_ADD);
	assert_int_equal(ch[0].uid, u);
	assert_int_equal(kinds[IDX_CH_FLAGS], 1);
	assert_int_equal(kinds[IDX_CH_REMOVE], 1);
	assert_int_equal(kinds[IDX_CH_ADD], 2);
	assert_int_equal(kinds[IDX_CH_MAILBOX_ADD], 1);
	assert_int_equal(kinds[IDX_CH_MAILBOX_RENAME], 1);
	assert_int_equal(kinds[IDX_CH_MAILBOX_REMOVE], 1);
	for (i = 1; i < n; i++)
		if (ch[i].modseq != 0 && ch[i - 1].modseq != 0)
			assert_true(ch[i].modseq >= ch[i - 1].modseq);
	for (i = 0; i < n; i++)
		if (ch[i].kind == IDX_CH_MAILBOX_RENAME) {
			assert_string_equal(ch[i].name, "Newer");
			assert_string_equal(ch[i].oldname, "New");
		}
	idx_changes_free(ch, n);
	/* Overflow. */
	idx_listener_set_limit(l, 3);
	deliver(f->a, inbox, msg1, 0, NULL);
	deliver(f->a, inbox, msg1, 0, NULL);
	idx_listener_drain(l, &ch, &n, &overflow);
	assert_true(overflow);
	assert_int_equal(n, 0);
	idx_changes_free(ch, n);
	deliver(f->a, inbox, msg1, 0, NULL);
	idx_listener_drain(l, &ch, &n, &overflow);
	assert_false(overflow);
	assert_int_equal(n, 2);
	idx_changes_free(ch, n);
	idx_unlisten(&l);
	assert_null(l);
}

/* reassignuids and bumpuidvalidity tell listeners: a view of the old UIDs must end. */
static void test_notify_uidvalidity(void **state)
{
	struct fx *f = *state;
	struct idx_listener *l = idx_listen(f->a, NULL, NULL);
	uint32_t inbox = mbid(f->a, "INBOX"), u[3], uv;
	struct idx_mailbox mb;
	struct idx_change *ch;
	size_t n;
	bool overflow;
	char err[256];

	for (int i = 0; i < 3; i++)
		u[i] = deliver(f->a, inbox, msg1, 0, NULL);
	assert_int_equal(idx_expunge(f->a, inbox, &u[0], 1, NULL, err, sizeof(err)), 1);
	idx_listener_drain(l, &ch, &n, &overflow);
	idx_changes_free(ch, n);
	mb = getmb(f->a, "INBOX");
	uv = mb.uidvalidity;
	idx_mailbox_clear(&mb);
	for (int t = 0; t < 2; t++) {
		int r = t == 0 ? idx_bump_uidvalidity(f->a, "INBOX", NULL, NULL, err, sizeof(err))
			       : idx_reassign_uids(f->a, "INBOX", NULL, NULL, err, sizeof(err));
		assert_int_equal(r, 1);
		CHECK(f->a);
		idx_listener_drain(l, &ch, &n, &overflow);
		assert_false(overflow);
		assert_int_equal(n, 1);
		assert_int_equal(ch[0].kind, IDX_CH_MAILBOX_UIDVALIDITY);
		assert_int_equal(ch[0].mailbox_id, inbox);
		idx_changes_free(ch, n);
		mb = getmb(f->a, "INBOX");
		assert_true(mb.uidvalidity > uv);
		uv = mb.uidvalidity;
		idx_mailbox_clear(&mb);
	}
	/* All mailboxes: one change each. No such mailbox: nothing. */
	assert_true(idx_reassign_uids(f->a, NULL, NULL, NULL, err, sizeof(err)) > 1);
	idx_listener_drain(l, &ch, &n, &overflow);
	assert_true(n > 1);
	for (size_t i = 0; i < n; i++)
		assert_int_equal(ch[i].kind, IDX_CH_MAILBOX_UIDVALIDITY);
	idx_changes_free(ch, n);
	assert_int_equal(idx_bump_uidvalidity(f->a, "Nope", NULL, NULL, err, sizeof(err)), 0);
	idx_listener_drain(l, &ch, &n, &overflow);
	assert_int_equal(n, 0);
	idx_changes_free(ch, n);
	idx_unlisten(&l);
}

/* ---- sync ---- */

static void put_file(const char *path, const char *text)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0600);

	assert_true(fd >= 0);
	assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
	close(fd);
}

static void test_sync(void **state)
{
	struct fx *f = *state;
	uint32_t inbox = mbid(f->a, "INBOX"), u;
	struct idx_sync_stats st;
	struct idx_message m;
	struct idx_change *ch;
	size_t n;
	bool overflow;
	char err[256], path[1024], path2[1024];
	struct idx_listener *l = idx_listen(f->a, NULL, NULL);
	uint64_t modseq;

	/* A file dropped into new/ by another tool. */
	snprintf(path, sizeof(path), "%s/new/1700000000.M1P1.other", idx_account_maildir(f->a));
	put_file(path, "Message-ID: <ext@x>\r\nSubject: ext\r\n\r\nhi\r\n");
	assert_int_equal(idx_sync_mailbox(f->a, inbox, &st, err, sizeof(err)), 1);
	assert_int_equal(st.added, 1);
	CHECK(f->a);
	assert_int_equal(idx_message_get(f->a, inbox, 1, &m, err, sizeof(err)), 1);
	assert_string_equal(m.message_id, "ext@x");
	modseq = m.modseq;
	idx_message_clear(&m);
	/* Renamed with new flags (and a keyword letter from dovecot-keywords). */
	u = deliver(f->a, inbox, msg1, 0, "known");
	snprintf(path2, sizeof(path2), "%s/cur/1700000000.M1P1.other:2,FSa", idx_account_maildir(f->a));
	assert_int_equal(rename(path, path2), 0);
	assert_int_equal(idx_sync_mailbox(f->a, inbox, &st, err, sizeof(err)), 1);
	assert_int_equal(st.flagged, 1);
	CHECK(f->a);
	assert_int_equal(idx_message_get(f->a, inbox, 1, &m, err, sizeof(err)), 1);
	assert_int_equal(m.flags, IDX_FLAGGED | IDX_SEEN);
	assert_int_equal(m.nkeywords, 1);
	assert_string_equal(m.keywords[0], "known");
	assert_true(m.modseq > modseq);
	idx_message_clear(&m);
	/* Deleted by another tool: a tombstone. */
	assert_int_equal(unlink(path2), 0);
	assert_int_equal(idx_sync_mailbox(f->a, inbox, &st, err, sizeof(err)), 1);
	assert_int_equal(st.removed, 1);
	CHECK(f->a);
	assert_int_equal(idx_tombstones(f->a, inbox, 0, NULL, NULL, err, sizeof(err)), 1);
	assert_int_equal(idx_message_get(f->a, inbox, u, &m, err, sizeof(err)), 1);
	idx_message_clear(&m);
	/* A folder made by another tool, with a message. */
	assert_int_equal(maildir_folder_create(idx_account_maildir(f->a), ".Other.Sub", err, sizeof(err)), 1);
	snprintf(path, sizeof(path), "%s/.Other.Sub/cur/1700000001.M2P2.other:2,S", idx_account_maildir(f->a));
	put_file(path, "Subject: x\r\n\r\n");
	assert_int_equal(idx_sync_all(f->a, &st, err, sizeof(err)), 1);
	assert_int_equal(st.mailboxes_added, 2);
	assert_int_equal(st.added, 1);
	CHECK(f->a);
	{
		struct idx_mailbox mb = getmb(f->a, "Other/Sub");

		assert_int_equal(mb.counts.total, 1);
		assert_int_equal(mb.counts.unseen, 0);
		idx_mailbox_clear(&mb);
	}
	idx_listener_drain(l, &ch, &n, &overflow);
	assert_true(n >= 6);
	idx_changes_free(ch, n);
	idx_unlisten(&l);
}

/*
 * idx_sync_mailbox_changed after a complete sync of a folder whose
 * directories are older than the stamp margin: a change by another tool is
 * still found (its ctime moves), and nothing is reported when nothing changed.
 */
static int flags_cb(void *arg, const struct idx_message *m)
{
	struct idx_message *out = arg;

	out->uid = m->uid;
	out->flags = m->flags;
	out->modseq = m->modseq;
	out->nkeywords = m->nkeywords;
	assert_null(m->filename);
	if (m->nkeywords > 0)
		assert_string_equal(m->keywords[0], "known");
	return 1;
}

static void test_sync_stamp(void **state)
{
	struct fx *f = *state;
	uint32_t inbox = mbid(f->a, "INBOX"), u;
	struct idx_sync_stats st;
	struct idx_uidstate *us;
	struct idx_message got;
	size_t n;
	char err[256], path[1024], path2[1024];

	u = deliver(f->a, inbox, msg1, IDX_FLAGGED, "known");
	sleep(3);
	assert_int_equal(idx_sync_mailbox(f->a, inbox, &st, err, sizeof(err)), 1);
	assert_int_equal(idx_sync_mailbox_changed(f->a, inbox, &st, err, sizeof(err)), 1);
	assert_int_equal(st.added + st.flagged + st.removed, 0);
	/* Light reads: uid/flags/modseq, and flags with keywords. */
	assert_int_equal(idx_mailbox_uids(f->a, inbox, &us, &n, err, sizeof(err)), 1);
	assert_int_equal(n, 1);
	assert_int_equal(us[0].uid, u);
	assert_int_equal(us[0].flags, IDX_FLAGGED);
	memset(&got, 0, sizeof(got));
	assert_int_equal(idx_message_each_flags(f->a, inbox, 1, flags_cb, &got, err, sizeof(err)), 1);
	assert_int_equal(got.uid, u);
	assert_int_equal(got.flags, IDX_FLAGGED);
	assert_int_equal(got.modseq, us[0].modseq);
	assert_int_equal(got.nkeywords, 1);
	free(us);
	/* Another tool adds a file: found although a stamp is kept. */
	snprintf(path, sizeof(path), "%s/new/1700000000.M9P9.other", idx_account_maildir(f->a));
	put_file(path, "Message-ID: <st@x>\r\nSubject: st\r\n\r\nhi\r\n");
	assert_int_equal(idx_sync_mailbox_changed(f->a, inbox, &st, err, sizeof(err)), 1);
	assert_int_equal(st.added, 1);
	/* Renamed with flags, then removed. */
	snprintf(path2, sizeof(path2), "%s/cur/1700000000.M9P9.other:2,S", idx_account_maildir(f->a));
	assert_int_equal(rename(path, path2), 0);
	assert_int_equal(idx_sync_mailbox_changed(f->a, inbox, &st, err, sizeof(err)), 1);
	assert_int_equal(st.flagged, 1);
	assert_int_equal(unlink(path2), 0);
	assert_int_equal(idx_sync_mailbox_changed(f->a, inbox, &st, err, sizeof(err)), 1);
	assert_int_equal(st.removed, 1);
	CHECK(f->a);
}

/*
 * idx_sync_names: our own changes agree with the index (no scan), changes by
 * other tools do not (scan), and a stamp moves on only for a caller that
 * watched the folder since before the stamp was taken.
 */
static void test_sync_names(void **state)
{
	struct fx *f = *state;
	uint32_t inbox = mbid(f->a, "INBOX"), u, failed[1];
	struct idx_sync_stats st;
	struct idx_message m;
	size_t nfailed;
	uint64_t modseq;
	bool synced;
	char err[256], path[1024], path2[1100], name[600], name2[590];
	const char *names[2];

	/* Our delivery. */
	u = deliver(f->a, inbox, msg1, 0, NULL);
	assert_int_equal(idx_message_get(f->a, inbox, u, &m, err, sizeof(err)), 1);
	snprintf(name, sizeof(name), "%s", m.filename);
	idx_message_clear(&m);
	names[0] = name;
	assert_int_equal(idx_sync_names(f->a, inbox, names, 1, -1, &synced, &st, err, sizeof(err)), 1);
	assert_false(synced);
	/* Our flag change: the old name is gone, the new one is the record's. */
	assert_int_equal(idx_store(f->a, inbox, &u, 1, IDX_STORE_ADD, IDX_SEEN, NULL, 0, 0, failed, &nfailed, &modseq,
	    err, sizeof(err)), 1);
	assert_int_equal(idx_message_get(f->a, inbox, u, &m, err, sizeof(err)), 1);
	snprintf(name2, sizeof(name2), "%s", m.filename);
	idx_message_clear(&m);
	assert_string_not_equal(name, name2);
	names[1] = name2;
	assert_int_equal(idx_sync_names(f->a, inbox, names, 2, -1, &synced, &st, err, sizeof(err)), 1);
	assert_false(synced);
	/* Names that are no message, and a file that came and went unknown. */
	names[0] = "new/.hidden";
	names[1] = "cur/1700000000.M5P5.gone:2,S";
	assert_int_equal(idx_sync_names(f->a, inbox, names, 2, -1, &synced, &st, err, sizeof(err)), 1);
	assert_false(synced);
	/* Another tool renames our file with a flag: a scan takes it. */
	snprintf(path, sizeof(path), "%s/%s", idx_account_maildir(f->a), name2);
	snprintf(path2, sizeof(path2), "%sF", path);
	assert_int_equal(rename(path, path2), 0);
	snprintf(name, sizeof(name), "%sF", name2);
	names[0] = name2;
	names[1] = name;
	assert_int_equal(idx_sync_names(f->a, inbox, names, 2, -1, &synced, &st, err, sizeof(err)), 1);
	assert_true(synced);
	assert_int_equal(st.flagged, 1);
	CHECK(f->a);
	/* ... deletes it: the old name alone tells. */
	assert_int_equal(unlink(path2), 0);
	names[0] = name;
	assert_int_equal(idx_sync_names(f->a, inbox, names, 1, -1, &synced, &st, err, sizeof(err)), 1);
	assert_true(synced);
	assert_int_equal(st.removed, 1);
	CHECK(f->a);
	/* ... adds one: adopted. */
	snprintf(path, sizeof(path), "%s/new/1700000000.M6P6.other", idx_account_maildir(f->a));
	put_file(path, "Subject: other\r\n\r\nhi\r\n");
	names[0] = "new/1700000000.M6P6.other";
	assert_int_equal(idx_sync_names(f->a, inbox, names, 1, -1, &synced, &st, err, sizeof(err)), 1);
	assert_true(synced);
	assert_int_equal(st.added, 1);
	CHECK(f->a);

	/* Stamps: a complete sync of an old folder keeps one. */
	sleep(3);
	assert_int_equal(idx_sync_mailbox(f->a, inbox, &st, err, sizeof(err)), 1);
	/* A caller that watched since before it: the stamp moves past a file it did not name. */
	u = deliver(f->a, inbox, msg1, 0, NULL);
	assert_int_equal(idx_message_get(f->a, inbox, u, &m, err, sizeof(err)), 1);
	snprintf(name, sizeof(name), "%s", m.filename);
	idx_message_clear(&m);
	snprintf(path, sizeof(path), "%s/new/1700000000.M7P7.unnamed", idx_account_maildir(f->a));
	put_file(path, "Subject: unnamed\r\n\r\nhi\r\n");
	names[0] = name;
	assert_int_equal(idx_sync_names(f->a, inbox, names, 1, 0, &synced, &st, err, sizeof(err)), 1);
	assert_false(synced);
	assert_int_equal(idx_sync_mailbox_changed(f->a, inbox, &st, err, sizeof(err)), 1);
	assert_int_equal(st.added, 0);
	/* One that started watching later: the stamp stays, the next SELECT scans. */
	snprintf(path, sizeof(path), "%s/new/1700000000.M8P8.unnamed", idx_account_maildir(f->a));
	put_file(path, "Subject: unnamed\r\n\r\nhi\r\n");
	assert_int_equal(idx_sync_names(f->a, inbox, names, 1, INT64_MAX, &synced, &st, err, sizeof(err)), 1);
	assert_false(synced);
	assert_int_equal(idx_sync_mailbox_changed(f->a, inbox, &st, err, sizeof(err)), 1);
	assert_int_equal(st.added, 2);
	CHECK(f->a);
}

/* ---- corruption ---- */

static int each_count(void *arg, const struct idx_message *m)
{
	(*(int *)arg)++;
	return 1;
}

static void test_corrupt_record(void **state)
{
	struct fx *f = *state;
	uint32_t inbox = mbid(f->a, "INBOX"), u;
	char err[256];
	uint8_t k[9];
	int problems = 0, seen = 0;
	struct idx_message m;
	struct idx_uidstate *us;
	size_t n;

	deliver(f->a, inbox, msg1, 0, NULL);
	u = deliver(f->a, inbox, msg1, 0, NULL);
	key_mbuid(k, K_MSG, inbox, u);
	assert_true(tcbdbtranbegin(f->a->db));
	assert_true(tcbdbput(f->a->db, k, 9, "\x01\xff\xff\xff", 4));
	assert_true(tcbdbtrancommit(f->a->db));
	assert_true(idx_check(f->a, report, &problems, err, sizeof(err)) > 0);
	assert_int_equal(idx_message_get(f->a, inbox, u, &m, err, sizeof(err)), -1);
	assert_int_equal(idx_message_each(f->a, inbox, 1, each_count, &seen, err, sizeof(err)), 1);
	assert_int_equal(seen, 1);
	assert_int_equal(idx_mailbox_uids(f->a, inbox, &us, &n, err, sizeof(err)), 1);
	free(us);
	/* Every truncation of a valid record is rejected. */
	{
		struct idx_message good;
		TCXSTR *x = tcxstrnew();
		int i;

		assert_int_equal(idx_message_get(f->a, inbox, 1, &good, err, sizeof(err)), 1);
		rec_message_encode(&good, x);
		for (i = 0; i < tcxstrsize(x); i++) {
			struct idx_message t;

			assert_int_equal(rec_message_decode(tcxstrptr(x), (size_t)i, inbox, 1, &t), -1);
		}
		tcxstrcat(x, "", 1);
		assert_int_equal(rec_message_decode(tcxstrptr(x), (size_t)tcxstrsize(x), inbox, 1, &m), -1);
		tcxstrdel(x);
		idx_message_clear(&good);
	}
}

/* ---- Tokyo Cabinet's own write-ahead log ---- */

static void copy_file(const char *from, const char *to)
{
	char buf[65536];
	int in = open(from, O_RDONLY), out = open(to, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	ssize_t n;

	assert_true(in >= 0 && out >= 0);
	while ((n = read(in, buf, sizeof(buf))) > 0)
		assert_int_equal(write(out, buf, (size_t)n), n);
	assert_int_equal(n, 0);
	close(in);
	close(out);
}

static void tc_key(char *k, size_t len, int i)
{
	snprintf(k, len, "k%06d", i);
}

/*
 * The state a kill -9 leaves in the middle of a transaction that grew the
 * file and moved records: name holds the database as written so far and a
 * log whose entries are whole (copied while the transaction runs: what the
 * page cache holds), then the first torn bytes of one more entry, whose
 * region the killed process never got to write: its 12-byte head (offset 0,
 * length 256, in the log's own byte order) and part of its data.
 */
static void tc_crash_image(const char *root, const char *name, size_t torn)
{
	char path[256], to[300], wal[300], k[32], v[300], entry[12 + 255];
	TCHDB *h = tchdbnew();
	int fd;

	snprintf(path, sizeof(path), "%s/live.tcb", root);
	assert_true(tchdbsetdfunit(h, 8));
	assert_true(tchdbopen(h, path, HDBOWRITER | HDBOCREAT | HDBOTRUNC));
	memset(v, 'v', sizeof(v));
	assert_true(tchdbtranbegin(h));
	for (int i = 0; i < 1000; i++) {
		tc_key(k, sizeof(k), i);
		v[0] = (char)('a' + i % 26);
		assert_true(tchdbput(h, k, (int)strlen(k), v, sizeof(v)));
	}
	assert_true(tchdbtrancommit(h));
	assert_true(tchdbtranbegin(h));
	for (int i = 0; i < 1000; i += 2) {
		tc_key(k, sizeof(k), i);
		assert_true(tchdbout(h, k, (int)strlen(k)));
	}
	assert_true(tchdbtrancommit(h));
	/* Not committed: new records past the end and in the free space. */
	assert_true(tchdbtranbegin(h));
	for (int i = 1000; i < 3000; i++) {
		tc_key(k, sizeof(k), i);
		assert_true(tchdbput(h, k, (int)strlen(k), v, (int)(100 + i % 200)));
	}
	snprintf(to, sizeof(to), "%s/%s", root, name);
	copy_file(path, to);
	snprintf(wal, sizeof(wal), "%s.wal", path);
	snprintf(to, sizeof(to), "%s/%s.wal", root, name);
	copy_file(wal, to);
	assert_true(torn < sizeof(entry));
	fd = open(to, O_RDWR | O_APPEND);
	assert_true(fd >= 0);
	assert_int_equal(pread(fd, entry, sizeof(entry), 8), (ssize_t)sizeof(entry));
	assert_int_equal(write(fd, entry, torn), (ssize_t)torn);
	close(fd);
	assert_true(tchdbtranabort(h));
	assert_true(tchdbclose(h));
	tchdbdel(h);
}

/* Open the image, write in transactions (defragmentation walks the file), read all back. */
static bool tc_image_works(const char *root, const char *name)
{
	char path[256], k[32], v[300];
	TCHDB *h = tchdbnew();
	bool ok = true;

	snprintf(path, sizeof(path), "%s/%s", root, name);
	assert_true(tchdbsetdfunit(h, 8));
	assert_true(tchdbopen(h, path, HDBOWRITER));
	memset(v, 'w', sizeof(v));
	for (int r = 0; r < 20 && ok; r++) {
		ok = tchdbtranbegin(h);
		for (int i = 0; i < 200 && ok; i++) {
			snprintf(k, sizeof(k), "n%d-%d", r, i);
			ok = tchdbput(h, k, (int)strlen(k), v, 50 + i);
		}
		for (int i = 0; i < 200 && ok; i += 3) {
			snprintf(k, sizeof(k), "n%d-%d", r, i);
			ok = tchdbout(h, k, (int)strlen(k));
		}
		ok = ok && tchdbtrancommit(h);
	}
	/* Exactly what was committed before the crash. */
	for (int i = 0; i < 3000 && ok; i++) {
		int sz;
		char *got;

		tc_key(k, sizeof(k), i);
		got = tchdbget(h, k, (int)strlen(k), &sz);
		if (i < 1000 && i % 2 == 1)
			assert_true(got != NULL && sz == 300 && got[0] == 'a' + i % 26);
		else
			assert_null(got);
		free(got);
	}
	ok = ok && tchdbiterinit(h);
	while (ok) {
		int sz;
		char *key = tchdbiternext(h, &sz);
		if (key == NULL) {
			ok = tchdbecode(h) == TCENOREC;
			break;
		}
		free(key);
	}
	ok = ok && tchdboptimize(h, -1, -1, -1, UINT8_MAX);
	tchdbclose(h);
	tchdbdel(h);
	return ok;
}

/*
 * A process killed while writing an entry of Tokyo Cabinet's write-ahead log
 * left it torn; TC's rollback at the next open then kept the killed
 * transaction's file size and read zeros as records ("invalid record header"
 * in the CI's kill -9 import test). The open cuts the torn entry first.
 */
static void test_tc_wal_torn(void **state)
{
	struct fx *f = *state;
	static const size_t torn[] = { 1, 11, 12, 13, 200, 267 - 1 };
	char path[256];
	uint64_t cut;
	char err[256];

	for (size_t i = 0; i < sizeof(torn) / sizeof(torn[0]); i++) {
		tc_crash_image(f->root, "mended.tcb", torn[i]);
		snprintf(path, sizeof(path), "%s/mended.tcb", f->root);
		assert_int_equal(idx_tc_wal_mend(path, &cut, err, sizeof(err)), 1);
		assert_int_equal(cut, torn[i]);
		assert_true(tc_image_works(f->root, "mended.tcb"));
	}
	/* The premise: Tokyo Cabinet on its own breaks on such an image. */
	tc_crash_image(f->root, "torn.tcb", 200);
	assert_false(tc_image_works(f->root, "torn.tcb"));
	/* A log of whole entries (killed between two) is left as it is. */
	tc_crash_image(f->root, "whole.tcb", 0);
	snprintf(path, sizeof(path), "%s/whole.tcb", f->root);
	assert_int_equal(idx_tc_wal_mend(path, &cut, err, sizeof(err)), 1);
	assert_int_equal(cut, 0);
	assert_true(tc_image_works(f->root, "whole.tcb"));
	/* No index yet, no log: nothing to do. */
	snprintf(path, sizeof(path), "%s/none.tcb", f->root);
	assert_int_equal(idx_tc_wal_mend(path, &cut, err, sizeof(err)), 1);
	assert_int_equal(cut, 0);
}

/*
 * The child of test_tc_wal_live, forked before the parent opened the file (a
 * child forked later would inherit TC's in-process path locks and stop there):
 * once told, it tries to mend the live log and to open the database.
 */
static int tc_live_child(int ready, const char *path)
{
	char c, err[256];
	uint64_t cut = 99;
	TCHDB *o;

	if (read(ready, &c, 1) != 1)
		return 2;
	if (idx_tc_wal_mend(path, &cut, err, sizeof(err)) != 1 || cut != 0)
		return 3; /* cut another process's live log */
	o = tchdbnew();
	if (tchdbopen(o, path, HDBOWRITER | HDBOLCKNB))
		return 4; /* the parent's lock was gone */
	return 0;
}

/* The log of a database that is open (here or in another process) is a live transaction's: never cut. */
static void test_tc_wal_live(void **state)
{
	struct fx *f = *state;
	char path[256], wal[300], k[32], err[256];
	TCHDB *h;
	struct stat before, after;
	uint64_t cut = 99;
	int status, p[2];
	pid_t pid;

	snprintf(path, sizeof(path), "%s/live2.tcb", f->root);
	snprintf(wal, sizeof(wal), "%s.wal", path);
	assert_int_equal(pipe(p), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		close(p[1]);
		_exit(tc_live_child(p[0], path));
	}
	close(p[0]);
	h = tchdbnew();
	assert_true(tchdbopen(h, path, HDBOWRITER | HDBOCREAT));
	assert_true(tchdbtranbegin(h));
	for (int i = 0; i < 500; i++) {
		tc_key(k, sizeof(k), i);
		assert_true(tchdbput(h, k, (int)strlen(k), k, (int)strlen(k)));
	}
	/* Stray bytes after the entries look like a torn one. */
	int fd = open(wal, O_WRONLY | O_APPEND);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, "\0\0\0", 3), 3);
	close(fd);
	assert_int_equal(stat(wal, &before), 0);
	/* In this process: TC's path lock says the file is open here. */
	assert_int_equal(idx_tc_wal_mend(path, &cut, err, sizeof(err)), 1);
	assert_int_equal(cut, 0);
	/* In another process: the fcntl lock; and this process's lock survived the check above. */
	assert_int_equal(write(p[1], "x", 1), 1);
	close(p[1]);
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
	assert_int_equal(stat(wal, &after), 0);
	assert_int_equal(after.st_size, before.st_size);
	assert_true(tchdbtrancommit(h));
	assert_true(tchdbclose(h));
	tchdbdel(h);
}

/* ---- Tokyo Cabinet's test yields (index/tcyield.c) ---- */

static atomic_bool spin_stop;

static void *spinner(void *arg)
{
	cpu_set_t *cpu = arg;

	pthread_setaffinity_np(pthread_self(), sizeof(*cpu), cpu);
	while (!atomic_load(&spin_stop))
		;
	return NULL;
}

static long involuntary_switches(void)
{
	char line[256];
	long n = -1;
	FILE *f = fopen("/proc/thread-self/status", "r");

	assert_non_null(f);
	while (fgets(line, sizeof(line), f) != NULL)
		if (sscanf(line, "nonvoluntary_ctxt_switches: %ld", &n) == 1)
			break;
	fclose(f);
	return n;
}

/*
 * Debian's TC yields the CPU every few dozen of its internal calls; with
 * another thread runnable on the same CPU each yield was a switch to it.
 * Walking a TC map a million times (what tcbdbmemsync and a SELECT do) now
 * switches only when the scheduler's time slice says so.
 */
static void test_tc_no_test_yields(void **state)
{
	cpu_set_t cpu, all;
	pthread_t t;
	TCMAP *m = tcmapnew();
	long before, after;
	int sz, first = 0;

	/* Both threads on one CPU this process may use. */
	assert_int_equal(pthread_getaffinity_np(pthread_self(), sizeof(all), &all), 0);
	while (!CPU_ISSET(first, &all))
		first++;
	CPU_ZERO(&cpu);
	CPU_SET(first, &cpu);
	assert_int_equal(pthread_setaffinity_np(pthread_self(), sizeof(cpu), &cpu), 0);
	for (int i = 0; i < 1000; i++)
		tcmapput(m, &i, sizeof(i), &i, sizeof(i));
	atomic_store(&spin_stop, false);
	assert_int_equal(pthread_create(&t, NULL, spinner, &cpu), 0);
	usleep(10000);
	before = involuntary_switches();
	for (int r = 0; r < 1000; r++) {
		tcmapiterinit(m);
		while (tcmapiternext(m, &sz) != NULL)
			;
	}
	after = involuntary_switches();
	/* Any other caller still yields: about one call in three hands the CPU to the spinner. */
	long others = involuntary_switches();
	for (int i = 0; i < 300; i++)
		assert_int_equal(sched_yield(), 0);
	others = involuntary_switches() - others;
	atomic_store(&spin_stop, true);
	pthread_join(t, NULL);
	tcmapdel(m);
	pthread_setaffinity_np(pthread_self(), sizeof(all), &all);
	/* With TC's yields this was over 2,000 (one every few dozen calls). */
	assert_true(after - before < 2000);
	assert_true(others >= 20);
}

/* ---- durability path ---- */

static void test_fsync_on(void **state)
{
	struct fx *f = *state;
	char err[256];

	idx_account_close(&f->a);
	f->opts.no_fsync = false;
	assert_int_equal(idx_account_open(f->dir, &f->opts, &f->a, err, sizeof(err)), 1);
	deliver(f->a, mbid(f->a, "INBOX"), msg1, 0, "x");
	{
		uint32_t u = 1;
		size_t nf;

		assert_int_equal(idx_store(f->a, mbid(f->a, "INBOX"), &u, 1, IDX_STORE_ADD, IDX_SEEN, NULL, 0, 0, NULL,
				     &nf, NULL, err, sizeof(err)),
		    1);
	}
	CHECK(f->a);
}

/* ---- schema upgrades ---- */

static int upgrade_calls;
static char upgrade_order[16];

/* Set savedate to 'to' on every live message, as a real step would rewrite records. */
static int upgrade_rewrite(struct idx_account *a, int64_t to, char *err, size_t errlen)
{
	uint32_t mb;

	for (mb = 1; mb < a->rec.next_mbid; mb++) {
		struct idx_uidstate *us = NULL;
		size_t n = 0, i;

		if (msg_uids_locked(a, mb, &us, &n) < 0)
			return -1;
		for (i = 0; i < n; i++) {
			struct idx_message m;
			int r = msg_load(a, mb, us[i].uid, &m, err, errlen);

			if (r > 0) {
				m.savedate = to;
				r = msg_store(a, &m, err, errlen);
				idx_message_clear(&m);
			}
			if (r <= 0) {
				free(us);
				return -1;
			}
		}
		free(us);
	}
	return 1;
}

static int upgrade_1_2(struct idx_account *a, char *err, size_t errlen)
{
	upgrade_calls++;
	strcat(upgrade_order, "2");
	return upgrade_rewrite(a, 4242, err, errlen);
}

/* Needs the work of the step before it. */
static int upgrade_2_3(struct idx_account *a, char *err, size_t errlen)
{
	struct idx_message m;

	upgrade_calls++;
	strcat(upgrade_order, "3");
	assert_int_equal(msg_load(a, 1, 1, &m, err, errlen), 1);
	assert_int_equal(m.savedate, 4242);
	idx_message_clear(&m);
	return upgrade_rewrite(a, 4343, err, errlen);
}

static int upgrade_fail(struct idx_account *a, char *err, size_t errlen)
{
	upgrade_calls++;
	if (upgrade_rewrite(a, 4242, err, errlen) < 0)
		return -1;
	idx_seterr(err, errlen, "test step: disk on fire");
	return -1;
}

static const struct idx_upgrade upgrades_v2[] = { { 1, "test savedate", upgrade_1_2 } };
static const struct idx_upgrade upgrades_v3[] = { { 1, "test savedate", upgrade_1_2 },
	{ 2, "test savedate again", upgrade_2_3 } };
static const struct idx_upgrade upgrades_fail[] = { { 1, "test failing", upgrade_fail } };
static const struct idx_upgrade upgrades_bad[] = { { 2, "out of order", upgrade_1_2 } };

/* Set the stored schema of an open index (as an older program would have left it). */
static void schema_set(struct idx_account *a, uint64_t schema)
{
	char err[256];

	assert_int_equal(op_begin(a, err, sizeof(err)), 1);
	a->rec.schema = schema;
	a->rec_dirty = true;
	assert_true(op_end(a, 1, err, sizeof(err)) >= 0);
	op_unlock(a);
}

static void assert_savedate(struct idx_account *a, uint32_t mb, uint32_t uid, int64_t want, bool equal)
{
	struct idx_message m;
	char err[256];

	assert_int_equal(idx_message_get(a, mb, uid, &m, err, sizeof(err)), 1);
	if (equal)
		assert_int_equal(m.savedate, want);
	else
		assert_int_not_equal(m.savedate, want);
	idx_message_clear(&m);
}

/* An index written at schema 1 is upgraded once, durably; a newer one refuses to open. */
static void test_upgrade(void **state)
{
	struct fx *f = *state;
	uint32_t inbox = mbid(f->a, "INBOX"), u1, u2;
	char err[512] = "";
	struct idx_account *b = NULL;

	u1 = deliver(f->a, inbox, msg1, 0, NULL);
	u2 = deliver(f->a, inbox, msg1, IDX_SEEN, "x");
	assert_int_equal(f->a->rec.schema, IDX_SCHEMA);
	/* The test tables' schema 1 (the index has every key of the real schema). */
	schema_set(f->a, 1);
	idx_account_close(&f->a);

	upgrade_calls = 0;
	assert_int_equal(idx_account_open_upgrades(f->dir, &f->opts, upgrades_v2, 1, true, &f->a, err, sizeof(err)), 1);
	assert_int_equal(upgrade_calls, 1);
	assert_int_equal(f->a->rec.schema, 2);
	assert_savedate(f->a, inbox, u1, 4242, true);
	assert_savedate(f->a, inbox, u2, 4242, true);
	CHECK(f->a);
	idx_account_close(&f->a);

	/* Durable, and not run again. */
	assert_int_equal(idx_account_open_upgrades(f->dir, &f->opts, upgrades_v2, 1, true, &f->a, err, sizeof(err)), 1);
	assert_int_equal(upgrade_calls, 1);
	assert_int_equal(f->a->rec.schema, 2);
	assert_savedate(f->a, inbox, u2, 4242, true);
	CHECK(f->a);
	idx_account_close(&f->a);

	/* A program of schema 1 (no steps) refuses the newer index. */
	assert_int_equal(idx_account_open_upgrades(f->dir, &f->opts, NULL, 0, true, &b, err, sizeof(err)), -1);
	assert_null(b);
	assert_non_null(strstr(err, "index schema 2 not supported"));

	/* From 2 only the step 2 -> 3 runs. */
	upgrade_calls = 0;
	upgrade_order[0] = '\0';
	assert_int_equal(idx_account_open_upgrades(f->dir, &f->opts, upgrades_v3, 2, true, &f->a, err, sizeof(err)), 1);
	assert_string_equal(upgrade_order, "3");
	assert_int_equal(f->a->rec.schema, 3);
	assert_savedate(f->a, inbox, u1, 4343, true);
	CHECK(f->a);
}

/* Several steps run in order in one open; a new account starts at the current schema. */
static void test_upgrade_steps(void **state)
{
	struct fx *f = *state;
	uint32_t inbox = mbid(f->a, "INBOX");
	char err[512] = "", dir2[160];
	struct idx_account *b = NULL;

	deliver(f->a, inbox, msg1, 0, NULL);
	schema_set(f->a, 1);
	idx_account_close(&f->a);
	upgrade_calls = 0;
	upgrade_order[0] = '\0';
	assert_int_equal(idx_account_open_upgrades(f->dir, &f->opts, upgrades_v3, 2, true, &f->a, err, sizeof(err)), 1);
	assert_string_equal(upgrade_order, "23");
	assert_int_equal(f->a->rec.schema, 3);
	assert_savedate(f->a, inbox, 1, 4343, true);
	CHECK(f->a);

	snprintf(dir2, sizeof(dir2), "%s/new", f->root);
	assert_int_equal(idx_account_open_upgrades(dir2, &f->opts, upgrades_v3, 2, true, &b, err, sizeof(err)), 1);
	assert_string_equal(upgrade_order, "23");
	assert_int_equal(b->rec.schema, 3);
	CHECK(b);
	idx_account_close(&b);
}

/* A failing step leaves the index as it was, at schema 1, and the account unopened. */
static void test_upgrade_fail(void **state)
{
	struct fx *f = *state;
	uint32_t inbox = mbid(f->a, "INBOX"), u;
	char err[512] = "";
	struct idx_account *b = NULL;

	u = deliver(f->a, inbox, msg1, 0, NULL);
	schema_set(f->a, 1);
	idx_account_close(&f->a);

	upgrade_calls = 0;
	assert_int_equal(idx_account_open_upgrades(f->dir, &f->opts, upgrades_fail, 1, true, &b, err, sizeof(err)), -1);
	assert_null(b);
	assert_int_equal(upgrade_calls, 1);
	assert_non_null(strstr(err, "index upgrade from schema 1 to 2 failed"));
	assert_non_null(strstr(err, "test failing"));
	assert_non_null(strstr(err, "disk on fire"));
	assert_non_null(strstr(err, "still at schema 1"));

	assert_int_equal(idx_account_open_upgrades(f->dir, &f->opts, upgrades_bad, 1, true, &b, err, sizeof(err)), -1);
	assert_null(b);
	assert_non_null(strstr(err, "out of order"));

	/* A handle that may not upgrade says so and changes nothing. */
	assert_int_equal(idx_account_open_upgrades(f->dir, &f->opts, upgrades_v2, 1, false, &b, err, sizeof(err)), -1);
	assert_null(b);
	assert_non_null(strstr(err, "needs upgrade from schema 1 to 2"));
	assert_int_equal(upgrade_calls, 1);

	/* A program of schema 1 opens it unchanged. */
	assert_int_equal(idx_account_open_upgrades(f->dir, &f->opts, NULL, 0, true, &f->a, err, sizeof(err)), 1);
	assert_int_equal(f->a->rec.schema, 1);
	assert_savedate(f->a, inbox, u, 4242, false);
	CHECK(f->a);
	idx_account_close(&f->a);

	/* The working step still runs afterwards. */
	assert_int_equal(idx_account_open_upgrades(f->dir, &f->opts, upgrades_v2, 1, true, &f->a, err, sizeof(err)), 1);
	assert_int_equal(upgrade_calls, 2);
	assert_savedate(f->a, inbox, u, 4242, true);
	CHECK(f->a);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_open_create_reopen, setup, teardown),
		cmocka_unit_test_setup_teardown(test_second_opener, setup, teardown),
		cmocka_unit_test_setup_teardown(test_mailbox_names, setup, teardown),
		cmocka_unit_test_setup_teardown(test_mailbox_delete_rename, setup, teardown),
		cmocka_unit_test_setup_teardown(test_add_batch, setup, teardown),
		cmocka_unit_test_setup_teardown(test_add_over_quota, setup, teardown),
		cmocka_unit_test_setup_teardown(test_store, setup, teardown),
		cmocka_unit_test_setup_teardown(test_expunge_copy_move, setup, teardown),
		cmocka_unit_test_setup_teardown(test_threading, setup, teardown),
		cmocka_unit_test_setup_teardown(test_notify, setup, teardown),
		cmocka_unit_test_setup_teardown(test_notify_uidvalidity, setup, teardown),
		cmocka_unit_test_setup_teardown(test_sync, setup, teardown),
		cmocka_unit_test_setup_teardown(test_sync_stamp, setup, teardown),
		cmocka_unit_test_setup_teardown(test_sync_names, setup, teardown),
		cmocka_unit_test_setup_teardown(test_corrupt_record, setup, teardown),
		cmocka_unit_test_setup_teardown(test_tc_wal_torn, setup, teardown),
		cmocka_unit_test_setup_teardown(test_tc_wal_live, setup, teardown),
		cmocka_unit_test(test_tc_no_test_yields),
		cmocka_unit_test_setup_teardown(test_fsync_on, setup, teardown),
		cmocka_unit_test_setup_teardown(test_upgrade, setup, teardown),
		cmocka_unit_test_setup_teardown(test_upgrade_steps, setup, teardown),
		cmocka_unit_test_setup_teardown(test_upgrade_fail, setup, teardown),
		cmocka_unit_test_setup_teardown(test_thread_subject, setup, teardown),
		cmocka_unit_test_setup_teardown(test_subject_keys, setup, teardown),
		cmocka_unit_test_setup_teardown(test_upgrade_subject_keys, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}

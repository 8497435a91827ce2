/*
 * Unit tests for the folder stamps of index/sync.c: a complete sync of an
 * unchanged folder leaves a stamp in the index, so a SELECT after a restart
 * skips its scan; a change made while the account was closed is still found.
 */
#define _GNU_SOURCE
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
#include <unistd.h>

#include <cmocka.h>

#include "index/index.h"
#include "index/index_private.h"
#include "t/unit/index_fixture.h"

static int setup(void **state)
{
	return fx_open(state, "test_index_stamp", true);
}

#define teardown fx_teardown

static void put_file(const char *path, const char *text)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0600);

	assert_true(fd >= 0);
	assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
	close(fd);
}

#define inbox_id fx_inbox

static void reopen(struct fx *f)
{
	char err[256];

	idx_account_close(&f->a);
	assert_int_equal(idx_account_open(f->dir, &f->opts, &f->a, err, sizeof(err)), 1);
}

static bool stamp_stored(struct idx_account *a, uint32_t mbid)
{
	uint8_t k[5];
	void *v;
	size_t len;
	int r;

	k[0] = K_STAMP;
	be32_put(k + 1, mbid);
	r = db_get(a, k, 5, &v, &len, NULL, 0);
	if (r > 0)
		tcfree(v);
	return r > 0;
}

static void test_stamp_survives_reopen(void **state)
{
	struct fx *f = *state;
	uint32_t inbox = inbox_id(f->a);
	struct idx_sync_stats st;
	char err[256], path[1024];

	snprintf(path, sizeof(path), "%s/new/1700000000.M1P1.other", idx_account_maildir(f->a));
	put_file(path, "Subject: one\r\n\r\nhi\r\n");
	/* Too recent: adopted, but no stamp kept. */
	assert_int_equal(idx_sync_mailbox(f->a, inbox, &st, err, sizeof(err)), 1);
	assert_int_equal(st.added, 1);
	assert_false(stamp_stored(f->a, inbox));
	sleep(3);
	assert_int_equal(idx_sync_mailbox(f->a, inbox, &st, err, sizeof(err)), 1);
	assert_true(stamp_stored(f->a, inbox));
	/* After a restart the stored stamp is used: no scan, so no in-memory stamp is dropped. */
	reopen(f);
	assert_int_equal(f->a->nstamps, 0);
	assert_int_equal(idx_sync_mailbox_changed(f->a, inbox, &st, err, sizeof(err)), 1);
	assert_int_equal(st.added + st.flagged + st.removed, 0);
	assert_int_equal(f->a->nstamps, 1);
	/* A file added while the account was closed: found. */
	reopen(f);
	snprintf(path, sizeof(path), "%s/new/1700000000.M2P2.other", idx_account_maildir(f->a));
	put_file(path, "Subject: two\r\n\r\nhi\r\n");
	assert_int_equal(idx_sync_mailbox_changed(f->a, inbox, &st, err, sizeof(err)), 1);
	assert_int_equal(st.added, 1);
	/* That sync saw a recent folder: the stored stamp is gone. */
	assert_false(stamp_stored(f->a, inbox));
}

static void test_stamp_dropped_with_mailbox(void **state)
{
	struct fx *f = *state;
	struct idx_sync_stats st;
	struct idx_mailbox mb;
	char err[256];
	uint32_t id;

	assert_int_equal(idx_mailbox_create(f->a, "Lists", 0, true, &id, err, sizeof(err)), 1);
	sleep(3);
	assert_int_equal(idx_sync_mailbox(f->a, id, &st, err, sizeof(err)), 1);
	assert_true(stamp_stored(f->a, id));
	assert_int_equal(idx_mailbox_delete(f->a, "Lists", err, sizeof(err)), 1);
	assert_false(stamp_stored(f->a, id));
	assert_int_equal(idx_mailbox_get(f->a, "Lists", &mb, err, sizeof(err)), 0);
}

/* idx_sync_confirm: stamps only a folder that is exactly what the index says. */
static void test_confirm(void **state)
{
	struct fx *f = *state;
	uint32_t inbox = inbox_id(f->a);
	struct idx_sync_stats st;
	char err[256], path[1024], path2[1024];

	snprintf(path, sizeof(path), "%s/new/1700000000.M1P1.other", idx_account_maildir(f->a));
	put_file(path, "Subject: one\r\n\r\nhi\r\n");
	assert_int_equal(idx_sync_mailbox(f->a, inbox, &st, err, sizeof(err)), 1);
	/* Too recent. */
	assert_int_equal(idx_sync_confirm(f->a, inbox, err, sizeof(err)), 0);
	assert_false(stamp_stored(f->a, inbox));
	usleep(2100 * 1000); /* older than either margin */
	/* A file the index does not know: no stamp, nothing changed. */
	snprintf(path2, sizeof(path2), "%s/cur/1700000000.M2P2.other:2,S", idx_account_maildir(f->a));
	put_file(path2, "Subject: two\r\n\r\nhi\r\n");
	usleep(2100 * 1000);
	assert_int_equal(idx_sync_confirm(f->a, inbox, err, sizeof(err)), 0);
	assert_false(stamp_stored(f->a, inbox));
	/* A record whose file is gone: no stamp either. */
	assert_int_equal(unlink(path2), 0);
	assert_int_equal(unlink(path), 0);
	usleep(2100 * 1000);
	assert_int_equal(idx_sync_confirm(f->a, inbox, err, sizeof(err)), 0);
	assert_false(stamp_stored(f->a, inbox));
	/* Put back: exactly the index. Stamped, and after a reopen SELECT skips its scan. */
	put_file(path, "Subject: one\r\n\r\nhi\r\n");
	usleep(2100 * 1000);
	assert_int_equal(idx_sync_confirm(f->a, inbox, err, sizeof(err)), 1);
	assert_true(stamp_stored(f->a, inbox));
	reopen(f);
	assert_int_equal(idx_sync_mailbox_changed(f->a, inbox, &st, err, sizeof(err)), 1);
	assert_int_equal(f->a->nstamps, 1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_stamp_survives_reopen, setup, teardown),
		cmocka_unit_test_setup_teardown(test_stamp_dropped_with_mailbox, setup, teardown),
		cmocka_unit_test_setup_teardown(test_confirm, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}

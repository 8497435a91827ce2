/*
 * Unit tests for deferred durability (idx_add_nosync, idx_durable_wait):
 * what is left to sync is reported, one wait covers every earlier commit,
 * waits from several threads agree, and a failing sync is reported.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
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
#include "maildir/maildir.h"
#include "t/unit/index_fixture.h"

static int setup(void **state)
{
	/* The three-flush path: messages too large for the delivery log take it. */
	return fx_open_log(state, "test_index_durable", false, true);
}

static int setup_nofsync(void **state)
{
	return fx_open(state, "test_index_durable", true);
}

#define teardown fx_teardown
#define inbox_id fx_inbox

/* Add n messages with idx_add_nosync; the writers are freed. */
static void add_n(struct idx_account *a, int n, struct idx_durable *d)
{
	struct idx_add it[8];
	char err[256], tmp[512], text[128];

	assert_true(n <= 8);
	memset(it, 0, sizeof(it));
	snprintf(tmp, sizeof(tmp), "%s/tmp", idx_account_maildir(a));
	for (int i = 0; i < n; i++) {
		snprintf(text, sizeof(text), "Subject: m%d\r\n\r\nbody %d\r\n", i, i);
		assert_int_equal(maildir_writer_open(&it[i].w, tmp, "test.example", err, sizeof(err)), 1);
		assert_int_equal(maildir_writer_write(it[i].w, text, strlen(text), err, sizeof(err)), 1);
		assert_int_equal(maildir_writer_finish(it[i].w, MAILDIR_FINISH_NOSYNC, err, sizeof(err)), 1);
		it[i].mailbox_id = inbox_id(a);
	}
	assert_int_equal(idx_add_nosync(a, it, (size_t)n, d, err, sizeof(err)), n);
	for (int i = 0; i < n; i++) {
		assert_int_equal(it[i].result, 1);
		maildir_writer_remove(it[i].w, err, sizeof(err));
		maildir_writer_free(&it[i].w);
	}
}

/* An add after a failed sync: refused, nothing left to wait for. */
static void add_n_fail(struct idx_account *a, struct idx_durable *d)
{
	struct idx_add it;
	char err[256], tmp[512];

	memset(&it, 0, sizeof(it));
	snprintf(tmp, sizeof(tmp), "%s/tmp", idx_account_maildir(a));
	assert_int_equal(maildir_writer_open(&it.w, tmp, "test.example", err, sizeof(err)), 1);
	assert_int_equal(maildir_writer_write(it.w, "Subject: x\r\n\r\nx\r\n", 18, err, sizeof(err)), 1);
	assert_int_equal(maildir_writer_finish(it.w, MAILDIR_FINISH_NOSYNC, err, sizeof(err)), 1);
	it.mailbox_id = inbox_id(a);
	/* The deferred add itself commits; the wait reports the earlier failure. */
	idx_add_nosync(a, &it, 1, d, err, sizeof(err));
	maildir_writer_remove(it.w, err, sizeof(err));
	maildir_writer_free(&it.w);
	if (d->commit == 0)
		d->commit = 1; /* make the wait look at the index */
}

static void test_nosync_then_wait(void **state)
{
	struct fx *f = *state;
	struct idx_durable d1, d2;
	char err[256];

	add_n(f->a, 3, &d1);
	assert_true(d1.commit > 0);
	assert_int_equal(d1.ndirs, 1);
	assert_non_null(strstr(d1.dirs[0], "/new"));
	assert_true(f->a->synced < d1.commit); /* nothing synced yet */
	add_n(f->a, 2, &d2);
	assert_true(d2.commit > d1.commit);
	/* The later wait covers the earlier commit too. */
	assert_int_equal(idx_durable_wait(f->a, &d2, err, sizeof(err)), 1);
	assert_int_equal(d2.commit, 0);
	assert_null(d2.dirs);
	assert_true(f->a->synced >= d1.commit);
	assert_int_equal(idx_durable_wait(f->a, &d1, err, sizeof(err)), 1);
}

struct waiter {
	struct idx_account *a;
	struct idx_durable d;
	int r;
};

static void *wait_main(void *arg)
{
	struct waiter *w = arg;
	char err[256];

	w->r = idx_durable_wait(w->a, &w->d, err, sizeof(err));
	return NULL;
}

static void test_concurrent_waits(void **state)
{
	struct fx *f = *state;
	struct waiter w[6];
	pthread_t t[6];

	for (int i = 0; i < 6; i++) {
		w[i].a = f->a;
		add_n(f->a, 1, &w[i].d);
		assert_int_equal(pthread_create(&t[i], NULL, wait_main, &w[i]), 0);
	}
	for (int i = 0; i < 6; i++) {
		pthread_join(t[i], NULL);
		assert_int_equal(w[i].r, 1);
	}
	assert_true(f->a->synced >= f->a->committed);
}

static void test_failed_sync(void **state)
{
	struct fx *f = *state;
	struct idx_durable d;
	char err[256] = "";
	int fd;

	add_n(f->a, 1, &d);
	fd = f->a->syncfd;
	f->a->syncfd = -1; /* fdatasync fails */
	assert_int_equal(idx_durable_wait(f->a, &d, err, sizeof(err)), -1);
	f->a->syncfd = fd;
	assert_non_null(strstr(err, "fdatasync"));
	assert_null(d.dirs);
	/*
	 * Final for this handle: a lost writeback is reported only once, so a later
	 * fdatasync that succeeds proves nothing. Later waits and commits fail.
	 */
	add_n_fail(f->a, &d);
	err[0] = '\0';
	assert_int_equal(idx_durable_wait(f->a, &d, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "earlier fdatasync failed"));
}

static void test_nofsync_nothing_left(void **state)
{
	struct fx *f = *state;
	struct idx_durable d;
	char err[256];

	add_n(f->a, 2, &d);
	assert_int_equal(d.commit, 0);
	assert_int_equal(d.ndirs, 0);
	assert_int_equal(idx_durable_wait(f->a, &d, err, sizeof(err)), 1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_nosync_then_wait, setup, teardown),
		cmocka_unit_test_setup_teardown(test_concurrent_waits, setup, teardown),
		cmocka_unit_test_setup_teardown(test_failed_sync, setup, teardown),
		cmocka_unit_test_setup_teardown(test_nofsync_nothing_left, setup_nofsync, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}

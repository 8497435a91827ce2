/* Tests for daemon/spool: the pool of spool files created ahead of time. */
#define _GNU_SOURCE 1
#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "daemon/log.h"
#include "daemon/spool.h"
#include "daemon/util.h"
#include "maildir/maildir.h"

struct fixture {
	char root[64]; /* a fresh directory */
	char dir[128]; /* root/tmp/pool: the pool's directory, not created yet */
};

static int
rm_rf(const char *path)
{
	char cmd[256];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", path);
	return system(cmd);
}

static int
setup(void **state)
{
	struct fixture *f = xcalloc(1, sizeof(*f));

	snprintf(f->root, sizeof(f->root), "/tmp/test_spool.XXXXXX");
	if (mkdtemp(f->root) == NULL)
		return -1;
	snprintf(f->dir, sizeof(f->dir), "%s/tmp/pool", f->root);
	log_set_level(LOG_LVL_ERROR);
	*state = f;
	return 0;
}

static int
teardown(void **state)
{
	struct fixture *f = *state;

	rm_rf(f->root);
	free(f);
	return 0;
}

/* Regular files in dir, -1 when dir cannot be read. */
static int
count_files(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	int n = 0;

	if (d == NULL)
		return -1;
	while ((e = readdir(d)) != NULL)
		if (e->d_type == DT_REG)
			n++;
	closedir(d);
	return n;
}

/* Wait up to ms for host to have want writers ready. */
static bool
wait_ready(struct spool *sp, const char *host, size_t want, int ms)
{
	int64_t end = mono_ms() + ms;

	while (spool_ready(sp, host) != want) {
		if (mono_ms() > end)
			return false;
		usleep(2000);
	}
	return true;
}

static struct spool *
new_pool(struct fixture *f, unsigned cap)
{
	const char *hosts[] = {"mx.example", "other.example", "mx.example"};
	char err[256];
	struct spool *sp = spool_new(f->dir, hosts, 3, cap, err, sizeof(err));

	if (sp == NULL)
		fail_msg("spool_new: %s", err);
	return sp;
}

static void
test_fills_and_frees(void **state)
{
	struct fixture *f = *state;
	struct spool *sp = new_pool(f, 4);

	assert_true(wait_ready(sp, "mx.example", 4, 5000));
	assert_true(wait_ready(sp, "other.example", 4, 5000));
	/* A repeated host name counts once. */
	assert_int_equal(count_files(f->dir), 8);
	spool_free(&sp);
	assert_null(sp);
	assert_int_equal(count_files(f->dir), 0);
	spool_free(&sp); /* NULL is fine */
}

static void
test_take(void **state)
{
	struct fixture *f = *state;
	struct spool *sp = new_pool(f, 4);
	struct maildir_writer *w = (struct maildir_writer *)&w, *w2 = NULL;
	struct spool_stats st;
	char err[256];
	const char *path;

	assert_true(wait_ready(sp, "mx.example", 4, 5000));
	/* No pool, an unknown host: nothing, and *w_r is cleared. */
	assert_int_equal(spool_take(NULL, "mx.example", &w), 0);
	assert_null(w);
	assert_int_equal(spool_take(sp, "unknown.example", &w), 0);
	assert_null(w);
	assert_int_equal(spool_ready(sp, "unknown.example"), 0);

	assert_int_equal(spool_take(sp, "mx.example", &w), 1);
	assert_non_null(w);
	path = maildir_writer_path(w);
	assert_true(strncmp(path, f->dir, strlen(f->dir)) == 0);
	assert_non_null(strstr(maildir_writer_base(w), ".mx.example"));
	/* The writer works as a fresh one: normalizing, size counted. */
	assert_int_equal(maildir_writer_write(w, "a\nb\r\n", 5, err, sizeof(err)), 1);
	assert_int_equal(maildir_writer_finish(w, MAILDIR_FINISH_NOSYNC, err, sizeof(err)), 1);
	assert_int_equal(maildir_writer_size(w), 6);
	/* The pool made another; the taken one is the caller's, spool_free leaves it. */
	assert_true(wait_ready(sp, "mx.example", 4, 5000));
	assert_int_equal(spool_take(sp, "other.example", &w2), 1);
	spool_stats(sp, &st);
	assert_int_equal(st.taken, 2);
	assert_true(st.created >= 9);
	spool_free(&sp);
	assert_int_equal(count_files(f->dir), 2);
	assert_int_equal(access(maildir_writer_path(w), F_OK), 0);
	maildir_writer_free(&w);
	maildir_writer_free(&w2);
	assert_int_equal(count_files(f->dir), 0);
}

static void
test_empty_then_refilled(void **state)
{
	struct fixture *f = *state;
	struct spool *sp = new_pool(f, 8);
	struct maildir_writer *w[8];
	struct maildir_writer *none;
	struct spool_stats st;
	int got = 0;

	assert_true(wait_ready(sp, "mx.example", 8, 5000));
	/* Taken faster than the thread can refill: some takes may find none. */
	for (int i = 0; i < 8; i++)
		got += spool_take(sp, "mx.example", &w[i]);
	assert_true(got >= 1);
	for (int i = 0; i < 8; i++)
		maildir_writer_free(&w[i]);
	assert_true(wait_ready(sp, "mx.example", 8, 5000));
	spool_stats(sp, &st);
	assert_int_equal(st.taken, (uint64_t)got);
	assert_int_equal(st.taken + st.missed, 8);
	spool_free(&sp);
	assert_int_equal(spool_take(sp, "mx.example", &none), 0);
	assert_null(none);
}

static void
test_leftovers_removed(void **state)
{
	struct fixture *f = *state;
	char path[256];
	FILE *fp;
	struct spool *sp;

	assert_int_equal(mkdir_p(f->dir, 0700), 0);
	snprintf(path, sizeof(path), "%s/1700000000.M1P2Q3.mx.example", f->dir);
	fp = fopen(path, "w");
	assert_non_null(fp);
	fputs("never acknowledged\r\n", fp);
	fclose(fp);
	sp = new_pool(f, 2);
	assert_int_equal(access(path, F_OK), -1);
	assert_true(wait_ready(sp, "mx.example", 2, 5000));
	spool_free(&sp);
	assert_int_equal(count_files(f->dir), 0);
}

/* Writers whose files are gone are replaced; the directory is made again. */
static void
test_directory_removed(void **state)
{
	struct fixture *f = *state;
	struct spool *sp = new_pool(f, 4);
	struct spool_stats st;
	int64_t end;

	assert_true(wait_ready(sp, "mx.example", 4, 5000));
	assert_int_equal(rm_rf(f->dir), 0);
	/* Within a check or two (a second each) every pooled file exists again. */
	end = mono_ms() + 5000;
	for (;;) {
		spool_stats(sp, &st);
		if (st.dropped >= 8 && count_files(f->dir) == 8 && spool_ready(sp, "mx.example") == 4 &&
		    spool_ready(sp, "other.example") == 4)
			break;
		assert_true(mono_ms() < end);
		usleep(10000);
	}
	spool_free(&sp);
	assert_int_equal(count_files(f->dir), 0);
}

/* A file where the directory should be: opens fail, the pool retries, then recovers. */
static void
test_directory_unusable(void **state)
{
	struct fixture *f = *state;
	struct spool *sp = new_pool(f, 2);
	struct spool_stats st;
	char err[256];
	const char *hosts[] = {"mx.example"};
	FILE *fp;
	int64_t end;

	assert_true(wait_ready(sp, "mx.example", 2, 5000));
	assert_int_equal(rm_rf(f->dir), 0);
	fp = fopen(f->dir, "w");
	assert_non_null(fp);
	fclose(fp);
	/* The stale writers go; none can be made. */
	assert_true(wait_ready(sp, "mx.example", 0, 5000));
	end = mono_ms() + 5000;
	do {
		spool_stats(sp, &st);
		assert_true(mono_ms() < end);
		usleep(10000);
	} while (st.failed == 0);
	/* A new pool cannot start there. */
	assert_null(spool_new(f->dir, hosts, 1, 2, err, sizeof(err)));
	assert_non_null(strstr(err, f->dir));
	/* The directory comes back: the pool fills again. */
	assert_int_equal(unlink(f->dir), 0);
	assert_true(wait_ready(sp, "mx.example", 2, 5000));
	spool_free(&sp);
	assert_int_equal(count_files(f->dir), 0);
}

static void
test_bad_arguments(void **state)
{
	struct fixture *f = *state;
	const char *hosts[] = {"mx.example", ""};
	char err[256];

	assert_null(spool_new(f->dir, hosts, 1, 0, err, sizeof(err)));
	assert_null(spool_new(f->dir, hosts + 1, 1, 4, err, sizeof(err)));
	assert_null(spool_new(f->dir, hosts, 0, 4, err, sizeof(err)));
}

struct taker {
	struct spool *sp;
	int got;
};

static void *
taker_main(void *arg)
{
	struct taker *t = arg;

	for (int i = 0; i < 2000; i++) {
		struct maildir_writer *w;
		if (spool_take(t->sp, "mx.example", &w) > 0) {
			t->got++;
			maildir_writer_free(&w);
		}
	}
	return NULL;
}

/* Takers on other threads while the pool refills (run under the sanitizers). */
static void
test_concurrent_takes(void **state)
{
	struct fixture *f = *state;
	struct spool *sp = new_pool(f, 8);
	struct taker t[2] = {{.sp = sp}, {.sp = sp}};
	pthread_t th[2];
	struct spool_stats st;

	for (int i = 0; i < 2; i++)
		assert_int_equal(pthread_create(&th[i], NULL, taker_main, &t[i]), 0);
	for (int i = 0; i < 2; i++)
		pthread_join(th[i], NULL);
	spool_stats(sp, &st);
	assert_int_equal(st.taken, (uint64_t)(t[0].got + t[1].got));
	assert_int_equal(st.taken + st.missed, 4000);
	spool_free(&sp);
	assert_int_equal(count_files(f->dir), 0);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_fills_and_frees, setup, teardown),
		cmocka_unit_test_setup_teardown(test_take, setup, teardown),
		cmocka_unit_test_setup_teardown(test_empty_then_refilled, setup, teardown),
		cmocka_unit_test_setup_teardown(test_leftovers_removed, setup, teardown),
		cmocka_unit_test_setup_teardown(test_directory_removed, setup, teardown),
		cmocka_unit_test_setup_teardown(test_directory_unusable, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bad_arguments, setup, teardown),
		cmocka_unit_test_setup_teardown(test_concurrent_takes, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

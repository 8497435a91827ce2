/*
 * Tests for daemon/store: the storage threads with a real account in a fresh
 * directory. A blocking job (its work waits on a gate the test opens) holds
 * the account's thread while adds queue behind it; the event loop is pumped
 * (bounded) to see the done callbacks. Every wait is bounded so a bug fails
 * the test instead of hanging it.
 */
#define _GNU_SOURCE 1
#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <event2/event.h>
#include <event2/thread.h>

#include "daemon/config.h"
#include "daemon/store.h"
#include "daemon/util.h"
#include "index/index.h"
#include "maildir/maildir.h"

/* Bound of every wait: a bug fails the test rather than hanging it. */
#define WAIT_SECONDS 10
#define HOST "test.example"
/* As daemon/store.c: messages in one group commit. */
#define STORE_BATCH_MAX 512

static const char static_yaml[] =
	"DataDir: data\n"
	"Hostname: mail.example.org\n"
	"Postmaster:\n"
	"  Account: mjl\n"
	"Listeners:\n"
	"  l:\n"
	"    IPs:\n"
	"      - 127.0.0.1\n"
	"    SMTP:\n"
	"      Enabled: true\n";

static const char domains_yaml[] =
	"Domains:\n"
	"  example.org: {}\n"
	"Accounts:\n"
	"  mjl:\n"
	"    Domain: example.org\n"
	"    Destinations:\n"
	"      mjl@example.org: {}\n";

struct fixture;

/* A store_submit job whose work blocks until the test opens it. */
struct gate {
	struct fixture *f;
	bool running;  /* its work started (f->mu) */
	bool open;     /* the test let it go on (f->mu) */
	bool finished; /* its work returned (f->mu) */
	bool done;     /* its done callback ran (loop thread) */
};

/* One store_add: its items, each with its own message file. */
struct add_req {
	struct fixture *f;
	struct idx_add *items;
	struct maildir_writer **ws;
	size_t n;
	bool done;             /* loop thread */
	int order;             /* rank among the done callbacks */
	bool gate2_blocked;    /* at done: the second gate's work was running, not finished */
	char acct_err[64];     /* store_account_error at done */
};

struct fixture {
	char root[64];
	char tmpdir[128];  /* where message files are written */
	char maildir[192]; /* the account's INBOX Maildir */
	struct config *cfg;
	struct event_base *base;
	struct event *tick; /* wakes the loop now and then so pumping stays bounded */
	struct store *st;
	struct store_account *sa;
	uint32_t inbox;
	bool inbox_done;
	pthread_mutex_t mu;
	pthread_cond_t cond;
	struct gate gates[2];
	int gates_submitted;
	struct add_req *reqs;
	size_t nreqs;
	int ndone; /* add done callbacks run so far */
};

static int
rm_rf(const char *path)
{
	char cmd[256];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", path);
	return system(cmd);
}

static struct timespec
deadline(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	ts.tv_sec += WAIT_SECONDS;
	return ts;
}

static bool
past(const struct timespec *until)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	return now.tv_sec > until->tv_sec || (now.tv_sec == until->tv_sec && now.tv_nsec >= until->tv_nsec);
}

static void
tick_cb(evutil_socket_t fd, short what, void *arg)
{
}

/* Run the loop until *flag is set (by a done callback) or the bound passes; *flag. */
static bool
pump_until(struct fixture *f, const bool *flag)
{
	struct timespec until = deadline();

	while (!*flag && !past(&until))
		event_base_loop(f->base, EVLOOP_ONCE);
	return *flag;
}

/* ---- the blocking job ---- */

static void
gate_work(struct store_account *sa, struct idx_account *a, void *arg)
{
	struct gate *g = arg;
	struct fixture *f = g->f;
	struct timespec until;

	/* The condition variable uses the realtime clock. The bound only keeps a
	 * broken test from hanging: longer than the test's own waits, so a test
	 * waiting for something to happen while the job blocks fails first. */
	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += 3 * WAIT_SECONDS;
	pthread_mutex_lock(&f->mu);
	g->running = true;
	pthread_cond_broadcast(&f->cond);
	while (!g->open)
		if (pthread_cond_timedwait(&f->cond, &f->mu, &until) == ETIMEDOUT)
			break;
	g->finished = true;
	pthread_cond_broadcast(&f->cond);
	pthread_mutex_unlock(&f->mu);
}

static void
gate_done(void *arg)
{
	struct gate *g = arg;

	g->done = true;
}

static struct gate *
gate_submit(struct fixture *f)
{
	struct gate *g = &f->gates[f->gates_submitted++];

	g->f = f;
	store_submit(f->sa, gate_work, gate_done, g);
	return g;
}

/* Test thread: wait (bounded) until g's work runs; whether it does. */
static bool
gate_wait_running(struct gate *g)
{
	struct fixture *f = g->f;
	struct timespec until;
	bool running;

	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += WAIT_SECONDS;
	pthread_mutex_lock(&f->mu);
	while (!g->running)
		if (pthread_cond_timedwait(&f->cond, &f->mu, &until) == ETIMEDOUT)
			break;
	running = g->running;
	pthread_mutex_unlock(&f->mu);
	return running;
}

static void
gate_open(struct gate *g)
{
	struct fixture *f = g->f;

	pthread_mutex_lock(&f->mu);
	g->open = true;
	pthread_cond_broadcast(&f->cond);
	pthread_mutex_unlock(&f->mu);
}

/* ---- adds ---- */

static void
add_done(void *arg)
{
	struct add_req *r = arg;
	struct fixture *f = r->f;

	r->done = true;
	r->order = f->ndone++;
	pthread_mutex_lock(&f->mu);
	r->gate2_blocked = f->gates[1].running && !f->gates[1].finished;
	pthread_mutex_unlock(&f->mu);
	/* NULL when the store is being freed after a failed test (teardown). */
	if (f->sa != NULL)
		snprintf(r->acct_err, sizeof(r->acct_err), "%s", store_account_error(f->sa));
}

/* A small message in the data directory's tmp, finished without fsync (the add syncs). */
static struct maildir_writer *
message_write(struct fixture *f, size_t i)
{
	struct maildir_writer *w = NULL;
	char err[256], msg[256];
	int len;

	len = snprintf(msg, sizeof(msg),
	    "From: sender@example.org\r\nTo: mjl@example.org\r\nSubject: message %zu\r\n"
	    "Message-ID: <m%zu@example.org>\r\n\r\nbody %zu\r\n",
	    i, i, i);
	assert_true(len > 0 && (size_t)len < sizeof(msg));
	if (maildir_writer_open(&w, f->tmpdir, HOST, err, sizeof(err)) < 0 ||
	    maildir_writer_write(w, msg, (size_t)len, err, sizeof(err)) < 0 ||
	    maildir_writer_finish(w, MAILDIR_FINISH_NOSYNC, err, sizeof(err)) < 0)
		fail_msg("message file: %s", err);
	return w;
}

/* nreqs adds of nitems messages each for the INBOX, not submitted yet. */
static void
reqs_make(struct fixture *f, size_t nreqs, size_t nitems)
{
	size_t m = 0;

	f->reqs = calloc(nreqs, sizeof(*f->reqs));
	assert_non_null(f->reqs);
	f->nreqs = nreqs;
	for (size_t i = 0; i < nreqs; i++) {
		struct add_req *r = &f->reqs[i];
		r->f = f;
		r->n = nitems;
		r->order = -1;
		r->items = calloc(nitems, sizeof(*r->items));
		r->ws = calloc(nitems, sizeof(*r->ws));
		assert_non_null(r->items);
		assert_non_null(r->ws);
		for (size_t k = 0; k < nitems; k++) {
			r->ws[k] = message_write(f, m++);
			r->items[k].w = r->ws[k];
			r->items[k].mailbox_id = f->inbox;
		}
	}
}

static void
reqs_free(struct fixture *f)
{
	for (size_t i = 0; i < f->nreqs; i++) {
		struct add_req *r = &f->reqs[i];
		for (size_t k = 0; k < r->n; k++)
			maildir_writer_free(&r->ws[k]); /* unlinks the tmp file */
		free(r->ws);
		free(r->items);
	}
	free(f->reqs);
	f->reqs = NULL;
	f->nreqs = 0;
}

/* Pump until every add's done callback ran; whether they all did. */
static bool
reqs_wait(struct fixture *f)
{
	for (size_t i = 0; i < f->nreqs; i++)
		if (!pump_until(f, &f->reqs[i].done))
			return false;
	return true;
}

/*
 * Every add succeeded, the done callbacks ran in submission order, and the
 * UIDs increase in submission order (items within an add, then across adds).
 */
static void
reqs_check_order(struct fixture *f)
{
	uint32_t prev = 0;

	for (size_t i = 0; i < f->nreqs; i++) {
		struct add_req *r = &f->reqs[i];
		assert_true(r->done);
		assert_int_equal(r->order, (int)i);
		for (size_t k = 0; k < r->n; k++) {
			if (r->items[k].result != 1)
				fail_msg("add %zu item %zu: result %d: %s", i, k, r->items[k].result, r->items[k].err_r);
			if (r->items[k].uid_r <= prev)
				fail_msg("add %zu item %zu: uid %u after %u", i, k, r->items[k].uid_r, prev);
			prev = r->items[k].uid_r;
		}
	}
}

/* Files in the INBOX's new/ and cur/; -1 when a directory cannot be read. */
static long
maildir_count(struct fixture *f)
{
	static const char *const subs[] = {"new", "cur"};
	long n = 0;

	for (size_t i = 0; i < ARRAY_LEN(subs); i++) {
		char path[256];
		DIR *d;
		struct dirent *de;

		snprintf(path, sizeof(path), "%s/%s", f->maildir, subs[i]);
		d = opendir(path);
		if (d == NULL)
			return -1;
		while ((de = readdir(d)) != NULL)
			if (de->d_name[0] != '.')
				n++;
		closedir(d);
	}
	return n;
}

/* ---- fixture ---- */

static void
inbox_work(struct store_account *sa, struct idx_account *a, void *arg)
{
	struct fixture *f = arg;
	struct idx_mailbox mb;
	char err[256];

	if (a != NULL && idx_mailbox_get(a, "INBOX", &mb, err, sizeof(err)) > 0) {
		f->inbox = mb.id;
		idx_mailbox_clear(&mb);
	}
}

static void
inbox_done(void *arg)
{
	struct fixture *f = arg;

	f->inbox_done = true;
}

static int
teardown(void **state)
{
	struct fixture *f = *state;

	if (f == NULL)
		return 0;
	/* A failed test may have left jobs blocked: let them go and finish. */
	for (int i = 0; i < f->gates_submitted; i++) {
		gate_open(&f->gates[i]);
		pump_until(f, &f->gates[i].done);
	}
	for (size_t i = 0; i < f->nreqs; i++)
		pump_until(f, &f->reqs[i].done);
	store_account_put(&f->sa);
	store_free(&f->st); /* runs what is left of the done callbacks */
	reqs_free(f);
	if (f->tick != NULL)
		event_free(f->tick);
	if (f->base != NULL)
		event_base_free(f->base);
	config_free(&f->cfg);
	pthread_mutex_destroy(&f->mu);
	pthread_cond_destroy(&f->cond);
	if (f->root[0] != '\0')
		rm_rf(f->root);
	free(f);
	*state = NULL;
	return 0;
}

static int
setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	struct timeval tv = {0, 20 * 1000};
	char err[512];

	if (f == NULL)
		return -1;
	*state = f;
	pthread_mutex_init(&f->mu, NULL);
	pthread_cond_init(&f->cond, NULL);
	snprintf(f->root, sizeof(f->root), "/tmp/test_store.XXXXXX");
	if (mkdtemp(f->root) == NULL) {
		f->root[0] = '\0';
		goto fail;
	}
	if (config_parse(static_yaml, strlen(static_yaml), "mox.yaml", domains_yaml, strlen(domains_yaml),
	    "domains.yaml", f->root, &f->cfg, err, sizeof(err)) != 1) {
		fprintf(stderr, "config: %s\n", err);
		goto fail;
	}
	snprintf(f->tmpdir, sizeof(f->tmpdir), "%s/tmp", f->cfg->data_dir);
	char *dir = store_account_dir(f->cfg, "mjl");
	snprintf(f->maildir, sizeof(f->maildir), "%s/Maildir", dir);
	free(dir);
	if (mkdir_p(f->tmpdir, 0700) < 0)
		goto fail;
	f->base = event_base_new();
	if (f->base == NULL)
		goto fail;
	f->tick = event_new(f->base, -1, EV_PERSIST, tick_cb, NULL);
	if (f->tick == NULL || event_add(f->tick, &tv) < 0)
		goto fail;
	f->st = store_new(f->base, f->cfg, 1);
	if (f->st == NULL)
		goto fail;
	f->sa = store_account_get(f->st, "mjl");
	if (f->sa == NULL)
		goto fail;
	store_submit(f->sa, inbox_work, inbox_done, f);
	if (!pump_until(f, &f->inbox_done) || f->inbox == 0) {
		fprintf(stderr, "account: %s\n", store_account_error(f->sa));
		goto fail;
	}
	return 0;
fail:
	teardown(state);
	return -1;
}

/* ---- tests ---- */

/*
 * An add queued behind two jobs: while the second job runs, the shutdown
 * refusal must still find the add in the queue and answer it at once, not
 * when the thread gets to it after the job.
 */
static void
test_refuse_reaches_add_behind_two_jobs(void **state)
{
	struct fixture *f = *state;
	struct gate *g1, *g2;
	struct add_req *r;

	g1 = gate_submit(f);
	assert_true(gate_wait_running(g1));
	g2 = gate_submit(f);
	reqs_make(f, 1, 2);
	r = &f->reqs[0];
	store_add(f->sa, r->items, r->n, add_done, r);

	gate_open(g1);
	assert_true(gate_wait_running(g2));
	store_refuse_adds(f->st);

	/* Answered while the second job still holds the thread. */
	assert_true(pump_until(f, &r->done));
	assert_true(r->gate2_blocked);
	pthread_mutex_lock(&f->mu);
	bool g2_finished = g2->finished;
	pthread_mutex_unlock(&f->mu);
	assert_false(g2_finished);
	for (size_t k = 0; k < r->n; k++) {
		assert_true(r->items[k].result < 0);
		assert_int_equal(r->items[k].error, IDX_E_INTERNAL);
		assert_string_equal(r->items[k].err_r, "server shutting down");
	}
	assert_string_equal(r->acct_err, "server shutting down");
	assert_string_equal(store_account_error(f->sa), "server shutting down");

	gate_open(g2);
	assert_true(pump_until(f, &g2->done));
	assert_true(g1->done);
	assert_false(store_adds_running(f->st));
	/* Not stored. */
	assert_int_equal(maildir_count(f), 0);
}

/* Adds queued behind a job are grouped, all succeed, in submission order. */
static void
test_adds_group_and_keep_order(void **state)
{
	struct fixture *f = *state;
	struct gate *g;

	g = gate_submit(f);
	assert_true(gate_wait_running(g));
	reqs_make(f, 12, 3);
	for (size_t i = 0; i < f->nreqs; i++)
		store_add(f->sa, f->reqs[i].items, f->reqs[i].n, add_done, &f->reqs[i]);
	assert_false(store_adds_running(f->st)); /* queued, not started */
	gate_open(g);
	assert_true(pump_until(f, &g->done));
	assert_true(reqs_wait(f));
	reqs_check_order(f);
	assert_false(store_adds_running(f->st));
	assert_int_equal(maildir_count(f), 12 * 3);
}

/*
 * More adds than one batch takes (jobs) and more messages than one group
 * commit holds (STORE_BATCH_MAX): those over the limit go back to the front
 * of the queue; none is lost and the order holds.
 */
static void
test_adds_over_batch_max(void **state)
{
	struct fixture *f = *state;
	struct gate *g;
	const size_t nreqs = 70, nitems = 9;

	assert_true(nreqs * nitems > STORE_BATCH_MAX);
	g = gate_submit(f);
	assert_true(gate_wait_running(g));
	reqs_make(f, nreqs, nitems);
	for (size_t i = 0; i < f->nreqs; i++)
		store_add(f->sa, f->reqs[i].items, f->reqs[i].n, add_done, &f->reqs[i]);
	gate_open(g);
	assert_true(pump_until(f, &g->done));
	assert_true(reqs_wait(f));
	reqs_check_order(f);
	assert_false(store_adds_running(f->st));
	assert_int_equal(maildir_count(f), (long)(nreqs * nitems));
}

/*
 * store_free's drain after the loop stopped: a done callback that queues the
 * next step of a delivery (an add for the second account) gets it refused at
 * once into the done queue; the drain must run that completion too.
 */
struct chain {
	struct fixture *f;
	struct store_account *sa;
	struct add_req *r;
	bool ran;
	bool chained;
};

static void
chain_work(struct store_account *sa, struct idx_account *a, void *arg)
{
	struct chain *ch = arg;
	pthread_mutex_lock(&ch->f->mu);
	ch->ran = true;
	pthread_cond_broadcast(&ch->f->cond);
	pthread_mutex_unlock(&ch->f->mu);
}

static void
chain_done(void *arg)
{
	struct chain *ch = arg;
	ch->chained = true;
	/* the next step of a delivery (second account) */
	store_add(ch->sa, ch->r->items, ch->r->n, add_done, ch->r);
}

static void
test_drain_runs_chained_add(void **state)
{
	struct fixture *f = *state;
	static struct chain ch;

	reqs_make(f, 1, 1);
	ch.f = f;
	ch.sa = f->sa;
	ch.r = &f->reqs[0];
	store_submit(f->sa, chain_work, chain_done, &ch);
	pthread_mutex_lock(&f->mu);
	while (!ch.ran)
		pthread_cond_wait(&f->cond, &f->mu);
	pthread_mutex_unlock(&f->mu);
	store_account_put(&f->sa);
	store_free(&f->st); /* as after the loop stopped */
	bool done = f->reqs[0].done;
	f->reqs[0].done = true; /* keep teardown from waiting */
	assert_true(ch.chained);
	assert_true(done);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_refuse_reaches_add_behind_two_jobs, setup, teardown),
		cmocka_unit_test_setup_teardown(test_adds_group_and_keep_order, setup, teardown),
		cmocka_unit_test_setup_teardown(test_adds_over_batch_max, setup, teardown),
		cmocka_unit_test_setup_teardown(test_drain_runs_chained_add, setup, teardown),
	};
	int rc;

	if (evthread_use_pthreads() < 0) {
		fprintf(stderr, "evthread_use_pthreads failed\n");
		return 1;
	}
	rc = cmocka_run_group_tests(tests, NULL, NULL);
	libevent_global_shutdown();
	return rc;
}

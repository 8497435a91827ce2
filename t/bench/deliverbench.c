/*
 * deliverbench: durable local delivery through the real storage code, for
 * make bench. Messages of -s bytes (default 4096, CRLF, with a Received
 * prefix) are written as the SMTP server writes them: a spool file in
 * <data>/tmp finished without fsync, then idx_add into the INBOX of a fresh
 * account, which writes the message to the account's delivery log and
 * fdatasyncs it, links the file and commits the index (the checkpoints that
 * later sync the files, new/ and the index run inside the measured time,
 * whenever the log fills); then the spool file is removed. Like the daemon, every delivery
 * first looks its mailbox up (idx_mailbox_get) before adding (-L skips it).
 *
 * Measured, one result per line on stdout (errors on stderr, exit 1):
 *   deliver raw N msgs R msg/s        the disk's limit: write, fsync, link,
 *                                     fsync dir, in a loop (one writer); run
 *                                     before and after the delivery modes
 *   deliver raw-seq N msgs R msg/s    the raw loop in rounds between rounds
 *                                     of the seq mode (the same stretch of time)
 *   deliver seq N msgs R msg/s        one message per idx_add, each durable
 *                                     before the next (one SMTP connection)
 *   deliver seq split ms/msg spool S lookup L idx_add A remove R
 *                                     where a sequential delivery's time goes
 *   deliver groupK N msgs R msg/s batches B avg A
 *                                     K sender threads and one storage thread
 *                                     that group-commits as daemon/store.c
 *                                     does (all queued adds up to the next
 *                                     job of the account, 64 jobs, 512 items)
 *   index seq|batch N msgs B bytes R bytes/msg
 *                                     index.tcb after the seq run / after
 *                                     building the open test's account in
 *                                     batches of 512
 *   open warm|cold N msgs T ms        idx_account_open + idx_mailbox_get INBOX
 *                                     of an account of N messages; cold after
 *                                     dropping index.tcb from the page cache
 *   open uids N msgs T ms             then idx_mailbox_uids of its INBOX (warm)
 *
 * Usage: deliverbench -d DIR [-n N] [-k 8,32] [-o N] [-r N] [-s BYTES] [-L]
 * (-k 0: no group mode; -o 0: no open test.)
 * DIR must exist and be on the filesystem to measure; everything goes below
 * it and is left there for the caller to remove.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <tcutil.h>

#include "index/index.h"
#include "maildir/maildir.h"

#define DB_HOST "bench.example"
/* As daemon/store.c: items per idx_add and jobs gathered per batch. */
#define DB_BATCH_MAX 512
#define DB_BATCH_JOBS 64
#define DB_MAX_SENDERS 1024
#define DB_MAX_MODES 16
/* Messages per idx_add when building the account for the open test. */
#define DB_BUILD_BATCH 512
#define DB_OPEN_REPEAT 5

struct db_opts {
	const char *dir;
	size_t n;          /* messages per delivery mode */
	size_t open_n;     /* messages in the open test's account; 0 skips it */
	size_t raw_n;      /* messages of the raw fsync loop */
	size_t size;       /* bytes per message */
	bool lookup;       /* idx_mailbox_get before each add, as the daemon */
	int senders[DB_MAX_MODES];
	size_t nsenders;
};

static struct db_opts opts;

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

static void
die(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	fputs("deliverbench: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
	exit(1);
}

static double
now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* dir/name into buf, or die: paths here are ours and short. */
static void
path_join(char *buf, size_t size, const char *dir, const char *name)
{
	int n = snprintf(buf, size, "%s/%s", dir, name);

	if (n < 0 || (size_t)n >= size)
		die("path too long: %s/%s", dir, name);
}

static void
mkdir_or_die(const char *path)
{
	if (mkdir(path, 0700) < 0 && errno != EEXIST)
		die("mkdir %s: %s", path, strerror(errno));
}

/* ---- messages ---- */

/*
 * Message i: a Received line (the prefix the SMTP server adds, its length in
 * *prefix_r) and a plain-text message with unique Message-ID and subject,
 * padded with body lines to exactly size bytes, CRLF line ends. buf holds
 * size bytes. Returns size.
 */
static size_t
gen_message(char *buf, size_t size, size_t i, uint32_t *prefix_r)
{
	static const char words[] = "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod "
	    "tempor incididunt ut labore et dolore magna aliqua enim ad minim veniam quis nostrud ";
	size_t len, prefix;
	int n;

	n = snprintf(buf, size,
	    "Received: from client.example ([127.0.0.1]) by " DB_HOST " with ESMTP id %zu;\r\n"
	    "\tMon, 01 Jan 2024 00:00:00 +0000\r\n", i);
	if (n < 0 || (size_t)n >= size)
		die("message size %zu too small", size);
	prefix = (size_t)n;
	n = snprintf(buf + prefix, size - prefix,
	    "From: Sender %zu <sender%zu@example.org>\r\n"
	    "To: bench@" DB_HOST "\r\n"
	    "Subject: delivery bench message %zu\r\n"
	    "Date: Mon, 01 Jan 2024 %02zu:%02zu:%02zu +0000\r\n"
	    "Message-ID: <deliver%zu.%ld@example.org>\r\n"
	    "MIME-Version: 1.0\r\n"
	    "Content-Type: text/plain; charset=us-ascii\r\n"
	    "\r\n",
	    i % 997, i % 997, i, (i / 3600) % 24, (i / 60) % 60, i % 60, i, (long)getpid());
	if (n < 0 || prefix + (size_t)n + 3 > size)
		die("message size %zu too small", size);
	len = prefix + (size_t)n;
	/* Body lines of up to 76 characters; the last one takes what is left. */
	while (len < size) {
		size_t left = size - len, line = left - 2;
		if (left >= 78 + 3)
			line = 76;
		for (size_t k = 0; k < line; k++) {
			char c = words[(i * 7 + len + k) % (sizeof(words) - 1)];
			buf[len + k] = k == 0 && c == ' ' ? 'x' : c;
		}
		len += line;
		buf[len++] = '\r';
		buf[len++] = '\n';
	}
	*prefix_r = (uint32_t)prefix;
	return len;
}

/*
 * Write message i into a new spool file in spool, finished without fsync
 * (idx_add syncs), as the SMTP DATA phase does. Returns the writer.
 */
static struct maildir_writer *
spool_write(const char *spool, size_t i, uint32_t *prefix_r)
{
	struct maildir_writer *w;
	char err[512];
	char *buf = tcmalloc(opts.size);
	size_t len = gen_message(buf, opts.size, i, prefix_r);

	if (maildir_writer_open(&w, spool, DB_HOST, err, sizeof(err)) < 0)
		die("spool: %s", err);
	if (maildir_writer_write(w, buf, len, err, sizeof(err)) < 0 ||
	    maildir_writer_finish(w, MAILDIR_FINISH_NOSYNC, err, sizeof(err)) < 0)
		die("spool: %s", err);
	tcfree(buf);
	return w;
}

/* After the commit: remove the spool file and free the writer. */
static void
spool_done(struct maildir_writer **wp)
{
	char err[512];

	if (maildir_writer_remove(*wp, err, sizeof(err)) < 0)
		die("removing spool file: %s", err);
	maildir_writer_free(wp);
}

/* ---- the disk's limit ---- */

/*
 * write + fsync + link + fsync(dir) + unlink in a loop, files first..first+n
 * in dir/tmp and dir/new (created when missing); seconds taken.
 */
static double
raw_loop(const char *dir, size_t first, size_t n)
{
	char tmp[4096], new[4096], p[4200], q[4200];
	char *data = tcmalloc(opts.size);
	double start;
	int dfd;

	path_join(tmp, sizeof(tmp), dir, "tmp");
	path_join(new, sizeof(new), dir, "new");
	mkdir_or_die(dir);
	mkdir_or_die(tmp);
	mkdir_or_die(new);
	for (size_t i = 0; i < opts.size; i++)
		data[i] = (char)('a' + i % 26);
	dfd = open(new, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0)
		die("open %s: %s", new, strerror(errno));
	start = now();
	for (size_t i = first; i < first + n; i++) {
		int fd;

		snprintf(p, sizeof(p), "%s/%zu", tmp, i);
		snprintf(q, sizeof(q), "%s/%zu", new, i);
		fd = open(p, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
		if (fd < 0 || write(fd, data, opts.size) != (ssize_t)opts.size || fsync(fd) < 0 || close(fd) < 0)
			die("%s: %s", p, strerror(errno));
		if (link(p, q) < 0 || fsync(dfd) < 0 || unlink(p) < 0)
			die("%s: %s", q, strerror(errno));
	}
	double el = now() - start;
	close(dfd);
	tcfree(data);
	return el;
}

/* The raw loop alone: messages/s. */
static double
raw_limit(const char *dir, size_t n)
{
	return (double)n / raw_loop(dir, 0, n);
}

/* ---- accounts ---- */

struct db_account {
	char data[4096];  /* the data directory: tmp/ (spool) and accounts/ */
	char spool[4200];
	char dir[4200];   /* data/accounts/<name> */
	struct idx_account *a;
	uint32_t inbox;
};

/* A fresh data directory base/<name> with one account; opened. */
static void
account_new(struct db_account *acc, const char *base, const char *name, bool no_fsync)
{
	struct idx_options o = {.host = DB_HOST, .no_fsync = no_fsync};
	struct idx_mailbox mb = {0};
	char accounts[4200], err[512];

	memset(acc, 0, sizeof(*acc));
	path_join(acc->data, sizeof(acc->data), base, name);
	path_join(acc->spool, sizeof(acc->spool), acc->data, "tmp");
	path_join(accounts, sizeof(accounts), acc->data, "accounts");
	path_join(acc->dir, sizeof(acc->dir), accounts, "bench");
	mkdir_or_die(acc->data);
	mkdir_or_die(acc->spool);
	mkdir_or_die(accounts);
	mkdir_or_die(acc->dir);
	if (idx_account_open(acc->dir, &o, &acc->a, err, sizeof(err)) < 0)
		die("open account: %s", err);
	if (idx_mailbox_get(acc->a, "INBOX", &mb, err, sizeof(err)) <= 0)
		die("INBOX: %s", err);
	acc->inbox = mb.id;
	idx_mailbox_clear(&mb);
}

/* The mailbox lookup each delivery does before its add (smtp_deliver.c). */
static uint32_t
lookup_inbox(struct idx_account *a)
{
	struct idx_mailbox mb = {0};
	char err[512];
	uint32_t id;

	if (idx_mailbox_get(a, "INBOX", &mb, err, sizeof(err)) <= 0)
		die("INBOX: %s", err);
	id = mb.id;
	idx_mailbox_clear(&mb);
	return id;
}

static void
add_or_die(struct idx_account *a, struct idx_add *items, size_t n)
{
	char err[512];

	if (idx_add(a, items, n, err, sizeof(err)) < 0)
		die("idx_add: %s", err);
	for (size_t i = 0; i < n; i++)
		if (items[i].result <= 0)
			die("idx_add item %zu: %s", i, items[i].err_r);
}

static off_t
file_size(const char *dir, const char *name)
{
	char p[4400];
	struct stat st;

	path_join(p, sizeof(p), dir, name);
	if (stat(p, &st) < 0)
		die("stat %s: %s", p, strerror(errno));
	return st.st_size;
}

static void
print_index_size(const char *how, const char *dir, size_t n)
{
	off_t sz = file_size(dir, "index.tcb");

	printf("index %s %zu msgs %lld bytes %.1f bytes/msg\n", how, n, (long long)sz, (double)sz / (double)n);
	fflush(stdout);
}

/* ---- mode (a): one message per idx_add ---- */

/*
 * The disk is shared and its speed drifts, so the sequential deliveries run
 * in rounds, each after a round of the raw loop: both rates cover the same
 * stretch of time.
 */
#define DB_SEQ_ROUNDS 10

static void
mode_seq(const char *base)
{
	struct db_account acc;
	double el = 0, raw_el = 0, t[5], spent[4] = {0};
	char rawdir[4200];
	size_t raw_done = 0;

	account_new(&acc, base, "seq", false);
	path_join(rawdir, sizeof(rawdir), base, "raw-seq");
	for (size_t i = 0; i < opts.n; i++) {
		struct idx_add it = {0};

		if (i % ((opts.n + DB_SEQ_ROUNDS - 1) / DB_SEQ_ROUNDS) == 0 && opts.raw_n >= DB_SEQ_ROUNDS) {
			raw_el += raw_loop(rawdir, raw_done, opts.raw_n / DB_SEQ_ROUNDS);
			raw_done += opts.raw_n / DB_SEQ_ROUNDS;
		}

		t[0] = now();
		it.w = spool_write(acc.spool, i, &it.prefix_len);
		t[1] = now();
		it.mailbox_id = opts.lookup ? lookup_inbox(acc.a) : acc.inbox;
		t[2] = now();
		add_or_die(acc.a, &it, 1);
		t[3] = now();
		spool_done(&it.w);
		t[4] = now();
		for (int k = 0; k < 4; k++)
			spent[k] += t[k + 1] - t[k];
		el += t[4] - t[0];
	}
	if (raw_done > 0)
		printf("deliver raw-seq %zu msgs %.1f msg/s\n", raw_done, (double)raw_done / raw_el);
	printf("deliver seq %zu msgs %.1f msg/s\n", opts.n, (double)opts.n / el);
	/* Where one message's time goes, ms: spool file, mailbox lookup, idx_add, spool removal. */
	printf("deliver seq split ms/msg spool %.3f lookup %.3f idx_add %.3f remove %.3f\n",
	    spent[0] * 1e3 / (double)opts.n, spent[1] * 1e3 / (double)opts.n, spent[2] * 1e3 / (double)opts.n,
	    spent[3] * 1e3 / (double)opts.n);
	fflush(stdout);
	idx_account_close(&acc.a);
	print_index_size("seq", acc.dir, opts.n);
}

/* ---- mode (b): K senders, one storage thread with group commit ---- */

enum db_job_kind { DB_JOB_LOOKUP, DB_JOB_ADD };

struct db_job {
	struct db_job *next;
	enum db_job_kind kind;
	struct idx_add item;
	uint32_t mbid_r;
	sem_t done;
};

/* The storage thread's queue of one account (daemon/store.c's worker). */
struct db_store {
	struct idx_account *a;
	uint32_t inbox;
	pthread_mutex_t mu;
	pthread_cond_t cond;
	struct db_job *head, *tail;
	bool stop;
	/* counted by the storage thread */
	uint64_t batches, items;
};

struct db_sender {
	struct db_store *st;
	const char *spool;
	size_t first, count;
	pthread_t thread;
};

static void
store_enqueue(struct db_store *st, struct db_job *j)
{
	j->next = NULL;
	pthread_mutex_lock(&st->mu);
	if (st->tail)
		st->tail->next = j;
	else
		st->head = j;
	st->tail = j;
	pthread_cond_signal(&st->cond);
	pthread_mutex_unlock(&st->mu);
}

/* One group commit of the jobs batch[0..nb), as store.c's run_adds. */
static void
store_run_adds(struct db_store *st, struct db_job **batch, size_t nb)
{
	struct idx_add *all = tccalloc(nb, sizeof(*all));

	for (size_t i = 0; i < nb; i++)
		all[i] = batch[i]->item;
	add_or_die(st->a, all, nb);
	for (size_t i = 0; i < nb; i++)
		batch[i]->item = all[i];
	tcfree(all);
	st->batches++;
	st->items += nb;
}

/*
 * Take everything queued; run lookups at once; gather an add with the adds
 * that follow it up to the next job of the account (here every job is of
 * the one account), at most DB_BATCH_JOBS jobs and DB_BATCH_MAX items.
 */
static void *
store_main(void *arg)
{
	struct db_store *st = arg;

	for (;;) {
		struct db_job *list;
		bool stop;

		pthread_mutex_lock(&st->mu);
		while (st->head == NULL && !st->stop)
			pthread_cond_wait(&st->cond, &st->mu);
		list = st->head;
		st->head = st->tail = NULL;
		stop = st->stop;
		pthread_mutex_unlock(&st->mu);
		if (list == NULL && stop)
			break;
		while (list != NULL) {
			struct db_job *batch[DB_BATCH_JOBS];
			size_t nb = 0;

			if (list->kind == DB_JOB_LOOKUP) {
				struct db_job *j = list;
				list = j->next;
				j->mbid_r = lookup_inbox(st->a);
				sem_post(&j->done);
				continue;
			}
			while (list != NULL && list->kind == DB_JOB_ADD && nb < DB_BATCH_JOBS && nb < DB_BATCH_MAX) {
				batch[nb++] = list;
				list = list->next;
			}
			store_run_adds(st, batch, nb);
			for (size_t i = 0; i < nb; i++)
				sem_post(&batch[i]->done);
		}
	}
	return NULL;
}

/* One SMTP connection: spool, lookup, add, wait for the commit, next. */
static void *
sender_main(void *arg)
{
	struct db_sender *s = arg;
	struct db_job j;

	memset(&j, 0, sizeof(j));
	if (sem_init(&j.done, 0, 0) < 0)
		die("sem_init: %s", strerror(errno));
	for (size_t i = s->first; i < s->first + s->count; i++) {
		struct maildir_writer *w;
		uint32_t prefix;

		w = spool_write(s->spool, i, &prefix);
		j.mbid_r = s->st->inbox;
		if (opts.lookup) {
			j.kind = DB_JOB_LOOKUP;
			store_enqueue(s->st, &j);
			while (sem_wait(&j.done) < 0 && errno == EINTR)
				;
		}
		memset(&j.item, 0, sizeof(j.item));
		j.kind = DB_JOB_ADD;
		j.item.w = w;
		j.item.mailbox_id = j.mbid_r;
		j.item.prefix_len = prefix;
		store_enqueue(s->st, &j);
		while (sem_wait(&j.done) < 0 && errno == EINTR)
			;
		if (j.item.result <= 0)
			die("delivery %zu: %s", i, j.item.err_r);
		spool_done(&w);
	}
	sem_destroy(&j.done);
	return NULL;
}

static void
mode_group(const char *base, int k)
{
	struct db_account acc;
	struct db_store st;
	struct db_sender *s = tccalloc((size_t)k, sizeof(*s));
	pthread_t storage;
	char name[32];
	double start, el;
	size_t first = 0;

	snprintf(name, sizeof(name), "group%d", k);
	account_new(&acc, base, name, false);
	memset(&st, 0, sizeof(st));
	st.a = acc.a;
	st.inbox = acc.inbox;
	pthread_mutex_init(&st.mu, NULL);
	pthread_cond_init(&st.cond, NULL);
	if (pthread_create(&storage, NULL, store_main, &st) != 0)
		die("pthread_create failed");
	start = now();
	for (int i = 0; i < k; i++) {
		s[i].st = &st;
		s[i].spool = acc.spool;
		s[i].first = first;
		s[i].count = opts.n / (size_t)k + ((size_t)i < opts.n % (size_t)k ? 1 : 0);
		first += s[i].count;
		if (pthread_create(&s[i].thread, NULL, sender_main, &s[i]) != 0)
			die("pthread_create failed");
	}
	for (int i = 0; i < k; i++)
		pthread_join(s[i].thread, NULL);
	el = now() - start;
	pthread_mutex_lock(&st.mu);
	st.stop = true;
	pthread_cond_signal(&st.cond);
	pthread_mutex_unlock(&st.mu);
	pthread_join(storage, NULL);
	printf("deliver group%d %zu msgs %.1f msg/s batches %" PRIu64 " avg %.1f\n", k, opts.n, (double)opts.n / el,
	    st.batches, st.batches ? (double)st.items / (double)st.batches : 0.0);
	fflush(stdout);
	idx_account_close(&acc.a);
	pthread_mutex_destroy(&st.mu);
	pthread_cond_destroy(&st.cond);
	tcfree(s);
}

/* ---- opening a big account ---- */

/* Fill a fresh account with open_n messages in big batches (no fsync until the end). */
static void
build_big(const char *base, struct db_account *acc)
{
	struct idx_add *items = tccalloc(DB_BUILD_BATCH, sizeof(*items));
	char err[512];
	double start = now();

	account_new(acc, base, "open", true);
	for (size_t i = 0; i < opts.open_n;) {
		size_t nb = opts.open_n - i < DB_BUILD_BATCH ? opts.open_n - i : DB_BUILD_BATCH;

		memset(items, 0, nb * sizeof(*items));
		for (size_t k = 0; k < nb; k++) {
			items[k].w = spool_write(acc->spool, i + k, &items[k].prefix_len);
			items[k].mailbox_id = acc->inbox;
		}
		add_or_die(acc->a, items, nb);
		for (size_t k = 0; k < nb; k++)
			spool_done(&items[k].w);
		i += nb;
	}
	idx_account_close(&acc->a);
	if (maildir_syncfs(acc->dir, err, sizeof(err)) < 0)
		die("%s", err);
	fprintf(stderr, "deliverbench: built %zu messages in %.1f s\n", opts.open_n, now() - start);
	tcfree(items);
}

/* Drop index.tcb's pages from the page cache (it is clean after close). */
static void
drop_cache(const char *dir)
{
	char p[4400];
	int fd;

	path_join(p, sizeof(p), dir, "index.tcb");
	fd = open(p, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		die("open %s: %s", p, strerror(errno));
	if (fdatasync(fd) < 0)
		die("fdatasync %s: %s", p, strerror(errno));
	(void)posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
	close(fd);
}

/* Open the account and look its INBOX up; seconds. The account stays open in *a_r. */
static double
timed_open(const char *dir, struct idx_account **a_r, uint32_t *inbox_r)
{
	struct idx_options o = {.host = DB_HOST};
	double start = now();
	char err[512];

	if (idx_account_open(dir, &o, a_r, err, sizeof(err)) < 0)
		die("open account: %s", err);
	*inbox_r = lookup_inbox(*a_r);
	return now() - start;
}

static int
cmp_double(const void *x, const void *y)
{
	double a = *(const double *)x, b = *(const double *)y;

	return a < b ? -1 : a > b;
}

static void
open_test(const char *base)
{
	struct db_account acc;
	struct idx_account *a;
	struct idx_uidstate *uids = NULL;
	double warm[DB_OPEN_REPEAT], cold, t;
	uint32_t inbox;
	size_t nuids = 0;
	char err[512];

	build_big(base, &acc);
	print_index_size("batch", acc.dir, opts.open_n);
	drop_cache(acc.dir);
	cold = timed_open(acc.dir, &a, &inbox);
	idx_account_close(&a);
	for (int i = 0; i < DB_OPEN_REPEAT; i++) {
		warm[i] = timed_open(acc.dir, &a, &inbox);
		idx_account_close(&a);
	}
	qsort(warm, DB_OPEN_REPEAT, sizeof(warm[0]), cmp_double);
	printf("open cold %zu msgs %.2f ms\n", opts.open_n, cold * 1e3);
	printf("open warm %zu msgs %.2f ms\n", opts.open_n, warm[DB_OPEN_REPEAT / 2] * 1e3);
	(void)timed_open(acc.dir, &a, &inbox);
	t = now();
	if (idx_mailbox_uids(a, inbox, &uids, &nuids, err, sizeof(err)) < 0)
		die("uids: %s", err);
	t = now() - t;
	if (nuids != opts.open_n)
		die("INBOX has %zu messages, expected %zu", nuids, opts.open_n);
	printf("open uids %zu msgs %.2f ms\n", opts.open_n, t * 1e3);
	fflush(stdout);
	free(uids);
	idx_account_close(&a);
}

/* ---- main ---- */

static size_t
parse_count(const char *s, const char *what)
{
	char *end;
	unsigned long long v;

	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno != 0 || end == s || *end != '\0' || v > 100000000ULL)
		die("bad %s: %s", what, s);
	return (size_t)v;
}

static void
usage(void)
{
	fprintf(stderr, "usage: deliverbench -d DIR [-n N] [-k 8,32] [-o N] [-r N] [-s BYTES] [-L]\n");
	exit(2);
}

int
main(int argc, char **argv)
{
	char raw[4200];
	double raw1, raw2;
	int c;

	opts.n = 10000;
	opts.open_n = 100000;
	opts.raw_n = 2000;
	opts.size = 4096;
	opts.lookup = true;
	opts.senders[0] = 8;
	opts.senders[1] = 32;
	opts.nsenders = 2;
	while ((c = getopt(argc, argv, "d:n:k:o:r:s:L")) != -1) {
		switch (c) {
		case 'd':
			opts.dir = optarg;
			break;
		case 'n':
			opts.n = parse_count(optarg, "-n");
			break;
		case 'o':
			opts.open_n = parse_count(optarg, "-o");
			break;
		case 'r':
			opts.raw_n = parse_count(optarg, "-r");
			break;
		case 's':
			opts.size = parse_count(optarg, "-s");
			break;
		case 'L':
			opts.lookup = false;
			break;
		case 'k': {
			char *s = tcstrdup(optarg), *save = NULL;
			opts.nsenders = 0;
			for (char *t = strtok_r(s, ",", &save); t != NULL; t = strtok_r(NULL, ",", &save)) {
				size_t k = parse_count(t, "-k");
				if (k == 0)
					continue; /* "-k 0": no group mode */
				if (opts.nsenders == DB_MAX_MODES || k > DB_MAX_SENDERS)
					die("bad -k: %s", optarg);
				opts.senders[opts.nsenders++] = (int)k;
			}
			tcfree(s);
			break;
		}
		default:
			usage();
		}
	}
	if (opts.dir == NULL || optind != argc || opts.n == 0 || opts.size < 512 || opts.size > (1 << 24))
		usage();

	path_join(raw, sizeof(raw), opts.dir, "raw1");
	raw1 = raw_limit(raw, opts.raw_n);
	printf("deliver raw %zu msgs %.1f msg/s\n", opts.raw_n, raw1);
	fflush(stdout);
	mode_seq(opts.dir);
	for (size_t i = 0; i < opts.nsenders; i++)
		mode_group(opts.dir, opts.senders[i]);
	path_join(raw, sizeof(raw), opts.dir, "raw2");
	raw2 = raw_limit(raw, opts.raw_n);
	printf("deliver raw %zu msgs %.1f msg/s\n", opts.raw_n, raw2);
	fflush(stdout);
	if (opts.open_n > 0)
		open_test(opts.dir);
	return 0;
}

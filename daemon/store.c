/*
 * store: storage threads and the account registry.
 *
 * Each thread has a queue of jobs. A thread takes one unit at a time: a job,
 * or the "add" jobs of one account queued before its next other job, which
 * become one idx_add call (group commit); the rest stays in the queue, where
 * a refusal at shutdown still finds it. Finished jobs go to one completion queue that an event on the loop
 * thread drains, running the done callbacks there. An account is pinned to
 * one thread for its lifetime, which is what serializes its writes.
 */
#define _GNU_SOURCE 1
#include "daemon/store.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "daemon/log.h"
#include "maildir/maildir.h"

#define STORE_DEFAULT_THREADS 2
/* Threads that fdatasync message files: the disk serves several flushes at once. */
#define STORE_SYNC_THREADS 4
/* Upper bound on messages in one group commit; more wait for the next batch. */
#define STORE_BATCH_MAX 512
/* A storage thread idle this long checkpoints the delivery logs of its accounts
 * (idx_checkpoint): their files reach the disk soon, not at the next full log. */
#define STORE_CHECKPOINT_IDLE_MS 1000
/* Functions told when an account that could not be opened was reopened. */
#define STORE_REOPEN_HOOKS 4

enum job_kind { JOB_WORK, JOB_ADD, JOB_DURABLE };

/* A committed batch waiting to become durable (JOB_DURABLE, on a sync thread). */
struct durable {
	struct idx_durable d;
	struct job **jobs;
	size_t n;
};

struct job {
	struct job *next;
	enum job_kind kind;
	struct store_account *sa;
	store_work_fn work;
	store_done_fn done;
	void *arg;
	struct idx_add *items;
	size_t nitems;
	store_prepare_fn prepare; /* run once on the storage thread before the add */
	bool prepared;            /* prepare ran, items marked after the sync */
	const struct maildir_writer *syncw; /* file to sync on a sync thread first */
	bool started;                       /* JOB_ADD: taken into a batch (counted in adds_running) */
	bool sync_tried;                    /* a sync thread handled syncw */
	bool synced;                        /* ... and synced it */
	char sync_err[160];                 /* why syncing syncw failed ("" fine) */
	struct durable *dur;                /* JOB_DURABLE */
};

struct worker {
	struct store *st;
	pthread_t thread;
	pthread_mutex_t mu;
	pthread_cond_t cond;
	struct job *head, *tail;
	bool stop;
	bool started;
	bool busy; /* working on jobs (under mu) */
	/* Accounts with deliveries since their last checkpoint (worker thread only). */
	struct store_account **dirty;
	size_t ndirty;
};

struct store_account {
	struct store *st;
	char *name;
	struct worker *w;
	struct idx_account *idx; /* storage thread only */
	char error[512];         /* storage thread only */
	bool open_tried;         /* storage thread only */
	bool log_dirty;          /* storage thread only: in its worker's dirty list */
	atomic_bool unusable;    /* cannot be opened, or its index takes no writes (set by a storage or sync thread) */
	bool open_failed;        /* storage thread only: the last open failed (so unusable is set) */
	int refs;                /* loop thread only */
	struct store_account *next;
};

struct store {
	struct event_base *base;
	const struct config *cfg;
	pthread_mutex_t cfgmu; /* cfg pointer, read by storage threads at account open */
	struct worker *workers;
	int nworkers;
	int next_worker;
	struct store_account *accounts; /* loop thread only */
	/* sync threads */
	pthread_mutex_t syncmu;
	pthread_cond_t synccond;
	struct job *sync_head, *sync_tail;
	bool sync_stop;
	pthread_t sync_threads[STORE_SYNC_THREADS];
	int nsync;
	int sync_alive; /* sync threads still taking jobs (syncmu) */
	/*
	 * Set when the server stops taking mail (store_refuse_adds): an add that
	 * has not started fails instead of running. Once the loop has stopped
	 * nobody can tell the client that its message was stored, and a client
	 * without an answer sends the message again.
	 */
	atomic_bool refusing;
	atomic_int adds_running; /* add jobs started, their done callback not yet run */
	/* completions */
	pthread_mutex_t donemu;
	struct job *done_head, *done_tail;
	struct event *done_ev;
	struct {
		void (*fn)(struct store_account *sa, void *arg);
		void *arg;
	} reopened[STORE_REOPEN_HOOKS]; /* loop thread */
	int nreopened;
};

char *
store_account_dir(const struct config *cfg, const char *name)
{
	return xasprintf("%s/accounts/%s", cfg->data_dir, name);
}

void
store_account_options(const struct config *cfg, const char *name, struct idx_options *o)
{
	const struct config_account *acc = config_account_find(cfg, name);
	const struct config_initial_mailboxes *im = &cfg->st.initial_mailboxes;

	memset(o, 0, sizeof(*o));
	o->host = cfg->st.hostname;
	o->sent = im->special_use.sent;
	o->archive = im->special_use.archive;
	o->trash = im->special_use.trash;
	o->drafts = im->special_use.draft;
	o->junk = im->special_use.junk;
	o->regular = (const char *const *)im->regular.v;
	o->nregular = im->regular.n;
	o->quota = acc != NULL && acc->quota_message_size > 0 ? (uint64_t)acc->quota_message_size : 0;
}

static void
account_open(struct store_account *sa)
{
	struct store *st = sa->st;
	struct idx_options opts;
	char *dir;

	sa->open_tried = true;
	pthread_mutex_lock(&st->cfgmu);
	dir = store_account_dir(st->cfg, sa->name);
	store_account_options(st->cfg, sa->name, &opts);
	if (mkdir_p(dir, 0700) < 0) {
		snprintf(sa->error, sizeof(sa->error), "creating %s: %m", dir);
	} else if (idx_account_open(dir, &opts, &sa->idx, sa->error, sizeof(sa->error)) < 0) {
		sa->idx = NULL;
	}
	pthread_mutex_unlock(&st->cfgmu);
	if (sa->idx == NULL) {
		sa->open_failed = true;
		atomic_store(&sa->unusable, true);
		log_error("store", 0,
		    "cannot open account: its mail is refused until it is repaired and reopened (mox reopenaccount) "
		    "or the server restarts",
		    "account", sa->name, "err", sa->error);
	} else {
		if (sa->open_failed) {
			sa->error[0] = '\0';
			sa->open_failed = false;
			atomic_store(&sa->unusable, false);
			log_info("store", 0, "account opened after an earlier failure: its mail is accepted again", "account",
			    sa->name);
		}
		struct idx_account_info info;
		char added[24], restored[24];
		if (idx_account_info(sa->idx, &info, NULL, 0) < 0)
			memset(&info, 0, sizeof(info));
		if (info.wal_error[0] != '\0')
			log_error("store", 0, "no delivery log for this account: deliveries take the slower path",
			    "account", sa->name, "err", info.wal_error);
		if (info.wal_applied > 0 || info.wal_restored > 0) {
			snprintf(added, sizeof(added), "%llu", (unsigned long long)info.wal_applied);
			snprintf(restored, sizeof(restored), "%llu", (unsigned long long)info.wal_restored);
			log_info("store", 0, "delivery log replayed after a crash", "account", sa->name, "added", added,
			    "restored", restored);
		}
		if (info.tc_wal_cut > 0) {
			char cut[24];
			snprintf(cut, sizeof(cut), "%llu", (unsigned long long)info.tc_wal_cut);
			log_info("store", 0, "index rollback log ended in a torn entry (a crash while writing it): cut",
			    "account", sa->name, "bytes", cut);
		}
		log_debug("store", 0, "account opened", "account", sa->name);
	}
	free(dir);
}

static void *sync_main(void *arg);

static void
complete(struct store *st, struct job *j)
{
	pthread_mutex_lock(&st->donemu);
	j->next = NULL;
	if (st->done_tail)
		st->done_tail->next = j;
	else
		st->done_head = j;
	st->done_tail = j;
	pthread_mutex_unlock(&st->donemu);
	event_active(st->done_ev, EV_READ, 0);
}

/*
 * After a sync thread handled the job's file (and prepare filled the items):
 * items on that file are synced, or fail when the sync did.
 */
static void
job_synced(struct job *j)
{
	if (j->syncw == NULL || !j->sync_tried)
		return; /* idx_add syncs it, in parallel with its own work */
	for (size_t i = 0; i < j->nitems; i++) {
		struct idx_add *it = &j->items[i];
		if (it->w != j->syncw)
			continue;
		if (j->synced) {
			it->synced = true;
		} else {
			it->result = -1;
			it->error = IDX_E_INTERNAL;
			snprintf(it->err_r, sizeof(it->err_r), "%s", j->sync_err);
		}
	}
}

/*
 * An add that will not run because the server stops: every item fails
 * (temporarily) and the caller's prepare sees no account (store_account_error
 * says why). Runs on whichever thread holds the job; nothing else does.
 */
static void
add_refuse(struct job *j)
{
	if (!j->prepared) {
		if (j->prepare != NULL)
			j->nitems = j->prepare(j->sa, NULL, j->arg);
		j->prepared = true;
	}
	for (size_t k = 0; k < j->nitems; k++) {
		j->items[k].result = -1;
		j->items[k].error = IDX_E_INTERNAL;
		snprintf(j->items[k].err_r, sizeof(j->items[k].err_r), "server shutting down");
	}
}

/* Run a run of add jobs of one account as one idx_add. */
/* After a failed add or sync (any thread): an index that takes no more writes makes the account unusable. */
static void
note_unwritable(struct store_account *sa)
{
	if (sa->idx != NULL && !idx_account_writable(sa->idx) && !atomic_exchange(&sa->unusable, true))
		log_error("store", 0, "account refuses deliveries until the server is restarted", "account", sa->name);
}

static void
run_adds(struct store_account *sa, struct job **jobs, size_t njobs, struct idx_durable *dur)
{
	size_t total = 0, k = 0;
	struct idx_add *all;
	char err[512];

	for (size_t i = 0; i < njobs; i++)
		total += jobs[i]->nitems;
	all = xcalloc(total ? total : 1, sizeof(*all));
	for (size_t i = 0; i < njobs; i++) {
		/* Items that already failed (their file could not be synced) stay out. */
		for (size_t m = 0; m < jobs[i]->nitems; m++)
			if (jobs[i]->items[m].result >= 0)
				all[k++] = jobs[i]->items[m];
	}
	total = k;
	if (total == 0) {
		free(all);
		return;
	}
	if (sa->idx == NULL || idx_add_nosync(sa->idx, all, total, dur, err, sizeof(err)) < 0) {
		const char *why = sa->idx == NULL ? sa->error : err;
		for (size_t i = 0; i < total; i++) {
			if (all[i].result > 0)
				continue;
			all[i].result = -1;
			all[i].error = IDX_E_INTERNAL;
			snprintf(all[i].err_r, sizeof(all[i].err_r), "%.150s", why);
		}
		log_error("store", 0, "adding messages failed", "account", sa->name, "err", why);
		note_unwritable(sa);
	}
	k = 0;
	for (size_t i = 0; i < njobs; i++)
		for (size_t m = 0; m < jobs[i]->nitems; m++)
			if (jobs[i]->items[m].result >= 0)
				jobs[i]->items[m] = all[k++];
	free(all);
}

/* Wait until a committed batch is durable, then complete its jobs (any thread). */
static void
run_durable(struct store *st, struct job *c)
{
	struct durable *d = c->dur;
	char err[256];

	if (idx_durable_wait(c->sa->idx, &d->d, err, sizeof(err)) < 0) {
		log_error("store", 0, "messages committed but not durable: not acknowledged", "account", c->sa->name,
		    "err", err);
		note_unwritable(c->sa);
		for (size_t i = 0; i < d->n; i++) {
			for (size_t k = 0; k < d->jobs[i]->nitems; k++) {
				struct idx_add *it = &d->jobs[i]->items[k];
				if (it->result <= 0)
					continue;
				it->result = -1;
				it->error = IDX_E_INTERNAL;
				snprintf(it->err_r, sizeof(it->err_r), "not durable: %.140s", err);
			}
		}
	}
	for (size_t i = 0; i < d->n; i++)
		complete(st, d->jobs[i]);
	free(d->jobs);
	free(d);
	free(c);
}

/* Hand a committed batch to a sync thread; inline once they are gone (shutdown). */
static void
durable_push(struct store *st, struct job *c)
{
	pthread_mutex_lock(&st->syncmu);
	if (st->sync_alive == 0) {
		pthread_mutex_unlock(&st->syncmu);
		run_durable(st, c);
		return;
	}
	c->next = NULL;
	if (st->sync_tail)
		st->sync_tail->next = c;
	else
		st->sync_head = c;
	st->sync_tail = c;
	pthread_cond_signal(&st->synccond);
	pthread_mutex_unlock(&st->syncmu);
}

/* The worker had nothing to do for a while: checkpoint the accounts that took deliveries. */
static void
checkpoint_idle(struct worker *w)
{
	for (size_t i = 0; i < w->ndirty; i++) {
		struct store_account *sa = w->dirty[i];
		char err[256];

		sa->log_dirty = false;
		/* The worker's own wait was the idle time. A log that failed earlier is
		 * skipped (said once, when it failed), not reported every idle second. */
		if (sa->idx != NULL && idx_checkpoint_idle(sa->idx, 0, err, sizeof(err)) < 0)
			log_error("store", 0, "delivery log checkpoint failed: new deliveries take the slower path",
			    "account", sa->name, "err", err);
	}
	w->ndirty = 0;
}

/*
 * Under w->mu, with w->head non-empty: take the next unit of work into
 * batch. That is the first job, and when it is an add, the adds of the same
 * account queued after it (up to cap), in order, stopping at another job of
 * that account. Adds are marked started and counted in adds_running before
 * the lock is released, so a refusal (store_refuse_adds) either still finds
 * an add in the queue or the shutdown waits for its answer. While refusing,
 * an add is taken alone and not started. Returns the number taken.
 */
static size_t
take_locked(struct worker *w, struct job **batch, size_t cap)
{
	struct job *j = w->head, *prev = NULL;
	size_t n = 0;

	w->head = j->next;
	if (w->head == NULL)
		w->tail = NULL;
	j->next = NULL;
	batch[n++] = j;
	if (j->kind != JOB_ADD || atomic_load(&w->st->refusing))
		return n;
	for (struct job *c = w->head, *next; c != NULL && n < cap; c = next) {
		next = c->next;
		if (c->sa != j->sa) {
			prev = c;
			continue;
		}
		if (c->kind != JOB_ADD)
			break; /* keep the order of an account's jobs */
		if (prev != NULL)
			prev->next = next;
		else
			w->head = next;
		if (w->tail == c)
			w->tail = prev;
		c->next = NULL;
		batch[n++] = c;
	}
	for (size_t i = 0; i < n; i++)
		batch[i]->started = true;
	atomic_fetch_add(&w->st->adds_running, (int)n);
	return n;
}

/*
 * Adds taken by take_locked that did not fit in the batch go back to the
 * front of the queue, in order (no other job of their account is before
 * them), no longer started; when a refusal came meanwhile they are refused
 * here, and their completion ends their count in adds_running.
 */
static void
give_back(struct worker *w, struct job **jobs, size_t n)
{
	struct store *st = w->st;

	pthread_mutex_lock(&w->mu);
	if (!atomic_load(&st->refusing)) {
		for (size_t i = 0; i < n; i++) {
			jobs[i]->started = false;
			jobs[i]->next = i + 1 < n ? jobs[i + 1] : w->head;
		}
		if (w->head == NULL)
			w->tail = jobs[n - 1];
		w->head = jobs[0];
		atomic_fetch_sub(&st->adds_running, (int)n);
		pthread_mutex_unlock(&w->mu);
		return;
	}
	pthread_mutex_unlock(&w->mu);
	for (size_t i = 0; i < n; i++) {
		add_refuse(jobs[i]);
		complete(st, jobs[i]);
	}
}

static void *
worker_main(void *arg)
{
	struct worker *w = arg;
	struct store *st = w->st;

	for (;;) {
		struct job *batch[64];
		size_t n;

		pthread_mutex_lock(&w->mu);
		w->busy = false;
		while (w->head == NULL && !w->stop) {
			if (w->ndirty == 0) {
				pthread_cond_wait(&w->cond, &w->mu);
				continue;
			}
			struct timespec until;
			clock_gettime(CLOCK_REALTIME, &until);
			until.tv_sec += STORE_CHECKPOINT_IDLE_MS / 1000;
			until.tv_nsec += (STORE_CHECKPOINT_IDLE_MS % 1000) * 1000000L;
			if (until.tv_nsec >= 1000000000L) {
				until.tv_sec++;
				until.tv_nsec -= 1000000000L;
			}
			if (pthread_cond_timedwait(&w->cond, &w->mu, &until) == ETIMEDOUT && w->head == NULL) {
				pthread_mutex_unlock(&w->mu);
				checkpoint_idle(w);
				pthread_mutex_lock(&w->mu);
			}
		}
		if (w->head == NULL) { /* stopping, and nothing is left */
			pthread_mutex_unlock(&w->mu);
			break;
		}
		/* One unit at a time: what stays queued can still be refused at shutdown. */
		n = take_locked(w, batch, ARRAY_LEN(batch));
		w->busy = true;
		pthread_mutex_unlock(&w->mu);

		struct job *j = batch[0];
		struct store_account *sa = j->sa;
		if (!sa->open_tried)
			account_open(sa);
		if (j->kind == JOB_WORK) {
			j->work(sa, sa->idx, j->arg);
			complete(st, j);
			continue;
		}
		if (!j->started) {
			add_refuse(j);
			complete(st, j);
			continue;
		}
		/* Prepare the adds taken, then group as many as the batch limit allows. */
		size_t nb = 0, nitems = 0;
		for (size_t i = 0; i < n; i++) {
			struct job *c = batch[i];
			if (!c->prepared) {
				if (c->prepare != NULL)
					c->nitems = c->prepare(sa, sa->idx, c->arg);
				c->prepared = true;
				job_synced(c);
			}
			if (nb == i && (nb == 0 || nitems + c->nitems <= STORE_BATCH_MAX)) {
				nb++;
				nitems += c->nitems;
			}
		}
		if (nb < n)
			give_back(w, batch + nb, n - nb);
		struct idx_durable dur = {0};
		run_adds(sa, batch, nb, &dur);
		if (sa->idx != NULL && !sa->log_dirty) {
			w->dirty = xrealloc(w->dirty, (w->ndirty + 1) * sizeof(*w->dirty));
			w->dirty[w->ndirty++] = sa;
			sa->log_dirty = true;
		}
		if (dur.commit == 0 && dur.ndirs == 0) {
			for (size_t i = 0; i < nb; i++)
				complete(st, batch[i]);
		} else {
			/* The account's thread goes on; a sync thread makes the batch durable. */
			struct job *c = xcalloc(1, sizeof(*c));
			c->kind = JOB_DURABLE;
			c->sa = sa;
			c->dur = xcalloc(1, sizeof(*c->dur));
			c->dur->d = dur;
			c->dur->jobs = xmalloc(nb * sizeof(*c->dur->jobs));
			memcpy(c->dur->jobs, batch, nb * sizeof(*batch));
			c->dur->n = nb;
			durable_push(st, c);
		}
	}
	return NULL;
}

static void
done_cb(evutil_socket_t fd, short what, void *arg)
{
	struct store *st = arg;
	struct job *list;

	pthread_mutex_lock(&st->donemu);
	list = st->done_head;
	st->done_head = st->done_tail = NULL;
	pthread_mutex_unlock(&st->donemu);
	while (list != NULL) {
		struct job *j = list;
		list = j->next;
		if (j->done != NULL)
			j->done(j->arg);
		if (j->kind == JOB_ADD && j->started)
			atomic_fetch_sub(&st->adds_running, 1); /* after its answer was queued */
		store_account_put(&j->sa);
		free(j);
	}
}

bool
store_adds_running(struct store *st)
{
	return atomic_load(&st->adds_running) > 0;
}

struct store *
store_new(struct event_base *base, const struct config *cfg, int nthreads)
{
	struct store *st = xcalloc(1, sizeof(*st));

	st->base = base;
	st->cfg = cfg;
	pthread_mutex_init(&st->cfgmu, NULL);
	pthread_mutex_init(&st->donemu, NULL);
	st->done_ev = event_new(base, -1, 0, done_cb, st);
	if (st->done_ev == NULL) {
		free(st);
		return NULL;
	}
	pthread_mutex_init(&st->syncmu, NULL);
	pthread_cond_init(&st->synccond, NULL);
	for (int i = 0; i < STORE_SYNC_THREADS; i++) {
		pthread_mutex_lock(&st->syncmu);
		st->sync_alive++;
		pthread_mutex_unlock(&st->syncmu);
		if (pthread_create(&st->sync_threads[i], NULL, sync_main, st) != 0) {
			pthread_mutex_lock(&st->syncmu);
			st->sync_alive--;
			pthread_mutex_unlock(&st->syncmu);
			break; /* fewer sync threads; with none the account threads sync */
		}
		st->nsync++;
	}
	st->nworkers = nthreads > 0 ? nthreads : STORE_DEFAULT_THREADS;
	st->workers = xcalloc((size_t)st->nworkers, sizeof(*st->workers));
	for (int i = 0; i < st->nworkers; i++) {
		struct worker *w = &st->workers[i];
		w->st = st;
		pthread_mutex_init(&w->mu, NULL);
		pthread_cond_init(&w->cond, NULL);
		if (pthread_create(&w->thread, NULL, worker_main, w) != 0) {
			log_error("store", 0, "cannot start storage thread");
			store_free(&st);
			return NULL;
		}
		w->started = true;
	}
	return st;
}

/*
 * Move the adds of the queue *head..*tail (its lock held) to the list ending
 * at rt, keeping the other jobs in order; returns the list's new end.
 */
static struct job **
take_adds(struct job **head, struct job **tail, struct job **rt)
{
	struct job **pp = head;

	*tail = NULL;
	while (*pp != NULL) {
		struct job *j = *pp;
		if (j->kind == JOB_ADD) {
			*pp = j->next;
			j->next = NULL;
			*rt = j;
			rt = &j->next;
		} else {
			*tail = j;
			pp = &j->next;
		}
	}
	return rt;
}

void
store_refuse_adds(struct store *st)
{
	struct job *refused = NULL, **rt = &refused;

	atomic_store(&st->refusing, true);
	/* Adds still queued behind other work: answered now, while the loop runs. */
	for (int i = 0; i < st->nworkers; i++) {
		struct worker *w = &st->workers[i];

		pthread_mutex_lock(&w->mu);
		rt = take_adds(&w->head, &w->tail, rt);
		pthread_mutex_unlock(&w->mu);
	}
	/* Adds whose file still waits for a sync thread. */
	pthread_mutex_lock(&st->syncmu);
	rt = take_adds(&st->sync_head, &st->sync_tail, rt);
	pthread_mutex_unlock(&st->syncmu);
	while (refused != NULL) {
		struct job *j = refused;
		refused = j->next;
		add_refuse(j);
		complete(st, j);
	}
}

void
store_free(struct store **stp)
{
	struct store *st = *stp;

	if (st == NULL)
		return;
	/* The loop has stopped: an add that ran now could not be answered. */
	atomic_store(&st->refusing, true);
	/* Sync threads first: they finish their queue and hand it to the workers. */
	pthread_mutex_lock(&st->syncmu);
	st->sync_stop = true;
	pthread_cond_broadcast(&st->synccond);
	pthread_mutex_unlock(&st->syncmu);
	for (int i = 0; i < st->nsync; i++)
		pthread_join(st->sync_threads[i], NULL);
	st->nsync = 0;
	for (int i = 0; i < st->nworkers; i++) {
		struct worker *w = &st->workers[i];
		if (!w->started)
			continue;
		pthread_mutex_lock(&w->mu);
		w->stop = true;
		pthread_cond_signal(&w->cond);
		pthread_mutex_unlock(&w->mu);
		pthread_join(w->thread, NULL);
	}
	/* Completions still queued: run them so callers can release their state.
	 * A completion may queue more work (the next step of a delivery or an
	 * import): with the threads gone it completes as if the account could
	 * not be opened, so every caller still gets its done callback. */
	for (;;) {
		bool any = false;
		done_cb(-1, 0, st);
		for (int i = 0; i < st->nworkers; i++) {
			struct job *list = st->workers[i].head;
			st->workers[i].head = st->workers[i].tail = NULL;
			while (list != NULL) {
				struct job *j = list;
				list = j->next;
				snprintf(j->sa->error, sizeof(j->sa->error), "server shutting down");
				if (j->kind == JOB_WORK) {
					j->work(j->sa, NULL, j->arg);
				} else {
					if (j->prepare != NULL)
						j->nitems = j->prepare(j->sa, NULL, j->arg);
					for (size_t k = 0; k < j->nitems; k++) {
						j->items[k].result = -1;
						j->items[k].error = IDX_E_INTERNAL;
						snprintf(j->items[k].err_r, sizeof(j->items[k].err_r), "server shutting down");
					}
				}
				complete(st, j);
				any = true;
			}
		}
		pthread_mutex_lock(&st->donemu);
		any |= st->done_head != NULL; /* an add refused at once by worker_push */
		pthread_mutex_unlock(&st->donemu);
		if (!any)
			break;
	}
	for (struct store_account *sa = st->accounts, *next; sa != NULL; sa = next) {
		char err[256];

		next = sa->next;
		if (sa->idx != NULL && idx_checkpoint(sa->idx, err, sizeof(err)) < 0)
			log_error("store", 0, "delivery log checkpoint at shutdown failed: the next start replays the log",
			    "account", sa->name, "err", err);
		idx_account_close(&sa->idx);
		free(sa->name);
		free(sa);
	}
	for (int i = 0; i < st->nworkers; i++) {
		pthread_mutex_destroy(&st->workers[i].mu);
		pthread_cond_destroy(&st->workers[i].cond);
		free(st->workers[i].dirty);
	}
	free(st->workers);
	event_free(st->done_ev);
	pthread_mutex_destroy(&st->cfgmu);
	pthread_mutex_destroy(&st->donemu);
	pthread_mutex_destroy(&st->syncmu);
	pthread_cond_destroy(&st->synccond);
	free(st);
	*stp = NULL;
}

void
store_set_config(struct store *st, const struct config *cfg)
{
	pthread_mutex_lock(&st->cfgmu);
	st->cfg = cfg;
	pthread_mutex_unlock(&st->cfgmu);
}

struct store_account *
store_account_get(struct store *st, const char *name)
{
	struct store_account *sa;

	for (sa = st->accounts; sa != NULL; sa = sa->next) {
		if (strcmp(sa->name, name) == 0) {
			sa->refs++;
			return sa;
		}
	}
	if (config_account_find(st->cfg, name) == NULL)
		return NULL;
	sa = xcalloc(1, sizeof(*sa));
	sa->st = st;
	sa->name = xstrdup(name);
	sa->w = &st->workers[st->next_worker++ % st->nworkers];
	sa->refs = 1;
	sa->next = st->accounts;
	st->accounts = sa;
	return sa;
}

void
store_account_put(struct store_account **sap)
{
	struct store_account *sa = *sap;

	if (sa == NULL)
		return;
	/* Accounts stay open (cached) until the store is freed. */
	if (sa->refs > 0)
		sa->refs--;
	*sap = NULL;
}

const char *
store_account_name(const struct store_account *sa)
{
	return sa->name;
}

/* A reopen: the work on the account's thread, its result for the loop thread. */
struct reopen {
	struct store_account *sa;
	store_reopen_fn done;
	void *arg;
	int r;
	char err[512];
};

static void
reopen_work(struct store_account *sa, struct idx_account *a, void *arg)
{
	struct reopen *ro = arg;

	if (atomic_load(&sa->st->refusing)) {
		ro->r = -1;
		snprintf(ro->err, sizeof(ro->err), "server shutting down");
	} else if (sa->idx != NULL) {
		ro->r = 0;
		if (atomic_load(&sa->unusable))
			snprintf(ro->err, sizeof(ro->err), "the account's index takes no writes: restart the server");
	} else {
		account_open(sa);
		ro->r = sa->idx != NULL ? 1 : -1;
		if (ro->r < 0)
			snprintf(ro->err, sizeof(ro->err), "%s", sa->error);
	}
}

static void
reopen_done(void *arg)
{
	struct reopen *ro = arg;
	struct store *st = ro->sa->st;

	/* Not while stopping: store_free's drain runs this after the loop, when no new work may start. */
	if (ro->r > 0 && !atomic_load(&st->refusing))
		for (int i = 0; i < st->nreopened; i++)
			st->reopened[i].fn(ro->sa, st->reopened[i].arg);
	if (ro->done != NULL)
		ro->done(ro->sa, ro->r, ro->err[0] ? ro->err : NULL, ro->arg);
	free(ro);
}

void
store_account_reopen(struct store_account *sa, store_reopen_fn done, void *arg)
{
	struct reopen *ro = xcalloc(1, sizeof(*ro));

	ro->sa = sa;
	ro->done = done;
	ro->arg = arg;
	store_submit(sa, reopen_work, reopen_done, ro); /* the job's reference keeps sa until reopen_done */
}

void
store_add_reopen_hook(struct store *st, void (*fn)(struct store_account *sa, void *arg), void *arg)
{
	if (st->nreopened == STORE_REOPEN_HOOKS)
		abort(); /* a fixed set of callers */
	st->reopened[st->nreopened].fn = fn;
	st->reopened[st->nreopened].arg = arg;
	st->nreopened++;
}

bool
store_account_usable(const struct store_account *sa)
{
	return !atomic_load(&sa->unusable);
}

const char *
store_account_error(const struct store_account *sa)
{
	/* Checked first: a refused job's prepare runs on another thread than the account's. */
	if (atomic_load(&sa->st->refusing))
		return "server shutting down";
	return sa->error;
}

/*
 * Hand j to its account's thread (any thread). While the store refuses adds,
 * an add is refused here instead; the check under the queue lock pairs with
 * store_refuse_adds, which sets refusing before it takes each lock, so an
 * add is either found in the queue by it or refused here. An add a sync
 * thread counted as started stops counting once it is in the queue (the
 * account's thread counts it again when it takes it), or when its refusal
 * has been answered (done_cb).
 */
static void
worker_push(struct job *j)
{
	struct worker *w = j->sa->w;
	struct store *st = j->sa->st;

	pthread_mutex_lock(&w->mu);
	if (j->kind == JOB_ADD && atomic_load(&st->refusing)) {
		pthread_mutex_unlock(&w->mu);
		add_refuse(j);
		complete(st, j);
		return;
	}
	if (j->started) {
		j->started = false;
		atomic_fetch_sub(&st->adds_running, 1);
	}
	if (w->tail)
		w->tail->next = j;
	else
		w->head = j;
	w->tail = j;
	pthread_cond_signal(&w->cond);
	pthread_mutex_unlock(&w->mu);
}

/* Loop thread: queue j, through a sync thread when it has a file to sync. */
static void
enqueue(struct store_account *sa, struct job *j)
{
	struct store *st = sa->st;

	sa->refs++; /* the job holds a reference until its completion ran */
	j->sa = sa;
	/*
	 * An idle account thread takes the file at once and syncs it while it
	 * writes the records (idx_add); a busy one would make the job wait, so
	 * meanwhile a sync thread syncs the file.
	 */
	bool busy = false;
	if (j->syncw != NULL && st->nsync > 0 && !atomic_load(&st->refusing)) { /* refused: no sync first */
		pthread_mutex_lock(&sa->w->mu);
		busy = sa->w->busy || sa->w->head != NULL;
		pthread_mutex_unlock(&sa->w->mu);
	}
	if (!busy) {
		worker_push(j);
		return;
	}
	pthread_mutex_lock(&st->syncmu);
	j->next = NULL;
	if (st->sync_tail)
		st->sync_tail->next = j;
	else
		st->sync_head = j;
	st->sync_tail = j;
	pthread_cond_signal(&st->synccond);
	pthread_mutex_unlock(&st->syncmu);
}

static void *
sync_main(void *arg)
{
	struct store *st = arg;

	for (;;) {
		struct job *j;

		pthread_mutex_lock(&st->syncmu);
		while (st->sync_head == NULL && !st->sync_stop)
			pthread_cond_wait(&st->synccond, &st->syncmu);
		j = st->sync_head;
		if (j != NULL) {
			st->sync_head = j->next;
			if (st->sync_head == NULL)
				st->sync_tail = NULL;
			if (j->kind == JOB_ADD) {
				/* Out of every queue while its file syncs: a shutdown waits for it. */
				j->started = true;
				atomic_fetch_add(&st->adds_running, 1);
			}
		} else {
			st->sync_alive--; /* stopping and nothing left */
		}
		pthread_mutex_unlock(&st->syncmu);
		if (j == NULL)
			break;
		if (j->kind == JOB_DURABLE) {
			run_durable(st, j);
			continue;
		}
		if (atomic_load(&st->refusing)) {
			j->next = NULL;
			worker_push(j); /* refuses it: no point syncing its file first */
			continue;
		}
		const char *path = maildir_writer_path(j->syncw);
		int fd = open(path, O_RDONLY | O_CLOEXEC);
		j->sync_tried = true;
		if (fd >= 0 && fdatasync(fd) == 0) {
			j->synced = true;
		} else {
			snprintf(j->sync_err, sizeof(j->sync_err), "fdatasync %.100s: %s", path, strerror(errno));
			log_error("store", 0, "cannot sync message file", "path", path, "err", strerror(errno));
		}
		if (fd >= 0)
			close(fd);
		j->next = NULL;
		worker_push(j);
	}
	return NULL;
}

void
store_submit(struct store_account *sa, store_work_fn work, store_done_fn done, void *arg)
{
	struct job *j = xcalloc(1, sizeof(*j));

	j->kind = JOB_WORK;
	j->work = work;
	j->done = done;
	j->arg = arg;
	enqueue(sa, j);
}

void
store_add(struct store_account *sa, struct idx_add *items, size_t n, store_done_fn done, void *arg)
{
	struct job *j = xcalloc(1, sizeof(*j));

	j->kind = JOB_ADD;
	j->items = items;
	j->nitems = n;
	j->done = done;
	j->arg = arg;
	for (size_t i = 0; i < n; i++)
		items[i].result = 0;
	/* One unsynced file for every item (an APPEND), too large for the delivery
	 * log: synced on a sync thread. */
	if (n > 0 && items[0].w != NULL && !items[0].synced && maildir_writer_size(items[0].w) > IDX_LOGGED_MAX) {
		j->syncw = items[0].w;
		for (size_t i = 1; i < n && j->syncw != NULL; i++)
			if (items[i].w != j->syncw || items[i].synced)
				j->syncw = NULL;
	}
	enqueue(sa, j);
}

void
store_add_prepared(struct store_account *sa, struct idx_add *items, size_t n,
    const struct maildir_writer *syncw, store_prepare_fn prepare, store_done_fn done, void *arg)
{
	struct job *j = xcalloc(1, sizeof(*j));

	j->kind = JOB_ADD;
	j->items = items;
	j->nitems = n;
	/* A message the delivery log takes needs no file sync before its add. */
	j->syncw = syncw != NULL && maildir_writer_size(syncw) > IDX_LOGGED_MAX ? syncw : NULL;
	j->prepare = prepare;
	j->done = done;
	j->arg = arg;
	enqueue(sa, j);
}

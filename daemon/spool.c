/*
 * spool: message spool files created ahead of time (see spool.h).
 *
 * One stack of ready writers per host name, under one mutex. The loop
 * thread pops; only the pool's thread pushes and removes, so while the
 * thread works outside the lock a writer it saw in the stack can only have
 * been taken, never replaced by another at the same address.
 * The lock is held for a few loads and stores only: every system call
 * (open, stat, unlink, close, mkdir) runs with it released, so a taker
 * never waits behind the disk.
 * The thread sleeps on a condition variable; a taker wakes it only when the
 * stack is down to half (the thread then refills it in one burst: fewer
 * wake-ups for the taker to pay, and the file system's code and data stay
 * warm on the thread) and it is asleep (a working thread sees the gap on its
 * next pass). Once a second
 * it checks the pooled writers: one whose file is gone (the directory was
 * removed or cleaned) is dropped and replaced, and so are the oldest few
 * older than SPOOL_MAX_AGE_MS (a few at a time: writers made together age
 * together, and the pool should not empty at once). When opening fails (directory missing or not writable, disk
 * full) it recreates the directory and retries after SPOOL_RETRY_MS; takers
 * meanwhile find what is left, then nothing, and open their own.
 */
#define _GNU_SOURCE 1
#include "daemon/spool.h"

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "daemon/log.h"
#include "daemon/util.h"

#define SPOOL_PKG "spool"
/* How often the thread checks the pooled writers' files and ages. */
#define SPOOL_CHECK_MS 1000
/* The wait after a failed open before the next attempt. */
#define SPOOL_RETRY_MS 1000

struct spool_item {
	struct maildir_writer *w;
	int64_t born; /* mono_ms() at creation */
};

struct spool_host {
	char *name;
	struct spool_item *items; /* a stack: items[n - 1] is the newest */
	size_t n;
};

struct spool {
	char *dir;
	unsigned cap;
	struct spool_host hosts[SPOOL_MAX_HOSTS];
	size_t nhosts;

	pthread_mutex_t mu;
	pthread_cond_t cond; /* CLOCK_MONOTONIC */
	pthread_t thread;
	bool stop;     /* spool_free asks the thread to end */
	bool sleeping; /* the thread waits on cond */
	struct spool_stats st;
};

static struct spool_host *
host_find(struct spool *sp, const char *name)
{
	for (size_t i = 0; i < sp->nhosts; i++)
		if (strcmp(sp->hosts[i].name, name) == 0)
			return &sp->hosts[i];
	return NULL;
}

/* A host below its cap (the one with the fewest ready first), or NULL. Under the lock. */
static struct spool_host *
host_wanting(struct spool *sp)
{
	struct spool_host *best = NULL;

	for (size_t i = 0; i < sp->nhosts; i++)
		if (sp->hosts[i].n < sp->cap && (best == NULL || sp->hosts[i].n < best->n))
			best = &sp->hosts[i];
	return best;
}

/* Remove w from h's stack if it is still there. Under the lock. True when removed. */
static bool
host_remove(struct spool_host *h, const struct maildir_writer *w)
{
	for (size_t i = 0; i < h->n; i++) {
		if (h->items[i].w != w)
			continue;
		memmove(&h->items[i], &h->items[i + 1], (h->n - i - 1) * sizeof(h->items[0]));
		h->n--;
		return true;
	}
	return false;
}

static void
deadline(struct timespec *ts, int64_t ms)
{
	clock_gettime(CLOCK_MONOTONIC, ts);
	ts->tv_sec += ms / 1000;
	ts->tv_nsec += (ms % 1000) * 1000000;
	if (ts->tv_nsec >= 1000000000) {
		ts->tv_sec++;
		ts->tv_nsec -= 1000000000;
	}
}

/*
 * Drop the pooled writers of h whose file is gone or that are too old.
 * Called with the lock held; returns with it held, but releases it around
 * every stat and unlink.
 */
static void
check_host(struct spool *sp, struct spool_host *h, int64_t now)
{
	struct spool_item snap[SPOOL_DEFAULT_CAP * 4];
	size_t n = h->n < sizeof(snap) / sizeof(snap[0]) ? h->n : sizeof(snap) / sizeof(snap[0]);
	/* Writers made together age together: a few per check, so the pool never empties at once. */
	unsigned old_left = sp->cap / 4 + 1;

	/* A snapshot: takers may pop while the lock is released. */
	memcpy(snap, h->items, n * sizeof(snap[0]));
	for (size_t i = 0; i < n && !sp->stop; i++) {
		struct maildir_writer *w = snap[i].w;
		bool drop = old_left > 0 && now - snap[i].born > SPOOL_MAX_AGE_MS;
		struct stat sb;

		if (drop)
			old_left--;

		/* Copied under the lock: once it is released a taker may pop w and free it. */
		char path[PATH_MAX];
		snprintf(path, sizeof(path), "%s", maildir_writer_path(w));
		pthread_mutex_unlock(&sp->mu);
		if (!drop && stat(path, &sb) < 0 && (errno == ENOENT || errno == ENOTDIR))
			drop = true;
		pthread_mutex_lock(&sp->mu);
		if (!drop || !host_remove(h, w))
			continue; /* fine, or taken meanwhile: the taker's now */
		sp->st.dropped++;
		pthread_mutex_unlock(&sp->mu);
		maildir_writer_free(&w); /* unlinks the file if it is still there */
		pthread_mutex_lock(&sp->mu);
	}
}

/*
 * Open one writer for h. Called with the lock held; returns with it held.
 * 1 pushed, -1 failed (the caller backs off).
 */
static int
fill_one(struct spool *sp, struct spool_host *h, bool *failing)
{
	struct maildir_writer *w = NULL;
	char err[512];
	int r;

	pthread_mutex_unlock(&sp->mu);
	r = maildir_writer_open(&w, sp->dir, h->name, err, sizeof(err));
	/* The directory may have been removed: it is made again here, off the loop thread. */
	if (r < 0 && mkdir_p(sp->dir, 0700) == 0)
		r = maildir_writer_open(&w, sp->dir, h->name, err, sizeof(err));
	if (r < 0) {
		/* Logged once, not every retry; the takers' own opens log each message. */
		if (!*failing)
			log_error(SPOOL_PKG, 0, "cannot create spool file ahead of time, retrying", "err", err);
		*failing = true;
		pthread_mutex_lock(&sp->mu);
		sp->st.failed++;
		return -1;
	}
	if (*failing)
		log_info(SPOOL_PKG, 0, "creating spool files ahead of time again", "dir", sp->dir);
	*failing = false;
	pthread_mutex_lock(&sp->mu);
	/* Only this thread pushes, so there is room still. */
	h->items[h->n].w = w;
	h->items[h->n].born = mono_ms();
	h->n++;
	sp->st.created++;
	return 1;
}

static void *
spool_main(void *arg)
{
	struct spool *sp = arg;
	int64_t next_check = mono_ms() + SPOOL_CHECK_MS;
	int64_t retry_at = 0;
	bool failing = false;

	pthread_mutex_lock(&sp->mu);
	while (!sp->stop) {
		int64_t now = mono_ms();
		struct spool_host *h;
		struct timespec ts;

		if (now >= next_check) {
			for (size_t i = 0; i < sp->nhosts && !sp->stop; i++)
				check_host(sp, &sp->hosts[i], now);
			next_check = mono_ms() + SPOOL_CHECK_MS;
			continue;
		}
		h = host_wanting(sp);
		if (h != NULL && now >= retry_at) {
			if (fill_one(sp, h, &failing) < 0)
				retry_at = mono_ms() + SPOOL_RETRY_MS;
			continue;
		}
		if (h != NULL && retry_at < next_check)
			deadline(&ts, retry_at - now);
		else
			deadline(&ts, next_check - now);
		sp->sleeping = true;
		pthread_cond_timedwait(&sp->cond, &sp->mu, &ts);
		sp->sleeping = false;
	}
	pthread_mutex_unlock(&sp->mu);
	return NULL;
}

int
spool_remove_files(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	int n = 0;

	if (d == NULL)
		return 0;
	while ((e = readdir(d)) != NULL) {
		if (e->d_name[0] == '.' || e->d_type == DT_DIR)
			continue;
		if (unlinkat(dirfd(d), e->d_name, 0) == 0)
			n++;
	}
	closedir(d);
	return n;
}

/* Remove the spool files a previous run made ahead of time in dir. */
static void
clean_dir(const char *dir)
{
	int n = spool_remove_files(dir);

	if (n > 0) {
		char count[32];
		snprintf(count, sizeof(count), "%d", n);
		log_debug(SPOOL_PKG, 0, "removed spool files of a previous run", "count", count, "dir", dir);
	}
}

struct spool *
spool_new(const char *dir, const char *const *hosts, size_t nhosts, unsigned cap, char *err, size_t errlen)
{
	struct spool *sp;
	pthread_condattr_t ca;

	if (cap == 0 || cap > SPOOL_DEFAULT_CAP * 4) {
		snprintf(err, errlen, "spool pool size %u out of range", cap);
		return NULL;
	}
	if (mkdir_p(dir, 0700) < 0) {
		snprintf(err, errlen, "create spool directory %s: %s", dir, strerror(errno));
		return NULL;
	}
	clean_dir(dir);
	sp = xcalloc(1, sizeof(*sp));
	sp->dir = xstrdup(dir);
	sp->cap = cap;
	for (size_t i = 0; i < nhosts && sp->nhosts < SPOOL_MAX_HOSTS; i++) {
		if (hosts[i] == NULL || hosts[i][0] == '\0' || host_find(sp, hosts[i]) != NULL)
			continue;
		sp->hosts[sp->nhosts].name = xstrdup(hosts[i]);
		sp->hosts[sp->nhosts].items = xcalloc(cap, sizeof(struct spool_item));
		sp->nhosts++;
	}
	pthread_mutex_init(&sp->mu, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&sp->cond, &ca);
	pthread_condattr_destroy(&ca);
	if (sp->nhosts == 0) {
		snprintf(err, errlen, "spool pool without a host name");
		goto fail;
	}
	if (pthread_create(&sp->thread, NULL, spool_main, sp) != 0) {
		snprintf(err, errlen, "cannot start the spool thread");
		goto fail;
	}
	return sp;
fail:
	sp->stop = true; /* no thread to join */
	spool_free(&sp);
	return NULL;
}

int
spool_take(struct spool *sp, const char *host, struct maildir_writer **w_r)
{
	struct spool_host *h;

	*w_r = NULL;
	if (sp == NULL || host == NULL)
		return 0;
	h = host_find(sp, host); /* the names never change after spool_new */
	if (h == NULL)
		return 0;
	pthread_mutex_lock(&sp->mu);
	if (h->n > 0) {
		*w_r = h->items[--h->n].w;
		sp->st.taken++;
	} else
		sp->st.missed++;
	/* Woken at half full, the thread refills in a burst: one wake-up per cap/2 takes, not one per take. */
	if (sp->sleeping && h->n <= sp->cap / 2)
		pthread_cond_signal(&sp->cond);
	pthread_mutex_unlock(&sp->mu);
	return *w_r != NULL;
}

void
spool_stats(struct spool *sp, struct spool_stats *s_r)
{
	memset(s_r, 0, sizeof(*s_r));
	if (sp == NULL)
		return;
	pthread_mutex_lock(&sp->mu);
	*s_r = sp->st;
	pthread_mutex_unlock(&sp->mu);
}

size_t
spool_ready(struct spool *sp, const char *host)
{
	struct spool_host *h;
	size_t n;

	if (sp == NULL || host == NULL || (h = host_find(sp, host)) == NULL)
		return 0;
	pthread_mutex_lock(&sp->mu);
	n = h->n;
	pthread_mutex_unlock(&sp->mu);
	return n;
}

void
spool_free(struct spool **spp)
{
	struct spool *sp = *spp;
	bool joined;

	if (sp == NULL)
		return;
	pthread_mutex_lock(&sp->mu);
	joined = sp->stop; /* set before: the thread never started */
	sp->stop = true;
	pthread_cond_signal(&sp->cond);
	pthread_mutex_unlock(&sp->mu);
	if (!joined)
		pthread_join(sp->thread, NULL);
	if (sp->st.taken + sp->st.missed > 0) {
		char taken[32], missed[32];
		snprintf(taken, sizeof(taken), "%llu", (unsigned long long)sp->st.taken);
		snprintf(missed, sizeof(missed), "%llu", (unsigned long long)sp->st.missed);
		log_debug(SPOOL_PKG, 0, "spool pool stopped", "taken", taken, "missed", missed);
	}
	for (size_t i = 0; i < sp->nhosts; i++) {
		struct spool_host *h = &sp->hosts[i];
		for (size_t j = 0; j < h->n; j++)
			maildir_writer_free(&h->items[j].w); /* unlinks its tmp file */
		free(h->items);
		free(h->name);
	}
	pthread_cond_destroy(&sp->cond);
	pthread_mutex_destroy(&sp->mu);
	free(sp->dir);
	free(sp);
	*spp = NULL;
}

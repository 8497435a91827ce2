/*
 * watch: inotify on every folder's new/ and cur/ and on each Maildir root.
 *
 * Watch descriptors map to (account, folder); the table is shared by the
 * storage threads (which add watches while listing folders) and the loop
 * thread (which reads events), under a mutex. A burst of events marks the
 * folder dirty; a short timer later one sync job per dirty folder runs.
 *
 * A file that appears in new/ or cur/ must be complete before the sync
 * adopts it (its size and MIME structure are read once). Renamed in
 * (IN_MOVED_TO, the Maildir way from tmp/) it is. Created in place
 * (IN_CREATE) it may still be written: the file is held as pending and
 * marks its folder dirty only when the writer closes it (IN_CLOSE_WRITE),
 * or when it goes away again. A hard link (link() from tmp/, how many
 * delivery agents and we ourselves deliver) is complete too but brings no
 * close: it is told apart by the IN_OPEN that every open(O_CREAT) queues in
 * the same system call as its IN_CREATE; a pending file that saw no IN_OPEN
 * within WATCH_OPEN_GRACE_MS was linked and is adopted then. Readers open
 * pending files too (a notifier, another tool): their IN_OPEN is balanced
 * by an IN_CLOSE_NOWRITE, so a pending file is complete once it saw
 * IN_CLOSE_WRITE, or when its opens are all closed again after the grace.
 * As a last resort a pending file is adopted after WATCH_WRITE_WAIT_MS.
 * Pending files live on the loop thread only (read_cb and timer_cb).
 * IN_OPEN and IN_CLOSE_NOWRITE of any other file are dropped at once.
 */
#define _GNU_SOURCE 1
#include "daemon/watch.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <time.h>
#include <unistd.h>

#include "daemon/log.h"
#include "index/index.h"
#include "maildir/maildir.h"

#define WATCH_DEBOUNCE_MS 250
#define WATCH_OPEN_GRACE_MS 100 /* an IN_OPEN follows its IN_CREATE within microseconds */
#define WATCH_WRITE_WAIT_MS 30000
#define WATCH_PENDING_MAX 4096  /* beyond this, created files mark their folder at once */
#define WATCH_NAMES_MAX 1024    /* changed names kept per directory; beyond, the folder is scanned */
/*
 * After an event wakes the loop, the inotify descriptor leaves the epoll set
 * and is read every WATCH_POLL_MS while events come sparsely (a read finds
 * some, fewer than WATCH_POLL_DENSE). Every delivery queues an event (ours
 * too): woken for each, the loop thread took an extra wakeup per message
 * (SMTP at one connection: about 1,390 -> 1,520 msg/s without it).
 * The kernel queues at most max_queued_events (16,384 by default) between two
 * reads, and an overflow costs a scan of every folder and loses the events
 * that tell a half-written file (IN_CREATE + IN_OPEN) from a complete one:
 * the interval is short enough that overflowing it takes over 3 million
 * events a second, and a dense read (a backup or indexer opening files)
 * goes back to epoll at once. Changes are seen at most this much later.
 */
#define WATCH_POLL_MS 5
#define WATCH_POLL_DENSE 256
#define WATCH_MASK \
	(IN_CREATE | IN_DELETE | IN_MOVED_TO | IN_MOVED_FROM | IN_CLOSE_WRITE | IN_OPEN | IN_CLOSE_NOWRITE | \
	    IN_MOVE_SELF | IN_DELETE_SELF | IN_ONLYDIR | IN_EXCL_UNLINK)

/* A file created in new/ or cur/ that may still be written. */
struct pending {
	int wd;
	char *name;
	unsigned opens;   /* IN_OPEN not yet balanced by IN_CLOSE_NOWRITE */
	int64_t created;  /* monotonic ms of the IN_CREATE */
};

struct wd_entry {
	int wd;
	struct store_account *sa; /* reference held */
	char *folder;             /* folder dirname ("" INBOX), or NULL for the Maildir root */
	const char *sub;          /* "new" or "cur"; NULL for the Maildir root */
	int64_t since;            /* monotonic ms the watch was added */
	bool dirty;
	bool full;      /* scan the folder: a change without a name, or too many */
	char **names;   /* changed entries "new/<name>" while !full */
	size_t nnames;
	bool submitted; /* within one timer round */
};

struct watch {
	struct server *srv;
	int fd;
	struct event *ev;
	struct event *timer;
	struct event *poll; /* armed while reading by WATCH_POLL_MS; ev is then not added */
	pthread_mutex_t mu;
	struct wd_entry *e;
	size_t n;
	bool timer_armed;
	int64_t timer_due; /* monotonic ms the armed timer fires */
	bool stopping;
	struct pending *pend; /* loop thread only */
	size_t npend;
};

static int64_t
now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static ssize_t
pending_find(struct watch *w, int wd, const char *name)
{
	for (size_t i = 0; i < w->npend; i++)
		if (w->pend[i].wd == wd && strcmp(w->pend[i].name, name) == 0)
			return (ssize_t)i;
	return -1;
}

static void
pending_remove(struct watch *w, size_t i)
{
	free(w->pend[i].name);
	w->pend[i] = w->pend[--w->npend];
}

static void
pending_clear(struct watch *w)
{
	while (w->npend > 0)
		pending_remove(w, w->npend - 1);
	free(w->pend);
	w->pend = NULL;
}

static void
names_clear(struct wd_entry *e)
{
	for (size_t i = 0; i < e->nnames; i++)
		free(e->names[i]);
	free(e->names);
	e->names = NULL;
	e->nnames = 0;
}

/* Mark e dirty for the change of entry name (NULL: unknown, scan it all). Caller holds w->mu. */
static void
entry_dirty(struct wd_entry *e, const char *name)
{
	e->dirty = true;
	if (e->full)
		return;
	if (name == NULL || e->sub == NULL || e->nnames >= WATCH_NAMES_MAX) {
		e->full = true;
		names_clear(e);
		return;
	}
	for (size_t i = 0; i < e->nnames; i++)
		if (strcmp(e->names[i] + 4, name) == 0)
			return;
	e->names = xrealloc(e->names, (e->nnames + 1) * sizeof(*e->names));
	e->names[e->nnames++] = xasprintf("%s/%s", e->sub, name);
}

/* Mark the folder of watch wd dirty for name (caller holds w->mu). */
static bool
mark_dirty_locked(struct watch *w, int wd, const char *name)
{
	for (size_t i = 0; i < w->n; i++) {
		if (w->e[i].wd == wd) {
			entry_dirty(&w->e[i], name);
			return true;
		}
	}
	return false;
}

struct watch *
watch_new(struct server *srv)
{
	struct watch *w;
	int fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);

	if (fd < 0) {
		log_error("watch", 0, "inotify unavailable; changes by other tools are seen at the next select",
		    "err", strerror(errno));
		return NULL;
	}
	w = xcalloc(1, sizeof(*w));
	w->srv = srv;
	w->fd = fd;
	pthread_mutex_init(&w->mu, NULL);
	return w;
}

void
watch_stop(struct watch *w)
{
	if (w == NULL)
		return;
	w->stopping = true;
	if (w->ev)
		event_del(w->ev);
	if (w->timer)
		event_del(w->timer);
	if (w->poll)
		event_del(w->poll);
	pthread_mutex_lock(&w->mu);
	for (size_t i = 0; i < w->n; i++) {
		store_account_put(&w->e[i].sa);
		free(w->e[i].folder);
		names_clear(&w->e[i]);
	}
	free(w->e);
	w->e = NULL;
	w->n = 0;
	pthread_mutex_unlock(&w->mu);
	pending_clear(w);
}

void
watch_free(struct watch **wp)
{
	struct watch *w = *wp;

	if (w == NULL)
		return;
	if (!w->stopping)
		watch_stop(w);
	if (w->ev)
		event_free(w->ev);
	if (w->timer)
		event_free(w->timer);
	if (w->poll)
		event_free(w->poll);
	close(w->fd);
	pthread_mutex_destroy(&w->mu);
	free(w);
	*wp = NULL;
}

/* Add a watch (storage thread); the entry keeps its own account reference taken by the caller. */
static void
add_watch(struct watch *w, struct store_account *sa, const char *path, const char *folder, bool root)
{
	int wd = inotify_add_watch(w->fd, path, WATCH_MASK);

	if (wd < 0) {
		/* ENOSPC: the user's inotify watch limit; raise fs.inotify.max_user_watches. */
		log_error("watch", 0, "cannot watch directory", "path", path, "err", strerror(errno));
		return;
	}
	pthread_mutex_lock(&w->mu);
	for (size_t i = 0; i < w->n; i++) {
		if (w->e[i].wd == wd) {
			/* Already watched; after a RENAME the directory belongs to another folder name. */
			if (!root && (w->e[i].folder == NULL || strcmp(w->e[i].folder, folder) != 0)) {
				free(w->e[i].folder);
				w->e[i].folder = xstrdup(folder);
				entry_dirty(&w->e[i], NULL);
			}
			pthread_mutex_unlock(&w->mu);
			return;
		}
	}
	w->e = xrealloc(w->e, (w->n + 1) * sizeof(*w->e));
	memset(&w->e[w->n], 0, sizeof(w->e[w->n]));
	w->e[w->n].wd = wd;
	w->e[w->n].sa = sa;
	w->e[w->n].folder = root ? NULL : xstrdup(folder);
	w->e[w->n].sub = root ? NULL : strcmp(path + strlen(path) - 3, "cur") == 0 ? "cur" : "new";
	w->e[w->n].since = now_ms();
	w->n++;
	pthread_mutex_unlock(&w->mu);
}

struct setup {
	struct watch *w;
	struct store_account *sa;
	int nrefs; /* references the watches need, taken on the loop thread in setup_done */
	char **paths;
	char **folders;
	bool *roots;
	size_t npaths;
};

static void
setup_work(struct store_account *sa, struct idx_account *a, void *arg)
{
	struct setup *s = arg;
	struct maildir_folder_list fl = {0};
	const char *md;
	char err[256];

	if (a == NULL)
		return;
	md = idx_account_maildir(a);
	if (maildir_folder_list(md, &fl, err, sizeof(err)) < 0) {
		log_error("watch", 0, "cannot list folders", "path", md, "err", err);
		fl.count = 0;
	}
	/* The root, INBOX's new/ and cur/, and new/ and cur/ of every folder. */
	s->paths = xcalloc(3 + 2 * fl.count, sizeof(char *));
	s->folders = xcalloc(3 + 2 * fl.count, sizeof(char *));
	s->roots = xcalloc(3 + 2 * fl.count, sizeof(bool));
	s->paths[s->npaths] = xstrdup(md);
	s->folders[s->npaths] = NULL;
	s->roots[s->npaths++] = true;
	for (int sub = 0; sub < 2; sub++) {
		s->paths[s->npaths] = xasprintf("%s/%s", md, sub ? "cur" : "new");
		s->folders[s->npaths++] = xstrdup("");
	}
	for (size_t i = 0; i < fl.count; i++) {
		for (int sub = 0; sub < 2; sub++) {
			s->paths[s->npaths] = xasprintf("%s/%s/%s", md, fl.entries[i].dirname, sub ? "cur" : "new");
			s->folders[s->npaths++] = xstrdup(fl.entries[i].dirname);
		}
	}
	maildir_folder_list_clear(&fl);
}

static void
setup_done(void *arg)
{
	struct setup *s = arg;

	for (size_t i = 0; i < s->npaths; i++) {
		if (s->w->stopping) {
			free(s->paths[i]);
			free(s->folders[i]);
			continue;
		}
		struct store_account *ref = store_account_get(server_store(s->w->srv), store_account_name(s->sa));
		size_t before = s->w->n;
		add_watch(s->w, ref, s->paths[i], s->folders[i] ? s->folders[i] : "", s->roots[i]);
		if (s->w->n == before)
			store_account_put(&ref);
		free(s->paths[i]);
		free(s->folders[i]);
	}
	free(s->paths);
	free(s->folders);
	free(s->roots);
	store_account_put(&s->sa);
	free(s);
}

/* One sync job per dirty folder. */
struct sync_job {
	struct store_account *sa;
	char *folder; /* NULL: whole account (the root changed) */
	struct watch *w;
	bool full;    /* scan the folder; else check names */
	char **names; /* "new/<name>", "cur/<name>" */
	size_t nnames;
	int64_t since; /* both new/ and cur/ watched since (monotonic ms), -1 unknown */
};

static void
sync_work(struct store_account *sa, struct idx_account *a, void *arg)
{
	struct sync_job *j = arg;
	struct idx_sync_stats st = {0};
	char err[256];
	int r = 0;

	if (a == NULL)
		return;
	if (j->folder == NULL) {
		r = idx_sync_all(a, &st, err, sizeof(err));
	} else {
		struct idx_mailbox *list = NULL;
		size_t n = 0;
		if (idx_mailbox_list(a, &list, &n, err, sizeof(err)) < 0) {
			r = -1;
		} else {
			for (size_t i = 0; i < n; i++) {
				if (strcmp(list[i].folder, j->folder) != 0)
					continue;
				if (j->full)
					r = idx_sync_mailbox(a, list[i].id, &st, err, sizeof(err));
				else
					r = idx_sync_names(a, list[i].id, (const char *const *)j->names, j->nnames, j->since,
					    NULL, &st, err, sizeof(err));
			}
			idx_mailbox_list_free(&list, n);
		}
	}
	if (r < 0)
		log_error("watch", 0, "sync after a change on disk failed", "account", store_account_name(sa), "err", err);
	else if (st.added || st.flagged || st.removed || st.mailboxes_added)
		log_debug("watch", 0, "synced changes made by another program", "account", store_account_name(sa));
}

static void
sync_done(void *arg)
{
	struct sync_job *j = arg;

	/* A new folder appeared: watch it (and everything else again; duplicates are skipped). */
	if (j->folder == NULL && !j->w->stopping)
		watch_account(j->w, j->sa);
	store_account_put(&j->sa);
	free(j->folder);
	for (size_t i = 0; i < j->nnames; i++)
		free(j->names[i]);
	free(j->names);
	free(j);
}

static void
timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct watch *w = arg;

	w->timer_armed = false;
	pthread_mutex_lock(&w->mu);
	/* Created without an open: hard-linked, complete. */
	int64_t now = now_ms(), next = -1;
	for (size_t i = 0; i < w->npend;) {
		struct pending *pd = &w->pend[i];
		int64_t due = pd->created + (pd->opens > 0 ? WATCH_WRITE_WAIT_MS : WATCH_OPEN_GRACE_MS);
		if (now >= due) {
			mark_dirty_locked(w, pd->wd, pd->name);
			pending_remove(w, i);
			continue;
		}
		if (next < 0 || due < next)
			next = due;
		i++;
	}
	for (size_t i = 0; i < w->n; i++)
		w->e[i].submitted = false;
	for (size_t i = 0; i < w->n; i++) {
		struct wd_entry *e = &w->e[i];
		if (!e->dirty || e->submitted)
			continue;
		/* new/ and cur/ of one folder are two entries: one job for both. */
		struct sync_job *j = xcalloc(1, sizeof(*j));
		int watched = 0;
		j->w = w;
		j->since = -1;
		for (size_t k = i; k < w->n; k++) {
			struct wd_entry *o = &w->e[k];
			bool same = o->sa == e->sa &&
			    ((o->folder == NULL && e->folder == NULL) ||
				(o->folder != NULL && e->folder != NULL && strcmp(o->folder, e->folder) == 0));
			if (!same)
				continue;
			watched++;
			if (o->since > j->since)
				j->since = o->since;
			if (!o->dirty)
				continue;
			o->dirty = false;
			o->submitted = true;
			j->full |= o->full;
			o->full = false;
			j->names = xrealloc(j->names, (j->nnames + o->nnames + 1) * sizeof(*j->names));
			if (o->nnames > 0)
				memcpy(j->names + j->nnames, o->names, o->nnames * sizeof(*o->names));
			j->nnames += o->nnames;
			free(o->names);
			o->names = NULL;
			o->nnames = 0;
		}
		if (watched != 2)
			j->since = -1; /* new/ or cur/ is not watched: changes may go unseen */
		j->sa = store_account_get(server_store(w->srv), store_account_name(e->sa));
		j->folder = e->folder ? xstrdup(e->folder) : NULL;
		if (j->sa != NULL) {
			store_submit(j->sa, sync_work, sync_done, j);
		} else {
			for (size_t k = 0; k < j->nnames; k++)
				free(j->names[k]);
			free(j->names);
			free(j->folder);
			free(j);
		}
	}
	pthread_mutex_unlock(&w->mu);
	if (next >= 0 && !w->stopping) {
		int64_t ms = next - now > 0 ? next - now : 1;
		struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000};
		w->timer_armed = true;
		w->timer_due = now + ms;
		evtimer_add(w->timer, &tv);
	}
}

/*
 * A file event in new/ or cur/ (wd is such a watch): returns true when it
 * makes the folder dirty now, false when it waits (or means nothing).
 */
static bool
file_event(struct watch *w, const struct inotify_event *ev, bool *arm_r)
{
	ssize_t i = ev->len > 0 ? pending_find(w, ev->wd, ev->name) : -1;

	if (ev->mask & IN_OPEN) {
		if (i >= 0)
			w->pend[i].opens++;
		return false; /* reads of messages (ours too) change nothing */
	}
	if (ev->mask & IN_CLOSE_NOWRITE) {
		if (i >= 0 && w->pend[i].opens > 0)
			w->pend[i].opens--;
		return false;
	}
	if ((ev->mask & IN_CREATE) && !(ev->mask & IN_ISDIR) && ev->len > 0) {
		if (i >= 0)
			return false;
		if (w->npend >= WATCH_PENDING_MAX)
			return true;
		w->pend = xrealloc(w->pend, (w->npend + 1) * sizeof(*w->pend));
		w->pend[w->npend++] = (struct pending){.wd = ev->wd, .name = xstrdup(ev->name), .created = now_ms()};
		*arm_r = true; /* the timer settles linked files */
		return false;
	}
	/* IN_CLOSE_WRITE: written; IN_MOVED_FROM/IN_DELETE: it left; IN_MOVED_TO: complete. */
	if (i >= 0)
		pending_remove(w, (size_t)i);
	return true;
}

/* Handle every queued event. Returns how many there were. */
static size_t
drain(struct watch *w)
{
	char buf[16384] __attribute__((aligned(__alignof__(struct inotify_event))));
	ssize_t n;
	bool any = false;
	size_t got = 0;

	while ((n = read(w->fd, buf, sizeof(buf))) > 0) {
		for (char *p = buf; p < buf + n;) {
			struct inotify_event *ev = (struct inotify_event *)p;
			p += sizeof(*ev) + ev->len;
			got++;
			if (ev->mask & IN_Q_OVERFLOW) {
				/* Lost events: every watched folder is dirty. */
				log_info("watch", 0, "inotify queue overflowed: every watched folder is scanned",
				    "limit", "/proc/sys/fs/inotify/max_queued_events");
				pthread_mutex_lock(&w->mu);
				for (size_t i = 0; i < w->n; i++)
					entry_dirty(&w->e[i], NULL);
				pthread_mutex_unlock(&w->mu);
				any = true;
				continue;
			}
			if (ev->len > 0 && ev->name[0] == '.' && !(ev->mask & IN_ISDIR))
				continue; /* dot-files are not messages */
			if ((ev->mask & (IN_OPEN | IN_CLOSE_NOWRITE)) && w->npend == 0)
				continue; /* the common case: someone reads a message */
			pthread_mutex_lock(&w->mu);
			for (size_t i = 0; i < w->n; i++) {
				if (w->e[i].wd != ev->wd)
					continue;
				if (ev->mask & (IN_MOVE_SELF | IN_DELETE_SELF)) {
					/*
					 * The directory itself was moved away (or deleted): the watch
					 * would follow the old inode. Drop it (IN_IGNORED removes the
					 * entry) and set the account's watches up again from the root,
					 * so a replaced new/ or cur/ is watched and scanned.
					 */
					inotify_rm_watch(w->fd, ev->wd);
					for (size_t k = 0; k < w->n; k++)
						if (w->e[k].sa == w->e[i].sa && w->e[k].folder == NULL)
							entry_dirty(&w->e[k], NULL);
					entry_dirty(&w->e[i], NULL);
					any = true;
					break;
				}
				if (ev->mask & IN_IGNORED) {
					/* The kernel dropped the watch (folder deleted): forget the entry. */
					for (size_t k = w->npend; k > 0; k--)
						if (w->pend[k - 1].wd == ev->wd)
							pending_remove(w, k - 1);
					store_account_put(&w->e[i].sa);
					free(w->e[i].folder);
					names_clear(&w->e[i]);
					w->e[i] = w->e[--w->n];
					break;
				}
				/* In the Maildir root only folders (dot-directories) matter. */
				if (w->e[i].folder == NULL) {
					if ((ev->mask & IN_ISDIR) && ev->len > 0 && ev->name[0] == '.' &&
					    !(ev->mask & (IN_OPEN | IN_CLOSE_NOWRITE))) {
						entry_dirty(&w->e[i], NULL);
						any = true;
					}
					break;
				}
				if ((ev->mask & IN_ISDIR) && !(ev->mask & (IN_OPEN | IN_CLOSE_NOWRITE))) {
					entry_dirty(&w->e[i], NULL); /* odd, but let the sync look */
					any = true;
					break;
				}
				if (ev->mask & IN_ISDIR)
					break;
				if (file_event(w, ev, &any)) {
					entry_dirty(&w->e[i], ev->len > 0 ? ev->name : NULL);
					any = true;
				}
				break;
			}
			pthread_mutex_unlock(&w->mu);
		}
	}
	/* Armed for a late pending file (WATCH_WRITE_WAIT_MS): come sooner. */
	if (any && (!w->timer_armed || w->timer_due > now_ms() + WATCH_DEBOUNCE_MS)) {
		struct timeval tv = {0, WATCH_DEBOUNCE_MS * 1000};
		w->timer_armed = true;
		w->timer_due = now_ms() + WATCH_DEBOUNCE_MS;
		evtimer_add(w->timer, &tv);
	}
	return got;
}

static void
poll_arm(struct watch *w)
{
	struct timeval tv = {0, WATCH_POLL_MS * 1000};

	evtimer_add(w->poll, &tv);
}

/* The descriptor became readable: read it, then poll it while events come sparsely. */
static void
read_cb(evutil_socket_t fd, short what, void *arg)
{
	struct watch *w = arg;

	if (drain(w) >= WATCH_POLL_DENSE || w->stopping)
		return;
	event_del(w->ev);
	poll_arm(w);
}

static void
poll_cb(evutil_socket_t fd, short what, void *arg)
{
	struct watch *w = arg;
	size_t n = drain(w);

	if (w->stopping)
		return;
	if (n > 0 && n < WATCH_POLL_DENSE)
		poll_arm(w);
	else /* quiet, or dense: wait in epoll again (level-triggered: what is queued counts) */
		event_add(w->ev, NULL);
}

void
watch_account(struct watch *w, struct store_account *sa)
{
	struct setup *s;

	if (w == NULL || w->stopping)
		return;
	if (w->ev == NULL) {
		w->ev = event_new(server_base(w->srv), w->fd, EV_READ | EV_PERSIST, read_cb, w);
		w->timer = evtimer_new(server_base(w->srv), timer_cb, w);
		w->poll = evtimer_new(server_base(w->srv), poll_cb, w);
		event_add(w->ev, NULL);
	}
	s = xcalloc(1, sizeof(*s));
	s->w = w;
	s->sa = store_account_get(server_store(w->srv), store_account_name(sa));
	store_submit(s->sa, setup_work, setup_done, s);
}

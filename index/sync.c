/*
 * Maildir sync: make the index agree with a folder that other tools changed.
 *
 * The folder's files (maildir_scan) are matched to the records by base name
 * through the 'F' keys:
 * - a record whose base is not on disk: the message is gone, tombstone it;
 * - a record whose file name changed: take the flags from the name (keyword
 *   letters through dovecot-keywords; keywords without a letter live only
 *   in the index and are kept), a new modseq when they differ;
 * - a file without a record: adopt it with the next UID, flags from its
 *   name, MIME cache and threading from its content.
 * A file that vanishes while we read it is skipped: the next sync sees its
 * new state. Everything runs in one transaction per mailbox and the changes
 * go to listeners like our own.
 *
 * A SELECT of a large mailbox would spend most of its time in that scan
 * although nothing changed, so a complete sync leaves a stamp (inode and
 * ctime of the folder, new/ and cur/, struct sync_stamp) taken before its
 * scan, and idx_sync_mailbox_changed skips the scan while the stamp still
 * matches. Every way a file can appear, vanish or be renamed in a folder
 * moves the ctime of its directory, and no tool can set a ctime back. A
 * stamp is kept only when every ctime was old enough when it was taken: a
 * change later in the same clock tick as the stat would leave the ctime as
 * it was; with the margin a later change always gets a larger one. The
 * margin is two seconds on a filesystem with whole-second (or coarser)
 * timestamps, 100 ms where ctimes have nanoseconds (they come from the
 * kernel's coarse clock, which ticks every few milliseconds). Our own changes move the ctimes too; the inotify watcher
 * (daemon/watch.c) passes the names of changed files to idx_sync_names,
 * which checks each against the index and, when all agree and the watch is
 * older than the stamp, moves the stamp on: the next SELECT skips its scan.
 */
#define _GNU_SOURCE
#include "index/index_private.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

struct fkey {
	char *base;
	uint32_t uid;
};

/* Every 'F' key of a mailbox. */
static size_t fkeys_all(struct idx_account *a, uint32_t mbid, struct fkey **v_r)
{
	uint8_t p[5];
	BDBCUR *cur = tcbdbcurnew(a->db);
	struct fkey *v = NULL;
	size_t n = 0;

	p[0] = K_FILE;
	be32_put(p + 1, mbid);
	if (tcbdbcurjump(cur, p, 5)) {
		for (;;) {
			int ks, vs;
			const uint8_t *kp = tcbdbcurkey3(cur, &ks);
			const uint8_t *vp;

			if (kp == NULL || ks < 5 || memcmp(kp, p, 5) != 0)
				break;
			vp = tcbdbcurval3(cur, &vs);
			if (vp != NULL && vs == 4 && ks > 5) {
				v = idx_xrealloc(v, sizeof(*v) * (n + 1));
				v[n].base = strndup((const char *)kp + 5, (size_t)ks - 5);
				if (v[n].base == NULL)
					abort();
				v[n].uid = be32_get(vp);
				n++;
			}
			if (!tcbdbcurnext(cur))
				break;
		}
	}
	tcbdbcurdel(cur);
	*v_r = v;
	return n;
}

/* ---- folder stamps ---- */

static int64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/*
 * Stamp of folder dir (taken before a scan). 1: every ctime is at least two
 * seconds old, so the stamp may be kept; 0: too recent; -1: a stat failed.
 */
static int folder_stamp(const char *dir, uint32_t mbid, struct sync_stamp *s)
{
	static const char *const sub[3] = { "", "/new", "/cur" };
	struct timespec now;
	bool fine = false;
	int64_t newest_ns = INT64_MIN;

	memset(s, 0, sizeof(*s));
	s->mbid = mbid;
	if (clock_gettime(CLOCK_REALTIME, &now) < 0)
		return -1;
	s->taken_ms = mono_ms();
	for (int i = 0; i < 3; i++) {
		char path[IDX_PATH_MAX + 8];
		struct stat st;
		int64_t ns;

		snprintf(path, sizeof(path), "%s%s", dir, sub[i]);
		if (stat(path, &st) < 0)
			return -1;
		s->ino[i] = (uint64_t)st.st_ino;
		s->sec[i] = (int64_t)st.st_ctim.tv_sec;
		s->nsec[i] = (int64_t)st.st_ctim.tv_nsec;
		fine |= st.st_ctim.tv_nsec != 0;
		ns = (int64_t)st.st_ctim.tv_sec * 1000000000 + st.st_ctim.tv_nsec;
		if (ns > newest_ns)
			newest_ns = ns;
	}
	/* Old enough (see the top): 100 ms with nanosecond ctimes, else two seconds. */
	return (int64_t)now.tv_sec * 1000000000 + now.tv_nsec - newest_ns >= (fine ? 100000000 : 2000000000);
}

static bool stamp_equal(const struct sync_stamp *x, const struct sync_stamp *y)
{
	for (int i = 0; i < 3; i++)
		if (x->ino[i] != y->ino[i] || x->sec[i] != y->sec[i] || x->nsec[i] != y->nsec[i])
			return false;
	return x->mbid == y->mbid;
}

static struct sync_stamp *stamp_find(struct idx_account *a, uint32_t mbid)
{
	for (size_t i = 0; i < a->nstamps; i++)
		if (a->stamps[i].mbid == mbid)
			return &a->stamps[i];
	return NULL;
}

static void stamp_drop(struct idx_account *a, uint32_t mbid)
{
	struct sync_stamp *s = stamp_find(a, mbid);

	if (s != NULL)
		*s = a->stamps[--a->nstamps];
}

/*
 * Stamps are also kept in the index ('S' key), so the first SELECT after a
 * restart skips its scan too: the rule holds across restarts (a ctime never
 * goes back; anything done to the folder while we were down moved one).
 */
static void stamp_key(uint8_t k[5], uint32_t mbid)
{
	k[0] = K_STAMP;
	be32_put(k + 1, mbid);
}

static void stamp_encode(const struct sync_stamp *s, uint8_t v[72])
{
	for (int i = 0; i < 3; i++) {
		be64_put(v + 24 * i, s->ino[i]);
		be64_put(v + 24 * i + 8, (uint64_t)s->sec[i]);
		be64_put(v + 24 * i + 16, (uint64_t)s->nsec[i]);
	}
}

/* The stored stamp of mbid: 1, 0 none (or unreadable). */
static int stamp_load(struct idx_account *a, uint32_t mbid, struct sync_stamp *s)
{
	uint8_t k[5];
	void *v;
	size_t len;

	stamp_key(k, mbid);
	if (db_get(a, k, 5, &v, &len, NULL, 0) <= 0)
		return 0;
	if (len != 72) {
		tcfree(v);
		return 0;
	}
	memset(s, 0, sizeof(*s));
	s->mbid = mbid;
	for (int i = 0; i < 3; i++) {
		s->ino[i] = be64_get((uint8_t *)v + 24 * i);
		s->sec[i] = (int64_t)be64_get((uint8_t *)v + 24 * i + 8);
		s->nsec[i] = (int64_t)be64_get((uint8_t *)v + 24 * i + 16);
	}
	s->taken_ms = INT64_MIN; /* before any watch of this process */
	tcfree(v);
	return 1;
}

/* Inside a transaction: store s (mbid 0: remove mbid's), unless stored already. */
static int stamp_store(struct idx_account *a, uint32_t mbid, const struct sync_stamp *s, char *err, size_t errlen)
{
	struct sync_stamp old;
	uint8_t k[5], v[72];
	int have = stamp_load(a, mbid, &old);

	stamp_key(k, mbid);
	if (s->mbid == 0)
		return have ? db_out(a, k, 5, err, errlen) : 1;
	if (have && stamp_equal(&old, s))
		return 1;
	stamp_encode(s, v);
	return db_put(a, k, 5, v, sizeof(v), err, errlen);
}

static void stamp_set(struct idx_account *a, const struct sync_stamp *s)
{
	struct sync_stamp *old = stamp_find(a, s->mbid);

	if (old == NULL) {
		a->stamps = idx_xrealloc(a->stamps, sizeof(*a->stamps) * (a->nstamps + 1));
		old = &a->stamps[a->nstamps++];
	}
	*old = *s;
}

/* Keywords of a file name: letters through the table plus the index-only
 * keywords of old (those without a letter). */
static void kw_from_name(struct idx_message *m, const struct maildir_keywords *kw, uint32_t letters,
    char *const *old, size_t nold)
{
	size_t i;

	for (i = 0; i < 26; i++) {
		const char *name = msg_name_keyword(kw, letters, (int)i);

		if (name == NULL)
			continue;
		if (m->nkeywords >= IDX_KEYWORDS_PER_MESSAGE)
			break;
		m->keywords = idx_xrealloc(m->keywords, sizeof(*m->keywords) * (m->nkeywords + 1));
		m->keywords[m->nkeywords++] = idx_xstrdup(name);
	}
	for (i = 0; i < nold && m->nkeywords < IDX_KEYWORDS_PER_MESSAGE; i++) {
		if (maildir_keywords_lookup(kw, old[i]) != 0 || kw_is_forwarded(old[i]))
			continue;
		m->keywords = idx_xrealloc(m->keywords, sizeof(*m->keywords) * (m->nkeywords + 1));
		m->keywords[m->nkeywords++] = idx_xstrdup(old[i]);
	}
}

static bool kw_same(char *const *x, size_t nx, char *const *y, size_t ny)
{
	size_t i, j;

	if (nx != ny)
		return false;
	for (i = 0; i < nx; i++) {
		for (j = 0; j < ny; j++)
			if (strcasecmp(x[i], y[j]) == 0)
				break;
		if (j == ny)
			return false;
	}
	return true;
}

/* Adopt file e of folder dir into mailbox mb. 1 adopted, 0 vanished, -1. */
static int adopt(struct idx_account *a, struct idx_mailbox *mb, const char *dir, const struct maildir_entry *e,
    const struct maildir_keywords *kw, bool *kwgrew, char *err, size_t errlen)
{
	char path[IDX_PATH_MAX + MAILDIR_NAME_BUFSIZE + 8];
	struct idx_message m;
	struct mime_msg *msg = NULL;
	struct stat st;
	TCXSTR *cache;
	size_t i;
	int fd, r;

	snprintf(path, sizeof(path), "%s/%s/%s", dir, e->subdir == MAILDIR_CUR ? "cur" : "new", e->filename);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		if (errno == ENOENT)
			return 0;
		idx_seterr(err, errlen, "open %s: %s", path, strerror(errno));
		return -1;
	}
	if (fstat(fd, &st) < 0) {
		idx_seterr(err, errlen, "fstat %s: %s", path, strerror(errno));
		close(fd);
		return -1;
	}
	if (msg_parse_fd(fd, (uint64_t)st.st_size, &msg, err, errlen) < 0) {
		close(fd);
		return -1;
	}
	close(fd);
	if (mb->uidnext == UINT32_MAX) {
		mime_msg_free(&msg);
		idx_seterr(err, errlen, "mailbox %s out of UIDs", mb->name);
		return -1;
	}
	memset(&m, 0, sizeof(m));
	m.id = a->rec.next_msgid++;
	a->rec_dirty = true;
	m.mailbox_id = mb->id;
	m.uid = mb->uidnext++;
	m.modseq = m.createseq = op_modseq(a);
	m.flags = msg_name_flags(kw, e->name.flags, e->name.keywords);
	kw_from_name(&m, kw, e->name.keywords, NULL, 0);
	m.size = (uint64_t)st.st_size;
	m.filename = idx_xmalloc(strlen(e->filename) + 5);
	snprintf(m.filename, strlen(e->filename) + 5, "%s/%s", e->subdir == MAILDIR_CUR ? "cur" : "new", e->filename);
	m.received = (int64_t)st.st_mtime;
	m.savedate = (int64_t)time(NULL);
	m.message_id = idx_xstrdup(msg && msg->msgid && strlen(msg->msgid) <= IDX_MSGID_MAX ? msg->msgid : "");
	m.subject_base = strndup(msg && msg->base_subject ? msg->base_subject : "", 1000);
	if (m.subject_base == NULL)
		abort();
	cache = tcxstrnew();
	if (msg != NULL)
		mime_cache_encode(msg, cache);
	r = thread_assign(a, &m, msg, err, errlen);
	/* A muted thread would mark it \Seen: the file says otherwise, keep the file's flags. */
	m.flags = msg_name_flags(kw, e->name.flags, e->name.keywords);
	if (r > 0)
		r = msg_insert(a, &m, tcxstrptr(cache), (size_t)tcxstrsize(cache), err, errlen);
	if (r > 0)
		r = thread_resolve(a, &m, err, errlen);
	if (r > 0) {
		counts_apply(&mb->counts, m.flags, m.size, 1);
		for (i = 0; i < m.nkeywords; i++)
			*kwgrew |= mb_keyword_add(mb, m.keywords[i]);
		a->rec.quota_used += m.size;
		change_push(a, IDX_CH_ADD, mb->id, m.uid, m.modseq, m.flags, NULL, NULL);
	}
	tcxstrdel(cache);
	mime_msg_free(&msg);
	idx_message_clear(&m);
	return r < 0 ? -1 : 1;
}

/* stamp_r gets the folder's stamp when it may be kept (mbid 0 otherwise). */
static int sync_locked(struct idx_account *a, uint32_t mbid, struct idx_sync_stats *st, struct sync_stamp *stamp_r,
    char *err, size_t errlen)
{
	struct maildir_keywords kw;
	struct maildir_scan scan;
	struct idx_mailbox mb;
	struct fkey *fk = NULL;
	char dir[IDX_PATH_MAX];
	TCMAP *bybase = NULL;
	bool kwgrew = false, changed = false;
	size_t nfk = 0, i;
	int r;

	memset(&scan, 0, sizeof(scan));
	memset(stamp_r, 0, sizeof(*stamp_r));
	maildir_keywords_init(&kw);
	r = mb_load(a, mbid, &mb, err, errlen);
	if (r <= 0)
		return r;
	if (idx_folder_path(a, mb.folder, dir, sizeof(dir), err, errlen) < 0 ||
	    maildir_folder_create(a->maildir, mb.folder, err, errlen) < 0) {
		r = -1;
		goto out;
	}
	if (folder_stamp(dir, mbid, stamp_r) <= 0)
		memset(stamp_r, 0, sizeof(*stamp_r));
	if (maildir_scan(dir, &scan, err, errlen) < 0 || maildir_keywords_read(&kw, dir, err, errlen) < 0) {
		r = -1;
		goto out;
	}
	bybase = tcmapnew2(scan.count + 1);
	for (i = 0; i < scan.count; i++) {
		const struct maildir_entry *e = &scan.entries[i];
		uint32_t idx = (uint32_t)i;

		if (e->valid)
			tcmapputkeep(bybase, e->name.base, (int)e->name.base_len, &idx, sizeof(idx));
	}
	nfk = fkeys_all(a, mbid, &fk);
	for (i = 0; i < nfk && r >= 0; i++) {
		const struct maildir_entry *e = NULL;
		struct idx_message m, nm;
		const uint32_t *ip;
		int sp;
		char fname[MAILDIR_NAME_BUFSIZE + 8];

		ip = tcmapget(bybase, fk[i].base, (int)strlen(fk[i].base), &sp);
		if (ip != NULL) {
			e = &scan.entries[*ip];
			tcmapout(bybase, fk[i].base, (int)strlen(fk[i].base));
		}
		r = msg_load(a, mbid, fk[i].uid, &m, NULL, 0);
		if (r <= 0) {
			r = 0; /* stale file key or corrupt record: the checker reports it */
			continue;
		}
		if (e == NULL) {
			r = msg_remove(a, &m, op_modseq(a), false, err, errlen);
			counts_apply(&mb.counts, m.flags, m.size, -1);
			a->rec.quota_used -= a->rec.quota_used < m.size ? a->rec.quota_used : m.size;
			a->rec_dirty = true;
			change_push(a, IDX_CH_REMOVE, mbid, m.uid, a->op_modseq, 0, NULL, NULL);
			st->removed++;
			changed = true;
			idx_message_clear(&m);
			continue;
		}
		snprintf(fname, sizeof(fname), "%s/%s", e->subdir == MAILDIR_CUR ? "cur" : "new", e->filename);
		if (strcmp(fname, m.filename) != 0) {
			memset(&nm, 0, sizeof(nm));
			kw_from_name(&nm, &kw, e->name.keywords, m.keywords, m.nkeywords);
			free(m.filename);
			m.filename = idx_xstrdup(fname);
			if (msg_name_flags(&kw, e->name.flags, e->name.keywords) != m.flags ||
			    !kw_same(nm.keywords, nm.nkeywords, m.keywords, m.nkeywords)) {
				uint32_t nf = msg_name_flags(&kw, e->name.flags, e->name.keywords);

				counts_apply(&mb.counts, m.flags, m.size, -1);
				counts_apply(&mb.counts, nf, m.size, 1);
				m.flags = nf;
				for (size_t j = 0; j < m.nkeywords; j++)
					free(m.keywords[j]);
				free(m.keywords);
				m.keywords = nm.keywords;
				m.nkeywords = nm.nkeywords;
				nm.keywords = NULL;
				nm.nkeywords = 0;
				m.modseq = op_modseq(a);
				change_push(a, IDX_CH_FLAGS, mbid, m.uid, m.modseq, m.flags, NULL, NULL);
				st->flagged++;
				changed = true;
			}
			idx_message_clear(&nm);
			r = msg_store(a, &m, err, errlen);
		}
		idx_message_clear(&m);
	}
	/* What is left in the map has no record. Scan order: new/ then cur/. */
	for (i = 0; i < scan.count && r >= 0; i++) {
		const struct maildir_entry *e = &scan.entries[i];
		const uint32_t *ip;
		int sp;

		if (!e->valid)
			continue;
		ip = tcmapget(bybase, e->name.base, (int)e->name.base_len, &sp);
		if (ip == NULL || *ip != (uint32_t)i)
			continue;
		r = adopt(a, &mb, dir, e, &kw, &kwgrew, err, errlen);
		if (r > 0) {
			st->added++;
			changed = true;
		}
	}
	if (r >= 0 && changed) {
		mb.highest_modseq = op_modseq(a);
		r = mb_store(a, &mb, err, errlen);
		change_push(a, IDX_CH_MAILBOX_COUNTS, mbid, 0, a->op_modseq, 0, NULL, NULL);
		if (kwgrew)
			change_push(a, IDX_CH_MAILBOX_KEYWORDS, mbid, 0, a->op_modseq, 0, NULL, NULL);
	}
	if (r >= 0)
		r = 1;
out:
	for (i = 0; i < nfk; i++)
		free(fk[i].base);
	free(fk);
	if (bybase != NULL)
		tcmapdel(bybase);
	maildir_scan_clear(&scan);
	maildir_keywords_clear(&kw);
	idx_mailbox_clear(&mb);
	return r;
}

int idx_sync_mailbox(struct idx_account *a, uint32_t mailbox_id, struct idx_sync_stats *st, char *err,
    size_t errlen)
{
	struct idx_sync_stats dummy;
	struct sync_stamp stamp;
	int r;

	if (st == NULL)
		st = &dummy;
	memset(st, 0, sizeof(*st));
	if (op_begin(a, err, errlen) < 0)
		return -1;
	stamp_drop(a, mailbox_id);
	r = sync_locked(a, mailbox_id, st, &stamp, err, errlen);
	if (r == 0) {
		idx_seterr(err, errlen, "mailbox does not exist");
		r = -1;
	}
	if (r > 0 && stamp_store(a, mailbox_id, &stamp, err, errlen) < 0)
		r = -1;
	r = op_end(a, r, err, errlen);
	if (r > 0 && stamp.mbid != 0)
		stamp_set(a, &stamp);
	op_unlock(a);
	return r;
}

int idx_sync_mailbox_changed(struct idx_account *a, uint32_t mailbox_id, struct idx_sync_stats *st, char *err,
    size_t errlen)
{
	const struct sync_stamp *old;
	bool same = false;

	pthread_mutex_lock(&a->mu);
	old = stamp_find(a, mailbox_id);
	if (old == NULL) {
		struct sync_stamp stored;

		if (stamp_load(a, mailbox_id, &stored) > 0) {
			stamp_set(a, &stored);
			old = stamp_find(a, mailbox_id);
		}
	}
	if (old != NULL) {
		struct idx_mailbox mb;
		struct sync_stamp now;
		char dir[IDX_PATH_MAX];

		if (mb_load(a, mailbox_id, &mb, NULL, 0) > 0) {
			same = idx_folder_path(a, mb.folder, dir, sizeof(dir), NULL, 0) > 0 &&
			    folder_stamp(dir, mailbox_id, &now) >= 0 && stamp_equal(old, &now);
			idx_mailbox_clear(&mb);
		}
	}
	pthread_mutex_unlock(&a->mu);
	if (same) {
		if (st != NULL)
			memset(st, 0, sizeof(*st));
		return 1;
	}
	return idx_sync_mailbox(a, mailbox_id, st, err, errlen);
}

/*
 * Does the index agree with the file named name ("new/x" or "cur/x") of
 * folder dir? 1 yes, 0 no, -1 error.
 */
static int name_agrees(struct idx_account *a, uint32_t mbid, const char *dir, const char *name, char *err,
    size_t errlen)
{
	char path[IDX_PATH_MAX + MAILDIR_NAME_BUFSIZE + 8];
	struct maildir_name mn;
	struct idx_message m;
	struct stat sb;
	const char *file;
	TCXSTR *x;
	void *v;
	size_t len;
	bool exists;
	int r;

	if (strncmp(name, "new/", 4) != 0 && strncmp(name, "cur/", 4) != 0)
		return 0;
	file = name + 4;
	if (file[0] == '\0' || file[0] == '.' || strchr(file, '/') != NULL)
		return 1; /* not a message file: the complete sync ignores it too */
	if (maildir_name_parse(file, strlen(file), &mn, NULL, 0) < 0)
		return 1; /* likewise */
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	if (lstat(path, &sb) == 0)
		exists = true;
	else if (errno == ENOENT || errno == ENOTDIR)
		exists = false;
	else
		return 0; /* let the complete sync deal with it */
	x = tcxstrnew();
	key_file(x, mbid, mn.base, mn.base_len);
	r = db_get(a, tcxstrptr(x), (size_t)tcxstrsize(x), &v, &len, err, errlen);
	tcxstrdel(x);
	if (r < 0)
		return -1;
	if (r == 0)
		return exists ? 0 : 1; /* unknown file: adopt; gone and unknown: nothing */
	if (len != 4) {
		tcfree(v);
		return 0;
	}
	r = msg_load(a, mbid, be32_get(v), &m, err, errlen);
	tcfree(v);
	if (r <= 0)
		return r < 0 ? -1 : 0;
	if (exists) {
		r = strcmp(m.filename, name) == 0;
	} else if (strcmp(m.filename, name) == 0) {
		r = 0; /* its file is gone */
	} else {
		/* Renamed (by us, or the new name is in this batch too): its file must exist. */
		snprintf(path, sizeof(path), "%s/%s", dir, m.filename);
		r = lstat(path, &sb) == 0;
	}
	idx_message_clear(&m);
	return r;
}

int idx_sync_names(struct idx_account *a, uint32_t mailbox_id, const char *const *names, size_t n,
    int64_t watched_since_ms, bool *synced_r, struct idx_sync_stats *st, char *err, size_t errlen)
{
	struct idx_mailbox mb;
	char dir[IDX_PATH_MAX];
	int r, agree = 1;

	if (synced_r != NULL)
		*synced_r = false;
	if (st != NULL)
		memset(st, 0, sizeof(*st));
	pthread_mutex_lock(&a->mu);
	r = mb_load(a, mailbox_id, &mb, err, errlen);
	if (r > 0) {
		r = idx_folder_path(a, mb.folder, dir, sizeof(dir), err, errlen);
		idx_mailbox_clear(&mb);
	}
	for (size_t i = 0; r > 0 && agree > 0 && i < n; i++) {
		agree = name_agrees(a, mailbox_id, dir, names[i], err, errlen);
		if (agree < 0)
			r = -1;
	}
	if (r > 0 && agree > 0 && watched_since_ms >= 0) {
		struct sync_stamp *old = stamp_find(a, mailbox_id);
		struct sync_stamp now;

		/*
		 * Every change since the stamp was seen and agrees: the stamp moves
		 * on. The folder directory itself (dovecot-keywords, a replaced
		 * new/ or cur/) is not watched: it must be as stamped.
		 */
		if (old != NULL && old->taken_ms > watched_since_ms && folder_stamp(dir, mailbox_id, &now) >= 0 &&
		    now.ino[0] == old->ino[0] && now.sec[0] == old->sec[0] && now.nsec[0] == old->nsec[0] &&
		    now.ino[1] == old->ino[1] && now.ino[2] == old->ino[2]) {
			now.taken_ms = old->taken_ms;
			*old = now;
		}
	}
	/* A name that could not be checked may hide a change: the next SELECT scans. */
	if (r < 0)
		stamp_drop(a, mailbox_id);
	pthread_mutex_unlock(&a->mu);
	if (r < 0)
		return -1;
	if (r == 0) {
		idx_seterr(err, errlen, "mailbox does not exist");
		return -1;
	}
	if (agree > 0)
		return 1;
	if (synced_r != NULL)
		*synced_r = true;
	return idx_sync_mailbox(a, mailbox_id, st, err, errlen);
}

/* Every entry of dir/sub agrees with the index; counts the message files. 1 yes, 0 no, -1. */
static int confirm_dir(struct idx_account *a, uint32_t mbid, const char *dir, const char *sub, uint64_t *nfiles,
    char *err, size_t errlen)
{
	char path[IDX_PATH_MAX + 8], name[MAILDIR_NAME_BUFSIZE + 8];
	struct dirent *de;
	DIR *d;
	int r = 1;

	snprintf(path, sizeof(path), "%s/%s", dir, sub);
	d = opendir(path);
	if (d == NULL) {
		idx_seterr(err, errlen, "opendir %s: %s", path, strerror(errno));
		return -1;
	}
	while (r > 0 && (de = readdir(d)) != NULL) {
		struct maildir_name mn;

		if (de->d_name[0] == '.' || maildir_name_parse(de->d_name, strlen(de->d_name), &mn, NULL, 0) < 0)
			continue; /* not a message file: the complete sync ignores it too */
		snprintf(name, sizeof(name), "%s/%s", sub, de->d_name);
		r = name_agrees(a, mbid, dir, name, err, errlen);
		(*nfiles)++;
	}
	closedir(d);
	return r;
}

int idx_sync_confirm(struct idx_account *a, uint32_t mailbox_id, char *err, size_t errlen)
{
	struct sync_stamp stamp;
	struct idx_mailbox mb;
	char dir[IDX_PATH_MAX];
	uint64_t nfiles = 0;
	int r;

	memset(&mb, 0, sizeof(mb));
	if (op_begin(a, err, errlen) < 0)
		return -1;
	r = mb_load(a, mailbox_id, &mb, err, errlen);
	if (r > 0)
		r = idx_folder_path(a, mb.folder, dir, sizeof(dir), err, errlen);
	/* The stamp first: a change during the walk moves a ctime past it. */
	if (r > 0 && folder_stamp(dir, mailbox_id, &stamp) <= 0)
		r = 0;
	if (r > 0)
		r = confirm_dir(a, mailbox_id, dir, "new", &nfiles, err, errlen);
	if (r > 0)
		r = confirm_dir(a, mailbox_id, dir, "cur", &nfiles, err, errlen);
	/* Every file has its record; the same count means every record its file. */
	if (r > 0 && nfiles != mb.counts.total)
		r = 0;
	if (r > 0 && stamp_store(a, mailbox_id, &stamp, err, errlen) < 0)
		r = -1;
	if (r >= 0) {
		r = op_end(a, r, err, errlen) < 0 ? -1 : r;
		if (r > 0)
			stamp_set(a, &stamp);
	} else {
		(void)op_end(a, -1, err, errlen);
	}
	op_unlock(a);
	idx_mailbox_clear(&mb);
	return r;
}

int idx_sync_all(struct idx_account *a, struct idx_sync_stats *st, char *err, size_t errlen)
{
	struct idx_sync_stats dummy, one;
	struct maildir_folder_list fl;
	struct idx_mailbox *all = NULL;
	size_t nall = 0, i;
	int r;

	/* Messages may get another identity: first make the delivery log unneeded (wal.c). */
	if (idx_checkpoint(a, err, errlen) < 0)
		return -1;

	if (st == NULL)
		st = &dummy;
	memset(st, 0, sizeof(*st));
	if (op_begin(a, err, errlen) < 0)
		return -1;
	r = maildir_folder_list(a->maildir, &fl, err, errlen);
	for (i = 0; r >= 0 && i < fl.count; i++) {
		char canon[IDX_MAILBOX_NAME_MAX + 1];
		uint32_t id;

		if (fl.entries[i].name == NULL ||
		    idx_mailbox_name_check(fl.entries[i].name, canon, sizeof(canon), NULL, 0) < 0)
			continue; /* not a name we produce: left alone */
		r = mb_lookup(a, canon, &id, err, errlen);
		if (r == 0) {
			uint64_t before = a->rec.next_mbid;

			r = mb_create_locked(a, canon, fl.entries[i].dirname, 0, true, NULL, err, errlen);
			st->mailboxes_added += a->rec.next_mbid - before; /* parents too */
		}
	}
	maildir_folder_list_clear(&fl);
	r = op_end(a, r < 0 ? -1 : 1, err, errlen);
	op_unlock(a);
	if (r < 0)
		return -1;
	idx_mailbox_list(a, &all, &nall, err, errlen);
	for (i = 0; i < nall && r >= 0; i++) {
		r = idx_sync_mailbox(a, all[i].id, &one, err, errlen);
		st->added += one.added;
		st->flagged += one.flagged;
		st->removed += one.removed;
	}
	idx_mailbox_list_free(&all, nall);
	return r < 0 ? -1 : 1;
}

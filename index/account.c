/*
 * Opening an account, transactions and the account record.
 *
 * Every public call locks the handle's mutex; every write runs inside one
 * Tokyo Cabinet transaction (op_begin/op_end) that is aborted on any error.
 * The account record is kept in memory (a->rec) and written at commit when
 * it changed; an abort reloads it from the index so memory never runs ahead
 * of the file.
 */
#define _GNU_SOURCE
#include "index/index_private.h"

#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

void idx_seterr(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (err == NULL || errlen == 0)
		return;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

int idx_dberr(struct idx_account *a, char *err, size_t errlen, const char *what)
{
	idx_seterr(err, errlen, "%s: %s: %s", what, a->dbpath, tcbdberrmsg(tcbdbecode(a->db)));
	return -1;
}

void *idx_xmalloc(size_t n)
{
	void *p = malloc(n ? n : 1);

	if (p == NULL)
		abort();
	return p;
}

void *idx_xrealloc(void *p, size_t n)
{
	p = realloc(p, n ? n : 1);
	if (p == NULL)
		abort();
	return p;
}

char *idx_xstrdup(const char *s)
{
	char *p = strdup(s);

	if (p == NULL)
		abort();
	return p;
}

int db_get(struct idx_account *a, const void *k, size_t klen, void **val_r, size_t *len_r, char *err,
    size_t errlen)
{
	int sp = 0;
	void *v = tcbdbget(a->db, k, (int)klen, &sp);

	*val_r = NULL;
	*len_r = 0;
	if (v == NULL) {
		if (tcbdbecode(a->db) == TCENOREC)
			return 0;
		return idx_dberr(a, err, errlen, "read");
	}
	*val_r = v;
	*len_r = (size_t)sp;
	return 1;
}

int db_put(struct idx_account *a, const void *k, size_t klen, const void *v, size_t vlen, char *err,
    size_t errlen)
{
	a->tx_writes++;
	if (!tcbdbput(a->db, k, (int)klen, v, (int)vlen))
		return idx_dberr(a, err, errlen, "write");
	return 1;
}

int db_out(struct idx_account *a, const void *k, size_t klen, char *err, size_t errlen)
{
	a->tx_writes++;
	if (!tcbdbout(a->db, k, (int)klen)) {
		if (tcbdbecode(a->db) == TCENOREC)
			return 0;
		return idx_dberr(a, err, errlen, "delete");
	}
	return 1;
}

static int rec_load(struct idx_account *a, char *err, size_t errlen)
{
	void *v;
	size_t len;
	int r = db_get(a, "A", 1, &v, &len, err, errlen);

	if (r <= 0) {
		if (r == 0)
			idx_seterr(err, errlen, "%s: account record missing", a->dbpath);
		return -1;
	}
	rec_account_clear(&a->rec);
	r = rec_account_decode(v, len, &a->rec);
	tcfree(v);
	if (r < 0) {
		idx_seterr(err, errlen, "%s: account record corrupt", a->dbpath);
		return -1;
	}
	return 1;
}

static int rec_save(struct idx_account *a, char *err, size_t errlen)
{
	TCXSTR *x = tcxstrnew();
	int r;

	rec_account_encode(&a->rec, x);
	r = db_put(a, "A", 1, tcxstrptr(x), (size_t)tcxstrsize(x), err, errlen);
	tcxstrdel(x);
	return r;
}

/*
 * Tokyo Cabinet's write-ahead log (index.tcb.wal) holds the old bytes of
 * every region a transaction changes, each written before its change: an
 * 8-byte file size at the start of the transaction, then entries of an 8-byte
 * offset, a 4-byte length and that many bytes, the first one the 256-byte
 * header. Integers are in the byte order TC was built with (big-endian in
 * Debian's package), found from that first entry (offset 0, length 256).
 * A process killed while it wrote an entry leaves it torn (a write to a file
 * stops short at a fatal signal). TC's open then restores the entries before
 * it but does not read the restored header again: it goes on with the
 * killed transaction's file size past the end it truncated to, and later
 * reads the zeros there as a record ("invalid record header" on a commit;
 * measured: kill -9 during `mox import`, then verifydata -fix). The torn
 * entry's region was never written, so ending the log after the last whole
 * entry makes the restore complete.
 * Only with the file free: TC locks it with fcntl (whole file, for the
 * process) and, within a process, by its real path (tcpathlock). An OFD lock
 * conflicts with another process's fcntl lock, and closing our descriptor
 * drops no lock of this process because the free path lock says it holds
 * none. A file in use is left alone: its log belongs to a live transaction.
 */
static uint64_t tc_u64(const uint8_t *p, bool big)
{
	uint64_t v;

	memcpy(&v, p, sizeof(v));
	return big ? be64_get(p) : le64toh(v);
}

static uint32_t tc_u32(const uint8_t *p, bool big)
{
	uint32_t v;

	memcpy(&v, p, sizeof(v));
	return big ? be32_get(p) : le32toh(v);
}

/* The length of the log's whole entries (8 + entries); 0 when it has none. */
static uint64_t tc_wal_whole(int fd, uint64_t size)
{
	uint8_t h[12], fs[8];
	uint64_t pos = 8, fsiz;
	bool big;

	if (size < 8 + sizeof(h) + 256 || pread(fd, fs, sizeof(fs), 0) != (ssize_t)sizeof(fs) ||
	    pread(fd, h, sizeof(h), 8) != (ssize_t)sizeof(h))
		return 0;
	if (tc_u64(h, true) == 0 && tc_u32(h + 8, true) == 256)
		big = true;
	else if (tc_u64(h, false) == 0 && tc_u32(h + 8, false) == 256)
		big = false;
	else
		return 0; /* not a log we know: TC's own restore decides */
	fsiz = tc_u64(fs, big);
	while (pos + sizeof(h) <= size) {
		if (pread(fd, h, sizeof(h), (off_t)pos) != (ssize_t)sizeof(h))
			break;
		uint64_t off = tc_u64(h, big), len = tc_u32(h + 8, big);
		/* TC logs only regions inside the file's size at the start. */
		if (len == 0 || off > fsiz || len > fsiz - off || len > size - pos - sizeof(h))
			break;
		pos += sizeof(h) + len;
	}
	return pos;
}

int idx_tc_wal_mend(const char *dbpath, uint64_t *cut_r, char *err, size_t errlen)
{
	char *rpath, *walpath;
	struct stat st;
	int r = 1;

	*cut_r = 0;
	rpath = tcrealpath(dbpath);
	if (rpath == NULL)
		return 1; /* no index yet */
	size_t n = strlen(dbpath) + sizeof(".wal");
	walpath = idx_xmalloc(n);
	snprintf(walpath, n, "%s.wal", dbpath);
	if (stat(walpath, &st) == 0 && st.st_size > 0 && tcpathlock(rpath)) {
		int fd = open(dbpath, O_RDWR | O_CLOEXEC);
		struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET };

		if (fd >= 0 && fcntl(fd, F_OFD_SETLK, &fl) == 0) {
			int wfd = open(walpath, O_RDWR | O_CLOEXEC);

			if (wfd >= 0 && fstat(wfd, &st) == 0) {
				uint64_t whole = tc_wal_whole(wfd, (uint64_t)st.st_size);

				if (whole > 0 && whole < (uint64_t)st.st_size) {
					if (ftruncate(wfd, (off_t)whole) < 0) {
						idx_seterr(err, errlen, "%s: cutting a torn entry: %s", walpath, strerror(errno));
						r = -1;
					} else {
						*cut_r = (uint64_t)st.st_size - whole;
					}
				}
			}
			if (wfd >= 0)
				close(wfd);
		}
		if (fd >= 0)
			close(fd);
		tcpathunlock(rpath);
	}
	free(walpath);
	free(rpath);
	return r;
}

int op_begin(struct idx_account *a, char *err, size_t errlen)
{
	pthread_mutex_lock(&a->mu);
	if (!tcbdbtranbegin(a->db)) {
		idx_dberr(a, err, errlen, "begin transaction");
		pthread_mutex_unlock(&a->mu);
		return -1;
	}
	a->in_tx = true;
	a->tx_writes = 0;
	a->rec_dirty = false;
	a->op_modseq = 0;
	return 1;
}

int index_sync_locked(struct idx_account *a, uint64_t target, char *err, size_t errlen)
{
	pthread_mutex_lock(&a->dmu);
	bool failed = a->sync_failed;
	pthread_mutex_unlock(&a->dmu);
	if (failed) {
		idx_seterr(err, errlen, "%s: an earlier fdatasync failed: reopen the account (restart) and run verifydata",
		    a->dbpath);
		return -1;
	}
	if (fdatasync(a->syncfd) < 0) {
		idx_seterr(err, errlen, "%s: fdatasync: %s", a->dbpath, strerror(errno));
		pthread_mutex_lock(&a->dmu);
		a->sync_failed = true;
		pthread_mutex_unlock(&a->dmu);
		return -1;
	}
	pthread_mutex_lock(&a->dmu);
	if (target > a->synced)
		a->synced = target;
	pthread_mutex_unlock(&a->dmu);
	return 1;
}

int op_end(struct idx_account *a, int r, char *err, size_t errlen)
{
	if (r >= 0 && a->rec_dirty && rec_save(a, err, errlen) < 0)
		r = -1;
	if (r >= 0 && !tcbdbtrancommit(a->db)) {
		idx_dberr(a, err, errlen, "commit");
		r = -1;
	}
	/*
	 * A transaction that wrote nothing (a Maildir sync that found the folder
	 * as the index has it, a STORE that changed no flag) committed only what
	 * was durable before: Tokyo Cabinet rewrote its header with the same
	 * bytes. It needs no fdatasync.
	 */
	if (r < 0) {
		/* The commit may have failed half-way: abort whatever is left. */
		(void)tcbdbtranabort(a->db);
		changes_drop(a);
		(void)rec_load(a, NULL, 0);
	} else if (a->tx_writes > 0) {
		uint64_t c;

		bool failed;

		pthread_mutex_lock(&a->dmu);
		c = ++a->committed;
		failed = a->sync_failed;
		pthread_mutex_unlock(&a->dmu);
		if (failed && !a->no_fsync) {
			/* A lost writeback is reported once: nothing after it counts as durable. */
			idx_seterr(err, errlen, "%s: an earlier fdatasync failed: reopen the account (restart) and run "
			    "verifydata", a->dbpath);
			r = -1;
		} else if (a->no_fsync || a->defer_sync) {
			/* nothing now: tests, imports, or idx_durable_wait later */
		} else if (index_sync_locked(a, c, err, errlen) < 0) {
			/* Committed but maybe not on disk: the caller must not acknowledge. The
			 * change stands (it cannot be undone any more); a later sync keeps
			 * files and index consistent. */
			r = -1;
		}
	}
	a->in_tx = false;
	a->rec_dirty = false;
	a->op_modseq = 0;
	return r;
}

void op_unlock(struct idx_account *a)
{
	/* Take the listener lock before giving up the account lock so that
	 * listeners see changes in commit order. */
	pthread_mutex_lock(&a->lmu);
	pthread_mutex_unlock(&a->mu);
	changes_dispatch(a);
	pthread_mutex_unlock(&a->lmu);
}

uint64_t op_modseq(struct idx_account *a)
{
	if (a->op_modseq == 0) {
		a->op_modseq = ++a->rec.highest_modseq;
		a->rec_dirty = true;
	}
	return a->op_modseq;
}

int idx_folder_path(struct idx_account *a, const char *folder, char *buf, size_t size, char *err, size_t errlen)
{
	int n = folder[0] ? snprintf(buf, size, "%s/%s", a->maildir, folder) : snprintf(buf, size, "%s", a->maildir);

	if (n < 0 || (size_t)n >= size) {
		idx_seterr(err, errlen, "path too long: %s/%s", a->maildir, folder);
		return -1;
	}
	return 1;
}

static char *pathjoin(const char *a, const char *b)
{
	size_t n = strlen(a) + strlen(b) + 2;
	char *p = idx_xmalloc(n);

	snprintf(p, n, "%s/%s", a, b);
	return p;
}

/* A new account at schema: the record, INBOX and the configured mailboxes. */
static int account_init(struct idx_account *a, const struct idx_options *o, uint64_t schema, char *err,
    size_t errlen)
{
	static const struct {
		size_t off;
		uint32_t su;
	} su[] = {
		{ offsetof(struct idx_options, sent), IDX_SU_SENT },
		{ offsetof(struct idx_options, archive), IDX_SU_ARCHIVE },
		{ offsetof(struct idx_options, trash), IDX_SU_TRASH },
		{ offsetof(struct idx_options, drafts), IDX_SU_DRAFTS },
		{ offsetof(struct idx_options, junk), IDX_SU_JUNK },
	};
	char canon[IDX_MAILBOX_NAME_MAX + 1];
	size_t i;
	int r;

	rec_account_clear(&a->rec);
	a->rec.schema = schema;
	/*
	 * UIDVALIDITY values start at the clock, as Dovecot's do: an index built
	 * again for the same Maildir (the old one moved aside) hands out values
	 * clients have not seen with other UIDs, so they drop their caches.
	 */
	time_t now = time(NULL);
	a->rec.next_uidvalidity = now > 1 && (uint64_t)now < UINT32_MAX - 100000 ? (uint64_t)now : 1;
	a->rec.next_msgid = 1;
	a->rec.next_mbid = 1;
	a->rec_dirty = true;
	if (mb_create_locked(a, "INBOX", NULL, 0, true, NULL, err, errlen) < 0)
		return -1;
	for (i = 0; i < sizeof(su) / sizeof(su[0]); i++) {
		const char *name = *(const char *const *)((const char *)o + su[i].off);

		if (name == NULL || name[0] == '\0')
			continue;
		if (idx_mailbox_name_check(name, canon, sizeof(canon), err, errlen) < 0)
			return -1;
		r = mb_create_locked(a, canon, NULL, su[i].su, true, NULL, err, errlen);
		if (r < 0)
			return -1;
	}
	for (i = 0; i < o->nregular; i++) {
		if (idx_mailbox_name_check(o->regular[i], canon, sizeof(canon), err, errlen) < 0)
			return -1;
		if (mb_create_locked(a, canon, NULL, 0, true, NULL, err, errlen) < 0)
			return -1;
	}
	return 1;
}

/* Message records the step 1 -> 2 reads per cursor walk. */
#define UPGRADE_BATCH 1024

/*
 * Schema 1 -> 2: a 'J' key (base subject -> id, index/SCHEMA.md) for every
 * live message with a non-empty base subject. Streams the 'U' range in
 * batches: a cursor collects UPGRADE_BATCH records, is closed (nothing is
 * written while a cursor is open), the keys are written, and the next walk
 * starts after the last key read. Corrupt records are skipped (verifydata
 * reports them). Memory stays at one batch whatever the account's size.
 */
static int upgrade_1_2(struct idx_account *a, char *err, size_t errlen)
{
	TCLIST *keys = tclistnew2(UPGRADE_BATCH), *vals = tclistnew2(UPGRADE_BATCH);
	TCXSTR *x = tcxstrnew(), *last = tcxstrnew();
	char type = K_MSG;
	int r = 1, i;
	bool more = true;

	tcxstrcat(last, &type, 1);
	while (more && r > 0) {
		BDBCUR *cur = tcbdbcurnew(a->db);

		tclistclear(keys);
		tclistclear(vals);
		more = false;
		if (tcbdbcurjump(cur, tcxstrptr(last), tcxstrsize(last))) {
			for (;;) {
				int ks, vs;
				const uint8_t *kp = tcbdbcurkey3(cur, &ks);
				const void *vp;

				if (kp == NULL || ks < 1 || kp[0] != K_MSG)
					break;
				/* The walk after the first starts at the last key read. */
				if (!(ks == tcxstrsize(last) && memcmp(kp, tcxstrptr(last), (size_t)ks) == 0)) {
					if (tclistnum(keys) == UPGRADE_BATCH) {
						more = true;
						break;
					}
					vp = tcbdbcurval3(cur, &vs);
					tclistpush(keys, kp, ks);
					tclistpush(vals, vp != NULL ? vp : "", vp != NULL ? vs : 0);
				}
				if (!tcbdbcurnext(cur))
					break;
			}
		}
		tcbdbcurdel(cur);
		for (i = 0; i < tclistnum(keys) && r > 0; i++) {
			int ks, vs;
			const uint8_t *kp = tclistval(keys, i, &ks);
			const void *vp = tclistval(vals, i, &vs);
			struct idx_message m;

			if (ks == 9 && rec_message_decode(vp, (size_t)vs, be32_get(kp + 1), be32_get(kp + 5), &m) > 0) {
				if (key_subject(x, m.subject_base, m.id, true))
					r = db_put(a, tcxstrptr(x), (size_t)tcxstrsize(x), "", 0, err, errlen);
				idx_message_clear(&m);
			}
			tcxstrclear(last);
			tcxstrcat(last, kp, ks);
		}
	}
	tcxstrdel(x);
	tcxstrdel(last);
	tclistdel(keys);
	tclistdel(vals);
	return r > 0 ? 1 : -1;
}

/*
 * The schema upgrade steps, in order: upgrades[i] takes schema i + 1 to i + 2
 * (index/SCHEMA.md "Upgrades" says what adding one involves). The last entry
 * only ends the table.
 */
static const struct idx_upgrade upgrades[] = {
	{ 1, "base subject keys", upgrade_1_2 },
	{ 0, NULL, NULL },
};
_Static_assert(sizeof(upgrades) / sizeof(upgrades[0]) - 1 == IDX_SCHEMA - 1,
    "one upgrade step per schema version after 1");

/*
 * Bring the index loaded into a->rec (schema older than nsteps + 1) up to
 * date: every step from its schema on, in one transaction, so that a failure
 * (a step's, or the commit's) leaves the file exactly as it was. Called with
 * the handle unlocked. 1, or -1 with err.
 */
static int schema_upgrade(struct idx_account *a, const struct idx_upgrade *steps, size_t nsteps, char *err,
    size_t errlen)
{
	uint64_t from = a->rec.schema, to = (uint64_t)nsteps + 1, v;
	char why[512] = "";
	const char *what = "commit";
	int r = 1;

	if (op_begin(a, why, sizeof(why)) < 0) {
		idx_seterr(err, errlen, "%s: index upgrade from schema %llu to %llu: %s", a->dbpath,
		    (unsigned long long)from, (unsigned long long)to, why);
		return -1;
	}
	for (v = from; v < to && r >= 0; v++) {
		const struct idx_upgrade *s = &steps[v - 1];

		what = s->what != NULL ? s->what : "?";
		if (s->from != v || s->run == NULL) {
			snprintf(why, sizeof(why), "upgrade table out of order at step %llu", (unsigned long long)v);
			r = -1;
		} else if ((r = s->run(a, why, sizeof(why))) >= 0) {
			a->rec.schema = v + 1;
			a->rec_dirty = true;
		}
	}
	if (r >= 0)
		what = "commit";
	r = op_end(a, r, why, sizeof(why));
	op_unlock(a);
	if (r < 0) {
		/* v - 1 is the failed step (or the last one, for the commit). */
		idx_seterr(err, errlen,
		    "%s: index upgrade from schema %llu to %llu failed at %llu -> %llu (%s): %s; "
		    "nothing changed, the index is still at schema %llu",
		    a->dbpath, (unsigned long long)from, (unsigned long long)to, (unsigned long long)(v - 1),
		    (unsigned long long)v, what, why, (unsigned long long)from);
		return -1;
	}
	return 1;
}

int idx_account_open(const char *dir, const struct idx_options *opts, struct idx_account **acct_r, char *err,
    size_t errlen)
{
	return idx_account_open_upgrades(dir, opts, upgrades, sizeof(upgrades) / sizeof(upgrades[0]) - 1,
	    opts == NULL || !opts->no_upgrade, acct_r, err, errlen);
}

int idx_account_open_upgrades(const char *dir, const struct idx_options *opts, const struct idx_upgrade *steps,
    size_t nsteps, bool upgrade, struct idx_account **acct_r, char *err, size_t errlen)
{
	static const struct idx_options defaults;
	const uint64_t schema = (uint64_t)nsteps + 1;
	struct idx_account *a;
	int omode, r;
	void *v;
	size_t len;

	*acct_r = NULL;
	if (opts == NULL)
		opts = &defaults;
	if (mkdir(dir, 0700) < 0 && errno != EEXIST) {
		idx_seterr(err, errlen, "mkdir %s: %s", dir, strerror(errno));
		return -1;
	}
	a = calloc(1, sizeof(*a));
	if (a == NULL)
		abort();
	a->syncfd = -1;
	pthread_mutex_init(&a->mu, NULL);
	pthread_mutex_init(&a->lmu, NULL);
	pthread_mutex_init(&a->dmu, NULL);
	a->dir = idx_xstrdup(dir);
	a->maildir = pathjoin(dir, "Maildir");
	a->dbpath = pathjoin(dir, "index.tcb");
	a->quota = opts->quota;
	a->no_fsync = opts->no_fsync;
	a->no_log = opts->no_log;
	if (opts->host != NULL && opts->host[0] != '\0') {
		snprintf(a->host, sizeof(a->host), "%s", opts->host);
	} else if (gethostname(a->host, sizeof(a->host) - 1) < 0 || a->host[0] == '\0') {
		snprintf(a->host, sizeof(a->host), "localhost");
	}
	a->host[sizeof(a->host) - 1] = '\0';
	if (maildir_folder_create(a->maildir, "", err, errlen) < 0)
		goto fail;
	a->db = tcbdbnew();
	/*
	 * Automatic defragmentation. Tokyo Cabinet writes a changed B+tree page to
	 * a new place when it grew and leaves the old block free; one message per
	 * transaction (a single SMTP delivery) changes a few pages each time, and
	 * the free blocks piled up: index.tcb grew to ~1,290 bytes/msg against ~650
	 * when the same messages came in large batches. With a unit of 8, once more
	 * than 8 blocks were freed the next page write runs one defragmentation
	 * step: at most 17 (2 * 8 + 1) records move down into the free space. The
	 * moves are ordinary writes of the running transaction (in its write-ahead
	 * log), so an abort or a crash rolls them back with it; a failed step fails
	 * that write and the operation aborts.
	 * Measured here, 10,000 messages one per idx_add: deliverbench seq
	 * 1,260-1,310 -> 690-800 bytes/msg; small messages 900-920 -> 490-530.
	 * Cost: none measurable. idx_add with fdatasync, two accounts fed
	 * alternately (the same disk time), 5,000 messages each, four runs:
	 * 0.91-1.12 ms/msg without, 0.90-1.11 with; without fsync 170-210 us
	 * either way; deliverbench seq msg/s within its run-to-run noise. Units
	 * of 32 and 128 gave about the same; apow 4 or 6 and fpow 12 left the
	 * size within 3%.
	 */
	if (!tcbdbsetdfunit(a->db, 8)) {
		idx_dberr(a, err, errlen, "defrag unit");
		goto fail;
	}
	if (!tcbdbtune(a->db, 0, 0, 0, -1, -1, 0)) {
		idx_dberr(a, err, errlen, "tune");
		goto fail;
	}
	/*
	 * Leaf and node cache, kept small on purpose. Tokyo Cabinet walks every
	 * cached leaf at each transaction's begin and commit (tcbdbmemsync looks
	 * for dirty ones), so each cached leaf costs every write: measured with TC
	 * alone, a one-record transaction with a full cache of 256 / 512 / 1024 /
	 * 2048 / 4096 leaves took 24 / 30 / 43 / 97 / 193 us. With 4096 an SMTP
	 * delivery after a SELECT of a 100,000-message mailbox went from about
	 * 1,200 to 950 msg/s at one connection (the storage thread 300 -> 480 us
	 * a message). A mailbox whose message range exceeds the cache is reread
	 * from the file by each SELECT whatever the size below 4096 (SELECT +
	 * FETCH 1:* of 100,000 messages, warm: 78 ms with 256, 512 or 1024, 48 ms
	 * with 4096), so the larger cache only paid for very large mailboxes and
	 * made every write pay for it.
	 */
	if (!tcbdbsetcache(a->db, 512, 1024)) {
		idx_dberr(a, err, errlen, "cache");
		goto fail;
	}
	/*
	 * Not BDBOTSYNC: with it Tokyo Cabinet fsyncs its write-ahead log for every
	 * page a transaction writes (measured: 11 fsyncs for one STORE, ~40 ms under
	 * load). Instead a commit is made durable with one fdatasync of the file
	 * (op_end), or by the delivery log and its checkpoints (wal.c). A process
	 * crash (kill -9) is still recovered by TC's WAL from the page cache (once
	 * idx_tc_wal_mend cut a torn last entry of it); a power loss can damage
	 * the index, after the delivery log's replay restored the files it holds
	 * (index/SCHEMA.md "Delivery log" says what is not covered and how an
	 * unreadable index is built again from the Maildir).
	 */
	if (idx_tc_wal_mend(a->dbpath, &a->tcwal_cut, err, errlen) < 0)
		goto fail;
	omode = BDBOWRITER | BDBOCREAT | BDBOLCKNB;
	if (!tcbdbopen(a->db, a->dbpath, omode)) {
		int ecode = tcbdbecode(a->db);

		/* A held lock shows as TCELOCK or, from the fcntl lock, TCETHREAD. */
		if (ecode == TCELOCK || ecode == TCETHREAD)
			idx_seterr(err, errlen, "account %s is in use by another process", dir);
		else
			idx_dberr(a, err, errlen, "open");
		tcbdbdel(a->db);
		a->db = NULL;
		goto fail;
	}
	a->syncfd = open(a->dbpath, O_RDONLY | O_CLOEXEC);
	if (a->syncfd < 0) {
		idx_seterr(err, errlen, "%s: %s", a->dbpath, strerror(errno));
		goto fail;
	}
	pthread_mutex_lock(&a->mu);
	r = db_get(a, "A", 1, &v, &len, err, errlen);
	if (r > 0) {
		r = rec_account_decode(v, len, &a->rec);
		tcfree(v);
		if (r < 0)
			idx_seterr(err, errlen, "%s: account record corrupt", a->dbpath);
		else if (a->rec.schema > schema || a->rec.schema == 0) {
			idx_seterr(err, errlen, "%s: index schema %llu not supported (newer program?)", a->dbpath,
			    (unsigned long long)a->rec.schema);
			r = -1;
		} else if (a->rec.schema < schema && !upgrade) {
			idx_seterr(err, errlen,
			    "%s: index needs upgrade from schema %llu to %llu, run mox verifydata -fix on the "
			    "stopped data directory (or start the server)",
			    a->dbpath, (unsigned long long)a->rec.schema, (unsigned long long)schema);
			r = -1;
		}
		pthread_mutex_unlock(&a->mu);
		if (r > 0 && a->rec.schema < schema)
			r = schema_upgrade(a, steps, nsteps, err, errlen);
	} else if (r == 0) {
		pthread_mutex_unlock(&a->mu);
		if (op_begin(a, err, errlen) < 0)
			goto fail;
		r = op_end(a, account_init(a, opts, schema, err, errlen), err, errlen);
		op_unlock(a);
	} else {
		pthread_mutex_unlock(&a->mu);
	}
	/* The delivery log: replay what a crash left before anyone reads the index. */
	if (r > 0)
		r = wal_open(a, err, errlen);
	if (r < 0)
		goto fail;
	*acct_r = a;
	return 1;
fail:
	idx_account_close(&a);
	return -1;
}

void idx_account_close(struct idx_account **ap)
{
	struct idx_account *a;

	if (ap == NULL || *ap == NULL)
		return;
	a = *ap;
	*ap = NULL;
	wal_close(a);
	if (a->db != NULL) {
		(void)tcbdbclose(a->db);
		tcbdbdel(a->db);
	}
	if (a->syncfd >= 0) {
		if (!a->no_fsync)
			(void)fdatasync(a->syncfd); /* what close wrote back from TC's cache */
		close(a->syncfd);
	}
	while (a->listeners != NULL) {
		struct idx_listener *l = a->listeners;

		idx_unlisten(&l);
	}
	changes_drop(a);
	free(a->pend);
	free(a->stamps);
	rec_account_clear(&a->rec);
	free(a->dir);
	free(a->maildir);
	free(a->dbpath);
	pthread_mutex_destroy(&a->mu);
	pthread_mutex_destroy(&a->lmu);
	pthread_mutex_destroy(&a->dmu);
	free(a);
}

const char *idx_account_dir(const struct idx_account *a)
{
	return a->dir;
}

const char *idx_account_maildir(const struct idx_account *a)
{
	return a->maildir;
}

void idx_account_set_quota(struct idx_account *a, uint64_t quota)
{
	pthread_mutex_lock(&a->mu);
	a->quota = quota;
	pthread_mutex_unlock(&a->mu);
}

bool idx_account_writable(struct idx_account *a)
{
	pthread_mutex_lock(&a->dmu);
	bool failed = a->sync_failed;
	pthread_mutex_unlock(&a->dmu);
	return !failed;
}

int idx_account_info(struct idx_account *a, struct idx_account_info *info_r, char *err, size_t errlen)
{
	BDBCUR *cur;
	uint8_t k[1] = { K_MAILBOX };
	uint32_t n = 0;

	memset(info_r, 0, sizeof(*info_r));
	pthread_mutex_lock(&a->mu);
	info_r->highest_modseq = a->rec.highest_modseq;
	info_r->quota_used = a->rec.quota_used;
	info_r->quota = a->quota;
	info_r->wal_applied = a->wal_applied;
	info_r->wal_restored = a->wal_restored;
	info_r->wal_dropped = a->wal_dropped;
	info_r->tc_wal_cut = a->tcwal_cut;
	snprintf(info_r->wal_error, sizeof(info_r->wal_error), "%s", a->wal_error);
	cur = tcbdbcurnew(a->db);
	if (tcbdbcurjump(cur, k, 1)) {
		int ks;
		const char *kp;

		while ((kp = tcbdbcurkey3(cur, &ks)) != NULL && ks == 5 && kp[0] == K_MAILBOX) {
			n++;
			if (!tcbdbcurnext(cur))
				break;
		}
	}
	tcbdbcurdel(cur);
	pthread_mutex_unlock(&a->mu);
	info_r->nmailboxes = n;
	(void)err;
	(void)errlen;
	return 1;
}

int idx_secrets_set(struct idx_account *a, const void *blob, size_t len, char *err, size_t errlen)
{
	int r;

	if (op_begin(a, err, errlen) < 0)
		return -1;
	free(a->rec.secrets);
	a->rec.secrets = NULL;
	a->rec.secrets_len = 0;
	if (len > 0) {
		a->rec.secrets = idx_xmalloc(len);
		memcpy(a->rec.secrets, blob, len);
		a->rec.secrets_len = len;
	}
	a->rec_dirty = true;
	r = op_end(a, 1, err, errlen);
	op_unlock(a);
	return r;
}

int idx_secrets_get(struct idx_account *a, void **blob_r, size_t *len_r, char *err, size_t errlen)
{
	int r = 0;

	*blob_r = NULL;
	*len_r = 0;
	pthread_mutex_lock(&a->mu);
	if (a->rec.secrets_len > 0) {
		*blob_r = idx_xmalloc(a->rec.secrets_len);
		memcpy(*blob_r, a->rec.secrets, a->rec.secrets_len);
		*len_r = a->rec.secrets_len;
		r = 1;
	}
	pthread_mutex_unlock(&a->mu);
	return r;
}

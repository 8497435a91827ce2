/*
 * Messages: adding (group commit), reading, flags, expunge.
 *
 * Order of file and index work, so that a crash anywhere is repaired by the
 * Maildir sync without losing or duplicating mail:
 * - add: files are linked into new/ or cur/ and their directories fsynced
 *   before the index commits; a failed commit unlinks them again. A crash in
 *   between leaves a file the index does not know: the sync adopts it.
 * - store: the file is renamed first, then the index records the new flags;
 *   a crash in between leaves a name whose flags the sync takes over.
 * - expunge: the file is unlinked first, then the record becomes a
 *   tombstone; a crash in between leaves a record without a file, which the
 *   sync turns into a tombstone.
 * Copy and move (copy.c) follow the same rule:
 * files first, index second, and undo the files when the index fails.
 */
#define _GNU_SOURCE
#include "index/index_private.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* System flags and their Maildir letters (SCHEMA.md): one table for both directions. */
static const struct {
	uint32_t idx;
	unsigned maildir;
} flag_map[] = {
	{IDX_SEEN, MAILDIR_FLAG_SEEN},
	{IDX_ANSWERED, MAILDIR_FLAG_REPLIED},
	{IDX_FLAGGED, MAILDIR_FLAG_FLAGGED},
	{IDX_DELETED, MAILDIR_FLAG_TRASHED},
	{IDX_DRAFT, MAILDIR_FLAG_DRAFT},
	{IDX_FORWARDED, MAILDIR_FLAG_PASSED},
};

unsigned idx_flags_to_maildir(uint32_t f)
{
	unsigned m = 0;

	for (size_t i = 0; i < sizeof(flag_map) / sizeof(flag_map[0]); i++)
		if (f & flag_map[i].idx)
			m |= flag_map[i].maildir;
	return m;
}

uint32_t idx_flags_from_maildir(unsigned m)
{
	uint32_t f = 0;

	for (size_t i = 0; i < sizeof(flag_map) / sizeof(flag_map[0]); i++)
		if (m & flag_map[i].maildir)
			f |= flag_map[i].idx;
	return f;
}

const char *msg_basename(const char *filename)
{
	const char *s = strchr(filename, '/');

	return s ? s + 1 : filename;
}

/* The base (Maildir identity) of a stored filename. */
static int file_base(const char *filename, const char **base_r, size_t *len_r)
{
	struct maildir_name n;
	const char *name = msg_basename(filename);

	if (maildir_name_parse(name, strlen(name), &n, NULL, 0) < 0)
		return -1;
	*base_r = n.base;
	*len_r = n.base_len;
	return 1;
}

bool kw_is_forwarded(const char *kw)
{
	return strcasecmp(kw, IDX_KW_FORWARDED) == 0;
}

/*
 * IDX_FORWARDED goes into names twice: Maildir 'P' for mutt, mblaze and
 * notmuch, and the letter of the keyword "$Forwarded" for Dovecot, which
 * ignores 'P' and keeps $Forwarded as an ordinary keyword letter. Reading
 * takes either as the flag, so a name written by any of them round-trips.
 */
unsigned msg_name_letters(struct maildir_keywords *kw, uint32_t flags, char *const *keywords, size_t n, bool assign,
    uint32_t *letters_r, bool *grew_r)
{
	uint32_t bits = 0;
	bool grew = false;

	for (size_t i = 0; i <= n; i++) {
		const char *name = i < n ? keywords[i] : IDX_KW_FORWARDED;
		bool added = false;
		int l;

		if (i == n && !(flags & IDX_FORWARDED))
			break;
		if (i < n && kw_is_forwarded(name))
			continue; /* the flag, handled above */
		if (assign)
			l = maildir_keywords_assign(kw, name, &added, NULL, 0);
		else
			l = maildir_keywords_lookup(kw, name);
		if (l < 'a' || l > 'z')
			continue; /* no letter free: the keyword lives only in the index */
		bits |= 1u << (l - 'a');
		grew |= added;
	}
	*letters_r = bits;
	if (grew_r != NULL)
		*grew_r = grew;
	return idx_flags_to_maildir(flags);
}

uint32_t msg_name_flags(const struct maildir_keywords *kw, unsigned mflags, uint32_t letters)
{
	uint32_t f = idx_flags_from_maildir(mflags);

	for (int i = 0; i < 26 && !(f & IDX_FORWARDED); i++) {
		const char *name = (letters & (1u << i)) ? maildir_keywords_name(kw, 'a' + i) : NULL;

		if (name != NULL && kw_is_forwarded(name))
			f |= IDX_FORWARDED;
	}
	return f;
}

const char *msg_name_keyword(const struct maildir_keywords *kw, uint32_t letters, int i)
{
	const char *name = (letters & (1u << i)) ? maildir_keywords_name(kw, 'a' + i) : NULL;

	return name == NULL || kw_is_forwarded(name) ? NULL : name;
}

int msg_load(struct idx_account *a, uint32_t mbid, uint32_t uid, struct idx_message *m_r, char *err, size_t errlen)
{
	uint8_t k[9];
	void *v;
	size_t len;
	int r;

	memset(m_r, 0, sizeof(*m_r));
	r = db_get(a, k, key_mbuid(k, K_MSG, mbid, uid), &v, &len, err, errlen);
	if (r <= 0)
		return r;
	r = rec_message_decode(v, len, mbid, uid, m_r);
	tcfree(v);
	if (r < 0)
		idx_seterr(err, errlen, "%s: message %u/%u: corrupt record", a->dbpath, mbid, uid);
	return r;
}

/* Load by account-wide id: 1, 0, -1. */
static int msg_load_id(struct idx_account *a, uint64_t id, struct idx_message *m_r, char *err, size_t errlen)
{
	uint8_t k[9];
	void *v;
	size_t len;
	int r;

	memset(m_r, 0, sizeof(*m_r));
	r = db_get(a, k, key_id(k, K_ID, id), &v, &len, err, errlen);
	if (r <= 0)
		return r;
	if (len != 8) {
		tcfree(v);
		idx_seterr(err, errlen, "%s: id key %llu: corrupt", a->dbpath, (unsigned long long)id);
		return -1;
	}
	r = msg_load(a, be32_get(v), be32_get((uint8_t *)v + 4), m_r, err, errlen);
	tcfree(v);
	return r;
}

int msg_load_id_locked(struct idx_account *a, uint64_t id, struct idx_message *m_r, char *err, size_t errlen)
{
	return msg_load_id(a, id, m_r, err, errlen);
}

int msg_store(struct idx_account *a, const struct idx_message *m, char *err, size_t errlen)
{
	uint8_t k[9];
	TCXSTR *x = tcxstrnew();
	int r;

	rec_message_encode(m, x);
	r = db_put(a, k, key_mbuid(k, K_MSG, m->mailbox_id, m->uid), tcxstrptr(x), (size_t)tcxstrsize(x), err,
	    errlen);
	tcxstrdel(x);
	return r;
}

int msg_insert(struct idx_account *a, const struct idx_message *m, const void *cache, size_t cachelen, char *err,
    size_t errlen)
{
	uint8_t k[17], v[8];
	TCXSTR *x = tcxstrnew();
	const char *base;
	size_t blen;
	int r;

	if (file_base(m->filename, &base, &blen) < 0) {
		idx_seterr(err, errlen, "bad message file name %s", m->filename);
		tcxstrdel(x);
		return -1;
	}
	r = msg_store(a, m, err, errlen);
	be32_put(v, m->mailbox_id);
	be32_put(v + 4, m->uid);
	if (r > 0)
		r = db_put(a, k, key_id(k, K_ID, m->id), v, 8, err, errlen);
	if (r > 0) {
		key_file(x, m->mailbox_id, base, blen);
		be32_put(v, m->uid);
		r = db_put(a, tcxstrptr(x), (size_t)tcxstrsize(x), v, 4, err, errlen);
	}
	if (r > 0 && m->message_id[0] != '\0') {
		key_msgid(x, K_MSGID, m->message_id, m->id, true);
		r = db_put(a, tcxstrptr(x), (size_t)tcxstrsize(x), "", 0, err, errlen);
	}
	if (r > 0 && key_subject(x, m->subject_base, m->id, true))
		r = db_put(a, tcxstrptr(x), (size_t)tcxstrsize(x), "", 0, err, errlen);
	if (r > 0)
		r = db_put(a, k, key_thread(k, m->thread_id, m->id), "", 0, err, errlen);
	if (r > 0 && cache != NULL)
		r = db_put(a, k, key_id(k, K_CACHE, m->id), cache, cachelen, err, errlen);
	tcxstrdel(x);
	return r < 0 ? -1 : 1;
}

int msg_remove(struct idx_account *a, const struct idx_message *m, uint64_t tomb_modseq, bool keep_id, char *err,
    size_t errlen)
{
	uint8_t k[17], v[16];
	TCXSTR *x = tcxstrnew();
	const char *base;
	size_t blen;
	int r;

	r = db_out(a, k, key_mbuid(k, K_MSG, m->mailbox_id, m->uid), err, errlen);
	if (r >= 0 && file_base(m->filename, &base, &blen) > 0) {
		key_file(x, m->mailbox_id, base, blen);
		r = db_out(a, tcxstrptr(x), (size_t)tcxstrsize(x), err, errlen);
	}
	if (r >= 0 && !keep_id) {
		r = db_out(a, k, key_id(k, K_ID, m->id), err, errlen);
		if (r >= 0)
			r = db_out(a, k, key_id(k, K_CACHE, m->id), err, errlen);
		if (r >= 0)
			r = db_out(a, k, key_thread(k, m->thread_id, m->id), err, errlen);
		if (r >= 0 && m->message_id[0] != '\0') {
			key_msgid(x, K_MSGID, m->message_id, m->id, true);
			r = db_out(a, tcxstrptr(x), (size_t)tcxstrsize(x), err, errlen);
		}
		if (r >= 0 && key_subject(x, m->subject_base, m->id, true))
			r = db_out(a, tcxstrptr(x), (size_t)tcxstrsize(x), err, errlen);
	}
	if (r >= 0 && tomb_modseq != 0) {
		be64_put(v, tomb_modseq);
		be64_put(v + 8, m->id);
		r = db_put(a, k, key_mbuid(k, K_TOMB, m->mailbox_id, m->uid), v, 16, err, errlen);
	}
	tcxstrdel(x);
	return r < 0 ? -1 : 1;
}

int msg_parse_fd(int fd, uint64_t size, struct mime_msg **msg_r, char *err, size_t errlen)
{
	void *p;

	*msg_r = NULL;
	if (size == 0)
		return mime_parse("", 0, NULL, msg_r) > 0 ? 1 : -1;
	if (size > SIZE_MAX) {
		idx_seterr(err, errlen, "message too large to map");
		return -1;
	}
	p = mmap(NULL, (size_t)size, PROT_READ, MAP_PRIVATE, fd, 0);
	if (p == MAP_FAILED) {
		idx_seterr(err, errlen, "mmap: %s", strerror(errno));
		return -1;
	}
	mime_parse(p, (size_t)size, NULL, msg_r);
	munmap(p, (size_t)size);
	return 1;
}

/* Message-ID and base subject from a parsed message into m (never NULL). */
static void msg_set_thread_inputs(struct idx_message *m, const struct mime_msg *msg)
{
	const char *id = msg && msg->msgid ? msg->msgid : "";
	const char *subj = msg && msg->base_subject ? msg->base_subject : "";

	if (strlen(id) > IDX_MSGID_MAX)
		id = "";
	m->message_id = idx_xstrdup(id);
	m->subject_base = strlen(subj) > 1000 ? strndup(subj, 1000) : idx_xstrdup(subj);
	if (m->subject_base == NULL)
		abort();
}

/* ---- keywords ---- */

/* True when keyword is the $Forwarded flag. */
/* Validate client keywords: 1, or IDX_REFUSED with err. */
static int kw_check(const char *const *kws, size_t n, char *err, size_t errlen)
{
	if (n > IDX_KEYWORDS_PER_MESSAGE) {
		idx_seterr(err, errlen, "too many keywords");
		return IDX_REFUSED;
	}
	for (size_t i = 0; i < n; i++) {
		if (kws[i] == NULL || !maildir_keyword_valid(kws[i]) || strlen(kws[i]) > IDX_KEYWORD_MAX) {
			idx_seterr(err, errlen, "invalid keyword");
			return IDX_REFUSED;
		}
	}
	return 1;
}

static bool kw_has(char *const *v, size_t n, const char *kw)
{
	for (size_t i = 0; i < n; i++)
		if (strcasecmp(v[i], kw) == 0)
			return true;
	return false;
}

/* Per-folder keyword table, loaded lazily, written when it grows. */
struct kwtab {
	struct maildir_keywords kw;
	bool loaded;
};

static int kwtab_load(struct kwtab *t, const char *folderdir, char *err, size_t errlen)
{
	if (t->loaded)
		return 1;
	maildir_keywords_init(&t->kw);
	if (maildir_keywords_read(&t->kw, folderdir, err, errlen) < 0)
		return -1;
	t->loaded = true;
	return 1;
}

/* Assign letters to keywords and, with IDX_FORWARDED in flags, to
 * $Forwarded (those that fit in 26), and write the table before any file
 * name uses a new letter. Returns the letter bits, or -1. */
static int64_t kwtab_letters(struct kwtab *t, const char *folderdir, uint32_t flags, char *const *kws, size_t n,
    char *err, size_t errlen)
{
	uint32_t bits = 0;
	bool dirty = false;

	if (n == 0 && !(flags & IDX_FORWARDED))
		return 0; /* no letter needed: the table is not read (a delivery's common case) */
	if (kwtab_load(t, folderdir, err, errlen) < 0)
		return -1;
	(void)msg_name_letters(&t->kw, flags, kws, n, true, &bits, &dirty);
	if (dirty && maildir_keywords_write(&t->kw, folderdir, err, errlen) < 0)
		return -1;
	return bits;
}

static void kwtab_clear(struct kwtab *t)
{
	if (t->loaded)
		maildir_keywords_clear(&t->kw);
	t->loaded = false;
}

/* ---- adding ---- */

struct add_folder {
	uint32_t mbid;
	struct idx_mailbox mb;
	char path[IDX_PATH_MAX];
	struct kwtab kw;
	bool touched, kwgrew, link_new, link_cur;
};

struct add_parsed {
	struct maildir_writer *w;
	struct mime_msg *msg;
	TCXSTR *cache;
	uint8_t *data; /* the file's bytes when it may be logged (up to WAL_MSG_MAX), else NULL */
};

struct add_state {
	struct add_folder *f;
	size_t nf;
	struct add_parsed *p;
	size_t np;
	char (*linked)[IDX_PATH_MAX + MAILDIR_NAME_BUFSIZE + 8]; /* files linked, unlinked again on failure */
	size_t nlinked;
	struct add_link *links; /* planned by add_one, made after the files are synced */
	size_t nlinks;
	int64_t now;
};

/* A link add_one planned: the record already names the file. */
struct add_link {
	struct idx_add *it;
	size_t fi; /* the folder: add_state.f[fi] */
	enum maildir_subdir sub;
	unsigned mflags;
	uint32_t letters;
	char name[MAILDIR_NAME_BUFSIZE];
};

static void item_fail(struct idx_add *it, int error, const char *msg)
{
	it->result = -1;
	it->error = error;
	snprintf(it->err_r, sizeof(it->err_r), "%s", msg);
}

static struct add_folder *add_folder_get(struct idx_account *a, struct add_state *s, uint32_t mbid, char *err,
    size_t errlen, int *r_r)
{
	size_t i;
	struct add_folder *f;

	for (i = 0; i < s->nf; i++)
		if (s->f[i].mbid == mbid)
			return &s->f[i];
	s->f = idx_xrealloc(s->f, sizeof(*s->f) * (s->nf + 1));
	f = &s->f[s->nf];
	memset(f, 0, sizeof(*f));
	f->mbid = mbid;
	*r_r = mb_load(a, mbid, &f->mb, err, errlen);
	if (*r_r <= 0)
		return NULL;
	if (idx_folder_path(a, f->mb.folder, f->path, sizeof(f->path), err, errlen) < 0) {
		idx_mailbox_clear(&f->mb);
		*r_r = -1;
		return NULL;
	}
	s->nf++;
	return f;
}

static struct add_parsed *add_parse(struct add_state *s, struct maildir_writer *w, bool keep, char *err,
    size_t errlen)
{
	struct add_parsed *p;
	uint64_t size;
	int fd;
	size_t i;

	for (i = 0; i < s->np; i++)
		if (s->p[i].w == w)
			return &s->p[i];
	fd = open(maildir_writer_path(w), O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		idx_seterr(err, errlen, "open %s: %s", maildir_writer_path(w), strerror(errno));
		return NULL;
	}
	s->p = idx_xrealloc(s->p, sizeof(*s->p) * (s->np + 1));
	p = &s->p[s->np];
	memset(p, 0, sizeof(*p));
	size = maildir_writer_size(w);
	if (keep && size > 0 && size <= WAL_MSG_MAX) {
		/* Read once: parsed here and written to the delivery log from the same bytes (a logged
		 * batch fits in the log, so what is kept is bounded by its size). */
		size_t got = 0;
		int rr;
		p->data = idx_xmalloc((size_t)size);
		if ((rr = full_pread(fd, p->data, (size_t)size, 0, &got)) < 0 || got != size) {
			idx_seterr(err, errlen, "read %s: %s", maildir_writer_path(w),
			    rr < 0 ? strerror(errno) : "shorter than written");
			free(p->data);
			close(fd);
			return NULL;
		}
		mime_parse((const char *)p->data, (size_t)size, NULL, &p->msg);
	} else if (msg_parse_fd(fd, size, &p->msg, err, errlen) < 0) {
		close(fd);
		return NULL;
	}
	close(fd);
	p->w = w;
	p->cache = tcxstrnew();
	if (p->msg != NULL)
		mime_cache_encode(p->msg, p->cache);
	s->np++;
	return p;
}

static void add_state_clear(struct add_state *s)
{
	size_t i;

	for (i = 0; i < s->nf; i++) {
		idx_mailbox_clear(&s->f[i].mb);
		kwtab_clear(&s->f[i].kw);
	}
	free(s->f);
	for (i = 0; i < s->np; i++) {
		mime_msg_free(&s->p[i].msg);
		tcxstrdel(s->p[i].cache);
		free(s->p[i].data);
	}
	free(s->p);
	free(s->linked);
	free(s->links);
}

/*
 * One item: thread, letters, records naming the file it will have; the link
 * itself waits for the file's sync (add_links). 1 added, 0 item failed, -1
 * batch failed.
 */
static int add_one(struct idx_account *a, struct add_state *s, struct add_folder *f, struct add_parsed *p,
    struct idx_add *it, uint32_t want_uid, char *err, size_t errlen)
{
	struct idx_message m;
	char name[MAILDIR_NAME_BUFSIZE], ierr[160];
	enum maildir_subdir sub;
	unsigned mflags;
	int64_t letters;
	size_t i;
	int r;

	memset(&m, 0, sizeof(m));
	m.id = a->rec.next_msgid++;
	a->rec_dirty = true;
	m.mailbox_id = f->mbid;
	m.uid = want_uid >= f->mb.uidnext && want_uid < UINT32_MAX ? want_uid : f->mb.uidnext;
	m.modseq = m.createseq = op_modseq(a);
	m.flags = it->flags;
	for (i = 0; i < it->nkeywords; i++) {
		const char *kw = it->keywords[i];

		if (kw_is_forwarded(kw)) {
			m.flags |= IDX_FORWARDED;
		} else if (!kw_has(m.keywords, m.nkeywords, kw)) {
			m.keywords = idx_xrealloc(m.keywords, sizeof(*m.keywords) * (m.nkeywords + 1));
			m.keywords[m.nkeywords++] = idx_xstrdup(kw);
		}
	}
	m.size = maildir_writer_size(it->w);
	m.received = it->received ? it->received : s->now;
	m.received_tz = it->received_tz;
	m.prefix_len = it->prefix_len <= m.size ? it->prefix_len : 0;
	m.mailbox_destined = it->mailbox_destined;
	m.savedate = (int64_t)time(NULL);
	if (it->is_reject)
		m.tflags |= IDX_T_IS_REJECT;
	msg_set_thread_inputs(&m, p->msg);
	if (thread_assign(a, &m, p->msg, err, errlen) < 0) {
		idx_message_clear(&m);
		return -1;
	}
	letters = kwtab_letters(&f->kw, f->path, m.flags, m.keywords, m.nkeywords, ierr, sizeof(ierr));
	if (letters < 0) {
		item_fail(it, IDX_E_INTERNAL, ierr);
		idx_message_clear(&m);
		return 0;
	}
	mflags = idx_flags_to_maildir(m.flags);
	sub = mflags == 0 && letters == 0 ? MAILDIR_NEW : MAILDIR_CUR;
	if (maildir_writer_name(it->w, sub, mflags, (uint32_t)letters, name, sizeof(name), ierr, sizeof(ierr)) < 0) {
		item_fail(it, IDX_E_INTERNAL, ierr);
		idx_message_clear(&m);
		return 0;
	}
	s->links = idx_xrealloc(s->links, sizeof(*s->links) * (s->nlinks + 1));
	s->links[s->nlinks] = (struct add_link){.it = it, .fi = (size_t)(f - s->f), .sub = sub, .mflags = mflags,
	    .letters = (uint32_t)letters};
	snprintf(s->links[s->nlinks].name, sizeof(s->links[s->nlinks].name), "%s", name);
	s->nlinks++;
	m.filename = idx_xmalloc(strlen(name) + 5);
	snprintf(m.filename, strlen(name) + 5, "%s/%s", sub == MAILDIR_NEW ? "new" : "cur", name);
	r = msg_insert(a, &m, tcxstrptr(p->cache), (size_t)tcxstrsize(p->cache), err, errlen);
	if (r > 0)
		r = thread_resolve(a, &m, err, errlen);
	if (r < 0) {
		idx_message_clear(&m);
		return -1;
	}
	f->mb.uidnext = m.uid + 1;
	f->mb.highest_modseq = m.modseq;
	counts_apply(&f->mb.counts, m.flags, m.size, 1);
	for (i = 0; i < m.nkeywords; i++)
		f->kwgrew |= mb_keyword_add(&f->mb, m.keywords[i]);
	f->touched = true;
	a->rec.quota_used += m.size;
	change_push(a, IDX_CH_ADD, m.mailbox_id, m.uid, m.modseq, m.flags, NULL, NULL);
	it->result = 1;
	it->error = IDX_E_NONE;
	it->uid_r = m.uid;
	it->id_r = m.id;
	idx_message_clear(&m);
	return 1;
}

/* Files up to which a batch is synced file by file rather than with syncfs. */
#define ADD_SYNC_FILES_MAX 16

/*
 * Start making every unsynced file of the batch durable on the sync pool: a
 * few files get an fdatasync each (cheap on a busy filesystem, and parallel),
 * a large batch one syncfs (its cost does not grow with the batch, but it
 * also writes back whatever else is dirty on the filesystem).
 */
static struct maildir_syncset *sync_batch_start(struct idx_account *a, struct idx_add *items, size_t n)
{
	const struct maildir_writer *seen[ADD_SYNC_FILES_MAX];
	struct maildir_syncset *ss = maildir_syncset_new();
	size_t nseen = 0;

	for (size_t i = 0; i < n; i++) {
		bool dup = false;
		if (items[i].result < 0 || items[i].synced || items[i].w == NULL)
			continue;
		for (size_t k = 0; k < nseen && !dup; k++)
			dup = seen[k] == items[i].w;
		if (dup)
			continue;
		if (nseen == ADD_SYNC_FILES_MAX) {
			maildir_syncset_fs(ss, a->maildir);
			return ss;
		}
		seen[nseen++] = items[i].w;
	}
	for (size_t k = 0; k < nseen; k++)
		maildir_syncset_file(ss, maildir_writer_path(seen[k]));
	return ss;
}

/* Link the planned files (their data is durable). 1, or -1: the batch fails. */
static int add_links(struct add_state *s, char *err, size_t errlen)
{
	for (size_t i = 0; i < s->nlinks; i++) {
		struct add_link *l = &s->links[i];
		struct add_folder *f = &s->f[l->fi];
		char name[MAILDIR_NAME_BUFSIZE];

		if (l->it->result <= 0)
			continue;
		if (maildir_writer_link(l->it->w, f->path, l->sub, l->mflags, l->letters, 0, name, sizeof(name), err,
			errlen) < 0)
			return -1;
		s->linked = idx_xrealloc(s->linked, sizeof(*s->linked) * (s->nlinked + 1));
		snprintf(s->linked[s->nlinked++], sizeof(*s->linked), "%s/%s/%s", f->path,
		    l->sub == MAILDIR_NEW ? "new" : "cur", name);
		if (strcmp(name, l->name) != 0) {
			idx_seterr(err, errlen, "linked %s as %s, not as recorded", name, l->name);
			return -1;
		}
		if (l->sub == MAILDIR_NEW)
			f->link_new = true;
		else
			f->link_cur = true;
	}
	return 1;
}

static int add_impl(struct idx_account *a, struct idx_add *items, size_t n, const uint32_t *uids,
    uint64_t replayed, struct idx_durable *defer, char *err, size_t errlen);

int idx_add(struct idx_account *a, struct idx_add *items, size_t n, char *err, size_t errlen)
{
	return add_impl(a, items, n, NULL, 0, NULL, err, errlen);
}

int msg_add_replayed(struct idx_account *a, struct idx_add *items, size_t n, const uint32_t *uids, uint64_t seq,
    char *err, size_t errlen)
{
	return add_impl(a, items, n, uids, seq, NULL, err, errlen);
}

int idx_add_nosync(struct idx_account *a, struct idx_add *items, size_t n, struct idx_durable *d_r, char *err,
    size_t errlen)
{
	memset(d_r, 0, sizeof(*d_r));
	return add_impl(a, items, n, NULL, 0, d_r, err, errlen);
}

/*
 * The index durable through commit c (any thread): one fdatasync serves every
 * waiter before it. The fdatasync runs under the account lock, so never while
 * a transaction is open: Tokyo Cabinet's write-ahead log is not synced (no
 * BDBOTSYNC), and flushing half a transaction's pages without it would leave
 * an index that cannot be rolled back after a power loss. A failed fdatasync
 * is final for this handle: the kernel reports a writeback error once, so a
 * later fdatasync could succeed without the lost pages ever reaching the
 * disk; every later commit and wait fails until the account is reopened.
 */
static int index_synced(struct idx_account *a, uint64_t c, char *err, size_t errlen)
{
	int r = 1;

	pthread_mutex_lock(&a->dmu);
	bool done = a->synced >= c && !a->sync_failed;
	pthread_mutex_unlock(&a->dmu);
	if (done)
		return 1;
	pthread_mutex_lock(&a->mu);
	pthread_mutex_lock(&a->dmu);
	bool need = a->synced < c || a->sync_failed;
	pthread_mutex_unlock(&a->dmu);
	if (need) /* every commit so far is in the page cache: one fdatasync covers them */
		r = index_sync_locked(a, a->committed, err, errlen);
	pthread_mutex_unlock(&a->mu);
	return r;
}

int idx_durable_wait(struct idx_account *a, struct idx_durable *d, char *err, size_t errlen)
{
	struct maildir_syncset *ss = NULL;
	char serr[256];
	int r = 1;

	if (d->ndirs > 0) {
		ss = maildir_syncset_new();
		for (size_t i = 0; i < d->ndirs; i++)
			maildir_syncset_dir(ss, d->dirs[i]);
	}
	if (d->commit > 0)
		r = index_synced(a, d->commit, err, errlen);
	if (maildir_syncset_wait(&ss, serr, sizeof(serr)) < 0 && r > 0) {
		idx_seterr(err, errlen, "%s", serr);
		r = -1;
	}
	for (size_t i = 0; i < d->ndirs; i++)
		free(d->dirs[i]);
	free(d->dirs);
	memset(d, 0, sizeof(*d));
	return r;
}

/*
 * Whether a batch goes through the delivery log (wal.c): every message small
 * enough and the batch fits in the log, after a checkpoint if it is full.
 */
static bool add_wants_log(struct idx_account *a, const struct idx_add *items, size_t n)
{
	size_t bound = 0;

	if (a->wal == NULL || a->no_fsync)
		return false;
	for (size_t i = 0; i < n; i++) {
		bool dup = false;

		if (items[i].w == NULL)
			continue;
		bound += 48 + MAILDIR_NAME_BUFSIZE;
		for (size_t k = 0; k < items[i].nkeywords; k++)
			bound += 2 + strlen(items[i].keywords[k]);
		for (size_t k = 0; k < i && !dup; k++)
			dup = items[k].w == items[i].w;
		if (dup)
			continue;
		if (maildir_writer_size(items[i].w) > WAL_MSG_MAX)
			return false;
		bound += 64 + (size_t)maildir_writer_size(items[i].w);
	}
	if (!wal_fits_empty(a, bound))
		return false;
	if (!wal_room(a, bound) && idx_checkpoint(a, NULL, 0) < 0)
		return false;
	return wal_room(a, bound);
}

/*
 * Log the added items (one entry per message file, with every mailbox it
 * goes to, its UID and its file's base name) and start the log's fdatasync
 * on the sync pool (*ss_r): the links and the commit run meanwhile, and the
 * batch is durable once the sync is done. Only items add_one added are
 * logged, so an item that failed never comes back from the log.
 * 1 with the entries' sequence numbers, 0 no room (sync as without a log), -1.
 */
static int add_log(struct idx_account *a, struct add_state *s, struct idx_add *items, size_t n,
    uint64_t *first_r, uint64_t *last_r, struct maildir_syncset **ss_r, char *err, size_t errlen)
{
	struct wal_msg *msgs = NULL;
	size_t nm = 0;
	int r;

	for (size_t i = 0; i < n; i++) {
		struct idx_add *it = &items[i];
		struct wal_msg *m = NULL;

		if (it->result <= 0)
			continue;
		for (size_t k = 0; k < nm && m == NULL; k++)
			if (strcmp(msgs[k].path, maildir_writer_path(it->w)) == 0)
				m = &msgs[k];
		if (m == NULL) {
			msgs = idx_xrealloc(msgs, sizeof(*msgs) * (nm + 1));
			m = &msgs[nm++];
			*m = (struct wal_msg){.path = maildir_writer_path(it->w), .size = maildir_writer_size(it->w)};
			for (size_t k = 0; k < s->np && m->data == NULL; k++)
				if (s->p[k].w == it->w)
					m->data = s->p[k].data;
		}
		m->t = idx_xrealloc(m->t, sizeof(*m->t) * (m->nt + 1));
		m->t[m->nt++] = (struct wal_target){.mbid = it->mailbox_id, .uid = it->uid_r, .flags = it->flags,
		    .destined = it->mailbox_destined, .prefix_len = it->prefix_len, .received_tz = it->received_tz,
		    .received = it->received ? it->received : s->now, .is_reject = it->is_reject,
		    .name = maildir_writer_base(it->w), .keywords = it->keywords, .nkeywords = it->nkeywords};
	}
	r = nm == 0 ? 0 : wal_append(a, msgs, nm, first_r, last_r, ss_r, err, errlen);
	for (size_t k = 0; k < nm; k++)
		free(msgs[k].t);
	free(msgs);
	return r;
}

/*
 * A committed batch whose log sync failed: sync its linked files, their
 * directories and the index as an unlogged add does (the lock held, no
 * transaction open). 1, -1.
 */
static int durable_without_log(struct idx_account *a, struct add_state *s, char *err, size_t errlen)
{
	struct maildir_syncset *ss = maildir_syncset_new();
	char serr[256], dir[IDX_PATH_MAX + 8];

	for (size_t i = 0; i < s->nlinked; i++)
		maildir_syncset_file(ss, s->linked[i]);
	for (size_t i = 0; i < s->nf; i++) {
		for (int sub = 0; sub < 2; sub++) {
			if (!(sub ? s->f[i].link_cur : s->f[i].link_new))
				continue;
			snprintf(dir, sizeof(dir), "%s/%s", s->f[i].path, sub ? "cur" : "new");
			maildir_syncset_dir(ss, dir);
		}
	}
	if (maildir_syncset_wait(&ss, serr, sizeof(serr)) < 0) {
		idx_seterr(err, errlen, "%s", serr);
		return -1;
	}
	return index_sync_locked(a, a->committed, err, errlen);
}

static int add_impl(struct idx_account *a, struct idx_add *items, size_t n, const uint32_t *uids,
    uint64_t replayed, struct idx_durable *defer, char *err, size_t errlen)
{
	struct maildir_syncset *fss = NULL, *dss = NULL;
	char serr[256];
	struct add_state s;
	uint64_t pending = 0, log_first = 0, log_last = 0;
	bool need_sync = false, logged = false;
	bool use_log = add_wants_log(a, items, n);
	size_t i;
	int r = 1, added = 0;

	memset(&s, 0, sizeof(s));
	s.now = (int64_t)time(NULL);
	for (i = 0; i < n; i++) {
		items[i].result = 0;
		items[i].error = IDX_E_NONE;
		items[i].err_r[0] = '\0';
	}
	if (op_begin(a, err, errlen) < 0) {
		for (i = 0; i < n; i++)
			item_fail(&items[i], IDX_E_INTERNAL, "index unavailable");
		return -1;
	}
	/* Check every item first; the valid ones get result 0 for now. */
	for (i = 0; i < n && r >= 0; i++) {
		struct idx_add *it = &items[i];
		struct add_folder *f;
		char kerr[160];
		int fr = 0;

		if (it->w == NULL || (it->flags & ~IDX_FLAGS_ALL) != 0 ||
		    kw_check(it->keywords, it->nkeywords, kerr, sizeof(kerr)) < 0) {
			item_fail(it, IDX_E_INVALID, it->w == NULL ? "no message" : "invalid flags or keywords");
			continue;
		}
		f = add_folder_get(a, &s, it->mailbox_id, err, errlen, &fr);
		if (f == NULL) {
			if (fr < 0)
				r = -1;
			else
				item_fail(it, IDX_E_NOMAILBOX, "mailbox does not exist");
			continue;
		}
		if (f->mb.uidnext == UINT32_MAX) {
			item_fail(it, IDX_E_INVALID, "mailbox out of UIDs");
			continue;
		}
		if (a->quota > 0 && a->rec.quota_used + pending + maildir_writer_size(it->w) > a->quota) {
			item_fail(it, IDX_E_OVERQUOTA, "over quota");
			continue;
		}
		pending += maildir_writer_size(it->w);
		need_sync |= !it->synced;
	}
	/*
	 * The files sync on the pool while the records are written (they name
	 * each file as it will be linked); the links wait for the syncs, so no
	 * Maildir reader ever sees a file whose data is not durable. The
	 * directories then sync while the transaction commits and the index
	 * syncs. A record may become durable before its directory entry: after
	 * a power loss in between, the Maildir sync tombstones it; the message
	 * was not acknowledged yet. Listeners (IMAP IDLE) hear of it at the
	 * commit, before idx_durable_wait made it durable.
	 */
	if (r >= 0 && need_sync && !a->no_fsync && !use_log)
		fss = sync_batch_start(a, items, n);
	for (i = 0; i < n && r >= 0; i++) {
		struct idx_add *it = &items[i];
		struct add_parsed *p;
		struct add_folder *f;
		char perr[160];
		int fr;

		if (it->result != 0)
			continue;
		f = add_folder_get(a, &s, it->mailbox_id, err, errlen, &fr);
		p = add_parse(&s, it->w, use_log, perr, sizeof(perr));
		if (p == NULL) {
			item_fail(it, IDX_E_INTERNAL, perr);
			continue;
		}
		r = add_one(a, &s, f, p, it, uids != NULL ? uids[i] : 0, err, errlen);
		if (r > 0)
			added++;
	}
	/*
	 * With the log, the batch is durable once its entries are: they are
	 * written now and synced on the pool while the files are linked and the
	 * transaction commits; the files and directories sync at the next
	 * checkpoint.
	 */
	struct maildir_syncset *lss = NULL;
	if (r >= 0 && use_log && added > 0) {
		int lr = add_log(a, &s, items, n, &log_first, &log_last, &lss, err, errlen);
		if (lr < 0)
			r = -1;
		else if (lr > 0)
			logged = true;
	}
	if (r >= 0 && use_log && !logged && need_sync && !a->no_fsync)
		fss = sync_batch_start(a, items, n); /* no room after all: the files sync now */
	if (logged && r >= 0 && a->wal_test_exit) {
		/* Tests: a crash once the entries are durable, before the links and the commit. */
		(void)maildir_syncset_wait(&lss, NULL, 0);
		_exit(0);
	}
	if (maildir_syncset_wait(&fss, serr, sizeof(serr)) < 0 && r >= 0) {
		idx_seterr(err, errlen, "%s", serr);
		r = -1;
	}
	if (r >= 0)
		r = add_links(&s, err, errlen);
	/* Directories once each (in parallel with the commit, or left to idx_durable_wait),
	 * then the folders' records. */
	if (r >= 0 && !a->no_fsync && defer == NULL && !logged)
		dss = maildir_syncset_new();
	for (i = 0; i < s.nf && r >= 0; i++) {
		struct add_folder *f = &s.f[i];
		char dir[IDX_PATH_MAX + 8];

		for (int sub = 0; sub < 2 && !a->no_fsync; sub++) {
			if (!(sub ? f->link_cur : f->link_new))
				continue;
			snprintf(dir, sizeof(dir), "%s/%s", f->path, sub ? "cur" : "new");
			if (logged) {
				wal_note_dir(a, dir);
			} else if (dss != NULL) {
				maildir_syncset_dir(dss, dir);
			} else if (defer != NULL) {
				defer->dirs = idx_xrealloc(defer->dirs, sizeof(*defer->dirs) * (defer->ndirs + 1));
				defer->dirs[defer->ndirs++] = idx_xstrdup(dir);
			}
		}
		if (r >= 0 && f->touched) {
			r = mb_store(a, &f->mb, err, errlen);
			change_push(a, IDX_CH_MAILBOX_COUNTS, f->mbid, 0, f->mb.highest_modseq, 0, NULL, NULL);
			if (f->kwgrew)
				change_push(a, IDX_CH_MAILBOX_KEYWORDS, f->mbid, 0, f->mb.highest_modseq, 0, NULL, NULL);
		}
	}
	/* The last log entry this index holds: a logged batch's, or the one a replay applies. */
	if (r >= 0 && (logged || replayed > 0)) {
		uint8_t v[8];

		be64_put(v, logged ? log_last : replayed);
		if (db_put(a, "W", 1, v, sizeof(v), err, errlen) < 0)
			r = -1;
	}
	/*
	 * The commit does not wait for the log: it runs while the log's
	 * fdatasync is in flight, and nothing is acknowledged before that is
	 * done (below). A power loss in between can keep index pages of a
	 * message whose entry did not reach the disk (never acknowledged): the
	 * replay after a reboot drops such records (wal.c, drop_unlogged).
	 */
	a->defer_sync = defer != NULL || logged;
	r = op_end(a, r < 0 ? -1 : 1, err, errlen);
	a->defer_sync = false;
	if (lss != NULL && maildir_syncset_wait(&lss, serr, sizeof(serr)) < 0) {
		/* Maybe durable, maybe not: no more entries on this log (wal_failed).
		 * A committed batch is then made durable the way an unlogged one is. */
		wal_failed(a);
		if (r >= 0 && durable_without_log(a, &s, err, errlen) < 0)
			r = -1;
	}
	if (logged && r < 0)
		wal_cancel(a, log_first, log_last);
	else if (logged)
		for (i = 0; i < s.nlinked; i++)
			wal_note_file(a, s.linked[i]);
	if (defer != NULL && r >= 0 && a->tx_writes > 0 && !a->no_fsync && !logged) {
		pthread_mutex_lock(&a->dmu);
		defer->commit = a->committed;
		pthread_mutex_unlock(&a->dmu);
	}
	if (defer != NULL && r < 0) {
		for (i = 0; i < defer->ndirs; i++)
			free(defer->dirs[i]);
		free(defer->dirs);
		memset(defer, 0, sizeof(*defer));
	}
	/* Always wait: the set must not outlive this call. A failed directory sync after the
	 * commit is like a failed index sync: not acknowledged, the files go again, and a
	 * later sync tombstones the records. */
	if (maildir_syncset_wait(&dss, serr, sizeof(serr)) < 0 && r >= 0) {
		idx_seterr(err, errlen, "%s", serr);
		r = -1;
	}
	if (r < 0) {
		for (i = 0; i < s.nlinked; i++)
			(void)unlink(s.linked[i]);
		for (i = 0; i < n; i++)
			if (items[i].result >= 0)
				item_fail(&items[i], IDX_E_INTERNAL, "index update failed");
	}
	op_unlock(a);
	add_state_clear(&s);
	return r < 0 ? -1 : added;
}

/* ---- reading ---- */

int idx_message_get(struct idx_account *a, uint32_t mailbox_id, uint32_t uid, struct idx_message *m_r, char *err,
    size_t errlen)
{
	int r;

	pthread_mutex_lock(&a->mu);
	r = msg_load(a, mailbox_id, uid, m_r, err, errlen);
	pthread_mutex_unlock(&a->mu);
	return r;
}

int idx_message_get_id(struct idx_account *a, uint64_t id, struct idx_message *m_r, char *err, size_t errlen)
{
	int r;

	pthread_mutex_lock(&a->mu);
	r = msg_load_id(a, id, m_r, err, errlen);
	pthread_mutex_unlock(&a->mu);
	return r;
}

/* Walk the live messages of mbid from from_uid; corrupt records are skipped.
 * flags_only: decode only what idx_message_each_flags promises. */
static int msg_walk2(struct idx_account *a, uint32_t mbid, uint32_t from_uid, idx_message_fn fn, void *arg,
    bool flags_only)
{
	BDBCUR *cur = tcbdbcurnew(a->db);
	uint8_t k[9];
	int n = 0, r = 1;

	key_mbuid(k, K_MSG, mbid, from_uid);
	if (tcbdbcurjump(cur, k, 9)) {
		for (;;) {
			int ks, vs;
			const uint8_t *kp = tcbdbcurkey3(cur, &ks);
			const void *vp;
			struct idx_message m;

			if (kp == NULL || ks != 9 || memcmp(kp, k, 5) != 0)
				break;
			vp = tcbdbcurval3(cur, &vs);
			if (vp != NULL && (flags_only ? rec_message_decode_flags(vp, (size_t)vs, mbid, be32_get(kp + 5), &m)
			    : rec_message_decode(vp, (size_t)vs, mbid, be32_get(kp + 5), &m)) > 0) {
				n++;
				r = fn(arg, &m);
				idx_message_clear(&m);
				if (r <= 0)
					break;
			}
			if (!tcbdbcurnext(cur))
				break;
		}
	}
	tcbdbcurdel(cur);
	return r < 0 ? r : n;
}

static int msg_walk(struct idx_account *a, uint32_t mbid, uint32_t from_uid, idx_message_fn fn, void *arg)
{
	return msg_walk2(a, mbid, from_uid, fn, arg, false);
}

int idx_message_each_flags(struct idx_account *a, uint32_t mailbox_id, uint32_t from_uid, idx_message_fn fn,
    void *arg, char *err, size_t errlen)
{
	int r;

	pthread_mutex_lock(&a->mu);
	r = msg_walk2(a, mailbox_id, from_uid ? from_uid : 1, fn, arg, true);
	pthread_mutex_unlock(&a->mu);
	if (r < 0)
		idx_seterr(err, errlen, "stopped by the callback");
	return r;
}

int idx_message_each(struct idx_account *a, uint32_t mailbox_id, uint32_t from_uid, idx_message_fn fn, void *arg,
    char *err, size_t errlen)
{
	int r;

	pthread_mutex_lock(&a->mu);
	r = msg_walk(a, mailbox_id, from_uid ? from_uid : 1, fn, arg);
	pthread_mutex_unlock(&a->mu);
	if (r < 0)
		idx_seterr(err, errlen, "stopped by the callback");
	return r;
}

/*
 * The SELECT scan: one cursor walk that decodes only the leading modseq and
 * flags of each record (no allocation per message). A record whose later
 * fields are corrupt is listed here (msg_walk would skip it); the
 * consistency checker reports it.
 */
int msg_uids_locked(struct idx_account *a, uint32_t mbid, struct idx_uidstate **list_r, size_t *n_r)
{
	BDBCUR *cur = tcbdbcurnew(a->db);
	struct idx_uidstate *v = NULL;
	size_t n = 0, cap = 0;
	uint8_t k[9];

	key_mbuid(k, K_MSG, mbid, 1);
	if (tcbdbcurjump(cur, k, 9)) {
		for (;;) {
			int ks, vs;
			const uint8_t *kp = tcbdbcurkey3(cur, &ks);
			const void *vp;
			uint32_t flags;
			uint64_t modseq;

			if (kp == NULL || ks != 9 || memcmp(kp, k, 5) != 0)
				break;
			vp = tcbdbcurval3(cur, &vs);
			if (vp != NULL && rec_message_decode_state(vp, (size_t)vs, &flags, &modseq) > 0) {
				if (n == cap) {
					cap = cap ? cap * 2 : 1024;
					v = idx_xrealloc(v, sizeof(*v) * cap);
				}
				v[n].uid = be32_get(kp + 5);
				v[n].flags = flags;
				v[n].modseq = modseq;
				n++;
			}
			if (!tcbdbcurnext(cur))
				break;
		}
	}
	tcbdbcurdel(cur);
	*list_r = v;
	*n_r = n;
	return (int)n;
}

int idx_mailbox_uids(struct idx_account *a, uint32_t mailbox_id, struct idx_uidstate **list_r, size_t *n_r,
    char *err, size_t errlen)
{
	int r;

	pthread_mutex_lock(&a->mu);
	r = msg_uids_locked(a, mailbox_id, list_r, n_r);
	pthread_mutex_unlock(&a->mu);
	return r;
}

int idx_tombstones(struct idx_account *a, uint32_t mailbox_id, uint64_t since,
    int (*fn)(void *arg, uint32_t uid, uint64_t modseq), void *arg, char *err, size_t errlen)
{
	BDBCUR *cur;
	uint8_t k[9];
	int n = 0;

	pthread_mutex_lock(&a->mu);
	cur = tcbdbcurnew(a->db);
	key_mbuid(k, K_TOMB, mailbox_id, 0);
	if (tcbdbcurjump(cur, k, 9)) {
		for (;;) {
			int ks, vs;
			const uint8_t *kp = tcbdbcurkey3(cur, &ks);
			const uint8_t *vp;

			if (kp == NULL || ks != 9 || memcmp(kp, k, 5) != 0)
				break;
			vp = tcbdbcurval3(cur, &vs);
			if (vp != NULL && vs == 16 && be64_get(vp) > since) {
				n++;
				if (fn != NULL && fn(arg, be32_get(kp + 5), be64_get(vp)) <= 0)
					break;
			}
			if (!tcbdbcurnext(cur))
				break;
		}
	}
	tcbdbcurdel(cur);
	pthread_mutex_unlock(&a->mu);
	return n;
}

int idx_message_mime(struct idx_account *a, uint64_t id, void **blob_r, size_t *len_r, char *err, size_t errlen)
{
	uint8_t k[9];
	void *v;
	size_t len;
	int r;

	*blob_r = NULL;
	*len_r = 0;
	pthread_mutex_lock(&a->mu);
	r = db_get(a, k, key_id(k, K_CACHE, id), &v, &len, err, errlen);
	pthread_mutex_unlock(&a->mu);
	if (r <= 0)
		return r;
	*blob_r = idx_xmalloc(len);
	memcpy(*blob_r, v, len);
	*len_r = len;
	tcfree(v);
	return 1;
}

/* Current filename of the record (mbid, uid) equals fname? */
static bool record_has_name(struct idx_account *a, uint32_t mbid, uint32_t uid, const char *fname)
{
	struct idx_message cur;
	bool same = false;

	pthread_mutex_lock(&a->mu);
	if (msg_load(a, mbid, uid, &cur, NULL, 0) > 0) {
		same = strcmp(cur.filename, fname) == 0;
		idx_message_clear(&cur);
	}
	pthread_mutex_unlock(&a->mu);
	return same;
}

/*
 * Another tool may rename the file at any time. maildir_msg_open follows a
 * rename by the base name, but a rename during its directory scans can slip
 * through (readdir need not return an entry renamed while it reads, and a
 * file moving from new/ to cur/ can pass between the scans of the two), so
 * a miss is retried. When the name on disk differs from the record's (and
 * not because we renamed it meanwhile), the mailbox is synced: the record
 * takes the new name and the name's flags, as the watcher would do a moment
 * later, so the caller and the next reader see what the file says.
 */
int idx_message_open(struct idx_account *a, const struct idx_message *m, int *fd_r, char *err, size_t errlen)
{
	struct idx_mailbox mb;
	char dir[IDX_PATH_MAX], name[MAILDIR_NAME_BUFSIZE], fname[MAILDIR_NAME_BUFSIZE + 8], serr[256];
	enum maildir_subdir sub = MAILDIR_NEW;
	int r, attempt;

	*fd_r = -1;
	pthread_mutex_lock(&a->mu);
	r = mb_load(a, m->mailbox_id, &mb, err, errlen);
	pthread_mutex_unlock(&a->mu);
	if (r <= 0)
		return r;
	r = idx_folder_path(a, mb.folder, dir, sizeof(dir), err, errlen);
	idx_mailbox_clear(&mb);
	if (r < 0)
		return -1;
	for (attempt = 0; attempt < 3; attempt++) {
		r = maildir_msg_open(dir, msg_basename(m->filename), fd_r, &sub, name, sizeof(name), err, errlen);
		if (r != 0)
			break;
	}
	if (r < 0)
		return -1;
	if (r > 0) {
		snprintf(fname, sizeof(fname), "%s/%s", sub == MAILDIR_CUR ? "cur" : "new", name);
		if (strcmp(fname, m->filename) == 0 || record_has_name(a, m->mailbox_id, m->uid, fname))
			return 1;
	}
	/* Renamed or gone behind our back: the index follows now. A failed
	 * sync changes nothing here; the watcher or the next sync retries. */
	(void)idx_sync_mailbox(a, m->mailbox_id, NULL, serr, sizeof(serr));
	if (r == 0)
		idx_seterr(err, errlen, "file of message %u/%u is gone", m->mailbox_id, m->uid);
	return r > 0 ? 2 : 0;
}

/* ---- store ---- */

/* New keyword list for mode; *changed_r tells whether the set differs. */
static void kw_apply(struct idx_message *m, enum idx_store_mode mode, char *const *kws, size_t nk, bool *changed_r)
{
	char **v = NULL;
	size_t n = 0, i;

	*changed_r = false;
	if (mode == IDX_STORE_SET || mode == IDX_STORE_ADD) {
		if (mode == IDX_STORE_ADD) {
			for (i = 0; i < m->nkeywords; i++) {
				v = idx_xrealloc(v, sizeof(*v) * (n + 1));
				v[n++] = idx_xstrdup(m->keywords[i]);
			}
		}
		for (i = 0; i < nk && n < IDX_KEYWORDS_PER_MESSAGE; i++) {
			if (kw_has(v, n, kws[i]))
				continue;
			v = idx_xrealloc(v, sizeof(*v) * (n + 1));
			v[n++] = idx_xstrdup(kws[i]);
		}
	} else {
		for (i = 0; i < m->nkeywords; i++) {
			if (kw_has(kws, nk, m->keywords[i]))
				continue;
			v = idx_xrealloc(v, sizeof(*v) * (n + 1));
			v[n++] = idx_xstrdup(m->keywords[i]);
		}
	}
	if (n != m->nkeywords) {
		*changed_r = true;
	} else {
		for (i = 0; i < n; i++)
			if (!kw_has(m->keywords, m->nkeywords, v[i]))
				*changed_r = true;
	}
	for (i = 0; i < m->nkeywords; i++)
		free(m->keywords[i]);
	free(m->keywords);
	m->keywords = v;
	m->nkeywords = n;
}

struct renamed {
	char name[MAILDIR_NAME_BUFSIZE]; /* current name on disk */
	unsigned oldflags;
	uint32_t oldletters;
};

int idx_store(struct idx_account *a, uint32_t mailbox_id, const uint32_t *uids, size_t n, enum idx_store_mode mode,
    uint32_t flags, const char *const *keywords, size_t nkeywords, uint64_t unchangedsince, uint32_t *failed_r,
    size_t *nfailed_r, uint64_t *modseq_r, char *err, size_t errlen)
{
	struct idx_mailbox mb;
	struct kwtab kt = { 0 };
	struct renamed *ren = NULL;
	char dir[IDX_PATH_MAX], **kws = NULL;
	size_t nkw = 0, nren = 0, i, nfailed = 0;
	bool kwgrew = false;
	int r, changed = 0;

	if (nfailed_r != NULL)
		*nfailed_r = 0;
	if (modseq_r != NULL)
		*modseq_r = 0;
	if ((flags & ~IDX_FLAGS_ALL) != 0) {
		idx_seterr(err, errlen, "invalid flags");
		return IDX_REFUSED;
	}
	r = kw_check(keywords, nkeywords, err, errlen);
	if (r < 0)
		return r;
	for (i = 0; i < nkeywords; i++) {
		if (kw_is_forwarded(keywords[i])) {
			flags |= IDX_FORWARDED;
		} else {
			kws = idx_xrealloc(kws, sizeof(*kws) * (nkw + 1));
			kws[nkw++] = (char *)keywords[i];
		}
	}
	if (op_begin(a, err, errlen) < 0) {
		free(kws);
		return -1;
	}
	r = mb_load(a, mailbox_id, &mb, err, errlen);
	if (r == 0) {
		idx_seterr(err, errlen, "mailbox does not exist");
		r = IDX_REFUSED;
	}
	if (r > 0)
		r = idx_folder_path(a, mb.folder, dir, sizeof(dir), err, errlen);
	if (r > 0)
		ren = idx_xmalloc(sizeof(*ren) * (n ? n : 1));
	for (i = 0; i < n && r > 0; i++) {
		struct idx_message m;
		uint32_t nf;
		unsigned oldm;
		int64_t letters, oldletters;
		bool kwchanged;
		struct renamed *e;

		r = msg_load(a, mailbox_id, uids[i], &m, err, errlen);
		if (r <= 0) {
			r = r < 0 ? -1 : 1; /* absent: skipped */
			continue;
		}
		if (unchangedsince != 0 && m.modseq > unchangedsince) {
			if (failed_r != NULL)
				failed_r[nfailed] = m.uid;
			nfailed++;
			idx_message_clear(&m);
			continue;
		}
		nf = mode == IDX_STORE_SET ? flags : mode == IDX_STORE_ADD ? (m.flags | flags) : (m.flags & ~flags);
		oldm = idx_flags_to_maildir(m.flags);
		oldletters = kwtab_letters(&kt, dir, m.flags, m.keywords, m.nkeywords, err, errlen);
		kw_apply(&m, mode, kws, nkw, &kwchanged);
		if (nf == m.flags && !kwchanged) {
			idx_message_clear(&m);
			if (oldletters < 0)
				r = -1;
			continue;
		}
		letters = oldletters < 0 ? -1 : kwtab_letters(&kt, dir, nf, m.keywords, m.nkeywords, err, errlen);
		if (letters < 0) {
			idx_message_clear(&m);
			r = -1;
			break;
		}
		/* The file first; a crash after this is repaired by the sync. */
		e = &ren[nren];
		r = maildir_msg_set_flags(dir, msg_basename(m.filename), idx_flags_to_maildir(nf), (uint32_t)letters,
		    e->name, sizeof(e->name), err, errlen);
		if (r < 0) {
			idx_message_clear(&m);
			break;
		}
		if (r > 0) {
			e->oldflags = oldm;
			e->oldletters = (uint32_t)oldletters;
			nren++;
			free(m.filename);
			m.filename = idx_xmalloc(strlen(e->name) + 5);
			snprintf(m.filename, strlen(e->name) + 5, "cur/%s", e->name);
		}
		counts_apply(&mb.counts, m.flags, m.size, -1);
		counts_apply(&mb.counts, nf, m.size, 1);
		m.flags = nf;
		m.modseq = op_modseq(a);
		for (size_t j = 0; j < m.nkeywords; j++)
			kwgrew |= mb_keyword_add(&mb, m.keywords[j]);
		r = msg_store(a, &m, err, errlen);
		if (r > 0) {
			changed++;
			change_push(a, IDX_CH_FLAGS, mailbox_id, m.uid, m.modseq, m.flags, NULL, NULL);
		}
		idx_message_clear(&m);
	}
	if (r > 0 && changed > 0) {
		mb.highest_modseq = a->op_modseq;
		r = mb_store(a, &mb, err, errlen);
		change_push(a, IDX_CH_MAILBOX_COUNTS, mailbox_id, 0, a->op_modseq, 0, NULL, NULL);
		if (kwgrew)
			change_push(a, IDX_CH_MAILBOX_KEYWORDS, mailbox_id, 0, a->op_modseq, 0, NULL, NULL);
		if (modseq_r != NULL)
			*modseq_r = a->op_modseq;
	}
	if (r > 0 && nren > 0 && !a->no_fsync) {
		char cdir[IDX_PATH_MAX + 8];

		snprintf(cdir, sizeof(cdir), "%s/cur", dir);
		r = maildir_fsync_dir(cdir, err, errlen);
	}
	r = op_end(a, r, err, errlen);
	if (r < 0) {
		/* Put the names back so files and index agree again. */
		for (i = 0; i < nren; i++) {
			char tmp[MAILDIR_NAME_BUFSIZE];

			(void)maildir_msg_set_flags(dir, ren[i].name, ren[i].oldflags, ren[i].oldletters, tmp,
			    sizeof(tmp), NULL, 0);
		}
	}
	op_unlock(a);
	if (r >= 0 && nfailed_r != NULL)
		*nfailed_r = nfailed;
	kwtab_clear(&kt);
	idx_mailbox_clear(&mb);
	free(ren);
	free(kws);
	return r < 0 ? r : changed;
}

/* ---- expunge ---- */

/* Unlink a message's file, finding it when another tool renamed it. */
static int msg_unlink(const char *dir, const struct idx_message *m, char *err, size_t errlen)
{
	char path[IDX_PATH_MAX * 2], name[MAILDIR_NAME_BUFSIZE];
	enum maildir_subdir sub;
	int r;

	snprintf(path, sizeof(path), "%s/%s", dir, m->filename);
	if (unlink(path) == 0)
		return 1;
	if (errno != ENOENT) {
		idx_seterr(err, errlen, "unlink %s: %s", path, strerror(errno));
		return -1;
	}
	r = maildir_msg_find(dir, msg_basename(m->filename), &sub, name, sizeof(name), err, errlen);
	if (r <= 0)
		return r;
	snprintf(path, sizeof(path), "%s/%s/%s", dir, sub == MAILDIR_CUR ? "cur" : "new", name);
	if (unlink(path) < 0 && errno != ENOENT) {
		idx_seterr(err, errlen, "unlink %s: %s", path, strerror(errno));
		return -1;
	}
	return 1;
}

struct deleted_ctx {
	uint32_t *v;
	size_t n, cap, max;
};

static int deleted_cb(void *arg, const struct idx_message *m)
{
	struct deleted_ctx *c = arg;

	if (!(m->flags & IDX_DELETED))
		return 1;
	if (c->max && c->n >= c->max)
		return 0;
	if (c->n == c->cap) {
		c->cap = c->cap ? c->cap * 2 : 64;
		c->v = idx_xrealloc(c->v, sizeof(*c->v) * c->cap);
	}
	c->v[c->n++] = m->uid;
	return 1;
}

int idx_expunge(struct idx_account *a, uint32_t mailbox_id, const uint32_t *uids, size_t n, uint32_t *expunged_r,
    char *err, size_t errlen)
{
	struct deleted_ctx dc = { 0 };
	struct idx_mailbox mb;
	char dir[IDX_PATH_MAX];
	size_t i;
	int r, count = 0;

	if (op_begin(a, err, errlen) < 0)
		return -1;
	r = mb_load(a, mailbox_id, &mb, err, errlen);
	if (r == 0) {
		idx_seterr(err, errlen, "mailbox does not exist");
		r = IDX_REFUSED;
	}
	if (r > 0)
		r = idx_folder_path(a, mb.folder, dir, sizeof(dir), err, errlen);
	if (r > 0 && uids == NULL) {
		dc.max = expunged_r == NULL ? 0 : n > 0 ? n : (size_t)mb.counts.total;
		msg_walk(a, mailbox_id, 1, deleted_cb, &dc);
		uids = dc.v;
		n = dc.n;
	}
	for (i = 0; i < n && r > 0; i++) {
		struct idx_message m;

		r = msg_load(a, mailbox_id, uids[i], &m, err, errlen);
		if (r <= 0) {
			r = r < 0 ? -1 : 1;
			continue;
		}
		r = msg_unlink(dir, &m, err, errlen);
		if (r >= 0)
			r = msg_remove(a, &m, op_modseq(a), false, err, errlen);
		if (r > 0) {
			counts_apply(&mb.counts, m.flags, m.size, -1);
			a->rec.quota_used -= a->rec.quota_used < m.size ? a->rec.quota_used : m.size;
			a->rec_dirty = true;
			if (expunged_r != NULL)
				expunged_r[count] = m.uid;
			count++;
			change_push(a, IDX_CH_REMOVE, mailbox_id, m.uid, a->op_modseq, 0, NULL, NULL);
		}
		idx_message_clear(&m);
	}
	if (r > 0 && count > 0) {
		mb.highest_modseq = a->op_modseq;
		r = mb_store(a, &mb, err, errlen);
		change_push(a, IDX_CH_MAILBOX_COUNTS, mailbox_id, 0, a->op_modseq, 0, NULL, NULL);
	}
	r = op_end(a, r, err, errlen);
	op_unlock(a);
	idx_mailbox_clear(&mb);
	free(dc.v);
	return r < 0 ? r : count;
}

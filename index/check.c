/*
 * Consistency checker: every invariant of index/SCHEMA.md, checked against
 * the index itself and the Maildir. Used by verifydata and by the unit tests
 * after every operation. Read-only; reports each problem as one line.
 *
 * Thread ids: a live message's thread_id is its first parent, or when it
 * has none its own id (or, for a copy of a root, the root's smaller id); a 'T' key (thread_id, id) exists for it; every 'T'
 * key belongs to a live message of that thread. A thread's root may itself
 * be expunged (thread ids outlive their root), so only "< next msgid" is
 * required of the root.
 *
 * Base subjects: a live message with a non-empty base subject has its 'J'
 * key (schema 2); every 'J' key is exactly the key of a live message.
 */
#define _GNU_SOURCE
#include "index/index_private.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

struct chk {
	struct idx_account *a;
	void (*report)(void *arg, const char *problem);
	void *arg;
	int n;
	uint64_t live, quota;
};

static void problem(struct chk *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void problem(struct chk *c, const char *fmt, ...)
{
	char buf[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	c->n++;
	if (c->report != NULL)
		c->report(c->arg, buf);
}

typedef void (*range_fn)(struct chk *c, const uint8_t *k, size_t ks, const uint8_t *v, size_t vs, void *arg);

/* Call fn for every key starting with p[0..plen). */
static void range(struct chk *c, const void *p, size_t plen, range_fn fn, void *arg)
{
	BDBCUR *cur = tcbdbcurnew(c->a->db);

	if (tcbdbcurjump(cur, p, (int)plen)) {
		for (;;) {
			int ks, vs;
			const uint8_t *kp = tcbdbcurkey3(cur, &ks);
			const uint8_t *vp;

			if (kp == NULL || (size_t)ks < plen || memcmp(kp, p, plen) != 0)
				break;
			vp = tcbdbcurval3(cur, &vs);
			fn(c, kp, (size_t)ks, vp, vp ? (size_t)vs : 0, arg);
			if (!tcbdbcurnext(cur))
				break;
		}
	}
	tcbdbcurdel(cur);
}

static bool has_key(struct chk *c, const void *k, size_t klen)
{
	return tcbdbvsiz(c->a->db, k, (int)klen) >= 0;
}

struct mbctx {
	struct idx_mailbox *mb;
	char dir[IDX_PATH_MAX];
	struct idx_counts counts;
	TCMAP *bases; /* F key bases of the mailbox */
	uint64_t nf;
};

static void check_msg(struct chk *c, const uint8_t *k, size_t ks, const uint8_t *v, size_t vs, void *arg)
{
	struct mbctx *x = arg;
	struct idx_mailbox *mb = x->mb;
	struct idx_message m;
	uint8_t kk[17];
	uint32_t uid;
	char path[IDX_PATH_MAX + MAILDIR_NAME_BUFSIZE + 8];
	struct stat st;
	void *val;
	size_t len, i, j;
	TCXSTR *tk;
	struct maildir_name n;
	const char *fname;

	if (ks != 9) {
		problem(c, "mailbox %s: bad message key length %zu", mb->name, ks);
		return;
	}
	uid = be32_get(k + 5);
	if (rec_message_decode(v, vs, mb->id, uid, &m) < 0) {
		problem(c, "mailbox %s uid %u: corrupt message record", mb->name, uid);
		return;
	}
	counts_apply(&x->counts, m.flags, m.size, 1);
	c->live++;
	c->quota += m.size;
	if (uid == 0 || uid >= mb->uidnext)
		problem(c, "mailbox %s uid %u: not below uidnext %u", mb->name, uid, mb->uidnext);
	if (m.modseq > mb->highest_modseq || m.createseq > m.modseq)
		problem(c, "mailbox %s uid %u: modseq %llu/createseq %llu above mailbox highest %llu", mb->name, uid,
		    (unsigned long long)m.modseq, (unsigned long long)m.createseq,
		    (unsigned long long)mb->highest_modseq);
	if (m.id >= c->a->rec.next_msgid)
		problem(c, "mailbox %s uid %u: id %llu not below next id", mb->name, uid, (unsigned long long)m.id);
	if (db_get(c->a, kk, key_id(kk, K_ID, m.id), &val, &len, NULL, 0) <= 0) {
		problem(c, "mailbox %s uid %u: id key missing", mb->name, uid);
	} else {
		if (len != 8 || be32_get(val) != mb->id || be32_get((uint8_t *)val + 4) != uid)
			problem(c, "mailbox %s uid %u: id key points elsewhere", mb->name, uid);
		tcfree(val);
	}
	fname = msg_basename(m.filename);
	tk = tcxstrnew();
	if (maildir_name_parse(fname, strlen(fname), &n, NULL, 0) < 0) {
		problem(c, "mailbox %s uid %u: bad file name %s", mb->name, uid, m.filename);
	} else {
		key_file(tk, mb->id, n.base, n.base_len);
		if (db_get(c->a, tcxstrptr(tk), (size_t)tcxstrsize(tk), &val, &len, NULL, 0) <= 0) {
			problem(c, "mailbox %s uid %u: file key missing", mb->name, uid);
		} else {
			if (len != 4 || be32_get(val) != uid)
				problem(c, "mailbox %s uid %u: file key points elsewhere", mb->name, uid);
			tcfree(val);
		}
	}
	if (m.message_id[0] != '\0') {
		key_msgid(tk, K_MSGID, m.message_id, m.id, true);
		if (!has_key(c, tcxstrptr(tk), (size_t)tcxstrsize(tk)))
			problem(c, "mailbox %s uid %u: message-id key missing", mb->name, uid);
	}
	if (key_subject(tk, m.subject_base, m.id, true) && !has_key(c, tcxstrptr(tk), (size_t)tcxstrsize(tk)))
		problem(c, "mailbox %s uid %u: subject key missing", mb->name, uid);
	tcxstrdel(tk);
	/* A copy of a thread root has no parents and the root's id. */
	if (m.nparents ? m.thread_id != m.parents[0] : m.thread_id > m.id)
		problem(c, "mailbox %s uid %u: thread id %llu is not its root", mb->name, uid,
		    (unsigned long long)m.thread_id);
	if (m.thread_id >= c->a->rec.next_msgid)
		problem(c, "mailbox %s uid %u: thread id %llu unknown", mb->name, uid, (unsigned long long)m.thread_id);
	for (i = 0; i < m.nparents; i++)
		if (m.parents[i] == 0 || m.parents[i] >= c->a->rec.next_msgid || m.parents[i] == m.id)
			problem(c, "mailbox %s uid %u: bad parent %llu", mb->name, uid, (unsigned long long)m.parents[i]);
	if (!has_key(c, kk, key_thread(kk, m.thread_id, m.id)))
		problem(c, "mailbox %s uid %u: thread key missing", mb->name, uid);
	for (i = 0; i < m.nkeywords; i++) {
		for (j = 0; j < mb->nkeywords; j++)
			if (strcasecmp(mb->keywords[j], m.keywords[i]) == 0)
				break;
		if (j == mb->nkeywords)
			problem(c, "mailbox %s uid %u: keyword %s not in the mailbox list", mb->name, uid, m.keywords[i]);
	}
	snprintf(path, sizeof(path), "%s/%s", x->dir, m.filename);
	if (stat(path, &st) < 0)
		problem(c, "mailbox %s uid %u: file %s: %s", mb->name, uid, path, strerror(errno));
	else if ((uint64_t)st.st_size != m.size)
		problem(c, "mailbox %s uid %u: size %llu but file has %lld", mb->name, uid, (unsigned long long)m.size,
		    (long long)st.st_size);
	idx_message_clear(&m);
}

static void check_fkey(struct chk *c, const uint8_t *k, size_t ks, const uint8_t *v, size_t vs, void *arg)
{
	struct mbctx *x = arg;
	struct idx_message m;
	struct maildir_name n;
	const char *fname;

	x->nf++;
	if (vs != 4) {
		problem(c, "mailbox %s: corrupt file key", x->mb->name);
		return;
	}
	tcmapput(x->bases, k + 5, (int)ks - 5, "", 0);
	if (msg_load(c->a, x->mb->id, be32_get(v), &m, NULL, 0) <= 0) {
		problem(c, "mailbox %s: file key %.*s for missing uid %u", x->mb->name, (int)ks - 5, (const char *)k + 5,
		    be32_get(v));
		return;
	}
	fname = msg_basename(m.filename);
	if (maildir_name_parse(fname, strlen(fname), &n, NULL, 0) < 0 || n.base_len != ks - 5 ||
	    memcmp(n.base, k + 5, ks - 5) != 0)
		problem(c, "mailbox %s uid %u: file key base differs from %s", x->mb->name, m.uid, m.filename);
	idx_message_clear(&m);
}

static void check_tomb(struct chk *c, const uint8_t *k, size_t ks, const uint8_t *v, size_t vs, void *arg)
{
	struct mbctx *x = arg;
	uint8_t kk[9];
	uint32_t uid = ks == 9 ? be32_get(k + 5) : 0;

	if (ks != 9 || vs != 16) {
		problem(c, "mailbox %s: corrupt tombstone", x->mb->name);
		return;
	}
	if (uid == 0 || uid >= x->mb->uidnext)
		problem(c, "mailbox %s: tombstone uid %u not below uidnext", x->mb->name, uid);
	if (be64_get(v) > x->mb->highest_modseq)
		problem(c, "mailbox %s: tombstone uid %u modseq above the mailbox's", x->mb->name, uid);
	if (has_key(c, kk, key_mbuid(kk, K_MSG, x->mb->id, uid)))
		problem(c, "mailbox %s: uid %u both live and tombstoned", x->mb->name, uid);
}

static void check_mailbox(struct chk *c, const uint8_t *k, size_t ks, const uint8_t *v, size_t vs, void *arg)
{
	struct idx_account *a = c->a;
	struct idx_mailbox mb, parent;
	struct mbctx x;
	struct maildir_scan scan;
	uint8_t p[5];
	uint32_t id;
	size_t i;

	if (ks != 5 || rec_mailbox_decode(v, vs, be32_get(k + 1), &mb) < 0) {
		problem(c, "mailbox %u: corrupt record", ks == 5 ? be32_get(k + 1) : 0);
		return;
	}
	if (mb_lookup(a, mb.name, &id, NULL, 0) <= 0 || id != mb.id)
		problem(c, "mailbox %s: name key missing or wrong", mb.name);
	if (mb.id >= a->rec.next_mbid)
		problem(c, "mailbox %s: id %u not below next id", mb.name, mb.id);
	if (mb.uidvalidity >= a->rec.next_uidvalidity)
		problem(c, "mailbox %s: uidvalidity %u not below the account's next", mb.name, mb.uidvalidity);
	if (mb.highest_modseq > a->rec.highest_modseq || mb.created_modseq > mb.highest_modseq)
		problem(c, "mailbox %s: modseqs above the account's", mb.name);
	if (mb.parent_id != 0) {
		if (mb_load(a, mb.parent_id, &parent, NULL, 0) <= 0)
			problem(c, "mailbox %s: parent %u missing", mb.name, mb.parent_id);
		else if (strncmp(mb.name, parent.name, strlen(parent.name)) != 0 || mb.name[strlen(parent.name)] != '/')
			problem(c, "mailbox %s: parent %s is not its parent", mb.name, parent.name);
		idx_mailbox_clear(&parent);
	}
	memset(&x, 0, sizeof(x));
	x.mb = &mb;
	if (idx_folder_path(a, mb.folder, x.dir, sizeof(x.dir), NULL, 0) < 0) {
		problem(c, "mailbox %s: folder path too long", mb.name);
		idx_mailbox_clear(&mb);
		return;
	}
	x.bases = tcmapnew();
	p[0] = K_MSG;
	be32_put(p + 1, mb.id);
	range(c, p, 5, check_msg, &x);
	if (memcmp(&x.counts, &mb.counts, sizeof(x.counts)) != 0)
		problem(c,
		    "mailbox %s: counts total %llu deleted %llu unseen %llu unread %llu size %llu, records say "
		    "%llu %llu %llu %llu %llu",
		    mb.name, (unsigned long long)mb.counts.total, (unsigned long long)mb.counts.deleted,
		    (unsigned long long)mb.counts.unseen, (unsigned long long)mb.counts.unread,
		    (unsigned long long)mb.counts.size, (unsigned long long)x.counts.total,
		    (unsigned long long)x.counts.deleted, (unsigned long long)x.counts.unseen,
		    (unsigned long long)x.counts.unread, (unsigned long long)x.counts.size);
	p[0] = K_FILE;
	range(c, p, 5, check_fkey, &x);
	if (x.nf != x.counts.total)
		problem(c, "mailbox %s: %llu file keys for %llu messages", mb.name, (unsigned long long)x.nf,
		    (unsigned long long)x.counts.total);
	p[0] = K_TOMB;
	range(c, p, 5, check_tomb, &x);
	if (maildir_scan(x.dir, &scan, NULL, 0) < 0) {
		problem(c, "mailbox %s: folder %s cannot be read", mb.name, x.dir);
	} else {
		for (i = 0; i < scan.count; i++) {
			const struct maildir_entry *e = &scan.entries[i];
			int sp;

			if (!e->valid)
				problem(c, "mailbox %s: file %s: name not understood", mb.name, e->filename);
			else if (tcmapget(x.bases, e->name.base, (int)e->name.base_len, &sp) == NULL)
				problem(c, "mailbox %s: file %s has no record", mb.name, e->filename);
		}
		maildir_scan_clear(&scan);
	}
	tcmapdel(x.bases);
	idx_mailbox_clear(&mb);
}

static void check_idkey(struct chk *c, const uint8_t *k, size_t ks, const uint8_t *v, size_t vs, void *arg)
{
	uint64_t *n = arg;
	struct idx_message m;

	(*n)++;
	if (ks != 9 || vs != 8) {
		problem(c, "corrupt id key");
		return;
	}
	if (msg_load(c->a, be32_get(v), be32_get(v + 4), &m, NULL, 0) <= 0) {
		problem(c, "id %llu: no live message", (unsigned long long)be64_get(k + 1));
		return;
	}
	if (m.id != be64_get(k + 1))
		problem(c, "id %llu: points to message %llu", (unsigned long long)be64_get(k + 1),
		    (unsigned long long)m.id);
	idx_message_clear(&m);
}

static void check_tkey(struct chk *c, const uint8_t *k, size_t ks, const uint8_t *v, size_t vs, void *arg)
{
	struct idx_message m;

	if (ks != 17) {
		problem(c, "corrupt thread key");
		return;
	}
	if (msg_load_id_locked(c->a, be64_get(k + 9), &m, NULL, 0) <= 0) {
		problem(c, "thread %llu: member %llu is gone", (unsigned long long)be64_get(k + 1),
		    (unsigned long long)be64_get(k + 9));
		return;
	}
	if (m.thread_id != be64_get(k + 1))
		problem(c, "thread %llu: member %llu is in thread %llu", (unsigned long long)be64_get(k + 1),
		    (unsigned long long)m.id, (unsigned long long)m.thread_id);
	idx_message_clear(&m);
}

/* A 'J' key: a live message whose base subject and id give exactly this key. */
static void check_jkey(struct chk *c, const uint8_t *k, size_t ks, const uint8_t *v, size_t vs, void *arg)
{
	struct idx_message m;
	TCXSTR *want;
	uint64_t id;

	if (ks < 1 + 1 + 1 + 8 || k[ks - 9] != 0 || vs != 0) {
		problem(c, "corrupt subject key");
		return;
	}
	id = be64_get(k + ks - 8);
	if (msg_load_id_locked(c->a, id, &m, NULL, 0) <= 0) {
		problem(c, "subject key %.*s: message %llu is gone", (int)ks - 10, (const char *)k + 1,
		    (unsigned long long)id);
		return;
	}
	want = tcxstrnew();
	if (!key_subject(want, m.subject_base, m.id, true) || (size_t)tcxstrsize(want) != ks ||
	    memcmp(tcxstrptr(want), k, ks) != 0)
		problem(c, "subject key %.*s: message %llu has base subject %s", (int)ks - 10, (const char *)k + 1,
		    (unsigned long long)id, m.subject_base);
	tcxstrdel(want);
	idx_message_clear(&m);
}

static void check_nkey(struct chk *c, const uint8_t *k, size_t ks, const uint8_t *v, size_t vs, void *arg)
{
	struct idx_mailbox mb;

	if (vs != 4 || mb_load(c->a, be32_get(v), &mb, NULL, 0) <= 0) {
		problem(c, "name key %.*s: no mailbox", (int)ks - 1, (const char *)k + 1);
		return;
	}
	if (strlen(mb.name) != ks - 1 || memcmp(mb.name, k + 1, ks - 1) != 0)
		problem(c, "name key %.*s: mailbox is named %s", (int)ks - 1, (const char *)k + 1, mb.name);
	idx_mailbox_clear(&mb);
}

int idx_check(struct idx_account *a, void (*report)(void *arg, const char *problem), void *arg, char *err,
    size_t errlen)
{
	struct chk c = { a, report, arg, 0, 0, 0 };
	struct acct_rec disk;
	uint64_t nids = 0;
	void *v;
	size_t len;
	uint8_t p;

	pthread_mutex_lock(&a->mu);
	if (db_get(a, "A", 1, &v, &len, err, errlen) <= 0) {
		problem(&c, "account record missing");
	} else {
		if (rec_account_decode(v, len, &disk) < 0)
			problem(&c, "account record corrupt");
		else if (disk.highest_modseq != a->rec.highest_modseq || disk.quota_used != a->rec.quota_used ||
		    disk.next_msgid != a->rec.next_msgid)
			problem(&c, "account record differs from memory");
		rec_account_clear(&disk);
		tcfree(v);
	}
	p = K_MAILBOX;
	range(&c, &p, 1, check_mailbox, NULL);
	if (c.quota != a->rec.quota_used)
		problem(&c, "quota used %llu, messages sum to %llu", (unsigned long long)a->rec.quota_used,
		    (unsigned long long)c.quota);
	p = K_ID;
	range(&c, &p, 1, check_idkey, &nids);
	if (nids != c.live)
		problem(&c, "%llu id keys for %llu messages", (unsigned long long)nids, (unsigned long long)c.live);
	p = K_THREAD;
	range(&c, &p, 1, check_tkey, NULL);
	p = K_SUBJECT;
	range(&c, &p, 1, check_jkey, NULL);
	p = K_NAME;
	range(&c, &p, 1, check_nkey, NULL);
	pthread_mutex_unlock(&a->mu);
	return c.n;
}

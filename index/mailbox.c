/*
 * Mailboxes: names, records, create/delete/rename, subscriptions.
 *
 * A mailbox is a 'B' record, an 'N' name key and a Maildir++ folder. The
 * folder is created before the records are committed (an orphan folder is
 * adopted by the sync), and removed only after the records are gone.
 * Renames move folders first and the records second; if the commit fails
 * the folders are renamed back.
 */
#define _GNU_SOURCE
#include "index/index_private.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

/* Length of the UTF-8 sequence at s (n bytes left) when valid and not a
 * control character (C0, DEL, C1, U+2028/2029); 0 otherwise. */
static size_t utf8_char(const unsigned char *s, size_t n)
{
	uint32_t c;
	size_t len, i;

	if (s[0] < 0x80)
		return s[0] >= 0x20 && s[0] != 0x7f ? 1 : 0;
	if (s[0] >= 0xc2 && s[0] <= 0xdf) {
		len = 2;
		c = s[0] & 0x1f;
	} else if (s[0] >= 0xe0 && s[0] <= 0xef) {
		len = 3;
		c = s[0] & 0x0f;
	} else if (s[0] >= 0xf0 && s[0] <= 0xf4) {
		len = 4;
		c = s[0] & 0x07;
	} else {
		return 0;
	}
	if (n < len)
		return 0;
	for (i = 1; i < len; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		c = c << 6 | (s[i] & 0x3f);
	}
	if ((len == 3 && c < 0x800) || (len == 4 && (c < 0x10000 || c > 0x10ffff)) ||
	    (c >= 0xd800 && c <= 0xdfff) || (c >= 0x80 && c <= 0x9f) || c == 0x2028 || c == 0x2029)
		return 0;
	return len;
}

int idx_mailbox_name_check(const char *name, char *buf, size_t size, char *err, size_t errlen)
{
	char folder[MAILDIR_NAME_BUFSIZE];
	size_t len, i, k;

	len = name ? strlen(name) : 0;
	if (len == 0) {
		idx_seterr(err, errlen, "empty mailbox name");
		return -1;
	}
	if (len > IDX_MAILBOX_NAME_MAX) {
		idx_seterr(err, errlen, "mailbox name too long");
		return -1;
	}
	if (name[0] == '/' || name[len - 1] == '/' || strstr(name, "//") != NULL) {
		idx_seterr(err, errlen, "mailbox name has an empty hierarchy level");
		return -1;
	}
	if (name[0] == '#') {
		idx_seterr(err, errlen, "mailbox name cannot start with # (namespaces)");
		return -1;
	}
	for (i = 0; i < len; i += k) {
		k = utf8_char((const unsigned char *)name + i, len - i);
		if (k == 0) {
			idx_seterr(err, errlen, "mailbox name has invalid UTF-8 or control characters");
			return -1;
		}
	}
	if (size < len + 1) {
		idx_seterr(err, errlen, "mailbox name too long");
		return -1;
	}
	memcpy(buf, name, len + 1);
	if (strncasecmp(buf, "INBOX", 5) == 0 && (buf[5] == '\0' || buf[5] == '/'))
		memcpy(buf, "INBOX", 5);
	if (maildir_folder_encode(buf, folder, sizeof(folder), NULL, 0) < 0) {
		idx_seterr(err, errlen, "mailbox name too long");
		return -1;
	}
	return 1;
}

void counts_apply(struct idx_counts *c, uint32_t flags, uint64_t size, int sign)
{
	uint64_t d = sign > 0 ? 1 : (uint64_t)-1;

	c->total += d;
	if (flags & IDX_DELETED)
		c->deleted += d;
	if (!(flags & IDX_SEEN)) {
		c->unseen += d;
		if (!(flags & IDX_DELETED))
			c->unread += d;
	}
	c->size += sign > 0 ? size : (uint64_t)-size;
}

int mb_load(struct idx_account *a, uint32_t mbid, struct idx_mailbox *mb_r, char *err, size_t errlen)
{
	uint8_t k[5];
	void *v;
	size_t len;
	int r;

	memset(mb_r, 0, sizeof(*mb_r));
	r = db_get(a, k, key_mb(k, mbid), &v, &len, err, errlen);
	if (r <= 0)
		return r;
	r = rec_mailbox_decode(v, len, mbid, mb_r);
	tcfree(v);
	if (r < 0)
		idx_seterr(err, errlen, "%s: mailbox %u: corrupt record", a->dbpath, mbid);
	return r;
}

int mb_store(struct idx_account *a, const struct idx_mailbox *mb, char *err, size_t errlen)
{
	uint8_t k[5];
	TCXSTR *x = tcxstrnew();
	int r;

	rec_mailbox_encode(mb, x);
	r = db_put(a, k, key_mb(k, mb->id), tcxstrptr(x), (size_t)tcxstrsize(x), err, errlen);
	tcxstrdel(x);
	return r;
}

int mb_lookup(struct idx_account *a, const char *canon, uint32_t *mbid_r, char *err, size_t errlen)
{
	TCXSTR *k = tcxstrnew();
	void *v;
	size_t len;
	int r;

	key_name(k, canon);
	r = db_get(a, tcxstrptr(k), (size_t)tcxstrsize(k), &v, &len, err, errlen);
	tcxstrdel(k);
	if (r <= 0)
		return r;
	if (len != 4 || be32_get(v) == 0) {
		tcfree(v);
		idx_seterr(err, errlen, "%s: name key of %s: corrupt", a->dbpath, canon);
		return -1;
	}
	*mbid_r = be32_get(v);
	tcfree(v);
	return 1;
}

static int name_put(struct idx_account *a, const char *name, uint32_t mbid, char *err, size_t errlen)
{
	TCXSTR *k = tcxstrnew();
	uint8_t v[4];
	int r;

	key_name(k, name);
	be32_put(v, mbid);
	r = db_put(a, tcxstrptr(k), (size_t)tcxstrsize(k), v, 4, err, errlen);
	tcxstrdel(k);
	return r;
}

static int name_out(struct idx_account *a, const char *name, char *err, size_t errlen)
{
	TCXSTR *k = tcxstrnew();
	int r;

	key_name(k, name);
	r = db_out(a, tcxstrptr(k), (size_t)tcxstrsize(k), err, errlen);
	tcxstrdel(k);
	return r;
}

bool mb_keyword_add(struct idx_mailbox *mb, const char *kw)
{
	for (size_t i = 0; i < mb->nkeywords; i++)
		if (strcasecmp(mb->keywords[i], kw) == 0)
			return false;
	if (mb->nkeywords >= IDX_KEYWORDS_PER_MAILBOX)
		return false;
	mb->keywords = idx_xrealloc(mb->keywords, sizeof(*mb->keywords) * (mb->nkeywords + 1));
	mb->keywords[mb->nkeywords++] = idx_xstrdup(kw);
	return true;
}

/* Create one mailbox whose parents exist. */
static int create_one(struct idx_account *a, const char *canon, const char *folder_or_null, uint32_t parent,
    uint32_t special_use, bool subscribe, uint32_t *id_r, char *err, size_t errlen)
{
	char folder[MAILDIR_NAME_BUFSIZE];
	struct idx_mailbox mb;
	int r;

	if (folder_or_null != NULL) {
		snprintf(folder, sizeof(folder), "%s", folder_or_null);
	} else if (maildir_folder_encode(canon, folder, sizeof(folder), err, errlen) < 0) {
		return -1;
	}
	if (a->rec.next_mbid > UINT32_MAX || a->rec.next_uidvalidity > UINT32_MAX) {
		idx_seterr(err, errlen, "%s: out of mailbox ids", a->dbpath);
		return -1;
	}
	if (maildir_folder_create(a->maildir, folder, err, errlen) < 0)
		return -1;
	memset(&mb, 0, sizeof(mb));
	mb.id = (uint32_t)a->rec.next_mbid++;
	mb.name = (char *)canon;
	mb.folder = folder;
	mb.parent_id = parent;
	mb.uidvalidity = (uint32_t)a->rec.next_uidvalidity++;
	mb.uidnext = 1;
	mb.special_use = special_use;
	mb.subscribed = subscribe;
	mb.created_modseq = mb.highest_modseq = op_modseq(a);
	a->rec_dirty = true;
	r = mb_store(a, &mb, err, errlen);
	if (r > 0)
		r = name_put(a, canon, mb.id, err, errlen);
	if (r < 0)
		return -1;
	change_push(a, IDX_CH_MAILBOX_ADD, mb.id, 0, mb.highest_modseq, 0, canon, NULL);
	if (id_r != NULL)
		*id_r = mb.id;
	return 1;
}

int mb_create_locked(struct idx_account *a, const char *canon, const char *folder_or_null, uint32_t special_use,
    bool subscribe, uint32_t *id_r, char *err, size_t errlen)
{
	char *buf = idx_xstrdup(canon);
	uint32_t parent = 0, id;
	char *p;
	int r;

	/* Missing parents first (as IMAP CREATE does), top down. */
	for (p = strchr(buf, '/'); p != NULL; p = strchr(p + 1, '/')) {
		*p = '\0';
		r = mb_lookup(a, buf, &id, err, errlen);
		if (r == 0)
			r = create_one(a, buf, NULL, parent, 0, subscribe, &id, err, errlen);
		*p = '/';
		if (r < 0)
			goto out;
		parent = id;
	}
	r = mb_lookup(a, canon, &id, err, errlen);
	if (r > 0) {
		if (id_r != NULL)
			*id_r = id;
		r = 0;
	} else if (r == 0) {
		r = create_one(a, canon, folder_or_null, parent, special_use, subscribe, id_r, err, errlen);
	}
out:
	free(buf);
	return r;
}

static int mb_cmp(const void *x, const void *y)
{
	const struct idx_mailbox *a = x, *b = y;

	return strcmp(a->name, b->name);
}

/* Every mailbox record, unsorted; corrupt ones are skipped. */
static int mb_all(struct idx_account *a, struct idx_mailbox **list_r, size_t *n_r)
{
	BDBCUR *cur = tcbdbcurnew(a->db);
	struct idx_mailbox *v = NULL;
	size_t n = 0, cap = 0;
	uint8_t k0 = K_MAILBOX;

	if (tcbdbcurjump(cur, &k0, 1)) {
		for (;;) {
			int ks, vs;
			const uint8_t *kp = tcbdbcurkey3(cur, &ks);
			const void *vp;

			if (kp == NULL || ks != 5 || kp[0] != K_MAILBOX)
				break;
			vp = tcbdbcurval3(cur, &vs);
			if (n == cap) {
				cap = cap ? cap * 2 : 16;
				v = idx_xrealloc(v, sizeof(*v) * cap);
			}
			if (vp != NULL && rec_mailbox_decode(vp, (size_t)vs, be32_get(kp + 1), &v[n]) > 0)
				n++;
			if (!tcbdbcurnext(cur))
				break;
		}
	}
	tcbdbcurdel(cur);
	*list_r = v;
	*n_r = n;
	return (int)n;
}

int idx_mailbox_list(struct idx_account *a, struct idx_mailbox **list_r, size_t *n_r, char *err, size_t errlen)
{
	pthread_mutex_lock(&a->mu);
	mb_all(a, list_r, n_r);
	pthread_mutex_unlock(&a->mu);
	if (*n_r > 1)
		qsort(*list_r, *n_r, sizeof(**list_r), mb_cmp);
	return (int)*n_r;
}

int idx_mailbox_get(struct idx_account *a, const char *name, struct idx_mailbox *mb_r, char *err, size_t errlen)
{
	char canon[IDX_MAILBOX_NAME_MAX + 1];
	uint32_t id;
	int r;

	memset(mb_r, 0, sizeof(*mb_r));
	if (idx_mailbox_name_check(name, canon, sizeof(canon), NULL, 0) < 0)
		return 0;
	pthread_mutex_lock(&a->mu);
	r = mb_lookup(a, canon, &id, err, errlen);
	if (r > 0)
		r = mb_load(a, id, mb_r, err, errlen);
	pthread_mutex_unlock(&a->mu);
	return r;
}

int idx_mailbox_get_id(struct idx_account *a, uint32_t id, struct idx_mailbox *mb_r, char *err, size_t errlen)
{
	int r;

	pthread_mutex_lock(&a->mu);
	r = mb_load(a, id, mb_r, err, errlen);
	pthread_mutex_unlock(&a->mu);
	return r;
}

int idx_mailbox_create(struct idx_account *a, const char *name, uint32_t special_use, bool subscribe,
    uint32_t *id_r, char *err, size_t errlen)
{
	char canon[IDX_MAILBOX_NAME_MAX + 1];
	int r;

	if (idx_mailbox_name_check(name, canon, sizeof(canon), err, errlen) < 0)
		return IDX_REFUSED;
	if (special_use & ~(uint32_t)31) {
		idx_seterr(err, errlen, "unknown special-use attribute");
		return IDX_REFUSED;
	}
	if (op_begin(a, err, errlen) < 0)
		return -1;
	r = mb_create_locked(a, canon, NULL, special_use, subscribe, id_r, err, errlen);
	r = op_end(a, r, err, errlen);
	op_unlock(a);
	return r;
}

/* Whether mailbox name has children (a key "N<name>/..." exists). */
static int has_children(struct idx_account *a, const char *name)
{
	TCXSTR *k = tcxstrnew();
	BDBCUR *cur = tcbdbcurnew(a->db);
	int r = 0;

	key_name(k, name);
	tcxstrcat(k, "/", 1);
	if (tcbdbcurjump(cur, tcxstrptr(k), tcxstrsize(k))) {
		int ks;
		const char *kp = tcbdbcurkey3(cur, &ks);

		r = kp != NULL && ks >= tcxstrsize(k) && memcmp(kp, tcxstrptr(k), (size_t)tcxstrsize(k)) == 0;
	}
	tcbdbcurdel(cur);
	tcxstrdel(k);
	return r;
}

/* Collect the keys of a fixed-length range (prefix p, plen bytes; keys of klen bytes). */
static size_t range_keys(struct idx_account *a, const uint8_t *p, size_t plen, size_t klen, uint8_t **keys_r)
{
	BDBCUR *cur = tcbdbcurnew(a->db);
	uint8_t *keys = NULL;
	size_t n = 0, cap = 0;

	if (tcbdbcurjump(cur, p, (int)plen)) {
		for (;;) {
			int ks;
			const uint8_t *kp = tcbdbcurkey3(cur, &ks);

			if (kp == NULL || (size_t)ks < plen || memcmp(kp, p, plen) != 0)
				break;
			if ((size_t)ks == klen) {
				if (n == cap) {
					cap = cap ? cap * 2 : 64;
					keys = idx_xrealloc(keys, cap * klen);
				}
				memcpy(keys + n * klen, kp, klen);
				n++;
			}
			if (!tcbdbcurnext(cur))
				break;
		}
	}
	tcbdbcurdel(cur);
	*keys_r = keys;
	return n;
}

/* Remove every message (no tombstones) and tombstone of mailbox mb. */
static int mb_purge(struct idx_account *a, const struct idx_mailbox *mb, char *err, size_t errlen)
{
	uint8_t p[5], *keys;
	size_t n, i;
	int r = 1;

	p[0] = K_MSG;
	be32_put(p + 1, mb->id);
	n = range_keys(a, p, 5, 9, &keys);
	for (i = 0; i < n && r >= 0; i++) {
		struct idx_message m;
		uint8_t *k = keys + i * 9;

		r = msg_load(a, mb->id, be32_get(k + 5), &m, NULL, 0);
		if (r > 0) {
			r = msg_remove(a, &m, 0, false, err, errlen);
			idx_message_clear(&m);
		} else {
			r = db_out(a, k, 9, err, errlen); /* corrupt: drop the record */
		}
	}
	free(keys);
	if (r < 0)
		return -1;
	p[0] = K_TOMB;
	n = range_keys(a, p, 5, 9, &keys);
	for (i = 0; i < n && r >= 0; i++)
		r = db_out(a, keys + i * 9, 9, err, errlen);
	free(keys);
	if (r < 0)
		return -1;
	p[0] = K_STAMP; /* the folder's stamp (sync.c) */
	if (db_out(a, p, 5, err, errlen) < 0)
		return -1;
	a->rec.quota_used -= a->rec.quota_used < mb->counts.size ? a->rec.quota_used : mb->counts.size;
	a->rec_dirty = true;
	return 1;
}

int idx_mailbox_delete(struct idx_account *a, const char *name, char *err, size_t errlen)
{
	char canon[IDX_MAILBOX_NAME_MAX + 1];
	struct idx_mailbox mb;
	uint8_t k[5];
	uint32_t id;
	int r;

	if (idx_mailbox_name_check(name, canon, sizeof(canon), NULL, 0) < 0)
		return 0;
	if (strcmp(canon, "INBOX") == 0) {
		idx_seterr(err, errlen, "INBOX cannot be deleted");
		return IDX_REFUSED;
	}
	if (op_begin(a, err, errlen) < 0)
		return -1;
	memset(&mb, 0, sizeof(mb));
	r = mb_lookup(a, canon, &id, err, errlen);
	if (r > 0 && has_children(a, canon)) {
		idx_seterr(err, errlen, "mailbox has children: delete them first");
		r = IDX_REFUSED;
	}
	if (r > 0)
		r = mb_load(a, id, &mb, err, errlen);
	if (r > 0)
		r = mb_purge(a, &mb, err, errlen);
	if (r > 0)
		r = db_out(a, k, key_mb(k, id), err, errlen);
	if (r > 0)
		r = name_out(a, canon, err, errlen);
	if (r > 0) {
		op_modseq(a);
		change_push(a, IDX_CH_MAILBOX_REMOVE, id, 0, a->op_modseq, 0, canon, NULL);
	}
	r = op_end(a, r, err, errlen);
	/* The records are gone: now the files (a failure leaves a folder the
	 * sync would adopt again, so report it). */
	if (r > 0 && maildir_folder_delete(a->maildir, mb.folder, err, errlen) < 0)
		r = -1;
	op_unlock(a);
	idx_mailbox_clear(&mb);
	return r;
}

int idx_mailbox_subscribe(struct idx_account *a, const char *name, bool subscribe, char *err, size_t errlen)
{
	char canon[IDX_MAILBOX_NAME_MAX + 1];
	struct idx_mailbox mb;
	uint32_t id;
	int r;

	if (idx_mailbox_name_check(name, canon, sizeof(canon), NULL, 0) < 0)
		return 0;
	if (op_begin(a, err, errlen) < 0)
		return -1;
	memset(&mb, 0, sizeof(mb));
	r = mb_lookup(a, canon, &id, err, errlen);
	if (r > 0)
		r = mb_load(a, id, &mb, err, errlen);
	if (r > 0 && mb.subscribed != subscribe) {
		mb.subscribed = subscribe;
		r = mb_store(a, &mb, err, errlen);
	}
	r = op_end(a, r, err, errlen);
	op_unlock(a);
	idx_mailbox_clear(&mb);
	return r;
}

int idx_mailbox_set_special_use(struct idx_account *a, const char *name, uint32_t special_use, char *err,
    size_t errlen)
{
	char canon[IDX_MAILBOX_NAME_MAX + 1];
	struct idx_mailbox mb;
	uint32_t id;
	int r;

	if (special_use & ~(uint32_t)31) {
		idx_seterr(err, errlen, "unknown special-use attribute");
		return IDX_REFUSED;
	}
	if (idx_mailbox_name_check(name, canon, sizeof(canon), NULL, 0) < 0)
		return 0;
	if (op_begin(a, err, errlen) < 0)
		return -1;
	memset(&mb, 0, sizeof(mb));
	r = mb_lookup(a, canon, &id, err, errlen);
	if (r > 0)
		r = mb_load(a, id, &mb, err, errlen);
	if (r > 0 && mb.special_use != special_use) {
		mb.special_use = special_use;
		mb.highest_modseq = op_modseq(a);
		r = mb_store(a, &mb, err, errlen);
	}
	r = op_end(a, r, err, errlen);
	op_unlock(a);
	idx_mailbox_clear(&mb);
	return r;
}

/* ---- rename ---- */

struct ren {
	uint32_t id;
	char *oldname, *newname;
	char oldfolder[MAILDIR_NAME_BUFSIZE], newfolder[MAILDIR_NAME_BUFSIZE];
	bool moved; /* folder renamed on disk */
};

/* Rename INBOX: a new mailbox `to` gets all of INBOX's messages. */
static int rename_inbox(struct idx_account *a, const char *to, struct xfer_undo *u, char *err, size_t errlen)
{
	struct idx_uidstate *uids = NULL;
	uint32_t *list = NULL, *newuids = NULL, inbox, toid;
	size_t n = 0, i;
	int r;

	r = mb_lookup(a, "INBOX", &inbox, err, errlen);
	if (r <= 0)
		return r == 0 ? 0 : -1;
	r = mb_lookup(a, to, &toid, err, errlen);
	if (r != 0) {
		if (r > 0) {
			idx_seterr(err, errlen, "mailbox already exists");
			r = IDX_REFUSED;
		}
		return r;
	}
	r = mb_create_locked(a, to, NULL, 0, true, &toid, err, errlen);
	if (r <= 0)
		return -1;
	if (msg_uids_locked(a, inbox, &uids, &n) < 0) {
		idx_seterr(err, errlen, "listing INBOX failed");
		return -1;
	}
	if (n > 0) {
		list = idx_xmalloc(sizeof(*list) * n);
		newuids = idx_xmalloc(sizeof(*newuids) * n);
		for (i = 0; i < n; i++)
			list[i] = uids[i].uid;
		r = msg_transfer_locked(a, inbox, list, n, toid, true, newuids, NULL, u, err, errlen);
	}
	free(uids);
	free(list);
	free(newuids);
	return r < 0 ? r : 1;
}

int idx_mailbox_rename(struct idx_account *a, const char *from, const char *to, char *err, size_t errlen)
{
	char cfrom[IDX_MAILBOX_NAME_MAX + 1], cto[IDX_MAILBOX_NAME_MAX + 1];
	struct idx_mailbox *all = NULL;
	struct ren *rv = NULL;
	size_t nall = 0, nr = 0, i, flen;
	uint32_t id;
	int r;

	/* Messages may get another identity: first make the delivery log unneeded (wal.c). */
	if (idx_checkpoint(a, err, errlen) < 0)
		return -1;

	if (idx_mailbox_name_check(from, cfrom, sizeof(cfrom), NULL, 0) < 0)
		return 0;
	if (idx_mailbox_name_check(to, cto, sizeof(cto), err, errlen) < 0)
		return IDX_REFUSED;
	flen = strlen(cfrom);
	if (strcmp(cfrom, cto) == 0 || (strncmp(cto, cfrom, flen) == 0 && cto[flen] == '/')) {
		idx_seterr(err, errlen, "cannot rename a mailbox to itself or below itself");
		return IDX_REFUSED;
	}
	if (strcmp(cto, "INBOX") == 0) {
		idx_seterr(err, errlen, "mailbox already exists");
		return IDX_REFUSED;
	}
	if (op_begin(a, err, errlen) < 0)
		return -1;
	if (strcmp(cfrom, "INBOX") == 0) {
		struct xfer_undo u = { 0 };

		r = rename_inbox(a, cto, &u, err, errlen);
		r = op_end(a, r, err, errlen);
		if (r < 0)
			xfer_undo_run(&u);
		op_unlock(a);
		xfer_undo_clear(&u);
		return r;
	}
	r = mb_lookup(a, cfrom, &id, err, errlen);
	if (r <= 0)
		goto end;
	r = mb_lookup(a, cto, &id, err, errlen);
	if (r != 0) {
		if (r > 0) {
			idx_seterr(err, errlen, "mailbox already exists");
			r = IDX_REFUSED;
		}
		goto end;
	}
	/* The mailbox and its children, parents before children (sorted). */
	mb_all(a, &all, &nall);
	if (nall > 1)
		qsort(all, nall, sizeof(*all), mb_cmp);
	rv = idx_xmalloc(sizeof(*rv) * (nall ? nall : 1));
	for (i = 0; i < nall; i++) {
		struct ren *e;
		size_t tl;

		if (!(strcmp(all[i].name, cfrom) == 0 ||
			(strncmp(all[i].name, cfrom, flen) == 0 && all[i].name[flen] == '/')))
			continue;
		e = &rv[nr++];
		memset(e, 0, sizeof(*e));
		e->id = all[i].id;
		e->oldname = idx_xstrdup(all[i].name);
		tl = strlen(cto) + strlen(all[i].name + flen) + 1;
		e->newname = idx_xmalloc(tl);
		snprintf(e->newname, tl, "%s%s", cto, all[i].name + flen);
		snprintf(e->oldfolder, sizeof(e->oldfolder), "%s", all[i].folder);
		if (strlen(e->newname) > IDX_MAILBOX_NAME_MAX ||
		    maildir_folder_encode(e->newname, e->newfolder, sizeof(e->newfolder), NULL, 0) < 0) {
			idx_seterr(err, errlen, "mailbox name too long");
			r = IDX_REFUSED;
			goto end;
		}
		r = mb_lookup(a, e->newname, &id, err, errlen);
		if (r != 0) {
			if (r > 0) {
				idx_seterr(err, errlen, "mailbox %s already exists", e->newname);
				r = IDX_REFUSED;
			}
			goto end;
		}
	}
	/* Parents of the new name, then the records. */
	{
		char *slash = strrchr(cto, '/');
		uint32_t parent = 0;

		if (slash != NULL) {
			*slash = '\0';
			r = mb_create_locked(a, cto, NULL, 0, false, &parent, err, errlen);
			*slash = '/';
			if (r < 0)
				goto end;
		}
		for (i = 0; i < nr && r >= 0; i++) {
			struct idx_mailbox mb;

			r = mb_load(a, rv[i].id, &mb, err, errlen);
			if (r <= 0) {
				r = -1;
				break;
			}
			free(mb.name);
			free(mb.folder);
			mb.name = idx_xstrdup(rv[i].newname);
			mb.folder = idx_xstrdup(rv[i].newfolder);
			if (i == 0)
				mb.parent_id = parent;
			mb.highest_modseq = op_modseq(a);
			r = mb_store(a, &mb, err, errlen);
			if (r > 0)
				r = name_out(a, rv[i].oldname, err, errlen);
			if (r >= 0)
				r = name_put(a, rv[i].newname, rv[i].id, err, errlen);
			idx_mailbox_clear(&mb);
			change_push(a, IDX_CH_MAILBOX_RENAME, rv[i].id, 0, a->op_modseq, 0, rv[i].newname, rv[i].oldname);
		}
	}
	/* Folders: children are separate directories, each renamed. */
	for (i = 0; i < nr && r >= 0; i++) {
		r = maildir_folder_rename(a->maildir, rv[i].oldfolder, rv[i].newfolder, err, errlen);
		if (r == 0) /* folder missing: make an empty one */
			r = maildir_folder_create(a->maildir, rv[i].newfolder, err, errlen);
		else if (r > 0)
			rv[i].moved = true;
	}
	if (r >= 0)
		r = 1;
end:
	r = op_end(a, r, err, errlen);
	if (r < 0) {
		for (i = 0; i < nr; i++)
			if (rv[i].moved)
				(void)maildir_folder_rename(a->maildir, rv[i].newfolder, rv[i].oldfolder, NULL, 0);
	}
	op_unlock(a);
	for (i = 0; i < nr; i++) {
		free(rv[i].oldname);
		free(rv[i].newname);
	}
	free(rv);
	idx_mailbox_list_free(&all, nall);
	return r;
}

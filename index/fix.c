/*
 * Repairs behind the fix* commands. Each runs as one operation (account
 * lock and one transaction): it first collects what is wrong with cursor
 * walks (records are never written while a cursor is open), then rewrites
 * the records, and reports every change in words an operator can act on.
 */
#define _GNU_SOURCE
#include "index/index_private.h"
#include "index/tools.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static void say(idx_report_fn report, void *arg, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static void say(idx_report_fn report, void *arg, const char *fmt, ...)
{
	char buf[1024];
	va_list ap;

	if (report == NULL)
		return;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	report(arg, buf);
}

/* The UIDs of keys type+mbid+uid (U or X), in order. Lock held. */
static int walk_uids(struct idx_account *a, char type, uint32_t mbid, uint32_t **uids_r, size_t *n_r)
{
	uint8_t k[17];
	size_t kl = key_mbuid(k, type, mbid, 0), cap = 0;
	BDBCUR *c = tcbdbcurnew(a->db);
	const uint8_t *key;
	int ksz;

	*uids_r = NULL;
	*n_r = 0;
	if (!tcbdbcurjump(c, k, (int)kl)) {
		tcbdbcurdel(c);
		return 0;
	}
	while ((key = tcbdbcurkey3(c, &ksz)) != NULL) {
		if (ksz != 9 || key[0] != (uint8_t)type || be32_get(key + 1) != mbid)
			break;
		if (*n_r == cap) {
			cap = cap ? cap * 2 : 256;
			*uids_r = idx_xrealloc(*uids_r, cap * sizeof(uint32_t));
		}
		(*uids_r)[(*n_r)++] = be32_get(key + 5);
		if (!tcbdbcurnext(c))
			break;
	}
	tcbdbcurdel(c);
	return 1;
}

/* Every mailbox id. Lock held. */
static int walk_mailboxes(struct idx_account *a, uint32_t **ids_r, size_t *n_r)
{
	BDBCUR *c = tcbdbcurnew(a->db);
	const uint8_t *key;
	size_t cap = 0;
	int ksz;

	*ids_r = NULL;
	*n_r = 0;
	if (!tcbdbcurjump(c, "B", 1)) {
		tcbdbcurdel(c);
		return 0;
	}
	while ((key = tcbdbcurkey3(c, &ksz)) != NULL) {
		if (ksz != 5 || key[0] != K_MAILBOX)
			break;
		if (*n_r == cap) {
			cap = cap ? cap * 2 : 64;
			*ids_r = idx_xrealloc(*ids_r, cap * sizeof(uint32_t));
		}
		(*ids_r)[(*n_r)++] = be32_get(key + 1);
		if (!tcbdbcurnext(c))
			break;
	}
	tcbdbcurdel(c);
	return 1;
}

/* Mailbox ids to work on: one by name (0 when absent) or all. Lock held. */
static int targets(struct idx_account *a, const char *mailbox, uint32_t **ids_r, size_t *n_r, char *err,
    size_t errlen)
{
	char canon[IDX_MAILBOX_NAME_MAX + 1];
	uint32_t id;
	int r;

	if (mailbox == NULL)
		return walk_mailboxes(a, ids_r, n_r) >= 0 ? 1 : -1;
	*ids_r = NULL;
	*n_r = 0;
	if (idx_mailbox_name_check(mailbox, canon, sizeof(canon), err, errlen) < 0)
		return 0;
	r = mb_lookup(a, canon, &id, err, errlen);
	if (r <= 0)
		return r;
	*ids_r = idx_xmalloc(sizeof(uint32_t));
	(*ids_r)[0] = id;
	*n_r = 1;
	return 1;
}

int idx_fix_uidmeta(struct idx_account *a, idx_report_fn report, void *arg, char *err, size_t errlen)
{
	uint32_t *ids = NULL;
	size_t n = 0;
	int r, fixes = 0;

	/* Messages may get another identity: first make the delivery log unneeded (wal.c). */
	if (idx_checkpoint(a, err, errlen) < 0)
		return -1;

	if (op_begin(a, err, errlen) < 0)
		return -1;
	r = walk_mailboxes(a, &ids, &n);
	for (size_t i = 0; r >= 0 && i < n; i++) {
		struct idx_mailbox mb = { 0 };
		uint32_t *uids = NULL, maxuid = 0;
		size_t nu = 0;

		if (mb_load(a, ids[i], &mb, err, errlen) <= 0) {
			r = -1;
			break;
		}
		for (int t = 0; t < 2; t++) {
			walk_uids(a, t == 0 ? K_MSG : K_TOMB, ids[i], &uids, &nu);
			if (nu > 0 && uids[nu - 1] > maxuid)
				maxuid = uids[nu - 1];
			free(uids);
		}
		bool dirty = false;
		if (maxuid != 0 && mb.uidnext <= maxuid) {
			say(report, arg, "mailbox %s: uidnext %u -> %u", mb.name, mb.uidnext, maxuid + 1);
			mb.uidnext = maxuid + 1;
			dirty = true;
		}
		if (mb.uidnext == 0) {
			say(report, arg, "mailbox %s: uidnext 0 -> 1", mb.name);
			mb.uidnext = 1;
			dirty = true;
		}
		if (mb.uidvalidity >= a->rec.next_uidvalidity) {
			say(report, arg, "account: next uidvalidity %llu -> %u (mailbox %s has %u)",
			    (unsigned long long)a->rec.next_uidvalidity, mb.uidvalidity + 1, mb.name, mb.uidvalidity);
			a->rec.next_uidvalidity = (uint64_t)mb.uidvalidity + 1;
			a->rec_dirty = true;
			fixes++;
		}
		if (dirty) {
			fixes++;
			r = mb_store(a, &mb, err, errlen);
		}
		idx_mailbox_clear(&mb);
	}
	free(ids);
	r = op_end(a, r < 0 ? -1 : fixes, err, errlen);
	op_unlock(a);
	return r;
}

int idx_bump_uidvalidity(struct idx_account *a, const char *mailbox, idx_report_fn report, void *arg, char *err,
    size_t errlen)
{
	uint32_t *ids = NULL;
	size_t n = 0;
	int r;

	/* Messages may get another identity: first make the delivery log unneeded (wal.c). */
	if (idx_checkpoint(a, err, errlen) < 0)
		return -1;

	if (op_begin(a, err, errlen) < 0)
		return -1;
	r = targets(a, mailbox, &ids, &n, err, errlen);
	for (size_t i = 0; r > 0 && i < n; i++) {
		struct idx_mailbox mb = { 0 };

		if (mb_load(a, ids[i], &mb, err, errlen) <= 0) {
			r = -1;
			break;
		}
		say(report, arg, "mailbox %s: uidvalidity %u -> %llu", mb.name, mb.uidvalidity,
		    (unsigned long long)a->rec.next_uidvalidity);
		mb.uidvalidity = (uint32_t)a->rec.next_uidvalidity++;
		a->rec_dirty = true;
		r = mb_store(a, &mb, err, errlen);
		if (r > 0)
			change_push(a, IDX_CH_MAILBOX_UIDVALIDITY, mb.id, 0, 0, 0, NULL, NULL);
		idx_mailbox_clear(&mb);
	}
	free(ids);
	r = op_end(a, r < 0 ? -1 : (r == 0 ? 0 : (int)n), err, errlen);
	op_unlock(a);
	return r;
}

int idx_reassign_uids(struct idx_account *a, const char *mailbox, idx_report_fn report, void *arg, char *err,
    size_t errlen)
{
	uint32_t *ids = NULL;
	size_t n = 0;
	int r;

	/* Messages may get another identity: first make the delivery log unneeded (wal.c). */
	if (idx_checkpoint(a, err, errlen) < 0)
		return -1;

	if (op_begin(a, err, errlen) < 0)
		return -1;
	r = targets(a, mailbox, &ids, &n, err, errlen);
	for (size_t i = 0; r > 0 && i < n; i++) {
		struct idx_mailbox mb = { 0 };
		uint32_t *uids = NULL, *tombs = NULL;
		size_t nu = 0, nt = 0;

		if (mb_load(a, ids[i], &mb, err, errlen) <= 0) {
			r = -1;
			break;
		}
		walk_uids(a, K_MSG, mb.id, &uids, &nu);
		walk_uids(a, K_TOMB, mb.id, &tombs, &nt);
		/* Ascending: new UID j+1 <= old UID, and every old UID below is done. */
		for (size_t j = 0; r > 0 && j < nu; j++) {
			struct idx_message m = { 0 };

			if (msg_load(a, mb.id, uids[j], &m, err, errlen) <= 0) {
				r = -1;
				break;
			}
			if (m.uid != j + 1) {
				r = msg_remove(a, &m, 0, true, err, errlen);
				m.uid = (uint32_t)(j + 1);
				if (r > 0)
					r = msg_insert(a, &m, NULL, 0, err, errlen);
			}
			idx_message_clear(&m);
		}
		for (size_t j = 0; r > 0 && j < nt; j++) {
			uint8_t k[17];

			if (db_out(a, k, key_mbuid(k, K_TOMB, mb.id, tombs[j]), err, errlen) < 0)
				r = -1;
		}
		if (r > 0) {
			say(report, arg, "mailbox %s: %zu messages renumbered 1..%zu, uidvalidity %u -> %llu", mb.name, nu,
			    nu, mb.uidvalidity, (unsigned long long)a->rec.next_uidvalidity);
			mb.uidnext = (uint32_t)nu + 1;
			mb.uidvalidity = (uint32_t)a->rec.next_uidvalidity++;
			mb.highest_modseq = op_modseq(a);
			a->rec_dirty = true;
			r = mb_store(a, &mb, err, errlen);
			/* The renumbering itself is not announced: it means nothing under the old UIDVALIDITY. */
			if (r > 0)
				change_push(a, IDX_CH_MAILBOX_UIDVALIDITY, mb.id, 0, mb.highest_modseq, 0, NULL, NULL);
		}
		free(uids);
		free(tombs);
		idx_mailbox_clear(&mb);
	}
	free(ids);
	r = op_end(a, r < 0 ? -1 : (r == 0 ? 0 : (int)n), err, errlen);
	op_unlock(a);
	return r;
}

/*
 * The 'J' (base subject) key of message m: added when missing. The keys are
 * derived from the records, so the repair that walks every record (the
 * count recalculation, part of verifydata -fix) keeps them too. 1 added,
 * 0 present, -1.
 */
static int fix_subject_key(struct idx_account *a, const struct idx_mailbox *mb, const struct idx_message *m,
    idx_report_fn report, void *arg, char *err, size_t errlen)
{
	TCXSTR *x = tcxstrnew();
	int r = 0;

	if (key_subject(x, m->subject_base, m->id, true) && tcbdbvsiz(a->db, tcxstrptr(x), tcxstrsize(x)) < 0) {
		r = db_put(a, tcxstrptr(x), (size_t)tcxstrsize(x), "", 0, err, errlen);
		if (r > 0)
			say(report, arg, "mailbox %s uid %u: subject key added", mb->name, m->uid);
	}
	tcxstrdel(x);
	return r;
}

/* Remove 'J' keys that are not exactly the key of a live message. Count, -1. */
static int fix_subject_stale(struct idx_account *a, idx_report_fn report, void *arg, char *err, size_t errlen)
{
	BDBCUR *c = tcbdbcurnew(a->db);
	TCLIST *keys = tclistnew();
	TCXSTR *want = tcxstrnew();
	char type = K_SUBJECT;
	int i, n = 0;

	if (tcbdbcurjump(c, &type, 1)) {
		const uint8_t *kp;
		int ks;

		while ((kp = tcbdbcurkey3(c, &ks)) != NULL && ks >= 1 && kp[0] == K_SUBJECT) {
			tclistpush(keys, kp, ks);
			if (!tcbdbcurnext(c))
				break;
		}
	}
	tcbdbcurdel(c);
	for (i = 0; i < tclistnum(keys) && n >= 0; i++) {
		int ks;
		const uint8_t *kp = tclistval(keys, i, &ks);
		struct idx_message m;
		uint64_t id = ks >= 10 ? be64_get(kp + ks - 8) : 0;
		bool ok = false;

		if (id != 0 && msg_load_id_locked(a, id, &m, NULL, 0) > 0) {
			ok = key_subject(want, m.subject_base, m.id, true) && tcxstrsize(want) == ks &&
			    memcmp(tcxstrptr(want), kp, (size_t)ks) == 0;
			idx_message_clear(&m);
		}
		if (ok)
			continue;
		if (db_out(a, kp, (size_t)ks, err, errlen) < 0) {
			n = -1;
			break;
		}
		say(report, arg, "subject key of message %llu removed: no live message with that base subject",
		    (unsigned long long)id);
		n++;
	}
	tcxstrdel(want);
	tclistdel(keys);
	return n;
}

int idx_recalculate_counts(struct idx_account *a, idx_report_fn report, void *arg, char *err, size_t errlen)
{
	uint32_t *ids = NULL;
	uint64_t quota = 0;
	size_t n = 0;
	int r, fixes = 0;

	if (op_begin(a, err, errlen) < 0)
		return -1;
	r = walk_mailboxes(a, &ids, &n);
	for (size_t i = 0; r >= 0 && i < n; i++) {
		struct idx_mailbox mb = { 0 };
		struct idx_counts c = { 0 };
		uint32_t *uids = NULL;
		size_t nu = 0;

		if (mb_load(a, ids[i], &mb, err, errlen) <= 0) {
			r = -1;
			break;
		}
		walk_uids(a, K_MSG, mb.id, &uids, &nu);
		for (size_t j = 0; j < nu && r >= 0; j++) {
			struct idx_message m = { 0 };

			if (msg_load(a, mb.id, uids[j], &m, err, errlen) <= 0)
				continue; /* corrupt: verifydata reports it */
			counts_apply(&c, m.flags, m.size, 1);
			switch (fix_subject_key(a, &mb, &m, report, arg, err, errlen)) {
			case -1:
				r = -1;
				break;
			case 1:
				fixes++;
				break;
			}
			idx_message_clear(&m);
		}
		free(uids);
		if (r < 0) {
			idx_mailbox_clear(&mb);
			break;
		}
		quota += c.size;
		if (memcmp(&c, &mb.counts, sizeof(c)) != 0) {
			say(report, arg,
			    "mailbox %s: total %llu -> %llu, deleted %llu -> %llu, unseen %llu -> %llu, unread %llu -> %llu, "
			    "size %llu -> %llu",
			    mb.name, (unsigned long long)mb.counts.total, (unsigned long long)c.total,
			    (unsigned long long)mb.counts.deleted, (unsigned long long)c.deleted,
			    (unsigned long long)mb.counts.unseen, (unsigned long long)c.unseen,
			    (unsigned long long)mb.counts.unread, (unsigned long long)c.unread,
			    (unsigned long long)mb.counts.size, (unsigned long long)c.size);
			mb.counts = c;
			r = mb_store(a, &mb, err, errlen);
			change_push(a, IDX_CH_MAILBOX_COUNTS, mb.id, 0, 0, 0, NULL, NULL);
			fixes++;
		}
		idx_mailbox_clear(&mb);
	}
	free(ids);
	if (r >= 0) {
		int stale = fix_subject_stale(a, report, arg, err, errlen);

		if (stale < 0)
			r = -1;
		else
			fixes += stale;
	}
	if (r >= 0 && quota != a->rec.quota_used) {
		say(report, arg, "account: quota used %llu -> %llu", (unsigned long long)a->rec.quota_used,
		    (unsigned long long)quota);
		a->rec.quota_used = quota;
		a->rec_dirty = true;
		fixes++;
	}
	r = op_end(a, r < 0 ? -1 : fixes, err, errlen);
	op_unlock(a);
	return r;
}

/* Rebuild the MIME cache of message m from its open file. */
static int recache(struct idx_account *a, const struct idx_message *m, int fd, uint64_t size, char *err, size_t errlen)
{
	struct mime_msg *msg = NULL;
	TCXSTR *x;
	uint8_t k[17];
	int r;

	if (msg_parse_fd(fd, size, &msg, err, errlen) < 0)
		return -1;
	if (msg == NULL)
		return 1;
	x = tcxstrnew();
	mime_cache_encode(msg, x);
	r = db_put(a, k, key_id(k, K_CACHE, m->id), tcxstrptr(x), (size_t)tcxstrsize(x), err, errlen);
	tcxstrdel(x);
	mime_msg_free(&msg);
	return r;
}

int idx_fix_msgsize(struct idx_account *a, idx_report_fn report, void *arg, char *err, size_t errlen)
{
	uint32_t *ids = NULL;
	size_t n = 0;
	int r, fixes = 0;

	/* Messages may get another identity: first make the delivery log unneeded (wal.c). */
	if (idx_checkpoint(a, err, errlen) < 0)
		return -1;

	if (op_begin(a, err, errlen) < 0)
		return -1;
	r = walk_mailboxes(a, &ids, &n);
	for (size_t i = 0; r >= 0 && i < n; i++) {
		struct idx_mailbox mb = { 0 };
		char dir[IDX_PATH_MAX];
		uint32_t *uids = NULL;
		size_t nu = 0;
		bool dirty = false;

		if (mb_load(a, ids[i], &mb, err, errlen) <= 0 || idx_folder_path(a, mb.folder, dir, sizeof(dir), err, errlen) < 0) {
			idx_mailbox_clear(&mb);
			r = -1;
			break;
		}
		walk_uids(a, K_MSG, mb.id, &uids, &nu);
		for (size_t j = 0; r >= 0 && j < nu; j++) {
			struct idx_message m = { 0 };
			char name[MAILDIR_NAME_BUFSIZE];
			struct stat st;
			int fd = -1, k;

			if (msg_load(a, mb.id, uids[j], &m, err, errlen) <= 0)
				continue;
			k = maildir_msg_open(dir, msg_basename(m.filename), &fd, NULL, name, sizeof(name), err, errlen);
			if (k <= 0) {
				if (k == 0)
					say(report, arg, "mailbox %s uid %u: file %s is missing (verifydata -fix)", mb.name, m.uid,
					    m.filename);
				else
					r = -1;
				idx_message_clear(&m);
				continue;
			}
			if (fstat(fd, &st) < 0) {
				idx_seterr(err, errlen, "fstat %s/%s: %s", dir, name, strerror(errno));
				r = -1;
			} else if ((uint64_t)st.st_size != m.size) {
				say(report, arg, "mailbox %s uid %u: size %llu -> %llu", mb.name, m.uid,
				    (unsigned long long)m.size, (unsigned long long)st.st_size);
				counts_apply(&mb.counts, m.flags, m.size, -1);
				counts_apply(&mb.counts, m.flags, (uint64_t)st.st_size, 1);
				a->rec.quota_used = a->rec.quota_used - m.size + (uint64_t)st.st_size;
				a->rec_dirty = true;
				m.size = (uint64_t)st.st_size;
				r = msg_store(a, &m, err, errlen);
				if (r >= 0)
					r = recache(a, &m, fd, m.size, err, errlen);
				dirty = true;
				fixes++;
			}
			close(fd);
			idx_message_clear(&m);
		}
		free(uids);
		if (r >= 0 && dirty) {
			r = mb_store(a, &mb, err, errlen);
			change_push(a, IDX_CH_MAILBOX_COUNTS, mb.id, 0, 0, 0, NULL, NULL);
		}
		idx_mailbox_clear(&mb);
	}
	free(ids);
	r = op_end(a, r < 0 ? -1 : fixes, err, errlen);
	op_unlock(a);
	return r;
}

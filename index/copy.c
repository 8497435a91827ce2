/*
 * Copy and move between mailboxes.
 *
 * Files first, index second: a copy hard-links the file into the target
 * folder, a move renames it there (never replacing an existing name: a
 * clash gets a new unique base). The caller keeps the list of file
 * operations (struct xfer_undo) and reverts them when the index transaction
 * does not commit, so files and records agree on every path. A crash
 * between the file operation and the commit is repaired by the sync (the
 * target file is adopted, a moved source record becomes a tombstone).
 */
#define _GNU_SOURCE
#include "index/index_private.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

void xfer_undo_add(struct xfer_undo *u, const char *src, const char *dst, bool move)
{
	u->v = idx_xrealloc(u->v, sizeof(*u->v) * (u->n + 1));
	snprintf(u->v[u->n].src, sizeof(u->v[u->n].src), "%s", src);
	snprintf(u->v[u->n].dst, sizeof(u->v[u->n].dst), "%s", dst);
	u->v[u->n].move = move;
	u->n++;
}

void xfer_undo_run(struct xfer_undo *u)
{
	size_t i = u->n;

	while (i-- > 0) {
		if (u->v[i].move)
			(void)rename(u->v[i].dst, u->v[i].src);
		else
			(void)unlink(u->v[i].dst);
	}
	u->n = 0;
}

void xfer_undo_clear(struct xfer_undo *u)
{
	free(u->v);
	memset(u, 0, sizeof(*u));
}

/* rename without replacing; falls back to link+unlink where the
 * filesystem lacks RENAME_NOREPLACE. 0, or -1 with errno. */
static int rename_noreplace(const char *src, const char *dst)
{
	if (renameat2(AT_FDCWD, src, AT_FDCWD, dst, RENAME_NOREPLACE) == 0)
		return 0;
	if (errno != EINVAL && errno != ENOSYS)
		return -1;
	if (link(src, dst) < 0)
		return -1;
	if (unlink(src) < 0) {
		int e = errno;

		(void)unlink(dst);
		errno = e;
		return -1;
	}
	return 0;
}

/*
 * Put the file of m (in fromdir) into todir under a name carrying flags and
 * letters. Writes the new "new/x" or "cur/x" into fname_r. 1 done, 0 the
 * source file is gone, -1.
 */
static int xfer_file(struct idx_account *a, const char *fromdir, const char *todir, const struct idx_message *m,
    uint32_t letters, bool move, struct xfer_undo *u, char *fname_r, size_t fsize, char *err, size_t errlen)
{
	char cur[MAILDIR_NAME_BUFSIZE], tname[MAILDIR_NAME_BUFSIZE];
	char src[IDX_PATH_MAX + MAILDIR_NAME_BUFSIZE + 8], dst[IDX_PATH_MAX + MAILDIR_NAME_BUFSIZE + 8];
	enum maildir_subdir sub, tsub;
	struct maildir_name n;
	unsigned mflags = idx_flags_to_maildir(m->flags);
	int r, attempt;

	r = maildir_msg_find(fromdir, msg_basename(m->filename), &sub, cur, sizeof(cur), err, errlen);
	if (r <= 0)
		return r;
	if (maildir_name_parse(cur, strlen(cur), &n, err, errlen) < 0)
		return -1;
	if (mflags == 0 && letters == 0 && sub == MAILDIR_NEW) {
		tsub = MAILDIR_NEW;
		snprintf(tname, sizeof(tname), "%s", cur);
	} else {
		tsub = MAILDIR_CUR;
		if (maildir_name_with_flags(tname, sizeof(tname), &n, mflags, letters, err, errlen) < 0)
			return -1;
	}
	snprintf(src, sizeof(src), "%s/%s/%s", fromdir, sub == MAILDIR_CUR ? "cur" : "new", cur);
	for (attempt = 0;; attempt++) {
		char base[MAILDIR_NAME_BUFSIZE], tmp[MAILDIR_NAME_BUFSIZE];
		struct timespec ts;
		int e;

		snprintf(dst, sizeof(dst), "%s/%s/%s", todir, tsub == MAILDIR_CUR ? "cur" : "new", tname);
		r = move ? rename_noreplace(src, dst) : link(src, dst);
		if (r == 0)
			break;
		e = errno;
		if (e != EEXIST || attempt >= 5) {
			idx_seterr(err, errlen, "%s %s to %s: %s", move ? "rename" : "link", src, dst, strerror(e));
			return -1;
		}
		/* The name is taken in the target: a new base, same fields and flags. */
		clock_gettime(CLOCK_REALTIME, &ts);
		if (maildir_name_new_base(base, sizeof(base), (int64_t)ts.tv_sec, ts.tv_nsec / 1000, (long)getpid(),
			++a->name_counter + ((uint64_t)1 << 40), a->host, err, errlen) < 0)
			return -1;
		{
			struct maildir_name tn;

			if (maildir_name_parse(tname, strlen(tname), &tn, err, errlen) < 0)
				return -1;
			r = snprintf(tmp, sizeof(tmp), "%s%s", base, tname + tn.base_len);
		}
		if (r < 0 || (size_t)r > MAILDIR_NAME_MAX) {
			idx_seterr(err, errlen, "message file name too long");
			return -1;
		}
		memcpy(tname, tmp, (size_t)r + 1);
	}
	xfer_undo_add(u, src, dst, move);
	snprintf(fname_r, fsize, "%s/%s", tsub == MAILDIR_CUR ? "cur" : "new", tname);
	return 1;
}

int msg_transfer_locked(struct idx_account *a, uint32_t from_mb, const uint32_t *uids, size_t n, uint32_t to_mb,
    bool move, uint32_t *newuids_r, int *error_r, struct xfer_undo *u, char *err, size_t errlen)
{
	struct idx_mailbox from, to, *tp;
	struct idx_message *msgs = NULL;
	char fromdir[IDX_PATH_MAX], todir[IDX_PATH_MAX];
	struct {
		struct maildir_keywords kw;
	} kt;
	size_t nm = 0, i;
	uint64_t sum = 0, modseq;
	bool kwgrew = false, new_used = false, cur_used = false;
	int r, count = 0;

	if (error_r != NULL)
		*error_r = IDX_E_NONE;
	memset(&to, 0, sizeof(to));
	maildir_keywords_init(&kt.kw);
	r = mb_load(a, from_mb, &from, err, errlen);
	if (r > 0 && to_mb != from_mb)
		r = mb_load(a, to_mb, &to, err, errlen);
	tp = to_mb == from_mb ? &from : &to;
	if (r == 0) {
		idx_seterr(err, errlen, "mailbox does not exist");
		if (error_r != NULL)
			*error_r = IDX_E_NOMAILBOX;
		r = IDX_REFUSED;
		goto out;
	}
	if (r < 0)
		goto out;
	if (idx_folder_path(a, from.folder, fromdir, sizeof(fromdir), err, errlen) < 0 ||
	    idx_folder_path(a, tp->folder, todir, sizeof(todir), err, errlen) < 0) {
		r = -1;
		goto out;
	}
	msgs = idx_xmalloc(sizeof(*msgs) * (n ? n : 1));
	for (i = 0; i < n; i++) {
		r = msg_load(a, from_mb, uids[i], &msgs[nm], err, errlen);
		if (r < 0)
			goto out;
		if (r > 0)
			sum += msgs[nm++].size;
	}
	r = 1;
	if (!move && a->quota > 0 && a->rec.quota_used + sum > a->quota) {
		idx_seterr(err, errlen, "over quota");
		if (error_r != NULL)
			*error_r = IDX_E_OVERQUOTA;
		r = IDX_REFUSED;
		goto out;
	}
	if (tp->uidnext > UINT32_MAX - nm) {
		idx_seterr(err, errlen, "mailbox out of UIDs");
		r = IDX_REFUSED;
		goto out;
	}
	if (maildir_keywords_read(&kt.kw, todir, err, errlen) < 0) {
		r = -1;
		goto out;
	}
	for (i = 0; i < nm && r > 0; i++) {
		struct idx_message *m = &msgs[i], nmsg;
		char fname[MAILDIR_NAME_BUFSIZE + 8];
		uint32_t letters = 0;
		bool dirty = false;
		void *cache = NULL;
		size_t cachelen = 0, j;

		(void)msg_name_letters(&kt.kw, m->flags, m->keywords, m->nkeywords, true, &letters, &dirty);
		if (dirty && maildir_keywords_write(&kt.kw, todir, err, errlen) < 0) {
			r = -1;
			break;
		}
		r = xfer_file(a, fromdir, todir, m, letters, move, u, fname, sizeof(fname), err, errlen);
		if (r == 0) { /* file gone: leave it to the sync */
			r = 1;
			continue;
		}
		if (r < 0)
			break;
		if (fname[0] == 'n')
			new_used = true;
		else
			cur_used = true;
		modseq = op_modseq(a);
		idx_message_copy(&nmsg, m);
		free(nmsg.filename);
		nmsg.filename = idx_xstrdup(fname);
		nmsg.mailbox_id = to_mb;
		nmsg.uid = tp->uidnext++;
		nmsg.modseq = nmsg.createseq = modseq;
		nmsg.savedate = (int64_t)time(NULL);
		if (move) {
			r = msg_remove(a, m, modseq, true, err, errlen);
			counts_apply(&from.counts, m->flags, m->size, -1);
			change_push(a, IDX_CH_REMOVE, from_mb, m->uid, modseq, 0, NULL, NULL);
			if (nmsg.tflags & IDX_T_IS_REJECT) {
				nmsg.tflags &= ~(uint32_t)IDX_T_IS_REJECT;
				nmsg.mailbox_orig = from_mb;
			}
		} else {
			uint8_t k[9];

			nmsg.id = a->rec.next_msgid++;
			a->rec.quota_used += m->size;
			a->rec_dirty = true;
			r = db_get(a, k, key_id(k, K_CACHE, m->id), &cache, &cachelen, err, errlen);
		}
		if (r >= 0)
			r = msg_insert(a, &nmsg, cache, cachelen, err, errlen);
		if (cache != NULL)
			tcfree(cache);
		if (r > 0) {
			counts_apply(&tp->counts, nmsg.flags, nmsg.size, 1);
			for (j = 0; j < nmsg.nkeywords; j++)
				kwgrew |= mb_keyword_add(tp, nmsg.keywords[j]);
			change_push(a, IDX_CH_ADD, to_mb, nmsg.uid, modseq, nmsg.flags, NULL, NULL);
			if (newuids_r != NULL)
				newuids_r[count] = nmsg.uid;
			count++;
		}
		idx_message_clear(&nmsg);
	}
	if (r > 0 && !a->no_fsync) {
		char d[IDX_PATH_MAX + 8];

		if (new_used) {
			snprintf(d, sizeof(d), "%s/new", todir);
			r = maildir_fsync_dir(d, err, errlen);
		}
		if (r > 0 && cur_used) {
			snprintf(d, sizeof(d), "%s/cur", todir);
			r = maildir_fsync_dir(d, err, errlen);
		}
	}
	if (r > 0 && count > 0) {
		tp->highest_modseq = a->op_modseq;
		r = mb_store(a, tp, err, errlen);
		change_push(a, IDX_CH_MAILBOX_COUNTS, to_mb, 0, a->op_modseq, 0, NULL, NULL);
		if (kwgrew)
			change_push(a, IDX_CH_MAILBOX_KEYWORDS, to_mb, 0, a->op_modseq, 0, NULL, NULL);
		if (r > 0 && move && from_mb != to_mb) {
			from.highest_modseq = a->op_modseq;
			r = mb_store(a, &from, err, errlen);
			change_push(a, IDX_CH_MAILBOX_COUNTS, from_mb, 0, a->op_modseq, 0, NULL, NULL);
		}
	}
out:
	for (i = 0; i < nm; i++)
		idx_message_clear(&msgs[i]);
	free(msgs);
	maildir_keywords_clear(&kt.kw);
	idx_mailbox_clear(&from);
	idx_mailbox_clear(&to);
	return r < 0 ? r : count;
}

static int transfer(struct idx_account *a, uint32_t from_mb, const uint32_t *uids, size_t n, uint32_t to_mb,
    bool move, uint32_t *newuids_r, int *error_r, char *err, size_t errlen)
{
	struct xfer_undo u = { 0 };
	int r;

	/* Messages may get another identity: first make the delivery log unneeded (wal.c). */
	if (idx_checkpoint(a, err, errlen) < 0)
		return -1;

	if (op_begin(a, err, errlen) < 0) {
		if (error_r != NULL)
			*error_r = IDX_E_INTERNAL;
		return -1;
	}
	r = msg_transfer_locked(a, from_mb, uids, n, to_mb, move, newuids_r, error_r, &u, err, errlen);
	r = op_end(a, r, err, errlen);
	if (r < 0) {
		xfer_undo_run(&u);
		if (error_r != NULL && *error_r == IDX_E_NONE)
			*error_r = IDX_E_INTERNAL;
	}
	op_unlock(a);
	xfer_undo_clear(&u);
	return r;
}

int idx_copy(struct idx_account *a, uint32_t from_mb, const uint32_t *uids, size_t n, uint32_t to_mb,
    uint32_t *newuids_r, int *error_r, char *err, size_t errlen)
{
	return transfer(a, from_mb, uids, n, to_mb, false, newuids_r, error_r, err, errlen);
}

int idx_move(struct idx_account *a, uint32_t from_mb, const uint32_t *uids, size_t n, uint32_t to_mb,
    uint32_t *newuids_r, char *err, size_t errlen)
{
	return transfer(a, from_mb, uids, n, to_mb, true, newuids_r, NULL, err, errlen);
}

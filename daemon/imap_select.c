/*
 * imap_select: SELECT/EXAMINE (CONDSTORE, QRESYNC), the selected-mailbox
 * view, change announcements, IDLE and NOOP.
 *
 * The view is the session's idea of the mailbox: UIDs in ascending order
 * (sequence number = index + 1) with flags and modseq, loaded by one
 * idx_mailbox_uids scan. Other sessions, deliveries and Maildir syncs change
 * the index; their changes reach us through an idx_listener whose notify
 * (on a storage thread) only activates an event; the loop thread then moves
 * them to `pending` (at most PENDING_MAX, past which, or when the listener
 * lost changes, the view is resynchronized as a whole: one idx_mailbox_uids
 * scan compared with the view). At the end of every command in the selected
 * state (imap_session.c holds the tagged reply until then) and during IDLE,
 * a job fetches the keywords of changed messages and the loop thread
 * announces FLAGS, FETCH (FLAGS, MODSEQ with CONDSTORE), EXISTS (and RECENT
 * for IMAP4rev1), and EXPUNGE or, after ENABLE QRESYNC, VANISHED. Expunges
 * wait while the command is a FETCH, STORE, SEARCH, COPY or MOVE by
 * sequence number (RFC 9051 7.5.1), so sequence numbers stay valid.
 * The mailbox always has modseqs: HIGHESTMODSEQ is sent, NOMODSEQ never.
 * When the mailbox's UIDVALIDITY changes under the view (reassignuids,
 * bumpuidvalidity), its UIDs mean other messages or none: nothing more is
 * announced and the session ends with BYE at the next point between
 * responses (at once when idle or in IDLE, else when the command ends or
 * before the next one runs); the client resynchronizes when it reconnects.
 * RFC 9051 2.3.1.1 allows no other way once UIDs cannot be kept.
 * A command whose UIDs were taken from the view before the change reached the
 * session must not act on their new meaning: each storage job of a command
 * that names messages by the view's UIDs or sequence numbers (STORE, FETCH,
 * SEARCH, COPY, MOVE, EXPUNGE, VANISHED) first compares the mailbox's
 * UIDVALIDITY with the view's (imap_view_uids_valid). The tools run as jobs
 * on the same account thread, so nothing changes the UIDs between that check
 * and the job's work; on a mismatch the job does nothing and the command ends
 * with the BYE instead of its reply (imap_view_stale). Announcements need no
 * such check: the tool's commit queues the change for our listener before
 * any later job runs, and apply_done drains it before announcing anything.
 * Invariant: the view only changes on the loop thread, between responses, so
 * sequence numbers sent to the client always match it.
 *
 * Modseqs in the view. They serve to announce each change once: a FLAGS
 * change whose message's record modseq is not above the view's is known
 * already (our own STORE, a FETCH that set \Seen, a change the load or a
 * resync saw), and a resync reports messages whose record modseq is above
 * the view's. (CHANGEDSINCE, UNCHANGEDSINCE and SEARCH MODSEQ use the index
 * records, never the view.) So the view keeps base_modseq and exceptions
 * instead of a modseq a message. Invariant: a message without an exception
 * is known to the view as the index had it once every change up to
 * base_modseq was committed; one with an exception as of that modseq (always
 * > base_modseq). Modseqs are allocated in commit order by the account's one
 * writer thread, on which the load and the resync read, so a load may take
 * the highest modseq it read as base, and a resync, which compares the whole
 * view with the mailbox, the mailbox's highest modseq as of its read
 * (view_rebase). Exceptions come from changes after that (new messages,
 * flag changes); past exc_limit() the view is marked for a resync like a
 * lost change, and the resync rebases: the exceptions of an idle session
 * stay small however long it idles.
 */
#define _GNU_SOURCE 1
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/imap_private.h"
#include "daemon/log.h"

#define PKG "imap"

/* What the storage thread's notify may touch: outlives the view until unlisten ran. */
struct notify_ref {
	struct event *ev;
	struct imap_conn *c; /* NULL once the view is gone */
	struct idx_listener *l;
};

/* ---- flags ---- */

void
imap_flags_out(struct mbuf *b, uint32_t flags, char *const *kw, size_t nkw, bool recent)
{
	const char *sp = "";
	mbuf_adds(b, "(");
#define F(bit, name) if (flags & (bit)) { mbuf_adds(b, sp); mbuf_adds(b, name); sp = " "; }
	F(IDX_SEEN, "\\Seen");
	F(IDX_ANSWERED, "\\Answered");
	F(IDX_FLAGGED, "\\Flagged");
	F(IDX_DELETED, "\\Deleted");
	F(IDX_DRAFT, "\\Draft");
	F(IDX_FORWARDED, "$Forwarded");
#undef F
	if (recent) {
		mbuf_adds(b, sp);
		mbuf_adds(b, "\\Recent");
		sp = " ";
	}
	for (size_t i = 0; i < nkw; i++) {
		mbuf_adds(b, sp);
		mbuf_adds(b, kw[i]);
		sp = " ";
	}
	mbuf_adds(b, ")");
}

static bool
atom_ok(const char *s, size_t len)
{
	if (len == 0 || len > IDX_KEYWORD_MAX)
		return false;
	for (size_t i = 0; i < len; i++) {
		unsigned char ch = (unsigned char)s[i];
		if (ch <= 0x20 || ch >= 0x7f || strchr("(){%*\"\\]", ch) != NULL)
			return false;
	}
	return true;
}

int
imap_flags_parse(struct imap_conn *c, struct imap_args *list, uint32_t *flags_r, const char ***kw_r, size_t *nkw_r)
{
	static const struct { const char *name; uint32_t bit; } sys[] = {
		{"\\Seen", IDX_SEEN}, {"\\Answered", IDX_ANSWERED}, {"\\Flagged", IDX_FLAGGED},
		{"\\Deleted", IDX_DELETED}, {"\\Draft", IDX_DRAFT}, {"$Forwarded", IDX_FORWARDED},
	};
	const char **kw = NULL;
	size_t nkw = 0;
	uint32_t flags = 0;

	while (imap_args_peek(list) != NULL) {
		const char *s;
		size_t len;
		if (imap_args_atom(list, &s, &len) < 0) {
			imap_bad(c, "bad flag");
			free(kw);
			return -1;
		}
		size_t i;
		for (i = 0; i < ARRAY_LEN(sys); i++)
			if (str_ieq(s, sys[i].name))
				break;
		if (i < ARRAY_LEN(sys)) {
			flags |= sys[i].bit;
			continue;
		}
		if (str_ieq(s, "\\Recent"))
			continue;
		if (s[0] == '\\' || !atom_ok(s, len)) {
			imap_bad(c, "bad flag");
			free(kw);
			return -1;
		}
		if (nkw >= IDX_KEYWORDS_PER_MESSAGE) {
			imap_no(c, "[LIMIT] too many keywords");
			free(kw);
			return -1;
		}
		kw = xrealloc(kw, (nkw + 1) * sizeof(*kw));
		kw[nkw++] = s;
	}
	*flags_r = flags;
	*kw_r = kw;
	*nkw_r = nkw;
	return 1;
}

/* ---- view ---- */

/* Room for cap messages (never shrinks below n). */
static void
view_reserve(struct imap_view *v, size_t cap)
{
	v->flags = xrealloc(v->flags, (cap ? cap : 1) * sizeof(*v->flags));
	v->cap = cap;
}

/* ---- modseqs: base and exceptions (see the note at the top) ---- */

/*
 * Exceptions past which the view is rebased: one resync (a scan of the
 * mailbox's UIDs) per that many changes, and at most about 2 bytes a message
 * for them between rebases.
 */
static size_t
exc_limit(const struct imap_view *v)
{
	return v->n / 16 > 512 ? v->n / 16 : 512;
}

/*
 * The exceptions are a hash table (linear probing, UID 0 marks a free slot)
 * rather than a sorted list: a STORE or a resync may add thousands of them
 * in UID order among existing ones, which a sorted array would pay for with
 * a memmove each.
 */
static size_t
exc_home(const struct imap_view *v, uint32_t uid)
{
	/* The high bits of the product: its low bits are just uid mod capexc (>= 16, a power of 2). */
	return (size_t)((uint32_t)(uid * 2654435761u) >> (32 - __builtin_ctzl(v->capexc)));
}

/* The slot of uid's exception, capexc when it has none. */
static size_t
exc_find(const struct imap_view *v, uint32_t uid)
{
	if (v->nexc == 0)
		return v->capexc;
	for (size_t s = exc_home(v, uid);; s = (s + 1) & (v->capexc - 1)) {
		if (v->exc_uid[s] == uid)
			return s;
		if (v->exc_uid[s] == 0)
			return v->capexc;
	}
}

/* Add or update uid's exception; the table has a free slot. */
static void
exc_put(struct imap_view *v, uint32_t uid, uint64_t modseq)
{
	size_t s = exc_home(v, uid);
	while (v->exc_uid[s] != 0 && v->exc_uid[s] != uid)
		s = (s + 1) & (v->capexc - 1);
	if (v->exc_uid[s] == 0)
		v->nexc++;
	v->exc_uid[s] = uid;
	v->exc_modseq[s] = modseq;
}

/* Remove the exception in slot s, moving later entries of its probe run back into the hole. */
static void
exc_del(struct imap_view *v, size_t s)
{
	size_t mask = v->capexc - 1;
	for (size_t k = (s + 1) & mask; v->exc_uid[k] != 0; k = (k + 1) & mask) {
		size_t h = exc_home(v, v->exc_uid[k]);
		/* The entry at k may fill the hole unless its home lies cyclically in (s, k]. */
		if (s <= k ? (h <= s || h > k) : (h <= s && h > k)) {
			v->exc_uid[s] = v->exc_uid[k];
			v->exc_modseq[s] = v->exc_modseq[k];
			s = k;
		}
	}
	v->exc_uid[s] = 0;
	v->nexc--;
}

/* Slots for n exceptions at most 3/4 full: a power of 2, 0 for none. */
static size_t
exc_slots(size_t n)
{
	size_t cap = 16;
	if (n == 0)
		return 0;
	while (n * 4 > cap * 3)
		cap *= 2;
	return cap;
}

/* Move the exceptions above base_modseq into a table of cap slots (exc_slots of at least their count). */
static void
exc_rehash(struct imap_view *v, size_t cap)
{
	uint32_t *ou = v->exc_uid;
	uint64_t *om = v->exc_modseq;
	size_t ocap = v->capexc;

	v->exc_uid = cap ? xcalloc(cap, sizeof(*v->exc_uid)) : NULL;
	v->exc_modseq = cap ? xmalloc(cap * sizeof(*v->exc_modseq)) : NULL;
	v->capexc = cap;
	v->nexc = 0;
	for (size_t s = 0; s < ocap; s++)
		if (ou[s] != 0 && om[s] > v->base_modseq)
			exc_put(v, ou[s], om[s]);
	free(ou);
	free(om);
}

/*
 * Only where the view reflects every change to its messages up to modseq
 * (the end of a resync, which compared it with the mailbox as of modseq):
 * that becomes the base, and the exceptions it covers go.
 */
static void
view_rebase(struct imap_view *v, uint64_t modseq)
{
	size_t keep = 0;

	if (modseq > v->base_modseq)
		v->base_modseq = modseq;
	for (size_t s = 0; s < v->capexc; s++)
		if (v->exc_uid[s] != 0 && v->exc_modseq[s] > v->base_modseq)
			keep++;
	exc_rehash(v, exc_slots(keep));
}

uint64_t
imap_view_modseq(const struct imap_view *v, size_t i)
{
	if (v->nexc == 0)
		return v->base_modseq;
	size_t s = exc_find(v, imap_view_uid(v, i));
	return s < v->capexc ? v->exc_modseq[s] : v->base_modseq;
}

void
imap_view_set(struct imap_view *v, size_t i, uint32_t flags, uint64_t modseq)
{
	uint32_t uid = imap_view_uid(v, i);
	size_t s = exc_find(v, uid);

	v->flags[i] = (uint8_t)(flags & IDX_FLAGS_ALL);
	if (modseq <= v->base_modseq) {
		/* A state the base covers (a record read after the base was set): no exception. */
		if (s < v->capexc)
			exc_del(v, s);
		return;
	}
	if (s < v->capexc) {
		v->exc_modseq[s] = modseq;
		return;
	}
	if ((v->nexc + 1) * 4 > v->capexc * 3)
		exc_rehash(v, v->capexc ? v->capexc * 2 : 16);
	exc_put(v, uid, modseq);
	/* Too many: a resync at the next point rebases (resync_apply); until then they stay exact. */
	if (v->nexc > exc_limit(v))
		v->overflow = true;
}

/* ---- UID runs ---- */

/* Insert run {uid, at} before run r. */
static void
run_insert(struct imap_view *v, size_t r, uint32_t uid, uint32_t at)
{
	if (v->nruns == v->capruns) {
		v->capruns = v->capruns + v->capruns / 4 + 4;
		v->run_uid = xrealloc(v->run_uid, v->capruns * sizeof(*v->run_uid));
		v->run_at = xrealloc(v->run_at, v->capruns * sizeof(*v->run_at));
	}
	memmove(&v->run_uid[r + 1], &v->run_uid[r], (v->nruns - r) * sizeof(*v->run_uid));
	memmove(&v->run_at[r + 1], &v->run_at[r], (v->nruns - r) * sizeof(*v->run_at));
	v->run_uid[r] = uid;
	v->run_at[r] = at;
	v->nruns++;
}

/* The run holding message i (i < n). */
static size_t
run_of(const struct imap_view *v, size_t i)
{
	size_t lo = 0, hi = v->nruns;
	while (hi - lo > 1) {
		size_t mid = lo + (hi - lo) / 2;
		if (v->run_at[mid] <= i)
			lo = mid;
		else
			hi = mid;
	}
	return lo;
}

static size_t
run_end(const struct imap_view *v, size_t r)
{
	return r + 1 < v->nruns ? v->run_at[r + 1] : v->n;
}

uint32_t
imap_view_uid(const struct imap_view *v, size_t i)
{
	size_t r = v->nruns == 1 ? 0 : run_of(v, i);
	return v->run_uid[r] + (uint32_t)(i - v->run_at[r]);
}

/* Append uid (larger than every UID of the view) as message n; the caller counts it. */
static void
run_append(struct imap_view *v, uint32_t uid)
{
	if (v->nruns > 0 && uid == v->run_uid[v->nruns - 1] + (uint32_t)(v->n - v->run_at[v->nruns - 1]))
		return; /* extends the last run */
	run_insert(v, v->nruns, uid, (uint32_t)v->n);
}

/* Remove message i from the runs; the caller moves the flags, drops its exception and counts it. */
static void
run_remove(struct imap_view *v, size_t i)
{
	size_t r = run_of(v, i), a = v->run_at[r], e = run_end(v, r);

	if (e - a == 1) {
		memmove(&v->run_uid[r], &v->run_uid[r + 1], (v->nruns - r - 1) * sizeof(*v->run_uid));
		memmove(&v->run_at[r], &v->run_at[r + 1], (v->nruns - r - 1) * sizeof(*v->run_at));
		v->nruns--;
	} else if (i == a) {
		v->run_uid[r]++;
		r++;
	} else if (i + 1 == e) {
		r++;
	} else {
		/* Split: the messages after i start a run (at i once i is gone). */
		run_insert(v, r + 1, v->run_uid[r] + (uint32_t)(i + 1 - a), (uint32_t)(i + 1));
		r++;
	}
	for (; r < v->nruns; r++)
		v->run_at[r]--;
}

/* The view's messages from a scan (UID order), in arrays of exactly that size. */
static void
view_load(struct imap_view *v, const struct idx_uidstate *m, size_t n)
{
	view_reserve(v, n);
	v->nruns = 0;
	v->n = 0;
	/* One scan on the account's writer thread: every change up to the highest modseq it read is in it. */
	v->base_modseq = 0;
	exc_rehash(v, 0);
	for (size_t i = 0; i < n; i++) {
		run_append(v, m[i].uid);
		v->flags[v->n++] = (uint8_t)(m[i].flags & IDX_FLAGS_ALL);
		if (m[i].modseq > v->base_modseq)
			v->base_modseq = m[i].modseq;
	}
	if (v->capruns > v->nruns + 4) {
		v->capruns = v->nruns ? v->nruns : 1;
		v->run_uid = xrealloc(v->run_uid, v->capruns * sizeof(*v->run_uid));
		v->run_at = xrealloc(v->run_at, v->capruns * sizeof(*v->run_at));
	}
}

uint32_t
imap_view_seq(const struct imap_view *v, uint32_t uid)
{
	size_t lo = 0, hi = v->nruns;

	if (v->nruns == 0 || uid < v->run_uid[0])
		return 0;
	/* The last run starting at or below uid. */
	while (hi - lo > 1) {
		size_t mid = lo + (hi - lo) / 2;
		if (v->run_uid[mid] <= uid)
			lo = mid;
		else
			hi = mid;
	}
	size_t off = uid - v->run_uid[lo];
	return off < run_end(v, lo) - v->run_at[lo] ? (uint32_t)(v->run_at[lo] + off + 1) : 0;
}

static bool
saved_has(const struct imap_view *v, uint32_t uid)
{
	size_t lo = 0, hi = v->nsaved;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (v->saved[mid] < uid)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo < v->nsaved && v->saved[lo] == uid;
}

int
imap_view_resolve(struct imap_conn *c, struct imap_seqset *set, bool uid, uint32_t **uids_r, size_t *n_r)
{
	struct imap_view *v = c->sel;
	uint32_t *out = NULL;
	size_t n = 0, cap = 0;

	if (set->searchres) {
		for (size_t i = 0; i < v->n; i++)
			if (saved_has(v, imap_view_uid(v, i))) {
				if (n == cap)
					out = xrealloc(out, (cap = cap ? cap * 2 : 64) * sizeof(*out));
				out[n++] = imap_view_uid(v, i);
			}
		*uids_r = out;
		*n_r = n;
		return 1;
	}
	if (!uid && v->n == 0) {
		*uids_r = NULL;
		*n_r = 0;
		return -1; /* no messages: any sequence number is invalid */
	}
	uint32_t star = uid ? (v->n ? imap_view_uid(v, v->n - 1) : 0) : (uint32_t)v->n;
	imap_seqset_normalize(set, star);
	if (!uid) {
		for (size_t r = 0; r < set->n; r++)
			if (set->ranges[r].last > v->n) {
				*uids_r = NULL;
				*n_r = 0;
				return -1;
			}
		size_t total = (size_t)imap_seqset_count(set);
		out = total ? xmalloc(total * sizeof(*out)) : NULL;
		for (size_t r = 0; r < set->n; r++)
			for (uint32_t s = set->ranges[r].first; s <= set->ranges[r].last && s != 0; s++)
				out[n++] = imap_view_uid(v, s - 1);
	} else {
		size_t i = 0;
		for (size_t r = 0; r < set->n; r++) {
			/* Skip to the first view UID in the range. */
			while (i < v->n && imap_view_uid(v, i) < set->ranges[r].first)
				i++;
			while (i < v->n && imap_view_uid(v, i) <= set->ranges[r].last) {
				if (n == cap)
					out = xrealloc(out, (cap = cap ? cap * 2 : 64) * sizeof(*out));
				out[n++] = imap_view_uid(v, i++);
			}
		}
	}
	*uids_r = out;
	*n_r = n;
	return 1;
}

void
imap_view_expunged(struct imap_conn *c, const uint32_t *uids, size_t n)
{
	struct imap_view *v = c->sel;
	struct mbuf b;
	bool qresync = (c->enabled & IMAP_EN_QRESYNC) != 0;

	mbuf_init(&b, (size_t)1 << 30);
	if (qresync && n > 0)
		mbuf_adds(&b, "* VANISHED ");
	bool first = true;
	/* EXPUNGE from the highest sequence number down keeps the numbers valid. */
	for (size_t k = n; k-- > 0;) {
		uint32_t seq = imap_view_seq(v, uids[k]);
		if (seq == 0)
			continue;
		size_t rest = v->n - seq, s = exc_find(v, uids[k]);
		if (s < v->capexc)
			exc_del(v, s);
		run_remove(v, seq - 1);
		memmove(&v->flags[seq - 1], &v->flags[seq], rest * sizeof(*v->flags));
		v->n--;
		if (qresync) {
			mbuf_printf(&b, "%s%u", first ? "" : ",", uids[k]);
			first = false;
		} else {
			mbuf_printf(&b, "* %u EXPUNGE\r\n", seq);
		}
	}
	if (qresync && !first)
		mbuf_adds(&b, "\r\n");
	if (!qresync || !first)
		imap_write(c, b.data, b.len);
	mbuf_clear(&b);
}

static void
unlisten_work(struct store_account *sa, struct idx_account *a, void *arg)
{
	struct notify_ref *r = arg;
	if (r->l != NULL)
		idx_unlisten(&r->l);
}

static void
unlisten_done(void *arg)
{
	struct notify_ref *r = arg;
	if (r->ev != NULL)
		event_free(r->ev);
	free(r);
}

void
imap_view_free(struct imap_conn *c)
{
	struct imap_view *v = c->sel;

	if (v == NULL)
		return;
	if (c->ev_notify != NULL) {
		struct notify_ref *r = NULL;
		event_get_assignment(c->ev_notify, NULL, NULL, NULL, NULL, (void **)&r);
		r->c = NULL;
		/* The notify may still fire until idx_unlisten ran on the storage thread. */
		store_submit(c->sa, unlisten_work, unlisten_done, r);
		c->ev_notify = NULL;
	}
	free(v->name);
	free(v->run_uid);
	free(v->run_at);
	free(v->flags);
	free(v->exc_uid);
	free(v->exc_modseq);
	for (size_t i = 0; i < v->nkeywords; i++)
		free(v->keywords[i]);
	free(v->keywords);
	free(v->saved);
	idx_changes_free(v->pending, v->npending);
	free(v);
	c->sel = NULL;
}

/* ---- change announcements ---- */

/*
 * Changes a session keeps pending (about 40 bytes each). Past this a full
 * resynchronization (one scan of the mailbox's UIDs) is cheaper than
 * announcing them one by one, and it bounds the memory of a session that
 * does not ask for updates while others make many changes.
 */
#define PENDING_MAX 2000

static void
notify_cb(void *arg)
{
	/* Storage thread: only signal. */
	struct notify_ref *r = arg;
	event_active(r->ev, 0, 0);
}

bool
imap_view_recent(const struct imap_view *v, uint32_t uid)
{
	return v->recent_from != 0 && uid >= v->recent_from;
}

/* Messages of the view that are \Recent to this session. */
static uint32_t
recent_count(const struct imap_view *v)
{
	uint32_t n = 0;
	for (size_t i = v->n; i-- > 0 && imap_view_recent(v, imap_view_uid(v, i));)
		n++;
	return n;
}

/* A UID list (ascending) as a compact set "1:3,7". */
static void
uidlist_out(struct mbuf *b, const uint32_t *uids, size_t n)
{
	for (size_t i = 0; i < n;) {
		size_t k = i;
		while (k + 1 < n && uids[k + 1] == uids[k] + 1)
			k++;
		if (k > i)
			mbuf_printf(b, "%s%u:%u", i ? "," : "", uids[i], uids[k]);
		else
			mbuf_printf(b, "%s%u", i ? "," : "", uids[i]);
		i = k + 1;
	}
}

/* "* seq FETCH (UID u FLAGS (...) [MODSEQ (m)])" for a changed message. */
static void
fetch_flags_out(struct imap_conn *c, struct mbuf *b, uint32_t seq, const struct idx_message *m)
{
	bool rev1 = !(c->enabled & IMAP_EN_REV2);
	mbuf_printf(b, "* %u FETCH (UID %u FLAGS ", seq, m->uid);
	imap_flags_out(b, m->flags, m->keywords, m->nkeywords, rev1 && imap_view_recent(c->sel, m->uid));
	if (c->enabled & IMAP_EN_CONDSTORE)
		mbuf_printf(b, " MODSEQ (%llu)", (unsigned long long)m->modseq);
	mbuf_adds(b, ")\r\n");
}

struct apply_job {
	struct imap_job j;
	uint32_t mailbox_id;
	bool allow_expunge;
	struct idx_change *ch;
	size_t n;
	struct idx_message *msgs; /* for FLAGS changes: current state (uid 0: gone) */
	char **keywords;          /* mailbox keywords when they changed (or on resync) */
	size_t nkeywords;
	bool kwchanged;
	/* Full resynchronization after lost changes. */
	bool resync;
	struct idx_uidstate *old; /* the view when the job started */
	size_t nold;
	struct idx_uidstate *cur; /* the mailbox now */
	size_t ncur;
	struct idx_message *changed; /* in both with another modseq */
	size_t nchanged;
	uint64_t highest_modseq;
	uint32_t uidvalidity;        /* of the view; a resync that finds another one marks it stale */
	bool stale;
};

static void
resync_work(struct apply_job *aj, struct idx_account *a)
{
	struct imap_job *j = &aj->j;
	struct idx_mailbox mb = {0};

	if ((j->rc = idx_mailbox_get_id(a, aj->mailbox_id, &mb, j->err, sizeof(j->err))) <= 0)
		return;
	if (mb.uidvalidity != aj->uidvalidity) {
		/* Lost changes hid a UIDVALIDITY change: the UIDs below are not the view's. */
		aj->stale = true;
		idx_mailbox_clear(&mb);
		return;
	}
	aj->keywords = mb.keywords;
	aj->nkeywords = mb.nkeywords;
	aj->highest_modseq = mb.highest_modseq;
	mb.keywords = NULL;
	mb.nkeywords = 0;
	aj->kwchanged = true;
	idx_mailbox_clear(&mb);
	if (idx_mailbox_uids(a, aj->mailbox_id, &aj->cur, &aj->ncur, j->err, sizeof(j->err)) < 0) {
		j->rc = -1;
		return;
	}
	size_t i = 0, k = 0;
	while (i < aj->nold && k < aj->ncur) {
		if (aj->old[i].uid < aj->cur[k].uid) {
			i++;
		} else if (aj->old[i].uid > aj->cur[k].uid) {
			k++;
		} else {
			/*
			 * The view's modseq of a message is that of the state it knows, or (the base) one
			 * at which the message was as it knows it: only a later record is a change. The
			 * flags compare is a safety net; a state the view has the wrong flags for is sent.
			 */
			if (aj->cur[k].modseq > aj->old[i].modseq ||
			    aj->old[i].flags != (aj->cur[k].flags & IDX_FLAGS_ALL)) {
				aj->changed = xrealloc(aj->changed, (aj->nchanged + 1) * sizeof(*aj->changed));
				int r = idx_message_get(a, aj->mailbox_id, aj->cur[k].uid, &aj->changed[aj->nchanged],
				    j->err, sizeof(j->err));
				if (r < 0) {
					/* Not announced, so no rebase over it: the next point tries again. */
					j->rc = -1;
					return;
				}
				if (r > 0)
					aj->nchanged++;
			}
			i++;
			k++;
		}
	}
	j->rc = 1;
}

static void
apply_work(struct imap_job *j, struct idx_account *a)
{
	struct apply_job *aj = (struct apply_job *)j;

	if (aj->resync) {
		resync_work(aj, a);
		return;
	}
	j->rc = 1;
	aj->msgs = xcalloc(aj->n ? aj->n : 1, sizeof(*aj->msgs));
	for (size_t i = 0; i < aj->n; i++) {
		if (aj->ch[i].kind == IDX_CH_FLAGS) {
			int r = idx_message_get(a, aj->mailbox_id, aj->ch[i].uid, &aj->msgs[i], j->err, sizeof(j->err));
			if (r <= 0)
				memset(&aj->msgs[i], 0, sizeof(aj->msgs[i]));
			if (r < 0)
				j->rc = -1; /* not announced: apply_done resynchronizes the view */
		}
		if (aj->ch[i].kind == IDX_CH_MAILBOX_KEYWORDS && !aj->kwchanged) {
			struct idx_mailbox mb = {0};
			if (idx_mailbox_get_id(a, aj->mailbox_id, &mb, j->err, sizeof(j->err)) > 0) {
				aj->keywords = mb.keywords;
				aj->nkeywords = mb.nkeywords;
				mb.keywords = NULL;
				mb.nkeywords = 0;
				aj->kwchanged = true;
			}
			idx_mailbox_clear(&mb);
		}
	}
}

static void
pending_add(struct imap_view *v, struct idx_change *ch)
{
	if (v->npending == v->cappending) {
		v->cappending = v->cappending ? v->cappending * 2 : 16;
		v->pending = xrealloc(v->pending, v->cappending * sizeof(*v->pending));
	}
	v->pending[v->npending++] = *ch;
}

static void
pending_drop(struct imap_view *v)
{
	idx_changes_free(v->pending, v->npending);
	v->pending = NULL;
	v->npending = v->cappending = 0;
}

static int
cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
	return x < y ? -1 : x > y;
}

static bool
keywords_equal(char *const *a, size_t na, char *const *b, size_t nb)
{
	if (na != nb)
		return false;
	for (size_t i = 0; i < na; i++)
		if (strcmp(a[i], b[i]) != 0)
			return false;
	return true;
}

/* Take over the mailbox keywords of the job; announce FLAGS when they differ. */
static void
keywords_apply(struct imap_view *v, struct apply_job *aj, struct mbuf *b)
{
	if (!aj->kwchanged)
		return;
	bool same = keywords_equal(v->keywords, v->nkeywords, aj->keywords, aj->nkeywords);
	for (size_t i = 0; i < v->nkeywords; i++)
		free(v->keywords[i]);
	free(v->keywords);
	v->keywords = aj->keywords;
	v->nkeywords = aj->nkeywords;
	aj->keywords = NULL;
	aj->nkeywords = 0;
	if (same)
		return;
	mbuf_adds(b, "* FLAGS ");
	imap_flags_out(b, IDX_FLAGS_ALL, v->keywords, v->nkeywords, false);
	mbuf_adds(b, "\r\n");
}

/* Append a new message to the view. */
static bool
view_add(struct imap_view *v, uint32_t uid, uint32_t flags, uint64_t modseq)
{
	if (v->n > 0 && uid <= imap_view_uid(v, v->n - 1))
		return false;
	if (v->n == v->cap)
		view_reserve(v, v->cap + v->cap / 8 + 16); /* small steps: idle sessions keep the slack */
	run_append(v, uid);
	imap_view_set(v, v->n++, flags, modseq);
	if (uid >= v->uidnext)
		v->uidnext = uid + 1;
	return true;
}

/* Expunges now (sorted, then EXPUNGE/VANISHED) or kept for an allowed point. */
static void
gone_apply(struct imap_conn *c, struct mbuf *b, uint32_t *gone, size_t ngone, bool allow)
{
	struct imap_view *v = c->sel;

	if (ngone == 0)
		return;
	if (!allow) {
		for (size_t i = 0; i < ngone; i++) {
			struct idx_change ch = {.kind = IDX_CH_REMOVE, .mailbox_id = v->mailbox_id, .uid = gone[i]};
			pending_add(v, &ch);
		}
		return;
	}
	qsort(gone, ngone, sizeof(*gone), cmp_u32);
	imap_write(c, b->data, b->len);
	mbuf_reset(b);
	imap_view_expunged(c, gone, ngone);
}

static void
resync_apply(struct imap_conn *c, struct apply_job *aj, struct mbuf *b)
{
	struct imap_view *v = c->sel;
	uint32_t *gone = NULL;
	size_t ngone = 0;

	keywords_apply(v, aj, b);
	/*
	 * Rebase first: the messages the job found unchanged are known as of its
	 * read, and the loops below bring the changed and new ones there, so
	 * none of them needs an exception; exceptions above its read stay.
	 */
	view_rebase(v, aj->highest_modseq);
	/* Changed flags first: sequence numbers are still those of the view. */
	for (size_t i = 0; i < aj->nchanged; i++) {
		const struct idx_message *m = &aj->changed[i];
		uint32_t seq = imap_view_seq(v, m->uid);
		if (seq == 0)
			continue;
		imap_view_set(v, seq - 1, m->flags, m->modseq);
		fetch_flags_out(c, b, seq, m);
	}
	/* In the view, not in the mailbox: expunged. */
	size_t k = 0;
	for (size_t i = 0; i < v->n; i++) {
		while (k < aj->ncur && aj->cur[k].uid < imap_view_uid(v, i))
			k++;
		if (k >= aj->ncur || aj->cur[k].uid != imap_view_uid(v, i)) {
			gone = xrealloc(gone, (ngone + 1) * sizeof(*gone));
			gone[ngone++] = imap_view_uid(v, i);
		}
	}
	gone_apply(c, b, gone, ngone, aj->allow_expunge);
	free(gone);
	bool added = false;
	for (size_t i = 0; i < aj->ncur; i++)
		added |= view_add(v, aj->cur[i].uid, aj->cur[i].flags, aj->cur[i].modseq);
	if (added) {
		mbuf_printf(b, "* %zu EXISTS\r\n", v->n);
		if (!(c->enabled & IMAP_EN_REV2))
			mbuf_printf(b, "* %u RECENT\r\n", recent_count(v));
	}
	if (aj->highest_modseq > v->highest_modseq)
		v->highest_modseq = aj->highest_modseq;
}

static void
changes_apply(struct imap_conn *c, struct apply_job *aj, struct mbuf *b)
{
	struct imap_view *v = c->sel;
	bool added = false;
	uint32_t *gone = NULL;
	size_t ngone = 0;

	keywords_apply(v, aj, b);
	for (size_t i = 0; i < aj->n; i++) {
		struct idx_change *ch = &aj->ch[i];
		if (ch->kind == IDX_CH_ADD) {
			added |= view_add(v, ch->uid, ch->flags, ch->modseq);
		} else if (ch->kind == IDX_CH_REMOVE) {
			if (imap_view_seq(v, ch->uid) == 0)
				continue;
			gone = xrealloc(gone, (ngone + 1) * sizeof(*gone));
			gone[ngone++] = ch->uid;
		} else if (ch->kind == IDX_CH_FLAGS) {
			const struct idx_message *m = &aj->msgs[i];
			uint32_t seq = imap_view_seq(v, ch->uid);
			if (seq == 0 || m->uid == 0 || m->modseq <= imap_view_modseq(v, seq - 1))
				continue;
			if (added) {
				/* A message added in this batch: its EXISTS before any FETCH of it. */
				mbuf_printf(b, "* %zu EXISTS\r\n", v->n);
				if (!(c->enabled & IMAP_EN_REV2))
					mbuf_printf(b, "* %u RECENT\r\n", recent_count(v));
				added = false;
			}
			imap_view_set(v, seq - 1, m->flags, m->modseq);
			fetch_flags_out(c, b, seq, m);
		}
		if (ch->modseq > v->highest_modseq)
			v->highest_modseq = ch->modseq;
	}
	gone_apply(c, b, gone, ngone, aj->allow_expunge);
	free(gone);
	if (added) {
		mbuf_printf(b, "* %zu EXISTS\r\n", v->n);
		if (!(c->enabled & IMAP_EN_REV2))
			mbuf_printf(b, "* %u RECENT\r\n", recent_count(v));
	}
}

static void drain(struct imap_conn *c);
static void view_bye(struct imap_conn *c);

static void
apply_free(struct apply_job *aj)
{
	idx_changes_free(aj->ch, aj->n);
	if (aj->msgs != NULL)
		for (size_t i = 0; i < aj->n; i++)
			idx_message_clear(&aj->msgs[i]);
	free(aj->msgs);
	for (size_t i = 0; i < aj->nkeywords; i++)
		free(aj->keywords[i]);
	free(aj->keywords);
	free(aj->old);
	free(aj->cur);
	for (size_t i = 0; i < aj->nchanged; i++)
		idx_message_clear(&aj->changed[i]);
	free(aj->changed);
	free(aj);
}

static void
apply_done(struct imap_job *j)
{
	struct apply_job *aj = (struct apply_job *)j;
	struct imap_conn *c = j->c;
	struct imap_view *v = c->sel;

	if (imap_gone(c) || v == NULL || v->mailbox_id != aj->mailbox_id) {
		if (v != NULL)
			v->applying = false;
		apply_free(aj);
		return;
	}
	v->applying = false;
	/* A UIDVALIDITY change committed while the job ran makes what it found meaningless. */
	drain(c);
	if (aj->stale)
		v->stale = true;
	/* Stale: nothing is announced; the flush below ends the session. */
	bool failed = !v->stale && j->rc <= 0;
	if (failed) {
		/* Try again from scratch at the next point. */
		log_error(PKG, c->ci->cid, "announcing changes", "err", j->err);
		v->overflow = true;
	} else if (!v->stale) {
		struct mbuf b;
		mbuf_init(&b, (size_t)1 << 30);
		if (aj->resync)
			resync_apply(c, aj, &b);
		else
			changes_apply(c, aj, &b);
		imap_write(c, b.data, b.len);
		mbuf_clear(&b);
	}
	apply_free(aj);
	/* More may have arrived meanwhile; a waiting command ends once all are announced. */
	void (*then)(struct imap_conn *) = v->waiting;
	v->waiting = NULL;
	/*
	 * After a failure the resync waits for the next point: flushing again now
	 * would fail the same way on a record that cannot be read, over and over,
	 * and the waiting command would never end.
	 */
	if (then != NULL && failed)
		then(c);
	else if (then != NULL)
		imap_view_flush(c, v->waiting_allow, then);
	else if (c->mode == IMAP_MODE_IDLE && !failed)
		imap_view_flush(c, true, NULL);
	else if (v->stale && !c->busy)
		view_bye(c);
}

static void
drain(struct imap_conn *c)
{
	struct imap_view *v = c->sel;
	struct notify_ref *r = NULL;
	struct idx_change *ch = NULL;
	size_t n = 0;
	bool overflow = false;

	if (v == NULL || c->ev_notify == NULL)
		return;
	event_get_assignment(c->ev_notify, NULL, NULL, NULL, NULL, (void **)&r);
	if (r->l == NULL)
		return;
	idx_listener_drain(r->l, &ch, &n, &overflow);
	for (size_t i = 0; i < n; i++) {
		if (ch[i].kind == IDX_CH_MAILBOX_RENAME && ch[i].name != NULL && ch[i].oldname != NULL) {
			imap_renamed(c, ch[i].name, ch[i].oldname);
			if (ch[i].mailbox_id == v->mailbox_id) {
				free(v->name);
				v->name = xstrdup(ch[i].name);
			}
		}
		if (ch[i].kind == IDX_CH_MAILBOX_UIDVALIDITY && ch[i].mailbox_id == v->mailbox_id)
			v->stale = true;
		bool mine = ch[i].mailbox_id == v->mailbox_id && !v->overflow && !v->stale &&
		    (ch[i].kind == IDX_CH_ADD || ch[i].kind == IDX_CH_REMOVE || ch[i].kind == IDX_CH_FLAGS ||
		    ch[i].kind == IDX_CH_MAILBOX_KEYWORDS);
		if (mine) {
			pending_add(v, &ch[i]);
		} else {
			free(ch[i].name);
			free(ch[i].oldname);
		}
	}
	free(ch);
	if (v->stale) {
		/* Changes in the old UIDs' terms: no use any more. */
		pending_drop(v);
		v->overflow = false;
		return;
	}
	if ((overflow || v->npending > PENDING_MAX) && !v->overflow) {
		/* Changes were lost (or too many wait): compare the whole mailbox at the next point. */
		log_info(PKG, c->ci->cid, "change queue overflowed; resynchronizing the view");
		v->overflow = true;
	}
	if (v->overflow)
		pending_drop(v);
}

/* The view is stale (its UIDVALIDITY changed): say so and end the session. */
static void
view_bye(struct imap_conn *c)
{
	if (c->closing)
		return;
	log_info(PKG, c->ci->cid, "uidvalidity of the selected mailbox changed, ending the session", "mailbox",
	    c->sel->name);
	imap_printf(c, "* BYE mailbox UIDVALIDITY changed, please reconnect (cid %llx)\r\n",
	    (unsigned long long)c->ci->cid);
	imap_close(c);
}

int
imap_view_check_uidvalidity(struct imap_conn *c)
{
	if (c->sel == NULL || c->closing)
		return 0;
	drain(c);
	if (!c->sel->stale)
		return 0;
	view_bye(c);
	return 1;
}

int
imap_view_uids_valid(struct idx_account *a, uint32_t mailbox_id, uint32_t uidvalidity, char *err, size_t errlen)
{
	struct idx_mailbox mb = {0};
	int r = idx_mailbox_get_id(a, mailbox_id, &mb, err, errlen);

	if (r < 0)
		return -1;
	bool same = r == 0 || mb.uidvalidity == uidvalidity;
	idx_mailbox_clear(&mb);
	return same ? 1 : 0;
}

void
imap_view_stale(struct imap_conn *c, uint32_t mailbox_id)
{
	struct imap_view *v = c->sel;

	if (v == NULL || v->mailbox_id != mailbox_id)
		return;
	/* As drain() does when the change itself arrives: what is pending is in the old UIDs' terms. */
	v->stale = true;
	pending_drop(v);
	v->overflow = false;
}

/* Whether pending changes can be announced now. */
static bool
pending_work(const struct imap_view *v, bool allow_expunge)
{
	if (v->overflow)
		return true;
	for (size_t i = 0; i < v->npending; i++)
		if (allow_expunge || v->pending[i].kind != IDX_CH_REMOVE)
			return true;
	return false;
}

void
imap_view_flush(struct imap_conn *c, bool allow_expunge, void (*then)(struct imap_conn *c))
{
	struct imap_view *v = c->sel;

	drain(c);
	if (v != NULL && v->applying) {
		/* Wait for the running job; it comes back here. */
		if (then != NULL) {
			v->waiting = then;
			v->waiting_allow = allow_expunge;
		}
		return;
	}
	if (v != NULL && v->stale) {
		view_bye(c);
		if (then != NULL)
			then(c); /* ends the command; its reply is not sent any more */
		return;
	}
	if (v == NULL || !pending_work(v, allow_expunge)) {
		if (then != NULL)
			then(c);
		return;
	}
	struct apply_job *aj = xcalloc(1, sizeof(*aj));
	aj->mailbox_id = v->mailbox_id;
	aj->uidvalidity = v->uidvalidity;
	aj->allow_expunge = allow_expunge;
	if (v->overflow) {
		if (v->nexc > exc_limit(v))
			log_debug(PKG, c->ci->cid, "modseq exceptions over the limit; resynchronizing the view");
		aj->resync = true;
		v->overflow = false;
		pending_drop(v);
		aj->nold = v->n;
		aj->old = xmalloc((v->n ? v->n : 1) * sizeof(*aj->old));
		for (size_t i = 0; i < v->n; i++)
			aj->old[i] = (struct idx_uidstate){imap_view_uid(v, i), imap_view_flags(v, i),
			    imap_view_modseq(v, i)};
	} else if (allow_expunge) {
		aj->ch = v->pending;
		aj->n = v->npending;
		v->pending = NULL;
		v->npending = v->cappending = 0;
	} else {
		/* Expunges stay pending; the rest is announced. */
		size_t keep = 0;
		aj->ch = xmalloc(v->npending * sizeof(*aj->ch));
		for (size_t i = 0; i < v->npending; i++) {
			if (v->pending[i].kind == IDX_CH_REMOVE)
				v->pending[keep++] = v->pending[i];
			else
				aj->ch[aj->n++] = v->pending[i];
		}
		v->npending = keep;
	}
	v->applying = true;
	v->waiting = then;
	v->waiting_allow = allow_expunge;
	aj->j.work = apply_work;
	aj->j.done = apply_done;
	imap_submit(c, &aj->j);
}

static void
notify_event(evutil_socket_t fd, short what, void *arg)
{
	struct notify_ref *r = arg;
	struct imap_conn *c = r->c;

	if (c == NULL || c->closing)
		return;
	/* Outside IDLE, changes wait (bounded by PENDING_MAX) for the end of a command. */
	if (c->mode == IMAP_MODE_IDLE)
		imap_view_flush(c, true, NULL);
	else if (!c->busy)
		(void)imap_view_check_uidvalidity(c); /* between commands: a stale view ends now */
	else
		drain(c);
}

void
imap_view_notified(struct imap_conn *c)
{
	drain(c);
}

/* ---- VANISHED (EARLIER) for UID FETCH ---- */

struct vanished_job {
	struct imap_job j;
	uint32_t mailbox_id;
	uint32_t uidvalidity;       /* of the view: the set holds its UIDs */
	bool stale;                 /* the mailbox has another one now: nothing was done */
	uint64_t since;
	struct imap_seqset set;
	uint32_t star;
	uint32_t *uids;
	size_t n, cap;
	void (*then)(struct imap_conn *c);
};

static int
vanished_set_cb(void *arg, uint32_t uid, uint64_t modseq)
{
	struct vanished_job *vj = arg;
	if (!imap_seqset_contains(&vj->set, uid, vj->star))
		return 1;
	if (vj->n == vj->cap) {
		vj->cap = vj->cap ? vj->cap * 2 : 64;
		vj->uids = xrealloc(vj->uids, vj->cap * sizeof(*vj->uids));
	}
	vj->uids[vj->n++] = uid;
	return 1;
}

static void
vanished_work(struct imap_job *j, struct idx_account *a)
{
	struct vanished_job *vj = (struct vanished_job *)j;
	if ((j->rc = imap_view_uids_valid(a, vj->mailbox_id, vj->uidvalidity, j->err, sizeof(j->err))) <= 0) {
		vj->stale = j->rc == 0;
		return;
	}
	j->rc = idx_tombstones(a, vj->mailbox_id, vj->since, vanished_set_cb, vj, j->err, sizeof(j->err));
}

static void
vanished_done(struct imap_job *j)
{
	struct vanished_job *vj = (struct vanished_job *)j;
	struct imap_conn *c = j->c;

	if (!imap_gone(c)) {
		if (vj->stale) {
			/* Neither VANISHED nor the FETCH: the command ends with BYE. */
			imap_view_stale(c, vj->mailbox_id);
			imap_cmd_finish(c);
		} else if (j->rc < 0) {
			imap_serverbug(c, "vanished", j->err);
			imap_cmd_finish(c);
		} else {
			if (vj->n > 0) {
				struct mbuf b;
				mbuf_init(&b, (size_t)1 << 30);
				qsort(vj->uids, vj->n, sizeof(*vj->uids), cmp_u32);
				mbuf_adds(&b, "* VANISHED (EARLIER) ");
				uidlist_out(&b, vj->uids, vj->n);
				mbuf_adds(&b, "\r\n");
				imap_write(c, b.data, b.len);
				mbuf_clear(&b);
			}
			vj->then(c);
		}
	}
	imap_seqset_clear(&vj->set);
	free(vj->uids);
	free(vj);
}

void
imap_vanished_earlier(struct imap_conn *c, const struct imap_seqset *set, uint64_t since,
    void (*then)(struct imap_conn *c))
{
	struct vanished_job *vj = xcalloc(1, sizeof(*vj));
	struct imap_view *v = c->sel;

	vj->mailbox_id = v->mailbox_id;
	vj->uidvalidity = v->uidvalidity;
	vj->since = since;
	vj->star = v->uidnext > 0 ? v->uidnext - 1 : 0;
	vj->set.n = set->n;
	vj->set.ranges = xmalloc((set->n ? set->n : 1) * sizeof(*vj->set.ranges));
	memcpy(vj->set.ranges, set->ranges, set->n * sizeof(*vj->set.ranges));
	vj->then = then;
	vj->j.work = vanished_work;
	vj->j.done = vanished_done;
	imap_submit(c, &vj->j);
}

/* ---- SELECT / EXAMINE ---- */

struct select_job {
	struct imap_job j;
	char *name;
	bool readonly;
	bool qresync;
	uint32_t q_uidvalidity;
	uint64_t q_modseq;
	bool q_known;                /* known-uids given */
	struct imap_seqset known;    /* known-uids */
	uint32_t *match_seq, *match_uid; /* seq-match-data pairs */
	size_t nmatch;
	uint32_t floor;              /* no UID at or below vanished (from seq-match) */
	struct idx_mailbox mb;
	struct idx_uidstate *msgs;
	size_t n;
	struct notify_ref *ref;
	uint32_t *vanished;
	size_t nvanished, capvanished;
	struct idx_message *changed; /* QRESYNC: messages changed since q_modseq */
	size_t nchanged;
};

static int
vanished_cb(void *arg, uint32_t uid, uint64_t modseq)
{
	struct select_job *sj = arg;
	if (sj->nvanished == sj->capvanished) {
		sj->capvanished = sj->capvanished ? sj->capvanished * 2 : 64;
		sj->vanished = xrealloc(sj->vanished, sj->capvanished * sizeof(*sj->vanished));
	}
	if (uid <= sj->floor)
		return 1;
	if (sj->q_known && !imap_seqset_contains(&sj->known, uid, sj->mb.uidnext ? sj->mb.uidnext - 1 : 0))
		return 1;
	sj->vanished[sj->nvanished++] = uid;
	return 1;
}

/*
 * seq-match-data (RFC 7162 3.2.5.2): a pair (s, u) whose UID u is still at
 * sequence number s means no message below u was expunged as the client
 * sees it, so only UIDs above the highest such u can have vanished for it.
 */
static uint32_t
match_floor(const struct select_job *sj)
{
	uint32_t floor = 0;
	for (size_t i = 0; i < sj->nmatch; i++) {
		uint32_t s = sj->match_seq[i], u = sj->match_uid[i];
		if (s >= 1 && s <= sj->n && sj->msgs[s - 1].uid == u && u > floor)
			floor = u;
	}
	return floor;
}

static void
select_work(struct imap_job *j, struct idx_account *a)
{
	struct select_job *sj = (struct select_job *)j;

	j->rc = idx_mailbox_get(a, sj->name, &sj->mb, j->err, sizeof(j->err));
	if (j->rc <= 0)
		return;
	struct idx_sync_stats st = {0};
	if (idx_sync_mailbox_changed(a, sj->mb.id, &st, j->err, sizeof(j->err)) > 0 &&
	    (st.added || st.flagged || st.removed)) {
		uint32_t id = sj->mb.id; /* cleared with the rest */
		idx_mailbox_clear(&sj->mb);
		if ((j->rc = idx_mailbox_get_id(a, id, &sj->mb, j->err, sizeof(j->err))) <= 0)
			return;
	}
	/* Listen first: a change between the scan and the listen would be lost otherwise. */
	sj->ref->l = idx_listen(a, notify_cb, sj->ref);
	if (idx_mailbox_uids(a, sj->mb.id, &sj->msgs, &sj->n, j->err, sizeof(j->err)) < 0) {
		j->rc = -1;
		return;
	}
	if (sj->qresync && sj->q_uidvalidity == sj->mb.uidvalidity) {
		sj->floor = match_floor(sj);
		if (idx_tombstones(a, sj->mb.id, sj->q_modseq, vanished_cb, sj, j->err, sizeof(j->err)) < 0) {
			j->rc = -1;
			return;
		}
		for (size_t i = 0; i < sj->n; i++) {
			if (sj->msgs[i].modseq <= sj->q_modseq)
				continue;
			sj->changed = xrealloc(sj->changed, (sj->nchanged + 1) * sizeof(*sj->changed));
			if (idx_message_get(a, sj->mb.id, sj->msgs[i].uid, &sj->changed[sj->nchanged], j->err,
			    sizeof(j->err)) > 0)
				sj->nchanged++;
		}
	}
}

static void
select_job_free(struct select_job *sj)
{
	free(sj->name);
	idx_mailbox_clear(&sj->mb);
	free(sj->msgs);
	free(sj->vanished);
	imap_seqset_clear(&sj->known);
	free(sj->match_seq);
	free(sj->match_uid);
	for (size_t i = 0; i < sj->nchanged; i++)
		idx_message_clear(&sj->changed[i]);
	free(sj->changed);
	if (sj->ref != NULL) {
		sj->ref->c = NULL;
		store_submit(sj->j.c->sa, unlisten_work, unlisten_done, sj->ref);
	}
	free(sj);
}

static void
select_done(struct imap_job *j)
{
	struct select_job *sj = (struct select_job *)j;
	struct imap_conn *c = j->c;

	if (imap_gone(c)) {
		select_job_free(sj);
		return;
	}
	if (j->rc <= 0) {
		if (j->rc == 0)
			imap_no(c, "[NONEXISTENT] no such mailbox");
		else
			imap_serverbug(c, "select", j->err);
		imap_set_state(c, IMAP_ST_AUTH);
		select_job_free(sj);
		imap_cmd_finish(c);
		return;
	}
	struct imap_view *v = xcalloc(1, sizeof(*v));
	v->mailbox_id = sj->mb.id;
	v->name = xstrdup(sj->mb.name);
	v->readonly = sj->readonly;
	v->uidvalidity = sj->mb.uidvalidity;
	v->uidnext = sj->mb.uidnext;
	v->highest_modseq = sj->mb.highest_modseq;
	/*
	 * \Recent (IMAP4rev1 only): a message is recent to this session when it
	 * arrived after the session selected the mailbox. Several sessions may
	 * then see the same message as recent; RFC 3501 allows no better without
	 * a shared per-mailbox "last seen by a session" UID, and IMAP4rev2
	 * dropped \Recent. So SELECT reports RECENT 0 and each EXISTS for
	 * arrivals comes with the RECENT count of this session.
	 */
	v->recent_from = sj->mb.uidnext ? sj->mb.uidnext : 1;
	view_load(v, sj->msgs, sj->n);
	free(sj->msgs);
	sj->msgs = NULL;
	v->keywords = sj->mb.keywords;
	v->nkeywords = sj->mb.nkeywords;
	sj->mb.keywords = NULL;
	sj->mb.nkeywords = 0;
	c->sel = v;
	c->ev_notify = sj->ref->ev;
	sj->ref->c = c;
	sj->ref = NULL;

	struct mbuf b;
	mbuf_init(&b, (size_t)1 << 30);
	bool rev2 = (c->enabled & IMAP_EN_REV2) != 0;
	mbuf_adds(&b, "* FLAGS ");
	imap_flags_out(&b, IDX_FLAGS_ALL, v->keywords, v->nkeywords, false);
	mbuf_adds(&b, "\r\n* OK [PERMANENTFLAGS ");
	if (v->readonly) {
		mbuf_adds(&b, "()");
	} else {
		imap_flags_out(&b, IDX_FLAGS_ALL, v->keywords, v->nkeywords, false);
		b.data[--b.len] = 0;
		mbuf_adds(&b, v->nkeywords || 1 ? " \\*)" : "\\*)");
	}
	mbuf_adds(&b, "] flags\r\n");
	mbuf_printf(&b, "* %zu EXISTS\r\n", v->n);
	if (!rev2) {
		mbuf_adds(&b, "* 0 RECENT\r\n");
		for (size_t i = 0; i < v->n; i++)
			if (!(imap_view_flags(v, i) & IDX_SEEN)) {
				mbuf_printf(&b, "* OK [UNSEEN %zu] first unseen\r\n", i + 1);
				break;
			}
	}
	mbuf_printf(&b, "* OK [UIDVALIDITY %u] x\r\n* OK [UIDNEXT %u] x\r\n", v->uidvalidity, v->uidnext);
	mbuf_printf(&b, "* OK [HIGHESTMODSEQ %llu] x\r\n",
	    (unsigned long long)(v->highest_modseq ? v->highest_modseq : 1));
	if (rev2) {
		mbuf_adds(&b, "* LIST () \"/\" ");
		imap_mailbox_out(c, &b, v->name);
		mbuf_adds(&b, "\r\n");
	}
	if (sj->nvanished > 0) {
		mbuf_adds(&b, "* VANISHED (EARLIER) ");
		uidlist_out(&b, sj->vanished, sj->nvanished);
		mbuf_adds(&b, "\r\n");
	}
	for (size_t i = 0; i < sj->nchanged; i++)
		fetch_flags_out(c, &b, imap_view_seq(v, sj->changed[i].uid), &sj->changed[i]);
	imap_write(c, b.data, b.len);
	mbuf_clear(&b);
	imap_set_state(c, IMAP_ST_SELECTED);
	imap_ok(c, "[%s] %s completed", v->readonly ? "READ-ONLY" : "READ-WRITE", c->cmd->name);
	select_job_free(sj);
	imap_cmd_finish(c);
}

/* [known-uids [(known-sequence-set known-uid-set)]] of a QRESYNC parameter. 0, -1 bad. */
static int
qresync_optional(struct select_job *sj, struct imap_args *q)
{
	struct imap_args m;
	struct imap_seqset seqs = {0}, uids = {0};

	if (imap_args_peek(q) == NULL)
		return 0;
	if (imap_args_peek(q)->type != IMAP_ARG_LIST) {
		if (imap_args_seqset(q, &sj->known) < 0 || sj->known.searchres)
			return -1;
		sj->q_known = true;
	}
	if (imap_args_peek(q) == NULL)
		return 0;
	if (imap_args_list(q, &m) < 0 || imap_args_seqset(&m, &seqs) < 0 || imap_args_seqset(&m, &uids) < 0 ||
	    imap_args_end(&m) < 0 || imap_args_end(q) < 0 || seqs.searchres || uids.searchres)
		goto bad;
	/* Both sets list the same number of messages, in the same order (no '*'). */
	uint64_t ns = 0, nu = 0;
	for (size_t i = 0; i < seqs.n; i++) {
		if (seqs.ranges[i].first == IMAP_SEQ_STAR || seqs.ranges[i].last == IMAP_SEQ_STAR ||
		    seqs.ranges[i].last < seqs.ranges[i].first)
			goto bad;
		ns += (uint64_t)seqs.ranges[i].last - seqs.ranges[i].first + 1;
	}
	for (size_t i = 0; i < uids.n; i++) {
		if (uids.ranges[i].first == IMAP_SEQ_STAR || uids.ranges[i].last == IMAP_SEQ_STAR ||
		    uids.ranges[i].last < uids.ranges[i].first)
			goto bad;
		nu += (uint64_t)uids.ranges[i].last - uids.ranges[i].first + 1;
	}
	if (ns != nu || ns > 100000)
		goto bad;
	sj->match_seq = xmalloc((ns ? ns : 1) * sizeof(*sj->match_seq));
	sj->match_uid = xmalloc((ns ? ns : 1) * sizeof(*sj->match_uid));
	for (size_t i = 0; i < seqs.n; i++)
		for (uint64_t v = seqs.ranges[i].first; v <= seqs.ranges[i].last; v++)
			sj->match_seq[sj->nmatch++] = (uint32_t)v;
	size_t k = 0;
	for (size_t i = 0; i < uids.n; i++)
		for (uint64_t v = uids.ranges[i].first; v <= uids.ranges[i].last; v++)
			sj->match_uid[k++] = (uint32_t)v;
	imap_seqset_clear(&seqs);
	imap_seqset_clear(&uids);
	return 0;
bad:
	imap_seqset_clear(&seqs);
	imap_seqset_clear(&uids);
	return -1;
}

static int
select_common(struct imap_conn *c, struct imap_args *args, bool readonly)
{
	struct select_job *sj = xcalloc(1, sizeof(*sj));
	struct mbuf b;

	mbuf_init(&b, 4 * IDX_MAILBOX_NAME_MAX);
	if (imap_arg_mailbox(c, args, &b) < 0) {
		imap_bad(c, "%s", args->err);
		goto fail;
	}
	sj->name = xstrdup(b.data);
	sj->readonly = readonly;
	if (imap_args_peek(args) != NULL) {
		struct imap_args sub;
		if (imap_args_list(args, &sub) < 0) {
			imap_bad(c, "%s", args->err);
			goto fail;
		}
		while (imap_args_peek(&sub) != NULL) {
			if (imap_args_keyword(&sub, "CONDSTORE") == 1) {
				c->enabled |= IMAP_EN_CONDSTORE;
			} else if (imap_args_keyword(&sub, "QRESYNC") == 1) {
				struct imap_args q;
				if (!(c->enabled & IMAP_EN_QRESYNC)) {
					imap_bad(c, "QRESYNC not enabled");
					goto fail;
				}
				if (imap_args_list(&sub, &q) < 0 || imap_args_nz_number(&q, &sj->q_uidvalidity) < 0 ||
				    imap_args_number64(&q, &sj->q_modseq) < 0 || qresync_optional(sj, &q) < 0) {
					imap_bad(c, "bad QRESYNC parameters");
					goto fail;
				}
				sj->qresync = true;
			} else {
				imap_bad(c, "unknown select parameter");
				goto fail;
			}
		}
	}
	if (imap_args_end(args) < 0) {
		imap_bad(c, "%s", args->err);
		goto fail;
	}
	mbuf_clear(&b);
	if (c->sel != NULL) {
		imap_view_free(c);
		if (c->enabled & (IMAP_EN_QRESYNC | IMAP_EN_REV2))
			imap_printf(c, "* OK [CLOSED] x\r\n");
		imap_set_state(c, IMAP_ST_AUTH);
	}
	sj->ref = xcalloc(1, sizeof(*sj->ref));
	/* The event exists before the storage thread listens: another storage
	 * thread may announce a change before select_done runs. */
	sj->ref->ev = event_new(server_base(c->srv), -1, 0, notify_event, sj->ref);
	sj->j.work = select_work;
	sj->j.done = select_done;
	imap_submit(c, &sj->j);
	return IMAP_CMD_ASYNC;
fail:
	mbuf_clear(&b);
	free(sj->name);
	imap_seqset_clear(&sj->known);
	free(sj->match_seq);
	free(sj->match_uid);
	free(sj);
	return IMAP_CMD_DONE;
}

int imap_cmd_select(struct imap_conn *c, struct imap_args *args) { return select_common(c, args, false); }
int imap_cmd_examine(struct imap_conn *c, struct imap_args *args) { return select_common(c, args, true); }

/* ---- NOOP, IDLE ---- */

static void
noop_finish(struct imap_conn *c)
{
	imap_ok(c, "%s completed", c->cmd->name);
	imap_cmd_finish(c);
}

int
imap_cmd_noop(struct imap_conn *c, struct imap_args *args)
{
	if (imap_args_end(args) < 0) {
		imap_bad(c, "%s", args->err);
		return IMAP_CMD_DONE;
	}
	if (c->sel == NULL) {
		imap_ok(c, "NOOP completed");
		return IMAP_CMD_DONE;
	}
	imap_view_flush(c, true, noop_finish);
	return IMAP_CMD_ASYNC;
}

int
imap_cmd_check(struct imap_conn *c, struct imap_args *args)
{
	return imap_cmd_noop(c, args);
}

int
imap_cmd_idle(struct imap_conn *c, struct imap_args *args)
{
	if (imap_args_end(args) < 0) {
		imap_bad(c, "%s", args->err);
		return IMAP_CMD_DONE;
	}
	imap_printf(c, "+ idling\r\n");
	c->mode = IMAP_MODE_IDLE;
	/* An idle session keeps no parser (its arena block is most of a session's memory); DONE is read as a line. */
	imap_parse_free(&c->p);
	if (c->sel != NULL)
		imap_view_flush(c, true, NULL);
	return IMAP_CMD_ASYNC;
}

void
imap_idle_line(struct imap_conn *c, const char *line, size_t len)
{
	c->mode = IMAP_MODE_COMMAND;
	if (len == 4 && strncasecmp(line, "DONE", 4) == 0)
		imap_ok(c, "IDLE done");
	else
		imap_bad(c, "expected DONE");
	imap_cmd_finish(c);
}

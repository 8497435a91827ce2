/*
 * Threading at delivery, by Message-ID and, failing that, by base subject
 * (as the Go mox does).
 *
 * A new message looks up its References (and In-Reply-To) from the last
 * to the first in the 'I' keys; the first known one is its parent: the
 * message joins the parent's thread (thread_id = root msgid, parents =
 * the parent's parents + the parent) and inherits muted/collapsed. A muted
 * thread makes new messages \Seen. When the direct parent is unknown the
 * message has a missing link; the unknown ids are remembered in 'R' keys
 * (index_private.h) so that when such a message arrives later, the
 * messages waiting for it - thread roots only - are re-parented under it
 * together with their thread. Re-parenting changes no IMAP-visible state,
 * so it takes no modseq. All work is bounded (IDX_REFS_MAX,
 * IDX_PARENTS_MAX, IDX_REPARENT_MAX).
 *
 * Subject fallback: a message none of whose references is known (or that
 * has none) but whose Subject is a response (a reply or forward leader such
 * as "Re:" or "Fwd:" was stripped from it, or a "(fwd)" trailer or a
 * "[fwd: ...]" wrapper) joins, as a child with a missing link (the link is
 * a guess), the thread of the most recent message with the same base
 * subject received at most IDX_SUBJECT_WINDOW before it. The candidates
 * come from the 'J' keys (base subject -> ids), the newest IDX_SUBJECT_SCAN
 * ids of that subject. A subject that is not a response never joins: a new
 * conversation with an equal subject starts its own thread.
 * Cost of the 'J' key, measured (instruction counts, one message per
 * idx_add without fsync): ~48,000 more instructions a delivery, ~10% of the
 * index work of a one-message commit, mostly Tokyo Cabinet saving one more
 * B+tree leaf at commit; a subject lookup adds ~4,000 on average. Against a
 * durable delivery (~1.3 ms of fsyncs) it is within deliverbench's noise.
 */
#include "index/index_private.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* First live message with Message-ID id other than self: 1 (*m_r), 0, -1. */
static int find_by_msgid(struct idx_account *a, const char *id, uint64_t self, struct idx_message *m_r, char *err,
    size_t errlen)
{
	TCXSTR *k = tcxstrnew();
	BDBCUR *cur = tcbdbcurnew(a->db);
	uint64_t cand[8];
	size_t nc = 0, i;
	int r = 0;

	key_msgid(k, K_MSGID, id, 0, false);
	if (tcbdbcurjump(cur, tcxstrptr(k), tcxstrsize(k))) {
		while (nc < 8) {
			int ks;
			const uint8_t *kp = tcbdbcurkey3(cur, &ks);

			if (kp == NULL || ks != tcxstrsize(k) + 8 || memcmp(kp, tcxstrptr(k), (size_t)tcxstrsize(k)) != 0)
				break;
			cand[nc] = be64_get(kp + tcxstrsize(k));
			if (cand[nc] != self)
				nc++;
			if (!tcbdbcurnext(cur))
				break;
		}
	}
	tcbdbcurdel(cur);
	tcxstrdel(k);
	for (i = 0; i < nc && r == 0; i++) {
		r = msg_load_id_locked(a, cand[i], m_r, err, errlen);
		if (r < 0)
			r = 0; /* a corrupt candidate is no parent */
	}
	return r;
}

bool key_subject(TCXSTR *x, const char *base, uint64_t id, bool with_id)
{
	size_t len = strlen(base);
	uint8_t k[8];
	char type = K_SUBJECT;

	tcxstrclear(x);
	if (len == 0)
		return false;
	if (len > IDX_SUBJECT_KEY_MAX) {
		/* Cut before a character, never inside one: the key stays UTF-8. */
		len = IDX_SUBJECT_KEY_MAX;
		while (len > 0 && ((unsigned char)base[len] & 0xc0) == 0x80)
			len--;
	}
	tcxstrcat(x, &type, 1);
	tcxstrcat(x, base, (int)len);
	k[0] = 0;
	tcxstrcat(x, k, 1);
	if (with_id) {
		be64_put(k, id);
		tcxstrcat(x, k, 8);
	}
	return true;
}

/* Leaders the base subject strips (mime_base_subject in index/mime.c): keep
 * the two lists equal, or a "response" would keep its leader in its base. */
static const char *const leaders[] = { "re", "fwd", "fw", "aw", "sv", "antw", "vs", "ref", "tr" };

static bool subj_ws(char c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

/* Length of a subj-blob ("[" text without brackets "]" and whitespace) at s[b..e), or 0. */
static size_t subj_blob(const char *s, size_t b, size_t e)
{
	size_t i = b + 1;

	if (b >= e || s[b] != '[')
		return 0;
	while (i < e && s[i] != '[' && s[i] != ']')
		i++;
	if (i >= e || s[i] != ']')
		return 0;
	for (i++; i < e && subj_ws(s[i]); i++)
		;
	return i - b;
}

/*
 * Whether a raw Subject value is a response: RFC 5256 base subject
 * extraction would strip a reply/forward leader (after any "[list]" blobs),
 * a "(fwd)" trailer or a "[fwd: ...]" wrapper. Blobs alone (a list tag) do
 * not make a response. mime.c does not record this, so it is found here on
 * the decoded subject, with the rules of that extraction.
 */
static bool subject_is_response(const char *raw)
{
	TCXSTR *d;
	const char *s;
	size_t b = 0, e, n, w;
	bool resp = false;

	if (raw == NULL || raw[0] == '\0')
		return false;
	d = tcxstrnew();
	mime_decode_2047(raw, strlen(raw), d);
	s = tcxstrptr(d);
	e = (size_t)tcxstrsize(d);
	while (e > 0 && subj_ws(s[e - 1]))
		e--;
	if (e >= 5 && strncasecmp(s + e - 5, "(fwd)", 5) == 0)
		resp = true;
	for (;;) {
		while (b < e && subj_ws(s[b]))
			b++;
		n = subj_blob(s, b, e);
		if (n == 0 || b + n >= e)
			break;
		b += n;
	}
	for (w = 0; !resp && w < sizeof(leaders) / sizeof(leaders[0]); w++) {
		size_t wl = strlen(leaders[w]), i = b + wl;

		if (e - b < wl || strncasecmp(s + b, leaders[w], wl) != 0)
			continue;
		while (i < e && subj_ws(s[i]))
			i++;
		i += subj_blob(s, i, e);
		if (i < e && s[i] == ':')
			resp = true;
	}
	if (!resp && e - b >= 6 && strncasecmp(s + b, "[fwd:", 5) == 0 && s[e - 1] == ']')
		resp = true;
	tcxstrdel(d);
	return resp;
}

/*
 * The parent by subject of m (subject_base set, received set): among the
 * newest IDX_SUBJECT_SCAN other messages with m's base subject, the one
 * received last, not after m and at most IDX_SUBJECT_WINDOW before it.
 * Ids grow in delivery order, so for mail as it arrives the newest id is
 * the answer; the few more cover imports of old mail out of order.
 * Why 4 weeks (the Go mox's window too, so threads look the same after a
 * migration): a reply whose client dropped References comes within days;
 * a longer window mostly adds false joins of recurring subjects ("Re:
 * invoice", "Re: meeting") into conversations long over.
 * 1 (*p_r), 0 none.
 */
static int find_by_subject(struct idx_account *a, const struct idx_message *m, struct idx_message *p_r)
{
	TCXSTR *k = tcxstrnew();
	BDBCUR *cur;
	uint64_t cand[IDX_SUBJECT_SCAN];
	size_t nc = 0, i, pl;
	int r = 0;

	if (!key_subject(k, m->subject_base, UINT64_MAX, true)) {
		tcxstrdel(k);
		return 0;
	}
	pl = (size_t)tcxstrsize(k) - 8;
	cur = tcbdbcurnew(a->db);
	/* The last key <= prefix + ff..ff is the subject's newest id, if any. */
	if (tcbdbcurjumpback(cur, tcxstrptr(k), tcxstrsize(k))) {
		while (nc < IDX_SUBJECT_SCAN) {
			int ks;
			const uint8_t *kp = tcbdbcurkey3(cur, &ks);

			if (kp == NULL || (size_t)ks != pl + 8 || memcmp(kp, tcxstrptr(k), pl) != 0)
				break;
			cand[nc] = be64_get(kp + pl);
			if (cand[nc] != m->id)
				nc++;
			if (!tcbdbcurprev(cur))
				break;
		}
	}
	tcbdbcurdel(cur);
	tcxstrdel(k);
	for (i = 0; i < nc; i++) {
		struct idx_message c;

		/* Gone or corrupt: no parent. */
		if (msg_load_id_locked(a, cand[i], &c, NULL, 0) <= 0)
			continue;
		/* The key holds a cut subject: compare all of it. */
		if (strcmp(c.subject_base, m->subject_base) == 0 && c.received <= m->received &&
		    (uint64_t)m->received - (uint64_t)c.received <= (uint64_t)IDX_SUBJECT_WINDOW &&
		    (r == 0 || c.received > p_r->received)) {
			if (r > 0)
				idx_message_clear(p_r);
			*p_r = c;
			r = 1;
			continue;
		}
		idx_message_clear(&c);
	}
	return r;
}

/* The referenced ids of msg, oldest first, usable ones only. */
static size_t refs_of(const struct mime_msg *msg, const char *self, const char **v, size_t max)
{
	size_t n = 0;
	uint32_t i;
	const char *irt;

	if (msg == NULL)
		return 0;
	for (i = msg->nrefs > max ? msg->nrefs - (uint32_t)max : 0; i < msg->nrefs; i++) {
		const char *r = msg->refs[i];

		if (r == NULL || r[0] == '\0' || strlen(r) > IDX_MSGID_MAX || strcmp(r, self) == 0)
			continue;
		v[n++] = r;
	}
	irt = msg->in_reply_to_id;
	if (irt != NULL && irt[0] != '\0' && strlen(irt) <= IDX_MSGID_MAX && strcmp(irt, self) != 0 &&
	    (n == 0 || strcmp(v[n - 1], irt) != 0)) {
		if (n == max) {
			memmove(v, v + 1, sizeof(*v) * (n - 1));
			n--;
		}
		v[n++] = irt;
	}
	return n;
}

/* parents := prefix + [last] (+ tail), capped: the root stays first. */
static void set_parents(struct idx_message *m, const uint64_t *prefix, size_t np, uint64_t last, const uint64_t *tail,
    size_t nt)
{
	size_t total = np + 1 + nt, i, o = 0;
	uint64_t *v = idx_xmalloc(sizeof(*v) * total);

	for (i = 0; i < np; i++)
		v[o++] = prefix[i];
	v[o++] = last;
	for (i = 0; i < nt; i++)
		v[o++] = tail[i];
	if (total > IDX_PARENTS_MAX) {
		/* keep the root and the nearest ancestors */
		memmove(v + 1, v + total - (IDX_PARENTS_MAX - 1), sizeof(*v) * (IDX_PARENTS_MAX - 1));
		total = IDX_PARENTS_MAX;
	}
	free(m->parents);
	m->parents = v;
	m->nparents = total;
}

/*
 * m becomes a child of p: p's ancestors + p, p's thread, muted/collapsed
 * inherited (muted: \Seen). A copy of a thread root has no parents and the
 * root's thread id; below it the chain starts at that root, so that
 * parents[0] is the thread id (the checked invariant).
 */
static void adopt_parent(struct idx_message *m, const struct idx_message *p)
{
	if (p->nparents == 0 && p->thread_id != p->id)
		set_parents(m, &p->thread_id, 1, p->id, NULL, 0);
	else
		set_parents(m, p->parents, p->nparents, p->id, NULL, 0);
	m->thread_id = p->thread_id;
	m->tflags |= p->tflags & (IDX_T_MUTED | IDX_T_COLLAPSED);
	if (m->tflags & IDX_T_MUTED)
		m->flags |= IDX_SEEN;
}

int thread_assign(struct idx_account *a, struct idx_message *m, const struct mime_msg *msg, char *err, size_t errlen)
{
	const char *refs[IDX_REFS_MAX + 1];
	size_t n = refs_of(msg, m->message_id, refs, IDX_REFS_MAX), i, found = n;
	struct idx_message p;
	TCXSTR *k;
	int r = 0;

	m->thread_id = m->id;
	m->tflags &= ~(uint32_t)(IDX_T_MISSING_LINK | IDX_T_MUTED | IDX_T_COLLAPSED);
	free(m->parents);
	m->parents = NULL;
	m->nparents = 0;
	memset(&p, 0, sizeof(p));
	for (i = n; i-- > 0;) {
		r = find_by_msgid(a, refs[i], m->id, &p, err, errlen);
		if (r < 0)
			return -1;
		if (r > 0) {
			found = i;
			break;
		}
	}
	if (found < n) {
		adopt_parent(m, &p);
		idx_message_clear(&p);
		if (found != n - 1)
			m->tflags |= IDX_T_MISSING_LINK;
	} else if (m->subject_base != NULL && m->subject_base[0] != '\0' && msg != NULL &&
	    subject_is_response(msg->env.subject) && find_by_subject(a, m, &p) > 0) {
		adopt_parent(m, &p);
		idx_message_clear(&p);
		m->tflags |= IDX_T_MISSING_LINK;
	} else if (n > 0) {
		m->tflags |= IDX_T_MISSING_LINK;
	}
	/* Remember the unknown ids after the found ancestor. */
	k = tcxstrnew();
	for (i = found < n ? found + 1 : 0; i < n; i++) {
		uint8_t direct = i == n - 1;

		key_msgid(k, K_REF, refs[i], m->id, true);
		if (db_put(a, tcxstrptr(k), (size_t)tcxstrsize(k), &direct, 1, err, errlen) < 0) {
			tcxstrdel(k);
			return -1;
		}
	}
	tcxstrdel(k);
	return 1;
}

/* Move every member of thread oldtid under new ancestors prefix. */
static int rethread(struct idx_account *a, uint64_t oldtid, uint64_t newtid, const uint64_t *prefix, size_t np,
    uint64_t child, bool direct, char *err, size_t errlen)
{
	uint8_t k[17], *keys = NULL;
	BDBCUR *cur = tcbdbcurnew(a->db);
	size_t n = 0, i;
	int r = 1;

	key_thread(k, oldtid, 0);
	if (tcbdbcurjump(cur, k, 9)) {
		while (n < IDX_REPARENT_MAX) {
			int ks;
			const uint8_t *kp = tcbdbcurkey3(cur, &ks);

			if (kp == NULL || ks != 17 || memcmp(kp, k, 9) != 0)
				break;
			keys = idx_xrealloc(keys, 8 * (n + 1));
			memcpy(keys + 8 * n++, kp + 9, 8);
			if (!tcbdbcurnext(cur))
				break;
		}
	}
	tcbdbcurdel(cur);
	for (i = 0; i < n && r >= 0; i++) {
		uint64_t id = be64_get(keys + 8 * i);
		struct idx_message m;

		r = db_out(a, k, key_thread(k, oldtid, id), err, errlen);
		if (r < 0)
			break;
		r = msg_load_id_locked(a, id, &m, NULL, 0);
		if (r <= 0) {
			r = 1; /* gone or corrupt: only its thread key goes */
			continue;
		}
		if (m.thread_id == oldtid) {
			uint64_t *tail = m.parents;
			size_t nt = m.nparents;

			m.parents = NULL;
			m.nparents = 0;
			/* A copy of the root has no parents; its own chain starts at prefix. */
			if (nt == 0)
				set_parents(&m, prefix, np - 1, prefix[np - 1], NULL, 0);
			else
				set_parents(&m, prefix, np - 1, prefix[np - 1], tail, nt);
			free(tail);
			m.thread_id = newtid;
			if (id == child || nt == 0) {
				if (direct)
					m.tflags &= ~(uint32_t)IDX_T_MISSING_LINK;
				else
					m.tflags |= IDX_T_MISSING_LINK;
			}
			r = msg_store(a, &m, err, errlen);
		}
		if (r >= 0)
			r = db_put(a, k, key_thread(k, m.thread_id, id), "", 0, err, errlen);
		idx_message_clear(&m);
	}
	free(keys);
	return r < 0 ? -1 : 1;
}

int thread_resolve(struct idx_account *a, const struct idx_message *m, char *err, size_t errlen)
{
	TCXSTR *k;
	BDBCUR *cur;
	struct {
		uint64_t id;
		bool direct;
	} *w = NULL;
	uint64_t *prefix;
	size_t n = 0, i, np;
	int r = 1;

	if (m->message_id[0] == '\0')
		return 1;
	k = tcxstrnew();
	key_msgid(k, K_REF, m->message_id, 0, false);
	cur = tcbdbcurnew(a->db);
	if (tcbdbcurjump(cur, tcxstrptr(k), tcxstrsize(k))) {
		while (n < IDX_REPARENT_MAX) {
			int ks, vs;
			const uint8_t *kp = tcbdbcurkey3(cur, &ks);
			const uint8_t *vp;

			if (kp == NULL || ks != tcxstrsize(k) + 8 || memcmp(kp, tcxstrptr(k), (size_t)tcxstrsize(k)) != 0)
				break;
			vp = tcbdbcurval3(cur, &vs);
			w = idx_xrealloc(w, sizeof(*w) * (n + 1));
			w[n].id = be64_get(kp + tcxstrsize(k));
			w[n].direct = vp != NULL && vs == 1 && vp[0] == 1;
			n++;
			if (!tcbdbcurnext(cur))
				break;
		}
	}
	tcbdbcurdel(cur);
	np = m->nparents + 1;
	prefix = idx_xmalloc(sizeof(*prefix) * np);
	if (m->nparents)
		memcpy(prefix, m->parents, sizeof(*prefix) * m->nparents);
	prefix[np - 1] = m->id;
	for (i = 0; i < n && r >= 0; i++) {
		struct idx_message c;
		TCXSTR *rk = tcxstrnew();

		key_msgid(rk, K_REF, m->message_id, w[i].id, true);
		r = db_out(a, tcxstrptr(rk), (size_t)tcxstrsize(rk), err, errlen);
		tcxstrdel(rk);
		if (r < 0 || w[i].id == m->id)
			continue;
		if (msg_load_id_locked(a, w[i].id, &c, NULL, 0) <= 0)
			continue;
		/* Only roots are re-parented, and never into their own thread. */
		if (c.nparents == 0 && c.thread_id == c.id && m->thread_id != c.thread_id)
			r = rethread(a, c.thread_id, m->thread_id, prefix, np, c.id, w[i].direct, err, errlen);
		idx_message_clear(&c);
	}
	free(prefix);
	free(w);
	tcxstrdel(k);
	return r < 0 ? -1 : 1;
}

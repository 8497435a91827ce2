/*
 * imap_search: SEARCH / UID SEARCH (RFC 9051 6.4.4, RFC 3501 6.4.4), ESEARCH
 * results (RFC 4731), the saved result "$" (SEARCHRES, RFC 5182) and the
 * MODSEQ key (CONDSTORE, RFC 7162 3.1.5).
 *
 * Design. The loop thread parses the search program into a tree; sequence
 * sets are normalized against the view (sequence numbers and '*' mean what
 * the client saw) and "$" is copied from the view's saved UIDs. A job on the
 * account's storage thread then walks the mailbox's records once
 * (idx_message_each) and evaluates the tree three-valued: keys the record
 * answers (flags, keywords, size, dates, UID, modseq) give true or false,
 * content keys (header fields, body text, the Date header) give "unknown".
 * Only messages still unknown are remembered (the walk callback must not
 * call back into the account); after the walk they are examined in batches,
 * the job resubmitting itself so other work of the account interleaves:
 * the MIME cache gives the structure and the Date, the header is read once
 * (bounded), text parts are streamed through a transfer decoder (base64,
 * quoted-printable), a charset step (ISO-8859-1 to UTF-8) and a case-folding
 * substring matcher in fixed-size chunks (the pure text code is imap_text.h). So a flag search opens no file and
 * a body search never holds more than a chunk of a message in memory.
 * Messages of the index that the view does not show yet are not searched.
 */
#define _GNU_SOURCE 1
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <tcutil.h>

#include "daemon/imap_private.h"
#include "daemon/imap_text.h"
#include "daemon/log.h"
#include "index/mime.h"

#define SEARCH_MAX_NODES 2000      /* keys per program */
#define SEARCH_MAX_DEPTH 64        /* nesting of NOT/OR/lists */
#define SEARCH_HDR_MAX (1 << 20)   /* header bytes examined per message */
#define SEARCH_CHUNK (64 * 1024)   /* body read size */
#define SEARCH_BATCH_BYTES (32u << 20) /* body bytes read per job run */
#define SEARCH_BATCH_MSGS 2000     /* messages examined per job run */

/* Three-valued results. */
enum { TV_FALSE = 0, TV_TRUE = 1, TV_UNKNOWN = 2 };

enum skey {
	SK_ALL, SK_AND, SK_OR, SK_NOT, SK_FLAG, SK_UNFLAG, SK_KEYWORD, SK_UNKEYWORD, SK_LARGER, SK_SMALLER,
	SK_BEFORE, SK_ON, SK_SINCE, SK_SENTBEFORE, SK_SENTON, SK_SENTSINCE, SK_SAVEDBEFORE, SK_SAVEDON,
	SK_SAVEDSINCE, SK_SAVEDATESUPPORTED, SK_SEQ, SK_UID, SK_SAVED, SK_MODSEQ, SK_RECENT, SK_HEADER, SK_BODY,
	SK_TEXT,
};

struct snode {
	enum skey k;
	struct snode *kids, *next;  /* AND/OR/NOT children */
	uint32_t flag;              /* SK_FLAG/SK_UNFLAG */
	char *str;                  /* keyword; folded needle */
	size_t len;
	char *field;                /* SK_HEADER field name */
	uint64_t num;               /* size, modseq */
	int64_t day;                /* days since 1970-01-01 */
	struct imap_seqset set;     /* SK_SEQ/SK_UID, normalized */
	uint32_t star;
	int ci;                     /* content result index */
};

/* Needs of a program beyond the record. */
#define NEED_MIME 0x1
#define NEED_HDR 0x2
#define NEED_BODY 0x4
#define NEED_SENT 0x8

/* Return options. */
#define RET_MIN 0x1
#define RET_MAX 0x2
#define RET_ALL 0x4
#define RET_COUNT 0x8
#define RET_SAVE 0x10

struct pend {
	struct idx_message m; /* copy: the fields the search reads */
	uint32_t seq;
};

struct hit {
	uint32_t uid, seq;
	uint64_t modseq;
};

/* What the evaluation of one message sees. */
struct mctx {
	const struct idx_message *m;
	uint32_t seq;
	bool content;        /* phase 2: content results known */
	const bool *cres;
	bool has_sent;
	int64_t sentday;
};

struct search_job {
	struct imap_job j;
	uint32_t mailbox_id;
	uint32_t uidvalidity;  /* of the view: view holds its UIDs */
	bool stale;            /* the mailbox has another one now: nothing was searched */
	struct snode *root;
	unsigned needs;
	int ncontent;
	uint32_t *saved;     /* "$" at command start, ascending */
	size_t nsaved;
	uint32_t *view;      /* view UIDs, ascending; seq = index + 1 */
	size_t nview, vi;
	uint32_t recent_from; /* the view's: see imap_view_recent */
	bool walked;
	struct pend *pend;
	size_t npend, cappend, next;
	struct hit *hits;
	size_t nhits, caphits;
	bool *cres;
	uint64_t budget;
	unsigned ret;
	bool esearch, has_modseq;
	char *chunk;         /* SEARCH_CHUNK raw bytes */
	char *dec;           /* decoded: IMAP_TEXT_DECODE_MAX(SEARCH_CHUNK) */
};

/* ---- search program ---- */

static void
snode_free(struct snode *n)
{
	while (n != NULL) {
		struct snode *next = n->next;
		snode_free(n->kids);
		free(n->str);
		free(n->field);
		imap_seqset_clear(&n->set);
		free(n);
		n = next;
	}
}

struct sparse {
	struct imap_conn *c;
	struct search_job *sj;
	int nnodes;
	const char *err;
};

static struct snode *
node_new(struct sparse *ps, enum skey k)
{
	if (ps->nnodes++ >= SEARCH_MAX_NODES) {
		ps->err = "too many search keys";
		return NULL;
	}
	struct snode *n = xcalloc(1, sizeof(*n));
	n->k = k;
	n->ci = -1;
	return n;
}

/* ---- parsing ---- */

static struct snode *parse_key(struct sparse *ps, struct imap_args *args, int depth);

/* Keys until the end of args, as an AND node. */
static struct snode *
parse_keys(struct sparse *ps, struct imap_args *args, int depth)
{
	struct snode *and = node_new(ps, SK_AND), **tail;
	if (and == NULL)
		return NULL;
	tail = &and->kids;
	if (imap_args_peek(args) == NULL) {
		ps->err = "missing search key";
		snode_free(and);
		return NULL;
	}
	while (imap_args_peek(args) != NULL) {
		struct snode *k = parse_key(ps, args, depth);
		if (k == NULL) {
			snode_free(and);
			return NULL;
		}
		*tail = k;
		tail = &k->next;
	}
	return and;
}

static struct snode *
str_node(struct sparse *ps, struct imap_args *args, enum skey k, const char *field)
{
	const char *s;
	size_t len;
	if (imap_args_astring(args, &s, &len) < 0) {
		ps->err = "search key needs a string";
		return NULL;
	}
	struct snode *n = node_new(ps, k);
	if (n == NULL)
		return NULL;
	n->str = xstrndup(s, len);
	n->len = len;
	imap_text_fold(n->str, len, true);
	n->field = field != NULL ? xstrdup(field) : NULL;
	n->ci = ps->sj->ncontent++;
	ps->sj->needs |= k == SK_HEADER ? NEED_HDR : k == SK_BODY ? (NEED_BODY | NEED_MIME) :
	    (NEED_HDR | NEED_BODY | NEED_MIME);
	return n;
}

static struct snode *
seqset_node(struct sparse *ps, struct imap_args *args, bool uid)
{
	struct imap_seqset set;
	struct imap_view *v = ps->c->sel;
	if (imap_args_seqset(args, &set) < 0) {
		ps->err = args->err;
		return NULL;
	}
	struct snode *n = node_new(ps, set.searchres ? SK_SAVED : uid ? SK_UID : SK_SEQ);
	if (n == NULL) {
		imap_seqset_clear(&set);
		return NULL;
	}
	if (set.searchres) {
		imap_seqset_clear(&set);
		return n;
	}
	n->star = uid ? (v->n ? imap_view_uid(v, v->n - 1) : 0) : (uint32_t)v->n;
	imap_seqset_normalize(&set, n->star);
	n->set = set;
	return n;
}

static const struct { const char *name; enum skey k; uint32_t flag; } flag_keys[] = {
	{"ANSWERED", SK_FLAG, IDX_ANSWERED}, {"DELETED", SK_FLAG, IDX_DELETED}, {"DRAFT", SK_FLAG, IDX_DRAFT},
	{"FLAGGED", SK_FLAG, IDX_FLAGGED}, {"SEEN", SK_FLAG, IDX_SEEN},
	{"UNANSWERED", SK_UNFLAG, IDX_ANSWERED}, {"UNDELETED", SK_UNFLAG, IDX_DELETED},
	{"UNDRAFT", SK_UNFLAG, IDX_DRAFT}, {"UNFLAGGED", SK_UNFLAG, IDX_FLAGGED}, {"UNSEEN", SK_UNFLAG, IDX_SEEN},
};

static const struct { const char *name; enum skey k; } date_keys[] = {
	{"BEFORE", SK_BEFORE}, {"ON", SK_ON}, {"SINCE", SK_SINCE},
	{"SENTBEFORE", SK_SENTBEFORE}, {"SENTON", SK_SENTON}, {"SENTSINCE", SK_SENTSINCE},
	{"SAVEDBEFORE", SK_SAVEDBEFORE}, {"SAVEDON", SK_SAVEDON}, {"SAVEDSINCE", SK_SAVEDSINCE},
};

static const struct { const char *name; const char *field; } hdr_keys[] = {
	{"FROM", "From"}, {"TO", "To"}, {"CC", "Cc"}, {"BCC", "Bcc"}, {"SUBJECT", "Subject"},
};

static struct snode *
parse_modseq(struct sparse *ps, struct imap_args *args)
{
	const struct imap_arg *a = imap_args_peek(args);
	uint64_t v;
	/* Optional entry-name entry-type-req: per-flag modseqs are not kept, the message's applies. */
	if (a != NULL && a->type != IMAP_ARG_ATOM) {
		const char *s;
		size_t len;
		if (imap_args_string(args, &s, &len) < 0 || imap_args_atom(args, &s, &len) < 0 ||
		    (!str_ieq(s, "priv") && !str_ieq(s, "shared") && !str_ieq(s, "all"))) {
			ps->err = "bad MODSEQ entry";
			return NULL;
		}
	}
	if (imap_args_number64(args, &v) < 0) {
		ps->err = "MODSEQ needs a mod-sequence value";
		return NULL;
	}
	struct snode *n = node_new(ps, SK_MODSEQ);
	if (n != NULL)
		n->num = v;
	ps->sj->has_modseq = true;
	ps->c->enabled |= IMAP_EN_CONDSTORE;
	return n;
}

static struct snode *
parse_key(struct sparse *ps, struct imap_args *args, int depth)
{
	const struct imap_arg *a = imap_args_peek(args);
	const char *s;
	size_t len;
	struct snode *n;

	if (depth > SEARCH_MAX_DEPTH) {
		ps->err = "search program too deeply nested";
		return NULL;
	}
	if (a == NULL) {
		ps->err = "missing search key";
		return NULL;
	}
	if (a->type == IMAP_ARG_LIST) {
		struct imap_args sub;
		imap_args_list(args, &sub);
		return parse_keys(ps, &sub, depth + 1);
	}
	if (a->type != IMAP_ARG_ATOM || a->section != NULL) {
		ps->err = "bad search key";
		return NULL;
	}
	s = a->str;
	if ((s[0] >= '0' && s[0] <= '9') || s[0] == '*' || s[0] == '$')
		return seqset_node(ps, args, false);
	imap_args_any(args, &a);
	for (size_t i = 0; i < ARRAY_LEN(flag_keys); i++)
		if (str_ieq(s, flag_keys[i].name)) {
			if ((n = node_new(ps, flag_keys[i].k)) != NULL)
				n->flag = flag_keys[i].flag;
			return n;
		}
	for (size_t i = 0; i < ARRAY_LEN(hdr_keys); i++)
		if (str_ieq(s, hdr_keys[i].name))
			return str_node(ps, args, SK_HEADER, hdr_keys[i].field);
	for (size_t i = 0; i < ARRAY_LEN(date_keys); i++)
		if (str_ieq(s, date_keys[i].name)) {
			const char *d;
			int64_t day;
			if (imap_args_astring(args, &d, &len) < 0 || imap_text_parse_date(d, len, &day) < 0) {
				ps->err = "bad date, expected e.g. 1-Feb-2024";
				return NULL;
			}
			if ((n = node_new(ps, date_keys[i].k)) != NULL)
				n->day = day;
			if (date_keys[i].k == SK_SENTBEFORE || date_keys[i].k == SK_SENTON ||
			    date_keys[i].k == SK_SENTSINCE)
				ps->sj->needs |= NEED_SENT | NEED_MIME;
			return n;
		}
	if (str_ieq(s, "ALL"))
		return node_new(ps, SK_ALL);
	if (str_ieq(s, "SAVEDATESUPPORTED"))
		return node_new(ps, SK_SAVEDATESUPPORTED);
	if (str_ieq(s, "RECENT"))
		return node_new(ps, SK_RECENT);
	if (str_ieq(s, "NEW") || str_ieq(s, "OLD")) {
		/* NEW is RECENT UNSEEN, OLD is NOT RECENT. */
		bool isnew = str_ieq(s, "NEW");
		struct snode *top = node_new(ps, isnew ? SK_AND : SK_NOT);
		struct snode *r = node_new(ps, SK_RECENT);
		struct snode *u = isnew ? node_new(ps, SK_UNFLAG) : NULL;
		if (top == NULL || r == NULL || (isnew && u == NULL)) {
			snode_free(top);
			snode_free(r);
			snode_free(u);
			return NULL;
		}
		top->kids = r;
		if (u != NULL) {
			u->flag = IDX_SEEN;
			r->next = u;
		}
		return top;
	}
	if (str_ieq(s, "NOT")) {
		struct snode *k = parse_key(ps, args, depth + 1);
		if (k == NULL)
			return NULL;
		if ((n = node_new(ps, SK_NOT)) == NULL) {
			snode_free(k);
			return NULL;
		}
		n->kids = k;
		return n;
	}
	if (str_ieq(s, "OR")) {
		struct snode *k1 = parse_key(ps, args, depth + 1);
		if (k1 == NULL)
			return NULL;
		struct snode *k2 = parse_key(ps, args, depth + 1);
		if (k2 == NULL || (n = node_new(ps, SK_OR)) == NULL) {
			snode_free(k1);
			snode_free(k2);
			return NULL;
		}
		n->kids = k1;
		k1->next = k2;
		return n;
	}
	if (str_ieq(s, "KEYWORD") || str_ieq(s, "UNKEYWORD")) {
		bool un = s[0] == 'U' || s[0] == 'u';
		const char *kw;
		if (imap_args_atom(args, &kw, &len) < 0 || kw[0] == '\\' || len > IDX_KEYWORD_MAX) {
			ps->err = "KEYWORD needs a keyword";
			return NULL;
		}
		if (str_ieq(kw, "$Forwarded")) {
			if ((n = node_new(ps, un ? SK_UNFLAG : SK_FLAG)) != NULL)
				n->flag = IDX_FORWARDED;
			return n;
		}
		if ((n = node_new(ps, un ? SK_UNKEYWORD : SK_KEYWORD)) != NULL)
			n->str = xstrndup(kw, len);
		return n;
	}
	if (str_ieq(s, "LARGER") || str_ieq(s, "SMALLER")) {
		uint64_t v;
		if (imap_args_number64(args, &v) < 0) {
			ps->err = "LARGER/SMALLER need a number";
			return NULL;
		}
		if ((n = node_new(ps, str_ieq(s, "LARGER") ? SK_LARGER : SK_SMALLER)) != NULL)
			n->num = v;
		return n;
	}
	if (str_ieq(s, "HEADER")) {
		const char *f;
		size_t flen;
		if (imap_args_astring(args, &f, &flen) < 0 || flen == 0 || memchr(f, ':', flen) != NULL) {
			ps->err = "HEADER needs a field name and a string";
			return NULL;
		}
		char *field = xstrndup(f, flen);
		n = str_node(ps, args, SK_HEADER, field);
		free(field);
		return n;
	}
	if (str_ieq(s, "BODY"))
		return str_node(ps, args, SK_BODY, NULL);
	if (str_ieq(s, "TEXT"))
		return str_node(ps, args, SK_TEXT, NULL);
	if (str_ieq(s, "UID"))
		return seqset_node(ps, args, true);
	if (str_ieq(s, "MODSEQ"))
		return parse_modseq(ps, args);
	ps->err = "unknown search key";
	return NULL;
}

/* ---- evaluation ---- */

static bool
uid_in(const uint32_t *v, size_t n, uint32_t uid)
{
	size_t lo = 0, hi = n;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (v[mid] < uid)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo < n && v[lo] == uid;
}

static bool
has_keyword(const struct idx_message *m, const char *kw)
{
	for (size_t i = 0; i < m->nkeywords; i++)
		if (strcasecmp(m->keywords[i], kw) == 0)
			return true;
	return false;
}

static int
cmp_day(enum skey k, int64_t have, int64_t want)
{
	switch (k) {
	case SK_BEFORE: case SK_SENTBEFORE: case SK_SAVEDBEFORE: return have < want;
	case SK_ON: case SK_SENTON: case SK_SAVEDON: return have == want;
	default: return have >= want;
	}
}

static int
eval(const struct search_job *sj, const struct snode *n, const struct mctx *x)
{
	const struct idx_message *m = x->m;
	int r, u = 0;

	switch (n->k) {
	case SK_ALL:
	case SK_SAVEDATESUPPORTED:
		return TV_TRUE;
	case SK_AND:
		for (const struct snode *k = n->kids; k != NULL; k = k->next) {
			if ((r = eval(sj, k, x)) == TV_FALSE)
				return TV_FALSE;
			u |= r == TV_UNKNOWN;
		}
		return u ? TV_UNKNOWN : TV_TRUE;
	case SK_OR:
		for (const struct snode *k = n->kids; k != NULL; k = k->next) {
			if ((r = eval(sj, k, x)) == TV_TRUE)
				return TV_TRUE;
			u |= r == TV_UNKNOWN;
		}
		return u ? TV_UNKNOWN : TV_FALSE;
	case SK_NOT:
		r = eval(sj, n->kids, x);
		return r == TV_UNKNOWN ? r : !r;
	case SK_FLAG:
		return (m->flags & n->flag) == n->flag;
	case SK_UNFLAG:
		return (m->flags & n->flag) == 0;
	case SK_KEYWORD:
		return has_keyword(m, n->str);
	case SK_UNKEYWORD:
		return !has_keyword(m, n->str);
	case SK_LARGER:
		return m->size > n->num;
	case SK_SMALLER:
		return m->size < n->num;
	case SK_BEFORE: case SK_ON: case SK_SINCE:
		return cmp_day(n->k, imap_text_day_of(m->received + (int64_t)m->received_tz * 60), n->day);
	case SK_SAVEDBEFORE: case SK_SAVEDON: case SK_SAVEDSINCE:
		return cmp_day(n->k, imap_text_day_of(m->savedate ? m->savedate : m->received), n->day);
	case SK_SENTBEFORE: case SK_SENTON: case SK_SENTSINCE:
		if (!x->content)
			return TV_UNKNOWN;
		return x->has_sent && cmp_day(n->k, x->sentday, n->day);
	case SK_SEQ:
		return imap_seqset_contains(&n->set, x->seq, n->star);
	case SK_UID:
		return imap_seqset_contains(&n->set, m->uid, n->star);
	case SK_SAVED:
		return uid_in(sj->saved, sj->nsaved, m->uid);
	case SK_MODSEQ:
		return m->modseq >= n->num;
	case SK_RECENT: {
		struct imap_view rv = {.recent_from = sj->recent_from};
		return imap_view_recent(&rv, m->uid);
	}
	case SK_HEADER: case SK_BODY: case SK_TEXT:
		if (!x->content)
			return TV_UNKNOWN;
		return x->cres[n->ci];
	}
	return TV_FALSE;
}

static void
hit_add(struct search_job *sj, const struct idx_message *m, uint32_t seq)
{
	if (sj->nhits == sj->caphits) {
		sj->caphits = sj->caphits ? sj->caphits * 2 : 256;
		sj->hits = xrealloc(sj->hits, sj->caphits * sizeof(*sj->hits));
	}
	sj->hits[sj->nhits++] = (struct hit){m->uid, seq, m->modseq};
}

static int
walk_cb(void *arg, const struct idx_message *m)
{
	struct search_job *sj = arg;

	while (sj->vi < sj->nview && sj->view[sj->vi] < m->uid)
		sj->vi++;
	if (sj->vi == sj->nview)
		return 0;
	if (sj->view[sj->vi] != m->uid)
		return 1;
	struct mctx x = {.m = m, .seq = (uint32_t)sj->vi + 1};
	int r = eval(sj, sj->root, &x);
	if (r == TV_TRUE) {
		hit_add(sj, m, x.seq);
	} else if (r == TV_UNKNOWN) {
		if (sj->npend == sj->cappend) {
			sj->cappend = sj->cappend ? sj->cappend * 2 : 64;
			sj->pend = xrealloc(sj->pend, sj->cappend * sizeof(*sj->pend));
		}
		struct pend *p = &sj->pend[sj->npend++];
		memset(p, 0, sizeof(*p));
		p->seq = x.seq;
		p->m.id = m->id;
		p->m.mailbox_id = m->mailbox_id;
		p->m.uid = m->uid;
		p->m.modseq = m->modseq;
		p->m.flags = m->flags;
		p->m.size = m->size;
		p->m.received = m->received;
		p->m.received_tz = m->received_tz;
		p->m.savedate = m->savedate;
		p->m.filename = xstrdup(m->filename != NULL ? m->filename : "");
		if (m->nkeywords > 0) {
			p->m.keywords = xmalloc(m->nkeywords * sizeof(char *));
			for (size_t i = 0; i < m->nkeywords; i++)
				p->m.keywords[i] = xstrdup(m->keywords[i]);
			p->m.nkeywords = m->nkeywords;
		}
	}
	return 1;
}

static void
pend_clear(struct pend *p)
{
	free(p->m.filename);
	for (size_t i = 0; i < p->m.nkeywords; i++)
		free(p->m.keywords[i]);
	free(p->m.keywords);
	memset(p, 0, sizeof(*p));
}

/* ---- content: streaming through imap_text ---- */

/* The body needles of one message: matcher index i answers content key ci[i]. */
struct body_match {
	struct imap_text_matcher *m;
	int *ci;
	size_t n;
};

/* Stream bytes [off, off+len) of fd through a decoder into the matcher, as one segment. */
static int
stream_range(struct search_job *sj, int fd, uint64_t off, uint64_t len, struct imap_text_decoder *d,
    struct body_match *bm)
{
	while (len > 0 && imap_text_matcher_left(bm->m) > 0) {
		size_t want = len < SEARCH_CHUNK ? (size_t)len : SEARCH_CHUNK;
		ssize_t r = pread(fd, sj->chunk, want, (off_t)off);
		if (r < 0) {
			snprintf(sj->j.err, sizeof(sj->j.err), "read message: %s", strerror(errno));
			return -1;
		}
		if (r == 0)
			break;
		sj->budget += (uint64_t)r;
		size_t n = imap_text_decode(d, sj->chunk, (size_t)r, sj->dec);
		imap_text_matcher_feed(bm->m, sj->dec, n);
		off += (uint64_t)r;
		len -= (uint64_t)r;
	}
	/* What the decoder holds back ('=', "=X", a CR) is text at the end of the part. */
	imap_text_matcher_feed(bm->m, sj->dec, imap_text_decode_end(d, sj->dec));
	imap_text_matcher_end(bm->m);
	return 1;
}

static const char *
param(const struct mime_param *p, uint32_t n, const char *name)
{
	for (uint32_t i = 0; i < n; i++)
		if (strcasecmp(p[i].name, name) == 0)
			return p[i].value;
	return NULL;
}

static int
body_part(struct search_job *sj, int fd, const struct mime_part *p, struct body_match *bm, int depth)
{
	struct imap_text_decoder d;

	if (imap_text_matcher_left(bm->m) == 0 || depth > 100)
		return 1;
	if (p->nchildren > 0) {
		bool msg = strcmp(p->type, "message") == 0;
		imap_text_decoder_init(&d, IMAP_TEXT_ENC_NONE, false);
		for (uint32_t i = 0; i < p->nchildren && imap_text_matcher_left(bm->m) > 0; i++) {
			const struct mime_part *ch = &p->children[i];
			if (msg && stream_range(sj, fd, ch->hdr_off, ch->hdr_len, &d, bm) < 0)
				return -1;
			if (body_part(sj, fd, ch, bm, depth + 1) < 0)
				return -1;
		}
		return 1;
	}
	/* Leaves: text is decoded; other content (images, archives) is not text to search;
	 * what the parser could not structure is searched raw. */
	if (strcmp(p->type, "text") != 0 && !(p->flags & MIME_PART_OPAQUE) && strcmp(p->type, "message") != 0 &&
	    strcmp(p->type, "multipart") != 0)
		return 1;
	imap_text_decoder_init(&d, imap_text_enc_of(p->encoding),
	    imap_text_charset_latin1(param(p->params, p->nparams, "charset")));
	return stream_range(sj, fd, p->body_off, p->body_len, &d, bm);
}

/* One header field: check HEADER/FROM/... and the header part of TEXT. */
static void
field_check(struct search_job *sj, const struct snode *n, const char *name, size_t nlen, char *raw, size_t rlen,
    char *decoded, size_t dlen)
{
	for (; n != NULL; n = n->next) {
		if (n->kids != NULL)
			field_check(sj, n->kids, name, nlen, raw, rlen, decoded, dlen);
		if ((n->k != SK_HEADER && n->k != SK_TEXT) || sj->cres[n->ci])
			continue;
		if (n->k == SK_HEADER && (strlen(n->field) != nlen || strncasecmp(n->field, name, nlen) != 0))
			continue;
		if (n->len == 0 || memmem(raw, rlen, n->str, n->len) != NULL ||
		    memmem(decoded, dlen, n->str, n->len) != NULL)
			sj->cres[n->ci] = true;
	}
}

/* Header keys are matched against the raw field and its RFC 2047 decoding, both folded. */
static void
field_done(void *arg, const struct imap_text_field *f)
{
	struct search_job *sj = arg;
	TCXSTR *dec = tcxstrnew();
	mime_decode_2047(f->value, f->vlen, dec);
	size_t dlen = (size_t)tcxstrsize(dec);
	char *raw = xmalloc(f->len + 1), *d = xmalloc(dlen + 1);
	memcpy(raw, f->line, f->len);
	memcpy(d, tcxstrptr(dec), dlen);
	imap_text_fold(raw, f->len, true);
	imap_text_fold(d, dlen, true);
	field_check(sj, sj->root, f->name, f->nlen, raw, f->len, d, dlen);
	free(raw);
	free(d);
	tcxstrdel(dec);
}

/* Read the header (at most SEARCH_HDR_MAX) and check the header keys. *hlen_r: header length. */
static int
header_check(struct search_job *sj, int fd, const struct mime_msg *mm, uint64_t size, uint64_t *hlen_r)
{
	uint64_t want = mm != NULL ? mm->root.hdr_len : size;
	if (want > SEARCH_HDR_MAX)
		want = SEARCH_HDR_MAX;
	char *buf = xmalloc((size_t)want + 1);
	size_t got = 0;
	while (got < want) {
		ssize_t r = pread(fd, buf + got, (size_t)want - got, (off_t)got);
		if (r < 0) {
			snprintf(sj->j.err, sizeof(sj->j.err), "read message: %s", strerror(errno));
			free(buf);
			return -1;
		}
		if (r == 0)
			break;
		got += (size_t)r;
	}
	sj->budget += got;
	*hlen_r = imap_text_header_fields(buf, got, field_done, sj);
	free(buf);
	return 1;
}

static void
collect_needles(struct search_job *sj, const struct snode *n, struct body_match *bm)
{
	for (; n != NULL; n = n->next) {
		collect_needles(sj, n->kids, bm);
		if ((n->k == SK_BODY || n->k == SK_TEXT) && !sj->cres[n->ci]) {
			size_t i = imap_text_matcher_add(bm->m, n->str, n->len);
			bm->ci[i] = n->ci;
			bm->n = i + 1;
		}
	}
}

/* Content keys of one message into sj->cres. 1, 0 when the message is gone, -1. */
static int
examine(struct search_job *sj, struct idx_account *a, struct pend *p, struct mctx *x)
{
	struct mime_msg *mm = NULL;
	int fd = -1, rc = 1;

	memset(sj->cres, 0, (size_t)sj->ncontent * sizeof(*sj->cres));
	if (sj->needs & NEED_MIME) {
		void *blob = NULL;
		size_t blen = 0;
		if (idx_message_mime(a, p->m.id, &blob, &blen, sj->j.err, sizeof(sj->j.err)) < 0)
			return -1;
		if (blob != NULL)
			mime_cache_decode(blob, blen, NULL, &mm, NULL);
		free(blob);
	}
	if ((sj->needs & NEED_SENT) && mm != NULL) {
		int64_t d;
		if (imap_text_sent_day(mm->env.date, mm->date, &d) > 0) {
			x->has_sent = true;
			x->sentday = d;
		}
	}
	if (sj->needs & (NEED_HDR | NEED_BODY)) {
		int r = idx_message_open(a, &p->m, &fd, sj->j.err, sizeof(sj->j.err));
		if (r <= 0) {
			mime_msg_free(&mm);
			return r;
		}
		uint64_t hlen = 0;
		if ((sj->needs & NEED_HDR) || mm == NULL)
			rc = header_check(sj, fd, mm, p->m.size, &hlen);
		if (rc > 0 && (sj->needs & NEED_BODY)) {
			struct body_match bm = {.m = imap_text_matcher_new(SEARCH_CHUNK * 2)};
			bm.ci = xmalloc(((size_t)sj->ncontent + 1) * sizeof(*bm.ci));
			collect_needles(sj, sj->root, &bm);
			if (imap_text_matcher_left(bm.m) > 0) {
				if (mm != NULL) {
					rc = body_part(sj, fd, &mm->root, &bm, 0);
				} else {
					struct imap_text_decoder d;
					imap_text_decoder_init(&d, IMAP_TEXT_ENC_NONE, false);
					rc = stream_range(sj, fd, hlen, p->m.size > hlen ? p->m.size - hlen : 0, &d, &bm);
				}
			}
			for (size_t i = 0; i < bm.n; i++)
				if (imap_text_matcher_found(bm.m, i))
					sj->cres[bm.ci[i]] = true;
			imap_text_matcher_free(&bm.m);
			free(bm.ci);
		}
		close(fd);
	}
	mime_msg_free(&mm);
	return rc;
}

static void
search_work(struct imap_job *j, struct idx_account *a)
{
	struct search_job *sj = (struct search_job *)j;

	if (!sj->walked) {
		sj->walked = true;
		/* Later steps examine the records the walk copied, found by id: only the walk needs the check. */
		if ((j->rc = imap_view_uids_valid(a, sj->mailbox_id, sj->uidvalidity, j->err, sizeof(j->err))) <= 0) {
			sj->stale = j->rc == 0;
			return;
		}
		j->rc = 0;
		if (sj->nview > 0 &&
		    idx_message_each(a, sj->mailbox_id, sj->view[0], walk_cb, sj, j->err, sizeof(j->err)) < 0) {
			j->rc = -1;
			return;
		}
		if (sj->npend == 0)
			return;
	}
	sj->budget = 0;
	size_t done = 0;
	while (sj->next < sj->npend && sj->budget < SEARCH_BATCH_BYTES && done < SEARCH_BATCH_MSGS) {
		struct pend *p = &sj->pend[sj->next++];
		struct mctx x = {.m = &p->m, .seq = p->seq, .content = true, .cres = sj->cres};
		int r = examine(sj, a, p, &x);
		done++;
		if (r < 0) {
			pend_clear(p);
			j->rc = -1;
			return;
		}
		if (r > 0 && eval(sj, sj->root, &x) == TV_TRUE)
			hit_add(sj, &p->m, p->seq);
		pend_clear(p);
	}
}

/* ---- results ---- */

static void
search_free(struct search_job *sj)
{
	snode_free(sj->root);
	free(sj->saved);
	free(sj->view);
	for (size_t i = sj->next; i < sj->npend; i++)
		pend_clear(&sj->pend[i]);
	free(sj->pend);
	free(sj->hits);
	free(sj->cres);
	free(sj->chunk);
	free(sj->dec);
	free(sj);
}

static int
hit_cmp(const void *a, const void *b)
{
	const struct hit *x = a, *y = b;
	return x->uid < y->uid ? -1 : x->uid > y->uid;
}

/* Compact sequence set of hits[0..n) (UIDs or sequence numbers). */
static void
set_out(struct mbuf *b, const struct hit *h, size_t n, bool uid)
{
	for (size_t i = 0; i < n;) {
		uint32_t first = uid ? h[i].uid : h[i].seq, last = first;
		size_t k = i + 1;
		while (k < n && (uid ? h[k].uid : h[k].seq) == last + 1)
			last++, k++;
		if (first == last)
			mbuf_printf(b, "%s%u", i ? "," : "", first);
		else
			mbuf_printf(b, "%s%u:%u", i ? "," : "", first, last);
		i = k;
	}
}

static void
save_result(struct imap_conn *c, const struct hit *h, size_t n)
{
	struct imap_view *v = c->sel;
	free(v->saved);
	v->saved = n ? xmalloc(n * sizeof(*v->saved)) : NULL;
	v->nsaved = 0;
	for (size_t i = 0; i < n; i++)
		if (v->nsaved == 0 || v->saved[v->nsaved - 1] < h[i].uid)
			v->saved[v->nsaved++] = h[i].uid;
}

static void
search_respond(struct imap_conn *c, struct search_job *sj)
{
	struct hit *h = sj->hits;
	size_t n = sj->nhits;
	bool uid = c->uid;
	struct mbuf b;
	uint64_t maxmod = 0;

	if (n > 1)
		qsort(h, n, sizeof(*h), hit_cmp);
	mbuf_init(&b, (size_t)1 << 31);
	if (!sj->esearch) {
		mbuf_adds(&b, "* SEARCH");
		for (size_t i = 0; i < n; i++) {
			mbuf_printf(&b, " %u", uid ? h[i].uid : h[i].seq);
			if (h[i].modseq > maxmod)
				maxmod = h[i].modseq;
		}
		if (sj->has_modseq && n > 0)
			mbuf_printf(&b, " (MODSEQ %llu)", (unsigned long long)maxmod);
		mbuf_adds(&b, "\r\n");
	} else {
		unsigned ret = sj->ret;
		bool minmax_only = (ret & (RET_MIN | RET_MAX)) && !(ret & (RET_ALL | RET_COUNT));
		if (ret & RET_SAVE) {
			/* RFC 5182 2.4: with only MIN/MAX besides SAVE, just those are saved. */
			if (minmax_only && n > 0) {
				struct hit mm[2];
				size_t k = 0;
				if (ret & RET_MIN)
					mm[k++] = h[0];
				if ((ret & RET_MAX) && (k == 0 || h[n - 1].uid != h[0].uid))
					mm[k++] = h[n - 1];
				save_result(c, mm, k);
			} else {
				save_result(c, h, n);
			}
		}
		if (ret & (RET_MIN | RET_MAX | RET_ALL | RET_COUNT)) {
			mbuf_adds(&b, "* ESEARCH (TAG ");
			imap_quote(&b, c->tag, strlen(c->tag), 0);
			mbuf_adds(&b, ")");
			if (uid)
				mbuf_adds(&b, " UID");
			if (n > 0 && (ret & RET_MIN))
				mbuf_printf(&b, " MIN %u", uid ? h[0].uid : h[0].seq);
			if (n > 0 && (ret & RET_MAX))
				mbuf_printf(&b, " MAX %u", uid ? h[n - 1].uid : h[n - 1].seq);
			if (ret & RET_COUNT)
				mbuf_printf(&b, " COUNT %zu", n);
			if (n > 0 && (ret & RET_ALL)) {
				mbuf_adds(&b, " ALL ");
				set_out(&b, h, n, uid);
			}
			if (sj->has_modseq && n > 0) {
				/* RFC 7162 3.1.5: of the messages returned by MIN/MAX, else of all. */
				if (minmax_only) {
					if (ret & RET_MIN)
						maxmod = h[0].modseq;
					if ((ret & RET_MAX) && h[n - 1].modseq > maxmod)
						maxmod = h[n - 1].modseq;
				} else {
					for (size_t i = 0; i < n; i++)
						if (h[i].modseq > maxmod)
							maxmod = h[i].modseq;
				}
				mbuf_printf(&b, " MODSEQ %llu", (unsigned long long)maxmod);
			}
			mbuf_adds(&b, "\r\n");
		}
	}
	imap_write(c, b.data, b.len);
	mbuf_clear(&b);
	imap_ok(c, "%sSEARCH completed", uid ? "UID " : "");
}

static void
search_done(struct imap_job *j)
{
	struct search_job *sj = (struct search_job *)j;
	struct imap_conn *c = j->c;

	if (imap_gone(c)) {
		search_free(sj);
		return;
	}
	if (sj->stale) {
		imap_view_stale(c, sj->mailbox_id);
		search_free(sj);
		imap_cmd_finish(c);
		return;
	}
	if (j->rc >= 0 && sj->next < sj->npend) {
		/* More messages to examine: let other work of the account run in between. */
		imap_submit(c, &sj->j);
		return;
	}
	if (j->rc < 0) {
		if (sj->ret & RET_SAVE)
			save_result(c, NULL, 0);
		imap_serverbug(c, "search", j->err);
	} else {
		search_respond(c, sj);
	}
	search_free(sj);
	imap_cmd_finish(c);
}

/* ---- command ---- */

static int
parse_return(struct imap_conn *c, struct imap_args *args, struct search_job *sj)
{
	struct imap_args sub;
	if (imap_args_list(args, &sub) < 0)
		return -1;
	static const struct { const char *name; unsigned bit; } opts[] = {
		{"MIN", RET_MIN}, {"MAX", RET_MAX}, {"ALL", RET_ALL}, {"COUNT", RET_COUNT}, {"SAVE", RET_SAVE},
	};
	while (imap_args_peek(&sub) != NULL) {
		size_t i;
		for (i = 0; i < ARRAY_LEN(opts); i++)
			if (imap_args_keyword(&sub, opts[i].name) == 1)
				break;
		if (i == ARRAY_LEN(opts))
			return -1;
		sj->ret |= opts[i].bit;
	}
	if (sj->ret == 0)
		sj->ret = RET_ALL;
	return 1;
}

int
imap_cmd_search(struct imap_conn *c, struct imap_args *args)
{
	struct search_job *sj = xcalloc(1, sizeof(*sj));
	struct imap_view *v = c->sel;
	struct sparse ps = {.c = c, .sj = sj};

	if (imap_args_keyword(args, "RETURN") == 1) {
		sj->esearch = true;
		if (parse_return(c, args, sj) < 0) {
			imap_bad(c, "bad RETURN options (MIN MAX ALL COUNT SAVE)");
			goto fail;
		}
	} else if (c->enabled & IMAP_EN_REV2) {
		sj->esearch = true;
		sj->ret = RET_ALL;
	}
	if (imap_args_keyword(args, "CHARSET") == 1) {
		const char *cs;
		size_t len;
		if (imap_args_astring(args, &cs, &len) < 0) {
			imap_bad(c, "CHARSET needs a charset name");
			goto fail;
		}
		if (!str_ieq(cs, "UTF-8") && !str_ieq(cs, "US-ASCII")) {
			imap_no(c, "[BADCHARSET (UTF-8 US-ASCII)] unsupported charset");
			goto fail;
		}
	}
	/* "$" refers to the result saved before this command, even if it saves a new one. */
	if (v->nsaved > 0) {
		sj->saved = xmalloc(v->nsaved * sizeof(*sj->saved));
		memcpy(sj->saved, v->saved, v->nsaved * sizeof(*sj->saved));
		sj->nsaved = v->nsaved;
	}
	sj->root = parse_keys(&ps, args, 0);
	if (sj->root == NULL) {
		imap_bad(c, "%s", ps.err != NULL ? ps.err : "bad search program");
		goto fail;
	}
	sj->view = v->n ? xmalloc(v->n * sizeof(*sj->view)) : NULL;
	for (size_t i = 0; i < v->n; i++)
		sj->view[i] = imap_view_uid(v, i);
	sj->nview = v->n;
	sj->recent_from = v->recent_from;
	sj->mailbox_id = v->mailbox_id;
	sj->uidvalidity = v->uidvalidity;
	sj->cres = xcalloc((size_t)sj->ncontent + 1, sizeof(*sj->cres));
	if (sj->needs & NEED_BODY) {
		sj->chunk = xmalloc(SEARCH_CHUNK);
		sj->dec = xmalloc(IMAP_TEXT_DECODE_MAX(SEARCH_CHUNK));
	}
	sj->j.work = search_work;
	sj->j.done = search_done;
	imap_submit(c, &sj->j);
	return IMAP_CMD_ASYNC;
fail:
	if (sj->ret & RET_SAVE)
		save_result(c, NULL, 0);
	search_free(sj);
	return IMAP_CMD_DONE;
}

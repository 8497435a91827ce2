/*
 * Keys and records of the account index (index/SCHEMA.md).
 *
 * Encoders append to a TCXSTR. Decoders are strict: a record is accepted
 * only when every field is in range, every length fits in what is left,
 * and nothing trails the last field. A corrupt record yields -1 and an
 * empty struct, never a crash, so readers can skip it and the checker can
 * report it.
 */
#include "index/index_private.h"

#include <stdlib.h>
#include <string.h>

void be32_put(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

void be64_put(uint8_t *p, uint64_t v)
{
	be32_put(p, (uint32_t)(v >> 32));
	be32_put(p + 4, (uint32_t)v);
}

uint32_t be32_get(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

uint64_t be64_get(const uint8_t *p)
{
	return (uint64_t)be32_get(p) << 32 | be32_get(p + 4);
}

size_t key_mb(uint8_t *k, uint32_t mbid)
{
	k[0] = K_MAILBOX;
	be32_put(k + 1, mbid);
	return 5;
}

size_t key_mbuid(uint8_t *k, char type, uint32_t mbid, uint32_t uid)
{
	k[0] = (uint8_t)type;
	be32_put(k + 1, mbid);
	be32_put(k + 5, uid);
	return 9;
}

size_t key_id(uint8_t *k, char type, uint64_t id)
{
	k[0] = (uint8_t)type;
	be64_put(k + 1, id);
	return 9;
}

size_t key_thread(uint8_t *k, uint64_t tid, uint64_t id)
{
	k[0] = K_THREAD;
	be64_put(k + 1, tid);
	if (id == 0)
		return 9;
	be64_put(k + 9, id);
	return 17;
}

void key_name(TCXSTR *x, const char *name)
{
	tcxstrclear(x);
	tcxstrcat(x, "N", 1);
	tcxstrcat2(x, name);
}

void key_file(TCXSTR *x, uint32_t mbid, const char *base, size_t len)
{
	uint8_t k[5];

	tcxstrclear(x);
	key_mb(k, mbid);
	k[0] = K_FILE;
	tcxstrcat(x, k, 5);
	tcxstrcat(x, base, (int)len);
}

void key_msgid(TCXSTR *x, char type, const char *msgid, uint64_t id, bool with_id)
{
	uint8_t k[9];

	tcxstrclear(x);
	tcxstrcat(x, &type, 1);
	tcxstrcat2(x, msgid);
	k[0] = 0;
	tcxstrcat(x, k, 1);
	if (with_id) {
		be64_put(k, id);
		tcxstrcat(x, k, 8);
	}
}

/* ---- encoding ---- */

static void put_u8(TCXSTR *x, uint8_t v)
{
	tcxstrcat(x, &v, 1);
}

static void put_uv(TCXSTR *x, uint64_t v)
{
	uint8_t b[10];
	int n = 0;

	do {
		b[n] = v & 0x7f;
		v >>= 7;
		if (v)
			b[n] |= 0x80;
		n++;
	} while (v);
	tcxstrcat(x, b, n);
}

static void put_sv(TCXSTR *x, int64_t v)
{
	put_uv(x, ((uint64_t)v << 1) ^ (uint64_t)(v >> 63));
}

static void put_bytes(TCXSTR *x, const void *p, size_t len)
{
	put_uv(x, len);
	if (len)
		tcxstrcat(x, p, (int)len);
}

static void put_str(TCXSTR *x, const char *s)
{
	put_bytes(x, s ? s : "", s ? strlen(s) : 0);
}

/* ---- decoding ---- */

struct rd {
	const uint8_t *p, *end;
	bool bad;
};

static uint64_t get_uv(struct rd *r)
{
	uint64_t v = 0;
	int shift = 0;

	for (;;) {
		uint8_t b;

		if (r->p >= r->end || shift > 63) {
			r->bad = true;
			return 0;
		}
		b = *r->p++;
		if (shift == 63 && (b & 0x7e)) { /* would overflow 64 bits */
			r->bad = true;
			return 0;
		}
		v |= (uint64_t)(b & 0x7f) << shift;
		if (!(b & 0x80))
			return v;
		shift += 7;
	}
}

static uint64_t get_uv_max(struct rd *r, uint64_t max)
{
	uint64_t v = get_uv(r);

	if (v > max) {
		r->bad = true;
		return 0;
	}
	return v;
}

static int64_t get_sv(struct rd *r)
{
	uint64_t v = get_uv(r);

	return (int64_t)(v >> 1) ^ -(int64_t)(v & 1);
}

static const uint8_t *get_bytes(struct rd *r, size_t *len_r)
{
	uint64_t n = get_uv(r);
	const uint8_t *p = r->p;

	*len_r = 0;
	if (r->bad || n > (uint64_t)(r->end - r->p)) {
		r->bad = true;
		return NULL;
	}
	r->p += n;
	*len_r = (size_t)n;
	return p;
}

/* A NUL-terminated copy of a string field of at most max bytes without NUL. */
static char *get_str(struct rd *r, size_t max)
{
	size_t len;
	const uint8_t *p = get_bytes(r, &len);
	char *s;

	if (p == NULL || len > max || memchr(p, 0, len) != NULL) {
		r->bad = true;
		return NULL;
	}
	s = idx_xmalloc(len + 1);
	memcpy(s, p, len);
	s[len] = '\0';
	return s;
}

static bool rd_start(struct rd *r, const void *p, size_t len)
{
	r->p = p;
	r->end = r->p + len;
	r->bad = false;
	if (len < 1 || *r->p != IDX_REC_VERSION)
		return false;
	r->p++;
	return true;
}

static bool rd_done(const struct rd *r)
{
	return !r->bad && r->p == r->end;
}

/* A list of strings: count <= maxn, each <= maxlen. */
static char **get_strlist(struct rd *r, size_t maxn, size_t maxlen, size_t *n_r)
{
	uint64_t n = get_uv_max(r, maxn);
	char **v;
	size_t i;

	*n_r = 0;
	if (r->bad || n == 0 || n > (uint64_t)(r->end - r->p)) {
		if (n != 0)
			r->bad = true;
		return NULL;
	}
	v = idx_xmalloc(sizeof(*v) * n);
	for (i = 0; i < n; i++) {
		v[i] = get_str(r, maxlen);
		if (v[i] == NULL)
			break;
	}
	*n_r = i;
	return v;
}

static void strlist_free(char **v, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(v[i]);
	free(v);
}

/* ---- account ---- */

void rec_account_encode(const struct acct_rec *r, TCXSTR *x)
{
	put_u8(x, IDX_REC_VERSION);
	put_uv(x, r->schema);
	put_uv(x, r->next_uidvalidity);
	put_uv(x, r->highest_modseq);
	put_uv(x, r->next_msgid);
	put_uv(x, r->next_mbid);
	put_uv(x, r->quota_used);
	put_bytes(x, r->secrets, r->secrets_len);
}

void rec_account_clear(struct acct_rec *r)
{
	free(r->secrets);
	memset(r, 0, sizeof(*r));
}

int rec_account_decode(const void *p, size_t len, struct acct_rec *r_r)
{
	struct rd r;
	const uint8_t *s;
	size_t slen;

	memset(r_r, 0, sizeof(*r_r));
	if (!rd_start(&r, p, len))
		return -1;
	r_r->schema = get_uv(&r);
	r_r->next_uidvalidity = get_uv_max(&r, (uint64_t)UINT32_MAX + 1);
	r_r->highest_modseq = get_uv_max(&r, INT64_MAX);
	r_r->next_msgid = get_uv_max(&r, INT64_MAX);
	r_r->next_mbid = get_uv_max(&r, (uint64_t)UINT32_MAX + 1);
	r_r->quota_used = get_uv(&r);
	s = get_bytes(&r, &slen);
	if (!rd_done(&r) || r_r->next_uidvalidity == 0 || r_r->next_msgid == 0 || r_r->next_mbid == 0) {
		memset(r_r, 0, sizeof(*r_r));
		return -1;
	}
	if (slen > 0) {
		r_r->secrets = idx_xmalloc(slen);
		memcpy(r_r->secrets, s, slen);
		r_r->secrets_len = slen;
	}
	return 1;
}

/* ---- mailbox ---- */

void rec_mailbox_encode(const struct idx_mailbox *mb, TCXSTR *x)
{
	size_t i;

	put_u8(x, IDX_REC_VERSION);
	put_str(x, mb->name);
	put_str(x, mb->folder);
	put_uv(x, mb->parent_id);
	put_uv(x, mb->uidvalidity);
	put_uv(x, mb->uidnext);
	put_uv(x, mb->special_use);
	put_uv(x, mb->subscribed ? 1 : 0);
	put_uv(x, mb->highest_modseq);
	put_uv(x, mb->created_modseq);
	put_uv(x, mb->counts.total);
	put_uv(x, mb->counts.deleted);
	put_uv(x, mb->counts.unseen);
	put_uv(x, mb->counts.unread);
	put_uv(x, mb->counts.size);
	put_uv(x, mb->nkeywords);
	for (i = 0; i < mb->nkeywords; i++)
		put_str(x, mb->keywords[i]);
}

int rec_mailbox_decode(const void *p, size_t len, uint32_t mbid, struct idx_mailbox *mb)
{
	struct rd r;

	memset(mb, 0, sizeof(*mb));
	mb->id = mbid;
	if (!rd_start(&r, p, len))
		goto bad;
	mb->name = get_str(&r, IDX_MAILBOX_NAME_MAX);
	mb->folder = get_str(&r, MAILDIR_NAME_MAX);
	mb->parent_id = (uint32_t)get_uv_max(&r, UINT32_MAX);
	mb->uidvalidity = (uint32_t)get_uv_max(&r, UINT32_MAX);
	mb->uidnext = (uint32_t)get_uv_max(&r, UINT32_MAX);
	mb->special_use = (uint32_t)get_uv_max(&r, 31);
	mb->subscribed = get_uv_max(&r, 1) != 0;
	mb->highest_modseq = get_uv_max(&r, INT64_MAX);
	mb->created_modseq = get_uv_max(&r, INT64_MAX);
	mb->counts.total = get_uv(&r);
	mb->counts.deleted = get_uv(&r);
	mb->counts.unseen = get_uv(&r);
	mb->counts.unread = get_uv(&r);
	mb->counts.size = get_uv(&r);
	mb->keywords = get_strlist(&r, IDX_KEYWORDS_PER_MAILBOX, IDX_KEYWORD_MAX, &mb->nkeywords);
	if (!rd_done(&r) || mb->name == NULL || mb->name[0] == '\0' || mb->folder == NULL ||
	    mb->uidvalidity == 0 || mb->uidnext == 0)
		goto bad;
	return 1;
bad:
	idx_mailbox_clear(mb);
	mb->id = mbid;
	return -1;
}

void idx_mailbox_clear(struct idx_mailbox *mb)
{
	if (mb == NULL)
		return;
	free(mb->name);
	free(mb->folder);
	strlist_free(mb->keywords, mb->nkeywords);
	memset(mb, 0, sizeof(*mb));
}

void idx_mailbox_list_free(struct idx_mailbox **list, size_t n)
{
	if (list == NULL || *list == NULL)
		return;
	for (size_t i = 0; i < n; i++)
		idx_mailbox_clear(&(*list)[i]);
	free(*list);
	*list = NULL;
}

static char **strlist_dup(char *const *v, size_t n)
{
	char **d;

	if (n == 0)
		return NULL;
	d = idx_xmalloc(sizeof(*d) * n);
	for (size_t i = 0; i < n; i++)
		d[i] = idx_xstrdup(v[i]);
	return d;
}

void idx_mailbox_copy(struct idx_mailbox *dst, const struct idx_mailbox *src)
{
	*dst = *src;
	dst->name = src->name ? idx_xstrdup(src->name) : NULL;
	dst->folder = src->folder ? idx_xstrdup(src->folder) : NULL;
	dst->keywords = strlist_dup(src->keywords, src->nkeywords);
}

/* ---- message ---- */

void rec_message_encode(const struct idx_message *m, TCXSTR *x)
{
	size_t i;

	put_u8(x, IDX_REC_VERSION);
	put_uv(x, m->id);
	put_uv(x, m->modseq);
	put_uv(x, m->createseq);
	put_uv(x, m->flags);
	put_uv(x, m->nkeywords);
	for (i = 0; i < m->nkeywords; i++)
		put_str(x, m->keywords[i]);
	put_uv(x, m->size);
	put_str(x, m->filename);
	put_sv(x, m->received);
	put_sv(x, m->received_tz);
	put_uv(x, m->prefix_len);
	put_str(x, m->message_id);
	put_str(x, m->subject_base);
	put_uv(x, m->thread_id);
	put_uv(x, m->nparents);
	for (i = 0; i < m->nparents; i++)
		put_uv(x, m->parents[i]);
	put_uv(x, m->tflags);
	put_uv(x, m->mailbox_orig);
	put_uv(x, m->mailbox_destined);
	put_sv(x, m->savedate);
}

int rec_message_decode(const void *p, size_t len, uint32_t mbid, uint32_t uid, struct idx_message *m)
{
	struct rd r;
	uint64_t n;
	int64_t tz;

	memset(m, 0, sizeof(*m));
	if (!rd_start(&r, p, len))
		goto bad;
	m->id = get_uv_max(&r, INT64_MAX);
	m->modseq = get_uv_max(&r, INT64_MAX);
	m->createseq = get_uv_max(&r, INT64_MAX);
	m->flags = (uint32_t)get_uv_max(&r, IDX_FLAGS_ALL);
	m->keywords = get_strlist(&r, IDX_KEYWORDS_PER_MESSAGE, IDX_KEYWORD_MAX, &m->nkeywords);
	m->size = get_uv_max(&r, INT64_MAX);
	m->filename = get_str(&r, 4 + MAILDIR_NAME_MAX);
	m->received = get_sv(&r);
	tz = get_sv(&r);
	if (tz < -24 * 60 || tz > 24 * 60)
		r.bad = true;
	m->received_tz = (int32_t)tz;
	m->prefix_len = (uint32_t)get_uv_max(&r, UINT32_MAX);
	m->message_id = get_str(&r, IDX_MSGID_MAX);
	m->subject_base = get_str(&r, 1 << 16);
	m->thread_id = get_uv_max(&r, INT64_MAX);
	n = get_uv_max(&r, IDX_PARENTS_MAX);
	if (!r.bad && n > 0) {
		m->parents = idx_xmalloc(sizeof(*m->parents) * n);
		for (m->nparents = 0; m->nparents < n && !r.bad; m->nparents++)
			m->parents[m->nparents] = get_uv_max(&r, INT64_MAX);
	}
	m->tflags = (uint32_t)get_uv_max(&r, 15);
	m->mailbox_orig = (uint32_t)get_uv_max(&r, UINT32_MAX);
	m->mailbox_destined = (uint32_t)get_uv_max(&r, UINT32_MAX);
	m->savedate = get_sv(&r);
	if (!rd_done(&r) || m->id == 0 || m->filename == NULL || m->message_id == NULL ||
	    m->subject_base == NULL || m->thread_id == 0 || m->prefix_len > m->size ||
	    (strncmp(m->filename, "new/", 4) != 0 && strncmp(m->filename, "cur/", 4) != 0) ||
	    m->filename[4] == '\0' || strchr(m->filename + 4, '/') != NULL)
		goto bad;
	m->mailbox_id = mbid;
	m->uid = uid;
	return 1;
bad:
	idx_message_clear(m);
	return -1;
}

int rec_message_decode_flags(const void *p, size_t len, uint32_t mbid, uint32_t uid, struct idx_message *m)
{
	struct rd r;

	memset(m, 0, sizeof(*m));
	if (!rd_start(&r, p, len))
		return -1;
	m->id = get_uv_max(&r, INT64_MAX);
	m->modseq = get_uv_max(&r, INT64_MAX);
	m->createseq = get_uv_max(&r, INT64_MAX);
	m->flags = (uint32_t)get_uv_max(&r, IDX_FLAGS_ALL);
	m->keywords = get_strlist(&r, IDX_KEYWORDS_PER_MESSAGE, IDX_KEYWORD_MAX, &m->nkeywords);
	if (r.bad || m->id == 0) {
		idx_message_clear(m);
		return -1;
	}
	m->mailbox_id = mbid;
	m->uid = uid;
	return 1;
}

int rec_message_decode_state(const void *p, size_t len, uint32_t *flags_r, uint64_t *modseq_r)
{
	struct rd r;
	uint64_t id;

	if (!rd_start(&r, p, len))
		return -1;
	id = get_uv_max(&r, INT64_MAX);
	*modseq_r = get_uv_max(&r, INT64_MAX);
	(void)get_uv_max(&r, INT64_MAX); /* createseq */
	*flags_r = (uint32_t)get_uv_max(&r, IDX_FLAGS_ALL);
	return r.bad || id == 0 ? -1 : 1;
}

void idx_message_clear(struct idx_message *m)
{
	if (m == NULL)
		return;
	strlist_free(m->keywords, m->nkeywords);
	free(m->filename);
	free(m->message_id);
	free(m->subject_base);
	free(m->parents);
	memset(m, 0, sizeof(*m));
}

void idx_message_copy(struct idx_message *dst, const struct idx_message *src)
{
	*dst = *src;
	dst->keywords = strlist_dup(src->keywords, src->nkeywords);
	dst->filename = src->filename ? idx_xstrdup(src->filename) : NULL;
	dst->message_id = src->message_id ? idx_xstrdup(src->message_id) : NULL;
	dst->subject_base = src->subject_base ? idx_xstrdup(src->subject_base) : NULL;
	if (src->nparents) {
		dst->parents = idx_xmalloc(sizeof(*dst->parents) * src->nparents);
		memcpy(dst->parents, src->parents, sizeof(*dst->parents) * src->nparents);
	} else {
		dst->parents = NULL;
	}
}

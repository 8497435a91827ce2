/*
 * mime cache: the versioned binary encoding of a parsed message (part tree,
 * envelope, threading inputs) that the index stores, and the writers of IMAP
 * BODYSTRUCTURE / BODY / ENVELOPE from that structure.
 *
 * Record layout (version 1), all integers unsigned LEB128 varints:
 *   'M' 0x01
 *   zigzag(date) | msgid | in_reply_to_id | base_subject | nrefs ref*
 *   envelope | part
 * str      = (len+1) bytes, or 0 for NULL; never contains NUL
 * envelope = date subject in_reply_to message_id, then 6 x (n, n x 4 str)
 * part     = hdr_off hdr_len hdr_vsize body_off body_len body_vsize body_lines
 *            flags type subtype nparams (name value)* id description encoding
 *            md5 location disposition ndisp (name value)* nlang lang*
 *            has_env [envelope] nchildren part*
 * The decoder trusts nothing: each count is bounded by the bytes left, each
 * child range must lie within its parent's body, depth and part counts are
 * bounded by the limits.
 */
#include "index/mime.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

#define CACHE_MAGIC 'M'
#define CACHE_VERSION 1

/* ---- encoding ---- */

static void
put_u(TCXSTR *o, uint64_t v)
{
	unsigned char b[10];
	int n = 0;
	do {
		b[n] = (unsigned char)(v & 0x7f);
		v >>= 7;
		if (v)
			b[n] |= 0x80;
		n++;
	} while (v);
	tcxstrcat(o, b, n);
}

static void
put_s(TCXSTR *o, const char *s)
{
	if (s == NULL) {
		put_u(o, 0);
		return;
	}
	size_t n = strlen(s);
	put_u(o, n + 1);
	tcxstrcat(o, s, (int)n);
}

static void
put_env(TCXSTR *o, const struct mime_envelope *e)
{
	put_s(o, e->date);
	put_s(o, e->subject);
	put_s(o, e->in_reply_to);
	put_s(o, e->message_id);
	for (int i = 0; i < MIME_ENV_NADDR; i++) {
		put_u(o, e->addr[i].n);
		for (uint32_t k = 0; k < e->addr[i].n; k++) {
			const struct mime_addr *a = &e->addr[i].v[k];
			put_s(o, a->name);
			put_s(o, a->adl);
			put_s(o, a->mailbox);
			put_s(o, a->host);
		}
	}
}

static void
put_params(TCXSTR *o, const struct mime_param *p, uint32_t n)
{
	put_u(o, n);
	for (uint32_t i = 0; i < n; i++) {
		put_s(o, p[i].name);
		put_s(o, p[i].value);
	}
}

static void
put_part(TCXSTR *o, const struct mime_part *p)
{
	put_u(o, p->hdr_off);
	put_u(o, p->hdr_len);
	put_u(o, p->hdr_vsize);
	put_u(o, p->body_off);
	put_u(o, p->body_len);
	put_u(o, p->body_vsize);
	put_u(o, p->body_lines);
	put_u(o, p->flags);
	put_s(o, p->type);
	put_s(o, p->subtype);
	put_params(o, p->params, p->nparams);
	put_s(o, p->id);
	put_s(o, p->description);
	put_s(o, p->encoding);
	put_s(o, p->md5);
	put_s(o, p->location);
	put_s(o, p->disposition);
	put_params(o, p->disp_params, p->ndisp_params);
	put_u(o, p->nlanguages);
	for (uint32_t i = 0; i < p->nlanguages; i++)
		put_s(o, p->languages[i]);
	put_u(o, p->env != NULL);
	if (p->env != NULL)
		put_env(o, p->env);
	put_u(o, p->nchildren);
	for (uint32_t i = 0; i < p->nchildren; i++)
		put_part(o, &p->children[i]);
}

int
mime_cache_encode(const struct mime_msg *m, TCXSTR *out)
{
	unsigned char hdr[2] = { CACHE_MAGIC, CACHE_VERSION };
	tcxstrcat(out, hdr, 2);
	put_u(out, ((uint64_t)m->date << 1) ^ (uint64_t)(m->date >> 63)); /* zigzag */
	put_s(out, m->msgid);
	put_s(out, m->in_reply_to_id);
	put_s(out, m->base_subject);
	put_u(out, m->nrefs);
	for (uint32_t i = 0; i < m->nrefs; i++)
		put_s(out, m->refs[i]);
	put_env(out, &m->env);
	put_part(out, &m->root);
	return 1;
}

/* ---- decoding ---- */

struct dec {
	const unsigned char *p, *e;
	TCMPOOL *pool;
	const struct mime_limits *lim;
	unsigned nparts;
	const char *err;
};

static bool
get_u(struct dec *d, uint64_t *v)
{
	uint64_t r = 0;
	for (int shift = 0; shift < 64; shift += 7) {
		if (d->p >= d->e) {
			d->err = "truncated record";
			return false;
		}
		unsigned char b = *d->p++;
		if (shift == 63 && (b & 0x7e)) {
			d->err = "integer overflow";
			return false;
		}
		r |= (uint64_t)(b & 0x7f) << shift;
		if (!(b & 0x80)) {
			*v = r;
			return true;
		}
	}
	d->err = "integer too long";
	return false;
}

/* A count of items that each take at least min_bytes more bytes. */
static bool
get_count(struct dec *d, uint32_t *n, size_t min_bytes)
{
	uint64_t v;
	if (!get_u(d, &v))
		return false;
	if (v > UINT32_MAX || v * min_bytes > (uint64_t)(d->e - d->p)) {
		d->err = "count exceeds record";
		return false;
	}
	*n = (uint32_t)v;
	return true;
}

static bool
get_s(struct dec *d, const char **s)
{
	uint64_t v;
	if (!get_u(d, &v))
		return false;
	if (v == 0) {
		*s = NULL;
		return true;
	}
	v--;
	if (v > (uint64_t)(d->e - d->p) || memchr(d->p, '\0', v) != NULL) {
		d->err = "bad string";
		return false;
	}
	char *r = tcmpoolmalloc(d->pool, v + 1);
	memcpy(r, d->p, v);
	r[v] = '\0';
	d->p += v;
	*s = r;
	return true;
}

static bool
get_env(struct dec *d, struct mime_envelope *e)
{
	if (!get_s(d, &e->date) || !get_s(d, &e->subject) || !get_s(d, &e->in_reply_to) ||
	    !get_s(d, &e->message_id))
		return false;
	for (int i = 0; i < MIME_ENV_NADDR; i++) {
		uint32_t n;
		if (!get_count(d, &n, 4))
			return false;
		e->addr[i].n = n;
		e->addr[i].v = n ? tcmpoolmalloc(d->pool, sizeof(struct mime_addr) * n) : NULL;
		for (uint32_t k = 0; k < n; k++) {
			struct mime_addr *a = &e->addr[i].v[k];
			if (!get_s(d, &a->name) || !get_s(d, &a->adl) || !get_s(d, &a->mailbox) ||
			    !get_s(d, &a->host))
				return false;
		}
	}
	return true;
}

static bool
get_params(struct dec *d, struct mime_param **v, uint32_t *n)
{
	if (!get_count(d, n, 2))
		return false;
	*v = *n ? tcmpoolmalloc(d->pool, sizeof(**v) * *n) : NULL;
	for (uint32_t i = 0; i < *n; i++) {
		if (!get_s(d, &(*v)[i].name) || !get_s(d, &(*v)[i].value))
			return false;
		if ((*v)[i].name == NULL || (*v)[i].value == NULL) {
			d->err = "NIL parameter";
			return false;
		}
	}
	return true;
}

static bool
get_part(struct dec *d, struct mime_part *p, unsigned depth)
{
	uint64_t f[8];
	memset(p, 0, sizeof(*p));
	if (depth > d->lim->max_depth + 1 || ++d->nparts > d->lim->max_parts + 1) {
		d->err = "too many or too deep parts";
		return false;
	}
	for (int i = 0; i < 8; i++)
		if (!get_u(d, &f[i]))
			return false;
	p->hdr_off = f[0], p->hdr_len = f[1], p->hdr_vsize = f[2], p->body_off = f[3];
	p->body_len = f[4], p->body_vsize = f[5], p->body_lines = f[6];
	if (f[7] > UINT32_MAX || p->hdr_len > UINT64_MAX / 4 || p->body_len > UINT64_MAX / 4 ||
	    p->hdr_off > UINT64_MAX / 4 || p->body_off != p->hdr_off + p->hdr_len ||
	    p->hdr_vsize < p->hdr_len || p->body_vsize < p->body_len ||
	    p->hdr_vsize > 2 * p->hdr_len || p->body_vsize > 2 * p->body_len ||
	    p->body_lines > p->body_len) {
		d->err = "bad part offsets";
		return false;
	}
	p->flags = (uint32_t)f[7];
	uint32_t has_env;
	if (!get_s(d, &p->type) || !get_s(d, &p->subtype) ||
	    !get_params(d, &p->params, &p->nparams) || !get_s(d, &p->id) ||
	    !get_s(d, &p->description) || !get_s(d, &p->encoding) || !get_s(d, &p->md5) ||
	    !get_s(d, &p->location) || !get_s(d, &p->disposition) ||
	    !get_params(d, &p->disp_params, &p->ndisp_params) || !get_count(d, &p->nlanguages, 1))
		return false;
	if (p->type == NULL || p->subtype == NULL) {
		d->err = "part without type";
		return false;
	}
	p->languages = p->nlanguages ? tcmpoolmalloc(d->pool, sizeof(char *) * p->nlanguages) : NULL;
	for (uint32_t i = 0; i < p->nlanguages; i++) {
		if (!get_s(d, &p->languages[i]))
			return false;
		if (p->languages[i] == NULL) {
			d->err = "NIL language";
			return false;
		}
	}
	if (!get_count(d, &has_env, 0))
		return false;
	if (has_env > 1) {
		d->err = "bad envelope flag";
		return false;
	}
	if (has_env) {
		p->env = tcmpoolmalloc(d->pool, sizeof(*p->env));
		memset(p->env, 0, sizeof(*p->env));
		if (!get_env(d, p->env))
			return false;
	}
	if (!get_count(d, &p->nchildren, 10))
		return false;
	bool multi = strcmp(p->type, "multipart") == 0;
	if ((p->env != NULL && p->nchildren != 1) || (p->env == NULL && !multi && p->nchildren) ||
	    (p->env != NULL && multi)) {
		d->err = "bad part structure";
		return false;
	}
	p->children = p->nchildren ? tcmpoolmalloc(d->pool, sizeof(*p->children) * p->nchildren)
				   : NULL;
	uint64_t prev_end = p->body_off;
	for (uint32_t i = 0; i < p->nchildren; i++) {
		struct mime_part *c = &p->children[i];
		if (!get_part(d, c, depth + 1))
			return false;
		if (c->hdr_off < prev_end || c->body_off + c->body_len > p->body_off + p->body_len) {
			d->err = "child outside its parent";
			return false;
		}
		prev_end = c->body_off + c->body_len;
	}
	return true;
}

int
mime_cache_decode(const void *buf, size_t len, const struct mime_limits *lim,
		  struct mime_msg **msg_r, const char **err_r)
{
	struct mime_limits deflim;
	if (lim == NULL) {
		mime_limits_init(&deflim);
		lim = &deflim;
	}
	struct dec d = { buf, (const unsigned char *)buf + len, tcmpoolnew(), lim, 0, NULL };
	struct mime_msg *m = tcmpoolmalloc(d.pool, sizeof(*m));
	memset(m, 0, sizeof(*m));
	m->pool = d.pool;
	uint64_t date;
	if (len < 2 || d.p[0] != CACHE_MAGIC || d.p[1] != CACHE_VERSION) {
		d.err = "unknown record version";
		goto fail;
	}
	d.p += 2;
	if (!get_u(&d, &date) || !get_s(&d, &m->msgid) || !get_s(&d, &m->in_reply_to_id) ||
	    !get_s(&d, &m->base_subject) || !get_count(&d, &m->nrefs, 1))
		goto fail;
	if (m->base_subject == NULL) {
		d.err = "bad message fields";
		goto fail;
	}
	m->date = (int64_t)(date >> 1) ^ -(int64_t)(date & 1);
	m->refs = m->nrefs ? tcmpoolmalloc(d.pool, sizeof(char *) * m->nrefs) : NULL;
	for (uint32_t i = 0; i < m->nrefs; i++) {
		if (!get_s(&d, &m->refs[i]))
			goto fail;
		if (m->refs[i] == NULL) {
			d.err = "NIL reference";
			goto fail;
		}
	}
	if (!get_env(&d, &m->env) || !get_part(&d, &m->root, 0))
		goto fail;
	if (m->root.hdr_off != 0) {
		d.err = "root does not start the message";
		goto fail;
	}
	if (d.p != d.e) {
		d.err = "trailing bytes";
		goto fail;
	}
	*msg_r = m;
	return 1;
fail:
	if (err_r != NULL)
		*err_r = d.err ? d.err : "corrupt record";
	tcmpooldel(d.pool);
	*msg_r = NULL;
	return -1;
}

/* ---- IMAP writers ---- */

static void
put_num(TCXSTR *out, const char *pre, uint64_t v, const char *post)
{
	char b[64];
	int n = snprintf(b, sizeof(b), "%s%llu%s", pre, (unsigned long long)v, post);
	if (n > 0 && (size_t)n < sizeof(b))
		tcxstrcat(out, b, n);
}

void
mime_imap_string(const char *s, size_t len, unsigned flags, TCXSTR *out)
{
	if (s == NULL) {
		tcxstrcat(out, "NIL", 3);
		return;
	}
	bool literal = false;
	for (size_t i = 0; i < len && !literal; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c == '\r' || c == '\n' || c == '\0' || (c >= 0x80 && !(flags & MIME_IMAP_UTF8)))
			literal = true;
	}
	if (literal) {
		put_num(out, "{", len, "}\r\n");
		tcxstrcat(out, s, (int)len);
		return;
	}
	tcxstrcat(out, "\"", 1);
	size_t run = 0;
	for (size_t i = 0; i < len; i++) {
		if (s[i] == '"' || s[i] == '\\') {
			tcxstrcat(out, s + run, (int)(i - run));
			tcxstrcat(out, "\\", 1);
			run = i;
		}
	}
	tcxstrcat(out, s + run, (int)(len - run));
	tcxstrcat(out, "\"", 1);
}

static void
str(TCXSTR *out, const char *s, unsigned flags)
{
	mime_imap_string(s, s ? strlen(s) : 0, flags, out);
}

static bool
has_8bit(const char *s)
{
	for (; *s; s++)
		if ((unsigned char)*s >= 0x80)
			return true;
	return false;
}

/* default_charset: a text part without charset gets the RFC 2045 default,
 * as common servers write it. */
static void
write_params(TCXSTR *out, const struct mime_param *v, uint32_t n, unsigned flags,
	     bool default_charset)
{
	bool seen_charset = false;
	if (n == 0 && !default_charset) {
		tcxstrcat(out, "NIL", 3);
		return;
	}
	tcxstrcat(out, "(", 1);
	for (uint32_t i = 0; i < n; i++) {
		if (i > 0)
			tcxstrcat(out, " ", 1);
		if (strcasecmp(v[i].name, "charset") == 0)
			seen_charset = true;
		if (!(flags & MIME_IMAP_UTF8) && has_8bit(v[i].value) && !has_8bit(v[i].name)) {
			/* without UTF8=ACCEPT re-encode as RFC 2231 so the value stays ASCII */
			TCXSTR *nm = tcxstrnew2(v[i].name), *val = tcxstrnew2("utf-8''");
			if (strchr(v[i].name, '*') == NULL)
				tcxstrcat(nm, "*", 1);
			for (const unsigned char *q = (const unsigned char *)v[i].value; *q; q++) {
				if (*q >= 0x80 || *q <= ' ' || strchr("*'%()<>@,;:\\\"/[]?=", *q))
				{
					char hx[4];
					snprintf(hx, sizeof(hx), "%%%02X", *q);
					tcxstrcat(val, hx, 3);
				}
				else
					tcxstrcat(val, q, 1);
			}
			str(out, TCXSTRPTR(nm), flags);
			tcxstrcat(out, " ", 1);
			str(out, TCXSTRPTR(val), flags);
			tcxstrdel(nm);
			tcxstrdel(val);
			continue;
		}
		str(out, v[i].name, flags);
		tcxstrcat(out, " ", 1);
		str(out, v[i].value, flags);
	}
	if (default_charset && !seen_charset)
		tcxstrcat2(out, n > 0 ? " \"charset\" \"us-ascii\"" : "\"charset\" \"us-ascii\"");
	tcxstrcat(out, ")", 1);
}

/* body-fld-dsp SP body-fld-lang SP body-fld-loc */
static void
write_ext_common(TCXSTR *out, const struct mime_part *p, unsigned flags)
{
	tcxstrcat(out, " ", 1);
	if (p->disposition != NULL) {
		tcxstrcat(out, "(", 1);
		str(out, p->disposition, flags);
		tcxstrcat(out, " ", 1);
		write_params(out, p->disp_params, p->ndisp_params, flags, false);
		tcxstrcat(out, ")", 1);
	} else {
		tcxstrcat(out, "NIL", 3);
	}
	tcxstrcat(out, " ", 1);
	if (p->nlanguages == 0) {
		tcxstrcat(out, "NIL", 3);
	} else {
		tcxstrcat(out, "(", 1);
		for (uint32_t i = 0; i < p->nlanguages; i++) {
			if (i > 0)
				tcxstrcat(out, " ", 1);
			str(out, p->languages[i], flags);
		}
		tcxstrcat(out, ")", 1);
	}
	tcxstrcat(out, " ", 1);
	str(out, p->location, flags);
}

static void
write_addrs(TCXSTR *out, const struct mime_addrlist *l, unsigned flags)
{
	if (l->n == 0) {
		tcxstrcat(out, "NIL", 3);
		return;
	}
	tcxstrcat(out, "(", 1);
	for (uint32_t i = 0; i < l->n; i++) {
		const struct mime_addr *a = &l->v[i];
		tcxstrcat(out, "(", 1);
		str(out, a->name, flags);
		tcxstrcat(out, " ", 1);
		str(out, a->adl, flags);
		tcxstrcat(out, " ", 1);
		str(out, a->mailbox, flags);
		tcxstrcat(out, " ", 1);
		str(out, a->host, flags);
		tcxstrcat(out, ")", 1);
	}
	tcxstrcat(out, ")", 1);
}

void
mime_imap_envelope(const struct mime_envelope *e, unsigned flags, TCXSTR *out)
{
	tcxstrcat(out, "(", 1);
	str(out, e->date, flags);
	tcxstrcat(out, " ", 1);
	str(out, e->subject, flags);
	for (int i = 0; i < MIME_ENV_NADDR; i++) {
		const struct mime_addrlist *l = &e->addr[i];
		/* RFC 9051 7.5.2: absent or empty Sender/Reply-To take From's value */
		if ((i == MIME_ENV_SENDER || i == MIME_ENV_REPLY_TO) && l->n == 0)
			l = &e->addr[MIME_ENV_FROM];
		tcxstrcat(out, " ", 1);
		write_addrs(out, l, flags);
	}
	tcxstrcat(out, " ", 1);
	str(out, e->in_reply_to, flags);
	tcxstrcat(out, " ", 1);
	str(out, e->message_id, flags);
	tcxstrcat(out, ")", 1);
}

void
mime_imap_bodystructure(const struct mime_part *p, bool ext, unsigned flags, TCXSTR *out)
{
	bool multi = strcmp(p->type, "multipart") == 0;
	bool msg = p->env != NULL && p->nchildren == 1;
	tcxstrcat(out, "(", 1);
	if (multi) {
		for (uint32_t i = 0; i < p->nchildren; i++)
			mime_imap_bodystructure(&p->children[i], ext, flags, out);
		/* the grammar needs a part: an unparsed multipart shows an empty one */
		if (p->nchildren == 0)
			tcxstrcat2(out, ext ? "(\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL "
					      "\"7bit\" 0 0 NIL NIL NIL NIL)"
					    : "(\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL "
					      "\"7bit\" 0 0)");
		tcxstrcat(out, " ", 1);
		str(out, p->subtype, flags);
		if (ext) {
			tcxstrcat(out, " ", 1);
			write_params(out, p->params, p->nparams, flags, false);
			write_ext_common(out, p, flags);
		}
		tcxstrcat(out, ")", 1);
		return;
	}
	/* a message that was not parsed (encoded, or beyond a limit) is reported
	 * as opaque data: its type would make clients expect an envelope */
	bool opaque = strcmp(p->type, "message") == 0 && !msg &&
		      (strcmp(p->subtype, "rfc822") == 0 || strcmp(p->subtype, "global") == 0);
	bool text = !opaque && strcmp(p->type, "text") == 0;
	str(out, opaque ? "application" : p->type, flags);
	tcxstrcat(out, " ", 1);
	str(out, opaque ? "octet-stream" : p->subtype, flags);
	tcxstrcat(out, " ", 1);
	write_params(out, p->params, p->nparams, flags, text);
	tcxstrcat(out, " ", 1);
	str(out, p->id, flags);
	tcxstrcat(out, " ", 1);
	str(out, p->description, flags);
	tcxstrcat(out, " ", 1);
	str(out, p->encoding ? p->encoding : "7bit", flags);
	put_num(out, " ", p->body_vsize, "");
	if (msg) {
		tcxstrcat(out, " ", 1);
		mime_imap_envelope(p->env, flags, out);
		tcxstrcat(out, " ", 1);
		mime_imap_bodystructure(&p->children[0], ext, flags, out);
		put_num(out, " ", p->body_lines, "");
	} else if (text) {
		put_num(out, " ", p->body_lines, "");
	}
	if (ext) {
		tcxstrcat(out, " ", 1);
		str(out, p->md5, flags);
		write_ext_common(out, p, flags);
	}
	tcxstrcat(out, ")", 1);
}

/*
 * smtp_rules: rulesets (compiled once per config) and the header parser.
 * Header values are unfolded in one pass over the field's bytes so a header
 * of many continuation lines costs linear time; the number of fields is
 * capped because every field may be matched against every pattern.
 */
#define _GNU_SOURCE 1
#define PCRE2_CODE_UNIT_WIDTH 8
#include "daemon/smtp_rules.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include <pcre2.h>

#include "daemon/util.h"

#define ITEM(arr, type, i) (&((const type *)(arr).v)[i])

struct rs_compiled {
	const struct config_ruleset *rs;
	pcre2_code *from;
	pcre2_code **hkey, **hval;
	size_t nh;
	bool bad; /* a pattern did not compile: the ruleset never matches */
};

struct smtp_rules {
	const struct config *cfg;
	struct rs_compiled *v;
	size_t n;
	pcre2_match_context *mctx;
	pcre2_match_data *md;
	bool limit_hit;
};

/* ---- header fields ---- */

static bool
is_wsp(char c)
{
	return c == ' ' || c == '\t';
}

/* The end of the line starting at i (index of its LF, or len). */
static size_t
line_end(const char *p, size_t len, size_t i)
{
	const char *nl = memchr(p + i, '\n', len - i);

	return nl ? (size_t)(nl - p) : len;
}

static void
lower(char *s)
{
	for (; *s; s++)
		*s = (char)tolower((unsigned char)*s);
}

size_t
smtp_hfields_parse(const char *p, size_t len, struct smtp_hfield **fields_r)
{
	struct smtp_hfield *v = NULL;
	size_t n = 0, cap = 0, i = 0;

	*fields_r = NULL;
	while (i < len && n < SMTP_RULES_MAX_FIELDS) {
		size_t le = line_end(p, len, i);
		size_t text_end = le > i && p[le - 1] == '\r' ? le - 1 : le;
		if (text_end == i)
			break; /* the empty line ends the header */
		const char *colon = memchr(p + i, ':', text_end - i);
		if (colon == NULL || is_wsp(p[i])) {
			i = le < len ? le + 1 : len; /* no field here (or a stray continuation) */
			continue;
		}
		/* The field runs over the continuation lines that follow. */
		size_t fend = le;
		while (fend < len && fend + 1 < len && is_wsp(p[fend + 1]))
			fend = line_end(p, len, fend + 1);
		size_t vstart = (size_t)(colon - p) + 1;
		char *val = xmalloc(fend - vstart + 1), *o = val;
		for (size_t k = vstart; k < fend; k++)
			if (p[k] != '\r' && p[k] != '\n')
				*o++ = p[k];
		*o = '\0';
		/* trim */
		char *s = val;
		while (is_wsp(*s))
			s++;
		while (o > s && is_wsp(o[-1]))
			*--o = '\0';
		memmove(val, s, (size_t)(o - s) + 1);
		if (n == cap) {
			cap = cap ? 2 * cap : 16;
			v = xrealloc(v, cap * sizeof(*v));
		}
		v[n].name = xstrndup(p + i, (size_t)(colon - (p + i)));
		v[n].value = val;
		lower(v[n].name);
		lower(v[n].value);
		n++;
		i = fend < len ? fend + 1 : len;
	}
	*fields_r = v;
	return n;
}

void
smtp_hfields_free(struct smtp_hfield **fieldsp, size_t n)
{
	struct smtp_hfield *f = *fieldsp;

	if (f == NULL)
		return;
	for (size_t i = 0; i < n; i++) {
		free(f[i].name);
		free(f[i].value);
	}
	free(f);
	*fieldsp = NULL;
}

/* ---- rulesets ---- */

static pcre2_code *
compile(const char *pattern, bool caseless, const char *key, smtp_rules_report_fn *report, void *arg)
{
	int errcode;
	PCRE2_SIZE erroff;
	uint32_t opts = PCRE2_UTF | PCRE2_MATCH_INVALID_UTF | (caseless ? PCRE2_CASELESS : 0);
	pcre2_code *re = pcre2_compile((PCRE2_SPTR)pattern, PCRE2_ZERO_TERMINATED, opts, &errcode, &erroff, NULL);

	if (re == NULL) {
		char msg[256], full[300];
		pcre2_get_error_message(errcode, (PCRE2_UCHAR *)msg, sizeof(msg));
		snprintf(full, sizeof(full), "%s at offset %zu", msg, (size_t)erroff);
		if (report != NULL)
			report(arg, key, pattern, full);
		return NULL;
	}
	/* W^X hardening can make the JIT fail: the interpreter still works. */
	(void)pcre2_jit_compile(re, PCRE2_JIT_COMPLETE);
	return re;
}

struct smtp_rules *
smtp_rules_new(const struct config *cfg, smtp_rules_report_fn *report, void *arg)
{
	struct smtp_rules *r = xcalloc(1, sizeof(*r));
	size_t n = 0;

	r->cfg = cfg;
	r->mctx = pcre2_match_context_create(NULL);
	r->md = pcre2_match_data_create(1, NULL);
	if (r->mctx == NULL || r->md == NULL)
		abort(); /* allocation failure, as everywhere */
	pcre2_set_match_limit(r->mctx, SMTP_RULES_MATCH_LIMIT);
	for (size_t i = 0; i < cfg->dom.accounts.n; i++) {
		const struct config_account *a = ITEM(cfg->dom.accounts, struct config_account, i);
		for (size_t j = 0; j < a->destinations.n; j++)
			n += ITEM(a->destinations, struct config_destination, j)->rulesets.n;
	}
	r->v = xcalloc(n ? n : 1, sizeof(*r->v));
	for (size_t i = 0; i < cfg->dom.accounts.n; i++) {
		const struct config_account *a = ITEM(cfg->dom.accounts, struct config_account, i);
		for (size_t j = 0; j < a->destinations.n; j++) {
			const struct config_destination *d = ITEM(a->destinations, struct config_destination, j);
			for (size_t k = 0; k < d->rulesets.n; k++) {
				const struct config_ruleset *rs = ITEM(d->rulesets, struct config_ruleset, k);
				struct rs_compiled *c = &r->v[r->n++];
				c->rs = rs;
				if (rs->smtp_mail_from_regexp != NULL && rs->smtp_mail_from_regexp[0] != '\0') {
					c->from = compile(rs->smtp_mail_from_regexp, true, "SMTPMailFromRegexp", report, arg);
					c->bad |= c->from == NULL;
				}
				c->nh = rs->headers_regexp.n;
				c->hkey = xcalloc(c->nh ? c->nh : 1, sizeof(*c->hkey));
				c->hval = xcalloc(c->nh ? c->nh : 1, sizeof(*c->hval));
				for (size_t h = 0; h < c->nh; h++) {
					c->hkey[h] = compile(rs->headers_regexp.keys[h], false, "HeadersRegexp", report, arg);
					c->hval[h] = compile(rs->headers_regexp.vals[h], false, "HeadersRegexp", report, arg);
					c->bad |= c->hkey[h] == NULL || c->hval[h] == NULL;
				}
			}
		}
	}
	return r;
}

void
smtp_rules_free(struct smtp_rules **rp)
{
	struct smtp_rules *r = *rp;

	if (r == NULL)
		return;
	for (size_t i = 0; i < r->n; i++) {
		struct rs_compiled *c = &r->v[i];
		pcre2_code_free(c->from);
		for (size_t j = 0; j < c->nh; j++) {
			pcre2_code_free(c->hkey[j]);
			pcre2_code_free(c->hval[j]);
		}
		free(c->hkey);
		free(c->hval);
	}
	free(r->v);
	pcre2_match_context_free(r->mctx);
	pcre2_match_data_free(r->md);
	free(r);
	*rp = NULL;
}

const struct config *
smtp_rules_config(const struct smtp_rules *r)
{
	return r->cfg;
}

static bool
re_match(struct smtp_rules *r, const pcre2_code *re, const char *s)
{
	int m = pcre2_match(re, (PCRE2_SPTR)s, strlen(s), 0, 0, r->md, r->mctx);

	if (m == PCRE2_ERROR_MATCHLIMIT || m == PCRE2_ERROR_DEPTHLIMIT || m == PCRE2_ERROR_HEAPLIMIT)
		r->limit_hit = true;
	return m >= 0;
}

/* Whether domain is want or a subdomain of it (ASCII case ignored). */
static bool
domain_within(const char *domain, const char *want)
{
	size_t dl = strlen(domain), wl = strlen(want);

	if (dl == wl)
		return strcasecmp(domain, want) == 0;
	return dl > wl && domain[dl - wl - 1] == '.' && strcasecmp(domain + dl - wl, want) == 0;
}

static bool
ruleset_match(struct smtp_rules *r, const struct rs_compiled *c, const char *mail_from,
    const char *const *verified, size_t nverified, const struct smtp_hfield *h, size_t nh)
{
	const struct config_ruleset *rs = c->rs;
	bool any = false;

	if (c->bad)
		return false;
	if (rs->verified_domain != NULL && rs->verified_domain[0] != '\0') {
		bool found = false;
		for (size_t i = 0; i < nverified && !found; i++)
			found = domain_within(verified[i], rs->verified_domain);
		if (!found)
			return false;
		any = true;
	}
	if (c->from != NULL) {
		if (!re_match(r, c->from, mail_from))
			return false;
		any = true;
	}
	for (size_t k = 0; k < c->nh; k++) {
		bool found = false;
		for (size_t i = 0; i < nh && !found; i++)
			found = re_match(r, c->hkey[k], h[i].name) && re_match(r, c->hval[k], h[i].value);
		if (!found)
			return false;
		any = true;
	}
	return any;
}

const char *
smtp_rules_mailbox(struct smtp_rules *r, const struct config_destination *dest, const char *mail_from,
    const char *const *verified, size_t nverified, const struct smtp_hfield *fields, size_t nfields,
    bool *limit_hit_r)
{
	const char *mb = NULL;

	r->limit_hit = false;
	for (size_t k = 0; k < dest->rulesets.n && mb == NULL; k++) {
		const struct config_ruleset *rs = ITEM(dest->rulesets, struct config_ruleset, k);
		for (size_t i = 0; i < r->n; i++) {
			if (r->v[i].rs != rs)
				continue;
			if (ruleset_match(r, &r->v[i], mail_from, verified, nverified, fields, nfields))
				mb = rs->mailbox && rs->mailbox[0] ? rs->mailbox : "INBOX";
			break;
		}
	}
	if (limit_hit_r != NULL)
		*limit_hit_r = r->limit_hit;
	return mb;
}

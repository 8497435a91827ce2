/*
 * smtp_data: message input for DATA (RFC 5321 4.1.1.4) and BDAT (RFC 3030).
 * The message streams into one spool file (a maildir writer, taken ready
 * from the server's pool in <DataDir>/tmp/.pool, else created in
 * <DataDir>/tmp; never whole in memory) behind the Received header we prepend (its
 * length is the message's prefix_len). DATA ends only at CRLF "." CRLF
 * (strict mode of the reader); a message holding a bare CR or LF is refused,
 * which closes SMTP smuggling and follows RFC 5321 2.3.8. BDAT chunks are
 * taken as given (the spool writer turns a bare CR or LF into CRLF). A
 * message over the size limit is read to its end, answered 552 and nothing
 * is stored. Only the header section is kept in memory, capped, and only
 * when a recipient's rulesets need it.
 *
 * Checks of inbound mail (the SMTP port, when the server has a resolver).
 * SPF (RFC 7208) starts at MAIL FROM and runs while the client sends;
 * DKIM (RFC 6376) needs the whole message and starts on the spool file at
 * the end of the data. The delivery waits for both (reading stays off, as
 * during delivery), at most SMTP_VERIFY_MAX_MS; what is missing then counts
 * as temperror. The results go into an Authentication-Results (RFC 8601)
 * and a Received-SPF (RFC 7208 9.1) header above our Received header, and
 * their verified domains to the rulesets (VerifiedDomain).
 * Placing those headers: they must come before the message, but exist only
 * after it, and a message file is never rewritten once delivered.
 * A message of up to SMTP_HOLD_MAX bytes (our Received, then the data)
 * whose lines all end in CRLF, the common case, is held in memory
 * instead: the spool file is created at the start as always but stays
 * empty; DKIM reads the held bytes from an anonymous memory file
 * (memfd_create, no file system entry), and once the checks are done the
 * spool file gets our new headers, then the held bytes, in one pass
 * (write_held). The held bytes cost up to SMTP_HOLD_MAX of memory per
 * message under way, beside the spool writer's own 64 KiB buffer.
 * A larger message, or one in which a BDAT chunk has a bare CR or LF (the
 * writer normalizes those), goes to the spool file as it arrives (the held
 * bytes first: spool_spill). Once the checks are done that file is copied
 * behind the new headers into a second spool file that replaces it
 * (prefix_len then covers all our headers). The copy costs one sequential
 * read and write of the message through the page cache, 64 KiB at a time
 * (bounded memory), at most 1 MiB per loop turn so a large message does
 * not stall other connections, and no fsync: the delivery's sync covers
 * the new file. Measured here: 10 MB in 9-12 ms. For a small message the
 * cost is mostly creating and removing the second file, not the bytes:
 * 0.2-0.3 ms of CPU per 4 KB message on ext4, which the held path saves.
 * Both ways leave out the message's Authentication-Results fields that
 * carry our authserv-id (RFC 8601 5, see authres_filter_run); DKIM has
 * verified the unfiltered bytes by then, and every other byte is written
 * unchanged. A placeholder written first and filled in later would have to
 * guess the size of the headers and leave padding in the message, so it is
 * not done.
 */
#define _GNU_SOURCE 1
#include "daemon/smtp_private.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>

#include "daemon/dkim.h"
#include "daemon/dns.h"
#include "daemon/idn.h"
#include "daemon/log.h"
#include "daemon/spf.h"
#include "daemon/spool.h"
#include "maildir/maildir.h"

/* Bytes of the message header kept for ruleset matching. */
#define SMTP_HEADER_CAPTURE_MAX (64 * 1024)
/* The wait for the checks once the data is in; then what is missing is a temperror. */
#define SMTP_VERIFY_MAX_MS 20000
/* DKIM signatures reported in Authentication-Results (the verifier checks 5). */
#define SMTP_VERIFY_MAX_SIGS 10
/* Verified domains kept: the SPF domain and the passing signatures' d=. */
#define SMTP_VERIFY_MAX_DOMAINS (SMTP_VERIFY_MAX_SIGS + 1)
/* Bytes of one value from the client or the DNS in our headers. */
#define SMTP_HDR_VALUE_MAX 256
/* Our Authentication-Results and Received-SPF together. */
#define SMTP_VERIFY_HDR_MAX (32 * 1024)
/* The spool file is copied in chunks of this size, this much per loop turn. */
#define SMTP_COPY_CHUNK (64 * 1024)
#define SMTP_COPY_PER_TURN (1024 * 1024)
/* A checked message (our Received and the data) up to this size is held in memory (see the top). */
#define SMTP_HOLD_MAX (128 * 1024 - 1)

/* One DKIM signature's result, copied from the verifier. */
struct verify_sig {
	enum dkim_status status;
	char *domain, *selector, *b_prefix;
	const char *reason; /* static text (dkim.h), "" on pass */
	bool testing;
};

struct smtp_verify {
	struct spf_check *spf;     /* in flight, else NULL */
	bool spf_helo;             /* the identity is the HELO name (null reverse path) */
	char *spf_domain;          /* canonical; NULL: nothing to check (spf=none) */
	enum spf_result spf_result;
	char *spf_mechanism;       /* NULL when none */
	char *spf_problem;         /* NULL when none */
	struct dkim_verify *dkim;  /* in flight, else NULL */
	const char *dkim_err;      /* static: the DKIM check failed as a whole (temperror) */
	struct verify_sig sigs[SMTP_VERIFY_MAX_SIGS];
	size_t nsigs;
	struct mbuf held;          /* the message while it is held in memory (see the top) */
	bool spilled;              /* it went to the spool file instead */
	int fd;                    /* what DKIM reads (the spool file, for the copy too, or the memory file); -1 */
	struct maildir_writer *copy; /* the new spool file while it is written */
	struct authres_filter *authres; /* drops forged Authentication-Results during the copy */
	uint64_t copied;           /* bytes of the old one copied */
	uint32_t hdr_len;          /* our headers at the start of the new one */
	int64_t copy_start;        /* mono_ms() */
	bool waiting;              /* the data is in: the delivery waits for the checks */
	char *domains[SMTP_VERIFY_MAX_DOMAINS];
	size_t ndomains;
	struct smtp_conn *c;
};

static void authres_filter_free(struct authres_filter **fp);

static uint64_t
max_size(const struct smtp_conn *c)
{
	return (uint64_t)smtp_cfg(c)->st.limits.max_message_size;
}

/* Whether the message is held in memory (see the top) rather than written to the spool file. */
static bool
spool_held(const struct smtp_txn *t)
{
	return t->verify != NULL && !t->verify->spilled;
}

/*
 * Whether n bytes at p keep the held message's lines ending in CRLF: no
 * bare CR or LF, given the held bytes before them (a CR at the end of
 * the held bytes waits for its LF).
 */
static bool
crlf_clean(const struct mbuf *held, const char *p, size_t n)
{
	bool cr = held->len > 0 && held->data[held->len - 1] == '\r';

	for (size_t i = 0; i < n; i++) {
		if ((p[i] == '\n') != cr)
			return false;
		cr = p[i] == '\r';
	}
	return true;
}

/* The message stops being held: what is held goes to the spool file. 1, or -1. */
static int
spool_spill(struct smtp_txn *t, char *err, size_t errlen)
{
	struct smtp_verify *v = t->verify;
	int r = 1;

	v->spilled = true;
	if (v->held.len > 0)
		r = maildir_writer_write(t->w, v->held.data, v->held.len, err, errlen);
	mbuf_clear(&v->held);
	return r;
}

/* Add n bytes to the message: held while it fits (see the top), else written to the spool file. 1, or -1. */
static int
spool_write(struct smtp_txn *t, const char *p, size_t n, char *err, size_t errlen)
{
	if (spool_held(t)) {
		if (crlf_clean(&t->verify->held, p, n) && mbuf_add(&t->verify->held, p, n) == 0)
			return 1;
		if (spool_spill(t, err, errlen) < 0)
			return -1;
	}
	return maildir_writer_write(t->w, p, n, err, errlen);
}

static int
write_received(struct smtp_conn *c, char *err, size_t errlen)
{
	struct smtp_txn *t = c->txn;
	char date[64], proto[16];
	struct tm tm;
	time_t now = time(NULL);
	struct mbuf h;
	int r;

	localtime_r(&now, &tm);
	strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S %z", &tm);
	snprintf(proto, sizeof(proto), "%s%s%s", !(c->flags & SMTP_F_ESMTP) ? "SMTP" : t->smtputf8 ? "UTF8SMTP" : "ESMTP",
	    (c->flags & SMTP_F_TLS) ? "S" : "", (c->flags & SMTP_F_AUTHED) ? "A" : "");
	mbuf_init(&h, 4096);
	mbuf_printf(&h, "Received: from %s ([%s])\r\n\tby %s (mox) with %s id %llx", c->helo ? c->helo : "unknown",
	    c->ci->remote_ip, c->hostname, proto, (unsigned long long)c->ci->cid);
	/* One recipient only: naming several would tell each about the others. */
	if (t->nrcpts == 1)
		mbuf_printf(&h, "\r\n\tfor <%s>", t->rcpts[0].addr);
	if (mbuf_printf(&h, "; %s\r\n", date) < 0) {
		mbuf_clear(&h);
		snprintf(err, errlen, "received header too long");
		return -1;
	}
	r = spool_write(t, h.data, h.len, err, errlen);
	t->prefix_len = (uint32_t)h.len;
	mbuf_clear(&h);
	return r;
}

/*
 * A new spool file: a ready one from the server's pool (spool.h; creating a
 * file is disk metadata work, kept off this thread), else, when the pool has
 * none, created here in <DataDir>/tmp (and the directory with it) as
 * before. 1, or -1 (logged).
 */
static int
open_spool_file(struct smtp_conn *c, struct maildir_writer **w_r)
{
	char *dir;
	char err[512];
	int r = -1;

	if (spool_take(server_spool(c->srv), c->hostname, w_r) > 0)
		return 1;
	dir = xasprintf("%s/tmp", smtp_cfg(c)->data_dir);
	if (mkdir_p(dir, 0700) < 0)
		log_error(SMTP_PKG, c->ci->cid, "cannot create spool directory", "dir", dir, "err", strerror(errno));
	else if (maildir_writer_open(w_r, dir, c->hostname, err, sizeof(err)) < 0)
		log_error(SMTP_PKG, c->ci->cid, "cannot create spool file", "err", err);
	else
		r = 1;
	free(dir);
	return r;
}

/* Open the spool file and write the Received header. 1, or -1 (logged). */
static int
begin_message(struct smtp_conn *c)
{
	struct smtp_txn *t = c->txn;
	char err[512];

	if (open_spool_file(c, &t->w) < 0)
		return -1;
	if (write_received(c, err, sizeof(err)) < 0) {
		log_error(SMTP_PKG, c->ci->cid, "writing spool file", "err", err);
		maildir_writer_free(&t->w);
		return -1;
	}
	t->want_header = smtp_deliver_want_header(c);
	mbuf_init(&t->header, SMTP_HEADER_CAPTURE_MAX);
	t->hdr_state = 2; /* as if after a CRLF: an empty header is a message starting with CRLF */
	t->size = 0;
	return 1;
}

/* Keep the header section (through the empty line) for rulesets. */
static void
capture_header(struct smtp_txn *t, const char *p, size_t n)
{
	size_t i;

	if (!t->want_header || t->header_done)
		return;
	for (i = 0; i < n && !t->header_done; i++) {
		char ch = p[i];
		if (ch == '\n')
			t->header_done = t->hdr_state >= 2;
		if (ch == '\r')
			t->hdr_state = t->hdr_state == 2 ? 3 : 1;
		else if (ch == '\n')
			t->hdr_state = 2;
		else
			t->hdr_state = 0;
	}
	if (mbuf_add(&t->header, p, i) < 0)
		t->header_done = true; /* over the cap: match on what we have */
}

static void
write_chunk(struct smtp_conn *c, const char *p, size_t n)
{
	struct smtp_txn *t = c->txn;
	char err[512];

	if (n == 0 || t->failed || t->w == NULL)
		return;
	capture_header(t, p, n);
	if (spool_write(t, p, n, err, sizeof(err)) < 0) {
		log_error(SMTP_PKG, c->ci->cid, "writing spool file", "err", err);
		t->failed = true;
	}
}

/* ---- SPF and DKIM of inbound mail ---- */

void
smtp_verify_free(struct smtp_verify **vp)
{
	struct smtp_verify *v = *vp;

	if (v == NULL)
		return;
	spf_cancel(v->spf);
	dkim_verify_free(&v->dkim);
	maildir_writer_free(&v->copy); /* unlinks an unfinished copy */
	authres_filter_free(&v->authres);
	mbuf_clear(&v->held);
	if (v->fd >= 0)
		close(v->fd);
	free(v->spf_domain);
	free(v->spf_mechanism);
	free(v->spf_problem);
	for (size_t i = 0; i < v->nsigs; i++) {
		free(v->sigs[i].domain);
		free(v->sigs[i].selector);
		free(v->sigs[i].b_prefix);
	}
	for (size_t i = 0; i < v->ndomains; i++)
		free(v->domains[i]);
	free(v);
	*vp = NULL;
}

size_t
smtp_verify_domains(const struct smtp_txn *t, const char *const **domains_r)
{
	if (t->verify == NULL || t->verify->ndomains == 0) {
		*domains_r = NULL;
		return 0;
	}
	*domains_r = (const char *const *)t->verify->domains;
	return t->verify->ndomains;
}

/* A copy of a value from the DNS or the message, capped for our headers. */
static char *
value_dup(const char *s)
{
	return s != NULL && s[0] != '\0' ? xstrndup(s, strnlen(s, SMTP_HDR_VALUE_MAX)) : NULL;
}

static void verify_check_done(struct smtp_conn *c);

static void
spf_done(const struct spf_outcome *o, void *arg)
{
	struct smtp_verify *v = arg;

	v->spf = NULL;
	v->spf_result = o->result;
	v->spf_mechanism = value_dup(o->mechanism);
	v->spf_problem = value_dup(o->problem);
	log_debug(SMTP_PKG, v->c->ci->cid, "spf checked", "domain", v->spf_domain, "result",
	    spf_result_name(o->result), "mechanism", o->mechanism ? o->mechanism : "", "problem",
	    o->problem ? o->problem : "");
	verify_check_done(v->c);
}

/* The HELO name as a canonical domain in canon (IDN_BUFSIZE); false for a literal or an IP. */
static bool
helo_domain(const char *helo, char *canon)
{
	unsigned char ip[16];

	if (helo == NULL || helo[0] == '\0' || helo[0] == '[' || inet_pton(AF_INET, helo, ip) == 1 ||
	    inet_pton(AF_INET6, helo, ip) == 1)
		return false;
	return idn_domain_canon(helo, strlen(helo), canon, IDN_BUFSIZE, NULL, 0) > 0;
}

void
smtp_verify_start(struct smtp_conn *c, const char *mail_domain)
{
	struct dns *dns = server_dns(c->srv);
	struct smtp_txn *t = c->txn;
	struct smtp_verify *v;
	struct spf_request req;
	char canon[IDN_BUFSIZE];
	char *sender;

	if (dns == NULL)
		return;
	v = xcalloc(1, sizeof(*v));
	v->c = c;
	v->fd = -1;
	mbuf_init(&v->held, SMTP_HOLD_MAX);
	t->verify = v;
	memset(&req, 0, sizeof(req));
	if (inet_pton(AF_INET, c->ci->remote_ip, req.ip) == 1)
		req.family = AF_INET;
	else if (inet_pton(AF_INET6, c->ci->remote_ip, req.ip) == 1)
		req.family = AF_INET6;
	else
		return; /* no IP to check: spf=none */
	/* RFC 7208 2.4: for "<>" the identity is postmaster@ the HELO name. */
	if (mail_domain[0] != '\0') {
		const char *at = strrchr(t->mail_from, '@');
		v->spf_domain = xstrdup(mail_domain);
		sender = xasprintf("%.*s@%s", (int)(at ? at - t->mail_from : 0), t->mail_from, mail_domain);
	} else if (t->mail_from[0] == '\0' && helo_domain(c->helo, canon)) {
		v->spf_helo = true;
		v->spf_domain = xstrdup(canon);
		sender = xasprintf("postmaster@%s", canon);
	} else {
		return; /* an address literal, or a HELO that is no domain: spf=none */
	}
	req.domain = v->spf_domain;
	req.sender = sender;
	req.helo = c->helo;
	req.receiver = c->hostname;
	v->spf = spf_check_start(dns, &req, spf_done, v);
	free(sender);
}

static void
dkim_done(void *arg, const struct dkim_result *res, size_t n, const char *err)
{
	struct smtp_verify *v = arg;

	if (err != NULL) {
		log_error(SMTP_PKG, v->c->ci->cid, "dkim verification cannot read the message", "err", err);
		v->dkim_err = "cannot read message";
	}
	for (size_t i = 0; i < n && v->nsigs < SMTP_VERIFY_MAX_SIGS; i++) {
		struct verify_sig *s = &v->sigs[v->nsigs++];
		s->status = res[i].status;
		s->domain = value_dup(res[i].domain);
		s->selector = value_dup(res[i].selector);
		s->b_prefix = value_dup(res[i].b_prefix);
		s->reason = res[i].reason ? res[i].reason : "";
		s->testing = res[i].testing;
		log_debug(SMTP_PKG, v->c->ci->cid, "dkim checked", "domain", res[i].domain, "selector", res[i].selector,
		    "result", dkim_status_name(res[i].status), "reason", s->reason);
	}
	dkim_verify_free(&v->dkim); /* the results are copied */
	verify_check_done(v->c);
}

/* ---- our headers ---- */

/* Whether v may stand unquoted: labels of letters, digits, '-' and '_' joined by single dots
 * (a dot-atom for Received-SPF, a token for Authentication-Results). */
static bool
plain_value(const char *v)
{
	bool label = false;

	for (; *v; v++) {
		char ch = *v;
		if (ch == '.') {
			if (!label)
				return false;
			label = false;
		} else if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '-' ||
		    ch == '_') {
			label = true;
		} else {
			return false;
		}
	}
	return label;
}

/*
 * Append v as is or as a quoted-string, at most SMTP_HDR_VALUE_MAX bytes of
 * it. Control characters become '?', and so do non-ASCII bytes unless the
 * message is SMTPUTF8 (RFC 6532 headers).
 */
static void
add_value(struct mbuf *b, const char *v, bool utf8)
{
	size_t n = strnlen(v, SMTP_HDR_VALUE_MAX);

	if (n < SMTP_HDR_VALUE_MAX && plain_value(v)) {
		mbuf_add(b, v, n);
		return;
	}
	mbuf_adds(b, "\"");
	for (size_t i = 0; i < n; i++) {
		unsigned char ch = (unsigned char)v[i];
		if (ch == '"' || ch == '\\')
			mbuf_add(b, "\\", 1);
		if (ch < 0x20 || ch == 0x7f || (ch >= 0x80 && !utf8))
			ch = '?';
		mbuf_add(b, &ch, 1);
	}
	mbuf_adds(b, "\"");
}

/* A header field being built: words are folded to keep lines near 78 columns. */
struct hdr {
	struct mbuf *b;
	struct mbuf word;
	size_t col;
	bool utf8;
};

static void
hdr_start(struct hdr *h, struct mbuf *b, const char *name, bool utf8)
{
	h->b = b;
	h->utf8 = utf8;
	mbuf_init(&h->word, 2 * SMTP_HDR_VALUE_MAX + 128);
	mbuf_printf(b, "%s:", name);
	h->col = strlen(name) + 1;
}

/* Put the word collected in h->word: on a new line when newline or when it does not fit. */
static void
hdr_put(struct hdr *h, bool newline)
{
	if (newline || (h->col > 8 && h->col + 1 + h->word.len > 78)) {
		mbuf_adds(h->b, "\r\n\t");
		h->col = 8;
	} else {
		mbuf_adds(h->b, " ");
		h->col++;
	}
	mbuf_add(h->b, h->word.data, h->word.len);
	h->col += h->word.len;
	mbuf_reset(&h->word);
}

/* A word of our own text (no client or DNS data unless through add_value). */
static void hdr_word(struct hdr *h, bool newline, const char *fmt, ...) MOX_PRINTF(3, 4);
static void
hdr_word(struct hdr *h, bool newline, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	mbuf_vprintf(&h->word, fmt, ap);
	va_end(ap);
	hdr_put(h, newline);
}

/* key=value with the value quoted when needed; sep (";" or "") after it. */
static void
hdr_kv(struct hdr *h, bool newline, const char *key, const char *value, const char *sep)
{
	mbuf_printf(&h->word, "%s=", key);
	add_value(&h->word, value, h->utf8);
	mbuf_adds(&h->word, sep);
	hdr_put(h, newline);
}

/* End a resinfo or key-value pair: ";" right after the last word. */
static void
hdr_semicolon(struct hdr *h)
{
	mbuf_adds(h->b, ";");
	h->col++;
}

static void
hdr_end(struct hdr *h)
{
	mbuf_adds(h->b, "\r\n");
	mbuf_clear(&h->word);
}

/* RFC 8601: one resinfo for SPF and one per DKIM signature ("none" without). */
static void
write_authres(struct smtp_conn *c, struct mbuf *b)
{
	struct smtp_verify *v = c->txn->verify;
	struct hdr h;

	hdr_start(&h, b, "Authentication-Results", c->txn->smtputf8);
	hdr_word(&h, false, "%s;", c->hostname);
	if (v->spf_domain == NULL) {
		hdr_word(&h, true, "spf=none;");
	} else {
		hdr_word(&h, true, "spf=%s", spf_result_name(v->spf_result));
		if (v->spf_problem != NULL && (v->spf_result == SPF_TEMPERROR || v->spf_result == SPF_PERMERROR))
			hdr_kv(&h, false, "reason", v->spf_problem, "");
		hdr_kv(&h, false, v->spf_helo ? "smtp.helo" : "smtp.mailfrom", v->spf_domain, ";");
	}
	if (v->nsigs == 0 && v->dkim_err != NULL) {
		hdr_word(&h, true, "dkim=temperror");
		hdr_kv(&h, false, "reason", v->dkim_err, "");
	} else if (v->nsigs == 0) {
		hdr_word(&h, true, "dkim=none");
	}
	for (size_t i = 0; i < v->nsigs; i++) {
		const struct verify_sig *s = &v->sigs[i];
		if (i > 0)
			hdr_semicolon(&h);
		hdr_word(&h, true, "dkim=%s", dkim_status_name(s->status));
		if (s->testing)
			hdr_word(&h, false, "(test key)");
		if (s->reason[0] != '\0')
			hdr_kv(&h, false, "reason", s->reason, "");
		if (s->domain != NULL)
			hdr_kv(&h, false, "header.d", s->domain, "");
		if (s->selector != NULL)
			hdr_kv(&h, false, "header.s", s->selector, "");
		if (s->b_prefix != NULL)
			hdr_kv(&h, false, "header.b", s->b_prefix, "");
	}
	hdr_end(&h);
}

/* RFC 7208 9.1, with the comment texts of its examples (domain, not the sender: no client text). */
static void
write_received_spf(struct smtp_conn *c, struct mbuf *b)
{
	struct smtp_txn *t = c->txn;
	struct smtp_verify *v = t->verify;
	const char *ip = c->ci->remote_ip, *d = v->spf_domain;
	enum spf_result r = d != NULL ? v->spf_result : SPF_NONE;
	struct hdr h;

	hdr_start(&h, b, "Received-SPF", t->smtputf8);
	hdr_word(&h, false, "%s", spf_result_name(r));
	if (d == NULL)
		hdr_word(&h, false, "(%s: no domain to check)", c->hostname);
	else if (r == SPF_PASS)
		hdr_word(&h, false, "(%s: domain of %s designates %s as permitted sender)", c->hostname, d, ip);
	else if (r == SPF_FAIL)
		hdr_word(&h, false, "(%s: domain of %s does not designate %s as permitted sender)", c->hostname, d, ip);
	else if (r == SPF_SOFTFAIL)
		hdr_word(&h, false, "(%s: domain of transitioning %s does not designate %s as permitted sender)",
		    c->hostname, d, ip);
	else if (r == SPF_NEUTRAL)
		hdr_word(&h, false, "(%s: %s is neither permitted nor denied by domain of %s)", c->hostname, ip, d);
	else if (r == SPF_NONE)
		hdr_word(&h, false, "(%s: domain of %s does not designate permitted sender hosts)", c->hostname, d);
	else if (r == SPF_TEMPERROR)
		hdr_word(&h, false, "(%s: error in processing during lookup of %s)", c->hostname, d);
	else
		hdr_word(&h, false, "(%s: permanent error in processing domain of %s)", c->hostname, d);
	hdr_kv(&h, true, "client-ip", ip, ";");
	hdr_kv(&h, false, "envelope-from", t->mail_from, ";");
	hdr_kv(&h, false, "helo", c->helo ? c->helo : "", ";");
	if (d != NULL)
		hdr_kv(&h, false, "identity", v->spf_helo ? "helo" : "mailfrom", ";");
	if (v->spf_mechanism != NULL && d != NULL)
		hdr_kv(&h, false, "mechanism", v->spf_mechanism, ";");
	if (v->spf_problem != NULL && d != NULL)
		hdr_kv(&h, false, "problem", v->spf_problem, ";");
	hdr_kv(&h, false, "receiver", c->hostname, "");
	hdr_end(&h);
}

/* The verified domains: SPF's on pass, each passing non-testing signature's d=. */
static void
collect_domains(struct smtp_verify *v)
{
	const char *cand[SMTP_VERIFY_MAX_DOMAINS];
	size_t n = 0;
	char canon[IDN_BUFSIZE];

	if (v->spf_domain != NULL && v->spf_result == SPF_PASS)
		cand[n++] = v->spf_domain;
	for (size_t i = 0; i < v->nsigs; i++)
		if (v->sigs[i].status == DKIM_PASS && !v->sigs[i].testing && v->sigs[i].domain != NULL)
			cand[n++] = v->sigs[i].domain;
	for (size_t i = 0; i < n; i++) {
		bool dup = false;
		if (idn_domain_canon(cand[i], strlen(cand[i]), canon, sizeof(canon), NULL, 0) <= 0)
			continue;
		for (size_t k = 0; k < v->ndomains; k++)
			dup |= strcmp(v->domains[k], canon) == 0;
		if (!dup)
			v->domains[v->ndomains++] = xstrdup(canon);
	}
}

/*
 * Removing Authentication-Results fields that claim to be ours (RFC 8601 5)
 * while the copy runs. A message may carry its own Authentication-Results
 * with our authserv-id; a client that trusts the top-most result from our
 * host could believe it, so those fields go. DKIM has run on the old file
 * already, so this does not change its result.
 *
 * A pure filter over the bytes of the old spool file, fed chunk by chunk
 * from its start (our Received header is no such field): a field stays
 * byte for byte unless its name is Authentication-Results and its
 * authserv-id (the value's first token or quoted-string, after CFWS with
 * comments) is our hostname, both compared without case. Only the start of
 * an Authentication-Results field (its name up to the end of the
 * authserv-id) is held until that is known, at most SMTP_AUTHRES_HOLD_MAX
 * bytes; a field whose start is longer stays as it is (reported in
 * overflow). The header section ends at the first empty line; from there
 * on every byte stays.
 */

/* Bytes of one field's start held until its authserv-id is known. */
#define SMTP_AUTHRES_HOLD_MAX (8 * 1024)

enum authres_state {
	AUTHRES_LINE,     /* at a line start: a new field, a continuation or the empty line */
	AUTHRES_CR,       /* a CR at a line start: the empty line when an LF follows */
	AUTHRES_NAME,     /* in a field name that matches so far */
	AUTHRES_NAME_WSP, /* WSP between the name and the colon (obsolete syntax, RFC 5322 4.5) */
	AUTHRES_CFWS,     /* CFWS before the authserv-id (depth: comment nesting) */
	AUTHRES_CFWS_LF,  /* a line end in that CFWS: a fold, or the field ended */
	AUTHRES_ID,       /* the authserv-id as a token */
	AUTHRES_QUOTED,   /* the authserv-id as a quoted-string */
	AUTHRES_KEEP,     /* the rest of a field that stays */
	AUTHRES_DROP,     /* the rest of a field that goes */
	AUTHRES_BODY,     /* past the header section: all stays */
};

struct authres_filter {
	const char *id;   /* our authserv-id (not owned) */
	size_t idlen;
	enum authres_state st;
	bool dropping;    /* AUTHRES_LINE: the field before goes, so does a continuation line */
	bool escape;      /* after a backslash in a comment or the quoted-string */
	unsigned depth;   /* comment nesting in AUTHRES_CFWS */
	size_t match;     /* bytes of the name or the id matched */
	uint32_t removed; /* fields removed */
	bool overflow;    /* a field stayed unchecked: its start was over the hold */
	size_t nhold;
	char hold[SMTP_AUTHRES_HOLD_MAX];
};

static const char authres_name[] = "authentication-results";

static unsigned char
ascii_lower(unsigned char ch)
{
	return ch >= 'A' && ch <= 'Z' ? (unsigned char)(ch - 'A' + 'a') : ch;
}

/* RFC 2045 token characters (bytes over 0x7f count, for RFC 6532 headers). */
static bool
token_char(unsigned char ch)
{
	return ch > ' ' && ch != 0x7f && strchr("()<>@,;:\\\"/[]?=", ch) == NULL;
}

/* f filters the header section of a message file whose authserv-id is id (kept by the caller). */
static struct authres_filter *
authres_filter_new(const char *id)
{
	struct authres_filter *f = xcalloc(1, sizeof(*f));

	f->id = id;
	f->idlen = strlen(id);
	f->st = AUTHRES_LINE;
	return f;
}

static void
authres_filter_free(struct authres_filter **fp)
{
	free(*fp);
	*fp = NULL;
}

/*
 * Filter the next n bytes of the file into out, which has room for
 * n + SMTP_AUTHRES_HOLD_MAX bytes (held bytes may come out now). Returns
 * the bytes put in out.
 */
static size_t
authres_filter_run(struct authres_filter *f, const char *in, size_t n, char *out)
{
	size_t i = 0, o = 0;

	while (i < n) {
		unsigned char ch = (unsigned char)in[i];
		if (f->st >= AUTHRES_NAME && f->st <= AUTHRES_QUOTED && f->nhold == SMTP_AUTHRES_HOLD_MAX) {
			f->overflow = true;
			goto keep;
		}
		switch (f->st) {
		case AUTHRES_BODY:
			memcpy(out + o, in + i, n - i);
			return o + (n - i);
		case AUTHRES_KEEP:
			out[o++] = (char)ch;
			if (ch == '\n')
				f->st = AUTHRES_LINE, f->dropping = false;
			i++;
			continue;
		case AUTHRES_DROP:
			if (ch == '\n')
				f->st = AUTHRES_LINE, f->dropping = true;
			i++;
			continue;
		case AUTHRES_LINE:
			if (ch == ' ' || ch == '\t') {
				f->st = f->dropping ? AUTHRES_DROP : AUTHRES_KEEP;
			} else if (ch == '\r' || ch == '\n') {
				out[o++] = (char)ch;
				f->st = ch == '\r' ? AUTHRES_CR : AUTHRES_BODY;
				i++;
			} else {
				f->st = AUTHRES_NAME;
				f->match = 0;
				f->nhold = 0;
			}
			continue; /* ch again, in the new state */
		case AUTHRES_CR:
			if (ch == '\n') {
				out[o++] = (char)ch;
				f->st = AUTHRES_BODY;
				i++;
			} else {
				f->st = AUTHRES_KEEP; /* a field starting with a CR: not ours */
			}
			continue;
		case AUTHRES_NAME:
			if (f->match < sizeof(authres_name) - 1) {
				if (ascii_lower(ch) != (unsigned char)authres_name[f->match])
					goto keep;
				f->match++;
			} else if (ch == ' ' || ch == '\t') {
				f->st = AUTHRES_NAME_WSP;
			} else if (ch == ':') {
				f->st = AUTHRES_CFWS;
				f->depth = 0;
				f->escape = false;
			} else {
				goto keep;
			}
			break;
		case AUTHRES_NAME_WSP:
			if (ch == ':') {
				f->st = AUTHRES_CFWS;
				f->depth = 0;
				f->escape = false;
			} else if (ch != ' ' && ch != '\t') {
				goto keep;
			}
			break;
		case AUTHRES_CFWS:
			if (ch == '\n') {
				f->st = AUTHRES_CFWS_LF;
			} else if (f->depth > 0) {
				if (f->escape)
					f->escape = false;
				else if (ch == '\\')
					f->escape = true;
				else if (ch == '(')
					f->depth++;
				else if (ch == ')')
					f->depth--;
			} else if (ch == '(') {
				f->depth = 1;
			} else if (ch == '"') {
				f->st = AUTHRES_QUOTED;
				f->match = 0;
				f->escape = false;
			} else if (ch != ' ' && ch != '\t' && ch != '\r') {
				f->st = AUTHRES_ID;
				f->match = 0;
				continue;
			}
			break;
		case AUTHRES_CFWS_LF:
			if (ch != ' ' && ch != '\t') {
				/* The field ended before an authserv-id: it stays. */
				memcpy(out + o, f->hold, f->nhold);
				o += f->nhold;
				f->nhold = 0;
				f->st = AUTHRES_LINE;
				f->dropping = false;
				continue;
			}
			f->st = AUTHRES_CFWS;
			break;
		case AUTHRES_ID:
			if (token_char(ch)) {
				if (f->match == f->idlen || ascii_lower(ch) != ascii_lower((unsigned char)f->id[f->match]))
					goto keep;
				f->match++;
				break;
			}
			if (f->match != f->idlen)
				goto keep;
			goto drop;
		case AUTHRES_QUOTED:
			if (ch == '\r' || ch == '\n')
				goto keep;
			if (!f->escape && ch == '\\') {
				f->escape = true;
				break;
			}
			if (!f->escape && ch == '"') {
				if (f->match != f->idlen)
					goto keep;
				goto drop;
			}
			f->escape = false;
			if (f->match == f->idlen || ascii_lower(ch) != ascii_lower((unsigned char)f->id[f->match]))
				goto keep;
			f->match++;
			break;
		}
		f->hold[f->nhold++] = (char)ch; /* the start of a field not decided yet */
		i++;
		continue;
	keep:
		/* Not ours: what was held comes out and ch goes on as part of a field that stays. */
		memcpy(out + o, f->hold, f->nhold);
		o += f->nhold;
		f->nhold = 0;
		f->st = AUTHRES_KEEP;
		continue;
	drop:
		f->nhold = 0;
		f->removed++;
		f->st = AUTHRES_DROP;
		continue;
	}
	return o;
}

/* The file ended: put what is still held (a field without an authserv-id) into out. Returns its length. */
static size_t
authres_filter_end(struct authres_filter *f, char *out)
{
	size_t o = f->nhold;

	memcpy(out, f->hold, f->nhold);
	f->nhold = 0;
	f->st = AUTHRES_BODY;
	return o;
}

/*
 * Write the next n bytes of the message through f into w: filtered while f
 * is in the header section (at most SMTP_COPY_CHUNK at a time), written
 * directly from the body on. 1, or -1 (err).
 */
static int
authres_write(struct authres_filter *f, struct maildir_writer *w, const char *p, size_t n, char *err, size_t errlen)
{
	char *out = NULL;
	int r = 1;

	while (n > 0 && f->st != AUTHRES_BODY && r > 0) {
		size_t k = n < SMTP_COPY_CHUNK ? n : SMTP_COPY_CHUNK;
		if (out == NULL)
			out = xmalloc(k + SMTP_AUTHRES_HOLD_MAX);
		r = maildir_writer_write(w, out, authres_filter_run(f, p, k, out), err, errlen);
		p += k;
		n -= k;
	}
	free(out);
	if (n > 0 && r > 0)
		r = maildir_writer_write(w, p, n, err, errlen);
	return r;
}

/* The message ended: write what f still holds into w. 1, or -1 (err). */
static int
authres_write_end(struct authres_filter *f, struct maildir_writer *w, char *err, size_t errlen)
{
	char *out = xmalloc(SMTP_AUTHRES_HOLD_MAX);
	size_t len = authres_filter_end(f, out);
	int r = len > 0 ? maildir_writer_write(w, out, len, err, errlen) : 1;

	free(out);
	return r;
}

/* Log what the filter did: removed fields (an info line), a field kept unchecked. */
static void
authres_report(struct smtp_conn *c, const struct authres_filter *f, uint64_t old_size, uint64_t new_size)
{
	char n[16], bytes[32], max[16];

	if (f->removed > 0) {
		snprintf(n, sizeof(n), "%u", (unsigned)f->removed);
		snprintf(bytes, sizeof(bytes), "%llu", (unsigned long long)(old_size - new_size));
		log_info(SMTP_PKG, c->ci->cid, "removed authentication-results fields with our authserv-id (rfc 8601 5)",
		    "fields", n, "bytes", bytes, "authserv-id", c->hostname);
	}
	if (f->overflow) {
		snprintf(max, sizeof(max), "%d", SMTP_AUTHRES_HOLD_MAX);
		log_info(SMTP_PKG, c->ci->cid,
		    "authentication-results field left unchecked: its start is over the limit, copied unchanged",
		    "limit", max);
	}
}

static void verify_timeout(struct smtp_conn *c);

/* The copy failed: no delivery, the client may try again. */
static void
copy_failed(struct smtp_conn *c, const char *err)
{
	log_error(SMTP_PKG, c->ci->cid, "writing spool file", "err", err);
	smtp_txn_free(&c->txn);
	smtp_reply(c, 451, "4.3.0", "error storing message, try again later");
	smtp_resume(c, SMTP_ST_READY);
}

/*
 * One loop turn of the copy into the new spool file (see the top): at most
 * SMTP_COPY_PER_TURN bytes, so a large message does not hold up the other
 * connections. The last turn replaces the old spool file and delivers.
 */
static void
copy_step(struct smtp_conn *c)
{
	struct smtp_txn *t = c->txn;
	struct smtp_verify *v = t->verify;
	uint64_t size = maildir_writer_size(t->w), turn = 0;
	char *buf = xmalloc(SMTP_COPY_CHUNK);
	char err[512];

	while (v->copied < size && turn < SMTP_COPY_PER_TURN) {
		size_t want = size - v->copied < SMTP_COPY_CHUNK ? (size_t)(size - v->copied) : SMTP_COPY_CHUNK;
		ssize_t n = pread(v->fd, buf, want, (off_t)v->copied);
		if (n <= 0) {
			snprintf(err, sizeof(err), "reading %s: %s", maildir_writer_path(t->w),
			    n < 0 ? strerror(errno) : "short file");
			goto fail;
		}
		if (authres_write(v->authres, v->copy, buf, (size_t)n, err, sizeof(err)) < 0)
			goto fail;
		v->copied += (uint64_t)n;
		turn += (uint64_t)n;
	}
	free(buf);
	if (v->copied < size) {
		smtp_defer(c, 0, copy_step);
		return;
	}
	if (authres_write_end(v->authres, v->copy, err, sizeof(err)) < 0 ||
	    maildir_writer_finish(v->copy, MAILDIR_FINISH_NOSYNC, err, sizeof(err)) < 0) {
		copy_failed(c, err);
		return;
	}
	authres_report(c, v->authres, size, maildir_writer_size(v->copy) - v->hdr_len);
	authres_filter_free(&v->authres);
	maildir_writer_free(&t->w); /* unlinks the old spool file */
	t->w = v->copy;
	v->copy = NULL;
	t->prefix_len += v->hdr_len;
	close(v->fd);
	v->fd = -1;
	if (log_enabled(SMTP_PKG, LOG_LVL_DEBUG)) {
		char bytes[32], ms[32];
		snprintf(bytes, sizeof(bytes), "%llu", (unsigned long long)size);
		snprintf(ms, sizeof(ms), "%lld", (long long)(mono_ms() - v->copy_start));
		log_debug(SMTP_PKG, c->ci->cid, "spool file copied behind the authentication headers", "bytes", bytes,
		    "ms", ms);
	}
	smtp_deliver(c);
	return;
fail:
	free(buf);
	copy_failed(c, err);
}

/*
 * The held message (see the top): our new headers h, then the held bytes
 * through the filter, into the spool file, which is still empty; deliver.
 */
static void
write_held(struct smtp_conn *c, const struct mbuf *h)
{
	struct smtp_txn *t = c->txn;
	struct smtp_verify *v = t->verify;
	struct authres_filter *f = authres_filter_new(c->hostname);
	char err[512];
	int r;

	close(v->fd); /* DKIM is done with it */
	v->fd = -1;
	/* Every held line ends in CRLF already (crlf_clean): no normalization pass. */
	maildir_writer_set_raw(t->w, true);
	r = maildir_writer_write(t->w, h->data, h->len, err, sizeof(err));
	if (r > 0)
		r = authres_write(f, t->w, v->held.data, v->held.len, err, sizeof(err));
	if (r > 0)
		r = authres_write_end(f, t->w, err, sizeof(err));
	if (r > 0)
		r = maildir_writer_finish(t->w, MAILDIR_FINISH_NOSYNC, err, sizeof(err));
	if (r > 0)
		authres_report(c, f, v->held.len, maildir_writer_size(t->w) - h->len);
	authres_filter_free(&f);
	mbuf_clear(&v->held);
	if (r < 0) {
		copy_failed(c, err);
		return;
	}
	t->prefix_len += (uint32_t)h->len;
	smtp_deliver(c);
}

/* Both checks are done (or given up): write the headers and the held message, or copy behind them; deliver. */
static void
verify_finish(struct smtp_conn *c)
{
	struct smtp_txn *t = c->txn;
	struct smtp_verify *v = t->verify;
	struct mbuf h;
	char err[512];
	int r = -1;

	if (c->ev_fn == verify_timeout) {
		evtimer_del(c->ev);
		c->ev_fn = NULL;
	}
	v->waiting = false;
	collect_domains(v);
	mbuf_init(&h, SMTP_VERIFY_HDR_MAX);
	write_authres(c, &h);
	write_received_spf(c, &h);
	if (h.len < SMTP_VERIFY_HDR_MAX && spool_held(t)) {
		write_held(c, &h);
		mbuf_clear(&h);
		return;
	}
	if (h.len >= SMTP_VERIFY_HDR_MAX)
		snprintf(err, sizeof(err), "authentication headers too long");
	else if (open_spool_file(c, &v->copy) < 0)
		snprintf(err, sizeof(err), "no spool file for the copy");
	else {
		/* Every line of the old file ends in CRLF already: no normalization pass. */
		maildir_writer_set_raw(v->copy, true);
		r = maildir_writer_write(v->copy, h.data, h.len, err, sizeof(err));
		v->authres = authres_filter_new(c->hostname);
	}
	v->hdr_len = (uint32_t)h.len;
	v->copy_start = mono_ms();
	mbuf_clear(&h);
	if (r < 0) {
		copy_failed(c, err);
		return;
	}
	copy_step(c);
}

/* A check is done: go on when the data is in and nothing is left. */
static void
verify_check_done(struct smtp_conn *c)
{
	struct smtp_verify *v = c->txn->verify;

	if (!v->waiting || v->spf != NULL || v->dkim != NULL)
		return;
	/* A shutdown's 421 went out meanwhile: the message is not taken. */
	if (c->state != SMTP_ST_BUSY || (c->flags & (SMTP_F_FREEING | SMTP_F_DEAD)))
		return;
	verify_finish(c);
}

static void
verify_timeout(struct smtp_conn *c)
{
	struct smtp_verify *v = c->txn != NULL ? c->txn->verify : NULL;

	if (v == NULL || !v->waiting)
		return;
	log_info(SMTP_PKG, c->ci->cid, "message checks took too long, missing results are temperror", "spf",
	    v->spf != NULL ? "pending" : "done", "dkim", v->dkim != NULL ? "pending" : "done");
	if (v->spf != NULL) {
		spf_cancel(v->spf);
		v->spf = NULL;
		v->spf_result = SPF_TEMPERROR;
		free(v->spf_problem);
		v->spf_problem = xstrdup("timeout");
	}
	if (v->dkim != NULL) {
		dkim_verify_free(&v->dkim);
		v->dkim_err = "timeout";
	}
	verify_finish(c);
}

/* An anonymous memory file holding the held message, for DKIM: its fd, or -1 (errno). */
static int
held_file(const struct mbuf *held)
{
	int fd = memfd_create("smtp-message", MFD_CLOEXEC);
	size_t off = 0;

	while (fd >= 0 && off < held->len) {
		ssize_t n = write(fd, held->data + off, held->len - off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			int e = n < 0 ? errno : EIO;
			close(fd);
			errno = e;
			return -1;
		}
		off += (size_t)n;
	}
	return fd;
}

/* The data is in (held, or in the spool file): start DKIM, wait for it and SPF, then deliver. */
static void
verify_message(struct smtp_conn *c)
{
	struct smtp_txn *t = c->txn;
	struct smtp_verify *v = t->verify;
	char err[512];

	if (spool_held(t) && (v->fd = held_file(&v->held)) < 0) {
		/* No memory file: the message goes to the spool file after all (the copy path). */
		log_error(SMTP_PKG, c->ci->cid, "cannot create memory file for dkim, using the spool file", "err",
		    strerror(errno));
		if (spool_spill(t, err, sizeof(err)) < 0 || maildir_writer_finish(t->w, MAILDIR_FINISH_NOSYNC, err,
		    sizeof(err)) < 0) {
			log_error(SMTP_PKG, c->ci->cid, "writing spool file", "err", err);
			smtp_txn_free(&c->txn);
			smtp_set_state(c, SMTP_ST_READY);
			smtp_reply(c, 451, "4.3.0", "error storing message, try again later");
			return;
		}
	}
	if (!spool_held(t))
		v->fd = open(maildir_writer_path(t->w), O_RDONLY | O_CLOEXEC);
	if (v->fd < 0) {
		log_error(SMTP_PKG, c->ci->cid, "opening spool file", "path", maildir_writer_path(t->w), "err",
		    strerror(errno));
		smtp_txn_free(&c->txn);
		smtp_set_state(c, SMTP_ST_READY);
		smtp_reply(c, 451, "4.3.0", "error storing message, try again later");
		return;
	}
	v->dkim = dkim_verify_start(server_base(c->srv), server_dns(c->srv), v->fd, t->prefix_len, NULL, 0, dkim_done, v);
	if (v->dkim == NULL) {
		log_error(SMTP_PKG, c->ci->cid, "cannot start dkim verification", "err", strerror(errno));
		v->dkim_err = "cannot read message";
	}
	v->waiting = true;
	smtp_set_state(c, SMTP_ST_BUSY);
	bufferevent_disable(c->bev, EV_READ);
	if (v->spf == NULL && v->dkim == NULL) {
		verify_finish(c);
		return;
	}
	smtp_defer(c, SMTP_VERIFY_MAX_MS, verify_timeout);
}

/*
 * The data is in: a held message stays held unless it ends in a CR (the
 * writer completes that line end); else the spool file is finished. 1, or -1.
 */
static int
spool_end(struct smtp_txn *t, char *err, size_t errlen)
{
	if (spool_held(t)) {
		const struct mbuf *held = &t->verify->held;
		if (held->len == 0 || held->data[held->len - 1] != '\r')
			return 1;
		if (spool_spill(t, err, errlen) < 0)
			return -1;
	}
	return maildir_writer_finish(t->w, MAILDIR_FINISH_NOSYNC, err, errlen);
}

/* The message is in: refuse it or finish the spool file and deliver. */
static void
message_end(struct smtp_conn *c, bool bare)
{
	struct smtp_txn *t = c->txn;
	char err[512];

	smtp_message_timer(c, false);
	if (t->too_big) {
		log_info(SMTP_PKG, c->ci->cid, "message too large, refused", "remote", c->ci->remote_ip);
		smtp_txn_free(&c->txn);
		smtp_set_state(c, SMTP_ST_READY);
		smtp_reply(c, 552, "5.3.4", "message too large, limit is %llu bytes", (unsigned long long)max_size(c));
		return;
	}
	if (bare) {
		smtp_txn_free(&c->txn);
		smtp_set_state(c, SMTP_ST_READY);
		smtp_reply(c, 550, "5.6.0", "bare CR or LF in message, lines must end with CRLF (RFC 5321 2.3.8)");
		return;
	}
	if (!t->failed && spool_end(t, err, sizeof(err)) < 0) {
		log_error(SMTP_PKG, c->ci->cid, "finishing spool file", "err", err);
		t->failed = true;
	}
	if (t->failed) {
		smtp_txn_free(&c->txn);
		smtp_set_state(c, SMTP_ST_READY);
		smtp_reply(c, 451, "4.3.0", "error storing message, try again later");
		return;
	}
	if (t->verify != NULL) {
		verify_message(c);
		return;
	}
	smtp_deliver(c);
}

void
smtp_cmd_data(struct smtp_conn *c, struct smtp_cmd *cmd)
{
	struct smtp_txn *t = c->txn;

	if (t->bdat) {
		smtp_reply(c, 503, "5.5.1", "DATA not allowed after BDAT");
		smtp_error(c);
		return;
	}
	if (t->nrcpts == 0) {
		smtp_reply(c, 554, "5.5.1", "no valid recipients");
		smtp_error(c);
		return;
	}
	if (begin_message(c) < 0) {
		smtp_reply(c, 451, "4.3.0", "cannot store message now, try again later");
		return;
	}
	smtp_data_init(&t->data, SMTP_DATA_STRICT, max_size(c));
	smtp_set_state(c, SMTP_ST_DATA);
	smtp_message_timer(c, true);
	smtp_reply(c, 354, NULL, "end data with <CR><LF>.<CR><LF>");
}

void
smtp_cmd_bdat(struct smtp_conn *c, struct smtp_cmd *cmd)
{
	struct smtp_txn *t = c->txn;
	uint64_t size = cmd->bdat.size;

	/* Chunks that are only dropped count too: they hold the session as long. */
	smtp_message_timer(c, true);
	c->skip_code = 0;
	if (t == NULL)
		c->skip_code = 503;
	else if (t->nrcpts == 0)
		c->skip_code = 554;
	else if (size > max_size(c) || t->size + size > max_size(c))
		c->skip_code = 552;
	else if (!t->bdat && begin_message(c) < 0)
		c->skip_code = 451;
	if (c->skip_code != 0) {
		/* The chunk's bytes follow anyway: read and drop them, then answer. */
		c->skip_bytes = size;
		smtp_set_state(c, SMTP_ST_BDAT);
		return;
	}
	t->bdat = true;
	t->bdat_left = size;
	t->bdat_last = cmd->bdat.last;
	smtp_set_state(c, SMTP_ST_BDAT);
}

static void
skip_done(struct smtp_conn *c)
{
	int code = c->skip_code;

	c->skip_code = 0;
	if (c->txn == NULL || !c->txn->bdat || code == 552 || code == 451)
		smtp_message_timer(c, false); /* no message under way any more */
	if (code == 552 || code == 451) {
		smtp_txn_free(&c->txn);
		smtp_set_state(c, SMTP_ST_READY);
	} else {
		smtp_set_state(c, c->txn ? SMTP_ST_MAIL : (c->helo ? SMTP_ST_READY : SMTP_ST_INIT));
	}
	switch (code) {
	case 503:
		smtp_reply(c, 503, "5.5.1", "send MAIL first");
		break;
	case 554:
		smtp_reply(c, 554, "5.5.1", "no valid recipients");
		break;
	case 552:
		smtp_reply(c, 552, "5.3.4", "message too large, limit is %llu bytes", (unsigned long long)max_size(c));
		return;
	default:
		smtp_reply(c, 451, "4.3.0", "cannot store message now, try again later");
		return;
	}
	smtp_error(c);
}

static void
chunk_done(struct smtp_conn *c)
{
	struct smtp_txn *t = c->txn;

	if (!t->bdat_last) {
		smtp_set_state(c, SMTP_ST_RCPT);
		smtp_reply(c, 250, "2.0.0", "%llu octets received", (unsigned long long)t->size);
		return;
	}
	message_end(c, false);
}

bool
smtp_data_input(struct smtp_conn *c)
{
	struct evbuffer *in = bufferevent_get_input(c->bev);
	struct smtp_txn *t = c->txn;
	struct evbuffer_iovec v;

	if (c->state == SMTP_ST_BDAT && c->skip_code != 0) {
		size_t n = evbuffer_get_length(in);
		if (n > c->skip_bytes)
			n = (size_t)c->skip_bytes;
		evbuffer_drain(in, n);
		c->skip_bytes -= n;
		if (c->skip_bytes > 0)
			return false;
		skip_done(c);
		return true;
	}
	if (c->state == SMTP_ST_BDAT && t->bdat_left == 0) {
		chunk_done(c);
		return true;
	}
	if (evbuffer_peek(in, -1, NULL, &v, 1) < 1 || v.iov_len == 0)
		return false;
	if (c->state == SMTP_ST_BDAT) {
		size_t n = v.iov_len < t->bdat_left ? v.iov_len : (size_t)t->bdat_left;
		write_chunk(c, v.iov_base, n);
		t->size += n;
		t->bdat_left -= n;
		evbuffer_drain(in, n);
		if (t->bdat_left == 0)
			chunk_done(c);
		return true;
	}
	/* DATA: unstuff dots up to CRLF.CRLF. */
	size_t off = 0;
	const char *p = v.iov_base;
	while (off < v.iov_len && !t->data.done) {
		const char *chunk;
		size_t clen;
		off += smtp_data_parse(&t->data, p + off, v.iov_len - off, &chunk, &clen);
		write_chunk(c, chunk, clen);
	}
	evbuffer_drain(in, off);
	if (!t->data.done)
		return true;
	t->size = t->data.size;
	t->too_big = t->data.over_limit;
	message_end(c, (t->data.flags & (SMTP_DATA_BARE_LF | SMTP_DATA_BARE_CR)) != 0);
	return true;
}

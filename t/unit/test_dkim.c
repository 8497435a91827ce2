/*
 * Tests for daemon/dkim: tag lists, signature and key records, header and
 * body canonicalization (fed whole and one byte at a time), the RFC 8463
 * appendix A message with its published keys, messages signed here with
 * fresh RSA and Ed25519 keys (a small signer on the same code path), and the
 * asynchronous verifier against a fake DNS.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include <event2/event.h>
#include <openssl/evp.h>
#include <openssl/x509.h>

#include "daemon/dkim.h"
#include "daemon/dns.h"

#define CRLF "\r\n"

/* ------------------------------------------------------------------ */
/* Helpers                                                             */

static char *
b64(const uint8_t *p, size_t n)
{
	char *out = malloc(4 * ((n + 2) / 3) + 1);

	EVP_EncodeBlock((unsigned char *)out, p, (int)n);
	return out;
}

/* Parse a whole message's header section; returns the body offset. */
static size_t
hdrs_of(struct dkim_hdrs *h, const char *msg, size_t len)
{
	ssize_t k;

	dkim_hdrs_init(h, 1 << 20, 1000);
	k = dkim_hdrs_feed(h, msg, len);
	assert_true(k >= 0);
	if (k == 0) {
		dkim_hdrs_finish(h);
		return len;
	}
	return (size_t)k;
}

static void
body_hash(enum dkim_canon c, int64_t l, const char *p, size_t n, size_t step, uint8_t out[32], uint64_t *clen,
	  struct mbuf *copy)
{
	struct dkim_body b;

	assert_int_equal(dkim_body_init(&b, c, l), 0);
	b.copy = copy;
	if (step == 0)
		step = n ? n : 1;
	for (size_t i = 0; i < n; i += step)
		dkim_body_update(&b, p + i, n - i < step ? n - i : step);
	assert_int_equal(dkim_body_final(&b, out, clen), 0);
	dkim_body_clear(&b);
}

/* Verify every DKIM-Signature of msg against keys (selector -> TXT) without DNS. */
struct keyrec {
	const char *selector;
	const char *txt;
};

static int
verify_sync(const char *msg, size_t len, const struct keyrec *keys, size_t nkeys, int64_t now,
	    enum dkim_status *st, const char **reasons, size_t max)
{
	struct dkim_hdrs h;
	size_t body = hdrs_of(&h, msg, len);
	size_t n = 0;

	for (size_t k = 0; k < h.nfields && n < max; k++) {
		const char *f = dkim_hdrs_field(&h, k), *err = "", *reason = "";
		size_t vo = h.fields[k].name_len + 1;
		struct dkim_sig sig;
		struct dkim_key key;
		struct mbuf hd;
		uint8_t bh[32];
		uint64_t clen;
		const char *txt = NULL;

		if (!dkim_hdrs_is(&h, k, "dkim-signature", 14))
			continue;
		if (dkim_sig_parse(f + vo, h.fields[k].len - vo, &sig, &err) < 0) {
			st[n] = DKIM_PERMERROR;
			reasons[n++] = err;
			continue;
		}
		for (size_t j = 0; j < nkeys; j++)
			if (strlen(keys[j].selector) == sig.s.len && memcmp(keys[j].selector, sig.s.p, sig.s.len) == 0)
				txt = keys[j].txt;
		assert_non_null(txt);
		if (dkim_key_parse(txt, strlen(txt), &key, &err) < 0) {
			st[n] = DKIM_PERMERROR;
			reasons[n++] = err;
			continue;
		}
		body_hash(sig.bcanon, sig.has_l ? (int64_t)sig.l : -1, msg + body, len - body, 0, bh, &clen, NULL);
		mbuf_init(&hd, 1 << 20);
		assert_int_equal(dkim_header_data(&h, k, &sig, &hd), 0);
		st[n] = dkim_check(&sig, &key, hd.data, hd.len, bh, clen, now, &reason, NULL);
		reasons[n++] = reason;
		mbuf_clear(&hd);
	}
	dkim_hdrs_clear(&h);
	return (int)n;
}

/*
 * The test signer: prepends a DKIM-Signature to msg. tags are extra tags
 * ("l=5; x=1" or ""). The b= placeholder is parsed like any signature, so
 * dkim_header_data empties it exactly as the verifier will.
 */
static char *
sign_msg(const char *msg, EVP_PKEY *pk, const char *algo, const char *canon, const char *hlist, const char *tags,
	 const char *selector)
{
	static const char placeholder[] = "PLACEHOLDERxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx";
	size_t len = strlen(msg);
	struct dkim_hdrs h;
	struct dkim_sig sig;
	const char *err = "";
	uint8_t bh[32], sigbuf[1024];
	uint64_t clen;
	struct mbuf m, hd;
	size_t body, siglen = sizeof(sigbuf);
	char *bhs, *bs, *out, *pos;
	enum dkim_canon bc = strstr(canon, "/relaxed") ? DKIM_CANON_RELAXED : DKIM_CANON_SIMPLE;
	long long l = -1;
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();

	if (strstr(tags, "l=") != NULL)
		l = atoll(strstr(tags, "l=") + 2);
	/* body hash */
	{
		struct dkim_hdrs h0;
		body = hdrs_of(&h0, msg, len);
		dkim_hdrs_clear(&h0);
	}
	body_hash(bc, l, msg + body, len - body, 0, bh, &clen, NULL);
	bhs = b64(bh, 32);
	mbuf_init(&m, 1 << 20);
	mbuf_printf(&m, "DKIM-Signature: v=1; a=%s; c=%s; d=example.org; s=%s;%s%s%s" CRLF "\th=%s;" CRLF "\tbh=%s;" CRLF
			"\tb=%s" CRLF "%s",
		    algo, canon, selector, tags[0] ? " " : "", tags, tags[0] ? ";" : "", hlist, bhs, placeholder, msg);
	hdrs_of(&h, m.data, m.len);
	{
		const char *f = dkim_hdrs_field(&h, 0);
		size_t vo = h.fields[0].name_len + 1;
		int r = dkim_sig_parse(f + vo, h.fields[0].len - vo, &sig, &err);
		if (r < 0)
			fail_msg("signer: %s", err);
	}
	mbuf_init(&hd, 1 << 20);
	assert_int_equal(dkim_header_data(&h, 0, &sig, &hd), 0);
	if (EVP_PKEY_get_base_id(pk) == EVP_PKEY_ED25519) {
		uint8_t dg[32];
		EVP_Digest(hd.data, hd.len, dg, NULL, EVP_sha256(), NULL);
		assert_int_equal(EVP_DigestSignInit(ctx, NULL, NULL, NULL, pk), 1);
		assert_int_equal(EVP_DigestSign(ctx, sigbuf, &siglen, dg, 32), 1);
	} else {
		assert_int_equal(EVP_DigestSignInit(ctx, NULL, strstr(algo, "sha1") ? EVP_sha1() : EVP_sha256(), NULL, pk), 1);
		assert_int_equal(EVP_DigestSign(ctx, sigbuf, &siglen, (unsigned char *)hd.data, hd.len), 1);
	}
	bs = b64(sigbuf, siglen);
	pos = strstr(m.data, placeholder);
	out = malloc(m.len + strlen(bs) + 1);
	memcpy(out, m.data, (size_t)(pos - m.data));
	strcpy(out + (pos - m.data), bs);
	strcat(out, pos + strlen(placeholder));
	free(bhs);
	free(bs);
	mbuf_clear(&m);
	mbuf_clear(&hd);
	dkim_hdrs_clear(&h);
	EVP_MD_CTX_free(ctx);
	return out;
}

/* "v=DKIM1; k=...; p=..." for a public key. */
static char *
key_txt(EVP_PKEY *pk, const char *extra)
{
	uint8_t raw[2048], *p = raw;
	size_t n = sizeof(raw);
	char *enc, *out;
	const char *k = "rsa";

	if (EVP_PKEY_get_base_id(pk) == EVP_PKEY_ED25519) {
		assert_int_equal(EVP_PKEY_get_raw_public_key(pk, raw, &n), 1);
		k = "ed25519";
	} else {
		n = (size_t)i2d_PUBKEY(pk, &p);
	}
	enc = b64(raw, n);
	out = malloc(strlen(enc) + 128);
	sprintf(out, "v=DKIM1; k=%s;%s p=%s", k, extra, enc);
	free(enc);
	return out;
}

static EVP_PKEY *rsa2048, *rsa512, *ed;

static int
setup_keys(void **state)
{
	rsa2048 = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
	rsa512 = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)512);
	ed = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
	return rsa2048 && rsa512 && ed ? 0 : -1;
}

static int
teardown_keys(void **state)
{
	EVP_PKEY_free(rsa2048);
	EVP_PKEY_free(rsa512);
	EVP_PKEY_free(ed);
	return 0;
}

static const char plain_msg[] =
	"From: Joe <joe@example.org>" CRLF
	"To: Suzie <suzie@example.net>" CRLF
	"Subject: Is dinner\t ready?" CRLF
	"  folded  part " CRLF
	"Date: Fri, 11 Jul 2003 21:00:37 -0700" CRLF
	"Message-ID: <1@example.org>" CRLF
	CRLF
	"Hi.  " CRLF
	CRLF
	"We lost the game.\t Are you hungry yet?" CRLF
	CRLF
	"Joe." CRLF
	CRLF
	CRLF;

/* ------------------------------------------------------------------ */
/* Parsers                                                             */

static void
test_tags(void **state)
{
	const char *s = " a = 1 ; b=x y\r\n z;c=;", *err = "";
	struct dkim_str n, v;
	size_t pos = 0;

	assert_int_equal(dkim_tag_next(s, strlen(s), &pos, &n, &v, &err), 1);
	assert_true(n.len == 1 && n.p[0] == 'a' && v.len == 1 && v.p[0] == '1');
	assert_int_equal(dkim_tag_next(s, strlen(s), &pos, &n, &v, &err), 1);
	assert_true(v.len == 7 && memcmp(v.p, "x y\r\n z", 7) == 0);
	assert_int_equal(dkim_tag_next(s, strlen(s), &pos, &n, &v, &err), 1);
	assert_true(n.p[0] == 'c' && v.len == 0);
	assert_int_equal(dkim_tag_next(s, strlen(s), &pos, &n, &v, &err), 0);

	pos = 0;
	assert_int_equal(dkim_tag_next("=1", 2, &pos, &n, &v, &err), DKIM_E_SYNTAX);
	pos = 0;
	assert_int_equal(dkim_tag_next("a 1", 3, &pos, &n, &v, &err), DKIM_E_SYNTAX);
	pos = 0;
	assert_int_equal(dkim_tag_next("a=\x01", 3, &pos, &n, &v, &err), DKIM_E_SYNTAX);
	pos = 0;
	assert_int_equal(dkim_tag_next("a=1;;b=2", 8, &pos, &n, &v, &err), 1);
	assert_int_equal(dkim_tag_next("a=1;;b=2", 8, &pos, &n, &v, &err), DKIM_E_SYNTAX);
}

static void
test_base64(void **state)
{
	uint8_t out[16];

	assert_int_equal(dkim_base64_decode("aGVs bG8=", 9, out, sizeof(out)), 5);
	assert_memory_equal(out, "hello", 5);
	assert_int_equal(dkim_base64_decode("aGVsbG8", 7, out, sizeof(out)), 5);
	assert_int_equal(dkim_base64_decode("aGVsbA==", 8, out, sizeof(out)), 4);
	assert_int_equal(dkim_base64_decode("", 0, out, sizeof(out)), 0);
	assert_int_equal(dkim_base64_decode("aGVsb", 5, out, sizeof(out)), DKIM_E_SYNTAX);
	assert_int_equal(dkim_base64_decode("aG=Vs", 5, out, sizeof(out)), DKIM_E_SYNTAX);
	assert_int_equal(dkim_base64_decode("aGV!", 4, out, sizeof(out)), DKIM_E_SYNTAX);
	assert_int_equal(dkim_base64_decode("aGVsbG8=", 8, out, 4), DKIM_E_LIMIT);
	assert_int_equal(dkim_base64_decode("aGVsbA=", 7, out, sizeof(out)), DKIM_E_SYNTAX);
}

#define GOOD_SIG "v=1; a=rsa-sha256; d=example.org; s=sel; h=From:To; bh=" \
	"2jUSOH9NhtVGCQWNr9BrIAPreKQjO6Sn7XIkfJVOzv8=; b=AAAA"

static int
sig_err(const char *v, const char **err)
{
	struct dkim_sig sig;

	*err = "";
	return dkim_sig_parse(v, strlen(v), &sig, err);
}

static void
test_sig_parse(void **state)
{
	static struct dkim_sig sig;
	const char *err = "";
	const char *v = "v=1; a=ed25519-sha256; c=relaxed; d=Example.org;\r\n i=joe@mail.example.org; s=sel.x;"
			" t=100; x=200; l=10; q=dns/txt:other/x; z=From:a|To:b; h=from : To :subject;"
			" bh=2jUSOH9NhtVGCQWNr9BrIAPreKQjO6Sn7XIkfJVOzv8=; b=AA\r\n AA; unknown=tag";

	assert_int_equal(dkim_sig_parse(v, strlen(v), &sig, &err), 1);
	assert_int_equal(sig.algo, DKIM_ALGO_ED25519_SHA256);
	assert_int_equal(sig.hcanon, DKIM_CANON_RELAXED);
	assert_int_equal(sig.bcanon, DKIM_CANON_SIMPLE);
	assert_int_equal(sig.nh, 3);
	assert_true(sig.h[2].len == 7 && memcmp(sig.h[2].p, "subject", 7) == 0);
	assert_true(sig.has_l && sig.l == 10 && sig.t == 100 && sig.x == 200);
	assert_int_equal(sig.bh_len, 32);
	assert_int_equal(sig.b_len, 3);
	assert_true(sig.b_value.len == 7 && memcmp(sig.b_value.p, "AA\r\n AA", 7) == 0);

	assert_int_equal(sig_err(GOOD_SIG, &err), 1);
	assert_int_equal(sig_err("v=1; a=rsa-sha1; d=example.org; s=s; h=from; bh=AAAA; b=AAAA", &err), 1);
	/* required tags */
	assert_int_equal(sig_err("a=rsa-sha256; d=example.org; s=sel; h=From; bh=AAAA; b=AAAA", &err), DKIM_E_MISSING);
	assert_string_equal(err, "missing v=");
	assert_int_equal(sig_err("v=1; a=rsa-sha256; d=example.org; s=sel; h=From; bh=AAAA", &err), DKIM_E_MISSING);
	assert_string_equal(err, "missing b=");
	assert_int_equal(sig_err("v=1; a=rsa-sha256; d=example.org; h=From; bh=AAAA; b=AAAA", &err), DKIM_E_MISSING);
	assert_int_equal(sig_err("v=1; a=rsa-sha256; s=s; h=From; bh=AAAA; b=AAAA", &err), DKIM_E_MISSING);
	assert_int_equal(sig_err("v=1; a=rsa-sha256; d=e.org; s=s; bh=AAAA; b=AAAA", &err), DKIM_E_MISSING);
	assert_int_equal(sig_err("v=1; a=rsa-sha256; d=e.org; s=s; h=From; b=AAAA", &err), DKIM_E_MISSING);
	assert_int_equal(sig_err("v=1; d=e.org; s=s; h=From; bh=AAAA; b=AAAA", &err), DKIM_E_MISSING);
	/* duplicates */
	assert_int_equal(sig_err(GOOD_SIG "; d=example.org", &err), DKIM_E_DUP);
	assert_int_equal(sig_err(GOOD_SIG "; foo=1; foo=2", &err), DKIM_E_DUP);
	/* base64 */
	assert_int_equal(sig_err("v=1; a=rsa-sha256; d=e.org; s=s; h=From; bh=AAAA; b=A!AA", &err), DKIM_E_SYNTAX);
	assert_string_equal(err, "bad base64 in b=");
	assert_int_equal(sig_err("v=1; a=rsa-sha256; d=e.org; s=s; h=From; bh=AAA; b=", &err), DKIM_E_SYNTAX);
	/* i= within d= */
	assert_int_equal(sig_err(GOOD_SIG "; i=@example.org", &err), 1);
	assert_int_equal(sig_err(GOOD_SIG "; i=a@sub.EXAMPLE.org", &err), 1);
	assert_int_equal(sig_err(GOOD_SIG "; i=a@badexample.org", &err), DKIM_E_VALUE);
	assert_string_equal(err, "i= is not within d=");
	assert_int_equal(sig_err(GOOD_SIG "; i=a@org", &err), DKIM_E_VALUE);
	assert_int_equal(sig_err(GOOD_SIG "; i=nodomain", &err), DKIM_E_SYNTAX);
	/* h= must include From */
	assert_int_equal(sig_err("v=1; a=rsa-sha256; d=e.org; s=s; h=To:Subject; bh=AAAA; b=AAAA", &err), DKIM_E_VALUE);
	assert_string_equal(err, "h= does not include From");
	assert_int_equal(sig_err("v=1; a=rsa-sha256; d=e.org; s=s; h=From::To; bh=AAAA; b=AAAA", &err), DKIM_E_SYNTAX);
	/* other values */
	assert_int_equal(sig_err("v=2; a=rsa-sha256; d=e.org; s=s; h=From; bh=AAAA; b=AAAA", &err), DKIM_E_VALUE);
	assert_int_equal(sig_err(GOOD_SIG "; c=bogus/simple", &err), DKIM_E_VALUE);
	assert_int_equal(sig_err(GOOD_SIG "; q=http/well-known", &err), DKIM_E_VALUE);
	assert_int_equal(sig_err(GOOD_SIG "; t=10; x=5", &err), DKIM_E_VALUE);
	assert_int_equal(sig_err(GOOD_SIG "; t=1234567890123", &err), DKIM_E_SYNTAX);
	assert_int_equal(sig_err(GOOD_SIG "; l=-1", &err), DKIM_E_SYNTAX);
	assert_int_equal(sig_err("v=1; a=rsa-sha256; d=e..org; s=s; h=From; bh=AAAA; b=AAAA", &err), DKIM_E_SYNTAX);
	assert_int_equal(sig_err("v=1; a=rsa-sha256; d=e.org; s=s s; h=From; bh=AAAA; b=AAAA", &err), DKIM_E_SYNTAX);
	assert_int_equal(sig_err(GOOD_SIG "; bh=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", &err),
			 DKIM_E_DUP);
}

static void
test_key_parse(void **state)
{
	static struct dkim_key key;
	const char *err = "";
	const char *k1 = "v=DKIM1; k=ed25519; h=sha1:sha256; s=email; t=y:s; n=notes; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=";

	assert_int_equal(dkim_key_parse(k1, strlen(k1), &key, &err), 1);
	assert_int_equal(key.type, DKIM_KEY_ED25519);
	assert_true(key.hash_sha256 && key.for_email && key.testing && key.strict_i && !key.revoked);
	assert_int_equal(key.p_len, 32);

	assert_int_equal(dkim_key_parse("p=", 2, &key, &err), 1);
	assert_true(key.revoked && key.type == DKIM_KEY_RSA && key.hash_sha256 && key.for_email);
	assert_int_equal(dkim_key_parse("v=DKIM1; h=sha1; s=other:x; k=dsa; p=AAAA", 41, &key, &err), 1);
	assert_true(!key.hash_sha256 && !key.for_email && key.type == DKIM_KEY_UNKNOWN);
	assert_int_equal(dkim_key_parse("s=*; p=AAAA", 11, &key, &err), 1);
	assert_true(key.for_email);

	assert_int_equal(dkim_key_parse("k=rsa; v=DKIM1; p=AAAA", 22, &key, &err), DKIM_E_VALUE);
	assert_int_equal(dkim_key_parse("v=DKIM2; p=AAAA", 15, &key, &err), DKIM_E_VALUE);
	assert_int_equal(dkim_key_parse("v=DKIM1; k=rsa", 14, &key, &err), DKIM_E_MISSING);
	assert_int_equal(dkim_key_parse("v=DKIM1; p=A!AA", 15, &key, &err), DKIM_E_SYNTAX);
	assert_int_equal(dkim_key_parse("p=AAAA; p=AAAA", 14, &key, &err), DKIM_E_DUP);
	assert_int_equal(dkim_key_parse("v=DKIM1; bogus", 14, &key, &err), DKIM_E_SYNTAX);
}

/* ------------------------------------------------------------------ */
/* Header section and canonicalization                                 */

static void
test_hdrs(void **state)
{
	const char msg[] = "From: a" CRLF "Subject: x" CRLF "\ty" CRLF "Bare: lf\n" "NoColon" CRLF "To : b" CRLF CRLF "body";
	struct dkim_hdrs h;
	ssize_t r = 0;
	size_t i;

	/* one byte at a time */
	dkim_hdrs_init(&h, 4096, 100);
	for (i = 0; i < sizeof(msg) - 1; i++) {
		r = dkim_hdrs_feed(&h, msg + i, 1);
		assert_true(r >= 0);
		if (r > 0)
			break;
	}
	assert_int_equal(r, 1);
	assert_int_equal(i + 1, strlen(msg) - 4);
	assert_int_equal(h.nfields, 5);
	assert_true(dkim_hdrs_is(&h, 0, "FROM", 4));
	assert_int_equal(h.fields[1].len, strlen("Subject: x" CRLF "\ty"));
	assert_true(dkim_hdrs_is(&h, 2, "bare", 4));
	assert_int_equal(h.fields[2].len, 8);
	assert_int_equal(h.fields[3].name_len, 0);
	assert_true(dkim_hdrs_is(&h, 4, "to", 2));
	dkim_hdrs_clear(&h);

	/* whole */
	dkim_hdrs_init(&h, 4096, 100);
	assert_int_equal(dkim_hdrs_feed(&h, msg, strlen(msg)), (ssize_t)strlen(msg) - 4);
	assert_int_equal(h.nfields, 5);
	dkim_hdrs_clear(&h);

	/* empty header section, header without body, limits */
	dkim_hdrs_init(&h, 4096, 100);
	assert_int_equal(dkim_hdrs_feed(&h, CRLF "x", 3), 2);
	assert_int_equal(h.nfields, 0);
	dkim_hdrs_clear(&h);
	dkim_hdrs_init(&h, 4096, 100);
	assert_int_equal(dkim_hdrs_feed(&h, "A: 1" CRLF "B: 2", 10), 0);
	dkim_hdrs_finish(&h);
	assert_int_equal(h.nfields, 2);
	assert_int_equal(h.fields[1].len, 4);
	dkim_hdrs_clear(&h);
	dkim_hdrs_init(&h, 10, 100);
	assert_int_equal(dkim_hdrs_feed(&h, "A: 1234567890", 13), DKIM_E_LIMIT);
	dkim_hdrs_clear(&h);
	dkim_hdrs_init(&h, 4096, 2);
	assert_int_equal(dkim_hdrs_feed(&h, "A: 1" CRLF "B: 2" CRLF "C: 3" CRLF, 18), DKIM_E_LIMIT);
	dkim_hdrs_clear(&h);
}

static void
canon_is(enum dkim_canon c, const char *in, const char *want)
{
	struct mbuf m;

	mbuf_init(&m, 4096);
	assert_int_equal(dkim_canon_header(c, in, strlen(in), &m), 0);
	assert_string_equal(m.data, want);
	mbuf_clear(&m);
}

static void
test_canon_header(void **state)
{
	/* RFC 6376 3.4.5 */
	canon_is(DKIM_CANON_RELAXED, "A: X", "a:X");
	canon_is(DKIM_CANON_RELAXED, "B : Y\t" CRLF "\tZ  ", "b:Y Z");
	canon_is(DKIM_CANON_SIMPLE, "B : Y\t" CRLF "\tZ  ", "B : Y\t" CRLF "\tZ  ");
	canon_is(DKIM_CANON_RELAXED, "SubJect:   a  \t b", "subject:a b");
	canon_is(DKIM_CANON_RELAXED, "X:", "x:");
	canon_is(DKIM_CANON_RELAXED, "X:" CRLF " ", "x:");
}

static void
body_is(enum dkim_canon c, int64_t l, const char *in, const char *want)
{
	uint8_t h1[32], h2[32], hw[32];
	uint64_t clen;
	struct mbuf m;
	size_t n = strlen(in);
	size_t wl = strlen(want);

	mbuf_init(&m, 1 << 16);
	body_hash(c, l, in, n, 0, h1, &clen, &m);
	assert_string_equal(m.data ? m.data : "", want);
	assert_int_equal(clen, wl);
	body_hash(c, l, in, n, 1, h2, &clen, NULL);
	assert_memory_equal(h1, h2, 32);
	if (l >= 0 && (size_t)l < wl)
		wl = (size_t)l;
	EVP_Digest(want, wl, hw, NULL, EVP_sha256(), NULL);
	assert_memory_equal(h1, hw, 32);
	mbuf_clear(&m);
}

static void
test_canon_body(void **state)
{
	uint8_t h[32];
	char *s;

	/* RFC 6376 3.4.5 */
	body_is(DKIM_CANON_RELAXED, -1, " C " CRLF "D \t E" CRLF CRLF CRLF, " C" CRLF "D E" CRLF);
	body_is(DKIM_CANON_SIMPLE, -1, " C " CRLF "D \t E" CRLF CRLF CRLF, " C " CRLF "D \t E" CRLF);
	/* empty bodies */
	body_is(DKIM_CANON_SIMPLE, -1, "", CRLF);
	body_is(DKIM_CANON_SIMPLE, -1, CRLF CRLF, CRLF);
	body_is(DKIM_CANON_RELAXED, -1, "", "");
	body_is(DKIM_CANON_RELAXED, -1, "  " CRLF "\t" CRLF, "");
	body_hash(DKIM_CANON_SIMPLE, -1, "", 0, 0, h, NULL, NULL);
	s = b64(h, 32);
	assert_string_equal(s, "frcCV1k9oG9oKj3dpUqdJg1PxRT2RSN/XKdLCPjaYaY=");
	free(s);
	body_hash(DKIM_CANON_RELAXED, -1, "", 0, 0, h, NULL, NULL);
	s = b64(h, 32);
	assert_string_equal(s, "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=");
	free(s);
	/* no final line end, bare LF, bare CR, empty lines in the middle */
	body_is(DKIM_CANON_SIMPLE, -1, "a" CRLF CRLF "b", "a" CRLF CRLF "b" CRLF);
	body_is(DKIM_CANON_RELAXED, -1, "a \t", "a" CRLF);
	body_is(DKIM_CANON_RELAXED, -1, "a\nb\n\n", "a" CRLF "b" CRLF);
	body_is(DKIM_CANON_SIMPLE, -1, "a\rb\r", "a\rb\r" CRLF);
	body_is(DKIM_CANON_RELAXED, -1, "\r\r\n", "\r" CRLF);
	body_is(DKIM_CANON_RELAXED, -1, "  x", " x" CRLF);
	/* l= */
	body_is(DKIM_CANON_SIMPLE, 3, "abcdef" CRLF, "abcdef" CRLF);
	body_is(DKIM_CANON_RELAXED, 0, "abc" CRLF, "abc" CRLF);
	body_is(DKIM_CANON_RELAXED, 100, "abc" CRLF, "abc" CRLF);
	/* RFC 8463 appendix A body */
	body_hash(DKIM_CANON_RELAXED, -1, "Hi." CRLF CRLF "We lost the game.  Are you hungry yet?" CRLF CRLF "Joe." CRLF CRLF,
		  57, 0, h, NULL, NULL);
	s = b64(h, 32);
	assert_string_equal(s, "2jUSOH9NhtVGCQWNr9BrIAPreKQjO6Sn7XIkfJVOzv8=");
	free(s);
}

/* ------------------------------------------------------------------ */
/* RFC 8463 appendix A                                                 */

static const char rfc8463_msg[] =
	"DKIM-Signature: v=1; a=ed25519-sha256; c=relaxed/relaxed;" CRLF
	" d=football.example.com; i=@football.example.com;" CRLF
	" q=dns/txt; s=brisbane; t=1528637909; h=from : to :" CRLF
	" subject : date : message-id : from : subject : date;" CRLF
	" bh=2jUSOH9NhtVGCQWNr9BrIAPreKQjO6Sn7XIkfJVOzv8=;" CRLF
	" b=/gCrinpcQOoIfuHNQIbq4pgh9kyIK3AQUdt9OdqQehSwhEIug4D11Bus" CRLF
	" Fa3bT3FY5OsU7ZbnKELq+eXdp1Q1Dw==" CRLF
	"DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed;" CRLF
	" d=football.example.com; i=@football.example.com;" CRLF
	" q=dns/txt; s=test; t=1528637909; h=from : to : subject :" CRLF
	" date : message-id : from : subject : date;" CRLF
	" bh=2jUSOH9NhtVGCQWNr9BrIAPreKQjO6Sn7XIkfJVOzv8=;" CRLF
	" b=F45dVWDfMbQDGHJFlXUNB2HKfbCeLRyhDXgFpEL8GwpsRe0IeIixNTe3" CRLF
	" DhCVlUrSjV4BwcVcOF6+FF3Zo9Rpo1tFOeS9mPYQTnGdaSGsgeefOsk2Jz" CRLF
	" dA+L10TeYt9BgDfQNZtKdN1WO//KgIqXP7OdEFE4LjFYNcUxZQ4FADY+8=" CRLF
	"From: Joe SixPack <joe@football.example.com>" CRLF
	"To: Suzie Q <suzie@shopping.example.net>" CRLF
	"Subject: Is dinner ready?" CRLF
	"Date: Fri, 11 Jul 2003 21:00:37 -0700 (PDT)" CRLF
	"Message-ID: <20030712040037.46341.5F8J@football.example.com>" CRLF
	CRLF
	"Hi." CRLF
	CRLF
	"We lost the game.  Are you hungry yet?" CRLF
	CRLF
	"Joe." CRLF
	CRLF;

static const struct keyrec rfc8463_keys[] = {
	{"brisbane", "v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="},
	{"test", "v=DKIM1; k=rsa; p=MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQDkHlOQoBTzWRiGs5V6NpP3idY6Wk08a5qhdR6w"
		 "y5bdOKb2jLQiY/J16JYi0Qvx/byYzCNb3W91y3FutACDfzwQ/BC/e/8uBsCR+yz1Lxj+PL6lHvqMKrM3rG4hstT5QjvHO9Pz"
		 "oxZyVYLzBfO2EeC3Ip3G+2kryOTIKT+l/K4w3QIDAQAB"},
};

static void
test_rfc8463(void **state)
{
	enum dkim_status st[4];
	const char *reasons[4];
	size_t len = strlen(rfc8463_msg);
	char *m = strdup(rfc8463_msg);
	char *p;

	assert_int_equal(verify_sync(m, len, rfc8463_keys, 2, 1528637909, st, reasons, 4), 2);
	assert_int_equal(st[0], DKIM_PASS);
	assert_int_equal(st[1], DKIM_PASS);

	/* a header byte */
	p = strstr(m, "dinner");
	*p = 'D';
	assert_int_equal(verify_sync(m, len, rfc8463_keys, 2, 1528637909, st, reasons, 4), 2);
	assert_int_equal(st[0], DKIM_FAIL);
	assert_string_equal(reasons[0], "signature does not verify");
	assert_int_equal(st[1], DKIM_FAIL);
	*p = 'd';
	/* relaxed canonicalization does not see whitespace changes */
	free(m);
	m = malloc(len + 3);
	p = strstr(rfc8463_msg, "Subject: Is");
	memcpy(m, rfc8463_msg, (size_t)(p - rfc8463_msg) + 8);
	strcpy(m + (p - rfc8463_msg) + 8, "  ");
	strcat(m, p + 8);
	assert_int_equal(verify_sync(m, len + 2, rfc8463_keys, 2, 1528637909, st, reasons, 4), 2);
	assert_int_equal(st[0], DKIM_PASS);
	assert_int_equal(st[1], DKIM_PASS);
	free(m);
	/* a body byte */
	m = strdup(rfc8463_msg);
	p = strstr(m, "Joe.");
	*p = 'j';
	assert_int_equal(verify_sync(m, len, rfc8463_keys, 2, 1528637909, st, reasons, 4), 2);
	assert_int_equal(st[0], DKIM_FAIL);
	assert_string_equal(reasons[0], "body hash does not match");
	assert_int_equal(st[1], DKIM_FAIL);
	free(m);
}

/* ------------------------------------------------------------------ */
/* Signed here                                                         */

struct case_ {
	const char *canon, *tags, *hlist;
};

static void
sign_verify(EVP_PKEY *pk, const char *algo, const char *keyextra, const char *tags, const char *canon,
	    const char *hlist, const char *msg, int64_t now, enum dkim_status want, const char *want_reason)
{
	char *txt = key_txt(pk, keyextra);
	char *signed_msg = sign_msg(msg, pk, algo, canon, hlist, tags, "sel");
	struct keyrec keys[] = {{"sel", txt}};
	enum dkim_status st[2];
	const char *reasons[2];

	assert_int_equal(verify_sync(signed_msg, strlen(signed_msg), keys, 1, now, st, reasons, 2), 1);
	if (st[0] != want)
		fail_msg("%s %s %s: got %s (%s), want %s", algo, canon, tags, dkim_status_name(st[0]), reasons[0],
			 dkim_status_name(want));
	if (want_reason != NULL)
		assert_string_equal(reasons[0], want_reason);
	free(txt);
	free(signed_msg);
}

static void
test_sign_verify(void **state)
{
	static const char *const canons[] = {"simple/simple", "relaxed/relaxed", "simple/relaxed", "relaxed/simple"};
	EVP_PKEY *keys[] = {rsa2048, ed};
	const char *algos[] = {"rsa-sha256", "ed25519-sha256"};
	int64_t now = time(NULL);

	for (size_t k = 0; k < 2; k++) {
		for (size_t c = 0; c < ARRAY_LEN(canons); c++) {
			sign_verify(keys[k], algos[k], "", "", canons[c], "From:To:Subject:Date:Message-ID", plain_msg, now,
				    DKIM_PASS, "");
			/* over-signed and absent names */
			sign_verify(keys[k], algos[k], "", "", canons[c], "From:From:Subject:Subject:Reply-To:Cc", plain_msg,
				    now, DKIM_PASS, "");
			sign_verify(keys[k], algos[k], "", "l=10", canons[c], "From", plain_msg, now, DKIM_PASS, "");
			sign_verify(keys[k], algos[k], "", "i=joe@sub.example.org; t=100; x=9999999999", canons[c],
				    "from:to", plain_msg, now, DKIM_PASS, "");
		}
	}
	/* expired, testing, strict identity, revoked, wrong key type, weak RSA, rsa-sha1, key flags */
	sign_verify(ed, "ed25519-sha256", "", "t=100; x=200", "relaxed/relaxed", "From", plain_msg, now, DKIM_FAIL,
		    "signature expired");
	sign_verify(ed, "ed25519-sha256", " t=s;", "i=@sub.example.org", "relaxed/relaxed", "From", plain_msg, now,
		    DKIM_PERMERROR, "key requires i= in d= exactly (t=s)");
	sign_verify(ed, "ed25519-sha256", " t=s;", "i=@example.org", "relaxed/relaxed", "From", plain_msg, now,
		    DKIM_PASS, "");
	sign_verify(ed, "ed25519-sha256", " s=other;", "", "relaxed/relaxed", "From", plain_msg, now, DKIM_PERMERROR,
		    "key not for email (s=)");
	sign_verify(ed, "ed25519-sha256", " h=sha1;", "", "relaxed/relaxed", "From", plain_msg, now, DKIM_PERMERROR,
		    "key does not allow sha256 (h=)");
	sign_verify(rsa2048, "ed25519-sha256", "", "", "relaxed/relaxed", "From", plain_msg, now, DKIM_PERMERROR,
		    "key type does not match the algorithm");
	sign_verify(rsa512, "rsa-sha256", "", "", "relaxed/relaxed", "From", plain_msg, now, DKIM_PERMERROR,
		    "RSA key under 1024 bits (RFC 8301)");
	sign_verify(rsa2048, "rsa-sha1", "", "", "relaxed/relaxed", "From", plain_msg, now, DKIM_POLICY,
		    "rsa-sha1 is not accepted (RFC 8301)");

	/* key type mismatch and a revoked key, through the records */
	{
		char *m = sign_msg(plain_msg, ed, "ed25519-sha256", "relaxed/relaxed", "From", "", "sel");
		char *rsatxt = key_txt(rsa2048, "");
		struct keyrec k1[] = {{"sel", rsatxt}};
		struct keyrec k2[] = {{"sel", "v=DKIM1; k=ed25519; p="}};
		enum dkim_status st[1];
		const char *reasons[1];

		assert_int_equal(verify_sync(m, strlen(m), k1, 1, now, st, reasons, 1), 1);
		assert_int_equal(st[0], DKIM_PERMERROR);
		assert_string_equal(reasons[0], "key type does not match the algorithm");
		assert_int_equal(verify_sync(m, strlen(m), k2, 1, now, st, reasons, 1), 1);
		assert_int_equal(st[0], DKIM_PERMERROR);
		assert_string_equal(reasons[0], "key revoked");
		free(rsatxt);
		free(m);
	}
	/* changes after signing: a new bottom From is picked up; l= leaves appended text alone */
	{
		char *txt = key_txt(ed, "");
		struct keyrec keys1[] = {{"sel", txt}};
		char *m = sign_msg(plain_msg, ed, "ed25519-sha256", "relaxed/relaxed", "From:Subject", "l=20", "sel");
		char *m2 = malloc(strlen(m) + 64);
		char *body = strstr(m, CRLF CRLF);
		enum dkim_status st[1];
		const char *reasons[1];

		strcpy(m2, m);
		strcat(m2, "appended" CRLF);
		assert_int_equal(verify_sync(m2, strlen(m2), keys1, 1, now, st, reasons, 1), 1);
		assert_int_equal(st[0], DKIM_PASS);
		memcpy(m2, m, (size_t)(body - m));
		strcpy(m2 + (body - m), CRLF "From: evil@example.com");
		strcat(m2, body);
		assert_int_equal(verify_sync(m2, strlen(m2), keys1, 1, now, st, reasons, 1), 1);
		assert_int_equal(st[0], DKIM_FAIL);
		/* a From added at the top is not signed over and does not matter */
		strcpy(m2, "From: top@example.com" CRLF);
		strcat(m2, m);
		assert_int_equal(verify_sync(m2, strlen(m2), keys1, 1, now, st, reasons, 1), 1);
		assert_int_equal(st[0], DKIM_PASS);
		free(m2);
		free(m);
		free(txt);
	}
}

/* ------------------------------------------------------------------ */
/* The asynchronous verifier                                           */

struct async_out {
	struct event_base *base;
	struct dkim_verify *v;
	int calls;
	size_t n;
	enum dkim_status st[8];
	char domain[8][64];
	char reason[8][80];
	bool testing[8];
	int bits[8];
	char err[128];
	bool free_in_cb;
};

static void
async_done(void *arg, const struct dkim_result *res, size_t n, const char *err)
{
	struct async_out *o = arg;

	o->calls++;
	o->n = n;
	for (size_t k = 0; k < n && k < 8; k++) {
		o->st[k] = res[k].status;
		snprintf(o->domain[k], sizeof(o->domain[k]), "%s", res[k].domain);
		snprintf(o->reason[k], sizeof(o->reason[k]), "%s", res[k].reason);
		o->testing[k] = res[k].testing;
		o->bits[k] = res[k].key_bits;
	}
	snprintf(o->err, sizeof(o->err), "%s", err ? err : "");
	if (o->free_in_cb)
		dkim_verify_free(&o->v);
}

/* Write prefix + msg to a temp file; run the verifier to its end. */
static void
run_async(struct dns *d, struct event_base *base, const char *msg, const struct dkim_limits *lim,
	  struct async_out *o, bool free_in_cb)
{
	static const char prefix[] = "Received: from x ([127.0.0.1])" CRLF "\tby us; Fri, 1 Jan 2021" CRLF;
	char path[] = "/tmp/dkimtestXXXXXX";
	int fd = mkstemp(path);

	assert_true(fd >= 0);
	unlink(path);
	assert_int_equal(write(fd, prefix, strlen(prefix)), (ssize_t)strlen(prefix));
	assert_int_equal(write(fd, msg, strlen(msg)), (ssize_t)strlen(msg));
	memset(o, 0, sizeof(*o));
	o->free_in_cb = free_in_cb;
	o->v = dkim_verify_start(base, d, fd, strlen(prefix), lim, 1528637909, async_done, o);
	assert_non_null(o->v);
	assert_int_equal(o->calls, 0); /* never from inside start */
	close(fd);
	event_base_dispatch(base);
	assert_int_equal(o->calls, 1);
	dkim_verify_free(&o->v);
}

static void
breaker(evutil_socket_t fd, short what, void *arg)
{
	event_base_loopbreak(arg);
}

static void
test_async(void **state)
{
	struct event_base *base = event_base_new();
	struct dns *d = dns_new_fake(base);
	struct dkim_limits lim;
	struct async_out o;
	char *ed_txt = key_txt(ed, " t=y;");
	char *m, *big;

	assert_int_equal(dns_fake_add(d, "brisbane._domainkey.football.example.com", DNS_T_TXT, rfc8463_keys[0].txt), 1);
	assert_int_equal(dns_fake_add(d, "test._domainkey.football.example.com", DNS_T_TXT, rfc8463_keys[1].txt), 1);
	assert_int_equal(dns_fake_add(d, "sel._domainkey.example.org", DNS_T_TXT, ed_txt), 1);
	dns_fake_status(d, "tmp._domainkey.example.org", DNS_T_TXT, DNS_TEMPERROR);

	run_async(d, base, rfc8463_msg, NULL, &o, false);
	assert_int_equal(o.n, 2);
	assert_int_equal(o.st[0], DKIM_PASS);
	assert_int_equal(o.st[1], DKIM_PASS);
	assert_string_equal(o.domain[0], "football.example.com");
	assert_int_equal(o.bits[0], 256);
	assert_int_equal(o.bits[1], 1024);

	/* small read slices, freed inside the callback */
	dkim_limits_default(&lim);
	lim.read_chunk = 7;
	run_async(d, base, rfc8463_msg, &lim, &o, true);
	assert_int_equal(o.n, 2);
	assert_int_equal(o.st[0], DKIM_PASS);
	assert_int_equal(o.st[1], DKIM_PASS);

	/* a signature limit of 1 */
	lim.max_signatures = 1;
	run_async(d, base, rfc8463_msg, &lim, &o, false);
	assert_int_equal(o.n, 2);
	assert_int_equal(o.st[0], DKIM_PASS);
	assert_int_equal(o.st[1], DKIM_NEUTRAL);

	/* too big to hash */
	dkim_limits_default(&lim);
	lim.max_hash_bytes = strlen(rfc8463_msg) - 10;
	run_async(d, base, rfc8463_msg, &lim, &o, false);
	assert_int_equal(o.n, 2);
	assert_int_equal(o.st[0], DKIM_POLICY);

	/* header over the limit */
	lim.max_header_bytes = 100;
	lim.max_hash_bytes = 1 << 20;
	run_async(d, base, rfc8463_msg, &lim, &o, false);
	assert_int_equal(o.n, 0);
	assert_string_equal(o.err, "header section over the limit");

	/* unsigned */
	run_async(d, base, plain_msg, NULL, &o, false);
	assert_int_equal(o.n, 0);
	assert_string_equal(o.err, "");

	/* signed here, testing key; a missing key; a failing lookup; a broken header */
	m = sign_msg(plain_msg, ed, "ed25519-sha256", "relaxed/simple", "From:To", "", "sel");
	{
		char *m2 = sign_msg(m, ed, "ed25519-sha256", "relaxed/simple", "From", "", "nokey");
		char *m3 = sign_msg(m2, ed, "ed25519-sha256", "relaxed/simple", "From", "", "tmp");
		char *m4 = malloc(strlen(m3) + 64);

		sprintf(m4, "DKIM-Signature: v=1; bogus" CRLF "%s", m3);
		run_async(d, base, m4, NULL, &o, false);
		assert_int_equal(o.n, 4);
		assert_int_equal(o.st[0], DKIM_PERMERROR);
		assert_string_equal(o.reason[0], "expected '=' after a tag name");
		assert_int_equal(o.st[1], DKIM_TEMPERROR);
		assert_int_equal(o.st[2], DKIM_PERMERROR);
		assert_string_equal(o.reason[2], "no key record");
		assert_int_equal(o.st[3], DKIM_PASS);
		assert_true(o.testing[3]);
		free(m2);
		free(m3);
		free(m4);
	}
	/* cancelled: freed before the loop runs, no callback */
	{
		char path[] = "/tmp/dkimtestXXXXXX";
		int fd = mkstemp(path);

		unsigned nlookups = dns_lookup_count(d);

		unlink(path);
		assert_int_equal(write(fd, m, strlen(m)), (ssize_t)strlen(m));
		memset(&o, 0, sizeof(o));
		o.v = dkim_verify_start(base, d, fd, 0, NULL, 0, async_done, &o);
		close(fd);
		dkim_verify_free(&o.v);
		event_base_dispatch(base);
		assert_int_equal(o.calls, 0);
		/* cancelled while the lookup is out */
		strcpy(path, "/tmp/dkimtestXXXXXX");
		fd = mkstemp(path);
		unlink(path);
		assert_int_equal(write(fd, m, strlen(m)), (ssize_t)strlen(m));
		/* The first slice holds the header: the lookup starts; the breaker
		 * event queued behind it stops the loop before the answer. */
		dkim_limits_default(&lim);
		lim.read_chunk = (size_t)(strstr(m, CRLF CRLF) - m) + 10;
		o.v = dkim_verify_start(base, d, fd, 0, &lim, 0, async_done, &o);
		close(fd);
		{
			struct event *brk = event_new(base, -1, 0, breaker, base);
			event_active(brk, EV_TIMEOUT, 0);
			event_base_dispatch(base);
			event_free(brk);
		}
		assert_int_equal(dns_lookup_count(d), nlookups + 1);
		assert_int_equal(o.calls, 0);
		dkim_verify_free(&o.v);
		event_base_dispatch(base);
		assert_int_equal(o.calls, 0);
	}
	/* a bigger message: time it (printed, not asserted) */
	big = malloc(1 << 20);
	strcpy(big, plain_msg);
	while (strlen(big) < 4096)
		strcat(big, "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod." CRLF);
	free(m);
	m = sign_msg(big, ed, "ed25519-sha256", "relaxed/relaxed", "From:To:Subject", "", "sel");
	{
		struct timespec t0, t1;
		clock_gettime(CLOCK_MONOTONIC, &t0);
		for (int i = 0; i < 100; i++) {
			run_async(d, base, m, NULL, &o, false);
			assert_int_equal(o.st[0], DKIM_PASS);
		}
		clock_gettime(CLOCK_MONOTONIC, &t1);
		fprintf(stderr, "dkim: %zu-byte message, ed25519, fake dns: %.1f us per verification\n", strlen(m),
			((t1.tv_sec - t0.tv_sec) * 1e9 + (t1.tv_nsec - t0.tv_nsec)) / 100 / 1e3);
	}
	free(big);
	free(m);
	free(ed_txt);
	dns_free(&d);
	event_base_free(base);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_tags),
		cmocka_unit_test(test_base64),
		cmocka_unit_test(test_sig_parse),
		cmocka_unit_test(test_key_parse),
		cmocka_unit_test(test_hdrs),
		cmocka_unit_test(test_canon_header),
		cmocka_unit_test(test_canon_body),
		cmocka_unit_test(test_rfc8463),
		cmocka_unit_test(test_sign_verify),
		cmocka_unit_test(test_async),
	};

	return cmocka_run_group_tests(tests, setup_keys, teardown_keys);
}

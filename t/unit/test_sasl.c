/* Tests for daemon/sasl: RFC vectors, every client error path, secrets. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "daemon/sasl.h"

static const uint8_t fake_key[] = "0123456789abcdef0123456789abcdef";

/* ---- helpers ---- */

static size_t
b64dec(const char *s, uint8_t *buf, size_t max)
{
	struct mbuf b;
	size_t n;

	mbuf_init(&b, max);
	assert_true(sasl_base64_decode(s, strlen(s), &b) >= 0);
	n = b.len;
	memcpy(buf, b.data, n);
	mbuf_clear(&b);
	return n;
}

/*
 * Test accounts: "user"/"pencil" with the RFC 5802 (SHA-1) and RFC 7677
 * (SHA-256) salts, "tim"/"tanstaaftanstaaf" (RFC 2195), "nosecret" without
 * secrets, "broken" makes the lookup fail.
 */
static int
test_lookup(void *arg, const char *username, struct sasl_secrets *r)
{
	uint8_t salt[64];
	size_t n;
	const char *pw;

	(*(int *)arg)++;
	memset(r, 0, sizeof(*r));
	if (strcmp(username, "broken") == 0)
		return -1;
	if (strcmp(username, "nosecret") == 0)
		return 1;
	if (strcmp(username, "badrec") == 0) {
		r->flags = SASL_SECRET_SCRAM_SHA256; /* salt and iterations 0 */
		return 1;
	}
	if (strcmp(username, "user") == 0)
		pw = "pencil";
	else if (strcmp(username, "tim") == 0)
		pw = "tanstaaftanstaaf";
	else if (strcmp(username, "us,er=") == 0)
		pw = "pencil";
	else
		return 0;
	n = b64dec("QSXCR+Q6sek8bf92", salt, sizeof(salt));
	assert_int_equal(sasl_scram_secret_derive(SASL_SCRAM_SHA1, pw, strlen(pw),
						  salt, n, 4096, &r->scram_sha1), 1);
	n = b64dec("W22ZaJ0SNY7soEsUEjb6gQ==", salt, sizeof(salt));
	assert_int_equal(sasl_scram_secret_derive(SASL_SCRAM_SHA256, pw,
						  strlen(pw), salt, n, 4096,
						  &r->scram_sha256), 1);
	sasl_cram_md5_secret_derive(pw, strlen(pw), r->cram_md5);
	r->flags = SASL_SECRET_SCRAM_SHA1 | SASL_SECRET_SCRAM_SHA256 |
		   SASL_SECRET_CRAM_MD5;
	return 1;
}

static int lookups;

static struct sasl_server_settings
settings(const char *cb_type, const char *cb_data)
{
	struct sasl_server_settings set;

	memset(&set, 0, sizeof(set));
	set.lookup = test_lookup;
	set.lookup_arg = &lookups;
	set.hostname = "mail.example";
	set.fake_key = fake_key;
	set.fake_key_len = sizeof(fake_key) - 1;
	set.cb_type = cb_type;
	set.cb_data = (const uint8_t *)cb_data;
	set.cb_data_len = cb_data ? strlen(cb_data) : 0;
	return set;
}

static enum sasl_result
step_str(struct sasl_server *s, const char *in, struct mbuf *out)
{
	return sasl_step(s, in, in ? strlen(in) : 0, out);
}

/*
 * The client side of SCRAM: the client-final message (with proof) for
 * password, and the server signature expected in server-final.
 */
static void
scram_client(enum sasl_mech mech, const char *password, const char *first_bare,
	     const char *server_first, const char *final_noproof,
	     struct mbuf *final_r, struct mbuf *verifier_r)
{
	bool sha1 = mech == SASL_MECH_SCRAM_SHA_1 ||
		    mech == SASL_MECH_SCRAM_SHA_1_PLUS;
	const EVP_MD *md = sha1 ? EVP_sha1() : EVP_sha256();
	size_t klen = sha1 ? 20 : 32, i;
	uint8_t salt[64], salted[32], ckey[32], skey[32], stored[32], sig[32];
	char am[4096], saltb64[128];
	const char *sp, *ip;
	unsigned int hl;
	size_t saltn;
	int iter;

	sp = strstr(server_first, ",s=") + 3;
	ip = strstr(server_first, ",i=");
	memcpy(saltb64, sp, (size_t)(ip - sp));
	saltb64[ip - sp] = '\0';
	saltn = b64dec(saltb64, salt, sizeof(salt));
	iter = atoi(ip + 3);
	assert_int_equal(PKCS5_PBKDF2_HMAC(password, (int)strlen(password), salt,
					   (int)saltn, iter, md, (int)klen,
					   salted), 1);
	HMAC(md, salted, (int)klen, (const uint8_t *)"Client Key", 10, ckey, &hl);
	HMAC(md, salted, (int)klen, (const uint8_t *)"Server Key", 10, skey, &hl);
	EVP_Digest(ckey, klen, stored, &hl, md, NULL);
	snprintf(am, sizeof(am), "%s,%s,%s", first_bare, server_first,
		 final_noproof);
	HMAC(md, stored, (int)klen, (const uint8_t *)am, strlen(am), sig, &hl);
	for (i = 0; i < klen; i++)
		ckey[i] ^= sig[i];
	mbuf_reset(final_r);
	mbuf_printf(final_r, "%s,p=", final_noproof);
	sasl_base64_encode(ckey, klen, final_r);
	HMAC(md, skey, (int)klen, (const uint8_t *)am, strlen(am), sig, &hl);
	mbuf_reset(verifier_r);
	mbuf_adds(verifier_r, "v=");
	sasl_base64_encode(sig, klen, verifier_r);
}

/* ---- base64 ---- */

static void
test_base64(void **state)
{
	static const char *const bad[] = {
		"Zg=", "Zh==", "Zm9=", "Zm9v\n", "Z===", "====", "=Zm9", "Zm=v",
		"Zm9v Zm9v", "Zg==Zm9v", "Zm9v====", "Zm-v", "Zm_v", "A",
	};
	struct mbuf b;
	size_t i;

	mbuf_init(&b, 16);
	assert_int_equal(sasl_base64_decode("", 0, &b), 0);
	assert_int_equal(sasl_base64_decode("Zg==", 4, &b), 1);
	assert_int_equal(sasl_base64_decode("Zm8=", 4, &b), 2);
	assert_int_equal(sasl_base64_decode("Zm9v", 4, &b), 3);
	assert_int_equal(b.len, 6);
	assert_memory_equal(b.data, "ffofoo", 6);
	for (i = 0; i < ARRAY_LEN(bad); i++) {
		mbuf_reset(&b);
		assert_int_equal(sasl_base64_decode(bad[i], strlen(bad[i]), &b), -1);
		assert_int_equal(b.len, 0);
	}
	mbuf_reset(&b);
	assert_int_equal(sasl_base64_decode("Zm9vZm9vZm9vZm9vZm9vZm9v", 24, &b), -2);
	assert_int_equal(b.len, 0);
	mbuf_reset(&b);
	assert_int_equal(sasl_base64_encode("foob", 4, &b), 0);
	assert_string_equal(b.data, "Zm9vYg==");
	mbuf_reset(&b);
	assert_int_equal(sasl_base64_encode("", 0, &b), 0);
	assert_int_equal(b.len, 0);
	assert_int_equal(sasl_base64_encode("0123456789abcdef", 16, &b), -1);
	assert_int_equal(b.len, 0);
	mbuf_clear(&b);
}

/* ---- secrets ---- */

static void
test_secrets_roundtrip(void **state)
{
	struct sasl_secrets s, p;
	const char *err = NULL;
	struct mbuf b;

	assert_int_equal(sasl_secrets_derive("pencil", 0, &s, &err), 1);
	assert_int_equal(s.flags, SASL_SECRET_SCRAM_SHA1 |
					  SASL_SECRET_SCRAM_SHA256 |
					  SASL_SECRET_CRAM_MD5);
	assert_int_equal(s.scram_sha1.iterations, 4096);
	assert_int_equal(s.scram_sha256.salt_len, SASL_SALT_LEN);
	assert_memory_not_equal(s.scram_sha1.salt, s.scram_sha256.salt,
				SASL_SALT_LEN);
	assert_int_equal(sasl_secrets_verify_password(&s, "pencil", 6), 1);
	assert_int_equal(sasl_secrets_verify_password(&s, "pencil2", 7), 0);
	assert_int_equal(sasl_secrets_verify_password(&s, "", 0), 0);
	assert_int_equal(sasl_secrets_verify_password(&s, "pen\x01il", 6), 0);

	mbuf_init(&b, 1024);
	assert_int_equal(sasl_secrets_serialize(&s, &b), 1);
	assert_int_equal(b.len, 1 + (3 + 5 + 16 + 40) + (3 + 5 + 16 + 64) + 35);
	assert_int_equal(sasl_secrets_parse(b.data, b.len, &p, &err), 1);
	assert_memory_equal(&p, &s, sizeof(s));
	assert_int_equal(sasl_secrets_verify_password(&p, "pencil", 6), 1);

	/* Every truncation fails. */
	for (size_t n = 0; n < b.len; n++) {
		if (n == 1 || n == 1 + 64 || n == 1 + 64 + 88)
			continue; /* record boundaries: valid subsets */
		assert_int_equal(sasl_secrets_parse(b.data, n, &p, &err), -1);
		assert_non_null(err);
		assert_int_equal(p.flags, 0);
	}
	assert_int_equal(sasl_secrets_parse(b.data, 1 + 64, &p, &err), 1);
	assert_int_equal(p.flags, SASL_SECRET_SCRAM_SHA1);

	/* Unknown tag skipped, duplicate refused, wrong version refused. */
	mbuf_add(&b, "\x09\x00\x02xy", 5);
	assert_int_equal(sasl_secrets_parse(b.data, b.len, &p, &err), 1);
	{
		char rec[64];

		memcpy(rec, b.data + 1, sizeof(rec));
		mbuf_add(&b, rec, sizeof(rec));
	}
	assert_int_equal(sasl_secrets_parse(b.data, b.len, &p, &err), -1);
	b.data[0] = 2;
	assert_int_equal(sasl_secrets_parse(b.data, 1, &p, &err), -1);
	/* Zero iterations refused. */
	b.data[0] = 1;
	b.data[4] = b.data[5] = b.data[6] = b.data[7] = 0;
	assert_int_equal(sasl_secrets_parse(b.data, 1 + 64, &p, &err), -1);

	/* An empty account serializes to the version byte. */
	memset(&p, 0, sizeof(p));
	mbuf_reset(&b);
	assert_int_equal(sasl_secrets_serialize(&p, &b), 1);
	assert_int_equal(b.len, 1);
	mbuf_clear(&b);

	/* Output limit. */
	mbuf_init(&b, 10);
	assert_int_equal(sasl_secrets_serialize(&s, &b), -1);
	assert_int_equal(b.len, 0);
	mbuf_clear(&b);
	sasl_secrets_clear(&s);
	sasl_secrets_clear(&p);
}

static void
test_secrets_derive_errors(void **state)
{
	struct sasl_secrets s;
	const char *err = NULL;

	assert_int_equal(sasl_secrets_derive("", 0, &s, &err), -1);
	assert_non_null(err);
	assert_int_equal(sasl_secrets_derive("a\tb", 0, &s, &err), -1);
	assert_int_equal(sasl_secrets_derive("a\x7f", 0, &s, &err), -1);
	assert_int_equal(sasl_secrets_derive("a\xc2\x85", 0, &s, &err), -1);
	assert_int_equal(sasl_secrets_derive("\xff\xfe", 0, &s, &err), -1);
	assert_int_equal(sasl_secrets_derive("pencil", 100, &s, &err), -1);
	assert_int_equal(s.flags, 0);
	/* Non-ASCII: space mapped, soft hyphen dropped. */
	assert_int_equal(sasl_secrets_derive("pen\xc2\xa0\xc2\xadx", 0, &s, &err), 1);
	assert_int_equal(sasl_secrets_verify_password(&s, "pen x", 5), 1);
	sasl_secrets_clear(&s);
}

static void
test_password_prep(void **state)
{
	struct mbuf b;

	mbuf_init(&b, 8);
	assert_int_equal(sasl_password_prep("p\xe2\x80\x80w\xef\xbb\xbf", 8, &b), 1);
	assert_string_equal(b.data, "p w");
	mbuf_reset(&b);
	assert_int_equal(sasl_password_prep("\xc2\xad", 2, &b), 0);
	assert_int_equal(sasl_password_prep("\xc0\xaf", 2, &b), 0); /* overlong */
	assert_int_equal(sasl_password_prep("\xed\xa0\x80", 3, &b), 0); /* surrogate */
	assert_int_equal(sasl_password_prep("123456789", 9, &b), -1);
	assert_int_equal(b.len, 0);
	mbuf_clear(&b);
}

static void
test_username_valid(void **state)
{
	char big[SASL_MAX_USERNAME + 1];

	assert_true(sasl_username_valid("mox@localhost", 13));
	assert_true(sasl_username_valid("j\xc3\xb6rg", 5));
	assert_false(sasl_username_valid("", 0));
	assert_false(sasl_username_valid("a\0b", 3));
	assert_false(sasl_username_valid("a\nb", 3));
	assert_false(sasl_username_valid("j\xc3rg", 4));
	assert_false(sasl_username_valid("\xf4\x90\x80\x80", 4)); /* > U+10FFFF */
	memset(big, 'a', sizeof(big));
	assert_true(sasl_username_valid(big, SASL_MAX_USERNAME));
	assert_false(sasl_username_valid(big, sizeof(big)));
}

static void
test_mech_names(void **state)
{
	assert_int_equal(sasl_mech_from_name("scram-sha-256-plus"),
			 SASL_MECH_SCRAM_SHA_256_PLUS);
	assert_int_equal(sasl_mech_from_name("GSSAPI"), -1);
	assert_string_equal(sasl_mech_name(SASL_MECH_CRAM_MD5), "CRAM-MD5");
	assert_true(sasl_mech_is_plus(SASL_MECH_SCRAM_SHA_1_PLUS));
	assert_false(sasl_mech_is_plus(SASL_MECH_SCRAM_SHA_1));
	assert_true(sasl_mech_is_plaintext(SASL_MECH_LOGIN));
	assert_false(sasl_mech_is_plaintext(SASL_MECH_CRAM_MD5));
}

/* ---- SCRAM ---- */

static void
test_scram_sha1_rfc5802(void **state)
{
	struct sasl_server_settings set = settings(NULL, NULL);
	struct sasl_server *s = sasl_server_new(SASL_MECH_SCRAM_SHA_1, &set);
	struct mbuf out;

	mbuf_init(&out, 4096);
	assert_int_equal(sasl_server_set_nonce(s, "3rfcNHYJY1ZVvWVs7j"), 1);
	assert_int_equal(step_str(s, "n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL", &out),
			 SASL_CONTINUE);
	assert_string_equal(out.data, "r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,"
				      "s=QSXCR+Q6sek8bf92,i=4096");
	assert_int_equal(step_str(s, "c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,"
				     "p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=", &out),
			 SASL_SUCCESS);
	assert_string_equal(out.data, "v=rmF9pqV8S7suAoZWja4dJRkFsKQ=");
	assert_string_equal(sasl_server_username(s), "user");
	assert_int_equal(sasl_server_fail_kind(s), SASL_FAIL_NONE);
	/* Over: further steps fail. */
	assert_int_equal(step_str(s, "x", &out), SASL_FAIL);
	sasl_server_free(&s);
	assert_null(s);
	sasl_server_free(&s);
	mbuf_clear(&out);
}

static void
test_scram_sha256_rfc7677(void **state)
{
	struct sasl_server_settings set = settings(NULL, NULL);
	struct sasl_server *s = sasl_server_new(SASL_MECH_SCRAM_SHA_256, &set);
	struct mbuf out;

	mbuf_init(&out, 4096);
	assert_int_equal(sasl_server_set_nonce(s, "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"), 1);
	/* No initial response: empty challenge first. */
	assert_int_equal(sasl_step(s, NULL, 0, &out), SASL_CONTINUE);
	assert_int_equal(out.len, 0);
	assert_int_equal(step_str(s, "n,,n=user,r=rOprNGfwEbeRWgbNEkqO", &out),
			 SASL_CONTINUE);
	assert_string_equal(out.data, "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)"
				      "hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096");
	assert_int_equal(step_str(s, "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxF"
				     "Ilj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
				  &out),
			 SASL_SUCCESS);
	assert_string_equal(out.data, "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=");
	sasl_server_free(&s);
	mbuf_clear(&out);
}

/* The RFC 5802 exchange in wire form through sasl_step_base64. */
static void
test_scram_base64_wire(void **state)
{
	struct sasl_server_settings set = settings(NULL, NULL);
	struct sasl_server *s = sasl_server_new(SASL_MECH_SCRAM_SHA_1, &set);
	struct mbuf in, out;

	mbuf_init(&in, 4096);
	mbuf_init(&out, 4096);
	sasl_server_set_nonce(s, "3rfcNHYJY1ZVvWVs7j");
	sasl_base64_encode("n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL", 36, &in);
	assert_int_equal(sasl_step_base64(s, in.data, in.len, &out), SASL_CONTINUE);
	assert_string_equal(out.data, "cj1meWtvK2QybGJiRmdPTlJ2OXFreGRhd0wzcmZjTkhZSlkxWlZ2"
				      "V1ZzN2oscz1RU1hDUitRNnNlazhiZjkyLGk9NDA5Ng==");
	mbuf_reset(&in);
	mbuf_adds(&in, "Yz1iaXdzLHI9ZnlrbytkMmxiYkZnT05Sdjlxa3hkYXdMM3JmY05IWUpZMVpWdldWczdqLHA9djBYOHYzQnoyVDBDSkdiSlF5RjBYK0hJNFRzPQ==");
	assert_int_equal(sasl_step_base64(s, in.data, in.len, &out), SASL_SUCCESS);
	assert_string_equal(out.data, "dj1ybUY5cHFWOFM3c3VBb1pXamE0ZEpSa0ZzS1E9");
	sasl_server_free(&s);

	/* Bad base64 is a client error. */
	s = sasl_server_new(SASL_MECH_SCRAM_SHA_1, &set);
	assert_int_equal(sasl_step_base64(s, "bix=", 4, &out), SASL_FAIL);
	assert_int_equal(sasl_server_fail_kind(s), SASL_FAIL_PROTOCOL);
	assert_string_equal(sasl_server_reason(s), "bad base64");
	assert_int_equal(out.len, 0);
	sasl_server_free(&s);
	mbuf_clear(&in);
	mbuf_clear(&out);
}

struct first_case {
	const char *msg;
	const char *reason; /* NULL: must continue */
};

/* Client-first messages that must fail (without a lookup where syntax is bad). */
static void
test_scram_bad_first(void **state)
{
	static const struct first_case cases[] = {
		{ "", "short client-first message" },
		{ "x,,n=user,r=abc", "bad gs2 channel binding flag" },
		{ "n,n=user,r=abc", "bad gs2 header" },
		{ "n,a=user", "bad gs2 header" },
		{ "p,,n=user,r=abc", "bad gs2 channel binding flag" },
		{ "p=,,n=user,r=abc", "bad channel binding name" },
		{ "p=tls_x,,n=user,r=abc", "bad channel binding name" },
		{ "p=tls-exporter,,n=user,r=abc",
		  "channel binding requested with a non-PLUS mechanism" },
		{ "n,,m=ext,n=user,r=abc", "mandatory extension" },
		{ "n,,r=abc,n=user", "missing username" },
		{ "n,,n=user", "missing client nonce" },
		{ "n,,n=user,r=", "bad client nonce" },
		{ "n,,n=user,r=a\x7f", "bad client nonce" },
		{ "n,,n=user,r=abc,", "bad extension" },
		{ "n,,n=user,r=abc,x", "bad extension" },
		{ "n,,n=user,r=abc,1=x", "bad extension" },
		{ "n,,n=us=2cer,r=abc", "invalid username" },
		{ "n,,n=us=er,r=abc", "invalid username" },
		{ "n,,n=,r=abc", "invalid username" },
		{ "n,,n=u\xc3,r=abc", "invalid username" },
		{ "n,,n=u\x01,r=abc", "invalid username" },
		{ "n,a=other,n=user,r=abc",
		  "authorization identity differs from username" },
		{ "n,,n=nosecret,r=abc", "account has no SCRAM-SHA-256 secret" },
		{ "n,,n=nobody,r=abc", NULL },
		{ "n,a=user,n=user,r=abc,x=ext", NULL },
		{ "y,,n=user,r=abc", NULL }, /* no channel binding offered */
		{ "n,,n=us=2Cer=3D,r=abc", NULL },
	};
	struct sasl_server_settings set = settings(NULL, NULL);
	struct sasl_server *s;
	struct mbuf out;
	size_t i;

	mbuf_init(&out, 4096);
	for (i = 0; i < ARRAY_LEN(cases); i++) {
		s = sasl_server_new(SASL_MECH_SCRAM_SHA_256, &set);
		if (cases[i].reason == NULL) {
			assert_int_equal(step_str(s, cases[i].msg, &out), SASL_CONTINUE);
		} else {
			assert_int_equal(step_str(s, cases[i].msg, &out), SASL_FAIL);
			assert_string_equal(sasl_server_reason(s), cases[i].reason);
			assert_int_equal(out.len, 0);
			assert_int_equal(sasl_server_fail_kind(s),
					 strstr(cases[i].msg, "nosecret") ?
						 SASL_FAIL_NO_SECRET :
						 SASL_FAIL_PROTOCOL);
		}
		sasl_server_free(&s);
	}
	mbuf_clear(&out);
}

/* Run a SCRAM exchange to server-first; returns the server and fills sf. */
static struct sasl_server *
scram_start(enum sasl_mech mech, const struct sasl_server_settings *set,
	    const char *first, struct mbuf *sf)
{
	struct sasl_server *s = sasl_server_new(mech, set);

	assert_int_equal(step_str(s, first, sf), SASL_CONTINUE);
	return s;
}

static void
test_scram_bad_final(void **state)
{
	struct sasl_server_settings set = settings(NULL, NULL);
	struct sasl_server *s;
	struct mbuf sf, fin, ver, msg;
	char noproof[512];
	const char *nonce;
	size_t nlen;

	mbuf_init(&sf, 4096);
	mbuf_init(&fin, 4096);
	mbuf_init(&ver, 4096);
	mbuf_init(&msg, 4096);

	/* Good exchange with random server nonce. */
	s = scram_start(SASL_MECH_SCRAM_SHA_256, &set, "n,,n=user,r=abc", &sf);
	nonce = sf.data + 2;
	nlen = strcspn(nonce, ",");
	assert_true(nlen > 3 + 16);
	snprintf(noproof, sizeof(noproof), "c=biws,r=%.*s", (int)nlen, nonce);
	scram_client(SASL_MECH_SCRAM_SHA_256, "pencil", "n=user,r=abc", sf.data,
		     noproof, &fin, &ver);
	assert_int_equal(sasl_step(s, fin.data, fin.len, &msg), SASL_SUCCESS);
	assert_string_equal(msg.data, ver.data);
	sasl_server_free(&s);

	/* Wrong password. */
	s = scram_start(SASL_MECH_SCRAM_SHA_256, &set, "n,,n=user,r=abc", &sf);
	snprintf(noproof, sizeof(noproof), "c=biws,r=%.*s", (int)strcspn(sf.data + 2, ","),
		 sf.data + 2);
	scram_client(SASL_MECH_SCRAM_SHA_256, "pencil2", "n=user,r=abc", sf.data,
		     noproof, &fin, &ver);
	assert_int_equal(sasl_step(s, fin.data, fin.len, &msg), SASL_FAIL);
	assert_string_equal(sasl_server_reason(s), "invalid proof");
	assert_int_equal(sasl_server_fail_kind(s), SASL_FAIL_CREDENTIALS);
	sasl_server_free(&s);

	/* Wrong nonce (proof otherwise right for that message). */
	s = scram_start(SASL_MECH_SCRAM_SHA_256, &set, "n,,n=user,r=abc", &sf);
	scram_client(SASL_MECH_SCRAM_SHA_256, "pencil", "n=user,r=abc", sf.data,
		     "c=biws,r=abcXXXXXXXXXXXXXXXXXXXXXXXX", &fin, &ver);
	assert_int_equal(sasl_step(s, fin.data, fin.len, &msg), SASL_FAIL);
	assert_string_equal(sasl_server_reason(s), "nonce mismatch");
	sasl_server_free(&s);

	/* Channel binding value differs from the gs2 header. */
	s = scram_start(SASL_MECH_SCRAM_SHA_256, &set, "n,,n=user,r=abc", &sf);
	snprintf(noproof, sizeof(noproof), "c=eSws,r=%.*s", (int)strcspn(sf.data + 2, ","),
		 sf.data + 2);
	scram_client(SASL_MECH_SCRAM_SHA_256, "pencil", "n=user,r=abc", sf.data,
		     noproof, &fin, &ver);
	assert_int_equal(sasl_step(s, fin.data, fin.len, &msg), SASL_FAIL);
	assert_string_equal(sasl_server_reason(s), "channel binding mismatch");
	sasl_server_free(&s);

	/* Malformed finals. */
	{
		static const char *const bad[] = {
			"", "c=biws", "r=x,c=biws,p=AAAA", "c=biws,r=abc",
			"c=bi,r=abc,p=AAAA", "c=biws,r=abc,p=!!!!",
			"c=biws,r=abc,p=AAAA,x=y", "c=biws,r=abc,1=2,p=AAAA",
			"c=biws,r=abc,p=AAAA\0",
		};
		size_t i;

		for (i = 0; i < ARRAY_LEN(bad); i++) {
			s = scram_start(SASL_MECH_SCRAM_SHA_256, &set,
					"n,,n=user,r=abc", &sf);
			assert_int_equal(sasl_step(s, bad[i],
						   strlen(bad[i]) + (i == 8), &msg),
					 SASL_FAIL);
			assert_int_equal(sasl_server_fail_kind(s), SASL_FAIL_PROTOCOL);
			sasl_server_free(&s);
		}
	}
	/* Proof of the wrong length (a SHA-1 proof for SHA-256). */
	s = scram_start(SASL_MECH_SCRAM_SHA_256, &set, "n,,n=user,r=abc", &sf);
	snprintf(noproof, sizeof(noproof), "c=biws,r=%.*s,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=",
		 (int)strcspn(sf.data + 2, ","), sf.data + 2);
	assert_int_equal(step_str(s, noproof, &msg), SASL_FAIL);
	assert_string_equal(sasl_server_reason(s), "malformed proof");
	sasl_server_free(&s);

	/* No response to server-first. */
	s = scram_start(SASL_MECH_SCRAM_SHA_256, &set, "n,,n=user,r=abc", &sf);
	assert_int_equal(sasl_step(s, NULL, 0, &msg), SASL_FAIL);
	sasl_server_free(&s);

	mbuf_clear(&sf);
	mbuf_clear(&fin);
	mbuf_clear(&ver);
	mbuf_clear(&msg);
}

/* Unknown users get a stable fake salt and fail at the proof, like a wrong password. */
static void
test_scram_unknown_user(void **state)
{
	struct sasl_server_settings set = settings(NULL, NULL);
	struct sasl_server *s;
	struct mbuf sf, sf2, fin, ver, msg;
	char noproof[512];
	const char *salt1, *salt2;

	mbuf_init(&sf, 4096);
	mbuf_init(&sf2, 4096);
	mbuf_init(&fin, 4096);
	mbuf_init(&ver, 4096);
	mbuf_init(&msg, 4096);
	s = scram_start(SASL_MECH_SCRAM_SHA_1, &set, "n,,n=nobody,r=abc", &sf);
	sasl_server_free(&s);
	s = scram_start(SASL_MECH_SCRAM_SHA_1, &set, "n,,n=nobody,r=abc", &sf2);
	salt1 = strstr(sf.data, ",s=");
	salt2 = strstr(sf2.data, ",s=");
	assert_string_equal(salt1, salt2);
	assert_non_null(strstr(sf.data, ",i=4096"));
	snprintf(noproof, sizeof(noproof), "c=biws,r=%.*s", (int)strcspn(sf2.data + 2, ","),
		 sf2.data + 2);
	scram_client(SASL_MECH_SCRAM_SHA_1, "pencil", "n=nobody,r=abc", sf2.data,
		     noproof, &fin, &ver);
	assert_int_equal(sasl_step(s, fin.data, fin.len, &msg), SASL_FAIL);
	assert_string_equal(sasl_server_reason(s), "unknown user");
	assert_int_equal(sasl_server_fail_kind(s), SASL_FAIL_CREDENTIALS);
	assert_string_equal(sasl_server_username(s), "nobody");
	sasl_server_free(&s);

	/* Another user, another salt; another mechanism, another salt. */
	s = scram_start(SASL_MECH_SCRAM_SHA_1, &set, "n,,n=nobody2,r=abc", &sf2);
	assert_string_not_equal(strstr(sf2.data, ",s="), salt1);
	sasl_server_free(&s);
	s = scram_start(SASL_MECH_SCRAM_SHA_256, &set, "n,,n=nobody,r=abc", &sf2);
	assert_string_not_equal(strstr(sf2.data, ",s="), salt1);
	sasl_server_free(&s);

	/* Without a fake key: server error, not a client one. */
	set.fake_key = NULL;
	s = sasl_server_new(SASL_MECH_SCRAM_SHA_1, &set);
	assert_int_equal(step_str(s, "n,,n=nobody,r=abc", &msg), SASL_ERROR);
	sasl_server_free(&s);
	/* Lookup failure is a server error. */
	set = settings(NULL, NULL);
	s = sasl_server_new(SASL_MECH_SCRAM_SHA_1, &set);
	assert_int_equal(step_str(s, "n,,n=broken,r=abc", &msg), SASL_ERROR);
	assert_string_equal(sasl_server_reason(s), "secret lookup failed");
	sasl_server_free(&s);

	mbuf_clear(&sf);
	mbuf_clear(&sf2);
	mbuf_clear(&fin);
	mbuf_clear(&ver);
	mbuf_clear(&msg);
}

/* Channel binding: -PLUS success, data mismatch, type mismatch, downgrade. */
static void
test_scram_plus(void **state)
{
	struct sasl_server_settings set = settings("tls-exporter", "\x01\x02\x03secret");
	struct sasl_server *s;
	struct mbuf sf, fin, ver, msg, cb;
	char noproof[512];

	mbuf_init(&sf, 4096);
	mbuf_init(&fin, 4096);
	mbuf_init(&ver, 4096);
	mbuf_init(&msg, 4096);
	mbuf_init(&cb, 4096);

	/* Success. */
	s = scram_start(SASL_MECH_SCRAM_SHA_256_PLUS, &set,
			"p=tls-exporter,,n=user,r=abc", &sf);
	sasl_base64_encode("p=tls-exporter,,\x01\x02\x03secret", 25, &cb);
	snprintf(noproof, sizeof(noproof), "c=%s,r=%.*s", cb.data,
		 (int)strcspn(sf.data + 2, ","), sf.data + 2);
	scram_client(SASL_MECH_SCRAM_SHA_256_PLUS, "pencil", "n=user,r=abc",
		     sf.data, noproof, &fin, &ver);
	assert_int_equal(sasl_step(s, fin.data, fin.len, &msg), SASL_SUCCESS);
	assert_string_equal(msg.data, ver.data);
	sasl_server_free(&s);

	/* Same, SHA-1 and an authzid. */
	s = scram_start(SASL_MECH_SCRAM_SHA_1_PLUS, &set,
			"p=tls-exporter,a=user,n=user,r=abc", &sf);
	mbuf_reset(&cb);
	sasl_base64_encode("p=tls-exporter,a=user,\x01\x02\x03secret", 31, &cb);
	snprintf(noproof, sizeof(noproof), "c=%s,r=%.*s", cb.data,
		 (int)strcspn(sf.data + 2, ","), sf.data + 2);
	scram_client(SASL_MECH_SCRAM_SHA_1_PLUS, "pencil", "n=user,r=abc",
		     sf.data, noproof, &fin, &ver);
	assert_int_equal(sasl_step(s, fin.data, fin.len, &msg), SASL_SUCCESS);
	sasl_server_free(&s);

	/* Binding data of another connection. */
	s = scram_start(SASL_MECH_SCRAM_SHA_256_PLUS, &set,
			"p=tls-exporter,,n=user,r=abc", &sf);
	mbuf_reset(&cb);
	sasl_base64_encode("p=tls-exporter,,\x01\x02\x03secreT", 25, &cb);
	snprintf(noproof, sizeof(noproof), "c=%s,r=%.*s", cb.data,
		 (int)strcspn(sf.data + 2, ","), sf.data + 2);
	scram_client(SASL_MECH_SCRAM_SHA_256_PLUS, "pencil", "n=user,r=abc",
		     sf.data, noproof, &fin, &ver);
	assert_int_equal(sasl_step(s, fin.data, fin.len, &msg), SASL_FAIL);
	assert_string_equal(sasl_server_reason(s), "channel binding mismatch");
	sasl_server_free(&s);

	/* Header without the binding data. */
	s = scram_start(SASL_MECH_SCRAM_SHA_256_PLUS, &set,
			"p=tls-exporter,,n=user,r=abc", &sf);
	snprintf(noproof, sizeof(noproof), "c=cD10bHMtZXhwb3J0ZXIsLA==,r=%.*s",
		 (int)strcspn(sf.data + 2, ","), sf.data + 2);
	scram_client(SASL_MECH_SCRAM_SHA_256_PLUS, "pencil", "n=user,r=abc",
		     sf.data, noproof, &fin, &ver);
	assert_int_equal(sasl_step(s, fin.data, fin.len, &msg), SASL_FAIL);
	assert_string_equal(sasl_server_reason(s), "channel binding mismatch");
	sasl_server_free(&s);

	/* First-message checks. */
	{
		static const struct {
			enum sasl_mech mech;
			const char *msg, *reason;
		} cases[] = {
			{ SASL_MECH_SCRAM_SHA_256_PLUS, "p=tls-unique,,n=user,r=abc",
			  "unsupported channel binding type" },
			{ SASL_MECH_SCRAM_SHA_256_PLUS, "n,,n=user,r=abc",
			  "-PLUS mechanism without channel binding" },
			{ SASL_MECH_SCRAM_SHA_256_PLUS, "y,,n=user,r=abc",
			  "-PLUS mechanism without channel binding" },
			{ SASL_MECH_SCRAM_SHA_256, "y,,n=user,r=abc",
			  "channel binding downgrade: client supports it, "
			  "server advertised -PLUS" },
			{ SASL_MECH_SCRAM_SHA_1, "y,,n=user,r=abc",
			  "channel binding downgrade: client supports it, "
			  "server advertised -PLUS" },
			{ SASL_MECH_SCRAM_SHA_1, "p=tls-exporter,,n=user,r=abc",
			  "channel binding requested with a non-PLUS mechanism" },
		};
		size_t i;

		for (i = 0; i < ARRAY_LEN(cases); i++) {
			s = sasl_server_new(cases[i].mech, &set);
			assert_int_equal(step_str(s, cases[i].msg, &msg), SASL_FAIL);
			assert_string_equal(sasl_server_reason(s), cases[i].reason);
			assert_int_equal(sasl_server_fail_kind(s), SASL_FAIL_PROTOCOL);
			sasl_server_free(&s);
		}
	}
	/* "n" with a non-PLUS mechanism is fine: the client lacks binding. */
	s = scram_start(SASL_MECH_SCRAM_SHA_256, &set, "n,,n=user,r=abc", &sf);
	sasl_server_free(&s);

	/* -PLUS on a connection without binding. */
	set = settings(NULL, NULL);
	s = sasl_server_new(SASL_MECH_SCRAM_SHA_256_PLUS, &set);
	assert_int_equal(step_str(s, "p=tls-exporter,,n=user,r=abc", &msg), SASL_FAIL);
	assert_string_equal(sasl_server_reason(s),
			    "channel binding not available on this connection");
	sasl_server_free(&s);

	mbuf_clear(&sf);
	mbuf_clear(&fin);
	mbuf_clear(&ver);
	mbuf_clear(&msg);
	mbuf_clear(&cb);
}

/* ---- PLAIN, LOGIN, CRAM-MD5 ---- */

struct plain_case {
	const char *msg;
	size_t len;
	enum sasl_result res;
	enum sasl_fail_kind kind;
};

#define PC(s, res, kind) { s, sizeof(s) - 1, res, kind }

static void
test_plain(void **state)
{
	static const struct plain_case cases[] = {
		PC("\0user\0pencil", SASL_SUCCESS, SASL_FAIL_NONE),
		PC("user\0user\0pencil", SASL_SUCCESS, SASL_FAIL_NONE),
		PC("\0user\0pencil ", SASL_FAIL, SASL_FAIL_CREDENTIALS),
		PC("\0user\0", SASL_FAIL, SASL_FAIL_CREDENTIALS),
		PC("\0nobody\0pencil", SASL_FAIL, SASL_FAIL_CREDENTIALS),
		PC("\0nosecret\0pencil", SASL_FAIL, SASL_FAIL_NO_SECRET),
		PC("other\0user\0pencil", SASL_FAIL, SASL_FAIL_PROTOCOL),
		PC("\0user\0pen\0cil", SASL_FAIL, SASL_FAIL_PROTOCOL),
		PC("\0\0pencil", SASL_FAIL, SASL_FAIL_PROTOCOL),
		PC("\0user", SASL_FAIL, SASL_FAIL_PROTOCOL),
		PC("userpencil", SASL_FAIL, SASL_FAIL_PROTOCOL),
		PC("", SASL_FAIL, SASL_FAIL_PROTOCOL),
		PC("\0us\xffr\0pencil", SASL_FAIL, SASL_FAIL_PROTOCOL),
		PC("\0broken\0pencil", SASL_ERROR, SASL_FAIL_NONE),
	};
	struct sasl_server_settings set = settings(NULL, NULL);
	struct sasl_server *s;
	struct mbuf out;
	size_t i;

	mbuf_init(&out, 1024);
	for (i = 0; i < ARRAY_LEN(cases); i++) {
		s = sasl_server_new(SASL_MECH_PLAIN, &set);
		assert_int_equal(sasl_step(s, cases[i].msg, cases[i].len, &out),
				 cases[i].res);
		assert_int_equal(sasl_server_fail_kind(s), cases[i].kind);
		assert_int_equal(out.len, 0);
		sasl_server_free(&s);
	}
	/* Without initial response. */
	s = sasl_server_new(SASL_MECH_PLAIN, &set);
	assert_int_equal(sasl_step(s, NULL, 0, &out), SASL_CONTINUE);
	assert_int_equal(out.len, 0);
	assert_int_equal(sasl_step(s, "\0user\0pencil", 12, &out), SASL_SUCCESS);
	assert_string_equal(sasl_server_username(s), "user");
	sasl_server_free(&s);
	s = sasl_server_new(SASL_MECH_PLAIN, &set);
	assert_int_equal(sasl_step(s, NULL, 0, &out), SASL_CONTINUE);
	assert_int_equal(sasl_step(s, NULL, 0, &out), SASL_FAIL);
	sasl_server_free(&s);
	mbuf_clear(&out);
}

static void
test_login(void **state)
{
	struct sasl_server_settings set = settings(NULL, NULL);
	struct sasl_server *s;
	struct mbuf out;

	mbuf_init(&out, 1024);
	s = sasl_server_new(SASL_MECH_LOGIN, &set);
	assert_int_equal(sasl_step(s, NULL, 0, &out), SASL_CONTINUE);
	assert_string_equal(out.data, "Username:");
	assert_int_equal(step_str(s, "user", &out), SASL_CONTINUE);
	assert_string_equal(out.data, "Password:");
	assert_int_equal(step_str(s, "pencil", &out), SASL_SUCCESS);
	assert_int_equal(out.len, 0);
	sasl_server_free(&s);

	/* Username as initial response. */
	s = sasl_server_new(SASL_MECH_LOGIN, &set);
	assert_int_equal(step_str(s, "user", &out), SASL_CONTINUE);
	assert_string_equal(out.data, "Password:");
	assert_int_equal(step_str(s, "pencil", &out), SASL_SUCCESS);
	sasl_server_free(&s);

	s = sasl_server_new(SASL_MECH_LOGIN, &set);
	assert_int_equal(step_str(s, "user", &out), SASL_CONTINUE);
	assert_int_equal(step_str(s, "wrong", &out), SASL_FAIL);
	assert_int_equal(sasl_server_fail_kind(s), SASL_FAIL_CREDENTIALS);
	assert_string_equal(sasl_server_reason(s), "wrong password");
	sasl_server_free(&s);

	s = sasl_server_new(SASL_MECH_LOGIN, &set);
	assert_int_equal(sasl_step(s, NULL, 0, &out), SASL_CONTINUE);
	assert_int_equal(step_str(s, "", &out), SASL_FAIL);
	assert_int_equal(sasl_server_fail_kind(s), SASL_FAIL_PROTOCOL);
	sasl_server_free(&s);

	s = sasl_server_new(SASL_MECH_LOGIN, &set);
	assert_int_equal(step_str(s, "user", &out), SASL_CONTINUE);
	assert_int_equal(sasl_step(s, "pen\0cil", 7, &out), SASL_FAIL);
	sasl_server_free(&s);

	s = sasl_server_new(SASL_MECH_LOGIN, &set);
	assert_int_equal(step_str(s, "nobody", &out), SASL_CONTINUE);
	assert_int_equal(step_str(s, "pencil", &out), SASL_FAIL);
	assert_string_equal(sasl_server_reason(s), "unknown user");
	sasl_server_free(&s);
	mbuf_clear(&out);
}

static void
test_cram_md5_rfc2195(void **state)
{
	struct sasl_server_settings set = settings(NULL, NULL);
	struct sasl_server *s;
	struct mbuf out;
	uint8_t st[32], d[16];

	/* The stored state reproduces HMAC-MD5. */
	sasl_cram_md5_secret_derive("tanstaaftanstaaf", 16, st);
	assert_int_equal(sasl_cram_md5_digest(st, "<1896.697170952@postoffice.reston.mci.net>",
					      42, d), 1);
	assert_memory_equal(d, "\xb9\x13\xa6\x02\xc7\xed\xa7\xa4\x95\xb4\xe6\xe7\x33\x4d\x38\x90", 16);

	mbuf_init(&out, 1024);
	s = sasl_server_new(SASL_MECH_CRAM_MD5, &set);
	assert_int_equal(sasl_server_set_nonce(s, "<1896.697170952@postoffice.reston.mci.net>"), 1);
	assert_int_equal(sasl_step(s, NULL, 0, &out), SASL_CONTINUE);
	assert_string_equal(out.data, "<1896.697170952@postoffice.reston.mci.net>");
	assert_int_equal(step_str(s, "tim b913a602c7eda7a495b4e6e7334d3890", &out),
			 SASL_SUCCESS);
	assert_string_equal(sasl_server_username(s), "tim");
	sasl_server_free(&s);

	/* Random challenge shape. */
	s = sasl_server_new(SASL_MECH_CRAM_MD5, &set);
	assert_int_equal(sasl_step(s, NULL, 0, &out), SASL_CONTINUE);
	assert_true(out.data[0] == '<');
	assert_non_null(strstr(out.data, "@mail.example>"));
	assert_int_equal(step_str(s, "tim b913a602c7eda7a495b4e6e7334d3890", &out),
			 SASL_FAIL);
	assert_int_equal(sasl_server_fail_kind(s), SASL_FAIL_CREDENTIALS);
	sasl_server_free(&s);

	{
		static const struct {
			const char *msg;
			enum sasl_fail_kind kind;
		} bad[] = {
			{ "tim b913a602c7eda7a495b4e6e7334d3891", SASL_FAIL_CREDENTIALS },
			{ "nobody b913a602c7eda7a495b4e6e7334d3890", SASL_FAIL_CREDENTIALS },
			{ "nosecret b913a602c7eda7a495b4e6e7334d3890", SASL_FAIL_NO_SECRET },
			{ "tim b913a602c7eda7a495b4e6e7334d389", SASL_FAIL_PROTOCOL },
			{ "tim b913a602c7eda7a495b4e6e7334d38900", SASL_FAIL_PROTOCOL },
			{ "tim b913a602c7eda7a495b4e6e7334d389g", SASL_FAIL_PROTOCOL },
			{ "timb913a602c7eda7a495b4e6e7334d3890", SASL_FAIL_PROTOCOL },
			{ " b913a602c7eda7a495b4e6e7334d3890", SASL_FAIL_PROTOCOL },
			{ "", SASL_FAIL_PROTOCOL },
		};
		size_t i;

		for (i = 0; i < ARRAY_LEN(bad); i++) {
			s = sasl_server_new(SASL_MECH_CRAM_MD5, &set);
			sasl_server_set_nonce(s, "<1896.697170952@postoffice.reston.mci.net>");
			assert_int_equal(sasl_step(s, NULL, 0, &out), SASL_CONTINUE);
			assert_int_equal(step_str(s, bad[i].msg, &out), SASL_FAIL);
			assert_int_equal(sasl_server_fail_kind(s), bad[i].kind);
			sasl_server_free(&s);
		}
	}
	/* Upper-case hex is accepted. */
	s = sasl_server_new(SASL_MECH_CRAM_MD5, &set);
	sasl_server_set_nonce(s, "<1896.697170952@postoffice.reston.mci.net>");
	assert_int_equal(sasl_step(s, NULL, 0, &out), SASL_CONTINUE);
	assert_int_equal(step_str(s, "tim B913A602C7EDA7A495B4E6E7334D3890", &out),
			 SASL_SUCCESS);
	sasl_server_free(&s);

	/* An initial response is not allowed. */
	s = sasl_server_new(SASL_MECH_CRAM_MD5, &set);
	assert_int_equal(step_str(s, "tim", &out), SASL_FAIL);
	sasl_server_free(&s);
	mbuf_clear(&out);
}

/* Oversized input fails as a client error for every mechanism. */
static void
test_oversize(void **state)
{
	struct sasl_server_settings set = settings(NULL, NULL);
	struct sasl_server *s;
	struct mbuf out, b64;
	char *big = malloc(SASL_MAX_MESSAGE + 1);
	int m;

	memset(big, 'a', SASL_MAX_MESSAGE + 1);
	mbuf_init(&out, 1024);
	mbuf_init(&b64, 1024);
	for (m = 0; m < SASL_MECH_COUNT; m++) {
		s = sasl_server_new((enum sasl_mech)m, &set);
		assert_int_equal(sasl_step(s, big, SASL_MAX_MESSAGE + 1, &out), SASL_FAIL);
		assert_string_equal(sasl_server_reason(s), "message too long");
		sasl_server_free(&s);
		s = sasl_server_new((enum sasl_mech)m, &set);
		/* 12,000 base64 characters decode to 9,000 bytes. */
		{
			char *e = malloc(12000);
			memset(e, 'A', 12000);
			assert_int_equal(sasl_step_base64(s, e, 12000, &b64), SASL_FAIL);
			assert_int_equal(sasl_server_fail_kind(s), SASL_FAIL_PROTOCOL);
			free(e);
		}
		sasl_server_free(&s);
		/* A big username. */
		s = sasl_server_new((enum sasl_mech)m, &set);
		if (m == SASL_MECH_CRAM_MD5 || m == SASL_MECH_LOGIN)
			assert_int_equal(sasl_step(s, NULL, 0, &out), SASL_CONTINUE);
		if (m == SASL_MECH_PLAIN) {
			big[0] = '\0';
			big[SASL_MAX_USERNAME + 2] = '\0';
		}
		assert_int_equal(sasl_step(s, big, SASL_MAX_MESSAGE, &out), SASL_FAIL);
		big[0] = big[SASL_MAX_USERNAME + 2] = 'a';
		sasl_server_free(&s);
	}
	free(big);
	mbuf_clear(&out);
	mbuf_clear(&b64);
}

/* Nonce hook validation and unknown mechanism numbers. */
static void
test_misc(void **state)
{
	struct sasl_server_settings set = settings(NULL, NULL);
	struct sasl_server *s;
	struct mbuf out;

	mbuf_init(&out, 1024);
	s = sasl_server_new(SASL_MECH_SCRAM_SHA_1, &set);
	assert_int_equal(sasl_server_set_nonce(s, "a,b"), -1);
	assert_int_equal(sasl_server_set_nonce(s, ""), -1);
	assert_int_equal(sasl_server_set_nonce(s, "a b"), -1);
	assert_int_equal(sasl_server_mech(s), SASL_MECH_SCRAM_SHA_1);
	sasl_server_free(&s);
	s = sasl_server_new(SASL_MECH_COUNT, &set);
	assert_int_equal(sasl_step(s, NULL, 0, &out), SASL_FAIL);
	assert_string_equal(sasl_server_reason(s), "unknown mechanism");
	sasl_server_free(&s);
	/* A broken stored record is the server's problem. */
	s = sasl_server_new(SASL_MECH_SCRAM_SHA_256, &set);
	assert_int_equal(step_str(s, "n,,n=badrec,r=abc", &out), SASL_ERROR);
	sasl_server_free(&s);
	s = sasl_server_new(SASL_MECH_PLAIN, &set);
	assert_int_equal(sasl_step(s, "\0badrec\0pencil", 14, &out), SASL_ERROR);
	sasl_server_free(&s);
	/* Output buffer too small is a server error. */
	mbuf_clear(&out);
	mbuf_init(&out, 4);
	s = sasl_server_new(SASL_MECH_LOGIN, &set);
	assert_int_equal(sasl_step(s, NULL, 0, &out), SASL_ERROR);
	sasl_server_free(&s);
	mbuf_clear(&out);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_base64),
		cmocka_unit_test(test_secrets_roundtrip),
		cmocka_unit_test(test_secrets_derive_errors),
		cmocka_unit_test(test_password_prep),
		cmocka_unit_test(test_username_valid),
		cmocka_unit_test(test_mech_names),
		cmocka_unit_test(test_scram_sha1_rfc5802),
		cmocka_unit_test(test_scram_sha256_rfc7677),
		cmocka_unit_test(test_scram_base64_wire),
		cmocka_unit_test(test_scram_bad_first),
		cmocka_unit_test(test_scram_bad_final),
		cmocka_unit_test(test_scram_unknown_user),
		cmocka_unit_test(test_scram_plus),
		cmocka_unit_test(test_plain),
		cmocka_unit_test(test_login),
		cmocka_unit_test(test_cram_md5_rfc2195),
		cmocka_unit_test(test_oversize),
		cmocka_unit_test(test_misc),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}

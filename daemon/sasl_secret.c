/*
 * sasl_secret: what an account stores instead of its password (SCRAM
 * records, the CRAM-MD5 HMAC state), their binary form, password and
 * username checks.
 *
 * CRAM-MD5 needs the MD5 chaining state after one block, which only
 * OpenSSL's low-level MD5 API exposes; it is deprecated in OpenSSL 3, so the
 * deprecation attributes are suppressed in this file only.
 */
#define OPENSSL_SUPPRESS_DEPRECATED 1

#include "daemon/sasl.h"

#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/md5.h>
#include <openssl/rand.h>

#define BLOB_VERSION 1
#define TAG_SCRAM_SHA1 1
#define TAG_SCRAM_SHA256 2
#define TAG_CRAM_MD5 3

/*
 * Decode one UTF-8 sequence from s (len > 0 bytes). Returns its length and
 * sets *cp_r, or -1 for an invalid sequence (overlong, surrogate, > U+10FFFF,
 * truncated).
 */
static int
utf8_next(const uint8_t *s, size_t len, uint32_t *cp_r)
{
	uint32_t cp, min;
	int n, i;

	if (s[0] < 0x80) {
		*cp_r = s[0];
		return 1;
	} else if ((s[0] & 0xe0) == 0xc0) {
		n = 2, cp = s[0] & 0x1f, min = 0x80;
	} else if ((s[0] & 0xf0) == 0xe0) {
		n = 3, cp = s[0] & 0x0f, min = 0x800;
	} else if ((s[0] & 0xf8) == 0xf0) {
		n = 4, cp = s[0] & 0x07, min = 0x10000;
	} else {
		return -1;
	}
	if (len < (size_t)n)
		return -1;
	for (i = 1; i < n; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return -1;
		cp = (cp << 6) | (s[i] & 0x3f);
	}
	if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
		return -1;
	*cp_r = cp;
	return n;
}

static bool
is_control(uint32_t cp)
{
	return cp < 0x20 || (cp >= 0x7f && cp <= 0x9f);
}

bool
sasl_username_valid(const char *s, size_t len)
{
	const uint8_t *p = (const uint8_t *)s;
	uint32_t cp;
	size_t i;
	int n;

	if (len == 0 || len > SASL_MAX_USERNAME)
		return false;
	for (i = 0; i < len; i += (size_t)n) {
		n = utf8_next(p + i, len - i, &cp);
		if (n < 0 || is_control(cp))
			return false;
	}
	return true;
}

/* RFC 3454 C.1.2, non-ASCII space characters (U+200B is mapped to nothing). */
static bool
is_nonascii_space(uint32_t cp)
{
	return cp == 0x00a0 || cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200a) ||
	       cp == 0x202f || cp == 0x205f || cp == 0x3000;
}

/* RFC 3454 B.1, "commonly mapped to nothing". */
static bool
is_mapped_to_nothing(uint32_t cp)
{
	return cp == 0x00ad || cp == 0x034f || cp == 0x1806 ||
	       (cp >= 0x180b && cp <= 0x180d) || (cp >= 0x200b && cp <= 0x200d) ||
	       cp == 0x2060 || (cp >= 0xfe00 && cp <= 0xfe0f) || cp == 0xfeff;
}

/* Wipe what was appended to b after start and drop it. */
static void
mbuf_truncate_wipe(struct mbuf *b, size_t start)
{
	if (b->data == NULL)
		return;
	OPENSSL_cleanse(b->data + start, b->len - start);
	b->len = start;
	b->data[start] = '\0';
}

int
sasl_password_prep(const char *pw, size_t len, struct mbuf *out)
{
	const uint8_t *p = (const uint8_t *)pw;
	size_t start = out->len, i;
	uint32_t cp;
	int n;

	for (i = 0; i < len; i += (size_t)n) {
		n = utf8_next(p + i, len - i, &cp);
		if (n < 0 || is_control(cp))
			goto bad;
		if (is_mapped_to_nothing(cp))
			continue;
		if (is_nonascii_space(cp)) {
			if (mbuf_add(out, " ", 1) < 0)
				goto full;
			continue;
		}
		if (mbuf_add(out, p + i, (size_t)n) < 0)
			goto full;
	}
	if (out->len == start)
		return 0;
	return 1;
bad:
	mbuf_truncate_wipe(out, start);
	return 0;
full:
	mbuf_truncate_wipe(out, start);
	return -1;
}

static const EVP_MD *
scram_md(enum sasl_scram_hash hash, size_t *len_r)
{
	if (hash == SASL_SCRAM_SHA1) {
		*len_r = 20;
		return EVP_sha1();
	}
	*len_r = 32;
	return EVP_sha256();
}

int
sasl_scram_secret_derive(enum sasl_scram_hash hash, const char *password,
			 size_t pwlen, const uint8_t *salt, size_t salt_len,
			 uint32_t iterations, struct sasl_scram_secret *r)
{
	uint8_t salted[32], client_key[32];
	unsigned int hlen;
	size_t klen;
	const EVP_MD *md = scram_md(hash, &klen);
	int ret = -1;

	memset(r, 0, sizeof(*r));
	if (salt_len == 0 || salt_len > SASL_SALT_MAX || iterations == 0 ||
	    iterations > SASL_SCRAM_ITERATIONS_MAX || pwlen > (size_t)INT32_MAX)
		return -1;
	if (PKCS5_PBKDF2_HMAC(password, (int)pwlen, salt, (int)salt_len,
			      (int)iterations, md, (int)klen, salted) != 1)
		goto out;
	if (HMAC(md, salted, (int)klen, (const uint8_t *)"Client Key", 10,
		 client_key, &hlen) == NULL || hlen != klen)
		goto out;
	if (EVP_Digest(client_key, klen, r->stored_key, &hlen, md, NULL) != 1 ||
	    hlen != klen)
		goto out;
	if (HMAC(md, salted, (int)klen, (const uint8_t *)"Server Key", 10,
		 r->server_key, &hlen) == NULL || hlen != klen)
		goto out;
	memcpy(r->salt, salt, salt_len);
	r->salt_len = salt_len;
	r->iterations = iterations;
	ret = 1;
out:
	OPENSSL_cleanse(salted, sizeof(salted));
	OPENSSL_cleanse(client_key, sizeof(client_key));
	if (ret < 0)
		OPENSSL_cleanse(r, sizeof(*r));
	return ret;
}

static void
md5_state_put(uint8_t *p, const MD5_CTX *ctx)
{
	const MD5_LONG w[4] = { ctx->A, ctx->B, ctx->C, ctx->D };
	int i;

	for (i = 0; i < 4; i++) {
		p[4 * i] = (uint8_t)(w[i] & 0xff);
		p[4 * i + 1] = (uint8_t)((w[i] >> 8) & 0xff);
		p[4 * i + 2] = (uint8_t)((w[i] >> 16) & 0xff);
		p[4 * i + 3] = (uint8_t)((w[i] >> 24) & 0xff);
	}
}

/* Restore a context that has absorbed exactly one 64-byte block. */
static void
md5_state_get(MD5_CTX *ctx, const uint8_t *p)
{
	MD5_LONG w[4];
	int i;

	MD5_Init(ctx);
	for (i = 0; i < 4; i++)
		w[i] = (MD5_LONG)p[4 * i] | (MD5_LONG)p[4 * i + 1] << 8 |
		       (MD5_LONG)p[4 * i + 2] << 16 | (MD5_LONG)p[4 * i + 3] << 24;
	ctx->A = w[0];
	ctx->B = w[1];
	ctx->C = w[2];
	ctx->D = w[3];
	ctx->Nl = 64 * 8; /* bit count of the absorbed block */
	ctx->Nh = 0;
	ctx->num = 0;
}

int
sasl_cram_md5_secret_derive(const char *password, size_t pwlen,
			    uint8_t state_r[32])
{
	uint8_t key[64], pad[64];
	MD5_CTX ctx;
	size_t i;

	memset(key, 0, sizeof(key));
	if (pwlen > sizeof(key))
		MD5((const uint8_t *)password, pwlen, key); /* RFC 2104 */
	else
		memcpy(key, password, pwlen);
	for (i = 0; i < 64; i++)
		pad[i] = key[i] ^ 0x36;
	MD5_Init(&ctx);
	MD5_Update(&ctx, pad, 64);
	md5_state_put(state_r, &ctx);
	for (i = 0; i < 64; i++)
		pad[i] = key[i] ^ 0x5c;
	MD5_Init(&ctx);
	MD5_Update(&ctx, pad, 64);
	md5_state_put(state_r + 16, &ctx);
	OPENSSL_cleanse(key, sizeof(key));
	OPENSSL_cleanse(pad, sizeof(pad));
	OPENSSL_cleanse(&ctx, sizeof(ctx));
	return 1;
}

int
sasl_cram_md5_digest(const uint8_t state[32], const void *challenge,
		     size_t len, uint8_t digest_r[16])
{
	uint8_t inner[16];
	MD5_CTX ctx;
	int ret = -1;

	md5_state_get(&ctx, state);
	if (MD5_Update(&ctx, challenge, len) != 1 || MD5_Final(inner, &ctx) != 1)
		goto out;
	md5_state_get(&ctx, state + 16);
	if (MD5_Update(&ctx, inner, sizeof(inner)) != 1 ||
	    MD5_Final(digest_r, &ctx) != 1)
		goto out;
	ret = 1;
out:
	OPENSSL_cleanse(inner, sizeof(inner));
	OPENSSL_cleanse(&ctx, sizeof(ctx));
	return ret;
}

static void
mbuf_wipe(struct mbuf *b)
{
	if (b->data != NULL)
		OPENSSL_cleanse(b->data, b->cap);
	mbuf_clear(b);
}

int
sasl_secrets_derive(const char *password, uint32_t iterations,
		    struct sasl_secrets *secrets_r, const char **error_r)
{
	uint8_t salt[SASL_SALT_LEN];
	struct mbuf pw;
	int ret = -1, r;

	memset(secrets_r, 0, sizeof(*secrets_r));
	if (iterations == 0)
		iterations = SASL_SCRAM_ITERATIONS;
	if (iterations < SASL_SCRAM_ITERATIONS ||
	    iterations > SASL_SCRAM_ITERATIONS_MAX) {
		*error_r = "iteration count out of range";
		return -1;
	}
	mbuf_init(&pw, SASL_MAX_MESSAGE);
	r = sasl_password_prep(password, strlen(password), &pw);
	if (r == 0) {
		*error_r = "password is empty, not UTF-8 or has control characters";
		goto out;
	} else if (r < 0) {
		*error_r = "password too long";
		goto out;
	}
	*error_r = "random number generator failed";
	if (RAND_bytes(salt, sizeof(salt)) != 1)
		goto out;
	*error_r = "key derivation failed";
	if (sasl_scram_secret_derive(SASL_SCRAM_SHA1, pw.data, pw.len, salt,
				     sizeof(salt), iterations,
				     &secrets_r->scram_sha1) < 0)
		goto out;
	*error_r = "random number generator failed";
	if (RAND_bytes(salt, sizeof(salt)) != 1)
		goto out;
	*error_r = "key derivation failed";
	if (sasl_scram_secret_derive(SASL_SCRAM_SHA256, pw.data, pw.len, salt,
				     sizeof(salt), iterations,
				     &secrets_r->scram_sha256) < 0)
		goto out;
	sasl_cram_md5_secret_derive(pw.data, pw.len, secrets_r->cram_md5);
	secrets_r->flags = SASL_SECRET_SCRAM_SHA1 | SASL_SECRET_SCRAM_SHA256 |
			   SASL_SECRET_CRAM_MD5;
	*error_r = NULL;
	ret = 1;
out:
	mbuf_wipe(&pw);
	if (ret < 0)
		sasl_secrets_clear(secrets_r);
	return ret;
}

int
sasl_secrets_verify_password(const struct sasl_secrets *s,
			     const char *password, size_t len)
{
	struct sasl_scram_secret computed;
	struct mbuf pw;
	int ret = 0, r;

	if ((s->flags & SASL_SECRET_SCRAM_SHA256) == 0)
		return 0;
	mbuf_init(&pw, SASL_MAX_MESSAGE);
	r = sasl_password_prep(password, len, &pw);
	if (r <= 0)
		goto out;
	if (sasl_scram_secret_derive(SASL_SCRAM_SHA256, pw.data, pw.len,
				     s->scram_sha256.salt,
				     s->scram_sha256.salt_len,
				     s->scram_sha256.iterations, &computed) < 0) {
		ret = -1;
		goto out;
	}
	ret = CRYPTO_memcmp(computed.stored_key, s->scram_sha256.stored_key,
			    32) == 0 ? 1 : 0;
	OPENSSL_cleanse(&computed, sizeof(computed));
out:
	mbuf_wipe(&pw);
	return ret;
}

static int
put_scram(struct mbuf *out, uint8_t tag, const struct sasl_scram_secret *r,
	  size_t klen)
{
	uint8_t hdr[8];
	size_t vlen = 4 + 1 + r->salt_len + 2 * klen;

	hdr[0] = tag;
	hdr[1] = (uint8_t)(vlen >> 8);
	hdr[2] = (uint8_t)vlen;
	hdr[3] = (uint8_t)(r->iterations >> 24);
	hdr[4] = (uint8_t)(r->iterations >> 16);
	hdr[5] = (uint8_t)(r->iterations >> 8);
	hdr[6] = (uint8_t)r->iterations;
	hdr[7] = (uint8_t)r->salt_len;
	if (mbuf_add(out, hdr, sizeof(hdr)) < 0 ||
	    mbuf_add(out, r->salt, r->salt_len) < 0 ||
	    mbuf_add(out, r->stored_key, klen) < 0 ||
	    mbuf_add(out, r->server_key, klen) < 0)
		return -1;
	return 0;
}

int
sasl_secrets_serialize(const struct sasl_secrets *s, struct mbuf *out)
{
	size_t start = out->len;
	uint8_t v = BLOB_VERSION, hdr[3] = { TAG_CRAM_MD5, 0, 32 };

	if (mbuf_add(out, &v, 1) < 0)
		goto full;
	if ((s->flags & SASL_SECRET_SCRAM_SHA1) != 0 &&
	    put_scram(out, TAG_SCRAM_SHA1, &s->scram_sha1, 20) < 0)
		goto full;
	if ((s->flags & SASL_SECRET_SCRAM_SHA256) != 0 &&
	    put_scram(out, TAG_SCRAM_SHA256, &s->scram_sha256, 32) < 0)
		goto full;
	if ((s->flags & SASL_SECRET_CRAM_MD5) != 0 &&
	    (mbuf_add(out, hdr, 3) < 0 || mbuf_add(out, s->cram_md5, 32) < 0))
		goto full;
	return 1;
full:
	if (out->data != NULL) {
		out->len = start;
		out->data[start] = '\0';
	}
	return -1;
}

static int
get_scram(const uint8_t *p, size_t len, size_t klen,
	  struct sasl_scram_secret *r, const char **error_r)
{
	uint32_t iter;
	size_t salt_len;

	if (len < 5) {
		*error_r = "SCRAM record too short";
		return -1;
	}
	iter = (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 |
	       (uint32_t)p[2] << 8 | p[3];
	salt_len = p[4];
	if (iter == 0 || iter > SASL_SCRAM_ITERATIONS_MAX) {
		*error_r = "SCRAM iteration count out of range";
		return -1;
	}
	if (salt_len == 0 || salt_len > SASL_SALT_MAX) {
		*error_r = "SCRAM salt length out of range";
		return -1;
	}
	if (len != 5 + salt_len + 2 * klen) {
		*error_r = "SCRAM record has wrong length";
		return -1;
	}
	r->iterations = iter;
	r->salt_len = salt_len;
	memcpy(r->salt, p + 5, salt_len);
	memcpy(r->stored_key, p + 5 + salt_len, klen);
	memcpy(r->server_key, p + 5 + salt_len + klen, klen);
	return 0;
}

int
sasl_secrets_parse(const void *data, size_t len, struct sasl_secrets *secrets_r,
		   const char **error_r)
{
	const uint8_t *p = data;
	size_t pos, vlen;
	unsigned bit;
	uint8_t tag;

	memset(secrets_r, 0, sizeof(*secrets_r));
	if (len < 1 || p[0] != BLOB_VERSION) {
		*error_r = "unknown secrets version";
		return -1;
	}
	for (pos = 1; pos < len; pos += vlen) {
		if (len - pos < 3) {
			*error_r = "truncated record header";
			goto bad;
		}
		tag = p[pos];
		vlen = (size_t)p[pos + 1] << 8 | p[pos + 2];
		pos += 3;
		if (vlen > len - pos) {
			*error_r = "truncated record";
			goto bad;
		}
		switch (tag) {
		case TAG_SCRAM_SHA1:
			bit = SASL_SECRET_SCRAM_SHA1;
			break;
		case TAG_SCRAM_SHA256:
			bit = SASL_SECRET_SCRAM_SHA256;
			break;
		case TAG_CRAM_MD5:
			bit = SASL_SECRET_CRAM_MD5;
			break;
		default:
			continue; /* a newer version's record */
		}
		if ((secrets_r->flags & bit) != 0) {
			*error_r = "duplicate record";
			goto bad;
		}
		secrets_r->flags |= bit;
		if (tag == TAG_SCRAM_SHA1) {
			if (get_scram(p + pos, vlen, 20, &secrets_r->scram_sha1,
				      error_r) < 0)
				goto bad;
		} else if (tag == TAG_SCRAM_SHA256) {
			if (get_scram(p + pos, vlen, 32,
				      &secrets_r->scram_sha256, error_r) < 0)
				goto bad;
		} else {
			if (vlen != 32) {
				*error_r = "CRAM-MD5 record has wrong length";
				goto bad;
			}
			memcpy(secrets_r->cram_md5, p + pos, 32);
		}
	}
	return 1;
bad:
	sasl_secrets_clear(secrets_r);
	return -1;
}

void
sasl_secrets_clear(struct sasl_secrets *s)
{
	if (s != NULL)
		OPENSSL_cleanse(s, sizeof(*s));
}

/*
 * sasl: server side of PLAIN (RFC 4616), LOGIN, CRAM-MD5 (RFC 2195) and
 * SCRAM-SHA-1/-256[-PLUS] (RFC 5802, RFC 7677), as one step function per
 * exchange.
 *
 * Invariants: every client message is bounded (SASL_MAX_MESSAGE) before it
 * is looked at; every client mistake ends in SASL_FAIL, SASL_ERROR is kept
 * for failures of the server itself (RNG, crypto, lookup). An unknown user
 * walks the same path as a known one (fake salt for SCRAM, a key derivation
 * for PLAIN/LOGIN, a digest for CRAM-MD5) and fails where a wrong password
 * would, so replies and timing do not reveal which users exist.
 */
#include "daemon/sasl.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#define NONCE_MAX 256      /* client, server or test nonce length */
#define SERVER_NONCE_RAW 18 /* random bytes, 24 characters in base64 */

enum sasl_state {
	ST_START,       /* nothing received yet */
	ST_INITIAL,     /* sent an empty challenge, waiting for the first message */
	ST_LOGIN_USER,  /* sent "Username:" */
	ST_LOGIN_PASS,  /* sent "Password:" */
	ST_CRAM,        /* sent the CRAM-MD5 challenge */
	ST_SCRAM_FINAL, /* sent server-first, waiting for client-final */
	ST_DONE,
};

struct sasl_server {
	enum sasl_mech mech;
	struct sasl_server_settings set;
	enum sasl_state state;
	enum sasl_fail_kind fail_kind;
	const char *reason;
	char *username;
	char *test_nonce;
	struct sasl_secrets secrets;
	bool user_known;
	char *challenge;          /* CRAM-MD5 */
	char *gs2_header;         /* SCRAM: "n,," etc. */
	size_t gs2_header_len;
	char *nonce;              /* SCRAM: client nonce + server nonce */
	struct mbuf auth_message; /* SCRAM: client-first-bare,server-first, */
};

static const char *const mech_names[SASL_MECH_COUNT] = {
	[SASL_MECH_PLAIN] = "PLAIN",
	[SASL_MECH_LOGIN] = "LOGIN",
	[SASL_MECH_CRAM_MD5] = "CRAM-MD5",
	[SASL_MECH_SCRAM_SHA_1] = "SCRAM-SHA-1",
	[SASL_MECH_SCRAM_SHA_1_PLUS] = "SCRAM-SHA-1-PLUS",
	[SASL_MECH_SCRAM_SHA_256] = "SCRAM-SHA-256",
	[SASL_MECH_SCRAM_SHA_256_PLUS] = "SCRAM-SHA-256-PLUS",
};

const char *
sasl_mech_name(enum sasl_mech mech)
{
	if ((unsigned)mech >= SASL_MECH_COUNT)
		return NULL;
	return mech_names[mech];
}

int
sasl_mech_from_name(const char *name)
{
	int i;

	for (i = 0; i < SASL_MECH_COUNT; i++)
		if (str_ieq(name, mech_names[i]))
			return i;
	return -1;
}

bool
sasl_mech_is_plus(enum sasl_mech mech)
{
	return mech == SASL_MECH_SCRAM_SHA_1_PLUS ||
	       mech == SASL_MECH_SCRAM_SHA_256_PLUS;
}

bool
sasl_mech_is_plaintext(enum sasl_mech mech)
{
	return mech == SASL_MECH_PLAIN || mech == SASL_MECH_LOGIN;
}

static bool
mech_is_scram(enum sasl_mech mech)
{
	return mech >= SASL_MECH_SCRAM_SHA_1 &&
	       mech <= SASL_MECH_SCRAM_SHA_256_PLUS;
}

static bool
mech_is_sha1(enum sasl_mech mech)
{
	return mech == SASL_MECH_SCRAM_SHA_1 ||
	       mech == SASL_MECH_SCRAM_SHA_1_PLUS;
}

struct sasl_server *
sasl_server_new(enum sasl_mech mech, const struct sasl_server_settings *set)
{
	struct sasl_server *s = xcalloc(1, sizeof(*s));

	s->mech = mech;
	s->set = *set;
	s->reason = "";
	mbuf_init(&s->auth_message, 3 * SASL_MAX_MESSAGE);
	if ((unsigned)mech >= SASL_MECH_COUNT) {
		s->state = ST_DONE;
		s->fail_kind = SASL_FAIL_PROTOCOL;
		s->reason = "unknown mechanism";
	}
	return s;
}

void
sasl_server_free(struct sasl_server **sp)
{
	struct sasl_server *s = *sp;

	if (s == NULL)
		return;
	sasl_secrets_clear(&s->secrets);
	if (s->auth_message.data != NULL)
		OPENSSL_cleanse(s->auth_message.data, s->auth_message.cap);
	mbuf_clear(&s->auth_message);
	free(s->username);
	free(s->test_nonce);
	free(s->challenge);
	free(s->gs2_header);
	free(s->nonce);
	free(s);
	*sp = NULL;
}

/* Printable ASCII except ',' (RFC 5802 "printable"); CRAM also allows ','. */
static bool
nonce_valid(const char *p, size_t len, bool allow_comma)
{
	size_t i;

	if (len == 0 || len > NONCE_MAX)
		return false;
	for (i = 0; i < len; i++)
		if (p[i] < 0x21 || p[i] > 0x7e || (p[i] == ',' && !allow_comma))
			return false;
	return true;
}

int
sasl_server_set_nonce(struct sasl_server *s, const char *nonce)
{
	if (s->state != ST_START ||
	    !nonce_valid(nonce, strlen(nonce), s->mech == SASL_MECH_CRAM_MD5))
		return -1;
	free(s->test_nonce);
	s->test_nonce = xstrdup(nonce);
	return 1;
}

const char *
sasl_server_username(const struct sasl_server *s)
{
	return s->username;
}

enum sasl_fail_kind
sasl_server_fail_kind(const struct sasl_server *s)
{
	return s->fail_kind;
}

const char *
sasl_server_reason(const struct sasl_server *s)
{
	return s->reason;
}

enum sasl_mech
sasl_server_mech(const struct sasl_server *s)
{
	return s->mech;
}

static enum sasl_result
fail(struct sasl_server *s, enum sasl_fail_kind kind, const char *reason,
     struct mbuf *out)
{
	s->state = ST_DONE;
	s->fail_kind = kind;
	s->reason = reason;
	mbuf_reset(out);
	return SASL_FAIL;
}

static enum sasl_result
server_error(struct sasl_server *s, const char *reason, struct mbuf *out)
{
	s->state = ST_DONE;
	s->reason = reason;
	mbuf_reset(out);
	return SASL_ERROR;
}

/* Output that cannot fit the caller's buffer is a server bug, not a client one. */
static enum sasl_result
out_full(struct sasl_server *s, struct mbuf *out)
{
	return server_error(s, "output buffer too small", out);
}

static enum sasl_result
succeed(struct sasl_server *s)
{
	s->state = ST_DONE;
	s->fail_kind = SASL_FAIL_NONE;
	s->reason = "";
	return SASL_SUCCESS;
}

/* Validate and keep the authentication identity. */
static bool
set_username(struct sasl_server *s, const char *p, size_t len)
{
	if (!sasl_username_valid(p, len))
		return false;
	free(s->username);
	s->username = xstrndup(p, len);
	return true;
}

/* Run the lookup callback. Returns its result; clears secrets unless found. */
static int
lookup(struct sasl_server *s)
{
	int r;

	sasl_secrets_clear(&s->secrets);
	r = s->set.lookup(s->set.lookup_arg, s->username, &s->secrets);
	if (r <= 0)
		sasl_secrets_clear(&s->secrets);
	s->user_known = r > 0;
	return r;
}

/* ---- PLAIN and LOGIN ---- */

/*
 * Check a plaintext password for s->username. An unknown user costs a key
 * derivation like a known one.
 */
static enum sasl_result
verify_plaintext(struct sasl_server *s, const char *pw, size_t len,
		 struct mbuf *out)
{
	struct sasl_scram_secret dummy;
	uint8_t salt[SASL_SALT_LEN];
	int r;

	if (memchr(pw, '\0', len) != NULL)
		return fail(s, SASL_FAIL_PROTOCOL, "NUL in password", out);
	r = lookup(s);
	if (r < 0)
		return server_error(s, "secret lookup failed", out);
	if (r == 0) {
		memset(salt, 0, sizeof(salt));
		/* Same cost as a real check; the result does not matter. */
		(void)sasl_scram_secret_derive(SASL_SCRAM_SHA256, pw, len, salt,
					       sizeof(salt),
					       s->set.fake_iterations ?
						       s->set.fake_iterations :
						       SASL_SCRAM_ITERATIONS,
					       &dummy);
		OPENSSL_cleanse(&dummy, sizeof(dummy));
		return fail(s, SASL_FAIL_CREDENTIALS, "unknown user", out);
	}
	if ((s->secrets.flags & SASL_SECRET_SCRAM_SHA256) == 0)
		return fail(s, SASL_FAIL_NO_SECRET,
			    "account has no SCRAM-SHA-256 secret", out);
	r = sasl_secrets_verify_password(&s->secrets, pw, len);
	if (r < 0)
		return server_error(s, "key derivation failed", out);
	if (r == 0)
		return fail(s, SASL_FAIL_CREDENTIALS, "wrong password", out);
	return succeed(s);
}

static enum sasl_result
step_plain(struct sasl_server *s, const char *in, size_t inlen,
	   struct mbuf *out)
{
	const char *authcid, *pw, *nul1, *nul2;
	size_t zlen, clen;

	nul1 = memchr(in, '\0', inlen);
	if (nul1 == NULL)
		return fail(s, SASL_FAIL_PROTOCOL, "PLAIN message without NUL", out);
	authcid = nul1 + 1;
	nul2 = memchr(authcid, '\0', inlen - (size_t)(authcid - in));
	if (nul2 == NULL)
		return fail(s, SASL_FAIL_PROTOCOL,
			    "PLAIN message with one NUL", out);
	zlen = (size_t)(nul1 - in);
	clen = (size_t)(nul2 - authcid);
	pw = nul2 + 1;
	if (!set_username(s, authcid, clen))
		return fail(s, SASL_FAIL_PROTOCOL, "invalid username", out);
	if (zlen != 0 && (zlen != clen || memcmp(in, authcid, clen) != 0))
		return fail(s, SASL_FAIL_PROTOCOL,
			    "authorization identity differs from username", out);
	return verify_plaintext(s, pw, inlen - (size_t)(pw - in), out);
}

static enum sasl_result
step_login(struct sasl_server *s, const char *in, size_t inlen,
	   struct mbuf *out)
{
	switch (s->state) {
	case ST_START:
		/* An initial response, if any, is the username. */
		if (in == NULL || inlen == 0) {
			if (mbuf_adds(out, "Username:") < 0)
				return out_full(s, out);
			s->state = ST_LOGIN_USER;
			return SASL_CONTINUE;
		}
		/* FALLTHROUGH */
	case ST_LOGIN_USER:
		if (in == NULL)
			return fail(s, SASL_FAIL_PROTOCOL, "missing response", out);
		if (!set_username(s, in, inlen))
			return fail(s, SASL_FAIL_PROTOCOL, "invalid username", out);
		if (mbuf_adds(out, "Password:") < 0)
			return out_full(s, out);
		s->state = ST_LOGIN_PASS;
		return SASL_CONTINUE;
	case ST_LOGIN_PASS:
		if (in == NULL)
			return fail(s, SASL_FAIL_PROTOCOL, "missing response", out);
		return verify_plaintext(s, in, inlen, out);
	default:
		return fail(s, SASL_FAIL_PROTOCOL, "bad state", out);
	}
}

/* ---- CRAM-MD5 ---- */

static enum sasl_result
cram_challenge(struct sasl_server *s, struct mbuf *out)
{
	const char *host = s->set.hostname ? s->set.hostname : "localhost";
	uint64_t rnd;

	if (s->test_nonce != NULL) {
		s->challenge = xstrdup(s->test_nonce);
	} else {
		if (RAND_bytes((unsigned char *)&rnd, sizeof(rnd)) != 1)
			return server_error(s, "random number generator failed", out);
		s->challenge = xasprintf("<%llu.%lld@%s>",
					 (unsigned long long)(rnd >> 1),
					 (long long)time(NULL), host);
	}
	if (mbuf_adds(out, s->challenge) < 0)
		return out_full(s, out);
	s->state = ST_CRAM;
	return SASL_CONTINUE;
}

static int
hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

static enum sasl_result
step_cram(struct sasl_server *s, const char *in, size_t inlen,
	  struct mbuf *out)
{
	uint8_t want[16], got[16], zero_state[32];
	const uint8_t *state;
	const char *sp = NULL, *hex;
	size_t i;
	int hi, lo, r;

	if (s->state == ST_START) {
		if (in != NULL && inlen > 0)
			return fail(s, SASL_FAIL_PROTOCOL,
				    "initial response with CRAM-MD5", out);
		return cram_challenge(s, out);
	}
	if (in == NULL)
		return fail(s, SASL_FAIL_PROTOCOL, "missing response", out);
	/* "user SP digest"; the user may itself contain spaces. */
	for (i = inlen; i > 0; i--)
		if (in[i - 1] == ' ') {
			sp = in + i - 1;
			break;
		}
	if (sp == NULL || inlen - (size_t)(sp - in) != 33)
		return fail(s, SASL_FAIL_PROTOCOL, "malformed CRAM-MD5 response", out);
	hex = sp + 1;
	for (i = 0; i < 16; i++) {
		hi = hexval(hex[2 * i]);
		lo = hexval(hex[2 * i + 1]);
		if (hi < 0 || lo < 0)
			return fail(s, SASL_FAIL_PROTOCOL,
				    "malformed CRAM-MD5 digest", out);
		got[i] = (uint8_t)(hi << 4 | lo);
	}
	if (!set_username(s, in, (size_t)(sp - in)))
		return fail(s, SASL_FAIL_PROTOCOL, "invalid username", out);
	r = lookup(s);
	if (r < 0)
		return server_error(s, "secret lookup failed", out);
	if (r > 0 && (s->secrets.flags & SASL_SECRET_CRAM_MD5) == 0)
		return fail(s, SASL_FAIL_NO_SECRET,
			    "account has no CRAM-MD5 secret", out);
	memset(zero_state, 0, sizeof(zero_state));
	state = r > 0 ? s->secrets.cram_md5 : zero_state;
	if (sasl_cram_md5_digest(state, s->challenge, strlen(s->challenge),
				 want) < 0)
		return server_error(s, "MD5 failed", out);
	if (r == 0)
		return fail(s, SASL_FAIL_CREDENTIALS, "unknown user", out);
	if (CRYPTO_memcmp(want, got, sizeof(want)) != 0)
		return fail(s, SASL_FAIL_CREDENTIALS, "wrong password", out);
	return succeed(s);
}

/* ---- SCRAM ---- */

static const EVP_MD *
scram_md(const struct sasl_server *s, size_t *len_r)
{
	*len_r = mech_is_sha1(s->mech) ? 20 : 32;
	return mech_is_sha1(s->mech) ? EVP_sha1() : EVP_sha256();
}

static struct sasl_scram_secret *
scram_record(struct sasl_server *s)
{
	return mech_is_sha1(s->mech) ? &s->secrets.scram_sha1 :
				       &s->secrets.scram_sha256;
}

/*
 * Decode a saslname (RFC 5802: "=2C" is ',', "=3D" is '=', no other '=')
 * into out. Returns false on bad escapes or a value that is no username.
 */
static bool
saslname_decode(const char *p, size_t len, struct mbuf *out)
{
	size_t i;
	char c;

	mbuf_reset(out);
	for (i = 0; i < len; i++) {
		c = p[i];
		if (c == ',')
			return false;
		if (c == '=') {
			if (len - i < 3)
				return false;
			if (p[i + 1] == '2' && p[i + 2] == 'C')
				c = ',';
			else if (p[i + 1] == '3' && p[i + 2] == 'D')
				c = '=';
			else
				return false;
			i += 2;
		}
		if (mbuf_add(out, &c, 1) < 0)
			return false;
	}
	return sasl_username_valid(out->data ? out->data : "", out->len);
}

/* Length of the attribute value starting at p (up to ',' or end). */
static size_t
attr_len(const char *p, const char *end)
{
	const char *c = memchr(p, ',', (size_t)(end - p));

	return (size_t)((c ? c : end) - p);
}

/* "," ALPHA "=" 1*value-char, repeated, until end. */
static bool
extensions_valid(const char *p, const char *end)
{
	size_t n;

	while (p < end) {
		if (*p != ',' || end - p < 4)
			return false;
		p++;
		if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z')) ||
		    p[1] != '=')
			return false;
		n = attr_len(p + 2, end);
		if (n == 0)
			return false;
		p += 2 + n;
	}
	return true;
}

/*
 * The gs2 channel-binding flag and its consequences. Returns NULL when the
 * flag is acceptable for this mechanism and connection, else the reason.
 */
static const char *
check_cb_flag(const struct sasl_server *s, char flag, const char *name,
	      size_t namelen)
{
	if (sasl_mech_is_plus(s->mech)) {
		if (s->set.cb_type == NULL)
			return "channel binding not available on this connection";
		if (flag != 'p')
			return "-PLUS mechanism without channel binding";
		if (namelen != strlen(s->set.cb_type) ||
		    memcmp(name, s->set.cb_type, namelen) != 0)
			return "unsupported channel binding type";
		return NULL;
	}
	if (flag == 'p')
		return "channel binding requested with a non-PLUS mechanism";
	if (flag == 'y' && s->set.cb_type != NULL)
		return "channel binding downgrade: client supports it, "
		       "server advertised -PLUS";
	return NULL;
}

/* Derive the fake record for an unknown user from the server's key. */
static enum sasl_result
scram_fake_record(struct sasl_server *s, struct mbuf *out)
{
	struct sasl_scram_secret *rec = scram_record(s);
	uint8_t mac[32];
	unsigned int maclen;
	struct mbuf msg;
	int ok;

	if (s->set.fake_key == NULL || s->set.fake_key_len < SASL_FAKE_KEY_MIN)
		return server_error(s, "no key for fake SCRAM salts configured", out);
	mbuf_init(&msg, SASL_MAX_USERNAME + 64);
	ok = mbuf_printf(&msg, "scram-fake-salt %s", mech_is_sha1(s->mech) ?
							     "SHA-1" : "SHA-256") == 0 &&
	     mbuf_add(&msg, "", 1) == 0 && mbuf_adds(&msg, s->username) == 0 &&
	     HMAC(EVP_sha256(), s->set.fake_key, (int)s->set.fake_key_len,
		  (const uint8_t *)msg.data, msg.len, mac, &maclen) != NULL;
	mbuf_clear(&msg);
	if (!ok)
		return server_error(s, "HMAC failed", out);
	memcpy(rec->salt, mac, SASL_SALT_LEN);
	rec->salt_len = SASL_SALT_LEN;
	rec->iterations = s->set.fake_iterations ? s->set.fake_iterations :
						   SASL_SCRAM_ITERATIONS;
	/* Random keys: no proof can match. */
	if (RAND_bytes(rec->stored_key, sizeof(rec->stored_key)) != 1 ||
	    RAND_bytes(rec->server_key, sizeof(rec->server_key)) != 1)
		return server_error(s, "random number generator failed", out);
	return SASL_CONTINUE;
}

static enum sasl_result
scram_server_nonce(struct sasl_server *s, struct mbuf *nonce, struct mbuf *out)
{
	uint8_t raw[SERVER_NONCE_RAW];

	if (s->test_nonce != NULL)
		return mbuf_adds(nonce, s->test_nonce) == 0 ? SASL_CONTINUE :
							      out_full(s, out);
	if (RAND_bytes(raw, sizeof(raw)) != 1)
		return server_error(s, "random number generator failed", out);
	if (sasl_base64_encode(raw, sizeof(raw), nonce) < 0)
		return out_full(s, out);
	return SASL_CONTINUE;
}

/* The parts of a client-first message (slices into the message). */
struct scram_first {
	char flag;            /* gs2 channel binding flag: 'n', 'y' or 'p' */
	const char *cbname;   /* after "p=" */
	size_t cbname_len;
	const char *authzid;  /* saslname after "a=", NULL if absent */
	size_t authzid_len;
	const char *bare;     /* client-first-bare: to the end of the message */
	const char *user;     /* saslname after "n=" */
	size_t user_len;
	const char *cnonce;
	size_t cnonce_len;
};

static bool
cbname_valid(const char *p, size_t len)
{
	size_t i;

	for (i = 0; i < len; i++)
		if (!((p[i] >= 'a' && p[i] <= 'z') || (p[i] >= 'A' && p[i] <= 'Z') ||
		      (p[i] >= '0' && p[i] <= '9') || p[i] == '.' || p[i] == '-'))
			return false;
	return len > 0;
}

/*
 * Parse client-first (RFC 5802 section 7): gs2-header then
 * "n=" saslname ",r=" nonce [extensions]. Returns NULL, or the reason the
 * message is malformed.
 */
static const char *
scram_parse_first(const char *in, size_t inlen, struct scram_first *f)
{
	const char *p = in, *end = in + inlen;

	memset(f, 0, sizeof(*f));
	if (memchr(in, '\0', inlen) != NULL)
		return "NUL in SCRAM message";
	if (inlen < 3)
		return "short client-first message";
	f->flag = *p;
	if (f->flag == 'n' || f->flag == 'y') {
		p++;
	} else if (f->flag == 'p' && p[1] == '=') {
		f->cbname = p + 2;
		f->cbname_len = attr_len(f->cbname, end);
		if (!cbname_valid(f->cbname, f->cbname_len))
			return "bad channel binding name";
		p = f->cbname + f->cbname_len;
	} else {
		return "bad gs2 channel binding flag";
	}
	if (p >= end || *p != ',')
		return "bad gs2 header";
	p++;
	if (end - p >= 2 && p[0] == 'a' && p[1] == '=') {
		f->authzid = p + 2;
		f->authzid_len = attr_len(f->authzid, end);
		p = f->authzid + f->authzid_len;
	}
	if (p >= end || *p != ',')
		return "bad gs2 header";
	f->bare = ++p;
	if (end - p < 2 || p[0] != 'n' || p[1] != '=')
		return p < end && p[0] == 'm' ? "mandatory extension" :
						"missing username";
	f->user = p + 2;
	f->user_len = attr_len(f->user, end);
	p = f->user + f->user_len;
	if (end - p < 3 || p[0] != ',' || p[1] != 'r' || p[2] != '=')
		return "missing client nonce";
	f->cnonce = p + 3;
	f->cnonce_len = attr_len(f->cnonce, end);
	p = f->cnonce + f->cnonce_len;
	if (!nonce_valid(f->cnonce, f->cnonce_len, false))
		return "bad client nonce";
	if (!extensions_valid(p, end))
		return "bad extension";
	return NULL;
}

/* Decode and check the identities; sets s->username. */
static const char *
scram_identities(struct sasl_server *s, const struct scram_first *f)
{
	const char *why = NULL;
	struct mbuf name;

	mbuf_init(&name, SASL_MAX_USERNAME);
	if (!saslname_decode(f->user, f->user_len, &name)) {
		why = "invalid username";
	} else {
		s->username = xstrndup(name.data, name.len);
		if (f->authzid != NULL &&
		    (!saslname_decode(f->authzid, f->authzid_len, &name) ||
		     strcmp(name.data, s->username) != 0))
			why = "authorization identity differs from username";
	}
	mbuf_clear(&name);
	return why;
}

static enum sasl_result
scram_client_first(struct sasl_server *s, const char *in, size_t inlen,
		   struct mbuf *out)
{
	struct sasl_scram_secret *rec = scram_record(s);
	const char *end = in + inlen, *why;
	struct scram_first f;
	enum sasl_result res;
	struct mbuf nonce;
	int r;

	why = scram_parse_first(in, inlen, &f);
	if (why == NULL)
		why = check_cb_flag(s, f.flag, f.cbname, f.cbname_len);
	if (why == NULL)
		why = scram_identities(s, &f);
	if (why != NULL)
		return fail(s, SASL_FAIL_PROTOCOL, why, out);

	r = lookup(s);
	if (r < 0)
		return server_error(s, "secret lookup failed", out);
	if (r > 0 && (s->secrets.flags & (mech_is_sha1(s->mech) ?
						  SASL_SECRET_SCRAM_SHA1 :
						  SASL_SECRET_SCRAM_SHA256)) == 0)
		return fail(s, SASL_FAIL_NO_SECRET,
			    mech_is_sha1(s->mech) ?
				    "account has no SCRAM-SHA-1 secret" :
				    "account has no SCRAM-SHA-256 secret", out);
	if (r == 0 && scram_fake_record(s, out) != SASL_CONTINUE)
		return SASL_ERROR;
	if (rec->salt_len == 0 || rec->salt_len > SASL_SALT_MAX ||
	    rec->iterations == 0 || rec->iterations > SASL_SCRAM_ITERATIONS_MAX)
		return server_error(s, "invalid stored SCRAM secret", out);

	s->gs2_header_len = (size_t)(f.bare - in);
	s->gs2_header = xstrndup(in, s->gs2_header_len);
	mbuf_init(&nonce, 2 * NONCE_MAX);
	mbuf_add(&nonce, f.cnonce, f.cnonce_len);
	res = scram_server_nonce(s, &nonce, out);
	if (res != SASL_CONTINUE) {
		mbuf_clear(&nonce);
		return res;
	}
	s->nonce = xstrndup(nonce.data, nonce.len);
	mbuf_clear(&nonce);

	if (mbuf_printf(out, "r=%s,s=", s->nonce) < 0 ||
	    sasl_base64_encode(rec->salt, rec->salt_len, out) < 0 ||
	    mbuf_printf(out, ",i=%u", (unsigned)rec->iterations) < 0)
		return out_full(s, out);
	if (mbuf_add(&s->auth_message, f.bare, (size_t)(end - f.bare)) < 0 ||
	    mbuf_add(&s->auth_message, ",", 1) < 0 ||
	    mbuf_add(&s->auth_message, out->data, out->len) < 0 ||
	    mbuf_add(&s->auth_message, ",", 1) < 0)
		return server_error(s, "auth message too long", out);
	s->state = ST_SCRAM_FINAL;
	return SASL_CONTINUE;
}

/* Compare the c= value (decoded) with what this connection expects. */
static bool
cbind_matches(const struct sasl_server *s, const struct mbuf *got)
{
	size_t n = s->gs2_header_len;
	bool plus = s->gs2_header[0] == 'p';

	if (plus)
		n += s->set.cb_data_len;
	if (got->len != n ||
	    memcmp(got->data, s->gs2_header, s->gs2_header_len) != 0)
		return false;
	return !plus || CRYPTO_memcmp(got->data + s->gs2_header_len,
				      s->set.cb_data, s->set.cb_data_len) == 0;
}

/*
 * Check the client proof against the AuthMessage collected so far and, when
 * it holds, put server-final ("v=" ServerSignature) in out.
 */
static enum sasl_result
scram_verify_proof(struct sasl_server *s, const uint8_t *proof,
		   struct mbuf *out)
{
	struct sasl_scram_secret *rec = scram_record(s);
	uint8_t sig[32], key[32], stored[32];
	const uint8_t *am = (const uint8_t *)s->auth_message.data;
	size_t amlen = s->auth_message.len, klen, i;
	const EVP_MD *md = scram_md(s, &klen);
	unsigned int hlen;
	bool ok;

	/* ClientKey = proof XOR HMAC(StoredKey, AuthMessage); H(ClientKey) == StoredKey */
	ok = HMAC(md, rec->stored_key, (int)klen, am, amlen, sig, &hlen) != NULL &&
	     hlen == klen;
	for (i = 0; ok && i < klen; i++)
		key[i] = proof[i] ^ sig[i];
	ok = ok && EVP_Digest(key, klen, stored, &hlen, md, NULL) == 1 &&
	     hlen == klen;
	OPENSSL_cleanse(key, sizeof(key));
	if (!ok)
		return server_error(s, "HMAC failed", out);
	if (!s->user_known)
		return fail(s, SASL_FAIL_CREDENTIALS, "unknown user", out);
	if (CRYPTO_memcmp(stored, rec->stored_key, klen) != 0)
		return fail(s, SASL_FAIL_CREDENTIALS, "invalid proof", out);

	if (HMAC(md, rec->server_key, (int)klen, am, amlen, sig, &hlen) == NULL ||
	    hlen != klen)
		return server_error(s, "HMAC failed", out);
	if (mbuf_adds(out, "v=") < 0 || sasl_base64_encode(sig, klen, out) < 0)
		return out_full(s, out);
	return succeed(s);
}

static enum sasl_result
scram_client_final(struct sasl_server *s, const char *in, size_t inlen,
		   struct mbuf *out)
{
	const char *p = in, *end = in + inlen, *cval, *nonce, *proof_at = NULL;
	size_t clen, nlen, n, klen;
	enum sasl_result res;
	struct mbuf dec;

	scram_md(s, &klen);

	if (memchr(in, '\0', inlen) != NULL)
		return fail(s, SASL_FAIL_PROTOCOL, "NUL in SCRAM message", out);
	if (inlen < 2 || p[0] != 'c' || p[1] != '=')
		return fail(s, SASL_FAIL_PROTOCOL, "missing channel binding", out);
	cval = p + 2;
	clen = attr_len(cval, end);
	p = cval + clen;
	if (end - p < 3 || p[0] != ',' || p[1] != 'r' || p[2] != '=')
		return fail(s, SASL_FAIL_PROTOCOL, "missing nonce", out);
	nonce = p + 3;
	nlen = attr_len(nonce, end);
	p = nonce + nlen;
	/* The proof is the last attribute; extensions may come before it. */
	while (p < end) {
		n = attr_len(p + 1, end);
		if (n >= 2 && p[1] == 'p' && p[2] == '=' && p + 1 + n == end) {
			proof_at = p;
			break;
		}
		p += 1 + n;
	}
	if (proof_at == NULL)
		return fail(s, SASL_FAIL_PROTOCOL, "missing proof", out);
	if (!extensions_valid(nonce + nlen, proof_at))
		return fail(s, SASL_FAIL_PROTOCOL, "bad extension", out);

	mbuf_init(&dec, SASL_MAX_MESSAGE);
	if (sasl_base64_decode(cval, clen, &dec) < 0 || !cbind_matches(s, &dec)) {
		mbuf_clear(&dec);
		return fail(s, SASL_FAIL_PROTOCOL, "channel binding mismatch", out);
	}
	if (nlen != strlen(s->nonce) || memcmp(nonce, s->nonce, nlen) != 0) {
		mbuf_clear(&dec);
		return fail(s, SASL_FAIL_PROTOCOL, "nonce mismatch", out);
	}
	mbuf_reset(&dec);
	if (sasl_base64_decode(proof_at + 3, (size_t)(end - proof_at - 3), &dec) < 0 ||
	    dec.len != klen) {
		mbuf_clear(&dec);
		return fail(s, SASL_FAIL_PROTOCOL, "malformed proof", out);
	}
	if (mbuf_add(&s->auth_message, in, (size_t)(proof_at - in)) < 0) {
		mbuf_clear(&dec);
		return server_error(s, "auth message too long", out);
	}

	res = scram_verify_proof(s, (const uint8_t *)dec.data, out);
	mbuf_clear(&dec);
	return res;
}

static enum sasl_result
step_scram(struct sasl_server *s, const char *in, size_t inlen,
	   struct mbuf *out)
{
	if (s->state == ST_SCRAM_FINAL) {
		if (in == NULL)
			return fail(s, SASL_FAIL_PROTOCOL, "missing response", out);
		return scram_client_final(s, in, inlen, out);
	}
	return scram_client_first(s, in, inlen, out);
}

/* ---- dispatch ---- */

enum sasl_result
sasl_step(struct sasl_server *s, const char *in, size_t inlen,
	  struct mbuf *out)
{
	mbuf_reset(out);
	if (s->state == ST_DONE)
		return fail(s, s->fail_kind != SASL_FAIL_NONE ? s->fail_kind :
								SASL_FAIL_PROTOCOL,
			    s->reason[0] != '\0' ? s->reason :
						    "exchange already finished",
			    out);
	if (in != NULL && inlen > SASL_MAX_MESSAGE)
		return fail(s, SASL_FAIL_PROTOCOL, "message too long", out);
	/* Client-first mechanisms: no initial response gets an empty challenge. */
	if (s->state == ST_START && in == NULL &&
	    (s->mech == SASL_MECH_PLAIN || mech_is_scram(s->mech))) {
		s->state = ST_INITIAL;
		return SASL_CONTINUE;
	}
	if (s->state == ST_INITIAL) {
		if (in == NULL)
			return fail(s, SASL_FAIL_PROTOCOL, "missing response", out);
		s->state = ST_START;
	}
	switch (s->mech) {
	case SASL_MECH_PLAIN:
		return step_plain(s, in, inlen, out);
	case SASL_MECH_LOGIN:
		return step_login(s, in, inlen, out);
	case SASL_MECH_CRAM_MD5:
		return step_cram(s, in, inlen, out);
	default:
		return step_scram(s, in, inlen, out);
	}
}

enum sasl_result
sasl_step_base64(struct sasl_server *s, const char *b64, size_t b64len,
		 struct mbuf *out_b64)
{
	struct mbuf in, out;
	enum sasl_result res;
	int r;

	mbuf_reset(out_b64);
	if (s->state == ST_DONE)
		return sasl_step(s, NULL, 0, out_b64);
	mbuf_init(&in, SASL_MAX_MESSAGE);
	if (b64 != NULL) {
		r = sasl_base64_decode(b64, b64len, &in);
		if (r < 0) {
			mbuf_clear(&in);
			return fail(s, SASL_FAIL_PROTOCOL,
				    r == -1 ? "bad base64" : "message too long",
				    out_b64);
		}
	}
	mbuf_init(&out, out_b64->max);
	res = sasl_step(s, b64 == NULL ? NULL : in.data ? in.data : "", in.len,
			&out);
	if (in.data != NULL)
		OPENSSL_cleanse(in.data, in.cap);
	mbuf_clear(&in);
	if ((res == SASL_CONTINUE || res == SASL_SUCCESS) &&
	    sasl_base64_encode(out.data ? out.data : "", out.len, out_b64) < 0)
		res = out_full(s, out_b64);
	mbuf_clear(&out);
	return res;
}

/* ---- base64 ---- */

static const char b64chars[] =
	"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

int
sasl_base64_decode(const char *in, size_t inlen, struct mbuf *out)
{
	const unsigned char *p = (const unsigned char *)in;
	size_t start = out->len, i, pad = 0, n;
	uint8_t bytes[3];
	int v[4], j;

	if (inlen % 4 != 0)
		return -1;
	if (inlen == 0)
		return 0;
	if (p[inlen - 1] == '=')
		pad = p[inlen - 2] == '=' ? 2 : 1;
	n = inlen / 4 * 3 - pad;
	if (n > out->max || out->len > out->max - n)
		return -2;
	for (i = 0; i < inlen; i += 4) {
		for (j = 0; j < 4; j++) {
			if (i + 4 == inlen && j >= 4 - (int)pad)
				v[j] = 0; /* padding, checked above */
			else if ((v[j] = b64_value(p[i + (size_t)j])) < 0)
				goto bad;
		}
		bytes[0] = (uint8_t)(v[0] << 2 | v[1] >> 4);
		bytes[1] = (uint8_t)((v[1] & 0x0f) << 4 | v[2] >> 2);
		bytes[2] = (uint8_t)((v[2] & 0x03) << 6 | v[3]);
		if (i + 4 == inlen) {
			/* Bits beyond the encoded bytes must be zero. */
			if ((pad == 1 && (v[2] & 0x03) != 0) ||
			    (pad == 2 && (v[1] & 0x0f) != 0))
				goto bad;
			mbuf_add(out, bytes, 3 - pad);
		} else {
			mbuf_add(out, bytes, 3);
		}
	}
	return (int)(out->len - start);
bad:
	if (out->data != NULL) {
		out->len = start;
		out->data[start] = '\0';
	}
	return -1;
}

int
sasl_base64_encode(const void *in, size_t inlen, struct mbuf *out)
{
	const uint8_t *p = in;
	size_t n = (inlen + 2) / 3 * 4, i;
	char q[4];
	uint32_t v;

	if (inlen > SIZE_MAX / 2 || n > out->max || out->len > out->max - n)
		return -1;
	for (i = 0; i < inlen; i += 3) {
		v = (uint32_t)p[i] << 16;
		if (i + 1 < inlen)
			v |= (uint32_t)p[i + 1] << 8;
		if (i + 2 < inlen)
			v |= p[i + 2];
		q[0] = b64chars[v >> 18 & 0x3f];
		q[1] = b64chars[v >> 12 & 0x3f];
		q[2] = i + 1 < inlen ? b64chars[v >> 6 & 0x3f] : '=';
		q[3] = i + 2 < inlen ? b64chars[v & 0x3f] : '=';
		mbuf_add(out, q, 4);
	}
	if (inlen == 0)
		mbuf_add(out, "", 0); /* keep data non-NULL and terminated */
	return 0;
}

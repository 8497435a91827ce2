/*
 * sasl: the SASL server shared by IMAP AUTHENTICATE and SMTP AUTH.
 * Owns: the mechanism state machines (PLAIN, LOGIN, CRAM-MD5, SCRAM-SHA-1,
 * SCRAM-SHA-256 and the -PLUS variants), the per-account secrets derived from
 * a password (never the password itself) and their versioned binary form, and
 * a strict base64 codec for the wire form.
 * Does not: log, do network or disk I/O, know about accounts (secrets come
 * from a lookup callback), or delay failed attempts (the caller does that).
 */
#ifndef MOX_SASL_H
#define MOX_SASL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "daemon/util.h"

/* Largest decoded client message accepted by any mechanism (bytes). */
#define SASL_MAX_MESSAGE 8192
/* Largest username (authentication identity) in bytes, after decoding. */
#define SASL_MAX_USERNAME 256
/* Default and minimum PBKDF2 iteration count for new SCRAM secrets. */
#define SASL_SCRAM_ITERATIONS 4096
/* Largest iteration count accepted from a stored secret (bounds CPU use). */
#define SASL_SCRAM_ITERATIONS_MAX 10000000u
/* Salt sizes: new salts are SASL_SALT_LEN bytes; stored ones 1..SASL_SALT_MAX. */
#define SASL_SALT_LEN 16
#define SASL_SALT_MAX 64
/* Minimum length of the key used to derive fake salts for unknown users. */
#define SASL_FAKE_KEY_MIN 16

enum sasl_mech {
	SASL_MECH_PLAIN,
	SASL_MECH_LOGIN,
	SASL_MECH_CRAM_MD5,
	SASL_MECH_SCRAM_SHA_1,
	SASL_MECH_SCRAM_SHA_1_PLUS,
	SASL_MECH_SCRAM_SHA_256,
	SASL_MECH_SCRAM_SHA_256_PLUS,
	SASL_MECH_COUNT
};

/* Result of sasl_step(); follows the module-wide <0 / 0 / >0 convention. */
enum sasl_result {
	SASL_ERROR = -1,   /* server-side failure (RNG, crypto, lookup error) */
	SASL_FAIL = 0,     /* authentication failed; reply with a generic failure */
	SASL_CONTINUE = 1, /* send out as the next challenge, then step again */
	SASL_SUCCESS = 2,  /* authenticated; out may hold final server data */
};

/* Why an exchange failed; for the caller's policy and log, never the client. */
enum sasl_fail_kind {
	SASL_FAIL_NONE,        /* not failed (yet) */
	SASL_FAIL_PROTOCOL,    /* malformed message, bad base64, bad gs2 header,
	                          channel binding mismatch, downgrade, oversize */
	SASL_FAIL_CREDENTIALS, /* unknown user, wrong password, bad proof */
	SASL_FAIL_NO_SECRET,   /* account has no secret for this mechanism: the
	                          caller skips the failed-login delay */
};

enum sasl_scram_hash {
	SASL_SCRAM_SHA1,
	SASL_SCRAM_SHA256,
};

/* One SCRAM record (RFC 5802 section 3). Keys use 20 (SHA-1) or 32 bytes. */
struct sasl_scram_secret {
	uint8_t salt[SASL_SALT_MAX];
	size_t salt_len;
	uint32_t iterations;
	uint8_t stored_key[32];
	uint8_t server_key[32];
};

#define SASL_SECRET_SCRAM_SHA1   0x01u
#define SASL_SECRET_SCRAM_SHA256 0x02u
#define SASL_SECRET_CRAM_MD5     0x04u

/*
 * What an account stores for authentication. flags tells which members are
 * set. cram_md5 is the HMAC-MD5 state after absorbing key^ipad (bytes 0..15)
 * and key^opad (16..31), each as the MD5 chaining words A,B,C,D in
 * little-endian order (the layout of Dovecot's CRAM-MD5 scheme).
 * Holds key material: release with sasl_secrets_clear().
 */
struct sasl_secrets {
	unsigned flags;
	struct sasl_scram_secret scram_sha1;
	struct sasl_scram_secret scram_sha256;
	uint8_t cram_md5[32];
};

/*
 * Looks up the secrets of username (already validated UTF-8, no NUL).
 * Returns >0 and fills *secrets_r when the account exists (flags may be 0
 * when it has no secrets), 0 for an unknown user, <0 on a server error.
 */
typedef int sasl_lookup_fn(void *arg, const char *username,
			   struct sasl_secrets *secrets_r);

/*
 * Settings for one exchange. Every pointer is borrowed and must stay valid
 * until sasl_server_free().
 */
struct sasl_server_settings {
	sasl_lookup_fn *lookup;
	void *lookup_arg;
	/* Host name in the CRAM-MD5 challenge; NULL means "localhost". */
	const char *hostname;
	/*
	 * Server secret (>= SASL_FAKE_KEY_MIN bytes) from which fake SCRAM salts
	 * for unknown users are derived, so salts do not reveal which users
	 * exist. Without it an unknown user makes SCRAM return SASL_ERROR.
	 */
	const uint8_t *fake_key;
	size_t fake_key_len;
	/* Iterations announced for unknown users: use the count real accounts
	 * get (0 means SASL_SCRAM_ITERATIONS). */
	uint32_t fake_iterations;
	/*
	 * Channel binding of the connection: "tls-exporter" (TLS 1.3) or
	 * "tls-unique" (TLS 1.2) and its data. NULL when there is none (no TLS);
	 * then the -PLUS mechanisms fail. When set, the server is taken to
	 * advertise the -PLUS mechanisms, so a SCRAM client sending the "y" flag
	 * indicates a downgrade and fails.
	 */
	const char *cb_type;
	const uint8_t *cb_data;
	size_t cb_data_len;
};

struct sasl_server;

/* Mechanism name as in RFCs ("SCRAM-SHA-256-PLUS"); never NULL for a valid mech. */
const char *sasl_mech_name(enum sasl_mech mech);
/* Parse a mechanism name (ASCII case-insensitive). Returns the mechanism
 * (>= 0), or -1 when unknown. */
int sasl_mech_from_name(const char *name);
/* True for the SCRAM -PLUS (channel binding) mechanisms. */
bool sasl_mech_is_plus(enum sasl_mech mech);
/* True for mechanisms that reveal the password to the server (PLAIN, LOGIN):
 * offer them only on a TLS-protected connection. */
bool sasl_mech_is_plaintext(enum sasl_mech mech);

/* Start an exchange; settings is copied (its pointees are borrowed).
 * Never returns NULL. Free with sasl_server_free(). */
struct sasl_server *sasl_server_new(enum sasl_mech mech,
				    const struct sasl_server_settings *set);
/* Free the exchange and wipe its key material; sets *s to NULL; NULL ok. */
void sasl_server_free(struct sasl_server **s);

/*
 * Test hook: use nonce (NUL-terminated, copied) instead of a random value.
 * For SCRAM it is the server part of the nonce (printable, no ','), for
 * CRAM-MD5 the whole challenge ("<1896.697170952@host>"). Call before the
 * first sasl_step(). Returns 1, or -1 when the nonce is not acceptable.
 */
int sasl_server_set_nonce(struct sasl_server *s, const char *nonce);

/*
 * Feed one decoded client message. in == NULL means "no data" (the client
 * sent no initial response); in != NULL with inlen == 0 is an empty
 * response. out is reset and then receives the decoded server data: the
 * challenge on SASL_CONTINUE, optional final data on SASL_SUCCESS (SCRAM's
 * server-final message: a protocol without success data sends it as one
 * more challenge and expects an empty response). out should allow at least
 * 1024 bytes; on SASL_FAIL and SASL_ERROR out is empty.
 * After SASL_SUCCESS, SASL_FAIL or SASL_ERROR the exchange is over: further
 * calls return SASL_FAIL.
 */
enum sasl_result sasl_step(struct sasl_server *s, const char *in, size_t inlen,
			   struct mbuf *out);

/*
 * Like sasl_step() but on the base64 wire form in both directions: b64 is
 * decoded strictly (bad or oversize base64 gives SASL_FAIL with kind
 * SASL_FAIL_PROTOCOL); b64 == NULL means no data. out_b64 is reset and
 * receives the base64-encoded server data.
 */
enum sasl_result sasl_step_base64(struct sasl_server *s, const char *b64,
				  size_t b64len, struct mbuf *out_b64);

/* The authentication identity once parsed from the client (also after a
 * failure, for the log; escape it there), else NULL. Valid until free. */
const char *sasl_server_username(const struct sasl_server *s);
/* Why the exchange failed (SASL_FAIL_NONE unless sasl_step failed). */
enum sasl_fail_kind sasl_server_fail_kind(const struct sasl_server *s);
/* Internal reason for the last SASL_FAIL or SASL_ERROR, for the log only;
 * a static string, "" when none. Contains no client bytes. */
const char *sasl_server_reason(const struct sasl_server *s);
/* The mechanism of this exchange. */
enum sasl_mech sasl_server_mech(const struct sasl_server *s);

/*
 * Strict base64 (RFC 4648 alphabet, '=' padding required, no whitespace,
 * unused bits must be zero). Appends the decoded bytes to out. Returns the
 * number of bytes appended (>= 0; 0 for empty input), -1 on bad syntax,
 * -2 when out's maximum would be exceeded (out unchanged on error).
 */
int sasl_base64_decode(const char *in, size_t inlen, struct mbuf *out);
/* Appends the base64 encoding of in. Returns 0, or -1 when out's maximum
 * would be exceeded (out unchanged). */
int sasl_base64_encode(const void *in, size_t inlen, struct mbuf *out);

/* ---- Identities and secrets (sasl_secret.c) ---- */

/*
 * True if s (len bytes) is an acceptable authentication identity: 1 to
 * SASL_MAX_USERNAME bytes of valid UTF-8 (shortest form, no surrogates),
 * no control characters (C0, DEL, C1). No case folding is done here: the
 * lookup callback decides how names map to accounts.
 */
bool sasl_username_valid(const char *s, size_t len);

/*
 * Password preparation, "SASLprep-lite" (a subset of RFC 4013): the input
 * must be valid UTF-8 without control characters (C0, DEL, C1); non-ASCII
 * spaces are mapped to U+0020 and characters "commonly mapped to nothing"
 * (soft hyphen, zero-width joiners, variation selectors, BOM, ...) are
 * removed. Unicode NFKC normalization is NOT applied: ASCII passwords (the
 * common case) are unaffected; a non-ASCII password only works with SCRAM
 * clients when it is already in NFKC form.
 * Appends the prepared password to out (caller wipes it). Returns 1, 0 when
 * the password is not acceptable (bad UTF-8, control character, empty after
 * mapping), -1 when out's maximum would be exceeded.
 */
int sasl_password_prep(const char *pw, size_t len, struct mbuf *out);

/*
 * Derive all secrets from a password (prepared as above; never stored):
 * SCRAM-SHA-1 and SCRAM-SHA-256 with independent random salts and
 * iterations PBKDF2 rounds (0 means SASL_SCRAM_ITERATIONS; less than that
 * or more than SASL_SCRAM_ITERATIONS_MAX is refused), and the CRAM-MD5 state.
 * Returns 1, or -1 with a static message in *error_r (bad password, RNG).
 */
int sasl_secrets_derive(const char *password, uint32_t iterations,
			struct sasl_secrets *secrets_r, const char **error_r);

/*
 * Derive one SCRAM record from an already prepared password with a given
 * salt (1..SASL_SALT_MAX bytes) and iteration count (>= 1). For tests and
 * imports. Returns 1, or -1 on bad arguments or a crypto failure.
 */
int sasl_scram_secret_derive(enum sasl_scram_hash hash, const char *password,
			     size_t pwlen, const uint8_t *salt, size_t salt_len,
			     uint32_t iterations, struct sasl_scram_secret *r);

/* Compute the CRAM-MD5 state (see struct sasl_secrets) of a prepared
 * password. Returns 1. */
int sasl_cram_md5_secret_derive(const char *password, size_t pwlen,
				uint8_t state_r[32]);

/*
 * HMAC-MD5(password, challenge) from the stored CRAM-MD5 state.
 * Returns 1, or -1 on a crypto failure.
 */
int sasl_cram_md5_digest(const uint8_t state[32], const void *challenge,
			 size_t len, uint8_t digest_r[16]);

/*
 * Check a plaintext password (PLAIN, LOGIN) against the SCRAM-SHA-256
 * record, in constant time with respect to the stored key. The password is
 * prepared as by sasl_password_prep(). Returns 1 on a match, 0 on a
 * mismatch, an unacceptable password or no SCRAM-SHA-256 record, -1 on a
 * crypto failure.
 */
int sasl_secrets_verify_password(const struct sasl_secrets *s,
				 const char *password, size_t len);

/*
 * Serialize to the versioned binary form stored by the index (opaque to
 * it): version byte 1, then records of tag (1 byte), value length (2 bytes,
 * big-endian), value. Tags: 1 SCRAM-SHA-1, 2 SCRAM-SHA-256 (iterations 4
 * bytes big-endian, salt length 1 byte, salt, StoredKey, ServerKey), 3
 * CRAM-MD5 (32 bytes). Appends to out. Returns 1, or -1 when out's maximum
 * would be exceeded (out unchanged).
 */
int sasl_secrets_serialize(const struct sasl_secrets *s, struct mbuf *out);

/*
 * Parse the binary form. Unknown tags are skipped (forward compatible);
 * duplicate tags, truncation, bad lengths or values are errors. Returns 1,
 * or -1 with a static message in *error_r (*secrets_r then cleared).
 */
int sasl_secrets_parse(const void *data, size_t len,
		       struct sasl_secrets *secrets_r, const char **error_r);

/* Wipe key material; s may be NULL. */
void sasl_secrets_clear(struct sasl_secrets *s);

#endif

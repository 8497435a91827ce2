/*
 * dkim: DKIM signature verification (RFC 6376, with RFC 8463 ed25519-sha256
 * and RFC 8301: rsa-sha1 is not accepted, RSA keys under 1024 bits fail).
 * Owns: the pure parts (DKIM-Signature and key record parsers, header and
 * body canonicalization, header field selection, the signed data, the
 * signature check with OpenSSL EVP) and an asynchronous verifier that reads
 * a spooled message, looks up keys through dns.h and reports one result per
 * signature on the loop thread.
 * Does not: sign messages, evaluate DMARC/ADSP, write Authentication-Results
 * or decide what a result means for delivery. The pure functions do no I/O,
 * keep no globals and do not log.
 */
#ifndef MOX_DKIM_H
#define MOX_DKIM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "daemon/util.h"

struct event_base;
struct dns;

/* A slice of bytes; points into the caller's input unless said otherwise. */
struct dkim_str {
	const char *p;
	size_t len;
};

/* ------------------------------------------------------------------ */
/* Results                                                             */

/* RFC 8601 2.7.1 result values. */
enum dkim_status {
	DKIM_NONE = 0,
	DKIM_PASS,
	DKIM_FAIL,      /* body hash or signature does not verify, expired */
	DKIM_POLICY,    /* verifiable in principle, not acceptable here (rsa-sha1, too big to hash) */
	DKIM_NEUTRAL,   /* not checked (over the signature limit) */
	DKIM_TEMPERROR, /* key lookup failed temporarily */
	DKIM_PERMERROR, /* bad signature header, no/bad/revoked/weak key */
};

/* "none", "pass", "fail", "policy", "neutral", "temperror", "permerror". */
const char *dkim_status_name(enum dkim_status st);

/* Parser errors (negative; the message is in the err_r argument). */
#define DKIM_E_SYNTAX (-1) /* tag-list, base64, a value's syntax */
#define DKIM_E_MISSING (-2) /* a required tag is absent */
#define DKIM_E_DUP (-3)     /* a tag appears twice */
#define DKIM_E_VALUE (-4)   /* well-formed but not acceptable (version, i not in d, no from) */
#define DKIM_E_LIMIT (-5)   /* over a limit (h= fields, signature or key size, header bytes) */

/* ------------------------------------------------------------------ */
/* Tag lists (RFC 6376 3.2)                                            */

/*
 * The next tag-spec of the tag-list in s[0..len) from *pos. Returns 1 with
 * name and value (without surrounding whitespace; the value may hold folding
 * whitespace) and *pos advanced, 0 at the end, DKIM_E_SYNTAX with *err_r.
 */
int dkim_tag_next(const char *s, size_t len, size_t *pos, struct dkim_str *name_r, struct dkim_str *value_r,
		  const char **err_r);

/*
 * Decode base64 in s[0..len), skipping whitespace (FWS is allowed inside
 * b=, bh= and p=), into out (cap bytes). Padding is optional; data after
 * '=' is refused. Returns the decoded length (>= 0), DKIM_E_SYNTAX, or
 * DKIM_E_LIMIT when out is too small.
 */
int dkim_base64_decode(const char *s, size_t len, uint8_t *out, size_t cap);

/* ------------------------------------------------------------------ */
/* DKIM-Signature header (RFC 6376 3.5)                                */

enum dkim_algo {
	DKIM_ALGO_UNKNOWN = 0,
	DKIM_ALGO_RSA_SHA256,
	DKIM_ALGO_ED25519_SHA256,
	DKIM_ALGO_RSA_SHA1, /* parsed to say why it is refused (RFC 8301) */
};

enum dkim_canon {
	DKIM_CANON_SIMPLE = 0,
	DKIM_CANON_RELAXED,
};

#define DKIM_MAX_H 64       /* names in h= */
#define DKIM_MAX_SIG 512    /* decoded b=: RSA 4096 bits */
#define DKIM_HASH_LEN 32    /* SHA-256 */

struct dkim_sig {
	enum dkim_algo algo;
	struct dkim_str algo_text; /* a= as sent */
	enum dkim_canon hcanon, bcanon;
	struct dkim_str d, s;      /* domain and selector as sent */
	struct dkim_str i;         /* i= as sent; empty when absent ("@d" implied) */
	struct dkim_str h[DKIM_MAX_H];
	size_t nh;
	struct dkim_str z;
	bool has_l, has_t, has_x;
	uint64_t l;
	int64_t t, x;
	uint8_t bh[DKIM_HASH_LEN];
	size_t bh_len;
	uint8_t b[DKIM_MAX_SIG];
	size_t b_len;
	struct dkim_str b_value; /* the b= value as sent, to empty it for the signed data */
};

/*
 * Parse a DKIM-Signature header field value (after the colon, folding
 * included). Slices point into value, which must outlive *sig_r. Returns 1,
 * or a DKIM_E_* with a static message in *err_r: required tags v a b bh d h
 * s, v=1, known c=, q= containing dns/txt, i= within d= (or a subdomain),
 * h= containing From, bh= of 32 bytes, numbers in range, x >= t. An unknown
 * a= parses (algo DKIM_ALGO_UNKNOWN) so the verifier can name it.
 */
int dkim_sig_parse(const char *value, size_t len, struct dkim_sig *sig_r, const char **err_r);

/* ------------------------------------------------------------------ */
/* Key record (RFC 6376 3.6.1)                                         */

enum dkim_keytype {
	DKIM_KEY_UNKNOWN = 0,
	DKIM_KEY_RSA,
	DKIM_KEY_ED25519,
};

#define DKIM_MAX_KEY 1100 /* decoded p=: an RSA 8192-bit SubjectPublicKeyInfo */

struct dkim_key {
	enum dkim_keytype type;
	bool hash_sha256;   /* h= absent or lists sha256 */
	bool for_email;     /* s= absent, "*" or "email" */
	bool testing;       /* t=y */
	bool strict_i;      /* t=s: i= domain must equal d= */
	bool revoked;       /* p= empty */
	uint8_t p[DKIM_MAX_KEY];
	size_t p_len;
};

/*
 * Parse a key TXT record (character-strings joined). Unknown tags and
 * flags are ignored. Returns 1, or DKIM_E_* with *err_r: v= other than
 * DKIM1 or not first, p= missing, bad base64, p= too long.
 */
int dkim_key_parse(const char *txt, size_t len, struct dkim_key *key_r, const char **err_r);

/* ------------------------------------------------------------------ */
/* Header section                                                      */

struct dkim_field {
	size_t off;      /* into dkim_hdrs.raw */
	size_t len;      /* the field with its folding, without the final line end */
	size_t name_len; /* bytes before the colon (trailing WSP excluded); 0 when no colon */
};

/*
 * The header section of a message, collected incrementally. Lines end in
 * CRLF or a bare LF; a line starting with SP/HTAB continues the field above.
 */
struct dkim_hdrs {
	struct mbuf raw; /* the header bytes (lines kept with their line ends) */
	struct dkim_field *fields;
	size_t nfields, cap, max_fields;
	unsigned state; /* line-end scanner */
	bool done;
	size_t line_start;
};

void dkim_hdrs_init(struct dkim_hdrs *h, size_t max_bytes, size_t max_fields);
void dkim_hdrs_clear(struct dkim_hdrs *h);
/*
 * Feed message bytes from the start of the message. Returns the bytes
 * taken when the header section ended in p[0..n) (through the empty line;
 * the rest is body), 0 when all of p was taken and more is needed, or
 * DKIM_E_LIMIT when the header is over max_bytes or max_fields. Not to be
 * called again once it returned > 0 (h->done).
 */
ssize_t dkim_hdrs_feed(struct dkim_hdrs *h, const char *p, size_t n);
/* The message ended: a header without an empty line after it is complete. */
void dkim_hdrs_finish(struct dkim_hdrs *h);
/* Pointer to a field's bytes; valid until the next feed. */
const char *dkim_hdrs_field(const struct dkim_hdrs *h, size_t i);
/* Whether field i's name equals name (ASCII case-insensitive). */
bool dkim_hdrs_is(const struct dkim_hdrs *h, size_t i, const char *name, size_t name_len);

/* ------------------------------------------------------------------ */
/* Canonicalization and hashing                                        */

/*
 * Append field f[0..len) (name, colon, value, folding; no final CRLF)
 * canonicalized to out, without a CRLF. Returns 0, or -1 when out is full.
 */
int dkim_canon_header(enum dkim_canon c, const char *f, size_t len, struct mbuf *out);

/*
 * The body hasher: streaming body canonicalization (RFC 6376 3.4.3/3.4.4)
 * into SHA-256. Feed chunks of any size; the result does not depend on how
 * the body is cut. The line end is CRLF or a bare LF; a bare CR is data.
 */
struct dkim_body {
	enum dkim_canon canon;
	void *md;              /* EVP_MD_CTX */
	bool has_limit;
	uint64_t limit;        /* l= */
	uint64_t hashed;       /* canonical bytes hashed (<= limit) */
	uint64_t canon_len;    /* canonical body length, also beyond l= */
	uint64_t empty_lines;  /* CRLFs held back: trailing empty lines are ignored */
	bool cr, wsp, in_line;
	struct mbuf *copy;     /* tests: every canonical byte also goes here (ignores l=) */
	char buf[512];
	size_t buflen;
};

/* limit < 0: no l=. Returns 0, or -1 when OpenSSL fails. */
int dkim_body_init(struct dkim_body *b, enum dkim_canon c, int64_t limit);
void dkim_body_update(struct dkim_body *b, const char *p, size_t n);
/* Finish: out gets the SHA-256; *canon_len_r the whole canonical length. */
int dkim_body_final(struct dkim_body *b, uint8_t out[DKIM_HASH_LEN], uint64_t *canon_len_r);
void dkim_body_clear(struct dkim_body *b);

/*
 * The header data a signature covers (RFC 6376 3.7): the fields named in
 * sig->h, each name picking the next instance from the bottom not yet
 * used (absent ones contribute nothing), canonicalized with CRLF, then the
 * signature field sig_field (from h) with the b= value emptied,
 * canonicalized, without CRLF. sig must have been parsed from that field's
 * value. Appends to out; 0, or -1 when out is full.
 */
int dkim_header_data(const struct dkim_hdrs *h, size_t sig_field, const struct dkim_sig *sig,
		     struct mbuf *out);

/*
 * Check one signature with its key: algorithm, key type and flags, key
 * size (RSA 1024..8192 bits), the body hash (bh, the hash of the body as
 * the signature's c= and l= say) and the signature over hdata.
 * canon_len is the canonical body length (l= beyond it fails). now is the
 * time for x=. Returns the status with a static reason in *reason_r ("" on
 * pass) and the key size in *bits_r (may be NULL).
 */
enum dkim_status dkim_check(const struct dkim_sig *sig, const struct dkim_key *key, const char *hdata,
			    size_t hlen, const uint8_t bh[DKIM_HASH_LEN], uint64_t canon_len, int64_t now,
			    const char **reason_r, int *bits_r);

/* ------------------------------------------------------------------ */
/* Asynchronous verifier                                               */

struct dkim_limits {
	size_t max_signatures;    /* verified; later ones are NEUTRAL. Default 5 */
	uint64_t max_hash_bytes;  /* message bytes read and hashed. Default 32 MiB */
	size_t max_header_bytes;  /* header section. Default 256 KiB */
	size_t max_header_fields; /* Default 1000 */
	size_t read_chunk;        /* bytes read per loop turn. Default 256 KiB */
};

void dkim_limits_default(struct dkim_limits *lim);

/*
 * One signature's outcome. Strings belong to the verifier and stay valid
 * until dkim_verify_free; "" when the signature did not say.
 */
struct dkim_result {
	enum dkim_status status;
	const char *domain;   /* d=, lower-cased */
	const char *selector; /* s= */
	const char *identity; /* i= as sent, or "@" d= */
	const char *algo;     /* a= as sent */
	const char *b_prefix; /* first 8 characters of b= (RFC 6008 header.b) */
	const char *reason;   /* static text, "" on pass */
	bool testing;         /* the key has t=y: treat as unsigned */
	int key_bits;         /* RSA modulus or 256 for ed25519; 0 unknown */
};

struct dkim_verify;

/*
 * Called once on the loop thread with every DKIM-Signature's result in
 * header order (n == 0: the message is not signed, or its header could not
 * be read: see err). err is NULL, or a message for the log when reading
 * the file failed. The verifier may be freed from inside the callback.
 */
typedef void dkim_verify_fn(void *arg, const struct dkim_result *res, size_t n, const char *err);

/*
 * Verify the message in fd from offset skip (our own prefix headers, the
 * Received line, come before it) to the end of the file, reading
 * lim->read_chunk bytes per loop turn, looking keys up with d. fd is
 * duplicated; the caller keeps its own. lim NULL: defaults. now 0: time().
 * Never calls cb from inside this function. Returns the verifier (free with
 * dkim_verify_free, which also cancels it), or NULL with errno set when
 * fd cannot be duplicated.
 */
struct dkim_verify *dkim_verify_start(struct event_base *base, struct dns *d, int fd, uint64_t skip,
				      const struct dkim_limits *lim, int64_t now, dkim_verify_fn *cb, void *arg);

/* Cancel (no callback afterwards) and free. Accepts NULL; sets *vp = NULL. */
void dkim_verify_free(struct dkim_verify **vp);

#endif

/*
 * mime: pure parser for RFC 5322 / MIME (RFC 2045-2049) messages.
 * Owns: the parsed part tree with byte offsets into the caller's buffer, the
 * IMAP envelope, the threading inputs (normalized Message-ID, references,
 * base subject, date), the compact cache encoding of all of that, and the
 * writers for IMAP BODYSTRUCTURE / BODY / ENVELOPE syntax.
 * Does not: read files, log, decode bodies (base64/QP), or convert charsets
 * other than utf-8, us-ascii and iso-8859-1. Never fails on a broken
 * message: whatever cannot be parsed is kept as an opaque body.
 */
#ifndef MOX_INDEX_MIME_H
#define MOX_INDEX_MIME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <tcutil.h>

/* Bounds on what a message may make the parser build. */
struct mime_limits {
	unsigned max_depth;  /* nesting of multipart/message parts (50) */
	unsigned max_parts;  /* parts in the whole tree (10,000) */
	size_t max_header;   /* header bytes interpreted per part (256 KiB) */
};

/* Fill l with the defaults listed above. */
void mime_limits_init(struct mime_limits *l);

/* A Content-Type/-Disposition parameter; value is UTF-8 (RFC 2231 decoded).
 * When the charset of an RFC 2231 value is unknown, name ends in '*' and
 * value is the raw extended value ("charset'lang'%XX..."). */
struct mime_param {
	const char *name;
	const char *value;
};

/* One IMAP envelope address. NULL means NIL. Groups: a start marker has
 * mailbox = group name and host NULL; the end marker has all four NULL. */
struct mime_addr {
	const char *name;    /* display name, raw (encoded-words kept), unquoted */
	const char *adl;     /* obsolete source route "@a,@b", usually NULL */
	const char *mailbox; /* local part, unquoted */
	const char *host;    /* domain; "MISSING_DOMAIN" when absent */
};

struct mime_addrlist {
	struct mime_addr *v;
	uint32_t n;
};

enum mime_env_addr {
	MIME_ENV_FROM,
	MIME_ENV_SENDER,
	MIME_ENV_REPLY_TO,
	MIME_ENV_TO,
	MIME_ENV_CC,
	MIME_ENV_BCC,
	MIME_ENV_NADDR
};

/* RFC 9051 ENVELOPE data. Strings are the header values unfolded and
 * trimmed, otherwise undecoded; NULL when the header is absent. */
struct mime_envelope {
	const char *date;
	const char *subject;
	struct mime_addrlist addr[MIME_ENV_NADDR];
	const char *in_reply_to;
	const char *message_id;
};

/* Part flags. */
#define MIME_PART_OPAQUE 0x1u /* a limit was hit: the body was not parsed further */

/*
 * One MIME part. Offsets are absolute byte offsets in the parsed buffer.
 * hdr_* covers the part's header including the blank line that ends it
 * (IMAP BODY[x.MIME], or BODY[x.HEADER] of a message); body_* covers the
 * content (BODY[x], BODY[x.TEXT]); in a multipart the line break before a
 * boundary belongs to the boundary. *_vsize is the size with every bare LF
 * counted as CRLF (what IMAP reports). body_lines counts LFs in the body.
 * For message/rfc822 parts children[0] is the encapsulated message (its
 * hdr_* is that message's header) and env its envelope.
 */
struct mime_part {
	uint64_t hdr_off, hdr_len, hdr_vsize;
	uint64_t body_off, body_len, body_vsize, body_lines;
	const char *type, *subtype; /* lowercased, never NULL */
	struct mime_param *params;
	uint32_t nparams;
	const char *id, *description, *encoding, *md5, *location; /* NULL: absent */
	const char *disposition; /* disposition type, lowercased, or NULL */
	struct mime_param *disp_params;
	uint32_t ndisp_params;
	const char **languages;
	uint32_t nlanguages;
	struct mime_part *children;
	uint32_t nchildren;
	uint32_t flags;
	struct mime_envelope *env; /* message/rfc822 only, else NULL */
};

/*
 * A parsed message. Everything hangs off pool and is read-only for users;
 * pointers stay valid until mime_msg_free. Offsets refer to the buffer given
 * to mime_parse (the buffer itself is not referenced afterwards).
 */
struct mime_msg {
	TCMPOOL *pool;
	struct mime_part root;
	struct mime_envelope env;
	const char *msgid;       /* normalized Message-ID (no <>), or NULL */
	const char **refs;       /* References ids, normalized, in header order */
	uint32_t nrefs;
	const char *in_reply_to_id; /* first id of In-Reply-To, or NULL */
	const char *base_subject;   /* RFC 5256 base subject, UTF-8, never NULL */
	int64_t date;               /* Date header as unix time, -1 if unparseable */
};

/*
 * Parse the whole message buf[0..len). lim NULL means the defaults.
 * Never fails on content: returns 1 and sets *msg_r (free with
 * mime_msg_free). buf need not be NUL-terminated.
 */
int mime_parse(const char *buf, size_t len, const struct mime_limits *lim,
	       struct mime_msg **msg_r);

/* Free a message from mime_parse/mime_cache_decode; sets *msg = NULL; NULL ok. */
void mime_msg_free(struct mime_msg **msg);

/*
 * Find the part for an IMAP section number list ("1.2.3" as {1,2,3}).
 * n == 0 yields the root. A non-multipart message (the root or an
 * encapsulated one) is its own part 1; a message/rfc822 part's numbers
 * address its encapsulated message's parts; other leaves have no subparts.
 * Returns the part or NULL when it does not exist. *is_msg_r (may be NULL)
 * tells whether HEADER/TEXT apply (the root or a message/rfc822 part), and
 * those refer to the returned part's children[0] when it is message/rfc822.
 */
const struct mime_part *mime_part_find(const struct mime_msg *m, const uint32_t *nums,
				       size_t n, bool *is_msg_r);

/*
 * Parse an RFC 5322 address-list value (unfolded or not) into out, with
 * strings allocated from pool. Tolerates obsolete syntax and garbage;
 * UTF-8 is allowed. Returns the number of entries (>= 0).
 */
int mime_addr_parse(const char *s, size_t len, TCMPOOL *pool, struct mime_addrlist *out);

/*
 * Decode RFC 2047 encoded-words in s[0..len) and append the result to out,
 * as UTF-8 for the charsets utf-8, us-ascii and iso-8859-1; other encoded
 * words are appended raw. Whitespace between adjacent encoded-words is
 * dropped. Returns 1.
 */
int mime_decode_2047(const char *s, size_t len, TCXSTR *out);

/* Append the RFC 5256 section 2.1 base subject of the raw Subject value
 * s[0..len) (decoded, whitespace-normalized, case-folded) to out. Returns 1. */
int mime_base_subject(const char *s, size_t len, TCXSTR *out);

/* Parse an RFC 5322 (or obsolete) date-time; returns unix time, or -1. */
int64_t mime_parse_date(const char *s, size_t len);

/* Cache encoding (index value). Appends the encoding of m to out. Returns 1. */
int mime_cache_encode(const struct mime_msg *m, TCXSTR *out);

/*
 * Decode a record made by mime_cache_encode, validating every field against
 * len and lim (NULL: defaults). Returns 1 and sets *msg_r, or -1 with a
 * static message in *err_r (may be NULL) for a corrupt or foreign record.
 */
int mime_cache_decode(const void *p, size_t len, const struct mime_limits *lim,
		      struct mime_msg **msg_r, const char **err_r);

/* Output flags for the IMAP writers. */
#define MIME_IMAP_UTF8 0x1u /* client enabled UTF8=ACCEPT: 8-bit strings allowed */

/* Append s[0..len) as an IMAP string: NIL when s is NULL, a quoted string
 * when possible, else a literal {n}. */
void mime_imap_string(const char *s, size_t len, unsigned flags, TCXSTR *out);

/* Append BODYSTRUCTURE (extensible true) or BODY (false) of part p. */
void mime_imap_bodystructure(const struct mime_part *p, bool extensible, unsigned flags,
			     TCXSTR *out);

/* Append the ENVELOPE of e (Sender/Reply-To default to From). */
void mime_imap_envelope(const struct mime_envelope *e, unsigned flags, TCXSTR *out);

#endif

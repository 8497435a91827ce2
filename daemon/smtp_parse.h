/*
 * smtp_parse: pure parsers for the SMTP server (RFC 5321 with the ESMTP
 * extensions SIZE, 8BITMIME, BINARYMIME, SMTPUTF8, DSN, REQUIRETLS,
 * CHUNKING and AUTH).
 * Owns: command line framing, parsing one command line into a struct,
 * the resumable DATA dot-unstuffing reader, and reply formatting.
 * Does not: hold connection state, decide which verbs are allowed in which
 * state, look up addresses, log, allocate (except the reply mbuf), or touch
 * sockets. Every function is pure over the bytes it is given.
 */
#ifndef MOX_SMTP_PARSE_H
#define MOX_SMTP_PARSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "daemon/util.h"

/* A slice of bytes: points into the caller's line or into smtp_cmd.scratch. */
struct smtp_str {
	const char *p;
	size_t len;
};

/* ------------------------------------------------------------------ */
/* Limits and line framing                                             */

/* Lines up to this length (with line end) are what smtp_cmd_parse accepts
 * for verbs other than AUTH; the decode scratch in smtp_cmd is sized for it. */
#define SMTP_CMD_MAX_LINE 4096

struct smtp_limits {
	/* Command line with its CRLF. RFC 5321 4.5.3.1.4: 512. Values above
	 * SMTP_CMD_MAX_LINE are treated as SMTP_CMD_MAX_LINE. */
	size_t max_line;
	/* An "AUTH ..." command line or a SASL continuation line: initial
	 * responses and SCRAM/GSSAPI messages are longer. Default 12288. */
	size_t max_auth_line;
};

/* Fill *lim with the defaults (512 / 12288). */
void smtp_limits_default(struct smtp_limits *lim);

/* Return values of smtp_line_find. */
#define SMTP_LINE_NEED_MORE 0
#define SMTP_LINE_TOO_LONG (-1)

struct smtp_line {
	struct smtp_str text; /* line without its line end (valid with buf) */
	bool bare_lf;         /* ended by LF without CR before it */
	bool complete;        /* TOO_LONG only: the line end was seen */
	size_t skip;          /* TOO_LONG only: bytes the caller may discard */
};

/*
 * Find the first line in buf[0..len). The line end is CRLF; a bare LF is
 * accepted as a line end too (many clients send it) and reported in
 * line_r->bare_lf so the caller can refuse or count it. A CR not followed
 * by LF is part of the line (the command parser rejects it).
 * The limit counts the line end: lim->max_line, or lim->max_auth_line when
 * auth_cont is true (a SASL continuation line) or the line starts with
 * "AUTH " (any case).
 * Returns the bytes consumed including the line end (>0) and fills
 * *line_r; SMTP_LINE_NEED_MORE when no line end yet and the buffer is still
 * under the limit; SMTP_LINE_TOO_LONG when the line is over the limit,
 * also when no line end has arrived yet but buf already exceeds the limit.
 * On TOO_LONG, line_r->skip says how many bytes to drop (through the LF when
 * complete, else all of buf: then keep dropping input up to the next LF)
 * before answering 500 5.5.2 (see smtp_cmd_set_too_long).
 */
int smtp_line_find(const char *buf, size_t len, const struct smtp_limits *lim,
		   bool auth_cont, struct smtp_line *line_r);

/* ------------------------------------------------------------------ */
/* Commands                                                            */

enum smtp_verb {
	SMTP_VERB_UNKNOWN = 0,
	SMTP_VERB_HELO,
	SMTP_VERB_EHLO,
	SMTP_VERB_MAIL,
	SMTP_VERB_RCPT,
	SMTP_VERB_DATA,
	SMTP_VERB_BDAT,
	SMTP_VERB_RSET,
	SMTP_VERB_NOOP,
	SMTP_VERB_QUIT,
	SMTP_VERB_VRFY,
	SMTP_VERB_EXPN,
	SMTP_VERB_HELP,
	SMTP_VERB_STARTTLS,
	SMTP_VERB_AUTH,
};

/* Upper-case name of a verb ("UNKNOWN" for SMTP_VERB_UNKNOWN). Static. */
const char *smtp_verb_name(enum smtp_verb v);

/* Extensions the server advertised; MAIL/RCPT parameters of an extension
 * not in this set are refused with 555 5.5.4 like unknown ones. */
#define SMTP_EXT_SIZE       0x001u
#define SMTP_EXT_8BITMIME   0x002u
#define SMTP_EXT_BINARYMIME 0x004u
#define SMTP_EXT_SMTPUTF8   0x008u
#define SMTP_EXT_DSN        0x010u
#define SMTP_EXT_REQUIRETLS 0x020u
#define SMTP_EXT_CHUNKING   0x040u
#define SMTP_EXT_AUTH       0x080u
#define SMTP_EXT_ALL        0x0ffu

struct smtp_parse_opts {
	unsigned ext;  /* SMTP_EXT_* */
	bool smtputf8; /* RCPT: the transaction's MAIL carried SMTPUTF8 */
};

/* struct smtp_helo.flags */
#define SMTP_HELO_LITERAL    0x01u /* [1.2.3.4] or [IPv6:...] */
#define SMTP_HELO_BARE_IP    0x02u /* IP without brackets (tolerated) */
#define SMTP_HELO_UNDERSCORE 0x04u /* hostname with '_' (tolerated) */
#define SMTP_HELO_UTF8       0x08u /* non-ASCII (valid UTF-8) labels */
#define SMTP_HELO_INVALID    0x10u /* HELO only: not a domain/literal */

struct smtp_helo {
	struct smtp_str domain; /* the argument as sent (brackets kept) */
	struct smtp_str ip;     /* literal/bare IP without brackets/"IPv6:" */
	int af;                 /* AF_INET/AF_INET6 for literal/bare IP, else 0 */
	unsigned flags;
};

/* struct smtp_path.flags */
#define SMTP_ADDR_NULL         0x01u /* <> */
#define SMTP_ADDR_QUOTED       0x02u /* localpart sent as quoted-string */
#define SMTP_ADDR_UTF8         0x04u /* non-ASCII localpart or domain */
#define SMTP_ADDR_LITERAL      0x08u /* domain is an address literal */
#define SMTP_ADDR_POSTMASTER   0x10u /* RCPT <postmaster> without domain */
#define SMTP_ADDR_SOURCE_ROUTE 0x20u /* <@a,@b:u@d>: route parsed, ignored */
#define SMTP_ADDR_LONG_LOCAL   0x40u /* localpart over 64 octets (accepted) */

struct smtp_path {
	/* localpart with quoting removed (quoted pairs resolved); NUL-terminated */
	struct smtp_str localpart;
	/* localpart as it should be written in a path: dot-atom when it is
	 * one, else a quoted-string with only '"' and '\' escaped */
	struct smtp_str localpart_canon;
	/* domain as sent (case kept; address literals with brackets);
	 * NUL-terminated; empty for <> and <postmaster> */
	struct smtp_str domain;
	struct smtp_str ip; /* address literal without brackets/"IPv6:" */
	int af;             /* AF_INET/AF_INET6 for address literals */
	unsigned flags;
};

enum smtp_body {
	SMTP_BODY_NONE = 0,
	SMTP_BODY_7BIT,
	SMTP_BODY_8BITMIME,
	SMTP_BODY_BINARYMIME,
};

enum smtp_ret {
	SMTP_RET_NONE = 0,
	SMTP_RET_FULL,
	SMTP_RET_HDRS,
};

/* Parameters seen (struct smtp_mail_params.seen / smtp_rcpt_params.seen) */
#define SMTP_PARAM_SIZE       0x001u
#define SMTP_PARAM_BODY       0x002u
#define SMTP_PARAM_SMTPUTF8   0x004u
#define SMTP_PARAM_RET        0x008u
#define SMTP_PARAM_ENVID      0x010u
#define SMTP_PARAM_AUTH       0x020u
#define SMTP_PARAM_REQUIRETLS 0x040u
#define SMTP_PARAM_NOTIFY     0x080u
#define SMTP_PARAM_ORCPT      0x100u

struct smtp_mail_params {
	unsigned seen;        /* SMTP_PARAM_* */
	uint64_t size;        /* SIZE=, declared size */
	enum smtp_body body;
	bool smtputf8;
	bool requiretls;
	enum smtp_ret ret;
	struct smtp_str envid; /* xtext-decoded, NUL-terminated */
	struct smtp_str auth;  /* xtext-decoded; "<>" kept as "<>" */
};

#define SMTP_NOTIFY_NEVER   0x1u
#define SMTP_NOTIFY_SUCCESS 0x2u
#define SMTP_NOTIFY_FAILURE 0x4u
#define SMTP_NOTIFY_DELAY   0x8u

struct smtp_rcpt_params {
	unsigned seen;             /* SMTP_PARAM_* */
	unsigned notify;           /* SMTP_NOTIFY_*, 0 when not given */
	struct smtp_str orcpt_type; /* "rfc822", "utf-8", ... as sent */
	/* decoded: xtext "+HH" and, for utf-8, "\x{HHHH}" (RFC 6533) */
	struct smtp_str orcpt;
};

struct smtp_bdat {
	uint64_t size;
	bool last;
};

struct smtp_auth {
	struct smtp_str mech;    /* as sent (compare case-insensitively) */
	struct smtp_str initial; /* base64 initial response, syntax checked */
	bool has_initial;        /* an initial response was given */
	bool initial_empty;      /* it was "=" (empty response) */
};

/* Decoded strings (localparts, xtext) go to the scratch: big enough for
 * everything a SMTP_CMD_MAX_LINE line can decode to. */
#define SMTP_CMD_SCRATCH (2 * SMTP_CMD_MAX_LINE + 64)

struct smtp_cmd {
	enum smtp_verb verb;
	struct smtp_str verb_text; /* the verb as sent (for unknown verbs) */
	struct smtp_str arg;       /* everything after the verb and one SP,
				      trailing SP/HTAB removed */
	struct smtp_helo helo;         /* HELO, EHLO */
	struct smtp_path path;         /* MAIL, RCPT */
	struct smtp_mail_params mail;  /* MAIL */
	struct smtp_rcpt_params rcpt;  /* RCPT */
	struct smtp_bdat bdat;         /* BDAT */
	struct smtp_auth auth;         /* AUTH */

	/* On error: reply code (500, 501, 504, 553, 555), enhanced status
	 * code ("5.5.2", static) and a message safe to send and log (client
	 * bytes in it are restricted to printable ASCII). */
	int code;
	const char *ecode;
	char msg[160];

	size_t scratch_used;
	char scratch[SMTP_CMD_SCRATCH];
};

/*
 * Parse one command line (without its line end, as returned by
 * smtp_line_find). Verbs are case-insensitive. Leniencies, chosen for real
 * clients and documented here because they are policy:
 *  - trailing SP/HTAB at the end of any line is ignored;
 *  - MAIL FROM: / RCPT TO: may be followed by spaces before "<"
 *    ("MAIL FROM: <a@b>", sent by some clients); the "<...>" brackets are
 *    required (no bare addresses);
 *  - several SP between MAIL/RCPT parameters are accepted;
 *  - EHLO takes one domain or address literal; '_' in hostname labels is
 *    accepted (Windows machine names) and an IP without brackets is
 *    accepted, both reported in helo.flags; anything else is 501;
 *  - HELO (the RFC 821 command) accepts any non-empty printable argument
 *    and sets SMTP_HELO_INVALID when it is not a domain/literal;
 *  - source routes in paths are parsed and ignored (RFC 5321 4.1.1.3);
 *  - localparts over 64 octets are accepted and flagged (RFC 5321 4.5.3.1
 *    asks not to limit), domains are limited to 255 octets, labels to 63.
 * Non-ASCII in addresses/parameter values needs SMTPUTF8 in effect (the MAIL
 * parameter on the same line, or opts->smtputf8 for RCPT) and the extension
 * advertised, else 553 5.6.7.
 * opts NULL means no extensions and no SMTPUTF8 transaction.
 * Errors (in cmd_r->code/ecode): 500 5.5.1 unknown verb; 500 5.5.2 empty
 * line, control characters, line too long; 501 5.5.4 bad arguments or
 * parameter syntax; 501 5.1.7 / 5.1.3 bad sender / recipient address;
 * 501 5.5.2 bad base64 in AUTH; 555 5.5.4 unknown parameter or one of an
 * extension not in opts->ext; 553 5.6.7 non-ASCII without SMTPUTF8.
 * Choosing 502/503/504 (verb not offered, bad sequence, mechanism not
 * supported) is the caller's job.
 * The struct is fully reset first. Slices point into line (valid while the
 * line is) or into cmd_r->scratch (valid while *cmd_r is unchanged).
 * Returns 1 on success; -1 on error with cmd_r->verb (when recognised),
 * code, ecode and msg filled.
 */
int smtp_cmd_parse(const char *line, size_t len,
		   const struct smtp_parse_opts *opts, struct smtp_cmd *cmd_r);

/* Reset *cmd_r and fill the error for a line over the limit (500 5.5.2). */
void smtp_cmd_set_too_long(struct smtp_cmd *cmd_r);

/*
 * A SASL continuation line (RFC 4954 4): base64 or "*" to cancel.
 * Returns 1 when it is base64 (possibly empty), 0 when it is "*", -1 when it
 * is not valid base64 (answer 501 5.5.2).
 */
int smtp_auth_response_check(const char *line, size_t len);

/* ------------------------------------------------------------------ */
/* DATA                                                                */

/* struct smtp_data.flags, observations about the message */
#define SMTP_DATA_BARE_LF   0x01u /* LF without CR before it */
#define SMTP_DATA_BARE_CR   0x02u /* CR without LF after it */
#define SMTP_DATA_8BIT      0x04u /* a byte >= 0x80 */
#define SMTP_DATA_NUL       0x08u /* a NUL byte */
#define SMTP_DATA_LONG_LINE 0x10u /* a line over 998 octets + CRLF */

/* smtp_data_init mode */
enum smtp_data_mode {
	/* Only CRLF "." CRLF ends the data; a bare LF is data and is only
	 * flagged. The caller should refuse a message with SMTP_DATA_BARE_LF
	 * or SMTP_DATA_BARE_CR: this closes "SMTP smuggling" (a relay that
	 * passes LF "." LF on unchanged would let a second message in). */
	SMTP_DATA_STRICT = 0,
	/* Also a bare LF ends a line, so LF "." LF, CRLF "." LF and
	 * LF "." CRLF end the data (Postfix-compatible); flagged. */
	SMTP_DATA_ACCEPT_LF,
	/* As ACCEPT_LF, and every bare LF is written out as CRLF. */
	SMTP_DATA_FIX_LF,
};

struct smtp_data {
	enum smtp_data_mode mode;
	int state;          /* internal */
	uint64_t max_size;  /* 0: no limit */
	uint64_t size;      /* message octets after unstuffing */
	size_t line_len;    /* internal */
	unsigned flags;     /* SMTP_DATA_* */
	bool over_limit;    /* size passed max_size: answer 552 at the end */
	bool done;          /* the end-of-data line was consumed */
};

/* Prepare for one message; max_size 0 means no limit. */
void smtp_data_init(struct smtp_data *d, enum smtp_data_mode mode,
		    uint64_t max_size);

/*
 * Consume message bytes from buf[0..len) (resumable: any split of the input
 * gives the same output). Sets *chunk_r and *chunk_len_r to the next bytes
 * of the message to write to the spool: a slice of buf, or a static string
 * (a CR held back after "." at the start of a line, or a CRLF for a bare LF
 * in SMTP_DATA_FIX_LF mode). The chunk may be empty. Returns the bytes
 * consumed: 0 only when len is 0, d->done was already set, or the chunk is
 * a non-empty held-back byte; so loop until len is used up or d->done.
 * When d->done, the end-of-data line has been consumed and bytes after it
 * belong to the next command (pipelining). The output stops at max_size
 * octets: then over_limit is set and input is still consumed to the end
 * (answer 552 5.3.4 then, and discard the spool file).
 * The message bytes include the CRLF before the final ".".
 */
size_t smtp_data_parse(struct smtp_data *d, const char *buf, size_t len,
		       const char **chunk_r, size_t *chunk_len_r);

/* ------------------------------------------------------------------ */
/* Replies                                                             */

/*
 * Append a reply to out: "CODE-ECODE text" for all lines but the last,
 * "CODE ECODE text" for the last, each ending in CRLF. ecode may be NULL
 * (no enhanced status code: greeting, EHLO). suffix, when not NULL or
 * empty, is appended to the last line after a space (for the connection id,
 * e.g. "(cid 3f2a)"). Control characters in text and suffix become '?', so
 * client bytes cannot inject a line. nlines 0 sends one line with no text.
 * Returns the bytes appended (>0), or -1 when out's maximum would be
 * exceeded (out is left unchanged).
 */
int smtp_reply_lines(struct mbuf *out, int code, const char *ecode,
		     const char *suffix, const char *const *lines,
		     size_t nlines);

/* As smtp_reply_lines with one printf-formatted text; '\n' in the result
 * separates lines. Returns as smtp_reply_lines (-1 also on format errors). */
int smtp_replyf(struct mbuf *out, int code, const char *ecode,
		const char *suffix, const char *fmt, ...) MOX_PRINTF(5, 6);

/* Append the error reply of a failed smtp_cmd_parse. As smtp_reply_lines. */
int smtp_reply_cmd_error(struct mbuf *out, const struct smtp_cmd *cmd,
			 const char *suffix);

#endif

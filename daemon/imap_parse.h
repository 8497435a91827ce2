/*
 * imap_parse: the pure IMAP command parser (RFC 9051 IMAP4rev2, RFC 3501
 * IMAP4rev1, LITERAL+/LITERAL- RFC 7888, BINARY RFC 3516 literal8, UTF8=ACCEPT).
 * Owns: the resumable command tokenizer that turns line fragments and literals
 * into a tree of arguments, typed argument accessors for command handlers,
 * sequence sets, modified UTF-7 mailbox names, UTF-8 validation and the
 * quoting of strings for responses.
 * Does not: read sockets, send continuations, log, or know command semantics
 * (the caller dispatches on the command name and decides where literals go).
 */
#ifndef MOX_IMAP_PARSE_H
#define MOX_IMAP_PARSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "daemon/util.h"

/*
 * Return codes. Functions that consume input return the number of bytes
 * consumed (> 0), IMAP_PARSE_NEED_MORE (0) or one of the negative errors.
 * Every error except IMAP_PARSE_ERR_LINE_TOO_LONG is recoverable: the parser
 * keeps consuming the rest of the failed command (see "Errors" below).
 */
enum imap_parse_status {
	IMAP_PARSE_NEED_MORE = 0,
	IMAP_PARSE_ERR_SYNTAX = -1,            /* BAD */
	IMAP_PARSE_ERR_LINE_TOO_LONG = -2,     /* BAD, then close: no line end in limit */
	IMAP_PARSE_ERR_TOO_MANY_LITERALS = -3, /* BAD [TOOBIG] */
	IMAP_PARSE_ERR_LITERAL_TOO_BIG = -4,   /* BAD [TOOBIG]: one in-memory literal */
	IMAP_PARSE_ERR_LITERALS_TOO_BIG = -5,  /* BAD [TOOBIG]: sum of in-memory literals */
	IMAP_PARSE_ERR_TOO_DEEP = -6,          /* BAD: list nesting */
	IMAP_PARSE_ERR_TOO_MANY_ARGS = -7,     /* BAD */
	IMAP_PARSE_ERR_COMMAND_TOO_LONG = -8,  /* BAD [TOOBIG]: sum of line fragments */
	IMAP_PARSE_ERR_STATE = -9,             /* API misuse by the caller */
};

/* Limits; every size a client controls is checked against these. */
struct imap_parse_limits {
	size_t max_line;          /* one line fragment incl. CRLF (65536) */
	size_t max_command;       /* sum of all line fragments of a command (1 MiB) */
	size_t max_literals;      /* literals per command, in-memory or external (1000) */
	size_t max_literal;       /* one in-memory literal (100 KiB) */
	size_t max_literal_total; /* sum of in-memory literals of a command (1 MiB) */
	size_t max_depth;         /* nesting of lists and sections (32, at most 256) */
	size_t max_args;          /* argument nodes per command, lists included (20000) */
};

/* Fill *lim with the defaults noted above. */
void imap_parse_limits_default(struct imap_parse_limits *lim);

/*
 * The argument tree. Nodes live in the parser's per-command pool and stay
 * valid until imap_parse_reset() or imap_parse_free(). Handlers read them,
 * never write them.
 *
 * Tokenization (what handlers see):
 * - ATOM: any run of bytes 0x21-0x7e except ( ) { " ; so flags (\Seen),
 *   sequence sets (1:5,*), LIST patterns (%, *), numbers (digits are atoms;
 *   use imap_args_number) and astring atoms with ']' are all ATOMs.
 *   "NIL" in any case becomes type NIL; its str keeps the text as sent, and
 *   the astring accessors accept it as the string "NIL".
 * - Sections: an atom named BODY, BODY.PEEK, BINARY, BINARY.PEEK or
 *   BINARY.SIZE (any case) directly followed by '[' is one ATOM node whose
 *   str is the whole token as sent ("BODY.PEEK[HEADER.FIELDS (A B)]<0.100>"),
 *   name_len the length of the name before '[', section a LIST node holding
 *   the tokens between the brackets (atoms, quoted strings, lists; no
 *   literals; ']' ends atoms there), and has_partial/partial_offset/
 *   partial_count the "<offset.count>" suffix (count is nz). Any other '['
 *   is an ordinary atom character ("[Gmail]/Sent" is a plain atom).
 * - QUOTED: unescaped contents (\" and \\ are the only escapes). 8-bit bytes
 *   only when UTF-8 is enabled, and then they must be valid UTF-8.
 * - LITERAL: the bytes of {n}/{n+}/~{n}/~{n+}; binary is set for ~{}; a
 *   non-binary literal never contains NUL. str is NUL-terminated.
 * - LITERAL_EXT: a literal the caller consumed elsewhere (APPEND message):
 *   str is NULL, len its size, literal_index its 0-based literal number.
 * - LIST: parenthesized list; children via list, count in len.
 */
enum imap_arg_type {
	IMAP_ARG_ATOM = 1,
	IMAP_ARG_NIL,
	IMAP_ARG_QUOTED,
	IMAP_ARG_LITERAL,
	IMAP_ARG_LITERAL_EXT,
	IMAP_ARG_LIST,
};

struct imap_arg {
	enum imap_arg_type type;
	const char *str;          /* NUL-terminated, len bytes; NULL for LIST/LITERAL_EXT */
	size_t len;               /* bytes; LIST: number of children */
	struct imap_arg *next;    /* next sibling, NULL at the end */
	struct imap_arg *list;    /* LIST: first child or NULL */
	struct imap_arg *tail_;   /* parser internal */
	struct imap_arg *section; /* ATOM with "[...]": LIST of the section, else NULL */
	size_t name_len;          /* ATOM with section: length of the name */
	uint64_t partial_offset;  /* ATOM with section and has_partial */
	uint64_t partial_count;
	bool has_partial;
	bool binary;              /* LITERAL / LITERAL_EXT from ~{n} */
	unsigned literal_index;   /* LITERAL / LITERAL_EXT: 0-based number in command */
};

/* A parsed command. "UID FETCH ..." has name "UID" and FETCH as first arg. */
struct imap_command {
	const char *tag;          /* as sent */
	const char *name;         /* uppercased copy */
	struct imap_arg *args;    /* first argument or NULL */
	size_t nargs;             /* top-level arguments */
};

enum imap_parse_state {
	IMAP_PARSE_ST_LINE = 1,   /* expects a line fragment */
	IMAP_PARSE_ST_LITERAL,    /* expects the bytes of an announced literal */
	IMAP_PARSE_ST_DONE,       /* command complete: imap_parse_command() */
	IMAP_PARSE_ST_FAILED,     /* a failed command was fully consumed: reset */
	IMAP_PARSE_ST_FATAL,      /* unrecoverable (line too long): close */
};

struct imap_literal_info {
	uint64_t size;
	bool sync;                /* {n}: the server must send "+ " first (if accepted) */
	bool binary;              /* ~{n} */
};

struct imap_parser;

/*
 * Usage, per command:
 *   loop over input:
 *     ST_LINE:    r = imap_parse_fragment(p, buf, len)
 *     ST_LITERAL: imap_parse_literal_info(); decide in-memory or external;
 *                 imap_parse_literal_begin(p, external) (errors: BAD [TOOBIG]);
 *                 if sync and not imap_parse_failed(): send "+ ";
 *                 then r = imap_parse_literal(p, buf, len), or stream the bytes
 *                 elsewhere and call imap_parse_literal_external(p, n).
 *     drop r bytes from the input when r > 0
 *   ST_DONE: run imap_parse_command(p); ST_FAILED: nothing (BAD already sent);
 *   ST_FATAL: send BAD and close. Then imap_parse_reset(p).
 *
 * Errors: a function returning a negative error other than ERR_LINE_TOO_LONG
 * (and ERR_STATE) consumed nothing; imap_parse_error() says why and
 * imap_parse_tag() gives the tag for "tag BAD msg" (NULL: use "*"). The
 * caller sends the BAD once and keeps feeding input as before: the parser
 * now discards the rest of the command (the remaining line, non-synchronizing
 * literals that follow, further fragments) and ends in ST_FAILED; it stops
 * at a synchronizing literal, which the client will not send without "+ ".
 * In ST_LITERAL while imap_parse_failed(), the caller may close instead of
 * discarding a huge literal.
 */

/* Allocate a parser; lim NULL means defaults (copied). Never NULL. */
struct imap_parser *imap_parse_new(const struct imap_parse_limits *lim);
/* Free *p and set it NULL; accepts NULL and *p == NULL. */
void imap_parse_free(struct imap_parser **p);
/* Forget the current command (and everything it returned); next: ST_LINE. */
void imap_parse_reset(struct imap_parser *p);
/*
 * Accept UTF-8 in quoted strings (IMAP4rev2 or UTF8=ACCEPT enabled). Takes
 * effect from the next fragment. Off by default (8-bit then is an error).
 */
void imap_parse_set_utf8(struct imap_parser *p, bool on);

/*
 * Consume one line fragment from buf: everything up to and including the line
 * end. The line end is CRLF; a bare LF is accepted too (many servers do; a
 * CR elsewhere is an error). Returns bytes consumed (> 0), after which the
 * state is ST_LITERAL, ST_DONE or ST_FAILED;
 * IMAP_PARSE_NEED_MORE when buf holds no line end yet (call again with the
 * same bytes plus more: already-scanned bytes are not searched again); or an
 * error. ERR_LINE_TOO_LONG (state ST_FATAL) when no line end is within
 * max_line bytes. buf is not kept.
 */
int imap_parse_fragment(struct imap_parser *p, const char *buf, size_t len);

/* In ST_LITERAL: fill *info_r. 1, or ERR_STATE in another state. */
int imap_parse_literal_info(const struct imap_parser *p, struct imap_literal_info *info_r);

/*
 * In ST_LITERAL: decide where the announced literal goes. external: the
 * caller stores the bytes elsewhere (limits other than max_literals are then
 * the caller's); otherwise the in-memory limits are checked. 0 ok; an error
 * (ERR_LITERAL_TOO_BIG, ERR_LITERALS_TOO_BIG) makes the command failed: for a
 * synchronizing literal the state becomes ST_FAILED, for a non-synchronizing
 * one the literal bytes will be discarded. Calling it twice is ERR_STATE.
 * imap_parse_literal()/imap_parse_literal_external() call it implicitly.
 */
int imap_parse_literal_begin(struct imap_parser *p, bool external);

/*
 * In ST_LITERAL: take up to len bytes of the literal (copied). Returns bytes
 * consumed (possibly 0 with len 0; a 0-byte literal completes with any call),
 * or an error (NUL in a non-binary literal: ERR_SYNTAX, nothing consumed).
 * When the literal is complete the state returns to ST_LINE.
 */
int imap_parse_literal(struct imap_parser *p, const char *data, size_t len);

/*
 * In ST_LITERAL after begin(p, true) (or implicitly): n bytes of the literal
 * were consumed by the caller. Returns the bytes accounted (min(n, rest)).
 */
int64_t imap_parse_literal_external(struct imap_parser *p, uint64_t n);

enum imap_parse_state imap_parse_state(const struct imap_parser *p);
/* True once the command failed (its remainder is being discarded). */
bool imap_parse_failed(const struct imap_parser *p);
/* Message of the last error (static or parser-owned; valid until reset). */
const char *imap_parse_error(const struct imap_parser *p);
/* Tag of the current command, or NULL when none was parsed yet. */
const char *imap_parse_tag(const struct imap_parser *p);
/* Command name (uppercased) as soon as it is parsed, else NULL. */
const char *imap_parse_name(const struct imap_parser *p);
/*
 * In ST_DONE: the command (valid until reset/free); else NULL. Also useful in
 * ST_LITERAL: the arguments parsed so far (args of an unfinished list are
 * already linked), so the caller can decide where a literal goes.
 */
const struct imap_command *imap_parse_command(const struct imap_parser *p);

/*
 * Find a line end in buf for lines read outside commands (AUTHENTICATE
 * responses, IDLE's DONE). Returns the length including the line end (> 0),
 * 0 when none yet, -1 when none within max bytes. *content_len_r gets the
 * length without CRLF/LF.
 */
int64_t imap_line_end(const char *buf, size_t len, size_t max, size_t *content_len_r);

/*
 * Argument cursor with typed accessors for command handlers. Every accessor
 * returns 1 and advances on success; on a mismatch it returns
 * IMAP_PARSE_ERR_SYNTAX, does not advance and sets err to a message for the
 * BAD reply (static string). Returned strings point into the argument tree.
 */
struct imap_args {
	const struct imap_arg *next;
	const char *err;
};

void imap_args_init(struct imap_args *a, const struct imap_arg *first);
/* Next argument or NULL, without advancing. */
const struct imap_arg *imap_args_peek(const struct imap_args *a);
/* Any next argument (*arg_r); error at the end of arguments. */
int imap_args_any(struct imap_args *a, const struct imap_arg **arg_r);
/* atom | NIL | quoted | literal (not external, not a section atom). */
int imap_args_astring(struct imap_args *a, const char **s_r, size_t *len_r);
/* quoted | literal */
int imap_args_string(struct imap_args *a, const char **s_r, size_t *len_r);
/* string or NIL (*s_r NULL for NIL) */
int imap_args_nstring(struct imap_args *a, const char **s_r, size_t *len_r);
/* atom (a section atom too: its whole text); not NIL. */
int imap_args_atom(struct imap_args *a, const char **s_r, size_t *len_r);
/* Atom that equals word (ASCII case-insensitive): 1 and advance, 0 if not. */
int imap_args_keyword(struct imap_args *a, const char *word);
/* number: 0..4294967295; number64: 0..2^63-1; nz_number: 1..4294967295. */
int imap_args_number(struct imap_args *a, uint32_t *v_r);
int imap_args_number64(struct imap_args *a, uint64_t *v_r);
int imap_args_nz_number(struct imap_args *a, uint32_t *v_r);
/* LIST: *sub_r iterates its children. */
int imap_args_list(struct imap_args *a, struct imap_args *sub_r);
/*
 * Mailbox name (astring) into out as UTF-8 (out is reset first): "INBOX" in
 * any case becomes "INBOX"; with utf8 the name must be valid UTF-8, without
 * it the name is modified UTF-7 and is decoded strictly. NUL never passes.
 */
int imap_args_mailbox(struct imap_args *a, bool utf8, struct mbuf *out);
struct imap_seqset;
/* Sequence set atom (or "$"); set_r as for imap_seqset_parse. */
int imap_args_seqset(struct imap_args *a, struct imap_seqset *set_r);
/* 1 when no arguments remain, else error "unexpected arguments". */
int imap_args_end(struct imap_args *a);

/*
 * Sequence sets (RFC 9051 sequence-set, RFC 5182 "$"). '*' is stored as
 * IMAP_SEQ_STAR (0, never a valid number). Ranges are stored with
 * first <= last when both are numbers.
 */
#define IMAP_SEQ_STAR 0u
#define IMAP_SEQSET_MAX_RANGES 65536

struct imap_seq_range {
	uint32_t first;
	uint32_t last;
};

struct imap_seqset {
	bool searchres;                 /* "$": the saved search result */
	bool normalized;                /* sorted, merged, no '*' (see resolve) */
	size_t n;
	struct imap_seq_range *ranges;  /* n entries, owned (xmalloc) */
};

/*
 * Parse s (len bytes) into *set_r (initialized here; clear with
 * imap_seqset_clear also on error). At most max_ranges ranges. 1 ok, -1 with
 * *err_r set to a static message.
 */
int imap_seqset_parse(const char *s, size_t len, size_t max_ranges,
    struct imap_seqset *set_r, const char **err_r);
void imap_seqset_clear(struct imap_seqset *set);
/*
 * Is v in set, with '*' standing for star (the highest sequence number or UID
 * in use; 0 for an empty mailbox)? "$" contains nothing (resolve it first).
 * Linear unless normalized (then binary search).
 */
bool imap_seqset_contains(const struct imap_seqset *set, uint32_t v, uint32_t star);
/*
 * Replace '*' by star, sort and merge overlapping or adjacent ranges in
 * place; sets normalized. With star 0 (empty mailbox) a lone '*' is dropped
 * and "n:*" becomes 1:n.
 */
void imap_seqset_normalize(struct imap_seqset *set, uint32_t star);
/* Number of values in a normalized set. */
uint64_t imap_seqset_count(const struct imap_seqset *set);

/*
 * Modified UTF-7 (RFC 3501 5.1.3).
 * decode: append the UTF-8 form of the mUTF-7 name s to out. Strict: only
 * printable ASCII, "&-" for '&', base64 runs closed by '-', no encoded
 * printable ASCII or NUL, no empty or adjacent runs, zero padding bits,
 * paired surrogates. 1 ok; -1 with *err_r (static) set, or when out's max is
 * exceeded. out is left with partial output on error.
 * encode: append the mUTF-7 form of the UTF-8 string s; 1 ok, -1 when s is
 * not valid UTF-8, contains NUL, or out's max is exceeded.
 */
int imap_utf7_decode(const char *s, size_t len, struct mbuf *out, const char **err_r);
int imap_utf7_encode(const char *s, size_t len, struct mbuf *out);

/* Valid UTF-8: no overlongs, no surrogates, nothing above U+10FFFF. */
bool imap_utf8_valid(const char *s, size_t len);

/*
 * Output quoting for responses. Append s to b as:
 * - an atom when IMAP_QUOTE_ATOM is given and s is a non-empty run of
 *   ASTRING-CHARs without '[' (not "NIL");
 * - else a quoted string when s has no NUL, CR, LF and no 8-bit bytes (8-bit
 *   allowed with IMAP_QUOTE_UTF8 when s is valid UTF-8) and is at most 1024
 *   bytes;
 * - else a literal {n}CRLF, or ~{n}CRLF when s contains NUL.
 * s NULL appends NIL. 0 ok, -1 when b's max is exceeded (b may then hold
 * part of the output).
 */
#define IMAP_QUOTE_ATOM 0x1
#define IMAP_QUOTE_UTF8 0x2
int imap_quote(struct mbuf *b, const char *s, size_t len, unsigned flags);

#endif

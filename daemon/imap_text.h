/*
 * imap_text: the pure text code behind IMAP SEARCH and FETCH BINARY.
 * Owns: simple Unicode case folding of UTF-8, IMAP and RFC 5322 date parsing
 * to day numbers, streaming transfer decoding (base64, quoted-printable) with
 * an optional ISO-8859-1 to UTF-8 step and an output window, a case-folding
 * multi-needle substring matcher that works over a stream in bounded memory,
 * and header field unfolding.
 * Does not: read files, log, touch the event loop or the index, or decode
 * RFC 2047 encoded-words (index/mime.h has that).
 */
#ifndef MOX_IMAP_TEXT_H
#define MOX_IMAP_TEXT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- case folding ---- */

/*
 * Fold s[0..len) in place to lower case: ASCII, and the simple lowercase
 * mapping of Latin-1, Latin Extended-A, Greek and Cyrillic (code points whose
 * UTF-8 form has two bytes). Lengths never change. Malformed UTF-8 is left as
 * it is, byte by byte. Returns the bytes done: less than len only when s ends
 * inside a UTF-8 sequence and final is false (fold the rest once more bytes
 * have arrived); len when final. Folding is idempotent.
 */
size_t imap_text_fold(char *s, size_t len, bool final);

/* ---- dates ---- */

/* Days since 1970-01-01 of a proleptic Gregorian date (m 1..12, d 1..31). */
int64_t imap_text_days_from_civil(int64_t y, unsigned m, unsigned d);

/* The day (since 1970-01-01, UTC) of Unix time t, rounding towards -inf. */
int64_t imap_text_day_of(int64_t t);

/*
 * Parse an IMAP date-text without quotes ("1-Feb-1994", RFC 9051) of exactly
 * len bytes (s need not be NUL-terminated). Returns 1 and sets *day_r, or -1
 * when s is not such a date.
 */
int imap_text_parse_date(const char *s, size_t len, int64_t *day_r);

/*
 * The day a Date header value was written on, its own time zone disregarded
 * (as SENTON asks): "[Day,] d Mon yy[yy] ...". s is NUL-terminated or NULL.
 * When s does not parse, falls back to the day of parsed (Unix time; < 0:
 * none). Returns 1 and sets *day_r, or 0 when there is no date at all.
 */
int imap_text_sent_day(const char *s, int64_t parsed, int64_t *day_r);

/* ---- transfer decoding ---- */

/*
 * Decoding follows RFC 2045: base64 skips characters outside its alphabet
 * and ends at the first '=' (padding); quoted-printable decodes "=XX" (hex in
 * either case), removes soft line breaks ("=" and optional blanks before the
 * line end), drops blanks before a line end, writes every line end as CRLF,
 * and keeps a '=' that starts no valid escape literally with what follows.
 */
enum imap_text_enc {
	IMAP_TEXT_ENC_NONE = 0,  /* 7bit, 8bit, binary or absent: bytes as they are */
	IMAP_TEXT_ENC_B64,
	IMAP_TEXT_ENC_QP,
	IMAP_TEXT_ENC_UNKNOWN,   /* a name not known: decoded as NONE */
};

/* Blanks quoted-printable holds back; a longer run is passed on in parts. */
#define IMAP_TEXT_QP_BLANKS 128

/* Resumable decoding state; embed it and set it up with _init. */
struct imap_text_decoder {
	enum imap_text_enc enc;
	bool latin1;   /* convert ISO-8859-1 output to UTF-8 */
	bool b64end;   /* base64 padding seen: the rest is ignored */
	uint32_t acc;  /* base64 bits not yet output */
	int nbits;
	int qst;       /* quoted-printable state (see qp_step in imap_text.c) */
	char qh;       /* first digit of an escape, as written */
	size_t nws;    /* quoted-printable blanks held until the next byte tells */
	char ws[IMAP_TEXT_QP_BLANKS];
};

/*
 * The encoding named by a Content-Transfer-Encoding value: NONE for NULL,
 * 7bit, 8bit and binary, UNKNOWN for a name not known (case-insensitive).
 */
enum imap_text_enc imap_text_enc_of(const char *name);

/* Whether charset name cs (NULL accepted) is decoded as ISO-8859-1. */
bool imap_text_charset_latin1(const char *cs);

/* Set up d; latin1: widen each output byte >= 0x80 to UTF-8 (off for raw bytes). */
void imap_text_decoder_init(struct imap_text_decoder *d, enum imap_text_enc enc, bool latin1);

/* Bytes a decoder may hold back between calls. */
#define IMAP_TEXT_DECODE_HELD (IMAP_TEXT_QP_BLANKS + 2)

/* Room that imap_text_decode needs in out for len input bytes (0: for _end). */
#define IMAP_TEXT_DECODE_MAX(len) (2 * ((size_t)(len) + IMAP_TEXT_DECODE_HELD))

/*
 * Decode in[0..len) and write the text to out, which has room for
 * IMAP_TEXT_DECODE_MAX(len) bytes. Input may be split anywhere: state carries
 * over between calls, and the output joined is the same however the input is
 * split. Returns the bytes written. Bytes whose meaning depends on what
 * follows (blanks, an unfinished escape) are held back until
 * imap_text_decode_end.
 */
size_t imap_text_decode(struct imap_text_decoder *d, const char *in, size_t len, char *out);

/*
 * End of the stream: write what d holds back to out (room for
 * IMAP_TEXT_DECODE_MAX(0) bytes): an unfinished quoted-printable escape or a
 * CR as written; blanks at the very end are dropped like those before a line
 * end. A partial base64 group adds nothing (its whole bytes are already out).
 * Returns the bytes written; d is then ready for a new stream of its encoding.
 */
size_t imap_text_decode_end(struct imap_text_decoder *d, char *out);

/*
 * An output window: bytes [off, off + count) of a stream produced in pieces
 * (FETCH BINARY[]<off.count>). Embed it and set it up with _init.
 */
struct imap_text_window {
	uint64_t skip;  /* stream bytes still before the window */
	uint64_t left;  /* window bytes still to come */
};

void imap_text_window_init(struct imap_text_window *w, uint64_t off, uint64_t count);

/*
 * The next n bytes of the stream went by: returns how many of them lie in the
 * window and sets *start_r to the first one's index among the n (0 when none).
 */
size_t imap_text_window_take(struct imap_text_window *w, size_t n, size_t *start_r);

/* Whether the window is complete: no later byte can fall in it. */
bool imap_text_window_done(const struct imap_text_window *w);

/* ---- streaming matcher ---- */

/*
 * Case-insensitive (imap_text_fold) search for several needles in a stream of
 * text made of segments (a header, each body part); no match spans two
 * segments. Memory is bounded by the window plus the longest needle.
 * The result does not depend on how the stream is split into feeds.
 */
struct imap_text_matcher;

/* A matcher that buffers window bytes (at least 16) between searches. Free with _free. */
struct imap_text_matcher *imap_text_matcher_new(size_t window);

/* Free m and set *mp to NULL; accepts NULL and *mp == NULL. */
void imap_text_matcher_free(struct imap_text_matcher **mp);

/*
 * Add a needle (copied and folded; may hold NUL bytes). Returns its index,
 * counting from 0. The empty needle is found at once. Add all needles before
 * the first feed; a needle added later is not looked for in text fed before.
 */
size_t imap_text_matcher_add(struct imap_text_matcher *m, const char *s, size_t len);

/* Stream text of the current segment. Does nothing once every needle is found. */
void imap_text_matcher_feed(struct imap_text_matcher *m, const char *p, size_t len);

/* End the current segment: search what is buffered and start a new one. */
void imap_text_matcher_end(struct imap_text_matcher *m);

/* Whether needle i (from _add) has been found; false for an unknown index. */
bool imap_text_matcher_found(const struct imap_text_matcher *m, size_t i);

/* The number of needles not found yet (0: feeding more changes nothing). */
size_t imap_text_matcher_left(const struct imap_text_matcher *m);

/* ---- header fields ---- */

/* One unfolded header field; pointers are valid during the callback only. */
struct imap_text_field {
	const char *line;  /* the whole field, continuation lines joined without line ends */
	size_t len;
	const char *name;  /* == line; trailing blanks excluded from nlen */
	size_t nlen;
	const char *value; /* after the colon and leading blanks */
	size_t vlen;
};

typedef void imap_text_field_fn(void *arg, const struct imap_text_field *f);

/*
 * Call fn for each field of the header in buf[0..len) (LF or CRLF line ends,
 * continuation lines starting with a blank), in order, up to the first empty
 * line. Lines without a colon are skipped. Returns the header length: the
 * offset just past the empty line, or len when the header has none. Only the
 * first INT_MAX bytes are looked at; callers bound headers far below that.
 */
size_t imap_text_header_fields(const char *buf, size_t len, imap_text_field_fn *fn, void *arg);

#endif

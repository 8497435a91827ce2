/*
 * Fuzz target for daemon/imap_text: runs the transfer decoders, folding, date
 * parsing, header unfolding and the streaming matcher over arbitrary input,
 * and checks that splitting the input differently never changes a result:
 * decoding in steps or split in two gives the whole decoding, an output
 * window over the decoding in steps is the slice of the whole, the matcher
 * fed in steps with a small window finds what it finds fed at once, and
 * folding in pieces equals folding at once.
 * Layout: byte 0 bit 0-1 encoding (3: a name not known), bit 2 latin1, bits
 * 3-7 step - 1 (also picks the split point and the window); byte 1
 * number of needles (0-3) and bits 2-7 needle length; needles follow, then
 * the text ('\x01' ends a segment).
 */
#define _GNU_SOURCE 1
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/imap_text.h"

static void
check(bool ok)
{
	if (!ok)
		abort();
}

/*
 * Decode in[0..len) in steps of step bytes (0: at once), the first piece
 * first bytes long when first > 0, then end the stream. Only the bytes inside
 * window w (NULL: all) are written to out. Returns the bytes written.
 */
static size_t
decode_all(enum imap_text_enc enc, bool latin1, const uint8_t *in, size_t len, size_t first, size_t step,
    struct imap_text_window *w, char *out)
{
	struct imap_text_decoder d;
	size_t o = 0;
	imap_text_decoder_init(&d, enc, latin1);
	if (step == 0)
		step = len ? len : 1;
	for (size_t i = 0; i <= len;) {
		size_t n = first > 0 && i == 0 ? first : step;
		n = len - i < n ? len - i : n;
		/* Each call gets exactly the room the contract promises. */
		char *tmp = malloc(IMAP_TEXT_DECODE_MAX(n));
		size_t k;
		if (n > 0) {
			k = imap_text_decode(&d, (const char *)in + i, n, tmp);
			check(k <= IMAP_TEXT_DECODE_MAX(n));
		} else {
			k = imap_text_decode_end(&d, tmp);
			check(k <= IMAP_TEXT_DECODE_MAX(0));
		}
		size_t start = 0;
		if (w != NULL)
			k = imap_text_window_take(w, k, &start);
		memcpy(out + o, tmp + start, k);
		o += k;
		free(tmp);
		if (n == 0)
			break;
		i += n;
	}
	/* A decoder that ended holds nothing: a new empty stream gives nothing. */
	char rest[IMAP_TEXT_DECODE_MAX(0)];
	check(imap_text_decode_end(&d, rest) == 0);
	return o;
}

static unsigned
run_matcher(char needles[3][64], const size_t *nlen, size_t nn, const char *text, size_t len, size_t step,
    size_t window)
{
	struct imap_text_matcher *m = imap_text_matcher_new(window);
	for (size_t i = 0; i < nn; i++)
		check(imap_text_matcher_add(m, needles[i], nlen[i]) == i);
	size_t start = 0;
	for (size_t i = 0; i <= len; i++) {
		if (i < len && text[i] != '\x01')
			continue;
		size_t slen = i - start, s = step ? step : (slen ? slen : 1);
		for (size_t k = 0; k < slen; k += s)
			imap_text_matcher_feed(m, text + start + k, slen - k < s ? slen - k : s);
		imap_text_matcher_end(m);
		start = i + 1;
	}
	unsigned r = 0;
	size_t left = 0;
	for (size_t i = 0; i < nn; i++) {
		if (imap_text_matcher_found(m, i))
			r |= 1u << i;
		else
			left++;
	}
	check(imap_text_matcher_left(m) == left);
	imap_text_matcher_free(&m);
	return r;
}

/* Reference: is the folded needle inside one folded segment? */
static unsigned
naive(char needles[3][64], const size_t *nlen, size_t nn, const char *text, size_t len)
{
	char *t = malloc(len + 1);
	unsigned r = 0;
	memcpy(t, text, len);
	imap_text_fold(t, len, true);
	for (size_t i = 0; i < nn; i++) {
		char nd[64];
		memcpy(nd, needles[i], nlen[i]);
		imap_text_fold(nd, nlen[i], true);
		if (nlen[i] == 0) {
			r |= 1u << i;
			continue;
		}
		size_t start = 0;
		for (size_t k = 0; k <= len; k++) {
			if (k < len && text[k] != '\x01')
				continue;
			if (memmem(t + start, k - start, nd, nlen[i]) != NULL)
				r |= 1u << i;
			start = k + 1;
		}
	}
	free(t);
	return r;
}

static void
field_cb(void *arg, const struct imap_text_field *f)
{
	size_t *n = arg;
	check(f->name == f->line && f->nlen <= f->len);
	check(f->value >= f->line + f->nlen && f->value + f->vlen == f->line + f->len);
	check(memchr(f->line, '\n', f->len) == NULL);
	(*n)++;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 2)
		return 0;
	enum imap_text_enc enc = (enum imap_text_enc)(data[0] & 3);
	bool latin1 = data[0] & 4;
	size_t step = (size_t)(data[0] >> 3) + 1;
	size_t nn = data[1] & 3, nl = (size_t)(data[1] >> 2);
	data += 2;
	size = 2 > size ? 0 : size - 2;

	char needles[3][64];
	size_t nlen[3];
	for (size_t i = 0; i < nn; i++) {
		size_t l = nl < size ? nl : size;
		memcpy(needles[i], data, l);
		nlen[i] = l;
		data += l;
		size -= l;
	}

	/* Decoders: whole vs in steps vs byte by byte vs split in two. */
	char *whole = malloc(IMAP_TEXT_DECODE_MAX(size) + 1);
	char *part = malloc(IMAP_TEXT_DECODE_MAX(size) + 1);
	size_t wl = decode_all(enc, latin1, data, size, 0, 0, NULL, whole);
	size_t pl = decode_all(enc, latin1, data, size, 0, step, NULL, part);
	check(wl == pl && memcmp(whole, part, wl) == 0);
	size_t bl = decode_all(enc, latin1, data, size, 0, 1, NULL, part);
	check(wl == bl && memcmp(whole, part, wl) == 0);
	size_t at = size > 0 ? (step * 2654435761u) % size + 1 : 0;
	size_t sl = decode_all(enc, latin1, data, size, at, 0, NULL, part);
	check(wl == sl && memcmp(whole, part, wl) == 0);
	/* Without a latin-1 step the output never grows beyond two bytes an input byte. */
	if (!latin1)
		check(wl <= 2 * size);
	if (enc == IMAP_TEXT_ENC_NONE || enc == IMAP_TEXT_ENC_UNKNOWN)
		check(wl >= size);

	/* An output window over the decoding in steps: the slice of the whole. */
	struct imap_text_window w;
	uint64_t woff = (uint64_t)(step * 37) % (wl + 2), wcount = (uint64_t)nl * 5 + 1;
	imap_text_window_init(&w, woff, wcount);
	size_t ol = decode_all(enc, latin1, data, size, 0, step, &w, part);
	size_t exp = woff >= wl ? 0 : wl - woff < wcount ? wl - woff : (size_t)wcount;
	check(ol == exp && memcmp(whole + (woff < wl ? woff : wl), part, ol) == 0);
	check(imap_text_window_done(&w) == (woff + wcount <= wl));

	/* Folding: at once vs resumed in pieces (never longer, idempotent). */
	memcpy(part, whole, wl);
	check(imap_text_fold(whole, wl, true) == wl);
	size_t done = 0;
	for (size_t end = step < wl ? step : wl;; end = end + step < wl ? end + step : wl) {
		done += imap_text_fold(part + done, end - done, end == wl);
		check(done <= end);
		if (end == wl)
			break;
	}
	check(done == wl && memcmp(whole, part, wl) == 0);
	imap_text_fold(part, wl, true);
	check(memcmp(whole, part, wl) == 0);

	/* Matcher on the decoded text: whole vs steps vs a naive search. */
	unsigned a = run_matcher(needles, nlen, nn, whole, wl, 0, 1 << 16);
	check(a == run_matcher(needles, nlen, nn, whole, wl, step, 16));
	check(a == run_matcher(needles, nlen, nn, whole, wl, 1, 16 + step));
	check(a == naive(needles, nlen, nn, whole, wl));
	free(whole);
	free(part);

	/* Dates and headers on the raw input. */
	int64_t day;
	imap_text_parse_date((const char *)data, size, &day);
	char *z = malloc(size + 1);
	memcpy(z, data, size);
	z[size] = '\0';
	imap_text_sent_day(z, (int64_t)size - 5, &day);
	size_t nf = 0;
	size_t hl = imap_text_header_fields(z, size, field_cb, &nf);
	check(hl <= size);
	free(z);
	return 0;
}

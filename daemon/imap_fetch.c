/*
 * imap_fetch: FETCH / UID FETCH (RFC 9051 6.4.5, BINARY RFC 3516, CONDSTORE
 * and QRESYNC RFC 7162).
 *
 * Design. The command is parsed on the loop thread into record items and
 * sections. A storage job produces the responses in steps: a step adds about
 * FETCH_STEP bytes to the job's buffer and returns; the loop thread moves
 * them to the connection and submits the next step once the output drained
 * below the low mark (imap_wait_output), so a big message fetched by a slow
 * client costs a bounded amount of memory.
 * Messages are found by walking the mailbox (idx_message_each) from the next
 * wanted UID, never by one lookup per UID. Responses that need only the
 * record are formatted during the walk; the others are copied (the walk holds
 * the account lock) and completed afterwards: the MIME cache gives part
 * offsets, envelope and body structure, the file gives the bytes.
 * Invariant: a literal's size is known before "{n}" is written (ranges from
 * the cache, BINARY by a first decoding pass, HEADER.FIELDS built in memory
 * from the header only), and exactly n bytes follow whatever the file does:
 * a short read is padded with spaces and reported.
 */
#define _GNU_SOURCE 1
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <tcutil.h>

#include "daemon/imap_private.h"
#include "daemon/imap_text.h"
#include "daemon/log.h"
#include "index/mime.h"

#define PKG "imap"

#define F_FLAGS 0x1
#define F_UID 0x2
#define F_INTERNALDATE 0x4
#define F_SIZE 0x8
#define F_ENVELOPE 0x10
#define F_BODYSTRUCTURE 0x20
#define F_BODY 0x40
#define F_MODSEQ 0x80
#define F_SAVEDATE 0x100

#define FETCH_STEP (256 * 1024)     /* output bytes produced per storage step */
#define FETCH_IO (64 * 1024)        /* one read from a message file */
#define FETCH_DEC_IN (16 * 1024)    /* input bytes per decoding call (fj->dbuf holds the output) */
#define FETCH_BATCH 256             /* message copies per walk */
#define FETCH_JUMP 64               /* unwanted records walked before seeking */
#define FETCH_MAX_SECTIONS 64
#define FETCH_MAX_DEPTH 32          /* numbers in a section part */
#define FETCH_MAX_FIELDS 100        /* names in HEADER.FIELDS */
#define FETCH_FIELDS_HDR_MAX (1024 * 1024) /* header bytes HEADER.FIELDS looks at */

enum sec_kind { SK_BODY, SK_BINARY, SK_BINARY_SIZE };
enum sec_spec { SS_NONE, SS_HEADER, SS_FIELDS, SS_FIELDS_NOT, SS_TEXT, SS_MIME };

struct fetch_sec {
	char *label;        /* response item name: "BODY[1.MIME]<0>", "RFC822.TEXT" */
	enum sec_kind kind;
	enum sec_spec spec;
	uint32_t nums[FETCH_MAX_DEPTH];
	size_t nnums;
	char **fields;
	size_t nfields;
	bool partial;
	uint64_t off, count;
};

enum piece_kind { PC_TEXT, PC_RANGE, PC_DECODE };

/* One part of a response: text, bytes of the file, or decoded bytes. */
struct piece {
	enum piece_kind kind;
	char *text;
	size_t tlen;
	uint64_t off, len;  /* file range */
	uint64_t lit;       /* bytes to produce for RANGE/DECODE */
	uint64_t pos;       /* input consumed */
	uint64_t done;      /* output produced */
	struct imap_text_decoder dec; /* DECODE: the transfer decoding */
	struct imap_text_window win;  /* DECODE: the part of the decoded bytes sent */
};

struct batch_msg {
	struct idx_message m;
	uint32_t seq;
	int32_t seen_at;            /* its entry in fetch_job.seen, -1 none */
};

struct fetch_job {
	struct imap_job j;
	uint32_t mailbox_id;
	uint32_t uidvalidity;       /* of the view: uids are its UIDs */
	bool stale;                 /* the mailbox has another one now: no more walks */
	uint32_t *uids, *seqs;      /* wanted, ascending UID */
	size_t n, next;             /* next: index of the next wanted UID */
	unsigned items;
	unsigned mimeflags;
	struct fetch_sec *secs;
	size_t nsecs;
	bool set_seen, want_file, want_mime, collect;
	uint64_t changedsince;
	bool vanished;
	struct imap_seqset vset;    /* UID set for VANISHED (EARLIER) */
	struct mbuf *vbuf;
	struct event *guard;        /* while waiting for output: notices a closing connection */
	struct evbuffer *out;
	/* walk */
	size_t skipped;
	bool stopped;
	bool flags_only;            /* only UID, FLAGS, MODSEQ: a light walk */
	struct mbuf wb;             /* responses formatted during a walk */
	struct batch_msg *batch;
	size_t nbatch, ibatch;
	/* current message */
	struct piece *pieces;
	size_t npieces, ipiece;
	int fd;
	char *io;
	char *dbuf;                 /* decoded output: IMAP_TEXT_DECODE_MAX(FETCH_DEC_IN), at first use */
	/*
	 * \Seen set by this command, for the view: an entry counts as known to the
	 * client once its message's whole response is in the output (seen_state 1,
	 * then 2 when the view took it); entries before seen_next are all taken.
	 */
	struct idx_uidstate *seen;
	uint8_t *seen_state;
	size_t nseen, capseen, seen_next;
	int32_t cur_seen;           /* seen_at of the message being written, -1 none */
	/* outcome */
	bool finished;
	unsigned nmissing, nunknown, nbroken, nshort;
	char err2[256];             /* first per-message problem, logged on the loop */
};

/* ---- decoding (imap_text: RFC 2045 base64 and quoted-printable) ---- */

/*
 * The transfer encoding BINARY[] undoes for part p (NULL: the whole message):
 * NONE for bytes sent as they are, UNKNOWN for NO [UNKNOWN-CTE].
 */
static enum imap_text_enc
cte_of(const struct mime_part *p)
{
	if (p == NULL || strcmp(p->type, "multipart") == 0 || p->nchildren > 0)
		return IMAP_TEXT_ENC_NONE;
	return imap_text_enc_of(p->encoding);
}

/*
 * Decode in[0..n), and the end of the stream when final, in slices through
 * fj->dbuf. The decoded bytes inside w are added to out (NULL: none are).
 * Returns the number of decoded bytes.
 */
static uint64_t
decode_run(struct fetch_job *fj, struct imap_text_decoder *d, struct imap_text_window *w, const char *in, size_t n,
    bool final, struct evbuffer *out)
{
	uint64_t total = 0;
	bool more = true;
	if (fj->dbuf == NULL)
		fj->dbuf = xmalloc(IMAP_TEXT_DECODE_MAX(FETCH_DEC_IN));
	while (more) {
		size_t k = n < FETCH_DEC_IN ? n : FETCH_DEC_IN, o, start, keep;
		if (k > 0) {
			o = imap_text_decode(d, in, k, fj->dbuf);
			in += k;
			n -= k;
		} else {
			o = final ? imap_text_decode_end(d, fj->dbuf) : 0;
			more = false;
		}
		total += o;
		keep = imap_text_window_take(w, o, &start);
		if (out != NULL && keep > 0)
			evbuffer_add(out, fj->dbuf + start, keep);
	}
	return total;
}

/* ---- helpers ---- */

static void
date_out(struct mbuf *b, int64_t t, int32_t tz)
{
	static const char *mon[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
	time_t lt = (time_t)(t + (int64_t)tz * 60);
	struct tm tm;
	gmtime_r(&lt, &tm);
	int a = tz < 0 ? -tz : tz;
	mbuf_printf(b, "\"%02d-%s-%04d %02d:%02d:%02d %c%02d%02d\"", tm.tm_mday, mon[tm.tm_mon], tm.tm_year + 1900,
	    tm.tm_hour, tm.tm_min, tm.tm_sec, tz < 0 ? '-' : '+', a / 60, a % 60);
}

/* The window [off, off+count) of a len-byte text: bytes it holds, skip in *skip_r. */
static uint64_t
window(const struct fetch_sec *s, uint64_t len, uint64_t *skip_r)
{
	*skip_r = 0;
	if (!s->partial)
		return len;
	if (s->off >= len)
		return 0;
	*skip_r = s->off;
	len -= s->off;
	return len < s->count ? len : s->count;
}

/* Copy of the fields of a message record this file uses. */
static void
msg_copy(struct idx_message *dst, const struct idx_message *src)
{
	*dst = *src;
	dst->keywords = NULL;
	dst->nkeywords = 0;
	if (src->nkeywords > 0) {
		dst->keywords = xmalloc(src->nkeywords * sizeof(*dst->keywords));
		for (size_t i = 0; i < src->nkeywords; i++)
			dst->keywords[i] = xstrdup(src->keywords[i]);
		dst->nkeywords = src->nkeywords;
	}
	dst->filename = src->filename != NULL ? xstrdup(src->filename) : NULL;
	dst->message_id = NULL;
	dst->subject_base = NULL;
	dst->parents = NULL;
	dst->nparents = 0;
}

static void
note(struct fetch_job *fj, const char *fmt, ...) MOX_PRINTF(2, 3);

static void
note(struct fetch_job *fj, const char *fmt, ...)
{
	va_list ap;
	if (fj->err2[0] != 0)
		return;
	va_start(ap, fmt);
	vsnprintf(fj->err2, sizeof(fj->err2), fmt, ap);
	va_end(ap);
}

/* A decimal number (FETCH 1:* of a big mailbox formats hundreds of thousands). */
static void
num_out(struct mbuf *b, uint64_t v)
{
	char t[24];
	size_t i = sizeof(t);
	do {
		t[--i] = (char)('0' + v % 10);
		v /= 10;
	} while (v != 0);
	mbuf_add(b, t + i, sizeof(t) - i);
}

/* "* n FETCH (" and the items that come from the record. */
static void
record_out(struct fetch_job *fj, uint32_t seq, const struct idx_message *m, struct mbuf *b)
{
	mbuf_adds(b, "* ");
	num_out(b, seq);
	mbuf_adds(b, " FETCH (");
	const char *sp = "";
	if (fj->items & F_UID) {
		mbuf_adds(b, "UID ");
		num_out(b, m->uid);
		sp = " ";
	}
	if (fj->items & F_FLAGS) {
		mbuf_adds(b, sp);
		mbuf_adds(b, "FLAGS ");
		imap_flags_out(b, m->flags, m->keywords, m->nkeywords, false);
		sp = " ";
	}
	if (fj->items & F_INTERNALDATE) {
		mbuf_printf(b, "%sINTERNALDATE ", sp);
		date_out(b, m->received, m->received_tz);
		sp = " ";
	}
	if (fj->items & F_SIZE) {
		mbuf_printf(b, "%sRFC822.SIZE %llu", sp, (unsigned long long)m->size);
		sp = " ";
	}
	if (fj->items & F_SAVEDATE) {
		mbuf_printf(b, "%sSAVEDATE ", sp);
		if (m->savedate != 0)
			date_out(b, m->savedate, 0);
		else
			mbuf_adds(b, "NIL");
		sp = " ";
	}
	if (fj->items & F_MODSEQ) {
		mbuf_adds(b, sp);
		mbuf_adds(b, "MODSEQ (");
		num_out(b, m->modseq);
		mbuf_adds(b, ")");
	}
}

/* ---- building one message's response ---- */

struct build {
	struct fetch_job *fj;
	struct mbuf t;      /* text not yet turned into a piece */
};

static struct piece *
piece_new(struct fetch_job *fj, enum piece_kind kind)
{
	fj->pieces = xrealloc(fj->pieces, (fj->npieces + 1) * sizeof(*fj->pieces));
	struct piece *p = &fj->pieces[fj->npieces++];
	memset(p, 0, sizeof(*p));
	p->kind = kind;
	return p;
}

static void
text_flush(struct build *bd)
{
	if (bd->t.len == 0)
		return;
	struct piece *p = piece_new(bd->fj, PC_TEXT);
	p->text = xmalloc(bd->t.len);
	memcpy(p->text, bd->t.data, bd->t.len);
	p->tlen = bd->t.len;
	mbuf_reset(&bd->t);
}

static void
pieces_clear(struct fetch_job *fj)
{
	for (size_t i = 0; i < fj->npieces; i++)
		free(fj->pieces[i].text);
	free(fj->pieces);
	fj->pieces = NULL;
	fj->npieces = fj->ipiece = 0;
	if (fj->fd >= 0)
		close(fj->fd);
	fj->fd = -1;
}

static int
read_at(struct fetch_job *fj, char *buf, size_t n, uint64_t off)
{
	ssize_t r;
	do
		r = pread(fj->fd, buf, n, (off_t)off);
	while (r < 0 && errno == EINTR);
	return (int)r;
}

/* Size of the decoded content of a file range (first pass). */
static int
decoded_size(struct fetch_job *fj, enum imap_text_enc enc, uint64_t off, uint64_t len, uint64_t *size_r)
{
	struct imap_text_decoder d;
	struct imap_text_window w;
	uint64_t pos = 0, size = 0;
	imap_text_decoder_init(&d, enc, false);
	imap_text_window_init(&w, 0, 0);
	while (pos < len) {
		size_t n = len - pos < FETCH_IO ? (size_t)(len - pos) : FETCH_IO;
		int r = read_at(fj, fj->io, n, off + pos);
		if (r <= 0)
			break;
		size += decode_run(fj, &d, &w, fj->io, (size_t)r, false, NULL);
		pos += (uint64_t)r;
	}
	size += decode_run(fj, &d, &w, NULL, 0, true, NULL);
	*size_r = size;
	return 1;
}

static void
literal_head(struct build *bd, const struct fetch_sec *s, uint64_t n)
{
	mbuf_printf(&bd->t, "%s%llu}\r\n", s->kind == SK_BINARY ? "~{" : "{", (unsigned long long)n);
}

static void
range_out(struct build *bd, const struct fetch_sec *s, uint64_t off, uint64_t len)
{
	uint64_t skip, n = window(s, len, &skip);
	literal_head(bd, s, n);
	if (n == 0)
		return;
	text_flush(bd);
	struct piece *p = piece_new(bd->fj, PC_RANGE);
	p->off = off + skip;
	p->len = n;
	p->lit = n;
}

/* HEADER.FIELDS (.NOT): the matching (or other) fields of a header, and the blank line. */
static int
fields_out(struct build *bd, const struct fetch_sec *s, uint64_t off, uint64_t len)
{
	struct fetch_job *fj = bd->fj;
	if (len > FETCH_FIELDS_HDR_MAX)
		len = FETCH_FIELDS_HDR_MAX;
	char *h = xmalloc(len + 1);
	size_t got = 0;
	while (got < len) {
		int r = read_at(fj, h + got, (size_t)(len - got), off + got);
		if (r <= 0)
			break;
		got += (size_t)r;
	}
	struct mbuf o;
	mbuf_init(&o, FETCH_FIELDS_HDR_MAX + 2);
	size_t i = 0;
	while (i < got) {
		/* One field: a line and its continuation lines. */
		size_t st = i;
		if (h[i] == '\r' || h[i] == '\n')
			break; /* the blank line */
		for (;;) {
			char *nl = memchr(h + i, '\n', got - i);
			i = nl != NULL ? (size_t)(nl - h) + 1 : got;
			if (i >= got || (h[i] != ' ' && h[i] != '\t'))
				break;
		}
		const char *colon = memchr(h + st, ':', i - st);
		bool match = false;
		if (colon != NULL) {
			size_t nl = (size_t)(colon - (h + st));
			while (nl > 0 && (h[st + nl - 1] == ' ' || h[st + nl - 1] == '\t'))
				nl--;
			for (size_t k = 0; k < s->nfields && !match; k++)
				match = strlen(s->fields[k]) == nl && strncasecmp(s->fields[k], h + st, nl) == 0;
		}
		if (match == (s->spec == SS_FIELDS)) {
			mbuf_add(&o, h + st, i - st);
			if (o.len > 0 && o.data[o.len - 1] != '\n')
				mbuf_adds(&o, "\r\n");
		}
	}
	mbuf_adds(&o, "\r\n");
	free(h);
	uint64_t skip, n = window(s, o.len, &skip);
	literal_head(bd, s, n);
	mbuf_add(&bd->t, o.data + skip, (size_t)n);
	mbuf_clear(&o);
	return 1;
}

/*
 * The file range a section addresses. Returns 1 with the range and the part
 * (NULL for the whole message), 0 when the section does not exist (NIL).
 */
static int
sec_range(const struct fetch_sec *s, const struct mime_msg *mm, uint64_t fsize, const struct mime_part **part_r,
    uint64_t *off_r, uint64_t *len_r)
{
	*part_r = NULL;
	if (s->nnums == 0 && s->spec == SS_NONE) {
		*off_r = 0;
		*len_r = fsize;
		return 1;
	}
	if (mm == NULL)
		return 0;
	bool is_msg = false;
	const struct mime_part *p = mime_part_find(mm, s->nums, s->nnums, &is_msg);
	if (p == NULL)
		return 0;
	*part_r = p;
	switch (s->spec) {
	case SS_NONE:
		*off_r = p->body_off, *len_r = p->body_len;
		break;
	case SS_MIME:
		*off_r = p->hdr_off, *len_r = p->hdr_len;
		break;
	default:
		if (!is_msg)
			return 0;
		if (s->nnums > 0 && p->env != NULL && p->nchildren == 1)
			p = &p->children[0];
		if (s->spec == SS_TEXT)
			*off_r = p->body_off, *len_r = p->body_len;
		else
			*off_r = p->hdr_off, *len_r = p->hdr_len;
		break;
	}
	if (*off_r > fsize)
		*off_r = fsize;
	if (*len_r > fsize - *off_r)
		*len_r = fsize - *off_r;
	return 1;
}

/* Add the pieces of one section. 1 ok, 0 unknown transfer encoding. */
static int
section_out(struct build *bd, const struct fetch_sec *s, const struct mime_msg *mm, uint64_t fsize)
{
	struct fetch_job *fj = bd->fj;
	const struct mime_part *part;
	uint64_t off, len;

	mbuf_printf(&bd->t, "%s%s ", bd->t.len > 0 && bd->t.data[bd->t.len - 1] == '(' ? "" : " ", s->label);
	if (sec_range(s, mm, fsize, &part, &off, &len) <= 0) {
		mbuf_adds(&bd->t, s->kind == SK_BINARY_SIZE ? "0" : "NIL");
		return 1;
	}
	if (s->kind == SK_BODY) {
		if (s->spec == SS_FIELDS || s->spec == SS_FIELDS_NOT)
			return fields_out(bd, s, off, len);
		range_out(bd, s, off, len);
		return 1;
	}
	enum imap_text_enc enc = cte_of(part);
	if (enc == IMAP_TEXT_ENC_UNKNOWN)
		return 0;
	uint64_t size = len;
	if (enc != IMAP_TEXT_ENC_NONE)
		decoded_size(fj, enc, off, len, &size);
	if (s->kind == SK_BINARY_SIZE) {
		mbuf_printf(&bd->t, "%llu", (unsigned long long)size);
		return 1;
	}
	if (enc == IMAP_TEXT_ENC_NONE) {
		range_out(bd, s, off, len);
		return 1;
	}
	uint64_t skip, n = window(s, size, &skip);
	literal_head(bd, s, n);
	if (n == 0)
		return 1;
	text_flush(bd);
	struct piece *p = piece_new(fj, PC_DECODE);
	p->off = off;
	p->len = len;
	p->lit = n;
	/* Raw bytes: no charset conversion for BINARY. */
	imap_text_decoder_init(&p->dec, enc, false);
	imap_text_window_init(&p->win, skip, n);
	return 1;
}

/* Turn one collected message into pieces (or skip it, counting why). */
static void
prepare(struct fetch_job *fj, struct idx_account *a, const struct batch_msg *bm)
{
	const struct idx_message *m = &bm->m;
	struct mime_msg *mm = NULL;
	char err[256];

	if (fj->want_mime) {
		void *blob = NULL;
		size_t blen = 0;
		const char *derr = NULL;
		int r = idx_message_mime(a, m->id, &blob, &blen, err, sizeof(err));
		if (r > 0 && mime_cache_decode(blob, blen, NULL, &mm, &derr) < 0) {
			note(fj, "uid %u: mime cache: %s", m->uid, derr != NULL ? derr : "corrupt");
			mm = NULL;
		} else if (r < 0) {
			note(fj, "uid %u: mime cache: %s", m->uid, err);
		} else if (r == 0) {
			note(fj, "uid %u: no mime cache", m->uid);
		}
		free(blob);
		if (mm == NULL) {
			fj->nbroken++;
			return;
		}
	}
	if (fj->want_file) {
		int r = idx_message_open(a, m, &fj->fd, err, sizeof(err));
		if (r <= 0) {
			fj->fd = -1;
			if (r < 0) {
				note(fj, "uid %u: open: %s", m->uid, err);
				fj->nbroken++;
			} else {
				fj->nmissing++;
			}
			mime_msg_free(&mm);
			return;
		}
	}
	struct build bd = {.fj = fj};
	mbuf_init(&bd.t, (size_t)1 << 30);
	record_out(fj, bm->seq, m, &bd.t);
	if (mm != NULL && (fj->items & (F_ENVELOPE | F_BODYSTRUCTURE | F_BODY))) {
		TCXSTR *x = tcxstrnew();
		const char *sp = bd.t.data[bd.t.len - 1] == '(' ? "" : " ";
		if (fj->items & F_ENVELOPE) {
			tcxstrcat2(x, sp);
			tcxstrcat2(x, "ENVELOPE ");
			mime_imap_envelope(&mm->env, fj->mimeflags, x);
			sp = " ";
		}
		if (fj->items & F_BODYSTRUCTURE) {
			tcxstrcat2(x, sp);
			tcxstrcat2(x, "BODYSTRUCTURE ");
			mime_imap_bodystructure(&mm->root, true, fj->mimeflags, x);
			sp = " ";
		}
		if (fj->items & F_BODY) {
			tcxstrcat2(x, sp);
			tcxstrcat2(x, "BODY ");
			mime_imap_bodystructure(&mm->root, false, fj->mimeflags, x);
		}
		mbuf_add(&bd.t, tcxstrptr(x), (size_t)tcxstrsize(x));
		tcxstrdel(x);
	}
	for (size_t i = 0; i < fj->nsecs; i++)
		if (section_out(&bd, &fj->secs[i], mm, m->size) == 0) {
			fj->nunknown++;
			pieces_clear(fj);
			mbuf_clear(&bd.t);
			mime_msg_free(&mm);
			return;
		}
	mbuf_adds(&bd.t, ")\r\n");
	text_flush(&bd);
	mbuf_clear(&bd.t);
	mime_msg_free(&mm);
}

/* Produce pieces of the current message until the step is full. */
static void
emit(struct fetch_job *fj)
{
	while (fj->ipiece < fj->npieces && evbuffer_get_length(fj->out) < FETCH_STEP) {
		struct piece *p = &fj->pieces[fj->ipiece];
		if (p->kind == PC_TEXT) {
			evbuffer_add(fj->out, p->text, p->tlen);
			fj->ipiece++;
			continue;
		}
		if (p->done < p->lit && p->pos < p->len) {
			size_t n = p->len - p->pos < FETCH_IO ? (size_t)(p->len - p->pos) : FETCH_IO;
			int r;
			if (p->kind == PC_RANGE) {
				/* Read straight into the output buffer. */
				struct evbuffer_iovec v;
				if (evbuffer_reserve_space(fj->out, (ev_ssize_t)n, &v, 1) < 1)
					abort();
				if (v.iov_len > n)
					v.iov_len = n;
				r = read_at(fj, v.iov_base, v.iov_len, p->off + p->pos);
				v.iov_len = r > 0 ? (size_t)r : 0;
				evbuffer_commit_space(fj->out, &v, 1);
			} else {
				r = read_at(fj, fj->io, n, p->off + p->pos);
			}
			if (r > 0) {
				p->pos += (uint64_t)r;
				if (p->kind == PC_RANGE) {
					p->done += (uint64_t)r;
				} else {
					decode_run(fj, &p->dec, &p->win, fj->io, (size_t)r, p->pos == p->len, fj->out);
					p->done = p->lit - p->win.left;
				}
				continue;
			}
			p->pos = p->len; /* file shorter than its record: pad below */
			if (p->kind == PC_DECODE) {
				decode_run(fj, &p->dec, &p->win, NULL, 0, true, fj->out);
				p->done = p->lit - p->win.left;
			}
		}
		if (p->done < p->lit) {
			/* Keep the protocol in step: the literal size was already sent. */
			fj->nshort++;
			static const char spaces[256] = {[0 ... 255] = ' '};
			while (p->done < p->lit) {
				size_t k = p->lit - p->done < sizeof(spaces) ? (size_t)(p->lit - p->done) : sizeof(spaces);
				evbuffer_add(fj->out, spaces, k);
				p->done += k;
			}
		}
		fj->ipiece++;
	}
	if (fj->ipiece == fj->npieces) {
		pieces_clear(fj);
		/* The message's whole response is in the output now. */
		if (fj->cur_seen >= 0)
			fj->seen_state[fj->cur_seen] = 1;
		fj->cur_seen = -1;
	}
}

/* ---- the walk ---- */

static int
walk_cb(void *arg, const struct idx_message *m)
{
	struct fetch_job *fj = arg;

	while (fj->next < fj->n && fj->uids[fj->next] < m->uid)
		fj->next++;
	if (fj->next >= fj->n)
		goto stop;
	if (fj->uids[fj->next] != m->uid) {
		/* A sparse set: seek to the next wanted UID instead of walking. */
		if (++fj->skipped > FETCH_JUMP)
			goto stop;
		return 1;
	}
	fj->skipped = 0;
	uint32_t seq = fj->seqs[fj->next++];
	if (fj->changedsince != 0 && m->modseq <= fj->changedsince)
		return 1;
	if (fj->collect) {
		struct batch_msg *bm = &fj->batch[fj->nbatch++];
		msg_copy(&bm->m, m);
		bm->seq = seq;
		bm->seen_at = -1;
		if (fj->nbatch == FETCH_BATCH)
			goto stop;
		return 1;
	}
	/* Formatted into one buffer, moved to the output once per walk. */
	record_out(fj, seq, m, &fj->wb);
	mbuf_adds(&fj->wb, ")\r\n");
	if (evbuffer_get_length(fj->out) + fj->wb.len >= FETCH_STEP)
		goto stop;
	return 1;
stop:
	fj->stopped = true;
	return 0;
}

static void
batch_clear(struct fetch_job *fj)
{
	for (size_t i = 0; i < fj->nbatch; i++)
		idx_message_clear(&fj->batch[i].m);
	fj->nbatch = fj->ibatch = 0;
}

/* Set \Seen on the collected messages that lack it (outside the walk). */
static int
batch_seen(struct fetch_job *fj, struct idx_account *a)
{
	uint32_t *uids = xmalloc(fj->nbatch * sizeof(*uids));
	size_t n = 0;
	for (size_t i = 0; i < fj->nbatch; i++)
		if (!(fj->batch[i].m.flags & IDX_SEEN))
			uids[n++] = fj->batch[i].m.uid;
	int r = 1;
	if (n > 0) {
		uint64_t ms = 0;
		size_t nf = 0;
		r = idx_store(a, fj->mailbox_id, uids, n, IDX_STORE_ADD, IDX_SEEN, NULL, 0, 0, NULL, &nf, &ms,
		    fj->j.err, sizeof(fj->j.err));
		if (r > 0 && ms != 0)
			for (size_t i = 0; i < fj->nbatch; i++) {
				struct idx_message *m = &fj->batch[i].m;
				if (m->flags & IDX_SEEN)
					continue;
				m->flags |= IDX_SEEN;
				m->modseq = ms;
				if (fj->nseen == fj->capseen) {
					fj->capseen = fj->capseen ? fj->capseen * 2 : 64;
					fj->seen = xrealloc(fj->seen, fj->capseen * sizeof(*fj->seen));
					fj->seen_state = xrealloc(fj->seen_state, fj->capseen * sizeof(*fj->seen_state));
				}
				fj->batch[i].seen_at = (int32_t)fj->nseen;
				fj->seen_state[fj->nseen] = 0;
				fj->seen[fj->nseen++] = (struct idx_uidstate){m->uid, m->flags, ms};
			}
	}
	free(uids);
	return r < 0 ? -1 : 1;
}

static int
vanished_cb(void *arg, uint32_t uid, uint64_t modseq)
{
	struct fetch_job *fj = arg;
	struct mbuf *b = fj->vbuf;
	if (!imap_seqset_contains(&fj->vset, uid, UINT32_MAX))
		return 1;
	mbuf_printf(b, "%s%u", b->len > 0 ? "," : "", uid);
	return 1;
}

static int
vanished_out(struct fetch_job *fj, struct idx_account *a)
{
	struct mbuf b;
	mbuf_init(&b, (size_t)1 << 30);
	fj->vbuf = &b;
	int r = idx_tombstones(a, fj->mailbox_id, fj->changedsince, vanished_cb, fj, fj->j.err, sizeof(fj->j.err));
	fj->vbuf = NULL;
	if (r >= 0 && b.len > 0)
		evbuffer_add_printf(fj->out, "* VANISHED (EARLIER) %s\r\n", b.data);
	mbuf_clear(&b);
	return r < 0 ? -1 : 1;
}

static void
fetch_work(struct imap_job *j, struct idx_account *a)
{
	struct fetch_job *fj = (struct fetch_job *)j;

	/*
	 * Every step, since the UIDs may change between two of them. A message
	 * already begun is completed (its record and file are the one the client
	 * named, and a literal cannot stop short); no walk follows.
	 */
	if (!fj->stale) {
		if ((j->rc = imap_view_uids_valid(a, fj->mailbox_id, fj->uidvalidity, j->err, sizeof(j->err))) < 0)
			return;
		fj->stale = j->rc == 0;
	}
	j->rc = 1;
	if (fj->stale) {
		fj->vanished = false;
		batch_clear(fj);
		fj->next = fj->n;
	}
	if (fj->vanished) {
		fj->vanished = false;
		if (vanished_out(fj, a) < 0) {
			j->rc = -1;
			return;
		}
	}
	while (evbuffer_get_length(fj->out) < FETCH_STEP) {
		if (fj->npieces > 0) {
			emit(fj);
			continue;
		}
		if (fj->ibatch < fj->nbatch) {
			struct batch_msg *bm = &fj->batch[fj->ibatch++];
			prepare(fj, a, bm);
			/* Marked sent once emit wrote all of it (nothing written: never). */
			fj->cur_seen = fj->npieces > 0 ? bm->seen_at : -1;
			continue;
		}
		batch_clear(fj);
		if (fj->next < fj->n) {
			fj->stopped = false;
			fj->skipped = 0;
			int r = fj->flags_only ?
			    idx_message_each_flags(a, fj->mailbox_id, fj->uids[fj->next], walk_cb, fj, j->err,
			    sizeof(j->err)) :
			    idx_message_each(a, fj->mailbox_id, fj->uids[fj->next], walk_cb, fj, j->err, sizeof(j->err));
			if (fj->wb.len > 0) {
				evbuffer_add(fj->out, fj->wb.data, fj->wb.len);
				mbuf_reset(&fj->wb);
			}
			if (r < 0) {
				j->rc = -1;
				return;
			}
			if (!fj->stopped)
				fj->next = fj->n; /* the rest is not in the mailbox any more */
			if (fj->set_seen && fj->nbatch > 0 && batch_seen(fj, a) < 0) {
				j->rc = -1;
				return;
			}
			continue;
		}
		if (fj->nmissing > 0) {
			/* Files deleted behind our back: let the index catch up (expunges follow). */
			char err[256];
			if (idx_sync_mailbox(a, fj->mailbox_id, NULL, err, sizeof(err)) < 0)
				note(fj, "sync: %s", err);
		}
		fj->finished = true;
		break;
	}
}

/* ---- loop thread ---- */

static void
sec_clear(struct fetch_sec *s)
{
	free(s->label);
	for (size_t i = 0; i < s->nfields; i++)
		free(s->fields[i]);
	free(s->fields);
}

static void
fetch_free(struct fetch_job *fj)
{
	pieces_clear(fj);
	batch_clear(fj);
	free(fj->batch);
	free(fj->uids);
	free(fj->seqs);
	for (size_t i = 0; i < fj->nsecs; i++)
		sec_clear(&fj->secs[i]);
	free(fj->secs);
	free(fj->seen);
	free(fj->seen_state);
	free(fj->io);
	free(fj->dbuf);
	imap_seqset_clear(&fj->vset);
	if (fj->guard != NULL)
		event_free(fj->guard);
	evbuffer_free(fj->out);
	mbuf_clear(&fj->wb);
	free(fj);
}

/*
 * Waiting for the output to drain, the job counts as running (c->jobs) so
 * the connection stays allocated; the guard timer notices a connection that
 * closes meanwhile (its output never drains) and lets it go.
 */
static void
unpark(struct imap_conn *c, struct fetch_job *fj)
{
	event_free(fj->guard);
	fj->guard = NULL;
	c->fetch_pending = NULL;
	c->jobs--;
}

static void
guard_cb(evutil_socket_t fd, short what, void *arg)
{
	struct fetch_job *fj = arg;
	struct imap_conn *c = fj->j.c;

	if (!imap_gone(c))
		return;
	if (c->resume_fn != NULL)
		c->resume_fn = NULL;
	unpark(c, fj);
	fetch_free(fj);
	if (c->jobs == 0)
		event_active(c->ev_defer, 0, 0);
}

static void
fetch_resume(struct imap_conn *c)
{
	struct fetch_job *fj = (struct fetch_job *)c->fetch_pending;
	unpark(c, fj);
	imap_submit(c, &fj->j);
}

static void
park(struct imap_conn *c, struct fetch_job *fj)
{
	struct timeval tv = {0, 100 * 1000};
	c->fetch_pending = fj;
	c->jobs++;
	fj->guard = event_new(bufferevent_get_base(c->bev), -1, EV_PERSIST, guard_cb, fj);
	event_add(fj->guard, &tv);
	imap_wait_output(c, fetch_resume);
}

/* Outcomes, passed to fetch_end through c->fetch_pending (nothing to free if the
 * connection goes away during the final announcement). */
static const char end_ok[] = "ok", end_cte[] = "cte", end_unavailable[] = "unavailable";

/* After pending changes were announced: the tagged reply. */
static void
fetch_end(struct imap_conn *c)
{
	const char *how = c->fetch_pending;
	c->fetch_pending = NULL;
	if (how == end_cte)
		imap_no(c, "[UNKNOWN-CTE] unknown content-transfer-encoding");
	else if (how == end_unavailable)
		imap_no(c, "[UNAVAILABLE] message file missing or unreadable");
	else
		imap_ok(c, "FETCH completed");
	imap_cmd_finish(c);
}

static void
fetch_done(struct imap_job *j)
{
	struct fetch_job *fj = (struct fetch_job *)j;
	struct imap_conn *c = j->c;

	if (imap_gone(c)) {
		fetch_free(fj);
		return;
	}
	evbuffer_add_buffer(imap_out(c), fj->out);
	struct imap_view *v = c->sel;
	/* \Seen whose response is in the output now is known to the client; the rest
	 * (not written yet, or never: a failed step) is left to later steps or to the
	 * change notifications. */
	if (v != NULL && v->mailbox_id == fj->mailbox_id)
		for (size_t i = fj->seen_next; i < fj->nseen; i++) {
			if (fj->seen_state[i] != 1)
				continue;
			fj->seen_state[i] = 2;
			uint32_t seq = imap_view_seq(v, fj->seen[i].uid);
			if (seq == 0 || imap_view_modseq(v, seq - 1) >= fj->seen[i].modseq)
				continue;
			/* The response carried the record's flags as of that modseq: the view knows them now. */
			imap_view_set(v, seq - 1, fj->seen[i].flags, fj->seen[i].modseq);
			if (fj->seen[i].modseq > v->highest_modseq)
				v->highest_modseq = fj->seen[i].modseq;
		}
	while (fj->seen_next < fj->nseen && fj->seen_state[fj->seen_next] == 2)
		fj->seen_next++;
	if (j->rc < 0) {
		imap_serverbug(c, "fetch", j->err);
		fetch_free(fj);
		imap_cmd_finish(c);
		return;
	}
	if (!fj->finished) {
		park(c, fj);
		return;
	}
	if (fj->stale)
		imap_view_stale(c, fj->mailbox_id); /* the flush below ends the session */
	if (fj->err2[0] != 0 || fj->nshort > 0 || fj->nmissing > 0)
		log_error(PKG, c->ci->cid, "fetch: messages not available", "problem",
		    fj->err2[0] ? fj->err2 : "file missing or short", "mailbox", v != NULL ? v->name : "");
	if (fj->nunknown > 0)
		c->fetch_pending = (void *)end_cte;
	else if (fj->nmissing > 0 || fj->nbroken > 0)
		c->fetch_pending = (void *)end_unavailable;
	else
		c->fetch_pending = (void *)end_ok;
	fetch_free(fj);
	imap_view_flush(c, c->uid, fetch_end);
}

/* ---- parsing ---- */

static int
section_parse(struct fetch_sec *s, const struct imap_arg *a, const char **err_r)
{
	const struct imap_arg *t = a->section->list;
	*err_r = "bad section";
	if (t == NULL)
		return 1;
	if (t->type != IMAP_ARG_ATOM)
		return -1;
	const char *p = t->str, *e = t->str + t->len;
	while (p < e && *p >= '0' && *p <= '9') {
		uint64_t v = 0;
		while (p < e && *p >= '0' && *p <= '9') {
			v = v * 10 + (uint64_t)(*p - '0');
			if (v > UINT32_MAX)
				return -1;
			p++;
		}
		if (v == 0 || s->nnums == FETCH_MAX_DEPTH)
			return -1;
		s->nums[s->nnums++] = (uint32_t)v;
		if (p == e)
			break;
		if (*p != '.')
			return -1;
		p++;
		if (p == e)
			return -1;
	}
	if (p < e) {
		size_t n = (size_t)(e - p);
		if (n == 6 && strncasecmp(p, "HEADER", 6) == 0)
			s->spec = SS_HEADER;
		else if (n == 13 && strncasecmp(p, "HEADER.FIELDS", 13) == 0)
			s->spec = SS_FIELDS;
		else if (n == 17 && strncasecmp(p, "HEADER.FIELDS.NOT", 17) == 0)
			s->spec = SS_FIELDS_NOT;
		else if (n == 4 && strncasecmp(p, "TEXT", 4) == 0)
			s->spec = SS_TEXT;
		else if (n == 4 && strncasecmp(p, "MIME", 4) == 0 && s->nnums > 0)
			s->spec = SS_MIME;
		else
			return -1;
	}
	if (s->kind != SK_BODY && s->spec != SS_NONE)
		return -1;
	if (s->spec == SS_FIELDS || s->spec == SS_FIELDS_NOT) {
		const struct imap_arg *l = t->next;
		if (l == NULL || l->type != IMAP_ARG_LIST || l->list == NULL || l->next != NULL)
			return -1;
		for (const struct imap_arg *f = l->list; f != NULL; f = f->next) {
			if ((f->type != IMAP_ARG_ATOM && f->type != IMAP_ARG_QUOTED && f->type != IMAP_ARG_LITERAL &&
			    f->type != IMAP_ARG_NIL) || f->len == 0 || f->section != NULL ||
			    memchr(f->str, ':', f->len) != NULL || strlen(f->str) != f->len)
				return -1;
			if (s->nfields == FETCH_MAX_FIELDS) {
				*err_r = "too many header fields";
				return -1;
			}
			s->fields = xrealloc(s->fields, (s->nfields + 1) * sizeof(*s->fields));
			s->fields[s->nfields++] = xstrdup(f->str);
		}
	} else if (t->next != NULL) {
		return -1;
	}
	return 1;
}

static void
sec_label(struct fetch_sec *s, const char *name)
{
	static const char *specs[] = {"", "HEADER", "HEADER.FIELDS", "HEADER.FIELDS.NOT", "TEXT", "MIME"};
	struct mbuf b;
	mbuf_init(&b, (size_t)1 << 20);
	mbuf_printf(&b, "%s[", name);
	for (size_t i = 0; i < s->nnums; i++)
		mbuf_printf(&b, "%s%u", i ? "." : "", s->nums[i]);
	if (s->spec != SS_NONE)
		mbuf_printf(&b, "%s%s", s->nnums ? "." : "", specs[s->spec]);
	if (s->nfields > 0) {
		mbuf_adds(&b, " (");
		for (size_t i = 0; i < s->nfields; i++) {
			if (i)
				mbuf_adds(&b, " ");
			imap_quote(&b, s->fields[i], strlen(s->fields[i]), IMAP_QUOTE_ATOM);
		}
		mbuf_adds(&b, ")");
	}
	mbuf_adds(&b, "]");
	if (s->partial)
		mbuf_printf(&b, "<%llu>", (unsigned long long)s->off);
	s->label = xstrdup(b.data);
	mbuf_clear(&b);
}

static struct fetch_sec *
sec_add(struct fetch_job *fj)
{
	fj->secs = xrealloc(fj->secs, (fj->nsecs + 1) * sizeof(*fj->secs));
	struct fetch_sec *s = &fj->secs[fj->nsecs++];
	memset(s, 0, sizeof(*s));
	return s;
}

/* A section item (BODY[...], BINARY[...]). 1, or -1 with *err_r. */
static int
section_att(struct imap_conn *c, struct fetch_job *fj, const struct imap_arg *a, const char **err_r)
{
	static const struct { const char *name, *out; enum sec_kind kind; bool peek; } names[] = {
		{"BODY", "BODY", SK_BODY, false}, {"BODY.PEEK", "BODY", SK_BODY, true},
		{"BINARY", "BINARY", SK_BINARY, false}, {"BINARY.PEEK", "BINARY", SK_BINARY, true},
		{"BINARY.SIZE", "BINARY.SIZE", SK_BINARY_SIZE, true},
	};
	size_t k;
	for (k = 0; k < ARRAY_LEN(names); k++)
		if (strlen(names[k].name) == a->name_len && strncasecmp(a->str, names[k].name, a->name_len) == 0)
			break;
	*err_r = "unknown fetch attribute";
	if (k == ARRAY_LEN(names))
		return -1;
	if (fj->nsecs == FETCH_MAX_SECTIONS) {
		*err_r = "too many sections";
		return -1;
	}
	struct fetch_sec *s = sec_add(fj);
	s->kind = names[k].kind;
	if (section_parse(s, a, err_r) < 0)
		return -1;
	if (a->has_partial) {
		if (s->kind == SK_BINARY_SIZE) {
			*err_r = "BINARY.SIZE takes no partial";
			return -1;
		}
		s->partial = true;
		s->off = a->partial_offset;
		s->count = a->partial_count;
	}
	sec_label(s, names[k].out);
	if (!names[k].peek && !c->sel->readonly)
		fj->set_seen = true;
	return 1;
}

static int
fetch_att(struct imap_conn *c, struct fetch_job *fj, const struct imap_arg *a, const char **err_r)
{
	static const struct { const char *name; unsigned bits; } atts[] = {
		{"FLAGS", F_FLAGS}, {"UID", F_UID}, {"INTERNALDATE", F_INTERNALDATE}, {"RFC822.SIZE", F_SIZE},
		{"ENVELOPE", F_ENVELOPE}, {"BODYSTRUCTURE", F_BODYSTRUCTURE}, {"BODY", F_BODY}, {"MODSEQ", F_MODSEQ},
		{"SAVEDATE", F_SAVEDATE},
		{"ALL", F_FLAGS | F_INTERNALDATE | F_SIZE | F_ENVELOPE},
		{"FAST", F_FLAGS | F_INTERNALDATE | F_SIZE},
		{"FULL", F_FLAGS | F_INTERNALDATE | F_SIZE | F_ENVELOPE | F_BODY},
	};
	*err_r = "unknown fetch attribute";
	if (a->type != IMAP_ARG_ATOM)
		return -1;
	if (a->section != NULL)
		return section_att(c, fj, a, err_r);
	/* RFC822, RFC822.HEADER and RFC822.TEXT are sections with their own names. */
	static const struct { const char *name; enum sec_spec spec; bool peek; } r822[] = {
		{"RFC822", SS_NONE, false}, {"RFC822.HEADER", SS_HEADER, true}, {"RFC822.TEXT", SS_TEXT, false},
	};
	for (size_t i = 0; i < ARRAY_LEN(r822); i++)
		if (str_ieq(a->str, r822[i].name)) {
			if (fj->nsecs == FETCH_MAX_SECTIONS)
				return -1;
			struct fetch_sec *s = sec_add(fj);
			s->kind = SK_BODY;
			s->spec = r822[i].spec;
			s->label = xstrdup(r822[i].name);
			if (!r822[i].peek && !c->sel->readonly)
				fj->set_seen = true;
			return 1;
		}
	for (size_t i = 0; i < ARRAY_LEN(atts); i++)
		if (str_ieq(a->str, atts[i].name)) {
			fj->items |= atts[i].bits;
			if (atts[i].bits == F_MODSEQ)
				c->enabled |= IMAP_EN_CONDSTORE;
			return 1;
		}
	return -1;
}

/* FETCH modifiers: CHANGEDSINCE (RFC 7162 3.1.4), VANISHED (3.2.6). */
static int
fetch_modifiers(struct imap_conn *c, struct fetch_job *fj, struct imap_args *args, const char **err_r)
{
	const struct imap_arg *a = imap_args_peek(args);
	bool vanished = false, changedsince = false;

	*err_r = "bad FETCH modifier";
	if (a == NULL || a->type != IMAP_ARG_LIST)
		return 1;
	struct imap_args sub;
	imap_args_list(args, &sub);
	while (imap_args_peek(&sub) != NULL) {
		if (imap_args_keyword(&sub, "CHANGEDSINCE") == 1 && !changedsince) {
			if (imap_args_number64(&sub, &fj->changedsince) < 0)
				return -1;
			changedsince = true;
			fj->items |= F_MODSEQ;
			c->enabled |= IMAP_EN_CONDSTORE;
		} else if (imap_args_keyword(&sub, "VANISHED") == 1 && !vanished) {
			vanished = true;
		} else {
			return -1;
		}
	}
	if (vanished) {
		if (!c->uid || !changedsince || !(c->enabled & IMAP_EN_QRESYNC)) {
			*err_r = "VANISHED needs UID FETCH, CHANGEDSINCE and ENABLE QRESYNC";
			return -1;
		}
		/* The VANISHED (EARLIER) response itself is sent by the session layer before
		 * the FETCH runs (imap_session.c); sending it here too would repeat it. */
	}
	return 1;
}

int
imap_cmd_fetch(struct imap_conn *c, struct imap_args *args)
{
	struct fetch_job *fj = xcalloc(1, sizeof(*fj));
	fj->cur_seen = -1;
	struct imap_seqset set = {0};
	const struct imap_arg *a;
	const char *err = NULL;

	fj->fd = -1;
	fj->out = evbuffer_new();
	if (imap_args_seqset(args, &set) < 0 || imap_args_any(args, &a) < 0) {
		imap_bad(c, "%s", args->err);
		goto fail;
	}
	if (a->type == IMAP_ARG_LIST) {
		if (a->list == NULL) {
			imap_bad(c, "empty fetch attribute list");
			goto fail;
		}
		for (const struct imap_arg *x = a->list; x != NULL; x = x->next)
			if (fetch_att(c, fj, x, &err) < 0) {
				imap_bad(c, "%s", err);
				goto fail;
			}
	} else if (fetch_att(c, fj, a, &err) < 0) {
		imap_bad(c, "%s", err);
		goto fail;
	}
	if (fetch_modifiers(c, fj, args, &err) < 0 || imap_args_end(args) < 0) {
		imap_bad(c, "%s", err != NULL ? err : "bad FETCH modifier");
		goto fail;
	}
	if (c->uid)
		fj->items |= F_UID;
	if (fj->set_seen)
		fj->items |= F_FLAGS;
	if ((c->enabled & IMAP_EN_CONDSTORE) && (fj->items & F_FLAGS))
		fj->items |= F_MODSEQ;
	if (fj->vanished) {
		/* VANISHED reports UIDs of the client's set that are gone: keep the set as UIDs. */
		fj->vset.n = set.n;
		fj->vset.searchres = set.searchres;
		fj->vset.ranges = xmalloc((set.n ? set.n : 1) * sizeof(*set.ranges));
		memcpy(fj->vset.ranges, set.ranges, set.n * sizeof(*set.ranges));
	}
	if (imap_view_resolve(c, &set, c->uid, &fj->uids, &fj->n) < 0) {
		imap_bad(c, "invalid message sequence number");
		goto fail;
	}
	imap_seqset_clear(&set);
	fj->seqs = xmalloc((fj->n ? fj->n : 1) * sizeof(*fj->seqs));
	/* Both ascending: one merge instead of a search per UID. */
	for (size_t i = 0, k = 0; i < fj->n; i++) {
		const struct imap_view *v = c->sel;
		if (i > 0 && fj->uids[i] <= fj->uids[i - 1]) {
			fj->seqs[i] = imap_view_seq(v, fj->uids[i]);
			continue;
		}
		while (k < v->n && imap_view_uid(v, k) < fj->uids[i])
			k++;
		fj->seqs[i] = k < v->n && imap_view_uid(v, k) == fj->uids[i] ? (uint32_t)k + 1 : 0;
	}
	for (size_t i = 0; i < fj->nsecs; i++) {
		const struct fetch_sec *s = &fj->secs[i];
		fj->want_file = true;
		if (s->nnums > 0 || s->spec != SS_NONE)
			fj->want_mime = true;
	}
	if (fj->items & (F_ENVELOPE | F_BODYSTRUCTURE | F_BODY))
		fj->want_mime = true;
	fj->collect = fj->want_file || fj->want_mime || fj->set_seen;
	fj->flags_only = !fj->collect && (fj->items & ~(unsigned)(F_UID | F_FLAGS | F_MODSEQ)) == 0;
	mbuf_init(&fj->wb, (size_t)1 << 30);
	if (fj->collect)
		fj->batch = xmalloc(FETCH_BATCH * sizeof(*fj->batch));
	if (fj->want_file)
		fj->io = xmalloc(FETCH_IO);
	if (imap_utf8(c))
		fj->mimeflags |= MIME_IMAP_UTF8;
	fj->mailbox_id = c->sel->mailbox_id;
	fj->uidvalidity = c->sel->uidvalidity;
	fj->j.work = fetch_work;
	fj->j.done = fetch_done;
	imap_submit(c, &fj->j);
	return IMAP_CMD_ASYNC;
fail:
	imap_seqset_clear(&set);
	fetch_free(fj);
	return IMAP_CMD_DONE;
}

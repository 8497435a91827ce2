/*
 * imap_fetch: FETCH / UID FETCH. The storage job walks the requested UIDs in
 * batches and formats the responses into a buffer; the loop thread writes a
 * batch and asks for the next one once the output drained below the high
 * mark (backpressure). Flags, UID, sizes and dates come from the message
 * record, ENVELOPE/BODYSTRUCTURE from the MIME cache, sections from the file.
 */
#define _GNU_SOURCE 1
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <tcutil.h>

#include "daemon/imap_private.h"
#include "daemon/log.h"
#include "index/mime.h"

#define F_FLAGS 0x1
#define F_UID 0x2
#define F_INTERNALDATE 0x4
#define F_SIZE 0x8
#define F_ENVELOPE 0x10
#define F_BODYSTRUCTURE 0x20
#define F_BODY 0x40
#define F_MODSEQ 0x80
#define F_RFC822 0x100
#define F_RFC822_HEADER 0x200
#define F_RFC822_TEXT 0x400
#define FETCH_BATCH_BYTES (1024 * 1024)

enum sec_part { SEC_ALL, SEC_HEADER, SEC_TEXT };

struct fetch_sec {
	char *label;      /* as echoed: "BODY[]", "BODY[HEADER]<0>" */
	enum sec_part part;
	bool peek;
	bool partial;
	uint64_t off, count;
};

struct fetch_job {
	struct imap_job j;
	uint32_t mailbox_id;
	uint32_t *uids;
	uint32_t *seqs;
	size_t n, next;
	unsigned items;
	struct fetch_sec *secs;
	size_t nsecs;
	bool set_seen;
	bool condstore;
	uint64_t changedsince;
	struct evbuffer *out;
};

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

/* Read the whole file of m (bounded by its size). */
static char *
read_msg(struct idx_account *a, const struct idx_message *m, size_t *len_r, char *err, size_t errlen)
{
	int fd;
	if (idx_message_open(a, m, &fd, err, errlen) <= 0)
		return NULL;
	size_t cap = (size_t)m->size + 1, len = 0;
	char *buf = xmalloc(cap);
	for (;;) {
		if (len == cap - 1) {
			cap *= 2;
			buf = xrealloc(buf, cap);
		}
		ssize_t r = read(fd, buf + len, cap - 1 - len);
		if (r <= 0)
			break;
		len += (size_t)r;
	}
	close(fd);
	buf[len] = 0;
	*len_r = len;
	return buf;
}

static void
literal_out(struct mbuf *b, const char *p, size_t len)
{
	mbuf_printf(b, "{%zu}\r\n", len);
	mbuf_add(b, p, len);
}

static void
fetch_one(struct fetch_job *fj, struct idx_account *a, uint32_t seq, const struct idx_message *m, struct mbuf *b)
{
	const char *sp = "";
	mbuf_printf(b, "* %u FETCH (", seq);
	if (fj->items & F_UID) {
		mbuf_printf(b, "UID %u", m->uid);
		sp = " ";
	}
	if (fj->items & F_FLAGS) {
		mbuf_printf(b, "%sFLAGS ", sp);
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
	if (fj->items & F_MODSEQ) {
		mbuf_printf(b, "%sMODSEQ (%llu)", sp, (unsigned long long)m->modseq);
		sp = " ";
	}
	if (fj->items & (F_ENVELOPE | F_BODYSTRUCTURE | F_BODY)) {
		void *blob = NULL;
		size_t blen = 0;
		struct mime_msg *mm = NULL;
		if (idx_message_mime(a, m->id, &blob, &blen, fj->j.err, sizeof(fj->j.err)) > 0)
			mime_cache_decode(blob, blen, NULL, &mm, NULL);
		free(blob);
		if (mm != NULL) {
			TCXSTR *x = tcxstrnew();
			if (fj->items & F_ENVELOPE) {
				tcxstrcat2(x, sp);
				tcxstrcat2(x, "ENVELOPE ");
				mime_imap_envelope(&mm->env, 0, x);
				sp = " ";
			}
			if (fj->items & F_BODYSTRUCTURE) {
				tcxstrcat2(x, sp);
				tcxstrcat2(x, "BODYSTRUCTURE ");
				mime_imap_bodystructure(&mm->root, true, 0, x);
				sp = " ";
			}
			if (fj->items & F_BODY) {
				tcxstrcat2(x, sp);
				tcxstrcat2(x, "BODY ");
				mime_imap_bodystructure(&mm->root, false, 0, x);
				sp = " ";
			}
			mbuf_add(b, tcxstrptr(x), (size_t)tcxstrsize(x));
			tcxstrdel(x);
			mime_msg_free(&mm);
		}
	}
	if (fj->nsecs > 0 || (fj->items & (F_RFC822 | F_RFC822_HEADER | F_RFC822_TEXT))) {
		size_t len = 0;
		char *msg = read_msg(a, m, &len, fj->j.err, sizeof(fj->j.err));
		if (msg == NULL) {
			msg = xstrdup("");
			len = 0;
		}
		/* Header ends at the first empty line. */
		size_t hlen = len;
		char *e = memmem(msg, len, "\r\n\r\n", 4);
		if (e != NULL)
			hlen = (size_t)(e - msg) + 4;
		else if ((e = memmem(msg, len, "\n\n", 2)) != NULL)
			hlen = (size_t)(e - msg) + 2;
		if (fj->items & F_RFC822) {
			mbuf_printf(b, "%sRFC822 ", sp);
			literal_out(b, msg, len);
			sp = " ";
		}
		if (fj->items & F_RFC822_HEADER) {
			mbuf_printf(b, "%sRFC822.HEADER ", sp);
			literal_out(b, msg, hlen);
			sp = " ";
		}
		if (fj->items & F_RFC822_TEXT) {
			mbuf_printf(b, "%sRFC822.TEXT ", sp);
			literal_out(b, msg + hlen, len - hlen);
			sp = " ";
		}
		for (size_t i = 0; i < fj->nsecs; i++) {
			const struct fetch_sec *s = &fj->secs[i];
			const char *p = msg;
			size_t l = len;
			if (s->part == SEC_HEADER)
				l = hlen;
			else if (s->part == SEC_TEXT)
				p = msg + hlen, l = len - hlen;
			if (s->partial) {
				if (s->off >= l)
					l = 0;
				else {
					p += s->off;
					l -= s->off;
					if (l > s->count)
						l = s->count;
				}
			}
			mbuf_printf(b, "%s%s ", sp, s->label);
			literal_out(b, p, l);
			sp = " ";
		}
		free(msg);
	}
	mbuf_adds(b, ")\r\n");
}

static void
fetch_work(struct imap_job *j, struct idx_account *a)
{
	struct fetch_job *fj = (struct fetch_job *)j;
	struct mbuf b;

	mbuf_init(&b, (size_t)1 << 31);
	if (fj->set_seen && fj->next == 0) {
		uint64_t ms;
		size_t nf = 0;
		idx_store(a, fj->mailbox_id, fj->uids, fj->n, IDX_STORE_ADD, IDX_SEEN, NULL, 0, 0, NULL, &nf, &ms,
		    j->err, sizeof(j->err));
	}
	while (fj->next < fj->n && b.len < FETCH_BATCH_BYTES) {
		struct idx_message m = {0};
		size_t i = fj->next++;
		int r = idx_message_get(a, fj->mailbox_id, fj->uids[i], &m, j->err, sizeof(j->err));
		if (r < 0) {
			j->rc = -1;
			break;
		}
		if (r > 0 && (fj->changedsince == 0 || m.modseq > fj->changedsince))
			fetch_one(fj, a, fj->seqs[i], &m, &b);
		idx_message_clear(&m);
	}
	evbuffer_add(fj->out, b.data, b.len);
	mbuf_clear(&b);
	if (j->rc == 0)
		j->rc = 1;
}

static void fetch_done(struct imap_job *j);

static void
fetch_free(struct fetch_job *fj)
{
	free(fj->uids);
	free(fj->seqs);
	for (size_t i = 0; i < fj->nsecs; i++)
		free(fj->secs[i].label);
	free(fj->secs);
	evbuffer_free(fj->out);
	free(fj);
}

static void
fetch_resume(struct imap_conn *c)
{
	struct fetch_job *fj = (struct fetch_job *)c->fetch_pending;
	c->fetch_pending = NULL;
	imap_submit(c, &fj->j);
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
	if (j->rc < 0) {
		imap_serverbug(c, "fetch", j->err);
	} else if (fj->next < fj->n) {
		c->fetch_pending = fj;
		imap_wait_output(c, fetch_resume);
		return;
	} else {
		imap_ok(c, "FETCH completed");
	}
	fetch_free(fj);
	imap_cmd_finish(c);
}

static int
add_section(struct imap_conn *c, struct fetch_job *fj, const struct imap_arg *a, const char *name)
{
	enum sec_part part = SEC_ALL;
	const struct imap_arg *s = a->section->list;
	if (s != NULL) {
		if (s->next != NULL || s->type != IMAP_ARG_ATOM)
			return -1;
		if (str_ieq(s->str, "HEADER"))
			part = SEC_HEADER;
		else if (str_ieq(s->str, "TEXT"))
			part = SEC_TEXT;
		else
			return -1;
	}
	fj->secs = xrealloc(fj->secs, (fj->nsecs + 1) * sizeof(*fj->secs));
	struct fetch_sec *fs = &fj->secs[fj->nsecs++];
	memset(fs, 0, sizeof(*fs));
	fs->part = part;
	fs->peek = strncasecmp(name, "BODY.PEEK", 9) == 0;
	fs->partial = a->has_partial;
	fs->off = a->partial_offset;
	fs->count = a->partial_count;
	const char *names[] = {"", "HEADER", "TEXT"};
	if (fs->partial)
		fs->label = xasprintf("BODY[%s]<%llu>", names[part], (unsigned long long)fs->off);
	else
		fs->label = xasprintf("BODY[%s]", names[part]);
	if (!fs->peek && !c->sel->readonly)
		fj->set_seen = true;
	return 1;
}

static int
fetch_att(struct imap_conn *c, struct fetch_job *fj, const struct imap_arg *a)
{
	static const struct { const char *name; unsigned bits; } atts[] = {
		{"FLAGS", F_FLAGS}, {"UID", F_UID}, {"INTERNALDATE", F_INTERNALDATE}, {"RFC822.SIZE", F_SIZE},
		{"ENVELOPE", F_ENVELOPE}, {"BODYSTRUCTURE", F_BODYSTRUCTURE}, {"BODY", F_BODY}, {"MODSEQ", F_MODSEQ},
		{"RFC822", F_RFC822}, {"RFC822.HEADER", F_RFC822_HEADER}, {"RFC822.TEXT", F_RFC822_TEXT},
		{"ALL", F_FLAGS | F_INTERNALDATE | F_SIZE | F_ENVELOPE},
		{"FAST", F_FLAGS | F_INTERNALDATE | F_SIZE},
		{"FULL", F_FLAGS | F_INTERNALDATE | F_SIZE | F_ENVELOPE | F_BODY},
	};
	if (a->type != IMAP_ARG_ATOM)
		return -1;
	if (a->section != NULL) {
		char name[16];
		if (a->name_len >= sizeof(name))
			return -1;
		memcpy(name, a->str, a->name_len);
		name[a->name_len] = 0;
		if (!str_ieq(name, "BODY") && !str_ieq(name, "BODY.PEEK"))
			return -1;
		return add_section(c, fj, a, name);
	}
	for (size_t i = 0; i < ARRAY_LEN(atts); i++)
		if (str_ieq(a->str, atts[i].name)) {
			fj->items |= atts[i].bits;
			if ((atts[i].bits & (F_RFC822 | F_RFC822_TEXT)) && !c->sel->readonly)
				fj->set_seen = true;
			if (atts[i].bits == F_MODSEQ)
				c->enabled |= IMAP_EN_CONDSTORE;
			return 1;
		}
	return -1;
}

int
imap_cmd_fetch(struct imap_conn *c, struct imap_args *args)
{
	struct fetch_job *fj = xcalloc(1, sizeof(*fj));
	struct imap_seqset set = {0};
	const struct imap_arg *a;

	fj->out = evbuffer_new();
	if (imap_args_seqset(args, &set) < 0 || imap_args_any(args, &a) < 0) {
		imap_bad(c, "%s", args->err);
		goto fail;
	}
	if (a->type == IMAP_ARG_LIST) {
		for (const struct imap_arg *x = a->list; x != NULL; x = x->next)
			if (fetch_att(c, fj, x) < 0) {
				imap_bad(c, "unknown fetch attribute");
				goto fail;
			}
	} else if (fetch_att(c, fj, a) < 0) {
		imap_bad(c, "unknown fetch attribute");
		goto fail;
	}
	a = imap_args_peek(args);
	if (a != NULL && a->type == IMAP_ARG_LIST) {
		struct imap_args sub;
		imap_args_list(args, &sub);
		while (imap_args_peek(&sub) != NULL) {
			if (imap_args_keyword(&sub, "CHANGEDSINCE") == 1) {
				if (imap_args_number64(&sub, &fj->changedsince) < 0)
					goto badmod;
				fj->items |= F_MODSEQ;
				c->enabled |= IMAP_EN_CONDSTORE;
			} else if (imap_args_keyword(&sub, "VANISHED") == 1) {
				/* Vanished UIDs are reported by SELECT QRESYNC; FETCH reports changes only. */
			} else {
				goto badmod;
			}
		}
	}
	if (imap_args_end(args) < 0) {
badmod:
		imap_bad(c, "bad FETCH modifier");
		goto fail;
	}
	if (c->uid)
		fj->items |= F_UID;
	if (c->enabled & IMAP_EN_CONDSTORE && (fj->items & F_FLAGS))
		fj->items |= F_MODSEQ;
	if (imap_view_resolve(c, &set, c->uid, &fj->uids, &fj->n) < 0) {
		imap_bad(c, "invalid message sequence number");
		goto fail;
	}
	imap_seqset_clear(&set);
	fj->seqs = xmalloc((fj->n ? fj->n : 1) * sizeof(*fj->seqs));
	for (size_t i = 0; i < fj->n; i++)
		fj->seqs[i] = imap_view_seq(c->sel, fj->uids[i]);
	fj->mailbox_id = c->sel->mailbox_id;
	fj->j.work = fetch_work;
	fj->j.done = fetch_done;
	imap_submit(c, &fj->j);
	return IMAP_CMD_ASYNC;
fail:
	imap_seqset_clear(&set);
	fetch_free(fj);
	return IMAP_CMD_DONE;
}

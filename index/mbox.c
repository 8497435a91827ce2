/*
 * mbox reading and quoting, as pure resumable state machines over bytes.
 *
 * The reader decides what a line is from its first bytes only: an empty
 * line is held back (it may be the separator's blank line, which is not part
 * of the message), "From " starts a new message, ">...>From " loses one
 * '>', anything else is passed through up to its LF without buffering. So
 * memory is bounded by the held From line whatever the input.
 */
#define _GNU_SOURCE
#include "index/tools.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

enum {
	R_LS = 0,   /* at the start of a line */
	R_PREFIX,   /* '>'s counted in gts, nhold bytes of "From " matched */
	R_CR,       /* a line that began with CR */
	R_FROMLINE, /* inside a separator line, collecting it into hold */
	R_MID,      /* inside an ordinary message line */
	R_SKIP,     /* inside a junk line before the first message */
};

static const char from_[] = "From ";
static const char gts_[] = ">>>>>>>>>>>>>>>>>>>>>>>>>>>>>>>>";

void mbox_parser_init(struct mbox_parser *p)
{
	memset(p, 0, sizeof(*p));
	p->state = R_LS;
	p->at_start = true;
}

static void emit_gts(const struct mbox_sink *s, void *arg, unsigned n)
{
	while (n > 0) {
		unsigned k = n < sizeof(gts_) - 1 ? n : (unsigned)(sizeof(gts_) - 1);

		s->data(arg, gts_, k);
		n -= k;
	}
}

/* The held empty line is message content after all. */
static void flush_blank(struct mbox_parser *p, const struct mbox_sink *s, void *arg)
{
	if (p->blank == 1)
		s->data(arg, "\n", 1);
	else if (p->blank == 2)
		s->data(arg, "\r\n", 2);
	p->blank = 0;
}

/* The current line is ordinary: write out what was held of its start. */
static void flush_prefix(struct mbox_parser *p, const struct mbox_sink *s, void *arg)
{
	if (!p->in_msg) {
		p->junk += p->gts + p->nhold;
		p->state = R_SKIP;
	} else {
		flush_blank(p, s, arg);
		emit_gts(s, arg, p->gts);
		if (p->nhold > 0)
			s->data(arg, from_, p->nhold);
		p->state = R_MID;
	}
	p->gts = 0;
	p->nhold = 0;
}

static void separator(struct mbox_parser *p, const struct mbox_sink *s, void *arg)
{
	size_t n = p->nhold;

	if (n > 0 && p->hold[n - 1] == '\r')
		n--;
	if (p->in_msg)
		s->end(arg); /* the held blank line belonged to the separator */
	p->blank = 0;
	p->in_msg = true;
	p->at_start = false;
	p->messages++;
	s->start(arg, p->hold, n);
	p->nhold = 0;
	p->state = R_LS;
}

static void blank_line(struct mbox_parser *p, int kind, const struct mbox_sink *s, void *arg)
{
	if (!p->in_msg) {
		p->junk += (uint64_t)kind;
	} else {
		flush_blank(p, s, arg);
		p->blank = kind;
	}
	p->state = R_LS;
}

void mbox_parse(struct mbox_parser *p, const char *in, size_t len, const struct mbox_sink *s, void *arg)
{
	size_t i = 0;

	while (i < len) {
		char c = in[i];

		switch (p->state) {
		case R_LS:
			if (c == '\n') {
				blank_line(p, 1, s, arg);
				i++;
			} else if (c == '\r') {
				p->state = R_CR;
				i++;
			} else if (c == '>' || c == 'F') {
				p->state = R_PREFIX;
				p->gts = 0;
				p->nhold = 0;
			} else if (!p->in_msg) {
				p->state = R_SKIP;
			} else {
				flush_blank(p, s, arg);
				p->state = R_MID;
			}
			break;
		case R_PREFIX:
			if (c == '>' && p->nhold == 0) {
				if (p->gts < 1000000)
					p->gts++;
				else
					flush_prefix(p, s, arg); /* absurd, but stay bounded */
				i++;
			} else if (c == from_[p->nhold]) {
				p->nhold++;
				i++;
				if (p->nhold < 5)
					break;
				if (p->gts == 0) {
					memcpy(p->hold, from_, 5);
					p->state = R_FROMLINE;
				} else if (!p->in_msg) {
					p->junk += p->gts + 5;
					p->gts = 0;
					p->nhold = 0;
					p->state = R_SKIP;
				} else {
					flush_blank(p, s, arg);
					emit_gts(s, arg, p->gts - 1);
					s->data(arg, from_, 5);
					p->gts = 0;
					p->nhold = 0;
					p->state = R_MID;
				}
			} else {
				flush_prefix(p, s, arg); /* c is looked at again in the new state */
			}
			break;
		case R_CR:
			if (c == '\n') {
				blank_line(p, 2, s, arg);
				i++;
			} else if (!p->in_msg) {
				p->junk++;
				p->state = R_SKIP;
			} else {
				flush_blank(p, s, arg);
				s->data(arg, "\r", 1);
				p->state = R_MID;
			}
			break;
		case R_FROMLINE: {
			const char *nl = memchr(in + i, '\n', len - i);
			size_t n = nl ? (size_t)(nl - (in + i)) : len - i;
			size_t room = sizeof(p->hold) - 1 - p->nhold;
			size_t k = n < room ? n : room;

			memcpy(p->hold + p->nhold, in + i, k);
			p->nhold += k;
			p->hold[p->nhold] = '\0';
			i += n;
			if (nl != NULL) {
				i++;
				separator(p, s, arg);
			}
			break;
		}
		case R_MID:
		case R_SKIP: {
			const char *nl = memchr(in + i, '\n', len - i);
			size_t n = nl ? (size_t)(nl - (in + i)) + 1 : len - i;

			if (p->state == R_MID)
				s->data(arg, in + i, n);
			else
				p->junk += n;
			i += n;
			if (nl != NULL)
				p->state = R_LS;
			break;
		}
		}
	}
}

void mbox_parse_finish(struct mbox_parser *p, const struct mbox_sink *s, void *arg)
{
	switch (p->state) {
	case R_PREFIX:
		flush_prefix(p, s, arg);
		break;
	case R_CR:
		if (p->in_msg) {
			flush_blank(p, s, arg);
			s->data(arg, "\r", 1);
		} else {
			p->junk++;
		}
		break;
	case R_FROMLINE:
		/* A separator line without a line end: an empty last message. */
		separator(p, s, arg);
		break;
	default:
		break;
	}
	if (p->in_msg)
		s->end(arg); /* a held blank line is the file's final separator */
	p->in_msg = false;
	p->blank = 0;
	p->state = R_LS;
}

int64_t mbox_fromline_time(const char *line, size_t len)
{
	static const char *const mon[] = { "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct",
		"Nov", "Dec" };
	char buf[MBOX_FROMLINE_MAX + 1];
	struct tm tm;
	char wd[4], mo[4];
	int d, h, mi, sec, y;
	const char *p;

	if (len > MBOX_FROMLINE_MAX)
		len = MBOX_FROMLINE_MAX;
	memcpy(buf, line, len);
	buf[len] = '\0';
	/* The date is the last five words: Www Mmm dd hh:mm:ss yyyy. */
	for (p = buf + 5; *p != '\0'; p++) {
		if (*p != ' ')
			continue;
		if (sscanf(p, " %3s %3s %d %d:%d:%d %d", wd, mo, &d, &h, &mi, &sec, &y) != 7)
			continue;
		memset(&tm, 0, sizeof(tm));
		tm.tm_mon = -1;
		for (int k = 0; k < 12; k++)
			if (strcmp(mo, mon[k]) == 0)
				tm.tm_mon = k;
		if (tm.tm_mon < 0 || d < 1 || d > 31 || h > 23 || h < 0 || mi < 0 || mi > 59 || sec < 0 || sec > 60 ||
		    y < 1970 || y > 9999)
			continue;
		tm.tm_mday = d;
		tm.tm_hour = h;
		tm.tm_min = mi;
		tm.tm_sec = sec;
		tm.tm_year = y - 1900;
		return (int64_t)timegm(&tm);
	}
	return 0;
}

/* ---- quoting ---- */

enum { Q_LS = 0, Q_PREFIX, Q_MID };

struct qout {
	struct mbox_quoter *q;
	void (*emit)(void *arg, const char *p, size_t n);
	void *arg;
	char buf[4096];
	size_t n;
};

static void q_put(struct qout *o, const char *p, size_t n)
{
	if (n == 0)
		return;
	o->q->any = true;
	o->q->lf_last = p[n - 1] == '\n';
	while (n > 0) {
		size_t k = sizeof(o->buf) - o->n;

		if (k > n)
			k = n;
		memcpy(o->buf + o->n, p, k);
		o->n += k;
		p += k;
		n -= k;
		if (o->n == sizeof(o->buf)) {
			o->emit(o->arg, o->buf, o->n);
			o->n = 0;
		}
	}
}

static void q_gts(struct qout *o, unsigned n)
{
	while (n > 0) {
		unsigned k = n < sizeof(gts_) - 1 ? n : (unsigned)(sizeof(gts_) - 1);

		q_put(o, gts_, k);
		n -= k;
	}
}

static void q_flush_prefix(struct qout *o)
{
	struct mbox_quoter *q = o->q;

	q_gts(o, q->gts);
	q_put(o, from_, q->matched);
	q->gts = 0;
	q->matched = 0;
	q->state = Q_MID;
}

void mbox_quoter_init(struct mbox_quoter *q)
{
	memset(q, 0, sizeof(*q));
}

void mbox_quote(struct mbox_quoter *q, const char *in, size_t len, void (*emit)(void *arg, const char *p, size_t n),
    void *arg)
{
	struct qout o = { .q = q, .emit = emit, .arg = arg };
	size_t i = 0;

	while (i < len) {
		char c = in[i];

		if (q->cr) {
			q->cr = false;
			if (c == '\n') {
				q_put(&o, "\n", 1);
				q->state = Q_LS;
				i++;
				continue;
			}
			q_put(&o, "\r", 1);
			q->state = Q_MID;
		}
		switch (q->state) {
		case Q_LS:
			if (c == '>' || c == 'F') {
				q->state = Q_PREFIX;
				q->gts = 0;
				q->matched = 0;
			} else {
				q->state = Q_MID;
			}
			continue;
		case Q_PREFIX:
			if (c == '>' && q->matched == 0 && q->gts < 1000000) {
				q->gts++;
				i++;
			} else if (c == from_[q->matched]) {
				q->matched++;
				i++;
				if (q->matched == 5) {
					q->gts++; /* the quoting */
					q_flush_prefix(&o);
				}
			} else {
				q_flush_prefix(&o);
			}
			continue;
		default: {
			/* Copy up to the next CR or LF in one go. */
			size_t j = i;

			while (j < len && in[j] != '\r' && in[j] != '\n')
				j++;
			q_put(&o, in + i, j - i);
			i = j;
			if (i < len) {
				if (in[i] == '\r') {
					q->cr = true;
				} else {
					q_put(&o, "\n", 1);
					q->state = Q_LS;
				}
				i++;
			}
		}
		}
	}
	if (o.n > 0)
		emit(arg, o.buf, o.n);
}

void mbox_quote_finish(struct mbox_quoter *q, void (*emit)(void *arg, const char *p, size_t n), void *arg)
{
	struct qout o = { .q = q, .emit = emit, .arg = arg };

	if (q->state == Q_PREFIX)
		q_flush_prefix(&o);
	if (q->cr)
		q_put(&o, "\r", 1);
	q->cr = false;
	if (q->any && !q->lf_last)
		q_put(&o, "\n", 1);
	if (o.n > 0)
		emit(arg, o.buf, o.n);
	q->state = Q_LS;
}

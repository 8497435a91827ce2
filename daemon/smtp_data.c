/*
 * smtp_data: message input for DATA (RFC 5321 4.1.1.4) and BDAT (RFC 3030).
 * The message streams into one spool file in <DataDir>/tmp (a maildir
 * writer; never whole in memory) behind the Received header we prepend (its
 * length is the message's prefix_len). DATA ends only at CRLF "." CRLF
 * (strict mode of the reader); a message holding a bare CR or LF is refused,
 * which closes SMTP smuggling and follows RFC 5321 2.3.8. BDAT chunks are
 * taken as given (the spool writer turns a bare CR or LF into CRLF). A
 * message over the size limit is read to its end, answered 552 and nothing
 * is stored. Only the header section is kept in memory, capped, and only
 * when a recipient's rulesets need it.
 */
#define _GNU_SOURCE 1
#include "daemon/smtp_private.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <event2/buffer.h>

#include "daemon/log.h"
#include "maildir/maildir.h"

/* Bytes of the message header kept for ruleset matching. */
#define SMTP_HEADER_CAPTURE_MAX (64 * 1024)

static uint64_t
max_size(const struct smtp_conn *c)
{
	return (uint64_t)smtp_cfg(c)->st.limits.max_message_size;
}

static int
write_received(struct smtp_conn *c, char *err, size_t errlen)
{
	struct smtp_txn *t = c->txn;
	char date[64], proto[16];
	struct tm tm;
	time_t now = time(NULL);
	struct mbuf h;
	int r;

	localtime_r(&now, &tm);
	strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S %z", &tm);
	snprintf(proto, sizeof(proto), "%s%s%s", !(c->flags & SMTP_F_ESMTP) ? "SMTP" : t->smtputf8 ? "UTF8SMTP" : "ESMTP",
	    (c->flags & SMTP_F_TLS) ? "S" : "", (c->flags & SMTP_F_AUTHED) ? "A" : "");
	mbuf_init(&h, 4096);
	mbuf_printf(&h, "Received: from %s ([%s])\r\n\tby %s (mox) with %s id %llx", c->helo ? c->helo : "unknown",
	    c->ci->remote_ip, c->hostname, proto, (unsigned long long)c->ci->cid);
	/* One recipient only: naming several would tell each about the others. */
	if (t->nrcpts == 1)
		mbuf_printf(&h, "\r\n\tfor <%s>", t->rcpts[0].addr);
	if (mbuf_printf(&h, "; %s\r\n", date) < 0) {
		mbuf_clear(&h);
		snprintf(err, errlen, "received header too long");
		return -1;
	}
	r = maildir_writer_write(t->w, h.data, h.len, err, errlen);
	t->prefix_len = (uint32_t)h.len;
	mbuf_clear(&h);
	return r;
}

/* Open the spool file and write the Received header. 1, or -1 (logged). */
static int
begin_message(struct smtp_conn *c)
{
	struct smtp_txn *t = c->txn;
	char *dir = xasprintf("%s/tmp", smtp_cfg(c)->data_dir);
	char err[512];
	int r = -1;

	if (mkdir_p(dir, 0700) < 0) {
		log_error(SMTP_PKG, c->ci->cid, "cannot create spool directory", "dir", dir, "err", strerror(errno));
		goto out;
	}
	if (maildir_writer_open(&t->w, dir, c->hostname, err, sizeof(err)) < 0) {
		log_error(SMTP_PKG, c->ci->cid, "cannot create spool file", "err", err);
		goto out;
	}
	if (write_received(c, err, sizeof(err)) < 0) {
		log_error(SMTP_PKG, c->ci->cid, "writing spool file", "err", err);
		maildir_writer_free(&t->w);
		goto out;
	}
	t->want_header = smtp_deliver_want_header(c);
	mbuf_init(&t->header, SMTP_HEADER_CAPTURE_MAX);
	t->hdr_state = 2; /* as if after a CRLF: an empty header is a message starting with CRLF */
	t->size = 0;
	r = 1;
out:
	free(dir);
	return r;
}

/* Keep the header section (through the empty line) for rulesets. */
static void
capture_header(struct smtp_txn *t, const char *p, size_t n)
{
	size_t i;

	if (!t->want_header || t->header_done)
		return;
	for (i = 0; i < n && !t->header_done; i++) {
		char ch = p[i];
		if (ch == '\n')
			t->header_done = t->hdr_state >= 2;
		if (ch == '\r')
			t->hdr_state = t->hdr_state == 2 ? 3 : 1;
		else if (ch == '\n')
			t->hdr_state = 2;
		else
			t->hdr_state = 0;
	}
	if (mbuf_add(&t->header, p, i) < 0)
		t->header_done = true; /* over the cap: match on what we have */
}

static void
write_chunk(struct smtp_conn *c, const char *p, size_t n)
{
	struct smtp_txn *t = c->txn;
	char err[512];

	if (n == 0 || t->failed || t->w == NULL)
		return;
	capture_header(t, p, n);
	if (maildir_writer_write(t->w, p, n, err, sizeof(err)) < 0) {
		log_error(SMTP_PKG, c->ci->cid, "writing spool file", "err", err);
		t->failed = true;
	}
}

/* The message is in: refuse it or finish the spool file and deliver. */
static void
message_end(struct smtp_conn *c, bool bare)
{
	struct smtp_txn *t = c->txn;
	char err[512];

	smtp_message_timer(c, false);
	if (t->too_big) {
		log_info(SMTP_PKG, c->ci->cid, "message too large, refused", "remote", c->ci->remote_ip);
		smtp_txn_free(&c->txn);
		smtp_set_state(c, SMTP_ST_READY);
		smtp_reply(c, 552, "5.3.4", "message too large, limit is %llu bytes", (unsigned long long)max_size(c));
		return;
	}
	if (bare) {
		smtp_txn_free(&c->txn);
		smtp_set_state(c, SMTP_ST_READY);
		smtp_reply(c, 550, "5.6.0", "bare CR or LF in message, lines must end with CRLF (RFC 5321 2.3.8)");
		return;
	}
	if (!t->failed && maildir_writer_finish(t->w, MAILDIR_FINISH_NOSYNC, err, sizeof(err)) < 0) {
		log_error(SMTP_PKG, c->ci->cid, "finishing spool file", "err", err);
		t->failed = true;
	}
	if (t->failed) {
		smtp_txn_free(&c->txn);
		smtp_set_state(c, SMTP_ST_READY);
		smtp_reply(c, 451, "4.3.0", "error storing message, try again later");
		return;
	}
	smtp_deliver(c);
}

void
smtp_cmd_data(struct smtp_conn *c, struct smtp_cmd *cmd)
{
	struct smtp_txn *t = c->txn;

	if (t->bdat) {
		smtp_reply(c, 503, "5.5.1", "DATA not allowed after BDAT");
		smtp_error(c);
		return;
	}
	if (t->nrcpts == 0) {
		smtp_reply(c, 554, "5.5.1", "no valid recipients");
		smtp_error(c);
		return;
	}
	if (begin_message(c) < 0) {
		smtp_reply(c, 451, "4.3.0", "cannot store message now, try again later");
		return;
	}
	smtp_data_init(&t->data, SMTP_DATA_STRICT, max_size(c));
	smtp_set_state(c, SMTP_ST_DATA);
	smtp_message_timer(c, true);
	smtp_reply(c, 354, NULL, "end data with <CR><LF>.<CR><LF>");
}

void
smtp_cmd_bdat(struct smtp_conn *c, struct smtp_cmd *cmd)
{
	struct smtp_txn *t = c->txn;
	uint64_t size = cmd->bdat.size;

	/* Chunks that are only dropped count too: they hold the session as long. */
	smtp_message_timer(c, true);
	c->skip_code = 0;
	if (t == NULL)
		c->skip_code = 503;
	else if (t->nrcpts == 0)
		c->skip_code = 554;
	else if (size > max_size(c) || t->size + size > max_size(c))
		c->skip_code = 552;
	else if (!t->bdat && begin_message(c) < 0)
		c->skip_code = 451;
	if (c->skip_code != 0) {
		/* The chunk's bytes follow anyway: read and drop them, then answer. */
		c->skip_bytes = size;
		smtp_set_state(c, SMTP_ST_BDAT);
		return;
	}
	t->bdat = true;
	t->bdat_left = size;
	t->bdat_last = cmd->bdat.last;
	smtp_set_state(c, SMTP_ST_BDAT);
}

static void
skip_done(struct smtp_conn *c)
{
	int code = c->skip_code;

	c->skip_code = 0;
	if (c->txn == NULL || !c->txn->bdat || code == 552 || code == 451)
		smtp_message_timer(c, false); /* no message under way any more */
	if (code == 552 || code == 451) {
		smtp_txn_free(&c->txn);
		smtp_set_state(c, SMTP_ST_READY);
	} else {
		smtp_set_state(c, c->txn ? SMTP_ST_MAIL : (c->helo ? SMTP_ST_READY : SMTP_ST_INIT));
	}
	switch (code) {
	case 503:
		smtp_reply(c, 503, "5.5.1", "send MAIL first");
		break;
	case 554:
		smtp_reply(c, 554, "5.5.1", "no valid recipients");
		break;
	case 552:
		smtp_reply(c, 552, "5.3.4", "message too large, limit is %llu bytes", (unsigned long long)max_size(c));
		return;
	default:
		smtp_reply(c, 451, "4.3.0", "cannot store message now, try again later");
		return;
	}
	smtp_error(c);
}

static void
chunk_done(struct smtp_conn *c)
{
	struct smtp_txn *t = c->txn;

	if (!t->bdat_last) {
		smtp_set_state(c, SMTP_ST_RCPT);
		smtp_reply(c, 250, "2.0.0", "%llu octets received", (unsigned long long)t->size);
		return;
	}
	message_end(c, false);
}

bool
smtp_data_input(struct smtp_conn *c)
{
	struct evbuffer *in = bufferevent_get_input(c->bev);
	struct smtp_txn *t = c->txn;
	struct evbuffer_iovec v;

	if (c->state == SMTP_ST_BDAT && c->skip_code != 0) {
		size_t n = evbuffer_get_length(in);
		if (n > c->skip_bytes)
			n = (size_t)c->skip_bytes;
		evbuffer_drain(in, n);
		c->skip_bytes -= n;
		if (c->skip_bytes > 0)
			return false;
		skip_done(c);
		return true;
	}
	if (c->state == SMTP_ST_BDAT && t->bdat_left == 0) {
		chunk_done(c);
		return true;
	}
	if (evbuffer_peek(in, -1, NULL, &v, 1) < 1 || v.iov_len == 0)
		return false;
	if (c->state == SMTP_ST_BDAT) {
		size_t n = v.iov_len < t->bdat_left ? v.iov_len : (size_t)t->bdat_left;
		write_chunk(c, v.iov_base, n);
		t->size += n;
		t->bdat_left -= n;
		evbuffer_drain(in, n);
		if (t->bdat_left == 0)
			chunk_done(c);
		return true;
	}
	/* DATA: unstuff dots up to CRLF.CRLF. */
	size_t off = 0;
	const char *p = v.iov_base;
	while (off < v.iov_len && !t->data.done) {
		const char *chunk;
		size_t clen;
		off += smtp_data_parse(&t->data, p + off, v.iov_len - off, &chunk, &clen);
		write_chunk(c, chunk, clen);
	}
	evbuffer_drain(in, off);
	if (!t->data.done)
		return true;
	t->size = t->data.size;
	t->too_big = t->data.over_limit;
	message_end(c, (t->data.flags & (SMTP_DATA_BARE_LF | SMTP_DATA_BARE_CR)) != 0);
	return true;
}

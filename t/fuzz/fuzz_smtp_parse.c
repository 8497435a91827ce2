/*
 * Fuzz target for daemon/smtp_parse: frames the input into lines, parses
 * each as a command (checking that every returned slice lies in the line or
 * the scratch), formats the error replies, and runs the DATA reader over
 * the input in one piece and in fuzzer-chosen pieces, which must agree.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/smtp_parse.h"

static struct smtp_cmd cmd;

static void
check_str(struct smtp_str s, const char *line, size_t len)
{
	const char *lo = line, *hi = line + len;
	const char *slo = cmd.scratch, *shi = cmd.scratch + sizeof(cmd.scratch);

	if (s.p == NULL || s.len == 0)
		return;
	if (s.p >= lo && s.p + s.len <= hi)
		return;
	if (s.p >= slo && s.p + s.len <= shi)
		return;
	/* static strings: "<>" for AUTH=<>, "" for empty paths */
	if (s.len == 2 && memcmp(s.p, "<>", 2) == 0)
		return;
	abort();
}

static void
check_cmd(const char *line, size_t len)
{
	struct smtp_str all[] = {
		cmd.verb_text, cmd.arg, cmd.helo.domain, cmd.helo.ip,
		cmd.path.localpart, cmd.path.localpart_canon, cmd.path.domain,
		cmd.path.ip, cmd.mail.envid, cmd.mail.auth, cmd.rcpt.orcpt_type,
		cmd.rcpt.orcpt, cmd.auth.mech, cmd.auth.initial,
	};

	if (cmd.scratch_used > sizeof(cmd.scratch))
		abort();
	for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++)
		check_str(all[i], line, len);
}

static void
run_data(const uint8_t *data, size_t size, enum smtp_data_mode mode,
	 uint64_t max, size_t step, struct mbuf *out, struct smtp_data *d,
	 size_t *consumed_r)
{
	size_t off = 0;

	smtp_data_init(d, mode, max);
	while (off < size && !d->done) {
		size_t avail = size - off, pos = 0;

		if (step > 0 && avail > step)
			avail = step;
		while (pos < avail && !d->done) {
			const char *chunk;
			size_t clen, n;

			n = smtp_data_parse(d, (const char *)data + off + pos,
					    avail - pos, &chunk, &clen);
			if (n == 0 && clen == 0)
				abort();
			if (n > avail - pos)
				abort();
			if (clen > 0 && mbuf_add(out, chunk, clen) < 0)
				abort();
			pos += n;
		}
		off += pos;
	}
	*consumed_r = off;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct smtp_limits lim;
	struct smtp_line line;
	struct mbuf reply;
	size_t off = 0;
	unsigned sel = size > 0 ? data[0] : 0;

	smtp_limits_default(&lim);
	if (sel & 1) {
		lim.max_line = 64;
		lim.max_auth_line = 128;
	}
	mbuf_init(&reply, 1 << 16);
	while (off < size) {
		struct smtp_parse_opts opts = {
			(sel & 2) ? SMTP_EXT_ALL : SMTP_EXT_SIZE | SMTP_EXT_8BITMIME,
			(sel & 4) != 0,
		};
		int r = smtp_line_find((const char *)data + off, size - off, &lim,
				       (sel & 8) != 0, &line);

		if (r == SMTP_LINE_NEED_MORE) {
			/* a final line without line end: parse it anyway */
			smtp_cmd_parse((const char *)data + off, size - off, &opts, &cmd);
			check_cmd((const char *)data + off, size - off);
			break;
		}
		if (r == SMTP_LINE_TOO_LONG) {
			if (line.skip == 0 || line.skip > size - off)
				abort();
			smtp_cmd_set_too_long(&cmd);
			off += line.skip;
			continue;
		}
		if ((size_t)r > size - off)
			abort();
		if (smtp_cmd_parse(line.text.p, line.text.len, &opts, &cmd) < 0) {
			if (cmd.code < 500 || cmd.code > 555 || cmd.ecode == NULL)
				abort();
			mbuf_reset(&reply);
			if (smtp_reply_cmd_error(&reply, &cmd, "(cid 1)") <= 0)
				abort();
			for (size_t i = 0; i + 1 < reply.len; i++)
				if (reply.data[i] == '\r' && i + 2 != reply.len)
					abort();
		} else if (cmd.verb == SMTP_VERB_UNKNOWN) {
			abort();
		}
		check_cmd(line.text.p, line.text.len);
		if (smtp_auth_response_check(line.text.p, line.text.len) > 1)
			abort();
		off += (size_t)r;
	}
	mbuf_clear(&reply);

	/* DATA: one piece vs pieces of a size chosen by the input */
	{
		enum smtp_data_mode mode = (enum smtp_data_mode)((sel >> 4) % 3);
		uint64_t max = (sel & 0x40) ? (uint64_t)(size / 2) : 0;
		size_t step = size > 1 ? (size_t)data[size - 1] % 17 + 1 : 1;
		struct mbuf a, b;
		struct smtp_data da, db;
		size_t ca, cb;

		mbuf_init(&a, 1 << 22);
		mbuf_init(&b, 1 << 22);
		run_data(data, size, mode, max, 0, &a, &da, &ca);
		run_data(data, size, mode, max, step, &b, &db, &cb);
		if (a.len != b.len || (a.len > 0 && memcmp(a.data, b.data, a.len) != 0) ||
		    ca != cb || da.done != db.done || da.flags != db.flags ||
		    da.size != db.size || da.over_limit != db.over_limit)
			abort();
		if (max > 0 && a.len > max)
			abort();
		if (max == 0 && a.len != da.size)
			abort();
		mbuf_clear(&a);
		mbuf_clear(&b);
	}
	return 0;
}

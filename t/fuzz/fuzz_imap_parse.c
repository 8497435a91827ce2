/*
 * Fuzz target for daemon/imap_parse: drives the command parser over a stream
 * of commands as the server would (whole and in small steps, which must
 * agree), walks every argument with the accessors, and checks that modified
 * UTF-7 decoding is canonical (decode then encode gives the input back) and
 * that quoting output parses back to the same string.
 * First input byte: bit 0 UTF-8 on, bit 1 APPEND literals external,
 * bits 2-4 step size - 1, bit 5 small limits.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/imap_parse.h"

static void
check_utf7(const char *s, size_t len)
{
	struct mbuf dec, enc;
	const char *err;

	mbuf_init(&dec, 1 << 20);
	mbuf_init(&enc, 1 << 20);
	if (imap_utf7_decode(s, len, &dec, &err) == 1) {
		if (imap_utf7_encode(dec.data != NULL ? dec.data : "", dec.len, &enc) != 1)
			abort();
		if (enc.len != len || memcmp(enc.data != NULL ? enc.data : "", s, len) != 0)
			abort();
	}
	mbuf_reset(&enc);
	mbuf_reset(&dec);
	if (imap_utf7_encode(s, len, &enc) == 1) {
		if (imap_utf7_decode(enc.data != NULL ? enc.data : "", enc.len, &dec, &err) != 1)
			abort();
		if (dec.len != len || memcmp(dec.data != NULL ? dec.data : "", s, len) != 0)
			abort();
	}
	mbuf_clear(&dec);
	mbuf_clear(&enc);
}

static void walk(struct mbuf *out, const struct imap_arg *a, int depth);

static void
visit(struct mbuf *out, const struct imap_arg *g)
{
	struct imap_seqset set;
	const char *err;

	mbuf_printf(out, "<%d:%zu:", (int)g->type, g->len);
	if (g->str != NULL)
		mbuf_add(out, g->str, g->len);
	if (g->type == IMAP_ARG_ATOM || g->type == IMAP_ARG_QUOTED) {
		if (imap_seqset_parse(g->str, g->len, 1000, &set, &err) == 1) {
			imap_seqset_contains(&set, 5, 10);
			imap_seqset_normalize(&set, 10);
			for (size_t i = 1; i < set.n; i++)
				if (set.ranges[i].first <= set.ranges[i - 1].last)
					abort();
			(void)imap_seqset_count(&set);
		}
		imap_seqset_clear(&set);
		check_utf7(g->str, g->len);
	}
	if (g->section != NULL) {
		mbuf_adds(out, "[");
		walk(out, g->section->list, 1);
		mbuf_adds(out, "]");
	}
	mbuf_adds(out, ">");
}

static void
walk(struct mbuf *out, const struct imap_arg *a, int depth)
{
	struct imap_args args;
	const struct imap_arg *g;

	if (depth > 300)
		abort();
	imap_args_init(&args, a);
	while (imap_args_peek(&args) != NULL) {
		struct imap_args sub = args;
		struct mbuf mb;
		const char *s;
		size_t len;
		uint32_t n;
		uint64_t n64;
		struct imap_seqset set;

		mbuf_init(&mb, 4096);
		(void)imap_args_astring(&sub, &s, &len);
		sub = args;
		(void)imap_args_nstring(&sub, &s, &len);
		sub = args;
		(void)imap_args_number(&sub, &n);
		sub = args;
		(void)imap_args_nz_number(&sub, &n);
		sub = args;
		(void)imap_args_number64(&sub, &n64);
		sub = args;
		(void)imap_args_mailbox(&sub, false, &mb);
		sub = args;
		(void)imap_args_mailbox(&sub, true, &mb);
		sub = args;
		if (imap_args_seqset(&sub, &set) == 1)
			imap_seqset_clear(&set);
		mbuf_clear(&mb);
		if (imap_args_any(&args, &g) != 1)
			abort();
		if (g->type == IMAP_ARG_LIST) {
			mbuf_adds(out, "(");
			walk(out, g->list, depth + 1);
			mbuf_adds(out, ")");
		} else {
			visit(out, g);
		}
	}
	(void)imap_args_end(&args);
}

/* Run all commands in data; append a transcript to out. */
static void
drive(const uint8_t *data, size_t len, size_t step, unsigned flags, struct mbuf *out)
{
	struct imap_parse_limits lim;
	struct imap_parser *p;
	size_t off = 0, avail = step < len ? step : len;

	imap_parse_limits_default(&lim);
	if (flags & 0x20) {
		lim.max_line = 200;
		lim.max_literals = 3;
		lim.max_literal = 20;
		lim.max_literal_total = 30;
		lim.max_depth = 4;
		lim.max_args = 30;
		lim.max_command = 400;
	}
	p = imap_parse_new(&lim);
	imap_parse_set_utf8(p, flags & 1);
	for (int guard = 0; guard < 1000000; guard++) {
		enum imap_parse_state st = imap_parse_state(p);
		const char *in = (const char *)data + off;
		int64_t r;

		if (st == IMAP_PARSE_ST_FATAL) {
			mbuf_adds(out, "FATAL\n");
			break;
		}
		if (st == IMAP_PARSE_ST_DONE || st == IMAP_PARSE_ST_FAILED) {
			const struct imap_command *c = imap_parse_command(p);

			if (c != NULL) {
				mbuf_printf(out, "%s %s ", c->tag, c->name);
				walk(out, c->args, 0);
			}
			mbuf_adds(out, st == IMAP_PARSE_ST_DONE ? "DONE\n" : "FAILED\n");
			imap_parse_reset(p);
			continue;
		}
		if (st == IMAP_PARSE_ST_LINE) {
			r = imap_parse_fragment(p, in, avail - off);
			if (r < 0) {
				if (r == IMAP_PARSE_ERR_STATE)
					abort();
				mbuf_printf(out, "ERR %d %s\n", (int)r, imap_parse_error(p));
				continue;
			}
			if (r == 0) {
				if (avail == len)
					break;
				avail = avail + step < len ? avail + step : len;
				continue;
			}
			off += (size_t)r;
			if (imap_parse_state(p) == IMAP_PARSE_ST_LITERAL && !imap_parse_failed(p)) {
				const char *name = imap_parse_name(p);

				r = imap_parse_literal_begin(p, (flags & 2) && name != NULL &&
				    strcmp(name, "APPEND") == 0);
				if (r < 0)
					mbuf_printf(out, "ERR %d %s\n", (int)r, imap_parse_error(p));
			}
			continue;
		}
		{
			const struct imap_command *c = imap_parse_command(p);
			struct imap_literal_info li;

			if (imap_parse_literal_info(p, &li) != 1)
				abort();
			if (c != NULL && (flags & 2) && strcmp(c->name, "APPEND") == 0)
				r = imap_parse_literal_external(p, avail - off);
			else
				r = imap_parse_literal(p, in, avail - off);
			if (r < 0) {
				if (r == IMAP_PARSE_ERR_STATE)
					abort();
				mbuf_printf(out, "ERR %d %s\n", (int)r, imap_parse_error(p));
				continue;
			}
			off += (size_t)r;
			if (imap_parse_state(p) == IMAP_PARSE_ST_LITERAL && off == avail) {
				if (avail == len)
					break;
				avail = avail + step < len ? avail + step : len;
			}
		}
	}
	mbuf_printf(out, "END %zu\n", off);
	imap_parse_free(&p);
}

/* imap_quote output must parse back to the same astring. */
static void
check_quote(const uint8_t *data, size_t len)
{
	struct mbuf b, out;
	struct imap_parser *p;
	int64_t r;
	size_t off = 0;
	const struct imap_command *c;
	struct imap_args a;
	const struct imap_arg *g;

	if (len > 2000)
		return;
	mbuf_init(&b, 1 << 16);
	mbuf_init(&out, 1 << 16);
	mbuf_adds(&b, "t X ");
	imap_quote(&b, (const char *)data, len, IMAP_QUOTE_ATOM | IMAP_QUOTE_UTF8);
	mbuf_adds(&b, "\r\n");
	p = imap_parse_new(NULL);
	imap_parse_set_utf8(p, true);
	while (imap_parse_state(p) == IMAP_PARSE_ST_LINE ||
	    imap_parse_state(p) == IMAP_PARSE_ST_LITERAL) {
		if (imap_parse_state(p) == IMAP_PARSE_ST_LINE)
			r = imap_parse_fragment(p, b.data + off, b.len - off);
		else
			r = imap_parse_literal(p, b.data + off, b.len - off);
		if (r <= 0 && !(r == 0 && imap_parse_state(p) != IMAP_PARSE_ST_LITERAL))
			abort();
		off += (size_t)r;
	}
	c = imap_parse_command(p);
	if (c == NULL || off != b.len)
		abort();
	imap_args_init(&a, c->args);
	if (imap_args_any(&a, &g) != 1 || g->len != len ||
	    (len > 0 && memcmp(g->str, data, len) != 0) || imap_args_end(&a) != 1)
		abort();
	imap_parse_free(&p);
	mbuf_clear(&b);
	mbuf_clear(&out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct mbuf t1, t2;
	unsigned flags;
	size_t step;

	if (size < 1)
		return 0;
	flags = data[0];
	step = ((flags >> 2) & 7) + 1;
	data++;
	size--;
	mbuf_init(&t1, 1 << 24);
	mbuf_init(&t2, 1 << 24);
	drive(data, size, size == 0 ? 1 : size, flags, &t1);
	drive(data, size, step, flags, &t2);
	if (t1.len != t2.len || (t1.len > 0 && memcmp(t1.data, t2.data, t1.len) != 0))
		abort();
	mbuf_clear(&t1);
	mbuf_clear(&t2);
	check_utf7((const char *)data, size);
	check_quote(data, size);
	return 0;
}

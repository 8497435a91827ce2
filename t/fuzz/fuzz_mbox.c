/* libFuzzer target for index/mbox.c: reading in one piece and in two pieces
 * gives the same result; quoting then reading gives the message back. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "index/tools.h"

struct out {
	char *p;
	size_t n, cap;
};

static void put(struct out *o, const char *p, size_t n)
{
	if (o->n + n + 1 > o->cap) {
		o->cap = (o->n + n + 1) * 2;
		o->p = realloc(o->p, o->cap);
		if (o->p == NULL)
			abort();
	}
	memcpy(o->p + o->n, p, n);
	o->n += n;
}

static void s_start(void *arg, const char *line, size_t len)
{
	put(arg, "\x01", 1);
	put(arg, line, len);
	put(arg, "\x02", 1);
}
static void s_data(void *arg, const char *p, size_t n)
{
	put(arg, p, n);
}
static void s_end(void *arg)
{
	put(arg, "\x03", 1);
}
static void q_emit(void *arg, const char *p, size_t n)
{
	put(arg, p, n);
}

static const struct mbox_sink sink = { s_start, s_data, s_end };

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct mbox_parser p;
	struct mbox_quoter q;
	struct out a = { 0 }, b = { 0 }, file = { 0 }, back = { 0 };
	size_t cut = size ? data[0] % (size + 1) : 0;

	mbox_parser_init(&p);
	mbox_parse(&p, (const char *)data, size, &sink, &a);
	mbox_parse_finish(&p, &sink, &a);
	mbox_parser_init(&p);
	mbox_parse(&p, (const char *)data, cut, &sink, &b);
	mbox_parse(&p, (const char *)data + cut, size - cut, &sink, &b);
	mbox_parse_finish(&p, &sink, &b);
	if (a.n != b.n || (a.n && memcmp(a.p, b.p, a.n) != 0))
		abort();
	(void)mbox_fromline_time((const char *)data, size);

	/* Quote the input as one message (no CR: quoting drops CR before LF). */
	if (memchr(data, '\r', size) == NULL && size > 0 && data[size - 1] == '\n') {
		put(&file, "From x\n", 7);
		mbox_quoter_init(&q);
		mbox_quote(&q, (const char *)data, size, q_emit, &file);
		mbox_quote_finish(&q, q_emit, &file);
		put(&file, "\n", 1);
		mbox_parser_init(&p);
		mbox_parse(&p, file.p, file.n, &sink, &back);
		mbox_parse_finish(&p, &sink, &back);
		if (p.messages != 1 || back.n != size + 9 || memcmp(back.p + 8, data, size) != 0)
			abort();
	}
	free(a.p);
	free(b.p);
	free(file.p);
	free(back.p);
	return 0;
}

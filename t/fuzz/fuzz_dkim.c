/*
 * Fuzz target for daemon/dkim's pure parts: the input is a message. Its
 * header section is collected whole and in fuzzer-chosen pieces (which
 * must agree), every field is canonicalized both ways, every
 * DKIM-Signature is parsed (slices must stay in the field) and, when it
 * parses, its signed header data is built and checked against a fixed
 * Ed25519 key; the input is also parsed as a key record; the body is hashed
 * whole and byte by byte (hashes and lengths must agree) with the relaxed
 * output checked for whitespace it must not hold.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/dkim.h"

static const char keytxt[] = "v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=";

static void
check_slice(struct dkim_str s, const char *lo, size_t len)
{
	if (s.len == 0)
		return;
	if (s.p < lo || s.p + s.len > lo + len)
		abort();
}

static void
check_sig(const struct dkim_sig *sig, const char *v, size_t len)
{
	check_slice(sig->algo_text, v, len);
	check_slice(sig->d, v, len);
	check_slice(sig->s, v, len);
	check_slice(sig->i, v, len);
	check_slice(sig->z, v, len);
	check_slice(sig->b_value, v, len);
	if (sig->nh > DKIM_MAX_H || sig->b_len > DKIM_MAX_SIG || sig->bh_len > DKIM_HASH_LEN)
		abort();
	for (size_t k = 0; k < sig->nh; k++)
		check_slice(sig->h[k], v, len);
}

static void
fuzz_hdrs(const char *p, size_t n, unsigned step, struct dkim_hdrs *whole, size_t *body_r)
{
	struct dkim_hdrs h;
	ssize_t r1, r2 = 0;
	size_t off = 0;

	dkim_hdrs_init(whole, 1 << 16, 200);
	r1 = dkim_hdrs_feed(whole, p, n);
	if (r1 == 0)
		dkim_hdrs_finish(whole);
	*body_r = r1 > 0 ? (size_t)r1 : n;

	dkim_hdrs_init(&h, 1 << 16, 200);
	while (off < n) {
		size_t k = n - off < step ? n - off : step;
		r2 = dkim_hdrs_feed(&h, p + off, k);
		if (r2 < 0)
			break;
		if (r2 > 0) {
			r2 += (ssize_t)off;
			break;
		}
		off += k;
	}
	if (r2 == 0)
		dkim_hdrs_finish(&h);
	if ((r1 < 0) != (r2 < 0) || (r1 > 0 && r1 != r2))
		abort();
	if (r1 >= 0) {
		if (h.nfields != whole->nfields || h.raw.len != whole->raw.len)
			abort();
		if (h.nfields > 0 && memcmp(h.fields, whole->fields, h.nfields * sizeof(*h.fields)) != 0)
			abort();
	}
	dkim_hdrs_clear(&h);
}

static void
fuzz_body(const char *p, size_t n, enum dkim_canon c, int64_t l)
{
	struct dkim_body a, b;
	struct mbuf copy;
	uint8_t ha[DKIM_HASH_LEN], hb[DKIM_HASH_LEN];
	uint64_t la, lb;

	if (dkim_body_init(&a, c, l) < 0 || dkim_body_init(&b, c, l) < 0)
		abort();
	mbuf_init(&copy, 1 << 20);
	a.copy = &copy;
	dkim_body_update(&a, p, n);
	for (size_t i = 0; i < n; i++)
		dkim_body_update(&b, p + i, 1);
	if (dkim_body_final(&a, ha, &la) < 0 || dkim_body_final(&b, hb, &lb) < 0)
		abort();
	if (la != lb || memcmp(ha, hb, sizeof(ha)) != 0)
		abort();
	if (copy.len != la)
		abort();
	if (l >= 0 && a.hashed != (la < (uint64_t)l ? la : (uint64_t)l))
		abort();
	/* the canonical body ends in CRLF (or is empty for relaxed) */
	if (la > 0 && (la < 2 || memcmp(copy.data + la - 2, "\r\n", 2) != 0))
		abort();
	if (c == DKIM_CANON_SIMPLE && la == 0)
		abort();
	if (c == DKIM_CANON_RELAXED) {
		for (size_t i = 0; i + 1 < copy.len; i++) {
			char x = copy.data[i], y = copy.data[i + 1];
			if ((x == ' ' || x == '\t') && (y == ' ' || y == '\t'))
				abort();
			if (x == ' ' && y == '\r' && i + 2 < copy.len && copy.data[i + 2] == '\n')
				abort();
			if (x == '\t')
				abort();
		}
		if (la >= 4 && memcmp(copy.data + la - 4, "\r\n\r\n", 4) == 0)
			abort();
	}
	dkim_body_clear(&a);
	dkim_body_clear(&b);
	mbuf_clear(&copy);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct dkim_sig sig;
	static struct dkim_key key, fixed;
	const char *p = (const char *)data, *err;
	unsigned sel = size > 0 ? data[0] : 0;
	struct dkim_hdrs h;
	struct mbuf out;
	size_t body;
	uint8_t bh[DKIM_HASH_LEN];
	uint64_t clen;

	if (size > 0) {
		p++;
		size--;
	}
	err = NULL;
	if (dkim_key_parse(p, size, &key, &err) < 0 && err == NULL)
		abort();
	if (dkim_sig_parse(p, size, &sig, &err) > 0)
		check_sig(&sig, p, size);
	if (dkim_key_parse(keytxt, sizeof(keytxt) - 1, &fixed, &err) < 0)
		abort();

	fuzz_hdrs(p, size, (sel & 15) + 1, &h, &body);
	mbuf_init(&out, 1 << 20);
	for (size_t k = 0; k < h.nfields; k++) {
		const char *f = dkim_hdrs_field(&h, k);
		size_t vo = h.fields[k].name_len;

		mbuf_reset(&out);
		if (dkim_canon_header(DKIM_CANON_SIMPLE, f, h.fields[k].len, &out) < 0 || out.len != h.fields[k].len)
			abort();
		mbuf_reset(&out);
		(void)dkim_canon_header(DKIM_CANON_RELAXED, f, h.fields[k].len, &out);
		if (!dkim_hdrs_is(&h, k, "DKIM-Signature", 14))
			continue;
		while (f[vo] != ':')
			vo++;
		vo++;
		if (dkim_sig_parse(f + vo, h.fields[k].len - vo, &sig, &err) < 0)
			continue;
		check_sig(&sig, f + vo, h.fields[k].len - vo);
		mbuf_reset(&out);
		if (dkim_header_data(&h, k, &sig, &out) < 0)
			continue;
		{
			struct dkim_body b;
			const char *reason;
			if (dkim_body_init(&b, sig.bcanon, sig.has_l && sig.l < (1ull << 62) ? (int64_t)sig.l : -1) < 0)
				abort();
			dkim_body_update(&b, p + body, size - body);
			if (dkim_body_final(&b, bh, &clen) < 0)
				abort();
			dkim_body_clear(&b);
			(void)dkim_check(&sig, &fixed, out.data, out.len, bh, clen, 0, &reason, NULL);
			(void)dkim_check(&sig, &key, out.data, out.len, bh, clen, 0, &reason, NULL);
		}
	}
	mbuf_clear(&out);
	fuzz_body(p + body, size - body, DKIM_CANON_SIMPLE, -1);
	fuzz_body(p + body, size - body, DKIM_CANON_RELAXED, (sel & 0x80) ? (int64_t)(sel & 0x7f) : -1);
	dkim_hdrs_clear(&h);
	return 0;
}

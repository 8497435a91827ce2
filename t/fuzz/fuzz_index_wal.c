/*
 * libFuzzer target: the delivery log's entry decoder (index/wal.c,
 * wal_entry_parse and wal_target_next), which the replay at open runs over
 * whatever a crash left in index.wal.
 *
 * Input: salt (8 bytes, big endian), then seq (8 bytes; its top bit is the
 * mode), then the bytes at the entry's offset. In mode 1 the target makes
 * the entry pass the first checks (magic, salt, seq, a total that fits, the
 * CRC computed and patched in) so that the fuzzer reaches the decoder of
 * the targets behind them.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "index/index_private.h"

#define ENT_HDR 48

static void check_entry(const uint8_t *p, size_t avail, uint64_t salt, uint64_t seq)
{
	struct wal_entry e, e2;
	size_t off = 0;

	if (wal_entry_parse(p, avail, salt, seq, &e) <= 0)
		return;
	if (e.total > avail || e.total % 8 != 0 || e.total < ENT_HDR || e.body != p + ENT_HDR ||
	    e.body_len != e.total - ENT_HDR || e.content_len > e.body_len || e.seq != seq)
		abort();
	/* The same entry with nothing after it. */
	if (wal_entry_parse(p, e.total, salt, seq, &e2) <= 0 || e2.total != e.total)
		abort();
	if (e.type != 1)
		return;
	for (uint32_t i = 0; i < e.ntargets; i++) {
		struct wal_target_dec t;
		size_t before = off;
		int r = wal_target_next(&e, &off, &t);

		if (r < 0) {
			if (t.name != NULL || t.keywords != NULL || off != before)
				abort();
			break;
		}
		if (r == 0 || off <= before || off > e.body_len || t.name == NULL || t.name[0] == '\0' ||
		    strlen(t.name) >= IDX_PATH_MAX)
			abort();
		for (size_t k = 0; k < t.nkeywords; k++)
			if (t.keywords[k] == NULL || t.keywords[k][0] == '\0')
				abort();
		wal_target_clear(&t);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint64_t salt, seq;
	size_t n;
	uint8_t *p;

	if (size < 16)
		return 0;
	salt = be64_get(data);
	seq = be64_get(data + 8);
	n = size - 16;
	/* An exact-size copy: a read past the entry's bytes is caught. */
	p = malloc(n ? n : 1);
	if (p == NULL)
		abort();
	memcpy(p, data + 16, n);
	if (seq >> 63) {
		seq &= ~(1ull << 63);
		if (n >= ENT_HDR) {
			uint32_t total = be32_get(p + 24);

			be32_put(p, 0x4d58574cu);
			be64_put(p + 8, salt);
			be64_put(p + 16, seq);
			if (total < ENT_HDR || total > n || total % 8 != 0)
				total = (uint32_t)(n & ~(size_t)7);
			be32_put(p + 24, total);
			be32_put(p + 4, wal_crc32c(p + 8, total - 8));
		}
	}
	check_entry(p, n, salt, seq);
	free(p);
	return 0;
}

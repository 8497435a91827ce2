/* libFuzzer target for index/mime: parse, write IMAP syntax, encode the cache
 * record and decode it again; also feed the raw input to the cache decoder,
 * the address, date, RFC 2047 and base-subject parsers. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "index/mime.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *s = (const char *)data;
	struct mime_limits lim;
	mime_limits_init(&lim);
	lim.max_depth = 20;
	lim.max_parts = 500;
	lim.max_header = 4096;

	struct mime_msg *m = NULL, *d = NULL;
	mime_parse(s, size, &lim, &m);
	TCXSTR *o = tcxstrnew();
	mime_imap_bodystructure(&m->root, true, 0, o);
	mime_imap_bodystructure(&m->root, false, MIME_IMAP_UTF8, o);
	mime_imap_envelope(&m->env, 0, o);
	tcxstrclear(o);
	mime_cache_encode(m, o);
	if (mime_cache_decode(TCXSTRPTR(o), (size_t)TCXSTRSIZE(o), &lim, &d, NULL) != 1)
		__builtin_trap(); /* our own encoding must always decode */
	mime_msg_free(&d);
	mime_msg_free(&m);

	/* the same bytes as a (corrupt) cache record */
	if (mime_cache_decode(data, size, &lim, &d, NULL) == 1) {
		tcxstrclear(o);
		mime_imap_bodystructure(&d->root, true, 0, o);
		mime_imap_envelope(&d->env, 0, o);
		mime_msg_free(&d);
	}

	size_t n = size < 4096 ? size : 4096;
	TCMPOOL *pool = tcmpoolnew();
	struct mime_addrlist l;
	mime_addr_parse(s, n, pool, &l);
	tcmpooldel(pool);
	(void)mime_parse_date(s, n);
	tcxstrclear(o);
	mime_decode_2047(s, n, o);
	tcxstrclear(o);
	mime_base_subject(s, n, o);
	tcxstrdel(o);
	return 0;
}

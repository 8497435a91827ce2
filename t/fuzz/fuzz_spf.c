/*
 * Fuzz the SPF record parser and the macro expander. The first byte picks
 * what the rest is: a record, a domain-spec/explanation macro-string.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/spf.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct spf_record r;
	struct spf_limits lim;
	struct spf_macro_vars v;
	struct mbuf b;
	char err[256];
	char *copy;

	if (size < 1)
		return 0;
	/* An exact-size copy so reads past the end are caught. */
	copy = malloc(size - 1 ? size - 1 : 1);
	memcpy(copy, data + 1, size - 1);
	spf_limits_default(&lim);
	if (data[0] & 1) {
		(void)spf_parse(copy, size - 1, &lim, &r, err, sizeof(err));
	} else {
		memset(&v, 0, sizeof(v));
		v.s = "strong-bad@email.example.com";
		v.l = "strong-bad";
		v.o = "email.example.com";
		v.d = "a.b.c.d-e.f_g.example.com";
		v.i = "192.0.2.3";
		v.v = "in-addr";
		v.h = "mx.example.org";
		v.c = "192.0.2.3";
		v.t = 1;
		mbuf_init(&b, 2048);
		if (spf_macro_expand(copy, size - 1, &v, data[0] & 2, &b, err, sizeof(err)) > 0 &&
		    b.len < 400) {
			char name[512];

			memcpy(name, b.len ? b.data : "", b.len);
			name[b.len] = '\0';
			(void)spf_domain_truncate(name);
		}
		mbuf_clear(&b);
	}
	free(copy);
	return 0;
}

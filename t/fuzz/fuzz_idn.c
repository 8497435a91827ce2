/* libFuzzer target for daemon/idn.c: never crashes; a canonical name is ASCII
 * [a-z0-9_-.], within the limits, and canonical again (idempotent). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/idn.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char out[IDN_BUFSIZE], again[IDN_BUFSIZE], err[256];
	int n = idn_domain_canon((const char *)data, size, out, sizeof(out), err, sizeof(err));

	if (n < 0)
		return 0;
	if ((size_t)n != strlen(out) || n > IDN_NAME_MAX)
		abort();
	for (int i = 0; i < n; i++) {
		char ch = out[i];
		if (!((ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '-' || ch == '_' || ch == '.'))
			abort();
	}
	int m = idn_domain_canon(out, (size_t)n, again, sizeof(again), err, sizeof(err));
	if (m != n || strcmp(out, again) != 0)
		abort();
	return 0;
}

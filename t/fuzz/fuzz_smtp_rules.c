/* libFuzzer target: the header field parser of daemon/smtp_rules. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "daemon/smtp_rules.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct smtp_hfield *h;
	size_t n = smtp_hfields_parse((const char *)data, size, &h);

	if (n > SMTP_RULES_MAX_FIELDS)
		__builtin_trap();
	for (size_t i = 0; i < n; i++) {
		/* names hold no ':' and values no line ends */
		if (strchr(h[i].name, ':') != NULL || strchr(h[i].value, '\n') != NULL || strchr(h[i].value, '\r') != NULL)
			__builtin_trap();
	}
	smtp_hfields_free(&h, n);
	return 0;
}

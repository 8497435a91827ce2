/*
 * Fuzz daemon/dns's answer-packet parser. The first byte picks the record
 * type (A, AAAA, MX, TXT, PTR by its low 7 bits mod 5) and, by its top bit,
 * small limits instead of the defaults; the rest is the packet. Checked:
 * the rcode helper, that a failure leaves no answers, that counts stay in
 * the limits, that addresses match the type, that every string is
 * NUL-terminated within its length, and that names hold only what the
 * presentation form allows.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <sys/socket.h>

#include "daemon/dns.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const int types[] = {DNS_T_A, DNS_T_AAAA, DNS_T_MX, DNS_T_TXT, DNS_T_PTR};

/* A presentation name: at most 255 wire bytes, each at most "\DDD", plus dots. */
static void
check_name(const char *s)
{
	size_t len = strlen(s);

	if (len > 4 * 255)
		abort();
	for (size_t i = 0; i < len; i++) {
		char c = s[i];

		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '-' || c == '_' || c == '.' || c == '\\'))
			abort();
	}
	if (len > 0 && (s[0] == '.' || s[len - 1] == '.'))
		abort();
}

static void
check_result(const struct dns_result *r, int rrtype, const struct dns_limits *lim, size_t size)
{
	size_t n = r->ntxt + r->naddr + r->nmx + r->nptr;

	if (r->rrtype != rrtype || (r->status != DNS_OK && r->status != DNS_NODATA))
		abort();
	if (n > lim->max_answers || (n > 0 && r->status != DNS_OK))
		abort();
	if (r->status == DNS_NODATA && (r->ttl != 0 || r->truncated))
		abort();
	if ((rrtype != DNS_T_TXT && r->ntxt) || (rrtype != DNS_T_MX && r->nmx) ||
	    (rrtype != DNS_T_PTR && r->nptr) ||
	    (rrtype != DNS_T_A && rrtype != DNS_T_AAAA && r->naddr))
		abort();
	for (size_t i = 0; i < r->naddr; i++)
		if (r->addr[i].family != (rrtype == DNS_T_A ? AF_INET : AF_INET6))
			abort();
	for (size_t i = 0; i < r->ntxt; i++) {
		/* len bytes (maybe with NULs) then a NUL, all inside the block. */
		if (r->txt[i].len > lim->max_txt || r->txt[i].len > size || r->txt[i].data[r->txt[i].len] != '\0' ||
		    strlen(r->txt[i].data) > r->txt[i].len)
			abort();
	}
	for (size_t i = 0; i < r->nmx; i++)
		check_name(r->mx[i].host);
	for (size_t i = 0; i < r->nptr; i++)
		check_name(r->ptr[i]);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct dns_limits lim;
	struct dns_result r;
	unsigned char *pkt;
	char err[128];
	int rrtype, rc, rcode;

	if (size < 1)
		return 0;
	rrtype = types[(data[0] & 0x7f) % 5];
	dns_limits_default(&lim);
	if (data[0] & 0x80) {
		lim.max_answers = 2;
		lim.max_txt = 8;
	}
	size--;
	/* An exact-size copy so reads past the end are caught. */
	pkt = malloc(size ? size : 1);
	memcpy(pkt, data + 1, size);

	rcode = dns_answer_rcode(pkt, size);
	if ((size < 12) != (rcode < 0) || rcode > 15)
		abort();
	memset(&r, 0xa5, sizeof(r)); /* the parser must not read what it was given */
	err[0] = '\0';
	rc = dns_parse_answer(pkt, size, rrtype, &lim, &r, err, sizeof(err));
	if (rc == 1) {
		check_result(&r, rrtype, &lim, size);
	} else if (rc == -1) {
		if (err[0] == '\0' || strlen(err) >= sizeof(err) || r.rrtype != rrtype || r.txt != NULL ||
		    r.addr != NULL || r.mx != NULL || r.ptr != NULL ||
		    r.ntxt + r.naddr + r.nmx + r.nptr != 0)
			abort();
	} else {
		abort();
	}
	dns_result_clear(&r);
	if (r.txt != NULL || r.addr != NULL || r.mx != NULL || r.ptr != NULL || r.status != 0)
		abort();
	/* The same bytes parse the same way, also without an error buffer. */
	if (dns_parse_answer(pkt, size, rrtype, &lim, &r, NULL, 0) != rc)
		abort();
	dns_result_clear(&r);
	free(pkt);
	return 0;
}

/*
 * spf: Sender Policy Framework (RFC 7208).
 * Owns: the record parser and the macro expander (pure functions over a
 * whole TXT record: no I/O, no allocation, no logging), and check_host():
 * an asynchronous evaluator over dns.h with the RFC's limits (10 terms
 * that query DNS, 2 void lookups, 10 MX/PTR names).
 * Does not: decide what a result means for delivery, write headers, or
 * cache results. The record is whole when parsed (one TXT RR, its strings
 * joined), so the parser needs no resumption.
 */
#ifndef MOX_SPF_H
#define MOX_SPF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "daemon/util.h"

struct dns;

enum spf_result {
	SPF_NONE = 0,
	SPF_NEUTRAL,
	SPF_PASS,
	SPF_FAIL,
	SPF_SOFTFAIL,
	SPF_TEMPERROR,
	SPF_PERMERROR,
};

/* "none", "neutral", "pass", "fail", "softfail", "temperror", "permerror". */
const char *spf_result_name(enum spf_result r);

/* ------------------------------------------------------------------ */
/* Parser                                                              */

struct spf_str {
	const char *p; /* NULL when absent; points into the parsed record */
	size_t len;
};

enum spf_mech_type {
	SPF_MECH_ALL = 1,
	SPF_MECH_INCLUDE,
	SPF_MECH_A,
	SPF_MECH_MX,
	SPF_MECH_PTR,
	SPF_MECH_IP4,
	SPF_MECH_IP6,
	SPF_MECH_EXISTS,
};

/* Hard ceiling of directives in one record (spf_limits.max_terms <= this). */
#define SPF_MAX_TERMS 64

struct spf_mech {
	enum spf_mech_type type;
	enum spf_result qual;  /* SPF_PASS (+, default), SPF_FAIL (-), SPF_SOFTFAIL (~), SPF_NEUTRAL (?) */
	struct spf_str term;   /* the directive as written, for logs and headers */
	struct spf_str domain; /* unexpanded domain-spec; p NULL when absent */
	int cidr4;             /* a, mx, ip4: prefix length, 32 when absent */
	int cidr6;             /* a, mx, ip6: prefix length, 128 when absent */
	uint8_t ip[16];        /* ip4 (first 4 bytes) and ip6 networks */
};

struct spf_record {
	struct spf_mech mech[SPF_MAX_TERMS];
	size_t nmech;
	struct spf_str redirect; /* domain-spec of redirect=, p NULL when absent */
	struct spf_str exp;      /* domain-spec of exp=, p NULL when absent */
};

struct spf_limits {
	size_t max_len;   /* bytes of a record. Default 4096 */
	size_t max_terms; /* directives plus modifiers. Default SPF_MAX_TERMS */
};

void spf_limits_default(struct spf_limits *lim);

/* Whether txt is an SPF record: "v=spf1" (any case) then a space or the end. */
bool spf_is_record(const char *txt, size_t len);

/*
 * Parse one record (txt need not be NUL-terminated). *r's slices point into
 * txt and stay valid as long as txt does. Macro syntax in domain-specs and
 * unknown modifiers is checked here, so evaluation cannot hit a syntax error.
 * Returns 1, or -1 (a permerror) with a message in err.
 */
int spf_parse(const char *txt, size_t len, const struct spf_limits *lim, struct spf_record *r,
	      char *err, size_t errlen);

/* ------------------------------------------------------------------ */
/* Macros (RFC 7208 section 7)                                         */

/* Values of the macro letters; NULL ones expand to "unknown" (p) or "". */
struct spf_macro_vars {
	const char *s, *l, *o, *d, *i, *p, *v, *h; /* i: dotted IPv4 or dot-separated nibbles */
	const char *c, *r;                          /* exp only: readable client IP, receiver */
	long long t;                                /* exp only: current time (seconds) */
};

/*
 * Expand the macro-string in[0..len) onto out (an mbuf with a hard max).
 * exp: the text of an explanation (c, r, t allowed; otherwise a permerror).
 * Returns 1, or -1 with a message in err for a syntax error, a zero DIGIT
 * transformer, a letter not allowed here, or output beyond out's max.
 */
int spf_macro_expand(const char *in, size_t len, const struct spf_macro_vars *v, bool exp,
		     struct mbuf *out, char *err, size_t errlen);

/* The "i" value of an address: "192.0.2.3", or 32 dot-separated nibbles. 1 or -1. */
int spf_ip_macro(int family, const uint8_t *ip, char *buf, size_t size);

/*
 * RFC 7208 4.8: remove leading labels of name (NUL-terminated, in place)
 * until it is at most 253 bytes. Returns its new length.
 */
size_t spf_domain_truncate(char *name);

/* ------------------------------------------------------------------ */
/* check_host() (RFC 7208 section 4)                                   */

struct spf_request {
	int family;          /* AF_INET or AF_INET6 (v4-mapped v6 is treated as v4) */
	uint8_t ip[16];      /* client IP, network order, 4 or 16 bytes used */
	const char *domain;  /* domain to check: MAIL FROM's domain, or HELO's */
	const char *sender;  /* MAIL FROM address (local@domain); NULL or "" for <> */
	const char *helo;    /* EHLO/HELO argument */
	const char *receiver; /* our host name, for %{r} in explanations; NULL "unknown" */
};

struct spf_outcome {
	enum spf_result result;
	const char *domain;      /* the domain checked */
	const char *mechanism;   /* the directive that matched, "default" when none, or NULL */
	const char *explanation; /* FAIL with exp=: the expanded text, else NULL */
	const char *problem;     /* TEMPERROR/PERMERROR: why, for logs and headers, else NULL */
	unsigned lookups;        /* DNS-querying terms evaluated */
};

/* Called once, on the loop thread; *o and its strings only valid during the call. */
typedef void spf_done_fn(const struct spf_outcome *o, void *arg);

struct spf_check;

/*
 * Start check_host() for req (all strings copied). cb runs later, never from
 * inside this call. Never returns NULL. The handle is valid until cb returns
 * or spf_cancel is called.
 */
struct spf_check *spf_check_start(struct dns *d, const struct spf_request *req, spf_done_fn *cb, void *arg);

/* Stop a check: cb will not run. Accepts NULL; harmless from inside its own cb. */
void spf_cancel(struct spf_check *c);

#endif

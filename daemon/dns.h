/*
 * dns: asynchronous DNS lookups on the daemon's libevent loop, with
 * libunbound (ub_ctx_create_event + ub_resolve_event) as the resolver.
 * Owns: the unbound context, the queries in flight, their timeouts, and the
 * parsed answers (TXT, A, AAAA, MX, PTR) handed to callbacks.
 * Does not: cache beyond what unbound caches, retry, follow names itself
 * (CNAMEs are followed by unbound), or block the loop. A "fake" instance
 * answers from a table instead, for tests of the modules built on this one.
 * Every callback runs on the loop thread, from its own event, never inside
 * dns_lookup and never after dns_cancel or dns_free.
 * The answer-packet parser (dns_parse_answer) is a pure function over the
 * bytes the resolver hands back, usable (and fuzzed) without a resolver.
 */
#ifndef MOX_DNS_H
#define MOX_DNS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <netinet/in.h>

struct event_base;
struct dns;
struct dns_query;

/* Record types dns_lookup parses (others resolve, but with no parsed data). */
#define DNS_T_A 1
#define DNS_T_PTR 12
#define DNS_T_MX 15
#define DNS_T_TXT 16
#define DNS_T_AAAA 28

enum dns_status {
	DNS_OK = 1,     /* at least one answer of the asked type */
	DNS_NXDOMAIN,   /* the name does not exist (rcode 3) */
	DNS_NODATA,     /* the name exists, no record of the type */
	DNS_TEMPERROR,  /* timeout, SERVFAIL, DNSSEC bogus, a limit hit, resolver trouble */
	DNS_PERMERROR,  /* the name is not a valid DNS name (too long, empty label, ...) */
};

/* "ok", "nxdomain", "nodata", "temperror", "permerror". */
const char *dns_status_name(enum dns_status st);

struct dns_txt {
	const char *data; /* one RR's character-strings concatenated, NUL-terminated */
	size_t len;       /* may contain NUL bytes; len counts them */
};

struct dns_addr {
	int family; /* AF_INET or AF_INET6 */
	union {
		struct in_addr v4;
		struct in6_addr v6;
	} u;
};

struct dns_mx {
	uint16_t pref;
	const char *host; /* without the trailing dot; "" for the root (null MX) */
};

/*
 * A finished lookup. In a callback everything, strings included, belongs to
 * the dns module and is valid only during the callback: copy what you keep.
 * Filled by dns_parse_answer, the arrays and strings belong to the caller
 * until dns_result_clear (name is never owned by the result).
 * Exactly one of the arrays is filled, according to rrtype; answers beyond
 * the limit are dropped (truncated is set).
 */
struct dns_result {
	enum dns_status status;
	int rrtype;
	const char *name;   /* the name as asked */
	bool secure;        /* DNSSEC-validated (only with a trust anchor) */
	bool truncated;     /* more answers than dns_limits.max_answers, or a TXT over max_txt */
	uint32_t ttl;       /* smallest TTL of the answers (0 when none) */
	const char *why;    /* TEMPERROR/PERMERROR: short reason for logs, else NULL */

	const struct dns_txt *txt;     size_t ntxt;   /* TXT */
	const struct dns_addr *addr;   size_t naddr;  /* A, AAAA */
	const struct dns_mx *mx;       size_t nmx;    /* MX, in answer order */
	const char *const *ptr;        size_t nptr;   /* PTR: names without the trailing dot */
};

/* Called once per lookup unless cancelled. */
typedef void dns_done_fn(const struct dns_result *r, void *arg);

struct dns_limits {
	unsigned timeout_ms;   /* per query; at the deadline TEMPERROR "timeout". Default 10000 */
	size_t max_answers;    /* parsed answers per query. Default 100 */
	size_t max_txt;        /* bytes of one TXT RR's concatenated strings. Default 16384 */
	size_t max_inflight;   /* queries outstanding at once, else TEMPERROR. Default 10000 */
};

/* Fill *lim with the defaults above. */
void dns_limits_default(struct dns_limits *lim);

/*
 * Parse an answer packet as a resolver returns it (header, questions,
 * answers; the authority and additional sections are not read) for rrtype:
 * every answer RR of that type, whatever its owner (unbound has already
 * checked a CNAME chain). Compression pointers are followed at most 64
 * times, names are at most 255 wire bytes, an MX or PTR name must end
 * exactly at its RR's end and point nowhere past it. Keeps at most
 * lim->max_answers answers and drops a TXT RR over lim->max_txt bytes
 * (both set truncated). The RCODE is not looked at (see dns_answer_rcode).
 * *res_r is overwritten, not freed: pass a zeroed or cleared one. On
 * success it holds rrtype, status DNS_OK (an answer of the type, even one
 * dropped by a limit or of a type not parsed) or DNS_NODATA, the smallest
 * TTL and the answers; release it with dns_result_clear. Returns 1, or -1
 * for a malformed or truncated packet with a message in err (err may be
 * NULL) and *res_r left empty but for rrtype.
 */
int dns_parse_answer(const unsigned char *pkt, size_t len, int rrtype, const struct dns_limits *lim,
		     struct dns_result *res_r, char *err, size_t errlen);

/* The RCODE of an answer packet (0..15), or -1 if len is under a header's 12 bytes. */
int dns_answer_rcode(const unsigned char *pkt, size_t len);

/*
 * Free the answers of a result dns_parse_answer filled (not name) and zero
 * it. Accepts NULL and a zeroed result.
 */
void dns_result_clear(struct dns_result *r);

/*
 * A resolver on base. resolver NULL or "": the system's (/etc/resolv.conf
 * and /etc/hosts); else a forwarder "ip" or "ip@port" (IPv4 or IPv6, port
 * default 53; loopback allowed), e.g. the config's DNSResolver.
 * Returns the instance, or NULL with a message in err (errlen bytes).
 */
struct dns *dns_new(struct event_base *base, const char *resolver, char *err, size_t errlen);

/*
 * Validate DNSSEC with the trust anchor in file (e.g. the root key in
 * /usr/share/dns/root.key). Without one, dns_result.secure is always false.
 * Call before the first lookup. Returns 1, or -1 with a message in err.
 */
int dns_set_trust_anchor_file(struct dns *d, const char *file, char *err, size_t errlen);

/* Replace the limits (copied). Applies to lookups started afterwards. */
void dns_set_limits(struct dns *d, const struct dns_limits *lim);

/*
 * Cancel every query and free the instance; no callback runs afterwards.
 * Accepts NULL and *dp == NULL; sets *dp = NULL. Must not be called from
 * inside one of its callbacks (mark and free from a deferred event).
 */
void dns_free(struct dns **dp);

/*
 * Look up name (with or without the trailing dot) for rrtype (DNS_T_*; other
 * types resolve but yield no parsed data). cb runs later on the loop with
 * the result, also for errors (invalid name: PERMERROR). Never returns NULL.
 * The handle stays valid until cb has returned or dns_cancel is called,
 * whichever comes first.
 */
struct dns_query *dns_lookup(struct dns *d, const char *name, int rrtype, dns_done_fn *cb, void *arg);

/*
 * Cancel a query: its callback will not run. Accepts NULL. Safe from inside
 * any dns callback (also one of another query), but not for a query whose
 * own callback has already started.
 */
void dns_cancel(struct dns_query *q);

/* ------------------------------------------------------------------ */
/* Fake instance for tests: answers from a table, still asynchronously.  */

/* A dns whose answers come from dns_fake_add/dns_fake_status. Never NULL. */
struct dns *dns_new_fake(struct event_base *base);

/*
 * Add one answer (fake instances only). value is text by type: A "1.2.3.4",
 * AAAA "2001:db8::1", MX "10 mx.example.org", PTR "host.example.org",
 * TXT the record's text (one character-string or many: all are joined
 * anyway). Names compare case-insensitively, trailing dot ignored.
 * A name with any record answers NODATA for other types, an unknown name
 * NXDOMAIN. Returns 1, or -1 for a value that does not parse.
 */
int dns_fake_add(struct dns *d, const char *name, int rrtype, const char *value);

/* Make (name, rrtype) answer st (e.g. DNS_TEMPERROR) instead of its records. */
void dns_fake_status(struct dns *d, const char *name, int rrtype, enum dns_status st);

/* The event base d runs on (for modules that defer their own callbacks). */
struct event_base *dns_base(const struct dns *d);

/* Lookups started on this instance so far (real or fake), for limit tests. */
unsigned dns_lookup_count(const struct dns *d);

#endif

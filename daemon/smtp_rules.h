/*
 * smtp_rules: the mailbox choice of a destination's rulesets for a delivered
 * message, and the message-header field parser it needs. Owns the compiled
 * PCRE2 patterns of one config (compiled once, JIT when available, else the
 * interpreter; every match runs under a match limit).
 * Does not: log, allocate per match beyond the parsed fields, look up
 * accounts, or verify domains (the caller passes the domains SPF/DKIM
 * verified). Pure over its inputs; one thread at a time per struct
 * smtp_rules (it keeps one match-data block).
 */
#ifndef MOX_SMTP_RULES_H
#define MOX_SMTP_RULES_H

#include <stdbool.h>
#include <stddef.h>

#include "daemon/config.h"

/* Match limit of every pattern run (PCRE2 match_limit). */
#define SMTP_RULES_MATCH_LIMIT 100000
/* Header fields looked at; later ones are ignored. */
#define SMTP_RULES_MAX_FIELDS 1000

/* One header field: name lower-cased; value unfolded, trimmed, lower-cased. */
struct smtp_hfield {
	char *name;
	char *value;
};

/*
 * Parse the header section in p[0..len) (CRLF or LF line ends; stops at the
 * empty line or the end of the input). Lines without ':' that do not
 * continue a field are skipped. At most SMTP_RULES_MAX_FIELDS fields; linear
 * in len. Returns the count with *fields_r (free with smtp_hfields_free;
 * NULL when 0).
 */
size_t smtp_hfields_parse(const char *p, size_t len, struct smtp_hfield **fields_r);
void smtp_hfields_free(struct smtp_hfield **fieldsp, size_t n);

struct smtp_rules;

/* Called for each pattern that does not compile (that ruleset never matches). */
typedef void smtp_rules_report_fn(void *arg, const char *key, const char *pattern, const char *msg);

/*
 * Compile the patterns of every ruleset in cfg (borrowed: must outlive the
 * result). report may be NULL. Never returns NULL.
 */
struct smtp_rules *smtp_rules_new(const struct config *cfg, smtp_rules_report_fn *report, void *arg);
void smtp_rules_free(struct smtp_rules **rp);
/* The config the rules were compiled for. */
const struct config *smtp_rules_config(const struct smtp_rules *r);

/*
 * The mailbox of the first ruleset of dest (a destination of the rules'
 * config) that matches: all of its conditions hold (SMTPMailFromRegexp,
 * case-insensitive, on mail_from; every HeadersRegexp pair on some field;
 * VerifiedDomain equal to one of the nverified domains in verified, or a
 * parent domain of one, ignoring ASCII case), and it has at least one.
 * The config holds VerifiedDomain in canonical form (config.c) and the
 * caller passes canonical domains (idn_domain_canon), so both IDN
 * spellings match. verified may be NULL when nverified is 0. Returns the
 * ruleset's Mailbox (a config string) or NULL when none matches.
 * *limit_hit_r (may be NULL) is set when a pattern hit the match limit
 * (taken as no match).
 */
const char *smtp_rules_mailbox(struct smtp_rules *r, const struct config_destination *dest,
    const char *mail_from, const char *const *verified, size_t nverified, const struct smtp_hfield *fields,
    size_t nfields, bool *limit_hit_r);

#endif

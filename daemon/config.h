/*
 * config: the typed configuration of mox: config/mox.yaml (static: data
 * directory, hostname, listeners, TLS, limits, log levels) and
 * config/domains.yaml (domains, accounts, addresses; reloadable), loaded with
 * the schema loader in cfg.h. Owns the schemas, their defaults and
 * documentation, path resolution relative to the config directory and every
 * check that spans keys or files. Does not open sockets or accounts.
 */
#ifndef MOX_CONFIG_H
#define MOX_CONFIG_H

#include "daemon/cfg.h"

struct config_keycert {
	char *cert_file;
	char *key_file;
};

struct config_tls {
	struct cfg_array keycerts; /* struct config_keycert */
	char *min_version;         /* "TLSv1.2" or "TLSv1.3" */
};

/* One protocol service of a listener; not every key applies to every service. */
struct config_service {
	bool enabled;
	long long port;
	bool no_starttls;          /* SMTP: do not offer STARTTLS */
	bool no_require_starttls;  /* Submission/IMAP: allow AUTH/LOGIN without TLS */
	struct cfg_mark port_mark;
};

enum config_svc {
	SVC_SMTP,
	SVC_SUBMISSION,
	SVC_SUBMISSIONS,
	SVC_IMAP,
	SVC_IMAPS,
	SVC_HTTP,
	SVC_HTTPS,
	SVC_METRICS,
	SVC_ALPN,
	SVC_COUNT,
};

struct config_listener {
	char *name;
	struct cfg_strlist ips;
	char *hostname;
	struct config_tls tls;
	struct config_service svc[SVC_COUNT];
	struct cfg_mark ips_mark;
	struct cfg_mark hostname_mark;
};

struct config_limits {
	long long max_message_size;
	long long max_connections;
	long long max_connections_per_ip;
	long long max_new_connections_per_ip_per_minute;
	long long max_failed_auth_per_ip_per_minute;
	long long auth_failure_delay_ms;
	long long imap_timeout_preauth_ms;
	long long imap_timeout_idle_ms;
	long long smtp_timeout_ms;         /* wait for the next command line */
	long long smtp_data_timeout_ms;    /* inactivity within message data */
	long long smtp_message_timeout_ms; /* all of one message's data */
	long long smtp_setup_timeout_ms;   /* connect until the first MAIL or AUTH */
	long long smtp_max_recipients;
	long long smtp_max_errors;
	long long smtp_max_junk_commands; /* NOOP, RSET, VRFY, ... without a message */
	long long shutdown_timeout_ms;    /* a stop waits this long for busy connections */
};

struct config_special_use {
	char *sent;
	char *archive;
	char *trash;
	char *draft;
	char *junk;
};

struct config_initial_mailboxes {
	struct config_special_use special_use;
	struct cfg_strlist regular;
};

struct config_postmaster {
	char *account;
	char *mailbox;
};

struct config_static {
	char *data_dir;
	char *log_level;
	struct cfg_strmap package_log_levels;
	char *hostname; /* a U-label name is replaced by its A-label form at load */
	char *user;
	bool no_fix_permissions;
	char *control_socket;
	bool local_serve; /* set by localserve: deliver outgoing mail locally, error-injecting localparts */
	char *dns_resolver; /* DNSResolver: "" the system's, else "ip" or "ip@port" (checked at load) */
	struct config_postmaster postmaster;
	struct cfg_array listeners; /* struct config_listener */
	struct config_limits limits;
	struct config_initial_mailboxes initial_mailboxes;
	struct cfg_mark hostname_mark;
};

struct config_ruleset {
	char *smtp_mail_from_regexp;
	char *verified_domain;
	struct cfg_strmap headers_regexp;
	char *mailbox;
};

/*
 * Domains are compared in their canonical form (idn.h: lower-case A-label),
 * set at load beside the configured spelling, which is kept for display:
 * "bücher.example" and "xn--bcher-kva.example" are the same domain.
 */
struct config_destination {
	char *name; /* "localpart@domain", or "@domain" for a catch-all, as configured */
	char *mailbox;
	char *full_name;
	struct cfg_array rulesets; /* struct config_ruleset */
	char *domain_canon;        /* canonical domain of name */
	struct cfg_mark mark;      /* the entry's value, for errors */
};

struct config_account {
	char *name;
	char *domain;
	char *full_name;
	struct cfg_array destinations; /* struct config_destination */
	long long quota_message_size;  /* bytes, 0: no limit */
	long long max_message_size;    /* bytes, 0: the global limit */
	char *rejects_mailbox;
	struct cfg_mark domain_mark;
	char *domain_canon; /* canonical form of domain */
};

struct config_domain {
	char *name; /* as configured: U-label or A-label */
	char *description;
	struct cfg_strlist localpart_catchall_separators;
	bool localpart_case_sensitive;
	char *canon;          /* canonical form of name, unique over Domains */
	struct cfg_mark mark; /* the entry's value, for errors */
};

struct config_domains {
	struct cfg_array domains;  /* struct config_domain */
	struct cfg_array accounts; /* struct config_account */
};

struct config {
	char *static_path;  /* path of mox.yaml as given */
	char *domains_path; /* domains.yaml beside it */
	char *dir;          /* directory of mox.yaml */
	char *data_dir;     /* absolute or config-relative resolved DataDir */
	char *control_socket; /* resolved path */
	struct config_static st;
	struct config_domains dom;
};

extern const struct cfg_schema config_static_schema;
extern const struct cfg_schema config_domains_schema;
/* Names of services as in the YAML ("SMTP", "IMAPS", ...), indexed by enum config_svc. */
extern const char *const config_svc_names[SVC_COUNT];

/*
 * Load mox.yaml at static_path and domains.yaml beside it, check them, and
 * resolve paths. Returns 1 with *cfg_r set (free with config_free), or -1
 * with err naming file:line:column and key.
 */
int config_load(const char *static_path, struct config **cfg_r, char *err, size_t errlen);

/*
 * Parse and check both documents from buffers (pure; used by config_load,
 * tests and the fuzzer). Paths resolve against dir.
 */
int config_parse(const char *static_buf, size_t static_len, const char *static_name,
    const char *domains_buf, size_t domains_len, const char *domains_name, const char *dir,
    struct config **cfg_r, char *err, size_t errlen);

void config_free(struct config **cfgp);

/* Whether a service needs TLS from the start (implicit TLS ports). */
bool config_svc_implicit_tls(enum config_svc svc);

/* Find an account by name; NULL when absent. */
const struct config_account *config_account_find(const struct config *cfg, const char *name);

/*
 * Find a domain by its canonical name (idn_domain_canon's output; the
 * caller canonicalizes names from the wire). NULL when not ours.
 */
const struct config_domain *config_domain_find(const struct config *cfg, const char *canon);

#endif

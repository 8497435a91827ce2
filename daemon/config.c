/*
 * config: schemas of mox.yaml and domains.yaml, and the checks across keys.
 * Key names follow the Go mox's mox.conf/domains.conf so its users feel at
 * home; where we add keys (Limits, ALPN) they use the same style.
 */
#define _GNU_SOURCE 1
#include "daemon/config.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "daemon/idn.h"
#include "daemon/log.h"

#define OFF(type, member) offsetof(type, member)

const char *const config_svc_names[SVC_COUNT] = {
	"SMTP", "Submission", "Submissions", "IMAP", "IMAPS", "HTTP", "HTTPS", "MetricsHTTP", "ALPN",
};

static const struct cfg_field keycert_fields[] = {
	{.key = "CertFile", .type = CFG_STRING, .offset = OFF(struct config_keycert, cert_file),
	    .flags = CFG_REQUIRED, .example = "/etc/mox/cert.pem",
	    .doc = "PEM certificate chain, leaf first. Relative paths are relative to the config directory."},
	{.key = "KeyFile", .type = CFG_STRING, .offset = OFF(struct config_keycert, key_file),
	    .flags = CFG_REQUIRED, .example = "/etc/mox/key.pem",
	    .doc = "PEM private key (RSA, ECDSA or Ed25519) for CertFile."},
};
static const struct cfg_schema keycert_schema = {"KeyCert", sizeof(struct config_keycert), CFG_FIELDS(keycert_fields), NULL, NULL};

static const struct cfg_field tls_fields[] = {
	{.key = "KeyCerts", .type = CFG_STRUCTLIST, .offset = OFF(struct config_tls, keycerts), .sub = &keycert_schema,
	    .doc = "Certificates with their keys. The first is the default; others are chosen by SNI."},
	{.key = "MinVersion", .type = CFG_STRING, .offset = OFF(struct config_tls, min_version), .def = "TLSv1.2",
	    .doc = "Minimum TLS version: TLSv1.2 or TLSv1.3."},
};
static const struct cfg_schema tls_schema = {"TLS", sizeof(struct config_tls), CFG_FIELDS(tls_fields), NULL, NULL};

#define SVC_ENABLED(doc_) \
	{.key = "Enabled", .type = CFG_BOOL, .offset = OFF(struct config_service, enabled), .def = "false", .doc = doc_}
#define SVC_PORT(def_) \
	{.key = "Port", .type = CFG_INT, .offset = OFF(struct config_service, port), .def = def_, .min = 1, .max = 65535, \
	    .mark_offset = OFF(struct config_service, port_mark), .doc = "TCP port."}
#define SVC_SCHEMA(var, name_, fieldsarr) \
	static const struct cfg_schema var = {name_, sizeof(struct config_service), CFG_FIELDS(fieldsarr), NULL, NULL}

static const struct cfg_field smtp_fields[] = {
	SVC_ENABLED("Accept incoming mail for the configured domains (MX)."),
	SVC_PORT("25"),
	{.key = "NoSTARTTLS", .type = CFG_BOOL, .offset = OFF(struct config_service, no_starttls), .def = "false",
	    .doc = "Do not offer STARTTLS even when a certificate is configured."},
};
SVC_SCHEMA(smtp_schema, "SMTP", smtp_fields);

static const struct cfg_field submission_fields[] = {
	SVC_ENABLED("Message submission with STARTTLS (RFC 6409)."),
	SVC_PORT("587"),
	{.key = "NoRequireSTARTTLS", .type = CFG_BOOL, .offset = OFF(struct config_service, no_require_starttls),
	    .def = "false", .doc = "Allow authentication without TLS (only sensible on loopback)."},
};
SVC_SCHEMA(submission_schema, "Submission", submission_fields);

static const struct cfg_field submissions_fields[] = {
	SVC_ENABLED("Message submission over implicit TLS (RFC 8314)."),
	SVC_PORT("465"),
};
SVC_SCHEMA(submissions_schema, "Submissions", submissions_fields);

static const struct cfg_field imap_fields[] = {
	SVC_ENABLED("IMAP with STARTTLS."),
	SVC_PORT("143"),
	{.key = "NoRequireSTARTTLS", .type = CFG_BOOL, .offset = OFF(struct config_service, no_require_starttls),
	    .def = "false", .doc = "Allow login without TLS (only sensible on loopback)."},
};
SVC_SCHEMA(imap_schema, "IMAP", imap_fields);

static const struct cfg_field imaps_fields[] = {
	SVC_ENABLED("IMAP over implicit TLS."),
	SVC_PORT("993"),
};
SVC_SCHEMA(imaps_schema, "IMAPS", imaps_fields);

static const struct cfg_field http_fields[] = {
	SVC_ENABLED("Plain HTTP: account and admin pages, webmail, autoconfig."),
	SVC_PORT("80"),
};
SVC_SCHEMA(http_schema, "HTTP", http_fields);

static const struct cfg_field https_fields[] = {
	SVC_ENABLED("HTTPS: account and admin pages, webmail, autoconfig."),
	SVC_PORT("443"),
};
SVC_SCHEMA(https_schema, "HTTPS", https_fields);

static const struct cfg_field metrics_fields[] = {
	SVC_ENABLED("Prometheus metrics at /metrics (plain HTTP; keep it on loopback)."),
	SVC_PORT("8010"),
};
SVC_SCHEMA(metrics_schema, "MetricsHTTP", metrics_fields);

static const struct cfg_field alpn_fields[] = {
	SVC_ENABLED("One TLS port for all protocols, chosen by the client's ALPN protocol id:\n"
	    "imap, smtp, http/1.1 or h2 (chatmail-style deployments)."),
	SVC_PORT("443"),
};
SVC_SCHEMA(alpn_schema, "ALPN", alpn_fields);

#define LSVC(i, key_, schema_) \
	{.key = key_, .type = CFG_STRUCT, .offset = OFF(struct config_listener, svc) + (i) * sizeof(struct config_service), \
	    .sub = &schema_}

static const struct cfg_field listener_fields[] = {
	{.key = "IPs", .type = CFG_STRLIST, .offset = OFF(struct config_listener, ips), .flags = CFG_REQUIRED,
	    .example = "0.0.0.0,::", .mark_offset = OFF(struct config_listener, ips_mark),
	    .doc = "IP addresses to listen on; 0.0.0.0 and :: for all."},
	{.key = "Hostname", .type = CFG_STRING, .offset = OFF(struct config_listener, hostname),
	    .mark_offset = OFF(struct config_listener, hostname_mark),
	    .doc = "Host name for this listener's greetings, if not the global Hostname."},
	{.key = "TLS", .type = CFG_STRUCT, .offset = OFF(struct config_listener, tls), .sub = &tls_schema,
	    .doc = "TLS configuration; required for IMAPS, Submissions, HTTPS, ALPN and to offer STARTTLS."},
	LSVC(SVC_SMTP, "SMTP", smtp_schema),
	LSVC(SVC_SUBMISSION, "Submission", submission_schema),
	LSVC(SVC_SUBMISSIONS, "Submissions", submissions_schema),
	LSVC(SVC_IMAP, "IMAP", imap_schema),
	LSVC(SVC_IMAPS, "IMAPS", imaps_schema),
	LSVC(SVC_HTTP, "HTTP", http_schema),
	LSVC(SVC_HTTPS, "HTTPS", https_schema),
	LSVC(SVC_METRICS, "MetricsHTTP", metrics_schema),
	LSVC(SVC_ALPN, "ALPN", alpn_schema),
};

static const struct cfg_schema listener_schema = {"Listener", sizeof(struct config_listener),
	CFG_FIELDS(listener_fields), "Listener name, e.g. public or internal.", "public"};

#define LIM(key_, member, type_, def_, min_, max_, doc_) \
	{.key = key_, .type = type_, .offset = OFF(struct config_limits, member), .def = def_, .min = min_, .max = max_, .doc = doc_}

static const struct cfg_field limits_fields[] = {
	LIM("MaxMessageSize", max_message_size, CFG_SIZE, "100m", 1024, 1LL << 40,
	    "Largest message accepted by SMTP and IMAP APPEND (suffixes k, m, g)."),
	LIM("MaxConnections", max_connections, CFG_INT, "10000", 1, 10000000,
	    "Connections over all listeners at once; more are refused."),
	LIM("MaxConnectionsPerIP", max_connections_per_ip, CFG_INT, "100", 1, 10000000,
	    "Concurrent connections from one IP address (IPv6: one /64)."),
	LIM("MaxNewConnectionsPerIPPerMinute", max_new_connections_per_ip_per_minute, CFG_INT, "600", 1, 10000000,
	    "New connections from one IP address in one minute."),
	LIM("MaxFailedAuthPerIPPerMinute", max_failed_auth_per_ip_per_minute, CFG_INT, "20", 1, 10000000,
	    "Failed authentications from one IP address in one minute before it is refused."),
	LIM("AuthFailureDelay", auth_failure_delay_ms, CFG_DURATION, "1s", 0, 60000,
	    "Delay before answering a failed authentication."),
	LIM("IMAPTimeoutPreAuth", imap_timeout_preauth_ms, CFG_DURATION, "30s", 1000, 86400000,
	    "Idle time allowed on an IMAP connection before login."),
	LIM("IMAPTimeoutIdle", imap_timeout_idle_ms, CFG_DURATION, "30m", 60000, 86400000,
	    "Idle time allowed on an IMAP connection after login (RFC 9051: at least 30m)."),
	/*
	 * SMTP timeouts per phase (RFC 5321 4.5.3.2). The minimums allow the
	 * sub-second values tests use; nobody should run a server with them.
	 */
	LIM("SMTPTimeout", smtp_timeout_ms, CFG_DURATION, "5m", 100, 86400000,
	    "Time allowed to send the next SMTP command line once the previous reply is out,\n"
	    "and for a client to take a reply that is waiting (RFC 5321 4.5.3.2.7: at least 5m)."),
	LIM("SMTPDataTimeout", smtp_data_timeout_ms, CFG_DURATION, "3m", 100, 86400000,
	    "Time without any message bytes allowed while receiving DATA or a BDAT chunk. Clients\n"
	    "wait up to 3m for each data block to go out (RFC 5321 4.5.3.2.5): not below that."),
	LIM("SMTPMessageTimeout", smtp_message_timeout_ms, CFG_DURATION, "30m", 100, 86400000,
	    "Total time for the data of one message, from DATA's 354 or the first BDAT until the\n"
	    "last byte, against clients that keep a slot by sending slowly. With MaxMessageSize\n"
	    "100m, 30m asks for about 57 KB/s on average for the largest message."),
	/*
	 * Before its first transaction a client has no reason to wait: EHLO,
	 * STARTTLS and AUTH take a few round trips and the failed-auth delay,
	 * seconds in all. One minute is ample for slow links and DNS-bound
	 * senders, while a client that holds a connection slot without mailing
	 * (scanners, slowloris) is cut after it, not after 5m per command.
	 * MTAs that reuse connections do so after a transaction, when the cap
	 * no longer applies.
	 */
	LIM("SMTPSetupTimeout", smtp_setup_timeout_ms, CFG_DURATION, "1m", 100, 86400000,
	    "Total time from connect until the first MAIL command, or until AUTH succeeds\n"
	    "(submission), whatever the client sends meanwhile."),
	LIM("SMTPMaxRecipients", smtp_max_recipients, CFG_INT, "1000", 1, 100000,
	    "Recipients in one SMTP transaction."),
	LIM("SMTPMaxErrors", smtp_max_errors, CFG_INT, "10", 1, 1000,
	    "Errors in one SMTP session before it is closed."),
	/*
	 * Commands that move no mail keep a connection slot for as long as each
	 * comes within SMTPTimeout. Postfix's smtpd_junk_command_limit has the
	 * same default; MTAs send a few between messages, never dozens.
	 */
	/*
	 * A delivery being stored when the server stops gets its answer first.
	 * One still waiting for its storage thread when this runs out is refused
	 * (451, not stored) rather than stored unanswered, which would make its
	 * sender deliver it again.
	 */
	LIM("ShutdownTimeout", shutdown_timeout_ms, CFG_DURATION, "10s", 100, 600000,
	    "After a stop (SIGTERM), how long connections get to finish what they are doing: a\n"
	    "message being stored gets its answer. Deliveries still not stored then are refused\n"
	    "with a temporary error, and the server exits."),
	LIM("SMTPMaxJunkCommands", smtp_max_junk_commands, CFG_INT, "100", 1, 100000,
	    "NOOP, RSET, VRFY, EXPN, HELP and repeated EHLO/HELO commands in one SMTP session\n"
	    "before it is closed with 421. The count starts over when the data of a message\n"
	    "with accepted recipients begins (DATA or BDAT)."),
};
static const struct cfg_schema limits_schema = {"Limits", sizeof(struct config_limits), CFG_FIELDS(limits_fields), NULL, NULL};

static const struct cfg_field special_use_fields[] = {
	{.key = "Sent", .type = CFG_STRING, .offset = OFF(struct config_special_use, sent), .def = "Sent", .doc = "Mailbox with \\Sent."},
	{.key = "Archive", .type = CFG_STRING, .offset = OFF(struct config_special_use, archive), .def = "Archive", .doc = "Mailbox with \\Archive."},
	{.key = "Trash", .type = CFG_STRING, .offset = OFF(struct config_special_use, trash), .def = "Trash", .doc = "Mailbox with \\Trash."},
	{.key = "Draft", .type = CFG_STRING, .offset = OFF(struct config_special_use, draft), .def = "Drafts", .doc = "Mailbox with \\Drafts."},
	{.key = "Junk", .type = CFG_STRING, .offset = OFF(struct config_special_use, junk), .def = "Junk", .doc = "Mailbox with \\Junk."},
};
static const struct cfg_schema special_use_schema = {"SpecialUse", sizeof(struct config_special_use), CFG_FIELDS(special_use_fields), NULL, NULL};

static const struct cfg_field initial_mailboxes_fields[] = {
	{.key = "SpecialUse", .type = CFG_STRUCT, .offset = OFF(struct config_initial_mailboxes, special_use),
	    .sub = &special_use_schema, .doc = "Special-use mailboxes created with each new account."},
	{.key = "Regular", .type = CFG_STRLIST, .offset = OFF(struct config_initial_mailboxes, regular),
	    .example = "Lists", .doc = "Other mailboxes created with each new account."},
};
static const struct cfg_schema initial_mailboxes_schema = {"InitialMailboxes", sizeof(struct config_initial_mailboxes),
	CFG_FIELDS(initial_mailboxes_fields), NULL, NULL};

static const struct cfg_field postmaster_fields[] = {
	{.key = "Account", .type = CFG_STRING, .offset = OFF(struct config_postmaster, account), .example = "mjl",
	    .doc = "Account that receives mail to postmaster@ of every domain."},
	{.key = "Mailbox", .type = CFG_STRING, .offset = OFF(struct config_postmaster, mailbox), .def = "Inbox",
	    .doc = "Mailbox for postmaster mail."},
};
static const struct cfg_schema postmaster_schema = {"Postmaster", sizeof(struct config_postmaster), CFG_FIELDS(postmaster_fields), NULL, NULL};

static const struct cfg_field static_fields[] = {
	{.key = "DataDir", .type = CFG_STRING, .offset = OFF(struct config_static, data_dir), .def = "../data",
	    .doc = "Directory with accounts, queue and spool. Relative to the config directory."},
	{.key = "LogLevel", .type = CFG_STRING, .offset = OFF(struct config_static, log_level), .def = "info",
	    .doc = "Default log level: error, info, debug or trace."},
	{.key = "PackageLogLevels", .type = CFG_STRMAP, .offset = OFF(struct config_static, package_log_levels),
	    .example = "imap: debug", .doc = "Log level per package (imap, smtp, http, store, tls, ...)."},
	{.key = "Hostname", .type = CFG_STRING, .offset = OFF(struct config_static, hostname), .flags = CFG_REQUIRED,
	    .example = "mail.example.org", .mark_offset = OFF(struct config_static, hostname_mark),
	    .doc = "Fully qualified host name of this machine, used in greetings and Received headers.\n"
	    "An internationalized name may be written in Unicode; mox uses its ASCII (A-label) form."},
	{.key = "User", .type = CFG_STRING, .offset = OFF(struct config_static, user), .def = "mox",
	    .doc = "Unprivileged user that mox serve switches to after binding its ports."},
	{.key = "NoFixPermissions", .type = CFG_BOOL, .offset = OFF(struct config_static, no_fix_permissions),
	    .def = "false", .doc = "Do not change ownership of the data directory to User at start."},
	{.key = "ControlSocket", .type = CFG_STRING, .offset = OFF(struct config_static, control_socket),
	    .example = "ctl", .doc = "Unix socket for mox stop, status and account commands; default DataDir/ctl.\n"
	    "Relative to DataDir."},
	{.key = "LocalServe", .type = CFG_BOOL, .offset = OFF(struct config_static, local_serve), .def = "false",
	    .doc = "Local testing mode (set by mox localserve): outgoing mail is delivered locally and\n"
	    "recipient localparts temperror, permerror, 4xx and 5xx inject errors."},
	/*
	 * localserve has no internet: it verifies nothing unless this is set
	 * (tests point it at a local DNS server); mox serve always verifies.
	 */
	{.key = "DNSResolver", .type = CFG_STRING, .offset = OFF(struct config_static, dns_resolver), .def = "",
	    .example = "127.0.0.1@5353",
	    .doc = "DNS server for the SPF and DKIM checks of incoming mail: empty for the system's\n"
	    "resolver (/etc/resolv.conf), else an IP address with an optional port, \"ip\" or\n"
	    "\"ip@port\". mox localserve has no internet and checks nothing unless this is set."},
	{.key = "Postmaster", .type = CFG_STRUCT, .offset = OFF(struct config_static, postmaster),
	    .sub = &postmaster_schema, .doc = "Destination of postmaster mail."},
	{.key = "Listeners", .type = CFG_STRUCTMAP, .offset = OFF(struct config_static, listeners),
	    .sub = &listener_schema, .flags = CFG_REQUIRED, .doc = "Named sets of IPs with the services they offer."},
	{.key = "Limits", .type = CFG_STRUCT, .offset = OFF(struct config_static, limits), .sub = &limits_schema,
	    .doc = "Limits on what clients may do."},
	{.key = "InitialMailboxes", .type = CFG_STRUCT, .offset = OFF(struct config_static, initial_mailboxes),
	    .sub = &initial_mailboxes_schema, .doc = "Mailboxes created for new accounts (besides Inbox)."},
};
const struct cfg_schema config_static_schema = {"mox.yaml", sizeof(struct config_static), CFG_FIELDS(static_fields), NULL, NULL};

static const struct cfg_field ruleset_fields[] = {
	{.key = "SMTPMailFromRegexp", .type = CFG_STRING, .offset = OFF(struct config_ruleset, smtp_mail_from_regexp),
	    .example = "^.*@lists\\.example\\.org$", .doc = "PCRE2 pattern matched against the SMTP MAIL FROM address."},
	{.key = "VerifiedDomain", .type = CFG_STRING, .offset = OFF(struct config_ruleset, verified_domain),
	    .example = "example.org", .doc = "Domain that must be verified for the message: the MAIL FROM (or HELO)\n"
	    "domain when SPF passes, or the d= of a DKIM signature that passes. A parent domain\n"
	    "matches its subdomains. An internationalized name may be written in Unicode."},
	{.key = "HeadersRegexp", .type = CFG_STRMAP, .offset = OFF(struct config_ruleset, headers_regexp),
	    .example = "\"^list-id$\": \"<dev\\\\.example\\\\.org>\"",
	    .doc = "PCRE2 patterns: header name (lowercase) pattern to value pattern; all must match."},
	{.key = "Mailbox", .type = CFG_STRING, .offset = OFF(struct config_ruleset, mailbox), .flags = CFG_REQUIRED,
	    .example = "Lists/dev", .doc = "Mailbox to deliver matching messages to."},
};
static const struct cfg_schema ruleset_schema = {"Ruleset", sizeof(struct config_ruleset), CFG_FIELDS(ruleset_fields), NULL, NULL};

static const struct cfg_field destination_fields[] = {
	{.key = "Mailbox", .type = CFG_STRING, .offset = OFF(struct config_destination, mailbox),
	    .mark_offset = OFF(struct config_destination, mark), .example = "Inbox", .doc = "Mailbox for mail to this address when no ruleset matches; default Inbox."},
	{.key = "FullName", .type = CFG_STRING, .offset = OFF(struct config_destination, full_name),
	    .example = "Mox User", .doc = "Display name for messages sent from this address."},
	{.key = "Rulesets", .type = CFG_STRUCTLIST, .offset = OFF(struct config_destination, rulesets),
	    .sub = &ruleset_schema, .doc = "Rules evaluated in order; the first match chooses the mailbox."},
};
static const struct cfg_schema destination_schema = {"Destination", sizeof(struct config_destination),
	CFG_FIELDS(destination_fields), "Email address, or @domain for a catch-all. The domain may be written\n"
	"in Unicode or in its ASCII (A-label) form.", "mjl@example.org"};

static const struct cfg_field account_fields[] = {
	{.key = "Domain", .type = CFG_STRING, .offset = OFF(struct config_account, domain), .flags = CFG_REQUIRED,
	    .example = "example.org", .mark_offset = OFF(struct config_account, domain_mark),
	    .doc = "Default domain of the account, for addresses given as a bare localpart."},
	{.key = "FullName", .type = CFG_STRING, .offset = OFF(struct config_account, full_name),
	    .example = "Mox User", .doc = "Display name of the account owner."},
	{.key = "Destinations", .type = CFG_STRUCTMAP, .offset = OFF(struct config_account, destinations),
	    .sub = &destination_schema, .flags = CFG_REQUIRED, .doc = "Addresses that deliver to this account."},
	{.key = "QuotaMessageSize", .type = CFG_SIZE, .offset = OFF(struct config_account, quota_message_size),
	    .def = "0", .doc = "Storage limit for all messages of the account; 0 for no limit."},
	{.key = "MaxMessageSize", .type = CFG_SIZE, .offset = OFF(struct config_account, max_message_size),
	    .def = "0", .doc = "Largest message this account accepts; 0 for the global limit."},
	{.key = "RejectsMailbox", .type = CFG_STRING, .offset = OFF(struct config_account, rejects_mailbox),
	    .example = "Rejects", .doc = "Mailbox that keeps rejected incoming messages for a while."},
};
static const struct cfg_schema account_schema = {"Account", sizeof(struct config_account), CFG_FIELDS(account_fields),
	"Account name (login name is any of its addresses).", "mjl"};

static const struct cfg_field domain_fields[] = {
	{.key = "Description", .type = CFG_STRING, .offset = OFF(struct config_domain, description),
	    .example = "Our domain", .doc = "Free-form description."},
	{.key = "LocalpartCatchallSeparators", .type = CFG_STRLIST,
	    .offset = OFF(struct config_domain, localpart_catchall_separators), .example = "+",
	    .doc = "Separators after which a localpart's suffix is ignored for delivery, e.g. + makes\n"
	    "mjl+news@ deliver as mjl@."},
	{.key = "LocalpartCaseSensitive", .type = CFG_BOOL, .offset = OFF(struct config_domain, localpart_case_sensitive),
	    .mark_offset = OFF(struct config_domain, mark), .def = "false", .doc = "Whether localparts are case-sensitive."},
};
static const struct cfg_schema domain_schema = {"Domain", sizeof(struct config_domain), CFG_FIELDS(domain_fields),
	"Domain name, lowercase: ASCII, or internationalized in Unicode (U-label, bücher.example) or\n"
	"ASCII (A-label, xn--bcher-kva.example) form; both forms are the same domain everywhere.",
	"example.org"};

static const struct cfg_field domains_fields[] = {
	{.key = "Domains", .type = CFG_STRUCTMAP, .offset = OFF(struct config_domains, domains), .sub = &domain_schema,
	    .doc = "Domains we accept mail for."},
	{.key = "Accounts", .type = CFG_STRUCTMAP, .offset = OFF(struct config_domains, accounts), .sub = &account_schema,
	    .doc = "Accounts with their addresses."},
};
const struct cfg_schema config_domains_schema = {"domains.yaml", sizeof(struct config_domains), CFG_FIELDS(domains_fields), NULL, NULL};

bool
config_svc_implicit_tls(enum config_svc svc)
{
	return svc == SVC_SUBMISSIONS || svc == SVC_IMAPS || svc == SVC_HTTPS || svc == SVC_ALPN;
}

#define ITEM(arr, type, i) (&((type *)(arr).v)[i])

static char *
resolve(const char *dir, const char *p)
{
	if (p[0] == '/' || dir == NULL || dir[0] == '\0' || strcmp(dir, ".") == 0)
		return xstrdup(p);
	return xasprintf("%s/%s", dir, p);
}

static bool
valid_domain(const char *d)
{
	size_t len = strlen(d), label = 0;

	if (len == 0 || len > 253)
		return false;
	for (const char *p = d; *p; p++) {
		unsigned char c = (unsigned char)*p;
		if (c == '.') {
			if (label == 0)
				return false;
			label = 0;
			continue;
		}
		if (!(islower(c) || isdigit(c) || c == '-' || c == '_'))
			return false;
		if (++label > 63)
			return false;
	}
	return label > 0;
}

static bool
has_non_ascii(const char *s)
{
	for (; *s; s++)
		if ((unsigned char)*s >= 0x80)
			return true;
	return false;
}

/*
 * Our own host name written in Unicode becomes its A-label form: it goes
 * into greetings and headers that must be ASCII. ASCII names are left to
 * the checks they always had. key names the field in errors.
 */
static int
hostname_to_ascii(char **name, const struct cfg_mark *m, const char *key, char *err, size_t errlen)
{
	char canon[IDN_BUFSIZE], ierr[160];

	if (*name == NULL || !has_non_ascii(*name))
		return 0;
	if (idn_domain_canon(*name, strlen(*name), canon, sizeof(canon), ierr, sizeof(ierr)) < 0) {
		snprintf(err, errlen, "%s:%d:%d: %s: \"%s\": %s", m->file, m->line, m->col, key, *name, ierr);
		return -1;
	}
	free(*name);
	*name = xstrdup(canon);
	return 1;
}

/* DNSResolver: "" or NULL, an IP address, or "ip@port" (the form dns_new takes). 1 or -1. */
static int
check_dns_resolver(const char *r)
{
	unsigned char buf[16];
	char ip[INET6_ADDRSTRLEN + 1];
	const char *at;
	size_t n;

	if (r == NULL || r[0] == '\0')
		return 1;
	at = strchr(r, '@');
	n = at ? (size_t)(at - r) : strlen(r);
	if (n == 0 || n >= sizeof(ip))
		return -1;
	memcpy(ip, r, n);
	ip[n] = '\0';
	if (inet_pton(AF_INET, ip, buf) != 1 && inet_pton(AF_INET6, ip, buf) != 1)
		return -1;
	if (at != NULL) {
		char *end;
		errno = 0;
		long port = strtol(at + 1, &end, 10);
		if (!isdigit((unsigned char)at[1]) || *end != '\0' || errno != 0 || port < 1 || port > 65535)
			return -1;
	}
	return 1;
}

static int
check_static(struct config *cfg, char *err, size_t errlen)
{
	struct config_static *st = &cfg->st;
	enum log_level lvl;
	const char *file = cfg->static_path;

	if (log_level_parse(st->log_level, &lvl) < 0) {
		snprintf(err, errlen, "%s: LogLevel: unknown level \"%s\" (error, info, debug, trace)", file, st->log_level);
		return -1;
	}
	for (size_t i = 0; i < st->package_log_levels.n; i++) {
		if (log_level_parse(st->package_log_levels.vals[i], &lvl) < 0) {
			snprintf(err, errlen, "%s: PackageLogLevels.%s: unknown level \"%s\"", file,
			    st->package_log_levels.keys[i], st->package_log_levels.vals[i]);
			return -1;
		}
	}
	if (hostname_to_ascii(&st->hostname, &st->hostname_mark, "Hostname", err, errlen) < 0)
		return -1;
	if (!valid_domain(st->hostname)) {
		snprintf(err, errlen, "%s: Hostname: \"%s\" is not a lowercase host name", file, st->hostname);
		return -1;
	}
	if (check_dns_resolver(st->dns_resolver) < 0) {
		snprintf(err, errlen, "%s: DNSResolver: \"%s\" is not \"ip\" or \"ip@port\"", file, st->dns_resolver);
		return -1;
	}
	if (st->listeners.n == 0) {
		snprintf(err, errlen, "%s: Listeners: at least one listener is required", file);
		return -1;
	}
	for (size_t i = 0; i < st->listeners.n; i++) {
		struct config_listener *l = ITEM(st->listeners, struct config_listener, i);
		bool has_tls = l->tls.keycerts.n > 0;
		char key[300];

		snprintf(key, sizeof(key), "Listeners.%s.Hostname", l->name);
		if (hostname_to_ascii(&l->hostname, &l->hostname_mark, key, err, errlen) < 0)
			return -1;

		if (l->ips.n == 0) {
			snprintf(err, errlen, "%s:%d:%d: Listeners.%s.IPs: at least one IP is required", file,
			    l->ips_mark.line, l->ips_mark.col, l->name);
			return -1;
		}
		for (size_t j = 0; j < l->ips.n; j++) {
			unsigned char buf[16];
			if (inet_pton(AF_INET, l->ips.v[j], buf) != 1 && inet_pton(AF_INET6, l->ips.v[j], buf) != 1) {
				snprintf(err, errlen, "%s:%d:%d: Listeners.%s.IPs: \"%s\" is not an IP address", file,
				    l->ips_mark.line, l->ips_mark.col, l->name, l->ips.v[j]);
				return -1;
			}
		}
		if (strcmp(l->tls.min_version, "TLSv1.2") != 0 && strcmp(l->tls.min_version, "TLSv1.3") != 0) {
			snprintf(err, errlen, "%s: Listeners.%s.TLS.MinVersion: must be TLSv1.2 or TLSv1.3", file, l->name);
			return -1;
		}
		for (size_t j = 0; j < l->tls.keycerts.n; j++) {
			struct config_keycert *kc = ITEM(l->tls.keycerts, struct config_keycert, j);
			char *p = resolve(cfg->dir, kc->cert_file);
			free(kc->cert_file);
			kc->cert_file = p;
			p = resolve(cfg->dir, kc->key_file);
			free(kc->key_file);
			kc->key_file = p;
		}
		for (int s = 0; s < SVC_COUNT; s++) {
			struct config_service *svc = &l->svc[s];
			if (!svc->enabled)
				continue;
			if (config_svc_implicit_tls((enum config_svc)s) && !has_tls) {
				snprintf(err, errlen, "%s: Listeners.%s.%s: needs TLS.KeyCerts", file, l->name, config_svc_names[s]);
				return -1;
			}
			/* The same IP and port may be used once over all listeners. */
			for (size_t i2 = 0; i2 <= i; i2++) {
				struct config_listener *l2 = ITEM(st->listeners, struct config_listener, i2);
				for (int s2 = 0; s2 < SVC_COUNT; s2++) {
					struct config_service *o = &l2->svc[s2];
					if ((i2 == i && s2 >= s) || !o->enabled || o->port != svc->port)
						continue;
					for (size_t a = 0; a < l->ips.n; a++) {
						for (size_t b = 0; b < l2->ips.n; b++) {
							if (strcmp(l->ips.v[a], l2->ips.v[b]) != 0)
								continue;
							snprintf(err, errlen, "%s:%d:%d: Listeners.%s.%s.Port: port %lld on %s is also used by Listeners.%s.%s",
							    file, svc->port_mark.line, svc->port_mark.col, l->name, config_svc_names[s],
							    svc->port, l->ips.v[a], l2->name, config_svc_names[s2]);
							return -1;
						}
					}
				}
			}
		}
	}
	return 1;
}

const struct config_domain *
config_domain_find(const struct config *cfg, const char *canon)
{
	for (size_t i = 0; i < cfg->dom.domains.n; i++) {
		const struct config_domain *d = ITEM(cfg->dom.domains, struct config_domain, i);
		if (d->canon != NULL && strcmp(d->canon, canon) == 0)
			return d;
	}
	return NULL;
}

const struct config_account *
config_account_find(const struct config *cfg, const char *name)
{
	for (size_t i = 0; i < cfg->dom.accounts.n; i++) {
		const struct config_account *a = ITEM(cfg->dom.accounts, struct config_account, i);
		if (strcmp(a->name, name) == 0)
			return a;
	}
	return NULL;
}

static bool
valid_account_name(const char *s)
{
	if (*s == '\0' || *s == '.' || strlen(s) > 64)
		return false;
	for (; *s; s++)
		if (!(isalnum((unsigned char)*s) || strchr("._-@+", *s) != NULL))
			return false;
	return true;
}

/* Whether s has an ASCII capital (non-ASCII letters are UTS#46's to map). */
static bool
has_ascii_upper(const char *s)
{
	for (; *s; s++)
		if (*s >= 'A' && *s <= 'Z')
			return true;
	return false;
}

/*
 * Domains keys: lowercase, valid, and one entry per domain whatever its
 * spelling ("bücher.example" and "xn--bcher-kva.example" are one domain).
 * Sets each domain's canonical name. The errors of IDNA name the position
 * of the entry's value (the key's position is not kept by the loader).
 */
static int
check_domain_names(struct config *cfg, char *err, size_t errlen)
{
	const char *file = cfg->domains_path;
	char canon[IDN_BUFSIZE], ierr[160];

	for (size_t i = 0; i < cfg->dom.domains.n; i++) {
		struct config_domain *d = ITEM(cfg->dom.domains, struct config_domain, i);
		const struct config_domain *other;
		size_t len = strlen(d->name);

		if ((!has_non_ascii(d->name) && !valid_domain(d->name)) || has_ascii_upper(d->name) ||
		    (len > 0 && d->name[len - 1] == '.')) {
			snprintf(err, errlen, "%s: Domains.%s: not a lowercase domain name", file, d->name);
			return -1;
		}
		if (idn_domain_canon(d->name, len, canon, sizeof(canon), ierr, sizeof(ierr)) < 0) {
			snprintf(err, errlen, "%s:%d:%d: Domains.%s: %s", file, d->mark.line, d->mark.col, d->name, ierr);
			return -1;
		}
		if ((other = config_domain_find(cfg, canon)) != NULL) {
			snprintf(err, errlen, "%s:%d:%d: Domains.%s: same domain as Domains.%s (%s)", file, d->mark.line,
			    d->mark.col, d->name, other->name, canon);
			return -1;
		}
		d->canon = xstrdup(canon);
		for (size_t j = 0; j < d->localpart_catchall_separators.n; j++) {
			if (strlen(d->localpart_catchall_separators.v[j]) != 1) {
				snprintf(err, errlen, "%s: Domains.%s.LocalpartCatchallSeparators: separators are single characters",
				    file, d->name);
				return -1;
			}
		}
	}
	return 1;
}

/* Whether two destinations name one address: localparts ignoring ASCII case, canonical domains. */
static bool
same_address(const struct config_destination *a, const struct config_destination *b)
{
	size_t la = (size_t)(strrchr(a->name, '@') - a->name), lb = (size_t)(strrchr(b->name, '@') - b->name);

	return la == lb && strncasecmp(a->name, b->name, la) == 0 && strcmp(a->domain_canon, b->domain_canon) == 0;
}

/* Destination j of account i: its domain is ours, and no other entry names the same address. */
static int
check_destination(struct config *cfg, size_t i, size_t j, char *err, size_t errlen)
{
	const char *file = cfg->domains_path;
	const struct config_account *a = ITEM(cfg->dom.accounts, struct config_account, i);
	struct config_destination *d = ITEM(a->destinations, struct config_destination, j);
	const char *at = strrchr(d->name, '@');
	char canon[IDN_BUFSIZE], ierr[160];

	if (at == NULL || at[1] == '\0') {
		snprintf(err, errlen, "%s: Accounts.%s.Destinations.%s: expected localpart@domain or @domain",
		    file, a->name, d->name);
		return -1;
	}
	if (idn_domain_canon(at + 1, strlen(at + 1), canon, sizeof(canon), ierr, sizeof(ierr)) < 0) {
		snprintf(err, errlen, "%s:%d:%d: Accounts.%s.Destinations.%s: %s", file, d->mark.line, d->mark.col,
		    a->name, d->name, ierr);
		return -1;
	}
	if (config_domain_find(cfg, canon) == NULL) {
		snprintf(err, errlen, "%s: Accounts.%s.Destinations.%s: domain %s is not in Domains",
		    file, a->name, d->name, at + 1);
		return -1;
	}
	d->domain_canon = xstrdup(canon);
	/*
	 * VerifiedDomain is compared with verified domains in the canonical
	 * form (smtp_rules.h), so the configured name is replaced by it, as a
	 * Unicode Hostname is; nothing shows it in the configured spelling.
	 */
	for (size_t k = 0; k < d->rulesets.n; k++) {
		struct config_ruleset *rs = ITEM(d->rulesets, struct config_ruleset, k);
		if (rs->verified_domain == NULL || rs->verified_domain[0] == '\0')
			continue;
		if (idn_domain_canon(rs->verified_domain, strlen(rs->verified_domain), canon, sizeof(canon), ierr,
			sizeof(ierr)) < 0) {
			snprintf(err, errlen, "%s: Accounts.%s.Destinations.%s.Rulesets[%zu].VerifiedDomain: \"%s\": %s",
			    file, a->name, d->name, k, rs->verified_domain, ierr);
			return -1;
		}
		free(rs->verified_domain);
		rs->verified_domain = xstrdup(canon);
	}
	/* An address belongs to one account. */
	for (size_t i2 = 0; i2 <= i; i2++) {
		const struct config_account *a2 = ITEM(cfg->dom.accounts, struct config_account, i2);
		for (size_t j2 = 0; j2 < a2->destinations.n && !(i2 == i && j2 >= j); j2++) {
			const struct config_destination *d2 = ITEM(a2->destinations, struct config_destination, j2);
			if (same_address(d, d2)) {
				snprintf(err, errlen, "%s: Accounts.%s.Destinations.%s: address also belongs to account %s",
				    file, a->name, d->name, a2->name);
				return -1;
			}
		}
	}
	return 1;
}

static int
check_domains(struct config *cfg, char *err, size_t errlen)
{
	const char *file = cfg->domains_path;
	char canon[IDN_BUFSIZE], ierr[160];

	if (check_domain_names(cfg, err, errlen) < 0)
		return -1;
	for (size_t i = 0; i < cfg->dom.accounts.n; i++) {
		struct config_account *a = ITEM(cfg->dom.accounts, struct config_account, i);
		if (!valid_account_name(a->name)) {
			snprintf(err, errlen, "%s: Accounts.%s: account names use letters, digits and . _ - @ +", file, a->name);
			return -1;
		}
		if (idn_domain_canon(a->domain, strlen(a->domain), canon, sizeof(canon), ierr, sizeof(ierr)) < 0) {
			snprintf(err, errlen, "%s:%d:%d: Accounts.%s.Domain: \"%s\": %s", file,
			    a->domain_mark.line, a->domain_mark.col, a->name, a->domain, ierr);
			return -1;
		}
		if (config_domain_find(cfg, canon) == NULL) {
			snprintf(err, errlen, "%s:%d:%d: Accounts.%s.Domain: unknown domain \"%s\"", file,
			    a->domain_mark.line, a->domain_mark.col, a->name, a->domain);
			return -1;
		}
		a->domain_canon = xstrdup(canon);
		for (size_t j = 0; j < a->destinations.n; j++)
			if (check_destination(cfg, i, j, err, errlen) < 0)
				return -1;
	}
	if (cfg->st.postmaster.account != NULL && config_account_find(cfg, cfg->st.postmaster.account) == NULL) {
		snprintf(err, errlen, "%s: Postmaster.Account: unknown account \"%s\"", cfg->static_path,
		    cfg->st.postmaster.account);
		return -1;
	}
	return 1;
}

int
config_parse(const char *static_buf, size_t static_len, const char *static_name,
    const char *domains_buf, size_t domains_len, const char *domains_name, const char *dir,
    struct config **cfg_r, char *err, size_t errlen)
{
	struct config *cfg = xcalloc(1, sizeof(*cfg));

	cfg->static_path = xstrdup(static_name);
	cfg->domains_path = xstrdup(domains_name);
	cfg->dir = xstrdup(dir ? dir : ".");
	if (cfg_parse(&config_static_schema, &cfg->st, static_buf, static_len, cfg->static_path, err, errlen) < 0)
		goto fail;
	if (cfg_parse(&config_domains_schema, &cfg->dom, domains_buf, domains_len, cfg->domains_path, err, errlen) < 0)
		goto fail;
	if (check_static(cfg, err, errlen) < 0 || check_domains(cfg, err, errlen) < 0)
		goto fail;
	cfg->data_dir = resolve(cfg->dir, cfg->st.data_dir);
	if (cfg->st.control_socket != NULL)
		cfg->control_socket = resolve(cfg->data_dir, cfg->st.control_socket);
	else
		cfg->control_socket = xasprintf("%s/ctl", cfg->data_dir);
	if (strlen(cfg->control_socket) >= 100) {
		snprintf(err, errlen, "%s: ControlSocket: path \"%s\" is too long for a unix socket (max 99)",
		    cfg->static_path, cfg->control_socket);
		goto fail;
	}
	*cfg_r = cfg;
	return 1;
fail:
	config_free(&cfg);
	return -1;
}

int
config_load(const char *static_path, struct config **cfg_r, char *err, size_t errlen)
{
	char *sbuf = NULL, *dbuf = NULL, *dpath, *tmp, *dir;
	size_t slen, dlen;
	int r = -1;

	tmp = xstrdup(static_path);
	dir = xstrdup(dirname(tmp));
	free(tmp);
	dpath = xasprintf("%s/domains.yaml", dir);
	if (read_file(static_path, CFG_MAX_INPUT, &sbuf, &slen) < 0) {
		snprintf(err, errlen, "%s: %s", static_path, strerror(errno));
		goto out;
	}
	if (read_file(dpath, CFG_MAX_INPUT, &dbuf, &dlen) < 0) {
		snprintf(err, errlen, "%s: %s", dpath, strerror(errno));
		goto out;
	}
	r = config_parse(sbuf, slen, static_path, dbuf, dlen, dpath, dir, cfg_r, err, errlen);
out:
	free(sbuf);
	free(dbuf);
	free(dpath);
	free(dir);
	return r;
}

void
config_free(struct config **cfgp)
{
	struct config *cfg = *cfgp;

	if (cfg == NULL)
		return;
	/* The canonical names are ours, not the loader's. */
	for (size_t i = 0; i < cfg->dom.domains.n; i++)
		free(ITEM(cfg->dom.domains, struct config_domain, i)->canon);
	for (size_t i = 0; i < cfg->dom.accounts.n; i++) {
		struct config_account *a = ITEM(cfg->dom.accounts, struct config_account, i);
		free(a->domain_canon);
		for (size_t j = 0; j < a->destinations.n; j++)
			free(ITEM(a->destinations, struct config_destination, j)->domain_canon);
	}
	cfg_free(&config_static_schema, &cfg->st);
	cfg_free(&config_domains_schema, &cfg->dom);
	free(cfg->static_path);
	free(cfg->domains_path);
	free(cfg->dir);
	free(cfg->data_dir);
	free(cfg->control_socket);
	free(cfg);
	*cfgp = NULL;
}

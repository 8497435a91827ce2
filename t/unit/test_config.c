/* Tests for daemon/config: a full valid mox.yaml/domains.yaml pair and each cross-key check. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "daemon/config.h"

static const char static_yaml[] =
	"DataDir: ../data\n"                          /* 1 */
	"LogLevel: debug\n"                           /* 2 */
	"PackageLogLevels:\n"                         /* 3 */
	"  imap: trace\n"                             /* 4 */
	"  smtp: error\n"                             /* 5 */
	"Hostname: mail.example.org\n"                /* 6 */
	"Postmaster:\n"                               /* 7 */
	"  Account: mjl\n"                            /* 8 */
	"Listeners:\n"                                /* 9 */
	"  public:\n"                                 /* 10 */
	"    IPs:\n"                                  /* 11 */
	"      - 0.0.0.0\n"                           /* 12 */
	"      - \"::\"\n"                            /* 13 */
	"    TLS:\n"                                  /* 14 */
	"      KeyCerts:\n"                           /* 15 */
	"        - CertFile: certs/cert.pem\n"        /* 16 */
	"          KeyFile: /abs/key.pem\n"           /* 17 */
	"    SMTP:\n"                                 /* 18 */
	"      Enabled: true\n"                       /* 19 */
	"    Submissions:\n"                          /* 20 */
	"      Enabled: true\n"                       /* 21 */
	"    IMAPS:\n"                                /* 22 */
	"      Enabled: true\n"                       /* 23 */
	"    HTTPS:\n"                                /* 24 */
	"      Enabled: true\n"                       /* 25 */
	"      Port: 8443\n"                          /* 26 */
	"  internal:\n"                               /* 27 */
	"    IPs: [127.0.0.1]\n"                      /* 28 */
	"    IMAP:\n"                                 /* 29 */
	"      Enabled: true\n"                       /* 30 */
	"      NoRequireSTARTTLS: true\n"             /* 31 */
	"    MetricsHTTP:\n"                          /* 32 */
	"      Enabled: true\n"                       /* 33 */
	"Limits:\n"                                   /* 34 */
	"  MaxMessageSize: 50m\n"                     /* 35 */
	"  IMAPTimeoutIdle: 1h\n";                    /* 36 */

static const char domains_yaml[] =
	"Domains:\n"                                  /* 1 */
	"  example.org:\n"                            /* 2 */
	"    Description: Example\n"                  /* 3 */
	"    LocalpartCatchallSeparators: [+]\n"      /* 4 */
	"  example.net:\n"                            /* 5 */
	"Accounts:\n"                                 /* 6 */
	"  mjl:\n"                                    /* 7 */
	"    Domain: example.org\n"                   /* 8 */
	"    FullName: M J L\n"                       /* 9 */
	"    Destinations:\n"                         /* 10 */
	"      mjl@example.org:\n"                    /* 11 */
	"      \"@example.net\":\n"                   /* 12 */
	"        Mailbox: Catchall\n"                 /* 13 */
	"      postmaster@example.org:\n"             /* 14 */
	"        Rulesets:\n"                         /* 15 */
	"          - SMTPMailFromRegexp: \"^.*@lists\\\\.example\\\\.org$\"\n" /* 16 */
	"            Mailbox: Lists\n"                /* 17 */
	"    QuotaMessageSize: 1g\n"                  /* 18 */
	"  other:\n"                                  /* 19 */
	"    Domain: example.net\n"                   /* 20 */
	"    Destinations:\n"                         /* 21 */
	"      other@example.net: {}\n";              /* 22 */

static char err[1024];

/* s with the one occurrence of old replaced by new; caller frees. */
static char *
replace_(const char *s, const char *old, const char *new, const char *file, int line)
{
	const char *p = strstr(s, old);

	if (p == NULL || strstr(p + 1, old) != NULL)
		fail_msg("%s:%d: \"%s\" not found exactly once", file, line, old);
	return xasprintf("%.*s%s%s", (int)(p - s), s, new, p + strlen(old));
}
#define replace(s, old, new) replace_(s, old, new, __FILE__, __LINE__)

static int
parse(const char *st, const char *dom, const char *dir, struct config **cfg_r)
{
	err[0] = '\0';
	*cfg_r = NULL;
	return config_parse(st, strlen(st), "mox.yaml", dom, strlen(dom), "domains.yaml", dir, cfg_r, err, sizeof(err));
}

static void
expect_err_(const char *st, const char *dom, const char *want, const char *file, int line)
{
	struct config *cfg;

	if (parse(st, dom, "/etc/mox", &cfg) != -1) {
		config_free(&cfg);
		fail_msg("%s:%d: config accepted, expected: %s", file, line, want);
	}
	assert_null(cfg);
	if (strcmp(err, want) != 0)
		fail_msg("%s:%d:\n got: %s\nwant: %s", file, line, err, want);
}
#define expect_err(st, dom, want) expect_err_(st, dom, want, __FILE__, __LINE__)

/* Replace old by new in the static (which == 's') or domains document and expect want. */
static void
expect_edit_err_(char which, const char *old, const char *new, const char *want, const char *file, int line)
{
	char *s = replace_(which == 's' ? static_yaml : domains_yaml, old, new, file, line);

	if (which == 's')
		expect_err_(s, domains_yaml, want, file, line);
	else
		expect_err_(static_yaml, s, want, file, line);
	free(s);
}
#define expect_static_err(old, new, want) expect_edit_err_('s', old, new, want, __FILE__, __LINE__)
#define expect_domains_err(old, new, want) expect_edit_err_('d', old, new, want, __FILE__, __LINE__)

#define LISTENER(cfg, i) (&((struct config_listener *)(cfg)->st.listeners.v)[i])
#define DOMAIN(cfg, i) (&((struct config_domain *)(cfg)->dom.domains.v)[i])
#define ACCOUNT(cfg, i) (&((struct config_account *)(cfg)->dom.accounts.v)[i])
#define DEST(a, i) (&((struct config_destination *)(a)->destinations.v)[i])

static void
test_valid(void **state)
{
	struct config *cfg;
	const struct config_listener *pub, *in;
	const struct config_keycert *kc;
	const struct config_account *a;

	if (parse(static_yaml, domains_yaml, "/etc/mox", &cfg) != 1)
		fail_msg("%s", err);
	assert_string_equal(cfg->static_path, "mox.yaml");
	assert_string_equal(cfg->domains_path, "domains.yaml");
	assert_string_equal(cfg->dir, "/etc/mox");
	assert_string_equal(cfg->data_dir, "/etc/mox/../data");
	assert_string_equal(cfg->control_socket, "/etc/mox/../data/ctl");
	assert_string_equal(cfg->st.log_level, "debug");
	assert_int_equal(cfg->st.package_log_levels.n, 2);
	assert_string_equal(cfg->st.package_log_levels.keys[0], "imap");
	assert_string_equal(cfg->st.package_log_levels.vals[0], "trace");
	assert_string_equal(cfg->st.hostname, "mail.example.org");
	assert_string_equal(cfg->st.user, "mox");
	assert_false(cfg->st.no_fix_permissions);
	assert_false(cfg->st.local_serve);
	assert_string_equal(cfg->st.postmaster.account, "mjl");
	assert_string_equal(cfg->st.postmaster.mailbox, "Inbox");

	assert_int_equal(cfg->st.listeners.n, 2);
	pub = LISTENER(cfg, 0);
	in = LISTENER(cfg, 1);
	assert_string_equal(pub->name, "public");
	assert_int_equal(pub->ips.n, 2);
	assert_string_equal(pub->ips.v[0], "0.0.0.0");
	assert_string_equal(pub->ips.v[1], "::");
	assert_null(pub->hostname);
	assert_int_equal(pub->tls.keycerts.n, 1);
	kc = (const struct config_keycert *)pub->tls.keycerts.v;
	/* Relative TLS paths resolve against the config directory; absolute ones stay. */
	assert_string_equal(kc->cert_file, "/etc/mox/certs/cert.pem");
	assert_string_equal(kc->key_file, "/abs/key.pem");
	assert_string_equal(pub->tls.min_version, "TLSv1.2");
	/* Services: enabled ones with their default ports, the rest disabled. */
	assert_true(pub->svc[SVC_SMTP].enabled);
	assert_int_equal(pub->svc[SVC_SMTP].port, 25);
	assert_false(pub->svc[SVC_SMTP].no_starttls);
	assert_true(pub->svc[SVC_SUBMISSIONS].enabled);
	assert_int_equal(pub->svc[SVC_SUBMISSIONS].port, 465);
	assert_true(pub->svc[SVC_IMAPS].enabled);
	assert_int_equal(pub->svc[SVC_IMAPS].port, 993);
	assert_true(pub->svc[SVC_HTTPS].enabled);
	assert_int_equal(pub->svc[SVC_HTTPS].port, 8443);
	assert_int_equal(pub->svc[SVC_HTTPS].port_mark.line, 26);
	assert_int_equal(pub->svc[SVC_HTTPS].port_mark.col, 13);
	assert_false(pub->svc[SVC_SUBMISSION].enabled);
	assert_int_equal(pub->svc[SVC_SUBMISSION].port, 587);
	assert_false(pub->svc[SVC_IMAP].enabled);
	assert_int_equal(pub->svc[SVC_IMAP].port, 143);
	assert_false(pub->svc[SVC_HTTP].enabled);
	assert_int_equal(pub->svc[SVC_HTTP].port, 80);
	assert_false(pub->svc[SVC_ALPN].enabled);
	assert_int_equal(pub->svc[SVC_ALPN].port, 443);
	assert_string_equal(in->name, "internal");
	assert_int_equal(in->ips.n, 1);
	assert_int_equal(in->tls.keycerts.n, 0);
	assert_true(in->svc[SVC_IMAP].enabled);
	assert_true(in->svc[SVC_IMAP].no_require_starttls);
	assert_true(in->svc[SVC_METRICS].enabled);
	assert_int_equal(in->svc[SVC_METRICS].port, 8010);

	/* Limits: given and default. */
	assert_int_equal(cfg->st.limits.max_message_size, 50LL << 20);
	assert_int_equal(cfg->st.limits.imap_timeout_idle_ms, 3600000);
	assert_int_equal(cfg->st.limits.max_connections, 10000);
	assert_int_equal(cfg->st.limits.max_connections_per_ip, 100);
	assert_int_equal(cfg->st.limits.auth_failure_delay_ms, 1000);
	assert_int_equal(cfg->st.limits.imap_timeout_preauth_ms, 30000);
	assert_int_equal(cfg->st.limits.smtp_timeout_ms, 300000);
	assert_int_equal(cfg->st.limits.smtp_max_recipients, 1000);
	assert_int_equal(cfg->st.limits.smtp_data_timeout_ms, 180000);
	assert_int_equal(cfg->st.limits.smtp_message_timeout_ms, 1800000);
	assert_int_equal(cfg->st.limits.smtp_setup_timeout_ms, 60000);
	assert_int_equal(cfg->st.limits.smtp_max_errors, 10);
	assert_int_equal(cfg->st.limits.smtp_max_junk_commands, 100);
	assert_string_equal(cfg->st.initial_mailboxes.special_use.sent, "Sent");
	assert_string_equal(cfg->st.initial_mailboxes.special_use.draft, "Drafts");
	assert_int_equal(cfg->st.initial_mailboxes.regular.n, 0);

	/* Domains and accounts. */
	assert_int_equal(cfg->dom.domains.n, 2);
	assert_string_equal(DOMAIN(cfg, 0)->name, "example.org");
	assert_string_equal(DOMAIN(cfg, 0)->description, "Example");
	assert_int_equal(DOMAIN(cfg, 0)->localpart_catchall_separators.n, 1);
	assert_string_equal(DOMAIN(cfg, 0)->localpart_catchall_separators.v[0], "+");
	assert_string_equal(DOMAIN(cfg, 1)->name, "example.net");
	assert_int_equal(DOMAIN(cfg, 1)->localpart_catchall_separators.n, 0);
	assert_int_equal(cfg->dom.accounts.n, 2);
	a = config_account_find(cfg, "mjl");
	assert_ptr_equal(a, ACCOUNT(cfg, 0));
	assert_string_equal(a->domain, "example.org");
	assert_int_equal(a->domain_mark.line, 8);
	assert_int_equal(a->domain_mark.col, 13);
	assert_string_equal(a->full_name, "M J L");
	assert_int_equal(a->quota_message_size, 1LL << 30);
	assert_int_equal(a->max_message_size, 0);
	assert_int_equal(a->destinations.n, 3);
	assert_string_equal(DEST(a, 0)->name, "mjl@example.org");
	assert_null(DEST(a, 0)->mailbox);
	assert_string_equal(DEST(a, 1)->name, "@example.net");
	assert_string_equal(DEST(a, 1)->mailbox, "Catchall");
	assert_int_equal(DEST(a, 2)->rulesets.n, 1);
	const struct config_ruleset *rs = DEST(a, 2)->rulesets.v;
	assert_string_equal(rs->smtp_mail_from_regexp, "^.*@lists\\.example\\.org$");
	assert_string_equal(rs->mailbox, "Lists");
	assert_non_null(config_account_find(cfg, "other"));
	assert_null(config_account_find(cfg, "nobody"));
	assert_null(config_account_find(cfg, "MJL"));
	config_free(&cfg);
	assert_null(cfg);
	config_free(&cfg); /* NULL is accepted */
}

static void
test_paths(void **state)
{
	struct config *cfg;
	char *s;

	/* Config directory ".": paths stay relative as given. */
	assert_int_equal(parse(static_yaml, domains_yaml, ".", &cfg), 1);
	assert_string_equal(cfg->data_dir, "../data");
	assert_string_equal(cfg->control_socket, "../data/ctl");
	assert_string_equal(((struct config_keycert *)LISTENER(cfg, 0)->tls.keycerts.v)->cert_file, "certs/cert.pem");
	config_free(&cfg);

	/* An absolute DataDir, and a ControlSocket relative to DataDir. */
	s = replace(static_yaml, "DataDir: ../data\n", "DataDir: /var/lib/mox\nControlSocket: run/ctl\n");
	assert_int_equal(parse(s, domains_yaml, "/etc/mox", &cfg), 1);
	assert_string_equal(cfg->data_dir, "/var/lib/mox");
	assert_string_equal(cfg->control_socket, "/var/lib/mox/run/ctl");
	config_free(&cfg);
	free(s);

	/* DataDir defaults to ../data; an absolute ControlSocket stays. */
	s = replace(static_yaml, "DataDir: ../data\n", "ControlSocket: /run/mox.sock\n");
	assert_int_equal(parse(s, domains_yaml, "/etc/mox", &cfg), 1);
	assert_string_equal(cfg->data_dir, "/etc/mox/../data");
	assert_string_equal(cfg->control_socket, "/run/mox.sock");
	config_free(&cfg);
	free(s);

	/* A control socket path that does not fit in sun_path. */
	s = replace(static_yaml, "DataDir: ../data\n",
	    "DataDir: /0123456789/0123456789/0123456789/0123456789/0123456789/0123456789/0123456789/0123456789/0123456789\n");
	expect_err(s, domains_yaml,
	    "mox.yaml: ControlSocket: path \"/0123456789/0123456789/0123456789/0123456789/0123456789/0123456789/"
	    "0123456789/0123456789/0123456789/ctl\" is too long for a unix socket (max 99)");
	free(s);
}

static void
test_static_errors(void **state)
{
	expect_static_err("LogLevel: debug", "LogLevel: verbose",
	    "mox.yaml: LogLevel: unknown level \"verbose\" (error, info, debug, trace)");
	expect_static_err("LogLevel: debug", "LogLevel: DEBUG",
	    "mox.yaml: LogLevel: unknown level \"DEBUG\" (error, info, debug, trace)");
	expect_static_err("  smtp: error", "  smtp: loud", "mox.yaml: PackageLogLevels.smtp: unknown level \"loud\"");
	expect_static_err("Hostname: mail.example.org", "Hostname: Mail.Example.org",
	    "mox.yaml: Hostname: \"Mail.Example.org\" is not a lowercase host name");
	expect_static_err("Hostname: mail.example.org", "Hostname: mail..example.org",
	    "mox.yaml: Hostname: \"mail..example.org\" is not a lowercase host name");
	expect_static_err("Hostname: mail.example.org", "Hostname: \"mail example\"",
	    "mox.yaml: Hostname: \"mail example\" is not a lowercase host name");
	expect_static_err("Hostname: mail.example.org\n", "", "mox.yaml:1:1: missing required key \"Hostname\"");
	expect_static_err("    IPs: [127.0.0.1]", "    IPs: []",
	    "mox.yaml:28:10: Listeners.internal.IPs: at least one IP is required");
	expect_static_err("    IPs: [127.0.0.1]", "    IPs:",
	    "mox.yaml:28:9: Listeners.internal.IPs: at least one IP is required");
	expect_static_err("    IPs: [127.0.0.1]", "    IPs: [127.0.0.256]",
	    "mox.yaml:28:10: Listeners.internal.IPs: \"127.0.0.256\" is not an IP address");
	expect_static_err("      - \"::\"", "      - \"::g\"",
	    "mox.yaml:12:7: Listeners.public.IPs: \"::g\" is not an IP address");
	expect_static_err("    IPs: [127.0.0.1]", "    IPs: [localhost]",
	    "mox.yaml:28:10: Listeners.internal.IPs: \"localhost\" is not an IP address");
	/* An empty listener still needs its IPs. */
	expect_static_err("  internal:\n    IPs: [127.0.0.1]\n    IMAP:\n      Enabled: true\n      NoRequireSTARTTLS: true\n"
	    "    MetricsHTTP:\n      Enabled: true\n", "  internal:\n",
	    "mox.yaml:27:12: Listeners.internal: missing required key \"IPs\"");
	expect_static_err("Listeners:\n", "Listeners: {}\nX:\n",
	    "mox.yaml:10:1: unknown key \"X\" (known: DataDir, LogLevel, PackageLogLevels, Hostname, User, "
	    "NoFixPermissions, ControlSocket, LocalServe, DNSResolver, Postmaster, Listeners, Limits, InitialMailboxes)");
	expect_static_err("    MetricsHTTP:\n", "    IMAPS:\n      Enabled: true\n    MetricsHTTP:\n",
	    "mox.yaml: Listeners.internal.IMAPS: needs TLS.KeyCerts");
	expect_static_err("    MetricsHTTP:\n", "    ALPN:\n      Enabled: true\n    MetricsHTTP:\n",
	    "mox.yaml: Listeners.internal.ALPN: needs TLS.KeyCerts");
	expect_static_err("      Enabled: true\n      NoRequireSTARTTLS: true\n",
	    "      Enabled: true\n      NoRequireSTARTTLS: true\n      Port: 8010\n",
	    "mox.yaml:34:7: Listeners.internal.MetricsHTTP.Port: port 8010 on 127.0.0.1 is also used by "
	    "Listeners.internal.IMAP");
	expect_static_err("      Port: 8443\n", "      Port: 25\n",
	    "mox.yaml:26:13: Listeners.public.HTTPS.Port: port 25 on 0.0.0.0 is also used by Listeners.public.SMTP");
	/* Across listeners, on the same IP. */
	expect_static_err("    IPs: [127.0.0.1]\n    IMAP:\n      Enabled: true\n",
	    "    IPs: [127.0.0.1, \"::\"]\n    IMAP:\n      Enabled: true\n      Port: 993\n",
	    "mox.yaml:31:13: Listeners.internal.IMAP.Port: port 993 on :: is also used by Listeners.public.IMAPS");
	/* A disabled service's port does not count. */
	expect_static_err("      Port: 8443\n", "      Port: 465\n",
	    "mox.yaml:26:13: Listeners.public.HTTPS.Port: port 465 on 0.0.0.0 is also used by "
	    "Listeners.public.Submissions");
	expect_static_err("      Port: 8443", "      Port: 0", "mox.yaml:26:13: Listeners.public.HTTPS.Port: value 0 out of range 1..65535");
	expect_static_err("          KeyFile: /abs/key.pem\n", "",
	    "mox.yaml:16:11: Listeners.public.TLS.KeyCerts[0]: missing required key \"KeyFile\"");
	expect_static_err("    TLS:\n", "    TLS:\n      MinVersion: TLSv1.1\n",
	    "mox.yaml: Listeners.public.TLS.MinVersion: must be TLSv1.2 or TLSv1.3");
	expect_static_err("  MaxMessageSize: 50m", "  MaxMessageSize: 1",
	    "mox.yaml:35:19: Limits.MaxMessageSize: value 1 out of range 1024..1099511627776");
	expect_static_err("  IMAPTimeoutIdle: 1h", "  IMAPTimeoutIdle: 59s",
	    "mox.yaml:36:20: Limits.IMAPTimeoutIdle: value 59s out of range 60000..86400000");
	expect_static_err("  Account: mjl", "  Account: nobody", "mox.yaml: Postmaster.Account: unknown account \"nobody\"");
}

static void
test_service_port_defaults_clash(void **state)
{
	/* HTTPS and ALPN both default to 443: the error points at the ALPN mapping, line 27. */
	expect_static_err("      Port: 8443\n", "    ALPN:\n      Enabled: true\n",
	    "mox.yaml:27:7: Listeners.public.ALPN.Port: port 443 on 0.0.0.0 is also used by Listeners.public.HTTPS");
}

static void
test_domains_errors(void **state)
{
	expect_domains_err("    Domain: example.net", "    Domain: example.com",
	    "domains.yaml:20:13: Accounts.other.Domain: unknown domain \"example.com\"");
	expect_domains_err("      other@example.net: {}", "      other@example.com: {}",
	    "domains.yaml: Accounts.other.Destinations.other@example.com: domain example.com is not in Domains");
	expect_domains_err("      other@example.net: {}", "      other: {}",
	    "domains.yaml: Accounts.other.Destinations.other: expected localpart@domain or @domain");
	expect_domains_err("      other@example.net: {}", "      MJL@example.org: {}",
	    "domains.yaml: Accounts.other.Destinations.MJL@example.org: address also belongs to account mjl");
	expect_domains_err("      other@example.net: {}", "      \"@example.net\": {}",
	    "domains.yaml: Accounts.other.Destinations.@example.net: address also belongs to account mjl");
	expect_domains_err("      mjl@example.org:\n", "      mjl@example.org:\n      Mjl@example.org:\n",
	    "domains.yaml: Accounts.mjl.Destinations.Mjl@example.org: address also belongs to account mjl");
	expect_domains_err("[+]", "[+-]",
	    "domains.yaml: Domains.example.org.LocalpartCatchallSeparators: separators are single characters");
	expect_domains_err("[+]", "[\"\"]",
	    "domains.yaml: Domains.example.org.LocalpartCatchallSeparators: separators are single characters");
	expect_domains_err("  example.net:\n", "  Example.NET:\n", "domains.yaml: Domains.Example.NET: not a lowercase domain name");
	expect_domains_err("  other:\n", "  \"bad name\":\n",
	    "domains.yaml: Accounts.bad name: account names use letters, digits and . _ - @ +");
	expect_domains_err("    Destinations:\n      other@example.net: {}\n", "",
	    "domains.yaml:20:5: Accounts.other: missing required key \"Destinations\"");
	expect_domains_err("            Mailbox: Lists\n", "",
	    "domains.yaml:16:13: Accounts.mjl.Destinations.postmaster@example.org.Rulesets[0]: missing required key "
	    "\"Mailbox\"");
	expect_domains_err("    QuotaMessageSize: 1g", "    QuotaMessageSize: \"1g\"",
	    "domains.yaml:18:23: Accounts.mjl.QuotaMessageSize: expected a size (e.g. 100m), got a quoted string");
	/* Postmaster.Account must name an account in domains.yaml. */
	expect_domains_err("  mjl:\n", "  mox:\n", "mox.yaml: Postmaster.Account: unknown account \"mjl\"");
}

static void
test_yaml_errors(void **state)
{
	/* Errors from the loader name the file, position and key path. */
	expect_static_err("      Enabled: true\n      Port: 8443", "      Enabled: yes\n      Port: 8443",
	    "mox.yaml:25:16: Listeners.public.HTTPS.Enabled: expected true or false, got \"yes\"");
	expect_static_err("      Port: 8443", "      Port: \"8443\"",
	    "mox.yaml:26:13: Listeners.public.HTTPS.Port: expected an integer, got a quoted string");
	expect_domains_err("    FullName: M J L", "    FullName: *x", "domains.yaml:9:15: found undefined alias");
	expect_domains_err("    Description: Example", "    Description: !!str Example",
	    "domains.yaml:3:18: Domains.example.org.Description: explicit tags are not allowed");
}

static void
test_describe(void **state)
{
	struct mbuf b;
	struct config_static st;
	struct config_domains dom;

	/* The annotated example of each schema loads against that schema. */
	mbuf_init(&b, 1 << 20);
	cfg_describe(&config_static_schema, &b);
	assert_non_null(strstr(b.data, "# (a string, required)\nHostname: mail.example.org\n"));
	assert_non_null(strstr(b.data, "Listeners:\n  # Listener name, e.g. public or internal.\n  public:\n"));
	memset(&st, 0, sizeof(st));
	if (cfg_parse(&config_static_schema, &st, b.data, b.len, "describe", err, sizeof(err)) != 1)
		fail_msg("%s\n%s", err, b.data);
	assert_string_equal(st.hostname, "mail.example.org");
	assert_string_equal(st.data_dir, "../data");
	assert_int_equal(st.listeners.n, 1);
	assert_int_equal(((struct config_listener *)st.listeners.v)->ips.n, 2);
	assert_string_equal(((struct config_listener *)st.listeners.v)->ips.v[1], "::");
	assert_int_equal(((struct config_listener *)st.listeners.v)->svc[SVC_IMAPS].port, 993);
	assert_int_equal(st.limits.max_message_size, 100LL << 20);
	cfg_free(&config_static_schema, &st);
	mbuf_clear(&b);

	mbuf_init(&b, 1 << 20);
	cfg_describe(&config_domains_schema, &b);
	memset(&dom, 0, sizeof(dom));
	if (cfg_parse(&config_domains_schema, &dom, b.data, b.len, "describe", err, sizeof(err)) != 1)
		fail_msg("%s\n%s", err, b.data);
	assert_int_equal(dom.domains.n, 1);
	assert_int_equal(dom.accounts.n, 1);
	const struct config_account *a = dom.accounts.v;
	assert_int_equal(a->destinations.n, 1);
	const struct config_destination *d = a->destinations.v;
	assert_int_equal(d->rulesets.n, 1);
	const struct config_ruleset *rs = d->rulesets.v;
	assert_string_equal(rs->smtp_mail_from_regexp, "^.*@lists\\.example\\.org$");
	assert_int_equal(rs->headers_regexp.n, 1);
	assert_string_equal(rs->headers_regexp.keys[0], "^list-id$");
	assert_string_equal(rs->headers_regexp.vals[0], "<dev\\.example\\.org>");
	cfg_free(&config_domains_schema, &dom);
	mbuf_clear(&b);
}

static void
test_misc(void **state)
{
	assert_true(config_svc_implicit_tls(SVC_IMAPS));
	assert_true(config_svc_implicit_tls(SVC_SUBMISSIONS));
	assert_true(config_svc_implicit_tls(SVC_HTTPS));
	assert_true(config_svc_implicit_tls(SVC_ALPN));
	assert_false(config_svc_implicit_tls(SVC_SMTP));
	assert_false(config_svc_implicit_tls(SVC_IMAP));
	assert_false(config_svc_implicit_tls(SVC_METRICS));
	assert_string_equal(config_svc_names[SVC_IMAPS], "IMAPS");
	assert_string_equal(config_svc_names[SVC_METRICS], "MetricsHTTP");
}

static void
test_load(void **state)
{
	char dir[] = "/tmp/mox-test-config-XXXXXX";
	char *sp, *dp, *cmd;
	struct config *cfg = NULL;
	FILE *f;

	assert_non_null(mkdtemp(dir));
	sp = xasprintf("%s/mox.yaml", dir);
	dp = xasprintf("%s/domains.yaml", dir);
	f = fopen(sp, "w");
	assert_non_null(f);
	fputs(static_yaml, f);
	fclose(f);

	/* domains.yaml is missing. */
	assert_int_equal(config_load(sp, &cfg, err, sizeof(err)), -1);
	assert_null(cfg);
	char *want = xasprintf("%s: %s", dp, strerror(ENOENT));
	assert_string_equal(err, want);
	free(want);

	f = fopen(dp, "w");
	assert_non_null(f);
	fputs(domains_yaml, f);
	fclose(f);
	if (config_load(sp, &cfg, err, sizeof(err)) != 1)
		fail_msg("%s", err);
	assert_string_equal(cfg->static_path, sp);
	assert_string_equal(cfg->domains_path, dp);
	assert_string_equal(cfg->dir, dir);
	char *data = xasprintf("%s/../data", dir);
	assert_string_equal(cfg->data_dir, data);
	free(data);
	config_free(&cfg);

	cmd = xasprintf("rm -rf '%s'", dir);
	assert_int_equal(system(cmd), 0);
	free(cmd);
	free(sp);
	free(dp);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_valid),
		cmocka_unit_test(test_paths),
		cmocka_unit_test(test_static_errors),
		cmocka_unit_test(test_service_port_defaults_clash),
		cmocka_unit_test(test_domains_errors),
		cmocka_unit_test(test_yaml_errors),
		cmocka_unit_test(test_describe),
		cmocka_unit_test(test_misc),
		cmocka_unit_test(test_load),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

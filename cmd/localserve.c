/*
 * localserve: a zero-configuration local server for testing (as the Go mox's
 * localserve): on first start it writes D/mox.yaml, D/domains.yaml, D/data and
 * a self-signed certificate for localhost; later starts reuse what is in D, so
 * its files may be edited (e.g. ports) after -initonly.
 */
#define _GNU_SOURCE 1
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cmd/cmd.h"
#include "daemon/log.h"
#include "daemon/server.h"
#include "daemon/tls.h"

static const char domains_yaml[] =
	"# Domains and accounts of the local test server (mox localserve).\n"
	"Domains:\n"
	"  localhost:\n"
	"    LocalpartCatchallSeparators:\n"
	"      - \"+\"\n"
	"Accounts:\n"
	"  mox:\n"
	"    Domain: localhost\n"
	"    Destinations:\n"
	"      mox@localhost: {}\n"
	"      # Catch-all: mail to any address at localhost lands in this account.\n"
	"      \"@localhost\": {}\n";

static bool
ipv6_loopback_works(void)
{
	struct sockaddr_in6 s6 = {0};
	int fd = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0), ok;

	if (fd < 0)
		return false;
	s6.sin6_family = AF_INET6;
	s6.sin6_addr = in6addr_loopback;
	ok = bind(fd, (struct sockaddr *)&s6, sizeof(s6)) == 0;
	close(fd);
	return ok;
}

static int
write_new_file(const char *path, const char *data, char *err, size_t errlen)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0640);

	if (fd < 0 || write_all(fd, data, strlen(data)) < 0 || fsync(fd) < 0) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		if (fd >= 0)
			close(fd);
		return -1;
	}
	close(fd);
	return 1;
}

static int
init_dir(const char *dir, char *err, size_t errlen)
{
	char *p = NULL, *cert = NULL, *key = NULL;
	struct mbuf y;
	struct passwd *pw = getpwuid(geteuid());
	const char *hosts[] = {"localhost", NULL};
	int r = -1;

	mbuf_init(&y, 1 << 16);
	if (mkdir_p(dir, 0750) < 0) {
		snprintf(err, errlen, "%s: %s", dir, strerror(errno));
		goto out;
	}
	p = xasprintf("%s/data", dir);
	if (mkdir_p(p, 0750) < 0) {
		snprintf(err, errlen, "%s: %s", p, strerror(errno));
		goto out;
	}
	cert = xasprintf("%s/localhost.crt.pem", dir);
	key = xasprintf("%s/localhost.key.pem", dir);
	if (access(cert, F_OK) != 0 && tls_selfsigned_write(hosts, cert, key, err, errlen) < 0)
		goto out;
	mbuf_printf(&y,
	    "# Configuration of the local test server (mox localserve). Edit freely; it is\n"
	    "# reused on the next start. See mox config describe-static for every key.\n"
	    "DataDir: data\n"
	    "LogLevel: info\n"
	    "Hostname: localhost\n"
	    "User: %s\n"
	    "NoFixPermissions: true\n"
	    "LocalServe: true\n"
	    "# No internet here: incoming mail gets no SPF/DKIM checks unless a DNS server is\n"
	    "# named, e.g. a local one for tests.\n"
	    "#DNSResolver: 127.0.0.1@5353\n"
	    "Postmaster:\n"
	    "  Account: mox\n"
	    "  Mailbox: Inbox\n"
	    "Listeners:\n"
	    "  local:\n"
	    "    IPs:\n"
	    "      - 127.0.0.1\n"
	    "%s"
	    "    TLS:\n"
	    "      KeyCerts:\n"
	    "        - CertFile: localhost.crt.pem\n"
	    "          KeyFile: localhost.key.pem\n"
	    "    SMTP:\n"
	    "      Enabled: true\n"
	    "      Port: 1025\n"
	    "    Submission:\n"
	    "      Enabled: true\n"
	    "      Port: 1587\n"
	    "      NoRequireSTARTTLS: true\n"
	    "    Submissions:\n"
	    "      Enabled: true\n"
	    "      Port: 1465\n"
	    "    IMAP:\n"
	    "      Enabled: true\n"
	    "      Port: 1143\n"
	    "      NoRequireSTARTTLS: true\n"
	    "    IMAPS:\n"
	    "      Enabled: true\n"
	    "      Port: 1993\n"
	    "    HTTP:\n"
	    "      Enabled: true\n"
	    "      Port: 1080\n"
	    "    HTTPS:\n"
	    "      Enabled: true\n"
	    "      Port: 1443\n"
	    "    MetricsHTTP:\n"
	    "      Enabled: true\n"
	    "      Port: 1081\n"
	    "# Local testing: connection rates of test tools and benchmarks are not abuse.\n"
	    "Limits:\n"
	    "  MaxConnectionsPerIP: 100000\n"
	    "  MaxNewConnectionsPerIPPerMinute: 10000000\n",
	    pw ? pw->pw_name : "root", ipv6_loopback_works() ? "      - ::1\n" : "");
	free(p);
	p = xasprintf("%s/mox.yaml", dir);
	if (access(p, F_OK) != 0 && write_new_file(p, y.data, err, errlen) < 0)
		goto out;
	free(p);
	p = xasprintf("%s/domains.yaml", dir);
	if (access(p, F_OK) != 0 && write_new_file(p, domains_yaml, err, errlen) < 0)
		goto out;
	r = 1;
out:
	mbuf_clear(&y);
	free(p);
	free(cert);
	free(key);
	return r;
}

static char *
default_dir(void)
{
	const char *x = getenv("XDG_CONFIG_HOME");
	const char *home = getenv("HOME");

	if (x != NULL && x[0] == '/')
		return xasprintf("%s/mox-localserve", x);
	if (home == NULL || home[0] == '\0') {
		struct passwd *pw = getpwuid(getuid());
		home = pw ? pw->pw_dir : "/tmp";
	}
	return xasprintf("%s/.config/mox-localserve", home);
}

int
cmd_localserve(int argc, char **argv)
{
	const char *dir = NULL;
	bool initonly = false;
	const struct cmd_flag flags[] = {
		{"dir", FLAG_STRING, &dir, "directory for configuration and data"},
		{"initonly", FLAG_BOOL, &initonly, "write the configuration and exit"},
	};
	char err[1024], *d, *conf;
	struct config *cfg = NULL;
	int i, rc = 1;

	server_early_signals();
	i = cmd_flags("localserve", argc, argv, flags, ARRAY_LEN(flags));
	if (i < 0 || i != argc)
		return cmd_usage("localserve");
	d = dir ? xstrdup(dir) : default_dir();
	if (init_dir(d, err, sizeof(err)) < 0) {
		fprintf(stderr, "mox localserve: %s\n", err);
		free(d);
		return 1;
	}
	conf = xasprintf("%s/mox.yaml", d);
	if (initonly) {
		printf("mox localserve: configuration written to %s\n", conf);
		rc = 0;
		goto out;
	}
	cmd_config_path = conf;
	if (cmd_load_config(&cfg) < 0)
		goto out;
	fprintf(stderr,
	    "mox localserve: configuration in %s, data in %s\n"
	    "  account mox@localhost, password moxmoxmox (any address @localhost lands in it)\n"
	    "  IMAP 1143 (no TLS needed), IMAPS 1993, SMTP 1025, submission 1587 (no TLS needed),\n"
	    "  submissions 1465, HTTP 1080, HTTPS 1443, metrics 1081 (ports as in mox.yaml)\n"
	    "  stop with ctrl-c or: mox -config %s stop\n",
	    d, cfg->data_dir, conf);
	rc = serve_run(cfg, false);
out:
	config_free(&cfg);
	free(conf);
	free(d);
	return rc;
}

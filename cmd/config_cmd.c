/* config_cmd: mox config test|describe-static|describe-domains|printservice. */
#define _GNU_SOURCE 1
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cmd/cmd.h"

int
cmd_config_test(int argc, char **argv)
{
	struct config *cfg;

	if (argc != 0)
		return cmd_usage("config test");
	if (cmd_load_config(&cfg) < 0)
		return 1;
	printf("config OK: %s, %s: %zu listeners, %zu domains, %zu accounts\n", cfg->static_path,
	    cfg->domains_path, cfg->st.listeners.n, cfg->dom.domains.n, cfg->dom.accounts.n);
	config_free(&cfg);
	return 0;
}

static int
describe(const char *name, const struct cfg_schema *schema, const char *title)
{
	struct mbuf b;

	mbuf_init(&b, 1 << 20);
	mbuf_printf(&b, "# %s: every key with its type, default and meaning.\n", title);
	cfg_describe(schema, &b);
	fwrite(b.data, 1, b.len, stdout);
	mbuf_clear(&b);
	return 0;
}

int
cmd_config_describe_static(int argc, char **argv)
{
	if (argc != 0)
		return cmd_usage("config describe-static");
	return describe("config describe-static", &config_static_schema, "mox.yaml, the static configuration");
}

int
cmd_config_describe_domains(int argc, char **argv)
{
	if (argc != 0)
		return cmd_usage("config describe-domains");
	return describe("config describe-domains", &config_domains_schema,
	    "domains.yaml, domains and accounts (reloadable)");
}

int
cmd_config_printservice(int argc, char **argv)
{
	struct config *cfg;
	char bin[PATH_MAX], conf[PATH_MAX], data[PATH_MAX], dir[PATH_MAX];
	ssize_t n;

	if (argc != 0)
		return cmd_usage("config printservice");
	if (cmd_load_config(&cfg) < 0)
		return 1;
	n = readlink("/proc/self/exe", bin, sizeof(bin) - 1);
	if (n < 0)
		snprintf(bin, sizeof(bin), "/usr/local/bin/mox");
	else
		bin[n] = '\0';
	if (realpath(cfg->static_path, conf) == NULL)
		snprintf(conf, sizeof(conf), "%s", cfg->static_path);
	if (realpath(cfg->dir, dir) == NULL)
		snprintf(dir, sizeof(dir), "%s", cfg->dir);
	if (realpath(cfg->data_dir, data) == NULL)
		snprintf(data, sizeof(data), "%s", cfg->data_dir);
	printf("# Install as /etc/systemd/system/mox.service, then: systemctl daemon-reload && systemctl enable --now mox\n"
	    "[Unit]\n"
	    "Description=mox mail server\n"
	    "After=network-online.target\n"
	    "Wants=network-online.target\n"
	    "\n"
	    "[Service]\n"
	    "Type=simple\n"
	    "UMask=007\n"
	    "LimitNOFILE=65535\n"
	    "WorkingDirectory=%s\n"
	    "ExecStart=%s -config %s serve\n"
	    "ExecStop=%s -config %s stop\n"
	    "Restart=always\n"
	    "RestartSec=5s\n"
	    "# mox starts as root to bind its ports, then switches to User %s.\n"
	    "CapabilityBoundingSet=CAP_SETUID CAP_SETGID CAP_NET_BIND_SERVICE CAP_CHOWN CAP_FSETID CAP_DAC_OVERRIDE CAP_DAC_READ_SEARCH CAP_FOWNER\n"
	    "NoNewPrivileges=yes\n"
	    "ProtectSystem=strict\n"
	    "ReadWritePaths=%s %s\n"
	    "ProtectHome=yes\n"
	    "PrivateTmp=yes\n"
	    "PrivateDevices=yes\n"
	    "ProtectKernelTunables=yes\n"
	    "ProtectKernelModules=yes\n"
	    "ProtectKernelLogs=yes\n"
	    "ProtectControlGroups=yes\n"
	    "ProtectHostname=yes\n"
	    "ProtectClock=yes\n"
	    "ProtectProc=invisible\n"
	    "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX AF_NETLINK\n"
	    "RestrictNamespaces=yes\n"
	    "RestrictRealtime=yes\n"
	    "LockPersonality=yes\n"
	    "RemoveIPC=yes\n"
	    "SystemCallArchitectures=native\n"
	    "\n"
	    "[Install]\n"
	    "WantedBy=multi-user.target\n",
	    dir, bin, conf, bin, conf, cfg->st.user, dir, data);
	config_free(&cfg);
	return 0;
}

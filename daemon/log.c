/* log: logfmt writer with per-package levels. */
#include "daemon/log.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define LOG_MAX_PKGS 32
#define LOG_LINE_MAX 8192

static const char *level_names[] = {"error", "info", "debug", "trace"};

static struct {
	enum log_level level;
	int fd;
	int npkgs;
	char pkg[LOG_MAX_PKGS][32];
	enum log_level pkglevel[LOG_MAX_PKGS];
} logstate = {LOG_LVL_INFO, 2, 0, {{0}}, {0}};

int
log_level_parse(const char *s, enum log_level *lvl_r)
{
	for (size_t i = 0; i < ARRAY_LEN(level_names); i++) {
		if (strcmp(s, level_names[i]) == 0) {
			*lvl_r = (enum log_level)i;
			return 1;
		}
	}
	return -1;
}

const char *
log_level_name(enum log_level lvl)
{
	return (size_t)lvl < ARRAY_LEN(level_names) ? level_names[lvl] : "?";
}

void
log_set_level(enum log_level lvl)
{
	logstate.level = lvl;
}

void
log_set_package_level(const char *pkg, enum log_level lvl)
{
	for (int i = 0; i < logstate.npkgs; i++) {
		if (strcmp(logstate.pkg[i], pkg) == 0) {
			logstate.pkglevel[i] = lvl;
			return;
		}
	}
	if (logstate.npkgs == LOG_MAX_PKGS || strlen(pkg) >= sizeof(logstate.pkg[0]))
		return;
	snprintf(logstate.pkg[logstate.npkgs], sizeof(logstate.pkg[0]), "%s", pkg);
	logstate.pkglevel[logstate.npkgs++] = lvl;
}

void
log_reset_package_levels(void)
{
	logstate.npkgs = 0;
}

void
log_set_fd(int fd)
{
	logstate.fd = fd;
}

int
log_enabled(const char *pkg, enum log_level lvl)
{
	if (pkg != NULL) {
		for (int i = 0; i < logstate.npkgs; i++)
			if (strcmp(logstate.pkg[i], pkg) == 0)
				return lvl <= logstate.pkglevel[i];
	}
	return lvl <= logstate.level;
}

/* A value needs quoting when empty or when it holds space, '=', '"' or non-printables. */
void
log_fmt_value(struct mbuf *b, const char *v, size_t len)
{
	int quote = len == 0;
	static const char hex[] = "0123456789abcdef";

	for (size_t i = 0; i < len && !quote; i++) {
		unsigned char c = (unsigned char)v[i];
		if (c <= ' ' || c == '=' || c == '"' || c == '\\' || c >= 0x7f)
			quote = 1;
	}
	if (!quote) {
		mbuf_add(b, v, len);
		return;
	}
	mbuf_add(b, "\"", 1);
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)v[i];
		if (c == '"' || c == '\\') {
			char e[2] = {'\\', (char)c};
			mbuf_add(b, e, 2);
		} else if (c == '\n') {
			mbuf_add(b, "\\n", 2);
		} else if (c == '\r') {
			mbuf_add(b, "\\r", 2);
		} else if (c == '\t') {
			mbuf_add(b, "\\t", 2);
		} else if (c < ' ' || c == 0x7f) {
			char e[4] = {'\\', 'x', hex[c >> 4], hex[c & 15]};
			mbuf_add(b, e, 4);
		} else {
			/* UTF-8 and other bytes >= 0x80 pass through; the line stays one line. */
			mbuf_add(b, (const char *)&c, 1);
		}
	}
	mbuf_add(b, "\"", 1);
}

void
log_line(enum log_level lvl, const char *pkg, uint64_t cid, const char *msg, ...)
{
	struct mbuf b;
	struct timeval tv;
	struct tm tm;
	char ts[64];
	va_list ap;
	const char *k, *v;

	if (!log_enabled(pkg, lvl))
		return;
	mbuf_init(&b, LOG_LINE_MAX);
	gettimeofday(&tv, NULL);
	gmtime_r(&tv.tv_sec, &tm);
	strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S", &tm);
	mbuf_printf(&b, "t=%s.%03dZ l=%s m=", ts, (int)(tv.tv_usec / 1000), log_level_name(lvl));
	log_fmt_value(&b, msg, strlen(msg));
	if (pkg != NULL)
		mbuf_printf(&b, " pkg=%s", pkg);
	if (cid != 0)
		mbuf_printf(&b, " cid=%llx", (unsigned long long)cid);
	va_start(ap, msg);
	while ((k = va_arg(ap, const char *)) != NULL) {
		v = va_arg(ap, const char *);
		if (v == NULL)
			v = "";
		mbuf_printf(&b, " %s=", k);
		log_fmt_value(&b, v, strlen(v));
	}
	va_end(ap);
	/* A line cut at the maximum still ends in a newline. */
	if (b.data == NULL || mbuf_add(&b, "\n", 1) < 0) {
		if (b.data != NULL && b.len > 0)
			b.data[b.len - 1] = '\n';
	}
	if (b.data != NULL)
		(void)write_all(logstate.fd, b.data, b.len);
	mbuf_clear(&b);
}

/*
 * log: logfmt lines to stderr: `t=<time> l=<level> m="<msg>" pkg=<pkg> key=value ...`.
 * Owns the per-package log levels (from the config). Values are escaped so
 * client bytes can never forge a line. Does not rotate or write files.
 */
#ifndef MOX_LOG_H
#define MOX_LOG_H

#include <stddef.h>
#include <stdint.h>

#include "daemon/util.h"

enum log_level {
	LOG_LVL_ERROR = 0,
	LOG_LVL_INFO,
	LOG_LVL_DEBUG,
	LOG_LVL_TRACE,
};

/* Parse "error", "info", "debug", "trace". Returns 1 and sets *lvl_r, or -1. */
int log_level_parse(const char *s, enum log_level *lvl_r);
const char *log_level_name(enum log_level lvl);

/* Set the default level and one package's level (package names copied). */
void log_set_level(enum log_level lvl);
void log_set_package_level(const char *pkg, enum log_level lvl);
void log_reset_package_levels(void);
/* Whether a line of lvl for pkg would be written. */
int log_enabled(const char *pkg, enum log_level lvl);

/* Redirect output (default stderr, fd 2); used by tests. */
void log_set_fd(int fd);

/*
 * Write one line. kv is a sequence of key/value string pairs terminated by
 * NULL: ("cid", "12", "remote", "1.2.3.4", NULL). A NULL value prints as "".
 * cid 0 means no connection.
 */
void log_line(enum log_level lvl, const char *pkg, uint64_t cid, const char *msg, ...);

/* Formatting helpers for callers that build their own kv values. */
void log_fmt_value(struct mbuf *b, const char *v, size_t len);

#define log_error(pkg, cid, msg, ...) log_line(LOG_LVL_ERROR, pkg, cid, msg, ##__VA_ARGS__, NULL)
#define log_info(pkg, cid, msg, ...) log_line(LOG_LVL_INFO, pkg, cid, msg, ##__VA_ARGS__, NULL)
#define log_debug(pkg, cid, msg, ...) log_line(LOG_LVL_DEBUG, pkg, cid, msg, ##__VA_ARGS__, NULL)
#define log_trace(pkg, cid, msg, ...) log_line(LOG_LVL_TRACE, pkg, cid, msg, ##__VA_ARGS__, NULL)

#endif

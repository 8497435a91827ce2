/*
 * util: small helpers shared by the daemon and the commands.
 * Owns: allocation wrappers that abort on exhaustion, a byte buffer with a
 * hard maximum, and string helpers. Does not log and does no I/O.
 * Because allocation aborts, every size a client controls must be capped
 * before it reaches these functions.
 */
#ifndef MOX_UTIL_H
#define MOX_UTIL_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MOX_PRINTF(a, b) __attribute__((format(printf, a, b)))
#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

/* Allocation: never returns NULL; aborts with a message on exhaustion. */
void *xmalloc(size_t n);
void *xcalloc(size_t nmemb, size_t size);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);
char *xstrndup(const char *s, size_t n);
/* Returns a newly allocated formatted string; caller frees. */
char *xasprintf(const char *fmt, ...) MOX_PRINTF(1, 2);

/*
 * A growable byte buffer with a hard maximum. Appending past max fails
 * (returns -1) and leaves the buffer unchanged. data is always
 * NUL-terminated after len bytes (not counted in len).
 */
struct mbuf {
	char *data;
	size_t len;
	size_t cap;
	size_t max;
};

void mbuf_init(struct mbuf *b, size_t max);
void mbuf_clear(struct mbuf *b);
void mbuf_reset(struct mbuf *b); /* len = 0, keeps memory */
/* Return 0 on success, -1 when max would be exceeded. */
int mbuf_add(struct mbuf *b, const void *p, size_t n);
int mbuf_adds(struct mbuf *b, const char *s);
int mbuf_printf(struct mbuf *b, const char *fmt, ...) MOX_PRINTF(2, 3);
int mbuf_vprintf(struct mbuf *b, const char *fmt, va_list ap) MOX_PRINTF(2, 0);

/* snprintf that returns -1 on truncation or error, else the length. */
int xsnprintf(char *buf, size_t size, const char *fmt, ...) MOX_PRINTF(3, 4);

/* ASCII case-insensitive comparisons. */
bool str_ieq(const char *a, const char *b);
bool str_has_prefix(const char *s, const char *prefix);

/*
 * Parse a decimal integer in [min, max] from the whole string s.
 * Returns 1 and sets *v_r on success, -1 on syntax or range error.
 */
int parse_ll(const char *s, long long min, long long max, long long *v_r);

/* Monotonic clock in milliseconds. */
int64_t mono_ms(void);

/* Write all of buf to fd (retrying on EINTR/partial writes). 0 or -1. */
int write_all(int fd, const void *buf, size_t len);

/* Create directory and parents with mode (like mkdir -p). 0 or -1 (errno). */
int mkdir_p(const char *path, unsigned mode);

/*
 * Read a whole file of at most max bytes. Returns 1 and sets *buf_r (caller
 * frees, NUL-terminated) and *len_r; -1 on error (errno set; EFBIG when the
 * file is larger than max).
 */
int read_file(const char *path, size_t max, char **buf_r, size_t *len_r);

/* The value of a base64 character (RFC 4648 alphabet), -1 for any other byte. */
int b64_value(unsigned char c);

#endif

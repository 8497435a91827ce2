/*
 * tls: OpenSSL 3 server contexts built from a listener's TLS config, SNI
 * certificate choice, ALPN selection, and the self-signed certificate that
 * localserve generates. Owns the SSL_CTX objects; does not touch sockets.
 */
#ifndef MOX_TLS_H
#define MOX_TLS_H

#include <openssl/ssl.h>

#include "daemon/config.h"

/* Which ALPN protocol ids a context accepts. */
enum tls_alpn_mode {
	TLS_ALPN_NONE,  /* a single-service port: ALPN ignored unless it names another protocol */
	TLS_ALPN_IMAP,  /* implicit-TLS IMAP: "imap" acknowledged */
	TLS_ALPN_SMTP,  /* submissions: "smtp" acknowledged */
	TLS_ALPN_HTTP,  /* HTTPS: "http/1.1" */
	TLS_ALPN_ANY,   /* the ALPN dispatch port: imap, smtp, http/1.1 */
};

struct tls_ctx; /* opaque: the contexts of one listener */

/*
 * Build the contexts of a listener's TLS config (every KeyCert; the first is
 * the default, others are chosen by SNI). Returns 1 with *ctx_r set, or -1
 * with err naming the file and OpenSSL's reason.
 */
int tls_ctx_new(const struct config_tls *cfg, struct tls_ctx **ctx_r, char *err, size_t errlen);
void tls_ctx_free(struct tls_ctx **ctxp);

/* A new SSL for an accepted connection, for the given ALPN mode. NULL on error. */
SSL *tls_ssl_new(struct tls_ctx *ctx, enum tls_alpn_mode mode);

/* The ALPN protocol negotiated on ssl, "" when none. Valid while ssl lives. */
const char *tls_alpn_selected(SSL *ssl, char *buf, size_t buflen);

/*
 * Write a new self-signed ECDSA P-256 certificate for hostnames (NULL
 * terminated; the first is the subject CN, all are SANs) valid for ten years,
 * to cert_path and key_path (mode 0600). Returns 1 or -1 with err.
 */
int tls_selfsigned_write(const char *const *hostnames, const char *cert_path, const char *key_path,
    char *err, size_t errlen);

/* The last OpenSSL error as text into buf; returns buf. */
const char *tls_errstr(char *buf, size_t len);

#endif

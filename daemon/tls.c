/* tls: OpenSSL contexts, SNI, ALPN, self-signed certificates. */
#define _GNU_SOURCE 1
#include "daemon/tls.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>

struct tls_ctx {
	SSL_CTX **ctx; /* one per KeyCert; ctx[0] is the default */
	X509 **cert;
	size_t n;
};

static const char *const alpn_names[] = {"imap", "smtp", "http/1.1"};

const char *
tls_errstr(char *buf, size_t len)
{
	unsigned long e = ERR_get_error();

	if (e == 0)
		snprintf(buf, len, "unknown error");
	else
		ERR_error_string_n(e, buf, len);
	ERR_clear_error();
	return buf;
}

static int
sni_cb(SSL *ssl, int *alert, void *arg)
{
	struct tls_ctx *t = arg;
	const char *name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);

	if (name == NULL)
		return SSL_TLSEXT_ERR_NOACK;
	for (size_t i = 0; i < t->n; i++) {
		if (X509_check_host(t->cert[i], name, 0, 0, NULL) == 1) {
			if (i != 0)
				SSL_set_SSL_CTX(ssl, t->ctx[i]);
			return SSL_TLSEXT_ERR_OK;
		}
	}
	return SSL_TLSEXT_ERR_NOACK; /* the default certificate is used */
}

static int mode_idx = -1;

static int
alpn_cb(SSL *ssl, const unsigned char **out, unsigned char *outlen, const unsigned char *in,
    unsigned int inlen, void *arg)
{
	enum tls_alpn_mode mode = (enum tls_alpn_mode)(intptr_t)SSL_get_ex_data(ssl, mode_idx);

	for (unsigned int i = 0; i < inlen;) {
		unsigned int l = in[i];
		if (i + 1 + l > inlen)
			break;
		for (size_t k = 0; k < ARRAY_LEN(alpn_names); k++) {
			bool ok = false;
			if (strlen(alpn_names[k]) != l || memcmp(in + i + 1, alpn_names[k], l) != 0)
				continue;
			switch (mode) {
			case TLS_ALPN_ANY: ok = true; break;
			case TLS_ALPN_IMAP: ok = k == 0; break;
			case TLS_ALPN_SMTP: ok = k == 1; break;
			case TLS_ALPN_HTTP: ok = k == 2; break;
			case TLS_ALPN_NONE: ok = false; break;
			}
			if (ok) {
				*out = in + i + 1;
				*outlen = (unsigned char)l;
				return SSL_TLSEXT_ERR_OK;
			}
		}
		i += 1 + l;
	}
	/* The dispatch port must know the protocol; other ports carry on without ALPN. */
	return mode == TLS_ALPN_ANY ? SSL_TLSEXT_ERR_ALERT_FATAL : SSL_TLSEXT_ERR_NOACK;
}

static SSL_CTX *
ctx_one(const struct config_tls *cfg, const struct config_keycert *kc, X509 **cert_r, char *err, size_t errlen)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
	char e[256];
	FILE *f;

	if (ctx == NULL) {
		snprintf(err, errlen, "creating TLS context: %s", tls_errstr(e, sizeof(e)));
		return NULL;
	}
	SSL_CTX_set_min_proto_version(ctx, strcmp(cfg->min_version, "TLSv1.3") == 0 ? TLS1_3_VERSION : TLS1_2_VERSION);
	/* A peer's plain close must read as EOF, not as an error (OpenSSL 3). */
	SSL_CTX_set_options(ctx, SSL_OP_IGNORE_UNEXPECTED_EOF | SSL_OP_NO_RENEGOTIATION |
	    SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_NO_COMPRESSION);
	SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_SERVER);
	if (SSL_CTX_use_certificate_chain_file(ctx, kc->cert_file) != 1) {
		snprintf(err, errlen, "%s: loading certificate: %s", kc->cert_file, tls_errstr(e, sizeof(e)));
		goto fail;
	}
	if (SSL_CTX_use_PrivateKey_file(ctx, kc->key_file, SSL_FILETYPE_PEM) != 1) {
		snprintf(err, errlen, "%s: loading private key: %s", kc->key_file, tls_errstr(e, sizeof(e)));
		goto fail;
	}
	if (SSL_CTX_check_private_key(ctx) != 1) {
		snprintf(err, errlen, "%s: key does not match certificate %s", kc->key_file, kc->cert_file);
		goto fail;
	}
	if ((f = fopen(kc->cert_file, "r")) == NULL) {
		snprintf(err, errlen, "%s: %s", kc->cert_file, strerror(errno));
		goto fail;
	}
	*cert_r = PEM_read_X509(f, NULL, NULL, NULL);
	fclose(f);
	if (*cert_r == NULL) {
		snprintf(err, errlen, "%s: reading certificate: %s", kc->cert_file, tls_errstr(e, sizeof(e)));
		goto fail;
	}
	SSL_CTX_set_alpn_select_cb(ctx, alpn_cb, NULL);
	return ctx;
fail:
	SSL_CTX_free(ctx);
	return NULL;
}

int
tls_ctx_new(const struct config_tls *cfg, struct tls_ctx **ctx_r, char *err, size_t errlen)
{
	struct tls_ctx *t;

	if (cfg->keycerts.n == 0) {
		snprintf(err, errlen, "no KeyCerts configured");
		return -1;
	}
	if (mode_idx < 0)
		mode_idx = SSL_get_ex_new_index(0, NULL, NULL, NULL, NULL);
	t = xcalloc(1, sizeof(*t));
	t->ctx = xcalloc(cfg->keycerts.n, sizeof(SSL_CTX *));
	t->cert = xcalloc(cfg->keycerts.n, sizeof(X509 *));
	for (size_t i = 0; i < cfg->keycerts.n; i++) {
		const struct config_keycert *kc = &((const struct config_keycert *)cfg->keycerts.v)[i];
		t->ctx[i] = ctx_one(cfg, kc, &t->cert[i], err, errlen);
		if (t->ctx[i] == NULL) {
			tls_ctx_free(&t);
			return -1;
		}
		t->n = i + 1;
		SSL_CTX_set_tlsext_servername_callback(t->ctx[i], sni_cb);
		SSL_CTX_set_tlsext_servername_arg(t->ctx[i], t);
	}
	*ctx_r = t;
	return 1;
}

void
tls_ctx_free(struct tls_ctx **ctxp)
{
	struct tls_ctx *t = *ctxp;

	if (t == NULL)
		return;
	for (size_t i = 0; i < t->n; i++) {
		SSL_CTX_free(t->ctx[i]);
		X509_free(t->cert[i]);
	}
	free(t->ctx);
	free(t->cert);
	free(t);
	*ctxp = NULL;
}

SSL *
tls_ssl_new(struct tls_ctx *ctx, enum tls_alpn_mode mode)
{
	SSL *ssl = SSL_new(ctx->ctx[0]);

	if (ssl == NULL)
		return NULL;
	SSL_set_ex_data(ssl, mode_idx, (void *)(intptr_t)mode);
	return ssl;
}

const char *
tls_alpn_selected(SSL *ssl, char *buf, size_t buflen)
{
	const unsigned char *p = NULL;
	unsigned int len = 0;

	SSL_get0_alpn_selected(ssl, &p, &len);
	if (p == NULL || len >= buflen)
		len = 0;
	else
		memcpy(buf, p, len);
	buf[len] = '\0';
	return buf;
}

int
tls_selfsigned_write(const char *const *hostnames, const char *cert_path, const char *key_path,
    char *err, size_t errlen)
{
	EVP_PKEY *key = NULL;
	X509 *x = NULL;
	X509_NAME *name;
	X509_EXTENSION *ext;
	X509V3_CTX v3;
	struct mbuf san;
	unsigned char serial[16];
	BIGNUM *bn = NULL;
	FILE *f = NULL;
	char e[256];
	int fd, r = -1;

	mbuf_init(&san, 4096);
	key = EVP_EC_gen("P-256");
	x = X509_new();
	if (key == NULL || x == NULL)
		goto ossl;
	X509_set_version(x, 2);
	if (RAND_bytes(serial, sizeof(serial)) != 1)
		goto ossl;
	serial[0] &= 0x7f;
	bn = BN_bin2bn(serial, sizeof(serial), NULL);
	if (bn == NULL || BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x)) == NULL)
		goto ossl;
	X509_gmtime_adj(X509_getm_notBefore(x), -3600);
	X509_gmtime_adj(X509_getm_notAfter(x), 10L * 365 * 86400);
	X509_set_pubkey(x, key);
	name = X509_get_subject_name(x);
	X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8, (const unsigned char *)hostnames[0], -1, -1, 0);
	X509_set_issuer_name(x, name);
	for (size_t i = 0; hostnames[i] != NULL; i++)
		mbuf_printf(&san, "%sDNS:%s", i ? "," : "", hostnames[i]);
	if (strcmp(hostnames[0], "localhost") == 0)
		mbuf_adds(&san, ",IP:127.0.0.1,IP:::1");
	X509V3_set_ctx(&v3, x, x, NULL, NULL, 0);
	if ((ext = X509V3_EXT_conf_nid(NULL, &v3, NID_subject_alt_name, san.data)) == NULL)
		goto ossl;
	X509_add_ext(x, ext, -1);
	X509_EXTENSION_free(ext);
	if ((ext = X509V3_EXT_conf_nid(NULL, &v3, NID_basic_constraints, "critical,CA:FALSE")) == NULL)
		goto ossl;
	X509_add_ext(x, ext, -1);
	X509_EXTENSION_free(ext);
	if ((ext = X509V3_EXT_conf_nid(NULL, &v3, NID_ext_key_usage, "serverAuth")) == NULL)
		goto ossl;
	X509_add_ext(x, ext, -1);
	X509_EXTENSION_free(ext);
	if (X509_sign(x, key, EVP_sha256()) == 0)
		goto ossl;

	fd = open(key_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0 || (f = fdopen(fd, "w")) == NULL) {
		snprintf(err, errlen, "%s: %s", key_path, strerror(errno));
		if (fd >= 0)
			close(fd);
		goto out;
	}
	if (PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL, NULL) != 1 || fclose(f) != 0) {
		f = NULL;
		snprintf(err, errlen, "%s: writing key failed", key_path);
		goto out;
	}
	f = NULL;
	if ((f = fopen(cert_path, "w")) == NULL) {
		snprintf(err, errlen, "%s: %s", cert_path, strerror(errno));
		goto out;
	}
	if (PEM_write_X509(f, x) != 1 || fclose(f) != 0) {
		f = NULL;
		snprintf(err, errlen, "%s: writing certificate failed", cert_path);
		goto out;
	}
	f = NULL;
	r = 1;
	goto out;
ossl:
	snprintf(err, errlen, "generating certificate: %s", tls_errstr(e, sizeof(e)));
out:
	if (f != NULL)
		fclose(f);
	mbuf_clear(&san);
	BN_free(bn);
	X509_free(x);
	EVP_PKEY_free(key);
	return r;
}

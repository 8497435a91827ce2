/* auth: secrets cache, SASL sessions with channel binding, failed-login limits. */
#define _GNU_SOURCE 1
#include "daemon/auth.h"

#include <string.h>

#include <openssl/rand.h>
#include <tcutil.h>

#include "daemon/log.h"
#include "daemon/resolve.h"

struct auth {
	const struct config *cfg;
	TCMAP *secrets;  /* account name -> serialized secrets */
	TCMAP *failures; /* ipkey -> struct fail_state */
	uint8_t fake_key[32];
};

struct fail_state {
	uint32_t count;
	int64_t window_start;
};

struct auth_session {
	struct auth *a;
	struct sasl_server *sasl;
	enum sasl_mech mech;
	uint8_t cb[64];
	size_t cblen;
	char account[128];
};

struct auth *
auth_new(const struct config *cfg)
{
	struct auth *a = xcalloc(1, sizeof(*a));

	a->cfg = cfg;
	a->secrets = tcmapnew();
	a->failures = tcmapnew();
	if (RAND_bytes(a->fake_key, sizeof(a->fake_key)) != 1)
		abort();
	return a;
}

void
auth_free(struct auth **ap)
{
	struct auth *a = *ap;

	if (a == NULL)
		return;
	tcmapdel(a->secrets);
	tcmapdel(a->failures);
	OPENSSL_cleanse(a->fake_key, sizeof(a->fake_key));
	free(a);
	*ap = NULL;
}

void
auth_set_config(struct auth *a, const struct config *cfg)
{
	a->cfg = cfg;
}

void
auth_set_secrets(struct auth *a, const char *account, const void *blob, size_t len)
{
	if (len == 0)
		tcmapout2(a->secrets, account);
	else
		tcmapput(a->secrets, account, (int)strlen(account), blob, (int)len);
}

/* The lookup callback of the SASL module: username -> account -> cached secrets. */
static int
lookup(void *arg, const char *username, struct sasl_secrets *secrets_r)
{
	struct auth_session *s = arg;
	const struct config_account *acc;
	const void *blob;
	int len;
	const char *err = NULL;

	memset(secrets_r, 0, sizeof(*secrets_r));
	if (resolve_login(s->a->cfg, username, &acc) <= 0)
		return 0;
	snprintf(s->account, sizeof(s->account), "%s", acc->name);
	blob = tcmapget(s->a->secrets, acc->name, (int)strlen(acc->name), &len);
	if (blob == NULL)
		return 1; /* exists, but no password set: fails as "no secret" */
	if (sasl_secrets_parse(blob, (size_t)len, secrets_r, &err) < 0) {
		log_error("auth", 0, "stored secrets unreadable", "account", acc->name, "err", err ? err : "");
		return -1;
	}
	return 1;
}

/* Channel binding data of the connection: tls-exporter (1.3) or tls-unique (1.2). */
static const char *
channel_binding(SSL *ssl, uint8_t *buf, size_t size, size_t *len_r)
{
	if (ssl == NULL)
		return NULL;
	if (SSL_version(ssl) >= TLS1_3_VERSION) {
		if (SSL_export_keying_material(ssl, buf, 32, "EXPORTER-Channel-Binding", 24, NULL, 0, 0) != 1)
			return NULL;
		*len_r = 32;
		return "tls-exporter";
	}
	/* tls-unique: the first Finished message: the client's in a full handshake, ours when resumed. */
	size_t n = SSL_session_reused(ssl) ? SSL_get_finished(ssl, buf, size) : SSL_get_peer_finished(ssl, buf, size);
	if (n == 0 || n > size)
		return NULL;
	*len_r = n;
	return "tls-unique";
}

void
auth_mechs(SSL *ssl, bool allow_plaintext, bool with_login, const char *prefix, struct mbuf *out)
{
	static const enum sasl_mech order[] = {
		SASL_MECH_SCRAM_SHA_256_PLUS, SASL_MECH_SCRAM_SHA_256, SASL_MECH_SCRAM_SHA_1_PLUS,
		SASL_MECH_SCRAM_SHA_1, SASL_MECH_CRAM_MD5, SASL_MECH_PLAIN, SASL_MECH_LOGIN,
	};
	bool first = true;

	for (size_t i = 0; i < ARRAY_LEN(order); i++) {
		enum sasl_mech m = order[i];
		if (sasl_mech_is_plus(m) && ssl == NULL)
			continue;
		if (sasl_mech_is_plaintext(m) && !allow_plaintext)
			continue;
		if (m == SASL_MECH_LOGIN && !with_login)
			continue;
		mbuf_printf(out, "%s%s%s", first ? "" : " ", prefix, sasl_mech_name(m));
		first = false;
	}
}

struct auth_session *
auth_session_new(struct auth *a, const char *mechname, SSL *ssl, bool allow_plaintext)
{
	int m = sasl_mech_from_name(mechname);
	struct auth_session *s;
	struct sasl_server_settings set = {0};

	if (m < 0 || (sasl_mech_is_plaintext(m) && !allow_plaintext))
		return NULL;
	s = xcalloc(1, sizeof(*s));
	s->a = a;
	s->mech = m;
	set.lookup = lookup;
	set.lookup_arg = s;
	set.hostname = a->cfg->st.hostname;
	set.fake_key = a->fake_key;
	set.fake_key_len = sizeof(a->fake_key);
	set.cb_type = channel_binding(ssl, s->cb, sizeof(s->cb), &s->cblen);
	set.cb_data = s->cb;
	set.cb_data_len = s->cblen;
	if (sasl_mech_is_plus(m) && set.cb_type == NULL) {
		free(s);
		return NULL;
	}
	s->sasl = sasl_server_new(m, &set);
	return s;
}

void
auth_session_free(struct auth_session **sp)
{
	struct auth_session *s = *sp;

	if (s == NULL)
		return;
	sasl_server_free(&s->sasl);
	OPENSSL_cleanse(s->cb, sizeof(s->cb));
	free(s);
	*sp = NULL;
}

enum sasl_result
auth_step(struct auth_session *s, const char *b64, size_t len, struct mbuf *out_b64)
{
	enum sasl_result r = sasl_step_base64(s->sasl, b64, len, out_b64);

	if (r == SASL_SUCCESS && s->account[0] == '\0')
		return SASL_ERROR; /* cannot happen: success implies a lookup */
	return r;
}

const char *
auth_session_account(const struct auth_session *s)
{
	return s->account;
}

const char *
auth_session_username(const struct auth_session *s)
{
	return sasl_server_username(s->sasl);
}

const char *
auth_session_mech(const struct auth_session *s)
{
	return sasl_mech_name(s->mech);
}

const char *
auth_session_reason(const struct auth_session *s)
{
	return sasl_server_reason(s->sasl);
}

enum sasl_fail_kind
auth_session_fail_kind(const struct auth_session *s)
{
	return sasl_server_fail_kind(s->sasl);
}

int
auth_password(struct auth *a, const char *username, const char *password, const char **account_r,
    enum sasl_fail_kind *kind_r)
{
	struct auth_session s = {0};
	struct sasl_secrets sec;
	int r;

	s.a = a;
	*kind_r = SASL_FAIL_CREDENTIALS;
	r = lookup(&s, username, &sec);
	if (r < 0)
		return -1;
	if (r == 0) {
		/* Unknown user: spend the same work as a real check. */
		struct sasl_secrets fake;
		const char *e = NULL;
		if (sasl_secrets_derive("x", 0, &fake, &e) > 0)
			sasl_secrets_clear(&fake);
		return 0;
	}
	if (!(sec.flags & SASL_SECRET_SCRAM_SHA256)) {
		*kind_r = SASL_FAIL_NO_SECRET;
		sasl_secrets_clear(&sec);
		return 0;
	}
	r = sasl_secrets_verify_password(&sec, password, strlen(password));
	sasl_secrets_clear(&sec);
	if (r <= 0)
		return r < 0 ? -1 : 0;
	*account_r = config_account_find(a->cfg, s.account)->name;
	*kind_r = SASL_FAIL_NONE;
	return 1;
}

bool
auth_blocked(struct auth *a, const struct conn_info *ci)
{
	const struct fail_state *f;
	int len;

	f = tcmapget(a->failures, ci->ipkey, (int)ci->ipkeylen, &len);
	if (f == NULL || len != sizeof(*f))
		return false;
	if (mono_ms() - f->window_start >= 60000)
		return false;
	return (long long)f->count >= a->cfg->st.limits.max_failed_auth_per_ip_per_minute;
}

int64_t
auth_failed(struct auth *a, const struct conn_info *ci, const char *proto, const char *mech,
    const char *username, enum sasl_fail_kind kind, const char *reason)
{
	struct fail_state f = {0};
	const void *v;
	int len;
	int64_t now = mono_ms();

	v = tcmapget(a->failures, ci->ipkey, (int)ci->ipkeylen, &len);
	if (v != NULL && len == sizeof(f))
		memcpy(&f, v, sizeof(f));
	if (now - f.window_start >= 60000) {
		f.window_start = now;
		f.count = 0;
	}
	f.count++;
	tcmapput(a->failures, ci->ipkey, (int)ci->ipkeylen, &f, sizeof(f));
	/* Keep the table bounded: drop entries whose minute is over; only if that is not
	 * enough (a flood from very many addresses) start afresh. */
	if (tcmaprnum(a->failures) > 100000) {
		TCMAP *keep = tcmapnew();
		const char *k;
		int klen;
		tcmapiterinit(a->failures);
		while ((k = tcmapiternext(a->failures, &klen)) != NULL) {
			int vlen;
			const struct fail_state *fs = tcmapget(a->failures, k, klen, &vlen);
			if (fs != NULL && vlen == sizeof(*fs) && now - fs->window_start < 60000)
				tcmapput(keep, k, klen, fs, vlen);
		}
		tcmapdel(a->failures);
		a->failures = keep;
		if (tcmaprnum(a->failures) > 100000)
			tcmapclear(a->failures);
	}
	log_info(proto, ci->cid, "authentication failed", "remote", ci->remote_ip, "username", username ? username : "",
	    "mech", mech, "reason", reason ? reason : "");
	if (kind == SASL_FAIL_NO_SECRET)
		return 0;
	return a->cfg->st.limits.auth_failure_delay_ms;
}

void
auth_succeeded(struct auth *a, const struct conn_info *ci, const char *proto, const char *mech,
    const char *account)
{
	log_info(proto, ci->cid, "authenticated", "remote", ci->remote_ip, "account", account, "mech", mech);
}

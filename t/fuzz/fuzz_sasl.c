/*
 * Fuzz the SASL server: the first byte picks the mechanism and options, the
 * rest is split on 0xff into client messages fed to sasl_step() (or to
 * sasl_step_base64()). The whole input also goes through the base64
 * decoder (decode/encode must round-trip), the secrets parser (parse,
 * serialize, parse must agree) and the username and password checks.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/sasl.h"

static const uint8_t fake_key[] = "fuzz-fake-salt-key-0123456789";

/* Accounts: "user" and "tim" ("pencil"), "none" without secrets, "err" fails. */
static int
lookup(void *arg, const char *username, struct sasl_secrets *r)
{
	static struct sasl_secrets cached;
	static int have;

	memset(r, 0, sizeof(*r));
	if (strcmp(username, "err") == 0)
		return -1;
	if (strcmp(username, "none") == 0)
		return 1;
	if (strcmp(username, "user") != 0 && strcmp(username, "tim") != 0)
		return 0;
	if (!have) {
		/* Two iterations keep the fuzzer fast. */
		sasl_scram_secret_derive(SASL_SCRAM_SHA1, "pencil", 6,
					 (const uint8_t *)"salt", 4, 2,
					 &cached.scram_sha1);
		sasl_scram_secret_derive(SASL_SCRAM_SHA256, "pencil", 6,
					 (const uint8_t *)"salt", 4, 2,
					 &cached.scram_sha256);
		sasl_cram_md5_secret_derive("pencil", 6, cached.cram_md5);
		cached.flags = SASL_SECRET_SCRAM_SHA1 | SASL_SECRET_SCRAM_SHA256 |
			       SASL_SECRET_CRAM_MD5;
		have = 1;
	}
	*r = cached;
	return 1;
}

static void
check_base64(const uint8_t *data, size_t size)
{
	struct mbuf dec, enc;

	mbuf_init(&dec, 65536);
	mbuf_init(&enc, 131072);
	if (sasl_base64_decode((const char *)data, size, &dec) >= 0) {
		if (sasl_base64_encode(dec.data ? dec.data : "", dec.len, &enc) < 0 ||
		    enc.len != size || (size > 0 && memcmp(enc.data, data, size) != 0))
			abort(); /* strict decoding means canonical input */
	}
	mbuf_clear(&dec);
	mbuf_clear(&enc);
}

static void
check_secrets(const uint8_t *data, size_t size)
{
	struct sasl_secrets a, b;
	const char *err;
	struct mbuf out;

	if (sasl_secrets_parse(data, size, &a, &err) < 0)
		return;
	mbuf_init(&out, 4096);
	if (sasl_secrets_serialize(&a, &out) < 0 ||
	    sasl_secrets_parse(out.data, out.len, &b, &err) < 0 ||
	    memcmp(&a, &b, sizeof(a)) != 0)
		abort();
	mbuf_clear(&out);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct sasl_server_settings set;
	struct sasl_server *s;
	struct mbuf out, pw;
	const uint8_t *p, *end, *sep;
	enum sasl_result res;
	uint8_t opt;
	int steps = 0;

	check_base64(data, size);
	check_secrets(data, size);
	sasl_username_valid((const char *)data, size);
	mbuf_init(&pw, 1024);
	sasl_password_prep((const char *)data, size, &pw);
	mbuf_clear(&pw);
	if (size < 1)
		return 0;

	opt = data[0];
	memset(&set, 0, sizeof(set));
	set.lookup = lookup;
	set.hostname = "fuzz.example";
	set.fake_key = fake_key;
	set.fake_key_len = sizeof(fake_key) - 1;
	set.fake_iterations = 2;
	if (opt & 0x08) {
		set.cb_type = (opt & 0x40) ? "tls-unique" : "tls-exporter";
		set.cb_data = (const uint8_t *)"cbdata";
		set.cb_data_len = 6;
	}
	s = sasl_server_new((enum sasl_mech)((opt & 0x07) % SASL_MECH_COUNT), &set);
	if (opt & 0x20)
		sasl_server_set_nonce(s, sasl_server_mech(s) == SASL_MECH_CRAM_MD5 ?
						 "<1.2@fuzz.example>" : "srvnonce");
	mbuf_init(&out, 4096);
	p = data + 1;
	end = data + size;
	if (opt & 0x80) {
		/* No initial response. */
		res = (opt & 0x10) ? sasl_step_base64(s, NULL, 0, &out) :
				     sasl_step(s, NULL, 0, &out);
		if (res != SASL_CONTINUE)
			goto done;
	}
	for (;;) {
		sep = memchr(p, 0xff, (size_t)(end - p));
		if (sep == NULL)
			sep = end;
		if (opt & 0x10)
			res = sasl_step_base64(s, (const char *)p, (size_t)(sep - p), &out);
		else
			res = sasl_step(s, (const char *)p, (size_t)(sep - p), &out);
		/* Only the failing lookup of user "err" is a server error. */
		if (res == SASL_ERROR && (sasl_server_username(s) == NULL ||
					  strcmp(sasl_server_username(s), "err") != 0))
			abort();
		if (res != SASL_CONTINUE || sep == end || ++steps > 8)
			break;
		p = sep + 1;
	}
done:
	sasl_server_reason(s);
	sasl_server_fail_kind(s);
	sasl_server_free(&s);
	mbuf_clear(&out);
	return 0;
}

/* Unit tests for daemon/smtp_rules: header fields and ruleset matching. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "daemon/config.h"
#include "daemon/smtp_rules.h"

static const char static_yaml[] =
	"DataDir: data\n"
	"Hostname: mail.example.org\n"
	"Postmaster:\n"
	"  Account: mjl\n"
	"Listeners:\n"
	"  l:\n"
	"    IPs:\n"
	"      - 127.0.0.1\n"
	"    SMTP:\n"
	"      Enabled: true\n";

static const char domains_yaml[] =
	"Domains:\n"
	"  example.org: {}\n"
	"Accounts:\n"
	"  mjl:\n"
	"    Domain: example.org\n"
	"    Destinations:\n"
	"      mjl@example.org:\n"
	"        Rulesets:\n"
	"          - VerifiedDomain: lists.example\n"
	"            Mailbox: Verified\n"
	"          - VerifiedDomain: b\xc3\xbc" "cher.example\n"
	"            SMTPMailFromRegexp: \"^orders@\"\n"
	"            Mailbox: Books\n"
	"          - HeadersRegexp:\n"
	"              \"^list-id$\": \"<dev\\\\.lists\\\\.example>\"\n"
	"              \"^precedence$\": \"^list$\"\n"
	"            Mailbox: Lists/Dev\n"
	"          - SMTPMailFromRegexp: \"^NEWS@\"\n"
	"            Mailbox: News\n"
	"          - HeadersRegexp:\n"
	"              \"^subject$\": \"^(a+)+$\"\n"
	"            Mailbox: Slow\n"
	"          - HeadersRegexp:\n"
	"              \"^x-bad$\": \"(unclosed\"\n"
	"            Mailbox: Bad\n";

struct fixture {
	struct config *cfg;
	struct smtp_rules *rules;
	const struct config_destination *dest;
	int reports;
};

static void
report(void *arg, const char *key, const char *pattern, const char *msg)
{
	struct fixture *f = arg;

	assert_string_equal(key, "HeadersRegexp");
	assert_string_equal(pattern, "(unclosed");
	assert_non_null(msg);
	f->reports++;
}

static int
setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	char err[512];

	assert_int_equal(config_parse(static_yaml, strlen(static_yaml), "mox.yaml", domains_yaml, strlen(domains_yaml),
	    "domains.yaml", "/tmp", &f->cfg, err, sizeof(err)), 1);
	f->rules = smtp_rules_new(f->cfg, report, f);
	const struct config_account *a = config_account_find(f->cfg, "mjl");
	f->dest = &((const struct config_destination *)a->destinations.v)[0];
	*state = f;
	return 0;
}

static int
teardown(void **state)
{
	struct fixture *f = *state;

	smtp_rules_free(&f->rules);
	assert_null(f->rules);
	config_free(&f->cfg);
	free(f);
	return 0;
}

static const char *
choose_verified(struct fixture *f, const char *from, const char *const *verified, size_t nverified, const char *hdr,
    bool *limit_r)
{
	struct smtp_hfield *h = NULL;
	size_t n = smtp_hfields_parse(hdr, strlen(hdr), &h);
	const char *mb = smtp_rules_mailbox(f->rules, f->dest, from, verified, nverified, h, n, limit_r);

	smtp_hfields_free(&h, n);
	return mb;
}

static const char *
choose(struct fixture *f, const char *from, const char *hdr, bool *limit_r)
{
	return choose_verified(f, from, NULL, 0, hdr, limit_r);
}

static void
test_hfields(void **state)
{
	const char *hdr = "Subject:  Hello\r\n World \r\nX-A:b\nno colon line\r\n\tstray\r\nList-ID: <X>\r\n\r\nBody: no\r\n";
	struct smtp_hfield *h;
	size_t n = smtp_hfields_parse(hdr, strlen(hdr), &h);

	assert_int_equal(n, 3);
	assert_string_equal(h[0].name, "subject");
	assert_string_equal(h[0].value, "hello world");
	assert_string_equal(h[1].name, "x-a");
	assert_string_equal(h[1].value, "b");
	assert_string_equal(h[2].name, "list-id");
	assert_string_equal(h[2].value, "<x>");
	smtp_hfields_free(&h, n);
	assert_null(h);

	assert_int_equal(smtp_hfields_parse("", 0, &h), 0);
	assert_null(h);
	assert_int_equal(smtp_hfields_parse("\r\nA: b\r\n", 8, &h), 0);
	/* No final line end, empty value. */
	n = smtp_hfields_parse("A:", 2, &h);
	assert_int_equal(n, 1);
	assert_string_equal(h[0].value, "");
	smtp_hfields_free(&h, n);
}

static void
test_hfields_limits(void **state)
{
	/* Many continuation lines: linear, one field. */
	size_t len = 200000;
	char *p = malloc(len + 1);
	memcpy(p, "A: x", 4);
	for (size_t i = 4; i + 3 <= len; i += 3)
		memcpy(p + i, "\n y", 3);
	p[len] = '\0';
	struct smtp_hfield *h;
	size_t n = smtp_hfields_parse(p, strlen(p), &h);
	assert_int_equal(n, 1);
	smtp_hfields_free(&h, n);
	/* Many fields: capped. */
	for (size_t i = 0; i + 4 <= len; i += 4)
		memcpy(p + i, "a:b\n", 4);
	n = smtp_hfields_parse(p, len - len % 4, &h);
	assert_int_equal(n, SMTP_RULES_MAX_FIELDS);
	smtp_hfields_free(&h, n);
	free(p);
}

static void
test_rules(void **state)
{
	struct fixture *f = *state;
	bool limit;

	assert_int_equal(f->reports, 1);
	assert_null(choose(f, "a@example.com", "Subject: hi\r\n\r\n", &limit));
	assert_false(limit);
	/* Both header pairs must match; names/values compared lower-cased. */
	assert_null(choose(f, "a@example.com", "List-Id: Dev <dev.LISTS.example>\r\n\r\n", NULL));
	assert_string_equal(choose(f, "a@example.com", "List-Id: Dev\r\n <dev.LISTS.example>\r\nPrecedence: List\r\n\r\n",
	    NULL), "Lists/Dev");
	/* MAIL FROM pattern is case-insensitive. */
	assert_string_equal(choose(f, "news@example.com", "Subject: x\r\n\r\n", NULL), "News");
	/* Catastrophic pattern: the match limit makes it a non-match. */
	char hdr[200];
	snprintf(hdr, sizeof(hdr), "Subject: %s!\r\n\r\n", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa");
	assert_null(choose(f, "a@example.com", hdr, &limit));
	assert_true(limit);
	assert_string_equal(choose(f, "a@example.com", "Subject: aaa\r\n\r\n", &limit), "Slow");
	/* The ruleset with a bad pattern never matches; VerifiedDomain needs a verified domain. */
	assert_null(choose(f, "a@lists.example", "X-Bad: (unclosed\r\n\r\n", NULL));
}

static void
test_verified_domain(void **state)
{
	struct fixture *f = *state;
	const char *same[] = {"lists.example"};
	const char *sub[] = {"other.example", "mail.lists.example"};
	const char *upper[] = {"LISTS.Example"};
	const char *near[] = {"xlists.example", "example", "lists.example.org", "s.example"};
	const char *books[] = {"xn--bcher-kva.example"};
	const char *books_sub[] = {"shop.xn--bcher-kva.example"};

	/* The domain itself, a subdomain of it, ASCII case ignored. */
	assert_string_equal(choose_verified(f, "a@x.example", same, 1, "Subject: x\r\n\r\n", NULL), "Verified");
	assert_string_equal(choose_verified(f, "a@x.example", sub, 2, "Subject: x\r\n\r\n", NULL), "Verified");
	assert_string_equal(choose_verified(f, "a@x.example", upper, 1, "Subject: x\r\n\r\n", NULL), "Verified");
	/* Not a parent, a suffix that is no label boundary, or a longer name. */
	assert_null(choose_verified(f, "a@x.example", near, 4, "Subject: x\r\n\r\n", NULL));
	/* The configured Unicode name is canonical (A-label) in the config. */
	assert_string_equal(choose_verified(f, "orders@shop.example", books, 1, "Subject: x\r\n\r\n", NULL), "Books");
	assert_string_equal(choose_verified(f, "orders@shop.example", books_sub, 1, "Subject: x\r\n\r\n", NULL),
	    "Books");
	/* Every condition of a ruleset must hold. */
	assert_null(choose_verified(f, "sales@shop.example", books, 1, "Subject: x\r\n\r\n", NULL));
	/* Later rulesets still match when the verified domains do not. */
	assert_string_equal(choose_verified(f, "news@x.example", near, 4, "Subject: x\r\n\r\n", NULL), "News");
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_hfields),
		cmocka_unit_test(test_hfields_limits),
		cmocka_unit_test_setup_teardown(test_rules, setup, teardown),
		cmocka_unit_test_setup_teardown(test_verified_domain, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

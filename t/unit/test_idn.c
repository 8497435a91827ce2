/* Tests for daemon/idn: canonical (lower-case A-label) domain names and the invalid ones. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "daemon/idn.h"

static char out[IDN_BUFSIZE];
static char err[256];

static void
expect_ok_(const char *in, const char *want, const char *file, int line)
{
	int r;

	err[0] = '\0';
	r = idn_domain_canon(in, strlen(in), out, sizeof(out), err, sizeof(err));
	if (r < 0 || strcmp(out, want) != 0 || (size_t)r != strlen(want))
		fail_msg("%s:%d: \"%s\": got %d \"%s\" (%s), want \"%s\"", file, line, in, r, out, err, want);
}
#define expect_ok(in, want) expect_ok_(in, want, __FILE__, __LINE__)

/* The conversion fails and err contains want. */
static void
expect_err_(const char *in, size_t len, const char *want, const char *file, int line)
{
	int r;

	err[0] = '\0';
	r = idn_domain_canon(in, len, out, sizeof(out), err, sizeof(err));
	if (r != -1 || strstr(err, want) == NULL)
		fail_msg("%s:%d: \"%.*s\": got %d \"%s\" err \"%s\", want error \"%s\"", file, line, (int)len, in, r, out,
		    err, want);
	/* The reason is plain ASCII: it goes into SMTP replies. */
	for (const char *p = err; *p; p++)
		if ((unsigned char)*p < 0x20 || (unsigned char)*p >= 0x7f)
			fail_msg("%s:%d: non-printable byte in err \"%s\"", file, line, err);
}
#define expect_err(in, want) expect_err_(in, strlen(in), want, __FILE__, __LINE__)

static void
test_ascii(void **state)
{
	expect_ok("example.org", "example.org");
	expect_ok("a", "a");
	expect_ok("Mail.Example.ORG", "mail.example.org");
	/* Plain ASCII labels keep their old meaning: '_', "--" in 3-4, leading hyphens. */
	expect_ok("_dmarc.example.org", "_dmarc.example.org");
	expect_ok("r3--sn-abc.example", "r3--sn-abc.example");
	expect_ok("-x.example", "-x.example");
	expect_ok("123.example", "123.example");
	expect_err("a b.example", "invalid character");
	expect_err("a!b.example", "invalid character");
	expect_err("a@b.example", "invalid character");
}

static void
test_ulabel(void **state)
{
	expect_ok("bücher.example", "xn--bcher-kva.example");
	/* Mixed case, in the ASCII and the non-ASCII letters. */
	expect_ok("BÜCHER.Example", "xn--bcher-kva.example");
	expect_ok("münchen.de", "xn--mnchen-3ya.de");
	/* Non-transitional: ß stays ß (IDNA2008), not "ss". */
	expect_ok("faß.de", "xn--fa-hia.de");
	/* NFC input: u + combining diaeresis is ü. */
	expect_ok("bu\xcc\x88" "cher.example", "xn--bcher-kva.example");
	/* UTS#46 maps fullwidth letters and the ideographic full stop. */
	expect_ok("\xef\xbd\x85xample.org", "example.org");
	expect_ok("bücher\xe3\x80\x82" "example", "xn--bcher-kva.example");
	expect_ok("例え.テスト", "xn--r8jz45g.xn--zckzah");
	/* Each label on its own: an ASCII label beside a U-label keeps "--". */
	expect_ok("ab--cd.bücher.example", "ab--cd.xn--bcher-kva.example");
}

static void
test_alabel(void **state)
{
	expect_ok("xn--bcher-kva.example", "xn--bcher-kva.example");
	expect_ok("XN--BCHER-KVA.EXAMPLE", "xn--bcher-kva.example");
	expect_ok("xn--Bcher-KVA.example", "xn--bcher-kva.example");
	expect_ok("xn--r8jz45g.xn--zckzah", "xn--r8jz45g.xn--zckzah");
}

static void
test_invalid_punycode(void **state)
{
	expect_err("xn--zz.example", "invalid A-label (xn--)");
	expect_err("xn--.example", "invalid A-label (xn--)");
	expect_err("xn--bcher-kva-.example", "invalid A-label (xn--)");
	expect_err("xn--a.example", "invalid A-label (xn--)");
	/* An A-label of a disallowed code point (U+1F600, an emoji). */
	expect_err("xn--e28h.example", "invalid A-label (xn--)");
}

static void
test_disallowed(void **state)
{
	expect_err("\xe2\x98\x83.example", "disallowed character");     /* U+2603 snowman */
	expect_err("\xf0\x9f\x98\x80.example", "disallowed character"); /* U+1F600 */
	expect_err("a\xe2\x80\x8d" "b.example", "invalid international domain name"); /* ZWJ out of context */
	expect_err("b\xc3\xbc-.example", "invalid international domain name"); /* hyphen at the end of a U-label */
	expect_err("b\xc3\xbc" "cher\xef\xbc\x81.example", "invalid"); /* fullwidth '!' maps to '!' */
	expect_err("b\xfc" "cher.example", "invalid UTF-8");
	expect_err("b\xc3.example", "invalid UTF-8");
	expect_err_("b\0c.example", 11, "NUL byte", __FILE__, __LINE__);
}

static void
test_lengths(void **state)
{
	char name[600];

	/* 63 octets is a label's limit, in ASCII and in the A-label form. */
	memset(name, 'a', 63);
	strcpy(name + 63, ".example");
	expect_ok(name, name);
	memset(name, 'a', 64);
	strcpy(name + 64, ".example");
	expect_err(name, "label longer than 63 octets");
	/* "ü" + 58 a: the A-label "xn--" + 58 a + "-" + 4 is 67 octets. */
	strcpy(name, "\xc3\xbc");
	memset(name + 2, 'a', 58);
	strcpy(name + 60, ".example");
	expect_err(name, "label longer than 63 octets");
	/* 253 octets in all is allowed, 254 not (four 62-octet labels and dots). */
	memset(name, 'a', 253);
	for (int i = 62; i < 253; i += 63)
		name[i] = '.';
	name[253] = '\0';
	expect_ok(name, name);
	name[253] = '.'; /* and the root dot on top is still fine */
	name[254] = '\0';
	out[0] = '\0';
	assert_int_equal(idn_domain_canon(name, 254, out, sizeof(out), err, sizeof(err)), 253);
	name[253] = 'a';
	expect_err(name, "domain name longer than 253 octets");
	/* The same through a U-label at the end. */
	memset(name, 'a', 250);
	for (int i = 62; i < 250; i += 63)
		name[i] = '.';
	strcpy(name + 250, ".\xc3\xbc");
	expect_err(name, "domain name longer than 253 octets");
	/* Input far too long is refused before conversion. */
	memset(name, 'a', sizeof(name) - 1);
	name[sizeof(name) - 1] = '\0';
	expect_err(name, "longer than");
	char big[IDN_INPUT_MAX + 10];
	memset(big, 'a', sizeof(big));
	expect_err_(big, sizeof(big), "domain name longer than 253 octets", __FILE__, __LINE__);
}

static void
test_dots_and_empty(void **state)
{
	expect_ok("example.org.", "example.org");
	expect_ok("b\xc3\xbc" "cher.example.", "xn--bcher-kva.example");
	expect_err("", "empty domain name");
	expect_err(".", "empty domain name");
	expect_err("example.org..", "empty label");
	expect_err(".example.org", "empty label");
	expect_err("a..b", "empty label");
	/* A label that UTS#46 maps to nothing (U+00AD soft hyphen) is empty, not dropped. */
	expect_err("\xc2\xad.example", "empty label");
}

static void
test_small_buffer(void **state)
{
	char small[8];

	assert_int_equal(idn_domain_canon("abc.de", 6, small, sizeof(small), err, sizeof(err)), 6);
	assert_string_equal(small, "abc.de");
	assert_int_equal(idn_domain_canon("abcd.efg", 8, small, sizeof(small), err, sizeof(err)), -1);
	assert_non_null(strstr(err, "output buffer"));
	/* A zero-size err is allowed. */
	assert_int_equal(idn_domain_canon("", 0, out, sizeof(out), NULL, 0), -1);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_ascii),
		cmocka_unit_test(test_ulabel),
		cmocka_unit_test(test_alabel),
		cmocka_unit_test(test_invalid_punycode),
		cmocka_unit_test(test_disallowed),
		cmocka_unit_test(test_lengths),
		cmocka_unit_test(test_dots_and_empty),
		cmocka_unit_test(test_small_buffer),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

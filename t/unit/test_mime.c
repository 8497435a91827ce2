/* Unit tests for index/mime: part tree, offsets, envelope, threading inputs,
 * RFC 2047/2231 decoding, cache encoding and the IMAP writers. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "index/mime.h"

static struct mime_msg *
parse(const char *s)
{
	struct mime_msg *m = NULL;
	assert_int_equal(mime_parse(s, strlen(s), NULL, &m), 1);
	assert_non_null(m);
	return m;
}

/* BODYSTRUCTURE (ext) or BODY of the root as a C string in buf. */
static const char *
bs(const struct mime_part *p, bool ext, unsigned flags)
{
	static char buf[8192];
	TCXSTR *o = tcxstrnew();
	mime_imap_bodystructure(p, ext, flags, o);
	snprintf(buf, sizeof(buf), "%s", TCXSTRPTR(o));
	tcxstrdel(o);
	return buf;
}

static const char *
env(const struct mime_envelope *e)
{
	static char buf[8192];
	TCXSTR *o = tcxstrnew();
	mime_imap_envelope(e, 0, o);
	snprintf(buf, sizeof(buf), "%s", TCXSTRPTR(o));
	tcxstrdel(o);
	return buf;
}

/* Bytes of the message at [off, off+len) as a string. */
static const char *
slice(const char *msg, uint64_t off, uint64_t len)
{
	static char buf[4096];
	assert_true(len < sizeof(buf));
	memcpy(buf, msg + off, len);
	buf[len] = '\0';
	return buf;
}

static const struct mime_part *
find(const struct mime_msg *m, const char *section, bool *is_msg)
{
	uint32_t nums[16];
	size_t n = 0;
	for (const char *p = section; *p; p++) {
		nums[n++] = (uint32_t)strtoul(p, (char **)&p, 10);
		if (*p == '\0')
			break;
	}
	return mime_part_find(m, nums, n, is_msg);
}

/* Encode, decode, and check the decoded structure writes the same output. */
static void
roundtrip(const struct mime_msg *m)
{
	TCXSTR *o = tcxstrnew();
	mime_cache_encode(m, o);
	struct mime_msg *d = NULL;
	const char *err = NULL;
	assert_int_equal(mime_cache_decode(TCXSTRPTR(o), (size_t)TCXSTRSIZE(o), NULL, &d, &err), 1);
	char a[8192];
	snprintf(a, sizeof(a), "%s", bs(&m->root, true, 0));
	assert_string_equal(bs(&d->root, true, 0), a);
	snprintf(a, sizeof(a), "%s", env(&m->env));
	assert_string_equal(env(&d->env), a);
	assert_string_equal(d->base_subject, m->base_subject);
	assert_int_equal(d->date, m->date);
	assert_int_equal(d->nrefs, m->nrefs);
	mime_msg_free(&d);
	assert_null(d);
	tcxstrdel(o);
}

static const char simple_msg[] =
	"From: Alice <alice@example.org>\r\n"
	"To: bob@example.com\r\n"
	"Subject: hello\r\n"
	"Date: Tue, 1 Jul 2003 10:52:37 +0200\r\n"
	"Message-ID: <abc@example.org>\r\n"
	"\r\n"
	"Hello Bob,\r\n"
	"how are you?\r\n";

static void
test_simple(void **state)
{
	struct mime_msg *m = parse(simple_msg);
	const struct mime_part *r = &m->root;
	assert_string_equal(slice(simple_msg, r->hdr_off, r->hdr_len),
			    "From: Alice <alice@example.org>\r\nTo: bob@example.com\r\n"
			    "Subject: hello\r\nDate: Tue, 1 Jul 2003 10:52:37 +0200\r\n"
			    "Message-ID: <abc@example.org>\r\n\r\n");
	assert_string_equal(slice(simple_msg, r->body_off, r->body_len),
			    "Hello Bob,\r\nhow are you?\r\n");
	/* what Dovecot answers for this message */
	assert_string_equal(bs(r, true, 0), "(\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL "
					    "\"7bit\" 26 2 NIL NIL NIL NIL)");
	assert_string_equal(bs(r, false, 0),
			    "(\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 26 2)");
	assert_string_equal(env(&m->env),
			    "(\"Tue, 1 Jul 2003 10:52:37 +0200\" \"hello\" "
			    "((\"Alice\" NIL \"alice\" \"example.org\")) "
			    "((\"Alice\" NIL \"alice\" \"example.org\")) "
			    "((\"Alice\" NIL \"alice\" \"example.org\")) "
			    "((NIL NIL \"bob\" \"example.com\")) NIL NIL NIL \"<abc@example.org>\")");
	assert_string_equal(m->msgid, "abc@example.org");
	assert_int_equal(m->date, 1057049557);
	assert_string_equal(m->base_subject, "hello");
	bool is_msg;
	assert_ptr_equal(find(m, "1", &is_msg), r);
	assert_false(is_msg);
	assert_null(find(m, "2", NULL));
	roundtrip(m);
	mime_msg_free(&m);
}

static const char alt_msg[] =
	"From: a@example.org\r\n"
	"Subject: alt\r\n"
	"MIME-Version: 1.0\r\n"
	"Content-Type: multipart/alternative; boundary=\"b1\"\r\n"
	"\r\n"
	"This is a preamble.\r\n"
	"--b1\r\n"
	"Content-Type: text/plain; charset=utf-8\r\n"
	"Content-Transfer-Encoding: quoted-printable\r\n"
	"\r\n"
	"plain text\r\n"
	"--b1\r\n"
	"Content-Type: text/html; charset=utf-8\r\n"
	"\r\n"
	"<p>html</p>\r\n"
	"\r\n"
	"--b1--\r\n"
	"epilogue\r\n";

static void
test_alternative(void **state)
{
	struct mime_msg *m = parse(alt_msg);
	assert_string_equal(
		bs(&m->root, true, 0),
		"((\"text\" \"plain\" (\"charset\" \"utf-8\") NIL NIL \"quoted-printable\" 10 0 NIL "
		"NIL NIL NIL)(\"text\" \"html\" (\"charset\" \"utf-8\") NIL NIL \"7bit\" 13 1 NIL NIL "
		"NIL NIL) \"alternative\" (\"boundary\" \"b1\") NIL NIL NIL)");
	assert_string_equal(bs(&m->root, false, 0),
			    "((\"text\" \"plain\" (\"charset\" \"utf-8\") NIL NIL \"quoted-printable\" "
			    "10 0)(\"text\" \"html\" (\"charset\" \"utf-8\") NIL NIL \"7bit\" 13 1) "
			    "\"alternative\")");
	const struct mime_part *p1 = find(m, "1", NULL), *p2 = find(m, "2", NULL);
	assert_non_null(p1);
	assert_non_null(p2);
	assert_string_equal(slice(alt_msg, p1->body_off, p1->body_len), "plain text");
	assert_string_equal(slice(alt_msg, p1->hdr_off, p1->hdr_len),
			    "Content-Type: text/plain; charset=utf-8\r\n"
			    "Content-Transfer-Encoding: quoted-printable\r\n\r\n");
	assert_string_equal(slice(alt_msg, p2->body_off, p2->body_len), "<p>html</p>\r\n");
	assert_null(find(m, "3", NULL));
	assert_null(find(m, "1.1", NULL));
	roundtrip(m);
	mime_msg_free(&m);
}

static const char mixed_msg[] =
	"From: \"Sender, The\" <s@example.org>\r\n"
	"Subject: Fwd: report\r\n"
	"Content-Type: multipart/mixed; boundary=outer\r\n"
	"\r\n"
	"--outer\r\n"
	"\r\n"
	"see attached\r\n"
	"--outer\r\n"
	"Content-Type: application/pdf; name=\"r.pdf\"\r\n"
	"Content-Transfer-Encoding: base64\r\n"
	"Content-Disposition: attachment; filename=\"r.pdf\"\r\n"
	"Content-ID: <pdf1@example.org>\r\n"
	"Content-Description: the report\r\n"
	"Content-Language: en, de\r\n"
	"Content-Location: http://example.org/r.pdf\r\n"
	"Content-MD5: Q2hlY2sgSW50ZWdyaXR5IQ==\r\n"
	"\r\n"
	"JVBERi0xLjQK\r\n"
	"--outer\r\n"
	"Content-Type: message/rfc822\r\n"
	"\r\n"
	"From: Inner <inner@example.net>\r\n"
	"Subject: inner\r\n"
	"Content-Type: multipart/alternative; boundary=inner\r\n"
	"\r\n"
	"--inner\r\n"
	"Content-Type: text/plain\r\n"
	"\r\n"
	"inner text\r\n"
	"--inner\r\n"
	"Content-Type: text/html\r\n"
	"\r\n"
	"<b>inner</b>\r\n"
	"--inner--\r\n"
	"\r\n"
	"--outer--\r\n";

static void
test_mixed_nested(void **state)
{
	struct mime_msg *m = parse(mixed_msg);
	assert_int_equal(m->root.nchildren, 3);
	bool is_msg;
	const struct mime_part *p = find(m, "2", &is_msg);
	assert_false(is_msg);
	assert_string_equal(p->type, "application");
	assert_string_equal(p->subtype, "pdf");
	assert_string_equal(slice(mixed_msg, p->body_off, p->body_len), "JVBERi0xLjQK");
	assert_string_equal(
		bs(p, true, 0),
		"(\"application\" \"pdf\" (\"name\" \"r.pdf\") \"<pdf1@example.org>\" \"the report\" "
		"\"base64\" 12 \"Q2hlY2sgSW50ZWdyaXR5IQ==\" (\"attachment\" (\"filename\" \"r.pdf\")) "
		"(\"en\" \"de\") \"http://example.org/r.pdf\")");
	p = find(m, "3", &is_msg);
	assert_true(is_msg);
	assert_string_equal(p->type, "message");
	const struct mime_part *inner = &p->children[0];
	/* BODY[3.HEADER] and BODY[3.TEXT] */
	assert_string_equal(slice(mixed_msg, inner->hdr_off, inner->hdr_len),
			    "From: Inner <inner@example.net>\r\nSubject: inner\r\n"
			    "Content-Type: multipart/alternative; boundary=inner\r\n\r\n");
	assert_true(inner->body_off + inner->body_len == p->body_off + p->body_len);
	/* BODY[3.MIME] */
	assert_string_equal(slice(mixed_msg, p->hdr_off, p->hdr_len),
			    "Content-Type: message/rfc822\r\n\r\n");
	const struct mime_part *p31 = find(m, "3.1", NULL), *p32 = find(m, "3.2", NULL);
	assert_string_equal(slice(mixed_msg, p31->body_off, p31->body_len), "inner text");
	assert_string_equal(slice(mixed_msg, p32->body_off, p32->body_len), "<b>inner</b>");
	assert_null(find(m, "3.3", NULL));
	assert_string_equal(env(p->env),
			    "(NIL \"inner\" ((\"Inner\" NIL \"inner\" \"example.net\")) "
			    "((\"Inner\" NIL \"inner\" \"example.net\")) "
			    "((\"Inner\" NIL \"inner\" \"example.net\")) NIL NIL NIL NIL NIL)");
	/* part 1 has no header: defaults, and BODY[1] is its text */
	const struct mime_part *p1 = find(m, "1", NULL);
	assert_string_equal(slice(mixed_msg, p1->body_off, p1->body_len), "see attached");
	assert_int_equal(p1->hdr_len, 2);
	/* the whole structure as Dovecot writes it */
	assert_string_equal(
		bs(&m->root, false, 0),
		"((\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 12 0)"
		"(\"application\" \"pdf\" (\"name\" \"r.pdf\") \"<pdf1@example.org>\" \"the report\" "
		"\"base64\" 12)"
		"(\"message\" \"rfc822\" NIL NIL NIL \"7bit\" 214 "
		"(NIL \"inner\" ((\"Inner\" NIL \"inner\" \"example.net\")) "
		"((\"Inner\" NIL \"inner\" \"example.net\")) "
		"((\"Inner\" NIL \"inner\" \"example.net\")) NIL NIL NIL NIL NIL) "
		"((\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 10 0)(\"text\" "
		"\"html\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 12 0) \"alternative\") 13) "
		"\"mixed\")");
	assert_string_equal(m->base_subject, "report");
	roundtrip(m);
	mime_msg_free(&m);
}

static void
test_rfc2231(void **state)
{
	const char *msg =
		"Content-Type: application/octet-stream;\r\n"
		" name*0*=utf-8''%E2%82%AC;\r\n"
		" name*1=\" rates.pdf\";\r\n"
		" title*=iso-8859-1'en'caf%E9;\r\n"
		" other*=koi8-r''%C1;\r\n"
		" plain=\"a \\\"q\\\" b\";\r\n"
		" title=ignored\r\n"
		"Content-Disposition: ATTACHMENT; filename*=UTF-8''n%C3%A4me.txt\r\n"
		"\r\n"
		"x";
	struct mime_msg *m = parse(msg);
	const struct mime_part *p = &m->root;
	assert_int_equal(p->nparams, 4);
	assert_string_equal(p->params[0].name, "name");
	assert_string_equal(p->params[0].value, "\xe2\x82\xac rates.pdf");
	assert_string_equal(p->params[1].name, "title");
	assert_string_equal(p->params[1].value, "caf\xc3\xa9");
	assert_string_equal(p->params[2].name, "other*");
	assert_string_equal(p->params[2].value, "koi8-r''%C1");
	assert_string_equal(p->params[3].name, "plain");
	assert_string_equal(p->params[3].value, "a \"q\" b");
	assert_string_equal(p->disposition, "attachment");
	assert_string_equal(p->disp_params[0].value, "n\xc3\xa4me.txt");
	assert_string_equal(bs(p, true, 0),
			    "(\"application\" \"octet-stream\" (\"name*\" "
			    "\"utf-8''%E2%82%AC%20rates.pdf\" \"title*\" \"utf-8''caf%C3%A9\" "
			    "\"other*\" \"koi8-r''%C1\" \"plain\" \"a \\\"q\\\" b\") NIL NIL \"7bit\" 1 "
			    "NIL (\"attachment\" (\"filename*\" \"utf-8''n%C3%A4me.txt\")) NIL NIL)");
	assert_string_equal(bs(p, false, MIME_IMAP_UTF8),
			    "(\"application\" \"octet-stream\" (\"name\" \"\xe2\x82\xac rates.pdf\" "
			    "\"title\" \"caf\xc3\xa9\" \"other*\" \"koi8-r''%C1\" \"plain\" "
			    "\"a \\\"q\\\" b\") NIL NIL \"7bit\" 1)");
	roundtrip(m);
	mime_msg_free(&m);

	/* a continuation without section 0 is dropped */
	m = parse("Content-Type: text/plain; a*1=x; b*0=y; b*2=z; charset=\"utf-8\"\r\n\r\n");
	assert_int_equal(m->root.nparams, 2);
	assert_string_equal(m->root.params[0].name, "b");
	assert_string_equal(m->root.params[0].value, "y");
	assert_string_equal(m->root.params[1].name, "charset");
	mime_msg_free(&m);
}

static void
test_missing_end_boundary(void **state)
{
	const char *msg = "Content-Type: multipart/mixed; boundary=zz\r\n\r\n"
			  "--zz\r\n\r\none\r\n--zz\r\nContent-Type: text/html\r\n\r\ntwo\r\n";
	struct mime_msg *m = parse(msg);
	assert_int_equal(m->root.nchildren, 2);
	const struct mime_part *p2 = find(m, "2", NULL);
	assert_string_equal(slice(msg, p2->body_off, p2->body_len), "two\r\n");
	assert_string_equal(bs(&m->root, false, 0),
			    "((\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 3 0)"
			    "(\"text\" \"html\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 5 1) \"mixed\")");
	mime_msg_free(&m);

	/* no delimiter at all: an opaque body, still valid BODYSTRUCTURE */
	msg = "Content-Type: multipart/mixed; boundary=zz\r\n\r\nno parts here\r\n";
	m = parse(msg);
	assert_int_equal(m->root.nchildren, 0);
	assert_true(m->root.flags & MIME_PART_OPAQUE);
	assert_string_equal(bs(&m->root, true, 0),
			    "((\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 0 0 NIL NIL "
			    "NIL NIL) \"mixed\" (\"boundary\" \"zz\") NIL NIL NIL)");
	roundtrip(m);
	mime_msg_free(&m);

	/* inner multipart without its end: the outer boundary ends it */
	msg = "Content-Type: multipart/mixed; boundary=o\n\n--o\n"
	      "Content-Type: multipart/alternative; boundary=i\n\n--i\n\nA\n--o\n\nB\n--o--\n";
	m = parse(msg);
	assert_int_equal(m->root.nchildren, 2);
	assert_string_equal(slice(msg, find(m, "1.1", NULL)->body_off, 1), "A");
	assert_int_equal(find(m, "1.1", NULL)->body_len, 1);
	assert_string_equal(slice(msg, find(m, "2", NULL)->body_off, 1), "B");
	mime_msg_free(&m);
}

static void
test_bare_lf(void **state)
{
	const char *msg = "Subject: lf\nContent-Type: multipart/mixed; boundary=\"q\"\n\n--q\n"
			  "Content-Type: text/plain\n\nline1\nline2\n--q--\n";
	struct mime_msg *m = parse(msg);
	assert_int_equal(m->root.hdr_len, 57);
	assert_int_equal(m->root.hdr_vsize, 60);
	const struct mime_part *p = find(m, "1", NULL);
	assert_string_equal(slice(msg, p->body_off, p->body_len), "line1\nline2");
	assert_int_equal(p->body_len, 11);
	assert_int_equal(p->body_vsize, 12);
	assert_int_equal(p->body_lines, 1);
	assert_string_equal(slice(msg, p->hdr_off, p->hdr_len), "Content-Type: text/plain\n\n");
	assert_int_equal(p->hdr_vsize, 28);
	assert_string_equal(m->env.subject, "lf");
	mime_msg_free(&m);

	/* no final line break anywhere */
	m = parse("Subject: x");
	assert_int_equal(m->root.hdr_len, 10);
	assert_int_equal(m->root.body_len, 0);
	assert_string_equal(m->env.subject, "x");
	mime_msg_free(&m);
}

static void
test_header_only_and_no_blank(void **state)
{
	const char *msg = "From: a@b.c\r\nSubject: folded\r\n  subject\r\n";
	struct mime_msg *m = parse(msg);
	assert_int_equal(m->root.hdr_len, strlen(msg));
	assert_int_equal(m->root.body_len, 0);
	assert_int_equal(m->root.body_off, strlen(msg));
	assert_string_equal(m->env.subject, "folded  subject");
	assert_string_equal(bs(&m->root, false, 0),
			    "(\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 0 0)");
	mime_msg_free(&m);

	/* body without the blank line: the first non-field line starts it */
	msg = "Subject: s\r\nthis is body\r\nmore\r\n";
	m = parse(msg);
	assert_string_equal(slice(msg, m->root.body_off, m->root.body_len),
			    "this is body\r\nmore\r\n");
	assert_string_equal(m->env.subject, "s");
	mime_msg_free(&m);

	m = parse("");
	assert_int_equal(m->root.hdr_len, 0);
	assert_int_equal(m->date, -1);
	assert_string_equal(m->base_subject, "");
	roundtrip(m);
	mime_msg_free(&m);
}

static const char *
addrs(const char *s)
{
	static char buf[4096];
	TCMPOOL *pool = tcmpoolnew();
	struct mime_addrlist l;
	struct mime_envelope e;
	memset(&e, 0, sizeof(e));
	mime_addr_parse(s, strlen(s), pool, &l);
	e.addr[MIME_ENV_TO] = l;
	TCXSTR *o = tcxstrnew();
	mime_imap_envelope(&e, 0, o);
	/* keep only the To list: skip "(NIL NIL NIL NIL NIL " */
	const char *p = TCXSTRPTR(o) + strlen("(NIL NIL NIL NIL NIL ");
	snprintf(buf, sizeof(buf), "%.*s", (int)(strlen(p) - strlen(" NIL NIL NIL NIL)")), p);
	tcxstrdel(o);
	tcmpooldel(pool);
	return buf;
}

static void
test_addresses(void **state)
{
	assert_string_equal(addrs("Ed Jones <c@a.test>, joe@where.test"),
			    "((\"Ed Jones\" NIL \"c\" \"a.test\")(NIL NIL \"joe\" \"where.test\"))");
	assert_string_equal(addrs("A Group:Ed Jones <c@a.test>,joe@where.test;, x@y.z"),
			    "((NIL NIL \"A Group\" NIL)(\"Ed Jones\" NIL \"c\" \"a.test\")"
			    "(NIL NIL \"joe\" \"where.test\")(NIL NIL NIL NIL)(NIL NIL \"x\" \"y.z\"))");
	assert_string_equal(addrs("undisclosed-recipients:;"),
			    "((NIL NIL \"undisclosed-recipients\" NIL)(NIL NIL NIL NIL))");
	/* obsolete: route, comments, CFWS around dots, comment as name */
	assert_string_equal(addrs("Pete(A nice \\) chap) <pete(his account)@silly.test(his host)>"),
			    "((\"Pete\" NIL \"pete\" \"silly.test\"))");
	assert_string_equal(addrs("<@node.test,@node2.test:mary@example.net>"),
			    "((NIL \"@node.test,@node2.test\" \"mary\" \"example.net\"))");
	assert_string_equal(addrs("john . doe @ example . org (John Doe)"),
			    "((\"John Doe\" NIL \"john.doe\" \"example.org\"))");
	assert_string_equal(addrs("\"Doe, John\" <\"j doe\"@example.org>"),
			    "((\"Doe, John\" NIL \"j doe\" \"example.org\"))");
	assert_string_equal(addrs("=?utf-8?q?J=C3=B6rg?= <j@x.de>"),
			    "((\"=?utf-8?q?J=C3=B6rg?=\" NIL \"j\" \"x.de\"))");
	assert_string_equal(addrs("localonly, , @nolocal.test"),
			    "((NIL NIL \"localonly\" \"MISSING_DOMAIN\")"
			    "(NIL NIL \"MISSING_MAILBOX\" \"nolocal.test\"))");
	assert_string_equal(addrs("J\xc3\xb6rg <j\xc3\xb6rg@b\xc3\xbc.de>"),
			    "(({5}\r\nJ\xc3\xb6rg NIL {5}\r\nj\xc3\xb6rg {6}\r\nb\xc3\xbc.de))");
	assert_string_equal(addrs(""), "NIL");
	assert_string_equal(addrs(",,;;<>\"unterminated"), "NIL");
	assert_string_equal(addrs("x@[127.0.0.1]"), "((NIL NIL \"x\" \"[127.0.0.1]\"))");
}

static const char *
base(const char *s)
{
	static char buf[1024];
	TCXSTR *o = tcxstrnew();
	mime_base_subject(s, strlen(s), o);
	snprintf(buf, sizeof(buf), "%s", TCXSTRPTR(o));
	tcxstrdel(o);
	return buf;
}

static void
test_base_subject(void **state)
{
	assert_string_equal(base("Re: hello"), "hello");
	assert_string_equal(base("RE: Re: re:hello"), "hello");
	assert_string_equal(base("Fwd: Fw: FWD: hello"), "hello");
	assert_string_equal(base("Re[2]: hello"), "hello");
	assert_string_equal(base("Re [2]: hello"), "hello");
	assert_string_equal(base("[list] Re: [other] hello"), "hello");
	assert_string_equal(base("[only a blob]"), "[only a blob]");
	assert_string_equal(base("hello (fwd)"), "hello");
	assert_string_equal(base("hello (FWD) (fwd)  "), "hello");
	assert_string_equal(base("[fwd: Re: hello]"), "hello");
	assert_string_equal(base("[Fwd: [fwd: hello] (fwd)]"), "hello");
	assert_string_equal(base("AW: SV: Antw: VS: Ref: TR: hello"), "hello");
	assert_string_equal(base("  Hello\t  World  "), "hello world");
	assert_string_equal(base("Re: =?utf-8?q?=C3=84pfel?= und =?utf-8?b?QsOkcm4=?="),
			    "\xc3\xa4pfel und b\xc3\xa4rn");
	assert_string_equal(base("Re: Fwd: [x] "), "[x]");
	assert_string_equal(base("Reply to this"), "reply to this");
	assert_string_equal(base("re:"), "");
	assert_string_equal(base(""), "");
}

static const char *
dec2047(const char *s)
{
	static char buf[1024];
	TCXSTR *o = tcxstrnew();
	mime_decode_2047(s, strlen(s), o);
	snprintf(buf, sizeof(buf), "%s", TCXSTRPTR(o));
	tcxstrdel(o);
	return buf;
}

static void
test_rfc2047(void **state)
{
	assert_string_equal(dec2047("=?ISO-8859-1?Q?Andr=E9?= Pirard"), "Andr\xc3\xa9 Pirard");
	assert_string_equal(dec2047("=?utf-8?B?SGVsbG8=?= =?utf-8?B?V29ybGQ=?="), "HelloWorld");
	assert_string_equal(dec2047("=?us-ascii?q?a_b?= c"), "a b c");
	assert_string_equal(dec2047("=?utf-8*en?q?x?="), "x");
	assert_string_equal(dec2047("=?koi8-r?q?=C1?= z"), "=?koi8-r?q?=C1?= z");
	assert_string_equal(dec2047("=?utf-8?x?bad?="), "=?utf-8?x?bad?=");
	assert_string_equal(dec2047("=?utf-8?q?unterminated"), "=?utf-8?q?unterminated");
	assert_string_equal(dec2047("=?utf-8?q?=FF?="), "\xef\xbf\xbd");
	assert_string_equal(dec2047("raw \xff byte"), "raw \xef\xbf\xbd byte");
}

static void
test_dates(void **state)
{
#define D(s) mime_parse_date(s, strlen(s))
	assert_int_equal(D("Fri, 21 Nov 1997 09:55:06 -0600"), 880127706);
	assert_int_equal(D("21 Nov 1997 15:55:06 GMT"), 880127706);
	assert_int_equal(D("Fri, 21 Nov 97 09:55:06 CST"), 880127706);
	assert_int_equal(D("Fri,21 Nov 1997 15:55 +0000"), 880127700);
	assert_int_equal(D("Fri, 21 Nov 1997 15:55:06 (UTC)"), 880127706);
	assert_int_equal(D("Thu, 1 Jan 1970 00:00:00 +0000 (UTC)"), 0);
	assert_int_equal(D("1 Jan 2001 00:00:00 Z"), 978307200);
	assert_int_equal(D("Fri Nov 21 15:55:06 1997"), 880127706);
	assert_int_equal(D("Fri, 21 November 1997 15:55:06 +0000"), 880127706);
	assert_int_equal(D("21-Nov-1997 15:55:06 +0000"), 880127706);
	assert_int_equal(D("garbage"), -1);
	assert_int_equal(D(""), -1);
	assert_int_equal(D("32 Jan 2001 00:00:00 +0000"), -1);
	assert_int_equal(D("1 Jan 2001 25:00:00 +0000"), -1);
#undef D
}

static void
test_threading(void **state)
{
	struct mime_msg *m = parse("Message-ID: < id1@x >\r\n"
				   "In-Reply-To: <p2@x> (comment) <p3@x>\r\n"
				   "References: <r1@x>\r\n <r2@x>  <r3@x>\r\n"
				   "Subject: Re: thread\r\n\r\n");
	assert_string_equal(m->msgid, " id1@x ");
	assert_string_equal(m->in_reply_to_id, "p2@x");
	assert_int_equal(m->nrefs, 3);
	assert_string_equal(m->refs[0], "r1@x");
	assert_string_equal(m->refs[2], "r3@x");
	assert_string_equal(m->base_subject, "thread");
	roundtrip(m);
	mime_msg_free(&m);
}

static void
test_digest(void **state)
{
	const char *msg = "Content-Type: multipart/digest; boundary=d\r\n\r\n--d\r\n\r\n"
			  "Subject: one\r\n\r\nbody one\r\n--d\r\nContent-Type: text/plain\r\n\r\n"
			  "text\r\n--d--\r\n";
	struct mime_msg *m = parse(msg);
	const struct mime_part *p1 = find(m, "1", NULL);
	assert_string_equal(p1->type, "message");
	assert_string_equal(p1->subtype, "rfc822");
	assert_string_equal(p1->env->subject, "one");
	assert_string_equal(find(m, "2", NULL)->type, "text");
	/* section 1.1 of a non-multipart encapsulated message is its body */
	const struct mime_part *p11 = find(m, "1.1", NULL);
	assert_string_equal(slice(msg, p11->body_off, p11->body_len), "body one");
	mime_msg_free(&m);

	/* an encoded message/rfc822 cannot be parsed in place: opaque data */
	msg = "Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n"
	      "Content-Type: message/rfc822\r\nContent-Transfer-Encoding: base64\r\n\r\n"
	      "U3ViamVjdDogeA0KDQp5\r\n--b--\r\n";
	m = parse(msg);
	p1 = find(m, "1", NULL);
	assert_true(p1->flags & MIME_PART_OPAQUE);
	assert_int_equal(p1->nchildren, 0);
	assert_null(p1->env);
	assert_string_equal(bs(&m->root, false, 0),
			    "((\"application\" \"octet-stream\" NIL NIL NIL \"base64\" 20) \"mixed\")");
	mime_msg_free(&m);
}

static void
test_limits(void **state)
{
	struct mime_limits lim;
	mime_limits_init(&lim);
	/* nesting deeper than allowed becomes opaque */
	TCXSTR *x = tcxstrnew();
	for (int i = 0; i < 60; i++)
		tcxstrprintf(x, "Content-Type: multipart/mixed; boundary=b%d\r\n\r\n--b%d\r\n", i, i);
	tcxstrcat2(x, "\r\nleaf\r\n");
	struct mime_msg *m = NULL;
	mime_parse(TCXSTRPTR(x), (size_t)TCXSTRSIZE(x), &lim, &m);
	const struct mime_part *p = &m->root;
	unsigned depth = 0;
	while (p->nchildren > 0) {
		p = &p->children[0];
		depth++;
	}
	assert_int_equal(depth, lim.max_depth);
	assert_true(p->flags & MIME_PART_OPAQUE);
	roundtrip(m);
	mime_msg_free(&m);

	/* more parts than allowed */
	lim.max_parts = 5;
	tcxstrclear(x);
	tcxstrcat2(x, "Content-Type: multipart/mixed; boundary=b\r\n\r\n");
	for (int i = 0; i < 20; i++)
		tcxstrcat2(x, "--b\r\n\r\npart\r\n");
	tcxstrcat2(x, "--b--\r\n");
	mime_parse(TCXSTRPTR(x), (size_t)TCXSTRSIZE(x), &lim, &m);
	assert_int_equal(m->root.nchildren, 4);
	assert_true(m->root.flags & MIME_PART_OPAQUE);
	mime_msg_free(&m);

	/* header fields after max_header bytes are not interpreted */
	lim.max_header = 20;
	const char *msg = "X-Long: aaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\nSubject: late\r\n\r\nbody";
	mime_parse(msg, strlen(msg), &lim, &m);
	assert_null(m->env.subject);
	assert_string_equal(slice(msg, m->root.body_off, m->root.body_len), "body");
	mime_msg_free(&m);
	tcxstrdel(x);
}

/* Every prefix and a set of mutations of a complex message parse and round-trip. */
static void
test_malformed(void **state)
{
	size_t n = strlen(mixed_msg);
	for (size_t len = 0; len <= n; len++) {
		struct mime_msg *m = NULL;
		mime_parse(mixed_msg, len, NULL, &m);
		roundtrip(m);
		mime_msg_free(&m);
	}
	char *buf = malloc(n);
	unsigned seed = 12345;
	for (int round = 0; round < 2000; round++) {
		memcpy(buf, mixed_msg, n);
		for (int k = 0; k < 8; k++) {
			seed = seed * 1103515245 + 12345;
			size_t pos = (seed >> 8) % n;
			static const char junk[] = "\r\n-\"<>()=;:*%\\@,\x00\xff?";
			buf[pos] = junk[(seed >> 4) % (sizeof(junk) - 1)];
		}
		struct mime_msg *m = NULL;
		mime_parse(buf, n, NULL, &m);
		TCXSTR *o = tcxstrnew();
		mime_imap_bodystructure(&m->root, true, 0, o);
		mime_imap_envelope(&m->env, MIME_IMAP_UTF8, o);
		tcxstrdel(o);
		roundtrip(m);
		mime_msg_free(&m);
	}
	free(buf);
	static const char junk[] =
		"\x00\x01:\xff\r\r\n\n\t:Content-Type: multipart/x; boundary=\"\"\n\n--\n";
	struct mime_msg *m = NULL;
	mime_parse(junk, sizeof(junk) - 1, NULL, &m);
	roundtrip(m);
	mime_msg_free(&m);
	mime_msg_free(&m); /* NULL is accepted */
	mime_msg_free(NULL);
}

static void
test_cache_corrupt(void **state)
{
	struct mime_msg *m = parse(mixed_msg);
	TCXSTR *o = tcxstrnew();
	mime_cache_encode(m, o);
	size_t n = (size_t)TCXSTRSIZE(o);
	unsigned char *buf = malloc(n + 1);
	struct mime_msg *d = NULL;
	const char *err = NULL;
	/* every truncation fails cleanly */
	for (size_t len = 0; len < n; len++) {
		assert_int_equal(mime_cache_decode(TCXSTRPTR(o), len, NULL, &d, &err), -1);
		assert_null(d);
		assert_non_null(err);
	}
	/* trailing byte */
	memcpy(buf, TCXSTRPTR(o), n);
	buf[n] = 0;
	assert_int_equal(mime_cache_decode(buf, n + 1, NULL, &d, &err), -1);
	assert_string_equal(err, "trailing bytes");
	/* wrong version */
	buf[1] = 99;
	assert_int_equal(mime_cache_decode(buf, n, NULL, &d, &err), -1);
	/* every single-byte change either fails or decodes to something writable */
	for (size_t i = 0; i < n; i++) {
		static const unsigned char vals[] = { 0x00, 0x01, 0x7f, 0x80, 0xff };
		for (size_t v = 0; v < sizeof(vals); v++) {
			memcpy(buf, TCXSTRPTR(o), n);
			buf[i] = vals[v];
			if (mime_cache_decode(buf, n, NULL, &d, NULL) > 0) {
				TCXSTR *w = tcxstrnew();
				mime_imap_bodystructure(&d->root, true, 0, w);
				mime_imap_envelope(&d->env, 0, w);
				tcxstrdel(w);
				mime_msg_free(&d);
			}
		}
	}
	free(buf);
	tcxstrdel(o);
	mime_msg_free(&m);
}

static void
test_imap_string(void **state)
{
	TCXSTR *o = tcxstrnew();
	mime_imap_string(NULL, 0, 0, o);
	tcxstrcat2(o, " ");
	mime_imap_string("a\"b\\c", 5, 0, o);
	tcxstrcat2(o, " ");
	mime_imap_string("a\r\nb", 4, 0, o);
	tcxstrcat2(o, " ");
	mime_imap_string("\xc3\xa4", 2, 0, o);
	tcxstrcat2(o, " ");
	mime_imap_string("\xc3\xa4", 2, MIME_IMAP_UTF8, o);
	tcxstrcat2(o, " ");
	mime_imap_string("", 0, 0, o);
	assert_string_equal(TCXSTRPTR(o),
			    "NIL \"a\\\"b\\\\c\" {4}\r\na\r\nb {2}\r\n\xc3\xa4 \"\xc3\xa4\" \"\"");
	tcxstrdel(o);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_simple),
		cmocka_unit_test(test_alternative),
		cmocka_unit_test(test_mixed_nested),
		cmocka_unit_test(test_rfc2231),
		cmocka_unit_test(test_missing_end_boundary),
		cmocka_unit_test(test_bare_lf),
		cmocka_unit_test(test_header_only_and_no_blank),
		cmocka_unit_test(test_addresses),
		cmocka_unit_test(test_base_subject),
		cmocka_unit_test(test_rfc2047),
		cmocka_unit_test(test_dates),
		cmocka_unit_test(test_threading),
		cmocka_unit_test(test_digest),
		cmocka_unit_test(test_limits),
		cmocka_unit_test(test_malformed),
		cmocka_unit_test(test_cache_corrupt),
		cmocka_unit_test(test_imap_string),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

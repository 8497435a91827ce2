"""Internationalized domains: both spellings (U-label, A-label) are one domain.

The config names one domain as an A-label and another as a U-label; mail and
logins written in the other spelling reach the same account and mailbox. An
invalid IDN on the wire is a syntax error with the cid, and the session goes on.
"""
import base64
import glob
import os
import smtplib
import socket
import time

import pytest

from conftest import mox
from test_smtp import LOCALSERVE_PASSWORD, Raw, domains_yaml, wait_secrets

BUECHER_U = "bücher.example"
BUECHER_A = "xn--bcher-kva.example"
MUENCHEN_U = "münchen.example"
MUENCHEN_A = "xn--mnchen-3ya.example"

IDN_DOMAINS = f"""Domains:
  localhost:
    LocalpartCatchallSeparators:
      - "+"
  {BUECHER_A}:
    LocalpartCatchallSeparators:
      - "+"
  {MUENCHEN_U}: {{}}
Accounts:
  mox:
    Domain: localhost
    Destinations:
      mox@localhost: {{}}
      info@{BUECHER_A}:
        Mailbox: Buecher
      "@{MUENCHEN_U}":
        Mailbox: Muenchen
"""


def new_files(server, folder):
    d = os.path.join(server.dir, "data", "accounts", "mox", "Maildir", folder, "new")
    return sorted(glob.glob(os.path.join(d, "*")))


def wait_files(server, folder, n):
    deadline = time.monotonic() + 10
    while len(new_files(server, folder)) < n and time.monotonic() < deadline:
        time.sleep(0.05)
    return new_files(server, folder)


@pytest.fixture
def idn_server(server_dir):
    domains_yaml(server_dir, IDN_DOMAINS)
    server_dir.start()
    yield server_dir
    server_dir.stop()


def session(server, port="SMTP"):
    r = Raw(server.ports[port])
    assert r.reply()[0] == 220
    assert r.cmd("EHLO client.example.org")[0] == 250
    return r


def deliver(r, mail_from, rcpts, subject):
    code, t = r.cmd(f"MAIL FROM:<{mail_from}> SMTPUTF8")
    assert code == 250, t
    for rcpt in rcpts:
        code, t = r.cmd(f"RCPT TO:<{rcpt}>")
        assert code == 250, (rcpt, code, t)
    assert r.cmd("DATA")[0] == 354
    r.send(f"Subject: {subject}\r\n\r\nhello\r\n.\r\n")
    code, t = r.reply()
    assert code == 250, t


def test_alabel_config_ulabel_rcpt(idn_server):
    """Configured as A-label; mail to the U-label, in capitals, with a catch-all separator."""
    r = session(idn_server)
    deliver(r, "sender@example.org", [f"info@{BUECHER_U}"], "u-label")
    deliver(r, "sender@example.org", [f"Info+tag@BÜCHER.example"], "u-label upper")
    deliver(r, "sender@example.org", [f"info@{BUECHER_A.upper()}"], "a-label upper")
    files = wait_files(idn_server, ".Buecher", 3)
    assert len(files) == 3, files
    subjects = sorted(open(f, "rb").read().split(b"Subject: ")[1].split(b"\r\n")[0] for f in files)
    assert subjects == [b"a-label upper", b"u-label", b"u-label upper"]
    # The domain is ours in both spellings: an unknown user is 550 5.1.1, not "relaying".
    assert r.cmd("MAIL FROM:<sender@example.org> SMTPUTF8")[0] == 250
    code, t = r.cmd(f"RCPT TO:<nobody@{BUECHER_U}>")
    assert code == 550 and t[0].startswith("5.1.1"), t
    assert r.cmd("QUIT")[0] == 221


def test_ulabel_config_alabel_rcpt(idn_server):
    """Configured as U-label (catch-all); mail to the A-label without SMTPUTF8."""
    r = session(idn_server)
    assert r.cmd("MAIL FROM:<sender@example.org>")[0] == 250
    assert r.cmd(f"RCPT TO:<anyone@{MUENCHEN_A}>")[0] == 250
    assert r.cmd("DATA")[0] == 354
    r.send("Subject: a-label\r\n\r\nhello\r\n.\r\n")
    assert r.reply()[0] == 250
    deliver(r, "sender@example.org", [f"someone@{MUENCHEN_U}"], "u-label")
    deliver(r, "sender@example.org", [f"other@{MUENCHEN_A.upper()}", f"x@{MUENCHEN_U}"], "two")
    files = wait_files(idn_server, ".Muenchen", 3)
    assert len(files) == 3, files
    # The Received header keeps the (single) recipient's address as it was sent.
    data = b"".join(open(f, "rb").read() for f in files)
    assert f"for <anyone@{MUENCHEN_A}>".encode() in data
    assert f"for <someone@{MUENCHEN_U}>".encode() in data


def test_ascii_domains_unchanged(idn_server):
    r = session(idn_server)
    deliver(r, "sender@example.org", ["mox@LOCALHOST", "mox+x@localhost"], "ascii")
    assert len(wait_files(idn_server, "", 1)) == 1
    assert r.cmd("MAIL FROM:<sender@example.org>")[0] == 250
    code, t = r.cmd("RCPT TO:<someone@example.com>")
    assert code == 550 and t[0].startswith("5.7.1"), "relaying still refused"


@pytest.mark.parametrize("rcpt, why", [
    ("x@xn--zz.example", "invalid A-label"),
    ("x@xn--a.example", "invalid A-label"),
    ("x@\u2603.example", "disallowed character"),
    ("x@\U0001F600.example", "disallowed character"),
    ("x@\u0301a.example", "invalid international domain name"),  # leading combining mark
    ("x@a\u200db.example", "invalid international domain name"),  # ZWJ out of context
    ("x@" + "\u00fc" + "a" * 58 + ".example", "longer than 63 octets"),
])
def test_invalid_idn_rcpt(idn_server, rcpt, why):
    r = session(idn_server)
    assert r.cmd("MAIL FROM:<sender@example.org> SMTPUTF8")[0] == 250
    code, t = r.cmd(f"RCPT TO:<{rcpt}>")
    assert code == 501 and t[0].startswith("5.1.3"), t
    assert why in t[0] and "(cid " in t[0], t
    # The session goes on: the transaction is intact and takes a valid recipient.
    assert r.cmd("NOOP")[0] == 250
    assert r.cmd(f"RCPT TO:<info@{BUECHER_U}>")[0] == 250
    assert r.cmd("DATA")[0] == 354
    r.send("Subject: after\r\n\r\nx\r\n.\r\n")
    assert r.reply()[0] == 250
    assert len(wait_files(idn_server, ".Buecher", 1)) == 1


def test_mail_from_idn(idn_server):
    r = session(idn_server)
    # A U-label sender domain with SMTPUTF8, and an A-label one without.
    assert r.cmd(f"MAIL FROM:<jörg@{BUECHER_U}> SMTPUTF8")[0] == 250
    assert r.cmd("RSET")[0] == 250
    assert r.cmd(f"MAIL FROM:<jorg@{MUENCHEN_A}>")[0] == 250
    assert r.cmd("RSET")[0] == 250
    code, t = r.cmd("MAIL FROM:<a@xn--zz.example>")
    assert code == 501 and t[0].startswith("5.1.7") and "invalid A-label" in t[0] and "(cid " in t[0], t
    code, t = r.cmd("MAIL FROM:<a@\u2603.example> SMTPUTF8")
    assert code == 501 and t[0].startswith("5.1.7") and "(cid " in t[0], t
    assert r.cmd("MAIL FROM:<sender@example.org>")[0] == 250


def test_ehlo_idn(idn_server):
    r = Raw(idn_server.ports["SMTP"])
    r.reply()
    assert r.cmd(f"EHLO mail.{BUECHER_U}")[0] == 250
    assert r.cmd(f"EHLO mail.{BUECHER_A}")[0] == 250
    code, t = r.cmd("EHLO mail.xn--zz.example")
    assert code == 501 and t[0].startswith("5.5.4") and "(cid " in t[0], t
    # HELO clients send all sorts: tolerated as before.
    assert r.cmd("HELO mail.xn--zz.example")[0] == 250
    assert r.cmd("EHLO x_y.example")[0] == 250
    assert r.cmd("NOOP")[0] == 250


class Imap:
    def __init__(self, server):
        self.s = socket.create_connection(("127.0.0.1", server.ports["IMAP"]), timeout=10)
        self.buf = b""
        assert self.line().startswith(b"* OK")

    def line(self):
        while b"\r\n" not in self.buf:
            d = self.s.recv(65536)
            if not d:
                raise EOFError(self.buf)
            self.buf += d
        ln, self.buf = self.buf.split(b"\r\n", 1)
        return ln

    def tagged(self, tag):
        while True:
            ln = self.line()
            if ln.startswith(tag.encode() + b" "):
                return ln

    def login(self, tag, user, password):
        """LOGIN with the user name as a literal (it may hold UTF-8)."""
        u = user.encode()
        self.s.sendall(f"{tag} LOGIN {{{len(u)}}}\r\n".encode())
        assert self.line().startswith(b"+")
        self.s.sendall(u + f" {password}\r\n".encode())
        return self.tagged(tag)


def test_imap_login_other_spelling(idn_server):
    wait_secrets(idn_server)
    for user in (f"info@{BUECHER_U}", f"INFO@{BUECHER_A.upper()}", f"info@{BUECHER_A}"):
        c = Imap(idn_server)
        assert b" OK" in c.login("a", user, LOCALSERVE_PASSWORD), user
        c.s.close()
    c = Imap(idn_server)
    assert b" NO" in c.login("a", f"nobody@{BUECHER_U}", LOCALSERVE_PASSWORD)
    # Invalid IDN: an unknown user, not a server error; the connection goes on.
    assert b" NO" in c.login("b", "info@xn--zz.example", LOCALSERVE_PASSWORD)
    c.s.sendall(b"c NOOP\r\n")
    assert c.tagged("c").startswith(b"c OK")


def test_submission_sender_either_spelling(server_dir):
    domains_yaml(server_dir, IDN_DOMAINS)
    # The first (localserve) start gives the account its password; then run as a normal server.
    server_dir.start()
    wait_secrets(server_dir)
    server_dir.stop()
    server_dir.edit(lambda t: t.replace("LocalServe: true", "LocalServe: false"))
    server_dir.start()
    wait_secrets(server_dir)
    s = smtplib.SMTP("127.0.0.1", server_dir.ports["Submission"], timeout=10)
    s.ehlo("x.example")
    # AUTH PLAIN by hand: the login name is UTF-8 (the domain configured as an A-label).
    resp = base64.b64encode(f"\0info@{BUECHER_U}\0{LOCALSERVE_PASSWORD}".encode()).decode()
    code, text = s.docmd("AUTH", "PLAIN " + resp)
    assert code == 235, (code, text)
    for sender, opts in ((f"info@{BUECHER_U}", ["SMTPUTF8"]), (f"info+x@{BUECHER_A}", []),
                         (f"anyone@{MUENCHEN_A}", []), (f"anyone@{MUENCHEN_U}", ["SMTPUTF8"])):
        code, text = s.mail(sender, opts)
        assert code == 250, (sender, code, text)
        s.rset()
    code, text = s.mail(f"nobody@{BUECHER_A}")
    assert code == 550 and text.startswith(b"5.7.1"), (code, text)
    s.rset()
    code, text = s.mail("someone@example.org")
    assert code == 550 and text.startswith(b"5.7.1"), (code, text)
    s.quit()


# ---- config ----

def config_test(server):
    return mox("-config", server.config, "config", "test", check=False)


def test_config_idn_errors(server_dir):
    ok = config_test(server_dir)
    assert ok.returncode == 0, ok.stderr
    domains_yaml(server_dir, IDN_DOMAINS)
    assert config_test(server_dir).returncode == 0
    cases = [
        # The same domain in both spellings.
        (IDN_DOMAINS.replace(f"  {MUENCHEN_U}: {{}}\n", f"  {MUENCHEN_U}: {{}}\n  {MUENCHEN_A}: {{}}\n"),
         f"Domains.{MUENCHEN_A}: same domain as Domains.{MUENCHEN_U} ({MUENCHEN_A})"),
        (IDN_DOMAINS.replace(f"  {MUENCHEN_U}: {{}}\n", "  xn--zz.example: {}\n")
         .replace(f'"@{MUENCHEN_U}"', f'"@{BUECHER_U}"'),
         "Domains.xn--zz.example: invalid A-label (xn--)"),
        (IDN_DOMAINS.replace(f"  {MUENCHEN_U}: {{}}\n", "  \u2603.example: {}\n")
         .replace(f'"@{MUENCHEN_U}"', f'"@{BUECHER_U}"'),
         "Domains.\u2603.example: invalid international domain name"),
        (IDN_DOMAINS.replace(f"info@{BUECHER_A}:", "info@xn--bcher-kva-.example:"),
         "Accounts.mox.Destinations.info@xn--bcher-kva-.example: invalid A-label (xn--)"),
        (IDN_DOMAINS.replace("    Domain: localhost", "    Domain: xn--zz.example"),
         "Accounts.mox.Domain: \"xn--zz.example\": invalid A-label (xn--)"),
    ]
    for text, want in cases:
        domains_yaml(server_dir, text)
        p = config_test(server_dir)
        out = p.stdout + p.stderr
        assert p.returncode != 0 and want in out, (want, out)
        # Each names the file with a line and column.
        assert "domains.yaml:" in out and any(
            part.split(":")[0].isdigit() for part in out.split("domains.yaml:")[1:]), out
    # Destinations and the account Domain may use the other spelling than Domains.
    other = (IDN_DOMAINS.replace(f"info@{BUECHER_A}:", f"info@{BUECHER_U}:")
             .replace(f'"@{MUENCHEN_U}"', f'"@{MUENCHEN_A}"')
             .replace("    Domain: localhost", f"    Domain: {MUENCHEN_A}"))
    domains_yaml(server_dir, other)
    p = config_test(server_dir)
    assert p.returncode == 0, p.stderr
    # An address given twice in both spellings is one address.
    twice = IDN_DOMAINS.replace(f"      info@{BUECHER_A}:\n", f"      info@{BUECHER_U}: {{}}\n      info@{BUECHER_A}:\n")
    domains_yaml(server_dir, twice)
    p = config_test(server_dir)
    assert p.returncode != 0 and "address also belongs to account mox" in p.stdout + p.stderr


def test_hostname_unicode(server_dir):
    server_dir.edit(lambda t: t.replace("Hostname: localhost", f"Hostname: mail.{BUECHER_U}"))
    server_dir.start()
    r = Raw(server_dir.ports["SMTP"])
    code, t = r.reply()
    assert code == 220 and t[0].startswith(f"mail.{BUECHER_A} "), t
    server_dir.stop()
    server_dir.edit(lambda t: t.replace(f"Hostname: mail.{BUECHER_U}", "Hostname: mail.\u2603.example"))
    p = config_test(server_dir)
    assert p.returncode != 0 and "mox.yaml:" in p.stdout + p.stderr
    assert "Hostname: \"mail.\u2603.example\": invalid international domain name" in p.stdout + p.stderr

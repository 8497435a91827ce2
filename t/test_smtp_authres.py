"""SPF and DKIM checks of inbound SMTP: Authentication-Results, Received-SPF, VerifiedDomain.

The daemon resolves through the fake DNS server of t/dnsserver.py (DNSResolver in
mox.yaml); the client is 127.0.0.1. DKIM signatures are made here: ed25519-sha256
(RFC 8463) with relaxed/relaxed canonicalization, signed by the openssl command.
"""
import base64
import hashlib
import imaplib
import os
import re
import shutil
import signal
import smtplib
import subprocess
import time

import pytest

from conftest import mox
from dnsserver import DNSServer
from test_smtp import LOCALSERVE_PASSWORD, domains_yaml, maildir_new, read, skip_unless_delivered, spool_files, \
    wait_secrets

DOMAINS = """Domains:
  localhost:
    LocalpartCatchallSeparators:
      - "+"
Accounts:
  mox:
    Domain: localhost
    Destinations:
      mox@localhost:
        Rulesets:
          - VerifiedDomain: example.org
            Mailbox: Verified
      "@localhost": {}
"""

SPF_RECORDS = {
    ("example.org", "TXT"): ["v=spf1 ip4:127.0.0.1 -all"],
    ("fail.example", "TXT"): ["v=spf1 ip4:192.0.2.1 -all"],
    ("sub.example.org", "TXT"): ["v=spf1 ip4:127.0.0.0/8 -all"],
    ("broken.example", "TXT"): DNSServer.SERVFAIL,
    ("helo.example", "TXT"): ["v=spf1 ip4:127.0.0.1 -all"],
    ("nospf.example", "A"): ["192.0.2.7"],
}


@pytest.fixture
def dns():
    srv = DNSServer(SPF_RECORDS).start()
    yield srv
    srv.stop()


@pytest.fixture
def checked(server_dir, dns):
    """localserve with DNSResolver set to the fake DNS server and a VerifiedDomain ruleset."""
    server_dir.edit(lambda t: t + "DNSResolver: %s\n" % dns.address)
    domains_yaml(server_dir, DOMAINS)
    server_dir.start()
    return server_dir


def send(server, msg, sender="someone@example.org", rcpt="mox@localhost", helo="client.example.org"):
    s = smtplib.SMTP("127.0.0.1", server.ports["SMTP"], timeout=30)
    try:
        s.ehlo(helo)
        code, text = s.mail(sender)
        assert code == 250, (code, text)
        code, text = s.rcpt(rcpt)
        assert code == 250, (code, text)
        code, text = s.data(msg)
        skip_unless_delivered(server, code, text)
        assert code == 250, (code, text)
        # The session goes on after the checks.
        assert s.noop()[0] == 250
    finally:
        s.close()


def only_file(server, folder=""):
    files = maildir_new(server, folder)
    assert len(files) == 1, (folder, files, maildir_new(server), maildir_new(server, ".Verified"))
    return read(files[0])


def header_fields(data):
    """The message's header fields as (name, unfolded value) in order."""
    head = data.split(b"\r\n\r\n", 1)[0].decode("utf-8", "replace")
    out = []
    for line in head.split("\r\n"):
        if line[:1] in (" ", "\t") and out:
            out[-1] = (out[-1][0], out[-1][1] + " " + line.strip())
        else:
            name, _, value = line.partition(":")
            out.append((name, value.strip()))
    return out


def authres(data):
    vals = [v for n, v in header_fields(data) if n.lower() == "authentication-results"]
    assert len(vals) == 1, header_fields(data)
    return vals[0]


def received_spf(data):
    vals = [v for n, v in header_fields(data) if n.lower() == "received-spf"]
    assert len(vals) == 1, header_fields(data)
    return vals[0]


def check_lines(data):
    """Our header lines are CRLF-terminated, folded, and not over 998 bytes."""
    head = data.split(b"\r\n\r\n", 1)[0]
    for line in head.split(b"\r\n"):
        assert len(line) <= 998
        assert b"\n" not in line and b"\r" not in line


MSG = b"From: <someone@example.org>\r\nTo: <mox@localhost>\r\nSubject: hello\r\n\r\nHello there.\r\n"


# ---- SPF ----

def test_spf_pass_verified_domain(checked):
    send(checked, MSG)
    data = only_file(checked, ".Verified")
    assert maildir_new(checked) == []
    ar = authres(data)
    assert re.match(r"^localhost; spf=pass smtp\.mailfrom=example\.org; dkim=none$", ar), ar
    rs = received_spf(data)
    assert rs.startswith("pass (localhost: domain of example.org designates 127.0.0.1 as permitted sender)"), rs
    assert "client-ip=127.0.0.1;" in rs and 'envelope-from="someone@example.org";' in rs
    assert "helo=client.example.org;" in rs and "identity=mailfrom;" in rs and "receiver=localhost" in rs
    # Our headers come first: Authentication-Results, Received-SPF, Received, then the message.
    names = [n for n, _ in header_fields(data)]
    assert names[:4] == ["Authentication-Results", "Received-SPF", "Received", "From"], names
    assert data.endswith(b"\r\n\r\nHello there.\r\n")
    check_lines(data)
    assert spool_files(checked) == []


def test_spf_pass_subdomain_matches_parent(checked):
    send(checked, MSG, sender="a@sub.example.org")
    data = only_file(checked, ".Verified")
    assert "spf=pass smtp.mailfrom=sub.example.org;" in authres(data)


def test_spf_fail_goes_to_inbox(checked):
    send(checked, MSG, sender="a@fail.example")
    data = only_file(checked)
    assert "spf=fail smtp.mailfrom=fail.example;" in authres(data)
    rs = received_spf(data)
    assert rs.startswith("fail (localhost: domain of fail.example does not designate 127.0.0.1"), rs
    assert "mechanism=-all;" in rs or 'mechanism="-all";' in rs, rs


def test_spf_none(checked):
    send(checked, MSG, sender="a@nospf.example")
    data = only_file(checked)
    assert "spf=none smtp.mailfrom=nospf.example;" in authres(data)
    assert received_spf(data).startswith("none ")


def test_spf_temperror_still_delivered(checked):
    send(checked, MSG, sender="a@broken.example")
    data = only_file(checked)
    ar = authres(data)
    assert "spf=temperror" in ar and "smtp.mailfrom=broken.example;" in ar, ar
    assert received_spf(data).startswith("temperror ")


def test_null_sender_checks_helo(checked):
    send(checked, MSG, sender="", helo="helo.example")
    data = only_file(checked)
    assert "spf=pass smtp.helo=helo.example;" in authres(data)
    rs = received_spf(data)
    assert 'envelope-from="";' in rs and "identity=helo;" in rs, rs


def test_null_sender_literal_helo_is_none(checked):
    send(checked, MSG, sender="", helo="[127.0.0.1]")
    data = only_file(checked)
    assert authres(data) == "localhost; spf=none; dkim=none"
    assert received_spf(data).startswith("none (localhost: no domain to check)")


def test_rset_and_second_transaction(checked):
    """A transaction abandoned with RSET cancels its check; the next one gets its own."""
    s = smtplib.SMTP("127.0.0.1", checked.ports["SMTP"], timeout=30)
    s.ehlo("client.example.org")
    assert s.mail("a@fail.example")[0] == 250
    s.rset()
    assert s.mail("b@example.org")[0] == 250
    assert s.rcpt("mox@localhost")[0] == 250
    code, text = s.data(MSG)
    assert code == 250, (code, text)
    # And a third on the same connection, without RSET.
    assert s.mail("c@fail.example")[0] == 250
    assert s.rcpt("mox@localhost")[0] == 250
    assert s.data(MSG)[0] == 250
    s.quit()
    assert "spf=pass smtp.mailfrom=example.org;" in authres(only_file(checked, ".Verified"))
    assert "spf=fail smtp.mailfrom=fail.example;" in authres(only_file(checked))


def test_spf_timeout_is_temperror(checked, dns):
    """A DNS server that never answers: the message waits for the lookup's timeout, then goes in."""
    dns.records[("slow.example", "TXT")] = DNSServer.DROP
    t0 = time.monotonic()
    send(checked, MSG, sender="a@slow.example")
    assert time.monotonic() - t0 < 25
    data = only_file(checked)
    assert "spf=temperror" in authres(data), authres(data)
    assert spool_files(checked) == []


def test_shutdown_while_checking(checked, dns):
    """A stop while the checks run answers 421: the message is not taken, nothing is left."""
    dns.records[("slow.example", "TXT")] = DNSServer.DROP
    s = smtplib.SMTP("127.0.0.1", checked.ports["SMTP"], timeout=30)
    s.ehlo("client.example.org")
    assert s.mail("a@slow.example")[0] == 250
    assert s.rcpt("mox@localhost")[0] == 250
    s.putcmd("DATA")
    assert s.getreply()[0] == 354
    s.send(MSG + b".\r\n")
    time.sleep(0.5)
    checked.proc.send_signal(signal.SIGTERM)
    code, text = s.getreply()
    assert code == 421, (code, text)
    s.close()
    checked.stop()
    assert maildir_new(checked) == [] and maildir_new(checked, ".Verified") == []
    assert spool_files(checked) == []


# ---- DKIM ----

def have_openssl_ed25519():
    return shutil.which("openssl") is not None


def relaxed_header(name, value):
    value = re.sub(r"\r\n", "", value)
    value = re.sub(r"[ \t]+", " ", value).strip()
    return name.strip().lower() + ":" + value


def relaxed_body(body):
    lines = body.split(b"\r\n")
    if lines and lines[-1] == b"":
        lines.pop()
    out = [re.sub(rb"[ \t]+", b" ", line).rstrip(b" ") for line in lines]
    while out and out[-1] == b"":
        out.pop()
    return b"".join(line + b"\r\n" for line in out)


class Ed25519Key:
    def __init__(self, d):
        self.pem = os.path.join(d, "dkim.key.pem")
        subprocess.run(["openssl", "genpkey", "-algorithm", "ed25519", "-out", self.pem], check=True,
                       capture_output=True)
        der = subprocess.run(["openssl", "pkey", "-in", self.pem, "-pubout", "-outform", "DER"], check=True,
                             capture_output=True).stdout
        self.pub = der[-32:]
        self.dir = d

    def record(self, testing=False):
        return "v=DKIM1; k=ed25519;%s p=%s" % (" t=y;" if testing else "", base64.b64encode(self.pub).decode())

    def sign(self, data):
        """Ed25519 over SHA-256 of data (RFC 8463 3)."""
        inp = os.path.join(self.dir, "tosign")
        with open(inp, "wb") as f:
            f.write(hashlib.sha256(data).digest())
        return subprocess.run(["openssl", "pkeyutl", "-sign", "-inkey", self.pem, "-rawin", "-in", inp],
                              check=True, capture_output=True).stdout


def dkim_sign(key, headers, body, domain, selector, signed=("from", "to", "subject")):
    """A message with a DKIM-Signature on top (relaxed/relaxed, ed25519-sha256)."""
    bh = base64.b64encode(hashlib.sha256(relaxed_body(body)).digest()).decode()
    sig = "v=1; a=ed25519-sha256; c=relaxed/relaxed; d=%s; s=%s;\r\n\th=%s; bh=%s;\r\n\tb=" % (
        domain, selector, ":".join(signed), bh)
    hdata = ""
    used = {}
    for name in signed:
        # The last instance not used yet (RFC 6376 5.4.2).
        matches = [h for h in headers if h[0].lower() == name]
        k = used.get(name, 0)
        if k < len(matches):
            h = matches[len(matches) - 1 - k]
            hdata += relaxed_header(h[0], h[1]) + "\r\n"
            used[name] = k + 1
    hdata += relaxed_header("DKIM-Signature", sig)
    b = base64.b64encode(key.sign(hdata.encode())).decode()
    out = "DKIM-Signature: " + sig + b + "\r\n"
    for name, value in headers:
        out += name + ": " + value + "\r\n"
    return out.encode() + b"\r\n" + body


@pytest.fixture
def dkim_key(tmpdir_short):
    if not have_openssl_ed25519():
        pytest.skip("no openssl command")
    d = os.path.join(tmpdir_short, "key")
    os.mkdir(d)
    return Ed25519Key(d)


@pytest.fixture
def dkim_server(server_dir, dns, dkim_key):
    dns.records[("sel._domainkey.example.org", "TXT")] = [dkim_key.record()]
    dns.records[("test._domainkey.example.org", "TXT")] = [dkim_key.record(testing=True)]
    server_dir.edit(lambda t: t + "DNSResolver: %s\n" % dns.address)
    domains_yaml(server_dir, DOMAINS)
    server_dir.start()
    return server_dir


HEADERS = [("From", "<news@example.org>"), ("To", "<mox@localhost>"), ("Subject", "signed  message")]
BODY = b"Hello,  signed\t world.  \r\n\r\n\r\n"


def test_dkim_pass_verifies_domain(dkim_server, dkim_key):
    msg = dkim_sign(dkim_key, HEADERS, BODY, "example.org", "sel")
    # SPF none (nospf.example): the VerifiedDomain match comes from DKIM alone.
    send(dkim_server, msg, sender="bounces@nospf.example")
    data = only_file(dkim_server, ".Verified")
    ar = authres(data)
    bval = re.search(rb"\tb=([A-Za-z0-9+/=]+)\r\n", msg).group(1).decode()
    want = bval[:8] if re.fullmatch(r"[A-Za-z0-9]+", bval[:8]) else '"%s"' % bval[:8]
    assert "dkim=pass header.d=example.org header.s=sel header.b=%s" % want in ar, ar
    assert "spf=none smtp.mailfrom=nospf.example;" in ar
    # The message itself is unchanged behind our headers.
    assert data.endswith(msg)
    check_lines(data)


def test_dkim_tampered_body_fails(dkim_server, dkim_key):
    msg = dkim_sign(dkim_key, HEADERS, BODY, "example.org", "sel")
    msg = msg.replace(b"Hello,", b"Jello,")
    send(dkim_server, msg, sender="bounces@nospf.example")
    data = only_file(dkim_server)
    ar = authres(data)
    assert "dkim=fail" in ar and "header.d=example.org" in ar, ar


def test_dkim_testing_key_not_verified(dkim_server, dkim_key):
    msg = dkim_sign(dkim_key, HEADERS, BODY, "example.org", "test")
    send(dkim_server, msg, sender="bounces@nospf.example")
    data = only_file(dkim_server)
    assert "dkim=pass (test key) header.d=example.org header.s=test" in authres(data)


def test_dkim_two_signatures(dkim_server, dkim_key, dns):
    dns.records[("sel._domainkey.other.example", "TXT")] = ["v=DKIM1; k=ed25519; p="]  # revoked
    inner = dkim_sign(dkim_key, HEADERS, BODY, "example.org", "sel")
    head, body = inner.split(b"\r\n\r\n", 1)
    lines = head.decode().split("\r\n")
    # The outer signature covers the same fields with another domain whose key is revoked.
    outer = dkim_sign(dkim_key, HEADERS, BODY, "other.example", "sel").split(b"\r\n\r\n", 1)[0].decode()
    outer_sig = outer.split("\r\nFrom:")[0]
    msg = (outer_sig + "\r\n" + "\r\n".join(lines)).encode() + b"\r\n\r\n" + body
    send(dkim_server, msg, sender="bounces@nospf.example")
    data = only_file(dkim_server, ".Verified")
    ar = authres(data)
    clauses = [c.strip() for c in ar.split(";")]
    dk = [c for c in clauses if c.startswith("dkim=")]
    assert len(dk) == 2, ar
    assert dk[0].startswith("dkim=permerror") and "header.d=other.example" in dk[0], ar
    assert dk[1].startswith("dkim=pass") and "header.d=example.org" in dk[1], ar


def test_bdat_message_checked(dkim_server, dkim_key):
    msg = dkim_sign(dkim_key, HEADERS, BODY, "example.org", "sel")
    s = smtplib.SMTP("127.0.0.1", dkim_server.ports["SMTP"], timeout=30)
    s.ehlo("client.example.org")
    assert s.mail("x@nospf.example")[0] == 250
    assert s.rcpt("mox@localhost")[0] == 250
    half = len(msg) // 2
    s.send(b"BDAT %d\r\n" % half + msg[:half])
    assert s.getreply()[0] == 250
    s.send(b"BDAT %d LAST\r\n" % (len(msg) - half) + msg[half:])
    code, text = s.getreply()
    assert code == 250, (code, text)
    s.quit()
    data = only_file(dkim_server, ".Verified")
    assert "dkim=pass header.d=example.org" in authres(data)
    assert data.endswith(msg)


# ---- where nothing is checked ----

def test_submission_not_checked(checked):
    wait_secrets(checked)
    s = smtplib.SMTP("127.0.0.1", checked.ports["Submission"], timeout=30)
    s.ehlo("client.example.org")
    s.login("mox@localhost", LOCALSERVE_PASSWORD)
    assert s.mail("mox@localhost")[0] == 250
    assert s.rcpt("mox@localhost")[0] == 250
    code, text = s.data(MSG)
    assert code == 250, (code, text)
    s.quit()
    data = only_file(checked)
    names = [n.lower() for n, _ in header_fields(data)]
    assert "authentication-results" not in names and "received-spf" not in names, names
    assert names[0] == "received"


def test_localserve_without_resolver_not_checked(server_dir, dns):
    domains_yaml(server_dir, DOMAINS)
    server_dir.start()
    send(server_dir, MSG)
    data = only_file(server_dir)
    names = [n.lower() for n, _ in header_fields(data)]
    assert names[0] == "received" and "authentication-results" not in names, names
    assert dns.queries == []


def test_dns_resolver_config_checked(server_dir):
    server_dir.edit(lambda t: t + "DNSResolver: not-an-ip@53\n")
    out = mox("-config", server_dir.config, "config", "test", check=False)
    assert out.returncode != 0
    assert "DNSResolver" in out.stderr + out.stdout, out
    server_dir.edit(lambda t: t.replace("DNSResolver: not-an-ip@53\n", "DNSResolver: 127.0.0.1@53\n"))
    domains_yaml(server_dir, DOMAINS.replace("VerifiedDomain: example.org", "VerifiedDomain: bad..example"))
    out = mox("-config", server_dir.config, "config", "test", check=False)
    assert out.returncode != 0
    assert "Rulesets[0].VerifiedDomain" in out.stderr, out.stderr


# ---- the stored message ----

def test_imap_body_has_our_headers(checked):
    send(checked, MSG)
    path = only_file(checked, ".Verified")
    im = imaplib.IMAP4("127.0.0.1", checked.ports["IMAP"], timeout=30)
    im.login("mox@localhost", LOCALSERVE_PASSWORD)
    typ, _ = im.select("Verified")
    assert typ == "OK"
    typ, resp = im.fetch("1", "(BODY.PEEK[] RFC822.SIZE)")
    assert typ == "OK"
    body = resp[0][1]
    assert body == path
    assert body.startswith(b"Authentication-Results: localhost;")
    im.logout()
    # The index's prefix_len covers every header we added.
    checked.stop()
    plen = index_prefix_lens(checked)
    assert len(plen) == 1
    ours = path.index(b"\r\nFrom: ") + 2
    assert plen[0] == ours, (plen, ours)


def _uv(b, i):
    n = shift = 0
    while True:
        c = b[i]
        i += 1
        n |= (c & 0x7F) << shift
        shift += 7
        if c < 0x80:
            return n, i


def index_prefix_lens(server):
    """prefix_len of every message record (index/SCHEMA.md), read with tcbmgr from a stopped server."""
    tcbmgr = shutil.which("tcbmgr")
    if tcbmgr is None:
        pytest.skip("no tcbmgr")
    path = os.path.join(server.dir, "data", "accounts", "mox", "index.tcb")
    out = subprocess.run([tcbmgr, "list", "-pv", "-px", path], check=True, capture_output=True, text=True).stdout
    lens = []
    for line in out.splitlines():
        key, _, val = line.partition("\t")
        kb, vb = bytes.fromhex(key.replace(" ", "")), bytes.fromhex(val.replace(" ", ""))
        if kb[:1] != b"U":
            continue
        i = 1  # version
        for _ in range(4):  # msgid, modseq, createseq, flags
            _, i = _uv(vb, i)
        nkw, i = _uv(vb, i)
        for _ in range(nkw):
            ln, i = _uv(vb, i)
            i += ln
        _, i = _uv(vb, i)  # size
        ln, i = _uv(vb, i)  # filename
        i += ln
        _, i = _uv(vb, i)  # received (zigzag)
        _, i = _uv(vb, i)  # received_tz
        plen, i = _uv(vb, i)
        lens.append(plen)
    return lens


def test_large_message_copied_intact(dkim_server, dkim_key):
    """A message of several MiB is copied behind our headers over several loop turns, byte for byte."""
    body = b"".join(b"line %07d of a large signed message\r\n" % i for i in range(100000))
    msg = dkim_sign(dkim_key, HEADERS, body, "example.org", "sel")
    assert len(msg) > 3 * 1024 * 1024
    send(dkim_server, msg, sender="x@nospf.example")
    data = only_file(dkim_server, ".Verified")
    assert "dkim=pass header.d=example.org" in authres(data)
    assert data.endswith(msg)
    assert data.index(b"\r\nDKIM-Signature: ") + 2 == len(data) - len(msg)


# ---- Authentication-Results with our authserv-id from the message (RFC 8601 5) ----

def our_prefix(data, msg):
    """The fields we put above msg in data (the stored file), by name."""
    assert data.endswith(msg), data[:600]
    return [n for n, _ in header_fields(data[:len(data) - len(msg)] + b"\r\n")]


FORGED = [
    b"Authentication-Results: localhost; spf=pass smtp.mailfrom=bank.example\r\n",
    b"AUTHENTICATION-results: LocalHost;\r\n\tdkim=pass header.d=bank.example\r\n",
    b"Authentication-Results:\r\n localhost; dkim=pass header.d=bank.example\r\n",
    b"authentication-results : (ours, really)\r\n  \"LOCALHOST\" ; spf=pass\r\n",
]
KEPT = [
    b"Authentication-Results: other.example; dkim=pass\r\n",
    b"Authentication-Results: localhost.other.example;\r\n spf=pass\r\n",
    b"X-Authentication-Results: localhost; spf=pass\r\n",
    b"Authentication-Results: localhostx; spf=pass\r\n",
]
BODY_LIKE = b"Authentication-Results: localhost; spf=pass smtp.mailfrom=bank.example\r\n"


def test_forged_authres_removed(checked):
    head = (KEPT[0] + FORGED[0] + b"From: <someone@example.org>\r\n" + FORGED[1] + KEPT[1] + FORGED[2] + KEPT[2] +
            b"Subject: hello\r\n" + FORGED[3] + KEPT[3])
    body = b"Hello there.\r\n" + BODY_LIKE + b"\r\n" + BODY_LIKE
    send(checked, head + b"\r\n" + body)
    data = only_file(checked, ".Verified")
    want = (KEPT[0] + b"From: <someone@example.org>\r\n" + KEPT[1] + KEPT[2] + b"Subject: hello\r\n" + KEPT[3] +
            b"\r\n" + body)
    # Only our own fields stand above the message, whose other bytes are unchanged.
    assert our_prefix(data, want) == ["Authentication-Results", "Received-SPF", "Received"]
    ours = [v for n, v in header_fields(data) if n.lower().strip() == "authentication-results"]
    assert ours[1:] == ["other.example; dkim=pass", "localhost.other.example; spf=pass", "localhostx; spf=pass"], ours
    assert re.match(r"^localhost; spf=pass smtp\.mailfrom=example\.org; dkim=none$", ours[0]), ours
    check_lines(data)
    assert spool_files(checked) == []


def test_forged_authres_imap_size_and_prefix(checked):
    msg = FORGED[0] + KEPT[0] + MSG + BODY_LIKE
    send(checked, msg)
    path = only_file(checked, ".Verified")
    want = KEPT[0] + MSG + BODY_LIKE
    assert path.endswith(want)
    im = imaplib.IMAP4("127.0.0.1", checked.ports["IMAP"], timeout=30)
    im.login("mox@localhost", LOCALSERVE_PASSWORD)
    assert im.select("Verified")[0] == "OK"
    typ, resp = im.fetch("1", "(BODY.PEEK[] RFC822.SIZE)")
    assert typ == "OK"
    assert resp[0][1] == path
    assert b"RFC822.SIZE %d" % len(path) in resp[0][0], resp[0][0]
    typ, resp = im.fetch("1", "(BODY.PEEK[HEADER.FIELDS (Authentication-Results)])")
    assert typ == "OK"
    fields = resp[0][1]
    assert fields.count(b"localhost;") == 1 and KEPT[0] in fields, fields
    im.logout()
    checked.stop()
    plen = index_prefix_lens(checked)
    assert plen == [len(path) - len(want)], (plen, len(path) - len(want))


def test_forged_authres_across_copy_chunks(checked):
    """A header section over several 64 KiB copy chunks: fields cut at a chunk end are still found."""
    head = b""
    i = 0
    while len(head) < 200 * 1024:
        head += b"X-Filler-%d: %s\r\n" % (i, b"f" * (i * 37 % 700))
        head += FORGED[i % len(FORGED)] if i % 2 else KEPT[i % len(KEPT)]
        i += 1
    msg = head + MSG
    send(checked, msg)
    data = only_file(checked, ".Verified")
    want = b"".join(line for line in re.split(rb"(?<=\r\n)(?=[^ \t])", head) if line not in FORGED) + MSG
    assert our_prefix(data, want) == ["Authentication-Results", "Received-SPF", "Received"]


def test_authres_with_long_comment_kept_unchanged(checked):
    """A field whose start (before the authserv-id) is over the filter's limit stays as it is."""
    comment = b"\r\n ".join([b"(" + b"c" * 70 + b")"] * 200)
    field = b"Authentication-Results: " + comment + b"\r\n other.example; spf=pass\r\n"
    msg = field + FORGED[0] + MSG
    send(checked, msg)
    data = only_file(checked, ".Verified")
    assert our_prefix(data, field + MSG) == ["Authentication-Results", "Received-SPF", "Received"]
    send(checked, MSG)  # the server goes on


def test_forged_authres_dkim_still_passes(dkim_server, dkim_key):
    """The forged field is removed after DKIM ran on the message as received: the signature verifies."""
    signed = dkim_sign(dkim_key, HEADERS, BODY, "example.org", "sel")
    msg = FORGED[1] + signed
    send(dkim_server, msg, sender="bounces@nospf.example")
    data = only_file(dkim_server, ".Verified")
    assert "dkim=pass header.d=example.org header.s=sel" in authres(data)
    assert our_prefix(data, signed) == ["Authentication-Results", "Received-SPF", "Received"]

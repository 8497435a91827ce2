"""Our headers above a checked inbound message: held in memory and written once, or copied.

With DNSResolver set, a message of up to 128 KiB whose lines end in CRLF is held in memory
while SPF and DKIM run and written once behind our headers; a larger one, or a BDAT message
with a bare CR or LF, goes to a spool file that is copied behind them (the debug line "spool
file copied behind the authentication headers" tells which). Either way the stored file is
exactly our headers and the message, its ,S= size is the file's size, the index's prefix_len
covers our headers, DKIM verifies and no spool file is left.
"""
import os
import smtplib

import pytest

from test_smtp import domains_yaml, read, spool_files
from test_smtp_authres import DOMAINS, FORGED, HEADERS, KEPT, MSG, authres, dkim_sign, header_fields, \
    index_prefix_lens, maildir_new, send
from test_smtp_authres import dkim_key, dns  # noqa: F401 (fixtures)

HOLD_MAX = 128 * 1024 - 1  # SMTP_HOLD_MAX in daemon/smtp_data.c: our Received and the data
COPIED = "spool file copied behind the authentication headers"


@pytest.fixture
def server(server_dir, dns, dkim_key):
    """localserve checking SPF and DKIM through the fake DNS server, logging at debug level."""
    dns.records[("sel._domainkey.example.org", "TXT")] = [dkim_key.record()]
    server_dir.edit(lambda t: t.replace("LogLevel: info", "LogLevel: debug") + "DNSResolver: %s\n" % dns.address)
    domains_yaml(server_dir, DOMAINS)
    server_dir.start()
    return server_dir


def stored(server, folder=".Verified"):
    """The one delivered file: its bytes, after checking that its ,S= size is its real size."""
    files = maildir_new(server, folder)
    assert len(files) == 1, files
    data = read(files[0])
    assert ",S=%d," % len(data) in os.path.basename(files[0]), (files[0], len(data))
    return data


def prefix(data, msg):
    """The names of the fields above msg in the stored data, which must end with msg."""
    assert data.endswith(msg), data[:600]
    return [n for n, _ in header_fields(data[:len(data) - len(msg)] + b"\r\n")]


def copies(server):
    return server.logtext().count(COPIED)


def signed(key, size=0):
    """A signed message of size bytes, or the smallest one."""
    def make(body):
        return dkim_sign(key, HEADERS, b"Hello.\r\n" + body, "example.org", "sel")
    # The signature's length does not depend on the body: pad the body to the size.
    pad = size - len(make(b""))
    body = b""
    while pad - len(body) > 200:
        body += b"line %06d of a signed message about as long as a line in a real one\r\n" % len(body)
    if pad - len(body) >= 2:
        body += b"x" * (pad - len(body) - 2) + b"\r\n"
    msg = make(body)
    assert pad < 2 or len(msg) == size, (len(msg), size)
    return msg


def raw_session(server):
    s = smtplib.SMTP("127.0.0.1", server.ports["SMTP"], timeout=30)
    s.ehlo("client.example.org")
    assert s.mail("bounces@nospf.example")[0] == 250
    assert s.rcpt("mox@localhost")[0] == 250
    return s


def bdat(server, chunks):
    """Send chunks with BDAT unchanged (no line-end fixing); the final reply."""
    s = raw_session(server)
    for i, chunk in enumerate(chunks):
        last = b" LAST" if i == len(chunks) - 1 else b""
        s.send(b"BDAT %d%s\r\n" % (len(chunk), last) + chunk)
        code, text = s.getreply()
        assert code == 250, (i, code, text)
    assert s.noop()[0] == 250
    s.quit()


def test_held_message_written_once(server, dkim_key):
    """A small message: our headers, then the message without the forged field, in one file and no copy."""
    msg = signed(dkim_key)
    sent = FORGED[0] + KEPT[0] + msg
    send(server, sent, sender="bounces@nospf.example")
    data = stored(server)
    want = KEPT[0] + msg
    assert prefix(data, want) == ["Authentication-Results", "Received-SPF", "Received"]
    assert "dkim=pass header.d=example.org header.s=sel" in header_fields(data)[0][1]
    assert copies(server) == 0
    assert spool_files(server) == []
    server.stop()
    assert index_prefix_lens(server) == [len(data) - len(want)]


def received_len(server):
    """The length of our Received header, from an unchecked-looking message in the Inbox (no file left)."""
    send(server, MSG, sender="bounces@nospf.example")
    files = maildir_new(server)
    assert len(files) == 1, files
    data = read(files[0])
    os.unlink(files[0])
    return data.index(b"\r\n" + MSG.split(b"\r\n", 1)[0]) + 2 - data.index(b"Received: ")


@pytest.mark.parametrize("margin,copied", [(-64, False), (0, False), (1, True), (8192, True)])
def test_hold_limit(server, dkim_key, margin, copied):
    """Around the limit of what is held: the same file either way, only the copy differs."""
    msg = signed(dkim_key, HOLD_MAX - received_len(server) - len(FORGED[1]) + margin)
    sent = FORGED[1] + msg
    before = copies(server)
    send(server, sent, sender="bounces@nospf.example")
    data = stored(server)
    assert prefix(data, msg) == ["Authentication-Results", "Received-SPF", "Received"]
    assert "dkim=pass header.d=example.org" in authres(data)
    assert copies(server) - before == (1 if copied else 0), len(msg)
    assert spool_files(server) == []
    server.stop()
    assert sorted(index_prefix_lens(server))[-1] == len(data) - len(msg)


def test_bdat_crlf_across_chunks_held(server, dkim_key):
    """A CR ending one chunk and the LF starting the next are one line end: still held, bytes unchanged."""
    msg = signed(dkim_key, 3000)
    cut = msg.index(b"\r\n", len(msg) // 2) + 1
    bdat(server, [msg[:cut], msg[cut:]])
    data = stored(server)
    assert prefix(data, msg) == ["Authentication-Results", "Received-SPF", "Received"]
    assert "dkim=pass header.d=example.org" in authres(data)
    assert copies(server) == 0
    assert spool_files(server) == []


def test_bdat_bare_lf_normalized_and_copied(server, dkim_key):
    """A bare LF in a BDAT chunk is stored as CRLF (the spool file's normalization), DKIM over the stored bytes."""
    msg = signed(dkim_key, 3000)
    body_at = msg.index(b"\r\n\r\n") + 4
    sent = msg[:body_at] + msg[body_at:].replace(b"\r\n", b"\n", 3)
    assert sent != msg
    bdat(server, [sent[:100], sent[100:]])
    data = stored(server)
    assert prefix(data, msg) == ["Authentication-Results", "Received-SPF", "Received"]
    assert "dkim=pass header.d=example.org" in authres(data)
    assert copies(server) == 1
    assert spool_files(server) == []


def test_bdat_ends_in_cr(server, dkim_key):
    """A message whose last chunk ends in a bare CR is stored ending in CRLF."""
    msg = signed(dkim_key, 100)
    bdat(server, [msg[:50], msg[50:-1]])
    data = stored(server)
    assert prefix(data, msg) == ["Authentication-Results", "Received-SPF", "Received"]
    assert copies(server) == 1
    assert spool_files(server) == []


def test_data_bare_lf_refused_then_held(server, dkim_key):
    """DATA with a bare LF is refused; the next message of the session is held and stored."""
    s = raw_session(server)
    code, _ = s.docmd("DATA")
    assert code == 354
    s.send(b"Subject: bare\r\n\r\nline\nline\r\n.\r\n")
    code, text = s.getreply()
    assert code == 550, (code, text)
    msg = signed(dkim_key, 1000)
    assert s.mail("bounces@nospf.example")[0] == 250
    assert s.rcpt("mox@localhost")[0] == 250
    code, text = s.data(msg)
    assert code == 250, (code, text)
    s.quit()
    data = stored(server)
    assert prefix(data, msg) == ["Authentication-Results", "Received-SPF", "Received"]
    assert copies(server) == 0
    assert spool_files(server) == []

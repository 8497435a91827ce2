"""Regression tests for bugs found in review of the daemon core and the SMTP server.

Each test shows one bug: it failed before the fix that came with it.
"""
import imaplib
import os
import socket
import ssl
import time

import pytest


from test_smtp import Raw  # noqa: E402  (the raw SMTP client of the SMTP tests)


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for ln in f:
            if ln.startswith("VmRSS:"):
                return int(ln.split()[1])


def wait_secrets(server):
    tcb = os.path.join(server.dir, "data", "accounts", "mox", "index.tcb")
    deadline = time.monotonic() + 10
    while not os.path.exists(tcb) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)


def under_sanitizers():
    return "asan" in os.environ.get("MOX_BIN", "")


def test_smtp_output_bounded_when_client_does_not_read(server_dir):
    """A client that pipelines commands but never reads the replies must not make
    the server buffer the replies without bound: it stops reading instead."""
    # Repeated EHLOs are junk commands: raise their limit so the output fills first.
    server_dir.set_limits(SMTPMaxJunkCommands=100000)
    server_dir.start()
    localserve = server_dir
    r = Raw(localserve.ports["SMTP"], rcvbuf=4096)
    r.reply()
    r.cmd("EHLO x.example")
    time.sleep(0.2)
    before = rss_kb(localserve.proc.pid)
    chunk = b"EHLO a\r\n" * 8192  # 64 KiB of commands, each answered with ~150 bytes
    r.sock.settimeout(2)
    sent = 0
    try:
        while sent < 4 * 1024 * 1024:
            sent += r.sock.send(chunk)
    except socket.timeout:
        pass  # the server stopped reading: what a bounded server does
    time.sleep(0.5)
    after = rss_kb(localserve.proc.pid)
    grown = (after - before) / 1024
    r.close()
    if not under_sanitizers():  # the sanitizers' quarantine keeps freed memory
        assert grown < 24, f"server memory grew {grown:.0f} MiB for a client not reading its replies ({sent} bytes sent)"
    # The server still answers others.
    r2 = Raw(localserve.ports["SMTP"])
    assert r2.reply()[0] == 220
    assert r2.cmd("NOOP")[0] == 250
    r2.close()
    server_dir.stop()


def test_starttls_forgets_plaintext_auth(localserve):
    """RFC 3207 4.2: after STARTTLS the server discards what it learned from the
    client before TLS, an AUTH included: the session must authenticate again."""
    import base64
    wait_secrets(localserve)
    r = Raw(localserve.ports["Submission"])
    assert r.reply()[0] == 220
    code, lines = r.cmd("EHLO x.example")
    assert code == 250 and "STARTTLS" in lines
    cred = base64.b64encode(b"\0mox@localhost\0moxmoxmox").decode()
    assert r.cmd("AUTH PLAIN " + cred)[0] == 235
    assert r.cmd("STARTTLS")[0] == 220
    ctx = ssl.create_default_context(cafile=localserve.cert)
    r.sock = ctx.wrap_socket(r.sock, server_hostname="localhost")
    code, lines = r.cmd("EHLO x.example")
    assert code == 250
    assert any(ln.startswith("AUTH ") for ln in lines), lines
    code, texts = r.cmd("MAIL FROM:<mox@localhost>")
    assert code == 530, (code, texts)
    # Authenticating again under TLS works.
    assert r.cmd("AUTH PLAIN " + cred)[0] == 235
    assert r.cmd("MAIL FROM:<mox@localhost>")[0] == 250
    r.close()


def busy_storage(server):
    """Keep the account's storage thread busy for seconds: another program drops
    20,000 messages into the Maildir and the inotify watch adopts them. Written in
    tmp/ first, then renamed in at once: the first sync (250 ms after the first
    event) adopts nearly all of them. Returns the folder's new/."""
    wait_secrets(server)
    maildir = os.path.join(server.dir, "data", "accounts", "mox", "Maildir")
    newdir = os.path.join(maildir, "new")
    names = [f"1700000000.M{i}P1.other" for i in range(20000)]
    for i, n in enumerate(names):
        with open(os.path.join(maildir, "tmp", n), "wb") as f:
            f.write(b"Subject: other %d\r\n\r\nbody\r\n" % i)
    for n in names:
        os.rename(os.path.join(maildir, "tmp", n), os.path.join(newdir, n))
    time.sleep(0.3)
    return newdir


def stored_copies(newdir):
    import glob
    return [p for p in glob.glob(os.path.join(newdir, "*")) if b"in flight" in open(p, "rb").read(200)]


def stop_during_delivery(server):
    """Send a message while the storage thread is busy (busy_storage) and SIGTERM
    while it waits for storage. Returns (code, texts) of the DATA reply (None
    when the connection closed without one) and the stored copies of it."""
    newdir = busy_storage(server)
    r = Raw(server.ports["SMTP"], timeout=60)
    assert r.reply()[0] == 220
    assert r.cmd("EHLO x.example")[0] == 250
    assert r.cmd("MAIL FROM:<s@example.org>")[0] == 250
    assert r.cmd("RCPT TO:<mox@localhost>")[0] == 250
    assert r.cmd("DATA")[0] == 354
    r.send(b"Subject: in flight\r\n\r\nhello\r\n.\r\n")
    time.sleep(0.05)
    server.proc.send_signal(15)
    try:
        code, texts = r.reply()
    except (EOFError, ConnectionResetError) as e:
        code, texts = None, [str(e)]
    server.stop()
    return code, texts, stored_copies(newdir)


def test_shutdown_answers_delivery_in_progress(localserve):
    """A message being stored when the server is told to stop gets its answer:
    leaving the loop before the storage job was done stored the message but
    the 250 never reached the client, which then sends it again (a duplicate)."""
    code, texts, stored = stop_during_delivery(localserve)
    assert code in (250, 421, 451), (code, texts, len(stored))
    if code != 250:
        assert not stored, f"message stored but the client got {code} {texts}"


def test_shutdown_refuses_delivery_still_queued(server_dir):
    """A delivery still waiting for its storage thread when ShutdownTimeout runs out
    is refused with 451 and not stored. It used to run after the loop had stopped:
    stored, but the client never got its 250 and would send the message again."""
    server_dir.set_limits(ShutdownTimeout="200ms")
    server_dir.start()
    code, texts, stored = stop_during_delivery(server_dir)
    assert code == 451, (code, texts)
    assert "shutting down" in " ".join(texts)
    assert "refusing deliveries not yet stored" in open(server_dir.logpath).read()
    assert not stored, "refused with 451, yet stored"
    # The adoption that kept the thread busy was finished or is picked up again: nothing is lost.
    server_dir.start()
    c = imaplib.IMAP4("127.0.0.1", server_dir.ports["IMAP"])
    c.login("mox@localhost", "moxmoxmox")
    typ, data = c.select("INBOX")
    assert typ == "OK" and int(data[0]) >= 20000
    typ, data = c.search(None, "SUBJECT", '"in flight"')
    assert data == [b""]
    c.logout()


def test_shutdown_refuses_append_still_queued(server_dir):
    """The same for IMAP: an APPEND still waiting for storage at the end of
    ShutdownTimeout gets NO [UNAVAILABLE] and its message is not stored."""
    server_dir.set_limits(ShutdownTimeout="200ms")
    server_dir.start()
    wait_secrets(server_dir)
    s = socket.create_connection(("127.0.0.1", server_dir.ports["IMAP"]), timeout=60)
    f = s.makefile("rb")
    assert f.readline().startswith(b"* OK")
    s.sendall(b"a LOGIN mox@localhost moxmoxmox\r\n")
    while not (line := f.readline()).startswith(b"a "):
        pass
    assert line.startswith(b"a OK"), line
    newdir = busy_storage(server_dir)
    msg = b"Subject: in flight\r\n\r\nhello\r\n"
    s.sendall(b"b APPEND INBOX {%d+}\r\n" % len(msg) + msg + b"\r\n")
    time.sleep(0.05)
    server_dir.proc.send_signal(15)
    while not (line := f.readline()).startswith(b"b "):
        assert line, "connection closed without an answer to APPEND"
    assert line.startswith(b"b NO [UNAVAILABLE]"), line
    server_dir.stop()
    assert not stored_copies(newdir), "refused, yet stored"

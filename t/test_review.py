"""Regression tests for bugs found in review of the daemon core and the SMTP server.

Each test shows one bug: it failed before the fix that came with it.
"""
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


def smtp_at_data(port):
    """A raw SMTP session to mox@localhost, DATA accepted (354): the caller sends the message."""
    r = Raw(port, timeout=60)
    assert r.reply()[0] == 220
    assert r.cmd("EHLO x.example")[0] == 250
    assert r.cmd("MAIL FROM:<s@example.org>")[0] == 250
    assert r.cmd("RCPT TO:<mox@localhost>")[0] == 250
    assert r.cmd("DATA")[0] == 354
    return r


def stop_during_delivery(server):
    """Send a message while the storage thread is busy (busy_storage) and SIGTERM
    while it waits for storage. Returns (code, texts) of the DATA reply (None
    when the connection closed without one) and the stored copies of it."""
    newdir = busy_storage(server)
    r = smtp_at_data(server.ports["SMTP"])
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

"""Spool files created ahead of time (daemon/spool.c).

A thread keeps empty spool files ready in DataDir/tmp/.pool; a message takes one
instead of creating its file on the event loop thread, and falls back to creating
one in DataDir/tmp when none is ready. After many deliveries, APPENDs and
abandoned transactions, a clean stop leaves no file in the spool. When the spool
directory disappears or cannot be used, a message gets 250 or a clean 4xx with an
enhanced status code, never a crash, and delivery works again once it is back.
"""
import imaplib
import os
import re
import shutil
import smtplib
import socket
import threading
import time

import pytest

from test_smtp import maildir_new, skip_unless_delivered

USER = "mox@localhost"
PASS = "moxmoxmox"
POOL_SIZE = 32


def spool_dir(server):
    return os.path.join(server.dir, "data", "tmp")


def pool_dir(server):
    return os.path.join(spool_dir(server), ".pool")


def files_under(path):
    """Every file below path, dot-directories included."""
    out = []
    for root, _dirs, names in os.walk(path):
        out.extend(os.path.join(root, n) for n in names)
    return sorted(out)


def wait_pool(server, want=POOL_SIZE, timeout=10):
    deadline = time.monotonic() + timeout
    n = -1
    while time.monotonic() < deadline:
        try:
            n = len(os.listdir(pool_dir(server)))
        except OSError:
            n = -1
        if n == want:
            return
        time.sleep(0.05)
    raise AssertionError(f"pool has {n} files, want {want}")


def message(token, lines=20):
    body = "".join(f"{token} line {i}\r\n" for i in range(lines))
    return (f"From: <sender@example.org>\r\nTo: <{USER}>\r\nSubject: {token}\r\n"
            f"X-Token: {token}\r\n\r\n" + body)


def send_many(server, prefix, n, lines=20):
    """n messages over one SMTP session; returns the replies' codes."""
    codes = []
    with smtplib.SMTP("127.0.0.1", server.ports["SMTP"], timeout=30) as s:
        s.ehlo("client.example.org")
        for i in range(n):
            s.mail("sender@example.org")
            code, _ = s.rcpt(USER)
            assert code == 250
            code, text = s.data(message(f"{prefix}-{i}", lines))
            skip_unless_delivered(server, code, text)
            codes.append(code)
    return codes


def try_deliver(server, token):
    """One transaction; (code, text) of the first refusal, or (250, "")."""
    with smtplib.SMTP("127.0.0.1", server.ports["SMTP"], timeout=30) as s:
        s.ehlo("client.example.org")
        try:
            s.sendmail("sender@example.org", [USER], message(token))
        except smtplib.SMTPResponseException as e:
            return e.smtp_code, e.smtp_error.decode(errors="replace")
        except smtplib.SMTPRecipientsRefused as e:
            code, text = list(e.recipients.values())[0]
            return code, text.decode(errors="replace")
    return 250, ""


def imap_append(server, token):
    c = imaplib.IMAP4("127.0.0.1", server.ports["IMAP"], timeout=30)
    try:
        c.login(USER, PASS)
        typ, data = c.append("INBOX", None, None, message(token).encode())
        c.logout()
        return typ, data
    finally:
        try:
            c.shutdown()
        except OSError:
            pass


def assert_clean_4xx(code, text, what):
    assert 400 <= code < 500, f"{what}: expected 250 or a temporary 4xx, got {code} {text}"
    assert re.match(r"4\.\d{1,3}\.\d{1,3}\b", text), f"{what}: no enhanced status code in {code} {text}"


def deliver_until_ok(server, prefix, timeout=10):
    """Deliver until one gets 250 (each refusal a clean 4xx); returns the attempts."""
    deadline = time.monotonic() + timeout
    i = 0
    while True:
        code, text = try_deliver(server, f"{prefix}-{i}")
        i += 1
        if code == 250:
            return i
        assert_clean_4xx(code, text, f"{prefix}-{i}")
        assert time.monotonic() < deadline, "delivery does not recover"
        time.sleep(0.1)


def test_pool_filled_and_names(localserve):
    """The pool holds empty files named like any spool file, for the server's host name."""
    wait_pool(localserve)
    names = os.listdir(pool_dir(localserve))
    for n in names:
        assert re.fullmatch(r"\d+\.M\d+P\d+Q\d+\.localhost", n), n
        assert os.path.getsize(os.path.join(pool_dir(localserve), n)) == 0
    # DataDir/tmp itself lists only messages under way (none).
    assert [n for n in os.listdir(spool_dir(localserve)) if not n.startswith(".")] == []


def test_many_deliveries_clean_stop_leaves_nothing(localserve):
    wait_pool(localserve)
    results = []

    def worker(k):
        results.append(send_many(localserve, f"w{k}", 60))

    # Several sessions at once take files faster than one at a time.
    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(c for r in results for c in r) == [250] * 240
    # Larger than what is held in memory (128 KiB): written to the spool file as it arrives.
    assert send_many(localserve, "big", 3, lines=12000) == [250] * 3
    for i in range(5):
        typ, data = imap_append(localserve, f"append-{i}")
        assert typ == "OK", data
    # Abandoned transactions: the client leaves in the middle of the data.
    for i in range(5):
        with socket.create_connection(("127.0.0.1", localserve.ports["SMTP"]), timeout=10) as c:
            f = c.makefile("rb")
            f.readline()
            c.sendall(b"EHLO client.example.org\r\n")
            while f.readline()[3:4] == b"-":
                pass
            c.sendall(b"MAIL FROM:<sender@example.org>\r\nRCPT TO:<" + USER.encode() + b">\r\nDATA\r\n")
            for _ in range(3):
                f.readline()
            c.sendall(b"Subject: abandoned\r\n\r\nhalf a message\r\n")
            f.close()  # else the socket stays open with it
    assert len(maildir_new(localserve)) == 248
    wait_pool(localserve)
    localserve.stop()
    assert files_under(spool_dir(localserve)) == [], "spool files left after a clean stop"


def test_leftovers_of_a_crash_removed_at_start(server_dir):
    """A kill leaves the pool's files; the next start removes them."""
    server_dir.start()
    wait_pool(server_dir)
    before = set(os.listdir(pool_dir(server_dir)))
    server_dir.proc.kill()
    server_dir.proc.wait()
    server_dir.log.close()
    server_dir.proc = None
    server_dir.start()
    wait_pool(server_dir)
    assert not before & set(os.listdir(pool_dir(server_dir)))
    server_dir.stop()
    assert files_under(spool_dir(server_dir)) == []


def test_spool_directory_removed(localserve):
    """The spool directory goes away: clean 4xx at worst, then delivery works again."""
    wait_pool(localserve)
    shutil.rmtree(spool_dir(localserve))
    codes = []
    for i in range(5):
        code, text = try_deliver(localserve, f"gone-{i}")
        if code != 250:
            assert_clean_4xx(code, text, f"gone-{i}")
        codes.append(code)
    deliver_until_ok(localserve, "back")
    wait_pool(localserve)
    assert send_many(localserve, "after", 40) == [250] * 40
    typ, data = imap_append(localserve, "append-after")
    assert typ == "OK", data
    localserve.stop()
    assert files_under(spool_dir(localserve)) == []


def test_spool_directory_unusable(localserve):
    """A file where the spool directory should be: 4xx / NO while it lasts, never a crash."""
    wait_pool(localserve)
    tmp = spool_dir(localserve)
    shutil.rmtree(tmp)
    open(tmp, "w").close()
    # The pooled files are gone with the directory and no new one can be made.
    for i in range(40):
        code, text = try_deliver(localserve, f"unusable-{i}")
        assert code != 250, "acknowledged without a spool file"
        assert_clean_4xx(code, text, f"unusable-{i}")
    typ, data = imap_append(localserve, "append-unusable")
    assert typ == "NO", data
    assert localserve.proc.poll() is None
    os.unlink(tmp)
    deliver_until_ok(localserve, "usable")
    wait_pool(localserve)
    assert send_many(localserve, "after", 40) == [250] * 40
    localserve.stop()
    assert files_under(spool_dir(localserve)) == []

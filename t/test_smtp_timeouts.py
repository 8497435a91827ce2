"""SMTP timeouts per phase (RFC 5321 4.5.3.2): the wait for a command, inactivity
within message data, the total time of one message's data, the time until the
first transaction, and replies a client does not read.

Every timeout is set small here; each test asserts the 421 4.4.2 with the cid, that
the connection closes, the log line naming the phase, and for message data that
nothing half-received is delivered or left in the spool.
"""
import re
import socket
import time

import pytest

from test_smtp import LOCALSERVE_PASSWORD, Raw, maildir_new, skip_unless_auth, skip_unless_delivered, \
    spool_files, wait_secrets  # noqa: E402  (helpers of the SMTP tests)


def start(server, **kv):
    server.set_limits(**kv)
    server.start()
    return server


def session(server, port="SMTP"):
    """A raw session after EHLO."""
    r = Raw(server.ports[port])
    assert r.reply()[0] == 220
    assert r.cmd("EHLO client.example.org")[0] == 250
    return r


def transaction(server):
    """A raw session with MAIL and RCPT accepted."""
    r = session(server)
    assert r.cmd("MAIL FROM:<sender@example.org>")[0] == 250
    assert r.cmd("RCPT TO:<mox@localhost>")[0] == 250
    return r


def expect_timeout(r, text, lo, hi, t0):
    """The next reply is the timeout's 421 between lo and hi seconds after t0; then the close."""
    code, t = r.reply()
    took = time.monotonic() - t0
    assert code == 421, (code, t)
    assert t[0].startswith("4.4.2 ") and text in t[0], t
    assert re.search(r"\(cid [0-9a-f]+\)$", t[0]), t
    assert lo <= took < hi, took
    assert r.closed()


def wait_log(server, phase, timeout=5):
    """The one info line of a timeout, naming the phase."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        lines = [ln for ln in server.logtext().splitlines() if 'm="timeout, closing"' in ln]
        if lines:
            assert len(lines) == 1, lines
            assert f"phase={phase}" in lines[0], lines[0]
            return lines[0]
        time.sleep(0.05)
    raise AssertionError("no timeout log line:\n" + server.logtext()[-2000:])


def nothing_stored(server):
    # The spool file goes when the session is freed, just after the close.
    deadline = time.monotonic() + 3
    while spool_files(server) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert spool_files(server) == []
    assert maildir_new(server) == []


def still_answers(server):
    r = Raw(server.ports["SMTP"])
    assert r.reply()[0] == 220
    assert r.cmd("QUIT")[0] == 221


# ---- waiting for a command ----

def test_command_timeout(server_dir):
    start(server_dir, SMTPTimeout="500ms")
    r = session(server_dir)
    assert r.cmd("MAIL FROM:<sender@example.org>")[0] == 250
    t0 = time.monotonic()
    expect_timeout(r, "waiting for a command", 0.4, 3, t0)
    wait_log(server_dir, "command")
    still_answers(server_dir)


def test_command_dribbled_still_times_out(server_dir):
    """A command line sent a byte at a time: activity does not extend the wait."""
    start(server_dir, SMTPTimeout="800ms")
    r = session(server_dir)
    assert r.cmd("MAIL FROM:<sender@example.org>")[0] == 250
    t0 = time.monotonic()
    for ch in "RCPT TO:<mox@localhost>":
        if time.monotonic() - t0 > 1.5:
            break
        try:
            r.send(ch)
        except OSError:
            break
        time.sleep(0.1)
    expect_timeout(r, "waiting for a command", 0.7, 3, t0)
    wait_log(server_dir, "command")


def test_commands_within_timeout_go_on(server_dir):
    """Pauses shorter than SMTPTimeout, adding up to more, are fine."""
    start(server_dir, SMTPTimeout="600ms")
    r = session(server_dir)
    assert r.cmd("MAIL FROM:<sender@example.org>")[0] == 250
    for _ in range(5):
        time.sleep(0.3)
        assert r.cmd("NOOP")[0] == 250
    assert r.cmd("QUIT")[0] == 221


def test_auth_response_timeout(server_dir):
    start(server_dir, SMTPTimeout="500ms")
    wait_secrets(server_dir)
    r = session(server_dir, "Submission")
    code, t = r.cmd("AUTH PLAIN")
    skip_unless_auth(code, " ".join(t).encode())
    assert code == 334, (code, t)
    t0 = time.monotonic()
    expect_timeout(r, "authentication response", 0.4, 3, t0)
    wait_log(server_dir, "auth")


# ---- the time until the first transaction ----

def test_setup_timeout_despite_activity(server_dir):
    """Commands keep coming, but no MAIL: the session ends at SMTPSetupTimeout."""
    start(server_dir, SMTPSetupTimeout="1s", SMTPTimeout="5s")
    t0 = time.monotonic()
    r = session(server_dir)
    while True:
        code, t = r.cmd("NOOP")
        if code != 250:
            break
        time.sleep(0.15)
    took = time.monotonic() - t0
    assert code == 421 and t[0].startswith("4.4.2 ") and "no mail transaction" in t[0] and "(cid " in t[0], t
    assert 0.9 <= took < 3, took
    assert r.closed()
    wait_log(server_dir, "setup")


def test_setup_timeout_first_command(server_dir):
    """A client that connects and says nothing."""
    start(server_dir, SMTPSetupTimeout="500ms")
    r = Raw(server_dir.ports["SMTP"])
    t0 = time.monotonic()
    assert r.reply()[0] == 220
    expect_timeout(r, "no mail transaction", 0.4, 3, t0)
    wait_log(server_dir, "setup")


def test_setup_timeout_ends_at_mail_and_auth(server_dir):
    """After MAIL (or AUTH on submission) only the per-command wait applies."""
    start(server_dir, SMTPSetupTimeout="700ms", SMTPTimeout="5s")
    wait_secrets(server_dir)
    r = transaction(server_dir)
    assert r.cmd("RSET")[0] == 250
    time.sleep(1.0)
    assert r.cmd("NOOP")[0] == 250
    assert r.cmd("QUIT")[0] == 221

    s = session(server_dir, "Submission")
    import base64
    code, t = s.cmd("AUTH PLAIN " + base64.b64encode(b"\0mox@localhost\0" + LOCALSERVE_PASSWORD.encode()).decode())
    skip_unless_auth(code, " ".join(t).encode())
    assert code == 235, (code, t)
    time.sleep(1.0)
    assert s.cmd("NOOP")[0] == 250
    assert s.cmd("QUIT")[0] == 221


def test_setup_timeout_covers_tls_handshake(server_dir):
    """STARTTLS, then a handshake that never comes: closed at the setup deadline."""
    start(server_dir, SMTPSetupTimeout="800ms", SMTPTimeout="10s")
    r = session(server_dir)
    code, t = r.cmd("STARTTLS")
    assert code == 220, (code, t)
    t0 = time.monotonic()
    r.send(b"\x16\x03\x01")  # the start of a ClientHello, and no more
    r.sock.settimeout(5)
    try:
        assert r.sock.recv(100) == b""
    except ConnectionResetError:
        pass
    assert 0.5 <= time.monotonic() - t0 < 3
    wait_log(server_dir, "setup")
    still_answers(server_dir)


# ---- message data ----

def test_data_stall_not_delivered(server_dir):
    start(server_dir, SMTPDataTimeout="500ms")
    r = transaction(server_dir)
    assert r.cmd("DATA")[0] == 354
    r.send(b"Subject: stalled\r\n\r\nhalf a message\r\n")
    t0 = time.monotonic()
    expect_timeout(r, "waiting for message data", 0.4, 3, t0)
    wait_log(server_dir, "data")
    nothing_stored(server_dir)
    still_answers(server_dir)


def test_bdat_stall_not_delivered(server_dir):
    start(server_dir, SMTPDataTimeout="500ms")
    r = transaction(server_dir)
    r.send(b"BDAT 1000 LAST\r\nSubject: stalled\r\n\r\nonly some of the chunk")
    t0 = time.monotonic()
    expect_timeout(r, "waiting for message data", 0.4, 3, t0)
    wait_log(server_dir, "data")
    nothing_stored(server_dir)


def test_message_timeout_slow_drip(server_dir):
    """Data keeps trickling, each pause within SMTPDataTimeout, but the total is capped."""
    start(server_dir, SMTPDataTimeout="500ms", SMTPMessageTimeout="1200ms")
    r = transaction(server_dir)
    assert r.cmd("DATA")[0] == 354
    t0 = time.monotonic()
    r.send(b"Subject: drip\r\n\r\n")
    r.sock.settimeout(0.15)
    got = b""
    while time.monotonic() - t0 < 4 and b"\r\n" not in got:
        try:
            r.send(b"x\r\n")
        except OSError:
            break
        try:
            d = r.sock.recv(4096)
            if not d:
                break
            got += d
        except socket.timeout:
            pass
    r.sock.settimeout(5)
    r.buf = got
    expect_timeout(r, "message data took too long", 1.1, 3, t0)
    wait_log(server_dir, "message")
    nothing_stored(server_dir)


def test_message_timeout_bdat_chunks(server_dir):
    """BDAT: the cap spans the chunks of one message and the commands between them."""
    start(server_dir, SMTPTimeout="5s", SMTPMessageTimeout="1s")
    r = transaction(server_dir)
    t0 = time.monotonic()
    code = 250
    while code == 250 and time.monotonic() - t0 < 4:
        r.send(b"BDAT 3\r\nab\n")
        code, t = r.reply()
        time.sleep(0.2)
    took = time.monotonic() - t0
    assert code == 421 and "message data took too long" in t[0] and "(cid " in t[0], t
    assert 0.9 <= took < 3, took
    assert r.closed()
    wait_log(server_dir, "message")
    nothing_stored(server_dir)


def test_slow_steady_sender_delivered(server_dir):
    """Pauses below each timeout, and a whole message longer than SMTPDataTimeout and
    SMTPTimeout: delivered. The time after the final dot is not the client's."""
    start(server_dir, SMTPTimeout="600ms", SMTPDataTimeout="600ms", SMTPMessageTimeout="10s",
          SMTPSetupTimeout="5s")
    r = session(server_dir)
    time.sleep(0.3)
    assert r.cmd("MAIL FROM:<sender@example.org>")[0] == 250
    time.sleep(0.3)
    assert r.cmd("RCPT TO:<mox@localhost>")[0] == 250
    assert r.cmd("DATA")[0] == 354
    body = b"Subject: slow\r\n\r\n"
    r.send(body)
    for i in range(8):
        time.sleep(0.25)
        ln = b"line %d\r\n" % i
        body += ln
        r.send(ln)
    code, t = r.cmd(".")
    skip_unless_delivered(server_dir, code, t)
    assert code == 250, (code, t)
    files = maildir_new(server_dir)
    assert len(files) == 1 and open(files[0], "rb").read().endswith(body)
    # BDAT in slow chunks: each pause within SMTPTimeout.
    assert r.cmd("MAIL FROM:<sender@example.org>")[0] == 250
    assert r.cmd("RCPT TO:<mox@localhost>")[0] == 250
    for i in range(4):
        time.sleep(0.3)
        r.send(b"BDAT 4\r\nab\r\n")
        assert r.reply()[0] == 250
    r.send(b"BDAT 0 LAST\r\n")
    assert r.reply()[0] == 250
    assert len(maildir_new(server_dir)) == 2
    assert r.cmd("QUIT")[0] == 221
    assert 'm="timeout, closing"' not in server_dir.logtext()


# ---- a client that does not read ----

def test_write_timeout_client_not_reading(server_dir):
    """Pipelined commands whose replies are never read: the stuck output times out."""
    # Many HELPs: past the junk command limit the session would end before the output fills.
    start(server_dir, SMTPTimeout="1s", SMTPMaxJunkCommands=100000)
    r = Raw(server_dir.ports["SMTP"], rcvbuf=4096)
    r.send(b"EHLO client.example.org\r\n")
    r.sock.settimeout(0.5)
    # Keep sending until the server stops reading (its replies fill every buffer).
    sent = 0
    try:
        while sent < 20 * 1024 * 1024:
            r.sock.send(b"HELP\r\n" * 500)
            sent += 3000
    except (socket.timeout, BlockingIOError):
        pass
    assert sent < 20 * 1024 * 1024, "the server kept reading"
    wait_log(server_dir, "write", timeout=6)
    # The server is gone: reading what is left ends in EOF or a reset.
    r.sock.settimeout(5)
    try:
        while r.sock.recv(1 << 20):
            pass
    except ConnectionResetError:
        pass
    still_answers(server_dir)

"""SMTP limits on what a client controls: commands that move no mail.

NOOP, RSET, VRFY, EXPN, HELP and a repeated EHLO/HELO each come within the
command timeout, so without a count a client could hold a connection slot
forever. Limits.SMTPMaxJunkCommands caps them: the command past the limit gets
421 4.7.0 with the cid and the connection closes. The count starts over when the
data of a message with accepted recipients begins, so a sender that reuses its
connection with a few NOOP/RSET between messages is never cut.
"""
import re
import time

from test_smtp import Raw, maildir_new, read, skip_unless_delivered, tls_context  # noqa: E402


def start(server, **kv):
    server.set_limits(**kv)
    server.start()
    return server


def session(server):
    """A raw session after EHLO."""
    r = Raw(server.ports["SMTP"])
    assert r.reply()[0] == 220
    assert r.cmd("EHLO client.example.org")[0] == 250
    return r


def expect_junk_close(server, r, code_text):
    """code_text is the reply to the command past the limit: the 421, then the close and one log line."""
    code, t = code_text
    assert code == 421, (code, t)
    assert t[0].startswith("4.7.0 too many commands without mail, closing"), t
    assert re.search(r" \(cid [0-9a-f]+\)$", t[0]), t
    assert r.closed()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        lines = [ln for ln in server.logtext().splitlines() if "too many commands without mail" in ln]
        if lines:
            assert len(lines) == 1, lines
            assert "remote=127.0.0.1" in lines[0], lines[0]
            return
        time.sleep(0.05)
    raise AssertionError("no log line:\n" + server.logtext()[-2000:])


def still_answers(server):
    r = Raw(server.ports["SMTP"])
    assert r.reply()[0] == 220
    assert r.cmd("EHLO client.example.org")[0] == 250
    assert r.cmd("NOOP")[0] == 250
    assert r.cmd("QUIT")[0] == 221


def send_message(r, server, subject):
    assert r.cmd("MAIL FROM:<sender@example.org>")[0] == 250
    assert r.cmd("RCPT TO:<mox@localhost>")[0] == 250
    assert r.cmd("DATA")[0] == 354
    r.send(f"Subject: {subject}\r\n\r\nbody of {subject}\r\n.\r\n")
    code, t = r.reply()
    skip_unless_delivered(server, code, t)
    assert code == 250, (code, t)


def test_junk_commands_each_kind_counts(server_dir):
    s = start(server_dir, SMTPMaxJunkCommands=5)
    r = session(s)
    assert r.cmd("NOOP")[0] == 250
    assert r.cmd("RSET")[0] == 250
    assert r.cmd("VRFY mox")[0] == 252
    assert r.cmd("HELP")[0] == 214
    assert r.cmd("EXPN list")[0] == 502
    expect_junk_close(s, r, r.cmd("NOOP"))
    still_answers(s)


def test_default_limit_is_100(localserve):
    r = session(localserve)
    # Pipelined: the hundred answer 250, the one past the limit the 421.
    r.send("NOOP\r\n" * 101)
    for i in range(100):
        assert r.reply()[0] == 250, i
    expect_junk_close(localserve, r, r.reply())


def test_repeated_ehlo_and_helo_count(server_dir):
    s = start(server_dir, SMTPMaxJunkCommands=3)
    r = session(s)  # the first EHLO is free
    assert r.cmd("EHLO client.example.org")[0] == 250
    assert r.cmd("HELO client.example.org")[0] == 250
    assert r.cmd("EHLO client.example.org")[0] == 250
    expect_junk_close(s, r, r.cmd("HELO client.example.org"))


def test_ehlo_after_starttls_is_not_junk(server_dir):
    s = start(server_dir, SMTPMaxJunkCommands=1)
    r = session(s)
    assert r.cmd("STARTTLS")[0] == 220
    r.sock = tls_context(s).wrap_socket(r.sock, server_hostname="localhost")
    assert r.cmd("EHLO client.example.org")[0] == 250  # required again (RFC 3207 4.2)
    assert r.cmd("NOOP")[0] == 250
    expect_junk_close(s, r, r.cmd("NOOP"))


def test_mail_rset_loop_is_cut(server_dir):
    """MAIL alone does not start the count over: only message data does."""
    s = start(server_dir, SMTPMaxJunkCommands=3)
    r = session(s)
    for _ in range(3):
        assert r.cmd("MAIL FROM:<sender@example.org>")[0] == 250
        assert r.cmd("RCPT TO:<mox@localhost>")[0] == 250
        assert r.cmd("RSET")[0] == 250
    assert r.cmd("MAIL FROM:<sender@example.org>")[0] == 250
    expect_junk_close(s, r, r.cmd("RSET"))


def test_multi_message_session_never_hits_limit(server_dir):
    """Three junk commands before each of several messages, with a limit of 3: the
    data of each message starts the count over, so the session is never cut."""
    s = start(server_dir, SMTPMaxJunkCommands=3)
    r = session(s)
    for i in range(4):
        assert r.cmd("NOOP")[0] == 250
        assert r.cmd("RSET")[0] == 250
        assert r.cmd("EHLO client.example.org")[0] == 250
        send_message(r, s, f"msg{i}")
    # A message by BDAT starts the count over as well.
    assert r.cmd("RSET")[0] == 250
    assert r.cmd("NOOP")[0] == 250
    assert r.cmd("MAIL FROM:<sender@example.org>")[0] == 250
    assert r.cmd("RCPT TO:<mox@localhost>")[0] == 250
    body = b"Subject: msg4\r\n\r\nby bdat\r\n"
    r.send(b"BDAT %d LAST\r\n" % len(body) + body)
    assert r.reply()[0] == 250
    for _ in range(3):
        assert r.cmd("NOOP")[0] == 250
    assert r.cmd("QUIT")[0] == 221
    files = maildir_new(s)
    assert len(files) == 5
    assert sorted(read(f).split(b"Subject: ")[1].split(b"\r\n")[0] for f in files) == \
        [b"msg0", b"msg1", b"msg2", b"msg3", b"msg4"]
    assert "too many commands without mail" not in s.logtext()


def test_junk_limit_closes_with_transaction_open(server_dir):
    """The 421 ends a session in the middle of a transaction too; nothing is delivered."""
    s = start(server_dir, SMTPMaxJunkCommands=2)
    r = session(s)
    assert r.cmd("MAIL FROM:<sender@example.org>")[0] == 250
    assert r.cmd("RCPT TO:<mox@localhost>")[0] == 250
    assert r.cmd("NOOP")[0] == 250
    assert r.cmd("VRFY mox")[0] == 252
    expect_junk_close(s, r, r.cmd("NOOP"))
    assert maildir_new(s) == []
    still_answers(s)


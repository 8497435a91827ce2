"""Disk errors seen from the protocols: fsync/fdatasync fail with EIO (injected with
t/faultinject.c through LD_PRELOAD) for the account's index files or its Maildir.

While the fault is on, an SMTP delivery gets a temporary 4xx reply with an enhanced
status code, never 250 (also when another recipient's account stored it: 451, and the
retry gives that account a second copy); IMAP APPEND gets NO; the daemon keeps running and answers new
sessions. With the Maildir's syncs failing, a small message may still get 250: the
account's delivery log (index.wal, beside the index) made it durable, and the Maildir
is synced later; messages over the log's limit (128 KiB) need the Maildir syncs first. After the fault is switched off and the daemon restarted, delivery works
again and every message acknowledged earlier (SMTP 250, APPEND OK) is readable over
IMAP with its exact body. The tests assert only what a client sees, not which file
is synced when.
"""
import imaplib
import os
import re
import shutil
import smtplib
import subprocess
import time

import pytest

from conftest import MOX, Server
from test_smtp import domains_yaml

USER = "mox@localhost"
PASS = "moxmoxmox"
FROM = "sender@faults.example"
HERE = os.path.dirname(os.path.abspath(__file__))

# Fault name -> substring of the paths whose fsync/fdatasync fail.
FAULTS = {
    "index": "index.",       # the account's index files (and any log next to them)
    "maildir": "/Maildir/",  # message files and folder directories
}


# ---- the fault-injection library and a server that loads it ----

def asan_runtime():
    """Path of the ASan runtime the mox binary links, None when it links none."""
    p = subprocess.run(["ldd", MOX], capture_output=True, text=True, timeout=30)
    m = re.search(r"^\s*libasan\.so\S*\s+=>\s+(\S+)", p.stdout, re.M)
    if m is None:
        return None
    if os.path.exists(m.group(1)):
        return m.group(1)
    p = subprocess.run(["gcc", "-print-file-name=libasan.so"], capture_output=True, text=True, timeout=30)
    path = p.stdout.strip()
    return path if os.path.isabs(path) and os.path.exists(path) else ""


@pytest.fixture(scope="module")
def faultlib(tmp_path_factory):
    """Build t/faultinject.c; returns the LD_PRELOAD value for the server."""
    if shutil.which("gcc") is None:
        pytest.skip("gcc is needed to build the fault-injection library")
    so = str(tmp_path_factory.mktemp("faultlib") / "faultinject.so")
    p = subprocess.run(["gcc", "-shared", "-fPIC", "-O2", "-Wall", "-Wextra", "-Werror", "-o", so,
                        os.path.join(HERE, "faultinject.c"), "-ldl"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    asan = asan_runtime()
    if asan == "":
        pytest.skip("the mox binary links the ASan runtime, which must come first in LD_PRELOAD, "
                    "but its path could not be found")
    return f"{asan}:{so}" if asan else so


class FaultServer(Server):
    """A localserve started with the fault library preloaded; fault switched with on()/off()."""

    def __init__(self, tmpdir, preload, pathpart):
        super().__init__(tmpdir)
        self.switch = os.path.join(tmpdir, "fault-on")
        self.env = {"LD_PRELOAD": preload, "MOX_FAULT_SYNC_PATH": pathpart, "MOX_FAULT_SYNC_ON": self.switch}

    def start(self, wait=True):
        # Server.start passes the environment on: set ours for the duration of the start only.
        saved = {k: os.environ.get(k) for k in self.env}
        os.environ.update(self.env)
        try:
            super().start(wait)
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v

    def on(self):
        if os.path.exists(self.switch + ".hit"):
            os.unlink(self.switch + ".hit")
        open(self.switch, "w").close()

    def wait_hit(self, timeout=30):
        """Delay mode: wait until a delayed sync is under way (the library's .hit file)."""
        deadline = time.monotonic() + timeout
        while not os.path.exists(self.switch + ".hit"):
            assert time.monotonic() < deadline, "no delayed sync started"
            time.sleep(0.01)

    def off(self):
        if os.path.exists(self.switch):
            os.unlink(self.switch)

    def restart(self):
        # start() truncates the log: keep the earlier run's for a failure message.
        self.stop()
        self.earlier_logs = getattr(self, "earlier_logs", "") + open(self.logpath, errors="replace").read()
        self.start()

    def assert_alive(self):
        assert self.proc.poll() is None, f"server exited with {self.proc.returncode}:\n{self.logtext()[-3000:]}"


@pytest.fixture(params=sorted(FAULTS))
def fault_server(request, tmpdir_short, faultlib):
    s = FaultServer(tmpdir_short, faultlib, FAULTS[request.param])
    s.fault = request.param
    s.init()
    s.start()
    yield s
    s.off()
    s.stop(expect_rc=None)


# ---- clients ----

# Lines that make a message larger than what the delivery log takes (128 KiB).
BIG_LINES = 6000


def message(token):
    """A message whose body identifies it; returns (full message, body). A token
    starting with "big-" gives a message too large for the delivery log."""
    lines = BIG_LINES if token.startswith("big-") else 30
    body = "".join(f"{token} body line {i}\r\n" for i in range(lines))
    msg = (f"From: {FROM}\r\nTo: {USER}\r\nSubject: fault test {token}\r\n"
           f"Message-ID: <{token}@faults.example>\r\nX-Token: {token}\r\n\r\n" + body)
    return msg, body


def deliver(server, token):
    """One SMTP transaction to the local account; returns (code, reply text)."""
    msg, _ = message(token)
    with smtplib.SMTP("127.0.0.1", server.ports["SMTP"], timeout=60) as c:
        c.ehlo("client.faults.example")
        try:
            c.sendmail(FROM, [USER], msg)
        except smtplib.SMTPRecipientsRefused as e:
            code, text = list(e.recipients.values())[0]
            return code, text.decode(errors="replace")
        except smtplib.SMTPResponseException as e:
            return e.smtp_code, e.smtp_error.decode(errors="replace")
    return 250, ""


def assert_ehlo(server):
    """A fresh SMTP session is answered: greeting and EHLO."""
    with smtplib.SMTP("127.0.0.1", server.ports["SMTP"], timeout=30) as c:
        code, text = c.ehlo("client.faults.example")
        assert code == 250, (code, text)


def imap_login(server):
    c = imaplib.IMAP4("127.0.0.1", server.ports["IMAP"], timeout=60)
    c.login(USER, PASS)
    return c


def append(c, token):
    """APPEND a message to INBOX; returns the status ("OK", "NO")."""
    msg, _ = message(token)
    typ, data = c.append("INBOX", None, None, msg.encode())
    return typ, data


def inbox_bodies(server):
    """X-Token -> list of bodies of the messages in INBOX, read over IMAP."""
    c = imap_login(server)
    try:
        typ, _ = c.select("INBOX", readonly=True)
        assert typ == "OK"
        typ, data = c.uid("FETCH", "1:*", "(BODY.PEEK[HEADER.FIELDS (X-Token)] BODY.PEEK[TEXT])")
        assert typ == "OK", data
        found = {}
        # imaplib yields one tuple per literal, (text before it, literal); a message gives two.
        lits = [item for item in data if isinstance(item, tuple)]
        assert len(lits) % 2 == 0, data
        for i in range(0, len(lits), 2):
            a, b = lits[i], lits[i + 1]
            if b"HEADER.FIELDS" in b[0].upper():
                a, b = b, a
            m = re.search(rb"X-Token:\s*(\S+)", a[1], re.I)
            token = m.group(1).decode() if m else None
            found.setdefault(token, []).append(b[1].decode(errors="replace"))
        c.logout()
        return found
    finally:
        try:
            c.shutdown()
        except OSError:
            pass


def check_temporary(code, text, what):
    assert code != 250, f"{what}: acknowledged with 250 while the disk fails"
    assert 400 <= code < 500, f"{what}: expected a temporary 4xx reply, got {code} {text}"
    assert re.match(r"4\.\d{1,3}\.\d{1,3}\b", text), f"{what}: no enhanced status code in {code} {text}"


# ---- tests ----

def fault_phase(server, acked):
    """Deliver and APPEND with the fault off, then on; returns the replies seen during it.

    acked collects the token of every message the server acknowledged (250, APPEND OK)."""
    for i in range(2):
        code, text = deliver(server, f"before-{i}")
        assert code == 250, f"delivery before the fault: {code} {text}"
        acked.append(f"before-{i}")
    imap = imap_login(server)
    typ, data = append(imap, "append-before")
    assert typ == "OK", data
    acked.append("append-before")

    server.on()
    # Failing Maildir syncs hold up only messages the delivery log does not take.
    big = server.fault == "maildir"
    pre = "big-" if big else ""
    seen = {"smtp": [], "append": None, "imap_after": None, "small": []}
    for i in range(3):
        code, text = deliver(server, f"{pre}during-{i}")
        seen["smtp"].append((code, text))
        if code == 250:
            acked.append(f"{pre}during-{i}")
    if big:
        for i in range(2):
            code, text = deliver(server, f"small-during-{i}")
            seen["small"].append((code, text))
            if code == 250:
                acked.append(f"small-during-{i}")
    try:
        typ, data = append(imap, f"{pre}append-during")
        seen["append"] = (typ, data)
        if typ == "OK":
            acked.append(f"{pre}append-during")
        # The session stays usable, or the server closes it with BYE.
        try:
            typ, data = imap.noop()
            seen["imap_after"] = typ
        except imaplib.IMAP4.abort as e:
            seen["imap_after"] = f"closed: {e}"
    finally:
        try:
            imap.shutdown()
        except OSError:
            pass
    return seen


def test_sync_fault_gives_temporary_errors_and_server_lives(fault_server):
    s = fault_server
    acked = []
    seen = fault_phase(s, acked)
    for i, (code, text) in enumerate(seen["smtp"]):
        check_temporary(code, text, f"delivery {i} during the fault")
    for i, (code, text) in enumerate(seen["small"]):
        # Durable through the log (250), or refused once a checkpoint found the fault.
        assert code == 250 or 400 <= code < 500, f"small delivery {i} during the Maildir fault: {code} {text}"
    typ, data = seen["append"]
    assert typ == "NO", f"APPEND during the fault: expected NO, got {typ} {data}"
    after = seen["imap_after"]
    assert after == "OK" or (after.startswith("closed:") and "EOF" not in after and "socket error" not in after), \
        f"IMAP session after the failed APPEND: {after}"

    # Still serving, fault still on: new SMTP and IMAP sessions are answered.
    s.assert_alive()
    assert_ehlo(s)
    c = imap_login(s)
    assert c.noop()[0] == "OK"
    c.logout()
    s.assert_alive()


def test_sync_fault_acknowledged_mail_survives_restart(fault_server):
    s = fault_server
    acked = []
    fault_phase(s, acked)
    s.assert_alive()

    s.off()
    s.restart()
    code, text = deliver(s, "after-restart")
    assert code == 250, f"delivery after the fault is off and a restart: {code} {text}"
    acked.append("after-restart")

    bodies = inbox_bodies(s)
    missing = [t for t in acked if t not in bodies]
    errors = "\n".join(l for l in s.earlier_logs.splitlines() if " l=error " in l)
    assert not missing, (f"acknowledged messages missing after restart: {missing}; in INBOX: {sorted(bodies, key=str)}\n"
                         f"errors logged before the restart:\n{errors[-3000:]}")
    for t in acked:
        _, want = message(t)
        assert want in bodies[t], f"body of {t} differs after restart: {bodies[t]!r}"


def test_maildir_fault_through_shutdown_loses_nothing(fault_server):
    """Logged deliveries while the Maildir cannot be synced, and a shutdown whose
    checkpoint fails too: the log keeps them, and the next start has every one."""
    s = fault_server
    if s.fault != "maildir":
        pytest.skip("only the Maildir fault leaves the delivery log working")
    acked = []
    s.on()
    for i in range(5):
        code, text = deliver(s, f"logged-{i}")
        assert code == 250 or 400 <= code < 500, f"delivery {i}: {code} {text}"
        if code == 250:
            acked.append(f"logged-{i}")
    assert acked, "no delivery went through the delivery log while only the Maildir failed"
    s.assert_alive()
    s.stop(expect_rc=None)  # the checkpoint at close fails: the entries stay in the log
    s.earlier_logs = getattr(s, "earlier_logs", "") + open(s.logpath, errors="replace").read()
    s.off()
    s.start()
    bodies = inbox_bodies(s)
    missing = [t for t in acked if t not in bodies]
    assert not missing, f"acknowledged messages missing after the restart: {missing}; in INBOX: {sorted(bodies, key=str)}"
    for t in acked:
        _, want = message(t)
        assert want in bodies[t], f"body of {t} differs after restart"
        assert len(bodies[t]) == 1, f"{t} is in INBOX {len(bodies[t])} times"


@pytest.fixture
def log_fault_server(tmpdir_short, faultlib):
    s = FaultServer(tmpdir_short, faultlib, "index.wal")
    s.fault = "log"
    s.init()
    s.start()
    yield s
    s.off()
    s.stop(expect_rc=None)


def test_log_sync_fault_falls_back_to_syncing_the_files(log_fault_server):
    """Only the delivery log's fdatasync fails: a delivery is made durable the way an unlogged
    one is (message file, directory, index) and acknowledged; after a restart every one is there."""
    s = log_fault_server
    acked = []
    # One delivery first: the account and its log are open before the fault.
    code, text = deliver(s, "before-log-fault")
    assert code == 250, (code, text)
    acked.append("before-log-fault")
    s.on()
    for i in range(4):
        code, text = deliver(s, f"nolog-{i}")
        assert code == 250, f"delivery {i} while only the log fails: {code} {text}"
        acked.append(f"nolog-{i}")
    s.assert_alive()
    s.off()
    s.restart()
    bodies = inbox_bodies(s)
    for t in acked:
        _, want = message(t)
        assert t in bodies, f"{t} missing after restart; in INBOX: {sorted(bodies, key=str)}"
        assert len(bodies[t]) == 1 and want in bodies[t][0], f"{t}: {len(bodies[t])} copies or other bytes"


def slow_disk_server(tmpdir, faultlib, pathpart, delay_ms):
    """A started server whose syncs of files matching pathpart take delay_ms once on(), with
    a 200 ms ShutdownTimeout (the refusal comes while such a sync runs)."""
    s = FaultServer(tmpdir, faultlib, pathpart)
    s.env["MOX_FAULT_SYNC_DELAY_MS"] = str(delay_ms)
    s.init()
    s.set_limits(ShutdownTimeout="200ms")
    s.start()
    return s


def test_shutdown_waits_for_a_delivery_being_committed(tmpdir_short, faultlib):
    """A slow disk: the delivery log's fdatasync takes 4 s. A message whose add is already
    committing when ShutdownTimeout runs out is not refused (it may be stored already): the
    server waits for it and answers 250 before it exits, instead of leaving the loop with the
    message stored and unanswered (the client would send it again)."""
    s = slow_disk_server(tmpdir_short, faultlib, "index.wal", 4000)
    try:
        t, result = hold_storage_thread(s)  # "committing" is in the log's (slow) fdatasync now
        s.proc.send_signal(15)
        t.join(timeout=60)
        assert result.get("r") == (250, ""), result
        s.off()
        s.stop()
        assert "refusing deliveries not yet stored" in open(s.logpath, errors="replace").read()
        s.start()
        bodies = inbox_bodies(s)
        assert len(bodies.get("committing", [])) == 1, sorted(bodies, key=str)
    finally:
        s.off()
        s.stop(expect_rc=None)


def hold_storage_thread(s):
    """Keep the account's storage thread busy for seconds on a slow disk (slow_disk_server
    on "index.wal"): an SMTP delivery "committing", on its own connection in a thread, whose
    delivery log fdatasync is delayed (a one-message delivery syncs its log entry on the
    storage thread itself, after the commit). Returns once that sync is under way, with the
    thread and a dict that gets its result (code, text) as "r"."""
    import threading
    code, text = deliver(s, "before-slow-disk")
    assert code == 250, (code, text)
    # The idle checkpoint after it also syncs index.wal (its header): let it pass first,
    # so the delayed sync below is the delivery's own.
    time.sleep(2.5)
    s.on()
    result = {}

    def send():
        c = smtplib.SMTP("127.0.0.1", s.ports["SMTP"], timeout=60)
        c.ehlo("client.faults.example")
        try:
            c.sendmail(FROM, [USER], message("committing")[0])
            result["r"] = (250, "")
        except smtplib.SMTPResponseException as e:
            result["r"] = (e.smtp_code, e.smtp_error.decode(errors="replace"))
        except smtplib.SMTPServerDisconnected as e:
            result["r"] = (None, str(e))
        c.close()  # no QUIT: the server says 421 after the answer, it is stopping
    t = threading.Thread(target=send)
    t.start()
    s.wait_hit()  # its add is in the log's (slow) fdatasync now, on the storage thread
    return t, result


# The message under test, queued behind "committing"; its X-Token is "in-flight".
IN_FLIGHT = (f"From: {FROM}\r\nTo: {USER}\r\nSubject: in flight\r\n"
             "X-Token: in-flight\r\n\r\nhello\r\n").encode()


def check_after_refusal(s, t, result):
    """After a refused "in flight": the server logged the refusal; "committing", whose add was
    already committing, got 250 (the server waited for it); after a restart it is in INBOX
    once and "in flight" is not (neither as a message file nor in the index)."""
    t.join(timeout=60)
    assert not t.is_alive(), "no answer for the delivery being committed"
    assert result.get("r") == (250, ""), result
    s.off()
    s.stop()
    log = open(s.logpath, errors="replace").read()
    assert "refusing deliveries not yet stored" in log
    # An expected refusal is no error for the administrator's log watchers.
    errors = [l for l in log.splitlines() if " l=error " in l and "shutting down" in l]
    assert not errors, errors
    assert copies(s, "mox", "in-flight") == 0, "refused, yet its message file is in the Maildir"
    s.start()
    bodies = inbox_bodies(s)
    assert len(bodies.get("committing", [])) == 1, sorted(bodies, key=str)
    assert "in-flight" not in bodies, sorted(bodies, key=str)
    c = imap_login(s)
    try:
        assert c.select("INBOX", readonly=True)[0] == "OK"
        typ, data = c.search(None, "SUBJECT", '"in flight"')
        assert typ == "OK" and data == [b""], data
        c.logout()
    finally:
        try:
            c.shutdown()
        except OSError:
            pass


def test_shutdown_refuses_delivery_still_queued(tmpdir_short, faultlib):
    """A delivery still waiting for its storage thread when ShutdownTimeout runs out is
    refused with 451 and not stored. Here it waits behind another delivery whose delivery
    log fdatasync takes 4 s (a slow disk). It used to run after the loop had stopped:
    stored, but the client never got its 250 and would send the message again. The
    delivery that was already committing is waited for: 250, and it is kept."""
    from test_review import smtp_at_data
    s = slow_disk_server(tmpdir_short, faultlib, "index.wal", 4000)
    try:
        t, result = hold_storage_thread(s)
        r = smtp_at_data(s.ports["SMTP"])
        r.send(IN_FLIGHT + b".\r\n")
        time.sleep(0.3)  # queued behind "committing", whose sync takes 4 s from the hit
        s.proc.send_signal(15)
        try:
            code, texts = r.reply()
        except (EOFError, ConnectionResetError) as e:
            code, texts = None, [str(e)]
        assert code == 451, (code, texts)
        assert "shutting down" in " ".join(texts), texts
        r.close()
        check_after_refusal(s, t, result)
    finally:
        s.off()
        s.stop(expect_rc=None)


def test_shutdown_refuses_append_still_queued(tmpdir_short, faultlib):
    """The same for IMAP: an APPEND still waiting for storage (behind a delivery whose log
    fdatasync is slow) at the end of ShutdownTimeout gets NO [UNAVAILABLE] and its message
    is not stored; the delivery already committing gets its 250 and is kept."""
    import socket
    s = slow_disk_server(tmpdir_short, faultlib, "index.wal", 4000)
    try:
        # Logged in before the slow disk: the APPEND below only has to wait for storage.
        sock = socket.create_connection(("127.0.0.1", s.ports["IMAP"]), timeout=60)
        f = sock.makefile("rb")
        assert f.readline().startswith(b"* OK")
        sock.sendall(f"a LOGIN {USER} {PASS}\r\n".encode())
        while not (line := f.readline()).startswith(b"a "):
            assert line, "connection closed during LOGIN"
        assert line.startswith(b"a OK"), line
        t, result = hold_storage_thread(s)
        sock.sendall(b"b APPEND INBOX {%d+}\r\n" % len(IN_FLIGHT) + IN_FLIGHT + b"\r\n")
        time.sleep(0.3)  # queued behind "committing", whose sync takes 4 s from the hit
        s.proc.send_signal(15)
        while not (line := f.readline()).startswith(b"b "):
            assert line, "connection closed without an answer to APPEND"
        assert line.startswith(b"b NO [UNAVAILABLE]"), line
        sock.close()
        check_after_refusal(s, t, result)
    finally:
        s.off()
        s.stop(expect_rc=None)


def test_control_command_answered_when_its_work_ends_after_the_loop(tmpdir_short, faultlib):
    """A control command whose storage work waits behind a long job (here the idle
    checkpoint's delivery-log fdatasync, 4 s on a slow disk) when the server stops: its work
    runs in the store's last drain, after the event loop. It used to get no answer (the CLI
    said the connection closed and exited 1, though the password was set) and its
    connection leaked; now it is answered and freed, and the server exits cleanly."""
    s = slow_disk_server(tmpdir_short, faultlib, "index.wal", 4000)
    try:
        assert deliver(s, "before-slow-disk") == (250, "")
        s.on()
        s.wait_hit()  # the idle checkpoint's header sync, on the account's storage thread
        cli = subprocess.Popen([MOX, "-config", s.config, "setaccountpassword", "mox"], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        cli.stdin.write("changed-in-the-drain\n")
        cli.stdin.close()
        time.sleep(0.5)  # the command is queued behind the checkpoint
        assert cli.poll() is None, (cli.returncode, cli.stderr.read())
        s.proc.send_signal(15)
        cli.wait(timeout=60)
        out, err = cli.stdout.read(), cli.stderr.read()
        s.proc.wait(timeout=60)
        assert cli.returncode == 0, (cli.returncode, out, err, open(s.logpath).read()[-3000:])
        s.off()
        s.stop()  # a clean exit (under ASan: nothing leaked)
        s.start()
        c = imaplib.IMAP4("127.0.0.1", s.ports["IMAP"], timeout=30)
        assert c.login(USER, "changed-in-the-drain")[0] == "OK"
        c.logout()
    finally:
        s.off()
        s.stop(expect_rc=None)


# ---- several accounts, one of them failing ----

TWO_ACCOUNTS = """Domains:
  localhost:
    LocalpartCatchallSeparators:
      - "+"
Accounts:
  mox:
    Domain: localhost
    Destinations:
      mox@localhost: {}
  bob:
    Domain: localhost
    Destinations:
      bob@localhost: {}
"""
BOB = "bob@localhost"


@pytest.fixture
def bob_fault_server(tmpdir_short, faultlib):
    """Accounts mox and bob; the fault fails every sync under bob's account directory
    (its Maildir, its index and the delivery log beside it)."""
    s = FaultServer(tmpdir_short, faultlib, "/accounts/bob/")
    s.fault = "bob"
    s.init()
    domains_yaml(s, TWO_ACCOUNTS)
    s.start()
    yield s
    s.off()
    s.stop(expect_rc=None)


def send_to(server, token, rcpts):
    """One SMTP transaction with every recipient in rcpts; returns the (code, text) of the
    reply to DATA. Every RCPT must be accepted."""
    msg, _ = message(token)
    with smtplib.SMTP("127.0.0.1", server.ports["SMTP"], timeout=60) as c:
        c.ehlo("client.faults.example")
        assert c.mail(FROM)[0] == 250
        for r in rcpts:
            code, text = c.rcpt(r)
            assert code == 250, (r, code, text)
        code, text = c.data(msg)
        return code, text.decode(errors="replace")


def copies(server, account, token):
    """How many message files in the account's INBOX (new/ and cur/) carry the token."""
    n = 0
    for sub in ("new", "cur"):
        d = os.path.join(server.dir, "data", "accounts", account, "Maildir", sub)
        for name in os.listdir(d) if os.path.isdir(d) else []:
            with open(os.path.join(d, name), "rb") as f:
                if f"X-Token: {token}\r\n".encode() in f.read():
                    n += 1
    return n


@pytest.mark.parametrize("order", ["failing-first", "failing-last"])
def test_partial_temporary_failure_gets_451_and_retry_duplicates(bob_fault_server, order):
    """One message for two accounts, bob's disk failing: mox stores it, bob cannot. A 250
    would lose bob's copy, so the reply to DATA is 451 4.3.0; the client sends it again once
    the disk works, and mox gets it twice (a duplicate, not a loss). Accounts are delivered
    in RCPT order: failing-first, bob's add syncs the spool file; failing-last, mox's did."""
    s = bob_fault_server
    rcpts = [BOB, USER] if order == "failing-first" else [USER, BOB]
    # One delivery to each account first: both are open, with their logs, before the fault.
    for rcpt, acct in ((USER, "mox"), (BOB, "bob")):
        code, text = send_to(s, f"warmup-{acct}", [rcpt])
        assert code == 250, (rcpt, code, text)
        assert copies(s, acct, f"warmup-{acct}") == 1

    s.on()
    code, text = send_to(s, "both", rcpts)
    log = s.logtext()
    # bob's add really failed on the disk (its log, then the message file it falls back to).
    assert re.search(r'l=error m="adding message failed" .*account=bob ', log), log[-3000:]
    assert code == 451, f"stored for mox only, failed for bob: expected 451, got {code} {text}\n{log[-3000:]}"
    assert text.startswith("4.3.0 "), text
    assert re.search(r"\(cid [0-9a-f]+\)", text), text
    assert re.search(r'l=info m="message stored for some recipients only: 451" .*failed=bob@localhost ', log), \
        log[-3000:]
    assert copies(s, "mox", "both") == 1
    assert copies(s, "bob", "both") == 0
    s.assert_alive()

    s.off()
    code, text = send_to(s, "both", rcpts)
    assert code == 250, f"the retry with the disk working again: {code} {text}\n{s.logtext()[-3000:]}"
    assert copies(s, "mox", "both") == 2, "the retry gives mox a second copy"
    assert copies(s, "bob", "both") == 1
    s.assert_alive()
    assert_ehlo(s)


def test_broken_account_refused_at_rcpt_no_duplicates(bob_fault_server):
    """An account whose index fdatasync failed takes no write until a restart. Its recipients
    then get 451 at RCPT, so a message for it and a healthy account is stored once for the
    healthy one (250) instead of failing after DATA with 451 and giving the healthy account
    one more copy at every retry of the client."""
    s = bob_fault_server
    for rcpt, acct in ((USER, "mox"), (BOB, "bob")):
        code, text = send_to(s, f"warmup-{acct}", [rcpt])
        assert code == 250, (rcpt, code, text)
    s.on()
    # bob alone, until an add commits and then fails its index fdatasync (the first failure
    # only takes the delivery log out of use).
    for i in range(4):
        send_to(s, f"bob-alone-{i}", [BOB])
        if "account refuses deliveries until the server is restarted" in s.logtext():
            break
    log = s.logtext()
    assert re.search(r'm="account refuses deliveries until the server is restarted" .*account=bob', log), \
        log[-3000:]
    s.off()  # the disk works again; bob's index still needs a restart
    for attempt in range(3):
        with smtplib.SMTP("127.0.0.1", s.ports["SMTP"], timeout=60) as c:
            c.ehlo("client.faults.example")
            assert c.mail(FROM)[0] == 250
            assert c.rcpt(USER)[0] == 250
            code, text = c.rcpt(BOB)
            assert code == 451, (code, text)
            assert text.decode().startswith("4.3.0 ") and "(cid " in text.decode(), text
            code, text = c.data(message("twice")[0])
            assert code == 250, (code, text)
    # Each attempt was a new message for mox (the client's retry would go to bob only).
    assert copies(s, "mox", "twice") == 3
    assert copies(s, "bob", "twice") == 0
    s.assert_alive()
    # After a restart bob takes mail again.
    s.restart()
    code, text = send_to(s, "after-restart", [USER, BOB])
    assert code == 250, (code, text)
    assert copies(s, "bob", "after-restart") == 1 and copies(s, "mox", "after-restart") == 1


def test_shutdown_answers_add_whose_file_a_sync_thread_syncs(tmpdir_short, faultlib):
    """A message too large for the delivery log, for an account whose thread is busy, has its
    file synced on a sync thread before its add reaches that thread. Out of every queue then,
    it used to be neither refused nor waited for at shutdown: the loop stopped and the client
    got no answer. Now the stop waits for it and it gets its 451 (refused, not stored)."""
    from test_review import busy_storage, smtp_at_data, stored_copies
    s = slow_disk_server(tmpdir_short, faultlib, "/tmp/.pool/", 3000)
    try:
        newdir = busy_storage(s)
        s.on()
        r = smtp_at_data(s.ports["SMTP"])
        r.send(b"Subject: in flight\r\n\r\n" + (b"x" * 998 + b"\r\n") * 200 + b".\r\n")
        s.wait_hit()  # its spool file is in the (slow) fdatasync of a sync thread
        s.proc.send_signal(15)
        try:
            code, texts = r.reply()
        except (EOFError, ConnectionResetError) as e:
            code, texts = None, [str(e)]
        assert code == 451, (code, texts)
        s.off()
        s.stop(expect_rc=None)
        assert not stored_copies(newdir), "refused, yet stored"
    finally:
        s.off()
        s.stop(expect_rc=None)


def test_account_that_could_not_be_opened_is_reopened_after_repair(server_dir):
    """An account whose index cannot be opened gets 451 at RCPT until the administrator says
    the repair is done: `mox reopenaccount` then opens it in the running server. Its logins work
    as soon as the command returns, its mail gets 250, changes other programs make in its
    Maildir reach IDLE again, nothing delivered before is lost, and the server stops cleanly."""
    from conftest import mox
    from test_imap_sync import idle_until, session
    s = server_dir
    s.start()
    assert deliver(s, "before-damage") == (250, "")
    s.stop()
    acct = os.path.join(s.dir, "data", "accounts", "mox")
    os.rename(os.path.join(acct, "index.tcb"), os.path.join(acct, "index.tcb.good"))
    with open(os.path.join(acct, "index.tcb"), "wb") as f:
        f.write(b"not a database\n" * 300)
    s.start()
    code, text = deliver(s, "while-damaged")
    assert code == 451 and text.startswith("4.3.0"), (code, text)
    log = open(s.logpath, errors="replace").read()
    assert re.search(r'l=error m="cannot open account: .*mox reopenaccount.*account=mox', log), log[-2000:]
    p = mox("-config", s.config, "reopenaccount", "mox", check=False)
    assert p.returncode != 0 and "invalid meta data" in p.stdout + p.stderr, (p.returncode, p.stdout, p.stderr)
    assert deliver(s, "still-damaged")[0] == 451
    os.replace(os.path.join(acct, "index.tcb.good"), os.path.join(acct, "index.tcb"))
    assert deliver(s, "repaired-not-reopened")[0] == 451  # only the administrator says when it is done
    p = mox("-config", s.config, "reopenaccount", "nosuch", check=False)
    assert p.returncode != 0 and "no such account" in p.stdout + p.stderr, (p.stdout, p.stderr)
    p = mox("-config", s.config, "reopenaccount", "mox", check=False)
    assert p.returncode == 0, (p.stdout, p.stderr)
    imap_login(s).logout()  # the secrets are in when the command returns
    assert deliver(s, "after-reopen") == (250, "")
    p = mox("-config", s.config, "reopenaccount", "mox", check=False)
    assert p.returncode == 0 and "open already" in p.stdout + p.stderr, (p.stdout, p.stderr)
    bodies = inbox_bodies(s)  # logs in: the secrets were loaded
    assert len(bodies.get("before-damage", [])) == 1 and len(bodies.get("after-reopen", [])) == 1, \
        sorted(bodies, key=str)
    assert not [t for t in bodies if t and ("damaged" in t or "reopened" in t)], sorted(bodies, key=str)
    # The Maildir watch was set up for the reopened account.
    a = session(s)
    a.send("i IDLE\r\n")
    assert a.line().startswith("+")
    cur = os.path.join(acct, "Maildir", "cur")
    new = os.path.join(acct, "Maildir", "new")
    name = sorted(os.listdir(new) + os.listdir(cur))[0]
    src = os.path.join(new if os.path.exists(os.path.join(new, name)) else cur, name)
    os.rename(src, os.path.join(cur, name.split(":2,")[0] + ":2,F"))
    idle_until(a, lambda t: "FETCH" in t and "\\Flagged" in t, timeout=5)  # raises when it never comes
    a.send("DONE\r\n")
    a.close()
    s.stop()  # a clean exit, the reopened index closed with the rest
    p = mox("-config", s.config, "reopenaccount", "mox", check=False)
    assert p.returncode != 0 and "no server is running" in p.stderr, (p.stdout, p.stderr)

"""IMAP sessions when a data tool changes a mailbox's UIDs or UIDVALIDITY on the running server
(reassignuids, bumpuidvalidity through the control socket): a session with that mailbox selected
gets "* BYE" and is closed, inside IDLE and outside it (RFC 9051 2.3.1.1: UIDVALIDITY must not
change under a selected mailbox); other sessions keep working and STATUS, LIST-STATUS and a new
SELECT show the new UIDVALIDITY and UIDs."""
import imaplib
import os
import re
import subprocess
import time

import pytest

from conftest import MOX, mox
from test_imap import Raw, login, msg


def append(c, mailbox, subjects):
    for s in subjects:
        typ, _ = c.append(mailbox, None, None, msg(s))
        assert typ == "OK"


def select(c, mailbox):
    typ, data = c.select(mailbox)
    assert typ == "OK", data
    return int(c.untagged_responses["UIDVALIDITY"][-1])


def status(c, mailbox):
    typ, data = c.status(mailbox, "(MESSAGES UIDNEXT UIDVALIDITY)")
    assert typ == "OK", data
    return {k: int(v) for k, v in re.findall(r"(MESSAGES|UIDNEXT|UIDVALIDITY) (\d+)", data[0].decode())}


def uids(c):
    typ, data = c.uid("SEARCH", "ALL")
    assert typ == "OK", data
    return [int(u) for u in data[0].split()]


def subject(c, uid):
    typ, data = c.uid("FETCH", str(uid), "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    assert typ == "OK" and data and data[0] is not None, data
    return data[0][1].decode().strip()


def inbox_with_gap(server):
    """INBOX holds a, c, d with UIDs 1, 3, 4 (b expunged): renumbering changes UIDs."""
    c = login(server)
    append(c, "INBOX", ["a", "b", "c", "d"])
    select(c, "INBOX")
    c.uid("STORE", "2", "+FLAGS.SILENT", r"(\Deleted)")
    c.expunge()
    assert uids(c) == [1, 3, 4]
    c.logout()


def expect_bye(c):
    """The next line is the BYE for the changed UIDVALIDITY, then the connection closes."""
    c.sock.settimeout(10)
    line = c.readline()
    assert line.startswith(b"* BYE ") and b"UIDVALIDITY changed" in line and b"(cid " in line, line
    assert c.readline() == b""


def tool(server, *args):
    return mox("-config", server.config, *args).stdout


@pytest.mark.parametrize("cmd", ["reassignuids", "bumpuidvalidity"])
def test_selected_session_gets_bye(localserve, cmd):
    inbox_with_gap(localserve)
    a = login(localserve)
    old = select(a, "INBOX")
    assert uids(a) == [1, 3, 4]
    assert "mailbox INBOX:" in tool(localserve, cmd, "mox", "INBOX")
    expect_bye(a)
    # A new session sees the new UIDVALIDITY, and with reassignuids the new UIDs.
    n = login(localserve)
    new = select(n, "INBOX")
    assert new > old
    if cmd == "reassignuids":
        assert uids(n) == [1, 2, 3]
        assert [subject(n, u) for u in (1, 2, 3)] == ["Subject: a", "Subject: c", "Subject: d"]
    else:
        assert uids(n) == [1, 3, 4]
    n.logout()
    assert "uidvalidity of the selected mailbox changed" in localserve.logtext()


@pytest.mark.parametrize("cmd", ["reassignuids", "bumpuidvalidity"])
def test_idle_session_gets_bye(localserve, cmd):
    inbox_with_gap(localserve)
    a = login(localserve)
    select(a, "INBOX")
    a.send(b"i IDLE\r\n")
    assert a.readline().startswith(b"+ ")
    tool(localserve, cmd, "mox", "INBOX")
    expect_bye(a)


def test_all_mailboxes_without_name(localserve):
    """reassignuids without a mailbox renumbers every mailbox: every selecting session ends."""
    inbox_with_gap(localserve)
    c = login(localserve)
    c.create("Other")
    append(c, "Other", ["o1"])
    a = login(localserve)
    select(a, "INBOX")
    b = login(localserve)
    select(b, "Other")
    b.send(b"i IDLE\r\n")
    assert b.readline().startswith(b"+ ")
    tool(localserve, "reassignuids", "mox")
    expect_bye(a)
    expect_bye(b)
    # The session with nothing selected keeps working.
    assert c.noop()[0] == "OK"
    c.logout()


def test_other_sessions_keep_working(localserve):
    inbox_with_gap(localserve)
    c = login(localserve)
    c.create("Other")
    append(c, "Other", ["o1", "o2"])
    a = login(localserve)
    select(a, "INBOX")
    b = login(localserve)
    other_uv = select(b, "Other")
    before = status(b, "INBOX")
    raw = Raw(localserve)
    raw.login()

    tool(localserve, "reassignuids", "mox", "INBOX")
    expect_bye(a)

    # The session with another mailbox selected: commands work, nothing was announced for it.
    typ, _ = b.noop()
    assert typ == "OK"
    assert not any(k in b.untagged_responses for k in ("EXPUNGE", "VANISHED"))
    assert uids(b) == [1, 2]
    assert subject(b, 2) == "Subject: o2"
    after = status(b, "INBOX")
    assert after["UIDVALIDITY"] > before["UIDVALIDITY"]
    assert after["MESSAGES"] == 3 and after["UIDNEXT"] == 4
    # STATUS of the selected mailbox itself is unchanged, and its view too.
    assert status(b, "Other")["UIDVALIDITY"] == other_uv
    # An authenticated session: LIST-STATUS shows the new values.
    res = raw.cmd("l", 'LIST "" "INBOX" RETURN (STATUS (UIDVALIDITY UIDNEXT))')
    assert res[-1].startswith("l OK"), res
    st = [ln for ln in res if ln.startswith("* STATUS")]
    assert st and f"UIDVALIDITY {after['UIDVALIDITY']}" in st[0] and "UIDNEXT 4" in st[0], res

    # bumpuidvalidity of Other ends b's view but not a session on INBOX.
    a2 = login(localserve)
    select(a2, "INBOX")
    tool(localserve, "bumpuidvalidity", "mox", "Other")
    expect_bye(b)
    assert a2.noop()[0] == "OK"
    assert uids(a2) == [1, 2, 3]
    assert status(a2, "Other")["UIDVALIDITY"] > other_uv
    a2.logout()
    raw.close()
    c.logout()


def test_examine_session_gets_bye(localserve):
    """A read-only view holds UIDs just as well."""
    inbox_with_gap(localserve)
    a = login(localserve)
    typ, _ = a.select("INBOX", readonly=True)
    assert typ == "OK"
    tool(localserve, "bumpuidvalidity", "mox", "INBOX")
    expect_bye(a)


def test_failed_tool_changes_nothing(localserve):
    inbox_with_gap(localserve)
    a = login(localserve)
    select(a, "INBOX")
    p = mox("-config", localserve.config, "reassignuids", "mox", "Nope", check=False)
    assert p.returncode == 1 and "no such mailbox" in p.stderr
    assert a.noop()[0] == "OK"
    assert uids(a) == [1, 3, 4]
    a.logout()


def test_busy_session_gets_bye_after_command(localserve):
    """A FETCH that streams while UIDs change ends with BYE in place of its tagged reply."""
    c = login(localserve)
    body = ("x" * 998 + "\r\n") * 200
    for i in range(40):
        assert c.append("INBOX", None, None, msg(f"big{i}", body=body))[0] == "OK"
    c.logout()
    r = Raw(localserve)
    r.login()
    assert r.cmd("s", "SELECT INBOX")[-1].startswith("s OK")
    r.send("f FETCH 1:* BODY.PEEK[]\r\n")
    # Not reading: the server pauses the FETCH at its output mark.
    time.sleep(0.5)
    tool(localserve, "reassignuids", "mox", "INBOX")
    r.s.settimeout(20)
    lines = []
    while True:
        ln = r.line()
        if ln == "":
            break
        if ln.startswith("* BYE") or ln.startswith("f "):
            lines.append(ln)
    assert len(lines) == 1 and "UIDVALIDITY changed" in lines[0], lines


# --- a command already under way when the UIDs change ---
#
# The session checks for a changed UIDVALIDITY before it runs a command, but a
# command whose storage job is queued behind the tool's job was checked before
# the UIDs changed. Its job must not act on the new meaning of the UIDs it
# took from the view. To order the jobs deterministically, an import from a
# named pipe holds the account's storage thread (the server blocks opening the
# pipe until the test opens it for writing); reassignuids queues behind it,
# then the command's job behind that.

def maildir(server, mailbox="INBOX"):
    root = os.path.join(server.dir, "data", "accounts", "mox", "Maildir")
    return root if mailbox == "INBOX" else os.path.join(root, "." + mailbox)


def files(server, mailbox="INBOX"):
    """{subject: flag letters} of the messages of a Maildir folder."""
    out = {}
    d = maildir(server, mailbox)
    for sub in ("cur", "new"):
        for name in os.listdir(os.path.join(d, sub)):
            if name.startswith("."):
                continue
            with open(os.path.join(d, sub, name), "rb") as f:
                m = re.search(rb"^Subject: (.*?)\r?$", f.read(), re.M)
            out[m.group(1).decode()] = name.split(":2,", 1)[1] if ":2," in name else ""
    return out


def wait_log(server, text, count=1, timeout=10):
    deadline = time.monotonic() + timeout
    while server.logtext().count(text) < count:
        assert time.monotonic() < deadline, f"no {text!r} in the log:\n{server.logtext()[-2000:]}"
        time.sleep(0.02)


class HeldStorage:
    """Holds the account's storage thread: the server's import job blocks opening a named pipe."""

    def __init__(self, server, name="hold"):
        self.server = server
        self.fifo = os.path.join(server.dir, name + ".fifo")
        os.mkfifo(self.fifo)
        self.imports = server.logtext().count(f"{name}.fifo")
        self.proc = subprocess.Popen([MOX, "-config", server.config, "import", "mbox", "mox", "Held", self.fifo],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        wait_log(server, f"{name}.fifo", self.imports + 1)  # logged as the job is queued

    def release(self):
        if self.proc is None:
            return
        with open(self.fifo, "wb") as f:
            f.write(b"From alice@example.org Mon Feb  7 21:52:25 1994\n" + msg("held").replace(b"\r\n", b"\n"))
        out, err = self.proc.communicate(timeout=30)
        rc, self.proc = self.proc.returncode, None
        os.unlink(self.fifo)
        assert rc == 0, (out, err)


def tool_queued(server, cmd, *args):
    """Start a data tool on the running server; returns once its job is queued."""
    n = server.logtext().count(f"command={cmd}")
    p = subprocess.Popen([MOX, "-config", server.config, cmd, *args], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    wait_log(server, f"command={cmd}", n + 1)
    return p


def race(server, setup, command):
    """Select INBOX (a, c, d with UIDs 1, 3, 4), run setup(raw), then command while reassignuids
    renumbers INBOX (c 3 -> 2, d 4 -> 3) between the command's dispatch and its storage job.
    Returns the lines the session got after the command: BYE and nothing else is expected."""
    inbox_with_gap(server)
    r = Raw(server)
    r.login()
    assert r.cmd("s", "SELECT INBOX")[-1].startswith("s OK")
    setup(r)
    held = HeldStorage(server)
    try:
        p = tool_queued(server, "reassignuids", "mox", "INBOX")
        r.send(f"x {command}\r\n")
        time.sleep(0.5)  # the command reaches the server and its job queues behind the tool's
    finally:
        held.release()  # a server whose storage thread stays blocked would not stop
    out, err = p.communicate(timeout=30)
    assert p.returncode == 0 and "renumbered" in out, (out, err)
    r.s.settimeout(20)
    lines = []
    while True:
        ln = r.line()
        if ln == "":
            break
        lines.append(ln)
    r.close()
    assert lines and lines[-1].startswith("* BYE ") and "UIDVALIDITY changed" in lines[-1], lines
    return lines[:-1]


def nothing(r):
    pass


def other_mailbox(r):
    assert r.cmd("c", "CREATE Other")[-1].startswith("c OK")


def c_and_d_deleted(r):
    assert r.cmd("d", r"UID STORE 3:4 +FLAGS.SILENT (\Deleted)")[-1].startswith("d OK")


@pytest.mark.parametrize("command,flag", [(r"UID STORE 3 +FLAGS (\Deleted)", "T"),
                                          (r"STORE 2 +FLAGS (\Flagged)", "F")])
def test_store_under_way_keeps_to_its_message(localserve, command, flag):
    """The client names c (UID 3, sequence number 2); after the renumbering UID 3 is d."""
    lines = race(localserve, nothing, command)
    assert lines == []
    got = files(localserve)
    assert set(got) == {"a", "c", "d"}
    assert [s for s, f in got.items() if flag in f and s != "c"] == [], got


@pytest.mark.parametrize("cmd", ["COPY", "MOVE"])
def test_copy_under_way_keeps_to_its_message(localserve, cmd):
    lines = race(localserve, other_mailbox, f"UID {cmd} 3 Other")
    assert lines == []
    assert set(files(localserve, "Other")) <= {"c"}
    assert "d" in files(localserve) and "a" in files(localserve)
    n = login(localserve)
    assert n.select("Other")[0] == "OK"
    assert [subject(n, u) for u in uids(n)] in ([], ["Subject: c"])
    n.logout()


def test_uid_expunge_under_way_keeps_to_its_message(localserve):
    """c and d are \\Deleted; UID EXPUNGE 3 means c, and d must stay."""
    lines = race(localserve, c_and_d_deleted, "UID EXPUNGE 3")
    assert lines == []
    got = files(localserve)
    assert "a" in got and "d" in got, got


def test_expunge_under_way_announces_no_new_uids(localserve):
    """EXPUNGE would report what it removed by the new UIDs: nothing is removed or announced."""
    lines = race(localserve, c_and_d_deleted, "EXPUNGE")
    assert lines == []
    assert set(files(localserve)) == {"a", "c", "d"}


def test_fetch_under_way_keeps_to_its_message(localserve):
    """UID FETCH 3 BODY[] would send d as c and set \\Seen on d."""
    lines = race(localserve, nothing, "UID FETCH 3 BODY[]")
    assert not any("FETCH" in ln or "Subject: d" in ln for ln in lines), lines
    assert "S" not in files(localserve)["d"]


def test_search_under_way_returns_no_new_uids(localserve):
    lines = race(localserve, nothing, "UID SEARCH ALL")
    assert not any("SEARCH" in ln for ln in lines), lines


def test_vanished_under_way(localserve):
    """UID FETCH ... (CHANGEDSINCE VANISHED): neither VANISHED nor FETCH in the new UIDs' terms."""
    def qresync(r):
        assert r.cmd("e", "ENABLE QRESYNC")[-1].startswith("e OK")
    lines = race(localserve, qresync, "UID FETCH 1:* FLAGS (CHANGEDSINCE 1 VANISHED)")
    assert not any("FETCH" in ln or "VANISHED" in ln for ln in lines), lines


def test_paused_fetch_sends_only_what_the_client_named(localserve):
    """A FETCH paused at its output mark while the UIDs change: every message it still sends is the
    one the client named (its UID's subject before the change), then BYE. More messages than one
    walk of the FETCH collects, so that a later walk would look up the view's UIDs after the change."""
    body = ("x" * 998 + "\n") * 30
    mbox = os.path.join(localserve.dir, "many.mbox")
    with open(mbox, "wb") as f:
        for i in range(1, 301):
            f.write(b"From alice@example.org Mon Feb  7 21:52:25 1994\n" +
                    msg(f"m{i}", body=body).replace(b"\r\n", b"\n") + b"\n")
    tool(localserve, "import", "mbox", "mox", "INBOX", mbox)
    c = login(localserve)
    select(c, "INBOX")
    c.uid("STORE", "1", "+FLAGS.SILENT", r"(\Deleted)")
    c.expunge()  # UIDs 2..300 now, message mN has UID N; renumbering makes them 1..299
    c.logout()
    r = Raw(localserve)
    r.login()
    assert r.cmd("s", "SELECT INBOX")[-1].startswith("s OK")
    r.send("f UID FETCH 1:* (UID BODY.PEEK[HEADER.FIELDS (SUBJECT)] BODY.PEEK[TEXT])\r\n")
    time.sleep(0.5)  # not reading: the server pauses the FETCH at its output mark
    tool(localserve, "reassignuids", "mox", "INBOX")
    r.s.settimeout(20)
    data = r.buf
    while True:
        d = r.s.recv(1 << 20)
        if not d:
            break
        data += d
    got = re.findall(rb"\* \d+ FETCH \(UID (\d+) BODY\[HEADER\.FIELDS \(SUBJECT\)\] \{\d+\}\r\nSubject: m(\d+)", data)
    assert got, data[:300]
    assert all(u == s for u, s in got), [(u, s) for u, s in got if u != s][:5]
    assert len(got) < 299  # the change reached it under way
    assert data.rstrip(b"\r\n").split(b"\r\n")[-1].startswith(b"* BYE "), data[-300:]
    assert b"f OK" not in data

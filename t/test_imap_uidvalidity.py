"""IMAP sessions when a data tool changes a mailbox's UIDs or UIDVALIDITY on the running server
(reassignuids, bumpuidvalidity through the control socket): a session with that mailbox selected
gets "* BYE" and is closed, inside IDLE and outside it (RFC 9051 2.3.1.1: UIDVALIDITY must not
change under a selected mailbox); other sessions keep working and STATUS, LIST-STATUS and a new
SELECT show the new UIDVALIDITY and UIDs."""
import imaplib
import re
import time

import pytest

from conftest import mox
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

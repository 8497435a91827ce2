"""IMAP selected state: changes of other sessions and of other Maildir tools reach a session after
every command (EXPUNGE only where allowed), QRESYNC (SELECT and UID FETCH VANISHED), CLOSED,
OLDNAME after renames, \\Recent for IMAP4rev1 sessions, resynchronization after lost changes, and
the memory an idle session costs."""
import os
import re
import selectors
import socket
import time

import pytest

from test_imap import Raw, login, msg

USER = "mox@localhost"
PASS = "moxmoxmox"


def session(server, *enable, select="INBOX"):
    r = Raw(server)
    r.login()
    if enable:
        r.cmd("e", "ENABLE " + " ".join(enable))
    if select:
        res = r.cmd("s", f"SELECT {select}")
        assert res[-1].startswith("s OK"), res
    return r


def append(c, n, mailbox="INBOX", prefix="m"):
    for i in range(n):
        typ, _ = c.append(mailbox, None, None, msg(f"{prefix}{i}"))
        assert typ == "OK"


def multiappend(server, n, mailbox="INBOX", prefix="m"):
    """n messages in one APPEND (MULTIAPPEND with LITERAL+): one commit instead of n."""
    r = Raw(server)
    r.login()
    parts = [f"a APPEND {mailbox}".encode()]
    for i in range(n):
        m = msg(f"{prefix}{i}")
        parts.append(b" {%d+}\r\n" % len(m) + m)
    r.send(b"".join(parts) + b"\r\n")
    res = r.until_tag("a")
    assert res[-1].startswith("a OK"), res
    r.close()


def untagged(lines):
    return [ln.strip() for ln in lines if ln.startswith("* ")]


def code(lines, name):
    for ln in lines:
        m = re.search(r"\[" + name + r" (\d+)\]", ln)
        if m:
            return int(m.group(1))
    raise AssertionError(f"no {name} in {lines}")


def idle_until(r, pred, timeout=10):
    """Lines received during IDLE until pred(text so far) holds."""
    seen = ""
    r.s.settimeout(timeout)
    deadline = time.time() + timeout
    while not pred(seen):
        if time.time() > deadline:
            raise AssertionError("timed out in IDLE; got " + repr(seen))
        seen += r.line()
    return seen


# ---- untagged updates after any command ----

def test_exists_and_flags_after_any_command(localserve):
    c = login(localserve)
    append(c, 1)
    a = session(localserve, "CONDSTORE")
    c.select("INBOX")
    append(c, 1, prefix="late")
    c.store("1", "+FLAGS", "(\\Flagged)")
    # An unrelated command (LIST) carries the updates before its tagged reply.
    res = a.cmd("x", 'LIST "" INBOX')
    assert res[-1].startswith("x OK"), res
    u = untagged(res)
    assert "* 2 EXISTS" in u, res
    fl = [x for x in u if x.startswith("* 1 FETCH")]
    assert len(fl) == 1 and "\\Flagged" in fl[0] and re.search(r"MODSEQ \(\d+\)", fl[0]), res
    # Nothing is announced twice.
    res = a.cmd("y", "NOOP")
    assert untagged(res) == [], res
    # Without CONDSTORE, flags come without MODSEQ.
    b = session(localserve)
    c.store("2", "+FLAGS", "(\\Seen)")
    res = b.cmd("z", "STATUS Archive (MESSAGES)")
    fl = [x for x in untagged(res) if "FETCH" in x]
    assert fl == ["* 2 FETCH (UID 2 FLAGS (\\Seen))"], res
    c.logout()
    a.close()
    b.close()


def test_expunge_only_where_allowed(localserve):
    c = login(localserve)
    append(c, 3)
    a = session(localserve)
    c.select("INBOX")
    c.store("2", "+FLAGS", "(\\Deleted)")
    c.expunge()
    # Not during FETCH, STORE or SEARCH by sequence number: the view keeps message 2.
    res = a.cmd("f", "FETCH 1:3 (UID)")
    assert res[-1].startswith("f OK"), res
    assert not any("EXPUNGE" in x or "VANISHED" in x for x in res), res
    assert "* 3 FETCH (UID 3)" in untagged(res)
    res = a.cmd("t", "STORE 1 +FLAGS (\\Answered)")
    assert not any("EXPUNGE" in x for x in res), res
    # A UID command may carry it (RFC 9051 7.5.1).
    res = a.cmd("u", "UID FETCH 1:* (FLAGS)")
    assert "* 2 EXPUNGE" in untagged(res), res
    res = a.cmd("n", "NOOP")
    assert not any("EXPUNGE" in x for x in res), res
    # And after the deferred expunge, sequence numbers follow the server.
    res = a.cmd("g", "FETCH 2 (UID)")
    assert "* 2 FETCH (UID 3)" in untagged(res), res
    c.logout()
    a.close()


def test_expunge_at_noop_and_check(localserve):
    c = login(localserve)
    append(c, 2)
    a = session(localserve)
    c.select("INBOX")
    c.store("1", "+FLAGS", "(\\Deleted)")
    c.expunge()
    res = a.cmd("n", "CHECK")
    assert "* 1 EXPUNGE" in untagged(res), res
    c.logout()
    a.close()


def test_two_deliveries_back_to_back_in_idle(localserve):
    a = session(localserve)
    a.send("i IDLE\r\n")
    assert a.line().startswith("+")
    c = login(localserve)
    # Both in quick succession: the second arrives while the first is being announced.
    for rnd in range(5):
        append(c, 2, prefix=f"b{rnd}-")
        want = f"* {2 * (rnd + 1)} EXISTS"
        idle_until(a, lambda s: want in s)
    a.send("DONE\r\n")
    res = a.until_tag("i")
    assert res[-1].startswith("i OK"), res
    c.logout()
    a.close()


def test_command_pipelined_after_done(localserve):
    a = session(localserve)
    a.send("i IDLE\r\n")
    assert a.line().startswith("+")
    c = login(localserve)
    append(c, 1)
    idle_until(a, lambda s: "* 1 EXISTS" in s)
    a.send("DONE\r\nn NOOP\r\nf FETCH 1 (UID)\r\n")
    assert a.until_tag("i")[-1].startswith("i OK")
    assert a.until_tag("n")[-1].startswith("n OK")
    res = a.until_tag("f")
    assert "* 1 FETCH (UID 1)" in untagged(res), res
    c.logout()
    a.close()


def test_logout_says_nothing_after_bye(localserve):
    a = session(localserve)
    c = login(localserve)
    append(c, 1)
    res = a.cmd("o", "LOGOUT")
    assert res[-2].startswith("* BYE") and res[-1].startswith("o OK"), res
    c.logout()
    a.close()


def test_smtp_deliveries_reach_idle(localserve):
    import smtplib
    a = session(localserve)
    a.send("i IDLE\r\n")
    assert a.line().startswith("+")
    s = smtplib.SMTP("127.0.0.1", localserve.ports["SMTP"], timeout=10)
    s.sendmail("a@example.org", ["mox@localhost"], msg("smtp1"))
    s.sendmail("a@example.org", ["mox@localhost"], msg("smtp2"))
    s.quit()
    idle_until(a, lambda t: "* 2 EXISTS" in t)
    a.send("DONE\r\n")
    assert a.until_tag("i")[-1].startswith("i OK")
    a.close()


def test_expunge_and_flags_in_idle(localserve):
    c = login(localserve)
    append(c, 3)
    a = session(localserve, "CONDSTORE")
    a.send("i IDLE\r\n")
    assert a.line().startswith("+")
    c.select("INBOX")
    c.store("3", "+FLAGS", "(\\Seen $Important)")
    t = idle_until(a, lambda s: "* 3 FETCH" in s)
    assert "$Important" in t and "MODSEQ" in t, t
    c.store("1", "+FLAGS", "(\\Deleted)")
    c.expunge()
    idle_until(a, lambda s: "* 1 EXPUNGE" in s)
    a.send("DONE\r\n")
    assert a.until_tag("i")[-1].startswith("i OK")
    c.logout()
    a.close()


def maildir(server):
    return os.path.join(server.dir, "data", "accounts", "mox", "Maildir")


def test_maildir_change_behind_our_back_in_idle(localserve):
    c = login(localserve)
    append(c, 1)
    c.logout()
    a = session(localserve, "CONDSTORE")
    root = maildir(localserve)
    files = [(d, f) for d in ("cur", "new") for f in os.listdir(os.path.join(root, d))]
    assert len(files) == 1, files
    d, f = files[0]
    a.send("i IDLE\r\n")
    assert a.line().startswith("+")
    # What mutt or mflag do: rename the file with new flag letters.
    base = f.split(":2,")[0]
    letters = f.split(":2,")[1] if ":2," in f else ""
    os.rename(os.path.join(root, d, f), os.path.join(root, "cur", base + ":2," + "".join(sorted(letters + "F"))))
    t = idle_until(a, lambda s: "* 1 FETCH" in s)
    assert "\\Flagged" in t and "MODSEQ" in t, t
    # And a file removed behind our back is an expunge.
    cur = os.listdir(os.path.join(root, "cur"))
    os.unlink(os.path.join(root, "cur", cur[0]))
    idle_until(a, lambda s: "* 1 EXPUNGE" in s)
    a.send("DONE\r\n")
    assert a.until_tag("i")[-1].startswith("i OK")
    a.close()


def test_overflow_resynchronizes(localserve):
    """More changes than a session keeps while it is busy elsewhere: the view is compared with the
    mailbox as a whole (EXPUNGE for the missing, EXISTS for the new, FETCH for changed flags)."""
    n = 300
    c = login(localserve)
    for k in range(n // 100):  # at most 100 messages in one APPEND
        multiappend(localserve, 100, prefix=f"m{k}-")
    a = session(localserve)
    c.select("INBOX")
    for i in range(8):  # n * 8 flag changes, more than the session keeps pending
        c.store("1:*", "+FLAGS" if i % 2 == 0 else "-FLAGS", "(\\Answered)")
    c.store("5", "+FLAGS", "(\\Flagged)")
    c.store("7", "+FLAGS", "(\\Deleted)")
    c.expunge()
    append(c, 1, prefix="after")
    res = a.cmd("n", "NOOP")
    assert res[-1].startswith("n OK"), res
    u = untagged(res)
    assert "* 7 EXPUNGE" in u, u[:20]
    assert f"* {n} EXISTS" in u, u[-5:]
    fl = [x for x in u if x.startswith("* 5 FETCH")]
    assert len(fl) == 1 and "\\Flagged" in fl[0] and "\\Answered" not in fl[0], fl
    assert "resynchronizing" in localserve.logtext()
    # The view now matches the server: a second NOOP says nothing, and numbers agree.
    assert untagged(a.cmd("m", "NOOP")) == []
    res = a.cmd("f", f"FETCH {n} (UID)")
    assert f"* {n} FETCH (UID {n + 1})" in untagged(res), res
    c.logout()
    a.close()


# ---- QRESYNC ----

def test_qresync_select_vanished_and_changes(localserve):
    c = login(localserve)
    append(c, 6)
    a = session(localserve, "QRESYNC")
    res = a.cmd("s2", "SELECT INBOX")
    assert any("[CLOSED]" in x for x in res), res  # replacing a selection says CLOSED
    uv = code(res, "UIDVALIDITY")
    m0 = code(res, "HIGHESTMODSEQ")
    a.cmd("l", "LOGOUT")
    c.select("INBOX")
    c.store("2,4", "+FLAGS", "(\\Deleted)")
    c.expunge()
    c.uid("STORE", "5", "+FLAGS", "(\\Flagged)")
    b = session(localserve, "QRESYNC", select=None)
    res = b.cmd("q", f"SELECT INBOX (QRESYNC ({uv} {m0}))")
    assert res[-1].startswith("q OK"), res
    u = untagged(res)
    assert "* VANISHED (EARLIER) 2,4" in u, u
    fl = [x for x in u if "FETCH" in x]
    assert len(fl) == 1 and "UID 5" in fl[0] and "\\Flagged" in fl[0] and "MODSEQ" in fl[0], u
    # known-uids restricts VANISHED to what the client knows.
    res = b.cmd("q2", f"SELECT INBOX (QRESYNC ({uv} {m0} 1:3))")
    u = untagged(res)
    assert "* VANISHED (EARLIER) 2" in u and any("[CLOSED]" in x for x in u), u
    # seq-match-data: the client already knew 2 was gone (its seq 2 is UID 3, still so): only 4.
    res = b.cmd("q3", f"SELECT INBOX (QRESYNC ({uv} {m0} 1:6 (1:2 1,3)))")
    u = untagged(res)
    assert "* VANISHED (EARLIER) 4" in u, u
    # A UIDVALIDITY that does not match: the parameters are ignored.
    res = b.cmd("q4", f"SELECT INBOX (QRESYNC ({uv + 1} {m0}))")
    u = untagged(res)
    assert res[-1].startswith("q4 OK") and not any("VANISHED" in x or "FETCH" in x for x in u), u
    # Bad parameters are BAD.
    res = b.cmd("q5", f"SELECT INBOX (QRESYNC ({uv} {m0} 1:6 (1:3 1:2)))")
    assert res[-1].startswith("q5 BAD"), res
    c.logout()
    b.close()


def test_qresync_without_enable_is_bad(localserve):
    a = session(localserve, select=None)
    res = a.cmd("q", "SELECT INBOX (QRESYNC (1 1))")
    assert res[-1].startswith("q BAD"), res
    a.close()


def test_uid_fetch_vanished(localserve):
    c = login(localserve)
    append(c, 5)
    a = session(localserve, "QRESYNC")
    res = a.cmd("s", "SELECT INBOX")
    m0 = code(res, "HIGHESTMODSEQ")
    c.select("INBOX")
    c.store("1,3", "+FLAGS", "(\\Deleted)")
    c.expunge()
    c.uid("STORE", "4", "+FLAGS", "(\\Seen)")
    res = a.cmd("f", f"UID FETCH 1:* (FLAGS) (CHANGEDSINCE {m0} VANISHED)")
    assert res[-1].startswith("f OK"), res
    u = untagged(res)
    assert "* VANISHED (EARLIER) 1,3" in u, u
    # Once, not repeated by FETCH (a later live "* VANISHED 3,1" updates the view: legitimate).
    assert len([x for x in u if x.startswith("* VANISHED (EARLIER)")]) == 1, u
    assert u.index("* VANISHED (EARLIER) 1,3") < min(i for i, x in enumerate(u) if "FETCH" in x), u
    assert any("UID 4" in x and "\\Seen" in x for x in u), u
    # Only UIDs in the set.
    res = a.cmd("g", f"UID FETCH 2:5 (FLAGS) (CHANGEDSINCE {m0} VANISHED)")
    assert "* VANISHED (EARLIER) 3" in untagged(res), res
    # VANISHED needs CHANGEDSINCE; FETCH by sequence number does not take it.
    assert a.cmd("h", "UID FETCH 1:* (FLAGS) (VANISHED)")[-1].startswith("h BAD")
    c.logout()
    a.close()


def test_uid_fetch_vanished_needs_qresync(localserve):
    c = login(localserve)
    append(c, 1)
    a = session(localserve, "CONDSTORE")
    res = a.cmd("f", "UID FETCH 1:* (FLAGS) (CHANGEDSINCE 1 VANISHED)")
    assert res[-1].startswith("f BAD"), res
    c.logout()
    a.close()


def test_qresync_expunge_is_vanished(localserve):
    c = login(localserve)
    append(c, 3)
    a = session(localserve, "QRESYNC")
    c.select("INBOX")
    c.store("2", "+FLAGS", "(\\Deleted)")
    c.expunge()
    res = a.cmd("n", "NOOP")
    u = untagged(res)
    assert "* VANISHED 2" in u and not any("EXPUNGE" in x for x in u), u
    c.logout()
    a.close()


def test_closed_for_rev2(localserve):
    a = session(localserve, "IMAP4rev2")
    res = a.cmd("x", "EXAMINE INBOX")
    assert any("[CLOSED]" in x for x in res), res
    a.close()
    b = session(localserve)
    res = b.cmd("x", "EXAMINE INBOX")
    assert not any("[CLOSED]" in x for x in res), res
    b.close()


# ---- OLDNAME ----

def test_oldname_after_rename(localserve):
    a = session(localserve, select=None)
    assert a.cmd("c", "CREATE Old")[-1].startswith("c OK")
    assert a.cmd("r", "RENAME Old New")[-1].startswith("r OK")
    res = a.cmd("l", 'LIST () "" "*"')
    line = [x for x in untagged(res) if '"New"' in x or " New" in x]
    assert len(line) == 1 and '("OLDNAME" ("Old"))' in line[0], res
    # Plain LIST (not extended) keeps the IMAP4rev1 form.
    res = a.cmd("p", 'LIST "" "*"')
    assert not any("OLDNAME" in x for x in res), res
    # Another session that has a mailbox selected learns of the rename too.
    b = session(localserve)
    assert a.cmd("r2", "RENAME New Newer")[-1].startswith("r2 OK")
    res = b.cmd("l", 'LIST () "" "Newer"')
    assert any('("OLDNAME" ("New"))' in x for x in res), res
    # A chain keeps the first name this session knew.
    res = a.cmd("l2", 'LIST () "" "Newer"')
    assert any('("OLDNAME" ("Old"))' in x for x in res), res
    # IMAP4rev2: RENAME itself answers with the LIST and OLDNAME.
    c = session(localserve, "IMAP4rev2", select=None)
    res = c.cmd("r3", "RENAME Newer Newest")
    assert '* LIST () "/" "Newest" ("OLDNAME" ("Newer"))' in untagged(res), res
    a.close()
    b.close()
    c.close()


# ---- \Recent (IMAP4rev1) ----

def test_recent_for_arrivals_since_select(localserve):
    c = login(localserve)
    append(c, 1)
    a = session(localserve)
    c.logout()
    c = login(localserve)
    append(c, 2, prefix="new")
    res = a.cmd("n", "NOOP")
    u = untagged(res)
    assert "* 3 EXISTS" in u and "* 2 RECENT" in u, u
    # IMAP4rev2 has no RECENT.
    b = session(localserve, "IMAP4rev2")
    append(c, 1, prefix="newer")
    u = untagged(b.cmd("n", "NOOP"))
    assert "* 4 EXISTS" in u and not any("RECENT" in x for x in u), u
    c.logout()
    a.close()
    b.close()


# ---- memory of idle sessions ----

def vmrss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for ln in f:
            if ln.startswith("VmRSS:"):
                return int(ln.split()[1])
    raise AssertionError("no VmRSS")


def idle_connections(server, n, timeout=60):
    """n connections logged in, INBOX selected and in IDLE, driven from one thread."""
    sel = selectors.DefaultSelector()
    port = server.ports["IMAP"]
    steps = [b"a LOGIN " + USER.encode() + b" " + PASS.encode() + b"\r\n", b"b SELECT INBOX\r\n",
             b"c IDLE\r\n"]
    waits = [b"a OK", b"b OK", b"+ "]
    conns = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        s.setblocking(False)
        st = {"s": s, "buf": b"", "step": -1}
        conns.append(st)
        sel.register(s, selectors.EVENT_READ, st)
    done = 0
    deadline = time.time() + timeout
    while done < n:
        assert time.time() < deadline, f"only {done} of {n} connections in IDLE"
        for key, _ in sel.select(timeout=1):
            st = key.data
            d = st["s"].recv(65536)
            assert d, "connection closed: " + repr(st["buf"][-200:])
            st["buf"] += d
            while True:
                want = b"* OK" if st["step"] < 0 else waits[st["step"]]
                i = st["buf"].find(b"\r\n")
                if i < 0:
                    break
                line, st["buf"] = st["buf"][:i], st["buf"][i + 2:]
                if line.startswith(want):
                    st["step"] += 1
                    if st["step"] == len(steps):
                        done += 1
                        sel.unregister(st["s"])
                        break
                    st["s"].sendall(steps[st["step"]])
    return conns


def test_idle_session_memory(server_dir):
    server_dir.start()
    c = login(server_dir)
    append(c, 20)
    c.logout()
    pid = server_dir.proc.pid
    with open(f"/proc/{pid}/maps") as f:
        if "libasan" in f.read():
            pytest.skip("sanitizer builds keep freed memory in quarantine: RSS says nothing there")
    n = 300
    warm = idle_connections(server_dir, 20)  # allocator and thread caches settle first
    time.sleep(0.5)
    before = vmrss_kb(pid)
    conns = idle_connections(server_dir, n)
    time.sleep(0.5)
    after = vmrss_kb(pid)
    per = (after - before) * 1024 / n
    print(f"idle session memory: {per / 1024:.1f} KiB per connection")
    for st in conns + warm:
        st["s"].close()
    assert per <= 32 * 1024, f"{per / 1024:.1f} KiB per idle session"

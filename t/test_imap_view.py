"""The selected-mailbox view keeps UIDs as runs of consecutive UIDs: after expunges at the
start, middle and end of runs, and new messages after gaps, a long-lived session must map
sequence numbers to UIDs exactly as a fresh session does. Its modseqs are one base plus
exceptions, rebased by a resynchronization: every flag change must still reach it exactly once."""
import collections
import random
import re
import time

from test_imap import login
from test_imap_sync import append, multiappend, session, untagged


def seq_uids(r):
    res = r.cmd("f", "FETCH 1:* (UID)")
    out = {}
    for l in res:
        if l.startswith("* ") and "FETCH" in l:
            seq = int(l.split()[1])
            out[seq] = int(l.split("UID ")[1].split(")")[0].split()[0])
    return [out[k] for k in sorted(out)]


def fresh_view(server):
    r = session(server)
    v = seq_uids(r)
    r.close()
    return v


def test_view_runs_follow_expunges_and_appends(localserve):
    c = login(localserve)
    append(c, 40)
    c.select("INBOX")
    old = session(localserve)  # stays selected and learns every change by notification
    idle = session(localserve)
    rnd = random.Random(7)
    # First, last, middle of a run, two neighbours, then new messages after the gaps.
    steps = [[1], [40], [20], [21, 22], [10, 12, 14], [2, 3, 4], None, [41], [39, 43], None]
    for step in steps:
        if step is None:
            append(c, 3, prefix="x")
        else:
            uids = ",".join(str(u) for u in step)
            typ, _ = c.uid("STORE", uids, "+FLAGS.SILENT", "(\\Deleted)")
            assert typ == "OK"
            typ, _ = c.expunge()
            assert typ == "OK"
        want = fresh_view(localserve)
        old.cmd("n", "NOOP")
        assert seq_uids(old) == want
        # UID SEARCH and sequence-number FETCH of a random message agree too.
        if want:
            k = rnd.randrange(len(want))
            res = old.cmd("g", f"FETCH {k + 1} (UID)")
            assert f"UID {want[k]}" in "".join(res), res
            res = old.cmd("u", "UID SEARCH ALL")
            line = [l for l in res if l.startswith("* SEARCH")][0]
            assert [int(x) for x in line.split()[2:]] == want
    idle.cmd("n", "NOOP")
    assert seq_uids(idle) == fresh_view(localserve)
    old.close()
    idle.close()
    c.logout()


# ---- flag changes: each announced once, also past the view's modseq exception limit ----

FETCH_RE = re.compile(r"^\* (\d+) FETCH \((.*)$")


def fetch_flags(line):
    """(seq, flags as a frozenset, modseq or None) of an untagged FETCH with FLAGS, else None."""
    m = FETCH_RE.match(line)
    if not m or "FLAGS (" not in m.group(2):
        return None
    flags = frozenset(re.search(r"FLAGS \(([^)]*)\)", m.group(2)).group(1).split())
    ms = re.search(r"MODSEQ \((\d+)\)", m.group(2))
    return int(m.group(1)), flags, int(ms.group(1)) if ms else None


def index_flags(r):
    """seq -> (flags, modseq) as the server's records have them now."""
    out = {}
    res = r.cmd("x", "FETCH 1:* (FLAGS MODSEQ)")
    assert res[-1].startswith("x OK"), res[-1]
    for ln in res:
        f = fetch_flags(ln)
        if f:
            out[f[0]] = (f[1], f[2])
    return out


def idle_read_until(r, seq, flag, timeout=30):
    """Announcements in IDLE up to and including one for seq whose flags hold flag."""
    got = []
    r.s.settimeout(timeout)
    deadline = time.time() + timeout
    while True:
        assert time.time() < deadline, f"no FETCH of {seq} with {flag}; got {len(got)}: {got[-3:]}"
        ln = r.line()
        assert ln != "", "connection closed"
        f = fetch_flags(ln)
        if f is None:
            continue
        got.append(f)
        if f[0] == seq and flag in f[1]:
            return got


def once_each(got, seqs):
    """Every seq of seqs announced exactly once (and nothing else)."""
    count = collections.Counter(f[0] for f in got)
    assert sorted(count) == sorted(seqs), (len(count), len(seqs))
    dup = [s for s, k in count.items() if k != 1]
    assert dup == [], f"announced more than once: {dup[:10]}"


def test_flag_changes_announced_once_past_exception_limit(server_dir):
    """A selected session keeps, per message, only what it needs to announce each flag change once
    (a base modseq and exceptions for what changed since, rebased by a resynchronization when
    there are too many): many changes by another session, more than the exceptions kept, its own
    STOREs and \\Seen from FETCH, then single changes: each change reaches it exactly once, with
    MODSEQ under CONDSTORE, and what it was told matches the server."""
    server_dir.edit(lambda t: t.replace("LogLevel: info", "LogLevel: debug"))
    server_dir.start()
    n = 3000
    for k in range(n // 100):
        multiappend(server_dir, 100, prefix=f"m{k}-")
    a = session(server_dir, "CONDSTORE")
    plain = session(server_dir)  # no CONDSTORE, not idling: learns everything at one NOOP
    b = session(server_dir, "CONDSTORE")
    known = {s: frozenset() for s in range(1, n + 1)}  # what a was told

    def learn(got, condstore=True):
        for seq, flags, ms in got:
            assert (ms is not None) == condstore, (seq, flags, ms)
            known[seq] = flags

    def store(r, what, tag="t"):
        res = r.cmd(tag, f"STORE {what}")
        assert res[-1].startswith(tag + " OK"), res[-1]
        return res

    a.send("i IDLE\r\n")
    assert a.line().startswith("+ ")
    # More changes in one commit than a session keeps pending: announced by a resync.
    store(b, f"1:{n - 1} +FLAGS.SILENT (\\Flagged)")  # n: the end marker of each step
    store(b, f"{n} +FLAGS.SILENT (s1)")
    got = idle_read_until(a, n, "s1")
    once_each(got, range(1, n + 1))
    learn(got)
    # Batches each announced one by one; together more than the exceptions kept (rebases).
    for k, (lo, hi) in enumerate([(1, 400), (401, 800), (801, 1200), (1201, 1600), (1601, 2000)]):
        store(b, f"{lo}:{hi} -FLAGS.SILENT (\\Flagged)")
        store(b, f"{n} +FLAGS.SILENT (b{k})")
        got = idle_read_until(a, n, f"b{k}")
        once_each(got, list(range(lo, hi + 1)) + [n])
        learn(got)
    # Single changes, each announced once.
    for k, seq in enumerate([5, 401, 1999, 2500, 5, n]):
        store(b, f"{seq} +FLAGS.SILENT (one{k})")
        got = idle_read_until(a, seq, f"one{k}")
        once_each(got, [seq])
        learn(got)
    a.send("DONE\r\n")
    res = a.until_tag("i")
    assert res[-1].startswith("i OK"), res
    assert [ln for ln in res if ln.startswith("* ")] == [], res
    assert untagged(a.cmd("n", "NOOP")) == []
    idx = index_flags(b)
    assert {s: f for s, (f, _) in idx.items()} == known
    # The session that did not idle: one resynchronization, each changed message once, no MODSEQ.
    res = plain.cmd("n", "NOOP")
    got = [f for f in map(fetch_flags, res) if f]
    once_each(got, range(1, n + 1))
    assert all(f[2] is None for f in got)
    assert {f[0]: f[1] for f in got} == {s: f for s, (f, _) in idx.items()}
    assert untagged(plain.cmd("m", "NOOP")) == []

    # a's own STORE past the limit: its replies and nothing else, then a rebase that announces nothing.
    res = store(a, "1:1500 +FLAGS (\\Answered)")
    got = [f for f in map(fetch_flags, res) if f]
    once_each(got, range(1, 1501))
    learn(got)
    assert untagged(a.cmd("n", "NOOP")) == []
    # \Seen set by FETCH BODY[] past the limit: the FETCH responses carry it; no announcement follows.
    res = a.cmd("f", "FETCH 2001:2700 (BODY.PEEK[HEADER.FIELDS (SUBJECT)] BODY[TEXT])")
    assert res[-1].startswith("f OK"), res[-1]
    got = [f for f in map(fetch_flags, res) if f]
    once_each(got, range(2001, 2701))
    assert all("\\Seen" in f[1] for f in got)
    learn(got)
    assert untagged(a.cmd("n", "NOOP")) == []
    assert "modseq exceptions over the limit" in server_dir.logtext()
    # And changes by others still reach it, once each.
    for k, seq in enumerate([1, 1500, 2001, 2700, 1400]):
        store(b, f"{seq} -FLAGS.SILENT (\\Answered \\Seen)")
        res = a.cmd("n", "NOOP")
        got = [f for f in map(fetch_flags, res) if f]
        once_each(got, [seq])
        learn(got)
        assert untagged(a.cmd("m", "NOOP")) == []
    idx = index_flags(b)
    assert {s: f for s, (f, _) in idx.items()} == known
    a.close()
    plain.close()
    b.close()
    server_dir.stop()


def test_view_modseq_exceptions_follow_expunges(localserve):
    """The messages a session changed itself or saw arrive are kept as exceptions to its base modseq;
    expunges and arrivals among them (in random order, past the limit that rebases them) must
    neither lose one (its own change would come back as an announcement) nor keep a stale one."""
    n = 1200
    for k in range(n // 100):
        multiappend(localserve, 100, prefix=f"m{k}-")
    c = login(localserve)
    a = session(localserve, "CONDSTORE")
    b = session(localserve)
    rnd = random.Random(11)
    for rnd_i in range(8):
        uids = seq_uids(a)
        mine = sorted(rnd.sample(uids, rnd.choice([40, 150, 300])))
        res = a.cmd("s", "UID STORE " + ",".join(map(str, mine)) + " +FLAGS (\\Answered $r%d)" % rnd_i)
        assert res[-1].startswith("s OK"), res[-1]
        assert len([ln for ln in res if " FETCH " in ln]) == len(mine)
        assert untagged(a.cmd("n", "NOOP")) == []
        gone = sorted(rnd.sample(uids, 25))
        res = b.cmd("d", "UID STORE " + ",".join(map(str, gone)) + " +FLAGS.SILENT (\\Deleted)")
        assert res[-1].startswith("d OK"), res[-1]
        assert b.cmd("e", "UID EXPUNGE " + ",".join(map(str, gone)))[-1].startswith("e OK")
        append(c, 7, prefix=f"r{rnd_i}-")
        res = untagged(a.cmd("n", "NOOP"))
        assert not any(" FETCH " in ln for ln in res), res[:5]
        assert len([ln for ln in res if ln.endswith(" EXPUNGE")]) == 25, res
        rest = seq_uids(a)
        assert rest == fresh_view(localserve)
        theirs = sorted(rnd.sample(rest, 30))
        b.cmd("n", "NOOP")  # b's view takes in the new messages first
        res = b.cmd("f", "UID STORE " + ",".join(map(str, theirs)) + " +FLAGS.SILENT ($t%d)" % rnd_i)
        assert res[-1].startswith("f OK"), res[-1]
        res = untagged(a.cmd("n", "NOOP"))
        got = sorted(int(ln.split("UID ")[1].split()[0]) for ln in res if " FETCH " in ln)
        assert got == theirs, (len(got), len(theirs))
        assert untagged(a.cmd("m", "NOOP")) == []
    a.close()
    b.close()
    c.logout()


def test_store_silent_still_announces_another_sessions_change(localserve):
    """STORE .SILENT answers nothing for the flags it sets, but a change another session made
    to the same message before, not yet announced to this one, must still reach it: the view
    takes the STORE's newer modseq, which used to make the pending notification look known."""
    c = login(localserve)
    append(c, 3)
    a = session(localserve)
    b = session(localserve)
    res = b.cmd("b1", "UID STORE 2 +FLAGS (\\Flagged)")
    assert res[-1].startswith("b1 OK"), res
    res = a.cmd("a1", "UID STORE 2 +FLAGS.SILENT (\\Seen)")
    assert res[-1].startswith("a1 OK"), res
    told = untagged(res) + untagged(a.cmd("a2", "NOOP"))
    flagged = [l for l in told if l.startswith("* 2 FETCH") and "\\Flagged" in l]
    assert len(flagged) == 1 and "\\Seen" in flagged[0], told
    # Its own silent change alone stays silent.
    res = a.cmd("a3", "UID STORE 1 +FLAGS.SILENT (\\Answered)")
    assert untagged(res) + untagged(a.cmd("a4", "NOOP")) == [], res


def test_new_message_exists_before_its_fetch(localserve):
    """A message added and then changed before a session hears of either: the session gets
    EXISTS before the FETCH that names the new sequence number (RFC 3501 7.4.1: a FETCH
    never names a message the client does not know)."""
    c = login(localserve)
    append(c, 2)
    a = session(localserve)
    b = session(localserve)
    append(c, 1)  # UID 3
    b.cmd("b0", "NOOP")
    res = b.cmd("b1", "UID STORE 3 +FLAGS (\\Flagged)")
    assert res[-1].startswith("b1 OK"), res
    u = untagged(a.cmd("a1", "NOOP"))
    exists = [i for i, l in enumerate(u) if l == "* 3 EXISTS"]
    fetch = [i for i, l in enumerate(u) if l.startswith("* 3 FETCH")]
    assert exists, u
    assert all(exists[0] < i for i in fetch), u

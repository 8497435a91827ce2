"""The selected-mailbox view keeps UIDs as runs of consecutive UIDs: after expunges at the
start, middle and end of runs, and new messages after gaps, a long-lived session must map
sequence numbers to UIDs exactly as a fresh session does."""
import random

from test_imap import login
from test_imap_sync import append, session


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

"""The inotify watcher and SELECT's folder stamps against changes other programs make.

Our own deliveries are checked by name against the index and move the folder's stamp on;
these tests make sure that never hides a change another program made, and that a SELECT
whose own scan finds a change answers normally.
"""
import os
import re
import smtplib
import threading
import time

from test_imap import login, msg
from test_imap_sync import append, idle_until, maildir, session


def exists_after_select(server):
    r = session(server, select=None)
    res = r.cmd("s", "SELECT INBOX")
    assert res[-1].startswith("s OK"), res
    r.close()
    return [int(l.split()[1]) for l in res if l.startswith("* ") and l.rstrip().endswith("EXISTS")][0]


def drop(root, sub, name, body):
    tmp = os.path.join(root, "tmp", name)
    with open(tmp, "wb") as f:
        f.write(body)
    os.rename(tmp, os.path.join(root, sub, name))


def test_replaced_cur_not_hidden_by_own_deliveries(localserve):
    """cur/ replaced by a new directory: the watch must follow; our deliveries into new/
    must not move the stamp over a message another program puts into the new cur/."""
    root = maildir(localserve)
    assert exists_after_select(localserve) == 0
    os.rename(os.path.join(root, "cur"), os.path.join(localserve.dir, "cur.moved"))
    os.mkdir(os.path.join(root, "cur"))
    time.sleep(2.5)  # ctimes old enough: the next complete sync keeps a stamp
    assert exists_after_select(localserve) == 0
    body = msg("external")
    drop(root, "cur", "1700000000.M1P1Q1.otherhost,S=%d:2,S" % len(body), body)
    s = smtplib.SMTP("127.0.0.1", localserve.ports["SMTP"], timeout=10)
    s.sendmail("a@example.org", ["mox@localhost"], msg("ours"))
    s.quit()
    time.sleep(1.5)  # debounce, link grace and the names job
    assert exists_after_select(localserve) == 2


def test_select_after_change_while_stopped(server_dir):
    """A file delivered by another program while we were down: SELECT adopts it and answers OK."""
    server_dir.start()
    session(server_dir).close()
    server_dir.stop()
    root = maildir(server_dir)
    body = msg("offline")
    drop(root, "new", "1700000000.M1P1Q1.other,S=%d" % len(body), body)
    server_dir.start()
    r = session(server_dir, select=None)
    res = r.cmd("s", "SELECT INBOX")
    r.close()
    assert res[-1].startswith("s OK"), res
    assert any(l.startswith("* 1 EXISTS") for l in res), res


def test_stamp_survives_restart_but_not_offline_change(server_dir):
    """A stamp kept in the index: after a restart SELECT shows the same; a file added while
    the server was down (with the folder otherwise old) is found."""
    server_dir.start()
    root = maildir(server_dir)
    body = msg("first")
    drop(root, "new", "1700000000.M2P2Q2.other,S=%d" % len(body), body)
    time.sleep(0.5)
    assert exists_after_select(server_dir) == 1
    time.sleep(0.3)
    assert exists_after_select(server_dir) == 1  # stamp kept now
    server_dir.stop()
    server_dir.start()
    assert exists_after_select(server_dir) == 1
    server_dir.stop()
    body = msg("second")
    drop(root, "new", "1700000000.M3P3Q3.other,S=%d" % len(body), body)
    server_dir.start()
    assert exists_after_select(server_dir) == 2


def test_offline_import_leaves_stamp(server_dir, tmp_path):
    """An offline import ends by confirming the folder (streaming, flat memory) and stores the folder's stamp in the index
    ('S' key), so the server's first SELECT of the imported mailbox does not scan it."""
    import subprocess
    from conftest import mox
    from test_tools import gen_mbox
    src = tmp_path / "in.mbox"
    gen_mbox(src, 20)
    cfg = server_dir.config
    p = mox("-config", cfg, "import", "mbox", "mox", "Imported", str(src))
    assert p.returncode == 0, p.stderr
    index = os.path.join(server_dir.dir, "data", "accounts", "mox", "index.tcb")
    out = subprocess.run(["tcbmgr", "list", "-px", index], capture_output=True, text=True, check=True).stdout
    stamps = [l for l in out.splitlines() if l.startswith("53 ")]  # 'S' mbid
    assert stamps, out[:2000]


def test_changes_seen_while_deliveries_stream_and_after(localserve):
    """The watch reads inotify by a timer while events keep coming (our deliveries queue one each)
    and goes back to waiting in epoll once a read finds none: a change another program makes is
    seen in both modes."""
    c = login(localserve)
    append(c, 1)
    c.logout()
    root = maildir(localserve)
    (d, f), = [(d, f) for d in ("cur", "new") for f in os.listdir(os.path.join(root, d))]
    a = session(localserve)
    a.send("i IDLE\r\n")
    assert a.line().startswith("+")
    stop = threading.Event()
    sent = []

    def deliver():
        s = smtplib.SMTP("127.0.0.1", localserve.ports["SMTP"], timeout=10)
        while not stop.is_set():
            s.sendmail("a@example.org", ["mox@localhost"], msg(f"burst{len(sent)}"))
            sent.append(1)
        s.quit()

    t = threading.Thread(target=deliver)
    t.start()
    try:
        while len(sent) < 20:  # the watch is reading by its timer now
            time.sleep(0.01)
        base = f.split(":2,")[0]
        os.rename(os.path.join(root, d, f), os.path.join(root, "cur", base + ":2,F"))
        seen = idle_until(a, lambda s: "* 1 FETCH" in s, timeout=5)
        assert "\\Flagged" in seen, seen
    finally:
        stop.set()
        t.join()
    assert len(sent) > 20
    time.sleep(0.5)  # quiet: the next change has to wake the loop through epoll
    os.unlink(os.path.join(root, "cur", base + ":2,F"))
    idle_until(a, lambda s: "* 1 EXPUNGE" in s, timeout=5)
    a.send("DONE\r\n")
    assert a.until_tag("i")[-1].startswith("i OK")
    a.close()


def test_half_written_file_not_adopted_during_read_flood(localserve, tmp_path):
    """Another program reads thousands of files in cur/ as fast as it can (a backup, an indexer)
    while a third writes new messages there slowly. The read flood must not overflow the
    kernel's inotify queue (16,384 events) between two reads of the watch: an overflow loses
    the IN_CREATE + IN_OPEN that mark the new files as still being written, and the scan after
    it adopted them half-written, with the wrong size for good."""
    import shutil
    import subprocess
    import pytest
    if shutil.which("gcc") is None:
        pytest.skip("gcc is needed to build the read flood helper")
    flood = str(tmp_path / "readflood")
    p = subprocess.run(["gcc", "-O2", "-Wall", "-Werror", "-o", flood,
                        os.path.join(os.path.dirname(__file__), "readflood.c")], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    cur = os.path.join(maildir(localserve), "cur")
    for i in range(20000):  # dot-files: read, but never messages
        with open(os.path.join(cur, f".f{i}"), "wb") as f:
            f.write(b"x" * 100)
    time.sleep(1.0)
    fl = subprocess.Popen([flood, cur, "20000", "600"], stdout=subprocess.PIPE, text=True)
    head = b"From: a@example.org\r\nSubject: slow\r\nMessage-ID: <x@y>\r\n\r\n"
    body = b"y" * 22000
    files = []
    time.sleep(0.05)
    for i in range(10):  # created and left open, their body written after the flood
        f = open(os.path.join(cur, f"1700000000.M{i}P1Q1.otherhost:2,S"), "wb")
        f.write(head)
        f.flush()
        files.append(f)
        time.sleep(0.03)
    out, _ = fl.communicate(timeout=30)
    assert int(out) > 20000, out  # the flood did read files over and over
    time.sleep(1.0)
    for f in files:
        f.write(body)
        f.close()
    time.sleep(1.5)  # the close, the debounce and the names job
    r = session(localserve)
    res = r.cmd("f", "FETCH 1:* RFC822.SIZE")
    r.close()
    sizes = [int(x) for x in re.findall(r"RFC822\.SIZE (\d+)", " ".join(res))]
    assert sizes == [len(head) + len(body)] * 10, sizes

"""Crash safety of delivery: kill -9 the server at random moments while several SMTP
clients deliver, 20 rounds. Afterwards `verifydata -fix` and `verifydata` are clean,
every message the server acknowledged with 250 is stored exactly once, and no message
is stored twice (DESIGN.md: a crash leaves at most a file the index adopts)."""
import os
import random
import re
import signal
import smtplib
import subprocess
import threading
import time

from conftest import MOX, mox, wait_port

ROUNDS = 20


def deliver(port, tag, acked, stop):
    """Send messages until the connection dies or stop is set; record acknowledged tokens."""
    n = 0
    try:
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as c:
            c.ehlo("crash.example")
            while not stop.is_set():
                token = f"{tag}-{n}"
                n += 1
                msg = (f"From: a@crash.example\r\nTo: mox@localhost\r\nSubject: {token}\r\n"
                       f"X-Token: {token}\r\n\r\n" + ("body line\r\n" * 40))
                c.sendmail("a@crash.example", ["mox@localhost"], msg)
                acked.append(token)
    except (smtplib.SMTPException, OSError):
        pass


def stored_tokens(maildir):
    """Token -> number of files holding it, over every folder of the Maildir."""
    counts = {}
    for root, dirs, names in os.walk(maildir):
        if os.path.basename(root) not in ("cur", "new"):
            continue
        for name in names:
            with open(os.path.join(root, name), "rb") as f:
                m = re.search(rb"\r\nX-Token: (\S+)\r\n", f.read(4096))
            if m:
                counts[m.group(1).decode()] = counts.get(m.group(1).decode(), 0) + 1
    return counts


def test_kill9_during_concurrent_deliveries(server_dir):
    rnd = random.Random(7)
    acked = []
    data = os.path.join(server_dir.dir, "data")
    maildir = os.path.join(data, "accounts", "mox", "Maildir")
    for rnd_no in range(ROUNDS):
        server_dir.start()
        port = server_dir.ports["SMTP"]
        stop = threading.Event()
        threads = [threading.Thread(target=deliver, args=(port, f"r{rnd_no}c{i}", acked, stop)) for i in range(3)]
        for t in threads:
            t.start()
        time.sleep(rnd.uniform(0.05, 0.6))
        server_dir.proc.send_signal(signal.SIGKILL)
        server_dir.proc.wait(timeout=10)
        stop.set()
        for t in threads:
            t.join(timeout=20)
        server_dir.log.close()
        server_dir.proc = None
        # The control socket of a killed server is stale; the next start replaces it.
        p = mox("verifydata", "-fix", data, check=False, timeout=120)
        assert p.returncode in (0, 1), p.stdout + p.stderr
        p = mox("verifydata", data, check=False, timeout=120)
        assert p.returncode == 0, f"round {rnd_no}: verifydata after -fix:\n{p.stdout}{p.stderr}"
    print(f"acknowledged {len(acked)}, stored {len(stored_tokens(maildir))}")
    assert len(acked) > 10 * ROUNDS, "too few deliveries to mean anything"
    counts = stored_tokens(maildir)
    lost = [t for t in acked if counts.get(t, 0) == 0]
    dups = {t: n for t, n in counts.items() if n > 1}
    assert not lost, f"{len(lost)} acknowledged messages lost, e.g. {lost[:5]}"
    assert not dups, f"messages stored twice: {list(dups.items())[:5]}"

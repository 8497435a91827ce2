"""IMAP under concurrent load: sessions selecting while others change the mailbox."""
import threading
import time

from test_imap import login, msg


def test_select_while_others_change(localserve):
    """A change announced between SELECT's listen (storage thread) and its completion
    (loop thread) once crashed the server: many SELECTs race against APPEND/STORE."""
    c = login(localserve)
    for i in range(20):
        c.append("INBOX", None, None, msg(subject=f"seed {i}"))
    c.logout()
    stop = time.monotonic() + 4.0
    errors = []

    def selecter():
        try:
            while time.monotonic() < stop:
                s = login(localserve)
                s.select("INBOX")
                s.logout()
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(repr(e))

    def changer():
        try:
            w = login(localserve)
            w.select("INBOX")
            k = 0
            while time.monotonic() < stop:
                w.append("INBOX", None, None, msg(subject=f"load {k}"))
                w.store("1:*", "+FLAGS", "\\Flagged" if k % 2 else "\\Answered")
                k += 1
            w.logout()
        except Exception as e:  # noqa: BLE001
            errors.append(repr(e))

    threads = [threading.Thread(target=selecter) for _ in range(8)] + \
        [threading.Thread(target=changer) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert localserve.proc.poll() is None, "server died"
    assert not errors, errors[:3]
    c = login(localserve)
    typ, data = c.select("INBOX")
    assert typ == "OK" and int(data[0]) >= 20
    c.logout()

"""IMAP memory: what an idle session costs when its selected mailbox is large (the selected-mailbox
view is the part that grows with the mailbox)."""
import time

import pytest

from test_imap_sync import idle_connections, multiappend, vmrss_kb

# The measurement of the goal: 10,000 idle sessions on an INBOX of 11,000 messages in 32 KiB each.
NMSG = 11000


def test_idle_session_memory_large_mailbox(server_dir):
    server_dir.start()
    for k in range(NMSG // 100):  # 100 messages per APPEND is the server's limit
        multiappend(server_dir, 100, prefix=f"m{k}-")
    # A fresh process: memory the appends freed would otherwise hide what the sessions take.
    server_dir.stop()
    server_dir.start()
    pid = server_dir.proc.pid
    with open(f"/proc/{pid}/maps") as f:
        if "libasan" in f.read():
            pytest.skip("sanitizer builds keep freed memory in quarantine: RSS says nothing there")
    n = 300
    warm = idle_connections(server_dir, 20)  # allocator and thread caches settle first
    time.sleep(0.5)
    before = vmrss_kb(pid)
    conns = idle_connections(server_dir, n, timeout=120)
    time.sleep(0.5)
    after = vmrss_kb(pid)
    per = (after - before) * 1024 / n
    print(f"idle session memory, INBOX of {NMSG}: {per / 1024:.1f} KiB per connection")
    for st in conns + warm:
        st["s"].close()
    assert per <= 32 * 1024, f"{per / 1024:.1f} KiB per idle session"

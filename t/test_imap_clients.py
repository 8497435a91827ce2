"""Real IMAP clients against localserve: mbsync (isync) two-way sync with a local Maildir,
offlineimap one sync round, and mutt over IMAP in a pseudo-terminal (list, read, move, delete)."""
import mailbox
import os
import pty
import re
import select
import shutil
import subprocess
import time

import pytest

from test_imap import login, msg

USER = "mox@localhost"
PASS = "moxmoxmox"

need_mbsync = pytest.mark.skipif(shutil.which("mbsync") is None, reason="isync (mbsync) not installed")
need_offlineimap = pytest.mark.skipif(shutil.which("offlineimap") is None, reason="offlineimap not installed")
need_mutt = pytest.mark.skipif(shutil.which("mutt") is None, reason="mutt not installed")


def local_msgs(folder):
    """{Subject: Maildir flag letters} of a local Maildir folder."""
    out = {}
    for sub in ("cur", "new"):
        d = os.path.join(folder, sub)
        if not os.path.isdir(d):
            continue
        for name in os.listdir(d):
            with open(os.path.join(d, name), "rb") as f:
                head = f.read(4096).decode(errors="replace")
            m = re.search(r"^Subject: (.*?)\r?$", head, re.M)
            flags = name.split(":2,", 1)[1] if ":2," in name else ""
            out[m.group(1) if m else name] = "".join(sorted(flags))
    return out


def local_file(folder, subject):
    for sub in ("cur", "new"):
        d = os.path.join(folder, sub)
        for name in os.listdir(d):
            with open(os.path.join(d, name), "rb") as f:
                if re.search(rb"^Subject: " + re.escape(subject.encode()) + rb"\r?$", f.read(4096), re.M):
                    return os.path.join(d, name)
    raise AssertionError(f"{subject} not in {folder}")


def server_msgs(server, mailbox_name="INBOX"):
    """{Subject: set of flags} as the server says over IMAP."""
    c = login(server)
    typ, _ = c.select(mailbox_name)
    assert typ == "OK"
    out = {}
    typ, data = c.fetch("1:*", "(FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    if data and data[0] is not None:
        for item in data:
            if not isinstance(item, tuple):
                continue
            flags = re.search(rb"FLAGS \(([^)]*)\)", item[0]).group(1).decode().split()
            subj = re.search(rb"Subject: (.*?)\r\n", item[1]).group(1).decode()
            out[subj] = set(flags)
    c.logout()
    return out


# ---- mbsync ----

def mbsync_config(server, home):
    path = os.path.join(home, "mbsyncrc")
    mail = os.path.join(home, "mail")
    os.makedirs(mail, exist_ok=True)
    with open(path, "w") as f:
        f.write(f"""IMAPAccount mox
Host 127.0.0.1
Port {server.ports["IMAP"]}
User {USER}
Pass {PASS}
SSLType None
AuthMechs LOGIN

IMAPStore remote
Account mox

MaildirStore local
Path {mail}/
Inbox {mail}/INBOX
SubFolders Verbatim

Channel sync
Far :remote:
Near :local:
Patterns INBOX Archive
Create Both
Expunge Both
Remove None
SyncState *
Sync All
""")
    return path, mail


def mbsync(cfg, home):
    p = subprocess.run(["mbsync", "-c", cfg, "-a"], capture_output=True, text=True, timeout=60,
                       env=dict(os.environ, HOME=home))
    assert p.returncode == 0, p.stdout + p.stderr
    return p


@need_mbsync
def test_mbsync_two_way(localserve, tmp_path):
    home = str(tmp_path)
    c = login(localserve)
    for s in ("one", "two", "three"):
        c.append("INBOX", None, None, msg(s))
    c.logout()
    cfg, mail = mbsync_config(localserve, home)
    inbox = os.path.join(mail, "INBOX")

    # 1: server -> local.
    mbsync(cfg, home)
    assert set(local_msgs(inbox)) == {"one", "two", "three"}

    # 2: a flag changed locally reaches the server; a new local message is uploaded.
    f = local_file(inbox, "one")
    base, _, letters = os.path.basename(f).partition(":2,")
    os.rename(f, os.path.join(inbox, "cur", base + ":2," + "".join(sorted(set(letters + "FS")))))
    with open(os.path.join(inbox, "new", "1700000000.local1.host"), "wb") as out:
        out.write(msg("fromlocal"))
    mbsync(cfg, home)
    srv = server_msgs(localserve)
    assert "\\Flagged" in srv["one"] and "\\Seen" in srv["one"], srv
    assert "fromlocal" in srv, srv

    # 3: deleted on the server -> gone locally; flagged on the server -> flagged locally;
    # new on the server -> downloaded.
    c = login(localserve)
    c.select("INBOX")
    typ, data = c.search(None, "SUBJECT", "two")
    c.store(data[0].decode(), "+FLAGS", "(\\Deleted)")
    c.expunge()
    typ, data = c.search(None, "SUBJECT", "three")
    c.store(data[0].decode(), "+FLAGS", "(\\Answered)")
    c.append("INBOX", None, None, msg("fromserver"))
    c.logout()
    mbsync(cfg, home)
    loc = local_msgs(inbox)
    assert "two" not in loc, loc
    assert "R" in loc["three"], loc
    assert "fromserver" in loc and "fromlocal" in loc, loc

    # 4: deleted locally (trashed and expunged by mbsync) -> expunged on the server.
    os.unlink(local_file(inbox, "one"))
    mbsync(cfg, home)
    srv = server_msgs(localserve)
    assert set(srv) == {"three", "fromlocal", "fromserver"}, srv
    # A last round changes nothing.
    mbsync(cfg, home)
    assert set(local_msgs(inbox)) == {"three", "fromlocal", "fromserver"}


# ---- offlineimap ----

@need_offlineimap
def test_offlineimap_one_round(localserve, tmp_path):
    home = str(tmp_path)
    c = login(localserve)
    for s in ("alpha", "beta"):
        c.append("INBOX", None, None, msg(s))
    c.select("INBOX")
    c.store("1", "+FLAGS", "(\\Flagged)")
    c.logout()
    mail = os.path.join(home, "mail")
    meta = os.path.join(home, "meta")
    cfg = os.path.join(home, "offlineimaprc")
    with open(cfg, "w") as f:
        f.write(f"""[general]
accounts = mox
metadata = {meta}
ui = basic

[Account mox]
localrepository = local
remoterepository = remote

[Repository local]
type = Maildir
localfolders = {mail}

[Repository remote]
type = IMAP
remotehost = 127.0.0.1
remoteport = {localserve.ports["IMAP"]}
remoteuser = {USER}
remotepass = {PASS}
ssl = no
starttls = no
folderfilter = lambda f: f in ["INBOX"]
""")
    p = subprocess.run(["offlineimap", "-c", cfg, "-o", "-u", "basic"], capture_output=True, text=True,
                       timeout=120, env=dict(os.environ, HOME=home), stdin=subprocess.DEVNULL)
    out = p.stdout + p.stderr
    assert p.returncode == 0 and "ERROR" not in out, out
    loc = local_msgs(os.path.join(mail, "INBOX"))
    assert set(loc) == {"alpha", "beta"}, (loc, out)
    assert "F" in loc["alpha"], loc
    # A local flag and a local message go up in a second round.
    inbox = os.path.join(mail, "INBOX")
    f = local_file(inbox, "beta")
    base, _, letters = os.path.basename(f).partition(":2,")
    os.rename(f, os.path.join(inbox, "cur", base + ":2," + "".join(sorted(set(letters + "S")))))
    p = subprocess.run(["offlineimap", "-c", cfg, "-o", "-u", "basic"], capture_output=True, text=True,
                       timeout=120, env=dict(os.environ, HOME=home), stdin=subprocess.DEVNULL)
    assert p.returncode == 0, p.stdout + p.stderr
    srv = server_msgs(localserve)
    assert "\\Seen" in srv["beta"], srv


# ---- mutt ----

def run_mutt(server, home, keys, ready=b"Msgs:", timeout=30):
    """mutt on the server's INBOX over plain IMAP in a pseudo-terminal; keys typed as one macro
    once the index is on screen. Returns the screen output."""
    muttrc = os.path.join(home, "muttrc")
    with open(muttrc, "w") as f:
        f.write(f"""set imap_user="{USER}"
set imap_pass="{PASS}"
set folder="imap://127.0.0.1:{server.ports["IMAP"]}/"
set spoolfile="+INBOX"
set ssl_starttls=no
set ssl_force_tls=no
set imap_passive=no
set mail_check=1
set timeout=1
set quit=yes
set confirmcreate=no
set confirmappend=no
set delete=yes
set move=no
set wait_key=no
set beep=no
set pager_stop=yes
set header_cache=""
set message_cachedir=""
set record=""
macro index \\Ca "{keys}"
""")
    master, slave = pty.openpty()
    os.makedirs(os.path.join(home, "Mail"), exist_ok=True)
    env = dict(os.environ, TERM="vt100", LINES="40", COLUMNS="160", HOME=home)
    p = subprocess.Popen(["mutt", "-n", "-F", muttrc], stdin=slave, stdout=slave, stderr=slave, env=env,
                         close_fds=True, start_new_session=True)
    os.close(slave)
    screen = b""
    typed = False
    deadline = time.monotonic() + timeout
    try:
        while p.poll() is None and time.monotonic() < deadline:
            r, _, _ = select.select([master], [], [], 0.1)
            if r:
                try:
                    screen += os.read(master, 65536)
                except OSError:
                    break
            if not typed and ready in screen:
                os.write(master, b"\x01")
                typed = True
        try:
            rc = p.wait(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            rc = None
        assert rc == 0 and typed, screen[-3000:]
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        os.close(master)
    return screen


@need_mutt
def test_mutt_over_imap(localserve, tmp_path):
    home = str(tmp_path)
    c = login(localserve)
    for s in ("first mail", "second mail", "third mail"):
        c.append("INBOX", None, None, msg(s, body=f"the body of {s}\r\n"))
    c.logout()
    out = os.path.join(home, "saved")
    # List (the index), read the first message (pager, saved to a local mbox to see its body),
    # move the second to Archive, delete the third, then quit (which expunges).
    keys = ("<first-entry><display-message><exit>"
            f"<first-entry><copy-message>{out}<enter>"
            "<next-entry><save-message>=Archive<enter>"
            "<last-entry><delete-message><sync-mailbox><quit>")
    screen = run_mutt(localserve, home, keys)
    assert b"first mail" in screen and b"second mail" in screen and b"third mail" in screen, screen[-3000:]
    saved = list(mailbox.mbox(out))
    assert len(saved) == 1 and "the body of first mail" in saved[0].get_payload(), saved
    inbox = server_msgs(localserve)
    assert set(inbox) == {"first mail"}, inbox
    assert "\\Seen" in inbox["first mail"], inbox  # read in the pager
    archive = server_msgs(localserve, "Archive")
    assert set(archive) == {"second mail"}, archive

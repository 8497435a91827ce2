"""Maildir interop: our store read and changed by ordinary Maildir tools.

- mutt, notmuch, mblaze and Dovecot read a store that mox wrote and see the
  same messages, flags and keywords;
- mblaze, notmuch, cp and rm change the Maildir of a running server: its
  inotify watcher brings the index along (checked through export, backup +
  verifydata and, where the build has it, IMAP);
- a Maildir and an mbox written by Dovecot import and export again without
  changing message bytes, flags or keywords.
Nothing here uses a system service: Dovecot runs as its preauthenticated
imap binary on a pipe with a config file in a temporary directory.
"""
import imaplib
import mailbox
import os
import pty
import re
import select
import shutil
import subprocess
import tempfile
import threading
import time

import pytest

from conftest import MOX, mox

pytestmark = pytest.mark.skipif(
    subprocess.run([MOX, "help", "import"], capture_output=True).returncode != 0,
    reason="data tools not in this build")

DOVECOT_IMAP = "/usr/lib/dovecot/imap"
need_mutt = pytest.mark.skipif(shutil.which("mutt") is None, reason="mutt not installed")
need_notmuch = pytest.mark.skipif(shutil.which("notmuch") is None, reason="notmuch not installed")
need_mblaze = pytest.mark.skipif(shutil.which("mflag") is None, reason="mblaze not installed")
need_dovecot = pytest.mark.skipif(not os.access(DOVECOT_IMAP, os.X_OK), reason="dovecot-core not installed")

# ---- test data ----

N = 36


def want_flags(i):
    """System flag letters (Maildir, sorted) of generated message i."""
    f = ""
    if i % 3 == 0:
        f += "F"
    if i % 5 == 0:
        f += "R"
    if i % 2 == 0:
        f += "S"
    if i % 7 == 0:
        f += "T"
    return f


def want_keywords(i):
    k = set()
    if i % 4 == 0:
        k.add("work")
    if i % 6 == 1:
        k.add("$Important")
    return frozenset(k)


def msg_bytes(tag, i):
    return (f"From: Sender {i} <s{i}@example.org>\r\nTo: mox@localhost\r\nSubject: {tag} message {i}\r\n"
            f"Message-ID: <{tag}.{i}@example.org>\r\nDate: Thu, 01 Jan 2024 00:00:{i % 60:02d} +0000\r\n\r\n"
            f"body of {tag} {i}\r\n" + "x" * (i * 7 % 90) + "\r\n").encode()


def make_source_maildir(d, tag, n=N):
    """A Maildir whose flags live only in the file names (no Status headers): keywords through
    dovecot-keywords, unflagged messages in new/. Returns {Message-ID: (flags, keywords)}."""
    for sub in ("cur", "new", "tmp"):
        os.makedirs(os.path.join(d, sub), exist_ok=True)
    letters = {"work": "a", "$Important": "b"}
    with open(os.path.join(d, "dovecot-keywords"), "w") as f:
        f.write("0 work\n1 $Important\n")
    want = {}
    for i in range(n):
        fl, kw = want_flags(i), want_keywords(i)
        info = fl + "".join(sorted(letters[k] for k in kw))
        data = msg_bytes(tag, i)
        base = f"{1700000000 + i}.M{i}P1.src,S={len(data)}"
        name = f"cur/{base}:2,{info}" if info else f"new/{base}"
        with open(os.path.join(d, name), "wb") as f:
            f.write(data)
        want[f"<{tag}.{i}@example.org>"] = (fl, kw)
    return want


def make_source_mbox(path, tag, n=N):
    """An mbox with Status/X-Status headers (mutt's convention). Returns {Message-ID: (flags, keywords)}."""
    want = {}
    with open(path, "wb") as f:
        for i in range(n):
            fl = want_flags(i)
            hdr = ""
            if "S" in fl:
                hdr += "Status: RO\n"
            xs = ("A" if "R" in fl else "") + ("F" if "F" in fl else "") + ("D" if "T" in fl else "")
            if xs:
                hdr += f"X-Status: {xs}\n"
            body = msg_bytes(tag, i).decode().replace("\r\n", "\n")
            head, rest = body.split("\n\n", 1)
            f.write(f"From s{i}@example.org Mon Jan  1 00:00:{i % 60:02d} 2024\n".encode())
            f.write((head + "\n" + hdr + "\n" + rest + "\n").encode())
            want[f"<{tag}.{i}@example.org>"] = (fl, frozenset())
    return want


# ---- reading a Maildir the way the tools do ----

def msgid_of(data):
    m = re.search(rb"(?im)^Message-ID:\s*(<[^>]*>)", data.split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0])
    return m.group(1).decode() if m else None


def read_keywords(d):
    out = {}
    try:
        with open(os.path.join(d, "dovecot-keywords")) as f:
            for line in f:
                num, _, name = line.rstrip("\n").partition(" ")
                if num.isdigit() and int(num) < 26:
                    out[chr(ord("a") + int(num))] = name
    except FileNotFoundError:
        pass
    return out


def md_view(d, with_bytes=False):
    """{Message-ID: (system flag letters, keywords[, bytes])} of a Maildir folder: flags from the
    file names, keyword letters through the folder's dovecot-keywords."""
    kw = read_keywords(d)
    out = {}
    for sub in ("cur", "new"):
        for name in os.listdir(os.path.join(d, sub)):
            if name.startswith("."):
                continue
            try:
                data = open(os.path.join(d, sub, name), "rb").read()
            except FileNotFoundError:
                continue  # renamed while we list
            info = name.split(":2,", 1)[1] if ":2," in name else ""
            flags = "".join(sorted(c for c in info if c.isupper()))
            kws = frozenset(kw[c] for c in info if c.islower() and c in kw)
            mid = msgid_of(data)
            assert mid not in out, f"duplicate {mid} in {d}"
            out[mid] = (flags, kws, data) if with_bytes else (flags, kws)
    return out


def account_maildir(srv, account="mox"):
    return os.path.join(srv.dir, "data", "accounts", account, "Maildir")


def folder(srv, mailbox):
    root = account_maildir(srv)
    return root if mailbox == "INBOX" else os.path.join(root, "." + mailbox.replace("/", "."))


def index_view(srv, mailbox, tmp_path):
    """What the index says: export the mailbox (through the running server, or offline) and read
    the exported names, whose flags and keyword letters come from the index records."""
    dest = tempfile.mkdtemp(prefix="exp", dir=str(tmp_path))
    os.rmdir(dest)
    p = mox("-config", srv.config, "export", "maildir", "mox", mailbox, dest, check=False)
    if p.returncode != 0:  # e.g. a renamed file the index does not know yet
        return "export failed: " + p.stderr.strip()
    return md_view(dest)


def wait_index(srv, mailbox, tmp_path, timeout=3.0):
    """Poll until the index agrees with the folder on disk (the watcher debounces ~250 ms).
    Returns the view; fails with both views when it does not agree in time."""
    deadline = time.monotonic() + timeout
    while True:
        disk = md_view(folder(srv, mailbox))
        idx = index_view(srv, mailbox, tmp_path)
        if idx == disk:
            return disk
        if time.monotonic() > deadline:
            if isinstance(idx, str):
                raise AssertionError(f"index does not follow the Maildir of {mailbox}: {idx}")
            diff = {k: (disk.get(k), idx.get(k)) for k in set(disk) | set(idx) if disk.get(k) != idx.get(k)}
            raise AssertionError(f"index does not follow the Maildir of {mailbox} (disk, index): {diff}")
        time.sleep(0.1)


def backup_verifies(srv, tmp_path):
    dest = tempfile.mkdtemp(prefix="bak", dir=str(tmp_path))
    os.rmdir(dest)
    mox("-config", srv.config, "backup", dest)
    p = mox("-config", srv.config, "verifydata", dest, check=False)
    assert p.returncode == 0 and "no problems found" in p.stdout, p.stdout + p.stderr


def sys_only(view):
    return {k: v[0] for k, v in view.items()}


# ---- mutt in a pseudo-terminal ----

def mutt_flags(maildir, out_dir):
    """Open maildir read-only in mutt and copy every message, then the deleted ones, to mbox files:
    mutt writes its own view of each message's flags into the copies' Status/X-Status headers.
    Returns {Message-ID: flag letters as Maildir would write them (F R S T)}."""
    allbox, delbox = os.path.join(out_dir, "mutt-all"), os.path.join(out_dir, "mutt-del")
    for p in (allbox, delbox):
        if os.path.exists(p):
            os.unlink(p)
    # A macro typed once the index is on screen (pushed keys race with opening the mailbox).
    keys = (f"<tag-pattern>~A<enter><tag-prefix><copy-message>{allbox}<enter>"
            f"<untag-pattern>~A<enter><tag-pattern>~D<enter><tag-prefix><copy-message>{delbox}<enter><quit>")
    cmds = ("set mbox_type=mbox quit=yes confirmcreate=no confirmappend=no wait_key=no mark_old=no "
            "delete=no move=no beep=no maildir_trash=no; macro index \\Ca \"" + keys + "\"")
    master, slave = pty.openpty()
    home = os.path.join(out_dir, "mutt-home")
    os.makedirs(os.path.join(home, "Mail"), exist_ok=True)  # else mutt asks to create it
    env = dict(os.environ, TERM="vt100", LINES="40", COLUMNS="160", HOME=home)
    p = subprocess.Popen(["mutt", "-n", "-F", "/dev/null", "-R", "-e", cmds, "-f", maildir], stdin=slave,
                         stdout=slave, stderr=slave, env=env, close_fds=True, start_new_session=True)
    os.close(slave)
    screen = b""
    typed = False
    deadline = time.monotonic() + 20
    try:
        while p.poll() is None and time.monotonic() < deadline:
            r, _, _ = select.select([master], [], [], 0.1)
            if r:
                try:
                    screen += os.read(master, 65536)
                except OSError:
                    break
            if not typed and b"Msgs:" in screen:
                os.write(master, b"\x01")
                typed = True
        try:
            rc = p.wait(timeout=max(1.0, deadline - time.monotonic()))  # EIO: the terminal closed first
        except subprocess.TimeoutExpired:
            rc = None
        assert rc == 0 and typed, screen[-3000:]
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        os.close(master)
    out = {}
    for m in mailbox.mbox(allbox):
        st, xs = m.get("Status", ""), m.get("X-Status", "")
        f = ("F" if "F" in xs else "") + ("R" if "A" in xs else "") + ("S" if "R" in st else "")
        out[m["Message-ID"]] = f
    deleted = [m["Message-ID"] for m in mailbox.mbox(delbox)] if os.path.exists(delbox) else []
    for mid in deleted:
        out[mid] = "".join(sorted(out[mid] + "T"))
    return out


# ---- notmuch ----

def notmuch_env(tmp_path, root):
    cfg = os.path.join(str(tmp_path), "notmuch-config")
    with open(cfg, "w") as f:
        f.write(f"[database]\npath={root}\n[new]\ntags=inbox;\n[maildir]\nsynchronize_flags=true\n"
                "[user]\nname=t\nprimary_email=mox@localhost\n")
    return dict(os.environ, NOTMUCH_CONFIG=cfg, HOME=str(tmp_path))


def notmuch(env, *args):
    p = subprocess.run(["notmuch", *args], env=env, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, f"notmuch {args}: {p.stdout}{p.stderr}"
    return p.stdout


def notmuch_ids(env, query):
    out = notmuch(env, "search", "--output=messages", query)
    return {f"<{line[3:]}>" for line in out.split("\n") if line.startswith("id:")}


# ---- 1: a store we wrote, read by other tools ----

@need_mutt
@need_notmuch
@need_mblaze
def test_tools_read_our_store(server_dir, tmp_path):
    cfg = server_dir.config
    src = str(tmp_path / "src")
    want_md = make_source_maildir(src, "md")
    assert "imported %d messages" % N in mox("-config", cfg, "import", "maildir", "mox", "INBOX", src).stdout
    want_mb = make_source_mbox(str(tmp_path / "src.mbox"), "mb")
    mox("-config", cfg, "import", "mbox", "mox", "Lists/Old", str(tmp_path / "src.mbox"))
    inbox, old = folder(server_dir, "INBOX"), folder(server_dir, "Lists/Old")
    # Our own names say what the sources said (the base of every check below).
    assert md_view(inbox) == want_md
    assert sys_only(md_view(old)) == {k: v[0] for k, v in want_mb.items()}
    # Unflagged messages wait in new/, the others are in cur/.
    assert len(os.listdir(os.path.join(inbox, "new"))) == sum(1 for f, k in want_md.values() if not f and not k)

    # mblaze: per-flag listings and the raw flags mscan reports.
    for d, want in ((inbox, want_md), (old, want_mb)):
        for opt, letter in (("-S", "S"), ("-F", "F"), ("-R", "R"), ("-T", "T")):
            out = subprocess.run(["mlist", opt, d], capture_output=True, text=True, check=True).stdout.split()
            got = {msgid_of(open(p, "rb").read()) for p in out}
            assert got == {k for k, v in want.items() if letter in v[0]}, (d, opt)
        files = subprocess.run(["mlist", d], capture_output=True, text=True, check=True).stdout
        scan = subprocess.run(["mscan", "-f", "%I %M"], input=files, capture_output=True, text=True,
                              check=True).stdout
        got = {}
        for line in scan.strip().split("\n"):
            mid, _, fl = line.partition(" ")
            got[mid] = "".join(sorted(c for c in fl if c.isupper()))
        assert got == {k: v[0] for k, v in want.items()}

    # mutt (read-only) sees the same seen/replied/flagged/deleted state.
    for d, want in ((inbox, want_md), (old, want_mb)):
        assert mutt_flags(d, str(tmp_path)) == {k: v[0] for k, v in want.items()}

    # notmuch indexes the Maildir in place (its .notmuch directory lands in our Maildir root).
    env = notmuch_env(tmp_path, account_maildir(server_dir))
    notmuch(env, "new")
    allwant = {**want_md, **want_mb}
    assert int(notmuch(env, "count", "*")) == 2 * N
    for tag, letter, inverse in (("unread", "S", True), ("flagged", "F", False), ("replied", "R", False)):
        got = notmuch_ids(env, f"tag:{tag}")
        assert got == {k for k, v in allwant.items() if (letter in v[0]) != inverse}, tag
    # Our store stays consistent with notmuch's database inside it, and verifydata agrees.
    assert os.path.isdir(os.path.join(account_maildir(server_dir), ".notmuch"))
    p = mox("-config", cfg, "verifydata", os.path.join(server_dir.dir, "data"), check=False)
    assert p.returncode == 0, p.stdout + p.stderr
    # Nothing was renamed by the readers.
    assert md_view(inbox) == want_md


# ---- 2: changes behind the running server's back ----

def path_of(d, mid):
    for sub in ("cur", "new"):
        for name in os.listdir(os.path.join(d, sub)):
            p = os.path.join(d, sub, name)
            if not name.startswith(".") and msgid_of(open(p, "rb").read()) == mid:
                return p
    raise AssertionError(f"{mid} not in {d}")


IMAP_FLAG = {"\\Seen": "S", "\\Answered": "R", "\\Flagged": "F", "\\Deleted": "T", "\\Draft": "D",
             "$Forwarded": "P"}


def imap_open(srv, mailbox="INBOX"):
    """An IMAP session with CONDSTORE on mailbox, or None when this build has no IMAP server."""
    try:
        c = imaplib.IMAP4("127.0.0.1", srv.ports["IMAP"], timeout=10)
        if "CONDSTORE" not in c.capabilities:
            c.shutdown()
            return None
        c.login("mox@localhost", "moxmoxmox")
    except (imaplib.IMAP4.error, OSError, EOFError):
        return None
    typ, _ = c._simple_command("ENABLE", "CONDSTORE")
    assert typ == "OK"
    typ, _ = c.select(mailbox)
    assert typ == "OK"
    return c


def imap_messages(c):
    """{Message-ID: (uid, flag letters, keywords, modseq)} of the selected mailbox."""
    typ, data = c.fetch("1:*", "(UID FLAGS MODSEQ BODY.PEEK[HEADER])")
    assert typ == "OK"
    out = {}
    for item in data:
        if not isinstance(item, tuple):
            continue
        meta = item[0].decode()
        uid = int(re.search(r"UID (\d+)", meta).group(1))
        modseq = int(re.search(r"MODSEQ \((\d+)\)", meta).group(1))
        names = re.search(r"FLAGS \(([^)]*)\)", meta).group(1).split()
        flags = "".join(sorted(IMAP_FLAG[f] for f in names if f in IMAP_FLAG))
        kws = frozenset(f for f in names if not f.startswith("\\") and f not in IMAP_FLAG)
        out[msgid_of(item[1])] = (uid, flags, kws, modseq)
    return out


def imap_wait(c, what, timeout=3.0):
    """NOOP until an untagged response of kind what (EXISTS, EXPUNGE, FETCH) arrives; returns them."""
    deadline = time.monotonic() + timeout
    while True:
        typ, _ = c.noop()
        assert typ == "OK"
        typ, data = c.response(what)
        if data and data != [None]:
            return data
        if time.monotonic() > deadline:
            raise AssertionError(f"no untagged {what} within {timeout}s")
        time.sleep(0.1)


def check_imap_agrees(c, view):
    got = imap_messages(c)
    assert {k: (v[1], v[2]) for k, v in got.items()} == view
    return got


@need_notmuch
@need_mblaze
def test_running_server_follows_other_tools(localserve, tmp_path):
    srv = localserve
    src = str(tmp_path / "src")
    make_source_maildir(src, "live", n=12)
    mox("-config", srv.config, "import", "maildir", "mox", "INBOX", src)
    inbox = folder(srv, "INBOX")
    view = wait_index(srv, "INBOX", tmp_path)
    assert len(view) == 12
    c = imap_open(srv)
    if c is not None:
        before = check_imap_agrees(c, view)

    # mblaze: minc moves new/ to cur/ (names get ":2,"), then mflag marks one seen.
    mid = "<live.11@example.org>"
    assert view[mid] == ("", frozenset()) and "/new/" in path_of(inbox, mid)
    subprocess.run(["minc", inbox], check=True, capture_output=True)
    assert os.listdir(os.path.join(inbox, "new")) == []
    view = wait_index(srv, "INBOX", tmp_path)
    assert view[mid] == ("", frozenset())
    subprocess.run(["mflag", "-S", path_of(inbox, mid)], check=True, capture_output=True)
    view = wait_index(srv, "INBOX", tmp_path)
    assert view[mid][0] == "S"
    if c is not None:
        imap_wait(c, "FETCH")
        now = check_imap_agrees(c, view)
        assert now[mid][3] > before[mid][3], "flag change by another tool without a new modseq"
        before = now

    # notmuch (synchronize_flags) flags and reads another one; its .notmuch directory in our
    # Maildir root is not a mailbox.
    env = notmuch_env(tmp_path, account_maildir(srv))
    notmuch(env, "new")
    mid = "<live.5@example.org>"
    assert view[mid][0] == "R"
    notmuch(env, "tag", "+flagged", "-unread", "id:" + mid[1:-1])
    view = wait_index(srv, "INBOX", tmp_path)
    assert view[mid][0] == "FRS"
    if c is not None:
        imap_wait(c, "FETCH")
        now = check_imap_agrees(c, view)
        assert now[mid][3] > before[mid][3]
        before = now

    # Another program copies a message file into new/.
    extra = tmp_path / "extra.eml"
    extra.write_bytes(msg_bytes("extra", 1))
    subprocess.run(["cp", str(extra), os.path.join(inbox, "new", "1700001234.M1P99.otherhost")], check=True)
    view = wait_index(srv, "INBOX", tmp_path)
    assert view["<extra.1@example.org>"] == ("", frozenset())
    if c is not None:
        assert int(imap_wait(c, "EXISTS")[-1]) == 13
        now = check_imap_agrees(c, view)
        assert now["<extra.1@example.org>"][0] > max(v[0] for v in before.values())

    # A message file deleted.
    mid = "<live.4@example.org>"
    os.unlink(path_of(inbox, mid))
    view = wait_index(srv, "INBOX", tmp_path)
    assert mid not in view and len(view) == 12
    if c is not None:
        imap_wait(c, "EXPUNGE")
        check_imap_agrees(c, view)
        c.logout()
    backup_verifies(srv, tmp_path)


def test_export_right_after_rename_by_other_tool(server_dir, tmp_path):
    """Another tool renames files and export runs at once (offline: no watcher; running: before the
    watcher's sync): export finds the files and writes the flags their names have now, and the
    index follows the new names."""
    srv = server_dir
    src = str(tmp_path / "src")
    make_source_maildir(src, "rn", n=12)
    mox("-config", srv.config, "import", "maildir", "mox", "INBOX", src)
    inbox = folder(srv, "INBOX")
    # As mutt does while the server is stopped: new/ -> cur/ with flags, and a flag change in cur/.
    p = path_of(inbox, "<rn.11@example.org>")
    assert "/new/" in p
    os.rename(p, os.path.join(inbox, "cur", os.path.basename(p) + ":2,FS"))
    p = path_of(inbox, "<rn.4@example.org>")
    os.rename(p, p.split(":2,")[0] + ":2,Ta")
    disk = md_view(inbox)
    assert disk["<rn.11@example.org>"] == ("FS", frozenset()) and disk["<rn.4@example.org>"] == ("T", {"work"})
    assert index_view(srv, "INBOX", tmp_path) == disk
    p = mox("-config", srv.config, "verifydata", os.path.join(srv.dir, "data"), check=False)
    assert p.returncode == 0 and "no problems found" in p.stdout, p.stdout + p.stderr

    # Running: files keep being renamed while exports run; none fails, none loses a message.
    srv.start()
    stop = []

    def renamer():
        k = 0
        while not stop:
            k += 1
            for sub in ("cur", "new"):
                d = os.path.join(inbox, sub)
                for n in os.listdir(d):
                    base, _, info = n.partition(":2,")
                    info = "".join(sorted(info.replace("S", ""))) if "S" in info else "".join(sorted(info + "S"))
                    try:
                        os.rename(os.path.join(d, n), os.path.join(inbox, "cur", base + ":2," + info))
                    except FileNotFoundError:
                        pass
    t = threading.Thread(target=renamer)
    t.start()
    try:
        for k in range(15):
            out = str(tmp_path / f"o{k}")
            p = mox("-config", srv.config, "export", "maildir", "mox", "INBOX", out, check=False)
            assert p.returncode == 0 and "exported 12 messages" in p.stdout, p.stdout + p.stderr
    finally:
        stop.append(1)
        t.join()
    wait_index(srv, "INBOX", tmp_path)
    backup_verifies(srv, tmp_path)


def test_watcher_waits_for_slow_writer(localserve, tmp_path):
    """A file written straight into new/ (not through tmp/) is adopted once its writer closes it,
    with its full size; a hard link (how delivery agents put a finished file in place) is adopted
    without any close."""
    srv = localserve
    inbox = folder(srv, "INBOX")
    data = msg_bytes("slow", 1) + b"y" * 5000 + b"\r\n"
    with open(os.path.join(inbox, "new", "1700002000.M1P77.writer"), "wb") as f:
        f.write(data[:len(data) // 2])
        f.flush()
        time.sleep(1)
        f.write(data[len(data) // 2:])
    tmpfile = os.path.join(inbox, "tmp", "1700002001.M1P77.linker")
    with open(tmpfile, "wb") as f:
        f.write(msg_bytes("linked", 1))
    time.sleep(0.5)  # the tmp/ file's close is long gone before the link appears
    os.link(tmpfile, os.path.join(inbox, "new", "1700002001.M1P77.linker"))
    os.unlink(tmpfile)
    view = wait_index(srv, "INBOX", tmp_path)
    assert set(view) == {"<slow.1@example.org>", "<linked.1@example.org>"}
    c = imap_open(srv)
    if c is not None:
        typ, resp = c.fetch("1:*", "(RFC822.SIZE BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])")
        assert typ == "OK"
        sizes = {msgid_of(item[1]): int(re.search(r"RFC822.SIZE (\d+)", item[0].decode()).group(1))
                 for item in resp if isinstance(item, tuple)}
        assert sizes == {"<slow.1@example.org>": len(data), "<linked.1@example.org>": len(msg_bytes("linked", 1))}
        c.logout()
    backup_verifies(srv, tmp_path)


@need_mblaze
def test_watcher_follows_folder_created_while_running(localserve, tmp_path):
    """A mailbox that appears after the start (here: a running import) is watched too."""
    srv = localserve
    src = str(tmp_path / "src")
    make_source_maildir(src, "fresh", n=12)
    mox("-config", srv.config, "import", "maildir", "mox", "Fresh/Sub", src)
    d = folder(srv, "Fresh/Sub")
    view = wait_index(srv, "Fresh/Sub", tmp_path)
    assert len(view) == 12
    subprocess.run(["minc", d], check=True, capture_output=True)
    subprocess.run(["mflag", "-F", path_of(d, "<fresh.11@example.org>")], check=True, capture_output=True)
    os.unlink(path_of(d, "<fresh.2@example.org>"))
    view = wait_index(srv, "Fresh/Sub", tmp_path)
    assert view["<fresh.11@example.org>"][0] == "F" and "<fresh.2@example.org>" not in view
    # A folder made by another tool (mkdir, then a message) becomes a mailbox.
    other = os.path.join(account_maildir(srv), ".Other")
    for sub in ("cur", "new", "tmp"):
        os.makedirs(os.path.join(other, sub))
    open(os.path.join(other, "cur", "1700000001.M1P1.elsewhere:2,S"), "wb").write(msg_bytes("other", 1))
    deadline = time.monotonic() + 3
    while True:
        p = mox("-config", srv.config, "export", "maildir", "mox", "Other", str(tmp_path / "o"), check=False)
        if p.returncode == 0 and "exported 1 messages" in p.stdout:
            break
        shutil.rmtree(str(tmp_path / "o"), ignore_errors=True)
        assert time.monotonic() < deadline, "folder made by another tool not adopted: " + p.stdout + p.stderr
        time.sleep(0.1)
    backup_verifies(srv, tmp_path)


# ---- 3: Dovecot writes, we import and export ----

MAIL_UID = 65534 if os.geteuid() == 0 else os.getuid()  # Dovecot refuses root as the mail user
MAIL_GID = 65534 if os.geteuid() == 0 else os.getgid()


@pytest.fixture
def dovecot_dir():
    """A directory Dovecot's mail user can use (pytest's tmp_path is private to us)."""
    d = tempfile.mkdtemp(prefix="moxdv")
    os.chmod(d, 0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def chown_tree(path):
    if os.geteuid() != 0:
        return
    os.chown(path, MAIL_UID, MAIL_GID)
    for dirpath, dirs, files in os.walk(path):
        for n in dirs + files:
            os.lchown(os.path.join(dirpath, n), MAIL_UID, MAIL_GID)


def dovecot_imap(base, location, script, extra=""):
    """Run Dovecot's imap binary preauthenticated on a pipe (no master, no auth service) with
    mail_location; script is a list of commands (bytes, CRLF added). Returns the output."""
    home = os.path.join(base, "home")
    os.makedirs(home, exist_ok=True)
    chown_tree(home)
    conf = os.path.join(base, "dovecot.conf")
    with open(conf, "w") as f:
        f.write(f"base_dir = {base}/run\nstate_dir = {base}/state\nlog_path = {base}/dovecot.log\nssl = no\n"
                f"mail_location = {location}\nmail_uid = {MAIL_UID}\nmail_gid = {MAIL_GID}\n"
                f"first_valid_uid = 1\nfirst_valid_gid = 1\n{extra}")
    data = b"".join(line + b"\r\n" for line in script) + b"zz LOGOUT\r\n"
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "USER": "mox", "HOME": home}
    p = subprocess.run([DOVECOT_IMAP, "-c", conf], input=data, capture_output=True, env=env, timeout=30)
    out = p.stdout.decode(errors="replace")
    assert p.returncode == 0 and "zz OK" in out, out + p.stderr.decode(errors="replace")
    for line in out.split("\r\n"):
        assert not re.match(r"^\w+ (NO|BAD)", line), line
    return out


DV_SYS = {"S": "\\Seen", "R": "\\Answered", "F": "\\Flagged", "T": "\\Deleted", "D": "\\Draft"}


def dovecot_messages(n, tag):
    """(message bytes, flag letters, keywords) to APPEND: every system flag, keywords incl. $Forwarded."""
    out = []
    for i in range(n):
        fl = want_flags(i) + ("D" if i % 9 == 2 else "")
        kw = set(want_keywords(i)) | ({"$Forwarded"} if i % 8 == 3 else set()) | ({"Later"} if i % 5 == 4 else set())
        out.append((msg_bytes(tag, i), "".join(sorted(fl)), frozenset(kw)))
    return out


def append_script(msgs, mailbox=b"INBOX"):
    lines = []
    for k, (data, fl, kw) in enumerate(msgs):
        flags = " ".join([DV_SYS[c] for c in fl] + sorted(kw))
        lines.append(b"a%d APPEND %s (%s) {%d+}\r\n" % (k, mailbox, flags.encode(), len(data)) + data)
    return lines


def semantic(view):
    """Flags and keywords as IMAP sees them: Maildir 'P' is the $Forwarded keyword."""
    out = {}
    for mid, v in view.items():
        fl, kw = v[0], set(v[1])
        if "P" in fl:
            kw.add("$Forwarded")
        out[mid] = ("".join(c for c in fl if c != "P"), frozenset(kw)) + tuple(v[2:])
    return out


def dovecot_fetch(base, location):
    """{Message-ID: (flag letters, keywords)} as Dovecot reads the mailbox INBOX at location."""
    out = dovecot_imap(base, location, [b"s SELECT INBOX", b"f FETCH 1:* (FLAGS BODY.PEEK[HEADER])"])
    res = {}
    for m in re.finditer(r"\* \d+ FETCH \(FLAGS \(([^)]*)\) BODY\[HEADER\] \{\d+\}\r\n(.*?)\r\n\r\n", out, re.S):
        names = m.group(1).split()
        fl = "".join(sorted(c for c, f in DV_SYS.items() if f in names))
        kw = frozenset(f for f in names if not f.startswith("\\"))
        res[msgid_of(m.group(2).encode() + b"\r\n\r\n")] = (fl, kw)
    return res


@need_dovecot
def test_dovecot_maildir_roundtrip(server_dir, dovecot_dir, tmp_path):
    cfg = server_dir.config
    msgs = dovecot_messages(20, "dv")
    want = {msgid_of(d): (fl, kw) for d, fl, kw in msgs}
    dovecot_imap(dovecot_dir, "maildir:~/Maildir", append_script(msgs), extra="mail_save_crlf = yes\n")
    dmd = os.path.join(dovecot_dir, "home", "Maildir")
    assert os.path.exists(os.path.join(dmd, "dovecot-keywords"))
    dview = md_view(dmd, with_bytes=True)
    # What Dovecot wrote is what we asked for (the source of every comparison below).
    assert {k: v[:2] for k, v in semantic(dview).items()} == want
    assert {v[2] for v in dview.values()} == {d for d, _, _ in msgs}

    p = mox("-config", cfg, "import", "maildir", "mox", "Dove", dmd)
    assert "imported 20 messages" in p.stdout
    ours = md_view(folder(server_dir, "Dove"), with_bytes=True)
    assert semantic(ours) == semantic(dview), "import changed bytes, flags or keywords"
    for name in os.listdir(os.path.join(folder(server_dir, "Dove"), "cur")):
        size = os.path.getsize(os.path.join(folder(server_dir, "Dove"), "cur", name))
        assert f",S={size}" in name

    out = str(tmp_path / "export")
    assert "exported 20 messages" in mox("-config", cfg, "export", "maildir", "mox", "Dove", out).stdout
    assert semantic(md_view(out, with_bytes=True)) == semantic(dview), "export changed bytes, flags or keywords"
    assert mox("-config", cfg, "verifydata", os.path.join(server_dir.dir, "data")).returncode == 0

    # Dovecot reads our export back with every flag and keyword.
    back = os.path.join(dovecot_dir, "back")
    shutil.copytree(out, back)
    chown_tree(back)
    nofwd = lambda v: {k: (f, kw - {"$Forwarded"}) for k, (f, kw) in v.items()}  # noqa: E731
    assert nofwd(dovecot_fetch(dovecot_dir, f"maildir:{back}")) == nofwd(want)


@need_dovecot
def test_dovecot_reads_forwarded_from_our_export(server_dir, dovecot_dir, tmp_path):
    msgs = [(msg_bytes("fwd", 1), "S", frozenset({"$Forwarded"}))]
    dovecot_imap(dovecot_dir, "maildir:~/Maildir", append_script(msgs))
    mox("-config", server_dir.config, "import", "maildir", "mox", "Fwd", os.path.join(dovecot_dir, "home", "Maildir"))
    # Our store says it both ways: 'P' for mutt and mblaze, the keyword letter for Dovecot.
    assert md_view(folder(server_dir, "Fwd")) == {"<fwd.1@example.org>": ("PS", frozenset({"$Forwarded"}))}
    out = os.path.join(dovecot_dir, "back")
    mox("-config", server_dir.config, "export", "maildir", "mox", "Fwd", out)
    assert md_view(out) == {"<fwd.1@example.org>": ("PS", frozenset({"$Forwarded"}))}
    chown_tree(out)
    assert dovecot_fetch(dovecot_dir, f"maildir:{out}") == {"<fwd.1@example.org>": ("S", frozenset({"$Forwarded"}))}
    # Dovecot -> mox -> Dovecot: Dovecot stores a flag change and we import its folder again.
    dovecot_imap(dovecot_dir, f"maildir:{out}", [b"s SELECT INBOX", b"t STORE 1 +FLAGS (\\Flagged)"])
    mox("-config", server_dir.config, "import", "maildir", "mox", "Fwd2", out)
    assert md_view(folder(server_dir, "Fwd2")) == {"<fwd.1@example.org>": ("FPS", frozenset({"$Forwarded"}))}


@need_mblaze
def test_forwarded_read_from_either_letter(server_dir, tmp_path):
    """A name with only 'P' (mblaze's mflag -P) or only the $Forwarded keyword letter (Dovecot) is
    $Forwarded; a flag change we make later writes both."""
    src = str(tmp_path / "src")
    for sub in ("cur", "new", "tmp"):
        os.makedirs(os.path.join(src, sub))
    with open(os.path.join(src, "dovecot-keywords"), "w") as f:
        f.write("0 work\n1 $Forwarded\n")
    open(os.path.join(src, "cur", "1700000001.M1P1.a:2,P"), "wb").write(msg_bytes("either", 1))
    open(os.path.join(src, "cur", "1700000002.M1P1.a:2,Sb"), "wb").write(msg_bytes("either", 2))
    open(os.path.join(src, "cur", "1700000003.M1P1.a:2,a"), "wb").write(msg_bytes("either", 3))
    mox("-config", server_dir.config, "import", "maildir", "mox", "INBOX", src)
    inbox = folder(server_dir, "INBOX")
    fwd = frozenset({"$Forwarded"})
    want = {"<either.1@example.org>": ("P", fwd), "<either.2@example.org>": ("PS", fwd),
            "<either.3@example.org>": ("", frozenset({"work"}))}
    assert md_view(inbox) == want
    # mblaze lists the forwarded ones by 'P'.
    out = subprocess.run(["mlist", "-P", inbox], capture_output=True, text=True, check=True).stdout.split()
    assert {msgid_of(open(p, "rb").read()) for p in out} == {"<either.1@example.org>", "<either.2@example.org>"}
    # The running server's sync reads a Dovecot-style name (letter only) as the flag too.
    server_dir.start()
    p = path_of(inbox, "<either.3@example.org>")
    kw = {v: k for k, v in read_keywords(inbox).items()}
    os.rename(p, p.split(":2,")[0] + ":2," + "".join(sorted(kw["work"] + kw["$Forwarded"])))
    want["<either.3@example.org>"] = ("P", frozenset({"$Forwarded", "work"}))
    deadline = time.monotonic() + 3
    while semantic(index_view(server_dir, "INBOX", tmp_path)) != semantic(want):
        assert time.monotonic() < deadline, index_view(server_dir, "INBOX", tmp_path)
        time.sleep(0.1)
    c = imap_open(server_dir)
    if c is not None:
        got = imap_messages(c)
        assert {k: (v[1], v[2]) for k, v in got.items()} == {k: (f, kw - fwd) for k, (f, kw) in want.items()}
        typ, _ = c.uid("STORE", str(got["<either.3@example.org>"][0]), "+FLAGS", "(\\Seen)")
        assert typ == "OK"
        c.logout()
        assert md_view(inbox)["<either.3@example.org>"] == ("PS", frozenset({"$Forwarded", "work"}))


@need_dovecot
def test_dovecot_mbox_keywords_imported(server_dir, dovecot_dir, tmp_path):
    msgs = [(msg_bytes("kw", 1), "S", frozenset({"work"}))]
    dovecot_imap(dovecot_dir, "mbox:~/mail:INBOX=~/mail/inbox", append_script(msgs))
    mox("-config", server_dir.config, "import", "mbox", "mox", "Kw", os.path.join(dovecot_dir, "home", "mail", "inbox"))
    assert md_view(folder(server_dir, "Kw")) == {"<kw.1@example.org>": ("S", frozenset({"work"}))}


def test_mbox_keywords_mutt_style(server_dir, tmp_path):
    """X-Keywords as mutt writes it (commas), folded, with junk: valid keywords imported, junk
    skipped, $Forwarded is the flag; export keeps the bytes, so a second import sees the same."""
    src = str(tmp_path / "kw.mbox")
    body = msg_bytes("mkw", 1).decode().replace("\r\n", "\n")
    head, rest = body.split("\n\n", 1)
    long_kw = "k" * 250
    with open(src, "wb") as f:
        f.write(("From a@example.org Mon Jan  1 00:00:00 2024\n" + head +
                 "\nStatus: RO\nX-Keywords: work, $Label1,\n\tlater " + long_kw + " bad\\kw,$Forwarded\n\n" + rest +
                 "\n").encode())
        body2 = msg_bytes("mkw", 2).decode().replace("\r\n", "\n")
        f.write(("From a@example.org Mon Jan  1 00:00:00 2024\nX-Keywords: Work work  \n" + body2 + "\n").encode())
    p = mox("-config", server_dir.config, "import", "mbox", "mox", "Kw", src)
    assert "imported 2 messages" in p.stdout
    want = {"<mkw.1@example.org>": ("PS", frozenset({"work", "$Label1", "later", "$Forwarded"})),
            "<mkw.2@example.org>": ("", frozenset({"work"}))}  # the folder's letter spells it so
    assert md_view(folder(server_dir, "Kw")) == want
    out = str(tmp_path / "out.mbox")
    mox("-config", server_dir.config, "export", "mbox", "mox", "Kw", out)
    data = open(out, "rb").read()
    assert data.count(b"X-Keywords:") == 2 and b"Status: RO\n" in data
    mox("-config", server_dir.config, "import", "mbox", "mox", "Kw2", out)
    assert md_view(folder(server_dir, "Kw2"), with_bytes=True) == md_view(folder(server_dir, "Kw"), with_bytes=True)


@need_dovecot
def test_dovecot_mbox_roundtrip(server_dir, dovecot_dir, tmp_path):
    cfg = server_dir.config
    msgs = dovecot_messages(20, "dvmb")
    want = {msgid_of(d): (fl, kw) for d, fl, kw in msgs}
    dovecot_imap(dovecot_dir, "mbox:~/mail:INBOX=~/mail/inbox", append_script(msgs))
    src = os.path.join(dovecot_dir, "home", "mail", "inbox")
    # Dovecot's mbox holds our messages with its Status/X-Status/X-Keywords headers.
    mb = mailbox.mbox(src)
    draw = {mb[k]["Message-ID"]: mb.get_bytes(k) for k in mb.keys()}
    assert set(draw) == set(want)
    p = mox("-config", cfg, "import", "mbox", "mox", "DoveMbox", src)
    assert "imported 20 messages" in p.stdout
    ours = md_view(folder(server_dir, "DoveMbox"), with_bytes=True)
    # Flags from Dovecot's Status/X-Status (D is \Deleted and T \Draft there, as we read them),
    # keywords (and $Forwarded) from its X-Keywords.
    assert {k: v[:2] for k, v in semantic(ours).items()} == want
    # Message bytes are Dovecot's, lines ending in CRLF.
    for mid, v in ours.items():
        assert v[2] == draw[mid].replace(b"\n", b"\r\n"), mid

    out = str(tmp_path / "out.mbox")
    assert "exported 20 messages" in mox("-config", cfg, "export", "mbox", "mox", "DoveMbox", out).stdout
    mox("-config", cfg, "import", "mbox", "mox", "Again", out)
    assert md_view(folder(server_dir, "Again"), with_bytes=True) == ours
    out2 = str(tmp_path / "out2.mbox")
    mox("-config", cfg, "export", "mbox", "mox", "Again", out2)
    assert open(out2, "rb").read() == open(out, "rb").read()
    # Dovecot reads our mbox with the same messages.
    back = os.path.join(dovecot_dir, "mboxback")
    os.makedirs(back)
    shutil.copy(out, os.path.join(back, "inbox"))
    chown_tree(back)
    got = dovecot_fetch(dovecot_dir, f"mbox:{back}:INBOX={back}/inbox")
    assert set(got) == set(want)
    assert {k: v[0] for k, v in got.items()} == {k: v[0] for k, v in semantic(ours).items()}

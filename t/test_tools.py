"""Data tools: import, export, backup, verifydata, the fix commands, setaccountpassword.

Every test runs the real mox command against a localserve directory, offline
(server_dir) or through the running server's control socket (localserve).
"""
import os
import random
import re
import shutil
import signal
import smtplib
import subprocess
import time

import pytest

from conftest import MOX, mox



def gen_mbox(path, n, seed=1):
    """An mboxrd file with n messages: some with Status flags, quoted From lines, bare LF."""
    rnd = random.Random(seed)
    msgs = []
    with open(path, "wb") as f:
        for i in range(n):
            body = f"Subject: message {i}\nMessage-ID: <m{i}.{seed}@example>\n"
            if i % 3 == 1:
                body += "Status: RO\nX-Status: AF\n"
            body += "\nline one\n"
            if i % 4 == 0:
                body += "From the start\n>From quoted once\n"
            body += "x" * rnd.randrange(0, 200) + "\n"
            msgs.append(body)
            quoted = re.sub(r"(?m)^(>*From )", r">\1", body)
            f.write(f"From sender@example Thu Jan  1 00:00:{i % 60:02d} 1970\n".encode())
            f.write(quoted.encode() + b"\n")
    return msgs


def folder(srv, mailbox, account="mox"):
    root = os.path.join(srv.dir, "data", "accounts", account, "Maildir")
    return root if mailbox == "INBOX" else os.path.join(root, "." + mailbox)


def files(d):
    """{file name: bytes} of cur/ and new/ of a Maildir folder."""
    out = {}
    for sub in ("cur", "new"):
        p = os.path.join(d, sub)
        for name in os.listdir(p):
            out[sub + "/" + name] = open(os.path.join(p, name), "rb").read()
    return out


def contents(d):
    return sorted(files(d).values())


def flagset(d):
    """Sorted list of (content, flag letters) of a Maildir folder."""
    res = []
    for name, data in files(d).items():
        fl = name.split(":2,", 1)[1] if ":2," in name else ""
        res.append((data, fl))
    return sorted(res)


def test_mbox_import_export_roundtrip(server_dir, tmp_path):
    cfg = server_dir.config
    src = tmp_path / "in.mbox"
    msgs = gen_mbox(src, 1200)
    p = mox("-config", cfg, "import", "mbox", "mox", "Imported", str(src))
    assert "imported 1200 messages" in p.stdout
    assert "1000 messages so far" in p.stderr or "messages so far" in p.stderr
    got = contents(folder(server_dir, "Imported"))
    assert got == sorted(m.replace("\n", "\r\n").encode() for m in msgs)
    # Status/X-Status became flags: R -> S, A -> R, F -> F.
    fl = [f for _, f in flagset(folder(server_dir, "Imported"))]
    assert sum(1 for f in fl if f == "FRS") == 400

    out = tmp_path / "out.mbox"
    p = mox("-config", cfg, "export", "mbox", "mox", "Imported", str(out))
    assert "exported 1200 messages" in p.stdout
    text = out.read_bytes()
    assert b"\r" not in text and b"\n>From the start\n>>From quoted once\n" in text
    mox("-config", cfg, "import", "mbox", "mox", "Again", str(out))
    assert contents(folder(server_dir, "Again")) == got
    # Exporting the re-import gives the same mbox (dates kept through the From line).
    out2 = tmp_path / "out2.mbox"
    mox("-config", cfg, "export", "mbox", "mox", "Again", str(out2))
    assert out2.read_bytes() == text
    assert mox("-config", cfg, "verifydata", os.path.join(server_dir.dir, "data")).returncode == 0


def make_maildir(d):
    for sub in ("cur", "new", "tmp"):
        os.makedirs(os.path.join(d, sub))
    with open(os.path.join(d, "dovecot-keywords"), "w") as f:
        f.write("0 $Important\n1 work\n")
    msgs = {
        "cur/1000.M1P1.host,S=10:2,S": b"Subject: seen\n\nbare LF\n",
        "cur/1001.M1P1.host:2,FRab": b"Subject: flagged\r\n\r\nkeywords\r\n",
        "cur/1002.M1P1.host:2,Tb": b"Subject: deleted\r\n\r\nx\r\n",
        "new/1003.M1P1.host": b"Subject: new\n\nnew message\n",
    }
    for name, data in msgs.items():
        with open(os.path.join(d, name), "wb") as f:
            f.write(data)
    return msgs


def test_maildir_import_export_roundtrip(server_dir, tmp_path):
    cfg = server_dir.config
    src = tmp_path / "src"
    msgs = make_maildir(str(src))
    p = mox("-config", cfg, "import", "maildir", "mox", "Lists/mox", str(src))
    assert "imported 4 messages" in p.stdout
    dst = folder(server_dir, "Lists.mox")
    assert contents(dst) == sorted(v.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n") for v in msgs.values())
    byname = {v.split(b"\r\n")[0]: k for k, v in files(dst).items()}
    kw = open(os.path.join(dst, "dovecot-keywords")).read().split("\n")
    letters = {line.split(" ", 1)[1]: chr(ord("a") + int(line.split(" ")[0])) for line in kw if line}
    assert byname[b"Subject: seen"].endswith(":2,S")
    assert byname[b"Subject: flagged"].endswith(":2,FR" + "".join(sorted(letters["$Important"] + letters["work"])))
    assert byname[b"Subject: deleted"].endswith(":2,T" + letters["work"])
    assert byname[b"Subject: new"].startswith("new/")

    out = tmp_path / "exported"
    p = mox("-config", cfg, "export", "maildir", "mox", "Lists/mox", str(out))
    assert "exported 4 messages" in p.stdout
    mox("-config", cfg, "import", "maildir", "mox", "Back", str(out))
    assert flagset(folder(server_dir, "Back")) == flagset(dst)
    assert flagset(str(out)) == flagset(dst)
    # -all: Maildir++ with every mailbox.
    allout = tmp_path / "all"
    mox("-config", cfg, "export", "maildir", "mox", "-all", str(allout))
    assert contents(str(allout / ".Lists.mox")) == contents(dst)
    assert mox("-config", cfg, "verifydata", os.path.join(server_dir.dir, "data")).returncode == 0


def test_running_import_backup_verify(localserve, tmp_path):
    cfg = localserve.config
    src = tmp_path / "in.mbox"
    msgs = gen_mbox(src, 700, seed=2)
    p = mox("-config", cfg, "import", "mbox", "mox", "Live", str(src))
    assert "imported 700 messages" in p.stdout
    assert contents(folder(localserve, "Live")) == sorted(m.replace("\n", "\r\n").encode() for m in msgs)
    # The live data directory is locked by the server: verifydata says so politely.
    p = mox("-config", cfg, "verifydata", os.path.join(localserve.dir, "data"), check=False)
    assert p.returncode == 1 and "in use by a running server" in p.stderr
    # Export through the server.
    out = tmp_path / "live.mbox"
    assert "exported 700 messages" in mox("-config", cfg, "export", "mbox", "mox", "Live", str(out)).stdout
    # Backup while running, then the backup verifies clean offline.
    dest = tmp_path / "backup"
    p = mox("-config", cfg, "backup", str(dest))
    assert "backup written" in p.stdout
    assert os.path.exists(dest / "config" / "mox.yaml")
    p = mox("-config", cfg, "verifydata", str(dest))
    assert "no problems found" in p.stdout
    assert contents(str(dest / "accounts" / "mox" / "Maildir" / ".Live")) == contents(folder(localserve, "Live"))
    # The server still answers afterwards.
    mox("-config", cfg, "status")


def uv_decode(b, i):
    v = s = 0
    while True:
        c = b[i]
        i += 1
        v |= (c & 0x7F) << s
        s += 7
        if c < 0x80:
            return v, i


def uv_encode(v):
    out = bytearray()
    while True:
        c = v & 0x7F
        v >>= 7
        if v:
            out.append(c | 0x80)
        else:
            out.append(c)
            return bytes(out)


def bump_total(dbpath, name, delta):
    """Change the total count of mailbox name in the index behind mox's back (tcbmgr)."""
    key = name.encode().hex()
    mbid = subprocess.run(["tcbmgr", "get", "-sx", "-px", dbpath, "4e" + key], capture_output=True, text=True,
                          check=True).stdout.strip().replace(" ", "")
    bkey = "42" + mbid
    val = bytes.fromhex(subprocess.run(["tcbmgr", "get", "-sx", "-px", dbpath, bkey], capture_output=True,
                                       text=True, check=True).stdout.strip().replace(" ", ""))
    i = 1
    for _ in range(2):  # name, folder
        n, i = uv_decode(val, i)
        i += n
    for _ in range(7):  # parent uidvalidity uidnext special_use flags highest_modseq created_modseq
        _, i = uv_decode(val, i)
    total, j = uv_decode(val, i)
    new = val[:i] + uv_encode(total + delta) + val[j:]
    subprocess.run(["tcbmgr", "put", "-sx", dbpath, bkey, new.hex()], check=True)


@pytest.mark.skipif(shutil.which("tcbmgr") is None, reason="tcbmgr (tokyocabinet-bin) not installed")
def test_verifydata_detects_and_fixes(server_dir, tmp_path):
    cfg = server_dir.config
    data = os.path.join(server_dir.dir, "data")
    src = tmp_path / "in.mbox"
    gen_mbox(src, 20, seed=3)
    mox("-config", cfg, "import", "mbox", "mox", "Box", str(src))
    assert mox("-config", cfg, "verifydata", data).returncode == 0
    d = folder(server_dir, "Box")
    names = sorted(files(d))
    os.unlink(os.path.join(d, names[0]))  # a message file deleted
    with open(os.path.join(d, "new", "1234.M5P6.other"), "wb") as f:  # a file added behind our back
        f.write(b"Subject: stray\r\n\r\nhello\r\n")
    bump_total(os.path.join(data, "accounts", "mox", "index.tcb"), "Box", 5)  # a wrong count
    p = mox("-config", cfg, "verifydata", data, check=False)
    assert p.returncode == 1, p.stdout
    assert "problem" in p.stdout
    p = mox("-config", cfg, "verifydata", "-fix", data, check=False)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "fixed" in p.stdout
    assert mox("-config", cfg, "verifydata", data).returncode == 0
    assert len(files(d)) == 20


@pytest.mark.skipif(shutil.which("tcbmgr") is None, reason="tcbmgr (tokyocabinet-bin) not installed")
def test_fix_commands_offline(server_dir, tmp_path):
    cfg = server_dir.config
    data = os.path.join(server_dir.dir, "data")
    src = tmp_path / "in.mbox"
    gen_mbox(src, 10, seed=4)
    mox("-config", cfg, "import", "mbox", "mox", "Fix", str(src))
    bump_total(os.path.join(data, "accounts", "mox", "index.tcb"), "Fix", 3)
    p = mox("-config", cfg, "recalculatemailboxcounts", "mox")
    assert "mailbox Fix: total 13 -> 10" in p.stdout
    assert mox("-config", cfg, "recalculatemailboxcounts", "mox").stdout == ""
    assert mox("-config", cfg, "fixuidmeta", "mox").stdout == ""
    assert mox("-config", cfg, "fixmsgsize", "mox").stdout == ""
    assert mox("-config", cfg, "fixmsgsize").returncode == 0
    p = mox("-config", cfg, "bumpuidvalidity", "mox", "Fix")
    assert re.search(r"mailbox Fix: uidvalidity \d+ -> \d+", p.stdout)
    p = mox("-config", cfg, "reassignuids", "mox", "Fix")
    assert "mailbox Fix: 10 messages renumbered 1..10" in p.stdout
    p = mox("-config", cfg, "reassignuids", "mox")
    assert "mailbox INBOX" in p.stdout and "mailbox Fix" in p.stdout
    p = mox("-config", cfg, "bumpuidvalidity", "mox", "Nope", check=False)
    assert p.returncode == 1 and "no mailbox" in p.stderr
    assert mox("-config", cfg, "verifydata", data).returncode == 0


def test_fix_commands_running(localserve, tmp_path):
    cfg = localserve.config
    src = tmp_path / "in.mbox"
    gen_mbox(src, 5, seed=5)
    mox("-config", cfg, "import", "mbox", "mox", "R", str(src))
    for cmd in (["fixuidmeta", "mox"], ["fixmsgsize", "mox"], ["recalculatemailboxcounts", "mox"]):
        mox("-config", cfg, *cmd)
    assert "mailbox R: uidvalidity" in mox("-config", cfg, "bumpuidvalidity", "mox", "R").stdout
    assert "mailbox R: 5 messages renumbered" in mox("-config", cfg, "reassignuids", "mox", "R").stdout
    p = mox("-config", cfg, "reassignuids", "nosuch", check=False)
    assert p.returncode == 1 and "no such account" in p.stderr


def smtp_login_works(srv, password):
    try:
        with smtplib.SMTP("127.0.0.1", srv.ports["Submission"], timeout=10) as s:
            s.ehlo()
            if not s.has_extn("auth"):
                pytest.skip("submission without AUTH in this build")
            s.login("mox@localhost", password)
            return True
    except smtplib.SMTPAuthenticationError:
        return False
    except (smtplib.SMTPServerDisconnected, smtplib.SMTPResponseException) as e:
        pytest.skip(f"no SMTP submission server in this build: {e}")


def test_setaccountpassword(server_dir):
    cfg = server_dir.config
    p = mox("-config", cfg, "setaccountpassword", "mox", input="offline-secret\n")
    assert p.returncode == 0
    server_dir.start()
    assert smtp_login_works(server_dir, "offline-secret")
    assert not smtp_login_works(server_dir, "moxmoxmox")
    mox("-config", cfg, "setaccountpassword", "mox", input="online-secret\n")
    assert smtp_login_works(server_dir, "online-secret")
    assert not smtp_login_works(server_dir, "offline-secret")
    p = mox("-config", cfg, "setaccountpassword", "mox", input="", check=False)
    assert p.returncode == 1


def test_import_crash_rounds(server_dir, tmp_path):
    """kill -9 at random moments of an import: after verifydata -fix nothing is lost, duplicated or broken."""
    cfg = server_dir.config
    data = os.path.join(server_dir.dir, "data")
    src = tmp_path / "in.mbox"
    msgs = gen_mbox(src, 1500, seed=6)
    want = {m.replace("\n", "\r\n").encode() for m in msgs}
    rnd = random.Random(7)
    deadline = time.monotonic() + 50
    for r in range(20):
        if time.monotonic() > deadline:
            break
        proc = subprocess.Popen([MOX, "-config", cfg, "import", "mbox", "mox", f"Crash{r}", str(src)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        time.sleep(rnd.uniform(0.0, 0.25))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        p = mox("-config", cfg, "verifydata", "-fix", data, check=False)
        assert p.returncode == 0, p.stdout + p.stderr
        d = folder(server_dir, f"Crash{r}")
        if not (os.path.isdir(os.path.join(d, "cur")) and os.path.isdir(os.path.join(d, "new"))):
            continue  # killed before the mailbox's folder was complete
        got = contents(d)
        assert len(got) == len(set(got)), "duplicated messages"
        assert set(got) <= want, "a message that is not from the source"
        assert mox("-config", cfg, "verifydata", data).returncode == 0
    # Nothing of the source is lost when the import completes after all that.
    mox("-config", cfg, "import", "mbox", "mox", "Complete", str(src))
    assert set(contents(folder(server_dir, "Complete"))) == want


def test_verifydata_builds_moved_index(server_dir, tmp_path):
    """An index moved aside (unreadable after a disk failure): verifydata -fix builds a
    new one from the Maildir with every message, folder and flag, and new UIDVALIDITY
    values (clients must not keep UIDs cached under the old ones)."""
    import imaplib
    cfg = server_dir.config
    data = os.path.join(server_dir.dir, "data")
    src = tmp_path / "in.mbox"
    msgs = gen_mbox(src, 60, seed=3)
    mox("-config", cfg, "import", "mbox", "mox", "Kept", str(src))
    mox("-config", cfg, "import", "mbox", "mox", "INBOX", str(src))
    server_dir.start()
    c = imaplib.IMAP4("127.0.0.1", server_dir.ports["IMAP"])
    c.login("mox@localhost", "moxmoxmox")
    before = {mb: c.status(mb, "(MESSAGES UNSEEN UIDVALIDITY)")[1][0] for mb in ("INBOX", "Kept")}
    c.logout()
    server_dir.stop()
    # UIDVALIDITY values start at the clock: a new index built in the same second as the
    # old one was made could hand out the same ones (the limit of that scheme).
    newest = max(int(re.search(rb"UIDVALIDITY (\d+)", v).group(1)) for v in before.values())
    while time.time() <= newest + 1:
        time.sleep(0.2)
    acct = os.path.join(data, "accounts", "mox")
    os.mkdir(os.path.join(acct, "aside"))
    for name in os.listdir(acct):
        if name.startswith("index."):
            os.rename(os.path.join(acct, name), os.path.join(acct, "aside", name))
    assert mox("-config", cfg, "verifydata", data, check=False).returncode != 0  # no index: reported
    p = mox("-config", cfg, "verifydata", "-fix", data, check=False)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "building a new one from the Maildir" in p.stdout
    server_dir.start()
    c = imaplib.IMAP4("127.0.0.1", server_dir.ports["IMAP"])
    c.login("mox@localhost", "moxmoxmox")
    for mb in ("INBOX", "Kept"):
        got = c.status(mb, "(MESSAGES UNSEEN UIDVALIDITY)")[1][0]
        old = dict(re.findall(rb"(\w+) (\d+)", before[mb]))
        new = dict(re.findall(rb"(\w+) (\d+)", got))
        assert new[b"MESSAGES"] == old[b"MESSAGES"] == b"60", (before[mb], got)
        assert new[b"UNSEEN"] == old[b"UNSEEN"], (before[mb], got)
        assert new[b"UIDVALIDITY"] != old[b"UIDVALIDITY"], (before[mb], got)
    c.logout()
    assert set(contents(folder(server_dir, "Kept"))) == {m.replace("\n", "\r\n").encode() for m in msgs}

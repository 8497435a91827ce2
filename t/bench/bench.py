#!/usr/bin/python3
"""make bench: our figures beside Dovecot and Postfix on this machine, in one run.

Parts (each prints "skipped: <why>" when a side cannot be measured, never fails the run):
 1. Disk: the durable-delivery limit (write 4 KB, fsync, link into new/, fsync the directory),
    one writer and 4 concurrent writers: the reference for every storage and delivery figure.
 2. IMAP: t/bench/imapload (C, poll()) against Dovecot (its own instance in a temp directory)
    and mox localserve, both with the same pre-populated INBOX (appended first):
    a) stress mix for a fixed time at 10 and 100 clients, operations/s (each session:
       connect, LOGIN, SELECT, FETCH 10 (ENVELOPE FLAGS), STORE flags, APPEND 4 KB,
       STORE \\Deleted, EXPUNGE, LOGOUT; every command completed counts as one operation);
    b) SELECT + FETCH 1:* (UID FLAGS) of a large mailbox, first (cold-ish: after a restart,
       index built or opened for the first time) and second (warm) run. Dovecot's copy is
       written straight into Maildir cur/; mox's comes from `mox import mbox`;
    c) many idle connections (LOGIN, SELECT, IDLE): server memory per connection, from VmRSS
       before and after (for Dovecot, which runs one process per connection, the sum over all
       its processes of RSS, and of PSS which counts shared pages once).
 3. SMTP/LMTP delivery: Postfix's smtp-source sends 4 KB messages over 1 and 10 concurrent
    connections (a new session for each message, smtp-source's default) to mox's SMTP port, Dovecot's LMTP and a Postfix instance delivering to a Maildir (virtual(8)),
    each timed until the last message file is in the target Maildir; plus mox's memory per
    idle SMTP connection.
 4. Storage: import of a generated mbox (deterministic) with `mox import` and with
    `doveadm import`: messages/s and peak RSS; index size per message; time for the server to
    open the imported account (restart until the first LOGIN and SELECT of the big mailbox end).
 5. Durable delivery through the storage code (t/bench/deliverbench, no network): 4 KB
    messages written to a spool file and added with idx_add as the SMTP server does, (a) one
    message per idx_add, each durable before the next, (b) K concurrent senders group-committed
    by one storage thread as the daemon's does; messages/s beside the disk limit of part 1 and
    the raw loop deliverbench runs itself (goal: >= 0.90 of it); index.tcb bytes per message;
    time to open an account of many messages (idx_account_open + INBOX lookup), cold and warm.

Sizes come from flags; BENCH_QUICK=1 (or --quick) picks small ones; BENCH_DIR sets where the
temporary directories go (default /tmp).
"""
import argparse
import contextlib
import json
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
USER, PASSWORD = "mox@localhost", "moxmoxmox"
MAIL_UID = MAIL_GID = 65534  # nobody/nogroup: the peers' mail user

MOX_PORTS = ["SMTP", "Submission", "Submissions", "IMAP", "IMAPS", "HTTP", "HTTPS", "MetricsHTTP"]


# ---------------------------------------------------------------- output

RESULTS = []  # (section, name, value, unit)


def say(msg=""):
    print(msg, flush=True)


def skipped(what, why):
    say(f"  {what}: skipped: {why}")


def ratio(a, b):
    if a is None or b is None or b == 0:
        return "n/a"
    return f"{a / b:.2f}x"


def fmt(v, unit=""):
    if v is None:
        return "-"
    if isinstance(v, float):
        v = f"{v:.3f}" if v < 10 else f"{v:.0f}" if v >= 100 else f"{v:.1f}"
    return f"{v}{(' ' + unit) if unit else ''}"


# ---------------------------------------------------------------- processes

class Procs:
    """Every process the bench starts, so that all of them end, even on failure.

    Each server runs in its own session (start_new_session); cleanup sends SIGTERM, then
    SIGKILL, to every process of each recorded session (daemons that fork stay in it)."""

    def __init__(self):
        self.sessions = []

    def popen(self, argv, **kw):
        p = subprocess.Popen(argv, start_new_session=True, **kw)
        self.sessions.append(p.pid)
        return p

    def add_session(self, sid):
        if sid not in self.sessions:
            self.sessions.append(sid)

    @staticmethod
    def members(sid):
        out = []
        for d in os.listdir("/proc"):
            if not d.isdigit():
                continue
            try:
                with open(f"/proc/{d}/stat") as f:
                    st = f.read()
                fields = st[st.rindex(")") + 2:].split()
                if int(fields[3]) == sid:
                    out.append(int(d))
            except (OSError, ValueError):
                pass
        return out

    def end(self, sid, grace=10.0):
        for sig in (signal.SIGTERM, signal.SIGKILL):
            pids = self.members(sid)
            if not pids:
                break
            for pid in pids:
                try:
                    os.kill(pid, sig)
                except OSError:
                    pass
            deadline = time.monotonic() + grace
            while time.monotonic() < deadline and self.members(sid):
                time.sleep(0.05)
                reap()
        reap()
        if sid in self.sessions:
            self.sessions.remove(sid)

    def cleanup(self):
        for sid in list(self.sessions):
            self.end(sid, grace=5.0)


def reap():
    try:
        while os.waitpid(-1, os.WNOHANG)[0] > 0:
            pass
    except ChildProcessError:
        pass


PROCS = Procs()


def free_port():
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        try:
            with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s6:
                s6.bind(("::1", port))
        except OSError as e:
            if e.errno == 98:
                continue
        return port
    raise RuntimeError("no free port")


def wait_port(port, timeout=20.0, proc=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            return False
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return True
        except OSError:
            time.sleep(0.05)
    return False


def run_timed(argv, timeout, **kw):
    """Run a command in its own session; returns (rc, seconds, maxrss KB, stdout, stderr)."""
    t0 = time.monotonic()
    p = PROCS.popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                    **kw)
    out = []
    err = []
    to = threading.Thread(target=lambda: out.append(p.stdout.read()))
    te = threading.Thread(target=lambda: err.append(p.stderr.read()))
    to.start()
    te.start()
    rc = None
    rusage = None
    deadline = t0 + timeout
    while True:
        pid, status, ru = os.wait4(p.pid, os.WNOHANG)
        if pid == p.pid:
            rc = os.waitstatus_to_exitcode(status)
            rusage = ru
            p.returncode = rc
            break
        if time.monotonic() > deadline:
            PROCS.end(p.pid, grace=2)
            rc = -999
            break
        time.sleep(0.01)
    elapsed = time.monotonic() - t0
    to.join(5)
    te.join(5)
    if p.pid in PROCS.sessions:
        PROCS.end(p.pid, grace=2)
    return (rc, elapsed, rusage.ru_maxrss if rusage else None,
            (out[0] if out else b"").decode(errors="replace"),
            (err[0] if err else b"").decode(errors="replace"))


# ---------------------------------------------------------------- memory

def vm_rss_kb(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def pss_kb(pid):
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def settle(sid, timeout=15.0):
    """Wait until a session's process count stops changing (exiting workers of an earlier run)."""
    deadline = time.monotonic() + timeout
    last = -1
    while time.monotonic() < deadline:
        n = len(Procs.members(sid))
        if n == last:
            return
        last = n
        time.sleep(0.5)


def account_messages(maildir):
    """Message files in a Maildir and all its Maildir++ folders."""
    total = count_files(maildir)
    try:
        for e in os.scandir(maildir):
            if e.name.startswith(".") and e.is_dir() and e.name not in (".", ".."):
                total += count_files(e.path)
    except FileNotFoundError:
        pass
    return total


def session_mem_kb(sid):
    """(sum of VmRSS, sum of PSS, process count) over a session's processes."""
    pids = Procs.members(sid)
    return sum(vm_rss_kb(p) for p in pids), sum(pss_kb(p) for p in pids), len(pids)


# ---------------------------------------------------------------- generated mail

BODY_WORDS = ("lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor "
              "incididunt ut labore et dolore magna aliqua enim ad minim veniam quis nostrud "
              "exercitation ullamco laboris nisi aliquip ex ea commodo consequat").split()


def gen_message(i):
    """Message i of the generated set (LF line ends, 0.6–3 KB, deterministic)."""
    x = (i * 2654435761) & 0xffffffff
    lines = [
        f"From: Sender {x % 997} <sender{x % 997}@example.org>",
        f"To: mox@localhost",
        f"Subject: generated message {i} about {BODY_WORDS[x % len(BODY_WORDS)]}",
        f"Date: Mon, 01 Jan 2024 {(i // 3600) % 24:02d}:{(i // 60) % 60:02d}:{i % 60:02d} +0000",
        f"Message-ID: <gen{i}@example.org>",
        "MIME-Version: 1.0",
        "Content-Type: text/plain; charset=us-ascii",
        "",
    ]
    nlines = 8 + x % 40
    for k in range(nlines):
        w = [BODY_WORDS[(x >> (k % 24) ^ (k * 7 + j)) % len(BODY_WORDS)] for j in range(9)]
        lines.append(" ".join(w).capitalize() + ".")
    return ("\n".join(lines) + "\n").encode()


def write_mbox(path, n):
    with open(path, "wb", buffering=1 << 20) as f:
        for i in range(n):
            f.write(b"From sender@example.org Mon Jan  1 00:00:00 2024\n")
            f.write(gen_message(i))
            f.write(b"\n")


def write_maildir_cur(folder, n):
    """Dovecot's copy of the generated set, straight into cur/ (every third message seen)."""
    for sub in ("cur", "new", "tmp"):
        os.makedirs(os.path.join(folder, sub), exist_ok=True)
    cur = os.path.join(folder, "cur")
    for i in range(n):
        data = gen_message(i)
        flags = "S" if i % 3 == 0 else ""
        name = f"{1700000000 + i}.M{i}P1.bench,S={len(data)}:2,{flags}"
        fd = os.open(os.path.join(cur, name), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.write(fd, data)
        os.close(fd)


def chown_tree(path, uid, gid):
    os.chown(path, uid, gid)
    for dirpath, dirnames, filenames in os.walk(path):
        for name in dirnames + filenames:
            os.lchown(os.path.join(dirpath, name), uid, gid)


ROUNDS_SENDER = "bench-rounds@localhost"
ROUNDS_MAILBOX = "Rounds"


def count_files(maildir, subdirs=("new", "cur")):
    n = 0
    for sub in subdirs:
        try:
            with os.scandir(os.path.join(maildir, sub)) as it:
                n += sum(1 for e in it if not e.name.startswith("."))
        except FileNotFoundError:
            pass
    return n


def dir_size(path, match=None):
    total = 0
    for dirpath, _, filenames in os.walk(path):
        for name in filenames:
            if match is None or match(name):
                try:
                    total += os.lstat(os.path.join(dirpath, name)).st_size
                except OSError:
                    pass
    return total


# ---------------------------------------------------------------- part 1: disk

def fsync_limit(n=2000, size=4096, writers=1, keep_in=None):
    """Messages/s for write+fsync+link+fsync(dir) in a loop, `writers` threads. With keep_in
    the files stay (in a new directory under it) for the caller to remove later: see
    Bench.scratch."""
    data = os.urandom(size)
    with contextlib.ExitStack() as stack:
        if keep_in is not None:
            d = tempfile.mkdtemp(prefix="disk", dir=keep_in)
        else:
            d = stack.enter_context(tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DIR")))
        tmp, new = os.path.join(d, "tmp"), os.path.join(d, "new")
        os.mkdir(tmp)
        os.mkdir(new)

        def writer(w, count):
            dfd = os.open(new, os.O_RDONLY | os.O_DIRECTORY)
            for i in range(count):
                name = f"{w}.{i}"
                p = os.path.join(tmp, name)
                fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                os.write(fd, data)
                os.fsync(fd)
                os.close(fd)
                os.link(p, os.path.join(new, name))
                os.fsync(dfd)
                os.unlink(p)
            os.close(dfd)

        per = max(1, n // writers)
        threads = [threading.Thread(target=writer, args=(w, per)) for w in range(writers)]
        start = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.monotonic() - start
    return per * writers / elapsed


# ---------------------------------------------------------------- part 5: delivery through the store

DELIVER_GOAL = 0.90  # share of the disk's 1-writer limit a sequential delivery should reach

DELIVER_RE = re.compile(r"^deliver (\S+) (\d+) msgs ([\d.]+) msg/s(?: batches (\d+) avg ([\d.]+))?$")
DELIVER_SPLIT_RE = re.compile(r"^deliver seq split ms/msg (.*)$")
INDEX_RE = re.compile(r"^index (\S+) (\d+) msgs (\d+) bytes ([\d.]+) bytes/msg$")
OPEN_RE = re.compile(r"^open (\S+) (\d+) msgs ([\d.]+) ms$")


def parse_deliverbench(out):
    """deliverbench's stdout as a dict: raw (list of msg/s), raw_seq (the raw loop run in rounds
    between the seq mode's rounds), modes {name: (msgs, msg/s, avg batch or None)},
    split (text), index [(how, msgs, bytes/msg)], open {kind: (msgs, ms)}."""
    res = {"raw": [], "raw_seq": None, "modes": {}, "split": None, "index": [], "open": {}}
    for line in out.splitlines():
        line = line.strip()
        m = DELIVER_RE.match(line)
        if m:
            name, rate = m.group(1), float(m.group(3))
            if name == "raw":
                res["raw"].append(rate)
            elif name == "raw-seq":
                res["raw_seq"] = rate
            else:
                avg = float(m.group(5)) if m.group(5) else None
                res["modes"][name] = (int(m.group(2)), rate, avg)
            continue
        m = DELIVER_SPLIT_RE.match(line)
        if m:
            res["split"] = m.group(1)
            continue
        m = INDEX_RE.match(line)
        if m:
            res["index"].append((m.group(1), int(m.group(2)), float(m.group(4))))
            continue
        m = OPEN_RE.match(line)
        if m:
            res["open"][m.group(1)] = (int(m.group(2)), float(m.group(3)))
    return res


# ---------------------------------------------------------------- servers

def proto_exchange(port, steps, timeout=5.0):
    """Talk line by line: steps is [(send or None, expected reply prefix)]. True if all match."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            f = s.makefile("rb")
            for send, expect in steps:
                if send is not None:
                    s.sendall(send.encode() + b"\r\n")
                while True:
                    line = f.readline(8192).decode(errors="replace")
                    if not line:
                        return False, "connection closed"
                    # Multi-line SMTP replies and untagged IMAP responses come before the one we wait for.
                    if re.match(r"^\d{3}-", line) or (line.startswith("* ") and not expect.startswith("*")):
                        continue
                    break
                if not line.startswith(expect):
                    return False, line.strip()[:120]
            return True, ""
    except OSError as e:
        return False, str(e)


def imap_login_works(port):
    return proto_exchange(port, [(None, "* OK"), (f'a LOGIN "{USER}" "{PASSWORD}"', "a OK"),
                                 ("b LOGOUT", "* BYE")])


def smtp_rcpt_works(port, rcpt):
    return proto_exchange(port, [(None, "220"), ("EHLO bench.example", "250"),
                                 ("MAIL FROM:<bench@localhost>", "250"), (f"RCPT TO:<{rcpt}>", "250"),
                                 ("RSET", "250"), ("QUIT", "221")])


class Mox:
    """mox localserve in a temporary directory, every port moved to a free one."""

    def __init__(self, binary, base):
        self.bin = binary
        self.dir = os.path.join(base, "mox")
        os.makedirs(self.dir)
        self.config = os.path.join(self.dir, "mox.yaml")
        self.ports = {}
        self.proc = None
        self.log = None
        self.maildir = os.path.join(self.dir, "data", "accounts", "mox", "Maildir")
        self.index = os.path.join(self.dir, "data", "accounts", "mox", "index.tcb")

    def init(self):
        p = subprocess.run([self.bin, "localserve", "-dir", self.dir, "-initonly"],
                           capture_output=True, text=True, timeout=60)
        if p.returncode != 0:
            raise RuntimeError(f"mox localserve -initonly: {p.stderr.strip()[:300]}")
        self.reassign_ports()
        # The SMTP part's repeated runs (sender ROUNDS_SENDER) go to their own mailbox, so
        # INBOX has the same 11,000 messages as with one run when the idle IMAP part measures.
        path = os.path.join(self.dir, "domains.yaml")
        text = open(path).read()
        new = text.replace("      mox@localhost: {}\n",
                           "      mox@localhost:\n        Rulesets:\n"
                           f"          - SMTPMailFromRegexp: '^{re.escape(ROUNDS_SENDER)}$'\n"
                           f"            Mailbox: {ROUNDS_MAILBOX}\n")
        if new == text:
            raise RuntimeError("mox localserve -initonly: domains.yaml has no mox@localhost destination")
        open(path, "w").write(new)

    def reassign_ports(self):
        text = open(self.config).read()
        for svc in MOX_PORTS:
            new = free_port()
            text, n = re.subn(rf"(\n    {svc}:\n      Enabled: true\n      Port: )\d+\n", rf"\g<1>{new}\n", text)
            if n == 1:
                self.ports[svc] = new
        open(self.config, "w").write(text)

    def start(self):
        for attempt in range(3):
            self.log = open(os.path.join(self.dir, "server.log"), "a")
            self.proc = PROCS.popen([self.bin, "localserve", "-dir", self.dir], stdout=self.log,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            if all(wait_port(p, proc=self.proc) for p in self.ports.values()):
                return True
            self.stop()
            text = open(os.path.join(self.dir, "server.log"), errors="replace").read()
            if "Address already in use" in text and attempt < 2:
                self.reassign_ports()
                continue
            raise RuntimeError("mox did not start: " + text[-600:])
        return False

    def stop(self):
        if self.proc is not None:
            PROCS.end(self.proc.pid, grace=30)
            self.proc = None
        if self.log:
            self.log.close()
            self.log = None

    def cmd(self, *args, timeout=60):
        return subprocess.run([self.bin, "-config", self.config, *args], capture_output=True,
                              text=True, timeout=timeout)


class Dovecot:
    """Debian's Dovecot with its own config, state and ports in a temporary directory.

    Runs as root (the master), the user's mail processes as nobody (mail_uid through the
    static userdb), Maildir in <dir>/home/mox/Maildir, plain LOGIN allowed on loopback."""

    def __init__(self, base):
        self.dir = os.path.join(base, "dv")
        os.makedirs(self.dir)
        os.chmod(self.dir, 0o755)
        self.conf = os.path.join(self.dir, "dovecot.conf")
        self.home = os.path.join(self.dir, "home", "mox")
        self.maildir = os.path.join(self.home, "Maildir")
        self.imap_port = self.lmtp_port = None
        self.proc = None
        self.sid = None

    def write_config(self):
        d = self.dir
        self.imap_port, self.lmtp_port = free_port(), free_port()
        with open(os.path.join(d, "passwd"), "w") as f:
            f.write(f"{USER}:{{PLAIN}}{PASSWORD}::::::\n")
        os.makedirs(self.maildir, exist_ok=True)
        os.chmod(os.path.join(d, "home"), 0o755)
        chown_tree(self.home, MAIL_UID, MAIL_GID)
        with open(self.conf, "w") as f:
            f.write(f"""# make bench: a private instance
instance_name = mbench{os.getpid()}
base_dir = {d}/run
state_dir = {d}/state
log_path = {d}/dovecot.log
protocols = imap lmtp
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
mail_location = maildir:~/Maildir
first_valid_uid = 1
passdb {{
  driver = passwd-file
  args = scheme=PLAIN {d}/passwd
}}
userdb {{
  driver = static
  args = uid={MAIL_UID} gid={MAIL_GID} home={d}/home/%n
}}
default_vsz_limit = 1G
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {self.imap_port}
  }}
  inet_listener imaps {{
    port = 0
  }}
  service_count = 0
  process_min_avail = 2
  process_limit = 4
  client_limit = 20000
}}
service imap {{
  process_limit = 20000
}}
service lmtp {{
  inet_listener lmtp {{
    address = 127.0.0.1
    port = {self.lmtp_port}
  }}
}}
service auth {{
  client_limit = 100000
}}
service anvil {{
  client_limit = 100000
}}
protocol imap {{
  mail_max_userip_connections = 30000
}}
""")

    def start(self):
        if self.imap_port is None:
            self.write_config()
        self.out = open(os.path.join(self.dir, "dovecot.out"), "a")
        self.proc = PROCS.popen(["/usr/sbin/dovecot", "-c", self.conf, "-F"], stdout=self.out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.sid = self.proc.pid
        if not (wait_port(self.imap_port, proc=self.proc) and wait_port(self.lmtp_port, proc=self.proc)):
            raise RuntimeError("dovecot did not start: " + self.logtail())

    def logtail(self):
        text = ""
        for name in ("dovecot.out", "dovecot.log"):
            try:
                text += open(os.path.join(self.dir, name), errors="replace").read()[-800:]
            except OSError:
                pass
        return text

    def stop(self):
        if self.proc is not None:
            PROCS.end(self.sid, grace=20)
            self.proc = None
            self.out.close()

    def doveadm(self, *args, timeout=600):
        return run_timed(["/usr/bin/doveadm", "-c", self.conf, *args], timeout)


class Postfix:
    """A private Postfix instance (postfix -c <dir>): smtpd on a free loopback port, virtual(8)
    delivering bench@bench.test to <dir>/vmail/bench/ (Maildir) as nobody."""

    def __init__(self, base):
        self.dir = os.path.join(base, "pf")
        os.makedirs(self.dir)
        os.chmod(self.dir, 0o755)
        self.conf = os.path.join(self.dir, "conf")
        self.queue = os.path.join(self.dir, "queue")
        self.vmail = os.path.join(self.dir, "vmail")
        self.maildir = os.path.join(self.vmail, "bench")
        self.port = None
        self.sid = None

    def write_config(self):
        d = self.dir
        self.port = free_port()
        os.makedirs(self.conf)
        os.makedirs(self.queue)
        os.makedirs(os.path.join(d, "data"))
        shutil.chown(os.path.join(d, "data"), "postfix", "postfix")
        os.makedirs(self.vmail)
        chown_tree(self.vmail, MAIL_UID, MAIL_GID)
        with open(os.path.join(d, "vmailbox"), "w") as f:
            f.write("bench@bench.test bench/\n")
        with open(os.path.join(self.conf, "main.cf"), "w") as f:
            f.write(f"""# make bench: a private instance
compatibility_level = 3.6
queue_directory = {self.queue}
data_directory = {d}/data
command_directory = /usr/sbin
daemon_directory = /usr/lib/postfix/sbin
shlib_directory = /usr/lib/postfix
meta_directory = /etc/postfix
mail_owner = postfix
setgid_group = postdrop
syslog_name = postfix-bench
maillog_file = {d}/postfix.log
maillog_file_prefixes = {d}
myhostname = bench.localdomain
mydomain = localdomain
myorigin = $myhostname
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject
alias_maps =
alias_database =
biff = no
smtputf8_enable = no
virtual_mailbox_domains = bench.test
virtual_mailbox_base = {self.vmail}
virtual_mailbox_maps = texthash:{d}/vmailbox
virtual_uid_maps = static:{MAIL_UID}
virtual_gid_maps = static:{MAIL_GID}
virtual_minimum_uid = 100
""")
        with open(os.path.join(self.conf, "master.cf"), "w") as f:
            f.write(f"""# service type private unpriv chroot wakeup maxproc command
127.0.0.1:{self.port} inet n - n - - smtpd
pickup    unix  n - n 60 1 pickup
cleanup   unix  n - n - 0 cleanup
qmgr      unix  n - n 300 1 qmgr
tlsmgr    unix  - - n 1000? 1 tlsmgr
rewrite   unix  - - n - - trivial-rewrite
bounce    unix  - - n - 0 bounce
defer     unix  - - n - 0 bounce
trace     unix  - - n - 0 bounce
verify    unix  - - n - 1 verify
flush     unix  n - n 1000? 0 flush
proxymap  unix  - - n - - proxymap
smtp      unix  - - n - - smtp
relay     unix  - - n - - smtp
showq     unix  n - n - - showq
error     unix  - - n - - error
retry     unix  - - n - - error
discard   unix  - - n - - discard
local     unix  - n n - - local
virtual   unix  - n n - - virtual
lmtp      unix  - - n - - lmtp
anvil     unix  - - n - 1 anvil
scache    unix  - - n - 1 scache
postlog   unix-dgram n - n - 1 postlogd
""")

    def start(self):
        if self.port is None:
            self.write_config()
        p = subprocess.run(["/usr/sbin/postfix", "-c", self.conf, "start"], capture_output=True,
                           text=True, timeout=60, start_new_session=True)
        pidfile = os.path.join(self.queue, "pid", "master.pid")
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not os.path.exists(pidfile):
            time.sleep(0.05)
        try:
            pid = int(open(pidfile).read().split()[0])
            # The master runs in its own session (it calls setsid); end that session later.
            with open(f"/proc/{pid}/stat") as f:
                st = f.read()
            self.sid = int(st[st.rindex(")") + 2:].split()[3])
            PROCS.add_session(self.sid)
        except (OSError, ValueError, IndexError):
            raise RuntimeError(f"postfix did not start (rc {p.returncode}): {p.stderr.strip()[-600:]}")
        if not wait_port(self.port):
            raise RuntimeError("postfix smtpd port did not open: " + self.logtail())

    def logtail(self):
        try:
            return open(os.path.join(self.dir, "postfix.log"), errors="replace").read()[-800:]
        except OSError:
            return ""

    def stop(self):
        if self.sid is not None:
            subprocess.run(["/usr/sbin/postfix", "-c", self.conf, "stop"], capture_output=True,
                           timeout=30)
            PROCS.end(self.sid, grace=10)
            self.sid = None


# ---------------------------------------------------------------- the bench

class Bench:
    def __init__(self, args):
        self.a = args
        self.imapload = args.imapload
        self.disk1 = self.disk4 = None
        self.deliver = None
        self.base = tempfile.mkdtemp(prefix="mb", dir=os.environ.get("BENCH_DIR"))
        os.chmod(self.base, 0o755)
        self.mox = None
        self.dv = None
        self.pf = None
        self.mox_imap = False
        self.mox_smtp = False
        self.summary = []  # (what, mox, peer, peer name, unit)

    def row(self, what, mox, peer, peername, unit):
        self.summary.append((what, mox, peer, peername, unit))

    def load(self, mode, port, *extra, timeout=None):
        argv = [self.imapload, mode, "-p", str(port), "-u", USER, "-w", PASSWORD, *extra]
        rc, el, _, out, err = run_timed(argv, timeout or 600)
        if rc != 0:
            raise RuntimeError(f"imapload {mode} rc {rc}: {err.strip()[-400:]}")
        return json.loads(out.strip().splitlines()[-1])

    # -- part 1
    def part_disk(self):
        say("== 1. Disk: durable delivery limit (write 4 KB + fsync + link + fsync dir)")
        n = self.a.disk_n
        self.disk1 = fsync_limit(n=n, writers=1, keep_in=self.scratch())
        self.disk4 = fsync_limit(n=n, writers=4, keep_in=self.scratch())
        say(f"  1 writer:  {self.disk1:.0f} msg/s")
        say(f"  4 writers: {self.disk4:.0f} msg/s")

    # -- servers
    def scratch(self):
        """Where the bench's own scratch files stay until the end. On ext4 without a journal
        (this machine) an inode freed in the last 60 s (360 s while its inode block is
        dirty) is skipped by the allocator, one check each, so removing tens of thousands
        of scratch files made every file creation of the next server measured slow:
        measured, mox's spool thread 14 -> 180 us a message (perf: recently_deleted in
        find_inode_bit), whichever server came first after the removal."""
        d = os.path.join(self.base, "scratch")
        os.makedirs(d, exist_ok=True)
        return d

    def start_servers(self):
        say("== servers")
        try:
            self.dv = Dovecot(self.base)
            self.dv.start()
            say(f"  dovecot: imap {self.dv.imap_port}, lmtp {self.dv.lmtp_port}")
        except Exception as e:
            say(f"  dovecot: not available: {e}")
            self.dv = None
        try:
            self.pf = Postfix(self.base)
            self.pf.start()
            say(f"  postfix: smtp {self.pf.port}, delivering to {self.pf.maildir}")
        except Exception as e:
            say(f"  postfix: not available: {e}")
            self.pf = None
        try:
            self.mox = Mox(self.a.mox, self.base)
            self.mox.init()
            self.mox.start()
            say(f"  mox: imap {self.mox.ports.get('IMAP')}, smtp {self.mox.ports.get('SMTP')}")
        except Exception as e:
            say(f"  mox: not available: {e}")
            self.mox = None
        if self.mox and "IMAP" in self.mox.ports:
            self.mox_imap, why = imap_login_works(self.mox.ports["IMAP"])
            if not self.mox_imap:
                self.mox_imap_why = f"mox IMAP LOGIN does not work yet ({why})"
        else:
            self.mox_imap_why = "mox localserve is not running"
        if self.mox and "SMTP" in self.mox.ports:
            self.mox_smtp, why = smtp_rcpt_works(self.mox.ports["SMTP"], USER)
            if not self.mox_smtp:
                self.mox_smtp_why = f"mox SMTP does not accept mail yet ({why})"
        else:
            self.mox_smtp_why = "mox localserve is not running"

    # -- part 2
    def part_imap(self):
        say("== 2. IMAP")
        a = self.a
        targets = []
        if self.dv:
            targets.append(("dovecot", self.dv.imap_port))
        if self.mox_imap:
            targets.append(("mox", self.mox.ports["IMAP"]))
        else:
            skipped("mox IMAP", self.mox_imap_why)
        if not targets:
            return
        say(f"  a) stress mix, INBOX pre-populated with {a.prepop} messages of 4 KB (APPEND, 4 connections), "
            f"{a.stress_seconds:g} s per run")
        for name, port in targets:
            r = self.load("append", port, "-c", "4", "-n", str(a.prepop))
            say(f"    {name}: populated {r['appended']} in {r['seconds']:.1f} s ({r['appended'] / r['seconds']:.0f} appends/s)")
        for clients in a.stress_clients:
            res = {}
            for name, port in targets:
                try:
                    r = self.load("stress", port, "-c", str(clients), "-s", str(a.stress_seconds),
                                  timeout=a.stress_seconds + 120)
                except Exception as e:
                    say(f"    {name}, {clients} clients: failed: {e}")
                    continue
                res[name] = r["ops_per_s"]
                lat = ", ".join(f"{k} {v['avg_ms']:.1f}" for k, v in r["per_cmd"].items())
                say(f"    {name}, {clients} clients: {r['ops_per_s']:.0f} ops/s ({r['cycles']} sessions, "
                    f"{r['errors']} NO/BAD, {r['conn_errors']} connect errors; avg ms: {lat})")
            self.row(f"IMAP stress {clients} clients (ops/s)", res.get("mox"), res.get("dovecot"), "dovecot", "ops/s")
            if "mox" in res and "dovecot" in res:
                say(f"    ratio mox/dovecot at {clients} clients: {ratio(res['mox'], res['dovecot'])}")

    def big_mailbox(self):
        """Part 2b and part 4: the large generated mailbox on both servers."""
        a = self.a
        n = a.big
        say(f"== 2b/4. Large mailbox: {n} generated messages")
        mboxdir = os.path.join(self.base, "mbox")
        os.makedirs(mboxdir)
        os.chmod(mboxdir, 0o777)
        mbox = os.path.join(mboxdir, "big.mbox")
        t0 = time.monotonic()
        write_mbox(mbox, n)
        os.chmod(mbox, 0o644)
        say(f"  generated mbox: {os.path.getsize(mbox) / 1e6:.0f} MB in {time.monotonic() - t0:.1f} s")
        dv_fetch = mox_fetch = None
        dv_import = mox_import = None
        dv_idx = mox_idx = None
        if self.dv:
            try:
                dv_fetch, dv_import, dv_idx = self.big_dovecot(mbox, n)
            except Exception as e:
                say(f"  dovecot large mailbox: failed: {e}")
        mox_fetch, mox_import, mox_idx = self.big_mox(mbox, n)
        if dv_fetch or mox_fetch:
            for k, label in (("cold", "first"), ("warm", "second")):
                m = mox_fetch[k] if mox_fetch else None
                d = dv_fetch[k] if dv_fetch else None
                self.row(f"SELECT+FETCH 1:* {n} msgs, {label} (s)", m, d, "dovecot", "s")
        if dv_import or mox_import:
            self.row(f"import {n}-message mbox (msg/s)", mox_import, dv_import, "doveadm", "msg/s")
        if dv_idx or mox_idx:
            self.row("index bytes per message", mox_idx, dv_idx, "dovecot", "B")

    def fetchall(self, port, mailbox):
        r = self.load("fetchall", port, "-m", mailbox, timeout=600)
        return r["select_s"], r["fetch_s"], r["fetched"]

    def big_dovecot(self, mbox, n):
        folder = os.path.join(self.dv.maildir, ".Big")
        t0 = time.monotonic()
        write_maildir_cur(folder, n)
        chown_tree(folder, MAIL_UID, MAIL_GID)
        say(f"  dovecot: wrote {n} files into Maildir/.Big/cur in {time.monotonic() - t0:.1f} s")
        # Restart so no process has anything of the mailbox in memory.
        self.dv.stop()
        self.dv.start()
        res = {}
        for k in ("cold", "warm"):
            sel, fet, got = self.fetchall(self.dv.imap_port, "Big")
            res[k] = sel + fet
            say(f"  dovecot SELECT+FETCH 1:* (UID FLAGS), {k}: select {sel:.3f} s + fetch {fet:.3f} s ({got} FETCH lines)")
        idx = dir_size(folder, lambda nm: nm.startswith("dovecot"))
        say(f"  dovecot index of Big (dovecot.index*, dovecot-uidlist): {idx / n:.0f} bytes/message")
        # Import: the same messages from the mbox, into a new folder.
        rc, el, maxrss, out, err = self.dv.doveadm(
            "import", "-u", USER, f"mbox:{os.path.dirname(mbox)}:INBOX={mbox}:INDEX=MEMORY", "Imported", "all",
            timeout=self.a.import_timeout)
        got = count_files(os.path.join(self.dv.maildir, ".Imported.INBOX"))
        rate = None
        if rc == 0 and got == n:
            rate = n / el
            say(f"  doveadm import: {n} messages in {el:.1f} s = {rate:.0f} msg/s, peak RSS {maxrss / 1024:.0f} MB")
        else:
            say(f"  doveadm import: failed (rc {rc}, {got}/{n} messages): {err.strip()[-300:]}")
        return res, rate, idx / n

    def big_mox(self, mbox, n):
        if self.mox is None:
            skipped("mox large mailbox and import", "mox localserve is not running")
            return None, None, None
        h = self.mox.cmd("help", "import")
        if h.returncode != 0:
            first = ((h.stderr or h.stdout).strip().splitlines() or [""])[0]
            skipped("mox import, large-mailbox FETCH, index size, account open",
                    f"`mox help import` fails ({first[:100]})")
            return None, None, None
        # The import writes into a stopped server's data directory (offline command);
        # if that is refused, try with the server running (through its control socket).
        argv = [self.a.mox, "-config", self.mox.config, "import", "mbox", "mox", "Big", mbox]
        self.mox.stop()
        rc, el, maxrss, out, err = run_timed(argv, self.a.import_timeout)
        mode = "server stopped"
        if rc != 0:
            say(f"  mox import with the server stopped failed (rc {rc}): {err.strip()[-200:]}; retrying with it running")
            self.mox.start()
            hwm0 = vm_rss_kb(self.mox.proc.pid)
            rc, el, maxrss, out, err = run_timed(argv, self.a.import_timeout)
            mode = f"server running, its RSS {hwm0 / 1024:.0f} -> {vm_rss_kb(self.mox.proc.pid) / 1024:.0f} MB"
            self.mox.stop()
        rate = None
        if rc == 0:
            rate = n / el
            say(f"  mox import ({mode}): {n} messages in {el:.1f} s = {rate:.0f} msg/s, "
                f"peak RSS of the import command {maxrss / 1024:.0f} MB")
        else:
            say(f"  mox import: failed (rc {rc}): {err.strip()[-300:]}")
        idx = None
        if os.path.exists(self.mox.index):
            total = account_messages(self.mox.maildir)
            if total:
                idx = os.path.getsize(self.mox.index) / total
                say(f"  mox index.tcb: {os.path.getsize(self.mox.index) / 1e6:.1f} MB, {idx:.0f} bytes/message "
                    f"(whole account index / {total} message files in the account)")
        if rc == 0 and self.mox.cmd("help", "verifydata").returncode == 0:
            # Offline consistency check: reads every index record and lists every Maildir folder.
            vrc, vel, vrss, vout, verr = run_timed(
                [self.a.mox, "-config", self.mox.config, "verifydata", os.path.join(self.mox.dir, "data")],
                self.a.import_timeout)
            if vrc == 0:
                say(f"  mox verifydata of the data directory (index vs Maildir, {n}+ messages): {vel:.2f} s, "
                    f"peak RSS {vrss / 1024:.0f} MB")
                self.row(f"verifydata, {n}-message account (s)", vel, None, "-", "s")
            else:
                say(f"  mox verifydata: rc {vrc}: {(verr or vout).strip()[-200:]}")
        # Time to open the account: restart, then the first LOGIN and SELECT of the big mailbox.
        t0 = time.monotonic()
        try:
            self.mox.start()
        except Exception as e:
            say(f"  mox did not restart after the import: {e}")
            self.mox = None
            return None, rate, idx
        up = time.monotonic() - t0
        say(f"  mox restart with the imported account: all ports listening after {up:.2f} s")
        res = None
        if self.mox_imap and rc == 0:
            res = {}
            for k in ("cold", "warm"):
                try:
                    sel, fet, got = self.fetchall(self.mox.ports["IMAP"], "Big")
                except Exception as e:
                    say(f"  mox SELECT+FETCH Big: failed: {e}")
                    return None, rate, idx
                if k == "cold":
                    say(f"  mox account open: first LOGIN+SELECT of the {n}-message mailbox after the restart {sel:.3f} s")
                res[k] = sel + fet
                say(f"  mox SELECT+FETCH 1:* (UID FLAGS), {k}: select {sel:.3f} s + fetch {fet:.3f} s ({got} FETCH lines)")
        elif not self.mox_imap:
            skipped("mox large-mailbox FETCH", self.mox_imap_why)
        return res, rate, idx

    def part_idle(self):
        a = self.a
        say("== 2c. Idle IMAP connections (LOGIN, SELECT INBOX, IDLE): server memory per connection")
        if self.dv:
            self.idle_one("dovecot", self.dv.imap_port, a.dovecot_idle, dovecot=True)
        if self.mox_imap:
            say(f"  mox INBOX: {count_files(self.mox.maildir)} messages")
            self.idle_one("mox", self.mox.ports["IMAP"], a.idle)
        else:
            skipped("mox idle IMAP", self.mox_imap_why)

    def idle_one(self, name, port, n, dovecot=False):
        def mem():
            if dovecot:
                settle(self.dv.sid)
                return session_mem_kb(self.dv.sid)
            rss = vm_rss_kb(self.mox.proc.pid)
            return rss, rss, 1
        before = mem()
        argv = [self.imapload, "idle", "-p", str(port), "-u", USER, "-w", PASSWORD, "-c", str(n),
                "-s", str(self.a.idle_timeout), "-i", "64"]
        p = PROCS.popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            line = p.stdout.readline().decode()
            if not line:
                say(f"  {name}: imapload idle failed: {p.stderr.read().decode()[-300:]}")
                return
            r = json.loads(line)
            time.sleep(1.0)
            after = mem()
        finally:
            try:
                p.stdin.close()
            except OSError:
                pass
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pass
            PROCS.end(p.pid, grace=2)
        ready = r["ready"]
        if ready == 0:
            say(f"  {name}: no connection reached IDLE ({r['failed']} failed)")
            return
        per_rss = (after[0] - before[0]) / ready
        per_pss = (after[1] - before[1]) / ready
        extra = f", {after[2] - before[2]} more processes; PSS {per_pss:.0f} KB/connection" if dovecot else ""
        idle_how = "IDLE" if not r.get("idle_refused") else f"{r['idle_refused']} refused IDLE, held idle after SELECT"
        say(f"  {name}: {ready} idle connections ({idle_how}; {r['failed']} failed, set up in {r['seconds']:.1f} s): "
            f"RSS {before[0] / 1024:.0f} -> {after[0] / 1024:.0f} MB = {per_rss:.1f} KB/connection{extra}")
        self.idle_res = getattr(self, "idle_res", {})
        self.idle_res[name] = per_pss if dovecot else per_rss

    # -- part 3
    def smtp_run(self, name, port, rcpt, maildir, n, sessions, lmtp=False, sender="bench@localhost"):
        # Every server starts from the same disk state: what earlier parts (or the previous
        # server's run) left to write back would otherwise slow down the fdatasyncs of
        # whichever runs next.
        os.sync()
        time.sleep(1.0)
        base = count_files(maildir)
        # Each message in its own session (smtp-source's default: connect, HELO, MAIL,
        # RCPT, DATA, QUIT), at most `sessions` at once; -C only retries a connect that
        # gets a reset from a full listen queue.
        argv = ["/usr/sbin/smtp-source", "-s", str(sessions), "-m", str(n), "-l", "4096",
                "-C", "100",
                "-f", sender, "-t", rcpt, "-M", "bench.example"]
        if lmtp:
            argv.insert(1, "-L")
        argv.append(f"127.0.0.1:{port}")
        t0 = time.monotonic()
        p = PROCS.popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
        deadline = t0 + self.a.smtp_timeout
        sent_at = None
        got = 0
        last_got, last_change = -1, t0
        while time.monotonic() < deadline:
            # Listing a folder of thousands of names every 10 ms costs a good part of a
            # core, taken from the server on this 2-core machine: while the client still
            # sends, only wait for it. The time counted is still until the last message
            # is on disk (a server may answer 250 before it delivers: Postfix).
            if sent_at is None and p.poll() is None:
                try:
                    p.wait(timeout=0.1)
                except subprocess.TimeoutExpired:
                    pass
                if p.poll() is None:
                    continue
            got = count_files(maildir) - base
            now = time.monotonic()
            if got != last_got:
                last_got, last_change = got, now
            if sent_at is None and p.poll() is not None:
                sent_at = now - t0
                if p.returncode != 0:
                    break
            if got >= n:
                break
            if sent_at is not None and now - last_change > 15:
                break  # the client is done and nothing more arrives: stored elsewhere or lost
            time.sleep(0.01)
        el = time.monotonic() - t0
        if sent_at is None:
            got = count_files(maildir) - base  # the client never finished: count what arrived
        err = ""
        if p.poll() is None:
            PROCS.end(p.pid, grace=2)
        else:
            err = p.stderr.read().decode(errors="replace")
            PROCS.end(p.pid, grace=1)
        if got < n:
            say(f"    {name}, {sessions} conn: only {got}/{n} messages on disk after {el:.1f} s "
                f"(smtp-source rc {p.returncode}): {err.strip()[-200:]}")
            return None
        rate = n / el
        say(f"    {name}, {sessions} conn: {n} messages on disk in {el:.2f} s = {rate:.0f} msg/s"
            f" (client done after {sent_at if sent_at is not None else el:.2f} s)")
        return rate

    def part_smtp(self):
        a = self.a
        say(f"== 3. SMTP/LMTP delivery: smtp-source, {a.smtp_n} messages of 4 KB (one session each), "
            "timed until all are in the Maildir")
        targets = []
        if self.mox_smtp:
            targets.append(("mox smtp", self.mox.ports["SMTP"], USER, self.mox.maildir, False))
        else:
            skipped("mox SMTP", self.mox_smtp_why)
        if self.dv:
            targets.append(("dovecot lmtp", self.dv.lmtp_port, USER, self.dv.maildir, True))
        if self.pf:
            targets.append(("postfix", self.pf.port, "bench@bench.test", self.pf.maildir, False))
        else:
            skipped("postfix", "its private instance did not start")
        for sessions in a.smtp_conns:
            # Each server runs smtp_rounds times, the order reversed every other round
            # (mox, dovecot, postfix, postfix, dovecot, mox), and its best run counts. Whoever
            # runs first after a burst of file removals (the previous part's, or an earlier
            # bench's cleanup) pays for them: ext4 without a journal skips every inode freed in
            # the last minutes when it allocates one. Alternating gives no server that place
            # every time.
            runs = {}
            for r in range(a.smtp_rounds):
                order = targets if r % 2 == 0 else list(reversed(targets))
                for name, port, rcpt, md, lmtp in order:
                    sender = "bench@localhost"
                    if r > 0 and name == "mox smtp":
                        sender, md = ROUNDS_SENDER, os.path.join(md, "." + ROUNDS_MAILBOX)
                    runs.setdefault(name, []).append(
                        self.smtp_run(name, port, rcpt, md, a.smtp_n, sessions, lmtp, sender))
            res = {}
            for name, rates in runs.items():
                ok = [v for v in rates if v]
                res[name] = max(ok) if len(ok) == len(rates) else None
                if len(rates) > 1:
                    say(f"    {name}, {sessions} conn: runs " + ", ".join(fmt(v) for v in rates) +
                        (f"; best {fmt(res[name])}" if res[name] else "; a run failed, no figure"))
            self.delivery = getattr(self, "delivery", {})
            self.delivery[sessions] = res
            m = res.get("mox smtp")
            for peer in ("dovecot lmtp", "postfix"):
                if peer in res:
                    self.row(f"delivery {sessions} conn (msg/s)", m, res[peer], peer, "msg/s")
            disk = self.disk1 if sessions == 1 else self.disk4
            line = ", ".join(f"{k} {fmt(v)} ({ratio(v, disk)} of disk)" for k, v in res.items() if v)
            say(f"    vs disk limit ({'1 writer' if sessions == 1 else '4 writers'} {disk:.0f} msg/s): {line}")
        if self.mox_smtp:
            self.smtp_idle()

    def smtp_idle(self):
        n = self.a.smtp_idle
        port = self.mox.ports["SMTP"]
        pid = self.mox.proc.pid
        before = vm_rss_kb(pid)
        socks = []
        try:
            for _ in range(n):
                s = socket.create_connection(("127.0.0.1", port), timeout=10)
                socks.append(s)
            got = 0
            for s in socks:
                try:
                    if s.recv(512).startswith(b"220"):
                        got += 1
                except OSError:
                    pass
            time.sleep(1.0)
            after = vm_rss_kb(pid)
        finally:
            for s in socks:
                s.close()
        if got:
            say(f"  mox idle SMTP connections: {got}/{n} greeted, RSS {before / 1024:.0f} -> {after / 1024:.0f} MB"
                f" = {(after - before) / got:.1f} KB/connection")

    def print_summary(self):
        say("== Summary (mox / peer)")
        say(f"  disk limit: {self.disk1:.0f} msg/s (1 writer), {self.disk4:.0f} msg/s (4 writers)")
        for what, m, p, peer, unit in self.summary:
            say(f"  {what:45s} mox {fmt(m):>8s}   {peer} {fmt(p):>8s}   ratio {ratio(m, p)}")
        for sessions, res in sorted(getattr(self, "delivery", {}).items()):
            disk = self.disk1 if sessions == 1 else self.disk4
            line = ", ".join(f"{k} {ratio(v, disk)}" for k, v in res.items() if v)
            say(f"  delivery {sessions} conn / disk limit ({'1 writer' if sessions == 1 else '4 writers'}): {line}")
        if getattr(self, "idle_res", None):
            d, m = self.idle_res.get("dovecot"), self.idle_res.get("mox")
            say(f"  {'idle IMAP connection (KB, dovecot: PSS)':45s} mox {fmt(m):>8s}   dovecot {fmt(d):>8s}   ratio {ratio(m, d)}")
        if self.deliver:
            disk = self.deliver_disk()
            line = ", ".join(f"{name} {ratio(rate, disk)}" for name, (_, rate, _) in self.deliver["modes"].items())
            say(f"  store delivery / disk limit (1 writer {disk:.0f} msg/s, goal seq >= {DELIVER_GOAL:.2f}): {line}")
            seq, raw = self.deliver["modes"].get("seq"), self.deliver["raw_seq"]
            if seq and raw:
                say(f"  store delivery seq / raw loop in the same stretch ({raw:.0f} msg/s): {ratio(seq[1], raw)}"
                    f" ({'goal met' if seq[1] / raw >= DELIVER_GOAL else 'goal NOT met'})")
            for how, n, bpm in self.deliver["index"]:
                say(f"  {f'index.tcb per message ({n} msgs, {how})':45s} {bpm:.0f} bytes")
            for kind, (n, ms) in self.deliver["open"].items():
                what = f"INBOX uid list after open ({n} msgs)" if kind == "uids" else f"account open {kind} ({n} msgs)"
                say(f"  {what:45s} {ms:.2f} ms")

    # -- part 5
    def deliver_disk(self):
        """The 1-writer disk limit for part 5: the best of part 1's and deliverbench's own loops."""
        return max([self.disk1 or 0.0] + self.deliver["raw"])

    def part_deliver(self):
        a = self.a
        say(f"== 5. Durable delivery through the store (deliverbench): {a.deliver_n} messages of 4 KB per mode, "
            f"open test with {a.deliver_open} messages")
        if not os.path.exists(a.deliverbench):
            skipped("deliverbench", f"{a.deliverbench} missing (make builds it)")
            return
        d = tempfile.mkdtemp(prefix="deliver", dir=self.scratch())  # removed at the end (scratch)
        argv = [a.deliverbench, "-d", d, "-n", str(a.deliver_n), "-o", str(a.deliver_open),
                "-r", str(a.disk_n), "-k", ",".join(str(k) for k in a.deliver_senders),
                "-L"]  # the daemon looks the mailbox up inside the add job (store_add_prepared)
        rc, el, _, out, err = run_timed(argv, a.deliver_timeout)
        if rc != 0:
            raise RuntimeError(f"deliverbench rc {rc} after {el:.0f} s: {err.strip()[-400:]}")
        res = parse_deliverbench(out)
        if not res["modes"]:
            raise RuntimeError(f"deliverbench printed no results: {out.strip()[-400:]}")
        self.deliver = res
        disk = self.deliver_disk()
        raws = ", ".join(f"{r:.0f}" for r in res["raw"])
        say(f"  disk limit, 1 writer: {disk:.0f} msg/s (part 1: {fmt(self.disk1)}; deliverbench's loop "
            f"before/after: {raws} msg/s)")
        for name, (n, rate, avg) in res["modes"].items():
            what = "seq (1 message per idx_add)" if name == "seq" else \
                f"{name[5:]} senders, group commit" if name.startswith("group") else name
            batch = f", {avg:.1f} messages per idx_add" if avg is not None else ""
            goal = ""
            if name == "seq" and res["raw_seq"]:
                # Judged against the raw loop run in rounds between its own rounds: the disk
                # is shared and drifts, so that is the like-for-like figure.
                r = rate / res["raw_seq"]
                goal = (f"; {r:.2f}x of the raw loop in the same stretch ({res['raw_seq']:.0f} msg/s), "
                        f"goal >= {DELIVER_GOAL:.2f}: {'met' if r >= DELIVER_GOAL else 'NOT met'}")
            say(f"  {what:32s} {rate:8.0f} msg/s = {ratio(rate, disk)} of disk{batch}{goal}")
        if res["split"]:
            say(f"  seq, ms per message: {res['split']}")
        for how, n, bpm in res["index"]:
            what = "delivered one by one" if how == "seq" else "added in batches of 512" if how == "batch" else how
            say(f"  index.tcb: {bpm:.0f} bytes/message ({n} messages {what})")
        for kind in ("cold", "warm", "uids"):
            if kind in res["open"]:
                n, ms = res["open"][kind]
                what = {"cold": "open cold (index.tcb not cached)", "warm": "open warm (median of 5)",
                        "uids": "then INBOX uid list (SELECT's scan)"}[kind]
                say(f"  {what:38s} {ms:8.2f} ms ({n} messages)")

    def run(self):
        self.part_disk()
        try:
            self.part_deliver()
        except Exception as e:
            say(f"  part_deliver: failed: {type(e).__name__}: {e}")
        self.start_servers()
        parts = [self.part_imap, self.big_mailbox, self.part_smtp, self.part_idle]
        for part in parts:
            try:
                part()
            except Exception as e:
                say(f"  {part.__name__}: failed: {type(e).__name__}: {e}")
        self.disk_again()
        self.print_summary()

    def disk_again(self):
        """The disk is shared with whatever else runs: measure again at the end, keep the best."""
        d1 = fsync_limit(n=self.a.disk_n, writers=1)
        d4 = fsync_limit(n=self.a.disk_n, writers=4)
        say(f"== 1'. Disk again: 1 writer {d1:.0f} msg/s, 4 writers {d4:.0f} msg/s (the summary uses the higher figures)")
        self.disk1, self.disk4 = max(self.disk1, d1), max(self.disk4, d4)

    def close(self):
        for s in (self.mox, self.dv, self.pf):
            if s is not None:
                try:
                    s.stop()
                except Exception:
                    pass
        PROCS.cleanup()
        if not self.a.keep:
            shutil.rmtree(self.base, ignore_errors=True)
        else:
            say(f"kept {self.base}")


def main():
    quick = os.environ.get("BENCH_QUICK", "") not in ("", "0")
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mox", required=True, help="absolute path of the mox binary")
    ap.add_argument("--imapload", default=os.path.join(ROOT, "build", "t", "bench", "imapload"))
    ap.add_argument("--deliverbench", default=os.path.join(ROOT, "build", "t", "bench", "deliverbench"))
    ap.add_argument("--quick", action="store_true", default=quick, help="small sizes (also BENCH_QUICK=1)")
    ap.add_argument("--disk-n", type=int)
    ap.add_argument("--prepop", type=int)
    ap.add_argument("--stress-seconds", type=float)
    ap.add_argument("--stress-clients", type=lambda s: [int(x) for x in s.split(",")])
    ap.add_argument("--big", type=int, help="messages in the large mailbox and the import")
    ap.add_argument("--idle", type=int, help="idle IMAP connections to mox")
    ap.add_argument("--dovecot-idle", type=int, help="idle IMAP connections to Dovecot (a process each)")
    ap.add_argument("--smtp-n", type=int)
    ap.add_argument("--smtp-conns", type=lambda s: [int(x) for x in s.split(",")])
    ap.add_argument("--smtp-rounds", type=int, help="runs of each server per connection count (best counts)")
    ap.add_argument("--smtp-idle", type=int)
    ap.add_argument("--deliver-n", type=int, help="messages per deliverbench mode")
    ap.add_argument("--deliver-open", type=int, help="messages in deliverbench's open test (0: none)")
    ap.add_argument("--deliver-senders", type=lambda s: [int(x) for x in s.split(",")],
                    help="concurrent senders of deliverbench's group-commit modes")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    ap.add_argument("--only", help="comma list of parts: disk,deliver,imap,big,smtp,idle")
    a = ap.parse_args()
    defaults = dict(disk_n=2000, prepop=1000, stress_seconds=10.0, stress_clients=[10, 100], big=100000,
                    idle=10000, dovecot_idle=1000, smtp_n=5000, smtp_conns=[1, 10], smtp_rounds=2, smtp_idle=2000,
                    deliver_n=10000, deliver_open=100000, deliver_senders=[8, 32])
    if a.quick:
        defaults.update(disk_n=500, prepop=200, stress_seconds=3.0, big=5000, idle=500, dovecot_idle=200,
                        smtp_n=500, smtp_rounds=1, smtp_idle=200, deliver_n=1000, deliver_open=10000)
    for k, v in defaults.items():
        if getattr(a, k) is None:
            setattr(a, k, v)
    a.import_timeout = 900
    a.smtp_timeout = 300
    a.idle_timeout = 300
    a.deliver_timeout = 1800
    only = set(a.only.split(",")) if a.only else None
    servers = only is None or bool(only & {"imap", "big", "smtp", "idle"})

    if servers and os.geteuid() != 0:
        say("bench: must run as root (the peers' private instances run their mail processes as nobody)")
        return 1
    if servers and not os.path.exists(a.imapload):
        say(f"bench: {a.imapload} missing (make builds it)")
        return 1
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if hard < a.idle + 100:
        a.idle = max(100, hard - 200)
    say(f"mox binary: {a.mox}")
    say(f"sizes: {'quick' if a.quick else 'full'}; RLIMIT_NOFILE {hard}")

    def on_signal(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, on_signal)

    b = Bench(a)
    try:
        if only is not None:
            b.part_disk()
            if servers:
                b.start_servers()
            for key, part in (("deliver", b.part_deliver), ("imap", b.part_imap), ("big", b.big_mailbox),
                              ("smtp", b.part_smtp), ("idle", b.part_idle)):
                if key in only:
                    try:
                        part()
                    except Exception as e:
                        say(f"  {part.__name__}: failed: {type(e).__name__}: {e}")
            b.print_summary()
        else:
            b.run()
    finally:
        b.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Shared fixtures for the protocol tests: start the real mox on loopback.

The `localserve` fixture runs `mox localserve -initonly` in a temporary
directory, moves every port to a free one, starts the server, waits until all
ports accept connections, and stops it afterwards (asserting a clean exit).
"""
import os
import re
import signal
import socket
import subprocess
import tempfile
import time

import pytest

MOX = os.environ.get("MOX_BIN") or os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "mox")

DEFAULT_PORTS = {
    "SMTP": 1025, "Submission": 1587, "Submissions": 1465, "IMAP": 1143,
    "IMAPS": 1993, "HTTP": 1080, "HTTPS": 1443, "MetricsHTTP": 1081,
}


_handed_out = set()


def free_port():
    """A TCP port free on 127.0.0.1 (and ::1 where it exists) right now, never the same twice."""
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port in _handed_out:
            continue
        try:
            with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s6:
                s6.bind(("::1", port))
        except OSError as e:
            if e.errno == 98:  # in use on ::1: try another
                continue
        _handed_out.add(port)
        return port
    raise RuntimeError("no free port")


def mox(*args, check=True, timeout=60, **kw):
    """Run the mox command; returns CompletedProcess with text output."""
    p = subprocess.run([MOX, *args], capture_output=True, text=True, timeout=timeout, **kw)
    if check and p.returncode != 0:
        raise AssertionError(f"mox {' '.join(args)} exited {p.returncode}:\n{p.stdout}\n{p.stderr}")
    return p


def wait_port(port, host="127.0.0.1", timeout=20.0, proc=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"server exited with {proc.returncode} before port {port} opened")
        try:
            with socket.create_connection((host, port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"port {port} did not open")


class Server:
    """A localserve instance: dir, config path, ports by service name, process."""

    def __init__(self, tmpdir):
        self.dir = tmpdir
        self.config = os.path.join(tmpdir, "mox.yaml")
        self.cert = os.path.join(tmpdir, "localhost.crt.pem")
        self.ports = {}
        self.proc = None
        self.logpath = os.path.join(tmpdir, "server.log")

    def init(self):
        mox("localserve", "-dir", self.dir, "-initonly")
        self.reassign_ports()

    def reassign_ports(self):
        """Move every enabled service to a fresh free port."""
        text = open(self.config).read()
        for svc in list(DEFAULT_PORTS) + (["ALPN"] if "ALPN" in self.ports else []):
            new = free_port()
            self.ports[svc] = new
            text, n = re.subn(rf"(\n    {svc}:\n      Enabled: true\n      Port: )\d+\n", rf"\g<1>{new}\n", text)
            assert n == 1, f"port of {svc} not found in config"
        open(self.config, "w").write(text)

    def edit(self, fn):
        """Rewrite mox.yaml through fn(text) -> text (before start)."""
        text = open(self.config).read()
        open(self.config, "w").write(fn(text))

    def set_limits(self, **kv):
        """Set keys of the Limits section of mox.yaml (creating the section when absent)."""
        def fn(text):
            if "\nLimits:\n" not in text:
                text += "Limits:\n"
            for k, v in kv.items():
                text, n = re.subn(rf"(?m)^  {k}: .*$", f"  {k}: {v}", text)
                if n == 0:
                    text = text.replace("\nLimits:\n", f"\nLimits:\n  {k}: {v}\n", 1)
            return text
        self.edit(fn)

    def start(self, wait=True):
        # A port found free may be taken by another process before we bind it: retry with new ports.
        for attempt in range(3):
            self.log = open(self.logpath, "w")
            self.proc = subprocess.Popen([MOX, "localserve", "-dir", self.dir], stdout=self.log,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            if not wait:
                return
            try:
                for port in self.ports.values():
                    wait_port(port, proc=self.proc)
                return
            except AssertionError:
                text = self.logtext()
                if self.proc.poll() is not None and "Address already in use" in text and attempt < 2:
                    self.log.close()
                    self.reassign_ports()
                    continue
                raise AssertionError("server did not start:\n" + text[-3000:])

    def logtext(self):
        self.log.flush()
        return open(self.logpath, errors="replace").read()

    def stop(self, expect_rc=0):
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError("server did not stop within 30s of SIGTERM")
        self.log.close()
        self.proc = None
        text = open(self.logpath, errors="replace").read()
        assert "ERROR: AddressSanitizer" not in text and "ERROR: LeakSanitizer" not in text \
            and "runtime error:" not in text, text[-4000:]
        if expect_rc is not None:
            assert rc == expect_rc, f"server exited {rc}:\n{text[-3000:]}"
        return rc


@pytest.fixture
def tmpdir_short():
    """A short temporary directory (unix socket paths are limited to 107 bytes)."""
    with tempfile.TemporaryDirectory(prefix="moxt") as d:
        yield d


@pytest.fixture
def server_dir(tmpdir_short):
    """An initialized but not started localserve directory."""
    s = Server(tmpdir_short)
    s.init()
    yield s
    s.stop(expect_rc=None)


@pytest.fixture
def localserve(server_dir):
    """A running localserve; stopped (and checked for a clean exit) afterwards."""
    server_dir.start()
    yield server_dir
    server_dir.stop()

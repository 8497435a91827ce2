"""Foundation: commands, config errors, listeners, TLS, ALPN, limits, shutdown."""
import os
import pwd
import re
import shutil
import signal
import socket
import ssl
import subprocess
import time

import pytest

from conftest import MOX, Server, free_port, mox, wait_port


def tls_client(server, port, alpn=None):
    ctx = ssl.create_default_context(cafile=server.cert)
    if alpn:
        ctx.set_alpn_protocols(alpn)
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    return ctx.wrap_socket(s, server_hostname="localhost")


def recv_line(s):
    data = b""
    while not data.endswith(b"\n"):
        chunk = s.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


# --- the command line ---

def test_version_and_help():
    assert re.match(r"mox \d+\.\d+", mox("version").stdout)
    out = mox("help").stdout
    for cmd in ["serve", "localserve", "stop", "status", "config test", "config describe-static",
                "config describe-domains", "config printservice", "version"]:
        assert f" {cmd}" in out
    assert "-initonly" in mox("help", "localserve").stdout


def test_unknown_command_exits_2():
    p = mox("frobnicate", check=False)
    assert p.returncode == 2
    assert 'unknown command "frobnicate"' in p.stderr and "usage:" in p.stderr
    p = mox("serve", "extra", check=False)
    assert p.returncode == 2 and "usage:" in p.stderr
    p = mox("-nosuchflag", "version", check=False)
    assert p.returncode == 2


def test_localserve_initonly_writes_config(server_dir):
    d = server_dir.dir
    for f in ["mox.yaml", "domains.yaml", "localhost.crt.pem", "localhost.key.pem"]:
        assert os.path.isfile(os.path.join(d, f)), f
    assert os.path.isdir(os.path.join(d, "data"))
    assert os.stat(os.path.join(d, "localhost.key.pem")).st_mode & 0o077 == 0
    p = mox("-config", server_dir.config, "config", "test")
    assert "1 domains, 1 accounts" in p.stdout
    dom = open(os.path.join(d, "domains.yaml")).read()
    assert "mox@localhost" in dom and '"@localhost"' in dom


def test_localserve_default_ports(tmpdir_short):
    mox("localserve", "-dir", tmpdir_short, "-initonly")
    text = open(os.path.join(tmpdir_short, "mox.yaml")).read()
    for svc, port in [("SMTP", 1025), ("Submission", 1587), ("Submissions", 1465), ("IMAP", 1143),
                      ("IMAPS", 1993), ("HTTP", 1080), ("HTTPS", 1443), ("MetricsHTTP", 1081)]:
        assert re.search(rf"\n    {svc}:\n      Enabled: true\n      Port: {port}\n", text), svc
    assert "- 127.0.0.1\n" in text
    # A second -initonly keeps an edited file.
    open(os.path.join(tmpdir_short, "mox.yaml"), "a").write("# edited\n")
    mox("localserve", "-dir", tmpdir_short, "-initonly")
    assert open(os.path.join(tmpdir_short, "mox.yaml")).read().endswith("# edited\n")


def test_describe_outputs_are_valid_configs(tmpdir_short):
    static = mox("config", "describe-static").stdout
    domains = mox("config", "describe-domains").stdout
    assert "# Fully qualified host name" in static and "Listeners:" in static and "MaxMessageSize" in static
    assert "Destinations:" in domains and "Rulesets:" in domains
    open(os.path.join(tmpdir_short, "mox.yaml"), "w").write(static)
    open(os.path.join(tmpdir_short, "domains.yaml"), "w").write(domains)
    p = mox("-config", os.path.join(tmpdir_short, "mox.yaml"), "config", "test", check=False)
    assert p.returncode == 0, p.stderr


def test_printservice(server_dir):
    out = mox("-config", server_dir.config, "config", "printservice").stdout
    assert "[Service]" in out and "[Install]" in out
    assert f"-config {os.path.realpath(server_dir.config)} serve" in out


# --- bad configs never start a server ---

@pytest.mark.parametrize("edit,message", [
    (lambda t: t.replace("Hostname: localhost", "Hostname: localhost\nBogusKey: 1"),
     r'mox.yaml:\d+:1: unknown key "BogusKey"'),
    (lambda t: re.sub(r"Port: (\d+)", r"Port: x\1", t, count=1), r"mox.yaml:\d+:\d+: Listeners.local.SMTP.Port: expected an integer"),
    (lambda t: t.replace("LogLevel: info", "LogLevel: loud"), r'LogLevel: unknown level "loud"'),
    (lambda t: t.replace("    IPs:\n", "    IPs:\n      - 300.1.1.1\n"), r'"300.1.1.1" is not an IP address'),
    (lambda t: t.replace("Hostname: localhost", "Hostname: localhost\nHostname: other"), r'duplicate key "Hostname"'),
    (lambda t: t + "---\nDataDir: x\n", r"more than one YAML document"),
    (lambda t: t.replace("  Account: mox", "  Account: nosuch"), r'Postmaster.Account: unknown account "nosuch"'),
])
def test_bad_config_refuses_to_start(server_dir, edit, message):
    server_dir.edit(edit)
    p = mox("-config", server_dir.config, "config", "test", check=False)
    assert p.returncode == 1
    assert re.search(message, p.stderr), p.stderr
    p = mox("localserve", "-dir", server_dir.dir, check=False, timeout=30)
    assert p.returncode == 1 and re.search(message, p.stderr), p.stderr
    # Nothing was left listening.
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", server_dir.ports["IMAP"]), timeout=1).close()


def test_bad_domains_config(server_dir):
    path = os.path.join(server_dir.dir, "domains.yaml")
    text = open(path).read()
    open(path, "w").write(text.replace("    Domain: localhost", "    Domain: nosuch.example"))
    p = mox("-config", server_dir.config, "config", "test", check=False)
    assert p.returncode == 1
    assert re.search(r'domains.yaml:\d+:\d+: Accounts.mox.Domain: unknown domain "nosuch.example"', p.stderr), p.stderr


def test_port_in_use_is_a_clear_error(server_dir):
    busy = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    busy.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    busy.bind(("127.0.0.1", server_dir.ports["IMAP"]))
    busy.listen(1)
    try:
        p = mox("localserve", "-dir", server_dir.dir, check=False, timeout=30)
    finally:
        busy.close()
    assert p.returncode == 1
    port = server_dir.ports["IMAP"]
    assert f"listen 127.0.0.1 port {port} (Listeners.local.IMAP): Address already in use" in p.stderr, p.stderr


# --- running server ---

def test_status_and_stop(server_dir):
    server_dir.start()
    out = mox("-config", server_dir.config, "status").stdout
    assert re.search(r"^pid \d+$", out, re.M)
    assert f"listening IMAPS 127.0.0.1:{server_dir.ports['IMAPS']}" in out
    assert f"listening SMTP 127.0.0.1:{server_dir.ports['SMTP']}" in out
    mox("-config", server_dir.config, "stop")
    assert server_dir.proc.wait(timeout=10) == 0
    assert not os.path.exists(os.path.join(server_dir.dir, "data", "ctl"))
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", server_dir.ports["IMAP"]), timeout=1).close()
    p = mox("-config", server_dir.config, "status", check=False)
    assert p.returncode == 1 and "no server answers" in p.stderr


def test_second_instance_refused(localserve):
    p = mox("localserve", "-dir", localserve.dir, check=False, timeout=30)
    assert p.returncode == 1
    assert "Address already in use" in p.stderr or "another mox is running" in p.stderr


def test_logfmt_lines(localserve):
    mox("-config", localserve.config, "status")
    text = localserve.logtext()
    line = [l for l in text.splitlines() if "m=listening" in l][0]
    assert re.match(r"t=\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z l=info m=listening pkg=server address=\S+ service=\S+ listener=local$", line), line


def test_tls_certificate(localserve):
    """openssl s_client verifies the self-signed certificate for localhost."""
    port = localserve.ports["IMAPS"]
    p = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-CAfile", localserve.cert,
                        "-verify_hostname", "localhost", "-verify_return_error", "-servername", "localhost"],
                       input="", capture_output=True, text=True, timeout=30)
    assert "Verify return code: 0 (ok)" in p.stdout, p.stdout + p.stderr
    assert "subject=CN = localhost" in p.stdout
    x = subprocess.run(["openssl", "x509", "-in", localserve.cert, "-noout", "-ext", "subjectAltName"],
                       capture_output=True, text=True, check=True).stdout
    assert "DNS:localhost" in x and "IP Address:127.0.0.1" in x


def test_tls_min_version(server_dir):
    """TLS.MinVersion is enforced by the server: with TLSv1.3 a TLS 1.2 client is refused."""
    server_dir.edit(lambda t: t.replace("          KeyFile: localhost.key.pem\n",
                                        "          KeyFile: localhost.key.pem\n      MinVersion: TLSv1.3\n"))
    server_dir.start()
    port = server_dir.ports["IMAPS"]
    ctx = ssl.create_default_context(cafile=server_dir.cert)
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    with pytest.raises((ssl.SSLError, ConnectionResetError)):
        ctx.wrap_socket(s, server_hostname="localhost")
    s.close()
    # The server still serves after the failed handshake, over TLS 1.3.
    with tls_client(server_dir, port) as c:
        assert c.version() == "TLSv1.3"
        assert recv_line(c).startswith(b"* ")
    assert "tls handshake failed" in server_dir.logtext()
    server_dir.stop()


def test_alpn_dispatch(server_dir):
    port = free_port()
    server_dir.edit(lambda t: t.replace("    MetricsHTTP:\n", f"    ALPN:\n      Enabled: true\n      Port: {port}\n    MetricsHTTP:\n"))
    server_dir.ports["ALPN"] = port
    server_dir.start()
    port = server_dir.ports["ALPN"]  # may have moved if the port was taken meanwhile
    with tls_client(server_dir, port, ["imap"]) as c:
        assert c.selected_alpn_protocol() == "imap"
        assert recv_line(c).startswith(b"* ")
    with tls_client(server_dir, port, ["smtp"]) as c:
        assert c.selected_alpn_protocol() == "smtp"
        assert re.match(rb"^\d{3}[ -]", recv_line(c))
    with tls_client(server_dir, port, ["http/1.1"]) as c:
        c.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        assert recv_line(c).startswith(b"HTTP/1.1 ")
    # A protocol we do not serve is refused during the handshake.
    with pytest.raises(ssl.SSLError, match="NO_APPLICATION_PROTOCOL|no application protocol"):
        tls_client(server_dir, port, ["xmpp-client"])
    # The implicit-TLS IMAP port acknowledges "imap" and ignores others.
    with tls_client(server_dir, server_dir.ports["IMAPS"], ["imap"]) as c:
        assert c.selected_alpn_protocol() == "imap"
    with tls_client(server_dir, server_dir.ports["IMAPS"], ["h2"]) as c:
        assert c.selected_alpn_protocol() is None
        assert recv_line(c).startswith(b"* ")
    server_dir.stop()


def test_connection_limit_per_ip(server_dir):
    server_dir.set_limits(MaxConnectionsPerIP=2)
    server_dir.start(wait=False)
    wait_port(server_dir.ports["IMAPS"], proc=server_dir.proc)
    time.sleep(0.3)  # the probe connection of wait_port is released
    port = server_dir.ports["IMAPS"]
    held = [socket.create_connection(("127.0.0.1", port), timeout=2) for _ in range(2)]
    try:
        time.sleep(0.2)
        third = socket.create_connection(("127.0.0.1", port), timeout=5)
        assert third.recv(10) == b""  # closed by the server at once
        third.close()
        for h in held:  # the first two are still open (waiting for a TLS handshake)
            h.settimeout(0.3)
            with pytest.raises(socket.timeout):
                h.recv(10)
    finally:
        for h in held:
            h.close()
    assert "too many connections from this address" in server_dir.logtext()
    # Slots are released when connections close.
    time.sleep(0.3)
    with tls_client(server_dir, port) as c:
        assert recv_line(c).startswith(b"* ")
    server_dir.stop()


def test_sigterm_during_startup(server_dir):
    server_dir.start(wait=False)
    # Wait for the first line of output (the start-up banner), then interrupt start-up.
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and os.path.getsize(server_dir.logpath) == 0:
        time.sleep(0.001)
    server_dir.proc.send_signal(signal.SIGTERM)
    assert server_dir.stop() == 0
    assert not os.path.exists(os.path.join(server_dir.dir, "data", "ctl"))
    # And it starts normally afterwards.
    server_dir.start()
    server_dir.stop()


def test_sigterm_stops_running_server(localserve):
    localserve.proc.send_signal(signal.SIGTERM)
    assert localserve.proc.wait(timeout=10) == 0
    assert "m=stopped" in localserve.logtext()
    localserve.proc = None
    localserve.log.close()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root")
def test_serve_drops_privileges(server_dir):
    """mox serve as root binds, chowns the data dir to User, switches to it and stays there."""
    nobody = pwd.getpwnam("nobody")
    os.chmod(server_dir.dir, 0o755)
    server_dir.edit(lambda t: t.replace("User: root", "User: nobody").replace("NoFixPermissions: true", "NoFixPermissions: false")
                    .replace("LocalServe: true\n", ""))
    os.makedirs(os.path.join(server_dir.dir, "data", "sub"))
    # A symlink planted in the data directory must not make root chown its target.
    outside = os.path.join(server_dir.dir, "outside")
    open(outside, "w").close()
    os.symlink(outside, os.path.join(server_dir.dir, "data", "sub", "link"))
    os.symlink(server_dir.dir, os.path.join(server_dir.dir, "data", "dirlink"))
    log = open(server_dir.logpath, "w")
    proc = subprocess.Popen([MOX, "-config", server_dir.config, "serve"], stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_port(server_dir.ports["IMAP"], proc=proc)
        deadline = time.monotonic() + 10
        while not os.path.exists(os.path.join(server_dir.dir, "data", "ctl")) and time.monotonic() < deadline:
            time.sleep(0.05)
        status = open(f"/proc/{proc.pid}/status").read()
        uids = re.search(r"^Uid:\s+(.*)$", status, re.M).group(1).split()
        gids = re.search(r"^Gid:\s+(.*)$", status, re.M).group(1).split()
        groups = re.search(r"^Groups:\s*(.*)$", status, re.M).group(1).split()
        assert uids == [str(nobody.pw_uid)] * 4
        assert gids == [str(nobody.pw_gid)] * 4
        assert groups in ([], [str(nobody.pw_gid)])
        st = os.stat(os.path.join(server_dir.dir, "data", "sub"))
        assert (st.st_uid, st.st_gid) == (nobody.pw_uid, nobody.pw_gid)
        assert os.stat(outside).st_uid == 0
        assert os.lstat(os.path.join(server_dir.dir, "data", "sub", "link")).st_uid == nobody.pw_uid
        assert os.stat(server_dir.dir).st_uid == 0  # not followed through dirlink
        # Still serving after the switch (ports bound as root).
        with socket.create_connection(("127.0.0.1", server_dir.ports["IMAP"]), timeout=5) as c:
            assert recv_line(c).startswith(b"* ")
    finally:
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=30)
        log.close()
    assert rc == 0, open(server_dir.logpath).read()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root")
def test_serve_refuses_root_user(server_dir):
    server_dir.edit(lambda t: t.replace("LocalServe: true\n", ""))
    p = mox("-config", server_dir.config, "serve", check=False, timeout=30)
    assert p.returncode == 1
    assert "refusing to run as root" in p.stderr, p.stderr


def test_examples_are_valid():
    examples = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples", "mox.yaml")
    p = mox("-config", examples, "config", "test")
    assert "2 listeners, 1 domains, 1 accounts" in p.stdout


def test_stale_spool_files_removed_at_start(server_dir):
    """A spool file of a message that was never acknowledged (crash mid-delivery) is removed at start."""
    spool = os.path.join(server_dir.dir, "data", "tmp")
    os.makedirs(spool, exist_ok=True)
    stale = os.path.join(spool, "1700000000.M1P2Q3.localhost")
    open(stale, "w").write("Subject: half\r\n")
    server_dir.start()
    assert not os.path.exists(stale)
    assert "removed spool files of unacknowledged messages" in server_dir.logtext()
    server_dir.stop()
    p = mox("verifydata", os.path.join(server_dir.dir, "data"), check=False)
    assert p.returncode == 0, p.stdout + p.stderr

"""IMAP server: imaplib over plain, STARTTLS and implicit TLS; raw-protocol tests for bad input."""
import imaplib
import re
import socket
import ssl
import threading
import time

import pytest

from conftest import MOX


USER = "mox@localhost"
PASS = "moxmoxmox"


def ctx(server):
    return ssl.create_default_context(cafile=server.cert)


def plain(server):
    return imaplib.IMAP4("127.0.0.1", server.ports["IMAP"], timeout=10)


def tls(server):
    return imaplib.IMAP4_SSL("localhost", server.ports["IMAPS"], ssl_context=ctx(server), timeout=10)


def login(server, how="plain"):
    c = plain(server) if how == "plain" else tls(server)
    c.login(USER, PASS)
    return c


class Raw:
    """A raw IMAP connection: send bytes, read lines."""

    def __init__(self, server, port=None, use_tls=False):
        port = port or server.ports["IMAPS" if use_tls else "IMAP"]
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        if use_tls:
            s = ctx(server).wrap_socket(s, server_hostname="localhost")
        self.s = s
        self.buf = b""
        self.greeting = self.line()

    def send(self, data):
        if isinstance(data, str):
            data = data.encode()
        self.s.sendall(data)

    def line(self):
        while b"\n" not in self.buf:
            d = self.s.recv(65536)
            if not d:
                r, self.buf = self.buf, b""
                return r.decode(errors="replace")
            self.buf += d
        line, self.buf = self.buf.split(b"\n", 1)
        return line.decode(errors="replace") + "\n"

    def until_tag(self, tag):
        """Lines up to and including the tagged one."""
        lines = []
        while True:
            ln = self.line()
            if ln == "":
                raise AssertionError("connection closed; got " + repr(lines))
            lines.append(ln)
            if ln.startswith(tag + " "):
                return lines

    def cmd(self, tag, text):
        self.send(f"{tag} {text}\r\n")
        return self.until_tag(tag)

    def closed(self, timeout=5):
        self.s.settimeout(timeout)
        try:
            while True:
                d = self.s.recv(65536)
                if not d:
                    return True
                self.buf += d
        except (ConnectionResetError, ssl.SSLError):
            return True
        except socket.timeout:
            return False

    def login(self):
        r = self.cmd("l", f"LOGIN {USER} {PASS}")
        assert r[-1].startswith("l OK"), r
        return r

    def close(self):
        self.s.close()


def msg(subject="hello", body="body text\r\n", extra=""):
    return (f"From: Alice <alice@example.org>\r\nTo: mox@localhost\r\nSubject: {subject}\r\n"
            f"Date: Mon, 7 Feb 1994 21:52:25 -0800\r\nMessage-ID: <{subject.replace(' ', '')}@example.org>\r\n"
            f"{extra}\r\n{body}").encode()


# --- greeting, capabilities, login ---

CAPS_AFTER = ("IMAP4rev2 IMAP4rev1 ENABLE LITERAL+ IDLE SASL-IR BINARY UNSELECT UIDPLUS ESEARCH SEARCHRES MOVE "
              "UTF8=ACCEPT LIST-EXTENDED SPECIAL-USE LIST-STATUS AUTH=SCRAM-SHA-256-PLUS AUTH=SCRAM-SHA-256 "
              "AUTH=SCRAM-SHA-1-PLUS AUTH=SCRAM-SHA-1 AUTH=CRAM-MD5 ID APPENDLIMIT=")


def test_greeting_and_capabilities_plain(localserve):
    r = Raw(localserve)
    assert r.greeting.startswith("* OK [CAPABILITY IMAP4rev2 IMAP4rev1 ")
    lines = r.cmd("a", "CAPABILITY")
    caps = lines[0].split()
    assert caps[:2] == ["*", "CAPABILITY"]
    # localserve sets NoRequireSTARTTLS: no LOGINDISABLED, PLAIN offered, STARTTLS offered.
    assert "STARTTLS" in caps and "LOGINDISABLED" not in caps and "AUTH=PLAIN" in caps
    assert "AUTH=SCRAM-SHA-256-PLUS" not in caps  # no channel binding without TLS
    assert lines[-1].startswith("a OK")
    lines = r.login()
    assert CAPS_AFTER in lines[-1]
    assert re.search(r"APPENDLIMIT=\d+ CONDSTORE QRESYNC STATUS=SIZE QUOTA QUOTA=RES-STORAGE AUTH=PLAIN NAMESPACE",
                     lines[-1])
    lines = r.cmd("b", "CAPABILITY")
    assert CAPS_AFTER in lines[0]
    assert r.cmd("c", "LOGOUT")[0].startswith("* BYE")
    assert r.closed()


def test_login_plain_starttls_tls(localserve):
    c = plain(localserve)
    assert c.login(USER, PASS)[0] == "OK"
    c.logout()
    c = plain(localserve)
    c.starttls(ssl_context=ctx(localserve))
    assert "AUTH=SCRAM-SHA-256-PLUS" in c.capability()[1][0].decode()
    assert c.login(USER, PASS)[0] == "OK"
    c.logout()
    c = tls(localserve)
    assert c.login(USER, PASS)[0] == "OK"
    assert c.noop()[0] == "OK"
    c.logout()


def test_login_failures(localserve):
    c = plain(localserve)
    with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
        c.login(USER, "wrong")
    with pytest.raises(imaplib.IMAP4.error, match="cid"):
        c.login("nobody@localhost", "x")
    assert c.noop()[0] == "OK"
    c.logout()
    assert "authentication failed" in localserve.logtext()


def test_authenticate_plain_and_sasl_ir(localserve):
    c = plain(localserve)
    typ, _ = c.authenticate("PLAIN", lambda _: f"\0{USER}\0{PASS}".encode())
    assert typ == "OK"
    c.logout()
    r = Raw(localserve)
    import base64
    ir = base64.b64encode(f"\0{USER}\0{PASS}".encode()).decode()
    assert r.cmd("a", f"AUTHENTICATE PLAIN {ir}")[-1].startswith("a OK")
    r.close()
    r = Raw(localserve)
    ir = base64.b64encode(f"\0{USER}\0bad".encode()).decode()
    out = r.cmd("a", f"AUTHENTICATE PLAIN {ir}")
    assert out[-1].startswith("a NO [AUTHENTICATIONFAILED]") and "(cid " in out[-1]
    # Cancelled exchange.
    r.send("b AUTHENTICATE PLAIN\r\n")
    assert r.line().startswith("+")
    r.send("*\r\n")
    assert r.until_tag("b")[-1].startswith("b BAD")
    # Bad base64 is a client error, not a server error.
    r.send("c AUTHENTICATE PLAIN\r\n")
    r.line()
    r.send("!!!!\r\n")
    out = r.until_tag("c")[-1]
    assert out.startswith("c NO") and "SERVERBUG" not in out
    assert r.cmd("d", "AUTHENTICATE FOO")[-1].startswith("d NO")
    r.close()


def scram(c, mech, hashname, user, password, garble=None):
    import base64, hashlib, hmac, os
    nonce = base64.b64encode(os.urandom(12)).decode()
    first_bare = f"n={user},r={nonce}"
    state = {}

    def step(data):
        if "n" not in state:
            state["n"] = 1
            return ("n,," + first_bare).encode()
        if state["n"] == 1:
            state["n"] = 2
            server_first = data.decode()
            attrs = dict(kv.split("=", 1) for kv in server_first.split(","))
            salt = base64.b64decode(attrs["s"])
            it = int(attrs["i"])
            salted = hashlib.pbkdf2_hmac(hashname, password.encode(), salt, it)
            ckey = hmac.new(salted, b"Client Key", hashname).digest()
            skey = hashlib.new(hashname, ckey).digest()
            final_wo = f"c=biws,r={attrs['r']}"
            authmsg = f"{first_bare},{server_first},{final_wo}".encode()
            sig = hmac.new(skey, authmsg, hashname).digest()
            proof = bytes(a ^ b for a, b in zip(ckey, sig))
            if garble:
                proof = bytes(len(proof))
            return f"{final_wo},p={base64.b64encode(proof).decode()}".encode()
        return b""
    return c.authenticate(mech, step)


def test_authenticate_scram_and_cram(localserve):
    c = plain(localserve)
    assert scram(c, "SCRAM-SHA-256", "sha256", USER, PASS)[0] == "OK"
    c.logout()
    c = plain(localserve)
    assert scram(c, "SCRAM-SHA-1", "sha1", USER, PASS)[0] == "OK"
    c.logout()
    c = plain(localserve)
    with pytest.raises(imaplib.IMAP4.error) as e:
        scram(c, "SCRAM-SHA-256", "sha256", USER, PASS, garble=True)
    assert "SERVERBUG" not in str(e.value) and "authentication failed" in str(e.value)
    c.logout()
    c = plain(localserve)
    assert c.login_cram_md5(USER, PASS)[0] == "OK"
    c.logout()


def test_login_requires_tls_without_norequirestarttls(server_dir):
    server_dir.edit(lambda t: t.replace("      NoRequireSTARTTLS: true\n", ""))
    server_dir.start()
    r = Raw(server_dir)
    caps = r.cmd("a", "CAPABILITY")[0].split()
    assert "LOGINDISABLED" in caps and "STARTTLS" in caps and "AUTH=PLAIN" not in caps
    out = r.cmd("b", f"LOGIN {USER} {PASS}")
    assert out[-1].startswith("b NO") and "(cid " in out[-1]
    out = r.cmd("c", "AUTHENTICATE PLAIN")
    assert out[-1].startswith("c NO")
    r.close()
    c = plain(server_dir)
    c.starttls(ssl_context=ctx(server_dir))
    assert c.login(USER, PASS)[0] == "OK"
    c.logout()


# --- bad input ---

def test_starttls_errors(localserve):
    r = Raw(localserve, use_tls=True)
    out = r.cmd("a", "STARTTLS")
    assert out[-1].startswith("a BAD tls already active")
    assert r.cmd("b", "NOOP")[-1].startswith("b OK")
    r.close()


def test_starttls_discards_pipelined(localserve):
    r = Raw(localserve)
    r.send("a STARTTLS\r\nb LOGIN mox@localhost moxmoxmox\r\n")
    assert r.line().startswith("a OK")
    s = ctx(localserve).wrap_socket(r.s, server_hostname="localhost")
    s.sendall(b"c NOOP\r\n")
    data = b""
    while b"c " not in data:
        data += s.recv(4096)
    assert b"b " not in data and data.startswith(b"c OK")
    s.close()


def test_starttls_without_certificate(server_dir):
    def drop_tls(t):
        # The listener keeps IMAP without any TLS config: STARTTLS must be refused.
        t = re.sub(r"\n    TLS:\n(      .*\n)+", "\n", t)
        t = re.sub(r"\n    (IMAPS|HTTPS|Submissions|ALPN):\n      Enabled: true\n      Port: \d+\n", "\n", t)
        return t
    server_dir.edit(drop_tls)
    for k in ["IMAPS", "HTTPS", "Submissions"]:
        server_dir.ports.pop(k, None)
    server_dir.start()
    r = Raw(server_dir)
    assert "STARTTLS" not in r.greeting
    out = r.cmd("a", "STARTTLS")
    assert out[-1].startswith("a NO") or out[-1].startswith("a BAD")
    assert r.cmd("b", "NOOP")[-1].startswith("b OK")
    r.close()


def test_first_command_garbage_closes(localserve):
    r = Raw(localserve)
    r.send("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert " BAD " in r.line()
    assert r.closed()
    r = Raw(localserve)
    r.send("\x01\x02\x03\r\n")
    assert "BAD" in r.line()
    assert r.closed()


def test_bad_command_later_keeps_connection(localserve):
    r = Raw(localserve)
    assert r.cmd("a", "NOOP")[-1].startswith("a OK")
    out = r.cmd("b", "FROBNICATE")
    assert out[-1].startswith("b BAD") and "(cid " in out[-1]
    assert r.cmd("c", "SELECT INBOX")[-1].startswith("c NO")  # not authenticated
    assert r.cmd("d", "NOOP")[-1].startswith("d OK")
    r.close()


def test_line_too_long_closes(localserve):
    r = Raw(localserve)
    r.login()
    r.send("a NOOP " + "x" * 70000 + "\r\n")
    assert "BAD" in r.line()
    assert r.closed()


def test_long_uid_set_line_accepted(localserve):
    r = Raw(localserve)
    r.login()
    r.cmd("s", "SELECT INBOX")
    uids = ",".join(str(i) for i in range(1, 60000, 2))[:60000].rstrip(",")
    out = r.cmd("a", f"UID FETCH {uids} (FLAGS)")
    assert out[-1].startswith("a OK"), out[-1][:200]
    r.close()


def test_literal_limits(localserve):
    r = Raw(localserve)
    r.login()
    # One literal over 100 KB (non-APPEND): TOOBIG.
    r.send("a LOGIN {200000}\r\n")
    ln = r.line()
    assert ln.startswith("a BAD [TOOBIG]") or ln.startswith("a NO [TOOBIG]"), ln
    assert r.cmd("b", "NOOP")[-1].startswith("b OK")
    # Too many literals.
    parts = "".join("{1+}\r\nx " for _ in range(1001))
    r.send("c STATUS " + parts + "\r\n")
    out = r.until_tag("c")
    assert "[TOOBIG]" in out[-1]
    assert r.cmd("d", "NOOP")[-1].startswith("d OK")
    # Combined size over 1 MB with non-synchronizing literals of 90 KB each.
    lit = "{90000+}\r\n" + "y" * 90000 + " "
    r.send("e ID (" + lit * 13 + ")\r\n")
    out = r.until_tag("e")
    assert "[TOOBIG]" in out[-1]
    assert r.cmd("f", "NOOP")[-1].startswith("f OK")
    r.close()


def test_preauth_timeout(server_dir):
    server_dir.edit(lambda t: t.replace("Limits:\n", "Limits:\n  IMAPTimeoutPreAuth: 1s\n") if "Limits:\n" in t
                    else t + "Limits:\n  IMAPTimeoutPreAuth: 1s\n")
    server_dir.start()
    r = Raw(server_dir)
    time.sleep(1.5)
    assert r.line().startswith("* BYE inactive")
    assert r.closed()


def test_shutdown_says_bye(server_dir):
    server_dir.start()
    r = Raw(server_dir)
    r.login()
    server_dir.stop()
    assert r.line().startswith("* BYE")


def test_id_enable_noop(localserve):
    c = login(localserve)
    typ, data = c.xatom("ID", '("name" "pytest")')
    assert typ == "OK"
    r = Raw(localserve)
    r.login()
    out = r.cmd("a", 'ID ("name" "x" "version" "1")')
    assert out[0].startswith('* ID ("name" "mox"')
    out = r.cmd("b", "ENABLE CONDSTORE QRESYNC UTF8=ACCEPT IMAP4rev2 X-UNKNOWN")
    assert out[0].startswith("* ENABLED") and "CONDSTORE" in out[0] and "QRESYNC" in out[0]
    assert "IMAP4rev2" in out[0] and "X-UNKNOWN" not in out[0]
    r.close()
    c.logout()


# --- mailboxes ---

def test_list_create_rename_delete(localserve):
    c = login(localserve)
    typ, data = c.list()
    assert typ == "OK" and any(b'"INBOX"' in d or b" INBOX" in d for d in data)
    assert c.create("Work")[0] == "OK"
    assert c.create("Work/Projects")[0] == "OK"
    typ, data = c.create("Work/Projects")
    assert typ == "NO" and b"[ALREADYEXISTS]" in data[0], (typ, data)
    typ, data = c.list('""', "Work*")
    names = [d.decode() for d in data]
    assert any("\\HasChildren" in n and n.endswith('"Work"') for n in names), names
    assert any(n.endswith('"Work/Projects"') for n in names), names
    typ, data = c.list('""', "%")
    assert not any("Work/Projects" in d.decode() for d in data)
    assert c.rename("Work/Projects", "Work/Done")[0] == "OK"
    typ, data = c.list("Work/", "*")
    assert any(d.decode().endswith('"Work/Done"') for d in data)
    assert c.delete("Work/Done")[0] == "OK"
    typ, data = c.delete("Work/Done")
    assert typ == "NO" and b"[NONEXISTENT]" in data[0], (typ, data)
    typ, data = c.delete("INBOX")
    assert typ == "NO", (typ, data)
    # Names with *, % and # (not first) are allowed.
    assert c.create('"a*b%c#d"')[0] == "OK"
    c.logout()


def test_mutf7_and_utf8_names(localserve):
    r = Raw(localserve)
    r.login()
    assert r.cmd("a", 'CREATE "Entw&APw-rfe"')[-1].startswith("a OK")
    out = r.cmd("b", 'LIST "" "Entw*"')
    assert '"Entw&APw-rfe"' in out[0]
    assert r.cmd("c", 'CREATE "bad&Jjo"')[-1].startswith("c BAD")
    r.cmd("d", "ENABLE UTF8=ACCEPT")
    out = r.cmd("e", 'LIST "" "Entw*"')
    assert '"Entwürfe"' in out[0]
    r.send('f CREATE "Caf\xc3\xa9"\r\n'.encode("latin-1"))
    assert r.until_tag("f")[-1].startswith("f OK")
    r.close()


def test_list_extended_and_status(localserve):
    r = Raw(localserve)
    r.login()
    r.cmd("a", "CREATE Sub1")
    r.cmd("b", "UNSUBSCRIBE Sub1")
    out = r.cmd("c", 'LIST (SUBSCRIBED) "" "*"')
    assert not any('"Sub1"' in ln for ln in out)
    assert any("\\Subscribed" in ln and "INBOX" in ln for ln in out)
    out = r.cmd("d", 'LIST "" "*" RETURN (SPECIAL-USE STATUS (MESSAGES UIDNEXT SIZE))')
    assert any("* STATUS" in ln and "SIZE 0" in ln for ln in out)
    out = r.cmd("e", 'LIST (SPECIAL-USE) "" "*"')
    assert all(ln.startswith("e ") or "\\" in ln.split(")")[0] for ln in out)
    out = r.cmd("f", "STATUS INBOX (MESSAGES UIDNEXT UIDVALIDITY UNSEEN DELETED SIZE HIGHESTMODSEQ APPENDLIMIT)")
    assert out[0].startswith('* STATUS "INBOX" (MESSAGES 0 UIDNEXT 1 UIDVALIDITY ') or out[0].startswith("* STATUS INBOX")
    assert "SIZE 0" in out[0] and out[-1].startswith("f OK")
    out = r.cmd("g", "LSUB \"\" \"*\"")
    assert any(ln.startswith("* LSUB") for ln in out)
    out = r.cmd("h", 'LIST "" ""')
    assert out[0].startswith('* LIST (\\Noselect) "/" ""')
    r.close()


def test_namespace_quota(localserve):
    r = Raw(localserve)
    r.login()
    assert r.cmd("a", "NAMESPACE")[0].startswith('* NAMESPACE (("" "/")) NIL NIL')
    out = r.cmd("b", "GETQUOTAROOT INBOX")
    assert out[0].startswith('* QUOTAROOT "INBOX" ""') or out[0].startswith('* QUOTAROOT INBOX ""')
    assert out[1].startswith('* QUOTA "" ()')  # no limit configured: no resource
    assert r.cmd("c", 'GETQUOTA "x"')[-1].startswith("c NO")
    r.close()


def test_select_examine(localserve):
    r = Raw(localserve)
    r.login()
    out = r.cmd("a", "SELECT INBOX")
    text = "".join(out)
    assert "* FLAGS (" in text and "\\*)" in text and "* 0 EXISTS" in text and "* 0 RECENT" in text
    assert "[UIDVALIDITY " in text and "[UIDNEXT 1]" in text and "[HIGHESTMODSEQ " in text
    assert out[-1].startswith("a OK [READ-WRITE]")
    out = r.cmd("b", "EXAMINE INBOX")
    assert out[-1].startswith("b OK [READ-ONLY]")
    assert r.cmd("c", "SELECT nosuch")[-1].startswith("c NO")
    assert r.cmd("d", "FETCH 1 FLAGS")[-1].startswith("d NO")  # deselected after failed SELECT
    r.close()


# --- messages ---

def test_append_fetch_store_expunge(localserve):
    c = login(localserve)
    typ, data = c.append("INBOX", "(\\Flagged kw1)", None, msg("first"))
    assert typ == "OK" and b"APPENDUID" in data[0]
    c.append("INBOX", None, None, msg("second"))
    typ, data = c.select("INBOX")
    assert data[0] == b"2"
    typ, data = c.fetch("1:*", "(UID FLAGS RFC822.SIZE INTERNALDATE)")
    assert typ == "OK" and b"\\Flagged" in data[0] and b"kw1" in data[0] and b"RFC822.SIZE" in data[0]
    typ, data = c.fetch("1", "(BODY.PEEK[HEADER] ENVELOPE BODYSTRUCTURE)")
    assert typ == "OK" and b"Subject: first" in data[0][1]
    typ, data = c.fetch("2", "(BODY[])")
    assert b"body text" in data[0][1]
    typ, data = c.fetch("2", "(FLAGS)")
    assert b"\\Seen" in data[0]
    typ, data = c.fetch("1", "(BODY.PEEK[]<0.4>)")
    assert data[0][1] == b"From"
    typ, data = c.store("1", "+FLAGS", "(\\Deleted)")
    assert typ == "OK" and b"\\Deleted" in data[0]
    typ, data = c.expunge()
    assert typ == "OK" and data == [b"1"]
    typ, data = c.uid("FETCH", "1:*", "(FLAGS)")
    assert len([d for d in data if d]) == 1
    c.logout()


def test_copy_move_uidplus(localserve):
    c = login(localserve)
    c.append("INBOX", None, None, msg("m1"))
    c.create("Dest")
    c.select("INBOX")
    typ, data = c.copy("1", "Dest")
    assert typ == "OK" and b"COPYUID" in data[0]
    typ, data = c._simple_command("MOVE", "1", "Dest")
    assert typ == "OK"
    typ, data = c.status("Dest", "(MESSAGES)")
    assert b"MESSAGES 2" in data[0]
    c.logout()


def test_append_limits(localserve):
    r = Raw(localserve)
    r.login()
    r.send("a APPEND INBOX {999999999999}\r\n")
    ln = r.line()
    assert ln.startswith("a NO [TOOBIG]"), ln
    assert r.cmd("b", "NOOP")[-1].startswith("b OK")
    r.close()


def test_idle_sees_other_connection(localserve):
    r = Raw(localserve)
    r.login()
    r.cmd("s", "SELECT INBOX")
    r.send("i IDLE\r\n")
    assert r.line().startswith("+")
    c = login(localserve)
    c.append("INBOX", None, None, msg("pushed1"))
    c.append("INBOX", None, None, msg("pushed2"))
    seen = ""
    deadline = time.time() + 5
    while "2 EXISTS" not in seen and time.time() < deadline:
        seen += r.line()
    assert "EXISTS" in seen
    r.send("DONE\r\n")
    assert r.until_tag("i")[-1].startswith("i OK")
    c.logout()
    r.close()

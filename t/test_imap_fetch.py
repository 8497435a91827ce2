"""IMAP FETCH: every section form, BINARY, partials, \\Seen, CHANGEDSINCE, streaming memory bound,
large mailboxes and files that vanished."""
import base64
import email
import email.policy
import glob
import hashlib
import os
import re
import time

from test_imap import Raw, login, msg

B64DATA = bytes(range(256)) * 3 + b"\x00tail"

INNER = (b"From: Bob <bob@example.org>\r\nSubject: inner\r\nContent-Type: multipart/alternative; boundary=\"inner\"\r\n"
         b"\r\n"
         b"--inner\r\nContent-Type: text/plain\r\n\r\ninner plain\r\n"
         b"--inner\r\nContent-Type: text/html\r\n\r\n<p>inner html</p>\r\n"
         b"--inner--\r\n")

B64 = base64.encodebytes(B64DATA).replace(b"\n", b"\r\n")

MULTI = (b"From: Alice <alice@example.org>\r\nTo: mox@localhost\r\nSubject: multi\r\n"
         b"Date: Mon, 7 Feb 1994 21:52:25 -0800\r\nMessage-ID: <multi@example.org>\r\nX-Long: a\r\n b\r\n"
         b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"outer\"\r\n"
         b"\r\n"
         b"preamble\r\n"
         b"--outer\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
         b"caf=C3=A9 soft=\r\nbreak =3D done\r\nline two\r\n"
         b"--outer\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n"
         + B64 +
         b"--outer\r\nContent-Type: message/rfc822\r\n\r\n"
         + INNER +
         b"\r\n--outer--\r\nepilogue\r\n")


# --- a small reader for FETCH responses with literals ---

def read_response(r, tag):
    """Bytes of all responses up to and including the tagged line, literals included."""
    out = b""
    while True:
        while b"\n" not in r.buf:
            d = r.s.recv(1 << 20)
            assert d, "connection closed: " + repr(out[-300:])
            r.buf += d
        line, r.buf = r.buf.split(b"\n", 1)
        out += line + b"\n"
        m = re.search(rb"~?\{(\d+)\}\r$", line)
        if m:
            n = int(m.group(1))
            while len(r.buf) < n:
                d = r.s.recv(1 << 20)
                assert d
                r.buf += d
            out += r.buf[:n]
            r.buf = r.buf[n:]
            continue
        if line.startswith(tag.encode() + b" "):
            return out


def parse_value(b, i):
    if b[i:i + 3].upper() == b"NIL" and not b[i + 3:i + 4].isalnum():
        return None, i + 3
    c = b[i:i + 1]
    if c == b'"':
        i += 1
        v = b""
        while b[i:i + 1] != b'"':
            if b[i:i + 1] == b"\\":
                i += 1
            v += b[i:i + 1]
            i += 1
        return v, i + 1
    if c == b"(":
        i += 1
        v = []
        while b[i:i + 1] != b")":
            if b[i:i + 1] == b" ":
                i += 1
                continue
            x, i = parse_value(b, i)
            v.append(x)
        return v, i + 1
    m = re.match(rb"(~?)\{(\d+)\}\r\n", b[i:])
    if m:
        n = int(m.group(2))
        j = i + m.end()
        return (b[j:j + n], m.group(1) == b"~"), j + n
    m = re.match(rb"[^ ()\r\n]+", b[i:])
    return m.group(0), i + m.end()


def parse_fetches(data):
    """{seq: {name: value}} of the untagged FETCH responses; literals are (bytes, literal8)."""
    res = {}
    i = 0
    while i < len(data):
        m = re.compile(rb"\* (\d+) FETCH \(").match(data, i)
        if not m:
            i = data.index(b"\n", i) + 1
            continue
        seq = int(m.group(1))
        i = m.end()
        items = res.setdefault(seq, {})
        while data[i:i + 1] != b")":
            if data[i:i + 1] == b" ":
                i += 1
                continue
            depth, j = 0, i
            while True:
                ch = data[j:j + 1]
                if ch == b"[":
                    depth += 1
                elif ch == b"]":
                    depth -= 1
                elif ch == b" " and depth == 0:
                    break
                j += 1
            name = data[i:j].decode()
            v, i = parse_value(data, j + 1)
            if isinstance(v, tuple) and not v[1]:
                v = v[0]
            items[name] = v
        i = data.index(b"\n", i) + 1
    return res


def fetch(r, tag, cmd):
    r.send(f"{tag} {cmd}\r\n")
    data = read_response(r, tag)
    return parse_fetches(data), data.rsplit(b"\r\n", 2)[-2].decode()


def append(r, body, flags=""):
    flags = f" {flags}" if flags else ""
    r.send(f"a APPEND INBOX{flags} {{{len(body)}+}}\r\n".encode() + body + b"\r\n")
    resp = r.until_tag("a")
    assert resp[-1].startswith("a OK"), resp


def session(server, *msgs, examine=False):
    r = Raw(server)
    r.login()
    for m in msgs:
        append(r, m)
    resp = r.cmd("s", ("EXAMINE" if examine else "SELECT") + " INBOX")
    assert resp[-1].startswith("s OK"), resp
    return r


# --- expectations computed from the raw bytes ---

def split_header(b):
    i = b.index(b"\r\n\r\n") + 4
    return b[:i], b[i:]


def multipart_parts(body, boundary):
    chunks = (b"\r\n" + body).split(b"\r\n--" + boundary)
    return [c[2:] for c in chunks[1:-1]] + ([chunks[-1][2:]] if not chunks[-1].startswith(b"--") else [])


def test_body_sections(localserve):
    r = session(localserve, MULTI)
    hdr, text = split_header(MULTI)
    p1, p2, p3 = multipart_parts(text, b"outer")
    p3h, p3b = split_header(p3)
    ih, ib = split_header(INNER)
    i1, i2 = multipart_parts(ib, b"inner")
    want = {
        "BODY[]": MULTI,
        "BODY[HEADER]": hdr,
        "BODY[TEXT]": text,
        "BODY[1]": split_header(p1)[1],
        "BODY[1.MIME]": split_header(p1)[0],
        "BODY[2]": split_header(p2)[1],
        "BODY[2.MIME]": split_header(p2)[0],
        "BODY[3]": p3b,
        "BODY[3.MIME]": p3h,
        "BODY[3.HEADER]": ih,
        "BODY[3.TEXT]": ib,
        "BODY[3.1]": split_header(i1)[1],
        "BODY[3.2]": split_header(i2)[1],
        "BODY[3.2.MIME]": split_header(i2)[0],
        "RFC822.HEADER": hdr,
    }
    assert p3b == INNER
    assert split_header(i1)[1] == b"inner plain"
    items = " ".join(k.replace("BODY[", "BODY.PEEK[") if k.startswith("BODY") else k for k in want)
    res, ok = fetch(r, "f", f"FETCH 1 ({items})")
    assert ok.startswith("f OK"), ok
    got = res[1]
    for k, v in want.items():
        assert got[k] == v, k
    # Python's email package agrees on the parts.
    pm = email.message_from_bytes(MULTI, policy=email.policy.compat32)
    assert got["BODY[1]"] == pm.get_payload(0).get_payload().encode()
    assert got["BODY[3.2]"] == pm.get_payload(2).get_payload(0).get_payload(1).get_payload().encode()

    # HEADER.FIELDS keeps header order and the blank line; .NOT the complement; folded fields whole.
    res, ok = fetch(r, "g", "FETCH 1 (BODY.PEEK[HEADER.FIELDS (subject FROM x-long)] "
                    "BODY.PEEK[HEADER.FIELDS.NOT (Subject From To Date Message-ID X-Long)] "
                    "BODY.PEEK[3.HEADER.FIELDS (SUBJECT)] BODY.PEEK[HEADER.FIELDS (X-None)])")
    got = res[1]
    assert got["BODY[HEADER.FIELDS (subject FROM x-long)]"] == (
        b"From: Alice <alice@example.org>\r\nSubject: multi\r\nX-Long: a\r\n b\r\n\r\n")
    assert got["BODY[HEADER.FIELDS.NOT (Subject From To Date Message-ID X-Long)]"] == (
        b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"outer\"\r\n\r\n")
    assert got["BODY[3.HEADER.FIELDS (SUBJECT)]"] == b"Subject: inner\r\n\r\n"
    assert got["BODY[HEADER.FIELDS (X-None)]"] == b"\r\n"

    # Sections that do not exist are NIL; bad section syntax is BAD and the session goes on.
    res, ok = fetch(r, "h", "FETCH 1 (BODY.PEEK[4] BODY.PEEK[1.TEXT] BODY.PEEK[3.9])")
    assert ok.startswith("h OK")
    assert res[1] == {"BODY[4]": None, "BODY[1.TEXT]": None, "BODY[3.9]": None}
    for bad in ["BODY[MIME]", "BODY[0]", "BODY[1.]", "BODY[HEADER.FIELDS]", "BODY[HEADER.FIELDS ()]",
                "BINARY[HEADER]", "BINARY.SIZE[1]<0.1>", "BODY[TEXT x]"]:
        resp = r.cmd("b", f"FETCH 1 ({bad})")
        assert resp[-1].startswith("b BAD"), (bad, resp)

    # ENVELOPE / BODYSTRUCTURE come from the cache.
    res, ok = fetch(r, "e", "FETCH 1 (ENVELOPE BODYSTRUCTURE BODY)")
    assert b"multi" in str(res[1]["ENVELOPE"]).encode()
    bs = str(res[1]["BODYSTRUCTURE"]).upper()
    assert "MIXED" in bs and "RFC822" in bs and "ALTERNATIVE" in bs
    # Nothing above set \Seen.
    res, ok = fetch(r, "fl", "FETCH 1 (FLAGS)")
    assert res[1]["FLAGS"] == []
    r.close()


def test_binary(localserve):
    r = session(localserve, MULTI)
    pm = email.message_from_bytes(MULTI, policy=email.policy.compat32)
    qp = pm.get_payload(0).get_payload(decode=True)
    assert qp == "café soft".encode() + b"break = done\r\nline two".replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    r.send("f FETCH 1 (BINARY.PEEK[1] BINARY.PEEK[2] BINARY.SIZE[1] BINARY.SIZE[2] BINARY.PEEK[2]<3.5> "
           "BINARY.PEEK[3.1] BINARY.PEEK[2]<100000.5>)\r\n")
    data = read_response(r, "f")
    assert data.rsplit(b"\r\n", 2)[-2].startswith(b"f OK")
    got = parse_fetches(data)[1]
    assert got["BINARY[1]"] == (qp, True)
    assert got["BINARY[2]"] == (B64DATA, True)
    assert got["BINARY.SIZE[1]"] == str(len(qp)).encode()
    assert got["BINARY.SIZE[2]"] == str(len(B64DATA)).encode()
    assert got["BINARY[2]<3>"] == (B64DATA[3:8], True)
    assert got["BINARY[3.1]"] == (b"inner plain", True)
    assert got["BINARY[2]<100000>"] in ((b"", True), b"")
    assert b"BINARY[2] ~{%d}\r\n" % len(B64DATA) in data

    # An unknown transfer encoding: NO [UNKNOWN-CTE]; the session goes on.
    odd = msg("odd", "abc\r\n", "Content-Transfer-Encoding: x-uuencode\r\n")
    append(r, odd)
    r.cmd("n", "NOOP")
    resp = r.cmd("g", "FETCH 2 (BINARY.PEEK[1])")
    assert resp[-1].startswith("g NO [UNKNOWN-CTE]"), resp
    res, ok = fetch(r, "h", "FETCH 2 (BODY.PEEK[1])")
    assert res[2]["BODY[1]"] == b"abc\r\n"
    r.close()


# --- BINARY of tricky transfer encodings ---

def cte_msg(cte, body, ctype="text/plain"):
    return (f"From: Alice <alice@example.org>\r\nTo: mox@localhost\r\nSubject: cte\r\nMIME-Version: 1.0\r\n"
            f"Content-Type: {ctype}\r\nContent-Transfer-Encoding: {cte}\r\n\r\n").encode() + body


def binary_check(r, seq, sec, want, windows=()):
    """BINARY.SIZE, BINARY[] and the partial windows of one section against the decoded bytes."""
    items = [f"BINARY.SIZE[{sec}]", f"BINARY.PEEK[{sec}]"] + [f"BINARY.PEEK[{sec}]<{o}.{n}>" for o, n in windows]
    r.send(f"f FETCH {seq} ({' '.join(items)})\r\n")
    data = read_response(r, "f")
    assert data.rsplit(b"\r\n", 2)[-2].startswith(b"f OK"), data[-300:]
    got = parse_fetches(data)[seq]
    assert got[f"BINARY.SIZE[{sec}]"] == str(len(want)).encode()
    assert got[f"BINARY[{sec}]"] == (want, True)
    assert len({o for o, _ in windows}) == len(windows), "one window per offset: the response names only it"
    for o, n in windows:
        v = got[f"BINARY[{sec}]<{o}>"]
        assert (v[0] if isinstance(v, tuple) else v) == want[o:o + n], (o, n)


def qp_long():
    """A long quoted-printable text (several reads and decoding slices) and its decoding."""
    enc, dec = [], []
    for i in range(9000):
        enc.append(b"line %d caf=C3=a9 x=3d y  =\r\n" % i)
        dec.append(b"line %d caf\xc3\xa9 x= y  " % i)
        if i % 7 == 0:
            enc.append(b"end \t\r\n")
            dec.append(b"end\r\n")
    return b"".join(enc), b"".join(dec)


RAW8 = bytes(b for b in range(1, 256) if b not in (10, 13))


def test_binary_tricky(localserve):
    data = bytes((i * 7 + i // 251) % 256 for i in range(70000))
    b76 = base64.encodebytes(data).replace(b"\n", b"\r\n")
    qpe, qpd = qp_long()
    mixed = (b"From: a@example.org\r\nSubject: parts\r\nMIME-Version: 1.0\r\n"
             b"Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\n"
             b"--b\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\npart ends with equal=\r\n"
             b"--b\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nhalf escape=4\r\n"
             b"--b\r\nContent-Transfer-Encoding: base64\r\n\r\naGVsbG8gd29ybA\r\n"
             b"--b\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nblanks at the end \t \r\n"
             b"--b--\r\n")
    msgs = [
        (cte_msg("base64", b76, "application/octet-stream"), data),
        (cte_msg("BASE64", base64.b64encode(data), "application/octet-stream"), data),
        (cte_msg("base64", b"aGVs*bG8g d29y\tbGQ!!\r\n"), b"hello world"),
        (cte_msg("base64", b"aGVsbG8gd29ybA\r\n"), b"hello worl"),
        (cte_msg("base64", b"aGVsbG8=IHdvcmxk\r\n"), b"hello"),
        (cte_msg("quoted-printable", qpe), qpd),
        (cte_msg("Quoted-Printable", b"caf=c3=a9 lower =3d =3D\r\n"), "café lower = =\r\n".encode()),
        (cte_msg("quoted-printable", b"bad =ZZ =G1 =A! = x end\r\n"), b"bad =ZZ =G1 =A! =x end\r\n"),
        (cte_msg("quoted-printable", b"trailing equal="), b"trailing equal="),
        # Invalid escapes are kept as written (RFC 2045 6.7), lowercase digits too.
        (cte_msg("quoted-printable", b"lower bad =aZ end=a"), b"lower bad =aZ end=a"),
        (cte_msg("quoted-printable", b"soft = \t \r\nbreak  \r\nws  =\r\nkept\r\n"), b"soft break\r\nws  kept\r\n"),
        (cte_msg("8bit", "été\r\n".encode()), "été\r\n".encode()),
        (cte_msg("binary", RAW8 + b"\r\n", "application/octet-stream"), RAW8 + b"\r\n"),
    ]
    r = session(localserve, *(m for m, _ in msgs), mixed)
    # Windows at the decoding slices (16 KiB out of 64 KiB reads) and across one decoded escape.
    wins = [(0, 1), (1, 10), (16383, 3), (16384, 5), (49151, 2), (65535, 10), (40000, 40000)]
    for seq, (m, want) in enumerate(msgs, 1):
        binary_check(r, seq, "1", want, wins + [(max(len(want) - 3, 0), 10), (len(want), 1), (10 ** 9, 5)])
    binary_check(r, 7, "1", "café lower = =\r\n".encode(), [(3, 1), (4, 2)])
    n = len(msgs) + 1
    binary_check(r, n, "1", b"part ends with equal=", [(15, 100)])
    binary_check(r, n, "2", b"half escape=4", [(11, 1), (12, 1)])
    binary_check(r, n, "3", b"hello worl", [(9, 1)])
    binary_check(r, n, "4", b"blanks at the end", [(16, 5)])
    # The whole message and a multipart are sent as they are.
    binary_check(r, n, "", mixed, [(10, 20)])
    resp = r.cmd("z", "NOOP")
    assert resp[-1].startswith("z OK"), resp
    r.close()


def test_partials(localserve):
    r = session(localserve, MULTI)
    hdr, text = split_header(MULTI)
    res, ok = fetch(r, "f", "FETCH 1 (BODY.PEEK[]<0.10> BODY.PEEK[TEXT]<10.20> BODY.PEEK[HEADER]<5.100000> "
                    f"BODY.PEEK[]<{len(MULTI)}.10> BODY.PEEK[1]<99999999.1> "
                    "BODY.PEEK[HEADER.FIELDS (Subject)]<3.4>)")
    assert ok.startswith("f OK")
    got = res[1]
    assert got["BODY[]<0>"] == MULTI[:10]
    assert got["BODY[TEXT]<10>"] == text[10:30]
    assert got["BODY[HEADER]<5>"] == hdr[5:]
    assert got[f"BODY[]<{len(MULTI)}>"] == b""
    assert got["BODY[1]<99999999>"] == b""
    assert got["BODY[HEADER.FIELDS (Subject)]<3>"] == b"Subject: multi\r\n\r\n"[3:7]
    r.close()


def test_seen(localserve):
    r = session(localserve, msg("one"), msg("two"), msg("three"), msg("four"))
    # PEEK leaves \Seen alone.
    res, _ = fetch(r, "a1", "FETCH 1 (BODY.PEEK[TEXT])")
    assert "FLAGS" not in res[1]
    # BODY[...] sets \Seen and the response carries the new FLAGS.
    res, ok = fetch(r, "a2", "FETCH 1 (BODY[TEXT])")
    assert res[1]["FLAGS"] == [b"\\Seen"] and res[1]["BODY[TEXT]"] == b"body text\r\n"
    res, ok = fetch(r, "a3", "FETCH 2 (RFC822.TEXT)")
    assert res[2]["FLAGS"] == [b"\\Seen"] and res[2]["RFC822.TEXT"] == b"body text\r\n"
    res, ok = fetch(r, "a4", "UID FETCH 3 (BINARY[1])")
    assert res[3]["FLAGS"] == [b"\\Seen"]
    res, ok = fetch(r, "a5", "FETCH 4 (RFC822.HEADER BINARY.SIZE[1])")
    assert "FLAGS" not in res[4]
    # No second announcement of the same change.
    resp = r.cmd("n", "NOOP")
    assert not any("FETCH" in x for x in resp), resp
    res, ok = fetch(r, "a6", "FETCH 1:4 (FLAGS)")
    assert [res[i]["FLAGS"] for i in range(1, 5)] == [[b"\\Seen"]] * 3 + [[]]
    r.close()
    # Read-only: BODY[] does not set \Seen.
    r = session(localserve, examine=True)
    res, ok = fetch(r, "b1", "FETCH 4 (BODY[])")
    assert ok.startswith("b1 OK") and "FLAGS" not in res[4]
    r.close()
    r = session(localserve)
    res, ok = fetch(r, "b2", "FETCH 4 (FLAGS)")
    assert res[4]["FLAGS"] == []
    r.close()


def test_changedsince(localserve):
    r = session(localserve, msg("one"), msg("two"), msg("three"))
    res, ok = fetch(r, "a", "FETCH 1:* (MODSEQ)")
    top = max(int(res[i]["MODSEQ"][0]) for i in res)
    resp = r.cmd("s", "STORE 2 +FLAGS.SILENT (\\Flagged)")
    assert resp[-1].startswith("s OK")
    res, ok = fetch(r, "b", f"FETCH 1:* (FLAGS) (CHANGEDSINCE {top})")
    assert ok.startswith("b OK")
    assert list(res) == [2]
    assert res[2]["FLAGS"] == [b"\\Flagged"] and int(res[2]["MODSEQ"][0]) > top
    res, ok = fetch(r, "c", f"UID FETCH 1:* (UID) (CHANGEDSINCE {top + 100})")
    assert res == {}
    resp = r.cmd("d", "FETCH 1 (FLAGS) (CHANGEDSINCE x)")
    assert resp[-1].startswith("d BAD")
    r.close()


def rss_kb(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def test_slow_reader_memory_bounded(server_dir):
    # Under AddressSanitizer freed memory sits in a quarantine: keep it small so RSS shows what is held.
    old = os.environ.get("ASAN_OPTIONS")
    os.environ["ASAN_OPTIONS"] = (old + ":" if old else "") + "quarantine_size_mb=1"
    try:
        server_dir.start()
    finally:
        if old is None:
            del os.environ["ASAN_OPTIONS"]
        else:
            os.environ["ASAN_OPTIONS"] = old
    localserve = server_dir
    line = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789\r\n"
    big = msg("big", (line * (20 * 1024 * 1024 // len(line))).decode())
    r = session(localserve, big)
    pid = localserve.proc.pid
    time.sleep(0.2)
    base = rss_kb(pid)
    r.send("f FETCH 1 (BODY.PEEK[])\r\n")
    r.s.settimeout(30)
    head = b""
    while b"}\r\n" not in head:
        head += r.s.recv(100)
    pre, rest = head.split(b"}\r\n", 1)
    n = int(pre.rsplit(b"{", 1)[1])
    assert n == len(big)
    h = hashlib.sha256(rest)
    got = len(rest)
    peak = base
    while got < n:
        d = r.s.recv(min(32768, n - got))
        assert d
        h.update(d)
        got += len(d)
        if got % (1 << 20) < 32768:
            peak = max(peak, rss_kb(pid))
            time.sleep(0.05)
    r.buf = b""
    tail = r.until_tag("f")
    assert tail[-1].startswith("f OK"), tail
    assert h.hexdigest() == hashlib.sha256(big).hexdigest()
    # 20 MB went through; the server grew by far less.
    assert peak - base < 8 * 1024, (base, peak)
    r.close()


def test_many_messages_flags_fast(localserve):
    r = Raw(localserve)
    r.login()
    m = msg("x")
    for _ in range(20):
        r.send(b"a APPEND INBOX" + b"".join(b" (\\Flagged) {%d+}\r\n" % len(m) + m for _ in range(100)) + b"\r\n")
        resp = r.until_tag("a")
        assert resp[-1].startswith("a OK"), resp[-1]
    resp = r.cmd("s", "SELECT INBOX")
    assert "* 2000 EXISTS\r\n" in resp
    t = time.time()
    res, ok = fetch(r, "f", "FETCH 1:* (UID FLAGS)")
    took = time.time() - t
    assert ok.startswith("f OK") and len(res) == 2000
    assert all(v["FLAGS"] == [b"\\Flagged"] for v in res.values())
    assert res[2000]["UID"] == b"2000"
    assert took < 2.0, took
    res, ok = fetch(r, "g", "UID FETCH 1,1000,2000,5000 (FLAGS)")
    assert sorted(res) == [1, 1000, 2000]
    res, ok = fetch(r, "h", "FETCH 1:* (RFC822.SIZE INTERNALDATE)")
    assert len(res) == 2000 and res[7]["RFC822.SIZE"] == str(len(m)).encode()
    assert re.match(rb"\d\d-[A-Z][a-z]{2}-\d{4} \d\d:\d\d:\d\d [+-]\d{4}$", res[7]["INTERNALDATE"])
    r.close()


def test_vanished_file(localserve):
    r = session(localserve, msg("keep"), msg("gone"))
    files = [f for f in glob.glob(os.path.join(localserve.dir, "data", "**", "*"), recursive=True)
             if os.path.isfile(f) and re.search(r"/(new|cur)/", f) and b"Subject: gone" in open(f, "rb").read()]
    assert len(files) == 1
    os.unlink(files[0])
    resp = r.cmd("f", "FETCH 1:2 (UID BODY.PEEK[])")
    assert resp[-1].startswith("f NO [UNAVAILABLE]"), resp
    assert "(cid " in resp[-1]
    assert any("Subject: keep" in x for x in resp)
    # The server keeps answering, and the message is eventually expunged.
    deadline = time.time() + 10
    while time.time() < deadline:
        resp = r.cmd("n", "NOOP")
        if any("EXPUNGE" in x for x in resp):
            break
        time.sleep(0.2)
    assert any("EXPUNGE" in x for x in resp), resp
    res, ok = fetch(r, "g", "FETCH 1:* (BODY.PEEK[HEADER.FIELDS (Subject)])")
    assert ok.startswith("g OK") and list(res) == [1]
    r.close()


def test_vanished_modifier(localserve):
    r = Raw(localserve)
    r.login()
    for s in ("one", "two", "three"):
        append(r, msg(s))
    assert r.cmd("e", "ENABLE QRESYNC")[-1].startswith("e OK")
    assert r.cmd("s", "SELECT INBOX")[-1].startswith("s OK")
    res, ok = fetch(r, "a", "FETCH 1:* (MODSEQ)")
    top = max(int(res[i]["MODSEQ"][0]) for i in res)
    assert r.cmd("d", "UID STORE 2 +FLAGS.SILENT (\\Deleted)")[-1].startswith("d OK")
    assert r.cmd("x", "UID EXPUNGE 2")[-1].startswith("x OK")
    r.send(f"v UID FETCH 1:* (FLAGS) (CHANGEDSINCE {top} VANISHED)\r\n")
    data = read_response(r, "v")
    assert b"* VANISHED (EARLIER) 2\r\n" in data, data
    # VANISHED needs UID FETCH and CHANGEDSINCE.
    assert r.cmd("b", "FETCH 1:* (FLAGS) (CHANGEDSINCE 1 VANISHED)")[-1].startswith("b BAD")
    assert r.cmd("c", "UID FETCH 1:* (FLAGS) (VANISHED)")[-1].startswith("c BAD")
    # A single-part message is its own part 1.
    res, ok = fetch(r, "p", "FETCH 1 (BODY.PEEK[1] BINARY.PEEK[1] BODY.PEEK[1.MIME])")
    assert res[1]["BODY[1]"] == b"body text\r\n" and res[1]["BINARY[1]"] == (b"body text\r\n", True)
    r.close()


def test_client_leaves_during_fetch(localserve):
    big = msg("big", ("x" * 998 + "\r\n") * 5000)
    r = session(localserve, big, big)
    r.send("f FETCH 1:2 (BODY.PEEK[] BINARY.PEEK[1])\r\n")
    r.s.recv(1000)
    r.close()
    time.sleep(0.5)
    # Others are served; the server stops cleanly (nothing leaked or left waiting).
    r = session(localserve)
    res, ok = fetch(r, "g", "FETCH 2 (RFC822.SIZE)")
    assert ok.startswith("g OK") and res[2]["RFC822.SIZE"] == str(len(big)).encode()
    r.close()


def test_fetch_body_over_many_steps_announces_seen_once(localserve):
    """FETCH BODY[] of unseen messages larger together than one output step: each sets
    \\Seen, and the view counts it as announced once that message's whole response was
    written, step by step. Afterwards the session gets no second FETCH of those flags,
    and every message is \\Seen."""
    from test_imap_sync import session, untagged
    c = login(localserve)
    big = "".join(f"line {i:06d} " + "x" * 88 + "\r\n" for i in range(1000))  # about 100 KB
    for i in range(12):
        typ, _ = c.append("INBOX", None, None, msg(f"big{i}", body=big))
        assert typ == "OK"
    r = session(localserve)
    res = r.cmd("f", "FETCH 1:12 (BODY[])")
    assert res[-1].startswith("f OK"), res[-1]
    res += r.cmd("n", "NOOP")
    # A FETCH without BODY[] would be the change announced a second time.
    again = [l for l in untagged(res) if re.match(r"\* \d+ FETCH ", l) and "BODY[]" not in l]
    assert again == [], again
    typ, data = c.select("INBOX")
    typ, data = c.fetch("1:12", "(FLAGS)")
    assert typ == "OK" and len(data) == 12 and all(b"\\Seen" in d for d in data), data

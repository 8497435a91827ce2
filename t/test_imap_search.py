"""IMAP SEARCH / UID SEARCH: every search key against a fixture mailbox, ESEARCH, SEARCHRES, MODSEQ, errors."""
import base64
import imaplib
import re

from test_imap import Raw, login

MBOX = "S"


def m1():
    return (b"From: Alice <alice@example.org>\r\nTo: bob@example.com\r\nCc: carol@example.net\r\n"
            b"Bcc: dave@example.com\r\nSubject: Meeting tomorrow\r\n"
            b"Date: Mon, 7 Feb 1994 21:52:25 -0800\r\nMessage-ID: <m1@example.org>\r\n\r\n"
            b"Let's discuss the budget.\r\n")


def m2():
    body = base64.encodebytes("Schöne Grüße, das Büro ist geschlossen.\r\n".encode()).replace(b"\n", b"\r\n")
    return (b"From: =?ISO-8859-1?Q?J=F6rg_M=FCller?= <joerg@example.de>\r\nTo: mox@localhost\r\n"
            b"Subject: =?UTF-8?B?" + base64.b64encode("Grüße aus München".encode()) + b"?=\r\n"
            b"Date: Wed, 16 Mar 2022 00:30:00 +0100\r\nMessage-ID: <m2@example.de>\r\nMIME-Version: 1.0\r\n"
            b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n" + body)


def m3():
    return (b"From: shop@example.com\r\nTo: mox@localhost\r\nSubject: dessert\r\n"
            b"Date: Sun, 1 Jan 2023 10:00:00 +0000\r\nX-Priority: 1\r\nMIME-Version: 1.0\r\n"
            b"Content-Type: text/plain; charset=iso-8859-1\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
            b"Caf=E9 cr=E8me br=FBl=E9e and super=\r\ncalifragilistic words.\r\n")


def m4():
    att = base64.encodebytes(b"\x00\x01 hiddenword \x02" * 10).replace(b"\n", b"\r\n")
    filler = b"filler line of text to make this message large enough\r\n" * 100
    return (b"From: bob@example.com\r\nTo: mox@localhost\r\nSubject: invoice\r\n"
            b"Date: Thu, 2 Feb 2023 12:00:00 +0000\r\nMIME-Version: 1.0\r\n"
            b"Content-Type: multipart/mixed; boundary=\"XX\"\r\n\r\npreamble\r\n"
            b"--XX\r\nContent-Type: text/plain\r\n\r\nsee attached invoice\r\n" + filler +
            b"--XX\r\nContent-Type: text/html; charset=us-ascii\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
            b"<p>Unique=20phrase</p>\r\n"
            b"--XX\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n" + att +
            b"--XX\r\nContent-Type: message/rfc822\r\n\r\n"
            b"From: inner@example.com\r\nSubject: Inner subject\r\n\r\nnested content\r\n"
            b"--XX--\r\n")


def big_body():
    # Words placed across read-chunk and buffer boundaries.
    hdr = b"From: big@example.com\r\nTo: mox@localhost\r\nSubject: big\r\nDate: Fri, 3 Mar 2023 12:00:00 +0000\r\n\r\n"
    body = bytearray(b"." * 300000)
    words = {65536 - len(hdr) - 4: b"alphaword", 131072 - len(hdr) - 5: b"betaword",
             196608 - 3: b"gammaword", 299000: b"lastword"}
    for pos, w in words.items():
        body[pos:pos + len(w)] = w
    for i in range(100, 300000, 1000):
        body[i:i + 2] = b"\r\n"
    return hdr + bytes(body) + b"\r\n"


FIXTURE = [
    (m1, "(\\Seen \\Answered)", '"07-Feb-1994 21:52:25 -0800"'),
    (m2, "(\\Flagged $Forwarded custom1)", '"16-Mar-2022 10:00:00 +0000"'),
    (m3, "(\\Draft \\Deleted)", '"01-Jan-2023 23:59:59 -0500"'),
    (m4, "(\\Seen other)", '"02-Feb-2023 12:00:00 +0000"'),
    (big_body, None, '"03-Mar-2023 12:00:00 +0000"'),
]


def fill(server):
    c = login(server)
    c.create(MBOX)
    for fn, flags, date in FIXTURE:
        typ, data = c.append(MBOX, flags, date, fn())
        assert typ == "OK", data
    c.logout()
    r = Raw(server)
    r.login()
    assert r.cmd("s", f"SELECT {MBOX}")[-1].startswith("s OK")
    return r


def search(r, args, tag="x", cmd="SEARCH"):
    """Send a SEARCH (args str or bytes); return the set of numbers, asserting OK and one * SEARCH."""
    if isinstance(args, str):
        args = args.encode()
    r.send(f"{tag} {cmd} ".encode() + args + b"\r\n")
    lines = r.until_tag(tag)
    assert lines[-1].startswith(f"{tag} OK"), lines
    res = [ln for ln in lines if ln.startswith("* SEARCH")]
    assert len(res) == 1, lines
    return {int(x) for x in res[0].split()[2:] if x.isdigit()}


def lit(s):
    b = s.encode() if isinstance(s, str) else s
    return b"{%d+}\r\n" % len(b) + b


def test_flag_keys(localserve):
    r = fill(localserve)
    cases = {
        "ALL": {1, 2, 3, 4, 5}, "SEEN": {1, 4}, "UNSEEN": {2, 3, 5}, "ANSWERED": {1}, "UNANSWERED": {2, 3, 4, 5},
        "FLAGGED": {2}, "UNFLAGGED": {1, 3, 4, 5}, "DELETED": {3}, "UNDELETED": {1, 2, 4, 5},
        "DRAFT": {3}, "UNDRAFT": {1, 2, 4, 5}, "KEYWORD custom1": {2}, "KEYWORD CUSTOM1": {2},
        "UNKEYWORD custom1": {1, 3, 4, 5}, "KEYWORD $Forwarded": {2}, "UNKEYWORD $Forwarded": {1, 3, 4, 5},
        "KEYWORD nosuch": set(), "SEEN ANSWERED": {1}, "(SEEN) (KEYWORD other)": {4},
    }
    for q, want in cases.items():
        assert search(r, q) == want, q
    # RECENT/NEW/OLD: whatever counts as recent, OLD is its complement and NEW its unseen part.
    recent = search(r, "RECENT")
    assert recent == set()  # all were there before SELECT
    assert search(r, "OLD") == {1, 2, 3, 4, 5} - recent
    assert search(r, "NEW") == recent & {2, 3, 5}
    r.close()


def test_recent_new_old(localserve):
    r = fill(localserve)
    c = login(localserve)
    c.append(MBOX, None, None, b"From: late@example.com\r\nSubject: late\r\n\r\nlate arrival\r\n")
    c.append(MBOX, "(\\Seen)", None, b"From: late@example.com\r\nSubject: late2\r\n\r\nseen arrival\r\n")
    c.logout()
    lines = r.cmd("n", "NOOP")
    assert any(ln.startswith("* 7 EXISTS") for ln in lines), lines
    assert search(r, "RECENT") == {6, 7}
    assert search(r, "NEW") == {6}
    assert search(r, "OLD") == {1, 2, 3, 4, 5}
    assert search(r, "NOT RECENT FROM late") == set()
    r.close()


def test_size_date_keys(localserve):
    r = fill(localserve)
    assert search(r, "LARGER 100000") == {5}
    assert search(r, "LARGER 5000") == {4, 5}
    assert search(r, "SMALLER 5000") == {1, 2, 3}
    assert search(r, "SMALLER 1") == set()
    # INTERNALDATE, date only, in the zone it was given in.
    assert search(r, "BEFORE 1-Jan-2000") == {1}
    assert search(r, "ON 7-Feb-1994") == {1}
    assert search(r, "ON 1-Jan-2023") == {3}
    assert search(r, 'ON "16-Mar-2022"') == {2}
    assert search(r, "SINCE 2-Feb-2023") == {4, 5}
    assert search(r, "SINCE 1-Jan-2023 BEFORE 3-Mar-2023") == {3, 4}
    # Date header: m2 says 16 Mar 00:30 +0100 (15 Mar in UTC): the header's own date counts.
    assert search(r, "SENTON 16-Mar-2022") == {2}
    assert search(r, "SENTON 7-Feb-1994") == {1}
    assert search(r, "SENTBEFORE 1-Jan-2023") == {1, 2}
    assert search(r, "SENTSINCE 1-Jan-2023") == {3, 4, 5}
    assert search(r, "SENTSINCE 2-Feb-2023 SENTBEFORE 3-Mar-2023") == {4}
    # SAVEDATE (RFC 8514): messages were saved today.
    assert search(r, "SAVEDATESUPPORTED") == {1, 2, 3, 4, 5}
    assert search(r, "SAVEDBEFORE 1-Jan-2000") == set()
    assert search(r, "SAVEDSINCE 1-Jan-2000") == {1, 2, 3, 4, 5}
    r.close()


def test_header_keys(localserve):
    r = fill(localserve)
    assert search(r, "FROM alice") == {1}
    assert search(r, "FROM ALICE@EXAMPLE.ORG") == {1}
    assert search(r, "FROM example.com") == {3, 4, 5}
    assert search(r, "TO bob") == {1}
    assert search(r, "CC carol") == {1}
    assert search(r, "BCC dave") == {1}
    assert search(r, 'SUBJECT "meeting TOMORROW"') == {1}
    assert search(r, "SUBJECT invoice") == {4}
    # RFC 2047: raw form and decoded form both match (address headers too).
    assert search(r, "FROM joerg@example.de") == {2}
    assert search(r, "FROM =?ISO-8859-1?Q?J=F6rg") == {2}
    assert search(r, b"CHARSET UTF-8 FROM " + lit("jörg müller")) == {2}
    assert search(r, b"CHARSET UTF-8 SUBJECT " + lit("GRÜSSE") ) == set()
    assert search(r, b"CHARSET UTF-8 SUBJECT " + lit("GRÜßE AUS")) == {2}
    assert search(r, b"SUBJECT " + lit("münchen")) == {2}
    assert search(r, "HEADER X-Priority 1") == {3}
    assert search(r, 'HEADER x-priority ""') == {3}
    assert search(r, 'HEADER Message-ID ""') == {1, 2}
    assert search(r, "HEADER Message-ID m2@") == {2}
    assert search(r, 'HEADER X-Nope ""') == set()
    r.close()


def test_body_text_keys(localserve):
    r = fill(localserve)
    assert search(r, "BODY budget") == {1}
    assert search(r, "BODY meeting") == set()
    assert search(r, "TEXT meeting") == {1}
    assert search(r, "TEXT alice") == {1}
    # base64 UTF-8 body, case-insensitive beyond ASCII.
    assert search(r, b"CHARSET UTF-8 BODY " + lit("SCHÖNE GRÜßE")) == {2}
    assert search(r, b"BODY " + lit("büro")) == {2}
    # quoted-printable ISO-8859-1 body with a soft line break.
    assert search(r, b"BODY " + lit("café crème brûlée")) == {3}
    assert search(r, b"BODY " + lit("CAFÉ")) == {3}
    assert search(r, "BODY supercalifragilistic") == {3}
    # multipart: text/plain, QP text/html, an attachment (not text: not searched), an attached message.
    assert search(r, "BODY \"attached invoice\"") == {4}
    assert search(r, "BODY \"unique phrase\"") == {4}
    assert search(r, "BODY hiddenword") == set()
    assert search(r, "BODY \"nested content\"") == {4}
    assert search(r, "TEXT \"inner subject\"") == {4}
    # A large body: words across chunk boundaries.
    for w in ("alphaword", "betaword", "gammaword", "lastword"):
        assert search(r, "BODY " + w) == {5}, w
    assert search(r, "BODY ALPHAWORD BODY lastword") == {5}
    assert search(r, "BODY alphaword BODY nosuchword") == set()
    assert search(r, "OR BODY budget BODY lastword") == {1, 5}
    assert search(r, "NOT BODY budget") == {2, 3, 4, 5}
    assert search(r, "TEXT nosuchthing") == set()
    r.close()


def test_sets_and_logic(localserve):
    r = fill(localserve)
    assert search(r, "1:3") == {1, 2, 3}
    assert search(r, "2,4:*") == {2, 4, 5}
    assert search(r, "*") == {5}
    assert search(r, "4:2") == {2, 3, 4}
    assert search(r, "1:100") == {1, 2, 3, 4, 5}
    assert search(r, "UID 2:3") == {2, 3}
    assert search(r, "UID 4:*") == {4, 5}
    assert search(r, "UID 100:*") == {5}
    assert search(r, "2:5", cmd="UID SEARCH") == {2, 3, 4, 5}
    assert search(r, "UID 1,5", cmd="UID SEARCH") == {1, 5}
    assert search(r, "OR SEEN FLAGGED") == {1, 2, 4}
    assert search(r, "NOT SEEN") == {2, 3, 5}
    assert search(r, "NOT NOT SEEN") == {1, 4}
    assert search(r, "OR (SEEN ANSWERED) (DELETED DRAFT)") == {1, 3}
    assert search(r, "OR OR SEEN FLAGGED DELETED") == {1, 2, 3, 4}
    assert search(r, "NOT (OR SEEN FLAGGED) 1:4") == {3}
    assert search(r, "OR FROM alice BODY lastword NOT 5") == {1}
    assert search(r, "((((SEEN))))") == {1, 4}
    # Expunge one and check sequence numbers follow.
    assert r.cmd("e", "UID EXPUNGE 3")[-1].startswith("e OK")
    assert search(r, "ALL", cmd="UID SEARCH") == {1, 2, 4, 5}
    assert search(r, "ALL") == {1, 2, 3, 4}
    assert search(r, "FROM bob") == {3}
    r.close()


def esearch(r, args, tag="x", cmd="SEARCH"):
    r.send(f"{tag} {cmd} {args}\r\n")
    lines = r.until_tag(tag)
    assert lines[-1].startswith(f"{tag} OK"), lines
    assert not any(ln.startswith("* SEARCH") for ln in lines), lines
    es = [ln.rstrip("\r\n") for ln in lines if ln.startswith("* ESEARCH")]
    return es


def test_esearch_and_save(localserve):
    r = fill(localserve)
    assert esearch(r, "RETURN (MIN MAX COUNT ALL) UNFLAGGED") == ['* ESEARCH (TAG "x") MIN 1 MAX 5 COUNT 4 ALL 1,3:5']
    assert esearch(r, "RETURN () 1:5", cmd="UID SEARCH", tag="t2") == ['* ESEARCH (TAG "t2") UID ALL 1:5']
    assert esearch(r, "RETURN (COUNT) KEYWORD nosuch") == ['* ESEARCH (TAG "x") COUNT 0']
    assert esearch(r, "RETURN (MIN MAX ALL) KEYWORD nosuch") == ['* ESEARCH (TAG "x")']
    assert esearch(r, "RETURN (MAX) SEEN", cmd="UID SEARCH") == ['* ESEARCH (TAG "x") UID MAX 4']
    # SAVE alone: no ESEARCH; "$" then refers to the saved UIDs.
    assert esearch(r, "RETURN (SAVE) OR FLAGGED DELETED") == []
    assert search(r, "$") == {2, 3}
    assert search(r, "UID $ SEEN") == set()
    assert search(r, "NOT $") == {1, 4, 5}
    assert search(r, "$", cmd="UID SEARCH") == {2, 3}
    typ = r.cmd("f", "FETCH $ (UID)")
    assert sum(1 for ln in typ if ln.startswith("* ") and " FETCH " in ln) == 2, typ
    # "$" inside the command that saves refers to the previous result.
    assert esearch(r, "RETURN (SAVE COUNT) OR $ SEEN") == ['* ESEARCH (TAG "x") COUNT 4']
    assert search(r, "$") == {1, 2, 3, 4}
    # SAVE with MIN only saves the minimum.
    assert esearch(r, "RETURN (SAVE MIN) ALL") == ['* ESEARCH (TAG "x") MIN 1']
    assert search(r, "$") == {1}
    assert esearch(r, "RETURN (SAVE MIN MAX) UNSEEN") == ['* ESEARCH (TAG "x") MIN 2 MAX 5']
    assert search(r, "$", cmd="UID SEARCH") == {2, 5}
    # Expunged messages leave the saved result.
    assert esearch(r, "RETURN (SAVE) 2:3") == []
    assert r.cmd("e", "UID EXPUNGE 3")[-1].startswith("e OK")
    assert search(r, "$", cmd="UID SEARCH") == {2}
    # A failed SEARCH with SAVE empties "$".
    r.send("b SEARCH RETURN (SAVE) CHARSET X-NOPE ALL\r\n")
    assert r.until_tag("b")[-1].startswith("b NO [BADCHARSET")
    assert search(r, "$") == set()
    r.close()


def test_imap4rev2_gets_esearch(localserve):
    r = fill(localserve)
    assert r.cmd("e", "ENABLE IMAP4rev2")[-1].startswith("e OK")
    assert esearch(r, "SEEN") == ['* ESEARCH (TAG "x") ALL 1,4']
    assert esearch(r, "SEEN", cmd="UID SEARCH") == ['* ESEARCH (TAG "x") UID ALL 1,4']
    assert esearch(r, "KEYWORD nosuch") == ['* ESEARCH (TAG "x")']
    assert esearch(r, "RETURN (COUNT) SEEN") == ['* ESEARCH (TAG "x") COUNT 2']
    # IMAP4rev2 allows UTF-8 in quoted strings.
    r.send('u SEARCH SUBJECT "MÜNCHEN"\r\n'.encode())
    lines = r.until_tag("u")
    assert lines[-1].startswith("u OK") and lines[0].rstrip() == '* ESEARCH (TAG "u") ALL 2', lines
    r.close()


def test_modseq(localserve):
    r = fill(localserve)
    lines = r.cmd("f", "FETCH 1:* (MODSEQ)")
    mods = {int(m.group(1)): int(m.group(2)) for m in (re.match(r"\* (\d+) FETCH \(MODSEQ \((\d+)\)\)", ln) for ln in lines) if m}
    assert len(mods) == 5
    lines = r.cmd("s", "STORE 4 +FLAGS.SILENT (\\Flagged)")
    assert lines[-1].startswith("s OK"), lines
    lines = r.cmd("f", "FETCH 4 (MODSEQ)")
    m4 = int(re.search(r"MODSEQ \((\d+)\)", lines[0]).group(1))
    assert m4 > max(mods.values())
    r.send(f"a SEARCH MODSEQ {m4}\r\n")
    lines = r.until_tag("a")
    assert lines[0].rstrip() == f"* SEARCH 4 (MODSEQ {m4})", lines
    r.send(f'a SEARCH MODSEQ "/flags/\\\\flagged" all {mods[1]}\r\n')
    lines = r.until_tag("a")
    assert lines[-1].startswith("a OK") and lines[0].rstrip() == f"* SEARCH 1 2 3 4 5 (MODSEQ {m4})", lines
    r.send(f"a SEARCH MODSEQ {m4 + 1}\r\n")
    lines = r.until_tag("a")
    assert lines[0].rstrip() == "* SEARCH", lines
    assert esearch(r, f"RETURN (MIN COUNT) MODSEQ {mods[1]}", cmd="UID SEARCH") == [
        f'* ESEARCH (TAG "x") UID MIN 1 COUNT 5 MODSEQ {m4}']
    assert esearch(r, f"RETURN (MIN) MODSEQ {mods[1]}") == [f'* ESEARCH (TAG "x") MIN 1 MODSEQ {mods[1]}']
    r.close()


def test_charset_and_errors(localserve):
    r = fill(localserve)
    assert search(r, "CHARSET UTF-8 SEEN") == {1, 4}
    assert search(r, "CHARSET us-ascii FROM alice") == {1}
    assert search(r, "RETURN (ALL) CHARSET UTF-8 SEEN".replace("RETURN (ALL) ", "")) == {1, 4}
    r.send("b SEARCH CHARSET KOI8-R FROM alice\r\n")
    ln = r.until_tag("b")[-1]
    assert ln.startswith("b NO [BADCHARSET (UTF-8 US-ASCII)]"), ln
    bad = ["FOO", "FROM", "", "BEFORE 32-Foo-2020", "BEFORE 2020-01-01", "OR SEEN", "NOT", "LARGER x",
           "UID", "UID abc", "KEYWORD", "KEYWORD \\Seen", "RETURN (BOGUS) ALL", "RETURN ALL", "HEADER", "HEADER X",
           "MODSEQ", "MODSEQ \"/flags/x\" bogus 1", "SEEN )", "CHARSET", "1:0", "(SEEN", "()"]
    for q in bad:
        r.send(f"b SEARCH {q}\r\n")
        lines = r.until_tag("b")
        assert lines[-1].startswith("b BAD"), (q, lines)
        assert not any(ln.startswith("* SEARCH") for ln in lines), (q, lines)
    assert r.cmd("n", "NOOP")[-1].startswith("n OK")
    assert search(r, "SEEN") == {1, 4}
    r.close()


def test_search_needs_selected_and_imaplib(localserve):
    r = fill(localserve)
    r2 = Raw(localserve)
    r2.login()
    ln = r2.cmd("a", "SEARCH ALL")[-1]
    assert ln.startswith("a NO") or ln.startswith("a BAD"), ln
    r2.close()
    c = login(localserve)
    c.select(MBOX)
    typ, data = c.search(None, "FROM", '"alice"')
    assert typ == "OK" and data == [b"1"]
    typ, data = c.uid("SEARCH", "SEEN")
    assert typ == "OK" and data == [b"1 4"]
    typ, data = c.search("UTF-8", "UNSEEN")
    assert typ == "OK" and data == [b"2 3 5"]
    c.logout()
    r.close()


def test_large_mailbox_flag_search(localserve):
    """Many messages: a flag search answers from the index; a body search finds the one message."""
    c = login(localserve)
    c.create("Many")
    for i in range(300):
        c.append("Many", "(\\Flagged)" if i % 100 == 7 else None, None,
                 f"From: x@example.com\r\nSubject: n{i}\r\n\r\nbody {i} {'needle' if i == 250 else ''}\r\n".encode())
    c.select("Many")
    typ, data = c.search(None, "FLAGGED")
    assert data == [b"8 108 208"]
    typ, data = c.search(None, "BODY", "needle")
    assert data == [b"251"]
    typ, data = c.search(None, "SUBJECT", "n299")
    assert data == [b"300"]
    c.logout()


def test_qp_held_back_bytes_at_part_end(localserve):
    """Quoted-printable holds back a '=' or '=X' until the next byte tells whether it is an escape; at
    the very end of a part they are text as written, and a search for them must see them."""
    hdr = (b"From: qp@example.com\r\nTo: mox@localhost\r\nMIME-Version: 1.0\r\n"
           b"Content-Type: text/plain; charset=us-ascii\r\nContent-Transfer-Encoding: quoted-printable\r\n")
    msgs = [
        hdr + b"Subject: one\r\n\r\nthe code is zqend=4",       # '=X' at the end of the message
        hdr + b"Subject: two\r\n\r\nthe sum is qxprice=",        # a lone '=' at the end
        (b"From: qp@example.com\r\nTo: mox@localhost\r\nSubject: three\r\nMIME-Version: 1.0\r\n"
         b"Content-Type: multipart/mixed; boundary=\"B\"\r\n\r\n"
         b"--B\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
         b"first part ends in pqpart=A\r\n"
         b"--B\r\nContent-Type: text/plain\r\n\r\nsecond part\r\n--B--\r\n"),
    ]
    c = login(localserve)
    c.create("QPEnd")
    for m in msgs:
        typ, data = c.append("QPEnd", None, None, m)
        assert typ == "OK", data
    c.logout()
    r = Raw(localserve)
    r.login()
    assert r.cmd("s", "SELECT QPEnd")[-1].startswith("s OK")
    assert search(r, "BODY zqend") == {1}
    assert search(r, "BODY zqend=4") == {1}
    assert search(r, "TEXT \"code is zqend=4\"") == {1}
    assert search(r, "BODY qxprice=") == {2}
    assert search(r, "BODY pqpart=A") == {3}
    assert search(r, "BODY \"pqpart=A second\"") == set()  # parts are separate texts
    assert search(r, "BODY \"second part\"") == {3}
    r.close()

"""The fake DNS server of the protocol tests answers like a DNS server."""
import random
import socket
import struct

import pytest

from dnsserver import DNSServer, TYPES, _encode_name, _read_name


RECORDS = {
    ("example.org", "TXT"): ["v=spf1 ip4:127.0.0.1 mx -all"],
    ("example.org", "MX"): [(10, "mx.example.org"), (20, "mx2.example.org.")],
    ("Mx.Example.org.", "A"): ["127.0.0.1", "127.0.0.2"],
    ("mx.example.org", "AAAA"): ["::1"],
    ("1.0.0.127.in-addr.arpa", "PTR"): ["mx.example.org"],
    ("multi.example.org", "TXT"): [["v=DKIM1; k=rsa; ", "p=abc"], "x" * 300],
    ("broken.example.org", "TXT"): DNSServer.SERVFAIL,
    ("slow.example.org", "TXT"): DNSServer.DROP,
}


@pytest.fixture
def dns():
    srv = DNSServer(RECORDS).start()
    yield srv
    srv.stop()


def query(port, name, qtype, timeout=1.0):
    """Send one query; returns (rcode, [(type, rdata bytes, offset)], packet) or None on timeout."""
    qid = random.randrange(65536)
    pkt = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0) + _encode_name(name) + struct.pack(">HH", TYPES[qtype], 1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.sendto(pkt, ("127.0.0.1", port))
        try:
            resp = s.recv(65535)
        except socket.timeout:
            return None
    rid, flags, qd, an = struct.unpack(">HHHH", resp[:8])
    assert rid == qid
    assert flags & 0x8000
    off = 12
    for _ in range(qd):
        _, off = _read_name(resp, off)
        off += 4
    answers = []
    for _ in range(an):
        _, off = _read_name(resp, off)
        rtype, _, _, rdlen = struct.unpack(">HHIH", resp[off:off + 10])
        off += 10
        answers.append((rtype, resp[off:off + rdlen], off))
        off += rdlen
    return flags & 0xF, answers, resp


def txt_strings(rdata):
    out, i = [], 0
    while i < len(rdata):
        n = rdata[i]
        out.append(rdata[i + 1:i + 1 + n])
        i += 1 + n
    return out


def test_a_aaaa_case_insensitive(dns):
    rcode, ans, _ = query(dns.port, "MX.example.ORG", "A")
    assert rcode == 0
    assert [socket.inet_ntop(socket.AF_INET, a[1]) for a in ans] == ["127.0.0.1", "127.0.0.2"]
    rcode, ans, _ = query(dns.port, "mx.example.org.", "AAAA")
    assert [socket.inet_ntop(socket.AF_INET6, a[1]) for a in ans] == ["::1"]


def test_mx_ptr(dns):
    rcode, ans, pkt = query(dns.port, "example.org", "MX")
    assert rcode == 0
    got = []
    for _, rd, off in ans:
        pref = struct.unpack(">H", rd[:2])[0]
        host, _ = _read_name(pkt, off + 2)
        got.append((pref, host))
    assert got == [(10, "mx.example.org"), (20, "mx2.example.org")]
    rcode, ans, pkt = query(dns.port, "1.0.0.127.in-addr.arpa", "PTR")
    assert _read_name(pkt, ans[0][2])[0] == "mx.example.org"


def test_txt(dns):
    rcode, ans, _ = query(dns.port, "example.org", "TXT")
    assert txt_strings(ans[0][1]) == [b"v=spf1 ip4:127.0.0.1 mx -all"]
    rcode, ans, _ = query(dns.port, "multi.example.org", "TXT")
    assert txt_strings(ans[0][1]) == [b"v=DKIM1; k=rsa; ", b"p=abc"]
    # A long str is split into 255-byte character-strings.
    assert [len(s) for s in txt_strings(ans[1][1])] == [255, 45]


def test_nxdomain_nodata_servfail_drop(dns):
    assert query(dns.port, "nope.example.org", "A")[:2] == (3, [])
    assert query(dns.port, "example.org", "A")[:2] == (0, [])
    assert query(dns.port, "broken.example.org", "TXT")[:2] == (2, [])
    assert query(dns.port, "slow.example.org", "TXT", timeout=0.3) is None
    assert ("slow.example.org", "TXT") in dns.queries


def test_records_change_while_running(dns):
    dns.records[("new.example.org", "A")] = ["192.0.2.1"]
    rcode, ans, _ = query(dns.port, "new.example.org", "A")
    assert rcode == 0 and ans[0][1] == bytes([192, 0, 2, 1])


def test_garbage_is_ignored(dns):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(b"\x01\x02garbage", ("127.0.0.1", dns.port))
        s.sendto(b"\xff" * 40, ("127.0.0.1", dns.port))
    # Still answers afterwards.
    assert query(dns.port, "example.org", "TXT")[0] == 0

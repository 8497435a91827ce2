"""A tiny authoritative-looking DNS server for protocol tests.

UDP on 127.0.0.1 at a free port, answering from a dict:

    srv = DNSServer({
        ("example.org", "TXT"): ["v=spf1 ip4:127.0.0.1 -all"],
        ("example.org", "MX"): [(10, "mx.example.org")],
        ("mx.example.org", "A"): ["127.0.0.1"],
        ("mx.example.org", "AAAA"): ["::1"],
        ("1.0.0.127.in-addr.arpa", "PTR"): ["mx.example.org"],
        ("broken.example.org", "TXT"): DNSServer.SERVFAIL,
        ("slow.example.org", "TXT"): DNSServer.DROP,
    })
    srv.start(); ... srv.port ...; srv.stop()

Names compare case-insensitively, trailing dot optional. A TXT value is a
str (split into 255-byte character-strings) or a list of str/bytes (one
character-string each). A name with any record answers other types with
NOERROR and no answers (NODATA); an unknown name answers NXDOMAIN.
srv.records may be changed while the server runs; srv.queries lists the
(name, type) pairs asked, in order. Pure Python standard library.
"""

import ipaddress
import socket
import struct
import threading

TYPES = {"A": 1, "NS": 2, "CNAME": 5, "SOA": 6, "PTR": 12, "MX": 15, "TXT": 16, "AAAA": 28}
TYPE_NAMES = {v: k for k, v in TYPES.items()}


def _norm(name):
    return name.rstrip(".").lower()


def _encode_name(name):
    out = b""
    name = name.rstrip(".")
    if name:
        for label in name.split("."):
            raw = label.encode("utf-8")
            if not raw or len(raw) > 63:
                raise ValueError("bad label in %r" % name)
            out += bytes([len(raw)]) + raw
    return out + b"\0"


def _read_name(pkt, off):
    labels = []
    jumped = False
    end = off
    hops = 0
    while True:
        if off >= len(pkt):
            raise ValueError("short name")
        n = pkt[off]
        if n & 0xC0 == 0xC0:
            if off + 1 >= len(pkt) or hops > 32:
                raise ValueError("bad pointer")
            if not jumped:
                end = off + 2
            jumped = True
            hops += 1
            off = ((n & 0x3F) << 8) | pkt[off + 1]
            continue
        if n == 0:
            if not jumped:
                end = off + 1
            break
        labels.append(pkt[off + 1:off + 1 + n].decode("utf-8", "replace"))
        off += 1 + n
    return ".".join(labels), end


def _rdata(rtype, value):
    if rtype == 1:
        return ipaddress.IPv4Address(value).packed
    if rtype == 28:
        return ipaddress.IPv6Address(value).packed
    if rtype == 15:
        pref, host = value
        return struct.pack(">H", pref) + _encode_name(host)
    if rtype in (12, 5, 2):
        return _encode_name(value)
    if rtype == 16:
        parts = value if isinstance(value, (list, tuple)) else None
        if parts is None:
            raw = value.encode("utf-8") if isinstance(value, str) else value
            parts = [raw[i:i + 255] for i in range(0, len(raw), 255)] or [b""]
        out = b""
        for p in parts:
            raw = p.encode("utf-8") if isinstance(p, str) else p
            out += bytes([len(raw)]) + raw
        return out
    raise ValueError("unsupported type %d" % rtype)


class DNSServer:
    """UDP DNS server on 127.0.0.1; see the module docstring."""

    SERVFAIL = "SERVFAIL"
    DROP = "DROP"

    def __init__(self, records=None, ttl=60):
        self.records = dict(records or {})
        self.ttl = ttl
        self.queries = []
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self._thread = None
        self._stop = threading.Event()

    @property
    def address(self):
        """The resolver string for the daemon: "127.0.0.1@port"."""
        return "127.0.0.1@%d" % self.port

    def _lookup(self, name, rtype):
        name = _norm(name)
        tname = TYPE_NAMES.get(rtype)
        known = False
        for (rname, rt), vals in self.records.items():
            if _norm(rname) != name:
                continue
            known = True
            if tname is not None and rt.upper() == tname:
                return 0, vals
        return (0 if known else 3), []

    def answer(self, pkt):
        """The response to one query packet (bytes), or None to drop it."""
        if len(pkt) < 12:
            return None
        qid, flags, qd = struct.unpack(">HHH", pkt[:6])
        if flags & 0x8000 or qd != 1:
            return None
        qname, off = _read_name(pkt, 12)
        qtype, qclass = struct.unpack(">HH", pkt[off:off + 4])
        question = pkt[12:off + 4]
        self.queries.append((qname.rstrip(".").lower(), TYPE_NAMES.get(qtype, str(qtype))))
        rcode, vals = self._lookup(qname, qtype)
        if vals == self.DROP:
            return None
        if vals == self.SERVFAIL:
            rcode, vals = 2, []
        answers = b""
        for v in vals:
            rd = _rdata(qtype, v)
            # Owner as a pointer to the question name at offset 12.
            answers += struct.pack(">HHHIH", 0xC00C, qtype, qclass, self.ttl, len(rd)) + rd
        # QR, AA, RD copied, RA; no EDNS in the answer (allowed).
        rflags = 0x8000 | 0x0400 | (flags & 0x0100) | 0x0080 | rcode
        hdr = struct.pack(">HHHHHH", qid, rflags, 1, len(vals), 0, 0)
        return hdr + question + answers

    def _serve(self):
        self.sock.settimeout(0.1)
        while not self._stop.is_set():
            try:
                pkt, peer = self.sock.recvfrom(4096)
            except socket.timeout:
                continue
            except OSError:
                break
            try:
                resp = self.answer(pkt)
            except (ValueError, struct.error):
                resp = None
            if resp is None:
                continue
            if len(resp) > 512 and not self._has_edns(pkt):
                # Truncated: header only with TC set; resolvers retry over TCP,
                # which this server does not offer: keep records small.
                resp = resp[:2] + struct.pack(">H", struct.unpack(">H", resp[2:4])[0] | 0x0200) + b"\0" * 8
            try:
                self.sock.sendto(resp, peer)
            except OSError:
                pass

    @staticmethod
    def _has_edns(pkt):
        return len(pkt) >= 12 and struct.unpack(">H", pkt[10:12])[0] > 0

    def start(self):
        self._thread = threading.Thread(target=self._serve, name="dnsserver", daemon=True)
        self._thread.start()
        return self

    def stop(self):
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2)
            self._thread = None
        self.sock.close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

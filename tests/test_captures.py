"""Captures from other MPTCP implementations as an external oracle for the layers and the crypto.

The captures live outside the repository, in ``../shared/captures`` (see its README); without
that folder the tests that read them skip. Three kinds of check:

1. every MPTCP option in a capture with a tcpdump ``.out`` decodes to the fields tcpdump printed;
2. the crypto gives the values others computed (the captures' README, the kernel's HMAC test);
3. the captures agree with themselves: MP_JOIN tokens name the key of the peer joined to, the
   MP_JOIN HMACs and the DSS checksums verify with the keys from MP_CAPABLE.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
from scapy.config import conf
from scapy.layers.inet import IP, TCP
from scapy.layers.inet6 import IPv6
from scapy.layers.ppp import PPP
from scapy.packet import Packet
from scapy.utils import RawPcapReader, rdpcap
from capture_paths import SHARED
from tcpdump_text import ABSENT, expected_options, frames, parse_mptcp, tcp_options

from mptcplab import crypto
from mptcplab.layers import (
    MPDSS,
    MPAddAddr,
    MPJoin,
    MPMalformed,
    MPTCPOption,
    craft,
    mptcp_options,
)

CAPTURES = SHARED

# Captures with tcpdump's expected decode next to them (X.pcap + X.out).
OUT_CAPTURES = [
    "mptcp-v0.pcap", "mptcp-v1.pcap", "mptcp-aa-v1.pcap", "mptcp-aa-echo.pcap",
    "mptcp-fclose.pcap", "mptcp-tcprst.pcap", "mptcp-dss-oobr.pcap",
]
BIG_CAPTURES = ["iperf-mptcp-0-0.pcap", "neohapsis_mptcp_challenge.pcapng"]
ALL_CAPTURES = OUT_CAPTURES + BIG_CAPTURES


# ---------------------------------------------------------------------------------------------
# Reading the captures, each once per module


# The option headers part 3 needs, as bytes anywhere in a frame: kind 30, a length, the subtype
# byte. A frame matching by accident (payload) is dropped once decoded; a frame the pattern missed
# would show as a count below tcpdump's.
_NEEDED = re.compile(
    rb"\x1e[\x04\x0c\x14\x16\x18][\x00\x01]"                        # MP_CAPABLE v0/v1
    rb"|\x1e[\x0c\x10\x18][\x10\x11]"                                # MP_JOIN, B clear or set
    rb"|\x1e[\x08\x0a\x10\x12\x14\x16\x1c\x1e][\x30\x31\x34\x36]"    # ADD_ADDR v1, echo, v0
    rb"|\x1e[\x0e-\x1c]\x20[\x04-\x1f]",                             # DSS long enough to map
    re.DOTALL)
LINK_LAYERS = {**conf.l2types.num2layer, 9: PPP}   # Scapy's link types, and iperf's (PPP)


class Captures:
    """The captures, each read at most once: whole (small ones) or only the frames part 3 needs."""

    def __init__(self) -> None:
        self._whole: dict[str, list[Packet]] = {}
        self._scans: dict[str, Scan] = {}

    def whole(self, name: str) -> list[Packet]:
        """Every frame, in order (frame N is item N-1)."""
        if name not in self._whole:
            self._whole[name] = list(rdpcap(str(CAPTURES / name)))
        return self._whole[name]

    def needed(self, name: str) -> list[tuple[int, Packet]]:
        """(frame number, packet) for the frames that may carry MP_CAPABLE, MP_JOIN, ADD_ADDR
        or a DSS mapping; Scapy builds only those (the iperf capture is 2.5 MB)."""
        picked: list[tuple[int, Packet]] = []
        with RawPcapReader(str(CAPTURES / name)) as reader:
            for number, (data, meta) in enumerate(reader, 1):
                if _NEEDED.search(data):
                    linktype = getattr(meta, "linktype", None) or reader.linktype
                    picked.append((number, LINK_LAYERS[linktype](data)))
        return picked

    def scan(self, name: str) -> Scan:
        """Part 3's reading of the capture (see ``scan``), done once."""
        if name not in self._scans:
            self._scans[name] = scan(self.needed(name))
        return self._scans[name]


@pytest.fixture(scope="module")
def captures() -> Captures:
    if not CAPTURES.is_dir():
        pytest.skip(f"the public captures are not at {CAPTURES} (kept outside the repository)")
    return Captures()


def _tcp_payload(tcp: TCP) -> bytes:
    """The segment's data as captured, without link-layer padding."""
    ip = tcp.underlayer
    ip_payload = ip.len - ip.ihl * 4 if isinstance(ip, IP) else ip.plen
    return bytes(tcp.original)[tcp.dataofs * 4:ip_payload]


# ---------------------------------------------------------------------------------------------
# 1. Every option decodes to what tcpdump printed


def _differences(expected: dict[str, Any], decoded: dict[str, Any]) -> dict[str, Any]:
    """The expected fields the decoded option does not have (ABSENT: must not be there)."""
    wrong = {}
    for name, want in expected.items():
        got = decoded.get(name, ABSENT)
        ok = got in want if isinstance(want, frozenset) else got == want
        if not ok:
            wrong[name] = want
    return wrong


def test_every_capture_with_an_out_file_is_compared(captures: Captures) -> None:
    present = {p.name for p in CAPTURES.glob("*.pcap*") if p.with_suffix(".out").exists()}
    assert present == set(OUT_CAPTURES)


@pytest.mark.parametrize("name", OUT_CAPTURES)
def test_options_match_tcpdump(name: str, captures: Captures) -> None:
    packets = captures.whole(name)
    expected = dict(expected_options(CAPTURES / name.replace(".pcap", ".out")))
    assert sorted(expected) == list(range(1, len(packets) + 1)), \
        f"{name}: the .out's frame numbers are not the pcap's 1..{len(packets)}"
    problems: list[str] = []
    compared = 0
    for number, pkt in enumerate(packets, 1):
        decoded = [opt.as_dict() for opt in mptcp_options(pkt[TCP])] if TCP in pkt else []
        texts = expected[number]
        if len(decoded) != len(texts):
            problems.append(f"frame {number}: tcpdump shows {len(texts)} MPTCP options {texts}, "
                            f"decoded {len(decoded)}: {decoded}")
            continue
        for index, (text, got) in enumerate(zip(texts, decoded), 1):
            want = parse_mptcp(text)
            compared += 1
            wrong = _differences(want, got)
            if wrong:
                problems.append(
                    f"frame {number} option {index} `{text}`:\n"
                    f"    expected {', '.join(_show(k, v) for k, v in wrong.items())}\n"
                    f"    decoded  {', '.join(_show(k, got.get(k, ABSENT)) for k in wrong)}\n"
                    f"    (whole decode {got})")
    if problems:
        pytest.fail(f"{name}: {len(problems)} of {compared} options differ from tcpdump:\n"
                    + "\n".join(problems[:10]), pytrace=False)
    assert compared > 0, f"{name}: no MPTCP option compared"


def _show(name: str, value: Any) -> str:
    """A field as tcpdump would show it: keys, tokens, nonces, HMACs and checksums in hex."""
    hex_fields = {"sender_key", "receiver_key", "token", "nonce", "truncated_hmac", "hmac",
                  "checksum"}
    if name in hex_fields and isinstance(value, int) and not isinstance(value, bool):
        return f"{name}={value:#x}"
    return f"{name}={value!r}"


def test_malformed_dss_is_kept_and_the_rest_decodes(captures: Captures) -> None:
    """mptcp-dss-oobr.pcap: a 3-byte DSS (no room for its flags) between valid options."""
    (pkt,) = captures.whole("mptcp-dss-oobr.pcap")
    shown = tcp_options(frames(CAPTURES / "mptcp-dss-oobr.out")[1])
    mss = re.fullmatch(r"mss (\d+)", shown[0])
    ts = re.fullmatch(r"TS val (\d+) ecr (\d+)", shown[2])
    assert mss and ts and shown[1::2] == ["sackOK", "mptcp 3 dss[bad opt]"], shown
    want = [("MSS", int(mss[1])), ("SAckOK", b""), ("Timestamp", (int(ts[1]), int(ts[2])))]
    options = pkt[TCP].options
    assert options[:3] == want, f"expected {want} before the bad DSS, decoded {options}"
    (bad,) = mptcp_options(pkt[TCP])
    assert isinstance(bad, MPMalformed), f"expected MPMalformed, decoded {bad!r}"
    d = bad.as_dict()
    assert (d["malformed"], d["subtype"], d["length"], d["raw"][:4]) == (True, "DSS", 3, "1e03"), d


NOT_SHOWN = "<not shown>"


# Forms of tcpdump's text no capture here holds, so the parser is checked on them too.
@pytest.mark.parametrize("text, fields", [
    ("mptcp 12 join backup id 2 token 0xa35d6d82 nonce 0x7",
     {"backup": True, "addr_id": 2, "token": 0xA35D6D82, "nonce": 7}),
    ("mptcp 22 add-addr v0-ip6 id 3 2001:db8::1:8080",
     {"version": 0, "ipver": 6, "addr": "2001:db8::1", "port": 8080}),
    ("mptcp 18 add-addr v1 id 1 10.0.2.1:443 hmac 0x1",
     {"version": 1, "echo": False, "addr": "10.0.2.1", "port": 443, "hmac": 1}),
    ("mptcp 22 dss ack 5 seq 4294967296 subseq 1 len 2",
     {"data_ack": 5, "data_ack_len": 4, "dsn_len": 8, "flags": "mMA", "checksum": ABSENT}),
    # 4+4+8+6 or 4+8+4+6 bytes: the widths stay undecided, and are not compared.
    ("mptcp 22 dss ack 5 seq 6 subseq 1 len 2",
     {"data_ack": 5, "dsn": 6, "data_ack_len": NOT_SHOWN, "dsn_len": NOT_SHOWN,
      "flags": NOT_SHOWN}),
    ("mptcp 4 prio backup id 4", {"subtype": "MP_PRIO", "backup": True, "addr_id": 4}),
    ("mptcp 12 fail seq 77", {"subtype": "MP_FAIL", "dsn": 77}),
    ("mptcp 5 rem-addr id 1 2", {"addr_ids": [1, 2]}),
    ("mptcp 4 tcprst flags [UT] reason unknown (0x09)", {"flags": "UT", "reason": 9}),
    # With the A flag tcpdump does not print the 22-byte form's data-level length.
    ("mptcp 22 capable v1 flags [AH] csum {0x1,0x2}",
     {"sender_key": 1, "receiver_key": 2, "data_level_len": NOT_SHOWN, "checksum": ABSENT}),
    ("mptcp 16 join[bad opt]", {"subtype": "MP_JOIN", "length": 16, "malformed": True}),
])
def test_tcpdump_text_forms(text: str, fields: dict[str, Any]) -> None:
    parsed = parse_mptcp(text)
    assert {k: parsed.get(k, NOT_SHOWN) for k in fields} == fields


def test_tcpdump_text_refuses_what_it_cannot_read() -> None:
    with pytest.raises(ValueError):
        parse_mptcp("mptcp 20 dss ack 1 seq 2 subseq 3 len 4 sum 0x5")
    with pytest.raises(ValueError):
        parse_mptcp("mptcp 12 capable v0 flags [H] csum {0x1}")   # csum without the A flag


# ---------------------------------------------------------------------------------------------
# 2. The crypto against values others computed (the captures' README; the kernel's crypto test)


README_KEYS = [  # (key, version, token, IDSN)
    (15630232866698755056, 0, 176983692, 9485794687403768073),
    (15504481981035106882, 0, 809210772, 15754397863267795546),
    (15575993726135858763, 0, 582664408, 9421743343812542473),
    (6557139672172610608, 0, 983887070, 15478127853382442285),
    (0x29A6C86981AD933C, 1, 0xA35D6D82, 11713449205243392241),
    (0x1FDB5DF328BC3DEF, 1, 0x239FBDB0, 14413541604287230029),
]


@dataclass(frozen=True)
class ReadmeJoin:
    """An MP_JOIN from the README. A initiates the subflow; its key is the MP_CAPABLE SYN's."""

    capture: str
    key_a: int
    key_b: int
    r_a: int
    r_b: int
    synack_hmac: int
    ack_hmac: str


README_JOINS = [
    ReadmeJoin("iperf-mptcp-0-0.pcap", 15630232866698755056, 15504481981035106882,
               2910429252, 2696637541, 7061322843868767095,
               "825aadbb1222dd68b5352bf31ff13fe7f3d1e499"),
    ReadmeJoin("neohapsis_mptcp_challenge.pcapng", 15575993726135858763, 6557139672172610608,
               4101834873, 2091074292, 17190590715112771084,
               "0000eabe3c46e1b8481af4b85ad7589805e27a01"),
]


@pytest.mark.parametrize("key, version, token, idsn", README_KEYS,
                         ids=[f"v{v}-{k:016x}" for k, v, _, _ in README_KEYS])
def test_token_and_idsn(key: int, version: int, token: int, idsn: int) -> None:
    assert (crypto.key_token(key, version), crypto.key_idsn(key, version)) == (token, idsn)
    assert crypto.token_and_idsn(key, version) == (token, idsn)


@pytest.mark.parametrize("join", README_JOINS, ids=lambda j: j.capture)
def test_join_hmacs(join: ReadmeJoin) -> None:
    # The SYN-ACK is B's: HMAC(Key-B||Key-A, R-B||R-A); the third ACK is A's, the other way.
    assert crypto.join_synack_hmac(join.key_b, join.key_a, join.r_b, join.r_a, 0) \
        == join.synack_hmac
    assert crypto.join_ack_hmac(join.key_a, join.key_b, join.r_a, join.r_b, 0).hex() \
        == join.ack_hmac


@pytest.mark.parametrize("key, msg, digest", [
    ("0b0b0b0b0b0b0b0b", "48692054",
     "8385e24fb4235ac37556b6b886db106284a1da671699f46db1f235ec622dcafa"),
    ("aaaaaaaaaaaaaaaa", "dddddddd",
     "2c5e219164ff1dca1c4a92318d847bb6b9d44492984e1eb71aff9022f71046e9"),
    ("0102030405060708", "cdcdcdcd",
     "e73b9ba9969969cefb04aa0d6df18ec2fcc075b6f23b4d8c4da736a5dbbc6e7d"),
])
def test_kernel_hmac_sha256_vectors(key: str, msg: str, digest: str) -> None:
    """The kernel's mptcp crypto_test: the 16-byte key is two 8-byte keys, the message two
    4-byte nonces, all ASCII."""
    k, m = key.encode(), msg.encode()
    assert crypto.mptcp_hmac(k, m, 1).hex() == digest
    assert crypto.join_hmac(k[:8], k[8:], int.from_bytes(m[:4], "big"),
                            int.from_bytes(m[4:], "big"), 1).hex() == digest


# ---------------------------------------------------------------------------------------------
# 3. The captures against themselves

Endpoint = tuple[str, int]


@dataclass(eq=False)
class Host:
    """One end of an MPTCP connection: where its first subflow ran, its key, what it added."""

    addr: str
    port: int
    key: int | None = None
    announced: set[str] = field(default_factory=set)
    capable_data_len: int = 0   # data its MP_CAPABLE carried (v1, 22 or 24 bytes)

    def reached_at(self, addr: str, port: int) -> bool:
        return port == self.port and (addr == self.addr or addr in self.announced)


@dataclass(eq=False)
class Connection:
    version: int
    client: Host
    server: Host

    def other(self, host: Host) -> Host:
        return self.server if host is self.client else self.client


@dataclass(eq=False)
class Subflow:
    conn: Connection
    initiator: Host
    listener: Host
    syn_nonce: int | None = None
    synack_nonce: int | None = None


@dataclass(frozen=True)
class JoinCheck:
    """One MP_JOIN HMAC on the wire and what its sender should have computed it from."""

    frame: int
    option: MPJoin
    sender_key: int
    receiver_key: int
    sender_nonce: int
    receiver_nonce: int
    version: int

    def ok(self) -> bool:
        return craft.join_ok(self.option, sender_key=self.sender_key,
                             receiver_key=self.receiver_key, sender_nonce=self.sender_nonce,
                             receiver_nonce=self.receiver_nonce, version=self.version)


@dataclass
class Scan:
    """What part 3 reads from a capture."""

    connections: list[Connection] = field(default_factory=list)
    handshakes: Counter[tuple[str, int]] = field(default_factory=Counter)  # MP_CAPABLE/MP_JOIN
    tokens: list[tuple[int, int, int]] = field(default_factory=list)  # frame, wire, peer's
    hmacs: list[JoinCheck] = field(default_factory=list)
    add_addrs: list[tuple[MPAddAddr, Host, Host]] = field(default_factory=list)  # opt, from, to
    mappings: list[tuple[Host, int]] = field(default_factory=list)  # DSN relative to the IDSN
    checksums: list[tuple[int, MPDSS, bytes, int]] = field(default_factory=list)  # .., dsn64
    problems: list[str] = field(default_factory=list)


def scan(packets: list[tuple[int, Packet]]) -> Scan:
    scanner = _Scanner()
    for number, pkt in packets:
        scanner.packet(number, pkt)
    return scanner.out


class _Scanner:
    """Follows the connections in frame order: keys from MP_CAPABLE, subflows from MP_JOIN, and
    for every segment which host sent it."""

    def __init__(self) -> None:
        self.out = Scan()
        self.first: dict[tuple[Endpoint, Endpoint], Connection] = {}   # client -> server
        self.sides: dict[tuple[Endpoint, Endpoint], tuple[Subflow, Host]] = {}  # -> sender

    def add_subflow(self, sub: Subflow, initiator: Endpoint, listener: Endpoint) -> None:
        self.sides[initiator, listener] = (sub, sub.initiator)
        self.sides[listener, initiator] = (sub, sub.listener)

    def packet(self, number: int, pkt: Packet) -> None:
        tcp = pkt.getlayer(TCP)
        if tcp is None or not isinstance(tcp.underlayer, (IP, IPv6)):
            return
        src, dst = (tcp.underlayer.src, tcp.sport), (tcp.underlayer.dst, tcp.dport)
        for opt in mptcp_options(tcp):
            d = opt.as_dict()
            if d.get("malformed"):
                continue
            if d["subtype"] in ("MP_CAPABLE", "MP_JOIN"):
                self.out.handshakes[d["subtype"], d["length"]] += 1
            if d["subtype"] == "MP_CAPABLE":
                self.capable(number, src, dst, bool(tcp.flags.S), bool(tcp.flags.A), d)
            elif d["subtype"] == "MP_JOIN":
                self.join(number, src, dst, opt, d)
            elif d["subtype"] == "ADD_ADDR" and (src, dst) in self.sides:
                # (mptcp-aa-echo.pcap has no handshake: its ADD_ADDR has no host to belong to.)
                sub, sender = self.sides[src, dst]
                sender.announced.add(d["addr"])
                self.out.add_addrs.append((opt, sender, sub.conn.other(sender)))
            elif d["subtype"] == "DSS" and "dsn" in d:
                self.mapping(number, src, dst, opt, d, tcp)

    def capable(self, number: int, src: Endpoint, dst: Endpoint, syn: bool, ack: bool,
                d: dict[str, Any]) -> None:
        if syn and not ack:
            if (src, dst) not in self.first:
                conn = Connection(d["version"], Host(*src), Host(*dst))
                self.first[src, dst] = conn
                self.out.connections.append(conn)
                self.add_subflow(Subflow(conn, conn.client, conn.server), src, dst)
            self.learn(number, "client", self.first[src, dst].client, d.get("sender_key"))
            return
        conn = self.first.get((dst, src) if syn else (src, dst))
        if conn is None:
            self.out.problems.append(f"frame {number}: MP_CAPABLE without its SYN")
        elif syn:   # SYN-ACK: the server's key, and the version the connection uses
            conn.version = d["version"]
            self.learn(number, "server", conn.server, d.get("sender_key"))
        else:       # third ACK, or v1's first data: the client's key, then the server's
            self.learn(number, "client", conn.client, d.get("sender_key"))
            self.learn(number, "server", conn.server, d.get("receiver_key"))
            conn.client.capable_data_len = max(conn.client.capable_data_len,
                                               d.get("data_level_len", 0))

    def learn(self, number: int, role: str, host: Host, key: int | None) -> None:
        if key is None:
            return
        if host.key is not None and host.key != key:
            self.out.problems.append(f"frame {number}: {role} key {key:#x}, before {host.key:#x}")
        host.key = key

    def join(self, number: int, src: Endpoint, dst: Endpoint, opt: MPTCPOption,
             d: dict[str, Any]) -> None:
        assert isinstance(opt, MPJoin)
        problems = self.out.problems
        if d["length"] == 12:
            # The peer joined to is the host reached at the SYN's destination, by the address of
            # its first subflow or one it announced, and its port; not found through the token.
            peers = [(c, h) for c in self.out.connections for h in (c.client, c.server)
                     if h.reached_at(*dst)]
            if len(peers) != 1 or peers[0][1].key is None:
                problems.append(f"frame {number}: MP_JOIN SYN to {dst}: no single peer with a "
                                f"key ({len(peers)} hosts there)")
                return
            conn, peer = peers[0]
            self.out.tokens.append((number, d["token"], crypto.key_token(peer.key, conn.version)))
            self.add_subflow(Subflow(conn, conn.other(peer), peer, syn_nonce=d["nonce"]), src, dst)
            return
        sub, sender = self.sides.get((src, dst), (None, None))
        want_sender = None if sub is None else sub.listener if d["length"] == 16 else sub.initiator
        if sub is None or sender is not want_sender or sub.syn_nonce is None:
            problems.append(f"frame {number}: MP_JOIN {d['length']} not from the right end of a "
                            "subflow whose SYN was seen")
            return
        if d["length"] == 16:
            # neohapsis frame 9 repeats the SYN-ACK's 16-byte form in a plain ACK (tcpdump:
            # [bad opt]); it comes from the listener all the same, and is checked the same way.
            sub.synack_nonce = d["nonce"]
            nonces = (d["nonce"], sub.syn_nonce)
        elif sub.synack_nonce is None:
            problems.append(f"frame {number}: MP_JOIN ACK before any SYN-ACK")
            return
        else:
            nonces = (sub.syn_nonce, sub.synack_nonce)
        receiver = sub.conn.other(sender)
        assert sender.key is not None and receiver.key is not None
        self.out.hmacs.append(JoinCheck(number, opt, sender.key, receiver.key, *nonces,
                                        sub.conn.version))

    def mapping(self, number: int, src: Endpoint, dst: Endpoint, opt: MPTCPOption,
                d: dict[str, Any], tcp: TCP) -> None:
        assert isinstance(opt, MPDSS)
        sub, sender = self.sides.get((src, dst), (None, None))
        if sub is None or sender is None or sender.key is None:
            self.out.problems.append(f"frame {number}: a DSS mapping from a host of unknown key")
            return
        idsn = crypto.key_idsn(sender.key, sub.conn.version)
        self.out.mappings.append((sender, (d["dsn"] - idsn) % (1 << 8 * d["dsn_len"])))
        if "checksum" in d:
            # The checksum's pseudo-header holds the whole 64-bit DSN; a 4-byte DSN is the low
            # half of the one nearest the sender's IDSN.
            dsn64 = d["dsn"] if d["dsn_len"] == 8 else crypto.expand_dsn(d["dsn"], idsn)
            self.out.checksums.append((number, opt, _tcp_payload(tcp), dsn64))


@dataclass(frozen=True)
class Expect:
    handshakes: dict[tuple[str, int], int]
    mappings: int
    checksums: int


# The two captures without .out, as `tcpdump -n -r` (4.99.3) decodes them. neohapsis has one
# 16-byte MP_JOIN in a plain ACK (frame 9) that tcpdump prints as `mptcp 16 join[bad opt]`; it
# is counted with the others of its length.
BIG_EXPECT = {
    "iperf-mptcp-0-0.pcap": Expect({("MP_CAPABLE", 12): 2, ("MP_CAPABLE", 20): 1,
                                    ("MP_JOIN", 12): 7, ("MP_JOIN", 16): 1, ("MP_JOIN", 24): 1},
                                   mappings=1659, checksums=1659),
    "neohapsis_mptcp_challenge.pcapng": Expect(
        {("MP_CAPABLE", 12): 3, ("MP_CAPABLE", 20): 1,
         ("MP_JOIN", 12): 8, ("MP_JOIN", 16): 17, ("MP_JOIN", 24): 8},
        mappings=1064, checksums=1064),
}


def expect(name: str) -> Expect:
    """What part 3 must find in a capture: counted in its .out, or as above."""
    if name in BIG_EXPECT:
        return BIG_EXPECT[name]
    handshakes: Counter[tuple[str, int]] = Counter()
    mappings = checksums = 0
    for _, texts in expected_options(CAPTURES / name.replace(".pcap", ".out")):
        for d in map(parse_mptcp, texts):
            if d["malformed"] is True:
                continue
            if d["subtype"] in ("MP_CAPABLE", "MP_JOIN"):
                handshakes[d["subtype"], d["length"]] += 1
            if d["subtype"] == "DSS" and d["dsn"] is not ABSENT:
                mappings += 1
                checksums += d["checksum"] is not ABSENT
    return Expect(dict(handshakes), mappings, checksums)


README_CAPTURE_KEYS = {   # (client, server): the MP_CAPABLE SYN's sender is the client
    "iperf-mptcp-0-0.pcap": (15630232866698755056, 15504481981035106882),
    "neohapsis_mptcp_challenge.pcapng": (15575993726135858763, 6557139672172610608),
    "mptcp-v1.pcap": (0x1FDB5DF328BC3DEF, 0x29A6C86981AD933C),
}


def _clean_scan(captures: Captures, name: str) -> Scan:
    s = captures.scan(name)
    assert not s.problems, f"{name}: " + "; ".join(s.problems)
    return s


@pytest.mark.parametrize("name", ALL_CAPTURES)
def test_capable_keys(name: str, captures: Captures) -> None:
    """Every handshake step found, its keys consistent, and the README's where it has them."""
    s = _clean_scan(captures, name)
    want = {k: n for k, n in expect(name).handshakes.items() if k[0] == "MP_CAPABLE"}
    got = {k: n for k, n in s.handshakes.items() if k[0] == "MP_CAPABLE"}
    assert got == want, f"{name}: MP_CAPABLE by length: expected {want}, found {got}"
    keys = [(c.client.key, c.server.key) for c in s.connections]
    assert all(None not in pair for pair in keys), f"{name}: a key is missing: {keys}"
    if name in README_CAPTURE_KEYS:
        assert keys == [README_CAPTURE_KEYS[name]]


@pytest.mark.parametrize("name", ALL_CAPTURES)
def test_first_mapping_follows_the_idsn(name: str, captures: Captures) -> None:
    """Each host's lowest mapped DSN is its IDSN + 1 (+ the data its MP_CAPABLE carried), the
    IDSN coming from its key (SHA-1 for v0, SHA-256 for v1)."""
    s = _clean_scan(captures, name)
    assert len(s.mappings) == expect(name).mappings
    lowest: dict[int, tuple[Host, int]] = {}
    for host, relative in s.mappings:
        if id(host) not in lowest or relative < lowest[id(host)][1]:
            lowest[id(host)] = (host, relative)
    got = {f"{h.addr}:{h.port}": rel for h, rel in lowest.values()}
    assert got == {f"{h.addr}:{h.port}": 1 + h.capable_data_len for h, _ in lowest.values()}


@pytest.mark.parametrize("name", ALL_CAPTURES)
def test_join_tokens_and_hmacs(name: str, captures: Captures) -> None:
    """Each MP_JOIN SYN names the key of the host it joins; every SYN-ACK and ACK HMAC
    validates with the keys from MP_CAPABLE and the nonces of the subflow's SYN and SYN-ACK."""
    s = _clean_scan(captures, name)
    want = {k[1]: n for k, n in expect(name).handshakes.items() if k[0] == "MP_JOIN"}
    got = {k[1]: n for k, n in s.handshakes.items() if k[0] == "MP_JOIN"}
    assert got == want, f"{name}: MP_JOIN by length: expected {want}, found {got}"
    assert len(s.tokens) == want.get(12, 0)
    for number, wire, peer in s.tokens:
        assert wire == peer, f"{name} frame {number}: MP_JOIN SYN token {wire:#010x}, the " \
                             f"peer's key gives {peer:#010x}"
    assert len(s.hmacs) == want.get(16, 0) + want.get(24, 0)
    bad = [f"frame {c.frame}: {c.option.summary()}" for c in s.hmacs if not c.ok()]
    assert not bad, f"{name}: MP_JOIN HMACs that do not validate: {bad}"
    for check in s.hmacs:   # the check can fail: the same HMAC with a nonce off by one bit
        assert not replace(check, sender_nonce=check.sender_nonce ^ 1).ok()
    for readme in (j for j in README_JOINS if j.capture == name):
        found = {(c.option.effective_length(), c.sender_key, c.sender_nonce, c.receiver_nonce):
                 c.option.as_dict() for c in s.hmacs}
        synack = found[16, readme.key_b, readme.r_b, readme.r_a]
        ack = found[24, readme.key_a, readme.r_a, readme.r_b]
        assert (synack["truncated_hmac"], ack["hmac"]) == (readme.synack_hmac, readme.ack_hmac)


def test_add_addr_hmac_is_the_2020_kernels_leftmost(captures: Captures) -> None:
    """mptcp-aa-v1.pcap: a kernel of February 2020 sent the HMAC's leftmost 64 bits; RFC 8684
    §3.4.1 wants the rightmost, so a validating decoder must reject it."""
    s = _clean_scan(captures, "mptcp-aa-v1.pcap")
    ((opt, sender, receiver),) = s.add_addrs
    (conn,) = s.connections
    assert sender is conn.server, "the ADD_ADDR comes from the listener"
    assert sender.key is not None and receiver.key is not None
    d = opt.as_dict()
    assert d["hmac"] == 0x669928744366716C
    message = crypto.add_addr_message(d["addr_id"], d["addr"], d["port"])
    digest = crypto.mptcp_hmac(crypto.key_bytes(sender.key) + crypto.key_bytes(receiver.key),
                               message, 1)
    assert int.from_bytes(digest[:8], "big") == d["hmac"]
    assert int.from_bytes(digest[-8:], "big") == 0xE0E054C3444E4C25
    assert not craft.add_addr_ok(opt, sender_key=sender.key, receiver_key=receiver.key)
    # The sender's key goes first: the other order gives neither half.
    swapped = crypto.mptcp_hmac(crypto.key_bytes(receiver.key) + crypto.key_bytes(sender.key),
                                message, 1)
    assert d["hmac"] not in (int.from_bytes(swapped[:8], "big"),
                             int.from_bytes(swapped[-8:], "big"))
    # The same ADD_ADDR with the rightmost 64 bits validates.
    fixed = opt.copy()
    fixed.hmac = 0xE0E054C3444E4C25
    assert craft.add_addr_ok(fixed, sender_key=sender.key, receiver_key=receiver.key)


@pytest.mark.parametrize("name", ALL_CAPTURES)
def test_dss_checksums(name: str, captures: Captures) -> None:
    """Every DSS checksum verifies over its segment's data, with the 64-bit DSN; and fails
    with one payload bit flipped."""
    s = _clean_scan(captures, name)
    assert len(s.checksums) == expect(name).checksums
    bad = [f"frame {n}: {opt.summary()}, 64-bit DSN {dsn64}"
           for n, opt, payload, dsn64 in s.checksums
           if not craft.dss_checksum_ok(opt, payload, dsn64=dsn64)]
    assert not bad, f"{name}: DSS checksums that do not verify: {bad[:10]}"
    flipped = 0
    for n, opt, payload, dsn64 in s.checksums:
        if payload:   # a DATA_FIN alone carries no data to flip
            damaged = payload[:-1] + bytes([payload[-1] ^ 0x01])
            assert not craft.dss_checksum_ok(opt, damaged, dsn64=dsn64), \
                f"{name} frame {n}: the checksum still verifies with a payload bit flipped"
            flipped += 1
    assert flipped or not s.checksums

"""Segments -> MPTCP connections and subflows, with everything the capture lets us check.

A connection is born from an MP_CAPABLE handshake (its keys give the tokens and IDSNs, RFC 8684
section 3.1; SHA-1 for version 0, RFC 6824); an MP_JOIN SYN names the connection it joins by
the token of the host it is sent to (section 3.2), so subflows are grouped by token, never by
address. What is recomputed and marked, where the capture holds what it needs:

* MP_JOIN: the SYN-ACK's truncated HMAC and the third ACK's HMAC (both keys and both nonces);
* ADD_ADDR (v1): the HMAC keyed with the sender's key first (section 3.4.1);
* DSS checksums (section 3.3.1) over the payload of the mapping, reassembled by subflow sequence
  number since a mapping may span several segments; the first data on an MP_CAPABLE of length 24
  is a mapping of its own (DSN = IDSN + 1, subflow sequence 1).

A verdict is True/False when checkable and None when the capture lacks a key, a nonce, the
subflow's SYN or part of the payload. A DSS checksum is known only once the last byte of its
mapping has gone by: until then the option refers to a ``MappingCheck`` still open, which the
output waits for (``Annotated.pending``).

``Tracker.feed`` is the reference path, one decoded ``Segment`` at a time. The sniffer's fast
path (``mptcplab.sniff``) updates the same ``Half`` counters directly for the segments that
change nothing else (pure DSS acks and mappings without checksum); the tests hold both paths to
the same results. What the sniffer keeps for its output lives in its own ``Half`` subclass
(``Tracker(half_type=...)``): nothing here knows how the results are rendered.
"""

from __future__ import annotations

import bisect
import socket
import struct
from collections import deque
from typing import Any

from mptcplab import crypto
from mptcplab.decode import Segment

CLIENT, SERVER = 0, 1              # the MPTCP roles: who sent the MP_CAPABLE SYN, who answered
SIDE_NAMES = ("client", "server")
M32 = 0xFFFFFFFF
M64 = 0xFFFFFFFFFFFFFFFF
_PORTS = struct.Struct("!HH").pack

# Subflow kinds: how the lab met the subflow.
INITIAL, JOINED, UNKNOWN = "MP_CAPABLE", "MP_JOIN", "unknown"


def flow_key(src: str, sport: int, dst: str, dport: int) -> bytes:
    """One direction of a TCP flow as bytes: source and destination address, then ports, as
    they sit in the IP and TCP headers (the fast path slices the same bytes from the frame)."""
    family = socket.AF_INET6 if ":" in src else socket.AF_INET
    return (socket.inet_pton(family, src) + socket.inet_pton(family, dst)
            + _PORTS(sport, dport))


def reverse_key(key: bytes) -> bytes:
    """The other direction of the flow."""
    if len(key) == 12:
        return key[4:8] + key[0:4] + key[10:12] + key[8:10]
    return key[16:32] + key[0:16] + key[34:36] + key[32:34]


# ---------------------------------------------------------------------------------------------
# The model


class Tally:
    """How many checks came out valid, invalid, or could not be made."""

    __slots__ = ("invalid", "unchecked", "valid")

    def __init__(self) -> None:
        self.valid = self.invalid = self.unchecked = 0

    def add(self, verdict: bool | None) -> None:
        if verdict is None:
            self.unchecked += 1
        elif verdict:
            self.valid += 1
        else:
            self.invalid += 1

    def as_tuple(self) -> tuple[int, int, int]:
        return self.valid, self.invalid, self.unchecked


class MappingCheck:
    """A DSS checksum waiting for the bytes of its mapping."""

    __slots__ = (
        "buf",
        "checksum",
        "data_level_len",
        "done",
        "dsn",
        "frame",
        "have",
        "result",
        "size",
        "ssn",
        "tally",
    )

    def __init__(self, dsn: int, ssn: int, data_level_len: int, checksum: int, size: int,
                 frame: int, tally: Tally) -> None:
        self.dsn, self.ssn, self.data_level_len, self.checksum = dsn, ssn, data_level_len, checksum
        self.size, self.frame, self.tally = size, frame, tally
        self.buf = bytearray(size)
        self.have: list[list[int]] = []      # merged [start, end) ranges of buf received
        self.done = False
        self.result: bool | None = None
        if size == 0:          # a DATA_FIN alone: the pseudo-header is all there is
            self.settle(crypto.dss_checksum_ok(dsn, ssn, data_level_len, b"", checksum))

    def settle(self, result: bool | None) -> None:
        if not self.done:
            self.done, self.result = True, result
            self.buf = bytearray()
            self.tally.add(result)

    def add(self, rel: int, data: bytes, wire_len: int) -> None:
        """A segment whose payload starts at relative subflow sequence ``rel``; ``data`` is what
        was captured of its ``wire_len`` bytes."""
        if self.done:
            return
        offset = (rel - self.ssn) & M32
        if offset < 1 << 31:                       # starts inside (or after) the mapping
            if offset >= self.size:
                return
            lo, skip = offset, 0
        else:                                      # starts before it
            skip = (self.ssn - rel) & M32
            if skip >= wire_len:
                return
            lo = 0
        hi = min(self.size, lo + wire_len - skip)
        if len(data) - skip < hi - lo:             # cut by the snap length
            self.settle(None)
            return
        self.buf[lo:hi] = data[skip:skip + hi - lo]
        self._mark(lo, hi)
        if self.have[0] == [0, self.size]:
            self.settle(crypto.dss_checksum_ok(self.dsn, self.ssn, self.data_level_len,
                                               bytes(self.buf), self.checksum))

    def _mark(self, lo: int, hi: int) -> None:
        merged: list[list[int]] = []
        placed = False
        for a, b in self.have:
            if b < lo or a > hi:
                if a > hi and not placed:
                    merged.append([lo, hi])
                    placed = True
                merged.append([a, b])
            else:
                lo, hi = min(a, lo), max(b, hi)
        if not placed:
            merged.append([lo, hi])
        merged.sort()
        self.have = merged


class Half:
    """One direction of a subflow: what the fast path updates for every segment."""

    __slots__ = (
        "bytes",
        "checks",
        "isn",
        "mapped",
        "nxt",
        "open",
        "recent",
        "recent_bytes",
        "role",
        "subflow",
        "watch",
    )

    HISTORY = 1 << 18       # payload bytes kept for mappings announced after their data

    def __init__(self, subflow: Subflow, role: int) -> None:
        self.subflow = subflow
        self.role = role            # 0: initiator -> listener (the SYN's way), 1: back
        self.isn = -1               # the sender's initial sequence number, -1 until its SYN
        self.nxt = -1               # highest sequence number + length seen, -1 before any
        self.bytes = 0              # payload bytes carried, each counted once
        self.mapped = False         # a DSS mapping (or MP_CAPABLE data) seen this way
        # Checksums in use: every payload segment goes through Tracker.feed (not the fast
        # path), is offered to the open checks and kept a while (a mapping may be announced,
        # or re-announced with its DATA_FIN, after some of its bytes went by).
        self.watch = False
        self.open: list[MappingCheck] = []      # checksums still collecting payload
        self.checks: dict[tuple[int, int, int, int], MappingCheck] = {}
        self.recent: deque[tuple[int, bytes, int]] = deque()   # (rel. seq, captured, length)
        self.recent_bytes = 0

    def relabel(self) -> None:
        """The subflow's connection and number changed (an orphan turned out to be a
        connection's first subflow). Nothing here depends on them; a subclass keeping
        something that does drops it here."""

    @property
    def side(self) -> int | None:
        """CLIENT or SERVER: the MPTCP role of this direction's sender (None if unknown)."""
        return self.subflow.sides[self.role]

    def account(self, seq: int, payload_len: int) -> None:
        """Count a segment's payload once, however often it is retransmitted."""
        end = (seq + payload_len) & M32
        if self.nxt < 0:
            self.nxt = seq
        ahead = (end - self.nxt) & M32
        if 0 < ahead < 1 << 31:
            self.bytes += ahead
            self.nxt = end


class Subflow:
    """A TCP connection that carries (or tried to carry) MPTCP."""

    __slots__ = (
        "addr_ids",
        "backup",
        "conn",
        "dport",
        "dst",
        "fwd",
        "kind",
        "nonces",
        "number",
        "reset",
        "rev",
        "sides",
        "sport",
        "src",
    )

    def __init__(self, conn: Connection | None, kind: str, src: str, sport: int, dst: str,
                 dport: int, sides: tuple[int | None, int | None],
                 half_type: type[Half] = Half) -> None:
        self.conn = conn
        self.number: int | None = None
        self.kind = kind
        self.src, self.sport, self.dst, self.dport = src, sport, dst, dport   # initiator first
        self.sides = sides                  # (initiator's role, listener's role)
        self.fwd = half_type(self, 0)
        self.rev = half_type(self, 1)
        self.nonces: list[int | None] = [None, None]     # initiator's, listener's (MP_JOIN)
        self.addr_ids: list[int | None] = [0, 0] if kind == INITIAL else [None, None]
        self.backup = [False, False]        # each end's latest wish (MP_JOIN B, MP_PRIO)
        self.reset: str | None = None       # MP_TCPRST reason

    def half_of(self, side: int) -> Half:
        return self.fwd if self.sides[0] == side else self.rev

    def is_backup(self) -> bool:
        """Either end asked for the subflow to be a backup."""
        return any(self.backup)

    def bytes_to_server(self) -> int:
        return self.half_of(CLIENT).bytes

    def bytes_to_client(self) -> int:
        return self.half_of(SERVER).bytes


class Connection:
    """An MPTCP connection: keys, tokens, IDSNs, subflows and what was signalled on them."""

    __slots__ = (
        "add_addrs",
        "checksum",
        "fallback",
        "fastclose",
        "idsns",
        "keys",
        "mp_fail",
        "number",
        "remove_addrs",
        "subflows",
        "tokens",
        "version",
    )

    def __init__(self, number: int) -> None:
        self.number = number
        self.version: int | None = None
        self.keys: list[int | None] = [None, None]       # indexed by CLIENT / SERVER
        self.tokens: list[int | None] = [None, None]
        self.idsns: list[int | None] = [None, None]
        self.checksum = False
        self.fallback = False
        self.subflows: list[Subflow] = []
        self.add_addrs: list[dict[str, Any]] = []
        self.remove_addrs: list[dict[str, Any]] = []
        self.fastclose = False
        self.mp_fail = False

    def fell_back(self) -> bool:
        """Fallback to TCP: the SYN retried without MP_CAPABLE, the SYN-ACK answered without
        it, an infinite mapping, or payload on the initial subflow (handshake seen) that no
        mapping ever covered."""
        if self.fallback:
            return True
        for sub in self.subflows:
            if sub.kind == INITIAL and sub.fwd.isn >= 0 and sub.rev.isn >= 0:
                return any(h.bytes and not h.mapped for h in (sub.fwd, sub.rev))
        return False


class Annotated:
    """A segment with what the tracker made of it: its connection and subflow, and per option
    the verdicts to add to its fields (a ``MappingCheck`` while a checksum is still open)."""

    __slots__ = ("checks", "connection", "extras", "half", "seg", "subflow")

    def __init__(self, seg: Segment, half: Half | None, connection: int | None,
                 subflow: int | None, extras: list[dict[str, Any] | None]) -> None:
        self.seg, self.half, self.connection, self.subflow = seg, half, connection, subflow
        self.extras = extras
        self.checks: list[MappingCheck] = []

    @property
    def pending(self) -> bool:
        return any(not c.done for c in self.checks)

    def verdicts(self, index: int) -> dict[str, Any]:
        """The verdict fields of option ``index``, open checks read as they stand (None)."""
        extra = self.extras[index]
        if not extra:
            return {}
        return {k: (v.result if isinstance(v, MappingCheck) else v) for k, v in extra.items()}


# ---------------------------------------------------------------------------------------------
# The tracker


class Tracker:
    """Connections and subflows from segments, in capture order.

    ``half_type``: the class of each subflow direction, a ``Half`` subclass when a consumer
    (the sniffer's fast path) keeps its own per-direction state on it.
    """

    HOLD = 4096     # frames an open checksum may wait for its bytes before it is given up

    def __init__(self, half_type: type[Half] = Half) -> None:
        self.half_type = half_type
        self.flows: dict[bytes, Half] = {}
        self.tokens: dict[int, tuple[Connection, int]] = {}
        self.connections: list[Connection] = []
        self.orphans: list[Subflow] = []        # MPTCP seen, handshake not captured
        self.packets = 0                        # records read (the driver counts them)
        self.mptcp_packets = 0                  # segments with at least one MPTCP option
        self.fast_mptcp_packets = 0             # of which the sniffer's fast path handled
        self.hmacs = Tally()
        self.checksums = Tally()
        self._open: deque[MappingCheck] = deque()

    # -- the reference path ------------------------------------------------------------------

    def feed(self, seg: Segment, key: bytes | None = None) -> Annotated | None:
        """Track one segment; its annotation, or None for TCP that is no MPTCP subflow's."""
        if key is None:
            key = flow_key(seg.src, seg.sport, seg.dst, seg.dport)
        flags = seg.tcp_flags
        syn, ack = "S" in flags, "A" in flags
        opts = seg.options
        if opts:
            self.mptcp_packets += 1
        half = self.flows.get(key)
        capable = _first(opts, "MP_CAPABLE")
        if syn:
            half = self._syn(seg, key, half, ack, capable, _first(opts, "MP_JOIN"))
        elif half is None:
            if opts:
                half = self._unseen(seg, key, capable)
        elif capable is not None and half.subflow.conn is None and "receiver_key" in capable:
            self._adopt(half.subflow, half.role)
        if half is None:
            return Annotated(seg, None, None, None, [None] * len(opts)) if opts else None
        if not syn and seg.payload_len:
            half.account(seg.seq, seg.payload_len)
        ann = Annotated(seg, half, None, None, [])
        for opt in opts:
            ann.extras.append(None if opt.get("malformed") else
                              self._option(half, seg, opt, syn, ack, ann))
        if half.watch and seg.payload_len:
            self._payload(half, seg)
        sub = half.subflow
        ann.subflow = sub.number
        ann.connection = sub.conn.number if sub.conn is not None else None
        return ann

    def _syn(self, seg: Segment, key: bytes, half: Half | None, ack: bool,
             capable: dict[str, Any] | None, join: dict[str, Any] | None) -> Half | None:
        if not ack:                                                      # SYN
            if half is not None and half.role == 0 and half.isn == seg.seq:   # retransmitted
                conn = half.subflow.conn
                if capable is None and half.subflow.kind == INITIAL and conn is not None:
                    conn.fallback = True    # MP_CAPABLE given up: the SYN goes out plain
                return half
            if capable is not None:
                conn = self._connection()
                sub = Subflow(conn, INITIAL, seg.src, seg.sport, seg.dst, seg.dport,
                              (CLIENT, SERVER), self.half_type)
            elif join is not None and "token" in join:
                conn, owner = self._by_token(join["token"])
                sub = Subflow(conn, JOINED, seg.src, seg.sport, seg.dst, seg.dport,
                              (1 - owner, owner), self.half_type)
                sub.nonces[0], sub.addr_ids[0] = join["nonce"], join["addr_id"]
                sub.backup[0] = join["backup"]
            else:                        # plain TCP (perhaps reusing a subflow's ports)
                if half is not None:
                    self.flows.pop(key, None)
                    self.flows.pop(reverse_key(key), None)
                return None
            self._register(sub, key)
            half = sub.fwd
        elif half is None:                                               # SYN-ACK, no SYN
            if capable is None:
                return None
            conn = self._connection()
            sub = Subflow(conn, INITIAL, seg.dst, seg.dport, seg.src, seg.sport,
                          (CLIENT, SERVER), self.half_type)
            self._register(sub, reverse_key(key))
            half = sub.rev
        elif half.subflow.kind == INITIAL and capable is None and half.role == 1:
            assert half.subflow.conn is not None
            half.subflow.conn.fallback = True       # MP_CAPABLE refused: plain TCP
        if half.isn == seg.seq:
            return half                             # retransmitted SYN-ACK
        half.isn = seg.seq
        half.nxt = (seg.seq + 1 + seg.payload_len) & M32
        half.bytes = seg.payload_len
        return half

    def _unseen(self, seg: Segment, key: bytes, capable: dict[str, Any] | None) -> Half:
        """MPTCP on a flow whose SYN was not captured."""
        if capable is not None and "receiver_key" in capable:     # a third ACK: from client
            sub = Subflow(None, INITIAL, seg.src, seg.sport, seg.dst, seg.dport,
                          (CLIENT, SERVER), self.half_type)
            self._register(sub, key)
            self._adopt(sub, 0)
            return sub.fwd
        sub = Subflow(None, UNKNOWN, seg.src, seg.sport, seg.dst, seg.dport, (None, None),
                      self.half_type)
        self._register(sub, key)
        self.orphans.append(sub)
        return sub.fwd

    def _adopt(self, sub: Subflow, client_role: int) -> None:
        """An orphan subflow turns out to be a connection's first (an MP_CAPABLE with keys)."""
        if sub in self.orphans:
            self.orphans.remove(sub)
        sub.kind = INITIAL
        sub.addr_ids = [0, 0]
        sub.sides = (CLIENT, SERVER) if client_role == 0 else (SERVER, CLIENT)
        conn = self._connection()
        conn.subflows.append(sub)
        sub.conn, sub.number = conn, 1
        sub.fwd.relabel()
        sub.rev.relabel()

    def _connection(self) -> Connection:
        conn = Connection(len(self.connections) + 1)
        self.connections.append(conn)
        return conn

    def _by_token(self, token: int) -> tuple[Connection, int]:
        """The connection a token names, and whose token it is; an unknown token (its
        handshake was not captured) starts a connection known only by it."""
        found = self.tokens.get(token)
        if found is None:
            conn = self._connection()
            conn.tokens[SERVER] = token
            found = self.tokens[token] = (conn, SERVER)
        return found

    def _register(self, sub: Subflow, key: bytes) -> None:
        if sub.conn is not None:
            sub.conn.subflows.append(sub)
            sub.number = len(sub.conn.subflows)
            sub.fwd.watch = sub.rev.watch = sub.conn.checksum
        self.flows[key] = sub.fwd
        self.flows[reverse_key(key)] = sub.rev

    def _set_key(self, conn: Connection, side: int, key: int, version: int) -> None:
        if conn.keys[side] is not None or version not in (0, 1):
            return
        conn.keys[side] = key
        conn.tokens[side], conn.idsns[side] = crypto.token_and_idsn(key, version)
        self.tokens.setdefault(conn.tokens[side], (conn, side))

    # -- options -------------------------------------------------------------------------------

    def _option(self, half: Half, seg: Segment, opt: dict[str, Any], syn: bool, ack: bool,
                ann: Annotated) -> dict[str, Any] | None:
        sub = half.subflow
        conn = sub.conn
        kind = opt["subtype"]
        if kind == "DSS":
            return self._dss(half, seg, opt, ann)
        if conn is None:                  # nothing to attach signals or check HMACs against
            if kind == "ADD_ADDR":
                if opt["hmac"] is not None:
                    self.hmacs.add(None)
                return {"hmac_valid": None}
            if kind == "MP_JOIN" and opt["length"] != 12:
                self.hmacs.add(None)
                return {"hmac_valid": None}
            return None
        side = half.side
        assert side is not None
        if kind == "MP_CAPABLE":
            return self._capable(half, seg, opt, conn, side, syn, ack, ann)
        if kind == "MP_JOIN":
            return self._join(half, opt, conn)
        if kind == "ADD_ADDR":
            valid = None
            if opt["hmac"] is not None and None not in conn.keys:
                valid = opt["hmac"] == crypto.add_addr_hmac(
                    conn.keys[side], conn.keys[1 - side], opt["addr_id"], opt["addr"],
                    opt["port"])
            if opt["hmac"] is not None:
                self.hmacs.add(valid)
            conn.add_addrs.append({"frame": seg.frame, "side": side, "echo": opt["echo"],
                                   "addr_id": opt["addr_id"], "addr": opt["addr"],
                                   "port": opt["port"], "hmac": opt["hmac"],
                                   "hmac_valid": valid})
            return {"hmac_valid": valid}
        if kind == "REMOVE_ADDR":
            conn.remove_addrs.append({"frame": seg.frame, "side": side,
                                      "addr_ids": opt["addr_ids"]})
        elif kind == "MP_PRIO":
            self._prio(half, opt, conn, side)
        elif kind == "MP_FASTCLOSE":
            conn.fastclose = True
        elif kind == "MP_FAIL":
            conn.mp_fail = True
        elif kind == "MP_TCPRST":
            sub.reset = opt["reason_name"]
        return None

    def _capable(self, half: Half, seg: Segment, opt: dict[str, Any], conn: Connection,
                 side: int, syn: bool, ack: bool, ann: Annotated) -> dict[str, Any] | None:
        version = opt["version"]
        if "A" in opt["flags"] and not conn.checksum:
            conn.checksum = True
            for sub in conn.subflows:
                sub.fwd.watch = sub.rev.watch = True
        if syn:
            conn.version = version               # the SYN-ACK's answer overrides the SYN's
            if "sender_key" in opt:
                self._set_key(conn, side, opt["sender_key"], version)
            return None
        if conn.version is None:
            conn.version = version
        if "receiver_key" in opt:
            self._set_key(conn, side, opt["sender_key"], version)
            self._set_key(conn, 1 - side, opt["receiver_key"], version)
        if "data_level_len" not in opt:
            return None
        half.mapped = True
        if "checksum" not in opt:
            return None
        idsn = conn.idsns[side]
        check = None if idsn is None else self._mapping(
            half, seg, (idsn + 1) & M64, 1, opt["data_level_len"], opt["checksum"], False)
        return {"checksum_valid": self._verdict(check, ann)}

    def _join(self, half: Half, opt: dict[str, Any], conn: Connection) -> dict[str, Any] | None:
        sub = half.subflow
        length = opt["length"]
        if length == 12:
            return None
        role = half.role
        if length == 16:
            sub.nonces[role], sub.addr_ids[role] = opt["nonce"], opt["addr_id"]
            sub.backup[role] = opt["backup"]
        sender, receiver = sub.sides[role], sub.sides[1 - role]
        nonce_s, nonce_r = sub.nonces[role], sub.nonces[1 - role]
        valid = None
        if (sender is not None and receiver is not None and nonce_s is not None
                and nonce_r is not None and conn.version in (0, 1)):
            key_s, key_r = conn.keys[sender], conn.keys[receiver]
            if key_s is not None and key_r is not None:
                if length == 16:
                    valid = opt["truncated_hmac"] == crypto.join_synack_hmac(
                        key_s, key_r, nonce_s, nonce_r, conn.version)
                else:
                    valid = opt["hmac"] == crypto.join_ack_hmac(
                        key_s, key_r, nonce_s, nonce_r, conn.version).hex()
        self.hmacs.add(valid)
        return {"hmac_valid": valid}

    def _prio(self, half: Half, opt: dict[str, Any], conn: Connection, side: int) -> None:
        """MP_PRIO: on its own subflow (v1), or on the subflows using the sender's address
        id (the form with an address id)."""
        targets = [half.subflow]
        if opt["addr_id"] is not None:
            named = [s for s in conn.subflows
                     if s.addr_ids[0 if s.sides[0] == side else 1] == opt["addr_id"]]
            targets = named or targets
        for sub in targets:
            sub.backup[0 if sub.sides[0] == side else 1] = opt["backup"]

    def _dss(self, half: Half, seg: Segment, opt: dict[str, Any],
             ann: Annotated) -> dict[str, Any] | None:
        if "dsn" not in opt:
            return None
        half.mapped = True
        conn = half.subflow.conn
        if opt["data_level_len"] == 0 and conn is not None:
            conn.fallback = True                 # infinite mapping
        if "checksum" not in opt:
            return None
        dsn = opt["dsn"]
        if opt["dsn_len"] == 4:
            side = half.side
            idsn = None if conn is None or side is None else conn.idsns[side]
            dsn = None if idsn is None else crypto.expand_dsn(dsn, idsn)
        check = None if dsn is None else self._mapping(
            half, seg, dsn, opt["ssn"], opt["data_level_len"], opt["checksum"], opt["data_fin"])
        return {"checksum_valid": self._verdict(check, ann)}

    def _mapping(self, half: Half, seg: Segment, dsn: int, ssn: int, data_level_len: int,
                 checksum: int, data_fin: bool) -> MappingCheck | None:
        """The check of one mapping (shared by every segment repeating the mapping)."""
        key = (dsn, ssn, data_level_len, checksum)
        check = half.checks.get(key)
        if check is not None:
            return check
        size = max(0, data_level_len - (1 if data_fin else 0))
        if data_fin and ssn == 0:
            size = 0                             # a DATA_FIN on a segment of its own
        if size and half.isn < 0:
            return None                          # subflow sequence unknown: no SYN seen
        check = MappingCheck(dsn, ssn, data_level_len, checksum, size, seg.frame,
                             self.checksums)
        if len(half.checks) >= 1024:
            for old in list(half.checks)[:512]:
                del half.checks[old]
        half.checks[key] = check
        for rel, data, wire_len in half.recent:     # bytes that went by before the mapping
            if check.done:
                break
            check.add(rel, data, wire_len)
        if not check.done:
            half.watch = True
            half.open.append(check)
            self._open.append(check)
            # Trim as we go, so a long capture (--summary emits nothing that would) keeps
            # only the checks of the last HOLD frames.
            self.expire(seg.frame - self.HOLD)
        return check

    def _verdict(self, check: MappingCheck | None, ann: Annotated) -> Any:
        if check is None:
            self.checksums.add(None)
            return None
        if check.done:
            return check.result
        ann.checks.append(check)
        return check

    def _payload(self, half: Half, seg: Segment) -> None:
        if half.isn < 0:
            return
        rel = (seg.seq - half.isn) & M32
        if half.open:
            for check in half.open:
                check.add(rel, seg.payload, seg.payload_len)
            half.open = [c for c in half.open if not c.done]
        recent = half.recent
        recent.append((rel, seg.payload, seg.payload_len))
        half.recent_bytes += len(seg.payload)
        while half.recent_bytes > half.HISTORY:
            half.recent_bytes -= len(recent.popleft()[1])

    # -- open checks -----------------------------------------------------------------------

    def expire(self, before_frame: int) -> None:
        """Give up (None) on the open checksums of mappings announced before this frame."""
        opened = self._open
        while opened and (opened[0].done or opened[0].frame < before_frame):
            opened.popleft().settle(None)

    def finish(self) -> None:
        """The capture is over: checksums still missing bytes cannot be checked."""
        self.expire(1 << 62)
        for half in self.flows.values():
            half.open = []


def _first(opts: list[dict[str, Any]], subtype: str) -> dict[str, Any] | None:
    for opt in opts:
        if opt["subtype"] == subtype and not opt.get("malformed"):
            return opt
    return None


# ---------------------------------------------------------------------------------------------
# The data level: where each payload segment sits in its connection's byte stream


class Spans:
    """Disjoint [start, end) ranges, merged as they are added (mostly appended in order)."""

    __slots__ = ("ends", "starts")

    def __init__(self) -> None:
        self.starts: list[int] = []
        self.ends: list[int] = []

    def overlaps(self, lo: int, hi: int) -> bool:
        i = bisect.bisect_right(self.starts, lo) - 1
        if i >= 0 and self.ends[i] > lo:
            return True
        return i + 1 < len(self.starts) and self.starts[i + 1] < hi

    def add(self, lo: int, hi: int) -> None:
        starts, ends = self.starts, self.ends
        if starts and lo >= starts[-1]:          # the common case: at or after the last one
            if lo <= ends[-1]:
                ends[-1] = max(ends[-1], hi)
            else:
                starts.append(lo)
                ends.append(hi)
            return
        i = bisect.bisect_left(ends, lo)         # first range that ends at or after lo
        j = bisect.bisect_right(starts, hi)      # ranges [i, j) touch [lo, hi)
        if i < j:
            lo, hi = min(lo, starts[i]), max(hi, ends[j - 1])
        starts[i:j] = [lo]
        ends[i:j] = [hi]


class Placed:
    """One payload segment of a tracked connection, placed in the data stream of its sender.

    ``dsn`` is relative: the first byte of the sender's stream is 1 (its IDSN + 1 when the keys
    were seen, else the first data sequence number the capture showed). None when no mapping
    covers the segment. (A plain class, as the module's others: the sniffer starts without
    importing dataclasses.)"""

    __slots__ = ("ann", "dsn", "length", "reinjection", "retransmission", "side", "subflow")

    def __init__(self, ann: Annotated, side: int, subflow: int, dsn: int | None, length: int,
                 retransmission: bool, reinjection: bool) -> None:
        self.ann = ann
        self.side = side                        # CLIENT or SERVER: who sent the bytes
        self.subflow = subflow
        self.dsn = dsn
        self.length = length
        self.retransmission = retransmission    # the subflow had carried these bytes before
        self.reinjection = reinjection          # another subflow had carried these bytes before

    def __repr__(self) -> str:
        return (f"Placed(frame={self.ann.seg.frame}, side={self.side}, subflow={self.subflow}, "
                f"dsn={self.dsn}, length={self.length}, "
                f"retransmission={self.retransmission}, reinjection={self.reinjection})")


class DataLevel:
    """Places the payload segments the tracker annotated in their connection's data stream:
    by the DSS mapping they carry or the last mapping of their subflow direction (an MP_CAPABLE
    with data maps from IDSN + 1, subflow sequence 1); after a fallback to TCP the subflow
    sequence number is the data sequence number. Marks subflow-level retransmissions and
    data-level reinjections (bytes a different subflow carried first), RFC 8684 §3.3.6.

    Feed it the annotations in capture order (``place``), after ``Tracker.feed``."""

    def __init__(self) -> None:
        self._maps: dict[Half, tuple[int, int, int]] = {}     # (dsn64, ssn, length)
        self._ends: dict[Half, int] = {}                      # highest relative seq + len
        self._base: dict[tuple[int, int], int] = {}           # (conn, side) -> DSN of byte 0
        self._sent: dict[tuple[int, int], dict[int, Spans]] = {}

    def base(self, conn: Connection | None, side: int, dsn64: int | None = None) -> int | None:
        """The DSN before the first byte of ``side``'s stream: its IDSN, or one less than the
        first DSN seen when the keys were not."""
        if conn is None:
            return None
        if conn.idsns[side] is not None:
            return conn.idsns[side]
        key = (conn.number, side)
        if key not in self._base and dsn64 is not None:
            self._base[key] = (dsn64 - 1) & M64
        return self._base.get(key)

    def _expand(self, conn: Connection | None, side: int, half: Half, dsn: int,
                length: int) -> int:
        if length == 8:
            return dsn
        ref = conn.idsns[side] if conn is not None else None
        if ref is None:
            last = self._maps.get(half)
            ref = last[0] if last else self._base.get((conn.number, side), dsn) \
                if conn is not None else dsn
        return crypto.expand_dsn(dsn, ref)

    def place(self, ann: Annotated) -> Placed | None:
        """The segment's place in the data stream; None when it carries no payload or belongs
        to no connection."""
        half, seg = ann.half, ann.seg
        if half is None or not seg.payload_len or "S" in seg.tcp_flags or half.isn < 0:
            return None
        sub, side = half.subflow, half.side
        conn = sub.conn
        if conn is None or side is None or sub.number is None:
            return None
        for opt in seg.options:
            if opt.get("malformed"):
                continue
            if opt["subtype"] == "DSS" and "dsn" in opt and opt["data_level_len"] \
                    and not (opt["data_fin"] and opt["ssn"] == 0):
                self._maps[half] = (self._expand(conn, side, half, opt["dsn"], opt["dsn_len"]),
                                    opt["ssn"], opt["data_level_len"])
            elif opt["subtype"] == "MP_CAPABLE" and "data_level_len" in opt \
                    and conn.idsns[side] is not None:
                self._maps[half] = ((conn.idsns[side] + 1) & M64, 1, opt["data_level_len"])
        rel = (seg.seq - half.isn) & M32
        end = (rel + seg.payload_len) & M32
        top = self._ends.get(half)
        retrans = top is not None and 0 < (top - rel) & M32 < 1 << 31
        if top is None or 0 < (end - top) & M32 < 1 << 31:
            self._ends[half] = end
        dsn: int | None = None
        mapping = self._maps.get(half)
        if mapping is not None:
            map_dsn, ssn, length = mapping
            offset = (rel - ssn) & M32
            if offset < length:
                base = self.base(conn, side, map_dsn)
                if base is not None:
                    dsn = (map_dsn + offset - base) & M64
        elif conn.fell_back():
            dsn = rel                       # plain TCP: the subflow's bytes are the stream
        reinjected = False
        if dsn is not None:
            spans = self._sent.setdefault((conn.number, side), {})
            lo, hi = dsn, dsn + seg.payload_len
            reinjected = any(s.overlaps(lo, hi) for n, s in spans.items() if n != sub.number)
            spans.setdefault(sub.number, Spans()).add(lo, hi)
        return Placed(ann, side, sub.number, dsn, seg.payload_len, retrans, reinjected)

    def data_ack(self, ann: Annotated) -> tuple[int, int] | None:
        """(side whose data is acknowledged, relative DATA_ACK: the next byte expected) for a
        segment carrying a DSS data_ack, else None."""
        half = ann.half
        if half is None or half.side is None or half.subflow.conn is None:
            return None
        conn = half.subflow.conn
        acked = 1 - half.side
        for opt in ann.seg.options:
            if opt.get("malformed") or opt["subtype"] != "DSS" or "data_ack" not in opt:
                continue
            value = opt["data_ack"]
            if opt["data_ack_len"] == 4:
                ref = conn.idsns[acked]
                if ref is None:
                    ref = self._base.get((conn.number, acked))
                if ref is None:
                    return None
                value = crypto.expand_dsn(value, ref)
            base = self.base(conn, acked)
            if base is None:
                return None
            return acked, (value - base) & M64
        return None

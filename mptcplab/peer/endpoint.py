"""A raw MPTCP endpoint driven from Python, for facing the kernel with crafted segments.

Every MPTCP option of its handshakes can be overridden (``DEFAULT`` keeps the option,
``None`` leaves it out, a dict or a function changes fields of it, bytes replace it), as initiator
(``connect(syn=, third_ack=)``, ``join(syn=, third_ack=)``) and as listener
(``listen(port, synack=, join_synack=, fourth_ack=)``); its DSNs and Data ACKs go out in 64 or
32 bits (``dsn32``, ``ack32``); it can withhold what a stack owes (``withhold={"dss"}``: its
ACKs carry no DSS; ``auto_ack=False``: no ACK at all).

The peer lives in one host of a lab topology (a namespace where the kernel has no socket for
its ports). It builds every segment itself — IP and TCP with ``struct``, MPTCP options with the
lab's layers, keys, tokens, HMACs and checksums with the lab's crypto — and sends it through a
persistent raw socket. A receive thread reads the namespace's packets from an AF_PACKET socket,
decodes them with the fast decoder, keeps them for ``expect()``, and (unless told not to) does
what an MPTCP stack must: answer handshakes, acknowledge data at both levels, echo ADD_ADDR.

An nftables rule in the peer's namespace drops the RSTs the kernel there would send for the
peer's ports (it knows no socket for them); the rule goes away with the peer or the lab.

    with Lab(topo) as lab:
        peer = MptcpPeer(lab["client"], checksum=True)
        sf = peer.connect("10.0.1.2", 5000)
        peer.send(b"hello")
        peer.expect("DSS", where=lambda seg, opt: opt.get("data_ack") == peer.snd_dsn)
"""

from __future__ import annotations

import collections
import contextlib
import queue
import random
import socket
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from mptcplab import crypto
from mptcplab.capture import LINKTYPE_RAW, PcapWriter
from mptcplab.decode import Segment, segment_from_frame
from mptcplab.errors import LabError
from mptcplab.layers import (
    MPAddAddr,
    MPDSS,
    MPFail,
    MPFastclose,
    MPPrio,
    MPRemoveAddr,
    MPTCPOption,
)
from mptcplab.layers import craft
from mptcplab.describe import describe
from mptcplab.peer.rst import OWN_MARK, ruleset
from mptcplab.peer.segment import ACK, FIN, PSH, RST, SYN, build_segment

ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4
FRAME_SNAP = 256                   # bytes kept of each frame the peer's namespace saw
PORT_RANGE = (40000, 40999)        # the peer's own source ports (their RSTs are dropped)
PEER_MARK = OWN_MARK               # SO_MARK on the peer's own segments: its RSTs pass the rule
SO_MARK = 36
MSS = 1400
U64 = (1 << 64) - 1
U32 = (1 << 32) - 1


@dataclass
class Subflow:
    """One TCP subflow of the peer's MPTCP connection."""

    src: str
    sport: int
    dst: str
    dport: int
    iss: int                      # our initial sequence number
    snd_nxt: int                  # next sequence number we send
    rcv_nxt: int = 0              # next sequence number we expect
    irs: int = 0                  # the kernel's initial sequence number
    state: str = "closed"         # syn-sent, syn-received, established, reset, closed
    join: bool = False
    backup: bool = False
    addr_id: int = 0
    local_nonce: int = 0
    remote_nonce: int = 0
    remote_addr_id: int | None = None
    hmac_ok: bool | None = None   # did the kernel's MP_JOIN HMAC verify?
    mapping: tuple[int, int, int] | None = None   # the kernel's current (dsn, ssn, len)
    established: threading.Event = field(default_factory=threading.Event)

    @property
    def key(self) -> tuple[str, int, str, int]:
        return (self.src, self.sport, self.dst, self.dport)

    @property
    def ssn(self) -> int:
        """Our next subflow-relative sequence number (1 = the first data byte)."""
        return (self.snd_nxt - self.iss) & U32


_blocks_lock = threading.Lock()
_blocks_used: dict[str, set[int]] = {}


def _port_block(netns: str) -> int:
    """The first of 100 source ports of our own: two peers in one namespace never share one."""
    with _blocks_lock:
        used = _blocks_used.setdefault(netns, set())
        free = [b for b in range(PORT_RANGE[0], PORT_RANGE[1], 100) if b not in used]
        if not free:
            raise LabError(f"{netns}: every peer port block is taken (at most 10 peers)")
        used.add(free[0])
        return free[0]


class _Default:
    def __repr__(self) -> str:
        return "DEFAULT"


DEFAULT: Any = _Default()
"""The option the handshake step normally carries."""

# How a handshake option is shaped: DEFAULT, None (left out), field changes, or exact bytes.
Override = Any


def shaped(default: MPTCPOption | None, override: Override) -> list[MPTCPOption | bytes]:
    """The option(s) a segment carries: ``default`` changed as ``override`` says."""
    if override is DEFAULT:
        return [] if default is None else [default]
    if override is None:
        return []
    if isinstance(override, (bytes, MPTCPOption)):
        return [override]
    if callable(override):
        if default is None:
            raise LabError("an override function needs an option to change")
        return [override(default.copy())]
    if isinstance(override, dict):
        if default is None:
            raise LabError("field overrides need an option to change")
        opt = default.copy()
        for name, value in override.items():
            setattr(opt, name, value)
        return [opt]
    raise LabError(f"bad option override {override!r}: DEFAULT, None, a dict or bytes")


@dataclass
class Listener:
    """How the peer answers the kernel's SYNs to one port (``MptcpPeer.listen``)."""

    port: int
    synack: Override = DEFAULT         # the MP_CAPABLE of the SYN-ACK
    join_synack: Override = DEFAULT    # the MP_JOIN of a join's SYN-ACK
    fourth_ack: bool = True            # acknowledge a join's third ACK
    backup: bool = False               # B flag of the join SYN-ACK
    refuse_join: bool = False          # answer join SYNs with a RST


class ExpectationFailed(AssertionError):
    """What was expected, and every segment that arrived instead."""


class MptcpPeer:
    """An MPTCP endpoint in ``host``'s namespace, crafted segment by segment.

    ``version`` 1 is RFC 8684 (v0 SYNs are possible with ``version=0``); ``checksum`` asks for
    DSS checksums (the A flag). With ``auto=True`` the receive thread answers handshakes,
    acknowledges data and DATA_FIN, and echoes ADD_ADDR; set ``auto_ack`` / ``auto_echo``
    to False to hold those back.
    """

    def __init__(self, host: Any, *, version: int = 1, checksum: bool = False,
                 key: int | None = None, auto_ack: bool = True, auto_echo: bool = True,
                 dsn32: bool = False, ack32: bool = False,
                 withhold: Iterable[str] = ()) -> None:
        self.host = host
        self.version = version
        self.checksum = checksum          # what we ask for
        self.csum = checksum              # what the connection uses (either side asking)
        self.key = key if key is not None else random.getrandbits(64)
        self.token, self.idsn = crypto.token_and_idsn(self.key, version)
        self.remote_key: int | None = None
        self.remote_token = self.remote_idsn = 0
        self.snd_dsn = (self.idsn + 1) & U64       # our next data sequence number
        self.rcv_base = 0                          # the kernel's IDSN + 1
        self.received = bytearray()                # the kernel's data, in order
        self._pending: dict[int, bytes] = {}       # out-of-order data by DSN
        self.remote_data_fin = False
        self.fallback = False                      # the kernel answered without MPTCP
        self._fin_dsn: int | None = None           # the DSN of the kernel's DATA_FIN
        self.auto_ack, self.auto_echo = auto_ack, auto_echo
        self.dsn32, self.ack32 = dsn32, ack32      # send 4-byte DSNs / Data ACKs
        self.withhold = set(withhold)              # "dss": our ACKs carry no DSS option
        unknown = self.withhold - {"dss"}
        if unknown:
            raise LabError(f"cannot withhold {', '.join(sorted(unknown))} (only: dss)")
        self.synack: Segment | None = None         # the kernel's SYN-ACK to connect()
        self.announced: dict[str, int] = {}        # our ADD_ADDR addresses -> their ids
        self.ack_data_fin = True                   # False: Data ACKs stop short of its DATA_FIN
        self.mpc_data_pending = True               # v1: first data rides on MP_CAPABLE
        self.subflows: list[Subflow] = []
        self.segments: list[Segment] = []          # everything that reached the peer
        self.sent = 0
        self._cursor = 0
        self._listeners: dict[int, Listener] = {}
        self._accepted: queue.Queue[Subflow] = queue.Queue()
        self._base_port = _port_block(host.netns)
        self._ports = iter(range(self._base_port, self._base_port + 100))
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)
        self._tx4 = host.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
        self._tx6 = host.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_RAW)
        for tx in (self._tx4, self._tx6):
            tx.setsockopt(socket.SOL_SOCKET, SO_MARK, PEER_MARK)
        self._rx = host.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ETH_P_ALL))
        self._rx.settimeout(0.02)                  # how soon close() stops the thread
        self.frames: collections.deque[tuple[float, bytes, int]] = collections.deque(
            maxlen=100_000)                        # (time, first bytes, length), both ways
        self._table = f"mptl_peer_{self._base_port}"
        host.nft(self._ruleset())
        self._stop = threading.Event()
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._receive_loop, name="mptcp-peer",
                                        daemon=True)
        self._thread.start()

    # -- set-up and teardown ---------------------------------------------------------------

    def _ruleset(self) -> str:
        # its own port block, and the ports it listens on (added as it listens)
        lo, hi = self._base_port, self._base_port + 99
        return ruleset(self._table, f"{lo}-{hi}", "@listen", sets=("listen",), mark=PEER_MARK)

    def close(self) -> None:
        """Stop the receive thread, drop the nft table, close the sockets."""
        self._stop.set()
        self._thread.join(2)
        with contextlib.suppress(LabError):
            self.host.nft(f"delete table inet {self._table}\n")
        with _blocks_lock:
            _blocks_used.get(self.host.netns, set()).discard(self._base_port)
        for s in (self._tx4, self._tx6, self._rx):
            s.close()

    def write_pcap(self, path: str) -> int:
        """Write what the peer's namespace saw, both directions (the first FRAME_SNAP bytes of
        each packet: headers and options), as a raw-IP pcap; returns the packet count."""
        writer = PcapWriter(path, snaplen=FRAME_SNAP)
        frames = list(self.frames)
        for when, data, length in frames:
            writer.write(when, LINKTYPE_RAW, data, length)
        writer.close()
        return len(frames)

    def __enter__(self) -> MptcpPeer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- sending ---------------------------------------------------------------------------

    def transmit(self, sf: Subflow, flags: int, options: Iterable[MPTCPOption | bytes] = (),
                 payload: bytes = b"", *, seq: int | None = None, ack: int | None = None,
                 extra_options: bytes = b"") -> None:
        """Send one segment on ``sf`` exactly as given (sequence numbers from ``sf`` unless
        overridden); the sequence space advances by the payload and SYN/FIN."""
        opts = extra_options + b"".join(o if isinstance(o, bytes) else bytes(o) for o in options)
        seq = sf.snd_nxt if seq is None else seq
        ack = sf.rcv_nxt if ack is None and flags & ACK else (ack or 0)
        wire = build_segment(sf.src, sf.dst, sf.sport, sf.dport, seq, ack, flags, opts, payload)
        tx = self._tx6 if ":" in sf.dst else self._tx4
        tx.sendto(wire, (sf.dst, 0))
        self.sent += 1
        if seq == sf.snd_nxt:
            sf.snd_nxt = (sf.snd_nxt + len(payload) + bool(flags & SYN) + bool(flags & FIN)) & U32

    def _new_subflow(self, dst: str, dport: int, src: str | None, sport: int | None) -> Subflow:
        if src is None:
            src = self._source_for(dst)
        if sport is None:
            sport = next(self._ports, None)
            if sport is None:
                raise LabError("the peer has used all 100 of its source ports")
        sf = Subflow(src=src, sport=sport, dst=dst, dport=dport,
                     iss=random.getrandbits(32), snd_nxt=0)
        sf.snd_nxt = sf.iss
        with self._lock:
            self.subflows.append(sf)
        return sf

    def _source_for(self, dst: str) -> str:
        family = socket.AF_INET6 if ":" in dst else socket.AF_INET

        def pick() -> str:
            with socket.socket(family, socket.SOCK_DGRAM) as s:
                s.connect((dst, 9))
                return s.getsockname()[0]

        return self.host.call(pick)

    @property
    def data_ack(self) -> int:
        """The DSN we acknowledge: the kernel's next byte (after a DATA_FIN, one past it)."""
        fin = self.remote_data_fin and self.ack_data_fin
        return (self.rcv_base + len(self.received) + fin) & U64

    def _dss(self, *, data_ack: bool = True, mapping: tuple[int, int, int] | None = None,
             payload: bytes = b"", fin: bool = False, checksum: int | None = None,
             with_checksum: bool | None = None) -> MPDSS:
        fields: dict[str, Any] = {"flags": 0}
        flags = 0
        if data_ack and self.remote_key is not None:
            flags |= 0x01 if self.ack32 else 0x03
            fields["data_ack"] = self.data_ack & (U32 if self.ack32 else U64)
        if mapping is not None:
            flags |= 0x04 if self.dsn32 else 0x0C
            fields["dsn"] = mapping[0] & (U32 if self.dsn32 else U64)
            fields["ssn"], fields["data_level_len"] = mapping[1], mapping[2]
            with_csum = self.csum if with_checksum is None else with_checksum
            if with_csum:    # always over the 64-bit DSN (RFC 8684 3.3.1)
                fields["checksum"] = checksum if checksum is not None else crypto.dss_checksum(
                    mapping[0], mapping[1], mapping[2], payload)
        if fin:
            flags |= 0x10
        fields["flags"] = flags
        return MPDSS(**fields)

    # -- the MP_CAPABLE handshake -----------------------------------------------------------

    def connect(self, dst: str, dport: int, *, src: str | None = None,
                sport: int | None = None, timeout: float = 3.0, syn: Override = DEFAULT,
                third_ack: Override = DEFAULT) -> Subflow:
        """Open the connection: SYN, SYN-ACK, third ACK with both keys (RFC 8684 3.1).

        ``syn`` / ``third_ack`` reshape the MP_CAPABLE of those segments (``None``: left out;
        ``{"version": 2}``, ``{"flags": "BH"}``: fields changed; bytes: sent as they are).
        A SYN-ACK without a v1 MP_CAPABLE with a key means fallback: ``self.fallback``.
        The kernel's SYN-ACK is kept in ``self.synack``; a RST instead raises."""
        sf = self._new_subflow(dst, dport, src, sport)
        default = (craft.capable(0, sender_key=self.key, checksum=self.checksum)
                   if self.version == 0 else craft.capable(1, checksum=self.checksum))
        sf.state = "syn-sent"
        self.transmit(sf, SYN, shaped(MPTCPOption(bytes(default)), syn),
                      extra_options=b"\x02\x04" + MSS.to_bytes(2, "big"))
        seg, _ = self.expect(timeout=timeout, where=lambda s, o: s.dport == sf.sport and
                             ("R" in s.tcp_flags or set("SA") <= set(s.tcp_flags)))
        if "R" in seg.tcp_flags:
            sf.state = "reset"
            raise self._failure("a SYN-ACK, got a RST")
        self.synack = seg
        sf.irs, sf.rcv_nxt = seg.seq, (seg.seq + 1) & U32
        opt = next((o for o in seg.options if o["subtype"] == "MP_CAPABLE"), None)
        if opt is None or "sender_key" not in opt or opt["version"] != self.version:
            self.fallback = True                       # the kernel answered as plain TCP
            self.transmit(sf, ACK)
        else:
            self._learn_remote_key(opt["sender_key"], "A" in opt["flags"] or self.checksum)
            default_ack = craft.capable(self.version, sender_key=self.key,
                                        receiver_key=self.remote_key, checksum=self.csum)
            self.transmit(sf, ACK, shaped(default_ack, third_ack))
        sf.state = "established"
        sf.established.set()
        return sf

    def _learn_remote_key(self, key: int, checksum: bool) -> None:
        self.remote_key = key
        self.remote_token, self.remote_idsn = crypto.token_and_idsn(key, self.version)
        self.rcv_base = (self.remote_idsn + 1) & U64
        self.csum = self.checksum or checksum

    def listen(self, port: int, *, synack: Override = DEFAULT, join_synack: Override = DEFAULT,
               fourth_ack: bool = True, backup: bool = False,
               refuse_join: bool = False) -> Listener:
        """Answer the kernel's MP_CAPABLE and MP_JOIN SYNs to ``port`` (peer as server).

        ``synack`` reshapes the SYN-ACK's MP_CAPABLE, ``join_synack`` a join's MP_JOIN
        (``{"truncated_hmac": 0}``, ``None`` for a SYN-ACK without it); ``backup`` sets B in
        the join SYN-ACK; ``fourth_ack=False`` never acknowledges a join's third ACK;
        ``refuse_join`` answers join SYNs with a RST. The Listener can be changed later."""
        listener = Listener(port, synack, join_synack, fourth_ack, backup, refuse_join)
        self._listeners[port] = listener
        self.host.nft(f"add element inet {self._table} listen {{ {port} }}\n")
        return listener

    def accept(self, timeout: float = 3.0) -> Subflow:
        """The next subflow the kernel opened to a listening port (MP_CAPABLE or MP_JOIN)."""
        try:
            return self._accepted.get(timeout=timeout)
        except queue.Empty:
            raise self._failure(f"a connection from the kernel within {timeout} s") from None

    # -- MP_JOIN ----------------------------------------------------------------------------

    def join(self, dst: str, dport: int, *, src: str | None = None, addr_id: int = 1,
             backup: bool = False, token: int | None = None, bad_hmac: bool = False,
             timeout: float = 3.0, syn: Override = DEFAULT,
             third_ack: Override = DEFAULT) -> Subflow:
        """Add a subflow (RFC 8684 3.2): SYN with the kernel's token, SYN-ACK whose HMAC we
        check, third ACK with ours (spoiled with ``bad_hmac``). With a wrong ``token`` or
        ``bad_hmac`` the kernel resets: the subflow comes back in state "reset"."""
        if self.remote_key is None:
            raise LabError("join before the connection exists")
        sf = self._new_subflow(dst, dport, src, None)
        sf.join, sf.backup, sf.addr_id = True, backup, addr_id
        sf.local_nonce = random.getrandbits(32)
        join_opt = craft.join_syn(peer_key=self.remote_key, nonce=sf.local_nonce,
                                  addr_id=addr_id, backup=backup, version=self.version)
        if token is not None:
            join_opt.token = token
        sf.state = "syn-sent"
        self.transmit(sf, SYN, shaped(join_opt, syn),
                      extra_options=b"\x02\x04" + MSS.to_bytes(2, "big"))
        seg, _ = self.expect(tcp_flags="", timeout=timeout,
                             where=lambda s, o: s.dport == sf.sport and
                             ("R" in s.tcp_flags or "S" in s.tcp_flags))
        if "R" in seg.tcp_flags:
            sf.state = "reset"
            return sf
        sf.irs, sf.rcv_nxt = seg.seq, (seg.seq + 1) & U32
        opt = next((o for o in seg.options if o["subtype"] == "MP_JOIN"), None)
        if opt is None or "truncated_hmac" not in opt:
            sf.state = "no-join"            # a SYN-ACK without MP_JOIN: caller decides
            return sf
        sf.remote_nonce, sf.remote_addr_id = opt["nonce"], opt["addr_id"]
        sf.hmac_ok = opt["truncated_hmac"] == crypto.join_synack_hmac(
            self.remote_key, self.key, sf.remote_nonce, sf.local_nonce, self.version)
        ack = craft.join_ack(own_key=self.key, peer_key=self.remote_key,
                             own_nonce=sf.local_nonce, peer_nonce=sf.remote_nonce,
                             version=self.version)
        if bad_hmac:
            ack.hmac = bytes(20 - len(b"spoiled")) + b"spoiled"
        sf.state = "joining"              # before sending: the fourth ACK can beat us back
        self.transmit(sf, ACK, shaped(ack, third_ack))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and sf.state == "joining":
            with self._lock:
                self._arrived.wait(0.05)
        return sf

    def complete_join(self, sf: Subflow) -> None:
        """Send the fourth ACK a listener with ``fourth_ack=False`` held back."""
        self.ack(sf)
        sf.state = "established"
        sf.established.set()

    # -- data -------------------------------------------------------------------------------

    def send(self, data: bytes, sf: Subflow | None = None, *, corrupt_checksum: bool = False,
             mpc: bool | None = None, dsn: int | None = None, checksum: bool | None = None,
             mapping: bool = True) -> None:
        """Send ``data`` on ``sf`` (the first subflow by default) with DSS mappings, one per
        segment, checksummed when the connection uses checksums. In v1 the very first data
        rides on MP_CAPABLE (RFC 8684 3.1) unless ``mpc=False``.

        ``dsn`` maps the data there instead of at the next DSN (a duplicate, a hole, out of
        window; the next DSN does not move); ``checksum`` True/False adds or leaves out the
        DSS checksum whatever was negotiated; ``mapping=False`` sends the bytes with a DSS
        carrying only a Data ACK (data without a mapping)."""
        sf = sf or self.subflows[0]
        use_mpc = self.version == 1 and self.mpc_data_pending and not sf.join and \
            (mpc if mpc is not None else True) and dsn is None and mapping
        next_dsn = self.snd_dsn if dsn is None else dsn
        for start in range(0, len(data), MSS):
            chunk = data[start:start + MSS]
            if not mapping:
                self.transmit(sf, ACK | PSH, [] if "dss" in self.withhold else [self._dss()],
                              chunk)
                continue
            if use_mpc:
                opt: MPTCPOption = craft.capable(1, sender_key=self.key,
                                                 receiver_key=self.remote_key,
                                                 checksum=self.csum, data=chunk)
                if corrupt_checksum and self.csum:
                    opt.checksum ^= 0xFFFF
                self.mpc_data_pending = use_mpc = False
            else:
                opt = self._dss(mapping=(next_dsn, sf.ssn, len(chunk)), payload=chunk,
                                with_checksum=checksum)
                if corrupt_checksum and "checksum" in opt.fields:
                    opt.checksum ^= 0xFFFF
            self.transmit(sf, ACK | PSH, [opt], chunk)
            next_dsn = (next_dsn + len(chunk)) & U64
            if dsn is None:
                self.snd_dsn = next_dsn

    def data_fin(self, sf: Subflow | None = None) -> None:
        """DATA_FIN without data: subflow sequence 0, data-level length 1 (RFC 8684 3.3.3)."""
        sf = sf or self.subflows[0]
        self.transmit(sf, ACK, [self._dss(mapping=(self.snd_dsn, 0, 1), fin=True)])
        self.snd_dsn = (self.snd_dsn + 1) & U64

    def ack(self, sf: Subflow | None = None, *options: MPTCPOption) -> None:
        """A pure ACK with our data ack, plus any options."""
        sf = sf or self.subflows[0]
        dss = [] if "dss" in self.withhold else [self._dss()]
        self.transmit(sf, ACK, [*dss, *options])

    def recv(self, n: int, timeout: float = 3.0) -> bytes:
        """Wait for ``n`` bytes of the kernel's data stream (in DSN order); return them."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while len(self.received) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise ExpectationFailed(f"expected {n} bytes from the kernel within "
                                            f"{timeout} s, got {len(self.received)}")
                self._arrived.wait(left)
            return bytes(self.received[:n])

    # -- signals ----------------------------------------------------------------------------

    def add_addr(self, addr: str, addr_id: int, port: int | None = None, *,
                 bad_hmac: bool = False, sf: Subflow | None = None) -> MPAddAddr:
        """Announce an address (RFC 8684 3.4.1), HMAC keyed with our key first."""
        opt = craft.add_addr(sender_key=self.key, receiver_key=self.remote_key, addr_id=addr_id,
                             addr=addr, port=port)
        if bad_hmac:
            opt.hmac ^= 0xFFFF
        else:
            self.announced[addr] = addr_id
        self.ack(sf, opt)
        return opt

    def remove_addr(self, *addr_ids: int, sf: Subflow | None = None) -> None:
        self.ack(sf, MPRemoveAddr(addr_ids=list(addr_ids)))

    def mp_prio(self, backup: bool, sf: Subflow | None = None) -> None:
        """Change the priority of the subflow this travels on (RFC 8684 3.3.8)."""
        self.ack(sf, MPPrio(flags=int(backup)))

    def mp_fail(self, dsn: int, sf: Subflow | None = None) -> None:
        self.ack(sf, MPFail(dsn=dsn))

    def fastclose(self, sf: Subflow | None = None) -> None:
        """MP_FASTCLOSE with the kernel's key on an ACK (RFC 8684 3.5)."""
        sf = sf or self.subflows[0]
        self.transmit(sf, ACK, [MPFastclose(receiver_key=self.remote_key)])

    def reset(self, sf: Subflow | None = None, *options: MPTCPOption) -> None:
        sf = sf or self.subflows[0]
        self.transmit(sf, RST | ACK, options)
        sf.state = "reset"

    # -- receiving ---------------------------------------------------------------------------

    def _ours(self, seg: Segment) -> Subflow | None:
        for sf in self.subflows:
            if (seg.dst, seg.dport, seg.src, seg.sport) == sf.key:
                return sf
        return None

    def _receive_loop(self) -> None:
        try:
            while not self._stop.is_set():
                try:
                    data, addr = self._rx.recvfrom(65535)
                except TimeoutError:
                    continue
                except OSError:
                    return
                now = time.time()
                self.frames.append((now, data[:FRAME_SNAP], len(data)))
                if addr[2] == PACKET_OUTGOING:
                    continue
                seg = segment_from_frame(data, LINKTYPE_RAW, 0, now)
                if seg is None:
                    continue
                sf = self._ours(seg)
                if sf is None and not (seg.dport in self._listeners and "S" in seg.tcp_flags):
                    continue
                with self._lock:
                    seg.frame = len(self.segments) + 1
                    self.segments.append(seg)
                self._react(seg, sf)
                with self._lock:
                    self._arrived.notify_all()
        except BaseException as exc:   # surfaced to the case by expect() and _failure()
            self.error = exc

    def _react(self, seg: Segment, sf: Subflow | None) -> None:
        opts = {o["subtype"]: o for o in seg.options}
        if sf is None:
            self._answer_syn(seg, opts)
            return
        if "R" in seg.tcp_flags:
            sf.state = "reset"
            return
        if sf.state == "joining" and "A" in seg.tcp_flags:
            sf.state = "established"                 # the kernel's fourth ACK
            sf.established.set()
        if sf.state == "syn-received" and "A" in seg.tcp_flags and "S" not in seg.tcp_flags:
            self._finish_passive(seg, sf, opts)
        if "S" in seg.tcp_flags:
            return
        if "DSS" in opts and "dsn" in opts["DSS"]:
            d = opts["DSS"]
            dsn = d["dsn"] if d["dsn_len"] == 8 else crypto.expand_dsn(d["dsn"], self.rcv_base)
            sf.mapping = (dsn, d["ssn"], d["data_level_len"])
            if d["data_fin"]:
                # The DATA_FIN takes the mapping's last DSN (a bare one: length 1, ssn 0).
                self._fin_dsn = (dsn + max(d["data_level_len"], 1) - 1) & U64
        if "MP_CAPABLE" in opts and opts["MP_CAPABLE"].get("data_level_len") is not None:
            sf.mapping = (self.rcv_base, 1, opts["MP_CAPABLE"]["data_level_len"])
        if "DSS" in opts:
            self.mpc_data_pending = False            # the kernel spoke DSS: it got our keys
        acked = False
        if seg.payload_len and seg.seq == sf.rcv_nxt:
            self._deliver(sf, seg)
            acked = True
        if self._fin_dsn is not None and not self.remote_data_fin and \
                (self.rcv_base + len(self.received)) & U64 == self._fin_dsn:
            self.remote_data_fin = True              # every byte before it has arrived
        if "F" in seg.tcp_flags:
            sf.rcv_nxt = (sf.rcv_nxt + 1) & U32
            acked = True
        add = opts.get("ADD_ADDR")
        if add is not None and not add["echo"] and self.auto_echo:
            echo = MPAddAddr(flags="E", addr_id=add["addr_id"], addr=add["addr"],
                             **({"port": add["port"]} if add["port"] is not None else {}))
            self.ack(sf, echo)
            acked = False
        if (acked or (self.remote_data_fin and self.ack_data_fin and
                      opts.get("DSS", {}).get("data_fin"))) and self.auto_ack:
            self.ack(sf)

    def _deliver(self, sf: Subflow, seg: Segment) -> None:
        rel = (seg.seq - sf.irs) & U32
        sf.rcv_nxt = (sf.rcv_nxt + seg.payload_len) & U32
        if sf.mapping is None:
            return
        dsn, ssn, length = sf.mapping
        offset = (dsn + (rel - ssn) - self.rcv_base) & U64
        with self._lock:
            self._pending[offset] = seg.payload
            while len(self.received) in self._pending:
                self.received += self._pending.pop(len(self.received))
            for stale in [k for k in self._pending if k < len(self.received)]:
                del self._pending[stale]

    def _answer_syn(self, seg: Segment, opts: dict[str, dict[str, Any]]) -> None:
        """The kernel opens a subflow to a listening port: answer its SYN."""
        sf = Subflow(src=seg.dst, sport=seg.dport, dst=seg.src, dport=seg.sport,
                     iss=random.getrandbits(32), snd_nxt=0, irs=seg.seq,
                     rcv_nxt=(seg.seq + 1) & U32, state="syn-received")
        sf.snd_nxt = sf.iss
        mss = b"\x02\x04" + MSS.to_bytes(2, "big")
        listener = self._listeners[seg.dport]
        if "MP_CAPABLE" in opts:
            cap = opts["MP_CAPABLE"]
            self.csum = self.checksum or "A" in cap["flags"]
            with self._lock:
                self.subflows.append(sf)
            default = craft.capable(self.version, sender_key=self.key, checksum=self.csum)
            self.transmit(sf, SYN | ACK, shaped(default, listener.synack), extra_options=mss)
        elif "MP_JOIN" in opts and opts["MP_JOIN"]["token"] == self.token:
            join = opts["MP_JOIN"]
            sf.join, sf.remote_nonce, sf.remote_addr_id = True, join["nonce"], join["addr_id"]
            sf.backup, sf.local_nonce = join["backup"], random.getrandbits(32)
            sf.addr_id = self.announced.get(sf.src, 0)     # the id we announced it with
            with self._lock:
                self.subflows.append(sf)
            if listener.refuse_join:
                self.transmit(sf, RST | ACK, seq=0)
                sf.state = "reset"
                return
            default = craft.join_synack(
                own_key=self.key, peer_key=self.remote_key, own_nonce=sf.local_nonce,
                peer_nonce=sf.remote_nonce, addr_id=sf.addr_id, backup=listener.backup,
                version=self.version)
            self.transmit(sf, SYN | ACK, shaped(default, listener.join_synack),
                          extra_options=mss)

    def _finish_passive(self, seg: Segment, sf: Subflow, opts: dict[str, dict[str, Any]]) -> None:
        if not sf.join and "MP_CAPABLE" in opts:
            self._learn_remote_key(opts["MP_CAPABLE"]["sender_key"], self.csum)
        elif sf.join and "MP_JOIN" in opts:
            expected = crypto.join_ack_hmac(self.remote_key, self.key, sf.remote_nonce,
                                            sf.local_nonce, self.version)
            sf.hmac_ok = opts["MP_JOIN"]["hmac"] == expected.hex()
            if not sf.hmac_ok:
                self.reset(sf)
                return
            if not self._listeners[sf.sport].fourth_ack:
                sf.state = "third-ack-received"       # until complete_join(sf)
                self._accepted.put(sf)
                return
            self.ack(sf)                               # the fourth ACK
        sf.state = "established"
        sf.established.set()
        self._accepted.put(sf)

    # -- expectations ------------------------------------------------------------------------

    def expect(self, subtype: str | None = None, *, tcp_flags: str | None = None,
               timeout: float = 2.0,
               where: Callable[[Segment, dict[str, Any]], bool] | None = None,
               **fields: Any) -> tuple[Segment, dict[str, Any]]:
        """The kernel's next segment (after the last one expected) that matches: an option of
        ``subtype`` whose fields equal ``fields``, TCP flags including ``tcp_flags``, and
        ``where(segment, option)``. Fails with what arrived instead."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                while self._cursor < len(self.segments):
                    seg = self.segments[self._cursor]
                    self._cursor += 1
                    found = self._match(seg, subtype, tcp_flags, where, fields)
                    if found is not None:
                        return seg, found
                left = deadline - time.monotonic()
                if left <= 0 or self.error is not None:
                    break
                self._arrived.wait(min(left, 0.1))
        spec = " ".join([subtype or "segment"] + [f"{k}={v!r}" for k, v in fields.items()]
                        + ([f"tcp_flags⊇{tcp_flags!r}"] if tcp_flags else [])
                        + (["where(...)"] if where else []))
        raise self._failure(f"{spec} within {timeout} s")

    def expect_none(self, subtype: str | None = None, *, within: float = 1.0,
                    tcp_flags: str | None = None,
                    where: Callable[[Segment, dict[str, Any]], bool] | None = None,
                    **fields: Any) -> None:
        """Nothing matching arrives within ``within`` seconds (and the peer's receive
        thread is still alive: a dead one sees nothing, which proves nothing)."""
        try:
            seg, opt = self.expect(subtype, tcp_flags=tcp_flags, timeout=within, where=where,
                                   **fields)
        except ExpectationFailed:
            if self.error is not None:
                raise
            return
        raise ExpectationFailed(f"expected no {subtype or 'segment'} {fields or ''} within "
                                f"{within} s, got: {_line(seg)}")

    @staticmethod
    def _match(seg: Segment, subtype: str | None, tcp_flags: str | None,
               where: Callable[[Segment, dict[str, Any]], bool] | None,
               fields: dict[str, Any]) -> dict[str, Any] | None:
        if tcp_flags is not None and not set(tcp_flags) <= set(seg.tcp_flags):
            return None
        candidates = [o for o in seg.options if subtype is None or o["subtype"] == subtype]
        if subtype is None and not candidates:
            candidates = [{}]
        for opt in candidates:
            if all(opt.get(k) == v for k, v in fields.items()) and \
                    (where is None or where(seg, opt)):
                return opt
        return None

    def _failure(self, what: str) -> ExpectationFailed:
        lines = [_line(s) for s in self.segments[-20:]]
        if self.error is not None:
            lines.append(f"(the receive thread failed: {self.error!r})")
        return ExpectationFailed(f"expected {what}; the last segments that arrived:\n  "
                                 + ("\n  ".join(lines) if lines else "(none)"))


def _line(seg: Segment) -> str:
    opts = "; ".join(describe(o, seg.tcp_flags) for o in seg.options) or "no MPTCP option"
    return (f"{seg.src}:{seg.sport} > {seg.dst}:{seg.dport} [{seg.tcp_flags}] "
            f"seq {seg.seq} ack {seg.ack} len {seg.payload_len} | {opts}")


"""Captures in and out: pcap (micro- and nanosecond) and pcapng read record by record from a
file or a pipe, pcap written, BPF filters, and live capture through tcpdump.

The reader is plain ``struct`` work, with no Scapy object per record, so fast decoders can use it
as well as the layers. It reads in chunks, so a file of any size and a live pipe go through the
same code. It checks what Scapy's readers let pass: a file that is not a capture, and a last
record cut short, are ``BadInput`` errors with a one-line reason — raised only after every
complete record before the damage has been yielded, so nothing decodable is lost.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import select
import shutil
import signal
import socket
import struct
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, Self

from mptcplab.errors import BadInput, ExitStatus, LabError, MissingTool, NotRoot

if TYPE_CHECKING:
    import subprocess

# ctypes (the BPF compiler), subprocess and the namespace helpers (live capture) are imported
# where they are used, and no dataclass is defined here: reading a file needs none of them, and
# they are a good part of the sniffer's start-up (`python3 -X importtime`).


# Link types this lab decodes (tcpdump's LINKTYPE_* numbers).
LINKTYPE_NULL = 0
LINKTYPE_ETHERNET = 1
LINKTYPE_PPP = 9
LINKTYPE_RAW = 101
LINKTYPE_LINUX_SLL = 113
LINKTYPE_IPV4 = 228
LINKTYPE_IPV6 = 229
LINKTYPE_LINUX_SLL2 = 276

_PCAP_MAGICS = {
    b"\xd4\xc3\xb2\xa1": ("<", 1e-6), b"\xa1\xb2\xc3\xd4": (">", 1e-6),
    b"\x4d\x3c\xb2\xa1": ("<", 1e-9), b"\xa1\xb2\x3c\x4d": (">", 1e-9),
}
_PCAPNG_SHB = 0x0A0D0D0A


class Record(NamedTuple):
    """One captured frame: its 1-based index in the file, time, link type and bytes."""

    index: int
    time: float
    linktype: int
    data: bytes
    wire_len: int


class TruncatedCapture(BadInput):
    """The capture ends in the middle of a record (the records before it were delivered)."""


# (index, time, linktype, data, wire_len): a record without the object, for loops that count
# every microsecond (the sniffer's fast path); ``Record`` is the same five values by name.
RecordTuple = tuple[int, float, int, bytes, int]

CHUNK = 1 << 20                 # bytes read at a time from a file or a pipe
_MAX_RECORD = 1 << 26           # a record longer than this is damage, not a packet


def read_records(path: str | Path) -> Iterator[Record]:
    """Every record of a pcap or pcapng file, in order."""
    for rec in iter_file(path):
        yield Record(*rec)


def iter_file(path: str | Path) -> Iterator[RecordTuple]:
    """Every record of a pcap or pcapng file as a tuple, read in chunks (any size of file).

    A file that cannot be opened raises ``BadInput`` here, at the call."""
    try:
        f = open(path, "rb")    # noqa: SIM115 -- the generator closes it
    except FileNotFoundError:
        raise BadInput(f"{path}: no such file") from None
    except IsADirectoryError:
        raise BadInput(f"{path}: is a directory, not a capture file") from None
    except OSError as exc:
        raise BadInput(f"{path}: cannot read: {exc.strerror}") from None
    return _records(f.read1, str(path), f.close)   # read1: a FIFO delivers as it fills


def iter_stream(read: Callable[[int], bytes], name: str) -> Iterator[RecordTuple]:
    """Every record of a pcap or pcapng byte stream (a file, or tcpdump writing to a pipe).

    ``read(n)`` returns up to n bytes, b"" at the end. Records are yielded as soon as they are
    complete, so a live pipe is decoded as it arrives. Damage (not a capture, a record cut
    short) raises ``BadInput``/``TruncatedCapture`` after every complete record before it.
    """
    return _records(read, name, None)


def _records(read: Callable[[int], bytes], name: str,
             close: Callable[[], None] | None) -> Iterator[RecordTuple]:
    # One generator for the pcap loop (no `yield from` per record: this is the hot path).
    try:
        buf = b""
        while len(buf) < 24:
            try:
                more = read(CHUNK)
            except IsADirectoryError:
                raise BadInput(f"{name}: is a directory, not a capture file") from None
            if not more:
                break
            buf += more
        if len(buf) < 4:
            raise BadInput(f"{name}: not a capture file ({len(buf)} bytes)")
        if buf[:4] not in _PCAP_MAGICS:
            if struct.unpack("<I", buf[:4])[0] == _PCAPNG_SHB:
                yield from _pcapng_stream(read, name, buf)
                return
            raise BadInput(f"{name}: not a pcap or pcapng file (starts with {buf[:4].hex()})")
        endian, resolution = _PCAP_MAGICS[buf[:4]]
        if len(buf) < 24:
            raise TruncatedCapture(f"{name}: pcap header cut short ({len(buf)} of 24 bytes)")
        linktype = struct.unpack(endian + "I", buf[20:24])[0] & 0x0FFFFFFF
        header = struct.Struct(endian + "IIII").unpack_from
        pos, size, index = 24, len(buf), 0
        while True:
            while pos + 16 <= size:
                sec, frac, caplen, wirelen = header(buf, pos)
                end = pos + 16 + caplen
                if end > size:
                    if caplen > _MAX_RECORD:
                        raise BadInput(f"{name}: record {index + 1} claims {caplen} bytes; "
                                       f"the {index} records before it were read")
                    break
                index += 1
                yield index, sec + frac * resolution, linktype, buf[pos + 16:end], wirelen
                pos = end
            more = read(CHUNK)
            if not more:
                break
            buf = buf[pos:] + more
            pos, size = 0, len(buf)
        if pos < size:
            left = size - pos
            if left < 16:
                raise TruncatedCapture(
                    f"{name}: record {index + 1} is cut short (header: {left} of 16 bytes); "
                    f"the {index} records before it were read")
            caplen = header(buf, pos)[2]
            raise TruncatedCapture(
                f"{name}: record {index + 1} is cut short ({left - 16} of {caplen} bytes); "
                f"the {index} records before it were read")
    finally:
        if close is not None:
            close()


# The fixed part of each packet-bearing block's body: IDB, EPB, SPB.
_PCAPNG_MIN_BODY = {1: 8, 6: 20, 3: 4}


def _pcapng_stream(read: Callable[[int], bytes], name: str,
                   buf: bytes) -> Iterator[RecordTuple]:
    endian = "<"
    interfaces: list[tuple[int, float]] = []   # (linktype, seconds per tick)
    base, pos, size, index = 0, 0, len(buf), 0  # base: file offset of buf[0]
    eof = False
    while True:
        if pos + 12 > size or pos + _block_len(buf, pos, endian, name) > size:
            if eof:
                break
            more = read(CHUNK)
            if not more:
                eof = True
            buf = buf[pos:] + more
            base += pos
            pos, size = 0, len(buf)
            continue
        btype = struct.unpack_from(endian + "I", buf, pos)[0]
        if btype == _PCAPNG_SHB:
            endian = "<" if buf[pos + 8:pos + 12] == b"\x4d\x3c\x2b\x1a" else ">"
            interfaces = []
        blen = struct.unpack_from(endian + "I", buf, pos + 4)[0]
        if blen < 12 or blen % 4:
            raise BadInput(f"{name}: block at byte {base + pos} has an impossible length {blen}")
        if pos + blen > size:       # the SHB just changed the byte order: read on
            continue
        body = buf[pos + 8:pos + blen - 4]
        if len(body) < _PCAPNG_MIN_BODY.get(btype, 0):
            raise BadInput(f"{name}: block at byte {base + pos} (type {btype}) is too short "
                           f"for its type ({blen} bytes)")
        if btype == 1:  # Interface Description Block
            linktype = struct.unpack_from(endian + "H", body, 0)[0]
            tick = _tsresol(body[8:], endian)
            if tick is None:
                raise BadInput(f"{name}: interface block at byte {base + pos}: an option "
                               "runs past the end of the block")
            interfaces.append((linktype, tick))
        elif btype == 6:  # Enhanced Packet Block
            iface, ts_hi, ts_lo, caplen, wirelen = struct.unpack_from(endian + "IIIII", body, 0)
            if iface >= len(interfaces):
                raise BadInput(f"{name}: packet block names interface {iface}, never described")
            linktype, tick = interfaces[iface]
            index += 1
            yield index, ((ts_hi << 32) | ts_lo) * tick, linktype, body[20:20 + caplen], wirelen
        elif btype == 3:  # Simple Packet Block
            if not interfaces:
                raise BadInput(f"{name}: packet block before any interface description")
            wirelen = struct.unpack_from(endian + "I", body, 0)[0]
            index += 1
            yield index, 0.0, interfaces[0][0], body[4:4 + wirelen], wirelen
        pos += blen
    if pos < size:
        if size - pos < 12:
            raise TruncatedCapture(f"{name}: block at byte {base + pos} is cut short; "
                                   f"the {index} records before it were read")
        blen = _block_len(buf, pos, endian, name)
        raise TruncatedCapture(f"{name}: block at byte {base + pos} is cut short "
                               f"({size - pos} of {blen} bytes); the {index} records "
                               "before it were read")


def _block_len(buf: bytes, pos: int, endian: str, name: str) -> int:
    """A pcapng block's length (byte order from the block itself if it is a section header)."""
    if struct.unpack_from("<I", buf, pos)[0] == _PCAPNG_SHB and len(buf) >= pos + 12:
        endian = "<" if buf[pos + 8:pos + 12] == b"\x4d\x3c\x2b\x1a" else ">"
    blen = struct.unpack_from(endian + "I", buf, pos + 4)[0]
    if blen > _MAX_RECORD:
        raise BadInput(f"{name}: a block claims {blen} bytes: not a capture file")
    return max(blen, 12)


def _tsresol(options: bytes, endian: str) -> float | None:
    """Seconds per timestamp tick from an IDB's if_tsresol option (default microseconds);
    None when an option header or value runs past the end of the options."""
    pos, size = 0, len(options)
    while pos < size:
        if pos + 4 > size:
            return None                 # a piece of an option header
        code, length = struct.unpack_from(endian + "HH", options, pos)
        if code == 0:                   # opt_endofopt
            break
        if pos + 4 + length > size:
            return None
        if code == 9 and length >= 1:
            value = options[pos + 4]
            return 2.0 ** -(value & 0x7F) if value & 0x80 else 10.0 ** -value
        pos += 4 + length + (-length % 4)
    return 1e-6


def scapy_packet(record: Record):  # -> scapy.packet.Packet
    """The record as a Scapy packet of its link type (raw bytes if the type is unknown, or if
    Scapy cannot dissect a frame too short for its own headers)."""
    from scapy.config import conf
    from scapy.layers.inet import IP
    from scapy.layers.inet6 import IPv6
    from scapy.layers.l2 import CookedLinux, CookedLinuxV2, Ether, Loopback
    from scapy.layers.ppp import PPP
    from scapy.packet import Raw

    known = {LINKTYPE_NULL: Loopback, LINKTYPE_ETHERNET: Ether, LINKTYPE_PPP: PPP,
             LINKTYPE_LINUX_SLL: CookedLinux, LINKTYPE_LINUX_SLL2: CookedLinuxV2}
    cls = known.get(record.linktype) or conf.l2types.get(record.linktype)
    if cls is None and record.linktype in (LINKTYPE_RAW, LINKTYPE_IPV4, LINKTYPE_IPV6):
        cls = IPv6 if record.data[:1] and record.data[0] >> 4 == 6 else IP
    from mptcplab.layers import install

    install()   # kind 30 must decode into the MPTCP layers from the very first frame
    try:
        pkt = (cls or Raw)(record.data)
    except Exception:   # Scapy raises on some truncated headers: keep the bytes
        pkt = Raw(record.data)
    pkt.time = record.time
    return pkt


# ---------------------------------------------------------------------------------------------
# Writing: what a sniffer captured, as a pcap file


class PcapWriter:
    """A microsecond pcap file, written record by record (``-w``). The file is created at
    once (an unwritable path fails before any capture); its header, which names the link
    type, goes out with the first record."""

    def __init__(self, path: str | Path, snaplen: int = 262144) -> None:
        self.path = str(path)
        self.snaplen = snaplen
        self.linktype: int | None = None
        try:
            self._file = open(path, "wb")   # noqa: SIM115 -- closed by close()
        except OSError as exc:
            raise BadInput(f"{path}: cannot write: {exc.strerror}") from None
        self._header = struct.Struct("<IIII").pack

    def _put(self, data: bytes) -> None:
        try:
            self._file.write(data)
        except OSError as exc:
            raise BadInput(f"{self.path}: cannot write: {exc.strerror}") from None

    def _start(self, linktype: int) -> None:
        self.linktype = linktype
        self._put(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, self.snaplen, linktype))

    def write(self, time: float, linktype: int, data: bytes, wirelen: int) -> None:
        if self.linktype is None:
            self._start(linktype)
        elif linktype != self.linktype:
            raise BadInput(f"{self.path}: a pcap holds one link type; the capture mixes "
                           f"{self.linktype} and {linktype}")
        sec = int(time)
        usec = round((time - sec) * 1e6)
        if usec >= 1_000_000:
            sec, usec = sec + 1, usec - 1_000_000
        self._put(self._header(sec, usec, len(data), wirelen) + data)

    def close(self) -> None:
        if self.linktype is None:           # nothing came: still a valid, empty capture
            self._start(LINKTYPE_ETHERNET)
        self._file.close()

    def discard(self) -> None:
        """Close and remove the file (the capture never started)."""
        self._file.close()
        with contextlib.suppress(OSError):
            os.unlink(self.path)


# ---------------------------------------------------------------------------------------------
# Filtering a file with a BPF expression (libpcap's compiler, as tcpdump uses it)


_PCAP_NETMASK_UNKNOWN = 0xFFFFFFFF


def _libpcap() -> tuple[Any, Any, Any]:
    """libpcap with the prototypes used here, and the two structures it takes."""
    import ctypes
    import ctypes.util

    class BpfProgram(ctypes.Structure):
        _fields_ = [("bf_len", ctypes.c_uint), ("bf_insns", ctypes.c_void_p)]

    class PcapPkthdr(ctypes.Structure):
        _fields_ = [("tv_sec", ctypes.c_long), ("tv_usec", ctypes.c_long),
                    ("caplen", ctypes.c_uint32), ("len", ctypes.c_uint32)]

    name = ctypes.util.find_library("pcap")
    if name is None:
        raise MissingTool("libpcap not found (to compile the filter): install the Debian "
                          "package libpcap0.8")
    lib = ctypes.CDLL(name)
    lib.pcap_open_dead.restype = ctypes.c_void_p
    lib.pcap_open_dead.argtypes = [ctypes.c_int, ctypes.c_int]
    lib.pcap_compile.argtypes = [ctypes.c_void_p, ctypes.POINTER(BpfProgram), ctypes.c_char_p,
                                 ctypes.c_int, ctypes.c_uint32]
    lib.pcap_geterr.restype = ctypes.c_char_p
    lib.pcap_geterr.argtypes = [ctypes.c_void_p]
    lib.pcap_close.argtypes = [ctypes.c_void_p]
    lib.pcap_offline_filter.argtypes = [ctypes.POINTER(BpfProgram),
                                        ctypes.POINTER(PcapPkthdr), ctypes.c_char_p]
    return lib, BpfProgram, PcapPkthdr


class BpfFilter:
    """A tcpdump filter expression applied to records read from a file (compiled per link type).

    A live capture leaves filtering to the kernel (tcpdump attaches the same program there).
    """

    def __init__(self, expression: str) -> None:
        from ctypes import byref

        self.expression = expression
        self._lib, self._program_type, header_type = _libpcap()
        self._byref = byref
        self._programs: dict[int, Any] = {}
        self._hdr = header_type()
        self.program(LINKTYPE_ETHERNET)      # a syntax error shows before any record is read

    def program(self, linktype: int) -> Any:
        prog = self._programs.get(linktype)
        if prog is None:
            prog = self._program_type()
            handle = self._lib.pcap_open_dead(linktype, 262144)
            try:
                if self._lib.pcap_compile(handle, self._byref(prog), self.expression.encode(),
                                          1, _PCAP_NETMASK_UNKNOWN) != 0:
                    why = self._lib.pcap_geterr(handle).decode(errors="replace")
                    raise LabError(f"bad filter {self.expression!r}: {why}", ExitStatus.USAGE)
            finally:
                self._lib.pcap_close(handle)
            self._programs[linktype] = prog
        return prog

    def matches(self, linktype: int, data: bytes, wirelen: int) -> bool:
        hdr = self._hdr
        hdr.caplen, hdr.len = len(data), wirelen
        return self._lib.pcap_offline_filter(self._byref(self.program(linktype)),
                                             self._byref(hdr), data) != 0


# ---------------------------------------------------------------------------------------------
# Live capture: tcpdump (libpcap on a TPACKET_V3 ring) writing pcap into a pipe we decode


_IFACE_RE = re.compile(r"^[A-Za-z0-9_.:@-]{1,15}$")


class LiveStats:
    """tcpdump's end-of-capture counters (None when it did not print them)."""

    __slots__ = ("captured", "dropped_by_interface", "dropped_by_kernel", "received")

    def __init__(self, captured: int | None = None, received: int | None = None,
                 dropped_by_kernel: int | None = None,
                 dropped_by_interface: int | None = None) -> None:
        self.captured, self.received = captured, received
        self.dropped_by_kernel, self.dropped_by_interface = dropped_by_kernel, dropped_by_interface

    def as_dict(self) -> dict[str, int | None]:
        return {"captured": self.captured, "received": self.received,
                "dropped_by_kernel": self.dropped_by_kernel,
                "dropped_by_interface": self.dropped_by_interface}

    def __repr__(self) -> str:
        return "LiveStats(" + ", ".join(f"{k}={v!r}" for k, v in self.as_dict().items()) + ")"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, LiveStats) and self.as_dict() == other.as_dict()

    @property
    def unread(self) -> int:
        """Packets the kernel accepted but tcpdump had not read when it was stopped."""
        if None in (self.captured, self.received, self.dropped_by_kernel):
            return 0
        return max(0, self.received - self.captured - self.dropped_by_kernel)  # type: ignore

    def line(self, count: int = 0) -> str:
        """The counters in words; after -c COUNT, what the ring still held is no news."""
        unread = None if count and (self.captured or 0) >= count else self.unread or None
        parts = [f"{value} {what}" for value, what in (
            (self.captured, "packets captured"), (self.received, "received by filter"),
            (self.dropped_by_kernel, "dropped by kernel"),
            (self.dropped_by_interface, "dropped by interface"),
            (unread, "left unread in the ring at the stop")) if value is not None]
        return ", ".join(parts) or "no statistics from tcpdump"


_STAT_LINES = {"packets captured": "captured", "packets received by filter": "received",
               "packets dropped by kernel": "dropped_by_kernel",
               "packets dropped by interface": "dropped_by_interface"}


def netns_path(netns: str) -> str:
    """A namespace name (as `ip netns` lists it) or a path (/proc/PID/ns/net) as a path."""
    from mptcplab.namespaces import NETNS_DIR

    return netns if "/" in netns else os.path.join(NETNS_DIR, netns)


def _interface_exists(iface: str) -> bool:
    try:
        socket.if_nametoindex(iface)
    except OSError:
        return False
    return True


def check_filter_text(bpf: str) -> str:
    """A filter expression as it may reach tcpdump: text, no NUL. It is always passed after
    `--`, so it can never be read as an option (`-z script` stays a syntax error)."""
    if "\0" in bpf:
        raise LabError("bad filter: it contains a NUL byte", ExitStatus.USAGE)
    return bpf.strip()


class LiveCapture:
    """tcpdump on one interface (of a network namespace): into a pcap file (``path=``), or into
    a pipe this process decodes as it comes (``records()``). The lab's one tcpdump wrapper:
    `mptcplab sniff`, `LabHost.capture()` and the cases' captures all go through it.

    tcpdump runs in its own session (a Ctrl-C reaches only this process, which stops tcpdump
    by its PID after the backlog), dies with this process even on SIGKILL (PR_SET_PDEATHSIG),
    never drops privileges (-Z root: the death signal survives, the file is writable), and
    gets the filter after ``--``.

    ``immediate`` (tcpdump's --immediate-mode): each packet leaves the kernel's ring as it
    comes. libpcap then uses a ring of fixed-size frames (TPACKET_V2), one snap length each:
    with the default -B 64 MiB and a snap length of 262144 that is ~250 packets, and any
    burst longer than tcpdump's wait for the CPU is dropped (measured: 65% of a 70k packets/s
    transfer on this machine, with tcpdump alone). Without it (TPACKET_V3) packets are packed
    into large blocks that the kernel hands over when full or after ``BLOCK_TIMEOUT``: no
    drops at the same rate, but up to a second of delay, and a stop waits that long for the
    last block.
    """

    DRAIN_LIMIT = 2.0       # seconds a stop request waits for the backlog to be decoded
    BLOCK_TIMEOUT = 1.0     # tcpdump's pcap timeout: a partly filled ring block waits this long
    GATHER = 64 << 10       # a read returning less: wait 2 ms before the next (no immediate mode)

    def __init__(self, iface: str, *, netns: str | None = None, netns_fd: int | None = None,
                 path: str | os.PathLike[str] | None = None, bpf: str = "",
                 snaplen: int = 262144, count: int = 0, buffer_kib: int | None = None,
                 packet_buffered: bool = True, immediate: bool = True,
                 where: str | None = None) -> None:
        if iface != "any" and not _IFACE_RE.match(iface):
            raise BadInput(f"bad interface name {iface!r}")
        if not 0 < snaplen <= 262144:
            raise LabError(f"snaplen {snaplen} out of range 1-262144", ExitStatus.USAGE)
        self.iface, self.netns, self.netns_fd = iface, netns, netns_fd
        self.path = os.path.abspath(path) if path is not None else None
        self.bpf = check_filter_text(bpf)
        self.snaplen, self.count = snaplen, count
        self.buffer_kib = buffer_kib or max(8192, snaplen)
        # each packet through the pipe (or into the file) as it comes
        self.packet_buffered = packet_buffered or self.path is not None
        self.immediate = immediate
        self.proc: subprocess.Popen[bytes] | None = None
        self.stats: LiveStats | None = None
        self.stderr = ""
        self.where = where or iface + (f" in {netns}" if netns else "")
        self._stop_at: float | None = None
        self._interrupted = False

    @property
    def quiet(self) -> float:
        """An empty pipe (or a file not growing) this long: all that was captured is written."""
        return 0.1 if self.immediate else self.BLOCK_TIMEOUT + 0.2

    @property
    def packets(self) -> int | None:
        """Packets tcpdump captured (known once it has stopped)."""
        return self.stats.captured if self.stats is not None else None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.stats is None and self.proc.poll() is None

    def argv(self) -> list[str]:
        # -U: a write per packet (for people watching, and so a file can be read while it
        # grows); without it tcpdump writes in buffer-sized chunks, far fewer system calls.
        argv = ["tcpdump", "-i", self.iface, "-w", self.path or "-", "-n",
                "-Z", "root", "-B", str(self.buffer_kib), "-s", str(self.snaplen)]
        if self.immediate:
            argv.insert(5, "--immediate-mode")
        if self.packet_buffered:
            argv.insert(5, "-U")
        if self.count:
            argv += ["-c", str(self.count)]
        if self.bpf:
            argv += ["--", self.bpf]
        return argv

    def start(self) -> Self:
        import subprocess

        from mptcplab import namespaces, privileges

        tcpdump = shutil.which("tcpdump")
        if tcpdump is None:
            raise MissingTool("tcpdump not found: install the Debian package tcpdump")
        privileges.require("a live capture (without it, read a file with -r)",
                           privileges.CAP_NET_RAW)
        fd, own_fd = self.netns_fd, None
        if fd is None and self.netns:
            privileges.require(f"capturing in namespace {self.netns}", privileges.CAP_SYS_ADMIN)
            try:
                fd = own_fd = os.open(netns_path(self.netns), os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                raise BadInput(f"no network namespace {self.netns!r} "
                               "(see `ip netns list`)") from None
            except OSError as exc:
                raise BadInput(f"network namespace {self.netns}: {exc.strerror}") from None
        try:
            if self.iface != "any":
                exists = _interface_exists(self.iface) if fd is None else \
                    namespaces.run(fd, _interface_exists, self.iface)
                if not exists:
                    raise BadInput(f"no interface {self.where}")
            try:
                self.proc = namespaces.popen_tied(
                    [tcpdump, *self.argv()[1:]], fd, stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL if self.path else subprocess.PIPE,
                    stderr=subprocess.PIPE)
            except OSError as exc:
                raise NotRoot(f"cannot start tcpdump in {self.where}: {exc.strerror}") from None
        finally:
            if own_fd is not None:
                os.close(own_fd)
        if self.proc.stdout is not None:
            with contextlib.suppress(OSError):      # a bigger pipe rides out decoder hiccups
                fcntl.fcntl(self.proc.stdout.fileno(), 1031, 1 << 20)   # F_SETPIPE_SZ
        self._wait_listening()
        return self

    def _wait_listening(self, timeout: float = 10.0) -> None:
        """Return once tcpdump says it is listening (the ring and filter are in place), so
        nothing sent after start() is missed; raise its complaint if it stops instead."""
        assert self.proc is not None and self.proc.stderr is not None
        fd = self.proc.stderr.fileno()
        buf = b""
        deadline = time.monotonic() + timeout
        while b"listening on" not in buf:
            left = deadline - time.monotonic()
            if left <= 0:
                self.stop()
                raise LabError(f"tcpdump on {self.where} did not start within {timeout:g} s")
            if not select.select([fd], [], [], left)[0]:
                continue
            chunk = os.read(fd, 4096)
            if not chunk:
                self.stderr = buf.decode(errors="replace")
                self.stop()
                raise self._failure()
            buf += chunk
        self.stderr = buf.decode(errors="replace")

    def records(self, idle: Callable[[], None] | None = None) -> Iterator[RecordTuple]:
        """The captured records, as tcpdump delivers them; ``idle()`` is called whenever the
        pipe is momentarily empty (flush output then).

        After ``request_stop()`` the records already captured are still delivered: tcpdump is
        stopped once the pipe has stayed empty for ``quiet`` seconds (the ring's backlog is
        decoded), or after ``DRAIN_LIMIT`` seconds if traffic keeps coming faster than it is
        decoded.
        """
        assert self.proc is not None and self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        os.set_blocking(fd, False)          # try a read first: no select while data flows
        last = [CHUNK]                      # bytes the last read returned

        def read(n: int) -> bytes:
            if last[0] < self.GATHER and not self.immediate:
                # Data is coming in driblets (tcpdump writes each packet): let a couple of
                # milliseconds' worth gather rather than pay a read and a pass through the
                # reader for every few packets. Without immediate mode the kernel hands
                # packets over a ring block at a time anyway.
                time.sleep(0.002)
            while True:
                if self._stop_at is not None and not self._interrupted and (
                        time.monotonic() - self._stop_at > self.DRAIN_LIMIT
                        or not select.select([fd], [], [], self.quiet)[0]):
                    self.interrupt()       # tcpdump writes what it holds and exits: EOF
                try:
                    chunk = os.read(fd, n)
                except BlockingIOError:
                    if idle is not None:
                        idle()
                    select.select([fd], [], [], 0.25)   # a stop request is seen within
                    continue                            # a quarter of a second
                last[0] = len(chunk) or CHUNK
                return chunk

        try:
            yield from iter_stream(read, f"tcpdump on {self.where}")
        except BadInput:
            self.stop()
            raise self._failure() from None

    def _failure(self) -> LabError:
        """tcpdump's own complaint, as the lab's error."""
        lines = [ln.strip() for ln in self.stderr.splitlines() if ln.strip()
                 and not ln.startswith(("listening on", "tcpdump: listening"))
                 and not any(ln.endswith(k) for k in _STAT_LINES)]
        code = self.proc.returncode if self.proc else "?"
        why = " | ".join(lines[-2:]) or f"tcpdump exited with {code}"
        low = why.lower()
        if "no such device" in low or "doesn't exist" in low:
            return BadInput(f"no interface {self.where}")
        if "permission" in low or "not permitted" in low:
            return NotRoot(f"capturing on {self.where}: {why}")
        if "syntax error" in low or "can't parse filter" in low or "filter expression" in low:
            return LabError(f"bad filter {self.bpf!r}: {why}", ExitStatus.USAGE)
        return LabError(f"tcpdump on {self.where} failed: {why}")

    def request_stop(self) -> None:
        """Finish after the packets already captured (safe in a signal handler)."""
        if self._stop_at is None:
            self._stop_at = time.monotonic()

    def interrupt(self) -> None:
        """Ask tcpdump to finish now: it flushes and prints its stats."""
        self._interrupted = True
        if self.proc is not None and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGINT)

    def settle(self, limit: float = 2.0) -> None:
        """(File mode) wait until the file has not grown for ``quiet`` seconds: tcpdump exits on
        SIGINT without draining its ring, so packets of the last milliseconds would be lost."""
        if self.path is None or not self.running:
            return
        deadline = time.monotonic() + limit
        last, since = -1, time.monotonic()
        while time.monotonic() < deadline:
            try:
                size = os.path.getsize(self.path)
            except OSError:
                return
            if size != last:
                last, since = size, time.monotonic()
            elif time.monotonic() - since >= self.quiet:
                return
            time.sleep(0.02)

    def stop(self, timeout: float = 5.0) -> LiveStats:
        """Stop tcpdump (if still running; a file is complete first) and return its counters."""
        import subprocess

        if self.stats is not None:
            return self.stats
        proc = self.proc
        if proc is None:
            self.stats = LiveStats()
            return self.stats
        assert proc.stderr is not None
        self.settle()
        self.interrupt()
        deadline = time.monotonic() + timeout
        if proc.stdout is not None:
            with contextlib.suppress(OSError):      # unblock a tcpdump stuck on a full pipe
                while time.monotonic() < deadline:
                    ready = select.select([proc.stdout], [], [], 0.1)[0]
                    if ready and not os.read(proc.stdout.fileno(), CHUNK):
                        break
                    if not ready and proc.poll() is not None:
                        break
        try:
            proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        self.stderr += proc.stderr.read().decode(errors="replace")
        if proc.stdout is not None:
            proc.stdout.close()
        proc.stderr.close()
        stats = LiveStats()
        for line in self.stderr.splitlines():
            number, _, what = line.strip().partition(" ")
            if number.isdigit() and what in _STAT_LINES:
                setattr(stats, _STAT_LINES[what], int(number))
        self.stats = stats
        return stats

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

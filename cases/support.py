"""What a conformance case needs besides the lab: feature probes, counter checks, kernel
traffic, captures and what they show. Kernel-vs-kernel and Scapy-peer cases import this.

    needs(*features)                    mark: skip with the reason when a feature is missing
                                        ("nft", "net.mptcp.blackhole_timeout", "MPTcpExtBlackhole");
                                        a kernel's is "not available on this kernel: ..."
    unavailable(reason)                 the same from inside a case
    expect_counters(host, before, **n)  delta since `before` must equal n; says what else moved
    wait_for(predicate, what=, timeout=)          poll with a deadline; fail saying what is missing
    wait_counter(host, before, name, at_least=)   ... until a counter delta reaches a value
    transfer(client, server, dst, upload=, download=) -> Transfer   one whole kernel connection
    connect(client, server, dst) -> Connection    an open kernel connection, for multi-step cases
    the `case` fixture (conftest.py): case.capture(host, iface) -> Pcap, in the case's artifacts
    Pcap.segments() / .options(subtype) / .wait_for(...) / .mark()  decoded capture
    mptcp_keys(segments), dss_checksum_failures(segments), payload_bytes(segments, ...)
    data_ranges(segments, addr=), bytes_outside(a, b)   data-level bytes per path
    pattern(n), first_difference(sent, read)            data that shows loss/duplication

A case's RFC 8684 section goes in its docstring ("RFC 8684 §3.7"); the summary table and the
JUnit XML read it from there. Set MPTCPLAB_STRICT=1 to make every skip a failure (CI).
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import socket
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from mptcplab import crypto
from mptcplab.decode import Segment, decode_file
from mptcplab.describe import describe
from mptcplab.topo import IPPROTO_MPTCP, SOL_MPTCP, Capture, Counters, LabHost

STRICT_ENV = "MPTCPLAB_STRICT"
ARTIFACTS_ENV = "MPTCPLAB_ARTIFACTS"
MPTCP_INFO = 1
HEADERS = 160          # snaplen: link header (cooked v2: 20) + IPv6 (40) + TCP with options (60)
FULL = 65600           # snaplen for payload checks: a whole GSO super-segment
RFC_RE = re.compile(r"RFC\s*8684,?\s*(?:§\s*|section\s+|sec\.\s*)?(\d+(?:\.\d+)*)",
                    re.IGNORECASE)


# -- features ------------------------------------------------------------------------------

UNAVAILABLE = "not available on this kernel"   # how a missing kernel feature's skip begins


def kernel_feature(feature: str) -> bool:
    """Is `feature` something the kernel has or lacks (a sysctl, a MIB counter, netem), as
    opposed to something this machine lacks (root, a tool)? A missing kernel feature is a fact
    about that kernel, reported as "not available on this kernel", never a failure; a missing
    tool is a broken machine, which MPTCPLAB_STRICT=1 fails."""
    return feature.startswith("net.") or feature == "netem" \
        or bool(re.match(r"^(MPTcpExt|TcpExt|IpExt|Tcp|Ip)[A-Z]", feature))


def unavailable(reason: str) -> None:
    """Skip the running case because the kernel lacks something (probed, never a version
    check): `unavailable("this kernel has no ...")`. Stays a skip under MPTCPLAB_STRICT=1."""
    pytest.skip(f"{UNAVAILABLE}: {reason}")


def probe(feature: str) -> str | None:
    """Why `feature` is missing here, or None when it is present. Probes, never versions:
    a tool on PATH ("nft"), a sysctl ("net.mptcp.blackhole_timeout", read in this process's
    namespace: every new namespace has the same set), a MIB counter ("MPTcpExtBlackhole"),
    "netem" (the delay qdisc, which the kernel loads on demand where it is a module)."""
    if feature == "netem":
        from mptcplab.topo import netem_available

        return None if netem_available() else "this kernel has no netem qdisc (sch_netem)"
    if feature == "root":
        return None if os.geteuid() == 0 else "needs root: the cases build network namespaces"
    if feature.startswith("net."):
        path = "/proc/sys/" + feature.replace(".", "/")
        return None if os.path.exists(path) else f"this kernel has no sysctl {feature}"
    if re.match(r"^(MPTcpExt|TcpExt|IpExt|Tcp|Ip)[A-Z]", feature):
        from mptcplab.topo.mib import parse

        names: set[str] = set()
        for path in ("/proc/self/net/netstat", "/proc/self/net/snmp"):
            with suppress(OSError), open(path) as f:
                names |= set(parse(f.read()))
        return None if feature in names else f"this kernel has no MIB counter {feature}"
    if shutil.which(feature) is None:
        package = {"nft": "nftables", "ss": "iproute2"}.get(feature, feature)
        return f"{feature} not installed (Debian package {package})"
    return None


def needs(*features: str) -> pytest.MarkDecorator:
    """Mark a case (or `pytestmark` a module): skipped, with the reason, when any of the
    features is missing; a failure instead under MPTCPLAB_STRICT=1."""
    return pytest.mark.needs(*features)


def strict() -> bool:
    return os.environ.get(STRICT_ENV, "") not in ("", "0")


def rfc_section(doc: str | None) -> str:
    """"3.7" from a docstring saying "RFC 8684 §3.7" (or "section 3.7", or "3.7"); "" when
    absent. The first section named is the case's."""
    m = RFC_RE.search(doc or "")
    return m.group(1) if m else ""


# -- counters and waiting ------------------------------------------------------------------

def _short(name: str) -> str:
    return name.removeprefix("MPTcpExt")


def _have_counters(counters: Counters, names: Any) -> None:
    """A counter this kernel does not have makes the case "not available on this kernel"
    (it cannot judge), rather than a KeyError; it never reads as 0."""
    missing = [n for n in names if n not in counters]
    if missing:
        unavailable("this kernel has no MIB counter " + ", ".join(missing))


def expect_counters(host: LabHost, before: Counters, **expected: int) -> Counters:
    """Counters of `host` now minus `before` must match `expected` (full nstat names:
    MPTcpExtMPJoinSynRx=1). Fails like the kernel selftests, `server MPTcpExtMPJoinSynRx:
    expected 1, got 0`, followed by every MPTcpExt counter that did move. Returns the delta."""
    delta = host.counters() - before
    _have_counters(delta, expected)
    bad = [f"{host.name} {k}: expected {v}, got {delta[k]}" for k, v in expected.items()
           if delta[k] != v]
    if bad:
        moved = ", ".join(f"{_short(k)}={v}" for k, v in sorted(delta.nonzero("MPTcpExt").items()))
        raise AssertionError("; ".join(bad) + f"\n  {host.name} MPTcpExt deltas: {moved or 'none'}")
    return delta


def wait_for(predicate: Callable[[], Any], *, what: str, timeout: float = 10.0,
             interval: float = 0.02) -> Any:
    """Poll `predicate` until it returns something true (which is returned); after `timeout`
    seconds fail with "timed out after 10 s waiting for <what>"."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


def wait_counter(host: LabHost, before: Counters, name: str, *, at_least: int = 1,
                 timeout: float = 10.0) -> int:
    """Wait until `host`'s counter `name` rose by `at_least` since `before`; its delta."""
    last = [0]
    _have_counters(before, [name])

    def risen() -> bool:
        last[0] = (host.counters() - before)[name]
        return last[0] >= at_least

    try:
        wait_for(risen, what=f"{host.name} {name} >= {at_least}", timeout=timeout)
    except AssertionError as exc:
        delta = host.counters() - before
        moved = ", ".join(f"{_short(k)}={v}" for k, v in sorted(delta.nonzero("MPTcpExt").items()))
        raise AssertionError(f"{exc} (it is {last[0]})\n  {host.name} MPTcpExt deltas: "
                             f"{moved or 'none'}") from None
    return last[0]


# -- kernel traffic ------------------------------------------------------------------------

def _family(addr: str) -> int:
    return socket.AF_INET6 if ":" in addr else socket.AF_INET


def is_fallback(sock: socket.socket) -> bool:
    """True when the MPTCP socket fell back to TCP (MPTCP_INFO then answers EOPNOTSUPP)."""
    try:
        sock.getsockopt(SOL_MPTCP, MPTCP_INFO, 48)
    except OSError as exc:
        if exc.errno != errno.EOPNOTSUPP:
            raise
        return True
    return False


def recv_exactly(sock: socket.socket, n: int) -> bytes:
    """Read `n` bytes (fewer only at EOF)."""
    chunks, got = [], 0
    while got < n:
        data = sock.recv(min(1 << 20, n - got))
        if not data:
            break
        chunks.append(data)
        got += len(data)
    return b"".join(chunks)


def recv_all(sock: socket.socket) -> bytes:
    """Read until EOF."""
    chunks = []
    while data := sock.recv(1 << 20):
        chunks.append(data)
    return b"".join(chunks)


@dataclass
class Connection:
    """An open kernel connection: `client` and `server` (the accepted socket) in their
    namespaces. `upload`/`download` move bytes and return what the other side read."""

    client: socket.socket
    server: socket.socket
    listener: socket.socket
    timeout: float

    def _move(self, src: socket.socket, dst: socket.socket, data: bytes) -> bytes:
        out: list[bytes] = []
        errors: list[BaseException] = []

        def reader() -> None:
            try:
                out.append(recv_exactly(dst, len(data)))
            except BaseException as exc:  # reported below
                errors.append(exc)

        th = threading.Thread(target=reader, daemon=True)
        th.start()
        src.sendall(data)
        th.join(self.timeout)
        if errors:
            raise errors[0]
        if th.is_alive() or not out:
            raise AssertionError(f"{len(data)} bytes sent, not all read within {self.timeout:g} s")
        return out[0]

    def upload(self, data: bytes) -> bytes:
        """Client sends `data`; returns what the server read (len(data) bytes, or less at EOF)."""
        return self._move(self.client, self.server, data)

    def download(self, data: bytes) -> bytes:
        return self._move(self.server, self.client, data)

    def upload_until_eof(self, data: bytes, *, timeout: float = 5.0,
                         limit: int | None = None) -> bytes:
        """Client sends `data` then shuts down; the server reads until EOF, `limit` bytes
        (default 4 x len(data)) or `timeout` s, whichever first. Returns what the server's
        application read, never fails: for cases that judge what arrived."""
        limit = 4 * len(data) if limit is None else limit

        def send() -> None:
            with suppress(OSError):
                self.client.sendall(data)
                self.client.shutdown(socket.SHUT_WR)

        threading.Thread(target=send, daemon=True).start()
        got = bytearray()
        deadline = time.monotonic() + timeout
        while len(got) < limit and (left := deadline - time.monotonic()) > 0:
            self.server.settimeout(min(left, 0.5))
            try:
                chunk = self.server.recv(1 << 20)
            except TimeoutError:
                continue
            except OSError:
                break
            if not chunk:
                break
            got += chunk
        self.server.settimeout(self.timeout)
        return bytes(got)

    @property
    def fallback(self) -> tuple[bool, bool]:
        """(client fell back to TCP, server fell back to TCP)."""
        return is_fallback(self.client), is_fallback(self.server)

    def close(self) -> None:
        for s in (self.client, self.server, self.listener):
            with suppress(OSError):
                s.close()


@contextmanager
def connect(client: LabHost, server: LabHost, dst: str, *, port: int = 5000,
            proto: int = IPPROTO_MPTCP, source: str | None = None,
            timeout: float = 10.0) -> Iterator[Connection]:
    """Open one kernel connection from `client` to `dst` (a `server` address); the server
    listens on every address (joins arrive on the others). Closed on exit."""
    family = _family(dst)
    listener = server.socket(family, socket.SOCK_STREAM, proto)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", port))
    listener.listen(4)
    listener.settimeout(timeout)
    sock = client.socket(family, socket.SOCK_STREAM, proto)
    sock.settimeout(timeout)
    conn = None
    try:
        if source is not None:
            sock.bind((source, 0))
        sock.connect((dst, port))
        accepted, _ = listener.accept()
        accepted.settimeout(timeout)
        conn = Connection(sock, accepted, listener, timeout)
        yield conn
    finally:
        if conn is not None:
            conn.close()
        else:
            sock.close()
            listener.close()


@dataclass
class Transfer:
    """What one kernel connection moved: bytes each side's application read, and whether
    each side was still MPTCP (not fallen back) once the data had arrived."""

    upload: bytes
    download: bytes
    server_read: bytes
    client_read: bytes
    client_fallback: bool
    server_fallback: bool

    @property
    def intact(self) -> bool:
        return self.server_read == self.upload and self.client_read == self.download


def transfer(client: LabHost, server: LabHost, dst: str, *, upload: bytes = b"",
             download: bytes = b"", port: int = 5000, proto: int = IPPROTO_MPTCP,
             source: str | None = None, during: Callable[[Connection], None] | None = None,
             timeout: float = 10.0) -> Transfer:
    """One kernel connection: the client sends `upload`, the server `download` (both at once),
    `during(conn)` runs once the data is on its way, then both shut down and read to EOF."""
    with connect(client, server, dst, port=port, proto=proto, source=source,
                 timeout=timeout) as conn:
        results: dict[str, bytes] = {}
        errors: list[BaseException] = []

        def side(name: str, sock: socket.socket, data: bytes) -> None:
            try:
                reader = threading.Thread(target=lambda: results.__setitem__(name, recv_all(sock)),
                                          daemon=True)
                reader.start()
                sock.sendall(data)
                if name == "client_read" and during is not None:
                    during(conn)
                sock.shutdown(socket.SHUT_WR)
                reader.join(timeout)
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=side, args=a, daemon=True) for a in
                   (("client_read", conn.client, upload), ("server_read", conn.server, download))]
        for th in threads:
            th.start()
        for th in threads:
            th.join(timeout * 2)
        if errors:
            raise errors[0]
        missing = [k for k in ("client_read", "server_read") if k not in results]
        if missing:
            raise AssertionError(f"transfer did not finish within {timeout:g} s: "
                                 f"{', '.join(missing)} still waiting for EOF")
        fb_client, fb_server = conn.fallback
    return Transfer(upload, download, results["server_read"], results["client_read"],
                    fb_client, fb_server)


def pattern(n: int, seed: int = 0) -> bytes:
    """`n` bytes that differ at every position modulo 251: a shifted, lost or duplicated
    byte shows in a comparison. Never 0xFB-0xFF: a middlebox writing 0xFF is seen."""
    block = bytes((i * 7 + seed) % 251 for i in range(251))
    return (block * (n // 251 + 1))[:n]


def first_difference(sent: bytes, got: bytes) -> str:
    """"identical" or where and how two byte strings part."""
    if sent == got:
        return "identical"
    for i, (a, b) in enumerate(zip(sent, got)):
        if a != b:
            return (f"{len(sent)} bytes sent, {len(got)} read; first difference at byte {i} "
                    f"(sent {a:#04x}, read {b:#04x})")
    return f"{len(sent)} bytes sent, {len(got)} read; the shorter is a prefix of the longer"


# -- captures ------------------------------------------------------------------------------

class Pcap:
    """A tcpdump capture on a lab node, written into the case's artifacts directory.

    `snaplen=HEADERS` keeps headers and options; `FULL` whole segments (DSS checksums).
    Reading it (`segments()`) stops tcpdump first, after the file stopped growing; a capture
    in which tcpdump reports dropped packets fails the case rather than mislead it.
    """

    def __init__(self, host: LabHost, iface: str, path: Path, filter: str, snaplen: int) -> None:
        self.host, self.iface, self.path, self.filter, self.snaplen = (
            host, iface, path, filter, snaplen)
        # The lab sizes tcpdump's ring for about a thousand frames of this snaplen.
        self._cap: Capture = host.capture(iface, path, filter=filter, snaplen=snaplen)
        self._segments: list[Segment] | None = None

    def __repr__(self) -> str:
        return f"<Pcap {self.host.name}:{self.iface} {self.path}>"

    @property
    def running(self) -> bool:
        return self._cap.packets is None and self._cap.proc is not None \
            and self._cap.proc.poll() is None

    def _settle(self, quiet: float = 0.1, limit: float = 2.0) -> None:
        """Wait until the file has not grown for `quiet` s (tcpdump -U writes each packet
        as it handles it), so packets already on the wire are in the file."""
        deadline = time.monotonic() + limit
        last, since = -1, time.monotonic()
        while time.monotonic() < deadline:
            size = self.path.stat().st_size if self.path.exists() else 0
            if size != last:
                last, since = size, time.monotonic()
            elif time.monotonic() - since >= quiet:
                return
            time.sleep(0.02)

    def stop(self) -> None:
        """Stop tcpdump (idempotent); fail if it dropped packets."""
        if self.running:
            self._settle()
        self._cap.stop()
        m = re.search(r"(\d+) packets? dropped by kernel", self._cap.stderr)
        if m and int(m.group(1)):
            raise AssertionError(f"capture {self.path} is incomplete: tcpdump dropped "
                                 f"{m.group(1)} packets")

    def close(self) -> None:
        """Stop tcpdump whatever its state (teardown; no check)."""
        with suppress(Exception):
            self._cap.stop()

    def read(self) -> list[Segment]:
        """The segments written so far (tcpdump keeps running; a record being written is
        left out)."""
        out: list[Segment] = []
        with suppress(Exception):
            for seg in decode_file(str(self.path), mptcp_only=False):
                out.append(seg)
        return out

    def mark(self) -> int:
        """How many segments the file holds once tcpdump has caught up (the file stopped
        growing): an index into segments() between what happened before and after."""
        self._settle()
        return len(self.read())

    def segments(self) -> list[Segment]:
        """Every TCP segment of the capture (stops tcpdump first)."""
        if self._segments is None:
            self.stop()
            self._segments = list(decode_file(str(self.path), mptcp_only=False))
        return self._segments

    def options(self, subtype: str | None = None, **match: Any) -> list[tuple[Segment, dict]]:
        """(segment, option) for each MPTCP option of `subtype` whose fields match."""
        return find_options(self.segments(), subtype, **match)

    def wait_for(self, predicate: Callable[[list[Segment]], Any], *, what: str,
                 timeout: float = 10.0) -> Any:
        """Wait until `predicate(segments so far)` is true, reading the growing file."""
        return wait_for(lambda: predicate(self.read()), what=f"{what} in {self.path.name}",
                        timeout=timeout)


class Case:
    """One running case (the `case` fixture): where its files go and what to show if it fails.

    `capture()` starts tcpdump into `dir` (cases-artifacts/<case>/ unless MPTCPLAB_ARTIFACTS
    says otherwise); `note()` adds evidence. On failure the report shows the notes and every
    capture's MPTCP segments in words, and the files stay; on success they are removed.
    """

    def __init__(self, name: str, dir: Path) -> None:
        self.name = name
        self.dir = dir
        self.pcaps: list[Pcap] = []
        self.notes: list[tuple[str, str]] = []

    def capture(self, host: LabHost, iface: str = "any", *, filter: str = "tcp",
                snaplen: int = HEADERS, name: str = "") -> Pcap:
        """Capture on `host`:`iface` into <dir>/<host>-<iface>[-name].pcap."""
        self.dir.mkdir(parents=True, exist_ok=True)
        stem = "-".join(p for p in (host.name, iface, name) if p)
        pcap = Pcap(host, iface, self.dir / f"{stem}.pcap", filter, snaplen)
        self.pcaps.append(pcap)
        return pcap

    def note(self, title: str, text: str) -> None:
        """Evidence to print if the case fails (what was sent, what was read, ...)."""
        self.notes.append((title, text))

    def evidence(self) -> str:
        """What a failure report shows besides the assertion: notes, captures in words."""
        out: list[str] = []
        for title, text in self.notes:
            out.append(f"{title}: {text}")
        for pcap in self.pcaps:
            pcap.close()
            out.append(f"capture {pcap.path} ({pcap.host.name}:{pcap.iface}"
                       f"{', filter ' + pcap.filter if pcap.filter else ''}):")
            out.extend("  " + line for line in describe_capture(pcap.path))
        return "\n".join(out)


def find_options(segments: list[Segment], subtype: str | None = None,
                 **match: Any) -> list[tuple[Segment, dict]]:
    """(segment, option) for each MPTCP option of `subtype` (e.g. "MP_JOIN") whose fields
    equal `match` (length=12, echo=True, ...)."""
    return [(seg, opt) for seg in segments for opt in seg.options
            if (subtype is None or opt["subtype"] == subtype)
            and all(opt.get(k) == v for k, v in match.items())]


def has(seg: Segment, subtype: str, **match: Any) -> bool:
    """Does the segment carry an MPTCP option of `subtype` whose fields equal `match`?"""
    return any(o["subtype"] == subtype and all(o.get(k) == v for k, v in match.items())
               for o in seg.options)


def segment_line(seg: Segment) -> str:
    """One line per segment: frame, addresses, flags, length, options in words."""
    src = f"[{seg.src}]" if ":" in seg.src else seg.src
    dst = f"[{seg.dst}]" if ":" in seg.dst else seg.dst
    opts = "; ".join(describe(o) for o in seg.options) or "-"
    return (f"#{seg.frame:<5} {src}:{seg.sport} > {dst}:{seg.dport} [{seg.tcp_flags}] "
            f"len={seg.payload_len}  {opts}")


def _signalling(seg: Segment) -> bool:
    """SYN/FIN/RST, or an MPTCP option other than a plain DSS (DATA_FIN and infinite
    mappings count as signalling)."""
    if set("SFR") & set(seg.tcp_flags):
        return True
    return any(o["subtype"] != "DSS" or o.get("data_fin") or o.get("data_level_len") == 0
               for o in seg.options)


def describe_capture(path: Path, *, head: int = 40, tail: int = 20) -> list[str]:
    """A capture in words: every signalling segment (the first `head` and last `tail`), then
    how many plain data/ack segments each direction of each subflow had."""
    plain: dict[str, int] = defaultdict(int)
    lines: list[str] = []
    try:
        for seg in decode_file(str(path), mptcp_only=False):
            if _signalling(seg):
                lines.append(segment_line(seg))
            else:
                plain[f"{seg.src}:{seg.sport} > {seg.dst}:{seg.dport}"] += 1
    except Exception as exc:  # a capture cut short by a failure: show what decoded
        lines.append(f"(decoding stopped: {exc})")
    if len(lines) > head + tail:
        lines = lines[:head] + [f"... {len(lines) - head - tail} segments left out ..."] \
            + lines[-tail:]
    lines += [f"{n} plain data/ack segments {flow}" for flow, n in plain.items()]
    return lines


def mptcp_keys(segments: list[Segment]) -> tuple[int, int]:
    """(client key, server key) from the first MP_CAPABLE third ACK (length 20 or more)."""
    for seg in segments:
        for opt in seg.options:
            if opt["subtype"] == "MP_CAPABLE" and "receiver_key" in opt:
                return opt["sender_key"], opt["receiver_key"]
    raise AssertionError("no MP_CAPABLE ACK with both keys in the capture")


def payload_bytes(segments: list[Segment], *, src: str | None = None,
                  dst: str | None = None, port: int | None = None) -> int:
    """Payload bytes carried by the segments from `src` / to `dst` (on `port`, either end)."""
    return sum(s.payload_len for s in segments
               if (src is None or s.src == src) and (dst is None or s.dst == dst)
               and (port is None or port in (s.sport, s.dport)))


Flow = tuple[str, int, str, int]


def subflow_streams(segments: list[Segment]) -> dict[Flow, dict[int, bytes]]:
    """Each direction of each subflow: captured payload by relative sequence number
    (1 = first byte after the SYN). A full-payload capture is needed (snaplen FULL)."""
    isn: dict[Flow, int] = {}
    streams: dict[Flow, dict[int, bytes]] = defaultdict(dict)
    for seg in segments:
        key = (seg.src, seg.sport, seg.dst, seg.dport)
        if "S" in seg.tcp_flags:
            isn[key] = seg.seq
        elif seg.payload and key in isn:
            rel = (seg.seq - isn[key]) & 0xFFFFFFFF
            streams[key][rel] = seg.payload[:seg.payload_len]
    return streams


def _stream_bytes(chunks: dict[int, bytes], start: int, length: int) -> bytes | None:
    out = bytearray(length)
    have = bytearray(length)
    for rel, data in chunks.items():
        lo, hi = max(rel, start), min(rel + len(data), start + length)
        if lo < hi:
            out[lo - start:hi - start] = data[lo - rel:hi - rel]
            have[lo - start:hi - start] = b"\1" * (hi - lo)
    return bytes(out) if all(have) else None


def _merge(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for lo, hi in sorted(spans):
        if out and lo <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], hi))
        else:
            out.append((lo, hi))
    return out


def data_ranges(segments: list[Segment], *, addr: str, since: int = 0,
                until: int | None = None) -> list[tuple[int, int]]:
    """The data-level sequence ranges [start, end) carried by segments from or to `addr`
    (only segments[since:until] count), from each segment's DSS mapping (or MP_CAPABLE with
    data) and its subflow sequence number. The capture must hold the subflows' SYNs."""
    isn: dict[Flow, int] = {}
    last: dict[Flow, int] = {}
    spans: list[tuple[int, int]] = []
    stop = len(segments) if until is None else until
    for i, seg in enumerate(segments):
        key = (seg.src, seg.sport, seg.dst, seg.dport)
        if "S" in seg.tcp_flags:
            isn[key] = seg.seq
            continue
        if not seg.payload_len or key not in isn:
            continue
        mapping = None
        for opt in seg.options:
            if opt["subtype"] == "DSS" and "dsn" in opt and opt["ssn"]:
                dsn = opt["dsn"] if opt["dsn_len"] == 8 else \
                    crypto.expand_dsn(opt["dsn"], last.get(key, 0))
                mapping = (dsn, opt["ssn"], opt["data_level_len"])
            elif opt["subtype"] == "MP_CAPABLE" and "data_level_len" in opt:
                mapping = ((crypto.key_idsn(opt["sender_key"]) + 1) % 2**64, 1,
                           opt["data_level_len"])
        if mapping is None:
            continue
        dsn, ssn, length = mapping
        rel = (seg.seq - isn[key]) & 0xFFFFFFFF
        start = dsn + (rel - ssn)
        end = min(start + seg.payload_len, dsn + length)
        last[key] = dsn
        if start < end and since <= i < stop and addr in (seg.src, seg.dst):
            spans.append((start, end))
    return _merge(spans)


def bytes_outside(ranges: list[tuple[int, int]], others: list[tuple[int, int]]) -> int:
    """How many bytes of `ranges` no range of `others` covers: data sent there first."""
    missing = 0
    for lo, hi in ranges:
        covered = sum(max(0, min(hi, b) - max(lo, a)) for a, b in others)
        missing += (hi - lo) - covered
    return missing


@dataclass
class ChecksumReport:
    """DSS checksums recomputed over a capture: how many verified, which did not."""

    verified: int = 0
    failures: list[str] = field(default_factory=list)
    uncovered: int = 0          # mappings whose bytes the capture does not hold


def dss_checksum_failures(segments: list[Segment]) -> ChecksumReport:
    """Recompute every DSS checksum (and the MP_CAPABLE-with-data one) over the captured
    payload, reassembled across segments (RFC 8684 §3.3.1)."""
    streams = subflow_streams(segments)
    idsn: dict[Flow, int] = {}
    report = ChecksumReport()
    for seg in segments:
        key = (seg.src, seg.sport, seg.dst, seg.dport)
        for opt in seg.options:
            if opt["subtype"] == "MP_CAPABLE" and "sender_key" in opt:
                idsn.setdefault(key, crypto.key_idsn(opt["sender_key"]))
            if opt["subtype"] == "MP_CAPABLE" and "checksum" in opt:
                dsn, ssn = (crypto.key_idsn(opt["sender_key"]) + 1) % 2**64, 1
            elif opt["subtype"] == "DSS" and "checksum" in opt:
                dsn, ssn = opt["dsn"], opt["ssn"]
                if opt["dsn_len"] == 4:
                    dsn = crypto.expand_dsn(dsn, idsn.get(key, 0))
            else:
                continue
            length = opt["data_level_len"]
            if opt.get("data_fin") and ssn == 0:
                data: bytes | None = b""          # a DATA_FIN alone maps no subflow byte
            else:
                if opt.get("data_fin"):
                    length -= 1
                data = _stream_bytes(streams.get(key, {}), ssn, length)
            if data is None:
                report.uncovered += 1
                continue
            if crypto.dss_checksum_ok(dsn, ssn, opt["data_level_len"], data, opt["checksum"]):
                report.verified += 1
            else:
                report.failures.append(f"{segment_line(seg)}: checksum does not verify")
    return report


__all__ = [
    "FULL", "HEADERS", "Case", "ChecksumReport", "Connection", "Pcap", "Transfer",
    "bytes_outside", "connect", "data_ranges", "describe_capture", "dss_checksum_failures", "expect_counters", "find_options",
    "first_difference", "has", "is_fallback", "mptcp_keys", "needs", "pattern", "payload_bytes",
    "probe", "recv_all", "recv_exactly", "rfc_section", "segment_line", "strict",
    "subflow_streams", "transfer", "unavailable", "wait_counter", "wait_for",
    "UNAVAILABLE", "kernel_feature",
]

"""The pytest glue of the conformance cases: feature probes, counter checks, waiting, and the
case's captures with their evidence. What is not pytest glue lives in the package:
kernel traffic in `mptcplab.traffic` (connect, transfer, pattern), what a capture shows in
`mptcplab.facts` (find_options, mptcp_keys, data_ranges, checksum_report).

    needs(*features)                    mark: skip with the reason when a feature is missing
                                        ("nft", "net.mptcp.blackhole_timeout", "MPTcpExtBlackhole");
                                        a kernel's is "not available on this kernel: ..."
    unavailable(reason)                 the same from inside a case
    expect_counters(host, before, **n)  delta since `before` must equal n; says what else moved
    wait_for(predicate, what=, timeout=)          poll with a deadline; fail saying what is missing
    wait_counter(host, before, name, at_least=)   ... until a counter delta reaches a value
    the `case` fixture (conftest.py): case.capture(host, iface) -> Pcap, in the case's artifacts
    Pcap.segments() / .options(subtype) / .wait_for(...) / .mark()  decoded capture
    peer_lab(case, ...) -> PeerLab      the Scapy peer ("client") facing the kernel ("server"),
                                        with a capture, counters and the peer's view as evidence
    covers("3.1-syn-v2", ...)           mark: the requirements (cases/requirements.py) a case checks

A case's RFC 8684 section goes in its docstring ("RFC 8684 §3.7"); the summary table and the
JUnit XML read it from there. Set MPTCPLAB_STRICT=1 to make every skip a failure (CI).
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from mptcplab.capture import LiveCapture
from mptcplab.decode import Segment, decode_file
from mptcplab.facts import find_options
from mptcplab.poll import until
from mptcplab.report.lines import segment_line
from mptcplab.topo import IPPROTO_MPTCP, Counters, LabHost

STRICT_ENV = "MPTCPLAB_STRICT"
ARTIFACTS_ENV = "MPTCPLAB_ARTIFACTS"
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
    if feature.startswith("MPTcpExt"):
        return known_counter(feature)
    return feature.startswith("net.") or feature == "netem" \
        or bool(re.match(r"^(TcpExt|IpExt|Tcp|Ip)[A-Z]", feature))


def known_counter(name: str) -> bool:
    """Is `name` an MPTcpExt counter some kernel has (the newest the lab knows, or this one)?
    One that is not is a typo in the case: a failure, never "not available"."""
    from mptcplab.topo.mib_names import MPTCP_COUNTERS

    if not name.startswith("MPTcpExt"):
        return True
    if name[len("MPTcpExt"):] in MPTCP_COUNTERS:
        return True
    from mptcplab.topo.mib import read_here

    return name in read_here()


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


def covers(*requirements: str) -> pytest.MarkDecorator:
    """Mark a case with the ids of the RFC 8684 requirements it checks (cases/requirements.py):
    `pytest cases/ --requirements` builds the conformance table from these marks."""
    return pytest.mark.covers(*requirements)


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


def expect_counters(host: LabHost, before: Counters, **expected: int) -> Counters:
    """Counters of `host` now minus `before` must match `expected` (full nstat names:
    MPTcpExtMPJoinSynRx=1). Fails like the kernel selftests, `server MPTcpExtMPJoinSynRx:
    expected 1, got 0`, followed by every MPTcpExt counter that did move. Returns the delta."""
    delta = host.counters() - before
    _skip_missing(delta, expected)
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
    return until(predicate, what, timeout, interval, error=AssertionError)


def _skip_missing(counters: Counters, names: Any) -> None:
    """A counter this kernel does not have makes the case "not available on this kernel"
    (it cannot judge; a skip also under MPTCPLAB_STRICT=1), like a missing `needs(...)`
    kernel feature, rather than a KeyError; it never reads as 0. A name no kernel the lab
    knows has is a typo in the case: a failure, never a skip."""
    missing = [n for n in names if n not in counters]
    unknown = [n for n in missing if not known_counter(n)]
    if unknown:
        raise AssertionError(f"no kernel has a MIB counter named {', '.join(unknown)} "
                             "(a typo in the case?)")
    if missing:
        unavailable("; ".join(f"this kernel has no MIB counter {n}" for n in missing))


def wait_counter(host: LabHost, before: Counters, name: str, *, at_least: int = 1,
                 timeout: float = 10.0) -> int:
    """Wait until `host`'s counter `name` rose by `at_least` since `before`; its delta."""
    _skip_missing(before, [name])
    last = [0]

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
        self._cap: LiveCapture = host.capture(iface, path, filter=filter, snaplen=snaplen)
        self._segments: list[Segment] | None = None

    def __repr__(self) -> str:
        return f"<Pcap {self.host.name}:{self.iface} {self.path}>"

    @property
    def running(self) -> bool:
        return self._cap.running

    def stop(self) -> None:
        """Stop tcpdump (idempotent; the file is complete first); fail if it dropped packets."""
        stats = self._cap.stop()
        if stats.dropped_by_kernel:
            raise AssertionError(f"capture {self.path} is incomplete: tcpdump dropped "
                                 f"{stats.dropped_by_kernel} packets")

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
        self._cap.settle()
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
        self.files: list[Path] = []          # captures written otherwise (the peer's view)
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
        for path in self.files:
            out.append(f"capture {path}:")
            out.extend("  " + line for line in describe_capture(path))
        return "\n".join(out)


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




# -- the Scapy peer facing the kernel ---------------------------------------------------------

PEER_V4 = ("10.0.1.1", "10.0.2.1")          # the peer's addresses on path 1 and 2
KERNEL_V4 = ("10.0.1.2", "10.0.2.2")        # the kernel's
PEER_V6 = ("dead:beef:1::1", "dead:beef:2::1")
KERNEL_V6 = ("dead:beef:1::2", "dead:beef:2::2")
PORT = 5000                                  # where the kernel listens
PEER_PORT = 6000                             # where the peer listens


@dataclass
class PeerLab:
    """The peer ("client" namespace) and the kernel ("server"), two direct links
    (10.0.1.0/24 + dead:beef:1::/64, 10.0.2.0/24 + dead:beef:2::/64)."""

    lab: Any
    peer: Any
    case: Case
    before: Counters

    @property
    def kernel(self) -> LabHost:
        return self.lab["server"]

    def expect(self, **counters: int) -> Counters:
        """The kernel's counters since the lab came up (expect_counters)."""
        return expect_counters(self.kernel, self.before, **counters)

    def listener(self, family: int = socket.AF_INET, port: int = PORT) -> socket.socket:
        """A kernel MPTCP listener on every address."""
        lst = self.kernel.socket(family, socket.SOCK_STREAM, IPPROTO_MPTCP)
        lst.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        lst.bind(("", port))
        lst.listen(8)
        lst.settimeout(5)
        return lst

    @contextmanager
    def connected(self, family: int = socket.AF_INET, **connect: Any) -> Iterator[socket.socket]:
        """The peer connects to a kernel listener (keyword arguments go to peer.connect);
        yields the kernel's accepted socket."""
        lst = self.listener(family)
        dst = KERNEL_V6[0] if family == socket.AF_INET6 else KERNEL_V4[0]
        self.peer.connect(dst, PORT, **connect)
        conn, _ = lst.accept()
        conn.settimeout(5)
        try:
            yield conn
        finally:
            conn.close()
            lst.close()

    @contextmanager
    def kernel_connects(self, family: int = socket.AF_INET, ports: tuple[int, ...] = (PEER_PORT,),
                        dst: str | None = None, **listen: Any) -> Iterator[socket.socket]:
        """The kernel connects to the peer listening on `ports` (keyword arguments go to
        peer.listen) at `dst` (default: its path-1 address of `family`); yields the kernel's
        socket once the peer accepted it."""
        for port in ports:
            self.peer.listen(port, **listen)
        sock = self.kernel.socket(family, socket.SOCK_STREAM, IPPROTO_MPTCP)
        sock.settimeout(5)
        if dst is None:
            dst = PEER_V6[0] if family == socket.AF_INET6 else PEER_V4[0]
        sock.connect((dst, ports[0]))
        self.peer.accept()
        try:
            yield sock
        finally:
            sock.close()


@contextmanager
def peer_lab(case: Case, *, kernel_mptcp: dict[str, object] | None = None,
             subflows: int = 4, add_addr_accepted: int = 2,
             kernel_endpoints: tuple[tuple[str, tuple[str, ...]], ...] = (),
             **peer: Any) -> Iterator[PeerLab]:
    """A lab with the Scapy peer facing the kernel; keyword arguments go to MptcpPeer
    (checksum=, withhold=, dsn32=, ...). The evidence on failure: peer-view.pcap in the
    case's artifacts (every packet of the peer's namespace, both ways, from the peer's own
    AF_PACKET socket: no tcpdump to start and stop), what the peer received, and the
    kernel's MPTcpExt deltas."""
    from mptcplab.peer import MptcpPeer
    from mptcplab.peer.endpoint import _line
    from mptcplab.topo import Lab, Topology

    topo = Topology("peer-case")
    client = topo.host("client")
    # blackhole_timeout=0 keeps one fallback from turning MPTCP off; kernels without the
    # blackhole (6.1) have no such sysctl and need none.
    quiet = {"blackhole_timeout": 0} if probe("net.mptcp.blackhole_timeout") is None else {}
    server = topo.host("server", mptcp={**quiet, **(kernel_mptcp or {})})
    server.set_limits(subflows=subflows, add_addr_accepted=add_addr_accepted)
    topo.link(client, server, v4="10.0.1.0/24", v6="dead:beef:1::/64")
    topo.link(client, server, v4="10.0.2.0/24", v6="dead:beef:2::/64")
    for addr, flags in kernel_endpoints:
        server.endpoint(addr, *flags)
    with Lab(topo) as lab:
        with MptcpPeer(lab["client"], **peer) as mp:
            pl = PeerLab(lab, mp, case, lab["server"].counters())
            try:
                yield pl
                # a peer whose receive thread died saw nothing after that: no verdict
                assert mp.error is None, f"the peer's receive thread failed: {mp.error!r}"
            finally:
                case.dir.mkdir(parents=True, exist_ok=True)
                path = case.dir / "peer-view.pcap"
                mp.write_pcap(str(path))
                case.files.append(path)
                case.note("what the peer received", "\n  " + "\n  ".join(
                    _line(s) for s in mp.segments[-30:]) if mp.segments else "nothing")
                moved = (lab["server"].counters() - pl.before).nonzero("MPTcpExt")
                case.note("kernel MPTcpExt deltas", ", ".join(
                    f"{_short(k)}={v}" for k, v in sorted(moved.items())) or "none")


def read_for(sock: socket.socket, n: int, within: float = 1.0) -> bytes:
    """What the application reads of `n` bytes within `within` seconds (less on EOF or when
    nothing more comes; a reset raises)."""
    got = bytearray()
    deadline = time.monotonic() + within
    while len(got) < n and (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            chunk = sock.recv(n - len(got))
        except TimeoutError:
            break
        if not chunk:
            break
        got += chunk
    sock.settimeout(5)
    return bytes(got)


__all__ = [
    "FULL", "HEADERS", "KERNEL_V4", "KERNEL_V6", "PEER_PORT", "PEER_V4", "PEER_V6", "PORT",
    "Case", "Pcap", "PeerLab", "covers", "describe_capture", "expect_counters", "needs",
    "peer_lab", "probe", "read_for", "rfc_section", "strict", "wait_counter", "wait_for",
    "UNAVAILABLE", "kernel_feature", "known_counter", "unavailable",
]

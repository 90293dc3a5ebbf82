"""What a decoded capture shows, as answers to the questions cases and demos ask: which options
went by, the keys of the handshake, the data-level ranges each path carried, whether every DSS
checksum verifies. Built on the decoder's segments and the sniffer's tracker (no second
reassembly).

    find_options(segments, "MP_JOIN", length=12)   (segment, option) pairs
    has(seg, "DSS", data_fin=True)
    mptcp_keys(segments) -> (client key, server key)
    payload_bytes(segments, src=, dst=, port=)
    data_ranges(segments, addr=) / bytes_outside(a, b)   data-level bytes per path
    checksum_report(segments) -> ChecksumReport         every DSS checksum recomputed
    reserved_bits(path) -> [(frame, subtype, bits)]     options sent with reserved bits set
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mptcplab import crypto, wire
from mptcplab.analysis import Tracker
from mptcplab.capture import read_records
from mptcplab.decode import Segment, ip_offset
from mptcplab.report.lines import segment_line


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



def mptcp_keys(segments: list[Segment]) -> tuple[int, int]:
    """(client key, server key) from the first MP_CAPABLE third ACK (length 20 or more)."""
    for seg in segments:
        for opt in seg.options:
            if opt["subtype"] == "MP_CAPABLE" and "receiver_key" in opt:
                return opt["sender_key"], opt["receiver_key"]
    raise ValueError("no MP_CAPABLE ACK with both keys in the capture")


def payload_bytes(segments: list[Segment], *, src: str | None = None,
                  dst: str | None = None, port: int | None = None) -> int:
    """Payload bytes carried by the segments from `src` / to `dst` (on `port`, either end)."""
    return sum(s.payload_len for s in segments
               if (src is None or s.src == src) and (dst is None or s.dst == dst)
               and (port is None or port in (s.sport, s.dport)))


Flow = tuple[str, int, str, int]


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
    uncovered: int = 0          # checksums whose mapping's bytes the capture does not hold


def checksum_report(segments: list[Segment]) -> ChecksumReport:
    """Every DSS checksum (and the MP_CAPABLE-with-data one) recomputed over the captured
    payload, mappings reassembled across segments by the tracker (RFC 8684 §3.3.1). Each
    option carrying a checksum counts once (a mapping repeated on several segments, several
    times). The capture needs whole payloads (snaplen FULL) and the subflows' SYNs."""
    tracker = Tracker()
    annotated = []
    for seg in segments:
        ann = tracker.feed(seg)
        if ann is not None and seg.options:
            annotated.append(ann)
    tracker.finish()
    report = ChecksumReport()
    for ann in annotated:
        for i, opt in enumerate(ann.seg.options):
            verdicts = ann.verdicts(i)
            if "checksum_valid" not in verdicts:
                continue
            verdict = verdicts["checksum_valid"]
            if verdict is None:
                report.uncovered += 1
            elif verdict:
                report.verified += 1
            else:
                report.failures.append(f"{segment_line(ann.seg)}: checksum does not verify")
    return report


def network_effects(near: list[Segment], far: list[Segment],
                    near_addrs: set[str]) -> dict[int, str]:
    """What the network did to segments, from captures at both ends of it: ``near`` taken at
    the host owning ``near_addrs``, ``far`` at the other end. Returns, by frame of ``near``:
    "dropped in the network" for a segment the near host sent that never reached the far
    capture; "changed in the network: ..." for one whose MPTCP options or payload differ
    between the two (the options each way, or the first differing byte as sent and as
    received). Segments are matched by addresses, ports, flags, sequence and acknowledgment
    numbers, length and MPTCP options (each copy once: a SYN sent three times and arrived once
    was dropped twice). Both captures must have run the whole time, and keep whole payloads
    for a changed byte to be seen."""
    def base(s: Segment) -> tuple[Any, ...]:
        return (s.src, s.sport, s.dst, s.dport, s.tcp_flags, s.seq, s.ack, s.payload_len)

    def opts(s: Segment) -> tuple[Any, ...]:
        return tuple((o["subtype"], o["length"]) for o in s.options)

    def words(s: Segment) -> str:
        return ", ".join(f"{o['subtype']} ({o['length']} bytes)" for o in s.options) or "none"

    exact: dict[tuple[Any, ...], list[Segment]] = {}
    loose: dict[tuple[Any, ...], list[Segment]] = {}
    for seg in far:
        exact.setdefault(base(seg) + opts(seg), []).append(seg)
    covered: dict[tuple[str, int, str, int], list[tuple[int, int]]] = {}
    for seg in far:
        if seg.payload_len:
            covered.setdefault((seg.src, seg.sport, seg.dst, seg.dport), []).append(
                (seg.seq, seg.payload_len))
    out: dict[int, str] = {}
    unmatched: list[Segment] = []
    for seg in near:
        twins = exact.get(base(seg) + opts(seg))
        if not twins:
            unmatched.append(seg)
            continue
        other = twins.pop(0)
        if not seg.payload_len or seg.payload == other.payload:
            continue
        sent_here = seg.src in near_addrs
        sent, got = (seg.payload, other.payload) if sent_here else (other.payload, seg.payload)
        diffs = [i for i, (a, b) in enumerate(zip(sent, got)) if a != b]
        if diffs:
            i = diffs[0]
            out[seg.frame] = (f"changed in the network: payload byte {i} sent as "
                              f"{sent[i]:#04x}, received as {got[i]:#04x}"
                              + (f" ({len(diffs)} bytes differ)" if len(diffs) > 1 else ""))
    for rest in exact.values():
        for seg in rest:
            loose.setdefault(base(seg), []).append(seg)
    for seg in unmatched:
        sent_here = seg.src in near_addrs
        twins = loose.get(base(seg))
        if twins:
            other = twins.pop(0)
            sent, got = (seg, other) if sent_here else (other, seg)
            out[seg.frame] = (f"changed in the network: MPTCP options sent {words(sent)}, "
                              f"received {words(got)}")
            continue
        if not sent_here:
            continue
        flow = covered.get((seg.src, seg.sport, seg.dst, seg.dport), [])
        if seg.payload_len and any((seg.seq - s) & 0xFFFFFFFF < n or
                                   (s - seg.seq) & 0xFFFFFFFF < seg.payload_len
                                   for s, n in flow):
            continue                # its bytes arrived, cut differently (offloads)
        out[seg.frame] = "dropped in the network"
    return out


# Bits that are reserved (or unassigned) in each subtype's first four bytes, by option length
# where the forms differ (RFC 8684 Figures 4-15): a mask over bytes 2-3 of the option.
_RESERVED: dict[int, Any] = {
    0x0: lambda n: 0x005E,                   # MP_CAPABLE: B extensibility, D-G unassigned
    0x1: lambda n: 0x0FFF if n == 24 else 0x0E00,   # MP_JOIN: ACK 12 bits; SYN/SYN-ACK 3
    0x2: lambda n: 0x0FE0,                   # DSS: 7 bits before the flags
    0x3: lambda n: 0x0E00,                   # ADD_ADDR: 3 bits before E
    0x4: lambda n: 0x0F00,                   # REMOVE_ADDR: the low nibble
    0x5: lambda n: 0x0E00,                   # MP_PRIO: 3 bits before B
    0x6: lambda n: 0x0FFF,                   # MP_FAIL: 12 bits
    0x7: lambda n: 0x0FFF,                   # MP_FASTCLOSE: 12 bits
    0x8: lambda n: 0x0E00,                   # MP_TCPRST: U, V, W (T is defined)
}


def reserved_bits(path: str, *, src: str | None = None) -> list[tuple[int, str, int]]:
    """(frame, subtype, bits) for every MPTCP option in the capture (sent by `src`, if given)
    whose reserved or unassigned bits are not zero; [] when every option is clean."""
    import socket
    import struct

    out: list[tuple[int, str, int]] = []
    for rec in read_records(path):
        ip = ip_offset(rec.data, rec.linktype)
        if ip < 0 or len(rec.data) < ip + 20:
            continue
        data = rec.data
        if data[ip] >> 4 == 4:
            if data[ip + 9] != 6:
                continue
            sender = socket.inet_ntop(socket.AF_INET, data[ip + 12:ip + 16])
            tcp = ip + (data[ip] & 0x0F) * 4
        elif data[ip] >> 4 == 6 and len(data) >= ip + 40 and data[ip + 6] == 6:
            sender = socket.inet_ntop(socket.AF_INET6, data[ip + 8:ip + 24])
            tcp = ip + 40
        else:
            continue
        if src is not None and sender != src or len(data) < tcp + 20:
            continue
        doff = (data[tcp + 12] >> 4) * 4
        for raw in wire.option_spans(data[tcp + 20:tcp + doff]):
            if len(raw) < 3 or raw[0] != wire.MPTCP_KIND:
                continue
            subtype = raw[2] >> 4
            rule = _RESERVED.get(subtype)
            if rule is None:
                continue
            bits = struct.unpack("!H", (raw[2:4] + b"\0")[:2])[0] & rule(raw[1])
            if bits:
                out.append((rec.index, wire.SUBTYPE_NAMES[subtype], bits))
    return out

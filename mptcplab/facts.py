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
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mptcplab import crypto
from mptcplab.analysis import Tracker
from mptcplab.decode import Segment
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

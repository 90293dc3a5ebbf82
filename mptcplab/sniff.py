"""`mptcplab sniff`: captured records -> tracker -> lines, as fast as Python allows.

Two paths through the same ``Tracker`` state:

* the reference path: ``decode.segment_from_frame`` builds a ``Segment`` with every option
  decoded into the layers' dictionaries, ``Tracker.feed`` tracks and validates it;
* the fast path (``pump``), for the segments that are nearly all of a bulk transfer — no SYN,
  FIN or RST, on a subflow already tracked whose payload no DSS checksum needs, carrying no
  MPTCP option or exactly one DSS without checksum, DATA_FIN or infinite mapping. For those
  it reads the few header bytes it needs with ``struct``, updates the subflow's byte counter
  and mapping flag directly, and (``--json``) formats the line from the numbers, without a
  ``Segment``, a dictionary or ``json.dumps``. Everything else takes the reference path.

The tests run every capture through both and require the same summary and the same JSON lines.

Output keeps capture order: a packet whose DSS checksum waits for the rest of its mapping holds
back the lines after it until the verdict is in (or the mapping is given up, ``Tracker.HOLD``
frames later).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import struct
import sys
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any, TextIO

from mptcplab.analysis import Annotated, Half, Subflow, Tracker
from mptcplab.capture import (
    LINKTYPE_ETHERNET,
    LINKTYPE_LINUX_SLL2,
    BpfFilter,
    LiveCapture,
    LiveStats,
    PcapWriter,
    RecordTuple,
    iter_file,
)
from mptcplab.decode import TCP_FLAG_LETTERS, ip_offset, segment_from_frame
from mptcplab.errors import ExitStatus, LabError
from mptcplab.report import (
    ASCII_MARKS,
    UNICODE_MARKS,
    json_line,
    packet_json,
    sniff_line,
    summary_json,
    summary_text,
)
from mptcplab.wire import dss_length

_SEQ_ACK_FLAGS = struct.Struct("!IIH").unpack_from
_IP_TYPES = (b"\x08\x00", b"\x86\xdd")
_TIMESTAMPS = b"\x01\x01\x08\x0a"      # NOP NOP TS(10): what precedes MPTCP in Linux headers
_DSS_PLAIN_LEN = [dss_length(f) for f in range(32)]
# Offset of the data-level length in a DSS with a mapping, by flags.
_DSS_DLL_AT = [4 + ((8 if f & 2 else 4) if f & 1 else 0) + (8 if f & 8 else 4) + 4
               for f in range(32)]


# ---------------------------------------------------------------------------------------------
# The tracker's subflow directions, with what the fast path's JSON lines reuse


class SniffHalf(Half):
    """A subflow direction that also keeps the JSON fragments of its lines: addresses and
    ports, connection and subflow numbers, and the last DSS option with its JSON (every
    segment of a mapping repeats it)."""

    __slots__ = ("json_addr", "json_ids", "json_opt", "json_raw")

    def __init__(self, subflow: Subflow, role: int) -> None:
        super().__init__(subflow, role)
        self.json_addr: str | None = None
        self.json_ids: str | None = None
        self.json_raw = b""
        self.json_opt = ""

    def relabel(self) -> None:
        self.json_ids = None


def new_tracker() -> Tracker:
    """A tracker whose subflow directions carry the sniffer's caches."""
    return Tracker(half_type=SniffHalf)


# ---------------------------------------------------------------------------------------------
# Output in capture order


class LineBuffer:
    """Lines gathered and handed to ``sink`` ~64 KiB at a time. With Python's own buffering
    off (PYTHONUNBUFFERED, `python3 -u`, as on the lab's build machine) each line written to
    stdout would be a system call: a 118,060-line live capture made 118,060 writes."""

    __slots__ = ("parts", "sink", "size")
    LIMIT = 1 << 16

    def __init__(self, sink: Callable[[str], object]) -> None:
        self.sink = sink
        self.parts: list[str] = []
        self.size = 0

    def write(self, text: str) -> None:
        self.parts.append(text)
        self.size += len(text)
        if self.size >= self.LIMIT:
            self.flush()

    def flush(self) -> None:
        if self.parts:
            text = "".join(self.parts)
            self.parts, self.size = [], 0
            self.sink(text)


class Emitter:
    """Writes packet lines in capture order, holding back those with an open checksum."""

    lean = True         # accepts lines formatted by the fast path

    def __init__(self, tracker: Tracker, write: Callable[[str], object]) -> None:
        self.tracker = tracker
        self.buffer = LineBuffer(write)
        self.write = self.buffer.write
        self.queue: deque[Annotated | str] = deque()

    def render(self, ann: Annotated) -> str:
        raise NotImplementedError

    def packet(self, ann: Annotated) -> None:
        if self.queue or ann.pending:
            self.queue.append(ann)
            self.drain(ann.seg.frame)
        else:
            self.write(self.render(ann))

    def line(self, text: str, frame: int) -> None:
        if self.queue:
            self.queue.append(text)
            self.drain(frame)
        else:
            self.write(text)

    def drain(self, frame: int) -> None:
        queue = self.queue
        while queue:
            head = queue[0]
            if isinstance(head, str):
                self.write(head)
            else:
                if head.pending:
                    if frame - head.seg.frame <= self.tracker.HOLD:
                        return
                    self.tracker.expire(head.seg.frame + 1)
                self.write(self.render(head))
            queue.popleft()

    def flush(self) -> None:
        """Hand what is written so far on (the capture is momentarily quiet)."""
        self.buffer.flush()

    def close(self) -> None:
        """The capture is over: settle what is open, write what is held."""
        self.tracker.finish()
        self.drain(1 << 62)
        self.buffer.flush()


class JsonEmitter(Emitter):
    def render(self, ann: Annotated) -> str:
        return json_line(packet_json(ann)) + "\n"


class TextEmitter(Emitter):
    lean = False        # every MPTCP segment is described in words: the reference path

    def __init__(self, tracker: Tracker, write: Callable[[str], object],
                 marks: tuple[str, str, str] = UNICODE_MARKS) -> None:
        super().__init__(tracker, write)
        self.marks = marks
        self.t0: float | None = None

    def render(self, ann: Annotated) -> str:
        if self.t0 is None:
            self.t0 = ann.seg.time
        return sniff_line(ann, self.t0, self.marks) + "\n"


# ---------------------------------------------------------------------------------------------
# The loop


def _dss_tables() -> tuple[list[Any], list[str]]:
    """Per DSS flags value (plain form): a struct reading its fields, a JSON template."""
    readers, templates = [], []
    for flags in range(32):
        fmt, fields = "!", ""
        if flags & 0x01:
            fmt += "Q" if flags & 0x02 else "I"
            fields += f',"data_ack":%d,"data_ack_len":{8 if flags & 0x02 else 4}'
        if flags & 0x04:
            fmt += ("Q" if flags & 0x08 else "I") + "IH"
            fields += f',"dsn":%d,"dsn_len":{8 if flags & 0x08 else 4},"ssn":%d' \
                ',"data_level_len":%d'
        readers.append(struct.Struct(fmt).unpack_from)
        templates.append(f'{{"subtype":"DSS","length":{dss_length(flags)}{fields}'
                         ',"data_fin":false}')
    return readers, templates


_DSS_READ, _DSS_JSON = _dss_tables()


def pump(records: Iterator[RecordTuple], tracker: Tracker, emitter: Emitter | None = None,
         *, fast: bool = True) -> None:
    """Feed every record to the tracker (and the emitter); ``fast=False`` sends every segment
    through the reference path (the tests compare the two). JSON lines come from the fast
    path only with a tracker from ``new_tracker()`` (its caches)."""
    flows = tracker.flows
    lean_json = emitter is not None and emitter.lean and issubclass(tracker.half_type, SniffHalf)
    lean_mptcp = fast and (emitter is None or lean_json)
    queue = emitter.queue if emitter is not None else None
    write = emitter.write if emitter is not None else None
    letters = TCP_FLAG_LETTERS
    packets = mptcp = 0
    try:
        for frame, time, linktype, data, wirelen in records:
            packets += 1
            if not fast:
                _slow(data, linktype, frame, time, None, tracker, emitter)
                continue
            # -- link and IP: where the TCP header starts, the flow's key ----------------------
            if linktype == LINKTYPE_LINUX_SLL2:
                ip = 20 if data.startswith(_IP_TYPES) else -1
            elif linktype == LINKTYPE_ETHERNET and data.startswith(_IP_TYPES, 12):
                ip = 14
            else:
                ip = ip_offset(data, linktype)
            size = len(data)
            if ip < 0 or size < ip + 20:
                continue
            version = data[ip] >> 4
            if version == 4:
                if data[ip + 9] != 6 or data[ip + 6] & 0x1F or data[ip + 7]:   # a fragment
                    continue
                ihl = (data[ip] & 0x0F) << 2
                tcp = ip + ihl
                # addresses then ports, as flow_key() builds them
                key = data[ip + 12:ip + 24] if ihl == 20 else \
                    data[ip + 12:ip + 20] + data[tcp:tcp + 4]
                ip_payload = (data[ip + 2] << 8 | data[ip + 3]) - ihl
            elif version == 6 and size >= ip + 40 and data[ip + 6] == 6:
                tcp = ip + 40
                key = data[ip + 8:ip + 44]
                ip_payload = data[ip + 4] << 8 | data[ip + 5]
            else:
                _slow(data, linktype, frame, time, None, tracker, emitter)
                continue
            if size < tcp + 20:
                continue
            seq, ack, off_flags = _SEQ_ACK_FLAGS(data, tcp + 4)
            doff = (off_flags >> 12) << 2
            end = tcp + doff
            half = flows.get(key)
            # -- options: where the MPTCP ones are ---------------------------------------------
            pos = tcp + 20
            if data.startswith(_TIMESTAMPS, pos) and pos + 12 <= end:
                pos += 12
            at = -1
            count = 0
            odd = end > size or doff < 20
            if not odd and pos < end and data[pos] == 30:
                olen = data[pos + 1] if pos + 1 < end else 0
                if olen >= 3 and (pos + olen == end or pos + olen < end
                                  and not data[pos + olen:end].strip(b"\x01")):
                    at, count, pos = pos, 1, end        # one MPTCP option, NOPs after it
            while pos < end and not odd:
                kind = data[pos]
                if kind == 1:
                    pos += 1
                    continue
                if kind == 0:
                    break
                if pos + 1 >= end:
                    odd = True
                    break
                olen = data[pos + 1]
                if kind == 30:
                    count += 1
                    at = pos
                    if olen < 3 or pos + olen > end:
                        odd = True
                pos += max(2, olen)
            # -- the fast path ---------------------------------------------------------------
            if half is None:
                if count or odd:
                    _slow(data, linktype, frame, time, key, tracker, emitter)
                continue
            if odd or off_flags & 0x07 or half.watch or count > 1:
                _slow(data, linktype, frame, time, key, tracker, emitter)
                continue
            payload_len = ip_payload - doff
            if count:
                # A DSS shorter than 4 bytes has no flags byte (it may be the frame's last):
                # malformed, which only the reference path describes.
                olen = data[at + 1]
                if not lean_mptcp or olen < 4 or data[at + 2] >> 4 != 2:
                    _slow(data, linktype, frame, time, key, tracker, emitter)
                    continue
                dflags = data[at + 3] & 0x1F
                if olen != _DSS_PLAIN_LEN[dflags] or dflags & 0x10:
                    _slow(data, linktype, frame, time, key, tracker, emitter)
                    continue
                if dflags & 0x04:
                    dll = at + _DSS_DLL_AT[dflags]
                    if not (data[dll] or data[dll + 1]):                # infinite mapping
                        _slow(data, linktype, frame, time, key, tracker, emitter)
                        continue
                    half.mapped = True
                mptcp += 1
                if lean_json:
                    addr = half.json_addr                # type: ignore[attr-defined]
                    if addr is None:
                        addr = half.json_addr = _json_addr(half)
                    ids = half.json_ids
                    if ids is None:
                        ids = half.json_ids = _json_ids(half)
                    if 1e-4 <= time < 8e9:          # json_time(), inlined
                        stamp = f"{time:.6f}".rstrip("0")
                        if stamp[-1] == ".":
                            stamp += "0"
                    else:
                        stamp = repr(round(time, 6))
                    raw = data[at:at + _DSS_PLAIN_LEN[dflags]]
                    if raw == half.json_raw:        # the same DSS as the last segment's
                        opt = half.json_opt
                    else:
                        opt = half.json_opt = _DSS_JSON[dflags] % _DSS_READ[dflags](data, at + 4)
                        half.json_raw = raw
                    line = (f'{{"type":"packet","frame":{frame},"time":{stamp},{addr},'
                            f'"tcp_flags":"{letters[off_flags & 0x1FF]}","seq":{seq},'
                            f'"ack":{ack},"payload_len":{max(0, payload_len)},'
                            f'{ids},"options":[{opt}]}}\n')
                    if queue:
                        emitter.line(line, frame)      # type: ignore[union-attr]
                    else:
                        write(line)                    # type: ignore[misc]
            if payload_len > 0:                        # Half.account, inlined
                seq_end = (seq + payload_len) & 0xFFFFFFFF
                nxt = half.nxt
                if nxt < 0:
                    nxt = seq
                ahead = (seq_end - nxt) & 0xFFFFFFFF
                if 0 < ahead < 0x80000000:
                    half.bytes += ahead
                    half.nxt = seq_end
    finally:
        tracker.packets += packets
        tracker.mptcp_packets += mptcp
        tracker.fast_mptcp_packets += mptcp


def _slow(data: bytes, linktype: int, frame: int, time: float, key: bytes | None,
          tracker: Tracker, emitter: Emitter | None) -> None:
    """The reference path for one frame."""
    seg = segment_from_frame(data, linktype, frame, time)
    if seg is None:
        return
    ann = tracker.feed(seg, key)
    if ann is not None and seg.options and emitter is not None:
        emitter.packet(ann)


def json_time(time: float) -> str:
    """``repr(round(time, 6))``, what ``json.dumps`` writes for the reference path's
    ``round(seg.time, 6)``, twice as fast. Where a float's spacing is below a microsecond
    (times under 2**33 s) the shortest repr of the rounded value is the 6-decimal rounding
    without its trailing zeros; outside (and below 1e-4, printed with an exponent) it falls
    back to repr. The tests compare the two on any float."""
    if 1e-4 <= time < 8e9:
        stamp = f"{time:.6f}".rstrip("0")
        return stamp + "0" if stamp[-1] == "." else stamp
    return repr(round(time, 6))


def _json_addr(half: SniffHalf) -> str:
    sub = half.subflow
    src, sport, dst, dport = (sub.src, sub.sport, sub.dst, sub.dport) if half.role == 0 else \
        (sub.dst, sub.dport, sub.src, sub.sport)
    return json_line({"src": src, "sport": sport, "dst": dst, "dport": dport})[1:-1]


def _json_ids(half: SniffHalf) -> str:
    sub = half.subflow
    return json_line({"connection": sub.conn.number if sub.conn is not None else None,
                      "subflow": sub.number})[1:-1]


# ---------------------------------------------------------------------------------------------
# The command


class SniffOptions:
    """What `mptcplab sniff` was asked to do."""

    def __init__(self, *, iface: str | None = None, read: str | None = None,
                 netns: str | None = None, write: str | None = None, count: int = 0,
                 json: bool = False, summary: bool = False, bpf: str = "",
                 snaplen: int = 262144, buffer_kib: int = 65536) -> None:
        self.iface, self.read, self.netns, self.write = iface, read, netns, write
        self.count, self.json, self.summary, self.bpf = count, json, summary, bpf
        self.snaplen, self.buffer_kib = snaplen, buffer_kib


def _filtered(records: Iterator[RecordTuple], bpf: BpfFilter) -> Iterator[RecordTuple]:
    matches = bpf.matches
    for rec in records:
        if matches(rec[2], rec[3], rec[4]):
            yield rec


def _written(records: Iterator[RecordTuple], writer: PcapWriter) -> Iterator[RecordTuple]:
    write = writer.write
    for rec in records:
        write(rec[1], rec[2], rec[3], rec[4])
        yield rec


def _is_terminal(out: TextIO) -> bool:
    try:
        return out.isatty()
    except (AttributeError, ValueError):
        return False


def _marks(out: TextIO) -> tuple[str, str, str]:
    try:
        "".join(UNICODE_MARKS).encode(out.encoding or "ascii")
        return UNICODE_MARKS
    except (UnicodeEncodeError, LookupError):
        return ASCII_MARKS


def sniff(opts: SniffOptions, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Run the sniffer to the end of the file, COUNT packets, or Ctrl-C; print the summary.

    Returns the exit status; raises ``LabError`` for what stops it (after printing everything
    decoded before, and the summary, when records were read).
    """
    out = out or sys.stdout
    err = err or sys.stderr
    if opts.read and opts.netns:
        raise LabError("-n NETNS is for a live capture; it cannot apply to -r FILE",
                       ExitStatus.USAGE)
    if opts.read and opts.iface:
        raise LabError(f"capture on {opts.iface} or read {opts.read}, not both",
                       ExitStatus.USAGE)
    if not opts.read and not opts.iface:
        raise LabError("name an interface (or `any`) to capture on, or read a file with -r",
                       ExitStatus.USAGE)
    if opts.read and opts.write and os.path.exists(opts.write) and \
            os.path.exists(opts.read) and os.path.samefile(opts.read, opts.write):
        raise LabError(f"-w {opts.write} is the file -r reads: writing would destroy it",
                       ExitStatus.USAGE)
    marks = _marks(out)
    tracker = new_tracker()
    emitter: Emitter | None = None
    if not opts.summary:
        emitter = JsonEmitter(tracker, out.write) if opts.json else \
            TextEmitter(tracker, out.write, marks)
    live: LiveCapture | None = None
    stats: LiveStats | None = None
    writer = PcapWriter(opts.write, opts.snaplen) if opts.write else None
    status = ExitStatus.OK
    failure: LabError | None = None
    previous: dict[int, object] = {}

    try:
        if opts.read:
            bpf = BpfFilter(opts.bpf) if opts.bpf.strip() else None
            records: Iterator[RecordTuple] = iter_file(opts.read)
            if bpf is not None:
                records = _filtered(records, bpf)
        else:
            assert opts.iface is not None
            # Lines as packets come for people at a terminal (immediate mode); otherwise
            # ring blocks, which hold up at high rates (see LiveCapture).
            live = LiveCapture(opts.iface, netns=opts.netns, bpf=opts.bpf, snaplen=opts.snaplen,
                               count=opts.count, buffer_kib=opts.buffer_kib,
                               packet_buffered=not opts.summary,
                               immediate=not opts.summary and _is_terminal(out)).start()
    except BaseException:
        if writer is not None:
            writer.discard()
        raise
    if live is not None:
        print(f"mptcplab: capturing on {live.where} (snaplen {opts.snaplen}); "
              "Ctrl-C to stop", file=err, flush=True)
        def idle() -> None:
            if emitter is not None:
                emitter.flush()
            out.flush()

        records = live.records(idle=idle)
        interrupted = []

        def stop_capture(signum: int, frame: object) -> None:
            if interrupted:                 # a second Ctrl-C: stop now
                raise KeyboardInterrupt
            interrupted.append(signum)
            assert live is not None
            live.request_stop()     # decode the backlog, then tcpdump stops and the pipe ends

        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, stop_capture)
    if opts.count:
        records = itertools.islice(records, opts.count)
    if writer is not None:
        records = _written(records, writer)
    try:
        try:
            pump(records, tracker, emitter)
        except KeyboardInterrupt:
            status = ExitStatus.INTERRUPTED
        except LabError as exc:
            if tracker.packets == 0:
                raise
            failure = exc
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)     # type: ignore[arg-type]
            if live is not None:
                stats = live.stop()
            if writer is not None:
                writer.close()
        if emitter is not None:
            emitter.close()
        else:
            tracker.finish()
        if opts.json:
            if opts.summary:
                counters = None if stats is None else stats.as_dict()
                out.write(json_line(summary_json(tracker, counters)) + "\n")
        else:
            if emitter is not None and tracker.packets:
                out.write("\n")
            out.write(summary_text(tracker, marks) + "\n")
        out.flush()
    except BrokenPipeError:
        # The reader went away (`| head`): stop quietly, without a second error at exit.
        with contextlib.suppress(OSError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, out.fileno())
        raise
    if stats is not None:
        print(f"mptcplab: {stats.line(opts.count)}", file=err)
    if failure is not None:
        raise failure
    return status

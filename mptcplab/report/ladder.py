"""Ladder diagrams: what the tracker saw, as arrows between the client and the server.

``build_ladder`` turns the tracker's annotations (``Tracker.feed``, capture order) into a
``Ladder``: one ``Arrow`` per segment worth drawing (handshakes, every MPTCP signal, the first
data each way, DATA_FIN, FIN/RST, a failed check, whatever the network did to it), the rest of
the bulk folded into ``Gap`` rows, and ``Event`` rows for what a demo did meanwhile ("WiFi
fails"). Each arrow carries its time, TCP flags, relative sequence numbers, the decoded MPTCP
options with their verdicts, and a one-sentence note (``report.notes``).

The model holds no drawing: ``ladder_text`` draws it for a terminal (colour optional,
ASCII when the terminal has no Unicode), ``report.svg.ladder_svg`` for slides.
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from mptcplab.analysis import CLIENT, SERVER, SIDE_NAMES, Annotated, Connection, Subflow
from mptcplab.describe import describe, endpoint
from mptcplab.report.lines import ASCII_MARKS, UNICODE_MARKS, _dss_words, _mark
from mptcplab.report.notes import Narrator, Note

M32 = 0xFFFFFFFF
M64 = 0xFFFFFFFFFFFFFFFF


@dataclass
class Arrow:
    """One segment, drawn from its sender's column to the other one."""

    ann: Annotated
    time: float                      # seconds since the ladder's start
    sender: int                      # CLIENT or SERVER
    subflow: int | None
    head: str                        # "s1 [PA] seq 1:601 ack 1"
    options: list[str]               # each MPTCP option in words, verdict marks included
    note: Note | None = None
    network: str | None = None       # what the network did: "dropped ...", "changed ..."
    bad: bool = False                # a recomputed HMAC or checksum did not match

    @property
    def dropped(self) -> bool:
        return self.network is not None and self.network.startswith("dropped")


@dataclass
class Gap:
    """Segments folded away between two drawn rows: counts per subflow and direction."""

    time: float
    until: float
    anns: list[Annotated] = field(default_factory=list)
    flows: dict[tuple[int | None, int], list[int]] = field(default_factory=dict)

    @property
    def segments(self) -> int:
        return len(self.anns)

    def add(self, ann: Annotated, when: float, subflow: int | None, sender: int) -> None:
        self.until = when
        self.anns.append(ann)
        counts = self.flows.setdefault((subflow, sender), [0, 0])
        counts[0] += 1
        counts[1] += ann.seg.payload_len

    def lines(self, way: str = "→") -> list[str]:
        """``⋯ 37 segments not drawn (…)`` then one line per subflow direction."""
        total = self.segments
        out = [f"{total} segment{'s' if total != 1 else ''} not drawn, "
               f"{self.time:.6f}–{self.until:.6f} s:"]
        for (sub, sender), (n, size) in sorted(self.flows.items(),
                                               key=lambda kv: (kv[0][0] or 0, kv[0][1])):
            what = f"{size:,} bytes of data" if size else "acknowledgements only"
            out.append(f"  s{sub if sub is not None else '?'} {SIDE_NAMES[sender]} {way} "
                       f"{SIDE_NAMES[1 - sender]}: {n} segment{'s' if n != 1 else ''}, {what}")
        return out

    def as_dict(self) -> dict[str, Any]:
        return {"type": "gap", "since_start": round(self.time, 6),
                "until": round(self.until, 6), "segments": self.segments,
                "flows": [{"subflow": sub, "from": SIDE_NAMES[sender], "segments": n,
                           "bytes": size} for (sub, sender), (n, size) in self.flows.items()]}


@dataclass
class Event:
    """Something that happened outside the capture at a known time ("WiFi fails")."""

    time: float
    text: str


Row = Arrow | Gap | Event


@dataclass
class Ladder:
    """Rows top to bottom in time, and what the column headers say."""

    title: str
    client: list[str]
    network: list[str]
    server: list[str]
    subflows: list[tuple[int, str]]          # legend: (number, "client ⇄ server (how)")
    rows: list[Row]
    t0: float
    footer: list[str] = field(default_factory=list)

    @property
    def arrows(self) -> list[Arrow]:
        return [r for r in self.rows if isinstance(r, Arrow)]


# ---------------------------------------------------------------------------------------------
# From annotations to a ladder


def _client_end(sub: Subflow) -> tuple[str, int]:
    return (sub.src, sub.sport) if sub.sides[0] != SERVER else (sub.dst, sub.dport)


def _server_end(sub: Subflow) -> tuple[str, int]:
    return (sub.dst, sub.dport) if sub.sides[0] != SERVER else (sub.src, sub.sport)


def option_words(ann: Annotated, marks: tuple[str, str, str] = UNICODE_MARKS) -> list[str]:
    """Each MPTCP option of the segment in words, DSNs and data acks relative to the IDSNs
    (first byte = 1) when the keys are known, with the tracker's verdict marks."""
    half = ann.half
    own = peer = None
    if half is not None and half.subflow.conn is not None and half.side is not None:
        conn = half.subflow.conn
        own, peer = conn.idsns[half.side], conn.idsns[1 - half.side]
    words = []
    for i, opt in enumerate(ann.seg.options):
        if opt.get("malformed"):
            text = describe(opt)
        elif opt["subtype"] == "DSS":
            text = _dss_words(opt, own, peer)
        elif opt["subtype"] == "MP_FAIL" and peer is not None:
            text = f"MP_FAIL dsn {(opt['dsn'] - peer) & M64}"
        else:
            text = describe(opt)
        for name, verdict in ann.verdicts(i).items():
            if name != "hmac_valid" or opt.get("hmac") is not None or "truncated_hmac" in opt:
                text += " " + _mark(verdict, marks)
        words.append(text)
    return words


def _head(ann: Annotated) -> str:
    seg, half = ann.seg, ann.half
    seq, ack = seg.seq, seg.ack
    if half is not None:
        sub = half.subflow
        other = sub.rev if half is sub.fwd else sub.fwd
        if half.isn >= 0:
            seq = (seq - half.isn) & M32
        if other.isn >= 0:
            ack = (ack - other.isn) & M32
    text = f"s{ann.subflow if ann.subflow is not None else '?'} [{seg.tcp_flags}] seq {seq}"
    if seg.payload_len:
        text += f":{(seq + seg.payload_len) & M32}"
    if "A" in seg.tcp_flags:
        text += f" ack {ack}"
    return text


def _bad(ann: Annotated) -> bool:
    return any(v is False for i in range(len(ann.seg.options)) for v in ann.verdicts(i).values())


class _Selector:
    """Which segments a reader needs: handshakes, closes, resets, MPTCP signals other than
    DSS, DATA_FIN, infinite mappings and failed checks; a repetition of the same thing
    (MP_CAPABLE on every segment of the first mapping, the same failed mapping on each of its
    segments) only the first time."""

    def __init__(self) -> None:
        self._seen: set[tuple[Any, ...]] = set()

    def _first(self, *key: Any) -> bool:
        if key in self._seen:
            return False
        self._seen.add(key)
        return True

    def worth(self, ann: Annotated) -> bool:
        seg, half = ann.seg, ann.half
        if any(f in seg.tcp_flags for f in "SFR"):
            return True
        for i, opt in enumerate(seg.options):
            if opt.get("malformed"):
                return True
            kind = opt["subtype"]
            if kind == "MP_CAPABLE" and "data_level_len" in opt:
                if self._first("capable-data", half):
                    return True
            elif kind == "DSS":
                if opt["data_fin"] or opt.get("data_level_len") == 0:
                    return True
                if "dsn" in opt and any(v is False for v in ann.verdicts(i).values()) and \
                        self._first("failed", half, opt["dsn"], opt["ssn"]):
                    return True
            else:
                return True
        return False


SMALL_GAP = 2       # gaps this small are drawn as arrows


def _arrow(ann: Annotated, when: float, note: Note | None, network: str | None,
           marks: tuple[str, str, str]) -> Arrow:
    assert ann.half is not None and ann.half.side is not None
    return Arrow(ann, when, ann.half.side, ann.subflow, _head(ann), option_words(ann, marks),
                 note, network, _bad(ann))


def build_ladder(annotated: Iterable[Annotated], *, connection: int | None = None,
                 every: bool = False, title: str = "",
                 notes: Mapping[int, Note] | None = None,
                 network: Mapping[int, str] | None = None,
                 events: Iterable[tuple[float, str]] = (),
                 network_label: Iterable[str] = ("network",),
                 marks: tuple[str, str, str] = UNICODE_MARKS) -> Ladder:
    """The ladder of the annotated segments (of one connection, or all): ``notes`` and
    ``network`` (by frame) add or replace sentences and mark what the network did;
    ``events`` are (absolute time, text); ``every`` draws every segment instead of folding
    the bulk of the data into gaps."""
    notes = notes or {}
    network = network or {}
    chosen = [a for a in annotated
              if a.half is not None and a.half.side is not None
              and (connection is None or a.connection == connection)]
    pending = sorted(events)
    t0 = min([a.seg.time for a in chosen[:1]] + [t for t, _ in pending[:1]], default=0.0)
    narrator = Narrator()
    selector = _Selector()
    rows: list[Row] = []
    gap: Gap | None = None
    conns: list[Connection] = []
    subs: list[Subflow] = []
    for ann in chosen:
        half = ann.half
        assert half is not None and half.side is not None
        sub = half.subflow
        if sub.conn is not None and sub.conn not in conns:
            conns.append(sub.conn)
        if sub not in subs:
            subs.append(sub)
        when = ann.seg.time - t0
        while pending and pending[0][0] - t0 <= when:
            at, text = pending.pop(0)
            gap = None
            rows.append(Event(at - t0, text))
        note = narrator.note(ann)
        frame = ann.seg.frame
        if frame in notes:
            note = notes[frame]
        shown = (selector.worth(ann) or every or note is not None or frame in network)
        if not shown:
            if gap is None:
                gap = Gap(when, when)
                rows.append(gap)
            gap.add(ann, when, ann.subflow, half.side)
            continue
        gap = None
        rows.append(_arrow(ann, when, note, network.get(frame), marks))
    for at, text in pending:
        rows.append(Event(at - t0, text))
    # A gap of one or two segments says less than the segments themselves.
    rows = [r for row in rows for r in (
        [_arrow(a, a.seg.time - t0, None, None, marks) for a in row.anns]
        if isinstance(row, Gap) and row.segments <= SMALL_GAP else [row])]
    client: list[str] = []
    server: list[str] = []
    for sub in subs:
        for ends, addr in ((client, _client_end(sub)[0]), (server, _server_end(sub)[0])):
            if addr not in ends:
                ends.append(addr)
    legend = []
    for sub in subs:
        if sub.number is None:
            continue
        c, s = _client_end(sub), _server_end(sub)
        how = "MP_JOIN" if sub.kind == "MP_JOIN" else "MP_CAPABLE" if sub.kind == "MP_CAPABLE" \
            else "?"
        if sub.conn is not None and sub.conn.fell_back() and sub.kind == "MP_CAPABLE":
            how = "fell back to TCP"
        prefix = f"c{sub.conn.number} " if sub.conn is not None and len(conns) > 1 else ""
        legend.append((sub.number, f"{prefix}s{sub.number} {endpoint(*c)} ⇄ "
                                   f"{endpoint(*s)}  ({how})"))
    return Ladder(title=title, client=["client", *client], network=list(network_label),
                  server=["server", *server], subflows=legend, rows=rows, t0=t0)


# ---------------------------------------------------------------------------------------------
# The terminal


ANSI = {"reset": "\033[0m", "bold": "\033[1m", "dim": "\033[2m", "red": "\033[31m",
        "yellow": "\033[33m"}
SUBFLOW_ANSI = ("\033[34m", "\033[35m", "\033[32m", "\033[36m", "\033[33m")


@dataclass(frozen=True)
class Glyphs:
    bar: str
    net: str
    line: str
    right: str
    left: str
    tee_right: str
    tee_left: str
    cross: str
    note: str
    more: str
    event: str
    ends: tuple[str, str]
    ways: tuple[str, str]
    marks: tuple[str, str, str]


UNICODE = Glyphs("│", "┊", "─", "▶", "◀", "├", "┤", "✗", "↳", "⋯", "═", ("╞", "╡"), ("→", "←"),
                 UNICODE_MARKS)
ASCII = Glyphs("|", ":", "-", ">", "<", "|", "|", "X", "->", "...", "=", ("|", "|"),
               ("->", "<-"), ASCII_MARKS)


_ASCII = str.maketrans({"§": "sec. ", "✓": "ok", "✗": "BAD", "→": "->", "←": "<-",
                        "⇄": "<->", "–": "-", "—": "-", "‖": "||", "…": "...", "⋯": "...",
                        "·": "-", "─": "-", "│": "|", "┊": ":", "═": "=", "━": "="})


def ascii_text(text: str) -> str:
    """The text with the few symbols the ladder uses spelled in ASCII (anything else: ?)."""
    return text.translate(_ASCII).encode("ascii", "replace").decode()


def subflow_colour(number: int | None) -> str:
    return SUBFLOW_ANSI[((number or 1) - 1) % len(SUBFLOW_ANSI)]


class TextLadder:
    """Draws a ladder on a terminal ``width`` columns wide: ``header()`` then ``row(r)`` for
    each row (so a classroom can go one step at a time)."""

    GUTTER = 11                     # "  1.234567 " : seconds since the start

    def __init__(self, ladder: Ladder, *, width: int = 100, colour: bool = False,
                 unicode: bool = True, title: bool = True) -> None:
        self.ladder = ladder
        self.title = title
        self.g = UNICODE if unicode else ASCII
        self.colour = colour
        self.lane = max(40, width - self.GUTTER - 2)      # between the two bars
        self.mid = self.lane // 2

    def _c(self, text: str, *styles: str) -> str:
        if self.g is ASCII:
            text = ascii_text(text)
        if not self.colour or not styles:
            return text
        return "".join(ANSI.get(s, s) for s in styles) + text + ANSI["reset"]

    def _lane(self, text: str, *styles: str, time: str = "") -> str:
        g = self.g
        if g is ASCII:
            text = ascii_text(text)
        body = text[:self.lane - 1].ljust(self.lane - 1)
        return f"{time:>{self.GUTTER - 1}} {g.bar} {self._c(body, *styles)}{g.bar}"

    def _wrap(self, text: str, indent: str = "") -> list[str]:
        if self.g is ASCII:
            text = ascii_text(text)
        return textwrap.wrap(text, self.lane - 2, subsequent_indent=indent,
                             break_long_words=True, break_on_hyphens=False) or [""]

    def header(self) -> list[str]:
        g, lad = self.g, self.ladder
        out = []
        if lad.title and self.title:
            out += [*(self._c(piece, "bold") for piece in
                      textwrap.wrap(lad.title, self.GUTTER + self.lane + 2)), ""]
        for number, text in lad.subflows:
            out.append(" " * self.GUTTER + self._c(text, subflow_colour(number)))
        if lad.subflows:
            out.append("")
        rows = max(len(lad.client), len(lad.network), len(lad.server))
        for i in range(rows):
            left = lad.client[i] if i < len(lad.client) else ""
            mid = lad.network[i] if i < len(lad.network) else ""
            right = lad.server[i] if i < len(lad.server) else ""
            line = [" "] * (self.lane + 2)
            for pos, text in ((0, left), (max(0, self.mid - len(mid) // 2), mid),
                              (max(0, self.lane + 1 - len(right)), right)):
                for k, ch in enumerate(text):
                    if pos + k < len(line):
                        line[pos + k] = ch
            text = "".join(line).rstrip()
            out.append(" " * self.GUTTER + self._c(text, *(("bold",) if i == 0 else ())))
        bars = [" "] * (self.lane + 2)
        bars[0], bars[self.mid], bars[-1] = g.bar, g.net, g.bar
        out.append(f"{'time (s)':>{self.GUTTER - 1}} " + "".join(bars))
        return out

    def row(self, row: Row) -> list[str]:
        if isinstance(row, Event):
            return self._event(row)
        if isinstance(row, Gap):
            return [self._lane(piece, "dim")
                    for i, line in enumerate(row.lines(self.g.ways[0]))
                    for piece in self._wrap(("" if i else self.g.more + " ") + line, "    ")]
        return self._arrow(row)

    def _event(self, row: Event) -> list[str]:
        """A bar across the lane with the event's text in it; a text too long for one bar
        goes on in the lines under it, wrapped at words."""
        g = self.g
        first, *rest = textwrap.wrap(ascii_text(row.text) if g is ASCII else row.text,
                                     self.lane - 6) or [""]
        text = f" {first} "
        line = g.ends[0] + g.event * 2 + text + g.event * (self.lane - len(text) - 2) + g.ends[1]
        return [f"{row.time:>{self.GUTTER - 1}.6f} " + self._c(line, "bold", "yellow"),
                *(self._lane("   " + piece, "bold", "yellow") for piece in rest)]

    def _arrow(self, a: Arrow) -> list[str]:
        g = self.g
        colour = subflow_colour(a.subflow)
        out = [self._lane(a.head, "bold", colour)]
        for opt in a.options:
            for i, piece in enumerate(self._wrap(opt, "  ")):
                out.append(self._lane(piece, "red" if a.bad and (g.marks[1] in opt) else ""))
        if a.network:
            for piece in self._wrap(f"{g.cross} {a.network}"):
                out.append(self._lane(piece, "red", "bold"))
        span = self.lane
        if a.dropped:
            stem = self.mid if a.sender == CLIENT else span - self.mid
            if a.sender == CLIENT:
                body = g.tee_right + g.line * (stem - 1) + g.cross
                line = body.ljust(span + 1) + g.bar
            else:
                body = g.cross + g.line * (stem - 1) + g.tee_left
                line = g.bar + body.rjust(span + 1)
        elif a.sender == CLIENT:
            line = g.tee_right + g.line * (span - 1) + g.right + g.bar
        else:
            line = g.bar + g.left + g.line * (span - 1) + g.tee_left
        body = line[1:-1]
        drawn = line[0] + self._c(body, "red" if a.dropped else colour) + line[-1]
        out.append(f"{a.time:>{self.GUTTER - 1}.6f} {drawn}")
        if a.note is not None:
            for piece in self._wrap(f"{g.note} {a.note}", "  "):
                out.append(self._lane(piece, "dim"))
        return out

    def footer(self) -> list[str]:
        g = self.g
        bars = [" "] * (self.lane + 2)
        bars[0], bars[self.mid], bars[-1] = g.bar, g.net, g.bar
        width = self.GUTTER + self.lane + 2
        return [" " * self.GUTTER + "".join(bars),
                *(self._c(piece) for line in self.ladder.footer
                  for piece in (textwrap.wrap(line, width, subsequent_indent="  ") or [""]))]


def ladder_text(ladder: Ladder, *, width: int = 100, colour: bool = False,
                unicode: bool = True) -> str:
    """The whole ladder as text for a terminal."""
    view = TextLadder(ladder, width=width, colour=colour, unicode=unicode)
    lines = view.header()
    for row in ladder.rows:
        lines += view.row(row)
    lines += view.footer()
    return "\n".join(lines)


def step_json(arrow: Arrow, number: int) -> dict[str, Any]:
    """One drawn step as the ``--json`` of a demo or `mptcplab ladder` gives it: the sniffer's
    packet object (``packet_json``) plus the step number, the sentence and its RFC section,
    and what the network did."""
    from mptcplab.report.contract import packet_json

    out = packet_json(arrow.ann)
    out["type"] = "step"
    out["step"] = number
    out["since_start"] = round(arrow.time, 6)
    out["from"] = SIDE_NAMES[arrow.sender]
    out["note"] = arrow.note.text if arrow.note else None
    out["rfc"] = arrow.note.rfc if arrow.note and arrow.note.rfc else None
    out["network"] = arrow.network
    return out


def rows_json(ladder: Ladder) -> list[dict[str, Any]]:
    """Every row of the ladder as JSON objects: steps, gaps and events, in order."""
    out: list[dict[str, Any]] = []
    number = 0
    for row in ladder.rows:
        if isinstance(row, Arrow):
            number += 1
            out.append(step_json(row, number))
        elif isinstance(row, Gap):
            out.append(row.as_dict())
        else:
            out.append({"type": "event", "time": round(row.time, 6), "text": row.text})
    return out

"""A ladder as SVG (written directly, no library) and as PNG (cairosvg), for slides.

Layout, top to bottom in time: a title, the subflows' legend, the column headers (client,
network, server, with addresses), then one row per ladder row. An arrow row has its label
(subflow, TCP flags, relative sequence numbers, the MPTCP options) above the arrow, the time
at the left, and the note to the right of the server column: beside, never on top. Text is set
in a monospace font whose advance is known (DejaVu Sans Mono: 0.602 em), so every text box is
known before drawing; rows are as tall as their longest column, and the canvas as wide as its
widest text. ``text_boxes`` measures a finished SVG the same way, for the tests (no two boxes
overlap, none leaves the canvas).
"""

from __future__ import annotations

import textwrap
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape

from mptcplab.analysis import CLIENT, SIDE_NAMES
from mptcplab.errors import ExitStatus, LabError, MissingTool
from mptcplab.report.ladder import Arrow, Event, Gap, Ladder

FONT_FAMILY = "DejaVu Sans Mono, Menlo, Consolas, monospace"
ADVANCE = 0.6021            # DejaVu Sans Mono: every glyph is 1233/2048 em wide
ASCENT, DESCENT = 0.93, 0.24
SIZE = 12                   # px, body text
TITLE_SIZE = 15
LINE = 16                   # px between baselines
MARGIN = 24
LABEL_CHARS = 64            # label lines wrap here (the lane is as wide as the longest line)
NOTE_CHARS = 54
SLOPE = 10                  # px an arrow descends from sender to receiver: time passes
PAD = 10
SUBFLOW_COLOURS = ("#1f5fbf", "#b05a00", "#2a8a2a", "#8a2a8a", "#0a7f8a", "#7f6a00")
RED = "#c0161d"
GREY = "#555555"


def subflow_colour(number: int | None) -> str:
    return SUBFLOW_COLOURS[((number or 1) - 1) % len(SUBFLOW_COLOURS)]


def text_width(text: str, size: float = SIZE) -> float:
    return len(text) * ADVANCE * size


@dataclass(frozen=True)
class Box:
    """A text's extent on the canvas."""

    x0: float
    y0: float
    x1: float
    y1: float
    text: str

    def overlaps(self, other: Box, slack: float = 0.5) -> bool:
        return (self.x0 < other.x1 - slack and other.x0 < self.x1 - slack
                and self.y0 < other.y1 - slack and other.y0 < self.y1 - slack)


class _Svg:
    def __init__(self) -> None:
        self.parts: list[str] = []

    def text(self, x: float, y: float, text: str, *, size: int = SIZE, anchor: str = "start",
             fill: str = "#111111", weight: str = "normal", style: str = "normal",
             cls: str = "", extra: str = "") -> None:
        attrs = (f'x="{x:.1f}" y="{y:.1f}" font-size="{size}" text-anchor="{anchor}" '
                 f'fill="{fill}"')
        if weight != "normal":
            attrs += f' font-weight="{weight}"'
        if style != "normal":
            attrs += f' font-style="{style}"'
        if cls:
            attrs += f' class="{cls}"'
        if extra:
            attrs += " " + extra
        self.parts.append(f'<text {attrs} xml:space="preserve">{escape(text)}</text>')

    def line(self, x1: float, y1: float, x2: float, y2: float, stroke: str, width: float = 1.5,
             dash: str = "", cls: str = "") -> None:
        attrs = (f'x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}" stroke="{stroke}" '
                 f'stroke-width="{width}"')
        if dash:
            attrs += f' stroke-dasharray="{dash}"'
        if cls:
            attrs += f' class="{cls}"'
        self.parts.append(f"<line {attrs}/>")

    def raw(self, text: str) -> None:
        self.parts.append(text)


def _wrap(text: str, chars: int, indent: str = "  ") -> list[str]:
    return textwrap.wrap(text, chars, subsequent_indent=indent, break_long_words=True,
                         break_on_hyphens=False) or [""]


def _label_lines(a: Arrow) -> list[tuple[str, str]]:
    """(text, kind) lines above an arrow: head, options, what the network did."""
    lines = [(a.head, "head")]
    for opt in a.options:
        lines += [(piece, "bad" if a.bad and "✗" in opt else "opt")
                  for piece in _wrap(opt, LABEL_CHARS)]
    if a.network:
        lines += [(piece, "net") for piece in _wrap("✗ " + a.network if a.dropped else
                                                    "! " + a.network, LABEL_CHARS)]
    return lines


def ladder_svg(ladder: Ladder) -> str:
    """The ladder as a standalone SVG document."""
    cw = ADVANCE * SIZE
    rows: list[tuple[object, list[tuple[str, str]], list[str]]] = []
    widest = 36
    for row in ladder.rows:
        if isinstance(row, Arrow):
            labels = _label_lines(row)
            notes = _wrap(str(row.note), NOTE_CHARS, "") if row.note else []
            rows.append((row, labels, notes))
            widest = max(widest, *(len(t) for t, _ in labels))
        elif isinstance(row, Gap):
            lines = [("⋯ " if i == 0 else "") + t for i, t in enumerate(row.lines())]
            rows.append((row, [(t, "gap") for t in lines], []))
            widest = max(widest, *(len(t) for t in lines))
        else:
            rows.append((row, [(t, "event") for t in _wrap(row.text, LABEL_CHARS, "")], []))
    half_client = max(text_width(t) for t in ladder.client) / 2
    half_server = max(text_width(t) for t in ladder.server) / 2
    half_net = max((text_width(t) for t in ladder.network), default=0) / 2
    lane = max(widest * cw + 2 * PAD, 2 * (max(half_client, half_server) + half_net + PAD))
    time_right = MARGIN + text_width("9999.999999")
    cx = max(time_right + 2 * PAD, MARGIN + half_client)
    sx = cx + lane
    mx = (cx + sx) / 2
    nx = sx + 2 * PAD
    width = nx + NOTE_CHARS * cw + MARGIN
    title = _wrap(ladder.title, int((width - 2 * MARGIN) / (ADVANCE * TITLE_SIZE)), "") \
        if ladder.title else []
    legend_chars = max((len(t) for _, t in ladder.subflows), default=0)
    width = max(width, MARGIN * 2 + legend_chars * cw)

    svg = _Svg()
    y = MARGIN
    for line in title:
        y += TITLE_SIZE
        svg.text(MARGIN, y, line, size=TITLE_SIZE, weight="bold", cls="title")
        y += 6
    if title:
        y += 6
    for number, text in ladder.subflows:
        y += LINE
        svg.text(MARGIN, y, text, fill=subflow_colour(number), cls="legend")
    if ladder.subflows:
        y += LINE // 2
    heads = max(len(ladder.client), len(ladder.server), len(ladder.network))
    for i in range(heads):
        y += LINE
        weight = "bold" if i == 0 else "normal"
        for x, lines in ((cx, ladder.client), (mx, ladder.network), (sx, ladder.server)):
            if i < len(lines) and lines[i]:
                svg.text(x, y, lines[i], anchor="middle", weight=weight, cls="column",
                         fill="#111111" if i == 0 else GREY)
    y += LINE
    svg.text(time_right, y, "time (s)", anchor="end", fill=GREY, cls="time-head")
    top = y + 6
    y = top + PAD
    step = 0
    inner = _Svg()
    for row, labels, notes in rows:
        if isinstance(row, Arrow):
            step += 1
            y = _arrow(inner, row, labels, notes, y, cx, sx, mx, nx, time_right, step)
        elif isinstance(row, Gap):
            for i, (text, _) in enumerate(labels):
                y += LINE
                inner.text(cx + PAD, y, text, fill=GREY, style="italic", cls="gap")
            y += PAD + 6
        elif isinstance(row, Event):
            y += LINE
            inner.text(time_right, y, f"{row.time:.6f}", anchor="end", fill="#8a5a00",
                       cls="time", extra=f'data-time="{row.time:.6f}"')
            for i, (text, _) in enumerate(labels):
                if i:
                    y += LINE
                inner.text(cx + PAD, y, text, fill="#8a5a00", weight="bold", cls="event")
            y += DESCENT * SIZE + 4
            inner.line(cx - PAD, y, sx + PAD, y, "#8a5a00", 1.5, "6 3", cls="event-line")
            y += PAD
    bottom = y + PAD
    height = bottom + len(ladder.footer) * LINE + MARGIN
    out = _Svg()
    out.raw(f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height:.0f}" '
            f'viewBox="0 0 {width:.0f} {height:.0f}" font-family="{FONT_FAMILY}">')
    out.raw(f'<rect x="0" y="0" width="{width:.0f}" height="{height:.0f}" fill="#ffffff"/>')
    out.line(cx, top, cx, bottom, "#333333", 2, cls="lifeline")
    out.line(sx, top, sx, bottom, "#333333", 2, cls="lifeline")
    out.line(mx, top, mx, bottom, "#bbbbbb", 1, "2 4", cls="lifeline")
    out.parts += svg.parts
    out.parts += inner.parts
    fy = bottom
    for line in ladder.footer:
        fy += LINE
        out.text(MARGIN, fy, line, fill=GREY, cls="footer")
    out.raw("</svg>")
    return "\n".join(out.parts) + "\n"


def _arrow(svg: _Svg, a: Arrow, labels: list[tuple[str, str]], notes: list[str], y: float,
           cx: float, sx: float, mx: float, nx: float, time_right: float, step: int) -> float:
    colour = subflow_colour(a.subflow)
    top = y
    for i, (text, kind) in enumerate(labels):
        fill = {"head": colour, "bad": RED, "net": RED}.get(kind, "#111111")
        svg.text(cx + PAD, top + ASCENT * SIZE + i * LINE, text, fill=fill,
                 weight="bold" if kind in ("head", "net") else "normal", cls="label")
    for i, text in enumerate(notes):
        svg.text(nx, top + ASCENT * SIZE + i * LINE, text, fill=GREY, cls="note")
    y0 = top + len(labels) * LINE + 4
    y1 = y0 + SLOPE
    start, end = (cx, sx) if a.sender == CLIENT else (sx, cx)
    if a.dropped:
        end = mx
        y1 = y0 + SLOPE / 2
    direction = 1 if end > start else -1
    stroke = RED if a.dropped else colour
    svg.raw(f'<g class="step" data-step="{step}" data-frame="{a.ann.seg.frame}" '
            f'data-from="{SIDE_NAMES[a.sender]}" data-time="{a.time:.6f}">')
    tip_x = end - direction * (1 if not a.dropped else 0)
    svg.line(start, y0, tip_x - direction * 9, y1 - (y1 - y0) * 9 / abs(end - start),
             stroke, 1.6, cls="shaft")
    if a.dropped:
        for dx, dy in ((-6, -6), (-6, 6)):
            svg.line(end + dx, y1 + dy, end - dx, y1 - dy, RED, 2.5, cls="cross")
    else:
        svg.raw(f'<polygon class="head" points="{tip_x:.1f},{y1:.1f} '
                f'{tip_x - direction * 10:.1f},{y1 - 4.5:.1f} '
                f'{tip_x - direction * 10:.1f},{y1 + 4.5:.1f}" fill="{stroke}"/>')
    svg.raw("</g>")
    svg.text(time_right, y0 + 4, f"{a.time:.6f}", anchor="end", fill=GREY, cls="time",
             extra=f'data-time="{a.time:.6f}"')
    return max(y1 + DESCENT * SIZE + PAD + 4, top + len(notes) * LINE + PAD)


# ---------------------------------------------------------------------------------------------
# Checking and converting


def text_boxes(svg: str) -> tuple[float, float, list[Box]]:
    """(width, height, every text's box) of an SVG this module wrote."""
    root = ET.fromstring(svg)
    width, height = float(root.get("width", 0)), float(root.get("height", 0))
    boxes = []
    for el in root.iter("{http://www.w3.org/2000/svg}text"):
        text = "".join(el.itertext())
        size = float(el.get("font-size", SIZE))
        x, y = float(el.get("x", 0)), float(el.get("y", 0))
        w = text_width(text, size)
        anchor = el.get("text-anchor", "start")
        x0 = x - w / 2 if anchor == "middle" else x - w if anchor == "end" else x
        boxes.append(Box(x0, y - ASCENT * size, x0 + w, y + DESCENT * size, text))
    return width, height, boxes


def overlapping(boxes: list[Box]) -> list[tuple[Box, Box]]:
    """Every pair of boxes that overlap (a sweep down the page)."""
    found = []
    ordered = sorted((b for b in boxes if b.text.strip()), key=lambda b: b.y0)
    for i, a in enumerate(ordered):
        for b in ordered[i + 1:]:
            if b.y0 >= a.y1:
                break
            if a.overlaps(b):
                found.append((a, b))
    return found


MAX_PNG_PIXELS = 6_000_000     # a tall ladder at twice its size takes seconds to encode


def png_scale(width: float, height: float, wanted: float = 2.0) -> float:
    """Twice the SVG's size for sharp slides, less for very tall ladders (never below 1)."""
    return max(1.0, min(wanted, (MAX_PNG_PIXELS / max(1.0, width * height)) ** 0.5))


def svg_to_png(svg: str, path: str | Path, scale: float | None = None) -> None:
    """Render the SVG to a PNG (cairosvg), at ``png_scale`` of its size unless told."""
    try:
        import cairosvg
    except (ImportError, OSError) as exc:   # OSError: the cairo library itself is missing
        raise MissingTool(f"PNG output needs cairosvg and the cairo library ({exc}); "
                          "bash tools/setup.sh installs them, or write .svg") from None
    if scale is None:
        root = ET.fromstring(svg)
        scale = png_scale(float(root.get("width", 0)), float(root.get("height", 0)))
    try:
        cairosvg.svg2png(bytestring=svg.encode(), write_to=str(path), scale=scale)
    except OSError as exc:
        raise LabError(f"cannot write {path}: {exc.strerror or exc}") from None


def write_picture(svg: str, path: str | Path) -> None:
    """Write the SVG to ``path``, as SVG or PNG by its extension."""
    suffix = Path(path).suffix.lower()
    if suffix == ".png":
        svg_to_png(svg, path)
        return
    if suffix != ".svg":
        raise LabError(f"{path}: the picture is written as .svg or .png", ExitStatus.USAGE)
    try:
        Path(path).write_text(svg)
    except OSError as exc:
        raise LabError(f"cannot write {path}: {exc.strerror or exc}") from None

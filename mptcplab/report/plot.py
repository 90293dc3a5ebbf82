"""Plots of a capture, from the tracker: data sequence numbers over time per subflow (the
picture mptcptrace made famous) and throughput per subflow and for the connection.

``series`` places every payload segment of one connection direction in the data stream
(``analysis.DataLevel``: DSS mappings, relative DSNs, retransmissions, reinjections) and bins
the bytes; ``plot_series`` draws them with matplotlib's Agg canvas (no display, no pyplot
state): SVG or PNG by the file's extension.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mptcplab.analysis import SIDE_NAMES, Annotated, DataLevel, Placed
from mptcplab.errors import BadInput, ExitStatus, LabError, MissingTool
from mptcplab.report.svg import SUBFLOW_COLOURS

REINJECTION_COLOUR = "#c0161d"


@dataclass
class SubflowSeries:
    """What one subflow carried in the plotted direction."""

    number: int
    label: str
    times: list[float] = field(default_factory=list)      # seconds since the start
    dsns: list[int] = field(default_factory=list)         # first byte's relative DSN
    ends: list[int] = field(default_factory=list)
    retrans: list[tuple[float, int]] = field(default_factory=list)
    reinjected: list[tuple[float, int]] = field(default_factory=list)
    bytes: int = 0                                        # payload, every copy counted
    new_bytes: int = 0                 # first sent here: no retransmission, no reinjection
    binned: list[float] = field(default_factory=list)     # Mbit/s per bin, no retransmissions


@dataclass
class Series:
    """One direction of one connection, ready to draw."""

    connection: int
    side: int                                             # who sent the data
    t0: float
    duration: float
    bin: float
    subflows: dict[int, SubflowSeries]
    acks: list[tuple[float, int]]                         # (time, relative DATA_ACK)
    total: list[float]                                    # connection Mbit/s per bin
    unplaced: int = 0                                     # payload segments with no mapping
    by_acks: bool = True          # total from DATA_ACKs (else from new data sent)

    @property
    def direction(self) -> str:
        return f"{SIDE_NAMES[self.side]} → {SIDE_NAMES[1 - self.side]}"

    def summary(self) -> dict[str, Any]:
        return {"connection": self.connection, "direction": self.direction,
                "seconds": round(self.duration, 6), "bin": self.bin,
                "subflows": [{"subflow": s.number, "bytes": s.bytes, "new_bytes": s.new_bytes,
                              "retransmissions": len(s.retrans),
                              "reinjections": len(s.reinjected)}
                             for s in self.subflows.values()]}


def series(annotated: Iterable[Annotated], *, connection: int | None = None,
           side: int | None = None, bin: float | None = None,
           t0: float | None = None) -> Series:
    """Place the payload of one connection direction (default: the connection and direction
    that carried the most bytes) and bin its throughput (default: about 60 bins)."""
    level = DataLevel()
    placed: list[Placed] = []
    acks: list[tuple[Annotated, int, int, int]] = []
    first = None
    for ann in annotated:
        if first is None:
            first = ann.seg.time
        p = level.place(ann)
        if p is not None:
            placed.append(p)
        a = level.data_ack(ann)
        if a is not None and ann.connection is not None:
            acks.append((ann, ann.connection, a[0], a[1]))
    if not placed:
        raise BadInput("no MPTCP data in the capture to plot (a plot needs payload on a "
                       "connection whose handshake or mappings were captured)")
    volume: dict[tuple[int, int], int] = {}
    for p in placed:
        key = (p.ann.connection or 0, p.side)
        volume[key] = volume.get(key, 0) + p.length
    if connection is not None and not any(c == connection for c, _ in volume):
        known = sorted({c for c, _ in volume})
        raise BadInput(f"connection {connection} carried no data in the capture "
                       f"(connections with data: {', '.join(map(str, known))})")
    candidates = {k: v for k, v in volume.items()
                  if (connection is None or k[0] == connection) and (side is None or k[1] == side)}
    if not candidates:
        which = "no connection" if connection is None else f"connection {connection}"
        raise BadInput(f"{which} in the capture carried data from the "
                       f"{SIDE_NAMES[side or 0]}")
    conn, who = max(candidates, key=lambda k: candidates[k])
    mine = [p for p in placed if p.ann.connection == conn and p.side == who]
    start = t0 if t0 is not None else (first or mine[0].ann.seg.time)
    last = max(p.ann.seg.time for p in mine)
    duration = max(last - start, 1e-6)
    if bin is None:
        bin = _nice_bin(duration / 60)
    bins = int(duration / bin) + 1
    subs: dict[int, SubflowSeries] = {}
    total = [0.0] * bins
    unplaced = 0
    sent_total = [0.0] * bins          # new data sent, when the capture holds no DATA_ACKs
    scale = 8 / bin / 1e6
    for p in mine:
        sub = p.ann.half.subflow if p.ann.half is not None else None
        s = subs.get(p.subflow)
        if s is None:
            label = f"s{p.subflow}"
            if sub is not None:
                label += f" {sub.src} ⇄ {sub.dst}"
            s = subs[p.subflow] = SubflowSeries(p.subflow, label, binned=[0.0] * bins)
        t = p.ann.seg.time - start
        k = min(bins - 1, max(0, int(t / bin)))
        s.bytes += p.length
        if not p.retransmission:
            s.binned[k] += p.length * scale
        if p.dsn is None:
            unplaced += 1
            continue
        s.times.append(t)
        s.dsns.append(p.dsn)
        s.ends.append(p.dsn + p.length)
        if p.retransmission:
            s.retrans.append((t, p.dsn))
        if p.reinjection:
            s.reinjected.append((t, p.dsn))
        if not p.retransmission and not p.reinjection:
            s.new_bytes += p.length
            sent_total[k] += p.length * scale
    ack_points = [(a.seg.time - start, value) for a, c, acked, value in acks
                  if c == conn and acked == who]
    acked_top = None
    for t, value in ack_points:
        if acked_top is not None and 0 < value - acked_top < 1 << 62 and t >= 0:
            total[min(bins - 1, int(t / bin))] += (value - acked_top) * scale
        if acked_top is None or 0 < value - acked_top < 1 << 62:
            acked_top = value
    by_acks = acked_top is not None and any(total)
    return Series(conn, who, start, duration, bin, dict(sorted(subs.items())), ack_points,
                  total if by_acks else sent_total, unplaced, by_acks)


def _nice_bin(raw: float) -> float:
    for step in (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.25, 0.5, 1.0, 2.0, 5.0):
        if raw <= step:
            return step
    return 10.0


def _figure():  # -> matplotlib.figure.Figure
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise MissingTool("plots need matplotlib: bash tools/setup.sh installs it "
                          "(pip install matplotlib)") from None
    return Figure


def plot_series(s: Series, path: str | Path | Sequence[str | Path], *, title: str = "",
                events: Sequence[tuple[float, str]] = (),
                rates: Sequence[tuple[str, float]] = ()) -> None:
    """Two panels sharing the time axis: relative DSN of every segment per subflow (with
    retransmissions ×, reinjections ○ and the DATA_ACKs), then Mbit/s per subflow and for the
    connection. ``events`` are (seconds since the start, text), ``rates`` (label, Mbit/s)
    reference lines (link rates and their sum). One figure, written to each path given (SVG
    or PNG by extension)."""
    paths = [path] if isinstance(path, (str, Path)) else list(path)
    for p in paths:
        if Path(p).suffix.lower() not in (".svg", ".png"):
            raise LabError(f"{p}: a plot is written as .svg or .png", ExitStatus.USAGE)
    Figure = _figure()
    fig = Figure(figsize=(13, 7.5), dpi=110, layout="constrained")
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=(3, 2))
    for i, sub in enumerate(s.subflows.values()):
        colour = SUBFLOW_COLOURS[(sub.number - 1) % len(SUBFLOW_COLOURS)]
        if sub.times:
            # one path for all of the subflow's segments (a bar from first to last byte
            # each, NaN between): thousands of segments stay one SVG element
            xs: list[float] = []
            ys: list[float] = []
            nan = float("nan")
            for t, lo, hi in zip(sub.times, sub.dsns, sub.ends):
                xs += (t, t, nan)
                ys += (lo, hi, nan)
            top.plot(xs, ys, color=colour, linewidth=3, solid_capstyle="butt", zorder=3,
                     label=f"{sub.label} ({sub.new_bytes:,} bytes first sent here)")
        if sub.retrans:
            top.plot([t for t, _ in sub.retrans], [d for _, d in sub.retrans], linestyle="none",
                     marker="x", markersize=7, color=colour,
                     label=f"s{sub.number} retransmission ({len(sub.retrans)})")
        if sub.reinjected:
            top.plot([t for t, _ in sub.reinjected], [d for _, d in sub.reinjected],
                     linestyle="none", marker="o", markersize=9, markerfacecolor="none",
                     markeredgecolor=REINJECTION_COLOUR,
                     label=f"s{sub.number} reinjection: sent before on another subflow "
                           f"({len(sub.reinjected)})")
        xs, ys = _stairs(sub.binned, s.bin)
        bottom.step(xs, ys, where="post", color=colour, linewidth=1.4, zorder=3,
                    label=f"s{sub.number} (data sent, retransmissions left out)")
    if s.acks:
        top.step([t for t, _ in s.acks], [a for _, a in s.acks], where="post",
                 color="#999999", linewidth=1, linestyle=(0, (3, 2)), zorder=2,
                 label="DATA_ACK (next byte expected)")
    xs, ys = _stairs(s.total, s.bin)
    bottom.step(xs, ys, where="post", color="#bbbbbb", linewidth=4, zorder=2,
                label="connection: " + ("data acknowledged (DATA_ACK)" if s.by_acks
                                        else "new data sent"))
    for i, (label, mbit) in enumerate(rates):
        bottom.axhline(mbit, color="#999999", linestyle=(0, (4, 3)) if i else (0, (1, 2)),
                       linewidth=1.2)
        bottom.annotate(f"{label}: {mbit:g} Mbit/s", xy=(1.0, mbit), xycoords=("axes fraction",
                        "data"), xytext=(-4, 3), textcoords="offset points", ha="right",
                        va="bottom", fontsize=8, color="#555555")
    top.set_ylabel(f"data sequence number ({s.direction}, first byte = 1)")
    from matplotlib.ticker import FuncFormatter

    top.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
    top.grid(True, color="#eeeeee")
    top.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    bottom.set_ylabel(f"Mbit/s per {s.bin:g} s")
    bottom.set_xlabel("time (s) since the first packet")
    bottom.grid(True, color="#eeeeee")
    bottom.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    peak = max([*s.total, *(v for sub in s.subflows.values() for v in sub.binned),
                *(m for _, m in rates), 1.0])
    bottom.set_ylim(0, peak * 1.18)
    top.set_xlim(left=0, right=max(s.duration, max((t for t, _ in events), default=0)) * 1.02)
    top.set_ylim(bottom=0)
    fig.suptitle(title or f"connection {s.connection}, {s.direction}", fontsize=11)
    _events(fig, top, bottom, events)
    for p in paths:
        try:
            fig.savefig(str(p))
        except OSError as exc:
            raise LabError(f"cannot write {p}: {exc.strerror or exc}") from None


def _stairs(values: Sequence[float], width: float) -> tuple[list[float], list[float]]:
    """A step line over bins of `width` that draws the last bin too (a `where="post"` step
    over the bins' starts stops where the last bin begins)."""
    xs = [k * width for k in range(len(values) + 1)]
    return xs, [*values, *values[-1:]]


def _events(fig: Any, top: Any, bottom: Any, events: Sequence[tuple[float, str]]) -> None:
    """Vertical lines at the events, their labels stacked down from the top of the upper
    panel: a label goes on the first level where its drawn box clears the others and the
    panel's edges, right of its line if it fits there, else left of it. Boxes are measured
    on the laid-out figure (the title and legends already in place), not guessed."""
    if not events:
        return
    for t, _ in events:
        for ax in (top, bottom):
            ax.axvline(t, color="#8a5a00", linestyle=(0, (5, 3)), linewidth=1)
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()                       # runs the constrained layout once
    renderer = canvas.get_renderer()
    panel = top.get_window_extent(renderer)
    placed: list[Any] = []
    for t, text in sorted(events):
        for level in range(len(events) + 1):
            ann = None
            for leftward in (False, True):
                ann = top.annotate(
                    text, xy=(t, 1.0), xycoords=("data", "axes fraction"),
                    xytext=(-3 if leftward else 3, -4 - 13 * level),
                    textcoords="offset points", ha="right" if leftward else "left",
                    va="top", fontsize=8, color="#8a5a00", annotation_clip=False,
                    bbox={"boxstyle": "square,pad=0.1", "fc": "white", "ec": "none",
                          "alpha": 0.9})
                ann.set_in_layout(False)    # labels must not move the panels they sit in
                box = ann.get_window_extent(renderer)
                inside = box.x0 >= panel.x0 - 1 and box.x1 <= panel.x1 + 1
                last_try = level == len(events) and leftward    # never drop a label
                if last_try or inside and not any(box.overlaps(other) for other in placed):
                    placed.append(box)
                    break
                ann.remove()
                ann = None
            if ann is not None:
                break


def plot_capture(annotated: Iterable[Annotated], path: str | Path, *,
                 connection: int | None = None, side: int | None = None, title: str = "",
                 events: Sequence[tuple[float, str]] = (),
                 rates: Sequence[tuple[str, float]] = (), t0: float | None = None) -> Series:
    """``series`` then ``plot_series``; events as (absolute time, text). Returns the series."""
    s = series(annotated, connection=connection, side=side, t0=t0)
    plot_series(s, path, title=title, events=[(t - s.t0, text) for t, text in events],
                rates=rates)
    return s

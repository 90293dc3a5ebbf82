"""What a demo works with (``Scene``) and what it leaves (``Outcome``), and ``run_demo``.

A demo's ``run(scene, **options)`` builds its lab with ``scene.lab(topology)``, captures with
``scene.capture(host, iface)``, makes the kernel do something (``mptcplab.traffic``), marks
what it did meanwhile (``scene.event``), then reads the capture through the sniffer's tracker
(``scene.analyse()``) and says what it shows: derivations (``scene.explain``), checked facts
(``scene.claim``: each one true or false, never assumed), values (``scene.fact``), and notes
on particular steps (``scene.note``). ``run_demo`` then draws the ladder (terminal, SVG, PNG),
the plots a demo asked for, and writes the files.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mptcplab import privileges
from mptcplab.analysis import Annotated, Connection, Tracker
from mptcplab.decode import Segment, decode_file
from mptcplab.demo._catalogue import Entry, entry
from mptcplab.errors import BadInput, ExitStatus, LabError, MissingTool
from mptcplab.facts import network_effects
from mptcplab.poll import until
from mptcplab.report.ladder import Ladder, build_ladder
from mptcplab.report.notes import Note

if TYPE_CHECKING:
    from mptcplab.capture import LiveCapture
    from mptcplab.report.plot import Series
    from mptcplab.topo import Counters, Lab, LabHost, Topology

FULL = 65600            # snaplen keeping whole segments (DSS checksums need the payload)
HEADERS = 200           # snaplen keeping headers and options (bulk transfers)


@dataclass
class Claim:
    """A fact the demo states, checked against what happened."""

    text: str
    ok: bool
    detail: str = ""


@dataclass
class Explanation:
    """A few lines deriving something on screen (token and IDSN from a key, an HMAC...)."""

    title: str
    lines: list[str]


@dataclass
class View:
    """The main capture through the tracker, and what the network did (from a second one)."""

    path: Path
    segments: list[Segment]
    annotated: list[Annotated]
    tracker: Tracker
    network: dict[int, str]
    other: list[Segment] | None = None

    def connection(self, number: int = 1) -> Connection:
        for conn in self.tracker.connections:
            if conn.number == number:
                return conn
        raise LabError(f"the capture {self.path} holds no MPTCP connection {number}")

    def options(self, subtype: str, **match: Any) -> list[tuple[Annotated, dict[str, Any]]]:
        """(annotation, option) for each option of ``subtype`` whose fields equal ``match``."""
        return [(a, o) for a in self.annotated for o in a.seg.options
                if o["subtype"] == subtype and not o.get("malformed")
                and all(o.get(k) == v for k, v in match.items())]


@dataclass
class _Capture:
    host: LabHost
    iface: str
    path: Path
    live: LiveCapture
    main: bool


@dataclass
class PlotRequest:
    name: str
    side: int | None = None
    title: str = ""
    rates: list[tuple[str, float]] = field(default_factory=list)


class Scene:
    """Handed to a demo's ``run``: the lab, the captures, and what the demo tells."""

    def __init__(self, demo: Entry, out: Path, say: Callable[[str], None]) -> None:
        self.entry = demo
        self.name = demo.name
        self.out = out
        self.say = say
        self.topology: Topology | None = None
        self.diagram: list[str] = []
        self.network_label: list[str] = ["network"]
        self.events: list[tuple[float, str]] = []
        self.notes: dict[int, Note] = {}
        self.claims: list[Claim] = []
        self.explanations: list[Explanation] = []
        self.facts: dict[str, Any] = {}
        self.plots: list[PlotRequest] = []
        self.connection: int | None = 1
        self.view: View | None = None
        self._captures: list[_Capture] = []

    # -- while the lab runs -----------------------------------------------------------------

    @contextlib.contextmanager
    def lab(self, topology: Topology, diagram: list[str] | None = None) -> Iterator[Lab]:
        """Build the topology (fresh namespaces, removed whatever happens) for the demo;
        ``diagram`` replaces the one in the topology's docstring (when the demo changed it)."""
        from mptcplab.topo import Lab

        self.topology = topology
        self.diagram = diagram if diagram is not None else diagram_of(topology)
        for line in self.diagram:
            self.say("    " + line)
        names = ", ".join(topology.nodes)
        self.progress(f"building the lab {topology.name}: {names}, each in its own network "
                      "namespace")
        with Lab(topology) as lab:
            try:
                yield lab
            finally:
                for cap in self._captures:
                    with contextlib.suppress(Exception):
                        cap.live.stop()

    def capture(self, host: LabHost, iface: str = "eth0", *, main: bool = True,
                filter: str = "tcp port 5000", snaplen: int = FULL,
                buffer_kib: int | None = None) -> LiveCapture:
        """tcpdump on ``host``'s ``iface`` into the output folder. The main capture is the one
        the ladder is drawn from (``NAME.pcap``); another, at the other end of the network,
        shows what the network dropped or changed (``NAME-HOST-IFACE.pcap``)."""
        path = self.out / (f"{self.name}.pcap" if main else
                           f"{self.name}-{host.name}-{iface}.pcap")
        live = host.capture(iface, path, filter=filter, snaplen=snaplen, buffer_kib=buffer_kib)
        self._captures.append(_Capture(host, iface, path, live, main))
        self.progress(f"capturing on {host.name} {iface} ({filter}) into {path.name}")
        return live

    def progress(self, text: str) -> None:
        self.say(f"  · {text}")

    def event(self, text: str) -> None:
        """Something the demo did at this moment: a row across the ladder, a line on plots."""
        self.events.append((time.time(), text))
        self.progress(text)

    def wait(self, predicate: Callable[[], Any], what: str, timeout: float = 10.0) -> Any:
        """Poll until ``predicate()`` is true (returned); a LabError naming ``what`` after
        ``timeout`` seconds."""
        return until(predicate, what, timeout,
                     error=lambda text: LabError(f"demo {self.name}: {text}"))

    def wait_counter(self, host: LabHost, before: Counters, name: str, at_least: int = 1,
                     timeout: float = 10.0) -> int:
        """Wait until ``host``'s MIB counter ``name`` rose by ``at_least`` since ``before``."""
        return self.wait(lambda: (host.counters() - before)[name] >= at_least and
                         (host.counters() - before)[name],
                         f"{host.name} {name} to reach {at_least}", timeout)

    # -- after the run: what the capture shows ----------------------------------------------

    def analyse(self) -> View:
        """Stop the captures and read the main one through the tracker (the second one, if
        any, tells what the network dropped or changed)."""
        if self.view is not None:
            return self.view
        mains = [c for c in self._captures if c.main]
        if not mains:
            raise LabError(f"demo {self.name} captured nothing to draw")
        main = mains[0]
        for cap in self._captures:
            stats = cap.live.stop()
            dropped = stats.dropped_by_kernel or 0
            self.claim(f"the capture on {cap.host.name} {cap.iface} is complete", dropped == 0,
                       f"tcpdump dropped {dropped} packets" if dropped else "")
        segments = list(decode_file(str(main.path), mptcp_only=False))
        tracker = Tracker()
        annotated = []
        for seg in segments:
            ann = tracker.feed(seg)
            if ann is not None:
                annotated.append(ann)
        tracker.finish()
        tracker.packets = len(segments)
        other = None
        network: dict[int, str] = {}
        others = [c for c in self._captures if not c.main]
        if others:
            other = list(decode_file(str(others[0].path), mptcp_only=False))
            network = network_effects(segments, other, set(main.host.addresses))
        self.view = View(main.path, segments, annotated, tracker, network, other)
        return self.view

    def note(self, frame: int, text: str, rfc: str = "") -> None:
        """Say this (instead of the generic sentence) at the step of ``frame``."""
        self.notes[frame] = Note(text, rfc)

    def explain(self, title: str, *lines: str) -> None:
        self.explanations.append(Explanation(title, list(lines)))

    def claim(self, text: str, ok: bool, detail: str = "") -> bool:
        self.claims.append(Claim(text, bool(ok), detail))
        return bool(ok)

    def fact(self, **values: Any) -> None:
        self.facts.update(values)

    def plot(self, name: str, *, side: int | None = None, title: str = "",
             rates: list[tuple[str, float]] | None = None) -> None:
        """Ask for a plot of the main capture (``NAME.svg`` and ``.png`` in the folder)."""
        self.plots.append(PlotRequest(name, side, title, rates or []))


@dataclass
class Outcome:
    """Everything a demo produced."""

    name: str
    summary: str
    story: list[str]
    diagram: list[str]
    out: Path
    ladder: Ladder
    view: View
    claims: list[Claim]
    explanations: list[Explanation]
    facts: dict[str, Any]
    files: dict[str, Path]
    seconds: float
    series: dict[str, Series] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.claims)

    @property
    def tracker(self) -> Tracker:
        return self.view.tracker


def _probe(feature: str) -> str | None:
    """Why ``feature`` (a tool on PATH or a sysctl) is missing here, or None."""
    if feature.startswith("net."):
        path = "/proc/sys/" + feature.replace(".", "/")
        return None if os.path.exists(path) else f"this kernel has no sysctl {feature}"
    if shutil.which(feature) is None:
        package = {"nft": "nftables", "ss": "iproute2", "ip": "iproute2"}.get(feature, feature)
        return f"{feature} is not installed (Debian package {package})"
    return None


def preflight(demo: Entry) -> None:
    """Everything that can stop a demo before it builds anything, as one clear error."""
    privileges.require(f"demo {demo.name} (it builds network namespaces and captures)",
                       privileges.CAP_SYS_ADMIN, privileges.CAP_NET_ADMIN,
                       privileges.CAP_NET_RAW)
    if not os.path.isdir("/proc/sys/net/mptcp"):
        raise MissingTool(f"demo {demo.name}: this kernel has no MPTCP (no /proc/sys/net/mptcp)")
    for feature in ("tcpdump", *demo.needs):
        why = _probe(feature)
        if why:
            raise MissingTool(f"demo {demo.name} cannot run here: {why}")


def output_dir(name: str, out: str | os.PathLike[str] | None) -> Path:
    """The folder for a demo's files: ``out`` (created if needed) or a fresh one."""
    if out is None:
        return Path(tempfile.mkdtemp(prefix=f"mptcplab-demo-{name}-"))
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise BadInput(f"{out} exists and is not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BadInput(f"cannot use {out} as the output folder: {exc.strerror}") from None
    if not path.is_dir():
        raise BadInput(f"{out} is not a folder")
    return path


def diagram_of(topology: Topology | None) -> list[str]:
    """The ASCII diagram at the top of a topology's docstring (up to its first blank line)."""
    if topology is None or not topology.doc:
        return []
    lines = []
    for line in textwrap.dedent(topology.doc).strip("\n").splitlines():
        if not line.strip():
            break
        lines.append(line.rstrip())
    return lines


def run_demo(name: str, *, out: str | os.PathLike[str] | None = None,
             options: dict[str, Any] | None = None, say: Callable[[str], None] = print,
             png: bool = True, started: Callable[[Entry, Path], None] | None = None) -> Outcome:
    """Run the demo ``name`` and draw it: returns the Outcome with the ladder and the files
    written (capture, ladder.svg/.png, plots, steps.jsonl). ``started(entry, folder)`` is
    called once the checks passed, before anything is built (to introduce the demo)."""
    from mptcplab.report.demo import demo_json_lines, footer_lines
    from mptcplab.report.svg import ladder_svg, svg_to_png

    demo = entry(name)
    if demo.sequence:
        raise LabError(f"{name} is a tour of {', '.join(demo.sequence)}: run each demo",
                       ExitStatus.USAGE)
    options = dict(options or {})
    demo.check_names(options)
    preflight(demo)
    folder = output_dir(name, out)
    if started is not None:
        started(demo, folder)
    scene = Scene(demo, folder, say)
    began = time.monotonic()
    try:
        demo.module.run(scene, **options)
        view = scene.analyse()
    except BaseException:
        if out is None and not any(folder.iterdir()):
            folder.rmdir()          # a fresh folder the demo never wrote to
        raise
    seconds = time.monotonic() - began
    ladder = build_ladder(view.annotated, connection=scene.connection,
                          title=f"mptcplab demo {name}: {demo.summary}", notes=scene.notes,
                          network=view.network, events=scene.events,
                          network_label=scene.network_label)
    ladder.footer = footer_lines(view.tracker, view.path.name)
    files: dict[str, Path] = {"capture": view.path}
    others = [c.path for c in scene._captures if not c.main]
    if others:
        files["capture at the other end"] = others[0]
    svg = ladder_svg(ladder)
    files["ladder (SVG)"] = folder / "ladder.svg"
    files["ladder (SVG)"].write_text(svg)
    if png:
        files["ladder (PNG)"] = folder / "ladder.png"
        svg_to_png(svg, files["ladder (PNG)"])
    series: dict[str, Series] = {}
    if scene.plots:
        from mptcplab.report.plot import plot_series
        from mptcplab.report.plot import series as make_series

        for req in scene.plots:
            s = make_series(view.annotated, connection=scene.connection, side=req.side,
                            t0=ladder.t0)
            events = [(t - s.t0, text) for t, text in scene.events]
            paths = [folder / f"{req.name}{suffix}"
                     for suffix in ((".svg", ".png") if png else (".svg",))]
            plot_series(s, paths, title=req.title, events=events, rates=req.rates)
            for path in paths:
                files[f"{req.name} plot ({path.suffix[1:].upper()})"] = path
            series[req.name] = s
    outcome = Outcome(name, demo.summary, demo.story, scene.diagram, folder, ladder,
                      view, scene.claims, scene.explanations, scene.facts, files, seconds,
                      series)
    files["steps (JSON lines)"] = folder / "steps.jsonl"
    files["steps (JSON lines)"].write_text(
        "".join(json.dumps(obj) + "\n" for obj in demo_json_lines(outcome)))
    return outcome

"""How a demo's outcome reads: on a terminal (around the ladder) and as JSON lines.

The JSON lines of a demo (``--json``, and steps.jsonl in its folder), in order:
``{"type": "demo", ...}`` (name, summary, folder), then the ladder's rows (``"step"`` objects
are the sniffer's packet objects plus step number, sentence, RFC section and what the network
did; ``"gap"`` and ``"event"`` rows), then ``"explanation"``, ``"claim"`` and ``"facts"``
objects, the sniffer's ``"summary"``, and ``{"type": "result", "ok": ..., "files": ...}``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mptcplab.analysis import Tracker
from mptcplab.report.contract import summary_json
from mptcplab.report.ladder import rows_json
from mptcplab.report.lines import UNICODE_MARKS

if TYPE_CHECKING:
    from mptcplab.demo import Outcome


def footer_lines(tracker: Tracker, capture: str) -> list[str]:
    """The tally under a ladder: what was captured and how the checks came out."""
    hv, hi, hu = tracker.hmacs.as_tuple()
    cv, ci, cu = tracker.checksums.as_tuple()
    n = len(tracker.connections)
    parts = [f"{capture}: {tracker.packets} TCP segments, {tracker.mptcp_packets} with MPTCP "
             f"options, {n} MPTCP connection{'s' if n != 1 else ''}"]
    checks = []
    if hv or hi or hu:
        checks.append(f"HMACs {hv} ✓ {hi} ✗ {hu} ?")
    if cv or ci or cu:
        checks.append(f"DSS checksums {cv} ✓ {ci} ✗ {cu} ?")
    if checks:
        parts.append("recomputed by the lab: " + "; ".join(checks))
    return parts


def intro_lines(name: str, summary: str, story: list[str]) -> list[str]:
    lines = [f"mptcplab demo {name}: {summary}"]
    body = "\n".join(story).strip("\n")
    if body:
        lines += ["", *body.splitlines()]
    return lines


def findings_lines(outcome: Outcome, marks: tuple[str, str, str] = UNICODE_MARKS) -> list[str]:
    """What the capture and the kernel showed: derivations, then every claim checked."""
    out: list[str] = []
    for ex in outcome.explanations:
        out += ["", ex.title]
        out += [f"    {line}" for line in ex.lines]
    if outcome.claims:
        out += ["", "Checked:"]
        for c in outcome.claims:
            out.append(f"  {marks[0] if c.ok else marks[1]} {c.text}"
                       + (f" ({c.detail})" if c.detail else ""))
    return out


def files_lines(outcome: Outcome) -> list[str]:
    out = [f"Files in {outcome.out}:"]
    width = max(len(k) for k in outcome.files)
    for what, path in outcome.files.items():
        hint = " (opens in Wireshark)" if what == "capture" else ""
        out.append(f"  {what:<{width}}  {path.name}{hint}")
    return out


def demo_json_lines(outcome: Outcome) -> list[dict[str, Any]]:
    """The whole demo as JSON objects (see the module docstring for the order)."""
    objs: list[dict[str, Any]] = [{"type": "demo", "name": outcome.name,
                                   "summary": outcome.summary, "dir": str(outcome.out)}]
    objs += rows_json(outcome.ladder)
    for ex in outcome.explanations:
        objs.append({"type": "explanation", "title": ex.title, "lines": ex.lines})
    for c in outcome.claims:
        objs.append({"type": "claim", "text": c.text, "ok": c.ok, "detail": c.detail})
    objs.append({"type": "facts", **outcome.facts})
    objs.append(summary_json(outcome.tracker))
    for name, s in outcome.series.items():
        objs.append({"type": "series", "name": name, **s.summary()})
    objs.append({"type": "result", "name": outcome.name, "ok": outcome.ok,
                 "seconds": round(outcome.seconds, 3),
                 "files": {k: str(v) for k, v in outcome.files.items()}})
    return objs

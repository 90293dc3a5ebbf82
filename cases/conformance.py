"""The requirement table: each requirement of cases/requirements.py with the cases that cover
it (their `@covers(...)`) and what they found on the running kernel.

Per requirement: FAILED if a covering case failed; `deviation` if one is an expected failure
(its reason is the evidence; an intermittent one counts even in a run where it passed); `pass` when every covering case that ran passed; `not available`
when they were all skipped (a missing tool or kernel feature, with the reason); `not run`
when no covering case was selected; `not testable here` with the catalogue's reason.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable
from typing import Any

from requirements import REQUIREMENTS, Requirement

UNAVAILABLE = "not available on this kernel"      # support.UNAVAILABLE (no pytest import here)


def _short_case(name: str) -> str:
    return name.split("::", 1)[-1]


def _grouped(rows: list[Any]) -> list[str]:
    """Case names with the parameters of one function collected: `test_x[a, b]`."""
    order: dict[str, list[str]] = {}
    for row in rows:
        name = _short_case(row.case)
        base, _, param = name.partition("[")
        order.setdefault(base, [])
        if param:
            order[base].append(param.rstrip("]"))
    return [f"{base}[{', '.join(params)}]" if params else base
            for base, params in order.items()]


def verdicts(rows: Iterable[Any]) -> list[tuple[Requirement, list[Any], str, str]]:
    """(requirement, covering rows, result word, detail) for every requirement."""
    rows = list(rows)
    out = []
    for req in REQUIREMENTS:
        covering = [r for r in rows if req.id in r.covers]
        if req.untestable and not covering:
            out.append((req, covering, "not testable here", req.untestable))
            continue
        if not covering:
            out.append((req, covering, "not run", "no covering case was selected"))
            continue
        failed = [r for r in covering if r.result.startswith("FAILED")]
        deviations = [r for r in covering if r.result == "kernel deviation"
                      or "intermittent" in r.result]
        ran = [r for r in covering if not r.result.startswith(("skipped", UNAVAILABLE))]
        if failed:
            out.append((req, covering, "FAILED", ", ".join(_short_case(r.case) for r in failed)))
        elif deviations:
            out.append((req, covering, "deviation", " / ".join(r.reason for r in deviations)))
        elif not ran:
            out.append((req, covering, "not available", covering[0].reason.removeprefix(
                "Skipped: ").removeprefix(UNAVAILABLE + ": ")))
        else:
            out.append((req, covering, "pass", ""))
    return out


def render_terminal(rows: Iterable[Any]) -> str:
    from tabulate import tabulate

    table = []
    counts: dict[str, int] = {}
    for req, covering, word, detail in verdicts(rows):
        counts[word] = counts.get(word, 0) + 1
        note = detail if len(detail) <= 70 else detail[:67] + "..."
        table.append((req.id, f"§{req.section}", req.level, len(_grouped(covering)),
                      word + (f": {note}" if note and word != "pass" else "")))
    summary = ", ".join(f"{v} {k}" for k, v in sorted(counts.items()))
    return tabulate(table, headers=("requirement", "RFC 8684", "level", "cases", "result")) + \
        f"\n{len(REQUIREMENTS)} requirements: {summary}"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_markdown(rows: Iterable[Any], *, kernel: str) -> str:
    found = verdicts(rows)
    counts: dict[str, int] = {}
    for _, _, word, _ in found:
        counts[word] = counts.get(word, 0) + 1
    today = datetime.date.today().isoformat()
    lines = [
        "## RFC 8684 §3 conformance of the running kernel",
        "",
        "Generated, not written by hand: `python3 -m pytest -n 2 cases/ "
        "--requirements=docs/conformance.md` (requirements in `cases/requirements.py`, "
        "cases marked `@covers(...)`).",
        f"Kernel {kernel}, {today}. {len(found)} requirements: "
        + ", ".join(f"{v} {k}" for k, v in sorted(counts.items())) + ".",
        "",
        "Results: **pass** (every covering case passed), **deviation** (a covering case "
        "asserts the RFC and is an expected failure; the evidence is what the kernel did; "
        "an intermittent one counts even in a run where it passed), **FAILED**, **not "
        "available** (a missing tool or kernel feature), **not testable here** (why, in the "
        "last column). The cases are in `cases/`; docs/cases.md lists them.",
        "",
        "| requirement | § | level | what the RFC asks (in our words) | cases | result |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for req, covering, word, detail in found:
        cases = "<br>".join(f"`{name}`" for name in _grouped(covering)) or "—"
        result = f"**{word}**" + (f": {_cell(detail)}" if detail and word != "pass" else "")
        lines.append(f"| {req.id} | {req.section} | {req.level} | {_cell(req.text)} | {cases} "
                     f"| {result} |")
    lines.append("")
    return "\n".join(lines)

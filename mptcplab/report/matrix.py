"""The kernel x case matrix for people: one row per case with its RFC 8684 section, one column
per kernel (label over release), then one line per kernel (how it ran, counts, wall time) and
the reasons behind the cells that are not a plain pass: what a kernel lacks, deviations,
failures."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mptcplab.vm.matrix import KernelResults, Matrix

CELL = {"pass": "pass", "deviation": "deviation", "fail": "FAIL", "unavailable": "n/a",
        "skipped": "skipped", "not run": "-"}


def _kernel_line(k: KernelResults) -> str:
    how = {"native": "natively", "tcg": "in a VM under TCG", "kvm": "in a VM under KVM"}.get(
        k.accel, "")
    parts = [f"{k.label}: {k.release or 'release unknown'}"]
    if k.source and k.accel != "native":
        parts.append(k.source)
    if how:
        parts.append(how + (f", booted in {k.boot_seconds:.0f} s" if k.boot_seconds else ""))
    if k.error:
        parts.append(f"NOT RUN: {k.error}")
    else:
        words = ", ".join(f"{n} {'not available' if r == 'unavailable' else CELL[r]}"
                          for r, n in k.counts().items() if n)
        took = f" in {k.seconds:.0f} s" if k.seconds else ""
        parts.append(f"{len(k.cases)} cases{took}: {words or 'none'}")
    return "; ".join(parts)


KINDS = {"unavailable": "not available on that kernel", "deviation": "kernel deviations (strict xfail)",
         "fail": "failures", "skipped": "skipped"}


def matrix_text(m: Matrix) -> str:
    from tabulate import tabulate

    # Footnotes: one per (kind, reason), numbered in the order they are listed below the
    # table (by kind, then first appearance), each saying on which kernels and how often.
    seen: dict[tuple[str, str], dict[str, int]] = {}
    for case, _ in m.rows:
        for k in m.kernels:
            c = m.cell(case, k)
            if c is not None and c.result in KINDS and c.reason:
                per = seen.setdefault((c.result, c.reason), {})
                per[k.label] = per.get(k.label, 0) + 1
    order = sorted(seen, key=lambda key: list(KINDS).index(key[0]))
    number = {key: i + 1 for i, key in enumerate(order)}

    rows = []
    for case, rfc in m.rows:
        row = [case, f"§{rfc}" if rfc else ""]
        for k in m.kernels:
            c = m.cell(case, k)
            if c is None:
                row.append("-")
                continue
            key = (c.result, c.reason)
            row.append(CELL[c.result] + (f" [{number[key]}]" if key in number else ""))
        rows.append(row)
    headers = ["case", "RFC 8684"] + [f"{k.label}\n{k.release}" if k.release and
                                      k.release != k.label else k.label for k in m.kernels]
    out = [tabulate(rows, headers=headers, disable_numparse=True) if rows else "(no cases)", ""]
    out += ["kernels:"] + [f"  {_kernel_line(k)}" for k in m.kernels]
    for kind, title in KINDS.items():
        mine = [key for key in order if key[0] == kind]
        if mine:
            out += ["", f"{title}:"]
            for key in mine:
                reason = key[1] if len(key[1]) <= 160 else key[1][:157] + "..."
                where = ", ".join(f"{k} ({n} cases)" if n > 1 else k
                                  for k, n in seen[key].items())
                out.append(f"  [{number[key]}] {where}: {reason}")
    return "\n".join(out)


REQ_WORDS = {"pass": "pass", "FAILED": "FAIL", "deviation": "deviation",
             "not available": "n/a", "not run": "-", "not testable here": "untestable"}


def _footnoted(verdicts: dict[str, list[tuple[str, str]]], count: int
               ) -> tuple[list[list[str]], list[str]]:
    """Cells per requirement and kernel (word [n]) and the footnotes behind them: one per
    distinct (word, detail), naming the kernels; "not run" and pass carry none."""
    labels = list(verdicts)
    number: dict[tuple[str, str], int] = {}
    where: dict[tuple[str, str], list[str]] = {}
    cells = []
    for i in range(count):
        row = []
        for label in labels:
            word, detail = verdicts[label][i]
            text = REQ_WORDS.get(word, word)
            if detail and word not in ("pass", "not run"):
                key = (word, detail)
                n = number.setdefault(key, len(number) + 1)
                if label not in where.setdefault(key, []):
                    where[key].append(label)
                text += f" [{n}]"
            row.append(text)
        cells.append(row)
    notes = [f"[{n}] {', '.join(where[key])}: {key[0]}: "
             + (key[1] if len(key[1]) <= 160 else key[1][:157] + "...")
             for key, n in number.items()]
    return cells, notes


def requirements_text(reqs: list, verdicts: dict[str, list[tuple[str, str]]],
                      releases: dict[str, str]) -> str:
    """The RFC 8684 requirement table with one result column per kernel."""
    from tabulate import tabulate

    cells, notes = _footnoted(verdicts, len(reqs))
    headers = ["requirement", "RFC 8684", "level"] + [
        f"{label}\n{releases.get(label, '')}".rstrip() for label in verdicts]
    rows = [[r.id, f"§{r.section}", r.level, *row] for r, row in zip(reqs, cells)]
    counts = "; ".join(
        f"{label}: " + ", ".join(f"{n} {w}" for w, n in sorted(
            {w: sum(1 for x, _ in v if x == w) for w, _ in v}.items()))
        for label, v in verdicts.items())
    return "\n".join([tabulate(rows, headers=headers, disable_numparse=True), "",
                      f"{len(reqs)} requirements. {counts}", *([""] + notes if notes else [])])


def requirements_markdown(reqs: list, verdicts: dict[str, list[tuple[str, str]]],
                          releases: dict[str, str]) -> str:
    """The same as a Markdown page (docs/conformance.md's table, one column per kernel)."""
    cells, notes = _footnoted(verdicts, len(reqs))

    def cell(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ")

    labels = list(verdicts)
    lines = ["## RFC 8684 §3 conformance, kernel by kernel", "",
             "Generated by `mptcplab cases --kernel ... --requirements=FILE` (or `--merge "
             "FILES`): each requirement of `cases/requirements.py`, judged on each kernel from "
             "the cases that cover it, as docs/conformance.md judges the running kernel.", "",
             "Kernels: " + "; ".join(f"{label} = {releases.get(label) or '?'}"
                                     for label in labels) + ".", "",
             "| requirement | § | level | what the RFC asks (in our words) | "
             + " | ".join(labels) + " |",
             "| --- | --- | --- | --- | " + " | ".join("---" for _ in labels) + " |"]
    for r, row in zip(reqs, cells):
        lines.append(f"| {r.id} | {r.section} | {r.level} | {cell(r.text)} | "
                     + " | ".join(cell(c) for c in row) + " |")
    if notes:
        lines += ["", *[f"- {cell(n)}" for n in notes]]
    lines.append("")
    return "\n".join(lines)

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


def matrix_text(m: Matrix) -> str:
    from tabulate import tabulate

    notes: dict[tuple[str, str, str], int] = {}      # (kind, kernel, reason) -> footnote
    members: dict[int, int] = {}

    def note(kind: str, kernel: str, reason: str) -> str:
        key = (kind, kernel, reason)
        n = notes.setdefault(key, len(notes) + 1)
        members[n] = members.get(n, 0) + 1
        return f" [{n}]"

    rows = []
    for case, rfc in m.rows:
        row = [case, f"§{rfc}" if rfc else ""]
        for k in m.kernels:
            c = m.cell(case, k)
            if c is None:
                row.append("-")
                continue
            text = CELL[c.result]
            if c.result in ("unavailable", "skipped", "fail", "deviation") and c.reason:
                text += note(c.result, k.label, c.reason)
            row.append(text)
        rows.append(row)
    headers = ["case", "RFC 8684"] + [f"{k.label}\n{k.release}" if k.release and
                                      k.release != k.label else k.label for k in m.kernels]
    out = [tabulate(rows, headers=headers, disable_numparse=True) if rows else "(no cases)", ""]
    out += ["kernels:"] + [f"  {_kernel_line(k)}" for k in m.kernels]
    titles = {"unavailable": "not available on that kernel", "skipped": "skipped",
              "fail": "failures", "deviation": "kernel deviations (strict xfail)"}
    for kind, title in titles.items():
        mine = [(n, kernel, reason) for (k2, kernel, reason), n in notes.items() if k2 == kind]
        if mine:
            out += ["", f"{title}:"]
            for n, kernel, reason in mine:
                count = members[n]
                short = reason if len(reason) <= 160 else reason[:157] + "..."
                out.append(f"  [{n}] {kernel}: {short}"
                           + (f" ({count} cases)" if count > 1 else ""))
    return "\n".join(out)

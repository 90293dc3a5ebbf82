"""`mptcplab demo [NAME]`: the teaching demos (list them, run one, or a tour)."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mptcplab.errors import ExitStatus, LabError

if TYPE_CHECKING:
    from mptcplab.demo import Entry


def terminal(colour: str) -> tuple[bool, bool, int]:
    """(colour, unicode, width) for stdout: colour when it is a terminal (unless NO_COLOR or
    TERM=dumb), Unicode when its encoding is UTF-8, the terminal's width (60..140)."""
    tty = sys.stdout.isatty()
    if colour == "always":
        use = True
    elif colour == "never":
        use = False
    else:
        use = tty and "NO_COLOR" not in os.environ and os.environ.get("TERM") != "dumb"
    encoding = (getattr(sys.stdout, "encoding", None) or "").lower().replace("-", "")
    width = shutil.get_terminal_size((100, 24)).columns if tty else 100
    return use, encoding in ("utf8", "utf_8"), max(60, min(140, width))


class Pager:
    """--step: wait for Enter before each row (a: show the rest, q: stop the walk-through)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled

    def wait(self) -> bool:
        """False once the reader asked to stop (q)."""
        if not self.enabled:
            return True
        tty = sys.stdin.isatty() and sys.stdout.isatty()
        sys.stdout.write("    [Enter] next step, a + Enter: all the rest, q + Enter: stop ")
        sys.stdout.flush()
        answer = sys.stdin.readline()
        if tty:
            sys.stdout.write("\033[1A\r\033[2K")
        else:
            sys.stdout.write("\n")
        if not answer:                 # end of input: no more pauses
            self.enabled = False
            return True
        answer = answer.strip().lower()
        if answer == "a":
            self.enabled = False
        return answer != "q"


def _list(args: argparse.Namespace) -> int:
    from tabulate import tabulate

    from mptcplab.demo import entries, preflight

    rows = []
    for name, e in entries().items():
        why = ""
        if not e.sequence:
            try:
                preflight(e)
            except LabError as exc:
                why = str(exc).removeprefix(f"demo {name} cannot run here: ")
        rows.append({"name": name, "summary": e.summary,
                     "topology": e.topology or ("tour: " + ", ".join(e.sequence)),
                     "seconds": e.seconds, "options": e.options, "cannot_run": why or None})
    if args.json:
        for row in rows:
            print(json.dumps(row))
        return ExitStatus.OK
    print(tabulate([[r["name"], r["summary"], r["topology"],
                     f"~{r['seconds']:g} s" if r["seconds"] else ""] for r in rows],
                   headers=["demo", "what it shows", "lab", "time"]))
    print("\noptions (--set NAME=VALUE):")
    for r in rows:
        if r["options"]:
            print(f"  {r['name']:<10} " + " ".join(f"{k}={v!r}" for k, v in r["options"].items()))
    print("\nrun one: mptcplab demo NAME  (-o DIR for the files, --step to go one step at a "
          "time, --json for data)")
    blocked = [r for r in rows if r["cannot_run"]]
    if blocked:
        print(f"cannot run here: {blocked[0]['cannot_run']}")
    return ExitStatus.OK


def _run_one(name: str, args: argparse.Namespace, pager: Pager, out: str | None) -> bool:
    from mptcplab.demo import entry, run_demo
    from mptcplab.report import summary_text
    from mptcplab.report.demo import (
        demo_json_lines,
        files_lines,
        findings_lines,
        intro_lines,
    )
    from mptcplab.report.ladder import TextLadder, ascii_text
    from mptcplab.report.lines import ASCII_MARKS, UNICODE_MARKS

    colour, unicode, width = terminal(args.color)
    width = args.width or width
    marks = UNICODE_MARKS if unicode else ASCII_MARKS

    def show(text: str, file: Any = None) -> None:
        print(text if unicode or file is sys.stderr else ascii_text(text), file=file,
              flush=True)

    say = (lambda text: show(text, sys.stderr)) if args.json else show
    def introduce(demo: Entry, folder: Path) -> None:
        if args.json:
            return
        lines = intro_lines(name, demo.summary, demo.story)
        show(("\033[1m" + lines[0] + "\033[0m") if colour else lines[0])
        show("\n".join(lines[1:]))
        show(f"\n(files go to {folder})\n")

    outcome = run_demo(name, out=out, options=entry(name).parse_options(args.set), say=say,
                       started=introduce)
    if args.json:
        for obj in demo_json_lines(outcome):
            print(json.dumps(obj))
        return outcome.ok
    print()
    view = TextLadder(outcome.ladder, width=width, colour=colour, unicode=unicode,
                      title=False)
    print("\n".join(view.header()))
    walking = True
    for row in outcome.ladder.rows:
        if walking and not pager.wait():
            walking = False
            pager.enabled = False
        print("\n".join(view.row(row)), flush=True)
    print("\n".join(view.footer()))
    show("\n".join(findings_lines(outcome, marks)))
    show("")
    show("What the sniffer makes of the capture:")
    show(summary_text(outcome.tracker, marks))
    show("")
    show("\n".join(files_lines(outcome)))
    return outcome.ok


def _demo(args: argparse.Namespace) -> int:
    if args.name is None:
        return _list(args)
    if args.json and args.step:
        raise LabError("--step is for people at a terminal, --json for programs: pick one",
                       ExitStatus.USAGE)
    from mptcplab.demo import entries, entry

    demo = entry(args.name)
    pager = Pager(args.step)
    names = list(demo.sequence) or [demo.name]
    if demo.sequence and args.set:
        raise LabError(f"{demo.name} is a tour: --set goes to a single demo", ExitStatus.USAGE)
    failed = []
    for i, name in enumerate(names):
        out = args.output if len(names) == 1 or args.output is None else \
            os.path.join(args.output, name)
        if i and not args.json:
            print("\n" + ("━" if terminal(args.color)[1] else "=") * 60 + "\n")
            if not pager.wait():
                break
        if not _run_one(name, args, pager, out):
            failed.append(name)
    if failed:
        raise LabError(f"demo {', '.join(failed)}: some of what it states did not hold here "
                       "(see Checked above)")
    if demo.sequence and not args.json:
        others = [n for n, e in entries().items() if not e.sequence and n not in names]
        print(f"\nThat was the {demo.name}. More: mptcplab demo {others[0] if others else 'NAME'}"
              f" ({', '.join(others)}); `mptcplab demo` lists them all, --step goes one step "
              "at a time.")
    return ExitStatus.OK


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo", help="teaching demos: run a real MPTCP scenario in a lab and draw it",
        description="Run a teaching demo: build a lab in network namespaces, make the kernel "
                    "do one thing of MPTCP, capture it and explain it step by step (a ladder "
                    "with one sentence per step and its RFC 8684 section), then check what "
                    "it claims against the capture and the kernel. Without NAME: the list.",
        epilog="Files (in -o DIR, or a fresh folder named on screen): NAME.pcap, ladder.svg, "
               "ladder.png, plots, steps.jsonl. Exit codes: 0 every claim held, 1 one did not "
               "or the run failed, 2 usage, 3 bad option value, 4 not root, 5 a tool or "
               "kernel feature is missing, 130 interrupted (the lab is removed).")
    p.add_argument("name", nargs="?", metavar="NAME",
                   help="the demo (or tour) to run; `mptcplab demo` lists them")
    p.add_argument("-o", "--output", metavar="DIR",
                   help="folder for the capture, pictures and JSON (created if needed; "
                        "default: a fresh folder, named on screen)")
    p.add_argument("--step", action="store_true",
                   help="pause for Enter before each step (a classroom)")
    p.add_argument("--json", action="store_true",
                   help="the steps, claims and facts as JSON lines (progress on stderr)")
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                   help="a demo option (`mptcplab demo` lists each demo's options)")
    p.add_argument("--color", "--colour", choices=("auto", "always", "never"), default="auto",
                   help="colour on the terminal (default: auto, off when NO_COLOR is set)")
    p.add_argument("--width", type=int, metavar="COLUMNS",
                   help="width of the terminal ladder (default: the terminal's)")
    p.set_defaults(func=_demo)

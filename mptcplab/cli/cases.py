"""`mptcplab cases`: the conformance cases on one or more kernels, as a kernel x case matrix."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from mptcplab.cli.common import count, positive, seconds
from mptcplab.cli.vm import add_vm_options, vm_options
from mptcplab.errors import ExitStatus, LabError, NotRoot


def _say(text: str) -> None:
    import sys

    print(f"mptcplab: {text}", file=sys.stderr, flush=True)


def _cases(args: argparse.Namespace) -> int:
    from mptcplab.report.matrix import matrix_text
    from mptcplab.vm import matrix

    if not args.kernel and not args.merge:
        raise LabError("give --kernel KERNEL (repeatable: host, 6.1, 6.12, an image path) "
                       "and/or --merge FILE ...", ExitStatus.USAGE)
    if len(set(args.kernel)) != len(args.kernel):
        raise LabError("the same --kernel twice", ExitStatus.USAGE)
    runs = matrix.merge([Path(p) for p in args.merge]) if args.merge else []
    if args.kernel:
        if os.geteuid() != 0:
            raise NotRoot("the cases need root (network namespaces; VMs)")
        opts = matrix.RunOptions(out=args.out, select=args.select, workers=args.workers,
                                 pytest_args=args.pytest_arg, vm=vm_options(args),
                                 timeout=args.timeout)
        jobs = args.jobs or max(1, (os.cpu_count() or 1) // max(1, args.cpus))
        runs += matrix.run_matrix(args.kernel, opts, jobs=jobs, log=_say)
    m = matrix.build(runs)
    if args.requirements:
        from mptcplab.report.matrix import requirements_markdown, requirements_text

        reqs, verdicts = matrix.requirement_verdicts(m)
        releases = {k.label: k.release for k in m.kernels}
        if args.requirements != "-":
            Path(args.requirements).write_text(requirements_markdown(reqs, verdicts, releases))
            _say(f"requirement table written to {args.requirements}")
        if args.json:
            print(json.dumps({**m.as_dict(), "requirements": [
                {"id": r.id, "section": r.section, "level": r.level,
                 "results": {label: {"result": v[i][0], "detail": v[i][1]}
                             for label, v in verdicts.items()}}
                for i, r in enumerate(reqs)]}, indent=1))
        else:
            print(requirements_text(reqs, verdicts, releases))
    elif args.json:
        print(json.dumps(m.as_dict(), indent=1))
    else:
        print(matrix_text(m))
    if args.kernel:
        _say(f"per-kernel results (JUnit XML, JSON, log) in {args.out}/")
    return ExitStatus.ERROR if m.failed() else ExitStatus.OK


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "cases", help="run the conformance cases on several kernels: a kernel x case matrix",
        usage="%(prog)s [--kernel KERNEL ...] [-k EXPR] [--json] [--merge FILE ...] [options]",
        description="Run the conformance cases (cases/) on each KERNEL: `host` natively, "
                    "anything else in a VM (see `mptcplab vm run`). Prints one row per case "
                    "(with its RFC 8684 section) and one column per kernel: pass, deviation "
                    "(a documented kernel deviation), FAIL, n/a (not available on this "
                    "kernel: a feature it lacks, with the reason) or skipped. Each kernel "
                    "leaves <out>/<label>.xml (JUnit), .json and .log; --merge adds such "
                    "files made elsewhere (other machines, CI jobs) to the matrix.",
        epilog="Examples: mptcplab cases --kernel host --kernel 6.12 -k join;  "
               "mptcplab cases --merge job1/6.1.json job2/6.12.json --json. "
               "Exit codes: 0 no case failed, 1 a case failed or a kernel did not run, "
               "2 usage, 3 unreadable --merge file, 4 not root, 5 a tool or kernel package "
               "missing, 130 interrupted.")
    p.add_argument("--kernel", action="append", default=[], metavar="KERNEL",
                   help="host, a Debian version (6.1, 6.12) or a kernel image; repeatable, "
                        "one column each in this order")
    p.add_argument("-k", dest="select", metavar="EXPR",
                   help="only the cases matching this pytest -k expression")
    p.add_argument("--merge", nargs="+", default=[], metavar="FILE",
                   help="results files to add: the .json or .xml a run left, or a matrix "
                        "--json; merged with the kernels run now, if any")
    p.add_argument("--json", action="store_true", help="print the matrix as JSON")
    p.add_argument("--requirements", nargs="?", const="-", metavar="FILE",
                   help="print the RFC 8684 requirement table instead, one result column per "
                        "kernel (cases/requirements.py x the cases' @covers); with FILE, "
                        "also write it there as Markdown")
    p.add_argument("--out", type=Path, default=Path("cases-results"), metavar="DIR",
                   help="where each kernel's JUnit XML, JSON, log and artifacts go "
                        "(default ./cases-results)")
    p.add_argument("-j", "--jobs", type=positive, metavar="N",
                   help="kernels run at once (default: CPUs / guest CPUs, at least 1)")
    p.add_argument("-n", "--workers", type=count, default=2, metavar="N",
                   help="pytest-xdist workers inside each kernel's run (default 2; 0: none)")
    p.add_argument("--timeout", type=seconds, metavar="SECONDS",
                   help="give up on a kernel after this long (boot included)")
    p.add_argument("--pytest-arg", action="append", default=[], metavar="ARG",
                   help="pass one more argument to pytest (repeatable), e.g. --pytest-arg=-x")
    add_vm_options(p)
    p.set_defaults(func=_cases)

"""The conformance cases on several kernels: one pytest run per kernel (natively for `host`,
in a VM otherwise), each leaving JUnit XML and a JSON file; and the kernel x case matrix built
from such files, wherever they were made (`merge`).

One run per kernel is an independent unit of work: `run_matrix` runs them side by side up to
`jobs` at a time, and CI can run one job per kernel and merge their files at the end; pytest
and pytest-xdist do everything inside a run. Each JUnit entry carries the kernel release that
ran it (the `kernel` property cases/conftest.py adds), so files from several machines, or from
xdist's remote workers on several kernels, sort themselves into columns.

Cell values: pass, deviation (a strict xfail: the kernel does not do what the RFC says, with
evidence), fail, unavailable (the case needs a kernel feature this kernel lacks: probed, with
the reason), skipped (something else was missing: a tool, root), not run.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mptcplab.errors import BadInput, ExitStatus, LabError
from mptcplab.topo import lifecycle
from mptcplab.vm import kernels as kmod
from mptcplab.vm import machine
from mptcplab.vm.kernels import Kernel

UNAVAILABLE = "not available on this kernel"      # cases/support.py's prefix of such skips
STRICT_SKIP = "turns this skip into a failure"
RESULTS = ("pass", "deviation", "fail", "unavailable", "skipped", "not run")
# When a case appears twice in one kernel's results (a teardown error beside the call), the
# worse outcome stands.
_RANK = {"fail": 5, "unavailable": 3, "deviation": 2, "skipped": 1, "pass": 0, "not run": -1}
LABEL_ENV = "MPTCPLAB_KERNEL_LABEL"
FORMAT = "mptcplab-cases/1"

Log = Callable[[str], None]


@dataclass
class CaseResult:
    case: str                   # test_fallback.py::test_syn_retries_then_tcp_then_blackhole[0]
    rfc: str                    # "3.1"
    result: str                 # one of RESULTS
    reason: str = ""            # for unavailable / skipped / fail / deviation
    seconds: float = 0.0
    covers: list[str] = field(default_factory=list)   # its @covers(...) requirement ids


@dataclass
class KernelResults:
    """One kernel's run: what ran it, how long, every case's outcome."""

    label: str
    release: str
    source: str = ""
    accel: str = ""             # native, kvm, tcg ("" when unknown: merged from bare JUnit)
    seconds: float | None = None
    boot_seconds: float | None = None
    pytest_status: int | None = None
    error: str = ""             # why the run produced no results (did not boot, ...)
    junit: str = ""
    log: str = ""
    cases: list[CaseResult] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        out = {r: 0 for r in RESULTS if r != "not run"}
        for c in self.cases:
            out[c.result] += 1
        return out

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["counts"] = self.counts()
        return {"format": FORMAT, **d}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> KernelResults:
        cases = [CaseResult(**{k: c.get(k, v) for k, v in
                               (("case", ""), ("rfc", ""), ("result", "not run"),
                                ("reason", ""), ("seconds", 0.0), ("covers", []))})
                 for c in d.get("cases", [])]
        fields = {k: d[k] for k in cls.__dataclass_fields__ if k in d and k != "cases"}
        return cls(**fields, cases=cases)


# -- JUnit XML -> results --------------------------------------------------------------------

def _strip_location(text: str) -> str:
    """pytest puts "path:line: " before a skip's reason in the element text."""
    return re.sub(r"^\S+:\d+: ", "", text.strip())


def classify(tc: ET.Element) -> tuple[str, str]:
    """(result, reason) of one JUnit <testcase> written by pytest with cases/conftest.py."""
    failure = tc.find("failure")
    error = tc.find("error")
    skipped = tc.find("skipped")
    for bad in (failure, error):
        if bad is not None:
            msg = (bad.get("message") or "").strip() or _strip_location(bad.text or "")
            if "XPASS" in msg:
                return "fail", "XPASS: the documented deviation is gone (remove the xfail)"
            if UNAVAILABLE in msg and STRICT_SKIP not in msg:
                return "unavailable", msg[msg.index(UNAVAILABLE) + len(UNAVAILABLE):].lstrip(": ")
            return "fail", msg.splitlines()[0] if msg else "failed"
    if skipped is not None:
        msg = (skipped.get("message") or "").strip() or _strip_location(skipped.text or "")
        if skipped.get("type") == "pytest.xfail":
            return "deviation", msg.removeprefix("reason: ")
        if msg.startswith(UNAVAILABLE):
            return "unavailable", msg[len(UNAVAILABLE):].lstrip(": ")
        return "skipped", msg.removeprefix("Skipped: ")
    return "pass", ""


def _properties(tc: ET.Element) -> dict[str, str]:
    return {p.get("name", ""): p.get("value", "") for p in tc.iter("property")}


def _case_name(tc: ET.Element, props: dict[str, str]) -> str:
    if props.get("nodeid"):
        return props["nodeid"]
    parts = (tc.get("classname") or "").split(".")
    # classname "cases.test_fallback[.TestClass]" -> test_fallback.py[::TestClass]
    i = next((n for n, p in enumerate(parts) if p.startswith("test_")), len(parts) - 1)
    module = "/".join(parts[max(i, 0):i + 1]) + ".py" if parts and parts[0] else ""
    rest = parts[i + 1:]
    return "::".join([module, *rest, tc.get("name", "")]) if module else tc.get("name", "")


def parse_junit(path: Path, *, label: str = "") -> list[KernelResults]:
    """Results per kernel from a pytest JUnit XML file. Entries are grouped by their
    `kernel_label` / `kernel` properties (one file may hold several kernels: xdist remote
    workers); entries without them (a JUnit file from elsewhere) go under `label`, else the
    file's name."""
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError) as exc:
        raise BadInput(f"{path}: not a JUnit XML file ({exc})") from None
    if root.tag not in ("testsuites", "testsuite"):
        raise BadInput(f"{path}: not a JUnit XML file (root element <{root.tag}>)")
    runs: dict[tuple[str, str], KernelResults] = {}
    for tc in root.iter("testcase"):
        props = _properties(tc)
        release = props.get("kernel", "")
        name = label or props.get("kernel_label") or release or path.stem
        run = runs.setdefault((name, release), KernelResults(name, release, junit=str(path)))
        result, reason = classify(tc)
        case = CaseResult(_case_name(tc, props), props.get("rfc8684_section", ""), result,
                          reason, float(tc.get("time") or 0.0),
                          props.get("rfc8684_requirements", "").split())
        _add(run, case)
    return list(runs.values())


def _add(run: KernelResults, case: CaseResult) -> None:
    for i, old in enumerate(run.cases):
        if old.case == case.case:
            worse = case if _RANK[case.result] > _RANK[old.result] else old
            run.cases[i] = CaseResult(case.case, old.rfc or case.rfc, worse.result, worse.reason,
                                      old.seconds + case.seconds, old.covers or case.covers)
            return
    run.cases.append(case)


def load(path: Path) -> list[KernelResults]:
    """Kernel results from a file `mptcplab cases` wrote (per-kernel JSON, the matrix's
    `--json`), or a JUnit XML file."""
    if not path.is_file():
        raise BadInput(f"{path}: no such file")
    try:
        runs = _load(path)
        for run in runs:                    # what the matrix and its tables rely on
            for c in run.cases:
                if c.result not in RESULTS or not isinstance(c.case, str):
                    raise ValueError(f"case {c.case!r}: unknown result {c.result!r}")
                c.seconds = float(c.seconds)
            for name in ("seconds", "boot_seconds"):
                if getattr(run, name) is not None:
                    setattr(run, name, float(getattr(run, name)))
            if not isinstance(run.label, str) or not isinstance(run.release, str):
                raise TypeError("label and release must be text")
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise BadInput(f"{path}: not a results file of `mptcplab cases` "
                       f"({type(exc).__name__}: {exc})") from None
    return runs


def _load(path: Path) -> list[KernelResults]:
    head = path.read_bytes()[:64].lstrip()
    if head.startswith(b"<"):
        return parse_junit(path)
    try:
        data = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadInput(f"{path}: neither JSON nor JUnit XML ({exc})") from None
    if isinstance(data, dict) and isinstance(data.get("kernels"), list) \
            and isinstance(data.get("cases"), list) and "matrix" in str(data.get("format")):
        return matrix_from_dict(data)
    if isinstance(data, dict) and str(data.get("format", "")).startswith("mptcplab-cases"):
        return [KernelResults.from_dict(data)]
    raise BadInput(f"{path}: not a results file of `mptcplab cases` (no \"format\" key)")


# -- the matrix ------------------------------------------------------------------------------

@dataclass
class Matrix:
    kernels: list[KernelResults]
    rows: list[tuple[str, str]]     # (case, rfc) in order

    def cell(self, case: str, kernel: KernelResults) -> CaseResult | None:
        return next((c for c in kernel.cases if c.case == case), None)

    def failed(self) -> bool:
        return any(k.error for k in self.kernels) or any(
            c.result == "fail" for k in self.kernels for c in k.cases)

    def as_dict(self) -> dict[str, Any]:
        kern = []
        for k in self.kernels:
            d = k.as_dict()
            d.pop("cases")
            d.pop("format")
            kern.append(d)
        cases = []
        for case, rfc in self.rows:
            results = {}
            for k in self.kernels:
                c = self.cell(case, k)
                results[k.label] = {"result": c.result, "reason": c.reason,
                                    "seconds": round(c.seconds, 3)} if c else \
                    {"result": "not run", "reason": k.error, "seconds": 0.0}
            covers = next((c.covers for k in self.kernels for c in k.cases
                           if c.case == case and c.covers), [])
            cases.append({"case": case, "rfc": rfc, "covers": covers, "results": results})
        return {"format": "mptcplab-cases-matrix/1", "kernels": kern, "cases": cases}


def matrix_from_dict(d: dict[str, Any]) -> list[KernelResults]:
    out = []
    for k in d["kernels"]:
        fields = {f: k[f] for f in KernelResults.__dataclass_fields__ if f in k and f != "cases"}
        run = KernelResults(**fields)
        for c in d["cases"]:
            r = c.get("results", {}).get(run.label)
            if r and r.get("result") != "not run":
                run.cases.append(CaseResult(c["case"], c.get("rfc", ""), r["result"],
                                            r.get("reason", ""), r.get("seconds", 0.0),
                                            list(c.get("covers", []))))
        out.append(run)
    return out


def _sort_key(case: str) -> tuple[str, str]:
    module, _, name = case.partition("::")
    return module, name


def build(runs: Sequence[KernelResults]) -> Matrix:
    """One column per kernel (in the order given; the same label twice with another release
    gets the release added), one row per case any of them ran."""
    kernels: list[KernelResults] = []
    for run in runs:
        same = next((k for k in kernels if k.label == run.label), None)
        if same is not None and same.release == run.release:
            for c in run.cases:        # the same kernel from two files: one column
                _add(same, c)
            same.error = same.error or run.error
            continue
        if same is not None:
            run = KernelResults(**{**run.__dict__, "label": f"{run.label} ({run.release})"})
        kernels.append(run)
    rfc: dict[str, str] = {}
    for k in kernels:
        for c in k.cases:
            if not rfc.get(c.case):
                rfc[c.case] = c.rfc
    rows = sorted(rfc.items(), key=lambda t: _sort_key(t[0]))
    return Matrix(kernels, rows)


def merge(paths: Sequence[Path]) -> list[KernelResults]:
    out: list[KernelResults] = []
    for p in paths:
        out.extend(load(Path(p)))
    return out


# -- running the cases on kernels ------------------------------------------------------------

def checkout_root() -> Path:
    """The checkout whose cases/ to run: the one this package was imported from."""
    root = Path(__file__).resolve().parents[2]
    if not (root / "cases" / "conftest.py").is_file():
        raise LabError(f"no conformance cases next to the package ({root}/cases): "
                       "run from a checkout of mptcplab")
    return root


def safe_name(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.+=-]+", "_", label).strip("_") or "kernel"


@dataclass
class RunOptions:
    out: Path                                   # where the XML/JSON/log per kernel go
    select: str | None = None                   # pytest -k
    workers: int = 2                            # pytest -n inside each run (0: no xdist)
    pytest_args: list[str] = field(default_factory=list)
    vm: machine.VMOptions = field(default_factory=machine.VMOptions)
    timeout: float | None = None                # per kernel, seconds


def selected_files(select: str | None) -> list[str]:
    """The case files holding what `-k select` picks, found by collecting natively (a few
    seconds): a guest then imports only those. Collecting every case file in a guest imports
    Scapy (the peer cases), 45-55 s under TCG. ["cases"] when nothing is selected or the
    collection fails (the guest then collects it all)."""
    if not select:
        return ["cases"]
    res = subprocess.run([sys.executable, "-m", "pytest", "cases", "--collect-only", "-q",
                          "-p", "no:cacheprovider", "-p", "no:xdist", "-k", select],
                         cwd=checkout_root(), capture_output=True, text=True, timeout=300,
                         check=False)
    files = sorted({line.split("::", 1)[0] for line in res.stdout.splitlines()
                    if line.startswith("cases/") and "::" in line})
    return files or ["cases"]


def pytest_argv(kernel: Kernel, xml: Path, opts: RunOptions,
                files: list[str] | None = None) -> list[str]:
    # The cases use no hypothesis; its plugin alone is most of pytest's start-up, which is
    # ~15x slower under TCG.
    argv = [sys.executable, "-m", "pytest", *(files or ["cases"]), "-p", "no:cacheprovider",
            "-p", "no:hypothesispytest", "-q", f"--junitxml={xml}", "-o", "junit_family=xunit2"]
    if kernel.native:
        argv += ["-n", str(opts.workers)] if opts.workers else ["-p", "no:xdist"]
    elif opts.workers:      # in a guest plugins are not autoloaded (see run_kernel): xdist only
        argv += ["-p", "xdist.plugin", "-n", str(opts.workers)]
    if opts.select:
        argv += ["-k", opts.select]
    return argv + list(opts.pytest_args)


class _Children:
    """The pytest processes this run started natively, stopped if the run is interrupted."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen] = []
        self.lock = threading.Lock()

    def stop_all(self) -> None:
        with self.lock:
            for p in self.procs:
                machine._stop_group(p, grace=10.0)


def run_kernel(kernel: Kernel, opts: RunOptions, *, log: Log,
               children: _Children | None = None) -> KernelResults:
    """Run the cases on one kernel; its files are <out>/<label>.xml, .json and .log."""
    root = checkout_root()
    name = safe_name(kernel.label)
    opts.out.mkdir(parents=True, exist_ok=True)
    xml, js, logf = (opts.out / f"{name}.{ext}" for ext in ("xml", "json", "log"))
    for f in (xml, js):
        f.unlink(missing_ok=True)
    env = dict(os.environ)
    env[LABEL_ENV] = kernel.label
    env["MPTCPLAB_ARTIFACTS"] = str((opts.out / f"{name}-artifacts").resolve())
    argv = pytest_argv(kernel, xml.resolve(), opts,
                       None if kernel.native else selected_files(opts.select))
    res = KernelResults(kernel.label, kernel.release, kernel.source, junit=str(xml),
                        log=str(logf))
    started = time.monotonic()
    with open(logf, "wb") as out:
        try:
            if kernel.native:
                res.accel = "native"
                log(f"{kernel.label}: running the cases natively on {kernel.release}; "
                    f"log in {logf}")
                proc = subprocess.Popen(argv, cwd=root, env=env, stdin=subprocess.DEVNULL,
                                        stdout=out, stderr=subprocess.STDOUT,
                                        start_new_session=True)
                if children is not None:
                    with children.lock:
                        children.procs.append(proc)
                if machine.stopping():
                    raise LabError("stopped: the run was interrupted")
                try:
                    res.pytest_status = proc.wait(timeout=opts.timeout)
                except subprocess.TimeoutExpired:
                    machine._stop_group(proc)
                    raise LabError(f"the cases on {kernel.label} ran out of their "
                                   f"{opts.timeout:g} s") from None
                finally:
                    machine._stop_group(proc, grace=10.0)
            else:
                # Every plugin installed beside pytest (benchmark, hypothesis...) would be
                # imported at start-up, ~40x slower under TCG; the cases need none but xdist.
                env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"
                vm_opts = machine.VMOptions(**{**opts.vm.__dict__, "timeout": opts.timeout,
                                               "rwdirs": [opts.out.resolve(), *opts.vm.rwdirs]})
                vm = machine.run(kernel, argv, cwd=root, options=vm_opts, env=env, stdout=out,
                                 stderr=out, log=lambda t: log(f"{kernel.label}: {t}; log in "
                                                                f"{logf}"))
                res.accel, res.pytest_status = vm.accel, vm.returncode
                res.boot_seconds = round(vm.boot_seconds, 1)
                res.release = vm.release or res.release
        except LabError as exc:
            res.error = str(exc)
            log(f"{kernel.label}: {exc}")
    res.seconds = round(time.monotonic() - started, 1)
    if not res.error:
        if xml.is_file():
            parsed = parse_junit(xml, label=kernel.label)
            res.cases = [c for p in parsed for c in p.cases]
            if not res.cases and res.pytest_status not in (0, 5):
                res.error = f"pytest exit {res.pytest_status} and no case ran; see {logf}"
        else:
            res.error = f"pytest wrote no JUnit XML (exit {res.pytest_status}); see {logf}"
    js.write_text(json.dumps(res.as_dict(), indent=1) + "\n")
    return res


def run_matrix(specs: Sequence[str], opts: RunOptions, *, jobs: int = 1,
               log: Log = machine._stderr_log) -> list[KernelResults]:
    """Resolve (and fetch) every kernel first, then run the cases on them, `jobs` at a time.
    A kernel that cannot be had or booted becomes a column of "not run" with the reason."""
    resolved: list[Kernel | KernelResults] = []
    for spec in specs:
        try:
            resolved.append(kmod.resolve(spec, log=log))
        except LabError as exc:
            if isinstance(exc, BadInput):
                raise
            log(f"{spec}: {exc}")
            resolved.append(KernelResults(spec, "", error=str(exc)))
    labels = [k.label for k in resolved]
    twice = sorted({lab for lab in labels if labels.count(lab) > 1})
    if twice:       # their results, files and matrix columns would overwrite each other
        raise LabError(f"two kernels would share the column {', '.join(twice)} (the same "
                       "release): run them one at a time with different --out folders",
                       ExitStatus.USAGE)
    if any(isinstance(k, Kernel) and not k.native for k in resolved):
        machine.check_tools()
    machine.allow_running()
    children = _Children()
    todo = [k for k in resolved if isinstance(k, Kernel)]
    done: dict[str, KernelResults] = {}
    pool = ThreadPoolExecutor(max_workers=max(1, jobs))
    lifecycle.hold_termination()          # SIGTERM/SIGHUP unwind like Ctrl-C: VMs stopped
    try:
        futures = {k.label: pool.submit(run_kernel, k, opts, log=log, children=children)
                   for k in todo}
        for label, fut in futures.items():
            while True:                     # short waits keep Ctrl-C deliverable
                try:
                    done[label] = fut.result(timeout=0.5)
                    break
                except TimeoutError:
                    continue
    except BaseException:
        children.stop_all()
        machine.stop_running()
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    finally:
        lifecycle.release_termination()
    pool.shutdown(wait=True)
    return [done[k.label] if isinstance(k, Kernel) else k for k in resolved]


# -- the requirement table, one column per kernel ---------------------------------------------

# conftest's words for a result, which cases/conformance.py reads
_CONFTEST_WORDS = {"pass": "passed", "fail": "FAILED", "deviation": "kernel deviation",
                   "unavailable": UNAVAILABLE, "skipped": "skipped"}


@dataclass
class _Row:                 # what cases/conformance.py's verdicts() reads of a summary row
    case: str
    covers: tuple[str, ...]
    result: str
    reason: str


def requirement_verdicts(m: Matrix) -> tuple[list[Any], dict[str, list[tuple[str, str]]]]:
    """(requirements, {kernel label: [(word, detail) per requirement]}): cases/conformance.py's
    verdict for each requirement of cases/requirements.py, computed per kernel from the cases
    that kernel ran (their @covers travel in the JUnit/JSON files)."""
    cases_dir = checkout_root() / "cases"
    if str(cases_dir) not in sys.path:
        sys.path.insert(0, str(cases_dir))
    try:
        import conformance
        import requirements
    except ImportError as exc:
        raise LabError(f"no requirement catalogue in {cases_dir} ({exc})") from None
    # A case covers the same requirements on every kernel; a file without them (bare JUnit
    # from elsewhere) borrows them from the others.
    covers_of = {c.case: tuple(c.covers) for k in m.kernels for c in k.cases if c.covers}
    out: dict[str, list[tuple[str, str]]] = {}
    for k in m.kernels:
        rows = [_Row(c.case, tuple(c.covers) or covers_of.get(c.case, ()),
                     _CONFTEST_WORDS[c.result]
                     + (f": {c.reason}" if c.result in ("unavailable", "skipped") else ""),
                     c.reason) for c in k.cases]
        out[k.label] = [(word, detail) for _, _, word, detail in conformance.verdicts(rows)]
    return list(requirements.REQUIREMENTS), out

"""pytest plumbing of the conformance cases: feature skips (failures under MPTCPLAB_STRICT=1),
the `case` fixture (artifacts, evidence on failure), the RFC section as a JUnit property, the
summary table at the end of the run, and `--requirements[=FILE]`: the RFC 8684 requirement
table (cases/requirements.py joined with each case's `@covers(...)` and its result), printed
at the end of the run and written to FILE (docs/conformance.md) when given.

Each case builds its own Lab (fresh namespaces, random id), so cases run side by side under
pytest-xdist (`pytest -n 2 cases/`). Nothing here keeps state across cases but the summary rows,
kept in the pytest config's stash.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))   # `import support` from the cases

from support import (ARTIFACTS_ENV, STRICT_ENV, UNAVAILABLE, Case, kernel_feature, known_counter, probe,
                     rfc_section, strict)

from mptcplab.pytest_hooks import pytest_runtest_call  # noqa: F401  (a pytest hook)
from mptcplab.topo.lifecycle import all_states

KEEP_ENV = "MPTCPLAB_KEEP_ARTIFACTS"     # =1: keep the captures of passing cases too

RFC_PROPERTY = "rfc8684_section"
# Every case's JUnit entry says which kernel ran it (also from xdist workers on other
# machines), under the label `mptcplab cases --kernel` gave it when it did.
KERNEL_PROPERTY, LABEL_PROPERTY, NODEID_PROPERTY = "kernel", "kernel_label", "nodeid"
LABEL_ENV = "MPTCPLAB_KERNEL_LABEL"
COVERS_PROPERTY = "rfc8684_requirements"
_OUTCOME = pytest.StashKey[dict[str, pytest.TestReport]]()
_CASE = pytest.StashKey[Case]()


@dataclass
class Row:
    case: str
    rfc: str
    result: str
    seconds: float
    covers: tuple[str, ...] = ()
    reason: str = ""         # xfail reason (the deviation's evidence) or skip reason


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--requirements", nargs="?", const="-", default=None, metavar="FILE",
                     help="print the RFC 8684 requirement table at the end of the run (and "
                     "write it as Markdown to FILE, e.g. docs/conformance.md)")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "needs(*features): skip (fail under "
                            f"{STRICT_ENV}=1) when a tool, sysctl or MIB counter is missing")
    config.addinivalue_line("markers", "covers(*ids): the RFC 8684 requirements "
                            "(cases/requirements.py) the case checks")
    config.addinivalue_line("markers", "slow: the case waits on kernel timers for a second "
                            "or more (its docstring says which); such cases start first")
    config.pluginmanager.register(Summary(config), "mptcplab-cases-summary")


def artifacts_root(config: pytest.Config) -> Path:
    env = os.environ.get(ARTIFACTS_ENV)
    return Path(env) if env else Path(config.rootpath) / "cases-artifacts"


def _dir_name(item: pytest.Item) -> str:
    return re.sub(r"[^A-Za-z0-9_.=-]+", "-", item.name).strip("-")


# -- feature probes and the RFC property -----------------------------------------------------

def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    from requirements import BY_ID

    release = os.uname().release
    label = os.environ.get(LABEL_ENV, "")
    prefix = _cases_prefix(config)
    for item in items:
        doc = getattr(getattr(item, "function", None), "__doc__", None)
        item.user_properties.append((RFC_PROPERTY, rfc_section(doc)))
        item.user_properties.append((NODEID_PROPERTY, item.nodeid.removeprefix(prefix)))
        item.user_properties.append((KERNEL_PROPERTY, release))
        if label:
            item.user_properties.append((LABEL_PROPERTY, label))
        ids = [i for mark in item.iter_markers("covers") for i in mark.args]
        unknown = [i for i in ids if i not in BY_ID]
        if unknown:
            raise pytest.UsageError(f"{item.nodeid}: @covers names unknown requirement(s) "
                                    f"{', '.join(unknown)} (see cases/requirements.py)")
        if ids:
            item.user_properties.append((COVERS_PROPERTY, " ".join(ids)))
    # Longest first: under pytest-xdist the short cases then fill the gaps instead of one
    # worker finishing a 4 s case alone at the end. (A stable sort: the same order in every
    # worker, as xdist requires.)
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


def _cases_prefix(config: pytest.Config) -> str:
    """"cases/": what node ids start with when pytest runs from the repository root."""
    here = Path(__file__).resolve().parent
    return os.path.relpath(here, config.rootpath).replace(os.sep, "/") + "/"


def pytest_runtest_setup(item: pytest.Item) -> None:
    features = ["root"]
    for mark in item.iter_markers("needs"):
        features.extend(mark.args)
    missing = {f: r for f in dict.fromkeys(features) if (r := probe(f))}
    machine = [r for f, r in missing.items() if not kernel_feature(f)]
    if machine:       # a broken machine first: that is what must be fixed
        pytest.skip("; ".join(machine))
    if missing:
        pytest.skip(f"{UNAVAILABLE}: " + "; ".join(missing.values()))


def _missing_counter(call: pytest.CallInfo) -> str | None:
    """The counter name when the call failed on one the kernel lacks (mptcplab.topo.mib's
    Counters raise KeyError "<node> has no counter '<name>'": a typo never reads as 0)."""
    exc = call.excinfo
    if exc is None or not exc.errisinstance(KeyError):
        return None
    m = re.search(r"has no counter '([A-Za-z0-9_]+)'", str(exc.value))
    if m is None or not known_counter(m.group(1)):
        return None         # no kernel has it: a typo in the case, which stays a failure
    return m.group(1)


def _skip_reason(rep: pytest.TestReport) -> str:
    reason = rep.longrepr[2] if isinstance(rep.longrepr, tuple) else str(rep.longrepr)
    return reason.removeprefix("Skipped: ")


# -- the case fixture --------------------------------------------------------------------------

@pytest.fixture
def case(request: pytest.FixtureRequest) -> Iterator[Case]:
    """The running case: `case.capture(host, iface)`, `case.note(title, text)`."""
    item = request.node
    path = artifacts_root(request.config) / _dir_name(item)
    shutil.rmtree(path, ignore_errors=True)          # a previous run's files of this case
    c = Case(item.name, path)
    item.stash[_CASE] = c
    yield c
    for pcap in c.pcaps:
        pcap.close()
    left = [f"{st.id} ({st.topology})" for st in all_states()
            if st.pid == os.getpid() and not st.detached]
    if left:   # a Lab opened without `with`: the interpreter's exit would remove it, too late
        pytest.fail(f"the case left labs running: {', '.join(left)}; use `with Lab(...)`")
    reports = item.stash.get(_OUTCOME, {})
    kept = any(r.failed or hasattr(r, "wasxfail") for r in reports.values()) \
        or os.environ.get(KEEP_ENV, "") not in ("", "0")
    if not kept:
        shutil.rmtree(path, ignore_errors=True)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    outcome = yield
    rep: pytest.TestReport = outcome.get_result()
    missing = _missing_counter(call)
    if rep.failed and missing and not hasattr(rep, "wasxfail"):
        # the case read a MIB counter this kernel does not have: it cannot judge here
        rep.outcome = "skipped"
        rep.longrepr = (str(item.path), item.location[1] or 0,
                        f"Skipped: {UNAVAILABLE}: this kernel has no MIB counter {missing}")
    if rep.skipped and not hasattr(rep, "wasxfail") and strict() \
            and not _skip_reason(rep).startswith(UNAVAILABLE):
        reason = _skip_reason(rep)
        rep.outcome = "failed"
        rep.longrepr = f"{STRICT_ENV}=1 turns this skip into a failure: {reason}"
    item.stash.setdefault(_OUTCOME, {})[rep.when] = rep
    c = item.stash.get(_CASE, None)
    if c is not None and (rep.failed or hasattr(rep, "wasxfail")) and rep.when == "call":
        evidence = c.evidence()
        if evidence:
            rep.sections.append(("mptcplab evidence", evidence))
        if c.dir.exists():
            rep.sections.append(("mptcplab artifacts", f"kept in {c.dir}"))


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector: pytest.Collector):
    outcome = yield
    rep = outcome.get_result()
    if rep.skipped and strict():
        rep.outcome = "failed"
        rep.longrepr = f"{STRICT_ENV}=1 turns this skip into a failure: {rep.longrepr}"


# -- the summary table ---------------------------------------------------------------------------

def _result(rep: pytest.TestReport) -> str:
    if hasattr(rep, "wasxfail"):
        if rep.skipped:
            return "kernel deviation"
        if rep.passed:          # a non-strict xfail that passed: an intermittent deviation
            return "passed (intermittent deviation not seen)"
        return "FAILED (XPASS: deviation gone?)"
    if rep.failed:
        return "FAILED"
    if rep.skipped:
        reason = _skip_reason(rep)
        if reason.startswith(UNAVAILABLE):
            return reason[:77] + "..." if len(reason) > 80 else reason
        return "skipped: " + (reason if len(reason) <= 60 else reason[:57] + "...")
    return "passed"


class Summary:
    """Collects one row per case from the reports (on the xdist controller too) and prints
    the table at the end of the run."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        here = Path(__file__).resolve().parent
        self.prefix = os.path.relpath(here, config.rootpath).replace(os.sep, "/") + "/"
        self.rows: dict[str, Row] = {}

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if not report.nodeid.startswith(self.prefix):
            return
        name = report.nodeid[len(self.prefix):]
        props = dict(report.user_properties)
        rfc = props.get(RFC_PROPERTY, "")
        row = self.rows.setdefault(report.nodeid, Row(name, rfc, "passed", 0.0))
        row.rfc = row.rfc or rfc
        row.covers = row.covers or tuple(props.get(COVERS_PROPERTY, "").split())
        row.seconds += report.duration
        if report.when == "call" or not report.passed:
            result = _result(report)
            if not (row.result.startswith("FAILED") and result == "passed"):
                row.result = result
                if hasattr(report, "wasxfail"):
                    row.reason = report.wasxfail
                elif report.skipped:
                    longrepr = report.longrepr
                    row.reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)

    def pytest_terminal_summary(self, terminalreporter) -> None:
        if not self.rows:
            return
        from tabulate import tabulate

        rows = sorted(self.rows.values(), key=lambda r: r.case)
        table = tabulate([(r.case, r.rfc and f"§{r.rfc}", r.result, f"{r.seconds:.2f}")
                          for r in rows], headers=("case", "RFC 8684", "result", "seconds"))
        tr = terminalreporter
        tr.section("mptcplab conformance cases")
        tr.write_line(table)
        count = {k: sum(r.result.startswith(k) for r in rows)
                 for k in ("passed", "kernel deviation", "FAILED", "skipped", UNAVAILABLE)}
        tr.write_line(f"{len(rows)} cases on {os.uname().release}: {count['passed']} passed, "
                      f"{count['kernel deviation']} kernel deviations, {count['FAILED']} failed, "
                      f"{count[UNAVAILABLE]} not available on this kernel, {count['skipped']} "
                      f"skipped; artifacts of failures and deviations under "
                      f"{artifacts_root(self.config)}")
        target = self.config.getoption("requirements")
        if target:
            from conformance import render_markdown, render_terminal

            tr.section("RFC 8684 requirements")
            tr.write_line(render_terminal(rows))
            if target != "-":
                Path(target).write_text(render_markdown(rows, kernel=os.uname().release))
                tr.write_line(f"requirement table written to {target}")

"""The kernel x case matrix without a VM: what cases/conftest.py writes into JUnit XML (run by
real pytest, with and without MPTCPLAB_STRICT=1, under xdist), how `mptcplab cases` reads it
back, the merge of files from two workers, kernel specs and images, and the one-line errors of
`mptcplab cases` and `mptcplab vm`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from mptcplab.errors import BadInput, ExitStatus, LabError
from mptcplab.vm import kernels, matrix

ROOT = Path(__file__).resolve().parents[1]
IS_ROOT = os.geteuid() == 0

SAMPLE = '''
import pytest
from support import needs, unavailable

# A counter a newer kernel has and this one lacks (mptcplab.topo.mib_names lists those the lab
# knows; a name in no kernel is a typo, see test_misspells_a_counter).
import mptcplab.topo.mib_names as names
names.MPTCP_COUNTERS = names.MPTCP_COUNTERS | {"NoSuchCounterHere"}

def test_passes():
    """RFC 8684 §3.1."""

@needs("net.mptcp.no_such_sysctl_here")
def test_needs_a_sysctl():
    """RFC 8684 §3.2."""

@needs("MPTcpExtNoSuchCounterHere")
def test_needs_a_counter():
    """RFC 8684 §3.3.1."""

def test_reads_a_counter_the_kernel_lacks():
    """RFC 8684 §3.3.2."""
    from mptcplab.topo.mib import Counters
    Counters({"MPTcpExtMPJoinSynRx": 1}, "server")["MPTcpExtNoSuchCounterHere"]

def test_says_unavailable_itself():
    """RFC 8684 §3.4."""
    unavailable("this kernel has no frobnicator")

@needs("no-such-tool-mptcplab")
def test_needs_a_tool():
    """RFC 8684 §3.5."""

@pytest.mark.xfail(strict=True, reason="the kernel sends 2, the RFC says 1")
def test_deviation():
    """RFC 8684 §3.6."""
    assert 2 == 1

@pytest.mark.xfail(strict=True, reason="was a deviation")
def test_deviation_gone():
    """RFC 8684 §3.7."""

def test_fails():
    """RFC 8684 §3.8."""
    assert 1 == 2, "server MPTcpExtMPJoinSynRx: expected 1, got 0"

def test_misspells_a_counter():
    """RFC 8684 §3.9."""
    from mptcplab.topo.mib import Counters
    Counters({"MPTcpExtMPJoinSynRx": 1}, "server")["MPTcpExtMPJoinSynRxx"]
'''


def _sample_run(tmp_path: Path, *, strict: bool, xdist: bool) -> Path:
    """Run SAMPLE with a copy of the real cases/conftest.py and support.py; its JUnit XML."""
    cases = tmp_path / "cases"
    cases.mkdir()
    for src in (ROOT / "cases").glob("*.py"):      # conftest, support and what they import
        if not src.name.startswith("test_"):
            shutil.copy(src, cases / src.name)
    (cases / "test_sample.py").write_text(textwrap.dedent(SAMPLE))
    xml = tmp_path / "out.xml"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MPTCPLAB_STRICT": "1" if strict else "0",
           "MPTCPLAB_ARTIFACTS": str(tmp_path / "art"), matrix.LABEL_ENV: "sample"}
    cmd = [sys.executable, "-m", "pytest", "cases", "-p", "no:cacheprovider", "-q",
           f"--junitxml={xml}", "--rootdir", str(tmp_path)]
    cmd += ["-n", "2"] if xdist else ["-p", "no:xdist"]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert xml.is_file(), proc.stdout + proc.stderr
    assert proc.returncode == 1, proc.stdout      # test_fails and the XPASS fail
    return xml


@pytest.mark.skipif(not IS_ROOT, reason="the cases' conftest needs root for every case")
@pytest.mark.parametrize("strict", [False, True], ids=["lenient", "strict"])
def test_junit_cells_from_the_real_conftest(tmp_path, strict):
    xml = _sample_run(tmp_path, strict=strict, xdist=strict)
    [run] = matrix.parse_junit(xml)
    assert run.label == "sample" and run.release == os.uname().release
    cells = {c.case: c for c in run.cases}
    assert set(cells) == {f"test_sample.py::{n}" for n in (
        "test_passes", "test_needs_a_sysctl", "test_needs_a_counter",
        "test_says_unavailable_itself", "test_needs_a_tool", "test_deviation",
        "test_deviation_gone", "test_fails", "test_reads_a_counter_the_kernel_lacks",
        "test_misspells_a_counter")}

    def cell(name: str) -> tuple[str, str]:
        c = cells[f"test_sample.py::{name}"]
        return c.result, c.reason

    assert cell("test_passes") == ("pass", "")
    assert cells["test_sample.py::test_passes"].rfc == "3.1"
    # a kernel feature is "not available", with its reason, in strict mode as well
    assert cell("test_needs_a_sysctl") == (
        "unavailable", "this kernel has no sysctl net.mptcp.no_such_sysctl_here")
    assert cell("test_needs_a_counter") == (
        "unavailable", "this kernel has no MIB counter MPTcpExtNoSuchCounterHere")
    assert cell("test_reads_a_counter_the_kernel_lacks") == (
        "unavailable", "this kernel has no MIB counter MPTcpExtNoSuchCounterHere")
    assert cell("test_says_unavailable_itself") == (
        "unavailable", "this kernel has no frobnicator")
    # a missing tool is a broken machine: skipped, a failure under strict mode
    result, reason = cell("test_needs_a_tool")
    assert result == ("fail" if strict else "skipped")
    assert "no-such-tool-mptcplab not installed" in reason
    assert cell("test_deviation") == ("deviation", "the kernel sends 2, the RFC says 1")
    assert cell("test_deviation_gone")[0] == "fail"
    assert "XPASS" in cell("test_deviation_gone")[1]
    result, reason = cell("test_fails")
    assert result == "fail" and "expected 1, got 0" in reason
    # a counter no kernel has is a typo in the case, never "not available"
    result, reason = cell("test_misspells_a_counter")
    assert result == "fail" and "MPTcpExtMPJoinSynRxx" in reason


@pytest.mark.skipif(not IS_ROOT, reason="the cases' conftest needs root for every case")
def test_summary_counts_unavailable_apart(tmp_path):
    """The run's own table says 'not available on this kernel' and counts it apart."""
    xml = _sample_run(tmp_path, strict=True, xdist=False)
    assert xml.is_file()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MPTCPLAB_STRICT": "1",
           "MPTCPLAB_ARTIFACTS": str(tmp_path / "art")}
    out = subprocess.run([sys.executable, "-m", "pytest", "cases", "-p", "no:cacheprovider",
                          "-p", "no:xdist", "-q", "--rootdir", str(tmp_path)], cwd=tmp_path,
                         env=env, capture_output=True, text=True, timeout=300).stdout
    assert "test_sample.py::test_needs_a_sysctl" in out
    assert "4 not available on this kernel" in out
    assert "4 failed" in out        # the tool (strict), the XPASS, the assertion, the typo


def _write(path: Path, run: matrix.KernelResults) -> Path:
    path.write_text(json.dumps(run.as_dict()))
    return path


def test_merge_builds_columns_per_kernel_and_one_column_per_shard(tmp_path):
    a = matrix.KernelResults("6.12", "6.12.117+deb12-amd64", accel="tcg", cases=[
        matrix.CaseResult("test_a.py::test_x", "3.1", "pass", "", 1.0),
        matrix.CaseResult("test_a.py::test_y", "3.2", "unavailable", "this kernel has no z",
                          covers=["3.1-syn-fallback"])])
    b = matrix.KernelResults("host", "6.18.44", accel="native", cases=[
        matrix.CaseResult("test_a.py::test_x", "3.1", "fail", "boom", 2.0)])
    b2 = matrix.KernelResults("host", "6.18.44", accel="native", cases=[
        matrix.CaseResult("test_a.py::test_y", "3.2", "pass", "", 1.0)])
    other = matrix.KernelResults("host", "6.1.0-57-amd64", cases=[
        matrix.CaseResult("test_a.py::test_y", "3.2", "pass")])
    files = [_write(tmp_path / n, r) for n, r in
             (("a.json", a), ("b.json", b), ("b2.json", b2), ("o.json", other))]
    m = matrix.build(matrix.merge(files))
    labels = [k.label for k in m.kernels]
    assert labels == ["6.12", "host", "host (6.1.0-57-amd64)"]
    d = m.as_dict()
    rows = {c["case"]: c for c in d["cases"]}
    assert rows["test_a.py::test_x"]["results"]["host"]["result"] == "fail"
    assert rows["test_a.py::test_y"]["results"]["host"]["result"] == "pass"   # the 2nd shard
    assert rows["test_a.py::test_x"]["results"]["host (6.1.0-57-amd64)"]["result"] == "not run"
    assert m.failed()
    # the requirement table: one column per kernel, judged from that kernel's covering cases
    reqs, verdicts = matrix.requirement_verdicts(m)
    i = [r.id for r in reqs].index("3.1-syn-fallback")
    assert verdicts["6.12"][i] == ("not available", "this kernel has no z")
    assert verdicts["host"][i] == ("pass", "")           # the covers came from the 6.12 file
    assert verdicts["host (6.1.0-57-amd64)"][i] == ("pass", "")
    # the matrix's own JSON merges back to the same matrix
    (tmp_path / "m.json").write_text(json.dumps(d))
    again = matrix.build(matrix.merge([tmp_path / "m.json"])).as_dict()
    assert again["cases"] == d["cases"]


def _cli(*args: str, env: dict | None = None, cwd: Path = ROOT,
         timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mptcplab.cli", *args], cwd=cwd,
                          env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.skipif(not IS_ROOT, reason="runs the conformance cases (namespaces)")
def test_two_local_workers_merge_into_one_matrix(tmp_path):
    """Two workers (as two CI jobs or machines would) run disjoint cases on this kernel at the
    same time; --merge of their files gives one column with every case."""
    first = "test_syn_retries_then_tcp_then_blackhole and 0"
    second = "test_stripped_options_fall_back_with_data_intact and non-syn"
    env = {"MPTCPLAB_STRICT": "1"}
    procs = [subprocess.Popen([sys.executable, "-m", "mptcplab.cli", "cases", "--kernel",
                               "host", "-n", "0", "-k", expr, "--out", str(tmp_path / name),
                               "--json"], cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(ROOT), **env})
             for name, expr in (("w1", first), ("w2", second))]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, out + err
    one = json.loads(outs[0][0])
    assert [c["case"] for c in one["cases"]] == [
        "test_fallback.py::test_syn_retries_then_tcp_then_blackhole[0]"]
    assert one["kernels"][0]["release"] == os.uname().release
    assert (tmp_path / "w1" / "host.xml").is_file() and (tmp_path / "w1" / "host.log").is_file()
    merged = _cli("cases", "--merge", str(tmp_path / "w1" / "host.json"),
                  str(tmp_path / "w2" / "host.xml"), "--json")
    assert merged.returncode == 0, merged.stderr
    m = json.loads(merged.stdout)
    assert [k["label"] for k in m["kernels"]] == ["host"]
    assert {c["case"]: c["results"]["host"]["result"] for c in m["cases"]} == {
        "test_fallback.py::test_syn_retries_then_tcp_then_blackhole[0]": "pass",
        "test_fallback.py::test_stripped_options_fall_back_with_data_intact[non-syn]": "pass"}
    text = _cli("cases", "--merge", str(tmp_path / "w1" / "host.json"),
                str(tmp_path / "w2" / "host.json")).stdout
    assert "test_syn_retries_then_tcp_then_blackhole[0]" in text and "§3.7" in text


# -- kernels ---------------------------------------------------------------------------------

def test_debian_spec_matching():
    assert kernels._matches("6.1", "6.1.0-57")
    assert not kernels._matches("6.1", "6.12.117+deb12")
    assert kernels._matches("6.12", "6.12.117+deb12")
    assert kernels._matches("6.12.117+deb12", "6.12.117+deb12")
    assert sorted(["6.1.0-9", "6.1.0-57", "6.1.0-10"], key=kernels._natural)[-1] == "6.1.0-57"


def test_two_images_of_one_release_are_refused_before_anything_runs(tmp_path):
    """Two kernel images of the same release (a patched build and the stock one) would share
    a matrix column and overwrite each other's files: refused at once, nothing booted."""
    images = [k.image for k in kernels.cached()]
    if not images:
        pytest.skip("no kernel in the lab's cache (mptcplab vm fetch 6.12)")
    copy = tmp_path / "bzImage"
    copy.symlink_to(images[0])
    opts = matrix.RunOptions(out=tmp_path / "out")
    with pytest.raises(LabError, match="would share the column") as exc:
        matrix.run_matrix([str(images[0]), str(copy)], opts, log=lambda _: None)
    assert exc.value.status == ExitStatus.USAGE and not (tmp_path / "out").exists()


def test_image_release_agrees_with_file(tmp_path):
    """The release read from a bzImage's setup header is what file(1) says it is."""
    images = [k.image for k in kernels.cached()]
    if not images or shutil.which("file") is None:
        pytest.skip("no kernel in the lab's cache (mptcplab vm fetch 6.12) or no file(1)")
    for image in images:
        said = subprocess.run(["file", "-b", str(image)], capture_output=True,
                              text=True).stdout
        assert f"version {kernels.image_release(image)} " in said
    not_kernel = tmp_path / "vmlinux"
    not_kernel.write_bytes(b"\x7fELF" + bytes(5000))
    with pytest.raises(BadInput, match="ELF vmlinux"):
        kernels.image_release(not_kernel)


# -- what a newcomer gets wrong --------------------------------------------------------------

def test_cases_usage_and_bad_files(tmp_path):
    r = _cli("cases")
    assert r.returncode == 2 and r.stderr.startswith("mptcplab: error: give --kernel")
    r = _cli("cases", "--merge", str(tmp_path / "nope.json"))
    assert r.returncode == 3 and r.stderr.count("\n") == 1 and "no such file" in r.stderr
    junk = tmp_path / "junk.json"
    junk.write_text('{"a": 1}')
    r = _cli("cases", "--merge", str(junk))
    assert r.returncode == 3 and "not a results file" in r.stderr
    bad_xml = tmp_path / "bad.xml"
    bad_xml.write_text("<testsuites><testcase")
    r = _cli("cases", "--merge", str(bad_xml))
    assert r.returncode == 3 and "not a JUnit XML file" in r.stderr
    assert "Traceback" not in r.stderr
    # files that look like results but are not whole: one line each, never a traceback
    for name, text in [
            ("no-label.json", '{"format": "mptcplab-cases/1"}'),
            ("odd-case.json", '{"format": "mptcplab-cases/1", "label": "x", "release": "1", '
                              '"cases": [{"case": "a", "result": "weird"}]}'),
            ("odd-time.xml", '<testsuites><testsuite><testcase classname="a" name="b" '
                             'time="abc"/></testsuite></testsuites>')]:
        (tmp_path / name).write_text(text)
        r = _cli("cases", "--merge", str(tmp_path / name))
        assert r.returncode == 3 and r.stderr.count("\n") == 1, r.stderr
        assert "not a results file" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.skipif(not IS_ROOT, reason="vm run checks root first")
def test_vm_run_errors(tmp_path):
    r = _cli("vm", "run", "--kernel", "/etc/passwd", "--", "true")
    if r.returncode == 5:
        pytest.skip(f"VM tools missing here: {r.stderr.strip()}")
    assert r.returncode == 3 and "/etc/passwd is not an x86 kernel image" in r.stderr
    r = _cli("vm", "run", "--kernel", "nonsense", "--", "true")
    assert r.returncode == 3 and "give `host`, a kernel image path" in r.stderr
    r = _cli("vm", "run", "--kernel", "6.12")
    assert r.returncode == 2 and "give the command to run after --" in r.stderr
    r = _cli("vm", "run", "--kernel", "99.1", "--", "true")
    assert r.returncode == 5 and "no Debian kernel package linux-image-99.1*-amd64" in r.stderr
    r = _cli("vm", "run", "--kernel", "6.12", "--memory", "lots", "--", "true")
    assert r.returncode == 2 and "not a memory size" in r.stderr
    # the guest runs as root: this machine's own directories are never shared writable
    r = _cli("vm", "run", "--kernel", "6.12", "--", "true", cwd=Path("/"))
    assert r.returncode == 2 and "refusing to let the guest write /" in r.stderr
    r = _cli("vm", "run", "--kernel", "6.12", "--rwdir", "/etc", "--", "true")
    assert r.returncode == 2 and "refusing to let the guest write /etc" in r.stderr
    # without virtme-ng on PATH: one line naming what to install
    path = ":".join(p for p in os.environ["PATH"].split(":")
                    if not (Path(p) / "vng").exists())
    r = _cli("vm", "run", "--kernel", "6.12", "--", "true", env={"PATH": path})
    assert r.returncode == 5
    assert r.stderr == "mptcplab: error: vng not found: install virtme-ng from PyPI (pip " \
                       "install virtme-ng) (tools/setup.sh does)\n"


@pytest.mark.skipif(not IS_ROOT, reason="runs the conformance cases (namespaces)")
def test_xdist_workers_each_run_every_case_into_its_own_column(tmp_path):
    """pytest-xdist's own workers, as docs/vm.md spreads the matrix over machines: with
    `--dist each` every worker runs every case; each JUnit entry carries the worker's kernel
    and label, so one file splits into one column per worker. Here two local workers stand
    in for two ssh workers (`--tx ssh=root@box//python=python3//chdir=...`)."""
    xml = tmp_path / "each.xml"
    cmd = [sys.executable, "-m", "pytest", "cases", "-p", "no:cacheprovider", "-q",
           "-k", "test_syn_retries_then_tcp_then_blackhole and 0", f"--junitxml={xml}",
           "--dist", "each"]
    for box in ("a", "b"):     # one checkout here: each worker its own artifacts directory
        cmd += ["--tx", f"popen//id={box}//env:{matrix.LABEL_ENV}=box-{box}"
                        f"//env:MPTCPLAB_ARTIFACTS={tmp_path / box}"]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300,
                       env={**os.environ, "PYTHONPATH": str(ROOT), "MPTCPLAB_STRICT": "1"})
    assert r.returncode == 0, r.stdout + r.stderr
    m = json.loads(_cli("cases", "--merge", str(xml), "--json").stdout)
    assert sorted(k["label"] for k in m["kernels"]) == ["box-a", "box-b"]
    assert all(k["release"] == os.uname().release for k in m["kernels"])
    [row] = m["cases"]
    assert {label: cell["result"] for label, cell in row["results"].items()} == {
        "box-a": "pass", "box-b": "pass"}

"""One real VM: Debian's 6.12 kernel (fetched into the lab's cache if it is not there) boots
under virtme-ng and runs two conformance cases, beside the same two on this machine's kernel;
and VMs are stopped and their files removed on Ctrl-C and when an image does not boot.

The full matrix (every case on 6.1, 6.12 and the host) is a benchmark:
benchmarks/bench_vm.py. Tools come from tools/setup.sh (qemu-system-x86, busybox-static,
kmod, udev from Debian; virtme-ng from PyPI); without them these tests skip, or fail under
MPTCPLAB_STRICT=1.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from mptcplab.errors import LabError
from mptcplab.vm import machine

ROOT = Path(__file__).resolve().parents[1]
SYN_RETRIES = "test_fallback.py::test_syn_retries_then_tcp_then_blackhole[0]"
ADD_ADDR = "test_add_addr.py::test_add_addr_hmac_and_echo[4]"


@pytest.fixture(scope="module", autouse=True)
def vm_tools():
    try:
        machine.check_tools()
    except LabError as exc:
        if os.environ.get("MPTCPLAB_STRICT", "") not in ("", "0"):
            pytest.fail(f"MPTCPLAB_STRICT=1 and the VM tests cannot run: {exc}")
        pytest.skip(str(exc))


def _ours(marker: str) -> list[int]:
    """Processes whose command line holds `marker` (a path only this test uses)."""
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if marker.encode() in (d / "cmdline").read_bytes():
                    pids.append(int(d.name))
            except OSError:
                continue
    return pids


def _shares(pid: int) -> list[str]:
    """The VM share directories process `pid` made and left (their names carry its pid, so
    VMs of other tests running alongside do not count)."""
    return [p.name for p in Path("/tmp").glob(f"mptcplab-vm-{pid}-*")]


def _run(argv: list[str], timeout: float) -> tuple[subprocess.CompletedProcess, int]:
    """subprocess.run, with the child's pid."""
    proc = subprocess.Popen(argv, cwd=ROOT, env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    return subprocess.CompletedProcess(argv, proc.returncode, out, err), proc.pid


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


@pytest.mark.slow     # a VM: started first, so the rest of the run overlaps it
def test_two_cases_on_debian_6_12_beside_the_host(tmp_path):
    out = tmp_path / "results"
    r, pid = _run([sys.executable, "-m", "mptcplab.cli", "cases", "--kernel", "host",
                   "--kernel", "6.12", "-j", "2", "-n", "0", "--out", str(out), "--json",
                   "-k",
                   "test_syn_retries_then_tcp_then_blackhole and 0 "
                   "or test_add_addr_hmac_and_echo and 4"], timeout=1200)
    assert r.returncode == 0, r.stdout + r.stderr
    m = json.loads(r.stdout)
    host, vm = m["kernels"]
    assert (host["label"], host["release"], host["accel"]) == ("host", os.uname().release,
                                                               "native")
    assert vm["label"] == "6.12" and vm["release"].startswith("6.12.")
    assert vm["source"].startswith("Debian package linux-image-6.12.")
    assert vm["accel"] in ("kvm", "tcg") and vm["boot_seconds"] > 0
    # which accelerator, and why, is said
    assert ("under TCG emulation" in r.stderr) == (vm["accel"] == "tcg")
    cells = {c["case"]: c for c in m["cases"]}
    assert set(cells) == {SYN_RETRIES, ADD_ADDR}
    assert cells[ADD_ADDR]["results"]["host"]["result"] == "pass"
    assert cells[ADD_ADDR]["results"]["6.12"]["result"] == "pass"
    assert cells[ADD_ADDR]["rfc"] == "3.4.1"
    assert cells[SYN_RETRIES]["results"]["host"]["result"] == "pass"
    # 6.12 has no net.mptcp.syn_retrans_before_tcp_fallback: not available, not a failure
    assert cells[SYN_RETRIES]["results"]["6.12"] == {
        "result": "unavailable", "seconds": cells[SYN_RETRIES]["results"]["6.12"]["seconds"],
        "reason": "this kernel has no sysctl net.mptcp.syn_retrans_before_tcp_fallback"}
    # the JUnit XML the guest wrote says which kernel ran each case (uname in the guest)
    suite = ET.parse(out / "6.12.xml").getroot()
    kernels = {p.get("value") for p in suite.iter("property") if p.get("name") == "kernel"}
    assert kernels == {vm["release"]}
    assert json.loads((out / "6.12.json").read_text())["counts"]["unavailable"] == 1
    # the text matrix from the two files, as a CI job merging them would print it
    text = subprocess.run([sys.executable, "-m", "mptcplab.cli", "cases", "--merge",
                           str(out / "host.json"), str(out / "6.12.xml")], cwd=ROOT,
                          env=_env(), capture_output=True, text=True, timeout=120).stdout
    assert "n/a [1]" in text and "[1] 6.12: this kernel has no sysctl " \
        "net.mptcp.syn_retrans_before_tcp_fallback" in text
    # the requirement table gains a column per kernel (the cases' @covers travel in the files)
    req = subprocess.run([sys.executable, "-m", "mptcplab.cli", "cases", "--merge",
                          str(out / "host.json"), str(out / "6.12.xml"), "--requirements",
                          str(out / "req.md"), "--json"], cwd=ROOT, env=_env(),
                         capture_output=True, text=True, timeout=120)
    assert req.returncode == 0, req.stderr
    by_id = {r["id"]: r["results"] for r in json.loads(req.stdout)["requirements"]}
    assert by_id["3.1-syn-fallback"]["host"]["result"] == "pass"
    assert by_id["3.1-syn-fallback"]["6.12"] == {
        "result": "not available",
        "detail": "this kernel has no sysctl net.mptcp.syn_retrans_before_tcp_fallback"}
    assert by_id["3.4-add-addr-hmac"]["host"]["result"] == "pass"
    assert by_id["3.4-add-addr-hmac"]["6.12"]["result"] == "pass"
    assert "| 3.1-syn-fallback | 3.1 | MAY |" in (out / "req.md").read_text()
    # nothing left behind
    assert _ours(str(out)) == []
    assert _shares(pid) == []


@pytest.mark.slow     # a VM: started first, so the rest of the run overlaps it
def test_ctrl_c_stops_the_vm_and_removes_its_files(tmp_path):
    marker = tmp_path / "marker"
    marker.mkdir()
    proc = subprocess.Popen([sys.executable, "-m", "mptcplab.cli", "vm", "run", "--kernel",
                             "6.12", "--rwdir", str(marker), "--", "sleep", "600"],
                            cwd=ROOT, env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not any("qemu" in Path(f"/proc/{p}/cmdline").read_bytes().decode(errors="replace")
                  for p in _ours(str(marker)) if Path(f"/proc/{p}").exists()):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "qemu never started"
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert err.splitlines()[-1] == "mptcplab: interrupted"
    deadline = time.monotonic() + 20
    while _ours(str(marker)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _ours(str(marker)) == [], "the VM outlived Ctrl-C"
    assert _shares(proc.pid) == []


@pytest.mark.slow     # a VM: started first, so the rest of the run overlaps it
def test_an_image_that_does_not_boot_is_one_line(tmp_path):
    from mptcplab.vm import resolve

    image = resolve("6.12").image
    assert image is not None
    broken = tmp_path / "bzImage"
    broken.write_bytes(image.read_bytes()[:1_000_000])     # header intact, kernel cut short
    r, pid = _run([sys.executable, "-m", "mptcplab.cli", "vm", "run", "--kernel",
                   str(broken), "--timeout", "300", "--", "true"], timeout=400)
    assert r.returncode == 1
    assert r.stderr.splitlines()[-1].startswith("mptcplab: error: ")
    assert "did not boot to the command" in r.stderr.splitlines()[-1]
    assert "Traceback" not in r.stderr
    assert _ours(str(broken)) == [] and _shares(pid) == []


NETEM_PROBE = r'''
import socket, sys, time
from mptcplab.topo import Lab, Topology
topo = Topology("netem-probe")
a, b = topo.host("a"), topo.host("b")
topo.link(a, b, v4="10.0.1.0/24", delay="100ms")
with Lab(topo) as lab:
    def rtt():
        best = 9.0
        for _ in range(3):
            s = socket.socket()
            t = time.monotonic()
            try:
                s.connect(("10.0.1.2", 9))     # nothing listens: the RST comes back after one RTT
            except ConnectionRefusedError:
                best = min(best, time.monotonic() - t)
            finally:
                s.close()
        return best
    print(f"rtt {lab['a'].call(rtt) * 1000:.0f} ms")
'''


@pytest.mark.skipif(os.environ.get("MPTCPLAB_VM_TESTS") != "all",
                    reason="a second VM boot: set MPTCPLAB_VM_TESTS=all")
def test_netem_delay_works_in_the_vm_and_is_refused_here(tmp_path):
    """Debian's kernel has sch_netem as a module: a 100 ms delay on both ends of a link gives
    a ~200 ms round trip inside the VM; on a kernel without netem the same lab is refused."""
    r = subprocess.run([sys.executable, "-m", "mptcplab.cli", "vm", "run", "--kernel", "6.12",
                        "--", sys.executable, "-c", NETEM_PROBE], cwd=ROOT, env=_env(),
                       capture_output=True, text=True, timeout=1200)
    assert r.returncode == 0, r.stdout + r.stderr
    rtt = int(r.stdout.split("rtt ")[1].split()[0])
    assert 190 <= rtt < 1000, r.stdout
    from mptcplab.topo import netem_available

    if not netem_available():
        here = subprocess.run([sys.executable, "-c", NETEM_PROBE], cwd=ROOT, env=_env(),
                              capture_output=True, text=True, timeout=120)
        assert here.returncode != 0 and "needs the netem qdisc" in here.stderr

"""The one tcpdump wrapper (capture.LiveCapture), as the lab and the sniffer use it: it dies
with its parent, its filter can never become options, and nothing it started outlives a lab."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from topo_fixtures import needs_root, needs_tcpdump

from mptcplab import namespaces
from mptcplab.errors import BadInput, ExitStatus, LabError
from mptcplab.topo import CorruptPayload, Lab, Topology, catalogue

pytestmark = [needs_root, needs_tcpdump]


def tcpdumps_in(netns: str) -> list[int]:
    pids = namespaces.pids_in([netns])
    out = []
    for pid in pids:
        try:
            with open(f"/proc/{pid}/comm") as f:
                if f.read().strip() == "tcpdump":
                    out.append(pid)
        except OSError:
            pass
    return out


def wait_until(predicate, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def test_a_sigkilled_sniffer_takes_its_tcpdump_with_it():
    """SIGKILL cannot be caught, so the sniffer cannot stop tcpdump itself: the kernel does
    (PR_SET_PDEATHSIG), and the lab's namespace is then free to go."""
    with Lab(catalogue.get("two-paths")) as lab:
        client = lab["client"]
        proc = subprocess.Popen([sys.executable, "-m", "mptcplab.cli", "sniff", "any", "-n",
                                 client.netns], stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)
        try:
            assert "capturing on any" in proc.stderr.readline()
            assert len(tcpdumps_in(client.netns)) == 1
            proc.kill()
            proc.wait(10)
            assert wait_until(lambda: not tcpdumps_in(client.netns), 5), \
                "tcpdump outlived the sniffer"
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def test_lab_teardown_stops_processes_it_did_not_start():
    """A shell someone opened in a node (here: a plain `ip netns exec ... sleep`) would keep
    the namespace alive, unnamed and out of `clean`'s sight, after the lab unmounts it."""
    with Lab(catalogue.get("two-paths")) as lab:
        stranger = subprocess.Popen(["ip", "netns", "exec", lab["server"].netns, "sleep", "600"])
        assert wait_until(lambda: stranger.pid in namespaces.pids_in([lab["server"].netns]))
    assert stranger.wait(10) == -signal.SIGTERM


def test_a_filter_is_never_read_as_tcpdump_options(tmp_path: Path):
    marker = tmp_path / "ran"
    script = tmp_path / "script.sh"
    script.write_text(f"#!/bin/sh\ntouch {marker}\n")
    script.chmod(0o755)
    with Lab(catalogue.get("two-paths")) as lab:
        with pytest.raises(LabError) as info:
            lab["client"].capture("any", tmp_path / "x.pcap",
                                  filter=f"-G 1 -z {script} tcp")
        assert info.value.status == ExitStatus.USAGE
        assert str(info.value).startswith("bad filter '-G 1 -z")
        assert tcpdumps_in(lab["client"].netns) == []    # nothing left to rotate a file later
    assert not marker.exists()


@pytest.mark.parametrize("box, words", [
    (CorruptPayload(dport="5000 drop"), "dport='5000 drop' must be a whole number"),  # type: ignore[arg-type]
    (CorruptPayload(nth=0), "nth=0 must be a whole number from 1"),
    (CorruptPayload(value=True), "value=True must be a whole number"),              # type: ignore[arg-type]
])
def test_values_that_reach_a_ruleset_are_checked_first(box, words):
    topo = Topology("t")
    topo.host("a")
    topo.host("b")
    topo.link("a", "b", v4="10.0.1.0/24")
    topo.middlebox("a", box)
    with pytest.raises(BadInput, match=words.replace("(", r"\(").replace(")", r"\)")):
        topo.check()


def test_a_bad_interface_name_is_refused_before_tcpdump_runs(tmp_path: Path):
    with Lab(catalogue.get("two-paths")) as lab:
        for iface, why in (("-w/etc/x", "bad interface name"), ("eth9", "no interface")):
            with pytest.raises(BadInput, match=why):
                lab["client"].capture(iface, tmp_path / "x.pcap")
        assert tcpdumps_in(lab["client"].netns) == []
    assert not os.path.exists("/etc/x")

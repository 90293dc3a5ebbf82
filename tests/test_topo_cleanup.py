"""Nothing is left behind: Ctrl-C while building or using a lab, SIGTERM, and SIGKILL followed
by `mptcplab clean` (root). Each case runs the lab in a child process, stops it, and checks the
lab's namespaces, processes and state files are gone and the root namespace is unchanged."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import sys

import pytest
from topo_fixtures import (
    RootState,
    child,
    lab_ids_of_pid,
    leaks_of,
    namespaces_of,
    needs_root,
    prefixed_root_links,
    wait_line,
)

from mptcplab.topo.lifecycle import LabState, all_states

pytestmark = needs_root

# The child builds a lab, starts `sleep` inside (so a process must be killed for the namespace
# to go away), says "ready" with the lab id and the sleep's pid, and waits.
LAB_CHILD = """
import sys, time
from mptcplab.topo import Lab, catalogue
import mptcplab.topo.lab as L

if sys.argv[1] == "slow-build":
    configure = L.Lab._configure
    def slow(self, *args):
        print("building", self.id, flush=True)
        time.sleep(30)
        return configure(self, *args)
    L.Lab._configure = slow

with Lab(catalogue.get(sys.argv[2])) as lab:
    proc = lab["server"].spawn(["sleep", "600"])
    print("ready", lab.id, proc.pid, flush=True)
    time.sleep(600)
"""


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def assert_gone(lab_id: str, pids: list[int], before: RootState) -> None:
    assert namespaces_of({lab_id}) == []
    assert LabState.load(lab_id) is None
    assert [p for p in pids if alive(p)] == []
    assert prefixed_root_links() == []
    assert before.differences(RootState()) == []


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_interrupt_while_using_a_lab_removes_it(sig):
    before = RootState()
    proc = child(LAB_CHILD, "use", "wifi-cellular")
    _, lab_id, sleep_pid = wait_line(proc, "ready").split()
    assert len(namespaces_of({lab_id})) == 3 and alive(int(sleep_pid))
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=30)
    if sig == signal.SIGINT:
        assert proc.returncode != 0 and "KeyboardInterrupt" in err
    else:
        # a script's `with Lab` ends like a program killed by that signal: 128 + signal,
        # one line, no traceback
        assert proc.returncode == 128 + sig
        name = signal.Signals(sig).name
        assert err == f"mptcplab: terminated by {name}; lab {lab_id} (wifi-cellular) removed\n"
    assert_gone(lab_id, [int(sleep_pid)], before)


def test_ctrl_c_in_the_middle_of_building_removes_what_was_built():
    before = RootState()
    proc = child(LAB_CHILD, "slow-build", "two-paths")
    _, lab_id = wait_line(proc, "building").split()
    assert len(namespaces_of({lab_id})) == 2          # namespaces exist, links half-done
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert "KeyboardInterrupt" in err
    assert_gone(lab_id, [], before)


def test_repeated_ctrl_c_at_random_moments_never_leaks():
    """Up/down in a loop, interrupted after varying delays: wherever the signal lands (build,
    use, teardown), the lab is gone when the process has exited."""
    code = ("from mptcplab.topo import Lab, catalogue\n"
            "t = catalogue.get('two-paths')\n"
            "print('looping', flush=True)\n"
            "while True:\n"
            "    with Lab(t) as lab:\n"
            "        lab['client'].spawn(['sleep', '600'])\n")
    before = RootState()
    for delay in (0.05, 0.13, 0.21, 0.34, 0.55):
        proc = child(code)
        wait_line(proc, "looping")
        try:
            proc.wait(delay)
        except subprocess.TimeoutExpired:
            pass
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=30)
        assert proc.returncode != 0            # it was looping, not finished
        assert leaks_of(proc.pid) == []
        assert lab_ids_of_pid(proc.pid) == set()
    assert prefixed_root_links() == []
    assert before.differences(RootState()) == []


def test_sigkill_leaves_a_lab_that_clean_removes():
    before = RootState()
    proc = child(LAB_CHILD, "use", "client-router-server")
    _, lab_id, sleep_pid = wait_line(proc, "ready").split()
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)   # not communicate(): the orphaned sleep still holds the child's pipes
    # SIGKILL cannot be caught: the lab and its process are still there...
    assert len(namespaces_of({lab_id})) == 3 and alive(int(sleep_pid))
    state = LabState.load(lab_id)
    assert state is not None and not state.owner_alive
    # ...until `mptcplab clean`, which removes them and nothing else. The suite names the lab:
    # a plain `clean` would also remove what other people's crashed labs left on this machine.
    others = {s.id for s in all_states() if s.id != lab_id}
    res = subprocess.run([sys.executable, "-m", "mptcplab.cli", "clean", lab_id],
                         capture_output=True, text=True, timeout=60, check=False)
    assert res.returncode == 0, res.stderr
    assert f"removed namespace mptl-{lab_id}-router" in res.stdout
    assert_gone(lab_id, [int(sleep_pid)], before)
    assert others <= {s.id for s in all_states()} | _ended(others)


def _ended(ids: set[str]) -> set[str]:
    """Labs among `ids` whose own process ended them meanwhile (state file gone with them)."""
    return {i for i in ids if LabState.load(i) is None and not namespaces_of({i})}


def test_clean_keeps_labs_of_live_processes_and_topo_up_labs():
    proc = child(LAB_CHILD, "use", "two-paths")
    _, live_id, _ = wait_line(proc, "ready").split()
    up = subprocess.run([sys.executable, "-m", "mptcplab.cli", "topo", "up", "two-paths",
                         "--json"], capture_output=True, text=True, timeout=60, check=False)
    assert up.returncode == 0, up.stderr
    import json

    up_id = json.loads(up.stdout)["id"]
    try:
        res = subprocess.run([sys.executable, "-m", "mptcplab.cli", "clean", live_id, up_id],
                             capture_output=True, text=True, timeout=60, check=False)
        assert res.returncode == 0
        assert "kept 4 namespace(s)" in res.stdout
        assert len(namespaces_of({live_id})) == 2 and len(namespaces_of({up_id})) == 2
    finally:
        down = subprocess.run([sys.executable, "-m", "mptcplab.cli", "topo", "down", up_id],
                              capture_output=True, text=True, timeout=60, check=False)
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=30)
    assert down.returncode == 0 and f"lab {up_id} (two-paths) is down" in down.stdout
    assert namespaces_of({live_id, up_id}) == []


def test_clean_never_touches_namespaces_without_the_prefix():
    name = f"other-{os.getpid()}"
    from mptcplab import namespaces as ns
    from mptcplab.topo.lifecycle import remove_namespaces
    from mptcplab.topo.naming import lab_namespaces

    fd, _ = ns.create(name)
    try:
        os.close(fd)
        assert name not in lab_namespaces()          # what clean considers at all
        assert remove_namespaces([name]) == []       # what it would remove if asked
        res = subprocess.run([sys.executable, "-m", "mptcplab.cli", "clean", "--all", name],
                             capture_output=True, text=True, timeout=60, check=False)
        assert res.returncode == 3 and f"no lab {name}" in res.stderr
        assert os.path.exists(f"/run/netns/{name}")
    finally:
        ns.remove(name)

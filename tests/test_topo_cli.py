"""`mptcplab topo up/down/list/show` and `mptcplab clean` as a user runs them (root)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from topo_fixtures import namespaces_of, needs_root, root_guard  # noqa: F401

from mptcplab.errors import ExitStatus

pytestmark = [needs_root, pytest.mark.usefixtures("root_guard")]


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mptcplab.cli", *args], capture_output=True,
                          text=True, timeout=60, check=False)


def test_up_leaves_a_usable_lab_that_down_removes():
    up = cli("topo", "up", "four-paths", "--json")
    assert up.returncode == 0, up.stderr
    lab = json.loads(up.stdout)
    try:
        assert lab["topology"] == "four-paths"
        netns = {n["node"]: n["netns"] for n in lab["nodes"]}
        assert sorted(namespaces_of({lab["id"]})) == sorted(netns.values())
        # the lab outlives the command: a plain `ip netns exec` reaches the other side
        route = subprocess.run(["ip", "netns", "exec", netns["ns2"], "ip", "route", "get",
                                "10.0.3.1", "from", "10.0.3.2"], capture_output=True,
                               text=True, check=True)
        assert "dev ns2eth3" in route.stdout
        listed = json.loads(cli("topo", "list", "--json").stdout)
        assert {"id": lab["id"], "topology": "four-paths", "state": "up"}.items() <= \
            next(lb for lb in listed["labs"] if lb["id"] == lab["id"]).items()
    finally:
        down = cli("topo", "down", lab["id"])
    assert down.returncode == 0
    assert down.stdout == f"lab {lab['id']} (four-paths) is down\n"
    assert namespaces_of({lab["id"]}) == []


def test_down_by_topology_name_only_when_one_lab_matches(tmp_path):
    # A topology file of the test's own: no other lab on the machine (another user's, another
    # xdist worker's) can be of this topology, so `down NAME` can only ever reach ours.
    name = f"mine-{os.getpid()}"
    topo_file = tmp_path / f"{name.replace('-', '_')}.py"
    topo_file.write_text("from mptcplab.topo import catalogue\n"
                         "def build():\n"
                         "    return catalogue.get('client-router-server')\n")
    ids = [json.loads(cli("topo", "up", str(topo_file), "--json").stdout)["id"]
           for _ in range(2)]
    try:
        refused = cli("topo", "down", name)
        assert refused.returncode == ExitStatus.BAD_INPUT
        assert refused.stderr.startswith(f"mptcplab: error: 2 labs of {name} are up (")
        assert "name one by its id" in refused.stderr and refused.stderr.count("\n") == 1
        assert all(len(namespaces_of({i})) == 3 for i in ids)     # nothing was removed
        listed = json.loads(cli("topo", "list", "--json").stdout)["labs"]
        owners = {lb["id"]: lb["owner"] for lb in listed}
        assert owners[ids[0]] and owners[ids[0]] == owners[ids[1]]
        first = cli("topo", "down", ids[0])
        assert first.returncode == 0
        assert namespaces_of({ids[0]}) == [] and len(namespaces_of({ids[1]})) == 3
        down = cli("topo", "down", name)            # now only one matches
        assert down.returncode == 0 and ids[1] in down.stdout
    finally:
        for lab_id in ids:
            if namespaces_of({lab_id}):
                cli("topo", "down", lab_id)
    again = cli("topo", "down", ids[1])
    assert again.returncode == ExitStatus.BAD_INPUT
    assert again.stderr == f"mptcplab: error: no lab {ids[1]!r} is up (see `mptcplab topo list`)\n"


def test_bad_topology_file_is_a_one_line_error_and_creates_nothing(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("from mptcplab.topo import Topology\n"
                   "def build():\n"
                   "    t = Topology('bad')\n"
                   "    t.host('client')\n"
                   "    t.link('client', 'server', v4='10.0.1.0/24')\n"
                   "    return t\n")
    res = cli("topo", "up", str(bad))
    assert res.returncode == ExitStatus.BAD_INPUT
    assert res.stderr == "mptcplab: error: unknown host 'server' (declared: client)\n"
    dup = tmp_path / "dup.py"
    dup.write_text("from mptcplab.topo import Topology\n"
                   "def build():\n"
                   "    t = Topology('dup')\n"
                   "    t.host('a'); t.host('b')\n"
                   "    t.link('a', 'b', v4='10.0.1.0/24')\n"
                   "    t.link('a', 'b', v4='10.0.1.0/24')\n"
                   "    return t\n")
    res = cli("topo", "up", str(dup))
    assert res.returncode == ExitStatus.BAD_INPUT
    assert res.stderr == ("mptcplab: error: duplicate address 10.0.1.1 (a eth0 and a eth1)\n")


def test_clean_and_up_refuse_non_root_with_one_line():
    # imports first: as nobody, Python can no longer read a stdlib under /root
    code = ("import os, sys, locale, gettext, json, ast, tabulate\n"
            "from mptcplab.cli import main, build_parser\n"
            "import mptcplab.topo.lab, mptcplab.topo.catalogue\n"
            "build_parser().parse_args(['clean'])\n"
            "os.setresuid(65534, 65534, 65534)\n"
            "sys.exit(main(sys.argv[1:]))\n")
    for args in (["clean"], ["topo", "up", "two-paths"]):
        res = subprocess.run([sys.executable, "-c", code, *args], capture_output=True,
                             text=True, timeout=60, check=False)
        assert res.returncode == ExitStatus.NOT_ROOT
        assert res.stderr.startswith("mptcplab: error: ") and res.stderr.count("\n") == 1
        assert "needs root" in res.stderr

"""`mptcplab topo up/down/list/show` and `mptcplab clean` as a user runs them (root)."""

from __future__ import annotations

import json
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


def test_down_by_topology_name_and_errors():
    up = cli("topo", "up", "client-router-server", "--json")
    lab_id = json.loads(up.stdout)["id"]
    down = cli("topo", "down", "client-router-server")
    assert down.returncode == 0 and lab_id in down.stdout
    again = cli("topo", "down", lab_id)
    assert again.returncode == ExitStatus.BAD_INPUT
    assert again.stderr == f"mptcplab: error: no lab {lab_id!r} is up (see `mptcplab topo list`)\n"


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

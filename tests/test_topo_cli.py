"""`mptcplab topo up/down/list/show` and `mptcplab clean` as a user runs them (root)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest
from topo_fixtures import DROP_CAPS, namespaces_of, needs_root, root_guard  # noqa: F401

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
    # Without capabilities (uid 0 kept, so the checkout is readable wherever it lives).
    code = ("import sys\n" + DROP_CAPS + "from mptcplab.cli import main\n"
            "sys.exit(main(sys.argv[1:]))\n")
    for args in (["clean"], ["topo", "up", "two-paths"], ["exec", "client", "true"]):
        res = subprocess.run([sys.executable, "-c", code, *args], capture_output=True,
                             text=True, timeout=60, check=False)
        assert res.returncode == ExitStatus.NOT_ROOT
        assert res.stderr.startswith("mptcplab: error: ") and res.stderr.count("\n") == 1
        assert "needs root" in res.stderr


@pytest.mark.parametrize("setting, message", [
    ("checksum=maybe", "checksum=maybe: say true or false (yes/no, on/off, 1/0)"),
    ("loss=True", "loss=True: loss takes a number"),
    ("nope=1", "two-paths has no option 'nope' (options: rate (str or none), loss (float), "
               "checksum (bool), mtu (int or none))"),
    ("rate=35gbit", "rate '35gbit' is more than tbf can shape here (34.4 Gbit/s, 2^32-1 "
                    "bytes/s); leave rate unset for an unshaped link"),
    ("mtu=1000", "link client-server: mtu 1000 is below the 1280 bytes IPv6 needs (RFC 8200), "
                 "and this link has IPv6 addresses: use an MTU of 1280 or more"),
])
def test_bad_settings_are_one_line_errors_before_anything_is_built(setting, message):
    for action in ("show", "up"):
        res = cli("topo", action, "two-paths", "--set", setting)
        assert res.returncode == ExitStatus.BAD_INPUT, res.stderr
        assert res.stderr == f"mptcplab: error: {message}\n"


def test_show_reports_the_options_and_middleboxes_it_was_given():
    res = cli("topo", "show", "two-paths", "--set", "rate=10mbit", "--set", "checksum=yes",
              "--middlebox", "client:strip:syn-ack")
    assert res.returncode == 0, res.stderr
    assert "options (--set NAME=VALUE): rate=10mbit, loss=0.0, checksum=True, mtu=none" \
        in res.stdout
    assert res.stdout.count("10 Mbit/s") == 2 and "strip:syn-ack" in res.stdout
    desc = json.loads(cli("topo", "show", "two-paths", "--set", "checksum=off", "--json").stdout)
    assert desc["options"]["checksum"] is False
    assert {n["name"]: n["mptcp"]["checksum_enabled"] for n in desc["nodes"]} == \
        {"client": "0", "server": "0"}
    bad = cli("topo", "show", "two-paths", "--middlebox", "router:strip")
    assert bad.returncode == ExitStatus.BAD_INPUT
    assert bad.stderr == "mptcplab: error: unknown host 'router' (declared: client, server)\n"
    bad = cli("topo", "show", "two-paths", "--middlebox", "client:teleport")
    assert bad.stderr.startswith("mptcplab: error: --middlebox client:teleport: no middlebox "
                                 "kind 'teleport' (kinds: drop-mp-capable-syn, strip,")


def test_a_middlebox_from_the_command_line_acts_on_real_traffic():
    """`--middlebox router:drop-mp-capable-syn`: the client's MP_CAPABLE SYNs are dropped on
    the router, as nft's own counter and the client's MIB counter both say."""
    up = cli("topo", "up", "client-router-server", "--middlebox", "router:drop-mp-capable-syn",
             "--json")
    assert up.returncode == 0, up.stderr
    lab = json.loads(up.stdout)
    try:
        router = f"{lab['id']}:router"
        client = f"{lab['id']}:client"
        ruleset = cli("exec", router, "nft", "list", "ruleset")
        assert "tcp option mptcp subtype 0" in ruleset.stdout and " drop" in ruleset.stdout
        cli("exec", client, "sysctl", "-qw", "net.mptcp.syn_retrans_before_tcp_fallback=0")
        # a plain TCP server and an MPTCP client: the connection falls back after one drop
        server = subprocess.Popen(["ip", "netns", "exec", f"mptl-{lab['id']}-server",
                                   "python3", "-c", SERVE_ONCE], stdout=subprocess.PIPE,
                                  text=True)
        assert server.stdout.readline().strip() == "listening"
        got = cli("exec", client, "python3", "-c", CONNECT_MPTCP)
        server.wait(30)
        assert got.returncode == 0 and got.stdout.strip() == "hello", got.stderr
        counted = cli("exec", router, "nft", "-j", "list", "ruleset").stdout
        drops = [e["counter"]["packets"] for item in json.loads(counted)["nftables"]
                 for e in item.get("rule", {}).get("expr", []) if "counter" in e]
        assert drops == [1]
        mib = cli("exec", client, "nstat", "-az", "MPTcpExtMPCapableSYNTXDrop").stdout
        assert re.search(r"MPTcpExtMPCapableSYNTXDrop\s+1\b", mib), mib
    finally:
        cli("topo", "down", lab["id"])
    assert namespaces_of({lab["id"]}) == []


SERVE_ONCE = ("import socket\n"
              "s = socket.socket(socket.AF_INET, socket.SOCK_STREAM, 262)\n"
              "s.bind(('0.0.0.0', 5000)); s.listen(1); print('listening', flush=True)\n"
              "c, _ = s.accept(); c.sendall(b'hello\\n'); c.close()\n")
CONNECT_MPTCP = ("import socket\n"
                 "s = socket.socket(socket.AF_INET, socket.SOCK_STREAM, 262)\n"
                 "s.settimeout(20); s.connect(('10.0.2.1', 5000))\n"
                 "print(s.recv(100).decode().strip())\n")


def test_exec_runs_in_the_node_and_says_what_is_wrong_in_one_line():
    up = cli("topo", "up", "two-paths", "--json")
    lab_id = json.loads(up.stdout)["id"]
    try:
        res = cli("exec", f"{lab_id}:server", "ip", "-br", "addr", "show", "dev", "eth1")
        assert res.returncode == 0 and "10.0.2.2/24" in res.stdout
        status = cli("exec", f"{lab_id}:client", "sh", "-c", "exit 7")
        assert status.returncode == 7                   # the command's exit code
        for node, message in (
                (f"{lab_id}:router", f"lab {lab_id} (two-paths) has no node 'router' "
                                     "(nodes: client, server)"),
                ("zzzzz:client", "no running lab 'zzzzz' (running: "),
                ("nosuchnode", "no network namespace 'nosuchnode' and no running lab has a "
                               "node of that name")):
            res = cli("exec", node, "true")
            assert res.returncode == ExitStatus.BAD_INPUT
            assert res.stderr.startswith(f"mptcplab: error: {message}"), res.stderr
            assert res.stderr.count("\n") == 1
        res = cli("exec", f"{lab_id}:client", "no-such-command")
        assert res.returncode == ExitStatus.MISSING_TOOL
        assert res.stderr == "mptcplab: error: no-such-command: command not found\n"
    finally:
        cli("topo", "down", lab_id)


def test_clean_with_lab_ids_touches_only_those_labs():
    up = [json.loads(cli("topo", "up", "two-paths", "--json").stdout)["id"] for _ in range(2)]
    try:
        res = cli("clean", "--all", up[0])
        assert res.returncode == 0, res.stderr
        assert namespaces_of({up[0]}) == [] and len(namespaces_of({up[1]})) == 2
        res = cli("clean", "nolab")
        assert res.returncode == ExitStatus.BAD_INPUT
        assert res.stderr == "mptcplab: error: no lab nolab (see `mptcplab topo list`)\n"
    finally:
        for lab_id in up:
            if namespaces_of({lab_id}):
                cli("topo", "down", lab_id)

"""`mptcplab pm monitor` against `ip mptcp monitor` (iproute2, an independent implementation)
watching the same scenario on both hosts: the same events, in the same order, with the same
tokens, ids, addresses and ports (root)."""

from __future__ import annotations

import json
import signal
import socket
import struct
import subprocess
import sys
import time
from functools import partial

import pytest
from topo_fixtures import needs_root, root_guard  # noqa: F401  (module fixture)

from mptcplab.poll import until
from mptcplab.topo import IPPROTO_MPTCP, SOL_MPTCP, Lab, LabHost, catalogue

pytestmark = [needs_root, pytest.mark.usefixtures("root_guard")]
LISTENER = {"15": "LISTENER_CREATED", "16": "LISTENER_CLOSED"}


def read_lines(proc: subprocess.Popen, timeout: float = 10.0) -> list[str]:
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=timeout)
    return [line.rstrip() for line in out.splitlines() if line.strip()]


wait_for = partial(until, timeout=15.0, interval=0.05, error=AssertionError)


class Monitors:
    """`ip mptcp monitor`, `mptcplab pm monitor` and `... --json` watching one node."""

    def __init__(self, lab: Lab, host: LabHost) -> None:
        self.host = host
        self.ip = host.spawn(["ip", "mptcp", "monitor"], stdout=subprocess.PIPE, text=True)
        cli = [sys.executable, "-m", "mptcplab.cli", "pm", "monitor", "--ready",
               "-n", f"{lab.id}:{host.name}"]
        # ours run from the root namespace and enter the node by its LAB:NODE name
        self.ours = subprocess.Popen(cli, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True)
        self.json = subprocess.Popen([*cli, "--json"], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        for p in (self.ours, self.json):
            assert p.stderr.readline().strip() == "monitoring", p.stderr.read()

    def stop(self) -> tuple[list[str], list[str], list[dict]]:
        ip = read_lines(self.ip)
        ours = read_lines(self.ours)
        js = [json.loads(line) for line in read_lines(self.json)]
        assert self.ours.returncode == 0 and self.json.returncode == 0   # SIGTERM: clean stop
        return ip, ours, js


def ip_is_listening(host: LabHost, proc: subprocess.Popen) -> bool:
    """Until iproute2 prints something we cannot know it has subscribed: poke it with a
    listener's creation until it reports one."""
    s = host.socket(socket.AF_INET, socket.SOCK_STREAM, IPPROTO_MPTCP)
    s.bind(("127.0.0.1", 0))
    s.listen()
    s.close()
    import select

    return bool(select.select([proc.stdout], [], [], 0.1)[0])


def unpad(line: str) -> str:
    """`[       CREATED] ...` -> `[CREATED] ...`: iproute2 6.1 pads event names to 14
    characters, later ones (which name LISTENER_CREATED) to 16, as ours does."""
    name, sep, rest = line.partition("]")
    return "[" + name[1:].strip() + sep + rest


def same_events(ip: list[str], ours: list[str]) -> None:
    """Ours subscribed first, so it saw everything iproute2 saw (and maybe a few of the
    pokes before): iproute2's lines are the end of ours. iproute2 6.1 names no listener event
    (`[UNKNOWN 15]`); ours does, as newer iproute2 does."""
    assert len(ours) >= len(ip), (ip, ours)
    tail = ours[len(ours) - len(ip):]
    for theirs, mine in zip(ip, tail):
        if theirs.startswith("[UNKNOWN "):
            assert unpad(mine).startswith(f"[{LISTENER[theirs[9:-1]]}]"), (theirs, mine)
        else:
            assert unpad(mine) == unpad(theirs)


def mptcpi_token(sock: socket.socket) -> int:
    return struct.unpack_from("=I", sock.getsockopt(SOL_MPTCP, 1, 48), 12)[0]


def test_monitor_shows_what_ip_mptcp_monitor_shows():
    with Lab(catalogue.get("two-paths", rate=None)) as lab:
        client, server = lab["client"], lab["server"]
        mons = {n: Monitors(lab, lab[n]) for n in ("client", "server")}
        for m in mons.values():
            wait_for(lambda m=m: ip_is_listening(m.host, m.ip))
        time.sleep(0.2)                      # the pokes' events reach every monitor
        # the scenario: a connection, the server's announced address joined, MP_PRIO,
        # REMOVE_ADDR, the close
        lst = server.socket(socket.AF_INET, socket.SOCK_STREAM, IPPROTO_MPTCP)
        lst.bind(("0.0.0.0", 5000))
        lst.listen()
        cli = client.socket(socket.AF_INET, socket.SOCK_STREAM, IPPROTO_MPTCP)
        cli.connect(("10.0.1.2", 5000))
        srv, _ = lst.accept()
        cli.sendall(b"hello" * 100)
        srv.recv(500)
        wait_for(lambda: "subflows:1" in client.run(["ss", "-MniH"]).stdout)
        tokens = {"client": mptcpi_token(cli), "server": mptcpi_token(srv)}
        server.pm.endpoint_change(1, backup=True)                          # SF_PRIO
        wait_for(lambda: (client.counters()["MPTcpExtMPPrioRx"]) >= 1)
        server.pm.endpoint_del(1)                                          # REMOVED, SF_CLOSED
        wait_for(lambda: client.run(["ss", "-tnH", "src", "10.0.2.1"]).stdout == "")
        cli.close()
        srv.close()
        lst.close()
        wait_for(lambda: client.run(["ss", "-MnHa"]).stdout.count("10.0.1.1") == 0)
        time.sleep(0.3)
        results = {n: m.stop() for n, m in mons.items()}

    for node, (ip, ours, js) in results.items():
        same_events(ip, ours)
        names = [unpad(line)[1:].partition("]")[0] for line in ip
                 if not line.startswith("[UNKNOWN")]
        # the server announces 10.0.2.2 and dead:beef:2::2; the client joins the first
        expected = {"client": ["CREATED", "ESTABLISHED", "ANNOUNCED", "ANNOUNCED",
                               "SF_ESTABLISHED", "SF_PRIO", "REMOVED", "SF_CLOSED", "CLOSED"],
                    "server": ["CREATED", "ESTABLISHED", "SF_ESTABLISHED", "SF_CLOSED",
                               "CLOSED"]}[node]
        assert sorted(names) == sorted(expected), "\n".join(ip)
        assert (names[0], names[1], names[-1]) == ("CREATED", "ESTABLISHED", "CLOSED")
        token_hex = f"{tokens[node]:08x}"
        assert all(f"token={token_hex}" in line for line in ip if "token=" in line)
        # the JSON monitor: the same events, the token as the number MPTCP_INFO gives
        conn_events = [e for e in js if "token" in e]
        assert [e["event"] for e in conn_events][-len(names):] == [
            {"SF_ESTABLISHED": "sub_established", "SF_PRIO": "sub_priority",
             "SF_CLOSED": "sub_closed"}.get(n, n.lower()) for n in names]
        assert {e["token"] for e in conn_events} == {tokens[node]}
        created = next(e for e in conn_events if e["event"] == "created")
        assert created["server_side"] is (node == "server")
        if node == "client":
            ann = next(e for e in conn_events if e["event"] == "announced")
            assert (ann["daddr"], ann["rem_id"], ann["dport"]) == ("10.0.2.2", 1, 5000)


def test_monitor_usage_errors_are_one_line():
    res = subprocess.run([sys.executable, "-m", "mptcplab.cli", "pm", "monitor", "-n",
                          "mptl-nosuch-ns"], capture_output=True, text=True, timeout=60,
                         check=False)
    assert res.returncode == 3 and res.stdout == ""
    assert res.stderr.startswith("mptcplab: error: no network namespace 'mptl-nosuch-ns'")
    assert res.stderr.count("\n") == 1

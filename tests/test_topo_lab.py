"""A running lab: what it builds, what it offers, and that two labs never collide (root)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading

import pytest
from topo_fixtures import (
    DROP_CAPS,
    child,
    lab_ids_of_pid,
    leaks_of,
    mptcp_transfer,
    needs_nft,
    needs_root,
    needs_tcpdump,
    own_leftovers,
    root_guard,  # noqa: F401  (module fixture)
)

from mptcplab.errors import BadInput, LabError, MissingTool, NotRoot
from mptcplab.topo import IPPROTO_MPTCP, Lab, Topology, catalogue, netem_available
from mptcplab.topo.naming import PREFIX, lab_namespaces

pytestmark = [needs_root, pytest.mark.usefixtures("root_guard")]


def test_two_paths_is_built_as_declared():
    with Lab(catalogue.get("two-paths")) as lab:
        client, server = lab["client"], lab["server"]
        assert client.netns == f"{PREFIX}{lab.id}-client"
        assert sorted(lab_namespaces_of(lab)) == [client.netns, server.netns]
        links = {ln.get_attr("IFLA_IFNAME"): ln for ln in client.ipr.get_links()}
        assert set(links) == {"lo", "eth0", "eth1"}
        assert all(ln["flags"] & 1 for ln in links.values())           # all up
        addrs = {a.get_attr("IFA_ADDRESS") for a in client.ipr.get_addr()}
        assert {"10.0.1.1", "10.0.2.1", "dead:beef:1::1", "dead:beef:2::1"} <= addrs
        rules = {(r.get_attr("FRA_SRC"), r.get_attr("FRA_TABLE"))
                 for r in client.ipr.get_rules(family=socket.AF_INET)}
        assert ("10.0.2.1", 102) in rules
        qdiscs = {q["index"]: q.get_attr("TCA_KIND") for q in server.ipr.get_qdiscs()}
        assert qdiscs[links["eth0"]["index"]] == "tbf"
        assert server.pm.endpoint("show") == [
            {"id": 1, "addr": "10.0.2.2", "port": None, "flags": ["signal"], "ifindex": None},
            {"id": 2, "addr": "dead:beef:2::2", "port": None, "flags": ["signal"],
             "ifindex": None}]
        assert client.pm.limits("show") == {"subflows": 1, "add_addr_accepted": 1}
        assert server.sysctl("net.mptcp.checksum_enabled") == "0"
    assert lab_namespaces_of(lab) == []


def lab_namespaces_of(lab: Lab) -> list[str]:
    return [n for n in lab_namespaces() if n.startswith(f"{PREFIX}{lab.id}-")]


def test_endpoint_flags_port_and_device_reach_the_kernel():
    topo = catalogue.get("wifi-cellular", backup=True)
    topo.nodes["server"].endpoint("10.0.3.1", "signal", id=9, port=10100)
    with Lab(topo) as lab:
        eps = lab["client"].pm.endpoint("show")
        wwan0 = lab["client"].ipr.link_lookup(ifname="wwan0")[0]
        assert {"addr": "10.0.2.1", "flags": ["subflow", "backup"], "ifindex": wwan0,
                "port": None} == {k: eps[0][k] for k in ("addr", "flags", "ifindex", "port")}
        (ep,) = lab["server"].pm.endpoint("show")
        assert (ep["id"], ep["port"], ep["flags"]) == (9, 10100, ["signal"])
        # the same netlink path drives a live change, as `ip mptcp endpoint change` would
        lab["client"].pm.endpoint("set", id=eps[0]["id"], flags=["fullmesh"])
        assert lab["client"].run(["ip", "mptcp", "endpoint"]).stdout.count("fullmesh") == 1


def test_run_command_and_callable_keep_exit_code_and_output():
    with Lab(catalogue.get("client-router-server")) as lab:
        r = lab["client"].run(["sh", "-c", "echo out; echo err >&2; exit 3"])
        assert (r.returncode, r.stdout, r.stderr) == (3, "out\n", "err\n")
        # a callable runs forked inside the namespace: it sees the node's interfaces
        res = lab["router"].run(lambda: print(sorted(os.listdir("/proc/thread-self/net/dev_snmp6"
                                                                ))) or 7)
        assert res.returncode == 7 and res.value == 7
        assert "eth0" in res.stdout and "eth1" in res.stdout
        boom = lab["client"].run(lambda: 1 / 0)
        assert boom.returncode == 1 and "ZeroDivisionError" in boom.stderr
        # in-process call: a route lookup in the client's namespace
        assert lab["client"].call(_source_address_towards, "10.0.2.1") == "10.0.1.1"
        with pytest.raises(Exception, match="exited with 3: err"):
            lab["client"].run("sh -c 'echo err >&2; exit 3'", check=True)


def _source_address_towards(dst: str) -> str:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.connect((dst, 9))
    try:
        return s.getsockname()[0]
    finally:
        s.close()


def test_background_process_is_stopped_at_teardown():
    with Lab(catalogue.get("two-paths")) as lab:
        proc = lab["server"].spawn(["sleep", "600"])
        assert proc.poll() is None
        netns = os.stat(f"/proc/{proc.pid}/ns/net").st_ino
        assert netns == os.stat(f"/run/netns/{lab['server'].netns}").st_ino
    assert proc.poll() is not None


def test_counters_snapshot_and_delta_follow_a_real_connection():
    with Lab(catalogue.get("two-paths", rate=None)) as lab:
        before = lab["server"].counters()
        mptcp_transfer(lab["server"], lab["client"], "10.0.1.2", b"x" * 100_000)
        delta = lab["server"].counters() - before
        assert delta["MPTcpExtMPCapableSYNRX"] == 1
        assert delta["TcpPassiveOpens"] >= 1
        assert delta["TcpExtTCPTimeouts"] == 0
        delta.expect(MPTcpExtMPCapableSYNRX=1)
        with pytest.raises(AssertionError, match="server MPTcpExtMPJoinSynRx: expected 5"):
            delta.expect(MPTcpExtMPJoinSynRx=5)
        with pytest.raises(KeyError, match="no counter 'MPTcpExtNoSuch'"):
            delta["MPTcpExtNoSuch"]


@needs_tcpdump
def test_capture_writes_a_pcap_of_the_traffic(tmp_path):
    from scapy.all import TCP, rdpcap

    with Lab(catalogue.get("client-router-server")) as lab:
        pcap = tmp_path / "router.pcap"
        with lab["router"].capture("eth1", pcap, filter="tcp") as cap:
            mptcp_transfer(lab["server"], lab["client"], "10.0.2.1", b"y" * 20_000)
        assert cap.packets and cap.packets > 3
    pkts = rdpcap(str(pcap))
    assert len(pkts) == cap.packets
    syn = bytes(next(p for p in pkts if p[TCP].flags == "S")[TCP])
    assert 30 in _option_kinds(syn[20:(syn[12] >> 4) * 4])  # MP_CAPABLE on the SYN


def _option_kinds(raw: bytes) -> list[int]:
    kinds, i = [], 0
    while i < len(raw):
        kinds.append(raw[i])
        i += 1 if raw[i] in (0, 1) else max(2, raw[i + 1])
    return kinds


def test_sockets_live_in_their_namespace_and_are_closed_at_teardown():
    with Lab(catalogue.get("two-paths", rate=None)) as lab:
        s = lab["client"].socket(socket.AF_INET, socket.SOCK_STREAM, IPPROTO_MPTCP)
        s.bind(("10.0.2.1", 0))              # only exists in the client's namespace
        with pytest.raises(OSError):
            socket.socket().bind(("10.0.2.1", 0))
    assert s.fileno() == -1


def test_two_labs_at_once_do_not_collide():
    topo = catalogue.get("two-paths", rate=None)
    with Lab(topo) as a, Lab(topo) as b:
        assert a.id != b.id
        assert not set(lab_namespaces_of(a)) & set(lab_namespaces_of(b))
        results: dict[str, bytes] = {}

        def go(lab: Lab, tag: bytes) -> None:
            results[lab.id] = mptcp_transfer(lab["server"], lab["client"], "10.0.1.2",
                                             tag * 200_000).received

        threads = [threading.Thread(target=go, args=(a, b"a")),
                   threading.Thread(target=go, args=(b, b"b"))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        # same addresses, same port, each lab only saw its own bytes
        assert results == {a.id: b"a" * 200_000, b.id: b"b" * 200_000}


def test_two_processes_building_labs_at_once_do_not_collide():
    code = ("from mptcplab.topo import Lab, catalogue\n"
            "t = catalogue.get('two-paths')\n"
            "for _ in range(10):\n"
            "    with Lab(t) as lab:\n"
            "        assert lab['client'].run(['true']).ok\n"
            "print('done')\n")
    procs = [child(code) for _ in range(2)]
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        assert out.strip() == "done"


def test_bad_declaration_fails_before_anything_is_created():
    assert own_leftovers() == []
    t = Topology("bad")
    t.host("client")
    t.host("server")
    t.link("client", "server", v4="10.0.1.0/24", ifnames=("a-very-long-ifname", "eth0"))
    with pytest.raises(BadInput, match="is 18 characters"):
        Lab(t).start()
    assert own_leftovers() == []            # not a namespace, not even a state file


def test_not_root_is_refused_before_anything_is_created():
    code = ("import os\n"
            "from mptcplab.topo import Lab, catalogue\n"
            "t = catalogue.get('two-paths')\n"
            + DROP_CAPS +
            "try:\n"
            "    Lab(t).start()\n"
            "except Exception as e:\n"
            "    print(type(e).__name__, e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=False).stdout
    assert out.startswith(f"{NotRoot.__name__} building a lab needs root")
    assert out.count("\n") == 1


@needs_nft
def test_missing_nft_is_refused_before_anything_is_created(tmp_path):
    topo_file = tmp_path / "boxed.py"
    topo_file.write_text(
        "from mptcplab.topo import DropMpCapableSyn, catalogue\n"
        "def build():\n"
        "    return catalogue.get('client-router-server', middleboxes=[DropMpCapableSyn()])\n")
    proc = subprocess.Popen([sys.executable, "-m", "mptcplab.cli", "topo", "up", str(topo_file)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PATH": str(tmp_path)})
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == MissingTool.status == 5
    assert err == ("mptcplab: error: boxed uses loss or middleboxes, which need nft: "
                   "install the Debian package nftables\n")
    assert leaks_of(proc.pid) == [] and lab_ids_of_pid(proc.pid) == set()


@pytest.mark.skipif(netem_available(), reason="this kernel has netem: delay works")
def test_delay_without_netem_says_so_before_anything_is_created():
    with pytest.raises(MissingTool, match="netem qdisc"):
        Lab(catalogue.get("wifi-cellular", cell_delay="40ms")).start()
    assert own_leftovers() == []


def test_kernel_refusal_mid_build_is_one_line_and_removes_what_was_built():
    """The kernel, not the declaration check, refuses: a congestion control this namespace does
    not allow, an endpoint declared twice. Namespaces and links were already made: all go."""
    topo = catalogue.get("two-paths")
    topo.nodes["client"].sysctls["net.ipv4.tcp_congestion_control"] = "no_such_cc"
    with pytest.raises(LabError) as err:
        Lab(topo).start()
    assert str(err.value).startswith("client: sysctl net.ipv4.tcp_congestion_control=no_such_cc")
    assert "\n" not in str(err.value)
    assert own_leftovers() == []

    topo = catalogue.get("two-paths")
    topo.nodes["server"].endpoint("10.0.2.2", "signal")   # already a signal endpoint
    with pytest.raises(LabError, match=r"^server: MPTCP endpoint 10.0.2.2 signal.*: File exists$"):
        Lab(topo).start()
    assert own_leftovers() == []

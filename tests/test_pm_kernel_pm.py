"""The in-kernel path manager's endpoints and limits through mptcplab.pm, with the kernel's own
`pm_netlink.sh` selftest as the oracle (its checks re-expressed one by one), and `ip mptcp` as
an independent reader of what the client wrote (root)."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest
from topo_fixtures import needs_root, root_guard  # noqa: F401  (module fixture)

from mptcplab.errors import ExitStatus, MissingTool
from mptcplab.pm import PathManager, PmError
from mptcplab.topo import Lab, Topology

pytestmark = [needs_root, pytest.mark.usefixtures("root_guard")]


@pytest.fixture
def host():
    """A fresh namespace of its own (a one-host lab): the kernel's defaults, nothing else."""
    topo = Topology("pm-one")
    topo.host("h")
    with Lab(topo) as lab:
        yield lab["h"]


def dump(pm: PathManager) -> list[tuple[int, str, list[str]]]:
    """What `pm_nl_ctl dump` prints, as (id, address, flags)."""
    return [(e["id"], e["addr"], e["flags"]) for e in pm.endpoints()]


def ip_json(h, *args: str):
    out = h.run(["ip", "-j", "mptcp", *args]).check().stdout
    return json.loads(out) if out.strip() else []


def ip_limits(h) -> dict[str, int]:
    """`ip mptcp limits` (iproute2 6.1 has no JSON for it): add_addr_accepted N subflows N."""
    words = h.run(["ip", "mptcp", "limits"]).check().stdout.split()
    return {k: int(v) for k, v in zip(words[::2], words[1::2])}


def test_defaults_add_get_dump_del(host):
    pm = host.pm
    assert dump(pm) == []                                                  # defaults addr list
    assert pm.limits() == {"subflows": 2, "add_addr_accepted": 0}          # defaults limits
    assert ip_limits(host) == {"add_addr_accepted": 0, "subflows": 2}
    pm.endpoint_add("10.0.1.1")
    pm.endpoint_add("10.0.1.2", flags=["subflow"], dev="lo")
    pm.endpoint_add("10.0.1.3", flags=["signal", "backup"])
    assert pm.endpoint_get(1) == {"id": 1, "addr": "10.0.1.1", "port": None, "flags": [],
                                  "ifindex": None}                         # simple add/get
    assert dump(pm) == [(1, "10.0.1.1", []), (2, "10.0.1.2", ["subflow"]),
                        (3, "10.0.1.3", ["signal", "backup"])]             # dump addrs
    assert pm.endpoints()[1]["ifindex"] == 1                               # dev lo
    # iproute2 reads back the same endpoints
    assert [(e["id"], e["address"], e.get("dev")) for e in ip_json(host, "endpoint")] == [
        (1, "10.0.1.1", None), (2, "10.0.1.2", "lo"), (3, "10.0.1.3", None)]
    pm.endpoint_del(2)
    with pytest.raises(PmError) as exc:                                    # simple del addr
        pm.endpoint_get(2)
    assert exc.value.status == ExitStatus.BAD_INPUT and "address not found" in str(exc.value)
    assert dump(pm) == [(1, "10.0.1.1", []), (3, "10.0.1.3", ["signal", "backup"])]


def test_duplicate_and_the_eight_endpoint_cap(host):
    pm = host.pm
    for a in ("10.0.1.1", "10.0.1.3"):
        pm.endpoint_add(a)
    with pytest.raises(PmError) as exc:                                    # duplicate addr
        pm.endpoint_add("10.0.1.3")
    assert exc.value.status == ExitStatus.BAD_INPUT and "duplicate" in exc.value.extack
    assert pm.endpoint_add("10.0.1.4", flags="signal")["id"] == 3         # id addr increment
    for i in range(5, 11):
        try:
            pm.endpoint_add(f"10.0.1.{i}", flags="signal")
        except PmError as e:
            last_error = e
    assert len(pm.endpoints()) == 8                                        # hard addr limit
    assert (8, "10.0.1.10") not in [(e["id"], e["addr"]) for e in pm.endpoints()]
    assert "too many addresses" in last_error.extack                      # above the limit
    assert len(ip_json(host, "endpoint")) == 8


def test_ids_are_kept_and_wrap_around(host):
    pm = host.pm
    pm.endpoint_add("10.0.1.1", flags="signal")
    pm.endpoint_add("10.0.1.9", flags="signal")
    pm.endpoint_del(2)
    for i in range(10, 256):                                               # id limit
        pm.endpoint_add("10.0.0.9", id=i)
        pm.endpoint_del(i)
    assert dump(pm) == [(1, "10.0.1.1", ["signal"])]
    pm.endpoint("flush")
    assert dump(pm) == []                                                  # flush addrs
    for addr, id_ in (("10.0.1.1", None), ("10.0.1.2", None), ("10.0.1.3", 100),
                      ("10.0.1.4", None), ("10.0.1.5", 254), ("10.0.1.6", None),
                      ("10.0.1.7", None), ("10.0.1.8", None)):
        pm.endpoint_add(addr, id=id_)
    assert [(i, a) for i, a, _ in dump(pm)] == [                           # set ids
        (1, "10.0.1.1"), (2, "10.0.1.2"), (3, "10.0.1.7"), (4, "10.0.1.8"),
        (100, "10.0.1.3"), (101, "10.0.1.4"), (254, "10.0.1.5"), (255, "10.0.1.6")]
    pm.endpoint("flush")
    for addr, id_ in (("10.0.0.1", None), ("10.0.0.2", 254), ("10.0.0.3", None),
                      ("10.0.0.4", None), ("10.0.0.5", 253), ("10.0.0.6", None),
                      ("10.0.0.7", None), ("10.0.0.8", None)):
        pm.endpoint_add(addr, id=id_)
    assert [(i, a) for i, a, _ in dump(pm)] == [                           # wrap-around ids
        (1, "10.0.0.1"), (2, "10.0.0.4"), (3, "10.0.0.6"), (4, "10.0.0.7"), (5, "10.0.0.8"),
        (253, "10.0.0.5"), (254, "10.0.0.2"), (255, "10.0.0.3")]


@pytest.mark.parametrize("subflows, accepted", [(1, 9), (9, 1)])
def test_limits_above_the_maximum_are_refused_and_nothing_changes(host, subflows, accepted):
    pm = host.pm
    before = pm.limits()
    with pytest.raises(PmError) as exc:
        pm.limits("set", subflows=subflows, add_addr_accepted=accepted)
    assert str(exc.value) == "setting the limits: limit greater than maximum (8) " \
                             "(Invalid argument)"
    assert exc.value.status == ExitStatus.BAD_INPUT
    assert pm.limits() == before
    assert pm.limits("set", subflows=8, add_addr_accepted=8) == {"subflows": 8,
                                                                 "add_addr_accepted": 8}
    assert ip_limits(host) == {"add_addr_accepted": 8, "subflows": 8}


def test_flag_changes_as_pm_netlink_sh_makes_them(host):
    pm = host.pm
    pm.endpoint_add("10.0.1.1", flags="subflow")
    # the raw SET_FLAGS (as `ip mptcp endpoint change` and pm_nl_ctl set): the named bits
    # are exactly backup and fullmesh as given
    pm.endpoint("set", addr="10.0.1.1", flags="backup")
    assert dump(pm) == [(1, "10.0.1.1", ["subflow", "backup"])]           # (backup)
    pm.endpoint("set", addr="10.0.1.1", flags=0)
    assert dump(pm) == [(1, "10.0.1.1", ["subflow"])]                     # (nobackup)
    pm.endpoint("set", id=1, flags="fullmesh")
    assert dump(pm) == [(1, "10.0.1.1", ["subflow", "fullmesh"])]         # (fullmesh)
    pm.endpoint("set", id=1, flags=0)
    assert dump(pm) == [(1, "10.0.1.1", ["subflow"])]                     # (nofullmesh)
    pm.endpoint("set", id=1, flags="backup,fullmesh")
    assert dump(pm) == [(1, "10.0.1.1", ["subflow", "backup", "fullmesh"])]
    # endpoint_change (the CLI's `endpoint change`) leaves the flag it is not told about
    assert pm.endpoint_change(1, backup=False)["flags"] == ["subflow", "fullmesh"]
    assert pm.endpoint_change(1, fullmesh=False)["flags"] == ["subflow"]
    out = host.run(["ip", "mptcp", "endpoint", "show"]).stdout
    assert out.split() == ["10.0.1.1", "id", "1", "subflow"]
    # fullmesh is refused on a signal endpoint, and the endpoint is left as it was
    pm.endpoint_add("10.0.1.2", flags="signal")
    with pytest.raises(PmError) as exc:
        pm.endpoint_change(2, fullmesh=True)
    assert exc.value.status == ExitStatus.BAD_INPUT
    assert dump(pm)[1] == (2, "10.0.1.2", ["signal"])


def test_ipv6_endpoints_with_port_and_device(host):
    pm = host.pm
    # a signal endpoint with a port makes the kernel listen there: the address must exist
    with pytest.raises(PmError) as exc:
        pm.endpoint_add("dead:beef:2::1", port=10100, flags=["signal"], dev="lo")
    assert exc.value.status == ExitStatus.BAD_INPUT
    assert "create listen socket error" in exc.value.extack
    assert pm.endpoints() == []
    host.run(["ip", "addr", "add", "dead:beef:2::1/128", "dev", "lo", "nodad"]).check()
    ep = pm.endpoint_add("dead:beef:2::1", port=10100, flags=["signal"], dev="lo")
    assert ep == {"id": 1, "addr": "dead:beef:2::1", "port": 10100, "flags": ["signal"],
                  "ifindex": 1}
    (ip,) = ip_json(host, "endpoint")
    assert (ip["address"], ip["port"], ip["id"], ip["dev"]) == ("dead:beef:2::1", 10100, 1, "lo")
    # an endpoint added by iproute2 reads back through the client the same way
    host.run(["ip", "mptcp", "endpoint", "add", "10.0.3.1", "id", "7", "subflow", "backup"]
             ).check()
    assert pm.endpoint_get(7) == {"id": 7, "addr": "10.0.3.1", "port": None,
                                  "flags": ["subflow", "backup"], "ifindex": None}


def test_laminar_flag(host):
    """6.18's new endpoint flag. iproute2 6.1 predates it and shows the bit raw."""
    pm = host.pm
    try:
        ep = pm.endpoint_add("10.0.4.1", flags=["subflow", "laminar"])
    except MissingTool as exc:
        pytest.skip(str(exc))
    assert ep["flags"] == ["subflow", "laminar"]
    out = host.run(["ip", "mptcp", "endpoint", "show"]).stdout
    assert "laminar" in out or "rawflags 20" in out or "rawflags 22" in out, out


def test_bad_values_are_refused_before_the_kernel_and_change_nothing(host):
    pm = host.pm
    for call, words in ((lambda: pm.endpoint_add("10.0.300.1"), "not an IPv4 or IPv6"),
                        (lambda: pm.endpoint_add("10.0.1.1", id=256), "out of range"),
                        (lambda: pm.endpoint_add("10.0.1.1", flags="sgnal"), "unknown MPTCP"),
                        (lambda: pm.endpoint_add("10.0.1.1", dev="nosuch0"), "no interface"),
                        (lambda: pm.endpoint_del(0), "needs its address")):
        with pytest.raises(Exception) as exc:
            call()
        assert words in str(exc.value)
        assert getattr(exc.value, "status", None) == ExitStatus.BAD_INPUT
    assert pm.endpoints() == []


def test_endpoint_changes_reach_a_running_connection_as_mp_prio():
    """The in-kernel PM's endpoint change sends MP_PRIO; the peer reports it (SF_PRIO)."""
    from mptcplab.topo import catalogue
    from mptcplab.traffic import connect

    with Lab(catalogue.get("two-paths", rate=None)) as lab:
        client, server = lab["client"], lab["server"]
        pm = client.pm
        pm.subscribe()                                     # before the connection's events
        with connect(client, server, "10.0.1.2") as conn:
            conn.upload(b"x" * 1000)
            events = wait_events(pm, lambda evs: any(e.KIND == "sub_established" for e in evs))
            server.pm.endpoint_change(1, backup=True)      # the server's signal endpoint
            prio = wait_events(pm, lambda evs: any(e.KIND == "sub_priority" for e in evs))
        token = events[0].token
        (ev,) = [e for e in prio if e.KIND == "sub_priority"]
        assert (ev.token, ev.saddr, ev.daddr, ev.backup, ev.rem_id) == (
            token, "10.0.2.1", "10.0.2.2", 1, 1)


def wait_events(pm: PathManager, done, timeout: float = 10.0) -> list:
    got = []
    for ev in pm.events(timeout=timeout):
        got.append(ev)
        if done(got):
            return got
    raise AssertionError(f"events so far: {[e.NAME for e in got]}")


def test_ip_mptcp_reads_what_the_cli_wrote_and_back(host):
    import sys

    from mptcplab.cli.pm import register  # noqa: F401  (the group exists)

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "mptcplab.cli", "pm", *args,
                               "-n", host.netns], capture_output=True, text=True, timeout=60,
                              check=False)

    assert cli("endpoint", "add", "10.0.2.1", "id", "5", "subflow", "backup", "dev", "lo"
               ).returncode == 0
    host.run(["ip", "addr", "add", "10.0.2.2/32", "dev", "lo"]).check()  # listened on
    assert cli("endpoint", "add", "10.0.2.2", "port", "7000", "signal").returncode == 0
    assert cli("limits", "set", "subflows", "3", "add_addr_accepted", "4").returncode == 0
    ip_out = host.run(["ip", "mptcp", "endpoint", "show"]).stdout.splitlines()
    ours = cli("endpoint", "show").stdout.splitlines()
    # iproute2 ends each line with a space; otherwise the very same words
    assert [line.rstrip() for line in ip_out] == ours == [
        "10.0.2.1 id 5 subflow backup dev lo", "10.0.2.2 port 7000 id 6 signal"]
    assert host.run(["ip", "mptcp", "limits"]).stdout.split() == \
        cli("limits").stdout.split() == ["add_addr_accepted", "4", "subflows", "3"]
    res = cli("limits", "set", "subflows", "12")
    assert res.returncode == ExitStatus.BAD_INPUT and res.stdout == ""
    assert res.stderr == ("mptcplab: error: setting the limits: limit greater than maximum "
                          "(8) (Invalid argument)\n")
    res = cli("endpoint", "change", "5", "nobackup", "--json")
    assert json.loads(res.stdout) == [{"id": 5, "addr": "10.0.2.1", "port": None,
                                       "flags": ["subflow"], "ifindex": 1, "dev": "lo"}]
    assert host.run(["ip", "mptcp", "endpoint", "show", "id", "5"]).stdout.split() == [
        "10.0.2.1", "id", "5", "subflow", "dev", "lo"]


def test_the_kernel_is_asked_what_it_has(host):
    """Commands come from the family's own list of operations, attributes from its netlink
    policy (CTRL_CMD_GETPOLICY): a missing one is a one-line MissingTool."""
    from mptcplab.pm import netlink as nl

    pm = host.pm
    assert set(nl.COMMAND_NAMES) <= pm.family.ops
    assert set(pm.family.groups) == {"mptcp_pm_cmds", "mptcp_pm_events"}
    assert nl.PM_CODEC.index["MPTCP_PM_ATTR_TOKEN"] in pm.genl.policy(nl.MPTCP_PM_CMD_GET_ADDR)
    pm.require(nl.MPTCP_PM_CMD_SET_FLAGS, "MPTCP_PM_ATTR_TOKEN", "MPTCP_PM_ATTR_ADDR_REMOTE")
    with pytest.raises(MissingTool) as exc:
        pm.require(nl.MPTCP_PM_CMD_ADD_ADDR, "MPTCP_PM_ATTR_TOKEN")
    assert str(exc.value) == ("this kernel's ADD_ADDR does not take MPTCP_PM_ATTR_TOKEN (its "
                              "netlink policy lacks it)")
    with pytest.raises(MissingTool) as exc:
        pm.require(42)
    assert exc.value.status == ExitStatus.MISSING_TOOL and "no 42 command" in str(exc.value)


@pytest.mark.skipif(shutil.which("setpriv") is None, reason="setpriv (util-linux) not installed")
def test_without_privileges_each_command_names_the_capability_it_lacks(host):
    """Inside the node, capabilities dropped (setpriv): the kernel refuses, the message says
    which capability is missing, nothing changes. From outside, -n needs CAP_SYS_ADMIN."""
    import sys

    drop = ["setpriv", "--inh-caps=-all", "--ambient-caps=-all", "--bounding-set=-all"]
    py = [sys.executable, "-m", "mptcplab.cli", "pm"]
    for args, words in ((["endpoint", "add", "10.9.9.9", "subflow"], "CAP_NET_ADMIN"),
                        (["limits", "set", "subflows", "3"], "CAP_NET_ADMIN"),
                        (["monitor", "--timeout", "1"], "CAP_NET_ADMIN"),
                        (["daemon", "--policy", "fullmesh"], "CAP_NET_ADMIN")):
        res = host.run([*drop, *py, *args], timeout=60)
        assert res.returncode == ExitStatus.NOT_ROOT, (args, res.stderr)
        assert res.stderr.startswith("mptcplab: error: ") and res.stderr.count("\n") == 1
        assert words in res.stderr and "needs root" in res.stderr
    res = subprocess.run([*drop, *py, "endpoint", "show", "-n", host.netns],
                         capture_output=True, text=True, timeout=60, check=False)
    assert res.returncode == ExitStatus.NOT_ROOT and "CAP_SYS_ADMIN" in res.stderr
    assert host.pm.endpoints() == [] and host.pm.limits()["subflows"] == 2
    assert host.sysctl("net.mptcp.path_manager") == "kernel"

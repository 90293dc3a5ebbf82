"""Topology declarations, checks, routing plans, middlebox rules and the catalogue: no root."""

from __future__ import annotations

import pytest

from mptcplab.cli import main
from mptcplab.errors import BadInput, ExitStatus
from mptcplab.topo import (
    CorruptPayload,
    DropMpCapableSyn,
    DropMptcpSubtype,
    Nat,
    StripMptcpOption,
    Topology,
    catalogue,
)
from mptcplab.topo import middlebox as mbox
from mptcplab.topo.model import parse_rate, parse_time


def pair() -> Topology:
    t = Topology("pair")
    t.host("client")
    t.host("server")
    return t


def test_link_gives_first_two_addresses_and_default_ifnames():
    t = pair()
    ln = t.link("client", "server", v4="10.9.1.0/24", v6="fd00:1::/64")
    assert (ln.a_if, ln.b_if) == ("eth0", "eth0")
    assert [str(a) for a in ln.a_addrs] == ["10.9.1.1/24", "fd00:1::1/64"]
    assert [str(a) for a in ln.b_addrs] == ["10.9.1.2/24", "fd00:1::2/64"]
    ln2 = t.link("client", "server", v4="10.9.2.0/24", addrs={"server": "10.9.2.254"})
    assert (ln2.a_if, ln2.b_if) == ("eth1", "eth1")
    assert [str(a) for a in ln2.b_addrs] == ["10.9.2.254/24"]
    assert t.addr("server", "eth1") == "10.9.2.254"


@pytest.mark.parametrize("declare, message", [
    (lambda t: t.link("client", "srv", v4="10.0.1.0/24"), "unknown host 'srv'"),
    (lambda t: t.link("client", "server", v4="10.0.1.0/24", ifnames=("a" * 16, "eth0")),
     None),  # caught by check(): see below
    (lambda t: t.host("client"), "duplicate node 'client'"),
    (lambda t: t.link("client", "server", v4="10.0.1.7/24"), "bad subnet"),
    (lambda t: t.link("client", "server", rate="fast"), "bad rate 'fast'"),
    (lambda t: t.link("client", "server", loss=150), "loss 150"),
    (lambda t: t.node("client").endpoint("10.0.1.1", "sometimes"), "unknown endpoint flag"),
    (lambda t: t.host("Bad Name"), "bad node name"),
])
def test_bad_declarations_raise_one_line_bad_input(declare, message):
    t = pair()
    if message is None:
        declare(t)
        with pytest.raises(BadInput) as err:
            t.check()
        assert "is 16 characters (Linux allows 15)" in str(err.value)
    else:
        with pytest.raises(BadInput) as err:
            declare(t)
        assert message in str(err.value)
    assert "\n" not in str(err.value)
    assert err.value.status == ExitStatus.BAD_INPUT


def test_check_finds_duplicate_address_across_links():
    t = pair()
    t.link("client", "server", v4="10.0.1.0/24")
    t.link("client", "server", v4="10.0.2.0/24", addrs={"client": "10.0.2.2",
                                                        "server": "10.0.2.3"})
    t.check()
    t.link("client", "server", v4="10.0.3.0/24", addrs={"server": "10.0.3.1"})
    with pytest.raises(BadInput, match=r"duplicate address 10.0.3.1 \(client eth2 and "
                                       r"server eth2\)"):
        t.check()


def test_check_rejects_endpoints_and_sysctls_the_node_cannot_have():
    t = pair()
    t.link("client", "server", v4="10.0.1.0/24")
    t.node("client").endpoint("10.0.1.2", "subflow")
    with pytest.raises(BadInput, match="endpoint 10.0.1.2 is not an address of client"):
        t.check()
    t = pair()
    t.link("client", "server", v4="10.0.1.0/24")
    t.node("client").sysctls["kernel.panic"] = "1"
    with pytest.raises(BadInput, match="not a net.\\* sysctl"):
        t.check()
    t = pair()
    t.link("client", "server", v4="10.0.1.0/24")
    t.node("client").mptcp["no_such_knob"] = "1"
    with pytest.raises(BadInput, match="unknown MPTCP sysctl 'no_such_knob'"):
        t.check()


def test_rates_and_times_use_tc_units():
    assert parse_rate("100mbit") == 100_000_000
    assert parse_rate("1.5Gbit") == 1_500_000_000
    assert parse_rate("10mbps") == 80_000_000
    assert parse_time("20ms", "delay") == pytest.approx(0.02)
    assert parse_time(5, "delay") == pytest.approx(0.005)


def test_multihomed_host_routes_each_source_out_of_its_own_link():
    topo = catalogue.get("wifi-cellular")
    plan = topo.plan()
    client = plan["client"]
    v4 = [(r.dst, r.gateway, r.dev, r.table) for r in client.routes if r.family == 4]
    assert ("default", "10.0.1.254", "wlan0", None) in v4          # main table: WiFi
    assert ("default", "10.0.2.254", "wwan0", 102) in v4           # from cellular address
    rules = {(r.src, r.table) for r in client.rules}
    assert ("10.0.2.1", 102) in rules and ("dead:beef:2::1", 102) in rules
    server = [(r.dst, r.gateway) for r in plan["server"].routes if r.family == 4]
    assert server == [("default", "10.0.3.254")]
    assert plan["router"].routes == []                              # all subnets connected


def test_router_gets_routes_to_subnets_behind_other_routers():
    t = Topology("chain")
    for n in ("a", "b"):
        t.host(n)
    for n in ("r1", "r2"):
        t.router(n)
    t.link("a", "r1", v4="10.1.0.0/24")
    t.link("r1", "r2", v4="10.2.0.0/24")
    t.link("r2", "b", v4="10.3.0.0/24")
    plan = t.plan()
    assert [(r.dst, r.gateway) for r in plan["r1"].routes] == [("10.3.0.0/24", "10.2.0.2")]
    assert [(r.dst, r.gateway) for r in plan["r2"].routes] == [("10.1.0.0/24", "10.2.0.1")]
    assert [(r.dst, r.gateway) for r in plan["a"].routes] == [("default", "10.1.0.2")]


def test_middleboxes_render_the_nft_rules_that_were_checked_on_the_kernel():
    t = Topology("m")
    r = t.router("r")
    t.host("h")
    t.link("r", "h", v4="10.0.0.0/24")
    r.middlebox(DropMpCapableSyn(), StripMptcpOption("syn-ack"),
                DropMptcpSubtype("add_addr", echo=True), CorruptPayload(nth=3, offset=2),
                Nat(out="eth0"))
    t.check()
    text = mbox.render(r, {"eth0": 2.5})
    assert "tcp flags & (syn | ack) == syn tcp option mptcp subtype 0 counter drop" in text
    assert "tcp flags & (syn | ack) == syn | ack counter reset tcp option mptcp" in text
    assert "tcp option @30,16,8 == 0x31 counter drop" in text
    assert "@ih,16,8 != 0xff numgen inc mod 1000000000 == 2 counter @ih,16,8 set 0xff" in text
    assert 'oifname "eth0" counter masquerade' in text
    assert "numgen random mod 1000000 < 25000 counter drop" in text
    assert "chain forward" in text and "type nat hook postrouting" in text


def test_middlebox_declaration_errors():
    t = Topology("m")
    r = t.router("r")
    t.host("h")
    t.link("r", "h", v4="10.0.0.0/24")
    r.middlebox(Nat(out="eth9"))
    with pytest.raises(BadInput, match="Nat out='eth9' is not an interface of r"):
        t.check()
    r.middleboxes[:] = [StripMptcpOption("some")]
    with pytest.raises(BadInput, match="segments='some'"):
        t.check()
    r.middleboxes[:] = [DropMptcpSubtype("dss", echo=True)]
    with pytest.raises(BadInput, match="echo= only applies to add_addr"):
        t.check()


def test_catalogue_has_the_four_topologies_each_with_a_diagram():
    names = catalogue.names()
    assert {"two-paths", "four-paths", "client-router-server", "wifi-cellular"} <= set(names)
    for name in names:
        entry = catalogue.entry(name)
        assert "─" in entry.doc, f"{name} has no ASCII diagram"
        assert entry.summary
        topo = entry.build()
        topo.check()
        assert topo.name == name


def test_four_paths_mirrors_mptcp_join():
    topo = catalogue.get("four-paths")
    assert topo.addr("ns1", "ns1eth3") == "10.0.3.1"
    assert topo.addr("ns2", "ns2eth4", family=6) == "dead:beef:4::2"
    assert [str(e.addr) for e in topo.nodes["ns1"].endpoints] == ["10.0.2.1", "10.0.3.1",
                                                                  "10.0.4.1"]
    assert catalogue.get("four-paths", signal=0).nodes["ns1"].endpoints == []


def test_catalogue_unknown_name_and_bad_option():
    with pytest.raises(BadInput, match="unknown topology 'nope'"):
        catalogue.get("nope")
    with pytest.raises(BadInput, match="unexpected keyword argument 'colour'"):
        catalogue.get("two-paths", colour="blue")


def test_cli_show_and_list_need_no_root(capsys):
    assert main(["topo", "list"]) == 0
    out = capsys.readouterr().out
    assert "two-paths" in out and "wifi-cellular" in out
    assert main(["topo", "show", "two-paths", "--set", "rate=10mbit"]) == 0
    out = capsys.readouterr().out
    assert "10 Mbit/s" in out and "10.0.2.2(signal)" in out
    assert main(["topo", "show", "nope"]) == ExitStatus.BAD_INPUT
    err = capsys.readouterr().err
    assert err.startswith("mptcplab: error: unknown topology 'nope'") and err.count("\n") == 1

"""
    ns1 (listener)                                   ns2 (connector)
    ns1eth1  10.0.1.1  dead:beef:1::1 ───────── ns2eth1  10.0.1.2  dead:beef:1::2
    ns1eth2  10.0.2.1  dead:beef:2::1 ───────── ns2eth2  10.0.2.2  dead:beef:2::2
    ns1eth3  10.0.3.1  dead:beef:3::1 ───────── ns2eth3  10.0.3.2  dead:beef:3::2
    ns1eth4  10.0.4.1  dead:beef:4::1 ───────── ns2eth4  10.0.4.2  dead:beef:4::2

Four direct paths, IPv4 and IPv6, as in the kernel's mptcp_join.sh.

Same names and addresses as the selftest, so its cases port line by line. By default ns1
announces its other three IPv4 addresses (signal endpoints) and both sides accept up to 3
extra subflows; signal=0 and limits=0 give the bare topology the selftest starts from.
"""

from mptcplab.topo import Topology


def build(signal: int = 3, limits: int = 3, rate: str | None = None) -> Topology:
    topo = Topology("four-paths")
    ns1 = topo.host("ns1")
    ns2 = topo.host("ns2")
    for i in range(1, 5):
        topo.link(ns1, ns2, v4=f"10.0.{i}.0/24", v6=f"dead:beef:{i}::/64",
                  ifnames=(f"ns1eth{i}", f"ns2eth{i}"), rate=rate)
    if limits:
        ns1.set_limits(subflows=limits, add_addr_accepted=limits)
        ns2.set_limits(subflows=limits, add_addr_accepted=limits)
    for i in range(2, 2 + signal):
        ns1.endpoint(f"10.0.{i}.1", "signal")
    return topo

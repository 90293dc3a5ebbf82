"""
    client                                   server
    eth0  10.0.1.1 ─────── 100 Mbit/s ─────── 10.0.1.2  eth0
          dead:beef:1::1                      dead:beef:1::2
    eth1  10.0.2.1 ─────── 100 Mbit/s ─────── 10.0.2.2  eth1
          dead:beef:2::1                      dead:beef:2::2

Two direct paths between a client and a server.

The server announces its second addresses (signal endpoints 10.0.2.2, then dead:beef:2::2);
the client accepts one announcement (limits: 1 subflow, 1 ADD_ADDR) and opens the second
subflow to it over eth1: one subflow per path, for IPv4 and IPv6 connections alike (an IPv6
connection takes the IPv4 path-2 subflow, announced first). Each host routes by source
address, so a subflow from 10.0.2.1 really leaves by eth1. Options: rate (both links),
loss (percent, both links), checksum (net.mptcp.checksum_enabled on both hosts), mtu.
"""

from mptcplab.topo import Topology


def build(rate: str | None = "100mbit", loss: float = 0.0, checksum: bool = False,
          mtu: int | None = None) -> Topology:
    topo = Topology("two-paths")
    mptcp = {"checksum_enabled": int(checksum)}
    client = topo.host("client", mptcp=mptcp).set_limits(subflows=1, add_addr_accepted=1)
    server = topo.host("server", mptcp=mptcp).set_limits(subflows=1, add_addr_accepted=1)
    for i in (1, 2):
        topo.link(client, server, v4=f"10.0.{i}.0/24", v6=f"dead:beef:{i}::/64",
                  rate=rate, loss=loss, mtu=mtu, label=f"path {i}")
    server.endpoint("10.0.2.2", "signal")
    server.endpoint("dead:beef:2::2", "signal")
    return topo

"""
    client                      router                      server
    eth0  10.0.1.1 ───── 10.0.1.254  eth0    eth1  10.0.2.254 ───── 10.0.2.1  eth0
          dead:beef:1::1   dead:beef:1::fe          dead:beef:2::fe   dead:beef:2::1
                                 [ middlebox ]

A client and a server with a router between them: the slot for middleboxes.

The router forwards; middleboxes given in `middleboxes` act on what it forwards, e.g.
build(middleboxes=[StripMptcpOption("syn-ack")]). Options: rate and loss (both links),
checksum (net.mptcp.checksum_enabled on client and server).
"""

from collections.abc import Sequence

from mptcplab.topo import Middlebox, Topology


def build(middleboxes: Sequence[Middlebox] = (), rate: str | None = None, loss: float = 0.0,
          checksum: bool = False) -> Topology:
    topo = Topology("client-router-server")
    mptcp = {"checksum_enabled": int(checksum)}
    client = topo.host("client", mptcp=mptcp)
    router = topo.router("router")
    server = topo.host("server", mptcp=mptcp)
    topo.link(client, router, v4="10.0.1.0/24", v6="dead:beef:1::/64", rate=rate, loss=loss,
              addrs={"router": ["10.0.1.254", "dead:beef:1::fe"]})
    topo.link(router, server, v4="10.0.2.0/24", v6="dead:beef:2::/64", rate=rate, loss=loss,
              addrs={"router": ["10.0.2.254", "dead:beef:2::fe"],
                     "server": ["10.0.2.1", "dead:beef:2::1"]})
    router.middlebox(*middleboxes)
    return topo

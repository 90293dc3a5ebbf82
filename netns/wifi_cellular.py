"""
             wlan0 10.0.1.1 ──── WiFi 50 Mbit/s ──── 10.0.1.254 eth0
    client                                               router  eth2 10.0.3.254 ──── 10.0.3.1 eth0  server
             wwan0 10.0.2.1 ── cellular 10 Mbit/s ── 10.0.2.254 eth1            1 Gbit/s

A phone on WiFi and cellular at unequal rates, a router, and a server.

The client's cellular address is a subflow endpoint (backup=True marks it backup, as a phone
would), so connections to the server use both radios; source routing sends each subflow out of
its own interface. Delays need netem (wifi_delay, cell_delay): this kernel has none, so the
lab refuses them with a clear error rather than pretending.
"""

from mptcplab.topo import Topology


def build(wifi_rate: str = "50mbit", cell_rate: str = "10mbit", backup: bool = False,
          wifi_delay: str | None = None, cell_delay: str | None = None,
          wifi_loss: float = 0.0, cell_loss: float = 0.0) -> Topology:
    topo = Topology("wifi-cellular")
    client = topo.host("client").set_limits(subflows=2, add_addr_accepted=2)
    router = topo.router("router")
    server = topo.host("server").set_limits(subflows=2, add_addr_accepted=2)
    topo.link(client, router, v4="10.0.1.0/24", v6="dead:beef:1::/64", ifnames=("wlan0", "eth0"),
              addrs={"router": ["10.0.1.254", "dead:beef:1::fe"]}, rate=wifi_rate,
              delay=wifi_delay, loss=wifi_loss, label="wifi")
    topo.link(client, router, v4="10.0.2.0/24", v6="dead:beef:2::/64", ifnames=("wwan0", "eth1"),
              addrs={"router": ["10.0.2.254", "dead:beef:2::fe"]}, rate=cell_rate,
              delay=cell_delay, loss=cell_loss, label="cellular")
    topo.link(router, server, v4="10.0.3.0/24", v6="dead:beef:3::/64", ifnames=("eth2", "eth0"),
              addrs={"router": ["10.0.3.254", "dead:beef:3::fe"],
                     "server": ["10.0.3.1", "dead:beef:3::1"]}, rate="1gbit", label="wired")
    flags = ("subflow", "backup") if backup else ("subflow",)
    client.endpoint("10.0.2.1", *flags, dev="wwan0")
    client.endpoint("dead:beef:2::1", *flags, dev="wwan0")
    return topo

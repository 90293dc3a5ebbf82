"""Network-namespace topologies: declare in a few lines, run with `with Lab(topology) as lab:`.

    from mptcplab.topo import Lab, catalogue

    with Lab(catalogue.get("two-paths")) as lab:
        server = lab["server"].socket(proto=IPPROTO_MPTCP)
        ...
        print(lab["server"].counters() - before)

Everything the lab creates is named with naming.PREFIX and removed on exit, on Ctrl-C/SIGTERM,
and by `clean()` after a crash.
"""

from mptcplab.topo.host import IPPROTO_MPTCP, SOL_MPTCP, LabHost, Result
from mptcplab.topo.lab import Lab, netem_available
from mptcplab.topo.lifecycle import LabTerminated, clean, down
from mptcplab.topo.mib import Counters
from mptcplab.topo.middlebox import (
    CorruptPayload,
    DropMpCapableSyn,
    DropMptcpSubtype,
    Middlebox,
    Nat,
    StripMptcpOption,
)
from mptcplab.topo.model import Endpoint, Limits, Link, Node, Topology
from mptcplab.topo.naming import PREFIX

__all__ = [
    "IPPROTO_MPTCP",
    "PREFIX",
    "SOL_MPTCP",
    "CorruptPayload",
    "Counters",
    "DropMpCapableSyn",
    "DropMptcpSubtype",
    "Endpoint",
    "Lab",
    "LabHost",
    "LabTerminated",
    "Limits",
    "Link",
    "Middlebox",
    "Nat",
    "Node",
    "Result",
    "StripMptcpOption",
    "Topology",
    "clean",
    "down",
    "netem_available",
]

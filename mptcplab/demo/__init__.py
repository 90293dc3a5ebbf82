"""Teaching demos: `mptcplab demo NAME` builds a lab, makes the kernel do one thing of MPTCP,
captures it and explains it: a ladder on the terminal (one plain sentence per step with its
RFC 8684 section), the same ladder as SVG and PNG for slides, plots where data flows, the pcap,
and the steps as JSON.

One demo per file in this package (handshake.py is `handshake`, add_addr.py `add-addr`),
found the way the topology catalogue finds topologies (``_catalogue``); the machinery a demo
uses is ``Scene`` (``_scene``). Every fact a demo states is a ``Claim`` checked against the
capture, the kernel's counters or its socket options, so a demo that stops being true fails.

    from mptcplab.demo import run_demo
    outcome = run_demo("handshake", out="/tmp/hs")
    assert outcome.ok
"""

from mptcplab.demo._catalogue import Entry, entries, entry, names
from mptcplab.demo._scene import (
    FULL,
    HEADERS,
    Claim,
    Explanation,
    Outcome,
    Scene,
    View,
    diagram_of,
    preflight,
    run_demo,
)
from mptcplab.sockopt import MptcpInfo
from mptcplab.sockopt import mptcp_info_or_none as mptcp_info

__all__ = ["FULL", "HEADERS", "Claim", "Entry", "Explanation", "MptcpInfo", "Outcome", "Scene",
           "View", "diagram_of", "entries", "entry", "mptcp_info", "names", "preflight", "run_demo"]

"""Scapy layers for every MPTCP option (RFC 8684 v1, RFC 6824 v0), plugged into Scapy's TCP.

Importing this package installs the kind-30 hook (see ``tcp_hook``), so that
``IP(wire)[TCP].options`` yields these layers and ``TCP(options=[("MPTCP", layer)])`` builds them.
"""

from mptcplab.layers.options import (
    CAPABLE_FLAGS,
    DSS_FLAGS,
    MPTCP_KIND,
    SUBTYPE_NAMES,
    TCPRST_FLAGS,
    TCPRST_REASONS,
    MPAddAddr,
    MPAddAddrV0,
    MPCapable,
    MPDSS,
    MPExperimental,
    MPFail,
    MPFastclose,
    MPJoin,
    MPMalformed,
    MPPrio,
    MPRemoveAddr,
    MPTCPOption,
    MPTcpRst,
    MPUnknown,
    classify,
    dss_length,
    malformed_reason,
)
from mptcplab.layers.tcp_hook import OPTION_NAME, install, mptcp_options

install()

__all__ = [
    "CAPABLE_FLAGS", "DSS_FLAGS", "MPTCP_KIND", "OPTION_NAME", "SUBTYPE_NAMES", "TCPRST_FLAGS",
    "TCPRST_REASONS", "MPAddAddr", "MPAddAddrV0", "MPCapable", "MPDSS", "MPExperimental",
    "MPFail", "MPFastclose", "MPJoin", "MPMalformed", "MPPrio", "MPRemoveAddr", "MPTCPOption",
    "MPTcpRst", "MPUnknown", "classify", "dss_length", "install", "malformed_reason",
    "mptcp_options",
]

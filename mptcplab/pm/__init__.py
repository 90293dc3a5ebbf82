"""Path management, its own step of the flow: the `mptcp_pm` generic-netlink family (in-kernel
endpoints and limits, events, the userspace path manager), a daemon, and policies written as
small Python classes. See docs/pm.md."""

from mptcplab.pm.client import PathManager, PmError, parse_token
from mptcplab.pm.events import Event

__all__ = ["Event", "PathManager", "PmError", "parse_token"]

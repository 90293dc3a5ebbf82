"""The one place that says how the lab names what it creates.

Every namespace is `PREFIX + lab id + "-" + node`, so `clean()` can recognise the lab's own
namespaces (and nothing else) and two labs running at once never share a name.
"""

from __future__ import annotations

import os
import re
import secrets
import string

from mptcplab.namespaces import NETNS_DIR

PREFIX = "mptl-"                 # namespaces and any root-namespace link the lab creates
STATE_DIR = "/run/mptcplab"      # one JSON file per lab: owner pid, namespaces (for clean)
IFNAMSIZ = 15                    # longest Linux interface name (IFNAMSIZ - 1)

_ID_CHARS = string.ascii_lowercase + string.digits
ID_LEN = 5
NODE_NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,23}$")
IFNAME_RE = re.compile(r"^[A-Za-z0-9_.-]+$")
_NS_RE = re.compile(rf"^{re.escape(PREFIX)}([a-z0-9]{{{ID_LEN}}})-(.+)$")


def new_lab_id() -> str:
    """A short random id; the O_EXCL creation of each namespace catches the rare collision."""
    return "".join(secrets.choice(_ID_CHARS) for _ in range(ID_LEN))


def ns_name(lab_id: str, node: str) -> str:
    return f"{PREFIX}{lab_id}-{node}"


def parse_ns_name(name: str) -> tuple[str, str] | None:
    """(lab id, node) for one of the lab's namespace names, None for anything else."""
    m = _NS_RE.match(name)
    return (m.group(1), m.group(2)) if m else None


def lab_namespaces() -> list[str]:
    """Names of the lab's namespaces currently mounted in NETNS_DIR, sorted."""
    try:
        names = os.listdir(NETNS_DIR)
    except FileNotFoundError:
        return []
    return sorted(n for n in names if n.startswith(PREFIX))

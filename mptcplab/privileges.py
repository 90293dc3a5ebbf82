"""Does this process hold the capabilities an operation needs? (Judged by CapEff, not by uid:
root without CAP_SYS_ADMIN cannot make a namespace, and a capable non-root process can.)"""

from __future__ import annotations

from mptcplab.errors import NotRoot

CAP_NET_ADMIN = 12
CAP_NET_RAW = 13
CAP_SYS_ADMIN = 21
_NAMES = {CAP_NET_ADMIN: "CAP_NET_ADMIN", CAP_NET_RAW: "CAP_NET_RAW",
          CAP_SYS_ADMIN: "CAP_SYS_ADMIN"}


def effective_caps() -> int:
    """The effective capability set, as a bit mask (all bits when it cannot be read)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("CapEff:"):
                    return int(line.split()[1], 16)
    except OSError:
        pass
    return -1


def require(what: str, *caps: int) -> None:
    """Raise NotRoot (exit 4) naming what ``what`` lacks."""
    held = effective_caps()
    missing = [_NAMES[c] for c in caps if not held >> c & 1]
    if missing:
        raise NotRoot(f"{what} needs root ({' and '.join(missing)}): run it with sudo")

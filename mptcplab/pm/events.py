"""Events of the `mptcp_pm_events` multicast group, one typed object per event.

Each event keeps every attribute the kernel sent, decoded: what the kernel really sends is
wider than the spec's list (CREATED and ESTABLISHED carry loc_id/rem_id 0 too; a server-side
connection has MPTCP_ATTR_FLAGS with server_side, and the older MPTCP_ATTR_SERVER_SIDE; ANNOUNCED
has no family; SUB_* have if_idx only for a subflow bound to a device). Names of the events are
the ones `ip mptcp monitor` prints (SF_ESTABLISHED, SF_PRIO, ...), so a line reads the same.
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar

from mptcplab.pm import netlink as nl

# attribute name in the message class -> field of Event
_FIELDS = {
    "MPTCP_ATTR_TOKEN": "token", "MPTCP_ATTR_FAMILY": "family", "MPTCP_ATTR_LOC_ID": "loc_id",
    "MPTCP_ATTR_REM_ID": "rem_id", "MPTCP_ATTR_SPORT": "sport", "MPTCP_ATTR_DPORT": "dport",
    "MPTCP_ATTR_BACKUP": "backup", "MPTCP_ATTR_ERROR": "error", "MPTCP_ATTR_FLAGS": "flags",
    "MPTCP_ATTR_TIMEOUT": "timeout", "MPTCP_ATTR_IF_IDX": "if_idx",
    "MPTCP_ATTR_RESET_REASON": "reset_reason", "MPTCP_ATTR_RESET_FLAGS": "reset_flags",
    "MPTCP_ATTR_SERVER_SIDE": "server_side_attr",
}


@dataclass(frozen=True)
class Event:
    """One event. Fields the kernel did not send are None; `attrs` holds every attribute as
    decoded (an attribute this code does not know is kept there as `ATTR_<n>` bytes)."""

    TYPE: ClassVar[int] = nl.MPTCP_EVENT_UNSPEC
    NAME: ClassVar[str] = "UNKNOWN"        # as `ip mptcp monitor` prints it
    KIND: ClassVar[str] = "unknown"        # for policies (on_<kind>) and JSON

    type: int = 0
    token: int | None = None
    family: int | None = None
    loc_id: int | None = None
    rem_id: int | None = None
    saddr: str | None = None
    daddr: str | None = None
    sport: int | None = None
    dport: int | None = None
    backup: int | None = None
    error: int | None = None
    flags: int | None = None
    timeout: int | None = None
    if_idx: int | None = None
    reset_reason: int | None = None
    reset_flags: int | None = None
    server_side_attr: int | None = None
    attrs: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)
    time: float = field(default=0.0, compare=False)

    @property
    def name(self) -> str:
        return self.NAME if type(self) is not Event else f"UNKNOWN {self.type}"

    @property
    def server_side(self) -> bool | None:
        """True on the listening side of the connection (from MPTCP_ATTR_FLAGS, or the older
        MPTCP_ATTR_SERVER_SIDE); None for events that say nothing about it."""
        if self.flags is not None:
            return bool(self.flags & nl.MPTCP_PM_EV_FLAG_SERVER_SIDE)
        if self.server_side_attr is not None:
            return bool(self.server_side_attr)
        if self.TYPE in (nl.MPTCP_EVENT_CREATED, nl.MPTCP_EVENT_ESTABLISHED):
            return False                  # the client side sends no flags at all
        return None

    @property
    def deny_join_id0(self) -> bool:
        """The peer said (MP_CAPABLE flag C) that it accepts no join to its initial address."""
        return bool((self.flags or 0) & nl.MPTCP_PM_EV_FLAG_DENY_JOIN_ID0)

    @property
    def addr_family(self) -> int | None:
        """The family of the event's addresses (ANNOUNCED carries no family attribute)."""
        if self.family is not None:
            return self.family
        addr = self.saddr or self.daddr
        if addr is None:
            return None
        return socket.AF_INET6 if ":" in addr else socket.AF_INET


class Created(Event):
    """A new MPTCP connection (on a client, at the SYN-ACK; on a server, at the third ACK)."""
    TYPE, NAME, KIND = nl.MPTCP_EVENT_CREATED, "CREATED", "created"


class Established(Event):
    """The connection is fully established: subflows can be added."""
    TYPE, NAME, KIND = nl.MPTCP_EVENT_ESTABLISHED, "ESTABLISHED", "established"


class Closed(Event):
    """The MPTCP connection is gone."""
    TYPE, NAME, KIND = nl.MPTCP_EVENT_CLOSED, "CLOSED", "closed"


class Announced(Event):
    """The peer announced an address (ADD_ADDR): rem_id, daddr, dport (the port announced, or
    the connection's)."""
    TYPE, NAME, KIND = nl.MPTCP_EVENT_ANNOUNCED, "ANNOUNCED", "announced"


class Removed(Event):
    """The peer removed the address with id rem_id (REMOVE_ADDR)."""
    TYPE, NAME, KIND = nl.MPTCP_EVENT_REMOVED, "REMOVED", "removed"


class SubEstablished(Event):
    """A subflow joined (or the initial one, loc_id 0, on some paths)."""
    TYPE, NAME, KIND = nl.MPTCP_EVENT_SUB_ESTABLISHED, "SF_ESTABLISHED", "sub_established"


class SubClosed(Event):
    """A subflow closed; `error` is its sk_err, reset_reason/flags the MP_TCPRST it got."""
    TYPE, NAME, KIND = nl.MPTCP_EVENT_SUB_CLOSED, "SF_CLOSED", "sub_closed"


class SubPriority(Event):
    """A subflow's backup flag changed (MP_PRIO sent or received)."""
    TYPE, NAME, KIND = nl.MPTCP_EVENT_SUB_PRIORITY, "SF_PRIO", "sub_priority"


class ListenerCreated(Event):
    """The path manager's listener for an address/port (a userspace PM announcing a port)."""
    TYPE, NAME, KIND = nl.MPTCP_EVENT_LISTENER_CREATED, "LISTENER_CREATED", "listener_created"


class ListenerClosed(Event):
    TYPE, NAME, KIND = nl.MPTCP_EVENT_LISTENER_CLOSED, "LISTENER_CLOSED", "listener_closed"


EVENT_CLASSES: dict[int, type[Event]] = {c.TYPE: c for c in (
    Created, Established, Closed, Announced, Removed, SubEstablished, SubClosed, SubPriority,
    ListenerCreated, ListenerClosed)}
EVENT_KINDS = {c.KIND: c for c in EVENT_CLASSES.values()}


def make_event(etype: int, attrs: dict[str, Any], when: float | None = None) -> Event:
    """The typed event for a decoded message."""
    kw: dict[str, Any] = {"type": etype, "attrs": attrs,
                          "time": time.time() if when is None else when}
    for name, value in attrs.items():
        f = _FIELDS.get(name)
        if f is not None:
            kw[f] = value
    kw["saddr"] = attrs.get("MPTCP_ATTR_SADDR4") or attrs.get("MPTCP_ATTR_SADDR6")
    kw["daddr"] = attrs.get("MPTCP_ATTR_DADDR4") or attrs.get("MPTCP_ATTR_DADDR6")
    return EVENT_CLASSES.get(etype, Event)(**kw)

"""MPTCP endpoints and limits over the `mptcp_pm` generic netlink family.

Extends pyroute2's `pyroute2.netlink.generic.mptcp` where it falls short on this kernel:
the interface index is an s32 (pyroute2 declares it `hex`), flags are given by name
(signal/subflow/backup/fullmesh), `set` (MPTCP_PM_CMD_SET_FLAGS) is missing, and dumps come back
as plain dicts. Names follow the uapi header (`include/uapi/linux/mptcp_pm.h`).
"""

from __future__ import annotations

import ipaddress
from socket import AF_INET, AF_INET6
from typing import Any

from pyroute2.netlink import NLA_F_NESTED, NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST, nla
from pyroute2.netlink.generic import AsyncGenericNetlinkSocket, GenericNetlinkSocket
from pyroute2.netlink.generic import mptcp as _pr2

MPTCP_PM_NAME = _pr2.MPTCP_GENL_NAME
MPTCP_PM_CMD_ADD_ADDR = _pr2.MPTCP_PM_CMD_ADD_ADDR
MPTCP_PM_CMD_DEL_ADDR = _pr2.MPTCP_PM_CMD_DEL_ADDR
MPTCP_PM_CMD_GET_ADDR = _pr2.MPTCP_PM_CMD_GET_ADDR
MPTCP_PM_CMD_FLUSH_ADDRS = _pr2.MPTCP_PM_CMD_FLUSH_ADDRS
MPTCP_PM_CMD_SET_LIMITS = _pr2.MPTCP_PM_CMD_SET_LIMITS
MPTCP_PM_CMD_GET_LIMITS = _pr2.MPTCP_PM_CMD_GET_LIMITS
MPTCP_PM_CMD_SET_FLAGS = _pr2.MPTCP_PM_CMD_SET_FLAGS

MPTCP_PM_ADDR_FLAG_SIGNAL = 1 << 0
MPTCP_PM_ADDR_FLAG_SUBFLOW = 1 << 1
MPTCP_PM_ADDR_FLAG_BACKUP = 1 << 2
MPTCP_PM_ADDR_FLAG_FULLMESH = 1 << 3
MPTCP_PM_ADDR_FLAG_IMPLICIT = 1 << 4

FLAGS = {
    "signal": MPTCP_PM_ADDR_FLAG_SIGNAL,
    "subflow": MPTCP_PM_ADDR_FLAG_SUBFLOW,
    "backup": MPTCP_PM_ADDR_FLAG_BACKUP,
    "fullmesh": MPTCP_PM_ADDR_FLAG_FULLMESH,
    "implicit": MPTCP_PM_ADDR_FLAG_IMPLICIT,
}


def flags_value(flags: Any) -> int:
    """('signal', 'backup') or 'signal,backup' or an int -> the u32 the kernel wants."""
    if isinstance(flags, int):
        return flags
    if isinstance(flags, str):
        flags = [f for f in flags.replace(",", " ").split() if f]
    value = 0
    for f in flags:
        if f not in FLAGS:
            raise ValueError(f"unknown MPTCP endpoint flag {f!r}")
        value |= FLAGS[f]
    return value


def flags_names(value: int) -> list[str]:
    return [name for name, bit in FLAGS.items() if value & bit]


class mptcp_pm_msg(_pr2.mptcp_msg):
    """pyroute2's message, with the attributes added since and IF_IDX as the s32 it is."""

    nla_map = (
        ("MPTCP_PM_ATTR_UNSPEC", "none"),
        ("MPTCP_PM_ATTR_ADDR", "pm_addr"),
        ("MPTCP_PM_ATTR_RCV_ADD_ADDRS", "uint32"),
        ("MPTCP_PM_ATTR_SUBFLOWS", "uint32"),
        ("MPTCP_PM_ATTR_TOKEN", "uint32"),
        ("MPTCP_PM_ATTR_LOC_ID", "uint8"),
        ("MPTCP_PM_ATTR_ADDR_REMOTE", "pm_addr"),
    )

    class pm_addr(nla):
        # Older kernels (6.1) validate nesting strictly: without the flag they answer
        # "NLA_F_NESTED is missing" (EINVAL) to every endpoint command.
        nla_flags = NLA_F_NESTED
        prefix = "MPTCP_PM_ADDR_ATTR_"
        nla_map = (
            ("MPTCP_PM_ADDR_ATTR_UNSPEC", "none"),
            ("MPTCP_PM_ADDR_ATTR_FAMILY", "uint16"),
            ("MPTCP_PM_ADDR_ATTR_ID", "uint8"),
            ("MPTCP_PM_ADDR_ATTR_ADDR4", "ip4addr"),
            ("MPTCP_PM_ADDR_ATTR_ADDR6", "ip6addr"),
            ("MPTCP_PM_ADDR_ATTR_PORT", "uint16"),
            ("MPTCP_PM_ADDR_ATTR_FLAGS", "uint32"),
            ("MPTCP_PM_ADDR_ATTR_IF_IDX", "int32"),
        )


def endpoint_attrs(addr: str | None = None, id: int | None = None, port: int | None = None,
                flags: Any = None, ifindex: int | None = None) -> dict[str, Any]:
    attrs: list[tuple[str, Any]] = []
    if addr is not None:
        ip = ipaddress.ip_address(addr)
        if ip.version == 4:
            attrs += [("MPTCP_PM_ADDR_ATTR_FAMILY", AF_INET), ("MPTCP_PM_ADDR_ATTR_ADDR4", str(ip))]
        else:
            attrs += [("MPTCP_PM_ADDR_ATTR_FAMILY", AF_INET6),
                      ("MPTCP_PM_ADDR_ATTR_ADDR6", str(ip))]
    if id is not None:
        attrs.append(("MPTCP_PM_ADDR_ATTR_ID", id))
    if port is not None:
        attrs.append(("MPTCP_PM_ADDR_ATTR_PORT", port))
    if flags is not None:
        attrs.append(("MPTCP_PM_ADDR_ATTR_FLAGS", flags_value(flags)))
    if ifindex is not None:
        attrs.append(("MPTCP_PM_ADDR_ATTR_IF_IDX", ifindex))
    return {"attrs": attrs}


def _decode_addr(msg: Any) -> dict[str, Any]:
    a = msg.get_attr("MPTCP_PM_ATTR_ADDR")
    flags = a.get_attr("MPTCP_PM_ADDR_ATTR_FLAGS") or 0
    return {
        "id": a.get_attr("MPTCP_PM_ADDR_ATTR_ID"),
        "addr": a.get_attr("MPTCP_PM_ADDR_ATTR_ADDR4") or a.get_attr("MPTCP_PM_ADDR_ATTR_ADDR6"),
        "port": a.get_attr("MPTCP_PM_ADDR_ATTR_PORT") or None,
        "flags": flags_names(flags),
        "ifindex": a.get_attr("MPTCP_PM_ADDR_ATTR_IF_IDX"),
    }


class AsyncMptcpPm(AsyncGenericNetlinkSocket):
    """Verb-first methods as in pyroute2: `endpoint('add', addr=..., flags=...)`."""

    async def setup_endpoint(self) -> None:
        if getattr(self.local, "transport", None) is not None:
            return
        await super().setup_endpoint()
        await self.bind(MPTCP_PM_NAME, mptcp_pm_msg)

    async def _request(self, cmd: int, attrs: list[tuple[str, Any]], flags: int) -> list[Any]:
        msg = mptcp_pm_msg()
        msg["cmd"] = cmd
        msg["version"] = 1
        msg["attrs"] = attrs
        return [x async for x in await self.nlm_request(msg, msg_type=self.prid,
                                                        msg_flags=flags)]

    async def endpoint(self, verb: str, **kw: Any) -> list[dict[str, Any]]:
        """show | add | del | set | flush. add: addr, id, port, flags, ifindex.
        del: id (and addr for id 0). set: id or addr, flags (backup, fullmesh)."""
        req = NLM_F_REQUEST | NLM_F_ACK
        if verb == "show":
            return [_decode_addr(m) for m in
                    await self._request(MPTCP_PM_CMD_GET_ADDR, [], NLM_F_REQUEST | NLM_F_DUMP)]
        if verb == "flush":
            await self._request(MPTCP_PM_CMD_FLUSH_ADDRS, [("MPTCP_PM_ATTR_ADDR", {"attrs": []})],
                                req)
            return []
        cmd = {"add": MPTCP_PM_CMD_ADD_ADDR, "del": MPTCP_PM_CMD_DEL_ADDR,
               "set": MPTCP_PM_CMD_SET_FLAGS}.get(verb)
        if cmd is None:
            raise ValueError(f"unknown endpoint verb {verb!r}")
        await self._request(cmd, [("MPTCP_PM_ATTR_ADDR", endpoint_attrs(**kw))], req)
        return []

    async def limits(self, verb: str, subflows: int | None = None,
                     add_addr_accepted: int | None = None) -> dict[str, int]:
        """show | set: the path manager's subflows and add_addr_accepted limits."""
        if verb == "set":
            attrs: list[tuple[str, Any]] = []
            if add_addr_accepted is not None:
                attrs.append(("MPTCP_PM_ATTR_RCV_ADD_ADDRS", add_addr_accepted))
            if subflows is not None:
                attrs.append(("MPTCP_PM_ATTR_SUBFLOWS", subflows))
            await self._request(MPTCP_PM_CMD_SET_LIMITS, attrs, NLM_F_REQUEST | NLM_F_ACK)
        elif verb != "show":
            raise ValueError(f"unknown limits verb {verb!r}")
        (msg,) = await self._request(MPTCP_PM_CMD_GET_LIMITS, [], NLM_F_REQUEST)
        return {"subflows": msg.get_attr("MPTCP_PM_ATTR_SUBFLOWS"),
                "add_addr_accepted": msg.get_attr("MPTCP_PM_ATTR_RCV_ADD_ADDRS")}


class MptcpPm(GenericNetlinkSocket):
    """Synchronous wrapper; open it inside a namespace (or pass `use_socket=`)."""

    async_class = AsyncMptcpPm

    def endpoint(self, verb: str, **kw: Any) -> list[dict[str, Any]]:
        return self._run_with_cleanup(self.asyncore.endpoint, verb, **kw)

    def limits(self, verb: str, **kw: Any) -> dict[str, int]:
        return self._run_with_cleanup(self.asyncore.limits, verb, **kw)

"""The `mptcp_pm` generic-netlink family: uapi names, message classes, and one socket.

Names and numbers are the uapi's verbatim (`include/uapi/linux/mptcp_pm.h`, `mptcp.h`; the
family is described in the kernel's `Documentation/netlink/specs/mptcp_pm.yaml`). The message
classes extend pyroute2's `pyroute2.netlink.generic.mptcp.mptcp_msg` in its own style (an
`nla_map` per attribute set), so pyroute2 code can use them as they are; the lab's topology
builder encodes its endpoints and limits with them.

Byte orders, as the kernel really uses them (checked against `ip mptcp` on this kernel, not
taken from the spec, which marks the address-set port big-endian):
- commands and endpoint dumps: MPTCP_PM_ADDR_ATTR_PORT is a host-order u16, the addresses are
  network order, MPTCP_PM_ATTR_TOKEN is a host-order u32 (equal to MPTCP_INFO's mptcpi_token);
- events: MPTCP_ATTR_SPORT/DPORT are network order (be16), MPTCP_ATTR_TOKEN host order.

`GenlSocket` speaks the family over a plain netlink socket: requests are encoded by a codec
built from the same `nla_map`s (pyroute2's own encoder costs ~0.1 ms per message, too slow
for a daemon answering thousands of events a second; a test holds the two to the same bytes),
errors come back with the kernel's extended-ack text, and events arrive on a socket of their
own so that an overflow (ENOBUFS) is seen, never silently skipped.
"""

from __future__ import annotations

import errno
import functools
import ipaddress
import os
import socket
import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from pyroute2.netlink import genlmsg, nla
from pyroute2.netlink.generic import mptcp as _pr2

MPTCP_PM_NAME = "mptcp_pm"
MPTCP_PM_VER = 1
MPTCP_PM_CMD_GRP_NAME = "mptcp_pm_cmds"
MPTCP_PM_EV_GRP_NAME = "mptcp_pm_events"

# enum mptcp_pm_cmd (commands)
MPTCP_PM_CMD_UNSPEC = 0
MPTCP_PM_CMD_ADD_ADDR = 1
MPTCP_PM_CMD_DEL_ADDR = 2
MPTCP_PM_CMD_GET_ADDR = 3
MPTCP_PM_CMD_FLUSH_ADDRS = 4
MPTCP_PM_CMD_SET_LIMITS = 5
MPTCP_PM_CMD_GET_LIMITS = 6
MPTCP_PM_CMD_SET_FLAGS = 7
MPTCP_PM_CMD_ANNOUNCE = 8
MPTCP_PM_CMD_REMOVE = 9
MPTCP_PM_CMD_SUBFLOW_CREATE = 10
MPTCP_PM_CMD_SUBFLOW_DESTROY = 11

COMMAND_NAMES = {
    MPTCP_PM_CMD_ADD_ADDR: "ADD_ADDR", MPTCP_PM_CMD_DEL_ADDR: "DEL_ADDR",
    MPTCP_PM_CMD_GET_ADDR: "GET_ADDR", MPTCP_PM_CMD_FLUSH_ADDRS: "FLUSH_ADDRS",
    MPTCP_PM_CMD_SET_LIMITS: "SET_LIMITS", MPTCP_PM_CMD_GET_LIMITS: "GET_LIMITS",
    MPTCP_PM_CMD_SET_FLAGS: "SET_FLAGS", MPTCP_PM_CMD_ANNOUNCE: "ANNOUNCE",
    MPTCP_PM_CMD_REMOVE: "REMOVE", MPTCP_PM_CMD_SUBFLOW_CREATE: "SUBFLOW_CREATE",
    MPTCP_PM_CMD_SUBFLOW_DESTROY: "SUBFLOW_DESTROY",
}

# enum mptcp_event_type
MPTCP_EVENT_UNSPEC = 0
MPTCP_EVENT_CREATED = 1
MPTCP_EVENT_ESTABLISHED = 2
MPTCP_EVENT_CLOSED = 3
MPTCP_EVENT_ANNOUNCED = 6
MPTCP_EVENT_REMOVED = 7
MPTCP_EVENT_SUB_ESTABLISHED = 10
MPTCP_EVENT_SUB_CLOSED = 11
MPTCP_EVENT_SUB_PRIORITY = 13
MPTCP_EVENT_LISTENER_CREATED = 15
MPTCP_EVENT_LISTENER_CLOSED = 16

# endpoint flags (MPTCP_PM_ADDR_ATTR_FLAGS), in the order iproute2 prints them
MPTCP_PM_ADDR_FLAG_SIGNAL = 1 << 0
MPTCP_PM_ADDR_FLAG_SUBFLOW = 1 << 1
MPTCP_PM_ADDR_FLAG_BACKUP = 1 << 2
MPTCP_PM_ADDR_FLAG_FULLMESH = 1 << 3
MPTCP_PM_ADDR_FLAG_IMPLICIT = 1 << 4
MPTCP_PM_ADDR_FLAG_LAMINAR = 1 << 5
FLAGS = {
    "signal": MPTCP_PM_ADDR_FLAG_SIGNAL,
    "subflow": MPTCP_PM_ADDR_FLAG_SUBFLOW,
    "backup": MPTCP_PM_ADDR_FLAG_BACKUP,
    "fullmesh": MPTCP_PM_ADDR_FLAG_FULLMESH,
    "implicit": MPTCP_PM_ADDR_FLAG_IMPLICIT,
    "laminar": MPTCP_PM_ADDR_FLAG_LAMINAR,
}

# event flags (MPTCP_ATTR_FLAGS)
MPTCP_PM_EV_FLAG_DENY_JOIN_ID0 = 1 << 0
MPTCP_PM_EV_FLAG_SERVER_SIDE = 1 << 1
EVENT_FLAGS = {"deny_join_id0": MPTCP_PM_EV_FLAG_DENY_JOIN_ID0,
               "server_side": MPTCP_PM_EV_FLAG_SERVER_SIDE}

MPTCP_PM_ADDR_MAX = 8     # endpoints per namespace (net/mptcp/pm_kernel.c)
MPTCP_PM_MAX_LIMIT = 8    # the highest subflows / add_addr_accepted limit


def flags_value(flags: Any) -> int:
    """('signal', 'backup') or 'signal,backup' or an int -> the u32 the kernel wants."""
    if isinstance(flags, int):
        return flags
    if isinstance(flags, str):
        flags = [f for f in flags.replace(",", " ").split() if f]
    value = 0
    for f in flags:
        if f not in FLAGS:
            raise ValueError(f"unknown MPTCP endpoint flag {f!r} (one of {', '.join(FLAGS)})")
        value |= FLAGS[f]
    return value


def flags_names(value: int) -> list[str]:
    """The names of the known bits; unknown bits are left out (see flags_unknown)."""
    return [name for name, bit in FLAGS.items() if value & bit]


# -- message classes (pyroute2 style) -------------------------------------------------------

class mptcp_pm_msg(_pr2.mptcp_msg):
    """Commands and their replies (attribute set `attr`): pyroute2's message with the
    userspace-PM attributes added and IF_IDX as the s32 it is (pyroute2 declares `hex`)."""

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
        """The `address` attribute set (an endpoint, or one end of a subflow). A nest, and
        marked so: Linux 6.1 refuses it without NLA_F_NESTED ("NLA_F_NESTED is missing"),
        later kernels let it pass; pyroute2's own class does not set the flag."""

        prefix = "MPTCP_PM_ADDR_ATTR_"
        nla_flags = 1 << 15                      # NLA_F_NESTED
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


class mptcp_event_msg(genlmsg):
    """Events of the `mptcp_pm_events` group (attribute set `event-attr`)."""

    prefix = "MPTCP_ATTR_"
    nla_map = (
        ("MPTCP_ATTR_UNSPEC", "none"),
        ("MPTCP_ATTR_TOKEN", "uint32"),
        ("MPTCP_ATTR_FAMILY", "uint16"),
        ("MPTCP_ATTR_LOC_ID", "uint8"),
        ("MPTCP_ATTR_REM_ID", "uint8"),
        ("MPTCP_ATTR_SADDR4", "ip4addr"),
        ("MPTCP_ATTR_SADDR6", "ip6addr"),
        ("MPTCP_ATTR_DADDR4", "ip4addr"),
        ("MPTCP_ATTR_DADDR6", "ip6addr"),
        ("MPTCP_ATTR_SPORT", "be16"),
        ("MPTCP_ATTR_DPORT", "be16"),
        ("MPTCP_ATTR_BACKUP", "uint8"),
        ("MPTCP_ATTR_ERROR", "uint8"),
        ("MPTCP_ATTR_FLAGS", "uint16"),
        ("MPTCP_ATTR_TIMEOUT", "uint32"),
        ("MPTCP_ATTR_IF_IDX", "int32"),
        ("MPTCP_ATTR_RESET_REASON", "uint32"),
        ("MPTCP_ATTR_RESET_FLAGS", "uint32"),
        ("MPTCP_ATTR_SERVER_SIDE", "uint8"),
    )


@functools.lru_cache(maxsize=4096)
def parse_ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """ipaddress.ip_address, remembered: a daemon sees the same few addresses all day."""
    return ipaddress.ip_address(text)


def address_attrs(addr: str | None = None, id: int | None = None, port: int | None = None,
                  flags: Any = None, ifindex: int | None = None) -> dict[str, Any]:
    """The one builder of an `address` nest (MPTCP_PM_ATTR_ADDR / _ADDR_REMOTE), for the
    lab's topology builder and for the client alike. `port` is host order (the kernel
    converts it); `flags` by name or as a number."""
    attrs: list[tuple[str, Any]] = []
    if addr is not None:
        ip = parse_ip(str(addr))
        if ip.version == 4:
            attrs += [("MPTCP_PM_ADDR_ATTR_FAMILY", socket.AF_INET),
                      ("MPTCP_PM_ADDR_ATTR_ADDR4", str(ip))]
        else:
            attrs += [("MPTCP_PM_ADDR_ATTR_FAMILY", socket.AF_INET6),
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


def limits_attrs(subflows: int | None = None,
                 add_addr_accepted: int | None = None) -> list[tuple[str, Any]]:
    attrs: list[tuple[str, Any]] = []
    if add_addr_accepted is not None:
        attrs.append(("MPTCP_PM_ATTR_RCV_ADD_ADDRS", add_addr_accepted))
    if subflows is not None:
        attrs.append(("MPTCP_PM_ATTR_SUBFLOWS", subflows))
    return attrs


# -- a codec built from the nla_maps ---------------------------------------------------------

NLA_F_NESTED = 1 << 15
NLA_TYPE_MASK = 0x3FFF
_SCALARS = {"uint8": "=B", "uint16": "=H", "uint32": "=I", "int32": "=i", "be16": ">H",
            "be32": ">I", "uint64": "=Q"}
_OTHER_KINDS = {"none", "ip4addr", "ip6addr", "hex", "cdata"}


class Codec:
    """Encode/decode the attributes of one pyroute2 nla class, by its nla_map."""

    def __init__(self, cls: type) -> None:
        self.names: dict[int, str] = {}
        self.kinds: dict[int, Any] = {}
        self.index: dict[str, int] = {}
        for i, (name, kind) in enumerate(cls.nla_map):
            self.names[i], self.index[name] = name, i
            if kind in _SCALARS or kind in _OTHER_KINDS:
                self.kinds[i] = kind
            else:                              # a nest declared in the class, e.g. pm_addr
                self.kinds[i] = Codec(getattr(cls, kind))

    def decode(self, data: bytes | memoryview, off: int = 0, end: int | None = None
               ) -> dict[str, Any]:
        """TLVs -> {name: value}; an unknown attribute number is kept as `ATTR_<n>` bytes."""
        out: dict[str, Any] = {}
        end = len(data) if end is None else end
        while off + 4 <= end:
            length, atype = struct.unpack_from("=HH", data, off)
            if length < 4 or off + length > end:
                break
            atype &= NLA_TYPE_MASK
            start = off + 4
            kind = self.kinds.get(atype)
            name = self.names.get(atype, f"ATTR_{atype}")
            raw = bytes(data[start:off + length])
            if isinstance(kind, Codec):
                out[name] = kind.decode(data, start, off + length)
            elif kind in _SCALARS:
                fmt = _SCALARS[kind]
                size = struct.calcsize(fmt)
                out[name] = struct.unpack_from(fmt, raw)[0] if len(raw) >= size else raw
            elif kind == "ip4addr" and len(raw) >= 4:
                out[name] = socket.inet_ntop(socket.AF_INET, raw[:4])
            elif kind == "ip6addr" and len(raw) >= 16:
                out[name] = socket.inet_ntop(socket.AF_INET6, raw[:16])
            else:
                out[name] = raw
            off += (length + 3) & ~3
        return out

    def encode(self, attrs: list[tuple[str, Any]]) -> bytes:
        parts = []
        for name, value in attrs:
            atype = self.index[name]
            kind = self.kinds[atype]
            if isinstance(kind, Codec):
                inner = value["attrs"] if isinstance(value, dict) else value
                payload = kind.encode(inner)
                atype |= NLA_F_NESTED
            elif kind in _SCALARS:
                payload = struct.pack(_SCALARS[kind], value)
            elif kind == "ip4addr":
                payload = socket.inet_pton(socket.AF_INET, value)
            elif kind == "ip6addr":
                payload = socket.inet_pton(socket.AF_INET6, value)
            elif kind == "none":
                payload = b""
            else:
                payload = bytes(value)
            length = 4 + len(payload)
            parts.append(struct.pack("=HH", length, atype) + payload
                         + b"\0" * ((4 - length % 4) % 4))
        return b"".join(parts)


PM_CODEC = Codec(mptcp_pm_msg)
EVENT_CODEC = Codec(mptcp_event_msg)


# -- the generic-netlink socket ----------------------------------------------------------------

NETLINK_GENERIC = 16
SOL_NETLINK = 270
NETLINK_ADD_MEMBERSHIP = 1
NETLINK_CAP_ACK = 10
NETLINK_EXT_ACK = 11
NETLINK_NO_ENOBUFS = 5
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLM_F_REQUEST = 1
NLM_F_MULTI = 2
NLM_F_ACK = 4
NLM_F_DUMP = 0x300
NLM_F_ACK_TLVS = 0x200
NLMSGERR_ATTR_MSG = 1
NLMSGERR_ATTR_OFFS = 2
GENL_ID_CTRL = 0x10
CTRL_CMD_GETFAMILY = 3
CTRL_CMD_GETPOLICY = 10
CTRL_ATTR_FAMILY_ID = 1
CTRL_ATTR_FAMILY_NAME = 2
CTRL_ATTR_VERSION = 3
CTRL_ATTR_MAXATTR = 5
CTRL_ATTR_OPS = 6
CTRL_ATTR_MCAST_GROUPS = 7
CTRL_ATTR_POLICY = 8
CTRL_ATTR_OP_POLICY = 9
CTRL_ATTR_OP = 10
CTRL_ATTR_OP_ID = 1
CTRL_ATTR_MCAST_GRP_NAME = 1
CTRL_ATTR_MCAST_GRP_ID = 2
CTRL_ATTR_POLICY_DO = 1
CTRL_ATTR_POLICY_DUMP = 2
HDR = struct.Struct("=IHHII")
GENL_HDR = struct.Struct("=BBH")


class NetlinkError(OSError):
    """A request the kernel refused: errno, the kernel's extended-ack text, the command."""

    def __init__(self, code: int, extack: str = "", what: str = "") -> None:
        super().__init__(code, extack or os.strerror(code))
        self.extack = extack
        self.what = what


def _tlvs(data: bytes | memoryview, off: int, end: int) -> Iterator[tuple[int, int, int]]:
    """(type, start, end) of each attribute in data[off:end]."""
    while off + 4 <= end:
        length, atype = struct.unpack_from("=HH", data, off)
        if length < 4 or off + length > end:
            return
        yield atype & NLA_TYPE_MASK, off + 4, off + length
        off += (length + 3) & ~3


def _extack(data: bytes, off: int, length: int, flags: int, echo: int = 16
             ) -> tuple[str, int | None]:
    """The extended ack's message and the offset of the attribute it blames, if any
    (`echo`: the bytes of our request's header the kernel echoed, 16 under NETLINK_CAP_ACK,
    none in an NLMSG_DONE)."""
    if not flags & NLM_F_ACK_TLVS:
        return "", None
    msg, offs = "", None
    for atype, s, e in _tlvs(data, off + 16 + 4 + echo, off + length):
        if atype == NLMSGERR_ATTR_MSG:
            msg = data[s:e].rstrip(b"\0").decode(errors="replace")
        elif atype == NLMSGERR_ATTR_OFFS and e - s >= 4:
            offs = struct.unpack_from("=I", data, s)[0]
    return msg, offs


@dataclass
class Family:
    """What the running kernel says about a generic-netlink family (its own description,
    not a version number): id, version, commands, multicast groups, attribute policies."""

    name: str
    id: int
    version: int
    maxattr: int
    ops: frozenset[int]
    groups: dict[str, int]
    # per command: attribute numbers its `do` policy accepts (None: the kernel cannot say)
    policies: dict[int, frozenset[int] | None] = field(default_factory=dict)


_families: dict[str, Family] = {}
_families_lock = threading.Lock()


def open_socket(rcvbuf: int | None = None) -> socket.socket:
    """A generic-netlink socket in the calling thread's namespace, acks carrying extack."""
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC,
                         NETLINK_GENERIC)
    sock.setsockopt(SOL_NETLINK, NETLINK_EXT_ACK, 1)
    sock.setsockopt(SOL_NETLINK, NETLINK_CAP_ACK, 1)
    if rcvbuf:
        try:
            sock.setsockopt(socket.SOL_SOCKET, 33, rcvbuf)      # SO_RCVBUFFORCE (root)
        except PermissionError:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.bind((0, 0))
    return sock


class GenlSocket:
    """Requests to one generic-netlink family over one socket, answered synchronously."""

    def __init__(self, sock: socket.socket, family: str = MPTCP_PM_NAME) -> None:
        self.sock = sock
        self._seq = 0
        self.family = self._resolve(family)

    def close(self) -> None:
        self.sock.close()

    # -- the controller --------------------------------------------------------------------

    def _ctrl(self, cmd: int, attrs: bytes, dump: bool = False) -> list[bytes]:
        return self._talk(GENL_ID_CTRL, cmd, attrs, dump=dump, ack=False,
                          what="the generic-netlink controller")

    def _resolve(self, name: str) -> Family:
        """Family id, ops and groups are the same in every namespace: ask once a process."""
        with _families_lock:
            fam = _families.get(name)
        if fam is not None:
            return fam
        raw = name.encode() + b"\0"
        attr = struct.pack("=HH", 4 + len(raw), CTRL_ATTR_FAMILY_NAME) + raw
        attr += b"\0" * ((4 - len(attr) % 4) % 4)
        try:
            (reply,) = self._ctrl(CTRL_CMD_GETFAMILY, attr)
        except NetlinkError as exc:
            if exc.errno == errno.ENOENT:
                raise NetlinkError(errno.ENOENT, f"this kernel has no generic netlink family "
                                   f"{name!r} (built without MPTCP?)") from None
            raise
        fam_id = version = maxattr = 0
        ops: set[int] = set()
        groups: dict[str, int] = {}
        for atype, s, e in _tlvs(reply, 0, len(reply)):
            if atype == CTRL_ATTR_FAMILY_ID:
                fam_id = struct.unpack_from("=H", reply, s)[0]
            elif atype == CTRL_ATTR_VERSION:
                version = struct.unpack_from("=I", reply, s)[0]
            elif atype == CTRL_ATTR_MAXATTR:
                maxattr = struct.unpack_from("=I", reply, s)[0]
            elif atype == CTRL_ATTR_OPS:
                for _, os_, oe in _tlvs(reply, s, e):
                    for t, vs, _ in _tlvs(reply, os_, oe):
                        if t == CTRL_ATTR_OP_ID:
                            ops.add(struct.unpack_from("=I", reply, vs)[0])
            elif atype == CTRL_ATTR_MCAST_GROUPS:
                for _, gs, ge in _tlvs(reply, s, e):
                    gname, gid = "", 0
                    for t, vs, ve in _tlvs(reply, gs, ge):
                        if t == CTRL_ATTR_MCAST_GRP_NAME:
                            gname = reply[vs:ve].rstrip(b"\0").decode()
                        elif t == CTRL_ATTR_MCAST_GRP_ID:
                            gid = struct.unpack_from("=I", reply, vs)[0]
                    groups[gname] = gid
        fam = Family(name, fam_id, version, maxattr, frozenset(ops), groups)
        with _families_lock:
            _families.setdefault(name, fam)
            return _families[name]

    def policy(self, cmd: int) -> frozenset[int] | None:
        """Attribute numbers the `do` policy of `cmd` accepts at the top level, asked of the
        kernel (CTRL_CMD_GETPOLICY); None when this kernel cannot say."""
        fam = self.family
        if cmd in fam.policies:
            return fam.policies[cmd]
        attrs = struct.pack("=HHH2x", 6, CTRL_ATTR_FAMILY_ID, fam.id)
        attrs += struct.pack("=HHI", 8, CTRL_ATTR_OP, cmd)
        try:
            replies = self._ctrl(CTRL_CMD_GETPOLICY, attrs, dump=True)
        except NetlinkError:
            fam.policies[cmd] = None
            return None
        tables: dict[int, set[int]] = {}
        do_idx: int | None = None
        for reply in replies:
            for atype, s, e in _tlvs(reply, 0, len(reply)):
                if atype == CTRL_ATTR_POLICY:
                    for idx, ps, pe in _tlvs(reply, s, e):
                        for attr_no, _, _ in _tlvs(reply, ps, pe):
                            tables.setdefault(idx, set()).add(attr_no)
                elif atype == CTRL_ATTR_OP_POLICY:
                    for _op, os_, oe in _tlvs(reply, s, e):
                        for t, vs, _ in _tlvs(reply, os_, oe):
                            if t == CTRL_ATTR_POLICY_DO:
                                do_idx = struct.unpack_from("=I", reply, vs)[0]
        top = frozenset(tables.get(do_idx if do_idx is not None else 0, ()))
        fam.policies[cmd] = top
        return top

    # -- requests --------------------------------------------------------------------------

    def request(self, cmd: int, attrs: list[tuple[str, Any]], dump: bool = False,
                what: str = "") -> list[dict[str, Any]]:
        """Send one command; return the decoded replies (none for a plain ack)."""
        replies = self._talk(self.family.id, cmd, PM_CODEC.encode(attrs), dump=dump,
                             ack=not dump, what=what or COMMAND_NAMES.get(cmd, str(cmd)))
        return [PM_CODEC.decode(r) for r in replies]

    def _talk(self, msg_type: int, cmd: int, payload: bytes, dump: bool, ack: bool,
              what: str) -> list[bytes]:
        self._seq = (self._seq + 1) & 0xFFFFFFFF or 1
        seq = self._seq
        flags = NLM_F_REQUEST | (NLM_F_DUMP if dump else 0) | (NLM_F_ACK if ack else 0)
        msg = HDR.pack(20 + len(payload), msg_type, flags, seq, 0) + \
            GENL_HDR.pack(cmd, MPTCP_PM_VER, 0) + payload
        self.sock.send(msg)
        replies: list[bytes] = []
        while True:
            data = self.sock.recv(1 << 16)
            off = 0
            while off + 16 <= len(data):
                length, mtype, mflags, mseq, _pid = HDR.unpack_from(data, off)
                if length < 16:
                    break
                if mseq == seq:
                    if mtype == NLMSG_ERROR:
                        code = -struct.unpack_from("=i", data, off + 16)[0]
                        if code:
                            text, _ = _extack(data, off, length, mflags)
                            raise NetlinkError(code, text, what)
                        return replies
                    if mtype == NLMSG_DONE:
                        if length >= 20:
                            code = -struct.unpack_from("=i", data, off + 16)[0]
                            if code:
                                text, _ = _extack(data, off, length, mflags, echo=0)
                                raise NetlinkError(code, text, what)
                        return replies
                    replies.append(data[off + 20:off + length])
                    if not (mflags & NLM_F_MULTI) and not ack:
                        return replies
                off += (length + 3) & ~3


class EventSocket:
    """A subscription to the `mptcp_pm_events` group. While it is open the kernel counts a
    listener (a userspace path manager is only considered present while one exists)."""

    def __init__(self, sock: socket.socket, family: Family) -> None:
        self.sock = sock
        self.family = family
        group = family.groups.get(MPTCP_PM_EV_GRP_NAME)
        if group is None:
            raise NetlinkError(errno.EOPNOTSUPP, "this kernel's mptcp_pm family has no "
                               f"{MPTCP_PM_EV_GRP_NAME} group")
        sock.setsockopt(SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, group)

    def fileno(self) -> int:
        return self.sock.fileno()

    def close(self) -> None:
        self.sock.close()

    def grow(self, limit: int = 64 << 20) -> int:
        """Double the kernel buffer (up to `limit`); the new size."""
        size = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        want = min(limit, size * 2)
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, 33, want // 2)   # SO_RCVBUFFORCE
        except PermissionError:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, want // 2)
        return self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)

    def read(self, block: bool = True) -> list[tuple[int, dict[str, Any]]]:
        """Every event in one datagram batch: (event type, attributes). Raises
        OSError(ENOBUFS) when the kernel had to drop events (the buffer overflowed), and
        BlockingIOError when not `block`ing and nothing is queued.

        After an ENOBUFS the kernel stays quiet about further drops until the queue has been
        read empty: a reader that wants to know it lost nothing more drains it, then looks."""
        data = self.sock.recv(1 << 16, 0 if block else socket.MSG_DONTWAIT)
        out = []
        off = 0
        fam_id = self.family.id
        while off + 20 <= len(data):
            length, mtype, _flags, _seq, _pid = HDR.unpack_from(data, off)
            if length < 20:
                break
            if mtype == fam_id:
                out.append((data[off + 16], EVENT_CODEC.decode(data, off + 20, off + length)))
            off += (length + 3) & ~3
        return out

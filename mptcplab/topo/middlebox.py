"""Middleboxes: one declarative line each, rendered to an nftables ruleset for the node.

Each box says what it does to MPTCP in its docstring; `Lab` loads the rules of all boxes of a node
with one `nft -f -` inside that node's namespace. On a router the rules sit in the forward path;
on a host in its input path, unless `hook=` says otherwise. Every rule carries a counter, so
`lab[node].nft_counters()` shows how often a box acted.

All of them were checked against this kernel (6.18) and nft 1.0.6: `tcp option mptcp subtype`
and raw `tcp option @30,...` matches, `reset tcp option mptcp` (strips option 30, fixing the TCP
checksum), `@ih` payload writes (the TCP checksum is updated incrementally) and `masquerade`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from mptcplab.errors import BadInput

if TYPE_CHECKING:
    from mptcplab.topo.model import Node

TABLE = "mptcplab"
HOOKS = ("prerouting", "input", "forward", "output", "postrouting")

# RFC 8684 section 7 subtype registry; names as in the lab's layers (snake_case).
SUBTYPES = {
    "mp_capable": 0x0, "mp_join": 0x1, "dss": 0x2, "add_addr": 0x3, "remove_addr": 0x4,
    "mp_prio": 0x5, "mp_fail": 0x6, "mp_fastclose": 0x7, "mp_tcprst": 0x8,
}


@dataclass(frozen=True)
class Middlebox:
    """Base: `rules(node)` gives (hook, rule) pairs; `hook=None` picks the node's default."""

    hook: str | None = field(default=None, kw_only=True)

    def rules(self, node: Node) -> list[tuple[str, str]]:
        raise NotImplementedError

    def __str__(self) -> str:
        """Its --middlebox form where it has one (strip:syn-ack), else its repr."""
        kind, arg = _KIND_OF.get(type(self), ("", None))
        if not kind:
            return repr(self)
        value = getattr(self, arg) if arg else None
        text = kind if value in (None, "") else f"{kind}:{value}"
        extra = [f"{f}={getattr(self, f)}" for f in ("dport", "sport", "echo", "hook")
                 if getattr(self, f, None) is not None]
        return text + (f"({', '.join(extra)})" if extra else "")

    def check(self, node: Node, ifnames: set[str]) -> None:
        if self.hook is not None and self.hook not in HOOKS:
            raise BadInput(f"{node.name}: {self}: hook {self.hook!r} not one of "
                           f"{', '.join(HOOKS)}")

    def _hook(self, node: Node) -> str:
        return self.hook or ("forward" if node.is_router else "input")

    @property
    def disables_checksum_offload(self) -> bool:
        return False


@dataclass(frozen=True)
class DropMpCapableSyn(Middlebox):
    """Drop SYNs carrying MP_CAPABLE: after `syn_retrans_before_tcp_fallback` retransmissions
    the client retries without the option and the connection falls back to plain TCP (and the
    kernel then blackholes MPTCP in that namespace for `blackhole_timeout` seconds)."""

    def rules(self, node: Node) -> list[tuple[str, str]]:
        return [(self._hook(node),
                 "tcp flags & (syn | ack) == syn tcp option mptcp subtype 0 counter drop")]


_STRIP = {
    "all": "meta l4proto tcp",
    "syn-ack": "tcp flags & (syn | ack) == syn | ack",
    "non-syn": "tcp flags & syn == 0",
}


@dataclass(frozen=True)
class StripMptcpOption(Middlebox):
    """Overwrite option 30 with NOPs in `segments`: "all", "syn-ack" or "non-syn".

    all: the server never sees MP_CAPABLE (plain TCP). syn-ack: the client falls back
    (MPCapableFallbackSYNACK) and so does the server on the third ACK (MPCapableFallbackACK).
    non-syn: the handshake succeeds, then data without DSS makes both ends fall back.
    """

    segments: str = "all"

    def check(self, node: Node, ifnames: set[str]) -> None:
        super().check(node, ifnames)
        if self.segments not in _STRIP:
            raise BadInput(f"{node.name}: StripMptcpOption segments={self.segments!r}, "
                           f"not one of {', '.join(_STRIP)}")

    def rules(self, node: Node) -> list[tuple[str, str]]:
        return [(self._hook(node), f"{_STRIP[self.segments]} counter reset tcp option mptcp")]


@dataclass(frozen=True)
class DropMptcpSubtype(Middlebox):
    """Drop segments whose (first) MPTCP option has the given subtype, e.g. "add_addr".

    echo=True/False narrows ADD_ADDR to echoes / announcements (the E bit). Linux sends an
    ADD_ADDR (echo) alone on a pure ACK, so the first option is the one that counts.
    """

    subtype: str | int = "dss"
    echo: bool | None = None

    @property
    def number(self) -> int:
        return SUBTYPES[self.subtype] if isinstance(self.subtype, str) else int(self.subtype)

    def check(self, node: Node, ifnames: set[str]) -> None:
        super().check(node, ifnames)
        if not isinstance(self.subtype, (str, int)) or isinstance(self.subtype, bool):
            raise BadInput(f"{node.name}: MPTCP subtype {self.subtype!r} is neither a name "
                           f"({', '.join(SUBTYPES)}) nor a number")
        if self.echo is not None and not isinstance(self.echo, bool):
            raise BadInput(f"{node.name}: echo={self.echo!r} must be True, False or None")
        if isinstance(self.subtype, str) and self.subtype not in SUBTYPES:
            raise BadInput(f"{node.name}: unknown MPTCP subtype {self.subtype!r} "
                           f"(one of {', '.join(SUBTYPES)})")
        if not 0 <= self.number <= 15:
            raise BadInput(f"{node.name}: MPTCP subtype {self.subtype} out of range 0-15")
        if self.echo is not None and self.number != SUBTYPES["add_addr"]:
            raise BadInput(f"{node.name}: echo= only applies to add_addr")

    def rules(self, node: Node) -> list[tuple[str, str]]:
        if self.echo is None:
            match = f"tcp option mptcp subtype {self.number}"
        else:  # third byte of the option: subtype nibble, then 3 reserved bits and E
            match = f"tcp option @30,16,8 == {(self.number << 4) | int(self.echo):#04x}"
        return [(self._hook(node), f"{match} counter drop")]


@dataclass(frozen=True)
class CorruptPayload(Middlebox):
    """Overwrite one payload byte of the `nth` TCP data segment that passes (1 = first), once.

    The byte at `offset` in that segment's payload becomes `value`; segments where it already
    is `value` are not counted. nft fixes the TCP checksum, and the lab turns off transmit
    checksum offload on every link so segments carry real checksums: only the MPTCP DSS
    checksum (net.mptcp.checksum_enabled=1) can notice. `dport`/`sport` narrow the match.
    Linux answers a bad checksum in the first mapping of a subflow with a silent fallback,
    later ones with MP_FAIL: pick `nth` past the first 64 KiB to see MP_FAIL.
    """

    nth: int = 1
    offset: int = 0
    value: int = 0xFF
    dport: int | None = None
    sport: int | None = None

    @property
    def disables_checksum_offload(self) -> bool:
        return True

    def check(self, node: Node, ifnames: set[str]) -> None:
        super().check(node, ifnames)
        # Every value lands in an nft ruleset: only whole numbers in range get there.
        _whole(node, "CorruptPayload nth", self.nth, 1, 999_999_999)
        _whole(node, "CorruptPayload offset", self.offset, 0, 65535)
        _whole(node, "CorruptPayload value", self.value, 0, 255)
        for what, port in (("dport", self.dport), ("sport", self.sport)):
            if port is not None:
                _whole(node, f"CorruptPayload {what}", port, 1, 65535)

    def rules(self, node: Node) -> list[tuple[str, str]]:
        bits = self.offset * 8
        match = "meta l4proto tcp"
        if self.dport is not None:
            match += f" tcp dport {self.dport}"
        if self.sport is not None:
            match += f" tcp sport {self.sport}"
        # numgen inc counts only segments reaching it (payload present, byte differs);
        # the kernel's counter starts so that the first value is 0.
        rule = (f"{match} @ih,{bits},8 != {self.value:#04x} "
                f"numgen inc mod 1000000000 == {self.nth - 1} counter "
                f"@ih,{bits},8 set {self.value:#04x}")
        return [(self._hook(node), rule)]


@dataclass(frozen=True)
class Nat(Middlebox):
    """Source NAT (masquerade) of everything leaving by interface `out`."""

    out: str = "eth0"

    def check(self, node: Node, ifnames: set[str]) -> None:
        if self.out not in ifnames:
            raise BadInput(f"{node.name}: Nat out={self.out!r} is not an interface of "
                           f"{node.name}")

    def rules(self, node: Node) -> list[tuple[str, str]]:
        return [("nat-postrouting", f'oifname "{self.out}" counter masquerade')]


def _whole(node: Node, what: str, value: object, lo: int, hi: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise BadInput(f"{node.name}: {what}={value!r} must be a whole number from {lo} "
                       f"to {hi}")


# The command line's names for the boxes: `--middlebox NODE:KIND[:ARG]`.
KINDS: dict[str, tuple[str, str]] = {
    # kind: (what the argument is, what the box does)
    "drop-mp-capable-syn": ("", "drop SYNs carrying MP_CAPABLE (fallback after retries)"),
    "strip": ("all|syn-ack|non-syn (default all)", "overwrite option 30 with NOPs"),
    "drop-subtype": ("SUBTYPE: " + "|".join(SUBTYPES), "drop segments of that MPTCP subtype"),
    "corrupt": ("N: the Nth data segment (default 1)",
                "change one payload byte, TCP checksum fixed (DSS checksums notice)"),
    "nat": ("IFACE: the outgoing interface", "masquerade what leaves by IFACE"),
}


_KIND_OF: dict[type, tuple[str, str | None]] = {
    DropMpCapableSyn: ("drop-mp-capable-syn", None), StripMptcpOption: ("strip", "segments"),
    DropMptcpSubtype: ("drop-subtype", "subtype"), CorruptPayload: ("corrupt", "nth"),
    Nat: ("nat", "out"),
}


def from_spec(spec: str) -> tuple[str, Middlebox]:
    """`NODE:KIND[:ARG]` -> (node, box), e.g. `router:strip:syn-ack`, `router:corrupt:70`."""
    node, _, rest = spec.partition(":")
    kind, _, arg = rest.partition(":")
    kind = kind.strip().lower()
    if not node or not kind:
        raise BadInput(f"--middlebox wants NODE:KIND[:ARG], got {spec!r} (kinds: "
                       f"{', '.join(KINDS)})")
    if kind not in KINDS:
        raise BadInput(f"--middlebox {spec}: no middlebox kind {kind!r} (kinds: "
                       f"{', '.join(KINDS)})")
    box: Middlebox
    if kind == "drop-mp-capable-syn":
        if arg:
            raise BadInput(f"--middlebox {spec}: {kind} takes no argument")
        box = DropMpCapableSyn()
    elif kind == "strip":
        box = StripMptcpOption(arg or "all")
    elif kind == "drop-subtype":
        if not arg:
            raise BadInput(f"--middlebox {spec}: say which subtype ({', '.join(SUBTYPES)})")
        box = DropMptcpSubtype(int(arg) if arg.isdigit() else arg.lower())
    elif kind == "corrupt":
        if arg and not arg.isdigit():
            raise BadInput(f"--middlebox {spec}: the argument of corrupt is N, the Nth data "
                           "segment")
        box = CorruptPayload(nth=int(arg or 1))
    else:
        if not arg:
            raise BadInput(f"--middlebox {spec}: say which interface NAT leaves by")
        box = Nat(out=arg)
    return node, box


def render(node: Node, loss: dict[str, float] | None = None) -> str:
    """The node's whole ruleset (middleboxes + per-interface loss) as `nft -f` input."""
    chains: dict[str, list[str]] = {}
    for mb in node.middleboxes:
        for hook, rule in mb.rules(node):
            chains.setdefault(hook, []).append(rule)
    out: list[str] = []
    if chains:
        out.append(f"table inet {TABLE} {{")
        for hook, rules in chains.items():
            if hook == "nat-postrouting":
                head = "type nat hook postrouting priority srcnat; policy accept;"
                name = "nat_postrouting"
            else:
                head = f"type filter hook {hook} priority filter; policy accept;"
                name = hook
            out.append(f"\tchain {name} {{")
            out.append(f"\t\t{head}")
            out.extend(f"\t\t{r}" for r in rules)
            out.append("\t}")
        out.append("}")
    for ifname, pct in (loss or {}).items():
        # numgen random is uniform in [0, 1e6): drop when below pct * 1e4.
        out.append(f"table netdev {TABLE}_loss_{ifname.replace('-', '_').replace('.', '_')} {{")
        out.append("\tchain ingress {")
        out.append(f'\t\ttype filter hook ingress device "{ifname}" priority filter;')
        out.append(f"\t\tnumgen random mod 1000000 < {round(pct * 10000)} counter drop")
        out.append("\t}")
        out.append("}")
    return "\n".join(out) + ("\n" if out else "")

"""Keep a node's kernel from resetting flows that Python owns.

A segment crafted with Scapy (or the peer) belongs to no socket of the kernel in its
namespace, so the kernel answers the other side's reply with a RST and the flow dies. An nft
rule in that namespace drops the kernel's outgoing RSTs for the ports Python uses:

    with kernel_rsts_dropped(lab["client"], 40001):
        synack = lab["client"].call(sr1, syn, timeout=2)

Segments carrying the mark ``OWN_MARK`` (SO_MARK on the sending socket) pass, so Python can
still send RSTs of its own.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

from mptcplab.errors import BadInput, LabError

OWN_MARK = 0x6D70
_tables = itertools.count(1)


def ruleset(table: str, *ports: str, sets: tuple[str, ...] = (), mark: int = OWN_MARK) -> str:
    """An nft table dropping outgoing RSTs from the source ports `ports` (each in nft syntax:
    `40001`, `40000-40099`, `{ 1, 2 }`, or `@name` of one of the port `sets` the table
    declares, filled later with `add element`) unless they carry `mark`."""
    lines = [f"table inet {table} {{"]
    lines += [f"  set {name} {{ type inet_service; }}" for name in sets]
    lines += ["  chain out {", "    type filter hook output priority 0; policy accept;"]
    lines += [f"    meta mark != {mark:#x} tcp sport {p} tcp flags & rst == rst drop"
              for p in ports]
    return "\n".join(lines + ["  }", "}"]) + "\n"


@contextmanager
def kernel_rsts_dropped(host: Any, *ports: int) -> Iterator[str]:
    """While the block runs, `host`'s kernel sends no RST from these source ports (the table's
    name is yielded); the rule goes away after the block, and with the lab."""
    if not ports or not all(isinstance(p, int) and not isinstance(p, bool) and 0 < p < 65536
                            for p in ports):
        raise BadInput(f"ports must be whole numbers from 1 to 65535, got {ports!r}")
    table = f"mptl_rst_{next(_tables)}"
    host.nft(ruleset(table, "{ " + ", ".join(map(str, sorted(set(ports)))) + " }"))
    try:
        yield table
    finally:
        with suppress(LabError):
            host.nft(f"delete table inet {table}\n")

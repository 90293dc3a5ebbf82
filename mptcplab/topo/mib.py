"""MIB counters of one namespace (MPTcpExt, TcpExt, IpExt from netstat; Tcp, Ip, ... from snmp).

Names are as `nstat` prints them: `MPTcpExtMPCapableSYNRX`, `TcpExtTCPSACKReneging`,
`TcpInCsumErrors`. Take a snapshot, do something, subtract: `after - before` is a Counters of
differences, so `delta["MPTcpExtMPJoinSynRx"]` reads like the kernel selftests' chk_join_nr.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

# /proc/net is a link to /proc/self/net, the namespace of the *thread group leader*; a worker
# thread that setns()ed must read its own view.
NETSTAT_FILES = ("/proc/thread-self/net/netstat", "/proc/thread-self/net/snmp")


def parse(text: str) -> dict[str, int]:
    """Parse the header/value line pairs of /proc/net/netstat or /proc/net/snmp."""
    out: dict[str, int] = {}
    lines = text.splitlines()
    for head, vals in zip(lines[::2], lines[1::2]):
        prefix, _, names = head.partition(":")
        vprefix, _, values = vals.partition(":")
        if prefix != vprefix:
            continue
        for name, value in zip(names.split(), values.split()):
            out[prefix + name] = int(value)
    return out


def read_here() -> dict[str, int]:
    """Counters of the calling thread's namespace."""
    out: dict[str, int] = {}
    for path in NETSTAT_FILES:
        with open(path) as f:
            out.update(parse(f.read()))
    return out


class Counters(Mapping[str, int]):
    """Read-only counters; unknown names raise KeyError (a typo must not read as 0)."""

    def __init__(self, values: Mapping[str, int], node: str = "") -> None:
        self._values = dict(values)
        self.node = node

    def __getitem__(self, name: str) -> int:
        try:
            return self._values[name]
        except KeyError:
            raise KeyError(f"{self.node or 'namespace'} has no counter {name!r}") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __sub__(self, before: Mapping[str, int]) -> Counters:
        return Counters({k: v - before.get(k, 0) for k, v in self._values.items()}, self.node)

    def nonzero(self, prefix: str = "") -> dict[str, int]:
        """The counters that are not 0 (optionally only those starting with `prefix`)."""
        return {k: v for k, v in self._values.items() if v and k.startswith(prefix)}

    def expect(self, **expected: int) -> None:
        """Raise AssertionError naming every counter that differs, kernel-selftest style:
        `server MPTcpExtMPJoinSynRx: expected 1, got 0`."""
        bad = [f"{self.node} {k}: expected {v}, got {self[k]}" for k, v in expected.items()
               if self[k] != v]
        if bad:
            raise AssertionError("; ".join(bad))

    def __repr__(self) -> str:
        return f"Counters({self.node!r}, {self.nonzero()!r})"

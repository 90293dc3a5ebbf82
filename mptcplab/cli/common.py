"""What several command groups share: argument types, `-n NETNS|LAB:NODE`, `--json`."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from typing import Any


def _limits(low: float | None, high: float | None) -> str:
    if low is not None and high is not None:
        return f"{low:g}-{high:g}"
    return f"at least {low:g}" if low is not None else f"at most {high:g}"


def number(convert: Callable[[str], float], noun: str, low: float | None = None,
           high: float | None = None, *, above: float | None = None) -> Callable[[str], Any]:
    """An argparse type: `convert(text)` (int or float), said to be `noun` when it is not one,
    and kept within [low, high] (or strictly above `above`), with the range in the message."""

    def parse(text: str) -> Any:
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {noun}") from None
        if math.isnan(value):
            raise argparse.ArgumentTypeError(f"{text!r} is not {noun}")
        if above is not None and not value > above:
            raise argparse.ArgumentTypeError(f"{text} must be more than {above:g}")
        if low is not None and value < low:
            raise argparse.ArgumentTypeError(f"{text} is out of range ({_limits(low, high)})")
        if high is not None and value > high:
            raise argparse.ArgumentTypeError(f"{text} is out of range ({_limits(low, high)})")
        return value

    return parse


count = number(int, "a whole number", low=0)                 # -c N: 0 means no limit
positive = number(int, "a whole number", low=1)
seconds = number(float, "a number of seconds", above=0)
port = number(int, "a port number", low=1, high=65535)


def add_netns(p: argparse.ArgumentParser, what: str = "run") -> None:
    """`-n NETNS`: a namespace name, a lab node as LAB:NODE, or NODE when one lab has it."""
    p.add_argument("-n", "--netns", metavar="NETNS|LAB:NODE",
                   help=f"{what} inside this network namespace: a name from `ip netns list`, "
                        "a lab node as LAB:NODE, or just NODE when one running lab has it")


def netns_of(spec: str | None) -> str | None:
    """The namespace name `-n` designates (None: this process's own namespace)."""
    if spec is None:
        return None
    from mptcplab.topo.lifecycle import resolve_node

    return resolve_node(spec)


def add_json(p: argparse.ArgumentParser, what: str = "print as JSON") -> None:
    p.add_argument("--json", action="store_true", help=what)


def in_host_namespace() -> bool:
    """Is this process in the machine's own network namespace (init's)? Inside a lab node
    (`mptcplab exec`, `ip netns exec`) it is not. Commands that would change a namespace's
    MPTCP settings (the path-manager daemon, `nc --policy`) ask for --host there."""
    import os

    try:
        here, init = os.stat("/proc/self/ns/net"), os.stat("/proc/1/ns/net")
    except OSError:
        return True
    return (here.st_dev, here.st_ino) == (init.st_dev, init.st_ino)

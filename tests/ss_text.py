"""Read what `ss -Mni` and `ss -tni` print (iproute2's misc/ss.c), as the tests' oracle.

This knows only ss's printer and nothing of ours: an entry is its two addresses plus the
`key:value` words and bare flag words of its detail line; the MPTCP part of a subflow
(`tcp-ulp-mptcp flags:Jjec token:5b5a1e17(id:1)/23b45e2e(id:1) ...`) is split out. ss leaves
out a counter that is zero, so a missing key means 0 for the keys ss knows.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass, field
from typing import Any

# The mptcp_info keys iproute2 6.1's mptcp_stats_print knows (printed only when non-zero).
SS_MPTCP_KEYS = ("subflows", "add_addr_signal", "add_addr_accepted", "subflows_max",
                 "add_addr_signal_max", "add_addr_accepted_max", "token", "write_seq",
                 "snd_una", "rcv_nxt")
# Words ss prints followed by a value in the next word rather than after a colon.
_PAIRED = {"send", "pacing_rate", "delivery_rate"}


@dataclass
class Entry:
    local: str
    peer: str
    values: dict[str, str] = field(default_factory=dict)
    words: set[str] = field(default_factory=set)
    ulp: dict[str, str] = field(default_factory=dict)


def ss_version(run: Any) -> tuple[int, ...]:
    out = run(["ss", "-V"]).stdout
    m = re.search(r"iproute2-(?:ss)?(\d+)\.(\d+)", out)
    return (int(m.group(1)), int(m.group(2))) if m else (0, 0)


def seq_base(version: tuple[int, ...]) -> int:
    """ss printed write_seq/snd_una/rcv_nxt in hex before iproute2 6.4, in decimal since."""
    return 16 if version < (6, 4) else 10


def parse(text: str) -> list[Entry]:
    entries: list[Entry] = []
    for line in text.splitlines()[1:]:
        if not line.strip():
            continue
        if not line[0].isspace():
            # [Netid] [State] Recv-Q Send-Q Local Peer: the addresses end the line (no -p).
            parts = line.split()
            entries.append(Entry(parts[-2], parts[-1]))
            continue
        words = line.split()
        e = entries[-1]
        target = e.values
        i = 0
        while i < len(words):
            w = words[i]
            if w == "tcp-ulp-mptcp":
                target = e.ulp
            elif w in _PAIRED and i + 1 < len(words):
                target[w] = words[i + 1]
                i += 1
            elif ":" in w:
                k, v = w.split(":", 1)
                target[k] = v
            else:
                e.words.add(w)
            i += 1
    return entries


def ss(run: Any, *args: str) -> list[Entry]:
    res = run(["ss", *args])
    if res.returncode != 0:
        raise subprocess.CalledProcessError(res.returncode, ["ss", *args], res.stdout,
                                            res.stderr)
    return parse(res.stdout)


def ulp_tokens(entry: Entry) -> tuple[int, int, int, int]:
    """(token_rem, id_rem, token_loc, id_loc) from `token:5b5a1e17(id:1)/23b45e2e(id:1)`."""
    m = re.fullmatch(r"([0-9a-f]+)\(id:(\d+)\)/([0-9a-f]+)\(id:(\d+)\)", entry.ulp["token"])
    assert m, entry.ulp
    return int(m.group(1), 16), int(m.group(2)), int(m.group(3), 16), int(m.group(4))

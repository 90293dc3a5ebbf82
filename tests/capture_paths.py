"""Where the tests find captures: the lab's own (tests/data) and other stacks' (../shared).

The shared folder (``shared/captures``) sits beside the checkout — or beside the directory
holding it, for a git worktree under ``wt/`` — or where ``MPTCPLAB_SHARED_CAPTURES`` points; it
may be absent, and tests that need it skip with ``needs_shared``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
DATA = HERE / "data"


def _shared() -> Path:
    named = os.environ.get("MPTCPLAB_SHARED_CAPTURES")
    if named:
        return Path(named)
    for parent in HERE.parents[1:]:
        if (parent / "shared" / "captures").is_dir():
            return parent / "shared" / "captures"
    return HERE.parents[1] / "shared" / "captures"


SHARED = _shared()
OWN = sorted(DATA.glob("kernel-*.pcap"))
OTHERS = sorted(SHARED.glob("*.pcap*")) if SHARED.is_dir() else []
needs_shared = pytest.mark.skipif(not SHARED.is_dir(),
                                  reason=f"{SHARED} is absent (captures of other stacks)")

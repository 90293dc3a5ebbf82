"""Where the tests find captures: the lab's own (tests/data) and other stacks' (../shared).

The shared folder sits beside the repository and may be absent; tests that need it skip with
``needs_shared``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
DATA = HERE / "data"
SHARED = HERE.parents[1] / "shared" / "captures"
OWN = sorted(DATA.glob("kernel-*.pcap"))
OTHERS = sorted(SHARED.glob("*.pcap*")) if SHARED.is_dir() else []
needs_shared = pytest.mark.skipif(not SHARED.is_dir(),
                                  reason=f"{SHARED} is absent (captures of other stacks)")

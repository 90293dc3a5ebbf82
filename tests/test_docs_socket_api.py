"""Every Python example of docs/socket-api.md runs as it is (each builds its own lab)."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest
from topo_fixtures import needs_root, root_guard  # noqa: F401  (module fixture)

pytestmark = [needs_root, pytest.mark.usefixtures("root_guard")]

DOC = Path(__file__).resolve().parent.parent / "docs" / "socket-api.md"
BLOCKS = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.DOTALL)


def test_the_page_has_an_example_for_every_old_call():
    text = DOC.read_text()
    for old in ("MPTCP_GET_SUB_IDS", "MPTCP_GET_SUB_TUPLE", "MPTCP_OPEN_SUB_TUPLE",
                "MPTCP_CLOSE_SUB_ID", "MPTCP_SUB_GETSOCKOPT", "MPTCP_SUB_SETSOCKOPT",
                "low_prio"):
        assert f"**`{old}`**" in text or f"**The `{old}` bit**" in text, old
    assert len(BLOCKS) == 8


@pytest.mark.parametrize("n", range(len(BLOCKS)))
def test_example_runs(n):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(BLOCKS[n], f"{DOC.name} example {n + 1}", "exec"), {"__name__": "__doc__"})
    assert out.getvalue().strip(), "the example printed nothing"

"""pytest hooks shared by the tests and the cases (each conftest imports them).

A failed `==` between long byte strings (a transfer's data) or long text is explained by where
the two part, instead of pytest's line diff. That diff is quadratic in the data's length and
pytest stops truncating it when the CI variable is set: one failed `read == sent` on 200 kB
kept a CI run in difflib for over 20 minutes. Every `pytest_assertrepr_compare` hook is
called whatever the others return, so a hook of our own cannot spare pytest's; instead, while
a test runs, the comparison pytest's assertion rewriting calls (`util._reprcompare`, set by
pytest's assertion plugin for each test) answers long values itself and hands the rest on.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import pytest

from mptcplab.traffic import mismatch_at

LONG = 2048         # above this many bytes/characters, no line diff


def long_values_explained(op: str, left: Any, right: Any) -> list[str] | None:
    """Lines explaining a failed `left == right` of long bytes or text; None for anything
    else (pytest's own explanation then)."""
    binary = (bytes, bytearray)
    if op != "==" or max(_len(left), _len(right)) <= LONG:
        return None
    if isinstance(left, binary) and isinstance(right, binary):
        what, show = "bytes", (lambda v, i: f"{bytes(v[i:i + 8])!r}...")
    elif isinstance(left, str) and isinstance(right, str):
        what, show = "characters", (lambda v, i: f"{v[i:i + 40]!r}...")
    else:
        return None
    i = mismatch_at(left, right)
    head = f"{len(left):,} {what} == {len(right):,} {what} (long values: no line diff)"
    if i == min(len(left), len(right)):
        return [head, "the shorter is a prefix of the longer"]
    return [head, f"first difference at offset {i:,}: left {show(left, i)} right "
                  f"{show(right, i)}"]


def _len(value: Any) -> int:
    try:
        return len(value)
    except TypeError:
        return 0


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, Any, Any]:
    from _pytest.assertion import util

    pytests = getattr(util, "_reprcompare", None)
    if pytests is None:                  # assertion rewriting off (--assert=plain)
        return (yield)

    def reprcompare(op: str, left: object, right: object) -> str | None:
        lines = long_values_explained(op, left, right)
        if lines is None:
            return pytests(op, left, right)
        # the form pytest's own answer takes: "\n~"-joined lines, % doubled for rewriting
        return "\n~".join(lines).replace("%", "%%")

    util._reprcompare = reprcompare
    try:
        return (yield)
    finally:
        util._reprcompare = pytests

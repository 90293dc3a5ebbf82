"""Waiting for something the kernel does in its own time: a counter to rise, a subflow to
appear, a socket to listen. One loop for the library, the cases and the tests."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from mptcplab.errors import LabError


def until(predicate: Callable[[], Any], what: str = "the condition", timeout: float = 10.0,
          interval: float = 0.02, error: Callable[[str], BaseException] = LabError) -> Any:
    """Call `predicate` every `interval` s until it returns something true, and return that.
    After `timeout` s raise `error("timed out after T s waiting for <what>")` (a LabError by
    default; the cases and tests pass AssertionError so that it reads as a failure)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise error(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)

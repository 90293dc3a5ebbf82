"""The lab's one error type: a message a person can act on, and the exit code it maps to."""

from __future__ import annotations

import enum


class ExitStatus(enum.IntEnum):
    """Exit codes of the `mptcplab` command (httpie style: each means one thing)."""

    OK = 0
    ERROR = 1           # a runtime failure (kernel refused, tool failed, ...)
    USAGE = 2           # bad command line (argparse uses 2 as well)
    BAD_INPUT = 3       # unreadable, truncated or malformed input file / declaration
    NOT_ROOT = 4        # the operation needs root (CAP_NET_ADMIN / CAP_NET_RAW)
    MISSING_TOOL = 5    # a required system tool or kernel feature is absent
    INTERRUPTED = 130   # Ctrl-C, after cleaning up


class LabError(Exception):
    """An error to show as one line (`mptcplab: error: ...`) with a meaningful exit code."""

    status: ExitStatus = ExitStatus.ERROR

    def __init__(self, message: str, status: ExitStatus | None = None) -> None:
        super().__init__(message)
        if status is not None:
            self.status = status


class BadInput(LabError):
    status = ExitStatus.BAD_INPUT


class NotRoot(LabError):
    status = ExitStatus.NOT_ROOT


class MissingTool(LabError):
    status = ExitStatus.MISSING_TOOL

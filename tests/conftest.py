"""pytest hooks for the tests: the ones shared with the cases (mptcplab/pytest_hooks.py)."""

from mptcplab.pytest_hooks import pytest_runtest_call  # noqa: F401  (a pytest hook)

"""A failed comparison of a transfer's data is explained by where the bytes part, in a
moment, also when CI is set (pytest then stops truncating its line diff, which on 200 kB
ran for over 20 minutes in difflib)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from mptcplab.traffic import mismatch_at

ROOT = Path(__file__).resolve().parents[1]

FAILING = textwrap.dedent("""
    from mptcplab.traffic import pattern

    def test_stalled_transfer():
        sent = pattern(200_000)
        read = bytearray(sent[:98_184])
        read[5_000] ^= 0xFF
        assert bytes(read) == sent

    def test_short_read():
        sent = pattern(10_000)
        assert sent[:4_000] == sent

    def test_small_values_keep_pytests_diff():
        assert b"abc" == b"abd"
""")


def test_long_byte_strings_are_explained_by_their_first_difference(tmp_path):
    (tmp_path / "conftest.py").write_text((ROOT / "tests" / "conftest.py").read_text())
    (tmp_path / "test_data.py").write_text(FAILING)
    env = {**os.environ, "CI": "true"}
    env.pop("PYTEST_XDIST_WORKER", None)
    res = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q",
                          "-p", "no:randomly", str(tmp_path)], capture_output=True, text=True,
                         cwd=tmp_path, env=env, timeout=120, check=False)
    out = res.stdout
    assert res.returncode == 1 and "3 failed" in out, out[-2000:]
    assert "98,184 bytes == 200,000 bytes" in out
    assert "first difference at offset 5,000" in out
    assert "4,000 bytes == 10,000 bytes" in out and "the shorter is a prefix" in out
    assert "At index 2 diff" in out or "Full diff" in out       # small values: pytest's own


def test_mismatch_by_halving_agrees_with_a_plain_scan():
    import random

    rng = random.Random(7)
    for _ in range(300):
        a = bytes(rng.randrange(3) for _ in range(rng.randrange(0, 60)))
        b = bytearray(a[:rng.randrange(0, len(a) + 1)] if rng.random() < 0.3 else a)
        if b and rng.random() < 0.7:
            b[rng.randrange(len(b))] ^= 1
        b = bytes(b) + bytes(rng.randrange(3) for _ in range(rng.randrange(0, 3)))
        plain = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
        assert mismatch_at(a, b) == plain, (a, b)

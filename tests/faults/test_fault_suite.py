"""``make faults`` in quick mode, one fault row per test (so a parallel run spreads them): every
row loses nothing, applies nothing twice, meets no 429 it did not ask for, and its fault really
happened."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FAULTS = ROOT / "bench" / "faults.py"

#: Every row of the suite; the first test proves the list is whole.
ROWS = (
    "5xx",
    "resets",
    "timeouts",
    "activity-ends",
    "unreachable",
    "kill",
    "lease-kill",
    "rotated-kill",
    "redis",
    "sqlite",
    "keys",
)

pytestmark = pytest.mark.slow


def _faults(*args: str, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(FAULTS), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_every_fault_row_is_tested():
    listed = _faults("--list", timeout=60)
    assert listed.returncode == 0, listed.stderr[-2000:]
    assert tuple(listed.stdout.split()) == ROWS


@pytest.mark.parametrize("fault", ROWS)
def test_the_quick_fault_row_stays_at_zero(fault):
    done = _faults("--quick", "--json", "--only", fault, timeout=600)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    rows = [row for row in report["rows"] if not row["reference"]]
    assert len(rows) == 1, rows
    (row,) = rows
    if row["skipped"]:
        assert row["skipped"] == "skipped: Redis not available", row
        pytest.skip(f"{fault}: {row['skipped']}")
    assert (row["lost"], row["duplicated"], row["uninjected_429"]) == (0, 0, 0), row
    assert row["injected"] > 0, row
    assert row["ok"], row

"""``make faults`` in quick mode: every fault row loses nothing, applies nothing twice and
meets no 429 it did not ask for, and every fault really happened."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def test_the_quick_fault_suite_keeps_every_row_at_zero():
    done = subprocess.run(
        [sys.executable, "bench/faults.py", "--quick", "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    rows = [row for row in report["rows"] if not row["reference"]]
    assert len(rows) == 11
    for row in rows:
        if row["skipped"]:
            assert row["skipped"] == "skipped: Redis not available", row
            continue
        assert (row["lost"], row["duplicated"], row["uninjected_429"]) == (0, 0, 0), row
        assert row["injected"] > 0, row
        assert row["ok"], row

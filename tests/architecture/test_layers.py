"""The import contracts in ``pyproject.toml`` (run by ``make lint``) hold, and catch a breach.

Each case copies the code to a temporary folder, adds one import that crosses a layer, and
runs import-linter on the copy: the contract that forbids it must fail, naming the import.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")

pytestmark = pytest.mark.slow


def _lint(tree: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", "--config", str(tree / "pyproject.toml")],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def tree(tmp_path) -> Path:
    copy = tmp_path / "tree"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for package in ("integrations", "ccportal"):
        shutil.copytree(ROOT / package, copy / package, ignore=ignore)
    shutil.copy(ROOT / "pyproject.toml", copy / "pyproject.toml")
    return copy


def test_the_code_keeps_every_contract(tree):
    result = _lint(tree)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "broken" not in result.stdout.replace("0 broken", "")


@pytest.mark.parametrize(
    ("module", "line", "contract"),
    [
        (
            "integrations/constant_contact/client.py",
            "import integrations.models",
            "The Constant Contact client library imports no Django",
        ),
        (
            "integrations/constant_contact/errors.py",
            "import django.conf",
            "The Constant Contact client library imports no Django",
        ),
        (
            "integrations/sandbox/state.py",
            "import integrations.services.quota",
            "The sandbox imports no Django, no service and no model",
        ),
        (
            "integrations/services/keys.py",
            "import integrations.views.common",
            "Faces call tasks and services; nothing below reaches back up",
        ),
        (
            "integrations/models/jobs.py",
            "import integrations.services.tokens",
            "Faces call tasks and services; nothing below reaches back up",
        ),
    ],
    ids=[
        "client-imports-models",
        "client-imports-django",
        "sandbox-imports-a-service",
        "service-imports-a-view",
        "model-imports-a-service",
    ],
)
def test_an_import_across_a_layer_breaks_its_contract(tree, module, line, contract):
    path = tree / module
    path.write_text(path.read_text() + f"\n{line}  # crossing a layer on purpose\n")
    result = _lint(tree)
    assert result.returncode != 0
    broken = next((row for row in result.stdout.splitlines() if row.startswith(contract)), "")
    assert broken.endswith("BROKEN"), result.stdout

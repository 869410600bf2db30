"""The sandbox as a process: ``run_sandbox`` output and signals, ``start_sandbox`` with a
config."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest
import requests

from integrations.sandbox.process import BASE_DIR, start_sandbox

pytestmark = pytest.mark.slow


@pytest.mark.parametrize(
    ("argv", "stop_signal"),
    [
        (["manage.py", "run_sandbox", "--port", "0"], signal.SIGINT),
        (["-m", "integrations.sandbox", "--port", "0"], signal.SIGTERM),
    ],
)
def test_first_line_is_the_url_and_signals_stop_it_cleanly(argv, stop_signal):
    process = subprocess.Popen(
        [sys.executable, *argv], cwd=BASE_DIR, stdout=subprocess.PIPE, text=True
    )
    try:
        first = process.stdout.readline().strip()
        assert first.startswith("SANDBOX_URL=http://127.0.0.1:")
        url = first.removeprefix("SANDBOX_URL=")
        assert requests.get(f"{url}/__sandbox/health", timeout=5).json()["status"] == "ok"
        process.send_signal(stop_signal)
        process.wait(timeout=10)
        rest = process.stdout.read()
    finally:
        process.kill()
    assert process.returncode == 0
    assert "CC_MODE=sandbox" in rest
    assert f"CC_SANDBOX_URL={url}" in rest
    assert rest.rstrip().endswith("Sandbox stopped.")


def test_a_bad_config_is_a_one_line_error(tmp_path):
    config = tmp_path / "sandbox.json"
    config.write_text('{"options": {"no_such_option": 1}}')
    result = subprocess.run(
        [sys.executable, "manage.py", "run_sandbox", "--port", "0", "--config", str(config)],
        cwd=BASE_DIR,
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert result.returncode != 0
    assert "unknown option 'no_such_option'" in result.stderr
    assert "Traceback" not in result.stderr


def test_start_sandbox_preloads_a_config_and_reset_restores_it():
    config = {
        "options": {"max_queued_activities": 5},
        "clients": [
            {
                "client_id": "preloaded",
                "client_secret": "s",
                "redirect_uris": ["http://x.example/cb"],
            }
        ],
        "accounts": [{"email": "demo@example.com", "lists": [{"name": "News", "contacts": 25}]}],
    }
    with start_sandbox(port=0, config=config) as process:
        control = process.control
        assert control.options()["max_queued_activities"] == 5
        summary = control.account("demo@example.com")
        assert summary["contact_lists"][0]["membership_count"] == 25
        control.create_account("extra@example.com")
        control.reset()
        assert [
            a["email"] for a in requests.get(f"{process.url}/__sandbox/accounts").json()["accounts"]
        ] == ["demo@example.com"]
    assert process.popen.returncode == 0

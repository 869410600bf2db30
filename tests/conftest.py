"""Suite-wide wiring: the fast tier, the temp directory, and the shared fixtures.

Tests fall in two tiers. A test that starts a child process — the sandbox, a worker, a pool of
processes, a browser — is marked ``slow``, by hand or because it uses one of
``PROCESS_FIXTURES``; ``make test-fast`` runs the others (``-m "not slow and not browser"``),
and with ``CCPORTAL_TEST_TIER=fast`` any child process a test starts anyway fails it, so the
tier cannot quietly grow slow.
"""

from __future__ import annotations

import multiprocessing.process
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.factories import StaffFactory

pytest_plugins = [
    "tests.fixtures.sandbox",
    "tests.fixtures.portal",
    "tests.fixtures.bulk",
    "tests.fixtures.fake_cc",
]

#: Fixtures that start (or stand on) a child process.
PROCESS_FIXTURES = frozenset(
    {
        "sandbox",
        "cc_sandbox",
        "cc_app",
        "connected_account",
        "sandbox_settings",
        "sync_app",
        "worker",
        "browser",
        "page",
        "portal_server",
    }
)


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    # pytest's own tmp_path folders live in this run's folder, which goes when the run ends.
    if not config.option.basetemp:
        config.option.basetemp = str(Path(os.environ["CCPORTAL_VAR_DIR"]) / "pytest")


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    if os.environ.get("PYTEST_XDIST_WORKER") is None:
        shutil.rmtree(os.environ["CCPORTAL_VAR_DIR"], ignore_errors=True)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if PROCESS_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(autouse=True)
def _fast_tier_starts_no_process(request, monkeypatch):
    """In the fast tier a child process is a mistake: say which test should be marked slow."""
    if os.environ.get("CCPORTAL_TEST_TIER") != "fast":
        return

    def refuse(*args, **kwargs):
        raise RuntimeError(
            f"{request.node.nodeid} starts a child process: mark it @pytest.mark.slow "
            "(the fast tier runs in one process)."
        )

    monkeypatch.setattr(subprocess.Popen, "__init__", refuse)
    monkeypatch.setattr(multiprocessing.process.BaseProcess, "start", refuse)


@pytest.fixture(autouse=True)
def _fresh_redis_cache():
    """Start each test with an empty Redis cache when one is configured (CI's second pass).

    The database cache lives in the test database and goes with each test's data; Redis keeps
    its keys, and the login counters a test leaves would refuse the next test's logins.
    """
    from django.conf import settings
    from django.core.cache import caches

    if "redis" in settings.CACHES and settings.REDIS_URL:
        caches["redis"].clear()
    yield


@pytest.fixture
def staff_client(client, db):
    user = StaffFactory()
    client.force_login(user)
    client.user = user
    return client


@pytest.fixture
def proxy_client():
    """A test client through the proxy's own door (no middleware), as gunicorn serves
    ``/proxy/``."""
    from django.test.client import Client, ClientHandler

    from ccportal.wsgi import ProxyDoor

    class ProxyClientHandler(ProxyDoor, ClientHandler):
        pass

    made = Client()
    made.handler = ProxyClientHandler()
    return made

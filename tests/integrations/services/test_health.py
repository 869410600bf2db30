"""The banner that names a dependency which is down."""

from __future__ import annotations

import socket

import pytest
from django.test import override_settings

from integrations.services import health

pytestmark = pytest.mark.django_db


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(autouse=True)
def _look_afresh(monkeypatch):
    monkeypatch.setattr(health, "_store_look", (float("-inf"), None))


@pytest.fixture
def ledger_in_a_redis_that_is_down():
    url = f"redis://:hunter2-pw@127.0.0.1:{_closed_port()}/0"
    with override_settings(
        REDIS_URL=url,
        CC_QUOTA_STORE="integrations.services.quota_stores.RedisStore",
        CC_QUOTA_STORE_TIMEOUT=0.3,
    ):
        yield


def test_nothing_is_reported_while_everything_answers():
    assert health.outages() == []


def test_a_ledger_that_does_not_answer_is_named_with_what_it_stops(
    ledger_in_a_redis_that_is_down,
):
    (problem,) = health.outages()
    assert "quota ledger in Redis" in problem and "hunter2-pw" not in problem
    assert "No call to Constant Contact is sent until it is back" in problem


def test_every_page_shows_the_outage_banner(ledger_in_a_redis_that_is_down, client):
    page = client.get("/login/").content.decode()
    assert 'class="banner banner-outage" role="alert"' in page
    assert "quota ledger in Redis" in page

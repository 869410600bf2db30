"""/metrics: Prometheus's view of the portal, behind a bearer token."""

from __future__ import annotations

import datetime as dt
from http import HTTPStatus

import pytest
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from integrations.models import CallKind, JobState
from integrations.services.audit import api_call_record
from tests.factories import ApiKeyFactory, ConnectedAccountFactory

pytestmark = pytest.mark.django_db

TOKEN = "metrics-token-for-tests-0123456789"


@pytest.fixture
def metrics_on(settings):
    settings.CC_METRICS_TOKEN = TOKEN


def _scrape(client) -> dict[tuple[str, tuple], float]:
    response = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    assert response.status_code == HTTPStatus.OK
    assert response["Content-Type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(response.content.decode()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def test_off_until_a_token_is_set(client):
    assert client.get("/metrics").status_code == HTTPStatus.NOT_FOUND


def test_a_scrape_without_the_token_is_refused(client, metrics_on):
    assert client.get("/metrics").status_code == HTTPStatus.UNAUTHORIZED
    wrong = client.get("/metrics", HTTP_AUTHORIZATION="Bearer nope")
    assert wrong.status_code == HTTPStatus.UNAUTHORIZED
    assert wrong["WWW-Authenticate"].startswith("Bearer")
    assert TOKEN not in wrong.content.decode()


def test_the_figures_are_todays_calls_quota_429s_refreshes_jobs_and_accounts(client, metrics_on):
    key = ApiKeyFactory(client_id="key-one")
    account = ConnectedAccountFactory(api_key=key)
    now = timezone.now()
    for status, error_key in ((200, ""), (200, ""), (429, "throttled"), (429, "quota_exceeded")):
        api_call_record(
            api_key=key,
            account=account,
            method="GET",
            path_template="/contacts",
            status_code=status,
            error_key=error_key,
            at=now - dt.timedelta(seconds=5),
        )
    api_call_record(
        api_key=key,
        account=account,
        method="POST",
        path_template="/token",
        status_code=200,
        kind=CallKind.TOKEN,
    )

    samples = _scrape(client)
    key_label = (("key", "key-one"),)
    assert samples[("ccportal_calls_today", key_label)] == 4
    assert samples[("ccportal_quota_per_day", key_label)] == key.per_day
    assert samples[("ccportal_remaining_today", key_label)] == key.per_day - 4
    assert samples[("ccportal_429s_today", (("key", "key-one"), ("reason", "throttled")))] == 1
    assert samples[("ccportal_token_refreshes_today", key_label)] == 1
    assert samples[("ccportal_quota_store_up", ())] == 1
    assert ("ccportal_limiter_wait_seconds", key_label) in samples
    assert samples[("ccportal_jobs", (("state", JobState.RUNNING.value),))] == 0
    assert samples[("ccportal_accounts", (("status", "active"),))] == 1

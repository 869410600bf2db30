"""Each alert event from its real condition, sent exactly once however often it is evaluated."""

from __future__ import annotations

import datetime as dt
from http import HTTPStatus

import pytest
from django.core import mail
from django.utils import timezone

from integrations import selectors
from integrations.constant_contact.errors import CCQuotaExceeded, OAuthError
from integrations.models import (
    AlertDelivery,
    AlertEvent,
    CallKind,
    ConnectedAccount,
    DailyUsage,
    DeliveryState,
    JobState,
    Tier,
)
from integrations.services import bulk_runner, tokens
from integrations.services.alert_rules import alerts_evaluate
from integrations.services.alerts import alert_deliveries_send, alert_email_add
from integrations.services.audit import api_call_record
from integrations.services.bulk_jobs import bulk_job_create, bulk_job_resume
from integrations.services.tokens import AccountNotConnected, TokenRefreshFailed
from tests.factories import ApiKeyFactory, ConnectedAccountFactory

pytestmark = pytest.mark.django_db

#: Noon UTC today: far from the reset, so a forecast or an hour is never cut by midnight.
NOON = timezone.now().astimezone(dt.UTC).replace(hour=12, minute=0, second=0, microsecond=0)
EXPORT = "/activities/contact_exports"


@pytest.fixture(autouse=True)
def outbox(settings):
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    alert_email_add(address="ops@example.com")
    return mail.outbox


def _evaluate_and_send(times: int = 3, *, now: dt.datetime | None = None) -> None:
    for _ in range(times):
        alerts_evaluate(now=now)
        alert_deliveries_send(now=now)


def _events(event_type: str) -> list[AlertEvent]:
    return list(AlertEvent.objects.filter(event_type=event_type).order_by("pk"))


def _sent(event_type: str) -> int:
    return AlertDelivery.objects.filter(
        event__event_type=event_type, state=DeliveryState.DELIVERED
    ).count()


def _set_calls_today(api_key, calls: int) -> None:
    DailyUsage.objects.update_or_create(
        api_key=api_key, date=timezone.now().astimezone(dt.UTC).date(), defaults={"calls": calls}
    )


# --- quota ------------------------------------------------------------------------------------
def test_crossing_90_percent_sends_one_threshold_event_and_100_one_more(outbox):
    key = ApiKeyFactory(tier=Tier.STANDARD)
    _set_calls_today(key, 7_000)
    _evaluate_and_send()
    assert _events("quota.threshold") == []

    _set_calls_today(key, 9_000)
    _evaluate_and_send()
    (event,) = _events("quota.threshold")
    assert event.data["threshold_percent"] == 90  # not 75 as well: 90 says more
    assert event.data["calls_today"] == 9_000

    _set_calls_today(key, 10_000)
    _evaluate_and_send(times=5)  # a key sitting at 100% is told once
    assert [e.data["threshold_percent"] for e in _events("quota.threshold")] == [90, 100]
    assert _sent("quota.threshold") == 2
    assert len(outbox) == 2


def test_each_threshold_is_sent_once_per_key_and_day():
    first, second = ApiKeyFactory(), ApiKeyFactory()
    _set_calls_today(first, 7_600)
    _set_calls_today(second, 7_600)
    _evaluate_and_send()

    assert sorted(e.data["key"]["id"] for e in _events("quota.threshold")) == [
        first.pk,
        second.pk,
    ]
    assert {e.data["threshold_percent"] for e in _events("quota.threshold")} == {75}


def test_the_forecast_alert_is_the_dashboards_forecast_once_a_day():
    key = ApiKeyFactory(tier=Tier.CUSTOM, custom_per_second=4, custom_per_day=100)
    for minute in range(20):
        api_call_record(
            api_key=key,
            account=None,
            method="GET",
            path_template="/contact_lists",
            status_code=200,
            at=NOON - dt.timedelta(seconds=20 * minute + 5),
        )
    usage = selectors.key_usage_summary(api_key=key, now=NOON)
    assert usage["exhausted_at"] is not None  # 80 left at 2 a minute: out at 12:40

    _evaluate_and_send(now=NOON)
    _evaluate_and_send(now=NOON + dt.timedelta(minutes=5))

    (event,) = _events("quota.forecast")
    assert event.data["exhausted_at"] == usage["exhausted_at"]
    assert event.data["resets_at"] == usage["resets_at"]
    assert _sent("quota.forecast") == 1


def test_no_forecast_alert_when_the_day_is_not_at_risk():
    key = ApiKeyFactory()
    api_call_record(
        api_key=key, account=None, method="GET", path_template="/contact_lists", status_code=200
    )
    _evaluate_and_send()
    assert _events("quota.forecast") == []


def test_throttled_429s_are_one_event_per_key_and_hour():
    key = ApiKeyFactory()
    account = ConnectedAccountFactory(api_key=key)
    for second in (1, 2, 3):
        api_call_record(
            api_key=key,
            account=account,
            method="GET",
            path_template="/contacts",
            status_code=HTTPStatus.TOO_MANY_REQUESTS,
            error_key="throttled",
            at=NOON - dt.timedelta(minutes=30, seconds=second),
        )
    # CC's quota answer and a full activity queue are no accounting mistake of ours.
    api_call_record(
        api_key=key,
        account=account,
        method="GET",
        path_template="/contacts",
        status_code=HTTPStatus.TOO_MANY_REQUESTS,
        error_key="quota_exceeded",
        at=NOON - dt.timedelta(minutes=20),
    )
    api_call_record(
        api_key=key,
        account=account,
        method="POST",
        path_template="/activities/contacts_json_import",
        status_code=HTTPStatus.TOO_MANY_REQUESTS,
        error_key="too_many_requests",
        at=NOON - dt.timedelta(minutes=20),
    )
    _evaluate_and_send(now=NOON)

    (event,) = _events("quota.throttled")
    assert event.data["throttled_calls"] == 3
    assert event.data["hour"].startswith(f"{NOON - dt.timedelta(hours=1):%Y-%m-%dT%H}")

    # The token endpoint's own 429 in the next hour is a second mistake.
    api_call_record(
        api_key=key,
        account=account,
        method="POST",
        path_template="/token",
        kind=CallKind.TOKEN,
        status_code=HTTPStatus.TOO_MANY_REQUESTS,
        error_key="too_many_requests",
        at=NOON + dt.timedelta(minutes=1),
    )
    _evaluate_and_send(now=NOON + dt.timedelta(minutes=2))
    assert len(_events("quota.throttled")) == 2
    assert _sent("quota.throttled") == 2


# --- accounts ---------------------------------------------------------------------------------
def _expired_account() -> ConnectedAccount:
    account = ConnectedAccountFactory(
        access_expires_at=timezone.now() - dt.timedelta(minutes=1), token_version=1
    )
    return account


def _token_endpoint_answers(monkeypatch, error: OAuthError) -> None:
    def refuse(**request):
        raise error

    monkeypatch.setattr(tokens.cc_oauth, "token_refresh", refuse)


def test_an_account_cc_refuses_the_refresh_token_of_is_alerted_at_once_and_once(monkeypatch):
    account = _expired_account()
    _token_endpoint_answers(monkeypatch, OAuthError(status=400, error="invalid_grant"))

    with pytest.raises(AccountNotConnected):
        tokens.access_token(account=account)

    # Emitted by the token service itself, before any evaluation.
    (event,) = _events("account.needs_reconnect")
    assert event.data["account"]["id"] == account.pk
    assert "invalid_grant" in event.data["reason"]

    _evaluate_and_send()
    assert len(_events("account.needs_reconnect")) == 1
    assert _sent("account.needs_reconnect") == 1


def test_an_account_that_needs_a_reconnect_again_after_reconnecting_is_alerted_again(
    monkeypatch,
):
    account = _expired_account()
    _token_endpoint_answers(monkeypatch, OAuthError(status=400, error="invalid_grant"))
    with pytest.raises(AccountNotConnected):
        tokens.access_token(account=account)
    _evaluate_and_send()

    # Reconnected (a new pair stored), then refused again.
    account.refresh_from_db()
    answer = type("Answer", (), {"access_token": "a2", "refresh_token": "r2"})()
    tokens.tokens_store_new_connection(
        account=account, answer=answer, expires_at=timezone.now() - dt.timedelta(seconds=1)
    )
    _evaluate_and_send()
    assert len(_events("account.needs_reconnect")) == 1
    with pytest.raises(AccountNotConnected):
        tokens.access_token(account=account)
    _evaluate_and_send()

    assert len(_events("account.needs_reconnect")) == 2
    assert _sent("account.needs_reconnect") == 2


def test_failing_refreshes_are_one_event_until_a_refresh_succeeds(monkeypatch):
    account = _expired_account()
    _token_endpoint_answers(monkeypatch, OAuthError(status=503, error="temporarily_unavailable"))

    with pytest.raises(TokenRefreshFailed):
        tokens.access_token(account=account)
    # Left to the evaluator: a refresh that fails once and works on the retry is no alert.
    assert _events("account.refresh_failing") == []
    _evaluate_and_send()
    (event,) = _events("account.refresh_failing")
    assert event.data["refresh_failures"] == 1

    # It keeps failing: the same occurrence.
    ConnectedAccount.objects.filter(pk=account.pk).update(refresh_backoff_until=None)
    with pytest.raises(TokenRefreshFailed):
        tokens.access_token(account=account)
    assert ConnectedAccount.objects.get(pk=account.pk).refresh_failures == 2
    _evaluate_and_send()
    assert len(_events("account.refresh_failing")) == 1
    assert _sent("account.refresh_failing") == 1


# --- jobs -------------------------------------------------------------------------------------
def _quota_pause(fake_cc, job):
    fake_cc.answer(
        "POST",
        EXPORT,
        raises=CCQuotaExceeded(
            status=429, method="POST", path=EXPORT, body={"error_key": "quota_exceeded"}
        ),
    )
    bulk_runner.bulk_job_advance(job_id=job.pk, max_inline_wait=0)
    job.refresh_from_db()
    return job


def test_each_pause_of_a_job_is_alerted_once(fake_cc, settings):
    settings.CC_BULK_FIRST_POLL_DELAY = 0.0
    job = bulk_job_create(
        account=ConnectedAccountFactory(),
        list_id="list-1",
        csv_chunks=iter([b"email\nnew@example.com\n"]),
    )
    job = _quota_pause(fake_cc, job)
    assert job.state == JobState.PAUSED

    # Emitted by the runner as it paused, before any evaluation.
    (event,) = _events("job.paused")
    assert event.data["job"]["id"] == job.pk
    _evaluate_and_send()
    # A stray run that finds it still paused is no new pause.
    bulk_runner.bulk_job_advance(job_id=job.pk, max_inline_wait=0)
    _evaluate_and_send()
    assert len(_events("job.paused")) == 1

    # Resumed by a person, and paused again by the same reason until the same reset.
    job = bulk_job_resume(job=job)
    job = _quota_pause(fake_cc, job)
    assert job.state == JobState.PAUSED
    _evaluate_and_send()

    assert len(_events("job.paused")) == 2
    assert _sent("job.paused") == 2


def test_a_failed_job_is_alerted_once(fake_cc):
    from integrations.constant_contact.errors import CCHTTPError

    job = bulk_job_create(
        account=ConnectedAccountFactory(),
        list_id="list-1",
        csv_chunks=iter([b"email\nnew@example.com\n"]),
    )
    fake_cc.answer(
        "POST",
        EXPORT,
        raises=CCHTTPError(
            status=404, method="POST", path=EXPORT, body=[{"error_message": "no such list"}]
        ),
    )
    bulk_runner.bulk_job_advance(job_id=job.pk, max_inline_wait=0)
    job.refresh_from_db()
    assert job.state == JobState.FAILED

    _evaluate_and_send()
    _evaluate_and_send()

    (event,) = _events("job.failed")
    assert "no such list" in event.data["job"]["error"]
    assert _sent("job.failed") == 1


def test_a_completed_job_is_alerted_once_and_an_old_one_not_at_all():
    from integrations.models import BulkJob

    account = ConnectedAccountFactory()
    done = BulkJob.objects.create(
        account=account, list_id="l1", state=JobState.COMPLETED, finished_at=timezone.now()
    )
    BulkJob.objects.create(
        account=account,
        list_id="l2",
        state=JobState.COMPLETED,
        finished_at=timezone.now() - dt.timedelta(days=2),
    )

    _evaluate_and_send()
    _evaluate_and_send()

    (event,) = _events("job.completed")
    assert event.data["job"]["id"] == done.pk
    assert _sent("job.completed") == 1

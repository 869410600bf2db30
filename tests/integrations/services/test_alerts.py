"""Alert destinations, exactly-once events, signatures, and delivery with retries."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import re
import socket
import time

import pytest
from django.core import mail
from django.utils import timezone

from integrations.models import AlertDelivery, AlertEvent, AlertEventType, DeliveryState
from integrations.services import alerts
from integrations.services.alerts import (
    AlertInvalid,
    alert_deliveries_send,
    alert_destination_test,
    alert_email_add,
    alert_event_emit,
    alert_webhook_add,
    signature_header,
    signature_valid,
)
from tests.integrations.services.alert_receiver import Receiver

pytestmark = pytest.mark.django_db

SECRET = "whsec-0123456789abcdef"


@pytest.fixture(autouse=True)
def _mail(settings):
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"


def _emit(key: str = "quota.threshold:1:2026-01-01:90", **data) -> AlertEvent | None:
    return alert_event_emit(
        event_type=AlertEventType.QUOTA_THRESHOLD,
        dedupe_key=key,
        data={"message": "Key App has used 9,000 of its 10,000 calls today.", **data},
    )


def _due_now(delivery: AlertDelivery) -> None:
    """The delivery's next attempt is due (time moved on, without sleeping)."""
    AlertDelivery.objects.filter(pk=delivery.pk).update(
        next_attempt_at=timezone.now() - dt.timedelta(seconds=1)
    )


# --- signatures -------------------------------------------------------------------------------
def test_signature_header_is_t_and_hex_hmac_sha256_of_timestamp_dot_body():
    body = b'{"event":"test"}'
    header = signature_header(SECRET, body, timestamp=1_700_000_000)

    assert re.fullmatch(r"t=1700000000,v1=[0-9a-f]{64}", header)
    expected = hmac.new(SECRET.encode(), b"1700000000." + body, hashlib.sha256).hexdigest()
    assert header.endswith(f"v1={expected}")


def test_a_fresh_signature_verifies_and_a_changed_body_secret_or_header_does_not():
    body = b'{"event":"test","id":"x"}'
    header = signature_header(SECRET, body)

    assert signature_valid(SECRET, header, body)
    assert signature_valid(SECRET, header, body.decode())
    assert not signature_valid(SECRET, header, body + b" ")
    assert not signature_valid("another-secret-value", header, body)
    assert not signature_valid(SECRET, header.replace("v1=", "v0="), body)
    assert not signature_valid(SECRET, "", body)
    assert not signature_valid(SECRET, "t=abc,v1=00", body)


def test_an_old_signature_is_refused_outside_the_tolerance():
    body = b"{}"
    old = signature_header(SECRET, body, timestamp=int(time.time()) - 301)

    assert not signature_valid(SECRET, old, body)
    assert signature_valid(SECRET, old, body, tolerance=3600)


def test_any_of_several_v1_signatures_may_match():
    body = b"{}"
    good = signature_header(SECRET, body)
    t = good.split(",")[0]
    header = f"{t},v1={'0' * 64},{good.split(',')[1]}"

    assert signature_valid(SECRET, header, body)


# --- destinations -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("ftp://example.com/hook", "not an http:// or https:// URL"),
        ("example.com/hook", "not an http:// or https:// URL"),
        ("", "needs a URL"),
    ],
)
def test_a_webhook_needs_an_http_url(url, problem):
    with pytest.raises(AlertInvalid, match=problem):
        alert_webhook_add(url=url, secret=SECRET)


def test_unknown_events_are_refused_naming_the_known_ones():
    with pytest.raises(AlertInvalid, match=r"unknown event 'quota.nope'.*quota\.forecast"):
        alert_webhook_add(url="https://example.com/h", secret=SECRET, events="quota.nope")


def test_a_short_secret_is_refused():
    with pytest.raises(AlertInvalid, match="at least 16 characters"):
        alert_webhook_add(url="https://example.com/h", secret="short")


def test_the_secret_is_stored_encrypted_and_shown_as_a_fingerprint():
    destination = alert_webhook_add(url="https://example.com/h?token=abc", secret=SECRET)

    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT secret FROM integrations_alertdestination WHERE id = %s", [destination.pk]
        )
        (stored,) = cursor.fetchone()
    assert SECRET not in stored
    assert destination.secret_fingerprint == hashlib.sha256(SECRET.encode()).hexdigest()[:8]
    assert str(destination) == "Webhook https://example.com/h?…"


# --- events -----------------------------------------------------------------------------------
def test_an_occurrence_is_recorded_and_queued_once_however_often_it_is_emitted():
    alert_email_add(address="ops@example.com")

    first = _emit()
    again = _emit()

    assert first is not None and again is None
    assert AlertEvent.objects.count() == 1
    assert AlertDelivery.objects.get().state == DeliveryState.PENDING


def test_a_destination_gets_only_the_events_it_chose_and_a_disabled_one_none():
    chosen = alert_email_add(address="jobs@example.com", events="job.failed,job.paused")
    every = alert_email_add(address="all@example.com")
    off = alert_email_add(address="off@example.com")
    off.enabled = False
    off.save()

    _emit()

    assert list(AlertDelivery.objects.values_list("destination", flat=True)) == [every.pk]
    assert chosen.deliveries.count() == 0


# --- webhook delivery -------------------------------------------------------------------------
def test_a_webhook_receives_signed_json_that_verifies():
    with Receiver() as receiver:
        alert_webhook_add(url=receiver.url, secret=SECRET)
        event = _emit()

        assert alert_deliveries_send() == 1

    (request,) = receiver.requests
    assert request.path == "/hooks/ccportal"
    assert request.headers["Content-Type"] == "application/json"
    assert signature_valid(SECRET, request.headers["X-CCPortal-Signature"], request.body)
    payload = json.loads(request.body)
    assert payload == {
        "event": "quota.threshold",
        "id": str(event.uid),
        "created": event.created_at.astimezone(dt.UTC).isoformat(),
        "data": event.data,
    }
    delivery = AlertDelivery.objects.get()
    assert delivery.state == DeliveryState.DELIVERED
    assert (delivery.attempts, delivery.last_status_code) == (1, 200)
    assert delivery.delivered_at is not None


def test_a_500_is_retried_with_backoff_and_then_delivered():
    with Receiver(statuses=[500, 503]) as receiver:
        alert_webhook_add(url=receiver.url, secret=SECRET)
        _emit()

        before = timezone.now()
        alert_deliveries_send()
        delivery = AlertDelivery.objects.get()
        assert delivery.state == DeliveryState.PENDING
        assert (delivery.attempts, delivery.last_status_code) == (1, 500)
        assert "answered 500 Internal Server Error" in delivery.last_error
        assert delivery.next_attempt_at >= before + dt.timedelta(seconds=30)

        assert alert_deliveries_send() == 0  # not due yet: nothing sent
        assert len(receiver.requests) == 1

        _due_now(delivery)
        before = timezone.now()
        alert_deliveries_send()
        delivery.refresh_from_db()
        assert (delivery.state, delivery.attempts, delivery.last_status_code) == (
            DeliveryState.PENDING,
            2,
            503,
        )
        assert delivery.next_attempt_at >= before + dt.timedelta(seconds=60)

        _due_now(delivery)
        alert_deliveries_send()

    delivery.refresh_from_db()
    assert (delivery.state, delivery.attempts, delivery.last_status_code) == (
        DeliveryState.DELIVERED,
        3,
        200,
    )
    assert len(receiver.requests) == 3
    # Every attempt carries the same event, each signed afresh.
    assert len({json.loads(r.body)["id"] for r in receiver.requests}) == 1
    assert all(
        signature_valid(SECRET, r.headers["X-CCPortal-Signature"], r.body)
        for r in receiver.requests
    )


def test_backoff_doubles_from_30_seconds_to_at_most_an_hour():
    assert [alerts.backoff_seconds(n) for n in (1, 2, 3, 4, 7, 8, 20)] == [
        30,
        60,
        120,
        240,
        1920,
        3600,
        3600,
    ]


def test_a_delivery_is_given_up_24_hours_after_its_event_without_being_sent():
    with Receiver() as receiver:
        alert_webhook_add(url=receiver.url, secret=SECRET)
        event = _emit()
        AlertEvent.objects.filter(pk=event.pk).update(
            created_at=timezone.now() - dt.timedelta(hours=24, seconds=1)
        )

        alert_deliveries_send()

    assert receiver.requests == []
    delivery = AlertDelivery.objects.get()
    assert delivery.state == DeliveryState.FAILED
    assert "gave up" in delivery.last_error
    assert delivery.next_attempt_at is None


def test_a_failure_whose_retry_would_fall_after_the_deadline_gives_up():
    with Receiver(statuses=[500]) as receiver:
        alert_webhook_add(url=receiver.url, secret=SECRET)
        event = _emit()
        AlertEvent.objects.filter(pk=event.pk).update(
            created_at=timezone.now() - dt.timedelta(hours=23, minutes=59, seconds=50)
        )

        alert_deliveries_send()

    assert len(receiver.requests) == 1
    delivery = AlertDelivery.objects.get()
    assert (delivery.state, delivery.last_status_code) == (DeliveryState.FAILED, 500)


def test_no_answer_is_retried_and_the_error_does_not_repeat_the_urls_query():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # Nothing listens on the port any more: the connection is refused.
    alert_webhook_add(url=f"http://127.0.0.1:{port}/hook?token=receiver-token", secret=SECRET)
    _emit()

    alert_deliveries_send()

    delivery = AlertDelivery.objects.get()
    assert delivery.state == DeliveryState.PENDING
    assert delivery.last_status_code is None
    assert delivery.last_error == "no answer (ConnectionError)"
    assert "receiver-token" not in delivery.last_error


def test_a_secret_no_key_opens_fails_the_attempt_with_the_reason(settings):
    from cryptography.fernet import Fernet

    alert_webhook_add(url="http://127.0.0.1:9/hook", secret=SECRET)
    _emit()
    settings.FIELD_ENCRYPTION_KEYS = [Fernet.generate_key().decode()]

    alert_deliveries_send()

    delivery = AlertDelivery.objects.get()
    assert delivery.state == DeliveryState.PENDING
    assert "Cannot decrypt" in delivery.last_error


# --- e-mail -----------------------------------------------------------------------------------
def test_an_email_destination_gets_one_message_through_djangos_mail_backend():
    alert_email_add(address="ops@example.com")
    event = _emit()

    alert_deliveries_send()
    alert_deliveries_send()

    (message,) = mail.outbox
    assert message.to == ["ops@example.com"]
    assert message.subject.startswith("[ccportal] quota.threshold: Key App has used 9,000")
    assert str(event.uid) in message.body
    assert AlertDelivery.objects.get().state == DeliveryState.DELIVERED


# --- test events ------------------------------------------------------------------------------
def test_a_test_event_is_sent_now_and_reported():
    with Receiver() as receiver:
        destination = alert_webhook_add(
            url=receiver.url, secret=SECRET, events="job.failed"
        )  # a test goes whatever the destination chose
        delivery = alert_destination_test(destination=destination)

    assert delivery.state == DeliveryState.DELIVERED
    (request,) = receiver.requests
    assert json.loads(request.body)["event"] == "test"
    assert signature_valid(SECRET, request.headers["X-CCPortal-Signature"], request.body)


def test_a_failed_test_is_not_retried():
    with Receiver(statuses=[500]) as receiver:
        destination = alert_webhook_add(url=receiver.url, secret=SECRET)
        delivery = alert_destination_test(destination=destination)
        alert_deliveries_send()

    assert delivery.state == DeliveryState.FAILED
    assert delivery.last_status_code == 500
    assert len(receiver.requests) == 1

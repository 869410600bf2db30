"""Alerts: destinations, recording events exactly once, signing, and delivering them.

An event is recorded by :func:`alert_event_emit` under a dedupe key that names the occurrence;
a second emission of the same key records nothing, so the evaluator (``alert_rules``) and the
services that notice a change as it happens may both emit it. Recording an event creates one
pending :class:`AlertDelivery` per destination that wants it; :func:`alert_deliveries_send`
(the worker's task) sends those that are due.

A webhook receives ``POST`` JSON ``{"event", "id", "created", "data"}`` signed in
``X-CCPortal-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>." + body>`` with the
destination's secret; :func:`signature_valid` is how a receiver checks it. A non-2xx answer or
no answer is tried again with exponential backoff (30 s doubling, at most an hour apart) until
``CC_ALERTS_GIVE_UP_HOURS`` after the event, then the delivery is marked as given up.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import logging
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

import requests
from django.core.exceptions import ValidationError
from django.core.mail import EmailMessage
from django.core.validators import URLValidator, validate_email
from django.db import IntegrityError, transaction
from django.db.models import QuerySet
from django.utils import timezone

from integrations import conf, crypto
from integrations.constant_contact.http import session_create
from integrations.errors import PortalError
from integrations.models import (
    AlertDelivery,
    AlertDestination,
    AlertEvent,
    AlertEventType,
    AlertKind,
    DeliveryState,
)
from integrations.services.audit import error_detail_clean

logger = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-CCPortal-Signature"
#: Seconds a signature's timestamp may be away from the receiver's clock.
SIGNATURE_TOLERANCE = 300
#: The first retry waits this long; each later one twice as long, at most ``BACKOFF_MAX``.
BACKOFF_FIRST = 30.0
BACKOFF_MAX = 3600.0
#: How long a worker holds a delivery it is sending (others leave it alone meanwhile).
CLAIM_SECONDS = 120.0
#: How much of a receiver's answer a failed delivery keeps.
ANSWER_KEPT = 200
WEBHOOK_SECRET_MIN = 16
TARGET_MAX = 500


class AlertInvalid(PortalError):
    """A destination that cannot be added as given (bad URL or address, unknown event)."""


class AlertDestinationNotFound(PortalError):
    """No alert destination has that id."""


# --- destinations -------------------------------------------------------------------------------
def alert_events_parse(events: str | Iterable[str] | None) -> list[str]:
    """``events`` (a comma-separated string or a list) as known event types, in order, once
    each; empty means every event. An unknown name raises :class:`AlertInvalid` naming the
    known ones."""
    if events is None:
        return []
    names = events.split(",") if isinstance(events, str) else list(events)
    chosen = list(dict.fromkeys(name.strip() for name in names if name.strip()))
    known = AlertEventType.subscribable()
    unknown = [name for name in chosen if name not in known]
    if unknown:
        raise AlertInvalid(
            f"unknown event{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}; "
            f"choose from {', '.join(known)}."
        )
    return chosen


def alert_webhook_url_check(url: str) -> str:
    """``url`` when it is an absolute http(s) URL a webhook can be posted to."""
    url = (url or "").strip()
    if not url:
        raise AlertInvalid("a webhook needs a URL.")
    if len(url) > TARGET_MAX:
        raise AlertInvalid(f"the URL is longer than {TARGET_MAX} characters.")
    try:
        URLValidator(schemes=["http", "https"])(url)
    except ValidationError:
        raise AlertInvalid(
            f"{url!r} is not an http:// or https:// URL a webhook can be posted to."
        ) from None
    return url


def alert_webhook_secret_check(secret: str) -> str:
    secret = (secret or "").strip()
    if len(secret) < WEBHOOK_SECRET_MIN:
        raise AlertInvalid(
            f"a webhook secret must be at least {WEBHOOK_SECRET_MIN} characters long "
            "(a random string the receiver also knows)."
        )
    return secret


def alert_email_check(address: str) -> str:
    address = (address or "").strip()
    try:
        validate_email(address)
    except ValidationError:
        raise AlertInvalid(f"{address!r} is not an e-mail address.") from None
    if len(address) > TARGET_MAX:
        raise AlertInvalid(f"the address is longer than {TARGET_MAX} characters.")
    return address


def alert_webhook_add(
    *, url: str, secret: str, events: str | Iterable[str] | None = None
) -> AlertDestination:
    """A new enabled webhook destination, once the URL, the secret and the events check out."""
    return AlertDestination.objects.create(
        kind=AlertKind.WEBHOOK,
        target=alert_webhook_url_check(url),
        secret=alert_webhook_secret_check(secret),
        events=alert_events_parse(events),
    )


def alert_email_add(*, address: str, events: str | Iterable[str] | None = None) -> AlertDestination:
    """A new enabled e-mail destination, once the address and the events check out."""
    return AlertDestination.objects.create(
        kind=AlertKind.EMAIL, target=alert_email_check(address), events=alert_events_parse(events)
    )


def alert_destination_get(*, pk: int) -> AlertDestination:
    destination = AlertDestination.objects.filter(pk=pk).first()
    if destination is None:
        raise AlertDestinationNotFound(f"no alert destination with id {pk}.")
    return destination


def alert_destination_remove(*, pk: int) -> AlertDestination:
    """Delete the destination and its deliveries; returns what was removed."""
    destination = alert_destination_get(pk=pk)
    destination.delete()
    return destination


def alert_destination_list() -> QuerySet[AlertDestination]:
    return AlertDestination.objects.order_by("pk")


def alert_delivery_log(*, limit: int = 50) -> list[AlertDelivery]:
    """The latest deliveries, newest first, with their event and destination."""
    return list(
        AlertDelivery.objects.select_related("event", "destination").order_by("-created_at", "-pk")[
            :limit
        ]
    )


# --- events -------------------------------------------------------------------------------------
def alert_event_emit(
    *, event_type: str, dedupe_key: str, data: dict[str, Any], at: dt.datetime | None = None
) -> AlertEvent | None:
    """Record the occurrence ``dedupe_key`` names, with a pending delivery for every enabled
    destination that wants ``event_type``. Returns the new event, or None when the occurrence
    was recorded before (by anyone, in any process: the key is unique in the database)."""
    at = at or timezone.now()
    if AlertEvent.objects.filter(dedupe_key=dedupe_key).exists():
        return None
    try:
        with transaction.atomic():
            event = AlertEvent.objects.create(
                event_type=AlertEventType(event_type),
                dedupe_key=dedupe_key[:200],
                created_at=at,
                data=data,
            )
            _deliveries_create(event, alert_destination_list().filter(enabled=True))
    except IntegrityError:
        return None  # recorded by a racing process between the check and the insert
    logger.info("Alert %s (%s).", event.event_type, dedupe_key)
    return event


def _deliveries_create(event: AlertEvent, destinations: Iterable[AlertDestination]) -> None:
    AlertDelivery.objects.bulk_create(
        AlertDelivery(
            destination=destination,
            event=event,
            next_attempt_at=event.created_at,
            created_at=event.created_at,
        )
        for destination in destinations
        if destination.wants(event.event_type)
    )


# --- signatures ---------------------------------------------------------------------------------
def signature_header(secret: str, body: bytes, *, timestamp: int | None = None) -> str:
    """``t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>." + body keyed by secret>``."""
    t = int(time.time() if timestamp is None else timestamp)
    return f"t={t},v1={_signature(secret, t, body)}"


def signature_valid(
    secret: str, header: str, body: bytes | str, tolerance: int = SIGNATURE_TOLERANCE
) -> bool:
    """Whether ``header`` (an ``X-CCPortal-Signature`` value) signs ``body`` — the raw request
    body, exactly as received — with ``secret``, at a time within ``tolerance`` seconds of now
    (which stops a recorded delivery from being replayed later). Any ``v1`` may match, so a
    sender may sign with an old and a new secret during a change."""
    if isinstance(body, str):
        body = body.encode()
    timestamp, signatures = None, []
    for part in (header or "").split(","):
        name, _, value = part.strip().partition("=")
        if name == "t" and value.isascii() and value.isdigit():
            timestamp = int(value)
        elif name == "v1" and value:
            signatures.append(value)
    if timestamp is None or not signatures or abs(time.time() - timestamp) > tolerance:
        return False
    expected = _signature(secret, timestamp, body)
    return any(hmac.compare_digest(expected, candidate) for candidate in signatures)


def _signature(secret: str, timestamp: int, body: bytes) -> str:
    signed = f"{timestamp}.".encode() + body
    return hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()


# --- delivery -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class SendOutcome:
    delivered: bool
    status_code: int | None = None
    error: str = ""


def alert_deliveries_due(*, now: dt.datetime | None = None) -> bool:
    """Whether a pending delivery's time has come."""
    now = now or timezone.now()
    return AlertDelivery.objects.filter(
        state=DeliveryState.PENDING, next_attempt_at__lte=now
    ).exists()


def alert_deliveries_send(*, now: dt.datetime | None = None, limit: int = 100) -> int:
    """Send the pending deliveries whose time has come; returns how many were attempted.

    Each is claimed first (one conditional UPDATE moves its next attempt on), so two workers
    running this at once never send the same delivery twice. Deliveries whose event is older
    than ``CC_ALERTS_GIVE_UP_HOURS`` are marked as given up without being sent.
    """
    now = now or timezone.now()
    due = list(
        AlertDelivery.objects.filter(state=DeliveryState.PENDING, next_attempt_at__lte=now)
        .select_related("event", "destination")
        .order_by("next_attempt_at", "pk")[:limit]
    )
    if not due:
        return 0
    attempted = 0
    session = session_create(
        connect_timeout=conf.alerts_webhook_timeouts()[0],
        read_timeout=conf.alerts_webhook_timeouts()[1],
    )
    try:
        for delivery in due:
            if _give_up_if_stale(delivery, now=now):
                continue
            if not _claim(delivery, now=now):
                continue
            _attempt(delivery, session=session, final=False)
            attempted += 1
    finally:
        session.close()
    return attempted


def alert_destination_test(*, destination: AlertDestination) -> AlertDelivery:
    """Send a ``test`` event to ``destination`` now and return its delivery, delivered or
    failed: a test is tried once and never retried."""
    now = timezone.now()
    event = AlertEvent.objects.create(
        event_type=AlertEventType.TEST,
        dedupe_key=f"test:{uuid.uuid4().hex}",
        created_at=now,
        data={
            "destination": destination.pk,
            "message": "A test alert from ccportal: this destination receives alerts.",
        },
    )
    delivery = AlertDelivery.objects.create(
        destination=destination, event=event, next_attempt_at=None, created_at=now
    )
    session = session_create(
        connect_timeout=conf.alerts_webhook_timeouts()[0],
        read_timeout=conf.alerts_webhook_timeouts()[1],
    )
    try:
        _attempt(delivery, session=session, final=True)
    finally:
        session.close()
    delivery.refresh_from_db()
    return delivery


def _give_up_if_stale(delivery: AlertDelivery, *, now: dt.datetime) -> bool:
    if now < _deadline(delivery):
        return False
    AlertDelivery.objects.filter(pk=delivery.pk, state=DeliveryState.PENDING).update(
        state=DeliveryState.FAILED,
        next_attempt_at=None,
        last_error=(delivery.last_error + " — " if delivery.last_error else "")
        + f"gave up: the event is over {conf.alerts_give_up_hours():g} h old.",
        updated_at=now,
    )
    return True


def _deadline(delivery: AlertDelivery) -> dt.datetime:
    return delivery.event.created_at + dt.timedelta(hours=conf.alerts_give_up_hours())


def _claim(delivery: AlertDelivery, *, now: dt.datetime) -> bool:
    claimed = AlertDelivery.objects.filter(
        pk=delivery.pk, state=DeliveryState.PENDING, next_attempt_at=delivery.next_attempt_at
    ).update(next_attempt_at=now + dt.timedelta(seconds=CLAIM_SECONDS), updated_at=now)
    return bool(claimed)


def backoff_seconds(attempts: int) -> float:
    """The wait after the ``attempts``-th failed attempt: 30 s, 60 s, 120 s … at most 1 h."""
    return min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** max(0, attempts - 1))


def _attempt(delivery: AlertDelivery, *, session: requests.Session, final: bool) -> None:
    """Send once and record the outcome: delivered, pending with the next attempt's time, or
    failed (``final``, or the next attempt would fall after the deadline)."""
    try:
        if delivery.destination.kind == AlertKind.WEBHOOK:
            outcome = _send_webhook(delivery, session=session)
        else:
            outcome = _send_email(delivery)
    except PortalError as exc:  # a secret no encryption key opens
        outcome = SendOutcome(delivered=False, error=str(exc))
    now = timezone.now()
    attempts = delivery.attempts + 1
    changes: dict[str, Any] = {
        "attempts": attempts,
        "last_status_code": outcome.status_code,
        "last_error": error_detail_clean(outcome.error),
        "updated_at": now,
    }
    if outcome.delivered:
        changes |= {"state": DeliveryState.DELIVERED, "delivered_at": now, "next_attempt_at": None}
    else:
        retry_at = now + dt.timedelta(seconds=backoff_seconds(attempts))
        if final or retry_at >= _deadline(delivery):
            changes |= {"state": DeliveryState.FAILED, "next_attempt_at": None}
        else:
            changes |= {"state": DeliveryState.PENDING, "next_attempt_at": retry_at}
        logger.warning(
            "Alert delivery %s to %s failed (attempt %s): %s",
            delivery.pk,
            delivery.destination,
            attempts,
            changes["last_error"],
        )
    AlertDelivery.objects.filter(pk=delivery.pk).update(**changes)


def _send_webhook(delivery: AlertDelivery, *, session: requests.Session) -> SendOutcome:
    destination = delivery.destination
    secret = crypto.readable(destination.secret)
    body = json.dumps(delivery.event.payload(), separators=(",", ":"), sort_keys=True).encode()
    headers = {
        "Content-Type": "application/json",
        SIGNATURE_HEADER: signature_header(secret, body),
    }
    try:
        response = session.post(
            destination.target, data=body, headers=headers, allow_redirects=False
        )
    except requests.Timeout:
        return SendOutcome(delivered=False, error="no answer in time (timeout)")
    except requests.RequestException as exc:
        # The exception's text names the URL (and whatever token its query holds): only its
        # type is kept.
        return SendOutcome(delivered=False, error=f"no answer ({type(exc).__name__})")
    status = response.status_code
    if HTTPStatus.OK <= status < HTTPStatus.MULTIPLE_CHOICES:
        return SendOutcome(delivered=True, status_code=status)
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = ""
    answer = response.text[:ANSWER_KEPT].strip()
    error = f"answered {status} {phrase}".rstrip() + (f": {answer}" if answer else "")
    return SendOutcome(delivered=False, status_code=status, error=error)


def _send_email(delivery: AlertDelivery) -> SendOutcome:
    event = delivery.event
    summary = event.data.get("message") or event.get_event_type_display()
    message = EmailMessage(
        subject=f"[ccportal] {event.event_type}: {summary}"[:200],
        body=(
            f"{summary}\n\n"
            f"Event: {event.event_type}\nId: {event.uid}\n"
            f"Created: {event.created_at.astimezone(dt.UTC):%Y-%m-%d %H:%M:%S} UTC\n\n"
            + json.dumps(event.payload(), indent=2, sort_keys=True)
            + "\n"
        ),
        from_email=conf.alerts_email_from(),
        to=[delivery.destination.target],
    )
    try:
        message.send(fail_silently=False)
    except Exception as exc:  # SMTP, DNS, socket: the backend's own error types vary
        return SendOutcome(delivered=False, error=f"mail not sent ({type(exc).__name__}: {exc})")
    return SendOutcome(delivered=True)

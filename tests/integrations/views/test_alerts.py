"""The alerts page: destinations, add/remove/test forms, the delivery log, and who may do what."""

from __future__ import annotations

import json
from http import HTTPStatus

import pytest
from django.test import Client
from django.urls import reverse

from integrations.models import AlertDelivery, AlertDestination, AlertEventType, DeliveryState
from integrations.services.alerts import (
    alert_deliveries_send,
    alert_event_emit,
    alert_webhook_add,
    signature_valid,
)
from tests.factories import KEY_MANAGERS, OPERATORS, VIEWERS, PortalUserFactory
from tests.integrations.services.alert_receiver import Receiver

pytestmark = pytest.mark.django_db

SECRET = "page-secret-0123456789"
PAGE = reverse("integrations:alert_list")


def _client(*groups: str) -> Client:
    client = Client()
    client.force_login(PortalUserFactory(groups=list(groups)))
    return client


def test_the_page_lists_destinations_and_deliveries_without_the_secret():
    destination = alert_webhook_add(url="http://127.0.0.1:9/hook?token=abc", secret=SECRET)
    alert_event_emit(
        event_type=AlertEventType.JOB_FAILED,
        dedupe_key="job.failed:1",
        data={"message": "Sync job #1 (Newsletter) failed"},
    )
    alert_deliveries_send()  # nothing listens on port 9: the attempt fails

    page = _client(VIEWERS).get(PAGE)

    assert page.status_code == HTTPStatus.OK
    html = page.content.decode()
    assert SECRET not in html
    assert destination.secret_fingerprint in html
    assert "http://127.0.0.1:9/hook?…" in html and "token=abc" not in html
    assert "job.failed" in html and "Sync job #1 (Newsletter) failed" in html
    assert "no answer (ConnectionError)" in html
    assert 'href="/alerts/"' in html  # the nav link
    # A viewer sees no forms that change anything.
    assert 'id="alert-add"' not in html and "Send test" not in html


def test_a_key_manager_adds_a_webhook_and_the_secret_is_never_rendered_back():
    client = _client(KEY_MANAGERS)
    response = client.post(
        reverse("integrations:alert_add"),
        {
            "kind": "webhook",
            "target": "https://hooks.example.com/cc",
            "secret": SECRET,
            "events": ["job.failed", "quota.threshold"],
        },
        follow=True,
    )

    destination = AlertDestination.objects.get()
    assert destination.events == ["job.failed", "quota.threshold"]
    assert destination.secret == SECRET
    html = response.content.decode()
    assert "Added Webhook https://hooks.example.com/cc" in html
    assert SECRET not in html


def test_a_bad_destination_is_refused_with_the_reason_and_nothing_is_added():
    response = _client(KEY_MANAGERS).post(
        reverse("integrations:alert_add"),
        {"kind": "webhook", "target": "ftp://example.com/x", "secret": SECRET},
    )

    assert response.status_code == HTTPStatus.BAD_REQUEST
    assert "is not an http:// or https:// URL" in response.content.decode()
    assert SECRET not in response.content.decode()
    assert AlertDestination.objects.count() == 0


def test_test_sends_now_and_the_page_says_what_happened():
    with Receiver() as receiver:
        destination = alert_webhook_add(url=receiver.url, secret=SECRET)
        response = _client(KEY_MANAGERS).post(
            reverse("integrations:alert_test", args=[destination.pk]), follow=True
        )

    assert "Test delivered to" in response.content.decode()
    (request,) = receiver.requests
    assert json.loads(request.body)["event"] == "test"
    assert signature_valid(SECRET, request.headers["X-CCPortal-Signature"], request.body)
    assert AlertDelivery.objects.get().state == DeliveryState.DELIVERED


def test_remove_deletes_the_destination():
    destination = alert_webhook_add(url="https://hooks.example.com/cc", secret=SECRET)
    _client(KEY_MANAGERS).post(reverse("integrations:alert_remove", args=[destination.pk]))
    assert AlertDestination.objects.count() == 0


@pytest.mark.parametrize("groups", [[], [VIEWERS], [OPERATORS]])
def test_only_key_managers_change_destinations(groups):
    destination = alert_webhook_add(url="https://hooks.example.com/cc", secret=SECRET)
    client = _client(*groups)

    for name, args in (("alert_add", []), ("alert_remove", [destination.pk])):
        response = client.post(
            reverse(f"integrations:{name}", args=args),
            {"kind": "email", "target": "ops@example.com"},
        )
        assert response.status_code == HTTPStatus.FORBIDDEN
    assert list(AlertDestination.objects.values_list("pk", flat=True)) == [destination.pk]


def test_the_page_needs_view_portal():
    assert _client().get(PAGE).status_code == HTTPStatus.FORBIDDEN
    anonymous = Client().get(PAGE)
    assert anonymous.status_code == HTTPStatus.FOUND and anonymous.url.startswith("/login/")

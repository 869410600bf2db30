"""The admin's alert destinations (secret write-only) and its read-only event and delivery log."""

from __future__ import annotations

from http import HTTPStatus

import pytest
from django.urls import reverse

from integrations.models import AlertDelivery, AlertDestination, AlertEventType
from integrations.services.alerts import alert_event_emit, alert_webhook_add
from tests.factories import VIEWERS, PortalUserFactory

pytestmark = pytest.mark.django_db

SECRET = "admin-secret-0123456789"


@pytest.fixture
def delivered(db):
    destination = alert_webhook_add(url="https://hooks.example.com/cc", secret=SECRET)
    event = alert_event_emit(
        event_type=AlertEventType.JOB_FAILED, dedupe_key="job.failed:7", data={"message": "m"}
    )
    return destination, event, AlertDelivery.objects.get()


def test_destination_pages_show_a_fingerprint_never_the_secret(staff_client, delivered):
    destination, _, _ = delivered
    for url in (
        reverse("admin:integrations_alertdestination_changelist"),
        reverse("admin:integrations_alertdestination_change", args=[destination.pk]),
    ):
        html = staff_client.get(url).content.decode()
        assert SECRET not in html, url
        assert destination.secret_fingerprint in html, url


def test_the_secret_is_write_only_and_kept_when_left_blank(staff_client, delivered):
    destination, _, _ = delivered
    url = reverse("admin:integrations_alertdestination_change", args=[destination.pk])
    form = {"kind": "webhook", "target": "https://hooks.example.com/v2", "enabled": "on"}

    assert staff_client.post(url, form).status_code == HTTPStatus.FOUND
    destination.refresh_from_db()
    assert (destination.target, destination.secret) == ("https://hooks.example.com/v2", SECRET)

    new = "admin-secret-rotated-99"
    assert staff_client.post(url, form | {"new_secret": new}).status_code == HTTPStatus.FOUND
    destination.refresh_from_db()
    assert destination.secret == new


def test_a_destination_added_in_the_admin_is_checked_by_the_alert_service(staff_client):
    url = reverse("admin:integrations_alertdestination_add")
    refused = staff_client.post(url, {"kind": "webhook", "target": "ftp://x", "new_secret": SECRET})
    assert refused.status_code == HTTPStatus.OK
    assert "is not an http:// or https:// URL" in refused.content.decode()
    without_secret = staff_client.post(url, {"kind": "webhook", "target": "https://x.example.com"})
    assert "at least 16 characters" in without_secret.content.decode()
    assert AlertDestination.objects.count() == 0

    added = staff_client.post(
        url,
        {"kind": "email", "target": "ops@example.com", "events": ["job.failed"], "enabled": "on"},
    )
    assert added.status_code == HTTPStatus.FOUND
    assert AlertDestination.objects.get().events == ["job.failed"]


def test_the_delivery_log_and_events_are_read_only(staff_client, delivered):
    _, event, delivery = delivered
    for model, obj in (("alertdelivery", delivery), ("alertevent", event)):
        changelist = staff_client.get(reverse(f"admin:integrations_{model}_changelist"))
        assert changelist.status_code == HTTPStatus.OK
        assert SECRET not in changelist.content.decode()
        change = staff_client.get(reverse(f"admin:integrations_{model}_change", args=[obj.pk]))
        assert change.status_code == HTTPStatus.OK
        assert SECRET not in change.content.decode()
        assert staff_client.get(reverse(f"admin:integrations_{model}_add")).status_code == 403


def test_a_viewer_sees_destinations_but_may_not_change_them(client, delivered):
    destination, _, _ = delivered
    client.force_login(PortalUserFactory(groups=[VIEWERS]))
    url = reverse("admin:integrations_alertdestination_change", args=[destination.pk])
    assert client.get(url).status_code == HTTPStatus.OK
    response = client.post(url, {"kind": "email", "target": "x@example.com"})
    assert response.status_code == HTTPStatus.FORBIDDEN
    destination.refresh_from_db()
    assert destination.kind == "webhook"

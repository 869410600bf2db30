"""Admin and dashboard pages never render a secret, whatever page shows the object."""

from __future__ import annotations

import pytest
from django.urls import reverse

from integrations.models import ApiCall, BulkJob, DailyUsage, KeyLimiterState
from tests.factories import ApiKeyFactory, ConnectedAccountFactory

pytestmark = pytest.mark.django_db

SENTINELS = {
    "client_secret": "SENTINEL-CLIENT-SECRET-5f1c",
    "access_token": "SENTINEL-ACCESS-TOKEN-9a7e",
    "refresh_token": "SENTINEL-REFRESH-TOKEN-3b2d",
}


@pytest.fixture
def objects(db):
    key = ApiKeyFactory(client_secret=SENTINELS["client_secret"])
    account = ConnectedAccountFactory(
        api_key=key,
        access_token=SENTINELS["access_token"],
        refresh_token=SENTINELS["refresh_token"],
    )
    call = ApiCall.objects.create(
        api_key=key,
        account=account,
        method="GET",
        path_template="/v3/contact_lists",
        status_code=200,
    )
    usage = DailyUsage.objects.create(api_key=key, date="2026-11-26", calls=1)
    state = KeyLimiterState.objects.create(api_key=key)
    job = BulkJob.objects.create(account=account, list_id="list-1")
    return {
        "key": key,
        "account": account,
        "call": call,
        "usage": usage,
        "state": state,
        "job": job,
    }


def _assert_no_secret(html: str) -> None:
    for name, value in SENTINELS.items():
        assert value not in html, f"{name} rendered"


def test_admin_index_lists_every_model(staff_client, objects):
    html = staff_client.get(reverse("admin:index")).content.decode()
    for model in (
        "apikey",
        "connectedaccount",
        "apicall",
        "dailyusage",
        "keylimiterstate",
        "bulkjob",
    ):
        assert f"/admin/integrations/{model}/" in html


@pytest.mark.parametrize(
    ("model", "obj"),
    [
        ("apikey", "key"),
        ("connectedaccount", "account"),
        ("apicall", "call"),
        ("dailyusage", "usage"),
        ("keylimiterstate", "state"),
        ("bulkjob", "job"),
    ],
)
def test_admin_changelist_and_change_page_render_without_secrets(staff_client, objects, model, obj):
    changelist = staff_client.get(reverse(f"admin:integrations_{model}_changelist"))
    assert changelist.status_code == 200
    _assert_no_secret(changelist.content.decode())
    change = staff_client.get(reverse(f"admin:integrations_{model}_change", args=[objects[obj].pk]))
    assert change.status_code == 200
    _assert_no_secret(change.content.decode())


def test_admin_shows_fingerprint_instead_of_secret(staff_client, objects):
    html = staff_client.get(
        reverse("admin:integrations_connectedaccount_change", args=[objects["account"].pk])
    ).content.decode()
    assert objects["account"].access_token_fingerprint in html
    assert "stored ·" in html


def test_admin_api_call_is_read_only(staff_client, objects):
    assert staff_client.get(reverse("admin:integrations_apicall_add")).status_code == 403
    response = staff_client.post(
        reverse("admin:integrations_apicall_change", args=[objects["call"].pk]), {"method": "POST"}
    )
    assert response.status_code == 403


def test_admin_sets_new_secret_write_only_and_keeps_it_when_left_blank(staff_client, objects):
    key = objects["key"]
    url = reverse("admin:integrations_apikey_change", args=[key.pk])
    data = {
        "name": key.name,
        "client_id": key.client_id,
        "redirect_uri": key.redirect_uri,
        "tier": "standard",
        "new_client_secret": "",
    }
    assert staff_client.post(url, data).status_code == 302
    key.refresh_from_db()
    assert key.client_secret == SENTINELS["client_secret"]
    data["new_client_secret"] = "rotated-secret"
    assert staff_client.post(url, data).status_code == 302
    key.refresh_from_db()
    assert key.client_secret == "rotated-secret"


def test_dashboard_is_staff_only_and_renders_without_secrets(staff_client, objects):
    from django.test import Client

    anonymous = Client().get(reverse("integrations:dashboard"))
    assert anonymous.status_code == 302
    page = staff_client.get(reverse("integrations:dashboard"))
    assert page.status_code == 200
    html = page.content.decode()
    assert objects["key"].client_id in html
    _assert_no_secret(html)

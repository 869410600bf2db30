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


def test_a_key_added_in_the_admin_goes_through_the_key_service(staff_client):
    from integrations.models import ApiKey

    url = reverse("admin:integrations_apikey_add")
    form = {
        "name": "Intranet app",
        "client_id": "intranet-app",
        "redirect_uri": "http://portal:8000/accounts/callback/",
        "tier": "standard",
        "pkce": "auto",
    }
    assert staff_client.post(url, form).status_code == 302
    key = ApiKey.objects.get(client_id="intranet-app")
    # No secret: a CC PKCE app, so PKCE is on, exactly as `cc_key add` would make it.
    assert (key.client_secret, key.use_pkce) == ("", True)
    # The service's rules apply: a fragment in the redirect URI is refused by name.
    page = staff_client.post(
        url, {**form, "client_id": "other", "redirect_uri": "https://x.example/cb#top"}
    )
    assert page.status_code == 200
    assert "must not contain a #fragment" in page.content.decode()
    assert not ApiKey.objects.filter(client_id="other").exists()


@pytest.mark.django_db(transaction=True)
def test_a_key_added_in_the_admin_without_a_secret_connects(staff_client, cc_sandbox):
    """The whole Connect flow, with the key the admin made: PKCE, no secret, tokens stored."""
    from integrations.models import ApiKey, ConnectedAccount
    from tests.fixtures.portal import REDIRECT_URI, CCApp

    cc_sandbox.register_client("admin-pkce-app", redirect_uris=[REDIRECT_URI], client_secret="")
    staff_client.post(
        reverse("admin:integrations_apikey_add"),
        {
            "name": "PKCE app",
            "client_id": "admin-pkce-app",
            "redirect_uri": REDIRECT_URI,
            "tier": "standard",
            "pkce": "auto",
        },
    )
    key = ApiKey.objects.get(client_id="admin-pkce-app")
    cc_account = cc_sandbox.create_account("admin-made@example.com")
    app = CCApp(sandbox=cc_sandbox, api_key=key, cc_account=cc_account, lists=[])
    account = app.connect()
    assert ConnectedAccount.objects.get(pk=account.pk).is_active
    assert account.refresh_token and account.access_token


# --- who may do what in the admin ------------------------------------------------------------
def _admin_client(*groups: str):
    from django.test import Client

    from tests.factories import PortalUserFactory

    client = Client()
    client.force_login(PortalUserFactory(groups=list(groups)))
    return client


def _key_form(key, **changes) -> dict:
    return {
        "name": key.name,
        "client_id": key.client_id,
        "redirect_uri": key.redirect_uri,
        "tier": "standard",
        "pkce": "off",
        "new_client_secret": "",
        **changes,
    }


MODELS = ("apikey", "connectedaccount", "apicall", "dailyusage", "keylimiterstate", "bulkjob")


def test_a_staff_login_without_permissions_sees_and_changes_nothing(objects):
    client = _admin_client()
    index = client.get(reverse("admin:index"))
    assert index.status_code == 200
    for model in MODELS:
        assert f"/admin/integrations/{model}/" not in index.content.decode()
        assert client.get(reverse(f"admin:integrations_{model}_changelist")).status_code == 403
    assert client.get(reverse("admin:app_list", args=["integrations"])).status_code == 404
    key = objects["key"]
    url = reverse("admin:integrations_apikey_change", args=[key.pk])
    assert client.post(url, _key_form(key, name="Renamed")).status_code == 403
    key.refresh_from_db()
    assert key.name != "Renamed"


def test_a_viewer_sees_every_model_but_cannot_change_a_key(objects):
    from tests.factories import VIEWERS

    client = _admin_client(VIEWERS)
    index = client.get(reverse("admin:index")).content.decode()
    for model in MODELS:
        assert f"/admin/integrations/{model}/" in index
    key = objects["key"]
    url = reverse("admin:integrations_apikey_change", args=[key.pk])
    page = client.get(url)
    assert page.status_code == 200
    assert 'name="new_client_secret"' not in page.content.decode(), "a read-only page"
    assert client.post(url, _key_form(key, name="Renamed")).status_code == 403
    assert client.get(reverse("admin:integrations_apikey_add")).status_code == 403
    assert client.get(reverse("admin:integrations_apikey_delete", args=[key.pk])).status_code == 403
    key.refresh_from_db()
    assert key.name != "Renamed"


def test_an_operator_cannot_change_a_key_either(objects):
    from tests.factories import OPERATORS

    client = _admin_client(OPERATORS)
    key = objects["key"]
    url = reverse("admin:integrations_apikey_change", args=[key.pk])
    assert client.post(url, _key_form(key, name="Renamed")).status_code == 403


def test_a_key_manager_changes_a_key(objects):
    from tests.factories import KEY_MANAGERS

    client = _admin_client(KEY_MANAGERS)
    key = objects["key"]
    url = reverse("admin:integrations_apikey_change", args=[key.pk])
    assert client.post(url, _key_form(key, name="Renamed")).status_code == 302
    key.refresh_from_db()
    assert key.name == "Renamed"
    assert client.get(reverse("admin:integrations_apikey_add")).status_code == 200


def _disconnect_action(client, account):
    return client.post(
        reverse("admin:integrations_connectedaccount_changelist"),
        {"action": "disconnect", "_selected_action": [account.pk]},
    )


def test_only_an_operator_disconnects_accounts_from_the_admin(objects):
    from integrations.models import AccountStatus
    from tests.factories import OPERATORS, VIEWERS

    account = objects["account"]
    viewer = _admin_client(VIEWERS)
    changelist = viewer.get(reverse("admin:integrations_connectedaccount_changelist"))
    assert 'value="disconnect"' not in changelist.content.decode()
    _disconnect_action(viewer, account)
    account.refresh_from_db()
    assert account.status == AccountStatus.ACTIVE

    operator = _admin_client(OPERATORS)
    assert _disconnect_action(operator, account).status_code == 302
    account.refresh_from_db()
    assert account.status == AccountStatus.DISCONNECTED
    assert account.access_token == "" and account.refresh_token == ""


def test_only_an_operator_cancels_jobs_from_the_admin(objects):
    from integrations.models import JobState
    from tests.factories import OPERATORS, VIEWERS

    job = objects["job"]
    data = {"action": "cancel", "_selected_action": [job.pk]}
    url = reverse("admin:integrations_bulkjob_changelist")
    _admin_client(VIEWERS).post(url, data)
    job.refresh_from_db()
    assert job.state != JobState.CANCELLED
    assert _admin_client(OPERATORS).post(url, data).status_code == 302
    job.refresh_from_db()
    assert job.state == JobState.CANCELLED


def test_only_a_superuser_deletes_api_calls(staff_client, objects):
    from tests.factories import KEY_MANAGERS

    url = reverse("admin:integrations_apicall_delete", args=[objects["call"].pk])
    assert _admin_client(KEY_MANAGERS).get(url).status_code == 403
    assert staff_client.get(url).status_code == 200


# --- rows whose secret no configured key opens ------------------------------------------------
@pytest.fixture
def unreadable(settings, objects):
    """The objects, read back under a key that opens none of their secrets."""
    from cryptography.fernet import Fernet

    settings.FIELD_ENCRYPTION_KEYS = [Fernet.generate_key().decode()]
    key = type(objects["key"]).objects.get(pk=objects["key"].pk)
    account = type(objects["account"]).objects.get(pk=objects["account"].pk)
    assert key.secret_unreadable and account.tokens_unreadable
    return {"key": key, "account": account}


def test_unreadable_secrets_are_named_in_the_admin_lists_and_pages(staff_client, unreadable):
    keys = staff_client.get(reverse("admin:integrations_apikey_changelist"))
    assert keys.status_code == 200
    assert "unreadable secret: re-enter it" in keys.content.decode()
    key_page = staff_client.get(
        reverse("admin:integrations_apikey_change", args=[unreadable["key"].pk])
    )
    assert key_page.status_code == 200
    assert "unreadable secret: re-enter it" in key_page.content.decode()
    accounts = staff_client.get(reverse("admin:integrations_connectedaccount_changelist"))
    assert accounts.status_code == 200
    assert "tokens unreadable: reconnect" in accounts.content.decode()
    account_page = staff_client.get(
        reverse("admin:integrations_connectedaccount_change", args=[unreadable["account"].pk])
    )
    assert account_page.status_code == 200
    assert "tokens unreadable: reconnect" in account_page.content.decode()


def test_unreadable_secrets_are_named_on_the_account_pages(staff_client, unreadable):
    accounts = staff_client.get(reverse("integrations:account_list")).content.decode()
    assert "unreadable secret: re-enter it" in accounts
    assert "tokens unreadable: reconnect" in accounts
    detail = staff_client.get(
        reverse("integrations:account_detail", args=[unreadable["account"].pk])
    ).content.decode()
    assert "unreadable secret: re-enter it" in detail
    assert "tokens unreadable: reconnect" in detail


def test_connecting_with_a_key_whose_secret_is_unreadable_says_so(staff_client, unreadable):
    response = staff_client.post(reverse("integrations:connect", args=[unreadable["key"].pk]))
    assert response.status_code == 400
    assert "re-enter the secret" in response.content.decode()


# --- an account's fair share and budget -------------------------------------------------------
def _account_form(client, account, **changes) -> dict:
    """The account's change form as the admin renders it, with ``changes`` typed in."""
    page = client.get(reverse("admin:integrations_connectedaccount_change", args=[account.pk]))
    form = page.context["adminform"].form
    data = {}
    for name in form.fields:
        value = form[name].value()
        data[name] = "" if value is None else value
    return {**data, **changes}


def test_the_account_admin_edits_the_budget_in_its_own_fieldset(staff_client, objects, caplog):
    account = objects["account"]
    url = reverse("admin:integrations_connectedaccount_change", args=[account.pk])
    page = staff_client.get(url)
    fieldsets = [fieldset.name for fieldset in page.context["adminform"]]
    assert "Fair share and budget" in fieldsets
    budget = next(f for f in page.context["adminform"] if f.name == "Fair share and budget")
    assert list(budget.fields) == ["share_weight", "daily_cap", "daily_share"]
    data = _account_form(staff_client, account, share_weight="3", daily_cap="500", label="Kept")
    with caplog.at_level("INFO", logger="integrations.services.budgets"):
        assert staff_client.post(url, data).status_code == 302
    account.refresh_from_db()
    assert (account.share_weight, account.daily_cap, account.daily_share) == (3, 500, None)
    assert account.label == "Kept", "the other fields are saved as usual"
    assert account.access_token == SENTINELS["access_token"], "tokens untouched"
    assert any("weight 3 · cap 500 calls/day" in r.getMessage() for r in caplog.records), (
        "saved through the budget service"
    )


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"daily_cap": "0"}, "the daily cap must be a whole number of calls from 1"),
        ({"daily_share": "0"}, "the daily share must be more than 0 and at most 1"),
        ({"daily_share": "1.5"}, "up to 100% of the key&#x27;s day), or none"),
        ({"share_weight": "0"}, "the weight must be a whole number from 1 to 1000; got 0."),
        ({"share_weight": "1001"}, "from 1 to 1000; got 1001."),
    ],
)
def test_the_account_admin_refuses_a_budget_the_service_refuses(
    staff_client, objects, changes, message
):
    account = objects["account"]
    url = reverse("admin:integrations_connectedaccount_change", args=[account.pk])
    page = staff_client.post(url, _account_form(staff_client, account, label="Changed", **changes))
    assert page.status_code == 200, "the form again, with the error"
    assert message in page.content.decode()
    field = next(iter(changes))
    assert page.context["adminform"].form.errors[field]
    account.refresh_from_db()
    assert (account.share_weight, account.daily_cap, account.daily_share) == (1, None, None)
    assert account.label != "Changed", "nothing saved"


def test_the_account_admin_form_checks_through_the_budget_service(objects):
    from django.contrib.admin import site
    from django.test import RequestFactory

    from integrations.admin import ConnectedAccountAdmin
    from tests.factories import StaffFactory

    request = RequestFactory().get("/")
    request.user = StaffFactory()
    account = objects["account"]
    form_class = ConnectedAccountAdmin(type(account), site).get_form(request, account, change=True)
    data = {
        "api_key": account.api_key_id,
        "label": account.label,
        "scopes": '["contact_data"]',
        "refresh_mode": account.refresh_mode,
        "refresh_failures": "0",
        "status": account.status,
        "share_weight": "2",
        "daily_cap": "0",
    }
    form = form_class(data, instance=type(account).objects.get(pk=account.pk))
    assert not form.is_valid()
    assert "from 1 to 2,147,483,647" in form.errors["daily_cap"][0]
    form = form_class(
        {**data, "daily_cap": "25", "daily_share": "0.5"},
        instance=type(account).objects.get(pk=account.pk),
    )
    assert form.is_valid(), form.errors
    assert form.budget_arguments(changed_only=True) == {"weight": 2, "per_day": 25, "share": 0.5}


def test_only_an_operator_changes_an_accounts_budget_in_the_admin(objects):
    from tests.factories import OPERATORS, VIEWERS

    account = objects["account"]
    url = reverse("admin:integrations_connectedaccount_change", args=[account.pk])
    viewer = _admin_client(VIEWERS)
    page = viewer.get(url)
    assert page.status_code == 200
    assert 'name="share_weight"' not in page.content.decode(), "shown read-only"
    assert "Fair share and budget" in page.content.decode()
    operator = _admin_client(OPERATORS)
    data = _account_form(operator, account, share_weight="5", daily_share="0.2")
    assert viewer.post(url, data).status_code == 403
    account.refresh_from_db()
    assert account.share_weight == 1
    assert operator.post(url, data).status_code == 302
    account.refresh_from_db()
    assert (account.share_weight, account.daily_share) == (5, 0.2)


def test_the_account_changelist_shows_weight_and_cap(staff_client, objects):
    account = objects["account"]
    type(account).objects.filter(pk=account.pk).update(share_weight=7, daily_cap=1234)
    page = staff_client.get(reverse("admin:integrations_connectedaccount_changelist"))
    html = page.content.decode()
    assert "column-share_weight" in html and "column-cap" in html
    assert "1,234 calls" in html
    assert '<td class="field-share_weight">7</td>' in html

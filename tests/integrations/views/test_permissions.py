"""Who may open which page: every URL of the portal, for every kind of login.

The logins are staff users in migration 0007's groups (so this also proves the migration made
them with the right permissions), a staff user in no group, and the anonymous visitor. The
expected permission of each page is written down here, from what the page does; the URLconf
is read, so a new page without a row in ``REQUIRED`` fails ``test_every_portal_url_is_in_the_matrix``.
"""

from __future__ import annotations

import html
import re
from http import HTTPStatus
from urllib.parse import parse_qs, urlsplit

import pytest
from django.test import Client
from django.urls import URLPattern, reverse
from django.utils import timezone

from integrations import urls as portal_urls
from integrations.models import AccountStatus, BulkJob
from integrations.permissions import (
    MANAGE_KEYS,
    OPERATE_PORTAL,
    PERMISSIONS,
    VIEW_PORTAL,
    refusal_message,
)
from integrations.services.audit import api_call_record
from integrations.services.lists import ContactListsSnapshot
from tests.factories import (
    KEY_MANAGERS,
    OPERATORS,
    VIEWERS,
    ApiKeyFactory,
    ConnectedAccountFactory,
    PortalUserFactory,
)

pytestmark = pytest.mark.django_db

#: What each page needs (by URL name). Rows for pages not routed (yet) are simply unused.
REQUIRED = {
    "dashboard": VIEW_PORTAL,
    "key_panel": VIEW_PORTAL,
    "account_list": VIEW_PORTAL,
    "account_detail": VIEW_PORTAL,
    "account_lists": VIEW_PORTAL,
    "account_lists_refresh": OPERATE_PORTAL,
    "account_budget": OPERATE_PORTAL,
    "job_list": VIEW_PORTAL,
    "job_detail": VIEW_PORTAL,
    "job_progress": VIEW_PORTAL,
    "job_rejected_csv": VIEW_PORTAL,
    "call_log": VIEW_PORTAL,
    "call_detail": VIEW_PORTAL,
    "call_export": VIEW_PORTAL,
    "connect": OPERATE_PORTAL,
    "connect_callback": OPERATE_PORTAL,
    "reconnect": OPERATE_PORTAL,
    "disconnect": OPERATE_PORTAL,
    "sync_start": OPERATE_PORTAL,
    "sync_sample_csv": OPERATE_PORTAL,
    "job_action": OPERATE_PORTAL,
    "alert_list": VIEW_PORTAL,
    "alert_add": MANAGE_KEYS,
    "alert_remove": MANAGE_KEYS,
    "alert_test": MANAGE_KEYS,
    "token_list": MANAGE_KEYS,
    "token_create": MANAGE_KEYS,
    "token_revoke": MANAGE_KEYS,
}
#: Pages no login opens, and what guards them instead.
UNGUARDED = {"metrics": "a bearer token (CC_METRICS_TOKEN)"}

#: The actions that change something, as the portal's forms send them.
POSTS = [
    ("connect", {}),
    ("reconnect", {}),
    ("disconnect", {}),
    ("account_lists_refresh", {}),
    ("account_budget", {}),
    ("sync_start", {}),
    *(
        ("job_action", {"action": action})
        for action in ("run", "schedule", "cancel", "resume", "retry")
    ),
    ("alert_add", {}),
    ("alert_remove", {}),
    ("alert_test", {}),
    ("token_create", {}),
    ("token_revoke", {"token_name": "cron"}),
]

LOGINS = {
    "no group": [],
    "viewer": [VIEWERS],
    "operator": [OPERATORS],
    "key manager": [KEY_MANAGERS],
}
#: What each group of migration 0007 holds.
GRANTS = {
    "no group": set(),
    "viewer": {VIEW_PORTAL},
    "operator": {VIEW_PORTAL, OPERATE_PORTAL},
    "key manager": {VIEW_PORTAL, OPERATE_PORTAL, MANAGE_KEYS},
}


def _patterns() -> list[URLPattern]:
    return [p for p in portal_urls.urlpatterns if isinstance(p, URLPattern)]


ROUTED = [p.name for p in _patterns()]
GUARDED = [name for name in ROUTED if name in REQUIRED]


def test_every_portal_url_is_in_the_matrix():
    unlisted = [name for name in ROUTED if name not in REQUIRED and name not in UNGUARDED]
    assert not unlisted, f"say which permission these pages need (REQUIRED): {unlisted}"
    for name in GUARDED:
        view = next(p for p in _patterns() if p.name == name).callback
        assert getattr(view, "portal_permission", None) == REQUIRED[name], name


@pytest.fixture
def world(db, monkeypatch):
    """One of everything a URL can name; CC's lists come from a stub at the views' seam."""
    lists = [{"list_id": "list-1", "name": "Newsletter", "membership_count": 3}]
    snapshot = ContactListsSnapshot(lists=lists, fetched_at=timezone.now())
    monkeypatch.setattr(
        "integrations.views.accounts.account_contact_lists_snapshot", lambda **kwargs: snapshot
    )
    monkeypatch.setattr("integrations.views.jobs.account_contact_lists", lambda **kwargs: lists)
    key = ApiKeyFactory()
    account = ConnectedAccountFactory(api_key=key)
    job = BulkJob.objects.create(account=account, list_id="list-1", list_name="Newsletter")
    call = api_call_record(
        api_key=key, account=account, method="GET", path_template="/contacts", status_code=200
    )
    return {"key": key, "account": account, "job": job, "call": call}


def _url(name: str, world: dict, **given: str) -> str:
    pattern = next(p for p in _patterns() if p.name == name)
    route = str(pattern.pattern)
    kwargs: dict[str, object] = {}
    for param in re.findall(r"<(?:\w+:)?(\w+)>", route):
        if param == "key_pk":
            kwargs[param] = world["key"].pk
        elif param == "pk":
            owner = {"jobs/": "job", "calls/": "call"}.get(route[: route.index("/") + 1], "account")
            kwargs[param] = world[owner].pk
        elif param == "list_id":
            kwargs[param] = "list-1"
        else:
            kwargs[param] = given[param]
    return reverse(f"integrations:{name}", kwargs=kwargs)


def _requests(world: dict) -> list[tuple[str, str, str]]:
    """(method, URL name, path) for every page: a GET each, and the POSTs of the forms."""
    gets = [
        ("GET", name, _url(name, world, action="cancel", token_name="cron")) for name in GUARDED
    ]
    posts = [("POST", name, _url(name, world, **given)) for name, given in POSTS]
    return gets + posts


def _client(login: str | None) -> Client:
    client = Client()
    if login is not None:
        client.force_login(PortalUserFactory(groups=LOGINS[login]))
    return client


def _went_to_login(response) -> bool:
    return response.status_code == HTTPStatus.FOUND and response.url.startswith("/login/")


def test_anonymous_visitors_are_sent_to_the_login_and_back(world):
    client = Client()
    for method, name, path in _requests(world):
        response = client.generic(method, path)
        assert _went_to_login(response), (method, path, response.status_code)
        query = parse_qs(urlsplit(response.url).query)
        if name == "connect_callback":
            assert query == {"next": [reverse("integrations:account_list")]}
        elif name == "dashboard":
            assert query == {}, "the login lands on the dashboard anyway"
        elif method == "GET":
            assert query == {"next": [path]}, path
        else:
            # A POST cannot be replayed after the login: it lands on the dashboard.
            assert query == {}, path


@pytest.mark.parametrize("login", LOGINS)
def test_each_group_opens_exactly_the_pages_its_permissions_allow(world, login):
    client = _client(login)
    for method, name, path in _requests(world):
        codename = REQUIRED[name]
        response = client.generic(method, path)
        if codename in GRANTS[login]:
            assert response.status_code != HTTPStatus.FORBIDDEN, (method, path)
            assert not _went_to_login(response), (method, path)
        else:
            assert response.status_code == HTTPStatus.FORBIDDEN, (method, path)
            assert PERMISSIONS[codename].allows in html.unescape(response.content.decode()), path


def test_the_refusal_page_says_what_the_login_may_not_do_and_who_can_allow_it(world):
    user = PortalUserFactory(username="vera", groups=[VIEWERS])
    client = Client()
    client.force_login(user)
    response = client.post(_url("disconnect", world))
    assert response.status_code == HTTPStatus.FORBIDDEN
    page = html.unescape(response.content.decode())
    assert "Not allowed" in page
    # "Your login (vera) may not connect, … A superuser can allow it by adding vera to the
    # “Portal operators” group …"
    assert refusal_message(user, OPERATE_PORTAL) in page
    world["account"].refresh_from_db()
    assert world["account"].status == AccountStatus.ACTIVE, "refused before anything changed"


def test_a_login_without_any_permission_is_refused_not_sent_to_log_in_again(world):
    client = _client("no group")
    response = client.get(reverse("integrations:dashboard"))
    assert response.status_code == HTTPStatus.FORBIDDEN
    assert "Portal viewers" in response.content.decode()


def test_the_home_page_sends_an_anonymous_visitor_to_the_portals_login():
    response = Client().get("/")
    assert response.status_code == HTTPStatus.FOUND
    assert response.url == "/login/"


def test_the_callbacks_code_and_state_never_travel_to_the_login(world):
    response = Client().get(
        reverse("integrations:connect_callback"),
        {"code": "CODE-7f3a-SECRET", "state": "STATE-91bc"},
    )
    assert _went_to_login(response)
    assert "CODE-7f3a" not in response.url and "STATE-91bc" not in response.url
    assert "code" not in parse_qs(urlsplit(response.url).query)


def test_a_polled_fragment_sends_the_whole_window_to_the_login(world):
    account_page = reverse("integrations:account_detail", args=[world["account"].pk])
    response = Client().get(
        reverse("integrations:account_lists", args=[world["account"].pk]),
        HTTP_HX_REQUEST="true",
        HTTP_HX_CURRENT_URL=f"http://testserver{account_page}?tab=1",
    )
    assert response["HX-Redirect"] == f"/login/?next={account_page}"


def test_a_viewer_sees_no_buttons_that_would_be_refused(world):
    client = _client("viewer")
    detail = client.get(reverse("integrations:account_detail", args=[world["account"].pk]))
    assert 'id="disconnect"' not in detail.content.decode()
    accounts = client.get(reverse("integrations:account_list")).content.decode()
    assert f'id="connect-{world["key"].pk}"' not in accounts
    lists = client.get(reverse("integrations:account_lists", args=[world["account"].pk]))
    assert "Sync membership" not in lists.content.decode()
    operator = _client("operator")
    assert (
        'id="disconnect"'
        in operator.get(
            reverse("integrations:account_detail", args=[world["account"].pk])
        ).content.decode()
    )

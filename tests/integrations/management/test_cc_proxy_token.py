"""``manage.py cc_proxy_token`` and the token service: a token is shown once, stored as a
digest, recognised in constant time, refused once revoked or expired."""

from __future__ import annotations

import hashlib
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse

from integrations.models import ProxyToken
from integrations.services.proxy import AccountOutsideScope, proxy_account
from integrations.services.proxy_tokens import (
    ProxyTokenInvalid,
    ProxyTokenRefused,
    proxy_token_authenticate,
    proxy_token_create,
)
from tests.factories import VIEWERS, ConnectedAccountFactory, PortalUserFactory

pytestmark = pytest.mark.django_db


def run(*args: str) -> str:
    out = StringIO()
    call_command("cc_proxy_token", *args, stdout=out)
    return out.getvalue()


def test_create_prints_the_token_once_alone_on_the_last_line_and_stores_a_digest():
    account = ConnectedAccountFactory()
    output = run(
        "create", "--name", "wordpress", "--account", str(account.pk), "--lane", "background"
    )
    secret = output.strip().splitlines()[-1]
    assert secret.startswith("ccp_") and len(secret) >= 4 + 43  # 32 random bytes, base64url
    token = ProxyToken.objects.get(name="wordpress")
    assert token.digest == hashlib.sha256(secret.encode()).hexdigest()
    assert secret not in str(ProxyToken.objects.filter(pk=token.pk).values().get())
    assert list(token.accounts.all()) == [account] and token.lane == "background"
    assert proxy_token_authenticate(f"Bearer {secret}").token == token
    listed = run("list")
    assert "wordpress" in listed and token.shown in listed and secret not in listed


def test_two_tokens_never_share_a_value():
    account = ConnectedAccountFactory()
    secrets = {proxy_token_create(name=f"t{n}", accounts=[account])[1] for n in range(20)}
    assert len(secrets) == 20


def test_the_token_its_accounts_and_their_keys_come_back_in_one_query(
    django_assert_num_queries,
):
    """Every proxied call starts with this lookup."""
    first, second = ConnectedAccountFactory(), ConnectedAccountFactory()
    _, secret = proxy_token_create(name="crm", accounts=[first, second])
    proxy_token_authenticate(f"Bearer {secret}")  # the first use is written down (last used)

    with django_assert_num_queries(1):
        caller = proxy_token_authenticate(f"Bearer {secret}")
        keys = {pk: account.api_key.client_id for pk, account in caller.accounts.items()}

    assert caller.token.name == "crm"
    assert keys == {first.pk: first.api_key.client_id, second.pk: second.api_key.client_id}


def test_a_token_whose_accounts_were_all_deleted_is_still_known_and_covers_none():
    account = ConnectedAccountFactory()
    _, secret = proxy_token_create(name="orphan", accounts=[account])
    account.delete()

    caller = proxy_token_authenticate(f"Bearer {secret}")

    assert caller.token.name == "orphan" and caller.accounts == {}
    with pytest.raises(AccountOutsideScope, match="covers no account"):
        proxy_account(caller, None)  # the proxy answers 403


def test_revoke_refuses_the_token_from_its_next_request():
    account = ConnectedAccountFactory()
    _, secret = proxy_token_create(name="cron", accounts=[account])
    assert "Revoked cron" in run("revoke", "cron")
    with pytest.raises(ProxyTokenRefused, match="revoked"):
        proxy_token_authenticate(f"Bearer {secret}")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["create", "--name", "x", "--account", "999999"], "No connected account has id 999999"),
        (["create", "--name", "", "--account", "{account}"], "needs a name"),
        (["create", "--name", "x" * 101, "--account", "{account}"], "at most 100"),
        (["create", "--name", "x", "--account", "{account}", "--expires-days", "0"], "at least 1"),
        (["revoke", "nobody"], "No token is named 'nobody'"),
    ],
)
def test_bad_input_is_one_line_and_makes_nothing(args, message):
    account = ConnectedAccountFactory()
    with pytest.raises(CommandError, match=message):
        run(*[arg.format(account=account.pk) for arg in args])
    assert not ProxyToken.objects.exists()


def test_a_name_is_taken_once():
    account = ConnectedAccountFactory()
    proxy_token_create(name="app", accounts=[account])
    with pytest.raises(ProxyTokenInvalid, match="exists already"):
        proxy_token_create(name="app", accounts=[account])


def test_a_viewer_may_list_but_not_create():
    PortalUserFactory(username="viewer", groups=[VIEWERS])
    account = ConnectedAccountFactory()
    run("--as-user", "viewer", "list")
    with pytest.raises(CommandError):
        run("--as-user", "viewer", "create", "--name", "x", "--account", str(account.pk))
    assert not ProxyToken.objects.exists()


def test_the_admin_makes_a_token_shows_it_once_and_never_again(admin_client):
    account = ConnectedAccountFactory()
    made = admin_client.post(
        reverse("admin:integrations_proxytoken_add"),
        {"name": "rails", "accounts": [account.pk], "lane": "interactive", "expires_days": ""},
    )
    assert made.status_code == 200, made.content[:2000]
    assert "no-store" in made["Cache-Control"]
    token = ProxyToken.objects.get(name="rails")
    secret = made.context["secret"]
    assert proxy_token_authenticate(f"Bearer {secret}").token == token
    for url in (
        reverse("admin:integrations_proxytoken_changelist"),
        reverse("admin:integrations_proxytoken_change", args=[token.pk]),
    ):
        page = admin_client.get(url).content.decode()
        assert "rails" in page and secret not in page and token.digest not in page
    admin_client.post(
        reverse("admin:integrations_proxytoken_changelist"),
        {"action": "revoke", "_selected_action": [token.pk]},
    )
    token.refresh_from_db()
    assert token.status == "revoked"

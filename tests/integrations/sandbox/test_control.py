"""The control API through SandboxControl: idempotent set-up, bulk seeding, clock, reset."""

from __future__ import annotations

import datetime as dt

import pytest
import requests

from integrations.sandbox.control import SandboxControl, SandboxControlError
from tests.integrations.sandbox.conftest import REDIRECT_URI, Api

pytestmark = pytest.mark.slow


def test_register_client_is_an_upsert_and_validates(cc: SandboxControl):
    first = cc.register_client("app", client_secret="s", redirect_uris=[REDIRECT_URI])
    assert first["public"] is False and "client_secret" not in first
    again = cc.register_client("app", redirect_uris=[REDIRECT_URI], tier="partner")
    assert (again["public"], again["per_second"]) == (True, 10)
    assert [
        c["client_id"] for c in requests.get(f"{cc.url}/__sandbox/clients").json()["clients"]
    ] == ["app"]
    for bad in (
        {"redirect_uris": []},
        {"redirect_uris": ["not a url"]},
        {"redirect_uris": [REDIRECT_URI + "#frag"]},
        {"redirect_uris": [REDIRECT_URI], "tier": "gold"},
        {"redirect_uris": [REDIRECT_URI], "tier": "custom"},
        {"redirect_uris": [REDIRECT_URI], "refresh_mode": "sometimes"},
    ):
        with pytest.raises(SandboxControlError) as error:
            cc.register_client("bad", **bad)
        assert error.value.status == 400


def test_accounts_and_lists_are_idempotent_by_email_and_name(cc: SandboxControl):
    account = cc.create_account("Owner@Example.com", name="Owner", sub="00uOWNER")
    assert account.sub == "00uOWNER"
    assert cc.create_account("owner@example.com") == account
    first = cc.seed_list(account, "Newsletter")
    assert cc.seed_list(account.email, "Newsletter") == first
    with pytest.raises(SandboxControlError) as missing:
        cc.seed_list("nobody@example.com", "X")
    assert missing.value.status == 404


def test_a_hundred_thousand_contacts_seed_into_a_list(cc: SandboxControl):
    """How fast is bench_sandbox's business; this is what the seed makes."""
    account = cc.create_account("big@example.com")
    newsletter = cc.seed_list(account, "Newsletter")
    seeded = cc.seed_contacts(
        account, count=100_000, list_ids=[newsletter.list_id], unsubscribed_every=10
    )
    assert (seeded.created, seeded.updated) == (100_000, 0)
    members = cc.list_members(account, newsletter.list_id)
    assert len(members) == 100_000
    assert members[0].email == "contact1@example.com"
    assert sum(m.permission_to_send == "unsubscribed" for m in members) == 10_000
    again = cc.seed_contacts(account, count=10, start=99_995)
    assert (again.created, again.updated) == (4, 6)


def test_mint_tokens_and_reset_forgets_everything(cc: SandboxControl):
    cc.register_client("app", client_secret="s", redirect_uris=[REDIRECT_URI])
    token = cc.mint_tokens("app")["access_token"]  # a default account is created on demand
    api = Api(cc, token)
    assert api.get("/v3/contacts").status_code == 200
    cc.set_options(max_queued_activities=3)
    cc.advance_clock(3_600)
    cc.reset()
    assert cc.all_stats() == {}
    assert cc.options()["max_queued_activities"] == 1_000
    assert abs(cc.health()["offset_seconds"]) < 1
    assert api.get("/v3/contacts").status_code == 401  # its client and account are gone


def test_options_and_clock(cc: SandboxControl):
    with pytest.raises(SandboxControlError, match="unknown option"):
        cc.set_options(speed=3)
    with pytest.raises(SandboxControlError, match="non-negative number"):
        cc.set_options(activity_items_per_second="fast")
    with pytest.raises(SandboxControlError, match="must be > 0"):
        cc.set_options(max_queued_activities=5, activity_items_per_second=0)
    assert cc.options()["max_queued_activities"] == 1_000  # all or nothing
    target = dt.datetime(2031, 5, 6, 7, 8, 9, tzinfo=dt.UTC)
    assert abs((cc.set_clock(target) - target).total_seconds()) < 1
    later = cc.advance_clock(86_400)
    assert later.date() == dt.date(2031, 5, 7)
    assert abs((cc.now() - later).total_seconds()) < 1


def test_unknown_control_endpoints_and_methods(cc: SandboxControl):
    assert requests.get(f"{cc.url}/__sandbox/nothing", timeout=5).status_code == 404
    assert requests.get(f"{cc.url}/__sandbox/reset", timeout=5).status_code == 405
    bad_json = requests.post(f"{cc.url}/__sandbox/clients", data="{", timeout=5)
    assert bad_json.status_code == 400

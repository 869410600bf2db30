"""The doctor's checks: all ok on a healthy portal, and each trouble failing its own check with
what is wrong and how to fix it."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest
from cryptography.fernet import Fernet
from django.core.management import call_command
from django.db import OperationalError
from django.utils import timezone

from integrations.models import AccountStatus, ConnectedAccount, WorkerHeartbeat
from integrations.services.doctor import DOCTOR_CHECKS, CheckResult, doctor_run
from integrations.services.workers import HEARTBEAT_MISSING_AFTER, worker_beat
from tests.factories import ApiKeyFactory
from tests.integrations.services.doctor_support import (
    REDIS_PASSWORD,
    CCStub,
    cc_stub_serving,
    closed_port,
    point_cc_at,
    portal_in_health,
    redis_down_settings,
    used_today,
)

CHECK_NAMES = [
    "settings",
    "encryption",
    "database",
    "cache",
    "quota_store",
    "worker",
    "cc_endpoints",
    "clock",
    "api_keys",
    "accounts",
    "refresh_tokens",
]


@pytest.fixture
def cc_stub(settings) -> Iterator[CCStub]:
    with cc_stub_serving(settings) as stub:
        yield stub


@pytest.fixture
def healthy_portal(db, cc_stub) -> ConnectedAccount:
    return portal_in_health()


def _failed(results: list[CheckResult]) -> dict[str, CheckResult]:
    return {result.name: result for result in results if not result.ok}


def test_the_checks_run_in_the_documented_order():
    assert [check.__name__ for check in DOCTOR_CHECKS] == [
        f"doctor_check_{name}" for name in CHECK_NAMES
    ]


def test_every_check_passes_on_a_healthy_portal(healthy_portal):
    results = doctor_run()

    assert [r.name for r in results] == CHECK_NAMES
    assert _failed(results) == {}
    by_name = {r.name: r for r in results}
    assert (
        "all" in by_name["database"].detail and "migrations applied" in by_name["database"].detail
    )
    assert "1 account(s) connected" in by_name["accounts"].detail


def test_every_check_passes_against_the_live_sandbox(connected_account, settings):
    worker_beat()

    results = doctor_run()

    assert _failed(results) == {}
    by_name = {r.name: r for r in results}
    assert "JWKS 200" in by_name["cc_endpoints"].detail
    assert "the sandbox" in by_name["clock"].detail


def test_a_redis_that_does_not_answer_fails_the_quota_store_and_the_cache(healthy_portal, settings):
    redis_down_settings(settings)

    failed = _failed(doctor_run())

    assert set(failed) == {"quota_store", "cache"}
    assert "quota ledger in Redis at 127.0.0.1:" in failed["quota_store"].detail
    assert "start Redis or correct REDIS_URL" in failed["quota_store"].fix
    assert "'redis' (RedisCache redis://:[hidden]@127.0.0.1:" in failed["cache"].detail
    assert "'database'" not in failed["cache"].detail  # the database cache still answers
    for result in failed.values():
        assert REDIS_PASSWORD not in result.line()


def test_secrets_no_key_opens_are_named_by_row(healthy_portal, settings):
    key = healthy_portal.api_key
    settings.FIELD_ENCRYPTION_KEYS = [Fernet.generate_key().decode()]

    failed = _failed(doctor_run())

    assert set(failed) == {"encryption", "accounts"}  # unreadable tokens need a reconnect too
    detail = failed["encryption"].detail
    assert detail.startswith("no key in FIELD_ENCRYPTION_KEYS opens 2 row(s): ")
    assert f"API key {key.pk} 'Acme app ({key.client_id})' client secret" in detail
    assert (
        f"connected account {healthy_portal.pk} 'owner@example.com' access token and refresh token"
        in detail
    )
    assert "s3cret-value" not in detail
    assert "rotate_encryption_keys" in failed["encryption"].fix
    assert "tokens unreadable" in failed["accounts"].detail


@pytest.mark.django_db(transaction=True)
def test_a_migration_not_applied_is_named(cc_stub):
    call_command("migrate", "integrations", "0010", verbosity=0)
    try:
        failed = _failed(doctor_run())
    finally:
        call_command("migrate", verbosity=0)

    database = failed["database"]
    assert "integrations.0011_worker_heartbeat_account_summary" in database.detail
    assert "integrations.0010_call_log" not in database.detail
    assert database.fix == "run manage.py migrate"
    # The checks that need the missing table say so and point at the database check.
    assert "could not be checked (OperationalError" in failed["worker"].detail or (
        "could not be checked (ProgrammingError" in failed["worker"].detail
    )
    assert "see the database check" in failed["worker"].fix


def test_a_database_that_does_not_answer_says_how_to_reach_it(healthy_portal, monkeypatch):
    class Unreachable:
        vendor = "postgresql"

        def ensure_connection(self):
            raise OperationalError("connection to server at 10.0.0.5 port 5432 failed: refused")

    monkeypatch.setattr("integrations.services.doctor.connection", Unreachable())

    failed = _failed(doctor_run())

    assert failed["database"].detail == (
        "could not be checked (OperationalError: connection to server at 10.0.0.5 port 5432 "
        "failed: refused)"
    )
    assert failed["database"].fix == "check DATABASE_URL and that the database server is running"


def test_a_worker_not_seen_for_three_beats_is_missing(healthy_portal):
    WorkerHeartbeat.objects.update(seen_at=timezone.now() - dt.timedelta(minutes=7, seconds=5))

    failed = _failed(doctor_run())

    assert set(failed) == {"worker"}
    assert failed["worker"].detail.startswith("no worker has taken a task for 7 min")
    assert failed["worker"].fix == "start one: manage.py db_worker"


def test_a_worker_seen_just_within_the_window_is_taking_tasks(healthy_portal):
    WorkerHeartbeat.objects.update(
        seen_at=timezone.now() - HEARTBEAT_MISSING_AFTER + dt.timedelta(seconds=5)
    )

    assert "worker" not in _failed(doctor_run())


def test_no_heartbeat_at_all_means_no_worker_yet(healthy_portal):
    WorkerHeartbeat.objects.all().delete()

    failed = _failed(doctor_run())

    assert set(failed) == {"worker"}
    assert "no worker has taken a task yet" in failed["worker"].detail


def test_constant_contact_not_answering_fails_the_endpoints_and_the_clock(healthy_portal, settings):
    point_cc_at(settings, f"http://127.0.0.1:{closed_port()}")

    failed = _failed(doctor_run())

    assert set(failed) == {"cc_endpoints", "clock"}
    endpoints = failed["cc_endpoints"].detail
    for label in ("API", "authorize", "token", "JWKS"):
        assert f"{label} http://127.0.0.1:" in endpoints
    assert "does not answer (ConnectionError)" in endpoints
    assert "start the sandbox" in failed["cc_endpoints"].fix
    assert failed["clock"].detail.startswith("cannot ask the sandbox for the time")


def test_a_live_constant_contact_out_of_reach_is_told_to_check_the_network(
    healthy_portal, settings
):
    point_cc_at(settings, f"http://127.0.0.1:{closed_port()}")
    settings.CC_MODE = "live"

    failed = _failed(doctor_run())

    assert failed["cc_endpoints"].detail.startswith("Constant Contact: ")
    assert "network, proxy and firewall" in failed["cc_endpoints"].fix


@pytest.mark.parametrize(("offset", "direction"), [(300, "behind"), (-300, "ahead of")])
def test_a_clock_a_few_minutes_off_is_named_with_its_size(
    healthy_portal, cc_stub, offset, direction
):
    cc_stub.offset = offset

    failed = _failed(doctor_run())

    assert set(failed) == {"clock"}
    detail = failed["clock"].detail
    # The Date header has whole seconds: the skew measured is within a second of the offset.
    assert any(
        f"this host's clock is {seconds} s {direction} the sandbox's" in detail
        for seconds in (299, 300, 301)
    ), detail
    assert "NTP" in failed["clock"].fix


def test_a_clock_half_a_minute_off_passes(healthy_portal, cc_stub):
    cc_stub.offset = 30

    assert "clock" not in _failed(doctor_run())


def test_an_account_that_needs_a_reconnect_is_named(healthy_portal):
    used_today(
        api_key=healthy_portal.api_key,
        label="lost@example.com",
        status=AccountStatus.NEEDS_RECONNECT,
        status_reason="CC answered invalid_grant.",
    )

    failed = _failed(doctor_run())

    assert set(failed) == {"accounts"}
    assert failed["accounts"].detail == (
        "1 account(s) need a reconnect: 'lost@example.com' (needs reconnect: CC answered "
        "invalid_grant.)"
    )
    assert "reconnect them in the portal" in failed["accounts"].fix


def test_a_refresh_token_idle_for_150_days_is_named(healthy_portal):
    healthy_portal.refresh_token_last_used_at = timezone.now() - dt.timedelta(days=160)
    healthy_portal.save()

    failed = _failed(doctor_run())

    assert set(failed) == {"refresh_tokens"}
    assert "'owner@example.com' (160 days)" in failed["refresh_tokens"].detail
    assert "cc_tokens_keepalive" in failed["refresh_tokens"].fix


def test_a_redirect_uri_away_from_the_callback_is_named(healthy_portal):
    key = ApiKeyFactory(name="Old app", redirect_uri="https://portal.example.com/oauth/done")

    failed = _failed(doctor_run())

    assert set(failed) == {"api_keys"}
    assert failed["api_keys"].detail == (
        f"key {key.pk} 'Old app': redirect URI path /oauth/done is not the portal's "
        "/accounts/callback/"
    )
    assert "<the portal's host>/accounts/callback/" in failed["api_keys"].fix


def test_production_wants_https_redirect_uris_debug_off_and_live_mode(healthy_portal, settings):
    settings.DJANGO_ENV = "production"
    settings.DEBUG = True

    failed = _failed(doctor_run())

    assert "key " in failed["api_keys"].detail
    assert "is not https (production)" in failed["api_keys"].detail
    settings_line = failed["settings"].detail
    assert settings_line.startswith("production profile, DEBUG on, CC_MODE sandbox: ")
    assert "security.W018" in settings_line  # DEBUG on
    assert "integrations.E004" in settings_line  # the sandbox in production


def test_a_check_that_breaks_fails_alone_without_its_secret(healthy_portal, monkeypatch):
    def explode(*args, **kwargs):
        raise RuntimeError(f"boom at redis://:{REDIS_PASSWORD}@10.0.0.1:6379/0\nsecond line")

    monkeypatch.setattr("integrations.services.doctor.quota_store", explode)

    failed = _failed(doctor_run())

    assert set(failed) == {"quota_store"}
    assert failed["quota_store"].detail == (
        "could not be checked (RuntimeError: boom at redis://:[hidden]@10.0.0.1:6379/0)"
    )

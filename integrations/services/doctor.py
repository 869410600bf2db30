"""The portal's self-examination (``manage.py cc_doctor``): one check per thing the portal
needs to work, each answering ok with what it saw, or FAIL with what is wrong and how to fix it.

Each check stands alone and never raises: whatever goes wrong inside one (a database that does
not answer, a store that cannot be built) becomes that check's FAIL, and the next check runs.
No answer holds a secret: exception text goes through :func:`ccportal.logging.scrub`, URLs are
shown without their passwords, and stored secrets are only ever asked whether they open.
"""

from __future__ import annotations

import functools
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

import redis
import requests
from django.apps import apps
from django.core import checks as system_checks
from django.core.cache import caches
from django.db import DatabaseError, connection, models
from django.db.migrations.executor import MigrationExecutor
from django.urls import reverse
from django.utils import timezone

from ccportal.cache import FailoverCache, url_without_password
from ccportal.logging import scrub
from integrations import conf, crypto
from integrations.constant_contact.http import session_create
from integrations.errors import PortalError
from integrations.fields import EncryptedTextField
from integrations.models import AccountStatus, ApiKey, ConnectedAccount, WorkerHeartbeat
from integrations.services.quota import quota_store
from integrations.services.quota_stores import KeyQuota, QuotaStoreUnavailable, RedisStore
from integrations.services.workers import HEARTBEAT_MISSING_AFTER

#: (connect, read) seconds an endpoint probe may take: the doctor answers in seconds, not minutes.
PROBE_TIMEOUTS = (3.0, 5.0)
#: Beyond this, tokens look expired (or not yet valid) to one side and the quota's day boundary
#: moves: CC signs its tokens with its own clock and resets the daily quota at 00:00 UTC.
MAX_CLOCK_SKEW_SECONDS = 60
#: Django's deployment warnings that fail the settings check in production: what the production
#: profile of ``ccportal/settings.py`` promises (a real SECRET_KEY, DEBUG off, ALLOWED_HOSTS).
PRODUCTION_REQUIRED_CHECKS = frozenset({"security.W009", "security.W018", "security.W020"})
#: The most rows one FAIL line names; the rest are counted.
NAMED_AT_MOST = 10
#: What the ledger probe reads: a key no real ledger has, read without writing.
_PROBE_QUOTA = KeyQuota(
    ledger_id=0,
    client_id="ccportal-doctor-probe",
    per_second=1,
    per_day=1,
    background_per_day=1,
    margin=0.0,
    horizon=0.0,
    day_guard=0.0,
    token_spacing=1.0,
)


@dataclass(frozen=True)
class CheckResult:
    """One check's answer. ``detail`` is what was seen, or what is wrong; ``fix`` says how to
    put it right (empty when ``ok``)."""

    name: str
    ok: bool
    detail: str
    fix: str = ""

    def line(self) -> str:
        """``ok   <name>: <detail>`` or ``FAIL <name>: <detail> — <fix>``."""
        if self.ok:
            return f"ok   {self.name}: {self.detail}"
        return f"FAIL {self.name}: {self.detail} — {self.fix}"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class CheckFailed(PortalError):
    """A check found something wrong: ``problem`` says what, ``fix`` how to fix it."""

    def __init__(self, problem: str, *, fix: str) -> None:
        super().__init__(problem)
        self.problem = problem
        self.fix = fix


DoctorCheck = Callable[[], CheckResult]
#: The check that explains a database in trouble, and what the others say when they meet one.
DATABASE_CHECK = "database"
DATABASE_HINT = "see the database check (DATABASE_URL; manage.py migrate)"
#: Every check, in the order the doctor runs them.
DOCTOR_CHECKS: list[DoctorCheck] = []


def _check(name: str, *, fix: str) -> Callable[[Callable[[], str]], DoctorCheck]:
    """Make ``body`` the check ``name``: what it returns is the ok detail; a
    :class:`CheckFailed` is a FAIL with its own fix; any other exception a FAIL that names it,
    with ``fix``."""

    def register(body: Callable[[], str]) -> DoctorCheck:
        @functools.wraps(body)
        def run() -> CheckResult:
            try:
                return CheckResult(name, True, scrub(body()))
            except CheckFailed as failed:
                return CheckResult(name, False, scrub(failed.problem), scrub(failed.fix))
            except Exception as exc:  # every check answers; none stops the others
                # A database that does not answer, or lacks a table, is the database check's
                # to explain; the other checks only say they could not look.
                elsewhere = isinstance(exc, DatabaseError) and name != DATABASE_CHECK
                hint = DATABASE_HINT if elsewhere else fix
                detail = f"could not be checked ({_exception_text(exc)})"
                return CheckResult(name, False, detail, hint)

        DOCTOR_CHECKS.append(run)
        return run

    return register


def doctor_run() -> list[CheckResult]:
    """Run every check in order; each answers, whatever the others found."""
    return [check() for check in DOCTOR_CHECKS]


def _exception_text(exc: BaseException) -> str:
    """The exception's type and first line, secrets hidden, at most 300 characters."""
    lines = str(exc).strip().splitlines()
    text = f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__
    return scrub(text[:300])


def _named(items: list[str]) -> str:
    shown = ", ".join(items[:NAMED_AT_MOST])
    more = len(items) - NAMED_AT_MOST
    return f"{shown} and {more} more" if more > 0 else shown


# --- 1. settings ------------------------------------------------------------------------------
@_check("settings", fix="run manage.py check --deploy for every message and its hint")
def doctor_check_settings() -> str:
    """The profile in force, and Django's system checks (the deployment ones in production)."""
    production = conf.django_env() == "production"
    profile = (
        f"{conf.django_env()} profile, DEBUG {'on' if conf.debug() else 'off'}, "
        f"CC_MODE {conf.cc_mode()}"
    )
    messages = [
        message
        for message in system_checks.run_checks(include_deployment_checks=production)
        if not message.is_silenced()
    ]
    failing = [
        message
        for message in messages
        if message.is_serious() or (production and message.id in PRODUCTION_REQUIRED_CHECKS)
    ]
    if failing:
        hints = list(dict.fromkeys(m.hint for m in failing if m.hint))
        raise CheckFailed(
            f"{profile}: " + "; ".join(f"{m.id}: {m.msg}" for m in failing),
            fix="; ".join(hints) or "run manage.py check --deploy for each message's hint",
        )
    warnings = [m.id for m in messages if m not in failing]
    if warnings:
        return f"{profile}; warnings {', '.join(warnings)} (manage.py check shows them)"
    return f"{profile}; system checks pass"


# --- 2. encryption keys -----------------------------------------------------------------------
def _encrypted_models() -> Iterator[tuple[type[models.Model], list[EncryptedTextField]]]:
    """Each portal model that stores secrets, with its encrypted fields (as key rotation
    walks them)."""
    for model in apps.get_app_config("integrations").get_models():
        fields = [f for f in model._meta.fields if isinstance(f, EncryptedTextField)]
        if fields:
            yield model, fields


@_check(
    "encryption",
    fix="check FIELD_ENCRYPTION_KEYS (comma-separated Fernet keys, newest first) and the database",
)
def doctor_check_encryption() -> str:
    """Every stored secret opens with a key in FIELD_ENCRYPTION_KEYS; the ones that do not are
    named by row."""
    stored = 0
    unreadable: list[str] = []
    for model, fields in _encrypted_models():
        for row in model._default_manager.order_by("pk").iterator(chunk_size=500):
            values = {f: getattr(row, f.name) for f in fields}
            closed = [f for f, value in values.items() if crypto.is_unreadable(value)]
            stored += len(closed) + sum(1 for value in values.values() if value)
            if closed:
                what = " and ".join(str(f.verbose_name) for f in closed)
                unreadable.append(f"{model._meta.verbose_name} {row.pk} {str(row)!r} {what}")
    if unreadable:
        raise CheckFailed(
            f"no key in FIELD_ENCRYPTION_KEYS opens {len(unreadable)} row(s): {_named(unreadable)}",
            fix="put back the key they were written with (keep old keys until manage.py "
            "rotate_encryption_keys has run), or re-enter them: a key's client secret in the "
            "admin, an account's tokens by reconnecting it",
        )
    keys = len(conf.field_encryption_keys())
    return f"{keys} key(s) open all {stored} stored secret(s)"


# --- 3. database and migrations ---------------------------------------------------------------
@_check(DATABASE_CHECK, fix="check DATABASE_URL and that the database server is running")
def doctor_check_database() -> str:
    """The database answers and every migration is applied."""
    connection.ensure_connection()
    executor = MigrationExecutor(connection)
    if conflicts := executor.loader.detect_conflicts():
        apps_in_conflict = ", ".join(sorted(conflicts))
        raise CheckFailed(
            f"conflicting migrations in {apps_in_conflict}",
            fix="merge them (manage.py makemigrations --merge), then run manage.py migrate",
        )
    plan = executor.migration_plan(executor.loader.graph.leaf_nodes())
    if plan:
        names = [f"{migration.app_label}.{migration.name}" for migration, _ in plan]
        raise CheckFailed(
            f"{len(names)} migration(s) not applied: {_named(names)}",
            fix="run manage.py migrate",
        )
    applied = len(executor.loader.applied_migrations)
    return f"{connection.vendor} database answers; all {applied} migrations applied"


# --- 4. cache ---------------------------------------------------------------------------------
def _cache_where(config: dict[str, Any]) -> str:
    backend = str(config.get("BACKEND", "")).rsplit(".", 1)[-1]
    location = config.get("LOCATION") or ""
    if isinstance(location, (list, tuple)):
        location = location[0] if location else ""
    return f"{backend} {url_without_password(str(location))}".strip()


def _cache_fix(config: dict[str, Any]) -> str:
    if "redis" in str(config.get("BACKEND", "")).lower():
        return (
            "start Redis or correct REDIS_URL (meanwhile the portal's cache runs on the database)"
        )
    if "db.DatabaseCache" in str(config.get("BACKEND", "")):
        return "run manage.py migrate (migration 0008 creates the cache table)"
    return "check CACHES"


def _cache_round_trip(alias: str) -> None:
    cache = caches[alias]
    key, value = f"ccportal:doctor:{secrets.token_hex(8)}", secrets.token_hex(8)
    cache.set(key, value, timeout=60)
    try:
        if cache.get(key) != value:
            raise CheckFailed("gave back something else than it was given", fix="check CACHES")
    finally:
        cache.delete(key)


@_check("cache", fix="check CACHES and run manage.py migrate")
def doctor_check_cache() -> str:
    """A set/get round trip on each configured cache (a failover cache is made of others, which
    are each tried on their own)."""
    answered: list[str] = []
    failed: list[tuple[str, str]] = []
    failover: list[str] = []
    for alias, config in caches.settings.items():
        if isinstance(caches[alias], FailoverCache):
            failover.append(alias)
            continue
        where = f"{alias!r} ({_cache_where(config)})"
        try:
            _cache_round_trip(alias)
        except Exception as exc:  # each cache answers for itself
            detail = exc.problem if isinstance(exc, CheckFailed) else _exception_text(exc)
            failed.append((f"{where}: {detail}", _cache_fix(config)))
        else:
            answered.append(where)
    if failed:
        raise CheckFailed(
            "; ".join(problem for problem, _ in failed),
            fix="; ".join(dict.fromkeys(fix for _, fix in failed)),
        )
    note = f"; {', '.join(map(repr, failover))} fails over between them" if failover else ""
    return f"set/get round trip on {', '.join(answered)}{note}"


# --- 5. quota store ---------------------------------------------------------------------------
@_check(
    "quota_store",
    fix="check CC_QUOTA_STORE and REDIS_URL; no call to Constant Contact is sent until the "
    "store answers",
)
def doctor_check_quota_store() -> str:
    """The limiter's ledger answers: Redis runs Lua scripts (each step is one), the database
    store reads a ledger row."""
    store = quota_store()
    kind = type(store).__name__
    where = ""
    if isinstance(store, RedisStore):
        where = f" at {url_without_password(conf.redis_url())}"
        fix = "start Redis or correct REDIS_URL; no call to Constant Contact is sent until then"
        if problem := store.problem():
            raise CheckFailed(problem.rstrip("."), fix=fix)
        probe = secrets.token_hex(8)
        try:
            echoed = store.client.eval("return ARGV[1]", 0, probe)
        except redis.RedisError as exc:
            raise CheckFailed(
                f"Redis{where} does not run Lua scripts ({_exception_text(exc)})",
                fix="allow EVAL and EVALSHA for this Redis user: every ledger step is a script",
            ) from exc
        if echoed != probe:
            raise CheckFailed(f"Redis{where} ran a script but answered wrongly", fix=fix)
    try:
        store.read(_PROBE_QUOTA)
    except QuotaStoreUnavailable as exc:
        raise CheckFailed(
            str(exc).split(";")[0], fix="check CC_QUOTA_STORE, REDIS_URL and the database"
        ) from exc
    if isinstance(store, RedisStore):
        return f"{kind}{where}: Lua scripts run (EVAL), the ledger reads"
    return f"{kind}: the ledger reads in one round trip"


# --- 6. worker --------------------------------------------------------------------------------
WORKER_FIX = "start one: manage.py db_worker"


@_check("worker", fix=WORKER_FIX)
def doctor_check_worker() -> str:
    """A worker took a task (its heartbeat) within the last three beats."""
    latest = WorkerHeartbeat.objects.order_by("-seen_at").first()
    if latest is None:
        raise CheckFailed("no worker has taken a task yet (no heartbeat recorded)", fix=WORKER_FIX)
    age = timezone.now() - latest.seen_at
    if not latest.seen_within(HEARTBEAT_MISSING_AFTER):
        minutes = max(1, int(age.total_seconds() // 60))
        raise CheckFailed(
            f"no worker has taken a task for {minutes} min (last: {latest.worker})", fix=WORKER_FIX
        )
    since = timezone.now() - HEARTBEAT_MISSING_AFTER
    alive = WorkerHeartbeat.objects.filter(seen_at__gte=since).count()
    return f"{alive} worker(s) taking tasks; {latest.worker} beat {max(age.total_seconds(), 0):.0f} s ago"


# --- 7. Constant Contact's endpoints ----------------------------------------------------------
def _cc_name() -> str:
    return "the sandbox" if conf.cc_mode() == "sandbox" else "Constant Contact"


def _cc_fix() -> str:
    if conf.cc_mode() == "sandbox":
        return (
            "start the sandbox (make run starts it; on its own: manage.py run_sandbox "
            "--port 8765) or point CC_SANDBOX_URL at it"
        )
    return (
        "check this host's network, proxy and firewall towards Constant Contact, and any "
        "CC_*_URL setting"
    )


def _probe(url: str) -> requests.Response:
    """One GET with short timeouts, through the one session factory; no redirect followed."""
    connect_timeout, read_timeout = PROBE_TIMEOUTS
    with session_create(connect_timeout=connect_timeout, read_timeout=read_timeout) as session:
        return session.get(url, allow_redirects=False)


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rsplit('@', 1)[-1]}"


@_check("cc_endpoints", fix="check the CC_* endpoint settings")
def doctor_check_cc_endpoints() -> str:
    """CC's API, authorize, token and JWKS endpoints answer (the JWKS with the signing keys)."""
    endpoints = conf.cc_endpoints()
    probes = {
        "API": endpoints.api_base_url,
        "authorize": endpoints.authorize_url,
        "token": endpoints.token_url,
        "JWKS": endpoints.jwks_url,
    }
    answers: list[str] = []
    problems: list[str] = []
    for label, url in probes.items():
        try:
            status = _probe(url).status_code
        except requests.RequestException as exc:
            problems.append(f"{label} {url} does not answer ({type(exc).__name__})")
            continue
        if status >= 500 or (label == "JWKS" and status != 200):
            problems.append(f"{label} {url} answers {status}")
        else:
            answers.append(f"{label} {status}")
    if problems:
        raise CheckFailed(f"{_cc_name()}: " + "; ".join(problems), fix=_cc_fix())
    origins = ", ".join(dict.fromkeys(_origin(url) for url in probes.values()))
    return f"{_cc_name()} ({origins}) answers: {', '.join(answers)}"


# --- 8. clock ---------------------------------------------------------------------------------
@_check("clock", fix="sync this host's clock (NTP)")
def doctor_check_clock() -> str:
    """This host's clock agrees with CC's ``Date`` header within a minute."""
    url = conf.cc_endpoints().api_base_url
    before = time.time()
    try:
        response = _probe(url)
    except requests.RequestException as exc:
        raise CheckFailed(
            f"cannot ask {_cc_name()} for the time: {url} does not answer ({type(exc).__name__})",
            fix=_cc_fix(),
        ) from exc
    after = time.time()
    header = response.headers.get("Date")
    if not header:
        raise CheckFailed(
            f"{url} sends no Date header, so the clocks cannot be compared",
            fix="check for a proxy between this host and Constant Contact that drops it",
        )
    skew = parsedate_to_datetime(header).timestamp() - (before + after) / 2
    if abs(skew) > MAX_CLOCK_SKEW_SECONDS:
        direction = "behind" if skew > 0 else "ahead of"
        raise CheckFailed(
            f"this host's clock is {abs(skew):,.0f} s {direction} {_cc_name()}'s (its Date "
            f"header); more than {MAX_CLOCK_SKEW_SECONDS} s breaks token expiry and the 00:00 "
            "UTC quota reset",
            fix="sync this host's clock (NTP, e.g. timedatectl set-ntp true)",
        )
    return f"within {abs(skew):.0f} s of {_cc_name()}'s Date header"


# --- 9. API keys ------------------------------------------------------------------------------
def _redirect_uri_problems(uri: str, *, callback: str, production: bool) -> list[str]:
    """What keeps ``uri`` from bringing CC's answer back to this portal's callback."""
    parts = urlsplit(uri)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return [f"redirect URI {uri!r} is not an absolute http(s) URL"]
    problems = []
    if production and parts.scheme != "https":
        problems.append(f"redirect URI {uri} is not https (production)")
    if parts.path != callback:
        problems.append(f"redirect URI path {parts.path or '/'} is not the portal's {callback}")
    return problems


@_check("api_keys", fix="correct each key in the admin (API keys)")
def doctor_check_api_keys() -> str:
    """Connect asks for ``offline_access`` (no refresh token without it), and each key's
    redirect URI leads to this portal's callback (absolute https in production)."""
    scopes = conf.cc_scopes()
    callback = reverse("integrations:connect_callback")
    production = conf.django_env() == "production"
    problems: list[str] = []
    fixes: list[str] = []
    if "offline_access" not in scopes:
        problems.append(
            f"Connect asks for {' '.join(scopes)}, without offline_access: CC would issue no "
            "refresh token"
        )
        fixes.append("ask for offline_access on connect (integrations.conf.cc_scopes)")
    keys = list(ApiKey.objects.order_by("pk"))
    for key in keys:
        for problem in _redirect_uri_problems(
            key.redirect_uri, callback=callback, production=production
        ):
            problems.append(f"key {key.pk} {key.name!r}: {problem}")
    if len(problems) > len(fixes):
        scheme = "https" if production else "http(s)"
        fixes.append(
            f"set the key's redirect URI to {scheme}://<the portal's host>{callback} in the "
            "admin (API keys), and register exactly the same URI with the application at "
            "Constant Contact"
        )
    if problems:
        raise CheckFailed("; ".join(problems), fix="; ".join(fixes))
    if not keys:
        return (
            f"no API keys yet (add one: manage.py cc_key add); Connect asks for {' '.join(scopes)}"
        )
    return (
        f"{len(keys)} key(s), redirect URIs lead to {callback}; Connect asks for {' '.join(scopes)}"
    )


# --- 10. accounts -----------------------------------------------------------------------------
@_check("accounts", fix="reconnect them in the portal (Accounts → the account → Reconnect)")
def doctor_check_accounts() -> str:
    """No connected account needs someone to act (as :meth:`ConnectedAccount.health` says)."""
    accounts = list(ConnectedAccount.objects.exclude(status=AccountStatus.DISCONNECTED))
    attention = []
    for account in accounts:
        health = account.health()
        if health.attention:
            reason = f": {health.reason[:120]}" if health.reason else ""
            attention.append(f"{str(account)!r} ({health.label.lower()}{reason})")
    if attention:
        raise CheckFailed(
            f"{len(attention)} account(s) need a reconnect: {_named(attention)}",
            fix="reconnect them in the portal (Accounts → the account → Reconnect)",
        )
    if not accounts:
        return "no accounts connected yet"
    return f"{len(accounts)} account(s) connected, none needs a reconnect"


# --- 11. idle refresh tokens ------------------------------------------------------------------
@_check("refresh_tokens", fix="run manage.py cc_tokens_keepalive")
def doctor_check_refresh_tokens() -> str:
    """No refresh token has gone unused for the keep-alive's idle limit (150 days): CC expires
    one unused for 180."""
    limit = conf.token_keepalive_idle_days()
    now = timezone.now()
    idle: list[str] = []
    longest = None
    for account in ConnectedAccount.objects.filter(status=AccountStatus.ACTIVE):
        days = account.refresh_token_idle_days(at=now)
        if days is None:
            continue
        longest = days if longest is None else max(longest, days)
        if days >= limit:
            idle.append(f"{str(account)!r} ({days} days)")
    if idle:
        raise CheckFailed(
            f"{len(idle)} refresh token(s) idle {limit} days or more, and CC expires them "
            f"unused at 180: {_named(idle)}",
            fix="run manage.py cc_tokens_keepalive (a running worker does it every 12 h)",
        )
    if longest is None:
        return "no refresh tokens stored"
    return f"none idle {limit} days (longest: {longest} days)"

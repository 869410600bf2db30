"""When something is worth an alert: one function per kind of event, each naming the
occurrence it found by a dedupe key, so that noticing it again records nothing.

:func:`alerts_evaluate` runs every ``CC_ALERTS_EVALUATE_SECONDS`` in the worker and looks at the
state as it is. Services that see a change the moment it happens also emit it (a job pausing,
an account CC refused the refresh token of), under the same key, so a change shorter than the
evaluator's period is not missed and one it sees as well is not sent twice.

=========================  =====================================================  ==================
event                      condition                                              one per
=========================  =====================================================  ==================
``quota.threshold``        today's calls reached 75, 90 or 100% of the key's day  key, day, threshold
``quota.forecast``         the dashboard's forecast: spent before 00:00 UTC       key, day
``quota.throttled``        CC answered 429 ``throttled`` (API) or                 key, UTC hour
                           ``too_many_requests`` (token endpoint) to a booked call
``account.needs_reconnect`` the account's health is ``needs_reconnect``           time it got there
``account.refresh_failing`` the account's health is ``refresh_failing``           time it got there
``job.paused``             the job is paused                                      pause
``job.failed`` / ``.completed`` the job ended so                                  job
=========================  =====================================================  ==================

An account's ``token_version`` moves on every token write, and every way into and out of those
two states writes the tokens (a refresh stored, CC refusing it, a reconnect), so the version
names the time it entered the state. A refresh failure is left to the evaluator on purpose: a
refresh that fails once and succeeds on the retry seconds later is no alert.
"""

from __future__ import annotations

import datetime as dt
from http import HTTPStatus

from django.db.models import Q
from django.utils import timezone

from integrations import selectors
from integrations.constant_contact.errors import THROTTLED
from integrations.models import (
    AccountStatus,
    AlertEvent,
    AlertEventType,
    ApiCall,
    ApiKey,
    BulkJob,
    CallKind,
    ConnectedAccount,
    DailyUsage,
    JobState,
)
from integrations.services.alerts import alert_event_emit

#: Shares of a key's day whose crossing is an alert, in percent.
QUOTA_THRESHOLDS = (75, 90, 100)
#: What CC's token endpoint answers when more than one request a second arrives.
TOKEN_THROTTLED = "too_many_requests"
#: How far back the evaluator looks for 429s and finished jobs (it runs every 30 s; a worker
#: that was down for a while still reports what happened meanwhile).
LOOKBACK = dt.timedelta(hours=24)


def alerts_evaluate(*, now: dt.datetime | None = None) -> list[AlertEvent]:
    """Record every alert occurrence the current state shows and no one recorded yet."""
    now = now or timezone.now()
    emitted: list[AlertEvent | None] = []
    for api_key in ApiKey.objects.order_by("pk"):
        emitted.append(quota_threshold_emit(api_key=api_key, now=now))
        emitted.append(quota_forecast_emit(api_key=api_key, now=now))
        emitted.extend(quota_throttled_emit(api_key=api_key, now=now))
    emitted.extend(accounts_emit(now=now))
    emitted.extend(jobs_emit(now=now))
    return [event for event in emitted if event is not None]


# --- quota --------------------------------------------------------------------------------------
def _key_data(api_key: ApiKey) -> dict:
    return {"key": {"id": api_key.pk, "client_id": api_key.client_id, "name": api_key.name}}


def quota_threshold_emit(*, api_key: ApiKey, now: dt.datetime) -> AlertEvent | None:
    """The highest threshold today's calls have reached, unless it or a higher one was sent
    today: a key that jumps from 70 to 95% is told 90% once, not 75% and then 90%, and a key
    that sits at 100% is told once."""
    today = now.astimezone(dt.UTC).date()
    usage = DailyUsage.objects.filter(api_key=api_key, date=today).first()
    per_day = api_key.per_day
    if usage is None or per_day < 1:
        return None
    reached = [t for t in QUOTA_THRESHOLDS if usage.calls * 100 >= t * per_day]
    if not reached:
        return None
    threshold = reached[-1]
    keys = [_threshold_key(api_key, today, t) for t in QUOTA_THRESHOLDS if t >= threshold]
    if AlertEvent.objects.filter(dedupe_key__in=keys).exists():
        return None
    return alert_event_emit(
        event_type=AlertEventType.QUOTA_THRESHOLD,
        dedupe_key=keys[0],
        at=now,
        data=_key_data(api_key)
        | {
            "date": today.isoformat(),
            "threshold_percent": threshold,
            "calls_today": usage.calls,
            "per_day": per_day,
            "message": f"Key {api_key.name} has used {usage.calls:,} of its {per_day:,} calls "
            f"today ({threshold}% reached).",
        },
    )


def _threshold_key(api_key: ApiKey, day: dt.date, threshold: int) -> str:
    return f"quota.threshold:{api_key.pk}:{day.isoformat()}:{threshold}"


def quota_forecast_emit(*, api_key: ApiKey, now: dt.datetime) -> AlertEvent | None:
    """The key's burn-rate forecast (``selectors.key_usage_summary``, the dashboard's and
    ``cc_usage``'s) says it runs out before 00:00 UTC: once a day."""
    today = now.astimezone(dt.UTC).date()
    key = f"quota.forecast:{api_key.pk}:{today.isoformat()}"
    if AlertEvent.objects.filter(dedupe_key=key).exists():
        return None
    usage = selectors.key_usage_summary(api_key=api_key, now=now)
    if not usage["exhausted_at"]:
        return None
    return alert_event_emit(
        event_type=AlertEventType.QUOTA_FORECAST,
        dedupe_key=key,
        at=now,
        data=_key_data(api_key)
        | {
            "date": today.isoformat(),
            "exhausted_at": usage["exhausted_at"],
            "resets_at": usage["resets_at"],
            "calls_today": usage["calls_today"],
            "remaining_today": usage["remaining_today"],
            "burn_rate_per_minute": round(usage["burn_rate_per_minute"], 2),
            "per_day": usage["per_day"],
            "message": f"At the last 10 minutes' rate key {api_key.name} runs out of calls at "
            f"{usage['exhausted_at'][11:16]} UTC, before the 00:00 UTC reset.",
        },
    )


def quota_throttled_emit(*, api_key: ApiKey, now: dt.datetime) -> list[AlertEvent | None]:
    """CC answered 429 to a call the key's ledger had booked (our accounting was wrong): one
    event per key and UTC hour in which it happened, however many 429s the hour saw."""
    throttled = (
        ApiCall.objects.filter(
            api_key=api_key,
            status_code=HTTPStatus.TOO_MANY_REQUESTS,
            created_at__gte=now - LOOKBACK,
        )
        .filter(
            Q(kind=CallKind.API, error_key=THROTTLED)
            | Q(kind=CallKind.TOKEN, error_key=TOKEN_THROTTLED)
        )
        .order_by("created_at", "pk")
    )
    hours: dict[dt.datetime, list[ApiCall]] = {}
    for call in throttled:
        hour = call.created_at.astimezone(dt.UTC).replace(minute=0, second=0, microsecond=0)
        hours.setdefault(hour, []).append(call)
    keys = {hour: f"quota.throttled:{api_key.pk}:{hour:%Y-%m-%dT%H}" for hour in hours}
    seen = set(
        AlertEvent.objects.filter(dedupe_key__in=keys.values()).values_list("dedupe_key", flat=True)
    )
    events = []
    for hour, calls in hours.items():
        if keys[hour] in seen:
            continue
        first = calls[0]
        events.append(
            alert_event_emit(
                event_type=AlertEventType.QUOTA_THROTTLED,
                dedupe_key=keys[hour],
                at=now,
                data=_key_data(api_key)
                | {
                    "hour": hour.isoformat(),
                    "throttled_calls": len(calls),
                    "first_call": {
                        "id": first.pk,
                        "at": first.created_at.astimezone(dt.UTC).isoformat(),
                        "kind": first.kind,
                        "method": first.method,
                        "path": first.path_template,
                        "error_key": first.error_key,
                    },
                    "message": f"Constant Contact throttled {len(calls)} call(s) of key "
                    f"{api_key.name} that its limiter had booked; the key was paused and its "
                    "spacing widened.",
                },
            )
        )
    return events


# --- accounts -----------------------------------------------------------------------------------
_ACCOUNT_EVENTS = {
    "needs_reconnect": AlertEventType.ACCOUNT_NEEDS_RECONNECT,
    "refresh_failing": AlertEventType.ACCOUNT_REFRESH_FAILING,
}


def accounts_emit(*, now: dt.datetime) -> list[AlertEvent | None]:
    """Every account whose health is ``needs_reconnect`` or ``refresh_failing``, once for each
    time it got there."""
    candidates = ConnectedAccount.objects.select_related("api_key").filter(
        Q(status=AccountStatus.NEEDS_RECONNECT)
        | Q(status=AccountStatus.ACTIVE, refresh_failures__gt=0)
    )
    found = []
    for account in candidates:
        code = account.health(at=now).code
        if code in _ACCOUNT_EVENTS:
            found.append((account, code))
    keys = [_account_key(account, code) for account, code in found]
    seen = set(AlertEvent.objects.filter(dedupe_key__in=keys).values_list("dedupe_key", flat=True))
    return [
        account_health_emit(account=account, at=now)
        for account, code in found
        if _account_key(account, code) not in seen
    ]


def _account_key(account: ConnectedAccount, code: str) -> str:
    return f"account.{code}:{account.pk}:{account.token_version}"


def account_health_emit(
    *, account: ConnectedAccount, at: dt.datetime | None = None
) -> AlertEvent | None:
    """The account's ``needs_reconnect`` or ``refresh_failing`` occurrence, if it is in one of
    those states (nothing otherwise)."""
    health = account.health(at=at)
    if health.code not in _ACCOUNT_EVENTS:
        return None
    return alert_event_emit(
        event_type=_ACCOUNT_EVENTS[health.code],
        dedupe_key=_account_key(account, health.code),
        at=at,
        data={
            "account": {"id": account.pk, "name": str(account), "cc_user_id": account.cc_user_id},
            "key": {"id": account.api_key_id, "client_id": account.api_key.client_id},
            "health": health.code,
            "reason": health.reason,
            "refresh_failures": account.refresh_failures,
            "message": f"Account {account}: {health.label.lower()}. {health.reason}",
        },
    )


# --- jobs ---------------------------------------------------------------------------------------
_JOB_EVENTS = {
    JobState.PAUSED: AlertEventType.JOB_PAUSED,
    JobState.FAILED: AlertEventType.JOB_FAILED,
    JobState.COMPLETED: AlertEventType.JOB_COMPLETED,
}


def jobs_emit(*, now: dt.datetime) -> list[AlertEvent | None]:
    """Every paused job, once per pause; every job that failed or completed within the
    lookback, once."""
    jobs = BulkJob.objects.select_related("account__api_key").filter(
        Q(state=JobState.PAUSED)
        | Q(state__in=[JobState.FAILED, JobState.COMPLETED], finished_at__gte=now - LOOKBACK)
    )
    jobs = list(jobs)
    keys = [_job_key(job) for job in jobs]
    seen = set(AlertEvent.objects.filter(dedupe_key__in=keys).values_list("dedupe_key", flat=True))
    return [job_state_emit(job=job, at=now) for job in jobs if _job_key(job) not in seen]


def _job_key(job: BulkJob) -> str:
    if job.state != JobState.PAUSED:
        return f"job.{job.state}:{job.pk}"
    # The runner numbers each pause in the job's checkpoint; a stray run that finds the job
    # still paused changes nothing of it.
    pause = (job.checkpoint or {}).get("pauses", 0)
    return f"job.paused:{job.pk}:{pause}"


def job_state_emit(*, job: BulkJob, at: dt.datetime | None = None) -> AlertEvent | None:
    """The job's ``paused``, ``failed`` or ``completed`` occurrence, if it is in one of those
    states (nothing otherwise)."""
    if job.state not in _JOB_EVENTS:
        return None
    state = JobState(job.state)
    name = job.list_name or job.list_id
    message = f"Sync job #{job.pk} ({name}) {state.label.lower()}"
    if job.error:
        message += f": {job.error}"
    return alert_event_emit(
        event_type=_JOB_EVENTS[state],
        dedupe_key=_job_key(job),
        at=at,
        data={
            "job": {
                "id": job.pk,
                "list_id": job.list_id,
                "list_name": job.list_name,
                "mode": job.mode,
                "state": job.state,
                "phase": job.phase,
                "error": job.error,
                "paused_until": job.paused_until.astimezone(dt.UTC).isoformat()
                if job.paused_until
                else None,
                "calls_used": job.calls_used,
                "result": job.result or {},
            },
            "account": {"id": job.account_id, "name": str(job.account)},
            "message": message[:500],
        },
    )

"""One scenario per fault. Each builds its own key, CC account and list, injects its fault
into real processes, and returns a :class:`Row` measured from what the sandbox holds at the
end (its members, its record of applied activities, its exact stats, its fault counters)."""

from __future__ import annotations

import datetime as dt
import random
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from faults_support.proxy import CuttableProxy, redis_answers
from faults_support.world import Proc, Scenario, World, fernet_key, wait_for

IMPORT = "/v3/activities/contacts_json_import"
REMOVE = "/v3/activities/remove_list_memberships"
EXPORT = "/v3/activities/contact_exports"
DOWNLOAD = "/v3/contact_exports/"
POLL = "/v3/activities"


@dataclass
class Row:
    fault: str
    injected: int = 0
    lost: int = 0
    duplicated: int = 0
    extra_calls: int | None = None
    uninjected_429: int = 0
    outcome: str = ""
    notes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    skipped: str = ""
    reference: bool = False  # the fault-free baseline: not a fault row

    @property
    def ok(self) -> bool:
        if self.skipped:
            return True
        counts_ok = self.lost == 0 and self.duplicated == 0 and self.uninjected_429 == 0
        return counts_ok and not self.problems and (self.reference or self.injected > 0)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}


# --- measuring ------------------------------------------------------------------------------
def uninjected_429s(world: World) -> int:
    """Every 429 the sandbox answered (API and token endpoint, all keys); the suite injects
    none, so each one is the portal's accounting failing."""
    injected = world.control.injected().get("token:429", 0)
    total = sum(s.by_status.get("429", 0) + s.token_429 for s in world.control.all_stats().values())
    return total - injected


def injected_total(world: World) -> int:
    return sum(world.control.injected().values())


def calls_of(sc: Scenario) -> int:
    stats = sc.control.stats(sc.client_id)
    return stats.requests + stats.token_requests


@dataclass
class SyncRun:
    job: Any
    desired: set[str]
    paused_reasons: list[str] = field(default_factory=list)


def sync(
    sc: Scenario,
    *,
    hook: Callable[[Any], None] | None = None,
    resume_paused: bool = False,
) -> SyncRun:
    """Replace the list's members (``removes`` go, ``adds`` come, the rest stay) through the
    workers: plan, approve when planned, wait for the end. ``hook(job)`` is called on every
    look at the job; a job paused for a person is resumed when ``resume_paused``."""
    from integrations.models import BulkJob, JobState
    from integrations.services import bulk_jobs
    from integrations.tasks import bulk_job_enqueue

    t = sc.world.timings
    sc.seed_members(t.members)
    desired = sc.emails(t.removes, t.members + t.adds)
    body = ("email,first_name\n" + "".join(f"{e},Member\n" for e in desired)).encode()
    job = bulk_jobs.bulk_job_create(
        account=sc.account, list_id=sc.list_id, list_name="Members", csv_chunks=iter([body])
    )
    bulk_job_enqueue(job.pk)
    run = SyncRun(job=job, desired=set(desired))
    deadline = time.monotonic() + t.job_timeout
    while time.monotonic() < deadline:
        job.refresh_from_db()
        if job.state == JobState.PLANNED:
            bulk_job_enqueue(bulk_jobs.bulk_job_approve(job=job, allow_removals=True).pk)
        elif job.state in BulkJob.TERMINAL_STATES:
            break
        elif job.state == JobState.PAUSED and job.paused_until is None:
            run.paused_reasons.append(job.error)
            if not resume_paused:
                break
            bulk_job_enqueue(bulk_jobs.bulk_job_resume(job=job).pk)
        elif job.state == JobState.PAUSED and job.error not in run.paused_reasons:
            run.paused_reasons.append(job.error)
        if hook:
            hook(job)
        time.sleep(0.2)
    job.refresh_from_db()
    return run


def measure_sync(world: World, sc: Scenario, run: SyncRun, row: Row) -> Row:
    """Lost updates, duplicated activities, extra calls and 429s of a finished sync."""
    from integrations.models import JobState

    members = sc.members()
    row.lost += len(run.desired - members) + len(members - run.desired)
    row.duplicated += sc.control.activities(sc.cc_account)["duplicates"]
    row.extra_calls = (row.extra_calls or 0) + calls_of(sc) - world.baseline_calls
    row.outcome = ", ".join(filter(None, [row.outcome, run.job.state]))
    if run.job.state != JobState.COMPLETED:
        row.problems.append(f"job {run.job.state}: {run.job.error[:200]}")
    if run.job.state == JobState.FAILED:
        row.problems.append("a transient fault ended the job failed")
    return row


def finish(world: World, row: Row, *scenarios: Scenario) -> Row:
    for sc in scenarios:
        sc.stop_all()
    row.uninjected_429 = uninjected_429s(world)
    if not row.injected and not row.reference:
        row.injected = injected_total(world)
    return row


def _faulted_sync(world: World, name: str, title: str, inject: Callable[[Scenario], None]):
    world.control.reset_stats()
    sc = world.scenario(name)
    inject(sc)
    sc.worker()
    run = sync(sc)
    row = measure_sync(world, sc, run, Row(title))
    pending = world.control.faults()["api"]
    if pending:
        row.notes.append(f"{sum(f['remaining'] for f in pending)} faults never reached")
    world.control.clear_faults()
    return finish(world, row, sc)


# --- the scenarios --------------------------------------------------------------------------
def baseline(world: World) -> Row:
    """The same sync with no fault: the reference for "extra calls"."""
    world.control.reset_stats()
    sc = world.scenario("baseline")
    sc.worker()
    run = sync(sc)
    world.baseline_calls = calls_of(sc)
    row = measure_sync(world, sc, run, Row("baseline (no fault)", reference=True))
    row.notes.append(f"{world.baseline_calls} calls")
    return finish(world, row, sc)


def server_errors(world: World) -> Row:
    def inject(sc: Scenario) -> None:
        c, cid = sc.control, sc.client_id
        c.inject_api_fault(503, count=2, client_id=cid, method="POST", path=EXPORT)
        # Longer than the gateway's 4 tries: the step itself is retried.
        c.inject_api_fault(500, count=6, client_id=cid, method="GET", path=POLL)
        c.inject_api_fault(503, count=3, client_id=cid, method="GET", path=DOWNLOAD)
        c.inject_api_fault(500, count=2, client_id=cid, method="POST", path=IMPORT)
        c.inject_api_fault(503, count=3, client_id=cid, method="POST", path=REMOVE)

    return _faulted_sync(world, "5xx", "5xx bursts (500/503)", inject)


def connection_resets(world: World) -> Row:
    def inject(sc: Scenario) -> None:
        c, cid = sc.control, sc.client_id
        c.inject_api_fault("reset", count=2, client_id=cid, method="POST", path=EXPORT)
        c.inject_api_fault("reset", count=5, client_id=cid, method="GET", path=POLL)
        c.inject_api_fault("reset", count=2, client_id=cid, method="GET", path=DOWNLOAD)
        c.inject_api_fault("reset", count=1, client_id=cid, method="POST", path=IMPORT)
        c.inject_api_fault("reset", count=2, client_id=cid, method="POST", path=REMOVE)

    return _faulted_sync(world, "reset", "connection resets", inject)


def timeouts_after_applied(world: World) -> Row:
    def inject(sc: Scenario) -> None:
        c, cid = sc.control, sc.client_id
        hold = 5.0  # past the portal's 2 s read timeout (CC_API_READ_TIMEOUT)
        for method, path, count in (
            ("POST", EXPORT, 1),
            ("POST", IMPORT, 1),
            ("POST", REMOVE, 2),
            ("GET", POLL, 1),
        ):
            c.inject_api_fault(
                "timeout",
                count=count,
                client_id=cid,
                method=method,
                path=path,
                hold_seconds=hold,
                applied_first=True,
            )

    return _faulted_sync(world, "timeout", "read timeouts after CC applied", inject)


def activity_end_states(world: World) -> Row:
    """Every bad end state once (the job retries at the step), then one import that keeps
    failing (the job pauses with a reason, never fails, and completes once resumed)."""
    row = Row("activity ends failed/timed_out/cancelled")
    world.control.reset_stats()
    first = world.scenario("ends")
    c = world.control
    c.inject_activity_fault("failed", kind="contact_exports")
    c.inject_activity_fault("timed_out", kind="contacts_json_import")
    c.inject_activity_fault("cancelled", kind="remove_list_memberships")
    first.worker()
    measure_sync(world, first, sync(first), row)
    second = world.scenario("ends-again")
    c.inject_activity_fault("failed", count=3, kind="contacts_json_import")
    second.worker()
    run = sync(second, resume_paused=True)
    measure_sync(world, second, run, row)
    row.extra_calls = calls_of(first) + calls_of(second) - 2 * world.baseline_calls
    person = [r for r in run.paused_reasons if "times in a row" in (r or "")]
    if person:
        row.notes.append(f"paused with a reason after 3 failed imports: {person[0][:90]!r}")
    else:
        row.problems.append("the import that kept failing did not pause the job with a reason")
    return finish(world, row, first, second)


def cc_unreachable(world: World) -> Row:
    seconds = world.timings.outage_seconds
    world.control.reset_stats()
    sc = world.scenario("outage")
    sc.worker()
    state = {"started": None}

    def hook(job) -> None:
        if state["started"] is None and job.state == "running":
            world.control.start_outage(seconds)
            state["started"] = time.monotonic()
        elif state["started"] and time.monotonic() - state["started"] < seconds + 1:
            time.sleep(0.5)  # the sandbox is away: nothing to look at

    run = sync(sc, hook=hook)
    row = measure_sync(world, sc, run, Row(f"CC unreachable {seconds:.0f} s"))
    refused = _calls_without_answer(sc)
    row.notes.append(f"{refused} calls found CC unreachable")
    if run.paused_reasons:
        row.notes.append("paused and resumed by itself")
    return finish(world, row, sc)


def _calls_without_answer(sc: Scenario) -> int:
    from integrations.models import ApiCall

    return ApiCall.objects.filter(account=sc.account, status_code__isnull=True).count()


def worker_kills(world: World, *, seed: int) -> Row:
    t = world.timings
    world.control.reset_stats()
    sc = world.scenario("kill")
    rng = random.Random(seed)
    current = {"worker": sc.worker(), "kills": 0, "next": time.monotonic() + rng.uniform(0.5, 1.5)}

    def hook(job) -> None:
        if current["kills"] >= t.kills or time.monotonic() < current["next"]:
            return
        current["worker"].kill()
        current["kills"] += 1
        current["worker"] = sc.worker()
        current["next"] = time.monotonic() + rng.uniform(0.8, 2.5)

    run = sync(sc, hook=hook)
    row = measure_sync(world, sc, run, Row(f"worker SIGKILL x{t.kills}"))
    row.injected = current["kills"]
    row.notes.append(f"seed {seed}; kills counted by the suite (the sandbox cannot see them)")
    return finish(world, row, sc)


def _due_now(sc: Scenario) -> None:
    """Make the stored access token fall due (it stays valid at CC for a minute)."""
    from django.utils import timezone

    from integrations.models import ConnectedAccount

    ConnectedAccount.objects.filter(pk=sc.account.pk).update(
        access_expires_at=timezone.now() + dt.timedelta(seconds=60)
    )


def _lease_holder_killed(
    sc: Scenario, *, applied_first: bool, others: int
) -> tuple[list[Proc], bool]:
    """A process takes the refresh lease; its token request is held at CC (after CC issued
    the new tokens when ``applied_first``); ``others`` processes queue behind it; the holder
    is SIGKILLed. Returns the others, finished, and whether the request was held."""
    from integrations.models import ConnectedAccount

    _due_now(sc)
    c = sc.control
    c.inject_token_fault(
        "timeout", client_id=sc.client_id, hold_seconds=60, applied_first=applied_first
    )
    holder = sc.child("token", str(sc.account.pk))
    held = wait_for(
        lambda: (
            not c.faults()["token"]
            and ConnectedAccount.objects.get(pk=sc.account.pk).refresh_lease_owner
        ),
        timeout=30,
    )
    waiting = [sc.child("token", str(sc.account.pk)) for _ in range(others)]
    time.sleep(0.5)
    holder.kill()
    c.clear_faults()  # releases the sandbox's held connection
    for proc in waiting:
        try:
            proc.wait(timeout=90)
        except Exception:
            proc.kill()
    return waiting, bool(held)


def refresh_lease_kill(world: World) -> Row:
    from integrations.models import AccountStatus, ConnectedAccount

    world.control.reset_stats()
    sc = world.scenario("lease")
    version = ConnectedAccount.objects.get(pk=sc.account.pk).token_version
    waiting, held = _lease_holder_killed(sc, applied_first=False, others=3)
    row = Row("SIGKILL during a refresh lease")
    if not held:
        row.problems.append("the refresh was never held at CC")
    account = ConnectedAccount.objects.get(pk=sc.account.pk)
    answers = [line for p in waiting for line in p.json_lines()]
    failed = [a for a in answers if not a.get("ok")]
    stats = sc.control.stats(sc.client_id)
    if account.status != AccountStatus.ACTIVE or account.token_version == version:
        row.lost += 1
        row.problems.append(f"account {account.status}: {account.status_reason[:120]}")
    if failed or len(answers) != len(waiting):
        row.problems.append(f"{len(failed)} of {len(waiting)} waiting processes got no token")
    if stats.invalid_grant:
        row.problems.append(f"{stats.invalid_grant} invalid_grant answers")
    # Fault-free: the connect's code exchange and one refresh.
    row.extra_calls = stats.token_requests - 2
    row.outcome = f"account {account.status}"
    row.notes.append(
        f"{stats.token_requests - 1} token requests for 1 refresh (one held, then killed)"
    )
    return finish(world, row, sc)


def rotated_before_commit(world: World) -> Row:
    """The holder dies after CC rotated the refresh token but before the portal stored it.
    CC keeps no grace for a rotated token (REFERENCE 2.6: "generating a new set of tokens
    causes all previous refresh tokens to expire"), so a rotating account must end
    ``needs_reconnect`` with a reason naming the interrupted refresh, after one invalid_grant;
    a long-lived one must stay connected."""
    from integrations.models import AccountStatus, ConnectedAccount

    world.control.reset_stats()
    row = Row("SIGKILL after CC rotated, before commit")
    outcomes = []
    for mode in ("rotating", "long_lived"):
        sc = world.scenario(f"rotate-{mode.replace('_', '-')}", refresh_mode=mode)
        _, held = _lease_holder_killed(sc, applied_first=True, others=2)
        if not held:
            row.problems.append(f"{mode}: the refresh was never held at CC")
        account = ConnectedAccount.objects.get(pk=sc.account.pk)
        stats = sc.control.stats(sc.client_id)
        if mode == "rotating":
            fine = (
                account.status == AccountStatus.NEEDS_RECONNECT
                and "interrupted" in account.status_reason
            )
            if stats.invalid_grant > 1:
                row.problems.append(f"invalid_grant storm: {stats.invalid_grant} answers")
        else:
            fine = account.status == AccountStatus.ACTIVE
            if stats.invalid_grant:
                row.problems.append(f"long-lived account got {stats.invalid_grant} invalid_grant")
        if not fine:
            row.lost += 1
            row.problems.append(f"{mode}: account {account.status}: {account.status_reason[:120]}")
        outcomes.append(f"{mode}: {account.status}")
        row.extra_calls = (row.extra_calls or 0) + stats.token_requests - 2
        sc.stop_all()
        if mode == "rotating":
            row.notes.append(f"rotating reason: {account.status_reason[:110]!r}")
    row.outcome = "; ".join(outcomes)
    return finish(world, row)


def redis_down(world: World) -> Row:
    seconds = world.timings.redis_outage_seconds
    title = f"Redis down {seconds:.0f} s"
    if not redis_answers():
        return Row(title, skipped="skipped: Redis not available")
    world.control.reset_stats()
    proxy = CuttableProxy(("127.0.0.1", 6379))
    prefix = f"ccportal:faults:{uuid.uuid4().hex[:8]}:"
    env = {
        "REDIS_URL": f"redis://127.0.0.1:{proxy.port}/15",
        "CC_QUOTA_STORE": "integrations.services.quota_stores.RedisStore",
        "CC_QUOTA_REDIS_PREFIX": prefix,
    }
    sc = world.scenario("redis")
    sc.worker(**env)
    state = {"done": False, "sent": 0}

    def hook(job) -> None:
        if state["done"] or job.state != "running":
            return
        proxy.cut()
        time.sleep(1.0)  # a call booked just before the cut may still leave
        before = sc.control.stats(sc.client_id).requests
        time.sleep(max(0.0, seconds - 1.0))
        state["sent"] = sc.control.stats(sc.client_id).requests - before
        proxy.restore()
        state["done"] = True

    try:
        run = sync(sc, hook=hook)
    finally:
        proxy.close()
        _redis_forget(prefix)
    row = measure_sync(world, sc, run, Row(title))
    row.injected = proxy.refused
    row.notes.append(f"{proxy.refused} Redis connections refused (counted by the suite's proxy)")
    row.notes.append(f"{state['sent']} calls sent while the store was unreachable")
    if state["sent"]:
        row.problems.append(f"{state['sent']} calls sent unbooked while Redis was down")
    if not state["done"]:
        row.problems.append("the outage never started")
    return finish(world, row, sc)


def _redis_forget(prefix: str) -> None:
    """Delete the suite's ledger keys (and nothing else) from the system Redis."""
    try:
        import redis

        client = redis.Redis(host="127.0.0.1", port=6379, db=15, socket_timeout=2)
        for key in client.scan_iter(match=prefix + "*", count=500):
            client.delete(key)
    except Exception as exc:  # the row stands; say what was left
        print(f"note: could not delete Redis keys {prefix}*: {exc}", file=sys.stderr)


def sqlite_locked(world: World) -> Row:
    t = world.timings
    world.control.reset_stats()
    sc = world.scenario("sqlite")
    sc.worker()
    state: dict[str, Proc | None] = {"locker": None}

    def hook(job) -> None:
        if state["locker"] is None and job.state == "running":
            state["locker"] = sc.child(
                "sqlite-lock",
                str(world.database_path),
                "--seconds",
                str(t.lock_seconds),
                "--times",
                str(t.locks),
                "--gap",
                "1",
            )

    run = sync(sc, hook=hook)
    locker = state["locker"]
    if locker is not None:
        try:
            locker.wait(timeout=60)
        except Exception:
            locker.kill()
    row = measure_sync(world, sc, run, Row(f"SQLite locked {t.lock_seconds:.0f} s x{t.locks}"))
    locks = [line for line in (locker.json_lines() if locker else []) if "locked" in line]
    row.injected = len(locks)
    row.notes.append(f"{len(locks)} exclusive locks held (counted by the locking process)")
    return finish(world, row, sc)


def key_rotation(world: World) -> Row:
    """Run last: from here on every process carries the new key first."""
    world.control.reset_stats()
    sc = world.scenario("keys")
    old = sc.worker()
    new_keys = ",".join([fernet_key(), *world.encryption_keys])
    state: dict[str, Any] = {"rotated": None}

    def hook(job) -> None:
        if state["rotated"] is not None or job.state != "running":
            return
        # The rollout: every process gets the new key first, the old one second; then the
        # rotation, while the job runs and another process keeps refreshing the token.
        sc.worker(FIELD_ENCRYPTION_KEYS=new_keys)
        old.stop()
        loop = sc.child(
            "refresh-loop", str(sc.account.pk), "--seconds", "6", FIELD_ENCRYPTION_KEYS=new_keys
        )
        time.sleep(1.5)
        rotate = Proc(
            [sys.executable, "manage.py", "rotate_encryption_keys"],
            env=world.child_env(FIELD_ENCRYPTION_KEYS=new_keys),
            log=world.log("rotate"),
        )
        state["rotated"] = rotate.wait(timeout=120)
        state["rotate_output"] = rotate.log.read_text(errors="replace").strip()[-300:]
        loop.wait(timeout=60)
        state["loop"] = loop.json_lines()

    run = sync(sc, hook=hook)
    world.encryption_keys = new_keys.split(",")
    world.env["FIELD_ENCRYPTION_KEYS"] = new_keys
    row = measure_sync(world, sc, run, Row("encryption key rotated mid-run"))
    newest_only = new_keys.split(",")[0]
    check = sc.child("check-secrets", str(sc.account.pk), FIELD_ENCRYPTION_KEYS=newest_only)
    check.wait(timeout=60)
    report = (check.json_lines() or [{"unreadable": ["no report"], "calls": []}])[-1]
    row.lost += len(report["unreadable"])
    if report["unreadable"]:
        row.problems.append(f"unreadable with the new key alone: {report['unreadable'][:3]}")
    if report["calls"] != ["ok"]:
        row.problems.append(f"a call with the new key alone failed: {report['calls']}")
    if state["rotated"] != 0:
        row.problems.append(f"rotate_encryption_keys exited {state['rotated']}")
    loop = (state.get("loop") or [{}])[-1]
    row.injected = int(state["rotated"] == 0)
    row.notes.append(
        f"rotation exit {state['rotated']}; {loop.get('refreshed', 0)} refreshes ran meanwhile"
        f"{'; errors: ' + str(loop['errors'][:2]) if loop.get('errors') else ''}"
    )
    row.notes.append(
        "nothing unreadable with the new key alone" if not report["unreadable"] else ""
    )
    return finish(world, row, sc)


def all_scenarios(seed: int) -> list[tuple[str, Callable[[World], Row]]]:
    return [
        ("5xx", server_errors),
        ("resets", connection_resets),
        ("timeouts", timeouts_after_applied),
        ("activity-ends", activity_end_states),
        ("unreachable", cc_unreachable),
        ("kill", lambda world: worker_kills(world, seed=seed)),
        ("lease-kill", refresh_lease_kill),
        ("rotated-kill", rotated_before_commit),
        ("redis", redis_down),
        ("sqlite", sqlite_locked),
        ("keys", key_rotation),
    ]

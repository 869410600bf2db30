"""How much of a key's per-second limit the gateway uses, and whether CC ever answers 429.

    .venv/bin/python bench/bench_utilisation.py [--seconds 60] [--processes 8]
                                                [--scenarios std-j20,std-j50,partner-j20,...]

Everything runs on loopback: the sandbox (started here) stands in for CC, and a throw-away
SQLite database in a temporary directory holds the portal's keys, accounts and quota ledger.
Each scenario uses a fresh API key (so a margin widened by one cannot help the next) and
``--processes`` real OS processes calling ``GET /contact_lists`` back to back:

* ``std-j20`` / ``std-j50``: a standard key (4/s) through ``cc_call`` (background lane, as bulk
  jobs call) with the sandbox delaying every arrival by 0-20 ms / 0-50 ms;
* ``partner-j20``: a partner key (10/s), 0-20 ms;
* ``base-4ps``: baseline without our quota engine — plain ``requests`` with a valid bearer
  token, each process limiting itself to 4 calls/s (what existing CC client libraries do);
* ``base-sleep1``: baseline — each process waits one second after each call;
* ``interactive``: one process makes an interactive call every ~2 s while the others saturate
  the key on the background lane; prints how long the interactive calls waited for a slot.

Printed per scenario: calls/s answered 2xx over the measured window (the first second is
warm-up) against the limit, throttled 429s, and the most requests the sandbox saw arrive in
any 1-second window (it counts arrivals in a sliding window, as CC does).
Targets: 0 throttled; at least 95 % of the limit at 0-20 ms jitter and 90 % at 0-50 ms.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import random
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any

from benchenv import REPO, portal_environment, portal_ready

sys.path.insert(0, str(REPO))

REDIRECT_URI = "http://127.0.0.1:8000/accounts/callback/"
SECRET = "bench-secret"
WARM_UP_SECONDS = 1.0
TARGETS = {20: 0.95, 50: 0.90}


@dataclass(frozen=True)
class Scenario:
    name: str
    tier: str
    jitter_ms: int
    mode: str  # gateway | base-4ps | base-sleep1 | interactive
    description: str


SCENARIOS = [
    Scenario("std-j20", "standard", 20, "gateway", "standard key, gateway, jitter 0-20 ms"),
    Scenario("std-j50", "standard", 50, "gateway", "standard key, gateway, jitter 0-50 ms"),
    Scenario("partner-j20", "partner", 20, "gateway", "partner key, gateway, jitter 0-20 ms"),
    Scenario("base-4ps", "standard", 20, "base-4ps", "baseline: 4/s limiter per process"),
    Scenario("base-sleep1", "standard", 20, "base-sleep1", "baseline: 1 s sleep after each call"),
    Scenario("interactive", "standard", 20, "interactive", "1 interactive + rest background"),
]


@dataclass
class Outcome:
    answered: list[float] = field(default_factory=list)  # completion times of 2xx answers
    refused: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    waits: list[float] = field(default_factory=list)  # interactive: seconds to get a slot
    decisions: list[float] = field(default_factory=list)  # seconds each quota_reserve took


# --- inside the spawned processes -----------------------------------------------------------


def _init() -> None:
    import django

    django.setup()


def _account(account_id: int):
    from integrations.models import ConnectedAccount

    return ConnectedAccount.objects.select_related("api_key").get(pk=account_id)


def _sleep_until(moment: float) -> None:
    delay = moment - time.time()
    if delay > 0:
        time.sleep(delay)


def _through_gateway(job: dict[str, Any]) -> Outcome:
    """Call through ``cc_call`` back to back; start no call after ``until``. Times each
    ``quota_reserve`` the gateway makes: the decision overhead in the real flow."""
    from integrations.constant_contact.errors import CCError
    from integrations.services import quota
    from integrations.services.gateway import cc_call

    account = _account(job["account_id"])
    outcome = Outcome()
    reserve = quota.quota_reserve

    def timed_reserve(**kwargs: Any):
        began = time.perf_counter()
        try:
            return reserve(**kwargs)
        finally:
            if time.time() >= job["start"] + WARM_UP_SECONDS:
                outcome.decisions.append(time.perf_counter() - began)

    quota.quota_reserve = timed_reserve  # quota_acquire looks it up on each call
    _sleep_until(job["start"])
    while time.time() < job["until"]:
        try:
            cc_call(account=account, method="GET", path="/contact_lists", lane=job["lane"])
            outcome.answered.append(time.time())
        except CCError as exc:
            name = type(exc).__name__
            outcome.errors[name] = outcome.errors.get(name, 0) + 1
    return outcome


def _interactive_caller(job: dict[str, Any]) -> Outcome:
    """An interactive call every ~2 s; times the wait for its slot (booking + sleep)."""
    from integrations.services import quota
    from integrations.services.gateway import cc_call

    acquire = quota.quota_acquire
    outcome = Outcome()

    def timed_acquire(**kwargs: Any):
        began = time.perf_counter()
        try:
            return acquire(**kwargs)
        finally:
            outcome.waits.append(time.perf_counter() - began)

    quota.quota_acquire = timed_acquire  # the gateway looks it up on each call
    account = _account(job["account_id"])
    _sleep_until(job["start"] + WARM_UP_SECONDS)
    while time.time() < job["until"] - 2.5:
        time.sleep(random.uniform(1.5, 2.5))
        cc_call(account=account, method="GET", path="/contact_lists", lane="interactive")
        outcome.answered.append(time.time())
    return outcome


def _without_quota_engine(job: dict[str, Any]) -> Outcome:
    """Plain ``requests`` with a valid token: the baselines."""
    import requests

    session = requests.Session()
    headers = {"Authorization": f"Bearer {job['token']}", "Accept": "application/json"}
    outcome = Outcome()
    _sleep_until(job["start"])
    next_at = job["start"]
    while time.time() < job["until"]:
        if job["mode"] == "base-4ps":
            _sleep_until(next_at)
            next_at = max(next_at + 0.25, time.time())
        response = session.get(job["url"], headers=headers, timeout=10)
        if response.ok:
            outcome.answered.append(time.time())
        elif response.status_code == 429:
            outcome.refused += 1
        if job["mode"] == "base-sleep1":
            time.sleep(1.0)
    return outcome


def _run(job: dict[str, Any]) -> Outcome:
    work = {
        "gateway": _through_gateway,
        "interactive": _interactive_caller,
        "base-4ps": _without_quota_engine,
        "base-sleep1": _without_quota_engine,
    }[job["mode"]]
    return work(job)


def _pid_after(seconds: float) -> int:
    time.sleep(seconds)
    return os.getpid()


# --- in this process ------------------------------------------------------------------------


def _key_and_account(sandbox, client_id: str, tier: str) -> tuple[int, str]:
    """A portal key + connected account for ``client_id``, tokens minted by the sandbox."""
    import datetime as dt

    from django.utils import timezone

    from integrations.models import AccountStatus, ConnectedAccount
    from integrations.services.keys import api_key_create

    sandbox.register_client(
        client_id, redirect_uris=[REDIRECT_URI], client_secret=SECRET, tier=tier
    )
    api_key = api_key_create(
        name=f"Benchmark {client_id}",
        client_id=client_id,
        client_secret=SECRET,
        redirect_uri=REDIRECT_URI,
        tier=tier,
    )
    owner = sandbox.create_account(f"{client_id}@example.com")
    sandbox.seed_list(owner, "Newsletter")
    tokens = sandbox.mint_tokens(client_id, account=owner)
    account = ConnectedAccount.objects.create(
        api_key=api_key,
        cc_user_id=owner.sub,
        label=owner.email,
        access_token=tokens["access_token"],
        refresh_token=tokens["refresh_token"],
        access_expires_at=timezone.now() + dt.timedelta(seconds=tokens["expires_in"]),
        scopes=tokens["scope"].split(),
        status=AccountStatus.ACTIVE,
        token_version=1,
    )
    return account.pk, tokens["access_token"]


def _scenario(pool, sandbox, scenario: Scenario, options: argparse.Namespace) -> dict[str, Any]:
    from integrations.models import ApiKey

    client_id = f"bench-{scenario.name}-{os.getpid()}-{time.monotonic_ns()}"
    account_id, token = _key_and_account(sandbox, client_id, scenario.tier)
    limit = ApiKey.objects.get(client_id=client_id).per_second
    sandbox.set_jitter(0, scenario.jitter_ms)
    start = time.time() + 1.0
    until = start + options.seconds
    base = {
        "account_id": account_id,
        "start": start,
        "until": until,
        "token": token,
        "url": f"{sandbox.api_base_url}/contact_lists",
        "lane": "background",
    }
    jobs = [{**base, "mode": scenario.mode} for _ in range(options.processes)]
    if scenario.mode == "interactive":
        jobs = [{**base, "mode": "interactive"}] + [
            {**base, "mode": "gateway"} for _ in range(options.processes - 1)
        ]
    outcomes = pool.map(_run, jobs, chunksize=1)
    stats = sandbox.stats(client_id)
    window = (start + WARM_UP_SECONDS, until)
    answered = [t for o in outcomes for t in o.answered if window[0] <= t <= window[1]]
    rate = len(answered) / (window[1] - window[0])
    errors: dict[str, int] = {}
    for o in outcomes:
        for name, count in o.errors.items():
            errors[name] = errors.get(name, 0) + count
    return {
        "scenario": scenario,
        "limit": limit,
        "rate": rate,
        # Calls made through the timed gateway (the interactive caller's are not timed).
        "calls": sum(
            window[0] <= t <= window[1] for o in outcomes if o.decisions for t in o.answered
        ),
        "stats": stats,
        "errors": errors,
        "waits": [w for o in outcomes for w in o.waits],
        "decisions": [d for o in outcomes for d in o.decisions],
    }


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def _report(result: dict[str, Any]) -> None:
    scenario: Scenario = result["scenario"]
    stats = result["stats"]
    share = result["rate"] / result["limit"]
    verdict = ""
    if scenario.mode == "gateway":
        target = TARGETS.get(scenario.jitter_ms, 0.90)
        ok = stats.throttled == 0 and share >= target
        verdict = f"{'ok' if ok else 'MISSED'} (target 0 throttled, >= {target:.0%})"
    print(
        f"{scenario.name:<12}{scenario.description:<40}{result['rate']:>7.2f}/s of "
        f"{result['limit']:>2}/s {share:>6.1%}  throttled {stats.throttled:>5}  "
        f"max in 1 s: {stats.max_arrivals_per_second:>3} arrived, "
        f"{stats.max_accepted_per_second:>2} accepted  {verdict}"
    )
    if result["errors"]:
        print(f"{'':<12}errors: {result['errors']}")
    decisions = result["decisions"]
    if decisions:
        store = os.environ.get("CC_QUOTA_STORE", "").rsplit(".", 1)[-1]
        print(
            f"{'':<12}quota_reserve in the gateway ({store}): {len(decisions)} asks for "
            f"{result['calls']} calls ({len(decisions) / max(result['calls'], 1):.1f} per call), "
            f"p50 {_percentile(decisions, 0.5) * 1000:.2f} ms, "
            f"p99 {_percentile(decisions, 0.99) * 1000:.2f} ms"
        )
    if scenario.mode == "interactive":
        waits = result["waits"]
        if waits:
            print(
                f"{'':<12}interactive wait for a slot over {len(waits)} calls: "
                f"p50 {_percentile(waits, 0.5) * 1000:.0f} ms, "
                f"p95 {_percentile(waits, 0.95) * 1000:.0f} ms, max {max(waits) * 1000:.0f} ms"
            )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="measured run per scenario")
    parser.add_argument("--processes", type=int, default=8)
    parser.add_argument("--scenarios", default=",".join(s.name for s in SCENARIOS))
    parser.add_argument(
        "--store",
        choices=["database", "redis"],
        default="database",
        help="the quota ledger: the SQLite database, or Redis at --redis-url",
    )
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/14")
    options = parser.parse_args()
    by_name = {s.name: s for s in SCENARIOS}
    chosen = [by_name[n] for n in options.scenarios.split(",") if n in by_name]
    if not chosen:
        parser.error(f"no known scenario; choose from {[s.name for s in SCENARIOS]}")

    from integrations.sandbox.process import start_sandbox

    var_dir = tempfile.mkdtemp(prefix="ccportal-bench-utilisation-")
    with start_sandbox(port=0) as sandbox_process:
        sandbox = sandbox_process.control
        env = portal_environment(var_dir, sandbox_url=sandbox_process.url)
        if options.store == "redis":
            env.update(
                CC_QUOTA_STORE="integrations.services.quota_stores.RedisStore",
                REDIS_URL=options.redis_url,
                # A prefix of its own: this run's ledger never meets an earlier run's.
                CC_QUOTA_REDIS_PREFIX=f"ccportal-bench:{os.getpid()}-{time.time_ns()}:",
            )
        portal_ready(env)
        from django.conf import settings

        print(
            f"{options.processes} processes on one key, {options.seconds:g} s per scenario, "
            f"{os.cpu_count()} CPUs, quota margin {getattr(settings, 'CC_QUOTA_MARGIN', 0.05)}, "
            f"ledger {settings.CC_QUOTA_STORE.rsplit('.', 1)[-1]}, "
            f"sandbox {sandbox_process.url} (loopback)"
        )
        context = multiprocessing.get_context("spawn")
        try:
            with context.Pool(options.processes, initializer=_init) as pool:
                pids: set[int] = set()
                while len(pids) < options.processes:
                    pids.update(pool.map(_pid_after, [0.2] * options.processes, chunksize=1))
                for scenario in chosen:
                    _report(_scenario(pool, sandbox, scenario, options))
        finally:
            sandbox.clear_faults()
            shutil.rmtree(var_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

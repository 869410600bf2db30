"""How a key's calls are shared between the accounts connected through it.

    .venv/bin/python bench/bench_fair_share.py [--seconds 60] [--store database|redis]
                                    [--scenarios fair,fcfs,weights,cap,tokens,interactive]

Everything runs on loopback: the sandbox (started here) stands in for CC and delays every
arrival by 0-20 ms; a throw-away SQLite database holds the portal's keys and accounts (and the
quota ledger, unless ``--store redis``). Every caller is a real OS process calling
``GET /contact_lists`` through ``cc_call`` on the background lane, back to back, for its
account. Scenarios (each on a fresh standard key, 4 calls/s):

* ``fair``: ten accounts. Account A runs 16 callers and a bulk list sync (a 2,000-member list
  with 10% churn, planned and run as a worker runs it); accounts B-J one caller each.
* ``fcfs``: the same, served first come, first served (``CC_QUOTA_FAIR_SHARE=false``, the rule
  before fair share): the baseline.
* ``weights``: two accounts of weights 1 and 3, four callers each.
* ``cap``: an account capped at 100 calls a day (weight 3, eight callers) and an uncapped one
  (four callers).
* ``tokens``: account A reached through two portal tokens of the proxy (``cc_forward``, as the
  proxy sends), eight callers on token X and one on token Y, plus one caller of A's own; account
  B one caller. B keeps half the key and A's half is split between its three flows.
* ``interactive``: the proxy's default lane, each call bounded by its 5 s maximum wait. Account
  A's token X floods it (40 calls in flight, each asking again after the Retry-After it is
  told), A's token Y and account B's token Z have one caller each; then the same first come,
  first served. The quiet two keep their share instead of being told 429 behind a bound the
  flood filled.

Printed: each account's calls/s answered over the measured window (the first second is
warm-up), Jain's fairness index over the backlogged accounts, the key's utilisation against
its 4/s, the throttled 429s the sandbox answered, and the p50/p95 slot wait of the one-caller
accounts (from the call log). Targets: Jain >= 0.98; each one-caller account >= 90% of its
fair share; utilisation >= 95%; 0 throttled; weights ratio within 10% of 3; the cap never
exceeded; on the interactive lane each quiet flow >= 75% of its fair share.
"""

from __future__ import annotations

import argparse
import datetime as dt
import multiprocessing
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from benchenv import REPO, portal_environment, portal_ready

sys.path.insert(0, str(REPO))

REDIRECT_URI = "http://127.0.0.1:8000/accounts/callback/"
SECRET = "bench-secret"
WARM_UP_SECONDS = 1.0
JITTER_MS = 20
SYNC_MEMBERS = 2_000
SYNC_CHURN = 200
CAP = 100


@dataclass
class Caller:
    account_id: int
    token_id: int = 0
    answered: list[float] = field(default_factory=list)
    capped: int = 0
    busy: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    sync: dict[str, Any] = field(default_factory=dict)


# --- inside the spawned processes -----------------------------------------------------------


def _init() -> None:
    import django

    django.setup()


def _sleep_until(moment: float) -> None:
    delay = moment - time.time()
    if delay > 0:
        time.sleep(delay)


def _apply(job: dict[str, Any]) -> Any:
    from django.test import override_settings

    from integrations.models import ConnectedAccount

    override_settings(CC_QUOTA_FAIR_SHARE=job["fair"]).enable()
    return ConnectedAccount.objects.select_related("api_key").get(pk=job["account_id"])


def _call(job: dict[str, Any]) -> Caller:
    """Call back to back until ``until``: through ``cc_call``, or as the proxy sends for
    ``token_id`` (on ``lane``, from ``threads`` threads at once). A call told the key is busy
    asks again after its Retry-After, as a CC client told 429 does."""
    import threading

    from django.db import connection

    from integrations.constant_contact.errors import CCError
    from integrations.services.gateway import cc_call
    from integrations.services.quota import AccountCapReached, QuotaBusy

    account = _apply(job)
    token_id = job.get("token_id", 0)
    lane = job.get("lane", "background")
    caller = Caller(account.pk, token_id)
    lock = threading.Lock()

    def loop() -> None:
        while time.time() < job["until"]:
            try:
                if token_id:
                    _forward(account, token_id, lane=lane)
                else:
                    cc_call(account=account, method="GET", path="/contact_lists", lane=lane)
                with lock:
                    caller.answered.append(time.time())
            except QuotaBusy as busy:
                with lock:
                    caller.busy += 1
                time.sleep(busy.retry_after)
            except AccountCapReached:
                with lock:
                    caller.capped += 1
                break
            except CCError as exc:
                with lock:
                    name = type(exc).__name__
                    caller.errors[name] = caller.errors.get(name, 0) + 1
        connection.close()

    _sleep_until(job["start"])
    threads = [threading.Thread(target=loop) for _ in range(job.get("threads", 1))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return caller


def _forward(account, token_id: int, *, lane: str) -> None:
    """One call as the proxy sends it for a portal token (its answer read and released),
    bounded by the proxy's maximum wait for the lane."""
    from integrations import conf
    from integrations.services.gateway import cc_forward

    exchange = cc_forward(
        account=account,
        method="GET",
        path="/contact_lists",
        body=None,
        content_type=None,
        accept="application/json",
        lane=lane,
        max_wait=conf.proxy_max_wait(lane) if lane == "interactive" else 600.0,
        proxy_token_id=token_id,
    )
    exchange.response.close()
    if exchange.error is not None:
        raise exchange.error


def _sync(job: dict[str, Any]) -> Caller:
    """Plan and run one list sync for the account, as a worker runs it."""
    from integrations.models import ApiCall, JobState
    from integrations.services import bulk_jobs, bulk_runner

    account = _apply(job)
    caller = Caller(account.pk)
    rows = ["email_address"] + [
        f"member{n}@example.com" for n in range(SYNC_CHURN + 1, SYNC_MEMBERS + SYNC_CHURN + 1)
    ]
    _sleep_until(job["start"] + 2.0)
    began = time.time()
    created = bulk_jobs.bulk_job_create(
        account=account,
        list_id=job["list_id"],
        list_name="Members",
        csv_chunks=iter([("\n".join(rows) + "\n").encode()]),
    )
    bulk_runner.bulk_job_advance(job_id=created.pk, max_inline_wait=job["until"] - time.time())
    created.refresh_from_db()
    if created.state == JobState.PLANNED:
        bulk_jobs.bulk_job_approve(allow_removals=True, job=created)
        bulk_runner.bulk_job_advance(
            job_id=created.pk, max_inline_wait=max(job["until"] - time.time(), 1.0)
        )
    created.refresh_from_db()
    calls = ApiCall.objects.filter(bulk_job=created, status_code__lt=300)
    caller.answered = [c.created_at.timestamp() for c in calls]
    caller.sync = {"state": created.state, "seconds": time.time() - began, "calls": len(calls)}
    return caller


def _run(job: dict[str, Any]) -> Caller:
    return (_sync if job.get("sync") else _call)(job)


def _pid_after(seconds: float) -> int:
    time.sleep(seconds)
    return os.getpid()


# --- in this process ------------------------------------------------------------------------


def _key_with_accounts(sandbox, name: str, count: int) -> tuple[str, list[int], Any]:
    """A standard key with ``count`` connected accounts (tokens minted by the sandbox); the
    first account's CC side has a list of SYNC_MEMBERS members. Returns the client_id, the
    account ids and that list."""
    from django.utils import timezone

    from integrations.models import AccountStatus, ConnectedAccount
    from integrations.services.keys import api_key_create

    client_id = f"bench-fair-{name}-{os.getpid()}-{time.monotonic_ns()}"
    sandbox.register_client(client_id, redirect_uris=[REDIRECT_URI], client_secret=SECRET)
    api_key = api_key_create(
        name=f"Benchmark {name}",
        client_id=client_id,
        client_secret=SECRET,
        redirect_uri=REDIRECT_URI,
    )
    ids, members = [], None
    for n in range(count):
        owner = sandbox.create_account(f"{client_id}-{n}@example.com", name=f"Account {n}")
        if n == 0:
            members = sandbox.seed_list(owner, "Members")
            sandbox.seed_contacts(
                owner,
                count=SYNC_MEMBERS,
                list_ids=[members.list_id],
                email_template="member{n}@example.com",
            )
        tokens = sandbox.mint_tokens(client_id, account=owner)
        account = ConnectedAccount.objects.create(
            api_key=api_key,
            cc_user_id=owner.sub,
            label=f"{chr(ord('A') + n)} ({owner.email})",
            access_token=tokens["access_token"],
            refresh_token=tokens["refresh_token"],
            access_expires_at=timezone.now() + dt.timedelta(seconds=tokens["expires_in"]),
            scopes=tokens["scope"].split(),
            status=AccountStatus.ACTIVE,
            token_version=1,
        )
        ids.append(account.pk)
    return client_id, ids, members


def _jain(values: list[float]) -> float:
    total, squares = sum(values), sum(v * v for v in values)
    return total * total / (len(values) * squares) if squares else 1.0


def _percentile(values: list[int], share: float) -> int:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))] if ordered else 0


@dataclass
class Run:
    name: str
    client_id: str
    ids: list[int]
    callers: list[Caller]
    window: tuple[float, float]
    throttled: int
    names: dict[int, str]

    def rates(self, *, by_token: bool = False) -> dict[Any, float]:
        """Calls/s answered in the window per account, or per (account, token) flow."""
        seconds = self.window[1] - self.window[0]
        counts: dict[Any, int] = {} if by_token else dict.fromkeys(self.ids, 0)
        for caller in self.callers:
            flow = (caller.account_id, caller.token_id) if by_token else caller.account_id
            counts[flow] = counts.get(flow, 0) + sum(
                self.window[0] <= t <= self.window[1] for t in caller.answered
            )
        return {flow: n / seconds for flow, n in counts.items()}


def _race(pool, sandbox, name: str, plan: list[dict[str, Any]], *, ids, client_id, fair, seconds):
    from integrations.models import ConnectedAccount

    start = time.time() + 1.5
    until = start + seconds
    jobs = [{"fair": fair, "start": start, "until": until, **job} for job in plan]
    callers = pool.map(_run, jobs, chunksize=1)
    names = dict(ConnectedAccount.objects.filter(pk__in=ids).values_list("pk", "label"))
    return Run(
        name=name,
        client_id=client_id,
        ids=ids,
        callers=callers,
        window=(start + WARM_UP_SECONDS, until),
        throttled=sandbox.stats(client_id).throttled,
        names={pk: label.split(" ")[0] for pk, label in names.items()},
    )


def _ten_accounts(pool, sandbox, options, *, fair: bool) -> Run:
    name = "fair" if fair else "fcfs"
    client_id, ids, members = _key_with_accounts(sandbox, name, 10)
    plan = [{"account_id": ids[0]} for _ in range(16)]
    plan.append({"account_id": ids[0], "sync": True, "list_id": members.list_id})
    plan += [{"account_id": account} for account in ids[1:]]
    return _race(
        pool, sandbox, name, plan, ids=ids, client_id=client_id, fair=fair, seconds=options.seconds
    )


def _report_ten(run: Run, *, fair: bool) -> list[str]:
    from integrations.models import ApiCall

    rates = run.rates()
    total = sum(rates.values())
    fair_share = total / len(rates)
    one_caller = run.ids[1:]
    lowest = min(rates[a] for a in one_caller)
    index = _jain(list(rates.values()))
    utilisation = total / 4
    waits = list(
        ApiCall.objects.filter(
            account_id__in=one_caller,
            created_at__gte=dt.datetime.fromtimestamp(run.window[0], dt.UTC),
            status_code__lt=300,
        ).values_list("slot_wait_ms", flat=True)
    )
    sync = next(c.sync for c in run.callers if c.sync)
    title = "fair share" if fair else "first come, first served (baseline)"
    print(f"\n{run.name}: ten accounts on one standard key, {title}")
    print("  " + "  ".join(f"{run.names[a]} {rates[a]:.2f}/s" for a in run.ids))
    print(
        f"  A (16 callers + sync) {rates[run.ids[0]]:.2f}/s; one-caller accounts "
        f"{lowest:.2f}-{max(rates[a] for a in one_caller):.2f}/s, lowest "
        f"{lowest / fair_share:.0%} of a fair share ({fair_share:.2f}/s)"
    )
    print(
        f"  Jain's index {index:.3f}; key {total:.2f}/s of 4/s ({utilisation:.1%}); "
        f"throttled {run.throttled}; one-caller slot wait p50 {_percentile(waits, 0.5)} ms, "
        f"p95 {_percentile(waits, 0.95)} ms ({len(waits)} calls)"
    )
    print(
        f"  A's sync: {sync.get('state')} in {sync.get('seconds', 0):.0f} s, "
        f"{sync.get('calls', 0)} calls"
    )
    if not fair:
        return []
    missed = []
    if index < 0.98:
        missed.append(f"Jain's index {index:.3f} < 0.98")
    if lowest < 0.9 * fair_share:
        missed.append(f"a one-caller account got {lowest / fair_share:.0%} of its share")
    if utilisation < 0.95:
        missed.append(f"utilisation {utilisation:.1%} < 95%")
    if run.throttled:
        missed.append(f"{run.throttled} throttled 429s")
    return missed


def _weights(pool, sandbox, options) -> list[str]:
    from integrations.models import ConnectedAccount

    client_id, ids, _ = _key_with_accounts(sandbox, "weights", 2)
    ConnectedAccount.objects.filter(pk=ids[1]).update(share_weight=3)
    plan = [{"account_id": account} for account in ids for _ in range(4)]
    seconds = max(options.seconds / 2, 10)
    run = _race(
        pool, sandbox, "weights", plan, ids=ids, client_id=client_id, fair=True, seconds=seconds
    )
    rates = run.rates()
    ratio = rates[ids[1]] / rates[ids[0]] if rates[ids[0]] else float("inf")
    total = sum(rates.values())
    print(f"\nweights: two accounts of weights 1 and 3, four callers each, {seconds:g} s")
    print(
        f"  weight 1: {rates[ids[0]]:.2f}/s, weight 3: {rates[ids[1]]:.2f}/s, ratio {ratio:.2f} "
        f"(target 3 ± 10%); key {total:.2f}/s ({total / 4:.1%}); throttled {run.throttled}"
    )
    missed = [] if 2.7 <= ratio <= 3.3 else [f"weights ratio {ratio:.2f}"]
    return missed + ([f"{run.throttled} throttled 429s"] if run.throttled else [])


def _cap(pool, sandbox, options) -> list[str]:
    from integrations.models import ConnectedAccount
    from integrations.services.quota import quota_account_usage

    client_id, ids, _ = _key_with_accounts(sandbox, "cap", 2)
    ConnectedAccount.objects.filter(pk=ids[0]).update(share_weight=3, daily_cap=CAP)
    plan = [{"account_id": ids[0]} for _ in range(8)] + [{"account_id": ids[1]}] * 4
    seconds = 50.0  # the capped account's three quarters of the key spend 100 calls in ~35 s
    run = _race(
        pool, sandbox, "cap", plan, ids=ids, client_id=client_id, fair=True, seconds=seconds
    )
    answered = {
        account: sum(len(c.answered) for c in run.callers if c.account_id == account)
        for account in ids
    }
    told = sum(c.capped for c in run.callers if c.account_id == ids[0])
    api_key = ConnectedAccount.objects.get(pk=ids[0]).api_key
    booked = quota_account_usage(api_key=api_key)[ids[0]]["booked"]
    at_cc = sandbox.stats(client_id).requests
    print(
        f"\ncap: an account capped at {CAP} calls/day (8 callers) and an uncapped one, {seconds:g} s"
    )
    print(
        f"  capped account: {answered[ids[0]]} calls answered, {booked} booked, {told} of its "
        f"8 callers told the cap is reached; uncapped: {answered[ids[1]]} calls; "
        f"CC saw {at_cc} calls; throttled {run.throttled}"
    )
    capped_at = max(
        (t for c in run.callers if c.account_id == ids[0] for t in c.answered), default=0
    )
    after = [t for c in run.callers if c.account_id == ids[1] for t in c.answered if t > capped_at]
    tail = run.window[1] - capped_at
    if told:
        print(
            f"  the cap was reached {capped_at - run.window[0] + WARM_UP_SECONDS:.0f} s in; "
            f"the uncapped account then had the key: {len(after) / max(tail, 1e-9):.2f}/s"
        )
    missed = [] if answered[ids[0]] <= CAP and booked <= CAP else ["the cap was exceeded"]
    if told != 8:
        missed.append(f"only {told} of the capped account's 8 callers reached the cap")
    return missed + ([f"{run.throttled} throttled 429s"] if run.throttled else [])


def _tokens(pool, sandbox, options) -> list[str]:
    from integrations.models import ConnectedAccount
    from integrations.services.proxy_tokens import proxy_token_create

    client_id, (a, b), _ = _key_with_accounts(sandbox, "tokens", 2)
    account_a = ConnectedAccount.objects.get(pk=a)
    x = proxy_token_create(name=f"{client_id}-x", accounts=[account_a])[0].pk
    y = proxy_token_create(name=f"{client_id}-y", accounts=[account_a])[0].pk
    plan = [{"account_id": a, "token_id": x} for _ in range(8)]
    plan += [{"account_id": a, "token_id": y}, {"account_id": a}, {"account_id": b}]
    run = _race(
        pool,
        sandbox,
        "tokens",
        plan,
        ids=[a, b],
        client_id=client_id,
        fair=True,
        seconds=options.seconds,
    )
    flows = {
        "A via token X (8 callers)": ((a, x), 1 / 6),
        "A via token Y (1 caller)": ((a, y), 1 / 6),
        "A's own calls (1 caller)": ((a, 0), 1 / 6),
        "B (1 caller)": ((b, 0), 1 / 2),
    }
    print(
        f"\ntokens: account A through two portal tokens and its own calls, account B, "
        f"{options.seconds:g} s"
    )
    return _flow_report(run, flows, floor=0.9, indent="  ", width=27)


def _flow_report(
    run: Run,
    flows: dict[str, tuple[tuple[int, int], float]],
    *,
    floor: float,
    indent: str,
    width: int,
    told: bool = False,
    judged: Iterable[str] | None = None,
) -> list[str]:
    """Print each flow's rate and part of the key against its fair share (``flows``: label ->
    ((account, token), share)), then the key's; ``told`` adds how often each flow was told
    429. Returns what missed: a flow in ``judged`` (default: all) under ``floor`` of its
    share, the key under 95%, a throttled call."""
    by_flow = run.rates(by_token=True)
    rates = {label: by_flow.get(flow, 0.0) for label, (flow, _) in flows.items()}
    total = sum(rates.values())
    for label, rate in rates.items():
        flow, share = flows[label]
        busy = sum(c.busy for c in run.callers if (c.account_id, c.token_id) == flow)
        print(
            f"{indent}{label:{width}s} {rate:.2f}/s = {rate / total:.1%} of the key (fair: "
            f"{share:.1%})" + (f"; told 429 {busy} times" if told else "")
        )
    print(f"{indent}key {total:.2f}/s ({total / 4:.1%} of 4/s); throttled {run.throttled}")
    missed = [
        f"{label} got {rates[label] / total:.1%} < {floor:.0%} of {share:.1%}"
        for label, (_, share) in flows.items()
        if label in (flows if judged is None else judged) and rates[label] / total < floor * share
    ]
    if total / 4 < 0.95:
        missed.append(f"utilisation {total / 4:.1%} < 95%")
    return missed + ([f"{run.throttled} throttled 429s"] if run.throttled else [])


def _interactive(pool, sandbox, options) -> list[str]:
    from integrations import conf
    from integrations.models import ConnectedAccount
    from integrations.services.proxy_tokens import proxy_token_create

    missed: list[str] = []
    print(
        f"\ninteractive: proxied calls on the interactive lane, each bounded by "
        f"{conf.proxy_max_wait('interactive'):g} s, {options.seconds:g} s each"
    )
    for fair in (True, False):
        name = "interactive" if fair else "interactive-fcfs"
        client_id, (a, b), _ = _key_with_accounts(sandbox, name, 2)
        account_a, account_b = ConnectedAccount.objects.filter(pk__in=(a, b)).order_by("pk")
        x, y, z = (
            proxy_token_create(name=f"{client_id}-{t}", accounts=[account])[0].pk
            for t, account in (("x", account_a), ("y", account_a), ("z", account_b))
        )
        plan = [
            {"account_id": a, "token_id": x, "lane": "interactive", "threads": 20},
            {"account_id": a, "token_id": x, "lane": "interactive", "threads": 20},
            {"account_id": a, "token_id": y, "lane": "interactive"},
            {"account_id": b, "token_id": z, "lane": "interactive"},
        ]
        run = _race(
            pool,
            sandbox,
            name,
            plan,
            ids=[a, b],
            client_id=client_id,
            fair=fair,
            seconds=options.seconds,
        )
        flows = {
            "A via token X (40 in flight)": ((a, x), 1 / 4),
            "A via token Y (1 caller)": ((a, y), 1 / 4),
            "B via token Z (1 caller)": ((b, z), 1 / 2),
        }
        print(f"  {'fair share' if fair else 'first come, first served'}:")
        missing = _flow_report(
            run,
            flows,
            floor=0.75,
            indent="    ",
            width=29,
            told=True,
            judged=["A via token Y (1 caller)", "B via token Z (1 caller)"],
        )
        if fair:
            missed += [f"interactive: {line}" for line in missing]
    return missed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="measured run of fair/fcfs")
    parser.add_argument("--store", choices=["database", "redis"], default="database")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/14")
    parser.add_argument("--scenarios", default="fair,fcfs,weights,cap,tokens,interactive")
    options = parser.parse_args()
    chosen = [s.strip() for s in options.scenarios.split(",") if s.strip()]

    from integrations.sandbox.process import start_sandbox

    var_dir = tempfile.mkdtemp(prefix="ccportal-bench-fair-")
    missed: list[str] = []
    with start_sandbox(port=0) as sandbox_process:
        sandbox = sandbox_process.control
        env = portal_environment(var_dir, sandbox_url=sandbox_process.url)
        if options.store == "redis":
            env.update(
                CC_QUOTA_STORE="integrations.services.quota_stores.RedisStore",
                REDIS_URL=options.redis_url,
                CC_QUOTA_REDIS_PREFIX=f"ccportal-bench:{os.getpid()}-{time.time_ns()}:",
            )
        portal_ready(env)
        from django.conf import settings

        sandbox.set_jitter(0, JITTER_MS)
        print(
            f"Fair share: callers as real processes, {os.cpu_count()} CPUs, ledger "
            f"{settings.CC_QUOTA_STORE.rsplit('.', 1)[-1]}, sandbox jitter 0-{JITTER_MS} ms"
        )
        context = multiprocessing.get_context("spawn")
        processes = 26
        try:
            with context.Pool(processes, initializer=_init) as pool:
                ready: set[int] = set()
                while len(ready) < processes:
                    ready.update(pool.map(_pid_after, [0.3] * processes, chunksize=1))
                if "fair" in chosen:
                    missed += _report_ten(
                        _ten_accounts(pool, sandbox, options, fair=True), fair=True
                    )
                if "fcfs" in chosen:
                    _report_ten(_ten_accounts(pool, sandbox, options, fair=False), fair=False)
                if "weights" in chosen:
                    missed += _weights(pool, sandbox, options)
                if "cap" in chosen:
                    missed += _cap(pool, sandbox, options)
                if "tokens" in chosen:
                    missed += _tokens(pool, sandbox, options)
                if "interactive" in chosen:
                    missed += _interactive(pool, sandbox, options)
        finally:
            sandbox.clear_faults()
            shutil.rmtree(var_dir, ignore_errors=True)
    print("\nall targets met" if not missed else "\nMISSED: " + "; ".join(missed))
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())

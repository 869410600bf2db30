"""Benchmark: how many API requests per second the local CC sandbox serves over loopback.

    .venv/bin/python bench/bench_sandbox.py [--seconds 5] [--processes 4] [--threads 2]

Starts the sandbox on a free port (``manage.py run_sandbox --port 0``), registers a client
with its limits raised out of the way, seeds an account, then drives it from several client
processes, each with a few threads holding HTTP/1.1 keep-alive connections, for a bounded time.
Requests mix list reads, a small contacts page and single-list reads, all with a bearer JWT that
the sandbox verifies. Prints requests/s and p50/p99 latency, and checks that the sandbox's own
stats counted exactly the requests sent.
"""

from __future__ import annotations

import argparse
import http.client
import multiprocessing
import statistics
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from integrations.sandbox.process import start_sandbox

CLIENT_ID = "bench-client"


def _worker(url: str, token: str, paths: list[str], seconds: float, threads: int, results) -> None:
    parts = urlsplit(url)
    began = time.monotonic()  # system-wide on Linux, so comparable across processes
    deadline = began + seconds
    latencies: list[float] = []
    failures = [0]
    lock = threading.Lock()

    def run(offset: int) -> None:
        connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
        headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
        mine: list[float] = []
        bad = 0
        i = offset
        while time.monotonic() < deadline:
            path = paths[i % len(paths)]
            i += 1
            started = time.perf_counter()
            connection.request("GET", path, headers=headers)
            response = connection.getresponse()
            response.read()
            mine.append(time.perf_counter() - started)
            if response.status != 200:
                bad += 1
        connection.close()
        with lock:
            latencies.extend(mine)
            failures[0] += bad

    workers = [threading.Thread(target=run, args=(n,)) for n in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    results.put((latencies, failures[0], began, time.monotonic()))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    with start_sandbox(port=0) as sandbox:
        control = sandbox.control
        control.register_client(
            CLIENT_ID,
            client_secret="bench-secret",
            redirect_uris=["http://127.0.0.1:8000/accounts/callback/"],
            tier="custom",
            per_second=1_000_000,
            per_day=1_000_000_000,
        )
        account = control.create_account("bench@example.com")
        newsletter = control.seed_list(account, "Newsletter")
        control.seed_list(account, "Customers")
        control.seed_contacts(account, count=2_000, list_ids=[newsletter.list_id])
        token = control.mint_tokens(CLIENT_ID, account=account)["access_token"]
        paths = [
            "/v3/contact_lists",
            "/v3/contacts?limit=5",
            f"/v3/contact_lists/{newsletter.list_id}?include_membership_count=all",
            "/v3/contact_lists?include_count=true",
        ]

        context = multiprocessing.get_context("spawn")
        results = context.Queue()
        processes = [
            context.Process(
                target=_worker,
                args=(sandbox.url, token, paths, args.seconds, args.threads, results),
            )
            for _ in range(args.processes)
        ]
        for process in processes:
            process.start()
        latencies: list[float] = []
        failures = 0
        spans: list[tuple[float, float]] = []
        for _ in processes:
            mine, bad, began, ended = results.get(timeout=args.seconds + 60)
            latencies += mine
            failures += bad
            spans.append((began, ended))
        for process in processes:
            process.join()
        # From the first client starting to the last one finishing (process start-up excluded).
        elapsed = max(end for _, end in spans) - min(start for start, _ in spans)
        counted = control.stats(CLIENT_ID).requests

        # Seeding a big list is how every bulk benchmark and `make run` sets the sandbox up.
        big = control.create_account("big@example.com")
        big_list = control.seed_list(big, "Big")
        began_seed = time.monotonic()
        control.seed_contacts(big, count=100_000, list_ids=[big_list.list_id])
        seed_seconds = time.monotonic() - began_seed

    total = len(latencies)
    cuts = statistics.quantiles(latencies, n=100) if total > 1 else [0.0] * 99
    print(
        f"sandbox: {total / elapsed:,.0f} requests/s over loopback "
        f"({total:,} requests in {elapsed:.1f} s; {args.processes} processes x "
        f"{args.threads} keep-alive connections); "
        f"p50 {cuts[49] * 1000:.2f} ms, p99 {cuts[98] * 1000:.2f} ms; "
        f"non-200: {failures}; sandbox counted {counted:,}"
    )
    print(f"sandbox: 100,000 contacts seeded into a list in {seed_seconds:.2f} s (target 5 s)")
    if counted != total or failures:
        print("FAILED: the sandbox's count differs from the requests sent, or some failed.")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

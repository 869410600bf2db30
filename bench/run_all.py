"""Run every benchmark in turn and print their figures (``make bench``).

Each benchmark starts what it needs (a sandbox on a free loopback port, a temporary database)
and stops by itself. Pass ``--quick`` for a short smoke run of each.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHMARKS = [
    ("sandbox throughput", "bench_sandbox.py", []),
    ("quota decision overhead", "bench_quota_overhead.py", []),
    ("token refresh storm", "bench_refresh_storm.py", []),
    ("key utilisation", "bench_utilisation.py", []),
    (
        "key utilisation, Redis ledger",
        "bench_utilisation.py",
        ["--store", "redis", "--scenarios", "std-j20,partner-j20"],
    ),
    ("fair share between accounts", "bench_fair_share.py", []),
    ("compressed day", "bench_compressed_day.py", []),
    ("bulk list sync", "bench_bulk_sync.py", []),
    ("dashboard and call log, 1,000,000 calls", "bench_dashboard.py", []),
    ("the proxy: 8 clients, two gunicorn hosts", "bench_proxy.py", []),
]
QUICK = {
    "bench_utilisation.py": ["--seconds", "10"],
    "bench_quota_overhead.py": ["--seconds", "2", "--cc-seconds", "5"],
    "bench_fair_share.py": ["--seconds", "15"],
    "bench_proxy.py": ["--seconds", "15", "--samples", "20"],
}


def main() -> int:
    quick = "--quick" in sys.argv[1:]
    failures = 0
    for title, script, args in BENCHMARKS:
        path = HERE / script
        if not path.exists():
            continue
        extra = QUICK.get(script, []) if quick else []
        print(f"\n=== {title} ({script}) ===", flush=True)
        result = subprocess.run([sys.executable, str(path), *args, *extra], cwd=HERE.parent)
        failures += result.returncode != 0
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())

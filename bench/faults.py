"""The fault suite: real processes against the sandbox, one row per fault.

    .venv/bin/python bench/faults.py [--quick] [--json] [--only NAME ...] [--seed N] [--list]

Starts a sandbox process and a throw-away portal (SQLite in a temporary folder, removed at the
end), then for each fault: its own API key, CC account and list; real ``db_worker`` and
client processes; the fault injected for real (by the sandbox, by SIGKILL, by a TCP proxy
in front of Redis, by a process holding SQLite's write lock, by a key rotation). Each row:

* ``injected`` — faults that really happened: the sandbox's own counters for what it
  injected; the suite's count where the sandbox cannot see the fault (kills, Redis refusals,
  SQLite locks, the rotation);
* ``lost`` — desired members missing plus unwanted members present in the sandbox's final
  list (and, for the token rows, accounts lost or secrets unreadable);
* ``duplicated`` — imports or membership changes the sandbox applied twice (its record of
  applied activities, compared by content);
* ``extra calls`` — calls beyond the fault-free baseline of the same scenario (informational);
* ``un-injected 429s`` — 429s the sandbox answered that no fault asked for.

Lost, duplicated and un-injected 429s must be 0, and injected more than 0, in every row; the
exit status is 1 otherwise, naming the row. ``--quick`` shortens outages and sizes.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from faults_support.scenarios import Row, all_scenarios, baseline
from faults_support.world import World

COLUMNS = ("fault", "injected", "lost", "duplicated", "extra calls", "un-injected 429s", "end")


def _cells(row: Row) -> list[str]:
    if row.skipped:
        return [row.fault, "-", "-", "-", "-", "-", row.skipped]
    extra = "-" if row.extra_calls is None else f"{row.extra_calls:+d}"
    return [
        row.fault,
        str(row.injected),
        str(row.lost),
        str(row.duplicated),
        extra,
        str(row.uninjected_429),
        row.outcome + ("" if row.ok else "  << BROKE"),
    ]


def table(rows: list[Row]) -> str:
    cells = [list(COLUMNS)] + [_cells(row) for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(COLUMNS))]
    lines = []
    for n, line in enumerate(cells):
        lines.append(" | ".join(cell.ljust(widths[i]) for i, cell in enumerate(line)).rstrip())
        if n == 0:
            lines.append("-+-".join("-" * w for w in widths))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short outages and sizes")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON too")
    parser.add_argument("--only", nargs="*", help="run only these faults (names below)")
    parser.add_argument("--seed", type=int, default=None, help="seed of the random kills")
    parser.add_argument("--list", action="store_true", help="print the fault names and stop")
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.randrange(1_000_000)
    chosen = all_scenarios(seed)
    if args.list:
        print("\n".join(name for name, _ in chosen))
        return 0
    if args.only:
        unknown = set(args.only) - {name for name, _ in chosen}
        if unknown:
            parser.error(f"unknown faults {sorted(unknown)}; pick from {[n for n, _ in chosen]}")
        chosen = [(name, run) for name, run in chosen if name in args.only]

    started = time.monotonic()
    world = World(quick=args.quick)
    rows: list[Row] = []
    try:
        for name, run in [("baseline", baseline), *chosen]:
            began = time.monotonic()
            try:
                row = run(world)
            except Exception as exc:
                traceback.print_exc()
                row = Row(name, problems=[f"the scenario crashed: {type(exc).__name__}: {exc}"])
            rows.append(row)
            print(
                f"  {row.fault}: {'ok' if row.ok else 'BROKE'} ({time.monotonic() - began:.0f} s)"
            )
    finally:
        world.close()

    mode = "quick" if args.quick else "full"
    print(f"\nFault suite ({mode} mode, seed {seed}, {time.monotonic() - started:.0f} s)\n")
    print(table(rows))
    print()
    for row in rows:
        for note in filter(None, row.notes):
            print(f"  {row.fault}: {note}")
    broken = [row for row in rows if not row.ok]
    for row in broken:
        why = row.problems or [
            f"lost {row.lost}, duplicated {row.duplicated}, un-injected 429s "
            f"{row.uninjected_429}, injected {row.injected}"
        ]
        print(f"BROKE: {row.fault}: {'; '.join(why)}")
    if args.json:
        print(json.dumps({"mode": mode, "seed": seed, "rows": [r.as_dict() for r in rows]}))
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())

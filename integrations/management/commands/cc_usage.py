"""Per key: today's calls and remaining budget, last-minute utilisation, 429s, exhaustion forecast,
and each account's part of the key (calls, share, cap, weight, slot waits)."""

from __future__ import annotations

import json

from django.core.management.base import CommandError

from integrations import selectors
from integrations.management.base import PortalCommand
from integrations.models import ApiKey
from integrations.permissions import VIEW_PORTAL
from integrations.services.account_usage import account_usage_rows
from integrations.services.quota import QuotaStoreUnavailable


class Command(PortalCommand):
    help = "Show today's Constant Contact API usage per key."
    required_permission = VIEW_PORTAL

    def add_arguments(self, parser) -> None:
        parser.add_argument("--key", help="client id or numeric id of one key")
        parser.add_argument("--json", action="store_true", help="machine-readable output")

    def handle(self, *args, **options) -> None:
        keys = list(selectors.api_key_list())
        if options["key"]:
            key = selectors.api_key_find(ident=options["key"])
            if key is None:
                raise CommandError(f"no API key {options['key']!r} (see manage.py cc_key list).")
            keys = [key]
        summaries = [
            {**selectors.key_usage_summary(api_key=key), "accounts": self._accounts(key)}
            for key in keys
        ]
        if options["json"]:
            self.stdout.write(json.dumps(summaries, indent=2))
            return
        if not summaries:
            self.stdout.write("No API keys yet.")
        for s in summaries:
            self._print(s)

    def _accounts(self, key: ApiKey) -> list[dict] | None:
        """The key's per-account rows; None (and a line on stderr) when the ledger is down."""
        try:
            return account_usage_rows(key)
        except QuotaStoreUnavailable as exc:
            self.stderr.write(f"{key.name} ({key.client_id}): no per-account figures: {exc}")
            return None

    def _print(self, s: dict) -> None:
        forecast = s["exhausted_at"] or "not today at the current rate"
        self.stdout.write(
            f"{s['name']} ({s['key']}) — {s['tier']}, {s['per_second']}/s, {s['per_day']:,}/day"
        )
        self.stdout.write(
            f"  today        {s['calls_today']:,} calls, {s['remaining_today']:,} remaining (resets {s['resets_at']})"
        )
        self.stdout.write(
            f"  last minute  {s['calls_last_minute']} calls, {s['utilisation_last_minute']:.0%} of the per-second limit"
        )
        self.stdout.write(
            f"  429s today   {s['throttled_today']} throttled, {s['quota_429s_today']} quota"
        )
        self.stdout.write(
            f"  burn rate    {s['burn_rate_per_minute']:.1f}/min; budget exhausted: {forecast}"
        )
        self._print_accounts(s["accounts"])

    def _print_accounts(self, rows: list[dict] | None) -> None:
        if rows is None:
            self.stdout.write("  accounts     unavailable (the quota ledger does not answer)")
            return
        if not rows:
            self.stdout.write("  accounts     none connected")
            return
        table = [
            ("account", "calls today", "share", "cap", "weight", "wait p50/p95"),
            *(
                (
                    r["name"],
                    f"{r['calls_today']:,}",
                    f"{r['share']:.0%}",
                    _cap(r),
                    str(r["weight"]),
                    _waits(r),
                )
                for r in rows
            ),
        ]
        widths = [max(len(line[i]) for line in table) for i in range(len(table[0]))]
        self.stdout.write("  accounts")
        for line in table:
            # Names and caps read left to right; the counts line up on their last digit.
            cells = [
                cell.ljust(width) if column in (0, 3) else cell.rjust(width)
                for column, (cell, width) in enumerate(zip(line, widths, strict=True))
            ]
            self.stdout.write(f"    {'  '.join(cells)}".rstrip())


def _cap(row: dict) -> str:
    if row["cap"] is None:
        return "none"
    if row["cap_remaining"] == 0:
        return f"{row['cap']:,} (reached)"
    return f"{row['cap']:,} ({row['cap_remaining']:,} left)"


def _waits(row: dict) -> str:
    if row["slot_wait_p50_ms"] is None:
        return "—"
    return f"{row['slot_wait_p50_ms']:,} / {row['slot_wait_p95_ms']:,} ms"

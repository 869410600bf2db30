"""Per key: today's calls and remaining budget, last-minute utilisation, 429s, exhaustion forecast."""

from __future__ import annotations

import json

from django.core.management.base import CommandError

from integrations import selectors
from integrations.management.base import PortalCommand
from integrations.permissions import VIEW_PORTAL


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
        summaries = [selectors.key_usage_summary(api_key=key) for key in keys]
        if options["json"]:
            self.stdout.write(json.dumps(summaries, indent=2))
            return
        if not summaries:
            self.stdout.write("No API keys yet.")
        for s in summaries:
            self._print(s)

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

"""Show connected CC accounts and the state of their tokens; set an account's budget.

manage.py cc_accounts list
manage.py cc_accounts show ACCOUNT_ID
manage.py cc_accounts set-budget ACCOUNT_ID [--per-day N | --share 0.2 | --no-cap] [--weight W]
"""

from __future__ import annotations

import argparse
from typing import Any

from django.core.management.base import CommandError, CommandParser
from django.utils import timezone

from integrations import selectors
from integrations.management.base import PortalCommand
from integrations.models import ConnectedAccount
from integrations.permissions import OPERATE_PORTAL, VIEW_PORTAL
from integrations.services.budgets import (
    UNSET,
    account_budget_describe,
    account_budget_set,
)


def _expires_in(account: ConnectedAccount) -> str:
    remaining = account.access_expires_in()
    if remaining is None:
        return "no token"
    seconds = int(remaining.total_seconds())
    if seconds <= 0:
        return "expired"
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m"


def _idle(account: ConnectedAccount) -> str:
    days = account.refresh_token_idle_days(at=timezone.now())
    return "—" if days is None else f"{days}d"


def _cap(account: ConnectedAccount) -> str:
    """The CAP column: calls per UTC day, and the share of the key's day it came from."""
    cap = account.daily_cap_for(account.api_key.per_day)
    if cap is None:
        return "—"
    if account.daily_share is not None and (account.daily_cap is None or cap < account.daily_cap):
        return f"{cap:,}/day ({account.daily_share * 100:.4g}%)"
    return f"{cap:,}/day"


def _whole_number(value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number") from None


def _share(value: str) -> float:
    """A share of the key's day: 0.2, or 20%."""
    text = value.strip()
    try:
        return float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{value!r} is not a share: give a number such as 0.2, or 20%"
        ) from None


class Command(PortalCommand):
    help = "List connected Constant Contact accounts, show one, or set its budget."
    required_permission = VIEW_PORTAL

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        sub.add_parser("list", help="one line per account")
        show = sub.add_parser("show", help="everything about one account")
        show.add_argument("account_id", type=int)

        budget = sub.add_parser(
            "set-budget",
            help="set an account's weight and daily cap (takes effect within seconds)",
        )
        budget.add_argument("account_id", type=int)
        cap = budget.add_mutually_exclusive_group()
        cap.add_argument(
            "--per-day",
            type=_whole_number,
            metavar="N",
            help="cap the account at N calls per UTC day (clears a --share cap)",
        )
        cap.add_argument(
            "--share",
            type=_share,
            metavar="SHARE",
            help="cap the account at this share of the key's day, 0.2 or 20%% "
            "(clears a --per-day cap)",
        )
        cap.add_argument("--no-cap", action="store_true", help="remove both caps")
        budget.add_argument(
            "--weight",
            type=_whole_number,
            metavar="W",
            help="the account's weight in the key's fair share (1-1000)",
        )

    def permission_for(self, options: dict[str, Any]) -> str | None:
        return OPERATE_PORTAL if options.get("action") == "set-budget" else VIEW_PORTAL

    def handle(self, *args, **options) -> None:
        if options["action"] == "show":
            self._show(options["account_id"])
            return
        if options["action"] == "set-budget":
            self._set_budget(options)
            return
        accounts = list(selectors.account_list())
        if not accounts:
            self.stdout.write(
                "No connected accounts. Connect one in the portal (Accounts → Connect)."
            )
            return
        header = (
            f"{'ID':>4}  {'ACCOUNT':<48} {'KEY':<20} {'STATUS':<16} {'EXPIRES IN':<10} "
            f"{'REFRESH':<10} {'IDLE':<5} {'WEIGHT':>6}  CAP"
        )
        self.stdout.write(header)
        for a in accounts:
            self.stdout.write(
                f"{a.pk:>4}  {a.display_name[:48]:<48} {a.api_key.name[:20]:<20} {a.health().code:<16} "
                f"{_expires_in(a):<10} {a.refresh_mode:<10} {_idle(a):<5} {a.share_weight:>6}  "
                f"{_cap(a)}"
            )

    def _get(self, pk: int) -> ConnectedAccount:
        try:
            return selectors.account_list().get(pk=pk)
        except ConnectedAccount.DoesNotExist:
            raise CommandError(f"no connected account with id {pk}.") from None

    def _set_budget(self, options: dict[str, Any]) -> None:
        per_day, share, weight = options["per_day"], options["share"], options["weight"]
        if per_day is None and share is None and weight is None and not options["no_cap"]:
            raise CommandError("nothing to set: give --per-day, --share, --no-cap or --weight.")
        changes: dict[str, Any] = {}
        if options["no_cap"]:
            changes = {"per_day": None, "share": None}
        elif per_day is not None:
            changes = {"per_day": per_day, "share": None}
        elif share is not None:
            changes = {"per_day": None, "share": share}
        account = account_budget_set(
            account=self._get(options["account_id"]),
            weight=UNSET if weight is None else weight,
            actor=self.acting_user,
            **changes,
        )
        self.stdout.write(f"{account}: {account_budget_describe(account)}")

    def _show(self, pk: int) -> None:
        a = self._get(pk)
        rows = [
            ("account", a.display_name),
            ("organization", a.organization_name or "—"),
            ("login email", a.login_email or "—"),
            ("key", f"{a.api_key.name} ({a.api_key.client_id})"),
            ("status", _health_line(a)),
            ("needs reconnect", "yes" if a.needs_reconnect else "no"),
            ("cc user", a.cc_user_id or "—"),
            ("platform user", a.platform_user_id or "—"),
            ("scopes", " ".join(a.scopes or []) or "—"),
            ("access token expires in", _expires_in(a)),
            (
                "access token",
                f"fingerprint {a.access_token_fingerprint}"
                if a.access_token or a.tokens_unreadable
                else "none",
            ),
            ("refresh mode", a.get_refresh_mode_display()),
            ("refresh token idle", _idle(a)),
            ("token version", str(a.token_version)),
            ("budget", account_budget_describe(a)),
        ]
        width = max(len(label) for label, _ in rows)
        for label, value in rows:
            self.stdout.write(f"{label:<{width}}  {value}")
        if a.refresh_mode == "rotating":
            self.stdout.write(
                "hint: CC's long-lived refresh tokens are safer for a server-side app — a crash "
                "between CC rotating a token and ccportal storing it cannot then cost a reconnect."
            )


def _health_line(account: ConnectedAccount) -> str:
    health = account.health()
    return health.label + (f" — {health.reason}" if health.reason else "")

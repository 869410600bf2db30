"""Show connected CC accounts and the state of their tokens.

manage.py cc_accounts list
manage.py cc_accounts show ACCOUNT_ID
"""

from __future__ import annotations

from django.core.management.base import CommandError, CommandParser
from django.utils import timezone

from integrations import selectors
from integrations.management.base import PortalCommand
from integrations.models import ConnectedAccount
from integrations.permissions import VIEW_PORTAL


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


class Command(PortalCommand):
    help = "List connected Constant Contact accounts, or show one."
    required_permission = VIEW_PORTAL

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        sub.add_parser("list", help="one line per account")
        show = sub.add_parser("show", help="everything about one account")
        show.add_argument("account_id", type=int)

    def handle(self, *args, **options) -> None:
        if options["action"] == "show":
            self._show(options["account_id"])
            return
        accounts = list(selectors.account_list())
        if not accounts:
            self.stdout.write(
                "No connected accounts. Connect one in the portal (Accounts → Connect)."
            )
            return
        header = f"{'ID':>4}  {'ACCOUNT':<48} {'KEY':<20} {'STATUS':<16} {'EXPIRES IN':<10} {'REFRESH':<10} IDLE"
        self.stdout.write(header)
        for a in accounts:
            self.stdout.write(
                f"{a.pk:>4}  {a.display_name[:48]:<48} {a.api_key.name[:20]:<20} {a.health().code:<16} "
                f"{_expires_in(a):<10} {a.refresh_mode:<10} {_idle(a)}"
            )

    def _show(self, pk: int) -> None:
        try:
            a = selectors.account_list().get(pk=pk)
        except ConnectedAccount.DoesNotExist:
            raise CommandError(f"no connected account with id {pk}.") from None
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

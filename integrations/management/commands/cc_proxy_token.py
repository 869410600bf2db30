"""Portal tokens for the proxy: make one (shown once), list them, revoke one.

manage.py cc_proxy_token create --name NAME --account ID [--account ID ...]
                                [--lane interactive|background] [--expires-days N]
manage.py cc_proxy_token list
manage.py cc_proxy_token revoke NAME
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import CommandParser

from integrations.management.base import PortalCommand
from integrations.models import Lane, ProxyToken
from integrations.permissions import MANAGE_KEYS, VIEW_PORTAL
from integrations.services.proxy_tokens import (
    proxy_token_accounts,
    proxy_token_create,
    proxy_token_list,
    proxy_token_revoke,
)


def describe(token: ProxyToken) -> str:
    """One line about a token: never the token, only its first characters."""
    accounts = ",".join(str(account.pk) for account in token.accounts.all())
    used = f"{token.last_used_at:%Y-%m-%d %H:%M} UTC" if token.last_used_at else "never"
    expires = f"{token.expires_at:%Y-%m-%d}" if token.expires_at else "never"
    return "\t".join(
        [
            token.name,
            token.shown,
            token.status,
            f"accounts {accounts}",
            token.lane,
            f"last used {used}",
            f"expires {expires}",
        ]
    )


class Command(PortalCommand):
    help = "Make, list and revoke the portal tokens applications call CC through the proxy with."
    required_permission = MANAGE_KEYS

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        create = sub.add_parser("create", help="make a token; it is printed once, on the last line")
        create.add_argument("--name", required=True, help="who holds it, e.g. the app's name")
        create.add_argument(
            "--account",
            type=int,
            action="append",
            required=True,
            metavar="ID",
            help="a connected account the token may call CC for (repeat for several)",
        )
        create.add_argument("--lane", choices=Lane.values, default=Lane.INTERACTIVE)
        create.add_argument("--expires-days", type=int, default=None, metavar="N")
        sub.add_parser("list", help="show every token (never the token itself)")
        revoke = sub.add_parser("revoke", help="refuse the token from its next request on")
        revoke.add_argument("name")

    def permission_for(self, options: dict[str, Any]) -> str | None:
        return VIEW_PORTAL if options.get("action") == "list" else MANAGE_KEYS

    def handle(self, *args, **options) -> None:
        action = options["action"]
        if action == "create":
            token, secret = proxy_token_create(
                name=options["name"],
                accounts=proxy_token_accounts(options["account"]),
                lane=options["lane"],
                expires_days=options["expires_days"],
            )
            self.stdout.write(f"Made {describe(token)}")
            self.stdout.write("The token follows; it is shown this once and never again:")
            self.stdout.write(secret)
        elif action == "revoke":
            token = proxy_token_revoke(name=options["name"])
            self.stdout.write(f"Revoked {token.name}: requests with it are now refused (401).")
        else:
            tokens = proxy_token_list()
            if not tokens:
                self.stdout.write(
                    "No portal tokens yet. Make one with: manage.py cc_proxy_token create --help"
                )
            for token in tokens:
                self.stdout.write(describe(token))

"""Register and inspect Constant Contact API keys.

    manage.py cc_key add --name N --client-id ID [--client-secret S] --redirect-uri URL \
        --tier standard|partner|custom [--per-second X --per-day Y] [--pkce | --no-pkce]
    manage.py cc_key list
    manage.py cc_key set-tier CLIENT_ID --tier T [--per-second X --per-day Y]
"""

from __future__ import annotations

import argparse

from django.core.management.base import CommandError, CommandParser

from integrations import selectors
from integrations.management.base import PortalCommand
from integrations.models import ApiKey
from integrations.permissions import MANAGE_KEYS
from integrations.services.keys import api_key_create, api_key_set_tier


def _positive_int(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return number


class Command(PortalCommand):
    help = "Add, list and re-tier Constant Contact API keys (applications)."
    required_permission = MANAGE_KEYS

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        add = sub.add_parser("add", help="register a CC application")
        add.add_argument("--name", required=True)
        add.add_argument("--client-id", required=True)
        add.add_argument("--client-secret", default="", help="omit for a CC PKCE app")
        add.add_argument("--redirect-uri", required=True)
        add.add_argument("--tier", required=True)
        add.add_argument("--per-second", type=_positive_int)
        add.add_argument("--per-day", type=_positive_int)
        add.add_argument("--pkce", action=argparse.BooleanOptionalAction, default=None)

        sub.add_parser("list", help="show every key and its limits")

        tier = sub.add_parser("set-tier", help="change a key's limits")
        tier.add_argument("client_id")
        tier.add_argument("--tier", required=True)
        tier.add_argument("--per-second", type=_positive_int)
        tier.add_argument("--per-day", type=_positive_int)

    def handle(self, *args, **options) -> None:
        action = options["action"]
        if action == "add":
            key = api_key_create(
                name=options["name"],
                client_id=options["client_id"],
                client_secret=options["client_secret"],
                redirect_uri=options["redirect_uri"],
                tier=options["tier"],
                per_second=options["per_second"],
                per_day=options["per_day"],
                use_pkce=options["pkce"],
            )
            self.stdout.write(f"Added {key} — {self._describe(key)}")
        elif action == "set-tier":
            key = self._get(options["client_id"])
            api_key_set_tier(
                api_key=key,
                tier=options["tier"],
                per_second=options["per_second"],
                per_day=options["per_day"],
            )
            self.stdout.write(f"{key} — {self._describe(key)}")
        else:
            self._list()

    def _get(self, client_id: str) -> ApiKey:
        key = selectors.api_key_list().filter(client_id=client_id).first()
        if key is None:
            raise CommandError(f"no API key with client id {client_id!r}.")
        return key

    @staticmethod
    def _describe(key: ApiKey) -> str:
        if key.secret_unreadable:
            secret = "unreadable secret: re-enter it"
        else:
            secret = "with secret" if key.client_secret else "no secret"
        pkce = "PKCE on" if key.use_pkce else "PKCE off"
        return f"{key.tier}, {key.per_second}/s, {key.per_day:,}/day, {secret}, {pkce}"

    def _list(self) -> None:
        keys = list(selectors.api_key_list())
        if not keys:
            self.stdout.write("No API keys yet. Add one with: manage.py cc_key add --help")
            return
        for key in keys:
            self.stdout.write(f"{key.client_id}\t{key.name}\t{self._describe(key)}")

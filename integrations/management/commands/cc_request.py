"""Send one request to Constant Contact through the gateway and print the answer.

manage.py cc_request GET /contact_lists [--account ID] [--json BODY] [--lane background]
"""

from __future__ import annotations

import json
from urllib.parse import parse_qsl

from django.core.management.base import CommandError

from integrations import selectors
from integrations.management.base import PortalCommand
from integrations.models import ConnectedAccount, Lane
from integrations.permissions import OPERATE_PORTAL
from integrations.services.gateway import cc_call

METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")


class Command(PortalCommand):
    help = "Call the CC v3 API (path relative to /v3) for a connected account; prints JSON."
    required_permission = OPERATE_PORTAL

    def add_arguments(self, parser) -> None:
        parser.add_argument("method", help="GET, POST, PUT, PATCH or DELETE")
        parser.add_argument("path", help="e.g. /contact_lists or /v3/contacts?limit=5")
        parser.add_argument("--account", type=int, help="account id (default: the only active one)")
        parser.add_argument("--json", dest="body", help="request body as JSON")
        parser.add_argument("--lane", choices=Lane.values, default=Lane.INTERACTIVE)

    def handle(self, *args, **options) -> None:
        method = options["method"].upper()
        if method not in METHODS:
            raise CommandError(
                f"unknown method {options['method']!r}; use one of {', '.join(METHODS)}."
            )
        path = options["path"]
        if path.startswith("/v3/") or path == "/v3":
            path = path[3:] or "/"
        if not path.startswith("/"):
            raise CommandError(
                f"path must start with '/', e.g. /contact_lists (got {options['path']!r})."
            )
        body = None
        if options["body"] is not None:
            try:
                body = json.loads(options["body"])
            except json.JSONDecodeError as exc:
                raise CommandError(
                    f"--json is not valid JSON: {exc.msg} at column {exc.colno}."
                ) from None
        account = self._account(options["account"])
        params = None
        if "?" in path:
            path, query = path.split("?", 1)
            params = dict(parse_qsl(query, keep_blank_values=True))
        answer = cc_call(
            account=account,
            method=method,
            path=path,
            params=params,
            json=body,
            lane=options["lane"],
        )
        if isinstance(answer, dict | list):
            self.stdout.write(json.dumps(answer, indent=2))
        elif answer is not None:
            self.stdout.write(str(answer))

    def _account(self, pk: int | None) -> ConnectedAccount:
        if pk is not None:
            account = selectors.account_get(pk=pk)
            if account is None:
                raise CommandError(
                    f"no connected account with id {pk} (see manage.py cc_accounts list)."
                )
            return account
        account, active = selectors.account_only_active()
        if account is None:
            raise CommandError(
                "more than one connected account: pass --account ID."
                if active
                else "no connected account: connect one in the portal first."
            )
        return account

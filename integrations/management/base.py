"""What every ccportal command shares: a service's refusal ends in one line, not a traceback,
and ``--as-user`` holds the command to what one portal login may do."""

from __future__ import annotations

import os
from typing import Any, Final

from django.contrib.auth import get_user_model
from django.contrib.auth.base_user import AbstractBaseUser
from django.core.management.base import BaseCommand, CommandError, CommandParser

from integrations.constant_contact.errors import CCError
from integrations.errors import PortalError
from integrations.permissions import portal_permission, refusal_message, user_may

#: The environment variable that gives ``--as-user`` its default.
CLI_USER_ENV: Final = "CCPORTAL_CLI_USER"


class PortalCommand(BaseCommand):
    """A command whose service errors (:class:`PortalError` — a stored secret no encryption
    key opens, the quota store unreachable, bad input — and CC's :class:`CCError`) end in
    ``CommandError`` with the reason.

    ``required_permission`` names the portal permission the command needs
    (``integrations.permissions``); :meth:`permission_for` may choose one per subcommand.
    Without ``--as-user`` (nor ``CCPORTAL_CLI_USER``) the command runs with the operator's full
    rights: a shell that runs ``manage.py`` has them already. With a username, that user must
    exist, be active and hold the permission, or the command stops before doing anything.
    """

    #: The portal permission this command needs; ``None``: any login may run it.
    required_permission: str | None = None

    #: Who the command runs as (``--as-user``); ``None``: the operator, with full rights.
    acting_user: AbstractBaseUser | None = None

    def create_parser(self, prog_name: str, subcommand: str, **kwargs: Any) -> CommandParser:
        parser = super().create_parser(prog_name, subcommand, **kwargs)
        parser.add_argument(
            "--as-user",
            metavar="USERNAME",
            default=os.environ.get(CLI_USER_ENV) or None,
            help=(
                "run as this portal login and refuse what it may not do "
                f"(default: ${CLI_USER_ENV}; without one, the operator's full rights)"
            ),
        )
        return parser

    def permission_for(self, options: dict[str, Any]) -> str | None:
        """The permission this run needs (override for commands whose subcommands differ)."""
        return self.required_permission

    def execute(self, *args, **options):
        self.acting_user = self._acting_user(options.get("as_user"), self.permission_for(options))
        try:
            return super().execute(*args, **options)
        except (PortalError, CCError) as exc:
            raise CommandError(str(exc)) from None

    @staticmethod
    def _acting_user(username: str | None, codename: str | None) -> AbstractBaseUser | None:
        """The user named by ``--as-user``, once it is known to exist, be active and hold
        ``codename``; ``CommandError`` (one line) otherwise."""
        if codename is not None:
            portal_permission(codename)  # a misspelt name fails for everyone, not only users
        if not username:
            return None
        user_model = get_user_model()
        try:
            user = user_model._default_manager.get_by_natural_key(username)
        except user_model.DoesNotExist:
            raise CommandError(
                f"no user {username!r} (given by --as-user or ${CLI_USER_ENV})."
            ) from None
        if not user.is_active:
            raise CommandError(f"user {username!r} is inactive: it may not run commands.")
        if codename is not None and not user_may(user, codename):
            raise CommandError(refusal_message(user, codename))
        return user

"""Portal tokens: create, list, revoke, and recognise the token an application presents.

A token is ``ccp_`` and 43 URL-safe characters (256 random bits). It is shown once, when made;
only its SHA-256 digest is stored, so a database dump opens nothing. The CLI
(``cc_proxy_token``), the Tokens page and the Django admin all go through these functions.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets
from collections.abc import Iterable
from dataclasses import dataclass

from django.db import IntegrityError, transaction
from django.utils import timezone

from integrations.errors import PortalError
from integrations.models import PROXY_TOKEN_PREFIX, ConnectedAccount, Lane, ProxyToken

#: A token is looked at again for ``last_used_at`` no more often than this (one write a minute,
#: not one per call).
LAST_USED_EVERY = dt.timedelta(minutes=1)
#: What a token's name may be: short, printable, on one line.
NAME_MAX_LENGTH = ProxyToken._meta.get_field("name").max_length


class ProxyTokenInvalid(PortalError):
    """A token cannot be made as asked; ``field`` names the input at fault."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class ProxyTokenRefused(PortalError):
    """The presented token is missing, unknown, expired or revoked (the proxy answers 401)."""


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def proxy_token_create(
    *,
    name: str,
    accounts: Iterable[ConnectedAccount],
    lane: str = Lane.INTERACTIVE,
    expires_days: int | None = None,
) -> tuple[ProxyToken, str]:
    """Make a token for ``accounts``; returns it and the token itself, which nothing can show
    again."""
    name = (name or "").strip()
    if not name or not name.isprintable():
        raise ProxyTokenInvalid("A token needs a name, on one line.", field="name")
    if len(name) > NAME_MAX_LENGTH:
        raise ProxyTokenInvalid(
            f"The name is {len(name)} characters long; at most {NAME_MAX_LENGTH} are allowed.",
            field="name",
        )
    accounts = list(accounts)
    if not accounts:
        raise ProxyTokenInvalid("A token needs at least one account.", field="accounts")
    try:
        lane = Lane.check(lane)
    except ValueError as exc:
        raise ProxyTokenInvalid(str(exc), field="lane") from None
    if expires_days is not None and expires_days < 1:
        raise ProxyTokenInvalid("--expires-days must be at least 1.", field="expires_days")
    token = PROXY_TOKEN_PREFIX + secrets.token_urlsafe(32)
    now = timezone.now()
    try:
        with transaction.atomic():
            made = ProxyToken.objects.create(
                name=name,
                digest=_digest(token),
                hint=token[: len(PROXY_TOKEN_PREFIX) + 4],
                lane=lane,
                created_at=now,
                expires_at=now + dt.timedelta(days=expires_days) if expires_days else None,
            )
            made.accounts.set(accounts)
    except IntegrityError:
        raise ProxyTokenInvalid(f"A token named {name!r} exists already.", field="name") from None
    return made, token


def proxy_token_accounts(ids: Iterable[int]) -> list[ConnectedAccount]:
    """The connected accounts ``ids`` name, or :class:`ProxyTokenInvalid` naming the unknown."""
    wanted = list(dict.fromkeys(ids))
    found = {a.pk: a for a in ConnectedAccount.objects.filter(pk__in=wanted)}
    unknown = [str(pk) for pk in wanted if pk not in found]
    if unknown:
        raise ProxyTokenInvalid(
            f"No connected account has id {', '.join(unknown)} (see manage.py cc_accounts list).",
            field="accounts",
        )
    return [found[pk] for pk in wanted]


def proxy_token_list() -> list[ProxyToken]:
    return list(ProxyToken.objects.prefetch_related("accounts"))


def proxy_token_revoke(*, name: str) -> ProxyToken:
    """Revoke the token named ``name``: the next request with it is refused (401)."""
    found = ProxyToken.objects.filter(name=name).first()
    if found is None:
        raise ProxyTokenInvalid(f"No token is named {name!r}.", field="name")
    if found.revoked_at is None:
        found.revoked_at = timezone.now()
        found.save(update_fields=["revoked_at"])
    return found


@dataclass(frozen=True)
class ProxyCaller:
    """Whoever presented a usable portal token: the token and the accounts it covers, by id."""

    token: ProxyToken
    accounts: dict[int, ConnectedAccount]


def proxy_token_authenticate(authorization: str) -> ProxyCaller:
    """The caller an ``Authorization: Bearer ccp_…`` header names, if its token may be used now.

    The token, its accounts and their keys come back in one query: every proxied call starts
    here, and each query less is time the caller does not wait. (A second one tells an unknown
    token from one that covers no account any more.)"""
    scheme, _, token = (authorization or "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token.startswith(PROXY_TOKEN_PREFIX):
        raise ProxyTokenRefused(
            "Send a portal token: Authorization: Bearer ccp_… (make one with "
            "manage.py cc_proxy_token create)."
        )
    digest = _digest(token)
    scope = list(
        ProxyToken.accounts.through.objects.filter(proxytoken__digest=digest).select_related(
            "proxytoken", "connectedaccount__api_key"
        )
    )
    # A token whose accounts were all deleted covers none, but is still known.
    found = scope[0].proxytoken if scope else ProxyToken.objects.filter(digest=digest).first()
    # The lookup is by digest; compare again in constant time all the same.
    if found is None or not hmac.compare_digest(found.digest, digest):
        raise ProxyTokenRefused("The portal token is not known.")
    now = timezone.now()
    if found.revoked_at is not None:
        raise ProxyTokenRefused(f"The portal token {found.name!r} was revoked.")
    if found.is_expired(now):
        raise ProxyTokenRefused(f"The portal token {found.name!r} has expired.")
    if found.last_used_at is None or now - found.last_used_at >= LAST_USED_EVERY:
        ProxyToken.objects.filter(pk=found.pk).update(last_used_at=now)
        found.last_used_at = now
    return ProxyCaller(
        token=found, accounts={row.connectedaccount.pk: row.connectedaccount for row in scope}
    )

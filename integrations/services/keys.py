"""API keys: register a Constant Contact application and set its rate-limit tier."""

from __future__ import annotations

from urllib.parse import urlsplit

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from integrations.models import ApiKey, Tier


def _validate_redirect_uri(uri: str) -> None:
    # Single-label hosts (http://portal:8000/...) are fine for an intranet portal, so this is
    # deliberately looser than Django's URLValidator: absolute http(s), a host, no whitespace.
    try:
        parts = urlsplit(uri)
        parts.port  # noqa: B018  (raises ValueError on a malformed port)
    except ValueError:
        parts = None
    if (
        parts is None
        or parts.scheme not in ("http", "https")
        or not parts.hostname
        or any(ch.isspace() for ch in uri)
    ):
        raise ValidationError(f"redirect URI {uri!r} is not an absolute http(s) URL.")
    # CC matches redirect URIs exactly and does not support fragments.
    if parts.fragment:
        raise ValidationError("redirect URI must not contain a #fragment (CC rejects them).")


def _validate_limits(tier: str, per_second: int | None, per_day: int | None) -> None:
    if tier not in Tier.values:
        raise ValidationError(f"unknown tier {tier!r}; choose one of {', '.join(Tier.values)}.")
    if tier == Tier.CUSTOM:
        if not per_second or not per_day or per_second < 1 or per_day < 1:
            raise ValidationError("a custom tier needs --per-second and --per-day, both >= 1.")
    elif per_second is not None or per_day is not None:
        raise ValidationError(
            f"the {tier} tier has fixed limits; use --tier custom to set your own."
        )


def api_key_create(
    *,
    name: str,
    client_id: str,
    redirect_uri: str,
    tier: str = Tier.STANDARD,
    client_secret: str = "",
    per_second: int | None = None,
    per_day: int | None = None,
    use_pkce: bool | None = None,
) -> ApiKey:
    """Register a CC application. Writes nothing unless every input is valid.

    PKCE defaults to on only for keys without a secret: CC documents PKCE for its public-client
    flow, and confidential apps that send it have been seen to get 400s.
    """
    name, client_id, client_secret = name.strip(), client_id.strip(), client_secret.strip()
    if not name:
        raise ValidationError("name must not be empty.")
    if not client_id:
        raise ValidationError("client id must not be empty.")
    _validate_redirect_uri(redirect_uri)
    _validate_limits(tier, per_second, per_day)
    if ApiKey.objects.filter(client_id=client_id).exists():
        raise ValidationError(f"an API key with client id {client_id!r} already exists.")
    key = ApiKey(
        name=name,
        client_id=client_id,
        client_secret=client_secret,
        redirect_uri=redirect_uri,
        tier=tier,
        custom_per_second=per_second if tier == Tier.CUSTOM else None,
        custom_per_day=per_day if tier == Tier.CUSTOM else None,
        use_pkce=(not client_secret) if use_pkce is None else use_pkce,
    )
    try:
        with transaction.atomic():
            key.save()
    except IntegrityError:
        # Lost a race with another writer of the same client_id.
        raise ValidationError(f"an API key with client id {client_id!r} already exists.") from None
    return key


def api_key_set_tier(
    *, api_key: ApiKey, tier: str, per_second: int | None = None, per_day: int | None = None
) -> ApiKey:
    """Change a key's limits; the quota service picks them up on its next reservation."""
    _validate_limits(tier, per_second, per_day)
    api_key.tier = tier
    api_key.custom_per_second = per_second if tier == Tier.CUSTOM else None
    api_key.custom_per_day = per_day if tier == Tier.CUSTOM else None
    api_key.save(update_fields=["tier", "custom_per_second", "custom_per_day", "updated_at"])
    return api_key

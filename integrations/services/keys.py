"""API keys: register a Constant Contact application, change it, and set its rate-limit tier.

The CLI (``cc_key``) and the Django admin both go through these functions, so a key is valid
and its PKCE setting follows the same rule however it was made.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from django.db import IntegrityError, transaction

from integrations import crypto
from integrations.errors import PortalError
from integrations.models import ApiKey, Tier


class ApiKeyInvalid(PortalError):
    """The key's settings cannot be saved; ``field`` names the input at fault, when one is."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


#: Longer than any secret CC issues; a longer value is a paste gone wrong.
CLIENT_SECRET_MAX_LENGTH = 500


def _max_length(name: str) -> int:
    return int(ApiKey._meta.get_field(name).max_length)


def _validate_text(field: str, value: str, label: str) -> str:
    value = value.strip()
    if not value:
        raise ApiKeyInvalid(f"{label} must not be empty.", field=field)
    limit = _max_length(field)
    if len(value) > limit:
        raise ApiKeyInvalid(
            f"{label} is {len(value)} characters long; at most {limit} are allowed.", field=field
        )
    return value


def _validate_redirect_uri(uri: str) -> str:
    # Single-label hosts (http://portal:8000/...) are fine for an intranet portal, so this is
    # deliberately looser than Django's URLValidator: absolute http(s), a host, no whitespace.
    uri = _validate_text("redirect_uri", uri, "redirect URI")
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
        raise ApiKeyInvalid(
            f"redirect URI {uri!r} is not an absolute http(s) URL.", field="redirect_uri"
        )
    # CC matches redirect URIs exactly and does not support fragments.
    if parts.fragment:
        raise ApiKeyInvalid(
            "redirect URI must not contain a #fragment (CC rejects them).", field="redirect_uri"
        )
    return uri


def _validate_secret(secret: str) -> str:
    secret = secret.strip()
    if len(secret) > CLIENT_SECRET_MAX_LENGTH:
        raise ApiKeyInvalid(
            f"client secret is {len(secret)} characters long; at most "
            f"{CLIENT_SECRET_MAX_LENGTH} are allowed.",
            field="client_secret",
        )
    return secret


def _verify_secret_reads_back(key: ApiKey, secret: str) -> None:
    """Read the saved secret back from the database: one that the configured keys cannot open
    is refused now (and the save rolled back), not found at the next Connect."""
    stored = ApiKey.objects.get(pk=key.pk).client_secret
    if crypto.is_unreadable(stored) or stored != secret:
        raise crypto.DecryptionError(
            "The client secret was not saved: it does not read back with the keys in "
            "FIELD_ENCRYPTION_KEYS. Check that setting, then enter the secret again."
        )


def _validate_limits(tier: str, per_second: int | None, per_day: int | None) -> None:
    if tier not in Tier.values:
        raise ApiKeyInvalid(
            f"unknown tier {tier!r}; choose one of {', '.join(Tier.values)}.", field="tier"
        )
    if tier == Tier.CUSTOM:
        if not per_second or not per_day or per_second < 1 or per_day < 1:
            raise ApiKeyInvalid(
                "a custom tier needs a per-second and a per-day limit, both at least 1.",
                field="tier",
            )
    elif per_second is not None or per_day is not None:
        raise ApiKeyInvalid(
            f"the {tier} tier has fixed limits; choose the custom tier to set your own.",
            field="tier",
        )


def _client_id_taken(client_id: str, *, other_than: int | None = None) -> ApiKeyInvalid | None:
    taken = ApiKey.objects.filter(client_id=client_id).exclude(pk=other_than)
    if taken.exists():
        return ApiKeyInvalid(
            f"an API key with client id {client_id!r} already exists.", field="client_id"
        )
    return None


def api_key_validate(
    *,
    name: str,
    client_id: str,
    redirect_uri: str,
    tier: str,
    per_second: int | None = None,
    per_day: int | None = None,
    api_key: ApiKey | None = None,
) -> tuple[str, str, str]:
    """Check a key's settings without writing (``api_key``: the key being changed); returns
    the trimmed name, client id and redirect URI, or raises :class:`ApiKeyInvalid`."""
    name = _validate_text("name", name, "name")
    client_id = _validate_text("client_id", client_id, "client id")
    redirect_uri = _validate_redirect_uri(redirect_uri)
    _validate_limits(tier, per_second, per_day)
    if error := _client_id_taken(client_id, other_than=api_key.pk if api_key else None):
        raise error
    return name, client_id, redirect_uri


def _apply(
    key: ApiKey,
    *,
    name: str,
    client_id: str,
    redirect_uri: str,
    tier: str,
    client_secret: str,
    per_second: int | None,
    per_day: int | None,
    use_pkce: bool | None,
) -> ApiKey:
    """Validate every input, then set it on ``key`` and save; writes nothing on bad input."""
    key.name, key.client_id, key.redirect_uri = api_key_validate(
        name=name,
        client_id=client_id,
        redirect_uri=redirect_uri,
        tier=tier,
        per_second=per_second,
        per_day=per_day,
        api_key=key if key.pk else None,
    )
    key.tier = tier
    key.custom_per_second = per_second if tier == Tier.CUSTOM else None
    key.custom_per_day = per_day if tier == Tier.CUSTOM else None
    kept_unreadable = crypto.is_unreadable(client_secret)
    if not kept_unreadable:
        # An unreadable secret kept as it is stays the ciphertext it was (strip() would make
        # it an empty string and erase it).
        client_secret = _validate_secret(client_secret)
    key.client_secret = client_secret
    if use_pkce is not None:
        key.use_pkce = use_pkce
    elif not kept_unreadable:
        # CC documents PKCE for its public-client flow, and confidential apps that send it
        # have been seen to get 400s: unless told otherwise, PKCE is on exactly for keys
        # without a secret.
        key.use_pkce = not client_secret
    try:
        with transaction.atomic():
            key.save()
            if not kept_unreadable:
                _verify_secret_reads_back(key, client_secret)
    except IntegrityError:
        # Lost a race with another writer of the same client_id.
        raise ApiKeyInvalid(
            f"an API key with client id {key.client_id!r} already exists.", field="client_id"
        ) from None
    return key


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
    """Register a CC application. Writes nothing unless every input is valid; ``use_pkce``
    None means on exactly when the key has no secret (a PKCE app)."""
    return _apply(
        ApiKey(),
        name=name,
        client_id=client_id,
        redirect_uri=redirect_uri,
        tier=tier,
        client_secret=client_secret,
        per_second=per_second,
        per_day=per_day,
        use_pkce=use_pkce,
    )


def api_key_update(
    *,
    api_key: ApiKey,
    name: str,
    client_id: str,
    redirect_uri: str,
    tier: str,
    client_secret: str | None = None,
    per_second: int | None = None,
    per_day: int | None = None,
    use_pkce: bool | None = None,
) -> ApiKey:
    """Change a key; ``client_secret`` None keeps the stored one, "" removes it. The same
    rules as :func:`api_key_create`; on bad input nothing is written."""
    fresh = ApiKey.objects.get(pk=api_key.pk)
    return _apply(
        fresh,
        name=name,
        client_id=client_id,
        redirect_uri=redirect_uri,
        tier=tier,
        client_secret=fresh.client_secret if client_secret is None else client_secret,
        per_second=per_second,
        per_day=per_day,
        use_pkce=use_pkce,
    )


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

"""System checks with stable ids, so a misconfiguration is caught at start-up with a hint."""

from __future__ import annotations

from urllib.parse import urlsplit

from cryptography.fernet import Fernet
from django.core.checks import Error, Tags, Warning, register

from integrations import conf


@register(Tags.security)
def check_field_encryption_keys(app_configs, **kwargs):
    keys = conf.field_encryption_keys()
    if not keys:
        return [
            Error(
                "FIELD_ENCRYPTION_KEYS is empty: tokens and client secrets cannot be stored.",
                hint="Set FIELD_ENCRYPTION_KEYS to one or more comma-separated Fernet keys "
                "(python -c 'from cryptography.fernet import Fernet; "
                "print(Fernet.generate_key().decode())').",
                id="integrations.E001",
            )
        ]
    errors = []
    for position, key in enumerate(keys, start=1):
        try:
            Fernet(key)
        except (ValueError, TypeError):
            errors.append(
                Error(
                    f"FIELD_ENCRYPTION_KEYS entry {position} is not a valid Fernet key.",
                    hint="Each key is 32 url-safe base64-encoded bytes, as made by "
                    "Fernet.generate_key().",
                    id="integrations.E002",
                )
            )
    return errors


@register()
def check_cc_endpoints(app_configs, **kwargs):
    issues = []
    endpoints = conf.cc_endpoints()
    for name, url in vars(endpoints).items():
        if name.startswith("jwt_"):
            continue
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            issues.append(
                Error(
                    f"CC endpoint {name} is not an absolute http(s) URL: {url!r}.",
                    hint=f"Set CC_{name.upper()} or unset it to use the default.",
                    id="integrations.E003",
                )
            )
        elif conf.cc_mode() == "live" and parts.scheme != "https":
            issues.append(
                Warning(
                    f"CC endpoint {name} uses plain http in live mode.",
                    hint="Constant Contact is only served over https.",
                    id="integrations.W001",
                )
            )
    return issues


@register(Tags.security, deploy=True)
def check_production_talks_to_constant_contact(app_configs, **kwargs):
    """``check --deploy``: a production portal on the sandbox would hand out made-up tokens."""
    if conf.django_env() == "production" and conf.cc_mode() == "sandbox":
        return [
            Error(
                "CC_MODE is sandbox in production: every call would go to the local sandbox, "
                "not to Constant Contact.",
                hint="Unset CC_MODE (production defaults to live) or set CC_MODE=live.",
                id="integrations.E004",
            )
        ]
    return []

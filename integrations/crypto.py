"""Field encryption on MultiFernet: encrypt with the newest key, decrypt with any.

Keys come from ``FIELD_ENCRYPTION_KEYS`` (newest first). A value no configured key opens raises
:class:`DecryptionError`; ciphertext is never handed back as if it were the secret.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.core.signals import setting_changed
from django.dispatch import receiver

from integrations import conf


class DecryptionError(Exception):
    """A stored secret cannot be opened with any key in FIELD_ENCRYPTION_KEYS."""


@lru_cache(maxsize=1)
def _fernet(keys: tuple[str, ...]) -> MultiFernet:
    return MultiFernet([Fernet(key) for key in keys])


def _current() -> MultiFernet:
    return _fernet(tuple(conf.field_encryption_keys()))


@receiver(setting_changed)
def _forget_keys(*, setting: str, **kwargs) -> None:
    if setting == "FIELD_ENCRYPTION_KEYS":
        _fernet.cache_clear()


def encrypt(plaintext: str) -> str:
    return _current().encrypt(plaintext.encode()).decode()


def decrypt(ciphertext: str, *, label: str = "a secret") -> str:
    try:
        return _current().decrypt(ciphertext.encode()).decode()
    except InvalidToken:
        raise DecryptionError(
            f"Cannot decrypt {label}: no key in FIELD_ENCRYPTION_KEYS opens it. Restore the key "
            "it was written with (keys are listed newest first; keep old keys until "
            "`manage.py rotate_encryption_keys` has run)."
        ) from None


def fingerprint(secret: str) -> str:
    """A short, stable, non-reversible tag for showing *which* secret is stored."""
    if not secret:
        return ""
    return hashlib.sha256(secret.encode()).hexdigest()[:8]

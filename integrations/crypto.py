"""Field encryption on MultiFernet: encrypt with the newest key, decrypt with any.

Keys come from ``FIELD_ENCRYPTION_KEYS`` (newest first). A value no configured key opens raises
:class:`DecryptionError`; ciphertext is never handed back as if it were the secret. Loaded from
the database, such a value becomes an :class:`UnreadableSecret`: it reads as empty, says which
field it is, and is written back unchanged, so one bad row never breaks a page that lists it.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.core.signals import setting_changed
from django.dispatch import receiver

from integrations import conf
from integrations.errors import PortalError


class DecryptionError(PortalError):
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


class UnreadableSecret(str):
    """A stored secret no configured key opens. Its text is empty (it is no secret anyone can
    use); ``ciphertext`` is what the database holds, kept so that saving the row does not
    erase it; ``label`` names the field."""

    ciphertext: str
    label: str

    def __new__(cls, ciphertext: str, *, label: str) -> UnreadableSecret:
        value = super().__new__(cls, "")
        value.ciphertext = ciphertext
        value.label = label
        return value

    def __repr__(self) -> str:
        return f"<unreadable secret {self.label}>"

    def error(self) -> DecryptionError:
        return DecryptionError(
            f"Cannot decrypt {self.label}: no key in FIELD_ENCRYPTION_KEYS opens it. Restore "
            "the key it was written with, or re-enter the secret."
        )


def is_unreadable(value: object) -> bool:
    return isinstance(value, UnreadableSecret)


def readable(value: str) -> str:
    """``value`` itself, for code about to use the secret; an :class:`UnreadableSecret` raises
    its :class:`DecryptionError` instead of passing for an empty secret."""
    if isinstance(value, UnreadableSecret):
        raise value.error()
    return value


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
    if is_unreadable(secret):
        return "unreadable: re-enter it"
    if not secret:
        return ""
    return hashlib.sha256(secret.encode()).hexdigest()[:8]

"""Development secrets generated once into the git-ignored ``var/`` folder.

A fresh checkout needs no manual step: the first start writes a random Django
``SECRET_KEY`` and a Fernet key for field encryption, and every later start
reads the same values back, so sessions and encrypted tokens survive restarts.
The production profile never calls this: it requires the values from the
environment.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from cryptography.fernet import Fernet


def _read_or_create(path: Path, make: callable[[], str]) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        value = path.read_text().strip()
        if value:
            return value
    except FileNotFoundError:
        pass
    value = make()
    # O_EXCL: when two processes start together, one writes and both read the same value.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    with os.fdopen(fd, "w") as handle:
        handle.write(value + "\n")
    return value


def development_secret_key(var_dir: Path) -> str:
    return _read_or_create(var_dir / "secret_key", lambda: secrets.token_urlsafe(50))


def development_encryption_keys(var_dir: Path) -> list[str]:
    raw = _read_or_create(var_dir / "field_encryption_keys", lambda: Fernet.generate_key().decode())
    return [key.strip() for key in raw.split(",") if key.strip()]

"""RS256 signing keys and the JWKS the sandbox publishes.

One key signs; keys retired by a rotation stay published until their retirement time on the
sandbox clock, so tokens they signed remain verifiable meanwhile. Generating a 2048-bit key
takes tens of milliseconds, so the next key is made ahead of time in a background thread and a
rotation never waits; ``reset`` keeps the keys (tokens from before a reset fail for another
reason: their client and account are gone).
"""

from __future__ import annotations

import secrets
import threading
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from integrations.sandbox.clock import SandboxClock, iso


def _new_private_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@dataclass
class SigningKey:
    kid: str
    private_key: rsa.RSAPrivateKey
    jwk: dict[str, Any]
    retire_at: float | None = None  # sandbox time after which it is no longer published

    @classmethod
    def generate(cls, private_key: rsa.RSAPrivateKey | None = None) -> SigningKey:
        private_key = private_key or _new_private_key()
        kid = secrets.token_urlsafe(24)
        jwk = RSAAlgorithm.to_jwk(private_key.public_key(), as_dict=True)
        jwk.update({"kid": kid, "alg": "RS256", "use": "sig"})
        return cls(kid=kid, private_key=private_key, jwk=jwk)


class KeyRing:
    """The signing key plus retired keys still published; safe to use from many threads."""

    def __init__(self, clock: SandboxClock) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._signing = SigningKey.generate()
        self._retired: list[SigningKey] = []
        self._spare: rsa.RSAPrivateKey | None = None
        self._spare_ready = threading.Event()
        self._make_spare()

    def _make_spare(self) -> None:
        self._spare_ready.clear()

        def work() -> None:
            self._spare = _new_private_key()
            self._spare_ready.set()

        threading.Thread(target=work, name="sandbox-keygen", daemon=True).start()

    @property
    def signing_kid(self) -> str:
        return self._signing.kid

    def sign(self, claims: dict[str, Any]) -> str:
        """A compact RS256 JWT whose ``kid`` header names the current signing key."""
        key = self._signing
        return jwt.encode(claims, key.private_key, algorithm="RS256", headers={"kid": key.kid})

    def _published(self) -> list[SigningKey]:
        now = self._clock.time()
        live = [key for key in self._retired if key.retire_at is None or key.retire_at > now]
        return [self._signing, *live]

    def public_key(self, kid: str) -> rsa.RSAPublicKey | None:
        """The public key for ``kid`` if it is published right now, else None."""
        with self._lock:
            for key in self._published():
                if key.kid == kid:
                    return key.private_key.public_key()
        return None

    def is_published(self, kid: str) -> bool:
        return self.public_key(kid) is not None

    def jwks(self) -> dict[str, Any]:
        """``{"keys": [...]}``: the signing key first, then retired keys not yet expired."""
        with self._lock:
            return {"keys": [dict(key.jwk) for key in self._published()]}

    def rotate(self, *, retain_seconds: float) -> str:
        """Sign with a new key from now on; keep the old one published ``retain_seconds``."""
        self._spare_ready.wait(timeout=30)
        with self._lock:
            old = self._signing
            old.retire_at = self._clock.time() + max(0.0, float(retain_seconds))
            self._retired = [key for key in self._retired if key.retire_at > self._clock.time()]
            self._retired.insert(0, old)
            self._signing = SigningKey.generate(self._spare)
            self._spare = None
        self._make_spare()
        return self._signing.kid

    def describe(self) -> dict[str, Any]:
        with self._lock:
            published = self._published()
            return {
                "signing_kid": self._signing.kid,
                "published": [
                    {"kid": key.kid, "retire_at": iso(key.retire_at) if key.retire_at else None}
                    for key in published
                ],
            }

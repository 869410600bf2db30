"""Test helpers for access-token validation: real RSA keys, a real JWKS over HTTP, token makers."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from jwt.algorithms import RSAAlgorithm

ISSUER = "https://identity.test/oauth2/aus-test"
AUDIENCE = "https://api.test/v3"


@dataclass(frozen=True)
class RsaKey:
    kid: str
    private_key: rsa.RSAPrivateKey

    @classmethod
    def generate(cls, kid: str, bits: int = 2048) -> RsaKey:
        return cls(kid, rsa.generate_private_key(public_exponent=65537, key_size=bits))

    def public_jwk(self, **extra: Any) -> dict[str, Any]:
        jwk = RSAAlgorithm.to_jwk(self.private_key.public_key(), as_dict=True)
        return {**jwk, "kid": self.kid, "use": "sig", "alg": "RS256", **extra}

    def public_pem(self) -> bytes:
        return self.private_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def sign(
        self,
        claims: dict[str, Any],
        *,
        kid: str | None = None,
        algorithm: str = "RS256",
        **headers: Any,
    ) -> str:
        """A token signed with this key; ``kid`` defaults to this key's own."""
        return jwt.encode(
            claims,
            self.private_key,
            algorithm=algorithm,
            headers={"kid": self.kid if kid is None else kid, **headers},
        )

    def sign_by_hand(self, header: dict[str, Any], claims: dict[str, Any]) -> str:
        """A correctly RS256-signed token with claims PyJWT's encoder would refuse."""
        signing_input = f"{_b64url_json(header)}.{_b64url_json(claims)}"
        signature = self.private_key.sign(
            signing_input.encode(), padding.PKCS1v15(), hashes.SHA256()
        )
        return f"{signing_input}.{_b64url(signature)}"


def good_claims(**overrides: Any) -> dict[str, Any]:
    """The claims CC puts in an access token, valid for 24 hours from now; ``None`` drops one."""
    now = int(time.time())
    claims: dict[str, Any] = {
        "ver": 1,
        "jti": "AT.test-token-id",
        "iss": ISSUER,
        "aud": AUDIENCE,
        "iat": now,
        "exp": now + 86400,
        "cid": "5f3c1e2a-0000-4000-8000-000000000001",
        "uid": "00u-test",
        "scp": ["contact_data", "offline_access"],
        "sub": "owner@example.com",
        "platform_user_id": "b2c3d4e5-0000-4000-8000-000000000002",
    }
    claims.update(overrides)
    return {name: value for name, value in claims.items() if value is not None}


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _b64url_json(value: Any) -> str:
    return _b64url(json.dumps(value, separators=(",", ":")).encode())


def forge(header: dict[str, Any], claims: dict[str, Any], signature: bytes = b"") -> str:
    """A compact JWS built by hand, for tokens PyJWT refuses to make."""
    return f"{_b64url_json(header)}.{_b64url_json(claims)}.{_b64url(signature)}"


def forge_hs256(header: dict[str, Any], claims: dict[str, Any], secret: bytes) -> str:
    """An HS256 token keyed with ``secret`` (e.g. an RSA public key's PEM bytes)."""
    signing_input = f"{_b64url_json(header)}.{_b64url_json(claims)}"
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64url(mac)}"


def es256_token(claims: dict[str, Any], kid: str) -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    return jwt.encode(claims, key, algorithm="ES256", headers={"kid": kid})


class JwksServer:
    """A JWKS served over real HTTP on 127.0.0.1, counting the requests it receives."""

    def __init__(self, keys: list[dict[str, Any]] | None = None) -> None:
        self.keys: list[dict[str, Any]] = list(keys or [])
        self.status = HTTPStatus.OK
        self.body: bytes | None = None  # overrides the JWKS document when set
        self.request_count = 0
        self._count_lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        # A short poll keeps shutdown() (once per test) from waiting half a second.
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
        )

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def url(self) -> str:
        return f"{self.base_url}/oauth2/aus-test/v1/keys"

    def publish(self, *keys: RsaKey) -> None:
        self.keys = [key.public_jwk() for key in keys]

    def start(self) -> JwksServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        jwks = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with jwks._count_lock:
                    jwks.request_count += 1
                body = jwks.body
                if body is None:
                    body = json.dumps({"keys": jwks.keys}).encode()
                self.send_response(jwks.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                if jwks.status in (HTTPStatus.FOUND, HTTPStatus.MOVED_PERMANENTLY):
                    self.send_header("Location", jwks.url)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler


@contextmanager
def jwks_server(*keys: RsaKey) -> Iterator[JwksServer]:
    server = JwksServer([key.public_jwk() for key in keys]).start()
    try:
        yield server
    finally:
        server.stop()


def closed_port_url() -> str:
    """A URL on 127.0.0.1 where nothing listens, so connecting is refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/oauth2/aus-test/v1/keys"


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self, start: float = 10_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

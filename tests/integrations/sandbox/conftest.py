"""Shared set-up for the sandbox's own tests: a blank sandbox, a client, an account, a token.

Every test talks real HTTP to the session's sandbox process (the ``sandbox`` fixture).
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import requests

from integrations.sandbox.control import SandboxAccount, SandboxControl

REDIRECT_URI = "http://127.0.0.1:8000/accounts/callback/"
SECRET = "test-client-secret"
APP = "test-app"


class Api:
    """A keep-alive session against the sandbox's /v3 with one bearer token."""

    def __init__(self, control: SandboxControl, token: str) -> None:
        self.base = control.url
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {token}"

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        return self.session.get(self.base + path, timeout=10, **kwargs)

    def post(self, path: str, **kwargs: Any) -> requests.Response:
        return self.session.post(self.base + path, timeout=10, **kwargs)


@dataclass
class World:
    control: SandboxControl
    account: SandboxAccount
    api: Api

    def new_list(self, name: str) -> str:
        return self.control.seed_list(self.account, name).list_id

    def fresh_api(self, account: SandboxAccount | None = None) -> Api:
        """A session with a newly minted token (for ``account``, default the world's)."""
        tokens = self.control.mint_tokens(APP, account=account or self.account)
        return Api(self.control, tokens["access_token"])

    def fresh_api_with(self, scope: str) -> Api:
        """A session whose token was granted exactly ``scope`` (space-separated)."""
        tokens = self.control.mint_tokens(APP, account=self.account, scope=scope)
        return Api(self.control, tokens["access_token"])

    def members(self, list_id: str) -> set[str]:
        return {m.email for m in self.control.list_members(self.account, list_id)}


@pytest.fixture
def cc(sandbox: SandboxControl) -> Iterator[SandboxControl]:
    """A blank sandbox; the token endpoint's 1/s limit is lifted unless a test restores it."""
    sandbox.reset()
    sandbox.set_options(token_requests_per_second=1_000)
    yield sandbox
    sandbox.clear_faults()


@pytest.fixture
def world(cc: SandboxControl) -> World:
    """A registered client with limits out of the way, an account, and an API session."""
    cc.register_client(
        APP,
        client_secret=SECRET,
        redirect_uris=[REDIRECT_URI],
        tier="custom",
        per_second=100_000,
        per_day=10_000_000,
    )
    account = cc.create_account("owner@example.com", name="Owner")
    api = Api(cc, cc.mint_tokens(APP, account=account)["access_token"])
    return World(control=cc, account=account, api=api)


@pytest.fixture
def slow(world: World) -> World:
    """Activities take 1 s per 10 items of sandbox time, so tests step them with the clock."""
    world.control.set_options(activity_items_per_second=10)
    return world


def poll(world: World, activity: dict) -> dict:
    """The activity as ``GET /v3/activities/{activity_id}`` shows it now."""
    response = world.api.get(activity["_links"]["self"]["href"])
    assert response.status_code == 200
    return response.json()


def json_import(world: World, rows: list[dict], list_ids: list[str]) -> dict:
    """Queue a JSON import of ``rows`` into ``list_ids``; the 201's activity."""
    response = world.api.post(
        "/v3/activities/contacts_json_import", json={"import_data": rows, "list_ids": list_ids}
    )
    assert response.status_code == 201, response.text
    return response.json()


def pkce_pair() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
    return verifier, challenge.rstrip(b"=").decode()

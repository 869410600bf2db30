"""Fixtures for the API tests; the sandbox-wide ones (``cc``, ``world``, ``slow``) come from
``tests/integrations/sandbox/conftest.py``."""

from __future__ import annotations

import pytest

from tests.integrations.sandbox.conftest import World


@pytest.fixture
def people(world: World) -> World:
    world.newsletter = world.new_list("Newsletter")
    world.customers = world.new_list("Customers")
    world.control.seed_contacts(
        world.account, count=120, list_ids=[world.newsletter], unsubscribed_every=4
    )
    world.control.seed_contacts(
        world.account, count=10, start=200, list_ids=[world.customers], unsubscribed_every=5
    )
    return world

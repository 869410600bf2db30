from __future__ import annotations

import pytest

from tests.factories import StaffFactory

pytest_plugins = ["tests.fixtures.sandbox", "tests.fixtures.portal", "tests.fixtures.bulk"]


@pytest.fixture
def staff_client(client, db):
    user = StaffFactory()
    client.force_login(user)
    client.user = user
    return client

"""``GET /v3/activities`` and ``GET /v3/activities/{activity_id}``.

Reference: https://developer.constantcontact.com/api_guide/activity_status.html
"""

from __future__ import annotations

import pytest

from tests.integrations.sandbox.conftest import World, json_import
from tests.integrations.sandbox.swagger import assert_api_error

pytestmark = pytest.mark.slow


def test_activity_listing_filters_by_state_and_forgets_after_ten_days(slow: World):
    cc, api = slow.control, slow.api
    target = slow.new_list("Target")
    json_import(slow, [{"email": "a@example.com"}], [target])
    cc.advance_clock(1)
    running = json_import(slow, [{"email": f"b{n}@example.com"} for n in range(100)], [target])
    listing = api.get("/v3/activities").json()["activities"]
    assert [a["state"] for a in listing] == ["processing", "completed"]  # newest first
    cc.advance_clock(0.5)
    processing = api.get("/v3/activities", params={"state": "processing"}).json()["activities"]
    assert [a["activity_id"] for a in processing] == [running["activity_id"]]
    cc.advance_clock(11 * 86_400)
    api = slow.fresh_api()  # the old access token expired meanwhile
    assert api.get("/v3/activities").json() == {"activities": []}
    assert_api_error(api.get(f"/v3/activities/{running['activity_id']}"), 404)

"""Injected faults over real HTTP: 500/503, held connections, TCP resets, token-endpoint
failures, and arrival jitter."""

from __future__ import annotations

import errno
import socket
import threading
import time
from urllib.parse import urlsplit

import pytest
import requests

from tests.integrations.sandbox.conftest import APP, REDIRECT_URI, SECRET, World
from tests.integrations.sandbox.swagger import assert_api_error, assert_gateway_error

pytestmark = pytest.mark.slow


def test_next_n_api_responses_fail_with_500_then_503(world: World):
    cc, api = world.control, world.api
    cc.inject_api_fault(500, count=2)
    cc.inject_api_fault(503)
    first, second = api.get("/v3/contacts"), api.get("/v3/contact_lists")
    assert assert_api_error(first, 500)[0]["error_message"] == (
        "There was a problem with our internal service."
    )
    assert_api_error(second, 500)
    assert assert_api_error(api.get("/v3/contacts"), 503)[0]["error_message"] == (
        "Our internal service is temporarily unavailable."
    )
    assert api.get("/v3/contacts").status_code == 200
    assert cc.stats(APP).status_5xx == 3


def test_faults_can_target_one_client_and_one_path(world: World):
    cc, api = world.control, world.api
    cc.inject_api_fault(503, client_id="someone-else")
    cc.inject_api_fault(500, path="/v3/activities")
    assert api.get("/v3/contacts").status_code == 200
    assert api.get("/v3/activities").status_code == 500
    assert api.get("/v3/activities").status_code == 200
    assert [fault["client_id"] for fault in cc.faults()["api"]] == ["someone-else"]


def test_faults_can_target_one_method(world: World):
    cc, api = world.control, world.api
    cc.inject_api_fault(500, method="POST", path="/v3/contact_lists")
    assert api.get("/v3/contact_lists").status_code == 200
    assert_api_error(api.post("/v3/contact_lists", json={"name": "Held"}), 500)
    assert cc.faults()["api"] == []


def test_timeout_holds_the_connection_past_the_client_read_timeout(world: World):
    cc, api = world.control, world.api
    cc.inject_api_fault("timeout", hold_seconds=10.0)
    started = time.monotonic()
    with pytest.raises(requests.ReadTimeout):
        api.session.get(api.base + "/v3/contacts", timeout=0.3)
    assert time.monotonic() - started < 8  # the client gave up; the hold had 10 s to go
    cc.clear_faults()  # releases the held connection
    assert api.get("/v3/contacts").status_code == 200
    stats = cc.stats(APP)
    assert (stats.requests, stats.timeouts, stats.status_2xx) == (2, 1, 1)


def test_timeout_ends_in_504_or_a_dropped_connection(world: World):
    cc, api = world.control, world.api
    cc.inject_api_fault("timeout", hold_seconds=0.2)
    response = api.get("/v3/contacts")
    assert_gateway_error(response, 504, "gateway_timeout")
    cc.inject_api_fault("timeout", hold_seconds=0.2, then="reset")
    with pytest.raises(requests.ConnectionError):
        api.get("/v3/contacts")
    assert cc.stats(APP).timeouts == 2


def test_clearing_faults_releases_held_connections(world: World):
    cc, api = world.control, world.api
    cc.inject_api_fault("timeout", hold_seconds=30)
    results: list[int] = []
    worker = threading.Thread(target=lambda: results.append(api.get("/v3/contacts").status_code))
    worker.start()
    time.sleep(0.2)
    cc.clear_faults()
    worker.join(timeout=5)
    assert results == [504]


def _raw_request(url: str, token: str) -> bytes:
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=5) as sock:
        sock.sendall(
            f"GET /v3/contacts HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n".encode()
        )
        return sock.recv(65536)


def test_reset_closes_the_socket_with_a_tcp_rst_and_no_response(world: World):
    cc = world.control
    token = cc.mint_tokens(APP, account=world.account)["access_token"]
    cc.inject_api_fault("reset")
    with pytest.raises(ConnectionResetError) as reset:
        _raw_request(cc.url, token)
    assert reset.value.errno == errno.ECONNRESET
    assert _raw_request(cc.url, token).startswith(b"HTTP/1.1 200")
    cc.inject_api_fault("reset")
    with pytest.raises(requests.ConnectionError):
        world.api.get("/v3/contacts")
    stats = cc.stats(APP)
    assert (stats.resets, stats.by_status) == (2, {"reset": 2, "200": 1})


def _refresh(world: World, refresh_token: str = "whatever") -> requests.Response:
    return requests.post(
        world.control.token_url,
        data={"grant_type": "refresh_token", "refresh_token": refresh_token},
        auth=(APP, SECRET),
        timeout=10,
    )


def test_token_faults_429_503_and_invalid_grant(world: World):
    cc = world.control
    refresh_token = cc.mint_tokens(APP, account=world.account)["refresh_token"]
    cc.inject_token_fault(429)
    cc.inject_token_fault(503)
    cc.inject_token_fault("invalid_grant", count=2)
    throttled, unavailable = _refresh(world, refresh_token), _refresh(world, refresh_token)
    assert (throttled.status_code, throttled.json()["error"]) == (429, "too_many_requests")
    assert (unavailable.status_code, unavailable.json()["error"]) == (
        503,
        "temporarily_unavailable",
    )
    for _ in range(2):
        response = _refresh(world, refresh_token)
        assert response.json() == {
            "error": "invalid_grant",
            "error_description": "The refresh token is invalid or expired.",
        }
    assert _refresh(world, refresh_token).status_code == 200  # the token itself was untouched
    stats = cc.stats(APP)
    assert (stats.token_requests, stats.token_2xx, stats.token_429) == (5, 1, 1)
    assert (stats.invalid_grant, stats.token_throttled) == (2, 0)


def test_jitter_delays_api_and_token_requests(world: World):
    cc, api = world.control, world.api
    api.get("/v3/contacts")  # the connection is open before timing
    cc.set_jitter(150, 200)
    started = time.monotonic()
    assert api.get("/v3/contacts").status_code == 200
    assert time.monotonic() - started >= 0.15
    started = time.monotonic()
    _refresh(world)
    assert time.monotonic() - started >= 0.15
    assert cc.faults()["jitter"] == {"min_ms": 150.0, "max_ms": 200.0}
    cc.set_jitter(0, 0)
    assert cc.faults()["jitter"] == {"min_ms": 0.0, "max_ms": 0.0}


def test_jitter_is_applied_before_requests_are_counted(world: World):
    cc, api = world.control, world.api
    api.get("/v3/contacts")
    cc.set_jitter(500, 500)
    worker = threading.Thread(target=api.get, args=("/v3/contacts",))
    worker.start()
    time.sleep(0.25)
    assert cc.stats(APP).today["arrivals"] == 1  # the jittered request is not counted yet
    worker.join(timeout=5)
    assert cc.stats(APP).today["arrivals"] == 2


# --- faults the fault suite (bench/faults.py) relies on ---------------------------------------
def _import(world: World, list_id: str, emails: list[str]) -> requests.Response:
    body = {"import_data": [{"email": e} for e in emails], "list_ids": [list_id]}
    return world.api.session.post(
        world.api.base + "/v3/activities/contacts_json_import", json=body, timeout=1
    )


def test_a_timeout_applied_first_carries_the_request_out_and_loses_only_its_answer(
    world: World,
):
    cc = world.control
    list_id = world.new_list("Applied")
    cc.inject_api_fault(
        "timeout",
        path="/v3/activities/contacts_json_import",
        hold_seconds=10,
        applied_first=True,
    )
    with pytest.raises(requests.ReadTimeout):
        _import(world, list_id, ["held@example.com"])
    cc.clear_faults()
    activities = cc.activities(world.account)["activities"]
    assert [a["kind"] for a in activities] == ["contacts_json_import"]
    cc.advance_clock(5)
    assert world.members(list_id) == {"held@example.com"}
    assert cc.injected() == {"api:timeout": 1}


def test_the_same_import_applied_twice_is_counted_as_a_duplicate(world: World):
    cc = world.control
    list_id = world.new_list("Twice")
    for emails in (["a@example.com", "b@example.com"], ["b@example.com", "a@example.com"]):
        assert _import(world, list_id, emails).status_code == 201
    assert _import(world, list_id, ["c@example.com"]).status_code == 201
    cc.advance_clock(5)
    log = cc.activities(world.account)
    assert [a["applied"] for a in log["activities"]] == [True, True, True]
    assert [a["repeats_an_applied_one"] for a in log["activities"]] == [False, True, False]
    assert log["duplicates"] == 1


@pytest.mark.parametrize("state", ["failed", "timed_out", "cancelled"])
def test_an_activity_fault_ends_the_activity_in_that_state_having_applied_nothing(
    world: World, state: str
):
    cc, api = world.control, world.api
    list_id = world.new_list(f"Ends {state}")
    cc.inject_activity_fault(state, kind="contacts_json_import")
    activity_id = _import(world, list_id, ["never@example.com"]).json()["activity_id"]
    cc.advance_clock(5)
    answer = api.get(f"/v3/activities/{activity_id}").json()
    assert answer["state"] == state
    assert answer["status"]["person_count"] == 0
    assert answer["activity_errors"]
    assert "completed_at" not in answer
    assert world.members(list_id) == set()
    assert cc.activities(world.account)["activities"][0]["applied"] is False
    # The next one completes: the fault took one activity.
    _import(world, list_id, ["next@example.com"])
    cc.advance_clock(5)
    assert world.members(list_id) == {"next@example.com"}
    assert cc.injected() == {f"activity:{state}": 1}


def test_an_activity_fault_waits_for_an_activity_of_its_kind(world: World):
    cc = world.control
    list_id = world.new_list("Kinds")
    cc.inject_activity_fault("failed", kind="remove_list_memberships")
    _import(world, list_id, ["kept@example.com"])
    cc.advance_clock(5)
    assert world.members(list_id) == {"kept@example.com"}
    assert cc.faults()["activity"][0]["kind"] == "remove_list_memberships"


def test_a_token_timeout_applied_first_rotates_the_refresh_token_and_loses_the_answer(
    world: World,
):
    cc = world.control
    cc.register_client(
        APP, client_secret=SECRET, redirect_uris=[REDIRECT_URI], refresh_mode="rotating"
    )
    refresh_token = cc.mint_tokens(APP, account=world.account)["refresh_token"]
    cc.inject_token_fault("timeout", hold_seconds=0.2, applied_first=True)
    lost = _refresh(world, refresh_token)
    assert (lost.status_code, lost.json()["error"]) == (503, "temporarily_unavailable")
    # CC rotated it while the answer was lost: the old token is spent.
    assert _refresh(world, refresh_token).json()["error"] == "invalid_grant"
    assert cc.injected() == {"token:timeout": 1}


def test_a_token_timeout_not_applied_leaves_the_refresh_token_usable(world: World):
    cc = world.control
    refresh_token = cc.mint_tokens(APP, account=world.account)["refresh_token"]
    cc.inject_token_fault("timeout", hold_seconds=0.2)
    assert _refresh(world, refresh_token).status_code == 503
    assert _refresh(world, refresh_token).status_code == 200

"""Clients that are not Python reach CC through the proxy: curl and the README's Node example,
against a live portal (a real HTTP server) and the live sandbox."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from integrations.models import ApiCall
from integrations.services.proxy_tokens import proxy_token_create

ROOT = Path(__file__).resolve().parents[3]

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


@pytest.fixture
def secret(connected_account):
    return proxy_token_create(name="outside", accounts=[connected_account])[1]


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_curl_lists_and_imports_a_csv(live_server, secret, cc_app, tmp_path):
    headers = tmp_path / "headers.txt"
    listed = subprocess.run(
        [
            "curl",
            "-s",
            "-D",
            str(headers),
            f"{live_server.url}/proxy/v3/contact_lists",
            "-H",
            f"Authorization: Bearer {secret}",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    head = headers.read_text()
    assert head.startswith("HTTP/1.1 200"), head
    assert "x-cc-call-id" in head.lower() and "x-cc-quota-remaining" in head.lower()
    assert {row["name"] for row in json.loads(listed)["lists"]} == {"Newsletter", "Customers"}

    people = tmp_path / "people.csv"
    people.write_text("email\ncurl@example.com\n")
    imported = subprocess.run(
        [
            "curl",
            "-s",
            "-w",
            "\n%{http_code}",
            "-X",
            "POST",
            f"{live_server.url}/proxy/v3/activities/contacts_file_import",
            "-H",
            f"Authorization: Bearer {secret}",
            "-H",
            "X-CC-Lane: background",
            "-F",
            f"file=@{people};type=text/csv",
            "-F",
            f"list_ids={cc_app.lists[0].list_id}",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    body, _, status = imported.rpartition("\n")
    assert status == "201", body
    assert json.loads(body)["activity_id"]
    assert ApiCall.objects.filter(proxy_token__name="outside", lane="background").count() == 1


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_the_readmes_node_example_runs(live_server, secret):
    ran = subprocess.run(
        ["node", str(ROOT / "examples" / "proxy_client.mjs")],
        env={**os.environ, "CCPORTAL_URL": live_server.url, "CCPORTAL_TOKEN": secret},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert ran.returncode == 0, ran.stderr
    assert "Newsletter" in ran.stdout and "left today:" in ran.stdout
    assert secret not in ran.stdout

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from integrations.models import ApiKey

pytestmark = pytest.mark.django_db

GOOD = [
    "add",
    "--name",
    "Main",
    "--client-id",
    "cid-1",
    "--client-secret",
    "sec",
    "--redirect-uri",
    "https://portal.example.com/accounts/callback/",
]


def run(*args: str) -> str:
    out = StringIO()
    call_command("cc_key", *args, stdout=out)
    return out.getvalue()


def test_add_standard_key_with_secret_defaults_pkce_off():
    output = run(*GOOD, "--tier", "standard")
    key = ApiKey.objects.get(client_id="cid-1")
    assert (key.per_second, key.per_day, key.use_pkce) == (4, 10_000, False)
    assert key.client_secret == "sec"
    assert "sec" not in output.replace("secret", "")


def test_add_pkce_app_without_secret_defaults_pkce_on():
    run(
        "add",
        "--name",
        "Public",
        "--client-id",
        "cid-2",
        "--redirect-uri",
        "http://127.0.0.1:8000/cb",
        "--tier",
        "partner",
    )
    key = ApiKey.objects.get(client_id="cid-2")
    assert (key.client_secret, key.use_pkce, key.per_second, key.per_day) == ("", True, 10, 250_000)


def test_explicit_pkce_flag_wins():
    run(*GOOD, "--tier", "standard", "--pkce")
    assert ApiKey.objects.get().use_pkce is True


def test_custom_tier_with_limits():
    run(*GOOD, "--tier", "custom", "--per-second", "2", "--per-day", "500")
    key = ApiKey.objects.get()
    assert (key.per_second, key.per_day) == (2, 500)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--redirect-uri", "not a url", "--tier", "standard"], "is not an absolute http(s) URL"),
        (
            ["--redirect-uri", "ftp://x.example/cb", "--tier", "standard"],
            "is not an absolute http(s) URL",
        ),
        (["--tier", "gold"], "unknown tier 'gold'"),
        (["--tier", "custom"], "custom tier needs a per-second and a per-day limit"),
        (
            ["--tier", "custom", "--per-second", "3"],
            "custom tier needs a per-second and a per-day limit",
        ),
        (["--tier", "standard", "--per-second", "9"], "fixed limits"),
        (["--tier", "custom", "--per-second", "0", "--per-day", "5"], "must be at least 1"),
        (["--tier", "standard", "--name", "n" * 101], "name is 101 characters long; at most 100"),
        (
            ["--tier", "standard", "--client-id", "c" * 150],
            "client id is 150 characters long; at most 100",
        ),
        (
            ["--tier", "standard", "--redirect-uri", "https://x.example/" + "p" * 500],
            "redirect URI is 518 characters long; at most 500",
        ),
        (
            ["--tier", "standard", "--client-secret", "s" * 501],
            "client secret is 501 characters long; at most 500",
        ),
    ],
)
def test_bad_input_is_a_one_line_error_and_writes_nothing(args, message):
    base = GOOD[:-2] if "--redirect-uri" in args else GOOD
    with pytest.raises(CommandError) as excinfo:
        run(*base, *args)
    assert message in str(excinfo.value)
    assert "\n" not in str(excinfo.value).strip()
    assert not ApiKey.objects.exists()


def test_list_names_a_key_whose_secret_no_key_opens(settings):
    from cryptography.fernet import Fernet

    run(*GOOD, "--tier", "standard")
    settings.FIELD_ENCRYPTION_KEYS = [Fernet.generate_key().decode()]
    assert "cid-1\tMain\tstandard, 4/s, 10,000/day, unreadable secret: re-enter it" in run("list")


def test_duplicate_client_id_is_refused_and_first_key_kept():
    run(*GOOD, "--tier", "standard")
    with pytest.raises(CommandError, match="already exists"):
        run(
            "add",
            "--name",
            "Other",
            "--client-id",
            "cid-1",
            "--redirect-uri",
            "https://x.example/cb",
            "--tier",
            "partner",
        )
    assert list(ApiKey.objects.values_list("name", "tier")) == [("Main", "standard")]


def test_list_and_set_tier():
    run(*GOOD, "--tier", "standard")
    assert "cid-1\tMain\tstandard, 4/s, 10,000/day" in run("list")
    run("set-tier", "cid-1", "--tier", "partner")
    assert ApiKey.objects.get().per_second == 10
    with pytest.raises(CommandError, match="no API key with client id 'nope'"):
        run("set-tier", "nope", "--tier", "partner")
    with pytest.raises(CommandError, match="custom tier needs"):
        run("set-tier", "cid-1", "--tier", "custom")
    assert ApiKey.objects.get().tier == "partner"


@pytest.mark.slow
def test_cli_errors_are_one_line_without_traceback(tmp_path):
    import os
    import subprocess
    import sys

    result = subprocess.run(
        [
            sys.executable,
            "manage.py",
            "cc_key",
            "add",
            "--name",
            "N",
            "--client-id",
            "c",
            "--redirect-uri",
            "nope",
            "--tier",
            "standard",
        ],
        capture_output=True,
        text=True,
        env={
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "ccportal.settings",
            "CCPORTAL_VAR_DIR": str(tmp_path),
        },
        timeout=60,
    )
    assert result.returncode == 1
    assert (
        result.stderr.strip() == "CommandError: redirect URI 'nope' is not an absolute http(s) URL."
    )

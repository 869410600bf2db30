"""Settings parsing and the production profile, checked in fresh interpreters."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

ROOT = Path(__file__).resolve().parents[2]


def _clean_environment() -> dict[str, str]:
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DATABASE_URL", "REDIS_URL", "DJANGO_", "CC_"))
    }


def _run(code: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**_clean_environment(), **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def _settings(tmp_path, **env: str) -> dict:
    code = (
        "import json, os; os.environ.setdefault('DJANGO_SETTINGS_MODULE','ccportal.settings');"
        "from django.conf import settings as s;"
        "print(json.dumps({'db': {k: v for k, v in s.DATABASES['default'].items() if k in "
        "('ENGINE','NAME','HOST','PORT','USER','OPTIONS')}, 'cache': s.CACHES['default']['BACKEND'],"
        "'token_url': s.CC_TOKEN_URL, 'mode': s.CC_MODE, 'keys': len(s.FIELD_ENCRYPTION_KEYS),"
        "'store': s.CC_QUOTA_STORE}, default=str))"
    )
    result = _run(code, CCPORTAL_VAR_DIR=str(tmp_path), **env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.mark.slow
def test_default_database_is_sqlite_file_with_wal_and_immediate_transactions(tmp_path):
    parsed = _settings(tmp_path)
    assert parsed["db"]["ENGINE"] == "django.db.backends.sqlite3"
    assert parsed["db"]["NAME"] == str(tmp_path / "ccportal.sqlite3")
    assert parsed["db"]["OPTIONS"]["transaction_mode"] == "IMMEDIATE"
    assert "journal_mode=WAL" in parsed["db"]["OPTIONS"]["init_command"]
    assert parsed["db"]["OPTIONS"]["timeout"] >= 5
    assert parsed["store"].endswith("DatabaseStore")
    assert parsed["cache"].endswith("DatabaseCache")


@pytest.mark.slow
def test_postgres_url_and_redis_url_are_parsed(tmp_path):
    parsed = _settings(
        tmp_path,
        DATABASE_URL="postgres://portal:pw@db.internal:6543/ccportal",
        REDIS_URL="redis://127.0.0.1:6379/3",
    )
    db = parsed["db"]
    assert db["ENGINE"] == "django.db.backends.postgresql"
    assert (db["HOST"], str(db["PORT"]), db["USER"], db["NAME"]) == (
        "db.internal",
        "6543",
        "portal",
        "ccportal",
    )
    assert "transaction_mode" not in db.get("OPTIONS", {})
    assert parsed["cache"] == "ccportal.cache.FailoverCache"
    assert parsed["store"].endswith("RedisStore")


@pytest.mark.slow
def test_development_generates_secrets_once_and_reuses_them(tmp_path):
    first = _run(
        "import ccportal.settings as s; print(s.SECRET_KEY, s.FIELD_ENCRYPTION_KEYS[0])",
        CCPORTAL_VAR_DIR=str(tmp_path),
    )
    second = _run(
        "import ccportal.settings as s; print(s.SECRET_KEY, s.FIELD_ENCRYPTION_KEYS[0])",
        CCPORTAL_VAR_DIR=str(tmp_path),
    )
    assert first.returncode == 0, first.stderr
    assert first.stdout == second.stdout
    assert (tmp_path / "secret_key").stat().st_mode & 0o077 == 0


@pytest.mark.slow
def test_sandbox_mode_is_default_in_development_and_live_in_production(tmp_path):
    assert _settings(tmp_path)["token_url"].startswith("http://127.0.0.1:8765/")
    live = _settings(tmp_path, CC_MODE="live")
    assert live["token_url"] == "https://authz.constantcontact.com/oauth2/default/v1/token"


def _production_env(tmp_path) -> dict[str, str]:
    return {
        "DJANGO_ENV": "production",
        "SECRET_KEY": "x" * 20 + Fernet.generate_key().decode(),
        "FIELD_ENCRYPTION_KEYS": Fernet.generate_key().decode(),
        "ALLOWED_HOSTS": "portal.example.com",
        "DATABASE_URL": f"sqlite:///{tmp_path}/prod.sqlite3",
        "CCPORTAL_VAR_DIR": str(tmp_path),
    }


@pytest.mark.slow
def test_production_profile_passes_check_deploy(tmp_path):
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env={**_clean_environment(), **_production_env(tmp_path)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


@pytest.mark.slow
@pytest.mark.parametrize("missing", ["SECRET_KEY", "FIELD_ENCRYPTION_KEYS", "ALLOWED_HOSTS"])
@pytest.mark.parametrize("how", ["unset", "empty"])
def test_production_stops_with_one_line_naming_a_missing_variable(tmp_path, missing, how):
    env = _production_env(tmp_path)
    if how == "unset":
        del env[missing]
    else:
        env[missing] = "  " if missing == "SECRET_KEY" else " , "
    result = subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=ROOT,
        env={**_clean_environment(), **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert lines[0].startswith(f"ccportal: {missing} must be set when DJANGO_ENV=production")
    assert not (tmp_path / "secret_key").exists()


@pytest.mark.slow
def test_production_from_the_example_env_file_is_debug_off_and_live(tmp_path):
    """Copying .env.example and setting DJANGO_ENV=production gives a production profile."""
    example = (ROOT / ".env.example").read_text()
    assigned = dict(
        line.split("=", 1)
        for line in example.splitlines()
        if line and not line.startswith("#") and "=" in line
    )
    assert "DEBUG" not in assigned and "CC_MODE" not in assigned
    env = {k: v for k, v in assigned.items() if v}
    env.update(_production_env(tmp_path))
    result = _run("import ccportal.settings as s; print(s.DEBUG, s.CC_MODE, s.CC_TOKEN_URL)", **env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [
        "False",
        "live",
        "https://authz.constantcontact.com/oauth2/default/v1/token",
    ]


@pytest.mark.slow
def test_debug_and_sandbox_can_still_be_chosen_explicitly_in_production(tmp_path):
    env = {**_production_env(tmp_path), "DEBUG": "true", "CC_MODE": "sandbox"}
    result = _run("import ccportal.settings as s; print(s.DEBUG, s.CC_MODE)", **env)
    assert result.stdout.split() == ["True", "sandbox"], result.stderr


@pytest.mark.slow
def test_check_deploy_refuses_sandbox_mode_in_production(tmp_path):
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy"],
        cwd=ROOT,
        env={**_clean_environment(), **_production_env(tmp_path), "CC_MODE": "sandbox"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert "integrations.E004" in result.stderr + result.stdout


def test_every_environment_variable_the_settings_read_is_documented():
    import re

    source = (ROOT / "ccportal" / "settings.py").read_text()
    read = set(re.findall(r'env(?:\.\w+)?\(\s*"([A-Z][A-Z0-9_]*)"', source))
    documented = set(
        re.findall(r"^#?\s*([A-Z][A-Z0-9_]*)=", (ROOT / ".env.example").read_text(), re.M)
    )
    assert len(read) > 20, "the pattern no longer finds the settings' variables"
    assert read - documented == set()

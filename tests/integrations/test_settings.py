"""Settings parsing and the production profile, checked in fresh interpreters."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from cryptography.fernet import Fernet

ROOT = Path(__file__).resolve().parents[2]


def _run(code: str, **env: str) -> subprocess.CompletedProcess:
    clean = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DATABASE_URL", "REDIS_URL", "DJANGO_", "CC_"))
    }
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**clean, **env},
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


def test_default_database_is_sqlite_file_with_wal_and_immediate_transactions(tmp_path):
    parsed = _settings(tmp_path)
    assert parsed["db"]["ENGINE"] == "django.db.backends.sqlite3"
    assert parsed["db"]["NAME"] == str(tmp_path / "ccportal.sqlite3")
    assert parsed["db"]["OPTIONS"]["transaction_mode"] == "IMMEDIATE"
    assert "journal_mode=WAL" in parsed["db"]["OPTIONS"]["init_command"]
    assert parsed["db"]["OPTIONS"]["timeout"] >= 5
    assert parsed["store"].endswith("DatabaseStore")
    assert parsed["cache"].endswith("DatabaseCache")


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
    assert parsed["cache"].endswith("RedisCache")
    assert parsed["store"].endswith("RedisStore")


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


def test_production_profile_passes_check_deploy(tmp_path):
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env={
            **{
                k: v
                for k, v in os.environ.items()
                if not k.startswith(("DATABASE_URL", "REDIS_URL", "CC_", "DJANGO_"))
            },
            **_production_env(tmp_path),
        },
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_production_profile_requires_secret_key(tmp_path):
    env = _production_env(tmp_path)
    del env["SECRET_KEY"]
    result = _run("import ccportal.settings", **env)
    assert result.returncode != 0
    assert "SECRET_KEY" in result.stderr
    assert not (tmp_path / "secret_key").exists()


def test_every_environment_variable_the_settings_read_is_documented():
    import re

    source = (ROOT / "ccportal" / "settings.py").read_text()
    read = set(re.findall(r'env(?:\.\w+)?\(\s*"([A-Z][A-Z0-9_]*)"', source))
    documented = set(
        re.findall(r"^#?\s*([A-Z][A-Z0-9_]*)=", (ROOT / ".env.example").read_text(), re.M)
    )
    assert len(read) > 20, "the pattern no longer finds the settings' variables"
    assert read - documented == set()

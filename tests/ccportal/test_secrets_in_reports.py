"""No OAuth code, state, token or password inside a URL reaches a log line, the debug page or
an error e-mail."""

from __future__ import annotations

import logging
import secrets
import sys

import pytest

from ccportal.logging import SecretScrubber, scrub
from integrations.debug import SecretSafeExceptionReporter

PASSWORD = "redis-pw-" + secrets.token_hex(6)
REDIS_URL = f"redis://default:{PASSWORD}@cache.internal:6379/0"
DATABASE_URL = f"postgres://portal:{PASSWORD}@db.internal:5432/ccportal"


def _record(message: str, *args, exc_info=None) -> logging.LogRecord:
    return logging.LogRecord(
        "django.request", logging.WARNING, __file__, 1, message, args, exc_info
    )


def _emitted(record: logging.LogRecord) -> str:
    assert SecretScrubber().filter(record) is True  # rewritten, never dropped
    return logging.Formatter("%(message)s").format(record)


def test_a_failed_callback_logged_by_django_keeps_its_code_and_state_out():
    code, state = secrets.token_urlsafe(16), secrets.token_urlsafe(16)
    line = _emitted(_record("Bad Request: %s", f"/accounts/callback/?code={code}&state={state}"))
    assert code not in line and state not in line
    assert line == "Bad Request: /accounts/callback/?code=[hidden]&state=[hidden]"


def test_a_form_body_keeps_its_code_out():
    code = secrets.token_urlsafe(16)
    assert scrub(f"code={code}&grant_type=authorization_code") == (
        "code=[hidden]&grant_type=authorization_code"
    )


def test_a_request_line_from_the_development_server_is_scrubbed_too():
    verifier = secrets.token_urlsafe(32)
    line = _emitted(
        _record('"%s" %s %s', f"GET /cb?code_verifier={verifier}&x=1 HTTP/1.1", "400", "12")
    )
    assert verifier not in line and "x=1" in line


def test_passwords_inside_urls_are_hidden_in_messages_and_tracebacks():
    try:
        raise ConnectionError(f"cannot reach {REDIS_URL}")
    except ConnectionError:
        record = _record("cache down: %s", DATABASE_URL, exc_info=sys.exc_info())
    line = _emitted(record)
    assert PASSWORD not in line and PASSWORD not in record.exc_text
    assert "postgres://portal:[hidden]@db.internal:5432/ccportal" in line


@pytest.mark.parametrize(
    "text",
    [
        "error_code=500 status_code=429",
        "JobState=running",
        "https://api.cc.email/v3/contacts",
        "Task id=1 path=integrations.tasks.bulk_job_run_task state=FAILED",
    ],
)
def test_ordinary_text_is_left_alone(text):
    assert scrub(text) == text


def _report_of_a_failure(rf, monkeypatch, settings):
    settings.REDIS_URL = REDIS_URL
    settings.CACHES = {
        **settings.CACHES,
        "redis": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
        },
    }
    # runserver hands the process environment to every request's META.
    request = rf.get("/", REDIS_URL=REDIS_URL, DATABASE_URL=DATABASE_URL)
    try:
        location = {"url": REDIS_URL}  # noqa: F841  (a frame variable the report prints)
        raise RuntimeError("the cache broke")
    except RuntimeError:
        info = sys.exc_info()
    return SecretSafeExceptionReporter(request, *info)


def test_the_debug_page_hides_credentials_in_settings_meta_and_frames(rf, monkeypatch, settings):
    report = _report_of_a_failure(rf, monkeypatch, settings)
    for text in (report.get_traceback_html(), report.get_traceback_text()):
        assert PASSWORD not in text
        assert "cache.internal" in text  # what is safe to show still shows

"""System checks: a misconfiguration is named at start-up, with a stable id and a hint."""

from __future__ import annotations

from cryptography.fernet import Fernet

from integrations.checks import check_cc_endpoints, check_field_encryption_keys


def _ids(messages) -> list[str]:
    return [message.id for message in messages]


def test_encryption_keys_must_be_present_and_valid(settings):
    settings.FIELD_ENCRYPTION_KEYS = [Fernet.generate_key().decode()]
    assert check_field_encryption_keys(None) == []
    settings.FIELD_ENCRYPTION_KEYS = []
    (empty,) = check_field_encryption_keys(None)
    assert empty.id == "integrations.E001" and "Fernet.generate_key" in empty.hint
    settings.FIELD_ENCRYPTION_KEYS = [Fernet.generate_key().decode(), "not-a-key"]
    (bad,) = check_field_encryption_keys(None)
    assert bad.id == "integrations.E002" and "entry 2" in bad.msg


def test_cc_endpoints_must_be_absolute_urls(settings):
    assert check_cc_endpoints(None) == []
    settings.CC_TOKEN_URL = "authz.example.com/token"
    (error,) = check_cc_endpoints(None)
    assert error.id == "integrations.E003" and "token_url" in error.msg
    assert "CC_TOKEN_URL" in error.hint


def test_plain_http_in_live_mode_is_a_warning(settings):
    settings.CC_MODE = "live"
    settings.CC_API_BASE_URL = "http://api.example.com/v3"
    assert "integrations.W001" in _ids(check_cc_endpoints(None))

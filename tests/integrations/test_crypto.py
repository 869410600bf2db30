from __future__ import annotations

import pytest
from cryptography.fernet import Fernet
from django.db import connection

from integrations.crypto import DecryptionError
from integrations.models import ApiKey, ConnectedAccount
from integrations.services.encryption import encryption_keys_rotate
from tests.factories import ApiKeyFactory, ConnectedAccountFactory

pytestmark = pytest.mark.django_db


def _raw(model, pk: int, column: str) -> str:
    table = model._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {column} FROM {table} WHERE id = %s", [pk])
        return cursor.fetchone()[0]


def test_secret_round_trips_and_is_not_stored_in_clear():
    account = ConnectedAccountFactory(access_token="tok-AAA", refresh_token="ref-BBB")
    raw = _raw(ConnectedAccount, account.pk, "access_token")
    assert raw.startswith("gAAAA") and "tok-AAA" not in raw
    reread = ConnectedAccount.objects.get(pk=account.pk)
    assert (reread.access_token, reread.refresh_token) == ("tok-AAA", "ref-BBB")


def test_empty_secret_stays_empty():
    key = ApiKeyFactory(client_secret="")
    assert _raw(ApiKey, key.pk, "client_secret") == ""
    assert ApiKey.objects.get(pk=key.pk).client_secret == ""


def test_rotation_then_removing_old_key_keeps_every_secret_readable(settings):
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    settings.FIELD_ENCRYPTION_KEYS = [old]
    key = ApiKeyFactory(client_secret="client-secret-1")
    account = ConnectedAccountFactory(api_key=key, access_token="a-1", refresh_token="r-1")

    settings.FIELD_ENCRYPTION_KEYS = [new, old]
    counts = encryption_keys_rotate()
    assert counts["integrations.ApiKey"] == 1
    assert counts["integrations.ConnectedAccount"] == 1

    settings.FIELD_ENCRYPTION_KEYS = [new]
    assert ApiKey.objects.get(pk=key.pk).client_secret == "client-secret-1"
    reread = ConnectedAccount.objects.get(pk=account.pk)
    assert (reread.access_token, reread.refresh_token) == ("a-1", "r-1")


def test_unrotated_secret_with_old_key_removed_raises_explicit_error(settings):
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    settings.FIELD_ENCRYPTION_KEYS = [old]
    account = ConnectedAccountFactory(access_token="a-2")
    ciphertext = _raw(ConnectedAccount, account.pk, "access_token")

    settings.FIELD_ENCRYPTION_KEYS = [new]
    with pytest.raises(DecryptionError) as excinfo:
        ConnectedAccount.objects.get(pk=account.pk)
    message = str(excinfo.value)
    assert "integrations.ConnectedAccount.access_token" in message
    assert "FIELD_ENCRYPTION_KEYS" in message
    assert ciphertext not in message and "a-2" not in message


def test_rotate_command_reports_counts(settings):
    from django.core.management import call_command

    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    settings.FIELD_ENCRYPTION_KEYS = [old]
    ApiKeyFactory(client_secret="x")
    settings.FIELD_ENCRYPTION_KEYS = [new, old]
    from io import StringIO

    out = StringIO()
    call_command("rotate_encryption_keys", stdout=out)
    assert "integrations.ApiKey: 1 rows re-encrypted" in out.getvalue()
    settings.FIELD_ENCRYPTION_KEYS = [new]
    assert ApiKey.objects.get().client_secret == "x"

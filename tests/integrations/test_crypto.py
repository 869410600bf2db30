from __future__ import annotations

from io import StringIO

import pytest
from cryptography.fernet import Fernet
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection

from integrations import crypto
from integrations.crypto import DecryptionError, is_unreadable
from integrations.models import ApiKey, ConnectedAccount
from integrations.services.encryption import encryption_keys_rotate
from integrations.services.keys import api_key_create, api_key_update
from integrations.services.oauth import connect_start
from integrations.services.tokens import access_token
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


def _keys(settings, *keys: str) -> None:
    settings.FIELD_ENCRYPTION_KEYS = list(keys)


def _fernet_keys(n: int) -> list[str]:
    return [Fernet.generate_key().decode() for _ in range(n)]


def test_rotation_then_removing_old_key_keeps_every_secret_readable(settings):
    old, new = _fernet_keys(2)
    _keys(settings, old)
    key = ApiKeyFactory(client_secret="client-secret-1")
    account = ConnectedAccountFactory(api_key=key, access_token="a-1", refresh_token="r-1")

    _keys(settings, new, old)
    report = encryption_keys_rotate()
    assert report.rewritten["integrations.ApiKey"] == 1
    assert report.rewritten["integrations.ConnectedAccount"] == 1
    assert report.unreadable == []

    _keys(settings, new)
    assert ApiKey.objects.get(pk=key.pk).client_secret == "client-secret-1"
    reread = ConnectedAccount.objects.get(pk=account.pk)
    assert (reread.access_token, reread.refresh_token) == ("a-1", "r-1")


def test_a_row_no_key_opens_still_loads_and_says_which_secret_it_is(settings):
    old, new = _fernet_keys(2)
    _keys(settings, old)
    account = ConnectedAccountFactory(access_token="a-2", refresh_token="r-2")
    ciphertext = _raw(ConnectedAccount, account.pk, "access_token")

    _keys(settings, new)
    reread = ConnectedAccount.objects.get(pk=account.pk)
    assert reread.tokens_unreadable
    assert is_unreadable(reread.access_token) and reread.access_token == ""
    assert reread.access_token_fingerprint == "unreadable: re-enter it"
    message = str(reread.access_token.error())
    assert "integrations.ConnectedAccount.access_token" in message
    assert "FIELD_ENCRYPTION_KEYS" in message
    assert ciphertext not in message and "a-2" not in message
    assert "a-2" not in repr(reread.access_token)


def test_saving_a_row_with_an_unreadable_secret_keeps_the_ciphertext(settings):
    old, new = _fernet_keys(2)
    _keys(settings, old)
    account = ConnectedAccountFactory(access_token="a-3", label="before")
    ciphertext = _raw(ConnectedAccount, account.pk, "access_token")

    _keys(settings, new)
    reread = ConnectedAccount.objects.get(pk=account.pk)
    reread.label = "after"
    reread.save()
    assert _raw(ConnectedAccount, account.pk, "access_token") == ciphertext

    _keys(settings, old)  # the right key is back: the token was never lost
    assert ConnectedAccount.objects.get(pk=account.pk).access_token == "a-3"


def test_an_unreadable_client_secret_is_neither_sent_nor_taken_for_a_pkce_key(settings):
    old, new = _fernet_keys(2)
    _keys(settings, old)
    key = ApiKeyFactory(client_secret="s3cret", use_pkce=False)

    _keys(settings, new)
    key = ApiKey.objects.get(pk=key.pk)
    assert key.secret_unreadable and not key.is_public_client
    assert key.client_secret_fingerprint == "unreadable: re-enter it"
    with pytest.raises(DecryptionError, match=r"integrations\.ApiKey\.client_secret"):
        connect_start(session={}, api_key=key)


def test_a_token_no_key_opens_stops_the_call_with_the_reason(settings):
    old, new = _fernet_keys(2)
    _keys(settings, old)
    account = ConnectedAccountFactory(access_token="a-4", refresh_token="r-4")

    _keys(settings, new)
    with pytest.raises(DecryptionError, match=r"access_token|refresh_token"):
        access_token(account=ConnectedAccount.objects.get(pk=account.pk))


def test_updating_a_key_keeps_an_unreadable_secret_until_one_is_entered(settings):
    old, new = _fernet_keys(2)
    _keys(settings, old)
    key = ApiKeyFactory(client_secret="s3cret", use_pkce=False)
    ciphertext = _raw(ApiKey, key.pk, "client_secret")

    _keys(settings, new)
    stale = ApiKey.objects.get(pk=key.pk)
    fields = dict(name="renamed", client_id=stale.client_id, redirect_uri=stale.redirect_uri)
    api_key_update(api_key=stale, tier=stale.tier, **fields)
    assert _raw(ApiKey, key.pk, "client_secret") == ciphertext
    assert ApiKey.objects.get(pk=key.pk).use_pkce is False

    api_key_update(api_key=stale, tier=stale.tier, client_secret="fresh", **fields)
    assert ApiKey.objects.get(pk=key.pk).client_secret == "fresh"


def test_a_secret_that_does_not_read_back_is_not_saved(settings, monkeypatch):
    writer, reader = _fernet_keys(2)
    _keys(settings, reader)
    # A writer whose key is not among the keys that read: what it stores nobody can open.
    monkeypatch.setattr(
        crypto, "encrypt", lambda plaintext: Fernet(writer).encrypt(plaintext.encode()).decode()
    )
    with pytest.raises(DecryptionError, match="does not read back"):
        api_key_create(
            name="k", client_id="cid-1", redirect_uri="https://portal.example/cb", client_secret="s"
        )
    assert not ApiKey.objects.filter(client_id="cid-1").exists()


def test_rotate_command_reports_counts(settings):
    old, new = _fernet_keys(2)
    _keys(settings, old)
    ApiKeyFactory(client_secret="x")
    _keys(settings, new, old)

    out = StringIO()
    call_command("rotate_encryption_keys", stdout=out)
    assert "integrations.ApiKey: 1 rows re-encrypted" in out.getvalue()
    _keys(settings, new)
    assert ApiKey.objects.get().client_secret == "x"


def test_rotate_command_names_each_unreadable_row_and_fails(settings):
    lost, old, new = _fernet_keys(3)
    _keys(settings, lost)
    account = ConnectedAccountFactory(access_token="a-5", refresh_token="r-5")
    _keys(settings, new, old)

    out, err = StringIO(), StringIO()
    # The account's two tokens and its key's client secret.
    with pytest.raises(CommandError, match="3 stored secret"):
        call_command("rotate_encryption_keys", stdout=out, stderr=err)
    assert f"integrations.ConnectedAccount #{account.pk} access_token" in err.getvalue()
    assert f"integrations.ConnectedAccount #{account.pk} refresh_token" in err.getvalue()
    assert f"integrations.ApiKey #{account.api_key.pk} client_secret" in err.getvalue()
    assert "Traceback" not in err.getvalue()
    _keys(settings, lost)  # left as it was
    assert ConnectedAccount.objects.get(pk=account.pk).refresh_token == "r-5"

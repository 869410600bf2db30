"""Model fields whose values are stored encrypted (see ``integrations.crypto``)."""

from __future__ import annotations

from django.db import models

from integrations import crypto


class EncryptedTextField(models.TextField):
    """A text field stored as a Fernet token.

    Empty strings are stored as empty strings, so "no secret" stays visible without a key.
    Lookups other than ``isnull``/``exact ''`` make no sense on ciphertext and are not offered
    by the admin (never list these fields in ``search_fields``).
    """

    description = "Text encrypted with FIELD_ENCRYPTION_KEYS"

    def from_db_value(self, value, expression, connection):
        if not value:
            return value
        label = f"{self.model._meta.label}.{self.name}" if hasattr(self, "model") else self.name
        try:
            return crypto.decrypt(value, label=label)
        except crypto.DecryptionError:
            # The row still loads, so the pages that list it work; whoever needs the secret
            # itself is told it cannot be read (crypto.UnreadableSecret.error).
            return crypto.UnreadableSecret(value, label=label)

    def get_prep_value(self, value):
        if crypto.is_unreadable(value):
            return value.ciphertext  # written back as it was read: nothing is erased
        value = super().get_prep_value(value)
        if not value:
            return value
        return crypto.encrypt(value)

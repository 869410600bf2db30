"""Django admin for every model. Secrets are never rendered: only whether one is stored, its
expiry and a short fingerprint. Secrets can be *set* (write-only inputs), never read back.

Who may do what follows the portal's permissions (``integrations.permissions``), not Django's
per-model ones: ``view_portal`` to look at anything, ``operate_portal`` to change accounts and
jobs and to run the actions that disconnect or cancel, ``manage_keys`` to add, change or delete
API keys. The call log and the usage ledgers are written by the portal alone: nobody changes
them here, and only a superuser deletes their rows. A staff user with none of the three sees
an empty admin.

The admin of each subject lives in a module of this package; importing them registers them.
"""

from integrations.admin import alerts, keys, ledgers, tokens  # noqa: F401  (registration)
from integrations.admin.keys import ApiKeyAdmin, ConnectedAccountAdmin

__all__ = ["ApiKeyAdmin", "ConnectedAccountAdmin"]

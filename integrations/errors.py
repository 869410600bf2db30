"""The one error base of ccportal's faces.

Every error a service raises for a person to read is a :class:`PortalError`; the rest is the
client library's :class:`~integrations.constant_contact.errors.CCError`. So a view or a command
catches those two and shows ``str(exc)``, a single line that never holds a secret. Which HTTP
status a view answers with is the view's decision, never the service's.
"""

from __future__ import annotations


class PortalError(Exception):
    """A service refused or could not finish; ``str(exc)`` is one line fit to show."""


class Unavailable(PortalError):
    """Something ccportal depends on (a store, CC's token endpoint) is not answering just now;
    the same request may succeed in a moment."""

"""The account summary: ``GET /v3/account/summary``, the only account endpoint ccportal reads.

The answer is the swagger's ``Customer``; ``physical_address`` is added when ``extra_fields``
asks for it, and ``company_logo`` never is ("If a company logo does not exist, nothing is
returned"). The route needs ``account_read`` instead of ``contact_data`` (see ``ROUTES``).

Reference: https://developer.constantcontact.com/api_reference/index.html#!/Account_Services/getAccountById
"""

from __future__ import annotations

import hashlib
from typing import Any

from integrations.sandbox.api.common import Ctx, csv_param
from integrations.sandbox.responses import Reply, json_reply
from integrations.sandbox.state import Account

EXTRA_FIELDS = ("physical_address", "company_logo")


def summary_json(account: Account, extra_fields: list[str]) -> dict[str, Any]:
    """``Customer`` for ``account``: its email is the owner's ``contact_email``."""
    first, _, last = account.name.partition(" ")
    data: dict[str, Any] = {
        "contact_email": account.email,
        "country_code": "US",
        # Lowercase letters and digits like CC's ("p07e1l8cdif9dl"), stable per account.
        "encoded_account_id": "a" + hashlib.sha256(account.sub.encode()).hexdigest()[:13],
        "first_name": first,
        "organization_name": account.organization_name,
        "state_code": "MA",
        "time_zone_id": "US/Eastern",
    }
    if last:
        data["last_name"] = last
    if "physical_address" in extra_fields:
        data["physical_address"] = {
            "address_line1": "123 Sandbox Street",
            "city": "Boston",
            "state_code": "MA",
            "postal_code": "02451",
            "country_code": "US",
        }
    return data


def get_summary(ctx: Ctx) -> Reply:
    extra_fields = csv_param(ctx.request.args, "extra_fields", EXTRA_FIELDS)
    return json_reply(summary_json(ctx.account, extra_fields))

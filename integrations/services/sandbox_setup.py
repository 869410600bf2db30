"""Make a freshly started local sandbox usable by the portal (``make run``).

The sandbox keeps everything in memory and forgets it on restart; the portal's database does
not. :func:`sandbox_prepare_for_portal` brings the two together again on every start.
"""

from __future__ import annotations

import secrets

from integrations.errors import PortalError
from integrations.models import ApiKey, Tier
from integrations.sandbox.control import SandboxControl, SandboxControlError
from integrations.sandbox.process import wait_until_answers
from integrations.services.keys import api_key_create

SANDBOX_CLIENT_ID = "sandbox-client"
SANDBOX_APP_NAME = "Sandbox app"
DEMO_ACCOUNT_EMAIL = "demo@example.com"
DEMO_ORGANISATION = "Demo Company"
# (name, first contact number, size): overlapping lists over 340 demo contacts.
DEMO_LISTS = (("Newsletter", 1, 240), ("Customers", 181, 120), ("Event attendees", 281, 60))
SANDBOX_WAIT_SECONDS = 15.0


class SandboxNotReady(PortalError):
    """The local sandbox did not answer, or refused to be prepared."""


def sandbox_prepare_for_portal(*, sandbox_url: str, portal_url: str) -> str:
    """Make the just-started sandbox ready for the portal at ``portal_url``; idempotent.
    Returns one line saying what is ready (no secret in it).

    Waits up to 15 s for the sandbox. Ensures the portal has the "Sandbox app" key (created
    once with a random secret; later runs read the secret back), registers that client in the
    sandbox with the same secret and redirect URI, and seeds a demo account with a few lists
    and a few hundred contacts.
    """
    if not wait_until_answers(sandbox_url, SANDBOX_WAIT_SECONDS):
        raise SandboxNotReady(
            f"the sandbox at {sandbox_url} did not answer within {SANDBOX_WAIT_SECONDS:.0f} s"
        )
    expected_redirect = f"{portal_url.rstrip('/')}/accounts/callback/"
    key = ApiKey.objects.filter(client_id=SANDBOX_CLIENT_ID).first()
    if key is None:
        key = api_key_create(
            name=SANDBOX_APP_NAME,
            client_id=SANDBOX_CLIENT_ID,
            client_secret=secrets.token_urlsafe(32),
            redirect_uri=expected_redirect,
            tier=Tier.STANDARD,
        )
    # The stored key's URI is what the portal sends; also accept the current portal address.
    redirect_uris = list(dict.fromkeys([key.redirect_uri, expected_redirect]))
    control = SandboxControl(sandbox_url)
    try:
        control.register_client(
            key.client_id,
            client_secret=key.client_secret,
            redirect_uris=redirect_uris,
            name=key.name,
            tier=key.tier if key.tier in (Tier.STANDARD, Tier.PARTNER) else Tier.CUSTOM,
            per_second=key.per_second,
            per_day=key.per_day,
        )
        account = control.create_account(
            DEMO_ACCOUNT_EMAIL, name=DEMO_ORGANISATION, organization_name=DEMO_ORGANISATION
        )
        summary = control.account(account)
        if not summary["contact_lists"]:
            for name, start, size in DEMO_LISTS:
                contact_list = control.seed_list(account, name)
                control.seed_contacts(
                    account,
                    count=size,
                    start=start,
                    list_ids=[contact_list.list_id],
                    email_template="demo.contact{n}@example.com",
                    unsubscribed_every=25,
                )
            summary = control.account(account)
    except SandboxControlError as error:
        raise SandboxNotReady(f"could not prepare the sandbox: {error}") from None
    return (
        f"Sandbox ready at {sandbox_url}: API key {key.client_id!r}, CC account "
        f"{DEMO_ACCOUNT_EMAIL} ({len(summary['contact_lists'])} lists, "
        f"{summary['contacts']} contacts)."
    )

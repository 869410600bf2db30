"""Where alerts go: webhooks and e-mail addresses, and a test that sends one now.

manage.py cc_alerts add-webhook --url URL --secret SECRET [--events e1,e2]
manage.py cc_alerts add-email --to ADDRESS [--events e1,e2]
manage.py cc_alerts list
manage.py cc_alerts remove ID
manage.py cc_alerts test ID
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import CommandError, CommandParser

from integrations.management.base import PortalCommand
from integrations.models import (
    AlertDelivery,
    AlertDestination,
    AlertEventType,
    AlertKind,
    DeliveryState,
)
from integrations.permissions import MANAGE_KEYS, VIEW_PORTAL
from integrations.services.alerts import (
    alert_destination_get,
    alert_destination_list,
    alert_destination_remove,
    alert_destination_test,
    alert_email_add,
    alert_webhook_add,
)


def describe(destination: AlertDestination) -> str:
    """One line about a destination; a webhook's secret shows as its fingerprint only."""
    parts = [
        str(destination.pk),
        destination.kind,
        destination.target_display,
        destination.events_display,
        "enabled" if destination.enabled else "disabled",
    ]
    if destination.kind == AlertKind.WEBHOOK:
        parts.append(f"secret {destination.secret_fingerprint or '—'}")
    return "\t".join(parts)


def outcome(delivery: AlertDelivery) -> str:
    if delivery.state == DeliveryState.DELIVERED:
        status = f" ({delivery.last_status_code})" if delivery.last_status_code else ""
        return f"delivered{status}"
    return f"failed: {delivery.last_error or 'no reason recorded'}"


class Command(PortalCommand):
    help = "Add, list, remove and test alert destinations (webhooks and e-mail)."
    required_permission = MANAGE_KEYS

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        events = f"comma-separated, from: {', '.join(AlertEventType.subscribable())} (default: all)"
        webhook = sub.add_parser("add-webhook", help="POST signed JSON to a URL")
        webhook.add_argument("--url", required=True)
        webhook.add_argument(
            "--secret", required=True, help="signs every delivery; at least 16 characters"
        )
        webhook.add_argument("--events", default="", help=events)

        email = sub.add_parser("add-email", help="send alerts to an e-mail address")
        email.add_argument("--to", required=True, metavar="ADDRESS")
        email.add_argument("--events", default="", help=events)

        sub.add_parser("list", help="show every destination")
        remove = sub.add_parser("remove", help="delete a destination and its delivery log")
        remove.add_argument("id", type=int)
        test = sub.add_parser("test", help="send a test event now and show what happened")
        test.add_argument("id", type=int)

    def permission_for(self, options: dict[str, Any]) -> str | None:
        return VIEW_PORTAL if options.get("action") == "list" else MANAGE_KEYS

    def handle(self, *args, **options) -> None:
        action = options["action"]
        if action == "add-webhook":
            destination = alert_webhook_add(
                url=options["url"], secret=options["secret"], events=options["events"]
            )
            self.stdout.write(f"Added {describe(destination)}")
        elif action == "add-email":
            destination = alert_email_add(address=options["to"], events=options["events"])
            self.stdout.write(f"Added {describe(destination)}")
        elif action == "remove":
            destination = alert_destination_remove(pk=options["id"])
            self.stdout.write(f"Removed {destination}.")
        elif action == "test":
            destination = alert_destination_get(pk=options["id"])
            delivery = alert_destination_test(destination=destination)
            line = f"Test to {destination}: {outcome(delivery)}"
            if delivery.state != DeliveryState.DELIVERED:
                raise CommandError(line)
            self.stdout.write(line)
        else:
            destinations = list(alert_destination_list())
            if not destinations:
                self.stdout.write(
                    "No alert destinations yet. Add one with: manage.py cc_alerts add-webhook "
                    "--help"
                )
            for destination in destinations:
                self.stdout.write(describe(destination))

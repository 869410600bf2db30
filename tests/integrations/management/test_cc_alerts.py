"""``manage.py cc_alerts``: add, list, remove and test destinations; one-line refusals."""

from __future__ import annotations

import json
from io import StringIO

import pytest
from django.core import mail
from django.core.management import CommandError, call_command

from integrations.models import AlertDestination, AlertKind
from integrations.services.alerts import signature_valid
from tests.factories import VIEWERS, PortalUserFactory
from tests.integrations.services.alert_receiver import Receiver

pytestmark = pytest.mark.django_db

SECRET = "cli-secret-0123456789"


def run(*args: str) -> str:
    out = StringIO()
    call_command("cc_alerts", *args, stdout=out)
    return out.getvalue()


def test_add_webhook_stores_it_and_prints_a_fingerprint_never_the_secret():
    output = run(
        "add-webhook",
        "--url",
        "https://hooks.example.com/cc",
        "--secret",
        SECRET,
        "--events",
        "quota.threshold,job.failed",
    )

    destination = AlertDestination.objects.get()
    assert (destination.kind, destination.target) == (
        AlertKind.WEBHOOK,
        "https://hooks.example.com/cc",
    )
    assert destination.events == ["quota.threshold", "job.failed"]
    assert destination.secret == SECRET
    assert SECRET not in output
    assert destination.secret_fingerprint in output
    assert SECRET not in run("list")


def test_add_email_and_list():
    run("add-email", "--to", "ops@example.com")

    listed = run("list")
    assert "ops@example.com" in listed and "all events" in listed


def test_list_says_how_to_start_when_empty():
    assert "cc_alerts add-webhook" in run("list")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["add-webhook", "--url", "not a url", "--secret", SECRET],
            "is not an http:// or https:// URL",
        ),
        (
            [
                "add-webhook",
                "--url",
                "https://x.example.com",
                "--secret",
                SECRET,
                "--events",
                "quota.nope",
            ],
            "unknown event 'quota.nope'",
        ),
        (["add-email", "--to", "nobody"], "is not an e-mail address"),
        (["remove", "99"], "no alert destination with id 99"),
        (["test", "99"], "no alert destination with id 99"),
    ],
)
def test_bad_input_is_one_line_not_a_traceback(args, message):
    with pytest.raises(CommandError) as refused:
        run(*args)
    assert message in str(refused.value)
    assert "\n" not in str(refused.value)
    assert AlertDestination.objects.count() == 0


def test_remove_deletes_the_destination():
    run("add-email", "--to", "ops@example.com")
    pk = AlertDestination.objects.get().pk

    assert "Removed" in run("remove", str(pk))
    assert AlertDestination.objects.count() == 0


def test_test_sends_a_signed_test_event_now_and_prints_the_outcome():
    with Receiver() as receiver:
        run("add-webhook", "--url", receiver.url, "--secret", SECRET)
        pk = AlertDestination.objects.get().pk
        output = run("test", str(pk))

    assert "delivered (200)" in output
    assert SECRET not in output
    (request,) = receiver.requests
    assert json.loads(request.body)["event"] == "test"
    assert signature_valid(SECRET, request.headers["X-CCPortal-Signature"], request.body)


def test_a_failed_test_ends_in_one_line_with_the_receivers_answer():
    with Receiver(statuses=[500]) as receiver:
        run("add-webhook", "--url", receiver.url, "--secret", SECRET)
        pk = AlertDestination.objects.get().pk
        with pytest.raises(CommandError, match="failed: answered 500 Internal Server Error"):
            run("test", str(pk))


def test_an_email_test_goes_through_the_mail_backend(settings):
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    run("add-email", "--to", "ops@example.com")
    pk = AlertDestination.objects.get().pk

    assert "delivered" in run("test", str(pk))
    (message,) = mail.outbox
    assert message.to == ["ops@example.com"] and "[ccportal] test" in message.subject


def test_a_viewer_may_list_but_not_add():
    PortalUserFactory(username="vera", groups=[VIEWERS])
    assert "No alert destinations" in run("--as-user", "vera", "list")
    with pytest.raises(CommandError, match="may not add or change API keys"):
        run("--as-user", "vera", "add-email", "--to", "ops@example.com")

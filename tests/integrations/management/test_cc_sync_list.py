"""``manage.py cc_sync_list`` against the live sandbox, in this process."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from integrations.models import BulkJob, JobState

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


@pytest.fixture
def sync_target(cc_app, connected_account, settings):
    settings.CC_BULK_FIRST_POLL_DELAY = 0.2
    settings.CC_BULK_MAX_POLL_DELAY = 1.0
    list_id = cc_app.lists[0].list_id
    cc_app.sandbox.seed_contacts(
        cc_app.cc_account,
        count=10,
        list_ids=[list_id],
        email_template="m{n}@example.com",
    )
    return cc_app, connected_account, list_id


def _requests_since_connect(app) -> int:
    """What reached the sandbox besides the connect's own account summary."""
    stats = app.sandbox.stats(app.api_key.client_id)
    return stats.requests - sum(stats.by_path.get("GET /v3/account/summary", {}).values())


def _run(account, list_id: str, path, *extra: str) -> str:
    out = StringIO()
    call_command(
        "cc_sync_list",
        "--account",
        str(account.pk),
        "--list",
        list_id,
        "--csv",
        str(path),
        *extra,
        stdout=out,
    )
    return out.getvalue()


def test_sync_with_yes_plans_runs_with_a_progress_bar_and_reports(sync_target, tmp_path):
    app, account, list_id = sync_target
    path = tmp_path / "members.csv"
    path.write_text("email\n" + "".join(f"m{n}@example.com\n" for n in range(6, 16)))
    output = _run(account, list_id, path, "--yes", "--allow-removals")

    assert "10 contacts from members.csv" in output
    assert "Add 5, remove 5, leave 5 unchanged." in output
    assert "Importing chunk 1 of 1" in output
    assert "█" in output and "100%" in output
    assert (
        "Done: 5 added, 5 removed, 5 unchanged, 0 not added (unsubscribed), 0 rejected rows"
        in output
    )
    members = {m.email for m in app.sandbox.list_members(app.cc_account, list_id)}
    assert members == {f"m{n}@example.com" for n in range(6, 16)}
    assert BulkJob.objects.get().state == JobState.COMPLETED


def test_without_yes_and_no_terminal_the_plan_is_saved_not_run(sync_target, tmp_path):
    app, account, list_id = sync_target
    path = tmp_path / "members.csv"
    path.write_text("email\nnew@example.com\n")
    with pytest.raises(CommandError, match="re-run with --yes"):
        _run(account, list_id, path, "--mode", "add")
    assert BulkJob.objects.get().state == JobState.PLANNED
    assert len(app.sandbox.list_members(app.cc_account, list_id)) == 10


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"name\nAda\n", "nothing was sent: no email column"),
        ("email\nzo\xeb@example.com\n".encode("latin-1"), "nothing was sent: line 2 is not UTF-8"),
        (b"", "nothing was sent: the file is empty"),
    ],
    ids=["no-email-column", "latin-1", "empty"],
)
def test_bad_input_is_one_line_and_sends_nothing(sync_target, tmp_path, content, message):
    app, account, list_id = sync_target
    path = tmp_path / "bad.csv"
    path.write_bytes(content)
    with pytest.raises(CommandError) as caught:
        _run(account, list_id, path, "--yes")
    assert str(caught.value).startswith(message)
    assert "\n" not in str(caught.value)
    assert _requests_since_connect(app) == 0
    assert not BulkJob.objects.exists()


def test_missing_file_and_unknown_account_are_one_line_errors(sync_target, tmp_path):
    _app, account, list_id = sync_target
    with pytest.raises(CommandError, match="no such file"):
        _run(account, list_id, tmp_path / "nope.csv")
    path = tmp_path / "m.csv"
    path.write_text("email\na@example.com\n")
    account.pk = 999
    with pytest.raises(CommandError, match="no connected account with id 999"):
        _run(account, list_id, path)


def test_yes_alone_never_runs_a_plan_whose_removals_need_confirming(sync_target, tmp_path):
    app, account, list_id = sync_target
    path = tmp_path / "members.csv"
    path.write_text("email\nm1@example.com\nm2@example.com\n")  # 8 of the 10 members go
    with pytest.raises(CommandError) as caught:
        _run(account, list_id, path, "--yes")
    assert "it removes 8 of the list's 10 members" in str(caught.value)
    assert "--allow-removals" in str(caught.value)
    assert BulkJob.objects.get().state == JobState.PLANNED
    assert len(app.sandbox.list_members(app.cc_account, list_id)) == 10


def test_a_stray_quote_refuses_the_file_before_anything_is_sent(sync_target, tmp_path):
    """The reproduction: five rows, one open quote; read loosely it is two rows, and a
    replace would remove q3-q5, whom the file lists."""
    app, account, list_id = sync_target
    path = tmp_path / "members.csv"
    path.write_text(
        'email,first_name\nq1@example.com,Ann\nq2@example.com,"Bob\nq3@example.com,Cy\n'
        "q4@example.com,Di\nq5@example.com,Ed\n"
    )
    with pytest.raises(CommandError, match="nothing was sent: line 3: a double quote"):
        _run(account, list_id, path, "--yes", "--allow-removals")
    assert _requests_since_connect(app) == 0
    assert not BulkJob.objects.exists()


def test_a_list_the_account_does_not_have_makes_no_job(sync_target, tmp_path):
    _app, account, _list_id = sync_target
    path = tmp_path / "members.csv"
    path.write_text("email\na@example.com\n")
    with pytest.raises(CommandError, match="has no list 'nope'; no job was made"):
        _run(account, "nope", path, "--yes")
    assert not BulkJob.objects.exists()

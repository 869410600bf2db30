"""``--as-user``: a command does only what the named portal login may do."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import CommandError, call_command, get_commands, load_command_class

from integrations.management.base import PortalCommand
from integrations.permissions import OPERATE_PORTAL, VIEW_PORTAL, refusal_message
from tests.factories import OPERATORS, VIEWERS, ApiKeyFactory, PortalUserFactory

pytestmark = pytest.mark.django_db


def run(command: str, *args: str, **options) -> str:
    out = StringIO()
    call_command(command, *args, stdout=out, **options)
    return out.getvalue()


@pytest.fixture
def key(db):
    return ApiKeyFactory(name="Main")


def test_without_a_user_the_command_runs_with_the_operators_full_rights(key, monkeypatch):
    monkeypatch.delenv("CCPORTAL_CLI_USER", raising=False)
    assert "Main" in run("cc_usage")


def test_a_user_with_the_permission_runs_the_command(key):
    PortalUserFactory(username="vera", groups=[VIEWERS])
    assert "Main" in run("cc_usage", "--as-user", "vera")


def test_a_user_without_the_permission_is_refused_in_one_line(key):
    user = PortalUserFactory(username="nils")
    with pytest.raises(CommandError) as refused:
        run("cc_usage", "--as-user", "nils")
    assert str(refused.value) == refusal_message(user, VIEW_PORTAL)
    assert "\n" not in str(refused.value)


def test_the_user_comes_from_the_environment_by_default(key, monkeypatch):
    PortalUserFactory(username="nils")
    monkeypatch.setenv("CCPORTAL_CLI_USER", "nils")
    with pytest.raises(CommandError, match=r"Your login \(nils\) may not see"):
        run("cc_usage")


def test_a_viewer_may_not_sync_and_nothing_is_looked_at(tmp_path):
    user = PortalUserFactory(username="vera", groups=[VIEWERS])
    args = ["--account", "999", "--list", "l1", "--csv", str(tmp_path / "missing.csv")]
    with pytest.raises(CommandError) as refused:
        run("cc_sync_list", *args, as_user="vera")
    # The refusal, not "no such file": the permission is checked before anything else.
    assert str(refused.value) == refusal_message(user, OPERATE_PORTAL)
    PortalUserFactory(username="otto", groups=[OPERATORS])
    with pytest.raises(CommandError, match="no such file"):
        run("cc_sync_list", *args, as_user="otto")


def test_an_unknown_or_inactive_user_is_refused(key):
    with pytest.raises(CommandError, match="no user 'ghost'"):
        run("cc_usage", "--as-user", "ghost")
    PortalUserFactory(username="gone", groups=[VIEWERS], is_active=False)
    with pytest.raises(CommandError, match="'gone' is inactive"):
        run("cc_usage", "--as-user", "gone")


@pytest.mark.parametrize(
    ("command", "permission"),
    [
        ("cc_accounts", VIEW_PORTAL),
        ("cc_usage", VIEW_PORTAL),
        ("cc_sync_list", OPERATE_PORTAL),
        ("cc_tokens_keepalive", OPERATE_PORTAL),
    ],
)
def test_each_command_names_the_permission_it_needs(command, permission):
    instance = load_command_class(get_commands()[command], command)
    assert isinstance(instance, PortalCommand)
    assert instance.required_permission == permission

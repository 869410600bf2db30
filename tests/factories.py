"""Small factories for tests (factory_boy)."""

from __future__ import annotations

import importlib
from types import SimpleNamespace

import factory
from django.apps import apps as django_apps
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import connection

from integrations.models import ApiKey, ConnectedAccount, Tier


class ApiKeyFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = ApiKey

    name = factory.Sequence(lambda n: f"App {n}")
    client_id = factory.Sequence(lambda n: f"client-{n:04d}")
    client_secret = "s3cret-value"
    redirect_uri = "http://127.0.0.1:8000/accounts/callback/"
    tier = Tier.STANDARD
    use_pkce = False


class ConnectedAccountFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = ConnectedAccount

    api_key = factory.SubFactory(ApiKeyFactory)
    label = factory.Sequence(lambda n: f"owner{n}@example.com")
    cc_user_id = factory.Sequence(lambda n: f"user-{n}")
    scopes = ["contact_data", "offline_access"]
    access_token = "access-token-value"
    refresh_token = "refresh-token-value"


class StaffFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"staff{n}")
    is_staff = True
    is_superuser = True
    password = factory.django.Password("pw")


#: Migration 0007's groups, by what they let a login do.
VIEWERS = "Portal viewers"
OPERATORS = "Portal operators"
KEY_MANAGERS = "Key managers"


class PortalUserFactory(StaffFactory):
    """A staff login that is no superuser: it may do what its groups allow, and nothing more.

    ``PortalUserFactory(groups=[VIEWERS])`` joins groups made by migration 0007, by name.
    """

    username = factory.Sequence(lambda n: f"user{n}")
    is_superuser = False

    @factory.post_generation
    def groups(self, create: bool, names: list[str] | None, **kwargs) -> None:
        if not (create and names):
            return
        if Group.objects.filter(name__in=names).count() < len(set(names)):
            # A transactional test empties every table, the migration's groups included.
            _portal_groups_migration().portal_groups_create(
                django_apps, SimpleNamespace(connection=connection)
            )
        self.groups.add(*(Group.objects.get(name=name) for name in names))


def _portal_groups_migration():
    return importlib.import_module("integrations.migrations.0007_portal_permissions")


def calls_waited(api_key, account, *slot_waits_ms: int, at=None, lane="background", kind="api"):
    """Record one answered ``GET /contacts`` per wait, as the gateway records a call."""
    from integrations.services.audit import api_call_record

    for wait in slot_waits_ms:
        api_call_record(
            api_key=api_key,
            account=account,
            method="GET",
            path_template="/contacts",
            status_code=200,
            slot_wait_ms=wait,
            lane=lane,
            kind=kind,
            at=at,
        )

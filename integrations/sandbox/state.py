"""The sandbox's in-memory world: options, registered clients, CC accounts and their data.

One :class:`Sandbox` holds everything. Account data (lists, contacts, activities) and the
OAuth stores are guarded by ``Sandbox.lock``; the limiter, stats, faults, clock and key ring
carry their own locks so the hot path of a request touches the big lock only for its handler.
"""

from __future__ import annotations

import dataclasses
import re
import secrets
import string
import threading
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

from integrations.constant_contact.endpoints import JWT_AUDIENCE, JWT_ISSUER
from integrations.constant_contact.limits import (
    ACCESS_TOKEN_LIFETIME_SECONDS,
    ACTIVITY_RETENTION_DAYS,
    AUTHORIZATION_CODE_LIFETIME_SECONDS,
    LISTS_PER_CONTACT_MAX,
    QUEUED_ACTIVITIES_MAX,
    REFRESH_TOKEN_IDLE_DAYS,
    TIER_LIMITS,
    TOKEN_REQUESTS_PER_SECOND,
)
from integrations.sandbox.activity_record import Activity
from integrations.sandbox.clock import SandboxClock
from integrations.sandbox.faults import Faults
from integrations.sandbox.keys import KeyRing
from integrations.sandbox.limits import Limiter
from integrations.sandbox.stats import Stats

# CC's tiers, with their published per-key limits, plus "custom": limits given per client.
TIERS = (*TIER_LIMITS, "custom")
REFRESH_MODES = ("rotating", "long_lived")

EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
UUID_RE = re.compile(
    r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
)


class SandboxError(ValueError):
    """A control-API request the sandbox cannot carry out; the message says why."""

    def __init__(self, message: str, *, status: int = HTTPStatus.BAD_REQUEST) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class SandboxOptions:
    """Sandbox-wide behaviour; every field can be set by the control API or ``--config``.

    The defaults are CC's published values (``integrations.constant_contact``).
    Reference: https://developer.constantcontact.com/api_guide/server_flow.html
    Reference: https://developer.constantcontact.com/api_guide/rate_limits.html
    """

    # The ``iss`` and ``aud`` CC's access tokens carry.
    issuer: str = JWT_ISSUER
    audience: str = JWT_AUDIENCE
    access_token_lifetime: int = ACCESS_TOKEN_LIFETIME_SECONDS  # CC: a static 24 h
    authorization_code_lifetime: int = AUTHORIZATION_CODE_LIFETIME_SECONDS  # 5 min, single use
    # CC: a refresh token unused for 180 days is dead.
    refresh_token_idle_seconds: int = REFRESH_TOKEN_IDLE_DAYS * 86_400
    token_requests_per_second: int = TOKEN_REQUESTS_PER_SECOND  # CC: 1 token request/s
    count_rejected: bool = True  # see limits.py
    activity_items_per_second: float = 20_000.0  # 40,000-row import ≈ 2 s
    activity_min_seconds: float = 0.0
    activity_start_delay_seconds: float = 0.0  # time spent "initialized"
    activity_retention_days: int = ACTIVITY_RETENTION_DAYS  # CC keeps activity status 10 days
    max_queued_activities: int = QUEUED_ACTIVITIES_MAX  # per account, then CC answers 429
    key_retention_seconds: int = 86_400  # how long a rotated-out key stays in the JWKS
    timeout_hold_seconds: float = 30.0  # default hold of a "timeout" fault

    def update(self, values: dict[str, Any]) -> None:
        """Set options from a mapping, all or nothing; unknown names, wrong types or
        impossible values raise SandboxError and change nothing."""
        names = [f.name for f in dataclasses.fields(self)]
        changed: dict[str, Any] = {}
        for name, value in values.items():
            if name not in names:
                raise SandboxError(f"unknown option {name!r}; known: {', '.join(names)}")
            current = getattr(self, name)
            if isinstance(current, bool):
                if not isinstance(value, bool):
                    raise SandboxError(f"option {name} must be true or false")
            elif isinstance(current, (int, float)):
                if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                    raise SandboxError(f"option {name} must be a non-negative number")
                value = type(current)(value)
            elif not isinstance(value, str) or not value:
                raise SandboxError(f"option {name} must be a non-empty string")
            changed[name] = value
        candidate = dataclasses.replace(self, **changed)
        if candidate.token_requests_per_second < 1 or candidate.activity_items_per_second <= 0:
            raise SandboxError(
                "token_requests_per_second and activity_items_per_second must be > 0"
            )
        for name, value in changed.items():
            setattr(self, name, value)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class Client:
    """A registered CC application (API key). An empty secret means a public (PKCE) client."""

    client_id: str
    redirect_uris: list[str]
    client_secret: str = ""
    name: str = ""
    tier: str = "standard"
    per_second: int = TIER_LIMITS["standard"][0]
    per_day: int = TIER_LIMITS["standard"][1]
    refresh_mode: str = "rotating"
    auto_approve: bool = False
    access_token_lifetime: int | None = None

    @property
    def is_public(self) -> bool:
        return not self.client_secret

    def as_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data.pop("client_secret")
        data["public"] = self.is_public
        return data


@dataclass(eq=False)
class ContactList:
    list_id: str
    name: str
    created_at: float
    updated_at: float
    description: str | None = None
    favorite: bool = False
    # Ordered set of contact ids, in the order they joined.
    members: dict[str, None] = field(default_factory=dict)


# Profile fields a contact carries (beyond email and permission), as named in ContactResource
# and the import column names.
PROFILE_FIELDS = ("first_name", "last_name", "job_title", "company_name", "anniversary")
PROFILE_INT_FIELDS = ("birthday_month", "birthday_day")


@dataclass(eq=False, slots=True)
class Contact:
    contact_id: str
    seq: int  # position in Account.contacts: the stable order for pagination
    email: str
    created_at: float
    updated_at: float
    permission_to_send: str = "implicit"
    create_source: str = "Account"
    update_source: str | None = None
    opt_in_source: str | None = "Account"
    opt_in_date: float | None = None
    opt_out_source: str | None = None
    opt_out_date: float | None = None
    opt_out_reason: str | None = None
    profile: dict[str, Any] = field(default_factory=dict)

    @property
    def is_unsubscribed(self) -> bool:
        return self.permission_to_send == "unsubscribed"

    def unsubscribe(self, when: float, *, source: str = "Contact") -> None:
        self.permission_to_send = "unsubscribed"
        self.opt_out_source, self.opt_out_date = source, when
        self.updated_at = when


def _okta_like_id() -> str:
    alphabet = string.ascii_letters + string.digits
    return "00u" + "".join(secrets.choice(alphabet) for _ in range(17))


@dataclass(eq=False)
class Account:
    """A CC account (the user who approves a connection) and the data behind it."""

    sub: str
    platform_user_id: str
    email: str
    name: str
    created_at: float
    #: ``GET /v3/account/summary``'s ``organization_name``; its ``contact_email`` is ``email``.
    organization_name: str = ""
    lists: dict[str, ContactList] = field(default_factory=dict)
    contacts: list[Contact] = field(default_factory=list)
    contacts_by_id: dict[str, Contact] = field(default_factory=dict)
    contacts_by_email: dict[str, Contact] = field(default_factory=dict)
    activities: dict[str, Activity] = field(default_factory=dict)  # in creation order
    pending: list[tuple[float, int, str]] = field(default_factory=list)  # heap by completion
    activity_seq: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "sub": self.sub,
            "platform_user_id": self.platform_user_id,
            "email": self.email,
            "name": self.name,
            "organization_name": self.organization_name,
            "lists": len(self.lists),
            "contacts": len(self.contacts),
        }

    # --- lists -----------------------------------------------------------------------------
    def list_named(self, name: str) -> ContactList | None:
        folded = name.casefold()
        for contact_list in self.lists.values():
            if contact_list.name.casefold() == folded:
                return contact_list
        return None

    def create_list(
        self, name: str, *, now: float, description: str | None = None, favorite: bool = False
    ) -> ContactList:
        contact_list = ContactList(
            list_id=str(uuid.uuid4()),
            name=name,
            created_at=now,
            updated_at=now,
            description=description,
            favorite=favorite,
        )
        self.lists[contact_list.list_id] = contact_list
        return contact_list

    def lists_of(self, contact_id: str) -> list[str]:
        return [lst.list_id for lst in self.lists.values() if contact_id in lst.members]

    def add_member(self, contact_list: ContactList, contact: Contact, *, now: float) -> bool:
        """Add unless already a member or the contact is in 50 lists; True if added."""
        if contact.contact_id in contact_list.members:
            return False
        if len(self.lists_of(contact.contact_id)) >= LISTS_PER_CONTACT_MAX:
            return False
        contact_list.members[contact.contact_id] = None
        contact_list.updated_at = now
        return True

    def remove_member(self, contact_list: ContactList, contact_id: str, *, now: float) -> bool:
        if contact_id not in contact_list.members:
            return False
        del contact_list.members[contact_id]
        contact_list.updated_at = now
        return True

    # --- contacts --------------------------------------------------------------------------
    def find_contact(self, email: str) -> Contact | None:
        return self.contacts_by_email.get(email.casefold())

    def create_contact(
        self,
        email: str,
        *,
        now: float,
        permission_to_send: str = "implicit",
        create_source: str = "Account",
        profile: dict[str, Any] | None = None,
    ) -> Contact:
        contact = Contact(
            contact_id=str(uuid.uuid4()),
            seq=len(self.contacts),
            email=email,
            created_at=now,
            updated_at=now,
            permission_to_send=permission_to_send,
            create_source=create_source,
            opt_in_source=create_source,
            opt_in_date=now if permission_to_send in ("explicit", "implicit") else None,
            profile=profile or {},
        )
        if permission_to_send == "unsubscribed":
            contact.opt_in_source = None
            contact.opt_out_source, contact.opt_out_date = "Contact", now
        self.contacts.append(contact)
        self.contacts_by_id[contact.contact_id] = contact
        self.contacts_by_email[email.casefold()] = contact
        return contact


@dataclass
class AuthorizationCode:
    client_id: str
    redirect_uri: str
    scopes: list[str]
    sub: str
    expires_at: float
    code_challenge: str | None = None
    used: bool = False


@dataclass
class RefreshGrant:
    """What a refresh token stands for; a rotated-out token is removed (reuse → invalid_grant)."""

    client_id: str
    sub: str
    scopes: list[str]
    issued_at: float
    last_used_at: float


@dataclass
class ConsentRequest:
    """A validated authorize request waiting for the user's Allow/Deny."""

    client_id: str
    redirect_uri: str
    scopes: list[str]
    state: str
    code_challenge: str | None
    expires_at: float  # monotonic


class Sandbox:
    """Everything the sandbox knows. ``reset()`` forgets all of it except the signing keys."""

    def __init__(self, config: dict[str, Any] | None = None) -> None:
        self.lock = threading.RLock()
        self.clock = SandboxClock()
        self.keys = KeyRing(self.clock)
        self.limiter = Limiter()
        self.stats = Stats()
        self.faults = Faults()
        self.config = config or {}
        self._reset_data()
        self.apply_config(self.config)

    def _reset_data(self) -> None:
        self.options = SandboxOptions()
        self.clients: dict[str, Client] = {}
        self.accounts: dict[str, Account] = {}
        self.codes: dict[str, AuthorizationCode] = {}
        self.refresh_grants: dict[str, RefreshGrant] = {}
        self.consents: dict[str, ConsentRequest] = {}
        self.verified_tokens: dict[str, Any] = {}

    def reset(self) -> None:
        """Forget clients, accounts, tokens, stats, faults, the clock offset and options;
        then preload the ``--config`` again."""
        with self.lock:
            self.faults.clear()
            self.faults.reset_injected()
            self.limiter.reset()
            self.stats.reset()
            self.clock.reset()
            self._reset_data()
            self.apply_config(self.config)

    def now(self) -> float:
        return self.clock.time()

    # --- configuration ---------------------------------------------------------------------
    def apply_config(self, config: dict[str, Any]) -> None:
        """Preload ``{"options": {...}, "clients": [...], "accounts": [...]}``."""
        unknown = set(config) - {"options", "clients", "accounts"}
        if unknown:
            raise SandboxError(f"unknown config sections: {', '.join(sorted(unknown))}")
        with self.lock:
            self.options.update(config.get("options", {}))
            for client in config.get("clients", []):
                self.register_client(client)
            for spec in config.get("accounts", []):
                account, _ = self.create_account(spec)
                for list_spec in spec.get("lists", []):
                    contact_list, _ = self.seed_list(account, list_spec)
                    if list_spec.get("contacts"):
                        self.seed_contacts(
                            account,
                            {
                                "count": list_spec["contacts"],
                                "list_ids": [contact_list.list_id],
                                "email_template": list_spec.get(
                                    "email_template",
                                    f"{_slug(contact_list.name)}{{n}}@example.com",
                                ),
                                "unsubscribed_every": list_spec.get("unsubscribed_every", 0),
                            },
                        )

    # --- clients ---------------------------------------------------------------------------
    def register_client(self, spec: dict[str, Any]) -> tuple[Client, bool]:
        """Create or update a client; returns it and whether it was new. Tokens survive."""
        client_id = _required_str(spec, "client_id")
        redirect_uris = spec.get("redirect_uris")
        if isinstance(redirect_uris, str):
            redirect_uris = [redirect_uris]
        if not redirect_uris or not all(
            isinstance(uri, str) and re.match(r"^https?://[^/\s]+", uri) for uri in redirect_uris
        ):
            raise SandboxError("redirect_uris must be a non-empty list of absolute http(s) URLs")
        if any("#" in uri for uri in redirect_uris):
            raise SandboxError("redirect URIs must not contain a #fragment (CC rejects them)")
        tier = spec.get("tier", "standard")
        if tier not in TIERS:
            raise SandboxError(f"tier must be one of {', '.join(TIERS)}")
        per_second, per_day = TIER_LIMITS.get(tier, (None, None))
        per_second = spec.get("per_second") or per_second
        per_day = spec.get("per_day") or per_day
        if not _positive_int(per_second) or not _positive_int(per_day):
            raise SandboxError("per_second and per_day must be positive whole numbers")
        refresh_mode = spec.get("refresh_mode", "rotating")
        if refresh_mode not in REFRESH_MODES:
            raise SandboxError(f"refresh_mode must be one of {', '.join(REFRESH_MODES)}")
        lifetime = spec.get("access_token_lifetime")
        if lifetime is not None and not _positive_int(lifetime):
            raise SandboxError("access_token_lifetime must be a positive number of seconds")
        secret = spec.get("client_secret") or ""
        if not isinstance(secret, str):
            raise SandboxError("client_secret must be a string")
        client = Client(
            client_id=client_id,
            redirect_uris=list(redirect_uris),
            client_secret=secret,
            name=str(spec.get("name") or client_id),
            tier=tier,
            per_second=int(per_second),
            per_day=int(per_day),
            refresh_mode=refresh_mode,
            auto_approve=bool(spec.get("auto_approve", False)),
            access_token_lifetime=int(lifetime) if lifetime is not None else None,
        )
        with self.lock:
            created = client_id not in self.clients
            self.clients[client_id] = client
        return client, created

    # --- accounts --------------------------------------------------------------------------
    def create_account(self, spec: dict[str, Any]) -> tuple[Account, bool]:
        """Create a CC account/user, or return the one with that email (idempotent)."""
        email = _required_str(spec, "email")
        if not EMAIL_RE.match(email):
            raise SandboxError(f"{email!r} is not an email address")
        with self.lock:
            existing = self.find_account(email)
            if existing is not None:
                return existing, False
            sub = spec.get("sub") or _okta_like_id()
            if sub in self.accounts:
                raise SandboxError(
                    f"an account with sub {sub!r} already exists", status=HTTPStatus.CONFLICT
                )
            name = str(spec.get("name") or email.split("@")[0])
            account = Account(
                sub=str(sub),
                platform_user_id=str(spec.get("platform_user_id") or uuid.uuid4()),
                email=email,
                name=name,
                created_at=self.now(),
                organization_name=str(spec.get("organization_name") or f"{name}'s organization"),
            )
            self.accounts[account.sub] = account
            return account, True

    def find_account(self, key: str) -> Account | None:
        """An account by ``sub`` or by email (case-insensitive)."""
        with self.lock:
            if key in self.accounts:
                return self.accounts[key]
            folded = key.casefold()
            for account in self.accounts.values():
                if account.email.casefold() == folded:
                    return account
        return None

    def get_account(self, key: str) -> Account:
        account = self.find_account(key)
        if account is None:
            raise SandboxError(f"no account with sub or email {key!r}", status=HTTPStatus.NOT_FOUND)
        return account

    def default_account(self) -> Account:
        """The first account; when there is none, a default one is created so a bare
        connect flow works without setup."""
        with self.lock:
            if not self.accounts:
                return self.create_account({"email": "sandbox-user@example.com"})[0]
            return next(iter(self.accounts.values()))

    # --- seeding ---------------------------------------------------------------------------
    def seed_list(self, account: Account, spec: dict[str, Any]) -> tuple[ContactList, bool]:
        """Create a list, or return the one with that name (idempotent)."""
        name = _required_str(spec, "name")
        with self.lock:
            existing = account.list_named(name)
            if existing is not None:
                return existing, False
            contact_list = account.create_list(
                name,
                now=self.now(),
                description=spec.get("description"),
                favorite=bool(spec.get("favorite", False)),
            )
            return contact_list, True

    def seed_contacts(self, account: Account, spec: dict[str, Any]) -> dict[str, Any]:
        """Bulk-create contacts (or reuse those with the same email) and add them to lists.

        ``count`` generated contacts use ``email_template`` (``{n}`` from ``start``);
        ``contacts`` adds explicit ones. ``unsubscribed_every=k`` marks every k-th generated
        contact unsubscribed. Seeded contacts join ``list_ids`` whatever their permission.
        """
        count = spec.get("count", 0)
        start = spec.get("start", 1)
        every = spec.get("unsubscribed_every", 0) or 0
        template = spec.get("email_template", "contact{n}@example.com")
        explicit = spec.get("contacts", [])
        if not isinstance(count, int) or count < 0 or count > 1_000_000:
            raise SandboxError("count must be a whole number from 0 to 1,000,000")
        if not isinstance(start, int) or not isinstance(every, int) or every < 0:
            raise SandboxError("start and unsubscribed_every must be whole numbers")
        if not isinstance(template, str) or "{n}" not in template:
            raise SandboxError("email_template must contain {n}")
        if not isinstance(explicit, list) or not all(isinstance(c, dict) for c in explicit):
            raise SandboxError("contacts must be a list of objects")
        with self.lock:
            lists = self._lists_by_id(account, spec.get("list_ids", []))
            now = self.now()
            created = updated = 0
            touched: list[Contact] = []

            def upsert(
                email: str, permission: str, profile: dict[str, Any], joins: Iterable[ContactList]
            ) -> None:
                nonlocal created, updated
                contact = account.find_contact(email)
                if contact is None:
                    contact = account.create_contact(
                        email, now=now, permission_to_send=permission, profile=profile
                    )
                    created += 1
                else:
                    contact.profile.update(profile)
                    if permission == "unsubscribed" and not contact.is_unsubscribed:
                        contact.unsubscribe(now)
                    updated += 1
                for contact_list in joins:
                    contact_list.members[contact.contact_id] = None
                touched.append(contact)

            for n in range(start, start + count):
                permission = "unsubscribed" if every and n % every == 0 else "implicit"
                upsert(template.format(n=n), permission, {}, lists)
            for item in explicit:
                email = _required_str(item, "email")
                if not EMAIL_RE.match(email):
                    raise SandboxError(f"{email!r} is not an email address")
                profile = {k: item[k] for k in (*PROFILE_FIELDS, *PROFILE_INT_FIELDS) if k in item}
                joins = lists + self._lists_by_id(account, item.get("list_ids", []))
                upsert(email, item.get("permission_to_send", "implicit"), profile, joins)
            for contact_list in lists:
                contact_list.updated_at = now
            result: dict[str, Any] = {"created": created, "updated": updated}
            if spec.get("return_ids"):
                result["contact_ids"] = [contact.contact_id for contact in touched]
            return result

    @staticmethod
    def _lists_by_id(account: Account, list_ids: Any) -> list[ContactList]:
        if not isinstance(list_ids, list):
            raise SandboxError("list_ids must be a list")
        missing = [list_id for list_id in list_ids if list_id not in account.lists]
        if missing:
            raise SandboxError(
                f"unknown list ids: {', '.join(map(str, missing))}", status=HTTPStatus.NOT_FOUND
            )
        return [account.lists[list_id] for list_id in list_ids]


def _required_str(spec: dict[str, Any], name: str) -> str:
    value = spec.get(name) if isinstance(spec, dict) else None
    if not isinstance(value, str) or not value.strip():
        raise SandboxError(f"{name} is required (a non-empty string)")
    return value.strip()


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "contact"

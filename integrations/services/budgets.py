"""An account's part of its key: its weight in the key's fair share, and
an optional daily cap, in calls or as a share of the key's day.

``manage.py cc_accounts set-budget``, the admin and the account page all go through these
functions, so a budget follows the same rules however it was set. Nothing needs restarting:
the quota service reads the stored values again every ``CC_QUOTA_ACCOUNT_REFRESH`` seconds in
every process.
"""

from __future__ import annotations

import enum
import logging
import math
from typing import Final

from django.contrib.auth.base_user import AbstractBaseUser

from integrations.errors import PortalError
from integrations.models import ConnectedAccount

logger = logging.getLogger(__name__)

WEIGHT_MIN: Final = 1
WEIGHT_MAX: Final = 1000
#: The largest cap the ``daily_cap`` column holds.
PER_DAY_MAX: Final = 2_147_483_647


class _Unset(enum.Enum):
    UNSET = enum.auto()


#: An argument left at this keeps that part of the budget as it is.
UNSET: Final = _Unset.UNSET


class BudgetInvalid(PortalError):
    """A budget value is out of range; ``field`` names the :class:`ConnectedAccount` field at
    fault (``share_weight``, ``daily_cap`` or ``daily_share``)."""

    def __init__(self, message: str, *, field: str) -> None:
        super().__init__(message)
        self.field = field


def _whole(value: object) -> int | None:
    """``value`` when it is a whole number (True and False are not numbers here)."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _valid_weight(weight: object) -> int:
    number = _whole(weight)
    if number is not None and WEIGHT_MIN <= number <= WEIGHT_MAX:
        return number
    raise BudgetInvalid(
        f"the weight must be a whole number from {WEIGHT_MIN} to {WEIGHT_MAX}; got {weight!r}.",
        field="share_weight",
    )


def _valid_per_day(per_day: object) -> int | None:
    if per_day is None:
        return None
    number = _whole(per_day)
    if number is not None and 1 <= number <= PER_DAY_MAX:
        return number
    raise BudgetInvalid(
        f"the daily cap must be a whole number of calls from 1 to {PER_DAY_MAX:,} "
        f"(or none, for no cap); got {per_day!r}.",
        field="daily_cap",
    )


def _valid_share(share: object) -> float | None:
    if share is None:
        return None
    number = float(share) if isinstance(share, float) or _whole(share) is not None else None
    if number is not None and math.isfinite(number) and 0 < number <= 1:
        return number
    raise BudgetInvalid(
        "the daily share must be more than 0 and at most 1 (above 0% and up to 100% of the "
        f"key's day), or none for no share cap; got {share!r}.",
        field="daily_share",
    )


def account_budget_validate(
    *,
    per_day: int | _Unset | None = UNSET,
    share: float | _Unset | None = UNSET,
    weight: int | _Unset = UNSET,
) -> dict[str, int | float | None]:
    """Check budget values without writing; returns the fields to store (only those given),
    or raises :class:`BudgetInvalid` naming the first value out of range.

    ``per_day``: a cap in calls per UTC day, at least 1, or None for none. ``share``: a cap as
    a share of the key's per-day limit, 0 < share <= 1, or None for none. ``weight``: the
    account's weight in its key's fair share, 1 to 1000. With both caps set, the lower applies.
    """
    changes: dict[str, int | float | None] = {}
    if weight is not UNSET:
        changes["share_weight"] = _valid_weight(weight)
    if per_day is not UNSET:
        changes["daily_cap"] = _valid_per_day(per_day)
    if share is not UNSET:
        changes["daily_share"] = _valid_share(share)
    return changes


def account_budget_set(
    *,
    account: ConnectedAccount,
    per_day: int | _Unset | None = UNSET,
    share: float | _Unset | None = UNSET,
    weight: int | _Unset = UNSET,
    actor: AbstractBaseUser | None = None,
) -> ConnectedAccount:
    """Change an account's weight and caps (see :func:`account_budget_validate`); arguments
    left at :data:`UNSET` keep their stored value. Writes nothing on bad input.

    Only the budget's columns are written, so a token refresh saving the same row at the same
    moment keeps its tokens. The change is logged with who made it (``actor``) when it changes
    what the account may spend.
    """
    changes = account_budget_validate(per_day=per_day, share=share, weight=weight)
    if not changes:
        return account
    before = account_budget_describe(account)
    for field, value in changes.items():
        setattr(account, field, value)
    account.save(update_fields=[*changes, "updated_at"])
    after = account_budget_describe(account)
    if after != before:
        by = f" by {actor.get_username()}" if actor is not None else ""
        logger.info(
            "Budget of account %s (%s) changed%s: %s (was %s).",
            account.pk,
            account.display_name,
            by,
            after,
            before,
        )
    return account


def _percent(share: float) -> str:
    return f"{round(share * 100, 2):g}%"


def account_budget_describe(account: ConnectedAccount) -> str:
    """The budget in one line for people: "weight 2 · cap 100 calls/day", "weight 1 · no cap",
    "weight 1 · cap 20% of the key's day (2,000 calls)"."""
    weight = f"weight {account.share_weight}"
    calls, share = account.daily_cap, account.daily_share
    if calls is None and share is None:
        return f"{weight} · no cap"
    if share is None:
        return f"{weight} · cap {calls:,} calls/day"
    effective = account.daily_cap_for(account.api_key.per_day)
    if calls is None:
        return f"{weight} · cap {_percent(share)} of the key's day ({effective:,} calls)"
    return (
        f"{weight} · cap {effective:,} calls/day (the lower of {calls:,} calls and "
        f"{_percent(share)} of the key's day)"
    )

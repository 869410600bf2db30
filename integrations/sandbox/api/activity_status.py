"""Activity status: ``GET /v3/activities`` (newest first, filtered by state, cursor paging)
and ``GET /v3/activities/{activity_id}``.

Reference: https://developer.constantcontact.com/api_guide/activity_status.html
Reference: https://developer.constantcontact.com/api_reference/index.html#!/Bulk_Activities/getActivityStatusCollection
Reference: https://developer.constantcontact.com/api_reference/index.html#!/Bulk_Activities/getActivityById
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from integrations.constant_contact.limits import ACTIVITIES_PAGE_MAX, ACTIVITY_TERMINAL_STATES
from integrations.sandbox import activities
from integrations.sandbox.api.common import (
    Ctx,
    activity_reply,
    choice_param,
    limit_param,
    next_link,
    offset_param,
    query_args,
)
from integrations.sandbox.responses import Reply, json_reply, not_found

# The ``state`` filter's values (the spec's enum): running, or one of the terminal states.
ACTIVITY_STATES = ("processing", *sorted(ACTIVITY_TERMINAL_STATES))
ACTIVITY_NOT_FOUND = "Resource not found for the activity_id provided"


def list_activities(ctx: Ctx) -> Reply:
    args = query_args(ctx.request)
    limit = limit_param(args, ACTIVITIES_PAGE_MAX)
    state = choice_param(args, "state", ACTIVITY_STATES)
    offset = offset_param(args)
    now = ctx.sandbox.now()
    with ctx.data() as account:
        found = [
            a
            for a in reversed(account.activities.values())
            if state is None or a.state(now) == state
        ]
        page = found[offset : offset + limit]
        body: dict[str, Any] = {"activities": [activities.activity_json(a, now) for a in page]}
        if offset + limit < len(found):
            body["_links"] = next_link("/v3/activities", args, offset=offset + limit)
    return json_reply(body)


def get_activity(ctx: Ctx) -> Reply:
    activity_id = ctx.params["activity_id"]
    with ctx.data() as account:
        activity = account.activities.get(activity_id)
        if activity is None:
            return not_found(ACTIVITY_NOT_FOUND)
        return activity_reply(ctx, activity, HTTPStatus.OK)

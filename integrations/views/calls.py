"""The call log: every attempt at CC, filtered by query parameters (a URL to share), paged
by cursor, each call on its own page, and the filtered log as CSV."""

from __future__ import annotations

import csv
import datetime as dt
from collections.abc import Iterable, Iterator

from django.http import Http404, HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.http import require_GET

from integrations import selectors
from integrations.forms import CallLogFilterForm
from integrations.models import ApiCall
from integrations.permissions import VIEW_PORTAL, portal_permission_required
from integrations.services.audit import ERROR_DETAIL_MAX

EXPORT_COLUMNS = (
    "id",
    "time",
    "key",
    "account",
    "method",
    "path",
    "status",
    "error_key",
    "latency_ms",
    "attempt",
    "lane",
    "job",
)
#: What a spreadsheet reads as the start of a formula (OWASP's CSV injection list).
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _filter_form(request: HttpRequest) -> CallLogFilterForm:
    form = CallLogFilterForm(request.GET)
    form.is_valid()  # the fields that fail are errors on the page; the others still filter
    return form


@portal_permission_required(VIEW_PORTAL)
@require_GET
def call_log(request: HttpRequest) -> HttpResponse:
    """The newest calls matching the filters, 50 a page, with a link to the older ones."""
    form = _filter_form(request)
    filters = form.filters()
    page = selectors.call_log_page(filters=filters, cursor=form.cursor_value())
    filtered = any(request.GET.get(name) for name in CallLogFilterForm.FILTERS)
    return render(
        request,
        "integrations/call_log.html",
        {
            "form": form,
            "page": page,
            "older": page.older.encode() if page.older else None,
            "paged": form.cursor_value() is not None,
            "filtered": filtered,
        },
    )


@portal_permission_required(VIEW_PORTAL)
@require_GET
def call_detail(request: HttpRequest, pk: int) -> HttpResponse:
    """One call: its attempts, timing, lane, job, status and what CC answered."""
    call = selectors.call_get(pk=pk)
    if call is None:
        raise Http404("No such call.")
    return render(
        request,
        "integrations/call_detail.html",
        {
            "call": call,
            "attempts": selectors.call_attempts(call=call),
            "error_detail": call.error_detail[:ERROR_DETAIL_MAX],
        },
    )


@portal_permission_required(VIEW_PORTAL)
@require_GET
def call_export(request: HttpRequest) -> StreamingHttpResponse:
    """The filtered log as CSV, streamed row by row (the whole filter, not one page)."""
    form = _filter_form(request)
    calls = selectors.call_export(filters=form.filters())
    response = StreamingHttpResponse(_csv_lines(calls), content_type="text/csv; charset=utf-8")
    today = timezone.now().astimezone(dt.UTC).date().isoformat()
    response["Content-Disposition"] = f'attachment; filename="ccportal-calls-{today}.csv"'
    return response


class _Line:
    """A file for ``csv.writer`` that hands back what it is given."""

    def write(self, text: str) -> str:
        return text


def _csv_lines(calls: Iterable[ApiCall]) -> Iterator[str]:
    writer = csv.writer(_Line())
    yield writer.writerow(EXPORT_COLUMNS)
    for call in calls:
        yield writer.writerow([_cell(value) for value in _export_row(call)])


def _export_row(call: ApiCall) -> list[object]:
    return [
        call.pk,
        call.created_at.astimezone(dt.UTC).isoformat(),
        call.api_key.name,
        str(call.account) if call.account_id else "",
        call.method,
        call.path_template,
        call.status_code if call.status_code is not None else "",
        call.error_key,
        call.latency_ms,
        call.attempt,
        call.lane,
        call.bulk_job_id or "",
    ]


def _cell(value: object) -> object:
    """``value``, with a leading ``'`` when a spreadsheet would run it as a formula."""
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value

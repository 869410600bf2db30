"""Forms parse and shape input; rules live in the services."""

from __future__ import annotations

import datetime as dt

from django import forms

from integrations import conf
from integrations.models import ApiKey, ConnectedAccount, Lane, SyncMode
from integrations.selectors import CallCursor, CallFilter


class SyncMembershipForm(forms.Form):
    csv_file = forms.FileField(
        label="Desired members (CSV)",
        required=False,
        help_text="A CSV with an email column and, optionally, first_name, last_name and other "
        "contact fields. UTF-8.",
        widget=forms.ClearableFileInput(
            attrs={"accept": ".csv,text/csv", "aria-describedby": "csv-help"}
        ),
    )
    source_list_id = forms.ChoiceField(
        label="…or copy the members of another list", required=False, choices=()
    )
    mode = forms.ChoiceField(
        label="What the sync does",
        choices=SyncMode.choices,
        initial=SyncMode.REPLACE,
        widget=forms.RadioSelect,
    )

    def __init__(
        self, *args, lists: list[dict] | None = None, exclude_list: str = "", **kwargs
    ) -> None:
        super().__init__(*args, **kwargs)
        choices = [("", "— use the CSV —")]
        choices += [
            (item["list_id"], item.get("name", item["list_id"]))
            for item in (lists or [])
            if item.get("list_id") != exclude_list
        ]
        self.fields["source_list_id"].choices = choices

    def clean_csv_file(self):
        upload = self.cleaned_data.get("csv_file")
        limit = conf.bulk_upload_max_bytes()
        if upload and upload.size > limit:
            raise forms.ValidationError(
                f"The file is {upload.size / 1_048_576:.1f} MB; the limit is "
                f"{limit / 1_048_576:.0f} MB."
            )
        return upload

    def clean(self):
        cleaned = super().clean()
        if bool(cleaned.get("csv_file")) == bool(cleaned.get("source_list_id")):
            raise forms.ValidationError("Upload a CSV or choose a source list (one of the two).")
        return cleaned


class CallLogFilterForm(forms.Form):
    """The call log's filters, read from the query string so a filtered log is a URL to share.

    A bad value is a field error and leaves that filter out; the others still apply
    (``filters()`` reads the fields that passed).
    """

    status = forms.CharField(
        required=False,
        help_text="A code (429), a class (2xx, 4xx, 5xx) or “none” for no answer.",
    )
    key = forms.ModelChoiceField(queryset=ApiKey.objects.order_by("name"), required=False)
    account = forms.ModelChoiceField(
        queryset=ConnectedAccount.objects.order_by("label", "pk"), required=False
    )
    lane = forms.ChoiceField(choices=[("", "any"), *Lane.choices], required=False)
    path = forms.CharField(required=False, max_length=200, help_text="Part of the path.")
    job = forms.IntegerField(required=False, min_value=1, label="Sync job")
    since = forms.CharField(
        required=False,
        label="Since (UTC)",
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}),
        help_text="A date or a date and time, e.g. 2024-05-01 or 2024-05-01T09:30.",
    )
    until = forms.CharField(
        required=False,
        label="Until (UTC)",
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}),
        help_text="Before this time; a date alone includes that whole day.",
    )
    cursor = forms.CharField(required=False, widget=forms.HiddenInput)

    #: The query parameters that narrow the log (the cursor only pages through it).
    FILTERS = ("status", "key", "account", "lane", "path", "job", "since", "until")

    def clean_status(self) -> tuple[int | None, int | None, bool]:
        """(lowest code, highest code, no answer)."""
        text = self.cleaned_data["status"].strip().lower()
        if not text:
            return None, None, False
        if text == "none":
            return None, None, True
        if len(text) == 3 and text[0] in "12345" and text[1:] == "xx":
            low = int(text[0]) * 100
            return low, low + 99, False
        if text.isascii() and text.isdigit() and 100 <= int(text) <= 599:
            return int(text), int(text), False
        raise forms.ValidationError(
            f"“{text}” is not a status: give a code like 429, a class like 4xx, or none."
        )

    def clean_since(self) -> dt.datetime | None:
        return _utc_moment(self.cleaned_data["since"], end_of_day=False)

    def clean_until(self) -> dt.datetime | None:
        return _utc_moment(self.cleaned_data["until"], end_of_day=True)

    def clean_cursor(self) -> CallCursor | None:
        text = self.cleaned_data["cursor"].strip()
        if not text:
            return None
        try:
            return CallCursor.decode(text)
        except ValueError:
            raise forms.ValidationError(
                "This page link is damaged; showing the newest calls."
            ) from None

    def clean(self):
        cleaned = super().clean()
        since, until = cleaned.get("since"), cleaned.get("until")
        if since and until and since >= until:
            self.add_error("until", "“Until” must be later than “since”.")
        return cleaned

    def filters(self) -> CallFilter:
        """The filters whose values are valid (call after ``is_valid()``)."""
        data = self.cleaned_data
        low, high, no_answer = data.get("status") or (None, None, False)
        key, account = data.get("key"), data.get("account")
        return CallFilter(
            status_from=low,
            status_to=high,
            no_answer=no_answer,
            api_key_id=key.pk if key else None,
            account_id=account.pk if account else None,
            lane=data.get("lane") or "",
            path=(data.get("path") or "").strip(),
            bulk_job_id=data.get("job"),
            since=data.get("since"),
            until=data.get("until"),
        )

    def cursor_value(self) -> CallCursor | None:
        return self.cleaned_data.get("cursor")


def _utc_moment(text: str, *, end_of_day: bool) -> dt.datetime | None:
    """An ISO date or date-time as an aware UTC datetime (no offset given means UTC); a date
    alone is its 00:00, or the next day's 00:00 when it ends a range (the day included)."""
    text = text.strip()
    if not text:
        return None
    try:
        if len(text) == 10:
            day = dt.date.fromisoformat(text)
            moment = dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC)
            return moment + dt.timedelta(days=1) if end_of_day else moment
        moment = dt.datetime.fromisoformat(text)
    except (ValueError, OverflowError):
        raise forms.ValidationError(
            f"“{text}” is not a date or time: use 2024-05-01 or 2024-05-01T09:30 (UTC)."
        ) from None
    if moment.tzinfo is None:
        return moment.replace(tzinfo=dt.UTC)
    return moment.astimezone(dt.UTC)


class AccountBudgetForm(forms.Form):
    """The account page's budget card: a weight, and a daily cap in calls, as a percentage of
    the key's day, or none. It parses; the budget service holds the ranges."""

    NO_CAP, CALLS, SHARE = "none", "calls", "share"

    weight = forms.IntegerField(
        label="Weight",
        help_text="1 to 1000: background slots are shared between the key's accounts in "
        "proportion to it.",
        widget=forms.NumberInput(attrs={"min": 1, "max": 1000, "step": 1}),
    )
    cap = forms.ChoiceField(
        label="Daily cap",
        choices=[
            (NO_CAP, "No cap"),
            (CALLS, "Calls per day"),
            (SHARE, "Share of the key's day"),
        ],
        initial=NO_CAP,
        widget=forms.RadioSelect,
    )
    per_day = forms.IntegerField(
        label="Calls per day",
        required=False,
        widget=forms.NumberInput(attrs={"min": 1, "step": 1}),
    )
    share_percent = forms.FloatField(
        label="Share of the key's day (%)",
        required=False,
        widget=forms.NumberInput(attrs={"min": 0.01, "max": 100, "step": "any"}),
    )

    @classmethod
    def initial_for(cls, account: ConnectedAccount) -> dict:
        """The form's values for the account's stored budget."""
        share = account.daily_share
        if account.daily_cap is not None:
            cap = cls.CALLS
        elif share is not None:
            cap = cls.SHARE
        else:
            cap = cls.NO_CAP
        return {
            "weight": account.share_weight,
            "cap": cap,
            "per_day": account.daily_cap,
            "share_percent": None if share is None else round(share * 100, 4),
        }

    def clean(self):
        cleaned = super().clean()
        cap = cleaned.get("cap")
        if cap == self.CALLS and cleaned.get("per_day") is None and "per_day" not in self.errors:
            self.add_error("per_day", "Give the number of calls per day.")
        if (
            cap == self.SHARE
            and cleaned.get("share_percent") is None
            and "share_percent" not in self.errors
        ):
            self.add_error("share_percent", "Give the share of the key's day, in percent.")
        return cleaned

    def service_arguments(self) -> dict:
        """What the budget service is called with (after ``is_valid()``): the weight, and one
        cap or none, the other cleared."""
        data = self.cleaned_data
        cap = data["cap"]
        return {
            "weight": data["weight"],
            "per_day": data["per_day"] if cap == self.CALLS else None,
            "share": data["share_percent"] / 100 if cap == self.SHARE else None,
        }

    def error_lines(self) -> list[str]:
        """Each error as a line to show on its own ("Weight: Enter a whole number.")."""
        lines = []
        for name, errors in self.errors.items():
            label = self.fields[name].label if name in self.fields else ""
            lines += [f"{label}: {error}" if label else str(error) for error in errors]
        return lines

"""Forms parse and shape input; rules live in the services."""

from __future__ import annotations

from django import forms

from integrations.models import SyncMode

MAX_UPLOAD_BYTES = 64 * 1024 * 1024


class SyncMembershipForm(forms.Form):
    csv_file = forms.FileField(
        label="Desired members (CSV)",
        required=False,
        help_text="A CSV with an email column and, optionally, first_name, last_name and other "
        "contact fields. UTF-8.",
    )
    source_list_id = forms.ChoiceField(
        label="…or copy the members of another list", required=False, choices=()
    )
    mode = forms.ChoiceField(
        choices=SyncMode.choices, initial=SyncMode.REPLACE, widget=forms.RadioSelect
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
        if upload and upload.size > MAX_UPLOAD_BYTES:
            raise forms.ValidationError(
                f"The file is {upload.size / 1_048_576:.1f} MB; the limit is "
                f"{MAX_UPLOAD_BYTES // 1_048_576} MB."
            )
        return upload

    def clean(self):
        cleaned = super().clean()
        if bool(cleaned.get("csv_file")) == bool(cleaned.get("source_list_id")):
            raise forms.ValidationError("Upload a CSV or choose a source list (one of the two).")
        return cleaned

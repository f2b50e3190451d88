"""Forms of the validation page: promote and demote, each with a written reason."""

from __future__ import annotations

from django import forms

from diagnosis.model_status import MAX_REASON
from diagnosis.models import ModelDeployment

Status = ModelDeployment.Status


class ReasonForm(forms.Form):
    reason = forms.CharField(
        max_length=MAX_REASON,
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text="Goes into the model's history and the audit log.",
        error_messages={"required": "Say why the model's status changes."},
    )


class PromoteForm(ReasonForm):
    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("auto_id", "promote_%s")  # two forms on one page: distinct element ids
        super().__init__(*args, **kwargs)

    previous_becomes = forms.ChoiceField(
        label="The current assistive version becomes",
        choices=[
            (Status.SILENT, "silent (keeps running, results hidden)"),
            (Status.RETIRED, "retired (stops running)"),
        ],
        initial=Status.SILENT,
        required=False,  # only asked when a version is assistive; silent by default
    )
    override = forms.BooleanField(
        required=False,
        label="Override the signed-case threshold (site admins only)",
        help_text="Promote although some class has fewer signed cases here than the threshold.",
    )

    def clean_previous_becomes(self) -> str:
        return self.cleaned_data.get("previous_becomes") or Status.SILENT


class DemoteForm(ReasonForm):
    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("auto_id", "demote_%s")
        super().__init__(*args, **kwargs)

    to_status = forms.ChoiceField(
        label="New status",
        choices=[
            (Status.SILENT, "silent (keeps running, results hidden)"),
            (Status.RETIRED, "retired (stops running)"),
        ],
        initial=Status.SILENT,
    )

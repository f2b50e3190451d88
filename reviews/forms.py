"""Sign-off and addendum forms, and the context the case page's sign-off block needs.

The forms only shape input; reviews.services decides what is valid (the class list, the AI
result to agree with), so the page and the API refuse the same things with the same messages.
"""

from __future__ import annotations

from django import forms

from accounts.models import User
from diagnosis.models import Case
from ml.labels import display_name
from reviews import selectors
from reviews.models import Report
from reviews.services import MAX_TEXT_LENGTH


class ReportSignForm(forms.Form):
    AGREE = "agree"
    OVERRIDE = "override"

    # The leading AI finding's job as the page showed it (0: none); see services.report_sign.
    shown_ai_job = forms.IntegerField(widget=forms.HiddenInput, min_value=0, required=False)
    decision = forms.ChoiceField(
        choices=[(AGREE, "Agree with the AI finding"), (OVERRIDE, "Override: my finding is")],
        widget=forms.RadioSelect,
        error_messages={"required": "Choose whether you agree with the AI finding or override it."},
    )
    # A CharField, not a ChoiceField: the service checks the label against the case's classes.
    final_label = forms.CharField(label="Finding", required=False, max_length=64)
    other_finding = forms.CharField(
        label="Other finding",
        required=False,
        max_length=MAX_TEXT_LENGTH,
        help_text="Required when the finding is 'other finding'.",
    )
    impression = forms.CharField(
        label="Impression",
        max_length=MAX_TEXT_LENGTH,
        widget=forms.Textarea(attrs={"rows": 4}),
        error_messages={"required": "Write an impression before signing."},
    )

    def __init__(self, *args, labels: list[str], **kwargs) -> None:
        super().__init__(*args, **kwargs)
        choices = [("", "—"), *((label, display_name(label)) for label in labels), (Report.OTHER, "Other finding")]
        self.fields["final_label"].widget = forms.Select(choices=choices)

    def without_agree(self) -> ReportSignForm:
        """No AI result to agree with: "Agree with the AI finding" is not offered, and the
        override is chosen already (the service refuses an agreement with nothing anyway)."""
        field = self.fields["decision"]
        field.choices = [choice for choice in field.choices if choice[0] != self.AGREE]
        field.initial = self.OVERRIDE
        if not self.is_bound:
            self.initial["decision"] = self.OVERRIDE
        return self

    def service_kwargs(self) -> dict:
        data = self.cleaned_data
        return {
            "agrees_with_ai": data["decision"] == self.AGREE,
            "final_label": data["final_label"],
            "other_finding": data["other_finding"],
            "impression": data["impression"],
            "shown_ai_job_id": data["shown_ai_job"],  # None (not sent): not checked
        }


class AddendumForm(forms.Form):
    text = forms.CharField(
        label="Addendum",
        max_length=MAX_TEXT_LENGTH,
        widget=forms.Textarea(attrs={"rows": 3}),
        error_messages={"required": "Write the addendum's text."},
    )


def signoff_context(
    *, case: Case, user: User, sign_form: ReportSignForm | None = None, addendum_form: AddendumForm | None = None
) -> dict:
    """What templates/reviews/_signoff.html shows: the signed report with its addenda, or the
    form to sign with the AI finding it would agree with. `case` comes from case_detail (images
    and jobs prefetched), so this adds one query for the report and one for its addenda."""
    report = selectors.report_for_case(case=case)
    context: dict = {"report": report, "addendum_form": addendum_form or AddendumForm()}
    if report is None:
        leading = selectors.leading_finding(case=case)
        context["leading"] = leading
        sign_form = sign_form or ReportSignForm(
            labels=selectors.class_labels(case=case), initial={"shown_ai_job": leading.job.pk if leading else 0}
        )
        context["sign_form"] = sign_form if leading else sign_form.without_agree()
    return context

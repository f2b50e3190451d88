from __future__ import annotations

from django import forms

from audit.models import AuditEvent

OBJECT_TYPES = [
    ("", "Any"),
    ("case", "Case"),
    ("patient", "Patient"),
    ("image", "Image"),
    ("prediction", "Prediction (heatmap)"),
    ("user", "User"),
]


class AuditFilterForm(forms.Form):
    action = forms.ChoiceField(choices=[("", "Any"), *AuditEvent.Action.choices], required=False)
    user = forms.CharField(label="Username", max_length=150, required=False)
    date_from = forms.DateField(label="From", required=False, widget=forms.DateInput(attrs={"type": "date"}))
    date_to = forms.DateField(label="To", required=False, widget=forms.DateInput(attrs={"type": "date"}))
    object_type = forms.ChoiceField(label="Object", choices=OBJECT_TYPES, required=False)
    object_id = forms.CharField(label="Object id", max_length=64, required=False)

    def clean(self) -> dict:
        data = super().clean()
        start, end = data.get("date_from"), data.get("date_to")
        if start and end and start > end:
            raise forms.ValidationError("The start date is after the end date.")
        return data

    def filters(self) -> dict:
        """The valid filters as selector keywords (an invalid one is left out)."""
        data = getattr(self, "cleaned_data", {})
        if self.non_field_errors():
            data = {k: v for k, v in data.items() if k not in ("date_from", "date_to")}
        return {
            "action": data.get("action") or "",
            "username": (data.get("user") or "").strip(),
            "date_from": data.get("date_from"),
            "date_to": data.get("date_to"),
            "object_type": data.get("object_type") or "",
            "object_id": (data.get("object_id") or "").strip(),
        }

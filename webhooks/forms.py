from __future__ import annotations

from django import forms

from webhooks.models import Event


class SubscriptionForm(forms.Form):
    url = forms.CharField(label="URL", max_length=500, help_text="https:// address that receives the POSTs.")
    events = forms.MultipleChoiceField(
        choices=Event.choices, widget=forms.CheckboxSelectMultiple, initial=list(Event.values)
    )
    description = forms.CharField(max_length=200, required=False, help_text="Which system this is, for your list.")

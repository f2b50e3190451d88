from __future__ import annotations

from django import forms

from dicomnet.models import DicomNode


class DicomNodeForm(forms.ModelForm):
    class Meta:
        model = DicomNode
        fields = ["name", "ae_title", "host", "port", "direction", "enabled"]

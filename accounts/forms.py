"""Forms for the department-admin pages; the writes themselves live in accounts.services."""

from __future__ import annotations

from django import forms
from django.core.exceptions import NON_FIELD_ERRORS, ValidationError

from accounts.models import ApiToken, User


def add_service_errors(form: forms.Form, exc: ValidationError) -> None:
    """Show a service's ValidationError on the form: on the field it names when the form has
    that field, otherwise at the top of the form (model fields a form does not show)."""
    if not hasattr(exc, "error_dict"):
        form.add_error(None, exc)
        return
    for field, errors in exc.error_dict.items():
        target = field if field in form.fields else None
        for error in errors:
            messages = error.messages
            if target is None and field != NON_FIELD_ERRORS:
                label = field.replace("_", " ").capitalize()
                messages = [f"{label}: {message}" for message in messages]
            form.add_error(target, messages)


class RepeatedPasswordMixin:
    """password1 and password2 must match; the service's "password" errors show on password1."""

    def clean(self) -> dict:
        data = super().clean()
        if data.get("password1") and data.get("password2") and data["password1"] != data["password2"]:
            self.add_error("password2", "The two passwords do not match.")
        return data

    def add_service_errors(self, exc: ValidationError) -> None:
        if hasattr(exc, "error_dict") and "password" in exc.error_dict:
            exc.error_dict["password1"] = exc.error_dict.pop("password")
        add_service_errors(self, exc)


class UserCreateForm(RepeatedPasswordMixin, forms.Form):
    username = forms.CharField(max_length=150, help_text="Letters, digits and @ . + - _ only.")
    first_name = forms.CharField(max_length=150, required=False)
    last_name = forms.CharField(max_length=150, required=False)
    email = forms.EmailField(required=False)
    role = forms.ChoiceField(choices=User.Role.choices, initial=User.Role.RADIOLOGIST)
    password1 = forms.CharField(
        label="Initial password",
        strip=False,
        widget=forms.PasswordInput(attrs={"autocomplete": "new-password"}),
        help_text="Give it to the user in person; they can change it after logging in.",
    )
    password2 = forms.CharField(
        label="Repeat the password",
        strip=False,
        widget=forms.PasswordInput(attrs={"autocomplete": "new-password"}),
    )


class UserRoleForm(forms.Form):
    role = forms.ChoiceField(choices=User.Role.choices)


class UserActiveForm(forms.Form):
    is_active = forms.BooleanField(required=False)


class PasswordField(forms.CharField):
    widget = forms.PasswordInput(attrs={"autocomplete": "new-password"})

    def __init__(self, **kwargs) -> None:
        super().__init__(strip=False, **kwargs)


class UserProfileForm(forms.Form):
    first_name = forms.CharField(max_length=150, required=False)
    last_name = forms.CharField(max_length=150, required=False)
    email = forms.EmailField(required=False)


class PasswordResetForm(RepeatedPasswordMixin, forms.Form):
    """A department admin sets a new password for a user who forgot theirs."""

    password1 = PasswordField(label="New password", help_text="At least 12 characters. Give it to the user in person.")
    password2 = PasswordField(label="Repeat the password")


class OtpCodeForm(forms.Form):
    code = forms.CharField(
        label="Code",
        max_length=32,
        widget=forms.TextInput(attrs={"autocomplete": "one-time-code", "inputmode": "text", "autofocus": True}),
        help_text="The 6 digits your authenticator app shows, or one of your recovery codes.",
    )


class ApiTokenCreateForm(forms.Form):
    name = forms.CharField(max_length=ApiToken._meta.get_field("name").max_length, help_text="What will use it.")
    user = forms.ModelChoiceField(
        queryset=User.objects.none(), label="Acts as", help_text="The API sees this user's department and rights."
    )

    def __init__(self, *args, users, max_days: int, default_days: int, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["user"].queryset = users
        self.fields["days"] = forms.IntegerField(
            label="Valid for (days)", min_value=1, max_value=max_days, initial=default_days
        )

"""Account pages: department user management, API tokens, and two-factor authentication.

An admin manages their own department only. Another department's user, or any user for a
non-admin, is looked up through user_list_for_admin and so is a 404.
"""

from __future__ import annotations

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import logout
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render, resolve_url
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.safestring import mark_safe
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods, require_POST

from accounts import services, two_factor
from accounts.forms import (
    ApiTokenCreateForm,
    OtpCodeForm,
    PasswordResetForm,
    UserCreateForm,
    UserProfileForm,
    UserRoleForm,
    add_service_errors,
)
from accounts.selectors import api_token_list_for_admin, user_list_for_admin, user_lockout_until


def _require_department_admin(request: HttpRequest) -> None:
    if not request.user.is_department_admin:
        raise PermissionDenied("Only department admins can manage users.")


@login_required
def user_list(request: HttpRequest) -> HttpResponse:
    _require_department_admin(request)
    users = user_list_for_admin(admin=request.user)
    return render(request, "accounts/user_list.html", {"users": users, "department": request.user.department})


@login_required
@require_POST
def department_two_factor(request: HttpRequest) -> HttpResponse:
    _require_department_admin(request)
    required = request.POST.get("radiologists_need_2fa") == "on"
    services.department_set_radiologists_need_2fa(
        department=request.user.department, required=required, changed_by=request.user
    )
    messages.success(
        request,
        "Radiologists now need two-factor authentication (from their next login)."
        if required
        else "Two-factor authentication is now optional for radiologists.",
    )
    return redirect("user_list")


@login_required
@require_http_methods(["GET", "POST"])
def user_create(request: HttpRequest) -> HttpResponse:
    _require_department_admin(request)
    form = UserCreateForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            user = services.user_create(
                created_by=request.user,
                username=data["username"],
                password=data["password1"],
                role=data["role"],
                email=data["email"],
                first_name=data["first_name"],
                last_name=data["last_name"],
            )
        except ValidationError as exc:
            form.add_service_errors(exc)
        else:
            messages.success(request, f"User {user.username} created.")
            return redirect("user_list")
    status = 400 if form.errors else 200
    return render(request, "accounts/user_create.html", {"form": form}, status=status)


def _user_edit_action(request: HttpRequest, managed, action: str, forms: dict) -> str | None:
    """Run one POSTed action; returns the success message, or None when a form has errors."""
    actor = request.user
    if action == "role":
        form = forms["role_form"] = UserRoleForm(request.POST)
        if not form.is_valid():
            return None
        services.user_update_role(user=managed, role=form.cleaned_data["role"], changed_by=actor)
        return f"{managed.username} is now a {managed.get_role_display().lower()}."
    if action in ("deactivate", "reactivate"):
        active = action == "reactivate"
        services.user_set_active(user=managed, is_active=active, changed_by=actor)
        return f"{managed.username} {'reactivated' if active else 'deactivated'}."
    if action == "profile":
        form = forms["profile_form"] = UserProfileForm(request.POST)
        if not form.is_valid():
            return None
        services.user_update_profile(user=managed, changed_by=actor, **form.cleaned_data)
        return f"{managed.username}'s name and e-mail saved."
    if action == "password":
        form = forms["password_form"] = PasswordResetForm(request.POST)
        if not form.is_valid():
            return None
        services.user_reset_password(user=managed, changed_by=actor, password=form.cleaned_data["password1"])
        return f"New password set for {managed.username}; their sessions and API tokens have ended."
    if action == "unlock":
        services.user_unlock(user=managed, changed_by=actor)
        return f"{managed.username} can log in again."
    if action == "reset_2fa":
        services.user_reset_2fa(user=managed, changed_by=actor)
        return f"{managed.username}'s authenticator and recovery codes are removed."
    raise ValidationError("Unknown action.")


_FORM_FOR_ACTION = {"role": "role_form", "profile": "profile_form", "password": "password_form"}


@login_required
@require_http_methods(["GET", "POST"])
def user_edit(request: HttpRequest, user_id: int) -> HttpResponse:
    managed = get_object_or_404(user_list_for_admin(admin=request.user), pk=user_id)
    forms = {
        "role_form": UserRoleForm(initial={"role": managed.role}),
        "profile_form": UserProfileForm(
            initial={"first_name": managed.first_name, "last_name": managed.last_name, "email": managed.email}
        ),
        "password_form": PasswordResetForm(),
    }
    error = None
    if request.method == "POST":
        action = request.POST.get("action", "")
        try:
            done = _user_edit_action(request, managed, action, forms)
        except ValidationError as exc:
            managed.refresh_from_db()
            form = forms.get(_FORM_FOR_ACTION.get(action, ""))
            if form is not None and form.is_bound:
                if hasattr(form, "add_service_errors"):
                    form.add_service_errors(exc)
                else:
                    add_service_errors(form, exc)
            else:
                error = " ".join(exc.messages)
        else:
            if done is not None:
                messages.success(request, done)
                return redirect("user_edit", user_id=managed.pk)
    status = 400 if request.method == "POST" else 200
    context = {
        **forms,
        "managed": managed,
        "error": error,
        "is_self": managed.pk == request.user.pk,
        # ?confirm=deactivate: the page asks before the POST that deactivates (issue 13).
        "confirm_deactivate": request.method == "GET" and request.GET.get("confirm") == "deactivate",
        "locked_until": user_lockout_until(user=managed),
        "has_authenticator": two_factor.otp_has_authenticator(user=managed),
    }
    return render(request, "accounts/user_edit.html", context, status=status)


# API tokens --------------------------------------------------------------------------------


@never_cache
@login_required
@require_http_methods(["GET", "POST"])
def token_list(request: HttpRequest) -> HttpResponse:
    """The department's API tokens; creating one shows its key on this response only."""
    _require_department_admin(request)
    form = ApiTokenCreateForm(
        request.POST or None,
        users=user_list_for_admin(admin=request.user).filter(is_active=True),
        max_days=settings.XNET_API_TOKEN_MAX_DAYS,
        default_days=settings.XNET_API_TOKEN_DAYS,
    )
    new_key = new_token = None
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            new_token, new_key = services.api_token_create(
                user=data["user"], name=data["name"], days=data["days"], created_by=request.user
            )
        except ValidationError as exc:
            add_service_errors(form, exc)
        else:
            form = ApiTokenCreateForm(
                users=form.fields["user"].queryset,
                max_days=settings.XNET_API_TOKEN_MAX_DAYS,
                default_days=settings.XNET_API_TOKEN_DAYS,
            )
    context = {
        "form": form,
        "tokens": api_token_list_for_admin(admin=request.user),
        "new_key": new_key,
        "new_token": new_token,
    }
    return render(request, "accounts/token_list.html", context, status=400 if form.errors else 200)


@login_required
@require_POST
def token_revoke(request: HttpRequest, token_id: int) -> HttpResponse:
    token = get_object_or_404(api_token_list_for_admin(admin=request.user), pk=token_id)
    services.api_token_revoke(token=token, revoked_by=request.user)
    messages.success(request, f"Token {token.name} ({token.prefix}…) revoked.")
    return redirect("token_list")


# Two-factor authentication -----------------------------------------------------------------


def _next_url(request: HttpRequest) -> str:
    target = request.POST.get("next") or request.GET.get("next") or ""
    if url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()}, require_https=request.is_secure()):
        return target
    return resolve_url(settings.LOGIN_REDIRECT_URL)


@never_cache
@login_required
@require_http_methods(["GET", "POST"])
def otp_verify(request: HttpRequest) -> HttpResponse:
    """Second step of a login: a code from the authenticator app or a recovery code."""
    if two_factor.otp_pending(request) != two_factor.VERIFY:
        return redirect(_next_url(request))
    form = OtpCodeForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        device = two_factor.otp_verify(user=request.user, code=form.cleaned_data["code"])
        if device is not None:
            two_factor.otp_mark_verified(request, device)
            return redirect(_next_url(request))
        failures = request.session.get(two_factor.FAILED_CODES_KEY, 0) + 1
        if failures >= two_factor.MAX_FAILED_CODES:
            logout(request)
            messages.error(request, "Too many wrong codes: log in again.")
            return redirect(settings.LOGIN_URL)
        request.session[two_factor.FAILED_CODES_KEY] = failures
        form.add_error("code", "That code is not valid (or was used already). Wait for a new code and try again.")
    status = 400 if form.errors else 200
    return render(request, "accounts/otp_verify.html", {"form": form, "next": _next_url(request)}, status=status)


@never_cache
@login_required
@require_http_methods(["GET", "POST"])
def otp_setup(request: HttpRequest) -> HttpResponse:
    """Set up (or replace) the authenticator app: scan, confirm with a code, keep recovery codes.

    A session that still owes its code cannot replace the authenticator: the password alone must
    not be enough to enrol a device of the attacker's.
    """
    if two_factor.otp_pending(request) == two_factor.VERIFY:
        return redirect("otp_verify")
    device = two_factor.otp_setup_device(user=request.user)
    form = OtpCodeForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        codes = two_factor.otp_confirm_setup(user=request.user, device=device, code=form.cleaned_data["code"])
        if codes is not None:
            two_factor.otp_mark_verified(request, device)
            return render(request, "accounts/otp_recovery_codes.html", {"codes": codes, "next": _next_url(request)})
        form.add_error("code", "That code does not match. Check the time on your phone and try the next code.")
    context = {
        "form": form,
        "secret": device.config_url.split("secret=", 1)[1].split("&", 1)[0],
        "config_url": device.config_url,
        "qr_svg": mark_safe(two_factor.qr_code_svg(device.config_url)),  # noqa: S308 - our own SVG
        "required": request.user.needs_2fa,
        "next": _next_url(request),
    }
    return render(request, "accounts/otp_setup.html", context, status=400 if form.errors else 200)


@never_cache
@login_required
@require_http_methods(["GET", "POST"])
def otp_settings(request: HttpRequest) -> HttpResponse:
    """The user's own two-factor page: status, new recovery codes, turning it off when optional."""
    user = request.user
    if request.method == "POST":
        action = request.POST.get("action")
        if action == "recovery_codes" and two_factor.otp_has_authenticator(user=user):
            codes = two_factor.otp_regenerate_recovery_codes(user=user)
            return render(request, "accounts/otp_recovery_codes.html", {"codes": codes, "next": ""})
        if action == "disable" and not user.needs_2fa:
            two_factor.otp_remove(user=user, removed_by=user)
            messages.success(request, "Two-factor authentication is off for your account.")
            return redirect("otp_settings")
        messages.error(request, "That is not possible for your account.")
        return redirect("otp_settings")
    context = {
        "has_authenticator": two_factor.otp_has_authenticator(user=user),
        "codes_left": two_factor.otp_recovery_codes_left(user=user),
        "required": user.needs_2fa,
    }
    return render(request, "accounts/otp_settings.html", context)

"""Department-admin pages: list, create, deactivate/reactivate users and change their role.

An admin manages their own department only. Another department's user, or any user for a
non-admin, is looked up through user_list_for_admin and so is a 404.
"""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_http_methods

from accounts import services
from accounts.forms import UserCreateForm, UserRoleForm, add_service_errors
from accounts.selectors import user_list_for_admin


def _require_department_admin(request: HttpRequest) -> None:
    if not request.user.is_department_admin:
        raise PermissionDenied("Only department admins can manage users.")


@login_required
def user_list(request: HttpRequest) -> HttpResponse:
    _require_department_admin(request)
    users = user_list_for_admin(admin=request.user)
    return render(request, "accounts/user_list.html", {"users": users})


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


@login_required
@require_http_methods(["GET", "POST"])
def user_edit(request: HttpRequest, user_id: int) -> HttpResponse:
    managed = get_object_or_404(user_list_for_admin(admin=request.user), pk=user_id)
    role_form = UserRoleForm(initial={"role": managed.role})
    error = None
    if request.method == "POST":
        action = request.POST.get("action")
        try:
            if action == "role":
                role_form = UserRoleForm(request.POST)
                if role_form.is_valid():
                    services.user_update_role(
                        user=managed, role=role_form.cleaned_data["role"], changed_by=request.user
                    )
                    messages.success(request, f"{managed.username} is now a {managed.get_role_display().lower()}.")
                    return redirect("user_edit", user_id=managed.pk)
            elif action in ("deactivate", "reactivate"):
                active = action == "reactivate"
                services.user_set_active(user=managed, is_active=active, changed_by=request.user)
                messages.success(request, f"{managed.username} {'reactivated' if active else 'deactivated'}.")
                return redirect("user_edit", user_id=managed.pk)
            else:
                error = "Unknown action."
        except ValidationError as exc:
            managed.refresh_from_db()
            if action == "role":
                add_service_errors(role_form, exc)
            else:
                error = " ".join(exc.messages)
    status = 400 if request.method == "POST" else 200
    context = {
        "managed": managed,
        "role_form": role_form,
        "error": error,
        "is_self": managed.pk == request.user.pk,
    }
    return render(request, "accounts/user_edit.html", context, status=status)

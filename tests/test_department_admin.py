"""Department admins manage their own department's users: list, create, change role,
deactivate and reactivate. Radiologists cannot; nobody reaches another department's users."""

from __future__ import annotations

import pytest
from django.contrib.auth import SESSION_KEY
from django.core.exceptions import PermissionDenied, ValidationError
from django.urls import reverse
from pytest_django.asserts import assertContains, assertNotContains

from accounts import services
from accounts.models import User
from tests.factories import DEFAULT_PASSWORD, DepartmentAdminFactory, UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def colleague(department):
    return UserFactory(username="dr_who", first_name="John", last_name="Smith", department=department)


def new_user_form(**overrides) -> dict:
    data = {
        "username": "new_rad",
        "first_name": "Nora",
        "last_name": "Radi",
        "email": "nora@hospital.example",
        "role": "radiologist",
        "password1": "thoracic-spine-77",
        "password2": "thoracic-spine-77",
    }
    data.update(overrides)
    return data


# Listing ---------------------------------------------------------------------------------


def test_user_list_shows_own_department(admin_client, department_admin, colleague, outsider):
    response = admin_client.get(reverse("user_list"))
    assert response.status_code == 200
    assertContains(response, "dr_who")
    assertContains(response, "John Smith")
    assertContains(response, f'href="{reverse("user_edit", args=[colleague.pk])}"')
    assertNotContains(response, reverse("user_edit", args=[department_admin.pk]))  # no self-management
    assertNotContains(response, outsider.username)


@pytest.mark.parametrize("name", ["user_list", "user_create"])
def test_radiologist_cannot_open_admin_pages(rad_client, name):
    assert rad_client.get(reverse(name)).status_code == 403


def test_radiologist_cannot_create_users(rad_client):
    assert rad_client.post(reverse("user_create"), new_user_form()).status_code == 403
    assert not User.objects.filter(username="new_rad").exists()


def test_radiologist_gets_404_for_user_objects(rad_client, colleague):
    assert rad_client.get(reverse("user_edit", args=[colleague.pk])).status_code == 404
    assert rad_client.post(reverse("user_edit", args=[colleague.pk]), {"action": "deactivate"}).status_code == 404
    colleague.refresh_from_db()
    assert colleague.is_active


def test_site_admin_without_department_is_not_a_department_admin(client, django_user_model):
    client.force_login(django_user_model.objects.create_superuser("root", "r@example.com", "a-long-site-password"))
    assert client.get(reverse("user_list")).status_code == 403


def test_deactivated_admin_loses_access(admin_client, department_admin):
    User.objects.filter(pk=department_admin.pk).update(is_active=False)
    response = admin_client.get(reverse("user_list"))
    assert response.status_code == 302  # logged out: the session no longer authenticates


# Creating --------------------------------------------------------------------------------


def test_admin_creates_user_in_own_department(admin_client, department, client):
    response = admin_client.post(reverse("user_create"), new_user_form(role="department_admin"))
    assert response.status_code == 302
    assert response["Location"] == reverse("user_list")
    user = User.objects.get(username="new_rad")
    assert (user.department, user.role, user.email, user.get_full_name()) == (
        department,
        "department_admin",
        "nora@hospital.example",
        "Nora Radi",
    )
    assert user.check_password("thoracic-spine-77")
    assertContains(admin_client.get(reverse("user_list")), "User new_rad created.")


def test_created_user_can_log_in(admin_client, client):
    admin_client.post(reverse("user_create"), new_user_form())
    admin_client.post(reverse("logout"))
    response = admin_client.post(reverse("login"), {"username": "new_rad", "password": "thoracic-spine-77"})
    assert response.status_code == 302
    assert SESSION_KEY in admin_client.session


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"password1": "short", "password2": "short"}, "This password is too short."),
        ({"password1": "password123", "password2": "password123"}, "This password is too common."),
        ({"password2": "something-else-99"}, "The two passwords do not match."),
        ({"username": "rad_a"}, "A user with that username already exists."),
        ({"username": "bad name!"}, "Enter a valid username."),
        ({"role": "god"}, "Select a valid choice."),
        ({"email": "not-an-email"}, "Enter a valid email address."),
    ],
    ids=["short password", "common password", "mismatch", "duplicate username", "bad username", "bad role", "email"],
)
def test_create_user_bad_input_is_400(admin_client, radiologist, overrides, message):
    before = User.objects.count()
    response = admin_client.post(reverse("user_create"), new_user_form(**overrides))
    assert response.status_code == 400
    assertContains(response, message, status_code=400)
    assert User.objects.count() == before


# Editing ---------------------------------------------------------------------------------


def test_change_role(admin_client, colleague):
    response = admin_client.post(
        reverse("user_edit", args=[colleague.pk]), {"action": "role", "role": "department_admin"}
    )
    assert response.status_code == 302
    colleague.refresh_from_db()
    assert colleague.role == "department_admin"
    assertContains(admin_client.get(response["Location"]), "dr_who is now a department admin.")


def test_change_role_to_unknown_value_is_400(admin_client, colleague):
    response = admin_client.post(reverse("user_edit", args=[colleague.pk]), {"action": "role", "role": "boss"})
    assert response.status_code == 400
    assertContains(response, "Select a valid choice.", status_code=400)
    colleague.refresh_from_db()
    assert colleague.role == "radiologist"


def logs_in(client, username: str) -> bool:
    """Through the login page, as a person does (lockout checks need the request)."""
    response = client.post(reverse("login"), {"username": username, "password": DEFAULT_PASSWORD})
    return response.status_code == 302


def test_deactivate_and_reactivate(admin_client, colleague, client):
    url = reverse("user_edit", args=[colleague.pk])
    assertContains(admin_client.get(url), "Deactivate dr_who")
    assert admin_client.post(url, {"action": "deactivate"}).status_code == 302
    colleague.refresh_from_db()
    assert not colleague.is_active
    assertContains(admin_client.get(url), "Reactivate dr_who")

    # A deactivated user cannot log in.
    other = client.__class__()
    assert not logs_in(other, "dr_who")

    assert admin_client.post(url, {"action": "reactivate"}).status_code == 302
    colleague.refresh_from_db()
    assert colleague.is_active
    assert logs_in(other, "dr_who")


def test_deactivation_ends_the_users_session(admin_client, colleague, client):
    other = client.__class__()
    other.force_login(colleague)
    assert other.get(reverse("worklist")).status_code == 200
    admin_client.post(reverse("user_edit", args=[colleague.pk]), {"action": "deactivate"})
    assert other.get(reverse("worklist")).status_code == 302


def test_admin_cannot_deactivate_or_demote_themself(admin_client, department_admin):
    url = reverse("user_edit", args=[department_admin.pk])
    page = admin_client.get(url)
    assert page.status_code == 200
    assertContains(page, "This is your own account")
    assertNotContains(page, 'value="deactivate"')

    response = admin_client.post(url, {"action": "deactivate"})
    assert response.status_code == 400
    assertContains(response, "You cannot change your own role or deactivate your own account.", status_code=400)
    response = admin_client.post(url, {"action": "role", "role": "radiologist"})
    assert response.status_code == 400
    department_admin.refresh_from_db()
    assert (department_admin.is_active, department_admin.role) == (True, "department_admin")


def test_unknown_action_is_400(admin_client, colleague):
    response = admin_client.post(reverse("user_edit", args=[colleague.pk]), {"action": "delete"})
    assert response.status_code == 400
    assert User.objects.filter(pk=colleague.pk, is_active=True).exists()


def test_other_departments_user_is_404(admin_client, outsider):
    url = reverse("user_edit", args=[outsider.pk])
    assert admin_client.get(url).status_code == 404
    assert admin_client.post(url, {"action": "deactivate"}).status_code == 404
    outsider.refresh_from_db()
    assert outsider.is_active


# Services --------------------------------------------------------------------------------


def test_services_refuse_cross_department_and_non_admins(department_admin, radiologist, outsider, colleague):
    with pytest.raises(PermissionDenied):
        services.user_set_active(user=outsider, is_active=False, changed_by=department_admin)
    with pytest.raises(PermissionDenied):
        services.user_update_role(user=colleague, role="department_admin", changed_by=radiologist)
    with pytest.raises(PermissionDenied):
        services.user_create(created_by=radiologist, username="x", password="thoracic-spine-77")
    with pytest.raises(ValidationError):
        services.user_set_active(user=department_admin, is_active=False, changed_by=department_admin)


def test_service_validates_role(department_admin, colleague):
    with pytest.raises(ValidationError) as excinfo:
        services.user_update_role(user=colleague, role="boss", changed_by=department_admin)
    assert "role" in excinfo.value.message_dict


def test_other_admin_can_manage_an_admin(department, department_admin):
    second = DepartmentAdminFactory(username="admin_a2", department=department)
    services.user_update_role(user=department_admin, role="radiologist", changed_by=second)
    department_admin.refresh_from_db()
    assert department_admin.role == "radiologist"

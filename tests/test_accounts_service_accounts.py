"""Service accounts (the DICOM intake's): active, attributed, but never a way in."""

from __future__ import annotations

import pytest
from django.core.exceptions import PermissionDenied, ValidationError

from accounts.services import api_token_create, user_reset_password
from dicomnet.services import intake_user
from tests.factories import DepartmentFactory, UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def intake():
    return intake_user(DepartmentFactory())


def test_the_dicom_intake_account_is_a_service_account(intake):
    assert intake.is_active
    assert intake.is_service_account
    assert not intake.has_usable_password()


def test_a_service_account_never_signs_in_even_with_a_password(client, intake):
    intake.set_password("a-long-enough-password-2026")
    intake.save()
    page = client.post(
        "/accounts/login/", {"username": intake.username, "password": "a-long-enough-password-2026"}
    )
    assert page.status_code == 200  # the form again, with its error
    assert "_auth_user_id" not in client.session


def test_a_session_holding_a_service_account_is_not_honoured(client, intake):
    client.force_login(intake, backend="django.contrib.auth.backends.ModelBackend")
    response = client.get("/")
    assert response.status_code == 302
    assert "/accounts/login/" in response["Location"]


def test_no_admin_manages_it_and_it_holds_no_token(intake):
    admin = UserFactory(department=intake.department, role="department_admin")
    assert admin.can_manage(intake) is False
    with pytest.raises(PermissionDenied):
        user_reset_password(user=intake, changed_by=admin, password="a-long-enough-password-2026")
    with pytest.raises(ValidationError):
        api_token_create(user=intake, name="pacs", days=1, created_by=None)

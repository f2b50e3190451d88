"""Login, logout, password change, and that every page needs a logged-in user."""

from __future__ import annotations

import pytest
from django.contrib.auth import SESSION_KEY
from django.urls import reverse
from pytest_django.asserts import assertContains

from tests.factories import DEFAULT_PASSWORD, UserFactory

pytestmark = pytest.mark.django_db

PROTECTED = [
    ("worklist", []),
    ("patient_list", []),
    ("patient_detail", [1]),
    ("case_create", []),
    ("case_detail", [1]),
    ("case_status", [1]),
    ("image_file", [1]),
    ("user_list", []),
    ("user_create", []),
    ("user_edit", [1]),
    ("password_change", []),
]


@pytest.mark.parametrize(("name", "args"), PROTECTED)
def test_pages_redirect_anonymous_users_to_login(client, name, args):
    url = reverse(name, args=args)
    response = client.get(url)
    assert response.status_code == 302
    assert response["Location"] == f"{reverse('login')}?next={url}"


def test_anonymous_upload_post_redirects_to_login(client):
    response = client.post(reverse("case_upload", args=[1]))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))


def test_login_page(client):
    response = client.get(reverse("login"))
    assert response.status_code == 200
    assertContains(response, 'name="username"')
    assertContains(response, 'name="password"')
    assertContains(response, "/static/css/xnet.css")


def test_login_then_worklist(client, radiologist):
    response = client.post(reverse("login"), {"username": "rad_a", "password": DEFAULT_PASSWORD})
    assert response.status_code == 302
    assert response["Location"] == reverse("worklist")
    assert client.get(reverse("worklist")).status_code == 200


def test_login_follows_next(client, radiologist):
    response = client.post(
        f"{reverse('login')}?next=/patients/",
        {"username": "rad_a", "password": DEFAULT_PASSWORD, "next": "/patients/"},
    )
    assert response["Location"] == "/patients/"


def test_wrong_password_is_rejected(client, radiologist):
    response = client.post(reverse("login"), {"username": "rad_a", "password": "wrong"})
    assert response.status_code == 200
    assertContains(response, "Please enter a correct username and password.")
    assert SESSION_KEY not in client.session


def test_inactive_user_cannot_log_in(client, department):
    UserFactory(username="gone", department=department, is_active=False)
    response = client.post(reverse("login"), {"username": "gone", "password": DEFAULT_PASSWORD})
    assert response.status_code == 200
    assert SESSION_KEY not in client.session


def test_logout_is_a_post(rad_client):
    assert rad_client.get(reverse("logout")).status_code == 405
    assert SESSION_KEY in rad_client.session
    response = rad_client.post(reverse("logout"))
    assert response.status_code == 302
    assert response["Location"] == reverse("login")
    assert SESSION_KEY not in rad_client.session
    assert rad_client.get(reverse("worklist")).status_code == 302


def test_password_change(rad_client, radiologist, client):
    page = rad_client.get(reverse("password_change"))
    assert page.status_code == 200
    assertContains(page, 'name="old_password"')
    response = rad_client.post(
        reverse("password_change"),
        {"old_password": DEFAULT_PASSWORD, "new_password1": "lung-window-1400", "new_password2": "lung-window-1400"},
    )
    assert response.status_code == 302
    assertContains(rad_client.get(response["Location"]), "Password changed")
    radiologist.refresh_from_db()
    assert radiologist.check_password("lung-window-1400")


def test_password_change_with_wrong_old_password(rad_client, radiologist):
    response = rad_client.post(
        reverse("password_change"),
        {"old_password": "nope", "new_password1": "lung-window-1400", "new_password2": "lung-window-1400"},
    )
    assert response.status_code == 200
    assertContains(response, "Your old password was entered incorrectly.")
    radiologist.refresh_from_db()
    assert radiologist.check_password(DEFAULT_PASSWORD)

"""Two-factor authentication: required for department admins and site admins, optional for
radiologists unless their department requires it; enrolment with a QR code; recovery codes.
Codes are computed from the device's key, as the user's phone does."""

from __future__ import annotations

import pytest
from django.urls import reverse
from django_otp.plugins.otp_static.models import StaticToken
from django_otp.plugins.otp_totp.models import TOTPDevice
from pytest_django.asserts import assertContains

from accounts import two_factor
from audit.models import AuditEvent
from tests.factories import DEFAULT_PASSWORD, TOTPDeviceFactory, UserFactory, totp_code

pytestmark = pytest.mark.django_db
A = AuditEvent.Action


def password_step(client, username: str, password: str = DEFAULT_PASSWORD, next_url: str = ""):
    data = {"username": username, "password": password}
    if next_url:
        data["next"] = next_url
    return client.post(reverse("login"), data)


def enrol(client, user) -> list[str]:
    """Go through the set-up page as a user does; returns the recovery codes it shows."""
    page = client.get(reverse("otp_setup"))
    assert page.status_code == 200
    device = TOTPDevice.objects.get(user=user, confirmed=False)
    response = client.post(reverse("otp_setup"), {"code": totp_code(device)})
    assert response.status_code == 200
    assertContains(response, f'href="{reverse("worklist")}"')  # onwards from the codes page
    return response.context["codes"]


def test_department_admin_must_enter_a_code_after_the_password(client, department_admin):
    device = department_admin.totpdevice_set.get()
    response = password_step(client, department_admin.username, next_url=reverse("user_list"))
    assert response.status_code == 302
    # Logged in by password, but nothing is reachable before the code: pages redirect, the API
    # treats the session as anonymous.
    assert client.get(reverse("worklist"))["Location"].startswith(reverse("otp_verify"))
    assert client.get(reverse("user_list"))["Location"].startswith(reverse("otp_verify"))
    assert client.get("/api/v1/patients/").status_code in (401, 403)

    response = client.post(reverse("otp_verify"), {"code": totp_code(device), "next": reverse("user_list")})
    assert response.status_code == 302
    assert response["Location"] == reverse("user_list")
    assert client.get(reverse("worklist")).status_code == 200
    assert client.get("/api/v1/patients/").status_code == 200


def test_a_wrong_code_is_refused_and_audited(client, department_admin):
    password_step(client, department_admin.username)
    code = totp_code(department_admin.totpdevice_set.get())
    wrong = f"{(int(code) + 1) % 1_000_000:06d}"
    response = client.post(reverse("otp_verify"), {"code": wrong})
    assert response.status_code == 400
    assert client.get(reverse("worklist")).status_code == 302
    event = AuditEvent.objects.get(action=A.OTP_FAILED)
    assert event.actor == department_admin


def test_too_many_wrong_codes_end_the_session(client, department_admin):
    password_step(client, department_admin.username)
    for _ in range(two_factor.MAX_FAILED_CODES):
        response = client.post(reverse("otp_verify"), {"code": "000000x"})
    assert response.status_code == 302
    assert response["Location"] == reverse("login")
    assert "_auth_user_id" not in client.session


def test_an_admin_without_an_authenticator_must_set_one_up(client, department):
    admin = UserFactory(username="new_admin", department=department, role="department_admin")
    password_step(client, admin.username)
    assert client.get(reverse("worklist"))["Location"].startswith(reverse("otp_setup"))

    page = client.get(reverse("otp_setup"))
    assertContains(page, "<svg")  # the QR code, inline
    device = TOTPDevice.objects.get(user=admin, confirmed=False)
    assert device.config_url.startswith("otpauth://totp/XNET%3Anew_admin?secret=")
    assertContains(page, device.config_url.split("secret=")[1].split("&")[0])  # the key, for typing in

    codes = enrol(client, admin)
    assert len(codes) == two_factor.RECOVERY_CODE_COUNT
    assert TOTPDevice.objects.get(user=admin).confirmed
    assert client.get(reverse("worklist")).status_code == 200
    assert AuditEvent.objects.filter(action=A.OTP_ENROL, actor=admin).count() == 1


def test_a_wrong_code_does_not_confirm_the_set_up(client, department):
    admin = UserFactory(username="new_admin", department=department, role="department_admin")
    password_step(client, admin.username)
    client.get(reverse("otp_setup"))
    assert client.post(reverse("otp_setup"), {"code": "123"}).status_code == 400
    assert not TOTPDevice.objects.filter(user=admin, confirmed=True).exists()
    assert client.get(reverse("worklist")).status_code == 302


def test_the_password_alone_cannot_replace_the_authenticator(client, department_admin):
    password_step(client, department_admin.username)
    response = client.get(reverse("otp_setup"))
    assert response["Location"] == reverse("otp_verify")
    assert client.post(reverse("otp_setup"), {"code": "123456"})["Location"] == reverse("otp_verify")
    assert TOTPDevice.objects.filter(user=department_admin).count() == 1


def test_a_recovery_code_logs_in_once(client, department):
    admin = UserFactory(username="new_admin", department=department, role="department_admin")
    password_step(client, admin.username)
    codes = enrol(client, admin)
    client.post(reverse("logout"))

    password_step(client, admin.username)
    assert client.post(reverse("otp_verify"), {"code": codes[0].upper()}).status_code == 302
    assert client.get(reverse("worklist")).status_code == 200
    assert StaticToken.objects.filter(device__user=admin).count() == two_factor.RECOVERY_CODE_COUNT - 1
    client.post(reverse("logout"))

    password_step(client, admin.username)
    assert client.post(reverse("otp_verify"), {"code": codes[0]}).status_code == 400


def test_new_recovery_codes_replace_the_old_ones(client, department_admin):
    client.force_login(department_admin)
    old = two_factor._new_recovery_codes(department_admin)
    response = client.post(reverse("otp_settings"), {"action": "recovery_codes"})
    new = response.context["codes"]
    assert set(StaticToken.objects.values_list("token", flat=True)) == set(new)
    assert not set(old) & set(new)
    assert AuditEvent.objects.filter(action=A.OTP_RECOVERY_CODES).count() == 1


def test_site_admin_must_use_two_factor_on_the_django_admin(client, django_user_model):
    root = django_user_model.objects.create_superuser("root", "root@example.org", "a-long-site-password")
    device = TOTPDeviceFactory(user=root)
    response = client.post(reverse("admin:login"), {"username": "root", "password": "a-long-site-password"})
    assert response.status_code == 302
    assert client.get(reverse("admin:index"))["Location"].startswith(reverse("otp_verify"))
    client.post(reverse("otp_verify"), {"code": totp_code(device)})
    assert client.get(reverse("admin:index")).status_code == 200


def test_radiologists_are_not_asked_unless_their_department_requires_it(client, radiologist, department_admin):
    assert password_step(client, radiologist.username)["Location"] == reverse("worklist")
    assert client.get(reverse("worklist")).status_code == 200
    client.post(reverse("logout"))

    admin = client.__class__()
    admin.force_login(department_admin)
    assert admin.post(reverse("department_two_factor"), {"radiologists_need_2fa": "on"}).status_code == 302
    radiologist.department.refresh_from_db()
    assert radiologist.department.radiologists_need_2fa
    event = AuditEvent.objects.get(action=A.DEPARTMENT_SETTINGS)
    assert event.detail == {"radiologists_need_2fa": True}

    password_step(client, radiologist.username)
    assert client.get(reverse("worklist"))["Location"].startswith(reverse("otp_setup"))


def test_only_department_admins_change_the_department_setting(client, radiologist):
    client.force_login(radiologist)
    assert client.post(reverse("department_two_factor"), {"radiologists_need_2fa": "on"}).status_code == 403
    radiologist.department.refresh_from_db()
    assert not radiologist.department.radiologists_need_2fa


def test_a_radiologist_may_turn_it_on_and_off_when_optional(client, radiologist):
    client.force_login(radiologist)
    enrol(client, radiologist)
    client.post(reverse("logout"))
    password_step(client, radiologist.username)
    assert client.get(reverse("worklist"))["Location"].startswith(reverse("otp_verify"))
    client.post(reverse("otp_verify"), {"code": totp_code(radiologist.totpdevice_set.get(), steps_ahead=1)})
    client.post(reverse("otp_settings"), {"action": "disable"})
    assert not TOTPDevice.objects.filter(user=radiologist).exists()


def test_an_admin_cannot_turn_it_off_for_themself(client, department_admin):
    client.force_login(department_admin)
    client.post(reverse("otp_settings"), {"action": "disable"})
    assert TOTPDevice.objects.filter(user=department_admin).exists()


def test_department_admin_removes_a_lost_authenticator(client, department_admin, department):
    colleague = UserFactory(username="dr_who", department=department, role="department_admin")
    TOTPDeviceFactory(user=colleague)
    client.force_login(department_admin)
    url = reverse("user_edit", args=[colleague.pk])
    assert client.post(url, {"action": "reset_2fa"}).status_code == 302
    assert not TOTPDevice.objects.filter(user=colleague).exists()
    assert AuditEvent.objects.get(action=A.OTP_RESET).object_id == str(colleague.pk)

    other = client.__class__()
    password_step(other, colleague.username)
    assert other.get(reverse("worklist"))["Location"].startswith(reverse("otp_setup"))

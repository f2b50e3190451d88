"""The Django admin is audited: every add, change and delete, on every registered model, is an
append-only event filed under the object's department (both departments when a change moves it),
with each changed field before and after and no secret copied. A signed case cannot be moved to
another patient or department, in the admin or anywhere else."""

from __future__ import annotations

import pytest
from django.contrib import admin
from django.core.exceptions import ValidationError
from django.forms import MultiWidget
from django.test import Client
from django.urls import reverse

from accounts.models import Department
from audit.admin_site import AuditedModelAdminMixin
from audit.models import AuditEvent
from diagnosis.models import Case, Patient
from reviews import services as review_services
from tests.factories import CaseFactory, PatientFactory, PredictionFactory

pytestmark = pytest.mark.django_db
A = AuditEvent.Action
CLIENT = {"REMOTE_ADDR": "198.51.100.9", "HTTP_USER_AGENT": "Mozilla/5.0 (XNET admin test)"}


@pytest.fixture
def site_admin(django_user_model):
    return django_user_model.objects.create_superuser("root", "root@example.org", "x-very-long-pw-1")


@pytest.fixture
def admin_client(client, site_admin):
    client.force_login(site_admin)
    return client


@pytest.fixture
def patient(radiologist):
    return PatientFactory(department=radiologist.department, created_by=radiologist, mrn="A-1", name="Ada Lovelace")


@pytest.fixture
def foreign_patient(outsider):
    return PatientFactory(department=outsider.department, created_by=outsider, mrn="B-1")


@pytest.fixture
def case(patient, radiologist):
    return CaseFactory(patient=patient, created_by=radiologist)


@pytest.fixture
def signed_case(case, radiologist):
    PredictionFactory(job__image__case=case)
    review_services.report_sign(case=case, signed_by=radiologist, agrees_with_ai=True, impression="As AI.")
    return case


def change_form_data(client, url: str, **changes) -> dict:
    """The admin change form's current values as a POST would send them, with `changes` applied."""
    form = client.get(url).context["adminform"].form
    data: dict = {}
    for name, field in form.fields.items():
        value = form[name].value()
        if isinstance(field.widget, MultiWidget):
            for index, part in enumerate(field.widget.decompress(value)):
                data[f"{name}_{index}"] = "" if part is None else part
        elif value is not None and value is not False:
            data[name] = value
    data.update(changes)
    return data


def admin_events(action: str) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(action=action).order_by("id"))


def test_every_registered_model_admin_is_audited():
    """Ours, Django's and the libraries' registrations alike: a new one cannot forget it."""
    registry = admin.site._registry
    assert len(registry) > 10
    assert [m._meta.label for m, a in registry.items() if not isinstance(a, AuditedModelAdminMixin)] == []


def test_admin_add_is_recorded_under_the_objects_department(admin_client, site_admin, radiologist):
    data = {
        "department": radiologist.department_id,
        "mrn": "A-77",
        "name": "Grace Hopper",
        "sex": "F",
        "created_by": radiologist.pk,
    }
    response = admin_client.post(reverse("admin:diagnosis_patient_add"), data, **CLIENT)
    assert response.status_code == 302, response.content
    patient = Patient.objects.get(mrn="A-77")
    [event] = admin_events(A.ADMIN_ADD)
    assert (event.actor, event.department_id) == (site_admin, radiologist.department_id)
    assert (event.object_type, event.object_id) == ("diagnosis.patient", str(patient.pk))
    assert event.detail["model"] == "diagnosis.patient"
    assert (event.ip_address, event.method) == (CLIENT["REMOTE_ADDR"], "POST")
    # The patient's registration is recorded as such too, by whoever did it (not created_by).
    [created] = admin_events(A.PATIENT_CREATE)
    assert (created.actor, created.object_id) == (site_admin, str(patient.pk))


def test_admin_change_records_each_field_before_and_after(admin_client, site_admin, patient):
    url = reverse("admin:diagnosis_patient_change", args=[patient.pk])
    response = admin_client.post(url, change_form_data(admin_client, url, name="Ada King"), **CLIENT)
    assert response.status_code == 302
    [event] = admin_events(A.ADMIN_CHANGE)
    assert event.actor == site_admin
    assert event.department_id == patient.department_id
    assert event.detail["changes"] == {"name": {"from": "Ada Lovelace", "to": "Ada King"}}


def test_moving_an_unsigned_case_is_recorded_in_both_departments(admin_client, case, patient, foreign_patient):
    url = reverse("admin:diagnosis_case_change", args=[case.pk])
    response = admin_client.post(url, change_form_data(admin_client, url, patient=foreign_patient.pk), **CLIENT)
    assert response.status_code == 302
    assert Case.objects.get(pk=case.pk).patient == foreign_patient
    events = admin_events(A.ADMIN_CHANGE)
    assert sorted(e.department_id for e in events) == sorted([patient.department_id, foreign_patient.department_id])
    for event in events:
        assert event.object_id == str(case.pk)
        assert event.detail["changes"]["patient_id"] == {"from": patient.pk, "to": foreign_patient.pk}
        assert event.detail["from_department"] == patient.department_id


def test_admin_refuses_moving_a_signed_case_to_another_patient(admin_client, signed_case, foreign_patient, patient):
    url = reverse("admin:diagnosis_case_change", args=[signed_case.pk])
    response = admin_client.post(url, change_form_data(admin_client, url, patient=foreign_patient.pk), **CLIENT)
    assert response.status_code == 200  # the form again, with the refusal
    assert "a signed case cannot move to another patient" in response.content.decode()
    signed_case.refresh_from_db()
    assert signed_case.patient == patient
    assert admin_events(A.ADMIN_CHANGE) == []
    # Same department, another patient: refused as well.
    other = PatientFactory(department=patient.department, created_by=patient.created_by, mrn="A-2")
    response = admin_client.post(url, change_form_data(admin_client, url, patient=other.pk))
    assert response.status_code == 200
    assert Case.objects.get(pk=signed_case.pk).patient_id == patient.pk


def test_a_signed_case_can_still_be_edited_where_it_is(admin_client, signed_case):
    url = reverse("admin:diagnosis_case_change", args=[signed_case.pk])
    response = admin_client.post(url, change_form_data(admin_client, url, indication="Fever, cough."))
    assert response.status_code == 302
    assert Case.objects.get(pk=signed_case.pk).indication == "Fever, cough."


def test_admin_refuses_moving_a_patient_with_signed_cases_to_another_department(
    admin_client, signed_case, patient, other_department
):
    url = reverse("admin:diagnosis_patient_change", args=[patient.pk])
    response = admin_client.post(url, change_form_data(admin_client, url, department=other_department.pk))
    assert response.status_code == 200
    assert "a signed case cannot move to another department" in response.content.decode()
    assert Patient.objects.get(pk=patient.pk).department_id != other_department.pk
    assert admin_events(A.ADMIN_CHANGE) == []


def test_the_model_refuses_the_move_for_every_other_writer(signed_case, foreign_patient, patient, other_department):
    signed_case.patient = foreign_patient
    with pytest.raises(ValidationError) as refused:
        signed_case.save()
    assert refused.value.error_dict["patient"][0].code == "signed_case_locked"
    signed_case.indication = "Edited."
    signed_case.save(update_fields=["indication"])  # other fields still save
    assert Case.objects.get(pk=signed_case.pk).patient_id == patient.pk

    patient.department = other_department
    with pytest.raises(ValidationError):
        patient.save()
    assert Patient.objects.get(pk=patient.pk).department_id != other_department.pk


def test_a_patient_without_signed_cases_can_move(case, patient, other_department):
    patient.department = other_department
    patient.save()
    assert Patient.objects.get(pk=patient.pk).department_id == other_department.pk


def test_bulk_delete_records_every_object_with_its_values(admin_client, radiologist):
    doomed = [PatientFactory(department=radiologist.department, created_by=radiologist, mrn=f"D-{n}") for n in range(3)]
    response = admin_client.post(
        reverse("admin:diagnosis_patient_changelist"),
        {"action": "delete_selected", "_selected_action": [p.pk for p in doomed], "post": "yes"},
        **CLIENT,
    )
    assert response.status_code == 302
    assert not Patient.objects.filter(pk__in=[p.pk for p in doomed]).exists()
    events = admin_events(A.ADMIN_DELETE)
    assert sorted(e.object_id for e in events) == sorted(str(p.pk) for p in doomed)
    assert {e.department_id for e in events} == {radiologist.department_id}
    assert sorted(e.detail["values"]["mrn"] for e in events) == ["D-0", "D-1", "D-2"]


def test_single_delete_is_recorded(admin_client, radiologist):
    patient = PatientFactory(department=radiologist.department, created_by=radiologist, mrn="D-9")
    url = reverse("admin:diagnosis_patient_delete", args=[patient.pk])
    assert admin_client.post(url, {"post": "yes"}).status_code == 302
    [event] = admin_events(A.ADMIN_DELETE)
    assert event.object_id == str(patient.pk)
    assert event.detail["values"]["name"] == patient.name


def test_deleting_an_empty_department_is_recorded_and_still_works(admin_client):
    department = Department.objects.create(name="Closed ward")
    url = reverse("admin:accounts_department_delete", args=[department.pk])
    assert admin_client.post(url, {"post": "yes"}).status_code == 302
    assert not Department.objects.filter(pk=department.pk).exists()
    [event] = admin_events(A.ADMIN_DELETE)
    assert (event.object_type, event.object_id, event.department_id) == (
        "accounts.department",
        str(department.pk),
        None,
    )


def test_password_set_in_the_admin_is_recorded_without_the_hash(admin_client, radiologist):
    url = reverse("admin:auth_user_password_change", args=[radiologist.pk])
    new_password = "pleural-effusion-2026"
    response = admin_client.post(
        url, {"password1": new_password, "password2": new_password, "usable_password": "true"}, **CLIENT
    )
    assert response.status_code == 302, response.content
    radiologist.refresh_from_db()
    assert radiologist.check_password(new_password)
    [event] = admin_events(A.ADMIN_CHANGE)
    assert (event.object_type, event.object_id) == ("accounts.user", str(radiologist.pk))
    assert event.department_id == radiologist.department_id
    assert radiologist.password not in str(event.detail)
    assert new_password not in str(event.detail)


def test_user_edit_records_the_change_and_never_the_password_hash(admin_client, radiologist):
    # The admin's form shows times to the second; stored microseconds would be a change too.
    radiologist.date_joined = radiologist.date_joined.replace(microsecond=0)
    radiologist.save(update_fields=["date_joined"])
    url = reverse("admin:accounts_user_change", args=[radiologist.pk])
    data = change_form_data(admin_client, url, first_name="Rosalind")
    assert admin_client.post(url, data).status_code == 302
    [event] = admin_events(A.ADMIN_CHANGE)
    assert event.detail["changes"] == {"first_name": {"from": radiologist.first_name, "to": "Rosalind"}}
    assert radiologist.password not in str(event.detail)


def test_the_department_admin_reads_admin_changes_to_their_department(admin_client, patient, department_admin):
    url = reverse("admin:diagnosis_patient_change", args=[patient.pk])
    admin_client.post(url, change_form_data(admin_client, url, name="Ada King"))
    reader = Client()
    reader.force_login(department_admin)
    page = reader.get(reverse("audit_log"), {"action": A.ADMIN_CHANGE})
    assert page.status_code == 200
    assert [e.object_id for e in page.context["page"].object_list] == [str(patient.pk)]


def test_admin_reads_of_lists_and_objects_are_recorded(admin_client, site_admin, patient):
    response = admin_client.get(reverse("admin:diagnosis_patient_changelist"), {"q": "Lovelace"}, **CLIENT)
    assert response.status_code == 200
    [listed] = admin_events(A.ADMIN_VIEW)
    assert (listed.actor, listed.object_type, listed.object_id) == (site_admin, "diagnosis.patient", "")
    assert listed.detail["query"] == {"q": "Lovelace"}

    page = admin_client.get(reverse("admin:diagnosis_patient_change", args=[patient.pk]), **CLIENT)
    assert page.status_code == 200
    viewed = admin_events(A.ADMIN_VIEW)[-1]
    assert (viewed.object_type, viewed.object_id) == ("diagnosis.patient", str(patient.pk))
    assert viewed.department_id == patient.department_id  # the department's admin sees it
    assert viewed.ip_address == CLIENT["REMOTE_ADDR"]


def test_an_admin_page_for_a_missing_object_records_no_read(admin_client):
    response = admin_client.get(reverse("admin:diagnosis_patient_change", args=[987654]))
    assert response.status_code == 302  # Django's admin redirects to the list with a message
    assert admin_events(A.ADMIN_VIEW) == []


def test_the_admin_cannot_add_an_image_to_a_signed_case_or_move_one_in_or_out(signed_case, case, radiologist):
    from tests.factories import CaseFactory, ImageFactory

    unsigned = CaseFactory(patient=signed_case.patient, created_by=radiologist)
    loose = ImageFactory(case=unsigned)
    loose.full_clean()  # an image of an unsigned case is fine where it is

    new = ImageFactory.build(case=signed_case, uploaded_by=radiologist)
    with pytest.raises(ValidationError, match="images are frozen"):
        new.clean()
    loose.case = signed_case
    with pytest.raises(ValidationError, match="images are frozen"):
        loose.clean()
    signed_image = ImageFactory(case=signed_case)  # the factory writes directly, as a signed case's own image
    signed_image.case = unsigned
    with pytest.raises(ValidationError, match="images are frozen"):
        signed_image.clean()

"""Promotion and demotion on the validation page: the signed-cases-per-class threshold, the site
admin's override, the previous assistive version stepping down, history and audit, and every
refusal as a clear message that writes nothing."""

# ruff: noqa: F811 - the fixtures imported from test_modelops_validation are requested by name
from __future__ import annotations

import re

import pytest
from django.urls import reverse
from pytest_django.asserts import assertContains

from audit.models import AuditEvent
from diagnosis.models import ModelDeployment, ModelStatusChange
from modelops import services
from tests.factories import TOTPDeviceFactory
from tests.test_modelops_validation import (  # noqa: F401 - fixtures
    CLASSES,
    NEW,
    OLD,
    admin,
    dept,
    model_folders,
    reader,
    signed_case,
)

pytestmark = pytest.mark.django_db


def deployment(dept, key) -> ModelDeployment:
    return ModelDeployment.objects.get(department=dept, model_name=key[0], model_version=key[1])


@pytest.fixture
def enough(dept, settings):
    """Two signed cases of every class with a result of both versions; the threshold set to 2."""
    settings.XNET_PROMOTION_MIN_SIGNED_PER_CLASS = 2
    for label in CLASSES:
        for _ in range(2):
            signed_case(dept, label, {NEW: (label, 0.8), OLD: ("normal", 0.8)})


def promote(client, key=NEW, **data):
    return client.post(reverse("modelops:promote", args=key), {"reason": "Validated on our cases.", **data})


def history(dept, key) -> list[tuple[str, str]]:
    return [(c.from_status, c.to_status) for c in deployment(dept, key).changes.order_by("changed_at", "id")]


def text(response) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", response.content.decode()))


def test_refused_below_the_threshold_with_the_counts(dept, admin, client, settings):
    settings.XNET_PROMOTION_MIN_SIGNED_PER_CLASS = 2
    signed_case(dept, "normal", {NEW: ("normal", 0.9)})
    client.force_login(admin)
    events = AuditEvent.objects.count()
    response = promote(client)
    assert response.status_code == 409
    assertContains(
        response,
        "Promotion needs at least 2 signed cases per class with a result of this version here; too few for: "
        "normal 1, pneumonia 0, covid 0, tuberculosis 0. A site admin can override with a reason.",
        status_code=409,
    )
    assert deployment(dept, NEW).status == "silent"
    assert deployment(dept, OLD).status == "assistive"
    assert AuditEvent.objects.count() == events
    assert history(dept, NEW) == [("", "silent")]


def test_default_threshold_is_twenty(settings):
    from xnet_site import settings as project_settings

    assert project_settings.XNET_PROMOTION_MIN_SIGNED_PER_CLASS == 20


def test_promotion_replaces_the_assistive_version(enough, dept, admin, client):
    client.force_login(admin)
    response = promote(client)
    assert response.status_code == 302
    assert response["Location"] == reverse("modelops:validation", args=NEW)
    assert deployment(dept, NEW).status == "assistive"
    assert deployment(dept, OLD).status == "silent"
    assert history(dept, NEW) == [("", "silent"), ("silent", "assistive")]
    assert history(dept, OLD)[-1] == ("assistive", "silent")
    change = deployment(dept, NEW).changes.first()
    assert (change.changed_by, change.reason, change.override) == (admin, "Validated on our cases.", False)
    events = AuditEvent.objects.filter(action=AuditEvent.Action.MODEL_STATUS_CHANGE, actor=admin)
    assert sorted((e.detail["model"], e.detail["from"], e.detail["to"]) for e in events) == [
        ("cxr-new 2.0.0", "silent", "assistive"),
        ("cxr-old 1.0.0", "assistive", "silent"),
    ]
    page = client.get(reverse("modelops:validation", args=NEW))
    assert "cxr-new 2.0.0 is assistive now." in text(page)
    assert "silent → assistive" in text(page)
    assert "Validated on our cases." in text(page)


def test_the_replaced_version_may_be_retired(enough, dept, admin, client):
    client.force_login(admin)
    assert promote(client, previous_becomes="retired").status_code == 302
    assert deployment(dept, OLD).status == "retired"
    assert history(dept, OLD)[-2:] == [("assistive", "silent"), ("silent", "retired")]


def test_only_a_site_admin_overrides(dept, admin, client, django_user_model):
    signed_case(dept, "normal", {NEW: ("normal", 0.9)})
    client.force_login(admin)
    response = promote(client, override="on")
    assertContains(response, "Only a site admin can override the promotion threshold.", status_code=409)
    assert deployment(dept, NEW).status == "silent"

    root = django_user_model.objects.create_superuser("root", "root@example.org", "x-very-long-pw")
    TOTPDeviceFactory(user=root)
    client.force_login(root)
    url = reverse("modelops:promote", args=NEW) + f"?department={dept.pk}"
    response = client.post(url, {"reason": "Urgent: the old version fails on our new scanner.", "override": "on"})
    assert response.status_code == 302
    assert deployment(dept, NEW).status == "assistive"
    change = deployment(dept, NEW).changes.first()
    assert change.override is True
    assert change.changed_by == root
    assert change.reason.startswith("Urgent: the old version fails on our new scanner. [site admin override: ")
    assert "normal 1, pneumonia 0" in change.reason
    event = AuditEvent.objects.get(action=AuditEvent.Action.MODEL_STATUS_CHANGE, actor=root, detail__to="assistive")
    assert event.detail["override"] is True
    assert event.department_id == dept.pk


def test_a_site_admin_without_override_is_held_to_the_threshold(dept, client, django_user_model):
    root = django_user_model.objects.create_superuser("root", "root@example.org", "x-very-long-pw")
    client.force_login(root)
    url = reverse("modelops:promote", args=NEW) + f"?department={dept.pk}"
    assert client.post(url, {"reason": "Trying."}).status_code == 409
    assert deployment(dept, NEW).status == "silent"


def test_reason_is_required(enough, dept, admin, client):
    client.force_login(admin)
    response = client.post(reverse("modelops:promote", args=NEW), {"reason": "   "})
    assert response.status_code == 400
    assertContains(response, "Say why the model&#x27;s status changes.", status_code=400)
    assert deployment(dept, NEW).status == "silent"
    response = client.post(reverse("modelops:promote", args=NEW), {"reason": "x" * 2001})
    assert response.status_code == 400
    assert deployment(dept, NEW).status == "silent"


def test_bad_choice_is_a_400(enough, dept, admin, client):
    client.force_login(admin)
    response = promote(client, previous_becomes="deleted")
    assert response.status_code == 400
    assert deployment(dept, OLD).status == "assistive"


def test_promoting_the_assistive_version_is_refused(dept, admin, client):
    client.force_login(admin)
    response = promote(client, key=OLD)
    assertContains(response, "cxr-old 1.0.0 is assistive already.", status_code=409)


def test_demote_to_silent_then_retired(dept, admin, client):
    client.force_login(admin)
    url = reverse("modelops:demote", args=OLD)
    response = client.post(url, {"reason": "Too many false positives here.", "to_status": "silent"})
    assert response.status_code == 302
    assert deployment(dept, OLD).status == "silent"
    response = client.post(url, {"reason": "Same again.", "to_status": "silent"})
    assertContains(response, "cxr-old 1.0.0 is silent; it cannot be demoted to silent.", status_code=409)
    assert client.post(url, {"reason": "Replaced for good.", "to_status": "retired"}).status_code == 302
    assert deployment(dept, OLD).status == "retired"
    assert history(dept, OLD)[-2:] == [("assistive", "silent"), ("silent", "retired")]
    response = promote(client, key=OLD)
    assertContains(response, "is retired: it has not run on recent images", status_code=409)
    assert ModelStatusChange.objects.filter(deployment__department=dept, changed_by=admin).count() == 2


def test_radiologists_cannot_change_statuses(enough, dept, reader, client):
    client.force_login(reader)
    assert promote(client).status_code == 403
    assert client.post(reverse("modelops:demote", args=OLD), {"reason": "x", "to_status": "silent"}).status_code == 403
    assert deployment(dept, NEW).status == "silent"
    assert deployment(dept, OLD).status == "assistive"


def test_get_on_a_change_is_not_allowed(dept, admin, client):
    client.force_login(admin)
    assert client.get(reverse("modelops:promote", args=NEW)).status_code == 405


def test_service_refuses_another_departments_admin(enough, dept, django_user_model):
    from accounts.models import Department
    from tests.factories import DepartmentAdminFactory

    stranger = DepartmentAdminFactory(department=Department.objects.create(name="Far away"))
    with pytest.raises(services.PermissionDenied):
        services.deployment_promote(deployment=deployment(dept, NEW), user=stranger, reason="No.")
    assert deployment(dept, NEW).status == "silent"

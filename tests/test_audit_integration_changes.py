"""Changes to where patient data goes (DICOM nodes, webhooks) are audit events."""

from __future__ import annotations

import pytest

from audit.models import AuditEvent
from dicomnet.models import DicomNode
from dicomnet.services import node_delete, node_save
from webhooks import services as webhook_services

pytestmark = pytest.mark.django_db
CHANGE = AuditEvent.Action.INTEGRATION_CHANGE


def changes() -> list[tuple[str, str]]:
    return [
        (event.object_type, event.detail["change"]) for event in AuditEvent.objects.filter(action=CHANGE).order_by("pk")
    ]


def test_registering_and_deactivating_a_webhook_is_audited(department_admin, settings):
    settings.XNET_WEBHOOK_ALLOW_LOOPBACK = True
    subscription, secret = webhook_services.subscription_create(
        created_by=department_admin, url="http://127.0.0.1:9/hook", events=["job.finished"]
    )
    webhook_services.subscription_deactivate(subscription=subscription, user=department_admin)
    assert changes() == [("webhook", "webhook_create"), ("webhook", "webhook_deactivate")]
    event = AuditEvent.objects.filter(action=CHANGE).order_by("pk").first()
    assert event.actor_id == department_admin.pk
    assert event.department_id == department_admin.department_id
    assert event.detail["url"] == "http://127.0.0.1:9/hook"
    assert secret not in str(event.detail)


def test_adding_changing_and_removing_a_dicom_node_is_audited(department_admin):
    node = node_save(
        node=DicomNode(
            name="Main PACS", ae_title="PACS1", host="127.0.0.1", port=11112, direction=DicomNode.Direction.BOTH
        ),
        changed_by=department_admin,
    )
    node.port = 11113
    node_save(node=node, changed_by=department_admin)
    node_delete(node=node, changed_by=department_admin)
    assert changes() == [
        ("dicom_node", "dicom_node_add"),
        ("dicom_node", "dicom_node_change"),
        ("dicom_node", "dicom_node_remove"),
    ]
    assert AuditEvent.objects.filter(action=CHANGE).order_by("pk").last().detail["port"] == 11113


def test_a_refused_change_writes_no_event(radiologist):
    with pytest.raises(PermissionError):
        webhook_services.subscription_create(
            created_by=radiologist, url="https://example.org/h", events=["job.finished"]
        )
    assert changes() == []

"""The case page's "Sent to PACS" block, registered with diagnosis.fragments (DicomnetConfig.ready)."""

from __future__ import annotations

from typing import Any

from accounts.models import User
from diagnosis.fragments import CaseFragment, register
from diagnosis.models import Case
from dicomnet.selectors import deliveries_for_case


def deliveries_context(*, case: Case, user: User, **state: Any) -> dict[str, Any]:
    return {"dicom_deliveries": deliveries_for_case(case_id=case.pk, user=user)}


def register_fragments() -> None:
    register(
        CaseFragment(
            name="dicom_deliveries",
            template="dicomnet/_deliveries.html",
            context=deliveries_context,
            refresh_when_finished=True,
        )
    )

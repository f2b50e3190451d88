"""Department-scoped reads of the audit trail, and how the log page names and groups them."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, timedelta

from django.db.models import QuerySet
from django.urls import reverse

from accounts.models import Department, User
from audit.models import AuditEvent
from diagnosis.models import Case, Image, InferenceJob, Patient, Prediction


def audit_event_list_for_admin(
    *,
    admin: User,
    action: str = "",
    username: str = "",
    date_from: date | None = None,
    date_to: date | None = None,
    object_type: str = "",
    object_id: str = "",
) -> QuerySet[AuditEvent]:
    """A department admin's own department's events, newest first; nothing for anyone else.

    Site admins read every department's events in the Django admin instead.
    """
    if not admin.is_department_admin:
        return AuditEvent.objects.none()
    events = AuditEvent.objects.filter(department_id=admin.department_id)
    if action:
        events = events.filter(action=action)
    if username:
        events = events.filter(actor_username__iexact=username)
    if date_from:
        events = events.filter(created_at__date__gte=date_from)
    if date_to:
        events = events.filter(created_at__date__lte=date_to)
    if object_type:
        events = events.filter(object_type=object_type)
    if object_id:
        events = events.filter(object_id=object_id)
    return events.select_related("actor").order_by("-created_at", "-id")


# Names and links for the log page and the CSV export ------------------------------------------


@dataclass(frozen=True)
class ObjectRef:
    """How the log shows an event's object: a name a person recognises, the page it is on (or
    ""), and for an image, heatmap or job the case it belongs to (to group a case view's rows)."""

    label: str
    url: str = ""
    case_id: int | None = None


def _ids(events: Iterable[AuditEvent], object_type: str) -> set[int]:
    return {int(e.object_id) for e in events if e.object_type == object_type and e.object_id.isdigit()}


def _image_label(image: Image) -> str:
    return f"image {image.position} of case {image.case_id} · {image.case.patient.name}"


def audit_object_refs(*, events: Iterable[AuditEvent], department_id: int) -> dict[tuple[str, str], ObjectRef]:
    """Names and links of the events' objects: one query per object type on the page, never one
    per row. Only the department's own objects are named; anything else (deleted, another
    department's, an unknown type) keeps the "type #id" it was recorded with."""
    events = list(events)
    refs: dict[tuple[str, str], ObjectRef] = {}

    for user in User.objects.filter(pk__in=_ids(events, "user"), department_id=department_id):
        name = user.get_full_name()
        label = f"{name} ({user.username})" if name else user.username
        refs["user", str(user.pk)] = ObjectRef(label, reverse("user_edit", args=[user.pk]))

    for patient in Patient.objects.filter(pk__in=_ids(events, "patient"), department_id=department_id):
        refs["patient", str(patient.pk)] = ObjectRef(
            f"{patient.name} (MRN {patient.mrn})", reverse("patient_detail", args=[patient.pk])
        )

    cases = Case.objects.select_related("patient").filter(
        pk__in=_ids(events, "case"), patient__department_id=department_id
    )
    for case in cases:
        refs["case", str(case.pk)] = ObjectRef(
            f"case {case.pk} · {case.patient.name}", reverse("case_detail", args=[case.pk]), case.pk
        )

    images = Image.objects.select_related("case__patient").filter(
        pk__in=_ids(events, "image"), case__patient__department_id=department_id
    )
    for image in images:
        refs["image", str(image.pk)] = ObjectRef(
            _image_label(image), reverse("case_detail", args=[image.case_id]), image.case_id
        )

    predictions = Prediction.objects.select_related("job__image__case__patient").filter(
        pk__in=_ids(events, "prediction"), job__image__case__patient__department_id=department_id
    )
    for prediction in predictions:
        image = prediction.job.image
        refs["prediction", str(prediction.pk)] = ObjectRef(
            f"heatmap of {_image_label(image)}", reverse("case_detail", args=[image.case_id]), image.case_id
        )

    jobs = InferenceJob.objects.select_related("image__case__patient").filter(
        pk__in=_ids(events, "job"), image__case__patient__department_id=department_id
    )
    for job in jobs:
        refs["job", str(job.pk)] = ObjectRef(
            f"AI result of {_image_label(job.image)}",
            reverse("case_detail", args=[job.image.case_id]),
            job.image.case_id,
        )

    if _ids(events, "department") == {department_id}:
        department = Department.objects.filter(pk=department_id).first()
        if department is not None:
            refs["department", str(department_id)] = ObjectRef(f"department {department.name}")
    return refs


def object_label(event: AuditEvent, refs: dict[tuple[str, str], ObjectRef]) -> str:
    """The object as the page and the CSV name it ("" when the event has none)."""
    ref = refs.get((event.object_type, event.object_id))
    if ref is not None:
        return ref.label
    kind = event.object_type.replace("_", " ")
    return f"{kind} #{event.object_id}" if kind and event.object_id else kind


# Grouping one page view's rows ----------------------------------------------------------------

# Opening a case page records the case view, then one image view per image file and per heatmap
# the browser fetches (1 + 2 x images rows), and more as the viewer loads pictures. Each is a
# request of its own, so they share no request id; what ties them is the same person, browser and
# address reading pictures of the case they just opened. The rows stay as recorded (the trail is
# append-only and complete); the page shows them under their case view.
GROUP_WINDOW = timedelta(minutes=30)  # a picture read later than this is a row of its own
PICTURE_TYPES = ("image", "prediction")


@dataclass
class LogRow:
    event: AuditEvent
    object: ObjectRef | None
    object_label: str
    grouped: list[LogRow] = field(default_factory=list)

    @property
    def grouped_summary(self) -> str:
        """ "3 images and 3 heatmaps" for the rows shown under a case view."""
        images = sum(1 for row in self.grouped if row.event.object_type == "image")
        heatmaps = sum(1 for row in self.grouped if row.event.object_type == "prediction")
        parts = [f"{n} {word}{'s' if n != 1 else ''}" for n, word in ((images, "image"), (heatmaps, "heatmap")) if n]
        return " and ".join(parts)


def _viewer(event: AuditEvent) -> tuple:
    return (event.actor_id or event.actor_username, event.ip_address, event.user_agent)


def audit_log_rows(*, events: Iterable[AuditEvent], department_id: int) -> list[LogRow]:
    """The page's events as rows, newest first, each with its object's name and link, and the
    image and heatmap views of a case page grouped under the case view that led to them: by the
    same person from the same browser and address, for that case, before they did anything but
    read pictures, and within GROUP_WINDOW. Page views only; an API client's reads stay rows of their own."""
    events = list(events)
    refs = audit_object_refs(events=events, department_id=department_id)
    open_views: dict[tuple, LogRow] = {}  # per viewer: the case page they are on
    rows: list[LogRow] = []
    for event in sorted(events, key=lambda e: (e.created_at, e.pk)):
        ref = refs.get((event.object_type, event.object_id))
        row = LogRow(event=event, object=ref, object_label=object_label(event, refs))
        viewer = _viewer(event)
        page = open_views.get(viewer)
        is_picture = event.action == AuditEvent.Action.IMAGE_VIEW and event.object_type in PICTURE_TYPES
        if (
            is_picture
            and page is not None
            and ref is not None
            and ref.case_id == page.object.case_id
            and event.created_at - page.event.created_at <= GROUP_WINDOW
            and event.detail.get("via") != "api"
        ):
            page.grouped.append(row)
            continue
        if not is_picture:  # a picture of another case (a prior beside it) leaves the page open
            open_views.pop(viewer, None)
        if (
            event.action == AuditEvent.Action.CASE_VIEW
            and ref is not None
            and event.method == "GET"
            and event.detail.get("via") != "api"
        ):
            open_views[viewer] = row
        rows.append(row)
    rows.reverse()
    return rows

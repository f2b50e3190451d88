"""Reads, always scoped to the user's department.

Views and API views fetch objects only through these functions, so another department's object
is simply not found (404), never "forbidden" (which would confirm that it exists).
"""

from __future__ import annotations

import json
from base64 import urlsafe_b64decode, urlsafe_b64encode
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from django.conf import settings
from django.db import models
from django.db.models import (
    DateTimeField,
    F,
    FloatField,
    IntegerField,
    OuterRef,
    Prefetch,
    Q,
    QuerySet,
    Subquery,
    Value,
    When,
)
from django.db.models.functions import Coalesce
from django.utils import timezone

from accounts.models import User
from diagnosis.model_status import assistive_q
from diagnosis.models import (
    NEGATIVE_FINDINGS,
    Case,
    Image,
    InferenceJob,
    Modality,
    Patient,
    Prediction,
)


def _department_id(user: User) -> int | None:
    return user.department_id if user.is_authenticated and user.is_active else None


def patient_list_for_user(*, user: User) -> QuerySet[Patient]:
    return Patient.objects.filter(department_id=_department_id(user))


def case_list_for_user(*, user: User) -> QuerySet[Case]:
    return Case.objects.filter(patient__department_id=_department_id(user)).select_related("patient", "created_by")


def image_list_for_user(*, user: User) -> QuerySet[Image]:
    """The department's images; a withdrawn image is gone from pages and API (404)."""
    return (
        Image.objects.current()
        .filter(case__patient__department_id=_department_id(user))
        .select_related("case__patient")
    )


def shown_jobs() -> QuerySet[InferenceJob]:
    """Jobs of models assistive in the image's department (issue 12): the only results pages, the
    API, reports and triage show. A silent model's jobs are for its validation page alone."""
    return InferenceJob.objects.filter(assistive_q())


def job_list_for_user(*, user: User) -> QuerySet[InferenceJob]:
    return (
        shown_jobs()
        .filter(image__case__patient__department_id=_department_id(user), image__withdrawn_at__isnull=True)
        .select_related("image__case__patient", "prediction")
    )


def prediction_list_for_user(*, user: User) -> QuerySet[Prediction]:
    return (
        Prediction.objects.filter(
            job__image__case__patient__department_id=_department_id(user), job__image__withdrawn_at__isnull=True
        )
        .filter(assistive_q("job__"))
        .select_related("job__image__case")
    )


class Triage(models.IntegerChoices):
    """Worklist tiers, in reading order."""

    OVERDUE = 0, "Waiting past the maximum wait"
    POSITIVE = 1, "AI-positive finding"
    WAITING = 2, "Waiting (negative, failed or pending AI result)"
    NO_IMAGES = 3, "No images yet"
    SIGNED = 4, "Signed"


class Reading(models.TextChoices):
    """The worklist's reading-status filter (separate from the job status filter)."""

    UNSIGNED = "unsigned", "Unsigned"
    SIGNED = "signed", "Signed"
    ALL = "all", "Signed and unsigned"


# A constant that sorts before every real instant: the key of a tier that does not use a column.
_NO_TIME = datetime(1970, 1, 1, tzinfo=UTC)

# The worklist orders by these annotations (name, descending); the last two make the order total,
# so keyset pages (WorklistCursor) and "next case" (worklist_neighbours) never skip or repeat.
READING_ORDER = (
    ("triage", False),
    ("wait_key", False),
    ("probability_key", True),
    ("signed_key", True),
    ("created_at", True),
    ("id", True),
)
NEWEST_FIRST = (("created_at", True), ("id", True))


def _with_reading_keys(cases: QuerySet[Case], *, now: datetime, as_unsigned: bool = False) -> QuerySet[Case]:
    """Annotate the reading order's keys, all computed in the database from stored columns and
    never null (a tier's unused key is a constant), so keyset conditions compare plain values.

    Reading order: overdue unsigned cases (longest wait first), then AI-positive ones (most
    probable first), then the rest waiting (longest first), cases without images (newest first),
    and signed cases last (most recently signed first). A case waits from its first upload.
    `as_unsigned`: place every case where it stood before it was signed (signing changes neither
    its wait nor its stored AI finding), which is where "next case" continues from.
    """
    cutoff = now - timedelta(minutes=settings.XNET_TRIAGE_MAX_WAIT_MINUTES)
    # waiting_since, lead_label and lead_probability are stored on the case
    # (Case.refresh_reading_order), so these are plain columns.
    tiers = [
        When(waiting_since__lt=cutoff, then=Value(Triage.OVERDUE)),
        When(~Q(lead_label="") & ~Q(lead_label__in=NEGATIVE_FINDINGS), then=Value(Triage.POSITIVE)),
        When(waiting_since__isnull=False, then=Value(Triage.WAITING)),
    ]
    if not as_unsigned:
        tiers.insert(0, When(report__isnull=False, then=Value(Triage.SIGNED)))
    cases = cases.annotate(triage=models.Case(*tiers, default=Value(Triage.NO_IMAGES), output_field=IntegerField()))
    return cases.annotate(
        wait_key=models.Case(
            When(triage__in=[Triage.OVERDUE, Triage.WAITING], then=F("waiting_since")),
            default=Value(_NO_TIME),
            output_field=DateTimeField(),
        ),
        probability_key=models.Case(
            When(triage=Triage.POSITIVE, then=Coalesce(F("lead_probability"), Value(0.0))),
            default=Value(0.0),
            output_field=FloatField(),
        ),
        signed_key=models.Case(
            When(triage=Triage.SIGNED, then=F("report__signed_at")),
            default=Value(_NO_TIME),
            output_field=DateTimeField(),
        ),
    )


def _ordered(cases: QuerySet[Case], keys: tuple[tuple[str, bool], ...], *, reverse: bool = False) -> QuerySet[Case]:
    return cases.order_by(*[F(name).desc() if descending != reverse else F(name).asc() for name, descending in keys])


def _beyond(keys: tuple[tuple[str, bool], ...], values: Sequence, *, reverse: bool = False) -> Q:
    """Rows after `values` in the order `keys` (before them with `reverse`): the keyset condition
    (k1 > v1) OR (k1 = v1 AND k2 > v2) OR ..., each comparison in its key's direction."""
    condition, equal = Q(pk__in=[]), {}
    for (name, descending), value in zip(keys, values, strict=True):
        lookup = "lt" if descending != reverse else "gt"
        condition |= Q(**equal, **{f"{name}__{lookup}": value})
        equal[name] = value
    return condition


def _triaged(cases: QuerySet[Case], *, now: datetime | None = None) -> QuerySet[Case]:
    """The cases in reading order (see _with_reading_keys), computed in the database."""
    return _ordered(_with_reading_keys(cases, now=now or timezone.now()), READING_ORDER)


@dataclass(frozen=True)
class WorklistCursor:
    """A keyset page position: the sort keys of the row a page continues from, and the instant
    the traversal started (the overdue tier depends on it, so every page of one traversal uses
    the same cutoff and returns each case exactly once). Opaque to clients (URL-safe base64)."""

    now: datetime
    values: tuple
    reverse: bool = False

    def encode(self) -> str:
        def plain(value):
            return value.isoformat() if isinstance(value, datetime) else value

        raw = {"n": self.now.isoformat(), "v": [plain(value) for value in self.values], "r": self.reverse}
        return urlsafe_b64encode(json.dumps(raw, separators=(",", ":")).encode()).decode().rstrip("=")

    @classmethod
    def decode(cls, token: str, *, keys: tuple[tuple[str, bool], ...]) -> WorklistCursor:
        """Raises ValueError for anything that is not a cursor of this order."""
        try:
            raw = json.loads(urlsafe_b64decode(token + "=" * (-len(token) % 4)))
            now = _instant(raw["n"])
            values = raw["v"]
            if not isinstance(values, list) or len(values) != len(keys) or not isinstance(raw.get("r"), bool):
                raise ValueError
            parsed = tuple(_key_value(name, value) for (name, _), value in zip(keys, values, strict=True))
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise ValueError("Not a valid cursor.") from exc
        return cls(now=now, values=parsed, reverse=raw["r"])


def _instant(value) -> datetime:
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        raise ValueError("naive")
    return parsed


def _key_value(name: str, value):
    if name in ("triage", "id"):
        if type(value) is not int:
            raise ValueError(name)
        return value
    if name == "probability_key":
        if type(value) not in (int, float):
            raise ValueError(name)
        return float(value)
    return _instant(value)


def cursor_after(case: Case, *, keys: tuple[tuple[str, bool], ...], now: datetime, reverse: bool = False) -> str:
    """The cursor of the page that continues after (before, with `reverse`) this annotated case."""
    return WorklistCursor(now=now, values=tuple(getattr(case, name) for name, _ in keys), reverse=reverse).encode()


@dataclass
class KeysetPage:
    """One keyset page: its rows in display order, and cursors for the pages either side."""

    object_list: list[Case]
    next_cursor: str | None
    previous_cursor: str | None
    now: datetime


def keyset_page(
    cases: QuerySet[Case],
    *,
    keys: tuple[tuple[str, bool], ...],
    size: int,
    cursor: WorklistCursor | None,
    now: datetime,
) -> KeysetPage:
    """Read one page with a keyset condition instead of OFFSET: a deep page costs what the first
    does. `cases` is ordered by `keys` already (worklist()); the last key is the id.

    Two queries: the page's positions first, selecting the sort keys alone (narrow rows: sorting
    10,000 cases took 141 ms with every column and the joins of the full rows, 27 ms with the
    keys only, under the same load), then the full rows of those ids with their per-row
    subqueries (latest job, image count), which so run for the page's rows only.
    """
    names = [name for name, _ in keys]
    if names[-1] != "id":
        raise ValueError("The last key must be the id: it makes the order total.")
    ordered = cases
    if cursor is not None:
        now = cursor.now
        ordered = _ordered(cases, keys, reverse=cursor.reverse).filter(
            _beyond(keys, cursor.values, reverse=cursor.reverse)
        )
    positions = list(ordered.values_list(*names)[: size + 1])
    more = len(positions) > size
    ids = [position[-1] for position in positions[:size]]
    full = {case.pk: case for case in cases.order_by().filter(pk__in=ids)} if ids else {}
    rows = [full[pk] for pk in ids if pk in full]
    backwards = cursor is not None and cursor.reverse
    if backwards:
        rows.reverse()
    has_next = (more if not backwards else True) if rows else False
    has_previous = (cursor is not None and (more if backwards else True)) if rows else False
    return KeysetPage(
        object_list=rows,
        next_cursor=cursor_after(rows[-1], keys=keys, now=now) if has_next else None,
        previous_cursor=cursor_after(rows[0], keys=keys, now=now, reverse=True) if has_previous else None,
        now=now,
    )


def worklist(
    *,
    user: User,
    status: str | None = None,
    modality: str | None = None,
    date_from: date | None = None,
    date_to: date | None = None,
    search: str | None = None,
    reading: str | None = None,
    triage: bool = False,
    now: datetime | None = None,
) -> QuerySet[Case]:
    """The department's cases, each annotated with its latest shown job's status and top finding
    (Case.latest_job), its number of current images and its signed report, in a constant number
    of queries whatever the number of cases. Every filter is a condition the database can index,
    not a per-row subquery; the image count's subquery is in the select list only, so it runs for
    the rows of the page alone.

    Newest first; with `triage`, in reading order (see _with_reading_keys): the worklist page
    uses that, the API keeps its documented newest-first order. Both orders are total (READING_ORDER,
    NEWEST_FIRST), so keyset_page can page through them.
    """
    cases = case_list_for_user(user=user).select_related("report__signed_by")
    cases = cases.annotate(
        latest_status=F("latest_job__status"),
        latest_top_label=F("latest_job__prediction__top_label"),
        latest_top_probability=F("latest_job__prediction__top_probability"),
        image_count=Subquery(
            Image.objects.current()
            .filter(case=OuterRef("pk"))
            .order_by()
            .values("case")
            .annotate(count=models.Count("pk"))
            .values("count")[:1]
        ),
    )
    cases = _triaged(cases, now=now) if triage else _ordered(cases, NEWEST_FIRST)
    # Case.latest_job is the latest shown job (refresh_reading_order): one join, no per-row subquery.
    if status == "none":
        cases = cases.filter(latest_job__isnull=True)
    elif status:
        cases = cases.filter(latest_job__status=status)
    if modality in Modality.values:
        cases = cases.filter(modality=modality)
    if date_from:
        cases = cases.filter(created_at__date__gte=date_from)
    if date_to:
        cases = cases.filter(created_at__date__lte=date_to)
    if search:
        cases = cases.filter(Q(patient__mrn__icontains=search) | Q(patient__name__icontains=search))
    if reading == Reading.UNSIGNED:
        cases = cases.filter(report__isnull=True)
    elif reading == Reading.SIGNED:
        cases = cases.filter(report__isnull=False)
    return cases


WORKLIST_FILTERS = ("status", "modality", "date_from", "date_to", "search")


def worklist_neighbours(*, user: User, case: Case, filters: Mapping[str, object]) -> tuple[int | None, int | None]:
    """(previous_id, next_id): the unsigned cases either side of `case` in the worklist's reading
    order, under the worklist's filters (the keyword arguments of worklist(): status, modality,
    date_from, date_to, search; WorklistFilterForm.filters() gives them from a querystring; the
    reading filter is ignored, "next case" is always an unsigned one).

    `case` itself need not pass the filters or be unsigned: it is placed where it stands as an
    unsigned case (signing moves nothing), so after signing, "next" is the case that followed it.
    Two queries; the user's department only (another department's case has no neighbours).
    """
    now = timezone.now()
    known = {name: filters[name] for name in WORKLIST_FILTERS if filters.get(name)}
    anchor = (
        _with_reading_keys(case_list_for_user(user=user), now=now, as_unsigned=True)
        .filter(pk=case.pk)
        .values(*[name for name, _ in READING_ORDER])
        .first()
    )
    if anchor is None:
        return None, None
    values = [anchor[name] for name, _ in READING_ORDER]
    unsigned = _with_reading_keys(
        worklist(user=user, reading=Reading.UNSIGNED, **known).order_by(), now=now, as_unsigned=True
    ).exclude(pk=case.pk)
    after = _ordered(unsigned, READING_ORDER).filter(_beyond(READING_ORDER, values))
    before = _ordered(unsigned, READING_ORDER, reverse=True).filter(_beyond(READING_ORDER, values, reverse=True))
    return before.values_list("pk", flat=True).first(), after.values_list("pk", flat=True).first()


def case_detail(*, user: User, case_id: int) -> Case:
    """One case with its images (withdrawn ones left out), jobs and predictions prefetched
    (raises Case.DoesNotExist). Only jobs of assistive models: what anyone reading the case sees."""
    jobs = shown_jobs().select_related("prediction").order_by("created_at", "id")
    return (
        case_list_for_user(user=user)
        .select_related("report__signed_by")  # the API's report summary, in the same query
        .prefetch_related(
            Prefetch("images", queryset=Image.objects.current().prefetch_related(Prefetch("jobs", queryset=jobs)))
        )
        .get(pk=case_id)
    )


def patient_history(*, patient: Patient) -> QuerySet[Case]:
    """All of a patient's cases with their uploads, oldest upload first within a case."""
    jobs = shown_jobs().select_related("prediction").order_by("created_at", "id")
    images = Image.objects.current().select_related("uploaded_by").prefetch_related(Prefetch("jobs", queryset=jobs))
    return (
        patient.cases.select_related("created_by")
        .prefetch_related(Prefetch("images", queryset=images))
        .order_by("-created_at", "-id")
    )


def case_priors(*, user: User, case: Case, limit: int = 5) -> list[Case]:
    """The patient's earlier cases of the same modality, newest first, for reading beside this one:
    each with its images (withdrawn ones left out) and its signed report, if any.

    The report lives in the reviews app, which builds on this one: read by relation name.
    """
    images = Image.objects.current().order_by("position")
    return list(
        case_list_for_user(user=user)
        .filter(patient_id=case.patient_id, modality=case.modality)
        .filter(Q(created_at__lt=case.created_at) | Q(created_at=case.created_at, pk__lt=case.pk))
        .select_related("report__signed_by")
        .prefetch_related(Prefetch("images", queryset=images))
        .order_by("-created_at", "-id")[:limit]
    )

"""Keyset pages of the worklist and "next case" (selectors.worklist_neighbours)."""

from __future__ import annotations

import random
from datetime import timedelta

import pytest
from django.utils import timezone

from diagnosis import selectors
from diagnosis.models import Case
from reviews.models import Report
from tests.factories import CaseFactory, ImageFactory, InferenceJobFactory, PatientFactory, PredictionFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def make_case(radiologist):
    """A department case; `finding` = (label, probability) of its image, `waited` = how long ago
    the image arrived, `signed` = the report's final label."""

    def make(*, finding=None, waited=timedelta(minutes=5), images=True, signed=None, status=None, **kwargs):
        patient = PatientFactory(department=kwargs.pop("department", radiologist.department), created_by=radiologist)
        case = CaseFactory(patient=patient, created_by=radiologist, **kwargs)
        if images:
            image = ImageFactory(case=case, uploaded_at=timezone.now() - waited)
            if finding:
                PredictionFactory(job__image=image, top_label=finding[0], top_probability=finding[1])
            elif status:
                InferenceJobFactory(image=image, status=status)
        if signed:
            Report.objects.create(
                case=case,
                ai_label=finding[0] if finding else "",
                ai_probability=finding[1] if finding else None,
                agrees_with_ai=bool(finding) and signed == finding[0],
                final_label=signed,
                impression="Read.",
                signed_by=radiologist,
            )
        return case

    return make


def mixed_worklist(make_case, count: int = 40) -> list[Case]:
    """Cases in every tier, with ties on every key but the id."""
    rng = random.Random(7)
    same_time = timezone.now() - timedelta(days=1)
    cases = []
    for n in range(count):
        kind = n % 5
        if kind == 0:
            cases.append(make_case(finding=("pneumonia", rng.choice([0.6, 0.9])), created_at=same_time))
        elif kind == 1:
            cases.append(make_case(finding=("normal", 0.8), waited=timedelta(minutes=rng.choice([3, 600]))))
        elif kind == 2:
            cases.append(make_case(images=False, created_at=same_time))
        elif kind == 3:
            cases.append(make_case(finding=("covid", 0.7), signed="covid"))
        else:
            cases.append(make_case(status=rng.choice(["failed", "pending"]), waited=timedelta(minutes=8)))
    return cases


def walk(user, size: int, **filters) -> tuple[list[list[int]], list[list[int]]]:
    """Every page from the first, following next cursors; then back again by previous cursors."""

    def read(cursor_token: str | None) -> selectors.KeysetPage:
        now = timezone.now()
        cursor = selectors.WorklistCursor.decode(cursor_token, keys=selectors.READING_ORDER) if cursor_token else None
        cases = selectors.worklist(user=user, triage=True, now=cursor.now if cursor else now, **filters)
        return selectors.keyset_page(cases, keys=selectors.READING_ORDER, size=size, cursor=cursor, now=now)

    page = read(None)
    assert page.previous_cursor is None
    forward = [[case.pk for case in page.object_list]]
    while page.next_cursor:
        page = read(page.next_cursor)
        forward.append([case.pk for case in page.object_list])
    backward = [forward[-1]]
    while page.previous_cursor:
        page = read(page.previous_cursor)
        backward.insert(0, [case.pk for case in page.object_list])
    return forward, backward


@pytest.mark.parametrize("size", [1, 3, 7, 40, 100])
def test_keyset_pages_return_every_case_once_in_reading_order(radiologist, make_case, size):
    mixed_worklist(make_case)
    everything = [case.pk for case in selectors.worklist(user=radiologist, triage=True)]
    assert len(everything) == 40
    forward, backward = walk(radiologist, size)
    assert [pk for page in forward for pk in page] == everything  # in order, none skipped, none twice
    assert forward == [everything[i : i + size] for i in range(0, len(everything), size)]
    assert backward == forward  # walking back by previous cursors gives the same pages


def test_keyset_pages_under_filters(radiologist, make_case):
    mixed_worklist(make_case)
    for filters in ({"reading": "unsigned"}, {"reading": "signed"}, {"status": "succeeded"}, {"status": "none"}):
        everything = [case.pk for case in selectors.worklist(user=radiologist, triage=True, **filters)]
        assert everything
        forward, backward = walk(radiologist, 3, **filters)
        assert [pk for page in forward for pk in page] == everything
        assert backward == forward


def test_reading_order_tiers(radiologist, make_case):
    signed = make_case(finding=("covid", 0.7), signed="covid")
    waiting = make_case(finding=("normal", 0.9), waited=timedelta(minutes=10))
    overdue = make_case(finding=("normal", 0.9), waited=timedelta(hours=5))
    likely = make_case(finding=("pneumonia", 0.9))
    less_likely = make_case(finding=("pneumonia", 0.6))
    empty = make_case(images=False)
    order = [case.pk for case in selectors.worklist(user=radiologist, triage=True)]
    assert order == [overdue.pk, likely.pk, less_likely.pk, waiting.pk, empty.pk, signed.pk]
    unsigned = [case.pk for case in selectors.worklist(user=radiologist, triage=True, reading="unsigned")]
    assert unsigned == order[:-1]
    assert [case.pk for case in selectors.worklist(user=radiologist, triage=True, reading="signed")] == [signed.pk]


@pytest.mark.parametrize("token", ["", "abc", "eyJ9", "e30", "eyJuIjoiMjAyNiIsInYiOltdLCJyIjpmYWxzZX0"])
def test_malformed_cursor_is_refused(token):
    with pytest.raises(ValueError, match="Not a valid cursor"):
        selectors.WorklistCursor.decode(token, keys=selectors.READING_ORDER)


def test_neighbours_walk_unsigned_cases_in_worklist_order(radiologist, make_case):
    mixed_worklist(make_case, 25)
    unsigned = [case.pk for case in selectors.worklist(user=radiologist, triage=True, reading="unsigned")]
    for index, pk in enumerate(unsigned):
        previous_id, next_id = selectors.worklist_neighbours(user=radiologist, case=Case.objects.get(pk=pk), filters={})
        assert previous_id == (unsigned[index - 1] if index else None)
        assert next_id == (unsigned[index + 1] if index + 1 < len(unsigned) else None)


def test_neighbours_keep_the_filters(radiologist, make_case):
    xray = [make_case(finding=("pneumonia", p), modality="xray") for p in (0.9, 0.8, 0.7)]
    ct_between = make_case(finding=("covid", 0.85), modality="ct")
    assert selectors.worklist_neighbours(user=radiologist, case=xray[0], filters={})[1] == ct_between.pk
    filters = {"modality": "xray", "unknown": "ignored", "search": None}
    assert selectors.worklist_neighbours(user=radiologist, case=xray[0], filters=filters) == (None, xray[1].pk)
    assert selectors.worklist_neighbours(user=radiologist, case=xray[1], filters=filters) == (xray[0].pk, xray[2].pk)


def test_after_signing_next_is_the_case_that_followed(radiologist, make_case):
    first = make_case(finding=("pneumonia", 0.9))
    second = make_case(finding=("pneumonia", 0.8))
    third = make_case(finding=("pneumonia", 0.7))
    Report.objects.create(
        case=second,
        ai_label="pneumonia",
        ai_probability=0.8,
        agrees_with_ai=True,
        final_label="pneumonia",
        impression="Read.",
        signed_by=radiologist,
    )
    second.refresh_reading_order()
    assert selectors.worklist_neighbours(user=radiologist, case=second, filters={}) == (first.pk, third.pk)
    # and the signed case is no one's neighbour any more
    assert selectors.worklist_neighbours(user=radiologist, case=first, filters={}) == (None, third.pk)


def test_neighbours_stay_in_the_department(radiologist, outsider, make_case, other_department):
    mine = make_case(finding=("pneumonia", 0.9))
    theirs = make_case(finding=("pneumonia", 0.8), department=other_department)
    assert selectors.worklist_neighbours(user=radiologist, case=mine, filters={}) == (None, None)
    assert selectors.worklist_neighbours(user=radiologist, case=theirs, filters={}) == (None, None)
    assert selectors.worklist_neighbours(user=outsider, case=theirs, filters={}) == (None, None)

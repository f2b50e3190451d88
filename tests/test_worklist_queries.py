"""The worklist runs a constant number of queries, whatever the number of cases."""

from __future__ import annotations

import html
import re

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from tests.factories import CaseFactory, InferenceJobFactory, PatientFactory, PredictionFactory

pytestmark = pytest.mark.django_db


def add_cases(user, count: int) -> None:
    """Cases in every state, each with its own patient and image, like a real worklist."""
    for n in range(count):
        case = CaseFactory(patient=PatientFactory(department=user.department, created_by=user), created_by=user)
        if n % 3 == 0:
            PredictionFactory(job__image__case=case)
        elif n % 3 == 1:
            InferenceJobFactory(image__case=case, status="failed", error_message="boom")


def worklist_queries(client, **params) -> int:
    with CaptureQueriesContext(connection) as queries:
        response = client.get(reverse("worklist"), params)
    assert response.status_code == 200
    return len(queries)


@pytest.mark.parametrize("params", [{}, {"status": "succeeded", "q": "MRN", "modality": "xray"}])
def test_worklist_query_count_does_not_grow_with_cases(rad_client, radiologist, params):
    add_cases(radiologist, 3)
    with_three = worklist_queries(rad_client, **params)
    add_cases(radiologist, 27)
    with_thirty = worklist_queries(rad_client, **params)
    assert with_three == with_thirty
    # session + user + department (top bar) + count + the page's positions (sort keys only) + its
    # full rows, and the audit event of the list read (savepoint, insert, release inside the
    # test's transaction)
    assert with_thirty <= 9


def test_patient_page_query_count_does_not_grow_with_history(rad_client, radiologist):
    patient = PatientFactory(department=radiologist.department, created_by=radiologist)

    def history_queries() -> int:
        with CaptureQueriesContext(connection) as queries:
            assert rad_client.get(reverse("patient_detail", args=[patient.pk])).status_code == 200
        return len(queries)

    PredictionFactory(job__image__case=CaseFactory(patient=patient))
    one = history_queries()
    for _ in range(5):
        PredictionFactory(job__image__case=CaseFactory(patient=patient))
        InferenceJobFactory(image__case=CaseFactory(patient=patient), status="pending")
    assert history_queries() == one


def test_deep_keyset_pages_cost_the_same_queries(rad_client, radiologist):
    """Following next links: every page, first or deep, runs the same queries."""
    add_cases(radiologist, 60)
    response = rad_client.get(reverse("worklist"))
    counts = []
    while True:
        found = re.search(r'<a rel="next" href="([^"]+)"', response.content.decode())
        if not found:
            break
        with CaptureQueriesContext(connection) as queries:
            response = rad_client.get(reverse("worklist") + html.unescape(found.group(1)))
        assert response.status_code == 200
        counts.append(len(queries))
    assert len(counts) == 2  # 60 cases, 25 a page
    assert len(set(counts)) == 1
    assert counts[0] == worklist_queries(rad_client)


def test_api_cursor_pages_cost_the_same_queries(api, radiologist):
    add_cases(radiologist, 120)
    api.get("/api/v1/cases/")  # the token's first use in an interval also writes an audit event
    counts, url = [], "/api/v1/cases/"
    while url:
        with CaptureQueriesContext(connection) as queries:
            body = api.get(url).json()
        counts.append(len(queries))
        url = body["next"]
    assert len(counts) == 3
    assert len(set(counts)) == 1

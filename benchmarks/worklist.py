"""Worklist response time with 10,000 cases: the HTML page `/` and the API list, median of N requests.

Command (PostgreSQL answering on 127.0.0.1):

    .venv/bin/python -m benchmarks.worklist [--cases 10000] [--requests 30]

What runs: a dedicated database (DATABASE_URL, default postgres://postgres@127.0.0.1:5432/xnet_bench)
is migrated, and the department "Benchmark worklist" is filled up to --cases cases with
bulk_create (2,500 patients with birth dates; per case one or two images, each with a job: 80 %
succeeded with a prediction, 8 % failed, 7 % pending, 2 % running; 3 % of cases without images;
the stored reading order; cases older than three days 90 % signed; the benchmark models
assistive), then ANALYZEd. Later runs reuse those rows. The deep pages start at case 5,000: a
keyset cursor (or `page=200` / `page=100` on a tree from before keyset pages). Requests go
through Django's test client in this process (URL routing, middleware, session or token auth,
the view, the template, the serializer), without an HTTP socket, with DEBUG off. Each URL gets 3
warm-up requests, then --requests timed ones; the query count and the SQL time come from one
more request with the queries captured.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from datetime import timedelta
from pathlib import Path

from benchmarks.common import machine, ms, setup_django, summary

DEPARTMENT = "Benchmark worklist"
PATIENTS = 2500
WARM_UP = 3


INDICATIONS = ["Cough and fever.", "Shortness of breath.", "Pre-operative chest film.", "Chest pain.", ""]
LABELS = ["normal", "pneumonia", "covid", "tuberculosis"]


def seeded(target: int) -> tuple:
    """(department, user, cases): the benchmark department and its radiologist, the department
    topped up to `target` cases by fill() (saying how long that took when it had to), and how
    many cases it holds. Both worklist benchmarks start here, on their own databases."""
    from accounts.models import Department, User
    from diagnosis.models import Case

    department, _ = Department.objects.get_or_create(name=DEPARTMENT)
    user, _ = User.objects.get_or_create(
        username="bench-worklist", defaults={"department": department, "role": User.Role.RADIOLOGIST}
    )
    started = time.perf_counter()
    created = fill(department, user, target)
    if created:
        print(f"Created {created} cases with bulk_create in {time.perf_counter() - started:.1f} s")
    return department, user, Case.objects.filter(patient__department=department).count()


def fill(department, user, target: int) -> int:
    """Top the department up to `target` cases; returns how many were created.

    Like a live department: patients with birth dates and sex, one or two images per case, the
    reading order stored on each case as Case.refresh_reading_order keeps it (first upload, the
    leading finding), and the cases older than three days signed (reviews.Report), so the
    worklist has signed and unsigned cases in every tier.
    """
    from django.db import connection, transaction
    from django.utils import timezone

    from diagnosis.models import NEGATIVE_FINDINGS, Case, Image, InferenceJob, Modality, Patient, Prediction
    from reviews.models import Report

    existing = Case.objects.filter(patient__department=department).count()
    missing = target - existing
    if missing <= 0:
        return 0
    rng = random.Random(existing)
    now = timezone.now()
    with transaction.atomic():
        # The benchmark models are assistive in the department (issue 12): the worklist shows them.
        from diagnosis.models import ModelDeployment

        for modality in Modality.values:
            ModelDeployment.objects.get_or_create(
                department=department,
                model_name=f"{modality}-bench",
                model_version="1.0.0",
                defaults={"modality": modality, "status": ModelDeployment.Status.ASSISTIVE},
            )
        patients = list(Patient.objects.filter(department=department))
        if len(patients) < PATIENTS:
            first = len(patients)
            patients += Patient.objects.bulk_create(
                Patient(
                    department=department,
                    mrn=f"BW{n:07d}",
                    name=f"Patient {n:05d}",
                    birth_date=(now - timedelta(days=rng.uniform(365, 95 * 365))).date(),
                    sex=rng.choice("FMFMU"),
                    created_by=user,
                )
                for n in range(first, PATIENTS)
            )
        cases = Case.objects.bulk_create(
            (
                Case(
                    patient=rng.choice(patients),
                    modality=Modality.XRAY if rng.random() < 0.8 else Modality.CT,
                    indication=rng.choice(INDICATIONS),
                    created_by=user,
                    created_at=now - timedelta(minutes=rng.uniform(0, 365 * 24 * 60)),
                )
                for _ in range(missing)
            ),
            batch_size=2000,
        )
        with_images = [case for case in cases if rng.random() >= 0.03]
        images = Image.objects.bulk_create(
            (
                Image(
                    case=case,
                    position=position,
                    modality=case.modality,
                    file=f"images/bench/{case.pk}-{position}.png",
                    original_name="chest.png",
                    sha256=f"{case.pk:060x}{position:04x}",
                    size_bytes=500_000,
                    width=1024,
                    height=1024,
                    format=Image.Format.PNG,
                    uploaded_by=user,
                    uploaded_at=case.created_at + timedelta(seconds=position),
                )
                for case in with_images
                for position in range(1, 2 if rng.random() < 0.7 else 3)
            ),
            batch_size=2000,
        )
        statuses = rng.choices(
            [InferenceJob.Status.SUCCEEDED, InferenceJob.Status.FAILED, InferenceJob.Status.PENDING, "running"],
            weights=[80, 8, 7, 2],
            k=len(images),
        )
        jobs = InferenceJob.objects.bulk_create(
            (
                InferenceJob(
                    image=image,
                    status=status,
                    attempt=0 if status == InferenceJob.Status.PENDING else 1,
                    model_name=f"{image.modality}-bench",
                    model_version="1.0.0",
                    error_message="The model could not process this image." if status == "failed" else "",
                    created_at=image.uploaded_at,
                    queued_at=image.uploaded_at,
                    started_at=None if status == InferenceJob.Status.PENDING else image.uploaded_at,
                    finished_at=image.uploaded_at if status in InferenceJob.FINISHED else None,
                )
                for image, status in zip(images, statuses, strict=True)
            ),
            batch_size=2000,
        )
        predictions = []
        for job in jobs:
            if job.status != InferenceJob.Status.SUCCEEDED:
                continue
            label = rng.choice(LABELS)
            top = rng.uniform(0.4, 0.99)
            rest = [other for other in LABELS if other != label]
            probabilities = {label: top, **{other: (1 - top) / len(rest) for other in rest}}
            predictions.append(
                Prediction(
                    job=job,
                    probabilities=probabilities,
                    top_label=label,
                    top_probability=top,
                    model_name=job.model_name,
                    model_version=job.model_version,
                )
            )
        Prediction.objects.bulk_create(predictions, batch_size=2000)
        # The stored reading order (what Case.refresh_reading_order computes, in bulk).
        by_case: dict[int, list] = {}
        for prediction in predictions:
            by_case.setdefault(prediction.job.image.case_id, []).append(prediction)
        first_upload = {}
        for image in images:
            first_upload.setdefault(image.case_id, image.uploaded_at)
        reports = []
        for case in with_images:
            case.waiting_since = first_upload[case.pk]
            found = by_case.get(case.pk, [])
            lead = max(found, key=lambda p: (p.top_label not in NEGATIVE_FINDINGS, p.top_probability), default=None)
            case.lead_label = lead.top_label if lead else ""
            case.lead_probability = lead.top_probability if lead else None
            if case.created_at < now - timedelta(days=3) and rng.random() < 0.9:
                final = case.lead_label if case.lead_label and rng.random() < 0.85 else rng.choice(LABELS)
                reports.append(
                    Report(
                        case=case,
                        ai_job=lead.job if lead else None,
                        ai_label=case.lead_label,
                        ai_probability=case.lead_probability,
                        ai_model_name=lead.model_name if lead else "",
                        ai_model_version="1.0.0" if lead else "",
                        agrees_with_ai=final == case.lead_label,
                        final_label=final,
                        impression="Read in the benchmark.",
                        signed_by=user,
                        signed_at=case.created_at + timedelta(minutes=rng.uniform(5, 600)),
                    )
                )
        Case.objects.bulk_update(with_images, ["waiting_since", "lead_label", "lead_probability"], batch_size=2000)
        Case.objects.filter(pk__in=[case.pk for case in with_images]).refresh_latest_jobs(department_id=department.pk)
        Report.objects.bulk_create(reports, batch_size=2000)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")  # fresh planner statistics, as autovacuum would give a live site
    return missing


def measure(client, url: str, requests: int) -> dict:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    for _ in range(WARM_UP):
        response = client.get(url)
        if response.status_code != 200:
            raise SystemExit(f"GET {url} answered {response.status_code}: {response.content[:300]!r}")
    times = []
    for _ in range(requests):
        started = time.perf_counter()
        client.get(url)
        times.append(time.perf_counter() - started)
    with CaptureQueriesContext(connection) as captured:
        response = client.get(url)
    return {
        "times": times,
        "queries": len(captured.captured_queries),
        "sql": sum(float(query["time"]) for query in captured.captured_queries),
        "bytes": len(response.content),
    }


def deep_page(user, kind: str) -> str:
    """The link to the middle of the list (case 5,000 on): a keyset cursor where the code has
    them (selectors.keyset_page), else the page number an older version linked to."""
    from diagnosis import selectors

    if not hasattr(selectors, "keyset_page"):
        return "/?page=200" if kind == "page" else "/api/v1/cases/?page=100"
    from django.utils import timezone

    now = timezone.now()
    keys = selectors.READING_ORDER if kind == "page" else selectors.NEWEST_FIRST
    cases = selectors.worklist(user=user, triage=kind == "page", now=now)
    anchor = cases[4999]
    cursor = selectors.cursor_after(anchor, keys=keys, now=now)
    return f"/?cursor={cursor}" if kind == "page" else f"/api/v1/cases/?cursor={cursor}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=30)
    args = parser.parse_args()

    setup_django(Path(tempfile.mkdtemp(prefix="xnet-bench-worklist-")))

    from django.test import Client
    from rest_framework.test import APIClient

    from accounts.services import api_token_create

    _, user, total = seeded(args.cases)

    page_client = Client()
    page_client.force_login(user)
    api = APIClient()
    _, key = api_token_create(user=user, name="worklist benchmark", days=1, created_by=None)
    api.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    mrn_fragment = "BW00012"  # matches 10 of the 2,500 patients
    targets = [
        ("page", page_client, "/"),
        ("page", page_client, "/?status=failed"),
        ("page", page_client, f"/?q={mrn_fragment}"),
        ("page", page_client, deep_page(user, "page")),
        ("API", api, "/api/v1/cases/"),
        ("API", api, "/api/v1/cases/?status=failed"),
        ("API", api, deep_page(user, "API")),
    ]

    print(f"XNET worklist response time: {total} cases in the user's department, {args.requests} requests per URL")
    print(f"  machine : {machine()}")
    print("  path    : Django test client in-process (no HTTP socket), DEBUG off, PostgreSQL")
    print("  deep pages start at case 5,000 (a keyset cursor, or the page number of older versions)")
    print(f"  {'':6}{'URL':34}{'median':>11}{'p95':>11}{'queries':>9}{'SQL':>11}{'bytes':>9}")
    for kind, client, url in targets:
        result = measure(client, url, args.requests)
        median, p95, _ = summary(result["times"])
        print(
            f"  {kind:6}{url[:33]:34}{ms(median)}  {ms(p95)}{result['queries']:>9}  "
            f"{ms(result['sql'])}{result['bytes']:>9}"
        )


if __name__ == "__main__":
    main()

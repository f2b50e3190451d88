"""schemathesis against the API's own WSGI app: every operation of /api/schema/, every check,
a fixed seed and a small example budget, 0 failures.

The schema is the one /api/schema/ serves (drf-spectacular's generator, built at collection so
schemathesis can make one test per operation). Requests go through Django's full WSGI stack,
middleware included, inside the test's transaction, as a token-authenticated client of a
department with a patient, a case, an image and a succeeded job.
"""

from __future__ import annotations

import json

import pytest
import schemathesis
from django.core.handlers.wsgi import WSGIHandler
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from drf_spectacular.generators import SchemaGenerator
from drf_spectacular.renderers import OpenApiJsonRenderer
from hypothesis import HealthCheck, settings

from tests.factories import PredictionFactory, api_token_for

pytestmark = pytest.mark.django_db

# The seeded objects all have this id, far above what the test database's sequences reach, so
# every `{id}` in a path can name a real object (patient, case, image, job, prediction).
SEED_ID = 900_000_001
# Where valid data by the schema can still be a 400: what the schema cannot say.
BEYOND_THE_SCHEMA = [
    # the file must be a chest image XNET reads (format, size, pixels, DICOM header)
    {"include-name": ["POST /api/v1/cases/{id}/images/", "POST /api/v1/cases/from-dicom/"]},
    # the record number must be new in the department; the patient must be one of it
    {"include-name": ["POST /api/v1/patients/", "POST /api/v1/cases/"]},
    # disagreeing needs final_label, a label of the model or "other" with other_finding
    {"include-name": "POST /api/v1/cases/{id}/report/"},
]
CONFIG = {
    "seed": 20261201,
    "generation": {"max-examples": 10},  # per operation in the fuzzing phase
    "checks": {"enabled": True},  # all of them
    "dictionaries": {"seeded": {"values": [SEED_ID]}},
    "parameters": {
        "path.id": {"dictionary": "seeded", "probability": 0.5},
        "body.patient": {"dictionary": "seeded", "probability": 1.0},
    },
    "operations": [
        {
            **selector,
            "checks": {"positive_data_acceptance": {"expected-statuses": ["2xx", "400", "401", "403", "404", "409"]}},
        }
        for selector in BEYOND_THE_SCHEMA
    ],
}

schema = schemathesis.openapi.from_dict(
    json.loads(OpenApiJsonRenderer().render(SchemaGenerator().get_schema(request=None, public=True))),
    config=schemathesis.Config.from_dict(CONFIG),
)
schema.app = WSGIHandler()


@pytest.fixture
def _in_test_transaction():
    """Keep the test's database connection across requests, as Django's test client does: the
    WSGI handler's request signals would close it, since it is inside the test's transaction."""
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


@pytest.fixture
def auth_header(radiologist, settings, _in_test_transaction) -> dict[str, str]:
    settings.XNET_MODEL_DIR = settings.BASE_DIR / "ml" / "models"  # the shipped models, for /models/
    PredictionFactory(
        id=SEED_ID,
        job__id=SEED_ID,
        job__image__id=SEED_ID,
        job__image__case__id=SEED_ID,
        job__image__case__patient__id=SEED_ID,
        job__image__case__patient__department=radiologist.department,
        job__image__case__patient__created_by=radiologist,
    )
    _, key = api_token_for(radiologist)
    return {"Authorization": f"Token {key}"}


@schema.parametrize()
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])  # the fixtures are read-only
def test_api_matches_its_schema(case, auth_header):
    case.call_and_validate(headers=auth_header)

"""/fhir/DiagnosticReport/<id>, /fhir/DiagnosticReport?patient=, /fhir/Patient/<id>.

Every answer, errors included, is parsed and validated as FHIR R4 (4.0.1) by fhir.resources, and
department isolation is checked as for the REST API: another department's ids are 404s, its
patients' reports are never found.
"""

from __future__ import annotations

import base64
import io

import fhir.resources
import pytest
from fhir.resources.bundle import Bundle
from fhir.resources.capabilitystatement import CapabilityStatement
from fhir.resources.diagnosticreport import DiagnosticReport
from fhir.resources.operationoutcome import OperationOutcome
from fhir.resources.patient import Patient as FhirPatient
from pypdf import PdfReader

from audit.models import AuditEvent
from diagnosis.models import Case, ModelDeployment
from reviews import services as review_services
from reviews.models import Report
from tests.conftest import token_client
from tests.factories import CaseFactory, ModelDeploymentFactory, PatientFactory, PredictionFactory

pytestmark = pytest.mark.django_db

SNOMED = "http://snomed.info/sct"
LOINC = "http://loinc.org"


def test_the_validator_is_r4():
    assert fhir.resources.__fhir_version__ == "4.0.1"


def signed_case(user, *, patient=None, impression="Consolidation right lower lobe.", **sign) -> tuple[Case, Report]:
    patient = patient or PatientFactory(department=user.department, created_by=user)
    case = CaseFactory(patient=patient, created_by=user)
    PredictionFactory(job__image__case=case)  # pneumonia 0.7 (test-xray 1.0.0, assistive)
    report = review_services.report_sign(
        case=case, signed_by=user, agrees_with_ai=sign.pop("agrees_with_ai", True), impression=impression, **sign
    )
    return case, report


def fhir_json(response, status: int = 200) -> dict:
    assert response.status_code == status, response.content
    assert response["Content-Type"].startswith("application/fhir+json")
    return response.json()


def outcome(response, status: int, code: str) -> OperationOutcome:
    body = OperationOutcome.parse_obj(fhir_json(response, status))
    assert body.issue[0].severity == "error"
    assert body.issue[0].code == code, body.issue[0].diagnostics
    assert body.issue[0].diagnostics
    return body


def codes(concept) -> set[tuple[str, str]]:
    return {(coding.system, coding.code) for coding in concept.coding or []}


def test_read_a_signed_report(api, radiologist):
    case, report = signed_case(radiologist, agrees_with_ai=False, final_label="tuberculosis")
    body = fhir_json(api.get(f"/fhir/DiagnosticReport/{report.pk}", HTTP_ACCEPT="application/fhir+json"))
    resource = DiagnosticReport.parse_obj(body)
    assert resource.id == str(report.pk)
    assert resource.status == "final"
    assert (LOINC, "18748-4") in codes(resource.code)
    assert resource.subject.reference == f"Patient/{case.patient_id}"
    assert resource.conclusion == "Consolidation right lower lobe."
    assert (SNOMED, "56717001") in codes(resource.conclusionCode[0])  # tuberculosis, the radiologist's
    contained = {item.id: item for item in resource.contained}
    assert [ref.reference for ref in resource.result] == ["#ai-finding", "#radiologist-finding"]
    ai, radiologist_finding = contained["ai-finding"], contained["radiologist-finding"]
    assert ai.resource_type == radiologist_finding.resource_type == "Observation"
    assert (SNOMED, "233604007") in codes(ai.valueCodeableConcept)  # pneumonia, the AI's
    assert "test-xray 1.0.0" in ai.method.text
    assert {(codes(c.code).pop()[1], float(c.valueQuantity.value)) for c in ai.component if c.code.coding} == {
        ("233604007", 70.0),
        ("17621005", 10.0),
        ("840539006", 15.0),
        ("56717001", 5.0),
    }
    assert (SNOMED, "56717001") in codes(radiologist_finding.valueCodeableConcept)
    assert radiologist_finding.performer[0].display == radiologist.username
    # The signed PDF, as the report page gives it.
    form = resource.presentedForm[0]
    assert form.contentType == "application/pdf"
    pdf = base64.b64decode(body["presentedForm"][0]["data"])
    assert pdf.startswith(b"%PDF")
    text = "".join(page.extract_text() for page in PdfReader(io.BytesIO(pdf)).pages)
    assert "Consolidation right lower lobe." in text


def test_an_addendum_makes_the_report_appended(api, radiologist):
    case, report = signed_case(radiologist)
    review_services.addendum_add(case=case, author=radiologist, text="Compared with prior: new.")
    resource = DiagnosticReport.parse_obj(fhir_json(api.get(f"/fhir/DiagnosticReport/{report.pk}")))
    assert resource.status == "appended"
    assert "Compared with prior: new." in resource.conclusion


def test_other_finding_has_text_and_no_code(api, radiologist):
    _, report = signed_case(radiologist, agrees_with_ai=False, final_label="other", other_finding="Pleural effusion")
    resource = DiagnosticReport.parse_obj(fhir_json(api.get(f"/fhir/DiagnosticReport/{report.pk}")))
    assert resource.conclusionCode[0].text == "Other finding: Pleural effusion"
    assert not resource.conclusionCode[0].coding


def test_a_model_demoted_after_signing_keeps_its_signed_result(api, radiologist):
    """The signed record keeps the AI result its signer saw, as the PDF in it does."""
    _, report = signed_case(radiologist)
    ModelDeployment.objects.filter(department=radiologist.department, model_name="test-xray").update(
        status=ModelDeployment.Status.SILENT
    )
    resource = DiagnosticReport.parse_obj(fhir_json(api.get(f"/fhir/DiagnosticReport/{report.pk}")))
    ai = {item.id: item for item in resource.contained}["ai-finding"]
    assert (SNOMED, "233604007") in codes(ai.valueCodeableConcept)
    assert ai.note[0].text.startswith("Model status when signed: assistive since")


def test_a_silent_models_result_is_never_in_a_report(api, radiologist):
    ModelDeploymentFactory(department=radiologist.department, model_name="test-xray-silent")  # silent
    case = CaseFactory(patient=PatientFactory(department=radiologist.department, created_by=radiologist))
    PredictionFactory(job__image__case=case, job__model_name="test-xray-silent")
    report = review_services.report_sign(
        case=case, signed_by=radiologist, agrees_with_ai=False, final_label="normal", impression="Clear lungs."
    )
    resource = DiagnosticReport.parse_obj(fhir_json(api.get(f"/fhir/DiagnosticReport/{report.pk}")))
    assert [item.id for item in resource.contained] == ["radiologist-finding"]
    assert [ref.reference for ref in resource.result] == ["#radiologist-finding"]
    assert (SNOMED, "17621005") in codes(resource.conclusionCode[0])


def test_search_by_patient(api, radiologist):
    patient = PatientFactory(department=radiologist.department, created_by=radiologist, sex="M")
    _, first = signed_case(radiologist, patient=patient, impression="First.")
    _, second = signed_case(radiologist, patient=patient, impression="Second.")
    PredictionFactory(job__image__case=CaseFactory(patient=patient, created_by=radiologist))  # unsigned
    signed_case(radiologist)  # another patient's
    for value in (str(patient.pk), f"Patient/{patient.pk}"):
        body = fhir_json(api.get("/fhir/DiagnosticReport", {"patient": value}))
        bundle = Bundle.parse_obj(body)
        assert bundle.type == "searchset"
        assert bundle.total == 2
        matches = [entry for entry in bundle.entry if entry.search.mode == "match"]
        assert [entry.resource.id for entry in matches] == [str(second.pk), str(first.pk)]  # newest first
        assert matches[0].fullUrl == f"http://testserver/fhir/DiagnosticReport/{second.pk}"
        included = [entry.resource for entry in bundle.entry if entry.search.mode == "include"]
        assert [(item.resource_type, item.id, item.gender) for item in included] == [
            ("Patient", str(patient.pk), "male")
        ]


def test_search_pages(api, radiologist):
    patient = PatientFactory(department=radiologist.department, created_by=radiologist)
    reports = [signed_case(radiologist, patient=patient, impression=f"Report {n}.")[1] for n in range(3)]
    newest_first = [str(report.pk) for report in reversed(reports)]
    seen = []
    url = f"/fhir/DiagnosticReport?patient={patient.pk}&_count=2"
    for expected in (newest_first[:2], newest_first[2:]):
        bundle = Bundle.parse_obj(fhir_json(api.get(url)))
        assert bundle.total == 3
        matches = [entry.resource.id for entry in bundle.entry if entry.search.mode == "match"]
        assert matches == expected
        seen += matches
        links = {link.relation: link.url for link in bundle.link}
        url = links.get("next", "").removeprefix("http://testserver")
    assert seen == newest_first
    assert url == ""  # no next link on the last page
    assert links["previous"].endswith("_page=1")
    past = Bundle.parse_obj(fhir_json(api.get(f"/fhir/DiagnosticReport?patient={patient.pk}&_page=9")))
    assert (past.total, past.entry) == (3, None)


def test_search_finding_nothing_is_an_empty_bundle(api, radiologist):
    patient = PatientFactory(department=radiologist.department, created_by=radiologist)
    bundle = Bundle.parse_obj(fhir_json(api.get("/fhir/DiagnosticReport", {"patient": patient.pk})))
    assert (bundle.total, bundle.entry) == (0, None)


def test_read_a_patient(api, radiologist):
    patient = PatientFactory(department=radiologist.department, created_by=radiologist, sex="F", mrn="MRN-77")
    resource = FhirPatient.parse_obj(fhir_json(api.get(f"/fhir/Patient/{patient.pk}")))
    assert resource.id == str(patient.pk)
    assert resource.identifier[0].value == "MRN-77"
    assert resource.name[0].text == patient.name
    assert resource.gender == "female"
    assert resource.birthDate == patient.birth_date


def test_session_authentication(rad_client, radiologist):
    _, report = signed_case(radiologist)
    DiagnosticReport.parse_obj(fhir_json(rad_client.get(f"/fhir/DiagnosticReport/{report.pk}")))


def test_other_departments_see_nothing(api, radiologist, outsider):
    case, report = signed_case(radiologist)
    outsider_api = token_client(outsider)
    outcome(outsider_api.get(f"/fhir/DiagnosticReport/{report.pk}"), 404, "not-found")
    outcome(outsider_api.get(f"/fhir/Patient/{case.patient_id}"), 404, "not-found")
    bundle = Bundle.parse_obj(fhir_json(outsider_api.get("/fhir/DiagnosticReport", {"patient": case.patient_id})))
    assert (bundle.total, bundle.entry) == (0, None)
    # And the other way round: the outsider's own signed report is not ours to read.
    _, theirs = signed_case(outsider)
    outcome(api.get(f"/fhir/DiagnosticReport/{theirs.pk}"), 404, "not-found")
    # An unknown id answers the same as another department's.
    outcome(api.get(f"/fhir/DiagnosticReport/{theirs.pk + 1000}"), 404, "not-found")


def test_an_unsigned_case_has_no_report(api, radiologist):
    _, report = signed_case(radiologist)
    PredictionFactory(job__image__case=CaseFactory(patient=report.case.patient, created_by=radiologist))
    assert Report.objects.count() == 1  # ids of reports are report ids, never case ids
    outcome(api.get(f"/fhir/DiagnosticReport/{report.pk + 1}"), 404, "not-found")


@pytest.mark.parametrize(
    ("query", "code"),
    [
        ({"patient": "1", "subject": "1"}, "not-supported"),  # unknown search parameter
        ({"status": "final"}, "not-supported"),
        ({}, "invalid"),  # patient is required
        ({"patient": "abc"}, "invalid"),
        ({"patient": "Practitioner/1"}, "invalid"),
        ({"patient": ""}, "invalid"),
        ({"patient": "1", "_count": "0"}, "invalid"),
        ({"patient": "1", "_count": "51"}, "invalid"),
        ({"patient": "1", "_page": "-1"}, "invalid"),
    ],
)
def test_bad_searches_are_refused(api, query, code):
    outcome(api.get("/fhir/DiagnosticReport", query), 400, code)


def test_repeated_parameter_is_refused(api):
    outcome(api.get("/fhir/DiagnosticReport?patient=1&patient=2"), 400, "invalid")


def test_read_refuses_parameters_and_other_formats(api, radiologist):
    _, report = signed_case(radiologist)
    outcome(api.get(f"/fhir/DiagnosticReport/{report.pk}", {"_elements": "id"}), 400, "not-supported")
    outcome(api.get(f"/fhir/DiagnosticReport/{report.pk}", {"_format": "xml"}), 406, "not-supported")
    DiagnosticReport.parse_obj(fhir_json(api.get(f"/fhir/DiagnosticReport/{report.pk}", {"_format": "json"})))


def test_errors_are_operation_outcomes(client, api, radiologist):
    _, report = signed_case(radiologist)
    outcome(client.get(f"/fhir/DiagnosticReport/{report.pk}"), 401, "login")
    bad = client.get(f"/fhir/Patient/{report.case.patient_id}", HTTP_AUTHORIZATION="Token nope")
    outcome(bad, 401, "login")
    outcome(api.get("/fhir/Observation/1"), 404, "not-found")
    outcome(api.get("/fhir/"), 404, "not-found")
    outcome(api.post(f"/fhir/DiagnosticReport/{report.pk}", {}, format="json"), 405, "not-supported")
    outcome(api.delete(f"/fhir/Patient/{report.case.patient_id}"), 405, "not-supported")


def test_a_user_without_department_is_forbidden(radiologist):
    from tests.factories import UserFactory

    _, report = signed_case(radiologist)
    lonely = UserFactory(username="nodept", department=None)
    outcome(token_client(lonely).get(f"/fhir/DiagnosticReport/{report.pk}"), 403, "forbidden")


def test_reads_are_audited(api, radiologist, outsider):
    case, report = signed_case(radiologist)
    before = AuditEvent.objects.order_by("-id").values_list("id", flat=True).first() or 0
    api.get(f"/fhir/DiagnosticReport/{report.pk}")
    api.get(f"/fhir/Patient/{case.patient_id}")
    api.get("/fhir/DiagnosticReport", {"patient": case.patient_id})
    token_client(outsider).get(f"/fhir/DiagnosticReport/{report.pk}")  # a 404: nothing read
    events = AuditEvent.objects.filter(id__gt=before).exclude(action=AuditEvent.Action.API_TOKEN_USE).order_by("id")
    assert [(e.action, e.object_type, e.object_id, e.actor_id, e.detail.get("via")) for e in events] == [
        ("report_download", "case", str(case.pk), radiologist.pk, "fhir"),
        ("patient_view", "patient", str(case.patient_id), radiologist.pk, "fhir"),
        ("report_download", "case", str(case.pk), radiologist.pk, "fhir"),
        ("patient_view", "patient", str(case.patient_id), radiologist.pk, "fhir"),
    ]
    assert events[0].detail["report"] == report.pk
    assert events[0].path == f"/fhir/DiagnosticReport/{report.pk}"


def test_capability_statement_is_public(client):
    statement = CapabilityStatement.parse_obj(fhir_json(client.get("/fhir/metadata")))
    assert statement.fhirVersion == "4.0.1"
    resources = {item.type: item for item in statement.rest[0].resource}
    assert [i.code for i in resources["Patient"].interaction] == ["read"]
    assert [i.code for i in resources["DiagnosticReport"].interaction] == ["read", "search-type"]
    assert [p.name for p in resources["DiagnosticReport"].searchParam] == ["patient", "_count", "_page"]
    assert statement.implementation.url == "http://testserver/fhir/"

"""FHIR R4 (4.0.1) resources built from XNET's rows: plain dicts, serialised as JSON.

No FHIR library at run time: the resources are few and small, and the tests validate every
response with fhir.resources (an R4 model library), so the shapes are checked where it matters
without adding pydantic to the web process.

Codes chosen (see README, "FHIR and webhooks"):
- DiagnosticReport.code: LOINC 18748-4 "Diagnostic imaging study"; category: HL7 v2-0074 RAD
  "Radiology" and LOINC LP29684-5 "Radiology".
- Observations (contained, category "imaging"): code LOINC 59776-5 "Procedure findings
  Narrative", with text saying whose finding it is (the AI's or the radiologist's); the finding
  as valueCodeableConcept in SNOMED CT where one fits (normal 17621005, pneumonia 233604007,
  COVID-19 840539006, tuberculosis 56717001), text only otherwise ("Non-COVID", an "other"
  finding). The AI observation carries each class probability as a component in percent (UCUM).
- DiagnosticReport.conclusionCode: the radiologist's finding, same SNOMED codes.
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime

from django.utils import timezone

from diagnosis.models import Case, Patient
from ml.labels import display_name
from reviews.models import Report

LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
UCUM = "http://unitsofmeasure.org"
V2_0074 = "http://terminology.hl7.org/CodeSystem/v2-0074"
OBSERVATION_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
ISSUE_TYPE = "http://hl7.org/fhir/issue-type"
# Identifier systems: XNET's own ids, as URNs (no public naming authority is involved).
REPORT_ID_SYSTEM = "urn:xnet:report"
MRN_SYSTEM = "urn:xnet:department:{department}:mrn"

FINDING_CODES = {
    "normal": ("17621005", "Normal"),
    "pneumonia": ("233604007", "Pneumonia"),
    "covid": ("840539006", "Disease caused by severe acute respiratory syndrome coronavirus 2"),
    "tuberculosis": ("56717001", "Tuberculosis"),
}
GENDERS = {Patient.Sex.FEMALE: "female", Patient.Sex.MALE: "male", Patient.Sex.OTHER: "other"}
AI_OBSERVATION_ID = "ai-finding"
RADIOLOGIST_OBSERVATION_ID = "radiologist-finding"


def instant(value: datetime) -> str:
    """An R4 instant: seconds, and a time zone (UTC)."""
    return timezone.localtime(value, UTC).isoformat(timespec="seconds")


def finding_concept(label: str, other: str = "") -> dict:
    """A finding as a CodeableConcept: SNOMED CT where one fits, text always."""
    if label == Report.OTHER:
        return {"text": f"Other finding: {other}" if other else "Other finding"}
    concept: dict = {"text": display_name(label)}
    if label in FINDING_CODES:
        code, name = FINDING_CODES[label]
        concept["coding"] = [{"system": SNOMED, "code": code, "display": name}]
    return concept


def patient_resource(patient: Patient) -> dict:
    resource: dict = {
        "resourceType": "Patient",
        "id": str(patient.pk),
        "identifier": [
            {
                "use": "usual",
                "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}]},
                "system": MRN_SYSTEM.format(department=patient.department_id),
                "value": patient.mrn,
            }
        ],
        "name": [{"text": patient.name}],
        "gender": GENDERS.get(patient.sex, "unknown"),
    }
    if patient.birth_date:
        resource["birthDate"] = patient.birth_date.isoformat()
    return resource


def _finding_observation(*, ident: str, report: Report, who: str, value: dict) -> dict:
    return {
        "resourceType": "Observation",
        "id": ident,
        "status": "final",
        "category": [{"coding": [{"system": OBSERVATION_CATEGORY, "code": "imaging", "display": "Imaging"}]}],
        "code": {
            "coding": [{"system": LOINC, "code": "59776-5", "display": "Procedure findings Narrative"}],
            "text": who,
        },
        "subject": {"reference": f"Patient/{report.case.patient_id}"},
        "effectiveDateTime": instant(report.case.created_at),
        "issued": instant(report.signed_at),
        "valueCodeableConcept": value,
    }


def ai_observation(report: Report) -> dict:
    """The AI finding the radiologist saw when signing (copied into the report at signing)."""
    observation = _finding_observation(
        ident=AI_OBSERVATION_ID,
        report=report,
        who="AI finding (chest image classification)",
        value=finding_concept(report.ai_label),
    )
    model = f"{report.ai_model_name} {report.ai_model_version}".strip()
    observation["method"] = {"text": f"AI model {model}; supports a radiologist's decision, does not make one"}
    probabilities: dict = {}
    for entry in report.ai_results or []:
        if entry.get("job") == report.ai_job_id:
            probabilities = entry.get("probabilities") or {}
            if entry.get("model_status"):  # the model's status and evidence when signed (issue 12)
                observation["note"] = [{"text": f"Model status when signed: {entry['model_status']}"}]
    if not probabilities and report.ai_probability is not None:
        probabilities = {report.ai_label: report.ai_probability}
    components = [
        {
            "code": finding_concept(label),
            "valueQuantity": {"value": round(float(value) * 100, 2), "unit": "%", "system": UCUM, "code": "%"},
        }
        for label, value in sorted(probabilities.items(), key=lambda item: item[1], reverse=True)
    ]
    if components:  # FHIR forbids empty arrays
        observation["component"] = components
    return observation


def radiologist_observation(report: Report) -> dict:
    observation = _finding_observation(
        ident=RADIOLOGIST_OBSERVATION_ID,
        report=report,
        who="Radiologist's finding",
        value=finding_concept(report.final_label, report.other_finding),
    )
    observation["performer"] = [{"display": report.signed_by.get_full_name() or report.signed_by.username}]
    return observation


def diagnostic_report(*, report: Report, case: Case, pdf: bytes, with_ai: bool) -> dict:
    """The signed report; with_ai: its AI finding may leave the platform (an assistive model)."""
    contained = [ai_observation(report)] if with_ai else []
    contained.append(radiologist_observation(report))  # never empty: FHIR forbids empty arrays
    addenda = list(report.addenda.all())
    conclusion = report.impression
    for addendum in addenda:
        conclusion += f"\n\nAddendum ({instant(addendum.created_at)}, {addendum.author.username}): {addendum.text}"
    return {
        "resourceType": "DiagnosticReport",
        "id": str(report.pk),
        "identifier": [{"system": REPORT_ID_SYSTEM, "value": str(report.pk)}],
        # "appended": a signed report with addenda (the signed text itself never changes).
        "status": "appended" if addenda else "final",
        "category": [
            {
                "coding": [
                    {"system": V2_0074, "code": "RAD", "display": "Radiology"},
                    {"system": LOINC, "code": "LP29684-5", "display": "Radiology"},
                ]
            }
        ],
        "code": {
            "coding": [{"system": LOINC, "code": "18748-4", "display": "Diagnostic imaging study"}],
            "text": case.get_modality_display(),
        },
        "subject": {"reference": f"Patient/{case.patient_id}", "display": case.patient.name},
        "effectiveDateTime": instant(case.created_at),
        "issued": instant(report.signed_at),
        "resultsInterpreter": [{"display": report.signed_by.get_full_name() or report.signed_by.username}],
        "contained": contained,
        "result": [{"reference": f"#{observation['id']}"} for observation in contained],
        "conclusion": conclusion,
        "conclusionCode": [finding_concept(report.final_label, report.other_finding)],
        "presentedForm": [
            {
                "contentType": "application/pdf",
                "data": base64.b64encode(pdf).decode("ascii"),
                "title": f"Report on case {case.pk}",
                "creation": instant(report.signed_at),
            }
        ],
    }


def search_bundle(*, entries: list[tuple[dict, str]], total: int, links: list[dict], base_url: str) -> dict:
    """A searchset Bundle of one page: (resource, "match" | "include") pairs; total counts every
    match of the search, on all pages."""
    bundle: dict = {"resourceType": "Bundle", "type": "searchset", "total": total, "link": links}
    if entries:  # FHIR forbids empty arrays: no match, no "entry"
        bundle["entry"] = [
            {
                "fullUrl": f"{base_url}{resource['resourceType']}/{resource['id']}",
                "resource": resource,
                "search": {"mode": mode},
            }
            for resource, mode in entries
        ]
    return bundle


def capability_statement(*, base_url: str, published: datetime) -> dict:
    """What this server does (GET /fhir/metadata): JSON, reads of Patient and DiagnosticReport,
    DiagnosticReport search by patient; nothing is written."""
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": instant(published),
        "kind": "instance",
        "software": {"name": "XNET"},
        "implementation": {"description": "XNET signed chest-imaging reports", "url": base_url},
        "fhirVersion": "4.0.1",
        "format": ["json"],
        "rest": [
            {
                "mode": "server",
                "security": {
                    "description": "Authorization: Token <key> (an XNET API token) or an XNET session; "
                    "a user reads their own department's data only."
                },
                "resource": [
                    {"type": "Patient", "interaction": [{"code": "read"}]},
                    {
                        "type": "DiagnosticReport",
                        "interaction": [{"code": "read"}, {"code": "search-type"}],
                        "searchParam": [
                            {"name": "patient", "type": "reference", "documentation": "required: Patient/<id> or <id>"},
                            {"name": "_count", "type": "number", "documentation": "reports a page, 1-50 (10)"},
                            {"name": "_page", "type": "number", "documentation": "page number from 1"},
                        ],
                    },
                ],
            }
        ],
    }


def operation_outcome(*, code: str, diagnostics: str, severity: str = "error") -> dict:
    """FHIR's error shape; code from the issue-type value set (not-found, invalid, ...)."""
    return {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": severity, "code": code, "diagnostics": diagnostics}],
    }

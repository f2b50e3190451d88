"""Results out, without a PACS: which results make deliveries, the objects they carry (valid for
pydicom and highdicom), and the delivery state machine (claim, backoff, give up, lost messages)."""

from __future__ import annotations

import io
from datetime import timedelta

import highdicom as hd
import numpy as np
import pydicom
import pytest
from django.core.files.base import ContentFile
from django.utils import timezone
from PIL import Image as PILImage

from diagnosis.models import Image, ModelDeployment
from dicomnet import delivery as delivery_module
from dicomnet import objects, services
from dicomnet.models import Delivery, DicomNode
from tests.dicom_files import make_dicom
from tests.factories import CaseFactory, ImageFactory, InferenceJobFactory, PatientFactory, PredictionFactory

pytestmark = pytest.mark.django_db


def dicom_prediction(department, user, *, study_uid: str = "1.2.3.4.5"):
    """A stored DICOM image (as received) with a succeeded result and a heatmap."""
    data = make_dicom(modality="CR", patient_id="P-9", patient_name="Doe^John")
    ds = pydicom.dcmread(io.BytesIO(data))
    ds.StudyInstanceUID = study_uid
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    case = CaseFactory(patient=PatientFactory(department=department, created_by=user, mrn="P-9"), created_by=user)
    rendered = io.BytesIO()
    PILImage.fromarray(np.full((96, 80), 90, np.uint8), "L").save(rendered, format="PNG")
    image = ImageFactory(
        case=case, format=Image.Format.DICOM, width=80, height=96,
        file=ContentFile(buffer.getvalue(), name="x.dcm"), rendered=ContentFile(rendered.getvalue(), name="r.png"),
        sop_instance_uid=ds.SOPInstanceUID,
        dicom={"study_instance_uid": study_uid, "series_instance_uid": ds.SeriesInstanceUID},
    )  # fmt: skip
    heat = io.BytesIO()
    PILImage.fromarray(np.tile(np.linspace(0, 255, 80, dtype=np.uint8), (96, 1)), "L").save(heat, format="PNG")
    job = InferenceJobFactory(image=image, status="succeeded", attempt=1)
    return PredictionFactory(job=job, heatmap=ContentFile(heat.getvalue(), name="h.png"))


@pytest.fixture
def destination(department):
    return DicomNode.objects.create(department=department, name="PACS", ae_title="PACS1", host="127.0.0.1", port=104)


def test_a_result_makes_one_sr_and_one_capture_per_destination_once(department, radiologist, destination):
    DicomNode.objects.create(department=department, name="Modality", ae_title="CR1", direction="incoming")
    DicomNode.objects.create(department=department, name="Off", ae_title="OFF", host="h", port=1, enabled=False)
    prediction = dicom_prediction(department, radiologist)
    made = services.deliveries_for_prediction(prediction_id=prediction.pk)
    assert sorted(d.kind for d in made) == ["sc", "sr"]
    assert {d.node_id for d in made} == {destination.pk}
    assert len({d.sop_instance_uid for d in made}) == 2
    # Announced again (a duplicate signal, a re-run receiver): nothing new.
    assert services.deliveries_for_prediction(prediction_id=prediction.pk) == []
    assert Delivery.objects.count() == 2


def test_silent_models_and_non_dicom_images_send_nothing(department, radiologist, destination):
    prediction = dicom_prediction(department, radiologist)
    ModelDeployment.objects.filter(
        department=department, model_name=prediction.model_name, model_version=prediction.model_version
    ).update(status="silent")
    assert services.deliveries_for_prediction(prediction_id=prediction.pk) == []
    png = PredictionFactory(job=InferenceJobFactory(image=ImageFactory(case=CaseFactory(
        patient=PatientFactory(department=department, created_by=radiologist), created_by=radiologist)),
        status="succeeded", attempt=1))  # fmt: skip
    assert services.deliveries_for_prediction(prediction_id=png.pk) == []
    assert not Delivery.objects.exists()


def test_built_objects_are_valid_and_reference_the_source(department, radiologist, destination):
    prediction = dicom_prediction(department, radiologist, study_uid="1.2.826.0.1.3680043.8.498.77")
    for made in services.deliveries_for_prediction(prediction_id=prediction.pk):
        ds = pydicom.dcmread(io.BytesIO(delivery_module.build(made)))
        assert (ds.StudyInstanceUID, ds.PatientID, ds.SOPInstanceUID) == (
            "1.2.826.0.1.3680043.8.498.77", "P-9", made.sop_instance_uid,
        )  # fmt: skip
        if made.kind == "sr":
            sr = hd.sr.ComprehensiveSR.from_dataset(ds)
            meanings = [item.ConceptNameCodeSequence[0].CodeMeaning for item in sr.ContentSequence]
            assert meanings[:1] == ["Finding"]
            assert "Intended use" in meanings
            assert sr.ContentSequence[0].TextValue == "Pneumonia (70%)"
        else:
            image = hd.Image.from_dataset(ds)
            assert image.BurnedInAnnotation == "YES"
            pixels = ds.pixel_array
            assert pixels.shape[1:] == (80, 3)
            assert pixels.shape[0] > 96  # the banner above the image
            # The heatmap is burned in: the right of the image is redder than the left.
            body = pixels[pixels.shape[0] - 96 :].astype(int)
            assert body[:, -10:, 0].mean() - body[:, -10:, 2].mean() > body[:, :10, 0].mean() - body[:, :10, 2].mean()


def test_encapsulated_pdf_is_valid():
    source = pydicom.dcmread(io.BytesIO(make_dicom(modality="CR")), stop_before_pixels=True)
    for keyword in objects.TYPE2_KEYWORDS:
        source.setdefault(keyword, "")
    ds = objects.build_pdf(pdf=b"%PDF-1.4 three", source=source, series_uid="1.2.3", sop_uid="1.2.4", title="t")
    back = pydicom.dcmread(io.BytesIO(objects.to_bytes(ds)))
    assert back.SOPClassUID == objects.ENCAPSULATED_PDF_STORAGE
    assert back.EncapsulatedDocumentLength == 14
    assert bytes(back.EncapsulatedDocument)[:14] == b"%PDF-1.4 three"
    assert back.SourceInstanceSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID
    assert back.StudyInstanceUID == source.StudyInstanceUID


def _delivery(node, case, **fields) -> Delivery:
    return Delivery.objects.create(
        node=node, case=case, kind="pdf", series_instance_uid="1.2", sop_instance_uid=f"1.2.{Delivery.objects.count()}",
        **fields,
    )  # fmt: skip


def test_claim_backoff_and_giving_up(settings, department, radiologist, destination):
    settings.XNET_DICOM_DELIVERY_ATTEMPTS = 3
    settings.XNET_DICOM_RETRY_SECONDS = 5
    settings.XNET_DICOM_RETRY_MAX_SECONDS = 8
    case = CaseFactory(patient=PatientFactory(department=department, created_by=radiologist), created_by=radiologist)
    delivery = _delivery(destination, case)
    claimed = services.delivery_claim(delivery_id=delivery.pk)
    assert (claimed.status, claimed.attempts) == ("sending", 1)
    assert services.delivery_claim(delivery_id=delivery.pk) is None  # a duplicate message meanwhile
    assert services.delivery_failed(delivery=claimed, error="down") == 5
    claimed = services.delivery_claim(delivery_id=delivery.pk)
    assert services.delivery_failed(delivery=claimed, error="down") == 8  # 10, capped
    claimed = services.delivery_claim(delivery_id=delivery.pk)
    assert services.delivery_failed(delivery=claimed, error="still down") is None
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts, delivery.last_error) == ("failed", 3, "still down")
    assert services.delivery_claim(delivery_id=delivery.pk) is None
    # A refusal by the PACS is final at once.
    other = _delivery(destination, case)
    assert (
        services.delivery_failed(delivery=services.delivery_claim(delivery_id=other.pk), error="x", permanent=True)
        is None
    )
    other.refresh_from_db()
    assert other.status == "failed"


def test_lost_deliveries_are_found(settings, department, radiologist, destination):
    case = CaseFactory(patient=PatientFactory(department=department, created_by=radiologist), created_by=radiologist)
    long_ago = timezone.now() - timedelta(minutes=10)
    lost_pending = _delivery(destination, case, created_at=long_ago)
    _delivery(destination, case)  # pending, just created: its message is on its way
    overdue = _delivery(destination, case, status="retrying", next_attempt_at=long_ago)
    _delivery(destination, case, status="retrying", next_attempt_at=timezone.now() + timedelta(seconds=30))
    dead_sender = _delivery(destination, case, status="sending", claimed_at=long_ago)
    _delivery(destination, case, status="sending", claimed_at=timezone.now())
    _delivery(destination, case, status="sent", created_at=long_ago)
    _delivery(destination, case, status="failed", created_at=long_ago)
    assert services.deliveries_lost() == [lost_pending.pk, overdue.pk, dead_sender.pk]
    # A stale claim is taken over by the next message.
    assert services.delivery_claim(delivery_id=dead_sender.pk).attempts == 1

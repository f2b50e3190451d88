"""DICOM in and out against a real Orthanc: Orthanc sends a chest study to XNET's listener (its
own process, as run.sh starts it), a real worker classifies it, and the SR and the secondary
capture arrive back in Orthanc, readable by pydicom and highdicom.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time
import urllib.error
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from PIL import Image as PILImage
from pydicom.uid import generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import DigitalXRayImageStorageForPresentation, MRImageStorage, Verification

from diagnosis.models import Case, Image, InferenceJob, Patient
from dicomnet.models import Delivery, DicomNode, IntakeEvent, ReceivedInstance, StudyLink
from reviews.services import report_sign
from tests.conftest import RESOURCES
from tests.dicom_files import UID_ROOT, make_dicom, pydicom_file, rewrite
from tests.orthanc import Orthanc
from tests.workers import ROOT, WorkerPool, database_url_for_tests, free_port, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

JOB_TIMEOUT = 90  # a fresh worker child loads the model before its first prediction (as test_integration_worker)
# Measured here (2 cores, load 8-9): the listener answers 3-5 s after its start (Django import);
# one delivery (build + C-STORE to Orthanc) takes 0.2-0.3 s once the result is stored, and the
# 100-instance benchmark sent 200 in under 80 s behind the classification. 60 s is over ten
# times what these tests' 2 to 5 deliveries need, and a restarted Orthanc answers within 2 s.
DELIVERY_TIMEOUT = 60
LISTENER_TIMEOUT = 60
XNET_AE = "XNET-TEST"


def chest_pixels() -> np.ndarray:
    """A real chest radiograph (tests/resources), as 12-bit values."""
    with PILImage.open(RESOURCES / "kermany_normal_1.jpg") as picture:
        grey = np.asarray(picture.convert("L"), dtype=np.uint16)
    return grey * 16


def chest_instance(study_uid: str, series_uid: str, *, patient_id: str = "PACS-77", number: int = 1, **kw) -> bytes:
    ds = pydicom.dcmread(
        io.BytesIO(
            make_dicom(
                chest_pixels(),
                modality="CR",
                patient_id=patient_id,
                patient_name="Roe^Richard",
                birth_date="19610203",
                sex="M",
                **kw,
            )
        )
    )
    sop_uid = generate_uid(UID_ROOT)
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = study_uid, series_uid, sop_uid
    ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1"  # CR Image Storage
    ds.InstanceNumber = number
    ds.StudyDescription = "CHEST PA"
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


class Listener:
    """`manage.py run_dicom_listener` on the test database, as scripts/run.sh starts it."""

    def __init__(self, folder: Path, media_root: Path) -> None:
        self.port = free_port()
        folder.mkdir(parents=True, exist_ok=True)
        self.log_file = folder / "listener.log"
        env = {
            **os.environ,
            "DATABASE_URL": database_url_for_tests(),
            "XNET_DICOM_AE_TITLE": XNET_AE,
            "XNET_DICOM_PORT": str(self.port),
            "XNET_MEDIA_ROOT": str(media_root),  # the worker's and this test's storage
            "PYTHONUNBUFFERED": "1",
        }
        self.process = subprocess.Popen(
            [sys.executable, "manage.py", "run_dicom_listener"],
            cwd=ROOT,
            env=env,
            stdout=self.log_file.open("ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        wait_for(self.answers, timeout=LISTENER_TIMEOUT, what="the DICOM listener", log=self.log)

    def log(self) -> str:
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""

    def answers(self) -> bool:
        """Listening: an association is accepted or rejected (no node is known yet), not refused."""
        if self.process.poll() is not None:
            raise AssertionError(f"listener exited:\n{self.log()[-4000:]}")
        ae = AE(ae_title="READY-CHECK")
        ae.add_requested_context(Verification)
        assoc = ae.associate("127.0.0.1", self.port, ae_title=XNET_AE)
        if assoc.is_established:
            assoc.release()
        return assoc.is_established or assoc.is_rejected

    def echo(self, calling_ae: str) -> bool:
        ae = AE(ae_title=calling_ae)
        ae.add_requested_context(Verification)
        assoc = ae.associate("127.0.0.1", self.port, ae_title=XNET_AE)
        if not assoc.is_established:
            return False
        status = assoc.send_c_echo()
        assoc.release()
        return bool(status) and status.Status == 0

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture
def listener(tmp_path, settings):
    server = Listener(tmp_path / "listener", Path(settings.MEDIA_ROOT))
    yield server
    server.stop()


@pytest.fixture
def orthanc(tmp_path, listener):
    pacs = Orthanc(tmp_path / "orthanc", xnet_ae=XNET_AE, xnet_port=listener.port)
    pacs.start()
    yield pacs
    pacs.stop()


@pytest.fixture
def node(installed_models, department, orthanc):
    return DicomNode.objects.create(
        department=department,
        name="Test PACS",
        ae_title=orthanc.ae_title,
        host="127.0.0.1",
        port=orthanc.dicom_port,
        direction=DicomNode.Direction.BOTH,
    )


@pytest.fixture
def workers(tmp_path, settings, installed_models):
    with WorkerPool(tmp_path / "workers", model_dir=installed_models) as pool:
        yield pool


WORKER_ENV = {"XNET_DICOM_AE_TITLE": XNET_AE, "XNET_DICOM_RETRY_SECONDS": "1", "XNET_DICOM_RETRY_MAX_SECONDS": "2"}


def _sent(case: Case, count: int) -> list[Delivery] | None:
    deliveries = list(Delivery.objects.filter(case=case))
    failed = [d for d in deliveries if d.status == Delivery.Status.FAILED]
    assert not failed, [d.last_error for d in failed]
    return (
        deliveries if len(deliveries) == count and all(d.status == Delivery.Status.SENT for d in deliveries) else None
    )


def test_study_from_orthanc_is_classified_and_results_come_back(
    installed_models, orthanc, node, workers, department, listener, radiologist
):
    worker = workers.start(env=WORKER_ENV)
    study_uid, series_uid = generate_uid(UID_ROOT), generate_uid(UID_ROOT)
    ids = [orthanc.upload(chest_instance(study_uid, series_uid, number=n)) for n in (1, 2)]

    orthanc.store_to_xnet(ids)

    link = StudyLink.objects.get(department=department, study_instance_uid=study_uid)
    case = link.case
    assert case.modality == "xray"
    patient = case.patient
    assert (patient.department_id, patient.mrn, patient.name, patient.sex) == (
        department.pk,
        "PACS-77",
        "Richard Roe",
        "M",
    )
    assert str(patient.birth_date) == "1961-02-03"
    images = list(case.images.all())
    assert len(images) == 2
    assert {i.format for i in images} == {Image.Format.DICOM}
    assert ReceivedInstance.objects.filter(study=link).count() == 2
    assert list(IntakeEvent.objects.values_list("outcome", flat=True)) == ["stored", "stored"]

    jobs = wait_for(
        lambda: (js := list(InferenceJob.objects.filter(image__case=case))) and all(j.is_finished for j in js) and js,
        timeout=JOB_TIMEOUT,
        what="both jobs",
        log=worker.log,
    )
    assert [j.status for j in jobs] == ["succeeded", "succeeded"], [j.error_message or j.rejection_reason for j in jobs]
    deliveries = wait_for(lambda: _sent(case, 4), timeout=DELIVERY_TIMEOUT, what="4 deliveries sent", log=worker.log)
    assert {d.kind for d in deliveries} == {"sr", "sc"}
    assert all(d.attempts == 1 for d in deliveries)

    in_pacs = orthanc.instances_in_study(study_uid)
    by_uid = {i["MainDicomTags"]["SOPInstanceUID"]: i["ID"] for i in in_pacs}
    assert len(in_pacs) == 4 + 2
    for delivery in deliveries:
        data = orthanc.instance_file(by_uid[delivery.sop_instance_uid])
        ds = pydicom.dcmread(io.BytesIO(data))
        assert ds.StudyInstanceUID == study_uid
        assert ds.SeriesInstanceUID == delivery.series_instance_uid != series_uid
        assert ds.PatientID == "PACS-77"
        prediction = delivery.prediction
        if delivery.kind == "sr":
            sr = hd.sr.ComprehensiveSR.from_dataset(ds)
            evidence = sr.CurrentRequestedProcedureEvidenceSequence[0]
            assert evidence.StudyInstanceUID == study_uid
            assert evidence.ReferencedSeriesSequence[0].SeriesInstanceUID == series_uid
            texts = {item.ConceptNameCodeSequence[0].CodeMeaning: item for item in sr.ContentSequence}
            assert texts["Algorithm Name"].TextValue == prediction.model_name == "xray-tiny"
            assert texts["Algorithm Version"].TextValue == prediction.model_version
            assert "not for diagnosis alone" in texts["Notice"].TextValue
            assert texts["Intended use"].TextValue
            numbers = {
                k: float(v.MeasuredValueSequence[0].NumericValue)
                for k, v in texts.items()
                if k.startswith("Probability")
            }
            assert len(numbers) == len(prediction.probabilities) == 4
            assert sum(numbers.values()) == pytest.approx(100.0, abs=0.1)
        else:
            sc = hd.Image.from_dataset(ds)
            assert sc.SOPClassUID == "1.2.840.10008.5.1.4.1.1.7"
            assert sc.StudyInstanceUID == study_uid
            assert sc.BurnedInAnnotation == "YES"
            assert sc.SourceImageSequence[0].ReferencedSOPInstanceUID == prediction.job.image.sop_instance_uid
            pixels = ds.pixel_array
            assert pixels.shape[-1] == 3
            # The banner of burned-in text: yellow notice pixels on black above the image.
            banner = pixels[: pixels.shape[0] - prediction.job.image.height]
            assert banner.shape[0] > 0
            yellow = (banner[..., 0] > 200) & (banner[..., 1] > 200) & (banner[..., 2] < 60)
            assert yellow.sum() > 50

    # Sign-off: the signed report goes to the same study as Encapsulated PDF.
    report_sign(case=case, signed_by=radiologist, agrees_with_ai=True, impression="Clear lungs (test).")
    [pdf_delivery] = wait_for(
        lambda: (d := list(Delivery.objects.filter(case=case, kind="pdf", status="sent"))) and d,
        timeout=DELIVERY_TIMEOUT,
        what="the PDF delivery",
        log=worker.log,
    )
    pdf_id = next(
        i["ID"]
        for i in orthanc.instances_in_study(study_uid)
        if i["MainDicomTags"]["SOPInstanceUID"] == pdf_delivery.sop_instance_uid
    )
    encapsulated = pydicom.dcmread(io.BytesIO(orthanc.instance_file(pdf_id)))
    assert encapsulated.SOPClassUID == "1.2.840.10008.5.1.4.1.1.104.1"
    assert encapsulated.MIMETypeOfEncapsulatedDocument == "application/pdf"
    assert bytes(encapsulated.EncapsulatedDocument).startswith(b"%PDF")
    assert (encapsulated.StudyInstanceUID, encapsulated.PatientID) == (study_uid, "PACS-77")

    # A re-sent study creates nothing new.
    counts = (Case.objects.count(), Patient.objects.count(), Image.objects.count(), InferenceJob.objects.count())
    orthanc.store_to_xnet(ids)
    assert (
        Case.objects.count(),
        Patient.objects.count(),
        Image.objects.count(),
        InferenceJob.objects.count(),
    ) == counts
    assert IntakeEvent.objects.filter(outcome="duplicate").count() == 2
    assert Delivery.objects.count() == 5


def test_unknown_calling_ae_is_rejected(orthanc, department, listener):
    # No node of any department has Orthanc's AE title: the association is rejected.
    study_uid = generate_uid(UID_ROOT)
    oid = orthanc.upload(chest_instance(study_uid, generate_uid(UID_ROOT)))
    with pytest.raises(urllib.error.HTTPError):
        orthanc.store_to_xnet([oid])
    ae = AE(ae_title="STRANGER")
    ae.add_requested_context(DigitalXRayImageStorageForPresentation)
    assoc = ae.associate("127.0.0.1", listener.port, ae_title=XNET_AE)
    assert assoc.is_rejected
    assert not assoc.is_established
    assert "unknown calling AE 'STRANGER'" in listener.log()
    assert not Case.objects.exists()
    assert not IntakeEvent.objects.exists()


def test_c_echo_answers_a_known_node(node, listener):
    assert listener.echo(node.ae_title)


def test_non_chest_instance_is_refused_with_a_failure_status(orthanc, node, department, listener):
    # pydicom's own MR file (a head), a chest CR whose series is a knee, and a chest CR whose
    # pixels are compressed as JPEG Lossless (nothing installed decodes it).
    mr = pydicom.dcmread(io.BytesIO(pydicom_file("MR_small.dcm")))
    knee = pydicom.dcmread(io.BytesIO(chest_instance(generate_uid(UID_ROOT), generate_uid(UID_ROOT), body_part="KNEE")))
    lossless = pydicom.dcmread(
        io.BytesIO(rewrite(pydicom_file("JPEG-LL.dcm"), Modality="CR", BodyPartExamined="CHEST", PatientID="X-1"))
    )
    ae = AE(ae_title=orthanc.ae_title)
    ae.add_requested_context(MRImageStorage)
    ae.add_requested_context("1.2.840.10008.5.1.4.1.1.1")
    ae.add_requested_context(lossless.SOPClassUID, lossless.file_meta.TransferSyntaxUID)
    assoc = ae.associate("127.0.0.1", listener.port, ae_title=XNET_AE)
    assert assoc.is_established
    statuses = [assoc.send_c_store(ds) for ds in (mr, knee, lossless)]
    assoc.release()
    assert [s.Status for s in statuses] == [0xC000, 0xC000, 0xC000]
    assert "MR" in statuses[0].ErrorComment
    events = list(IntakeEvent.objects.order_by("id"))
    assert [(e.outcome, e.code) for e in events] == [
        ("refused", "dicom_wrong_modality"),
        ("refused", "dicom_not_chest"),
        ("refused", "dicom_unsupported_compression"),
    ]
    assert "JPEG Lossless" in events[2].reason
    assert "knee" in events[1].reason.lower()
    assert not Case.objects.exists()
    assert not Image.objects.exists()
    # Orthanc's own send of the knee fails too (XNET answers a failure status).
    with pytest.raises(urllib.error.HTTPError):
        orthanc.store_to_xnet(
            [orthanc.upload(chest_instance(generate_uid(UID_ROOT), generate_uid(UID_ROOT), body_part="KNEE"))]
        )
    assert "refused" in listener.log()


def test_orthanc_down_during_delivery_then_up_gets_each_object_once(
    installed_models, orthanc, node, workers, department, listener
):
    worker = workers.start(env={**WORKER_ENV, "XNET_DICOM_DELIVERY_ATTEMPTS": "40"})
    study_uid = generate_uid(UID_ROOT)
    orthanc.store_to_xnet([orthanc.upload(chest_instance(study_uid, generate_uid(UID_ROOT)))])
    case = StudyLink.objects.get(study_instance_uid=study_uid).case
    orthanc.stop()  # the PACS goes down before the result is back

    def retrying() -> list[Delivery] | None:
        deliveries = list(Delivery.objects.filter(case=case))
        return deliveries if len(deliveries) == 2 and all(d.attempts >= 2 for d in deliveries) else None

    # The job (JOB_TIMEOUT), then two attempts 1 s apart (XNET_DICOM_RETRY_SECONDS=1).
    down = wait_for(
        retrying, timeout=JOB_TIMEOUT + DELIVERY_TIMEOUT, what="failed attempts while Orthanc is down", log=worker.log
    )
    assert all(d.status in ("retrying", "sending") for d in down)
    assert all("no DICOM association" in d.last_error for d in down if d.status == "retrying")

    orthanc.start()
    sent = wait_for(
        lambda: _sent(case, 2), timeout=DELIVERY_TIMEOUT, what="deliveries after Orthanc came back", log=worker.log
    )
    in_pacs = orthanc.instances_in_study(study_uid)
    uids = [i["MainDicomTags"]["SOPInstanceUID"] for i in in_pacs]
    for delivery in sent:
        assert uids.count(delivery.sop_instance_uid) == 1
    # Orthanc's change log: each object arrived once (a second store would log it again).
    changes = orthanc.get("/changes?limit=1000")["Changes"]
    new_instances = [c for c in changes if c["ChangeType"] == "NewInstance"]
    assert len(new_instances) == 1 + 2  # the source instance and the two results
    attempts_before = {d.pk: d.attempts for d in sent}
    # Nothing is sent again later (the retries stop once sent).
    time.sleep(3)
    assert {d.pk: d.attempts for d in Delivery.objects.filter(case=case)} == attempts_before
    later = [c for c in orthanc.get("/changes?limit=1000")["Changes"] if c["ChangeType"] == "NewInstance"]
    assert len(later) == len(new_instances)

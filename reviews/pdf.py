"""The signed report as a PDF (reportlab): what goes into the patient's record.

Built from the Report row (the AI result copied at signing), the case's images as the page shows
them (the rendered PNG of a DICOM, else the upload) with the Grad-CAM heatmap over them when the
worker made one, and the model's card (calibration, intended use) when the model is installed.
"""

from __future__ import annotations

import io
import logging
from xml.sax.saxutils import escape

from django.conf import settings
from django.http import HttpResponse
from django.utils import timezone
from PIL import Image as PILImage
from PIL import ImageOps
from reportlab.lib import colors
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import getSampleStyleSheet
from reportlab.lib.units import mm
from reportlab.platypus import Image as PDFImage
from reportlab.platypus import KeepTogether, Paragraph, SimpleDocTemplate, Spacer, Table, TableStyle

from diagnosis.downloads import private
from diagnosis.models import Case, Image, InferenceJob, Prediction
from ml.labels import display_name
from ml.registry import find_model
from reviews.models import Report

logger = logging.getLogger(__name__)

IMAGE_BOX = 75 * mm  # each image fits in a square this size
HEATMAP_OPACITY = 0.6  # of the heatmap's own alpha (which rises with the activation)


def _label(label: str, other: str = "") -> str:
    if label == Report.OTHER:
        return f"Other finding: {other}" if other else "Other finding"
    return display_name(label) if label else "-"


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f} %"


def _when(value) -> str:
    return timezone.localtime(value).strftime("%Y-%m-%d %H:%M %Z") if value else "-"


def _person(user) -> str:
    return user.get_full_name() or user.username


def _open_picture(image: Image) -> PILImage.Image | None:
    """The picture the case page shows: the rendered PNG of a DICOM, else the uploaded file."""
    field = image.rendered if image.format == Image.Format.DICOM or image.rendered else image.file
    if not field:
        return None
    try:
        with field.open("rb") as handle:
            picture = PILImage.open(handle)
            picture.load()
    except (OSError, ValueError):
        logger.warning("Image %s: its picture cannot be read for the report", image.pk)
        return None
    return ImageOps.grayscale(picture).convert("RGB")


def _heatmap_over(picture: PILImage.Image, prediction: Prediction | None) -> tuple[PILImage.Image, bool]:
    """The heatmap drawn over the picture (resized to it); the picture alone when there is none."""
    if prediction is None or not prediction.heatmap:
        return picture, False
    try:
        with prediction.heatmap.open("rb") as handle:
            heat = PILImage.open(handle)
            heat.load()
    except (OSError, ValueError):
        logger.warning("Prediction %s: its heatmap cannot be read for the report", prediction.pk)
        return picture, False
    heat = heat.resize(picture.size)
    if heat.mode in ("L", "I", "F", "P", "LA"):
        # A greyscale intensity map: colour it (hot = red), transparent where the model did not look.
        intensity = heat.convert("L")
        coloured = ImageOps.colorize(intensity, black="#000080", mid="#ffff00", white="#ff0000").convert("RGB")
        mask = intensity.point(lambda v: int(v * HEATMAP_OPACITY))
        return PILImage.composite(coloured, picture, mask), True
    heat = heat.convert("RGBA")
    alpha = heat.getchannel("A").point(lambda v: int(v * HEATMAP_OPACITY))
    return PILImage.composite(heat.convert("RGB"), picture, alpha), True


def _flowable(picture: PILImage.Image) -> PDFImage:
    buffer = io.BytesIO()
    picture.thumbnail((1024, 1024))
    picture.save(buffer, format="PNG")
    buffer.seek(0)
    scale = IMAGE_BOX / max(picture.size)
    return PDFImage(buffer, width=picture.width * scale, height=picture.height * scale)


def _latest_job(image: Image) -> InferenceJob | None:
    jobs = sorted(image.jobs.all(), key=lambda job: (job.created_at, job.pk))
    return jobs[-1] if jobs else None


def _table(rows: list[list], widths: tuple[float, float] = (45 * mm, 125 * mm)) -> Table:
    table = Table(rows, colWidths=widths, hAlign="LEFT")
    table.setStyle(
        TableStyle(
            [
                ("VALIGN", (0, 0), (-1, -1), "TOP"),
                ("TEXTCOLOR", (0, 0), (0, -1), colors.HexColor("#555f6d")),
                ("BOTTOMPADDING", (0, 0), (-1, -1), 2),
                ("TOPPADDING", (0, 0), (-1, -1), 2),
            ]
        )
    )
    return table


def render_report_pdf(*, report: Report, case: Case) -> bytes:
    """The report as PDF bytes. `case` comes from case_detail (images, jobs, predictions
    prefetched); `report` from reviews.selectors.report_for_case (addenda prefetched)."""
    styles = getSampleStyleSheet()
    body, small = styles["BodyText"], styles["Italic"]

    def para(text: str, style=body) -> Paragraph:
        return Paragraph(escape(text).replace("\n", "<br/>"), style)

    patient = case.patient
    spec = None
    if report.ai_model_name:
        spec = find_model(settings.XNET_MODEL_DIR, report.ai_model_name, report.ai_model_version)
    story: list = [
        Paragraph(f"XNET report: case {case.pk}", styles["Title"]),
        Paragraph("Patient", styles["Heading2"]),
        _table(
            [
                ["Name", para(patient.name)],
                ["Record number (MRN)", para(patient.mrn)],
                ["Birth date", patient.birth_date.isoformat() if patient.birth_date else "-"],
                ["Sex", patient.get_sex_display()],
            ]
        ),
        Paragraph("Study", styles["Heading2"]),
        _table(
            [
                ["Case", str(case.pk)],
                ["Modality", case.get_modality_display()],
                ["Indication", para(case.indication or "-")],
                ["Case created", _when(case.created_at)],
                ["Images", str(len(case.images.all()))],
            ]
        ),
        Paragraph("Images", styles["Heading2"]),
    ]
    for image in case.images.all():
        job = _latest_job(image)
        prediction = getattr(job, "prediction", None) if job and job.status == InferenceJob.Status.SUCCEEDED else None
        picture = _open_picture(image)
        size = f"{image.width} x {image.height} {image.format}"
        lines = [f"Image {image.pk}: {size}, uploaded {_when(image.uploaded_at)}"]
        if image.dicom:
            dicom = image.dicom
            lines.append(f"Study date {dicom.get('study_date', '-')}, view {dicom.get('view_position', '-')}")
        if prediction is not None:
            lines.append(
                f"AI: {display_name(prediction.top_label)} {_percent(prediction.top_probability)} "
                f"({prediction.model_name} {prediction.model_version})"
            )
        elif job is not None:
            lines.append(f"AI: {job.get_status_display()} {job.rejection_reason or job.error_message}".strip())
        parts = [para(line, small) for line in lines]
        if picture is not None:
            picture, with_heatmap = _heatmap_over(picture, prediction)
            parts.insert(0, _flowable(picture))
            parts.append(
                para("Heatmap (Grad-CAM, top class) drawn over the image." if with_heatmap else "No heatmap.", small)
            )
        else:
            parts.append(para("The image file could not be read.", small))
        story += [KeepTogether(parts), Spacer(1, 4 * mm)]

    story += [
        Paragraph("AI result (as shown when signing)", styles["Heading2"]),
        _table(
            [
                ["AI finding", _label(report.ai_label) if report.ai_label else "No AI result"],
                ["Probability", _percent(report.ai_probability)],
                ["Model", f"{report.ai_model_name} {report.ai_model_version}".strip() or "-"],
                [
                    "Calibration",
                    f"temperature scaling, T = {spec.temperature:g}"
                    if spec
                    else "not available (the model is not installed here)",
                ],
            ]
        ),
        Paragraph("Radiologist", styles["Heading2"]),
        _table(
            [
                ["Finding", para(_label(report.final_label, report.other_finding))],
                ["Agrees with AI", "yes" if report.agrees_with_ai else "no"],
                ["Impression", para(report.impression)],
                ["Signed by", para(_person(report.signed_by))],
                ["Signed at", _when(report.signed_at)],
            ]
        ),
    ]
    addenda = list(report.addenda.all())
    if addenda:
        story.append(Paragraph("Addenda", styles["Heading2"]))
        for addendum in addenda:
            story.append(para(f"{_when(addendum.created_at)}, {_person(addendum.author)}:", small))
            story.append(para(addendum.text))
    intended_use = (spec.card.get("intended_use") if spec else "") or "not available (the model is not installed here)"
    story += [
        Paragraph("Intended use of the model", styles["Heading2"]),
        para(intended_use),
        Spacer(1, 4 * mm),
        para("The AI result supports, and does not replace, the radiologist's reading.", small),
    ]

    buffer = io.BytesIO()
    document = SimpleDocTemplate(
        buffer,
        pagesize=A4,
        title=f"XNET report, case {case.pk}",
        author=_person(report.signed_by),
        leftMargin=20 * mm,
        rightMargin=20 * mm,
        topMargin=18 * mm,
        bottomMargin=18 * mm,
    )
    document.build(story)
    return buffer.getvalue()


def report_pdf_response(*, report: Report, case: Case) -> HttpResponse:
    """The signed report as a download, the same for the case page and the API (never cached)."""
    response = HttpResponse(render_report_pdf(report=report, case=case), content_type="application/pdf")
    response["Content-Disposition"] = f'attachment; filename="xnet-report-case-{case.pk}.pdf"'
    return private(response)

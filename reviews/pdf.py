"""The signed report as a PDF (reportlab): what goes into the patient's record.

Built from the Report row (the AI result copied at signing), the images the report was signed on
(never one uploaded later), as the page shows them (the rendered PNG of a DICOM, else the upload),
plain and with the Grad-CAM heatmap of the result signed over them when the worker made one, and
the model's intended use when the model is installed. Read as a clinician reads it: every page
names the patient, record number and case with "Page N of M" (pages get separated and misfiled);
the radiologist's finding and impression come first, then the AI result (naming the image it came
from), then the images, each captioned "Image k of n". Technical model details (the calibration
temperature) stay on the model card page, not in the patient's record.
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
from reportlab.pdfbase.pdfmetrics import stringWidth
from reportlab.pdfgen.canvas import Canvas
from reportlab.platypus import Image as PDFImage
from reportlab.platypus import KeepTogether, Paragraph, SimpleDocTemplate, Spacer, Table, TableStyle

from diagnosis.downloads import private
from diagnosis.models import Case, Image, InferenceJob, Prediction
from ml.labels import display_name
from ml.registry import find_model
from reviews.models import Report

logger = logging.getLogger(__name__)

IMAGE_BOX = 75 * mm  # an image alone fits in a square this size
HALF_BOX = 80 * mm  # an image beside its heatmap copy: two fit the 170 mm between the margins
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


def _flowable(picture: PILImage.Image, box: float) -> PDFImage:
    buffer = io.BytesIO()
    picture.thumbnail((1024, 1024))
    picture.save(buffer, format="PNG")
    buffer.seek(0)
    scale = box / max(picture.size)
    return PDFImage(buffer, width=picture.width * scale, height=picture.height * scale)


def _signed_images(report: Report, case: Case) -> list[tuple[Image, dict, InferenceJob | None]]:
    """The images the report was signed on, each with its AI result as copied at signing and the
    job that made it: an image uploaded later, or a job finishing later, never enters the PDF."""
    images = {image.pk: image for image in case.images.all()}
    signed = []
    for entry in report.ai_results or []:
        image = images.get(entry.get("image"))
        if image is None:
            continue
        job = next((job for job in image.jobs.all() if job.pk == entry.get("job")), None)
        if job is None and entry.get("job"):
            # The prefetch holds assistive models' jobs only: a model demoted since the signature
            # still printed what the radiologist signed against (issue 12).
            job = InferenceJob.objects.select_related("prediction").filter(pk=entry["job"], image=image).first()
        signed.append((image, entry, job))
    return sorted(signed, key=lambda item: item[0].position)


def _ai_line(entry: dict, job: InferenceJob | None) -> str:
    status = entry.get("status")
    if status is None:
        return "AI: no classification when signed"
    if status == InferenceJob.Status.SUCCEEDED and entry.get("label"):
        model = f"{entry.get('model_name', '')} {entry.get('model_version', '')}".strip()
        status_line = f"; {entry['model_status']}" if entry.get("model_status") else ""
        return f"AI: {display_name(entry['label'])} {_percent(entry.get('probability'))} ({model}{status_line})"
    reason = entry.get("rejection_reason") or ""
    if not reason and job is not None and job.status == status == InferenceJob.Status.FAILED:
        reason = job.error_message
    return f"AI: {InferenceJob.Status(status).label.lower()} when signed. {reason}".strip()


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


HEADER_FONT = ("Helvetica", 8)
HEADER_GREY = colors.HexColor("#555f6d")


def _fit(name: str, width: float) -> str:
    """`name` cut with an ellipsis to fit `width` in the header font: a long name must not push
    the record number, case or "Page N of M" off the line."""
    if stringWidth(name, *HEADER_FONT) <= width:
        return name
    while name and stringWidth(name + "…", *HEADER_FONT) > width:
        name = name[:-1]
    return name + "…"


def _canvas_with_header(name: str, rest: str):
    """A canvas class that draws the header on every page once the page count is known: pages
    are held until save(), then each gets "patient · MRN · case" and "Page N of M" (two passes
    over the document would lay it out twice)."""

    class HeaderCanvas(Canvas):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            self._held_pages: list[dict] = []

        def showPage(self) -> None:  # noqa: N802 (reportlab's name)
            self._held_pages.append(dict(self.__dict__))
            self._startPage()

        def save(self) -> None:
            total = len(self._held_pages)
            for number, state in enumerate(self._held_pages, start=1):
                self.__dict__.update(state)
                self._draw_header(number, total)
                super().showPage()
            super().save()

        def _draw_header(self, number: int, total: int) -> None:
            width, height = self._pagesize
            page = f"Page {number} of {total}"
            y = height - 11 * mm
            self.saveState()
            self.setFont(*HEADER_FONT)
            self.setFillColor(HEADER_GREY)
            self.drawRightString(width - 20 * mm, y, page)
            room = width - 40 * mm - stringWidth(page + rest, *HEADER_FONT) - 6 * mm
            self.drawString(20 * mm, y, _fit(name, room) + rest)
            self.setStrokeColor(HEADER_GREY)
            self.setLineWidth(0.3)
            self.line(20 * mm, y - 2 * mm, width - 20 * mm, y - 2 * mm)
            self.restoreState()

    return HeaderCanvas


def _caption(index: int, total: int, image: Image) -> str:
    """ "Image k of n" among the images signed; the case's own number too when a withdrawn image
    left a gap (numbers are never reused), so the PDF still matches the case page."""
    caption = f"Image {index} of {total}"
    return caption if image.position == index else f"{caption} (image {image.position} of the case)"


def _small(text: str) -> Paragraph:
    return Paragraph(escape(text), getSampleStyleSheet()["Italic"])


def _pictures(picture: PILImage.Image, prediction: Prediction | None) -> list:
    """The image plain and, when the worker made one, with its heatmap over it, side by side."""
    over, with_heatmap = _heatmap_over(picture.copy(), prediction)
    if not with_heatmap:
        return [_flowable(picture, IMAGE_BOX), _small("Plain image. No heatmap.")]
    pair = Table(
        [
            [_flowable(picture, HALF_BOX), _flowable(over, HALF_BOX)],
            [_small("Plain"), _small("Heatmap (Grad-CAM, top class) drawn over the image")],
        ],
        colWidths=(HALF_BOX + 4 * mm, HALF_BOX + 4 * mm),
        hAlign="LEFT",
    )
    pair.setStyle(TableStyle([("VALIGN", (0, 0), (-1, -1), "TOP"), ("LEFTPADDING", (0, 0), (-1, -1), 0)]))
    return [pair]


def render_report_pdf(*, report: Report, case: Case) -> bytes:
    """The report as PDF bytes. `case` comes from case_detail (images, jobs, predictions
    prefetched); `report` from reviews.selectors.report_for_case (addenda prefetched)."""
    styles = getSampleStyleSheet()
    body, small = styles["BodyText"], styles["Italic"]

    def para(text: str, style=body) -> Paragraph:
        return Paragraph(escape(text).replace("\n", "<br/>"), style)

    def long_text(label: str, text: str) -> list:
        """Free text of any documented length as its own flowables, never inside a table cell:
        a table row cannot split across pages (a 4,500-character impression in a cell raised
        reportlab's LayoutError), a paragraph can."""
        return [Paragraph(label, styles["Heading4"]), para(text)]

    patient = case.patient
    signed_images = _signed_images(report, case)
    captions = {
        image.pk: _caption(index, len(signed_images), image) for index, (image, _, _) in enumerate(signed_images, 1)
    }
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
                ["Case created", _when(case.created_at)],
                ["Images", str(len(signed_images))],
            ]
        ),
        *long_text("Indication", case.indication or "-"),
        # The radiologist's reading leads: it is the report; the AI result and images support it.
        Paragraph("Radiologist", styles["Heading2"]),
        _table(
            [
                [
                    "Finding",
                    "Other finding (described below)"
                    if report.final_label == Report.OTHER
                    else para(_label(report.final_label)),
                ],
                ["Agrees with AI", "yes" if report.agrees_with_ai else "no"],
                ["Signed by", para(_person(report.signed_by))],
                ["Signed at", _when(report.signed_at)],
            ]
        ),
        *(long_text("Other finding", report.other_finding or "-") if report.final_label == Report.OTHER else []),
        *long_text("Impression", report.impression),
    ]
    addenda = list(report.addenda.all())
    if addenda:
        story.append(Paragraph("Addenda", styles["Heading2"]))
        for addendum in addenda:
            story.append(para(f"{_when(addendum.created_at)}, {_person(addendum.author)}:", small))
            story.append(para(addendum.text))

    ai_rows: list[list] = [
        ["AI finding", _label(report.ai_label) if report.ai_label else "No AI result"],
        ["Probability", _percent(report.ai_probability)],
    ]
    if report.ai_label:
        source = next(
            (captions[image.pk] for image, entry, _ in signed_images if entry.get("job") == report.ai_job_id), ""
        )
        ai_rows.append(["From", source or "an image no longer in the case"])
    ai_rows.append(["Model", f"{report.ai_model_name} {report.ai_model_version}".strip() or "-"])
    # Issue 12: the model's status and evidence as shown when signing (only assistive models' results are).
    shown = next((entry for _, entry, _ in signed_images if entry.get("job") == report.ai_job_id), {})
    if report.ai_label and shown.get("model_status"):
        ai_rows.append(["Model status", para(shown["model_status"])])
    story += [Paragraph("AI result (as shown when signing)", styles["Heading2"]), _table(ai_rows)]

    story.append(Paragraph("Images", styles["Heading2"]))
    for image, entry, job in signed_images:
        prediction = None
        if entry.get("status") == InferenceJob.Status.SUCCEEDED and job is not None:
            prediction = getattr(job, "prediction", None)
        picture = _open_picture(image)
        lines = [f"{image.width} x {image.height} {image.format}, uploaded {_when(image.uploaded_at)}"]
        if image.dicom:
            dicom = image.dicom
            lines.append(f"Study date {dicom.get('study_date', '-')}, view {dicom.get('view_position', '-')}")
        lines.append(_ai_line(entry, job))
        parts: list = [Paragraph(escape(captions[image.pk]), styles["Heading4"])]
        if picture is not None:
            parts += _pictures(picture, prediction)
        else:
            parts.append(para("The image file could not be read.", small))
        parts += [para(line, small) for line in lines]
        story += [KeepTogether(parts), Spacer(1, 4 * mm)]

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
        topMargin=22 * mm,  # room for the header line
        bottomMargin=18 * mm,
    )
    document.build(story, canvasmaker=_canvas_with_header(patient.name, f" · MRN {patient.mrn} · Case {case.pk}"))
    return buffer.getvalue()


def report_pdf_response(*, report: Report, case: Case) -> HttpResponse:
    """The signed report as a download, the same for the case page and the API (never cached)."""
    response = HttpResponse(render_report_pdf(report=report, case=case), content_type="application/pdf")
    response["Content-Disposition"] = f'attachment; filename="xnet-report-case-{case.pk}.pdf"'
    return private(response)

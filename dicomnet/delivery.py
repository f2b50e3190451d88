"""Build a delivery's DICOM object and send it: claim, build, C-STORE, record."""

from __future__ import annotations

import logging

from dicomnet import network, objects, services
from dicomnet.models import Delivery

logger = logging.getLogger(__name__)


def build(delivery: Delivery) -> bytes:
    from reviews.models import Report

    if delivery.kind == Delivery.Kind.PDF:
        from reviews.pdf import render_report_pdf

        report = Report.objects.select_related("case__patient").get(pk=delivery.report_id)
        image = next(i for i in report.case.images.current() if services._source_dicom_image(i))
        source = objects.source_dataset(image)
        pdf = render_report_pdf(report=report, case=report.case)
        ds = objects.build_pdf(
            pdf=pdf,
            source=source,
            series_uid=delivery.series_instance_uid,
            sop_uid=delivery.sop_instance_uid,
            title=f"XNET report, case {report.case_id}",
        )
        return objects.to_bytes(ds)
    prediction = delivery.prediction
    source = objects.source_dataset(prediction.job.image)
    builder = objects.build_sr if delivery.kind == Delivery.Kind.SR else objects.build_sc
    ds = builder(
        prediction=prediction, source=source, series_uid=delivery.series_instance_uid, sop_uid=delivery.sop_instance_uid
    )
    return objects.to_bytes(ds)


def run(*, delivery_id: int) -> int | None:
    """One attempt; the seconds until the next one, or None (done, given up, nothing to do)."""
    delivery = services.delivery_claim(delivery_id=delivery_id)
    if delivery is None:
        return None
    delivery = Delivery.objects.select_related("node", "prediction__job__image", "report").get(pk=delivery.pk)
    try:
        data = build(delivery)
    except Exception as exc:
        logger.exception("Delivery %s: the object could not be built", delivery.pk)
        services.delivery_failed(
            delivery=delivery, error=f"The object could not be built ({type(exc).__name__}).", permanent=True
        )
        return None
    try:
        network.send(node=delivery.node, data=data)
    except network.SendError as exc:
        delay = services.delivery_failed(delivery=delivery, error=str(exc), permanent=exc.permanent)
        logger.warning(
            "Delivery %s attempt %s failed: %s%s",
            delivery.pk,
            delivery.attempts,
            exc,
            f"; retry in {delay} s" if delay else "; giving up",
        )
        return delay
    except Exception as exc:
        delay = services.delivery_failed(delivery=delivery, error=f"{type(exc).__name__}: {exc}"[:500])
        logger.exception("Delivery %s attempt %s failed", delivery.pk, delivery.attempts)
        return delay
    services.delivery_succeeded(delivery=delivery)
    logger.info("Delivery %s (%s of case %s) sent to %s", delivery.pk, delivery.kind, delivery.case_id, delivery.node)
    return None

"""pynetdicom plumbing: the C-STORE/C-ECHO listener XNET runs, and the C-STORE sender.

Association handlers run in pynetdicom's threads; each uses its own database connection
(Django's are per thread) and closes it when the association ends.
"""

from __future__ import annotations

import io
import logging

import pydicom
from django.conf import settings
from django.db import close_old_connections, connection
from pydicom.dataset import Dataset
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt
from pynetdicom.sop_class import Verification

from dicomnet import services
from dicomnet.models import DicomNode, ReceivedInstance

logger = logging.getLogger(__name__)

REJECT_PERMANENT, SOURCE_SERVICE_USER, CALLING_AE_NOT_RECOGNISED = 0x01, 0x01, 0x03


def _calling_ae(event: evt.Event) -> str:
    # In EVT_REQUESTED the requestor's title is only in the A-ASSOCIATE primitive so far.
    value = event.assoc.requestor.primitive.calling_ae_title
    return (value.decode("ascii", "replace") if isinstance(value, bytes) else str(value)).strip()


def _on_requested(event: evt.Event) -> None:
    """Only known calling AE titles (an incoming node of some department) may associate."""
    close_old_connections()
    calling = _calling_ae(event)
    node = services.incoming_node(calling)
    if node is None:
        logger.warning(
            "DICOM association from unknown calling AE %r (%s) rejected", calling, event.assoc.requestor.address
        )
        event.assoc.acse.send_reject(REJECT_PERMANENT, SOURCE_SERVICE_USER, CALLING_AE_NOT_RECOGNISED)
        # As pynetdicom's own rejections do: wait until the DUL has sent the A-ASSOCIATE-RJ, or
        # the socket closes first and the peer sees an abort instead of the rejection.
        event.assoc.kill()
        connection.close()
        return
    event.assoc.xnet_node_id = node.pk


def _on_store(event: evt.Event) -> Dataset | int:
    status = Dataset()
    try:
        node = (
            DicomNode.objects.select_related("department")
            .filter(pk=getattr(event.assoc, "xnet_node_id", None), enabled=True)
            .first()
        )
        if node is None:
            status.Status = services.STATUS_PROCESSING_FAILURE
            status.ErrorComment = "The sending node is no longer configured in XNET."
            return status
        data = event.encoded_dataset(include_meta=True)
        result = services.instance_receive(
            department=node.department,
            node=node,
            data=data,
            source=ReceivedInstance.Source.DIMSE,
            calling_ae=_calling_ae(event),
        )
    except Exception:
        logger.exception("C-STORE failed")
        connection.close()
        status.Status = services.STATUS_PROCESSING_FAILURE
        status.ErrorComment = "XNET could not store the instance (server error; see its log)."
        return status
    status.Status = result.status
    if result.reason:
        # ErrorComment is LO: 64 characters; the full reason is on the intake page and in the log.
        status.ErrorComment = result.reason[:64]
    return status


def _on_echo(event: evt.Event) -> int:
    return 0x0000


def _on_closed(event: evt.Event) -> None:
    connection.close()


HANDLERS = [
    (evt.EVT_REQUESTED, _on_requested),
    (evt.EVT_C_STORE, _on_store),
    (evt.EVT_C_ECHO, _on_echo),
    (evt.EVT_RELEASED, _on_closed),
    (evt.EVT_ABORTED, _on_closed),
]


def listener_ae(ae_title: str | None = None) -> AE:
    ae = AE(ae_title=ae_title or settings.XNET_DICOM_AE_TITLE)
    # Every transfer syntax: an instance XNET cannot decode is then refused by the intake with its
    # reason (status C000), not by a silent presentation-context rejection the sender may not report.
    for context in AllStoragePresentationContexts:
        ae.add_supported_context(context.abstract_syntax, ALL_TRANSFER_SYNTAXES)
    ae.add_supported_context(Verification)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = settings.XNET_DICOM_TIMEOUT
    ae.maximum_pdu_size = 0  # no limit
    return ae


def start_listener(*, host: str | None = None, port: int | None = None, block: bool = True):
    """Serve C-STORE and C-ECHO; returns the server when not blocking (tests, benchmarks)."""
    ae = listener_ae()
    address = (host or settings.XNET_DICOM_HOST, port or settings.XNET_DICOM_PORT)
    logger.info("DICOM listener %s on %s:%s", ae.ae_title, *address)
    return ae.start_server(address, block=block, evt_handlers=HANDLERS)


class SendError(Exception):
    """The destination did not take the object; `permanent` when retrying cannot help."""

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


def send(*, node: DicomNode, data: bytes) -> None:
    """C-STORE one Part 10 object to a destination node; SendError on any failure."""
    ds = pydicom.dcmread(io.BytesIO(data))
    ae = AE(ae_title=settings.XNET_DICOM_AE_TITLE)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = settings.XNET_DICOM_TIMEOUT
    ae.connection_timeout = settings.XNET_DICOM_TIMEOUT
    ae.add_requested_context(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID)
    assoc = ae.associate(node.host, node.port, ae_title=node.ae_title)
    if not assoc.is_established:
        if assoc.is_rejected:
            raise SendError(f"{node.ae_title} at {node.host}:{node.port} rejected the association")
        raise SendError(f"no DICOM association with {node.ae_title} at {node.host}:{node.port} (down or unreachable)")
    try:
        status = assoc.send_c_store(ds)
    finally:
        assoc.release()
    if not status or "Status" not in status:
        raise SendError(f"{node.ae_title} did not answer the C-STORE (connection lost or timed out)")
    code = int(status.Status)
    if code == 0x0000 or code in (0xB000, 0xB007, 0xB006):  # success or warnings: stored
        return
    comment = str(status.get("ErrorComment", "")).strip()
    permanent = (code & 0xF000) in (0xA000, 0xC000) and code != 0xA700
    raise SendError(f"{node.ae_title} refused the object: status 0x{code:04X} {comment}".strip(), permanent=permanent)

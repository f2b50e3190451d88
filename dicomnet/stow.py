"""DICOMweb STOW-RS (PS3.18 10.5): multipart/related bodies in, a DICOM JSON store response out."""

from __future__ import annotations

import re
from email.message import Message

from django.core.exceptions import ValidationError

from dicomnet.services import IntakeResult

MEDIA_TYPE = "application/dicom"


def _params(content_type: str) -> tuple[str, dict[str, str]]:
    message = Message()
    message["Content-Type"] = content_type
    params = {key.lower(): value for key, value in (message.get_params() or [])[1:]}
    return message.get_content_type(), params


def split_parts(content_type: str, body: bytes) -> list[bytes]:
    """The application/dicom parts of a multipart/related body; ValidationError (code) otherwise."""
    kind, params = _params(content_type or "")
    if kind != "multipart/related":
        raise ValidationError(
            f'STOW-RS takes multipart/related; type="{MEDIA_TYPE}" bodies, not {kind or "no content type"}.',
            code="unsupported_media_type",
        )
    part_type = params.get("type", MEDIA_TYPE).lower()
    if part_type != MEDIA_TYPE:
        raise ValidationError(
            f'Only type="{MEDIA_TYPE}" (Part 10 instances) is accepted, not {part_type}.',
            code="unsupported_media_type",
        )
    boundary = params.get("boundary")
    if not boundary:
        raise ValidationError("The multipart/related content type has no boundary.", code="bad_multipart")
    delimiter = b"--" + boundary.encode("latin-1")
    chunks = body.split(delimiter)
    if len(chunks) < 3:
        raise ValidationError("The body has no parts between its boundaries.", code="bad_multipart")
    parts = []
    for chunk in chunks[1:]:
        if chunk.startswith(b"--"):
            break  # the closing delimiter
        chunk = chunk.removeprefix(b"\r\n")
        head, sep, content = chunk.partition(b"\r\n\r\n")
        if not sep:
            raise ValidationError("A part of the body has no header block.", code="bad_multipart")
        match = re.search(rb"(?im)^content-type:\s*([^;\r\n]+)", head)
        if match and match.group(1).strip().lower() != MEDIA_TYPE.encode():
            raise ValidationError(
                f"Every part must be {MEDIA_TYPE}; one is {match.group(1).decode('latin-1').strip()}.",
                code="unsupported_media_type",
            )
        parts.append(content.removesuffix(b"\r\n"))
    if not parts:
        raise ValidationError("The body holds no DICOM instance.", code="bad_multipart")
    return parts


def _attr(vr: str, *values) -> dict:
    return {"vr": vr, "Value": list(values)}


def store_response(results: list[IntakeResult], *, retrieve_url: str) -> tuple[int, dict]:
    """HTTP status and DICOM JSON: 200 all stored, 202 some refused, 409 none stored."""
    referenced, failed = [], []
    for result in results:
        item = {}
        if result.sop_class_uid:
            item["00081150"] = _attr("UI", result.sop_class_uid)
        if result.sop_instance_uid:
            item["00081155"] = _attr("UI", result.sop_instance_uid)
        if result.ok:
            referenced.append(item)
        else:
            item["00081197"] = _attr("US", result.status)  # Failure Reason
            # Why, in words (the intake page shows the same): Error Comment, as a C-STORE answers.
            item["00000902"] = _attr("LO", result.reason[:64])
            failed.append(item)
    body: dict = {"00081190": _attr("UR", retrieve_url)}
    if referenced:
        body["00081199"] = _attr("SQ", *referenced)
    if failed:
        body["00081198"] = _attr("SQ", *failed)
    status = 200 if not failed else 202 if referenced else 409
    return status, body

"""Patient files sent to browsers and API clients, built in one place.

The case page and the REST API stream the same files; both must send the same content type and
name, and both must keep patient data out of shared and disk caches (a reading-room workstation is
shared). Views only translate a missing file into their own 404.
"""

from __future__ import annotations

from django.http import FileResponse, HttpResponse

from diagnosis import services
from diagnosis.models import Image, Prediction

PRIVATE_NO_STORE = "private, no-store"
CONTENT_TYPES = {Image.Format.PNG: "image/png", Image.Format.JPEG: "image/jpeg"}


def private(response: HttpResponse) -> HttpResponse:
    response["Cache-Control"] = PRIVATE_NO_STORE
    return response


def image_response(image: Image) -> FileResponse:
    """The pixels of an image: the PNG rendered from a DICOM (the original object is never sent),
    else the upload. Raises FileNotFoundError when the row has no file."""
    try:
        handle = services.image_open(image=image)
    except ValueError:  # the field is empty
        raise FileNotFoundError(f"image {image.pk} has no file") from None
    shown = Image.Format.PNG if image.rendered else image.format
    extension = "png" if shown == Image.Format.PNG else "jpg"
    return private(FileResponse(handle, content_type=CONTENT_TYPES[shown], filename=f"image-{image.pk}.{extension}"))


def heatmap_response(prediction: Prediction) -> FileResponse:
    """A prediction's Grad-CAM PNG. Raises FileNotFoundError when it has none or the file is gone."""
    if not prediction.heatmap:
        raise FileNotFoundError(f"prediction {prediction.pk} has no heatmap")
    handle = prediction.heatmap.open("rb")
    return private(FileResponse(handle, content_type="image/png", filename=f"heatmap-{prediction.pk}.png"))

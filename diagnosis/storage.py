"""The default file storage: Django's FileSystemStorage, minus the partial files of a failed write.

When the disk fills up mid-write, FileSystemStorage raises but leaves the file it created (empty
or cut short) behind, with no row pointing at it. Every stored file (uploads, DICOM renderings,
heatmaps) goes through here, so a failed write leaves nothing.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from django.core.files.storage import FileSystemStorage

logger = logging.getLogger(__name__)


class CleanFileSystemStorage(FileSystemStorage):
    def _save(self, name: str, content: Any) -> str:
        path = self.path(name)
        existed = os.path.lexists(path)
        try:
            return super()._save(name, content)
        except BaseException:
            # The name is new (storage picked an unused one, created with O_EXCL), so whatever is
            # at it now is this write's partial file.
            if not existed and os.path.lexists(path):
                try:
                    os.remove(path)
                except OSError:
                    logger.exception("Could not remove the partial file of a failed write")
            raise

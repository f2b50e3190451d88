"""`manage.py sync_models`: give every installed model version its deployment rows now.

Also run on migrate and at worker start; this is for an installation that adds a model folder
and wants its status rows (and the site admin's starting statuses) before either happens.
"""

from __future__ import annotations

from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand

from diagnosis.model_status import deployments_sync
from diagnosis.models import ModelDeployment


class Command(BaseCommand):
    help = "Create deployment rows (silent unless set otherwise) for every installed model version in every department."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--model-dir", type=Path, default=None, help="default: XNET_MODEL_DIR")

    def handle(self, *args, model_dir: Path | None = None, **options) -> None:
        created = deployments_sync(model_dir=model_dir)
        for row in created:
            self.stdout.write(f"created: {row}")
        self.stdout.write(
            f"{len(created)} deployment rows created from {model_dir or settings.XNET_MODEL_DIR}; "
            f"{ModelDeployment.objects.count()} in all."
        )
        for row in ModelDeployment.objects.select_related("department"):
            self.stdout.write(f"  {row}")

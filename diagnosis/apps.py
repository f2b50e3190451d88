from django.apps import AppConfig
from django.db.models.signals import post_migrate


class DiagnosisConfig(AppConfig):
    name = "diagnosis"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from diagnosis import signals  # noqa: F401  (connects the reading-order receivers)

        post_migrate.connect(_sync_model_deployments, sender=self, dispatch_uid="diagnosis_sync_models")


def _sync_model_deployments(sender, using: str = "default", **kwargs) -> None:
    """After migrate, every installed model version gets its deployment rows (silent unless set
    otherwise): a freshly installed version is known, and quiet, before the first upload."""
    from django.db import connections

    if "diagnosis_modeldeployment" not in connections[using].introspection.table_names():
        return  # migrated backwards past the status tables
    from diagnosis.model_status import deployments_sync

    deployments_sync()

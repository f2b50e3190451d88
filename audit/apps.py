from django.apps import AppConfig


class AuditConfig(AppConfig):
    """Append-only audit trail of who saw and did what, and the department dashboard."""

    name = "audit"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from audit import signals  # noqa: F401 - connects the auth signal receivers

from django.apps import AppConfig


class HealthConfig(AppConfig):
    """Liveness of the parts outside the web process: database, broker, workers, beat, disk.

    Sits below `diagnosis` (it imports no other XNET app), so the job sweeper can ask it which
    workers are alive.
    """

    name = "health"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from health import signals  # noqa: F401 - records beat's heartbeat when it publishes

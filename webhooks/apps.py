from django.apps import AppConfig


class WebhooksConfig(AppConfig):
    """Webhooks for external apps: listens to diagnosis and reviews signals; neither imports it."""

    name = "webhooks"
    verbose_name = "Webhooks"

    def ready(self) -> None:
        from webhooks import signals  # noqa: F401 - connects the receivers

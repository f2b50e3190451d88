from django.apps import AppConfig


class ModelopsConfig(AppConfig):
    """Local validation, promotion and drift alarms on top of diagnosis' model status.

    A higher app: it imports diagnosis, reviews, accounts and audit; none of them imports it."""

    default_auto_field = "django.db.models.BigAutoField"
    name = "modelops"
    verbose_name = "Model operations"

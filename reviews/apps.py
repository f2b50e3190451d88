from django.apps import AppConfig


class ReviewsConfig(AppConfig):
    """Radiologist sign-off: reports on cases, addenda, PDF export, triage and disagreement lists."""

    name = "reviews"
    default_auto_field = "django.db.models.BigAutoField"

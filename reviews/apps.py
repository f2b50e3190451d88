from django.apps import AppConfig


class ReviewsConfig(AppConfig):
    """Radiologist sign-off: reports on cases, addenda, PDF export, triage and disagreement lists."""

    name = "reviews"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # The case page (diagnosis) shows the sign-off block without importing this app.
        from reviews.fragments import register_fragments

        register_fragments()

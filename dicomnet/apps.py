from django.apps import AppConfig


class DicomnetConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "dicomnet"
    verbose_name = "DICOM network (PACS in and out)"

    def ready(self) -> None:
        from dicomnet import receivers  # noqa: F401 - connects the result and sign-off listeners
        from dicomnet.fragments import register_fragments

        register_fragments()

from django.apps import AppConfig


class FhirApiConfig(AppConfig):
    """FHIR R4 read endpoints for signed reports. Named fhir_api, not fhir: the fhir.resources
    package (tests only) installs `fhir` as a namespace package at interpreter start-up, which
    would shadow an app called `fhir`."""

    name = "fhir_api"
    verbose_name = "FHIR R4"

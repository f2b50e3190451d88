"""factory_boy factories for every model; images are real PNG files built in memory."""

from __future__ import annotations

import io

import factory
from django.core.files.base import ContentFile
from PIL import Image as PILImage

from accounts.models import Department, User
from diagnosis.models import Case, Image, InferenceJob, Modality, Patient, Prediction

DEFAULT_PASSWORD = "correct-horse-battery-staple"


def png_bytes(width: int = 128, height: int = 128, *, mode: str = "L", value: int = 90) -> bytes:
    """A real PNG: a grey gradient, so it is not a blank image."""
    image = PILImage.linear_gradient("L").resize((width, height))
    if mode != "L":
        image = image.convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


class DepartmentFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Department
        django_get_or_create = ("name",)

    name = factory.Sequence(lambda n: f"Radiology {n}")


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = User
        django_get_or_create = ("username",)
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"user{n}")
    email = factory.LazyAttribute(lambda u: f"{u.username}@hospital.example")
    department = factory.SubFactory(DepartmentFactory)
    role = User.Role.RADIOLOGIST
    password = factory.PostGenerationMethodCall("set_password", DEFAULT_PASSWORD)

    @factory.post_generation
    def _save(obj, create, extracted, **kwargs):  # noqa: N805 - factory_boy hook signature
        if create:
            obj.save()


class DepartmentAdminFactory(UserFactory):
    role = User.Role.DEPARTMENT_ADMIN


class PatientFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Patient

    department = factory.SubFactory(DepartmentFactory)
    mrn = factory.Sequence(lambda n: f"MRN{n:06d}")
    name = factory.Faker("name")
    birth_date = factory.Faker("date_of_birth", minimum_age=18, maximum_age=90)
    sex = Patient.Sex.FEMALE
    created_by = factory.SubFactory(UserFactory, department=factory.SelfAttribute("..department"))


class CaseFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Case

    patient = factory.SubFactory(PatientFactory)
    modality = Modality.XRAY
    indication = "Cough and fever for five days."
    created_by = factory.LazyAttribute(lambda c: c.patient.created_by)


class ImageFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Image

    case = factory.SubFactory(CaseFactory)
    modality = factory.LazyAttribute(lambda i: i.case.modality)
    file = factory.LazyFunction(lambda: ContentFile(png_bytes(), name="chest.png"))
    original_name = "chest.png"
    sha256 = factory.Sequence(lambda n: f"{n:064x}")
    size_bytes = 1000
    width = 128
    height = 128
    format = Image.Format.PNG
    uploaded_by = factory.LazyAttribute(lambda i: i.case.created_by)


class InferenceJobFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = InferenceJob

    image = factory.SubFactory(ImageFactory)


class PredictionFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Prediction

    job = factory.SubFactory(InferenceJobFactory, status=InferenceJob.Status.SUCCEEDED, attempt=1)
    probabilities = factory.LazyFunction(lambda: {"normal": 0.1, "pneumonia": 0.7, "covid": 0.15, "tuberculosis": 0.05})
    top_label = "pneumonia"
    top_probability = 0.7
    model_name = "test-xray"
    model_version = "1.0.0"

"""factory_boy factories for every model; images are real PNG files built in memory."""

from __future__ import annotations

import io
from datetime import timedelta

import factory
from django.core.files.base import ContentFile
from django.utils import timezone
from django_otp.oath import totp
from django_otp.plugins.otp_totp.models import TOTPDevice
from PIL import Image as PILImage

from accounts.models import ApiToken, Department, User
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


class TOTPDeviceFactory(factory.django.DjangoModelFactory):
    """An enrolled authenticator app (a random key, as the set-up page makes)."""

    class Meta:
        model = TOTPDevice

    user = factory.SubFactory(DepartmentAdminFactory)
    name = "Authenticator app"
    confirmed = True


def api_token_for(user: User, *, days: int = 30, name: str = "test client") -> tuple[ApiToken, str]:
    """A token of `user` and its key (the key is stored hashed: this is the only copy)."""
    key = ApiToken.new_key()
    token = ApiToken(user=user, name=name, expires_at=timezone.now() + timedelta(days=days))
    token.set_key(key)
    token.save()
    return token, key


def totp_code(device: TOTPDevice, *, steps_ahead: int = 0) -> str:
    """The code the user's phone shows now (or `steps_ahead` 30-second steps later: a device
    accepts each time step once, so a second login within one step needs the next code)."""
    device.refresh_from_db()
    code = totp(device.bin_key, device.step, device.t0, device.digits, device.drift + steps_ahead)
    return f"{code:0{device.digits}d}"


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

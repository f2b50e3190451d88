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
from diagnosis.models import Case, Image, InferenceJob, Modality, ModelDeployment, Patient, Prediction

DEFAULT_PASSWORD = "correct-horse-battery-staple"


def png_bytes(width: int = 128, height: int = 128, *, mode: str = "L", value: int = 90) -> bytes:
    """A real PNG: a grey gradient, so it is not a blank image."""
    image = PILImage.linear_gradient("L").resize((width, height))
    if mode != "L":
        image = image.convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


# The model names jobs and predictions of the factories carry, per modality (issue 12: a result is
# shown only when its model is assistive in the department).
TEST_MODELS = {Modality.XRAY: ("test-xray", "1.0.0"), Modality.CT: ("test-ct", "1.0.0")}


class DepartmentFactory(factory.django.DjangoModelFactory):
    """models=True (default): the department has a model that speaks for each modality, as most
    tests are about shown results (see speaking_models); models=False: only what sync gave it."""

    class Meta:
        model = Department
        django_get_or_create = ("name",)
        skip_postgeneration_save = True

    name = factory.Sequence(lambda n: f"Radiology {n}")

    @factory.post_generation
    def models(obj, create, extracted, **kwargs):  # noqa: N805 - factory_boy hook signature
        if create and extracted is not False:
            speaking_models(obj)


def speaking_models(department: Department) -> None:
    """Tests' default: where models are installed (settings.XNET_MODEL_DIR), the newest of each
    modality is assistive in the department (the rest stay as synced, silent), and the
    placeholders below are retired; where none is (the suite's default, no model folder), the
    placeholders TEST_MODELS are assistive, so uploads queue one job each and results show.
    Written directly, as fixtures: no history row, no audit event."""
    from django.conf import settings

    from diagnosis.model_status import deployments_sync
    from ml.registry import model_for

    deployments_sync(departments=[department])
    for modality, (name, version) in TEST_MODELS.items():
        spec = model_for(modality, settings.XNET_MODEL_DIR)
        if spec is not None:
            name, version = spec.name, spec.version
            ModelDeployment.objects.filter(department=department, model_name__startswith="test-").update(
                status=ModelDeployment.Status.RETIRED
            )
        elif ModelDeployment.objects.filter(department=department, modality=modality).exclude(model_name=name).exists():
            continue  # a test set this department's models itself
        ModelDeployment.objects.filter(department=department, modality=modality, status="assistive").exclude(
            model_name=name, model_version=version
        ).update(status=ModelDeployment.Status.SILENT)
        ModelDeployment.objects.update_or_create(
            department=department,
            model_name=name,
            model_version=version,
            defaults={"modality": modality, "status": ModelDeployment.Status.ASSISTIVE},
        )


class ModelDeploymentFactory(factory.django.DjangoModelFactory):
    """A model version's row in a department; silent unless told (the platform's default)."""

    class Meta:
        model = ModelDeployment
        django_get_or_create = ("department", "model_name", "model_version")

    department = factory.SubFactory(DepartmentFactory, models=False)
    modality = Modality.XRAY
    model_name = factory.LazyAttribute(lambda d: f"{TEST_MODELS[d.modality][0]}-candidate")
    model_version = "1.0.0"
    status = ModelDeployment.Status.SILENT


def assistive(deployment: ModelDeployment, *, by: User | None = None) -> ModelDeployment:
    """Make a version assistive the way the platform does (history, audit, demotion of the previous)."""
    from diagnosis.model_status import deployment_set_status

    return deployment_set_status(
        deployment=deployment, status=ModelDeployment.Status.ASSISTIVE, changed_by=by, reason="validated (test)"
    )


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


def _speaking_model(image: Image) -> tuple[str, str]:
    """The model a job is of by default: the one assistive for the image's modality in its
    department (so its result shows, as most tests expect), else the placeholder."""
    row = (
        ModelDeployment.objects.filter(
            department_id=image.case.patient.department_id, modality=image.modality, status="assistive"
        )
        .values_list("model_name", "model_version")
        .first()
    )
    return row or TEST_MODELS[image.modality]


class InferenceJobFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = InferenceJob

    image = factory.SubFactory(ImageFactory)
    model_name = factory.LazyAttribute(lambda j: _speaking_model(j.image)[0])
    model_version = factory.LazyAttribute(lambda j: _speaking_model(j.image)[1])


class PredictionFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Prediction

    job = factory.SubFactory(InferenceJobFactory, status=InferenceJob.Status.SUCCEEDED, attempt=1)
    probabilities = factory.LazyFunction(lambda: {"normal": 0.1, "pneumonia": 0.7, "covid": 0.15, "tuberculosis": 0.05})
    top_label = "pneumonia"
    top_probability = 0.7
    model_name = factory.LazyAttribute(lambda p: p.job.model_name)
    model_version = factory.LazyAttribute(lambda p: p.job.model_version)

    @classmethod
    def _create(cls, model_class, *args, **kwargs):
        # A prediction told its model makes its job that model's job too (as the worker stores them).
        job = kwargs["job"]
        if (job.model_name, job.model_version) != (kwargs["model_name"], kwargs["model_version"]):
            job.model_name, job.model_version = kwargs["model_name"], kwargs["model_version"]
            InferenceJob.objects.filter(pk=job.pk).update(model_name=job.model_name, model_version=job.model_version)
        return super()._create(model_class, *args, **kwargs)

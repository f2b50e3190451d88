"""Server-rendered pages: worklist, patients, cases, uploads, live job status, image files.

Thin adapters: objects are read through the department-scoped selectors (another department's
object is a 404) and written through the services; a service's ValidationError becomes a form
error on a 400 page.
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlencode

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.paginator import Paginator
from django.db import transaction
from django.db.models import Count, Max, Q
from django.http import FileResponse, Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from accounts.forms import add_service_errors
from accounts.models import User
from diagnosis import downloads, fragments, model_cards, pixels, selectors, services
from diagnosis.forms import CaseCreateForm, ImagesUploadForm, ImageWithdrawForm, PatientSearchForm, WorklistFilterForm
from diagnosis.model_status import job_evidence_json
from diagnosis.models import Case, Image, InferenceJob, Patient, Prediction
from diagnosis.templatetags.xnet import no_model_message
from ml.labels import display_name
from ml.registry import ModelSpec, find_model, model_for

PAGE_SIZE = 25


def _case_or_404(user: User, case_id: int) -> Case:
    try:
        return selectors.case_detail(user=user, case_id=case_id)
    except Case.DoesNotExist:
        raise Http404("No such case.") from None


def _with_latest_jobs(images: Iterable[Image]) -> list[Image]:
    """Attach each image's latest job (the one shown) and earlier ones, from the prefetch."""
    result = []
    for image in images:
        jobs = list(image.jobs.all())
        image.latest_job = jobs[-1] if jobs else None
        image.earlier_jobs = jobs[:-1]
        result.append(image)
    return result


def _prediction(job: InferenceJob | None) -> Prediction | None:
    if job is None:
        return None
    try:
        return job.prediction
    except Prediction.DoesNotExist:
        return None


def _seconds(value) -> float | None:
    return None if value is None else round(value.total_seconds(), 3)


# Worklist and patients -------------------------------------------------------------------


@login_required
@require_GET
def worklist(request: HttpRequest) -> HttpResponse:
    """Cases in reading order, a keyset page at a time (`cursor`): a deep page costs what the first
    does. Each case link carries the worklist's filters, so the case page's next/previous case
    keeps them (selectors.worklist_neighbours)."""
    form = WorklistFilterForm(request.GET)
    form.is_valid()  # invalid filters are shown as errors and left out
    cursor = None
    if request.GET.get("cursor"):
        try:
            cursor = selectors.WorklistCursor.decode(request.GET["cursor"], keys=selectors.READING_ORDER)
        except ValueError:
            cursor = None  # a damaged or stale link: the first page, as a bad page number always did
    now = cursor.now if cursor else timezone.now()
    cases = selectors.worklist(user=request.user, triage=True, now=now, **form.filters())
    page = selectors.keyset_page(cases, keys=selectors.READING_ORDER, size=PAGE_SIZE, cursor=cursor, now=now)
    # Only the filters (valid or not) travel, in the form's order: on case links, page links.
    filter_query = urlencode([(name, request.GET[name]) for name in form.fields if request.GET.get(name)])
    context = {
        "form": form,
        "page": page,
        "count": cases.count(),
        "filtered": bool(filter_query),
        "filter_query": filter_query,
        "now": timezone.now(),
        "max_wait_minutes": settings.XNET_TRIAGE_MAX_WAIT_MINUTES,
    }
    return render(request, "diagnosis/worklist.html", context, status=400 if form.errors else 200)


@login_required
@require_GET
def patient_list(request: HttpRequest) -> HttpResponse:
    form = PatientSearchForm(request.GET)
    # Meta.ordering does not apply to aggregate queries: order explicitly for stable pages.
    patients = (
        selectors.patient_list_for_user(user=request.user)
        .annotate(case_count=Count("cases"), last_case_at=Max("cases__created_at"))
        .order_by("name", "mrn")
    )
    if form.is_valid() and form.cleaned_data["q"]:
        q = form.cleaned_data["q"].strip()
        patients = patients.filter(Q(mrn__icontains=q) | Q(name__icontains=q))
    page = Paginator(patients, PAGE_SIZE).get_page(request.GET.get("page"))
    return render(request, "diagnosis/patient_list.html", {"form": form, "page": page})


@login_required
@require_GET
def patient_detail(request: HttpRequest, patient_id: int) -> HttpResponse:
    patient = get_object_or_404(
        selectors.patient_list_for_user(user=request.user).select_related("created_by"), pk=patient_id
    )
    cases = list(selectors.patient_history(patient=patient))
    for case in cases:
        case.image_list = _with_latest_jobs(case.images.all())
    return render(request, "diagnosis/patient_detail.html", {"patient": patient, "cases": cases})


# Cases -----------------------------------------------------------------------------------


@login_required
@require_http_methods(["GET", "POST"])
def case_create(request: HttpRequest) -> HttpResponse:
    if request.method == "POST":
        form = CaseCreateForm(request.POST, request.FILES, user=request.user)
    else:
        initial = {"mrn": request.GET.get("mrn", "")}
        if request.GET.get("modality"):
            initial["modality"] = request.GET["modality"]
        form = CaseCreateForm(user=request.user, initial=initial)
    if form.is_bound and form.is_valid():
        case = _create_case_with_images(request, form)
        if case is not None:
            count = len(form.cleaned_data["images"])
            # Issue 12: with no model version active for the modality here, nothing is queued.
            queued = (
                "queued for classification"
                if InferenceJob.objects.filter(image__case=case).exists()
                else "stored for reading (no model runs for them here)"
            )
            messages.success(request, f"Case created; {count} image{'s' if count != 1 else ''} {queued}.")
            return redirect("case_detail", case_id=case.pk)
    status = 400 if form.errors else 200
    return render(request, "diagnosis/case_create.html", {"form": form}, status=status)


def _create_case_with_images(request: HttpRequest, form: CaseCreateForm) -> Case | None:
    """Patient (if new), case and images in one transaction: a bad image leaves no case behind."""
    data = form.cleaned_data
    if data["patient_mode"] == CaseCreateForm.FROM_DICOM:
        try:
            jobs = services.case_from_dicom(
                created_by=request.user,
                files=data["images"],
                modality=data["modality"] or None,
                indication=data["indication"],
                frame=data["frame"],
                confirm_modality=data["confirm_modality"],
            )
        except ValidationError as exc:
            # The patient comes from the files: their errors are shown at the images field.
            if hasattr(exc, "error_dict"):
                add_service_errors(form, exc)
            else:
                form.add_error("images", exc)
            return None
        return jobs.images[0].case
    uploading = False
    try:
        with transaction.atomic():
            patient: Patient = form.patient or services.patient_create(
                created_by=request.user,
                mrn=data["mrn"],
                name=data["name"],
                birth_date=data["birth_date"],
                sex=data["sex"] or Patient.Sex.UNKNOWN,
            )
            case = services.case_create(
                patient=patient, modality=data["modality"], created_by=request.user, indication=data["indication"]
            )
            uploading = True
            services.images_upload(
                case=case,
                files=data["images"],
                uploaded_by=request.user,
                frame=data["frame"],
                confirm_modality=data["confirm_modality"],
            )
    except ValidationError as exc:
        if uploading and not hasattr(exc, "error_dict"):
            form.add_error("images", exc)
        else:
            add_service_errors(form, exc)
        return None
    return case


def _render_case(
    request: HttpRequest,
    case: Case,
    *,
    upload_form: ImagesUploadForm | None = None,
    withdraw_form: tuple[int, ImageWithdrawForm] | None = None,
    fragment_state: dict[str, dict] | None = None,
    status: int = 200,
) -> HttpResponse:
    """The case page. Blocks other apps own (the sign-off) come from diagnosis.fragments;
    `fragment_state` hands a fragment its bound forms when its view re-renders the page."""
    images = _with_latest_jobs(case.images.all())
    finished = all(image.latest_job is None or image.latest_job.is_finished for image in images)
    rendered = fragments.render_case_fragments(request, case, finished=finished, state=fragment_state)
    # A signed case is frozen: no upload, no withdrawal (the fragment that signs says so).
    frozen = any(fragment.frozen for fragment in rendered)
    for image in images:
        # Withdrawing is for mistaken uploads of an unsigned case, by the uploader or an admin.
        image.can_withdraw = not frozen and services.image_can_withdraw(image=image, user=request.user)
        image.withdraw_form = (
            withdraw_form[1] if withdraw_form and withdraw_form[0] == image.pk else ImageWithdrawForm()
        )
    worklist_query = _worklist_query(request)
    context = {
        "case": case,
        "images": images,
        "finished": finished,
        "frozen": frozen,
        "fragments": [fragment for fragment in rendered if fragment.slot == "after_images"],
        "upload_form": upload_form or ImagesUploadForm(),
        # A signed case takes no new image: the page offers a new case for the patient instead.
        "new_case_url": f"{reverse('case_create')}?{urlencode({'mrn': case.patient.mrn, 'modality': case.modality})}",
        "priors": selectors.case_priors(user=request.user, case=case),
        "worklist_query": worklist_query,
        **_neighbours(request, case, worklist_query),
    }
    return render(request, "diagnosis/case_detail.html", context, status=status)


# The worklist's querystring keys that filter it (never its page or cursor).
WORKLIST_QUERY_KEYS = ("q", "status", "modality", "date_from", "date_to", "reading")


def _worklist_query(request: HttpRequest) -> str:
    """The worklist's filters the case was opened with, kept on next / previous case links."""
    return urlencode([(key, request.GET[key]) for key in WORKLIST_QUERY_KEYS if request.GET.get(key)])


def _neighbours(request: HttpRequest, case: Case, worklist_query: str) -> dict:
    """Links to the previous and next unsigned case in worklist order, under the same filters."""
    form = WorklistFilterForm(request.GET)
    form.is_valid()  # invalid values are left out, as on the worklist
    previous_id, next_id = selectors.worklist_neighbours(user=request.user, case=case, filters=form.filters())
    suffix = f"?{worklist_query}" if worklist_query else ""

    def link(case_id: int | None) -> str | None:
        return f"{reverse('case_detail', args=[case_id])}{suffix}" if case_id else None

    return {
        "previous_case_url": link(previous_id),
        "next_case_url": link(next_id),
        "worklist_url": f"{reverse('worklist')}{suffix}",
    }


@login_required
@require_GET
def case_detail(request: HttpRequest, case_id: int) -> HttpResponse:
    return _render_case(request, _case_or_404(request.user, case_id))


@login_required
@require_POST
def case_upload(request: HttpRequest, case_id: int) -> HttpResponse:
    case = _case_or_404(request.user, case_id)
    form = ImagesUploadForm(request.POST, request.FILES)
    if form.is_valid():
        data = form.cleaned_data
        try:
            jobs = services.images_upload(
                case=case,
                files=data["images"],
                uploaded_by=request.user,
                frame=data["frame"],
                confirm_modality=data["confirm_modality"],
            )
        except services.CaseConflict as exc:
            # Signed: the page shows the message beside its "New case for this patient" link.
            messages.error(request, exc.message)
            return _render_case(request, case, status=409)
        except ValidationError as exc:
            form.add_error("images", exc)
        else:
            count = len(jobs.images)
            queued = "queued for classification" if jobs else "stored for reading (no model runs for them here)"
            messages.success(request, f"{count} image{'s' if count != 1 else ''} uploaded and {queued}.")
            return redirect("case_detail", case_id=case.pk)
    return _render_case(request, case, upload_form=form, status=400)


@login_required
@require_POST
def job_retry(request: HttpRequest, job_id: int) -> HttpResponse:
    """The case page's "Run again" button on a failed job (department admins)."""
    job = get_object_or_404(selectors.job_list_for_user(user=request.user), pk=job_id)
    case_id = job.image.case_id
    try:
        services.job_retry(job_id=job.pk, user=request.user)
    except PermissionDenied as exc:
        messages.error(request, str(exc))
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
    else:
        messages.success(request, f"Image {job.image.position} queued for classification again.")
    return redirect(f"{reverse('case_detail', args=[case_id])}#image-{job.image_id}")


@login_required
@require_POST
def image_withdraw(request: HttpRequest, image_id: int) -> HttpResponse:
    """Withdraw a mistaken upload (with a reason) from an unsigned case: uploader or admin."""
    image = get_object_or_404(selectors.image_list_for_user(user=request.user), pk=image_id)
    case = _case_or_404(request.user, image.case_id)
    form = ImageWithdrawForm(request.POST)
    if form.is_valid():
        try:
            services.image_withdraw(image=image, withdrawn_by=request.user, reason=form.cleaned_data["reason"])
        except services.CaseConflict as exc:
            messages.error(request, exc.message)
            return _render_case(request, case, status=409)
        except ValidationError as exc:
            add_service_errors(form, exc)
        else:
            done = f"Image {image.position} withdrawn: it no longer counts in this case; the audit trail keeps why."
            messages.success(request, done)
            return redirect("case_detail", case_id=case.pk)
    return _render_case(request, case, withdraw_form=(image.pk, form), status=400)


def _job_json(job: InferenceJob | None) -> dict | None:
    if job is None:
        return None
    prediction = _prediction(job)
    return {
        "id": job.pk,
        "status": job.status,
        "attempt": job.attempt,
        "error_message": job.error_message,
        "model_name": prediction.model_name if prediction else job.model_name,
        "model_version": prediction.model_version if prediction else job.model_version,
        "top_label": prediction.top_label if prediction else None,
        "top_label_display": display_name(prediction.top_label) if prediction else None,
        "top_probability": prediction.top_probability if prediction else None,
        "heatmap_url": (
            reverse("prediction_heatmap", args=[prediction.pk]) if prediction and prediction.heatmap else None
        ),
        "rejection_code": job.rejection_code,
        "rejection_reason": job.rejection_reason,
        # The model's status here and what it rests on (issue 12): only assistive results are shown.
        "model_status": job_evidence_json(job),
        "queue_wait_s": _seconds(job.queue_wait),
        "run_time_s": _seconds(job.run_time),
    }


@login_required
@require_GET
def case_status(request: HttpRequest, case_id: int) -> JsonResponse:
    """What the case page polls while jobs run: each image's latest job, plus its rendered
    result block so the page shows exactly what a reload would."""
    case = _case_or_404(request.user, case_id)
    images = _with_latest_jobs(case.images.all())
    payload = {
        "case": case.pk,
        "finished": all(image.latest_job is None or image.latest_job.is_finished for image in images),
        "images": [
            {
                "id": image.pk,
                "job": _job_json(image.latest_job),
                "html": render_to_string(
                    "diagnosis/_job.html", {"job": image.latest_job, "image": image}, request=request
                ),
                # Issue 12: with no shown result, why (no validated model here); else null.
                "no_result": None if image.latest_job else no_model_message(image),
            }
            for image in images
        ],
    }
    if payload["finished"]:
        # Fragments such as the sign-off block offer "agree" only once there is an AI result:
        # send them fresh, so the page can swap them in when the radiologist has not started.
        refreshed = fragments.render_case_fragments(request, case, finished=True, only_refreshed=True)
        for fragment in refreshed:
            payload[f"{fragment.name}_html"] = fragment.html  # e.g. "signoff_html"
    response = JsonResponse(payload)
    response["Cache-Control"] = "no-store"
    return response


@login_required
@require_GET
def image_file(request: HttpRequest, image_id: int) -> FileResponse:
    """Stream an uploaded image to a member of its department; the files have no public URL.
    For a DICOM this is the PNG rendered from it: browsers never get the raw object."""
    image = get_object_or_404(selectors.image_list_for_user(user=request.user), pk=image_id)
    try:
        return downloads.image_response(image)
    except FileNotFoundError:
        raise Http404("The image file is missing.") from None


@login_required
@require_GET
def image_pixels(request: HttpRequest, image_id: int) -> FileResponse:
    """The viewer's 16-bit PNG of a DICOM image's modality values (its window/level works on
    these), to a member of the image's department; a PNG or JPEG upload has none (404)."""
    image = get_object_or_404(selectors.image_list_for_user(user=request.user), pk=image_id)
    try:
        handle = pixels.pixels16_open(image=image)
    except pixels.NoModalityValues:
        raise Http404("Only DICOM images have modality values; this one windows its 8 bits.") from None
    except FileNotFoundError:
        raise Http404("The image file is missing.") from None
    except ValidationError:
        raise Http404("The original DICOM can no longer be read.") from None
    response = FileResponse(handle, content_type="image/png", filename=f"image-{image.pk}-values.png")
    return downloads.private(response)


@login_required
@require_GET
def prediction_heatmap(request: HttpRequest, prediction_id: int) -> FileResponse:
    """Stream a prediction's Grad-CAM PNG to a member of its department (private, like the image)."""
    prediction = get_object_or_404(selectors.prediction_list_for_user(user=request.user), pk=prediction_id)
    try:
        return downloads.heatmap_response(prediction)
    except FileNotFoundError:
        raise Http404("This prediction has no heatmap file.") from None


# Model cards -------------------------------------------------------------------------------

# The leave-one-source-out figure first: it predicts a new hospital; the others show the test split.
CARD_FIGURES = ("leave_one_source_out.png", "confusion_matrix.png", "roc_curves.png", "reliability_diagram.png")


def _installed_model_or_404(name: str, version: str) -> ModelSpec:
    spec = find_model(settings.XNET_MODEL_DIR, name, version)
    if spec is None:
        raise Http404(f"Model {name} {version} is not installed here; its card went with it.")
    return spec


@login_required
@require_GET
def model_card(request: HttpRequest, name: str, version: str) -> HttpResponse:
    """How far to trust a model: its card, next to every result it produced."""
    spec = _installed_model_or_404(name, version)
    card_file = spec.folder / "CARD.md"
    meta = spec.card
    training = model_cards.training_data(meta, list(spec.classes))
    shown = {"title"} | ({"intended_use"} if meta.get("intended_use") else set())
    shown |= {"limitations"} if meta.get("limitations") else set()
    card_html = (
        model_cards.card_html(card_file.read_text(), shown_by_page=shown, training_table=training is not None)
        if card_file.is_file()
        else ""
    )
    figures = [figure for figure in CARD_FIGURES if (spec.folder / figure).is_file()]
    # A result made by an older model links here; the reader should know it is no longer in use.
    in_use = model_for(spec.modality, settings.XNET_MODEL_DIR)
    return render(
        request,
        "diagnosis/model_card.html",
        {
            "spec": spec,
            "meta": meta,
            "card_html": card_html,
            "training": training,
            "figures": figures,
            "in_use": in_use if in_use and in_use != spec else None,
        },
    )


@login_required
@require_GET
def model_card_figure(request: HttpRequest, name: str, version: str, figure: str) -> FileResponse:
    if figure not in CARD_FIGURES:
        raise Http404("No such figure.")
    spec = _installed_model_or_404(name, version)
    path = spec.folder / figure
    if not path.is_file():
        raise Http404("This model's card has no such figure.")
    return FileResponse(path.open("rb"), content_type="image/png")

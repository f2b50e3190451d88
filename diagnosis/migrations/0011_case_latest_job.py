"""Case.latest_job: the case's latest job of a model assistive in its department, on a current
image (issue 11: the worklist's job-status column and filter read it through one join instead of
a latest-job subquery per case). Filled here for every existing case, one UPDATE per department;
Case.refresh_reading_order keeps it from then on."""

import django.db.models.deletion
from django.db import migrations, models


def fill_latest_jobs(apps, schema_editor):
    Case = apps.get_model("diagnosis", "Case")
    InferenceJob = apps.get_model("diagnosis", "InferenceJob")
    ModelDeployment = apps.get_model("diagnosis", "ModelDeployment")
    departments = Case.objects.order_by().values_list("patient__department_id", flat=True).distinct()
    for department_id in departments:
        assistive = ModelDeployment.objects.filter(
            department_id=department_id,
            model_name=models.OuterRef("model_name"),
            model_version=models.OuterRef("model_version"),
            status="assistive",
        )
        latest = (
            InferenceJob.objects.filter(
                models.Exists(assistive), image__case=models.OuterRef("pk"), image__withdrawn_at__isnull=True
            )
            .order_by("-created_at", "-id")
            .values("pk")[:1]
        )
        Case.objects.filter(patient__department_id=department_id).update(latest_job=models.Subquery(latest))


class Migration(migrations.Migration):
    dependencies = [
        ("diagnosis", "0010_worklist_indexes"),
    ]

    operations = [
        migrations.AddField(
            model_name="case",
            name="latest_job",
            field=models.ForeignKey(
                blank=True,
                editable=False,
                null=True,
                on_delete=django.db.models.deletion.SET_NULL,
                related_name="+",
                to="diagnosis.inferencejob",
            ),
        ),
        migrations.RunPython(fill_latest_jobs, migrations.RunPython.noop),
    ]

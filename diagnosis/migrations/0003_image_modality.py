from django.db import migrations, models


def copy_case_modality(apps, schema_editor):
    Image = apps.get_model("diagnosis", "Image")
    for modality in ("xray", "ct"):
        Image.objects.filter(case__modality=modality).update(modality=modality)


class Migration(migrations.Migration):
    dependencies = [("diagnosis", "0002_dicom_gate_heatmap")]

    operations = [
        migrations.AddField(
            model_name="image",
            name="modality",
            field=models.CharField(
                choices=[("xray", "Chest X-ray"), ("ct", "Chest CT")], default="xray", max_length=8
            ),
            preserve_default=False,
        ),
        migrations.RunPython(copy_case_modality, migrations.RunPython.noop),
    ]

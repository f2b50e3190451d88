"""Move DRF authtoken keys (stored in clear text) into hashed accounts.ApiToken rows, then
delete the clear-text rows. The authtoken app is no longer installed, so its table is read with
SQL, and only when it exists (a new database never had it)."""

import hashlib
from datetime import timedelta

from django.db import migrations
from django.utils import timezone

MIGRATED_TOKEN_DAYS = 90


def forwards(apps, schema_editor):
    connection = schema_editor.connection
    if "authtoken_token" not in connection.introspection.table_names():
        return
    ApiToken = apps.get_model("accounts", "ApiToken")
    with connection.cursor() as cursor:
        cursor.execute("SELECT key, user_id, created FROM authtoken_token")
        rows = cursor.fetchall()
        expires = timezone.now() + timedelta(days=MIGRATED_TOKEN_DAYS)
        ApiToken.objects.bulk_create(
            ApiToken(
                user_id=user_id,
                name="Token from before hashing",
                prefix=key[:8],
                key_hash=hashlib.sha256(key.encode()).hexdigest(),
                created_at=created,
                expires_at=expires,
            )
            for key, user_id, created in rows
        )
        cursor.execute("DELETE FROM authtoken_token")


class Migration(migrations.Migration):
    dependencies = [("accounts", "0002_api_tokens_and_department_2fa")]

    operations = [migrations.RunPython(forwards, migrations.RunPython.noop)]

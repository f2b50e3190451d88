"""Give the application's PostgreSQL role what it needs, and no more, on the audit trail.

The role that owns a table can switch its triggers off (ALTER TABLE ... DISABLE TRIGGER), so the
append-only trigger on audit events binds only a role that does not own the table. In
production, migrations run as an owner role and the web servers and workers as an application
role that this command grants: read and write on every table, but on audit events only SELECT
and INSERT (no UPDATE, DELETE, TRUNCATE, TRIGGER), and only SELECT on the migration history.

Run it as the owner after every `migrate` (new tables need their grant); it is idempotent:

    DATABASE_URL=postgres://xnet_owner@db/xnet manage.py migrate
    DATABASE_URL=postgres://xnet_owner@db/xnet manage.py grant_app_role xnet_app
"""

from __future__ import annotations

import re

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connection, transaction

from audit.models import AuditEvent

ROLE_NAME = re.compile(r"^[a-z_][a-z0-9_$]{0,62}$")


def grant_app_role(role: str) -> list[str]:
    """Grant `role` the application's privileges; returns the statements run. Refuses a role
    that is a superuser, owns the audit table or is a member of its owner: each of those could
    switch the append-only trigger off."""
    if connection.vendor != "postgresql":
        raise CommandError("Database roles are a PostgreSQL deployment; this database is " + connection.vendor + ".")
    if not ROLE_NAME.match(role):
        raise CommandError(f"{role!r} is not a plain role name (lower-case letters, digits, _ and $).")
    audit_table = AuditEvent._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT r.rolsuper, pg_has_role(r.oid, t.tableowner, 'MEMBER'), t.tableowner, t.schemaname "
            "FROM pg_roles r, pg_tables t "
            "WHERE r.rolname = %s AND t.tablename = %s AND t.schemaname = current_schema()",
            [role, audit_table],
        )
        row = cursor.fetchone()
    if row is None:
        raise CommandError(f"There is no role {role!r} (create it first: CREATE ROLE {role} LOGIN PASSWORD '...').")
    superuser, member_of_owner, owner, schema = row
    if superuser:
        raise CommandError(f"{role} is a superuser: it could switch the audit trail's trigger off.")
    if member_of_owner:
        raise CommandError(
            f"{role} owns {audit_table} (or is a member of its owner {owner}): it could switch the "
            "append-only trigger off. Run migrations as another role and the application as this one."
        )
    quote = connection.ops.quote_name
    who, where = quote(role), quote(schema)
    statements = [
        f"GRANT USAGE ON SCHEMA {where} TO {who}",
        f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {where} TO {who}",
        f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA {where} TO {who}",
        f"REVOKE UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER ON {quote(audit_table)} FROM {who}",
        f"REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON {quote('django_migrations')} FROM {who}",
    ]
    with transaction.atomic(), connection.cursor() as cursor:
        for statement in statements:
            cursor.execute(statement)
    return statements


class Command(BaseCommand):
    help = "Grant the application's database role read/write on every table but append-only on audit events."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("role", help="the PostgreSQL role the web servers and workers log in as")

    def handle(self, *args, role: str, **options) -> None:
        for statement in grant_app_role(role):
            self.stdout.write(statement)
        self.stdout.write(self.style.SUCCESS(f"{role} can read and write XNET's tables and only append audit events."))

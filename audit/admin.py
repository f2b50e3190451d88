from django.contrib import admin
from django.http import HttpRequest

from audit.models import AuditEvent


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin):
    """Site admins read every department's events here; nobody adds, changes or deletes one."""

    list_display = ["created_at", "actor_username", "department", "action", "object_type", "object_id", "ip_address"]
    list_filter = ["action", "department", "object_type"]
    search_fields = ["actor_username", "object_id", "ip_address", "path"]
    date_hierarchy = "created_at"
    list_select_related = ["department"]
    readonly_fields = [field.name for field in AuditEvent._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

from django.contrib import admin
from django.contrib.auth.admin import UserAdmin

from accounts.models import ApiToken, Department, User


@admin.register(Department)
class DepartmentAdmin(admin.ModelAdmin):
    list_display = ["name", "radiologists_need_2fa", "created_at"]
    search_fields = ["name"]


@admin.register(User)
class XnetUserAdmin(UserAdmin):
    list_display = ["username", "email", "department", "role", "is_active", "is_superuser"]
    list_filter = ["department", "role", "is_active", "is_superuser"]
    fieldsets = (*UserAdmin.fieldsets, ("Department", {"fields": ("department", "role")}))
    add_fieldsets = (*UserAdmin.add_fieldsets, ("Department", {"fields": ("department", "role")}))


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    """Read-only: the key exists only hashed, so the admin shows its first characters. Tokens are
    made on the department's API tokens page or with `manage.py create_api_token`."""

    list_display = ["name", "prefix", "user", "created_at", "expires_at", "last_used_at", "status"]
    list_filter = ["revoke_reason"]
    search_fields = ["name", "prefix", "user__username"]
    fields = ["name", "prefix", "user", "created_by", "created_at", "expires_at", "last_used_at", "revoked_at"]
    readonly_fields = fields

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

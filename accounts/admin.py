from django.contrib import admin
from django.contrib.auth.admin import UserAdmin

from accounts.models import Department, User


@admin.register(Department)
class DepartmentAdmin(admin.ModelAdmin):
    list_display = ["name", "created_at"]
    search_fields = ["name"]


@admin.register(User)
class XnetUserAdmin(UserAdmin):
    list_display = ["username", "email", "department", "role", "is_active", "is_superuser"]
    list_filter = ["department", "role", "is_active", "is_superuser"]
    fieldsets = (*UserAdmin.fieldsets, ("Department", {"fields": ("department", "role")}))
    add_fieldsets = (*UserAdmin.add_fieldsets, ("Department", {"fields": ("department", "role")}))

"""Reports and addenda in the Django admin: read-only, since both are locked once written."""

from django.contrib import admin

from reviews.models import Addendum, Report


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


class AddendumInline(admin.TabularInline):
    model = Addendum
    extra = 0
    fields = ["created_at", "author", "text"]
    readonly_fields = fields
    can_delete = False

    def has_add_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Report)
class ReportAdmin(ReadOnlyAdmin):
    list_display = ["case", "final_label", "ai_label", "agrees_with_ai", "signed_by", "signed_at"]
    list_filter = ["agrees_with_ai", "final_label"]
    search_fields = ["case__patient__mrn"]
    list_select_related = ["signed_by"]
    inlines = [AddendumInline]


@admin.register(Addendum)
class AddendumAdmin(ReadOnlyAdmin):
    list_display = ["report", "author", "created_at"]
    list_select_related = ["author"]

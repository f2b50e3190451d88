from django.contrib import admin

from dicomnet.models import Delivery, DicomNode, IntakeEvent


@admin.register(DicomNode)
class DicomNodeAdmin(admin.ModelAdmin):
    list_display = ["name", "ae_title", "host", "port", "direction", "department", "enabled"]
    list_filter = ["direction", "enabled", "department"]
    search_fields = ["name", "ae_title", "host"]


@admin.register(IntakeEvent)
class IntakeEventAdmin(admin.ModelAdmin):
    list_display = ["created_at", "department", "calling_ae", "source", "outcome", "code", "case"]
    list_filter = ["outcome", "source", "department"]
    readonly_fields = [f.name for f in IntakeEvent._meta.fields]


@admin.register(Delivery)
class DeliveryAdmin(admin.ModelAdmin):
    list_display = ["created_at", "case", "kind", "node", "status", "attempts", "sent_at"]
    list_filter = ["status", "kind"]
    readonly_fields = ["sop_instance_uid", "series_instance_uid", "attempts", "last_error", "sent_at", "claimed_at"]

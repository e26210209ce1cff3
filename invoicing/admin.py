from django.contrib import admin

from invoicing.delivery.models import Delivery, DeliveryEvent, Suppression
from invoicing.models import FirmBillingSettings, Invoice


class DeliveryEventInline(admin.TabularInline):
    model = DeliveryEvent
    extra = 0
    can_delete = False
    readonly_fields = ["kind", "source", "occurred_at", "reply_code", "status_code", "diagnostic"]
    fields = readonly_fields


@admin.register(Invoice)
class InvoiceAdmin(admin.ModelAdmin):
    list_display = ["number", "firm", "client", "status", "due_date"]
    list_filter = ["status"]
    list_select_related = ["firm", "client"]
    search_fields = ["client__display_name"]
    raw_id_fields = ["firm", "client", "created_by"]

    def has_delete_permission(self, request, obj=None):  # type: ignore[no-untyped-def]
        return False  # an issued invoice is voided, never deleted


@admin.register(Delivery)
class DeliveryAdmin(admin.ModelAdmin):
    list_display = ["address", "invoice", "status", "problem_code", "is_test", "created"]
    list_filter = ["status", "problem_code"]
    search_fields = ["normalized", "message_id", "esp_message_id"]
    raw_id_fields = ["firm", "invoice", "client"]
    inlines = [DeliveryEventInline]


@admin.register(Suppression)
class SuppressionAdmin(admin.ModelAdmin):
    list_display = ["normalized", "firm", "reason", "created", "removed_at"]
    list_filter = ["reason"]
    search_fields = ["normalized"]
    raw_id_fields = ["firm", "source_event", "removed_by"]


admin.site.register(FirmBillingSettings)

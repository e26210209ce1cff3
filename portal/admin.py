from django.contrib import admin

from portal.models import Client, Contact, ContactAddress, Document, Firm


@admin.register(Firm)
class FirmAdmin(admin.ModelAdmin):
    list_display = ["name", "slug", "sending_domain", "created"]
    search_fields = ["name", "slug"]


class ContactInline(admin.TabularInline):
    model = Contact
    extra = 0


@admin.register(Client)
class ClientAdmin(admin.ModelAdmin):
    list_display = ["display_name", "firm", "kind", "status"]
    list_filter = ["status", "kind"]
    search_fields = ["display_name"]
    raw_id_fields = ["firm"]
    inlines = [ContactInline]


@admin.register(ContactAddress)
class ContactAddressAdmin(admin.ModelAdmin):
    list_display = ["address", "contact", "is_primary", "receives_invoices"]
    search_fields = ["normalized"]
    raw_id_fields = ["firm", "contact"]


@admin.register(Document)
class DocumentAdmin(admin.ModelAdmin):
    list_display = ["original_name", "client", "source", "size", "created"]
    raw_id_fields = ["client", "uploaded_by"]

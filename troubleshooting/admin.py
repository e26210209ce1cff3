from django.contrib import admin

from troubleshooting.models import DomainCheckRun, Incident


@admin.register(Incident)
class IncidentAdmin(admin.ModelAdmin):
    list_display = ["message", "active", "created"]
    list_filter = ["active"]


@admin.register(DomainCheckRun)
class DomainCheckRunAdmin(admin.ModelAdmin):
    list_display = ["domain", "firm", "created"]
    raw_id_fields = ["firm"]

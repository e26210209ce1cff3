from django.contrib import admin

from mailsync.models import MailboxConnection, Message


@admin.register(MailboxConnection)
class MailboxConnectionAdmin(admin.ModelAdmin):
    list_display = ["email_address", "firm", "owner", "intent", "health", "problem_code"]
    list_filter = ["intent", "health", "kind"]
    # The encrypted secret is never shown, not even to staff.
    exclude = ["secret"]
    readonly_fields = ["problem_detail", "last_success_at", "messages_imported", "lease_until"]


@admin.register(Message)
class MessageAdmin(admin.ModelAdmin):
    list_display = ["subject", "firm", "from_address", "date", "parse_error"]
    list_filter = ["parse_error"]
    # The raw mail is in the blob store; its sha256 names it there.
    readonly_fields = ["raw_sha256", "size"]

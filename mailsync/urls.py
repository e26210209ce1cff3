from django.urls import path

from mailsync.views import mailbox as views
from mailsync.views import message as views_message
from mailsync.views import oauth as views_oauth
from mailsync.views import outgoing as views_outgoing

app_name = "mailsync"

urlpatterns = [
    path("settings/email-sync/connect/", views.credentials, name="credentials"),
    path("settings/email-sync/connect/oauth/", views_oauth.oauth_start, name="oauth_start"),
    path(
        "settings/email-sync/connect/oauth/done/",
        views_oauth.oauth_complete,
        name="oauth_complete",
    ),
    path("settings/email-sync/<int:connection_pk>/stop/", views.stop, name="stop"),
    path("settings/email-sync/<int:connection_pk>/remove/", views.remove, name="remove"),
    path("settings/email-sync/<int:connection_pk>/sync/", views.sync_now, name="sync_now"),
    path("settings/email-sync/<int:connection_pk>/folders/", views.folders, name="folders"),
    path("settings/email-sync/<int:connection_pk>/status/", views.status, name="status"),
    path(
        "settings/email-sync/<int:connection_pk>/folders/<int:folder_pk>/recheck/",
        views.folder_recheck,
        name="folder_recheck",
    ),
    path("clients/<int:client_pk>/email/", views.client_email, name="client_email"),
    # One message as its sender formatted it (mailsync.views.message).
    path(
        "clients/<int:client_pk>/email/<int:message_pk>/",
        views_message.message,
        name="message",
    ),
    # Its text, for the Email tab's expanded preview (loaded when opened).
    path(
        "clients/<int:client_pk>/email/<int:message_pk>/text/",
        views_message.message_text,
        name="message_text",
    ),
    path(
        "clients/<int:client_pk>/email/<int:message_pk>/images/",
        views_message.message_images,
        name="message_images",
    ),
    path(
        "clients/<int:client_pk>/email/<int:message_pk>/inline/<str:token>/",
        views_message.message_inline,
        name="message_inline",
    ),
    # Unlinked mail: link its addresses to clients, or ignore them.
    path("mail/unlinked/", views.unlinked, name="unlinked"),
    path("mail/unlinked/link/", views.unlinked_choose_client, name="unlinked_choose_client"),
    path("mail/unlinked/link/<int:client_pk>/", views.unlinked_link, name="unlinked_link"),
    path("mail/unlinked/ignore/", views.unlinked_ignore, name="unlinked_ignore"),
    path("mail/unlinked/ignored/", views.unlinked_ignored, name="unlinked_ignored"),
    path(
        "mail/unlinked/ignored/<int:ignored_pk>/restore/",
        views.unlinked_unignore,
        name="unlinked_unignore",
    ),
    # Sending from a member's own mailbox (mailsync.views.outgoing).
    path(
        "settings/email-sync/sending/",
        views_outgoing.sending_addresses,
        name="sending_addresses",
    ),
    path(
        "settings/email-sync/shared/sending/",
        views_outgoing.shared_sending_addresses,
        name="shared_sending_addresses",
    ),
    path("clients/<int:client_pk>/email/write/", views_outgoing.compose, name="compose"),
    path(
        "clients/<int:client_pk>/email/<int:message_pk>/reply/",
        views_outgoing.reply,
        name="reply",
    ),
    path(
        "clients/<int:client_pk>/email/written/<int:written_pk>/",
        views_outgoing.written_email,
        name="written_email",
    ),
    path(
        "clients/<int:client_pk>/email/written/<int:written_pk>/dismiss/",
        views_outgoing.written_dismiss,
        name="written_dismiss",
    ),
    path(
        "clients/<int:client_pk>/email/sender/",
        views_outgoing.client_sender,
        name="client_sender",
    ),
]

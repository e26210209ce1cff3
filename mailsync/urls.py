from django.urls import path

from mailsync import views, views_oauth

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
    path("clients/<int:client_pk>/email/", views.client_email, name="client_email"),
]

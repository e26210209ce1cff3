from django.urls import path

from troubleshooting import views

app_name = "troubleshooting"

urlpatterns = [
    path("problems/", views.dashboard, name="dashboard"),
    path("problems/guides/", views.guides, name="guides"),
    path("problems/handled/", views.mark_handled, name="mark_handled"),
    path("problems/domain/recheck/", views.recheck_domain, name="recheck_domain"),
    path("problems/allowlist/", views.allowlist, name="allowlist"),
    path("problems/send-test/", views.send_test, name="send_test"),
    path(
        "problems/deliveries/<int:delivery_pk>/fix-address/",
        views.fix_address_resend,
        name="fix_address_resend",
    ),
    path(
        "problems/mailboxes/<int:connection_pk>/server-settings/",
        views.fix_server_settings,
        name="fix_server_settings",
    ),
    path("clients/<int:client_pk>/problems/", views.client_problems, name="client_problems"),
    path("status/", views.status_page, name="status"),
]

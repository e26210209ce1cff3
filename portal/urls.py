from django.conf import settings
from django.contrib import admin
from django.urls import include, path

from portal.views import clients, contacts, documents, outbox, pages

portal_patterns = [
    path("", pages.home, name="home"),
    path("clients/", clients.client_list, name="client_list"),
    path("clients/new/", clients.client_create_view, name="client_create"),
    path("clients/<int:client_pk>/", clients.client_detail, name="client_detail"),
    path("clients/<int:client_pk>/edit/", clients.client_edit, name="client_edit"),
    path("clients/<int:client_pk>/documents/", clients.client_documents, name="client_documents"),
    path(
        "clients/<int:client_pk>/contacts/new/",
        contacts.contact_create_view,
        name="contact_create",
    ),
    path(
        "clients/<int:client_pk>/contacts/<int:contact_pk>/edit/",
        contacts.contact_edit,
        name="contact_edit",
    ),
    path(
        "clients/<int:client_pk>/contacts/<int:contact_pk>/delete/",
        contacts.contact_delete,
        name="contact_delete",
    ),
    path(
        "clients/<int:client_pk>/contacts/<int:contact_pk>/addresses/",
        contacts.contact_addresses_add_view,
        name="contact_addresses_add",
    ),
    path(
        "clients/<int:client_pk>/addresses/<int:address_pk>/edit/",
        contacts.address_edit,
        name="address_edit",
    ),
    path(
        "clients/<int:client_pk>/addresses/<int:address_pk>/delete/",
        contacts.address_delete,
        name="address_delete",
    ),
    path(
        "clients/<int:client_pk>/documents/upload/",
        documents.document_upload,
        name="document_upload",
    ),
    path(
        "clients/<int:client_pk>/documents/<int:document_pk>/download/",
        documents.document_download,
        name="document_download",
    ),
    path("outbox/", outbox.outbox_list, name="outbox"),
    path("outbox/<int:email_pk>/", outbox.outbox_detail, name="outbox_detail"),
]

urlpatterns = [
    path("", include((portal_patterns, "portal"))),
    path("", include("accounts.urls")),
    # The client's Email tab (clients/<pk>/email/) and Email Sync settings live in mailsync.
    path("", include("mailsync.urls")),
    path("", include("invoicing.urls")),
    path("", include("troubleshooting.urls")),
    path("accounts/", include("allauth.urls")),
    path("i18n/", include("django.conf.urls.i18n")),
    # ESP tracking webhooks: anymail's views check the webhook secret and signatures, then
    # send the `tracking` signal that invoicing.delivery.webhooks receives
    # (invoicing.delivery.esp_webhooks: unconfigured ESPs answer 404, Mailgun posts are
    # refused when stale or replayed).
    path("webhooks/anymail/", include("invoicing.delivery.esp_webhooks")),
    path("admin/", admin.site.urls),
]

if settings.BENCH_FLOOR_VIEW:
    # What any request costs here (middleware, session, user): the bench's floor.
    urlpatterns.append(path("bench/floor/", pages.bench_floor))

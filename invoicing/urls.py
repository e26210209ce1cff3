from django.urls import path

from invoicing.views import firm, invoices, public, sending, stripe

app_name = "invoicing"

urlpatterns = [
    path("invoices/", invoices.invoice_list_view, name="invoice_list"),
    path("invoices/new/", invoices.invoice_create_view, name="invoice_create"),
    path("invoices/send-drafts/", sending.invoices_send_drafts_view, name="invoices_send_drafts"),
    path("invoices/<int:invoice_pk>/", invoices.invoice_detail, name="invoice_detail"),
    path("invoices/<int:invoice_pk>/edit/", invoices.invoice_edit, name="invoice_edit"),
    path("invoices/<int:invoice_pk>/print/", invoices.invoice_print, name="invoice_print"),
    path("invoices/<int:invoice_pk>/void/", invoices.invoice_void_view, name="invoice_void"),
    path("invoices/<int:invoice_pk>/send/", sending.invoice_send_view, name="invoice_send"),
    path(
        "invoices/<int:invoice_pk>/send-test/",
        sending.invoice_send_test_view,
        name="invoice_send_test",
    ),
    path(
        "invoices/<int:invoice_pk>/payments/",
        sending.payment_record_view,
        name="payment_record",
    ),
    path(
        "invoices/<int:invoice_pk>/deliveries/<int:delivery_pk>/resend/",
        sending.delivery_resend_view,
        name="delivery_resend",
    ),
    path(
        "invoices/<int:invoice_pk>/deliveries/<int:delivery_pk>/revoke-link/",
        sending.pay_link_revoke_view,
        name="pay_link_revoke",
    ),
    path("clients/<int:client_pk>/invoices/", invoices.client_invoices, name="client_invoices"),
    path("billing/settings/", firm.billing_settings, name="billing_settings"),
    path("billing/blocked-addresses/", firm.suppressions, name="suppressions"),
    path(
        "billing/blocked-addresses/<int:suppression_pk>/remove/",
        firm.suppression_remove_view,
        name="suppression_remove",
    ),
    path("pay/<str:token>/", public.pay, name="pay"),
    path("pay/<str:token>/checkout/", stripe.checkout, name="stripe_checkout"),
    path("pay/<str:token>/new-link/", public.pay_link_request, name="pay_link_request"),
    path("webhooks/stripe/", stripe.webhook, name="stripe_webhook"),
]

"""The local outbox: the embedded default keeps mail and shows it to whom it concerns."""

from __future__ import annotations

import pytest
from django.core.mail import EmailMessage, EmailMultiAlternatives
from django.urls import reverse

from portal.mail_outbox import FIRM_HEADER
from portal.models import OutboxEmail


@pytest.fixture
def outbox_backend(settings):
    settings.EMAIL_BACKEND = "portal.mail_outbox.OutboxBackend"


def _send(subject, to, firm=None):
    headers = {FIRM_HEADER: str(firm.pk)} if firm else {}
    EmailMessage(subject, "Body text", "portal@x.test", to, headers=headers).send()


def test_it_keeps_each_message_per_recipient(outbox_backend, db):
    _send("Hello", ["a@x.test", "b@x.test"])
    assert sorted(OutboxEmail.objects.values_list("recipients", flat=True)) == [
        "a@x.test",
        "b@x.test",
    ]


def test_members_read_their_firms_mail_and_mail_sent_to_them(
    outbox_backend, owner_client, owner, firm
):
    _send("Firm mail", ["client@x.test"], firm=firm)
    _send("Personal mail", [owner.user.email])
    _send("Someone else's", ["stranger@x.test"])
    body = owner_client.get(reverse("portal:outbox")).content.decode()
    assert "Firm mail" in body
    assert "Personal mail" in body
    assert "Someone else" not in body


def test_a_message_opens_with_its_headers_and_text(outbox_backend, owner_client, firm):
    _send("Invoice 7", ["client@x.test"], firm=firm)
    email = OutboxEmail.objects.get()
    body = owner_client.get(reverse("portal:outbox_detail", args=[email.pk])).content.decode()
    assert "Body text" in body
    assert "client@x.test" in body


def test_another_firms_mail_is_not_found(outbox_backend, outsider_client, firm):
    _send("Firm mail", ["client@x.test"], firm=firm)
    email = OutboxEmail.objects.get()
    response = outsider_client.get(reverse("portal:outbox_detail", args=[email.pk]))
    assert response.status_code == 404


def test_an_html_email_is_shown_as_the_recipient_sees_it_in_the_safe_frame(
    outbox_backend, owner_client, firm
):
    message = EmailMultiAlternatives(
        "Invoice 8", "Body text", "portal@x.test", ["client@x.test"], headers={FIRM_HEADER: firm.pk}
    )
    message.attach_alternative(
        "<p>Amount due: <b>120,00</b></p><script>alert(1)</script>", "text/html"
    )
    message.send()
    url = reverse("portal:outbox_detail", args=[OutboxEmail.objects.get().pk])

    response = owner_client.get(url)

    page = response.content.decode()
    frame = page[page.index("<iframe") : page.index("</iframe>")]
    assert 'sandbox="allow-popups allow-popups-to-escape-sandbox"' in frame
    assert "Amount due: &lt;b&gt;120,00&lt;/b&gt;" in frame  # escaped into srcdoc
    assert "script" not in frame
    assert "'unsafe-inline'" in response["Content-Security-Policy"]
    assert "Body text" in owner_client.get(url + "?format=text").content.decode()

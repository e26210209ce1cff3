"""A line break hidden in an RFC 2047 encoded word never becomes a header, on any path that
builds an email: writing to a client, invoice emails, test sends, invitations.

Mail goes through real loopback SMTP servers (aiosmtpd: the submission server members send
through, and the portal's own relay), and each test reads the headers the server received.
"""

from __future__ import annotations

import pytest
from django.urls import reverse

from accounts.models import Role
from mailsync import crypto, sending
from mailsync.models import OutgoingAddress, OutgoingServer
from mailsync.outgoing import outgoing_for
from portal.headers import HeaderTextError, check_header_text, header_text
from tests.factories import ClientFactory, ContactAddressFactory, ContactFactory
from tests.invoicing import factories as invoicing_factories
from tests.invoicing.factories import invoice_with_lines
from tests.mailsync.factories import MailboxConnectionFactory
from tests.mailsync.writing import compose_url, press_send
from tests.servers import smtp as smtp_fixtures
from tests.servers import smtp_auth

smtp_server = smtp_fixtures.smtp_server
smtp = smtp_fixtures.smtp
submission_server = smtp_auth.submission_server
submission = smtp_auth.submission
tasks_run_inline = invoicing_factories.tasks_run_inline

# Each decodes to a line break followed by a forged header.
ENCODED = [
    "=?utf-8?q?Invoice=0D=0ABcc=3A_x@evil.test?=",
    "=?utf-8?q?Invoice=0ABcc=3A_x@evil.test?=",
    "=?utf-8?b?SW52b2ljZQ0KQmNjOiB4QGV2aWwudGVzdA==?=",
    "=?iso-8859-1?q?Invoice=0D=0AReply-To=3A_x@evil.test?=",
    "=?utf-8?q?Invoice=E2=80=A8Bcc=3A_x@evil.test?=",  # U+2028 LINE SEPARATOR
    "=?utf-8?q?Invoice=C2=85Bcc=3A_x@evil.test?=",  # U+0085 NEXT LINE
    "Hello =?utf-8?q?=0D=0A?=Bcc: x@evil.test",
]


def _assert_no_forged_header(received, *, recipients: list[str]) -> None:
    head = received.data.split(b"\r\n\r\n", 1)[0].decode("ascii", "replace")
    for name in ("Bcc", "Reply-To: x@evil", "Cc"):
        assert f"\n{name}" not in head
    assert received.message["Bcc"] is None
    assert "x@evil.test" not in str(received.message.get("Reply-To", ""))
    assert sorted(received.rcpt_tos) == sorted(recipients)
    for name in ("Subject", "From", "To", "Reply-To"):
        value = str(received.message.get(name, ""))
        assert not any(char in value for char in "\r\n\x85\u2028\u2029")


@pytest.mark.parametrize("value", ENCODED)
def test_the_one_helper_refuses_a_line_break_hidden_in_an_encoded_word(value):
    with pytest.raises(HeaderTextError):
        check_header_text(value)
    flattened = header_text(value)
    assert not any(char in flattened for char in "\r\n\x85\u2028\u2029")
    check_header_text(flattened)  # what the builders send is safe in turn


def test_ordinary_encoded_words_and_unicode_pass():
    for value in ("=?utf-8?q?Caf=C3=A9?=", "Année 2025 \u2013 bilan", "Re: [Ticket #4] a=?b"):
        assert check_header_text(value) == value


# --- writing to a client (mailsync) ----------------------------------------------------


@pytest.fixture
def client_(firm):
    client = ClientFactory(firm=firm, display_name="Birch Bakery")
    contact = ContactFactory(client=client, name="Bea Birch")
    ContactAddressFactory(contact=contact, address="bea@bakery.test", is_primary=True)
    return client


@pytest.fixture
def sender(submission, firm, owner, client_, fernet_key) -> OutgoingAddress:
    submission.add_user("ann", "pw-ann", sends_as=("ann@alder.test",))
    connection = MailboxConnectionFactory(
        firm=firm,
        owner=owner.user,
        email_address="ann@alder.test",
        username="ann",
        secret=crypto.encrypt("pw-ann"),
    )
    OutgoingServer.objects.create(
        connection=connection, host=submission.host, port=submission.port, security="none"
    )
    return outgoing_for(owner.user, client_)


def _write(http, client, sender, **fields):
    address = client.contacts.get().addresses.get()
    data = {"sender": sender.pk, "recipients": [address.pk], "subject": "Hi", "body": "Hello"}
    data.update(fields)
    return press_send(http, compose_url(client), data)


@pytest.mark.parametrize("subject", ENCODED)
def test_an_encoded_subject_with_a_line_break_is_a_form_error(
    owner_client, client_, sender, submission, subject
):
    page = _write(owner_client, client_, sender, subject=subject).content.decode()

    assert "This must be a single line" in page
    assert submission.received == []


def test_the_builder_refuses_it_too_when_a_caller_skips_the_form(
    owner, client_, sender, submission
):
    with pytest.raises(HeaderTextError):
        sending.email_send(
            member=owner.user,
            client=client_,
            sender=sender,
            recipients=["bea@bakery.test"],
            subject=ENCODED[0],
            body="Hello",
        )

    assert submission.received == []


def test_a_stored_sender_name_with_an_encoded_line_break_sends_nothing(
    owner_client, client_, sender, submission
):
    OutgoingAddress.objects.filter(pk=sender.pk).update(display_name=ENCODED[0])

    page = _write(owner_client, client_, sender).content.decode()

    assert "This must be a single line" in page
    assert submission.received == []


def test_a_clean_subject_still_goes_out(owner_client, client_, sender, submission):
    _write(owner_client, client_, sender, subject="=?utf-8?q?Caf=C3=A9?= accounts")

    (received,) = submission.received
    _assert_no_forged_header(received, recipients=["bea@bakery.test"])
    assert received.message["Subject"] == "Café accounts"


def test_the_sending_address_name_form_refuses_it(owner_client, sender):
    response = owner_client.post(
        reverse("mailsync:sending_addresses"),
        {
            "connection": sender.connection_id,
            "address": sender.pk,
            "action": "rename",
            "display_name": ENCODED[0],
        },
    )

    assert "This must be a single line" in response.content.decode()
    sender.refresh_from_db()
    assert sender.display_name != ENCODED[0]


# --- the portal's own emails ------------------------------------------------------------


@pytest.fixture
def portal_mail(settings, smtp):
    settings.SITE_URL = "http://testserver"
    settings.DEFAULT_FROM_EMAIL = "Practice Portal <no-reply@portal.test>"
    settings.BOUNCE_ADDRESS = ""
    settings.DELIVERY_SOFT_RETRY_MINUTES = []
    return smtp


def _invoice_client(firm, *, name="Birch Dental"):
    client = ClientFactory(firm=firm, display_name=name)
    ContactAddressFactory(contact=ContactFactory(client=client), address="anna@client.test")
    return client


def _send_invoice(http, invoice, capture):
    with capture(execute=True):
        http.post(reverse("invoicing:invoice_send", args=[invoice.pk]))


@pytest.mark.usefixtures("tasks_run_inline")
@pytest.mark.parametrize("value", ENCODED)
def test_invoice_email_with_an_encoded_firm_sender_name(
    staff_client, firm, portal_mail, value, django_capture_on_commit_callbacks
):
    firm.sender_name = value
    firm.save()

    invoice = invoice_with_lines(client=_invoice_client(firm))
    _send_invoice(staff_client, invoice, django_capture_on_commit_callbacks)

    (received,) = portal_mail.received
    _assert_no_forged_header(received, recipients=["anna@client.test"])


@pytest.mark.usefixtures("tasks_run_inline")
@pytest.mark.parametrize("value", ENCODED)
def test_invoice_email_with_an_encoded_client_name_in_the_subject(
    staff_client, firm, portal_mail, value, django_capture_on_commit_callbacks
):
    invoice = invoice_with_lines(client=_invoice_client(firm, name=value))
    _send_invoice(staff_client, invoice, django_capture_on_commit_callbacks)

    (received,) = portal_mail.received
    _assert_no_forged_header(received, recipients=["anna@client.test"])
    assert received.message["Subject"].startswith("Invoice #")


@pytest.mark.usefixtures("tasks_run_inline")
def test_an_invoice_test_send_with_an_encoded_firm_name(
    staff_client, staff, firm, portal_mail, django_capture_on_commit_callbacks
):
    firm.sender_name = ""
    firm.name = ENCODED[0]
    firm.save()
    invoice = invoice_with_lines(client=_invoice_client(firm))

    with django_capture_on_commit_callbacks(execute=True):
        staff_client.post(reverse("invoicing:invoice_send_test", args=[invoice.pk]))

    (received,) = portal_mail.received
    _assert_no_forged_header(received, recipients=[staff.user.email])


def test_a_test_to_myself_with_an_encoded_firm_name(owner_client, owner, firm, portal_mail):
    firm.name = ENCODED[0]
    firm.save()

    owner_client.post(reverse("troubleshooting:send_test"))

    (received,) = portal_mail.received
    _assert_no_forged_header(received, recipients=[owner.user.email])


def test_an_invitation_from_a_firm_with_an_encoded_name(
    owner_client, firm, portal_mail, django_capture_on_commit_callbacks
):
    firm.name = ENCODED[2]
    firm.save()

    with django_capture_on_commit_callbacks(execute=True):
        owner_client.post(
            reverse("accounts:invite"), {"email": "new.member@alder.test", "role": Role.STAFF}
        )

    (received,) = portal_mail.received
    _assert_no_forged_header(received, recipients=["new.member@alder.test"])


@pytest.mark.parametrize("field", ["name", "sender_name"])
def test_firm_settings_refuse_an_encoded_line_break_in_a_name(owner_client, firm, field):
    data = {
        "name": "Alder Accounting",
        "sender_name": "Alder",
        "reply_to_email": "",
        "sending_domain": "",
        "language": "en",
    }
    data[field] = ENCODED[0]

    response = owner_client.post(reverse("accounts:firm_profile"), data)

    assert response.status_code == 200
    assert "This must be a single line" in response.content.decode()
    firm.refresh_from_db()
    assert getattr(firm, field) != ENCODED[0]

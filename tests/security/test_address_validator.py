"""One address validator everywhere an address is typed: Django forms, allauth's sign-up and
add-email forms, invitations, firm settings and mailboxes. It refuses bidi overrides (U+202E)
and other format or invisible characters that Django's EmailField lets through."""

from __future__ import annotations

import pytest
from allauth.account.models import EmailAddress
from django.core.exceptions import ValidationError
from django.urls import reverse

from accounts.models import Invitation, Role, User
from portal.addresses import clean_address_field
from tests.factories import ClientFactory, ContactAddressFactory, ContactFactory
from tests.invoicing import factories as invoicing_factories
from tests.invoicing.factories import invoice_with_lines
from tests.servers import smtp as smtp_fixtures

smtp_server = smtp_fixtures.smtp_server
smtp = smtp_fixtures.smtp
tasks_run_inline = invoicing_factories.tasks_run_inline

HIDDEN = [
    "a@x.test\u202e",  # RIGHT-TO-LEFT OVERRIDE after the address
    "\u202ea@x.test",
    "a\u202e@x.test",
    "a@x\u2066.test",  # LEFT-TO-RIGHT ISOLATE
    "a@x.test\u061c",  # ARABIC LETTER MARK
    "a\u200b@x.test",  # ZERO WIDTH SPACE inside
    "a@x.te\u00adst",  # SOFT HYPHEN
    "a@x\u2028.test",  # LINE SEPARATOR
]


@pytest.mark.parametrize("address", HIDDEN)
def test_the_validator_refuses_hidden_characters(address):
    with pytest.raises(ValidationError):
        clean_address_field(address)


def test_the_validator_keeps_an_ordinary_address():
    assert clean_address_field("Ann.Alder@Alder.TEST") == "Ann.Alder@alder.test"


@pytest.mark.parametrize("address", HIDDEN[:4])
def test_an_invitation_to_such_an_address_is_a_form_error(owner_client, address):
    response = owner_client.post(reverse("accounts:invite"), {"email": address, "role": Role.STAFF})

    assert response.status_code == 400
    assert "invisible character" in response.content.decode()
    assert not Invitation.objects.exists()


def test_firm_settings_refuse_such_a_reply_to_address(owner_client, firm):
    response = owner_client.post(
        reverse("accounts:firm_profile"),
        {
            "name": firm.name,
            "sender_name": "",
            "reply_to_email": "billing@alder.test\u202e",
            "sending_domain": "",
            "language": "en",
        },
    )

    assert response.status_code == 200
    assert "invisible character" in response.content.decode()
    firm.refresh_from_db()
    assert firm.reply_to_email == ""


@pytest.mark.usefixtures("tasks_run_inline")
def test_a_stored_bad_reply_to_does_not_break_invoice_emails(
    staff_client, firm, smtp, settings, django_capture_on_commit_callbacks
):
    settings.BOUNCE_ADDRESS = ""
    firm.reply_to_email = "billing@alder.test\u202e"
    firm.save()
    client = ClientFactory(firm=firm)
    ContactAddressFactory(contact=ContactFactory(client=client), address="anna@client.test")

    with django_capture_on_commit_callbacks(execute=True):
        staff_client.post(
            reverse("invoicing:invoice_send", args=[invoice_with_lines(client=client).pk])
        )

    (received,) = smtp.received
    assert received.message["Reply-To"] is None


def test_sign_up_refuses_such_an_address(client, db):
    response = client.post(
        reverse("account_signup"),
        {
            "email": "new.owner@birch.test\u202e",
            "password1": "a sturdy passphrase 42",
            "password2": "a sturdy passphrase 42",
            "first_name": "Nora",
            "last_name": "Birch",
            "firm_name": "Birch Accounting",
        },
    )

    assert response.status_code == 200
    assert "invisible character" in response.content.decode()
    assert not User.objects.filter(first_name="Nora").exists()


def test_adding_such_an_email_address_to_an_account_is_refused(owner_client, owner):
    response = owner_client.post(
        reverse("account_email"), {"action_add": "", "email": "second@alder.test\u202e"}
    )

    assert "invisible character" in response.content.decode()
    assert not EmailAddress.objects.filter(email__startswith="second@").exists()


def test_a_mailbox_address_with_such_a_character_is_a_form_error(owner_client):
    response = owner_client.post(
        reverse("mailsync:credentials"),
        {
            "preset": "",
            "kind": "imap",
            "email_address": "ann@alder.test\u202e",
            "host": "imap.alder.test",
            "security": "ssl",
            "password": "pw",
            "action": "test",
        },
    )

    assert "invisible character" in response.content.decode()

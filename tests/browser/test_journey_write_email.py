"""A member writes to a client from the client's Email tab, on a phone: Send answers at once,
the page follows the email until a worker has sent it, then shows it on the Email tab.
A double tap on Send sends one email.

The worker is the send task run by the test while the page waits (`run_send_worker`); the
email goes to the loopback submission server of tests/servers/smtp_auth.py."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from accounts.models import Role
from mailsync.models import WrittenEmail
from tests.browser.helpers import sign_in
from tests.factories import (
    ClientFactory,
    ContactAddressFactory,
    ContactFactory,
    MembershipFactory,
)
from tests.mailsync.factories import fernet_key  # noqa: F401
from tests.mailsync.writing import run_send_worker, sending_mailbox
from tests.servers import smtp_auth

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

submission_server = smtp_auth.submission_server
submission = smtp_auth.submission


@pytest.fixture
def nora(firm, submission):
    member = MembershipFactory(firm=firm, role=Role.OWNER, user__email="nora@alder.test")
    sending_mailbox(submission, firm=firm, owner=member.user, address="nora@alder.test")
    return member


@pytest.fixture
def client_(firm):
    client = ClientFactory(firm=firm, display_name="Birch Bakery")
    ContactAddressFactory(contact=ContactFactory(client=client), address="bea@bakery.test")
    return client


def test_write_to_a_client_on_a_phone_and_see_it_sent(
    journey, live_server, nora, client_, submission
):
    page = journey.new_page(width=390, height=844)
    sign_in(page, live_server.url, nora.user.email)
    page.goto(f"{live_server.url}/clients/{client_.pk}/email/")
    page.click("a:text-is('Write email')")
    page.fill("input[name=subject]", "Your year-end accounts")
    page.fill("textarea[name=body]", "Dear Bea,\n\nThe accounts are ready.")
    journey.step(page, "the email written")

    page.dblclick("button:text-is('Send')")  # an impatient double tap
    expect(page.locator("#written-status")).to_contain_text("waiting to be sent")
    assert submission.received == []
    journey.step(page, "kept, waiting for the worker")

    assert run_send_worker() == 1
    page.wait_for_url(f"**/clients/{client_.pk}/email/")
    expect(page.locator("main")).to_contain_text("Email sent.")
    expect(page.locator("main")).to_contain_text("Your year-end accounts")
    journey.step(page, "sent and on the client's Email tab")
    assert len(submission.received) == 1
    assert WrittenEmail.objects.get().status == WrittenEmail.Status.SENT

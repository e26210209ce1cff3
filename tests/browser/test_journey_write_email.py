"""A member writes to a client from the client's Email tab, on a phone: Send answers at once,
the page follows the email until a worker has sent it, then shows it on the Email tab.
A double tap on Send sends one email.

The worker is the send task run by the test while the page waits (`run_send_worker`); the
email goes to the loopback submission server of tests/servers/smtp_auth.py."""

from __future__ import annotations

import socket

import pytest
from playwright.sync_api import expect

from accounts.models import Role
from mailsync.models import OutgoingServer, WrittenEmail
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


def test_an_email_that_failed_after_the_member_left_waits_on_the_email_tab(
    journey, live_server, nora, client_, submission
):
    with socket.socket() as closed:  # the mailbox's sending server stops answering
        closed.bind(("127.0.0.1", 0))
        dead = closed.getsockname()[1]
    OutgoingServer.objects.update(port=dead)
    page = journey.new_page(width=390, height=844)
    sign_in(page, live_server.url, nora.user.email)
    page.goto(f"{live_server.url}/clients/{client_.pk}/email/write/")
    page.fill("input[name=subject]", "Your year-end accounts")
    page.fill("textarea[name=body]", "Dear Bea,\n\nThe accounts are ready.")
    page.click("button:text-is('Send')")
    expect(page.locator("#written-status")).to_be_visible()
    page.click("a:text-is('Back to the Email tab')")  # she does not wait

    run_send_worker()
    page.reload()
    unsent = page.locator("#unsent")
    expect(unsent).to_contain_text("Not sent. Open it to see why and send it again.")
    journey.step(page, "the email not sent, on the client's Email tab")

    OutgoingServer.objects.update(port=submission.port)  # the server answers again
    unsent.locator("a:text-is('Your year-end accounts')").click()
    expect(page.locator("#send-failed")).to_contain_text("sync.connection")
    expect(page.locator("textarea[name=body]")).to_have_value(
        "Dear Bea,\n\nThe accounts are ready."
    )
    journey.step(page, "its form again, with why")
    page.click("button:text-is('Send')")
    run_send_worker()
    page.wait_for_url(f"**/clients/{client_.pk}/email/")
    expect(page.locator("main")).to_contain_text("Email sent.")
    expect(page.locator("#unsent")).to_have_count(0)
    assert len(submission.received) == 1

"""Sending addresses: a mailbox's own address and the aliases its server lets it send as,
and which address a member's mail to a client goes from.

Against a real SMTP submission server on loopback (aiosmtpd with AUTH, tests/servers/
smtp_auth.py) that lets each login send only as its own addresses. No mocked servers.
"""

from __future__ import annotations

import smtplib

import pytest
from django.urls import reverse

from mailsync import crypto
from mailsync.errors import CONNECTION, SENDER_REFUSED, classify
from mailsync.models import MailboxConnection, OutgoingAddress, OutgoingServer
from mailsync.outgoing import client_sender_set, outgoing_for, outgoing_resolve
from tests.factories import ClientFactory, MembershipFactory
from tests.mailsync.factories import MailboxConnectionFactory, fernet_key  # noqa: F401
from tests.servers import smtp_auth
from tests.servers.smtp_auth import SubmissionServer

# The loopback submission server (session-wide) and a clean slate per test.
submission_server = smtp_auth.submission_server
submission = smtp_auth.submission

MINE = reverse("mailsync:sending_addresses")
SHARED = reverse("mailsync:shared_sending_addresses")


def _mailbox(
    submission: SubmissionServer, *, firm, owner, address: str, login: str | None = None, **extra
) -> MailboxConnection:
    """A connected mailbox whose SMTP server is the loopback submission server."""
    login = login or address.split("@")[0]
    submission.add_user(login, "pw-" + login, sends_as=(address,))
    connection = MailboxConnectionFactory(
        firm=firm,
        owner=owner,
        email_address=address,
        username=login,
        secret=crypto.encrypt("pw-" + login),
        **extra,
    )
    OutgoingServer.objects.create(
        connection=connection, host=submission.host, port=submission.port, security="none"
    )
    return connection


def _page(response) -> str:
    return response.content.decode()


# --- the settings page --------------------------------------------------------------------


def test_a_mailbox_own_address_is_always_a_sending_address_and_the_default(
    owner_client, owner, firm, submission
):
    _mailbox(submission, firm=firm, owner=owner.user, address="ann@alder.test")

    page = _page(owner_client.get(MINE))

    address = OutgoingAddress.objects.get()
    assert (address.address, address.is_own, address.is_default) == ("ann@alder.test", True, True)
    assert "ann@alder.test" in page and "mailbox address" in page and "default" in page


def test_an_alias_the_server_accepts_is_added_without_sending_anything(
    owner_client, owner, firm, submission
):
    connection = _mailbox(submission, firm=firm, owner=owner.user, address="ann@alder.test")
    submission.allow_sender("ann", "billing@alder.test")

    response = owner_client.post(
        MINE,
        {
            "connection": connection.pk,
            "action": "add",
            "address": "Billing@Alder.test",
            "display_name": "Alder Billing",
        },
        follow=True,
    )

    assert "billing@alder.test" in _page(response).lower()
    alias = OutgoingAddress.objects.get(is_own=False)
    assert (alias.normalized, alias.display_name) == ("billing@alder.test", "Alder Billing")
    assert submission.mail_from_tried == [("ann", "Billing@alder.test", True)]
    assert submission.received == []  # MAIL FROM then RSET: nothing was sent


def test_an_alias_the_server_refuses_cannot_be_added_and_its_reply_is_shown(
    owner_client, owner, firm, submission
):
    connection = _mailbox(submission, firm=firm, owner=owner.user, address="ann@alder.test")

    response = owner_client.post(
        MINE,
        {"connection": connection.pk, "action": "add", "address": "ceo@alder.test"},
    )

    page = _page(response)
    assert response.status_code == 200
    assert "did not accept ceo@alder.test as a sender" in page
    assert "553 5.7.1" in page and "Sender address rejected" in page
    assert "send.sender_refused" in page
    assert "The mail server will not send as this address" in page  # its guide, linked
    assert 'value="ceo@alder.test"' in page  # the form keeps what was typed
    assert not OutgoingAddress.objects.filter(normalized="ceo@alder.test").exists()


def test_a_malformed_alias_is_refused_before_asking_the_server(
    owner_client, owner, firm, submission
):
    connection = _mailbox(submission, firm=firm, owner=owner.user, address="ann@alder.test")

    page = _page(
        owner_client.post(
            MINE, {"connection": connection.pk, "action": "add", "address": "bi lling@alder.test"}
        )
    )

    assert "contains a space at position 3" in page
    assert submission.mail_from_tried == []


def test_another_address_can_become_the_default_and_an_alias_be_removed(
    owner_client, owner, firm, submission
):
    connection = _mailbox(submission, firm=firm, owner=owner.user, address="ann@alder.test")
    owner_client.get(MINE)
    alias = OutgoingAddress.objects.create(
        firm=firm,
        owner=owner.user,
        connection=connection,
        address="billing@alder.test",
        normalized="billing@alder.test",
    )

    owner_client.post(MINE, {"connection": connection.pk, "action": "default", "address": alias.pk})
    assert OutgoingAddress.objects.get(is_default=True) == alias

    owner_client.post(MINE, {"connection": connection.pk, "action": "remove", "address": alias.pk})
    own = OutgoingAddress.objects.get()
    assert own.is_own and own.is_default  # the mailbox's own address takes over


def test_a_mailbox_own_address_cannot_be_removed(owner_client, owner, firm, submission):
    connection = _mailbox(submission, firm=firm, owner=owner.user, address="ann@alder.test")
    owner_client.get(MINE)
    own = OutgoingAddress.objects.get()

    owner_client.post(MINE, {"connection": connection.pk, "action": "remove", "address": own.pk})

    assert OutgoingAddress.objects.filter(pk=own.pk).exists()


def test_a_member_cannot_change_another_members_addresses(staff_client, owner, firm, submission):
    connection = _mailbox(submission, firm=firm, owner=owner.user, address="ann@alder.test")

    response = staff_client.post(
        MINE, {"connection": connection.pk, "action": "add", "address": "x@alder.test"}
    )

    assert response.status_code == 404
    assert submission.mail_from_tried == []


def test_only_owners_manage_the_shared_mailboxs_addresses(
    owner_client, staff_client, firm, submission
):
    _mailbox(submission, firm=firm, owner=None, address="office@alder.test")

    assert staff_client.get(SHARED).status_code == 403
    page = _page(owner_client.get(SHARED))
    assert "office@alder.test" in page


def test_a_sending_server_is_saved_only_after_logging_in_to_it(
    owner_client, owner, firm, submission
):
    connection = _mailbox(submission, firm=firm, owner=owner.user, address="ann@alder.test")
    OutgoingServer.objects.all().delete()
    form = {
        "connection": connection.pk,
        "action": "server",
        "host": submission.host,
        "port": submission.port,
        "security": "none",
        "password": "pw-ann",
    }
    submission.add_user("ann", "another-password", sends_as=("ann@alder.test",))

    page = _page(owner_client.post(MINE, form))
    assert "Log in to send (SMTP)" in page and "535" in page and "sync.auth_failed" in page
    assert not OutgoingServer.objects.exists()

    submission.add_user("ann", "pw-ann", sends_as=("ann@alder.test",))
    owner_client.post(MINE, form)
    server = OutgoingServer.objects.get()
    assert (server.host, server.port, server.checked_at is not None) == (
        submission.host,
        submission.port,
        True,
    )


def test_the_stored_login_goes_to_a_new_server_only_with_the_password_typed(
    owner_client, owner, firm, submission
):
    connection = _mailbox(submission, firm=firm, owner=owner.user, address="ann@alder.test")
    OutgoingServer.objects.all().delete()
    form = {
        "connection": connection.pk,
        "action": "server",
        "host": submission.host,
        "port": submission.port,
        "security": "none",
    }
    for typed in ("", "not-the-password"):
        page = _page(owner_client.post(MINE, {**form, "password": typed}))
        assert "Type the mailbox&#x27;s password to confirm this server" in page
    assert submission.state.logins_tried == []  # the login never left the portal
    assert not OutgoingServer.objects.exists()


def test_an_oauth_mailbox_sending_server_cannot_be_pointed_elsewhere(
    owner_client, owner, firm, submission
):
    connection = _mailbox(
        submission, firm=firm, owner=owner.user, address="ann@alder.test", kind="gmail"
    )
    assert 'name="host"' not in _page(owner_client.get(MINE))  # no form offered
    owner_client.post(  # and a hand-made post changes nothing
        MINE,
        {
            "connection": connection.pk,
            "action": "server",
            "host": "collector.example.test",
            "port": 25,
            "security": "none",
        },
    )
    assert OutgoingServer.objects.get().host == submission.host


# --- which address sends ------------------------------------------------------------------


@pytest.fixture
def client_(firm):
    return ClientFactory(firm=firm)


def test_a_members_own_mailbox_wins_over_the_firms_shared_one(owner, firm, client_, submission):
    _mailbox(submission, firm=firm, owner=None, address="office@alder.test")
    _mailbox(submission, firm=firm, owner=owner.user, address="ann@alder.test")

    assert outgoing_for(owner.user, client_).address == "ann@alder.test"


def test_a_member_without_a_mailbox_sends_from_the_shared_mailboxs_default(
    staff, firm, client_, submission
):
    _mailbox(submission, firm=firm, owner=None, address="office@alder.test")

    assert outgoing_for(staff.user, client_).address == "office@alder.test"
    assert outgoing_for(staff.user, firm=firm).address == "office@alder.test"


def test_the_address_chosen_for_a_client_is_used_for_that_client_only(
    owner, firm, client_, submission
):
    connection = _mailbox(submission, firm=firm, owner=owner.user, address="ann@alder.test")
    outgoing_for(owner.user, client_)  # creates the mailbox's own address
    brand = OutgoingAddress.objects.create(
        firm=firm,
        owner=owner.user,
        connection=connection,
        address="hello@brand.test",
        normalized="hello@brand.test",
    )
    client_sender_set(member=owner.user, client=client_, address=brand)

    assert outgoing_for(owner.user, client_) == brand
    assert outgoing_for(owner.user, ClientFactory(firm=firm)).address == "ann@alder.test"


def test_one_members_choice_for_a_client_does_not_change_anothers(
    owner, staff, firm, client_, submission
):
    mine = _mailbox(submission, firm=firm, owner=owner.user, address="ann@alder.test")
    _mailbox(submission, firm=firm, owner=staff.user, address="bob@alder.test")
    outgoing_for(owner.user, client_)
    client_sender_set(
        member=owner.user, client=client_, address=OutgoingAddress.objects.get(connection=mine)
    )

    assert outgoing_for(staff.user, client_).address == "bob@alder.test"


@pytest.mark.parametrize(
    ("fields", "why"),
    [
        ({"intent": "stopped", "secret": ""}, "Email Sync is stopped for ann@alder.test"),
        ({"health": "needs_reauth"}, "ann@alder.test needs re-authentication"),
    ],
    ids=["stopped", "needs-reauth"],
)
def test_a_mailbox_that_cannot_send_is_never_chosen_and_the_page_says_why(
    owner_client, owner, firm, client_, submission, fields, why
):
    _mailbox(submission, firm=firm, owner=None, address="office@alder.test")
    mine = _mailbox(submission, firm=firm, owner=owner.user, address="ann@alder.test")
    outgoing_for(owner.user, client_)
    MailboxConnection.objects.filter(pk=mine.pk).update(**fields)

    resolution = outgoing_resolve(owner.user, client_)

    assert resolution.address.address == "office@alder.test"
    assert [address.address for address, _why in resolution.skipped] == ["ann@alder.test"]
    assert why in resolution.skipped[0][1]
    page = _page(owner_client.get(reverse("mailsync:compose", args=[client_.pk])))
    assert "Not sending from ann@alder.test" in page and why in page


def test_a_removed_mailbox_is_never_chosen(owner, firm, client_, submission):
    mine = _mailbox(submission, firm=firm, owner=owner.user, address="ann@alder.test")
    outgoing_for(owner.user, client_)
    MailboxConnection.objects.filter(pk=mine.pk).update(intent="removed", secret="")

    assert outgoing_for(owner.user, client_) is None


def test_with_no_mailbox_to_send_from_the_page_asks_to_connect_one(owner_client, client_):
    page = _page(owner_client.get(reverse("mailsync:compose", args=[client_.pk])))

    assert "There is no mailbox to send from" in page and "Open Email Sync" in page


def test_a_custom_server_without_a_known_sending_server_is_not_chosen(
    owner, firm, client_, submission
):
    mine = _mailbox(submission, firm=firm, owner=owner.user, address="ann@alder.test")
    OutgoingServer.objects.filter(connection=mine).delete()

    resolution = outgoing_resolve(owner.user, client_)

    assert resolution.address is None
    assert "sending server (SMTP) of ann@alder.test is not set" in resolution.skipped[0][1]


def test_resolving_takes_a_fixed_number_of_queries(
    owner, firm, client_, submission, django_assert_num_queries
):
    for n in range(3):
        member = owner.user if n == 0 else MembershipFactory(firm=firm).user
        _mailbox(submission, firm=firm, owner=member, address=f"m{n}@alder.test")
    _mailbox(submission, firm=firm, owner=None, address="office@alder.test")
    outgoing_for(owner.user, client_)
    # connections, own addresses present?, candidate addresses, the client's choice
    with django_assert_num_queries(4):
        assert outgoing_for(owner.user, client_).address == "m0@alder.test"


# --- a refused sender, as servers say it --------------------------------------------------


@pytest.mark.parametrize(
    ("exc", "step", "code"),
    [
        pytest.param(
            smtplib.SMTPSenderRefused(
                553,
                b"5.7.1 <ceo@alder.test>: Sender address rejected: not owned by user ann",
                "ceo@alder.test",
            ),
            "smtp_mail_from",
            SENDER_REFUSED,
            id="postfix-login-mismatch",
        ),
        pytest.param(
            smtplib.SMTPDataError(
                554,
                b"5.2.252 SendAsDenied; ann@alder.test not allowed to send as ceo@alder.test; "
                b"STOREDRV.Submission.Exception:SendAsDeniedException.MapiExceptionSendAsDenied",
            ),
            "smtp_data",
            SENDER_REFUSED,
            id="m365-send-as-denied",
        ),
        pytest.param(
            smtplib.SMTPSenderRefused(550, b"5.7.60 SMTP; Client does not have permissions", "x"),
            "smtp_mail_from",
            SENDER_REFUSED,
            id="m365-5.7.60",
        ),
        pytest.param(
            smtplib.SMTPSenderRefused(451, b"4.3.0 Temporary lookup failure", "x"),
            "smtp_mail_from",
            CONNECTION,
            id="temporary-stays-transient",
        ),
    ],
)
def test_refused_senders_are_classified(exc, step, code):
    assert classify(exc, step=step).code == code
